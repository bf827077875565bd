//! DNS-over-TLS and DNS-over-HTTPS upstreams: the forwarder talks to the test server's DoT and
//! DoH listeners (certificate from a throwaway CA) and checks the certificate.
#![cfg(all(feature = "doh", feature = "testserver-tls"))]
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ferry_dns::testserver::{TestServer, parse_zone};
use ferry_dns::{DnsConfig, Forwarder, Protocol, Upstream};
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

const TLS_NAME: &str = "dns.ferry.test";

struct Pki {
    dir: PathBuf,
    ca_file: PathBuf,
    chain_pem: String,
    key_pem: String,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pki(tag: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![TLS_NAME.to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("fe-dns-pki-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    Pki {
        dir,
        ca_file,
        chain_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

struct Upstreams {
    server: TestServer,
    dot: SocketAddr,
    doh: SocketAddr,
}

async fn upstreams(pki: &Pki) -> Upstreams {
    let records = parse_zone("canary.ferry.test. 300 A 203.0.113.7\n").unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut server = TestServer::start(any, "ferry.test.", records)
        .await
        .unwrap();
    let (dot, doh) = server
        .add_tls(any, any, &pki.chain_pem, &pki.key_pem)
        .await
        .unwrap();
    Upstreams { server, dot, doh }
}

async fn resolve_via(upstream: Upstream, ca_file: Option<PathBuf>) -> Message {
    let config = DnsConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        upstream: vec![upstream],
        timeout_ms: 1500,
        attempts: 1,
        ca_file,
        ..DnsConfig::default()
    };
    let forwarder = Forwarder::bind(&config).await.unwrap();
    let addr = forwarder.local_addrs()[0];
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(forwarder.run(async move {
        let _ = stopped.await;
    }));
    let stream = UdpClientStream::builder(addr, TokioRuntimeProvider::default())
        .with_timeout(Some(Duration::from_secs(5)))
        .with_max_retries(0)
        .build();
    let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(bg);
    let response = client
        .query(
            Name::from_str("canary.ferry.test.").unwrap(),
            DNSClass::IN,
            RecordType::A,
        )
        .await
        .unwrap();
    let message = response.into_message();
    drop(_stop);
    message
}

fn upstream(protocol: Protocol, addr: SocketAddr, tls_name: &str) -> Upstream {
    Upstream {
        protocol,
        address: addr.to_string(),
        tls_name: Some(tls_name.to_owned()),
        path: None,
    }
}

fn assert_canary(msg: &Message) {
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    let ips: Vec<Ipv4Addr> = msg
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    assert_eq!(ips, vec![Ipv4Addr::new(203, 0, 113, 7)]);
}

#[tokio::test]
async fn dns_over_tls_upstream_resolves_with_a_private_ca() {
    let pki = pki("dot");
    let up = upstreams(&pki).await;
    let msg = resolve_via(
        upstream(Protocol::Tls, up.dot, TLS_NAME),
        Some(pki.ca_file.clone()),
    )
    .await;
    assert_canary(&msg);
    assert_eq!(up.server.hits(), 1);
}

#[tokio::test]
async fn dns_over_https_upstream_resolves_with_a_private_ca() {
    let pki = pki("doh");
    let up = upstreams(&pki).await;
    let msg = resolve_via(
        upstream(Protocol::Https, up.doh, TLS_NAME),
        Some(pki.ca_file.clone()),
    )
    .await;
    assert_canary(&msg);
    assert_eq!(up.server.hits(), 1);
}

#[tokio::test]
async fn certificate_is_checked_wrong_name_or_untrusted_ca_gives_servfail() {
    let pki = pki("bad");
    let up = upstreams(&pki).await;
    let wrong_name = resolve_via(
        upstream(Protocol::Tls, up.dot, "other.ferry.test"),
        Some(pki.ca_file.clone()),
    )
    .await;
    assert_eq!(wrong_name.metadata.response_code, ResponseCode::ServFail);
    // Bundled webpki roots do not know our throwaway CA.
    let untrusted = resolve_via(upstream(Protocol::Https, up.doh, TLS_NAME), None).await;
    assert_eq!(untrusted.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(
        up.server.hits(),
        0,
        "no query may reach an unverified upstream"
    );
}

#[tokio::test]
async fn unreadable_or_empty_ca_file_is_a_config_error() {
    let pki = pki("cfg");
    let empty = pki.dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    for ca in [pki.dir.join("missing.pem"), empty] {
        let config = DnsConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            upstream: vec![upstream(
                Protocol::Tls,
                "127.0.0.1:853".parse().unwrap(),
                TLS_NAME,
            )],
            ca_file: Some(ca.clone()),
            ..DnsConfig::default()
        };
        let err = Forwarder::bind(&config).await.unwrap_err();
        assert!(err.to_string().contains("ca-file"), "{ca:?}: {err}");
    }
}
