//! The status file a running `ferry connect` / `ferry socks5` keeps up to date
//! (`<state dir>/status.json`, rewritten atomically about once a second and on every event),
//! and its human-readable rendering for `ferry status`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum State {
    /// Tunnel being set up (kill switch already active).
    Connecting,
    /// Handshake done (and, for paid relays, the session accepted).
    Connected,
    /// Closing the session (final receipt).
    Disconnecting,
    /// The process stopped after an error; the kill switch stays until `ferry disconnect`.
    Failed,
    /// Stopped cleanly.
    Stopped,
}

/// The last co-signed receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LastReceipt {
    /// Receipt sequence number.
    pub(crate) seq: u64,
    /// Bytes up the relay claimed (and we co-signed).
    pub(crate) bytes_up: u64,
    /// Bytes down the relay claimed.
    pub(crate) bytes_down: u64,
    /// Whether the relay acknowledged storing it.
    pub(crate) acked: bool,
}

/// Everything `ferry status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Status {
    /// `connect` (TUN, full tunnel) or `socks5`.
    pub(crate) mode: String,
    /// Relay name from the config.
    pub(crate) relay: String,
    /// Relay endpoint in use: `ip:port`, or `host:port (ip:port)` for a resolved name.
    pub(crate) endpoint: String,
    /// Process id of the running client.
    pub(crate) pid: u32,
    /// State.
    pub(crate) state: State,
    /// Paid session (receipts) or trusted peer.
    pub(crate) paid: bool,
    /// Unix seconds when the process started.
    pub(crate) started_at: u64,
    /// Unix seconds of this snapshot.
    pub(crate) updated_at: u64,
    /// Inner bytes sent into the tunnel (our own count, control traffic excluded).
    pub(crate) bytes_up: u64,
    /// Inner bytes received from the tunnel.
    pub(crate) bytes_down: u64,
    /// Inbound packets dropped uncounted: not part of a flow we opened (paid sessions).
    #[serde(default)]
    pub(crate) unsolicited_dropped: u64,
    /// Seconds since the last WireGuard handshake.
    pub(crate) last_handshake_secs: Option<u64>,
    /// Session id (hex) of a paid session.
    pub(crate) session_id: Option<String>,
    /// Price of the session, micro-units per GiB.
    pub(crate) price_micros_per_gib: Option<u64>,
    /// Last co-signed receipt.
    pub(crate) last_receipt: Option<LastReceipt>,
    /// Spend so far: co-signed bytes × price, micro-units (rounded up).
    pub(crate) spend_micros: u64,
    /// Co-signed receipts not yet accepted by the ledger (from the local store).
    pub(crate) receipts_pending_submission: Option<usize>,
    /// Why the client stopped, if it failed.
    pub(crate) error: Option<String>,
    /// `--auto`: why this relay, the ranking, and the failovers so far.
    #[serde(default)]
    pub(crate) choice: Option<crate::auto::Choice>,
    /// Whether the kill switch (nft table `ferry`) is installed.
    pub(crate) kill_switch: bool,
}

impl Status {
    /// A fresh status at start-up.
    pub(crate) fn new(mode: &str, relay: &str, endpoint: String, paid: bool, now: u64) -> Self {
        Self {
            mode: mode.to_owned(),
            relay: relay.to_owned(),
            endpoint,
            pid: std::process::id(),
            state: State::Connecting,
            paid,
            started_at: now,
            updated_at: now,
            bytes_up: 0,
            bytes_down: 0,
            unsolicited_dropped: 0,
            last_handshake_secs: None,
            session_id: None,
            price_micros_per_gib: None,
            last_receipt: None,
            spend_micros: 0,
            receipts_pending_submission: None,
            error: None,
            choice: None,
            kill_switch: false,
        }
    }

    /// Writes `path` atomically (temp file + rename).
    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
    }

    /// Reads a status file.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Whether the process that wrote this is still alive.
    pub(crate) fn process_alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    /// Multi-line human-readable text.
    pub(crate) fn human(&self, alive: bool) -> String {
        let mut s = String::new();
        let state = match (self.state, alive) {
            (State::Connecting | State::Connected | State::Disconnecting, false) => {
                "not running (process gone)".to_owned()
            }
            (st, _) => format!("{st:?}").to_lowercase(),
        };
        let _ = writeln!(s, "state:      {state}");
        let kind = if self.paid { "paid" } else { "trusted" };
        let _ = writeln!(
            s,
            "relay:      {} ({}, {kind}, {} mode, pid {})",
            self.relay, self.endpoint, self.mode, self.pid
        );
        if let Some(h) = self.last_handshake_secs {
            let _ = writeln!(s, "handshake:  {h} s ago");
        }
        let _ = writeln!(
            s,
            "traffic:    {} up, {} down",
            human_bytes(self.bytes_up),
            human_bytes(self.bytes_down)
        );
        if self.unsolicited_dropped > 0 {
            let _ = writeln!(
                s,
                "dropped:    {} unsolicited inbound packets (no flow of ours; not billed)",
                self.unsolicited_dropped
            );
        }
        if let Some(r) = &self.last_receipt {
            let _ = writeln!(
                s,
                "receipt:    #{} {} up, {} down ({})",
                r.seq,
                human_bytes(r.bytes_up),
                human_bytes(r.bytes_down),
                if r.acked {
                    "stored by relay"
                } else {
                    "awaiting relay ack"
                }
            );
        } else if self.paid {
            let _ = writeln!(s, "receipt:    none yet");
        }
        if self.paid {
            let _ = writeln!(
                s,
                "spend:      {}.{:06} (price {} micro/GiB)",
                self.spend_micros / 1_000_000,
                self.spend_micros % 1_000_000,
                self.price_micros_per_gib.unwrap_or(0)
            );
        }
        if let Some(p) = self.receipts_pending_submission {
            let _ = writeln!(s, "ledger:     {p} receipt(s) waiting for submission");
        }
        let _ = writeln!(
            s,
            "kill switch: {}",
            if self.kill_switch { "on" } else { "off" }
        );
        if let Some(c) = &self.choice {
            let _ = writeln!(s, "chosen:     {}", c.reason);
            let _ = writeln!(
                s,
                "ranking:    {:<16} {:<7} {:>12} {:>5} {:>8}  TIER",
                "RELAY", "COUNTRY", "PRICE/GiB", "SCORE", "RTT ms"
            );
            for r in &c.ranked {
                let mark = if r.relay_key == c.current { "*" } else { " " };
                let rtt = r
                    .rtt_micros
                    .map_or("-".to_owned(), |m| format!("{:.1}", f64::from(m) / 1000.0));
                let tier = match r.tier {
                    Some(0) => "good enough",
                    Some(_) => "fallback",
                    None => "no answer",
                };
                let _ = writeln!(
                    s,
                    "          {mark} {:<16} {:<7} {:>12} {:>5} {rtt:>8}  {tier}",
                    &r.relay_key[..r.relay_key.len().min(16)],
                    r.country,
                    r.price_micros_per_gib,
                    r.score,
                );
            }
            for f in &c.failovers {
                let _ = writeln!(s, "failover:   {f}");
            }
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "error:      {e}");
        }
        s
    }
}

/// Spend in micro-units for `bytes` at `price` per GiB, rounded up.
pub(crate) fn spend_micros(bytes: u64, price_micros_per_gib: u64) -> u64 {
    let v = (u128::from(bytes) * u128::from(price_micros_per_gib)).div_ceil(1u128 << 30);
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// `1.5 MiB` style.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn status_round_trips_through_the_file_and_renders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        let mut st = Status::new("connect", "home", "198.51.100.1:51820".into(), true, 10);
        st.state = State::Connected;
        st.bytes_up = 3 << 20;
        st.bytes_down = 1536;
        st.price_micros_per_gib = Some(1_000_000);
        st.last_receipt = Some(LastReceipt {
            seq: 4,
            bytes_up: 3 << 20,
            bytes_down: 1 << 29,
            acked: true,
        });
        st.spend_micros = spend_micros((3 << 20) + (1 << 29), 1_000_000);
        st.write(&path).unwrap();
        let back = Status::read(&path).unwrap();
        assert_eq!(back, st);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["state"], "connected");
        assert_eq!(json["last_receipt"]["seq"], 4);
        let text = back.human(true);
        assert!(text.contains("state:      connected"), "{text}");
        assert!(text.contains("3.0 MiB up, 1.5 KiB down"), "{text}");
        assert!(text.contains("receipt:    #4"), "{text}");
        assert!(text.contains("spend:      0.502930"), "{text}");
        assert!(back.human(false).contains("not running"));
    }

    #[test]
    fn spend_rounds_up_and_never_overflows() {
        assert_eq!(spend_micros(0, 5), 0);
        assert_eq!(spend_micros(1, 1), 1);
        assert_eq!(spend_micros(1 << 30, 7), 7);
        assert_eq!(spend_micros(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn bytes_are_human_readable() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }
}
