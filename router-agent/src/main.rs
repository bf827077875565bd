//! ferry-agent: the router daemon relaying paying clients' WireGuard traffic and signing receipts.
//!
//! `main` only parses arguments, sets up logging and dispatches; see `run.rs` for the daemon.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
// The config modules live in the library target (shared with the fuzz target and tests);
// imported here so `crate::config` / `crate::config_paid` paths keep working.
use ferry_agent::{config, config_directory, config_paid};

mod control;
mod directory;
mod dns;
mod identity;
mod keycmd;
mod metering;
mod metering_hello;
mod observability;
mod peers;
mod pools;
mod run;
mod sessions;
mod sharing;
#[cfg(test)]
mod test_support;

/// Ferry relay agent: a userspace WireGuard endpoint that relays clients' traffic to the internet.
#[derive(Parser, Debug)]
#[command(name = "ferry-agent", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// `--config` of the commands that act on the installed agent (default
/// `/etc/ferry/agent.toml`, or `FERRY_AGENT_CONFIG`).
#[derive(Args, Debug)]
struct ConfigFile {
    /// Agent configuration file.
    #[arg(
        long,
        short,
        env = "FERRY_AGENT_CONFIG",
        default_value = "/etc/ferry/agent.toml"
    )]
    config: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the relay (foreground; stops cleanly on SIGINT/SIGTERM).
    Run(ConfigFile),
    /// Print a new WireGuard private key (base64). Use `umask 077` or --out to keep it 0600.
    Genkey {
        /// Write the key to this file (mode 0600, must not exist) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Read a private key on stdin, print its public key.
    Pubkey,
    /// Add a trusted (non-paying) peer to the config file.
    AddPeer {
        /// Agent configuration file to edit.
        #[arg(long, short)]
        config: PathBuf,
        /// The peer's WireGuard public key (base64). Omit with --generate-key.
        #[arg(long, required_unless_present = "generate_key")]
        public_key: Option<String>,
        /// Generate the peer's key pair; write its private key to this file (0600).
        #[arg(long, conflicts_with = "public_key")]
        generate_key: Option<PathBuf>,
        /// Inner address(es) of the peer, e.g. 10.77.0.2/32 (repeatable). Default: the next
        /// free address of each tunnel subnet's trusted-peer part (its first quarter; paid
        /// sessions use the rest, so the two never collide).
        #[arg(long = "allowed-ip")]
        allowed_ips: Vec<String>,
        /// Peer name (default: peer-N).
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a trusted peer from the config file (a running agent drops it on SIGHUP).
    RemovePeer {
        /// Agent configuration file to edit.
        #[arg(long, short)]
        config: PathBuf,
        /// Peer name (as shown by `ferry-agent peers`).
        name: String,
    },
    /// List the peers in the config file.
    Peers {
        /// Agent configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a wg-quick client config for a trusted peer.
    ExportClient {
        /// Agent configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Peer name.
        #[arg(long)]
        peer: String,
        /// Public host:port clients use to reach this relay.
        #[arg(long)]
        endpoint: String,
        /// The peer's private key file (as written by add-peer --generate-key).
        #[arg(long)]
        private_key_file: Option<PathBuf>,
        /// DNS server for the client config (e.g. the relay's tunnel address).
        #[arg(long)]
        dns: Option<String>,
    },
    /// Print the relay's identity public key (hex) from `[identity] key-file`; register it
    /// at the ledger as a relay. `--generate` creates the key file (0600) if it is missing.
    Identity {
        /// Agent configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Create the identity key file if it does not exist.
        #[arg(long)]
        generate: bool,
    },
    /// Print the signed relay descriptor this agent announces to the directory (`[directory]`:
    /// address, price, country, limits), without announcing it. Asks the ledger for the
    /// network price unless `[directory] price-micros-per-gib` is set.
    Descriptor(ConfigFile),
    /// Validate a config file (and the private key file) without starting.
    CheckConfig {
        /// Agent configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Pause sharing now: the running agent gives every paid session its final receipt and
    /// closes it within about a second, and refuses new ones ("not sharing now") until
    /// `resume`. Survives restarts and reboots (a file in the state directory).
    Pause(ConfigFile),
    /// Share again after `pause`.
    Resume(ConfigFile),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "ferry-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Run(c) => run::run(&c.config),
        Cmd::Genkey { out } => keycmd::genkey(out.as_deref()),
        Cmd::Pubkey => keycmd::pubkey(),
        Cmd::RemovePeer { config, name } => peers::remove_peer(&config, &name),
        Cmd::AddPeer {
            config,
            public_key,
            generate_key,
            allowed_ips,
            name,
        } => peers::add_peer(
            &config,
            public_key,
            generate_key.as_deref(),
            &allowed_ips,
            name,
        ),
        Cmd::Peers { config } => peers::list(&config),
        Cmd::ExportClient {
            config,
            peer,
            endpoint,
            private_key_file,
            dns,
        } => peers::export_client(
            &config,
            &peer,
            &endpoint,
            private_key_file.as_deref(),
            dns.as_deref(),
        ),
        Cmd::Identity { config, generate } => identity::identity(&config, generate),
        Cmd::CheckConfig { config } => run::check_config(&config),
        Cmd::Descriptor(c) => run::print_descriptor(&c.config),
        Cmd::Pause(c) => run::set_paused(&c.config, true),
        Cmd::Resume(c) => run::set_paused(&c.config, false),
    }
}
