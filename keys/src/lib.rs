//! Ferry key files: Ed25519 identity keys (receipts, sessions) and WireGuard X25519 keys.
//!
//! Owns generating keys from the OS RNG (`ring::rand::SystemRandom`), their text format
//! (base64 of 32 bytes, one line, exactly what `wg genkey` / `wg pubkey` use), and key files:
//! written with mode 0600 (never silently overwritten), and refused on load when group or
//! others have any access, with an error that names the file, its mode and the fix.
//! Secret bytes and their base64 are zeroized on drop.
//!
//! It must not log or print key material, and does no networking. The identity key's
//! signing itself lives in `ferry_receipts::SigningKey`.
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod error;
mod file;
mod identity;
mod wireguard;

pub use error::KeyError;
pub use file::{WriteMode, check_key_file_mode};
pub use identity::{IdentityKey, load_identity};
pub use wireguard::{WgPrivateKey, WgPublicKey};
