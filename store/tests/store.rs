//! Durability, recovery, batching, compaction and disk-full behaviour of the store.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::{self, File};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{receipt, sid};
use ferry_store::{LogFile, MAGIC, Record, Store, StoreError, scan};

fn fill(store: &mut Store, sessions: u8, per: u64) {
    for seq in 1..=per {
        for s in 0..sessions {
            store.append(Record::CoSigned(receipt(s, seq))).unwrap();
        }
    }
}

#[test]
fn appended_receipts_survive_reopen_and_index_keeps_the_latest_per_session() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("receipts.log");
    let (mut s, rep) = Store::open(&p).unwrap();
    assert_eq!(rep.records, 0);
    fill(&mut s, 3, 5);
    assert_eq!(s.stats().fsyncs, 15);
    drop(s);
    let (s, rep) = Store::open(&p).unwrap();
    assert_eq!((rep.records, rep.dropped_bytes), (15, 0));
    for n in 0..3 {
        assert_eq!(s.latest(&sid(n)).unwrap(), &receipt(n, 5));
    }
    assert_eq!(s.pending(10).len(), 3);
}

#[test]
fn a_batch_is_one_fsync_and_submitted_markers_clear_the_pending_set() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.log");
    let (mut s, _) = Store::open(&p).unwrap();
    let batch = (1..=50)
        .map(|q| Record::CoSigned(receipt(q as u8 % 5, q)))
        .collect();
    s.append_batch(batch).unwrap();
    assert_eq!(s.stats().fsyncs, 1);
    assert_eq!(s.pending_count(), 5);
    let first = s.pending(2);
    let done: Vec<_> = first
        .iter()
        .map(|c| (c.body().session_id, c.body().seq))
        .collect();
    s.mark_submitted(&done).unwrap();
    assert_eq!(s.pending_count(), 3);
    // A newer receipt for a submitted session makes it pending again.
    let sid0 = first[0].body().session_id;
    s.append(Record::CoSigned(receipt(sid0.0[0], 99))).unwrap();
    assert_eq!(s.pending_count(), 4);
    drop(s);
    let (s, _) = Store::open(&p).unwrap();
    assert_eq!(s.pending_count(), 4);
    assert_eq!(
        s.session(&first[1].body().session_id)
            .unwrap()
            .submitted_seq,
        first[1].body().seq
    );
}

#[test]
fn a_torn_last_record_is_cut_at_every_byte_offset_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.log");
    let (mut s, _) = Store::open(&p).unwrap();
    fill(&mut s, 2, 3);
    let before_last = s.file_len();
    s.append(Record::CoSigned(receipt(0, 4))).unwrap();
    let full = fs::read(&p).unwrap();
    drop(s);
    let work = dir.path().join("torn.log");
    for cut in before_last..full.len() as u64 {
        fs::write(&work, &full[..cut as usize]).unwrap();
        let (mut t, rep) = Store::open(&work).unwrap();
        assert_eq!(rep.records, 6, "cut at {cut}");
        assert_eq!(rep.dropped_bytes, cut - before_last);
        assert_eq!(t.file_len(), before_last);
        assert_eq!(fs::metadata(&work).unwrap().len(), before_last);
        assert_eq!(t.latest(&sid(0)).unwrap().body().seq, 3);
        // The log is writable again right after recovery.
        t.append(Record::CoSigned(receipt(0, 4))).unwrap();
        drop(t);
        assert_eq!(fs::read(&work).unwrap(), full);
        for e in fs::read_dir(dir.path()).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().contains("corrupt") {
                fs::remove_file(e.path()).unwrap();
            }
        }
    }
}

#[test]
fn random_corruption_drops_only_the_records_from_the_damage_onwards() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.log");
    let (mut s, _) = Store::open(&p).unwrap();
    fill(&mut s, 4, 10);
    drop(s);
    let good = fs::read(&p).unwrap();
    let offsets: Vec<u64> = scan(&good)
        .unwrap()
        .records
        .iter()
        .map(|(o, _)| *o)
        .collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = MAGIC.len() + (x as usize % (good.len() - MAGIC.len()));
        let mut bad = good.clone();
        bad[at] ^= 1 + (x >> 32) as u8 % 255;
        fs::write(&p, &bad).unwrap();
        let (s, rep) = Store::open(&p).unwrap();
        let damaged = offsets.iter().filter(|&&o| o as usize <= at).count() - 1;
        assert_eq!(rep.records, damaged, "flip at {at}");
        assert_eq!(s.file_len(), offsets[damaged]);
        let saved = rep.tail_saved_to.unwrap();
        assert_eq!(fs::read(&saved).unwrap(), bad[offsets[damaged] as usize..]);
        fs::remove_file(saved).unwrap();
    }
}

#[test]
fn a_file_that_is_not_a_store_is_refused_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.log");
    fs::write(&p, b"hello world, not a store").unwrap();
    assert!(matches!(Store::open(&p), Err(StoreError::NotAStore(_))));
    assert_eq!(fs::read(&p).unwrap(), b"hello world, not a store");
}

#[test]
fn compaction_keeps_the_latest_state_per_session_and_drops_settled_expired_ones() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.log");
    let (mut s, _) = Store::open(&p).unwrap();
    fill(&mut s, 4, 60);
    s.mark_submitted(&[(sid(1), 60), (sid(2), 20)]).unwrap();
    s.append_batch(vec![
        Record::SessionClosed(sid(1)),
        Record::SessionClosed(sid(2)),
    ])
    .unwrap();
    let big = s.file_len();
    assert!(s.should_compact());
    s.compact(1_900_000_000).unwrap();
    assert!(s.file_len() * 10 < big, "{} vs {big}", s.file_len());
    assert!(!s.should_compact());
    // Session 1 is closed, fully submitted and (no open record) expired: gone. Session 2
    // still has a pending receipt: kept.
    assert!(s.session(&sid(1)).is_none());
    assert_eq!(s.latest(&sid(2)).unwrap().body().seq, 60);
    assert_eq!(s.session(&sid(2)).unwrap().submitted_seq, 20);
    assert!(s.session(&sid(2)).unwrap().closed);
    // Appends go to the new file; everything survives a reopen.
    s.append(Record::CoSigned(receipt(0, 61))).unwrap();
    drop(s);
    let (s, rep) = Store::open(&p).unwrap();
    assert_eq!(rep.dropped_bytes, 0);
    assert_eq!(s.latest(&sid(0)).unwrap().body().seq, 61);
    assert_eq!(s.latest(&sid(3)).unwrap().body().seq, 60);
    assert_eq!(s.pending_count(), 3);
    assert!(!dir.path().join("r.compact").exists());
}

/// A file that accepts at most `quota` more bytes, like a nearly full file system.
struct QuotaFile {
    inner: File,
    quota: Arc<AtomicU64>,
}

impl LogFile for QuotaFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let q = self.quota.load(Ordering::SeqCst);
        if (buf.len() as u64) <= q {
            self.quota.fetch_sub(buf.len() as u64, Ordering::SeqCst);
            return LogFile::append(&mut self.inner, buf);
        }
        // Partial write, then ENOSPC, as a real file system does.
        LogFile::append(&mut self.inner, &buf[..q as usize])?;
        self.quota.store(0, Ordering::SeqCst);
        Err(io::Error::from_raw_os_error(28))
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let old = self.inner.metadata()?.len();
        self.inner.set_len(len)?;
        self.quota
            .fetch_add(old.saturating_sub(len), Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn disk_full_is_a_typed_error_leaves_a_clean_log_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.log");
    let quota = Arc::new(AtomicU64::new(3000));
    let q2 = quota.clone();
    let wrap: ferry_store::FileWrapper = Arc::new(move |f| {
        Box::new(QuotaFile {
            inner: f,
            quota: q2.clone(),
        }) as Box<dyn LogFile>
    });
    let (mut s, _) = Store::open_with(&p, wrap.clone()).unwrap();
    let mut acked = 0u64;
    let mut failures = 0;
    for seq in 1..=20 {
        match s.append(Record::CoSigned(receipt(0, seq))) {
            Ok(()) => acked = seq,
            Err(StoreError::NoSpace) => failures += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(acked >= 5 && failures > 0, "acked {acked}");
    assert_eq!(s.stats().no_space, failures);
    // A batch that does not fit is refused whole.
    let batch = (21..=25).map(|q| Record::CoSigned(receipt(0, q))).collect();
    assert!(matches!(s.append_batch(batch), Err(StoreError::NoSpace)));
    // On disk: exactly the acknowledged records, no partial tail.
    let img = fs::read(&p).unwrap();
    let sc = scan(&img).unwrap();
    assert_eq!(sc.records.len() as u64, acked);
    assert_eq!(sc.good_end, img.len() as u64);
    // Compaction needs space too; it fails cleanly and the old log stays.
    quota.store(0, Ordering::SeqCst);
    assert!(matches!(s.compact(0), Err(StoreError::NoSpace)));
    assert_eq!(fs::read(&p).unwrap(), img);
    // Space returns: appends work again.
    quota.store(1 << 20, Ordering::SeqCst);
    s.append(Record::CoSigned(receipt(0, 100))).unwrap();
    drop(s);
    let (s, rep) = Store::open(&p).unwrap();
    assert_eq!(rep.dropped_bytes, 0);
    assert_eq!(rep.records as u64, acked + 1);
    assert_eq!(s.latest(&sid(0)).unwrap().body().seq, 100);
}

/// A small real tmpfs; unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
#[ignore = "needs root: mounts a 64 KiB tmpfs"]
fn real_enospc_on_a_full_tmpfs() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("fe-h6-tmpfs");
    fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "fe-h6-tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(ok.success(), "mount failed");
    let guard = Tmpfs(mnt.clone());
    let p = mnt.join("r.log");
    let (mut s, _) = Store::open(&p).unwrap();
    let mut acked = 0;
    let mut seq = 0;
    loop {
        seq += 1;
        match s.append(Record::CoSigned(receipt(1, seq))) {
            Ok(()) => acked = seq,
            Err(StoreError::NoSpace) => break,
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(seq < 10_000);
    }
    assert!(acked > 50, "{acked}");
    drop(s);
    let (mut s, rep) = Store::open(&p).unwrap();
    assert_eq!(rep.records as u64, acked);
    assert!(s.append(Record::CoSigned(receipt(1, seq))).is_err());
    // Space returns.
    let ok = std::process::Command::new("mount")
        .args(["-o", "remount,size=1m"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(ok.success());
    s.append(Record::CoSigned(receipt(1, seq))).unwrap();
    assert_eq!(s.latest(&common::sid(1)).unwrap().body().seq, seq);
    drop(s);
    drop(guard);
}

mod props {
    use super::common::{receipt, sid};
    use ferry_store::{MAGIC, Record, scan};
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = Record> {
        prop_oneof![
            (any::<u8>(), 1u64..1000).prop_map(|(s, q)| Record::CoSigned(receipt(s, q))),
            (any::<u8>(), any::<u64>()).prop_map(|(s, seq)| Record::Submitted {
                session_id: sid(s),
                seq
            }),
            any::<u8>().prop_map(|s| Record::SessionClosed(sid(s))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn records_round_trip_through_a_log_image(rs in proptest::collection::vec(record(), 0..20)) {
            let mut img = MAGIC.to_vec();
            for r in &rs {
                img.extend_from_slice(&r.frame());
            }
            let sc = scan(&img).unwrap();
            prop_assert_eq!(sc.good_end, img.len() as u64);
            let got: Vec<Record> = sc.records.into_iter().map(|(_, r)| r).collect();
            prop_assert_eq!(got, rs);
        }

        #[test]
        fn scan_never_panics_and_never_reads_past_the_image(tail in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut img = MAGIC.to_vec();
            img.extend_from_slice(&tail);
            let sc = scan(&img).unwrap();
            prop_assert!(sc.good_end as usize <= img.len());
            let _ = scan(&tail);
        }
    }
}

#[test]
fn the_receipt_log_is_owner_only_and_a_loose_one_is_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("receipts.log");
    let (mut s, _) = Store::open(&p).unwrap();
    assert_eq!(mode(&p), 0o600);
    fill(&mut s, 2, 3);
    s.compact(1).unwrap();
    assert_eq!(mode(&p), 0o600, "compaction keeps the mode");
    drop(s);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    let _ = Store::open(&p).unwrap();
    assert_eq!(mode(&p), 0o600);
}

#[test]
fn a_second_process_on_the_same_store_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("receipts.log");
    let (first, _) = Store::open(&p).unwrap();
    let e = Store::open(&p).unwrap_err();
    assert!(matches!(e, StoreError::InUse { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("in use by another process")
            && msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    drop(first);
    assert!(Store::open(&p).is_ok(), "free again once closed");
}
