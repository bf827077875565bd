//! What the directory (the ledger service) states about a relay, signed by the ledger key:
//! the [`DirectoryAnnotation`] listed next to each descriptor, and the [`ProbeChallenge`] it
//! sends to a relay's Hello port, which the relay answers with a relay-signed
//! [`ProbeResponse`] (smaller than the challenge: probing amplifies nothing).

use crate::codec::{Reader, Writer, msg_type};
use crate::keys::verify;
use crate::{
    DecodeError, DescriptorId, NetworkId, PublicKey, Signature, SigningKey, VerifyError, domain,
};

/// The directory's signed view of one relay at `annotated_at`.
///
/// ```text
/// off len field
///   0   1 version (2)          1   1 type (0x31)
///   2  16 network_id          18  32 ledger_key
///  50  32 relay_key           82  32 descriptor_id (SHA-256 of the descriptor encoding)
/// 114   8 annotated_at       122   8 first_seen       130   8 last_seen (last announce)
/// 138   1 reachable: bit 0 IPv4 answered the probe, bit 1 IPv6 (others zero)
/// 139   4 probe_rtt_micros (best of the last probe; 0 when unreachable)
/// 143   4 probes_ok          147   4 probes_total (probes_ok <= probes_total)
/// 151   2 score (0..=1000)
/// 153   8 paid_bytes (co-signed bytes from independent paying clients)
/// 161   8 completed_sessions 169   4 paying_clients   173   4 refusals
/// 177  64 ledger signature over DIRECTORY_ANNOTATION tag || bytes 0..177
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryAnnotation {
    /// Network.
    pub network_id: NetworkId,
    /// The ledger key that signed it.
    pub ledger_key: PublicKey,
    /// Relay described.
    pub relay_key: PublicKey,
    /// The descriptor this annotation goes with ([`crate::RelayDescriptor::id`]).
    pub descriptor_id: DescriptorId,
    /// Unix seconds of this statement.
    pub annotated_at: u64,
    /// First announce seen.
    pub first_seen: u64,
    /// Last announce seen.
    pub last_seen: u64,
    /// Probe answered over IPv4 (bit 0) / IPv6 (bit 1).
    pub reachable: u8,
    /// Round trip of the last successful probe, microseconds.
    pub probe_rtt_micros: u32,
    /// Probes answered.
    pub probes_ok: u32,
    /// Probes sent.
    pub probes_total: u32,
    /// Quality score, 0..=1000 (docs/directory.md gives the formula).
    pub score: u16,
    /// Score factor: co-signed bytes from independent paying clients.
    pub paid_bytes: u64,
    /// Score factor: sessions that ended with a co-signed final receipt.
    pub completed_sessions: u64,
    /// Score factor: distinct independent clients that paid this relay.
    pub paying_clients: u32,
    /// Score factor: receipts paying clients refused (over-claims).
    pub refusals: u32,
    /// Ledger signature.
    pub signature: Signature,
}

/// Reachable over IPv4 ([`DirectoryAnnotation::reachable`] bit).
pub const REACHABLE_V4: u8 = 1;
/// Reachable over IPv6.
pub const REACHABLE_V6: u8 = 2;

impl DirectoryAnnotation {
    /// Encoded length in bytes.
    pub const LEN: usize = 241;
    const SIGNED_LEN: usize = Self::LEN - Signature::LEN;

    fn unsigned_bytes(&self) -> Vec<u8> {
        Writer::new(msg_type::DIRECTORY_ANNOTATION, Self::LEN)
            .bytes(self.network_id.as_bytes())
            .bytes(self.ledger_key.as_bytes())
            .bytes(self.relay_key.as_bytes())
            .bytes(self.descriptor_id.as_bytes())
            .u64(self.annotated_at)
            .u64(self.first_seen)
            .u64(self.last_seen)
            .u8(self.reachable)
            .u32(self.probe_rtt_micros)
            .u32(self.probes_ok)
            .u32(self.probes_total)
            .u16(self.score)
            .u64(self.paid_bytes)
            .u64(self.completed_sessions)
            .u32(self.paying_clients)
            .u32(self.refusals)
            .finish()
    }

    /// Sets `ledger_key` to the signer's key and signs.
    pub fn sign(mut self, ledger: &SigningKey) -> Self {
        self.ledger_key = ledger.public_key();
        self.signature = ledger.sign(domain::DIRECTORY_ANNOTATION, &self.unsigned_bytes());
        self
    }

    /// Canonical encoding, signature included.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.unsigned_bytes();
        b.extend_from_slice(self.signature.as_bytes());
        b
    }

    /// Decodes exactly one annotation.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, msg_type::DIRECTORY_ANNOTATION, Self::LEN)?;
        let a = Self {
            network_id: NetworkId(r.array()),
            ledger_key: PublicKey(r.array()),
            relay_key: PublicKey(r.array()),
            descriptor_id: DescriptorId(r.array()),
            annotated_at: r.u64(),
            first_seen: r.u64(),
            last_seen: r.u64(),
            reachable: r.u8(),
            probe_rtt_micros: r.u32(),
            probes_ok: r.u32(),
            probes_total: r.u32(),
            score: r.u16(),
            paid_bytes: r.u64(),
            completed_sessions: r.u64(),
            paying_clients: r.u32(),
            refusals: r.u32(),
            signature: Signature(r.array()),
        };
        if a.reachable & !(REACHABLE_V4 | REACHABLE_V6) != 0 {
            return Err(DecodeError::InvalidField("unknown reachability bits"));
        }
        if a.probes_ok > a.probes_total || a.score > 1000 {
            return Err(DecodeError::InvalidField(
                "probe counts or score out of range",
            ));
        }
        if a.first_seen > a.last_seen {
            return Err(DecodeError::InvalidField("first_seen after last_seen"));
        }
        Ok(a)
    }

    /// Checks the network, the ledger key the caller trusts and its signature.
    pub fn verify(
        &self,
        network_id: &NetworkId,
        ledger_key: &PublicKey,
    ) -> Result<(), VerifyError> {
        if &self.network_id != network_id {
            return Err(VerifyError::WrongNetwork);
        }
        if &self.ledger_key != ledger_key {
            return Err(VerifyError::WrongKey);
        }
        let enc = self.encode();
        if verify(
            ledger_key,
            domain::DIRECTORY_ANNOTATION,
            &enc[..Self::SIGNED_LEN],
            &self.signature,
        ) {
            Ok(())
        } else {
            Err(VerifyError::BadLedgerSignature)
        }
    }
}

/// The directory asks a relay's Hello port "are you there, and are you who you say?".
///
/// ```text
/// off len field
///   0   1 version (2)          1   1 type (0x32)
///   2  16 network_id          18  32 ledger_key
///  50  32 relay_key (the relay being probed)
///  82  16 nonce               98   8 issued_at
/// 106  64 ledger signature over PROBE_CHALLENGE tag || bytes 0..106
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeChallenge {
    /// Network.
    pub network_id: NetworkId,
    /// The ledger (directory) key that signed it.
    pub ledger_key: PublicKey,
    /// The relay expected to answer.
    pub relay_key: PublicKey,
    /// Directory-chosen random bytes, echoed in the response.
    pub nonce: [u8; 16],
    /// Unix seconds at sending.
    pub issued_at: u64,
    /// Ledger signature.
    pub signature: Signature,
}

impl ProbeChallenge {
    /// Encoded length in bytes.
    pub const LEN: usize = 170;
    const SIGNED_LEN: usize = Self::LEN - Signature::LEN;

    fn unsigned_bytes(&self) -> Vec<u8> {
        Writer::new(msg_type::PROBE_CHALLENGE, Self::LEN)
            .bytes(self.network_id.as_bytes())
            .bytes(self.ledger_key.as_bytes())
            .bytes(self.relay_key.as_bytes())
            .bytes(&self.nonce)
            .u64(self.issued_at)
            .finish()
    }

    /// A client's latency probe ("ping"): `ledger_key` and signature all zero. A relay
    /// answers it like a directory probe (its signed [`ProbeResponse`] proves the key is
    /// alive at that address) but without checking a signature, and it does not count as a
    /// directory probe. It reveals nothing about the client.
    pub fn ping(network_id: NetworkId, relay_key: PublicKey, nonce: [u8; 16], at: u64) -> Self {
        Self {
            network_id,
            ledger_key: PublicKey([0; 32]),
            relay_key,
            nonce,
            issued_at: at,
            signature: Signature::ZERO,
        }
    }

    /// Whether this is a client's latency probe ([`Self::ping`]).
    pub fn is_ping(&self) -> bool {
        self.ledger_key.0 == [0; 32] && self.signature == Signature::ZERO
    }

    /// Sets `ledger_key` to the signer's key and signs.
    pub fn sign(mut self, ledger: &SigningKey) -> Self {
        self.ledger_key = ledger.public_key();
        self.signature = ledger.sign(domain::PROBE_CHALLENGE, &self.unsigned_bytes());
        self
    }

    /// Canonical encoding, signature included.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.unsigned_bytes();
        b.extend_from_slice(self.signature.as_bytes());
        b
    }

    /// Decodes exactly one challenge.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, msg_type::PROBE_CHALLENGE, Self::LEN)?;
        Ok(Self {
            network_id: NetworkId(r.array()),
            ledger_key: PublicKey(r.array()),
            relay_key: PublicKey(r.array()),
            nonce: r.array(),
            issued_at: r.u64(),
            signature: Signature(r.array()),
        })
    }

    /// What the relay checks before answering: its network, its own key, the ledger key it
    /// trusts, the signature, and `issued_at` within `skew_secs` of `unix_ts` (an old
    /// challenge replayed gets no answer).
    pub fn verify(
        &self,
        network_id: &NetworkId,
        relay_key: &PublicKey,
        ledger_key: &PublicKey,
        unix_ts: u64,
        skew_secs: u64,
    ) -> Result<(), VerifyError> {
        if &self.network_id != network_id {
            return Err(VerifyError::WrongNetwork);
        }
        if &self.relay_key != relay_key || &self.ledger_key != ledger_key {
            return Err(VerifyError::WrongKey);
        }
        let enc = self.encode();
        if !verify(
            ledger_key,
            domain::PROBE_CHALLENGE,
            &enc[..Self::SIGNED_LEN],
            &self.signature,
        ) {
            return Err(VerifyError::BadLedgerSignature);
        }
        if self.issued_at.abs_diff(unix_ts) > skew_secs {
            return Err(VerifyError::Expired);
        }
        Ok(())
    }

    /// The relay's (unsigned) answer.
    pub fn response(&self) -> ProbeResponse {
        ProbeResponse {
            network_id: self.network_id,
            relay_key: self.relay_key,
            nonce: self.nonce,
            signature: Signature::ZERO,
        }
    }
}

/// The relay's answer to a [`ProbeChallenge`], signed by the relay identity key.
///
/// ```text
/// off len field
///   0   1 version (2)          1   1 type (0x33)
///   2  16 network_id          18  32 relay_key
///  50  16 nonce (the challenge's)
///  66  64 relay signature over PROBE_RESPONSE tag || bytes 0..66
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResponse {
    /// Network.
    pub network_id: NetworkId,
    /// The relay answering.
    pub relay_key: PublicKey,
    /// The challenge's nonce.
    pub nonce: [u8; 16],
    /// Relay signature.
    pub signature: Signature,
}

impl ProbeResponse {
    /// Encoded length in bytes.
    pub const LEN: usize = 130;
    const SIGNED_LEN: usize = Self::LEN - Signature::LEN;

    fn unsigned_bytes(&self) -> Vec<u8> {
        Writer::new(msg_type::PROBE_RESPONSE, Self::LEN)
            .bytes(self.network_id.as_bytes())
            .bytes(self.relay_key.as_bytes())
            .bytes(&self.nonce)
            .finish()
    }

    /// Sets `relay_key` to the signer's key and signs.
    pub fn sign(mut self, relay: &SigningKey) -> Self {
        self.relay_key = relay.public_key();
        self.signature = relay.sign(domain::PROBE_RESPONSE, &self.unsigned_bytes());
        self
    }

    /// Canonical encoding, signature included.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.unsigned_bytes();
        b.extend_from_slice(self.signature.as_bytes());
        b
    }

    /// Decodes exactly one response.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, msg_type::PROBE_RESPONSE, Self::LEN)?;
        Ok(Self {
            network_id: NetworkId(r.array()),
            relay_key: PublicKey(r.array()),
            nonce: r.array(),
            signature: Signature(r.array()),
        })
    }

    /// Whether this answers `challenge`: same network, relay and nonce, signed by the relay.
    pub fn answers(&self, challenge: &ProbeChallenge) -> bool {
        let enc = self.encode();
        self.network_id == challenge.network_id
            && self.relay_key == challenge.relay_key
            && self.nonce == challenge.nonce
            && verify(
                &self.relay_key,
                domain::PROBE_RESPONSE,
                &enc[..Self::SIGNED_LEN],
                &self.signature,
            )
    }
}
