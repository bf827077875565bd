//! The lean upstream backend (builds without the `resolver` feature: the small routers): plain
//! DNS over UDP and TCP to the configured upstreams with hickory-proto messages and tokio
//! sockets, in front of the [`Cache`].
//!
//! Each try is a fresh query: random ID (hickory-proto's `Message::query`, OS-seeded CSPRNG)
//! from a fresh socket on a kernel-chosen ephemeral port, connected to the upstream. A reply
//! counts only if its ID and question match; anything else is ignored until the try times out.
//! Must not: log or put into errors anything about a query (name, type, client).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::cache::{Answer, Cache};
use crate::{DnsConfig, DnsError, Protocol};

/// EDNS payload size we advertise upstream (DNS Flag Day 2020).
const EDNS_PAYLOAD: u16 = 1232;
/// Answers larger than this (on the wire) are passed on but not cached.
const MAX_CACHED_BYTES: usize = 4096;

/// Why an upstream lookup failed. Carries nothing about the query.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LookupError {
    /// Every try timed out, failed or was refused by the upstream.
    #[error("no upstream answered")]
    NoAnswer,
}

/// Why one try failed (for tests and TRACE; no query details).
#[derive(Debug)]
// The fields are only read through `Debug` (TRACE) and by tests.
#[allow(dead_code)]
enum TryError {
    Io(std::io::ErrorKind),
    Timeout,
    Rejected(ResponseCode),
}

impl From<std::io::Error> for TryError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.kind())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
    /// UDP, then TCP if the reply is truncated.
    UdpThenTcp,
}

#[derive(Debug, Clone, Copy)]
struct Server {
    addr: SocketAddr,
    transport: Transport,
}

/// An upstream reply that matched our query.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) message: Message,
    /// Complete (not truncated) and small enough to cache.
    pub(crate) cacheable: bool,
}

/// The configured plain upstreams, tried in order starting with the last one that answered.
#[derive(Debug)]
pub(crate) struct Upstreams {
    servers: Vec<Server>,
    timeout: Duration,
    attempts: usize,
    preferred: AtomicUsize,
}

impl Upstreams {
    pub(crate) fn new(config: &DnsConfig) -> Result<Self, DnsError> {
        let servers = config
            .upstream
            .iter()
            .map(|u| {
                let addr = u.check()?;
                let transport = match u.protocol {
                    Protocol::Udp => Transport::Udp,
                    Protocol::Tcp => Transport::Tcp,
                    Protocol::Plain => Transport::UdpThenTcp,
                    other => {
                        return Err(DnsError::Config(format!(
                            "upstream {}: protocol {other:?} needs ferry-dns built with the resolver feature",
                            u.address
                        )));
                    }
                };
                Ok(Server { addr, transport })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(DnsError::Config(
                "at least one [[dns.upstream]] is required".into(),
            ));
        }
        Ok(Self {
            servers,
            timeout: config.timeout(),
            attempts: config.attempts.max(1),
            preferred: AtomicUsize::new(0),
        })
    }

    /// Asks the upstreams until one answers NOERROR or NXDOMAIN: `attempts` rounds over all
    /// of them, `timeout` per try, never past `deadline`. SERVFAIL, REFUSED and other codes,
    /// timeouts and socket errors move on to the next try.
    pub(crate) async fn lookup(
        &self,
        name: &Name,
        qtype: RecordType,
        deadline: Instant,
    ) -> Result<Reply, LookupError> {
        let n = self.servers.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        for _round in 0..self.attempts {
            for i in 0..n {
                let now = Instant::now();
                if now >= deadline {
                    return Err(LookupError::NoAnswer);
                }
                let index = (first + i) % n;
                let try_deadline = deadline.min(now + self.timeout);
                match self
                    .ask(self.servers[index], name, qtype, try_deadline, deadline)
                    .await
                {
                    Ok(reply) => {
                        self.preferred.store(index, Ordering::Relaxed);
                        return Ok(reply);
                    }
                    Err(reason) => {
                        tracing::trace!(upstream = index, ?reason, "dns upstream try failed");
                    }
                }
            }
        }
        Err(LookupError::NoAnswer)
    }

    /// One try: `try_deadline` for the exchange; a TCP retry after truncation gets a full
    /// timeout of its own, within the lookup's `deadline`.
    async fn ask(
        &self,
        server: Server,
        name: &Name,
        qtype: RecordType,
        try_deadline: Instant,
        deadline: Instant,
    ) -> Result<Reply, TryError> {
        let (message, len) = match server.transport {
            Transport::Udp => udp_exchange(server.addr, name, qtype, try_deadline).await?,
            Transport::Tcp => tcp_exchange(server.addr, name, qtype, try_deadline).await?,
            Transport::UdpThenTcp => {
                let (message, len) = udp_exchange(server.addr, name, qtype, try_deadline).await?;
                if message.metadata.truncation {
                    let tcp_deadline = deadline.min(Instant::now() + self.timeout);
                    tcp_exchange(server.addr, name, qtype, tcp_deadline).await?
                } else {
                    (message, len)
                }
            }
        };
        match message.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(Reply {
                cacheable: !message.metadata.truncation && len <= MAX_CACHED_BYTES,
                message,
            }),
            other => Err(TryError::Rejected(other)),
        }
    }
}

/// A fresh query (new random ID) with RD set and EDNS.
fn build_query(name: &Name, qtype: RecordType) -> Message {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(name.clone(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    query.set_edns(edns);
    query
}

/// Does `reply` answer `query` (ID, response flag, same question)?
fn matches(query: &Message, reply: &Message) -> bool {
    reply.metadata.id == query.metadata.id
        && reply.metadata.message_type == MessageType::Response
        && reply.queries == query.queries
}

fn encode(query: &Message) -> Result<Vec<u8>, TryError> {
    query
        .to_vec()
        .map_err(|_| TryError::Io(std::io::ErrorKind::InvalidInput))
}

async fn udp_exchange(
    addr: SocketAddr,
    name: &Name,
    qtype: RecordType,
    deadline: Instant,
) -> Result<(Message, usize), TryError> {
    let query = build_query(name, qtype);
    let bytes = encode(&query)?;
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: the kernel drops datagrams from other sources, and ICMP errors surface.
    socket.connect(addr).await?;
    let exchange = async {
        socket.send(&bytes).await?;
        let mut buf = vec![0u8; 4096];
        loop {
            let len = socket.recv(&mut buf).await?;
            match Message::from_vec(&buf[..len]) {
                Ok(reply) if matches(&query, &reply) => return Ok((reply, len)),
                _ => continue, // spoofed, stale or garbage: keep waiting
            }
        }
    };
    tokio::time::timeout_at(deadline.into(), exchange)
        .await
        .map_err(|_| TryError::Timeout)?
}

async fn tcp_exchange(
    addr: SocketAddr,
    name: &Name,
    qtype: RecordType,
    deadline: Instant,
) -> Result<(Message, usize), TryError> {
    let query = build_query(name, qtype);
    let bytes = encode(&query)?;
    let len =
        u16::try_from(bytes.len()).map_err(|_| TryError::Io(std::io::ErrorKind::InvalidInput))?;
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await?;
        loop {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf).await?;
            match Message::from_vec(&buf) {
                Ok(reply) if matches(&query, &reply) => return Ok((reply, buf.len())),
                _ => continue,
            }
        }
    };
    tokio::time::timeout_at(deadline.into(), exchange)
        .await
        .map_err(|_| TryError::Timeout)?
}

/// Upstreams plus the answer cache: what the forwarder's lean path asks.
#[derive(Debug)]
pub(crate) struct Lean {
    upstreams: Upstreams,
    cache: Mutex<Cache>,
}

impl Lean {
    pub(crate) fn new(config: &DnsConfig) -> Result<Self, DnsError> {
        let capacity = usize::try_from(config.cache_size).unwrap_or(usize::MAX);
        Ok(Self {
            upstreams: Upstreams::new(config)?,
            cache: Mutex::new(Cache::new(capacity)),
        })
    }

    /// The cached answer, else the upstreams' (cached if it may be).
    pub(crate) async fn resolve(
        &self,
        name: &Name,
        qtype: RecordType,
        deadline: Instant,
    ) -> Result<Answer, LookupError> {
        if let Some(hit) = self.cache().get(name, qtype, Instant::now()) {
            return Ok(hit);
        }
        let reply = self.upstreams.lookup(name, qtype, deadline).await?;
        let mut answer = Answer::from_message(reply.message);
        answer.cap_ttls();
        if reply.cacheable {
            self.cache().insert(name, qtype, &answer, Instant::now());
        }
        Ok(answer)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock cannot leave the map inconsistent: keep using it.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
