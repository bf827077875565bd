//! The relay's signed answers to a [`SessionOffer`] besides the [`crate::SessionAccept`]: the
//! tunnel addresses it assigned ([`SessionAddress`]) and a refusal ([`SessionReject`]). Both
//! travel outside the tunnel (the Hello port), where anyone on the path could inject them, so
//! both are signed by the relay and bound to the offer they answer (its nonce): a client acts
//! only on replies that verify under the relay key it expects and name its own offer.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::codec::{Reader, Writer, msg_type};
use crate::keys::verify;
use crate::{
    DecodeError, NetworkId, PublicKey, SessionAccept, SessionId, SessionOffer, Signature,
    SigningKey, VerifyError, domain,
};

/// The tunnel addresses a relay assigned to a session's WireGuard key, signed by the relay.
///
/// ```text
/// off len field
///   0   1 version (2)          1   1 type (0x04)
///   2  16 network_id          18  32 relay_key
///  50  16 offer_nonce (the nonce of the offer this answers)
///  66  16 session_id (of the Accept sent with it)
///  82  32 client_wg_key       114   4 v4 (0.0.0.0 = none)
/// 118  16 v6 (:: = none)
/// 134  64 relay signature over SESSION_ADDRESS tag || bytes 0..134
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionAddress {
    /// Network.
    pub network_id: NetworkId,
    /// Relay identity.
    pub relay_key: PublicKey,
    /// Nonce of the offer this answers.
    pub offer_nonce: [u8; 16],
    /// Session the addresses belong to (the Accept's).
    pub session_id: SessionId,
    /// The client's WireGuard key the addresses are routed to.
    pub client_wg_key: [u8; 32],
    /// Client IPv4 tunnel address (`0.0.0.0` = none).
    pub v4: Ipv4Addr,
    /// Client IPv6 tunnel address (`::` = none).
    pub v6: Ipv6Addr,
    /// Relay signature.
    pub signature: Signature,
}

impl SessionAddress {
    /// Encoded length in bytes.
    pub const LEN: usize = 198;
    const SIGNED_LEN: usize = Self::LEN - Signature::LEN;

    /// The (unsigned) addresses of the session `accept` opened for `offer`.
    pub fn for_session(
        offer: &SessionOffer,
        accept: &SessionAccept,
        v4: Option<Ipv4Addr>,
        v6: Option<Ipv6Addr>,
    ) -> Self {
        Self {
            network_id: accept.network_id,
            relay_key: accept.relay_key,
            offer_nonce: offer.nonce,
            session_id: accept.session_id,
            client_wg_key: offer.client_wg_key,
            v4: v4.unwrap_or(Ipv4Addr::UNSPECIFIED),
            v6: v6.unwrap_or(Ipv6Addr::UNSPECIFIED),
            signature: Signature::ZERO,
        }
    }

    fn unsigned_bytes(&self) -> Vec<u8> {
        Writer::new(msg_type::SESSION_ADDRESS, Self::LEN)
            .bytes(self.network_id.as_bytes())
            .bytes(self.relay_key.as_bytes())
            .bytes(&self.offer_nonce)
            .bytes(self.session_id.as_bytes())
            .bytes(&self.client_wg_key)
            .bytes(&self.v4.octets())
            .bytes(&self.v6.octets())
            .finish()
    }

    /// Sets `relay_key` to the signer's key and signs.
    pub fn sign(mut self, relay: &SigningKey) -> Self {
        self.relay_key = relay.public_key();
        self.signature = relay.sign(domain::SESSION_ADDRESS, &self.unsigned_bytes());
        self
    }

    /// Canonical encoding, signature included.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.unsigned_bytes();
        b.extend_from_slice(self.signature.as_bytes());
        b
    }

    /// Decodes exactly one address message.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, msg_type::SESSION_ADDRESS, Self::LEN)?;
        Ok(Self {
            network_id: NetworkId(r.array()),
            relay_key: PublicKey(r.array()),
            offer_nonce: r.array(),
            session_id: SessionId(r.array()),
            client_wg_key: r.array(),
            v4: Ipv4Addr::from(r.array::<4>()),
            v6: Ipv6Addr::from(r.array::<16>()),
            signature: Signature(r.array()),
        })
    }

    /// Checks the network and the relay signature under `relay_key` (the key the client
    /// expects, not the one in the message alone).
    pub fn verify(&self, network_id: &NetworkId, relay_key: &PublicKey) -> Result<(), VerifyError> {
        let enc = self.encode();
        let signed = (&self.network_id, &self.relay_key, &enc[..Self::SIGNED_LEN]);
        check_reply(
            signed,
            domain::SESSION_ADDRESS,
            &self.signature,
            network_id,
            relay_key,
        )
    }

    /// True when this answers `offer` with the session `accept` opened.
    pub fn answers(&self, offer: &SessionOffer, accept: &SessionAccept) -> bool {
        self.offer_nonce == offer.nonce
            && self.client_wg_key == offer.client_wg_key
            && self.session_id == accept.session_id
            && self.relay_key == accept.relay_key
    }
}

/// A relay's refusal of an offer, signed by the relay. `reason` is the control protocol's
/// session-reject code (ferry-metering `SessionRejectReason`); this crate does not interpret it.
///
/// ```text
/// off len field
///   0   1 version (2)          1   1 type (0x05)
///   2  16 network_id          18  32 relay_key
///  50  32 client_key (the offer's)
///  82  16 offer_nonce         98   1 reason
///  99  64 relay signature over SESSION_REJECT tag || bytes 0..99
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReject {
    /// Network.
    pub network_id: NetworkId,
    /// Relay identity.
    pub relay_key: PublicKey,
    /// The refused offer's client identity.
    pub client_key: PublicKey,
    /// The refused offer's nonce.
    pub offer_nonce: [u8; 16],
    /// Reason code.
    pub reason: u8,
    /// Relay signature.
    pub signature: Signature,
}

impl SessionReject {
    /// Encoded length in bytes.
    pub const LEN: usize = 163;
    const SIGNED_LEN: usize = Self::LEN - Signature::LEN;

    /// The (unsigned) refusal of `offer` for `reason`, by the relay of `network_id`.
    pub fn for_offer(network_id: NetworkId, offer: &SessionOffer, reason: u8) -> Self {
        Self {
            network_id,
            relay_key: PublicKey([0; 32]),
            client_key: offer.client_key,
            offer_nonce: offer.nonce,
            reason,
            signature: Signature::ZERO,
        }
    }

    fn unsigned_bytes(&self) -> Vec<u8> {
        Writer::new(msg_type::SESSION_REJECT, Self::LEN)
            .bytes(self.network_id.as_bytes())
            .bytes(self.relay_key.as_bytes())
            .bytes(self.client_key.as_bytes())
            .bytes(&self.offer_nonce)
            .bytes(&[self.reason])
            .finish()
    }

    /// Sets `relay_key` to the signer's key and signs.
    pub fn sign(mut self, relay: &SigningKey) -> Self {
        self.relay_key = relay.public_key();
        self.signature = relay.sign(domain::SESSION_REJECT, &self.unsigned_bytes());
        self
    }

    /// Canonical encoding, signature included.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.unsigned_bytes();
        b.extend_from_slice(self.signature.as_bytes());
        b
    }

    /// Decodes exactly one reject.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, msg_type::SESSION_REJECT, Self::LEN)?;
        Ok(Self {
            network_id: NetworkId(r.array()),
            relay_key: PublicKey(r.array()),
            client_key: PublicKey(r.array()),
            offer_nonce: r.array(),
            reason: r.array::<1>()[0],
            signature: Signature(r.array()),
        })
    }

    /// Checks the network and the relay signature under the expected `relay_key`.
    pub fn verify(&self, network_id: &NetworkId, relay_key: &PublicKey) -> Result<(), VerifyError> {
        let enc = self.encode();
        let signed = (&self.network_id, &self.relay_key, &enc[..Self::SIGNED_LEN]);
        check_reply(
            signed,
            domain::SESSION_REJECT,
            &self.signature,
            network_id,
            relay_key,
        )
    }

    /// True when this refuses `offer` (its client identity and nonce).
    pub fn answers(&self, offer: &SessionOffer) -> bool {
        self.client_key == offer.client_key && self.offer_nonce == offer.nonce
    }
}

/// A reply's checks: the network and relay key it names are the expected ones, and the relay
/// signature over `tag || signed bytes` holds.
pub(crate) fn check_reply(
    (network, relay, signed): (&NetworkId, &PublicKey, &[u8]),
    tag: &[u8],
    signature: &Signature,
    network_id: &NetworkId,
    relay_key: &PublicKey,
) -> Result<(), VerifyError> {
    if network != network_id {
        return Err(VerifyError::WrongNetwork);
    }
    if relay != relay_key {
        return Err(VerifyError::WrongKey);
    }
    if verify(relay, tag, signed, signature) {
        Ok(())
    } else {
        Err(VerifyError::BadRelaySignature)
    }
}
