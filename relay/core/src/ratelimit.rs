//! Per-source handshake buckets (the bucket itself is ferry-ratelimit's `TokenBucket`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

pub use ferry_ratelimit::TokenBucket;

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
    use std::time::Duration;

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
