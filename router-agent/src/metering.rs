//! Paid sessions: wires ferry-metering's `RelayHub` (receipt exchange, credit window) and
//! ferry-store (durable receipts, ledger submitter) into the running relay.
//!
//! - startup ([`Metering::setup`]): open the store (recovering a torn tail), install the
//!   paid sessions ([`PaidSessions`], `sessions.rs`) as the relay's hook, then re-admit the
//!   peers of sessions that were open when the agent stopped and resume them from their
//!   latest stored co-signed receipt;
//! - the hook, called by the relay core under its lock: control datagrams to
//!   `<relay tunnel address>:51821` are diverted to the hub before the egress policy and are
//!   never metered; every other packet of a paid peer is metered by `RelayHub::on_bytes`
//!   after allowed-IPs, policy and rate limit, and dropped unless it fits the credit window
//!   (a paid peer without a session is dropped by the relay core);
//! - tasks ([`Metering::start`]): the public Hello listener (`metering_hello.rs`), the
//!   persist loop (co-signed receipts are fsynced by the batching `Persister` *before* the
//!   `Ack`; the packet path never waits for it), the timer/driver loop (receipts,
//!   retransmissions, cut-offs, closes) and the ledger `Submitter`.
//!
//! One lock: the sessions live in the relay's hook, so every session operation is one
//! `Relay::with_hook` call under the relay lock (see `sessions.rs`). The store has its own
//! lock, never taken while holding the relay lock. No lock is held across an await; the
//! agent's own control messages are encrypted with `Relay::encapsulate_for` (no rate limit,
//! counters or hook).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferry_metering::{
    CONTROL_PORT, Message, RelayEvent, RelayHub, RelayIdentity, encode, udp_packet,
};
use ferry_receipts::CoSignedReceipt;
use ferry_relay_core::{IpNet, PeerId, Relay};
use ferry_relay_io::{SharedRelay, UdpEndpoint, send_to_peer};
use ferry_store::{HttpLedger, PersistError, Persister, Record, Store, Submitter, SubmitterConfig};
use tokio::sync::{Notify, mpsc};

use crate::config_paid::PaidSettings;
use crate::observability::ReceiptCounters;
pub(crate) use crate::sessions::PaidPeer;
use crate::sessions::PaidSessions;
use ferry_agent::share::Sharing;

/// Driver tick when no session timer is earlier.
const TICK: Duration = Duration::from_millis(250);
/// Shortest driver sleep (unless woken by a control datagram or a persisted receipt).
const MIN_SLEEP: Duration = Duration::from_millis(20);
/// Compaction check interval.
const COMPACT_EVERY: Duration = Duration::from_secs(60);

/// State shared by the tasks (the sessions themselves live in the relay's hook).
pub(crate) struct Shared {
    pub(crate) store: Arc<Mutex<Store>>,
    pub(crate) identity: RelayIdentity,
    pub(crate) own: Vec<IpAddr>,
    pub(crate) subnets: Vec<IpNet>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) persister: Persister,
    pub(crate) kick: Option<Arc<Notify>>,
    /// Receipt counters for `/metrics`.
    pub(crate) counters: Arc<ReceiptCounters>,
    /// The directory listing (probes are answered on the Hello port).
    pub(crate) directory: Arc<Mutex<crate::directory::DirectoryState>>,
    /// Where to ask the network price while this relay has none of its own.
    pub(crate) price_from: Option<ferry_store::LedgerClient>,
    /// When it was last asked (a Hello flood while the ledger is away asks once per 10 s).
    pub(crate) price_asked: Mutex<Option<Instant>>,
    /// Inner MTU and whether the DNS forwarder answers on `own`: with `own`, what the signed
    /// `Tunnel` message tells clients that found us in the directory.
    pub(crate) mtu: u16,
    pub(crate) dns: bool,
    /// Whether offers are admitted now: the index in `Sharing::ALL` of the last decision of
    /// the owner's pause (`ferry-agent pause`: the file `paused` in the state dir, so it
    /// survives restarts), quota and schedule. Set under the relay lock (see `watch_sharing`).
    pub(crate) sharing: std::sync::atomic::AtomicU8,
    pub(crate) pause_file: std::path::PathBuf,
    /// The quota counters and the schedule (`sharing.rs`). Lock order: this, then the relay.
    pub(crate) share: Arc<Mutex<crate::sharing::ShareShell>>,
}

impl Shared {
    /// Why offers are refused now (`None`: sharing).
    pub(crate) fn not_sharing(&self) -> Option<Sharing> {
        let i = self.sharing.load(std::sync::atomic::Ordering::SeqCst);
        Some(Sharing::ALL[usize::from(i)]).filter(|s| *s != Sharing::Sharing)
    }
}

/// How often the agent looks at the pause file, the clock and the quota.
const SHARE_CHECK: Duration = Duration::from_secs(1);

/// The pause file of a relay whose receipts log is `store_path`.
pub(crate) fn pause_file(store_path: &std::path::Path) -> std::path::PathBuf {
    store_path.with_file_name("paused")
}

/// Applies the owner's rules once (under the share lock, then the relay lock): counts the
/// relay's paid bytes, sets its budget and the admission flag, and when sharing stops gives
/// every live session its final receipt and closes it (nothing owed is lost: the usual close
/// path). `applied` is what the sessions were last told. Returns the decision and how many
/// sessions were closed.
fn apply_sharing(
    shared: &Shared,
    relay: &SharedRelay,
    share: &mut crate::sharing::ShareShell,
    applied: Sharing,
) -> (ferry_agent::share::Step, Option<usize>) {
    let paused = shared.pause_file.exists();
    let mut r = lock(relay);
    let step = share.tick(&mut r, paused);
    let index = Sharing::ALL
        .iter()
        .position(|s| *s == step.state)
        .unwrap_or(0);
    shared.sharing.store(
        u8::try_from(index).unwrap_or(0),
        std::sync::atomic::Ordering::SeqCst,
    );
    let closed = (step.state != Sharing::Sharing && applied == Sharing::Sharing)
        .then(|| {
            r.with_hook(|_, s: &mut PaidSessions| {
                s.hub.close_all(Instant::now());
                s.hub.len()
            })
        })
        .flatten();
    (step, closed)
}

/// Follows the pause file, the quota and the schedule once a second: when sharing stops every
/// live session gets its final receipt and closes; new offers are refused meanwhile (with the
/// reason). Saves the quota counters when due and at stop ([`Running::stop`]).
async fn watch_sharing(shared: Arc<Shared>, relay: SharedRelay) {
    let mut tick = tokio::time::interval(SHARE_CHECK);
    // Starting from "sharing": a stop found at start also closes the sessions resumed from
    // the store (the flag itself was set in `setup`, so no offer is admitted meanwhile).
    let mut applied = Sharing::Sharing;
    loop {
        tick.tick().await;
        let mut share = lock(&shared.share);
        let (step, closed) = apply_sharing(&shared, &relay, &mut share, applied);
        let changed = step.state != applied;
        if let Some(n) = closed {
            shared.wake.notify_one();
            tracing::warn!(
                sessions = n,
                why = step.state.words(),
                "sharing stopped: live sessions get their final receipts, new ones are refused"
            );
        } else if changed && step.state == Sharing::Sharing {
            tracing::info!("sharing again");
        } else if changed {
            tracing::info!(why = step.state.words(), "not sharing");
        }
        applied = step.state;
        if share.save_due(step, changed) {
            if let Err(e) = share.save() {
                tracing::warn!(error = %format!("{e:#}"), "sharing quota not saved; retrying");
            }
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` with the relay and its paid sessions borrowed together (one operation under the
/// relay lock). `None` if paid sessions are not installed.
pub(crate) fn with_sessions<R>(
    relay: &SharedRelay,
    f: impl FnOnce(&mut Relay, &mut PaidSessions) -> R,
) -> Option<R> {
    lock(relay).with_hook(f)
}

/// Paid-session machinery, set up before the shell starts.
pub(crate) struct Metering {
    shared: Arc<Shared>,
    settings: PaidSettings,
    cosigned_rx: mpsc::UnboundedReceiver<(PeerId, CoSignedReceipt)>,
    submitter: Option<Submitter>,
    hello: tokio::net::UdpSocket,
    relay: SharedRelay,
}

impl Metering {
    /// Opens the store, resumes open sessions (re-adding their peers to `relay`), binds the
    /// Hello socket and installs the metering hook in the relay.
    pub(crate) async fn setup(
        settings: &PaidSettings,
        config: &std::path::Path,
        relay: &SharedRelay,
        subnets: Vec<IpNet>,
        (mtu, dns): (u16, bool),
        (share_rules, timezone): (&ferry_agent::share::Rules, Option<&str>),
    ) -> Result<Self> {
        let key = crate::identity::load_key(&settings.identity_key_file, config)?;
        if let Some(dir) = settings.store_path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating state dir {}", dir.display()))?;
        }
        let (store, report) =
            Store::open_with(&settings.store_path, crate::observability::fsync_timer())
                .with_context(|| format!("receipt store {}", settings.store_path.display()))?;
        if report.dropped_bytes > 0 {
            tracing::warn!(
                dropped = report.dropped_bytes,
                "receipt store: a torn or corrupt tail was cut off"
            );
        }
        let store = Arc::new(Mutex::new(store));
        let (persister, _) = Persister::spawn(store.clone(), 64, Duration::from_millis(20));
        let identity = RelayIdentity {
            network_id: settings.network_id,
            ledger_key: settings.ledger_key,
            key: Arc::new(key),
        };
        let submitter = match &settings.ledger_url {
            Some(url) => {
                let ledger = HttpLedger::with_ca_file(
                    url,
                    settings.ledger_ca_file.as_deref(),
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
            None => {
                tracing::warn!("no network.ledger-url: co-signed receipts stay in the store");
                None
            }
        };
        let own: Vec<IpAddr> = subnets.iter().map(IpNet::addr).collect();
        let share =
            crate::sharing::ShareShell::open(share_rules.clone(), timezone, &settings.store_path)?;
        let shared = Arc::new(Shared {
            store,
            identity: identity.clone(),
            own: own.clone(),
            subnets,
            wake: Arc::new(Notify::new()),
            persister,
            kick: submitter.as_ref().map(Submitter::kicker),
            counters: Arc::default(),
            directory: Arc::default(),
            price_from: match (&settings.limits.price_micros_per_gib, &settings.ledger_url) {
                (None, Some(url)) => Some(ferry_store::LedgerClient::new(
                    url,
                    settings.ledger_ca_file.as_deref(),
                    Duration::from_secs(3),
                )?),
                _ => None,
            },
            price_asked: Mutex::new(None),
            mtu,
            dns,
            sharing: 0.into(),
            pause_file: pause_file(&settings.store_path),
            share: Arc::new(Mutex::new(share)),
        });
        let hello = tokio::net::UdpSocket::bind(settings.hello_listen)
            .await
            .with_context(|| format!("binding the Hello port {}", settings.hello_listen))?;
        let (tx, cosigned_rx) = mpsc::unbounded_channel();
        let mut settings = settings.clone();
        let limits = &mut settings.limits;
        if limits.price_micros_per_gib.is_none() {
            // Learn the network price before the first Hello can arrive; a ledger that does
            // not answer now is asked again on the next Hello. The directory announcer
            // advertises the same price (`directory_parts`).
            limits.price_micros_per_gib = network_price(&shared).await;
        }
        let limits = *limits;
        lock(relay).set_hook(Box::new(PaidSessions::new(
            RelayHub::new(settings.meter.clone(), identity),
            &shared.subnets,
            limits,
            tx,
            shared.wake.clone(),
            shared.counters.clone(),
            settings.overclaim_percent,
        )));
        // The budget and the admission flag before any session resumes or offer arrives.
        {
            let mut share = lock(&shared.share);
            let (step, _) = apply_sharing(&shared, relay, &mut share, Sharing::Paused);
            if step.state != Sharing::Sharing {
                tracing::warn!(why = step.state.words(), "not sharing now");
            }
        }
        let resumed = resume_sessions(&shared, relay);
        tracing::info!(
            relay_identity = %shared.identity.key.public_key().to_hex(),
            hello = %settings.hello_listen,
            resumed,
            store = %settings.store_path.display(),
            "paid sessions enabled"
        );
        if settings.overclaim_percent > 0 {
            tracing::warn!(
                percent = settings.overclaim_percent,
                "TEST HOOK: receipts over-claim on purpose"
            );
        }
        Ok(Self {
            shared,
            settings,
            cosigned_rx,
            submitter,
            hello,
            relay: relay.clone(),
        })
    }

    /// What the directory announcer shares with metering: the identity, the listing state,
    /// the price sessions open at (`None`: the ledger did not say it at start) and the
    /// owner's quota and schedule (advertised in the descriptor).
    pub(crate) fn directory_parts(&self) -> DirectoryParts {
        DirectoryParts {
            identity: self.shared.identity.clone(),
            state: self.shared.directory.clone(),
            price: self.settings.limits.price_micros_per_gib,
            share: self.shared.share.clone(),
        }
    }

    pub(crate) fn stats_source(&self) -> crate::observability::MeteringSource {
        crate::observability::MeteringSource {
            shared: self.shared.clone(),
            relay: self.relay.clone(),
            submitted: self.submitter.as_ref().map(Submitter::stats),
        }
    }

    /// Starts the Hello listener, persist loop, driver and submitter on the shell's socket.
    /// Returns a handle whose [`Running::drain`] closes every session at shutdown.
    pub(crate) fn start(self, relay: SharedRelay, udp: Arc<UdpEndpoint>) -> Running {
        let Self {
            shared,
            settings,
            mut cosigned_rx,
            submitter,
            hello,
            relay: _,
        } = self;
        let stop = Arc::new(Notify::new());
        let mut tasks = tokio::task::JoinSet::new();
        let hello = tasks.spawn(crate::metering_hello::run(
            hello,
            shared.clone(),
            relay.clone(),
        ));
        {
            let (shared, relay, udp) = (shared.clone(), relay.clone(), udp.clone());
            tasks.spawn(async move {
                while let Some((peer, c)) = cosigned_rx.recv().await {
                    tokio::spawn(persist_cosigned(
                        shared.clone(),
                        relay.clone(),
                        udp.clone(),
                        peer,
                        c,
                    ));
                }
            });
        }
        tasks.spawn(drive(shared.clone(), relay.clone(), udp.clone()));
        tasks.spawn(watch_sharing(shared.clone(), relay.clone()));
        if let Some(s) = submitter {
            let stop = stop.clone();
            tasks.spawn(async move { s.run(async move { stop.notified().await }).await });
        }
        Running {
            shared,
            relay,
            hello,
            tasks,
            stop,
            close_grace: settings.meter.close_grace,
        }
    }
}

/// See [`Metering::directory_parts`].
pub(crate) struct DirectoryParts {
    pub(crate) identity: RelayIdentity,
    pub(crate) state: Arc<Mutex<crate::directory::DirectoryState>>,
    pub(crate) price: Option<u64>,
    pub(crate) share: Arc<Mutex<crate::sharing::ShareShell>>,
}

/// The running metering tasks.
pub(crate) struct Running {
    shared: Arc<Shared>,
    relay: SharedRelay,
    /// The Hello listener: stopped first at shutdown, so no session opens while the others
    /// are being closed.
    hello: tokio::task::AbortHandle,
    tasks: tokio::task::JoinSet<()>,
    stop: Arc<Notify>,
    close_grace: Duration,
}

impl Running {
    /// Shutdown: sends every session its final receipt and waits (at most `close-grace`
    /// + 1 s) for the co-signatures, while the shell keeps forwarding control traffic.
    pub(crate) async fn drain(&self) {
        self.hello.abort();
        let relay = &self.relay;
        let n = with_sessions(relay, |_, s| {
            s.hub.close_all(Instant::now());
            s.hub.len()
        })
        .unwrap_or(0);
        if n == 0 {
            return;
        }
        tracing::info!(sessions = n, "closing paid sessions (final receipts)");
        self.shared.wake.notify_one();
        let deadline = Instant::now() + self.close_grace + Duration::from_secs(1);
        while Instant::now() < deadline
            && !with_sessions(relay, |_, s| s.hub.is_empty()).unwrap_or(true)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the tasks (the submitter gets a last chance to finish its request) and saves the
    /// quota counters with every byte the relay forwarded.
    pub(crate) async fn stop(mut self) {
        self.stop.notify_waiters();
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.tasks.shutdown().await;
        let mut share = lock(&self.shared.share);
        let state = share.state();
        apply_sharing(&self.shared, &self.relay, &mut share, state);
        if let Err(e) = share.save() {
            tracing::warn!(error = %format!("{e:#}"), "sharing quota not saved at stop");
        }
    }
}

use ferry_store::unix_now;

/// The network price from the ledger (`None`: no ledger, or it did not answer within 3 s).
/// Asked at start, and again by the Hello handler while it is unknown (offers are refused
/// as busy meanwhile): no task of its own.
pub(crate) async fn network_price(shared: &Shared) -> Option<u64> {
    let ledger = shared.price_from.as_ref()?;
    {
        let mut last = lock(&shared.price_asked);
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(10)) {
            return None;
        }
        *last = Some(now);
    }
    match ferry_store::market::network_price(ledger).await {
        Ok(p) => {
            tracing::info!(price_micros_per_gib = p, "selling at the network price");
            Some(p)
        }
        Err(e) => {
            tracing::warn!(error = %e, "network price unknown: paid offers are refused until the ledger answers");
            None
        }
    }
}

/// Re-admits the peers of sessions the store says are open; returns how many.
fn resume_sessions(shared: &Shared, relay: &SharedRelay) -> usize {
    let now = Instant::now();
    let entries: Vec<_> = lock(&shared.store).open_sessions().cloned().collect();
    let mut n = 0;
    for e in entries {
        let Some(o) = e.open else { continue };
        let (v4, v6) = decode_addrs(&o.extra);
        let voucher = &o.offer.voucher;
        let own = e.latest.map_or(0, |c| c.body().debit_micros());
        let others = lock(&shared.store)
            .voucher_spent_micros(&voucher.id())
            .saturating_sub(own);
        let paid = PaidPeer {
            session: o.accept.session_id,
            offer: o.offer.clone(),
            accept: o.accept.clone(),
            v4,
            v6,
        };
        let allowance = voucher.bytes_at(o.accept.price_micros_per_gib, others);
        match with_sessions(relay, |r, s| s.resume(r, paid, allowance, e.latest, now)) {
            Some(Ok(_)) => {}
            Some(Err(err)) => {
                tracing::warn!(session = %o.accept.session_id, error = %err, "stored session not resumed");
                continue;
            }
            None => continue,
        }
        tracing::info!(
            session = %o.accept.session_id,
            seq = e.latest.map_or(0, |c| c.body().seq),
            "paid session resumed from the store"
        );
        n += 1;
    }
    n
}

/// `SessionOpen.extra`: the client's tunnel addresses, IPv4 (4) + IPv6 (16), unspecified = none.
pub(crate) fn encode_addrs(v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> Vec<u8> {
    let mut b = v4.unwrap_or(Ipv4Addr::UNSPECIFIED).octets().to_vec();
    b.extend_from_slice(&v6.unwrap_or(Ipv6Addr::UNSPECIFIED).octets());
    b
}

pub(crate) fn decode_addrs(b: &[u8]) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let v4 = <[u8; 4]>::try_from(b.get(..4).unwrap_or_default())
        .ok()
        .map(Ipv4Addr::from)
        .filter(|a| !a.is_unspecified());
    let v6 = <[u8; 16]>::try_from(b.get(4..20).unwrap_or_default())
        .ok()
        .map(Ipv6Addr::from)
        .filter(|a| !a.is_unspecified());
    (v4, v6)
}

/// Sends one control message to a paid peer inside its tunnel (from our tunnel address:51821
/// to its tunnel address:51821), encrypted directly for that peer.
pub(crate) async fn send_control(
    shared: &Shared,
    relay: &SharedRelay,
    udp: &UdpEndpoint,
    peer: PeerId,
    m: &Message,
) {
    let Some(to) = with_sessions(relay, |_, s| {
        s.peers
            .get(&peer)
            .and_then(|p| p.v4.map(IpAddr::V4).or(p.v6.map(IpAddr::V6)))
    })
    .flatten() else {
        return;
    };
    let Some(from) = shared.own.iter().find(|a| a.is_ipv4() == to.is_ipv4()) else {
        return;
    };
    let Some(pkt) = udp_packet(
        SocketAddr::new(*from, CONTROL_PORT),
        SocketAddr::new(to, CONTROL_PORT),
        &encode(m),
    ) else {
        return;
    };
    send_to_peer(relay, udp, peer, &pkt).await;
}

/// Stores a co-signed receipt (fsync, batched), then extends credit and sends the `Ack`.
async fn persist_cosigned(
    shared: Arc<Shared>,
    relay: SharedRelay,
    udp: Arc<UdpEndpoint>,
    peer: PeerId,
    c: CoSignedReceipt,
) {
    let seq = c.body().seq;
    match shared.persister.persist(vec![Record::CoSigned(c)]).await {
        Ok(()) => {
            let ack = with_sessions(&relay, |_, s| {
                let hub = &mut s.hub;
                // The peer slot may have been reused by another session meanwhile.
                if hub.session(peer).map(|s| s.session_id()) != Some(c.body().session_id) {
                    return None;
                }
                let before = hub
                    .session(peer)
                    .and_then(|s| s.acknowledged().map(|a| a.body().total_bytes()));
                shared
                    .counters
                    .cosigned(c.body().total_bytes(), before.unwrap_or(0));
                hub.persisted(peer, seq)
            })
            .flatten();
            if let Some(ack) = ack {
                send_control(&shared, &relay, &udp, peer, &ack).await;
            }
            if let Some(k) = &shared.kick {
                k.notify_one();
            }
            shared.wake.notify_one();
        }
        Err(PersistError::NoSpace) => {
            tracing::warn!(
                "receipt store full: co-signed receipt not acknowledged, credit not extended"
            );
        }
        Err(e) => tracing::warn!(error = %e, "co-signed receipt not stored"),
    }
}

/// Ends a session (session, paid-peer facts and relay peer in one step), then records that
/// it closed.
pub(crate) async fn end_session(shared: &Shared, relay: &SharedRelay, peer: PeerId) {
    let Some(p) = with_sessions(relay, |r, s| s.end(r, peer)).flatten() else {
        return;
    };
    record_closed(shared, &p).await;
}

/// Records that a session closed (it is not resumed after a restart) and kicks the submitter.
async fn record_closed(shared: &Shared, p: &PaidPeer) {
    if let Err(e) = shared
        .persister
        .persist(vec![Record::SessionClosed(p.session)])
        .await
    {
        tracing::warn!(session = %p.session, error = %e, "session close not recorded (it resumes after a restart)");
    }
    if let Some(k) = &shared.kick {
        k.notify_one();
    }
}

/// Timers, outgoing receipts and session events.
async fn drive(shared: Arc<Shared>, relay: SharedRelay, udp: Arc<UdpEndpoint>) {
    let mut last_compact = Instant::now();
    loop {
        let now = Instant::now();
        // A session timer can stay in the past (e.g. a receipt is due but 8 are already
        // outstanding): never spin, receipts do not need better than MIN_SLEEP.
        let sleep = with_sessions(&relay, |_, s| s.hub.poll_timeout())
            .flatten()
            .map_or(TICK, |t| t.saturating_duration_since(now).min(TICK))
            .max(MIN_SLEEP);
        tokio::select! {
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(sleep) => {}
        }
        let (now, unix) = (Instant::now(), unix_now());
        let (msgs, events) = with_sessions(&relay, |_, s| {
            let hub = &mut s.hub;
            hub.handle_timeout(now, unix);
            let mut msgs = Vec::new();
            while let Some(m) = hub.poll_transmit(now, unix) {
                msgs.push(m);
            }
            let mut events = Vec::new();
            while let Some(e) = hub.poll_event() {
                events.push(e);
            }
            (msgs, events)
        })
        .unwrap_or_default();
        // Sessions that never carried traffic: closed and recorded, so a flood of cheap
        // sessions neither holds addresses nor comes back after a restart.
        let unused = with_sessions(&relay, |r, s| s.expire_unused(r, now)).unwrap_or_default();
        for p in unused {
            tracing::info!(session = %p.session, "paid session carried no traffic; closed");
            record_closed(&shared, &p).await;
        }
        for (peer, m) in msgs {
            if matches!(m, Message::Receipt(_) | Message::FinalReceipt(_)) {
                shared.counters.issued();
            }
            send_control(&shared, &relay, &udp, peer, &m).await;
        }
        for (peer, e) in events {
            match e {
                RelayEvent::CutOff(reason) => {
                    tracing::info!(peer = peer.get(), ?reason, "paid client cut off");
                    end_session(&shared, &relay, peer).await;
                }
                RelayEvent::Closed { acknowledged } => {
                    tracing::info!(peer = peer.get(), acknowledged, "paid session closed");
                    end_session(&shared, &relay, peer).await;
                }
                RelayEvent::AllowanceExhausted => {
                    tracing::info!(
                        peer = peer.get(),
                        "voucher allowance or validity used up; closing"
                    );
                }
            }
        }
        if now.duration_since(last_compact) >= COMPACT_EVERY {
            last_compact = now;
            let store = shared.store.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let mut s = lock(&store);
                if s.should_compact() {
                    if let Err(e) = s.compact(unix_now()) {
                        tracing::warn!(
                            error = &e as &(dyn std::error::Error + 'static),
                            "receipt store compaction failed"
                        );
                    }
                }
            })
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_addresses_round_trip_through_the_session_record() {
        let v4 = Some(Ipv4Addr::new(10, 77, 0, 9));
        let v6: Option<Ipv6Addr> = "fd77::9".parse().ok();
        assert_eq!(decode_addrs(&encode_addrs(v4, v6)), (v4, v6));
        assert_eq!(decode_addrs(&encode_addrs(None, v6)), (None, v6));
        assert_eq!(decode_addrs(&encode_addrs(v4, None)), (v4, None));
        assert_eq!(decode_addrs(&[1, 2]), (None, None));
    }
}
