//! Ed25519 identity keys: a 32-byte seed (RFC 8032 private key), stored as base64.

use std::path::Path;

use ferry_receipts::{PublicKey, SigningKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::file::{decode_base64_key, encode_base64_key, read_key, write_key};
use crate::{KeyError, WriteMode};

/// A Ferry identity key (relay, client or ledger): the Ed25519 seed, zeroized on drop.
pub struct IdentityKey {
    seed: Zeroizing<[u8; 32]>,
}

impl IdentityKey {
    /// A fresh key from the operating system's RNG.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(seed.as_mut_slice())
            .map_err(|_| KeyError::Random)?;
        Ok(Self { seed })
    }

    /// Parses the base64 seed (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        Ok(Self {
            seed: decode_base64_key(text)?,
        })
    }

    /// The seed as base64 (the key file's contents, without the newline).
    pub fn to_base64(&self) -> Zeroizing<String> {
        encode_base64_key(&self.seed)
    }

    /// The signing key for receipts and sessions.
    pub fn signing_key(&self) -> SigningKey {
        SigningKey::from_seed(&self.seed)
    }

    /// The public identity.
    pub fn public_key(&self) -> PublicKey {
        self.signing_key().public_key()
    }

    /// Writes the key to `path` with mode 0600.
    pub fn write_to(&self, path: &Path, mode: WriteMode) -> Result<(), KeyError> {
        write_key(path, &self.seed, mode)
    }

    /// Loads a key file, refusing it if group or others can access it.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Ok(Self {
            seed: read_key(path)?,
        })
    }
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityKey")
            .field("public", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// Loads an identity key file (mode checked) as a receipts signing key.
pub fn load_identity(path: &Path) -> Result<SigningKey, KeyError> {
    IdentityKey::load(path).map(|k| k.signing_key())
}
