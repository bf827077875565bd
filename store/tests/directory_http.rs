//! The open market over real sockets on 127.0.0.1: a relay key registers itself (proof of
//! possession, rate-limited per source), announces its descriptor, the ledger probes its
//! Hello port over UDP (answered by the relay identity, as the agent does), and the listing
//! carries both signatures. A closed Hello port is diagnosed and never listed.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_ledger::directory::{Directory, DirectoryParams, UdpProber};
use ferry_ledger::http::{AppState, JoinPolicy, ServeLimits, router, serve};
use ferry_ledger::{Ledger, SqliteStore};
use ferry_metering::{Message, RelayIdentity, decode, encode};
use ferry_receipts::{DirectoryAnnotation, NetworkId, RelayDescriptor, SigningKey};
use ferry_store::LedgerClient;
use ferry_store::market::{self, MarketError, Role};
use tokio::net::UdpSocket;

const NET: NetworkId = NetworkId([0x42; 16]);

#[allow(clippy::disallowed_methods)]
fn now() -> u64 {
    ferry_store::unix_now()
}

/// A ledger with a directory served on 127.0.0.1 (3 self-registrations per source per hour).
async fn ledger() -> (LedgerClient, Arc<Ledger<SqliteStore>>) {
    ledger_with(JoinPolicy::new(true, 3)).await
}

/// The same with `join` as the registration policy.
async fn ledger_with(join: JoinPolicy) -> (LedgerClient, Arc<Ledger<SqliteStore>>) {
    let ledger = Arc::new(Ledger::new(
        SqliteStore::open_in_memory().unwrap(),
        SigningKey::from_seed(&[0x1e; 32]),
        ferry_ledger::testkit::params(NET),
    ));
    let params = DirectoryParams {
        network_id: NET,
        min_price_micros_per_gib: 1,
        max_price_micros_per_gib: 10_000_000,
        max_ttl_secs: 3600,
        skew_secs: 300,
        min_probe_interval_secs: 30,
        max_list: 100,
    };
    let prober = UdpProber {
        attempts: 2,
        wait: Duration::from_millis(300),
    };
    let state = AppState {
        ledger: ledger.clone(),
        admin_token_hash: None,
        open_registration: false,
        max_body_bytes: 1 << 20,
        clock: Arc::new(now),
        join,
        directory: Some(Arc::new(Directory::new(
            ledger.clone(),
            params,
            Arc::new(prober),
        ))),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let limits = ServeLimits::new(64, 5, 10);
    tokio::spawn(serve(
        vec![listener],
        limits,
        router(state),
        std::future::pending(),
    ));
    let client = LedgerClient::new(&url, None, Duration::from_secs(5)).unwrap();
    (client, ledger)
}

/// Answers probes on a UDP socket the way the agent's Hello port does.
async fn hello_port(id: RelayIdentity) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = sock.recv_from(&mut buf).await.unwrap();
            if let Ok(Message::Probe(c)) = decode(&buf[..n])
                && let Some(reply) = id.answer_probe(&c, now())
            {
                sock.send_to(&encode(&reply), from).await.unwrap();
            }
        }
    });
    addr
}

fn descriptor(relay: &SigningKey, hello: SocketAddr) -> RelayDescriptor {
    let SocketAddr::V4(v4) = hello else { panic!() };
    let mut d = ferry_ledger::testkit::descriptor(NET, relay, v4, 800_000, *b"NL", now());
    d.ipv4 = Some(std::net::SocketAddrV4::new(*v4.ip(), 51820));
    d.hello_port = hello.port();
    d.sign(relay)
}

/// A relay key (from `seed`) whose Hello port answers probes, and its signed descriptor.
async fn answering_relay(
    ledger: &Ledger<SqliteStore>,
    seed: u8,
) -> (Arc<SigningKey>, RelayDescriptor) {
    let relay = Arc::new(SigningKey::from_seed(&[seed; 32]));
    let hello = hello_port(RelayIdentity {
        network_id: NET,
        ledger_key: ledger.public_key(),
        key: relay.clone(),
    })
    .await;
    let d = descriptor(&relay, hello);
    (relay, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_joins_announces_is_probed_and_listed() {
    let (client, ledger) = ledger().await;
    let (relay, d) = answering_relay(&ledger, 0x21).await;
    // Unregistered: its first announce registers the key (the descriptor's signature proves possession).
    let a = market::announce(&client, &d).await.unwrap();
    assert!(a.listed && a.reachable_v4, "{a:?}");
    assert!(
        !market::register_self(&client, &NET, &relay, Role::Relay, now())
            .await
            .unwrap()
    );
    assert_eq!(a.seen_from, "127.0.0.1");
    assert!(a.probe_rtt_micros.unwrap() < 300_000);
    // Loopback is not public; the operator is told, the relay still listed (reachable).
    let codes: Vec<_> = a.diagnosis.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(codes, ["address_not_public"]);
    let list = market::relays(&client, "country=nl").await.unwrap();
    assert_eq!(list.relays.len(), 1);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let got = RelayDescriptor::decode(&b64.decode(&list.relays[0].descriptor).unwrap()).unwrap();
    got.verify(&NET, now(), 0).unwrap();
    assert_eq!(got, d);
    let ann =
        DirectoryAnnotation::decode(&b64.decode(&list.relays[0].annotation).unwrap()).unwrap();
    ann.verify(&NET, &ledger.public_key()).unwrap();
    assert_eq!((ann.descriptor_id, ann.score), (d.id(), 400));
    assert!(
        market::relays(&client, "country=DE")
            .await
            .unwrap()
            .relays
            .is_empty()
    );
    let Err(MarketError::Refused { status: 400, .. }) =
        market::relays(&client, "country=Germany").await
    else {
        panic!("bad country accepted");
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_hello_port_is_diagnosed_and_never_listed() {
    let (client, _ledger) = ledger().await;
    let relay = SigningKey::from_seed(&[0x22; 32]);
    market::register_self(&client, &NET, &relay, Role::Relay, now())
        .await
        .unwrap();
    // A bound socket that never answers: the firewalled Hello port.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let d = descriptor(&relay, silent.local_addr().unwrap());
    let t = std::time::Instant::now();
    let a = market::announce(&client, &d).await.unwrap();
    assert!(!a.listed && !a.reachable_v4);
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "two attempts of 300 ms"
    );
    let closed = a
        .diagnosis
        .iter()
        .find(|d| d.code == "hello_port_closed")
        .unwrap();
    assert!(
        closed
            .message
            .contains(&silent.local_addr().unwrap().to_string()),
        "{}",
        closed.message
    );
    assert!(market::relays(&client, "").await.unwrap().relays.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_registration_needs_the_keys_signature_and_is_rate_limited() {
    let (client, _ledger) = ledger().await;
    // Signed by another key: refused.
    let key = SigningKey::from_seed(&[0x30; 32]);
    let imposter = SigningKey::from_seed(&[0x31; 32]);
    let at = now();
    let pk = key.public_key();
    let sig = imposter.sign(
        ferry_ledger_api::signing::REGISTER_DOMAIN,
        &ferry_ledger_api::signing::register_bytes(NET.as_bytes(), pk.as_bytes(), 2, at),
    );
    let body = serde_json::json!({"public_key": pk.to_hex(), "role": "client", "at": at, "signature": sig.to_hex()});
    let (status, _) = client
        .request("POST", "/v1/keys", Some(body.to_string()))
        .await
        .unwrap();
    assert_eq!(status, 401);
    // Stale signature.
    let Err(MarketError::Refused { code, .. }) =
        market::register_self(&client, &NET, &key, Role::Client, at - 3600).await
    else {
        panic!("stale accepted");
    };
    assert_eq!(code, "stale_request");
    // Three new keys per source per hour, then 429 with the reason.
    for seed in 0x40..0x43u8 {
        let k = SigningKey::from_seed(&[seed; 32]);
        assert!(
            market::register_self(&client, &NET, &k, Role::Client, now())
                .await
                .unwrap()
        );
    }
    let k = SigningKey::from_seed(&[0x43; 32]);
    let Err(MarketError::Refused {
        status: 429,
        message,
        ..
    }) = market::register_self(&client, &NET, &k, Role::Client, now()).await
    else {
        panic!("fourth registration accepted");
    };
    assert!(message.contains("3 self-registrations"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_network_lists_only_relays_its_operator_registered() {
    let (client, ledger) = ledger_with(JoinPolicy::new(false, 3)).await;
    let (relay, d) = answering_relay(&ledger, 0x23).await;
    let Err(MarketError::Refused {
        status: 403,
        code,
        message,
    }) = market::announce(&client, &d).await
    else {
        panic!("an unregistered relay was accepted");
    };
    assert_eq!(code, "unknown_relay");
    assert!(message.contains("POST /v1/keys"), "{message}");
    let Err(MarketError::Refused { code, .. }) =
        market::register_self(&client, &NET, &relay, Role::Relay, now()).await
    else {
        panic!("self-registration accepted on a closed network");
    };
    assert_eq!(code, "self_registration_disabled");
    ledger
        .register(relay.public_key(), ferry_ledger::Role::Relay, now())
        .await
        .unwrap();
    assert!(market::announce(&client, &d).await.unwrap().listed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paying_clients_refusal_is_recorded_once_and_lowers_the_score() {
    let (client, ledger) = ledger().await;
    let (relay, d) = answering_relay(&ledger, 0x31).await;
    let before = market::announce(&client, &d).await.unwrap();
    // A client with a voucher of its own, and the relay's over-claiming receipt of it.
    let buyer = SigningKey::from_seed(&[0x32; 32]);
    let at = now();
    ledger
        .register(buyer.public_key(), ferry_ledger::Role::Client, at)
        .await
        .unwrap();
    ledger.credit(buyer.public_key(), 1_000_000).await.unwrap();
    let v = ledger
        .issue(buyer.public_key(), 500_000, 500_000, [3; 16], at)
        .await
        .unwrap()
        .voucher;
    let claimed = ferry_ledger::testkit::receipt(
        NET,
        &relay,
        &buyer,
        v.id(),
        500_000,
        ferry_ledger::testkit::session(1),
        1,
        1 << 20,
        9 << 20,
    )
    .receipt;
    let refusal = ferry_receipts::ReceiptRefusal {
        receipt: claimed,
        client_observed_up: 1 << 20,
        client_observed_down: 1 << 20,
        reason: 1,
        refused_at: at,
        client_signature: ferry_receipts::Signature::ZERO,
    }
    .sign(&buyer);
    assert!(market::report_refusal(&client, &refusal).await.unwrap());
    assert!(!market::report_refusal(&client, &refusal).await.unwrap());
    // Signed by someone else: 400 with its code, nothing recorded.
    let forged = refusal.sign(&relay);
    match market::report_refusal(&client, &forged).await {
        Err(MarketError::Refused { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (400, "refusal_not_verified"));
        }
        other => panic!("{other:?}"),
    }
    let mut d2 = d.clone();
    d2.issued_at += 1;
    let after = market::announce(&client, &d2.sign(&relay)).await.unwrap();
    let ann = |b64: &str| {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        DirectoryAnnotation::decode(&b).unwrap()
    };
    let (a0, a1) = (ann(&before.annotation), ann(&after.annotation));
    assert_eq!((a0.refusals, a1.refusals), (0, 1));
    assert!(a1.score < a0.score, "{} -> {}", a0.score, a1.score);
}
