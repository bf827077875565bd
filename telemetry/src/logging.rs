//! `tracing` setup shared by every Ferry binary.
//!
//! Filter precedence: `FERRY_LOG`, then `RUST_LOG`, then the configured default. Whatever the
//! filter says, [`PRIVACY_FLOOR`] is applied on top: third-party crates that log DNS names or
//! client addresses at INFO/DEBUG (hickory-server logs every query at INFO, hickory-resolver
//! and hickory-net log names at DEBUG) are capped at WARN, so `FERRY_LOG=debug` cannot leak
//! what tunnel clients resolve.
//!
//! The filter is tracing-subscriber's [`Targets`] (`target=level` directives, longest target
//! prefix wins), not `EnvFilter`: EnvFilter's regex engine costs 236 KB in the stripped mipsel
//! router binary. Span and field filters (`target[span{field=x}]=debug`) are therefore not
//! supported.

use serde::Deserialize;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::TelemetryError;

/// Environment variable read first for the log filter.
pub const FERRY_LOG_ENV: &str = "FERRY_LOG";

/// Environment variable read when [`FERRY_LOG_ENV`] is unset or empty.
pub const RUST_LOG_ENV: &str = "RUST_LOG";

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
    /// Comma-separated `level`, `target=level` or `target` directives, e.g. `info` or
    /// `info,ferry_relay_io=debug` (no span/field filters). Used when neither
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
    let fmt = tracing_subscriber::fmt::layer()
        // No colour codes in syslog/procd or log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.format {
        LogFormat::Compact => registry.with(fmt.compact()).try_init(),
        LogFormat::Json => registry.with(fmt.json()).try_init(),
    };
    result.map_err(|_| TelemetryError::SubscriberAlreadySet)
}

/// The filter `init` would use: `FERRY_LOG`, else `RUST_LOG`, else `default`, plus the floor.
pub fn filter_from_env_or(default: &str) -> Result<Targets, TelemetryError> {
    let spec = [FERRY_LOG_ENV, RUST_LOG_ENV]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| default.to_owned());
    filter(&spec)
}

/// Parses `spec` (comma-separated `level` / `target=level` / `target` directives; blanks
/// around directives and empty directives are ignored; no directive at all means `error`) and
/// applies [`PRIVACY_FLOOR`]. Tests that capture logs use this too, so they see exactly what
/// production would emit.
pub fn filter(spec: &str) -> Result<Targets, TelemetryError> {
    let invalid = |reason: String| TelemetryError::LogFilter {
        filter: spec.to_owned(),
        reason,
    };
    let directives: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    // `Targets` would accept `target[{field}]=level` and rank it above the floor's plain
    // `target=level`; refuse it instead.
    if directives.iter().any(|d| d.contains('[')) {
        return Err(invalid("span/field filters are not supported".to_owned()));
    }
    let user = if directives.is_empty() {
        Targets::new().with_default(LevelFilter::ERROR)
    } else {
        directives
            .join(",")
            .parse::<Targets>()
            .map_err(|e| invalid(e.to_string()))?
    };
    let floor: Targets = PRIVACY_FLOOR
        .join(",")
        .parse()
        .map_err(|e| invalid(format!("privacy floor: {e}")))?;
    // A later directive for the same target replaces an earlier one, so the floor wins.
    Ok(user.with_targets(floor.iter()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::{Arc, Mutex};

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
    fn field_filters_and_bad_levels_are_refused() {
        for spec in ["hickory_server[{query}]=trace", "info,ferry=loud", "a=b=c"] {
            let err = filter(spec).unwrap_err();
            assert!(
                matches!(err, TelemetryError::LogFilter { .. }),
                "{spec}: {err}"
            );
        }
    }

    #[test]
    fn directives_follow_longest_target_prefix_and_tolerate_blanks() {
        let out = captured(" warn , ferry_relay_io=debug,,boringtun=off ", || {
            tracing::debug!(target: "ferry_relay_io::udp", "io debug line");
            tracing::info!(target: "ferry_agent", "agent info line");
            tracing::warn!(target: "ferry_agent", "agent warn line");
            tracing::error!(target: "boringtun::noise", "boringtun error line");
        });
        assert!(out.contains("io debug line"), "{out}");
        assert!(!out.contains("agent info line"), "{out}");
        assert!(out.contains("agent warn line"), "{out}");
        assert!(!out.contains("boringtun error line"), "{out}");
    }

    #[test]
    fn empty_filter_means_errors_only() {
        let out = captured(" , ", || {
            tracing::warn!(target: "ferry_agent", "agent warn line");
            tracing::error!(target: "ferry_agent", "agent error line");
        });
        assert!(!out.contains("agent warn line"), "{out}");
        assert!(out.contains("agent error line"), "{out}");
    }

    #[test]
    fn log_config_parses_from_toml_with_defaults() {
        let cfg: LogConfig = serde_json::from_str(r#"{"format":"json"}"#).unwrap();
        assert_eq!(cfg.format, LogFormat::Json);
        assert_eq!(cfg.filter, "info");
        assert!(serde_json::from_str::<LogConfig>(r#"{"colour":true}"#).is_err());
    }
}
