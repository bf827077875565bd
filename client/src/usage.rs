//! What `ferry voucher show` says about a voucher's use: the bytes relays signed for it in this
//! machine's receipt log, and the time left before it expires.
//!
//! Pure: takes the log's records and the clock, reads nothing. Another device using the same
//! voucher is not in this log; the ledger's count is the one that bills.

use std::collections::HashMap;

use ferry_receipts::{SessionId, VoucherId};
use ferry_store::Record;

/// A voucher's use as recorded here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Bytes (both directions) of the latest co-signed receipt of each session, summed.
    pub(crate) used: u64,
    /// What those sessions debited, each at its own price (`ceil(bytes × price / 2^30)`).
    pub(crate) micros: u64,
    /// Sessions the voucher paid for.
    pub(crate) sessions: usize,
}

/// Sums, per session paid by `voucher`, the highest cumulative count co-signed. Receipts are
/// cumulative, so a compacted log (latest receipt per session) gives the same answer.
pub(crate) fn usage<'a>(
    records: impl IntoIterator<Item = &'a Record>,
    voucher: &VoucherId,
) -> Usage {
    let mut per: HashMap<SessionId, (u64, u64)> = HashMap::new();
    for r in records {
        if let Record::CoSigned(c) = r {
            let b = c.body();
            if b.voucher_id == *voucher {
                let e = per.entry(b.session_id).or_default();
                *e = (e.0.max(b.total_bytes()), b.price_micros_per_gib);
            }
        }
    }
    Usage {
        used: per.values().fold(0u64, |a, (b, _)| a.saturating_add(*b)),
        micros: per.values().fold(0u64, |a, (b, p)| {
            a.saturating_add(ferry_receipts::money::debit_micros(*b, *p))
        }),
        sessions: per.len(),
    }
}

/// "in 2d 3h 4m" or "expired 5m ago" (minutes resolution).
pub(crate) fn expiry(expires_at: u64, now: u64) -> String {
    if now >= expires_at {
        format!("expired {} ago", span(now - expires_at))
    } else {
        format!("in {}", span(expires_at - now))
    }
}

fn span(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3_600, secs % 3_600 / 60);
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_receipts::{NetworkId, ReceiptBody, SigningKey};

    fn cosigned(session: u8, voucher: u8, seq: u64, up: u64, down: u64) -> Record {
        let relay = SigningKey::from_seed(&[1; 32]);
        let client = SigningKey::from_seed(&[2; 32]);
        let body = ReceiptBody {
            network_id: NetworkId([0; 16]),
            relay_key: relay.public_key(),
            client_key: client.public_key(),
            session_id: SessionId([session; 16]),
            voucher_id: VoucherId([voucher; 32]),
            seq,
            bytes_up: up,
            bytes_down: down,
            session_started_at: 1,
            issued_at: 2,
            price_micros_per_gib: 3,
        };
        Record::CoSigned(body.sign(&relay).cosign(&client, up, down, 3))
    }

    #[test]
    fn latest_per_session_summed_other_vouchers_ignored() {
        let recs = [
            cosigned(1, 7, 1, 100, 50),
            cosigned(1, 7, 2, 1_000, 500),
            cosigned(2, 7, 1, 10, 20),
            cosigned(3, 8, 1, 9_999, 9_999),
            Record::SessionClosed(SessionId([1; 16])),
        ];
        assert_eq!(
            usage(&recs, &VoucherId([7; 32])),
            Usage {
                used: 1_530,
                // ceil(1500 × 3 / 2^30) + ceil(30 × 3 / 2^30): one micro per session.
                micros: 2,
                sessions: 2
            }
        );
        assert_eq!(
            usage(&recs, &VoucherId([9; 32])),
            Usage {
                used: 0,
                micros: 0,
                sessions: 0
            }
        );
    }

    #[test]
    fn expiry_wording() {
        assert_eq!(expiry(1_000, 1_000), "expired 0m ago");
        assert_eq!(expiry(1_000 + 90_061, 1_000), "in 1d 1h 1m");
        assert_eq!(expiry(1_000 + 3_660, 1_000), "in 1h 1m");
        assert_eq!(expiry(100, 100 + 300), "expired 5m ago");
    }
}
