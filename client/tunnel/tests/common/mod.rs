//! A deterministic client/relay pair in memory: a `ClientTunnel` against a real
//! `ferry_relay_core::Relay` whose hook is ferry-metering's `RelayHub` (as in the agent), a
//! virtual clock for the metering timers, and knobs for loss, reordering and a client that
//! never stores its co-signed receipts (a crash before fsync). boringtun's own timers read the
//! real clock; the scenarios only rely on the metering clock.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::panic)]

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_metering::{
    CONTROL_PORT, ClientConfig, ClientSession, Direction, Message, RelayConfig, RelayEvent,
    RelayHub, RelayIdentity, Verdict, control_datagram, decode, encode, udp_packet,
};
use ferry_receipts::{CoSignedReceipt, NetworkId, SessionId, Signature, SigningKey, Voucher};
use ferry_relay_core::{
    Action, HookDirection, HookVerdict, IpHeader, PacketHook, PeerConfig, PeerId, PeerKind,
    PolicyConfig, PublicKey, Relay, RelayConfig as CoreConfig, StaticSecret,
};
use ferry_tunnel::{ClientTunnel, ControlPath, Event, PaidConfig, TunnelConfig};

pub const MIB: u64 = 1 << 20;
pub const NET: NetworkId = NetworkId([7; 16]);
pub const UNIX: u64 = 1_800_000_000;

/// The relay's hook: the hub and what it stored, plus outgoing control messages.
pub struct Hub {
    pub hub: RelayHub<PeerId>,
    pub own: Vec<IpAddr>,
    pub outbox: Vec<(PeerId, Message)>,
    /// Co-signed receipts the relay stored (its own "fsync" never fails here).
    pub stored: Vec<CoSignedReceipt>,
    pub now: Instant,
    pub unix: u64,
    /// Extra bytes metered per downstream packet (an over-claiming relay).
    pub phantom_down: u64,
}

impl PacketHook for Hub {
    fn divert(&mut self, peer: PeerId, _hdr: &IpHeader, packet: &[u8], now: Instant) -> bool {
        let Some(d) = control_datagram(packet, &self.own) else {
            return false;
        };
        if let Ok(Message::Hello(offer)) = decode(d.payload) {
            let m =
                match self
                    .hub
                    .open(peer, &offer, SessionId([9; 16]), 1 << 30, 0, now, self.unix)
                {
                    Ok(m) => m,
                    Err(r) => self.hub.identity().reject(&offer, r),
                };
            self.outbox.push((peer, m));
        } else if let Some(c) = self.hub.handle_control(peer, d.payload, now) {
            self.stored.push(c);
            if let Some(ack) = self.hub.persisted(peer, c.body().seq) {
                self.outbox.push((peer, ack));
            }
        }
        true
    }

    fn admit(
        &mut self,
        peer: PeerId,
        dir: HookDirection,
        bytes: usize,
        now: Instant,
    ) -> HookVerdict {
        if self.hub.session(peer).is_none() {
            return HookVerdict::NoSession;
        }
        let dir = match dir {
            HookDirection::Up => Direction::Up,
            HookDirection::Down => Direction::Down,
        };
        match self.hub.on_bytes(peer, dir, bytes as u64, now) {
            Verdict::Forward => {
                if dir == Direction::Down && self.phantom_down > 0 {
                    let _ = self.hub.on_bytes(peer, dir, self.phantom_down, now);
                }
                HookVerdict::Forward
            }
            Verdict::Drop(_) => HookVerdict::CreditWindow,
        }
    }
}

pub struct Pair {
    pub client: ClientTunnel,
    pub relay: Relay,
    pub peer: PeerId,
    pub now: Instant,
    start: Instant,
    /// Datagrams in flight each way (delivered on `step`).
    to_relay: VecDeque<Vec<u8>>,
    to_client: VecDeque<Vec<u8>>,
    /// Drop every k-th datagram in each direction (0: none).
    pub drop_every: u64,
    /// Swap each pair of datagrams in flight (reordering).
    pub reorder: bool,
    sent: u64,
    /// False: the client never reports its co-signed receipts as stored (crash before fsync).
    pub client_stores: bool,
    /// What the client was asked to store, in order.
    pub client_stored: Vec<CoSignedReceipt>,
    pub events: Vec<Event>,
    pub relay_events: Vec<RelayEvent>,
    /// Payload bytes the "internet" echoes back per upstream packet.
    pub echo: bool,
    client_addr: SocketAddr,
    me: IpAddr,
}

/// The client's tunnel settings in every scenario: only the relay key it trusts and the
/// handshake timeout vary.
pub fn tunnel_config(
    relay_key: boringtun::x25519::PublicKey,
    handshake_timeout: Option<Duration>,
) -> TunnelConfig {
    TunnelConfig {
        secret: secret(2),
        relay_key,
        keepalive: None,
        index: 77,
        relay_ip: "192.0.2.1".parse().unwrap(),
        mtu: 1420,
        rehandshake_after: None,
        close_grace: ferry_tunnel::CLOSE_GRACE,
        handshake_timeout,
        silent_after: Some(SILENT_AFTER),
    }
}

/// What `ferry connect` uses.
pub const SILENT_AFTER: Duration = Duration::from_secs(25);

fn secret(seed: u8) -> StaticSecret {
    StaticSecret::from([seed; 32])
}

#[allow(clippy::disallowed_methods)] // a base instant; the metering clock is virtual after it
fn base_instant() -> Instant {
    Instant::now()
}

impl Pair {
    /// A relay with a paid peer (client seed 2 at 10.77.0.2) and a client that offers its
    /// session inside the tunnel.
    pub fn new(cfg: RelayConfig, allowance: u64) -> Self {
        let ledger = SigningKey::from_seed(&[1; 32]);
        let relay_id = Arc::new(SigningKey::from_seed(&[2; 32]));
        let client_id = Arc::new(SigningKey::from_seed(&[3; 32]));
        let mut relay = Relay::new(CoreConfig {
            private_key: secret(1),
            tunnel_addresses: vec!["10.77.0.1".parse().unwrap()],
            policy: PolicyConfig::default(),
            max_peers: 4,
            client_rate_bytes: 0,
            index_salt: 0x0001_2345,
        });
        let me: IpAddr = "10.77.0.2".parse().unwrap();
        let peer = relay
            .add_peer_as(
                PeerConfig {
                    public_key: PublicKey::from(&secret(2)),
                    allowed_ips: vec!["10.77.0.2/32".parse().unwrap()],
                    preshared_key: None,
                    persistent_keepalive: None,
                },
                PeerKind::Paid,
            )
            .unwrap();
        let now = base_instant();
        relay.set_hook(Box::new(Hub {
            hub: RelayHub::new(
                cfg,
                RelayIdentity {
                    network_id: NET,
                    ledger_key: ledger.public_key(),
                    key: relay_id.clone(),
                },
            ),
            own: vec!["10.77.0.1".parse().unwrap()],
            outbox: Vec::new(),
            stored: Vec::new(),
            now,
            unix: UNIX,
            phantom_down: 0,
        }));
        let voucher = Voucher {
            network_id: NET,
            ledger_key: ledger.public_key(),
            client_key: client_id.public_key(),
            nonce: [9; 16],
            // One micro per byte at the relay's price (2^30 per GiB): budget = allowance.
            budget_micros: allowance,
            max_price_micros_per_gib: 1 << 30,
            issued_at: UNIX - 10,
            expires_at: UNIX + 86_400,
            signature: Signature::ZERO,
        }
        .sign(&ledger);
        let mut session = ClientSession::new(
            ClientConfig::default(),
            client_id,
            NET,
            relay_id.public_key(),
        );
        let hello = session.hello(
            voucher,
            *PublicKey::from(&secret(2)).as_bytes(),
            [4; 16],
            UNIX,
        );
        let client = ClientTunnel::new(
            tunnel_config(relay.public_key(), None),
            Some(PaidConfig {
                session,
                control: ControlPath::new(me, "10.77.0.1".parse().unwrap()),
                hello: Some(hello),
                answer_receipts: true,
            }),
        );
        Self {
            client,
            relay,
            peer,
            now,
            start: now,
            to_relay: VecDeque::new(),
            to_client: VecDeque::new(),
            drop_every: 0,
            reorder: false,
            sent: 0,
            client_stores: true,
            client_stored: Vec::new(),
            events: Vec::new(),
            relay_events: Vec::new(),
            echo: true,
            client_addr: "198.51.100.7:40000".parse().unwrap(),
            me,
        }
    }

    pub fn hub<R>(&mut self, f: impl FnOnce(&mut Hub) -> R) -> R {
        self.relay.with_hook(|_, h: &mut Hub| f(h)).unwrap()
    }

    /// One data packet of `len` inner bytes from the client to the internet.
    pub fn send_up(&mut self, len: usize) -> bool {
        let pkt = udp_packet(
            SocketAddr::new(self.me, 40000),
            "1.1.1.1:7".parse().unwrap(),
            &vec![0x5a; len.saturating_sub(28)],
        )
        .unwrap();
        let now = self.now;
        self.client.send_inner(&pkt, now)
    }

    /// Moves every queued datagram (with loss/reordering), drains events, runs the relay's
    /// receipt timers. Returns how many datagrams moved.
    pub fn step(&mut self) -> usize {
        let mut moved = 0;
        self.pump_client();
        while !self.to_relay.is_empty() || !self.to_client.is_empty() {
            if self.reorder && self.to_relay.len() >= 2 {
                self.to_relay.swap(0, 1);
            }
            if let Some(d) = self.to_relay.pop_front() {
                moved += 1;
                if self.survives() {
                    self.relay_receive(&d);
                }
            }
            if self.reorder && self.to_client.len() >= 2 {
                self.to_client.swap(0, 1);
            }
            if let Some(d) = self.to_client.pop_front() {
                moved += 1;
                if self.survives() {
                    let (now, unix) = (self.now, self.unix());
                    self.client.handle_datagram(&d, now, unix);
                }
            }
            self.pump_client();
            self.pump_relay();
        }
        moved
    }

    /// Advances the virtual clock by `dt` and runs both sides' timers.
    pub fn advance(&mut self, dt: Duration) {
        self.now += dt;
        let (now, unix) = (self.now, self.unix());
        self.hub(|h| {
            h.now = now;
            h.unix = unix;
            h.hub.handle_timeout(now, unix);
        });
        self.client.handle_timeout(now);
        self.relay.handle_timeout(now);
        let mut buf = vec![0u8; 2048];
        while let Some(t) = self.relay.poll_transmit(&mut buf) {
            self.to_client.push_back(t.bytes.to_vec());
        }
        self.pump_relay();
        self.step();
    }

    /// Runs until the tunnel is up (handshake + Accept), at most `max` ticks.
    pub fn connect(&mut self) {
        for _ in 0..200 {
            self.advance(Duration::from_millis(50));
            if self.client.is_up() {
                return;
            }
        }
        panic!("no connection; events {:?}", self.events);
    }

    pub fn unix(&self) -> u64 {
        UNIX + self.now.duration_since(self.start).as_secs()
    }

    fn survives(&mut self) -> bool {
        self.sent += 1;
        self.drop_every == 0 || self.sent % self.drop_every != 0
    }

    fn relay_receive(&mut self, d: &[u8]) {
        let mut buf = vec![0u8; 4096];
        let now = self.now;
        let up = match self.relay.handle_udp(self.client_addr, d, now, &mut buf) {
            Action::SendUdp { bytes, .. } => {
                self.to_client.push_back(bytes.to_vec());
                None
            }
            Action::WriteTun(p) => Some(p.to_vec()),
            _ => None,
        };
        let mut buf2 = vec![0u8; 4096];
        while let Some(t) = self.relay.poll_transmit(&mut buf2) {
            self.to_client.push_back(t.bytes.to_vec());
        }
        if let (Some(p), true) = (up, self.echo) {
            // The internet echoes the datagram back (same size).
            let (src, dst) = (&p[12..16], &p[16..20]);
            let mut back = p.clone();
            back[12..16].copy_from_slice(dst);
            back[16..20].copy_from_slice(src);
            back[20..22].copy_from_slice(&p[22..24]);
            back[22..24].copy_from_slice(&p[20..22]);
            back[26] = 0;
            back[27] = 0;
            if let Action::SendUdp { bytes, .. } = self.relay.handle_tun(&back, now, &mut buf) {
                self.to_client.push_back(bytes.to_vec());
            }
        }
    }

    /// Drains the client's transmits and events (storing co-signed receipts unless crashed).
    fn pump_client(&mut self) {
        while let Some(d) = self.client.poll_transmit() {
            self.to_relay.push_back(d);
        }
        while let Some(e) = self.client.poll_event() {
            if let Event::StoreCosigned { receipt: c, .. } = &e {
                if self.client_stores {
                    self.client_stored.push(**c);
                    self.client.persisted(c.body().seq);
                }
            }
            self.events.push(e);
        }
        while let Some(d) = self.client.poll_transmit() {
            self.to_relay.push_back(d);
        }
    }

    /// Sends the relay's queued control messages (hub transmits and hook replies).
    fn pump_relay(&mut self) {
        let (now, unix) = (self.now, self.unix());
        let (msgs, events) = self.hub(|h| {
            let mut msgs = std::mem::take(&mut h.outbox);
            while let Some(m) = h.hub.poll_transmit(now, unix) {
                msgs.push(m);
            }
            let mut events = Vec::new();
            while let Some((_, e)) = h.hub.poll_event() {
                events.push(e);
            }
            (msgs, events)
        });
        self.relay_events.extend(events);
        let mut buf = vec![0u8; 4096];
        for (peer, m) in msgs {
            let pkt = udp_packet(
                SocketAddr::new("10.77.0.1".parse().unwrap(), CONTROL_PORT),
                SocketAddr::new(self.me, CONTROL_PORT),
                &encode(&m),
            )
            .unwrap();
            if let Some(t) = self.relay.encapsulate_for(peer, &pkt, &mut buf) {
                self.to_client.push_back(t.bytes.to_vec());
            }
        }
    }

    /// A packet from the relay's egress side to the client (the relay forwards and meters it).
    pub fn inject_down(&mut self, pkt: &[u8]) {
        let mut buf = vec![0u8; 4096];
        let now = self.now;
        if let Action::SendUdp { bytes, .. } = self.relay.handle_tun(pkt, now, &mut buf) {
            self.to_client.push_back(bytes.to_vec());
        }
        self.step();
    }

    /// The relay's meter for the session (up, down).
    pub fn relay_meter(&mut self) -> Option<(u64, u64)> {
        let peer = self.peer;
        self.hub(|h| {
            h.hub
                .session(peer)
                .map(|s| (s.meter().up(), s.meter().down()))
        })
    }
}
