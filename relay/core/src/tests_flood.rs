//! Scenario tests for handshake admission under floods (see `admission.rs`): a flood from a few
//! sources stays within their buckets and a legitimate peer completes its handshake at once,
//! without a cookie round trip; a flood spoofing unbounded sources spends the relay-wide budget,
//! after which everyone must prove its address with a cookie (standard WireGuard).
#![allow(clippy::unwrap_used, clippy::panic, clippy::disallowed_methods)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::tests::{Client, peer_cfg, relay_with, sa};
use crate::*;

const MSG_INIT: u8 = 1;
const MSG_RESPONSE: u8 = 2;
const MSG_COOKIE: u8 = 3;

/// Valid-MAC1 initiations from unknown keys (an attacker knows the relay's public key).
fn attacker_inits(relay: &Relay, n: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| Client::new(100 + i, relay).init())
        .inspect(|m| assert_eq!(m[0], MSG_INIT))
        .collect()
}

/// Garbage initiations: the right type and size, random-looking body (fails MAC1).
fn garbage(i: u32) -> Vec<u8> {
    let mut g: Vec<u8> = (0..148u32)
        .map(|j| (j.wrapping_mul(31) ^ i.wrapping_mul(7919)) as u8)
        .collect();
    g[..4].copy_from_slice(&[MSG_INIT, 0, 0, 0]);
    g
}

/// The first byte (message type) of what the relay answered, if it sent a datagram to `src`.
fn answer(relay: &mut Relay, src: SocketAddr, msg: &[u8], now: Instant) -> Option<u8> {
    let mut buf = vec![0u8; 2048];
    match relay.handle_udp(src, msg, now, &mut buf) {
        Action::SendUdp { dst, bytes } => {
            assert_eq!(dst, src);
            Some(bytes[0])
        }
        _ => None,
    }
}

fn relay_with_legit_peer() -> Relay {
    let mut relay = relay_with(PolicyConfig::default(), 0);
    relay
        .add_peer(peer_cfg(2, "10.77.0.2/32", "fd77::2/128"))
        .unwrap();
    relay
}

/// Like the netns flood test: 32 IPv4 sources send valid-MAC1 initiations and one IPv6 /64
/// (32 addresses) sends garbage, 10 000 messages/s in all. Every source is over its bucket,
/// the relay is under load, yet the sources' buckets cap the DH work below the budget and the
/// legitimate peer's first initiation is answered with a handshake response.
#[test]
fn flood_from_many_sources_leaves_the_legit_handshake_cookie_free() {
    let mut relay = relay_with_legit_peer();
    // The x86-64/ARM default (32-bit MIPS builds default to 100/s).
    relay.set_handshake_budget(1000);
    let inits = attacker_inits(&relay, 8);
    let t0 = Instant::now();
    let v4 = |i: u32| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0xc633_6464 + i)), 40_000);
    let v6 = |i: u32| {
        SocketAddr::new(
            format!("2001:db8:5100::{:x}", 0x100 + i).parse().unwrap(),
            1,
        )
    };
    let mut legit_answers = Vec::new();
    // 2 s of flood in rounds of 64 messages every 6.4 ms (10 000/s).
    let round = Duration::from_micros(6_400);
    let mut next_timer = t0;
    for r in 0..312u32 {
        let now = t0 + round * r;
        if now >= next_timer {
            relay.handle_timeout(now);
            while relay.poll_transmit(&mut vec![0u8; 2048]).is_some() {}
            next_timer = now + TIMER_INTERVAL;
        }
        for i in 0..32u32 {
            answer(&mut relay, v4(i), &inits[(i % 8) as usize], now);
            answer(&mut relay, v6(i), &garbage(r * 32 + i), now);
        }
        // The legit peer starts fresh handshakes every 0.5 s of the flood.
        if r % 78 == 77 {
            let mut client = Client::new(2, &relay);
            legit_answers.push(answer(&mut relay, client.addr, &client.init(), now));
        }
    }
    let stats = relay.stats();
    assert_eq!(stats.drops(DropReason::Auth), 312 * 32, "garbage dropped");
    // Processed without a cookie: about 50 before the relay was under load, then at most
    // burst + 20/s per source over 2 s (~720/s), below the 1000/s budget; the rest got cookies.
    let processed = stats.drops(DropReason::UnknownPeer);
    assert!(
        (1000..=50 + 32 * (5 + 40 + 1)).contains(&processed),
        "{processed}"
    );
    assert_eq!(processed + stats.cookie_replies, 312 * 32, "{stats:?}");
    assert_eq!(
        legit_answers,
        vec![Some(MSG_RESPONSE); 4],
        "legit peer answered at once"
    );
}

/// A flood spoofing a new source address for every message passes every bucket, so the budget
/// is what limits the DH work; once it is spent the legitimate peer gets a cookie like everyone
/// else, and completes its handshake with MAC2 (standard WireGuard: one retransmission later).
#[test]
fn flood_from_unbounded_sources_spends_the_budget_then_everyone_gets_cookies() {
    let mut relay = relay_with_legit_peer();
    relay.set_handshake_budget(200);
    let inits = attacker_inits(&relay, 8);
    let t0 = Instant::now();
    // 0.5 s at 4000/s, a fresh source address each time.
    let mut cookies = 0u64;
    for i in 0..2000u32 {
        let now = t0 + Duration::from_micros(250) * i;
        let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 1000);
        if answer(&mut relay, src, &inits[(i % 8) as usize], now) == Some(MSG_COOKIE) {
            cookies += 1;
        }
    }
    let processed = relay.stats().drops(DropReason::UnknownPeer);
    // 100 before the relay is under load, then the budget: burst 20 + 200/s * 0.5 s.
    assert!(
        (200..=100 + 20 + 100 + 2).contains(&processed),
        "{processed}"
    );
    assert_eq!(processed + cookies, 2000);

    // At the instant of the last flood message (which took any token available then).
    let now = t0 + Duration::from_micros(250) * 1999;
    let mut client = Client::new(2, &relay);
    let mut buf = vec![0u8; 2048];
    let reply = match relay.handle_udp(client.addr, &client.init(), now, &mut buf) {
        Action::SendUdp { bytes, .. } => bytes.to_vec(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        reply[0], MSG_COOKIE,
        "budget spent: cookie for the legit peer too"
    );
    let (back, _) = client.recv(&reply);
    assert!(back.is_empty());
    assert_eq!(
        answer(&mut relay, client.addr, &client.init(), now),
        Some(MSG_RESPONSE),
        "MAC2 proves the address"
    );
}

/// Budget 0 is plain WireGuard: under load every new handshake needs a cookie first.
#[test]
fn budget_zero_gives_cookies_to_everyone_under_load() {
    let mut relay = relay_with_legit_peer();
    relay.set_handshake_budget(0);
    let now = Instant::now();
    let mut flooder = Client::new(2, &relay);
    let mut buf = vec![0u8; 2048];
    let mut cookie = None;
    for i in 0..300u32 {
        let src = SocketAddr::new(IpAddr::V4((0xc633_6400 + i % 200).into()), 1000);
        if let Action::SendUdp { bytes, .. } = relay.handle_udp(src, &flooder.init(), now, &mut buf)
        {
            if bytes[0] == MSG_COOKIE {
                cookie = Some(bytes.to_vec());
            }
        }
    }
    assert!(relay.stats().cookie_replies > 0);
    assert!(cookie.is_some());
    // The legit client gets a cookie reply first, then completes with mac2.
    let mut client = Client::new(2, &relay);
    let init = client.init();
    let reply = match relay.handle_udp(client.addr, &init, now, &mut buf) {
        Action::SendUdp { bytes, .. } => bytes.to_vec(),
        other => panic!("{other:?}"),
    };
    assert_eq!(reply[0], MSG_COOKIE, "cookie reply under load");
    let (back, _) = client.recv(&reply);
    assert!(back.is_empty());
    assert_eq!(
        answer(&mut relay, client.addr, &client.init(), now),
        Some(MSG_RESPONSE)
    );
}

/// Under load a source gets its burst of 5 without a cookie, then cookies; with MAC2 it gets
/// its own burst of 5 from the proven-source buckets, which spoofed traffic cannot drain.
#[test]
fn per_source_bucket_limits_handshakes_under_load() {
    let mut relay = relay_with_legit_peer();
    let now = Instant::now();
    let mut client = Client::new(2, &relay);
    // Push the relay over its load limit from other sources.
    let other = |i: u32| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0xcb00_7100 + i)), 9);
    let inits = attacker_inits(&relay, 1);
    for i in 0..100 {
        answer(&mut relay, other(i), &inits[0], now);
    }
    let answers: Vec<_> = (0..7)
        .map(|_| answer(&mut relay, client.addr, &client.init(), now))
        .collect();
    let mut expect = vec![Some(MSG_RESPONSE); 5];
    expect.extend([Some(MSG_COOKIE); 2]);
    assert_eq!(answers, expect, "burst of 5 without a cookie, then cookies");

    // A spoofer uses the client's address (and therefore its bucket) heavily ...
    let spoofer = inits[0].clone();
    for _ in 0..50 {
        assert_eq!(
            answer(&mut relay, client.addr, &spoofer, now),
            Some(MSG_COOKIE)
        );
    }
    // ... but the client with the cookie gets the proven-source burst.
    let mut buf = vec![0u8; 2048];
    let reply = match relay.handle_udp(client.addr, &client.init(), now, &mut buf) {
        Action::SendUdp { bytes, .. } => bytes.to_vec(),
        other => panic!("{other:?}"),
    };
    assert_eq!(reply[0], MSG_COOKIE);
    client.recv(&reply);
    let answered = (0..20)
        .filter(|_| answer(&mut relay, client.addr, &client.init(), now) == Some(MSG_RESPONSE))
        .count();
    assert_eq!(answered, 5, "burst of 5 per proven source under load");
    assert_eq!(relay.stats().drops(DropReason::HandshakeRateLimit), 15);
    // A second later the load window has passed.
    let later = now + Duration::from_secs(1);
    relay.handle_timeout(later);
    assert_eq!(
        answer(&mut relay, sa("198.51.100.7:40000"), &client.init(), later),
        Some(MSG_RESPONSE)
    );
}
