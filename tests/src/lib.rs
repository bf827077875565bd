//! End-to-end test harness for Ferry in Linux network namespaces (needs root).
//!
//! Owns: creating and tearing down namespaces, veth links, addresses and routes ([`netns`]);
//! the standard client / router / internet / LAN topology ([`topology`]); tiny in-process
//! TCP and UDP services and probes ([`servers`]); stock WireGuard endpoints ([`wg`]); building,
//! configuring and running `ferry-agent` ([`agent`]); an in-process many-peer WireGuard client on
//! boringtun ([`multipeer`]); polling helpers ([`wait`]).
//!
//! Must not: touch anything on the host outside the names it generated (`fe<pid>x<n>...`), leave
//! processes or namespaces behind (the [`netns::Lab`] guard cleans up, also on panic), or reach
//! beyond the namespaces it created. Tests using it are `#[ignore = "needs root: netns"]` and run
//! with `cargo test -p ferry-e2e -- --ignored --test-threads=1`.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod agent;
pub mod client;
pub mod demo;
pub mod inject;
pub mod market;
pub mod metering;
pub mod multipeer;
pub mod netns;
pub mod observability;
pub mod paid_connect;
pub mod paid_lab;
pub mod scenario;
pub mod servers;
pub mod topology;
pub mod wait;
pub mod wg;
