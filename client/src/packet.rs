//! Inner IP packet helpers: building and recognising the UDP datagrams of the receipt-exchange
//! control channel, which the client speaks itself inside the tunnel (never through the OS
//! stack), so that control traffic is neither metered nor visible to local applications.

use std::net::{IpAddr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, UdpPacket, UdpRepr,
};

/// Builds an IPv4 or IPv6 packet carrying one UDP datagram, checksums filled in.
/// `src` and `dst` must be of the same family.
pub(crate) fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let caps = ChecksumCapabilities::default();
    let udp = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    let udp_len = 8 + payload.len();
    let (s, d): (IpAddress, IpAddress) = (src.ip().into(), dst.ip().into());
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s4), IpAddr::V4(d4)) => {
            let ip = Ipv4Repr {
                src_addr: s4,
                dst_addr: d4,
                next_header: IpProtocol::Udp,
                payload_len: udp_len,
                hop_limit: 64,
            };
            let mut buf = vec![0u8; ip.buffer_len() + udp_len];
            let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
            ip.emit(&mut p, &caps);
            udp.emit(
                &mut UdpPacket::new_unchecked(p.payload_mut()),
                &s,
                &d,
                payload.len(),
                |b| b.copy_from_slice(payload),
                &caps,
            );
            Some(buf)
        }
        (IpAddr::V6(s6), IpAddr::V6(d6)) => {
            let ip = Ipv6Repr {
                src_addr: s6,
                dst_addr: d6,
                next_header: IpProtocol::Udp,
                payload_len: udp_len,
                hop_limit: 64,
            };
            let mut buf = vec![0u8; ip.buffer_len() + udp_len];
            let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
            ip.emit(&mut p);
            udp.emit(
                &mut UdpPacket::new_unchecked(p.payload_mut()),
                &s,
                &d,
                payload.len(),
                |b| b.copy_from_slice(payload),
                &caps,
            );
            Some(buf)
        }
        _ => None,
    }
}

/// Source, destination and payload of a UDP packet (checksum verified), `None` for anything
/// else (other protocols, fragments, malformed).
pub(crate) fn parse_udp(pkt: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    let (src, dst, body): (IpAddr, IpAddr, &[u8]) = match pkt.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(pkt).ok()?;
            if p.next_header() != IpProtocol::Udp || p.more_frags() || p.frag_offset() != 0 {
                return None;
            }
            let hl = usize::from(p.header_len());
            let total = usize::from(p.total_len());
            (
                p.src_addr().into(),
                p.dst_addr().into(),
                pkt.get(hl..total)?,
            )
        }
        6 => {
            let p = Ipv6Packet::new_checked(pkt).ok()?;
            if p.next_header() != IpProtocol::Udp {
                return None;
            }
            let len = usize::from(p.payload_len());
            (
                p.src_addr().into(),
                p.dst_addr().into(),
                pkt.get(40..40 + len)?,
            )
        }
        _ => return None,
    };
    let u = UdpPacket::new_checked(body).ok()?;
    if !u.verify_checksum(&src.into(), &dst.into()) {
        return None;
    }
    let off = 8;
    let end = usize::from(u.len());
    Some((
        SocketAddr::new(src, u.src_port()),
        SocketAddr::new(dst, u.dst_port()),
        body.get(off..end)?,
    ))
}

/// The control-channel endpoints of a paid session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ControlPath {
    /// Our side: our tunnel address, [`ferry_metering::CONTROL_PORT`].
    pub(crate) local: SocketAddr,
    /// The relay's control service.
    pub(crate) remote: SocketAddr,
}

impl ControlPath {
    /// A control frame from us to the relay, as an inner packet.
    pub(crate) fn wrap(&self, frame: &[u8]) -> Option<Vec<u8>> {
        udp_packet(self.local, self.remote, frame)
    }

    /// The frame inside `pkt` if it is a control datagram from the relay to us.
    pub(crate) fn unwrap_incoming<'a>(&self, pkt: &'a [u8]) -> Option<&'a [u8]> {
        let (src, dst, body) = parse_udp(pkt)?;
        (src == self.remote && dst == self.local).then_some(body)
    }

    /// Whether `pkt` (going into the tunnel) is addressed to the control service.
    pub(crate) fn is_outgoing(&self, pkt: &[u8]) -> bool {
        parse_udp(pkt).is_some_and(|(_, dst, _)| dst == self.remote)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn path(v6: bool) -> ControlPath {
        if v6 {
            ControlPath {
                local: "[fd77::2]:51821".parse().unwrap(),
                remote: "[fd77::1]:51821".parse().unwrap(),
            }
        } else {
            ControlPath {
                local: "10.77.0.2:51821".parse().unwrap(),
                remote: "10.77.0.1:51821".parse().unwrap(),
            }
        }
    }

    #[test]
    fn control_frames_round_trip_through_inner_packets_v4_and_v6() {
        for v6 in [false, true] {
            let p = path(v6);
            let out = p.wrap(b"hello frame").unwrap();
            assert!(p.is_outgoing(&out));
            // The relay's answer has the addresses swapped.
            let back = udp_packet(p.remote, p.local, b"answer").unwrap();
            assert_eq!(p.unwrap_incoming(&back), Some(&b"answer"[..]));
            assert!(!p.is_outgoing(&back));
            // Our own outgoing packet is not an incoming control packet.
            assert_eq!(p.unwrap_incoming(&out), None);
        }
    }

    #[test]
    fn other_traffic_and_corrupt_packets_are_not_control() {
        let p = path(false);
        let other: SocketAddr = "203.0.113.2:51821".parse().unwrap();
        let pkt = udp_packet(other, p.local, b"x").unwrap();
        assert_eq!(p.unwrap_incoming(&pkt), None);
        let mut bad = udp_packet(p.remote, p.local, b"payload").unwrap();
        let n = bad.len();
        bad[n - 1] ^= 1; // checksum no longer matches
        assert_eq!(p.unwrap_incoming(&bad), None);
        assert_eq!(parse_udp(&[]), None);
        assert_eq!(parse_udp(&[0x45, 0, 0]), None);
        assert!(udp_packet(p.local, "[::1]:1".parse().unwrap(), b"").is_none());
    }
}
