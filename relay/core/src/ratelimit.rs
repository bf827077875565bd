//! Token buckets driven by caller-supplied time (GCRA form: one `Instant` of state per bucket).

use std::collections::HashMap;
use std::net::IpAddr;
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
        let inc = self.nanos_per_unit.saturating_mul(u128::from(cost));
        let inc = Duration::from_nanos(u64::try_from(inc).unwrap_or(u64::MAX));
        let tat = match self.tat {
            Some(t) if t > now => t,
            _ => now,
        };
        let Some(new_tat) = tat.checked_add(inc) else {
            return false;
        };
        if new_tat.saturating_duration_since(now) > self.tolerance {
            return false;
        }
        self.tat = Some(new_tat);
        true
    }

    /// Whether the bucket is full again at `now` (its state can be forgotten).
    pub fn is_full(&self, now: Instant) -> bool {
        self.tat.is_none_or(|t| t <= now)
    }
}

/// Handshake-initiation buckets per source (IPv4 address or IPv6 /64), like kernel WireGuard.
#[derive(Debug)]
pub(crate) struct SourceLimiter {
    rate: u64,
    burst: u64,
    max_entries: usize,
    buckets: HashMap<u128, TokenBucket>,
}

impl SourceLimiter {
    pub(crate) fn new(rate: u64, burst: u64, max_entries: usize) -> Self {
        Self {
            rate,
            burst,
            max_entries,
            buckets: HashMap::new(),
        }
    }

    /// Whether one more handshake from `src` is allowed at `now`.
    pub(crate) fn allow(&mut self, src: IpAddr, now: Instant) -> bool {
        let key = match src {
            IpAddr::V4(a) => u128::from(u32::from(a)) | (1 << 127),
            IpAddr::V6(a) => u128::from(a) >> 64 << 64,
        };
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_entries {
            // Table full (flood from many sources): refuse new sources until the sweep.
            return false;
        }
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::new(rate, burst))
            .try_take(now, 1)
    }

    /// Forgets sources whose bucket has refilled.
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.buckets.retain(|_, b| !b.is_full(now));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)]
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
    fn sources_are_independent_and_v6_is_keyed_by_64() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(20, 5, 100);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!((0..10).filter(|_| l.allow(a, t0)).count(), 5);
        assert!(l.allow(b, t0));
        let x: IpAddr = "2001:db8::1".parse().unwrap();
        let y: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!((0..3).filter(|_| l.allow(x, t0)).count(), 3);
        assert_eq!((0..5).filter(|_| l.allow(y, t0)).count(), 2);
        l.sweep(t0 + Duration::from_secs(1));
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn full_table_refuses_new_sources() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(20, 5, 2);
        assert!(l.allow("192.0.2.1".parse().unwrap(), t0));
        assert!(l.allow("192.0.2.2".parse().unwrap(), t0));
        assert!(!l.allow("192.0.2.3".parse().unwrap(), t0));
        assert!(l.allow("192.0.2.1".parse().unwrap(), t0));
    }
}
