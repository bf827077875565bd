//! The relay's side of a session's tunnel ([`SessionTunnel`]): the tunnel address its control
//! service (receipts) and, when it runs one, its DNS resolver answer on, and the inner MTU.
//! Sent with the Accept and the Address on the Hello port, so a client that found the relay in
//! the directory (and so has no `[[relay]]` entry saying these) can open the tunnel; signed by
//! the relay and bound to the session like the Address.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::codec::{Reader, Writer, msg_type};
use crate::{
    DecodeError, NetworkId, PublicKey, SessionAccept, SessionId, Signature, SigningKey,
    VerifyError, domain,
};

/// [`SessionTunnel::dns`] bit: a DNS resolver answers on `relay_v4`.
pub const TUNNEL_DNS_V4: u8 = 1;
/// [`SessionTunnel::dns`] bit: a DNS resolver answers on `relay_v6`.
pub const TUNNEL_DNS_V6: u8 = 2;

/// Smallest and largest inner MTU a [`SessionTunnel`] may state: IPv6's minimum when the
/// tunnel carries IPv6 (`relay_v6` set), IPv4's otherwise; jumbo at most.
pub const TUNNEL_MTU: std::ops::RangeInclusive<u16> = 1280..=9000;
/// The smallest MTU of an IPv4-only tunnel.
pub const TUNNEL_MTU_V4_ONLY: u16 = 576;

/// The relay's tunnel addresses for a session, signed by the relay.
///
/// ```text
/// off len field
///   0   1 version (2)          1   1 type (0x06)
///   2  16 network_id          18  32 relay_key
///  50  16 session_id (of the Accept sent with it)
///  66   4 relay_v4 (0.0.0.0 = none)        70  16 relay_v6 (:: = none; at least one is set)
///  86   2 mtu (inner, 1280..=9000; 576..=9000 without relay_v6)
///  88   1 dns: bit 0 resolver on relay_v4, bit 1 on relay_v6 (a bit only with its address;
///             other bits zero)
///  89  64 relay signature over SESSION_TUNNEL tag || bytes 0..89
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTunnel {
    /// Network.
    pub network_id: NetworkId,
    /// Relay identity.
    pub relay_key: PublicKey,
    /// Session these facts belong to (the Accept's).
    pub session_id: SessionId,
    /// The relay's IPv4 tunnel address (`0.0.0.0` = none).
    pub relay_v4: Ipv4Addr,
    /// The relay's IPv6 tunnel address (`::` = none).
    pub relay_v6: Ipv6Addr,
    /// Inner MTU.
    pub mtu: u16,
    /// [`TUNNEL_DNS_V4`] | [`TUNNEL_DNS_V6`].
    pub dns: u8,
    /// Relay signature.
    pub signature: Signature,
}

impl SessionTunnel {
    /// Encoded length in bytes.
    pub const LEN: usize = 153;
    const SIGNED_LEN: usize = Self::LEN - Signature::LEN;

    fn unsigned_bytes(&self) -> Vec<u8> {
        Writer::new(msg_type::SESSION_TUNNEL, Self::LEN)
            .bytes(self.network_id.as_bytes())
            .bytes(self.relay_key.as_bytes())
            .bytes(self.session_id.as_bytes())
            .bytes(&self.relay_v4.octets())
            .bytes(&self.relay_v6.octets())
            .u16(self.mtu)
            .u8(self.dns)
            .finish()
    }

    /// The (unsigned) facts for the session `accept` opened.
    pub fn for_session(
        accept: &SessionAccept,
        v4: Option<Ipv4Addr>,
        v6: Option<Ipv6Addr>,
        mtu: u16,
        dns: u8,
    ) -> Self {
        Self {
            network_id: accept.network_id,
            relay_key: accept.relay_key,
            session_id: accept.session_id,
            relay_v4: v4.unwrap_or(Ipv4Addr::UNSPECIFIED),
            relay_v6: v6.unwrap_or(Ipv6Addr::UNSPECIFIED),
            mtu,
            dns,
            signature: Signature::ZERO,
        }
    }

    /// Sets `relay_key` to the signer's key and signs.
    pub fn sign(mut self, relay: &SigningKey) -> Self {
        self.relay_key = relay.public_key();
        self.signature = relay.sign(domain::SESSION_TUNNEL, &self.unsigned_bytes());
        self
    }

    /// Canonical encoding, signature included.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.unsigned_bytes();
        b.extend_from_slice(self.signature.as_bytes());
        b
    }

    /// Decodes exactly one tunnel message; refuses one with no address, an MTU out of
    /// [`TUNNEL_MTU`] (from [`TUNNEL_MTU_V4_ONLY`] without IPv6), or a DNS bit without its
    /// address or unknown.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, msg_type::SESSION_TUNNEL, Self::LEN)?;
        let t = Self {
            network_id: NetworkId(r.array()),
            relay_key: PublicKey(r.array()),
            session_id: SessionId(r.array()),
            relay_v4: Ipv4Addr::from(r.array::<4>()),
            relay_v6: Ipv6Addr::from(r.array::<16>()),
            mtu: r.u16(),
            dns: r.u8(),
            signature: Signature(r.array()),
        };
        if t.v4().is_none() && t.v6().is_none() {
            return Err(DecodeError::InvalidField("tunnel without an address"));
        }
        let min = if t.v6().is_some() {
            *TUNNEL_MTU.start()
        } else {
            TUNNEL_MTU_V4_ONLY
        };
        if !(min..=*TUNNEL_MTU.end()).contains(&t.mtu) {
            return Err(DecodeError::InvalidField("tunnel mtu"));
        }
        let allowed = if t.v4().is_some() { TUNNEL_DNS_V4 } else { 0 }
            | if t.v6().is_some() { TUNNEL_DNS_V6 } else { 0 };
        if t.dns & !allowed != 0 {
            return Err(DecodeError::InvalidField("tunnel dns bits"));
        }
        Ok(t)
    }

    /// The IPv4 address, if any.
    pub fn v4(&self) -> Option<Ipv4Addr> {
        (!self.relay_v4.is_unspecified()).then_some(self.relay_v4)
    }

    /// The IPv6 address, if any.
    pub fn v6(&self) -> Option<Ipv6Addr> {
        (!self.relay_v6.is_unspecified()).then_some(self.relay_v6)
    }

    /// Checks the network and the relay signature under the expected `relay_key`.
    pub fn verify(&self, network_id: &NetworkId, relay_key: &PublicKey) -> Result<(), VerifyError> {
        let enc = self.encode();
        crate::reply::check_reply(
            (&self.network_id, &self.relay_key, &enc[..Self::SIGNED_LEN]),
            domain::SESSION_TUNNEL,
            &self.signature,
            network_id,
            relay_key,
        )
    }

    /// True when this belongs to the session `accept` opened.
    pub fn answers(&self, accept: &SessionAccept) -> bool {
        self.session_id == accept.session_id && self.relay_key == accept.relay_key
    }
}
