//! Ledger counters for `/metrics`: plain atomics bumped by [`crate::Ledger`], turned into
//! Prometheus metrics only at scrape time by [`LedgerCollector`].
//!
//! | name | type | labels |
//! |---|---|---|
//! | `ferry_ledger_receipts_total` | counter | `outcome`: `accepted`, `duplicate`, `stale`, `rejected` |
//! | `ferry_ledger_credited_bytes_total` | counter | |
//! | `ferry_ledger_vouchers_issued_total` | counter | |
//! | `ferry_ledger_vouchers_closed_total` | counter | |

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

use crate::domain::Outcome;
use crate::service::SubmitResult;

/// Counters since the process started.
#[derive(Debug, Default)]
pub struct LedgerStats {
    accepted: AtomicU64,
    duplicate: AtomicU64,
    stale: AtomicU64,
    rejected: AtomicU64,
    credited_bytes: AtomicU64,
    vouchers_issued: AtomicU64,
    vouchers_closed: AtomicU64,
}

/// A copy of [`LedgerStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerStatsSnapshot {
    /// Receipts that advanced a session (credited, possibly 0 bytes when clamped).
    pub accepted: u64,
    /// Receipts already accepted (same session and sequence number).
    pub duplicate: u64,
    /// Receipts older than the session's latest.
    pub stale: u64,
    /// Receipts refused (bad signature, unknown key or voucher, malformed, ...).
    pub rejected: u64,
    /// Bytes credited to relays.
    pub credited_bytes: u64,
    /// Vouchers issued (re-issues of the same request not counted).
    pub vouchers_issued: u64,
    /// Vouchers closed with a refund.
    pub vouchers_closed: u64,
}

impl LedgerStats {
    /// Counts the per-receipt results of one submission.
    pub(crate) fn count_results(&self, results: &[SubmitResult]) {
        for r in results {
            match r {
                Ok(Outcome::Advanced { credited_bytes, .. }) => {
                    self.accepted.fetch_add(1, Ordering::Relaxed);
                    self.credited_bytes
                        .fetch_add(*credited_bytes, Ordering::Relaxed);
                }
                Ok(Outcome::Duplicate) => {
                    self.duplicate.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Outcome::Stale) => {
                    self.stale.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    pub(crate) fn voucher_issued(&self) {
        self.vouchers_issued.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn voucher_closed(&self) {
        self.vouchers_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Current values.
    pub fn snapshot(&self) -> LedgerStatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LedgerStatsSnapshot {
            accepted: get(&self.accepted),
            duplicate: get(&self.duplicate),
            stale: get(&self.stale),
            rejected: get(&self.rejected),
            credited_bytes: get(&self.credited_bytes),
            vouchers_issued: get(&self.vouchers_issued),
            vouchers_closed: get(&self.vouchers_closed),
        }
    }
}

/// Exports [`LedgerStats`]; register with
/// `registry.register_collector(Box::new(LedgerCollector(stats)))`.
pub struct LedgerCollector(pub Arc<LedgerStats>);

impl fmt::Debug for LedgerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LedgerCollector")
    }
}

impl Collector for LedgerCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = self.0.snapshot();
        let mut receipts = enc.encode_descriptor(
            "ferry_ledger_receipts",
            "Co-signed receipts submitted, by outcome",
            None,
            MetricType::Counter,
        )?;
        for (outcome, n) in [
            ("accepted", s.accepted),
            ("duplicate", s.duplicate),
            ("stale", s.stale),
            ("rejected", s.rejected),
        ] {
            ConstCounter::new(n).encode(receipts.encode_family(&[("outcome", outcome)])?)?;
        }
        for (name, help, n) in [
            (
                "ferry_ledger_credited_bytes",
                "Bytes credited to relays",
                s.credited_bytes,
            ),
            (
                "ferry_ledger_vouchers_issued",
                "Vouchers issued",
                s.vouchers_issued,
            ),
            (
                "ferry_ledger_vouchers_closed",
                "Expired vouchers closed and refunded",
                s.vouchers_closed,
            ),
        ] {
            let c = ConstCounter::new(n);
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        Ok(())
    }
}

/// `GET /metrics` (OpenMetrics text): these counters plus ferry-telemetry's process metrics.
/// Merge it into the API router.
pub fn metrics_router(stats: Arc<LedgerStats>) -> axum::Router {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    let mut metrics = ferry_telemetry::Metrics::new(&ferry_telemetry::MetricsConfig::default());
    metrics
        .registry_mut()
        .register_collector(Box::new(LedgerCollector(stats)));
    let metrics = Arc::new(metrics);
    let handler = move || {
        let metrics = metrics.clone();
        async move {
            match metrics.encode() {
                Ok(body) => (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(ferry_telemetry::server::OPENMETRICS_CONTENT_TYPE),
                    )],
                    body,
                )
                    .into_response(),
                Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response(),
            }
        }
    };
    axum::Router::new().route("/metrics", axum::routing::get(handler))
}
