//! The ledger's behaviour over a real store. Every test runs on SQLite and, when
//! `FERRY_TEST_POSTGRES_URL` is set, on PostgreSQL (`both_stores!`).
#![allow(clippy::unwrap_used)]

mod common;

use common::{NOW, PRICE, World};
use ferry_ledger::money::{debit_micros, earned_micros};
use ferry_ledger::service::LedgerError;
use ferry_ledger::testkit::{self, NETWORK, SplitMix};
use ferry_ledger::{ItemError, Outcome, Reject, Role, Store};
use ferry_receipts::{CoSignedReceipt, Rejected, VoucherId};

both_stores!(
    client_balance_pays_for_vouchers,
    vouchers_are_idempotent_and_need_funds,
    cumulative_receipts_credit_only_deltas,
    both_submitters_credit_once,
    budget_clamps_and_flags,
    unknown_keys_and_vouchers_are_refused,
    voucher_mismatch_and_conflicts_are_refused,
    epoch_report_and_proofs,
    random_orders_match_final_counters,
    parallel_submitters_never_double_credit,
    closing_a_voucher_refunds_the_unused_part,
);

fn enc(r: &CoSignedReceipt) -> Vec<u8> {
    r.encode()
}

async fn client_balance_pays_for_vouchers<S: Store>(store: S) {
    let w = World::new(store, 1, 1, 3 << 30).await;
    let c = w.clients[0].public_key();
    let acct = w.ledger.client(c).await.unwrap();
    let cost = debit_micros(3 << 30, PRICE);
    assert_eq!(acct.balance_micros, (1 << 40) - cost);
    assert_eq!(acct.spent_micros, cost);
    assert_eq!(acct.deposited_micros, 1 << 40);
    assert_eq!(acct.vouchers, 1);
    assert_eq!(acct.budget_micros, cost);
    let bal = w.ledger.credit(c, 5).await.unwrap();
    assert_eq!(bal, (1 << 40) - cost + 5);
    // Credit to an unregistered client fails and stores nothing.
    let before = w.ledger.store().snapshot().await.unwrap();
    let err = w.ledger.credit(testkit::key(9, 9).public_key(), 5).await;
    assert!(matches!(err, Err(LedgerError::NotFound("client"))));
    assert_eq!(w.ledger.store().snapshot().await.unwrap(), before);
    // Vouchers verify under the ledger key.
    w.vouchers[0]
        .verify(&NETWORK, &w.ledger.public_key(), NOW + 10)
        .unwrap();
}

async fn vouchers_are_idempotent_and_need_funds<S: Store>(store: S) {
    let w = World::new(store, 1, 1, 1 << 30).await;
    let c = w.clients[0].public_key();
    let bal = w.ledger.client(c).await.unwrap().balance_micros;
    // Same nonce and time: the same voucher, not charged twice.
    let budget = debit_micros(1 << 30, PRICE);
    let again = w
        .ledger
        .issue(c, budget, PRICE, [0; 16], NOW)
        .await
        .unwrap();
    assert_eq!(again.voucher, w.vouchers[0]);
    assert_eq!(again.balance_micros, None);
    assert_eq!(w.ledger.client(c).await.unwrap().balance_micros, bal);
    // More than the balance: 402-style error, nothing stored.
    let before = w.ledger.store().snapshot().await.unwrap();
    let huge = w
        .ledger
        .issue(c, i64::MAX as u64, PRICE, [1; 16], NOW)
        .await;
    assert!(
        matches!(huge, Err(LedgerError::InsufficientFunds { .. })),
        "{huge:?}"
    );
    assert_eq!(w.ledger.store().snapshot().await.unwrap(), before);
    // Unregistered client.
    let r = w
        .ledger
        .issue(testkit::key(9, 1).public_key(), 10, PRICE, [2; 16], NOW)
        .await;
    assert!(matches!(r, Err(LedgerError::NotFound("client"))), "{r:?}");
}

async fn cumulative_receipts_credit_only_deltas<S: Store>(store: S) {
    let w = World::new(store, 1, 1, 100 << 30).await;
    let r1 = w.receipt(0, 0, 1, 1, 100, 1000);
    let r2 = w.receipt(0, 0, 1, 2, 300, 5000);
    let o1 = w.ledger.submit_one(enc(&r1), NOW).await.unwrap();
    assert_eq!(
        o1,
        Outcome::Advanced {
            epoch: NOW / common::EPOCH,
            credited_bytes: 1100,
            clamped: false
        }
    );
    let o2 = w.ledger.submit_one(enc(&r2), NOW).await.unwrap();
    assert_eq!(
        o2,
        Outcome::Advanced {
            epoch: NOW / common::EPOCH,
            credited_bytes: 4200,
            clamped: false
        }
    );
    assert_eq!(
        w.ledger.submit_one(enc(&r2), NOW).await.unwrap(),
        Outcome::Duplicate
    );
    assert_eq!(
        w.ledger.submit_one(enc(&r1), NOW).await.unwrap(),
        Outcome::Stale
    );
    let e = w.ledger.relay(w.relays[0].public_key()).await.unwrap();
    assert_eq!(e.credited_bytes, 5300);
    assert_eq!(e.receipts, 2);
    assert_eq!(e.sessions, 1);
    assert_eq!(e.earned_micros, earned_micros(5300, PRICE));
    let v = w.ledger.voucher(w.vouchers[0].id()).await.unwrap();
    assert_eq!(v.used_micros, debit_micros(5300, PRICE));
}

async fn both_submitters_credit_once<S: Store>(store: S) {
    let w = World::new(store, 1, 1, 100 << 30).await;
    let r = w.receipt(0, 0, 7, 1, 1 << 30, 1 << 30);
    // The client re-co-signs the same relay receipt at another time: a different
    // encoding of the same body is still a duplicate.
    let client_copy = r.receipt.cosign(&w.clients[0], 1, 2, 99);
    let res = w
        .ledger
        .submit(vec![enc(&r), enc(&client_copy), enc(&r)], NOW)
        .await
        .unwrap();
    assert!(
        matches!(res[0], Ok(Outcome::Advanced { credited_bytes, .. }) if credited_bytes == 2 << 30)
    );
    assert_eq!(res[1], Ok(Outcome::Duplicate));
    assert_eq!(res[2], Ok(Outcome::Duplicate));
    let e = w.ledger.relay(w.relays[0].public_key()).await.unwrap();
    assert_eq!(e.credited_bytes, 2 << 30);
    assert_eq!(e.earned_micros, 2 * PRICE);
}

async fn budget_clamps_and_flags<S: Store>(store: S) {
    // Two sessions (two relays) share one voucher: 10 000 bytes at PRICE cost 5 micros.
    let w = World::new(store, 2, 1, 10_000).await;
    let a1 = w.receipt(0, 0, 1, 1, 0, 6000);
    let b1 = w.receipt(1, 0, 2, 1, 0, 3000);
    let a2 = w.receipt(0, 0, 1, 2, 0, 9000);
    let res = w
        .ledger
        .submit(vec![enc(&a1), enc(&b1), enc(&a2)], NOW)
        .await
        .unwrap();
    let advanced = |credited_bytes, clamped| {
        Ok(Outcome::Advanced {
            epoch: NOW / 3600,
            credited_bytes,
            clamped,
        })
    };
    // a1 debits ceil(2.79) = 3 micros, b1 ceil(1.40) = 2: the budget is spent. a2 may still
    // use what session a's 3 micros pay for: 6442 bytes in all, 442 more.
    assert_eq!(res[0], advanced(6000, false));
    assert_eq!(res[1], advanced(3000, false));
    assert_eq!(res[2], advanced(442, true));
    let ea = w.ledger.relay(w.relays[0].public_key()).await.unwrap();
    let eb = w.ledger.relay(w.relays[1].public_key()).await.unwrap();
    assert_eq!((ea.credited_bytes, ea.clamped_sessions), (6442, 1));
    assert_eq!((eb.credited_bytes, eb.clamped_sessions), (3000, 0));
    let used = |w: &World<S>| {
        let ledger = w.ledger.clone();
        let id = w.vouchers[0].id();
        async move { ledger.voucher(id).await.unwrap().used_micros }
    };
    assert_eq!(used(&w).await, 5);
    // b2 likewise gets up to what b's 2 micros pay for (4294 bytes), no more.
    let b2 = w.receipt(1, 0, 2, 2, 0, 5000);
    let o = w.ledger.submit_one(enc(&b2), NOW).await.unwrap();
    assert_eq!(Ok(o), advanced(1294, true));
    let b3 = w.receipt(1, 0, 2, 3, 0, 6000);
    let o = w.ledger.submit_one(enc(&b3), NOW).await.unwrap();
    assert_eq!(Ok(o), advanced(0, true));
    assert_eq!(used(&w).await, 5);
    let total = ea.earned_micros
        + w.ledger
            .relay(w.relays[1].public_key())
            .await
            .unwrap()
            .earned_micros;
    assert!(total <= 5, "{total}");
}

async fn unknown_keys_and_vouchers_are_refused<S: Store>(store: S) {
    let w = World::new(store, 1, 1, 1 << 30).await;
    let stranger = testkit::key(8, 1);
    let v = &w.vouchers[0];
    let before = w.ledger.store().snapshot().await.unwrap();
    let unknown_relay = testkit::receipt(
        NETWORK,
        &stranger,
        &w.clients[0],
        v.id(),
        PRICE,
        testkit::session(1),
        1,
        1,
        1,
    );
    let unknown_client = testkit::receipt(
        NETWORK,
        &w.relays[0],
        &stranger,
        v.id(),
        PRICE,
        testkit::session(1),
        1,
        1,
        1,
    );
    let unknown_voucher = testkit::receipt(
        NETWORK,
        &w.relays[0],
        &w.clients[0],
        VoucherId([3; 32]),
        PRICE,
        testkit::session(1),
        1,
        1,
        1,
    );
    let res = w
        .ledger
        .submit(
            vec![
                enc(&unknown_relay),
                enc(&unknown_client),
                enc(&unknown_voucher),
            ],
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(res[0], Err(ItemError::Rejected(Reject::UnknownRelay)));
    assert_eq!(res[1], Err(ItemError::Rejected(Reject::UnknownClient)));
    assert_eq!(res[2], Err(ItemError::Rejected(Reject::UnknownVoucher)));
    assert_eq!(w.ledger.store().snapshot().await.unwrap(), before);
    // A relay key registered only as a client is not a relay.
    w.ledger
        .register(stranger.public_key(), Role::Client, NOW)
        .await
        .unwrap();
    let res = w
        .ledger
        .submit(vec![enc(&unknown_relay)], NOW)
        .await
        .unwrap();
    assert_eq!(res[0], Err(ItemError::Rejected(Reject::UnknownRelay)));
}

async fn voucher_mismatch_and_conflicts_are_refused<S: Store>(store: S) {
    let w = World::new(store, 1, 2, 1 << 30).await;
    // Client 1 spends client 0's voucher.
    let v0 = &w.vouchers[0];
    let theft = testkit::receipt(
        NETWORK,
        &w.relays[0],
        &w.clients[1],
        v0.id(),
        PRICE,
        testkit::session(5),
        1,
        1,
        1,
    );
    let wrong_price = testkit::receipt(
        NETWORK,
        &w.relays[0],
        &w.clients[0],
        v0.id(),
        PRICE + 1,
        testkit::session(6),
        1,
        1,
        1,
    );
    let res = w
        .ledger
        .submit(vec![enc(&theft), enc(&wrong_price)], NOW)
        .await
        .unwrap();
    assert!(
        matches!(res[0], Err(ItemError::Rejected(Reject::VoucherMismatch(_)))),
        "{res:?}"
    );
    assert!(
        matches!(res[1], Err(ItemError::Rejected(Reject::VoucherMismatch(_)))),
        "{res:?}"
    );
    // Same seq, different counts; and decreasing counters.
    let a = w.receipt(0, 0, 9, 2, 100, 100);
    w.ledger.submit_one(enc(&a), NOW).await.unwrap();
    let before = w.ledger.store().snapshot().await.unwrap();
    let conflict = w.receipt(0, 0, 9, 2, 100, 101);
    let shrink = w.receipt(0, 0, 9, 3, 50, 100);
    let res = w
        .ledger
        .submit(vec![enc(&conflict), enc(&shrink)], NOW)
        .await
        .unwrap();
    assert_eq!(
        res[0],
        Err(ItemError::Rejected(Reject::Session(Rejected::Conflict(2))))
    );
    assert!(matches!(
        res[1],
        Err(ItemError::Rejected(Reject::Session(
            Rejected::NonMonotonic { .. }
        )))
    ));
    // Same session id from the same relay but another voucher: a different session.
    let other = w.receipt(0, 1, 9, 3, 500, 500);
    let res = w.ledger.submit(vec![enc(&other)], NOW).await.unwrap();
    assert_eq!(
        res[0],
        Err(ItemError::Rejected(Reject::Session(Rejected::WrongSession)))
    );
    assert_eq!(w.ledger.store().snapshot().await.unwrap(), before);
}

async fn epoch_report_and_proofs<S: Store>(store: S) {
    let w = World::new(store, 3, 2, 100 << 30).await;
    let mut submitted = Vec::new();
    for (i, t) in [NOW, NOW + 1, NOW + 3600, NOW + 3601]
        .into_iter()
        .enumerate()
    {
        let mut batch = Vec::new();
        for r in 0..3 {
            let rc = w.receipt(
                r,
                r % 2,
                r as u64,
                i as u64 + 1,
                (i as u64 + 1) * 1000,
                (i as u64 + 1) * 7000,
            );
            submitted.push((rc, t));
            batch.push(enc(&rc));
        }
        w.ledger.submit(batch, t).await.unwrap();
    }
    let epochs = w.ledger.epochs().await.unwrap();
    assert_eq!(epochs, vec![(NOW / 3600, 6), (NOW / 3600 + 1, 6)]);
    let rep = w
        .ledger
        .epoch_report(NOW / 3600, NOW + 3600 * 2)
        .await
        .unwrap();
    assert!(rep.closed);
    assert_eq!(rep.receipts, 6);
    assert_eq!(rep.relays.len(), 3);
    // Epoch sums per relay add up to the relay totals.
    let rep2 = w.ledger.epoch_report(NOW / 3600 + 1, NOW).await.unwrap();
    assert!(!rep2.closed);
    for (i, r) in w.relays.iter().enumerate() {
        let total = w.ledger.relay(r.public_key()).await.unwrap();
        let (a, b) = (&rep.relays, &rep2.relays);
        let pick = |v: &Vec<ferry_ledger::service::RelayEpoch>| {
            v.iter()
                .find(|x| x.relay_key == r.public_key())
                .cloned()
                .unwrap()
        };
        assert_eq!(
            pick(a).credited_bytes + pick(b).credited_bytes,
            total.credited_bytes,
            "relay {i}"
        );
        assert_eq!(
            pick(a).earned_micros + pick(b).earned_micros,
            total.earned_micros,
            "relay {i}"
        );
    }
    // Every accepted receipt has a proof that verifies against its epoch's root.
    for (rc, t) in &submitted {
        let b = rc.body();
        let p = w
            .ledger
            .proof(b.relay_key, b.session_id, b.seq)
            .await
            .unwrap();
        assert_eq!(p.epoch, t / 3600);
        assert_eq!(p.receipt, rc.encode());
        let root = if p.epoch == rep.epoch {
            rep.root
        } else {
            rep2.root
        };
        assert_eq!(p.root, root);
        assert!(p.verify());
        let mut bad = p.clone();
        bad.receipt[200] ^= 1;
        assert!(!bad.verify());
    }
    let missing = w
        .ledger
        .proof(w.relays[0].public_key(), testkit::session(0), 99)
        .await;
    assert!(matches!(missing, Err(LedgerError::NotFound(_))));
}

/// A smaller version of the pure-logic property test (tests/domain_prop.rs), through the
/// real store, with signatures.
async fn random_orders_match_final_counters<S: Store>(store: S) {
    let cases: u64 = std::env::var("FERRY_LEDGER_STORE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let w = World::new(store, 2, 3, 1 << 50).await;
    let mut rng = SplitMix(0x5eed);
    for case in 0..cases {
        // Fresh sessions per case: session ids are unique per case.
        let mut all = Vec::new();
        let mut finals = Vec::new();
        for s in 0..3u64 {
            let sid = case * 10 + s;
            let (r, c) = ((s % 2) as usize, s as usize);
            let n = 1 + rng.below(6);
            let (mut up, mut down) = (0, 0);
            for seq in 1..=n {
                up += rng.below(1 << 20);
                down += rng.below(1 << 28);
                let rc = w.receipt(r, c, sid, seq, up, down);
                for _ in 0..1 + rng.below(3) {
                    all.push(enc(&rc));
                }
            }
            finals.push((r, up + down));
        }
        rng.shuffle(&mut all);
        let before: Vec<_> = futures_relays(&w).await;
        while !all.is_empty() {
            let k = 1 + rng.below(all.len() as u64) as usize;
            let batch: Vec<_> = all.drain(..k).collect();
            let res = w.ledger.submit(batch, NOW).await.unwrap();
            assert!(res.iter().all(Result::is_ok), "{res:?}");
        }
        let after = futures_relays(&w).await;
        for r in 0..2 {
            let want: u64 = finals.iter().filter(|f| f.0 == r).map(|f| f.1).sum();
            let want_micros: u64 = finals
                .iter()
                .filter(|f| f.0 == r)
                .map(|f| earned_micros(f.1, PRICE))
                .sum();
            assert_eq!(after[r].0 - before[r].0, want, "case {case} relay {r}");
            assert_eq!(
                after[r].1 - before[r].1,
                want_micros,
                "case {case} relay {r}"
            );
        }
    }
}

async fn futures_relays<S: Store>(w: &World<S>) -> Vec<(u64, u64)> {
    let mut v = Vec::new();
    for r in &w.relays {
        let e = w.ledger.relay(r.public_key()).await.unwrap();
        v.push((e.credited_bytes, e.earned_micros));
    }
    v
}

/// Many tasks submit overlapping, shuffled copies of the same sessions at once.
async fn parallel_submitters_never_double_credit<S: Store>(store: S) {
    let w = std::sync::Arc::new(World::new(store, 2, 2, 1 << 50).await);
    let mut receipts = Vec::new();
    let mut expected = [0u64; 2];
    for s in 0..4u64 {
        let (r, c) = ((s % 2) as usize, (s / 2) as usize);
        let mut total = 0;
        for seq in 1..=10 {
            total = seq * 1_000_000;
            receipts.push(enc(&w.receipt(r, c, 100 + s, seq, 0, total)));
        }
        expected[r] += total;
    }
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let w = w.clone();
        let mut mine = receipts.clone();
        SplitMix(t).shuffle(&mut mine);
        tasks.push(tokio::spawn(async move {
            for chunk in mine.chunks(1 + t as usize) {
                let res = w.ledger.submit(chunk.to_vec(), NOW).await.unwrap();
                assert!(res.iter().all(Result::is_ok), "{res:?}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut accepted = 0;
    for (r, want) in expected.iter().enumerate() {
        let e = w.ledger.relay(w.relays[r].public_key()).await.unwrap();
        assert_eq!(e.credited_bytes, *want);
        assert!((2..=20).contains(&e.receipts), "{}", e.receipts);
        accepted += e.receipts;
    }
    // Each accepted receipt is stored once (stale ones are not stored at all).
    assert_eq!(
        w.ledger.store().snapshot().await.unwrap().receipts,
        accepted
    );
}

/// Several ledger instances (separate pools / connections) on one database.
async fn instances_race<S: Store>(stores: Vec<S>) {
    let mut worlds: Vec<std::sync::Arc<World<S>>> = Vec::new();
    for (i, s) in stores.into_iter().enumerate() {
        // Only the first instance creates keys and vouchers; the others see them.
        let w = if i == 0 {
            World::new(s, 2, 2, 1 << 50).await
        } else {
            let first: &World<S> = &worlds[0];
            World {
                ledger: std::sync::Arc::new(ferry_ledger::Ledger::new(
                    s,
                    common::ledger_key(),
                    common::params(),
                )),
                relays: first
                    .relays
                    .iter()
                    .map(|k| testkit::key(2, relay_index(first, k)))
                    .collect(),
                clients: (0..2).map(|c| testkit::key(3, c)).collect(),
                vouchers: first.vouchers.clone(),
            }
        };
        worlds.push(std::sync::Arc::new(w));
    }
    let w0 = worlds[0].clone();
    let mut receipts = Vec::new();
    let mut expected = [0u64; 2];
    for s in 0..6u64 {
        let (r, c) = ((s % 2) as usize, (s % 2) as usize);
        for seq in 1..=12 {
            receipts.push(enc(&w0.receipt(r, c, 500 + s, seq, seq, seq * 333_333)));
        }
        expected[r] += 12 + 12 * 333_333;
    }
    let mut tasks = Vec::new();
    for (i, w) in worlds.iter().enumerate() {
        for t in 0..3u64 {
            let w = w.clone();
            let mut mine = receipts.clone();
            SplitMix(i as u64 * 10 + t).shuffle(&mut mine);
            tasks.push(tokio::spawn(async move {
                for chunk in mine.chunks(1 + (t as usize * 5)) {
                    let res = w.ledger.submit(chunk.to_vec(), NOW).await.unwrap();
                    assert!(res.iter().all(Result::is_ok), "{res:?}");
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for (r, want) in expected.iter().enumerate() {
        let e = w0.ledger.relay(w0.relays[r].public_key()).await.unwrap();
        assert_eq!(e.credited_bytes, *want, "relay {r}");
    }
}

fn relay_index<S>(w: &World<S>, k: &ferry_receipts::SigningKey) -> u64 {
    w.relays
        .iter()
        .position(|x| x.public_key() == k.public_key())
        .unwrap_or(0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_instances_sharing_a_file_never_double_credit() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.db");
    let stores = (0..3)
        .map(|_| ferry_ledger::SqliteStore::open(&p).unwrap())
        .collect();
    instances_race(stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_sharing_a_database_never_double_credit() {
    let Some((first, guard)) = common::postgres(4).await else {
        eprintln!("FERRY_TEST_POSTGRES_URL not set: skipped");
        return;
    };
    let mut stores = vec![first];
    for _ in 0..2 {
        stores.push(common::postgres_again(&guard, 4).await);
    }
    instances_race(stores).await;
    guard.cleanup().await;
}

async fn closing_a_voucher_refunds_the_unused_part<S: Store>(store: S) {
    let w = World::new(store, 1, 1, 10 << 30).await;
    let c = w.clients[0].public_key();
    let v = &w.vouchers[0];
    let r1 = w.receipt(0, 0, 1, 1, 1 << 30, (2 << 30) + 12345);
    w.ledger.submit_one(enc(&r1), NOW).await.unwrap();
    let before = w.ledger.client(c).await.unwrap();
    let early = w.ledger.close_voucher(v.id(), v.expires_at).await;
    assert!(
        matches!(early, Err(LedgerError::BadRequest(_))),
        "{early:?}"
    );
    let closed = w
        .ledger
        .close_voucher(v.id(), v.expires_at + 3600)
        .await
        .unwrap();
    let used = (3 << 30) + 12345;
    let cost = debit_micros(10 << 30, PRICE);
    let want = cost - debit_micros(used, PRICE);
    assert_eq!(
        (
            closed.used_micros,
            closed.refunded_micros,
            closed.already_closed
        ),
        (debit_micros(used, PRICE), want, false)
    );
    let after = w.ledger.client(c).await.unwrap();
    assert_eq!(after.balance_micros, before.balance_micros + want);
    assert_eq!(after.spent_micros, before.spent_micros - want);
    // Idempotent.
    let again = w
        .ledger
        .close_voucher(v.id(), v.expires_at + 9999)
        .await
        .unwrap();
    assert_eq!((again.refunded_micros, again.already_closed), (want, true));
    assert_eq!(w.ledger.client(c).await.unwrap(), after);
    // Late receipts advance the session but credit at most the few bytes its last
    // rounded-up micro already paid for (539 here); nothing more is debited or refunded.
    let r2 = w.receipt(0, 0, 1, 2, 2 << 30, 3 << 30);
    let o = w.ledger.submit_one(enc(&r2), NOW).await.unwrap();
    let paid_for = ferry_ledger::money::bytes_within(debit_micros(used, PRICE), PRICE) - used;
    assert_eq!(paid_for, 539);
    assert_eq!(
        o,
        Outcome::Advanced {
            epoch: NOW / 3600,
            credited_bytes: paid_for,
            clamped: true
        }
    );
    assert_eq!(
        w.ledger.voucher(v.id()).await.unwrap().used_micros,
        debit_micros(used, PRICE)
    );
    assert_eq!(w.ledger.client(c).await.unwrap(), after);
    let earned = w
        .ledger
        .relay(w.relays[0].public_key())
        .await
        .unwrap()
        .earned_micros;
    assert!(
        earned <= after.spent_micros,
        "relay paid {earned} > client charged {}",
        after.spent_micros
    );
    let missing = w.ledger.close_voucher(VoucherId([7; 32]), NOW).await;
    assert!(matches!(missing, Err(LedgerError::NotFound("voucher"))));
}
