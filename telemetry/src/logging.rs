//! `tracing` setup shared by every Ferry binary.
//!
//! Filter precedence: `FERRY_LOG`, then `RUST_LOG`, then the configured default. Whatever the
//! filter says, [`PRIVACY_FLOOR`] is applied on top: third-party crates that log DNS names or
//! client addresses at INFO/DEBUG (hickory-server logs every query at INFO, hickory-resolver
//! and hickory-net log names at DEBUG) are capped at WARN, so `FERRY_LOG=debug` cannot leak
//! what tunnel clients resolve.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

use crate::TelemetryError;

/// Environment variable read first for the log filter.
pub const FERRY_LOG_ENV: &str = "FERRY_LOG";

/// Directives appended after the user's filter; they win over anything the user wrote for the
/// same targets.
pub const PRIVACY_FLOOR: &[&str] = &[
    "hickory_server=warn",
    "hickory_resolver=warn",
    "hickory_net=warn",
    "hickory_proto=warn",
];

/// Output format of log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// One human-readable line per event (default).
    #[default]
    Compact,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logging configuration, usually the `[log]` table of a binary's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LogConfig {
    /// `EnvFilter` syntax, e.g. `info` or `info,ferry_relay_io=debug`. Used when neither
    /// `FERRY_LOG` nor `RUST_LOG` is set.
    #[serde(default = "default_filter")]
    pub filter: String,
    /// Line format.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: default_filter(),
            format: LogFormat::default(),
        }
    }
}

fn default_filter() -> String {
    "info".to_owned()
}

/// Installs the global subscriber (stderr). Call once, early in `main`.
pub fn init(config: &LogConfig) -> Result<(), TelemetryError> {
    let filter = filter_from_env_or(&config.filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // No colour codes in syslog/procd or log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Compact => builder.compact().try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|_| TelemetryError::SubscriberAlreadySet)
}

/// The filter `init` would use: `FERRY_LOG`, else `RUST_LOG`, else `default`, plus the floor.
pub fn filter_from_env_or(default: &str) -> Result<EnvFilter, TelemetryError> {
    let spec = [FERRY_LOG_ENV, EnvFilter::DEFAULT_ENV]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| default.to_owned());
    filter(&spec)
}

/// Parses `spec` (EnvFilter syntax) and applies [`PRIVACY_FLOOR`]. Tests that capture logs use
/// this too, so they see exactly what production would emit.
pub fn filter(spec: &str) -> Result<EnvFilter, TelemetryError> {
    let invalid = |reason: String| TelemetryError::LogFilter {
        filter: spec.to_owned(),
        reason,
    };
    let mut filter = EnvFilter::builder()
        .with_regex(false)
        .parse(spec)
        .map_err(|e| invalid(e.to_string()))?;
    for directive in PRIVACY_FLOOR {
        filter = filter.add_directive(directive.parse().map_err(|e| invalid(format!("{e}")))?);
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn captured(spec: &str, emit: impl FnOnce()) -> String {
        let buf = Capture::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::registry()
            .with(filter(spec).unwrap())
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(move || writer.clone())
                    .with_ansi(false),
            );
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn privacy_floor_overrides_an_explicit_debug_request_for_hickory() {
        let out = captured("trace,hickory_resolver=trace,hickory_server=debug", || {
            tracing::debug!(target: "hickory_resolver::name_server_pool", "querying: secret.example");
            tracing::info!(target: "hickory_server::server", "query:secret.example:A:IN");
            tracing::warn!(target: "hickory_resolver", "upstream unreachable");
            tracing::debug!(target: "ferry_dns", "own debug line");
        });
        assert!(!out.contains("secret.example"), "{out}");
        assert!(out.contains("upstream unreachable"), "{out}");
        assert!(out.contains("own debug line"), "{out}");
    }

    #[test]
    fn invalid_filter_is_an_error_not_a_panic() {
        let err = filter("info,=[").unwrap_err();
        assert!(matches!(err, TelemetryError::LogFilter { .. }), "{err}");
    }

    #[test]
    fn log_config_parses_from_toml_with_defaults() {
        let cfg: LogConfig = serde_json::from_str(r#"{"format":"json"}"#).unwrap();
        assert_eq!(cfg.format, LogFormat::Json);
        assert_eq!(cfg.filter, "info");
        assert!(serde_json::from_str::<LogConfig>(r#"{"colour":true}"#).is_err());
    }
}
