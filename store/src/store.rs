//! The durable receipt store: an fsynced append-only log plus an in-memory index.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_receipts::{CoSignedReceipt, SessionAccept, SessionId, SessionOffer, VoucherId};
use thiserror::Error;

use crate::file::{FileWrapper, LogFile, is_no_space};
use crate::record::{MAGIC, MAX_EXTRA_LEN, Record, SessionOpen, scan};

/// Why a store operation failed. After any error the log on disk still ends with the
/// last acknowledged record (a partial write is cut off before the next append).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file system is full (ENOSPC/EDQUOT). Stop extending credit; retry later.
    #[error("no space left for the receipt store")]
    NoSpace,
    /// Another I/O failure.
    #[error("receipt store {op} failed")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The file exists but is not a Ferry receipt store (refuse to touch it).
    #[error("{0} is not a ferry receipt store (bad magic)")]
    NotAStore(PathBuf),
    /// A record is too large to store (session-open `extra` over the limit).
    #[error("record too large")]
    TooLarge,
    /// Another process has the store open (two agents or clients on one state directory).
    #[error("receipt store {} is in use by another process{}", path.display(), holder.map_or_else(String::new, |p| format!(" (pid {p})")))]
    InUse {
        /// The store.
        path: PathBuf,
        /// The pid written by the process holding it, if readable.
        holder: Option<u32>,
    },
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> StoreError {
    move |source| {
        if is_no_space(&source) {
            StoreError::NoSpace
        } else {
            StoreError::Io { op, source }
        }
    }
}

/// What opening the store found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Valid records loaded.
    pub records: usize,
    /// Bytes of torn or corrupt tail cut off.
    pub dropped_bytes: u64,
    /// Where the dropped tail was saved for inspection, if it was.
    pub tail_saved_to: Option<PathBuf>,
}

/// Everything the store knows about one session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionEntry {
    /// How the session was opened, if recorded.
    pub open: Option<SessionOpen>,
    /// Latest co-signed receipt (highest seq).
    pub latest: Option<CoSignedReceipt>,
    /// Highest seq the ledger accepted (0 = none).
    pub submitted_seq: u64,
    /// The session ended.
    pub closed: bool,
}

impl SessionEntry {
    /// True when the latest receipt still has to reach the ledger.
    pub fn pending(&self) -> bool {
        self.latest
            .is_some_and(|c| c.body().seq > self.submitted_seq)
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Successful appends (batches).
    pub appends: u64,
    /// fsyncs issued.
    pub fsyncs: u64,
    /// Appends that failed for lack of space.
    pub no_space: u64,
    /// Compactions done.
    pub compactions: u64,
}

/// The durable receipt store. Single writer; wrap it in a mutex to share.
pub struct Store {
    /// Held (flock) while the store is open: one process per store.
    _lock: nix::fcntl::Flock<File>,
    path: PathBuf,
    wrap: FileWrapper,
    file: Box<dyn LogFile>,
    /// Bytes of the log that hold acknowledged records.
    len: u64,
    /// A failed append may have left bytes after `len`; cut them before the next one.
    dirty: bool,
    sessions: BTreeMap<SessionId, SessionEntry>,
    stats: StoreStats,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store at `path`, recovering from a torn or corrupt tail.
    pub fn open(path: impl AsRef<Path>) -> Result<(Self, RecoveryReport), StoreError> {
        Self::open_with(path, Arc::new(|f| Box::new(f) as Box<dyn LogFile>))
    }

    /// Like [`Store::open`], with every written file wrapped by `wrap` (fault injection).
    pub fn open_with(
        path: impl AsRef<Path>,
        wrap: FileWrapper,
    ) -> Result<(Self, RecoveryReport), StoreError> {
        let path = path.as_ref().to_path_buf();
        let lock = lock_store(&path)?;
        // Receipts say who paid whom for how much: owner only (0600), also for a log an older
        // version created with the umask's mode.
        let mut f = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("open"))?;
        restrict_mode(&f).map_err(io_err("chmod 600"))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).map_err(io_err("read"))?;
        let mut report = RecoveryReport::default();
        let mut file = wrap(f);
        let scanned = if buf.len() < MAGIC.len() && MAGIC.starts_with(&buf) {
            // New file, or a crash while writing the header: (re)write the header.
            file.truncate(0).map_err(io_err("truncate"))?;
            file.append(MAGIC).map_err(io_err("write header"))?;
            file.sync_data().map_err(io_err("fsync"))?;
            sync_dir(&path)?;
            report.dropped_bytes = buf.len() as u64;
            crate::record::Scan {
                records: Vec::new(),
                good_end: MAGIC.len() as u64,
            }
        } else {
            scan(&buf).ok_or_else(|| StoreError::NotAStore(path.clone()))?
        };
        let file_len = buf.len().max(MAGIC.len()) as u64;
        if scanned.good_end < file_len {
            report.dropped_bytes = file_len - scanned.good_end;
            report.tail_saved_to = save_tail(&path, scanned.good_end, &buf);
            file.truncate(scanned.good_end)
                .map_err(io_err("truncate"))?;
            file.sync_data().map_err(io_err("fsync"))?;
            tracing::warn!(
                dropped = report.dropped_bytes,
                at = scanned.good_end,
                "receipt store: cut a torn or corrupt tail"
            );
        }
        report.records = scanned.records.len();
        let mut store = Self {
            _lock: lock,
            path,
            wrap,
            file,
            len: scanned.good_end,
            dirty: false,
            sessions: BTreeMap::new(),
            stats: StoreStats::default(),
        };
        for (_, r) in scanned.records {
            store.apply(r);
        }
        Ok((store, report))
    }

    /// Appends one record; returns only after it is durable (fsync).
    pub fn append(&mut self, record: Record) -> Result<(), StoreError> {
        self.append_batch(vec![record])
    }

    /// Appends many records with one write and one fsync (bounds flash writes). On error
    /// none of them is stored.
    pub fn append_batch(&mut self, records: Vec<Record>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for r in &records {
            if let Record::SessionOpen(o) = r {
                if o.extra.len() > MAX_EXTRA_LEN {
                    return Err(StoreError::TooLarge);
                }
            }
            buf.extend_from_slice(&r.frame());
        }
        if self.dirty {
            self.file.truncate(self.len).map_err(io_err("truncate"))?;
            self.dirty = false;
        }
        let res = self.file.append(&buf).and_then(|()| {
            self.stats.fsyncs += 1;
            self.file.sync_data()
        });
        if let Err(e) = res {
            self.dirty = true;
            if self.file.truncate(self.len).is_ok() {
                self.dirty = false;
            }
            let err = io_err("append")(e);
            if matches!(err, StoreError::NoSpace) {
                self.stats.no_space += 1;
            }
            return Err(err);
        }
        self.len += buf.len() as u64;
        self.stats.appends += 1;
        for r in records {
            self.apply(r);
        }
        Ok(())
    }

    fn apply(&mut self, r: Record) {
        match r {
            Record::CoSigned(c) => {
                let e = self.sessions.entry(c.body().session_id).or_default();
                if e.latest.is_none_or(|l| c.body().seq > l.body().seq) {
                    e.latest = Some(c);
                }
            }
            Record::Submitted { session_id, seq } => {
                let e = self.sessions.entry(session_id).or_default();
                e.submitted_seq = e.submitted_seq.max(seq);
            }
            Record::SessionOpen(o) => {
                let id = o.accept.session_id;
                self.sessions.entry(id).or_default().open = Some(*o);
            }
            Record::SessionClosed(s) => self.sessions.entry(s).or_default().closed = true,
        }
    }

    /// The latest co-signed receipt of a session.
    pub fn latest(&self, session: &SessionId) -> Option<&CoSignedReceipt> {
        self.sessions.get(session)?.latest.as_ref()
    }

    /// Everything known about a session.
    pub fn session(&self, session: &SessionId) -> Option<&SessionEntry> {
        self.sessions.get(session)
    }

    /// All sessions in id order.
    pub fn sessions(&self) -> impl Iterator<Item = (&SessionId, &SessionEntry)> {
        self.sessions.iter()
    }

    /// Sessions to resume after a restart: opened, not closed.
    pub fn open_sessions(&self) -> impl Iterator<Item = &SessionEntry> {
        self.sessions
            .values()
            .filter(|e| e.open.is_some() && !e.closed)
    }

    /// Up to `max` latest receipts not yet accepted by the ledger, in session-id order.
    pub fn pending(&self, max: usize) -> Vec<CoSignedReceipt> {
        self.sessions
            .values()
            .filter(|e| e.pending())
            .filter_map(|e| e.latest)
            .take(max)
            .collect()
    }

    /// Number of sessions with a receipt pending submission.
    pub fn pending_count(&self) -> usize {
        self.sessions.values().filter(|e| e.pending()).count()
    }

    /// Durably marks these (session, seq) pairs as accepted by the ledger.
    pub fn mark_submitted(&mut self, done: &[(SessionId, u64)]) -> Result<(), StoreError> {
        let recs = done
            .iter()
            .filter(|(s, seq)| self.sessions.get(s).is_none_or(|e| e.submitted_seq < *seq))
            .map(|&(session_id, seq)| Record::Submitted { session_id, seq })
            .collect();
        self.append_batch(recs)
    }

    /// Micros already debited from `voucher` on this relay: its sessions' latest receipts,
    /// each at its own price.
    pub fn voucher_spent_micros(&self, voucher: &VoucherId) -> u64 {
        self.sessions
            .values()
            .filter_map(|e| e.latest)
            .filter(|c| &c.body().voucher_id == voucher)
            .map(|c| c.body().debit_micros())
            .fold(0u64, u64::saturating_add)
    }

    /// Size of the log file in bytes.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// Operation counters.
    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    /// Path of the log.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the log is over 64 KiB and over 4× what compaction would keep (call it
    /// after appends; compaction rewrites the live state once, so flash writes stay
    /// proportional to new data).
    pub fn should_compact(&self) -> bool {
        self.len > 64 * 1024 && self.len > 4 * self.live_bytes()
    }

    /// Approximate size of a compacted log.
    fn live_bytes(&self) -> u64 {
        const HDR: u64 = crate::record::RECORD_HEADER_LEN as u64 + 1;
        let per = |e: &SessionEntry| {
            e.open.as_ref().map_or(0, |o| {
                HDR + (SessionAccept::LEN + SessionOffer::LEN + o.extra.len()) as u64
            }) + e.latest.map_or(0, |_| HDR + CoSignedReceipt::LEN as u64)
                + if e.submitted_seq > 0 { HDR + 24 } else { 0 }
                + if e.closed { HDR + 16 } else { 0 }
        };
        MAGIC.len() as u64 + self.sessions.values().map(per).sum::<u64>()
    }

    /// The records a compacted log holds: per session its open record, latest receipt,
    /// submitted marker and closed marker. With `unix_ts`, sessions that are closed,
    /// fully submitted and whose voucher expired before `unix_ts` are dropped.
    fn live_records_at(&self, unix_ts: Option<u64>) -> Vec<Record> {
        let mut out = Vec::new();
        for (id, e) in &self.sessions {
            let settled = e.closed && !e.pending();
            let expired = match (&e.open, unix_ts) {
                (Some(o), Some(now)) => now > o.offer.voucher.expires_at,
                (None, Some(_)) => true,
                (_, None) => false,
            };
            if settled && expired {
                continue;
            }
            if let Some(o) = &e.open {
                out.push(Record::SessionOpen(Box::new(o.clone())));
            }
            if let Some(c) = e.latest {
                out.push(Record::CoSigned(c));
            }
            if e.submitted_seq > 0 {
                out.push(Record::Submitted {
                    session_id: *id,
                    seq: e.submitted_seq,
                });
            }
            if e.closed {
                out.push(Record::SessionClosed(*id));
            }
        }
        out
    }

    /// Rewrites the log keeping only the latest state per session (see
    /// `live_records_at`): writes a new file, fsyncs it, renames it over the log and
    /// fsyncs the directory. A crash at any point leaves either the old or the new log.
    pub fn compact(&mut self, unix_ts: u64) -> Result<(), StoreError> {
        let records = self.live_records_at(Some(unix_ts));
        let tmp = self.path.with_extension("compact");
        let res = (|| {
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err("create compaction file"))?;
            let mut w = (self.wrap)(f);
            let mut buf = MAGIC.to_vec();
            for r in &records {
                buf.extend_from_slice(&r.frame());
            }
            w.append(&buf).map_err(io_err("write compaction file"))?;
            w.sync_data().map_err(io_err("fsync compaction file"))?;
            drop(w);
            fs::rename(&tmp, &self.path).map_err(io_err("rename"))?;
            sync_dir(&self.path)?;
            Ok::<u64, StoreError>(buf.len() as u64)
        })();
        let new_len = match res {
            Ok(n) => n,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let f = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(io_err("reopen"))?;
        self.file = (self.wrap)(f);
        self.len = new_len;
        self.dirty = false;
        self.sessions.clear();
        for r in records {
            self.apply(r);
        }
        self.stats.compactions += 1;
        Ok(())
    }
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory"))
}

/// Saves a dropped tail next to the log as `<log>.corrupt` (only the latest one, so
/// repeated crashes cannot fill the flash; best effort: a full disk just skips it).
fn save_tail(path: &Path, at: u64, buf: &[u8]) -> Option<PathBuf> {
    let start = usize::try_from(at).ok()?;
    let tail = buf.get(start..)?;
    let mut name = path.as_os_str().to_owned();
    name.push(".corrupt");
    let p = PathBuf::from(name);
    fs::write(&p, tail).ok()?;
    Some(p)
}

/// Takes the store's lock file (`<log>.lock`, holding our pid) exclusively, or says who holds it.
fn lock_store(path: &Path) -> Result<nix::fcntl::Flock<File>, StoreError> {
    use std::io::{Seek, Write};
    let lock_path = path.with_extension("lock");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_err("open lock file"))?;
    let mut lock = match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = fs::read_to_string(&lock_path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return Err(StoreError::InUse {
                path: path.to_path_buf(),
                holder,
            });
        }
        Err((_, e)) => return Err(io_err("lock")(io::Error::from(e))),
    };
    let pid = std::process::id();
    lock.set_len(0).map_err(io_err("write lock file"))?;
    lock.seek(io::SeekFrom::Start(0))
        .map_err(io_err("write lock file"))?;
    writeln!(lock, "{pid}").map_err(io_err("write lock file"))?;
    Ok(lock)
}

/// Sets `f` to mode 0600 if group or others have any access.
fn restrict_mode(f: &File) -> std::io::Result<()> {
    let mode = f.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        f.set_permissions(fs::Permissions::from_mode(mode & 0o700 | 0o600))?;
    }
    Ok(())
}
