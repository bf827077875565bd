//! Storage of the relay directory: one row per relay (its latest descriptor and the signed
//! annotation served with it) plus the per-client sums the score needs. Implemented by both
//! stores; the rows are statements, not money, so a lost race between two ledger instances
//! announcing the same relay at once costs at most one probe count.

use std::future::Future;

use ferry_receipts::PublicKey;

use super::StoreError;
use crate::directory::rules::ClientUsage;

/// A relay's directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryRow {
    /// Relay.
    pub relay_key: PublicKey,
    /// Descriptor encoding (relay-signed).
    pub descriptor: Vec<u8>,
    /// Annotation encoding (ledger-signed).
    pub annotation: Vec<u8>,
    /// Declared country (two letters).
    pub country: String,
    /// Asked price.
    pub price_micros_per_gib: u64,
    /// Has an IPv6 endpoint that answered.
    pub ipv6: bool,
    /// Answered the last probe on some endpoint (only those are listed).
    pub reachable: bool,
    /// Score in the annotation.
    pub score: u16,
    /// Descriptor expiry.
    pub expires_at: u64,
    /// First announce.
    pub first_seen: u64,
    /// Last announce.
    pub last_seen: u64,
    /// Last probe sent.
    pub last_probe: u64,
    /// Probes answered.
    pub probes_ok: u32,
    /// Probes sent.
    pub probes_total: u32,
}

/// One listed relay: (descriptor, annotation) encodings.
pub type Listing = (Vec<u8>, Vec<u8>);

/// Listing filters (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayFilter {
    /// Two-letter country.
    pub country: Option<String>,
    /// Highest price.
    pub max_price: Option<u64>,
    /// Lowest score.
    pub min_score: Option<u16>,
    /// Only relays with a reachable IPv6 endpoint (`Some(true)`) or without (`Some(false)`).
    pub ipv6: Option<bool>,
    /// Most rows.
    pub limit: usize,
}

/// A verified client refusal of a relay's receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalRow {
    /// The refused relay.
    pub relay_key: PublicKey,
    /// Its session.
    pub session_id: ferry_receipts::SessionId,
    /// The refusing client.
    pub client_key: PublicKey,
    /// `ReceiptRejected` code.
    pub reason: u8,
    /// Ledger time of receipt.
    pub received_at: u64,
    /// `ReceiptRefusal` encoding.
    pub encoded: Vec<u8>,
}

/// What the directory needs from storage.
pub trait DirectoryStore: Send + Sync + 'static {
    /// A relay's entry.
    fn directory_entry(
        &self,
        relay: PublicKey,
    ) -> impl Future<Output = Result<Option<DirectoryRow>, StoreError>> + Send;

    /// Inserts or replaces a relay's entry.
    fn put_directory_entry(
        &self,
        row: DirectoryRow,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reachable, unexpired entries matching `filter`, best score first, then lower price,
    /// then relay key: (descriptor, annotation) encodings.
    fn list_directory(
        &self,
        filter: RelayFilter,
        now: u64,
    ) -> impl Future<Output = Result<Vec<Listing>, StoreError>> + Send;

    /// Deletes entries whose descriptor expired before `now`; returns how many.
    fn expire_directory(&self, now: u64) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Records a client's refusal of one of `relay`'s sessions (one per session); returns
    /// whether it is new.
    fn put_refusal(&self, row: RefusalRow)
    -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// How many distinct clients refused a receipt of `relay`.
    fn relay_refusals(
        &self,
        relay: PublicKey,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Per client that paid `relay`: its credited bytes and sessions there, and its credited
    /// bytes on every other relay.
    fn relay_clients(
        &self,
        relay: PublicKey,
    ) -> impl Future<Output = Result<Vec<ClientUsage>, StoreError>> + Send;
}

/// The listing query's WHERE clause and ORDER, shared by both stores (placeholders differ:
/// `ph(n)` gives the n-th one). Returns the SQL tail and which filters take parameters, in order.
pub(crate) fn list_sql(f: &RelayFilter, ph: impl Fn(usize) -> String) -> String {
    let mut sql = format!("reachable AND expires_at >= {}", ph(1));
    let mut n = 1;
    let mut next = || {
        n += 1;
        ph(n)
    };
    if f.country.is_some() {
        sql += &format!(" AND country = {}", next());
    }
    if f.max_price.is_some() {
        sql += &format!(" AND price <= {}", next());
    }
    if f.min_score.is_some() {
        sql += &format!(" AND score >= {}", next());
    }
    if let Some(v6) = f.ipv6 {
        sql += if v6 { " AND ipv6" } else { " AND NOT ipv6" };
    }
    sql += &format!(
        " ORDER BY score DESC, price ASC, relay_key ASC LIMIT {}",
        next()
    );
    sql
}

/// Column list of a directory row, in [`DirectoryRow`] field order.
pub(crate) const DIRECTORY_COLS: &str = "relay_key, descriptor, annotation, country, price, ipv6, \
     reachable, score, expires_at, first_seen, last_seen, last_probe, probes_ok, probes_total";

/// The per-client sums behind the score (both stores run the same SQL: `ph` is the one
/// placeholder, `int` the cast PostgreSQL needs to return its sums as BIGINT).
pub(crate) fn relay_clients_sql(ph: &str, int: &str) -> String {
    format!(
        "WITH here AS (SELECT client_key, SUM(credited_bytes){int} AS b, COUNT(*){int} AS n \
           FROM sessions WHERE relay_key = {ph} AND credited_bytes > 0 GROUP BY client_key) \
         SELECT here.b, here.n, COALESCE((SELECT SUM(s.credited_bytes) FROM sessions s \
           WHERE s.client_key = here.client_key AND s.relay_key <> {ph}), 0){int} \
         FROM here ORDER BY here.client_key"
    )
}
