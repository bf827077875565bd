//! Property test of the pure ingestion rules (`domain::apply_batch`): one million random
//! submission orders — duplicates, reorders, relay and client both submitting, random
//! batch boundaries, several sessions at *different prices* sharing one voucher, budgets that
//! run out — and in every one each session is credited `floor(bytes × its price / 2^30)`
//! micros for its credited bytes, the voucher is debited `Σ ceil(bytes × price / 2^30)`
//! (never above its budget, never below what was credited), every session is credited in
//! full when the budget suffices, and a clamped session could not carry one more byte.
//!
//! `FERRY_LEDGER_PROP_CASES` overrides the number of cases (default 1 000 000; a failing
//! case prints its seed, rerun it with `FERRY_LEDGER_PROP_SEED`).
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};

use ferry_ledger::domain::{BatchState, Outcome, Role, VerifiedReceipt, VoucherRow, apply_batch};
use ferry_ledger::money::{bytes_within, debit_micros, earned_micros};
use ferry_ledger::testkit::SplitMix;
use ferry_receipts::{
    CoSignedReceipt, NetworkId, PublicKey, ReceiptBody, SessionId, Signature, SignedReceipt,
    VoucherId,
};
use proptest::prelude::*;

const CLIENT: PublicKey = PublicKey([0xc1; 32]);
const VOUCHER: VoucherId = VoucherId([0xf0; 32]);

fn relay(i: u64) -> PublicKey {
    PublicKey([0x10 + i as u8; 32])
}

fn unsigned(
    relay_key: PublicKey,
    sid: u8,
    seq: u64,
    up: u64,
    down: u64,
    price: u64,
) -> CoSignedReceipt {
    let body = ReceiptBody {
        network_id: NetworkId([1; 16]),
        relay_key,
        client_key: CLIENT,
        session_id: SessionId([sid; 16]),
        voucher_id: VOUCHER,
        seq,
        bytes_up: up,
        bytes_down: down,
        session_started_at: 10,
        issued_at: 10 + seq,
        price_micros_per_gib: price,
    };
    CoSignedReceipt {
        receipt: SignedReceipt {
            body,
            relay_signature: Signature::ZERO,
        },
        client_observed_up: up,
        client_observed_down: down,
        cosigned_at: 10 + seq,
        client_signature: Signature::ZERO,
    }
}

fn state(budget: u64, max_price: u64, relays: u64) -> BatchState {
    let mut s = BatchState::default();
    for r in 0..relays {
        s.keys.insert((relay(r), Role::Relay));
    }
    s.keys.insert((CLIENT, Role::Client));
    s.vouchers.insert(
        VOUCHER,
        VoucherRow {
            id: VOUCHER,
            client_key: CLIENT,
            budget_micros: budget,
            max_price_micros_per_gib: max_price,
            issued_at: 0,
            expires_at: 1000,
            used_micros: 0,
            cost_micros: budget,
            encoded: Vec::new(),
        },
    );
    s
}

/// Runs one random case; panics with the seed on any violated property.
fn run_case(seed: u64) {
    let mut rng = SplitMix(seed);
    let sessions = 1 + rng.below(3);
    // Each session (relay) at its own price; now and then a free one.
    let prices: Vec<u64> = (0..sessions)
        .map(|_| rng.below(10_000_000) + u64::from(rng.below(8) != 0))
        .collect();
    let mut subs: Vec<VerifiedReceipt> = Vec::new();
    let mut finals = Vec::new();
    for s in 0..sessions {
        let price = prices[s as usize];
        let n = 1 + rng.below(6);
        let (mut up, mut down) = (0u64, 0u64);
        for seq in 1..=n {
            // Zero steps happen (idle intervals); big steps cross GiB boundaries.
            up += rng.below(4) * rng.below(1 << 31);
            down += rng.below(1 << 33);
            let r = unsigned(relay(s), s as u8, seq, up, down, price);
            let v = VerifiedReceipt {
                receipt: r,
                encoded: Vec::new(),
            };
            // Relay and/or client submit, sometimes repeatedly.
            for _ in 0..1 + rng.below(3) {
                subs.push(v.clone());
            }
        }
        finals.push(up + down);
    }
    let cost: u64 = finals
        .iter()
        .zip(&prices)
        .map(|(b, p)| debit_micros(*b, *p))
        .sum();
    let budget = match rng.below(3) {
        0 => u64::MAX / 4,
        _ => rng.below(cost + cost / 5 + 2),
    };
    let max_price = prices.iter().copied().max().unwrap_or(0) + rng.below(3);
    rng.shuffle(&mut subs);

    let mut st = state(budget, max_price, sessions);
    let mut accepted = Vec::new();
    let mut seen = HashSet::new();
    let mut credited_by_outcomes = 0u64;
    while !subs.is_empty() {
        let k = 1 + rng.below(subs.len() as u64) as usize;
        let batch: Vec<_> = subs.drain(..k).collect();
        let now = 1000 + rng.below(7200);
        let (results, writes) = apply_batch(&mut st, &batch, now, 3600);
        for r in &results {
            match r {
                Ok(Outcome::Advanced { credited_bytes, .. }) => {
                    credited_by_outcomes += credited_bytes
                }
                Ok(_) => {}
                Err(e) => panic!("seed {seed}: valid receipt refused: {e}"),
            }
        }
        for a in writes.accepted {
            assert!(
                seen.insert((a.relay_key, a.session_id, a.seq)),
                "seed {seed}: receipt accepted twice"
            );
            accepted.push(a);
        }
    }

    let credited: u64 = st.sessions.values().map(|s| s.credited_bytes).sum();
    assert_eq!(credited_by_outcomes, credited, "seed {seed}: outcomes");
    let used = st.vouchers[&VOUCHER].used_micros;
    assert!(
        used <= budget,
        "seed {seed}: debited {used} > budget {budget}"
    );
    let left = budget - used;
    let mut micros_by_session: HashMap<_, u64> = HashMap::new();
    for a in &accepted {
        *micros_by_session
            .entry((a.relay_key, a.session_id))
            .or_default() += a.credited_micros;
    }
    let (mut paid, mut debited) = (0u64, 0u64);
    for (s, final_bytes) in finals.iter().enumerate() {
        let price = prices[s];
        let key = (relay(s as u64), SessionId([s as u8; 16]));
        let row = &st.sessions[&key];
        assert_eq!(
            row.latest.body().total_bytes(),
            *final_bytes,
            "seed {seed}: latest"
        );
        assert!(
            row.credited_bytes <= *final_bytes,
            "seed {seed}: over-credit"
        );
        assert_eq!(
            row.credited_micros,
            earned_micros(row.credited_bytes, price),
            "seed {seed}"
        );
        assert_eq!(
            micros_by_session[&key], row.credited_micros,
            "seed {seed}: epoch sums"
        );
        if budget >= cost {
            assert_eq!(row.credited_bytes, *final_bytes, "seed {seed}");
            assert!(!row.clamped, "seed {seed}");
        }
        if row.clamped {
            // Nothing left for even one more byte of this session.
            let d = debit_micros(row.credited_bytes, price);
            assert_eq!(
                bytes_within(d.saturating_add(left), price),
                row.credited_bytes,
                "seed {seed}: clamped with budget left"
            );
        }
        paid += row.credited_micros;
        debited += debit_micros(row.credited_bytes, price);
    }
    assert_eq!(used, debited, "seed {seed}: voucher use = Σ session debits");
    assert!(paid <= used, "seed {seed}: credited more than debited");
    if budget < cost {
        assert!(
            st.sessions.values().any(|s| s.clamped),
            "seed {seed}: clamp not flagged"
        );
    }
}

#[test]
fn a_million_random_submission_orders_never_over_credit() {
    if let Some(seed) = std::env::var("FERRY_LEDGER_PROP_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        run_case(seed);
        return;
    }
    let cases: u64 = std::env::var("FERRY_LEDGER_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut i = t;
                while i < cases {
                    run_case(i.wrapping_mul(0x9e37_79b9) ^ 0xfe44);
                    i += threads;
                }
            });
        }
    });
}

proptest! {
    // The same property with shrinking, over proptest's own seeds.
    #[test]
    fn random_orders_shrinkable(seed: u64) {
        run_case(seed);
    }
}
