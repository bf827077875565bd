use std::path::PathBuf;

use thiserror::Error;

/// Why a key could not be generated, parsed, written or loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("key file {}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The key file exists and the caller did not ask to replace it.
    #[error("key file {} already exists; refusing to overwrite it", path.display())]
    Exists {
        /// The key file.
        path: PathBuf,
    },
    /// Group or others have some access to the key file.
    #[error(
        "key file {} has mode {mode:04o}: it must not be accessible by group or others; \
         fix it with `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file belongs to another user (who could read or replace it).
    #[error(
        "key file {} is owned by uid {owner}, not by this user (uid {user}): \
         fix it with `chown {user} {}` (or create a key of your own)",
        path.display(),
        path.display()
    )]
    WrongOwner {
        /// The key file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        user: u32,
    },
    /// The path is not a regular file.
    #[error("key file {} is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The contents are not base64 of exactly 32 bytes.
    #[error("{}: {reason}", path.as_ref().map_or_else(|| "key".to_owned(), |p| format!("key file {}", p.display())))]
    Malformed {
        /// The key file, when the key came from one.
        path: Option<PathBuf>,
        /// What is wrong (never contains key material).
        reason: &'static str,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

impl KeyError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn in_file(self, path: &std::path::Path) -> Self {
        match self {
            Self::Malformed { path: None, reason } => Self::Malformed {
                path: Some(path.to_owned()),
                reason,
            },
            other => other,
        }
    }
}
