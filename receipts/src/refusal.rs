//! The client's signed refusal of a relay-signed receipt: what the directory counts against a
//! relay's score (docs/directory.md, "Refusals"). It carries the refused receipt itself, so
//! it can only be made by a client that really had a session, paid by its own voucher, with
//! that relay; the client's own counts are its evidence.

use crate::codec::{Reader, Writer, msg_type};
use crate::keys::verify;
use crate::{
    DecodeError, NetworkId, ReceiptBody, Signature, SignedReceipt, SigningKey, VerifyError, domain,
};

/// Highest refusal reason code (the control protocol's `ReceiptRejected` codes, 1..=5:
/// over-claim, non-monotonic, wrong session, bad signature, out of range).
pub const MAX_REFUSAL_REASON: u8 = 5;

/// A client-signed "I refused this receipt".
///
/// ```text
/// off len field
///   0   1 version (2)          1   1 type (0x12)
///   2 242 refused signed receipt (body + relay signature, own version/type bytes)
/// 244   8 client_observed_up 252   8 client_observed_down
/// 260   1 reason (1..=5)     261   8 refused_at
/// 269  64 client signature over RECEIPT_REFUSAL tag || bytes 2..269
/// 333     (end)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptRefusal {
    /// The relay-signed receipt the client refused.
    pub receipt: SignedReceipt,
    /// The client's own count of bytes up when it refused.
    pub client_observed_up: u64,
    /// The client's own count of bytes down when it refused.
    pub client_observed_down: u64,
    /// Why (a `ReceiptRejected` code, 1..=[`MAX_REFUSAL_REASON`]).
    pub reason: u8,
    /// Unix seconds when the client refused.
    pub refused_at: u64,
    /// Client signature (under the receipt body's `client_key`).
    pub client_signature: Signature,
}

impl ReceiptRefusal {
    /// Encoded length in bytes.
    pub const LEN: usize = 2 + SignedReceipt::LEN + 25 + Signature::LEN;

    fn client_signed_bytes(&self) -> Vec<u8> {
        let mut b = self.receipt.encode();
        b.extend_from_slice(&self.client_observed_up.to_be_bytes());
        b.extend_from_slice(&self.client_observed_down.to_be_bytes());
        b.push(self.reason);
        b.extend_from_slice(&self.refused_at.to_be_bytes());
        b
    }

    /// The refused receipt's body (shortcut).
    pub fn body(&self) -> &ReceiptBody {
        &self.receipt.body
    }

    /// Signs as the client (`client` must be the body's client key to verify).
    pub fn sign(mut self, client: &SigningKey) -> Self {
        self.client_signature = client.sign(domain::RECEIPT_REFUSAL, &self.client_signed_bytes());
        self
    }

    /// Canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        Writer::new(msg_type::RECEIPT_REFUSAL, Self::LEN)
            .bytes(&self.client_signed_bytes())
            .bytes(self.client_signature.as_bytes())
            .finish()
    }

    /// Decodes exactly one refusal; the reason must be a defined code.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut outer = Reader::new(buf, msg_type::RECEIPT_REFUSAL, Self::LEN)?;
        let inner: [u8; SignedReceipt::LEN] = outer.array();
        let receipt = SignedReceipt::decode(&inner)?;
        let r = Self {
            receipt,
            client_observed_up: outer.u64(),
            client_observed_down: outer.u64(),
            reason: outer.array::<1>()[0],
            refused_at: outer.u64(),
            client_signature: Signature(outer.array()),
        };
        if !(1..=MAX_REFUSAL_REASON).contains(&r.reason) {
            return Err(DecodeError::InvalidField("refusal reason"));
        }
        Ok(r)
    }

    /// Checks the network, the refused receipt's relay signature and the client signature.
    pub fn verify(&self, network_id: &NetworkId) -> Result<(), VerifyError> {
        self.receipt.verify(network_id)?;
        if verify(
            &self.receipt.body.client_key,
            domain::RECEIPT_REFUSAL,
            &self.client_signed_bytes(),
            &self.client_signature,
        ) {
            Ok(())
        } else {
            Err(VerifyError::BadClientSignature)
        }
    }
}
