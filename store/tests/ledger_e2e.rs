//! Contract test: metering → store → submitter → the real ferry-ledger HTTP API (SQLite,
//! on 127.0.0.1). The ledger credits the relay exactly the bytes of the final co-signed
//! receipt the client signed.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_ledger::http::{AppState, router};
use ferry_ledger::{Ledger, Role, SqliteStore};
use ferry_metering::{
    ClientConfig, ClientSession, Direction, Message, RelayConfig, RelayIdentity, RelaySession,
    SessionState, Verdict,
};
use ferry_receipts::{NetworkId, SessionId, SigningKey};
use ferry_store::{HttpLedger, Record, Store, Submitter, SubmitterConfig};

const NET: NetworkId = NetworkId([0x42; 16]);
const NOW: u64 = 1_700_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::disallowed_methods)]
async fn co_signed_receipts_reach_the_real_ledger_and_credit_the_relay() {
    let params = ferry_ledger::testkit::params(NET);
    let ledger = Arc::new(Ledger::new(
        SqliteStore::open_in_memory().unwrap(),
        SigningKey::from_seed(&[0x1e; 32]),
        params,
    ));
    let relay_key = Arc::new(SigningKey::from_seed(&[0x21; 32]));
    let client_key = Arc::new(SigningKey::from_seed(&[0x31; 32]));
    ledger
        .register(relay_key.public_key(), Role::Relay, NOW)
        .await
        .unwrap();
    ledger
        .register(client_key.public_key(), Role::Client, NOW)
        .await
        .unwrap();
    ledger
        .credit(client_key.public_key(), 1 << 40)
        .await
        .unwrap();
    let voucher = ledger
        .issue(client_key.public_key(), 1 << 30, 1 << 30, [1; 16], NOW)
        .await
        .unwrap()
        .voucher;
    let state = AppState {
        ledger: ledger.clone(),
        admin_token_hash: None,
        open_registration: false,
        max_body_bytes: 1 << 20,
        clock: Arc::new(|| NOW + 600),
        join: Default::default(),
        directory: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router(state)).await });

    // A metered session whose receipts go into the store.
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path().join("receipts.log")).unwrap();
    let store = Arc::new(Mutex::new(store));
    let id = RelayIdentity {
        network_id: NET,
        ledger_key: ledger.public_key(),
        key: relay_key.clone(),
    };
    let mut client = ClientSession::new(
        ClientConfig::default(),
        client_key,
        NET,
        relay_key.public_key(),
    );
    let Message::Hello(offer) = client.hello(voucher, [7; 32], [8; 16], NOW + 1) else {
        unreachable!()
    };
    let mut now = Instant::now();
    let cfg = RelayConfig {
        receipt_every_bytes: 512 * 1024,
        credit_window_bytes: 2 << 20,
        ..RelayConfig::default()
    };
    let (mut relay, accept) = RelaySession::open(
        cfg,
        &id,
        &offer,
        SessionId([9; 16]),
        1 << 30,
        0,
        now,
        NOW + 1,
    )
    .unwrap();
    client.handle_message(accept, NOW + 1);
    let mut forwarded = 0;
    for i in 0..6000u64 {
        let len = 200 + i % 1200;
        let dir = if i % 3 == 0 {
            Direction::Up
        } else {
            Direction::Down
        };
        if dir == Direction::Up {
            client.record_up(len);
        }
        if relay.on_bytes(dir, len, now) == Verdict::Forward {
            forwarded += len;
            if dir == Direction::Down {
                client.record_down(len);
            }
        }
        if i == 5999 {
            relay.close(now);
        }
        now += Duration::from_millis(1);
        while let Some(m) = relay.poll_transmit(now, NOW + 2) {
            let Some(reply) = client.handle_message(m, NOW + 2) else {
                continue;
            };
            if let Some(c) = relay.handle_message(reply, now) {
                store.lock().unwrap().append(Record::CoSigned(c)).unwrap();
                client.handle_message(relay.persisted(c.body().seq).unwrap(), NOW + 2);
            }
        }
    }
    assert_eq!(relay.state(), SessionState::Closed);
    assert_eq!(store.lock().unwrap().pending_count(), 1);

    let sub = Submitter::new(
        store.clone(),
        HttpLedger::new(&format!("http://{addr}"), Duration::from_secs(5)).unwrap(),
        SubmitterConfig {
            backoff_base: Duration::from_millis(20),
            idle_poll: Duration::from_millis(20),
            ..SubmitterConfig::default()
        },
        Box::new(|| 7),
    );
    let stats = sub.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sub.run(async {
        let _ = stopped.await;
    }));
    for _ in 0..500 {
        if store.lock().unwrap().pending_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        store.lock().unwrap().pending_count(),
        0,
        "{:?}",
        stats.lock().unwrap()
    );
    let earned = ledger.relay(relay_key.public_key()).await.unwrap();
    assert_eq!(earned.credited_bytes, forwarded);
    assert_eq!(earned.sessions, 1);
    stop.send(()).unwrap();
    task.await.unwrap();
    server.abort();
}
