//! What `connect` and `socks5` share before the tunnel starts: keys, relay, voucher, the
//! local receipt store and the ledger submitter.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ferry_keys::{IdentityKey, WgPrivateKey};
use ferry_metering::{ClientConfig, Tolerance};
use ferry_store::{HttpLedger, Store, Submitter, SubmitterConfig};

use tokio::signal::unix::{SignalKind, signal};

use crate::bootstrap::PaidSetup;
use crate::config::{Config, Relay, expand_home};
use crate::engine::Engine;
use crate::paths::Paths;
use crate::status::State;
use ferry_store::unix_now;

/// Ready-to-run pieces.
pub(crate) struct Setup {
    pub(crate) relay: Relay,
    /// The relay's WireGuard endpoint, resolved once at start (see [`crate::endpoint`]).
    pub(crate) endpoint: SocketAddr,
    /// Paid relays: where to say `Hello` (configured, or the resolved endpoint IP, 51821).
    pub(crate) hello: Option<SocketAddr>,
    pub(crate) wg: WgPrivateKey,
    pub(crate) paid: Option<PaidSetup>,
    pub(crate) submitter: Option<Submitter>,
    /// The ledger refusals of an over-claiming relay are reported to (its directory).
    pub(crate) directory: Option<ferry_store::LedgerClient>,
    /// `--auto`: the ranking the relay came from (failover takes the next).
    pub(crate) auto: Option<crate::auto::Auto>,
    /// `--auto --ipv6`: use the relays' IPv6 endpoints.
    pub(crate) ipv6: bool,
}

impl Setup {
    /// Switches to `relay` (failover): its endpoint and Hello address, a fresh session.
    fn switch_to(&mut self, relay: Relay, template: &PaidSetup) -> Result<()> {
        let endpoint = relay.endpoint.resolve_blocking()?;
        self.hello = relay.paid.as_ref().map(|p| p.hello_addr(endpoint));
        self.endpoint = endpoint;
        self.relay = relay;
        self.paid = Some(template.fresh());
        Ok(())
    }

    /// `--auto`: moves to the next relay of the ranking (noting `why` as the failover's
    /// reason) and switches to it. `None` when the ranking is used up (or there is none).
    fn next_of_ranking(
        &mut self,
        why: &str,
        template: &PaidSetup,
    ) -> Option<(crate::relays::Listed, Result<()>)> {
        let next = self.auto.as_mut()?.advance(why)?.clone();
        let switched = crate::auto::relay_of(&next, self.ipv6)
            .and_then(|relay| self.switch_to(relay, template));
        Some((next, switched))
    }
}

/// `prepare` for `--auto`: the voucher first (its network, ledger key and max price decide
/// which listings count), then the directory's ranking ([`crate::auto::choose`]), then the
/// first relay of it.
fn prepare_auto(paths: &Paths, cfg: &Config, filters: &crate::relays::Filters) -> Result<Setup> {
    anyhow::ensure!(
        !crate::netcfg::kill_switch_present(),
        "the kill switch of an earlier session is still on: it blocks the directory and the \
         pings to relays; run `ferry disconnect` first"
    );
    let voucher = crate::ledger::load_voucher(&paths.voucher())?;
    let identity = IdentityKey::load(&paths.identity())
        .context("identity key (run `ferry keygen`)")?
        .signing_key();
    let auto = crate::auto::choose(cfg, filters, &voucher, &identity.public_key())?;
    let relay = crate::auto::relay_of(auto.listed(), filters.ipv6)?;
    let mut setup = prepare_relay(paths, cfg, relay)?;
    setup.auto = Some(auto);
    setup.ipv6 = filters.ipv6;
    Ok(setup)
}

/// Loads keys, resolves the relay endpoint (before any kill switch exists: the system
/// resolver still works) and, for a paid relay, loads the voucher, the receipt store and
/// the submitter.
pub(crate) fn prepare(
    paths: &Paths,
    cfg: &Config,
    relay: Option<&str>,
    auto: &crate::cli::AutoArgs,
) -> Result<Setup> {
    match relay {
        Some(name) => prepare_relay(paths, cfg, cfg.relay(name)?),
        None if auto.auto => prepare_auto(paths, cfg, &auto.filters()),
        None => anyhow::bail!("name a relay from client.toml, or use --auto"),
    }
}

/// What the status shows before the relay is known.
pub(crate) fn relay_label(relay: Option<&str>) -> &str {
    relay.unwrap_or("(choosing from the directory)")
}

/// The engine for the session `setup` holds, with the `--auto` choice in its status.
pub(crate) fn engine(
    setup: &mut Setup,
    udp: Arc<tokio::net::UdpSocket>,
    mode: &str,
    paths: &Paths,
) -> Result<Engine> {
    let mut engine = Engine::new(
        &setup.relay,
        &setup.wg,
        udp,
        setup.paid.take(),
        mode,
        Some(paths.status()),
    )?;
    engine.status_mut().choice = setup.auto.as_ref().map(|a| a.choice.clone());
    Ok(engine)
}

fn prepare_relay(paths: &Paths, cfg: &Config, relay: Relay) -> Result<Setup> {
    let wg = WgPrivateKey::load(&paths.wg()).context("WireGuard key (run `ferry keygen`)")?;
    let endpoint = relay.endpoint.resolve_blocking().map_err(|e| {
        if relay.endpoint.host().is_some() && crate::netcfg::kill_switch_present() {
            e.context(
                "the kill switch of an earlier session is still on and blocks the resolver; \
                 run `ferry disconnect` first",
            )
        } else {
            e
        }
    })?;
    let hello = relay.paid.as_ref().map(|p| p.hello_addr(endpoint));
    let Some(rp) = &relay.paid else {
        return Ok(Setup {
            relay,
            endpoint,
            hello,
            wg,
            paid: None,
            submitter: None,
            directory: None,
            auto: None,
            ipv6: false,
        });
    };
    let identity = IdentityKey::load(&paths.identity())
        .context("identity key (run `ferry keygen`)")?
        .signing_key();
    let vpath = rp
        .voucher
        .as_deref()
        .map(expand_home)
        .unwrap_or_else(|| paths.voucher());
    let voucher = crate::ledger::load_voucher(&vpath)?;
    ensure!(
        voucher.client_key == identity.public_key(),
        "voucher {} belongs to another identity key",
        vpath.display()
    );
    ensure!(
        voucher.expires_at >= unix_now(),
        "voucher {} expired; request a new one",
        vpath.display()
    );
    let store_path = paths.receipts(cfg);
    let (store, report) = Store::open(&store_path)
        .with_context(|| format!("receipt store {}", store_path.display()))?;
    if report.dropped_bytes > 0 {
        tracing::warn!(
            dropped = report.dropped_bytes,
            "receipt store recovered a torn tail"
        );
    }
    let store = Arc::new(Mutex::new(store));
    let submitter = match &cfg.client.ledger_url {
        Some(url) => {
            let ledger = HttpLedger::with_ca_file(
                url,
                cfg.client.ledger_ca_file.as_deref(),
                Duration::from_secs(10),
            )?;
            let rng = ring::rand::SystemRandom::new();
            let random = Box::new(move || {
                let mut b = [0u8; 8];
                let _ = ring::rand::SecureRandom::fill(&rng, &mut b);
                u64::from_le_bytes(b)
            });
            Some(Submitter::new(
                store.clone(),
                ledger,
                SubmitterConfig::default(),
                random,
            ))
        }
        None => None,
    };
    let tol = Tolerance::default();
    let tolerance = Tolerance {
        basis_points: cfg.client.tolerance_bp.unwrap_or(tol.basis_points),
        slack_bytes: cfg
            .client
            .tolerance_slack_kib
            .map_or(tol.slack_bytes, |k| k.saturating_mul(1024)),
    };
    Ok(Setup {
        relay,
        endpoint,
        hello,
        wg,
        paid: Some(PaidSetup {
            identity: Arc::new(identity),
            voucher,
            store,
            kick: submitter.as_ref().map(|s| s.kicker()),
            cfg: ClientConfig {
                tolerance,
                max_price_micros_per_gib: None,
            },
            boot: None,
        }),
        directory: match &cfg.client.ledger_url {
            Some(url) => Some(crate::ledger::client(
                url,
                cfg.client.ledger_ca_file.as_deref(),
            )?),
            None => None,
        },
        submitter,
        auto: None,
        ipv6: false,
    })
}

/// For a paid relay: `Hello` outside the tunnel; adopts the addresses the relay assigned.
pub(crate) async fn open_paid_session(setup: &mut Setup) -> Result<()> {
    let (Some(paid), Some(rp), Some(hello)) =
        (setup.paid.as_mut(), setup.relay.paid.as_ref(), setup.hello)
    else {
        return Ok(());
    };
    // A relay from the directory: its tunnel facts come only with the session, and a relay
    // that does not answer is soon left for the next.
    let from_directory = setup.auto.is_some();
    let timeout = Duration::from_secs(if from_directory { 5 } else { 15 });
    let boot = crate::bootstrap::bootstrap(
        paid,
        rp.identity_key,
        setup.wg.public_key().0,
        hello,
        timeout,
        from_directory,
    )
    .await?;
    if let (true, Some(t)) = (from_directory, &boot.tunnel) {
        apply_tunnel(&mut setup.relay, t);
    }
    let nets = crate::bootstrap::host_nets(boot.v4, boot.v6);
    if !nets.is_empty() {
        setup.relay.address = nets;
    }
    anyhow::ensure!(
        !setup.relay.address.is_empty(),
        "the relay assigned no tunnel address and none is configured"
    );
    tracing::info!("paid session accepted by the relay");
    paid.boot = Some(boot);
    Ok(())
}

/// The first session. With `--auto` a relay that does not answer its Hello, refuses (busy,
/// paused, price) or sends no tunnel facts is left for the next of the ranking, as in
/// [`failover`]; without, the error is the caller's.
pub(crate) async fn open_first(setup: &mut Setup) -> Result<()> {
    let template = setup.paid.as_ref().map(PaidSetup::fresh);
    loop {
        let err = match open_paid_session(setup).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let (true, Some(t)) = (setup.auto.is_some(), &template) else {
            return Err(err);
        };
        let why = format!("{err:#}");
        let Some((next, switched)) = setup.next_of_ranking(&why, t) else {
            return Err(err.context("no other relay of the ranking is left"));
        };
        tracing::warn!(
            relay = %&next.descriptor.relay_key.to_hex()[..16],
            "{why}; trying the next relay of the ranking"
        );
        switched?;
    }
}

/// A directory relay's signed tunnel facts: its control address (IPv4 first), the resolvers
/// it runs, the inner MTU.
fn apply_tunnel(relay: &mut Relay, t: &ferry_receipts::SessionTunnel) {
    use ferry_receipts::{TUNNEL_DNS_V4, TUNNEL_DNS_V6};
    let (v4, v6) = (t.v4().map(IpAddr::V4), t.v6().map(IpAddr::V6));
    if let Some(p) = relay.paid.as_mut() {
        p.control_address = v4.or(v6);
    }
    relay.dns = [(TUNNEL_DNS_V4, v4), (TUNNEL_DNS_V6, v6)]
        .into_iter()
        .filter(|(bit, _)| t.dns & bit != 0)
        .filter_map(|(_, a)| a)
        .collect();
    relay.mtu = t.mtu;
}

/// SIGTERM and SIGINT (`ferry disconnect`, Ctrl-C), watched while a new session is sought.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn watch() -> Option<Self> {
        Some(Self {
            term: signal(SignalKind::terminate()).ok()?,
            int: signal(SignalKind::interrupt()).ok()?,
        })
    }

    /// `f`'s output, or `None` when a stop signal came first.
    async fn or_stop<T>(&mut self, f: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            r = f => Some(r),
            _ = self.term.recv() => None,
            _ = self.int.recv() => None,
        }
    }
}

/// What [`reopen`] came to.
enum Reopen {
    /// A new session is open (`setup` holds it).
    Opened,
    /// `ferry disconnect` (SIGTERM) or Ctrl-C while trying.
    Stopped,
    /// The relay refused (voucher used up, relay busy) or signals could not be watched.
    Failed(anyhow::Error),
}

/// Runs the session `setup` holds with `run` (which builds its engine and drives it; `old`
/// is the previous session's relay, `None` the first time), and again on a new session each
/// time one is gone while its voucher has allowance left ([`Engine::may_reopen`]: the relay
/// ended it, or stopped answering). The ledger submitter runs meanwhile; the last engine's
/// status says how it ended. Returns how the last session ended.
pub(crate) async fn run_sessions(
    setup: &mut Setup,
    mut run: impl AsyncFnMut(&mut Setup, Option<&Relay>) -> Result<(Engine, Result<()>)>,
) -> Result<()> {
    let template = setup.paid.as_ref().map(PaidSetup::fresh);
    let stop = Arc::new(tokio::sync::Notify::new());
    let sub = setup.submitter.take().map(|s| {
        let stop = stop.clone();
        tokio::spawn(s.run(async move { stop.notified().await }))
    });
    let mut reports = Vec::new();
    let ended = async {
        let (mut engine, mut r) = run(setup, None).await?;
        loop {
            if let (Some(refusal), Some(dir)) = (engine.refusal(), &setup.directory) {
                // In the background: behind the kill switch it gets through only once the
                // next session (failover) is up.
                reports.push(tokio::spawn(report_refusal(dir.clone(), *refusal)));
            }
            let (Err(_), Some(t)) = (&r, &template) else {
                break;
            };
            let why = engine
                .failure()
                .unwrap_or("the relay ended the session")
                .to_owned();
            let old = setup.relay.clone();
            // `--auto`: a relay that failed us is left for the next of the ranking; a relay
            // from the config is asked again while the voucher has allowance.
            let next = if setup.auto.is_some() && engine.relay_failed() {
                failover(setup, t, &why, &mut engine).await
            } else if engine.may_reopen() {
                reopen(setup, t, &why, &mut engine).await
            } else {
                break;
            };
            match next {
                Reopen::Stopped => {
                    r = Ok(());
                    break;
                }
                Reopen::Failed(e) => {
                    r = Err(e);
                    break;
                }
                Reopen::Opened => {}
            }
            (engine, r) = run(setup, Some(&old)).await?;
        }
        match &r {
            Ok(()) => engine.finish(State::Stopped, None),
            Err(e) => engine.finish(State::Failed, Some(format!("{e:#}"))),
        }
        r
    }
    .await;
    for h in reports {
        let _ = tokio::time::timeout(Duration::from_secs(3), h).await;
    }
    if let Some(h) = sub {
        // Give the submitter a moment to hand the final receipt to the ledger.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(2), h).await;
    }
    ended
}

/// Tells the directory we refused this relay's receipt (it lowers the relay's score), trying
/// for about a minute (2 s apart); a ledger without a directory or that stays away is only
/// logged.
async fn report_refusal(dir: ferry_store::LedgerClient, r: ferry_receipts::ReceiptRefusal) {
    const TRIES: u64 = 30;
    for attempt in 0..TRIES {
        match ferry_store::market::report_refusal(&dir, &r).await {
            Ok(recorded) => {
                tracing::info!(
                    recorded,
                    "refusal of the relay's receipt reported to the directory"
                );
                return;
            }
            Err(e) if attempt + 1 == TRIES => {
                tracing::warn!(error = %e, "refusal of the relay's receipt not reported");
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

/// `--auto`: opens a session with the next relay of the ranking after the current one failed
/// (`why`), and with the one after that while they do not answer or refuse; behind the kill
/// switch all along (it lets out every ranked relay). Fails when the ranking is used up.
async fn failover(
    setup: &mut Setup,
    template: &PaidSetup,
    why: &str,
    engine: &mut Engine,
) -> Reopen {
    let Some(mut stop) = StopSignals::watch() else {
        return Reopen::Failed(anyhow::anyhow!("cannot watch for signals"));
    };
    let mut why = why.to_owned();
    loop {
        let Some((next, switched)) = setup.next_of_ranking(&why, template) else {
            return Reopen::Failed(anyhow::anyhow!(
                "{why}; no other relay of the ranking is left (the kill switch stays on; \
                 `ferry disconnect`, then connect again to rank the directory anew)"
            ));
        };
        let note = format!(
            "{why}; failing over to relay {} ({}, {} micros/GiB)",
            &next.descriptor.relay_key.to_hex()[..16],
            next.descriptor.country_code(),
            next.descriptor.price_micros_per_gib
        );
        tracing::warn!("{note}");
        engine.status_mut().choice = setup.auto.as_ref().map(|a| a.choice.clone());
        engine.finish(State::Connecting, Some(note));
        if let Err(e) = switched {
            why = format!("{e:#}");
            continue;
        }
        match stop.or_stop(open_paid_session(setup)).await {
            None => return Reopen::Stopped,
            Some(Ok(())) => return Reopen::Opened,
            Some(Err(e)) => why = format!("{e:#}"),
        }
    }
}

/// Opens a new paid session after the last one ended with allowance left (`why`), retrying
/// with backoff (2 s doubling to 30 s) while the relay does not answer; a refusal ends it, as
/// does SIGTERM or SIGINT (`ferry disconnect`). The status says what is happening at each
/// attempt.
async fn reopen(setup: &mut Setup, template: &PaidSetup, why: &str, engine: &mut Engine) -> Reopen {
    let Some(mut stop) = StopSignals::watch() else {
        return Reopen::Failed(anyhow::anyhow!("cannot watch for signals"));
    };
    let mut delay = Duration::from_secs(2);
    for attempt in 1u32.. {
        let note =
            format!("{why}; opening a new session with the same voucher (attempt {attempt})");
        tracing::warn!("{note}");
        engine.finish(State::Connecting, Some(note));
        setup.paid = Some(template.fresh());
        match stop.or_stop(open_paid_session(setup)).await {
            None => return Reopen::Stopped,
            Some(Ok(())) => return Reopen::Opened,
            Some(Err(e)) if format!("{e:#}").contains("refused") => return Reopen::Failed(e),
            Some(Err(e)) => tracing::info!(error = %format!("{e:#}"), "relay not answering yet"),
        }
        if stop.or_stop(tokio::time::sleep(delay)).await.is_none() {
            return Reopen::Stopped;
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
    Reopen::Stopped
}
