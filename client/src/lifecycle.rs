//! One lifecycle for `ferry connect` and `ferry socks5`: whichever runs holds the pid file
//! (`<state>/ferry.pid`: pid, mode, network namespace), so a second start is refused naming
//! the first, and `ferry disconnect` stops either (SIGTERM: final receipt, then exit) — only
//! from the network namespace the session runs in, since its kill switch, routes and DNS
//! backup belong to that namespace.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::paths::Paths;

/// The running session's pid file entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Running {
    pub(crate) pid: i32,
    /// `connect` or `socks5` (empty for a pid file of an older ferry).
    pub(crate) mode: String,
    /// Inode of the network namespace it runs in (`None` for an older pid file).
    pub(crate) netns: Option<u64>,
}

/// The inode of this process's network namespace (`/proc/self/ns/net`).
pub(crate) fn current_netns() -> Option<u64> {
    std::fs::metadata("/proc/self/ns/net").ok().map(|m| m.ino())
}

/// The live process named by the pid file, if any.
pub(crate) fn running(paths: &Paths) -> Option<Running> {
    let text = std::fs::read_to_string(paths.pid()).ok()?;
    let mut lines = text.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    if pid <= 0 || !Path::new(&format!("/proc/{pid}")).exists() {
        return None;
    }
    let mode = lines.next().unwrap_or("").trim().to_owned();
    let netns = lines.next().and_then(|l| l.trim().parse().ok());
    Some(Running { pid, mode, netns })
}

/// Held while `connect` or `socks5` runs; removes the pid file when dropped.
#[derive(Debug)]
pub(crate) struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Claims the pid file for `mode`, refusing while another session runs.
    pub(crate) fn claim(paths: &Paths, mode: &str) -> Result<Self> {
        if let Some(r) = running(paths) {
            let what = if r.mode.is_empty() {
                "ferry".to_owned()
            } else {
                format!("ferry {}", r.mode)
            };
            bail!(
                "{what} is already running (pid {}); `ferry disconnect` first",
                r.pid
            );
        }
        let path = paths.pid();
        let netns = current_netns().map(|n| n.to_string()).unwrap_or_default();
        std::fs::write(&path, format!("{}\n{mode}\n{netns}\n", std::process::id()))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path).ok().and_then(|t| {
            t.lines()
                .next()
                .map(|l| l.trim() == std::process::id().to_string())
        });
        if ours == Some(true) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes the status of a start that has not reached the tunnel yet (this process, `mode`,
/// `relay`, connecting, kill switch as given), replacing the previous run's.
pub(crate) fn record_start(paths: &Paths, mode: &str, relay: &str, kill_switch: bool) {
    let mut st =
        crate::status::Status::new(mode, relay, String::new(), false, ferry_store::unix_now());
    st.kill_switch = kill_switch;
    if let Err(e) = st.write(&paths.status()) {
        tracing::warn!(error = %e, "status file not written");
    }
}

/// After a start failed: unless the engine already recorded the end, the status says failed,
/// why, and whether the kill switch is installed (`kill_switch`, checked by the caller).
pub(crate) fn record_failed_start(paths: &Paths, error: &anyhow::Error, kill_switch: bool) {
    use crate::status::{State, Status};
    let path = paths.status();
    let mut st = match Status::read(&path) {
        Ok(st) if st.pid == std::process::id() => st,
        _ => return,
    };
    if matches!(st.state, State::Failed | State::Stopped) {
        return;
    }
    st.state = State::Failed;
    st.error = Some(format!("{error:#}"));
    st.kill_switch = kill_switch;
    st.updated_at = ferry_store::unix_now();
    if let Err(e) = st.write(&path) {
        tracing::warn!(error = %e, "status file not written");
    }
}

/// Refuses to act on a session (or its leftover network changes, recorded with `netns`) from
/// another network namespace than the one it belongs to.
pub(crate) fn ensure_same_netns(netns: Option<u64>, what: &str) -> Result<()> {
    let (Some(theirs), Some(ours)) = (netns, current_netns()) else {
        return Ok(());
    };
    if theirs != ours {
        bail!(
            "{what} belongs to another network namespace (net:[{theirs}]; this shell is in \
             net:[{ours}]): run `ferry disconnect` there, e.g. `ip netns exec <name> ferry \
             disconnect`; nothing was changed"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn paths(dir: &Path) -> Paths {
        Paths {
            dir: dir.to_owned(),
            config: dir.join("client.toml"),
            state: dir.to_owned(),
        }
    }

    #[test]
    fn one_session_at_a_time_and_the_file_names_mode_and_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let held = PidFile::claim(&p, "socks5").unwrap();
        let r = running(&p).unwrap();
        assert_eq!(r.pid, std::process::id() as i32);
        assert_eq!(r.mode, "socks5");
        assert_eq!(r.netns, current_netns());
        let err = PidFile::claim(&p, "connect").unwrap_err().to_string();
        assert!(err.contains("ferry socks5 is already running"), "{err}");
        drop(held);
        assert!(running(&p).is_none());
        assert!(!p.pid().exists());
        // An older pid file (pid only) still names a live process.
        std::fs::write(p.pid(), format!("{}\n", std::process::id())).unwrap();
        assert_eq!(running(&p).unwrap().netns, None);
    }

    #[test]
    fn a_failed_start_replaces_the_previous_runs_status() {
        use crate::status::{State, Status};
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        // The previous run: another relay, another pid, stopped cleanly.
        let mut old = Status::new("connect", "old-relay", "198.51.100.9:51820".into(), true, 1);
        old.pid = 1;
        old.state = State::Stopped;
        old.write(&p.status()).unwrap();
        record_start(&p, "connect", "new-relay", false);
        let st = Status::read(&p.status()).unwrap();
        assert_eq!(
            (st.relay.as_str(), st.pid, st.state),
            ("new-relay", std::process::id(), State::Connecting)
        );
        record_start(&p, "connect", "new-relay", true);
        let err = anyhow::anyhow!("relay refused the session: relay busy");
        record_failed_start(&p, &err, true);
        let st = Status::read(&p.status()).unwrap();
        assert_eq!(st.state, State::Failed);
        assert!(
            st.kill_switch,
            "the kill switch stays on after a failed start"
        );
        assert!(st.error.unwrap().contains("relay busy"));
        // What the engine recorded itself is left alone.
        let mut done = Status::read(&p.status()).unwrap();
        done.state = State::Stopped;
        done.error = None;
        done.write(&p.status()).unwrap();
        record_failed_start(&p, &err, true);
        assert_eq!(Status::read(&p.status()).unwrap().state, State::Stopped);
    }

    #[test]
    fn another_namespace_is_refused_and_the_same_one_passes() {
        let ours = current_netns();
        assert!(ensure_same_netns(ours, "the session").is_ok());
        assert!(ensure_same_netns(None, "the session").is_ok());
        if let Some(n) = ours {
            let err = ensure_same_netns(Some(n + 1), "the session")
                .unwrap_err()
                .to_string();
            assert!(err.contains("another network namespace"), "{err}");
        }
    }
}
