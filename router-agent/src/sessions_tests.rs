//! The paid-session owner without tokio: real `Relay` + `PaidSessions` (a real `RelayHub`
//! signing real receipts) + boringtun client tunnels, packets in memory, a seeded schedule.
#![allow(clippy::unwrap_used, clippy::panic, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use ferry_metering::{RelayConfig, RelayIdentity};
use ferry_receipts::{NetworkId, Signature, SigningKey, Voucher};
use ferry_relay_core::{Action, DropReason, PolicyConfig, RelayConfig as CoreConfig, StaticSecret};

use super::*;
use crate::config_paid::SessionLimits;

const NET: NetworkId = NetworkId([7; 16]);
const UNIX: u64 = 1_800_000_000;
const RELAY_ADDR: &str = "192.0.2.1:51820";

struct Lab {
    relay: Relay,
    ledger: SigningKey,
    relay_id: Arc<SigningKey>,
    now: Instant,
    /// Bytes of paid traffic the relay forwarded, per session (from its actions).
    forwarded: BTreeMap<SessionId, u64>,
    /// Meter totals of ended sessions, taken in the same step that ended them.
    ended: BTreeMap<SessionId, u64>,
    /// Sessions admitted so far (session ids are this counter).
    admitted: u32,
}

struct Client {
    seed: u8,
    tunn: Tunn,
    addr: SocketAddr,
    peer: Option<(PeerId, PaidPeer)>,
    /// The session that was ended (its client keeps sending on the old tunnel).
    last: Option<(PeerId, PaidPeer)>,
}

fn wg_secret(seed: u8) -> StaticSecret {
    StaticSecret::from([seed; 32])
}

impl Lab {
    fn new() -> Self {
        // Generous caps: the schedules below re-admit the same clients many times.
        Self::with_limits(SessionLimits {
            per_voucher: 64,
            per_client: 64,
            ..SessionLimits::default()
        })
    }

    fn with_limits(limits: SessionLimits) -> Self {
        // One micro per byte unless a test says otherwise: a voucher's budget is its
        // allowance in bytes.
        let price = limits.price_micros_per_gib.or(Some(1 << 30));
        Self::priced(SessionLimits {
            price_micros_per_gib: price,
            ..limits
        })
    }

    fn priced(limits: SessionLimits) -> Self {
        let mut relay = Relay::new(CoreConfig {
            private_key: wg_secret(1),
            tunnel_addresses: vec!["10.77.0.1".parse().unwrap(), "fd77::1".parse().unwrap()],
            policy: PolicyConfig::default(),
            max_peers: 64,
            client_rate_bytes: 0,
            index_salt: 0x0012_3456,
        });
        let ledger = SigningKey::from_seed(&[1; 32]);
        let relay_id = Arc::new(SigningKey::from_seed(&[2; 32]));
        let subnets: Vec<IpNet> = vec![
            "10.77.0.1/24".parse().unwrap(),
            "fd77::1/64".parse().unwrap(),
        ];
        let identity = RelayIdentity {
            network_id: NET,
            ledger_key: ledger.public_key(),
            key: relay_id.clone(),
        };
        let (tx, _rx) = mpsc::unbounded_channel();
        // The receiver is dropped: co-signed receipts are not part of this test.
        relay.set_hook(Box::new(PaidSessions::new(
            RelayHub::new(RelayConfig::default(), identity),
            &subnets,
            limits,
            tx,
            Arc::new(Notify::new()),
            Arc::default(),
            0,
        )));
        Self {
            relay,
            ledger,
            relay_id,
            now: Instant::now(),
            forwarded: BTreeMap::new(),
            ended: BTreeMap::new(),
            admitted: 0,
        }
    }

    fn offer(&self, seed: u8, nonce: u8) -> SessionOffer {
        self.offer_with(
            seed,
            seed,
            1 << 40,
            *PublicKey::from(&wg_secret(seed)).as_bytes(),
            nonce,
        )
    }

    /// An offer by client identity `id`, paid by its voucher number `voucher` (of
    /// `allowance` bytes), for the WireGuard key `wg`.
    fn offer_with(
        &self,
        id: u8,
        voucher: u8,
        allowance: u64,
        wg: [u8; 32],
        nonce: u8,
    ) -> SessionOffer {
        let client = SigningKey::from_seed(&[100u8.wrapping_add(id); 32]);
        let voucher = Voucher {
            network_id: NET,
            ledger_key: self.ledger.public_key(),
            client_key: client.public_key(),
            nonce: [voucher; 16],
            budget_micros: allowance,
            max_price_micros_per_gib: 1 << 30,
            issued_at: UNIX - 10,
            expires_at: UNIX + 86_400,
            signature: Signature::ZERO,
        }
        .sign(&self.ledger);
        SessionOffer {
            network_id: NET,
            relay_key: self.relay_id.public_key(),
            client_key: client.public_key(),
            client_wg_key: wg,
            nonce: [nonce; 16],
            created_at: UNIX,
            voucher,
            signature: Signature::ZERO,
        }
        .sign(&client)
    }

    /// Admits client `seed` (one `with_hook` step) and completes its WireGuard handshake.
    fn admit(&mut self, seed: u8, nonce: u8) -> Client {
        let offer = self.offer(seed, nonce);
        let now = self.now;
        self.admitted += 1;
        let mut sid = [0u8; 16];
        sid[..4].copy_from_slice(&self.admitted.to_be_bytes());
        let (id, paid) = self
            .relay
            .with_hook(|r, s: &mut PaidSessions| s.admit(r, &offer, SessionId(sid), 0, now, UNIX))
            .unwrap()
            .unwrap();
        assert_eq!(self.relay.peer_kind(id), Some(PeerKind::Paid));
        let mut c = Client {
            seed,
            tunn: Tunn::new(
                wg_secret(seed),
                self.relay.public_key(),
                None,
                None,
                u32::from(seed),
                None,
            ),
            addr: format!("198.51.100.{seed}:40000").parse().unwrap(),
            peer: Some((id, paid)),
            last: None,
        };
        let mut buf = vec![0u8; 2048];
        let init = match c.tunn.format_handshake_initiation(&mut buf, true) {
            TunnResult::WriteToNetwork(b) => b.to_vec(),
            other => panic!("{other:?}"),
        };
        let resp = match self.relay.handle_udp(c.addr, &init, now, &mut buf) {
            Action::SendUdp { bytes, .. } => bytes.to_vec(),
            other => panic!("no handshake response: {other:?}"),
        };
        let mut out = vec![0u8; 2048];
        match c
            .tunn
            .decapsulate(Some(sa(RELAY_ADDR).ip()), &resp, &mut out)
        {
            TunnResult::WriteToNetwork(k) => {
                let k = k.to_vec();
                assert_eq!(
                    self.relay.handle_udp(c.addr, &k, now, &mut buf),
                    Action::Done
                );
            }
            other => panic!("{other:?}"),
        }
        c
    }

    /// One upstream packet of `len` bytes from client `c` (after its session ended: on the
    /// old tunnel, which must get nothing through); counts it if the relay forwards it.
    fn up(&mut self, c: &mut Client, len: usize) -> Option<DropReason> {
        let live = c.peer.is_some();
        let (_, paid) = c.peer.as_ref().or(c.last.as_ref())?;
        let pkt = udp(IpAddr::V4(paid.v4?), "1.1.1.1".parse().unwrap(), 443, len);
        let mut sealed = vec![0u8; 2048];
        let dg = match c.tunn.encapsulate(&pkt, &mut sealed) {
            TunnResult::WriteToNetwork(b) => b.to_vec(),
            other => panic!("{other:?}"),
        };
        let mut buf = vec![0u8; 2048];
        match self.relay.handle_udp(c.addr, &dg, self.now, &mut buf) {
            Action::WriteTun(p) => {
                assert!(live, "a client whose session ended got a packet through");
                *self.forwarded.entry(paid.session).or_default() += p.len() as u64;
                None
            }
            Action::Drop(r) => Some(r),
            other => panic!("{other:?}"),
        }
    }

    /// One downstream packet of `len` bytes to client `c`'s address.
    fn down(&mut self, c: &Client, len: usize) -> Option<DropReason> {
        let (_, paid) = c.peer.as_ref()?;
        let pkt = udp("1.1.1.1".parse().unwrap(), IpAddr::V4(paid.v4?), 40000, len);
        let mut buf = vec![0u8; 2048];
        match self.relay.handle_tun(&pkt, self.now, &mut buf) {
            Action::SendUdp { bytes, .. } if bytes[0] == 4 => {
                *self.forwarded.entry(paid.session).or_default() += pkt.len() as u64;
                None
            }
            Action::Drop(r) => Some(r),
            other => panic!("{other:?}"),
        }
    }

    /// Ends `c`'s session in one step, taking its meter total in the same step.
    fn end(&mut self, c: &mut Client) {
        let Some((id, paid)) = c.peer.take() else {
            return;
        };
        c.last = Some((id, paid.clone()));
        let total = self
            .relay
            .with_hook(|r, s: &mut PaidSessions| {
                let t = s.hub.session(id).map(|x| x.meter().total());
                assert!(s.end(r, id).is_some());
                t
            })
            .unwrap()
            .unwrap();
        self.ended.insert(paid.session, total);
    }

    fn meter_total(&self, session: SessionId, id: PeerId) -> u64 {
        self.relay
            .hook::<PaidSessions>()
            .and_then(|s| s.hub.session(id))
            .filter(|x| x.session_id() == session)
            .map_or(0, |x| x.meter().total())
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An IPv4/UDP packet of exactly `len` bytes (at least 28).
fn udp(src: IpAddr, dst: IpAddr, port: u16, len: usize) -> Vec<u8> {
    let payload = vec![0x5a; len.max(28) - 28];
    ferry_metering::udp_packet(
        SocketAddr::new(src, 40000),
        SocketAddr::new(dst, port),
        &payload,
    )
    .unwrap()
}

fn trusted(seed: u8, ip: &str) -> PeerConfig {
    PeerConfig {
        public_key: PublicKey::from(&wg_secret(seed)),
        allowed_ips: vec![ip.parse().unwrap()],
        preshared_key: None,
        persistent_keepalive: None,
    }
}

#[test]
fn a_paid_peer_whose_session_is_gone_forwards_nothing() {
    let mut lab = Lab::new();
    let mut c = lab.admit(10, 1);
    assert_eq!(lab.up(&mut c, 200), None);
    assert_eq!(lab.down(&c, 300), None);
    let (id, paid) = c.peer.clone().unwrap();
    assert_eq!(lab.meter_total(paid.session, id), 500);
    // The state the old agent passed through while ending a session: the hub had forgotten
    // the session, the relay still had the peer. Now that is fail-closed in both directions.
    lab.relay
        .with_hook(|_, s: &mut PaidSessions| s.hub.remove(id))
        .unwrap();
    assert_eq!(lab.up(&mut c, 200), Some(DropReason::PaidNoSession));
    assert_eq!(lab.down(&c, 300), Some(DropReason::PaidNoSession));
    assert_eq!(lab.forwarded[&paid.session], 500);
    assert_eq!(lab.relay.stats().drops(DropReason::PaidNoSession), 2);
    // Without the hook at all, a paid peer is dropped too (no metering, no forwarding).
    let mut bare = crate::test_support::relay(4);
    let pid = bare
        .add_peer_as(trusted(11, "10.77.0.9/32"), PeerKind::Paid)
        .unwrap();
    let pkt = udp(
        "1.1.1.1".parse().unwrap(),
        "10.77.0.9".parse().unwrap(),
        1,
        100,
    );
    let mut buf = vec![0u8; 2048];
    // (no endpoint yet: the route and kind are checked first)
    assert!(matches!(
        bare.handle_tun(&pkt, lab.now, &mut buf),
        Action::Drop(DropReason::NoEndpoint | DropReason::PaidNoSession)
    ));
    assert_eq!(bare.peer_kind(pid), Some(PeerKind::Paid));
}

#[test]
fn ending_sessions_and_reloading_peers_while_packets_flow_bills_every_byte_and_loses_no_paid_peer()
{
    let mut lab = Lab::new();
    let mut clients: Vec<Client> = (0..6).map(|i| lab.admit(20 + i, 1)).collect();
    let configs = [
        vec![trusted(50, "10.77.0.200/32"), trusted(51, "10.77.0.201/32")],
        vec![trusted(51, "10.77.0.201/32"), trusted(52, "10.77.0.202/32")],
        vec![],
    ];
    // xorshift64: a fixed schedule, the same on every run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut nonce = 2u8;
    let (mut ends, mut reloads, mut readmits, mut dropped) = (0, 0, 0, 0u64);
    for step in 0..4000u32 {
        let r = next();
        let i = (r % clients.len() as u64) as usize;
        let len = 28 + (r >> 8) as usize % 1200;
        match (r >> 32) % 100 {
            0..=44 => {
                dropped += u64::from(lab.up(&mut clients[i], len).is_some());
            }
            45..=89 => {
                dropped += u64::from(lab.down(&clients[i], len).is_some());
            }
            90..=93 => {
                if clients[i].peer.is_some() {
                    lab.end(&mut clients[i]);
                    ends += 1;
                }
            }
            94..=96 => {
                let report = lab
                    .relay
                    .sync_trusted(&configs[step as usize % configs.len()]);
                assert!(report.failed.is_empty(), "{report:?}");
                reloads += 1;
            }
            _ => {
                if clients[i].peer.is_none() {
                    nonce = nonce.wrapping_add(1);
                    clients[i] = lab.admit(clients[i].seed, nonce);
                    readmits += 1;
                }
            }
        }
        lab.now += Duration::from_millis(5);
        // No paid peer lost: every live session still has its paid peer and its hub entry.
        for c in &clients {
            if let Some((id, paid)) = &c.peer {
                assert_eq!(
                    lab.relay.peer_kind(*id),
                    Some(PeerKind::Paid),
                    "step {step}"
                );
                let s = lab.relay.hook::<PaidSessions>().unwrap();
                assert_eq!(s.peers.get(id).map(|p| p.session), Some(paid.session));
                assert!(s.hub.session(*id).is_some());
            }
        }
    }
    assert!(
        ends > 50 && reloads > 50 && readmits > 50,
        "{ends} {reloads} {readmits}"
    );
    // 0 unbilled bytes: what the relay forwarded for each session is exactly what its meter
    // counted, for ended and live sessions alike.
    let mut live = BTreeMap::new();
    for c in &clients {
        if let Some((id, paid)) = &c.peer {
            live.insert(paid.session, lab.meter_total(paid.session, *id));
        }
    }
    let mut sessions = 0;
    for (session, bytes) in &lab.forwarded {
        let metered = lab.ended.get(session).or(live.get(session)).copied();
        assert_eq!(metered, Some(*bytes), "session {session}");
        sessions += 1;
    }
    assert!(sessions > 50, "{sessions} sessions carried traffic");
    // Old tunnels of ended sessions kept sending: all of it was dropped (asserted in `up`).
    assert!(dropped > 100, "{dropped} packets dropped");
}

#[test]
fn allocation_skips_own_and_taken_addresses() {
    let mut relay = crate::test_support::relay(10);
    let subnets: Vec<IpNet> = vec![
        "10.77.0.1/24".parse().unwrap(),
        "fd77::1/64".parse().unwrap(),
    ];
    let own: Vec<IpAddr> = subnets.iter().map(IpNet::addr).collect();
    let mut alloc = Allocator::new(&subnets, &own);
    // Paid addresses come from the paid pool (.64 on in a /24), never the trusted peers'.
    let (v4, v6) = alloc.allocate(&relay).unwrap();
    assert_eq!(v4, Some(Ipv4Addr::new(10, 77, 0, 64)));
    assert_eq!(v6, "fd77::4000:0:0:0".parse().ok());
    relay
        .add_peer(PeerConfig {
            public_key: PublicKey::from([9u8; 32]),
            allowed_ips: vec![
                "10.77.0.64/31".parse().unwrap(),
                "fd77::4000:0:0:1/128".parse().unwrap(),
            ],
            preshared_key: None,
            persistent_keepalive: None,
        })
        .unwrap();
    let (v4, v6) = alloc.allocate(&relay).unwrap();
    assert_eq!(v4, Some(Ipv4Addr::new(10, 77, 0, 66)));
    assert_eq!(v6, "fd77::4000:0:0:2".parse().ok());
    // A whole run of paid sessions never enters the trusted pool.
    let mut alloc = Allocator::new(&subnets, &own);
    for _ in 0..100 {
        let (v4, _) = alloc.allocate(&relay).unwrap();
        assert!(v4.unwrap().octets()[3] >= 64, "{v4:?}");
    }
    let tiny: Vec<IpNet> = vec!["10.77.0.1/32".parse().unwrap()];
    assert!(Allocator::new(&tiny, &own).allocate(&relay).is_none());
}

/// Admits `offer` directly (no handshake), with a fresh session id.
fn admit_offer(lab: &mut Lab, offer: &SessionOffer) -> Result<(PeerId, PaidPeer), AdmitError> {
    lab.admitted += 1;
    let mut sid = [0u8; 16];
    sid[..4].copy_from_slice(&lab.admitted.to_be_bytes());
    let now = lab.now;
    lab.relay
        .with_hook(|r, s: &mut PaidSessions| s.admit(r, offer, SessionId(sid), 0, now, UNIX))
        .unwrap()
}

/// A distinct WireGuard public key per `i`.
fn wg_key(i: u32) -> [u8; 32] {
    let mut b = [7u8; 32];
    b[1..5].copy_from_slice(&i.to_le_bytes()); // byte 0 is clamped by X25519
    *PublicKey::from(&StaticSecret::from(b)).as_bytes()
}

#[test]
fn a_voucher_and_an_identity_hold_at_most_their_cap_of_live_sessions() {
    let mut lab = Lab::with_limits(SessionLimits::default());
    // Client 1, voucher A: two sessions (two devices), the third is refused.
    for i in 0..2 {
        let o = lab.offer_with(1, 1, 1 << 30, wg_key(i), 1);
        let r = admit_offer(&mut lab, &o);
        assert!(r.is_ok(), "{:?}", r.err());
    }
    let third = lab.offer_with(1, 1, 1 << 30, wg_key(2), 1);
    assert_eq!(
        admit_offer(&mut lab, &third).err(),
        Some(AdmitError::Capped)
    );
    // Another voucher of the same identity does not lift the per-client cap.
    let other = lab.offer_with(1, 2, 1 << 30, wg_key(3), 1);
    assert_eq!(
        admit_offer(&mut lab, &other).err(),
        Some(AdmitError::Capped)
    );
    // Another client is unaffected; ending a session frees a place.
    let o = lab.offer_with(2, 9, 1 << 30, wg_key(4), 1);
    assert!(admit_offer(&mut lab, &o).is_ok());
    // The first paid address of 10.77.0.0/24 (its paid pool starts at .64).
    let first = lab
        .relay
        .route_owner("10.77.0.64".parse().unwrap())
        .unwrap();
    lab.relay
        .with_hook(|r, s: &mut PaidSessions| s.end(r, first))
        .unwrap();
    assert!(admit_offer(&mut lab, &third).is_ok());
    assert_eq!(lab.relay.peers().count(), 3);
}

#[test]
fn a_voucher_whose_allowance_left_cannot_pay_the_minimum_is_refused() {
    let mut lab = Lab::with_limits(SessionLimits::default());
    let tiny = lab.offer_with(1, 1, 1, wg_key(1), 1);
    assert_eq!(
        admit_offer(&mut lab, &tiny).err(),
        Some(AdmitError::Rejected(
            SessionRejectReason::AllowanceExhausted
        ))
    );
    assert_eq!(lab.relay.peers().count(), 0, "nothing left behind");
}

#[test]
fn sessions_that_never_carried_traffic_are_closed_after_the_timeout() {
    let mut lab = Lab::with_limits(SessionLimits {
        per_voucher: 8,
        per_client: 8,
        ..SessionLimits::default()
    });
    let mut used = lab.admit(30, 1);
    let idle = lab.admit(31, 1);
    assert_eq!(lab.up(&mut used, 300), None);
    let timeout = SessionLimits::default().unused_timeout;
    let now = lab.now;
    let early = lab
        .relay
        .with_hook(|r, s: &mut PaidSessions| s.expire_unused(r, now + timeout / 2))
        .unwrap();
    assert!(early.is_empty());
    let ended = lab
        .relay
        .with_hook(|r, s: &mut PaidSessions| s.expire_unused(r, now + timeout))
        .unwrap();
    let idle_session = idle.peer.as_ref().unwrap().1.session;
    assert_eq!(
        ended.iter().map(|p| p.session).collect::<Vec<_>>(),
        vec![idle_session]
    );
    assert_eq!(lab.relay.peers().count(), 1, "the used session stays");
    assert_eq!(lab.up(&mut used, 300), None);
}

#[test]
fn a_flood_of_hellos_on_one_cheap_voucher_is_capped_and_a_real_client_still_gets_in() {
    let mut lab = Lab::with_limits(SessionLimits::default());
    let mut accepted = 0;
    for i in 0..1000 {
        // The same 1-MiB voucher, a new WireGuard key (and source) each time.
        let o = lab.offer_with(66, 66, 1 << 20, wg_key(10_000 + i), (i % 250) as u8);
        if admit_offer(&mut lab, &o).is_ok() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, SessionLimits::default().per_voucher);
    assert_eq!(lab.relay.peers().count(), accepted);
    let mut real = lab.admit(40, 1);
    assert_eq!(
        lab.up(&mut real, 500),
        None,
        "a paying client connects and is forwarded"
    );
}

#[test]
fn allocation_costs_about_one_lookup_per_session_even_with_many_peers() {
    let mut lab = Lab::with_limits(SessionLimits {
        per_voucher: 2000,
        per_client: 2000,
        ..SessionLimits::default()
    });
    for i in 0..60 {
        let o = lab.offer_with(1, 1, 1 << 30, wg_key(i), 1);
        admit_offer(&mut lab, &o).unwrap();
    }
    let probes = lab
        .relay
        .hook::<PaidSessions>()
        .map(|s| s.alloc.probes)
        .unwrap();
    // Two families (v4 + v6) per admission: one probe each, nothing rescanned (the relay's
    // own .1 and ::1 are in the trusted pool, never probed).
    assert_eq!(probes, 60 * 2, "{probes} probes for 60 admissions");
}

#[test]
fn offers_wait_for_the_relays_price_and_a_voucher_below_it_is_refused() {
    // No price yet (the network price not learned): offers are refused as busy, nothing kept.
    let mut lab = Lab::priced(SessionLimits::default());
    let offer = lab.offer(50, 1);
    assert!(matches!(
        admit_offer(&mut lab, &offer),
        Err(AdmitError::Rejected(SessionRejectReason::Busy))
    ));
    assert_eq!(lab.relay.peers().count(), 0);
    // Above the voucher's max price (2^30): refused with the reason the client can show.
    lab.relay
        .with_hook(|_, s: &mut PaidSessions| s.set_price((1 << 30) + 1))
        .unwrap();
    assert!(matches!(
        admit_offer(&mut lab, &offer),
        Err(AdmitError::Rejected(SessionRejectReason::PriceAboveMax))
    ));
    assert_eq!(lab.relay.peers().count(), 0);
    // At half the max price the accept says so, and the budget buys twice the bytes.
    lab.relay
        .with_hook(|_, s: &mut PaidSessions| s.set_price(1 << 29))
        .unwrap();
    let (_, paid) = admit_offer(&mut lab, &offer).unwrap();
    assert_eq!(paid.accept.price_micros_per_gib, 1 << 29);
    assert_eq!(offer.voucher.bytes_at(1 << 29, 0), 2 << 40);
}
