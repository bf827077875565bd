//! Publishing this relay in the network's directory (docs/directory.md): announce a signed
//! descriptor on start and every `announce-every-secs` (the ledger registers a new relay key
//! on its first valid descriptor, which proves possession of the key). The directory probes
//! the Hello port (answered in `metering_hello`) and says what it found; that goes to the log
//! (when it changes), `/status` and metrics.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use ferry_metering::RelayIdentity;
use ferry_receipts::{AdvertisedLimits, PublicKey, RelayDescriptor, Signature};
use ferry_store::LedgerClient;
use ferry_store::market::{self, MarketError};

use crate::config_directory::DirectorySettings;
use crate::metering::lock;

/// What the agent knows about its listing (read by `/status` and `/metrics`).
#[derive(Debug, Default)]
pub(crate) struct DirectoryState {
    /// The agent announces (a `[directory]` section).
    pub(crate) announcing: bool,
    /// The last announce listed the relay.
    pub(crate) listed: bool,
    /// Unix time of the last answered announce.
    pub(crate) last_announce: Option<u64>,
    /// The directory's findings: (code, words).
    pub(crate) findings: Vec<(String, String)>,
    /// Why the last announce failed, if it did.
    pub(crate) error: Option<String>,
    /// The address the directory saw the announce come from.
    pub(crate) seen_from: Option<String>,
    /// Best probe round trip.
    pub(crate) probe_rtt_micros: Option<u64>,
    /// Answered announces.
    pub(crate) announces_ok: u64,
    /// Failed announces.
    pub(crate) announces_failed: u64,
    /// Directory probes answered on the Hello port.
    pub(crate) probes_answered: u64,
    /// Probe datagrams not answered (not for us, not from our ledger, stale).
    pub(crate) probes_refused: u64,
}

impl DirectoryState {
    /// A probe arrived on the Hello port and was answered (or not).
    pub(crate) fn probe(&mut self, answered: bool) {
        if answered {
            self.probes_answered += 1;
        } else {
            self.probes_refused += 1;
        }
    }

    /// The metrics view.
    pub(crate) fn stats(&self) -> ferry_telemetry::metrics::DirectoryStats {
        ferry_telemetry::metrics::DirectoryStats {
            listed: self.listed,
            findings: self.findings.iter().map(|(c, _)| c.clone()).collect(),
            announces_ok: self.announces_ok,
            announces_failed: self.announces_failed,
            probes_answered: self.probes_answered,
            probes_refused: self.probes_refused,
        }
    }
}

/// Everything an announce needs.
pub(crate) struct Announcer {
    pub(crate) settings: DirectorySettings,
    pub(crate) identity: RelayIdentity,
    pub(crate) wg_key: [u8; 32],
    pub(crate) wg_port: u16,
    pub(crate) hello_port: u16,
    /// Advertised limits: per-client bandwidth (`[limits] client-rate-mbit`, or the total
    /// `share-down-mbit` if lower; 0 = not limited) and the blocked exit ports (`[egress]
    /// block-ports`); the quota and schedule are filled in from `share` at each announce.
    pub(crate) limits: AdvertisedLimits,
    pub(crate) ledger: LedgerClient,
    pub(crate) state: Arc<Mutex<DirectoryState>>,
    pub(crate) share: Arc<Mutex<crate::sharing::ShareShell>>,
}

/// The descriptor this relay announces at `now` (pure: addresses and price are decided).
#[allow(clippy::too_many_arguments)]
pub(crate) fn descriptor(
    s: &DirectorySettings,
    id: &RelayIdentity,
    wg_key: [u8; 32],
    ipv4: Option<SocketAddrV4>,
    ipv6: Option<SocketAddrV6>,
    hello_port: u16,
    price: u64,
    limits: AdvertisedLimits,
    now: u64,
) -> RelayDescriptor {
    RelayDescriptor {
        network_id: id.network_id,
        relay_key: PublicKey([0; 32]),
        wg_key,
        ipv4,
        ipv6,
        hello_port,
        price_micros_per_gib: price,
        limits,
        country: s.country,
        region: s.region.clone(),
        software: concat!("ferry-agent/", env!("CARGO_PKG_VERSION")).into(),
        abuse_contact: s.abuse_contact.clone(),
        issued_at: now,
        expires_at: now + s.ttl_secs,
        signature: Signature::ZERO,
    }
    .sign(&id.key)
}

impl Announcer {
    /// The signed descriptor for now: the configured or detected address, the configured or
    /// network price.
    pub(crate) async fn current(&self, price: &mut Option<u64>) -> Result<RelayDescriptor> {
        let s = &self.settings;
        let p = match (s.price_micros_per_gib, *price) {
            (Some(p), _) | (None, Some(p)) => p,
            (None, None) => {
                let p = market::network_price(&self.ledger)
                    .await
                    .context("asking the ledger for the network price")?;
                *price = Some(p);
                p
            }
        };
        let v4 = match s.public_address {
            Some(a) => a,
            None => self.outbound_v4()?,
        };
        let ipv4 = Some(SocketAddrV4::new(v4, self.wg_port));
        let ipv6 = s
            .public_address_v6
            .map(|a| SocketAddrV6::new(a, self.wg_port, 0, 0));
        let now = ferry_store::unix_now();
        let mut limits = self.limits.clone();
        {
            let share = crate::metering::lock(&self.share);
            let (rules, tz) = share.rules();
            limits.monthly_quota_gib = rules.advertised_monthly_gib();
            limits.schedule = rules.advertised_week(tz.as_ref(), i64::try_from(now).unwrap_or(0));
        }
        Ok(descriptor(
            s,
            &self.identity,
            self.wg_key,
            ipv4,
            ipv6,
            self.hello_port,
            p,
            limits,
            now,
        ))
    }

    /// The source address the kernel picks towards the ledger (no packet is sent): the WAN
    /// address, or a private one behind another NAT (the directory then says so).
    fn outbound_v4(&self) -> Result<Ipv4Addr> {
        use std::net::ToSocketAddrs as _;
        let authority = self.ledger.url().authority();
        // Blocking resolution, once per announce: a name (rare for a ledger URL) briefly holds
        // one worker; std's resolver is already linked, tokio's would add to the binary.
        let target = authority
            .to_socket_addrs()
            .with_context(|| format!("resolving the ledger {authority}"))?
            .find(SocketAddr::is_ipv4)
            .with_context(|| format!("the ledger {authority} has no IPv4 address"))?;
        let sock = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        sock.connect(target)?;
        match sock.local_addr()?.ip() {
            IpAddr::V4(a) => Ok(a),
            IpAddr::V6(_) => anyhow::bail!("no IPv4 route to the ledger"),
        }
    }

    /// One announce (the ledger registers a new relay key on its first valid, signed
    /// descriptor); returns when to announce next.
    async fn announce_once(&self, price: &mut Option<u64>) -> Result<Duration> {
        let s = &self.settings;
        let d = self.current(price).await?;
        match market::announce(&self.ledger, &d).await {
            Ok(r) => {
                self.record(&r);
                Ok(s.every)
            }
            Err(MarketError::Refused { code, message, .. }) if code == "announce_too_soon" => {
                tracing::debug!(%message, "announce too soon after the last one; retrying");
                Ok(Duration::from_secs(35))
            }
            Err(e) => Err(e).context("announcing the descriptor"),
        }
    }

    fn record(&self, r: &ferry_ledger_api::AnnounceResponse) {
        let findings: Vec<(String, String)> = r
            .diagnosis
            .iter()
            .map(|d| (d.code.clone(), d.message.clone()))
            .collect();
        let mut st = lock(&self.state);
        let changed =
            st.listed != r.listed || st.findings != findings || st.last_announce.is_none();
        if changed {
            if r.listed {
                tracing::info!(rtt_us = r.probe_rtt_micros, "listed in the relay directory");
            } else {
                tracing::warn!("not listed in the relay directory: clients cannot find this relay");
            }
            for (_, words) in &findings {
                tracing::warn!("directory: {words}");
            }
        }
        st.listed = r.listed;
        st.findings = findings;
        st.error = None;
        st.seen_from = Some(r.seen_from.clone());
        st.probe_rtt_micros = r.probe_rtt_micros;
        st.last_announce = Some(ferry_store::unix_now());
        st.announces_ok += 1;
    }
}

/// A descriptor as JSON (its fields, id and canonical encoding).
pub(crate) fn describe(d: &RelayDescriptor) -> String {
    use base64::Engine as _;
    let v = serde_json::json!({
        "relay_key": d.relay_key.to_hex(),
        "wireguard_key": base64::engine::general_purpose::STANDARD.encode(d.wg_key),
        "ipv4": d.ipv4.map(|a| a.to_string()),
        "ipv6": d.ipv6.map(|a| a.to_string()),
        "hello_port": d.hello_port,
        "price_micros_per_gib": d.price_micros_per_gib,
        "country": d.country_code(),
        "region": d.region,
        "max_mbit": d.limits.max_mbit,
        "monthly_quota_gib": d.limits.monthly_quota_gib,
        "shared_hours_per_week": d.limits.shared_hours(),
        "blocked_ports": d.limits.blocked_ports,
        "software": d.software,
        "abuse_contact": d.abuse_contact,
        "issued_at": d.issued_at,
        "expires_at": d.expires_at,
        "id": d.id().to_hex(),
        "encoding": base64::engine::general_purpose::STANDARD.encode(d.encode()),
    });
    // Compact: the pretty printer would be one more serializer in the router binary.
    v.to_string()
}

/// Announces until the task is dropped: at the configured interval, sooner after failures
/// (30 s, then doubling up to the interval).
pub(crate) async fn run(a: Announcer) {
    lock(&a.state).announcing = true;
    let mut price = None;
    let mut retry = Duration::from_secs(30);
    loop {
        let wait = match a.announce_once(&mut price).await {
            Ok(next) => {
                retry = Duration::from_secs(30);
                next
            }
            Err(e) => {
                let e = format!("{e:#}");
                let mut st = lock(&a.state);
                if st.error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(error = %e, "directory announce failed; retrying");
                }
                st.error = Some(e);
                st.announces_failed += 1;
                let wait = retry;
                retry = (retry * 2).min(a.settings.every);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}
