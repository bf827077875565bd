//! Shared test fixtures: a ledger over either store, keys, vouchers and receipts.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use ferry_ledger::money::debit_micros;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_ledger::testkit::{self, NETWORK};
use ferry_ledger::{Ledger, Params, PgStore, Role, SqliteStore, Store};
use ferry_receipts::{CoSignedReceipt, SigningKey, Voucher};

pub const PRICE: u64 = 500_000;
pub const NOW: u64 = 1_700_000_000;
pub const EPOCH: u64 = 3600;

pub fn params() -> Params {
    let p = ferry_ledger::testkit::params(NETWORK);
    assert_eq!((p.epoch_secs, p.price_micros_per_gib), (EPOCH, PRICE));
    p
}

pub fn ledger_key() -> SigningKey {
    SigningKey::from_seed(&[0x1e; 32])
}

pub fn sqlite() -> SqliteStore {
    SqliteStore::open_in_memory().unwrap()
}

static SCHEMA_SEQ: AtomicU64 = AtomicU64::new(0);

/// A PostgreSQL store in a fresh schema when `FERRY_TEST_POSTGRES_URL` is set.
pub async fn postgres(pool: usize) -> Option<(PgStore, PgGuard)> {
    let url = std::env::var("FERRY_TEST_POSTGRES_URL").ok()?;
    let schema = format!(
        "ferry_t_{}_{}",
        std::process::id(),
        SCHEMA_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let store = PgStore::connect(&url, pool, Some(&schema)).await.unwrap();
    Some((store, PgGuard { url, schema }))
}

/// A second pool onto the same schema (another "ledger instance").
pub async fn postgres_again(g: &PgGuard, pool: usize) -> PgStore {
    PgStore::connect(&g.url, pool, Some(&g.schema))
        .await
        .unwrap()
}

/// Drops the test schema.
pub struct PgGuard {
    pub url: String,
    pub schema: String,
}

impl PgGuard {
    pub async fn cleanup(self) {
        PgStore::drop_schema(&self.url, &self.schema).await.unwrap();
    }
}

/// Generates `#[tokio::test]`s running `async fn name<S: Store>(s: S)` on SQLite and (when
/// `FERRY_TEST_POSTGRES_URL` is set) PostgreSQL.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some((store, guard)) = super::common::postgres(4).await else {
                        eprintln!("FERRY_TEST_POSTGRES_URL not set: postgres variant skipped");
                        return;
                    };
                    super::$name(store).await;
                    guard.cleanup().await;
                }
            )*
        }
    };
}

/// A world: ledger, one relay set, clients with balance and vouchers.
pub struct World<S> {
    pub ledger: std::sync::Arc<Ledger<S>>,
    pub relays: Vec<SigningKey>,
    pub clients: Vec<SigningKey>,
    pub vouchers: Vec<Voucher>,
}

impl<S: Store> World<S> {
    /// `relays` relays and `clients` clients, each client with one voucher paying for
    /// `allowance` bytes at [`PRICE`] (its budget is their cost; max price [`PRICE`]).
    pub async fn new(store: S, relays: u64, clients: u64, allowance: u64) -> Self {
        let ledger = Ledger::new(store, ledger_key(), params());
        let relays: Vec<_> = (0..relays).map(|i| testkit::key(2, i)).collect();
        let clients: Vec<_> = (0..clients).map(|i| testkit::key(3, i)).collect();
        for r in &relays {
            ledger
                .register(r.public_key(), Role::Relay, NOW)
                .await
                .unwrap();
        }
        let mut vouchers = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            ledger
                .register(c.public_key(), Role::Client, NOW)
                .await
                .unwrap();
            ledger.credit(c.public_key(), 1 << 40).await.unwrap();
            let v = ledger
                .issue(
                    c.public_key(),
                    debit_micros(allowance, PRICE),
                    PRICE,
                    [i as u8; 16],
                    NOW,
                )
                .await
                .unwrap();
            vouchers.push(v.voucher);
        }
        Self {
            ledger: std::sync::Arc::new(ledger),
            relays,
            clients,
            vouchers,
        }
    }

    /// Receipt `seq` of session `sid` between relay `r` and client `c` (client's voucher, at
    /// its max price).
    pub fn receipt(
        &self,
        r: usize,
        c: usize,
        sid: u64,
        seq: u64,
        up: u64,
        down: u64,
    ) -> CoSignedReceipt {
        let v = &self.vouchers[c];
        testkit::receipt(
            NETWORK,
            &self.relays[r],
            &self.clients[c],
            v.id(),
            v.max_price_micros_per_gib,
            testkit::session(sid),
            seq,
            up,
            down,
        )
    }
}
