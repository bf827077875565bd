//! The owner's sharing rules (sans-IO): the daily/monthly quota with its reset day, the
//! weekly schedule in local time, and what they decide together with a pause. Time comes in
//! as unix seconds and a time zone (pure data); the shell (`metering.rs`'s watcher) reads the
//! clock, the relay's byte count and the system time zone, persists [`Counters`] and applies
//! the [`Sharing`] decision.

use ferry_metering::SessionRejectReason;
use serde::{Deserialize, Serialize};
use tz::{DateTime, TimeZone, TimeZoneRef};

/// Bytes in a GiB.
pub const GIB: f64 = 1_073_741_824.0;
/// A quota is used up when less than this is left of it: the relay forwards a packet only if
/// it fits whole, so the last bytes would otherwise keep sessions open that can send nothing.
pub const QUOTA_SLACK: u64 = 64 * 1024;
const MINUTES_PER_DAY: usize = 24 * 60;
const MINUTES_PER_WEEK: usize = 7 * MINUTES_PER_DAY;
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A local moment: what the rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// Year, month (1..=12), day of month (1..=31).
    pub date: (i32, u8, u8),
    /// 0 = Monday .. 6 = Sunday.
    pub weekday: u8,
    /// Minutes since local midnight.
    pub minute: u16,
}

impl Local {
    /// The local time of `unix` in `tz` (`None` only for times tz-rs cannot represent).
    pub fn at(tz: TimeZoneRef<'_>, unix: i64) -> Option<Self> {
        let t = DateTime::from_timespec(unix, 0, tz).ok()?;
        Some(Self {
            date: (t.year(), t.month(), t.month_day()),
            weekday: (t.week_day() + 6) % 7,
            minute: u16::from(t.hour()) * 60 + u16::from(t.minute()),
        })
    }

    /// `YYYYMMDD`.
    fn key(self) -> u32 {
        date_key(self.date)
    }
}

fn date_key((y, m, d): (i32, u8, u8)) -> u32 {
    u32::try_from(y).unwrap_or(0) * 10_000 + u32::from(m) * 100 + u32::from(d)
}

fn days_in_month(y: i32, m: u8) -> u8 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// The first day of the monthly period holding `date` (the reset day, clamped to the
/// month's length: a reset day of 31 is the 30th in April and the 28th/29th in February).
fn period_start((y, m, d): (i32, u8, u8), reset_day: u8) -> (i32, u8, u8) {
    let this = reset_day.min(days_in_month(y, m));
    if d >= this {
        return (y, m, this);
    }
    let (py, pm) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
    (py, pm, reset_day.min(days_in_month(py, pm)))
}

/// The first day of the next monthly period after the one holding `date`.
fn next_period_start(date: (i32, u8, u8), reset_day: u8) -> (i32, u8, u8) {
    let (y, m, _) = period_start(date, reset_day);
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (ny, nm, reset_day.min(days_in_month(ny, nm)))
}

/// Unix time of local midnight starting `date` (the earliest, if a DST change repeats it;
/// the first moment after a gap).
fn midnight(tz: TimeZoneRef<'_>, (y, m, d): (i32, u8, u8)) -> Option<i64> {
    let found = DateTime::find(y, m, d, 0, 0, 0, 0, tz).ok()?;
    found
        .earliest()
        .or_else(|| DateTime::find(y, m, d, 1, 0, 0, 0, tz).ok()?.earliest())
        .map(|t| t.unix_time())
}

fn next_day((y, m, d): (i32, u8, u8)) -> (i32, u8, u8) {
    if d < days_in_month(y, m) {
        (y, m, d + 1)
    } else if m < 12 {
        (y, m + 1, 1)
    } else {
        (y + 1, 1, 1)
    }
}

/// Sharing windows by weekday and local time: one bit per minute of the week.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    bits: Vec<u64>,
    /// The entries as written (for /status).
    pub entries: Vec<String>,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Schedule").field(&self.entries).finish()
    }
}

impl Schedule {
    /// Parses entries like `mon-fri 18:00-23:30`, `sat,sun 00:00-24:00`, `daily 09:00-17:00`
    /// (a window ending at or before its start runs past midnight into the next day).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut bits = vec![0u64; MINUTES_PER_WEEK.div_ceil(64)];
        for e in entries {
            let (days, window) = parse_entry(e).map_err(|why| {
                format!(
                    "schedule entry {e:?}: {why} (write e.g. \"mon-fri 18:00-23:30\" or \
                     \"sat,sun 00:00-24:00\"; days mon..sun or daily)"
                )
            })?;
            let (from, to) = window;
            let len = if to > from {
                to - from
            } else {
                MINUTES_PER_DAY - from + to
            };
            for day in (0..7).filter(|d| days & (1 << d) != 0) {
                for m in 0..len {
                    let i = (day * MINUTES_PER_DAY + from + m) % MINUTES_PER_WEEK;
                    bits[i / 64] |= 1 << (i % 64);
                }
            }
        }
        Ok(Self {
            bits,
            entries: entries.to_vec(),
        })
    }

    /// Whether the schedule shares at minute `minute` of local weekday `weekday` (0 = Monday).
    pub fn shares_at(&self, weekday: u8, minute: u16) -> bool {
        let i = (usize::from(weekday) * MINUTES_PER_DAY + usize::from(minute)) % MINUTES_PER_WEEK;
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }
}

/// `days HH:MM-HH:MM` → (bit set of weekdays, (from, to) minutes).
fn parse_entry(e: &str) -> Result<(u8, (usize, usize)), String> {
    let mut words = e.split_whitespace();
    let (Some(days), Some(window), None) = (words.next(), words.next(), words.next()) else {
        return Err("expected two words: days and a time window".into());
    };
    let mut set = 0u8;
    for part in days.to_ascii_lowercase().split(',') {
        let day = |s: &str| {
            DAY_NAMES
                .iter()
                .position(|d| *d == s)
                .ok_or_else(|| format!("unknown day {s:?}"))
        };
        if part == "daily" || part == "*" {
            set = 0x7f;
        } else if let Some((a, b)) = part.split_once('-') {
            let (a, b) = (day(a)?, day(b)?);
            let mut d = a;
            loop {
                set |= 1 << d;
                if d == b {
                    break;
                }
                d = (d + 1) % 7;
            }
        } else {
            set |= 1 << day(part)?;
        }
    }
    let (from, to) = window
        .split_once('-')
        .ok_or("the time window needs a '-' (18:00-23:30)")?;
    let (from, to) = (clock(from, false)?, clock(to, true)?);
    if from == to && from != 0 {
        return Err("the window is empty".into());
    }
    Ok((
        set,
        (
            from,
            if from == 0 && to == 0 {
                MINUTES_PER_DAY
            } else {
                to
            },
        ),
    ))
}

/// `HH:MM` → minutes since midnight (`24:00` only as an end).
fn clock(s: &str, end: bool) -> Result<usize, String> {
    let bad = || format!("{s:?} is not a time HH:MM");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (usize, usize) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && (m != 0 || !end)) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// What the owner set: quotas in bytes (`None` = none), reset day, schedule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    pub daily: Option<u64>,
    pub monthly: Option<u64>,
    /// Day of month the monthly quota starts again (1..=31, clamped to short months).
    pub reset_day: u8,
    pub schedule: Option<Schedule>,
}

/// Bytes counted against the quota: persisted (`<state-dir>/share.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Local day counted (`YYYYMMDD`; 0 = never).
    pub day: u32,
    pub day_bytes: u64,
    /// First day of the monthly period counted (`YYYYMMDD`).
    pub period: u32,
    pub period_bytes: u64,
}

impl Counters {
    /// Starts a new day and/or monthly period if `now` is past the counted ones; whether
    /// anything was reset.
    pub fn roll(&mut self, now: Local, reset_day: u8) -> bool {
        let mut changed = false;
        if self.day != now.key() {
            *self = Self {
                day: now.key(),
                day_bytes: 0,
                ..*self
            };
            changed = true;
        }
        let period = date_key(period_start(now.date, reset_day));
        if self.period != period {
            self.period = period;
            self.period_bytes = 0;
            changed = true;
        }
        changed
    }

    pub fn add(&mut self, bytes: u64) {
        self.day_bytes = self.day_bytes.saturating_add(bytes);
        self.period_bytes = self.period_bytes.saturating_add(bytes);
    }
}

/// Whether the relay offers sessions now, and if not why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    Sharing,
    Paused,
    DailyQuota,
    MonthlyQuota,
    OutsideSchedule,
}

impl Sharing {
    /// What a refused offer says (`None`: sharing).
    pub fn reject_reason(self) -> Option<SessionRejectReason> {
        match self {
            Self::Sharing => None,
            Self::Paused => Some(SessionRejectReason::NotSharing),
            Self::DailyQuota | Self::MonthlyQuota => Some(SessionRejectReason::QuotaReached),
            Self::OutsideSchedule => Some(SessionRejectReason::OutsideSchedule),
        }
    }

    /// Stable code (/status, metrics label).
    pub fn code(self) -> &'static str {
        match self {
            Self::Sharing => "sharing",
            Self::Paused => "paused",
            Self::DailyQuota => "daily_quota",
            Self::MonthlyQuota => "monthly_quota",
            Self::OutsideSchedule => "outside_schedule",
        }
    }

    /// Every state, for exporting.
    pub const ALL: [Self; 5] = [
        Self::Sharing,
        Self::Paused,
        Self::DailyQuota,
        Self::MonthlyQuota,
        Self::OutsideSchedule,
    ];

    /// In words (log, /status, LuCI).
    pub fn words(self) -> &'static str {
        match self {
            Self::Sharing => "sharing",
            Self::Paused => "paused by the owner (`ferry-agent resume` to share again)",
            Self::DailyQuota => "the daily sharing quota is used up (it resets at local midnight)",
            Self::MonthlyQuota => {
                "the monthly sharing quota is used up (it resets on the reset day)"
            }
            Self::OutsideSchedule => "outside the owner's sharing hours",
        }
    }
}

impl Rules {
    /// Whether any quota or schedule is set (the agent then persists and watches them).
    pub fn limits_anything(&self) -> bool {
        self.daily.is_some() || self.monthly.is_some() || self.schedule.is_some()
    }

    /// Paid bytes that may still be forwarded in the current day and period.
    pub fn remaining(&self, c: &Counters) -> Option<u64> {
        let day = self.daily.map(|q| q.saturating_sub(c.day_bytes));
        let month = self.monthly.map(|q| q.saturating_sub(c.period_bytes));
        match (day, month) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Pause first, then the quotas (monthly before daily: it lasts longer), then the schedule.
    pub fn decide(&self, paused: bool, c: &Counters, now: Local) -> Sharing {
        if paused {
            Sharing::Paused
        } else if self
            .monthly
            .is_some_and(|q| c.period_bytes.saturating_add(QUOTA_SLACK) > q)
        {
            Sharing::MonthlyQuota
        } else if self
            .daily
            .is_some_and(|q| c.day_bytes.saturating_add(QUOTA_SLACK) > q)
        {
            Sharing::DailyQuota
        } else if self
            .schedule
            .as_ref()
            .is_some_and(|s| !s.shares_at(now.weekday, now.minute))
        {
            Sharing::OutsideSchedule
        } else {
            Sharing::Sharing
        }
    }

    /// Unix times of the next daily and monthly resets after `unix` (local midnights).
    pub fn next_resets(&self, tz: TimeZoneRef<'_>, unix: i64) -> (Option<i64>, Option<i64>) {
        let Some(now) = Local::at(tz, unix) else {
            return (None, None);
        };
        (
            midnight(tz, next_day(now.date)),
            midnight(tz, next_period_start(now.date, self.reset_day)),
        )
    }

    /// The monthly quota in whole GiB for the descriptor (rounded up; 0 = none).
    pub fn advertised_monthly_gib(&self) -> u32 {
        self.monthly.map_or(0, |b| {
            u32::try_from(b.div_ceil(1 << 30))
                .unwrap_or(u32::MAX)
                .max(1)
        })
    }

    /// The descriptor's schedule: bit h = shares for the whole UTC hour h of the week
    /// (Monday 00:00 UTC = 0) of the week holding `unix`, in this zone's rules then.
    pub fn advertised_week(&self, tz: TimeZoneRef<'_>, unix: i64) -> [u8; 21] {
        let Some(s) = &self.schedule else {
            return ferry_receipts::AdvertisedLimits::ALWAYS;
        };
        // 1970-01-01 was a Thursday: Monday 00:00 UTC of this week.
        let week = unix - (unix.rem_euclid(7 * 86_400) + 3 * 86_400) % (7 * 86_400);
        let mut out = [0u8; 21];
        for h in 0..168usize {
            let start = week + 3600 * h as i64;
            let whole = (0..60).all(|m| {
                Local::at(tz, start + 60 * m).is_some_and(|l| s.shares_at(l.weekday, l.minute))
            });
            if whole {
                out[h / 8] |= 0x80 >> (h % 8);
            }
        }
        out
    }
}

/// The rules applied over time: counts the relay's paid bytes into [`Counters`] and decides.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub rules: Rules,
    pub counters: Counters,
    /// The relay's `share_used()` already counted.
    seen: u64,
}

/// One [`Tracker::tick`]'s outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub state: Sharing,
    /// What the relay may still forward (`Relay::set_share_budget`).
    pub budget: Option<u64>,
    /// A new day or period started (the counters should be saved).
    pub rolled: bool,
}

impl Tracker {
    /// Starts from persisted `counters`; the relay has counted `relay_used` bytes so far.
    pub fn new(rules: Rules, counters: Counters, relay_used: u64) -> Self {
        Self {
            rules,
            counters,
            seen: relay_used,
        }
    }

    /// At `unix` in `tz`, with the relay's byte count `relay_used` and the pause flag.
    pub fn tick(&mut self, tz: TimeZoneRef<'_>, unix: i64, relay_used: u64, paused: bool) -> Step {
        let grown = relay_used.saturating_sub(self.seen);
        self.seen = relay_used;
        let Some(now) = Local::at(tz, unix) else {
            // Unrepresentable time: count, keep the period, decide on the counts alone.
            self.counters.add(grown);
            let state = self.rules.decide(paused, &self.counters, at_noon());
            return Step {
                state,
                budget: self.rules.remaining(&self.counters),
                rolled: false,
            };
        };
        // Roll first: bytes of the last tick before midnight (~1 s) count in the new day
        // rather than vanish with the old one (the household's side of the error).
        let rolled = self.counters.roll(now, self.rules.reset_day);
        self.counters.add(grown);
        Step {
            state: self.rules.decide(paused, &self.counters, now),
            budget: self.rules.remaining(&self.counters),
            rolled,
        }
    }
}

fn at_noon() -> Local {
    Local {
        date: (1970, 1, 1),
        weekday: 3,
        minute: 720,
    }
}

/// Reads a time zone from a POSIX TZ string or zone name (`Europe/Berlin`, if zoneinfo is
/// installed); `UTC`/`GMT` alone are UTC.
pub fn parse_zone(s: &str) -> Result<TimeZone, String> {
    let s = s.trim();
    if matches!(s, "UTC" | "GMT" | "Z" | "UTC0" | "GMT0") {
        return Ok(TimeZone::utc());
    }
    TimeZone::from_posix_tz(s).map_err(|e| format!("time zone {s:?}: {e}"))
}

#[cfg(test)]
#[path = "share_tests.rs"]
mod tests;
