//! Ferry's sans-IO metering and receipt exchange.
//!
//! This crate owns:
//! - [`Meter`]: exact per-session `u64` byte counters, fed by the relay *after* its
//!   allowed-IPs and egress-policy checks (never boringtun's `usize` counters);
//! - the control protocol spoken over the tunnel ([`Message`], [`encode`], [`decode`]);
//! - [`RelaySession`]: when to issue signed cumulative receipts, the credit window that
//!   stops (or throttles) a client that does not co-sign, voucher allowance enforcement,
//!   final receipts at teardown and resumption from a stored co-signed receipt;
//! - [`ClientSession`]: the client's own counters and the tolerance check that decides
//!   whether a relay's receipt is co-signed or rejected.
//!
//! It must not do I/O: no sockets, files, clock reads or OS randomness (enforced by this
//! crate's `clippy.toml`). Monotonic time (`now: Instant`), wall-clock time
//! (`unix_ts: u64`) and random session ids are arguments. Durability is the caller's job:
//! [`RelaySession::handle_cosigned`] hands back a receipt to persist, and only after the
//! caller has fsynced it does [`RelaySession::persisted`] extend credit and produce the
//! `Ack`. The driving contract of each state machine is documented on its type and in
//! `docs/metering.md`.
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod client;
mod control;
mod hub;
mod meter;
mod proto;
mod relay;

pub use client::{
    ClientConfig, ClientError, ClientSession, ClientVerdict, HelloOutcome, HelloReplies, Tolerance,
};
pub use control::{ControlDatagram, control_datagram, parse_udp, udp_packet};
pub use hub::RelayHub;
pub use meter::{Direction, Meter};
pub use proto::{
    CONTROL_PORT, CONTROL_VERSION, FrameError, HEADER_LEN, MAX_FRAME_LEN, Message,
    ReceiptRejectReason, SessionRejectReason, decode, decode_prefix, encode, reject_reason,
};
pub use relay::{
    ConfigError, CosignError, CosignOutcome, CreditMode, CutOffReason, DropReason, PROBE_SKEW_SECS,
    RelayConfig, RelayEvent, RelayIdentity, RelaySession, SessionState, Verdict,
};
