//! The relay side of a paid session.
//!
//! Driving contract (the agent shell, per session):
//! 1. [`RelaySession::open`] on a client `Hello` (send the returned `Accept`), or
//!    [`RelaySession::resume`] after a restart from the stored state.
//! 2. For every packet that passed allowed-IPs and egress policy: [`RelaySession::on_bytes`];
//!    forward it only on [`Verdict::Forward`] (the bytes are then counted).
//! 3. Control messages from the client go to [`RelaySession::handle_message`].
//!    `Persist(c)`: append `c` to the store, fsync, then call [`RelaySession::persisted`]
//!    and send the `Ack` it returns. Never ack before the fsync.
//! 4. Whenever woken (timer from [`RelaySession::poll_timeout`], or after 2./3.): call
//!    [`RelaySession::handle_timeout`], then drain [`RelaySession::poll_transmit`] and
//!    [`RelaySession::poll_event`].
//! 5. Teardown: [`RelaySession::close`], then keep driving until [`SessionState::Closed`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use ferry_receipts::{
    CoSignedReceipt, ReceiptBody, SessionAccept, SessionId, SessionOffer, Signature, SignedReceipt,
    SigningKey, VerifyError,
};

mod types;

pub use types::{
    ConfigError, CosignError, CosignOutcome, CreditMode, CutOffReason, DropReason, PROBE_SKEW_SECS,
    RelayConfig, RelayEvent, RelayIdentity, SessionState, Verdict,
};

use crate::meter::{Direction, Meter};
use crate::proto::{Message, ReceiptRejectReason, SessionRejectReason};
use ferry_ratelimit::TokenBucket;

/// Issued-but-unacknowledged receipts remembered for matching co-signatures.
const MAX_OUTSTANDING: usize = 8;

/// One paid session on the relay. See the module docs for the driving contract.
#[derive(Debug)]
pub struct RelaySession {
    cfg: RelayConfig,
    key: Arc<SigningKey>,
    accept: SessionAccept,
    allowance_bytes: u64,
    expires_at: u64,
    meter: Meter,
    state: SessionState,
    next_seq: u64,
    /// Issued receipts newer than the acknowledged one, oldest first.
    outstanding: VecDeque<SignedReceipt>,
    /// When the latest receipt was last (re)sent.
    last_sent_at: Option<Instant>,
    /// When the oldest outstanding receipt was first sent.
    oldest_outstanding_at: Option<Instant>,
    /// Total bytes covered by the latest issued receipt.
    issued_total: u64,
    last_issue_at: Instant,
    /// Latest co-signed receipt that is durably stored.
    acked: Option<CoSignedReceipt>,
    acked_total: u64,
    awaiting_persist: BTreeMap<u64, CoSignedReceipt>,
    credit_blocked: bool,
    close_started_at: Option<Instant>,
    /// Seq of the final receipt, once issued (every close that counted bytes sends one).
    final_seq: Option<u64>,
    bucket: Option<TokenBucket>,
    transmit: VecDeque<Message>,
    events: VecDeque<RelayEvent>,
}

impl RelaySession {
    /// Verifies a client's offer (network, relay, signatures, voucher expiry at `unix_ts`,
    /// the voucher's max price against our `price`) and opens a session at `price` micros
    /// per GiB. `session_id` must be random (the caller's RNG); `already_spent_micros` is what
    /// earlier sessions on this relay debited from the same voucher. Returns the session and
    /// the `Accept` message to send.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        cfg: RelayConfig,
        id: &RelayIdentity,
        offer: &SessionOffer,
        session_id: SessionId,
        price: u64,
        already_spent_micros: u64,
        now: Instant,
        unix_ts: u64,
    ) -> Result<(Self, Message), SessionRejectReason> {
        offer
            .verify(
                &id.network_id,
                &id.key.public_key(),
                &id.ledger_key,
                unix_ts,
            )
            .map_err(|e| match e {
                VerifyError::WrongNetwork => SessionRejectReason::WrongNetwork,
                VerifyError::WrongKey => SessionRejectReason::WrongKey,
                VerifyError::Expired => SessionRejectReason::VoucherExpired,
                _ => SessionRejectReason::BadSignature,
            })?;
        if !offer.voucher.allows_price(price) {
            return Err(SessionRejectReason::PriceAboveMax);
        }
        let allowance = offer.voucher.bytes_at(price, already_spent_micros);
        if allowance == 0 {
            return Err(SessionRejectReason::AllowanceExhausted);
        }
        let accept = SessionAccept {
            network_id: id.network_id,
            relay_key: id.key.public_key(),
            client_key: offer.client_key,
            session_id,
            voucher_id: offer.voucher.id(),
            started_at: unix_ts,
            price_micros_per_gib: price,
            signature: Signature::ZERO,
        }
        .sign(&id.key);
        let s = Self::new(
            cfg,
            id.key.clone(),
            accept.clone(),
            allowance,
            offer.voucher.expires_at,
            None,
            now,
        );
        Ok((s, Message::Accept(accept)))
    }

    /// Rebuilds a session after a restart from its stored `accept`, the voucher terms and
    /// the latest durably stored co-signed receipt. Counting continues from that receipt;
    /// bytes counted after it but never co-signed are lost (at most W).
    pub fn resume(
        cfg: RelayConfig,
        key: Arc<SigningKey>,
        accept: SessionAccept,
        allowance_bytes: u64,
        expires_at: u64,
        latest: Option<CoSignedReceipt>,
        now: Instant,
    ) -> Self {
        Self::new(cfg, key, accept, allowance_bytes, expires_at, latest, now)
    }

    fn new(
        cfg: RelayConfig,
        key: Arc<SigningKey>,
        accept: SessionAccept,
        allowance_bytes: u64,
        expires_at: u64,
        latest: Option<CoSignedReceipt>,
        now: Instant,
    ) -> Self {
        let (meter, next_seq, acked_total) = match &latest {
            Some(c) => (
                Meter::resume(c.body().bytes_up, c.body().bytes_down),
                c.body().seq + 1,
                c.body().total_bytes(),
            ),
            None => (Meter::new(), 1, 0),
        };
        let bucket = match cfg.mode {
            CreditMode::Stop => None,
            CreditMode::Throttle {
                free_rate_bytes_per_sec: r,
            } => Some(TokenBucket::new(r, r.max(2048))),
        };
        Self {
            cfg,
            key,
            accept,
            allowance_bytes,
            expires_at,
            meter,
            state: SessionState::Active,
            next_seq,
            outstanding: VecDeque::new(),
            last_sent_at: None,
            oldest_outstanding_at: None,
            issued_total: acked_total,
            last_issue_at: now,
            acked: latest,
            acked_total,
            awaiting_persist: BTreeMap::new(),
            credit_blocked: false,
            close_started_at: None,
            final_seq: None,
            bucket,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The session's terms.
    pub fn accept(&self) -> &SessionAccept {
        &self.accept
    }

    /// Session id.
    pub fn session_id(&self) -> SessionId {
        self.accept.session_id
    }

    /// Cumulative counters (forwarded bytes only).
    pub fn meter(&self) -> Meter {
        self.meter
    }

    /// Lifecycle state.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// Latest durably stored co-signed receipt.
    pub fn acknowledged(&self) -> Option<&CoSignedReceipt> {
        self.acked.as_ref()
    }

    /// Bytes counted beyond the latest stored co-signed receipt.
    pub fn unacknowledged_bytes(&self) -> u64 {
        self.meter.total().saturating_sub(self.acked_total)
    }

    /// Credit left before the window is full (0 when full).
    pub fn allowance(&self) -> u64 {
        self.cfg
            .credit_window_bytes
            .saturating_sub(self.unacknowledged_bytes())
    }

    /// True while the session is active and the credit window is not full.
    pub fn forwarding_allowed(&self) -> bool {
        self.state == SessionState::Active && self.allowance() > 0
    }

    /// Meters one packet of `bytes` (inner IP packet length) that passed allowed-IPs and
    /// egress policy. Counts it and returns [`Verdict::Forward`], or counts nothing and
    /// returns why it must be dropped. In Stop mode the unacknowledged bytes never exceed
    /// the credit window.
    pub fn on_bytes(&mut self, dir: Direction, bytes: u64, now: Instant) -> Verdict {
        if self.state != SessionState::Active {
            return Verdict::Drop(DropReason::NotActive);
        }
        if self.meter.total().saturating_add(bytes) > self.allowance_bytes {
            self.events.push_back(RelayEvent::AllowanceExhausted);
            self.begin_close(now);
            return Verdict::Drop(DropReason::AllowanceExhausted);
        }
        if self.unacknowledged_bytes().saturating_add(bytes) > self.cfg.credit_window_bytes {
            self.credit_blocked = true;
            let Some(bucket) = self.bucket.as_mut() else {
                return Verdict::Drop(DropReason::CreditExhausted);
            };
            if !bucket.try_take(now, bytes) {
                return Verdict::Drop(DropReason::Throttled);
            }
        }
        self.meter.record(dir, bytes);
        Verdict::Forward
    }

    /// Shorthand for [`Self::on_bytes`] with [`Direction::Up`].
    pub fn record_up(&mut self, bytes: u64, now: Instant) -> Verdict {
        self.on_bytes(Direction::Up, bytes, now)
    }

    /// Shorthand for [`Self::on_bytes`] with [`Direction::Down`].
    pub fn record_down(&mut self, bytes: u64, now: Instant) -> Verdict {
        self.on_bytes(Direction::Down, bytes, now)
    }

    /// Handles one decoded control message from the client. Returns `Some(Persist)` when
    /// a co-signed receipt must be stored; replies (if any) appear in `poll_transmit`.
    pub fn handle_message(&mut self, msg: Message, now: Instant) -> Option<CoSignedReceipt> {
        match msg {
            Message::CoSigned(c) => match self.handle_cosigned(c) {
                Ok(CosignOutcome::Persist(c)) => Some(c),
                Ok(CosignOutcome::AlreadyPersisted(ack)) => {
                    self.transmit.push_back(ack);
                    None
                }
                Err(_) => None,
            },
            Message::Resync(c) => match self.handle_resync(c) {
                Ok(CosignOutcome::Persist(c)) => Some(c),
                Ok(CosignOutcome::AlreadyPersisted(ack)) => {
                    self.transmit.push_back(ack);
                    None
                }
                Err(_) => None,
            },
            Message::ReceiptRejected { seq, reason } => {
                self.handle_rejected(seq, reason);
                None
            }
            Message::Close => {
                self.close(now);
                None
            }
            // Hello is handled by the shell (`open`); relay-to-client messages are ignored.
            _ => None,
        }
    }

    /// Checks a co-signed receipt: it must be exactly one this session issued, with a
    /// valid client co-signature. The session is not advanced until [`Self::persisted`].
    pub fn handle_cosigned(&mut self, c: CoSignedReceipt) -> Result<CosignOutcome, CosignError> {
        let seq = c.body().seq;
        if let Some(a) = &self.acked {
            if seq == a.body().seq && c == *a {
                return Ok(CosignOutcome::AlreadyPersisted(Message::Ack { seq }));
            }
            if seq <= a.body().seq {
                return Err(CosignError::Stale);
            }
        }
        if !self.outstanding.iter().any(|r| *r == c.receipt) {
            return Err(CosignError::NotIssued);
        }
        c.verify(&self.accept.network_id)?;
        // The client answered the newest receipt: it is responsive even if our store
        // cannot persist right now (disk full must not cut off an honest client).
        if self.outstanding.back().is_some_and(|r| r.body.seq == seq) {
            self.oldest_outstanding_at = None;
        }
        self.awaiting_persist.insert(seq, c);
        Ok(CosignOutcome::Persist(c))
    }

    /// A client offers back a co-signed receipt of this session that we signed but never
    /// stored (we restarted in between). It is proof of bytes we forwarded, so adopt it:
    /// counters move forward by its excess over the stored receipt, seq continues after
    /// it, and receipts issued since the restart (which conflict with it) are dropped.
    pub fn handle_resync(&mut self, c: CoSignedReceipt) -> Result<CosignOutcome, CosignError> {
        if self.outstanding.iter().any(|r| *r == c.receipt) {
            return self.handle_cosigned(c);
        }
        let b = *c.body();
        let expected = ReceiptBody::for_session(&self.accept, b.seq, 0, 0, 0);
        if !expected.same_session(&b) {
            return Err(CosignError::NotIssued);
        }
        let (base_up, base_down, base_seq) = self.acked.map_or((0, 0, 0), |a| {
            (a.body().bytes_up, a.body().bytes_down, a.body().seq)
        });
        if let Some(a) = &self.acked {
            if c == *a {
                return Ok(CosignOutcome::AlreadyPersisted(Message::Ack { seq: b.seq }));
            }
        }
        if b.seq <= base_seq || b.bytes_up < base_up || b.bytes_down < base_down {
            return Err(CosignError::Stale);
        }
        c.verify(&self.accept.network_id)?;
        let up = b.bytes_up - base_up;
        let down = b.bytes_down - base_down;
        self.meter.record_up(up);
        self.meter.record_down(down);
        self.next_seq = self.next_seq.max(b.seq + 1);
        self.outstanding.clear();
        self.oldest_outstanding_at = None;
        self.issued_total = b.total_bytes();
        self.awaiting_persist.insert(b.seq, c);
        Ok(CosignOutcome::Persist(c))
    }

    /// The co-signed receipt `seq` returned by [`Self::handle_cosigned`] is now durably
    /// stored: extend credit up to it and return the `Ack` to send.
    pub fn persisted(&mut self, seq: u64) -> Option<Message> {
        let c = self.awaiting_persist.remove(&seq)?;
        self.awaiting_persist.retain(|&s, _| s > seq);
        if self.acked.is_some_and(|a| a.body().seq >= seq) {
            return Some(Message::Ack { seq });
        }
        self.acked_total = c.body().total_bytes();
        self.acked = Some(c);
        let before = self.outstanding.len();
        self.outstanding.retain(|r| r.body.seq > seq);
        if self.outstanding.len() != before {
            self.oldest_outstanding_at = if self.outstanding.is_empty() {
                None
            } else {
                self.last_sent_at
            };
        }
        if self.unacknowledged_bytes() < self.cfg.credit_window_bytes {
            self.credit_blocked = false;
        }
        if self.state == SessionState::Closing && self.final_seq.is_some_and(|f| seq >= f) {
            self.finish(true);
        }
        Some(Message::Ack { seq })
    }

    /// The client refused receipt `seq`: cut it off.
    pub fn handle_rejected(&mut self, seq: u64, reason: ReceiptRejectReason) {
        // A rejection of a receipt we never sent is noise (or a spoof inside the tunnel).
        if !self.outstanding.iter().any(|r| r.body.seq == seq) {
            return;
        }
        self.cut_off(CutOffReason::Rejected(reason));
    }

    /// Ends the session (client `Close`, idle peer, agent shutdown): stops forwarding and
    /// sends a final receipt covering every counted byte, so short sessions are billed.
    pub fn close(&mut self, now: Instant) {
        if self.state == SessionState::Active {
            self.begin_close(now);
        }
    }

    fn begin_close(&mut self, now: Instant) {
        if self.state != SessionState::Active {
            return;
        }
        // Nothing was ever counted: nothing to bill and nobody to tell.
        if self.meter.total() == 0 && self.acked.is_none() && self.outstanding.is_empty() {
            self.finish(true);
            return;
        }
        // Otherwise a final receipt goes out even when every byte is co-signed already:
        // it is how the client learns that the session is over (and can open a new one).
        self.state = SessionState::Closing;
        self.close_started_at = Some(now);
    }

    fn finish(&mut self, acknowledged: bool) {
        self.state = SessionState::Closed;
        self.events.push_back(RelayEvent::Closed { acknowledged });
    }

    fn cut_off(&mut self, reason: CutOffReason) {
        if matches!(self.state, SessionState::Active | SessionState::Closing) {
            self.state = SessionState::CutOff(reason);
            self.events.push_back(RelayEvent::CutOff(reason));
        }
    }

    /// Timer work: cut off a client that leaves a receipt unanswered for
    /// `cosign_timeout`, finish a close whose grace period ran out, end a session whose
    /// voucher expired (wall clock `unix_ts`).
    pub fn handle_timeout(&mut self, now: Instant, unix_ts: u64) {
        if self.state == SessionState::Active && unix_ts > self.expires_at {
            self.events.push_back(RelayEvent::AllowanceExhausted);
            self.begin_close(now);
        }
        if let Some(t) = self.oldest_outstanding_at {
            if self.state == SessionState::Active
                && now.saturating_duration_since(t) >= self.cfg.cosign_timeout
            {
                self.cut_off(CutOffReason::Unresponsive);
            }
        }
        if let Some(t) = self.close_started_at {
            if self.state == SessionState::Closing
                && now.saturating_duration_since(t) >= self.cfg.close_grace
            {
                self.finish(false);
            }
        }
    }

    /// The next instant [`Self::handle_timeout`] / [`Self::poll_transmit`] have work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |i: Instant| t = Some(t.map_or(i, |t| t.min(i)));
        match self.state {
            SessionState::Active => {
                if self.meter.total() > self.issued_total {
                    at(self.last_issue_at + self.cfg.receipt_every);
                }
                if let Some(o) = self.oldest_outstanding_at {
                    at(o + self.cfg.cosign_timeout);
                }
            }
            SessionState::Closing => {
                if let Some(c) = self.close_started_at {
                    at(c + self.cfg.close_grace);
                }
            }
            SessionState::CutOff(_) | SessionState::Closed => return None,
        }
        if !self.outstanding.is_empty() {
            if let Some(s) = self.last_sent_at {
                at(s + self.cfg.retransmit_after);
            }
        }
        t
    }

    /// The next control message to send to the client, if any: queued replies first,
    /// then a new receipt when N bytes or T time are due (or the credit window blocks),
    /// a final receipt while closing, or a retransmission of the latest unacknowledged one.
    pub fn poll_transmit(&mut self, now: Instant, unix_ts: u64) -> Option<Message> {
        if let Some(m) = self.transmit.pop_front() {
            return Some(m);
        }
        let closing = self.state == SessionState::Closing;
        self.poll_receipt(now, unix_ts).map(|r| {
            if closing {
                Message::FinalReceipt(r)
            } else {
                Message::Receipt(r)
            }
        })
    }

    /// The receipt to send now, if one is due: a new one covering every counted byte, or
    /// the latest outstanding one again after `retransmit_after`.
    pub fn poll_receipt(&mut self, now: Instant, unix_ts: u64) -> Option<SignedReceipt> {
        let closing = self.state == SessionState::Closing;
        if self.state != SessionState::Active && !closing {
            return None;
        }
        let uncovered = self.meter.total().saturating_sub(self.issued_total);
        let retransmit_due = self
            .last_sent_at
            .is_some_and(|s| now.saturating_duration_since(s) >= self.cfg.retransmit_after)
            && !self.outstanding.is_empty();
        let final_due = closing && self.final_seq.is_none();
        let new_due = final_due
            || (uncovered > 0
                && (closing
                    || (self.credit_blocked && self.outstanding.is_empty())
                    || retransmit_due
                    || uncovered >= self.cfg.receipt_every_bytes
                    || now.saturating_duration_since(self.last_issue_at)
                        >= self.cfg.receipt_every));
        if new_due && self.outstanding.len() < MAX_OUTSTANDING {
            let r = ReceiptBody::for_session(
                &self.accept,
                self.next_seq,
                self.meter.up(),
                self.meter.down(),
                unix_ts,
            )
            .sign(&self.key);
            if closing {
                self.final_seq = Some(self.next_seq);
            }
            self.next_seq += 1;
            self.credit_blocked = false;
            self.issued_total = self.meter.total();
            self.last_issue_at = now;
            self.last_sent_at = Some(now);
            self.oldest_outstanding_at.get_or_insert(now);
            self.outstanding.push_back(r);
            return Some(r);
        }
        if retransmit_due {
            self.last_sent_at = Some(now);
            return self.outstanding.back().copied();
        }
        None
    }

    /// The next event for the shell, if any.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }
}
