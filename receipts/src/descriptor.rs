//! The relay's public self-description for the directory: who it is, where to reach it, what
//! it charges and what it offers. Signed by the relay identity key, so a directory (or a cache
//! of it) cannot change a price, an endpoint or a limit without the signature breaking.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use ring::digest;

use crate::codec::{Reader, Writer, msg_type};
use crate::keys::verify;
use crate::{
    DecodeError, DescriptorId, NetworkId, PublicKey, Signature, SigningKey, VerifyError, domain,
};

/// Most blocked ports a descriptor lists.
pub const MAX_BLOCKED_PORTS: usize = 32;
/// Longest region text (printable ASCII).
pub const MAX_REGION_LEN: usize = 32;
/// Longest software version text (printable ASCII).
pub const MAX_SOFTWARE_LEN: usize = 32;
/// Longest abuse contact (printable ASCII).
pub const MAX_CONTACT_LEN: usize = 64;
/// Hours in the weekly sharing schedule.
pub const WEEK_HOURS: usize = 168;

/// A relay's signed announcement.
///
/// ```text
/// off len field
///   0   1 version (2)            1   1 type (0x30)
///   2  16 network_id            18  32 relay_key (Ed25519 identity)
///  50  32 wg_key (X25519)       82   4 ipv4 (0.0.0.0 = none)
///  86   2 ipv4 WireGuard port (0 iff no ipv4)
///  88  16 ipv6 (:: = none)     104   2 ipv6 WireGuard port (0 iff no ipv6)
/// 106   2 hello_port (UDP, > 0) 108   8 price_micros_per_gib
/// 116   4 max_mbit (0 = not limited)
/// 120   4 monthly_quota_gib (0 = not limited)
/// 124  21 schedule: bit h (MSB first) = shares in hour h of the week, UTC, Monday 00:00 = 0
/// 145   2 country (ISO 3166-1 alpha-2, upper case; "ZZ" = not declared)
/// 147   8 issued_at             155   8 expires_at (> issued_at)
/// 163   1 n blocked ports, then n × u16, strictly ascending, > 0, n <= 32
///   .   1 region length r <= 32, then r bytes
///   .   1 software length s <= 32, then s bytes
///   .   1 abuse contact length a <= 64, then a bytes   (texts: printable ASCII 0x20..=0x7e)
///   .  64 relay signature over RELAY_DESCRIPTOR tag || every byte before it
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayDescriptor {
    /// Network.
    pub network_id: NetworkId,
    /// Relay identity (signs receipts and this descriptor).
    pub relay_key: PublicKey,
    /// The relay's WireGuard (X25519) public key.
    pub wg_key: [u8; 32],
    /// Public IPv4 WireGuard endpoint.
    pub ipv4: Option<SocketAddrV4>,
    /// Public IPv6 WireGuard endpoint.
    pub ipv6: Option<SocketAddrV6>,
    /// UDP port of the Hello (session offer) service on the same addresses.
    pub hello_port: u16,
    /// The relay's own price, millionths of a currency unit per GiB.
    pub price_micros_per_gib: u64,
    /// What the relay advertises it offers.
    pub limits: AdvertisedLimits,
    /// Declared country, ISO 3166-1 alpha-2 (`*b"ZZ"` = not declared).
    pub country: [u8; 2],
    /// Declared region or city, free text.
    pub region: String,
    /// Software name and version, e.g. `ferry-agent/0.1.0`.
    pub software: String,
    /// Where abuse reports go (mail address or URL).
    pub abuse_contact: String,
    /// Unix seconds at signing.
    pub issued_at: u64,
    /// Unix seconds after which nobody may rely on it.
    pub expires_at: u64,
    /// Relay signature.
    pub signature: Signature,
}

/// Limits a relay advertises so clients can filter on them (the relay enforces its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedLimits {
    /// Bandwidth offered per client, Mbit/s (0 = not limited).
    pub max_mbit: u32,
    /// Monthly sharing quota, GiB (0 = not limited).
    pub monthly_quota_gib: u32,
    /// Weekly sharing hours, UTC; see [`AdvertisedLimits::shares_at`].
    pub schedule: [u8; 21],
    /// Destination ports the relay refuses, ascending.
    pub blocked_ports: Vec<u16>,
}

impl AdvertisedLimits {
    /// Every hour of the week.
    pub const ALWAYS: [u8; 21] = [0xff; 21];

    /// No limits, always sharing, nothing blocked.
    pub fn unlimited() -> Self {
        Self {
            max_mbit: 0,
            monthly_quota_gib: 0,
            schedule: Self::ALWAYS,
            blocked_ports: Vec::new(),
        }
    }

    /// Whether the schedule shares in hour `hour_of_week` (0 = Monday 00:00 UTC; taken mod 168).
    pub fn shares_at(&self, hour_of_week: usize) -> bool {
        let h = hour_of_week % WEEK_HOURS;
        self.schedule[h / 8] & (0x80 >> (h % 8)) != 0
    }

    /// Whether the schedule shares at unix time `unix` (its UTC hour of the week; the epoch
    /// was a Thursday, 72 hours after Monday 00:00).
    pub fn shares_at_unix(&self, unix: u64) -> bool {
        self.shares_at(usize::try_from((unix / 3600 + 72) % WEEK_HOURS as u64).unwrap_or(0))
    }

    /// Hours of the week the schedule shares (168 = always).
    pub fn shared_hours(&self) -> u32 {
        self.schedule.iter().map(|b| b.count_ones()).sum()
    }
}

impl RelayDescriptor {
    const FIXED_LEN: usize = 164;
    /// Shortest possible encoding (no ports, empty texts).
    pub const MIN_LEN: usize = Self::FIXED_LEN + 3 + Signature::LEN;
    /// Longest possible encoding.
    pub const MAX_LEN: usize =
        Self::MIN_LEN + 2 * MAX_BLOCKED_PORTS + MAX_REGION_LEN + MAX_SOFTWARE_LEN + MAX_CONTACT_LEN;

    /// The first rule of the format this descriptor breaks, if any (the decoder refuses
    /// such bytes; [`RelayDescriptor::sign`] callers check it first).
    pub fn check(&self) -> Result<(), DecodeError> {
        let bad = DecodeError::InvalidField;
        if self.ipv4.is_none() && self.ipv6.is_none() {
            return Err(bad("descriptor has no endpoint"));
        }
        if self
            .ipv4
            .is_some_and(|a| a.port() == 0 || a.ip().is_unspecified())
            || self
                .ipv6
                .is_some_and(|a| a.port() == 0 || a.ip().is_unspecified())
        {
            return Err(bad("endpoint address or port is zero"));
        }
        if self.hello_port == 0 {
            return Err(bad("hello_port is zero"));
        }
        if self.expires_at <= self.issued_at {
            return Err(bad("expires_at not after issued_at"));
        }
        if !self.country.iter().all(u8::is_ascii_uppercase) {
            return Err(bad("country is not two upper-case letters"));
        }
        let ports = &self.limits.blocked_ports;
        if ports.len() > MAX_BLOCKED_PORTS
            || ports.first() == Some(&0)
            || ports.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(bad("blocked ports not ascending, zero or too many"));
        }
        for (text, max) in [
            (&self.region, MAX_REGION_LEN),
            (&self.software, MAX_SOFTWARE_LEN),
            (&self.abuse_contact, MAX_CONTACT_LEN),
        ] {
            if text.len() > max || !text.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
                return Err(bad("text too long or not printable ASCII"));
            }
        }
        Ok(())
    }

    fn unsigned_bytes(&self) -> Vec<u8> {
        let (v4, v4_port) = self
            .ipv4
            .map_or((Ipv4Addr::UNSPECIFIED, 0), |a| (*a.ip(), a.port()));
        let (v6, v6_port) = self
            .ipv6
            .map_or((Ipv6Addr::UNSPECIFIED, 0), |a| (*a.ip(), a.port()));
        let mut w = Writer::new(msg_type::RELAY_DESCRIPTOR, Self::MAX_LEN);
        w.bytes(self.network_id.as_bytes())
            .bytes(self.relay_key.as_bytes())
            .bytes(&self.wg_key)
            .bytes(&v4.octets())
            .u16(v4_port)
            .bytes(&v6.octets())
            .u16(v6_port)
            .u16(self.hello_port)
            .u64(self.price_micros_per_gib)
            .u32(self.limits.max_mbit)
            .u32(self.limits.monthly_quota_gib)
            .bytes(&self.limits.schedule)
            .bytes(&self.country)
            .u64(self.issued_at)
            .u64(self.expires_at);
        // Lengths are bounded by `check` (decoded values always pass it); a value built by
        // hand with more is truncated here, so its signature can never verify as the original.
        let ports = &self.limits.blocked_ports[..self.limits.blocked_ports.len().min(255)];
        w.u8(ports.len() as u8);
        for p in ports {
            w.u16(*p);
        }
        for text in [&self.region, &self.software, &self.abuse_contact] {
            let t = &text.as_bytes()[..text.len().min(255)];
            w.u8(t.len() as u8).bytes(t);
        }
        w.finish()
    }

    /// Sets `relay_key` to the signer's key and signs. Call [`RelayDescriptor::check`] first:
    /// a descriptor breaking a rule signs, but no decoder accepts it.
    pub fn sign(mut self, relay: &SigningKey) -> Self {
        self.relay_key = relay.public_key();
        self.signature = relay.sign(domain::RELAY_DESCRIPTOR, &self.unsigned_bytes());
        self
    }

    /// Canonical encoding, signature included.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.unsigned_bytes();
        b.extend_from_slice(self.signature.as_bytes());
        b
    }

    /// Decodes exactly one descriptor; refuses anything [`RelayDescriptor::check`] refuses.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        if buf.len() > Self::MAX_LEN {
            return Err(DecodeError::InvalidField(
                "descriptor longer than the maximum",
            ));
        }
        let mut r = Reader::prefix(buf, msg_type::RELAY_DESCRIPTOR, Self::FIXED_LEN)?;
        let network_id = NetworkId(r.array());
        let relay_key = PublicKey(r.array());
        let wg_key = r.array();
        let v4 = SocketAddrV4::new(Ipv4Addr::from(r.array::<4>()), r.u16());
        let v6 = SocketAddrV6::new(Ipv6Addr::from(r.array::<16>()), r.u16(), 0, 0);
        let hello_port = r.u16();
        let price_micros_per_gib = r.u64();
        let max_mbit = r.u32();
        let monthly_quota_gib = r.u32();
        let schedule = r.array();
        let country = r.array();
        let issued_at = r.u64();
        let expires_at = r.u64();
        let n = usize::from(r.u8());
        let blocked_ports = r
            .take(2 * n)?
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        let mut texts = [String::new(), String::new(), String::new()];
        for t in &mut texts {
            let len = usize::from(r.take(1)?[0]);
            let bytes = r.take(len)?;
            // `check` below refuses anything but printable ASCII, so lossy never loses.
            *t = String::from_utf8_lossy(bytes).into_owned();
            if t.len() != len {
                return Err(DecodeError::InvalidField("text not printable ASCII"));
            }
        }
        let signature = Signature(
            r.take(Signature::LEN)?
                .try_into()
                .map_err(|_| DecodeError::InvalidField("signature"))?,
        );
        r.finish()?;
        let [region, software, abuse_contact] = texts;
        let d = Self {
            network_id,
            relay_key,
            wg_key,
            ipv4: endpoint_v4(v4)?,
            ipv6: endpoint_v6(v6)?,
            hello_port,
            price_micros_per_gib,
            limits: AdvertisedLimits {
                max_mbit,
                monthly_quota_gib,
                schedule,
                blocked_ports,
            },
            country,
            region,
            software,
            abuse_contact,
            issued_at,
            expires_at,
            signature,
        };
        d.check()?;
        Ok(d)
    }

    /// SHA-256 of the canonical encoding; the directory's annotation names it.
    pub fn id(&self) -> DescriptorId {
        let d = digest::digest(&digest::SHA256, &self.encode());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        DescriptorId(out)
    }

    /// The country as text (`"ZZ"` when not declared).
    pub fn country_code(&self) -> &str {
        std::str::from_utf8(&self.country).unwrap_or("ZZ")
    }

    /// Every endpoint, IPv4 first.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        let v4 = self.ipv4.map(SocketAddr::V4);
        let v6 = self.ipv6.map(SocketAddr::V6);
        v4.into_iter().chain(v6).collect()
    }

    /// Checks the network, the relay signature (under the key in the descriptor) and that it
    /// is issued and unexpired at `unix_ts` (`skew_secs` of clock difference allowed on the
    /// issue side).
    pub fn verify(
        &self,
        network_id: &NetworkId,
        unix_ts: u64,
        skew_secs: u64,
    ) -> Result<(), VerifyError> {
        if &self.network_id != network_id {
            return Err(VerifyError::WrongNetwork);
        }
        let enc = self.encode();
        let signed = &enc[..enc.len() - Signature::LEN];
        if !verify(
            &self.relay_key,
            domain::RELAY_DESCRIPTOR,
            signed,
            &self.signature,
        ) {
            return Err(VerifyError::BadRelaySignature);
        }
        if unix_ts > self.expires_at || self.issued_at > unix_ts.saturating_add(skew_secs) {
            return Err(VerifyError::Expired);
        }
        Ok(())
    }
}

/// `0.0.0.0:0` is "none"; an address without a port (or the reverse) is malformed.
fn endpoint_v4(a: SocketAddrV4) -> Result<Option<SocketAddrV4>, DecodeError> {
    match (a.ip().is_unspecified(), a.port() == 0) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some(a)),
        _ => Err(DecodeError::InvalidField("ipv4 endpoint half set")),
    }
}

fn endpoint_v6(a: SocketAddrV6) -> Result<Option<SocketAddrV6>, DecodeError> {
    match (a.ip().is_unspecified(), a.port() == 0) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some(a)),
        _ => Err(DecodeError::InvalidField("ipv6 endpoint half set")),
    }
}
