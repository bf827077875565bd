//! Ferry observability: logging setup, every Prometheus metric definition, and the small HTTP
//! server that exposes them.
//!
//! Owns:
//! - [`logging`]: `tracing` subscriber setup (`FERRY_LOG`/`RUST_LOG`, compact or JSON) with a
//!   privacy floor that keeps third-party DNS crates from logging query names.
//! - [`metrics`]: the one place where metric names, help texts and label sets are defined. Cores
//!   never touch this crate: they keep plain `Stats` structs (atomics are fine); the agent copies
//!   them into a [`Snapshot`] when Prometheus scrapes, so nothing here runs per packet.
//! - [`http1`]: the bounded hyper HTTP/1 accept loop (connection cap, header and idle
//!   timeouts) the metrics server and the ledger share.
//! - [`server`]: `/metrics` (OpenMetrics text), `/healthz`, optional `/status` JSON, optional
//!   bearer token.
//!
//! Must not: depend on the relay, metering or receipts crates (the dependency points the other
//! way), log destinations or DNS names, or create per-peer series unless the operator opted in.

pub mod http1;
pub mod logging;
pub mod metrics;
mod process;
pub mod server;

pub use logging::{LogConfig, LogFormat};
pub use metrics::{
    DnsStats, DropCounts, DropReason, FsyncRecorder, Metrics, MetricsConfig, PeerTraffic,
    ReceiptStats, Snapshot, SnapshotSource,
};
pub use server::{MetricsServer, ServerConfig, StatusSource};

/// Errors from setting up telemetry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The log filter string (from the config or `FERRY_LOG`/`RUST_LOG`) did not parse.
    #[error("invalid log filter {filter:?}: {reason}")]
    LogFilter {
        /// The filter text that failed.
        filter: String,
        /// Why it failed.
        reason: String,
    },
    /// A global `tracing` subscriber was already installed.
    #[error("a global tracing subscriber is already installed")]
    SubscriberAlreadySet,
    /// Binding the metrics listener failed.
    #[error("binding metrics listener on {addr}: {source}")]
    Bind {
        /// The address we tried to bind.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading the bearer-token file failed.
    #[error("reading token file {path}: {source}")]
    TokenFile {
        /// Path of the token file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bearer-token file is readable by group or others.
    #[error(
        "token file {path} has mode {mode:o}; it must not be readable by group or others (chmod 600)"
    )]
    TokenFileMode {
        /// Path of the token file.
        path: std::path::PathBuf,
        /// The file's permission bits.
        mode: u32,
    },
    /// The bearer-token file is empty.
    #[error("token file {path} is empty")]
    TokenEmpty {
        /// Path of the token file.
        path: std::path::PathBuf,
    },
    /// The server configuration has no listen address.
    #[error("no metrics listen address configured")]
    NoListenAddress,
    /// Serving HTTP failed.
    #[error("metrics server: {0}")]
    Serve(std::io::Error),
}
