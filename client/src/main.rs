//! `ferry`: the privacy VPN client for Ferry relays.
//!
//! Owns the user-facing CLI: key generation, buying vouchers from the ledger, `connect` (TUN,
//! full tunnel, DNS, kill switch), `socks5` (unprivileged, smoltcp), `status`, `export-wg`,
//! and the client half of the receipt exchange (co-sign only what we counted ourselves,
//! keep every co-signed receipt and submit it to the ledger too).
//!
//! Must not: log destinations or DNS names above DEBUG, print or log key material, or leave
//! the host unprotected between `connect` and `disconnect` (the kill switch is installed
//! before the tunnel exists and is removed only by `ferry disconnect`).

mod auto;
mod bootstrap;
mod choose;
mod cli;
mod cmds;
mod config;
mod connect;
mod endpoint;
mod engine;
mod ledger;
mod lifecycle;
mod netcfg;
mod paths;
mod relays;
mod session;
mod socks;
mod stack;
mod status;
#[cfg(test)]
mod testrelay;
mod usage;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cmds::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferry: {e:#}");
            ExitCode::FAILURE
        }
    }
}
