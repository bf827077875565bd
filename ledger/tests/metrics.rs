//! `/metrics` of the ledger: receipt outcomes, credited bytes and vouchers move exactly with
//! what was submitted (in-process, SQLite).
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{NOW, World};
use ferry_ledger::stats::metrics_router;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

async fn scrape(app: &axum::Router) -> String {
    let req = Request::get("/metrics").body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} missing in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_outcomes_credited_bytes_and_vouchers_are_counted() {
    let w = World::new(common::sqlite(), 1, 2, 100 << 30).await;
    let app = metrics_router(w.ledger.stats());
    let before = scrape(&app).await;
    // World::new issued one voucher per client.
    assert_eq!(value(&before, "ferry_ledger_vouchers_issued_total"), 2);
    assert_eq!(
        value(&before, "ferry_ledger_receipts_total{outcome=\"accepted\"}"),
        0
    );

    let r1 = w.receipt(0, 0, 1, 1, 1_000, 9_000).encode();
    let r2 = w.receipt(0, 0, 1, 2, 3_000, 20_000).encode();
    let other = w.receipt(0, 1, 2, 1, 500, 500).encode();
    let mut forged = w.receipt(0, 1, 2, 2, 600, 600).encode();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let results = w
        .ledger
        .submit(vec![r1.clone(), r2, other, forged], NOW)
        .await
        .unwrap();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
    // Replays: the same receipt again (duplicate) and an older one (stale).
    w.ledger.submit(vec![r1.clone()], NOW).await.unwrap();
    let _ = w.ledger.submit_one(r1, NOW).await;

    let text = scrape(&app).await;
    let n = |outcome: &str| {
        value(
            &text,
            &format!("ferry_ledger_receipts_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(n("accepted"), 3);
    assert_eq!(n("rejected"), 1);
    assert_eq!(n("duplicate") + n("stale"), 2);
    // Credit = the latest cumulative counters of each session.
    assert_eq!(
        value(&text, "ferry_ledger_credited_bytes_total"),
        3_000 + 20_000 + 500 + 500
    );
    assert_eq!(value(&text, "ferry_ledger_vouchers_issued_total"), 2);
    assert_eq!(value(&text, "ferry_ledger_vouchers_closed_total"), 0);
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
}
