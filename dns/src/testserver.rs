//! A tiny authoritative DNS server (hickory-server, in-memory zone) for tests and the netns
//! e2e "internet host". Counts the queries it receives so tests can prove caching.
//!
//! Zone text, one record per line (`#` comments, TTL optional, default 300):
//! ```text
//! canary.ferry.test. 300 A 203.0.113.7
//! v6.ferry.test. AAAA 2001:db8::7
//! alias.ferry.test. CNAME canary.ferry.test.
//! note.ferry.test. TXT hello world
//! ```
//! Not for production: hickory-server logs every query at INFO.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record};
use hickory_server::Server;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
#[cfg(feature = "testserver-tls")]
use tokio::net::TcpListener;

use crate::DnsError;

/// Default TTL of zone lines without one.
pub const DEFAULT_TTL: u32 = 300;

/// Parses zone text (see the module docs) into records.
pub fn parse_zone(text: &str) -> Result<Vec<Record>, DnsError> {
    let mut records = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        records.push(
            parse_record(line)
                .map_err(|e| DnsError::Config(format!("zone line {}: {e}", i + 1)))?,
        );
    }
    Ok(records)
}

/// Parses one `name [ttl] TYPE value` line.
pub fn parse_record(line: &str) -> Result<Record, String> {
    let mut parts = line.split_whitespace();
    let name = parts.next().ok_or("empty line")?;
    let name = Name::from_str(name).map_err(|e| format!("bad name: {e}"))?;
    let mut word = parts.next().ok_or("missing type")?;
    let ttl = match word.parse::<u32>() {
        Ok(ttl) => {
            word = parts.next().ok_or("missing type")?;
            ttl
        }
        Err(_) => DEFAULT_TTL,
    };
    let rest: Vec<&str> = parts.collect();
    let value = rest.first().copied().ok_or("missing value")?;
    let data = match word.to_ascii_uppercase().as_str() {
        "A" => RData::A(A(value.parse().map_err(|_| "bad IPv4 address")?)),
        "AAAA" => RData::AAAA(AAAA(value.parse().map_err(|_| "bad IPv6 address")?)),
        "CNAME" => RData::CNAME(CNAME(
            Name::from_str(value).map_err(|e| format!("bad target: {e}"))?,
        )),
        "TXT" => RData::TXT(TXT::new(vec![rest.join(" ")])),
        other => return Err(format!("unsupported type {other} (A, AAAA, CNAME, TXT)")),
    };
    let mut name = name;
    name.set_fqdn(true);
    Ok(Record::from_rdata(name, ttl, data))
}

/// A running test server; stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    server: Server<Counting>,
}

impl TestServer {
    /// Serves `records` in zone `origin` on UDP and TCP at `listen` (port 0: any; TCP gets the
    /// UDP port).
    pub async fn start(
        listen: SocketAddr,
        origin: &str,
        records: Vec<Record>,
    ) -> Result<Self, DnsError> {
        let mut origin =
            Name::from_str(origin).map_err(|e| DnsError::Config(format!("bad origin: {e}")))?;
        origin.set_fqdn(true);
        let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        );
        let soa = SOA::new(
            Name::from_str("ns")
                .and_then(|n| n.append_domain(&origin))
                .map_err(|e| DnsError::Config(e.to_string()))?,
            Name::from_str("hostmaster")
                .and_then(|n| n.append_domain(&origin))
                .map_err(|e| DnsError::Config(e.to_string()))?,
            1,
            3600,
            600,
            86400,
            // Negative-caching TTL.
            60,
        );
        zone.upsert_mut(Record::from_rdata(origin.clone(), 3600, RData::SOA(soa)), 1);
        for record in records {
            if !origin.zone_of(&record.name) {
                return Err(DnsError::Config(format!(
                    "{} is outside zone {origin}",
                    record.name
                )));
            }
            zone.upsert_mut(record, 1);
        }
        let mut catalog = Catalog::new();
        catalog.upsert(origin.into(), vec![Arc::new(zone)]);
        let hits = Arc::new(AtomicU64::new(0));
        let mut server = Server::new(Counting {
            catalog,
            hits: hits.clone(),
        });
        // Port 0: UDP's pick may be taken for TCP; bind_pair retries (a CI flake before).
        let (udp, tcp) = crate::forwarder::bind_pair(listen).await?;
        let addr = udp.local_addr().map_err(|source| DnsError::Bind {
            addr: listen,
            source,
        })?;
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 16);
        Ok(Self { addr, hits, server })
    }

    /// Also serves DNS-over-TLS on `dot` and DNS-over-HTTPS (path `/dns-query`) on `doh`, with
    /// the PEM certificate chain and private key given. Returns the bound (dot, doh) addresses.
    #[cfg(feature = "testserver-tls")]
    pub async fn add_tls(
        &mut self,
        dot: SocketAddr,
        doh: SocketAddr,
        cert_chain_pem: &str,
        key_pem: &str,
    ) -> Result<(SocketAddr, SocketAddr), DnsError> {
        let dot_listener = TcpListener::bind(dot)
            .await
            .map_err(|source| DnsError::Bind { addr: dot, source })?;
        let doh_listener = TcpListener::bind(doh)
            .await
            .map_err(|source| DnsError::Bind { addr: doh, source })?;
        let addrs = (
            dot_listener
                .local_addr()
                .map_err(|source| DnsError::Bind { addr: dot, source })?,
            doh_listener
                .local_addr()
                .map_err(|source| DnsError::Bind { addr: doh, source })?,
        );
        let timeout = Duration::from_secs(10);
        let cfg = server_tls_config(cert_chain_pem, key_pem, b"dot")?;
        self.server
            .register_tls_listener_with_tls_config(dot_listener, timeout, cfg)
            .map_err(|source| DnsError::Bind { addr: dot, source })?;
        let cfg = server_tls_config(cert_chain_pem, key_pem, b"h2")?;
        self.server
            .register_https_listener_with_tls_config(
                doh_listener,
                timeout,
                cfg,
                None,
                "/dns-query".into(),
            )
            .map_err(|source| DnsError::Bind { addr: doh, source })?;
        Ok(addrs)
    }

    /// Bound address (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queries received so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Runs until all listeners stop (for the standalone binary).
    pub async fn wait(mut self) -> Result<(), DnsError> {
        self.server
            .block_until_done()
            .await
            .map_err(|e| DnsError::Config(format!("test server: {e}")))
    }
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.shutdown_token().cancel();
    }
}

#[cfg(feature = "testserver-tls")]
fn server_tls_config(
    cert_chain_pem: &str,
    key_pem: &str,
    alpn: &[u8],
) -> Result<Arc<rustls::ServerConfig>, DnsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |e: String| DnsError::Config(format!("test server TLS: {e}"));
    let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad(e.to_string()))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

struct Counting {
    catalog: Catalog,
    hits: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl RequestHandler for Counting {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.hits.fetch_add(1, Ordering::SeqCst);
        self.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn zone_text_parses_all_supported_types() {
        let recs = parse_zone(
            "# test zone\ncanary.ferry.test. 60 A 203.0.113.7\nv6.ferry.test AAAA 2001:db8::7\n\
             alias.ferry.test. CNAME canary.ferry.test.\nnote.ferry.test. TXT hello world\n",
        )
        .unwrap();
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[0].ttl, 60);
        assert_eq!(recs[1].ttl, DEFAULT_TTL);
        assert!(recs[1].name.is_fqdn());
        assert!(matches!(&recs[3].data, RData::TXT(t) if t.to_string().contains("hello world")));
    }

    #[test]
    fn bad_zone_lines_report_their_line_number() {
        let err = parse_zone("a.test. A 1.2.3.4\nb.test. MX 10 x.test.\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(parse_record("a.test. A 999.1.1.1").is_err());
    }
}
