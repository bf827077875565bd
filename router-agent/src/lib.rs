//! ferry-agent's library part: the agent configuration (`config`: TOML schema, validation and
//! the validated values the daemon runs with; `config_paid`: the `[identity]`, `[network]`,
//! `[metering]` and `[paid]` sections), shared with the fuzz target and tests so they compile
//! the real modules instead of `#[path]` includes.
//!
//! Must not: start tasks, open sockets or log; the daemon (relay, egress, metering, telemetry)
//! lives in the `ferry-agent` binary (`src/main.rs`).

pub mod config;
pub mod config_directory;
pub mod config_paid;
pub mod share;
