use thiserror::Error;

use crate::ReceiptBody;

/// The latest accepted receipt of one session, enforcing that counters never decrease
/// and that sequence numbers increase. Feed it receipts in any order, with duplicates:
/// it always ends at the receipt with the highest `seq`, which is also the one with the
/// highest counters, and reports for each input how far the session advanced.
///
/// It does not verify signatures; callers verify first, then apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CumulativeState {
    latest: Option<ReceiptBody>,
}

/// How an accepted receipt changed the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The receipt is newer: the session advanced by these byte deltas.
    Advanced {
        /// Bytes up added over the previous latest receipt.
        delta_up: u64,
        /// Bytes down added over the previous latest receipt.
        delta_down: u64,
    },
    /// Exactly the latest receipt again; nothing changed (idempotent resubmission).
    Duplicate,
    /// An older receipt consistent with the latest one; nothing changed.
    Stale,
}

/// Why a receipt was refused: it contradicts what the session already proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Rejected {
    /// The receipt belongs to a different session (any identity field differs).
    #[error("receipt is for a different session")]
    WrongSession,
    /// Same seq as the latest receipt but different contents.
    #[error("conflicting receipt for seq {0}")]
    Conflict(u64),
    /// A counter would decrease between two receipts ordered by seq.
    #[error("non-monotonic counters between seq {older} and seq {newer}")]
    NonMonotonic {
        /// The lower seq.
        older: u64,
        /// The higher seq.
        newer: u64,
    },
    /// Seq 0 is reserved; sessions start at seq 1.
    #[error("seq 0 is not a valid receipt sequence number")]
    ZeroSeq,
}

impl CumulativeState {
    /// An empty state (no receipt yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Resumes from a previously accepted receipt (e.g. loaded from a store).
    pub fn from_latest(latest: ReceiptBody) -> Self {
        Self {
            latest: Some(latest),
        }
    }

    /// The latest accepted receipt body, if any.
    pub fn latest(&self) -> Option<&ReceiptBody> {
        self.latest.as_ref()
    }

    /// Checks `next` against the latest receipt and keeps it if it is newer.
    pub fn apply(&mut self, next: &ReceiptBody) -> Result<Applied, Rejected> {
        if next.seq == 0 {
            return Err(Rejected::ZeroSeq);
        }
        let Some(cur) = self.latest else {
            self.latest = Some(*next);
            return Ok(Applied::Advanced {
                delta_up: next.bytes_up,
                delta_down: next.bytes_down,
            });
        };
        if !cur.same_session(next) {
            return Err(Rejected::WrongSession);
        }
        let (older, newer) = if next.seq < cur.seq {
            (next, &cur)
        } else {
            (&cur, next)
        };
        if next.seq == cur.seq {
            return if *next == cur {
                Ok(Applied::Duplicate)
            } else {
                Err(Rejected::Conflict(cur.seq))
            };
        }
        if newer.bytes_up < older.bytes_up || newer.bytes_down < older.bytes_down {
            return Err(Rejected::NonMonotonic {
                older: older.seq,
                newer: newer.seq,
            });
        }
        if next.seq < cur.seq {
            return Ok(Applied::Stale);
        }
        self.latest = Some(*next);
        Ok(Applied::Advanced {
            delta_up: next.bytes_up - cur.bytes_up,
            delta_down: next.bytes_down - cur.bytes_down,
        })
    }
}
