//! Config sections for paid sessions: `[identity]`, `[network]`, `[metering]`, `[paid]`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferry_metering::{CONTROL_PORT, CreditMode, RelayConfig as MeterConfig};
use ferry_receipts::{NetworkId, PublicKey};
use serde::Deserialize;

const MIB: f64 = 1_048_576.0;

/// `[identity]`: the relay's Ed25519 receipts key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Identity {
    /// base64 Ed25519 seed (ferry-keys format), mode 0600.
    pub key_file: PathBuf,
}

/// `[network]`: which Ferry network and ledger this relay serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Network {
    /// Network id, 32 hex characters.
    pub id: String,
    /// Ledger Ed25519 public key, 64 hex characters (vouchers are signed with it).
    pub ledger_key: String,
    /// `http://host:port` or `https://host[:port]` of the ledger; without it receipts stay in
    /// the store.
    #[serde(default)]
    pub ledger_url: Option<String>,
    /// PEM CA certificate(s) an `https://` ledger's certificate must chain to (instead of the
    /// bundled web roots), for a ledger with a private CA.
    #[serde(default)]
    pub ledger_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CreditModeCfg {
    Stop,
    Throttle,
}

/// `[metering]`: receipt cadence, credit window and the receipt store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Metering {
    /// Directory of the receipt store (`receipts.log`); on flash, never /tmp.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_every_mib")]
    pub receipt_every_mib: f64,
    #[serde(default = "default_every_secs")]
    pub receipt_every_secs: u64,
    #[serde(default = "default_window_mib")]
    pub credit_window_mib: f64,
    #[serde(default = "default_credit_mode")]
    pub mode: CreditModeCfg,
    #[serde(default = "default_free_rate")]
    pub free_rate_kbit: u64,
    #[serde(default = "default_cosign_timeout")]
    pub cosign_timeout_secs: u64,
    #[serde(default = "default_close_grace")]
    pub close_grace_secs: u64,
    /// Test builds only (`--features test-hooks`): claim this many percent more bytes than
    /// were forwarded, to test that clients refuse over-claiming relays.
    #[cfg(feature = "test-hooks")]
    #[serde(default)]
    pub test_overclaim_percent: u64,
}

impl Default for Metering {
    fn default() -> Self {
        Self {
            state_dir: default_state_dir(),
            receipt_every_mib: default_every_mib(),
            receipt_every_secs: default_every_secs(),
            credit_window_mib: default_window_mib(),
            mode: default_credit_mode(),
            free_rate_kbit: default_free_rate(),
            cosign_timeout_secs: default_cosign_timeout(),
            close_grace_secs: default_close_grace(),
            #[cfg(feature = "test-hooks")]
            test_overclaim_percent: 0,
        }
    }
}

/// `[paid]`: whether paying clients are admitted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Paid {
    #[serde(default)]
    pub enabled: bool,
    /// Public UDP address for `Hello` (default: the WireGuard listen IP, port 51821).
    #[serde(default)]
    pub hello_listen: Option<String>,
    /// Live sessions one voucher may pay for at once on this relay.
    #[serde(default = "default_per_voucher")]
    pub max_sessions_per_voucher: usize,
    /// Live sessions one client identity may hold at once on this relay.
    #[serde(default = "default_per_client")]
    pub max_sessions_per_client: usize,
    /// A session that carried no traffic this long after it opened is closed (and so never
    /// resumed after a restart).
    #[serde(default = "default_unused_timeout")]
    pub unused_session_timeout_secs: u64,
    /// A voucher whose remaining allowance on this relay is below this is refused.
    #[serde(default = "default_min_allowance")]
    pub min_allowance_mib: f64,
    /// This relay's price, micros per GiB (signed into every accept and receipt; clients
    /// whose voucher allows less are refused). Default: the network price, asked from the
    /// ledger at start.
    #[serde(default)]
    pub price_micros_per_gib: Option<u64>,
}

/// Limits on paid sessions (against one cheap voucher crowding out the relay).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionLimits {
    /// Live sessions per voucher.
    pub per_voucher: usize,
    /// Live sessions per client identity key.
    pub per_client: usize,
    /// Sessions without traffic are closed after this.
    pub unused_timeout: Duration,
    /// Smallest remaining allowance that opens a session.
    pub min_allowance_bytes: u64,
    /// The relay's configured price (`None`: the network price, learned from the ledger).
    pub price_micros_per_gib: Option<u64>,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            per_voucher: default_per_voucher(),
            per_client: default_per_client(),
            unused_timeout: Duration::from_secs(default_unused_timeout()),
            min_allowance_bytes: 1 << 20,
            price_micros_per_gib: None,
        }
    }
}

fn default_per_voucher() -> usize {
    2
}
fn default_per_client() -> usize {
    2
}
fn default_unused_timeout() -> u64 {
    60
}
fn default_min_allowance() -> f64 {
    1.0
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/etc/ferry/state")
}
fn default_every_mib() -> f64 {
    4.0
}
fn default_every_secs() -> u64 {
    30
}
fn default_window_mib() -> f64 {
    16.0
}
fn default_credit_mode() -> CreditModeCfg {
    CreditModeCfg::Stop
}
fn default_free_rate() -> u64 {
    256
}
fn default_cosign_timeout() -> u64 {
    60
}
fn default_close_grace() -> u64 {
    10
}

/// Validated paid-session settings (present only when `[paid] enabled = true`).
#[derive(Debug, Clone)]
pub struct PaidSettings {
    pub identity_key_file: PathBuf,
    pub network_id: NetworkId,
    pub ledger_key: PublicKey,
    pub ledger_url: Option<String>,
    pub ledger_ca_file: Option<PathBuf>,
    pub store_path: PathBuf,
    pub hello_listen: SocketAddr,
    pub meter: MeterConfig,
    pub limits: SessionLimits,
    pub overclaim_percent: u64,
}

fn resolve(base_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

fn mib_to_bytes(field: &str, v: f64) -> Result<u64> {
    if !(v.is_finite() && v > 0.0 && v <= 1_048_576.0) {
        bail!("metering.{field}: {v} must be > 0 and at most 1048576 (MiB)");
    }
    // In range by the check above; `as` saturates anyway.
    Ok((v * MIB).round() as u64)
}

fn min_allowance(mib: f64) -> Result<u64> {
    if !(mib.is_finite() && (0.0..=1_048_576.0).contains(&mib)) {
        bail!("paid.min-allowance-mib: {mib} must be between 0 and 1048576 (MiB)");
    }
    // In range by the check above; `as` saturates anyway.
    Ok((mib * MIB).round() as u64)
}

/// Validates the paid sections. `None` when paid sessions are disabled.
pub fn validate(
    identity: Option<&Identity>,
    network: Option<&Network>,
    metering: &Metering,
    paid: Option<&Paid>,
    wg_listen: SocketAddr,
    base_dir: &Path,
) -> Result<Option<PaidSettings>> {
    let every = mib_to_bytes("receipt-every-mib", metering.receipt_every_mib)?;
    let window = mib_to_bytes("credit-window-mib", metering.credit_window_mib)?;
    let mode = match metering.mode {
        CreditModeCfg::Stop => CreditMode::Stop,
        CreditModeCfg::Throttle => {
            if metering.free_rate_kbit == 0 {
                bail!("metering.free-rate-kbit: must be > 0 in throttle mode");
            }
            CreditMode::Throttle {
                free_rate_bytes_per_sec: metering.free_rate_kbit.saturating_mul(125),
            }
        }
    };
    let meter = MeterConfig {
        receipt_every_bytes: every,
        receipt_every: Duration::from_secs(metering.receipt_every_secs),
        credit_window_bytes: window,
        mode,
        cosign_timeout: Duration::from_secs(metering.cosign_timeout_secs),
        close_grace: Duration::from_secs(metering.close_grace_secs),
        ..MeterConfig::default()
    };
    meter.validate().map_err(|e| {
        anyhow::anyhow!(
            "metering: {e} (receipt-every-mib must be <= credit-window-mib, durations > 0)"
        )
    })?;
    let Some(paid) = paid.filter(|p| p.enabled) else {
        return Ok(None);
    };
    let identity = identity.context("[paid] enabled needs [identity] key-file")?;
    let network = network.context("[paid] enabled needs [network] id and ledger-key")?;
    let network_id = NetworkId::from_hex(network.id.trim())
        .with_context(|| format!("network.id: {:?} is not 32 hex characters", network.id))?;
    let ledger_key = PublicKey::from_hex(network.ledger_key.trim()).with_context(|| {
        format!(
            "network.ledger-key: {:?} is not 64 hex characters",
            network.ledger_key
        )
    })?;
    let ledger_ca_file = network
        .ledger_ca_file
        .as_ref()
        .map(|f| resolve(base_dir, f));
    if let Some(u) = &network.ledger_url {
        ferry_store::HttpLedger::with_ca_file(
            u,
            ledger_ca_file.as_deref(),
            Duration::from_secs(10),
        )
        .map_err(|e| anyhow::anyhow!("network.ledger-url: {e}"))?;
    }
    let hello_listen = match &paid.hello_listen {
        Some(s) => s
            .parse()
            .with_context(|| format!("paid.hello-listen: {s:?} is not an address:port"))?,
        None => SocketAddr::new(wg_listen.ip(), CONTROL_PORT),
    };
    if identity.key_file.as_os_str().is_empty() {
        bail!("identity.key-file: must not be empty");
    }
    if paid.max_sessions_per_voucher == 0 || paid.max_sessions_per_client == 0 {
        bail!("paid.max-sessions-per-voucher and paid.max-sessions-per-client: must be at least 1");
    }
    if paid.unused_session_timeout_secs == 0 {
        bail!("paid.unused-session-timeout-secs: must be at least 1");
    }
    match paid.price_micros_per_gib {
        Some(p) if p == 0 || p > ferry_receipts::MAX_LEDGER_VALUE => {
            bail!("paid.price-micros-per-gib: must be in 1..2^63")
        }
        None if network.ledger_url.is_none() => bail!(
            "paid.price-micros-per-gib: set this relay's price (there is no network.ledger-url \
             to learn the network price from)"
        ),
        _ => {}
    }
    let limits = SessionLimits {
        price_micros_per_gib: paid.price_micros_per_gib,
        per_voucher: paid.max_sessions_per_voucher,
        per_client: paid.max_sessions_per_client,
        unused_timeout: Duration::from_secs(paid.unused_session_timeout_secs),
        min_allowance_bytes: min_allowance(paid.min_allowance_mib)?,
    };
    #[cfg(feature = "test-hooks")]
    let overclaim_percent = metering.test_overclaim_percent;
    #[cfg(not(feature = "test-hooks"))]
    let overclaim_percent = 0;
    Ok(Some(PaidSettings {
        identity_key_file: resolve(base_dir, &identity.key_file),
        network_id,
        ledger_key,
        ledger_url: network.ledger_url.clone(),
        ledger_ca_file,
        store_path: resolve(base_dir, &metering.state_dir).join("receipts.log"),
        hello_listen,
        meter,
        limits,
        overclaim_percent,
    }))
}
