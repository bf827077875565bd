//! Minimal zero-copy views of inner IP packets: just the fields the relay decides on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol numbers the relay looks at.
pub(crate) const PROTO_ICMP: u8 = 1;
pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const PROTO_ICMPV6: u8 = 58;

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;

/// The transport part of an inner packet, as far as it could be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP or UDP (protocol number) with destination port.
    Port(u8, u16),
    /// ICMP/ICMPv6 echo request.
    EchoRequest,
    /// Another protocol (ICMP other than echo, GRE, ...), or a non-first fragment (no
    /// transport header in it; without its first fragment it is never reassembled).
    Other,
    /// A TCP/UDP header that could not be read (truncated, a tiny first fragment), or an
    /// IPv6 header chain we do not walk (too many or unknown extension headers): the exit
    /// port policy refuses it whenever it has a rule.
    Unparsed,
}

/// Parsed header fields of an inner IPv4/IPv6 packet (parsed once per packet by the relay and
/// handed to the [`crate::PacketHook`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHeader {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport protocol and destination port, as far as parsed.
    pub transport: Transport,
}

impl IpHeader {
    /// Parses `packet`; `None` if it is not a well-formed IPv4/IPv6 header.
    pub fn parse(packet: &[u8]) -> Option<Self> {
        match packet.first()? >> 4 {
            4 => parse_v4(packet),
            6 => parse_v6(packet),
            _ => None,
        }
    }
}

/// Destination address of an IP packet (cheap: no transport parsing).
pub(crate) fn dst_addr(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 => {
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

fn parse_v4(p: &[u8]) -> Option<IpHeader> {
    if p.len() < 20 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if ihl < 20 || p.len() < ihl {
        return None;
    }
    let src: [u8; 4] = p.get(12..16)?.try_into().ok()?;
    let dst: [u8; 4] = p.get(16..20)?.try_into().ok()?;
    let frag_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
    let transport = if frag_offset != 0 {
        Transport::Other
    } else {
        transport_at(p[9], &p[ihl..])
    };
    Some(IpHeader {
        src: IpAddr::V4(Ipv4Addr::from(src)),
        dst: IpAddr::V4(Ipv4Addr::from(dst)),
        transport,
    })
}

fn parse_v6(p: &[u8]) -> Option<IpHeader> {
    if p.len() < 40 {
        return None;
    }
    let src: [u8; 16] = p.get(8..24)?.try_into().ok()?;
    let dst: [u8; 16] = p.get(24..40)?.try_into().ok()?;
    let mut next = p[6];
    let mut rest = &p[40..];
    // Walk the common extension headers (bounded) to find the transport header.
    let mut transport = Transport::Unparsed;
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let (Some(&nh), Some(&len)) = (rest.first(), rest.get(1)) else {
                    break;
                };
                let skip = (usize::from(len) + 1) * 8;
                let Some(r) = rest.get(skip..) else { break };
                next = nh;
                rest = r;
            }
            44 => {
                // Fragment header: only the first fragment carries the transport header.
                let Some(h) = rest.get(..8) else { break };
                let offset = u16::from_be_bytes([h[2], h[3]]) >> 3;
                if offset != 0 {
                    transport = Transport::Other;
                    break;
                }
                next = h[0];
                rest = &rest[8..];
            }
            // AH, Mobility, HIP, Shim6: headers we do not walk.
            51 | 135 | 139 | 140 => break,
            proto => {
                transport = transport_at(proto, rest);
                break;
            }
        }
    }
    Some(IpHeader {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        transport,
    })
}

fn transport_at(proto: u8, l4: &[u8]) -> Transport {
    match proto {
        PROTO_TCP | PROTO_UDP => match l4.get(2..4) {
            Some(b) => Transport::Port(proto, u16::from_be_bytes([b[0], b[1]])),
            None => Transport::Unparsed,
        },
        PROTO_ICMP if l4.first() == Some(&ICMP_ECHO_REQUEST) => Transport::EchoRequest,
        PROTO_ICMPV6 if l4.first() == Some(&ICMPV6_ECHO_REQUEST) => Transport::EchoRequest,
        _ => Transport::Other,
    }
}

#[cfg(test)]
pub(crate) mod testpkt {
    //! Builders for inner test packets (checksums are not needed by the relay).
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// A minimal UDP packet from `src` to `dst:port` with `payload`.
    pub(crate) fn udp(src: IpAddr, dst: IpAddr, port: u16, payload: &[u8]) -> Vec<u8> {
        let mut l4 = vec![0x30, 0x39];
        l4.extend_from_slice(&port.to_be_bytes());
        l4.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap_or(0).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
        l4.extend_from_slice(payload);
        ip(src, dst, super::PROTO_UDP, &l4)
    }

    /// A minimal TCP SYN-ish header to `dst:port`.
    pub(crate) fn tcp(src: IpAddr, dst: IpAddr, port: u16) -> Vec<u8> {
        let mut l4 = vec![0x30, 0x39];
        l4.extend_from_slice(&port.to_be_bytes());
        l4.extend_from_slice(&[0; 16]);
        ip(src, dst, super::PROTO_TCP, &l4)
    }

    /// An ICMP(v6) echo request.
    pub(crate) fn ping(src: IpAddr, dst: IpAddr) -> Vec<u8> {
        match dst {
            IpAddr::V4(_) => ip(src, dst, super::PROTO_ICMP, &[8, 0, 0, 0, 0, 1, 0, 1]),
            IpAddr::V6(_) => ip(src, dst, super::PROTO_ICMPV6, &[128, 0, 0, 0, 0, 1, 0, 1]),
        }
    }

    pub(crate) fn ip(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => v4(s, d, proto, l4),
            (IpAddr::V6(s), IpAddr::V6(d)) => v6(s, d, proto, l4),
            _ => panic!("mixed address families"),
        }
    }

    fn v4(s: Ipv4Addr, d: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
        let total = u16::try_from(20 + l4.len()).unwrap_or(0);
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
        p.extend_from_slice(&s.octets());
        p.extend_from_slice(&d.octets());
        p.extend_from_slice(l4);
        p
    }

    fn v6(s: Ipv6Addr, d: Ipv6Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
        let plen = u16::try_from(l4.len()).unwrap_or(0);
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&plen.to_be_bytes());
        p.extend_from_slice(&[proto, 64]);
        p.extend_from_slice(&s.octets());
        p.extend_from_slice(&d.octets());
        p.extend_from_slice(l4);
        p
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_udp_ports_v4_and_v6() {
        let s4: IpAddr = "10.77.0.2".parse().unwrap();
        let d4: IpAddr = "1.1.1.1".parse().unwrap();
        let h = IpHeader::parse(&testpkt::udp(s4, d4, 53, b"q")).unwrap();
        assert_eq!(
            (h.src, h.dst, h.transport),
            (s4, d4, Transport::Port(PROTO_UDP, 53))
        );
        let s6: IpAddr = "fd77::2".parse().unwrap();
        let d6: IpAddr = "2606:4700::1111".parse().unwrap();
        let h = IpHeader::parse(&testpkt::tcp(s6, d6, 443)).unwrap();
        assert_eq!(
            (h.src, h.dst, h.transport),
            (s6, d6, Transport::Port(PROTO_TCP, 443))
        );
        assert_eq!(dst_addr(&testpkt::tcp(s6, d6, 443)), Some(d6));
    }

    #[test]
    fn recognises_echo_requests_and_rejects_garbage() {
        let s: IpAddr = "10.77.0.2".parse().unwrap();
        let d: IpAddr = "10.77.0.1".parse().unwrap();
        assert_eq!(
            IpHeader::parse(&testpkt::ping(s, d)).unwrap().transport,
            Transport::EchoRequest
        );
        assert!(IpHeader::parse(&[0x45; 10]).is_none());
        assert!(IpHeader::parse(&[0x15; 40]).is_none());
        assert!(IpHeader::parse(&[]).is_none());
    }

    #[test]
    fn non_first_v4_fragment_has_no_ports() {
        let s: IpAddr = "10.77.0.2".parse().unwrap();
        let d: IpAddr = "10.77.0.1".parse().unwrap();
        let mut p = testpkt::udp(s, d, 53, b"x");
        p[6] = 0x00;
        p[7] = 0x10;
        assert_eq!(IpHeader::parse(&p).unwrap().transport, Transport::Other);
    }
}
