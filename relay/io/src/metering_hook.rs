//! Sending packets the agent itself originates (the metering control service's replies)
//! to a client through the relay, on the shell's WireGuard socket.

use std::time::Instant;

use ferry_relay_core::{Action, buffer_len};

use crate::shell::SharedRelay;
use crate::socket::UdpEndpoint;

/// Encrypts `packet` (an inner IP packet addressed to a client's tunnel address) for the peer
/// that owns its destination and sends it. Goes through `Relay::handle_tun`, so routing and
/// the metering hook apply (the hook exempts control replies). Returns false if nothing was
/// sent (no route, no endpoint yet, dropped).
pub async fn inject_to_client(relay: &SharedRelay, udp: &UdpEndpoint, packet: &[u8]) -> bool {
    let mut buf = vec![0u8; buffer_len(packet.len())];
    let out = {
        let Ok(mut r) = relay.lock() else {
            return false;
        };
        match r.handle_tun(packet, Instant::now(), &mut buf) {
            Action::SendUdp { dst, bytes } => Some((dst, bytes.len())),
            _ => None,
        }
    };
    let Some((dst, len)) = out else {
        return false;
    };
    if let Err(e) = udp.send(dst, &buf[..len], None).await {
        tracing::debug!(error = %e, "control reply send failed");
        return false;
    }
    true
}
