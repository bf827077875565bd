//! The file operations the store needs, behind a trait so tests can inject faults
//! (disk full, failing fsync) without root.

use std::fs::File;
use std::io::{self, Write};

/// An append-only log file.
pub trait LogFile: Send {
    /// Appends all of `buf` (may have written a prefix when it fails).
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes appended data durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

impl LogFile for File {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
}

/// Wraps every file the store opens for writing (the log and compaction's new file).
pub type FileWrapper = std::sync::Arc<dyn Fn(File) -> Box<dyn LogFile> + Send + Sync>;

/// Replaces `path` with `bytes` so that a crash leaves the old or the new contents, never a
/// torn mix: a temporary file beside it (mode `mode`), fsync, rename, fsync of the directory.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// True for "no space left" (ENOSPC) and "quota exceeded" (EDQUOT).
pub fn is_no_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(28 | 122))
}
