//! Soak: 50 boringtun clients re-handshake and exchange UDP echoes v4+v6 in rounds while the stock
//! client downloads continuously, for `FERRY_SOAK_SECS` (default 20 s here; `bench/soak.sh` runs
//! it for 10 minutes). Samples the agent's RSS and open file descriptors every round and prints a
//! `SOAK` summary line that the script reports.
//!
//! Asserted (behaviour, not speed): every round every client gets both echoes, the download
//! thread never fails, the agent stays up, and its fd count does not grow (a leak of sockets or
//! timers would). Memory growth is reported, not asserted (a bench number). Lost receipts: not
//! measurable until metering runs in the agent; reported as n/a.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_e2e::agent::{Agent, Egress};
use ferry_e2e::multipeer::run_peers;
use ferry_e2e::scenario::Scenario;
use ferry_e2e::servers::fetch;
use ferry_e2e::topology::*;

const N: usize = 50;
const MIB: u64 = 1 << 20;

fn soak_secs() -> u64 {
    std::env::var("FERRY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

fn egress() -> Egress {
    match std::env::var("FERRY_SOAK_EGRESS").as_deref() {
        Ok("userspace") => Egress::Userspace,
        _ => Egress::Tun,
    }
}

/// (RSS in KiB, open fds) of a process.
fn sample(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

#[test]
#[ignore = "needs root: netns"]
fn fifty_clients_soak_no_fd_growth() {
    let egress = egress();
    let (s, peers) = Scenario::start_with_peers(egress, N).unwrap();
    let pid = s.agent.proc.pid();
    let targets = [sa(INET4, ECHO_PORT), sa(INET6, ECHO_PORT)];
    let round = || {
        run_peers(
            &s.topo.client,
            s.agent.key.public_key(),
            Agent::endpoint(),
            &peers,
            &targets,
            Duration::from_secs(30),
        )
        .unwrap()
    };
    // Warm-up round: allocations that happen once (peer sessions, buffers) are not growth.
    let warm = round();
    assert!(
        warm.iter().all(|o| o.answered.len() == 2),
        "warm-up: {warm:?}"
    );
    let (rss0, fds0) = sample(pid).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let downloaded = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let secs = soak_secs();
    let t0 = Instant::now();
    let (mut rounds, mut rss_max, mut fds_max) = (0u64, rss0, fds0);
    std::thread::scope(|scope| {
        let (stop2, dl, fail) = (stop.clone(), downloaded.clone(), failures.clone());
        let client = s.topo.client.clone();
        scope.spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match fetch(
                    &client,
                    sa(INET4, DATA_PORT),
                    4 * MIB,
                    Duration::from_secs(30),
                ) {
                    Ok(f) if f.bytes == 4 * MIB => dl.fetch_add(f.bytes, Ordering::Relaxed),
                    _ => fail.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
        while t0.elapsed() < Duration::from_secs(secs) {
            let out = round();
            rounds += 1;
            let ok = out.iter().filter(|o| o.answered.len() == 2).count();
            assert_eq!(ok, N, "round {rounds}: {ok}/{N} clients answered");
            let (rss, fds) = sample(pid).expect("agent gone");
            rss_max = rss_max.max(rss);
            fds_max = fds_max.max(fds);
        }
        stop.store(true, Ordering::Relaxed);
    });
    let (rss1, fds1) = sample(pid).expect("agent gone at the end");
    let dl = downloaded.load(Ordering::Relaxed);
    eprintln!(
        "SOAK egress={egress:?} secs={} clients={N} rounds={rounds} handshakes={} \
         rss_start_kib={rss0} rss_end_kib={rss1} rss_max_kib={rss_max} rss_growth_kib={} \
         fds_start={fds0} fds_end={fds1} fds_max={fds_max} downloaded_mib={} \
         download_failures={} lost_receipts=n/a",
        t0.elapsed().as_secs(),
        rounds * N as u64,
        rss1 as i64 - rss0 as i64,
        dl / MIB,
        failures.load(Ordering::Relaxed),
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0, "downloads failed");
    assert!(dl > 0, "no download completed");
    assert!(fds1 <= fds0 + 2, "fd count grew from {fds0} to {fds1}");
}
