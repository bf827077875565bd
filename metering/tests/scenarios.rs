//! Sans-IO scenario tests: a relay and a client exchange receipts over a virtual clock.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{MIB, NET, World};
use ferry_metering::{
    CreditMode, CutOffReason, DropReason, Message, ReceiptRejectReason, RelayConfig, RelayEvent,
    RelaySession, SessionState, Tolerance, Verdict,
};
use ferry_receipts::ReceiptBody;

const MS: Duration = Duration::from_millis(1);

fn cfg() -> RelayConfig {
    RelayConfig {
        receipt_every_bytes: MIB,
        credit_window_bytes: 4 * MIB,
        ..RelayConfig::default()
    }
}

fn events(w: &mut World) -> Vec<RelayEvent> {
    std::iter::from_fn(|| w.relay.poll_event()).collect()
}

/// Deterministic mixed packet sizes (40..=1420).
fn pkt(i: u64) -> u64 {
    40 + (i.wrapping_mul(2_654_435_761) % 1381)
}

#[test]
fn honest_flow_counts_exactly_and_every_byte_ends_up_co_signed() {
    let mut w = World::new(cfg());
    let (mut sent_up, mut sent_down) = (0u64, 0u64);
    for i in 0..40_000u64 {
        let len = pkt(i);
        if i % 3 == 0 {
            assert_eq!(w.up(len), Verdict::Forward);
            sent_up += len;
        } else {
            assert_eq!(w.down(len), Verdict::Forward);
            sent_down += len;
        }
        w.advance(MS / 4);
        w.pump();
    }
    assert_eq!(
        (w.relay.meter().up(), w.relay.meter().down()),
        (sent_up, sent_down)
    );
    assert_eq!(
        (w.client.meter().up(), w.client.meter().down()),
        (sent_up, sent_down)
    );
    let expected = (sent_up + sent_down) / MIB;
    assert!(
        w.store.len() as u64 >= expected,
        "receipts every MiB: {}",
        w.store.len()
    );
    // Stored receipts are strictly increasing and each never claims more than was sent.
    for pair in w.store.windows(2) {
        assert!(pair[1].body().seq > pair[0].body().seq);
        assert!(pair[1].body().bytes_up >= pair[0].body().bytes_up);
    }
    w.relay.close(w.now);
    w.pump();
    let last = *w.store.last().unwrap().body();
    assert_eq!((last.bytes_up, last.bytes_down), (sent_up, sent_down));
    assert_eq!(w.relay.state(), SessionState::Closed);
    assert_eq!(
        events(&mut w),
        vec![RelayEvent::Closed { acknowledged: true }]
    );
    assert_eq!(w.client.last_acked(), Some(last.seq));
}

#[test]
fn time_based_receipts_bill_slow_sessions() {
    let mut w = World::new(cfg());
    w.up(1000);
    w.run_for(Duration::from_secs(29), Duration::from_secs(1));
    assert!(w.store.is_empty(), "no receipt before T");
    w.run_for(Duration::from_secs(2), Duration::from_secs(1));
    assert_eq!(w.store.len(), 1);
    assert_eq!(w.store[0].body().bytes_up, 1000);
    // No new bytes: no new receipts.
    w.run_for(Duration::from_secs(120), Duration::from_secs(1));
    assert_eq!(w.store.len(), 1);
}

#[test]
fn short_session_is_billed_by_the_final_receipt() {
    let mut w = World::new(cfg());
    w.up(60);
    w.down(1240);
    w.pump();
    assert!(w.store.is_empty());
    // The client says goodbye; the relay answers with a final receipt.
    let none = w.relay.handle_message(Message::Close, w.now);
    assert!(none.is_none());
    assert_eq!(w.relay.state(), SessionState::Closing);
    assert_eq!(w.up(100), Verdict::Drop(DropReason::NotActive));
    w.pump();
    assert_eq!(w.store.len(), 1);
    assert_eq!(
        (w.store[0].body().bytes_up, w.store[0].body().bytes_down),
        (60, 1240)
    );
    assert_eq!(w.relay.state(), SessionState::Closed);
}

#[test]
fn over_claiming_relay_is_refused_by_the_client_and_nothing_over_tolerance_is_co_signed() {
    let mut w = World::new(cfg());
    let tol = Tolerance::default();
    // The relay counts 10 % phantom bytes on top of what the client really sent.
    for i in 0..20_000u64 {
        let len = pkt(i);
        w.up(len);
        let _ = w
            .relay
            .on_bytes(ferry_metering::Direction::Up, len / 10, w.now);
        w.advance(MS);
        w.pump();
        if w.client.rejected().is_some() {
            break;
        }
    }
    assert_eq!(w.client.rejected(), Some(ReceiptRejectReason::OverClaim));
    for c in &w.store {
        assert!(c.body().bytes_up <= tol.max_claim(c.client_observed_up));
    }
    // The client's signed refusal carries the over-claiming receipt and its own counts.
    let r = *w.client.refusal().expect("a refusal for the directory");
    r.verify(&NET).unwrap();
    assert_eq!(r.reason, 1);
    assert!(r.body().bytes_up > tol.max_claim(r.client_observed_up));
    assert_eq!(r.body().relay_key, w.relay_key.public_key());
    assert!(matches!(
        w.relay.state(),
        SessionState::CutOff(CutOffReason::Rejected(ReceiptRejectReason::OverClaim))
    ));
    assert_eq!(w.up(100), Verdict::Drop(DropReason::NotActive));
}

#[test]
fn client_that_ignores_receipts_gets_exactly_the_credit_window_then_is_cut_off() {
    let c = cfg();
    let w_bytes = c.credit_window_bytes;
    let mut w = World::new(c);
    w.client_answers = false;
    // ~29 MB offered, far beyond the 4 MiB window.
    for i in 0..40_000u64 {
        let len = pkt(i);
        if i % 2 == 0 {
            w.up(len)
        } else {
            w.down(len)
        };
        w.advance(MS / 10);
        w.pump();
    }
    let forwarded = w.forwarded_up + w.forwarded_down;
    // Exact bound: never more than W, and the window is used up to the last packet that fits.
    assert!(forwarded <= w_bytes, "{forwarded} > {w_bytes}");
    assert!(forwarded > w_bytes - 1420, "{forwarded}");
    assert_eq!(forwarded, w.relay.meter().total());
    assert!(w.store.is_empty());
    // Still blocked much later, then cut off after the co-sign timeout.
    w.run_for(Duration::from_secs(61), Duration::from_millis(500));
    assert_eq!(w.up(40), Verdict::Drop(DropReason::NotActive));
    assert_eq!(
        w.relay.state(),
        SessionState::CutOff(CutOffReason::Unresponsive)
    );
}

#[test]
fn client_that_stops_co_signing_midway_gets_at_most_w_beyond_its_last_co_signed_receipt() {
    let c = cfg();
    let w_bytes = c.credit_window_bytes;
    let mut w = World::new(c);
    for i in 0..10_000u64 {
        w.up(pkt(i));
        w.advance(MS);
        w.pump();
    }
    assert!(!w.store.is_empty());
    w.client_answers = false;
    for i in 0..20_000u64 {
        w.down(pkt(i));
        w.advance(MS / 10);
        w.pump();
    }
    let acked = w.store.last().unwrap().body().total_bytes();
    let beyond = w.relay.meter().total() - acked;
    assert!(beyond <= w_bytes && beyond > w_bytes - 1420, "{beyond}");
    assert_eq!(w.relay.meter().total(), w.forwarded_up + w.forwarded_down);
}

#[test]
fn throttle_mode_forwards_at_the_free_rate_beyond_the_window() {
    let rate = 20_000;
    let mut c = cfg();
    c.mode = CreditMode::Throttle {
        free_rate_bytes_per_sec: rate,
    };
    c.cosign_timeout = Duration::from_secs(3600);
    let w_bytes = c.credit_window_bytes;
    let mut w = World::new(c);
    w.client_answers = false;
    // Fill the window.
    while w.relay.allowance() >= 1000 {
        assert_eq!(w.up(1000), Verdict::Forward);
    }
    let at_window = w.relay.meter().total();
    assert!(at_window <= w_bytes);
    // 10 virtual seconds of demand far above the free rate.
    for _ in 0..10_000 {
        for _ in 0..10 {
            w.up(1000);
        }
        w.advance(MS);
        w.pump();
    }
    let extra = w.relay.meter().total() - at_window;
    let burst = rate; // bucket burst is max(rate, 2048)
    assert!(extra <= rate * 10 + burst + 1000, "{extra}");
    assert!(extra >= rate * 9, "{extra}");
    assert_eq!(w.relay.state(), SessionState::Active);
}

#[test]
fn disk_full_stops_credit_extension_and_recovers_when_space_returns() {
    let mut w = World::new(cfg());
    w.disk_ok = false;
    for i in 0..20_000u64 {
        w.up(pkt(i));
        w.advance(MS / 10);
        w.pump();
    }
    assert!(w.store.is_empty());
    let unacked = w.relay.unacknowledged_bytes();
    assert!(unacked <= 4 * MIB && unacked > 4 * MIB - 1420, "{unacked}");
    // The client keeps answering, so a long outage of our disk does not cut it off.
    w.run_for(Duration::from_secs(120), Duration::from_millis(500));
    assert_eq!(w.relay.state(), SessionState::Active);
    w.disk_ok = true;
    // The relay retransmits; the client re-sends its co-signature; now it persists.
    w.run_for(Duration::from_secs(3), Duration::from_millis(100));
    assert!(!w.store.is_empty());
    assert!(w.relay.forwarding_allowed());
    assert_eq!(w.up(1000), Verdict::Forward);
    assert_eq!(w.relay.state(), SessionState::Active);
}

#[test]
fn lossy_control_channel_still_converges() {
    let mut w = World::new(cfg());
    w.drop_every = 3;
    let mut sent = 0;
    for i in 0..30_000u64 {
        let len = pkt(i);
        if w.up(len) == Verdict::Forward {
            sent += len;
        }
        w.advance(MS);
        w.pump();
    }
    w.relay.close(w.now);
    w.run_for(Duration::from_secs(8), Duration::from_millis(100));
    assert_eq!(w.relay.state(), SessionState::Closed);
    assert_eq!(w.store.last().unwrap().body().bytes_up, sent);
    assert_eq!(w.relay.meter().up(), sent);
}

#[test]
fn resume_after_restart_continues_from_the_stored_receipt() {
    let mut w = World::new(cfg());
    for i in 0..8_000u64 {
        w.up(pkt(i));
        w.down(pkt(i + 1));
        w.advance(MS);
        w.pump();
    }
    let stored = *w.store.last().unwrap();
    let accept = w.relay.accept().clone();
    let lost = w.relay.meter().total() - stored.body().total_bytes();
    assert!(lost <= 4 * MIB);
    // Crash: the in-memory session is gone; rebuild it from the store.
    w.relay = RelaySession::resume(
        w.cfg.clone(),
        w.relay_key.clone(),
        accept,
        w.voucher_allowance,
        w.voucher_expires,
        Some(stored),
        w.now,
    );
    assert_eq!(w.relay.meter().total(), stored.body().total_bytes());
    assert_eq!(w.relay.unacknowledged_bytes(), 0);
    let mut new_bytes = 0;
    for i in 0..4_000u64 {
        w.up(pkt(i));
        new_bytes += pkt(i);
        w.advance(MS);
        w.pump();
    }
    w.relay.close(w.now);
    w.pump();
    let last = w.store.last().unwrap().body();
    assert_eq!(last.total_bytes(), stored.body().total_bytes() + new_bytes);
    assert!(last.seq > stored.body().seq);
    assert_eq!(w.relay.state(), SessionState::Closed);
    assert!(w.client.rejected().is_none());
}

#[test]
fn a_relay_close_with_every_byte_co_signed_still_sends_a_final_receipt() {
    // The client learns that the session ended only from a final receipt; a bare Ack (what
    // the relay sent before) left it "connected" to a relay that had dropped it.
    let mut w = World::new(cfg());
    for i in 0..2_000u64 {
        w.up(pkt(i));
        w.advance(MS);
        w.pump();
    }
    w.advance(Duration::from_secs(31));
    w.pump();
    let before = *w.store.last().unwrap().body();
    assert_eq!(before.total_bytes(), w.relay.meter().total());
    w.relay.close(w.now);
    let Some(Message::FinalReceipt(r)) = w.relay.poll_transmit(w.now, w.unix) else {
        panic!("a final receipt is due at once")
    };
    assert_eq!(r.body.seq, before.seq + 1);
    assert_eq!(r.body.total_bytes(), before.total_bytes());
    let reply = w.client.handle_message(Message::FinalReceipt(r), w.unix);
    let Some(Message::CoSigned(c)) = reply else {
        panic!("the client co-signs a zero-delta final receipt: {reply:?}")
    };
    let persist = w.relay.handle_message(Message::CoSigned(c), w.now).unwrap();
    assert_eq!(w.relay.state(), SessionState::Closing);
    assert_eq!(
        w.relay.persisted(persist.body().seq),
        Some(Message::Ack { seq: r.body.seq })
    );
    assert_eq!(w.relay.state(), SessionState::Closed);
    assert_eq!(
        events(&mut w),
        vec![RelayEvent::Closed { acknowledged: true }]
    );
}

#[test]
fn a_session_that_never_counted_a_byte_closes_without_a_receipt() {
    let mut w = World::new(cfg());
    w.relay.close(w.now);
    assert_eq!(w.relay.state(), SessionState::Closed);
    assert_eq!(w.relay.poll_transmit(w.now, w.unix), None);
}

#[test]
fn voucher_allowance_is_enforced_and_the_session_closes_with_a_final_receipt() {
    let mut w = World::with_allowance(cfg(), 100_000);
    let mut forwarded = 0;
    for _ in 0..200 {
        if w.up(1000) == Verdict::Forward {
            forwarded += 1000;
        }
        w.pump();
    }
    assert_eq!(forwarded, 100_000);
    assert!(events(&mut w).contains(&RelayEvent::AllowanceExhausted));
    w.pump();
    assert_eq!(w.store.last().unwrap().body().total_bytes(), 100_000);
    assert_eq!(w.relay.state(), SessionState::Closed);
}

#[test]
fn relay_accepts_only_receipts_it_issued_with_a_valid_client_signature() {
    let mut w = World::new(cfg());
    w.up(5000);
    w.advance(Duration::from_secs(31));
    let Some(Message::Receipt(r)) = w.relay.poll_transmit(w.now, w.unix) else {
        panic!("receipt due")
    };
    let Some(Message::CoSigned(good)) = w.client.handle_message(Message::Receipt(r), w.unix) else {
        panic!("co-signed")
    };
    // Forged: a receipt the relay never issued, co-signed by the client.
    let forged_body = ReceiptBody {
        bytes_up: 1,
        ..r.body
    };
    let forged = forged_body
        .sign(&w.relay_key)
        .cosign(&common::keys().2, 1, 0, w.unix);
    assert!(w.relay.handle_cosigned(forged).is_err());
    // Tampered client signature.
    let mut bad = good;
    bad.client_signature.0[0] ^= 1;
    assert!(w.relay.handle_cosigned(bad).is_err());
    // The genuine one persists; its duplicate is re-acked without a second persist.
    assert!(matches!(
        w.relay.handle_cosigned(good),
        Ok(ferry_metering::CosignOutcome::Persist(_))
    ));
    assert_eq!(
        w.relay.persisted(good.body().seq),
        Some(Message::Ack { seq: 1 })
    );
    assert!(matches!(
        w.relay.handle_cosigned(good),
        Ok(ferry_metering::CosignOutcome::AlreadyPersisted(
            Message::Ack { seq: 1 }
        ))
    ));
    let _ = NET;
}

#[test]
fn relay_crash_before_storing_a_co_signed_receipt_is_healed_by_client_resync() {
    let mut w = World::new(cfg());
    for i in 0..4_000u64 {
        w.up(pkt(i));
        w.advance(MS);
        w.pump();
    }
    let stored = *w.store.last().unwrap();
    // The disk stalls: the client co-signs more receipts that never get stored.
    w.disk_ok = false;
    for i in 0..3_000u64 {
        w.down(pkt(i));
        w.advance(MS);
        w.pump();
    }
    let client_latest = *w.client.last_cosigned().unwrap();
    assert!(client_latest.body().seq > stored.body().seq);
    // Crash and resume from the store, which lacks the client's latest co-signature.
    let accept = w.relay.accept().clone();
    w.relay = RelaySession::resume(
        w.cfg.clone(),
        w.relay_key.clone(),
        accept,
        w.voucher_allowance,
        w.voucher_expires,
        Some(stored),
        w.now,
    );
    w.disk_ok = true;
    let mut after = 0;
    for i in 0..3_000u64 {
        w.up(pkt(i));
        after += pkt(i);
        w.advance(MS);
        w.pump();
    }
    w.relay.close(w.now);
    w.run_for(Duration::from_secs(3), Duration::from_millis(100));
    assert!(w.client.rejected().is_none(), "{:?}", w.client.rejected());
    assert_eq!(w.relay.state(), SessionState::Closed);
    // The adopted receipt is stored, and billing continues on top of it.
    assert!(w.store.contains(&client_latest));
    let last = w.store.last().unwrap().body();
    assert_eq!(
        last.total_bytes(),
        client_latest.body().total_bytes() + after
    );
}
