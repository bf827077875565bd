//! Serves the Ferry metric registry with fake traffic, for trying Prometheus/Grafana without a
//! router.
//!
//! ```text
//! cargo run -p ferry-telemetry --example metrics-demo -- [--listen 127.0.0.1:9586]
//!     [--token-file F] [--step-bytes 125000] [--interval-ms 1000]
//! ```
//! Every interval, sent/received bytes grow by `--step-bytes` (received twice as fast). Lines on
//! stdin drive it exactly: `sent N`, `recv N`, `drop REASON N` (policy, allowed_ips,
//! rate_limit, credit_window, unknown_peer), `fsync MILLIS`. Prints `listening ADDR` when ready.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use ferry_telemetry::server::BearerToken;
use ferry_telemetry::{
    DropCounts, DropReason, LogConfig, Metrics, MetricsConfig, MetricsServer, ServerConfig,
    Snapshot,
};
use tokio::io::AsyncBufReadExt;

#[derive(Default)]
struct Fake {
    sent: AtomicU64,
    received: AtomicU64,
    drops: Mutex<DropCounts>,
}

fn reason(label: &str) -> anyhow::Result<DropReason> {
    DropReason::ALL
        .into_iter()
        .find(|r| r.as_label() == label)
        .with_context(|| format!("unknown drop reason {label:?}"))
}

async fn run() -> anyhow::Result<()> {
    let mut listen = ferry_telemetry::server::DEFAULT_LISTEN;
    let mut token = None;
    let mut step: u64 = 125_000;
    let mut interval = Duration::from_millis(1000);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value.parse()?,
            "--token-file" => token = Some(BearerToken::from_file(value.as_ref())?),
            "--step-bytes" => step = value.parse()?,
            "--interval-ms" => interval = Duration::from_millis(value.parse()?),
            other => bail!("unknown argument {other:?}"),
        }
    }
    ferry_telemetry::logging::init(&LogConfig::default())?;
    let fake = Arc::new(Fake::default());
    let mut metrics = Metrics::new(&MetricsConfig::default());
    let source = fake.clone();
    metrics.register_agent(move || {
        let mut s = Snapshot::default();
        s.sent_bytes = source.sent.load(Ordering::Relaxed);
        s.received_bytes = source.received.load(Ordering::Relaxed);
        s.peers_configured = 2;
        s.sessions_active = 1;
        s.drops = source.drops.lock().map(|d| *d).unwrap_or_default();
        s
    });
    let fsync = metrics.fsync_recorder();
    let server = MetricsServer::bind(
        ServerConfig {
            listen: vec![listen],
            token,
        },
        Arc::new(metrics),
        None,
    )
    .await?;
    #[allow(clippy::print_stdout)]
    {
        println!("listening {}", server.local_addr());
    }
    tokio::spawn(server.serve(std::future::pending()));

    let ticker = fake.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            ticker.sent.fetch_add(step, Ordering::Relaxed);
            ticker.received.fetch_add(2 * step, Ordering::Relaxed);
        }
    });

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["sent", n] => _ = fake.sent.fetch_add(n.parse()?, Ordering::Relaxed),
            ["recv", n] => _ = fake.received.fetch_add(n.parse()?, Ordering::Relaxed),
            ["drop", r, n] => {
                let r = reason(r)?;
                if let Ok(mut d) = fake.drops.lock() {
                    d.add(r, n.parse()?);
                }
            }
            ["fsync", ms] => fsync.record(Duration::from_millis(ms.parse()?)),
            [] => {}
            _ => eprintln!("unknown command {line:?}"),
        }
    }
    // stdin closed: keep serving until killed.
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
