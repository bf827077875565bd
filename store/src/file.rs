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

/// True for "no space left" (ENOSPC) and "quota exceeded" (EDQUOT).
pub fn is_no_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(28 | 122))
}
