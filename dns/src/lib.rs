//! Ferry's private DNS forwarder for tunnel clients.
//!
//! Owns: UDP+TCP listeners on the relay's tunnel addresses, forwarding to configured upstreams,
//! a bounded cache that respects TTLs, and counters for metrics. Two upstream backends behind
//! the same request handling (so clients see the same behaviour either way):
//! - with the `resolver` feature (default; implied by `dot`/`doh`): hickory-resolver, for plain
//!   UDP/TCP, DNS-over-TLS and DNS-over-HTTPS upstreams, with hickory's response cache;
//! - without it (the small-router builds, `ferry-agent --no-default-features`): the lean backend
//!   (`upstream`, `cache`): plain UDP/TCP upstreams only (`udp`, `tcp`, `plain`), hickory-proto
//!   for the messages, tokio sockets, random IDs and source ports, reply ID/question checks, and
//!   its own TTL cache. `tls`/`https` upstreams and `ca-file` are config errors there.
//!
//! Must not: log query names or client addresses at any level (only response codes and
//! latency, at TRACE); answer zone transfers or ANY; grow without bound (queries in flight,
//! TCP connections and cache entries are capped). The hickory crates log names at INFO/DEBUG,
//! so binaries must install `ferry_telemetry`'s log filter, which caps them at WARN.
//!
//! With the default `testserver` feature it also ships a tiny authoritative server for tests
//! and the netns e2e harness ([`testserver`], binary `ferry-dns-testserver`). The agent
//! depends on this crate with `default-features = false`.

#[cfg_attr(feature = "resolver", allow(dead_code))]
mod cache;
mod config;
mod forwarder;
// Always compiled (its unit tests run in every build); only used without `resolver`.
#[cfg(feature = "testserver")]
pub mod testserver;
#[cfg_attr(feature = "resolver", allow(dead_code))]
mod upstream;

pub use config::{DnsConfig, Protocol, Upstream};
pub use forwarder::{Forwarder, ForwarderStats, StatsSnapshot};

/// Errors from configuring or starting the forwarder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The `[dns]` configuration is invalid.
    #[error("dns config: {0}")]
    Config(String),
    /// A listen socket could not be bound.
    #[error("binding dns listener on {addr}: {source}")]
    Bind {
        /// Address we tried to bind.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}
