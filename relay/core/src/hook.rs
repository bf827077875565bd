//! The metering hook: lets the agent's paid-session state (ferry-metering's `RelayHub`) see
//! the packets of paid peers the relay is about to forward, without the relay core depending
//! on it. The hook is owned by the [`crate::Relay`] (set with `set_hook`), so the peer table
//! and the sessions live behind one owner: the agent reaches its sessions with
//! [`crate::Relay::with_hook`] / [`crate::Relay::hook`], under the same lock as the packets.
//!
//! Order inside the relay:
//! - client → egress: decrypt, allowed-IPs check, then [`PacketHook::divert`] for every peer
//!   (control traffic for the relay itself is consumed here, before the egress policy, and
//!   never metered), then egress policy and rate limit, then, for [`crate::PeerKind::Paid`]
//!   peers only, [`PacketHook::admit`] with [`HookDirection::Up`];
//! - egress → client: route lookup, rate limit, then (paid peers only) [`PacketHook::admit`]
//!   with [`HookDirection::Down`] just before encapsulation.
//!
//! Trusted peers are never metered. A paid peer's packet is forwarded only if `admit` says
//! [`HookVerdict::Forward`]; without a hook, or without a live session, it is dropped
//! ([`crate::DropReason::PaidNoSession`]): billing fails closed. The agent's own control
//! replies do not pass here at all ([`crate::Relay::encapsulate_for`]).

use std::any::Any;
use std::time::Instant;

use crate::packet::IpHeader;
use crate::peer::PeerId;

/// Which way a packet flows, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookDirection {
    /// Client → egress.
    Up,
    /// Egress → client.
    Down,
}

/// What the hook decided for one packet of a paid peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookVerdict {
    /// Metered; forward it.
    Forward,
    /// The session exists but its credit window (or allowance) is used up: drop
    /// ([`crate::DropReason::CreditWindow`]).
    CreditWindow,
    /// The peer has no live session: drop ([`crate::DropReason::PaidNoSession`]).
    NoSession,
}

/// Reaching a hook's concrete type through `dyn PacketHook` (implemented for every type).
pub trait AsAny: Any {
    /// As `Any`.
    fn as_any(&self) -> &dyn Any;
    /// As mutable `Any`.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Per-packet callbacks into metering (see the module docs for when each is called). Both
/// run with the relay borrowed: implementations must be cheap, non-blocking and sans-IO.
pub trait PacketHook: Send + AsAny {
    /// A decrypted client packet (any peer) that passed the allowed-IPs check, with its
    /// already parsed header. Return `true` to consume it (it is then neither policy-checked,
    /// counted nor forwarded).
    fn divert(&mut self, peer: PeerId, hdr: &IpHeader, packet: &[u8], now: Instant) -> bool;

    /// A paid peer's packet of `bytes` bytes that passed every relay check and is about to be
    /// forwarded. Anything but [`HookVerdict::Forward`] drops it (the hook must then not have
    /// counted it).
    fn admit(
        &mut self,
        peer: PeerId,
        dir: HookDirection,
        bytes: usize,
        now: Instant,
    ) -> HookVerdict;
}
