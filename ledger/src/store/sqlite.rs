//! Embedded SQLite store: one connection behind a mutex, driven from `spawn_blocking`.
//! WAL journal with `synchronous=FULL`, so a committed batch is on disk before the ledger
//! acknowledges it. `BEGIN IMMEDIATE` takes the write lock up front, which serialises
//! writers (also across processes sharing the file).

use std::path::Path;
use std::sync::{Arc, Mutex};

use ferry_receipts::{CoSignedReceipt, PublicKey, SessionId, VoucherId};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{
    BatchKeys, ClientAccount, ItemResult, LeafInfo, RelayEarnings, Snapshot, Store, StoreError,
    StoredReceipt, VoucherClose, VoucherInsert, arr, refund_of, to_i64, to_u64,
};
use crate::domain::{BatchState, Role, SessionRow, VerifiedReceipt, VoucherRow, apply_batch};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keys (
  key BLOB NOT NULL, role TEXT NOT NULL, registered_at INTEGER NOT NULL,
  PRIMARY KEY (key, role));
CREATE TABLE IF NOT EXISTS clients (
  key BLOB PRIMARY KEY, balance_micros INTEGER NOT NULL CHECK (balance_micros >= 0),
  deposited_micros INTEGER NOT NULL, spent_micros INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS vouchers (
  id BLOB PRIMARY KEY, client_key BLOB NOT NULL, budget_micros INTEGER NOT NULL,
  max_price INTEGER NOT NULL, issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
  used_micros INTEGER NOT NULL CHECK (used_micros <= budget_micros),
  cost_micros INTEGER NOT NULL, encoded BLOB NOT NULL,
  closed INTEGER NOT NULL DEFAULT 0, refunded_micros INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS vouchers_client ON vouchers (client_key);
CREATE TABLE IF NOT EXISTS sessions (
  relay_key BLOB NOT NULL, session_id BLOB NOT NULL, client_key BLOB NOT NULL,
  voucher_id BLOB NOT NULL, latest_seq INTEGER NOT NULL, latest BLOB NOT NULL,
  credited_bytes INTEGER NOT NULL, credited_micros INTEGER NOT NULL,
  clamped INTEGER NOT NULL, receipts INTEGER NOT NULL,
  PRIMARY KEY (relay_key, session_id));
CREATE TABLE IF NOT EXISTS receipts (
  relay_key BLOB NOT NULL, session_id BLOB NOT NULL, seq INTEGER NOT NULL,
  client_key BLOB NOT NULL, voucher_id BLOB NOT NULL, epoch INTEGER NOT NULL,
  accepted_at INTEGER NOT NULL, total_bytes INTEGER NOT NULL,
  credited_bytes INTEGER NOT NULL, credited_micros INTEGER NOT NULL,
  clamped INTEGER NOT NULL, encoded BLOB NOT NULL, leaf_hash BLOB NOT NULL,
  PRIMARY KEY (relay_key, session_id, seq));
CREATE INDEX IF NOT EXISTS receipts_epoch ON receipts (epoch, relay_key, session_id, seq);
CREATE INDEX IF NOT EXISTS sessions_client ON sessions (client_key);
CREATE TABLE IF NOT EXISTS directory (
  relay_key BLOB PRIMARY KEY, descriptor BLOB NOT NULL, annotation BLOB NOT NULL,
  country TEXT NOT NULL, price INTEGER NOT NULL, ipv6 INTEGER NOT NULL,
  reachable INTEGER NOT NULL, score INTEGER NOT NULL, expires_at INTEGER NOT NULL,
  first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, last_probe INTEGER NOT NULL,
  probes_ok INTEGER NOT NULL, probes_total INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS directory_listing ON directory (score DESC, price, relay_key);
CREATE INDEX IF NOT EXISTS directory_expiry ON directory (expires_at);
CREATE TABLE IF NOT EXISTS refusals (
  relay_key BLOB NOT NULL, session_id BLOB NOT NULL, client_key BLOB NOT NULL,
  reason INTEGER NOT NULL, received_at INTEGER NOT NULL, encoded BLOB NOT NULL,
  PRIMARY KEY (relay_key, session_id));
";

/// SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

/// Creates `path` with mode 0600 if missing, or tightens an existing file to 0600.
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let mode = f.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its schema.
    /// The file (and SQLite's journal files, which take its mode) is owner-only (0600).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        owner_only(path).map_err(|e| StoreError::File(path.display().to_string(), e))?;
        let conn = Connection::open(path)?;
        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('vouchers')")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if super::is_wire_v1(&columns) {
            return Err(StoreError::WireV1Database(path.display().to_string()));
        }
        Self::init(conn)
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub(super) async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Worker("sqlite connection mutex poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
    }

    pub(super) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }
}

/// Raw voucher columns: id, client key, six integers, encoding.
type RawVoucher = (Vec<u8>, Vec<u8>, [i64; 6], Vec<u8>);

fn voucher_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawVoucher> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        [
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
        ],
        r.get(8)?,
    ))
}

fn decode_voucher(raw: RawVoucher) -> Result<VoucherRow, StoreError> {
    let (id, client, n, encoded) = raw;
    Ok(VoucherRow {
        id: VoucherId(arr(&id)?),
        client_key: PublicKey(arr(&client)?),
        budget_micros: to_u64(n[0])?,
        max_price_micros_per_gib: to_u64(n[1])?,
        issued_at: to_u64(n[2])?,
        expires_at: to_u64(n[3])?,
        used_micros: to_u64(n[4])?,
        cost_micros: to_u64(n[5])?,
        encoded,
    })
}

const VOUCHER_COLS: &str = "id, client_key, budget_micros, max_price, issued_at, expires_at, used_micros, cost_micros, encoded";

pub(crate) fn decode_session(
    latest: &[u8],
    credited_bytes: i64,
    credited_micros: i64,
    clamped: bool,
    receipts: i64,
) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        latest: CoSignedReceipt::decode(latest)
            .map_err(|e| StoreError::Corrupt(format!("session latest receipt: {e}")))?,
        credited_bytes: to_u64(credited_bytes)?,
        credited_micros: to_u64(credited_micros)?,
        clamped,
        receipts: to_u64(receipts)?,
    })
}

fn ingest_tx(
    tx: &Transaction<'_>,
    items: &[VerifiedReceipt],
    now: u64,
    epoch_secs: u64,
) -> Result<Vec<ItemResult>, StoreError> {
    let keys = BatchKeys::of(items);
    let mut state = BatchState::default();
    {
        let mut q = tx.prepare_cached("SELECT role FROM keys WHERE key = ?1")?;
        for k in &keys.keys {
            let roles = q.query_map([k.as_bytes().as_slice()], |r| r.get::<_, String>(0))?;
            for role in roles {
                if let Some(role) = Role::parse(&role?) {
                    state.keys.insert((*k, role));
                }
            }
        }
        let sql = format!("SELECT {VOUCHER_COLS} FROM vouchers WHERE id = ?1");
        let mut q = tx.prepare_cached(&sql)?;
        for id in &keys.vouchers {
            if let Some(raw) = q
                .query_row([id.as_bytes().as_slice()], voucher_row)
                .optional()?
            {
                state.vouchers.insert(*id, decode_voucher(raw)?);
            }
        }
        let mut q = tx.prepare_cached(
            "SELECT latest, credited_bytes, credited_micros, clamped, receipts FROM sessions
             WHERE relay_key = ?1 AND session_id = ?2",
        )?;
        for key in &keys.sessions {
            let row = q
                .query_row(
                    params![key.0.as_bytes().as_slice(), key.1.as_bytes().as_slice()],
                    |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, bool>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    },
                )
                .optional()?;
            if let Some((latest, b, m, c, n)) = row {
                state
                    .sessions
                    .insert(*key, decode_session(&latest, b, m, c, n)?);
            }
        }
    }
    let (results, writes) = apply_batch(&mut state, items, now, epoch_secs);
    if writes.is_empty() {
        return Ok(results);
    }
    let mut q = tx.prepare_cached("UPDATE vouchers SET used_micros = ?1 WHERE id = ?2")?;
    for id in &writes.vouchers {
        if let Some(v) = state.vouchers.get(id) {
            q.execute(params![to_i64(v.used_micros)?, id.as_bytes().as_slice()])?;
        }
    }
    let mut ins = tx.prepare_cached(
        "INSERT INTO sessions (relay_key, session_id, client_key, voucher_id, latest_seq, latest,
           credited_bytes, credited_micros, clamped, receipts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for key in &writes.new_sessions {
        if let Some(s) = state.sessions.get(key) {
            let b = s.latest.body();
            ins.execute(params![
                key.0.as_bytes().as_slice(),
                key.1.as_bytes().as_slice(),
                b.client_key.as_bytes().as_slice(),
                b.voucher_id.as_bytes().as_slice(),
                to_i64(b.seq)?,
                s.latest.encode(),
                to_i64(s.credited_bytes)?,
                to_i64(s.credited_micros)?,
                s.clamped,
                to_i64(s.receipts)?,
            ])?;
        }
    }
    let mut upd = tx.prepare_cached(
        "UPDATE sessions SET latest_seq = ?1, latest = ?2, credited_bytes = ?3,
           credited_micros = ?4, clamped = ?5, receipts = ?6
         WHERE relay_key = ?7 AND session_id = ?8 AND latest_seq = ?9",
    )?;
    for (key, old_seq) in &writes.updated_sessions {
        if let Some(s) = state.sessions.get(key) {
            let n = upd.execute(params![
                to_i64(s.latest.body().seq)?,
                s.latest.encode(),
                to_i64(s.credited_bytes)?,
                to_i64(s.credited_micros)?,
                s.clamped,
                to_i64(s.receipts)?,
                key.0.as_bytes().as_slice(),
                key.1.as_bytes().as_slice(),
                to_i64(*old_seq)?,
            ])?;
            if n != 1 {
                return Err(StoreError::Contention);
            }
        }
    }
    let mut ins = tx.prepare_cached(
        "INSERT INTO receipts (relay_key, session_id, seq, client_key, voucher_id, epoch,
           accepted_at, total_bytes, credited_bytes, credited_micros, clamped, encoded, leaf_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    for a in &writes.accepted {
        ins.execute(params![
            a.relay_key.as_bytes().as_slice(),
            a.session_id.as_bytes().as_slice(),
            to_i64(a.seq)?,
            a.client_key.as_bytes().as_slice(),
            a.voucher_id.as_bytes().as_slice(),
            to_i64(a.epoch)?,
            to_i64(a.accepted_at)?,
            to_i64(a.total_bytes)?,
            to_i64(a.credited_bytes)?,
            to_i64(a.credited_micros)?,
            a.clamped,
            a.encoded.as_slice(),
            a.leaf_hash.as_slice(),
        ])?;
    }
    Ok(results)
}

impl Store for SqliteStore {
    async fn register_key(&self, key: PublicKey, role: Role, now: u64) -> Result<bool, StoreError> {
        let now = to_i64(now)?;
        self.write(move |tx| {
            let n = tx.execute(
                "INSERT INTO keys (key, role, registered_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
                params![key.as_bytes().as_slice(), role.as_str(), now],
            )?;
            if role == Role::Client {
                tx.execute(
                    "INSERT INTO clients (key, balance_micros, deposited_micros, spent_micros)
                     VALUES (?1, 0, 0, 0) ON CONFLICT DO NOTHING",
                    [key.as_bytes().as_slice()],
                )?;
            }
            Ok(n == 1)
        })
        .await
    }

    async fn has_key(&self, key: PublicKey, role: Role) -> Result<bool, StoreError> {
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT 1 FROM keys WHERE key = ?1 AND role = ?2",
                params![key.as_bytes().as_slice(), role.as_str()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
        })
        .await
    }

    async fn credit_client(&self, key: PublicKey, amount: u64) -> Result<u64, StoreError> {
        let amount = to_i64(amount)?;
        self.write(move |tx| {
            let cur: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT balance_micros, deposited_micros FROM clients WHERE key = ?1",
                    [key.as_bytes().as_slice()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (bal, dep) = cur.ok_or(StoreError::UnknownClient)?;
            let bal = bal.checked_add(amount).ok_or(StoreError::Overflow)?;
            let dep = dep.checked_add(amount).ok_or(StoreError::Overflow)?;
            tx.execute(
                "UPDATE clients SET balance_micros = ?1, deposited_micros = ?2 WHERE key = ?3",
                params![bal, dep, key.as_bytes().as_slice()],
            )?;
            to_u64(bal)
        })
        .await
    }

    async fn insert_voucher(&self, v: VoucherRow) -> Result<VoucherInsert, StoreError> {
        self.write(move |tx| {
            let exists = tx
                .query_row(
                    "SELECT 1 FROM vouchers WHERE id = ?1",
                    [v.id.as_bytes().as_slice()],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if exists {
                return Ok(VoucherInsert::AlreadyIssued);
            }
            let bal: Option<i64> = tx
                .query_row(
                    "SELECT balance_micros FROM clients WHERE key = ?1",
                    [v.client_key.as_bytes().as_slice()],
                    |r| r.get(0),
                )
                .optional()?;
            let bal = to_u64(bal.ok_or(StoreError::UnknownClient)?)?;
            if bal < v.cost_micros {
                return Err(StoreError::InsufficientFunds {
                    have: bal,
                    need: v.cost_micros,
                });
            }
            let cost = to_i64(v.cost_micros)?;
            tx.execute(
                "UPDATE clients SET balance_micros = balance_micros - ?1,
                   spent_micros = spent_micros + ?1 WHERE key = ?2",
                params![cost, v.client_key.as_bytes().as_slice()],
            )?;
            tx.execute(
                &format!("INSERT INTO vouchers ({VOUCHER_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    v.id.as_bytes().as_slice(),
                    v.client_key.as_bytes().as_slice(),
                    to_i64(v.budget_micros)?,
                    to_i64(v.max_price_micros_per_gib)?,
                    to_i64(v.issued_at)?,
                    to_i64(v.expires_at)?,
                    to_i64(v.used_micros)?,
                    cost,
                    v.encoded.as_slice(),
                ],
            )?;
            Ok(VoucherInsert::Issued {
                balance_micros: bal - v.cost_micros,
            })
        })
        .await
    }

    async fn voucher(&self, id: VoucherId) -> Result<Option<VoucherRow>, StoreError> {
        self.run(move |c| {
            let sql = format!("SELECT {VOUCHER_COLS} FROM vouchers WHERE id = ?1");
            c.query_row(&sql, [id.as_bytes().as_slice()], voucher_row)
                .optional()?
                .map(decode_voucher)
                .transpose()
        })
        .await
    }

    async fn close_voucher(
        &self,
        id: VoucherId,
        now: u64,
        grace: u64,
    ) -> Result<VoucherClose, StoreError> {
        self.write(move |tx| {
            let row: Option<(Vec<u8>, [i64; 6], bool, i64)> = tx
                .query_row(
                    "SELECT client_key, budget_micros, max_price, expires_at, used_micros, cost_micros, 0,
                       closed, refunded_micros FROM vouchers WHERE id = ?1",
                    [id.as_bytes().as_slice()],
                    |r| {
                        Ok((
                            r.get(0)?,
                            [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?],
                            r.get(7)?,
                            r.get(8)?,
                        ))
                    },
                )
                .optional()?;
            let (client, n, closed, refunded) = row.ok_or(StoreError::UnknownVoucher)?;
            let (_max_price, expires, used, cost) =
                (to_u64(n[1])?, to_u64(n[2])?, to_u64(n[3])?, to_u64(n[4])?);
            if closed {
                return Ok(VoucherClose {
                    refunded_micros: to_u64(refunded)?,
                    used_micros: used,
                    already_closed: true,
                });
            }
            let from = expires.saturating_add(grace);
            if now < from {
                return Err(StoreError::TooEarly(from));
            }
            let refund = refund_of(cost, used);
            tx.execute(
                "UPDATE vouchers SET budget_micros = used_micros, closed = 1, refunded_micros = ?1
                 WHERE id = ?2",
                params![to_i64(refund)?, id.as_bytes().as_slice()],
            )?;
            tx.execute(
                "UPDATE clients SET balance_micros = balance_micros + ?1,
                   spent_micros = spent_micros - ?1 WHERE key = ?2",
                params![to_i64(refund)?, client],
            )?;
            Ok(VoucherClose {
                refunded_micros: refund,
                used_micros: used,
                already_closed: false,
            })
        })
        .await
    }

    async fn ingest(
        &self,
        items: Vec<VerifiedReceipt>,
        now: u64,
        epoch_secs: u64,
    ) -> Result<Vec<ItemResult>, StoreError> {
        self.write(move |tx| ingest_tx(tx, &items, now, epoch_secs))
            .await
    }

    async fn client(&self, key: PublicKey) -> Result<Option<ClientAccount>, StoreError> {
        self.run(move |c| {
            let k = key.as_bytes().as_slice();
            let acct: Option<[i64; 3]> = c
                .query_row(
                    "SELECT balance_micros, deposited_micros, spent_micros FROM clients WHERE key = ?1",
                    [k],
                    |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?]),
                )
                .optional()?;
            let Some(a) = acct else { return Ok(None) };
            let v: [i64; 3] = c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(budget_micros), 0), COALESCE(SUM(used_micros), 0)
                 FROM vouchers WHERE client_key = ?1",
                [k],
                |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?]),
            )?;
            Ok(Some(ClientAccount {
                balance_micros: to_u64(a[0])?,
                deposited_micros: to_u64(a[1])?,
                spent_micros: to_u64(a[2])?,
                vouchers: to_u64(v[0])?,
                budget_micros: to_u64(v[1])?,
                used_micros: to_u64(v[2])?,
            }))
        })
        .await
    }

    async fn relay(&self, key: PublicKey) -> Result<RelayEarnings, StoreError> {
        self.run(move |c| {
            let v: [i64; 5] = c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(receipts), 0), COALESCE(SUM(credited_bytes), 0),
                   COALESCE(SUM(credited_micros), 0), COALESCE(SUM(clamped), 0)
                 FROM sessions WHERE relay_key = ?1",
                [key.as_bytes().as_slice()],
                |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?]),
            )?;
            Ok(RelayEarnings {
                sessions: to_u64(v[0])?,
                receipts: to_u64(v[1])?,
                credited_bytes: to_u64(v[2])?,
                earned_micros: to_u64(v[3])?,
                clamped_sessions: to_u64(v[4])?,
            })
        })
        .await
    }

    async fn epoch_leaves(&self, epoch: u64) -> Result<Vec<LeafInfo>, StoreError> {
        let epoch = to_i64(epoch)?;
        self.run(move |c| {
            let mut q = c.prepare_cached(
                "SELECT relay_key, session_id, seq, credited_bytes, credited_micros, leaf_hash
                 FROM receipts WHERE epoch = ?1 ORDER BY relay_key, session_id, seq",
            )?;
            let rows = q.query_map([epoch], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (rk, sid, seq, b, m, h) = row?;
                out.push(LeafInfo {
                    relay_key: PublicKey(arr(&rk)?),
                    session_id: SessionId(arr(&sid)?),
                    seq: to_u64(seq)?,
                    credited_bytes: to_u64(b)?,
                    credited_micros: to_u64(m)?,
                    leaf_hash: arr(&h)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn epochs(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        self.run(|c| {
            let mut q = c.prepare_cached(
                "SELECT epoch, COUNT(*) FROM receipts GROUP BY epoch ORDER BY epoch",
            )?;
            let rows = q.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (e, n) = row?;
                out.push((to_u64(e)?, to_u64(n)?));
            }
            Ok(out)
        })
        .await
    }

    async fn accepted(
        &self,
        relay: PublicKey,
        session: SessionId,
        seq: u64,
    ) -> Result<Option<StoredReceipt>, StoreError> {
        let seq = to_i64(seq)?;
        self.run(move |c| {
            let row = c
                .query_row(
                    "SELECT epoch, accepted_at, credited_bytes, encoded FROM receipts
                     WHERE relay_key = ?1 AND session_id = ?2 AND seq = ?3",
                    params![
                        relay.as_bytes().as_slice(),
                        session.as_bytes().as_slice(),
                        seq
                    ],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Vec<u8>>(3)?,
                        ))
                    },
                )
                .optional()?;
            row.map(|(e, a, b, enc)| {
                Ok(StoredReceipt {
                    epoch: to_u64(e)?,
                    accepted_at: to_u64(a)?,
                    credited_bytes: to_u64(b)?,
                    encoded: enc,
                })
            })
            .transpose()
        })
        .await
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.run(|c| {
            let v: [i64; 7] = c.query_row(
                "SELECT (SELECT COUNT(*) FROM keys),
                        (SELECT COALESCE(SUM(balance_micros), 0) FROM clients),
                        (SELECT COUNT(*) FROM vouchers),
                        (SELECT COALESCE(SUM(used_micros), 0) FROM vouchers),
                        (SELECT COUNT(*) FROM sessions),
                        (SELECT COALESCE(SUM(credited_bytes), 0) FROM sessions),
                        (SELECT COUNT(*) FROM receipts)",
                [],
                |r| {
                    Ok([
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ])
                },
            )?;
            Ok(Snapshot {
                keys: to_u64(v[0])?,
                balances: to_u64(v[1])?,
                vouchers: to_u64(v[2])?,
                used_micros: to_u64(v[3])?,
                sessions: to_u64(v[4])?,
                credited_bytes: to_u64(v[5])?,
                receipts: to_u64(v[6])?,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_written_by_a_wire_v1_ledger_is_refused_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE vouchers (id BLOB PRIMARY KEY, allowance_bytes INTEGER NOT NULL,
                   price INTEGER NOT NULL, used_bytes INTEGER NOT NULL);",
            )
            .unwrap();
        let err = SqliteStore::open(&path).err().unwrap();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::WireV1Database(_)), "{msg}");
        assert!(
            msg.contains("ledger.db") && msg.contains("new database"),
            "{msg}"
        );
        // A fresh file opens, and opens again.
        let fresh = dir.path().join("v2.db");
        drop(SqliteStore::open(&fresh).unwrap());
        SqliteStore::open(&fresh).unwrap();
    }
}
