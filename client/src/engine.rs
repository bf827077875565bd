//! The tunnel engine shared by `ferry connect` (TUN) and `ferry socks5` (smoltcp): one boringtun
//! `Tunn` over a connected UDP socket, our own byte counters, and — for paid relays — the
//! receipt exchange with the relay's control service inside the tunnel (ferry-metering's
//! [`ClientSession`] decides; every co-signed receipt is stored with fsync before it is sent).
//!
//! Driving contract: pass every inner packet the OS/stack wants to send to
//! [`Engine::send_inner`], every datagram from the socket to [`Engine::handle_datagram`]
//! (it returns the inner packets to deliver), call [`Engine::on_tick`] every ~250 ms, and stop
//! when [`Engine::failure`] is set or, after [`Engine::close`], when [`Engine::closed`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use boringtun::noise::{Tunn, TunnResult};
use ferry_keys::WgPrivateKey;
use ferry_metering::{CONTROL_PORT, ClientConfig, ClientSession, Message, decode, encode};
use ferry_receipts::{SigningKey, Voucher};
use ferry_store::{Record, SessionOpen, Store};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::config::Relay;
use crate::packet::ControlPath;
use crate::status::{LastReceipt, State, Status, spend_micros};

const HELLO_RETRY: Duration = Duration::from_secs(2);
const CLOSE_GRACE: Duration = Duration::from_secs(5);
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// WireGuard overhead on top of the inner packet (header 16 + tag 16), plus a handshake's worth.
const WG_OVERHEAD: usize = 32 + 148;

/// Everything a paid session needs.
pub(crate) struct PaidSetup {
    /// Our identity (signs offers and co-signatures).
    pub(crate) identity: Arc<SigningKey>,
    /// The voucher paying for the session.
    pub(crate) voucher: Voucher,
    /// Co-signed receipt log.
    pub(crate) store: Arc<Mutex<Store>>,
    /// Wakes the ledger submitter after a receipt is stored.
    pub(crate) kick: Option<Arc<Notify>>,
    /// Over-claim tolerance.
    pub(crate) cfg: ClientConfig,
    /// The session, if it was opened outside the tunnel (see `bootstrap`); otherwise the
    /// engine says `Hello` inside the tunnel.
    pub(crate) boot: Option<crate::bootstrap::Bootstrapped>,
}

struct Paid {
    session: ClientSession,
    control: ControlPath,
    hello: Vec<u8>,
    offer: Option<ferry_receipts::SessionOffer>,
    last_hello: Option<Instant>,
    accepted: bool,
    final_cosigned: bool,
    store: Arc<Mutex<Store>>,
    kick: Option<Arc<Notify>>,
}

/// One client tunnel.
pub(crate) struct Engine {
    tunn: Tunn,
    udp: Arc<UdpSocket>,
    endpoint: SocketAddr,
    out: Vec<u8>,
    paid: Option<Paid>,
    up: u64,
    down: u64,
    failure: Option<String>,
    closing: Option<Instant>,
    closed: bool,
    started: bool,
    status: Status,
    status_path: Option<PathBuf>,
    last_status: Option<Instant>,
}

/// Unix seconds now.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
        let tunn = Tunn::new(
            wg_key.static_secret(),
            x25519_dalek::PublicKey::from(relay.public_key.0),
            None,
            (relay.keepalive > 0).then_some(relay.keepalive),
            u32::from_be_bytes(index) >> 8,
            None,
        );
        let paid = match (paid, &relay.paid) {
            (Some(p), Some(rp)) => Some(Paid::new(p, rp, relay, wg_key)?),
            (None, None) => None,
            _ => anyhow::bail!("paid relay without a voucher setup (internal)"),
        };
        // The socket is connected to the resolved endpoint.
        let endpoint = udp
            .peer_addr()
            .context("the relay socket is not connected")?;
        // A host name is shown with what it resolved to: `relay.example:51820 (192.0.2.1:51820)`.
        let shown = match relay.endpoint.host() {
            Some(_) => format!("{} ({endpoint})", relay.endpoint),
            None => endpoint.to_string(),
        };
        let mut status = Status::new(mode, &relay.name, shown, paid.is_some(), unix_now());
        status.price_micros_per_gib = paid.as_ref().map(|p| {
            p.offer
                .as_ref()
                .map_or(0, |o| o.voucher.price_micros_per_gib)
        });
        if let Some(a) = paid.as_ref().and_then(|p| p.session.accept()) {
            status.session_id = Some(a.session_id.to_hex());
            status.price_micros_per_gib = Some(a.price_micros_per_gib);
        }
        Ok(Self {
            tunn,
            udp,
            endpoint,
            out: vec![0u8; usize::from(relay.mtu) + WG_OVERHEAD + 64],
            paid,
            up: 0,
            down: 0,
            failure: None,
            closing: None,
            closed: false,
            started: false,
            status,
            status_path,
            last_status: None,
        })
    }

    /// Set when the session must end (relay over-claimed, refused us, ...).
    pub(crate) fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// True once a requested close finished (final receipt co-signed, or grace expired).
    pub(crate) fn closed(&self) -> bool {
        self.closed
    }

    /// Whether a WireGuard handshake completed (and a paid session was accepted).
    pub(crate) fn is_up(&self) -> bool {
        let hs = self.tunn.stats().0.is_some();
        hs && self.paid.as_ref().is_none_or(|p| p.accepted)
    }

    /// The status snapshot (also written to the status file).
    pub(crate) fn status_mut(&mut self) -> &mut Status {
        &mut self.status
    }

    /// Encrypts and sends one inner packet from the local side.
    pub(crate) async fn send_inner(&mut self, pkt: &[u8]) {
        if let Some(p) = &mut self.paid {
            if p.control.is_outgoing(pkt) {
                // Local programs must not speak for us on the control channel.
                tracing::trace!("dropped a local packet to the control service");
                return;
            }
            p.session.record_up(pkt.len() as u64);
        }
        self.up += pkt.len() as u64;
        self.encrypt_and_send(pkt).await;
    }

    async fn encrypt_and_send(&mut self, pkt: &[u8]) {
        if self.out.len() < pkt.len() + WG_OVERHEAD {
            self.out.resize(pkt.len() + WG_OVERHEAD, 0);
        }
        match self.tunn.encapsulate(pkt, &mut self.out) {
            TunnResult::WriteToNetwork(b) => {
                if let Err(e) = self.udp.send(b).await {
                    tracing::trace!(error = %e, "udp send failed");
                }
            }
            TunnResult::Err(e) => tracing::trace!(error = ?e, "encapsulate failed"),
            _ => {}
        }
    }

    /// Decrypts one datagram from the relay; returns the inner packets to deliver locally.
    pub(crate) async fn handle_datagram(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        let mut deliver = Vec::new();
        let mut control = Vec::new();
        let src = Some(self.endpoint.ip());
        let mut first = true;
        loop {
            let input: &[u8] = if first { data } else { &[] };
            let r = self.tunn.decapsulate(src, input, &mut self.out);
            first = false;
            match r {
                TunnResult::WriteToNetwork(b) => {
                    if let Err(e) = self.udp.send(b).await {
                        tracing::trace!(error = %e, "udp send failed");
                    }
                    // Queued packets may follow a completed handshake.
                    continue;
                }
                TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                    let pkt: &[u8] = p;
                    match self
                        .paid
                        .as_ref()
                        .and_then(|x| x.control.unwrap_incoming(pkt))
                    {
                        Some(frame) => control.push(frame.to_vec()),
                        None => {
                            self.down += pkt.len() as u64;
                            if let Some(x) = &mut self.paid {
                                x.session.record_down(pkt.len() as u64);
                            }
                            deliver.push(pkt.to_vec());
                        }
                    }
                }
                TunnResult::Err(e) => tracing::trace!(error = ?e, "decapsulate failed"),
                TunnResult::Done => {}
            }
            break;
        }
        for frame in control {
            self.handle_control(&frame).await;
        }
        if self.status.state == State::Connecting && self.is_up() {
            self.status.state = State::Connected;
            tracing::info!(relay = %self.status.relay, "connected");
            self.write_status(true);
        }
        deliver
    }

    async fn handle_control(&mut self, frame: &[u8]) {
        let Some(p) = &mut self.paid else { return };
        let msg = match decode(frame) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "undecodable control frame");
                return;
            }
        };
        let now_ts = unix_now();
        let mut send = None;
        match msg {
            Message::Accept(a) => {
                if p.accepted {
                    return;
                }
                if let Err(e) = p.session.handle_accept(a.clone()) {
                    self.failure = Some(format!("relay sent an unusable session accept: {e}"));
                    return;
                }
                p.accepted = true;
                self.status.session_id = Some(a.session_id.to_hex());
                self.status.price_micros_per_gib = Some(a.price_micros_per_gib);
                if let Some(offer) = p.offer.take() {
                    let rec = Record::SessionOpen(Box::new(SessionOpen {
                        accept: a,
                        offer,
                        extra: Vec::new(),
                    }));
                    if let Err(e) = persist(&p.store, rec) {
                        tracing::warn!(error = %e, "could not store the session record");
                    }
                }
                tracing::info!("paid session accepted by the relay");
            }
            Message::Reject(r) => {
                self.failure = Some(format!("relay refused the session: {r}"));
            }
            m @ (Message::Receipt(_) | Message::FinalReceipt(_) | Message::Ack { .. }) => {
                let is_final = matches!(m, Message::FinalReceipt(_));
                let prev = p.session.last_cosigned().map(|c| c.body().seq);
                let reply = p.session.handle_message(m, now_ts);
                match &reply {
                    Some(Message::CoSigned(c)) => {
                        if prev != Some(c.body().seq) {
                            // Keep our copy durably before handing it out.
                            if let Err(e) = persist(&p.store, Record::CoSigned(*c)) {
                                tracing::warn!(error = %e, "could not store a co-signed receipt");
                            }
                            if let Some(k) = &p.kick {
                                k.notify_one();
                            }
                            tracing::debug!(seq = c.body().seq, "co-signed receipt");
                        }
                        if is_final {
                            p.final_cosigned = true;
                        }
                    }
                    Some(Message::ReceiptRejected { seq, reason }) => {
                        self.failure = Some(format!(
                            "refused receipt #{seq} from the relay: {reason}; disconnected"
                        ));
                    }
                    _ => {}
                }
                send = reply;
            }
            _ => {}
        }
        if let Some(m) = send {
            self.send_control(&m).await;
        }
        self.refresh_receipt_status();
        self.write_status(true);
    }

    fn refresh_receipt_status(&mut self) {
        let Some(p) = &self.paid else { return };
        if let Some(c) = p.session.last_cosigned() {
            let b = c.body();
            let acked = p.session.last_acked().is_some_and(|a| a >= b.seq);
            self.status.last_receipt = Some(LastReceipt {
                seq: b.seq,
                bytes_up: b.bytes_up,
                bytes_down: b.bytes_down,
                acked,
            });
            let price = self.status.price_micros_per_gib.unwrap_or(0);
            self.status.spend_micros = spend_micros(b.bytes_up.saturating_add(b.bytes_down), price);
        }
        if let Ok(s) = p.store.lock() {
            self.status.receipts_pending_submission = Some(s.pending_count());
        }
    }

    async fn send_control(&mut self, m: &Message) {
        let Some(pkt) = self.paid.as_ref().and_then(|p| p.control.wrap(&encode(m))) else {
            return;
        };
        self.encrypt_and_send(&pkt).await;
    }

    /// Timers: WireGuard handshakes/keepalives, Hello retransmission, close grace, status file.
    pub(crate) async fn on_tick(&mut self) {
        let now = Instant::now();
        if !self.started {
            // Handshake right away instead of waiting for the first packet or keepalive.
            self.started = true;
            if let TunnResult::WriteToNetwork(b) =
                self.tunn.format_handshake_initiation(&mut self.out, false)
            {
                if let Err(e) = self.udp.send(b).await {
                    tracing::trace!(error = %e, "udp send failed");
                }
            }
        }
        match self.tunn.update_timers(&mut self.out) {
            TunnResult::WriteToNetwork(b) => {
                if let Err(e) = self.udp.send(b).await {
                    tracing::trace!(error = %e, "udp send failed");
                }
            }
            TunnResult::Err(e) => tracing::trace!(error = ?e, "timer"),
            _ => {}
        }
        let hello = match &mut self.paid {
            Some(p) if !p.accepted && p.last_hello.is_none_or(|t| now - t >= HELLO_RETRY) => {
                p.last_hello = Some(now);
                p.control.wrap(&p.hello)
            }
            _ => None,
        };
        if let Some(pkt) = hello {
            self.encrypt_and_send(&pkt).await;
        }
        if let Some(t) = self.closing {
            let done = self
                .paid
                .as_ref()
                .is_none_or(|p| p.final_cosigned || !p.accepted);
            if done || now - t >= CLOSE_GRACE {
                self.closed = true;
            }
        }
        self.write_status(false);
    }

    /// Starts closing: a paid session sends `Close` and waits (≤ 5 s) for the final receipt.
    pub(crate) async fn close(&mut self) {
        if self.closing.is_some() {
            return;
        }
        self.closing = Some(Instant::now());
        self.status.state = State::Disconnecting;
        let accepted = self.paid.as_ref().is_some_and(|p| p.accepted);
        if accepted {
            self.send_control(&Message::Close).await;
        } else {
            self.closed = true;
        }
    }

    /// Records the final state (and error) in the status file.
    pub(crate) fn finish(&mut self, state: State, error: Option<String>) {
        self.status.state = state;
        self.status.error = error;
        self.write_status(true);
    }

    fn write_status(&mut self, force: bool) {
        let now = Instant::now();
        if !force && self.last_status.is_some_and(|t| now - t < STATUS_EVERY) {
            return;
        }
        self.last_status = Some(now);
        self.status.bytes_up = self.up;
        self.status.bytes_down = self.down;
        self.status.updated_at = unix_now();
        self.status.last_handshake_secs = self.tunn.stats().0.map(|d| d.as_secs());
        if let Some(path) = &self.status_path {
            if let Err(e) = self.status.write(path) {
                tracing::debug!(error = %format!("{e:#}"), "status file");
            }
        }
    }
}

impl Paid {
    fn new(
        setup: PaidSetup,
        rp: &crate::config::Paid,
        relay: &Relay,
        wg_key: &WgPrivateKey,
    ) -> Result<Self> {
        let local_ip: IpAddr = match rp.control_address {
            IpAddr::V4(_) => relay.addr_v4().map(IpAddr::V4),
            IpAddr::V6(_) => relay.addr_v6().map(IpAddr::V6),
        }
        .context("no tunnel address of the control address's family")?;
        let control = ControlPath {
            local: SocketAddr::new(local_ip, CONTROL_PORT),
            remote: SocketAddr::new(rp.control_address, CONTROL_PORT),
        };
        if let Some(b) = setup.boot {
            let rec = Record::SessionOpen(Box::new(SessionOpen {
                accept: b.accept,
                offer: b.offer,
                extra: Vec::new(),
            }));
            if let Err(e) = persist(&setup.store, rec) {
                tracing::warn!(error = %e, "could not store the session record");
            }
            return Ok(Self {
                session: b.session,
                control,
                hello: Vec::new(),
                offer: None,
                last_hello: None,
                accepted: true,
                final_cosigned: false,
                store: setup.store,
                kick: setup.kick,
            });
        }
        let mut session = ClientSession::new(
            setup.cfg,
            setup.identity.clone(),
            setup.voucher.network_id,
            rp.identity_key,
        );
        let mut nonce = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| anyhow::anyhow!("no randomness"))?;
        let hello = session.hello(
            setup.voucher.clone(),
            wg_key.public_key().0,
            nonce,
            unix_now(),
        );
        let offer = match &hello {
            Message::Hello(o) => Some(o.clone()),
            _ => None,
        };
        Ok(Self {
            session,
            control,
            hello: encode(&hello),
            offer,
            last_hello: None,
            accepted: false,
            final_cosigned: false,
            store: setup.store,
            kick: setup.kick,
        })
    }
}

/// Appends (and fsyncs) one record without stalling other tokio tasks.
fn persist(store: &Arc<Mutex<Store>>, rec: Record) -> Result<()> {
    let f = || -> Result<()> {
        let mut s = store
            .lock()
            .map_err(|_| anyhow::anyhow!("store lock poisoned"))?;
        s.append(rec).map_err(|e| anyhow::anyhow!("{e}"))
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
