use crate::codec::{Reader, Writer, msg_type};
use crate::keys::verify;
use crate::{
    DecodeError, NetworkId, PublicKey, SessionId, Signature, SigningKey, VerifyError, Voucher,
    VoucherId, domain,
};

/// A paying client's request to open a session on one relay: its identity, its WireGuard
/// key and the voucher that pays, signed by the client identity key.
///
/// ```text
/// off len field
///   0   1 version (2)          1   1 type (0x02)
///   2  16 network_id          18  32 relay_key (the relay this offer is for)
///  50  32 client_key          82  32 client_wg_key (X25519)
/// 114  16 nonce              130   8 created_at
/// 138 194 voucher (its full encoding)
/// 332  64 client signature over SESSION_OFFER tag || bytes 0..332
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOffer {
    /// Network.
    pub network_id: NetworkId,
    /// The relay the client wants to use; an offer for another relay is refused.
    pub relay_key: PublicKey,
    /// Client identity key; must equal the voucher's client key.
    pub client_key: PublicKey,
    /// The client's WireGuard (X25519) public key to admit as a peer.
    pub client_wg_key: [u8; 32],
    /// Client-chosen random bytes.
    pub nonce: [u8; 16],
    /// Unix seconds at creation.
    pub created_at: u64,
    /// The voucher paying for the session.
    pub voucher: Voucher,
    /// Client signature.
    pub signature: Signature,
}

impl SessionOffer {
    /// Encoded length in bytes.
    pub const LEN: usize = 396;
    const SIGNED_LEN: usize = Self::LEN - Signature::LEN;

    fn unsigned_bytes(&self) -> Vec<u8> {
        Writer::new(msg_type::SESSION_OFFER, Self::LEN)
            .bytes(self.network_id.as_bytes())
            .bytes(self.relay_key.as_bytes())
            .bytes(self.client_key.as_bytes())
            .bytes(&self.client_wg_key)
            .bytes(&self.nonce)
            .u64(self.created_at)
            .bytes(&self.voucher.encode())
            .finish()
    }

    /// Sets `client_key` to the signer's key and signs.
    pub fn sign(mut self, client: &SigningKey) -> Self {
        self.client_key = client.public_key();
        self.signature = client.sign(domain::SESSION_OFFER, &self.unsigned_bytes());
        self
    }

    /// Canonical encoding, signature included.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.unsigned_bytes();
        b.extend_from_slice(self.signature.as_bytes());
        b
    }

    /// Decodes exactly one offer.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, msg_type::SESSION_OFFER, Self::LEN)?;
        let network_id = NetworkId(r.array());
        let relay_key = PublicKey(r.array());
        let client_key = PublicKey(r.array());
        let client_wg_key = r.array();
        let nonce = r.array();
        let created_at = r.u64();
        let voucher = Voucher::decode(&r.array::<{ Voucher::LEN }>())?;
        Ok(Self {
            network_id,
            relay_key,
            client_key,
            client_wg_key,
            nonce,
            created_at,
            voucher,
            signature: Signature(r.array()),
        })
    }

    /// What a relay checks before admitting the client: the offer is for this network
    /// and this relay, the client signature holds, and the voucher is the client's, signed
    /// by the ledger and unexpired at `unix_ts`.
    pub fn verify(
        &self,
        network_id: &NetworkId,
        relay_key: &PublicKey,
        ledger_key: &PublicKey,
        unix_ts: u64,
    ) -> Result<(), VerifyError> {
        if &self.network_id != network_id {
            return Err(VerifyError::WrongNetwork);
        }
        if &self.relay_key != relay_key || self.voucher.client_key != self.client_key {
            return Err(VerifyError::WrongKey);
        }
        let enc = self.encode();
        if !verify(
            &self.client_key,
            domain::SESSION_OFFER,
            &enc[..Self::SIGNED_LEN],
            &self.signature,
        ) {
            return Err(VerifyError::BadClientSignature);
        }
        self.voucher.verify(network_id, ledger_key, unix_ts)
    }
}

/// The relay's answer to an accepted [`SessionOffer`]: the session's identity and terms,
/// signed by the relay. Every receipt of the session repeats these fields.
///
/// ```text
/// off len field
///   0   1 version (2)          1   1 type (0x03)
///   2  16 network_id          18  32 relay_key
///  50  32 client_key          82  16 session_id
///  98  32 voucher_id         130   8 started_at
/// 138   8 price_micros_per_gib
/// 146  64 relay signature over SESSION_ACCEPT tag || bytes 0..146
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionAccept {
    /// Network.
    pub network_id: NetworkId,
    /// Relay identity.
    pub relay_key: PublicKey,
    /// Client identity.
    pub client_key: PublicKey,
    /// Relay-chosen random session id.
    pub session_id: SessionId,
    /// The voucher paying for it.
    pub voucher_id: VoucherId,
    /// Unix seconds at session start.
    pub started_at: u64,
    /// The relay's own price per GiB for this session (at most the voucher's
    /// `max_price_micros_per_gib`; the client checks).
    pub price_micros_per_gib: u64,
    /// Relay signature.
    pub signature: Signature,
}

impl SessionAccept {
    /// Encoded length in bytes.
    pub const LEN: usize = 210;
    const SIGNED_LEN: usize = Self::LEN - Signature::LEN;

    fn unsigned_bytes(&self) -> Vec<u8> {
        Writer::new(msg_type::SESSION_ACCEPT, Self::LEN)
            .bytes(self.network_id.as_bytes())
            .bytes(self.relay_key.as_bytes())
            .bytes(self.client_key.as_bytes())
            .bytes(self.session_id.as_bytes())
            .bytes(self.voucher_id.as_bytes())
            .u64(self.started_at)
            .u64(self.price_micros_per_gib)
            .finish()
    }

    /// Sets `relay_key` to the signer's key and signs.
    pub fn sign(mut self, relay: &SigningKey) -> Self {
        self.relay_key = relay.public_key();
        self.signature = relay.sign(domain::SESSION_ACCEPT, &self.unsigned_bytes());
        self
    }

    /// Canonical encoding, signature included.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.unsigned_bytes();
        b.extend_from_slice(self.signature.as_bytes());
        b
    }

    /// Decodes exactly one accept.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, msg_type::SESSION_ACCEPT, Self::LEN)?;
        Ok(Self {
            network_id: NetworkId(r.array()),
            relay_key: PublicKey(r.array()),
            client_key: PublicKey(r.array()),
            session_id: SessionId(r.array()),
            voucher_id: VoucherId(r.array()),
            started_at: r.u64(),
            price_micros_per_gib: r.u64(),
            signature: Signature(r.array()),
        })
    }

    /// Checks the relay signature (under the key in the message) and the network.
    pub fn verify(&self, network_id: &NetworkId) -> Result<(), VerifyError> {
        if &self.network_id != network_id {
            return Err(VerifyError::WrongNetwork);
        }
        let enc = self.encode();
        if verify(
            &self.relay_key,
            domain::SESSION_ACCEPT,
            &enc[..Self::SIGNED_LEN],
            &self.signature,
        ) {
            Ok(())
        } else {
            Err(VerifyError::BadRelaySignature)
        }
    }
}
