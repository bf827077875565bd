//! Ferry's sans-IO client tunnel: the client side of a session with a relay, used by
//! `ferry connect` (TUN), `ferry socks5` (smoltcp) and the test clients.
//!
//! Owns: one boringtun `Tunn` to the relay, the client's own counts of inner bytes up and down
//! (what the relay bills), and, for a paid relay, the receipt exchange on the control channel
//! inside the tunnel (`Hello` until `Accept`, co-signing receipts with ferry-metering's
//! [`ClientSession`], `Close` until the final receipt).
//!
//! Must not: do I/O, read clocks or use OS randomness (this crate's `clippy.toml`): `now`
//! (monotonic) and `unix_ts` (wall clock) are arguments; boringtun's `Tunn` reads its own clock
//! internally. Durability is the caller's: a new co-signed receipt comes out as
//! [`Event::StoreCosigned`] and is sent to the relay only after the caller stored it (fsync)
//! and called [`ClientTunnel::persisted`].
//!
//! Driving contract:
//! - [`ClientTunnel::send_inner`] for every inner packet the local side wants to send;
//! - [`ClientTunnel::handle_datagram`] for every datagram from the relay's endpoint;
//! - [`ClientTunnel::handle_timeout`] every [`TICK`] (handshakes, keepalives, `Hello` and `Close`
//!   retransmission, the close grace);
//! - after each of these, drain [`ClientTunnel::poll_transmit`] (datagrams for the relay's
//!   endpoint) and [`ClientTunnel::poll_event`];
//! - [`ClientTunnel::close`] to end the session; stop after [`Event::Closed`] or
//!   [`Event::Failed`].
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod control;
mod flows;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ferry_metering::{ClientSession, Message, ReceiptRejectReason, SessionRejectReason, encode};
use ferry_receipts::{CoSignedReceipt, SessionAccept, SessionOffer};

pub use control::ControlPath;
pub use flows::{FLOW_IDLE, Flows, MAX_FLOWS};

/// How often [`ClientTunnel::handle_timeout`] should be called.
pub const TICK: Duration = Duration::from_millis(250);
/// `Hello` is repeated this often until the relay answers.
pub const HELLO_RETRY: Duration = Duration::from_secs(2);
/// `Close` is repeated this often until the final receipt arrives.
pub const CLOSE_RETRY: Duration = Duration::from_secs(1);
/// After [`ClientTunnel::close`], the session ends at the latest after this long (default of
/// [`TunnelConfig::close_grace`]).
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// WireGuard overhead on top of an inner packet (header 16 + tag 16), plus a handshake's worth.
const WG_OVERHEAD: usize = 32 + 148;

/// The WireGuard side of a tunnel.
pub struct TunnelConfig {
    /// Our WireGuard private key.
    pub secret: StaticSecret,
    /// The relay's WireGuard public key.
    pub relay_key: PublicKey,
    /// Persistent keepalive in seconds (`None`: off).
    pub keepalive: Option<u16>,
    /// Our receiver index (24 bits; random, from the caller).
    pub index: u32,
    /// The relay endpoint's IP (passed to boringtun with every datagram).
    pub relay_ip: IpAddr,
    /// Largest inner packet (the tunnel MTU).
    pub mtu: usize,
    /// Start a new handshake when packets were sent but nothing came back for this long (a
    /// relay that restarted without our session); `None`: leave it to WireGuard's timers.
    pub rehandshake_after: Option<Duration>,
    /// How long [`ClientTunnel::close`] waits for the final receipt ([`CLOSE_GRACE`]).
    pub close_grace: Duration,
    /// Fail ([`Failure::NoHandshake`]) when no WireGuard handshake completed this long after
    /// the start (a wrong relay key, a relay that is not there); `None`: keep trying.
    pub handshake_timeout: Option<Duration>,
    /// Fail ([`Failure::RelaySilent`]) when, after connecting, a packet we sent has had no
    /// answer of any kind (data, keepalive, handshake, control) for this long: the relay
    /// dropped the session (restart without it, ended it unseen) or the path is gone. A relay
    /// answers data with a keepalive within 10 s, so 25 s is safe. `None`: never.
    pub silent_after: Option<Duration>,
}

/// The paid part of a tunnel.
pub struct PaidConfig {
    /// The receipt-checking state machine (tolerance, identity, relay identity key).
    pub session: ClientSession,
    /// Where the relay's control service is, and our side of it.
    pub control: ControlPath,
    /// `Some(Hello)`: offer the session inside the tunnel and repeat it until the relay
    /// answers. `None`: the session was accepted outside the tunnel already (`session` holds
    /// the Accept).
    pub hello: Option<Message>,
    /// False only in tests: receipts are seen but never answered (a client that does not pay).
    pub answer_receipts: bool,
}

/// Why a session failed (the tunnel stops by itself; see also [`ClientTunnel::failure`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The relay refused the session offer.
    Refused(SessionRejectReason),
    /// The relay's Accept does not match our offer or does not verify.
    BadAccept(String),
    /// No WireGuard handshake completed within the handshake timeout.
    NoHandshake(Duration),
    /// After connecting, nothing came back from the relay for this long while we sent.
    RelaySilent(Duration),
    /// We refused a receipt (the relay claimed more than we counted); `ReceiptRejected` was sent.
    ReceiptRefused {
        /// The refused receipt's sequence number.
        seq: u64,
        /// Why.
        reason: ReceiptRejectReason,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(r) => write!(f, "relay refused the session: {r}"),
            Self::BadAccept(e) => write!(f, "relay sent an unusable session accept: {e}"),
            Self::NoHandshake(d) => write!(
                f,
                "the relay did not answer the WireGuard handshake within {} s",
                d.as_secs()
            ),
            Self::RelaySilent(d) => write!(
                f,
                "the relay stopped answering (nothing came back for {} s): it restarted \
                 without our session or the network path is down",
                d.as_secs()
            ),
            Self::ReceiptRefused { seq, reason } => {
                write!(
                    f,
                    "refused receipt #{seq} from the relay: {reason}; disconnected"
                )
            }
        }
    }
}

/// What the caller must know or do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An inner packet from the relay for the local side (TUN or user-space stack).
    Deliver(Vec<u8>),
    /// The WireGuard handshake completed (and, for a paid relay, the session is accepted).
    Connected,
    /// The relay accepted the session offered inside the tunnel: store it (the client's
    /// receipt log keeps the offer and accept beside the co-signed receipts).
    StoreSession {
        /// Our offer.
        offer: Box<SessionOffer>,
        /// The relay's accept.
        accept: Box<SessionAccept>,
    },
    /// A receipt we co-signed: store it durably, then call [`ClientTunnel::persisted`] with its
    /// seq; only then is the co-signature sent to the relay.
    StoreCosigned {
        /// The co-signed receipt.
        receipt: Box<CoSignedReceipt>,
        /// It is the session's final receipt.
        final_receipt: bool,
    },
    /// The relay's state was behind ours (it restarted before storing our last co-signature):
    /// that co-signed receipt (seq) was sent again.
    Resynced(u64),
    /// We refused a receipt that over-claimed or went backwards: our signed refusal, for the
    /// directory (`POST /v1/directory/refusals`). Comes before the `ReceiptRefused` failure.
    Refusal(Box<ferry_receipts::ReceiptRefusal>),
    /// A receipt (or final receipt) arrived.
    ReceiptSeen {
        /// It was the final one.
        final_receipt: bool,
    },
    /// The relay acknowledged (stored) our co-signed receipt `seq`.
    Acked(u64),
    /// The session failed; nothing more is sent.
    Failed(Failure),
    /// The relay ended the session on its own (voucher used up, relay shutting down): its
    /// final receipt arrived without our `Close`. The final co-signature comes as
    /// [`Event::StoreCosigned`] (before this event); nothing more is sent after it.
    EndedByRelay {
        /// Bytes (up + down) the final receipt covers.
        total_bytes: u64,
    },
    /// After [`ClientTunnel::close`]: the session is over.
    Closed {
        /// The final receipt was co-signed (and handed out as [`Event::StoreCosigned`]).
        final_cosigned: bool,
    },
}

struct Paid {
    session: ClientSession,
    control: ControlPath,
    hello: Option<Vec<u8>>,
    offer: Option<SessionOffer>,
    last_hello: Option<Instant>,
    accepted: bool,
    final_cosigned: bool,
    /// Seq of the final receipt we co-signed (a close waits for its Ack, within the grace).
    final_seq: Option<u64>,
    /// Co-signatures waiting for the caller's [`ClientTunnel::persisted`], by seq.
    unsent: BTreeMap<u64, Message>,
    /// Highest seq the caller reported stored.
    stored: Option<u64>,
    answer_receipts: bool,
    last_acked: Option<u64>,
}

/// One client tunnel (see the crate docs for the driving contract).
pub struct ClientTunnel {
    tunn: Tunn,
    relay_ip: IpAddr,
    out: Vec<u8>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    paid: Option<Paid>,
    up: u64,
    down: u64,
    started: bool,
    connected: bool,
    failure: Option<Failure>,
    closing: Option<Instant>,
    last_close: Option<Instant>,
    closed: bool,
    close_grace: Duration,
    handshake_timeout: Option<Duration>,
    started_at: Option<Instant>,
    rehandshake_after: Option<Duration>,
    last_rx: Option<Instant>,
    last_tx: Option<Instant>,
    last_forced: Option<Instant>,
    silent_after: Option<Duration>,
    /// The first packet we sent since the relay last sent anything.
    unanswered_since: Option<Instant>,
    /// Paid tunnels: inbound packets are counted and delivered only for flows we opened.
    flows: Option<Flows>,
    unsolicited: u64,
}

impl ClientTunnel {
    /// A tunnel that starts its handshake on the first [`Self::handle_timeout`].
    pub fn new(cfg: TunnelConfig, paid: Option<PaidConfig>) -> Self {
        let tunn = Tunn::new(
            cfg.secret,
            cfg.relay_key,
            None,
            cfg.keepalive,
            cfg.index & 0x00ff_ffff,
            None,
        );
        let paid = paid.map(|p| {
            let offer = match &p.hello {
                Some(Message::Hello(o)) => Some(o.clone()),
                _ => None,
            };
            Paid {
                accepted: p.hello.is_none() && p.session.accept().is_some(),
                hello: p.hello.as_ref().map(encode),
                offer,
                session: p.session,
                control: p.control,
                last_hello: None,
                final_cosigned: false,
                final_seq: None,
                unsent: BTreeMap::new(),
                stored: None,
                answer_receipts: p.answer_receipts,
                last_acked: None,
            }
        });
        let flows = paid.as_ref().map(|_| Flows::default());
        Self {
            flows,
            unsolicited: 0,
            tunn,
            relay_ip: cfg.relay_ip,
            out: vec![0u8; cfg.mtu + WG_OVERHEAD + 64],
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            paid,
            up: 0,
            down: 0,
            started: false,
            connected: false,
            failure: None,
            closing: None,
            last_close: None,
            closed: false,
            close_grace: cfg.close_grace,
            handshake_timeout: cfg.handshake_timeout,
            started_at: None,
            rehandshake_after: cfg.rehandshake_after,
            last_rx: None,
            last_tx: None,
            last_forced: None,
            silent_after: cfg.silent_after,
            unanswered_since: None,
        }
    }

    /// Encrypts one inner packet from the local side. Returns false if it was not sent: a
    /// local packet to the relay's control service (local programs must not speak for us),
    /// or the session failed or closed.
    pub fn send_inner(&mut self, pkt: &[u8], now: Instant) -> bool {
        if self.failure.is_some() || self.closed {
            return false;
        }
        if let Some(p) = &mut self.paid {
            if p.control.is_outgoing(pkt) {
                return false;
            }
            p.session.record_up(pkt.len() as u64);
        }
        if let Some(f) = &mut self.flows {
            f.outbound(pkt, now);
        }
        self.up += pkt.len() as u64;
        self.last_tx = Some(now);
        self.unanswered_since.get_or_insert(now);
        self.encapsulate(pkt);
        true
    }

    /// Handles one datagram from the relay's endpoint.
    pub fn handle_datagram(&mut self, data: &[u8], now: Instant, unix_ts: u64) {
        let mut control = Vec::new();
        let mut input = data;
        loop {
            match self
                .tunn
                .decapsulate(Some(self.relay_ip), input, &mut self.out)
            {
                TunnResult::WriteToNetwork(b) => {
                    self.transmits.push_back(b.to_vec());
                    self.heard(now);
                    // Queued packets may follow a completed handshake.
                    input = &[];
                    continue;
                }
                TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                    let pkt: &[u8] = p;
                    self.last_rx = Some(now);
                    self.unanswered_since = None;
                    match self
                        .paid
                        .as_ref()
                        .and_then(|x| x.control.unwrap_incoming(pkt))
                    {
                        Some(frame) => control.push(frame.to_vec()),
                        None if self
                            .flows
                            .as_mut()
                            .is_some_and(|f| !f.inbound_allowed(pkt, now)) =>
                        {
                            // Not part of a flow we opened: neither counted (so not co-signed)
                            // nor delivered.
                            self.unsolicited += 1;
                        }
                        None => {
                            self.down += pkt.len() as u64;
                            if let Some(x) = &mut self.paid {
                                x.session.record_down(pkt.len() as u64);
                            }
                            self.events.push_back(Event::Deliver(pkt.to_vec()));
                        }
                    }
                }
                TunnResult::Done => self.heard(now),
                TunnResult::Err(_) => {}
            }
            break;
        }
        for frame in control {
            self.handle_control(&frame, unix_ts);
        }
        self.check_connected();
    }

    /// The co-signed receipt `seq` is stored durably: send the co-signature to the relay.
    pub fn persisted(&mut self, seq: u64) {
        let Some(p) = self.paid.as_mut() else { return };
        let Some(m) = p.unsent.remove(&seq) else {
            return;
        };
        p.stored = p.stored.max(Some(seq));
        self.send_control(&m);
    }

    /// Timer work: the first handshake, WireGuard timers, `Hello`/`Close` retransmission,
    /// a re-handshake with a silent relay, the close grace.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed || self.failure.is_some() {
            return;
        }
        if !self.started {
            // Handshake right away instead of waiting for the first packet or keepalive.
            self.started = true;
            self.started_at = Some(now);
            self.handshake(false);
        }
        if let (Some(limit), Some(t0)) = (self.handshake_timeout, self.started_at) {
            if self.tunn.stats().0.is_none() && now.saturating_duration_since(t0) >= limit {
                self.fail(Failure::NoHandshake(limit));
                return;
            }
        }
        if let (Some(limit), Some(t)) = (self.silent_after, self.unanswered_since) {
            if self.connected && self.closing.is_none() && now.saturating_duration_since(t) >= limit
            {
                self.fail(Failure::RelaySilent(limit));
                return;
            }
        }
        if let TunnResult::WriteToNetwork(b) = self.tunn.update_timers(&mut self.out) {
            self.transmits.push_back(b.to_vec());
        }
        let hello = match &mut self.paid {
            Some(p) if !p.accepted && p.last_hello.is_none_or(|t| now - t >= HELLO_RETRY) => {
                p.last_hello = Some(now);
                p.hello.as_ref().and_then(|h| p.control.wrap(h))
            }
            _ => None,
        };
        if let Some(pkt) = hello {
            self.encapsulate(&pkt);
        }
        if let Some(after) = self.rehandshake_after {
            let sending = self.last_tx.is_some_and(|t| now - t < after) || self.closing.is_some();
            let silent = self.last_rx.is_none_or(|t| now - t > after);
            if sending && silent && self.last_forced.is_none_or(|t| now - t > after) {
                self.last_forced = Some(now);
                self.handshake(true);
            }
        }
        if let Some(t) = self.closing {
            let (final_cosigned, final_acked, accepted) =
                self.paid.as_ref().map_or((true, true, false), |p| {
                    let acked = p.final_seq.is_some_and(|f| p.last_acked >= Some(f));
                    (p.final_cosigned, acked, p.accepted)
                });
            // Done once the relay acknowledged (stored) our final co-signature.
            if final_acked || !accepted || now - t >= self.close_grace {
                self.finish_close(final_cosigned && accepted);
            } else if self.last_close.is_none_or(|c| now - c >= CLOSE_RETRY) {
                self.last_close = Some(now);
                self.send_control(&Message::Close);
            }
        }
    }

    /// Starts ending the session: a paid session sends `Close` and waits (at most
    /// [`CLOSE_GRACE`]) for the final receipt and the relay's Ack of our co-signature of it;
    /// otherwise it ends at once ([`Event::Closed`]).
    pub fn close(&mut self, now: Instant) {
        if self.closing.is_some() || self.closed {
            return;
        }
        self.closing = Some(now);
        if self.paid.as_ref().is_some_and(|p| p.accepted) && self.failure.is_none() {
            self.last_close = Some(now);
            self.send_control(&Message::Close);
        } else {
            self.finish_close(false);
        }
    }

    /// Sends a WireGuard keepalive now (after the caller moved to a new local address, so
    /// the relay learns the new endpoint at once).
    pub fn keepalive(&mut self) {
        if !self.closed && self.failure.is_none() {
            self.encapsulate(&[]);
        }
    }

    /// Next datagram for the relay's endpoint.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The WireGuard handshake completed and (paid) the session was accepted.
    pub fn is_up(&self) -> bool {
        self.tunn.stats().0.is_some() && self.paid.as_ref().is_none_or(|p| p.accepted)
    }

    /// Why the session failed, if it did.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// True after [`Event::Closed`].
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Inner bytes sent (our own count: what the relay bills as up).
    pub fn bytes_up(&self) -> u64 {
        self.up
    }

    /// Inner bytes received (without control traffic).
    pub fn bytes_down(&self) -> u64 {
        self.down
    }

    /// Inbound packets dropped uncounted because they belong to no flow we opened.
    pub fn dropped_unsolicited(&self) -> u64 {
        self.unsolicited
    }

    /// Time since the last completed handshake.
    pub fn since_handshake(&self) -> Option<Duration> {
        self.tunn.stats().0
    }

    /// The paid session state (receipts co-signed and acknowledged, accept).
    pub fn session(&self) -> Option<&ClientSession> {
        self.paid.as_ref().map(|p| &p.session)
    }

    fn handle_control(&mut self, frame: &[u8], unix_ts: u64) {
        let Ok(msg) = ferry_metering::decode(frame) else {
            return;
        };
        let Some(p) = &mut self.paid else { return };
        match msg {
            Message::Accept(a) => {
                if p.accepted {
                    return;
                }
                if let Err(e) = p.session.handle_accept(a.clone()) {
                    self.fail(Failure::BadAccept(e.to_string()));
                    return;
                }
                p.accepted = true;
                if let Some(offer) = p.offer.take() {
                    self.events.push_back(Event::StoreSession {
                        offer: Box::new(offer),
                        accept: Box::new(a),
                    });
                }
            }
            // Only a reject our relay signed for this offer ends the attempt; anything else
            // (forged, replayed, another relay's) is ignored and the Hello retried.
            Message::Reject(r) if !p.accepted => {
                if let Some(reason) = p.session.check_reject(&r) {
                    self.fail(Failure::Refused(reason));
                }
            }
            m @ (Message::Receipt(_) | Message::FinalReceipt(_) | Message::Ack { .. }) => {
                let is_final = matches!(m, Message::FinalReceipt(_));
                if !matches!(m, Message::Ack { .. }) {
                    self.events.push_back(Event::ReceiptSeen {
                        final_receipt: is_final,
                    });
                    if !p.answer_receipts {
                        return;
                    }
                }
                let reply = p.session.handle_message(m, unix_ts);
                if let Some(a) = p.session.last_acked() {
                    if p.last_acked.is_none_or(|l| a > l) {
                        p.last_acked = Some(a);
                        self.events.push_back(Event::Acked(a));
                    }
                }
                let ended_by_relay = is_final && self.closing.is_none() && !p.final_cosigned;
                match reply {
                    Some(Message::CoSigned(c)) => {
                        if is_final {
                            p.final_cosigned = true;
                            p.final_seq = Some(c.body().seq);
                        }
                        let total = c.body().total_bytes();
                        let seq = c.body().seq;
                        if p.stored.is_some_and(|s| seq <= s) {
                            // A repeat of what the caller stored already.
                            self.send_control(&Message::CoSigned(c));
                        } else if let std::collections::btree_map::Entry::Vacant(v) =
                            p.unsent.entry(seq)
                        {
                            v.insert(Message::CoSigned(c));
                            self.events.push_back(Event::StoreCosigned {
                                receipt: Box::new(c),
                                final_receipt: is_final,
                            });
                        }
                        // else: still waiting for the caller to store it.
                        if ended_by_relay {
                            self.events
                                .push_back(Event::EndedByRelay { total_bytes: total });
                            self.finish_close(true);
                        }
                    }
                    Some(m @ Message::ReceiptRejected { seq, reason }) => {
                        if let Some(r) = p.session.refusal() {
                            self.events.push_back(Event::Refusal(Box::new(*r)));
                        }
                        self.send_control(&m);
                        self.fail(Failure::ReceiptRefused { seq, reason });
                    }
                    Some(m @ Message::Resync(c)) => {
                        self.events.push_back(Event::Resynced(c.body().seq));
                        self.send_control(&m);
                    }
                    Some(m) => self.send_control(&m),
                    None => {}
                }
            }
            _ => {}
        }
    }

    /// A datagram from the relay decrypted (data, keepalive, handshake response).
    fn heard(&mut self, now: Instant) {
        self.last_rx = Some(now);
        self.unanswered_since = None;
    }

    fn check_connected(&mut self) {
        if !self.connected && self.is_up() {
            self.connected = true;
            self.events.push_back(Event::Connected);
        }
    }

    fn fail(&mut self, f: Failure) {
        if self.failure.is_none() {
            self.failure = Some(f.clone());
            self.events.push_back(Event::Failed(f));
        }
    }

    fn finish_close(&mut self, final_cosigned: bool) {
        if !self.closed {
            self.closed = true;
            self.events.push_back(Event::Closed { final_cosigned });
        }
    }

    fn send_control(&mut self, m: &Message) {
        let Some(pkt) = self.paid.as_ref().and_then(|p| p.control.wrap(&encode(m))) else {
            return;
        };
        self.encapsulate(&pkt);
    }

    fn handshake(&mut self, force: bool) {
        if let TunnResult::WriteToNetwork(b) =
            self.tunn.format_handshake_initiation(&mut self.out, force)
        {
            self.transmits.push_back(b.to_vec());
        }
    }

    fn encapsulate(&mut self, pkt: &[u8]) {
        if self.out.len() < pkt.len() + WG_OVERHEAD {
            self.out.resize(pkt.len() + WG_OVERHEAD, 0);
        }
        if let TunnResult::WriteToNetwork(b) = self.tunn.encapsulate(pkt, &mut self.out) {
            self.transmits.push_back(b.to_vec());
        }
    }
}
