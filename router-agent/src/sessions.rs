//! The one owner of paid-session state: [`PaidSessions`] is the relay's metering hook, so the
//! relay's peer table (who is a paid peer) and the sessions (ferry-metering's `RelayHub`,
//! the facts of each paid peer) sit behind the relay's single lock.
//!
//! ```text
//!   SharedRelay = Arc<Mutex<Relay>>
//!   └── Relay ── peer table: PeerId -> { Tunn, allowed IPs, kind: Trusted | Paid }
//!       └── hook: PaidSessions ── hub: RelayHub<PeerId>   (receipts, credit window, meter)
//!                               └── peers: PeerId -> PaidPeer (offer, accept, addresses)
//! ```
//!
//! Admitting, resuming and ending a session are each one synchronous call made with the relay
//! and the hook borrowed together (`Relay::with_hook`): no other packet is processed in
//! between, so a paid peer never forwards without its session, and a config reload
//! (`Relay::sync_trusted`) never sees a paid peer it could mistake for a stale trusted one.
//! A paid peer's packet for which the hub has no session is dropped by the relay core
//! (`DropReason::PaidNoSession`). Durable records (SessionOpen/SessionClosed) are written by
//! the callers after the operation; this module does no I/O besides handing co-signed
//! receipts to the persist task (a channel) and waking the driver (a `Notify`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use ferry_metering::{
    CONTROL_PORT, Direction, Message, RelayHub, SessionRejectReason, Verdict, control_datagram,
};
use ferry_receipts::{CoSignedReceipt, SessionAccept, SessionId, SessionOffer};
use ferry_relay_core::{
    HookDirection, HookVerdict, IpHeader, IpNet, PacketHook, PeerConfig, PeerId, PeerKind,
    PublicKey, Relay, Transport,
};
use tokio::sync::{Notify, mpsc};

use crate::observability::ReceiptCounters;

/// A paid peer's session facts the shell needs besides the hub.
#[derive(Debug, Clone)]
pub(crate) struct PaidPeer {
    pub(crate) session: SessionId,
    pub(crate) offer: SessionOffer,
    pub(crate) accept: SessionAccept,
    pub(crate) v4: Option<Ipv4Addr>,
    pub(crate) v6: Option<Ipv6Addr>,
}

impl PaidPeer {
    /// The peer's tunnel addresses as allowed IPs (host routes).
    pub(crate) fn allowed_ips(&self) -> Vec<IpNet> {
        host_nets(self.v4, self.v6)
    }
}

/// The relay's paid sessions: its metering hook (see the module docs).
pub(crate) struct PaidSessions {
    pub(crate) hub: RelayHub<PeerId>,
    pub(crate) peers: BTreeMap<PeerId, PaidPeer>,
    /// The relay's own tunnel addresses (control datagrams go to these).
    own: Vec<IpAddr>,
    cosigned: mpsc::UnboundedSender<(PeerId, CoSignedReceipt)>,
    wake: Arc<Notify>,
    counters: Arc<ReceiptCounters>,
    overclaim_percent: u64,
}

/// Why a session could not be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdmitError {
    /// The offer was refused (verification, allowance): tell the client.
    Rejected(SessionRejectReason),
    /// No tunnel address or peer slot left.
    Full,
}

impl PaidSessions {
    pub(crate) fn new(
        hub: RelayHub<PeerId>,
        own: Vec<IpAddr>,
        cosigned: mpsc::UnboundedSender<(PeerId, CoSignedReceipt)>,
        wake: Arc<Notify>,
        counters: Arc<ReceiptCounters>,
        overclaim_percent: u64,
    ) -> Self {
        Self {
            hub,
            peers: BTreeMap::new(),
            own,
            cosigned,
            wake,
            counters,
            overclaim_percent,
        }
    }

    /// Admits a paid client in one step: allocates its tunnel addresses (first free in
    /// `subnets`), adds its WireGuard key as a paid peer and opens its session (the hub
    /// verifies the offer and signs the Accept). On any failure nothing is left behind.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn admit(
        &mut self,
        relay: &mut Relay,
        offer: &SessionOffer,
        session_id: SessionId,
        already_spent: u64,
        subnets: &[IpNet],
        now: Instant,
        unix_ts: u64,
    ) -> Result<(PeerId, PaidPeer), AdmitError> {
        let (v4, v6) =
            crate::metering_hello::allocate(relay, subnets, &self.own).ok_or(AdmitError::Full)?;
        let id = relay
            .add_peer_as(
                PeerConfig {
                    public_key: PublicKey::from(offer.client_wg_key),
                    allowed_ips: host_nets(v4, v6),
                    preshared_key: None,
                    persistent_keepalive: None,
                },
                PeerKind::Paid,
            )
            .map_err(|_| AdmitError::Full)?;
        let accept = match self
            .hub
            .open(id, offer, session_id, already_spent, now, unix_ts)
        {
            Ok(Message::Accept(a)) => a,
            Ok(_) => {
                self.hub.remove(id);
                relay.remove_peer(id);
                return Err(AdmitError::Full);
            }
            Err(reason) => {
                relay.remove_peer(id);
                return Err(AdmitError::Rejected(reason));
            }
        };
        let paid = PaidPeer {
            session: session_id,
            offer: offer.clone(),
            accept,
            v4,
            v6,
        };
        self.peers.insert(id, paid.clone());
        Ok((id, paid))
    }

    /// Re-admits a stored session after a restart, in one step: the peer (paid) and its
    /// session from the latest co-signed receipt.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn resume(
        &mut self,
        relay: &mut Relay,
        paid: PaidPeer,
        allowance_bytes: u64,
        latest: Option<CoSignedReceipt>,
        now: Instant,
    ) -> Result<PeerId, ferry_relay_core::RelayError> {
        let id = relay.add_peer_as(
            PeerConfig {
                public_key: PublicKey::from(paid.offer.client_wg_key),
                allowed_ips: paid.allowed_ips(),
                preshared_key: None,
                persistent_keepalive: None,
            },
            PeerKind::Paid,
        )?;
        self.hub.resume(
            id,
            paid.accept.clone(),
            allowance_bytes,
            paid.offer.voucher.expires_at,
            latest,
            now,
        );
        self.peers.insert(id, paid);
        Ok(id)
    }

    /// Ends `peer`'s session in one step: session, paid-peer facts and relay peer go together.
    /// Returns the facts (the caller records the close), `None` if it was not a paid peer.
    pub(crate) fn end(&mut self, relay: &mut Relay, peer: PeerId) -> Option<PaidPeer> {
        let paid = self.peers.remove(&peer)?;
        self.hub.remove(peer);
        relay.remove_peer(peer);
        Some(paid)
    }

    /// Sum of the sessions' bytes not yet covered by a co-signed receipt.
    pub(crate) fn unacknowledged_bytes(&self) -> u64 {
        self.peers
            .keys()
            .filter_map(|p| self.hub.session(*p))
            .map(ferry_metering::RelaySession::unacknowledged_bytes)
            .fold(0, u64::saturating_add)
    }
}

impl PacketHook for PaidSessions {
    fn divert(&mut self, peer: PeerId, hdr: &IpHeader, packet: &[u8], now: Instant) -> bool {
        // Cheap test on the parsed header first: only UDP to our address:51821 is control.
        if hdr.transport != Transport::Port(17, CONTROL_PORT) || !self.own.contains(&hdr.dst) {
            return false;
        }
        let Some(d) = control_datagram(packet, &self.own) else {
            return false;
        };
        if let Ok(Message::ReceiptRejected { .. }) = ferry_metering::decode(d.payload) {
            self.counters.rejected();
        }
        if let Some(c) = self.hub.handle_control(peer, d.payload, now) {
            let _ = self.cosigned.send((peer, c));
        }
        self.wake.notify_one();
        true
    }

    fn admit(
        &mut self,
        peer: PeerId,
        dir: HookDirection,
        bytes: usize,
        now: Instant,
    ) -> HookVerdict {
        let dir = match dir {
            HookDirection::Up => Direction::Up,
            HookDirection::Down => Direction::Down,
        };
        if self.hub.session(peer).is_none() {
            return HookVerdict::NoSession;
        }
        let bytes = bytes as u64;
        match self.hub.on_bytes(peer, dir, bytes, now) {
            Verdict::Forward => {
                if self.overclaim_percent > 0 {
                    let _ = self
                        .hub
                        .on_bytes(peer, dir, bytes * self.overclaim_percent / 100, now);
                }
                HookVerdict::Forward
            }
            _ => HookVerdict::CreditWindow,
        }
    }
}

fn host_nets(v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> Vec<IpNet> {
    v4.map(|a| IpNet::from(IpAddr::V4(a)))
        .into_iter()
        .chain(v6.map(|a| IpNet::from(IpAddr::V6(a))))
        .collect()
}

#[cfg(test)]
#[path = "sessions_tests.rs"]
mod tests;
