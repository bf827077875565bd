//! `run` and `check-config`: load everything, build the relay, start the shell, clean up.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use ferry_keys::WgPrivateKey;
use ferry_netstack::{NetstackConfig, UserspaceEgress};
use ferry_relay_core::{IpNet, PeerConfig, PublicKey, Relay, RelayConfig, Verdict};
use std::sync::{Arc, Mutex};

use ferry_relay_io::{
    Egress, ForwardingGuard, NatGuard, SharedRelay, Shell, ShellConfig, TunEgress, bind_udp,
    local_addresses,
};
use ring::rand::SecureRandom;

use crate::config::{Config, EgressMode, Validated};
use crate::control;
use crate::metering::Metering;
use crate::{dns, observability};

/// `ferry-agent pause` / `resume`: creates (0600, synced) or removes the pause file the
/// running agent follows.
pub(crate) fn set_paused(path: &Path, paused: bool) -> Result<()> {
    let cfg = Config::load(path)?;
    let p = cfg
        .paid
        .as_ref()
        .context("pause/resume apply to paid sharing: [paid] enabled = true is not set")?;
    let file = crate::metering::pause_file(&p.store_path);
    if paused {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating state dir {}", dir.display()))?;
        }
        use std::os::unix::fs::OpenOptionsExt as _;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&file)
            .with_context(|| format!("writing {}", file.display()))?;
        f.sync_all()?;
        if let Some(dir) = file.parent() {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        say(&format!(
            "sharing paused: a running agent closes its paid sessions (final receipts) within \
             ~1 s and refuses new ones; `ferry-agent resume` shares again ({})",
            file.display()
        ))
    } else {
        match std::fs::remove_file(&file) {
            Ok(()) => say("sharing resumed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => say("sharing was not paused"),
            Err(e) => Err(e).with_context(|| format!("removing {}", file.display())),
        }
    }
}

fn say(text: &str) -> Result<()> {
    use std::io::Write as _;
    writeln!(std::io::stdout().lock(), "{text}").context("writing stdout")
}

pub(crate) fn check_config(path: &Path) -> Result<()> {
    let cfg = Config::load(path)?;
    let key = WgPrivateKey::load(&cfg.private_key_file)
        .with_context(|| format!("private key {}", cfg.private_key_file.display()))?;
    // Everything `run` loads is checked here too: a paid relay's identity key (present, 0600,
    // ours), so "config ok" means the agent will start.
    let paid = match &cfg.paid {
        Some(p) => {
            let id = crate::identity::load_key(&p.identity_key_file, path)?;
            format!(", paid sessions on (identity {})", id.public_key().to_hex())
        }
        None => String::new(),
    };
    let mut out = std::io::stdout().lock();
    std::io::Write::write_fmt(
        &mut out,
        format_args!(
            "config ok: listen {}, {} peer(s), egress {:?}, relay public key {}{paid}\n",
            cfg.listen,
            cfg.peers.len(),
            cfg.raw.egress.mode,
            key.public_key()
        ),
    )?;
    Ok(())
}

pub(crate) fn run(path: &Path) -> Result<()> {
    let cfg = Config::load(path)?;
    init_tracing(&cfg.raw.log)?;
    let key = WgPrivateKey::load(&cfg.private_key_file)
        .with_context(|| format!("private key {}", cfg.private_key_file.display()))?;
    runtime()?.block_on(run_async(path, cfg, key))
}

fn build_relay(cfg: &Validated, key: &WgPrivateKey) -> Result<Relay> {
    let router_addresses = local_addresses().context("listing the router's addresses")?;
    let mut salt = [0u8; 4];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| anyhow::anyhow!("OS randomness unavailable"))?;
    let mut relay = Relay::new(RelayConfig {
        private_key: key.static_secret(),
        tunnel_addresses: cfg.tunnel_ips(),
        policy: cfg.policy(router_addresses),
        max_peers: cfg.raw.limits.max_peers,
        client_rate_bytes: cfg.raw.limits.client_rate_mbit.saturating_mul(125_000),
        index_salt: u32::from_le_bytes(salt),
    });
    relay.set_handshake_budget(cfg.raw.limits.handshake_budget);
    relay.set_share_rate(cfg.share_rate.0, cfg.share_rate.1);
    for p in &cfg.peers {
        relay
            .add_peer(PeerConfig {
                public_key: PublicKey::from(*p.public_key.as_bytes()),
                allowed_ips: p.allowed_ips.clone(),
                preshared_key: None,
                persistent_keepalive: p.persistent_keepalive,
            })
            .with_context(|| format!("adding peer {:?}", p.name))?;
    }
    Ok(relay)
}

async fn run_async(path: &Path, cfg: Validated, key: WgPrivateKey) -> Result<()> {
    let relay: SharedRelay = Arc::new(Mutex::new(build_relay(&cfg, &key)?));
    let metering = match &cfg.paid {
        Some(p) => {
            // Clients are told a resolver answers on our tunnel address only when it does:
            // userspace egress serves port 53 there; TUN mode when `listen` is empty (the
            // tunnel addresses) or names one of them on port 53.
            let tunnel_ips = cfg.tunnel_ips();
            let dns = cfg.raw.dns.as_ref().is_some_and(|d| {
                d.enabled
                    && (cfg.raw.egress.mode == EgressMode::Userspace
                        || d.listen.is_empty()
                        || d.listen
                            .iter()
                            .any(|a| a.port() == 53 && tunnel_ips.contains(&a.ip())))
            });
            let share = (&cfg.share, cfg.raw.limits.timezone.as_deref());
            Some(
                Metering::setup(p, path, &relay, cfg.address.clone(), (cfg.mtu, dns), share)
                    .await?,
            )
        }
        None => None,
    };
    let udp = bind_udp(cfg.listen).with_context(|| format!("binding UDP {}", cfg.listen))?;
    let shell_cfg = ShellConfig {
        mtu: usize::from(cfg.mtu),
        ..ShellConfig::default()
    };
    tracing::info!(
        listen = %udp.local_addr()?,
        public_key = %key.public_key(),
        peers = cfg.peers.len(),
        mode = ?cfg.raw.egress.mode,
        rcvbuf = udp.recv_buffer_size(),
        gso = udp.max_gso_segments(),
        gro = udp.gro_segments(),
        "ferry-agent starting"
    );
    let control = tokio::spawn(control::run(path.to_owned(), relay.clone()));
    let announcer = match (&metering, &cfg.directory, &cfg.paid) {
        (Some(m), Some(d), Some(p)) => {
            let parts = m.directory_parts();
            // The network price metering learned at start, not asked for a second time.
            let d = crate::config_directory::DirectorySettings {
                price_micros_per_gib: d.price_micros_per_gib.or(parts.price),
                ..d.clone()
            };
            let a = announcer(&d, p, &cfg, &key, parts)?;
            Some(tokio::spawn(crate::directory::run(a)))
        }
        _ => None,
    };
    let (stop_tx, stop) = observability::stopper();
    let status_info = observability::StaticInfo {
        public_key: key.public_key().to_string(),
        listen: cfg.listen.to_string(),
        egress_mode: match cfg.raw.egress.mode {
            EgressMode::Tun => "tun",
            EgressMode::Userspace => "userspace",
        },
        names: observability::peer_names(&cfg),
    };
    let dns_cfg = cfg.raw.dns.clone().filter(|d| d.enabled);
    let result = match cfg.raw.egress.mode {
        EgressMode::Tun => {
            let e = &cfg.raw.egress;
            let tun = TunEgress::create(&e.tun_name, cfg.mtu, &cfg.address, e.tun_offload)
                .with_context(|| {
                    format!("creating TUN {} (needs root/CAP_NET_ADMIN)", e.tun_name)
                })?;
            tracing::info!(tun = tun.name(), offload = tun.offload(), "TUN device up");
            // Guards are dropped (table removed, sysctls restored) when this scope ends.
            let (_fwd, _nat) = if e.masquerade {
                let has_v6 = cfg.address.iter().any(|a| a.addr().is_ipv6());
                let fwd = ForwardingGuard::enable(has_v6).context("enabling IP forwarding")?;
                let subnets: Vec<IpNet> = cfg.address.iter().map(IpNet::trunc).collect();
                let nat = NatGuard::install(&e.tun_name, &subnets)
                    .context("installing nftables masquerade")?;
                tracing::info!(table = nat.table(), "forwarding and masquerade enabled");
                (Some(fwd), Some(nat))
            } else {
                (None, None)
            };
            let dns = match &dns_cfg {
                Some(d) => Some(dns::start_tun(d, &cfg.tunnel_ips(), stop()).await?),
                None => None,
            };
            let dns_stats = dns.as_ref().map(|d| d.stats.clone());
            let source = metering.as_ref().map(Metering::stats_source);
            observability::start(&cfg, relay.clone(), dns_stats, source, status_info, &stop)
                .await?;
            run_shell(
                Shell::with_shared(relay.clone(), udp, tun, shell_cfg),
                metering,
            )
            .await
        }
        EgressMode::Userspace => {
            let dns = match &dns_cfg {
                Some(d) => Some(dns::start_userspace(d, stop()).await?),
                None => None,
            };
            let dns_stats = dns.as_ref().map(|d| d.stats.clone());
            let source = metering.as_ref().map(Metering::stats_source);
            observability::start(&cfg, relay.clone(), dns_stats, source, status_info, &stop)
                .await?;
            let shared = relay.clone();
            let mut ns = NetstackConfig {
                mtu: usize::from(cfg.mtu),
                client_rate_bytes: cfg.raw.limits.client_rate_mbit.saturating_mul(125_000),
                ..NetstackConfig::default()
            }
            .with_policy(move |ip| {
                shared
                    .lock()
                    .is_ok_and(|r| r.policy().check_addr(ip) == Verdict::Allow)
            });
            if let Some(d) = &dns {
                ns.local_services = dns::local_services(&cfg.tunnel_ips(), d);
            }
            let egress = UserspaceEgress::new(ns);
            run_shell(
                Shell::with_shared(relay.clone(), udp, egress, shell_cfg),
                metering,
            )
            .await
        }
    };
    control.abort();
    if let Some(a) = announcer {
        a.abort();
    }
    let _ = stop_tx.send(true);
    let stats = relay.lock().map(|r| r.stats().clone()).unwrap_or_default();
    tracing::info!(
        udp_rx = stats.udp_rx_packets,
        udp_tx = stats.udp_tx_packets,
        handshakes = stats.handshakes,
        drops = stats.total_drops(),
        "ferry-agent stopped"
    );
    result.context("relay stopped")
}

/// `ferry-agent descriptor`: builds and prints the descriptor `run` would announce.
pub(crate) fn print_descriptor(path: &Path) -> Result<()> {
    let cfg = Config::load(path)?;
    let p = cfg
        .paid
        .as_ref()
        .context("the descriptor describes a paid relay: set [paid] enabled = true")?;
    let d = match &cfg.directory {
        Some(d) => d.clone(),
        None => crate::config_directory::validate(Some(&toml::Table::new()))?
            .context("default [directory]")?,
    };
    let key = WgPrivateKey::load(&cfg.private_key_file)
        .with_context(|| format!("private key {}", cfg.private_key_file.display()))?;
    let id_key = crate::identity::load_key(&p.identity_key_file, path)?;
    let identity = ferry_metering::RelayIdentity {
        network_id: p.network_id,
        ledger_key: p.ledger_key,
        key: Arc::new(id_key),
    };
    let share = crate::sharing::ShareShell::open(
        cfg.share.clone(),
        cfg.raw.limits.timezone.as_deref(),
        &p.store_path,
    )?;
    let parts = crate::metering::DirectoryParts {
        identity,
        state: Arc::default(),
        price: None,
        share: Arc::new(Mutex::new(share)),
    };
    let a = announcer(&d, p, &cfg, &key, parts)?;
    let desc = runtime()?.block_on(a.current(&mut None))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", crate::directory::describe(&desc))?;
    Ok(())
}

/// The one runtime configuration (one copy of the builder in the router binary).
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ferry-agent")
        .build()
        .context("starting tokio runtime")
}

/// The directory announcer of a paid relay with a `[directory]` section.
fn announcer(
    d: &crate::config_directory::DirectorySettings,
    p: &crate::config_paid::PaidSettings,
    cfg: &Validated,
    key: &WgPrivateKey,
    parts: crate::metering::DirectoryParts,
) -> Result<crate::directory::Announcer> {
    let url = p
        .ledger_url
        .as_deref()
        .context("[directory] needs [network] ledger-url")?;
    let ledger = ferry_store::LedgerClient::new(
        url,
        p.ledger_ca_file.as_deref(),
        std::time::Duration::from_secs(15),
    )
    .map_err(|e| anyhow::anyhow!("network.ledger-url: {e}"))?;
    // What one client can get: its own rate, or less if all clients together get less.
    let l = &cfg.raw.limits;
    let per_client = [l.client_rate_mbit, l.share_down_mbit]
        .into_iter()
        .filter(|m| *m > 0)
        .min()
        .unwrap_or(0);
    Ok(crate::directory::Announcer {
        settings: d.clone(),
        identity: parts.identity,
        wg_key: *key.public_key().as_bytes(),
        wg_port: cfg.listen.port(),
        hello_port: p.hello_listen.port(),
        limits: ferry_receipts::AdvertisedLimits {
            max_mbit: u32::try_from(per_client).unwrap_or(u32::MAX),
            blocked_ports: cfg.advertised_blocked_ports(),
            ..ferry_receipts::AdvertisedLimits::unlimited()
        },
        ledger,
        state: parts.state,
        share: parts.share,
    })
}

/// Runs the shell (and the paid-session tasks beside it) until SIGINT/SIGTERM; paid sessions
/// get their final receipts before the shell stops.
async fn run_shell<E: Egress>(shell: Shell<E>, metering: Option<Metering>) -> std::io::Result<()> {
    let running = metering.map(|m| m.start(shell.relay(), shell.udp()));
    let result = shell
        .run(async {
            shutdown_signal().await;
            if let Some(m) = &running {
                m.drain().await;
            }
        })
        .await;
    if let Some(m) = running {
        m.stop().await;
    }
    result
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => tracing::info!("SIGTERM received"),
                _ = i.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// ferry-telemetry's subscriber (FERRY_LOG, then RUST_LOG, then `[log] filter`), with its
/// privacy floor: the DNS crates never log query names.
fn init_tracing(log: &ferry_telemetry::LogConfig) -> Result<()> {
    let mut log = log.clone();
    // boringtun logs routine session expiry at ERROR/WARN; keep it quiet unless asked for.
    if !log.filter.contains("boringtun") {
        log.filter.push_str(",boringtun=off");
    }
    ferry_telemetry::logging::init(&log).context("[log]")
}
