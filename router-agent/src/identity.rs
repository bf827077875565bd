//! `identity`: the relay's Ed25519 receipts key (register its public key at the ledger).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ferry_keys::{IdentityKey, KeyError, WriteMode};
use ferry_receipts::SigningKey;

use crate::config::Config;

pub(crate) fn identity(config: &Path, generate: bool) -> Result<()> {
    let cfg = Config::load(config)?;
    let id = cfg
        .raw
        .identity
        .as_ref()
        .context("the config has no [identity] key-file")?;
    let base = config.parent().unwrap_or(Path::new("."));
    let path = if id.key_file.is_absolute() {
        id.key_file.clone()
    } else {
        base.join(&id.key_file)
    };
    if generate && !path.exists() {
        create_key_dir(&path)?;
        IdentityKey::generate()
            .context("generating identity key")?
            .write_to(&path, WriteMode::CreateNew)
            .context("writing the identity key")?;
    }
    let key = load_key(&path, config)?;
    writeln!(std::io::stdout().lock(), "{}", key.public_key().to_hex()).context("writing stdout")
}

/// Loads the relay identity key `path` (0600, ours); a missing one is an error that says how
/// to create it for `config`.
pub(crate) fn load_key(path: &Path, config: &Path) -> Result<SigningKey> {
    match IdentityKey::load(path) {
        Ok(k) => Ok(k.signing_key()),
        Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => bail!(
            "identity key {} does not exist; create it with `ferry-agent identity --generate \
             --config {}`",
            path.display(),
            config.display()
        ),
        Err(e) => Err(e).context("relay identity key"),
    }
}

/// Creates the folder of a key file that is about to be written (mode 0700) if it is missing.
pub(crate) fn create_key_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display())),
        _ => Ok(()),
    }
}
