//! `[metrics]`: the agent's `/metrics`, `/healthz` and `/status` (ferry-telemetry's server).
//!
//! Nothing here runs per packet: at scrape time the snapshot closure locks the relay once,
//! copies its counters, and fills a `ferry_telemetry::Snapshot`. `/status` is the JSON document
//! the LuCI page shows (fields documented in docs/openwrt.md).
//!
//! Listen addresses default to the router's LAN (private IPv4) addresses plus 127.0.0.1, port
//! 9586: reachable from the household, never from the WAN or through the tunnel (the relay's
//! policy blocks router addresses and tunnel ports other than `tunnel-services`).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferry_dns::ForwarderStats;
use ferry_relay_core::{DropReason as RelayDrop, PeerCounters, Stats};
use ferry_relay_io::SharedRelay;
use ferry_telemetry::server::DEFAULT_PORT;
use ferry_telemetry::{
    DnsStats, DropReason, FsyncRecorder, Metrics, MetricsConfig, MetricsServer, PeerTraffic,
    ServerConfig, Snapshot, StatusSource,
};
// portable-atomic: 32-bit MIPS routers have no std AtomicU64 (openwrt/tests/test-atomics.sh).
use portable_atomic::{AtomicU64, Ordering};
use serde_json::json;

use crate::config::Validated;

/// A session counts as active this long after its last handshake (WireGuard's
/// REJECT_AFTER_TIME: without a new handshake the session can no longer carry data).
const SESSION_ACTIVE: Duration = Duration::from_secs(180);

/// What `/status` reports besides live relay state.
#[derive(Debug, Clone)]
pub(crate) struct StaticInfo {
    /// Relay public key (base64).
    pub(crate) public_key: String,
    /// WireGuard listen address.
    pub(crate) listen: String,
    /// `tun` or `userspace`.
    pub(crate) egress_mode: &'static str,
    /// Configured peer names by public key (paying session peers have none).
    pub(crate) names: HashMap<[u8; 32], String>,
}

/// The metrics side of a running agent.
pub(crate) struct Observability {
    /// The store's fsync latency recorder (also reachable through [`fsync_timer`]).
    #[allow(dead_code)]
    pub(crate) fsync: FsyncRecorder,
}

/// Counter state that makes the aggregate byte counters monotonic across peer removals
/// (a removed peer's last counters are kept in `retired`).
#[derive(Default)]
struct Totals {
    retired: PeerCounters,
    last: HashMap<[u8; 32], PeerCounters>,
}

impl Totals {
    /// Folds the current per-peer counters in; returns (received, sent) since start.
    fn update(&mut self, current: &[([u8; 32], PeerCounters)]) -> (u64, u64) {
        let now: HashMap<[u8; 32], PeerCounters> = current.iter().copied().collect();
        for (key, old) in &self.last {
            // Gone, or re-added (counters restarted): keep what it had counted.
            let restarted = now.get(key).is_some_and(|c| {
                c.from_client_bytes < old.from_client_bytes
                    || c.to_client_bytes < old.to_client_bytes
            });
            if restarted || !now.contains_key(key) {
                add(&mut self.retired, old);
            }
        }
        let mut sum = self.retired;
        for c in now.values() {
            add(&mut sum, c);
        }
        self.last = now;
        (sum.from_client_bytes, sum.to_client_bytes)
    }
}

fn add(acc: &mut PeerCounters, c: &PeerCounters) {
    acc.from_client_bytes = acc.from_client_bytes.saturating_add(c.from_client_bytes);
    acc.to_client_bytes = acc.to_client_bytes.saturating_add(c.to_client_bytes);
}

/// Completes when the agent stops.
pub(crate) type StopFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Set once metrics are up; the store's log file reports fsync latency into it.
static FSYNC: std::sync::OnceLock<FsyncRecorder> = std::sync::OnceLock::new();

/// Wraps the receipt store's files so each `fdatasync` is timed into
/// `ferry_store_fsync_seconds` (pass to `Store::open_with`).
pub(crate) fn fsync_timer() -> ferry_store::FileWrapper {
    Arc::new(|f| Box::new(TimedFile(f)) as Box<dyn ferry_store::LogFile>)
}

struct TimedFile(std::fs::File);

impl ferry_store::LogFile for TimedFile {
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        std::io::Write::write_all(&mut self.0, buf)
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        let started = Instant::now();
        let r = self.0.sync_data();
        if let Some(rec) = FSYNC.get() {
            rec.record(started.elapsed());
        }
        r
    }

    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
}

/// Receipt-exchange counters bumped by the metering tasks (never per data packet).
#[derive(Debug, Default)]
pub(crate) struct ReceiptCounters {
    issued: AtomicU64,
    cosigned: AtomicU64,
    rejected: AtomicU64,
    earned: AtomicU64,
}

impl ReceiptCounters {
    /// A signed receipt was sent to a client.
    pub(crate) fn issued(&self) {
        self.issued.fetch_add(1, Ordering::Relaxed);
    }

    /// A co-signed receipt covering `total` bytes was stored; the session's previous stored
    /// one covered `before` (cumulative counters: only the difference is newly earned).
    pub(crate) fn cosigned(&self, total: u64, before: u64) {
        self.cosigned.fetch_add(1, Ordering::Relaxed);
        self.earned
            .fetch_add(total.saturating_sub(before), Ordering::Relaxed);
    }

    /// A client refused a receipt (`ReceiptRejected`).
    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }
}

/// Paid-session state read at scrape time (receipts pending/submitted, unacknowledged bytes).
#[derive(Clone)]
pub(crate) struct MeteringSource {
    pub(crate) shared: Arc<crate::metering::Shared>,
    pub(crate) relay: SharedRelay,
    pub(crate) submitted: Option<Arc<Mutex<ferry_store::SubmitterStats>>>,
}

impl MeteringSource {
    fn fill(&self, s: &mut Snapshot) {
        use crate::metering::lock;
        s.receipts.pending = lock(&self.shared.store).pending_count() as u64;
        s.receipts.submitted = self.submitted.as_ref().map_or(0, |m| lock(m).accepted);
        s.unacknowledged_bytes = lock(&self.relay)
            .hook::<crate::sessions::PaidSessions>()
            .map_or(0, crate::sessions::PaidSessions::unacknowledged_bytes);
        let c = &self.shared.counters;
        s.receipts.issued = c.issued.load(Ordering::Relaxed);
        s.receipts.cosigned = c.cosigned.load(Ordering::Relaxed);
        s.receipts.rejected = c.rejected.load(Ordering::Relaxed);
        s.earned_bytes = c.earned.load(Ordering::Relaxed);
        let d = lock(&self.shared.directory);
        s.directory = d.announcing.then(|| d.stats());
        s.sharing = Some(lock(&self.shared.share).view().stats());
    }
}

/// A stop switch (send `true`) and a factory of futures completing when it is thrown.
pub(crate) fn stopper() -> (
    tokio::sync::watch::Sender<bool>,
    impl Fn() -> StopFuture + Clone,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let make = move || -> StopFuture {
        let mut rx = rx.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        })
    };
    (tx, make)
}

/// Starts the metrics server if `[metrics] enabled`. Explicit `listen` addresses must all
/// bind; of the defaults, those that cannot be bound are skipped with a warning.
pub(crate) async fn start(
    cfg: &Validated,
    relay: SharedRelay,
    dns: Option<Arc<ForwarderStats>>,
    metering: Option<MeteringSource>,
    info: StaticInfo,
    shutdown: &impl Fn() -> StopFuture,
) -> Result<Option<Observability>> {
    let mc: &MetricsConfig = &cfg.raw.metrics;
    if !mc.enabled {
        return Ok(None);
    }
    let mut metrics = Metrics::new(mc);
    let per_peer = metrics.per_peer_labels();
    let fsync = metrics.fsync_recorder();
    let _ = FSYNC.set(fsync.clone());
    let totals = Mutex::new(Totals::default());
    let snap_relay = relay.clone();
    let status_metering = metering.clone();
    metrics.register_agent(move || {
        let mut s = snapshot(&snap_relay, dns.as_deref(), per_peer, &totals);
        if let Some(m) = &metering {
            m.fill(&mut s);
        }
        s
    });
    let metrics = Arc::new(metrics);
    let started = Instant::now();
    let status: StatusSource =
        Arc::new(move || status(&relay, &info, started, status_metering.as_ref()));

    let explicit = !mc.listen.is_empty();
    let defaults = default_listen(&cfg.tunnel_ips());
    let server_cfg = ServerConfig::from_config(mc, &defaults).context("[metrics]")?;
    let mut addrs = Vec::new();
    let groups: Vec<Vec<SocketAddr>> = if explicit {
        vec![server_cfg.listen.clone()]
    } else {
        server_cfg.listen.iter().map(|a| vec![*a]).collect()
    };
    for listen in groups {
        let one = ServerConfig {
            listen: listen.clone(),
            token: server_cfg.token.clone(),
        };
        match MetricsServer::bind(one, metrics.clone(), Some(status.clone())).await {
            Ok(server) => {
                addrs.extend(server.local_addrs());
                let stop = shutdown();
                tokio::spawn(async move {
                    if let Err(e) = server.serve(stop).await {
                        tracing::warn!(error = %e, "metrics server stopped");
                    }
                });
            }
            Err(e) if explicit => return Err(e).context("[metrics] listen"),
            Err(e) => tracing::warn!(error = %e, "metrics: skipping a default listen address"),
        }
    }
    if addrs.is_empty() {
        tracing::warn!("metrics enabled but no listen address could be bound");
    }
    Ok(Some(Observability { fsync }))
}

/// The router's private IPv4 (LAN) addresses other than the tunnel's and other than those on
/// an interface with a default route (a WAN behind an ISP modem has a private address too),
/// then 127.0.0.1; all on port 9586.
pub(crate) fn default_listen(tunnel_ips: &[IpAddr]) -> Vec<SocketAddr> {
    let host = ferry_relay_io::interface_addresses().unwrap_or_default();
    lan_listen(
        &host,
        tunnel_ips,
        &ferry_relay_io::default_route_interfaces(),
    )
}

fn lan_listen(host: &[(String, IpAddr)], tunnel_ips: &[IpAddr], wan: &[String]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = host
        .iter()
        .filter(|(iface, ip)| {
            matches!(ip, IpAddr::V4(v4) if v4.is_private())
                && !tunnel_ips.contains(ip)
                && !wan.contains(iface)
        })
        .map(|(_, ip)| SocketAddr::new(*ip, DEFAULT_PORT))
        .collect();
    out.sort_unstable();
    out.dedup();
    out.push(ferry_telemetry::server::DEFAULT_LISTEN);
    out
}

use ferry_store::unix_now;

struct PeerRow {
    key: [u8; 32],
    endpoint: Option<SocketAddr>,
    counters: PeerCounters,
    since_handshake: Option<Duration>,
    /// A paying client (never named in /status).
    paid: bool,
}

/// Copies what we need under one short lock.
fn read_relay(relay: &SharedRelay) -> Option<(Stats, Vec<PeerRow>)> {
    let r = relay.lock().ok()?;
    let rows = r
        .peers()
        .map(|p| PeerRow {
            key: p.public_key,
            endpoint: p.endpoint,
            counters: p.counters,
            since_handshake: r.tunnel_stats(p.id).and_then(|t| t.since_last_handshake),
            paid: p.kind == ferry_relay_core::PeerKind::Paid,
        })
        .collect();
    Some((r.stats().clone(), rows))
}

fn snapshot(
    relay: &SharedRelay,
    dns: Option<&ForwarderStats>,
    per_peer: bool,
    totals: &Mutex<Totals>,
) -> Snapshot {
    let mut s = Snapshot::default();
    s.dns = dns.map(|d| {
        let d = d.snapshot();
        DnsStats {
            queries: d.queries,
            upstream_failures: d.upstream_failures,
        }
    });
    let Some((stats, rows)) = read_relay(relay) else {
        return s;
    };
    let now = unix_now();
    let counters: Vec<_> = rows.iter().map(|p| (p.key, p.counters)).collect();
    if let Ok(mut t) = totals.lock() {
        (s.received_bytes, s.sent_bytes) = t.update(&counters);
    }
    let handshake_unix = |p: &PeerRow| {
        p.since_handshake
            .map_or(0, |d| now.saturating_sub(d.as_secs()))
    };
    s.latest_handshake_unix = rows.iter().map(handshake_unix).max().unwrap_or(0);
    s.peers_configured = rows.len() as u64;
    s.sessions_active = rows
        .iter()
        .filter(|p| p.since_handshake.is_some_and(|d| d < SESSION_ACTIVE))
        .count() as u64;
    s.handshakes = stats.handshakes;
    for (reason, n) in stats.drop_counts() {
        s.drops.add(map_drop(reason), n);
    }
    if per_peer {
        s.peers = rows
            .iter()
            .map(|p| PeerTraffic {
                public_key: b64(&p.key),
                sent_bytes: p.counters.to_client_bytes,
                received_bytes: p.counters.from_client_bytes,
                latest_handshake_unix: handshake_unix(p),
            })
            .collect();
    }
    s
}

/// Relay-core drop reasons folded into the exported label set (by their stable names).
fn map_drop(r: RelayDrop) -> DropReason {
    match r.as_str() {
        "policy" | "tunnel_address" => DropReason::Policy,
        "allowed_ips" => DropReason::AllowedIps,
        "rate_limit" | "handshake_rate_limit" | "under_load" => DropReason::RateLimit,
        "credit_window" => DropReason::CreditWindow,
        "paid_no_session" => DropReason::PaidNoSession,
        "exit_port" => DropReason::ExitPort,
        "share_rate" => DropReason::ShareRate,
        "quota" => DropReason::Quota,
        "unknown_peer" => DropReason::UnknownPeer,
        "malformed" => DropReason::Malformed,
        _ => DropReason::Other,
    }
}

fn b64(key: &[u8; 32]) -> String {
    ferry_keys::WgPublicKey(*key).to_base64()
}

/// The `/status` document for LuCI (docs/openwrt.md). Trusted peers (the operator's own
/// devices) are listed; paying clients only as counts: their keys and addresses are never
/// shown (with or without a token).
fn status(
    relay: &SharedRelay,
    info: &StaticInfo,
    started: Instant,
    metering: Option<&MeteringSource>,
) -> serde_json::Value {
    let rows = read_relay(relay).map(|(_, rows)| rows).unwrap_or_default();
    let paid_peers = rows.iter().filter(|p| p.paid).count();
    let peers: Vec<_> = rows
        .iter()
        .filter(|p| !p.paid)
        .map(|p| {
            json!({
                "name": info.names.get(&p.key),
                "public_key": b64(&p.key),
                "endpoint": p.endpoint.map(|e| e.to_string()),
                "last_handshake_secs": p.since_handshake.map(|d| d.as_secs()),
                "rx_bytes": p.counters.from_client_bytes,
                "tx_bytes": p.counters.to_client_bytes,
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": started.elapsed().as_secs(),
        "public_key": info.public_key,
        "listen": info.listen,
        "egress_mode": info.egress_mode,
        "peers": peers,
        "paid": metering.map(|m| paid_status(m, paid_peers)),
    })
}

/// Counts of a paid relay for the status page: sessions, earnings, receipts, ledger contact.
fn paid_status(m: &MeteringSource, sessions: usize) -> serde_json::Value {
    use crate::metering::lock;
    let pending = lock(&m.shared.store).pending_count();
    let c = &m.shared.counters;
    let sub = m.submitted.as_ref().map(|s| lock(s).clone());
    json!({
        "sessions": sessions,
        "paused": m.shared.not_sharing() == Some(ferry_agent::share::Sharing::Paused),
        "sharing": crate::metering::lock(&m.shared.share).view().json(),
        "earned_bytes": c.earned.load(Ordering::Relaxed),
        "receipts_cosigned": c.cosigned.load(Ordering::Relaxed),
        "receipts_pending": pending,
        "receipts_submitted": sub.as_ref().map(|s| s.accepted),
        "ledger_configured": sub.is_some(),
        "last_ledger_contact_secs": sub.as_ref().and_then(|s| s.last_contact).map(|t| t.elapsed().as_secs()),
        "ledger_error": sub.and_then(|s| s.last_error),
        "directory": directory_status(&lock(&m.shared.directory)),
    })
}

/// The directory listing in words (`null` when the relay does not announce).
fn directory_status(d: &crate::directory::DirectoryState) -> serde_json::Value {
    if !d.announcing {
        return serde_json::Value::Null;
    }
    json!({
        "listed": d.listed,
        "last_announce_unix": d.last_announce,
        "seen_from": d.seen_from,
        "probe_rtt_micros": d.probe_rtt_micros,
        "problems": d.findings.iter().map(|(code, message)| json!({"code": code, "message": message})).collect::<Vec<_>>(),
        "error": d.error,
        "probes_answered": d.probes_answered,
    })
}

/// Peer names from the config, keyed by public key.
pub(crate) fn peer_names(cfg: &Validated) -> HashMap<[u8; 32], String> {
    cfg.peers
        .iter()
        .map(|p| (*p.public_key.as_bytes(), p.name.clone()))
        .collect()
}

/// Drop-reason mapping as a table (for docs and the test below).
#[cfg(test)]
fn drop_table() -> std::collections::BTreeMap<&'static str, &'static str> {
    RelayDrop::ALL
        .iter()
        .map(|r| (r.as_str(), map_drop(*r).as_label()))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn status_lists_trusted_peers_but_never_a_paying_clients_key_or_address() {
        use ferry_relay_core::{PeerConfig, PeerKind, PublicKey, StaticSecret};
        let mut relay = crate::test_support::relay(4);
        let peer = |seed: u8, ip: &str| PeerConfig {
            public_key: PublicKey::from(&StaticSecret::from([seed; 32])),
            allowed_ips: vec![ip.parse().unwrap()],
            preshared_key: None,
            persistent_keepalive: None,
        };
        relay.add_peer(peer(2, "10.77.0.2/32")).unwrap();
        relay
            .add_peer_as(peer(3, "10.77.0.3/32"), PeerKind::Paid)
            .unwrap();
        let paid_key = b64(PublicKey::from(&StaticSecret::from([3u8; 32])).as_bytes());
        let shared = std::sync::Arc::new(std::sync::Mutex::new(relay));
        let info = StaticInfo {
            public_key: "k".into(),
            listen: "0.0.0.0:51820".into(),
            egress_mode: "tun",
            names: HashMap::new(),
        };
        let doc = status(&shared, &info, Instant::now(), None);
        let peers = doc["peers"].as_array().unwrap();
        assert_eq!(peers.len(), 1, "only the trusted peer: {doc}");
        assert!(!doc.to_string().contains(&paid_key), "{doc}");
        assert!(doc["paid"].is_null(), "no metering: no paid block");
    }

    fn c(from: u64, to: u64) -> PeerCounters {
        PeerCounters {
            from_client_bytes: from,
            to_client_bytes: to,
            ..PeerCounters::default()
        }
    }

    #[test]
    fn store_fsyncs_are_timed_into_the_histogram() {
        let metrics = Metrics::new(&MetricsConfig::default());
        let _ = FSYNC.set(metrics.fsync_recorder());
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) =
            ferry_store::Store::open_with(dir.path().join("receipts.log"), fsync_timer()).unwrap();
        store
            .append(ferry_store::Record::Submitted {
                session_id: ferry_receipts::SessionId([7; 16]),
                seq: 1,
            })
            .unwrap();
        let text = metrics.encode().unwrap();
        let count: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("ferry_store_fsync_seconds_count "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(count >= 1, "{text}");
    }

    #[test]
    fn totals_stay_monotonic_when_peers_leave_or_restart() {
        let mut t = Totals::default();
        assert_eq!(
            t.update(&[([1; 32], c(10, 100)), ([2; 32], c(5, 50))]),
            (15, 150)
        );
        // Peer 2 removed: its bytes stay counted.
        assert_eq!(t.update(&[([1; 32], c(12, 120))]), (17, 170));
        // Peer 1 re-added (counters restart at 3/30): the old 12/120 are kept.
        assert_eq!(t.update(&[([1; 32], c(3, 30))]), (17 + 3, 170 + 30));
        assert_eq!(t.update(&[]), (20, 200));
    }

    #[test]
    fn every_relay_drop_reason_maps_to_a_telemetry_label() {
        let t = drop_table();
        assert_eq!(t.len(), RelayDrop::ALL.len());
        assert_eq!(t["policy"], "policy");
        assert_eq!(t["tunnel_address"], "policy");
        assert_eq!(t["allowed_ips"], "allowed_ips");
        assert_eq!(t["handshake_rate_limit"], "rate_limit");
        if let Some(v) = t.get("credit_window") {
            assert_eq!(*v, "credit_window");
        }
        assert_eq!(t["paid_no_session"], "paid_no_session");
        assert_eq!(t["exit_port"], "exit_port");
        assert_eq!(t["auth"], "other");
    }

    #[test]
    fn default_listen_is_private_v4_plus_loopback_never_wan_or_tunnel() {
        let host: Vec<(String, IpAddr)> = [
            ("br-lan", "192.168.1.1"),
            ("wan", "203.0.113.5"),
            ("ferry0", "10.77.0.1"),
            ("lo", "127.0.0.1"),
            ("br-lan", "fd00::1"),
            // Behind an ISP modem the WAN address is private too: never listened on.
            ("wan", "192.168.0.2"),
        ]
        .iter()
        .map(|(i, s)| ((*i).to_owned(), s.parse().unwrap()))
        .collect();
        let tunnel = ["10.77.0.1".parse().unwrap()];
        let got = lan_listen(&host, &tunnel, &["wan".to_owned()]);
        let want: Vec<SocketAddr> = vec![
            "192.168.1.1:9586".parse().unwrap(),
            "127.0.0.1:9586".parse().unwrap(),
        ];
        assert_eq!(got, want);
    }
}
