//! The metering hook: lets the agent's metering (ferry-metering's `RelayHub`) see every
//! packet the relay is about to forward, without the relay core depending on it.
//!
//! Order inside the relay (both are called with the relay borrowed, so implementations must
//! be cheap, non-blocking and sans-IO):
//! - client → egress: decrypt, allowed-IPs check, then [`PacketHook::divert`] (control traffic
//!   for the relay itself is consumed here, before the egress policy, and never metered), then
//!   egress policy and rate limit, then [`PacketHook::admit`] with [`HookDirection::Up`];
//! - egress → client: route lookup, rate limit, then [`PacketHook::admit`] with
//!   [`HookDirection::Down`] just before encapsulation.
//!
//! A packet `admit` refuses is dropped as [`crate::DropReason::CreditWindow`].

use std::time::Instant;

use crate::relay::PeerId;

/// Which way a packet flows, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookDirection {
    /// Client → egress.
    Up,
    /// Egress → client.
    Down,
}

/// Per-packet callbacks into metering (see the module docs for when each is called).
pub trait PacketHook: Send {
    /// A decrypted client packet that passed the allowed-IPs check. Return `true` to consume
    /// it (it is then neither policy-checked, counted nor forwarded).
    fn divert(&mut self, peer: PeerId, packet: &[u8], now: Instant) -> bool;

    /// A packet that passed every relay check and is about to be forwarded. Return `false`
    /// to drop it (the hook must then not have counted it).
    fn admit(&mut self, peer: PeerId, dir: HookDirection, packet: &[u8], now: Instant) -> bool;
}
