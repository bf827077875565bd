//! The reachability probe (I/O): a ledger-signed challenge to a relay's Hello port over UDP,
//! answered by a relay-signed response. Behind a trait so tests and benchmarks can stand in.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::time::{Duration, Instant};

use ferry_metering::{Message, decode, encode};
use ferry_receipts::ProbeChallenge;
use tokio::net::UdpSocket;

/// A probe in flight: the round trip of the first valid answer, or `None`.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Option<Duration>> + Send + 'a>>;

/// Sends a challenge to an address and waits for the relay's answer.
pub trait Prober: Send + Sync + 'static {
    /// Probes the Hello port at `to`.
    fn probe<'a>(&'a self, to: SocketAddr, challenge: &'a ProbeChallenge) -> ProbeFuture<'a>;
}

/// The real prober: `attempts` datagrams, each waiting `wait` for the answer.
#[derive(Debug, Clone, Copy)]
pub struct UdpProber {
    /// Datagrams sent before giving up.
    pub attempts: u32,
    /// Wait per datagram.
    pub wait: Duration,
}

impl Prober for UdpProber {
    fn probe<'a>(&'a self, to: SocketAddr, challenge: &'a ProbeChallenge) -> ProbeFuture<'a> {
        Box::pin(async move {
            let any: SocketAddr = if to.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let sock = UdpSocket::bind(any).await.ok()?;
            sock.connect(to).await.ok()?;
            let frame = encode(&Message::Probe(challenge.clone()));
            let mut buf = [0u8; 512];
            for _ in 0..self.attempts {
                let sent = Instant::now();
                if sock.send(&frame).await.is_err() {
                    tokio::time::sleep(self.wait).await;
                    continue;
                }
                let deadline = tokio::time::Instant::now() + self.wait;
                // Other datagrams (or a refused port's ICMP error) do not end the wait early.
                while let Ok(got) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                    let Ok(n) = got else { continue };
                    if let Ok(Message::ProbeReply(r)) = decode(&buf[..n])
                        && r.answers(challenge)
                    {
                        return Some(sent.elapsed());
                    }
                }
            }
            None
        })
    }
}
