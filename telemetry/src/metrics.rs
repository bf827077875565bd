//! Every metric Ferry exports, defined in one place.
//!
//! The hot path never touches this module. Cores count into their own `Stats` (plain integers
//! or atomics); when Prometheus scrapes, the [`AgentCollector`] asks the agent's
//! [`SnapshotSource`] for a [`Snapshot`] and encodes it. Only the store's fsync latency is a
//! live histogram here, because latency distributions cannot be rebuilt from totals; fsyncs
//! are rare, so its internal lock is harmless.
//!
//! Exported names (OpenMetrics adds `_total` to counters):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `wireguard_sent_bytes_total` | counter | `public_key` only with `per-peer-labels` |
//! | `wireguard_received_bytes_total` | counter | same |
//! | `wireguard_latest_handshake_seconds` | gauge (unix s) | same |
//! | `ferry_peers` | gauge | |
//! | `ferry_sessions_active` | gauge | |
//! | `ferry_handshakes_total` | counter | |
//! | `ferry_packets_dropped_total` | counter | `reason` ([`DropReason`]) |
//! | `ferry_receipts_{issued,cosigned,rejected,submitted}_total` | counter | |
//! | `ferry_receipts_pending` | gauge | |
//! | `ferry_unacknowledged_bytes` | gauge | |
//! | `ferry_earned_bytes_total` | counter | |
//! | `ferry_dns_queries_total`, `ferry_dns_upstream_failures_total` | counter | |
//! | `ferry_directory_listed` | gauge (1 listed, 0 not) | |
//! | `ferry_directory_problem` | gauge (1 = finding present) | `code` ([`DIRECTORY_FINDINGS`]) |
//! | `ferry_directory_announces_total` | counter | `result` (`ok`, `failed`) |
//! | `ferry_directory_probes_total` | counter | `result` (`answered`, `refused`) |
//! | `ferry_store_fsync_seconds` | histogram | |
//! | `process_resident_memory_bytes`, `process_start_time_seconds` | gauge | |
//! | `ferry_build_info` | info | `version` |

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use crate::process::ProcessCollector;

/// The `[metrics]` table of the agent (and ledger) config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsConfig {
    /// Serve `/metrics` at all (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Listen addresses of the HTTP server. Empty: the binary's default (the agent uses its
    /// LAN address and 127.0.0.1, port 9586, so the LuCI page can reach `/status`; the library
    /// default is [`crate::server::DEFAULT_LISTEN`]).
    #[serde(default)]
    pub listen: Vec<std::net::SocketAddr>,
    /// File holding a bearer token (mode 0600). When set, `/metrics` and `/status` answer 401
    /// without `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// Export `wireguard_*` per peer with a `public_key` label. Off by default: one series per
    /// peer costs router memory and Prometheus storage.
    #[serde(default)]
    pub per_peer_labels: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: Vec::new(),
            token_file: None,
            per_peer_labels: false,
        }
    }
}

fn yes() -> bool {
    true
}

/// Why a packet was dropped; the `reason` label of `ferry_packets_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Egress policy: private/special range, router address, operator deny list.
    Policy,
    /// Inner source address not in the peer's allowed IPs.
    AllowedIps,
    /// Per-client rate limit or per-source handshake bucket.
    RateLimit,
    /// Client exceeded the unacknowledged-bytes credit window.
    CreditWindow,
    /// A paid peer's packet with no live session (billing fails closed).
    PaidNoSession,
    /// Destination port closed by the exit port policy (SMTP by default).
    ExitPort,
    /// Over the total rate the owner shares with all paying clients together.
    ShareRate,
    /// The owner's daily or monthly sharing quota is used up.
    Quota,
    /// Datagram from a key or index we do not know.
    UnknownPeer,
    /// Undecodable WireGuard or IP packet.
    Malformed,
    /// A queue or buffer toward TUN/UDP/netstack was full.
    QueueFull,
    /// Anything else.
    Other,
}

impl DropReason {
    /// Every reason, in label order; all are exported (zeros included) so dashboards have series.
    pub const ALL: [Self; 12] = [
        Self::Policy,
        Self::AllowedIps,
        Self::RateLimit,
        Self::CreditWindow,
        Self::PaidNoSession,
        Self::ExitPort,
        Self::ShareRate,
        Self::Quota,
        Self::UnknownPeer,
        Self::Malformed,
        Self::QueueFull,
        Self::Other,
    ];

    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::AllowedIps => "allowed_ips",
            Self::RateLimit => "rate_limit",
            Self::CreditWindow => "credit_window",
            Self::PaidNoSession => "paid_no_session",
            Self::ExitPort => "exit_port",
            Self::ShareRate => "share_rate",
            Self::Quota => "quota",
            Self::UnknownPeer => "unknown_peer",
            Self::Malformed => "malformed",
            Self::QueueFull => "queue_full",
            Self::Other => "other",
        }
    }

    fn index(self) -> usize {
        // `ALL` lists the variants in declaration order.
        self as usize
    }
}

/// Cumulative drop counts per [`DropReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    /// Adds `n` drops for `reason` (saturating).
    pub fn add(&mut self, reason: DropReason, n: u64) {
        let slot = &mut self.0[reason.index()];
        *slot = slot.saturating_add(n);
    }

    /// Drops counted for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }
}

/// One peer's WireGuard counters; exported only with `per-peer-labels`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerTraffic {
    /// Base64 X25519 public key (the `public_key` label).
    pub public_key: String,
    /// Bytes sent to this peer (cumulative).
    pub sent_bytes: u64,
    /// Bytes received from this peer (cumulative).
    pub received_bytes: u64,
    /// Unix seconds of the latest completed handshake, 0 if none.
    pub latest_handshake_unix: u64,
}

/// Receipt exchange counters (metering + store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiptStats {
    /// Receipts the relay signed and sent.
    pub issued: u64,
    /// Receipts the client co-signed (and we persisted).
    pub cosigned: u64,
    /// Co-signatures that failed verification or receipts the client refused.
    pub rejected: u64,
    /// Co-signed receipts the ledger accepted.
    pub submitted: u64,
    /// Co-signed receipts stored but not yet accepted by the ledger (gauge).
    pub pending: u64,
}

/// DNS forwarder counters (copied from `ferry_dns::ForwarderStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Queries answered (any response code).
    pub queries: u64,
    /// Queries answered with SERVFAIL because no upstream answered.
    pub upstream_failures: u64,
}

/// The directory's finding codes the agent exports (one `ferry_directory_problem` series each).
pub const DIRECTORY_FINDINGS: [&str; 3] = [
    "hello_port_closed",
    "address_mismatch",
    "address_not_public",
];

/// The states of the owner's sharing rules (one `ferry_sharing` series each).
pub const SHARING_STATES: [&str; 5] = [
    "sharing",
    "paused",
    "daily_quota",
    "monthly_quota",
    "outside_schedule",
];

/// The owner's sharing rules (present when paid sharing is on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharingStats {
    /// One of [`SHARING_STATES`].
    pub state: String,
    /// Paid bytes (both directions) counted today / in this monthly period.
    pub used_today_bytes: u64,
    pub used_period_bytes: u64,
    /// The quotas (`None`: none set).
    pub daily_quota_bytes: Option<u64>,
    pub monthly_quota_bytes: Option<u64>,
    /// Seconds to the next daily / monthly reset.
    pub daily_reset_secs: Option<u64>,
    pub monthly_reset_secs: Option<u64>,
}

/// The relay's standing in the directory (present when the agent announces).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryStats {
    /// The last announce listed the relay.
    pub listed: bool,
    /// Codes of the last announce's findings.
    pub findings: Vec<String>,
    /// Announces the ledger answered.
    pub announces_ok: u64,
    /// Announces that failed (unreachable ledger or refused).
    pub announces_failed: u64,
    /// Directory probes answered.
    pub probes_answered: u64,
    /// Probe datagrams refused (wrong ledger, relay, network or stale).
    pub probes_refused: u64,
}

/// Everything the agent reports at scrape time. Counters are cumulative since process start.
///
/// `#[non_exhaustive]`: build it with `Snapshot::default()` and assign fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Bytes sent to all peers (aggregate `wireguard_sent_bytes_total`).
    pub sent_bytes: u64,
    /// Bytes received from all peers.
    pub received_bytes: u64,
    /// Latest handshake over all peers, unix seconds, 0 if none.
    pub latest_handshake_unix: u64,
    /// Per-peer counters. Fill only when [`Metrics::per_peer_labels`] is true; otherwise it is
    /// ignored and the aggregate fields are exported.
    pub peers: Vec<PeerTraffic>,
    /// Configured peers.
    pub peers_configured: u64,
    /// Peers with a live session (recent handshake).
    pub sessions_active: u64,
    /// Completed handshakes.
    pub handshakes: u64,
    /// Dropped packets per reason.
    pub drops: DropCounts,
    /// Receipt exchange counters.
    pub receipts: ReceiptStats,
    /// Bytes served but not yet covered by a co-signed receipt (all clients).
    pub unacknowledged_bytes: u64,
    /// Bytes covered by co-signed receipts: what the relay has earned.
    pub earned_bytes: u64,
    /// DNS forwarder counters, if the forwarder runs.
    pub dns: Option<DnsStats>,
    /// Directory standing, if the agent announces.
    pub directory: Option<DirectoryStats>,
    /// The owner's sharing rules, if paid sharing is on.
    pub sharing: Option<SharingStats>,
}

/// Produces a [`Snapshot`] on each scrape. Closures `Fn() -> Snapshot` implement it.
pub trait SnapshotSource: Send + Sync + 'static {
    /// Called once per scrape; must be cheap and must not block on the data plane.
    fn snapshot(&self) -> Snapshot;
}

impl<F> SnapshotSource for F
where
    F: Fn() -> Snapshot + Send + Sync + 'static,
{
    fn snapshot(&self) -> Snapshot {
        self()
    }
}

/// The registry plus the live fsync histogram.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    fsync: FsyncRecorder,
    per_peer_labels: bool,
}

impl Metrics {
    /// A registry with build info, process metrics and the fsync histogram. Call
    /// [`Metrics::register_agent`] to add the agent's snapshot metrics.
    pub fn new(config: &MetricsConfig) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "ferry_build",
            "Ferry build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(ProcessCollector::new()));
        let histogram = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "ferry_store_fsync_seconds",
            "Latency of fsync in the durable receipt store",
            histogram.clone(),
        );
        Self {
            registry,
            fsync: FsyncRecorder(histogram),
            per_peer_labels: config.per_peer_labels,
        }
    }

    /// Registers the agent's snapshot metrics; `source` is called once per scrape.
    pub fn register_agent(&mut self, source: impl SnapshotSource) {
        self.registry.register_collector(Box::new(AgentCollector {
            source: Arc::new(source),
            per_peer_labels: self.per_peer_labels,
        }));
    }

    /// Whether the agent should fill [`Snapshot::peers`].
    pub fn per_peer_labels(&self) -> bool {
        self.per_peer_labels
    }

    /// A cheap handle the store uses to record fsync latency.
    pub fn fsync_recorder(&self) -> FsyncRecorder {
        self.fsync.clone()
    }

    /// For binaries with metrics of their own (e.g. the ledger).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// OpenMetrics text exposition of everything registered.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Records store fsync latencies into `ferry_store_fsync_seconds`.
#[derive(Debug, Clone)]
pub struct FsyncRecorder(Histogram);

impl FsyncRecorder {
    /// Records one fsync that took `elapsed`.
    pub fn record(&self, elapsed: Duration) {
        self.0.observe(elapsed.as_secs_f64());
    }
}

/// Name, help, type and accessor of one per-peer `wireguard_*` family.
type PeerField = (
    &'static str,
    &'static str,
    MetricType,
    fn(&PeerTraffic) -> u64,
);

struct AgentCollector {
    source: Arc<dyn SnapshotSource>,
    per_peer_labels: bool,
}

impl fmt::Debug for AgentCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentCollector")
            .field("per_peer_labels", &self.per_peer_labels)
            .finish_non_exhaustive()
    }
}

impl Collector for AgentCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = self.source.snapshot();
        self.encode_wireguard(&mut enc, &s)?;
        gauge(
            &mut enc,
            "ferry_peers",
            "Configured peers",
            s.peers_configured,
        )?;
        gauge(
            &mut enc,
            "ferry_sessions_active",
            "Peers with a live WireGuard session",
            s.sessions_active,
        )?;
        counter(
            &mut enc,
            "ferry_handshakes",
            "Completed WireGuard handshakes",
            s.handshakes,
        )?;
        let drops: Vec<(&str, u64)> = DropReason::ALL
            .iter()
            .map(|r| (r.as_label(), s.drops.get(*r)))
            .collect();
        labelled(
            &mut enc,
            "ferry_packets_dropped",
            "Packets dropped, by reason",
            MetricType::Counter,
            "reason",
            &drops,
        )?;
        let r = s.receipts;
        counter(
            &mut enc,
            "ferry_receipts_issued",
            "Receipts signed and sent to clients",
            r.issued,
        )?;
        counter(
            &mut enc,
            "ferry_receipts_cosigned",
            "Receipts co-signed by clients and persisted",
            r.cosigned,
        )?;
        counter(
            &mut enc,
            "ferry_receipts_rejected",
            "Receipts refused by clients or with invalid co-signatures",
            r.rejected,
        )?;
        counter(
            &mut enc,
            "ferry_receipts_submitted",
            "Co-signed receipts accepted by the ledger",
            r.submitted,
        )?;
        gauge(
            &mut enc,
            "ferry_receipts_pending",
            "Co-signed receipts not yet accepted by the ledger",
            r.pending,
        )?;
        gauge(
            &mut enc,
            "ferry_unacknowledged_bytes",
            "Bytes served but not yet covered by a co-signed receipt",
            s.unacknowledged_bytes,
        )?;
        counter(
            &mut enc,
            "ferry_earned_bytes",
            "Bytes covered by co-signed receipts",
            s.earned_bytes,
        )?;
        if let Some(d) = &s.directory {
            encode_directory(&mut enc, d)?;
        }
        if let Some(sh) = &s.sharing {
            encode_sharing(&mut enc, sh)?;
        }
        if let Some(dns) = s.dns {
            counter(
                &mut enc,
                "ferry_dns_queries",
                "DNS queries answered by the forwarder",
                dns.queries,
            )?;
            counter(
                &mut enc,
                "ferry_dns_upstream_failures",
                "DNS queries answered SERVFAIL because no upstream answered",
                dns.upstream_failures,
            )?;
        }
        Ok(())
    }
}

fn encode_directory(enc: &mut DescriptorEncoder, d: &DirectoryStats) -> fmt::Result {
    gauge(
        enc,
        "ferry_directory_listed",
        "1 when the directory lists this relay (its Hello port answered the probe)",
        u64::from(d.listed),
    )?;
    let problems: Vec<(&str, u64)> = DIRECTORY_FINDINGS
        .iter()
        .map(|c| (*c, u64::from(d.findings.iter().any(|f| f == c))))
        .collect();
    labelled(
        enc,
        "ferry_directory_problem",
        "1 while the directory reports this problem (see /status for the words)",
        MetricType::Gauge,
        "code",
        &problems,
    )?;
    labelled(
        enc,
        "ferry_directory_announces",
        "Descriptor announces, by result",
        MetricType::Counter,
        "result",
        &[("ok", d.announces_ok), ("failed", d.announces_failed)],
    )?;
    labelled(
        enc,
        "ferry_directory_probes",
        "Directory reachability probes on the Hello port, by result",
        MetricType::Counter,
        "result",
        &[
            ("answered", d.probes_answered),
            ("refused", d.probes_refused),
        ],
    )
}

fn encode_sharing(enc: &mut DescriptorEncoder, s: &SharingStats) -> fmt::Result {
    let states: Vec<(&str, u64)> = SHARING_STATES
        .iter()
        .map(|c| (*c, u64::from(s.state == *c)))
        .collect();
    labelled(
        enc,
        "ferry_sharing",
        "1 for the current state of the owner's sharing (pause, quota, schedule)",
        MetricType::Gauge,
        "state",
        &states,
    )?;
    labelled(
        enc,
        "ferry_share_used_bytes",
        "Paid bytes (both directions) counted against the quota in this day / monthly period",
        MetricType::Gauge,
        "period",
        &[("day", s.used_today_bytes), ("month", s.used_period_bytes)],
    )?;
    let set = |pairs: [(&'static str, Option<u64>); 2]| -> Vec<(&'static str, u64)> {
        pairs
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect()
    };
    let quotas = set([
        ("day", s.daily_quota_bytes),
        ("month", s.monthly_quota_bytes),
    ]);
    if !quotas.is_empty() {
        labelled(
            enc,
            "ferry_share_quota_bytes",
            "The owner's sharing quota per day / monthly period",
            MetricType::Gauge,
            "period",
            &quotas,
        )?;
    }
    labelled(
        enc,
        "ferry_share_reset_seconds",
        "Seconds until the daily / monthly quota starts again",
        MetricType::Gauge,
        "period",
        &set([("day", s.daily_reset_secs), ("month", s.monthly_reset_secs)]),
    )
}

impl AgentCollector {
    fn encode_wireguard(&self, enc: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
        const SENT: (&str, &str) = ("wireguard_sent_bytes", "Bytes sent to peers");
        const RECV: (&str, &str) = ("wireguard_received_bytes", "Bytes received from peers");
        const HS: (&str, &str) = (
            "wireguard_latest_handshake_seconds",
            "Unix time of the latest handshake (0: none)",
        );
        if !self.per_peer_labels {
            counter(enc, SENT.0, SENT.1, s.sent_bytes)?;
            counter(enc, RECV.0, RECV.1, s.received_bytes)?;
            return gauge(enc, HS.0, HS.1, s.latest_handshake_unix);
        }
        let fields: [PeerField; 3] = [
            (SENT.0, SENT.1, MetricType::Counter, |p| p.sent_bytes),
            (RECV.0, RECV.1, MetricType::Counter, |p| p.received_bytes),
            (HS.0, HS.1, MetricType::Gauge, |p| p.latest_handshake_unix),
        ];
        for (name, help, ty, value) in fields {
            let mut family = enc.encode_descriptor(name, help, None, ty)?;
            for peer in &s.peers {
                let labels = [("public_key", peer.public_key.as_str())];
                let metric = family.encode_family(&labels)?;
                match ty {
                    MetricType::Counter => ConstCounter::new(value(peer)).encode(metric)?,
                    _ => ConstGauge::new(value(peer)).encode(metric)?,
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let metric = ConstCounter::new(v);
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

pub(crate) fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let metric = ConstGauge::new(v);
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// One family with a single label: a gauge or counter series per `(label value, value)`.
fn labelled(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    label: &str,
    series: &[(&str, u64)],
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, ty)?;
    for (value, v) in series {
        let labels = [(label, *value)];
        let e = family.encode_family(&labels)?;
        if matches!(ty, MetricType::Counter) {
            ConstCounter::new(*v).encode(e)?;
        } else {
            ConstGauge::new(*v).encode(e)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
