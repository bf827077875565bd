//! An `https://` ledger: the real ferry-ledger API on loopback behind a TLS terminator (rustls,
//! a private CA made with rcgen). The client side (`LedgerClient`, used by the submitter and
//! the `ferry` commands) trusts only the configured CA file: with it a request goes through,
//! without it (web roots) or with another CA the certificate is refused, and the error says so.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use ferry_ledger::http::{AppState, router};
use ferry_ledger::{Ledger, SqliteStore};
use ferry_receipts::{NetworkId, SigningKey};
use ferry_store::{HttpLedger, LedgerClient};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::net::TcpListener;

const NAME: &str = "ledger.ferry.test";

struct Pki {
    _dir: tempfile::TempDir,
    ca_file: std::path::PathBuf,
    chain_pem: String,
    key_pem: String,
}

fn new_pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![NAME.to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    Pki {
        _dir: dir,
        ca_file,
        chain_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

/// The ledger on a plain loopback port, and a TLS terminator in front of it; returns the
/// terminator's port.
async fn ledger_behind_tls(pki: &Pki) -> u16 {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let ledger = Ledger::new(
        SqliteStore::open_in_memory().unwrap(),
        SigningKey::from_seed(&[0x1e; 32]),
        ferry_ledger::testkit::params(NetworkId([0x42; 16])),
    );
    let state = AppState {
        ledger: Arc::new(ledger),
        admin_token_hash: None,
        open_registration: false,
        max_body_bytes: 1 << 20,
        clock: Arc::new(|| 1_700_000_000),
        join: Default::default(),
        directory: None,
    };
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = plain.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(plain, router(state)).await });

    let chain = CertificateDer::pem_slice_iter(pki.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = front.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = front.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn an_https_ledger_is_reached_only_through_a_certificate_of_the_configured_ca() {
    let pki = new_pki();
    let port = ledger_behind_tls(&pki).await;
    // The name resolves nowhere here, so the URL uses the certificate's IP SAN.
    let url = format!("https://127.0.0.1:{port}");
    let t = Duration::from_secs(5);
    let ledger = LedgerClient::new(&url, Some(&pki.ca_file), t).unwrap();
    let (status, body) = ledger.request("GET", "/v1/info", None).await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("ledger_key"));
    // The submitter's client posts through it the same way: the ledger itself answers (an
    // empty batch is a 400 from the ledger, not a transport error).
    let sub = HttpLedger::with_ca_file(&url, Some(&pki.ca_file), t).unwrap();
    let r = sub.post_batch(&[]).await;
    assert!(
        matches!(r, Ok(_) | Err(ferry_store::SubmitError::Status(400))),
        "{r:?}"
    );

    // With the bundled web roots, or another private CA, the certificate is refused.
    let web = LedgerClient::new(&url, None, t).unwrap();
    let err = web.request("GET", "/v1/info", None).await.unwrap_err();
    let chain = format!("{:?}", anyhow::Error::new(err));
    assert!(
        chain.contains("TLS with 127.0.0.1") && chain.contains("Unknown"),
        "{chain}"
    );
    let other = new_pki();
    let wrong = LedgerClient::new(&url, Some(&other.ca_file), t).unwrap();
    assert!(wrong.request("GET", "/v1/info", None).await.is_err());
    // A CA file without certificates is a setup error, named.
    let empty = other.ca_file.with_file_name("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err = LedgerClient::new(&url, Some(&empty), t)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no certificates"), "{err}");
}
