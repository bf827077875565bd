//! Recognising and building the control service's UDP packets inside the tunnel, so the
//! relay core can divert them before egress policy and metering (control traffic is never
//! billed and never blocked by the credit window) and answer without going through the
//! TUN device or the userspace stack.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::proto::CONTROL_PORT;

const UDP: u8 = 17;

/// A control datagram found in an inner IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlDatagram<'a> {
    /// The client's tunnel address and port (reply destination).
    pub from: SocketAddr,
    /// The relay address it was sent to (reply source).
    pub to: SocketAddr,
    /// UDP payload: one control frame.
    pub payload: &'a [u8],
}

/// If `packet` (an inner IPv4/IPv6 packet from a client, after the allowed-IPs check) is
/// UDP to one of `own` addresses on [`CONTROL_PORT`], returns its datagram. Fragments and
/// IPv6 extension headers are not control traffic (frames are small).
pub fn control_datagram<'a>(packet: &'a [u8], own: &[IpAddr]) -> Option<ControlDatagram<'a>> {
    let (src, dst, udp) = udp_of(packet)?;
    if !own.contains(&dst) {
        return None;
    }
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    if dport != CONTROL_PORT {
        return None;
    }
    Some(ControlDatagram {
        from: SocketAddr::new(src, sport),
        to: SocketAddr::new(dst, dport),
        payload: &udp[8..],
    })
}

/// Source, destination and payload of an unfragmented UDP packet in `packet` (IPv4, or IPv6
/// without extension headers) whose UDP checksum verifies (IPv4's "no checksum" 0 is
/// accepted); `None` for anything else.
pub fn parse_udp(packet: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    let (src, dst, udp) = udp_of(packet)?;
    if !udp_checksum_ok(src, dst, udp) {
        return None;
    }
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    Some((
        SocketAddr::new(src, sport),
        SocketAddr::new(dst, dport),
        &udp[8..],
    ))
}

/// Builds an IPv4 or IPv6 UDP packet (checksums filled in) carrying `payload`, e.g. a
/// control frame from `from` (relay tunnel address, port 51821) to a client. `None` if the
/// address families differ or the payload is too large.
pub fn udp_packet(from: SocketAddr, to: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let udp_len = u16::try_from(8 + payload.len()).ok()?;
    let mut udp = Vec::with_capacity(usize::from(udp_len));
    udp.extend_from_slice(&from.port().to_be_bytes());
    udp.extend_from_slice(&to.port().to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    match (from.ip(), to.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(20 + udp.len()).ok()?;
            let mut pseudo = Vec::with_capacity(12);
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, UDP]);
            pseudo.extend_from_slice(&udp_len.to_be_bytes());
            set_udp_checksum(&mut udp, &pseudo);
            let mut p = Vec::with_capacity(usize::from(total));
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&total.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0x40, 0, 64, UDP, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            let c = !fold(sum(&p[..20]));
            p[10..12].copy_from_slice(&c.to_be_bytes());
            p.extend_from_slice(&udp);
            Some(p)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut pseudo = Vec::with_capacity(40);
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&u32::from(udp_len).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, UDP]);
            set_udp_checksum(&mut udp, &pseudo);
            let mut p = Vec::with_capacity(40 + udp.len());
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&udp_len.to_be_bytes());
            p.extend_from_slice(&[UDP, 64]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&udp);
            Some(p)
        }
        _ => None,
    }
}

/// (source, destination, UDP header + payload) of an unfragmented UDP packet.
fn udp_of(p: &[u8]) -> Option<(IpAddr, IpAddr, &[u8])> {
    let (src, dst, l4) = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*p.get(2)?, *p.get(3)?]));
            if ihl < 20 || total < ihl || total > p.len() || p[9] != UDP {
                return None;
            }
            let frag = u16::from_be_bytes([p[6], p[7]]);
            if frag & 0x3fff != 0 {
                return None;
            }
            let s: [u8; 4] = p[12..16].try_into().ok()?;
            let d: [u8; 4] = p[16..20].try_into().ok()?;
            (
                IpAddr::V4(Ipv4Addr::from(s)),
                IpAddr::V4(Ipv4Addr::from(d)),
                &p[ihl..total],
            )
        }
        6 => {
            if p.len() < 40 || p[6] != UDP {
                return None;
            }
            let len = usize::from(u16::from_be_bytes([p[4], p[5]]));
            let s: [u8; 16] = p[8..24].try_into().ok()?;
            let d: [u8; 16] = p[24..40].try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                p.get(40..40 + len)?,
            )
        }
        _ => return None,
    };
    if l4.len() < 8 {
        return None;
    }
    let ulen = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
    if ulen < 8 || ulen > l4.len() {
        return None;
    }
    Some((src, dst, &l4[..ulen]))
}

fn udp_checksum_ok(src: IpAddr, dst: IpAddr, udp: &[u8]) -> bool {
    let len = udp.len() as u32;
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            if udp[6..8] == [0, 0] {
                return true;
            }
            sum(&s.octets()) + sum(&d.octets()) + u32::from(UDP) + len
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            sum(&s.octets()) + sum(&d.octets()) + u32::from(UDP) + len
        }
        _ => return false,
    };
    fold(pseudo + sum(udp)) == 0xffff
}

fn sum(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    // The loop leaves at most 16 bits.
    u16::try_from(s).unwrap_or(u16::MAX)
}

fn set_udp_checksum(udp: &mut [u8], pseudo: &[u8]) {
    let c = !fold(sum(pseudo) + sum(udp));
    // 0 means "no checksum" in UDP over IPv4 and is forbidden over IPv6: send 0xffff.
    let c = if c == 0 { 0xffff } else { c };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(a: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)
    }

    #[test]
    fn ipv4_control_datagram_is_recognised_and_checksums_verify() {
        let relay = v4([10, 77, 0, 1], CONTROL_PORT);
        let client = v4([10, 77, 0, 2], 40000);
        let p = udp_packet(client, relay, b"hello").unwrap();
        // IPv4 header checksum over the header sums to 0xffff.
        assert_eq!(fold(sum(&p[..20])), 0xffff);
        let d = control_datagram(&p, &[relay.ip()]).unwrap();
        assert_eq!((d.from, d.to, d.payload), (client, relay, &b"hello"[..]));
        assert!(control_datagram(&p, &[IpAddr::V4(Ipv4Addr::new(10, 77, 0, 9))]).is_none());
        let reply = udp_packet(relay, client, b"x").unwrap();
        assert_eq!(parse_udp(&reply), Some((relay, client, &b"x"[..])));
        assert!(
            control_datagram(&reply, &[relay.ip()]).is_none(),
            "a reply is not for us"
        );
        // Other port: ordinary traffic.
        let other = udp_packet(client, v4([10, 77, 0, 1], 53), b"q").unwrap();
        assert!(control_datagram(&other, &[relay.ip()]).is_none());
    }

    #[test]
    fn ipv6_control_datagram_round_trips_with_valid_udp_checksum() {
        let relay = SocketAddr::new("fd77::1".parse().unwrap(), CONTROL_PORT);
        let client = SocketAddr::new("fd77::2".parse().unwrap(), 5555);
        let p = udp_packet(client, relay, &[1, 2, 3]).unwrap();
        let d = control_datagram(&p, &[relay.ip()]).unwrap();
        assert_eq!(d.payload, &[1, 2, 3]);
        // Pseudo-header + UDP sums to 0xffff when the checksum is right.
        let mut pseudo = p[8..40].to_vec();
        pseudo.extend_from_slice(&[0, 0, 0, 11, 0, 0, 0, UDP]);
        assert_eq!(fold(sum(&pseudo) + sum(&p[40..])), 0xffff);
        assert!(udp_packet(client, v4([1, 1, 1, 1], 1), b"").is_none());
    }

    #[test]
    fn fragments_are_not_control_traffic() {
        let relay = v4([10, 77, 0, 1], CONTROL_PORT);
        let mut p = udp_packet(v4([10, 77, 0, 2], 1), relay, b"abc").unwrap();
        p[6] |= 0x20; // more fragments
        assert!(control_datagram(&p, &[relay.ip()]).is_none());
    }

    proptest! {
        #[test]
        fn parsing_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let own = [IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1))];
            let _ = control_datagram(&b, &own);
            let _ = parse_udp(&b);
        }
    }
}
