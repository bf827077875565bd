//! ICMP "communication administratively prohibited" answers to client packets the egress
//! policy blocks (RFC 1812 §5.2.7.1, RFC 4443 §3.1 code 1), so a client's TCP connect or UDP
//! send fails at once with a reason instead of timing out. Built with smoltcp's wire types.
//!
//! Only packets that open or use a flow are answered (TCP/UDP to a port, echo requests):
//! never an ICMP error (no error about an error), never a non-first fragment. The answer goes
//! back into the sender's own tunnel only, from the relay's tunnel address, at most
//! [`PER_SEC`] per second relay-wide; it is the relay's own packet, not metered.

use std::net::IpAddr;
use std::time::Instant;

use ferry_ratelimit::TokenBucket;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, Icmpv6DstUnreachable, Icmpv6Packet, Icmpv6Repr,
    IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr,
};

use crate::packet::{IpHeader, Transport};

/// Answers per second, relay-wide (burst the same).
pub(crate) const PER_SEC: u64 = 20;
/// IPv4: the whole answer stays within 576 bytes (RFC 1812).
const V4_MAX: usize = 576;
/// IPv6: within the minimum MTU (RFC 4443).
const V6_MAX: usize = 1280;
const HOP_LIMIT: u8 = 64;

/// Rate-limited builder of the answers.
#[derive(Debug)]
pub(crate) struct Prohibited {
    bucket: TokenBucket,
}

impl Default for Prohibited {
    fn default() -> Self {
        Self {
            bucket: TokenBucket::new(PER_SEC, PER_SEC),
        }
    }
}

impl Prohibited {
    /// The answer to `pkt` (parsed as `hdr`), blocked by policy, from our tunnel address
    /// `from` (same family), or `None` (not a packet to answer, or over the rate).
    pub(crate) fn answer(
        &mut self,
        pkt: &[u8],
        hdr: &IpHeader,
        from: &[IpAddr],
        now: Instant,
    ) -> Option<Vec<u8>> {
        if !matches!(hdr.transport, Transport::Port(..) | Transport::EchoRequest) {
            return None;
        }
        let from = *from.iter().find(|a| a.is_ipv4() == hdr.src.is_ipv4())?;
        if !self.bucket.try_take(now, 1) {
            return None;
        }
        match from {
            IpAddr::V4(from) => v4(pkt, from),
            IpAddr::V6(from) => v6(pkt, from),
        }
    }
}

fn v4(pkt: &[u8], from: std::net::Ipv4Addr) -> Option<Vec<u8>> {
    let orig = Ipv4Packet::new_checked(pkt).ok()?;
    let payload = orig.payload();
    let header = Ipv4Repr {
        src_addr: orig.src_addr(),
        dst_addr: orig.dst_addr(),
        next_header: orig.next_header(),
        payload_len: payload.len(),
        hop_limit: orig.hop_limit(),
    };
    // Outer IPv4 (20) + ICMP header (8) + the embedded header (20).
    let room = V4_MAX - 48;
    let icmp = Icmpv4Repr::DstUnreachable {
        reason: Icmpv4DstUnreachable::CommProhibited,
        header,
        data: &payload[..payload.len().min(room)],
    };
    let outer = Ipv4Repr {
        src_addr: from,
        dst_addr: orig.src_addr(),
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: HOP_LIMIT,
    };
    let caps = ChecksumCapabilities::default();
    let mut buf = vec![0u8; outer.buffer_len() + icmp.buffer_len()];
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[..]);
    outer.emit(&mut ip, &caps);
    icmp.emit(&mut Icmpv4Packet::new_unchecked(ip.payload_mut()), &caps);
    Some(buf)
}

fn v6(pkt: &[u8], from: std::net::Ipv6Addr) -> Option<Vec<u8>> {
    let orig = Ipv6Packet::new_checked(pkt).ok()?;
    let payload = orig.payload();
    let header = Ipv6Repr {
        src_addr: orig.src_addr(),
        dst_addr: orig.dst_addr(),
        next_header: orig.next_header(),
        payload_len: payload.len(),
        hop_limit: orig.hop_limit(),
    };
    // Outer IPv6 (40) + ICMPv6 header (8) + the embedded header (40).
    let room = V6_MAX - 88;
    let icmp = Icmpv6Repr::DstUnreachable {
        reason: Icmpv6DstUnreachable::AdminProhibit,
        header,
        data: &payload[..payload.len().min(room)],
    };
    let outer = Ipv6Repr {
        src_addr: from,
        dst_addr: orig.src_addr(),
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: HOP_LIMIT,
    };
    let caps = ChecksumCapabilities::default();
    let mut buf = vec![0u8; outer.buffer_len() + icmp.buffer_len()];
    let mut ip = Ipv6Packet::new_unchecked(&mut buf[..]);
    outer.emit(&mut ip);
    icmp.emit(
        &from,
        &orig.src_addr(),
        &mut Icmpv6Packet::new_unchecked(ip.payload_mut()),
        &caps,
    );
    Some(buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[allow(clippy::disallowed_methods)] // a base instant; the tests advance it themselves
    fn t0() -> Instant {
        Instant::now()
    }

    fn tcp_syn_v4() -> Vec<u8> {
        // 10.77.0.2:40000 -> 192.168.1.1:80, SYN.
        let mut p = vec![
            0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 77, 0, 2, 192, 168, 1, 1,
        ];
        p.extend([
            0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        let sum = checksum(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p
    }

    fn checksum(b: &[u8]) -> u16 {
        let mut s: u32 = b
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn a_blocked_tcp_syn_gets_a_valid_admin_prohibited_answer_from_the_tunnel_address() {
        let pkt = tcp_syn_v4();
        let hdr = IpHeader::parse(&pkt).unwrap();
        let from = ["fd77::1".parse().unwrap(), "10.77.0.1".parse().unwrap()];
        let out = Prohibited::default()
            .answer(&pkt, &hdr, &from, t0())
            .unwrap();
        let ip = Ipv4Packet::new_checked(&out[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.src_addr().to_string(), "10.77.0.1");
        assert_eq!(ip.dst_addr().to_string(), "10.77.0.2");
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        let repr = Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).unwrap();
        let Icmpv4Repr::DstUnreachable {
            reason,
            header,
            data,
        } = repr
        else {
            panic!("{repr:?}")
        };
        assert_eq!(reason, Icmpv4DstUnreachable::CommProhibited);
        assert_eq!(header.dst_addr.to_string(), "192.168.1.1");
        // The embedded transport header names the flow (ports).
        assert_eq!(&data[..4], &pkt[20..24]);
    }

    #[test]
    fn icmp_errors_are_never_answered_and_the_rate_is_bounded() {
        let mut p = Prohibited::default();
        let from = ["10.77.0.1".parse().unwrap()];
        // An ICMP error (port unreachable) to a blocked address: Transport::Other.
        let mut err = vec![
            0x45, 0, 0, 56, 0, 1, 0, 0, 64, 1, 0, 0, 10, 77, 0, 2, 192, 168, 1, 1,
        ];
        err.extend([3, 3, 0, 0, 0, 0, 0, 0]);
        err.extend(&tcp_syn_v4()[..28]);
        let hdr = IpHeader::parse(&err).unwrap();
        let t0 = t0();
        assert!(p.answer(&err, &hdr, &from, t0).is_none());
        let syn = tcp_syn_v4();
        let hdr = IpHeader::parse(&syn).unwrap();
        let n = (0..1000)
            .filter(|_| p.answer(&syn, &hdr, &from, t0).is_some())
            .count();
        assert_eq!(n as u64, PER_SEC);
        let later = t0 + Duration::from_secs(1);
        assert!(p.answer(&syn, &hdr, &from, later).is_some());
        // No tunnel address of the family: nothing to answer from.
        assert!(
            p.answer(&syn, &hdr, &["fd77::1".parse().unwrap()], later)
                .is_none()
        );
    }
}
