//! `ferry-netstack`: the `userspace` egress mode of ferry-agent.
//!
//! Owns: terminating tunnel clients' TCP connections and UDP flows in userspace (smoltcp, no TUN,
//! no root), dialing the original destination with ordinary tokio sockets, relaying bytes both
//! ways, and producing the IP packets that go back to the clients.
//! Must not: apply billing/metering (the relay counts bytes on the IP packets it hands in and
//! takes out), decide egress policy (the relay core does; the optional [`NetstackConfig::policy`]
//! hook is defense in depth only), log destinations above DEBUG or anything per-packet above TRACE.
//!
//! # API contract (stable; ferry-relay-io / ferry-agent call this)
//!
//! ```ignore
//! let egress = UserspaceEgress::new(NetstackConfig::default()); // inside a tokio runtime
//! // client -> internet: a decrypted, allowed-IPs + policy-checked IPv4 or IPv6 packet
//! egress.send(&ip_packet).await;
//! // internet -> client: next IP packet to encrypt towards the client owning its dst address
//! let n = egress.recv(&mut buf).await;            // buf.len() >= mtu; returns packet length
//! let s = egress.stats();                         // NetstackStats counters
//! egress.shutdown();                              // or drop: aborts all flow tasks and sockets
//! ```
//!
//! - [`UserspaceEgress::new`] must be called inside a tokio runtime (it spawns the driver task).
//! - `send` never fails: packets it cannot use (ICMP, non TCP/UDP, malformed, over a limit,
//!   refused by the policy hook) are counted in [`NetstackStats`] and dropped; a refused TCP
//!   SYN is answered with a RST. It may wait briefly for the internal lock, never for the network.
//! - `recv` waits for the next client-bound packet. Packets are whole IP packets (v4 or v6) of
//!   at most `mtu` bytes; if `buf` is shorter the packet is dropped (counted) and the next one
//!   is returned. Use one receiving task (calls are serialized internally).
//! - TCP: a SYN to a new (src, dst) pair triggers an outbound `TcpStream` connect (timeout
//!   [`NetstackConfig::connect_timeout`]); the client's handshake completes only after the dial
//!   succeeds, otherwise the client gets a RST. FIN/RST propagate in both directions.
//! - UDP: each (client src, dst) pair gets its own `UdpSocket` (bound to `0.0.0.0:0`/`[::]:0`,
//!   connected to dst); replies come back from dst to the client's src. Idle flows expire.
//! - ICMP (including echo) and other protocols are dropped: unprivileged sockets cannot send them.
//! - Limits: at most [`NetstackConfig::max_flows`] TCP+UDP flows; TCP buffers are
//!   [`NetstackConfig::tcp_buffer`] bytes per direction. Every flow holds one file descriptor:
//!   the agent should raise `RLIMIT_NOFILE` above `max_flows` (EMFILE makes new flows fail:
//!   TCP clients get a RST, UDP datagrams are dropped).
//! - IPv4 fragments and IPv6 extension headers are dropped (clients use MTU 1420, so TCP never
//!   fragments; oversized UDP replies that would not fit the MTU are dropped, not truncated).
//!
//! Inside, [`NetStack`] is the sans-IO core (time injected as [`smoltcp::time::Instant`], no
//! sockets, no clock reads); [`UserspaceEgress`] is the tokio shell driving it.

#![warn(missing_docs)]

mod config;
mod device;
mod packet;
mod shell;
mod stack;

pub use config::{NetstackConfig, PolicyFn};
pub use shell::UserspaceEgress;
pub use stack::{Event, FlowId, NetStack, NetstackStats};
