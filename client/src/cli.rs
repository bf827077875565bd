//! Command-line interface (clap).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// ferry: privacy VPN client for Ferry relays; pays by co-signing byte receipts.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Key and config directory (identity.key, wg.key, voucher, client.toml).
    #[arg(long, global = true, env = "FERRY_DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Config file [default: <dir>/client.toml].
    #[arg(long, global = true, env = "FERRY_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Runtime state directory (status.json, pid, DNS backup) [default: /run/ferry as root,
    /// else $XDG_RUNTIME_DIR/ferry or /tmp/ferry-<uid>].
    #[arg(long, global = true, env = "FERRY_STATE_DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Command.
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Generate the identity (Ed25519) and WireGuard keys into the key directory (mode 0600).
    Keygen {
        /// Replace existing keys.
        #[arg(long)]
        force: bool,
    },
    /// Print the public keys (identity hex, WireGuard base64).
    Pubkey,
    /// Vouchers (prepaid byte allowances signed by the ledger).
    Voucher {
        /// What to do.
        #[command(subcommand)]
        cmd: VoucherCmd,
    },
    /// Register this identity (client key) with the ledger by itself: a request signed by the
    /// key (no operator needed, when the ledger allows self-registration).
    Register {
        /// Ledger base URL [default: [client] ledger-url].
        #[arg(long)]
        ledger: Option<String>,
    },
    /// Show this identity's ledger account: balance, deposits, spend, vouchers and bytes used
    /// (a read signed by the identity key; the ledger shows an account only to its owner).
    Balance {
        /// Ledger base URL [default: [client] ledger-url].
        #[arg(long)]
        ledger: Option<String>,
        /// Machine-readable JSON (the ledger's answer).
        #[arg(long)]
        json: bool,
    },
    /// List the relays in the network's directory with price, score and latency. Each
    /// listing is verified (the relay's signature over its terms, the ledger's over its
    /// annotation) before it is shown; the last list is cached for when the ledger is away.
    Relays {
        /// Ledger base URL [default: [client] ledger-url].
        #[arg(long)]
        ledger: Option<String>,
        /// Only relays declaring this country (ISO 3166 code, e.g. DE).
        #[arg(long)]
        country: Option<String>,
        /// Only relays asking at most this price (micros per GiB).
        #[arg(long)]
        max_price: Option<u64>,
        /// Only relays with at least this score (0..=1000).
        #[arg(long)]
        min_score: Option<u16>,
        /// Only relays reachable over IPv6.
        #[arg(long)]
        ipv6: bool,
        /// Only relays offering each client at least this many Mbit/s (or not limiting).
        #[arg(long)]
        min_mbit: Option<u32>,
        /// At most this many relays.
        #[arg(long)]
        limit: Option<usize>,
        /// Machine-readable JSON (verified listings, decoded).
        #[arg(long)]
        json: bool,
    },
    /// Connect through a relay: TUN device, full-tunnel routes (IPv4+IPv6), DNS through the
    /// tunnel and a kill switch that stays until `ferry disconnect`. Needs root
    /// (CAP_NET_ADMIN). Runs in the foreground.
    Connect(ConnectArgs),
    /// Close the running session (final receipt), remove the kill switch, restore DNS.
    Disconnect {
        /// Seconds to wait for the connect process to finish its final receipt.
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
    /// Unprivileged SOCKS5 proxy through a relay, using a userspace TCP/IP stack (smoltcp):
    /// no TUN, no root. TCP CONNECT only; domain names are resolved through the tunnel.
    Socks5(Socks5Args),
    /// Show connection state, traffic, last receipt and spend.
    Status {
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a wg-quick config for stock WireGuard apps.
    ///
    /// Only for trusted (free) relays: stock WireGuard apps cannot open a paid session or
    /// co-sign receipts, so a paid relay would cut them off after its credit window.
    #[command(name = "export-wg")]
    ExportWg {
        /// Relay name from the config.
        relay: String,
    },
}

/// `ferry voucher ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum VoucherCmd {
    /// Buy a voucher from the ledger (debits the ledger balance of our identity key).
    Request {
        /// Ledger base URL [default: [client] ledger-url].
        #[arg(long)]
        ledger: Option<String>,
        /// How much traffic to pay for, at the max price: a number of bytes, or with a unit
        /// (`100MiB`, `1.5GiB`, `500MB`; KiB/MiB/GiB/TiB are powers of 1024, kB/MB/GB/TB powers
        /// of 1000). The voucher holds the money (bytes × max price); cheaper relays carry more.
        #[arg(long, value_parser = parse_bytes)]
        bytes: u64,
        /// The highest relay price (micros per GiB) the voucher pays [default: the network
        /// price]. Relays asking more refuse it.
        #[arg(long)]
        max_price: Option<u64>,
        /// Where to store it [default: <dir>/voucher].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show the stored voucher: terms, time to expiry, and bytes used per this machine's receipt log.
    Show {
        /// Voucher file [default: <dir>/voucher].
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

/// `ferry connect`.
#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// Relay name from the config (or `--auto`).
    #[arg(required_unless_present = "auto", conflicts_with = "auto")]
    pub(crate) relay: Option<String>,
    #[command(flatten)]
    pub(crate) auto: AutoArgs,
    /// TUN device name.
    #[arg(long, default_value = "ferry0")]
    pub(crate) tun: String,
    /// resolv.conf to point at the relay's resolver (backed up, restored on disconnect).
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub(crate) resolv_conf: PathBuf,
    /// Leave DNS configuration alone (e.g. systemd-resolved managed elsewhere).
    #[arg(long)]
    pub(crate) no_dns: bool,
}

/// `ferry socks5`.
#[derive(Debug, Args)]
pub(crate) struct Socks5Args {
    /// Relay name from the config (or `--auto`).
    #[arg(required_unless_present = "auto", conflicts_with = "auto")]
    pub(crate) relay: Option<String>,
    #[command(flatten)]
    pub(crate) auto: AutoArgs,
    /// Local SOCKS5 listen address.
    #[arg(long, default_value = "127.0.0.1:1080")]
    pub(crate) listen: SocketAddr,
}

/// `--auto` and its filters (shared by `connect` and `socks5`).
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct AutoArgs {
    /// Choose the relay from the network's directory: the best few (by score) that match the
    /// filters and the voucher's max price are pinged on their Hello ports, and the cheapest
    /// one within 150 points of the best score and 2x+20 ms of the fastest round trip is used
    /// (docs/client.md, "Choosing a relay"). If it fails (no handshake, silent for 6 s, a
    /// refusal, the session ended) the next of the ranking takes over behind the kill switch.
    /// `ferry status` shows why.
    #[arg(long)]
    pub(crate) auto: bool,
    /// With --auto: only relays declaring this country (ISO 3166 code, e.g. DE).
    #[arg(long, requires = "auto")]
    pub(crate) country: Option<String>,
    /// With --auto: only relays asking at most this price (micros per GiB) [default: the
    /// voucher's max price].
    #[arg(long, requires = "auto")]
    pub(crate) max_price: Option<u64>,
    /// With --auto: only relays with at least this score (0..=1000).
    #[arg(long, requires = "auto")]
    pub(crate) min_score: Option<u16>,
    /// With --auto: only relays reachable over IPv6, and connect to them over IPv6.
    #[arg(long, requires = "auto")]
    pub(crate) ipv6: bool,
    /// With --auto: only relays offering each client at least this many Mbit/s (or not
    /// limiting). Relays outside their owner's sharing hours are always skipped.
    #[arg(long, requires = "auto")]
    pub(crate) min_mbit: Option<u32>,
}

impl AutoArgs {
    /// The directory filters.
    pub(crate) fn filters(&self) -> crate::relays::Filters {
        crate::relays::Filters {
            country: self.country.clone(),
            max_price: self.max_price,
            min_score: self.min_score,
            ipv6: self.ipv6,
            limit: None,
            min_mbit: self.min_mbit,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("ferry").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn connect_has_defaults_and_global_flags_anywhere() {
        let c = parse(&["connect", "home", "--dir", "/k"]);
        assert_eq!(c.dir, Some(PathBuf::from("/k")));
        let Cmd::Connect(a) = c.cmd else { panic!() };
        assert_eq!(a.relay.as_deref(), Some("home"));
        assert_eq!(a.tun, "ferry0");
        assert_eq!(a.resolv_conf, PathBuf::from("/etc/resolv.conf"));
        assert!(!a.no_dns);
    }

    #[test]
    fn voucher_request_needs_bytes() {
        let c = parse(&[
            "voucher",
            "request",
            "--ledger",
            "http://l:1",
            "--bytes",
            "1048576",
        ]);
        let Cmd::Voucher {
            cmd: VoucherCmd::Request {
                ledger, bytes, out, ..
            },
        } = c.cmd
        else {
            panic!()
        };
        assert_eq!(ledger.as_deref(), Some("http://l:1"));
        assert_eq!(bytes, 1 << 20);
        assert!(out.is_none());
        assert!(Cli::try_parse_from(["ferry", "voucher", "request"]).is_err());
        assert!(Cli::try_parse_from(["ferry", "voucher", "request", "--bytes", "x"]).is_err());
    }

    #[test]
    fn socks5_listen_defaults_to_loopback_1080() {
        let Cmd::Socks5(a) = parse(&["socks5", "home"]).cmd else {
            panic!()
        };
        assert_eq!(a.listen, "127.0.0.1:1080".parse().unwrap());
        let Cmd::Socks5(a) = parse(&["socks5", "home", "--listen", "[::1]:9050"]).cmd else {
            panic!()
        };
        assert_eq!(a.listen.port(), 9050);
        assert!(Cli::try_parse_from(["ferry", "socks5", "home", "--listen", "nope"]).is_err());
    }

    #[test]
    fn status_json_and_export_wg_parse() {
        assert!(matches!(
            parse(&["status", "--json"]).cmd,
            Cmd::Status { json: true }
        ));
        assert!(matches!(
            parse(&["status"]).cmd,
            Cmd::Status { json: false }
        ));
        assert!(matches!(
            parse(&["export-wg", "home"]).cmd,
            Cmd::ExportWg { .. }
        ));
        let help = Cli::command()
            .find_subcommand_mut("export-wg")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("cannot open a paid session"), "{help}");
    }
}

/// Parses `268435456`, `100MiB`, `1.5 GiB`, `500MB` (binary units are 1024-based, decimal
/// ones 1000-based; a bare `K`/`M`/`G`/`T` is binary).
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?}: use bytes or KiB/MiB/GiB/TiB (1024) or kB/MB/GB/TB (1000)"
            ));
        }
    };
    let bad = || format!("{s:?} is not a byte count (e.g. 268435456, 256MiB, 1.5GiB)");
    let bytes = if let Some((whole, frac)) = num.split_once('.') {
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let scale = 10u128.pow(frac.len() as u32);
        let frac: u128 = frac.parse().map_err(|_| bad())?;
        let total = u128::from(whole) * u128::from(mult) + frac * u128::from(mult) / scale;
        u64::try_from(total).map_err(|_| format!("{s:?} is too large"))?
    } else {
        let n: u64 = num.parse().map_err(|_| bad())?;
        n.checked_mul(mult)
            .ok_or_else(|| format!("{s:?} is too large"))?
    };
    if bytes == 0 {
        return Err(format!("{s:?}: the allowance must be more than 0 bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod byte_tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_take_units() {
        assert_eq!(parse_bytes("268435456"), Ok(268_435_456));
        assert_eq!(parse_bytes("100MiB"), Ok(100 << 20));
        assert_eq!(parse_bytes("256 mib"), Ok(256 << 20));
        assert_eq!(parse_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("500MB"), Ok(500_000_000));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        for bad in [
            "",
            "MiB",
            "1.5.2GiB",
            "12 parsecs",
            "-5",
            "0",
            "1.GiB",
            "99999999999TiB",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} accepted");
        }
    }
}
