//! `ferry-ledger bench`: receipts/s ingested (base64 JSON through the HTTP router, batch
//! submit, one transaction per batch, parallel signature verification) against SQLite or
//! PostgreSQL.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail, ensure};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_ledger::http::{AppState, router};
use ferry_ledger::money::earned_micros;
use ferry_ledger::service::verify_all;
use ferry_ledger::testkit::{self, NETWORK};
use ferry_ledger::{Ledger, Params, PgStore, Role, SqliteStore, Store};
use ferry_receipts::{CoSignedReceipt, SigningKey};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    /// `sqlite:PATH` or `postgres://…`; default: a fresh SQLite file in a temp dir.
    #[arg(long)]
    database_url: Option<String>,
    /// Receipts to ingest.
    #[arg(long, default_value_t = 100_000)]
    receipts: usize,
    /// Receipts per batch request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent sessions (receipts are spread over them).
    #[arg(long, default_value_t = 200)]
    sessions: usize,
    /// Concurrent submitters.
    #[arg(long, default_value_t = 2)]
    submitters: usize,
}

const PRICE: u64 = 500_000;

pub(crate) async fn run(a: BenchArgs) -> Result<()> {
    ensure!(
        a.receipts > 0 && a.batch > 0 && a.sessions > 0 && a.submitters > 0,
        "counts must be positive"
    );
    let dir = tempfile::tempdir()?;
    match a.database_url.as_deref() {
        None => {
            let p = dir.path().join("bench.db");
            bench(
                &a,
                SqliteStore::open(&p)?,
                "sqlite (temp file, WAL, synchronous=FULL)",
            )
            .await
        }
        Some(u) if u.starts_with("sqlite:") => {
            let p = u.trim_start_matches("sqlite:").trim_start_matches("//");
            bench(&a, SqliteStore::open(p.as_ref())?, "sqlite").await
        }
        Some(u) if u.starts_with("postgres") => {
            let schema = format!("ferry_bench_{}", std::process::id());
            let store = PgStore::connect(u, 8, Some(&schema))
                .await
                .context("connecting")?;
            let r = bench(&a, store, "postgres").await;
            PgStore::drop_schema(u, &schema).await?;
            r
        }
        Some(u) => bail!("unsupported database url {u:?}"),
    }
}

async fn bench<S: Store>(a: &BenchArgs, store: S, label: &str) -> Result<()> {
    let ledger = Arc::new(Ledger::new(
        store,
        SigningKey::from_seed(&[1; 32]),
        Params {
            network_id: NETWORK,
            epoch_secs: 3600,
            price_micros_per_gib: PRICE,
            voucher_ttl_secs: 1 << 40,
            max_batch: a.batch.max(1),
            request_skew_secs: 300,
            refund_grace_secs: 3600,
        },
    ));
    let now = 1_700_000_000;
    let per_session = a.receipts.div_ceil(a.sessions) as u64;
    let relays: Vec<SigningKey> = (0..8).map(|i| testkit::key(2, i)).collect();
    let clients: Vec<SigningKey> = (0..a.sessions as u64).map(|i| testkit::key(3, i)).collect();
    for r in &relays {
        ledger.register(r.public_key(), Role::Relay, now).await?;
    }
    let mut vouchers = Vec::new();
    for c in &clients {
        ledger.register(c.public_key(), Role::Client, now).await?;
        ledger.credit(c.public_key(), 1 << 50).await?;
        let v = ledger
            .issue(c.public_key(), 1 << 49, PRICE, [0; 16], now)
            .await?;
        vouchers.push(v.voucher);
    }
    eprintln!(
        "bench: signing {} receipts ...",
        per_session * a.sessions as u64
    );
    let t = Instant::now();
    let per_session_receipts: Vec<Vec<CoSignedReceipt>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..a.sessions)
            .map(|i| {
                let (v, r, c) = (&vouchers[i], &relays[i % relays.len()], &clients[i]);
                s.spawn(move || {
                    testkit::session_receipts(
                        v,
                        r,
                        c,
                        testkit::session(i as u64),
                        per_session,
                        i as u64,
                    )
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    eprintln!("bench: signed in {:.1}s", t.elapsed().as_secs_f64());
    // Round-robin over sessions, so a batch touches many sessions.
    let mut all = Vec::with_capacity(a.receipts);
    for seq in 0..per_session as usize {
        for s in &per_session_receipts {
            if let Some(r) = s.get(seq) {
                all.push(B64.encode(r.encode()));
            }
        }
    }
    all.truncate(a.receipts);
    let n = all.len();
    let expected_bytes: u64 = per_session_receipts
        .iter()
        .filter_map(|s| s.last().map(|r| r.body().total_bytes()))
        .sum();

    // Verification alone (for the breakdown).
    let raw: Vec<Vec<u8>> = all
        .iter()
        .take(20_000)
        .filter_map(|s| B64.decode(s).ok())
        .collect();
    let k = raw.len();
    let t = Instant::now();
    let ok = verify_all(raw, &NETWORK)
        .iter()
        .filter(|r| r.is_ok())
        .count();
    let verify_rate = k as f64 / t.elapsed().as_secs_f64();
    ensure!(ok == k, "fixture receipts must verify");

    let bodies: Vec<String> = all
        .chunks(a.batch)
        .map(|c| serde_json::json!({ "receipts": c }).to_string())
        .collect();
    let state = AppState {
        ledger: ledger.clone(),
        admin_token_hash: None,
        open_registration: false,
        max_body_bytes: 64 << 20,
        clock: Arc::new(move || now),
        join: Default::default(),
        directory: None,
    };
    let app = router(state);
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    let (t, cpu0) = (Instant::now(), cpu_secs());
    let mut tasks = Vec::new();
    for _ in 0..a.submitters {
        let (app, queue) = (app.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let body = match queue.lock() {
                    Ok(mut q) => q.pop(),
                    Err(_) => None,
                };
                let Some(body) = body else {
                    return Ok::<_, anyhow::Error>(());
                };
                let req = Request::post("/v1/receipts/batch")
                    .header("content-type", "application/json")
                    .body(Body::from(body))?;
                let resp = app.clone().oneshot(req).await?;
                let status = resp.status();
                let bytes = resp.into_body().collect().await?.to_bytes();
                ensure!(
                    status == StatusCode::OK,
                    "batch failed: {status} {}",
                    String::from_utf8_lossy(&bytes)
                );
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let mut credited = 0;
    let mut earned = 0;
    for r in &relays {
        let e = ledger.relay(r.public_key()).await?;
        credited += e.credited_bytes;
        earned += e.earned_micros;
    }
    let expected_micros: u64 = per_session_receipts
        .iter()
        .filter_map(|s| {
            s.last()
                .map(|r| earned_micros(r.body().total_bytes(), PRICE))
        })
        .sum();
    ensure!(
        credited == expected_bytes,
        "credited {credited} != expected {expected_bytes}"
    );
    ensure!(
        earned == expected_micros,
        "earned {earned} != expected {expected_micros}"
    );
    // Store alone: pre-verified receipts of fresh sessions, one transaction per batch.
    let store_only = store_only_rate(&ledger, &vouchers, &relays, &clients, a, now).await?;
    tracing::info!("bench done");
    #[allow(clippy::print_stdout)]
    {
        println!(
            "store={label} receipts={n} batch={} sessions={} submitters={} cores={}",
            a.batch,
            a.sessions,
            a.submitters,
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
        println!(
            "ingest: {:.0} receipts/s ({secs:.2}s total, HTTP router + JSON + base64 + verify + store)",
            n as f64 / secs
        );
        println!(
            "ingest CPU: {:.0} receipts per CPU-second ({cpu:.2} CPU-s; load-independent)",
            n as f64 / cpu.max(1e-9)
        );
        println!(
            "verify only: {verify_rate:.0} receipts/s (2 Ed25519 verifications each, all cores)"
        );
        println!(
            "store only: {store_only:.0} receipts/s (pre-verified, one transaction per batch)"
        );
        println!(
            "check: credited bytes and micros equal the final cumulative counters x price: ok"
        );
    }
    Ok(())
}

async fn store_only_rate<S: Store>(
    ledger: &Ledger<S>,
    vouchers: &[ferry_receipts::Voucher],
    relays: &[SigningKey],
    clients: &[SigningKey],
    a: &BenchArgs,
    now: u64,
) -> Result<f64> {
    use ferry_ledger::domain::VerifiedReceipt;
    use ferry_receipts::{ReceiptBody, Signature, SignedReceipt};
    let per_session = a.receipts.div_ceil(a.sessions) as u64;
    let mut items = Vec::with_capacity(a.receipts);
    for seq in 1..=per_session {
        for (i, v) in vouchers.iter().enumerate() {
            let body = ReceiptBody {
                network_id: NETWORK,
                relay_key: relays[i % relays.len()].public_key(),
                client_key: clients[i].public_key(),
                session_id: testkit::session(1_000_000 + i as u64),
                voucher_id: v.id(),
                seq,
                bytes_up: seq * 1000,
                bytes_down: seq * 100_000,
                session_started_at: now,
                issued_at: now,
                price_micros_per_gib: PRICE,
            };
            let receipt = CoSignedReceipt {
                receipt: SignedReceipt {
                    body,
                    relay_signature: Signature::ZERO,
                },
                client_observed_up: 0,
                client_observed_down: 0,
                cosigned_at: now,
                client_signature: Signature::ZERO,
            };
            items.push(VerifiedReceipt {
                encoded: receipt.encode(),
                receipt,
            });
        }
    }
    items.truncate(a.receipts);
    let n = items.len();
    let t = Instant::now();
    for chunk in items.chunks(a.batch) {
        let res = ledger.store().ingest(chunk.to_vec(), now, 3600).await?;
        ensure!(res.iter().all(Result::is_ok), "store-only batch refused");
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// User + system CPU seconds of this process (Linux `/proc/self/stat`, USER_HZ = 100).
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the ")" that closes the command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
