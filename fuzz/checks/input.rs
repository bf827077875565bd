//! A tiny reader turning fuzz bytes into structured values (no `arbitrary` dependency, so
//! the replay tests on stable need nothing extra).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

pub(crate) struct Input<'a>(pub(crate) &'a [u8]);

impl<'a> Input<'a> {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// Up to `max` bytes, length from one byte (scaled) or the rest when short.
    pub(crate) fn chunk(&mut self, scale: usize) -> &'a [u8] {
        let want = usize::from(self.byte().unwrap_or(0)) * scale;
        let n = want.min(self.0.len());
        self.bytes(n).unwrap_or_default()
    }

    pub(crate) fn v4(&mut self) -> Option<Ipv4Addr> {
        let b: [u8; 4] = self.bytes(4)?.try_into().ok()?;
        Some(b.into())
    }

    pub(crate) fn v6(&mut self) -> Option<Ipv6Addr> {
        let b: [u8; 16] = self.bytes(16)?.try_into().ok()?;
        Some(b.into())
    }

    /// A tag byte selects the family (bit 0) and, for v4, whether to present it v4-mapped
    /// (bit 1).
    pub(crate) fn addr(&mut self) -> Option<IpAddr> {
        let tag = self.byte()?;
        Some(match (tag & 1, tag & 2) {
            (0, 0) => IpAddr::V4(self.v4()?),
            (0, _) => IpAddr::V6(self.v4()?.to_ipv6_mapped()),
            _ => IpAddr::V6(self.v6()?),
        })
    }

    pub(crate) fn net(&mut self) -> Option<IpNet> {
        let a = self.addr()?;
        let p = self.byte()?;
        let max = if a.is_ipv4() { 32 } else { 128 };
        IpNet::new(a, p % (max + 1)).ok()
    }

    pub(crate) fn sock(&mut self) -> Option<SocketAddr> {
        let a = self.addr()?;
        let p = self.bytes(2)?;
        Some(SocketAddr::new(a, u16::from_be_bytes([p[0], p[1]])))
    }
}
