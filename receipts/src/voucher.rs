use ring::digest;

use crate::codec::{Reader, Writer, msg_type};
use crate::keys::verify;
use crate::{
    DecodeError, NetworkId, PublicKey, Signature, SigningKey, VerifyError, VoucherId, domain,
};

/// A ledger-signed money budget: one client key may spend up to `budget_micros` on sessions
/// priced at most `max_price_micros_per_gib`, starting them until `expires_at`. Each relay
/// names its own price in its signed accept; relays verify the voucher offline.
///
/// ```text
/// off len field
///   0   1 version (2)          1   1 type (0x01)
///   2  16 network_id          18  32 ledger_key
///  50  32 client_key          82  16 nonce
///  98   8 budget_micros      106   8 max_price_micros_per_gib
/// 114   8 issued_at          122   8 expires_at
/// 130  64 ledger signature over VOUCHER tag || bytes 0..130
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voucher {
    /// Network this voucher is valid in.
    pub network_id: NetworkId,
    /// The ledger key that signed it.
    pub ledger_key: PublicKey,
    /// The client identity allowed to spend it.
    pub client_key: PublicKey,
    /// Ledger-chosen random bytes making every voucher unique.
    pub nonce: [u8; 16],
    /// Money the client paid for, in millionths of a currency unit; sessions debit
    /// `ceil(bytes × session price / 2^30)` from it.
    pub budget_micros: u64,
    /// The highest session price (micros per GiB, 2^30 bytes) the client agreed to.
    pub max_price_micros_per_gib: u64,
    /// Unix seconds at issue.
    pub issued_at: u64,
    /// Unix seconds after which relays must refuse it.
    pub expires_at: u64,
    /// Ledger signature.
    pub signature: Signature,
}

impl Voucher {
    /// Encoded length in bytes.
    pub const LEN: usize = 194;
    const SIGNED_LEN: usize = Self::LEN - Signature::LEN;

    fn unsigned_bytes(&self) -> Vec<u8> {
        Writer::new(msg_type::VOUCHER, Self::LEN)
            .bytes(self.network_id.as_bytes())
            .bytes(self.ledger_key.as_bytes())
            .bytes(self.client_key.as_bytes())
            .bytes(&self.nonce)
            .u64(self.budget_micros)
            .u64(self.max_price_micros_per_gib)
            .u64(self.issued_at)
            .u64(self.expires_at)
            .finish()
    }

    /// Sets `ledger_key` to the signer's key and signs.
    pub fn sign(mut self, ledger: &SigningKey) -> Self {
        self.ledger_key = ledger.public_key();
        self.signature = ledger.sign(domain::VOUCHER, &self.unsigned_bytes());
        self
    }

    /// Canonical encoding, signature included.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.unsigned_bytes();
        b.extend_from_slice(self.signature.as_bytes());
        b
    }

    /// Decodes exactly one voucher; rejects wrong version, type, length or trailing bytes.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, msg_type::VOUCHER, Self::LEN)?;
        let v = Self {
            network_id: NetworkId(r.array()),
            ledger_key: PublicKey(r.array()),
            client_key: PublicKey(r.array()),
            nonce: r.array(),
            budget_micros: r.u64(),
            max_price_micros_per_gib: r.u64(),
            issued_at: r.u64(),
            expires_at: r.u64(),
            signature: Signature(r.array()),
        };
        if v.expires_at < v.issued_at {
            return Err(DecodeError::InvalidField("expires_at before issued_at"));
        }
        Ok(v)
    }

    /// Whether a session at `price_micros_per_gib` may be paid from this voucher.
    pub fn allows_price(&self, price_micros_per_gib: u64) -> bool {
        price_micros_per_gib <= self.max_price_micros_per_gib
    }

    /// The most bytes a session at `price_micros_per_gib` may carry when `spent_micros` of
    /// the budget are already gone (see [`crate::money`]).
    pub fn bytes_at(&self, price_micros_per_gib: u64, spent_micros: u64) -> u64 {
        crate::money::bytes_within(
            self.budget_micros.saturating_sub(spent_micros),
            price_micros_per_gib,
        )
    }

    /// SHA-256 of the canonical encoding; the id receipts and the ledger refer to.
    pub fn id(&self) -> VoucherId {
        let d = digest::digest(&digest::SHA256, &self.encode());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        VoucherId(out)
    }

    /// Checks the ledger signature, the network, the expected ledger key and expiry at
    /// `unix_ts`.
    pub fn verify(
        &self,
        network_id: &NetworkId,
        ledger_key: &PublicKey,
        unix_ts: u64,
    ) -> Result<(), VerifyError> {
        if &self.network_id != network_id {
            return Err(VerifyError::WrongNetwork);
        }
        if &self.ledger_key != ledger_key {
            return Err(VerifyError::WrongKey);
        }
        let unsigned = &self.encode()[..Self::SIGNED_LEN];
        if !verify(ledger_key, domain::VOUCHER, unsigned, &self.signature) {
            return Err(VerifyError::BadLedgerSignature);
        }
        if unix_ts > self.expires_at {
            return Err(VerifyError::Expired);
        }
        Ok(())
    }
}
