//! Storage behind the ledger: a [`Store`] trait with an embedded SQLite implementation
//! (default, no setup) and a PostgreSQL one (several ledger instances may share it).
//!
//! Every mutating method is one transaction. Receipt ingestion locks the vouchers a
//! batch names first (in id order, so concurrent batches cannot deadlock), loads the
//! sessions, applies [`crate::domain::apply_batch`] and writes back with optimistic guards
//! (`latest_seq` unchanged, unique `(relay, session, seq)`), so two submitters can never
//! credit the same bytes twice, even from different ledger processes.

use std::future::Future;

use ferry_receipts::{PublicKey, SessionId, VoucherId};

use crate::domain::{Outcome, Reject, Role, VerifiedReceipt, VoucherRow};

pub mod directory;
mod pg_dir;
mod pg_rows;
mod postgres;
mod sqlite;
mod sqlite_dir;

pub use directory::{DirectoryRow, DirectoryStore, RefusalRow, RelayFilter};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Storage failures (not rule violations: those are [`Reject`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite")]
    Sqlite(#[from] rusqlite::Error),
    /// The database file could not be created or restricted to its owner.
    #[error("database file {0}")]
    File(String, #[source] std::io::Error),
    /// PostgreSQL reported an error.
    #[error("postgres")]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be taken from the pool.
    #[error("postgres pool: {0}")]
    Pool(String),
    /// The client key is not registered as a client.
    #[error("client key is not registered")]
    UnknownClient,
    /// The client's balance does not cover the voucher.
    #[error("insufficient balance: have {have} micros, need {need}")]
    InsufficientFunds {
        /// Current balance.
        have: u64,
        /// Voucher cost.
        need: u64,
    },
    /// An amount would exceed the stored range (2^63 - 1).
    #[error("amount out of range")]
    Overflow,
    /// The database was written by a wire-v1 ledger (byte allowances at one network price).
    #[error(
        "{0} holds wire-v1 vouchers (byte allowances at one network price); this ledger speaks \
         wire v2 (money budgets, per-relay prices) and does not convert them: settle and close \
         it with the old ledger, then start this one on a new database"
    )]
    WireV1Database(String),
    /// A stored row could not be decoded (corruption or a foreign writer).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// No voucher with this id.
    #[error("voucher not found")]
    UnknownVoucher,
    /// The voucher cannot be closed before this unix time.
    #[error("voucher can be closed from unix time {0}")]
    TooEarly(u64),
    /// Concurrent writers kept conflicting; the caller may retry.
    #[error("too many conflicting concurrent writers, retry")]
    Contention,
    /// The blocking worker failed.
    #[error("storage worker failed: {0}")]
    Worker(String),
}

/// A client's money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAccount {
    /// Spendable balance.
    pub balance_micros: u64,
    /// Total ever credited by the operator.
    pub deposited_micros: u64,
    /// Total charged for vouchers.
    pub spent_micros: u64,
    /// Vouchers issued.
    pub vouchers: u64,
    /// Sum of voucher budgets (micros).
    pub budget_micros: u64,
    /// Micros of those budgets that sessions debited.
    pub used_micros: u64,
}

/// A relay's earnings over all sessions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelayEarnings {
    /// Sessions with at least one accepted receipt.
    pub sessions: u64,
    /// Accepted (advancing) receipts.
    pub receipts: u64,
    /// Bytes credited.
    pub credited_bytes: u64,
    /// Σ per session of floor(credited_bytes × price / 2^30).
    pub earned_micros: u64,
    /// Sessions that hit their voucher's budget.
    pub clamped_sessions: u64,
}

/// One leaf of an epoch tree, in tree order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// Relay.
    pub relay_key: PublicKey,
    /// Session.
    pub session_id: SessionId,
    /// Seq.
    pub seq: u64,
    /// Bytes credited by this receipt.
    pub credited_bytes: u64,
    /// Micros credited by this receipt.
    pub credited_micros: u64,
    /// Leaf hash.
    pub leaf_hash: [u8; 32],
}

/// An accepted receipt as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReceipt {
    /// Epoch it landed in.
    pub epoch: u64,
    /// Ledger time of acceptance.
    pub accepted_at: u64,
    /// Bytes credited by it.
    pub credited_bytes: u64,
    /// Co-signed receipt encoding.
    pub encoded: Vec<u8>,
}

/// Result of inserting a voucher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoucherInsert {
    /// Newly issued; the client's balance afterwards.
    Issued {
        /// Balance after the debit.
        balance_micros: u64,
    },
    /// The same voucher (same id) already existed; nothing was charged.
    AlreadyIssued,
}

/// Result of closing a voucher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoucherClose {
    /// Micros returned to the client: what it cost less what its sessions debited.
    pub refunded_micros: u64,
    /// Micros its sessions debited (final).
    pub used_micros: u64,
    /// It had already been closed; nothing changed.
    pub already_closed: bool,
}

/// Row counts and sums over every table: equal snapshots mean nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Registered (key, role) pairs.
    pub keys: u64,
    /// Σ client balances.
    pub balances: u64,
    /// Vouchers.
    pub vouchers: u64,
    /// Σ voucher used micros.
    pub used_micros: u64,
    /// Sessions.
    pub sessions: u64,
    /// Σ session credited bytes.
    pub credited_bytes: u64,
    /// Accepted receipts.
    pub receipts: u64,
}

/// Per-item result of a batch.
pub type ItemResult = Result<Outcome, Reject>;

/// What the ledger needs from storage. Implementations must make every method atomic and
/// durable (committed, fsynced) before returning `Ok`.
pub trait Store: DirectoryStore + Send + Sync + 'static {
    /// Registers `key` in `role`; `Ok(false)` if it already was. Clients get a zero balance.
    fn register_key(
        &self,
        key: PublicKey,
        role: Role,
        now: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Whether `key` is registered in `role`.
    fn has_key(
        &self,
        key: PublicKey,
        role: Role,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Adds `amount_micros` to a registered client's balance; returns the new balance.
    fn credit_client(
        &self,
        key: PublicKey,
        amount_micros: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Inserts an issued voucher and debits its cost from the client, atomically; a
    /// voucher with the same id is not charged twice.
    fn insert_voucher(
        &self,
        voucher: VoucherRow,
    ) -> impl Future<Output = Result<VoucherInsert, StoreError>> + Send;

    /// Loads a voucher.
    fn voucher(
        &self,
        id: VoucherId,
    ) -> impl Future<Output = Result<Option<VoucherRow>, StoreError>> + Send;

    /// Closes a voucher once `now ≥ expires_at + grace`: its budget shrinks to what
    /// was used (later receipts credit nothing) and the unused part is refunded to the
    /// client's balance. Idempotent.
    fn close_voucher(
        &self,
        id: VoucherId,
        now: u64,
        grace_secs: u64,
    ) -> impl Future<Output = Result<VoucherClose, StoreError>> + Send;

    /// Applies verified receipts in one transaction; one result per item, in order.
    fn ingest(
        &self,
        items: Vec<VerifiedReceipt>,
        now: u64,
        epoch_secs: u64,
    ) -> impl Future<Output = Result<Vec<ItemResult>, StoreError>> + Send;

    /// A client's account, if registered.
    fn client(
        &self,
        key: PublicKey,
    ) -> impl Future<Output = Result<Option<ClientAccount>, StoreError>> + Send;

    /// A relay's earnings (zeros if it has none yet).
    fn relay(
        &self,
        key: PublicKey,
    ) -> impl Future<Output = Result<RelayEarnings, StoreError>> + Send;

    /// Leaves of `epoch` in tree order (relay key, session id, seq).
    fn epoch_leaves(
        &self,
        epoch: u64,
    ) -> impl Future<Output = Result<Vec<LeafInfo>, StoreError>> + Send;

    /// Epochs holding receipts, with their receipt counts, ascending.
    fn epochs(&self) -> impl Future<Output = Result<Vec<(u64, u64)>, StoreError>> + Send;

    /// One accepted receipt.
    fn accepted(
        &self,
        relay: PublicKey,
        session: SessionId,
        seq: u64,
    ) -> impl Future<Output = Result<Option<StoredReceipt>, StoreError>> + Send;

    /// Counts and sums over every table.
    fn snapshot(&self) -> impl Future<Output = Result<Snapshot, StoreError>> + Send;
}

/// The refund of a voucher closed after `used` of it was credited.
/// True when a `vouchers` table with these column names is the wire-v1 layout.
pub(crate) fn is_wire_v1(columns: &[String]) -> bool {
    columns.iter().any(|c| c == "allowance_bytes")
}

pub(crate) fn refund_of(cost: u64, used_micros: u64) -> u64 {
    cost.saturating_sub(used_micros)
}

pub(crate) fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Overflow)
}

pub(crate) fn to_u64(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative value {v}")))
}

pub(crate) fn arr<const N: usize>(v: &[u8]) -> Result<[u8; N], StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt(format!("expected {N} bytes, got {}", v.len())))
}

/// Distinct voucher ids, keys and sessions a batch touches, sorted (the lock order).
pub(crate) struct BatchKeys {
    pub(crate) vouchers: Vec<VoucherId>,
    pub(crate) keys: Vec<PublicKey>,
    pub(crate) sessions: Vec<(PublicKey, SessionId)>,
}

impl BatchKeys {
    pub(crate) fn of(items: &[VerifiedReceipt]) -> Self {
        let mut vouchers: Vec<_> = items.iter().map(|i| i.receipt.body().voucher_id).collect();
        let mut keys: Vec<_> = items
            .iter()
            .flat_map(|i| [i.receipt.body().relay_key, i.receipt.body().client_key])
            .collect();
        let mut sessions: Vec<_> = items
            .iter()
            .map(|i| crate::domain::session_key(&i.receipt))
            .collect();
        vouchers.sort_unstable();
        vouchers.dedup();
        keys.sort_unstable();
        keys.dedup();
        sessions.sort_unstable();
        sessions.dedup();
        Self {
            vouchers,
            keys,
            sessions,
        }
    }
}
