//! Scenario tests: a boringtun client `Tunn` and the `Relay` exchanging datagrams in memory.
#![allow(clippy::unwrap_used, clippy::panic, clippy::disallowed_methods)]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};

use crate::packet::testpkt;
use crate::*;

const RELAY_ADDR: &str = "192.0.2.1:51820";
const CLIENT_ADDR: &str = "198.51.100.7:40000";

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
pub(crate) fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Deterministic keys from a seed byte (tests only; clamping is done by x25519).
pub(crate) fn secret(seed: u8) -> StaticSecret {
    StaticSecret::from([seed; 32])
}

pub(crate) struct Client {
    pub(crate) tunn: Tunn,
    pub(crate) addr: SocketAddr,
}

impl Client {
    pub(crate) fn new(seed: u8, relay: &Relay) -> Self {
        let tunn = Tunn::new(
            secret(seed),
            relay.public_key(),
            None,
            None,
            u32::from(seed),
            None,
        );
        Self {
            tunn,
            addr: sa(CLIENT_ADDR),
        }
    }

    pub(crate) fn init(&mut self) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        match self.tunn.format_handshake_initiation(&mut buf, true) {
            TunnResult::WriteToNetwork(b) => b.to_vec(),
            other => panic!("no initiation: {other:?}"),
        }
    }

    fn seal(&mut self, inner: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        match self.tunn.encapsulate(inner, &mut buf) {
            TunnResult::WriteToNetwork(b) => b.to_vec(),
            other => panic!("encapsulate: {other:?}"),
        }
    }

    /// Feeds a datagram from the relay; returns (datagrams to send back, inner packets).
    pub(crate) fn recv(&mut self, dg: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut buf = vec![0u8; 2048];
        let (mut out, mut inner) = (Vec::new(), Vec::new());
        let mut r = self
            .tunn
            .decapsulate(Some(sa(RELAY_ADDR).ip()), dg, &mut buf);
        loop {
            match r {
                TunnResult::WriteToNetwork(b) => out.push(b.to_vec()),
                TunnResult::WriteToTunnelV4(b, _) | TunnResult::WriteToTunnelV6(b, _) => {
                    inner.push(b.to_vec());
                    break;
                }
                TunnResult::Done => break,
                TunnResult::Err(e) => panic!("client decapsulate: {e:?}"),
            }
            r = self.tunn.decapsulate(None, &[], &mut buf);
        }
        (out, inner)
    }
}

pub(crate) fn relay_with(policy: PolicyConfig, client_rate_bytes: u64) -> Relay {
    Relay::new(RelayConfig {
        private_key: secret(1),
        tunnel_addresses: vec![ip("10.77.0.1"), ip("fd77::1")],
        policy,
        max_peers: 16,
        client_rate_bytes,
        index_salt: 0x00ab_cdef,
    })
}

pub(crate) fn peer_cfg(seed: u8, v4: &str, v6: &str) -> PeerConfig {
    PeerConfig {
        public_key: PublicKey::from(&secret(seed)),
        allowed_ips: vec![v4.parse().unwrap(), v6.parse().unwrap()],
        preshared_key: None,
        persistent_keepalive: None,
    }
}

/// Relay with client seed 2 at 10.77.0.2 / fd77::2 (trusted), handshake done.
fn connected(policy: PolicyConfig, rate: u64) -> (Relay, PeerId, Client, Instant) {
    connected_as(policy, rate, PeerKind::Trusted)
}

/// [`connected`] with a peer of the given kind.
pub(crate) fn connected_as(
    policy: PolicyConfig,
    rate: u64,
    kind: PeerKind,
) -> (Relay, PeerId, Client, Instant) {
    let mut relay = relay_with(policy, rate);
    let id = relay
        .add_peer_as(peer_cfg(2, "10.77.0.2/32", "fd77::2/128"), kind)
        .unwrap();
    let mut client = Client::new(2, &relay);
    let now = Instant::now();
    handshake(&mut relay, &mut client, now);
    (relay, id, client, now)
}

pub(crate) fn handshake(relay: &mut Relay, client: &mut Client, now: Instant) {
    let init = client.init();
    let mut buf = vec![0u8; 2048];
    let resp = match relay.handle_udp(client.addr, &init, now, &mut buf) {
        Action::SendUdp { dst, bytes } => {
            assert_eq!(dst, client.addr);
            bytes.to_vec()
        }
        other => panic!("no handshake response: {other:?}"),
    };
    assert!(relay.poll_transmit(&mut buf).is_none());
    let (back, _) = client.recv(&resp);
    assert_eq!(back.len(), 1, "client answers with a keepalive");
    assert_eq!(
        relay.handle_udp(client.addr, &back[0], now, &mut buf),
        Action::Done
    );
}

/// Sends `inner` from the client through the relay; returns the relay's action as owned data.
pub(crate) fn upstream(
    relay: &mut Relay,
    client: &mut Client,
    inner: &[u8],
    now: Instant,
) -> Result<Vec<u8>, DropReason> {
    let dg = client.seal(inner);
    let mut buf = vec![0u8; 2048];
    match relay.handle_udp(client.addr, &dg, now, &mut buf) {
        Action::WriteTun(p) => Ok(p.to_vec()),
        Action::Drop(r) => Err(r),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn handshake_and_data_flow_both_ways_v4_and_v6() {
    let (mut relay, id, mut client, now) = connected(PolicyConfig::default(), 0);
    assert_eq!(relay.stats().handshakes, 1);
    let pairs = [("10.77.0.2", "1.1.1.1"), ("fd77::2", "2606:4700::1111")];
    let mut expect = PeerCounters::default();
    for (c, server) in pairs {
        let out = testpkt::udp(ip(c), ip(server), 443, b"hello");
        assert_eq!(upstream(&mut relay, &mut client, &out, now).unwrap(), out);
        expect.from_client_bytes += out.len() as u64;
        expect.from_client_packets += 1;

        let reply = testpkt::udp(ip(server), ip(c), 40000, b"world!");
        let mut buf = vec![0u8; 2048];
        let dg = match relay.handle_tun(&reply, now, &mut buf) {
            Action::SendUdp { dst, bytes } => {
                assert_eq!(dst, client.addr);
                bytes.to_vec()
            }
            other => panic!("{other:?}"),
        };
        let (_, inner) = client.recv(&dg);
        assert_eq!(inner, vec![reply.clone()]);
        expect.to_client_bytes += reply.len() as u64;
        expect.to_client_packets += 1;
    }
    assert_eq!(relay.peer_counters(id), Some(expect));
    assert_eq!(relay.stats().total_drops(), 0);
    assert!(
        relay
            .tunnel_stats(id)
            .unwrap()
            .since_last_handshake
            .is_some()
    );
}

#[test]
fn spoofed_inner_source_is_dropped_and_not_counted() {
    let (mut relay, id, mut client, now) = connected(PolicyConfig::default(), 0);
    for src in ["10.77.0.3", "8.8.8.8", "fd77::3"] {
        let dst = if src.contains(':') {
            "2606:4700::1111"
        } else {
            "1.1.1.1"
        };
        let pkt = testpkt::udp(ip(src), ip(dst), 53, b"x");
        assert_eq!(
            upstream(&mut relay, &mut client, &pkt, now),
            Err(DropReason::AllowedIps)
        );
    }
    assert_eq!(relay.stats().drops(DropReason::AllowedIps), 3);
    assert_eq!(relay.peer_counters(id).unwrap().total_bytes(), 0);
}

#[test]
fn egress_policy_blocks_lan_router_and_tunnel_address() {
    let policy = PolicyConfig {
        router_addresses: vec![ip("192.0.2.1")],
        tunnel_services: vec![Service {
            proto: Proto::Udp,
            port: 53,
        }],
        tunnel_ping: true,
        ..PolicyConfig::default()
    };
    let (mut relay, id, mut client, now) = connected(policy, 0);
    let c4 = ip("10.77.0.2");
    let c6 = ip("fd77::2");
    let cases = [
        (
            testpkt::tcp(c4, ip("192.168.1.1"), 80),
            Err(DropReason::Policy),
        ),
        (
            testpkt::tcp(c4, ip("192.0.2.1"), 22),
            Err(DropReason::Policy),
        ),
        (
            testpkt::tcp(c4, ip("10.77.0.3"), 22),
            Err(DropReason::Policy),
        ),
        (testpkt::tcp(c6, ip("fe80::1"), 22), Err(DropReason::Policy)),
        (testpkt::tcp(c6, ip("fd00::1"), 22), Err(DropReason::Policy)),
        (
            testpkt::tcp(c4, ip("10.77.0.1"), 22),
            Err(DropReason::TunnelAddress),
        ),
        (
            testpkt::tcp(c6, ip("fd77::1"), 80),
            Err(DropReason::TunnelAddress),
        ),
    ];
    for (pkt, want) in cases {
        assert_eq!(
            upstream(&mut relay, &mut client, &pkt, now).map(|_| ()),
            want
        );
    }
    // Served: DNS and ping on the tunnel address.
    assert!(
        upstream(
            &mut relay,
            &mut client,
            &testpkt::udp(c4, ip("10.77.0.1"), 53, b"q"),
            now
        )
        .is_ok()
    );
    assert!(
        upstream(
            &mut relay,
            &mut client,
            &testpkt::ping(c6, ip("fd77::1")),
            now
        )
        .is_ok()
    );
    let counted = relay.peer_counters(id).unwrap().from_client_packets;
    assert_eq!(counted, 2);
}

#[test]
fn router_addresses_can_change_at_runtime() {
    let (mut relay, _, mut client, now) = connected(PolicyConfig::default(), 0);
    let pkt = testpkt::tcp(ip("10.77.0.2"), ip("100.200.0.1"), 80);
    assert!(upstream(&mut relay, &mut client, &pkt, now).is_ok());
    relay.set_router_addresses(vec![ip("100.200.0.1")]);
    assert_eq!(
        upstream(&mut relay, &mut client, &pkt, now),
        Err(DropReason::Policy)
    );
}

#[test]
fn allow_list_opens_a_private_range() {
    let policy = PolicyConfig {
        allow: vec!["192.168.50.0/24".parse().unwrap()],
        ..PolicyConfig::default()
    };
    let (mut relay, _, mut client, now) = connected(policy, 0);
    let c4 = ip("10.77.0.2");
    assert!(
        upstream(
            &mut relay,
            &mut client,
            &testpkt::tcp(c4, ip("192.168.50.9"), 80),
            now
        )
        .is_ok()
    );
    assert_eq!(
        upstream(
            &mut relay,
            &mut client,
            &testpkt::tcp(c4, ip("192.168.51.9"), 80),
            now
        ),
        Err(DropReason::Policy)
    );
}

#[test]
fn unknown_peer_gets_nothing() {
    let mut relay = relay_with(PolicyConfig::default(), 0);
    relay
        .add_peer(peer_cfg(2, "10.77.0.2/32", "fd77::2/128"))
        .unwrap();
    let mut stranger = Client::new(9, &relay);
    let mut buf = vec![0u8; 2048];
    let init = stranger.init();
    assert_eq!(
        relay.handle_udp(stranger.addr, &init, Instant::now(), &mut buf),
        Action::Drop(DropReason::UnknownPeer)
    );
    assert!(relay.poll_transmit(&mut buf).is_none());
    // A data message with a made-up receiver index, and plain garbage.
    let mut data = vec![4u8, 0, 0, 0];
    data.extend_from_slice(&[0x55; 60]);
    let a = relay.handle_udp(stranger.addr, &data, Instant::now(), &mut buf);
    assert!(
        matches!(
            a,
            Action::Drop(DropReason::UnknownPeer | DropReason::Auth | DropReason::NoSession)
        ),
        "{a:?}"
    );
    assert_eq!(
        relay.handle_udp(stranger.addr, b"GET / HTTP/1.1", Instant::now(), &mut buf),
        Action::Drop(DropReason::Malformed)
    );
    // The relay never answered, and a known-but-not-connected peer has no endpoint.
    assert_eq!(relay.stats().udp_tx_packets, 0);
    let pkt = testpkt::udp(ip("1.1.1.1"), ip("10.77.0.2"), 5, b"x");
    assert_eq!(
        relay.handle_tun(&pkt, Instant::now(), &mut buf),
        Action::Drop(DropReason::NoEndpoint)
    );
    let pkt = testpkt::udp(ip("1.1.1.1"), ip("10.77.0.9"), 5, b"x");
    assert_eq!(
        relay.handle_tun(&pkt, Instant::now(), &mut buf),
        Action::Drop(DropReason::NoRoute)
    );
}

#[test]
fn roaming_client_is_followed() {
    let (mut relay, id, mut client, now) = connected(PolicyConfig::default(), 0);
    client.addr = sa("203.0.113.50:5555");
    let pkt = testpkt::udp(ip("10.77.0.2"), ip("1.1.1.1"), 53, b"q");
    assert!(upstream(&mut relay, &mut client, &pkt, now).is_ok());
    assert_eq!(relay.stats().roams, 1);
    let info = relay.peers().find(|p| p.id == id).unwrap();
    assert_eq!(info.endpoint, Some(client.addr));
    let mut buf = vec![0u8; 2048];
    let reply = testpkt::udp(ip("1.1.1.1"), ip("10.77.0.2"), 40000, b"a");
    match relay.handle_tun(&reply, now, &mut buf) {
        Action::SendUdp { dst, .. } => assert_eq!(dst, client.addr),
        other => panic!("{other:?}"),
    }
    // A forged datagram from a third address must not move the endpoint.
    let mut forged = client.seal(&pkt);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let a = relay.handle_udp(sa("192.0.2.99:1"), &forged, now, &mut buf);
    assert_eq!(a, Action::Drop(DropReason::Auth));
    assert_eq!(
        relay.peers().find(|p| p.id == id).unwrap().endpoint,
        Some(client.addr)
    );
}

#[test]
fn client_rate_limit_drops_excess() {
    // 100 KB/s with the 64 KiB minimum burst: 200 x 1 KB packets at one instant cannot all pass.
    let (mut relay, id, mut client, now) = connected(PolicyConfig::default(), 100_000);
    let pkt = testpkt::udp(ip("10.77.0.2"), ip("1.1.1.1"), 9, &[0u8; 1000]);
    let passed = (0..200)
        .filter(|_| upstream(&mut relay, &mut client, &pkt, now).is_ok())
        .count();
    assert!((60..=70).contains(&passed), "{passed}");
    assert_eq!(
        relay.stats().drops(DropReason::RateLimit),
        200 - passed as u64
    );
    assert_eq!(
        relay.peer_counters(id).unwrap().from_client_packets,
        passed as u64
    );
    // 300 ms later the bucket has refilled by 30 KB (~29 packets of 1028 bytes).
    let later = now + Duration::from_millis(300);
    let more = (0..200)
        .filter(|_| upstream(&mut relay, &mut client, &pkt, later).is_ok())
        .count();
    assert!((28..=30).contains(&more), "{more}");
    // After a long pause it is capped at the burst again.
    let much_later = now + Duration::from_secs(10);
    let capped = (0..200)
        .filter(|_| upstream(&mut relay, &mut client, &pkt, much_later).is_ok())
        .count();
    assert_eq!(capped, passed);
}

/// Offers `n` download packets of `inner` at `now`: (sent at once, held by the shaper).
fn offer_down(relay: &mut Relay, inner: &[u8], n: usize, now: Instant) -> (usize, usize) {
    let mut buf = vec![0u8; 2048];
    let (mut sent, mut held) = (0, 0);
    for _ in 0..n {
        match relay.handle_tun(inner, now, &mut buf) {
            Action::SendUdp { .. } => sent += 1,
            Action::Done => held += 1,
            Action::Drop(r) => assert_eq!(r, DropReason::RateLimit),
            other => panic!("{other:?}"),
        }
    }
    (sent, held)
}

/// Releases everything due at `at`; returns the decrypted inner packets the client receives.
pub(crate) fn release(relay: &mut Relay, client: &mut Client, at: Instant) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 2048];
    let mut got = Vec::new();
    while let Some(t) = relay.poll_released(at, &mut buf) {
        assert_eq!(t.dst, client.addr);
        got.extend(client.recv(t.bytes).1);
    }
    got
}

#[test]
fn downloads_over_the_rate_wait_in_the_shaper_and_leave_at_the_rate() {
    // 100 KB/s, 64 KiB burst and 64 KiB queue: of 200 x 1028-byte packets at one instant
    // ~63 go at once, ~63 wait, the rest are dropped.
    let (mut relay, id, mut client, now) = connected(PolicyConfig::default(), 100_000);
    let pkt = testpkt::udp(ip("1.1.1.1"), ip("10.77.0.2"), 40000, &[5u8; 1000]);
    let (sent, held) = offer_down(&mut relay, &pkt, 200, now);
    assert!((60..=66).contains(&sent), "{sent}");
    assert!((60..=66).contains(&held), "{held}");
    assert_eq!(relay.stats().shaped_packets, held as u64);
    assert_eq!(
        relay.stats().drops(DropReason::RateLimit),
        (200 - sent - held) as u64
    );
    assert!(relay.take_release_rearm());
    assert!(!relay.take_release_rearm());
    // Nothing held is sent (or counted) before its time; the first is due within one
    // packet's time at the rate (10.28 ms).
    assert!(release(&mut relay, &mut client, now).is_empty());
    assert_eq!(
        relay.peer_counters(id).unwrap().to_client_packets,
        sent as u64
    );
    let first = relay.next_release().unwrap() - now;
    assert!(
        first > Duration::ZERO && first <= Duration::from_micros(10_280),
        "{first:?}"
    );
    // After 300 ms, 30 KB worth (29 packets) have left, intact and in order; after 700 ms all.
    let out = release(&mut relay, &mut client, now + Duration::from_millis(300));
    assert!((28..=30).contains(&out.len()), "{}", out.len());
    assert!(out.iter().all(|p| *p == pkt));
    let rest = release(&mut relay, &mut client, now + Duration::from_millis(700));
    assert_eq!(out.len() + rest.len(), held);
    assert_eq!(relay.next_release(), None);
    let c = relay.peer_counters(id).unwrap();
    assert_eq!(c.to_client_packets, (sent + held) as u64);
    // A packet behind an empty queue and a refilled bucket goes at once again.
    let later = now + Duration::from_secs(2);
    assert_eq!(offer_down(&mut relay, &pkt, 1, later), (1, 0));
}

#[test]
fn a_removed_peers_held_packets_are_forgotten_not_sent_to_the_next_owner_of_its_slot() {
    let (mut relay, id, _client, now) = connected(PolicyConfig::default(), 100_000);
    let pkt = testpkt::udp(ip("1.1.1.1"), ip("10.77.0.2"), 40000, &[5u8; 1000]);
    let (_, held) = offer_down(&mut relay, &pkt, 100, now);
    assert!(held > 0);
    relay.remove_peer(id).unwrap();
    // The slot's next owner (same inner address, new key) gets nothing of it.
    let id2 = relay
        .add_peer(peer_cfg(3, "10.77.0.2/32", "fd77::2/128"))
        .unwrap();
    assert_eq!(id2, id);
    let mut client = Client::new(3, &relay);
    handshake(&mut relay, &mut client, now);
    assert!(release(&mut relay, &mut client, now + Duration::from_secs(5)).is_empty());
}

#[test]
fn a_held_paid_packet_is_metered_when_it_leaves_not_when_it_waits() {
    let (mut relay, id, mut client, now) =
        connected_as(PolicyConfig::default(), 100_000, PeerKind::Paid);
    let admitted = Arc::new(Mutex::new(Vec::new()));
    relay.set_hook(Box::new(BudgetHook {
        diverted: Arc::default(),
        admitted: admitted.clone(),
        budget: usize::MAX,
    }));
    let pkt = testpkt::udp(ip("1.1.1.1"), ip("10.77.0.2"), 40000, &[5u8; 1000]);
    let (sent, held) = offer_down(&mut relay, &pkt, 100, now);
    assert!(held > 0);
    assert_eq!(admitted.lock().unwrap().len(), sent);
    let out = release(&mut relay, &mut client, now + Duration::from_secs(1));
    assert_eq!(out.len(), held);
    assert_eq!(admitted.lock().unwrap().len(), sent + held);
    assert!(
        admitted
            .lock()
            .unwrap()
            .iter()
            .all(|a| *a == (id, HookDirection::Down, 1028))
    );
}

#[test]
fn peer_table_rejects_duplicates_and_respects_max() {
    let mut relay = relay_with(PolicyConfig::default(), 0);
    let a = relay
        .add_peer(peer_cfg(2, "10.77.0.2/32", "fd77::2/128"))
        .unwrap();
    assert_eq!(
        relay.add_peer(peer_cfg(2, "10.77.0.3/32", "fd77::3/128")),
        Err(RelayError::DuplicateKey)
    );
    assert_eq!(
        relay.add_peer(peer_cfg(3, "10.77.0.2/32", "fd77::3/128")),
        Err(RelayError::AllowedIpInUse("10.77.0.2/32".parse().unwrap()))
    );
    assert_eq!(
        relay.add_peer(peer_cfg(1, "10.77.0.9/32", "fd77::9/128")),
        Err(RelayError::OwnKey)
    );
    for s in 3..18u8 {
        let r = relay.add_peer(peer_cfg(
            s,
            &format!("10.77.0.{s}/32"),
            &format!("fd77::{s}/128"),
        ));
        if s < 18 && relay.peers().count() <= 16 {
            assert!(r.is_ok() || r == Err(RelayError::TooManyPeers(16)));
        }
    }
    assert_eq!(relay.peers().count(), 16);
    assert!(relay.remove_peer(a).is_some());
    assert_eq!(
        relay.peer_by_key(PublicKey::from(&secret(2)).as_bytes()),
        None
    );
    let b = relay
        .add_peer(peer_cfg(40, "10.77.0.40/32", "fd77::40/128"))
        .unwrap();
    assert_eq!(b, a, "slot reused");
}

#[test]
fn many_peers_route_to_their_own_sessions() {
    let mut relay = relay_with(PolicyConfig::default(), 0);
    let now = Instant::now();
    let mut clients = Vec::new();
    for s in 2..12u8 {
        let id = relay
            .add_peer(peer_cfg(
                s,
                &format!("10.77.0.{s}/32"),
                &format!("fd77::{s}/128"),
            ))
            .unwrap();
        let mut c = Client::new(s, &relay);
        c.addr = SocketAddr::new(ip("198.51.100.7"), 40000 + u16::from(s));
        handshake(&mut relay, &mut c, now);
        clients.push((s, id, c));
    }
    let mut buf = vec![0u8; 2048];
    for (s, id, c) in &mut clients {
        let reply = testpkt::udp(ip("1.1.1.1"), ip(&format!("10.77.0.{s}")), 1, &[*s; 10]);
        let dg = match relay.handle_tun(&reply, now, &mut buf) {
            Action::SendUdp { dst, bytes } => {
                assert_eq!(dst, c.addr);
                bytes.to_vec()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(c.recv(&dg).1, vec![reply.clone()]);
        assert_eq!(
            relay.peer_counters(*id).unwrap().to_client_bytes,
            reply.len() as u64
        );
    }
}

#[test]
fn timers_run_without_output_for_fresh_sessions_and_small_buffers_are_refused() {
    let (mut relay, _, mut client, now) = connected(PolicyConfig::default(), 0);
    relay.handle_timeout(now + TIMER_INTERVAL);
    let mut buf = vec![0u8; 2048];
    assert!(relay.poll_transmit(&mut buf).is_none());
    let dg = client.seal(&testpkt::udp(ip("10.77.0.2"), ip("1.1.1.1"), 9, &[0; 100]));
    let mut small = vec![0u8; 100];
    assert_eq!(
        relay.handle_udp(client.addr, &dg, now, &mut small),
        Action::Drop(DropReason::BufferTooSmall)
    );
    assert_eq!(buffer_len(1420), 1452);
    assert_eq!(buffer_len(60), MIN_BUFFER_LEN);
}

#[test]
fn replayed_handshake_initiation_is_refused() {
    let mut relay = relay_with(PolicyConfig::default(), 0);
    relay
        .add_peer(peer_cfg(2, "10.77.0.2/32", "fd77::2/128"))
        .unwrap();
    let mut client = Client::new(2, &relay);
    let init = client.init();
    let mut buf = vec![0u8; 2048];
    let now = Instant::now();
    assert!(matches!(
        relay.handle_udp(client.addr, &init, now, &mut buf),
        Action::SendUdp { .. }
    ));
    // The same initiation again (an on-path replay, even from another address) gets nothing.
    let replay = relay.handle_udp(sa("192.0.2.66:9"), &init, now, &mut buf);
    assert_eq!(replay, Action::Drop(DropReason::Replay));
    assert_eq!(relay.peers().next().unwrap().endpoint, Some(client.addr));
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Arbitrary datagrams and egress packets never panic, never reach the egress and never
        /// move the connected peer's endpoint.
        #[test]
        fn garbage_never_passes(
            dgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20),
            kinds in proptest::collection::vec(0u8..5, 20),
        ) {
            let (mut relay, id, _client, now) = connected(PolicyConfig::default(), 0);
            let before = relay.peers().find(|p| p.id == id).unwrap().endpoint;
            let mut buf = vec![0u8; 2048];
            for (mut dg, kind) in dgs.into_iter().zip(kinds) {
                // Bias towards plausible WireGuard message types and sizes.
                if kind > 0 && !dg.is_empty() {
                    dg[0] = kind;
                    if kind == 1 { dg.resize(148, 0) }
                }
                let a = relay.handle_udp(sa("203.0.113.9:7"), &dg, now, &mut buf);
                prop_assert!(!matches!(a, Action::WriteTun(_)), "{:?}", a);
                let _ = relay.handle_tun(&dg, now, &mut buf);
                while relay.poll_transmit(&mut buf).is_some() {}
            }
            prop_assert_eq!(relay.peers().find(|p| p.id == id).unwrap().endpoint, before);
            prop_assert_eq!(relay.peer_counters(id).unwrap().from_client_bytes, 0);
        }

        /// Whatever a connected client sends, only packets with its own source and an allowed
        /// destination come out, and the byte counter equals exactly what came out.
        #[test]
        fn only_allowed_packets_are_forwarded_and_counted(
            srcs in proptest::collection::vec((any::<bool>(), any::<u32>()), 1..30),
            dsts in proptest::collection::vec(any::<u32>(), 30),
        ) {
            let (mut relay, id, mut client, now) = connected(PolicyConfig::default(), 0);
            let mut forwarded = 0u64;
            for ((own, s), d) in srcs.into_iter().zip(dsts) {
                let src = if own { ip("10.77.0.2") } else { IpAddr::V4(s.into()) };
                let dst = IpAddr::V4(d.into());
                let pkt = testpkt::udp(src, dst, 443, b"p");
                let allowed = src == ip("10.77.0.2") && relay.policy().check_addr(dst) == Verdict::Allow;
                match upstream(&mut relay, &mut client, &pkt, now) {
                    Ok(p) => {
                        prop_assert!(allowed);
                        prop_assert_eq!(&p, &pkt);
                        forwarded += p.len() as u64;
                    }
                    Err(_) => prop_assert!(!allowed),
                }
            }
            prop_assert_eq!(relay.peer_counters(id).unwrap().from_client_bytes, forwarded);
        }
    }
}

#[test]
fn timer_sweep_emits_persistent_keepalive_to_the_endpoint() {
    let mut relay = relay_with(PolicyConfig::default(), 0);
    let mut cfg = peer_cfg(2, "10.77.0.2/32", "fd77::2/128");
    cfg.persistent_keepalive = Some(1);
    relay.add_peer(cfg).unwrap();
    let mut client = Client::new(2, &relay);
    let now = Instant::now();
    handshake(&mut relay, &mut client, now);
    // boringtun's timers use its own clock: let one keepalive interval pass for real.
    std::thread::sleep(Duration::from_millis(1100));
    relay.handle_timeout(now + Duration::from_millis(1100));
    let mut buf = vec![0u8; 2048];
    let t = relay.poll_transmit(&mut buf).expect("keepalive due");
    assert_eq!(t.dst, client.addr);
    assert_eq!(t.bytes.len(), OVERHEAD, "an empty data message");
    let keepalive = t.bytes.to_vec();
    assert!(
        relay.poll_transmit(&mut buf).is_none(),
        "one per peer per sweep"
    );
    let (back, inner) = client.recv(&keepalive);
    assert!(back.is_empty() && inner.is_empty());
}

/// Diverts UDP to port 51821, admits packets while `budget` bytes last, records what it saw.
pub(crate) struct BudgetHook {
    pub(crate) diverted: Arc<Mutex<usize>>,
    pub(crate) admitted: Arc<Mutex<Vec<(PeerId, HookDirection, usize)>>>,
    pub(crate) budget: usize,
}

impl PacketHook for BudgetHook {
    fn divert(&mut self, _peer: PeerId, hdr: &IpHeader, _p: &[u8], _now: Instant) -> bool {
        let control = hdr.transport == Transport::Port(17, 51821);
        if control {
            *self.diverted.lock().unwrap() += 1;
        }
        control
    }

    fn admit(
        &mut self,
        peer: PeerId,
        dir: HookDirection,
        len: usize,
        _now: Instant,
    ) -> HookVerdict {
        if len > self.budget {
            return HookVerdict::CreditWindow;
        }
        self.budget -= len;
        self.admitted.lock().unwrap().push((peer, dir, len));
        HookVerdict::Forward
    }
}

#[test]
fn metering_hook_diverts_control_before_policy_and_gates_forwarding_after_it() {
    let (mut relay, id, mut client, now) = connected_as(PolicyConfig::default(), 0, PeerKind::Paid);
    let diverted = Arc::new(Mutex::new(0));
    let admitted = Arc::new(Mutex::new(Vec::new()));
    relay.set_hook(Box::new(BudgetHook {
        diverted: diverted.clone(),
        admitted: admitted.clone(),
        budget: 200,
    }));
    // Control to the relay's own address (the policy would block it): consumed, not counted.
    let ctl = testpkt::udp(ip("10.77.0.2"), ip("10.77.0.1"), 51821, b"frame");
    let mut buf = vec![0u8; 2048];
    let dg = client.seal(&ctl);
    assert_eq!(
        relay.handle_udp(client.addr, &dg, now, &mut buf),
        Action::Done
    );
    assert_eq!(*diverted.lock().unwrap(), 1);
    // Allowed-IPs comes first: a spoofed control packet is dropped, not diverted.
    let spoof = testpkt::udp(ip("10.77.0.9"), ip("10.77.0.1"), 51821, b"frame");
    assert_eq!(
        upstream(&mut relay, &mut client, &spoof, now),
        Err(DropReason::AllowedIps)
    );
    // The policy runs before admit: a LAN destination never reaches the meter.
    let lan = testpkt::udp(ip("10.77.0.2"), ip("192.168.1.1"), 80, b"x");
    assert_eq!(
        upstream(&mut relay, &mut client, &lan, now),
        Err(DropReason::Policy)
    );
    assert_eq!(*diverted.lock().unwrap(), 1);
    assert!(admitted.lock().unwrap().is_empty());
    // 128-byte packets: the first fits the 200-byte budget, the second does not.
    let out = testpkt::udp(ip("10.77.0.2"), ip("1.1.1.1"), 443, &[7u8; 100]);
    assert_eq!(
        upstream(&mut relay, &mut client, &out, now),
        Ok(out.clone())
    );
    assert_eq!(
        upstream(&mut relay, &mut client, &out, now),
        Err(DropReason::CreditWindow)
    );
    // Downstream: a 30-byte reply fits the remaining 72 bytes, a 128-byte one is refused.
    let small = testpkt::udp(ip("1.1.1.1"), ip("10.77.0.2"), 40000, b"hi");
    assert!(matches!(
        relay.handle_tun(&small, now, &mut buf),
        Action::SendUdp { .. }
    ));
    let big = testpkt::udp(ip("1.1.1.1"), ip("10.77.0.2"), 40000, &[7u8; 100]);
    assert_eq!(
        relay.handle_tun(&big, now, &mut buf),
        Action::Drop(DropReason::CreditWindow)
    );
    assert_eq!(
        *admitted.lock().unwrap(),
        vec![(id, HookDirection::Up, 128), (id, HookDirection::Down, 30)]
    );
    let c = relay.peer_counters(id).unwrap();
    assert_eq!((c.from_client_bytes, c.to_client_bytes), (128, 30));
    assert_eq!(relay.stats().drops(DropReason::CreditWindow), 2);
}

#[test]
fn a_paid_peer_without_a_metering_hook_forwards_nothing_and_a_trusted_one_is_not_metered() {
    let (mut relay, id, mut client, now) = connected_as(PolicyConfig::default(), 0, PeerKind::Paid);
    let out = testpkt::udp(ip("10.77.0.2"), ip("1.1.1.1"), 443, &[7u8; 100]);
    assert_eq!(
        upstream(&mut relay, &mut client, &out, now),
        Err(DropReason::PaidNoSession)
    );
    let back = testpkt::udp(ip("1.1.1.1"), ip("10.77.0.2"), 40000, b"hi");
    let mut buf = vec![0u8; 2048];
    assert_eq!(
        relay.handle_tun(&back, now, &mut buf),
        Action::Drop(DropReason::PaidNoSession)
    );
    let c = relay.peer_counters(id).unwrap();
    assert_eq!((c.from_client_bytes, c.to_client_bytes), (0, 0));
    // A trusted peer with a hook that refuses everything still forwards (never metered).
    let (mut relay, _, mut client, now) = connected(PolicyConfig::default(), 0);
    relay.set_hook(Box::new(BudgetHook {
        diverted: Arc::default(),
        admitted: Arc::default(),
        budget: 0,
    }));
    assert_eq!(
        upstream(&mut relay, &mut client, &out, now),
        Ok(out.clone())
    );
    assert_eq!(relay.hook::<BudgetHook>().map(|h| h.budget), Some(0));
}

#[test]
fn control_messages_are_encrypted_for_the_peer_without_rate_limit_hook_or_counters() {
    // A 1 byte/s client rate and a hook with no budget: data is refused, control is not.
    let (mut relay, id, mut client, _now) =
        connected_as(PolicyConfig::default(), 1, PeerKind::Paid);
    relay.set_hook(Box::new(BudgetHook {
        diverted: Arc::default(),
        admitted: Arc::default(),
        budget: 0,
    }));
    let ctl = testpkt::udp(ip("10.77.0.1"), ip("10.77.0.2"), 51821, &[1u8; 900]);
    let mut buf = vec![0u8; 2048];
    for _ in 0..50 {
        let t = relay.encapsulate_for(id, &ctl, &mut buf).expect("sent");
        assert_eq!(t.dst, client.addr);
        let dg = t.bytes.to_vec();
        let (_, inner) = client.recv(&dg);
        assert_eq!(inner, vec![ctl.clone()]);
    }
    let c = relay.peer_counters(id).unwrap();
    assert_eq!((c.to_client_packets, c.to_client_bytes), (0, 0));
    assert!(
        relay
            .hook::<BudgetHook>()
            .unwrap()
            .admitted
            .lock()
            .unwrap()
            .is_empty()
    );
    // Unknown peer or too small a buffer: nothing.
    let mut small = vec![0u8; 64];
    assert!(relay.encapsulate_for(id, &ctl, &mut small).is_none());
    relay.remove_peer(id);
    assert!(relay.encapsulate_for(id, &ctl, &mut buf).is_none());
}

#[test]
fn with_hook_borrows_the_relay_and_its_hook_together() {
    let (mut relay, id, _client, _now) = connected_as(PolicyConfig::default(), 0, PeerKind::Paid);
    assert!(
        relay.with_hook(|_, _: &mut BudgetHook| ()).is_none(),
        "no hook yet"
    );
    relay.set_hook(Box::new(BudgetHook {
        diverted: Arc::default(),
        admitted: Arc::default(),
        budget: 7,
    }));
    let removed = relay.with_hook(|r, h: &mut BudgetHook| {
        h.budget = 9;
        r.remove_peer(id).is_some()
    });
    assert_eq!(removed, Some(true));
    assert_eq!(relay.hook::<BudgetHook>().unwrap().budget, 9);
    assert!(relay.peer_kind(id).is_none());
}

#[test]
fn sync_trusted_replaces_trusted_peers_and_never_touches_paid_ones() {
    let mut relay = relay_with(PolicyConfig::default(), 0);
    let paid = relay
        .add_peer_as(peer_cfg(2, "10.77.0.2/32", "fd77::2/128"), PeerKind::Paid)
        .unwrap();
    let a = peer_cfg(3, "10.77.0.3/32", "fd77::3/128");
    let b = peer_cfg(4, "10.77.0.4/32", "fd77::4/128");
    let r = relay.sync_trusted(&[a.clone(), b.clone()]);
    assert_eq!((r.added, r.removed, r.failed.len()), (2, 0, 0));
    let r = relay.sync_trusted(std::slice::from_ref(&b));
    assert_eq!((r.added, r.removed), (0, 1));
    let r = relay.sync_trusted(&[]);
    assert_eq!((r.added, r.removed), (0, 1));
    assert_eq!(relay.peer_kind(paid), Some(PeerKind::Paid));
    // The paid peer's key in the config: refused, the paid peer stays as it is.
    let r = relay.sync_trusted(&[peer_cfg(2, "10.77.0.9/32", "fd77::9/128")]);
    assert_eq!(r.failed, vec![(0, RelayError::DuplicateKey)]);
    assert_eq!(relay.peers().count(), 1);
    assert_eq!(relay.peer_kind(paid), Some(PeerKind::Paid));
}
