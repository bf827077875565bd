//! `ferry connect` (TUN, full tunnel, DNS, kill switch) and `ferry disconnect`.
//!
//! Order matters for leak protection: the kill switch goes in first (only loopback, the TUN
//! device and WireGuard datagrams to the relay endpoint may leave), then the host route that
//! pins the endpoint to the physical path, then the TUN device, the full-tunnel routes and
//! DNS. A host-name endpoint is resolved before all of this (`session::prepare`), while the
//! system resolver still works; the kill switch then allows exactly the resolved address.
//! Nothing is undone when the process stops, whatever the reason: after an error or a
//! refused receipt the host stays cut off until `ferry disconnect` undoes everything.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::ConnectArgs;
use crate::config::Config;
use crate::engine::{Engine, relay_socket};
use crate::lifecycle::{self, PidFile};
use crate::netcfg::{self, Applied};
use crate::paths::{Paths, wait_until};
use crate::session::prepare;
use crate::status::{State, Status};

/// `ferry connect RELAY`.
pub(crate) fn run(paths: &Paths, cfg: &Config, args: ConnectArgs) -> Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!("`ferry connect` needs root (TUN, routes, nftables); `ferry socks5` needs none");
    }
    paths.ensure_state()?;
    let pid_file = PidFile::claim(paths, "connect")?;
    let shown = crate::session::relay_label(args.relay.as_deref());
    lifecycle::record_start(paths, "connect", shown, netcfg::kill_switch_present());
    let result = connect(paths, cfg, args);
    if let Err(e) = &result {
        lifecycle::record_failed_start(paths, e, netcfg::kill_switch_present());
    }
    drop(pid_file);
    result
}

fn connect(paths: &Paths, cfg: &Config, args: ConnectArgs) -> Result<ExitCode> {
    let mut setup = prepare(paths, cfg, args.relay.as_deref(), &args.auto)?;
    // Resolved by `prepare`, before the kill switch: it allows exactly this address (with
    // `--auto`, those of every relay of the ranking, so failover never lifts it).
    let endpoint = setup.endpoint;
    let mut applied = Applied::load(&paths.state);
    lifecycle::ensure_same_netns(applied.netns, "the previous session's kill switch and DNS")?;
    applied.netns = lifecycle::current_netns();

    let mut allowed = vec![endpoint];
    allowed.extend(setup.hello);
    if let Some(a) = &setup.auto {
        allowed = a.all_addresses(setup.ipv6);
    }
    netcfg::kill_switch_on(&args.tun, &allowed)?;
    applied.kill_switch = true;
    applied.save(&paths.state)?;
    lifecycle::record_start(paths, "connect", &setup.relay.name, true);
    let route = netcfg::pin_endpoint_route(endpoint.ip())?;
    // A route an earlier, unfinished session pinned to another relay is still ours to remove.
    if let Some(old) = applied.endpoint_route.replace(route.clone()) {
        if old != route && !applied.extra_routes.contains(&old) {
            applied.extra_routes.push(old);
        }
    }
    applied.save(&paths.state)?;
    // The other ranked relays' paths too: a failover's Hello and handshake must not go into
    // the tunnel that is failing.
    for ip in allowed.iter().map(SocketAddr::ip) {
        let pinned = |r: &String| r.split('/').next() == Some(ip.to_string().as_str());
        if ip != endpoint.ip() && !applied.extra_routes.iter().any(pinned) {
            match netcfg::pin_endpoint_route(ip) {
                Ok(r) => {
                    applied.extra_routes.push(r);
                    applied.save(&paths.state)?;
                }
                // That relay cannot take over then; the session does not depend on it.
                Err(e) => {
                    tracing::warn!(relay = %ip, error = %format!("{e:#}"), "no route to a fallback relay")
                }
            }
        }
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        crate::session::open_first(&mut setup).await?;
        let relay = &setup.relay;
        let tun = tun_rs::DeviceBuilder::new()
            .name(&args.tun)
            .mtu(relay.mtu)
            .build_async()
            .with_context(|| format!("creating TUN {}", args.tun))?;
        netcfg::set_tunnel_addresses(&args.tun, &[], &relay.address)?;
        netcfg::ip(&[
            "link",
            "set",
            "dev",
            &args.tun,
            "mtu",
            &relay.mtu.to_string(),
            "up",
        ])?;
        netcfg::full_tunnel_routes(&args.tun)?;
        if !args.no_dns && !relay.dns.is_empty() {
            let backup = paths.state.join("resolv.conf.ferry-backup");
            netcfg::set_dns(&args.resolv_conf, &backup, &relay.dns)?;
            applied.resolv_conf = Some((args.resolv_conf.clone(), backup));
            applied.save(&paths.state)?;
        }
        // Handed from engine to engine: the socket they follow the network with.
        // (`setup.endpoint`: `--auto` may have moved on from the first relay of the ranking.)
        let mut udp = Some(relay_socket(setup.endpoint).await?);
        // A session gone with allowance left (the relay ended it: router reboot, agent
        // restart or upgrade; or it stopped answering: restarted without it) is followed by a
        // new one with the same voucher, behind the kill switch, until the relay answers, a
        // refusal, or `ferry disconnect`.
        crate::session::run_sessions(&mut setup, async |setup, old| {
            if let Some(old) = old {
                netcfg::set_tunnel_addresses(&args.tun, &old.address, &setup.relay.address)?;
                netcfg::full_tunnel_routes(&args.tun)?;
                if old.mtu != setup.relay.mtu {
                    let mtu = setup.relay.mtu.to_string();
                    netcfg::ip(&["link", "set", "dev", &args.tun, "mtu", &mtu])?;
                }
                if let (Some((conf, backup)), false) = (
                    &applied.resolv_conf,
                    old.dns == setup.relay.dns || setup.relay.dns.is_empty(),
                ) {
                    netcfg::set_dns(conf, backup, &setup.relay.dns)?;
                }
                if old.endpoint != setup.relay.endpoint {
                    // Failover: another relay, another socket (the kill switch allows it).
                    udp = Some(relay_socket(setup.endpoint).await?);
                }
            }
            let sock = udp.take().context("no relay socket (internal)")?;
            let mut engine = engine_for(setup, sock, paths)?;
            let r = drive(&mut engine, &tun).await;
            udp = Some(engine.socket());
            Ok((engine, r))
        })
        .await
    });
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.context("disconnected; the kill switch stays on until `ferry disconnect`")),
    }
}

/// The engine for the session `setup` holds (behind the kill switch `connect` installed).
fn engine_for(
    setup: &mut crate::session::Setup,
    udp: Arc<tokio::net::UdpSocket>,
    paths: &Paths,
) -> Result<Engine> {
    let mut engine = crate::session::engine(setup, udp, "connect", paths)?;
    engine.status_mut().kill_switch = true;
    engine.repin_route_on_roam();
    Ok(engine)
}

async fn drive(engine: &mut Engine, tun: &tun_rs::AsyncDevice) -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut net = vec![0u8; 65536];
    let mut buf = vec![0u8; 65536];
    loop {
        let udp = engine.socket();
        tokio::select! {
            r = udp.recv(&mut net) => match r {
                Ok(n) => {
                    for p in engine.handle_datagram(&net[..n]).await {
                        if let Err(e) = tun.send(&p).await {
                            tracing::trace!(error = %e, "tun write failed");
                        }
                    }
                }
                // ICMP errors (relay down) surface on the connected socket; keep trying.
                Err(e) => tracing::trace!(error = %e, "udp recv"),
            },
            r = tun.recv(&mut buf) => {
                let n = r.context("reading the TUN device")?;
                engine.send_inner(&buf[..n]).await;
            }
            _ = tick.tick() => engine.on_tick().await,
            _ = term.recv() => engine.close().await,
            _ = int.recv() => engine.close().await,
        }
        if let Some(f) = engine.failure() {
            bail!("{f}");
        }
        if engine.closed() {
            return Ok(());
        }
    }
}

/// `ferry disconnect`: stop the connect process (final receipt), then undo every change.
pub(crate) fn disconnect(paths: &Paths, wait: Duration) -> Result<ExitCode> {
    let applied = Applied::load(&paths.state);
    let running = lifecycle::running(paths);
    if let Some(r) = &running {
        lifecycle::ensure_same_netns(r.netns, &format!("the running session (pid {})", r.pid))?;
    }
    lifecycle::ensure_same_netns(applied.netns, "the kill switch and DNS change")?;
    if let Some(r) = running {
        let pid = Pid::from_raw(r.pid);
        let _ = kill(pid, Signal::SIGTERM);
        let gone = || kill(pid, None).is_err();
        if !wait_until(wait, gone) {
            tracing::warn!(mode = %r.mode, "the session did not stop in time; killing it");
            let _ = kill(pid, Signal::SIGKILL);
            wait_until(Duration::from_secs(2), gone);
        }
        let _ = std::fs::remove_file(paths.pid());
    }
    let mut errors = Vec::new();
    if let Some((conf, backup)) = &applied.resolv_conf {
        if backup.exists() {
            if let Err(e) = netcfg::restore_dns(conf, backup) {
                errors.push(format!("{e:#}"));
            }
        }
    }
    for dst in applied.endpoint_route.iter().chain(&applied.extra_routes) {
        let fam = if dst.contains(':') { "-6" } else { "-4" };
        let _ = netcfg::ip(&[fam, "route", "del", dst]);
    }
    if applied.kill_switch || netcfg::kill_switch_present() {
        if let Err(e) = netcfg::kill_switch_off() {
            errors.push(format!("{e:#}"));
        }
    }
    if errors.is_empty() {
        let _ = std::fs::remove_file(Applied::path(&paths.state));
    }
    if let Ok(mut st) = Status::read(&paths.status()) {
        st.kill_switch = netcfg::kill_switch_present();
        if matches!(
            st.state,
            State::Connecting | State::Connected | State::Disconnecting
        ) {
            st.state = State::Stopped;
        }
        let _ = st.write(&paths.status());
    }
    if !errors.is_empty() {
        bail!("disconnect incomplete: {}", errors.join("; "));
    }
    Ok(ExitCode::SUCCESS)
}
