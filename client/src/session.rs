//! What `connect` and `socks5` share before the tunnel starts: keys, relay, voucher, the
//! local receipt store and the ledger submitter.

use std::net::SocketAddr;
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
}

/// Loads keys, resolves the relay endpoint (before any kill switch exists: the system
/// resolver still works) and, for a paid relay, loads the voucher, the receipt store and
/// the submitter.
pub(crate) fn prepare(paths: &Paths, cfg: &Config, relay: &str) -> Result<Setup> {
    let relay = cfg.relay(relay)?;
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
    })
}

/// For a paid relay: `Hello` outside the tunnel; adopts the addresses the relay assigned.
pub(crate) async fn open_paid_session(setup: &mut Setup) -> Result<()> {
    let (Some(paid), Some(rp), Some(hello)) =
        (setup.paid.as_mut(), setup.relay.paid.as_ref(), setup.hello)
    else {
        return Ok(());
    };
    let boot = crate::bootstrap::bootstrap(
        paid,
        rp.identity_key,
        setup.wg.public_key().0,
        hello,
        Duration::from_secs(15),
    )
    .await?;
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
    let ended = async {
        let (mut engine, mut r) = run(setup, None).await?;
        while let (Err(_), true, Some(t)) = (&r, engine.may_reopen(), &template) {
            let why = engine
                .failure()
                .unwrap_or("the relay ended the session")
                .to_owned();
            let old = setup.relay.clone();
            match reopen(setup, t, &why, &mut engine).await {
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
        if let (Some(refusal), Some(dir)) = (engine.refusal(), &setup.directory) {
            report_refusal(dir, refusal).await;
        }
        match &r {
            Ok(()) => engine.finish(State::Stopped, None),
            Err(e) => engine.finish(State::Failed, Some(format!("{e:#}"))),
        }
        r
    }
    .await;
    if let Some(h) = sub {
        // Give the submitter a moment to hand the final receipt to the ledger.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(2), h).await;
    }
    ended
}

/// Tells the directory we refused this relay's receipt (it lowers the relay's score), trying
/// three times; a ledger without a directory or that stays away is only logged.
async fn report_refusal(dir: &ferry_store::LedgerClient, r: &ferry_receipts::ReceiptRefusal) {
    for attempt in 0..3u64 {
        match ferry_store::market::report_refusal(dir, r).await {
            Ok(recorded) => {
                tracing::info!(
                    recorded,
                    "refusal of the relay's receipt reported to the directory"
                );
                return;
            }
            Err(e) if attempt == 2 => {
                tracing::warn!(error = %e, "refusal of the relay's receipt not reported");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500 * (attempt + 1))).await,
        }
    }
}

/// Opens a new paid session after the last one ended with allowance left (`why`), retrying
/// with backoff (2 s doubling to 30 s) while the relay does not answer; a refusal ends it, as
/// does SIGTERM or SIGINT (`ferry disconnect`). The status says what is happening at each
/// attempt.
async fn reopen(setup: &mut Setup, template: &PaidSetup, why: &str, engine: &mut Engine) -> Reopen {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return Reopen::Failed(anyhow::anyhow!("cannot watch for signals"));
    };
    let mut delay = Duration::from_secs(2);
    for attempt in 1u32.. {
        let note =
            format!("{why}; opening a new session with the same voucher (attempt {attempt})");
        tracing::warn!("{note}");
        engine.finish(State::Connecting, Some(note));
        setup.paid = Some(template.fresh());
        let opened = tokio::select! {
            r = open_paid_session(setup) => r,
            _ = term.recv() => return Reopen::Stopped,
            _ = int.recv() => return Reopen::Stopped,
        };
        match opened {
            Ok(()) => return Reopen::Opened,
            Err(e) if format!("{e:#}").contains("refused") => return Reopen::Failed(e),
            Err(e) => tracing::info!(error = %format!("{e:#}"), "relay not answering yet"),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = term.recv() => return Reopen::Stopped,
            _ = int.recv() => return Reopen::Stopped,
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
    Reopen::Stopped
}
