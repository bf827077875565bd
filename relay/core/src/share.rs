//! What the household shares with all paid peers together: a total rate per direction (one
//! token bucket each, beside every client's own) and a byte budget (what is left of the
//! owner's daily/monthly quota; the agent persists the quota and sets the budget).
//!
//! Trusted peers (the household's own devices) are never counted or limited here.

use std::time::{Duration, Instant};

use crate::ratelimit::TokenBucket;

/// Longest a download packet may wait for the total rate beyond the bucket's burst; later
/// ones are dropped (like a full queue on a real uplink).
pub(crate) const MAX_SHARE_WAIT: Duration = Duration::from_millis(50);

/// Total rates and the byte budget of paid traffic.
#[derive(Debug, Default)]
pub(crate) struct Share {
    /// Client → egress, all paid peers (None = not limited).
    pub(crate) up: Option<TokenBucket>,
    /// Egress → client, all paid peers.
    pub(crate) down: Option<TokenBucket>,
    /// Paid bytes (both directions) that may still be forwarded; None = no quota.
    budget: Option<u64>,
    /// Paid bytes forwarded since the relay was created (the quota's source of truth).
    used: u64,
}

impl Share {
    /// Whether `len` more paid bytes fit the budget (check before metering).
    pub(crate) fn fits(&self, len: usize) -> bool {
        self.budget.is_none_or(|b| b >= len as u64)
    }

    /// Counts `len` forwarded paid bytes (after [`Self::fits`] and metering succeeded).
    pub(crate) fn consume(&mut self, len: usize) {
        let len = len as u64;
        if let Some(b) = &mut self.budget {
            *b = b.saturating_sub(len);
        }
        self.used = self.used.saturating_add(len);
    }

    pub(crate) fn set_budget(&mut self, budget: Option<u64>) {
        self.budget = budget;
    }

    pub(crate) fn budget(&self) -> Option<u64> {
        self.budget
    }

    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// Whether an upload packet of `len` bytes fits both the client's own bucket and the
    /// total one (taking from both only if both have room).
    pub(crate) fn take_up(
        own: Option<&mut TokenBucket>,
        total: Option<&mut TokenBucket>,
        now: Instant,
        len: u64,
    ) -> Result<(), crate::stats::DropReason> {
        use crate::stats::DropReason;
        if own.as_ref().is_some_and(|b| !b.delay(now, len).is_zero()) {
            return Err(DropReason::RateLimit);
        }
        if total.as_ref().is_some_and(|b| !b.delay(now, len).is_zero()) {
            return Err(DropReason::ShareRate);
        }
        for b in [own, total].into_iter().flatten() {
            b.try_take(now, len);
        }
        Ok(())
    }
}
