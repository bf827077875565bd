#![allow(clippy::unwrap_used)]

use super::*;

/// Central European time as OpenWrt's /etc/TZ writes it (uci system.timezone).
const CET: &str = "CET-1CEST,M3.5.0,M10.5.0/3";

fn zone(s: &str) -> TimeZone {
    parse_zone(s).unwrap()
}

fn unix(y: i32, m: u8, d: u8, h: u8, min: u8) -> i64 {
    tz::UtcDateTime::new(y, m, d, h, min, 0, 0)
        .unwrap()
        .unix_time()
}

fn sched(entries: &[&str]) -> Schedule {
    Schedule::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

#[test]
fn local_time_follows_the_posix_zone_and_its_summer_time() {
    let tz = zone(CET);
    // 2026-12-07 is a Monday; 23:30 UTC is 00:30 on Tuesday the 8th in Berlin (winter, +1).
    let l = Local::at(tz.as_ref(), unix(2026, 12, 7, 23, 30)).unwrap();
    assert_eq!((l.date, l.weekday, l.minute), ((2026, 12, 8), 1, 30));
    // In July it is +2.
    let l = Local::at(tz.as_ref(), unix(2026, 7, 1, 12, 0)).unwrap();
    assert_eq!((l.date, l.weekday, l.minute), ((2026, 7, 1), 2, 14 * 60));
    let utc = zone("UTC");
    let l = Local::at(utc.as_ref(), unix(2026, 12, 7, 23, 30)).unwrap();
    assert_eq!((l.date, l.weekday), ((2026, 12, 7), 0));
    assert!(parse_zone("not a zone!").is_err());
}

#[test]
fn schedule_windows_cover_days_ranges_and_midnight() {
    let s = sched(&[
        "mon-fri 18:00-23:30",
        "sat,sun 00:00-24:00",
        "fri 23:30-02:00",
    ]);
    assert!(!s.shares_at(0, 17 * 60 + 59));
    assert!(s.shares_at(0, 18 * 60));
    assert!(s.shares_at(0, 23 * 60 + 29));
    assert!(!s.shares_at(0, 23 * 60 + 30), "the end minute is outside");
    // Friday 23:30 runs into Saturday (shared all day anyway) and Sunday's whole day.
    assert!(s.shares_at(4, 23 * 60 + 45));
    assert!(s.shares_at(5, 60));
    assert!(s.shares_at(6, 0) && s.shares_at(6, 24 * 60 - 1));
    // A window crossing Sunday midnight wraps to Monday.
    let s = sched(&["sun 22:00-01:00"]);
    assert!(s.shares_at(6, 23 * 60) && s.shares_at(0, 30) && !s.shares_at(0, 60));
    // Day ranges wrap (fri-mon), "daily" and 00:00-00:00 mean every day, all day.
    let s = sched(&["fri-mon 08:00-09:00"]);
    let days: Vec<u8> = (0..7).filter(|d| s.shares_at(*d, 8 * 60)).collect();
    assert_eq!(days, [0, 4, 5, 6]);
    let s = sched(&["daily 00:00-00:00"]);
    assert!((0..7).all(|d| s.shares_at(d, 0) && s.shares_at(d, 1439)));
}

#[test]
fn bad_schedule_entries_say_what_is_wrong() {
    for (entry, why) in [
        ("monday 18:00-19:00", "unknown day"),
        ("mon 18:00", "needs a '-'"),
        ("mon 25:00-26:00", "not a time"),
        ("mon 18:60-19:00", "not a time"),
        ("mon 24:00-01:00", "not a time"),
        ("mon 10:00-10:00", "empty"),
        ("mon", "two words"),
        ("mon 1:00-2:00 extra", "two words"),
    ] {
        let e = Schedule::parse(&[entry.to_string()]).unwrap_err();
        assert!(
            e.contains(why) && e.contains("mon-fri 18:00-23:30"),
            "{entry}: {e}"
        );
    }
}

/// A MiB: quotas in tests are far above [`QUOTA_SLACK`].
const M: u64 = 1 << 20;

fn rules(daily: Option<u64>, monthly: Option<u64>, reset_day: u8) -> Rules {
    Rules {
        daily,
        monthly,
        reset_day,
        schedule: None,
    }
}

fn at(date: (i32, u8, u8)) -> Local {
    Local {
        date,
        weekday: 0,
        minute: 600,
    }
}

#[test]
fn quota_counts_per_day_and_per_period_and_resets_on_the_reset_day() {
    let r = rules(Some(1000 * M), Some(5000 * M), 15);
    let mut c = Counters::default();
    assert!(c.roll(at((2026, 12, 8)), 15));
    assert_eq!((c.day, c.period), (20261208, 20261115));
    c.add(600 * M);
    assert_eq!(r.remaining(&c), Some(400 * M));
    assert_eq!(r.decide(false, &c, at((2026, 12, 8))), Sharing::Sharing);
    c.add(400 * M);
    assert_eq!(r.remaining(&c), Some(0));
    assert_eq!(r.decide(false, &c, at((2026, 12, 8))), Sharing::DailyQuota);
    assert_eq!(r.decide(true, &c, at((2026, 12, 8))), Sharing::Paused);
    // Used up already when less than QUOTA_SLACK is left (no packet would fit for long).
    let mut almost = Counters {
        day_bytes: 1000 * M - QUOTA_SLACK,
        ..c.clone()
    };
    assert_eq!(
        r.decide(false, &almost, at((2026, 12, 8))),
        Sharing::Sharing
    );
    almost.add(1);
    assert_eq!(
        r.decide(false, &almost, at((2026, 12, 8))),
        Sharing::DailyQuota
    );
    // Same day again: nothing resets.
    assert!(!c.roll(at((2026, 12, 8)), 15));
    // Next days: the daily count starts over, the period goes on until the 15th.
    for d in 9..=13 {
        assert!(c.roll(at((2026, 12, d)), 15));
        c.add(800 * M);
    }
    assert_eq!(c.period_bytes, 5000 * M);
    assert_eq!(r.remaining(&c), Some(0));
    assert_eq!(
        r.decide(false, &c, at((2026, 12, 13))),
        Sharing::MonthlyQuota
    );
    c.roll(at((2026, 12, 14)), 15);
    assert_eq!(
        r.decide(false, &c, at((2026, 12, 14))),
        Sharing::MonthlyQuota
    );
    c.roll(at((2026, 12, 15)), 15);
    assert_eq!((c.period, c.period_bytes, c.day_bytes), (20261215, 0, 0));
    assert_eq!(r.remaining(&c), Some(1000 * M));
    // No quota at all: no budget.
    assert_eq!(rules(None, None, 1).remaining(&c), None);
}

#[test]
fn a_reset_day_beyond_a_short_month_is_its_last_day() {
    let mut c = Counters::default();
    c.roll(at((2027, 2, 27)), 31);
    assert_eq!(c.period, 20270131);
    c.roll(at((2027, 2, 28)), 31);
    assert_eq!(c.period, 20270228);
    c.roll(at((2027, 3, 30)), 31);
    assert_eq!(c.period, 20270228);
    c.roll(at((2027, 3, 31)), 31);
    assert_eq!(c.period, 20270331);
    c.roll(at((2028, 2, 29)), 31);
    assert_eq!(c.period, 20280229, "leap year");
    c.roll(at((2027, 1, 3)), 5);
    assert_eq!(
        c.period, 20261205,
        "January before the reset day: December's period"
    );
}

#[test]
fn resets_are_at_local_midnight() {
    let tz = zone(CET);
    let r = rules(Some(1), Some(1), 1);
    // Tuesday 2026-12-08 10:00 UTC (11:00 in Berlin): next day at 2026-12-08 23:00 UTC, next
    // period on 2027-01-01 00:00 Berlin = 2026-12-31 23:00 UTC.
    let (day, month) = r.next_resets(tz.as_ref(), unix(2026, 12, 8, 10, 0));
    assert_eq!(day, Some(unix(2026, 12, 8, 23, 0)));
    assert_eq!(month, Some(unix(2026, 12, 31, 23, 0)));
    // Over the spring change (29 March 2026 is a Sunday): still local midnight, now +2.
    let (_, month) = r.next_resets(tz.as_ref(), unix(2026, 3, 20, 12, 0));
    assert_eq!(month, Some(unix(2026, 3, 31, 22, 0)));
}

#[test]
fn schedule_and_pause_decide_with_the_quota() {
    let mut r = rules(None, None, 1);
    r.schedule = Some(sched(&["mon-fri 18:00-23:00"]));
    let c = Counters::default();
    let evening = Local {
        date: (2026, 12, 7),
        weekday: 0,
        minute: 19 * 60,
    };
    let morning = Local {
        minute: 9 * 60,
        ..evening
    };
    assert_eq!(r.decide(false, &c, evening), Sharing::Sharing);
    assert_eq!(r.decide(false, &c, morning), Sharing::OutsideSchedule);
    assert_eq!(r.decide(true, &c, evening), Sharing::Paused);
    assert_eq!(
        Sharing::OutsideSchedule.reject_reason(),
        Some(SessionRejectReason::OutsideSchedule)
    );
    assert_eq!(
        Sharing::DailyQuota.reject_reason(),
        Some(SessionRejectReason::QuotaReached)
    );
    assert_eq!(Sharing::Sharing.reject_reason(), None);
}

#[test]
fn the_advertised_week_is_the_local_schedule_in_utc_hours() {
    let mut r = rules(None, Some(3 * (1 << 30) + 1), 1);
    assert_eq!(r.advertised_monthly_gib(), 4, "rounded up");
    assert_eq!(rules(None, Some(1), 1).advertised_monthly_gib(), 1);
    assert_eq!(rules(None, None, 1).advertised_monthly_gib(), 0);
    let tz = zone(CET);
    assert_eq!(
        r.advertised_week(tz.as_ref(), 0),
        ferry_receipts::AdvertisedLimits::ALWAYS
    );
    // Weekdays 18:00-23:30 Berlin in winter = 17:00-22:30 UTC: whole UTC hours 17..=21.
    r.schedule = Some(sched(&["mon-fri 18:00-23:30"]));
    let week = r.advertised_week(tz.as_ref(), unix(2026, 12, 9, 12, 0));
    let limits = ferry_receipts::AdvertisedLimits {
        schedule: week,
        ..ferry_receipts::AdvertisedLimits::unlimited()
    };
    let hours: Vec<usize> = (0..168).filter(|h| limits.shares_at(*h)).collect();
    let want: Vec<usize> = (0..5)
        .flat_map(|d| (17..22).map(move |h| d * 24 + h))
        .collect();
    assert_eq!(hours, want);
    assert_eq!(limits.shared_hours(), 25);
    // In summer the same local hours are 16..=20 UTC.
    let summer = ferry_receipts::AdvertisedLimits {
        schedule: r.advertised_week(tz.as_ref(), unix(2026, 7, 8, 12, 0)),
        ..limits
    };
    assert!(summer.shares_at(16) && summer.shares_at(20) && !summer.shares_at(21));
}

#[test]
fn the_tracker_counts_the_relays_growth_and_sets_the_budget() {
    let tz = zone("UTC");
    let r = rules(Some(10_000 * M), None, 1);
    // Persisted: 4,000 MiB today already; the relay has counted 500 MiB since its start.
    let t0 = unix(2026, 12, 8, 10, 0);
    let saved = Counters {
        day: 20261208,
        day_bytes: 4000 * M,
        period: 20261201,
        period_bytes: 4000 * M,
    };
    let mut t = Tracker::new(r, saved, 500 * M);
    let s = t.tick(tz.as_ref(), t0, 500 * M, false);
    assert_eq!(
        (s.state, s.budget, s.rolled),
        (Sharing::Sharing, Some(6000 * M), false)
    );
    let s = t.tick(tz.as_ref(), t0 + 1, 3500 * M, false);
    assert_eq!((s.budget, t.counters.day_bytes), (Some(3000 * M), 7000 * M));
    let s = t.tick(tz.as_ref(), t0 + 2, 6500 * M, false);
    assert_eq!((s.state, s.budget), (Sharing::DailyQuota, Some(0)));
    // Past midnight: a new day, the budget is whole again, less what came in that tick.
    let s = t.tick(tz.as_ref(), unix(2026, 12, 9, 0, 0), 6600 * M, false);
    assert_eq!(
        (s.state, s.budget, s.rolled),
        (Sharing::Sharing, Some(9900 * M), true)
    );
    assert_eq!(t.counters.period_bytes, 10_100 * M, "the month goes on");
    assert_eq!(
        t.tick(tz.as_ref(), unix(2026, 12, 9, 0, 1), 6600 * M, true)
            .state,
        Sharing::Paused
    );
}
