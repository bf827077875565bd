//! Exponential backoff with jitter; randomness is passed in.

use std::time::Duration;

/// Delays grow ×2 per failure from `base` up to `max`; each delay is drawn uniformly from
/// `[cap/2, cap]` ("equal jitter") so many relays restarting together do not stampede
/// the ledger in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            failures: 0,
        }
    }

    /// The delay after one more failure; `random` is any uniformly random u64.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let shift = self.failures.min(30);
        self.failures = self.failures.saturating_add(1);
        let cap = self
            .base
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max)
            .min(self.max);
        let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX).max(1);
        let half = cap_ms / 2;
        Duration::from_millis(half + random % (cap_ms - half + 1))
    }

    /// Call after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_stay_within_jitter_bounds_and_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut caps = Vec::new();
        for i in 0..12u64 {
            let lo = b.next_delay(0);
            caps.push(lo);
            let mut b2 = b.clone();
            b2.failures -= 1;
            let hi = b2.next_delay(u64::MAX - i);
            assert!(
                hi >= lo && hi <= lo * 2 + Duration::from_millis(1),
                "{lo:?} {hi:?}"
            );
        }
        assert_eq!(caps[0], Duration::from_millis(50));
        assert_eq!(caps[1], Duration::from_millis(100));
        assert_eq!(caps[11], Duration::from_millis(2500));
        b.reset();
        assert_eq!(b.next_delay(0), Duration::from_millis(50));
    }
}
