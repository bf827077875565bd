//! The HTTP API end to end (in-process router), on SQLite and PostgreSQL: happy paths,
//! admin auth, signed voucher requests, and bad input → clear 4xx JSON with nothing stored.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{NOW, PRICE, World};
use ferry_ledger::http::{AppState, hash_token, router};
use ferry_ledger::merkle;
use ferry_ledger::testkit::{self, NETWORK};
use ferry_ledger::{Store, VoucherRequest};
use ferry_receipts::{NetworkId, Signature, Voucher};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

both_stores!(
    info_and_admin_flow,
    signed_voucher_requests,
    receipts_reports_and_proofs,
    bad_input_is_refused_and_nothing_is_stored,
);

const TOKEN: &str = "test-admin-token-0123456789";
const LIMIT: usize = 64 * 1024;

async fn app<S: Store>(store: S) -> (Router, World<S>) {
    let w = World::new(store, 2, 2, 100 << 30).await;
    let state = AppState {
        ledger: w.ledger.clone(),
        admin_token_hash: Some(hash_token(TOKEN)),
        open_registration: false,
        max_body_bytes: LIMIT,
        clock: Arc::new(|| NOW),
        join: Default::default(),
        directory: None,
    };
    (router(state), w)
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b)),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
    (status, v)
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

async fn info_and_admin_flow<S: Store>(store: S) {
    let (app, w) = app(store).await;
    let (s, v) = call(&app, "GET", "/v1/info", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["network_id"], NETWORK.to_hex());
    assert_eq!(v["ledger_key"], common::ledger_key().public_key().to_hex());
    assert_eq!(v["current_epoch"], NOW / 3600);

    let newbie = testkit::key(7, 1).public_key().to_hex();
    let body = json!({"public_key": newbie, "role": "client"}).to_string();
    let (s, v) = call(&app, "POST", "/v1/keys", None, Some(body.clone())).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, _) = call(
        &app,
        "POST",
        "/v1/keys",
        Some("wrong-token-wrong-token"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = call(&app, "POST", "/v1/keys", Some(TOKEN), Some(body.clone())).await;
    assert_eq!(
        (s, v["created"].as_bool()),
        (StatusCode::CREATED, Some(true))
    );
    let (s, v) = call(&app, "POST", "/v1/keys", Some(TOKEN), Some(body)).await;
    assert_eq!((s, v["created"].as_bool()), (StatusCode::OK, Some(false)));

    let credit = json!({"amount_micros": 2_000_000}).to_string();
    let path = format!("/v1/clients/{newbie}/credit");
    let (s, _) = call(&app, "POST", &path, None, Some(credit.clone())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = call(&app, "POST", &path, Some(TOKEN), Some(credit)).await;
    assert_eq!(
        (s, v["balance_micros"].as_u64()),
        (StatusCode::OK, Some(2_000_000))
    );
    // The account is shown to the admin and to the client itself (signed read), nobody else.
    let acct = format!("/v1/clients/{newbie}");
    let (s, v) = call(&app, "GET", &acct, None, None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "signature_required")
    );
    let (s, v) = call(&app, "GET", &acct, Some(TOKEN), None).await;
    assert_eq!(
        (s, v["balance_micros"].as_u64()),
        (StatusCode::OK, Some(2_000_000))
    );
    let signed = |signer: &ferry_receipts::SigningKey, key: &str, at: u64| {
        let mut k = [0u8; 32];
        hex::decode_to_slice(key, &mut k).unwrap();
        let msg = ferry_ledger_api::signing::account_read_bytes(NETWORK.as_bytes(), &k, at);
        let sig = signer.sign(ferry_ledger_api::signing::ACCOUNT_READ_DOMAIN, &msg);
        format!(
            "/v1/clients/{key}?at={at}&sig={}",
            hex::encode(sig.as_bytes())
        )
    };
    let me = testkit::key(7, 1);
    let (s, v) = call(&app, "GET", &signed(&me, &newbie, NOW - 10), None, None).await;
    assert_eq!(
        (
            s,
            v["balance_micros"].as_u64(),
            v["deposited_micros"].as_u64()
        ),
        (StatusCode::OK, Some(2_000_000), Some(2_000_000))
    );
    let stranger = testkit::key(7, 2);
    for (path, why) in [
        (signed(&stranger, &newbie, NOW), "signed by another key"),
        (signed(&me, &newbie, NOW - 301), "outside the request skew"),
        (signed(&me, &newbie, NOW + 301), "from the future"),
        (format!("{acct}?at={NOW}&sig=00"), "malformed signature"),
        (format!("{acct}?at={NOW}"), "no signature"),
    ] {
        let (s, v) = call(&app, "GET", &path, None, None).await;
        assert!(s.is_client_error(), "{why}: {s} {v}");
        assert_ne!(v["balance_micros"].as_u64(), Some(2_000_000), "{why}");
    }
    // A valid signature for one client's account does not open another's.
    let other = w.clients[0].public_key().to_hex();
    let mine = signed(&me, &newbie, NOW);
    let (s, _) = call(&app, "GET", &mine.replace(&newbie, &other), None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Admin-issued voucher: 1 GiB's worth at PRICE; no max price given: the network's.
    let body = json!({"client_key": newbie, "budget_micros": PRICE}).to_string();
    let (s, v) = call(
        &app,
        "POST",
        "/v1/vouchers",
        Some(TOKEN),
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["cost_micros"].as_u64(), Some(PRICE));
    assert_eq!(v["max_price_micros_per_gib"].as_u64(), Some(PRICE));
    assert_eq!(v["balance_micros"].as_u64(), Some(2_000_000 - PRICE));
    let voucher = Voucher::decode(&B64.decode(v["voucher"].as_str().unwrap()).unwrap()).unwrap();
    voucher
        .verify(&NETWORK, &common::ledger_key().public_key(), NOW)
        .unwrap();
    assert_eq!(v["voucher_id"], voucher.id().to_hex());
    let (s, v2) = call(
        &app,
        "GET",
        &format!("/v1/vouchers/{}", voucher.id()),
        None,
        None,
    )
    .await;
    assert_eq!((s, &v2["voucher"]), (StatusCode::OK, &v["voucher"]));
    // Closing (refund) is admin-only and only after expiry + grace.
    let close = format!("/v1/vouchers/{}/close", voucher.id());
    let (s, _) = call(&app, "POST", &close, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v3) = call(&app, "POST", &close, Some(TOKEN), None).await;
    assert_eq!((s, code(&v3)), (StatusCode::BAD_REQUEST, "bad_request"));
    // Without admin token and without signature: refused.
    let (s, _) = call(&app, "POST", "/v1/vouchers", None, Some(body)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Insufficient funds → 402.
    let body = json!({"client_key": newbie, "budget_micros": 100 * PRICE}).to_string();
    let (s, v) = call(&app, "POST", "/v1/vouchers", Some(TOKEN), Some(body)).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::PAYMENT_REQUIRED, "insufficient_funds")
    );
    let _ = w;
}

async fn signed_voucher_requests<S: Store>(store: S) {
    let (app, w) = app(store).await;
    let client = &w.clients[0];
    let req = VoucherRequest {
        client_key: client.public_key(),
        budget_micros: 2_500_000,
        max_price_micros_per_gib: PRICE,
        nonce: [9; 16],
        requested_at: NOW - 10,
        signature: Signature::ZERO,
    }
    .sign(&NETWORK, client);
    let body = |r: &VoucherRequest| {
        json!({
            "client_key": r.client_key.to_hex(), "budget_micros": r.budget_micros,
            "max_price_micros_per_gib": r.max_price_micros_per_gib,
            "nonce": hex::encode(r.nonce), "requested_at": r.requested_at,
            "signature": r.signature.to_hex(),
        })
        .to_string()
    };
    let (s, v) = call(&app, "POST", "/v1/vouchers", None, Some(body(&req))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["issued_at"].as_u64(), Some(NOW - 10));
    // Replay: same voucher, not charged again.
    let (s, v2) = call(&app, "POST", "/v1/vouchers", None, Some(body(&req))).await;
    assert_eq!(
        (s, v2["already_issued"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    assert_eq!(v2["voucher"], v["voucher"]);
    // Tampered budget or max price → signature fails.
    let mut bad = req.clone();
    bad.max_price_micros_per_gib += 1;
    let (s, v) = call(&app, "POST", "/v1/vouchers", None, Some(body(&bad))).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let mut bad = req.clone();
    bad.budget_micros += 1;
    let (s, v) = call(&app, "POST", "/v1/vouchers", None, Some(body(&bad))).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    // Signed for another network → fails.
    let other = VoucherRequest {
        nonce: [1; 16],
        ..req.clone()
    }
    .sign(&NetworkId([7; 16]), client);
    let (s, _) = call(&app, "POST", "/v1/vouchers", None, Some(body(&other))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Too far from the ledger clock.
    let old = VoucherRequest {
        requested_at: NOW - 3600,
        nonce: [2; 16],
        ..req.clone()
    }
    .sign(&NETWORK, client);
    let (s, v) = call(&app, "POST", "/v1/vouchers", None, Some(body(&old))).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));
}

async fn receipts_reports_and_proofs<S: Store>(store: S) {
    let (app, w) = app(store).await;
    let r1 = w.receipt(0, 0, 1, 1, 1 << 29, 1 << 29);
    let r2 = w.receipt(0, 0, 1, 2, 1 << 30, 1 << 30);
    let r3 = w.receipt(1, 1, 2, 1, 0, 12345);
    let (s, v) = call(
        &app,
        "POST",
        "/v1/receipts",
        None,
        Some(json!({"receipt": B64.encode(r1.encode())}).to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "advanced");
    assert_eq!(v["credited_bytes"].as_u64(), Some(1 << 30));
    let items: Vec<String> = [r2, r1, r3, r2]
        .iter()
        .map(|r| B64.encode(r.encode()))
        .collect();
    let batch = json!({ "receipts": items });
    let (s, v) = call(
        &app,
        "POST",
        "/v1/receipts/batch",
        None,
        Some(batch.to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["advanced"].as_u64(),
            v["duplicate"].as_u64(),
            v["stale"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    let statuses: Vec<_> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["advanced", "stale", "advanced", "duplicate"]);

    let relay0 = w.relays[0].public_key().to_hex();
    let (s, v) = call(&app, "GET", &format!("/v1/relays/{relay0}"), None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["credited_bytes"].as_u64(), Some(2 << 30));
    assert_eq!(v["earned_micros"].as_u64(), Some(2 * PRICE));

    let (s, v) = call(&app, "GET", "/v1/epochs", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["epochs"], json!([{"epoch": NOW / 3600, "receipts": 3}]));
    let (s, rep) = call(
        &app,
        "GET",
        &format!("/v1/epochs/{}", NOW / 3600),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(rep["receipts"].as_u64(), Some(3));
    assert_eq!(rep["relays"].as_array().unwrap().len(), 2);

    // Proof JSON verifies with nothing but the JSON and the merkle module.
    let b = r2.body();
    let path = format!("/v1/proofs/{}/{}/{}", b.relay_key, b.session_id, b.seq);
    let (s, p) = call(&app, "GET", &path, None, None).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["merkle_root"], rep["merkle_root"]);
    let h = |s: &Value| -> [u8; 32] {
        hex::decode(s.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    let receipt = B64.decode(p["receipt"].as_str().unwrap()).unwrap();
    assert_eq!(receipt, r2.encode());
    let leaf = merkle::leaf_hash(&receipt);
    let path_hashes: Vec<[u8; 32]> = p["path"].as_array().unwrap().iter().map(h).collect();
    assert!(merkle::verify(
        &leaf,
        p["leaf_index"].as_u64().unwrap(),
        p["leaf_count"].as_u64().unwrap(),
        &path_hashes,
        &h(&p["merkle_root"])
    ));
    // The stale r1 was accepted earlier (seq 1), so it has a proof too; an unknown seq has none.
    let (s, v) = call(
        &app,
        "GET",
        &format!("/v1/proofs/{}/{}/9", b.relay_key, b.session_id),
        None,
        None,
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
}

async fn bad_input_is_refused_and_nothing_is_stored<S: Store>(store: S) {
    let (app, w) = app(store).await;
    // Seed one accepted receipt so "unchanged" is about more than empty tables.
    let ok = w.receipt(0, 0, 1, 1, 10, 10);
    let (s, _) = call(
        &app,
        "POST",
        "/v1/receipts",
        None,
        Some(json!({"receipt": B64.encode(ok.encode())}).to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let snapshot = || async {
        let (_, e) = call(
            &app,
            "GET",
            &format!("/v1/relays/{}", w.relays[0].public_key()),
            None,
            None,
        )
        .await;
        let (_, c) = call(
            &app,
            "GET",
            &format!("/v1/clients/{}", w.clients[0].public_key()),
            Some(TOKEN),
            None,
        )
        .await;
        let (_, ep) = call(&app, "GET", "/v1/epochs", None, None).await;
        (e, c, ep)
    };
    let before = snapshot().await;
    let db_before = w.ledger.store().snapshot().await.unwrap();

    let submit = |body: String| call(&app, "POST", "/v1/receipts", None, Some(body));
    let b64 = |r: &ferry_receipts::CoSignedReceipt| {
        json!({"receipt": B64.encode(r.encode())}).to_string()
    };
    let mut cases: Vec<(StatusCode, &str, (StatusCode, Value))> = Vec::new();
    cases.push((
        StatusCode::BAD_REQUEST,
        "malformed_json",
        submit("{\"receipt\": ".into()).await,
    ));
    cases.push((
        StatusCode::UNPROCESSABLE_ENTITY,
        "malformed_json",
        submit("[1,2]".into()).await,
    ));
    cases.push((
        StatusCode::UNPROCESSABLE_ENTITY,
        "malformed_json",
        submit(json!({"receipt": 5}).to_string()).await,
    ));
    cases.push((
        StatusCode::UNPROCESSABLE_ENTITY,
        "malformed_json",
        submit(json!({"receipt": "", "extra": 1}).to_string()).await,
    ));
    cases.push((
        StatusCode::BAD_REQUEST,
        "malformed_receipt",
        submit(json!({"receipt": "***"}).to_string()).await,
    ));
    cases.push((
        StatusCode::BAD_REQUEST,
        "malformed_receipt",
        submit(json!({"receipt": B64.encode([1u8; 10])}).to_string()).await,
    ));
    let mut enc = w.receipt(0, 0, 1, 2, 20, 20).encode();
    enc[0] = 9; // unknown version
    cases.push((
        StatusCode::BAD_REQUEST,
        "malformed_receipt",
        submit(json!({"receipt": B64.encode(&enc)}).to_string()).await,
    ));
    let mut bad_relay = w.receipt(0, 0, 1, 2, 20, 20);
    bad_relay.receipt.relay_signature.0[3] ^= 1;
    cases.push((
        StatusCode::UNPROCESSABLE_ENTITY,
        "bad_relay_signature",
        submit(b64(&bad_relay)).await,
    ));
    let mut bad_client = w.receipt(0, 0, 1, 2, 20, 20);
    bad_client.client_signature.0[3] ^= 1;
    cases.push((
        StatusCode::UNPROCESSABLE_ENTITY,
        "bad_client_signature",
        submit(b64(&bad_client)).await,
    ));
    let mut inflated = w.receipt(0, 0, 1, 2, 20, 20);
    inflated.receipt.body.bytes_down = 1 << 40; // counts changed after signing
    cases.push((
        StatusCode::UNPROCESSABLE_ENTITY,
        "bad_relay_signature",
        submit(b64(&inflated)).await,
    ));
    let v = &w.vouchers[0];
    let wrong_net = testkit::receipt(
        NetworkId([9; 16]),
        &w.relays[0],
        &w.clients[0],
        v.id(),
        PRICE,
        testkit::session(1),
        2,
        20,
        20,
    );
    cases.push((
        StatusCode::UNPROCESSABLE_ENTITY,
        "wrong_network",
        submit(b64(&wrong_net)).await,
    ));
    let stranger = testkit::key(8, 8);
    let unknown = testkit::receipt(
        NETWORK,
        &stranger,
        &w.clients[0],
        v.id(),
        PRICE,
        testkit::session(1),
        2,
        20,
        20,
    );
    cases.push((
        StatusCode::FORBIDDEN,
        "unknown_relay",
        submit(b64(&unknown)).await,
    ));
    let regress = w.receipt(0, 0, 1, 2, 5, 5);
    cases.push((
        StatusCode::CONFLICT,
        "session_conflict",
        submit(b64(&regress)).await,
    ));
    // Oversized body.
    let huge = json!({"receipts": vec![B64.encode(ok.encode()); LIMIT / 400]}).to_string();
    assert!(huge.len() > LIMIT);
    cases.push((
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        call(&app, "POST", "/v1/receipts/batch", None, Some(huge)).await,
    ));
    // Missing content type.
    let req = Request::post("/v1/receipts")
        .body(Body::from(b64(&ok)))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let st = resp.status();
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    cases.push((
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        (st, body),
    ));
    cases.push((
        StatusCode::BAD_REQUEST,
        "bad_request",
        call(
            &app,
            "POST",
            "/v1/receipts/batch",
            None,
            Some(json!({"receipts": []}).to_string()),
        )
        .await,
    ));
    cases.push((
        StatusCode::BAD_REQUEST,
        "bad_request",
        call(&app, "GET", "/v1/relays/xyz", None, None).await,
    ));
    cases.push((
        StatusCode::NOT_FOUND,
        "unknown_relay",
        call(
            &app,
            "GET",
            &format!("/v1/relays/{}", stranger.public_key()),
            None,
            None,
        )
        .await,
    ));
    cases.push((
        StatusCode::NOT_FOUND,
        "not_found",
        call(&app, "GET", "/v1/nope", None, None).await,
    ));
    cases.push((
        StatusCode::BAD_REQUEST,
        "bad_request",
        call(&app, "GET", "/v1/epochs/-1", None, None).await,
    ));
    let credit = json!({"amount_micros": -5}).to_string();
    cases.push((
        StatusCode::UNPROCESSABLE_ENTITY,
        "malformed_json",
        call(
            &app,
            "POST",
            &format!("/v1/clients/{}/credit", w.clients[0].public_key()),
            Some(TOKEN),
            Some(credit),
        )
        .await,
    ));
    let credit = json!({"amount_micros": u64::MAX}).to_string();
    cases.push((
        StatusCode::BAD_REQUEST,
        "bad_request",
        call(
            &app,
            "POST",
            &format!("/v1/clients/{}/credit", w.clients[0].public_key()),
            Some(TOKEN),
            Some(credit),
        )
        .await,
    ));

    for (i, (want_status, want_code, (status, body))) in cases.iter().enumerate() {
        assert_eq!(
            (status, code(body)),
            (want_status, *want_code),
            "case {i}: {body}"
        );
        assert!(
            !body["error"]["message"].as_str().unwrap_or("").is_empty(),
            "case {i}"
        );
    }
    assert_eq!(snapshot().await, before, "refused requests stored nothing");
    assert_eq!(w.ledger.store().snapshot().await.unwrap(), db_before);
    // A batch mixing bad and good items: per-item errors, good ones applied.
    let good = w.receipt(0, 0, 1, 2, 30, 30);
    let batch =
        json!({"receipts": [B64.encode(bad_relay.encode()), "***", B64.encode(good.encode())]});
    let (s, v) = call(
        &app,
        "POST",
        "/v1/receipts/batch",
        None,
        Some(batch.to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["results"][0]["code"], "bad_relay_signature");
    assert_eq!(v["results"][1]["code"], "malformed_receipt");
    assert_eq!(v["results"][2]["status"], "advanced");
    let after = snapshot().await;
    assert_eq!(
        after.1["used_micros"].as_u64(),
        Some(ferry_ledger::money::debit_micros(60, PRICE)),
        "only the good batch item counted"
    );
    assert_eq!(after.0["credited_bytes"].as_u64(), Some(60));
    assert_eq!(before.0["credited_bytes"].as_u64(), Some(20));
}
