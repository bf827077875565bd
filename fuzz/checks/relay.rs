//! Check for the `relay_packet` fuzz target, shared with
//! `relay/core/tests/fuzz_replay_relay.rs` (included with `#[path]`).
//!
//! A `Relay` with one peer that has completed a real handshake with a boringtun client is
//! driven by a fuzzed sequence of operations:
//! - arbitrary datagrams from arbitrary sources (`handle_udp`),
//! - arbitrary inner packets sealed by the legitimate client (the packet classifier and the
//!   egress policy see attacker-chosen headers),
//! - captured legitimate datagrams replayed from other sources,
//! - arbitrary packets from the egress (`handle_tun`), timers and re-handshakes.
//!
//! Invariants: nothing panics; the relay only ever sends to the source of the datagram it is
//! answering or to the authenticated endpoint of a peer; to a stranger it sends at most a
//! 64-byte cookie reply; forged or replayed datagrams never reach the egress, never move the
//! peer's endpoint and never change its counters; every packet written to the egress has the
//! peer's own source address, a destination the policy allows (household ranges blocked
//! unless allowed), and is counted exactly.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use ferry_relay_core::{
    Action, DropReason, ExitPorts, IpNet, PeerConfig, PeerId, PolicyConfig, PortRule, Proto,
    PublicKey, Relay, RelayConfig, Service, StaticSecret, Verdict,
};

use crate::input::Input;
use crate::policy::{TUNNEL, canonical, protected};

const BUF: usize = 2048;
const MSG_HANDSHAKE_INIT: u8 = 1;
const MSG_COOKIE_REPLY: u8 = 3;
const MSG_DATA: u8 = 4;

fn client_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40000)
}

fn relay_addr() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
}

fn allowed_nets() -> [IpNet; 2] {
    [
        "10.77.0.2/32".parse().expect("net"),
        "fd77::2/128".parse().expect("net"),
    ]
}

/// An operator allow-list entry inside a household range (positive control for the policy).
fn operator_allow() -> IpNet {
    "192.168.50.0/24".parse().expect("net")
}

struct World {
    relay: Relay,
    id: PeerId,
    client: Tunn,
    now: Instant,
    /// Legitimate datagrams the client sent (for replays).
    captured: Vec<Vec<u8>>,
    buf: Vec<u8>,
    cbuf: Vec<u8>,
    /// Inner packets the relay wrote to the egress.
    egress: usize,
}

impl World {
    fn new() -> Self {
        let relay_key = StaticSecret::from([1; 32]);
        let client_key = StaticSecret::from([2; 32]);
        let mut relay = Relay::new(RelayConfig {
            private_key: relay_key,
            tunnel_addresses: TUNNEL.to_vec(),
            policy: PolicyConfig {
                allow: vec![operator_allow()],
                deny: Vec::new(),
                router_addresses: vec![IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1)), relay_addr()],
                tunnel_services: vec![Service {
                    proto: Proto::Udp,
                    port: 53,
                }],
                tunnel_ping: true,
                exit_ports: ExitPorts::Block(vec![PortRule {
                    proto: Some(Proto::Tcp),
                    first: 25,
                    last: 25,
                }]),
            },
            max_peers: 4,
            client_rate_bytes: 0,
            index_salt: 0x0012_3456,
        });
        let id = relay
            .add_peer(PeerConfig {
                public_key: PublicKey::from(&client_key),
                allowed_ips: allowed_nets().to_vec(),
                preshared_key: None,
                persistent_keepalive: None,
            })
            .expect("add peer");
        let client = Tunn::new(client_key, relay.public_key(), None, None, 7, None);
        let mut w = Self {
            relay,
            id,
            client,
            now: Instant::now(),
            captured: Vec::new(),
            buf: vec![0; BUF],
            cbuf: vec![0; BUF],
            egress: 0,
        };
        w.handshake();
        assert_eq!(
            w.endpoint(),
            Some(client_addr()),
            "handshake did not complete"
        );
        w
    }

    fn endpoint(&self) -> Option<SocketAddr> {
        self.relay.peers().find(|p| p.id == self.id)?.endpoint
    }

    fn counters(&self) -> Option<ferry_relay_core::PeerCounters> {
        self.relay.peer_counters(self.id)
    }

    /// Client initiation -> relay response -> client keepalive.
    fn handshake(&mut self) {
        let init = match self
            .client
            .format_handshake_initiation(&mut self.cbuf, true)
        {
            TunnResult::WriteToNetwork(b) => b.to_vec(),
            _ => return,
        };
        let resp = match self
            .relay
            .handle_udp(client_addr(), &init, self.now, &mut self.buf)
        {
            Action::SendUdp { dst, bytes } => {
                assert_eq!(dst, client_addr());
                bytes.to_vec()
            }
            _ => return,
        };
        // Only initiations the relay consumed are replays; one it rate-limited or answered
        // with a cookie is still fresh, and delivering it from elsewhere is legitimate roaming.
        if resp.first() != Some(&MSG_COOKIE_REPLY) {
            self.captured.push(init);
        }
        self.client_recv(&resp);
        self.drain();
    }

    /// Feeds a relay datagram to the client and forwards whatever it answers.
    fn client_recv(&mut self, dg: &[u8]) {
        let mut out = Vec::new();
        let mut src = Some(relay_addr());
        let mut input = dg;
        // After a handshake message the client may flush queued packets: drain with empty input.
        while let TunnResult::WriteToNetwork(b) =
            self.client.decapsulate(src, input, &mut self.cbuf)
        {
            out.push(b.to_vec());
            (src, input) = (None, &[]);
        }
        for dg in out {
            let consumed = !matches!(
                self.relay
                    .handle_udp(client_addr(), &dg, self.now, &mut self.buf),
                Action::Drop(DropReason::HandshakeRateLimit)
            );
            if consumed && dg.first() != Some(&MSG_HANDSHAKE_INIT) {
                self.captured.push(dg);
            }
        }
    }

    /// Drains `poll_transmit`; everything must go to the authenticated endpoint.
    fn drain(&mut self) {
        for _ in 0..64 {
            let ep = self.endpoint();
            let Some(t) = self.relay.poll_transmit(&mut self.buf) else {
                return;
            };
            assert_eq!(Some(t.dst), ep, "poll_transmit to a non-endpoint");
        }
    }

    /// A datagram not produced by the client: must not reach the egress or move state.
    fn stranger(&mut self, src: SocketAddr, dg: &[u8]) {
        let (ep, before) = (self.endpoint(), self.counters());
        match self.relay.handle_udp(src, dg, self.now, &mut self.buf) {
            Action::WriteTun(_) => panic!("forged/replayed datagram reached the egress"),
            Action::SendUdp { dst, bytes } => {
                assert_eq!(dst, src, "answer to a third party");
                assert!(
                    bytes.first() == Some(&MSG_COOKIE_REPLY) && bytes.len() == 64,
                    "stranger got more than a cookie reply"
                );
            }
            Action::Done | Action::Drop(_) => {}
        }
        assert_eq!(self.endpoint(), ep, "endpoint moved by a stranger");
        assert_eq!(self.counters(), before, "counters moved by a stranger");
    }

    /// The client seals `inner`; checks what the relay lets through.
    fn upstream(&mut self, inner: &[u8]) {
        let dg = match self.client.encapsulate(inner, &mut self.cbuf) {
            TunnResult::WriteToNetwork(b) => b.to_vec(),
            _ => return,
        };
        let before = self.counters().unwrap_or_default();
        let action = self
            .relay
            .handle_udp(client_addr(), &dg, self.now, &mut self.buf);
        let after = self.relay.peer_counters(self.id).unwrap_or_default();
        let consumed = dg.first() == Some(&MSG_DATA)
            || !matches!(
                action,
                Action::Drop(DropReason::HandshakeRateLimit) | Action::SendUdp { .. }
            );
        match action {
            Action::WriteTun(pkt) => {
                assert!(inner.starts_with(pkt), "egress packet is not the client's");
                check_egress(&self.relay, pkt);
                self.egress += 1;
                assert_eq!(
                    after.from_client_bytes,
                    before.from_client_bytes + pkt.len() as u64
                );
                assert_eq!(after.from_client_packets, before.from_client_packets + 1);
            }
            Action::SendUdp { dst, .. } => assert_eq!(dst, client_addr()),
            Action::Done | Action::Drop(_) => {
                assert_eq!(
                    after.from_client_bytes, before.from_client_bytes,
                    "dropped but billed"
                );
            }
        }
        if consumed {
            self.captured.push(dg);
        }
    }

    /// A packet from the egress: only ever goes to the authenticated endpoint.
    fn downstream(&mut self, packet: &[u8]) {
        let ep = self.endpoint();
        let before = self.counters().unwrap_or_default();
        let out = match self.relay.handle_tun(packet, self.now, &mut self.buf) {
            Action::SendUdp { dst, bytes } => {
                assert_eq!(Some(dst), ep, "egress packet sent to a non-endpoint");
                Some(bytes.to_vec())
            }
            Action::WriteTun(_) => panic!("handle_tun wrote to the egress"),
            Action::Done | Action::Drop(_) => None,
        };
        let after = self.counters().unwrap_or_default();
        assert!(after.to_client_bytes <= before.to_client_bytes + packet.len() as u64);
        if let Some(dg) = out {
            self.client_recv(&dg);
        }
    }
}

/// An accepted client packet: own source address, destination the policy allows.
fn check_egress(relay: &Relay, pkt: &[u8]) {
    let (src, dst, proto, l4) = parse(pkt).expect("relay accepted an unparsable packet");
    assert!(
        allowed_nets().iter().any(|n| n.contains(&src)),
        "spoofed source {src} reached the egress"
    );
    let c = canonical(dst);
    if TUNNEL.contains(&c) {
        let udp53 = proto == 17 && l4.get(2..4) == Some(&[0, 53][..]);
        let echo =
            (proto == 1 && l4.first() == Some(&8)) || (proto == 58 && l4.first() == Some(&128));
        assert!(udp53 || echo, "tunnel address reached on an unserved port");
        return;
    }
    assert_eq!(relay.policy().check_addr(dst), Verdict::Allow, "{dst}");
    if !operator_allow().contains(&c) {
        assert!(
            !protected().iter().any(|n| n.contains(&c)),
            "household destination {dst} reached the egress"
        );
    }
}

/// (src, dst, protocol, transport bytes) of a first fragment; independent of relay-core.
fn parse(p: &[u8]) -> Option<(IpAddr, IpAddr, u8, &[u8])> {
    match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p.first()? & 0x0f) * 4;
            let src: [u8; 4] = p.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            let frag = u16::from_be_bytes([*p.get(6)?, *p.get(7)?]) & 0x1fff;
            let l4 = if frag == 0 {
                p.get(ihl..).unwrap_or_default()
            } else {
                &[]
            };
            Some((src.into(), dst.into(), *p.get(9)?, l4))
        }
        6 => {
            let src: [u8; 16] = p.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            let (next, l4) = walk_v6(*p.get(6)?, p.get(40..)?);
            Some((src.into(), dst.into(), next, l4))
        }
        _ => None,
    }
}

/// What one input did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Operations performed.
    pub(crate) ops: usize,
    /// Client packets written to the egress.
    pub(crate) egress: usize,
}

/// Skips IPv6 hop-by-hop, routing, destination-options and (first) fragment headers; returns
/// the upper-layer protocol and its bytes, or (0, empty) when that is not reachable.
fn walk_v6(mut next: u8, mut rest: &[u8]) -> (u8, &[u8]) {
    for _ in 0..16 {
        let skip = match next {
            0 | 43 | 60 => match rest.get(1) {
                Some(&len) => (usize::from(len) + 1) * 8,
                None => return (0, &[]),
            },
            44 => match rest.get(2..4) {
                Some(o) if u16::from_be_bytes([o[0], o[1]]) >> 3 == 0 => 8,
                _ => return (0, &[]),
            },
            _ => return (next, rest),
        };
        match (rest.first(), rest.get(skip..)) {
            (Some(&n), Some(r)) => (next, rest) = (n, r),
            _ => return (0, &[]),
        }
    }
    (0, &[])
}

/// Runs one fuzz input.
pub(crate) fn check(data: &[u8]) -> Outcome {
    let mut w = World::new();
    let mut inp = Input(data);
    let mut ops = 0;
    while let Some(op) = inp.byte() {
        ops += 1;
        match op % 7 {
            0 => {
                let Some(src) = inp.sock() else { break };
                let dg = inp.chunk(8);
                w.stranger(src, dg);
            }
            1 | 2 => {
                let inner = inp.chunk(8);
                w.upstream(inner);
            }
            3 => {
                let Some(src) = inp.sock() else { break };
                let i = usize::from(inp.byte().unwrap_or(0));
                if !w.captured.is_empty() && src != client_addr() {
                    let dg = w.captured[i % w.captured.len()].clone();
                    w.stranger(src, &dg);
                }
            }
            4 => {
                let packet = inp.chunk(8);
                w.downstream(packet);
            }
            5 => {
                let ms = u64::from(inp.byte().unwrap_or(0)) * 100;
                w.now += Duration::from_millis(ms);
                w.relay.handle_timeout(w.now);
            }
            _ => w.handshake(),
        }
        w.drain();
        if inp.is_empty() {
            break;
        }
    }
    Outcome {
        ops,
        egress: w.egress,
    }
}
