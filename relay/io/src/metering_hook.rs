//! Sending packets the agent itself originates (the metering control service's messages)
//! to a client through the relay, on the shell's WireGuard socket.

use ferry_relay_core::{PeerId, buffer_len};

use crate::shell::SharedRelay;
use crate::socket::UdpEndpoint;

/// Encrypts `packet` (an inner IP packet from the agent to `peer`'s tunnel address) for
/// `peer` with `Relay::encapsulate_for` (not client traffic: no rate limit, counters or
/// metering hook) and sends it. Returns false if nothing was sent (peer gone, no endpoint).
pub async fn send_to_peer(
    relay: &SharedRelay,
    udp: &UdpEndpoint,
    peer: PeerId,
    packet: &[u8],
) -> bool {
    let mut buf = vec![0u8; buffer_len(packet.len())];
    let out = {
        let Ok(mut r) = relay.lock() else {
            return false;
        };
        r.encapsulate_for(peer, packet, &mut buf)
            .map(|t| (t.dst, t.bytes.len()))
    };
    let Some((dst, len)) = out else {
        return false;
    };
    if let Err(e) = udp.send(dst, &buf[..len], None).await {
        tracing::debug!(error = %e, "control message send failed");
        return false;
    }
    true
}
