//! Ferry's one token bucket, driven by caller-supplied time (GCRA form: one `Instant` of
//! state per bucket). Used by the relay core (per-client rate limits, per-source handshake
//! admission) and metering (the throttle credit mode).
//!
//! Must not: read clocks or do I/O (`now` is an argument; this crate's `clippy.toml`).
#![warn(missing_docs)]

use std::time::{Duration, Instant};

/// A token bucket: `rate` units per second, at most `burst` units at once.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Nanoseconds one unit "costs".
    nanos_per_unit: u128,
    /// How far the theoretical arrival time may run ahead of `now` (the burst).
    tolerance: Duration,
    /// Theoretical arrival time; `None` = bucket full.
    tat: Option<Instant>,
}

impl TokenBucket {
    /// A bucket refilling `rate` units per second holding at most `burst` units (`rate` >= 1).
    pub fn new(rate: u64, burst: u64) -> Self {
        let nanos_per_unit = 1_000_000_000u128 / u128::from(rate.max(1));
        let tol = nanos_per_unit.saturating_mul(u128::from(burst.max(1)));
        Self {
            nanos_per_unit,
            tolerance: Duration::from_nanos(u64::try_from(tol).unwrap_or(u64::MAX)),
            tat: None,
        }
    }

    /// Takes `cost` units at `now` if available; returns whether they were.
    pub fn try_take(&mut self, now: Instant, cost: u64) -> bool {
        let (tat, inc) = self.due(now, cost);
        let Some(new_tat) = tat.checked_add(inc) else {
            return false;
        };
        if new_tat.saturating_duration_since(now) > self.tolerance {
            return false;
        }
        self.tat = Some(new_tat);
        true
    }

    /// Pacing: takes `cost` units at `now` whether or not they are there, and returns how long
    /// the caller must wait before using them so that the output conforms to the bucket
    /// (zero while the burst lasts).
    pub fn reserve(&mut self, now: Instant, cost: u64) -> Duration {
        let (tat, inc) = self.due(now, cost);
        let new_tat = tat.checked_add(inc).unwrap_or(tat);
        self.tat = Some(new_tat);
        new_tat
            .saturating_duration_since(now)
            .saturating_sub(self.tolerance)
    }

    /// How long a [`Self::reserve`] of `cost` units at `now` would tell the caller to wait,
    /// without taking them (zero = [`Self::try_take`] would succeed).
    pub fn delay(&self, now: Instant, cost: u64) -> Duration {
        let (tat, inc) = self.due(now, cost);
        tat.checked_add(inc)
            .map_or(Duration::MAX, |t| t.saturating_duration_since(now))
            .saturating_sub(self.tolerance)
    }

    /// (theoretical arrival time as of `now`, what `cost` units add to it).
    fn due(&self, now: Instant, cost: u64) -> (Instant, Duration) {
        let inc = self.nanos_per_unit.saturating_mul(u128::from(cost));
        let inc = Duration::from_nanos(u64::try_from(inc).unwrap_or(u64::MAX));
        let tat = match self.tat {
            Some(t) if t > now => t,
            _ => now,
        };
        (tat, inc)
    }

    /// Whether the bucket is full again at `now` (its state can be forgotten).
    pub fn is_full(&self, now: Instant) -> bool {
        self.tat.is_none_or(|t| t <= now)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // tests need a base instant; time is virtual after it
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(20, 5);
        let granted = (0..10).filter(|_| b.try_take(t0, 1)).count();
        assert_eq!(granted, 5);
        assert!(!b.try_take(t0 + Duration::from_millis(10), 1));
        assert!(b.try_take(t0 + Duration::from_millis(60), 1));
        // Over one second at a steady offered load of 100/s about rate (20) get through.
        let mut b = TokenBucket::new(20, 5);
        let ok = (0..100)
            .filter(|i| b.try_take(t0 + Duration::from_millis(i * 10), 1))
            .count();
        assert!((20..=26).contains(&ok), "{ok}");
        assert!(b.is_full(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn reserve_paces_to_the_rate_after_the_burst() {
        let t0 = Instant::now();
        // 1000 units/s, burst 100: the first 100 go at once, then 1 ms per unit.
        let mut b = TokenBucket::new(1000, 100);
        for _ in 0..100 {
            assert_eq!(b.reserve(t0, 1), Duration::ZERO);
        }
        assert_eq!(b.reserve(t0, 1), Duration::from_millis(1));
        assert_eq!(b.reserve(t0, 10), Duration::from_millis(11));
        // A paced sender that waits as told conforms to the bucket exactly.
        let mut b = TokenBucket::new(1000, 100);
        let mut check = TokenBucket::new(1000, 100);
        let mut t = t0;
        for _ in 0..1000 {
            t += b.reserve(t, 7);
            assert!(check.try_take(t, 7));
        }
        assert!(t >= t0 + Duration::from_millis(6900), "{:?}", t - t0);
    }

    #[test]
    fn delay_predicts_reserve_and_try_take_without_taking() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 100);
        assert_eq!(b.delay(t0, 100), Duration::ZERO);
        assert_eq!(b.delay(t0, 101), Duration::from_millis(1));
        assert!(b.try_take(t0, 100));
        assert_eq!(b.delay(t0, 5), Duration::from_millis(5));
        assert_eq!(
            b.delay(t0, 5),
            Duration::from_millis(5),
            "delay takes nothing"
        );
        assert!(!b.try_take(t0, 5));
        assert_eq!(b.reserve(t0, 5), Duration::from_millis(5));
        assert_eq!(
            b.delay(t0 + Duration::from_millis(105), 100),
            Duration::ZERO
        );
    }

    #[test]
    fn byte_bucket_limits_throughput() {
        let t0 = Instant::now();
        // 1 Mbit/s = 125_000 B/s, 10 KB burst; offer 1500 B every ms for 1 s (1.5 MB).
        let mut b = TokenBucket::new(125_000, 10_000);
        let passed: u64 = (0..1000)
            .filter(|i| b.try_take(t0 + Duration::from_millis(*i), 1500))
            .count() as u64;
        let bytes = passed * 1500;
        assert!((120_000..=140_000).contains(&bytes), "{bytes}");
    }

    #[test]
    fn bucket_allows_rate_times_time_plus_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 1000);
        let mut taken = 0u64;
        for ms in 0..=10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            while b.try_take(now, 100) {
                taken += 100;
            }
        }
        // 10 s at 1000 B/s plus the initial 1000 B burst.
        assert!(taken <= 11_000, "{taken}");
        assert!(taken >= 10_900, "{taken}");
    }
}
