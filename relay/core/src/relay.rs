//! The relay state machine: peer table, handshake admission, cryptokey routing, policy, limits.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::IpNet;

use crate::admission::{Admission, HandshakeAdmission};
use crate::hook::{HookDirection, HookVerdict, PacketHook};
use crate::packet::{self, IpHeader};
pub use crate::peer::{PeerId, PeerKind};
use crate::policy::{EgressPolicy, PolicyConfig, Verdict};
use crate::ratelimit::TokenBucket;
use crate::routing::AllowedIps;
use crate::shaper::Shaper;
use crate::share::{MAX_SHARE_WAIT, Share};
use crate::stats::{DropReason, PeerCounters, Stats, TunnelStats};

/// Bytes WireGuard adds to an inner packet (header 16 + tag 16).
pub const OVERHEAD: usize = 32;
/// Smallest output buffer the relay accepts (a handshake initiation is 148 bytes).
pub const MIN_BUFFER_LEN: usize = 148;
/// How often the caller should call [`Relay::handle_timeout`].
pub const TIMER_INTERVAL: Duration = Duration::from_millis(250);

/// Size of an output buffer able to hold any result for inner packets up to `mtu` bytes.
pub const fn buffer_len(mtu: usize) -> usize {
    let n = mtu + OVERHEAD;
    if n < MIN_BUFFER_LEN {
        MIN_BUFFER_LEN
    } else {
        n
    }
}

const MSG_COOKIE_REPLY: u8 = 3;
const MSG_DATA: u8 = 4;
/// Boringtun's `Tunn` index is 24 bits (it shifts it left by 8 for the session counter).
const INDEX_MASK: u32 = 0x00ff_ffff;

/// Relay-wide settings (validated plain values; the binary loads them from its config).
pub struct RelayConfig {
    /// The relay's static X25519 key.
    pub private_key: StaticSecret,
    /// The relay's own tunnel addresses.
    pub tunnel_addresses: Vec<IpAddr>,
    /// Egress policy.
    pub policy: PolicyConfig,
    /// Maximum number of peers.
    pub max_peers: usize,
    /// Per-client rate limit in bytes per second and direction; 0 = unlimited.
    pub client_rate_bytes: u64,
    /// Random value mixed into receiver indices (randomness is an argument in a sans-IO core).
    pub index_salt: u32,
}

/// One peer's settings.
#[derive(Clone)]
pub struct PeerConfig {
    /// The peer's static X25519 public key.
    pub public_key: PublicKey,
    /// Inner addresses the peer may use as source and that route to it.
    pub allowed_ips: Vec<IpNet>,
    /// Optional preshared key.
    pub preshared_key: Option<[u8; 32]>,
    /// Optional persistent keepalive (seconds).
    pub persistent_keepalive: Option<u16>,
}

/// Errors changing the peer table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayError {
    /// The table already holds `max_peers` peers.
    #[error("peer table full ({0} peers)")]
    TooManyPeers(usize),
    /// A peer with this public key exists.
    #[error("a peer with this public key already exists")]
    DuplicateKey,
    /// Another peer already owns exactly this allowed-IPs network.
    #[error("allowed IP {0} is already assigned to another peer")]
    AllowedIpInUse(IpNet),
    /// The peer's key equals the relay's own key.
    #[error("peer public key equals the relay's own public key")]
    OwnKey,
}

/// What the caller must do with one input.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<'b> {
    /// Send `bytes` as one UDP datagram to `dst`.
    SendUdp {
        /// Destination socket address.
        dst: SocketAddr,
        /// Datagram payload (in the caller's buffer).
        bytes: &'b [u8],
    },
    /// Write the inner IP packet to the egress (TUN or userspace stack).
    WriteTun(&'b [u8]),
    /// Nothing to do (e.g. a keepalive or cookie reply was consumed).
    Done,
    /// The input was dropped and counted.
    Drop(DropReason),
}

/// A datagram produced by [`Relay::poll_transmit`].
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'b> {
    /// Destination socket address.
    pub dst: SocketAddr,
    /// Datagram payload (in the caller's buffer).
    pub bytes: &'b [u8],
}

/// Read-only facts about one peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Table id.
    pub id: PeerId,
    /// Static public key.
    pub public_key: [u8; 32],
    /// Last authenticated endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Allowed IPs.
    pub allowed_ips: Vec<IpNet>,
    /// Accepted traffic counters.
    pub counters: PeerCounters,
    /// Trusted or paid.
    pub kind: PeerKind,
}

pub(crate) struct Peer {
    kind: PeerKind,
    tunn: Tunn,
    public_key: [u8; 32],
    allowed_ips: Vec<IpNet>,
    endpoint: Option<SocketAddr>,
    counters: PeerCounters,
    /// Client -> egress and egress -> client buckets (None = unlimited).
    up: Option<TokenBucket>,
    down: Option<TokenBucket>,
    /// Download bytes waiting in the shaper, and the most that may wait (~50 ms of the rate).
    held: usize,
    hold_max: usize,
    /// Unique among all peers this relay ever had (a slot's owners differ).
    serial: u64,
}

/// The sans-IO relay. Drive it with:
/// - [`handle_udp`](Self::handle_udp) for every datagram received on the WireGuard socket,
/// - [`handle_tun`](Self::handle_tun) for every IP packet read from the egress,
/// - [`handle_timeout`](Self::handle_timeout) every [`TIMER_INTERVAL`],
/// - and after each of these, [`poll_transmit`](Self::poll_transmit) until it returns `None`
///   (queued packets after a handshake, keepalives, handshake retries).
///
/// Output goes into caller buffers of at least [`buffer_len`]`(mtu)` bytes; nothing is
/// allocated per packet. The relay reads no clock itself (boringtun's `Tunn` does, internally).
pub struct Relay {
    secret: StaticSecret,
    public: PublicKey,
    admission: HandshakeAdmission,
    pub(crate) peers: Vec<Option<Peer>>,
    free: Vec<u32>,
    by_key: HashMap<[u8; 32], PeerId>,
    routes: AllowedIps<PeerId>,
    policy: EgressPolicy,
    stats: Stats,
    index_salt: u32,
    max_peers: usize,
    client_rate: u64,
    flush: Option<PeerId>,
    timer_cursor: usize,
    hook: Option<Box<dyn PacketHook>>,
    /// Our tunnel addresses (the source of our ICMP answers).
    tunnel_addresses: Vec<IpAddr>,
    prohibited: crate::unreachable::Prohibited,
    /// An answer to a policy-blocked packet, for [`Self::poll_transmit`].
    answer: Option<(PeerId, Vec<u8>)>,
    shaper: Shaper,
    serials: u64,
    share: Share,
}

impl Relay {
    /// Creates an empty relay.
    pub fn new(cfg: RelayConfig) -> Self {
        let public = PublicKey::from(&cfg.private_key);
        let policy = EgressPolicy::new(cfg.policy, &cfg.tunnel_addresses);
        Self {
            secret: cfg.private_key,
            public,
            admission: HandshakeAdmission::new(&public),
            peers: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
            routes: AllowedIps::default(),
            policy,
            stats: Stats::default(),
            index_salt: cfg.index_salt & INDEX_MASK,
            max_peers: cfg.max_peers.min(INDEX_MASK as usize),
            client_rate: cfg.client_rate_bytes,
            flush: None,
            timer_cursor: usize::MAX,
            hook: None,
            tunnel_addresses: cfg.tunnel_addresses,
            prohibited: crate::unreachable::Prohibited::default(),
            answer: None,
            shaper: Shaper::default(),
            serials: 0,
            share: Share::default(),
        }
    }

    /// Sets how many handshakes per second (relay-wide) are processed without a cookie round
    /// trip while the relay is under load ([`DEFAULT_HANDSHAKE_BUDGET`](crate::DEFAULT_HANDSHAKE_BUDGET)
    /// by default); 0 = plain WireGuard (a cookie for every new handshake under load).
    pub fn set_handshake_budget(&mut self, per_sec: u64) {
        self.admission.set_budget(per_sec);
    }

    /// Installs the metering hook (see [`PacketHook`] for where it is called).
    pub fn set_hook(&mut self, hook: Box<dyn PacketHook>) {
        self.hook = Some(hook);
    }

    /// The installed hook, if it is a `T`.
    pub fn hook<T: PacketHook>(&self) -> Option<&T> {
        self.hook.as_deref()?.as_any().downcast_ref()
    }

    /// Runs `f` with the relay and its hook (if it is a `T`) borrowed together: one
    /// synchronous operation on the peer table and the sessions (admit, resume, end a paid
    /// session). `None` if no `T` is installed. The hook is not called while `f` runs.
    pub fn with_hook<T: PacketHook, R>(
        &mut self,
        f: impl FnOnce(&mut Self, &mut T) -> R,
    ) -> Option<R> {
        let mut hook = self.hook.take()?;
        let r = hook.as_any_mut().downcast_mut::<T>().map(|h| f(self, h));
        self.hook = Some(hook);
        r
    }

    /// The relay's static public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The compiled egress policy (egress implementations that dial out re-check with it).
    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// Replaces the router's own addresses used by the egress policy.
    pub fn set_router_addresses(&mut self, addresses: Vec<IpAddr>) {
        self.policy.set_router_addresses(addresses);
    }

    /// Relay-wide counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Adds a trusted peer.
    pub fn add_peer(&mut self, cfg: PeerConfig) -> Result<PeerId, RelayError> {
        self.add_peer_as(cfg, PeerKind::Trusted)
    }

    /// Adds a peer of the given kind (a paid peer forwards nothing until the hook has a
    /// session for it: add it and open the session in one [`Self::with_hook`] call).
    pub fn add_peer_as(&mut self, cfg: PeerConfig, kind: PeerKind) -> Result<PeerId, RelayError> {
        let key = *cfg.public_key.as_bytes();
        if key == *self.public.as_bytes() {
            return Err(RelayError::OwnKey);
        }
        if self.by_key.contains_key(&key) {
            return Err(RelayError::DuplicateKey);
        }
        if self.by_key.len() >= self.max_peers {
            return Err(RelayError::TooManyPeers(self.max_peers));
        }
        for net in &cfg.allowed_ips {
            let net = net.trunc();
            if self
                .peers
                .iter()
                .flatten()
                .any(|p| p.allowed_ips.contains(&net))
            {
                return Err(RelayError::AllowedIpInUse(net));
            }
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => u32::try_from(self.peers.len()).map_err(|_| RelayError::TooManyPeers(0))?,
        };
        let id = PeerId(slot);
        let tunn = Tunn::new(
            self.secret.clone(),
            cfg.public_key,
            cfg.preshared_key,
            cfg.persistent_keepalive,
            slot ^ self.index_salt,
            Some(self.admission.tunn_limiter()),
        );
        let allowed_ips: Vec<IpNet> = cfg.allowed_ips.iter().map(IpNet::trunc).collect();
        for net in &allowed_ips {
            self.routes.insert(*net, id);
        }
        let bucket = (self.client_rate > 0).then(|| rate_bucket(self.client_rate));
        let peer = Peer {
            kind,
            tunn,
            public_key: key,
            allowed_ips,
            endpoint: None,
            counters: PeerCounters::default(),
            up: bucket.clone(),
            down: bucket,
            held: 0,
            hold_max: hold_limit(self.client_rate),
            serial: self.serials,
        };
        self.serials += 1;
        let idx = slot as usize;
        if idx == self.peers.len() {
            self.peers.push(Some(peer));
        } else {
            self.peers[idx] = Some(peer);
        }
        self.by_key.insert(key, id);
        Ok(id)
    }

    /// Removes a peer; returns its final counters.
    pub fn remove_peer(&mut self, id: PeerId) -> Option<PeerCounters> {
        let peer = self.peers.get_mut(id.0 as usize)?.take()?;
        self.by_key.remove(&peer.public_key);
        self.routes.remove_value(id);
        self.free.push(id.0);
        if self.flush == Some(id) {
            self.flush = None;
        }
        Some(peer.counters)
    }

    /// The peer with this static public key.
    pub fn peer_by_key(&self, public_key: &[u8; 32]) -> Option<PeerId> {
        self.by_key.get(public_key).copied()
    }

    /// The peer whose allowed IPs contain `addr` (longest prefix), if any.
    pub fn route_owner(&self, addr: IpAddr) -> Option<PeerId> {
        self.routes.lookup(addr)
    }

    /// Whether peer `id` is trusted or paid (`None`: no such peer).
    pub fn peer_kind(&self, id: PeerId) -> Option<PeerKind> {
        self.peer(id).map(|p| p.kind)
    }

    /// Accepted-traffic counters of one peer (the metering hook).
    pub fn peer_counters(&self, id: PeerId) -> Option<PeerCounters> {
        self.peer(id).map(|p| p.counters)
    }

    /// Facts about every peer, in id order.
    pub fn peers(&self) -> impl Iterator<Item = PeerInfo> + '_ {
        self.peers.iter().enumerate().filter_map(|(i, p)| {
            let p = p.as_ref()?;
            Some(PeerInfo {
                id: PeerId(u32::try_from(i).ok()?),
                public_key: p.public_key,
                endpoint: p.endpoint,
                allowed_ips: p.allowed_ips.clone(),
                counters: p.counters,
                kind: p.kind,
            })
        })
    }

    /// Boringtun's session facts for one peer.
    pub fn tunnel_stats(&self, id: PeerId) -> Option<TunnelStats> {
        let (since, _tx, _rx, loss, rtt) = self.peer(id)?.tunn.stats();
        Some(TunnelStats {
            since_last_handshake: since,
            loss,
            rtt_ms: rtt,
        })
    }

    /// Sets (or with 0 removes) one peer's rate limit in bytes per second and direction.
    pub fn set_peer_rate_limit(&mut self, id: PeerId, bytes_per_sec: u64) -> bool {
        let Some(p) = self.peers.get_mut(id.0 as usize).and_then(Option::as_mut) else {
            return false;
        };
        let bucket = (bytes_per_sec > 0).then(|| rate_bucket(bytes_per_sec));
        p.up = bucket.clone();
        p.down = bucket;
        p.hold_max = hold_limit(bytes_per_sec);
        true
    }

    /// Sets (0 = removes) the total rate of all paid peers together, bytes per second per
    /// direction (`up`: client → egress). Each paid packet needs room in its client's own
    /// bucket and in the total one; downloads over it wait in the shaper, uploads are dropped.
    pub fn set_share_rate(&mut self, up_bytes_per_sec: u64, down_bytes_per_sec: u64) {
        let bucket = |rate: u64| (rate > 0).then(|| rate_bucket(rate));
        self.share.up = bucket(up_bytes_per_sec);
        self.share.down = bucket(down_bytes_per_sec);
    }

    /// Sets how many more paid bytes (both directions together) may be forwarded; `None` =
    /// no quota. At 0 every paid packet is dropped as [`DropReason::Quota`] before it is
    /// metered, so no client pays for a byte the quota stopped.
    pub fn set_share_budget(&mut self, bytes: Option<u64>) {
        self.share.set_budget(bytes);
    }

    /// What is left of the budget set with [`Self::set_share_budget`].
    pub fn share_budget(&self) -> Option<u64> {
        self.share.budget()
    }

    /// Paid bytes forwarded (both directions) since the relay was created: the agent adds
    /// the growth of this number to its persisted quota counters.
    pub fn share_used(&self) -> u64 {
        self.share.used()
    }

    /// Handles one datagram received from `src` on the WireGuard socket.
    pub fn handle_udp<'b>(
        &mut self,
        src: SocketAddr,
        datagram: &[u8],
        now: Instant,
        buf: &'b mut [u8],
    ) -> Action<'b> {
        self.stats.udp_rx_packets += 1;
        if buf.len() < datagram.len().max(MIN_BUFFER_LEN) {
            return self.drop(DropReason::BufferTooSmall);
        }
        let id = match Tunn::parse_incoming_packet(datagram) {
            Err(_) => return self.drop(DropReason::Malformed),
            Ok(Packet::PacketData(p)) => self.peer_for_index(p.receiver_idx),
            Ok(Packet::PacketCookieReply(p)) => self.peer_for_index(p.receiver_idx),
            Ok(Packet::HandshakeInit(_) | Packet::HandshakeResponse(_)) => {
                match self.admit_handshake(src, datagram, now, buf) {
                    Ok(id) => id,
                    Err(Some(len)) => {
                        self.stats.cookie_replies += 1;
                        self.stats.udp_tx_packets += 1;
                        return Action::SendUdp {
                            dst: src,
                            bytes: &buf[..len],
                        };
                    }
                    Err(None) => return Action::Drop(DropReason::HandshakeRateLimit),
                }
            }
        };
        let Some(id) = id else {
            return self.drop(DropReason::UnknownPeer);
        };
        let Some(peer) = self.peers.get_mut(id.0 as usize).and_then(Option::as_mut) else {
            return self.drop(DropReason::UnknownPeer);
        };
        match peer.tunn.decapsulate(Some(src.ip()), datagram, buf) {
            TunnResult::Done => {
                if datagram[0] == MSG_DATA {
                    roam(&mut self.stats, peer, src);
                }
                Action::Done
            }
            TunnResult::Err(e) => self.drop(DropReason::from_wg(&e)),
            TunnResult::WriteToNetwork(out) => {
                if out.first() == Some(&MSG_COOKIE_REPLY) {
                    self.stats.cookie_replies += 1;
                } else {
                    // Handshake response sent (or keepalive after our initiation completed).
                    self.stats.handshakes += 1;
                    roam(&mut self.stats, peer, src);
                    self.flush = Some(id);
                }
                self.stats.udp_tx_packets += 1;
                Action::SendUdp {
                    dst: src,
                    bytes: out,
                }
            }
            TunnResult::WriteToTunnelV4(pkt, _) | TunnResult::WriteToTunnelV6(pkt, _) => {
                let pkt: &'b [u8] = pkt;
                roam(&mut self.stats, peer, src);
                self.accept_from_client(id, pkt, now)
            }
        }
    }

    /// Handles one IP packet read from the egress (destined to a client).
    pub fn handle_tun<'b>(&mut self, packet: &[u8], now: Instant, buf: &'b mut [u8]) -> Action<'b> {
        if buf.len() < buffer_len(packet.len()) {
            return self.drop(DropReason::BufferTooSmall);
        }
        let Some(dst) = packet::dst_addr(packet) else {
            return self.drop(DropReason::Malformed);
        };
        let Some(id) = self.routes.lookup(dst) else {
            return self.drop(DropReason::NoRoute);
        };
        let Some(peer) = self.peers.get_mut(id.0 as usize).and_then(Option::as_mut) else {
            return self.drop(DropReason::NoRoute);
        };
        let Some(endpoint) = peer.endpoint else {
            return self.drop(DropReason::NoEndpoint);
        };
        let total = match peer.kind {
            PeerKind::Paid => self.share.down.as_mut(),
            PeerKind::Trusted => None,
        };
        if peer.down.is_some() || total.is_some() {
            let len = packet.len();
            let cost = len as u64;
            let late = |b: &Option<&mut TokenBucket>| b.as_ref().map(|b| b.delay(now, cost));
            let own = peer.down.as_mut();
            // Behind held packets a packet waits its turn even if the buckets have room again.
            let wait_total = late(&total);
            if peer.held > 0
                || !late(&own).unwrap_or_default().is_zero()
                || !wait_total.unwrap_or_default().is_zero()
            {
                if wait_total.is_some_and(|w| w > MAX_SHARE_WAIT) {
                    return self.drop(DropReason::ShareRate);
                }
                if peer.held + len > peer.hold_max || !self.shaper.has_room(len) {
                    return self.drop(DropReason::RateLimit);
                }
                let wait = [own, total]
                    .into_iter()
                    .flatten()
                    .map(|b| b.reserve(now, cost))
                    .max()
                    .unwrap_or_default();
                peer.held += len;
                self.shaper.hold((id, peer.serial), packet, now + wait);
                self.stats.shaped_packets += 1;
                return Action::Done;
            }
            for b in [own, total].into_iter().flatten() {
                b.try_take(now, cost);
            }
        }
        self.send_down(id, endpoint, packet, now, buf)
    }

    /// Meters (paid peers), encrypts and counts one download packet for `id`.
    fn send_down<'b>(
        &mut self,
        id: PeerId,
        endpoint: SocketAddr,
        packet: &[u8],
        now: Instant,
        buf: &'b mut [u8],
    ) -> Action<'b> {
        let Some(peer) = self.peers.get_mut(id.0 as usize).and_then(Option::as_mut) else {
            return self.drop(DropReason::NoRoute);
        };
        if peer.kind == PeerKind::Paid {
            if let Err(reason) = self.meter_paid(id, HookDirection::Down, packet.len(), now) {
                return self.drop(reason);
            }
        }
        let Some(peer) = self.peers.get_mut(id.0 as usize).and_then(Option::as_mut) else {
            return self.drop(DropReason::NoRoute);
        };
        match peer.tunn.encapsulate(packet, buf) {
            TunnResult::WriteToNetwork(out) => {
                if out.first() == Some(&MSG_DATA) {
                    count_to_client(peer, packet.len());
                    self.stats.egress_rx_packets += 1;
                }
                // Otherwise: no session; the packet is queued and this is a handshake initiation.
                self.stats.udp_tx_packets += 1;
                Action::SendUdp {
                    dst: endpoint,
                    bytes: out,
                }
            }
            TunnResult::Err(e) => self.drop(DropReason::from_wg(&e)),
            _ => Action::Done,
        }
    }

    /// When the earliest download packet held by the rate shaper is due (call
    /// [`poll_released`](Self::poll_released) then).
    pub fn next_release(&self) -> Option<Instant> {
        self.shaper.next()
    }

    /// Whether a packet held since the last call is due before everything held earlier (a
    /// shell sleeping until [`next_release`](Self::next_release) must wake up and re-arm).
    pub fn take_release_rearm(&mut self) -> bool {
        self.shaper.take_rearm()
    }

    /// The next held download packet due at `now`, metered, encrypted and counted as if it
    /// had just arrived; call until `None` when [`next_release`](Self::next_release) passes.
    pub fn poll_released<'b>(&mut self, now: Instant, buf: &'b mut [u8]) -> Option<Transmit<'b>> {
        loop {
            let ((id, serial), i) = self.shaper.pop_due(now)?;
            // A removed peer's packets are discarded (its slot may have a new owner).
            let peer = self.peers.get_mut(id.0 as usize).and_then(Option::as_mut);
            let Some(peer) = peer.filter(|p| p.serial == serial) else {
                self.shaper.recycle(i);
                continue;
            };
            let packet = self.shaper.take(i);
            peer.held = peer.held.saturating_sub(packet.len());
            let endpoint = peer.endpoint;
            let sent = if buf.len() < buffer_len(packet.len()) {
                self.drop(DropReason::BufferTooSmall)
            } else if let Some(endpoint) = endpoint {
                self.send_down(id, endpoint, &packet, now, buf)
            } else {
                self.drop(DropReason::NoEndpoint)
            };
            let sent = match sent {
                Action::SendUdp { dst, bytes } => Some((dst, bytes.len())),
                _ => None,
            };
            self.shaper.put_back(i, packet);
            if let Some((dst, len)) = sent {
                return Some(Transmit {
                    dst,
                    bytes: &buf[..len],
                });
            }
        }
    }

    /// Encrypts `packet`, an inner IP packet the agent itself originates (a control reply),
    /// for peer `id` and returns the datagram to send. It is not client traffic: no route
    /// lookup, rate limit, hook or traffic counters apply. `None` if the peer is gone or has
    /// no endpoint yet; without a current session boringtun queues the packet and this
    /// returns the handshake initiation instead.
    pub fn encapsulate_for<'b>(
        &mut self,
        id: PeerId,
        packet: &[u8],
        buf: &'b mut [u8],
    ) -> Option<Transmit<'b>> {
        if buf.len() < buffer_len(packet.len()) {
            return None;
        }
        let peer = self.peers.get_mut(id.0 as usize)?.as_mut()?;
        let dst = peer.endpoint?;
        match peer.tunn.encapsulate(packet, buf) {
            TunnResult::WriteToNetwork(bytes) => {
                self.stats.udp_tx_packets += 1;
                Some(Transmit { dst, bytes })
            }
            _ => None,
        }
    }

    /// Advances timers; call every [`TIMER_INTERVAL`], then drain [`poll_transmit`](Self::poll_transmit).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.admission.sweep(now);
        self.timer_cursor = 0;
    }

    /// Next datagram the relay wants to send on its own (queued data after a handshake,
    /// keepalives, handshake retries); call until `None` after every `handle_*`.
    pub fn poll_transmit<'b>(&mut self, buf: &'b mut [u8]) -> Option<Transmit<'b>> {
        if buf.len() < MIN_BUFFER_LEN {
            return None;
        }
        if let Some((id, answer)) = self.answer.take() {
            if let Some(len) = self.encapsulate_answer(id, &answer, buf) {
                self.stats.prohibited_answers += 1;
                let dst = self.peer(id)?.endpoint?;
                return Some(Transmit {
                    dst,
                    bytes: &buf[..len],
                });
            }
        }
        if let Some(id) = self.flush {
            if let Some(len) = self.flush_one(id, buf) {
                let dst = self.peer(id)?.endpoint?;
                return Some(Transmit {
                    dst,
                    bytes: &buf[..len],
                });
            }
            self.flush = None;
        }
        while self.timer_cursor < self.peers.len() {
            let i = self.timer_cursor;
            self.timer_cursor += 1;
            let Some(peer) = self.peers[i].as_mut() else {
                continue;
            };
            if let TunnResult::WriteToNetwork(out) = peer.tunn.update_timers(buf) {
                let Some(dst) = peer.endpoint else { continue };
                let len = out.len();
                self.stats.udp_tx_packets += 1;
                return Some(Transmit {
                    dst,
                    bytes: &buf[..len],
                });
            }
        }
        None
    }

    /// Encrypts a packet the relay itself answers with (not client traffic: not metered, not
    /// counted as the peer's); the datagram's length in `buf`.
    fn encapsulate_answer(&mut self, id: PeerId, answer: &[u8], buf: &mut [u8]) -> Option<usize> {
        if buf.len() < buffer_len(answer.len()) {
            return None;
        }
        let peer = self.peers.get_mut(id.0 as usize)?.as_mut()?;
        peer.endpoint?;
        match peer.tunn.encapsulate(answer, buf) {
            TunnResult::WriteToNetwork(out) => {
                self.stats.udp_tx_packets += 1;
                Some(out.len())
            }
            _ => None,
        }
    }

    fn flush_one(&mut self, id: PeerId, buf: &mut [u8]) -> Option<usize> {
        let peer = self.peers.get_mut(id.0 as usize)?.as_mut()?;
        peer.endpoint?;
        match peer.tunn.decapsulate(None, &[], buf) {
            TunnResult::WriteToNetwork(out) => {
                if out.first() == Some(&MSG_DATA) && out.len() > OVERHEAD {
                    count_to_client(peer, out.len() - OVERHEAD);
                    self.stats.egress_rx_packets += 1;
                }
                self.stats.udp_tx_packets += 1;
                Some(out.len())
            }
            _ => None,
        }
    }

    /// Handshake admission (see [`crate::admission`]): `Ok(peer)` to continue (`None`: no
    /// such peer), `Err(Some(len))` cookie reply of `len` bytes in `buf`, `Err(None)` dropped
    /// (already counted).
    fn admit_handshake(
        &mut self,
        src: SocketAddr,
        datagram: &[u8],
        now: Instant,
        buf: &mut [u8],
    ) -> Result<Option<PeerId>, Option<usize>> {
        let packet = match self.admission.admit(src.ip(), datagram, now, buf) {
            Admission::Process(p) => p,
            Admission::Cookie(len) => return Err(Some(len)),
            Admission::Drop(reason) => {
                self.stats.count_drop(reason);
                return Err(None);
            }
        };
        Ok(match packet {
            Packet::HandshakeInit(init) => parse_handshake_anon(&self.secret, &self.public, &init)
                .ok()
                .and_then(|h| self.by_key.get(&h.peer_static_public).copied()),
            Packet::HandshakeResponse(resp) => self.peer_for_index(resp.receiver_idx),
            _ => None,
        })
    }

    /// Cryptokey routing + egress policy + rate limit for a decrypted client packet.
    fn accept_from_client<'b>(&mut self, id: PeerId, pkt: &'b [u8], now: Instant) -> Action<'b> {
        let Some(hdr) = IpHeader::parse(pkt) else {
            return self.drop(DropReason::Malformed);
        };
        if self.routes.lookup(hdr.src) != Some(id) {
            return self.drop(DropReason::AllowedIps);
        }
        if let Some(h) = &mut self.hook {
            if h.divert(id, &hdr, pkt, now) {
                return Action::Done;
            }
        }
        let refused = match self.policy.check(&hdr) {
            Verdict::Allow => None,
            Verdict::Blocked => Some(DropReason::Policy),
            Verdict::ExitPort => Some(DropReason::ExitPort),
            Verdict::TunnelAddress => return self.drop(DropReason::TunnelAddress),
        };
        if let Some(reason) = refused {
            // Say so (ICMP administratively prohibited) instead of a silent timeout.
            self.answer = self
                .prohibited
                .answer(pkt, &hdr, &self.tunnel_addresses, now)
                .map(|a| (id, a));
            return self.drop(reason);
        }
        let Some(peer) = self.peers.get_mut(id.0 as usize).and_then(Option::as_mut) else {
            return self.drop(DropReason::UnknownPeer);
        };
        let paid = peer.kind == PeerKind::Paid;
        let total = if paid { self.share.up.as_mut() } else { None };
        if let Err(reason) = Share::take_up(peer.up.as_mut(), total, now, pkt.len() as u64) {
            return self.drop(reason);
        }
        if paid {
            if let Err(reason) = self.meter_paid(id, HookDirection::Up, pkt.len(), now) {
                return self.drop(reason);
            }
        }
        let Some(peer) = self.peers.get_mut(id.0 as usize).and_then(Option::as_mut) else {
            return self.drop(DropReason::UnknownPeer);
        };
        peer.counters.from_client_bytes += pkt.len() as u64;
        peer.counters.from_client_packets += 1;
        self.stats.egress_tx_packets += 1;
        Action::WriteTun(pkt)
    }

    /// A paid packet within the quota budget, metered by the hook, then counted against the
    /// budget (a byte the quota stops is never metered, so never billed).
    fn meter_paid(
        &mut self,
        id: PeerId,
        dir: HookDirection,
        len: usize,
        now: Instant,
    ) -> Result<(), DropReason> {
        if !self.share.fits(len) {
            return Err(DropReason::Quota);
        }
        meter(&mut self.hook, id, dir, len, now)?;
        self.share.consume(len);
        Ok(())
    }

    fn peer_for_index(&self, receiver_idx: u32) -> Option<PeerId> {
        let slot = (receiver_idx >> 8) ^ self.index_salt;
        self.peers.get(slot as usize)?.as_ref()?;
        Some(PeerId(slot))
    }

    fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.peers.get(id.0 as usize)?.as_ref()
    }

    fn drop<'b>(&mut self, reason: DropReason) -> Action<'b> {
        self.stats.count_drop(reason);
        tracing::trace!(%reason, "drop");
        Action::Drop(reason)
    }
}

/// Asks the hook to meter a paid peer's packet; fails closed without a hook.
fn meter(
    hook: &mut Option<Box<dyn PacketHook>>,
    id: PeerId,
    dir: HookDirection,
    bytes: usize,
    now: Instant,
) -> Result<(), DropReason> {
    match hook.as_mut().map(|h| h.admit(id, dir, bytes, now)) {
        Some(HookVerdict::Forward) => Ok(()),
        Some(HookVerdict::CreditWindow) => Err(DropReason::CreditWindow),
        Some(HookVerdict::NoSession) | None => Err(DropReason::PaidNoSession),
    }
}

fn roam(stats: &mut Stats, peer: &mut Peer, src: SocketAddr) {
    if peer.endpoint != Some(src) {
        if peer.endpoint.is_some() {
            stats.roams += 1;
        }
        tracing::debug!(endpoint = %src, "peer endpoint updated");
        peer.endpoint = Some(src);
    }
}

fn count_to_client(peer: &mut Peer, len: usize) {
    peer.counters.to_client_bytes += len as u64;
    peer.counters.to_client_packets += 1;
}

/// ~50 ms of `bytes_per_sec`, at least 64 KiB (one TSO-sized burst): a client's burst, and
/// how much of its download may wait in the shaper.
fn burst_bytes(bytes_per_sec: u64) -> u64 {
    (bytes_per_sec / 20).max(64 * 1024)
}

/// How many download bytes may wait for a client at `bytes_per_sec` (as much as its burst).
fn hold_limit(bytes_per_sec: u64) -> usize {
    usize::try_from(burst_bytes(bytes_per_sec)).unwrap_or(usize::MAX)
}

/// A byte bucket with [`burst_bytes`] of burst.
fn rate_bucket(bytes_per_sec: u64) -> TokenBucket {
    TokenBucket::new(bytes_per_sec, burst_bytes(bytes_per_sec))
}
