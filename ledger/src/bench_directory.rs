//! `ferry-ledger bench-directory`: announces N relays (real descriptors, signatures checked,
//! probes answered by a stand-in prober), then measures `GET /v1/relays` through the HTTP
//! router (query, JSON encoding) with the filters clients use. Reports announces/s and the
//! query latency percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use ferry_ledger::directory::{Directory, DirectoryParams};
use ferry_ledger::http::{AppState, router};
use ferry_ledger::testkit::{self, FakeProber, NETWORK, SplitMix};
use ferry_ledger::{Ledger, PgStore, Role, SqliteStore, Store};
use ferry_receipts::SigningKey;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

#[derive(clap::Args)]
pub(crate) struct DirectoryBenchArgs {
    /// `sqlite:PATH` or `postgres://…`; default: a fresh SQLite file in a temp dir.
    #[arg(long)]
    database_url: Option<String>,
    /// Relays to announce.
    #[arg(long, default_value_t = 10_000)]
    relays: u64,
    /// Listing queries to time.
    #[arg(long, default_value_t = 2_000)]
    queries: u64,
}

const COUNTRIES: [&[u8; 2]; 20] = [
    b"DE", b"NL", b"FR", b"US", b"GB", b"SE", b"CH", b"AT", b"PL", b"CZ", b"ES", b"IT", b"JP",
    b"CA", b"BR", b"IN", b"AU", b"FI", b"NO", b"DK",
];

pub(crate) async fn run(a: DirectoryBenchArgs) -> Result<()> {
    ensure!(a.relays > 0 && a.queries > 0, "counts must be positive");
    let dir = tempfile::tempdir()?;
    match a.database_url.as_deref() {
        None => {
            let s = SqliteStore::open(&dir.path().join("bench.db"))?;
            bench(&a, s, "sqlite (temp file, WAL, synchronous=FULL)").await
        }
        Some(u) if u.starts_with("postgres") => {
            let schema = format!("ferry_dirbench_{}", std::process::id());
            let store = PgStore::connect(u, 8, Some(&schema))
                .await
                .context("connecting")?;
            let r = bench(&a, store, "postgres").await;
            PgStore::drop_schema(u, &schema).await?;
            r
        }
        Some(u) => bail!("unsupported database url {u:?} (default: a temp SQLite file)"),
    }
}

#[allow(clippy::print_stdout)]
async fn bench<S: Store>(a: &DirectoryBenchArgs, store: S, label: &str) -> Result<()> {
    let now = 1_800_000_000;
    let ledger = Arc::new(Ledger::new(
        store,
        SigningKey::from_seed(&[1; 32]),
        testkit::params(NETWORK),
    ));
    let prober = Arc::new(FakeProber::default());
    let params = DirectoryParams {
        network_id: NETWORK,
        min_price_micros_per_gib: 1,
        max_price_micros_per_gib: 10_000_000,
        max_ttl_secs: 3600,
        skew_secs: 300,
        min_probe_interval_secs: 30,
        max_list: 1000,
    };
    let dir = Arc::new(Directory::new(ledger.clone(), params, prober.clone()));
    let mut rng = SplitMix(7);
    let mut descriptors = Vec::new();
    for i in 0..a.relays {
        let key = testkit::key(4, i);
        ledger.register(key.public_key(), Role::Relay, now).await?;
        let ip = std::net::Ipv4Addr::from(0x5100_0000u32 + i as u32);
        let v4 = std::net::SocketAddrV4::new(ip, 51820);
        let price = 100_000 + rng.below(4_900_000);
        let country = COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize];
        let d = testkit::descriptor(NETWORK, &key, v4, price, *country, now);
        // Two relays in five answer their probe from this "outside".
        if rng.below(5) < 2 {
            prober
                .open
                .lock()
                .map_err(|_| anyhow::anyhow!("lock"))?
                .insert((ip, 51821).into());
        }
        descriptors.push((d.encode(), std::net::IpAddr::V4(ip)));
    }
    let t = Instant::now();
    for (i, (bytes, seen)) in descriptors.iter().enumerate() {
        dir.announce(bytes, *seen, [i as u8; 16], now).await?;
    }
    let announce = t.elapsed();
    let state = AppState {
        ledger,
        admin_token_hash: None,
        open_registration: false,
        max_body_bytes: 1 << 20,
        clock: Arc::new(move || now + 60),
        join: Default::default(),
        directory: Some(dir),
    };
    let app = router(state);
    let queries = [
        "country=DE",
        "country=NL&max_price=2000000",
        "max_price=1000000&limit=100",
        "min_score=400&limit=50",
        "",
    ];
    let mut lat: Vec<Duration> = Vec::new();
    let mut listed = 0usize;
    for q in 0..a.queries {
        let path = format!(
            "/v1/relays?{}",
            queries[(q % queries.len() as u64) as usize]
        );
        let t = Instant::now();
        let resp = app
            .clone()
            .oneshot(Request::get(&path).body(Body::empty())?)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        ensure!(resp.status() == StatusCode::OK, "{path}: {}", resp.status());
        let body = resp.into_body().collect().await?.to_bytes();
        lat.push(t.elapsed());
        if q < queries.len() as u64 {
            let v: ferry_ledger_api::RelayList = serde_json::from_slice(&body)?;
            listed += v.relays.len();
        }
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "directory bench [{label}]: {} relays announced in {:.1} s ({:.0}/s, probes answered by 40 %); \
         {} queries: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (one of each filter returned {listed} listings)",
        a.relays,
        announce.as_secs_f64(),
        a.relays as f64 / announce.as_secs_f64(),
        a.queries,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3,
    );
    Ok(())
}
