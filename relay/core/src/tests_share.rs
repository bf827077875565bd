//! Scenario tests for the household's sharing limits (see `share.rs`): one total rate for all
//! paid peers together, and a quota budget that stops paid bytes before they are metered.
#![allow(clippy::unwrap_used, clippy::panic, clippy::disallowed_methods)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::packet::testpkt;
use crate::tests::{BudgetHook, Client, handshake, ip, peer_cfg, relay_with, upstream};
use crate::*;

/// What the hook metered.
type Admitted = Arc<Mutex<Vec<(PeerId, HookDirection, usize)>>>;

/// A relay with no per-client rate, paid peers (seeds 2, 3 at 10.77.0.2/.3) and a trusted
/// peer (seed 4 at 10.77.0.4), all connected; the hook admits everything.
fn household() -> (Relay, Vec<Client>, Admitted, Instant) {
    let mut relay = relay_with(PolicyConfig::default(), 0);
    let admitted = Arc::new(Mutex::new(Vec::new()));
    relay.set_hook(Box::new(BudgetHook {
        diverted: Arc::default(),
        admitted: admitted.clone(),
        budget: usize::MAX,
    }));
    let now = Instant::now();
    let mut clients = Vec::new();
    for (seed, kind) in [
        (2, PeerKind::Paid),
        (3, PeerKind::Paid),
        (4, PeerKind::Trusted),
    ] {
        let v4 = format!("10.77.0.{seed}/32");
        let v6 = format!("fd77::{seed}/128");
        relay.add_peer_as(peer_cfg(seed, &v4, &v6), kind).unwrap();
        let mut c = Client::new(seed, &relay);
        handshake(&mut relay, &mut c, now);
        clients.push(c);
    }
    (relay, clients, admitted, now)
}

fn up_pkt(seed: u8) -> Vec<u8> {
    testpkt::udp(
        ip(&format!("10.77.0.{seed}")),
        ip("1.1.1.1"),
        9,
        &[0u8; 1000],
    )
}

fn down_pkt(seed: u8) -> Vec<u8> {
    testpkt::udp(
        ip("1.1.1.1"),
        ip(&format!("10.77.0.{seed}")),
        40000,
        &[5u8; 1000],
    )
}

/// Offers one download packet; Ok(true) sent now, Ok(false) held, Err(reason) dropped.
fn down(relay: &mut Relay, pkt: &[u8], now: Instant) -> Result<bool, DropReason> {
    let mut buf = vec![0u8; 2048];
    match relay.handle_tun(pkt, now, &mut buf) {
        Action::SendUdp { .. } => Ok(true),
        Action::Done => Ok(false),
        Action::Drop(r) => Err(r),
        other => panic!("{other:?}"),
    }
}

/// How many held download datagrams (of any client) leave at `at`.
fn released(relay: &mut Relay, at: Instant) -> usize {
    let mut buf = vec![0u8; 2048];
    std::iter::from_fn(|| relay.poll_released(at, &mut buf).map(|_| ())).count()
}

#[test]
fn the_total_upload_rate_is_shared_by_all_paid_peers_and_trusted_peers_are_not_limited() {
    // 100 KB/s for all paid peers together, 64 KiB burst: two paid clients each sending
    // 200 x 1028 bytes at one instant get ~63 packets through between them.
    let (mut relay, mut c, admitted, now) = household();
    relay.set_share_rate(100_000, 0);
    let mut passed = [0usize; 3];
    for _ in 0..200 {
        for (i, seed) in [2u8, 3, 4].into_iter().enumerate() {
            if upstream(&mut relay, &mut c[i], &up_pkt(seed), now).is_ok() {
                passed[i] += 1;
            }
        }
    }
    let paid = passed[0] + passed[1];
    assert!((60..=66).contains(&paid), "{passed:?}");
    assert!(
        passed[0] > 25 && passed[1] > 25,
        "both share it: {passed:?}"
    );
    assert_eq!(passed[2], 200, "the household's own peer is not limited");
    assert_eq!(
        relay.stats().drops(DropReason::ShareRate),
        (400 - paid) as u64
    );
    assert_eq!(relay.stats().drops(DropReason::RateLimit), 0);
    // Only forwarded packets were metered (a dropped one costs nobody anything).
    assert_eq!(admitted.lock().unwrap().len(), paid);
    assert_eq!(relay.share_used(), paid as u64 * 1028);
    // Steady state: 2 s later ~200 KB more, whoever sends.
    let later = now + Duration::from_secs(2);
    let more = (0..400)
        .filter(|_| upstream(&mut relay, &mut c[1], &up_pkt(3), later).is_ok())
        .count();
    assert!(
        (63..=66).contains(&more),
        "refilled to the burst only: {more}"
    );
}

#[test]
fn downloads_over_the_total_rate_wait_then_leave_at_it_and_the_client_rate_still_applies() {
    let (mut relay, _c, _admitted, now) = household();
    relay.set_share_rate(0, 100_000);
    // Offer 1028-byte packets to both paid clients every millisecond for 2 s (2 MB/s) and
    // release what is due as time passes: what leaves is ~100 KB/s plus the 64 KiB burst.
    let (mut sent, mut got, mut dropped) = (0usize, 0usize, 0usize);
    let trusted = down_pkt(4);
    for ms in 0..2000u64 {
        let t = now + Duration::from_millis(ms);
        for seed in [2u8, 3] {
            match down(&mut relay, &down_pkt(seed), t) {
                Ok(true) => sent += 1,
                Ok(false) => {}
                Err(r) => {
                    assert_eq!(r, DropReason::ShareRate);
                    dropped += 1;
                }
            }
        }
        assert_eq!(
            down(&mut relay, &trusted, t),
            Ok(true),
            "trusted: not shaped"
        );
        got += released(&mut relay, t);
    }
    let end = now + Duration::from_secs(3);
    let left_late = released(&mut relay, end);
    let bytes = (sent + got) as u64 * 1028;
    // 2 s at 100 KB/s + the 64 KiB burst (+ what was held at the end, < 100 ms worth).
    assert!((255_000..=280_000).contains(&bytes), "{bytes}");
    assert!(left_late <= 10, "{left_late}");
    assert!(dropped > 3000, "{dropped}");
    assert_eq!(relay.stats().drops(DropReason::RateLimit), 0);
    // With a client rate below the total, that client's own bucket still limits it.
    relay.set_share_rate(0, 1_000_000);
    let id = relay.route_owner(ip("10.77.0.2")).unwrap();
    relay.set_peer_rate_limit(id, 10_000);
    let later = end + Duration::from_secs(5);
    let at_once = (0..200)
        .filter(|_| down(&mut relay, &down_pkt(2), later) == Ok(true))
        .count();
    assert!(
        (62..=64).contains(&at_once),
        "64 KiB client burst: {at_once}"
    );
}

#[test]
fn the_quota_budget_stops_paid_bytes_before_they_are_metered() {
    let (mut relay, mut c, admitted, now) = household();
    relay.set_share_budget(Some(3 * 1028 + 500));
    for i in 0..3 {
        assert!(
            upstream(&mut relay, &mut c[0], &up_pkt(2), now).is_ok(),
            "{i}"
        );
    }
    assert_eq!(relay.share_budget(), Some(500));
    assert_eq!(
        upstream(&mut relay, &mut c[1], &up_pkt(3), now),
        Err(DropReason::Quota)
    );
    assert_eq!(down(&mut relay, &down_pkt(2), now), Err(DropReason::Quota));
    assert_eq!(relay.stats().drops(DropReason::Quota), 2);
    // Nothing stopped by the quota was metered (so nobody is billed for it).
    assert_eq!(admitted.lock().unwrap().len(), 3);
    assert_eq!(relay.share_used(), 3 * 1028);
    // The household's own peer is not counted.
    for _ in 0..10 {
        assert!(upstream(&mut relay, &mut c[2], &up_pkt(4), now).is_ok());
    }
    assert_eq!(down(&mut relay, &down_pkt(4), now), Ok(true));
    assert_eq!(relay.share_used(), 3 * 1028);
    // A new period (the agent sets a new budget) or no quota: paid traffic flows again.
    relay.set_share_budget(None);
    assert!(upstream(&mut relay, &mut c[1], &up_pkt(3), now).is_ok());
    assert_eq!(down(&mut relay, &down_pkt(2), now), Ok(true));
    assert_eq!(relay.share_used(), 5 * 1028);
}
