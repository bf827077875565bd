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
use ferry_receipts::{
    CoSignedReceipt, PublicKey as IdentityKey, SessionAccept, SessionId, SessionOffer, VoucherId,
};
use ferry_relay_core::{
    HookDirection, HookVerdict, IpHeader, IpNet, PacketHook, PeerConfig, PeerId, PeerKind,
    PublicKey, Relay, Transport,
};
use tokio::sync::{Notify, mpsc};

use crate::config_paid::SessionLimits;
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
    /// The price new sessions open at (`None`: not known yet, offers are refused).
    price: Option<u64>,
    pub(crate) hub: RelayHub<PeerId>,
    pub(crate) peers: BTreeMap<PeerId, PaidPeer>,
    /// The relay's own tunnel addresses (control datagrams go to these).
    own: Vec<IpAddr>,
    limits: SessionLimits,
    /// Live sessions per voucher and per client identity (the caps of `limits`).
    per_voucher: BTreeMap<VoucherId, usize>,
    per_client: BTreeMap<IdentityKey, usize>,
    /// Sessions that have not carried traffic yet, with when they opened.
    unused_since: BTreeMap<PeerId, Instant>,
    alloc: Allocator,
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
    /// The voucher or the client identity already has its maximum of live sessions.
    Capped,
}

impl PaidSessions {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        hub: RelayHub<PeerId>,
        subnets: &[IpNet],
        limits: SessionLimits,
        cosigned: mpsc::UnboundedSender<(PeerId, CoSignedReceipt)>,
        wake: Arc<Notify>,
        counters: Arc<ReceiptCounters>,
        overclaim_percent: u64,
    ) -> Self {
        let own: Vec<IpAddr> = subnets.iter().map(IpNet::addr).collect();
        Self {
            hub,
            peers: BTreeMap::new(),
            price: limits.price_micros_per_gib,
            limits,
            per_voucher: BTreeMap::new(),
            per_client: BTreeMap::new(),
            unused_since: BTreeMap::new(),
            alloc: Allocator::new(subnets, &own),
            own,
            cosigned,
            wake,
            counters,
            overclaim_percent,
        }
    }

    /// Whether new sessions have a price to open at.
    pub(crate) fn priced(&self) -> bool {
        self.price.is_some()
    }

    /// Sets the price new sessions open at (the network price, once the ledger said it).
    pub(crate) fn set_price(&mut self, price: u64) {
        self.price = Some(price);
    }

    /// Admits a paid client in one step: checks the per-voucher and per-client caps, the
    /// voucher's max price against ours and what its budget still buys here, allocates its
    /// tunnel addresses, adds its WireGuard key as a paid peer and opens its session (the hub
    /// verifies the offer and signs the Accept). On any failure nothing is left behind.
    pub(crate) fn admit(
        &mut self,
        relay: &mut Relay,
        offer: &SessionOffer,
        session_id: SessionId,
        already_spent_micros: u64,
        now: Instant,
        unix_ts: u64,
    ) -> Result<(PeerId, PaidPeer), AdmitError> {
        let voucher = offer.voucher.id();
        if self.per_voucher.get(&voucher).copied().unwrap_or(0) >= self.limits.per_voucher
            || self.per_client.get(&offer.client_key).copied().unwrap_or(0)
                >= self.limits.per_client
        {
            return Err(AdmitError::Capped);
        }
        // Until the relay knows its price (the ledger's network price) it sells nothing.
        let Some(price) = self.price else {
            return Err(AdmitError::Rejected(SessionRejectReason::Busy));
        };
        if !offer.voucher.allows_price(price) {
            return Err(AdmitError::Rejected(SessionRejectReason::PriceAboveMax));
        }
        let left = offer.voucher.bytes_at(price, already_spent_micros);
        if left < self.limits.min_allowance_bytes.max(1) {
            return Err(AdmitError::Rejected(
                SessionRejectReason::AllowanceExhausted,
            ));
        }
        let (v4, v6) = self.alloc.allocate(relay).ok_or(AdmitError::Full)?;
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
        let accept = match self.hub.open(
            id,
            offer,
            session_id,
            price,
            already_spent_micros,
            now,
            unix_ts,
        ) {
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
        self.count(&paid, 1);
        self.unused_since.insert(id, now);
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
        self.count(&paid, 1);
        self.unused_since.insert(id, now);
        self.peers.insert(id, paid);
        Ok(id)
    }

    /// Ends `peer`'s session in one step: session, paid-peer facts and relay peer go together.
    /// Returns the facts (the caller records the close), `None` if it was not a paid peer.
    pub(crate) fn end(&mut self, relay: &mut Relay, peer: PeerId) -> Option<PaidPeer> {
        let paid = self.peers.remove(&peer)?;
        self.hub.remove(peer);
        relay.remove_peer(peer);
        self.unused_since.remove(&peer);
        self.count(&paid, -1);
        Some(paid)
    }

    /// Ends (one step each) the sessions that carried no traffic within the unused-session
    /// timeout of opening (or resuming); returns them so the caller records them closed and
    /// they are not resumed after a restart.
    pub(crate) fn expire_unused(&mut self, relay: &mut Relay, now: Instant) -> Vec<PaidPeer> {
        let timeout = self.limits.unused_timeout;
        let due: Vec<PeerId> = self
            .unused_since
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= timeout)
            .map(|(p, _)| *p)
            .collect();
        let mut ended = Vec::new();
        for p in due {
            let used = self.hub.session(p).is_some_and(|s| s.meter().total() > 0);
            if used {
                self.unused_since.remove(&p);
            } else if let Some(paid) = self.end(relay, p) {
                ended.push(paid);
            }
        }
        ended
    }

    fn count(&mut self, paid: &PaidPeer, delta: isize) {
        for n in [
            self.per_voucher.entry(paid.offer.voucher.id()).or_insert(0),
            self.per_client.entry(paid.offer.client_key).or_insert(0),
        ] {
            *n = n.saturating_add_signed(delta);
        }
        self.per_voucher.retain(|_, n| *n > 0);
        self.per_client.retain(|_, n| *n > 0);
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

/// Tunnel addresses for paid clients, from each subnet's paid pool (`pools.rs`: apart from the
/// trusted peers' pool, so `add-peer` never picks a paid client's address). Candidates are tried from a cursor per subnet that moves
/// past each allocation, and each is checked with one longest-prefix lookup in the relay's
/// routes (not by scanning every peer), so an allocation costs O(1) lookups on average and at
/// most `SCAN_LIMIT` when the subnet is nearly full.
pub(crate) struct Allocator {
    subnets: Vec<IpNet>,
    own: Vec<IpAddr>,
    cursor: Vec<u128>,
    /// Candidate addresses checked so far (a measure of the cost).
    pub(crate) probes: u64,
}

/// Most candidates checked per family and allocation.
const SCAN_LIMIT: u128 = 70_000;

impl Allocator {
    pub(crate) fn new(subnets: &[IpNet], own: &[IpAddr]) -> Self {
        Self {
            subnets: subnets.to_vec(),
            own: own.to_vec(),
            cursor: vec![0; subnets.len()],
            probes: 0,
        }
    }

    /// A free host address of each family that has one (not the relay's own, not inside any
    /// peer's allowed IPs). `None` if no family has a free address.
    pub(crate) fn allocate(
        &mut self,
        relay: &Relay,
    ) -> Option<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
        let v4 = self.next(relay, false).and_then(|a| match a {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        });
        let v6 = self.next(relay, true).and_then(|a| match a {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        });
        (v4.is_some() || v6.is_some()).then_some((v4, v6))
    }

    fn next(&mut self, relay: &Relay, v6: bool) -> Option<IpAddr> {
        for i in 0..self.subnets.len() {
            let net = self.subnets[i];
            if net.addr().is_ipv6() != v6 {
                continue;
            }
            let (first, count) = crate::pools::paid_range(&net);
            let tries = count.min(SCAN_LIMIT);
            for step in 0..tries {
                let off = (self.cursor[i] + step) % count;
                self.probes += 1;
                let Some(a) = crate::pools::host_at(&net, first + off) else {
                    continue;
                };
                if !self.own.contains(&a) && relay.route_owner(a).is_none() {
                    self.cursor[i] = (off + 1) % count;
                    return Some(a);
                }
            }
        }
        None
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
