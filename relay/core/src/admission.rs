//! Handshake admission: MAC1 on every handshake message; under load, a per-source bucket and a
//! relay-wide Diffie-Hellman budget decide who is processed at once and who must first prove
//! its address with a WireGuard cookie (MAC2).
//!
//! Why not plain WireGuard behaviour (a cookie for everyone under load): the initiator stores
//! the cookie and sends MAC2 only with its next retransmission, 5 s (REKEY_TIMEOUT) later, so
//! every legitimate handshake during a flood took more than 5 s. Here a source within its
//! bucket (20/s, burst 5; IPv4 address or IPv6 /64, like kernel WireGuard) is processed without
//! a cookie while the global budget lasts. A flood from a few sources is capped by their buckets
//! and never spends the budget; a flood spoofing many sources spends it, and then everyone gets
//! cookies (standard WireGuard). MAC2-proven sources are rate limited by their own buckets,
//! which spoofed traffic cannot drain.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, TunnResult};
use boringtun::x25519::PublicKey;

use crate::ratelimit::{SourceLimiter, TokenBucket};
use crate::stats::DropReason;

/// Handshake messages per second (all sources) above which the relay is "under load".
pub(crate) const DEFAULT_HANDSHAKE_LOAD_LIMIT: u64 = 100;
/// Default relay-wide budget of handshakes per second processed without a cookie under load.
///
/// An initiation from an unknown key costs one X25519 operation here, a known peer's about
/// four (boringtun's handshake); 1000/s is ~5 % of one x86-64 core in an optimised build and
/// leaves room on the 2-core test machine; slow routers should configure less. On 32-bit MIPS
/// (the 8–16 MB-flash routers: a 24Kc/1004Kc core at 580–880 MHz, where curve25519-dalek's
/// 32-bit backend needs on the order of a millisecond per X25519 — an estimate, no such
/// hardware here) the default is 100/s, i.e. roughly a tenth of that core.
pub const DEFAULT_HANDSHAKE_BUDGET: u64 = if cfg!(target_arch = "mips") {
    100
} else {
    1000
};
/// Per-source handshake bucket while under load (kernel WireGuard's numbers).
const SOURCE_RATE: u64 = 20;
const SOURCE_BURST: u64 = 5;
const SOURCE_TABLE_MAX: usize = 16_384;

/// What to do with one handshake message.
pub(crate) enum Admission<'a> {
    /// Process it (MAC1 valid; not under load, or within the bucket and budget, or MAC2 proven).
    Process(Packet<'a>),
    /// Send the cookie reply of this many bytes (written to the output buffer) to the source.
    Cookie(usize),
    /// Drop it for this reason.
    Drop(DropReason),
}

pub(crate) struct HandshakeAdmission {
    /// Checks MAC1 only (never "under load"); shared with every peer's `Tunn`.
    mac1: Arc<RateLimiter>,
    /// Always "under load": checks MAC2 and formats cookie replies.
    cookie: RateLimiter,
    /// Unproven sources (any handshake under load).
    sources: SourceLimiter,
    /// Sources that proved their address with MAC2 (spoofed traffic cannot drain these).
    proven: SourceLimiter,
    /// Relay-wide budget for handshakes processed without a cookie under load (`None` = 0).
    budget: Option<TokenBucket>,
    load_window: Option<Instant>,
    load_count: u64,
    load_limit: u64,
}

impl HandshakeAdmission {
    pub(crate) fn new(public: &PublicKey) -> Self {
        Self {
            mac1: Arc::new(RateLimiter::new(public, u64::MAX)),
            cookie: RateLimiter::new(public, 0),
            sources: SourceLimiter::new(SOURCE_RATE, SOURCE_BURST, SOURCE_TABLE_MAX),
            proven: SourceLimiter::new(SOURCE_RATE, SOURCE_BURST, SOURCE_TABLE_MAX),
            budget: budget_bucket(DEFAULT_HANDSHAKE_BUDGET),
            load_window: None,
            load_count: 0,
            load_limit: DEFAULT_HANDSHAKE_LOAD_LIMIT,
        }
    }

    /// The MAC1-only limiter to hand to every `Tunn`.
    pub(crate) fn tunn_limiter(&self) -> Arc<RateLimiter> {
        self.mac1.clone()
    }

    /// Sets the budget (handshakes per second processed without a cookie under load; 0 = none,
    /// i.e. plain WireGuard: a cookie for every new handshake under load).
    pub(crate) fn set_budget(&mut self, per_sec: u64) {
        self.budget = budget_bucket(per_sec);
    }

    /// Decides about one handshake message from `src`; a cookie reply is written to `out`
    /// (at least 64 bytes).
    pub(crate) fn admit<'a>(
        &mut self,
        src: IpAddr,
        datagram: &'a [u8],
        now: Instant,
        out: &mut [u8],
    ) -> Admission<'a> {
        let under_load = self.note_handshake(now);
        let packet = match self.mac1.verify_packet(Some(src), datagram, out) {
            Ok(p) => p,
            Err(TunnResult::Err(e)) => return Admission::Drop(DropReason::from_wg(&e)),
            Err(_) => return Admission::Drop(DropReason::Protocol),
        };
        if !under_load {
            return Admission::Process(packet);
        }
        // Within the source's bucket and the global budget: no cookie round trip.
        if self.sources.allow(src, now) && self.budget.as_mut().is_some_and(|b| b.try_take(now, 1))
        {
            return Admission::Process(packet);
        }
        match self.cookie.verify_packet(Some(src), datagram, out) {
            Ok(p) if self.proven.allow(src, now) => Admission::Process(p),
            Ok(_) => Admission::Drop(DropReason::HandshakeRateLimit),
            Err(TunnResult::WriteToNetwork(c)) => Admission::Cookie(c.len()),
            Err(TunnResult::Err(e)) => Admission::Drop(DropReason::from_wg(&e)),
            Err(_) => Admission::Drop(DropReason::Protocol),
        }
    }

    /// Forgets refilled source buckets; call from the relay's timer.
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.sources.sweep(now);
        self.proven.sweep(now);
    }

    /// Counts one handshake message in the current one-second window; true if under load.
    fn note_handshake(&mut self, now: Instant) -> bool {
        match self.load_window {
            Some(start) if now.saturating_duration_since(start) < Duration::from_secs(1) => {}
            _ => {
                self.load_window = Some(now);
                self.load_count = 0;
            }
        }
        self.load_count += 1;
        self.load_count > self.load_limit
    }
}

/// Budget bucket: `per_sec` per second, bursts of a tenth of a second (at least 1).
fn budget_bucket(per_sec: u64) -> Option<TokenBucket> {
    (per_sec > 0).then(|| TokenBucket::new(per_sec, (per_sec / 10).max(1)))
}
