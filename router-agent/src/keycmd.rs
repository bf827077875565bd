//! `genkey` / `pubkey`: wg-compatible base64 X25519 keys.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use ferry_keys::{WgPrivateKey, WriteMode};

pub(crate) fn genkey(out: Option<&Path>) -> Result<()> {
    let key = WgPrivateKey::generate().context("generating key")?;
    match out {
        Some(path) => {
            crate::identity::create_key_dir(path)?;
            key.write_to(path, WriteMode::CreateNew)
                .context("writing the key")
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{}", key.to_base64().as_str()).context("writing stdout")
        }
    }
}

pub(crate) fn pubkey() -> Result<()> {
    let mut text = String::with_capacity(64);
    std::io::stdin()
        .take(1024)
        .read_to_string(&mut text)
        .context("reading stdin")?;
    let key = WgPrivateKey::from_base64(&text).context("stdin is not a base64 private key")?;
    writeln!(std::io::stdout().lock(), "{}", key.public_key()).context("writing stdout")
}
