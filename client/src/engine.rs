//! The tunnel engine shared by `ferry connect` (TUN) and `ferry socks5` (smoltcp): the I/O shell
//! around ferry-tunnel's sans-IO [`ClientTunnel`] (one boringtun `Tunn`, our own byte counts and,
//! for paid relays, the receipt exchange). The engine owns the connected UDP socket, the clock,
//! the receipt log (every co-signed receipt is stored with fsync before the tunnel may send the
//! co-signature) and the status file.
//!
//! Driving contract: pass every inner packet the OS/stack wants to send to
//! [`Engine::send_inner`], every datagram from the socket to [`Engine::handle_datagram`]
//! (it returns the inner packets to deliver), call [`Engine::on_tick`] every ~250 ms, and stop
//! when [`Engine::failure`] is set or, after [`Engine::close`], when [`Engine::closed`].
//! Receive from [`Engine::socket`] anew each time: the engine replaces the socket when the
//! host's address or route to the relay changes (roaming).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use ferry_keys::WgPrivateKey;
use ferry_store::{Record, SessionOpen, Store};
use ferry_tunnel::{ClientTunnel, ControlPath, Event, PaidConfig, TunnelConfig};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::bootstrap::PaidSetup;
use crate::config::Relay;
use crate::status::{LastReceipt, State, Status, spend_micros};

const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// No WireGuard handshake this long after the start: a wrong relay key, or no relay there.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// A paid session whose relay sends nothing back for this long while we send is gone (the
/// relay restarted without it, or ended it unseen): `connect` opens a new one.
const RELAY_SILENT_AFTER: std::time::Duration = std::time::Duration::from_secs(25);
/// A relay chosen from the directory (`--auto`) is left for the next sooner: no handshake
/// within 5 s, or silent for 6 s while we send (after a forced re-handshake at 2 s, which a
/// live relay answers at once), so failover completes well within 10 s.
const FAILOVER_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(5);
const FAILOVER_SILENT: std::time::Duration = std::time::Duration::from_secs(6);
const FAILOVER_REHANDSHAKE: std::time::Duration = std::time::Duration::from_secs(2);
/// How often the engine checks whether the host would now send to the relay from another
/// address (DHCP renewal, Wi-Fi to LTE); at once after a failed send.
const PATH_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The receipt log of a paid session.
struct Log {
    store: Arc<Mutex<Store>>,
    kick: Option<Arc<Notify>>,
}

/// One client tunnel.
pub(crate) struct Engine {
    tunnel: ClientTunnel,
    udp: Arc<UdpSocket>,
    /// The relay endpoint the socket is connected to.
    endpoint: SocketAddr,
    last_path_check: Option<Instant>,
    send_failed: bool,
    /// `connect`: re-pin the endpoint host route when the path changes.
    repin_route: bool,
    log: Option<Log>,
    failure: Option<String>,
    closed: bool,
    status: Status,
    status_path: Option<PathBuf>,
    last_status: Option<Instant>,
    /// What the voucher's budget buys at the session's price (to say "voucher used up" when
    /// the relay ends the session); at its max price until the relay's accept says its own.
    allowance: Option<u64>,
    /// The voucher's budget (micros).
    budget: Option<u64>,
    /// Our signed refusal of an over-claiming receipt, to report to the directory.
    refusal: Option<ferry_receipts::ReceiptRefusal>,
    /// The session is gone while the voucher has allowance left (the relay ended it, or
    /// stopped answering): a new session may be opened with the same voucher.
    may_reopen: bool,
    /// No WireGuard handshake completed in time.
    no_handshake: bool,
}

/// Less than this left of a voucher counts as used up (more than one packet of any MTU).
const USED_UP_SLACK: u64 = 16 * 1024;

/// What to tell the user when the relay ended the session by itself.
fn ended_message(total: u64, allowance: Option<u64>) -> String {
    match allowance {
        // The relay stops when the next packet no longer fits: a few bytes may be left over.
        Some(a) if total.saturating_add(USED_UP_SLACK) >= a => format!(
            "the relay ended the session: voucher used up ({total} of {a} bytes); buy a new one \
             with `ferry voucher request`"
        ),
        _ => format!("the relay ended the session (final receipt co-signed: {total} bytes)"),
    }
}

/// Unix seconds now.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The source address the host would use for the relay now (a route lookup, no packet).
fn preferred_source(endpoint: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if endpoint.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(endpoint).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// A UDP socket connected to the relay endpoint.
pub(crate) async fn relay_socket(endpoint: SocketAddr) -> Result<Arc<UdpSocket>> {
    let bind: SocketAddr = if endpoint.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(bind).await.context("binding UDP socket")?;
    set_buffers(&s);
    s.connect(endpoint)
        .await
        .with_context(|| format!("connecting UDP socket to {endpoint}"))?;
    Ok(Arc::new(s))
}

/// Large socket buffers: a full-speed download overflows the default 212 KB receive buffer,
/// and every datagram lost after the relay counted it is billed (FIELD-NOTES: 4 MiB).
fn set_buffers(s: &UdpSocket) {
    const BUF: usize = 4 << 20;
    use nix::sys::socket::{setsockopt, sockopt};
    use std::os::fd::AsFd;
    let fd = s.as_fd();
    if setsockopt(&fd, sockopt::RcvBufForce, &BUF).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &BUF);
    }
    if setsockopt(&fd, sockopt::SndBufForce, &BUF).is_err() {
        let _ = setsockopt(&fd, sockopt::SndBuf, &BUF);
    }
}

impl Engine {
    /// A new engine; `mode` is `connect` or `socks5` (for the status file).
    pub(crate) fn new(
        relay: &Relay,
        wg_key: &WgPrivateKey,
        udp: Arc<UdpSocket>,
        paid: Option<PaidSetup>,
        mode: &str,
        status_path: Option<PathBuf>,
    ) -> Result<Self> {
        let mut index = [0u8; 4];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut index)
            .map_err(|_| anyhow::anyhow!("no randomness"))?;
        // The socket is connected to the resolved endpoint.
        let endpoint = udp
            .peer_addr()
            .context("the relay socket is not connected")?;
        let cfg = TunnelConfig {
            secret: wg_key.static_secret(),
            relay_key: x25519_dalek::PublicKey::from(relay.public_key.0),
            keepalive: (relay.keepalive > 0).then_some(relay.keepalive),
            index: u32::from_be_bytes(index) >> 8,
            relay_ip: endpoint.ip(),
            mtu: usize::from(relay.mtu),
            rehandshake_after: relay.from_directory.then_some(FAILOVER_REHANDSHAKE),
            close_grace: ferry_tunnel::CLOSE_GRACE,
            handshake_timeout: Some(if relay.from_directory {
                FAILOVER_HANDSHAKE
            } else {
                HANDSHAKE_TIMEOUT
            }),
            silent_after: paid.is_some().then_some(if relay.from_directory {
                FAILOVER_SILENT
            } else {
                RELAY_SILENT_AFTER
            }),
        };
        let budget = paid.as_ref().map(|p| p.voucher.budget_micros);
        let allowance = paid
            .as_ref()
            .map(|p| p.voucher.bytes_at(p.voucher.max_price_micros_per_gib, 0));
        let (paid_cfg, log, price) = match (paid, &relay.paid) {
            (Some(p), Some(rp)) => {
                let (c, log, price) = paid_config(p, rp, relay, wg_key)?;
                (Some(c), Some(log), Some(price))
            }
            (None, None) => (None, None, None),
            _ => anyhow::bail!("paid relay without a voucher setup (internal)"),
        };
        // A host name is shown with what it resolved to: `relay.example:51820 (192.0.2.1:51820)`.
        let shown = match relay.endpoint.host() {
            Some(_) => format!("{} ({endpoint})", relay.endpoint),
            None => endpoint.to_string(),
        };
        let mut status = Status::new(mode, &relay.name, shown, log.is_some(), unix_now());
        status.price_micros_per_gib = price;
        if let Some(a) = paid_cfg.as_ref().and_then(|p| p.session.accept()) {
            status.session_id = Some(a.session_id.to_hex());
            status.price_micros_per_gib = Some(a.price_micros_per_gib);
        }
        Ok(Self {
            tunnel: ClientTunnel::new(cfg, paid_cfg),
            udp,
            endpoint,
            last_path_check: None,
            send_failed: false,
            repin_route: false,
            log,
            failure: None,
            closed: false,
            status,
            status_path,
            last_status: None,
            allowance,
            budget,
            refusal: None,
            may_reopen: false,
            no_handshake: false,
        })
    }

    /// True when the relay failed us: no handshake, silent, ended the session with allowance
    /// left, or sent a receipt we refused. `--auto` then moves to the next relay.
    pub(crate) fn relay_failed(&self) -> bool {
        self.may_reopen || self.no_handshake || self.refusal.is_some()
    }

    /// Our signed refusal of the relay's receipt, if we refused one (over-claim, backwards).
    pub(crate) fn refusal(&self) -> Option<&ferry_receipts::ReceiptRefusal> {
        self.refusal.as_ref()
    }

    /// True when a paid session is gone while its voucher has allowance left (the relay
    /// ended it: shutdown, restart; or it stopped answering): `connect` opens a new session
    /// instead of giving up.
    pub(crate) fn may_reopen(&self) -> bool {
        self.may_reopen
    }

    pub(crate) fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// True once a requested close finished (final receipt co-signed, or grace expired).
    pub(crate) fn closed(&self) -> bool {
        self.closed
    }

    /// Whether a WireGuard handshake completed (and a paid session was accepted).
    #[cfg(test)]
    pub(crate) fn is_up(&self) -> bool {
        self.tunnel.is_up()
    }

    /// The connected UDP socket to the relay (replaced when the path changes: receive from the
    /// current one).
    pub(crate) fn socket(&self) -> Arc<UdpSocket> {
        self.udp.clone()
    }

    /// `connect` mode: when the path changes, also re-pin the host route to the endpoint.
    pub(crate) fn repin_route_on_roam(&mut self) {
        self.repin_route = true;
    }

    /// The status snapshot (also written to the status file).
    pub(crate) fn status_mut(&mut self) -> &mut Status {
        &mut self.status
    }

    /// Encrypts and sends one inner packet from the local side.
    pub(crate) async fn send_inner(&mut self, pkt: &[u8]) {
        if !self.tunnel.send_inner(pkt, Instant::now()) {
            tracing::trace!("local packet not sent (control service, or session over)");
        }
        self.flush().await;
    }

    /// Decrypts one datagram from the relay; returns the inner packets to deliver locally.
    pub(crate) async fn handle_datagram(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        self.tunnel
            .handle_datagram(data, Instant::now(), unix_now());
        self.flush().await
    }

    /// Timers: WireGuard handshakes/keepalives, Hello retransmission, close grace, status file.
    pub(crate) async fn on_tick(&mut self) {
        self.follow_path().await;
        self.tunnel.handle_timeout(Instant::now());
        self.flush().await;
        self.write_status(false);
    }

    /// Starts closing: a paid session sends `Close` and waits (≤ 5 s) for the final receipt.
    pub(crate) async fn close(&mut self) {
        if self.status.state != State::Disconnecting {
            self.status.state = State::Disconnecting;
        }
        self.tunnel.close(Instant::now());
        self.flush().await;
    }

    /// Records the final state (and error) in the status file.
    pub(crate) fn finish(&mut self, state: State, error: Option<String>) {
        self.status.state = state;
        self.status.error = error;
        self.write_status(true);
    }

    /// Sends what the tunnel wants sent and acts on its events (stores receipts before the
    /// tunnel may send their co-signatures); returns the inner packets to deliver.
    async fn flush(&mut self) -> Vec<Vec<u8>> {
        let mut deliver = Vec::new();
        let mut changed = false;
        loop {
            while let Some(d) = self.tunnel.poll_transmit() {
                if let Err(e) = self.udp.send(&d).await {
                    self.send_failed = true;
                    tracing::trace!(error = %e, "udp send failed");
                }
            }
            let Some(ev) = self.tunnel.poll_event() else {
                break;
            };
            match ev {
                Event::Deliver(p) => deliver.push(p),
                Event::Connected => {
                    self.status.state = State::Connected;
                    tracing::info!(relay = %self.status.relay, "connected");
                    changed = true;
                }
                Event::StoreSession { offer, accept } => {
                    self.status.session_id = Some(accept.session_id.to_hex());
                    self.status.price_micros_per_gib = Some(accept.price_micros_per_gib);
                    self.allowance = self.budget.map(|b| {
                        ferry_receipts::money::bytes_within(b, accept.price_micros_per_gib)
                    });
                    tracing::info!("paid session accepted by the relay");
                    if let Some(log) = &self.log {
                        let rec = Record::SessionOpen(Box::new(SessionOpen {
                            accept: *accept,
                            offer: *offer,
                            extra: Vec::new(),
                        }));
                        if let Err(e) = persist(&log.store, rec) {
                            tracing::warn!(error = %format!("{e:#}"), "could not store the session record");
                        }
                    }
                    changed = true;
                }
                Event::StoreCosigned { receipt: c, .. } => {
                    let Some(log) = &self.log else { continue };
                    // Keep our copy durably before handing it out.
                    match persist(&log.store, Record::CoSigned(*c)) {
                        Ok(()) => {
                            self.tunnel.persisted(c.body().seq);
                            if let Some(k) = &log.kick {
                                k.notify_one();
                            }
                            tracing::debug!(seq = c.body().seq, "co-signed receipt");
                        }
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "could not store a co-signed receipt; not sent");
                        }
                    }
                    changed = true;
                }
                Event::ReceiptSeen { .. } | Event::Acked(_) | Event::Resynced(_) => changed = true,
                Event::Failed(f @ ferry_tunnel::Failure::NoHandshake(_)) => {
                    self.no_handshake = true;
                    self.failure = Some(format!(
                        "{f}: check `public-key` of relay {:?} in client.toml (and that the relay is up at {})",
                        self.status.relay, self.status.endpoint
                    ));
                    changed = true;
                }
                Event::Failed(f @ ferry_tunnel::Failure::RelaySilent(_)) => {
                    self.failure = Some(f.to_string());
                    self.may_reopen = self.allowance.is_some();
                    changed = true;
                }
                Event::Failed(f) => {
                    self.failure = Some(f.to_string());
                    changed = true;
                }
                Event::Refusal(r) => self.refusal = Some(*r),
                Event::EndedByRelay { total_bytes } => {
                    self.failure = Some(ended_message(total_bytes, self.allowance));
                    self.may_reopen = self
                        .allowance
                        .is_some_and(|a| total_bytes.saturating_add(USED_UP_SLACK) < a);
                    changed = true;
                }
                Event::Closed { .. } => self.closed = true,
                _ => {}
            }
        }
        if changed {
            self.refresh_receipt_status();
            self.write_status(true);
        }
        deliver
    }

    /// Roaming: when the host would now reach the relay from another source address than
    /// the socket's (the connected socket keeps the address it had at connect time, and every
    /// send fails or leaves with a stale source once that address is gone), connects a new
    /// socket and sends a keepalive from it at once. The relay moves the endpoint on the
    /// first authenticated datagram from the new address; the session and its receipts stay.
    async fn follow_path(&mut self) {
        let now = Instant::now();
        let due = self.send_failed
            || self
                .last_path_check
                .is_none_or(|t| now.saturating_duration_since(t) >= PATH_CHECK_EVERY);
        if !due {
            return;
        }
        self.last_path_check = Some(now);
        self.send_failed = false;
        let current = self.udp.local_addr().ok().map(|a| a.ip());
        let mut preferred = preferred_source(self.endpoint);
        if preferred.is_none() || preferred == current {
            return;
        }
        if self.repin_route {
            // The pinned host route may have gone with its interface: the lookup then goes
            // into the tunnel. Pin it again through the physical default route.
            if let Err(e) = crate::netcfg::repin_endpoint_route(self.endpoint.ip()) {
                tracing::warn!(error = %format!("{e:#}"), "could not re-pin the route to the relay");
            }
            preferred = preferred_source(self.endpoint);
            if preferred.is_none() || preferred == current {
                return;
            }
        }
        match relay_socket(self.endpoint).await {
            Ok(udp) => {
                tracing::info!("the network changed; the tunnel follows it from the new address");
                self.udp = udp;
                self.tunnel.keepalive();
                self.flush().await;
            }
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "no new socket yet"),
        }
    }

    fn refresh_receipt_status(&mut self) {
        let Some(session) = self.tunnel.session() else {
            return;
        };
        if let Some(c) = session.last_cosigned() {
            let b = c.body();
            let acked = session.last_acked().is_some_and(|a| a >= b.seq);
            self.status.last_receipt = Some(LastReceipt {
                seq: b.seq,
                bytes_up: b.bytes_up,
                bytes_down: b.bytes_down,
                acked,
            });
            let price = self.status.price_micros_per_gib.unwrap_or(0);
            self.status.spend_micros = spend_micros(b.bytes_up.saturating_add(b.bytes_down), price);
        }
        if let Some(Ok(s)) = self.log.as_ref().map(|l| l.store.lock()) {
            self.status.receipts_pending_submission = Some(s.pending_count());
        }
    }

    fn write_status(&mut self, force: bool) {
        let now = Instant::now();
        if !force && self.last_status.is_some_and(|t| now - t < STATUS_EVERY) {
            return;
        }
        self.last_status = Some(now);
        self.status.bytes_up = self.tunnel.bytes_up();
        self.status.bytes_down = self.tunnel.bytes_down();
        self.status.unsolicited_dropped = self.tunnel.dropped_unsolicited();
        self.status.updated_at = unix_now();
        self.status.last_handshake_secs = self.tunnel.since_handshake().map(|d| d.as_secs());
        if let Some(path) = &self.status_path {
            if let Err(e) = self.status.write(path) {
                tracing::debug!(error = %format!("{e:#}"), "status file");
            }
        }
    }
}

/// The tunnel's paid configuration: the bootstrapped session (its record is stored now), or a
/// `Hello` to say inside the tunnel. Also returns the receipt log and the voucher's price (for
/// the status file until the Accept says).
fn paid_config(
    setup: PaidSetup,
    rp: &crate::config::Paid,
    relay: &Relay,
    wg_key: &WgPrivateKey,
) -> Result<(PaidConfig, Log, u64)> {
    let control_address = rp
        .control_address
        .context("the relay's control address is unknown (internal: no Tunnel message)")?;
    let local_ip: IpAddr = match control_address {
        IpAddr::V4(_) => relay.addr_v4().map(IpAddr::V4),
        IpAddr::V6(_) => relay.addr_v6().map(IpAddr::V6),
    }
    .context("no tunnel address of the control address's family")?;
    let control = ControlPath::new(local_ip, control_address);
    // Until the relay's accept names its own price, the most it may be.
    let price = setup.voucher.max_price_micros_per_gib;
    let log = Log {
        store: setup.store,
        kick: setup.kick,
    };
    if let Some(b) = setup.boot {
        let rec = Record::SessionOpen(Box::new(SessionOpen {
            accept: b.accept,
            offer: b.offer,
            extra: Vec::new(),
        }));
        if let Err(e) = persist(&log.store, rec) {
            tracing::warn!(error = %format!("{e:#}"), "could not store the session record");
        }
        let cfg = PaidConfig {
            session: b.session,
            control,
            hello: None,
            answer_receipts: true,
        };
        return Ok((cfg, log, price));
    }
    let mut session = ferry_metering::ClientSession::new(
        setup.cfg,
        setup.identity,
        setup.voucher.network_id,
        rp.identity_key,
    );
    let mut nonce = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    let hello = session.hello(setup.voucher, wg_key.public_key().0, nonce, unix_now());
    let cfg = PaidConfig {
        session,
        control,
        hello: Some(hello),
        answer_receipts: true,
    };
    Ok((cfg, log, price))
}

/// Appends (and fsyncs) one record without stalling other tokio tasks.
fn persist(store: &Arc<Mutex<Store>>, rec: Record) -> Result<()> {
    let f = || -> Result<()> {
        let mut s = store
            .lock()
            .map_err(|_| anyhow::anyhow!("store lock poisoned"))?;
        s.append(rec).context("appending to the receipt log")
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
