//! Property tests over random action sequences on an honest relay/client pair: receipts
//! are strictly increasing, never exceed what was forwarded, the credit window holds, an
//! honest client never rejects, and the final receipt equals every forwarded byte.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{MIB, World};
use ferry_metering::{RelayConfig, RelaySession, SessionState};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Action {
    Up(u16),
    Down(u16),
    Advance(u16),
    ClientSilent(bool),
    DiskOk(bool),
    Crash,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => (40u16..1420).prop_map(Action::Up),
        8 => (40u16..1420).prop_map(Action::Down),
        4 => (1u16..3000).prop_map(Action::Advance),
        1 => any::<bool>().prop_map(Action::ClientSilent),
        1 => any::<bool>().prop_map(Action::DiskOk),
        1 => Just(Action::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn honest_sessions_keep_every_invariant(actions in proptest::collection::vec(action(), 1..400)) {
        let cfg = RelayConfig {
            receipt_every_bytes: 64 * 1024,
            credit_window_bytes: 256 * 1024,
            cosign_timeout: Duration::from_secs(1_000_000),
            ..RelayConfig::default()
        };
        let w_bytes = cfg.credit_window_bytes;
        let mut w = World::new(cfg);
        let mut billable_lost = 0u64;
        for a in actions {
            match a {
                Action::Up(n) => for _ in 0..20 { w.up(u64::from(n)); },
                Action::Down(n) => for _ in 0..20 { w.down(u64::from(n)); },
                Action::Advance(ms) => w.advance(Duration::from_millis(u64::from(ms))),
                Action::ClientSilent(s) => w.client_answers = !s,
                Action::DiskOk(ok) => w.disk_ok = ok,
                Action::Crash => {
                    let stored = w.store.last().copied();
                    let base = stored.map_or(0, |c| c.body().total_bytes());
                    billable_lost += w.relay.meter().total() - base;
                    let accept = w.relay.accept().clone();
                    w.relay = RelaySession::resume(
                        w.cfg.clone(), w.relay_key.clone(), accept,
                        w.voucher_allowance, w.voucher_expires, stored, w.now,
                    );
                }
            }
            w.pump();
            // Forwarded bytes not covered by any co-signature the client gave stay within W
            // (after a resync the relay may hold a co-signed receipt its disk has not
            // stored yet: that receipt still covers its bytes).
            let cosigned = w.client.last_cosigned().map_or(0, |c| c.body().total_bytes());
            let acked = w.relay.meter().total() - w.relay.unacknowledged_bytes();
            prop_assert!(w.relay.meter().total().saturating_sub(acked.max(cosigned)) <= w_bytes);
            prop_assert!(w.client.rejected().is_none());
        }
        for pair in w.store.windows(2) {
            prop_assert!(pair[1].body().seq > pair[0].body().seq);
            prop_assert!(pair[1].body().bytes_up >= pair[0].body().bytes_up);
            prop_assert!(pair[1].body().bytes_down >= pair[0].body().bytes_down);
        }
        // Let everything settle, then close.
        w.client_answers = true;
        w.disk_ok = true;
        w.run_for(Duration::from_secs(5), Duration::from_millis(250));
        w.relay.close(w.now);
        w.run_for(Duration::from_secs(5), Duration::from_millis(250));
        prop_assert_eq!(w.relay.state(), SessionState::Closed);
        let forwarded = w.forwarded_up + w.forwarded_down;
        let billed = w.store.last().map_or(0, |c| c.body().total_bytes());
        // Billed = forwarded minus bytes a crash lost (counted, never co-signed, at most W
        // per crash) plus nothing else; resync can only recover lost bytes, never add.
        prop_assert!(billed <= forwarded);
        prop_assert!(billed + billable_lost >= forwarded);
        prop_assert!(billed <= w.client.meter().total() + MIB);
    }
}
