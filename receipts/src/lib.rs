//! Ferry's signed, cumulative byte-count receipts.
//!
//! This crate owns the *wire format* of everything money depends on: the ledger-signed
//! [`Voucher`], the client's [`SessionOffer`], the relay's [`SessionAccept`], the
//! relay-signed [`SignedReceipt`], the client co-signed [`CoSignedReceipt`] and the client's
//! [`ReceiptRefusal`], the directory's
//! messages (the relay's [`RelayDescriptor`], the ledger's [`DirectoryAnnotation`], the
//! reachability [`ProbeChallenge`] and [`ProbeResponse`]), plus the
//! [`CumulativeState`] that accepts only receipts whose counters never decrease.
//!
//! It is sans-IO: no clock reads, no OS randomness, no files or sockets. Timestamps are
//! arguments (`unix_ts`), and signing keys are passed in. Every encoding is canonical
//! (fixed layout, big-endian, version byte first), decoders reject unknown versions and
//! trailing bytes, and each signature covers a domain-separation tag so a signature made
//! for one message type can never verify as another. The layout is specified byte by
//! byte in `docs/receipts.md` and frozen by the test vectors in `tests/vectors.rs`.
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod codec;
mod descriptor;
mod directory;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod ids;
mod keys;
pub mod money;
mod receipt;
mod refusal;
mod reply;
mod session;
mod state;
mod tunnel;
mod voucher;

pub use codec::MAX_MESSAGE_LEN;
pub use descriptor::{
    AdvertisedLimits, MAX_BLOCKED_PORTS, MAX_CONTACT_LEN, MAX_REGION_LEN, MAX_SOFTWARE_LEN,
    RelayDescriptor, WEEK_HOURS,
};
pub use directory::{
    DirectoryAnnotation, ProbeChallenge, ProbeResponse, REACHABLE_V4, REACHABLE_V6,
};
pub use error::{DecodeError, VerifyError};
pub use ids::{DescriptorId, NetworkId, PublicKey, SessionId, Signature, VoucherId};
pub use keys::SigningKey;
pub use receipt::{CoSignedReceipt, ReceiptBody, SignedReceipt};
pub use refusal::{MAX_REFUSAL_REASON, ReceiptRefusal};
pub use reply::{SessionAddress, SessionReject};
pub use session::{SessionAccept, SessionOffer};
pub use state::{Applied, CumulativeState, Rejected};
pub use tunnel::{SessionTunnel, TUNNEL_DNS_V4, TUNNEL_DNS_V6, TUNNEL_MTU, TUNNEL_MTU_V4_ONLY};
pub use voucher::Voucher;

/// The single wire-format version this crate encodes and accepts.
pub const WIRE_VERSION: u8 = 2;

/// The largest counter, time or price the ledger stores (2^63 - 1: signed 64-bit columns).
pub const MAX_LEDGER_VALUE: u64 = i64::MAX as u64;

/// Domain-separation tags: prepended to the encoded bytes before signing.
pub mod domain {
    /// Ledger signature over a [`crate::Voucher`].
    pub const VOUCHER: &[u8] = b"ferry/v2/voucher\0";
    /// Client signature over a [`crate::SessionOffer`].
    pub const SESSION_OFFER: &[u8] = b"ferry/v2/session-offer\0";
    /// Relay signature over a [`crate::SessionAccept`].
    pub const SESSION_ACCEPT: &[u8] = b"ferry/v2/session-accept\0";
    /// Relay signature over a [`crate::SessionAddress`].
    pub const SESSION_ADDRESS: &[u8] = b"ferry/v2/session-address\0";
    /// Relay signature over a [`crate::SessionReject`].
    pub const SESSION_REJECT: &[u8] = b"ferry/v2/session-reject\0";
    /// Relay signature over a [`crate::SessionTunnel`].
    pub const SESSION_TUNNEL: &[u8] = b"ferry/v2/session-tunnel\0";
    /// Relay signature over a [`crate::ReceiptBody`].
    pub const RECEIPT_RELAY: &[u8] = b"ferry/v2/receipt-relay\0";
    /// Client co-signature over a relay-signed receipt plus the client's own counts.
    pub const RECEIPT_CLIENT: &[u8] = b"ferry/v2/receipt-client\0";
    /// Client signature over a [`crate::ReceiptRefusal`] (a refused relay receipt).
    pub const RECEIPT_REFUSAL: &[u8] = b"ferry/v2/receipt-refusal\0";
    /// Relay signature over a [`crate::RelayDescriptor`].
    pub const RELAY_DESCRIPTOR: &[u8] = b"ferry/v2/relay-descriptor\0";
    /// Ledger (directory) signature over a [`crate::DirectoryAnnotation`].
    pub const DIRECTORY_ANNOTATION: &[u8] = b"ferry/v2/directory-annotation\0";
    /// Ledger (directory) signature over a [`crate::ProbeChallenge`].
    pub const PROBE_CHALLENGE: &[u8] = b"ferry/v2/probe-challenge\0";
    /// Relay signature over a [`crate::ProbeResponse`].
    pub const PROBE_RESPONSE: &[u8] = b"ferry/v2/probe-response\0";
}
