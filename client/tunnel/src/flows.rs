//! The flows this client opened: inbound packets are counted (and so billed) and delivered only
//! when they belong to one, so a relay, or anyone who can reach our tunnel address through it,
//! cannot bill us for traffic we never asked for (UDP to closed ports, unsolicited pings).
//!
//! A flow is (protocol, remote address, remote port, local port) for TCP and UDP, and
//! (ICMP echo, remote address, identifier) for pings; it lives [`FLOW_IDLE`] after its last
//! outbound packet. ICMP errors are accepted for the flow their quoted packet belongs to;
//! non-first fragments from a remote with a live flow are accepted. What a relay can still do:
//! pad or replay packets *inside* an open flow (bounded by what the flow's remote may send us,
//! and by the client's receipt tolerance, 2 % + 1 MiB by default).
//! Packets are parsed with smoltcp's wire types.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use smoltcp::wire::{
    Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv4Packet, Ipv6Packet,
    TcpPacket, UdpPacket,
};

/// A flow expires this long after its last outbound packet.
pub const FLOW_IDLE: Duration = Duration::from_secs(300);
/// Most flows remembered; beyond this the least recently used are forgotten.
pub const MAX_FLOWS: usize = 16_384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    proto: u8,
    remote: IpAddr,
    remote_port: u16,
    local_port: u16,
}

/// Which way a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Out,
    In,
}

/// The outbound flows and their last use.
#[derive(Debug, Default)]
pub struct Flows {
    flows: BTreeMap<Key, Instant>,
    /// Remote addresses with a live flow (for fragments), with how many flows.
    remotes: BTreeMap<IpAddr, usize>,
    last_sweep: Option<Instant>,
}

impl Flows {
    /// Records an outbound packet's flow (packets we cannot parse open nothing).
    pub fn outbound(&mut self, pkt: &[u8], now: Instant) {
        let Some(Parsed::Flow(k)) = parse(pkt, Dir::Out) else {
            return;
        };
        if self.flows.insert(k, now).is_none() {
            *self.remotes.entry(k.remote).or_insert(0) += 1;
            if self.flows.len() > MAX_FLOWS {
                self.evict_oldest();
            }
        }
    }

    /// Whether an inbound packet belongs to a live flow we opened.
    pub fn inbound_allowed(&mut self, pkt: &[u8], now: Instant) -> bool {
        self.sweep(now);
        match parse(pkt, Dir::In) {
            Some(Parsed::Flow(k)) => self.live(&k, now),
            Some(Parsed::Fragment(remote)) => self.remotes.contains_key(&remote),
            None => false,
        }
    }

    /// Number of live flows.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// True when no flow is open.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    fn live(&self, k: &Key, now: Instant) -> bool {
        self.flows
            .get(k)
            .is_some_and(|t| now.saturating_duration_since(*t) < FLOW_IDLE)
    }

    /// Forgets expired flows (at most once a second).
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_sweep = Some(now);
        let expired: Vec<Key> = self
            .flows
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= FLOW_IDLE)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            self.remove(&k);
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(k) = self.flows.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
            self.remove(&k);
        }
    }

    fn remove(&mut self, k: &Key) {
        if self.flows.remove(k).is_some() {
            if let Some(n) = self.remotes.get_mut(&k.remote) {
                *n -= 1;
                if *n == 0 {
                    self.remotes.remove(&k.remote);
                }
            }
        }
    }
}

enum Parsed {
    Flow(Key),
    /// A non-first fragment from this remote (no transport header to match).
    Fragment(IpAddr),
}

/// The flow key of `pkt` seen from our side (`dir`), or of the packet an ICMP error quotes.
fn parse(pkt: &[u8], dir: Dir) -> Option<Parsed> {
    let (src, dst, proto, payload, first) = ip(pkt)?;
    let remote = match dir {
        Dir::Out => dst,
        Dir::In => src,
    };
    if !first {
        return Some(Parsed::Fragment(remote));
    }
    let (sport, dport) = match proto {
        IpProtocol::Tcp => {
            let t = TcpPacket::new_checked(payload).ok()?;
            (t.src_port(), t.dst_port())
        }
        IpProtocol::Udp => {
            let u = UdpPacket::new_checked(payload).ok()?;
            (u.src_port(), u.dst_port())
        }
        IpProtocol::Icmp => return icmp4(payload, remote, dir),
        IpProtocol::Icmpv6 => return icmp6(payload, remote, dir),
        other => return Some(Parsed::Flow(key(u8::from(other), remote, 0, 0))),
    };
    let (local_port, remote_port) = match dir {
        Dir::Out => (sport, dport),
        Dir::In => (dport, sport),
    };
    Some(Parsed::Flow(key(
        u8::from(proto),
        remote,
        remote_port,
        local_port,
    )))
}

fn key(proto: u8, remote: IpAddr, remote_port: u16, local_port: u16) -> Key {
    Key {
        proto,
        remote,
        remote_port,
        local_port,
    }
}

/// (src, dst, protocol, transport bytes, first fragment) of an IPv4/IPv6 packet.
fn ip(pkt: &[u8]) -> Option<(IpAddr, IpAddr, IpProtocol, &[u8], bool)> {
    match pkt.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(pkt).ok()?;
            let (hl, total) = (usize::from(p.header_len()), usize::from(p.total_len()));
            Some((
                IpAddr::V4(p.src_addr()),
                IpAddr::V4(p.dst_addr()),
                p.next_header(),
                pkt.get(hl..total.min(pkt.len()))?,
                p.frag_offset() == 0,
            ))
        }
        6 => {
            let p = Ipv6Packet::new_checked(pkt).ok()?;
            let end = (40 + usize::from(p.payload_len())).min(pkt.len());
            Some((
                IpAddr::V6(p.src_addr()),
                IpAddr::V6(p.dst_addr()),
                p.next_header(),
                pkt.get(40..end)?,
                true,
            ))
        }
        _ => None,
    }
}

/// Echo request/reply: the flow (ICMP, remote, identifier). An error quoting one of our
/// packets: that packet's flow, seen outbound.
fn icmp4(payload: &[u8], remote: IpAddr, dir: Dir) -> Option<Parsed> {
    let p = Icmpv4Packet::new_checked(payload).ok()?;
    match p.msg_type() {
        Icmpv4Message::EchoRequest if dir == Dir::Out => {
            Some(Parsed::Flow(key(1, remote, p.echo_ident(), 0)))
        }
        Icmpv4Message::EchoReply if dir == Dir::In => {
            Some(Parsed::Flow(key(1, remote, p.echo_ident(), 0)))
        }
        Icmpv4Message::DstUnreachable | Icmpv4Message::TimeExceeded if dir == Dir::In => {
            quoted(p.data())
        }
        _ => None,
    }
}

fn icmp6(payload: &[u8], remote: IpAddr, dir: Dir) -> Option<Parsed> {
    let p = Icmpv6Packet::new_checked(payload).ok()?;
    match p.msg_type() {
        Icmpv6Message::EchoRequest if dir == Dir::Out => {
            Some(Parsed::Flow(key(58, remote, p.echo_ident(), 0)))
        }
        Icmpv6Message::EchoReply if dir == Dir::In => {
            Some(Parsed::Flow(key(58, remote, p.echo_ident(), 0)))
        }
        Icmpv6Message::DstUnreachable | Icmpv6Message::PktTooBig | Icmpv6Message::TimeExceeded
            if dir == Dir::In =>
        {
            quoted(p.payload())
        }
        _ => None,
    }
}

/// The flow of the (truncated) packet an ICMP error quotes: one of ours, so outbound.
fn quoted(data: &[u8]) -> Option<Parsed> {
    let (_, dst, proto, l4, first) = ip_truncated(data)?;
    if !first || l4.len() < 4 {
        return None;
    }
    match proto {
        IpProtocol::Tcp | IpProtocol::Udp => {
            let sport = u16::from_be_bytes([l4[0], l4[1]]);
            let dport = u16::from_be_bytes([l4[2], l4[3]]);
            Some(Parsed::Flow(key(u8::from(proto), dst, dport, sport)))
        }
        _ => None,
    }
}

/// Like [`ip`] for a quoted header, whose total length may exceed what was quoted.
fn ip_truncated(pkt: &[u8]) -> Option<(IpAddr, IpAddr, IpProtocol, &[u8], bool)> {
    match pkt.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_unchecked(pkt);
            let hl = usize::from(p.header_len());
            if pkt.len() < hl.max(20) {
                return None;
            }
            Some((
                IpAddr::V4(p.src_addr()),
                IpAddr::V4(p.dst_addr()),
                p.next_header(),
                &pkt[hl..],
                p.frag_offset() == 0,
            ))
        }
        6 if pkt.len() >= 40 => {
            let p = Ipv6Packet::new_unchecked(pkt);
            Some((
                IpAddr::V6(p.src_addr()),
                IpAddr::V6(p.dst_addr()),
                p.next_header(),
                &pkt[40..],
                true,
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // a base instant; time is virtual after it
    use std::net::SocketAddr;

    use super::*;

    fn udp(src: &str, dst: &str) -> Vec<u8> {
        let (s, d): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        ferry_metering::udp_packet(s, d, b"payload").unwrap()
    }

    /// An IPv4 ICMP message of `ty`/`code` from `src` to `dst` with `body` after the 4-byte
    /// rest-of-header (`ident` for echo).
    fn icmp(src: [u8; 4], dst: [u8; 4], ty: u8, ident: u16, body: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[ty, 0, 0, 0]);
        p.extend_from_slice(&ident.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        p.extend_from_slice(body);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    }

    #[test]
    fn only_replies_to_flows_we_opened_get_in() {
        let t0 = Instant::now();
        let mut f = Flows::default();
        let out = udp("10.77.0.2:40000", "203.0.113.5:53");
        f.outbound(&out, t0);
        assert!(
            f.inbound_allowed(&udp("203.0.113.5:53", "10.77.0.2:40000"), t0),
            "the reply"
        );
        // Unsolicited: another port of ours, another remote port, another remote.
        assert!(!f.inbound_allowed(&udp("203.0.113.5:53", "10.77.0.2:40001"), t0));
        assert!(!f.inbound_allowed(&udp("203.0.113.5:54", "10.77.0.2:40000"), t0));
        assert!(!f.inbound_allowed(&udp("198.51.100.1:53", "10.77.0.2:40000"), t0));
        // IPv6 the same way.
        f.outbound(&udp("[fd77::2]:5000", "[2001:db8::1]:443"), t0);
        assert!(f.inbound_allowed(&udp("[2001:db8::1]:443", "[fd77::2]:5000"), t0));
        assert!(!f.inbound_allowed(&udp("[2001:db8::1]:443", "[fd77::2]:5001"), t0));
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn flows_expire_after_their_idle_time() {
        let t0 = Instant::now();
        let mut f = Flows::default();
        f.outbound(&udp("10.77.0.2:40000", "203.0.113.5:53"), t0);
        let reply = udp("203.0.113.5:53", "10.77.0.2:40000");
        assert!(f.inbound_allowed(&reply, t0 + FLOW_IDLE - Duration::from_secs(1)));
        assert!(!f.inbound_allowed(&reply, t0 + FLOW_IDLE));
        assert!(f.is_empty(), "swept");
    }

    #[test]
    fn pings_and_icmp_errors_match_the_flow_they_belong_to() {
        let t0 = Instant::now();
        let mut f = Flows::default();
        let (me, them) = ([10, 77, 0, 2], [203, 0, 113, 5]);
        f.outbound(&icmp(me, them, 8, 77, b"x"), t0);
        assert!(
            f.inbound_allowed(&icmp(them, me, 0, 77, b"x"), t0),
            "our echo reply"
        );
        assert!(
            !f.inbound_allowed(&icmp(them, me, 0, 78, b"x"), t0),
            "another ident"
        );
        assert!(
            !f.inbound_allowed(&icmp(them, me, 8, 77, b"x"), t0),
            "their echo request"
        );
        // Port unreachable quoting our UDP packet: ours; quoting a packet we never sent: not.
        let ours = udp("10.77.0.2:40000", "203.0.113.5:53");
        f.outbound(&ours, t0);
        let unreach = icmp(them, me, 3, 0, &ours[..28]);
        assert!(f.inbound_allowed(&unreach, t0));
        let theirs = udp("10.77.0.2:40009", "203.0.113.5:53");
        assert!(!f.inbound_allowed(&icmp(them, me, 3, 0, &theirs[..28]), t0));
        assert!(!f.inbound_allowed(&[0x45, 0, 0], t0), "garbage");
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        let mut f = Flows::default();
        for i in 0..(MAX_FLOWS as u32 + 100) {
            let port = 1024 + (i % 60_000) as u16;
            let host = i / 60_000;
            f.outbound(
                &udp(
                    &format!("10.77.0.2:{port}"),
                    &format!("203.0.113.{host}:80"),
                ),
                t0 + Duration::from_micros(u64::from(i)),
            );
        }
        assert_eq!(f.len(), MAX_FLOWS);
    }
}
