//! The client side of a paid session: its own counters and the co-sign decision.
//!
//! Driving contract (the `ferry connect` shell): build the `Hello` with
//! [`ClientSession::hello`], pass the relay's answer to [`ClientSession::handle_accept`],
//! count every inner packet sent into / received from the tunnel with
//! [`ClientSession::record_up`] / [`ClientSession::record_down`], and feed every control
//! message to [`ClientSession::handle_message`], sending back what it returns. Persist
//! and submit every [`ClientVerdict::CoSign`] receipt as the relay does.

use std::sync::Arc;

use ferry_receipts::{
    CoSignedReceipt, CumulativeState, NetworkId, PublicKey, ReceiptBody, ReceiptRefusal, Rejected,
    SessionAccept, SessionAddress, SessionOffer, SessionReject, SessionTunnel, Signature,
    SignedReceipt, SigningKey, Voucher,
};
use thiserror::Error;

use crate::meter::Meter;
use crate::proto::{Message, ReceiptRejectReason, SessionRejectReason};

const MIB: u64 = 1 << 20;

/// How far a relay's claim may exceed the client's own count, per direction:
/// `claim ≤ own + own × basis_points / 10000 + slack_bytes`. Covers packets in flight and
/// packets the relay forwarded down that the client has not received yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tolerance {
    /// Proportional part in basis points (200 = 2 %).
    pub basis_points: u32,
    /// Absolute part in bytes.
    pub slack_bytes: u64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            basis_points: 200,
            slack_bytes: MIB,
        }
    }
}

impl Tolerance {
    /// The largest claim accepted for an own count of `own` bytes.
    pub fn max_claim(&self, own: u64) -> u64 {
        let prop = u128::from(own) * u128::from(self.basis_points) / 10_000;
        let max = u128::from(own) + prop + u128::from(self.slack_bytes);
        u64::try_from(max).unwrap_or(u64::MAX)
    }
}

/// Client policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientConfig {
    /// Over-claim tolerance.
    pub tolerance: Tolerance,
    /// Refuse an accept priced above this (micros per GiB), e.g. the price of the descriptor
    /// the relay was chosen by; the voucher's max price always applies too.
    pub max_price_micros_per_gib: Option<u64>,
}

/// The client's answer to a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientVerdict {
    /// Accepted: send `Message::CoSigned` with it (and keep it for submission).
    CoSign(CoSignedReceipt),
    /// The same receipt again (our co-signature was lost): resend this.
    Duplicate(CoSignedReceipt),
    /// Refused: send `Message::ReceiptRejected` and disconnect.
    Reject {
        /// Seq of the refused receipt.
        seq: u64,
        /// Why.
        reason: ReceiptRejectReason,
    },
    /// The relay lost receipts we co-signed but it never acknowledged (it restarted):
    /// send `Message::Resync` with our latest co-signed receipt so it can continue from it.
    Resync(CoSignedReceipt),
    /// An older receipt consistent with the latest: nothing to do.
    Ignore,
}

/// A session-setup answer the client cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The accept does not match our offer, relay or network, or its signature is bad.
    #[error("session accept does not match the offer")]
    BadAccept,
    /// No offer was made yet.
    #[error("no session offer outstanding")]
    NoOffer,
}

/// The client's view of one paid session.
#[derive(Debug)]
pub struct ClientSession {
    cfg: ClientConfig,
    key: Arc<SigningKey>,
    network_id: NetworkId,
    relay_key: PublicKey,
    offer: Option<SessionOffer>,
    accept: Option<SessionAccept>,
    meter: Meter,
    state: CumulativeState,
    last_cosigned: Option<CoSignedReceipt>,
    last_acked: Option<u64>,
    rejected: Option<ReceiptRejectReason>,
    refusal: Option<ReceiptRefusal>,
}

impl ClientSession {
    /// A client that wants a session with `relay_key` in `network_id`.
    pub fn new(
        cfg: ClientConfig,
        key: Arc<SigningKey>,
        network_id: NetworkId,
        relay_key: PublicKey,
    ) -> Self {
        Self {
            cfg,
            key,
            network_id,
            relay_key,
            offer: None,
            accept: None,
            meter: Meter::new(),
            state: CumulativeState::new(),
            last_cosigned: None,
            last_acked: None,
            rejected: None,
            refusal: None,
        }
    }

    /// Builds and signs the `Hello` offering `voucher` for the WireGuard key `wg_key`.
    /// `nonce` must be random (caller's RNG).
    pub fn hello(
        &mut self,
        voucher: Voucher,
        wg_key: [u8; 32],
        nonce: [u8; 16],
        unix_ts: u64,
    ) -> Message {
        let offer = SessionOffer {
            network_id: self.network_id,
            relay_key: self.relay_key,
            client_key: self.key.public_key(),
            client_wg_key: wg_key,
            nonce,
            created_at: unix_ts,
            voucher,
            signature: Signature::ZERO,
        }
        .sign(&self.key);
        self.offer = Some(offer.clone());
        Message::Hello(offer)
    }

    /// Checks the relay's `Accept` against our offer and adopts the session.
    pub fn handle_accept(&mut self, accept: SessionAccept) -> Result<(), ClientError> {
        self.check_accept(&accept)?;
        self.accept = Some(accept);
        Ok(())
    }

    /// Checks an `Accept` against our offer without adopting it: signed by our relay, for
    /// our identity and voucher, at a price the voucher and our own cap allow.
    pub fn check_accept(&self, accept: &SessionAccept) -> Result<(), ClientError> {
        let offer = self.offer.as_ref().ok_or(ClientError::NoOffer)?;
        let ok = accept.verify(&self.network_id).is_ok()
            && accept.relay_key == self.relay_key
            && accept.client_key == self.key.public_key()
            && accept.voucher_id == offer.voucher.id()
            && offer.voucher.allows_price(accept.price_micros_per_gib)
            && self
                .cfg
                .max_price_micros_per_gib
                .is_none_or(|cap| accept.price_micros_per_gib <= cap);
        if ok {
            Ok(())
        } else {
            Err(ClientError::BadAccept)
        }
    }

    /// The reason of a `Reject` that our relay signed for our current offer; `None` for any
    /// other (unsigned, forged, another relay's, an older offer's): ignore it and keep trying.
    pub fn check_reject(&self, r: &SessionReject) -> Option<SessionRejectReason> {
        let offer = self.offer.as_ref()?;
        (r.verify(&self.network_id, &self.relay_key).is_ok() && r.answers(offer))
            .then(|| crate::reject_reason(r))
    }

    /// True when `a` is our relay's signed address message for our current offer (its
    /// session must still be matched with an accepted `Accept`, see
    /// [`SessionAddress::answers`]).
    pub fn check_address(&self, a: &SessionAddress) -> bool {
        self.offer.as_ref().is_some_and(|o| {
            a.verify(&self.network_id, &self.relay_key).is_ok()
                && a.offer_nonce == o.nonce
                && a.client_wg_key == o.client_wg_key
        })
    }

    /// Whether `t` is signed by our relay for our network (which session it belongs to is
    /// checked against the accept it comes with: [`SessionTunnel::answers`]).
    pub fn check_tunnel(&self, t: &SessionTunnel) -> bool {
        t.verify(&self.network_id, &self.relay_key).is_ok()
    }

    /// The adopted session terms.
    pub fn accept(&self) -> Option<&SessionAccept> {
        self.accept.as_ref()
    }

    /// Counts `bytes` the client sent into the tunnel (inner packet length).
    pub fn record_up(&mut self, bytes: u64) {
        self.meter.record_up(bytes);
    }

    /// Counts `bytes` the client received from the tunnel (inner packet length).
    pub fn record_down(&mut self, bytes: u64) {
        self.meter.record_down(bytes);
    }

    /// Own counters.
    pub fn meter(&self) -> Meter {
        self.meter
    }

    /// Latest co-signed receipt.
    pub fn last_cosigned(&self) -> Option<&CoSignedReceipt> {
        self.last_cosigned.as_ref()
    }

    /// Highest seq the relay acknowledged as stored.
    pub fn last_acked(&self) -> Option<u64> {
        self.last_acked
    }

    /// Set once the client refused a receipt (it should disconnect).
    pub fn rejected(&self) -> Option<ReceiptRejectReason> {
        self.rejected
    }

    /// Our signed refusal of the receipt we rejected for over-claiming or going backwards
    /// (for the directory: `POST /v1/directory/refusals`).
    pub fn refusal(&self) -> Option<&ReceiptRefusal> {
        self.refusal.as_ref()
    }

    /// Decides whether to co-sign `r`: it must be for our session and relay, carry a
    /// valid relay signature, keep counters monotonic, and claim no more than our own
    /// count plus tolerance in each direction.
    pub fn check(&mut self, r: &SignedReceipt, unix_ts: u64) -> ClientVerdict {
        let seq = r.body.seq;
        let reject = |reason| ClientVerdict::Reject { seq, reason };
        let Some(accept) = &self.accept else {
            return reject(ReceiptRejectReason::WrongSession);
        };
        let expected = ReceiptBody::for_session(accept, seq, 0, 0, 0);
        if !expected.same_session(&r.body) {
            return reject(ReceiptRejectReason::WrongSession);
        }
        if r.verify(&self.network_id).is_err() {
            return reject(ReceiptRejectReason::BadSignature);
        }
        if !r.body.fits_ledger() || unix_ts > ferry_receipts::MAX_LEDGER_VALUE {
            return reject(ReceiptRejectReason::OutOfRange);
        }
        if let Some(c) = &self.last_cosigned {
            if c.receipt == *r {
                return ClientVerdict::Duplicate(*c);
            }
        }
        // Our latest co-signature the relay never acknowledged: after a relay restart it
        // may issue receipts that conflict with it; offer it back instead of rejecting.
        let unacked = self
            .last_cosigned
            .filter(|c| self.last_acked.is_none_or(|a| a < c.body().seq));
        let mut next = self.state.clone();
        match next.apply(&r.body) {
            Ok(ferry_receipts::Applied::Advanced { .. }) => {}
            Ok(_) => return unacked.map_or(ClientVerdict::Ignore, ClientVerdict::Resync),
            Err(Rejected::WrongSession) => return reject(ReceiptRejectReason::WrongSession),
            Err(_) => {
                return unacked.map_or(
                    reject(ReceiptRejectReason::NonMonotonic),
                    ClientVerdict::Resync,
                );
            }
        }
        let tol = self.cfg.tolerance;
        if r.body.bytes_up > tol.max_claim(self.meter.up())
            || r.body.bytes_down > tol.max_claim(self.meter.down())
        {
            return reject(ReceiptRejectReason::OverClaim);
        }
        self.state = next;
        let c = r.cosign(&self.key, self.meter.up(), self.meter.down(), unix_ts);
        self.last_cosigned = Some(c);
        ClientVerdict::CoSign(c)
    }

    /// Handles one control message from the relay and returns the reply, if any.
    /// A rejected receipt also marks the session as rejected.
    pub fn handle_message(&mut self, msg: Message, unix_ts: u64) -> Option<Message> {
        match msg {
            Message::Receipt(r) | Message::FinalReceipt(r) => match self.check(&r, unix_ts) {
                ClientVerdict::CoSign(c) | ClientVerdict::Duplicate(c) => {
                    Some(Message::CoSigned(c))
                }
                ClientVerdict::Reject { seq, reason } => {
                    self.rejected = Some(reason);
                    // Evidence of the relay's misbehaviour for the directory: a receipt it
                    // signed that claims more, or less, than it may. (A forged or foreign
                    // receipt proves nothing about our relay.)
                    if matches!(
                        reason,
                        ReceiptRejectReason::OverClaim | ReceiptRejectReason::NonMonotonic
                    ) {
                        self.refusal = Some(
                            ReceiptRefusal {
                                receipt: r,
                                client_observed_up: self.meter.up(),
                                client_observed_down: self.meter.down(),
                                reason: reason.code(),
                                refused_at: unix_ts,
                                client_signature: Signature::ZERO,
                            }
                            .sign(&self.key),
                        );
                    }
                    Some(Message::ReceiptRejected { seq, reason })
                }
                ClientVerdict::Resync(c) => Some(Message::Resync(c)),
                ClientVerdict::Ignore => None,
            },
            Message::Ack { seq } => {
                let cosigned = self.last_cosigned.map(|c| c.body().seq);
                if cosigned.is_some_and(|s| seq <= s) && self.last_acked.is_none_or(|a| seq > a) {
                    self.last_acked = Some(seq);
                }
                None
            }
            Message::Accept(a) => {
                // A bad accept leaves the session unadopted; the shell sees `accept()` is None.
                let _ = self.handle_accept(a);
                None
            }
            _ => None,
        }
    }
}

/// Most candidate accepts or addresses [`HelloReplies`] keeps (injected datagrams cannot grow it).
const MAX_PENDING_REPLIES: usize = 8;

/// What the replies to a `Hello` sent outside the tunnel have settled so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloOutcome {
    /// Nothing decisive yet: keep repeating the Hello until the timeout.
    Pending,
    /// Our relay accepted and assigned addresses (the session adopted the accept).
    Accepted {
        /// The session terms.
        accept: Box<SessionAccept>,
        /// Our IPv4 tunnel address.
        v4: Option<std::net::Ipv4Addr>,
        /// Our IPv6 tunnel address.
        v6: Option<std::net::Ipv6Addr>,
        /// The relay's side of the tunnel (control and DNS address, MTU), when it sent it.
        tunnel: Option<Box<SessionTunnel>>,
    },
    /// Our relay refused this offer (a reject it signed for it).
    Refused(SessionRejectReason),
}

/// Sans-IO collector of the relay's answers on the Hello socket, where anyone on the path
/// can inject datagrams: only an `Accept` and an `Address` both signed by our relay, for our
/// offer and for the same session, complete the exchange; only a `Reject` signed for our offer
/// ends it. Everything else is counted in [`HelloReplies::ignored`] and changes nothing. A
/// collector made with [`HelloReplies::needing_tunnel`] also waits for the relay's signed
/// [`SessionTunnel`] of that session (a client that found the relay in the directory has no
/// other source for the relay's tunnel address).
#[derive(Debug, Default)]
pub struct HelloReplies {
    accepts: Vec<SessionAccept>,
    addresses: Vec<SessionAddress>,
    tunnels: Vec<SessionTunnel>,
    need_tunnel: bool,
    ignored: u64,
}

impl HelloReplies {
    /// A collector that completes only with the relay's [`SessionTunnel`] too.
    pub fn needing_tunnel() -> Self {
        Self {
            need_tunnel: true,
            ..Self::default()
        }
    }

    /// Whether an accept and an address completed but the tunnel message is still missing
    /// (for the error when it never comes: an older ferry-agent sends none).
    pub fn waiting_for_tunnel(&self) -> bool {
        self.need_tunnel && !self.accepts.is_empty() && !self.addresses.is_empty()
    }

    /// Datagrams that were not a verifiable answer to our offer.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// Takes one datagram from the Hello socket (after [`ClientSession::hello`]).
    pub fn on_datagram(&mut self, session: &mut ClientSession, datagram: &[u8]) -> HelloOutcome {
        match crate::decode(datagram) {
            Ok(Message::Accept(a)) if session.check_accept(&a).is_ok() => {
                if !self.accepts.contains(&a) && self.accepts.len() < MAX_PENDING_REPLIES {
                    self.accepts.push(a);
                }
            }
            Ok(Message::Address(a)) if session.check_address(&a) => {
                if !self.addresses.contains(&a) && self.addresses.len() < MAX_PENDING_REPLIES {
                    self.addresses.push(a);
                }
            }
            Ok(Message::Tunnel(t)) if session.check_tunnel(&t) => {
                if !self.tunnels.contains(&t) && self.tunnels.len() < MAX_PENDING_REPLIES {
                    self.tunnels.push(t);
                }
            }
            Ok(Message::Reject(r)) => match session.check_reject(&r) {
                Some(reason) => return HelloOutcome::Refused(reason),
                None => self.ignored += 1,
            },
            _ => self.ignored += 1,
        }
        // An accept and an address of the same session, both for this offer (and the
        // session's tunnel message when it is needed).
        let found = session.offer.as_ref().and_then(|offer| {
            self.accepts.iter().find_map(|accept| {
                let addr = self.addresses.iter().find(|a| a.answers(offer, accept))?;
                let tunnel = self.tunnels.iter().find(|t| t.answers(accept));
                (tunnel.is_some() || !self.need_tunnel).then(|| {
                    (
                        accept.clone(),
                        addr.v4,
                        addr.v6,
                        tunnel.cloned().map(Box::new),
                    )
                })
            })
        });
        if let Some((accept, v4, v6, tunnel)) = found {
            if session.handle_accept(accept.clone()).is_ok() {
                return HelloOutcome::Accepted {
                    accept: Box::new(accept),
                    v4: (!v4.is_unspecified()).then_some(v4),
                    v6: (!v6.is_unspecified()).then_some(v6),
                    tunnel,
                };
            }
        }
        HelloOutcome::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_receipts::{SessionId, VoucherId};

    const NET: NetworkId = NetworkId([1; 16]);

    fn setup() -> (ClientSession, SigningKey, SessionAccept) {
        let relay = SigningKey::from_seed(&[2; 32]);
        let client = Arc::new(SigningKey::from_seed(&[3; 32]));
        let ledger = SigningKey::from_seed(&[4; 32]);
        let voucher = Voucher {
            network_id: NET,
            ledger_key: ledger.public_key(),
            client_key: client.public_key(),
            nonce: [0; 16],
            budget_micros: 1 << 30,
            max_price_micros_per_gib: 10,
            issued_at: 0,
            expires_at: 100,
            signature: Signature::ZERO,
        }
        .sign(&ledger);
        let mut c = ClientSession::new(
            ClientConfig::default(),
            client.clone(),
            NET,
            relay.public_key(),
        );
        let _ = c.hello(voucher.clone(), [0; 32], [0; 16], 1);
        let accept = SessionAccept {
            network_id: NET,
            relay_key: relay.public_key(),
            client_key: client.public_key(),
            session_id: SessionId([5; 16]),
            voucher_id: voucher.id(),
            started_at: 1,
            price_micros_per_gib: 10,
            signature: Signature::ZERO,
        }
        .sign(&relay);
        c.handle_accept(accept.clone()).unwrap();
        (c, relay, accept)
    }

    fn reason(v: ClientVerdict) -> Option<ReceiptRejectReason> {
        match v {
            ClientVerdict::Reject { reason, .. } => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn an_accept_priced_above_the_voucher_max_or_our_cap_is_refused() {
        // The voucher's max price is 10; the relay signs its own price into the accept.
        let (c, relay, accept) = setup();
        let priced = |p: u64| {
            SessionAccept {
                price_micros_per_gib: p,
                signature: Signature::ZERO,
                ..accept.clone()
            }
            .sign(&relay)
        };
        assert!(c.check_accept(&priced(3)).is_ok(), "below the max");
        assert!(c.check_accept(&priced(10)).is_ok(), "at the max");
        assert_eq!(c.check_accept(&priced(11)), Err(ClientError::BadAccept));
        // With a cap (the price the relay was chosen at), more than it is refused too.
        let mut capped = c;
        capped.cfg.max_price_micros_per_gib = Some(5);
        assert!(capped.check_accept(&priced(5)).is_ok());
        assert_eq!(capped.check_accept(&priced(6)), Err(ClientError::BadAccept));
    }

    #[test]
    fn tolerance_is_two_percent_plus_one_mib_by_default() {
        let t = Tolerance::default();
        assert_eq!(t.max_claim(0), MIB);
        assert_eq!(t.max_claim(100 * MIB), 102 * MIB + MIB);
        assert_eq!(t.max_claim(u64::MAX), u64::MAX);
    }

    #[test]
    fn receipts_are_checked_for_session_signature_monotonicity_and_over_claim() {
        let (mut c, relay, accept) = setup();
        c.record_up(10 * MIB);
        c.record_down(10 * MIB);
        let r = |seq, up, down| ReceiptBody::for_session(&accept, seq, up, down, 2).sign(&relay);
        // Within tolerance: co-signed with our own counts.
        let ClientVerdict::CoSign(co) = c.check(&r(1, 10 * MIB, 11 * MIB), 3) else {
            panic!("expected co-sign")
        };
        assert_eq!(
            (co.client_observed_up, co.client_observed_down),
            (10 * MIB, 10 * MIB)
        );
        co.verify(&NET).unwrap();
        // Same receipt again: the cached co-signature.
        assert_eq!(
            c.check(&r(1, 10 * MIB, 11 * MIB), 4),
            ClientVerdict::Duplicate(co)
        );
        // Over the tolerance in one direction.
        let over = 10 * MIB + 10 * MIB / 50 + MIB + 1;
        assert_eq!(
            reason(c.check(&r(2, over, 11 * MIB), 4)),
            Some(ReceiptRejectReason::OverClaim)
        );
        // Counter going backwards while seq 1 is unacknowledged: the relay may have lost
        // it in a restart, so it is offered back; once acknowledged it is a rejection.
        assert_eq!(
            c.check(&r(3, 9 * MIB, 11 * MIB), 4),
            ClientVerdict::Resync(co)
        );
        assert!(c.handle_message(Message::Ack { seq: 1 }, 4).is_none());
        assert_eq!(c.last_acked(), Some(1));
        assert_eq!(
            reason(c.check(&r(3, 9 * MIB, 11 * MIB), 4)),
            Some(ReceiptRejectReason::NonMonotonic)
        );
        // Another relay key signs a receipt for "our" session.
        let other = SigningKey::from_seed(&[9; 32]);
        let mut body = ReceiptBody::for_session(&accept, 4, 1, 1, 2);
        body.relay_key = other.public_key();
        assert_eq!(
            reason(c.check(&body.sign(&other), 4)),
            Some(ReceiptRejectReason::WrongSession)
        );
        // Another session id.
        let mut body = ReceiptBody::for_session(&accept, 4, 1, 1, 2);
        body.session_id = SessionId([6; 16]);
        assert_eq!(
            reason(c.check(&body.sign(&relay), 4)),
            Some(ReceiptRejectReason::WrongSession)
        );
        // Bad signature.
        let mut bad = r(4, 10 * MIB, 11 * MIB);
        bad.relay_signature.0[3] ^= 0x40;
        assert_eq!(
            reason(c.check(&bad, 4)),
            Some(ReceiptRejectReason::BadSignature)
        );
        // Older consistent receipt is ignored; the state is still at seq 1.
        assert_eq!(c.last_cosigned().map(|c| c.body().seq), Some(1));
        let _ = VoucherId([0; 32]);
    }

    #[test]
    fn receipts_the_ledger_would_refuse_are_not_cosigned() {
        // The ledger stores signed 64-bit values: a seq of 2^64 - 1, counters summing past
        // 2^63 - 1 or a later-than-storable time would make a co-signed receipt that can never
        // be credited (the session would stay unpaid), so the client refuses it.
        let (mut c, relay, accept) = setup();
        c.record_up(u64::MAX / 2);
        c.record_down(u64::MAX / 2);
        let r =
            |seq, up, down, at| ReceiptBody::for_session(&accept, seq, up, down, at).sign(&relay);
        let half = ferry_receipts::MAX_LEDGER_VALUE / 2;
        for bad in [
            r(u64::MAX, 1, 1, 2),
            r(1, half + 1, half + 1, 2),
            r(1, 1, 1, u64::MAX),
        ] {
            assert_eq!(
                reason(c.check(&bad, 3)),
                Some(ReceiptRejectReason::OutOfRange)
            );
        }
        // Our own co-sign time beyond the range too.
        assert_eq!(
            reason(c.check(&r(1, 1, 1, 2), u64::MAX)),
            Some(ReceiptRejectReason::OutOfRange)
        );
        // The largest storable values are fine (positive control).
        assert!(matches!(
            c.check(&r(ferry_receipts::MAX_LEDGER_VALUE, half, half, 2), 3),
            ClientVerdict::CoSign(_)
        ));
        // The rejection travels as reason code 5.
        let m = Message::ReceiptRejected {
            seq: 7,
            reason: ReceiptRejectReason::OutOfRange,
        };
        assert_eq!(crate::decode(&crate::encode(&m)).unwrap(), m);
    }

    #[test]
    fn hello_replies_complete_only_on_our_relays_signed_answers_to_our_offer() {
        use crate::{HelloOutcome, HelloReplies, RelayIdentity, SessionRejectReason, encode};
        use std::net::{Ipv4Addr, Ipv6Addr};
        let (done, relay, accept) = setup();
        // A session that has sent its Hello but adopted nothing yet.
        let mut c = ClientSession::new(
            ClientConfig::default(),
            done.key.clone(),
            NET,
            relay.public_key(),
        );
        let Message::Hello(offer) =
            c.hello(done.offer.clone().unwrap().voucher, [0; 32], [0; 16], 1)
        else {
            panic!("hello")
        };
        let id = |seed: [u8; 32]| RelayIdentity {
            network_id: NET,
            ledger_key: SigningKey::from_seed(&[4; 32]).public_key(),
            key: Arc::new(SigningKey::from_seed(&seed)),
        };
        // setup()'s relay seed is [2; 32].
        let (real, forger) = (id([2; 32]), id([66; 32]));
        assert_eq!(real.key.public_key(), relay.public_key());
        let mut other_offer = offer.clone();
        other_offer.nonce = [1; 16];
        let evil = Some(Ipv4Addr::new(10, 77, 0, 66));
        let mut other_session = accept.clone();
        other_session.session_id = SessionId([6; 16]);
        let other_session = other_session.sign(&relay);
        let mut r = HelloReplies::default();
        let injected = [
            // v1's unsigned Reject and Address (what an on-path host could send before).
            vec![0x03, 0, 1, 6],
            [&[0x04, 0, 20, 10, 77, 0, 66][..], &[0; 16]].concat(),
            // Signed by someone else, or by our relay for another offer / session.
            encode(&forger.reject(&offer, SessionRejectReason::Busy)),
            encode(&forger.address(&offer, &accept, evil, None)),
            encode(&real.reject(&other_offer, SessionRejectReason::Busy)),
            encode(&real.address(&other_offer, &accept, evil, None)),
            encode(&real.address(&offer, &other_session, evil, None)),
            encode(&Message::Accept(accept.clone().sign(&forger.key))),
            vec![0xff; 40],
        ];
        for d in &injected {
            assert_eq!(r.on_datagram(&mut c, d), HelloOutcome::Pending);
        }
        assert_eq!(r.ignored(), 8, "all but the forged accept are counted");
        assert!(c.accept().is_none(), "nothing adopted");
        // Our relay's address may arrive before its accept.
        let v6: Option<Ipv6Addr> = "fd77::2".parse().ok();
        let addr = encode(&real.address(&offer, &accept, Some(Ipv4Addr::new(10, 77, 0, 2)), v6));
        assert_eq!(r.on_datagram(&mut c, &addr), HelloOutcome::Pending);
        assert_eq!(
            r.on_datagram(&mut c, &encode(&Message::Accept(accept.clone()))),
            HelloOutcome::Accepted {
                accept: Box::new(accept.clone()),
                v4: Some(Ipv4Addr::new(10, 77, 0, 2)),
                v6,
                tunnel: None,
            }
        );
        assert_eq!(c.accept(), Some(&accept));
        // A client that needs the relay's tunnel facts waits for them, signed by our relay
        // for this session.
        let mut c2 = ClientSession::new(
            ClientConfig::default(),
            done.key.clone(),
            NET,
            relay.public_key(),
        );
        let Message::Hello(offer2) =
            c2.hello(done.offer.clone().unwrap().voucher, [0; 32], [0; 16], 1)
        else {
            panic!("hello")
        };
        let mut r = HelloReplies::needing_tunnel();
        let gw = Some(Ipv4Addr::new(10, 77, 0, 1));
        let addr2 =
            encode(&real.address(&offer2, &accept, Some(Ipv4Addr::new(10, 77, 0, 2)), None));
        for d in [
            addr2.clone(),
            encode(&Message::Accept(accept.clone())),
            encode(&forger.tunnel(&accept, evil, None, 1420, 1)),
            encode(&real.tunnel(&other_session, evil, None, 1420, 1)),
        ] {
            assert_eq!(r.on_datagram(&mut c2, &d), HelloOutcome::Pending);
        }
        assert!(r.waiting_for_tunnel());
        let tunnel = real.tunnel(&accept, gw, None, 1400, 1);
        let Message::Tunnel(t) = &tunnel else {
            panic!()
        };
        assert_eq!(
            r.on_datagram(&mut c2, &encode(&tunnel)),
            HelloOutcome::Accepted {
                accept: Box::new(accept.clone()),
                v4: Some(Ipv4Addr::new(10, 77, 0, 2)),
                v6: None,
                tunnel: Some(Box::new(t.clone())),
            }
        );
        // Our relay's signed reject of this offer ends it, with its reason.
        let mut r = HelloReplies::default();
        assert_eq!(
            r.on_datagram(
                &mut c,
                &encode(&real.reject(&offer, SessionRejectReason::VoucherExpired))
            ),
            HelloOutcome::Refused(SessionRejectReason::VoucherExpired)
        );
    }
}
