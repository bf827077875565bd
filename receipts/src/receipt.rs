use crate::codec::{Reader, Writer, msg_type};
use crate::keys::verify;
use crate::{
    DecodeError, NetworkId, PublicKey, SessionAccept, SessionId, Signature, SigningKey,
    VerifyError, VoucherId, domain,
};

/// What a receipt says: cumulative bytes of one session up to `seq`.
///
/// Counters are cumulative since session start and never decrease across a session's
/// receipts; `bytes_up` is client → internet, `bytes_down` internet → client, both counted
/// by the relay after its allowed-IPs and egress-policy checks.
///
/// ```text
/// off len field
///   0   1 version (2)          1   1 type (0x10)
///   2  16 network_id          18  32 relay_key
///  50  32 client_key          82  16 session_id
///  98  32 voucher_id         130   8 seq
/// 138   8 bytes_up           146   8 bytes_down
/// 154   8 session_started_at 162   8 issued_at
/// 170   8 price_micros_per_gib
/// 178     (end of body)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptBody {
    /// Network.
    pub network_id: NetworkId,
    /// Relay identity (signer).
    pub relay_key: PublicKey,
    /// Client identity (co-signer).
    pub client_key: PublicKey,
    /// Session.
    pub session_id: SessionId,
    /// Voucher paying for the session.
    pub voucher_id: VoucherId,
    /// Sequence number within the session; strictly increasing, starting at 1.
    pub seq: u64,
    /// Cumulative bytes client → internet, as counted by the relay.
    pub bytes_up: u64,
    /// Cumulative bytes internet → client, as counted by the relay.
    pub bytes_down: u64,
    /// Unix seconds at session start.
    pub session_started_at: u64,
    /// Unix seconds when the relay issued this receipt.
    pub issued_at: u64,
    /// Price per GiB agreed at session start.
    pub price_micros_per_gib: u64,
}

impl ReceiptBody {
    /// Encoded body length in bytes.
    pub const LEN: usize = 178;

    /// A receipt body continuing `accept`'s session.
    pub fn for_session(
        accept: &SessionAccept,
        seq: u64,
        bytes_up: u64,
        bytes_down: u64,
        issued_at: u64,
    ) -> Self {
        Self {
            network_id: accept.network_id,
            relay_key: accept.relay_key,
            client_key: accept.client_key,
            session_id: accept.session_id,
            voucher_id: accept.voucher_id,
            seq,
            bytes_up,
            bytes_down,
            session_started_at: accept.started_at,
            issued_at,
            price_micros_per_gib: accept.price_micros_per_gib,
        }
    }

    /// Total bytes in both directions (saturating: a u64 of bytes never overflows in practice).
    pub fn total_bytes(&self) -> u64 {
        self.bytes_up.saturating_add(self.bytes_down)
    }

    /// What this cumulative receipt debits its voucher: `ceil(total × price / 2^30)`
    /// ([`crate::money::debit_micros`]).
    pub fn debit_micros(&self) -> u64 {
        crate::money::debit_micros(self.total_bytes(), self.price_micros_per_gib)
    }

    /// Canonical encoding of the body.
    pub fn encode(&self) -> Vec<u8> {
        Writer::new(msg_type::RECEIPT, SignedReceipt::LEN)
            .bytes(self.network_id.as_bytes())
            .bytes(self.relay_key.as_bytes())
            .bytes(self.client_key.as_bytes())
            .bytes(self.session_id.as_bytes())
            .bytes(self.voucher_id.as_bytes())
            .u64(self.seq)
            .u64(self.bytes_up)
            .u64(self.bytes_down)
            .u64(self.session_started_at)
            .u64(self.issued_at)
            .u64(self.price_micros_per_gib)
            .finish()
    }

    /// True when every counter and time fits what the ledger stores (signed 64-bit:
    /// at most [`crate::MAX_LEDGER_VALUE`], and so does `bytes_up + bytes_down`). A receipt
    /// beyond that can never be credited: the ledger refuses it, so a client must not co-sign it.
    pub fn fits_ledger(&self) -> bool {
        [
            self.seq,
            self.bytes_up,
            self.bytes_down,
            self.bytes_up.saturating_add(self.bytes_down),
            self.session_started_at,
            self.issued_at,
            self.price_micros_per_gib,
        ]
        .iter()
        .all(|&v| v <= crate::MAX_LEDGER_VALUE)
    }

    /// True when `other` describes the same session (every identity field equal).
    pub fn same_session(&self, other: &Self) -> bool {
        self.network_id == other.network_id
            && self.relay_key == other.relay_key
            && self.client_key == other.client_key
            && self.session_id == other.session_id
            && self.voucher_id == other.voucher_id
            && self.session_started_at == other.session_started_at
            && self.price_micros_per_gib == other.price_micros_per_gib
    }

    /// Signs the body with the relay key; the signer must be `relay_key`.
    pub fn sign(self, relay: &SigningKey) -> SignedReceipt {
        let mut body = self;
        body.relay_key = relay.public_key();
        let relay_signature = relay.sign(domain::RECEIPT_RELAY, &body.encode());
        SignedReceipt {
            body,
            relay_signature,
        }
    }
}

/// A relay-signed receipt: body (178 bytes) followed by the relay's signature (64 bytes)
/// over `RECEIPT_RELAY tag || body`. 242 bytes, type byte 0x10.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedReceipt {
    /// The signed claims.
    pub body: ReceiptBody,
    /// Relay signature.
    pub relay_signature: Signature,
}

impl SignedReceipt {
    /// Encoded length in bytes.
    pub const LEN: usize = ReceiptBody::LEN + Signature::LEN;

    /// Canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.body.encode();
        b.extend_from_slice(self.relay_signature.as_bytes());
        b
    }

    /// Decodes exactly one relay-signed receipt.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, msg_type::RECEIPT, Self::LEN)?;
        Ok(read_signed_receipt(&mut r))
    }

    /// Checks the relay signature under the relay key the body names, and the network.
    pub fn verify(&self, network_id: &NetworkId) -> Result<(), VerifyError> {
        if &self.body.network_id != network_id {
            return Err(VerifyError::WrongNetwork);
        }
        if verify(
            &self.body.relay_key,
            domain::RECEIPT_RELAY,
            &self.body.encode(),
            &self.relay_signature,
        ) {
            Ok(())
        } else {
            Err(VerifyError::BadRelaySignature)
        }
    }

    /// The client's co-signature: binds this receipt to the client's own counts.
    /// The signer must be the body's `client_key` or verification will fail.
    pub fn cosign(
        self,
        client: &SigningKey,
        client_observed_up: u64,
        client_observed_down: u64,
        cosigned_at: u64,
    ) -> CoSignedReceipt {
        let mut c = CoSignedReceipt {
            receipt: self,
            client_observed_up,
            client_observed_down,
            cosigned_at,
            client_signature: Signature::ZERO,
        };
        c.client_signature = client.sign(domain::RECEIPT_CLIENT, &c.client_signed_bytes());
        c
    }
}

fn read_signed_receipt(r: &mut Reader<'_>) -> SignedReceipt {
    let body = ReceiptBody {
        network_id: NetworkId(r.array()),
        relay_key: PublicKey(r.array()),
        client_key: PublicKey(r.array()),
        session_id: SessionId(r.array()),
        voucher_id: VoucherId(r.array()),
        seq: r.u64(),
        bytes_up: r.u64(),
        bytes_down: r.u64(),
        session_started_at: r.u64(),
        issued_at: r.u64(),
        price_micros_per_gib: r.u64(),
    };
    SignedReceipt {
        body,
        relay_signature: Signature(r.array()),
    }
}

/// A receipt both parties signed: what the ledger credits and debits.
///
/// ```text
/// off len field
///   0   1 version (2)          1   1 type (0x11)
///   2 242 signed receipt (body + relay signature, its own version/type bytes included)
/// 244   8 client_observed_up 252   8 client_observed_down
/// 260   8 cosigned_at
/// 268  64 client signature over RECEIPT_CLIENT tag || bytes 2..268
/// 332     (end)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoSignedReceipt {
    /// The relay-signed receipt.
    pub receipt: SignedReceipt,
    /// The client's own count of bytes up (dispute evidence).
    pub client_observed_up: u64,
    /// The client's own count of bytes down (dispute evidence).
    pub client_observed_down: u64,
    /// Unix seconds when the client co-signed.
    pub cosigned_at: u64,
    /// Client signature.
    pub client_signature: Signature,
}

impl CoSignedReceipt {
    /// Encoded length in bytes.
    pub const LEN: usize = 2 + SignedReceipt::LEN + 24 + Signature::LEN;

    fn client_signed_bytes(&self) -> Vec<u8> {
        let mut b = self.receipt.encode();
        b.extend_from_slice(&self.client_observed_up.to_be_bytes());
        b.extend_from_slice(&self.client_observed_down.to_be_bytes());
        b.extend_from_slice(&self.cosigned_at.to_be_bytes());
        b
    }

    /// The body (shortcut).
    pub fn body(&self) -> &ReceiptBody {
        &self.receipt.body
    }

    /// Canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        Writer::new(msg_type::COSIGNED_RECEIPT, Self::LEN)
            .bytes(&self.client_signed_bytes())
            .bytes(self.client_signature.as_bytes())
            .finish()
    }

    /// Decodes exactly one co-signed receipt.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        // Outer header + length first, then the nested receipt's own header.
        let mut outer = Reader::new(buf, msg_type::COSIGNED_RECEIPT, Self::LEN)?;
        let inner: [u8; SignedReceipt::LEN] = outer.array();
        let receipt = SignedReceipt::decode(&inner)?;
        Ok(Self {
            receipt,
            client_observed_up: outer.u64(),
            client_observed_down: outer.u64(),
            cosigned_at: outer.u64(),
            client_signature: Signature(outer.array()),
        })
    }

    /// Checks the network, the relay signature and the client co-signature.
    pub fn verify(&self, network_id: &NetworkId) -> Result<(), VerifyError> {
        self.receipt.verify(network_id)?;
        if verify(
            &self.receipt.body.client_key,
            domain::RECEIPT_CLIENT,
            &self.client_signed_bytes(),
            &self.client_signature,
        ) {
            Ok(())
        } else {
            Err(VerifyError::BadClientSignature)
        }
    }
}
