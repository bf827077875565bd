//! Collusion to farm rewards (docs/security.md threat 5): one person owns relay keys *and* a
//! client key, buys vouchers with the client (the ledger debits their budget) and makes the
//! relays, each at its own price, submit co-signed receipts they signed for themselves with
//! inflated byte counts: up to and beyond the budget, many sessions on one voucher, several
//! relays at different prices on one voucher, prices above the voucher's max, replays, stale
//! and conflicting seqs, late submissions after the voucher was closed and refunded, and
//! random mixes of all of these.
//!
//! Invariant checked after every submission: what the colluder's relays earned is at most what
//! its client was debited (net of refunds), what its sessions debited never exceeds the
//! budgets, and the credited bytes never exceed what the budgets buy at the cheapest price.
//! So self-dealing never profits: it at best moves the client's own money to the relay.
#![allow(clippy::unwrap_used)]

mod common;

use common::{NOW, PRICE, ledger_key, params};
use ferry_ledger::money::{bytes_within, debit_micros};
use ferry_ledger::testkit::{self, NETWORK, SplitMix};
use ferry_ledger::{Ledger, Role, Store};
use ferry_receipts::{CoSignedReceipt, SigningKey, Voucher};

both_stores!(
    inflated_counters_up_to_and_beyond_the_allowance_earn_at_most_the_debit,
    many_sessions_and_relays_on_one_voucher_earn_at_most_the_debit,
    replays_stale_and_conflicting_seqs_earn_nothing_extra,
    closing_and_refunding_the_voucher_then_submitting_earns_at_most_the_net_debit,
    random_self_dealing_never_profits,
    mixed_prices_buy_more_bytes_at_cheaper_relays_never_more_money,
);

const GIB: u64 = 1 << 30;
const START_BALANCE: u64 = 1 << 40;
/// The vouchers' max price.
const MAX_PRICE: u64 = 2 * PRICE;

/// Relay `i`'s own price: relay 0 sells at the network price, the others cheaper or dearer
/// (odd values, so rounding differs), all within the vouchers' max.
fn relay_price(i: usize) -> u64 {
    [PRICE, PRICE / 2 + 1, MAX_PRICE - 3, PRICE + 7][i % 4]
}

/// The colluder: relays and one client, all its own, and the ledger they cheat.
struct Colluder<S> {
    ledger: Ledger<S>,
    relays: Vec<SigningKey>,
    client: SigningKey,
    vouchers: Vec<Voucher>,
}

impl<S: Store> Colluder<S> {
    /// Vouchers paying for `allowances` bytes at [`PRICE`] each (max price [`MAX_PRICE`]).
    async fn new(store: S, relays: u64, allowances: &[u64]) -> Self {
        let ledger = Ledger::new(store, ledger_key(), params());
        let relays: Vec<_> = (0..relays).map(|i| testkit::key(7, i)).collect();
        for r in &relays {
            ledger
                .register(r.public_key(), Role::Relay, NOW)
                .await
                .unwrap();
        }
        let client = testkit::key(8, 0);
        ledger
            .register(client.public_key(), Role::Client, NOW)
            .await
            .unwrap();
        ledger
            .credit(client.public_key(), START_BALANCE)
            .await
            .unwrap();
        let mut vouchers = Vec::new();
        for (i, a) in allowances.iter().enumerate() {
            let before = ledger.client(client.public_key()).await.unwrap();
            let budget = debit_micros(*a, PRICE);
            let v = ledger
                .issue(
                    client.public_key(),
                    budget,
                    MAX_PRICE,
                    [i as u8 + 1; 16],
                    NOW,
                )
                .await
                .unwrap();
            let after = ledger.client(client.public_key()).await.unwrap();
            // The debit is the budget.
            assert_eq!(v.cost_micros, budget);
            assert_eq!(before.balance_micros - after.balance_micros, v.cost_micros);
            vouchers.push(v.voucher);
        }
        Self {
            ledger,
            relays,
            client,
            vouchers,
        }
    }

    /// A receipt of `relay` at its own price.
    fn receipt(
        &self,
        relay: usize,
        voucher: usize,
        sid: u64,
        seq: u64,
        up: u64,
        down: u64,
    ) -> CoSignedReceipt {
        self.receipt_at(relay_price(relay), relay, voucher, sid, seq, up, down)
    }

    #[allow(clippy::too_many_arguments)]
    fn receipt_at(
        &self,
        price: u64,
        relay: usize,
        voucher: usize,
        sid: u64,
        seq: u64,
        up: u64,
        down: u64,
    ) -> CoSignedReceipt {
        let v = &self.vouchers[voucher];
        testkit::receipt(
            NETWORK,
            &self.relays[relay],
            &self.client,
            v.id(),
            price,
            testkit::session(sid),
            seq,
            up,
            down,
        )
    }

    /// Submits (refusals are fine: the colluder tries everything), then checks the invariant.
    async fn submit(&self, receipts: &[CoSignedReceipt], now: u64) -> (u64, u64) {
        let enc = receipts.iter().map(CoSignedReceipt::encode).collect();
        let _ = self.ledger.submit(enc, now).await.unwrap();
        self.check().await
    }

    /// (earned micros of all relays, net debit of the client); asserts earned ≤ debit,
    /// used ≤ budget, and credited bytes ≤ what the budgets buy at the cheapest price.
    async fn check(&self) -> (u64, u64) {
        let (mut earned, mut bytes) = (0u64, 0u64);
        for r in &self.relays {
            let e = self.ledger.relay(r.public_key()).await.unwrap();
            earned += e.earned_micros;
            bytes += e.credited_bytes;
        }
        let acct = self.ledger.client(self.client.public_key()).await.unwrap();
        let debit = START_BALANCE - acct.balance_micros;
        let cheapest = (0..self.relays.len())
            .map(relay_price)
            .min()
            .unwrap_or(PRICE);
        let most_bytes: u64 = self
            .vouchers
            .iter()
            .map(|v| bytes_within(v.budget_micros, cheapest))
            .sum();
        assert!(
            earned <= debit,
            "collusion profit: relays earned {earned} µ, client paid {debit} µ"
        );
        assert!(
            bytes <= most_bytes,
            "credited {bytes} B > what the budgets buy ({most_bytes} B)"
        );
        assert!(acct.used_micros <= acct.budget_micros, "{acct:?}");
        (earned, debit)
    }
}

/// An allowance that is not a multiple of a GiB (rounding matters).
const ALLOWANCE: u64 = 3 * GIB / 7 + 12_345;

async fn inflated_counters_up_to_and_beyond_the_allowance_earn_at_most_the_debit<S: Store>(
    store: S,
) {
    let c = Colluder::new(store, 1, &[ALLOWANCE]).await;
    let now = NOW + 10;
    // Exactly the allowance, split over up and down.
    let (e, d) = c
        .submit(
            &[c.receipt(0, 0, 1, 1, ALLOWANCE / 3, ALLOWANCE - ALLOWANCE / 3)],
            now,
        )
        .await;
    assert!(e > 0, "a claim within the allowance is credited");
    assert!(
        d - e <= 1,
        "at the allowance the relay earns the debit (± rounding): {e} vs {d}"
    );
    // Beyond: one byte over, 2×, 1000×, near u64::MAX on either counter.
    for (seq, (up, down)) in [
        (ALLOWANCE, 1),
        (ALLOWANCE, ALLOWANCE),
        (1000 * ALLOWANCE, 0),
        (u64::MAX / 2, u64::MAX / 2),
        (0, u64::MAX),
    ]
    .into_iter()
    .enumerate()
    {
        let (e2, d2) = c
            .submit(&[c.receipt(0, 0, 1, 2 + seq as u64, up, down)], now)
            .await;
        assert_eq!(d2, d, "the debit never changes");
        assert!(e2 <= d2);
    }
    // A fresh session claiming far beyond in its first receipt.
    let (e3, d3) = c
        .submit(
            &[c.receipt(0, 0, 2, 1, 50 * ALLOWANCE, 50 * ALLOWANCE)],
            now,
        )
        .await;
    assert!(e3 <= d3);
    let r = c.ledger.relay(c.relays[0].public_key()).await.unwrap();
    assert!(r.credited_bytes <= bytes_within(c.vouchers[0].budget_micros, PRICE));
}

async fn many_sessions_and_relays_on_one_voucher_earn_at_most_the_debit<S: Store>(store: S) {
    let c = Colluder::new(store, 4, &[ALLOWANCE]).await;
    let now = NOW + 10;
    // 4 relays × 8 sessions each claim 60 % of the allowance, in one batch and then one by one.
    let batch: Vec<_> = (0..4)
        .flat_map(|r| (0..8).map(move |s| (r, s)))
        .map(|(r, s)| c.receipt(r, 0, 100 + s, 1, ALLOWANCE * 3 / 5, 0))
        .collect();
    let (e, d) = c.submit(&batch, now).await;
    assert!(e <= d);
    for r in 0..4 {
        for s in 0..8 {
            c.submit(&[c.receipt(r, 0, 200 + s, 1, 0, ALLOWANCE * 3 / 5)], now)
                .await;
        }
    }
    let (e, d) = c.check().await;
    assert!(d - e <= 4, "the allowance is used up, not more: {e} vs {d}");
}

async fn replays_stale_and_conflicting_seqs_earn_nothing_extra<S: Store>(store: S) {
    let c = Colluder::new(store, 1, &[ALLOWANCE]).await;
    let now = NOW + 10;
    let rs: Vec<_> = (1..=10)
        .map(|seq| c.receipt(0, 0, 1, seq, seq * ALLOWANCE / 40, seq * ALLOWANCE / 40))
        .collect();
    let (e, d) = c.submit(&rs, now).await;
    assert_eq!(
        e,
        (u128::from(10 * ALLOWANCE / 40 * 2) * u128::from(PRICE) / u128::from(GIB)) as u64
    );
    // Replays: the whole stream 5 times, reversed, every receipt alone, and from both sides.
    for _ in 0..5 {
        let mut rev = rs.clone();
        rev.reverse();
        assert_eq!(c.submit(&rev, now + 1).await, (e, d));
    }
    for r in &rs {
        assert_eq!(c.submit(&[*r, *r], now + 2).await, (e, d));
    }
    // Same seq, other (bigger) contents; older seq with bigger contents.
    assert_eq!(
        c.submit(&[c.receipt(0, 0, 1, 10, ALLOWANCE, ALLOWANCE)], now)
            .await,
        (e, d)
    );
    assert_eq!(
        c.submit(&[c.receipt(0, 0, 1, 3, ALLOWANCE, 0)], now).await,
        (e, d)
    );
}

async fn closing_and_refunding_the_voucher_then_submitting_earns_at_most_the_net_debit<S: Store>(
    store: S,
) {
    let c = Colluder::new(store, 1, &[ALLOWANCE]).await;
    let v = &c.vouchers[0];
    // Use a quarter, let the voucher expire and close it for a refund of the rest.
    c.submit(&[c.receipt(0, 0, 1, 1, ALLOWANCE / 4, 0)], NOW + 10)
        .await;
    let closed_at = v.expires_at + params().refund_grace_secs + 1;
    let close = c.ledger.close_voucher(v.id(), closed_at).await.unwrap();
    assert!(close.refunded_micros > 0, "{close:?}");
    let (e, d) = c.check().await;
    // Then submit inflated receipts of the old and of new sessions, late.
    for (i, now) in [closed_at, closed_at + 86_400, v.expires_at - 1]
        .into_iter()
        .enumerate()
    {
        let i = i as u64;
        c.submit(&[c.receipt(0, 0, 1, 2 + i, ALLOWANCE, ALLOWANCE)], now)
            .await;
        c.submit(&[c.receipt(0, 0, 10 + i, 1, ALLOWANCE, 0)], now)
            .await;
    }
    let (e2, d2) = c.check().await;
    assert_eq!(d2, d, "the refund is final");
    assert_eq!(
        e2, e,
        "nothing credited after the voucher was closed and refunded"
    );
    // A second close refunds nothing more.
    let again = c.ledger.close_voucher(v.id(), closed_at + 1).await.unwrap();
    assert!(again.already_closed);
    assert_eq!(c.check().await, (e, d));
}

async fn random_self_dealing_never_profits<S: Store>(store: S) {
    let seed = NOW ^ 0x5e1f_dea1;
    let mut rng = SplitMix(seed);
    {
        let allowances: Vec<u64> = (0..1 + rng.below(3))
            .map(|_| 1 + rng.below(4 * GIB))
            .collect();
        let c = Colluder::new(store, 1 + rng.below(3), &allowances).await;
        let mut sent: Vec<CoSignedReceipt> = Vec::new();
        let mut seqs = std::collections::HashMap::<(usize, u64), (u64, u64, u64)>::new();
        for step in 0..400u64 {
            let now = NOW + 1 + step;
            let relay = rng.below(c.relays.len() as u64) as usize;
            let voucher = rng.below(c.vouchers.len() as u64) as usize;
            let allowance = bytes_within(c.vouchers[voucher].budget_micros, PRICE);
            let sid = rng.below(6);
            let mut batch = Vec::new();
            for _ in 0..1 + rng.below(4) {
                match rng.below(4) {
                    // Advance a session by a random (often inflated) step.
                    0 | 1 => {
                        let e = seqs
                            .entry((relay, sid + 10 * voucher as u64))
                            .or_insert((0, 0, 0));
                        e.0 += 1;
                        e.1 = e.1.saturating_add(rng.below(allowance));
                        e.2 = e.2.saturating_add(rng.below(allowance / 2 + 1));
                        batch.push(c.receipt(
                            relay,
                            voucher,
                            sid + 10 * voucher as u64,
                            e.0,
                            e.1,
                            e.2,
                        ));
                    }
                    // Replay something already sent.
                    2 if !sent.is_empty() => {
                        batch.push(sent[rng.below(sent.len() as u64) as usize]);
                    }
                    // A price above the voucher's max (refused whatever it claims).
                    3 if rng.below(4) == 0 => batch.push(c.receipt_at(
                        MAX_PRICE + 1 + rng.below(PRICE),
                        relay,
                        voucher,
                        sid + 10 * voucher as u64,
                        1 + rng.below(50),
                        rng.below(allowance),
                        rng.below(allowance),
                    )),
                    // A wild claim: any seq, huge counters.
                    _ => batch.push(c.receipt(
                        relay,
                        voucher,
                        sid + 10 * voucher as u64,
                        1 + rng.below(50),
                        rng.next() >> rng.below(64),
                        rng.next() >> rng.below(64),
                    )),
                }
            }
            sent.extend(&batch);
            let (e, d) = c.submit(&batch, now).await;
            assert!(e <= d, "seed {seed} step {step}");
        }
        // Close every voucher for its refund at the end; still no profit.
        for v in &c.vouchers {
            c.ledger
                .close_voucher(v.id(), v.expires_at + params().refund_grace_secs + 1)
                .await
                .unwrap();
        }
        let (e, d) = c.check().await;
        let total_allowance: u64 = allowances.iter().sum();
        eprintln!(
            "random collusion seed {seed}: {} vouchers ({total_allowance} B), {} relays, {} receipts submitted; relays earned {e} µ, client paid {d} µ net",
            c.vouchers.len(),
            c.relays.len(),
            sent.len()
        );
    }
}

async fn mixed_prices_buy_more_bytes_at_cheaper_relays_never_more_money<S: Store>(store: S) {
    // One voucher, three of the colluder's relays at their own prices, each claiming the
    // whole budget's worth of bytes at the network price; then one at twice the max price.
    let c = Colluder::new(store, 3, &[ALLOWANCE]).await;
    let budget = c.vouchers[0].budget_micros;
    let cheap = relay_price(1);
    assert!(cheap < PRICE && relay_price(2) > PRICE);
    let over = c
        .receipt_at(MAX_PRICE + 1, 0, 0, 9, 1, ALLOWANCE, 0)
        .encode();
    let res = c.ledger.submit(vec![over], NOW + 1).await.unwrap();
    assert!(res[0].is_err(), "a price above the voucher's max: {res:?}");
    assert_eq!(c.check().await.0, 0);
    // The cheap relay first: it may carry what the whole budget buys at its price.
    let (e1, _) = c
        .submit(&[c.receipt(1, 0, 1, 1, 0, 4 * ALLOWANCE)], NOW + 2)
        .await;
    let r1 = c.ledger.relay(c.relays[1].public_key()).await.unwrap();
    assert_eq!(r1.credited_bytes, bytes_within(budget, cheap));
    assert!(r1.credited_bytes > ALLOWANCE, "cheaper relay, more bytes");
    assert!(budget - e1 <= 1, "earned {e1} of {budget}");
    // The budget is spent: the others (network price, dearer) get nothing more.
    for relay in [0, 2] {
        let (e, d) = c
            .submit(&[c.receipt(relay, 0, 2, 1, ALLOWANCE, 0)], NOW + 3)
            .await;
        assert_eq!((e, d), (e1, budget));
    }
}
