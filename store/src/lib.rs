//! Ferry's durable receipt store and ledger submitter.
//!
//! Owns: the on-disk format of the relay's (and client's) co-signed receipts — an
//! append-only log of checksummed records, fsynced before [`Store::append`] returns, with
//! crash recovery that cuts only a torn or corrupt tail, batching (one fsync per batch),
//! compaction to the latest state per session, and typed disk-full errors; plus the
//! [`Submitter`] task that moves pending receipts to the ledger with backoff.
//!
//! Must not: acknowledge anything before it is durable, panic on bad disk contents or a
//! full disk, verify signatures (callers store only verified receipts), or read clocks
//! and randomness in [`Backoff`] (the submitter shell passes them in).
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod backoff;
mod file;
mod http;
pub mod market;
mod persist;
mod record;
mod store;
mod submit;

pub use backoff::Backoff;

/// Wall-clock Unix seconds (0 before 1970): the `unix_ts` the sans-IO cores take. Routers boot
/// without a real-time clock, so this may jump when NTP syncs; timers use `Instant`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub use file::{FileWrapper, LogFile, is_no_space, write_atomically};
pub use http::{LedgerClient, LedgerUrl};
pub use persist::{PersistError, Persister};
pub use record::{
    MAGIC, MAX_EXTRA_LEN, MAX_RECORD_PAYLOAD, RECORD_HEADER_LEN, Record, Scan, SessionOpen, scan,
};
pub use store::{RecoveryReport, SessionEntry, Store, StoreError, StoreStats};
pub use submit::{
    BoxError, HttpLedger, ItemOutcome, SubmitError, Submitter, SubmitterConfig, SubmitterStats,
};
