//! The engine against an in-process relay (boringtun + ferry-metering's `RelayHub`) over
//! loopback UDP: honest receipts are co-signed, stored and acknowledged; a final receipt is
//! co-signed at close; a relay that claims bytes it never delivered is refused and the
//! client disconnects.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boringtun::noise::Tunn;
use ferry_keys::{WgPrivateKey, WgPublicKey};
use ferry_metering::{
    ClientConfig, CutOffReason, ReceiptRejectReason, RelayConfig, RelayEvent, RelayHub,
    RelayIdentity, udp_packet,
};
use ferry_receipts::{NetworkId, SessionId, Signature, SigningKey, Voucher};
use ferry_store::Store;
use tokio::net::UdpSocket;

use super::*;
use crate::config::{Paid as PaidCfg, Relay};
use crate::testrelay::{CLIENT_TUN, RELAY_TUN, RelayLog, mini_relay};

const NET: NetworkId = NetworkId([0x42; 16]);
const ECHO: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2)), 7);
const KIB: u64 = 1024;

struct Fixture {
    engine: Engine,
    udp: Arc<UdpSocket>,
    log: Arc<Mutex<RelayLog>>,
    store: Arc<Mutex<Store>>,
    _dir: tempfile::TempDir,
}

fn keys() -> (Arc<SigningKey>, Arc<SigningKey>, SigningKey) {
    (
        Arc::new(SigningKey::from_seed(&[1; 32])),
        Arc::new(SigningKey::from_seed(&[2; 32])),
        SigningKey::from_seed(&[3; 32]),
    )
}

fn local_voucher() -> Voucher {
    let (_, client_id, ledger) = keys();
    Voucher {
        network_id: NET,
        ledger_key: ledger.public_key(),
        client_key: client_id.public_key(),
        nonce: [5; 16],
        // 1 GiB at 1 unit per GiB.
        budget_micros: 1_000_000,
        max_price_micros_per_gib: 1_000_000,
        issued_at: unix_now() - 10,
        expires_at: unix_now() + 3600,
        signature: Signature::ZERO,
    }
    .sign(&ledger)
}

async fn fixture(phantom_down: u64, voucher: Voucher, outside: bool) -> Fixture {
    let relay_wg = WgPrivateKey::from_bytes(&[9; 32]);
    let client_wg = WgPrivateKey::from_bytes(&[7; 32]);
    let (relay_id, client_id, _) = keys();
    let cfg = RelayConfig {
        receipt_every_bytes: 64 * KIB,
        receipt_every: Duration::from_secs(1),
        credit_window_bytes: 8 << 20,
        retransmit_after: Duration::from_millis(500),
        close_grace: Duration::from_secs(3),
        ..RelayConfig::default()
    };
    cfg.validate().unwrap();
    let hub = RelayHub::new(
        cfg,
        RelayIdentity {
            network_id: voucher.network_id,
            ledger_key: voucher.ledger_key,
            key: relay_id.clone(),
        },
    );
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let hello = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let hello_addr = hello.local_addr().unwrap();
    let endpoint = sock.local_addr().unwrap();
    let tunn = Tunn::new(
        relay_wg.static_secret(),
        x25519_dalek::PublicKey::from(client_wg.public_key().0),
        None,
        None,
        1,
        None,
    );
    let log = Arc::new(Mutex::new(RelayLog::default()));
    tokio::spawn(mini_relay(
        sock,
        Some(hello),
        tunn,
        hub,
        phantom_down,
        log.clone(),
    ));

    let relay = Relay {
        name: "mini".into(),
        endpoint: endpoint.into(),
        public_key: WgPublicKey(relay_wg.public_key().0),
        address: vec!["10.77.0.2/32".parse().unwrap()],
        dns: vec![],
        mtu: 1420,
        keepalive: 0,
        paid: Some(PaidCfg {
            identity_key: relay_id.public_key(),
            control_address: Some(RELAY_TUN.into()),
            voucher: None,
            hello: Some(hello_addr),
        }),
        from_directory: false,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Mutex::new(Store::open(dir.path().join("r.log")).unwrap().0));
    let udp = relay_socket(endpoint).await.unwrap();
    let mut paid = PaidSetup {
        identity: client_id.clone(),
        voucher,
        store: store.clone(),
        kick: None,
        cfg: ClientConfig::default(),
        boot: None,
    };
    if outside {
        let b = crate::bootstrap::bootstrap(
            &paid,
            relay_id.public_key(),
            client_wg.public_key().0,
            hello_addr,
            Duration::from_secs(5),
            false,
        )
        .await
        .unwrap();
        assert_eq!(
            (b.v4, b.v6),
            (Some(CLIENT_TUN), Some("fd77::2".parse().unwrap()))
        );
        paid.boot = Some(b);
    }
    let engine = Engine::new(&relay, &client_wg, udp.clone(), Some(paid), "test", None).unwrap();
    Fixture {
        engine,
        udp,
        log,
        store,
        _dir: dir,
    }
}

/// Drives the engine for `dur`, sending `per_tick` echo packets of `size` bytes every 10 ms
/// while `send` is true. Returns the echo bytes received (inner packet lengths).
async fn drive(f: &mut Fixture, dur: Duration, per_tick: usize, size: usize) -> u64 {
    let src = SocketAddr::new(CLIENT_TUN.into(), 40000);
    let pkt = udp_packet(src, ECHO, &vec![0xab; size]).unwrap();
    let deadline = Instant::now() + dur;
    let mut got = 0;
    let mut buf = vec![0u8; 65536];
    let mut last_tick = Instant::now() - Duration::from_secs(1);
    while Instant::now() < deadline && f.engine.failure().is_none() && !f.engine.closed() {
        if last_tick.elapsed() >= Duration::from_millis(100) {
            f.engine.on_tick().await;
            last_tick = Instant::now();
        }
        if f.engine.is_up() {
            for _ in 0..per_tick {
                f.engine.send_inner(&pkt).await;
            }
        }
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(10), f.udp.recv(&mut buf)).await
        {
            for p in f.engine.handle_datagram(&buf[..n]).await {
                got += p.len() as u64;
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_receipts_are_cosigned_stored_acked_and_the_final_one_at_close() {
    let mut f = fixture(0, local_voucher(), true).await;
    let got = drive(&mut f, Duration::from_secs(3), 4, 1000).await;
    assert!(f.engine.failure().is_none(), "{:?}", f.engine.failure());
    assert!(got > 256 * KIB, "echoed only {got} bytes");
    let st = f.engine.status_mut().clone();
    let last = st.last_receipt.expect("no receipt co-signed");
    assert!(last.seq >= 2, "{last:?}");
    assert!(st.session_id.is_some());
    // Every receipt the relay stored, the client stored too (same bytes).
    let relay_stored = f.log.lock().unwrap().stored.clone();
    assert!(!relay_stored.is_empty());
    {
        let store = f.store.lock().unwrap();
        let latest = store.latest(&SessionId([7; 16])).unwrap();
        assert!(relay_stored.contains(latest));
        assert_eq!(store.pending_count(), 1, "not yet submitted to a ledger");
    }
    // Close: the relay's final receipt covers every byte and is co-signed.
    f.engine.close().await;
    // `drive` returns as soon as the engine has closed; the bound only matters on a loaded
    // machine, where the final receipt can arrive late in a short window and the closing
    // tick would then fall after it.
    drive(&mut f, Duration::from_secs(15), 0, 0).await;
    assert!(f.engine.closed());
    let log = f.log.lock().unwrap();
    assert!(
        log.events
            .contains(&RelayEvent::Closed { acknowledged: true }),
        "{:?}",
        log.events
    );
    let fin = log.stored.last().unwrap();
    let (up, down) = (f.engine.tunnel.bytes_up(), f.engine.tunnel.bytes_down());
    // Exactly what the client counted (control traffic excluded on both sides).
    assert_eq!((fin.body().bytes_up, fin.body().bytes_down), (up, down));
    assert_eq!(
        f.engine.status_mut().spend_micros,
        crate::status::spend_micros(up + down, 1_000_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_claiming_undelivered_bytes_is_refused_and_the_client_disconnects() {
    // 64 KiB of phantom download per echoed packet: far beyond 2 % + 1 MiB quickly.
    // Hello inside the tunnel here (the legacy path), outside in the other tests.
    let mut f = fixture(64 * KIB, local_voucher(), false).await;
    drive(&mut f, Duration::from_secs(5), 4, 1000).await;
    let why = f
        .engine
        .failure()
        .expect("over-claim not refused")
        .to_owned();
    assert!(why.contains("more bytes than the client counted"), "{why}");
    // Our signed refusal, for the directory: the relay's own over-claiming receipt.
    let r = *f.engine.refusal().expect("a refusal to report");
    r.verify(&NET).unwrap();
    assert_eq!(r.reason, 1);
    assert!(
        r.body().bytes_down
            > ClientConfig::default()
                .tolerance
                .max_claim(r.client_observed_down)
    );
    // The relay learned why and cut us off.
    std::thread::sleep(Duration::from_millis(200));
    let log = f.log.lock().unwrap();
    assert!(
        log.events
            .contains(&RelayEvent::CutOff(CutOffReason::Rejected(
                ReceiptRejectReason::OverClaim
            ))),
        "{:?}",
        log.events
    );
    // Nothing over-claimed was co-signed.
    for c in &log.stored {
        assert!(
            c.body().bytes_down
                <= ClientConfig::default()
                    .tolerance
                    .max_claim(c.client_observed_down)
        );
    }
}

/// A real ledger (SQLite in memory) behind its HTTP API on loopback; returns its base URL.
async fn ledger_server() -> String {
    use ferry_ledger::http::{AppState, router, system_clock};
    use ferry_ledger::{Ledger, Params, Role, SqliteStore};
    let (relay_id, client_id, ledger_key) = keys();
    let params = Params {
        network_id: NET,
        epoch_secs: 3600,
        price_micros_per_gib: 1_000_000,
        voucher_ttl_secs: 86_400,
        max_batch: 100,
        request_skew_secs: 300,
        refund_grace_secs: 3600,
    };
    let ledger = Arc::new(Ledger::new(
        SqliteStore::open_in_memory().unwrap(),
        ledger_key,
        params,
    ));
    let now = unix_now();
    ledger
        .register(relay_id.public_key(), Role::Relay, now)
        .await
        .unwrap();
    ledger
        .register(client_id.public_key(), Role::Client, now)
        .await
        .unwrap();
    ledger
        .credit(client_id.public_key(), 5_000_000)
        .await
        .unwrap();
    let app = router(AppState {
        ledger,
        admin_token_hash: None,
        open_registration: false,
        max_body_bytes: 1 << 20,
        clock: system_clock(),
        join: Default::default(),
        directory: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voucher_from_the_ledger_pays_a_session_whose_receipts_the_client_submits() {
    let url = ledger_server().await;
    let (_, client_id, _) = keys();
    let (voucher, answer) = crate::ledger::request_voucher(
        &crate::ledger::client(&url, None).unwrap(),
        &client_id,
        1 << 30,
        None,
        [8; 16],
        unix_now(),
    )
    .await
    .unwrap();
    assert_eq!(voucher.client_key, client_id.public_key());
    // 1 GiB at the network price (the default max price).
    assert_eq!(voucher.budget_micros, 1_000_000);
    assert_eq!(voucher.max_price_micros_per_gib, 1_000_000);
    assert_eq!(answer.cost_micros, 1_000_000);
    // Not enough balance for a second, larger one: the ledger's refusal is reported.
    let err = crate::ledger::request_voucher(
        &crate::ledger::client(&url, None).unwrap(),
        &client_id,
        10 << 30,
        None,
        [9; 16],
        unix_now(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err:#}");

    let mut f = fixture(0, voucher, true).await;
    drive(&mut f, Duration::from_secs(2), 4, 1000).await;
    f.engine.close().await;
    drive(&mut f, Duration::from_secs(6), 0, 0).await;
    assert!(f.engine.closed(), "{:?}", f.engine.failure());
    assert!(f.engine.failure().is_none(), "{:?}", f.engine.failure());
    let pending = f.store.lock().unwrap().pending_count();
    assert_eq!(pending, 1);
    // The client's own submission reaches the ledger (the relay's would be idempotent).
    let mut sub = ferry_store::Submitter::new(
        f.store.clone(),
        ferry_store::HttpLedger::new(&url, Duration::from_secs(5)).unwrap(),
        ferry_store::SubmitterConfig::default(),
        Box::new(|| 7),
    );
    let done = sub.attempt().await.unwrap();
    assert!(done >= 1, "nothing accepted");
    assert_eq!(f.store.lock().unwrap().pending_count(), 0);
    // Submitting the relay's copy of the same receipt again is harmless (duplicate/stale).
    let last = *f.log.lock().unwrap().stored.last().unwrap();
    let again = ferry_store::HttpLedger::new(&url, Duration::from_secs(5))
        .unwrap()
        .post_batch(&[last])
        .await
        .unwrap();
    assert_eq!(again, vec![ferry_store::ItemOutcome::Accepted]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_up_voucher_ends_the_session_in_words_not_silence() {
    // A 256 KiB voucher: the relay ends the session with a final receipt when it is used up.
    let mut v = local_voucher();
    v.budget_micros = ferry_receipts::money::debit_micros(256 * KIB, v.max_price_micros_per_gib);
    let (_, _, ledger) = keys();
    let v = Voucher {
        signature: Signature::ZERO,
        ..v
    }
    .sign(&ledger);
    let mut f = fixture(0, v, true).await;
    drive(&mut f, Duration::from_secs(8), 4, 1000).await;
    let why = f
        .engine
        .failure()
        .expect("the engine noticed the end")
        .to_owned();
    assert!(
        why.contains("voucher used up") && why.contains("ferry voucher request"),
        "{why}"
    );
    // The final receipt was co-signed and stored on both sides.
    let relay_last = f.log.lock().unwrap().stored.last().copied().unwrap();
    assert!(relay_last.body().total_bytes() >= 256 * KIB - 2 * KIB);
    let st = f.engine.status_mut().clone();
    assert_eq!(st.last_receipt.unwrap().seq, relay_last.body().seq);
}

#[test]
fn the_end_message_names_the_voucher_when_it_is_used_up() {
    assert!(ended_message(100, Some(100)).contains("voucher used up (100 of 100 bytes)"));
    assert!(ended_message(99_990, Some(100_000)).contains("voucher used up"));
    assert!(
        ended_message(50, Some(100_000))
            .contains("the relay ended the session (final receipt co-signed: 50 bytes)")
    );
    assert!(!ended_message(50, None).contains("voucher used up"));
}
