//! PostgreSQL store (deadpool connection pool). Several ledger processes may share one
//! database: ingestion locks the batch's voucher rows with `SELECT … ORDER BY id FOR
//! UPDATE` (all writers of a voucher's sessions serialise on it, in one global order),
//! reads sessions after the lock (READ COMMITTED gives each statement a fresh snapshot),
//! and writes with guards (`latest_seq` unchanged; unique `(relay, session, seq)`). A
//! guard that trips, a deadlock or a serialisation failure rolls back and retries.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use ferry_receipts::{PublicKey, SessionId, VoucherId};
use tokio_postgres::NoTls;

use super::pg_rows::{ReceiptCols, SessionCols, overflow, retryable, voucher_from_row};
use super::sqlite::decode_session;
use super::{
    BatchKeys, ClientAccount, ItemResult, LeafInfo, RelayEarnings, Snapshot, Store, StoreError,
    StoredReceipt, VoucherClose, VoucherInsert, arr, refund_of, to_i64, to_u64,
};
use crate::domain::{BatchState, Role, VerifiedReceipt, VoucherRow, apply_batch};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keys (
  key BYTEA NOT NULL, role TEXT NOT NULL, registered_at BIGINT NOT NULL,
  PRIMARY KEY (key, role));
CREATE TABLE IF NOT EXISTS clients (
  key BYTEA PRIMARY KEY, balance_micros BIGINT NOT NULL CHECK (balance_micros >= 0),
  deposited_micros BIGINT NOT NULL, spent_micros BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS vouchers (
  id BYTEA PRIMARY KEY, client_key BYTEA NOT NULL, budget_micros BIGINT NOT NULL,
  max_price BIGINT NOT NULL, issued_at BIGINT NOT NULL, expires_at BIGINT NOT NULL,
  used_micros BIGINT NOT NULL CHECK (used_micros <= budget_micros),
  cost_micros BIGINT NOT NULL, encoded BYTEA NOT NULL,
  closed BOOLEAN NOT NULL DEFAULT FALSE, refunded_micros BIGINT NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS vouchers_client ON vouchers (client_key);
CREATE TABLE IF NOT EXISTS sessions (
  relay_key BYTEA NOT NULL, session_id BYTEA NOT NULL, client_key BYTEA NOT NULL,
  voucher_id BYTEA NOT NULL, latest_seq BIGINT NOT NULL, latest BYTEA NOT NULL,
  credited_bytes BIGINT NOT NULL, credited_micros BIGINT NOT NULL,
  clamped BOOLEAN NOT NULL, receipts BIGINT NOT NULL,
  PRIMARY KEY (relay_key, session_id));
CREATE TABLE IF NOT EXISTS receipts (
  relay_key BYTEA NOT NULL, session_id BYTEA NOT NULL, seq BIGINT NOT NULL,
  client_key BYTEA NOT NULL, voucher_id BYTEA NOT NULL, epoch BIGINT NOT NULL,
  accepted_at BIGINT NOT NULL, total_bytes BIGINT NOT NULL,
  credited_bytes BIGINT NOT NULL, credited_micros BIGINT NOT NULL,
  clamped BOOLEAN NOT NULL, encoded BYTEA NOT NULL, leaf_hash BYTEA NOT NULL,
  PRIMARY KEY (relay_key, session_id, seq));
CREATE INDEX IF NOT EXISTS receipts_epoch ON receipts (epoch, relay_key, session_id, seq);
CREATE INDEX IF NOT EXISTS sessions_client ON sessions (client_key);
CREATE TABLE IF NOT EXISTS directory (
  relay_key BYTEA PRIMARY KEY, descriptor BYTEA NOT NULL, annotation BYTEA NOT NULL,
  country TEXT NOT NULL, price BIGINT NOT NULL, ipv6 BOOLEAN NOT NULL,
  reachable BOOLEAN NOT NULL, score INTEGER NOT NULL, expires_at BIGINT NOT NULL,
  first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL, last_probe BIGINT NOT NULL,
  probes_ok BIGINT NOT NULL, probes_total BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS directory_listing ON directory (score DESC, price, relay_key);
CREATE INDEX IF NOT EXISTS directory_expiry ON directory (expires_at);
CREATE TABLE IF NOT EXISTS refusals (
  relay_key BYTEA NOT NULL, session_id BYTEA NOT NULL, client_key BYTEA NOT NULL,
  reason SMALLINT NOT NULL, received_at BIGINT NOT NULL, encoded BYTEA NOT NULL,
  PRIMARY KEY (relay_key, session_id));
";

const VOUCHER_COLS: &str = "id, client_key, budget_micros, max_price, issued_at, expires_at, used_micros, cost_micros, encoded";
const MAX_ATTEMPTS: u32 = 10;

/// PostgreSQL-backed [`Store`].
#[derive(Clone)]
pub struct PgStore {
    pub(super) pool: Pool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

pub(super) fn pool_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Pool(e.to_string())
}

impl PgStore {
    /// Connects with a `postgres://` URL (pool of `max_connections`) and creates the
    /// schema. With `schema`, every table lives in that PostgreSQL schema (created if
    /// missing; letters, digits and `_` only), which lets tests share one database.
    pub async fn connect(
        url: &str,
        max_connections: usize,
        schema: Option<&str>,
    ) -> Result<Self, StoreError> {
        let mut cfg = tokio_postgres::Config::from_str(url)?;
        if let Some(schema) = schema {
            if schema.is_empty()
                || !schema
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(StoreError::Pool(format!("invalid schema name {schema:?}")));
            }
            let (client, conn) = cfg.connect(NoTls).await?;
            let task = tokio::spawn(conn);
            client
                .batch_execute(&format!(
                    "SELECT pg_advisory_lock(7366726571); CREATE SCHEMA IF NOT EXISTS {schema}; SELECT pg_advisory_unlock(7366726571)"
                ))
                .await?;
            drop(client);
            let _ = task.await;
            cfg.options(format!("-csearch_path={schema}"));
        }
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(pool_err)?;
        let store = Self { pool };
        let mut c = store.pool.get().await.map_err(pool_err)?;
        let tx = c.transaction().await?;
        // Serialise schema creation between instances starting at once.
        tx.execute("SELECT pg_advisory_xact_lock(7366726572)", &[])
            .await?;
        let columns: Vec<String> = tx
            .query(
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = 'vouchers'",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if super::is_wire_v1(&columns) {
            return Err(StoreError::WireV1Database("the PostgreSQL schema".into()));
        }
        tx.batch_execute(SCHEMA).await?;
        tx.commit().await?;
        Ok(store)
    }

    /// Drops a schema created by [`PgStore::connect`] (tests clean up with it).
    pub async fn drop_schema(url: &str, schema: &str) -> Result<(), StoreError> {
        let cfg = tokio_postgres::Config::from_str(url)?;
        let (client, conn) = cfg.connect(NoTls).await?;
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await?;
        drop(client);
        let _ = task.await;
        Ok(())
    }

    async fn ingest_once(
        &self,
        items: &[VerifiedReceipt],
        now: u64,
        epoch_secs: u64,
    ) -> Result<Vec<ItemResult>, StoreError> {
        let keys = BatchKeys::of(items);
        let mut c = self.pool.get().await.map_err(pool_err)?;
        let tx = c.transaction().await?;
        let mut state = BatchState::default();
        let ids: Vec<&[u8]> = keys
            .vouchers
            .iter()
            .map(|v| v.as_bytes().as_slice())
            .collect();
        let sql = format!(
            "SELECT {VOUCHER_COLS} FROM vouchers WHERE id = ANY($1) ORDER BY id FOR UPDATE"
        );
        for row in tx.query(&sql, &[&ids]).await? {
            let v = voucher_from_row(&row)?;
            state.vouchers.insert(v.id, v);
        }
        let ks: Vec<&[u8]> = keys.keys.iter().map(|k| k.as_bytes().as_slice()).collect();
        for row in tx
            .query("SELECT key, role FROM keys WHERE key = ANY($1)", &[&ks])
            .await?
        {
            let k = PublicKey(arr(row.get::<_, &[u8]>(0))?);
            if let Some(role) = Role::parse(row.get(1)) {
                state.keys.insert((k, role));
            }
        }
        let rs: Vec<&[u8]> = keys
            .sessions
            .iter()
            .map(|s| s.0.as_bytes().as_slice())
            .collect();
        let ss: Vec<&[u8]> = keys
            .sessions
            .iter()
            .map(|s| s.1.as_bytes().as_slice())
            .collect();
        for row in tx
            .query(
                "SELECT s.relay_key, s.session_id, s.latest, s.credited_bytes, s.credited_micros,
                   s.clamped, s.receipts
                 FROM sessions s JOIN unnest($1::bytea[], $2::bytea[]) AS k(r, sid)
                   ON s.relay_key = k.r AND s.session_id = k.sid",
                &[&rs, &ss],
            )
            .await?
        {
            let key = (
                PublicKey(arr(row.get::<_, &[u8]>(0))?),
                SessionId(arr(row.get::<_, &[u8]>(1))?),
            );
            let s = decode_session(row.get(2), row.get(3), row.get(4), row.get(5), row.get(6))?;
            state.sessions.insert(key, s);
        }

        let (results, writes) = apply_batch(&mut state, items, now, epoch_secs);
        if writes.is_empty() {
            tx.rollback().await?;
            return Ok(results);
        }

        let mut vid = Vec::new();
        let mut used = Vec::new();
        for id in &writes.vouchers {
            if let Some(v) = state.vouchers.get(id) {
                vid.push(id.as_bytes().as_slice());
                used.push(to_i64(v.used_micros)?);
            }
        }
        tx.execute(
            "UPDATE vouchers v SET used_micros = u.used
             FROM unnest($1::bytea[], $2::int8[]) AS u(id, used) WHERE v.id = u.id",
            &[&vid, &used],
        )
        .await?;

        let mut cols = SessionCols::default();
        for key in &writes.new_sessions {
            if let Some(s) = state.sessions.get(key) {
                cols.push(key, 0, s)?;
            }
        }
        if !cols.r.is_empty() {
            tx.execute(
                "INSERT INTO sessions (relay_key, session_id, client_key, voucher_id, latest_seq,
                   latest, credited_bytes, credited_micros, clamped, receipts)
                 SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[],
                   $5::int8[], $6::bytea[], $7::int8[], $8::int8[], $9::bool[], $10::int8[])",
                &[
                    &cols.r,
                    &cols.sid,
                    &cols.client,
                    &cols.voucher,
                    &cols.seq,
                    &cols.latest,
                    &cols.cb,
                    &cols.cm,
                    &cols.cl,
                    &cols.n,
                ],
            )
            .await?;
        }
        let mut cols = SessionCols::default();
        for (key, old) in &writes.updated_sessions {
            if let Some(s) = state.sessions.get(key) {
                cols.push(key, to_i64(*old)?, s)?;
            }
        }
        if !cols.r.is_empty() {
            let n = tx
                .execute(
                    "UPDATE sessions s SET latest_seq = u.seq, latest = u.latest,
                       credited_bytes = u.cb, credited_micros = u.cm, clamped = u.cl,
                       receipts = u.n
                     FROM unnest($1::bytea[], $2::bytea[], $3::int8[], $4::int8[], $5::bytea[],
                       $6::int8[], $7::int8[], $8::bool[], $9::int8[])
                       AS u(r, sid, old, seq, latest, cb, cm, cl, n)
                     WHERE s.relay_key = u.r AND s.session_id = u.sid AND s.latest_seq = u.old",
                    &[
                        &cols.r,
                        &cols.sid,
                        &cols.old,
                        &cols.seq,
                        &cols.latest,
                        &cols.cb,
                        &cols.cm,
                        &cols.cl,
                        &cols.n,
                    ],
                )
                .await?;
            if usize::try_from(n).ok() != Some(cols.r.len()) {
                return Err(StoreError::Contention);
            }
        }

        let mut a = ReceiptCols::default();
        for row in &writes.accepted {
            a.r.push(row.relay_key.as_bytes().as_slice());
            a.sid.push(row.session_id.as_bytes().as_slice());
            a.seq.push(to_i64(row.seq)?);
            a.client.push(row.client_key.as_bytes().as_slice());
            a.voucher.push(row.voucher_id.as_bytes().as_slice());
            a.epoch.push(to_i64(row.epoch)?);
            a.at.push(to_i64(row.accepted_at)?);
            a.total.push(to_i64(row.total_bytes)?);
            a.cb.push(to_i64(row.credited_bytes)?);
            a.cm.push(to_i64(row.credited_micros)?);
            a.cl.push(row.clamped);
            a.enc.push(row.encoded.as_slice());
            a.leaf.push(row.leaf_hash.as_slice());
        }
        tx.execute(
            "INSERT INTO receipts (relay_key, session_id, seq, client_key, voucher_id, epoch,
               accepted_at, total_bytes, credited_bytes, credited_micros, clamped, encoded,
               leaf_hash)
             SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::int8[], $4::bytea[], $5::bytea[],
               $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::bool[],
               $12::bytea[], $13::bytea[])",
            &[
                &a.r, &a.sid, &a.seq, &a.client, &a.voucher, &a.epoch, &a.at, &a.total, &a.cb,
                &a.cm, &a.cl, &a.enc, &a.leaf,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(results)
    }
}

impl Store for PgStore {
    async fn register_key(&self, key: PublicKey, role: Role, now: u64) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await.map_err(pool_err)?;
        let tx = c.transaction().await?;
        let k = key.as_bytes().as_slice();
        let n = tx
            .execute(
                "INSERT INTO keys (key, role, registered_at) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&k, &role.as_str(), &to_i64(now)?],
            )
            .await?;
        if role == Role::Client {
            tx.execute(
                "INSERT INTO clients (key, balance_micros, deposited_micros, spent_micros)
                 VALUES ($1, 0, 0, 0) ON CONFLICT DO NOTHING",
                &[&k],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn has_key(&self, key: PublicKey, role: Role) -> Result<bool, StoreError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        let row = c
            .query_opt(
                "SELECT 1 FROM keys WHERE key = $1 AND role = $2",
                &[&key.as_bytes().as_slice(), &role.as_str()],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn credit_client(&self, key: PublicKey, amount: u64) -> Result<u64, StoreError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        let row = c
            .query_opt(
                "UPDATE clients SET balance_micros = balance_micros + $1,
                   deposited_micros = deposited_micros + $1 WHERE key = $2
                 RETURNING balance_micros",
                &[&to_i64(amount)?, &key.as_bytes().as_slice()],
            )
            .await
            .map_err(overflow)?;
        to_u64(row.ok_or(StoreError::UnknownClient)?.get(0))
    }

    async fn insert_voucher(&self, v: VoucherRow) -> Result<VoucherInsert, StoreError> {
        let mut c = self.pool.get().await.map_err(pool_err)?;
        let tx = c.transaction().await?;
        let cost = to_i64(v.cost_micros)?;
        let client = v.client_key.as_bytes().as_slice();
        let n = tx
            .execute(
                &format!("INSERT INTO vouchers ({VOUCHER_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING"),
                &[
                    &v.id.as_bytes().as_slice(),
                    &client,
                    &to_i64(v.budget_micros)?,
                    &to_i64(v.max_price_micros_per_gib)?,
                    &to_i64(v.issued_at)?,
                    &to_i64(v.expires_at)?,
                    &to_i64(v.used_micros)?,
                    &cost,
                    &v.encoded.as_slice(),
                ],
            )
            .await?;
        if n == 0 {
            tx.rollback().await?;
            return Ok(VoucherInsert::AlreadyIssued);
        }
        let row = tx
            .query_opt(
                "UPDATE clients SET balance_micros = balance_micros - $1,
                   spent_micros = spent_micros + $1
                 WHERE key = $2 AND balance_micros >= $1 RETURNING balance_micros",
                &[&cost, &client],
            )
            .await?;
        let Some(row) = row else {
            let have = tx
                .query_opt(
                    "SELECT balance_micros FROM clients WHERE key = $1",
                    &[&client],
                )
                .await?;
            tx.rollback().await?;
            return match have {
                None => Err(StoreError::UnknownClient),
                Some(r) => Err(StoreError::InsufficientFunds {
                    have: to_u64(r.get(0))?,
                    need: v.cost_micros,
                }),
            };
        };
        tx.commit().await?;
        Ok(VoucherInsert::Issued {
            balance_micros: to_u64(row.get(0))?,
        })
    }

    async fn voucher(&self, id: VoucherId) -> Result<Option<VoucherRow>, StoreError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        let sql = format!("SELECT {VOUCHER_COLS} FROM vouchers WHERE id = $1");
        c.query_opt(&sql, &[&id.as_bytes().as_slice()])
            .await?
            .map(|r| voucher_from_row(&r))
            .transpose()
    }

    async fn close_voucher(
        &self,
        id: VoucherId,
        now: u64,
        grace: u64,
    ) -> Result<VoucherClose, StoreError> {
        let mut c = self.pool.get().await.map_err(pool_err)?;
        let tx = c.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT client_key, max_price, expires_at, used_micros, cost_micros, closed,
                   refunded_micros FROM vouchers WHERE id = $1 FOR UPDATE",
                &[&id.as_bytes().as_slice()],
            )
            .await?
            .ok_or(StoreError::UnknownVoucher)?;
        let client: Vec<u8> = row.get(0);
        let (_max_price, expires, used, cost) = (
            to_u64(row.get(1))?,
            to_u64(row.get(2))?,
            to_u64(row.get(3))?,
            to_u64(row.get(4))?,
        );
        if row.get::<_, bool>(5) {
            return Ok(VoucherClose {
                refunded_micros: to_u64(row.get(6))?,
                used_micros: used,
                already_closed: true,
            });
        }
        let from = expires.saturating_add(grace);
        if now < from {
            return Err(StoreError::TooEarly(from));
        }
        let refund = to_i64(refund_of(cost, used))?;
        tx.execute(
            "UPDATE vouchers SET budget_micros = used_micros, closed = TRUE, refunded_micros = $1
             WHERE id = $2",
            &[&refund, &id.as_bytes().as_slice()],
        )
        .await?;
        tx.execute(
            "UPDATE clients SET balance_micros = balance_micros + $1,
               spent_micros = spent_micros - $1 WHERE key = $2",
            &[&refund, &client],
        )
        .await?;
        tx.commit().await?;
        Ok(VoucherClose {
            refunded_micros: to_u64(refund)?,
            used_micros: used,
            already_closed: false,
        })
    }

    async fn ingest(
        &self,
        items: Vec<VerifiedReceipt>,
        now: u64,
        epoch_secs: u64,
    ) -> Result<Vec<ItemResult>, StoreError> {
        let mut attempt = 0;
        loop {
            match self.ingest_once(&items, now, epoch_secs).await {
                Err(e) if retryable(&e) && attempt + 1 < MAX_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "retrying conflicting batch");
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 3)).await;
                }
                Err(e) if retryable(&e) => return Err(StoreError::Contention),
                other => return other,
            }
        }
    }

    async fn client(&self, key: PublicKey) -> Result<Option<ClientAccount>, StoreError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        let k = key.as_bytes().as_slice();
        let Some(a) = c
            .query_opt(
                "SELECT balance_micros, deposited_micros, spent_micros FROM clients WHERE key = $1",
                &[&k],
            )
            .await?
        else {
            return Ok(None);
        };
        let v = c
            .query_one(
                "SELECT COUNT(*)::int8, COALESCE(SUM(budget_micros), 0)::int8,
                   COALESCE(SUM(used_micros), 0)::int8 FROM vouchers WHERE client_key = $1",
                &[&k],
            )
            .await?;
        Ok(Some(ClientAccount {
            balance_micros: to_u64(a.get(0))?,
            deposited_micros: to_u64(a.get(1))?,
            spent_micros: to_u64(a.get(2))?,
            vouchers: to_u64(v.get(0))?,
            budget_micros: to_u64(v.get(1))?,
            used_micros: to_u64(v.get(2))?,
        }))
    }

    async fn relay(&self, key: PublicKey) -> Result<RelayEarnings, StoreError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        let v = c
            .query_one(
                "SELECT COUNT(*)::int8, COALESCE(SUM(receipts), 0)::int8,
                   COALESCE(SUM(credited_bytes), 0)::int8, COALESCE(SUM(credited_micros), 0)::int8,
                   COUNT(*) FILTER (WHERE clamped)::int8
                 FROM sessions WHERE relay_key = $1",
                &[&key.as_bytes().as_slice()],
            )
            .await?;
        Ok(RelayEarnings {
            sessions: to_u64(v.get(0))?,
            receipts: to_u64(v.get(1))?,
            credited_bytes: to_u64(v.get(2))?,
            earned_micros: to_u64(v.get(3))?,
            clamped_sessions: to_u64(v.get(4))?,
        })
    }

    async fn epoch_leaves(&self, epoch: u64) -> Result<Vec<LeafInfo>, StoreError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        let rows = c
            .query(
                "SELECT relay_key, session_id, seq, credited_bytes, credited_micros, leaf_hash
                 FROM receipts WHERE epoch = $1 ORDER BY relay_key, session_id, seq",
                &[&to_i64(epoch)?],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(LeafInfo {
                    relay_key: PublicKey(arr(r.get::<_, &[u8]>(0))?),
                    session_id: SessionId(arr(r.get::<_, &[u8]>(1))?),
                    seq: to_u64(r.get(2))?,
                    credited_bytes: to_u64(r.get(3))?,
                    credited_micros: to_u64(r.get(4))?,
                    leaf_hash: arr(r.get::<_, &[u8]>(5))?,
                })
            })
            .collect()
    }

    async fn epochs(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        let rows = c
            .query(
                "SELECT epoch, COUNT(*)::int8 FROM receipts GROUP BY epoch ORDER BY epoch",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((to_u64(r.get(0))?, to_u64(r.get(1))?)))
            .collect()
    }

    async fn accepted(
        &self,
        relay: PublicKey,
        session: SessionId,
        seq: u64,
    ) -> Result<Option<StoredReceipt>, StoreError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        let row = c
            .query_opt(
                "SELECT epoch, accepted_at, credited_bytes, encoded FROM receipts
                 WHERE relay_key = $1 AND session_id = $2 AND seq = $3",
                &[
                    &relay.as_bytes().as_slice(),
                    &session.as_bytes().as_slice(),
                    &to_i64(seq)?,
                ],
            )
            .await?;
        row.map(|r| {
            Ok(StoredReceipt {
                epoch: to_u64(r.get(0))?,
                accepted_at: to_u64(r.get(1))?,
                credited_bytes: to_u64(r.get(2))?,
                encoded: r.get(3),
            })
        })
        .transpose()
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        let r = c
            .query_one(
                "SELECT (SELECT COUNT(*) FROM keys)::int8,
                        (SELECT COALESCE(SUM(balance_micros), 0) FROM clients)::int8,
                        (SELECT COUNT(*) FROM vouchers)::int8,
                        (SELECT COALESCE(SUM(used_micros), 0) FROM vouchers)::int8,
                        (SELECT COUNT(*) FROM sessions)::int8,
                        (SELECT COALESCE(SUM(credited_bytes), 0) FROM sessions)::int8,
                        (SELECT COUNT(*) FROM receipts)::int8",
                &[],
            )
            .await?;
        Ok(Snapshot {
            keys: to_u64(r.get(0))?,
            balances: to_u64(r.get(1))?,
            vouchers: to_u64(r.get(2))?,
            used_micros: to_u64(r.get(3))?,
            sessions: to_u64(r.get(4))?,
            credited_bytes: to_u64(r.get(5))?,
            receipts: to_u64(r.get(6))?,
        })
    }
}
