//! Property tests of `CumulativeState`: any shuffle of a session's receipts, with
//! duplicates, ends at the highest-seq receipt with deltas summing to its counters;
//! decreasing counters, conflicts and other sessions' receipts are refused.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferry_receipts::{
    Applied, CumulativeState, NetworkId, PublicKey, ReceiptBody, Rejected, SessionId, VoucherId,
};
use proptest::prelude::*;
use proptest::sample::Index;

/// Changes one byte of `a` (the one `pos` picks) so the result always differs.
fn mutate<const N: usize>(a: [u8; N], pos: Index, xor: u8) -> [u8; N] {
    let mut a = a;
    a[pos.index(N)] ^= xor;
    a
}

/// One session's receipts: seq strictly increasing (with gaps), counters non-decreasing.
fn session_stream() -> impl Strategy<Value = Vec<ReceiptBody>> {
    prop::collection::vec(
        (1u64..4, 0u64..1 << 40, 0u64..1 << 40, any::<bool>()),
        1..24,
    )
    .prop_map(|steps| {
        let base = receipt_body();
        let (mut seq, mut up, mut down) = (0u64, 0u64, 0u64);
        steps
            .into_iter()
            .map(|(gap, du, dd, idle)| {
                seq += gap;
                if !idle {
                    up += du;
                    down += dd;
                }
                ReceiptBody {
                    seq,
                    bytes_up: up,
                    bytes_down: down,
                    issued_at: T0 + seq,
                    ..base
                }
            })
            .collect()
    })
}

/// Indices into a stream: a shuffled multiset that always contains the last receipt.
fn shuffled_with_duplicates(n: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..n, 0..3 * n).prop_flat_map(move |mut picks| {
        picks.push(n - 1);
        Just(picks).prop_shuffle()
    })
}

fn stream_and_order() -> impl Strategy<Value = (Vec<ReceiptBody>, Vec<usize>)> {
    session_stream().prop_flat_map(|s| {
        let n = s.len();
        (Just(s), shuffled_with_duplicates(n))
    })
}

proptest! {
    #[test]
    fn shuffled_duplicated_streams_end_at_the_max_receipt((stream, order) in stream_and_order()) {
        let mut state = CumulativeState::new();
        let (mut sum_up, mut sum_down) = (0u64, 0u64);
        let mut advanced_seqs = Vec::new();
        for &i in &order {
            match state.apply(&stream[i]) {
                Ok(Applied::Advanced { delta_up, delta_down }) => {
                    sum_up += delta_up;
                    sum_down += delta_down;
                    advanced_seqs.push(stream[i].seq);
                }
                Ok(Applied::Duplicate | Applied::Stale) => {}
                Err(e) => prop_assert!(false, "consistent receipt rejected: {e}"),
            }
        }
        let max = stream.last().unwrap();
        prop_assert_eq!(state.latest(), Some(max));
        prop_assert_eq!((sum_up, sum_down), (max.bytes_up, max.bytes_down));
        // Each advance moved strictly forward.
        prop_assert!(advanced_seqs.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn decreasing_counters_are_rejected(
        stream in session_stream(),
        a in any::<Index>(),
        b in any::<Index>(),
        which in 0u8..3,
        by in 1u64..1000,
        newer_first in any::<bool>(),
    ) {
        let (i, j) = (a.index(stream.len()), b.index(stream.len()));
        prop_assume!(i != j);
        let (lo, hi) = (i.min(j), i.max(j));
        // Give the older receipt room below its counters, then drop the newer one's
        // chosen counter(s) under it.
        let mut older = stream[lo];
        older.bytes_up += by;
        older.bytes_down += by;
        let mut newer = stream[hi];
        newer.bytes_up = newer.bytes_up.max(older.bytes_up);
        newer.bytes_down = newer.bytes_down.max(older.bytes_down);
        if which != 1 {
            newer.bytes_up = older.bytes_up - by;
        }
        if which != 0 {
            newer.bytes_down = older.bytes_down - by;
        }
        let (first, second) = if newer_first { (newer, older) } else { (older, newer) };
        let mut state = CumulativeState::new();
        prop_assert!(state.apply(&first).is_ok());
        prop_assert_eq!(
            state.apply(&second),
            Err(Rejected::NonMonotonic { older: older.seq, newer: newer.seq })
        );
        prop_assert_eq!(state.latest(), Some(&first));
    }

    #[test]
    fn same_seq_with_other_contents_conflicts(stream in session_stream(), bump in 1u64..1000) {
        let last = *stream.last().unwrap();
        let mut state = CumulativeState::from_latest(last);
        let mut other = last;
        other.bytes_up += bump;
        prop_assert_eq!(state.apply(&other), Err(Rejected::Conflict(last.seq)));
        prop_assert_eq!(state.apply(&last), Ok(Applied::Duplicate));
        prop_assert_eq!(state.latest(), Some(&last));
    }

    #[test]
    fn receipts_of_another_session_are_rejected(
        stream in session_stream(),
        field in 0usize..7,
        pos in any::<Index>(),
        x in 1u8..=255,
    ) {
        let first = stream[0];
        let mut state = CumulativeState::new();
        state.apply(&first).unwrap();
        let mut other = *stream.last().unwrap();
        match field {
            0 => other.network_id = NetworkId(mutate(other.network_id.0, pos, x)),
            1 => other.relay_key = PublicKey(mutate(other.relay_key.0, pos, x)),
            2 => other.client_key = PublicKey(mutate(other.client_key.0, pos, x)),
            3 => other.session_id = SessionId(mutate(other.session_id.0, pos, x)),
            4 => other.voucher_id = VoucherId(mutate(other.voucher_id.0, pos, x)),
            5 => other.session_started_at ^= u64::from(x),
            _ => other.price_micros_per_gib ^= u64::from(x),
        }
        prop_assert_eq!(state.apply(&other), Err(Rejected::WrongSession));
        prop_assert_eq!(state.latest(), Some(&first));
    }
}

#[test]
fn seq_zero_is_rejected() {
    let mut body = receipt_body();
    body.seq = 0;
    assert_eq!(CumulativeState::new().apply(&body), Err(Rejected::ZeroSeq));
}
