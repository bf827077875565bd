/// Which way bytes flow, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Client → internet (decapsulated from the tunnel, after allowed-IPs and egress checks).
    Up,
    /// Internet → client (about to be encapsulated towards the client).
    Down,
}

/// Exact cumulative byte counters of one session.
///
/// `u64` and saturating: at 10 Gbit/s a u64 of bytes lasts 467 years, so saturation is a
/// guard against corrupt resume state, not a billing rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meter {
    up: u64,
    down: u64,
}

impl Meter {
    /// Counters starting at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters resumed from stored cumulative values.
    pub fn resume(up: u64, down: u64) -> Self {
        Self { up, down }
    }

    /// Adds `bytes` client → internet.
    pub fn record_up(&mut self, bytes: u64) {
        self.up = self.up.saturating_add(bytes);
    }

    /// Adds `bytes` internet → client.
    pub fn record_down(&mut self, bytes: u64) {
        self.down = self.down.saturating_add(bytes);
    }

    /// Adds `bytes` in `dir`.
    pub fn record(&mut self, dir: Direction, bytes: u64) {
        match dir {
            Direction::Up => self.record_up(bytes),
            Direction::Down => self.record_down(bytes),
        }
    }

    /// Cumulative bytes up.
    pub fn up(&self) -> u64 {
        self.up
    }

    /// Cumulative bytes down.
    pub fn down(&self) -> u64 {
        self.down
    }

    /// Up + down.
    pub fn total(&self) -> u64 {
        self.up.saturating_add(self.down)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_exactly_and_saturate() {
        let mut m = Meter::new();
        m.record_up(1500);
        m.record(Direction::Down, 40);
        m.record_down(2);
        assert_eq!((m.up(), m.down(), m.total()), (1500, 42, 1542));
        let mut big = Meter::resume(u64::MAX - 1, 0);
        big.record_up(10);
        assert_eq!(big.up(), u64::MAX);
    }
}
