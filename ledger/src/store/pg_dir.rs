//! [`DirectoryStore`] on PostgreSQL.

use ferry_receipts::PublicKey;
use tokio_postgres::types::ToSql;

use super::directory::{
    DIRECTORY_COLS, DirectoryRow, DirectoryStore, Listing, RefusalRow, RelayFilter, list_sql,
    relay_clients_sql,
};
use super::postgres::pool_err;
use super::{PgStore, StoreError, arr, to_i64, to_u64};
use crate::directory::rules::ClientUsage;

fn decode(r: &tokio_postgres::Row) -> Result<DirectoryRow, StoreError> {
    let small = |v: i64| u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("count {v}")));
    let score: i32 = r.get(7);
    Ok(DirectoryRow {
        relay_key: PublicKey(arr(r.get::<_, &[u8]>(0))?),
        descriptor: r.get(1),
        annotation: r.get(2),
        country: r.get(3),
        price_micros_per_gib: to_u64(r.get(4))?,
        ipv6: r.get(5),
        reachable: r.get(6),
        score: u16::try_from(score).map_err(|_| StoreError::Corrupt(format!("score {score}")))?,
        expires_at: to_u64(r.get(8))?,
        first_seen: to_u64(r.get(9))?,
        last_seen: to_u64(r.get(10))?,
        last_probe: to_u64(r.get(11))?,
        probes_ok: small(r.get(12))?,
        probes_total: small(r.get(13))?,
    })
}

impl DirectoryStore for PgStore {
    async fn directory_entry(&self, relay: PublicKey) -> Result<Option<DirectoryRow>, StoreError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        let row = c
            .query_opt(
                &format!("SELECT {DIRECTORY_COLS} FROM directory WHERE relay_key = $1"),
                &[&relay.as_bytes().as_slice()],
            )
            .await?;
        row.as_ref().map(decode).transpose()
    }

    async fn put_directory_entry(&self, d: DirectoryRow) -> Result<(), StoreError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        let key = d.relay_key.as_bytes().to_vec();
        let (price, score) = (to_i64(d.price_micros_per_gib)?, i32::from(d.score));
        let times = [
            to_i64(d.expires_at)?,
            to_i64(d.first_seen)?,
            to_i64(d.last_seen)?,
            to_i64(d.last_probe)?,
            i64::from(d.probes_ok),
            i64::from(d.probes_total),
        ];
        c.execute(
            &format!(
                "INSERT INTO directory ({DIRECTORY_COLS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                 ON CONFLICT (relay_key) DO UPDATE SET descriptor = EXCLUDED.descriptor, \
                   annotation = EXCLUDED.annotation, country = EXCLUDED.country, \
                   price = EXCLUDED.price, ipv6 = EXCLUDED.ipv6, reachable = EXCLUDED.reachable, \
                   score = EXCLUDED.score, expires_at = EXCLUDED.expires_at, \
                   first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen, \
                   last_probe = EXCLUDED.last_probe, probes_ok = EXCLUDED.probes_ok, \
                   probes_total = EXCLUDED.probes_total"
            ),
            &[
                &key,
                &d.descriptor,
                &d.annotation,
                &d.country,
                &price,
                &d.ipv6,
                &d.reachable,
                &score,
                &times[0],
                &times[1],
                &times[2],
                &times[3],
                &times[4],
                &times[5],
            ],
        )
        .await?;
        Ok(())
    }

    async fn list_directory(&self, f: RelayFilter, now: u64) -> Result<Vec<Listing>, StoreError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        let now = to_i64(now)?;
        let price = f.max_price.map(|p| i64::try_from(p).unwrap_or(i64::MAX));
        let score = f.min_score.map(i32::from);
        let limit = i64::try_from(f.limit).unwrap_or(i64::MAX);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&now];
        if let Some(country) = &f.country {
            params.push(country);
        }
        if let Some(p) = &price {
            params.push(p);
        }
        if let Some(s) = &score {
            params.push(s);
        }
        params.push(&limit);
        let sql = format!(
            "SELECT descriptor, annotation FROM directory WHERE {}",
            list_sql(&f, |n| format!("${n}"))
        );
        let rows = c.query(&sql, &params).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn expire_directory(&self, now: u64) -> Result<u64, StoreError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        Ok(c.execute(
            "DELETE FROM directory WHERE expires_at < $1",
            &[&to_i64(now)?],
        )
        .await?)
    }

    async fn put_refusal(&self, r: RefusalRow) -> Result<bool, StoreError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        let n = c
            .execute(
                "INSERT INTO refusals
                   (relay_key, session_id, client_key, reason, received_at, encoded)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &r.relay_key.as_bytes().as_slice(),
                    &r.session_id.0.as_slice(),
                    &r.client_key.as_bytes().as_slice(),
                    &i16::from(r.reason),
                    &to_i64(r.received_at)?,
                    &r.encoded,
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn relay_refusals(&self, relay: PublicKey) -> Result<u32, StoreError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        let row = c
            .query_one(
                "SELECT COUNT(DISTINCT client_key)::int8 FROM refusals WHERE relay_key = $1",
                &[&relay.as_bytes().as_slice()],
            )
            .await?;
        Ok(u32::try_from(row.get::<_, i64>(0)).unwrap_or(u32::MAX))
    }

    async fn relay_clients(&self, relay: PublicKey) -> Result<Vec<ClientUsage>, StoreError> {
        let c = self.pool.get().await.map_err(pool_err)?;
        let rows = c
            .query(
                &relay_clients_sql("$1", "::int8"),
                &[&relay.as_bytes().as_slice()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ClientUsage {
                    bytes_here: to_u64(r.get(0))?,
                    sessions_here: to_u64(r.get(1))?,
                    bytes_elsewhere: to_u64(r.get(2))?,
                })
            })
            .collect()
    }
}
