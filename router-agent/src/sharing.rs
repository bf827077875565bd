//! The shell of the owner's sharing rules (`ferry_agent::share`, sans-IO): finds the local
//! time zone, loads and saves the quota counters (`<state-dir>/share.json`, 0600), and once a
//! second (`metering.rs`'s watcher) reads the pause file and the clock, counts the relay's paid
//! bytes, sets the relay's byte budget and says whether offers are admitted.
//!
//! Flash wear: the counters are written only while paid bytes move (at most once a minute),
//! when a day or period starts, when the decision changes and at a clean stop; never while
//! idle. A power cut can forget at most the last minute of counting.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferry_agent::share::{Counters, Rules, Sharing, Step, Tracker, parse_zone};
use ferry_relay_core::Relay;
use tz::TimeZone;

/// Longest the counters stay unsaved while bytes move.
const SAVE_EVERY: Duration = Duration::from_secs(60);

/// The sharing rules in force and their counters.
pub(crate) struct ShareShell {
    tracker: Tracker,
    tz: TimeZone,
    /// Where the time zone came from (for /status).
    tz_source: String,
    file: PathBuf,
    /// Only a quota needs its counters kept across restarts.
    persist: bool,
    saved: Counters,
    saved_at: Instant,
    last: Step,
}

impl ShareShell {
    /// Loads the counters saved beside the receipt store `store_path` (none yet: zero). A
    /// file that cannot be read is an error: starting from zero would share past the quota.
    pub(crate) fn open(rules: Rules, timezone: Option<&str>, store_path: &Path) -> Result<Self> {
        let file = store_path.with_file_name("share.json");
        let counters = match std::fs::read(&file) {
            Ok(b) => serde_json::from_slice(&b).with_context(|| {
                format!(
                    "{} is not the sharing quota's counters; fix or delete it (deleting counts \
                     today's and this month's shared bytes from zero)",
                    file.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Counters::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        let (tz, tz_source) = local_zone(
            timezone,
            std::env::var("TZ").ok(),
            &[
                Path::new("/etc/TZ"),
                Path::new("/tmp/TZ"),
                Path::new("/etc/localtime"),
            ],
        );
        let persist = rules.daily.is_some() || rules.monthly.is_some();
        let tracker = Tracker::new(rules, counters.clone(), 0);
        let last = Step {
            state: Sharing::Sharing,
            budget: None,
            rolled: false,
        };
        Ok(Self {
            tracker,
            tz,
            tz_source,
            file,
            persist,
            saved: counters,
            saved_at: Instant::now(),
            last,
        })
    }

    /// One tick under the relay lock: counts what the relay forwarded since the last one and
    /// sets its budget (in one lock, so no byte passes between counting and the new budget).
    pub(crate) fn tick(&mut self, relay: &mut Relay, paused: bool) -> Step {
        let step = self
            .tracker
            .tick(self.tz.as_ref(), unix_now(), relay.share_used(), paused);
        relay.set_share_budget(step.budget);
        self.last = step;
        step
    }

    /// Whether the counters should be written now (see the module doc).
    pub(crate) fn save_due(&self, step: Step, changed: bool) -> bool {
        self.persist
            && self.tracker.counters != self.saved
            && (step.rolled || changed || self.saved_at.elapsed() >= SAVE_EVERY)
    }

    /// Writes the counters (atomically, 0600) if they changed since the last write.
    pub(crate) fn save(&mut self) -> Result<()> {
        if !self.persist || self.tracker.counters == self.saved {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&self.tracker.counters)?;
        ferry_store::write_atomically(&self.file, &bytes, 0o600)
            .with_context(|| format!("saving the sharing quota to {}", self.file.display()))?;
        self.saved = self.tracker.counters.clone();
        self.saved_at = Instant::now();
        Ok(())
    }

    /// The last decision.
    pub(crate) fn state(&self) -> Sharing {
        self.last.state
    }

    /// The rules and the zone they are read in (the directory announcer's limits).
    pub(crate) fn rules(&self) -> (&Rules, &TimeZone) {
        (&self.tracker.rules, &self.tz)
    }

    /// What /status and the metrics show.
    pub(crate) fn view(&self) -> ShareView {
        let r = &self.tracker.rules;
        let c = &self.tracker.counters;
        let now = unix_now();
        let (day, month) = r.next_resets(self.tz.as_ref(), now);
        let left = |t: Option<i64>| t.map(|t| u64::try_from(t - now).unwrap_or(0));
        ShareView {
            state: self.last.state,
            daily_limit: r.daily,
            monthly_limit: r.monthly,
            day_bytes: c.day_bytes,
            period_bytes: c.period_bytes,
            day_reset_in: left(day),
            month_reset_in: left(month),
            reset_day: r.reset_day,
            schedule: r.schedule.as_ref().map(|s| s.entries.clone()),
            timezone: self.tz_source.clone(),
        }
    }
}

/// A snapshot of the sharing state.
#[derive(Debug, Clone)]
pub(crate) struct ShareView {
    pub(crate) state: Sharing,
    pub(crate) daily_limit: Option<u64>,
    pub(crate) monthly_limit: Option<u64>,
    pub(crate) day_bytes: u64,
    pub(crate) period_bytes: u64,
    /// Seconds to the next local midnight and monthly reset.
    pub(crate) day_reset_in: Option<u64>,
    pub(crate) month_reset_in: Option<u64>,
    pub(crate) reset_day: u8,
    pub(crate) schedule: Option<Vec<String>>,
    pub(crate) timezone: String,
}

impl ShareView {
    /// The metrics.
    pub(crate) fn stats(&self) -> ferry_telemetry::metrics::SharingStats {
        ferry_telemetry::metrics::SharingStats {
            state: self.state.code().into(),
            used_today_bytes: self.day_bytes,
            used_period_bytes: self.period_bytes,
            daily_quota_bytes: self.daily_limit,
            monthly_quota_bytes: self.monthly_limit,
            daily_reset_secs: self.day_reset_in,
            monthly_reset_secs: self.month_reset_in,
        }
    }

    /// The `/status` object (`paid.sharing`).
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "state": self.state.code(),
            "why": self.state.words(),
            "daily_quota_bytes": self.daily_limit,
            "monthly_quota_bytes": self.monthly_limit,
            "used_today_bytes": self.day_bytes,
            "used_this_period_bytes": self.period_bytes,
            "daily_reset_in_secs": self.day_reset_in,
            "monthly_reset_in_secs": self.month_reset_in,
            "quota_reset_day": self.reset_day,
            "schedule": self.schedule,
            "timezone": self.timezone,
        })
    }
}

fn unix_now() -> i64 {
    i64::try_from(ferry_store::unix_now()).unwrap_or(i64::MAX)
}

/// The local zone: `[limits] timezone`, else `TZ`, else the files in `files` in order (a
/// POSIX TZ string as OpenWrt's /etc/TZ, or a TZif file as /etc/localtime), else UTC.
/// Returns the zone and where it came from, in words.
fn local_zone(explicit: Option<&str>, env: Option<String>, files: &[&Path]) -> (TimeZone, String) {
    let named = |src: String, s: &str| match parse_zone(s) {
        Ok(z) => Some((z, format!("{src} ({})", s.trim()))),
        Err(e) => {
            tracing::warn!(error = %e, source = %src, "time zone not understood; trying the next source");
            None
        }
    };
    let explicit = explicit.filter(|s| !s.trim().is_empty());
    if let Some(found) = explicit.and_then(|s| named("[limits] timezone".into(), s)) {
        return found;
    }
    if let Some(found) = env
        .filter(|s| !s.trim().is_empty())
        .and_then(|s| named("TZ".into(), &s))
    {
        return found;
    }
    for f in files {
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        if bytes.starts_with(b"TZif") {
            match TimeZone::from_tz_data(&bytes) {
                Ok(z) => return (z, f.display().to_string()),
                Err(e) => tracing::warn!(file = %f.display(), error = %e, "unreadable zone file"),
            }
        } else if let Some(found) = std::str::from_utf8(&bytes)
            .ok()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .and_then(|s| named(f.display().to_string(), s))
        {
            return found;
        }
    }
    (TimeZone::utc(), "UTC (no system time zone found)".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_zone_comes_from_the_config_then_tz_then_openwrts_file_then_localtime() {
        let dir = tempfile::tempdir().unwrap();
        let etc_tz = dir.path().join("TZ");
        let localtime = dir.path().join("localtime");
        let missing = dir.path().join("missing");
        std::fs::write(&etc_tz, "CET-1CEST,M3.5.0,M10.5.0/3\n").unwrap();
        // A TZif file: UTC+3 fixed (what /etc/localtime is on Debian, a binary file).
        let tzif = tz_file_plus3();
        std::fs::write(&localtime, &tzif).unwrap();
        let offset = |z: &TimeZone| z.find_local_time_type(1_796_000_000).unwrap().ut_offset();
        let files = [missing.as_path(), etc_tz.as_path(), localtime.as_path()];
        let (z, src) = local_zone(Some("EST5EDT,M3.2.0,M11.1.0"), Some("UTC".into()), &files);
        assert_eq!((offset(&z), src.starts_with("[limits]")), (-5 * 3600, true));
        let (z, src) = local_zone(None, Some("JST-9".into()), &files);
        assert_eq!((offset(&z), src.as_str()), (9 * 3600, "TZ (JST-9)"));
        let (z, src) = local_zone(None, None, &files);
        assert_eq!(offset(&z), 3600, "{src}");
        assert!(src.contains("CET-1CEST"), "{src}");
        let (z, src) = local_zone(None, Some(" ".into()), &files[2..]);
        assert_eq!(offset(&z), 3 * 3600, "{src}");
        let (z, src) = local_zone(None, None, &[missing.as_path()]);
        assert_eq!(offset(&z), 0);
        assert!(src.starts_with("UTC"), "{src}");
        // A broken explicit value falls through (validation refuses it before we get here).
        let (z, _) = local_zone(Some("???"), None, &files);
        assert_eq!(offset(&z), 3600);
    }

    /// A minimal TZif v1 file: one local time type, UTC+3, no transitions.
    fn tz_file_plus3() -> Vec<u8> {
        let mut f = b"TZif".to_vec();
        f.push(0); // version 1
        f.extend_from_slice(&[0; 15]);
        // isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
        for n in [0u32, 0, 0, 0, 1, 4] {
            f.extend_from_slice(&n.to_be_bytes());
        }
        f.extend_from_slice(&(3 * 3600i32).to_be_bytes());
        f.extend_from_slice(&[0, 0]); // is_dst, abbreviation index
        f.extend_from_slice(b"+03\0");
        f
    }

    #[test]
    fn every_sharing_state_has_its_metric_series() {
        let codes: Vec<&str> = Sharing::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(codes, ferry_telemetry::metrics::SHARING_STATES);
    }

    #[test]
    fn counters_survive_a_restart_and_a_broken_file_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("receipts.log");
        let rules = Rules {
            daily: Some(10_000),
            monthly: None,
            reset_day: 1,
            schedule: None,
        };
        let mut relay = crate::test_support::relay(4);
        let mut s = ShareShell::open(rules.clone(), Some("UTC"), &store).unwrap();
        assert_eq!(s.tick(&mut relay, false).budget, Some(10_000));
        assert_eq!(relay.share_budget(), Some(10_000));
        s.tracker.counters.add(2_500);
        s.save().unwrap();
        let file = dir.path().join("share.json");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut again = ShareShell::open(rules.clone(), Some("UTC"), &store).unwrap();
        assert_eq!(again.tick(&mut relay, false).budget, Some(7_500));
        // No quota: nothing is written.
        std::fs::remove_file(&file).unwrap();
        let mut none = ShareShell::open(Rules::default(), Some("UTC"), &store).unwrap();
        none.tracker.counters.add(5);
        none.save().unwrap();
        assert!(!file.exists());
        std::fs::write(&file, b"{not json").unwrap();
        let e = format!(
            "{:#}",
            ShareShell::open(rules, Some("UTC"), &store).err().unwrap()
        );
        assert!(e.contains("share.json") && e.contains("delete it"), "{e}");
    }
}
