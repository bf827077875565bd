//! Many WireGuard peers from one process: each peer is a boringtun `Tunn` with its own UDP socket
//! created inside the client namespace. Each peer handshakes with the relay, sends one UDP datagram
//! per target (IPv4 and/or IPv6 inner packets) to a [`crate::servers::UdpEcho`] through the
//! tunnel, and waits for the echo. This replaces 50 wireguard-go processes.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::PublicKey;
use nix::sys::socket::{setsockopt, sockopt};

use crate::netns::Ns;
use crate::wg::{KeyPair, tunnel};

/// One simulated client.
#[derive(Clone, Debug)]
pub struct PeerSpec {
    /// Its key pair.
    pub key: KeyPair,
    /// Inner source addresses to use, at most one per family (must be in its allowed IPs).
    pub inner: Vec<IpAddr>,
}

/// What happened to one peer.
#[derive(Clone, Debug, Default)]
pub struct PeerOutcome {
    /// Time from the first packet to the completed handshake (first decrypted data or keepalive).
    pub handshake: Option<Duration>,
    /// For every answered target: (target, source address the echo server saw).
    pub answered: Vec<(SocketAddr, SocketAddr)>,
    /// boringtun errors seen (as Debug text).
    pub errors: Vec<String>,
}

/// Runs all peers concurrently (one thread each) until every peer has an answer from every
/// target of its families, or `timeout` passes.
pub fn run_peers(
    ns: &Ns,
    relay: PublicKey,
    endpoint: SocketAddr,
    peers: &[PeerSpec],
    targets: &[SocketAddr],
    timeout: Duration,
) -> Result<Vec<PeerOutcome>> {
    let bind: SocketAddr = if endpoint.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    let mut socks = Vec::with_capacity(peers.len());
    for _ in peers {
        let s = ns
            .enter(|| UdpSocket::bind(bind))?
            .context("bind peer socket")?;
        // Bypass a stock client's full-tunnel policy routing in the same namespace (like
        // wireguard-go's own socket does), so these datagrams reach the relay directly.
        setsockopt(&s, sockopt::Mark, &tunnel::FWMARK).context("SO_MARK")?;
        s.connect(endpoint)?;
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        socks.push(s);
    }
    let deadline = Instant::now() + timeout;
    Ok(std::thread::scope(|scope| {
        let handles: Vec<_> = peers
            .iter()
            .zip(socks)
            .enumerate()
            .map(|(i, (p, sock))| {
                scope.spawn(move || drive_peer(i, p, relay, endpoint, sock, targets, deadline))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| PeerOutcome {
                    errors: vec!["peer thread panicked".into()],
                    ..Default::default()
                })
            })
            .collect()
    }))
}

fn drive_peer(
    i: usize,
    spec: &PeerSpec,
    relay: PublicKey,
    endpoint: SocketAddr,
    sock: UdpSocket,
    targets: &[SocketAddr],
    deadline: Instant,
) -> PeerOutcome {
    let mut out = PeerOutcome::default();
    let mut tunn = Tunn::new(
        spec.key.secret.clone(),
        relay,
        None,
        None,
        i as u32 + 1,
        None,
    );
    let wanted: Vec<(SocketAddr, Vec<u8>, Vec<u8>)> = targets
        .iter()
        .filter_map(|t| {
            let src = spec.inner.iter().find(|a| a.is_ipv4() == t.is_ipv4())?;
            let payload = format!("ferry-peer-{i}-to-{t}").into_bytes();
            let pkt = udp_packet(
                SocketAddr::new(*src, 40000 + (i % 20000) as u16),
                *t,
                &payload,
            );
            Some((*t, payload, pkt))
        })
        .collect();
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    let mut net = vec![0u8; 65536];
    let mut last_send = None::<Instant>;
    while Instant::now() < deadline && out.answered.len() < wanted.len() {
        // (Re)send every unanswered datagram once a second; the first call starts the handshake.
        if last_send.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(1)) {
            for (t, _, pkt) in &wanted {
                if out.answered.iter().any(|(a, _)| a == t) {
                    continue;
                }
                if let TunnResult::WriteToNetwork(b) = tunn.encapsulate(pkt, &mut buf) {
                    let _ = sock.send(b);
                }
            }
            last_send = Some(Instant::now());
        }
        let n = match sock.recv(&mut net) {
            Ok(n) => n,
            Err(_) => {
                if let TunnResult::WriteToNetwork(b) = tunn.update_timers(&mut buf) {
                    let _ = sock.send(b);
                }
                continue;
            }
        };
        match tunn.decapsulate(Some(endpoint.ip()), &net[..n], &mut buf) {
            TunnResult::WriteToNetwork(b) => {
                let _ = sock.send(b);
                while let TunnResult::WriteToNetwork(b) = tunn.decapsulate(None, &[], &mut buf) {
                    let _ = sock.send(b);
                }
                out.handshake.get_or_insert(start.elapsed());
            }
            TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                out.handshake.get_or_insert(start.elapsed());
                if let Some((from, body)) = parse_udp(p) {
                    for (t, payload, _) in &wanted {
                        if from == *t && !out.answered.iter().any(|(a, _)| a == t) {
                            if let Some(seen) = parse_echo(&body, payload) {
                                out.answered.push((*t, seen));
                            }
                        }
                    }
                }
            }
            TunnResult::Done => {
                out.handshake.get_or_insert(start.elapsed());
            }
            TunnResult::Err(e) => out.errors.push(format!("{e:?}")),
        }
    }
    out
}

/// Builds an IPv4 or IPv6 packet carrying one UDP datagram (checksums filled in); the
/// workspace's one builder (`ferry_metering::udp_packet`).
pub fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    ferry_metering::udp_packet(src, dst, payload)
        .unwrap_or_else(|| panic!("mixed address families {src} -> {dst}"))
}

/// Parses an inner IP/UDP packet into (source socket address, payload)
/// (`ferry_metering::parse_udp`).
pub fn parse_udp(p: &[u8]) -> Option<(SocketAddr, Vec<u8>)> {
    ferry_metering::parse_udp(p).map(|(src, _, payload)| (src, payload.to_vec()))
}

/// Parses a [`crate::servers::UdpEcho`] answer, checking it echoes `payload`.
fn parse_echo(body: &[u8], payload: &[u8]) -> Option<SocketAddr> {
    let nl = body.iter().position(|b| *b == b'\n')?;
    (&body[nl + 1..] == payload).then_some(())?;
    let head = std::str::from_utf8(&body[..nl]).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_packets_round_trip_v4_and_v6() {
        for (s, d) in [
            ("10.77.1.5:40001", "203.0.113.2:7007"),
            ("[fd77::1:5]:40001", "[2001:db8:1::2]:7007"),
        ] {
            let (s, d): (SocketAddr, SocketAddr) = (s.parse().unwrap(), d.parse().unwrap());
            let pkt = udp_packet(s, d, b"hello");
            assert_eq!(parse_udp(&pkt), Some((s, b"hello".to_vec())));
        }
    }

    #[test]
    fn corrupted_udp_checksum_is_rejected() {
        let s: SocketAddr = "10.77.1.5:40001".parse().unwrap();
        let d: SocketAddr = "203.0.113.2:7007".parse().unwrap();
        let mut pkt = udp_packet(s, d, b"hello");
        let last = pkt.len() - 1;
        pkt[last] ^= 0xff;
        assert_eq!(parse_udp(&pkt), None);
    }

    #[test]
    fn echo_answer_must_carry_our_payload() {
        assert_eq!(
            parse_echo(b"inet 203.0.113.1:5000\nabc", b"abc"),
            Some("203.0.113.1:5000".parse().unwrap())
        );
        assert_eq!(parse_echo(b"inet 203.0.113.1:5000\nabd", b"abc"), None);
    }
}
