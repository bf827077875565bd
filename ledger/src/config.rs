//! `ferry-ledger` configuration (TOML, kebab-case, unknown keys refused) and key files.
//! See config/ledger.example.toml.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_receipts::{NetworkId, SigningKey};
use serde::Deserialize;

use crate::service::Params;

/// Why the configuration or a key file is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML did not parse.
    #[error("{path}: {source}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Cause.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A secret file is readable by group or others.
    #[error("{0}: permissions too open (mode {1:o}); run chmod 600")]
    Permissions(PathBuf, u32),
}

/// Where data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// SQLite file (or `:memory:`).
    Sqlite(PathBuf),
    /// PostgreSQL connection URL.
    Postgres(String),
}

impl Database {
    /// Parses `sqlite:PATH`, `sqlite://PATH`, `sqlite::memory:`, `postgres://…` or
    /// `postgresql://…`. Relative SQLite paths are taken relative to `base`.
    pub fn parse(url: &str, base: &Path) -> Result<Self, ConfigError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        let Some(rest) = url.strip_prefix("sqlite:") else {
            return Err(ConfigError::Invalid(format!(
                "database-url must start with sqlite: or postgres:// (got {url:?})"
            )));
        };
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            return Err(ConfigError::Invalid(
                "database-url has an empty sqlite path".into(),
            ));
        }
        Ok(Self::Sqlite(if path == ":memory:" {
            PathBuf::from(path)
        } else {
            base.join(path)
        }))
    }
}

/// The ledger configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// 32 hex characters.
    pub network_id: String,
    /// HTTP listen address.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Ledger Ed25519 seed (base64 of 32 bytes), mode 0600.
    pub key_file: PathBuf,
    /// Admin bearer token file (mode 0600); env `FERRY_LEDGER_ADMIN_TOKEN` overrides.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// `sqlite:PATH` (default `sqlite:ledger.db` next to the config) or `postgres://…`.
    #[serde(default = "default_db")]
    pub database_url: String,
    /// PostgreSQL pool size.
    #[serde(default = "default_pool")]
    pub postgres_pool_size: usize,
    /// Epoch length.
    #[serde(default = "default_epoch")]
    pub epoch_seconds: u64,
    /// Voucher price.
    pub price_micros_per_gib: u64,
    /// Voucher validity.
    #[serde(default = "default_ttl")]
    pub voucher_ttl_seconds: u64,
    /// Let anyone register keys without even a signature (otherwise a self-registration
    /// signed by the key, or the admin token).
    #[serde(default)]
    pub open_registration: bool,
    /// Keys may register themselves with a request signed by that key (proof of possession).
    #[serde(default = "default_true")]
    pub self_registration: bool,
    /// Self-registrations accepted per source address (IPv6: per /64) per hour.
    #[serde(default = "default_registrations")]
    pub registrations_per_hour: u32,
    /// The relay directory.
    #[serde(default)]
    pub directory: DirectoryConfig,
    /// HTTP body limit.
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    /// Max receipts per batch.
    #[serde(default = "default_batch")]
    pub max_batch: usize,
    /// Allowed clock difference of signed voucher requests.
    #[serde(default = "default_skew")]
    pub request_skew_seconds: u64,
    /// Time after voucher expiry before it may be closed and refunded.
    #[serde(default = "default_grace")]
    pub refund_grace_seconds: u64,
    /// Serve `GET /metrics` (Prometheus, aggregate counters only) on `listen`.
    #[serde(default = "default_metrics")]
    pub metrics: bool,
    /// HTTP connections served at once (more wait in the accept backlog); lowered at start
    /// when the file-descriptor limit cannot hold them.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection must send a complete request head within this long of connecting or of
    /// its previous response (slow or idle clients are closed).
    #[serde(default = "default_header_timeout")]
    pub header_timeout_seconds: u64,
    /// A request (reading its body and answering it) must complete within this long (408).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
    #[serde(skip)]
    base: PathBuf,
}

fn default_metrics() -> bool {
    true
}

fn default_true() -> bool {
    true
}

fn default_registrations() -> u32 {
    10
}

/// `[directory]`: relay announces, reachability probes and the listing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DirectoryConfig {
    /// Serve the directory endpoints.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Lowest price a relay may ask (micros per GiB).
    #[serde(default)]
    pub min_price_micros_per_gib: u64,
    /// Highest price a relay may ask (default: 10 x the network price).
    #[serde(default)]
    pub max_price_micros_per_gib: Option<u64>,
    /// Longest descriptor validity accepted.
    #[serde(default = "default_max_ttl")]
    pub max_descriptor_ttl_seconds: u64,
    /// Probe datagrams per endpoint and announce.
    #[serde(default = "default_probe_attempts")]
    pub probe_attempts: u32,
    /// Wait for each probe answer.
    #[serde(default = "default_probe_wait")]
    pub probe_wait_ms: u64,
    /// An unchanged relay is probed again only after this long.
    #[serde(default = "default_probe_interval")]
    pub min_probe_interval_seconds: u64,
    /// Most relays one listing returns.
    #[serde(default = "default_max_list")]
    pub max_list: usize,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_price_micros_per_gib: 0,
            max_price_micros_per_gib: None,
            max_descriptor_ttl_seconds: default_max_ttl(),
            probe_attempts: default_probe_attempts(),
            probe_wait_ms: default_probe_wait(),
            min_probe_interval_seconds: default_probe_interval(),
            max_list: default_max_list(),
        }
    }
}

fn default_max_ttl() -> u64 {
    3600
}
fn default_probe_attempts() -> u32 {
    3
}
fn default_probe_wait() -> u64 {
    700
}
fn default_probe_interval() -> u64 {
    30
}
fn default_max_list() -> usize {
    1000
}

fn default_max_connections() -> usize {
    1024
}
fn default_header_timeout() -> u64 {
    5
}
fn default_request_timeout() -> u64 {
    30
}

fn default_listen() -> String {
    "127.0.0.1:7878".into()
}
fn default_db() -> String {
    "sqlite:ledger.db".into()
}
fn default_pool() -> usize {
    16
}
fn default_epoch() -> u64 {
    3600
}
fn default_ttl() -> u64 {
    30 * 86400
}
fn default_body() -> usize {
    4 << 20
}
fn default_batch() -> usize {
    5000
}
fn default_skew() -> u64 {
    300
}
fn default_grace() -> u64 {
    86400
}

impl Config {
    /// Reads, parses and validates `path`; relative paths inside are relative to its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        cfg.base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and formats.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.network()?;
        self.database()?;
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.epoch_seconds == 0 {
            return bad("epoch-seconds must be positive");
        }
        if self.price_micros_per_gib == 0 || self.price_micros_per_gib > i64::MAX as u64 {
            return bad("price-micros-per-gib must be in 1..2^63");
        }
        if self.voucher_ttl_seconds == 0 {
            return bad("voucher-ttl-seconds must be positive");
        }
        if self.max_batch == 0 || self.max_body_bytes < 4096 {
            return bad("max-batch must be positive and max-body-bytes at least 4096");
        }
        if self.postgres_pool_size == 0 {
            return bad("postgres-pool-size must be positive");
        }
        if !(1..=65536).contains(&self.max_connections) {
            return bad("max-connections must be in 1..65536");
        }
        if !(1..=3600).contains(&self.header_timeout_seconds)
            || !(1..=3600).contains(&self.request_timeout_seconds)
        {
            return bad("header-timeout-seconds and request-timeout-seconds must be in 1..3600");
        }
        let d = &self.directory;
        if d.max_descriptor_ttl_seconds < 60 || !(1..=10).contains(&d.probe_attempts) {
            return bad(
                "directory: max-descriptor-ttl-seconds must be >= 60, probe-attempts 1..=10",
            );
        }
        if !(50..=10_000).contains(&d.probe_wait_ms) || !(1..=100_000).contains(&d.max_list) {
            return bad("directory: probe-wait-ms must be in 50..=10000, max-list in 1..=100000");
        }
        if self.directory_params()?.max_price_micros_per_gib < d.min_price_micros_per_gib {
            return bad("directory: max-price-micros-per-gib is below min-price-micros-per-gib");
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "listen must be IP:PORT (got {:?})",
                self.listen
            )));
        }
        Ok(())
    }

    /// The network id.
    pub fn network(&self) -> Result<NetworkId, ConfigError> {
        NetworkId::from_hex(&self.network_id)
            .ok_or_else(|| ConfigError::Invalid("network-id must be 32 hex characters".into()))
    }

    /// The database.
    pub fn database(&self) -> Result<Database, ConfigError> {
        Database::parse(&self.database_url, &self.base)
    }

    /// A path from the file, resolved against the config's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        self.base.join(p)
    }

    /// Directory parameters.
    pub fn directory_params(&self) -> Result<crate::directory::DirectoryParams, ConfigError> {
        let d = &self.directory;
        Ok(crate::directory::DirectoryParams {
            network_id: self.network()?,
            min_price_micros_per_gib: d.min_price_micros_per_gib,
            max_price_micros_per_gib: d
                .max_price_micros_per_gib
                .unwrap_or(self.price_micros_per_gib.saturating_mul(10)),
            max_ttl_secs: d.max_descriptor_ttl_seconds,
            skew_secs: self.request_skew_seconds,
            min_probe_interval_secs: d.min_probe_interval_seconds,
            max_list: d.max_list,
        })
    }

    /// Service parameters.
    pub fn params(&self) -> Result<Params, ConfigError> {
        Ok(Params {
            network_id: self.network()?,
            epoch_secs: self.epoch_seconds,
            price_micros_per_gib: self.price_micros_per_gib,
            voucher_ttl_secs: self.voucher_ttl_seconds,
            max_batch: self.max_batch,
            request_skew_secs: self.request_skew_seconds,
            refund_grace_secs: self.refund_grace_seconds,
        })
    }

    /// Loads the ledger signing key (refusing group/other-readable files).
    pub fn signing_key(&self) -> Result<SigningKey, ConfigError> {
        read_key(&self.resolve(&self.key_file))
    }

    /// The admin token: env `FERRY_LEDGER_ADMIN_TOKEN`, else the token file, else none.
    pub fn admin_token(&self) -> Result<Option<String>, ConfigError> {
        if let Ok(t) = std::env::var("FERRY_LEDGER_ADMIN_TOKEN") {
            return check_token(t.trim().to_owned()).map(Some);
        }
        let Some(f) = &self.admin_token_file else {
            return Ok(None);
        };
        let text = read_secret(&self.resolve(f))?;
        check_token(text.trim().to_owned()).map(Some)
    }
}

fn check_token(t: String) -> Result<String, ConfigError> {
    if t.len() < 16 {
        return Err(ConfigError::Invalid(
            "admin token must be at least 16 characters".into(),
        ));
    }
    Ok(t)
}

fn read_secret(path: &Path) -> Result<String, ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    };
    let mode = fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(ConfigError::Permissions(path.to_owned(), mode & 0o777));
    }
    fs::read_to_string(path).map_err(io)
}

/// Reads a base64 Ed25519 seed from a 0600 file.
pub fn read_key(path: &Path) -> Result<SigningKey, ConfigError> {
    let text = read_secret(path)?;
    let raw = B64
        .decode(text.trim())
        .map_err(|_| ConfigError::Invalid(format!("{}: not base64", path.display())))?;
    let seed: [u8; 32] = raw
        .try_into()
        .map_err(|_| ConfigError::Invalid(format!("{}: seed must be 32 bytes", path.display())))?;
    Ok(SigningKey::from_seed(&seed))
}

/// Writes `contents` to a new file with mode 0600 (fails if it exists), fsynced.
pub fn write_secret(path: &Path, contents: &str) -> Result<(), ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Base64 of a seed, as stored in key files.
pub fn encode_seed(seed: &[u8; 32]) -> String {
    B64.encode(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "network-id = \"00112233445566778899aabbccddeeff\"\nkey-file = \"ledger.key\"\nprice-micros-per-gib = 500000\n";

    #[test]
    fn example_config_parses_and_validates() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/ledger.example.toml");
        let cfg = Config::load(&p).unwrap();
        assert_eq!(cfg.epoch_seconds, 3600);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.toml");
        fs::write(&p, format!("{MINIMAL}bogus = 1\n")).unwrap();
        assert!(matches!(Config::load(&p), Err(ConfigError::Parse { .. })));
        fs::write(&p, MINIMAL.replace("0011", "zz11")).unwrap();
        assert!(matches!(Config::load(&p), Err(ConfigError::Invalid(_))));
        fs::write(&p, format!("{MINIMAL}database-url = \"mysql://x\"\n")).unwrap();
        assert!(matches!(Config::load(&p), Err(ConfigError::Invalid(_))));
        fs::write(&p, MINIMAL).unwrap();
        let cfg = Config::load(&p).unwrap();
        assert_eq!(
            cfg.database().unwrap(),
            Database::Sqlite(dir.path().join("ledger.db"))
        );
    }

    #[test]
    fn key_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_secret(&p, &encode_seed(&[7; 32])).unwrap();
        assert_eq!(
            read_key(&p).unwrap().public_key(),
            SigningKey::from_seed(&[7; 32]).public_key()
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_key(&p),
            Err(ConfigError::Permissions(_, 0o644))
        ));
    }

    #[test]
    fn database_urls_parse() {
        let b = Path::new("/etc/ferry");
        assert_eq!(
            Database::parse("sqlite:///var/lib/l.db", b).unwrap(),
            Database::Sqlite("/var/lib/l.db".into())
        );
        assert_eq!(
            Database::parse("sqlite:l.db", b).unwrap(),
            Database::Sqlite("/etc/ferry/l.db".into())
        );
        assert!(matches!(
            Database::parse("postgres://u@h/db", b).unwrap(),
            Database::Postgres(_)
        ));
    }
}
