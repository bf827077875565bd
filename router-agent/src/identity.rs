//! `identity`: the relay's Ed25519 receipts key (register its public key at the ledger).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use ferry_keys::{IdentityKey, WriteMode};

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
        IdentityKey::generate()
            .context("generating identity key")?
            .write_to(&path, WriteMode::CreateNew)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let key =
        IdentityKey::load(&path).with_context(|| format!("identity key {}", path.display()))?;
    writeln!(std::io::stdout().lock(), "{}", key.public_key().to_hex()).context("writing stdout")
}
