//! kill -9 chaos: a child process (this test binary re-executed) appends receipts in a
//! loop, printing each seq only after `append` returned; the parent SIGKILLs it at
//! random moments and checks on every restart that each printed (acknowledged) receipt
//! is still there. The child also compacts now and then, so kills land mid-compaction.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{receipt, sid};
use ferry_store::{Record, Store};

const CHILD_ENV: &str = "FERRY_STORE_CRASH_CHILD";
const SESSIONS: u64 = 3;

/// Child entry point: does nothing unless re-executed by the parent test.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mut store, _) = Store::open(&path).unwrap();
    let mut seq = (0..SESSIONS as u8)
        .filter_map(|s| store.latest(&sid(s)).map(|c| c.body().seq))
        .max()
        .unwrap_or(0);
    let out = std::io::stdout();
    loop {
        seq += 1;
        let s = (seq % SESSIONS) as u8;
        if seq % 7 == 0 {
            // A batch: the whole batch is acknowledged at once.
            let recs = vec![
                Record::CoSigned(receipt(s, seq)),
                Record::Submitted {
                    session_id: sid(s),
                    seq: seq - 3,
                },
            ];
            store.append_batch(recs).unwrap();
        } else {
            store.append(Record::CoSigned(receipt(s, seq))).unwrap();
        }
        writeln!(out.lock(), "{seq}").unwrap();
        if seq % 50 == 0 {
            store.compact(0).unwrap();
        }
    }
}

#[test]
fn kill_9_at_random_points_never_loses_an_acknowledged_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("receipts.log");
    let exe = std::env::current_exe().unwrap();
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d ^ u64::from(std::process::id());
    let mut max_acked = [0u64; SESSIONS as usize];
    let mut total_acked = 0;
    let runs = 120;
    for run in 0..runs {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.trim().parse::<u64>().ok())
                .collect::<Vec<u64>>()
        });
        std::thread::sleep(Duration::from_micros(5_000 + rng % 75_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        total_acked += acked.len();
        for &seq in &acked {
            let s = (seq % SESSIONS) as usize;
            max_acked[s] = max_acked[s].max(seq);
        }
        let (store, _) = Store::open(&path).unwrap();
        for s in 0..SESSIONS as u8 {
            let want = max_acked[s as usize];
            let have = store.latest(&sid(s)).map_or(0, |c| c.body().seq);
            assert!(
                have >= want,
                "run {run}: session {s} lost seq {want} (store has {have})"
            );
            if want > 0 {
                assert_eq!(store.latest(&sid(s)).unwrap(), &receipt(s, have));
            }
        }
    }
    eprintln!("acknowledged {total_acked} receipts over {runs} kills");
    assert!(
        total_acked >= runs,
        "children made too little progress: {total_acked}"
    );
}
