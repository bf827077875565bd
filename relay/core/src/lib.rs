//! Sans-IO relay core for `ferry-agent`: a multi-peer WireGuard responder around boringtun's
//! `noise::Tunn`, with cryptokey routing, egress policy and rate limits.
//!
//! Owns: the peer table (keyed by receiver index and public key), handshake admission
//! (MAC1 check; under load a per-source bucket and a relay-wide DH budget, beyond which
//! boringtun cookie replies are demanded),
//! allowed-IPs checks, endpoint roaming, the egress policy, per-client token buckets
//! (downloads over the rate wait in a bounded shaper queue), per-peer u64 byte counters of
//! accepted traffic, and drop statistics.
//!
//! Must not: do I/O, read clocks (time is the `now` argument; boringtun's `Tunn` reads its own
//! clock internally), use OS randomness (the index salt is an argument), allocate per packet
//! (the shaper's buffers are pooled),
//! or log destinations above TRACE. The tokio shell lives in `ferry-relay-io`.
#![warn(missing_docs)]

mod admission;
mod hook;
mod packet;
mod peer;
mod policy;
mod ratelimit;
mod relay;
mod routing;
mod shaper;
mod share;
mod stats;
mod sync;
mod unreachable;

pub use admission::DEFAULT_HANDSHAKE_BUDGET;
pub use boringtun::x25519::{PublicKey, StaticSecret};
pub use hook::{AsAny, HookDirection, HookVerdict, PacketHook};
pub use ipnet::IpNet;
pub use packet::{IpHeader, Transport};
pub use policy::{
    DEFAULT_BLOCKED_V4, DEFAULT_BLOCKED_V6, EgressPolicy, ExitPorts, PolicyConfig, PortRule, Proto,
    Service, Verdict, canonical_net,
};
pub use ratelimit::TokenBucket;
pub use relay::{
    Action, MIN_BUFFER_LEN, OVERHEAD, PeerConfig, PeerId, PeerInfo, PeerKind, Relay, RelayConfig,
    RelayError, TIMER_INTERVAL, Transmit, buffer_len,
};
pub use stats::{DropReason, PeerCounters, Stats, TunnelStats};
pub use sync::SyncReport;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_flood;
#[cfg(test)]
mod tests_share;
