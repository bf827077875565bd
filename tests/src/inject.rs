//! An on-path attacker's tools: UDP datagrams with a spoofed source, sent from inside a
//! namespace through a raw IPv4 socket (root), e.g. replies "from" the relay's Hello port to a
//! client's Hello socket.

use std::net::{SocketAddr, SocketAddrV4};

use anyhow::{Context, Result, bail};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::Ns;

/// The local address of the UDP socket in `ns` connected to `remote` (e.g. a client's Hello
/// socket connected to the relay's Hello port), read with `ss`.
pub fn udp_socket_connected_to(ns: &Ns, remote: SocketAddr) -> Result<Option<SocketAddrV4>> {
    let out = ns.exec(&["ss", "-Hun", "dst", &remote.to_string()])?;
    // Columns vary with the filter (State is left out when it is implied); take the first
    // address that is not the peer.
    for line in out.lines() {
        let local = line
            .split_whitespace()
            .filter_map(|w| w.parse::<SocketAddrV4>().ok())
            .find(|a| SocketAddr::V4(*a) != remote);
        if local.is_some() {
            return Ok(local);
        }
    }
    Ok(None)
}

/// Sends each payload as one UDP/IPv4 datagram from the spoofed `from` to `to`, from inside
/// `ns`.
pub fn send_spoofed(
    ns: &Ns,
    from: SocketAddrV4,
    to: SocketAddrV4,
    payloads: &[Vec<u8>],
) -> Result<()> {
    ns.enter(|| -> Result<()> {
        // IPPROTO_RAW: we write the IP header ourselves (IP_HDRINCL implied).
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))
            .context("raw socket (needs root)")?;
        for p in payloads {
            let Some(pkt) = ferry_metering::udp_packet(from.into(), to.into(), p) else {
                bail!("payload too large for one datagram");
            };
            sock.send_to(&pkt, &SockAddr::from(SocketAddr::from((*to.ip(), 0))))
                .context("send spoofed datagram")?;
        }
        Ok(())
    })?
}
