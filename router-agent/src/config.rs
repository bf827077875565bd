//! The agent's TOML configuration: parsing, validation, and conversion into relay settings.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use ferry_keys::WgPublicKey;
use ferry_relay_core::{ExitPorts, IpNet, PolicyConfig, PortRule, Proto, Service};
use serde::Deserialize;

/// Whole agent configuration (`/etc/ferry/agent.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub wireguard: Wireguard,
    #[serde(default)]
    pub egress: Egress,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default, rename = "peer")]
    pub peers: Vec<Peer>,
    /// `[identity]`: relay receipts key (paid sessions, see `config_paid.rs`).
    #[serde(default)]
    pub identity: Option<crate::config_paid::Identity>,
    /// `[network]`: network id, ledger key and URL (paid sessions).
    #[serde(default)]
    pub network: Option<crate::config_paid::Network>,
    /// `[metering]`: receipt cadence, credit window, receipt store.
    #[serde(default)]
    pub metering: crate::config_paid::Metering,
    /// `[paid]`: admit paying clients.
    #[serde(default)]
    pub paid: Option<crate::config_paid::Paid>,
    /// `[log]`: default filter and format (FERRY_LOG / RUST_LOG override the filter).
    #[serde(default)]
    pub log: ferry_telemetry::LogConfig,
    /// `[metrics]`: /metrics, /healthz, /status (see `observability.rs`).
    #[serde(default)]
    pub metrics: ferry_telemetry::MetricsConfig,
    /// `[dns]`: the forwarder on the tunnel addresses; absent = off (see `dns.rs`).
    #[serde(default)]
    pub dns: Option<ferry_dns::DnsConfig>,
    /// `[directory]`: publish this relay in the directory; absent = not listed.
    #[serde(default)]
    pub directory: Option<crate::config_directory::Directory>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Wireguard {
    pub private_key_file: PathBuf,
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    pub address: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EgressMode {
    Tun,
    Userspace,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Egress {
    #[serde(default = "default_mode")]
    pub mode: EgressMode,
    #[serde(default = "default_tun_name")]
    pub tun_name: String,
    #[serde(default = "yes")]
    pub masquerade: bool,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub tunnel_services: Vec<String>,
    #[serde(default = "yes")]
    pub tunnel_ping: bool,
    #[serde(default = "yes")]
    pub tun_offload: bool,
    /// Exit ports closed to clients (`"tcp/25"`, `"udp/6881-6889"`, `"25"` = both protocols).
    /// Unset: `["tcp/25"]`; `[]` opens every port.
    #[serde(default)]
    pub block_ports: Option<Vec<String>>,
    /// If set, the only exit ports clients may use (a reduced exit policy); `block-ports`
    /// must then be left unset.
    #[serde(default)]
    pub allow_ports: Option<Vec<String>>,
}

/// Outgoing SMTP is closed by default: spam sent through a relay would land on the
/// household's IP reputation.
fn default_block_ports() -> Vec<String> {
    vec!["tcp/25".to_owned()]
}

impl Default for Egress {
    fn default() -> Self {
        Self {
            mode: default_mode(),
            tun_name: default_tun_name(),
            masquerade: true,
            allow: Vec::new(),
            deny: Vec::new(),
            tunnel_services: Vec::new(),
            tunnel_ping: true,
            tun_offload: true,
            block_ports: None,
            allow_ports: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Limits {
    #[serde(default = "default_max_peers")]
    pub max_peers: usize,
    #[serde(default)]
    pub client_rate_mbit: u64,
    /// Handshakes per second processed without a cookie round trip while under load
    /// (relay-wide DH budget, see ferry-relay-core's admission); 0 = plain WireGuard cookies.
    #[serde(default = "default_handshake_budget")]
    pub handshake_budget: u64,
    /// All paying clients together, client → internet / internet → client, Mbit/s (0 = not
    /// limited). Trusted peers (the household's own) are not counted.
    #[serde(default)]
    pub share_up_mbit: u64,
    #[serde(default)]
    pub share_down_mbit: u64,
    /// Paid bytes (both directions) per local day / monthly period, GiB (0 = no quota).
    #[serde(default)]
    pub daily_quota_gib: f64,
    #[serde(default)]
    pub monthly_quota_gib: f64,
    /// Day of month the monthly quota starts again (1..=31; 31 = each month's last day).
    #[serde(default = "one")]
    pub quota_reset_day: u8,
    /// Sharing windows in local time, e.g. `["mon-fri 18:00-23:30", "sat,sun 00:00-24:00"]`;
    /// empty = always.
    #[serde(default)]
    pub schedule: Vec<String>,
    /// POSIX TZ string or zone name for the schedule and quota resets; unset or empty: the
    /// system's (`TZ`, OpenWrt's /etc/TZ, /etc/localtime; else UTC).
    #[serde(default)]
    pub timezone: Option<String>,
}

fn one() -> u8 {
    1
}

fn default_handshake_budget() -> u64 {
    ferry_relay_core::DEFAULT_HANDSHAKE_BUDGET
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_peers: default_max_peers(),
            client_rate_mbit: 0,
            handshake_budget: default_handshake_budget(),
            share_up_mbit: 0,
            share_down_mbit: 0,
            daily_quota_gib: 0.0,
            monthly_quota_gib: 0.0,
            quota_reset_day: 1,
            schedule: Vec::new(),
            timezone: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Peer {
    pub name: String,
    pub public_key: String,
    pub allowed_ips: Vec<String>,
    #[serde(default)]
    pub persistent_keepalive: Option<u16>,
}

fn default_listen() -> String {
    "0.0.0.0:51820".into()
}
fn default_mtu() -> u32 {
    1420
}
fn default_mode() -> EgressMode {
    EgressMode::Tun
}
fn default_tun_name() -> String {
    "ferry0".into()
}
fn yes() -> bool {
    true
}
fn default_max_peers() -> usize {
    1024
}

/// Hard upper bound on `max-peers` (router memory; boringtun indices are 24 bits).
pub const MAX_PEERS_LIMIT: usize = 65_536;

/// A validated configuration with every string parsed.
#[derive(Debug, Clone)]
pub struct Validated {
    pub raw: Config,
    /// Private key path, resolved against the config file's directory.
    pub private_key_file: PathBuf,
    pub listen: SocketAddr,
    pub mtu: u16,
    pub address: Vec<IpNet>,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    pub tunnel_services: Vec<Service>,
    pub exit_ports: ExitPorts,
    pub peers: Vec<ValidPeer>,
    /// Paid sessions (None = disabled).
    pub paid: Option<crate::config_paid::PaidSettings>,
    /// Directory announces (None = not announcing; needs paid sessions and a ledger URL).
    pub directory: Option<crate::config_directory::DirectorySettings>,
    /// The owner's quota and schedule (`[limits]`).
    pub share: crate::share::Rules,
    /// Total rate of all paid clients, bytes/s (up, down; 0 = not limited).
    pub share_rate: (u64, u64),
}

#[derive(Debug, Clone)]
pub struct ValidPeer {
    pub name: String,
    pub public_key: WgPublicKey,
    pub allowed_ips: Vec<IpNet>,
    pub persistent_keepalive: Option<u16>,
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Validated> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")))
            .with_context(|| format!("invalid config {}", path.display()))
    }

    /// Parses and validates TOML text; relative paths resolve against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Validated> {
        // Two steps: syntax (errors with line and column) into a generic table, then the
        // schema from that table. One deserializer type serves every section struct: going
        // straight from text instantiated each struct for five toml_edit deserializers
        // (~100 KB of the stripped mipsel agent).
        let table: toml::Table = text.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        let raw: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        raw.validate(base_dir)
    }

    fn validate(self, base_dir: &Path) -> Result<Validated> {
        let w = &self.wireguard;
        let listen: SocketAddr = w.listen.parse().with_context(|| {
            format!(
                "wireguard.listen: {:?} is not an address:port like 0.0.0.0:51820",
                w.listen
            )
        })?;
        if listen.port() == 0 {
            bail!("wireguard.listen: port must be 1..=65535, got 0");
        }
        if w.address.is_empty() {
            bail!(
                "wireguard.address: at least one tunnel address (e.g. \"10.77.0.1/24\") is required"
            );
        }
        let address = cidrs("wireguard.address", &w.address)?;
        let has_v6 = address.iter().any(|a| a.addr().is_ipv6());
        let min_mtu = if has_v6 { 1280 } else { 576 };
        if !(min_mtu..=9000).contains(&w.mtu) {
            bail!(
                "wireguard.mtu: {} is out of range {min_mtu}..=9000{}",
                w.mtu,
                if has_v6 {
                    " (IPv6 needs at least 1280)"
                } else {
                    ""
                }
            );
        }
        let mtu = u16::try_from(w.mtu).context("wireguard.mtu")?;
        if w.private_key_file.as_os_str().is_empty() {
            bail!("wireguard.private-key-file: must not be empty");
        }
        let private_key_file = if w.private_key_file.is_absolute() {
            w.private_key_file.clone()
        } else {
            base_dir.join(&w.private_key_file)
        };

        let e = &self.egress;
        check_ifname(&e.tun_name).context("egress.tun-name")?;
        // Mapped/NAT64 notation (::ffff:a.b.c.d/n, 64:ff9b::a.b.c.d/n, n >= 96) means the IPv4
        // network: destinations are compared in IPv4 form, so such entries would never match.
        let allow = cidrs("egress.allow", &e.allow)?
            .into_iter()
            .map(ferry_relay_core::canonical_net)
            .collect();
        let deny = cidrs("egress.deny", &e.deny)?
            .into_iter()
            .map(ferry_relay_core::canonical_net)
            .collect();
        let mut tunnel_services = e
            .tunnel_services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                parse_service(s).with_context(|| format!("egress.tunnel-services[{i}]: {s:?}"))
            })
            .collect::<Result<Vec<_>>>()?;
        add_dns_services(self.dns.as_ref(), &mut tunnel_services)?;
        let exit_ports = exit_ports(e.block_ports.as_deref(), e.allow_ports.as_deref())?;

        let l = &self.limits;
        if !(1..=MAX_PEERS_LIMIT).contains(&l.max_peers) {
            bail!(
                "limits.max-peers: {} is out of range 1..={MAX_PEERS_LIMIT}",
                l.max_peers
            );
        }
        if l.client_rate_mbit > 100_000 {
            bail!(
                "limits.client-rate-mbit: {} is above 100000 (use 0 for unlimited)",
                l.client_rate_mbit
            );
        }
        let (share, share_rate) = share_rules(l)?;
        if l.handshake_budget > 100_000 {
            bail!(
                "limits.handshake-budget: {} is above 100000 handshakes/s",
                l.handshake_budget
            );
        }
        if self.peers.len() > l.max_peers {
            bail!(
                "{} [[peer]] entries exceed limits.max-peers = {}",
                self.peers.len(),
                l.max_peers
            );
        }

        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        let mut nets = HashSet::new();
        let mut peers = Vec::new();
        for (i, p) in self.peers.iter().enumerate() {
            let ctx = format!("peer[{i}] ({:?})", p.name);
            if p.name.is_empty()
                || p.name.len() > 64
                || !p
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
            {
                bail!("{ctx}: name must be 1..=64 characters of [A-Za-z0-9-_.@]");
            }
            if !names.insert(p.name.clone()) {
                bail!("{ctx}: duplicate peer name");
            }
            let public_key = WgPublicKey::from_base64(&p.public_key)
                .map_err(|e| anyhow::anyhow!("{ctx}: public-key: {e}"))?;
            if !keys.insert(public_key) {
                bail!("{ctx}: duplicate public-key");
            }
            if p.allowed_ips.is_empty() {
                bail!("{ctx}: allowed-ips must not be empty");
            }
            let allowed_ips = cidrs(&format!("{ctx}: allowed-ips"), &p.allowed_ips)?;
            for n in &allowed_ips {
                if !nets.insert(n.trunc()) {
                    bail!("{ctx}: allowed IP {n} is already used by another peer");
                }
            }
            peers.push(ValidPeer {
                name: p.name.clone(),
                public_key,
                allowed_ips,
                persistent_keepalive: p.persistent_keepalive,
            });
        }
        let paid = crate::config_paid::validate(
            self.identity.as_ref(),
            self.network.as_ref(),
            &self.metering,
            self.paid.as_ref(),
            listen,
            base_dir,
        )?;
        let mut paid = paid;
        let mut directory = crate::config_directory::validate(self.directory.as_ref())?;
        // One price: what the descriptor advertises is what sessions are signed at.
        if let (Some(p), Some(d)) = (paid.as_mut(), directory.as_mut()) {
            match (p.limits.price_micros_per_gib, d.price_micros_per_gib) {
                (Some(a), Some(b)) if a != b => bail!(
                    "paid.price-micros-per-gib ({a}) and directory.price-micros-per-gib ({b}) \
                     differ: the directory must advertise the price sessions are sold at (set \
                     one of them)"
                ),
                (a, b) => {
                    let price = a.or(b);
                    p.limits.price_micros_per_gib = price;
                    d.price_micros_per_gib = price;
                }
            }
        }
        if directory.is_some() && paid.as_ref().is_none_or(|p| p.ledger_url.is_none()) {
            bail!(
                "[directory] announces a paid relay: it needs [paid] enabled = true and \
                 [network] ledger-url (or set [directory] announce = false)"
            );
        }
        if paid.is_none() && share.limits_anything() {
            bail!(
                "limits: daily-quota-gib, monthly-quota-gib and schedule limit paid sharing: \
                 [paid] enabled = true is not set"
            );
        }
        Ok(Validated {
            share,
            share_rate,
            paid,
            directory,
            private_key_file,
            listen,
            mtu,
            address,
            allow,
            deny,
            tunnel_services,
            exit_ports,
            peers,
            raw: self,
        })
    }
}

impl Validated {
    /// The relay's own tunnel addresses (host parts).
    pub fn tunnel_ips(&self) -> Vec<IpAddr> {
        self.address.iter().map(IpNet::addr).collect()
    }

    /// Egress policy settings; `router_addresses` come from the host at startup.
    pub fn policy(&self, router_addresses: Vec<IpAddr>) -> PolicyConfig {
        PolicyConfig {
            allow: self.allow.clone(),
            deny: self.deny.clone(),
            router_addresses,
            tunnel_services: self.tunnel_services.clone(),
            tunnel_ping: self.raw.egress.tunnel_ping,
            exit_ports: self.exit_ports.clone(),
        }
    }

    /// The ports the descriptor advertises as blocked (both protocols or either; at most
    /// [`ferry_receipts::MAX_BLOCKED_PORTS`], the lowest first); none for an allow-list policy.
    pub fn advertised_blocked_ports(&self) -> Vec<u16> {
        let ExitPorts::Block(rules) = &self.exit_ports else {
            return Vec::new();
        };
        let mut ports: Vec<u16> = rules.iter().flat_map(|r| r.first..=r.last).collect();
        ports.sort_unstable();
        ports.dedup();
        ports.truncate(ferry_receipts::MAX_BLOCKED_PORTS);
        ports
    }
}

/// `[egress] block-ports` / `allow-ports` as the relay core's exit port policy.
/// The `[limits]` sharing rules: quotas in bytes, the schedule, the total rates in bytes/s.
fn share_rules(l: &Limits) -> Result<(crate::share::Rules, (u64, u64))> {
    let gib = |name: &str, v: f64| -> Result<Option<u64>> {
        if !(0.0..=1_000_000.0).contains(&v) {
            bail!("limits.{name}: {v} is not a GiB amount in 0..=1000000 (0 = no quota)");
        }
        Ok((v > 0.0).then(|| ((v * crate::share::GIB).round() as u64).max(1)))
    };
    let mbit = |name: &str, v: u64| -> Result<u64> {
        if v > 100_000 {
            bail!("limits.{name}: {v} is above 100000 (use 0 for unlimited)");
        }
        Ok(v * 125_000)
    };
    if !(1..=31).contains(&l.quota_reset_day) {
        bail!(
            "limits.quota-reset-day: {} is not a day of the month 1..=31",
            l.quota_reset_day
        );
    }
    if let Some(tz) = l.timezone.as_deref().filter(|t| !t.trim().is_empty()) {
        crate::share::parse_zone(tz).map_err(|e| anyhow::anyhow!("limits.timezone: {e}"))?;
    }
    let schedule = if l.schedule.is_empty() {
        None
    } else {
        Some(
            crate::share::Schedule::parse(&l.schedule)
                .map_err(|e| anyhow::anyhow!("limits.{e}"))?,
        )
    };
    let rules = crate::share::Rules {
        daily: gib("daily-quota-gib", l.daily_quota_gib)?,
        monthly: gib("monthly-quota-gib", l.monthly_quota_gib)?,
        reset_day: l.quota_reset_day,
        schedule,
    };
    let rate = (
        mbit("share-up-mbit", l.share_up_mbit)?,
        mbit("share-down-mbit", l.share_down_mbit)?,
    );
    Ok((rules, rate))
}

fn exit_ports(block: Option<&[String]>, allow: Option<&[String]>) -> Result<ExitPorts> {
    let rules = |field: &str, list: &[String]| -> Result<Vec<PortRule>> {
        list.iter()
            .enumerate()
            .map(|(i, s)| parse_port_rule(s).with_context(|| format!("egress.{field}[{i}]: {s:?}")))
            .collect()
    };
    match (block, allow) {
        (Some(_), Some(_)) => bail!(
            "egress: set either block-ports or allow-ports, not both (allow-ports lists the only \
             ports clients may use)"
        ),
        (_, Some(a)) => Ok(ExitPorts::AllowOnly(rules("allow-ports", a)?)),
        (Some(b), None) => Ok(ExitPorts::Block(rules("block-ports", b)?)),
        (None, None) => Ok(ExitPorts::Block(rules(
            "block-ports",
            &default_block_ports(),
        )?)),
    }
}

/// `tcp/25`, `udp/6881-6889`, `25` or `6881-6889` (both protocols).
fn parse_port_rule(s: &str) -> Result<PortRule> {
    let (proto, ports) = match s.split_once('/') {
        Some((p, rest)) => (
            Some(match p.trim() {
                "udp" => Proto::Udp,
                "tcp" => Proto::Tcp,
                other => bail!("unknown protocol {other:?} (expected udp or tcp)"),
            }),
            rest,
        ),
        None => (None, s),
    };
    let port = |t: &str| -> Result<u16> {
        match t.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => bail!("{t:?} is not a port 1..=65535"),
        }
    };
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(ports)?, port(ports)?),
    };
    ensure!(first <= last, "the range {first}-{last} is backwards");
    Ok(PortRule { proto, first, last })
}

fn cidrs(field: &str, list: &[String]) -> Result<Vec<IpNet>> {
    list.iter()
        .enumerate()
        .map(|(i, s)| parse_cidr(s).with_context(|| format!("{field}[{i}]")))
        .collect()
}

/// A name Linux accepts for a network interface (`dev_valid_name`: 1..=15 bytes, not `.` or
/// `..`, no `/`, `:` or whitespace), further limited to `[A-Za-z0-9-_.]` for nft and shells.
pub fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 15 {
        bail!("{name:?} must be 1..=15 characters long (Linux interface name)");
    }
    if name == "." || name == ".." {
        bail!("{name:?} is not a valid Linux interface name");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
    {
        bail!("{name:?} contains {c:?}; use only [A-Za-z0-9-_.] (no '/', ':' or whitespace)");
    }
    Ok(())
}

/// Parses "10.77.0.1/24" or a bare address (as /32 or /128).
pub fn parse_cidr(s: &str) -> Result<IpNet> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n);
    }
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(a));
    }
    bail!("{s:?} is not a valid CIDR (expected e.g. \"10.77.0.2/32\" or \"fd77::2/128\")")
}

/// An enabled `[dns]` is validated and opens udp/53 and tcp/53 (only) on the relay's tunnel
/// addresses, where the forwarder listens.
pub fn add_dns_services(
    dns: Option<&ferry_dns::DnsConfig>,
    services: &mut Vec<Service>,
) -> Result<()> {
    let Some(dns) = dns.filter(|d| d.enabled) else {
        return Ok(());
    };
    dns.validate().map_err(|e| anyhow::anyhow!("[dns]: {e}"))?;
    for proto in [Proto::Udp, Proto::Tcp] {
        let service = Service { proto, port: 53 };
        if !services.contains(&service) {
            services.push(service);
        }
    }
    Ok(())
}

fn parse_service(s: &str) -> Result<Service> {
    let (proto, port) = s
        .split_once('/')
        .context("expected \"udp/PORT\" or \"tcp/PORT\"")?;
    let proto = match proto.trim() {
        "udp" => Proto::Udp,
        "tcp" => Proto::Tcp,
        other => bail!("unknown protocol {other:?} (expected udp or tcp)"),
    };
    let port: u16 = port.trim().parse().context("port must be 1..=65535")?;
    if port == 0 {
        bail!("port must be 1..=65535");
    }
    Ok(Service { proto, port })
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
