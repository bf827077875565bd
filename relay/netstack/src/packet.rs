//! Minimal IP/TCP/UDP parsing of client packets and synthesis of client-bound packets.
//!
//! Checksums of incoming packets are not verified: they arrived inside an authenticated
//! WireGuard tunnel. Outgoing packets always carry correct checksums.

use std::net::{IpAddr, SocketAddr};

use smoltcp::phy::{Checksum, ChecksumCapabilities};
use smoltcp::wire::{
    IpAddress, IpProtocol, IpRepr, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpControl,
    TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};

/// Hop limit of packets we synthesize.
const HOP_LIMIT: u8 = 64;

/// What a client packet is, as far as the netstack cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed<'a> {
    /// A TCP segment from `client` to `remote`.
    Tcp {
        client: SocketAddr,
        remote: SocketAddr,
        /// SYN without ACK: opens a connection.
        syn_only: bool,
        /// Sequence number and segment length (payload + SYN + FIN), for a RST reply.
        seq: u32,
        seg_len: u32,
    },
    /// A UDP datagram from `client` to `remote`.
    Udp {
        client: SocketAddr,
        remote: SocketAddr,
        payload: &'a [u8],
    },
    /// ICMP, other protocols, IPv6 extension headers, IPv4 fragments.
    Unsupported,
    /// Not a well-formed IPv4/IPv6 packet.
    Malformed,
}

/// Checksum handling: compute on transmit, never verify on receive.
pub(crate) fn checksum_caps() -> ChecksumCapabilities {
    let mut caps = ChecksumCapabilities::ignored();
    caps.ipv4 = Checksum::Tx;
    caps.tcp = Checksum::Tx;
    caps.udp = Checksum::Tx;
    caps.icmpv4 = Checksum::Tx;
    caps.icmpv6 = Checksum::Tx;
    caps
}

/// Classify a client packet.
pub(crate) fn parse(pkt: &[u8]) -> Parsed<'_> {
    let caps = ChecksumCapabilities::ignored();
    let (src, dst, proto, payload) = match pkt.first().map(|b| b >> 4) {
        Some(4) => {
            let Ok(p) = Ipv4Packet::new_checked(pkt) else {
                return Parsed::Malformed;
            };
            // Ipv4Repr::parse rejects fragments (no reassembly support compiled in).
            let Ok(repr) = Ipv4Repr::parse(&p, &caps) else {
                return Parsed::Unsupported;
            };
            let hl = usize::from(p.header_len());
            let total = usize::from(p.total_len());
            let Some(payload) = pkt.get(hl..total) else {
                return Parsed::Malformed;
            };
            (
                IpAddr::V4(repr.src_addr),
                IpAddr::V4(repr.dst_addr),
                repr.next_header,
                payload,
            )
        }
        Some(6) => {
            let Ok(p) = Ipv6Packet::new_checked(pkt) else {
                return Parsed::Malformed;
            };
            let Ok(repr) = Ipv6Repr::parse(&p) else {
                return Parsed::Malformed;
            };
            let end = 40 + usize::from(p.payload_len());
            let Some(payload) = pkt.get(40..end) else {
                return Parsed::Malformed;
            };
            (
                IpAddr::V6(repr.src_addr),
                IpAddr::V6(repr.dst_addr),
                repr.next_header,
                payload,
            )
        }
        _ => return Parsed::Malformed,
    };
    match proto {
        IpProtocol::Tcp => {
            let Ok(t) = TcpPacket::new_checked(payload) else {
                return Parsed::Malformed;
            };
            if t.src_port() == 0 || t.dst_port() == 0 {
                return Parsed::Malformed;
            }
            let Ok(repr) = TcpRepr::parse(&t, &src.into(), &dst.into(), &caps) else {
                return Parsed::Malformed;
            };
            Parsed::Tcp {
                client: SocketAddr::new(src, t.src_port()),
                remote: SocketAddr::new(dst, t.dst_port()),
                syn_only: t.syn() && !t.ack() && !t.rst(),
                seq: seq_u32(repr.seq_number),
                seg_len: u32::try_from(repr.segment_len()).unwrap_or(u32::MAX),
            }
        }
        IpProtocol::Udp => {
            let Ok(u) = UdpPacket::new_checked(payload) else {
                return Parsed::Malformed;
            };
            if u.dst_port() == 0 || u.src_port() == 0 {
                return Parsed::Malformed;
            }
            let len = usize::from(u.len());
            let Some(data) = payload.get(8..len) else {
                return Parsed::Malformed;
            };
            Parsed::Udp {
                client: SocketAddr::new(src, u.src_port()),
                remote: SocketAddr::new(dst, u.dst_port()),
                payload: data,
            }
        }
        _ => Parsed::Unsupported,
    }
}

fn seq_u32(s: TcpSeqNumber) -> u32 {
    // TcpSeqNumber wraps an i32 holding the raw 32-bit value.
    s.0 as u32
}

/// Largest UDP payload that fits in one client-bound packet of `mtu` bytes.
pub(crate) fn max_udp_payload(mtu: usize, remote: &SocketAddr) -> usize {
    let ip = if remote.is_ipv4() { 20 } else { 40 };
    mtu.saturating_sub(ip + 8)
}

/// Build `RST|ACK` answering a segment from `client` to `remote` (`seq`, `seg_len`).
pub(crate) fn tcp_rst(client: SocketAddr, remote: SocketAddr, seq: u32, seg_len: u32) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: remote.port(),
        dst_port: client.port(),
        control: TcpControl::Rst,
        seq_number: TcpSeqNumber(0),
        ack_number: Some(TcpSeqNumber(seq.wrapping_add(seg_len) as i32)),
        window_len: 0,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let src: IpAddress = remote.ip().into();
    let dst: IpAddress = client.ip().into();
    let ip = IpRepr::new(src, dst, IpProtocol::Tcp, tcp.buffer_len(), HOP_LIMIT);
    let mut buf = vec![0u8; ip.header_len() + tcp.buffer_len()];
    let caps = checksum_caps();
    ip.emit(&mut buf[..], &caps);
    let hl = ip.header_len();
    let mut tp = TcpPacket::new_unchecked(&mut buf[hl..]);
    tcp.emit(&mut tp, &src, &dst, &caps);
    buf
}

/// Build a UDP datagram from `remote` back to `client`. `None` for mixed address families.
pub(crate) fn udp_reply(client: SocketAddr, remote: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    if client.is_ipv4() != remote.is_ipv4() {
        return None;
    }
    let udp = UdpRepr {
        src_port: remote.port(),
        dst_port: client.port(),
    };
    let src: IpAddress = remote.ip().into();
    let dst: IpAddress = client.ip().into();
    let udp_len = udp.header_len() + payload.len();
    let ip = IpRepr::new(src, dst, IpProtocol::Udp, udp_len, HOP_LIMIT);
    let hl = ip.header_len();
    let mut buf = vec![0u8; hl + udp_len];
    let caps = checksum_caps();
    ip.emit(&mut buf[..], &caps);
    let mut up = UdpPacket::new_unchecked(&mut buf[hl..]);
    udp.emit(
        &mut up,
        &src,
        &dst,
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps,
    );
    Some(buf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn udp_reply_round_trips_through_parse_with_valid_checksum() {
        let client: SocketAddr = "10.77.0.2:5000".parse().unwrap();
        let remote: SocketAddr = "1.1.1.1:53".parse().unwrap();
        let pkt = udp_reply(client, remote, b"hello").unwrap();
        let p = Ipv4Packet::new_checked(&pkt[..]).unwrap();
        assert!(p.verify_checksum());
        let u = UdpPacket::new_checked(p.payload()).unwrap();
        assert!(u.verify_checksum(&remote.ip().into(), &client.ip().into()));
        // Parsing it as if it came from "remote" as a client gives the mirrored flow.
        assert_eq!(
            parse(&pkt),
            Parsed::Udp {
                client: remote,
                remote: client,
                payload: b"hello"
            }
        );
    }

    #[test]
    fn rst_acks_the_syn_and_parses_as_tcp() {
        let client: SocketAddr = "[fd77::2]:40000".parse().unwrap();
        let remote: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let pkt = tcp_rst(client, remote, 0xffff_ffff, 1);
        let p = Ipv6Packet::new_checked(&pkt[..]).unwrap();
        let t = TcpPacket::new_checked(p.payload()).unwrap();
        assert!(t.rst() && t.ack());
        assert_eq!(t.ack_number(), TcpSeqNumber(0));
        assert!(t.verify_checksum(&remote.ip().into(), &client.ip().into()));
    }

    #[test]
    fn garbage_is_malformed_and_icmp_is_unsupported() {
        assert_eq!(parse(&[]), Parsed::Malformed);
        assert_eq!(parse(&[0x45, 0, 0]), Parsed::Malformed);
        assert_eq!(parse(&[0x70; 40]), Parsed::Malformed);
        // IPv4 ICMP echo request header (checksums not verified).
        let mut icmp = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 77, 0, 2, 1, 1, 1, 1,
        ];
        icmp.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
        assert_eq!(parse(&icmp), Parsed::Unsupported);
    }
}
