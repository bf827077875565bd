//! Row and column helpers of the PostgreSQL store: array columns for `unnest` bulk
//! writes, row decoding, and which errors are worth a retry.

use ferry_receipts::{PublicKey, SessionId, VoucherId};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::{StoreError, arr, to_i64, to_u64};
use crate::domain::VoucherRow;

#[derive(Default)]
pub(super) struct SessionCols<'a> {
    pub(super) r: Vec<&'a [u8]>,
    pub(super) sid: Vec<&'a [u8]>,
    pub(super) client: Vec<&'a [u8]>,
    pub(super) voucher: Vec<&'a [u8]>,
    pub(super) old: Vec<i64>,
    pub(super) seq: Vec<i64>,
    pub(super) latest: Vec<Vec<u8>>,
    pub(super) cb: Vec<i64>,
    pub(super) cm: Vec<i64>,
    pub(super) cl: Vec<bool>,
    pub(super) n: Vec<i64>,
}

impl<'a> SessionCols<'a> {
    pub(super) fn push(
        &mut self,
        key: &'a (PublicKey, SessionId),
        old: i64,
        s: &'a crate::domain::SessionRow,
    ) -> Result<(), StoreError> {
        let b = s.latest.body();
        self.r.push(key.0.as_bytes().as_slice());
        self.sid.push(key.1.as_bytes().as_slice());
        self.client.push(b.client_key.as_bytes().as_slice());
        self.voucher.push(b.voucher_id.as_bytes().as_slice());
        self.old.push(old);
        self.seq.push(to_i64(b.seq)?);
        self.latest.push(s.latest.encode());
        self.cb.push(to_i64(s.credited_bytes)?);
        self.cm.push(to_i64(s.credited_micros)?);
        self.cl.push(s.clamped);
        self.n.push(to_i64(s.receipts)?);
        Ok(())
    }
}

#[derive(Default)]
pub(super) struct ReceiptCols<'a> {
    pub(super) r: Vec<&'a [u8]>,
    pub(super) sid: Vec<&'a [u8]>,
    pub(super) seq: Vec<i64>,
    pub(super) client: Vec<&'a [u8]>,
    pub(super) voucher: Vec<&'a [u8]>,
    pub(super) epoch: Vec<i64>,
    pub(super) at: Vec<i64>,
    pub(super) total: Vec<i64>,
    pub(super) cb: Vec<i64>,
    pub(super) cm: Vec<i64>,
    pub(super) cl: Vec<bool>,
    pub(super) enc: Vec<&'a [u8]>,
    pub(super) leaf: Vec<&'a [u8]>,
}

pub(super) fn voucher_from_row(row: &Row) -> Result<VoucherRow, StoreError> {
    Ok(VoucherRow {
        id: VoucherId(arr(row.get::<_, &[u8]>(0))?),
        client_key: PublicKey(arr(row.get::<_, &[u8]>(1))?),
        budget_micros: to_u64(row.get(2))?,
        max_price_micros_per_gib: to_u64(row.get(3))?,
        issued_at: to_u64(row.get(4))?,
        expires_at: to_u64(row.get(5))?,
        used_micros: to_u64(row.get(6))?,
        cost_micros: to_u64(row.get(7))?,
        encoded: row.get(8),
    })
}

pub(super) fn retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Contention => true,
        StoreError::Postgres(e) => matches!(
            e.code(),
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::UNIQUE_VIOLATION
        ),
        _ => false,
    }
}

pub(super) fn overflow(e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE) {
        StoreError::Overflow
    } else {
        StoreError::Postgres(e)
    }
}
