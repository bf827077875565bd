//! The standalone `ferry-dns-testserver` binary (used by the netns e2e harness).
#![cfg(feature = "testserver-tls")]
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> (Kill, SocketAddr) {
    let (guard, mut lines) = spawn_lines(args, 1);
    (
        guard,
        lines
            .remove(0)
            .strip_prefix("listening ")
            .unwrap()
            .parse()
            .unwrap(),
    )
}

/// Spawns the binary and returns its first `n` stdout lines.
fn spawn_lines(args: &[&str], n: usize) -> (Kill, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry-dns-testserver"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = Kill(child);
    let mut reader = BufReader::new(stdout);
    let lines = (0..n)
        .map(|_| {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            line.trim().to_owned()
        })
        .collect();
    (guard, lines)
}

#[tokio::test]
async fn binary_serves_records_from_args_and_zone_file() {
    let dir = tempfile_dir("zone");
    let zone = dir.join("zone.txt");
    std::fs::write(&zone, "# e2e zone\nfile.ferry.test. 30 AAAA 2001:db8::7\n").unwrap();
    let (_guard, addr) = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--origin",
        "ferry.test.",
        "--record",
        "canary.ferry.test. 60 A 203.0.113.7",
        "--zone-file",
        zone.to_str().unwrap(),
    ]);
    let stream = UdpClientStream::builder(addr, TokioRuntimeProvider::default())
        .with_timeout(Some(Duration::from_secs(5)))
        .build();
    let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(bg);

    let a = client
        .query(
            Name::from_str("canary.ferry.test.").unwrap(),
            DNSClass::IN,
            RecordType::A,
        )
        .await
        .unwrap();
    assert!(a.metadata.authoritative);
    assert!(matches!(a.answers[0].data, RData::A(ip) if ip.0.to_string() == "203.0.113.7"));
    let aaaa = client
        .query(
            Name::from_str("file.ferry.test.").unwrap(),
            DNSClass::IN,
            RecordType::AAAA,
        )
        .await
        .unwrap();
    assert_eq!(aaaa.answers.len(), 1);
    let missing = client
        .query(
            Name::from_str("nope.ferry.test.").unwrap(),
            DNSClass::IN,
            RecordType::A,
        )
        .await
        .unwrap();
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-dns-testserver"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--record",
            "x.test. MX 10 y.test.",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported type MX"), "{err}");
}

fn tempfile_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fe-dns-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn binary_serves_dot_and_doh_with_given_certificate() {
    use ferry_dns::{DnsConfig, Forwarder, Protocol, Upstream};
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["dns.ferry.test".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let dir = tempfile_dir("tls");
    let (cert_file, key_file, ca_file) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    std::fs::write(&cert_file, leaf.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let (_guard, lines) = spawn_lines(
        &[
            "--listen",
            "127.0.0.1:0",
            "--origin",
            "ferry.test.",
            "--record",
            "canary.ferry.test. A 203.0.113.7",
            "--tls-cert",
            cert_file.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
            "--dot-listen",
            "127.0.0.1:0",
            "--doh-listen",
            "127.0.0.1:0",
        ],
        3,
    );
    for (line, protocol) in [(&lines[1], Protocol::Tls), (&lines[2], Protocol::Https)] {
        let (_, addr) = line.split_once(' ').unwrap();
        let config = DnsConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            upstream: vec![Upstream {
                protocol,
                address: addr.to_owned(),
                tls_name: Some("dns.ferry.test".to_owned()),
                path: None,
            }],
            ca_file: Some(ca_file.clone()),
            ..DnsConfig::default()
        };
        let forwarder = Forwarder::bind(&config).await.unwrap();
        let fwd = forwarder.local_addrs()[0];
        tokio::spawn(forwarder.run(std::future::pending()));
        let stream = UdpClientStream::builder(fwd, TokioRuntimeProvider::default())
            .with_timeout(Some(Duration::from_secs(5)))
            .build();
        let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
        tokio::spawn(bg);
        let a = client
            .query(
                Name::from_str("canary.ferry.test.").unwrap(),
                DNSClass::IN,
                RecordType::A,
            )
            .await
            .unwrap();
        assert_eq!(a.metadata.response_code, ResponseCode::NoError, "{line}");
        assert_eq!(a.answers.len(), 1, "{line}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
