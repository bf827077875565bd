//! UDP + TCP listeners that answer each query from the cache or the upstreams.
//!
//! Our own socket loops (not hickory-server's) because hickory-server logs every query name
//! and client address at INFO. Here nothing about a query is logged at any level except its
//! response code and latency at TRACE.
//!
//! Upstream backend: hickory-resolver with the `resolver` feature, else the lean plain-DNS
//! backend ([`crate::upstream`]). Both sit behind the same [`Inner::respond`], so what clients
//! see (ANY, AXFR, classes, FORMERR, EDNS, truncation) does not depend on the build.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
#[cfg(feature = "resolver")]
use hickory_resolver::TokioResolver;
#[cfg(feature = "resolver")]
use hickory_resolver::config::{ResolveHosts, ResolverConfig, ResolverOpts};
#[cfg(feature = "resolver")]
use hickory_resolver::net::runtime::TokioRuntimeProvider;
#[cfg(feature = "resolver")]
use hickory_resolver::net::{DnsError as UpstreamDnsError, NetError};
// portable-atomic: 32-bit MIPS routers have no native 64-bit atomics (lock-based fallback there).
use portable_atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::{DnsConfig, DnsError};

/// EDNS payload size we advertise and honour (the DNS Flag Day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;
/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Counters the agent copies into `ferry_telemetry::DnsStats`.
#[derive(Debug, Default)]
pub struct ForwarderStats {
    queries: AtomicU64,
    upstream_failures: AtomicU64,
    dropped: AtomicU64,
}

/// A point-in-time copy of [`ForwarderStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Queries answered (any response code).
    pub queries: u64,
    /// Queries answered SERVFAIL because no upstream answered.
    pub upstream_failures: u64,
    /// Queries dropped unanswered (over `max-inflight`, undecodable).
    pub dropped: u64,
}

impl ForwarderStats {
    /// Current values.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            queries: self.queries.load(Ordering::Relaxed),
            upstream_failures: self.upstream_failures.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// A bound forwarder; call [`Forwarder::run`] to serve.
pub struct Forwarder {
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    inner: Arc<Inner>,
}

struct Inner {
    #[cfg(feature = "resolver")]
    resolver: TokioResolver,
    #[cfg(not(feature = "resolver"))]
    lean: crate::upstream::Lean,
    stats: Arc<ForwarderStats>,
    inflight: Arc<Semaphore>,
    tcp_slots: Arc<Semaphore>,
    /// Bound on one query's total upstream time (all attempts), so clients get SERVFAIL
    /// instead of silence when every upstream is down.
    deadline: Duration,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("addrs", &self.local_addrs())
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// Validates `config`, builds the upstream resolver and binds UDP and TCP on every
    /// `listen` address (for port 0, TCP gets the port UDP was given).
    pub async fn bind(config: &DnsConfig) -> Result<Self, DnsError> {
        config.validate()?;
        if config.listen.is_empty() {
            return Err(DnsError::Config("dns listen address list is empty".into()));
        }
        #[cfg(feature = "resolver")]
        let resolver = build_resolver(config)?;
        #[cfg(not(feature = "resolver"))]
        let lean = crate::upstream::Lean::new(config)?;
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for addr in &config.listen {
            let (u, t) = bind_pair(*addr).await?;
            udp.push(u);
            tcp.push(t);
        }
        let attempts = u32::try_from(config.attempts).unwrap_or(u32::MAX);
        let inner = Inner {
            #[cfg(feature = "resolver")]
            resolver,
            #[cfg(not(feature = "resolver"))]
            lean,
            stats: Arc::default(),
            inflight: Arc::new(Semaphore::new(config.max_inflight)),
            tcp_slots: Arc::new(Semaphore::new(config.max_tcp_connections)),
            deadline: config.timeout().saturating_mul(attempts) + Duration::from_millis(500),
        };
        Ok(Self {
            udp,
            tcp,
            inner: Arc::new(inner),
        })
    }

    /// Bound addresses (UDP and TCP share each).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Shared counters, for the metrics snapshot.
    pub fn stats(&self) -> Arc<ForwarderStats> {
        self.inner.stats.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut tasks = JoinSet::new();
        for socket in self.udp {
            tasks.spawn(udp_loop(Arc::new(socket), self.inner.clone()));
        }
        for listener in self.tcp {
            tasks.spawn(tcp_loop(listener, self.inner.clone()));
        }
        tracing::info!(listeners = tasks.len(), "dns forwarder running");
        shutdown.await;
        tasks.shutdown().await;
        tracing::info!("dns forwarder stopped");
    }
}

#[cfg(feature = "resolver")]
fn build_resolver(config: &DnsConfig) -> Result<TokioResolver, DnsError> {
    let name_servers = config
        .upstream
        .iter()
        .map(|u| u.to_name_server())
        .collect::<Result<Vec<_>, _>>()?;
    let mut opts = ResolverOpts::default();
    opts.timeout = config.timeout();
    opts.attempts = config.attempts;
    opts.cache_size = config.cache_size;
    opts.use_hosts_file = ResolveHosts::Never;
    // A forwarder must hand CNAME chains to the client (RFC 1034 4.3.2).
    opts.preserve_intermediates = true;
    opts.max_active_requests = config.max_inflight;
    let mut builder = TokioResolver::builder_with_config(
        ResolverConfig::from_parts(None, Vec::new(), name_servers),
        TokioRuntimeProvider::default(),
    );
    *builder.options_mut() = opts;
    // Without `dot`, `validate` already refused a ca-file.
    #[cfg(feature = "dot")]
    if let Some(ca_file) = &config.ca_file {
        builder = builder.with_tls_config(tls_config(ca_file)?);
    }
    builder
        .build()
        .map_err(|e| DnsError::Config(format!("building upstream resolver: {e}")))
}

/// Client TLS config trusting only the CA certificates in `ca_file`.
#[cfg(feature = "dot")]
fn tls_config(ca_file: &std::path::Path) -> Result<rustls::ClientConfig, DnsError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let bad = |e: String| DnsError::Config(format!("ca-file {}: {e}", ca_file.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificates found".into()));
    }
    let provider = Arc::new(hickory_resolver::net::tls::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Binds UDP and TCP on one address (the same port when `addr`'s port is 0).
pub(crate) async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let bind_err = |source| DnsError::Bind { addr, source };
    // With port 0 the kernel picks UDP's port, which may be taken for TCP; retry a few times.
    for _ in 0..8 {
        let udp = UdpSocket::bind(addr).await.map_err(bind_err)?;
        let actual = udp.local_addr().map_err(bind_err)?;
        match TcpListener::bind(actual).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(bind_err(e)),
        }
    }
    Err(bind_err(std::io::Error::from(
        std::io::ErrorKind::AddrInUse,
    )))
}

async fn udp_loop(socket: Arc<UdpSocket>, inner: Arc<Inner>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors surface here on Linux; they are per-datagram, not fatal.
                tracing::trace!(kind = ?e.kind(), "udp recv error");
                continue;
            }
        };
        let Ok(permit) = inner.inflight.clone().try_acquire_owned() else {
            inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let request = buf[..len].to_vec();
        let (socket, inner) = (socket.clone(), inner.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(response) = inner.answer(&request, true).await {
                // Send errors (client gone) are not actionable.
                let _ = socket.send_to(&response, peer).await;
            }
        });
    }
}

async fn tcp_loop(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(kind = ?e.kind(), "dns tcp accept error");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = inner.tcp_slots.clone().try_acquire_owned() else {
            inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tcp_connection(stream, &inner).await;
        });
    }
}

/// Length-prefixed queries (RFC 1035 4.2.2), answered in order.
async fn tcp_connection(mut stream: TcpStream, inner: &Inner) -> std::io::Result<()> {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let mut request = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut request))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        let Ok(permit) = inner.inflight.try_acquire() else {
            inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let response = inner.answer(&request, false).await;
        drop(permit);
        let Some(response) = response else {
            return Ok(());
        };
        let Ok(len) = u16::try_from(response.len()) else {
            return Ok(());
        };
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(&response).await?;
    }
}

impl Inner {
    /// The wire response to `request`, or `None` to stay silent. Over UDP the client's EDNS
    /// size (or 512) applies and larger answers are truncated (TC set, client retries on TCP).
    async fn answer(&self, request: &[u8], udp: bool) -> Option<Vec<u8>> {
        let started = Instant::now();
        let response = match Message::from_vec(request) {
            Ok(req) if req.metadata.message_type == MessageType::Query => self.respond(&req).await,
            Ok(_) => None, // a response sent to us: ignore
            Err(_) => form_error(request),
        };
        let Some(mut response) = response else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        if response.metadata.response_code == ResponseCode::ServFail {
            self.stats.upstream_failures.fetch_add(1, Ordering::Relaxed);
        }
        tracing::trace!(
            rcode = %response.metadata.response_code,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "dns answered"
        );
        let bytes = response.to_vec().ok()?;
        if udp && bytes.len() > usize::from(response.max_payload()) {
            response = response.truncate();
            return response.to_vec().ok();
        }
        Some(bytes)
    }

    async fn respond(&self, req: &Message) -> Option<Message> {
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        resp.metadata.checking_disabled = req.metadata.checking_disabled;
        resp.add_queries(req.queries.iter().cloned());
        if let Some(edns) = &req.edns {
            let mut ours = Edns::new();
            ours.set_max_payload(EDNS_PAYLOAD.min(edns.max_payload().max(512)));
            resp.set_edns(ours);
        }
        let code = match (req.metadata.op_code, req.queries.as_slice()) {
            (OpCode::Query, [query]) => match (query.query_class(), query.query_type()) {
                (DNSClass::IN, RecordType::AXFR | RecordType::IXFR) => ResponseCode::NotImp,
                (DNSClass::IN, RecordType::ANY) => ResponseCode::Refused,
                (DNSClass::IN, qtype) => self.forward(query.name().clone(), qtype, &mut resp).await,
                _ => ResponseCode::Refused,
            },
            (OpCode::Query, _) => ResponseCode::FormErr,
            _ => ResponseCode::NotImp,
        };
        resp.metadata.response_code = code;
        Some(resp)
    }

    #[cfg(not(feature = "resolver"))]
    async fn forward(
        &self,
        name: hickory_proto::rr::Name,
        qtype: RecordType,
        resp: &mut Message,
    ) -> ResponseCode {
        let deadline = Instant::now() + self.deadline;
        let lookup = tokio::time::timeout(self.deadline, self.lean.resolve(&name, qtype, deadline));
        match lookup.await {
            Ok(Ok(answer)) => {
                resp.add_answers(answer.answers);
                resp.add_authorities(answer.authorities);
                match answer.rcode {
                    ResponseCode::NXDomain => ResponseCode::NXDomain,
                    _ => ResponseCode::NoError,
                }
            }
            // Timeouts, unreachable or misbehaving upstreams, upstream REFUSED/SERVFAIL.
            Ok(Err(_)) | Err(_) => ResponseCode::ServFail,
        }
    }

    #[cfg(feature = "resolver")]
    async fn forward(
        &self,
        name: hickory_proto::rr::Name,
        qtype: RecordType,
        resp: &mut Message,
    ) -> ResponseCode {
        let lookup = tokio::time::timeout(self.deadline, self.resolver.lookup(name, qtype)).await;
        match lookup {
            Ok(Ok(lookup)) => {
                resp.add_answers(lookup.answers().iter().cloned());
                resp.add_authorities(lookup.authorities().iter().cloned());
                match lookup.message().metadata.response_code {
                    ResponseCode::NXDomain => ResponseCode::NXDomain,
                    _ => ResponseCode::NoError,
                }
            }
            Ok(Err(NetError::Dns(UpstreamDnsError::NoRecordsFound(no_records)))) => {
                if let Some(soa) = no_records.soa {
                    resp.add_authority(soa.into_record_of_rdata());
                }
                match no_records.response_code {
                    ResponseCode::NXDomain => ResponseCode::NXDomain,
                    _ => ResponseCode::NoError,
                }
            }
            // Timeouts, unreachable or misbehaving upstreams, upstream REFUSED/SERVFAIL.
            // The error text can contain the query name, so it is never logged.
            Ok(Err(_)) | Err(_) => ResponseCode::ServFail,
        }
    }
}

/// FORMERR for an undecodable message that still has a 12-byte header; silence otherwise.
fn form_error(request: &[u8]) -> Option<Message> {
    let header = request.get(..12)?;
    let id = u16::from_be_bytes([header[0], header[1]]);
    let is_query = header[2] & 0x80 == 0;
    is_query.then(|| Message::error_msg(id, OpCode::Query, ResponseCode::FormErr))
}
