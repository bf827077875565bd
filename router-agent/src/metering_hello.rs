//! The public Hello listener (UDP, default port 51821 on the WireGuard listen address): a
//! paying client is not yet a WireGuard peer when it offers a session, so `Hello` arrives
//! outside the tunnel. The offer is verified offline (network, relay key, client signature,
//! voucher signed by the ledger key and unexpired, allowance left on this relay); then the
//! client's WireGuard key is added as a peer with tunnel addresses allocated from the relay's
//! subnets, the session is stored (fsync) and only then `Accept` + `Address` are sent.
//! Each reply datagram is smaller than the 399-byte Hello (the three together are 570 bytes,
//! only for an offer that verifies, rate-limited per source). A repeated Hello (lost
//! Accept) gets the same answer; a new, verified offer from the same client identity and
//! WireGuard key replaces the old session (an offer that does not verify changes nothing).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use ferry_metering::{Message, SessionRejectReason, decode, encode};
use ferry_receipts::{SessionId, SessionOffer, VerifyError};
use ferry_relay_core::PeerId;
use ferry_relay_io::SharedRelay;
use ferry_store::{Record, SessionOpen};
use tokio::net::UdpSocket;

use crate::metering::{PaidPeer, Shared, encode_addrs, end_session, lock, with_sessions};
use crate::sessions::{AdmitError, PaidSessions};

/// Hellos per second per source address (each costs two Ed25519 verifications); a client
/// repeats its Hello every ~2 s, so this only bites floods.
const HELLO_PER_SEC: u32 = 5;
/// Sources tracked at once; beyond this the table starts over.
const HELLO_SOURCES: usize = 4096;

/// Per-source Hello budget: `HELLO_PER_SEC` per one-second window.
#[derive(Debug, Default)]
pub(crate) struct HelloLimiter {
    windows: HashMap<IpAddr, (Instant, u32)>,
}

impl HelloLimiter {
    /// True if a Hello from `src` may be processed now.
    pub(crate) fn allow(&mut self, src: IpAddr, now: Instant) -> bool {
        if self.windows.len() >= HELLO_SOURCES && !self.windows.contains_key(&src) {
            self.windows
                .retain(|_, (t, _)| now.saturating_duration_since(*t).as_secs() < 1);
            if self.windows.len() >= HELLO_SOURCES {
                self.windows.clear();
            }
        }
        let w = self.windows.entry(src).or_insert((now, 0));
        if now.saturating_duration_since(w.0).as_secs() >= 1 {
            *w = (now, 0);
        }
        w.1 += 1;
        w.1 <= HELLO_PER_SEC
    }
}

pub(crate) async fn run(sock: UdpSocket, shared: Arc<Shared>, relay: SharedRelay) {
    let mut buf = vec![0u8; 2048];
    let mut limiter = HelloLimiter::default();
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "hello socket receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if !limiter.allow(from.ip(), Instant::now()) {
            tracing::trace!("Hello rate limit");
            continue;
        }
        let replies = match decode(&buf[..n]) {
            Ok(Message::Hello(offer)) => on_hello(&shared, &relay, offer).await,
            // The directory checking that this port is reachable: one signature, no state.
            // A client's ping (`--auto` measuring round trips): the same answer, not counted.
            Ok(Message::Probe(c)) => {
                // A relay that is not sharing now (paused, quota, schedule) is not offering:
                // clients looking for one get no answer.
                if c.is_ping() && shared.not_sharing().is_some() {
                    continue;
                }
                let answer = shared.identity.answer_probe(&c, unix_now());
                if !c.is_ping() {
                    lock(&shared.directory).probe(answer.is_some());
                }
                answer.into_iter().collect()
            }
            _ => {
                tracing::trace!("datagram on the Hello port that is no Hello or probe dropped");
                continue;
            }
        };
        for m in replies {
            if let Err(e) = sock.send_to(&encode(&m), from).await {
                tracing::debug!(error = %e, "hello reply send failed");
            }
        }
    }
}

use ferry_store::unix_now;

fn reject_reason(e: VerifyError) -> SessionRejectReason {
    match e {
        VerifyError::WrongNetwork => SessionRejectReason::WrongNetwork,
        VerifyError::WrongKey => SessionRejectReason::WrongKey,
        VerifyError::Expired => SessionRejectReason::VoucherExpired,
        _ => SessionRejectReason::BadSignature,
    }
}

/// The signed Accept + Address answering the Hello that opened `p`.
/// The signed Accept + Tunnel + Address answering the Hello that opened `p` (the Address
/// last: a client has all three when it completes).
fn accepted(shared: &Shared, p: &PaidPeer) -> Vec<Message> {
    let v4 = shared.own.iter().find_map(|a| match a {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(_) => None,
    });
    let v6 = shared.own.iter().find_map(|a| match a {
        IpAddr::V6(a) => Some(*a),
        IpAddr::V4(_) => None,
    });
    let dns = if shared.dns {
        (u8::from(v4.is_some()) * ferry_receipts::TUNNEL_DNS_V4)
            | (u8::from(v6.is_some()) * ferry_receipts::TUNNEL_DNS_V6)
    } else {
        0
    };
    vec![
        Message::Accept(p.accept.clone()),
        shared.identity.tunnel(&p.accept, v4, v6, shared.mtu, dns),
        shared.identity.address(&p.offer, &p.accept, p.v4, p.v6),
    ]
}

/// What a Hello from a key already in the peer table means.
enum Known {
    /// A trusted peer from the config: never billed, no session.
    Trusted,
    /// The same offer again (our Accept was lost): the same answer.
    Repeat(Box<PaidPeer>),
    /// A paid peer with another offer: replaced only by a verified offer of the same client.
    Paid(PeerId, Box<PaidPeer>),
}

async fn on_hello(shared: &Shared, relay: &SharedRelay, offer: SessionOffer) -> Vec<Message> {
    let (now, unix) = (Instant::now(), unix_now());
    let known = {
        let r = lock(relay);
        r.peer_by_key(&offer.client_wg_key).map(|id| {
            match r.hook::<PaidSessions>().and_then(|s| s.peers.get(&id)) {
                None => Known::Trusted,
                Some(p) if p.offer == offer => Known::Repeat(Box::new(p.clone())),
                Some(p) => Known::Paid(id, Box::new(p.clone())),
            }
        })
    };
    let id = &shared.identity;
    // Verify before anything changes: an offer that does not verify never touches a session.
    if let Err(e) = offer.verify(&id.network_id, &id.key.public_key(), &id.ledger_key, unix) {
        tracing::debug!(error = %e, "session offer refused");
        return match known {
            Some(Known::Trusted) => Vec::new(),
            _ => vec![id.reject(&offer, reject_reason(e))],
        };
    }
    match known {
        None => {}
        Some(Known::Trusted) => {
            tracing::debug!("Hello from a trusted peer's key ignored");
            return Vec::new();
        }
        Some(Known::Repeat(p)) => return accepted(shared, &p),
        Some(Known::Paid(peer, p)) => {
            if p.offer.client_key != offer.client_key {
                tracing::debug!(
                    "Hello for a paid peer's WireGuard key from another client identity refused"
                );
                return vec![id.reject(&offer, SessionRejectReason::Busy)];
            }
            tracing::info!(session = %p.session, "client opened a new session; old one ends");
            end_session(shared, relay, peer).await;
        }
    }
    let spent = lock(&shared.store).voucher_spent_micros(&offer.voucher.id());
    let Some(session_id) = random_session_id() else {
        return vec![id.reject(&offer, SessionRejectReason::Busy)];
    };
    if with_sessions(relay, |_, s| s.priced()) == Some(false) {
        if let Some(p) = crate::metering::network_price(shared).await {
            with_sessions(relay, |_, s| s.set_price(p));
        }
    }
    // Under the relay lock, like the sharing watcher's close_all: a session is either refused
    // here or admitted before it and closed by it.
    let admitted = with_sessions(relay, |r, s| {
        if let Some(reason) = shared.not_sharing().and_then(|s| s.reject_reason()) {
            return Err(AdmitError::Rejected(reason));
        }
        s.admit(r, &offer, session_id, spent, now, unix)
    });
    let (peer, paid) = match admitted {
        Some(Ok(x)) => x,
        Some(Err(AdmitError::Rejected(reason))) => return vec![id.reject(&offer, reason)],
        Some(Err(AdmitError::Capped)) => {
            tracing::info!(
                "paid client refused: its voucher or identity has the maximum of live sessions"
            );
            return vec![id.reject(&offer, SessionRejectReason::Busy)];
        }
        Some(Err(AdmitError::Full)) | None => {
            tracing::warn!("paid client not admitted: peer table or tunnel subnets full");
            return vec![id.reject(&offer, SessionRejectReason::Busy)];
        }
    };
    let record = Record::SessionOpen(Box::new(SessionOpen {
        accept: paid.accept.clone(),
        offer: offer.clone(),
        extra: encode_addrs(paid.v4, paid.v6),
    }));
    // The Accept commits us to the session: store it first (fsync).
    if let Err(e) = shared.persister.persist(vec![record]).await {
        tracing::warn!(error = %e, "session not stored; offer refused");
        with_sessions(relay, |r, s| s.end(r, peer));
        return vec![id.reject(&offer, SessionRejectReason::Busy)];
    }
    tracing::info!(session = %session_id, peer = peer.get(), "paid session opened");
    tracing::debug!(v4 = ?paid.v4, v6 = ?paid.v6, "paid client tunnel addresses");
    accepted(shared, &paid)
}

fn random_session_id() -> Option<SessionId> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).ok()?;
    Some(SessionId(b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn hello_limiter_allows_a_few_per_second_per_source() {
        let mut l = HelloLimiter::default();
        let t0 = Instant::now();
        let (a, b): (IpAddr, IpAddr) = (
            "198.51.100.2".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        let allowed = (0..20).filter(|_| l.allow(a, t0)).count();
        assert_eq!(allowed, HELLO_PER_SEC as usize);
        assert!(l.allow(b, t0), "other sources are unaffected");
        assert!(!l.allow(a, t0 + std::time::Duration::from_millis(900)));
        assert!(l.allow(a, t0 + std::time::Duration::from_secs(1)));
        for i in 0..(HELLO_SOURCES as u32 + 10) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(l.allow(ip, t0));
        }
        assert!(l.windows.len() <= HELLO_SOURCES);
    }
}
