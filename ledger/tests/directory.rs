//! The relay directory over a real store (SQLite, and PostgreSQL when
//! `FERRY_TEST_POSTGRES_URL` is set): announces, probing, listing filters, expiry, the
//! score's resistance to self-dealing.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::{NOW, PRICE, World};
use ferry_ledger::Store;
use ferry_ledger::directory::{
    AnnounceError, Directory, DirectoryError, DirectoryParams, RefusalError,
};
use ferry_ledger::store::RelayFilter;
use ferry_ledger::testkit::{self, FakeProber, NETWORK};
use ferry_receipts::{DirectoryAnnotation, RelayDescriptor, SigningKey};

both_stores!(
    announced_relays_are_probed_listed_and_filtered,
    unreachable_unregistered_and_overpriced_relays_are_not_listed,
    probes_are_rate_limited_per_relay,
    expired_descriptors_disappear,
    own_clients_do_not_raise_a_relays_score,
    paying_clients_refusals_lower_a_relays_score_and_others_are_refused,
);

fn params() -> DirectoryParams {
    DirectoryParams {
        network_id: NETWORK,
        min_price_micros_per_gib: 100_000,
        max_price_micros_per_gib: 5_000_000,
        max_ttl_secs: 3600,
        skew_secs: 300,
        min_probe_interval_secs: 30,
        max_list: 1000,
    }
}

fn addr(n: u64) -> SocketAddrV4 {
    SocketAddrV4::new([81, 2, 69, 10 + n as u8].into(), 51820)
}

fn hello(n: u64) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(*addr(n).ip()), 51821)
}

struct Dir<S> {
    w: World<S>,
    dir: Directory<S>,
    prober: Arc<FakeProber>,
}

async fn setup<S: Store>(store: S, relays: u64, clients: u64) -> Dir<S> {
    let w = World::new(store, relays, clients, 100 << 30).await;
    let prober = Arc::new(FakeProber::default());
    let dir = Directory::new(w.ledger.clone(), params(), prober.clone());
    Dir { w, dir, prober }
}

impl<S: Store> Dir<S> {
    fn open(&self, n: u64) {
        self.prober.open.lock().unwrap().insert(hello(n));
    }

    fn descriptor(&self, r: usize, price: u64, country: &[u8; 2], now: u64) -> RelayDescriptor {
        testkit::descriptor(
            NETWORK,
            &self.w.relays[r],
            addr(r as u64),
            price,
            *country,
            now,
        )
    }

    async fn announce(
        &self,
        d: &RelayDescriptor,
        now: u64,
    ) -> Result<ferry_ledger::directory::Announced, DirectoryError> {
        let seen = IpAddr::V4(*d.ipv4.unwrap().ip());
        self.dir
            .announce(&d.encode(), seen, [now as u8; 16], now)
            .await
    }

    async fn list(&self, f: RelayFilter, now: u64) -> Vec<(RelayDescriptor, DirectoryAnnotation)> {
        let lk = self.w.ledger.public_key();
        self.dir
            .list(f, now)
            .await
            .unwrap()
            .into_iter()
            .map(|(d, a)| {
                let d = RelayDescriptor::decode(&d).unwrap();
                let a = DirectoryAnnotation::decode(&a).unwrap();
                d.verify(&NETWORK, now, 0).unwrap();
                a.verify(&NETWORK, &lk).unwrap();
                assert_eq!(a.descriptor_id, d.id(), "annotation names its descriptor");
                (d, a)
            })
            .collect()
    }
}

fn all() -> RelayFilter {
    RelayFilter {
        limit: 100,
        ..RelayFilter::default()
    }
}

async fn announced_relays_are_probed_listed_and_filtered<S: Store>(store: S) {
    let t = setup(store, 3, 0).await;
    for n in 0..3 {
        t.open(n);
    }
    let offers = [
        (0, 1_000_000, b"DE"),
        (1, 400_000, b"NL"),
        (2, 2_000_000, b"DE"),
    ];
    for (r, price, country) in offers {
        let a = t
            .announce(&t.descriptor(r, price, country, NOW), NOW)
            .await
            .unwrap();
        assert!(a.listed && a.findings.is_empty(), "{:?}", a.findings);
        assert_eq!(
            a.annotation.score, 400,
            "a new reachable relay starts at 400"
        );
    }
    let listed = t.list(all(), NOW + 1).await;
    // Equal scores: cheaper first.
    let prices: Vec<u64> = listed.iter().map(|(d, _)| d.price_micros_per_gib).collect();
    assert_eq!(prices, [400_000, 1_000_000, 2_000_000]);
    let (_, a) = &listed[0];
    assert_eq!(
        (a.probes_ok, a.probes_total, a.probe_rtt_micros),
        (1, 1, 800)
    );
    let de = t
        .list(
            RelayFilter {
                country: Some("DE".into()),
                ..all()
            },
            NOW + 1,
        )
        .await;
    assert_eq!(de.len(), 2);
    let cheap = t
        .list(
            RelayFilter {
                max_price: Some(1_000_000),
                ..all()
            },
            NOW + 1,
        )
        .await;
    assert_eq!(cheap.len(), 2);
    let both = RelayFilter {
        country: Some("DE".into()),
        max_price: Some(1_000_000),
        ..all()
    };
    assert_eq!(t.list(both, NOW + 1).await.len(), 1);
    assert!(
        t.list(
            RelayFilter {
                min_score: Some(401),
                ..all()
            },
            NOW + 1
        )
        .await
        .is_empty()
    );
    assert!(
        t.list(
            RelayFilter {
                ipv6: Some(true),
                ..all()
            },
            NOW + 1
        )
        .await
        .is_empty()
    );
    assert_eq!(
        t.list(RelayFilter { limit: 1, ..all() }, NOW + 1)
            .await
            .len(),
        1
    );
}

async fn unreachable_unregistered_and_overpriced_relays_are_not_listed<S: Store>(store: S) {
    let t = setup(store, 1, 0).await;
    // Hello port closed: stored, not listed, and the operator is told why.
    let a = t
        .announce(&t.descriptor(0, 1_000_000, b"DE", NOW), NOW)
        .await
        .unwrap();
    assert!(!a.listed);
    let codes: Vec<_> = a.findings.iter().map(|f| f.code()).collect();
    assert_eq!(codes, ["hello_port_closed"]);
    assert!(
        a.findings[0].message().contains("81.2.69.10:51821"),
        "{}",
        a.findings[0].message()
    );
    assert_eq!(a.annotation.score, 0);
    assert!(t.list(all(), NOW).await.is_empty());
    // A key nobody registered.
    let stranger = SigningKey::from_seed(&[0x77; 32]);
    let d = testkit::descriptor(NETWORK, &stranger, addr(9), 1_000_000, *b"DE", NOW);
    let e = t.announce(&d, NOW).await.unwrap_err();
    assert!(
        matches!(e, DirectoryError::Announce(AnnounceError::UnknownRelay)),
        "{e}"
    );
    // Outside the network's price bounds, or valid for too long.
    for price in [99_999, 5_000_001] {
        let e = t
            .announce(&t.descriptor(0, price, b"DE", NOW), NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(e, DirectoryError::Announce(AnnounceError::Price { .. })),
            "{e}"
        );
    }
    let mut long = t.descriptor(0, 1_000_000, b"DE", NOW);
    long.expires_at = NOW + 3601;
    let long = long.sign(&t.w.relays[0]);
    let e = t.announce(&long, NOW).await.unwrap_err();
    assert!(
        matches!(e, DirectoryError::Announce(AnnounceError::TooLong { .. })),
        "{e}"
    );
    // Tampered: the price lowered after signing.
    let mut forged = t.descriptor(0, 1_000_000, b"DE", NOW);
    forged.price_micros_per_gib = 200_000;
    let e = t.announce(&forged, NOW).await.unwrap_err();
    assert!(
        matches!(e, DirectoryError::Announce(AnnounceError::Verify(_))),
        "{e}"
    );
}

async fn probes_are_rate_limited_per_relay<S: Store>(store: S) {
    let t = setup(store, 1, 0).await;
    t.open(0);
    t.announce(&t.descriptor(0, 1_000_000, b"DE", NOW), NOW)
        .await
        .unwrap();
    // Same endpoints 10 s later: the last probe's answer is reused, no new probe.
    let a = t
        .announce(&t.descriptor(0, 900_000, b"DE", NOW + 10), NOW + 10)
        .await
        .unwrap();
    assert!(a.listed);
    assert_eq!(t.prober.probes.load(Ordering::Relaxed), 1);
    assert_eq!((a.annotation.probes_ok, a.annotation.probes_total), (1, 1));
    assert_eq!(
        t.list(all(), NOW + 11).await[0].0.price_micros_per_gib,
        900_000
    );
    // A new endpoint that soon is refused: probes cannot be aimed elsewhere quickly.
    let mut moved = t.descriptor(0, 900_000, b"DE", NOW + 11);
    moved.ipv4 = Some(addr(42));
    let moved = moved.sign(&t.w.relays[0]);
    let e = t.announce(&moved, NOW + 11).await.unwrap_err();
    assert!(
        matches!(
            e,
            DirectoryError::Announce(AnnounceError::TooSoon { retry: 19, .. })
        ),
        "{e}"
    );
    // After the interval it is probed (and, closed, no longer listed).
    let a = t.announce(&moved.sign(&t.w.relays[0]), NOW + 30).await;
    let a = a.unwrap_or_else(|_| panic!("refused after the interval"));
    assert!(!a.listed);
    assert_eq!((a.annotation.probes_ok, a.annotation.probes_total), (1, 2));
    assert_eq!(a.annotation.first_seen, NOW);
    assert!(t.list(all(), NOW + 31).await.is_empty());
}

async fn expired_descriptors_disappear<S: Store>(store: S) {
    let t = setup(store, 2, 0).await;
    t.open(0);
    t.open(1);
    t.announce(&t.descriptor(0, 1_000_000, b"DE", NOW), NOW)
        .await
        .unwrap();
    t.announce(&t.descriptor(1, 1_000_000, b"DE", NOW + 600), NOW + 600)
        .await
        .unwrap();
    assert_eq!(t.list(all(), NOW + 1800).await.len(), 2);
    // Relay 0's descriptor expired at NOW + 1800: not served, then deleted on the next announce.
    assert_eq!(t.list(all(), NOW + 1801).await.len(), 1);
    t.announce(&t.descriptor(1, 1_000_000, b"DE", NOW + 1900), NOW + 1900)
        .await
        .unwrap();
    let store = t.w.ledger.store();
    assert!(
        store
            .directory_entry(t.w.relays[0].public_key())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .directory_entry(t.w.relays[1].public_key())
            .await
            .unwrap()
            .is_some()
    );
}

async fn own_clients_do_not_raise_a_relays_score<S: Store>(store: S) {
    // Relay 0's operator pays relay 0 with its own client keys 0 and 1 (the money comes back
    // to it); client 2 is a stranger that also uses relay 1.
    let t = setup(store, 2, 3).await;
    t.open(0);
    let base = t
        .announce(&t.descriptor(0, 1_000_000, b"DE", NOW), NOW)
        .await
        .unwrap();
    let gib = 1u64 << 30;
    for (c, sid) in [(0, 1), (1, 2)] {
        let r = t.w.receipt(0, c, sid, 1, 50 * gib, 50 * gib);
        t.w.ledger.submit_one(r.encode(), NOW + 60).await.unwrap();
    }
    let selfish = t
        .announce(&t.descriptor(0, 1_000_000, b"DE", NOW + 60), NOW + 60)
        .await
        .unwrap();
    assert_eq!(selfish.annotation.paid_bytes, 0);
    assert_eq!(selfish.annotation.paying_clients, 0);
    assert_eq!(
        selfish.annotation.score, base.annotation.score,
        "200 GiB of self-traffic"
    );
    // The stranger pays relay 0 for 4 GiB and relay 1 for 1 GiB: 1 GiB counts for relay 0.
    let r = t.w.receipt(0, 2, 3, 1, 2 * gib, 2 * gib);
    t.w.ledger.submit_one(r.encode(), NOW + 70).await.unwrap();
    let r = t.w.receipt(1, 2, 4, 1, gib / 2, gib / 2);
    t.w.ledger.submit_one(r.encode(), NOW + 70).await.unwrap();
    let fair = t
        .announce(&t.descriptor(0, 1_000_000, b"DE", NOW + 100), NOW + 100)
        .await
        .unwrap();
    assert_eq!(fair.annotation.paid_bytes, gib);
    assert_eq!(
        (
            fair.annotation.paying_clients,
            fair.annotation.completed_sessions
        ),
        (1, 1)
    );
    assert!(
        fair.annotation.score > base.annotation.score,
        "{}",
        fair.annotation.score
    );
    let _ = PRICE;
}

/// Client `c`'s refusal of relay `r`'s receipt in session `sid` (its own voucher's).
fn refusal<S: Store>(w: &World<S>, r: usize, c: usize, sid: u64) -> ferry_receipts::ReceiptRefusal {
    let claimed = w.receipt(r, c, sid, 2, 1 << 30, 9 << 30).receipt;
    ferry_receipts::ReceiptRefusal {
        receipt: claimed,
        client_observed_up: 1 << 30,
        client_observed_down: 1 << 30,
        reason: 1,
        refused_at: NOW + 200,
        client_signature: ferry_receipts::Signature::ZERO,
    }
    .sign(&w.clients[c])
}

async fn paying_clients_refusals_lower_a_relays_score_and_others_are_refused<S: Store>(store: S) {
    // Relay 0 has two paying clients; then one of them refuses an over-claim of relay 0.
    let t = setup(store, 2, 3).await;
    t.open(0);
    let gib = 1u64 << 30;
    for (c, sid) in [(0, 1), (1, 2)] {
        let r = t.w.receipt(0, c, sid, 1, gib, gib);
        t.w.ledger.submit_one(r.encode(), NOW + 60).await.unwrap();
        // Each client also paid relay 1, so its bytes on relay 0 count.
        let r = t.w.receipt(1, c, 10 + sid, 1, gib, gib);
        t.w.ledger.submit_one(r.encode(), NOW + 60).await.unwrap();
    }
    let before = t
        .announce(&t.descriptor(0, 1_000_000, b"DE", NOW + 100), NOW + 100)
        .await
        .unwrap()
        .annotation;
    assert_eq!((before.paying_clients, before.refusals), (2, 0));
    let rf = refusal(&t.w, 0, 0, 1);
    assert!(t.dir.refuse(&rf.encode(), NOW + 200).await.unwrap());
    // The same report again, from anyone: recorded once.
    assert!(!t.dir.refuse(&rf.encode(), NOW + 201).await.unwrap());
    // The listing shows it at once (re-signed annotation), not at the relay's next announce.
    let listed = t.list(all(), NOW + 202).await;
    let (_, now_listed) = listed
        .iter()
        .find(|(d, _)| d.relay_key == before.relay_key)
        .unwrap();
    assert_eq!(
        (now_listed.refusals, now_listed.annotated_at),
        (1, NOW + 200)
    );
    assert!(now_listed.score < before.score / 2);
    assert_eq!(now_listed.descriptor_id, before.descriptor_id);
    let after = t
        .announce(&t.descriptor(0, 1_000_000, b"DE", NOW + 300), NOW + 300)
        .await
        .unwrap()
        .annotation;
    assert_eq!(after.refusals, 1);
    assert!(
        after.score < before.score / 2,
        "{} -> {}",
        before.score,
        after.score
    );
    // Not counted: a forged client signature, a receipt of a voucher that is not the
    // client's (client 2 naming client 0's voucher), an unregistered client, garbage.
    let mut forged = refusal(&t.w, 0, 1, 2);
    forged.client_observed_down += 1;
    let e = t.dir.refuse(&forged.encode(), NOW + 400).await.unwrap_err();
    assert!(
        matches!(e, DirectoryError::Refusal(RefusalError::Verify(_))),
        "{e}"
    );
    let stolen = {
        let v = &t.w.vouchers[0];
        let claimed = testkit::receipt(
            NETWORK,
            &t.w.relays[0],
            &t.w.clients[2],
            v.id(),
            PRICE,
            testkit::session(9),
            1,
            1,
            1,
        )
        .receipt;
        ferry_receipts::ReceiptRefusal {
            receipt: claimed,
            client_observed_up: 0,
            client_observed_down: 0,
            reason: 1,
            refused_at: NOW + 400,
            client_signature: ferry_receipts::Signature::ZERO,
        }
        .sign(&t.w.clients[2])
    };
    let e = t.dir.refuse(&stolen.encode(), NOW + 400).await.unwrap_err();
    assert!(
        matches!(e, DirectoryError::Refusal(RefusalError::NotPaid)),
        "{e}"
    );
    let stranger = SigningKey::from_seed(&[0x77; 32]);
    let mut unregistered = refusal(&t.w, 0, 1, 2);
    unregistered.receipt = t.w.receipt(0, 1, 2, 3, 1, 1).receipt;
    let unregistered = ferry_receipts::ReceiptRefusal {
        receipt: testkit::receipt(
            NETWORK,
            &t.w.relays[0],
            &stranger,
            t.w.vouchers[1].id(),
            PRICE,
            testkit::session(8),
            1,
            1,
            1,
        )
        .receipt,
        ..unregistered
    }
    .sign(&stranger);
    let e = t
        .dir
        .refuse(&unregistered.encode(), NOW + 400)
        .await
        .unwrap_err();
    assert!(
        matches!(e, DirectoryError::Refusal(RefusalError::UnknownKey)),
        "{e}"
    );
    assert!(t.dir.refuse(b"junk", NOW + 400).await.is_err());
    let last = t
        .announce(&t.descriptor(0, 1_000_000, b"DE", NOW + 500), NOW + 500)
        .await
        .unwrap()
        .annotation;
    assert_eq!(last.refusals, 1, "only the paying client's refusal counts");
}
