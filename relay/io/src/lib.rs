//! Tokio shell driving the sans-IO [`ferry_relay_core::Relay`]: one UDP socket (large buffers,
//! batched receive via recvmmsg/GRO and batched send via GSO through `quinn-udp`), an
//! [`Egress`] (kernel TUN or the userspace smoltcp stack from `ferry-netstack`), the 250 ms
//! timer loop, and the host setup for TUN mode (addresses, forwarding, nftables masquerade).
//!
//! Owns: sockets, devices, tasks, clocks (it passes `Instant::now()` into the core), host
//! network configuration and its cleanup. Must not: make relay decisions (policy, routing,
//! accounting live in the core), log destinations above DEBUG or per-packet events above TRACE.

mod egress;
mod host;
mod metering_hook;
mod shell;
mod socket;

pub use egress::{Egress, HEADROOM, TUN_MIN_BATCH, TunEgress, UserspaceEgress};
pub use host::{
    ForwardingGuard, NatGuard, default_route_interfaces, interface_addresses, local_addresses,
};
pub use metering_hook::send_to_peer;
pub use shell::{SharedRelay, Shell, ShellConfig};
pub use socket::{SOCKET_BUFFER, UdpEndpoint, bind_udp};
