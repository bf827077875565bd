use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::{PublicKey, Signature};

/// An Ed25519 signing key held in memory. Construct it from a 32-byte seed; generating
/// the seed (randomness) and storing it (files) is the caller's business.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl SigningKey {
    /// Builds the key from its 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        // `from_seed_unchecked` cannot fail for a 32-byte input; ring only rejects wrong lengths.
        #[allow(clippy::expect_used)]
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).expect("32-byte seed is always valid");
        let mut pk = [0u8; 32];
        pk.copy_from_slice(pair.public_key().as_ref());
        Self {
            pair,
            public: PublicKey(pk),
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Signs `domain || msg`.
    pub fn sign(&self, domain: &[u8], msg: &[u8]) -> Signature {
        let mut buf = Vec::with_capacity(domain.len() + msg.len());
        buf.extend_from_slice(domain);
        buf.extend_from_slice(msg);
        let sig = self.pair.sign(&buf);
        let mut out = [0u8; 64];
        out.copy_from_slice(sig.as_ref());
        Signature(out)
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Verifies `sig` over `domain || msg` under `key`.
pub(crate) fn verify(key: &PublicKey, domain: &[u8], msg: &[u8], sig: &Signature) -> bool {
    let mut buf = Vec::with_capacity(domain.len() + msg.len());
    buf.extend_from_slice(domain);
    buf.extend_from_slice(msg);
    UnparsedPublicKey::new(&ED25519, key.as_bytes())
        .verify(&buf, sig.as_bytes())
        .is_ok()
}
