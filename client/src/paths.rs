//! Where the client keeps its files (keys, voucher, receipt log, status, pid), and a small
//! polling helper the commands share.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cli::Cli;
use crate::config::{Config, expand_home};

/// Resolved file locations.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub(crate) dir: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) state: PathBuf,
}

impl Paths {
    pub(crate) fn from_cli(cli: &Cli) -> Self {
        let dir = cli
            .dir
            .as_deref()
            .map(expand_home)
            .unwrap_or_else(|| expand_home(Path::new("~/.config/ferry")));
        let config = cli
            .config
            .as_deref()
            .map(expand_home)
            .unwrap_or_else(|| dir.join("client.toml"));
        let state = cli
            .state_dir
            .as_deref()
            .map(expand_home)
            .unwrap_or_else(default_state_dir);
        Self { dir, config, state }
    }

    pub(crate) fn identity(&self) -> PathBuf {
        self.dir.join("identity.key")
    }

    pub(crate) fn wg(&self) -> PathBuf {
        self.dir.join("wg.key")
    }

    pub(crate) fn voucher(&self) -> PathBuf {
        self.dir.join("voucher")
    }

    pub(crate) fn status(&self) -> PathBuf {
        self.state.join("status.json")
    }

    pub(crate) fn pid(&self) -> PathBuf {
        self.state.join("ferry.pid")
    }

    pub(crate) fn receipts(&self, cfg: &Config) -> PathBuf {
        cfg.client
            .receipts
            .as_deref()
            .map(expand_home)
            .unwrap_or_else(|| self.dir.join("receipts.log"))
    }

    /// Creates the state directory (0700).
    pub(crate) fn ensure_state(&self) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.state)
            .with_context(|| format!("creating state dir {}", self.state.display()))
    }
}

fn default_state_dir() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/ferry");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("ferry"),
        None => PathBuf::from(format!("/tmp/ferry-{uid}")),
    }
}

/// Waits until `f` holds or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}
