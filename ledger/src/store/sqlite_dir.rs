//! [`DirectoryStore`] on SQLite.

use ferry_receipts::PublicKey;
use rusqlite::{OptionalExtension, params_from_iter, types::Value};

use super::directory::{
    DIRECTORY_COLS, DirectoryRow, DirectoryStore, Listing, RefusalRow, RelayFilter, list_sql,
    relay_clients_sql,
};
use super::{SqliteStore, StoreError, arr, to_i64, to_u64};
use crate::directory::rules::ClientUsage;

/// Key, descriptor, annotation, country and the ten integer columns.
type RawRow = (Vec<u8>, Vec<u8>, Vec<u8>, String, [i64; 10]);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        [
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
            r.get(10)?,
            r.get(11)?,
            r.get(12)?,
            r.get(13)?,
        ],
    ))
}

fn decode(raw: RawRow) -> Result<DirectoryRow, StoreError> {
    let (key, descriptor, annotation, country, n) = raw;
    let small = |v: i64| u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("count {v}")));
    Ok(DirectoryRow {
        relay_key: PublicKey(arr(&key)?),
        descriptor,
        annotation,
        country,
        price_micros_per_gib: to_u64(n[0])?,
        ipv6: n[1] != 0,
        reachable: n[2] != 0,
        score: u16::try_from(n[3]).map_err(|_| StoreError::Corrupt(format!("score {}", n[3])))?,
        expires_at: to_u64(n[4])?,
        first_seen: to_u64(n[5])?,
        last_seen: to_u64(n[6])?,
        last_probe: to_u64(n[7])?,
        probes_ok: small(n[8])?,
        probes_total: small(n[9])?,
    })
}

impl DirectoryStore for SqliteStore {
    async fn directory_entry(&self, relay: PublicKey) -> Result<Option<DirectoryRow>, StoreError> {
        self.run(move |c| {
            let raw = c
                .query_row(
                    &format!("SELECT {DIRECTORY_COLS} FROM directory WHERE relay_key = ?1"),
                    [relay.as_bytes().as_slice()],
                    row,
                )
                .optional()?;
            raw.map(decode).transpose()
        })
        .await
    }

    async fn put_directory_entry(&self, d: DirectoryRow) -> Result<(), StoreError> {
        let ints = [
            to_i64(d.price_micros_per_gib)?,
            i64::from(d.ipv6),
            i64::from(d.reachable),
            i64::from(d.score),
            to_i64(d.expires_at)?,
            to_i64(d.first_seen)?,
            to_i64(d.last_seen)?,
            to_i64(d.last_probe)?,
            i64::from(d.probes_ok),
            i64::from(d.probes_total),
        ];
        self.write(move |tx| {
            let mut vals: Vec<Value> = vec![
                Value::Blob(d.relay_key.as_bytes().to_vec()),
                Value::Blob(d.descriptor),
                Value::Blob(d.annotation),
                Value::Text(d.country),
            ];
            vals.extend(ints.into_iter().map(Value::Integer));
            tx.execute(
                &format!(
                    "INSERT OR REPLACE INTO directory ({DIRECTORY_COLS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                ),
                params_from_iter(vals),
            )?;
            Ok(())
        })
        .await
    }

    async fn list_directory(&self, f: RelayFilter, now: u64) -> Result<Vec<Listing>, StoreError> {
        let mut vals = vec![Value::Integer(to_i64(now)?)];
        if let Some(c) = &f.country {
            vals.push(Value::Text(c.clone()));
        }
        if let Some(p) = f.max_price {
            vals.push(Value::Integer(i64::try_from(p).unwrap_or(i64::MAX)));
        }
        if let Some(s) = f.min_score {
            vals.push(Value::Integer(i64::from(s)));
        }
        vals.push(Value::Integer(i64::try_from(f.limit).unwrap_or(i64::MAX)));
        let sql = format!(
            "SELECT descriptor, annotation FROM directory WHERE {}",
            list_sql(&f, |n| format!("?{n}"))
        );
        self.run(move |c| {
            let mut q = c.prepare_cached(&sql)?;
            let rows = q.query_map(params_from_iter(vals), |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn expire_directory(&self, now: u64) -> Result<u64, StoreError> {
        let now = to_i64(now)?;
        self.write(move |tx| {
            let n = tx.execute("DELETE FROM directory WHERE expires_at < ?1", [now])?;
            Ok(n as u64)
        })
        .await
    }

    async fn put_refusal(&self, r: RefusalRow) -> Result<bool, StoreError> {
        let at = to_i64(r.received_at)?;
        self.write(move |tx| {
            let n = tx.execute(
                "INSERT OR IGNORE INTO refusals
                   (relay_key, session_id, client_key, reason, received_at, encoded)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![
                    r.relay_key.as_bytes().as_slice(),
                    r.session_id.0.as_slice(),
                    r.client_key.as_bytes().as_slice(),
                    i64::from(r.reason),
                    at,
                    r.encoded,
                ],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn relay_refusals(&self, relay: PublicKey) -> Result<u32, StoreError> {
        self.run(move |c| {
            let n: i64 = c.query_row(
                "SELECT COUNT(DISTINCT client_key) FROM refusals WHERE relay_key = ?1",
                [relay.as_bytes().as_slice()],
                |r| r.get(0),
            )?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        })
        .await
    }

    async fn relay_clients(&self, relay: PublicKey) -> Result<Vec<ClientUsage>, StoreError> {
        self.run(move |c| {
            let mut q = c.prepare_cached(&relay_clients_sql("?1", ""))?;
            let rows = q.query_map([relay.as_bytes().as_slice()], |r| {
                Ok([r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?])
            })?;
            rows.map(|r| {
                let v = r?;
                Ok(ClientUsage {
                    bytes_here: to_u64(v[0])?,
                    sessions_here: to_u64(v[1])?,
                    bytes_elsewhere: to_u64(v[2])?,
                })
            })
            .collect()
        })
        .await
    }
}
