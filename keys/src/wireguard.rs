//! WireGuard X25519 keys in `wg genkey` / `wg pubkey` format.

use std::fmt;
use std::path::Path;

use ring::rand::{SecureRandom, SystemRandom};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::file::{decode_base64_key, encode_base64_key, read_key, write_key};
use crate::{KeyError, WriteMode};

/// A WireGuard private key. Stored clamped, like `wg genkey`; zeroized on drop.
pub struct WgPrivateKey {
    secret: StaticSecret,
}

/// A WireGuard public key (X25519), base64 in configs and on the command line.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WgPublicKey(pub [u8; 32]);

impl WgPrivateKey {
    /// A fresh clamped key from the operating system's RNG (what `wg genkey` does).
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(bytes.as_mut_slice())
            .map_err(|_| KeyError::Random)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// Builds a key from raw bytes, clamping them (RFC 7748) as `wg genkey` does.
    /// `wg pubkey` clamps too, so the public key is the same either way.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let mut b = Zeroizing::new(*bytes);
        b[0] &= 248;
        b[31] &= 127;
        b[31] |= 64;
        Self {
            secret: StaticSecret::from(*b),
        }
    }

    /// Parses a `wg genkey` line (base64 of 32 bytes; whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        Ok(Self::from_bytes(&*decode_base64_key(text)?))
    }

    /// The key as base64, as `wg genkey` prints it.
    pub fn to_base64(&self) -> Zeroizing<String> {
        encode_base64_key(&self.secret.to_bytes())
    }

    /// The public key (`wg pubkey`): X25519 of the key with the base point.
    pub fn public_key(&self) -> WgPublicKey {
        WgPublicKey(x25519_dalek::PublicKey::from(&self.secret).to_bytes())
    }

    /// The key in the form boringtun's `Tunn::new` takes.
    pub fn static_secret(&self) -> StaticSecret {
        self.secret.clone()
    }

    /// Writes the key to `path` with mode 0600.
    pub fn write_to(&self, path: &Path, mode: WriteMode) -> Result<(), KeyError> {
        write_key(path, &Zeroizing::new(self.secret.to_bytes()), mode)
    }

    /// Loads a key file, refusing it if group or others can access it.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Ok(Self::from_bytes(&*read_key(path)?))
    }
}

impl fmt::Debug for WgPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WgPrivateKey")
            .field("public", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl WgPublicKey {
    /// Parses base64 of 32 bytes (as in `wg pubkey` output and wg configs).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        Ok(Self(*decode_base64_key(text)?))
    }

    /// Base64, as `wg pubkey` prints it.
    pub fn to_base64(&self) -> String {
        let mut s = String::with_capacity(44);
        base64::Engine::encode_string(&base64::engine::general_purpose::STANDARD, self.0, &mut s);
        s
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for WgPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for WgPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgPublicKey({})", self.to_base64())
    }
}
