use std::time::Instant;

/// Token bucket in bytes used for the throttle credit mode. Refills at `rate` bytes/s up
/// to `burst` bytes; time is injected.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: u64,
    burst: u64,
    tokens: u64,
    last: Option<Instant>,
}

impl TokenBucket {
    pub(crate) fn new(rate: u64, burst: u64) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let Some(last) = self.last else {
            self.last = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(last);
        let add = elapsed.as_nanos().saturating_mul(u128::from(self.rate)) / 1_000_000_000;
        if add > 0 {
            let add = u64::try_from(add).unwrap_or(u64::MAX);
            self.tokens = self.tokens.saturating_add(add).min(self.burst);
            // Advance only by the time actually converted into tokens so fractions carry.
            let used_nanos =
                u128::from(add).saturating_mul(1_000_000_000) / u128::from(self.rate.max(1));
            let used =
                std::time::Duration::from_nanos(u64::try_from(used_nanos).unwrap_or(u64::MAX));
            self.last = Some(if self.tokens == self.burst {
                now
            } else {
                last + used
            });
        }
    }

    /// Takes `bytes` tokens if available.
    pub(crate) fn try_take(&mut self, bytes: u64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= bytes {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    #[allow(clippy::disallowed_methods)] // tests need some base instant; time is virtual after it
    fn bucket_allows_rate_times_time_plus_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 1000);
        let mut taken = 0u64;
        for ms in 0..=10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            while b.try_take(100, now) {
                taken += 100;
            }
        }
        // 10 s at 1000 B/s plus the initial 1000 B burst.
        assert!(taken <= 11_000, "{taken}");
        assert!(taken >= 10_900, "{taken}");
    }
}
