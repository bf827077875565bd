//! Key file I/O: one base64 line, mode 0600, fsynced; loads refuse loose permissions.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::KeyError;

/// Key files are one line of base64 (44 characters); anything much larger is not a key.
const MAX_KEY_FILE_LEN: u64 = 1024;

/// Whether writing a key may replace an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Fail with [`KeyError::Exists`] if the file exists (the safe default).
    CreateNew,
    /// Replace an existing file (its mode is reset to 0600 before the key is written).
    Replace,
}

/// Checks that `path` is a regular file that group and others cannot access at all.
pub fn check_key_file_mode(path: &Path) -> Result<(), KeyError> {
    let meta = std::fs::metadata(path).map_err(|e| KeyError::io(path, e))?;
    check_meta(path, &meta)
}

fn check_meta(path: &Path, meta: &std::fs::Metadata) -> Result<(), KeyError> {
    if !meta.is_file() {
        return Err(KeyError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    // Another user who owns the file can read or replace the key whatever its mode.
    let me = nix::unistd::geteuid().as_raw();
    let owner = std::os::unix::fs::MetadataExt::uid(meta);
    if owner != me {
        return Err(KeyError::WrongOwner {
            path: path.to_owned(),
            owner,
            user: me,
        });
    }
    Ok(())
}

/// Writes `secret` as base64 plus a newline to a file created with mode 0600, then fsyncs.
pub(crate) fn write_key(path: &Path, secret: &[u8; 32], mode: WriteMode) -> Result<(), KeyError> {
    let mut opts = OpenOptions::new();
    opts.write(true).mode(0o600);
    match mode {
        WriteMode::CreateNew => opts.create_new(true),
        WriteMode::Replace => opts.create(true).truncate(true),
    };
    let mut file = opts.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => KeyError::Exists {
            path: path.to_owned(),
        },
        _ => KeyError::io(path, e),
    })?;
    // `mode(0o600)` only applies to newly created files; a replaced file keeps its old mode
    // unless we reset it, before any secret byte lands in it.
    file.set_permissions(Permissions::from_mode(0o600))
        .map_err(|e| KeyError::io(path, e))?;
    let mut line = Zeroizing::new(String::with_capacity(45));
    STANDARD.encode_string(secret, &mut line);
    line.push('\n');
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| KeyError::io(path, e))
}

/// Reads a key file after checking its permissions on the opened file (no race between
/// the check and the read), and decodes its single base64 line.
pub(crate) fn read_key(path: &Path) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let file = File::open(path).map_err(|e| KeyError::io(path, e))?;
    let meta = file.metadata().map_err(|e| KeyError::io(path, e))?;
    check_meta(path, &meta)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(128));
    file.take(MAX_KEY_FILE_LEN + 1)
        .read_to_end(&mut buf)
        .map_err(|e| KeyError::io(path, e))?;
    if buf.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(KeyError::Malformed {
            path: Some(path.to_owned()),
            reason: "file too large for a key",
        });
    }
    let text = std::str::from_utf8(&buf).map_err(|_| KeyError::Malformed {
        path: Some(path.to_owned()),
        reason: "not UTF-8 text",
    })?;
    decode_base64_key(text).map_err(|e| e.in_file(path))
}

/// Decodes standard (padded) base64 of exactly 32 bytes, ignoring surrounding whitespace.
pub(crate) fn decode_base64_key(text: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyError::Malformed {
            path: None,
            reason: "empty; expected base64 of a 32-byte key",
        });
    }
    let mut out = Zeroizing::new([0u8; 32]);
    // Decoding into a slice avoids an unzeroized heap copy; it fails on any other length.
    match STANDARD.decode_slice(text, out.as_mut_slice()) {
        Ok(32) => Ok(out),
        Ok(_) | Err(base64::DecodeSliceError::OutputSliceTooSmall) => Err(KeyError::Malformed {
            path: None,
            reason: "wrong length; expected base64 of exactly 32 bytes (44 characters)",
        }),
        Err(base64::DecodeSliceError::DecodeError(_)) => Err(KeyError::Malformed {
            path: None,
            reason: "not valid base64",
        }),
    }
}

/// Base64 of a 32-byte key, in a buffer zeroized on drop.
pub(crate) fn encode_base64_key(key: &[u8; 32]) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(44));
    STANDARD.encode_string(key, &mut s);
    s
}
