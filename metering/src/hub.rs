//! All paid sessions of one relay, keyed by the shell's peer id: the one object the agent
//! shell drives. Peers without a session (trusted peers from the config) are forwarded
//! unmetered for billing.
//!
//! Driving contract: `open`/`resume` sessions; `on_bytes` per forwarded packet;
//! `handle_control` per control datagram from a peer (store what it returns, then
//! `persisted`); on every wakeup `handle_timeout(now, unix_ts)`, then drain
//! `poll_transmit` and `poll_event`; sleep until `poll_timeout`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Instant;

use ferry_receipts::{CoSignedReceipt, SessionAccept, SessionId, SessionOffer};

use crate::meter::Direction;
use crate::proto::{Message, SessionRejectReason, decode};
use crate::relay::{RelayConfig, RelayEvent, RelayIdentity, RelaySession, Verdict};

/// The relay's paid sessions.
#[derive(Debug)]
pub struct RelayHub<P> {
    cfg: RelayConfig,
    id: RelayIdentity,
    sessions: BTreeMap<P, RelaySession>,
    /// Control datagrams that did not decode (counted, dropped).
    pub malformed: u64,
}

impl<P: Ord + Copy + Debug> RelayHub<P> {
    /// An empty hub; `cfg` must be validated.
    pub fn new(cfg: RelayConfig, id: RelayIdentity) -> Self {
        Self {
            cfg,
            id,
            sessions: BTreeMap::new(),
            malformed: 0,
        }
    }

    /// The relay identity (signs accepts, receipts and Hello replies).
    pub fn identity(&self) -> &RelayIdentity {
        &self.id
    }

    /// Verifies `offer` and opens a session for `peer` (replacing an older one of the same
    /// peer, whose unacknowledged bytes are forfeited). Returns the `Accept` to send.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &mut self,
        peer: P,
        offer: &SessionOffer,
        session_id: SessionId,
        price: u64,
        already_spent_micros: u64,
        now: Instant,
        unix_ts: u64,
    ) -> Result<Message, SessionRejectReason> {
        let (s, accept) = RelaySession::open(
            self.cfg.clone(),
            &self.id,
            offer,
            session_id,
            price,
            already_spent_micros,
            now,
            unix_ts,
        )?;
        self.sessions.insert(peer, s);
        Ok(accept)
    }

    /// Restores a session after a restart (see [`RelaySession::resume`]).
    pub fn resume(
        &mut self,
        peer: P,
        accept: SessionAccept,
        allowance_bytes: u64,
        expires_at: u64,
        latest: Option<CoSignedReceipt>,
        now: Instant,
    ) {
        let s = RelaySession::resume(
            self.cfg.clone(),
            self.id.key.clone(),
            accept,
            allowance_bytes,
            expires_at,
            latest,
            now,
        );
        self.sessions.insert(peer, s);
    }

    /// The session of `peer`.
    pub fn session(&self, peer: P) -> Option<&RelaySession> {
        self.sessions.get(&peer)
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Meters a packet of `peer` that passed allowed-IPs and egress policy. Peers without
    /// a session are trusted: forwarded, not billed.
    pub fn on_bytes(&mut self, peer: P, dir: Direction, bytes: u64, now: Instant) -> Verdict {
        match self.sessions.get_mut(&peer) {
            Some(s) => s.on_bytes(dir, bytes, now),
            None => Verdict::Forward,
        }
    }

    /// Handles one control datagram payload from `peer`. Returns a co-signed receipt the
    /// shell must persist (fsync) before calling [`Self::persisted`].
    pub fn handle_control(
        &mut self,
        peer: P,
        payload: &[u8],
        now: Instant,
    ) -> Option<CoSignedReceipt> {
        let Ok(msg) = decode(payload) else {
            self.malformed += 1;
            return None;
        };
        self.sessions.get_mut(&peer)?.handle_message(msg, now)
    }

    /// The receipt `seq` of `peer` is durable: returns the `Ack` to send.
    pub fn persisted(&mut self, peer: P, seq: u64) -> Option<Message> {
        self.sessions.get_mut(&peer)?.persisted(seq)
    }

    /// Starts closing `peer`'s session (final receipt).
    pub fn close(&mut self, peer: P, now: Instant) {
        if let Some(s) = self.sessions.get_mut(&peer) {
            s.close(now);
        }
    }

    /// Starts closing every session (agent shutdown).
    pub fn close_all(&mut self, now: Instant) {
        for s in self.sessions.values_mut() {
            s.close(now);
        }
    }

    /// Forgets `peer`'s session (after its `Closed` or `CutOff` event).
    pub fn remove(&mut self, peer: P) -> Option<RelaySession> {
        self.sessions.remove(&peer)
    }

    /// Timer work for every session.
    pub fn handle_timeout(&mut self, now: Instant, unix_ts: u64) {
        for s in self.sessions.values_mut() {
            s.handle_timeout(now, unix_ts);
        }
    }

    /// Earliest timer of any session.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(RelaySession::poll_timeout)
            .min()
    }

    /// Next control message to send, with its peer.
    pub fn poll_transmit(&mut self, now: Instant, unix_ts: u64) -> Option<(P, Message)> {
        self.sessions
            .iter_mut()
            .find_map(|(p, s)| s.poll_transmit(now, unix_ts).map(|m| (*p, m)))
    }

    /// Next control message for one peer (cheaper right after its datagram).
    pub fn poll_transmit_for(&mut self, peer: P, now: Instant, unix_ts: u64) -> Option<Message> {
        self.sessions.get_mut(&peer)?.poll_transmit(now, unix_ts)
    }

    /// Next session event, with its peer.
    pub fn poll_event(&mut self) -> Option<(P, RelayEvent)> {
        self.sessions
            .iter_mut()
            .find_map(|(p, s)| s.poll_event().map(|e| (*p, e)))
    }
}
