//! The submitter against a fake ledger on 127.0.0.1: refused, then HTTP 503, then up.
//! Receipts are marked submitted only after the ledger accepted them, and a rejected
//! receipt stays pending.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{receipt, sid};
use ferry_receipts::CoSignedReceipt;
use ferry_store::{HttpLedger, Record, Store, Submitter, SubmitterConfig};
use serde_json::{Value, json};

#[derive(Default)]
struct Fake {
    up: bool,
    posts: u64,
    accepted: BTreeSet<(u8, u64)>,
}

async fn batch(
    State(f): State<Arc<Mutex<Fake>>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut f = f.lock().unwrap();
    f.posts += 1;
    if !f.up {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": {"code": "down"}})),
        );
    }
    // The real ledger's answer shape (ferry-ledger-api).
    use ferry_ledger_api::{BatchResponse, ItemResult};
    let mut results = Vec::new();
    for r in body["receipts"].as_array().unwrap() {
        let c = CoSignedReceipt::decode(&B64.decode(r.as_str().unwrap()).unwrap()).unwrap();
        let s = c.body().session_id.0[0];
        if s == 9 {
            results.push(ItemResult::Rejected {
                code: "unknown_voucher".into(),
                message: "x".into(),
            });
        } else if f.accepted.insert((s, c.body().seq)) {
            results.push(ItemResult::Advanced {
                epoch: 0,
                credited_bytes: 1,
                clamped: false,
            });
        } else {
            results.push(ItemResult::Duplicate { credited_bytes: 0 });
        }
    }
    let count = |recorded: bool| {
        results
            .iter()
            .filter(|r| r.is_recorded() == recorded)
            .count() as u64
    };
    let (recorded, rejected) = (count(true), count(false));
    let body = BatchResponse {
        advanced: recorded,
        duplicate: 0,
        stale: 0,
        rejected,
        results,
    };
    (StatusCode::OK, Json(serde_json::to_value(body).unwrap()))
}

async fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_survive_a_ledger_outage_and_are_marked_only_after_acceptance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.log");
    let (mut store, _) = Store::open(&path).unwrap();
    for s in [1u8, 2, 3, 4, 5, 9] {
        store.append(Record::CoSigned(receipt(s, 3))).unwrap();
    }
    let store = Arc::new(Mutex::new(store));

    // Phase 1: nothing listens (connection refused).
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let ledger = HttpLedger::new(&format!("http://{addr}"), Duration::from_secs(2)).unwrap();
    let cfg = SubmitterConfig {
        batch: 2,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        idle_poll: Duration::from_millis(50),
        rejected_retry: Duration::from_secs(3600),
    };
    let mut seed = 1u64;
    let sub = Submitter::new(
        store.clone(),
        ledger,
        cfg,
        Box::new(move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            seed >> 11
        }),
    );
    let stats = sub.stats();
    let kick = sub.kicker();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sub.run(async {
        let _ = stop_rx.await;
    }));
    assert!(wait_until(|| stats.lock().unwrap().failures >= 3).await);
    assert_eq!(store.lock().unwrap().pending_count(), 6);

    // Phase 2: the ledger answers 503.
    let fake = Arc::new(Mutex::new(Fake::default()));
    let app = Router::new()
        .route("/v1/receipts/batch", post(batch))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    assert!(wait_until(|| fake.lock().unwrap().posts >= 2).await);
    assert_eq!(store.lock().unwrap().pending_count(), 6);
    assert!(fake.lock().unwrap().accepted.is_empty());

    // Phase 3: up. Everything but the rejected receipt gets submitted.
    fake.lock().unwrap().up = true;
    assert!(wait_until(|| store.lock().unwrap().pending_count() == 1).await);
    let want: BTreeSet<(u8, u64)> = [1u8, 2, 3, 4, 5].iter().map(|&s| (s, 3)).collect();
    assert_eq!(fake.lock().unwrap().accepted, want);
    assert_eq!(
        store.lock().unwrap().pending(10)[0].body().session_id,
        sid(9)
    );
    assert!(stats.lock().unwrap().rejected >= 1);

    // A newer receipt is picked up after a kick.
    store
        .lock()
        .unwrap()
        .append(Record::CoSigned(receipt(1, 4)))
        .unwrap();
    kick.notify_one();
    assert!(wait_until(|| fake.lock().unwrap().accepted.contains(&(1, 4))).await);
    assert!(wait_until(|| store.lock().unwrap().pending_count() == 1).await);

    stop_tx.send(()).unwrap();
    task.await.unwrap();
    server.abort();
    // The submitted markers are durable.
    drop(store);
    let (reopened, _) = Store::open(&path).unwrap();
    assert_eq!(reopened.pending_count(), 1);
    assert_eq!(reopened.session(&sid(1)).unwrap().submitted_seq, 4);
}

#[test]
fn ledger_urls_are_parsed_strictly() {
    assert!(HttpLedger::new("ftp://x", Duration::from_secs(1)).is_err());
    assert!(HttpLedger::new("https://:443", Duration::from_secs(1)).is_err());
    assert!(HttpLedger::new("http://", Duration::from_secs(1)).is_err());
    assert!(HttpLedger::new("http://ledger.lan/api/", Duration::from_secs(1)).is_ok());
    assert!(HttpLedger::new("http://127.0.0.1:8080", Duration::from_secs(1)).is_ok());
}
