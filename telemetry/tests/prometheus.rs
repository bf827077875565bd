//! A real Prometheus server scrapes a metrics server on loopback; we check through its HTTP
//! query API that the counters moved by exactly the amounts we generated.
//!
//! Needs Debian's `prometheus` package (scripts/setup.sh installs it). Run with
//! `cargo test -p ferry-telemetry --test prometheus -- --ignored`.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferry_telemetry::server::BearerToken;
use ferry_telemetry::{DropReason, Metrics, MetricsConfig, MetricsServer, ServerConfig, Snapshot};
use support::prometheus::{Job, Prometheus};

const TOKEN: &str = "prom-test-token";
const WAIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Traffic {
    sent: AtomicU64,
    received: AtomicU64,
    policy_drops: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs prometheus"]
async fn prometheus_sees_byte_counters_move_by_the_generated_amounts() {
    let traffic = Arc::new(Traffic::default());
    let mut metrics = Metrics::new(&MetricsConfig::default());
    let t = traffic.clone();
    metrics.register_agent(move || {
        let mut s = Snapshot::default();
        s.sent_bytes = t.sent.load(Ordering::Relaxed);
        s.received_bytes = t.received.load(Ordering::Relaxed);
        s.drops
            .add(DropReason::Policy, t.policy_drops.load(Ordering::Relaxed));
        s
    });
    let fsync = metrics.fsync_recorder();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config.token = Some(BearerToken::new(TOKEN));
    let server = MetricsServer::bind(config, Arc::new(metrics), None)
        .await
        .unwrap();
    let target = server.local_addr();
    tokio::spawn(server.serve(std::future::pending()));

    let prom = Prometheus::start(&[
        Job {
            name: "ferry-agent",
            target,
            bearer: Some(TOKEN),
        },
        Job {
            name: "ferry-noauth",
            target,
            bearer: None,
        },
    ])
    .await
    .unwrap();

    prom.wait_for(r#"up{job="ferry-agent"}"#, 1.0, WAIT)
        .await
        .unwrap();
    prom.wait_for(r#"up{job="ferry-noauth"}"#, 0.0, WAIT)
        .await
        .unwrap();
    let sent = r#"wireguard_sent_bytes_total{job="ferry-agent"}"#;
    let received = r#"wireguard_received_bytes_total{job="ferry-agent"}"#;
    let before_sent = prom.wait_for(sent, 0.0, WAIT).await.unwrap();
    let before_received = prom.query(received).await.unwrap().unwrap();

    // Two bursts, so the series really moves between scrapes.
    traffic.sent.fetch_add(1_000_000, Ordering::Relaxed);
    traffic.received.fetch_add(3_000_000, Ordering::Relaxed);
    prom.wait_for(sent, before_sent + 1_000_000.0, WAIT)
        .await
        .unwrap();
    traffic.sent.fetch_add(234_567, Ordering::Relaxed);
    traffic.received.fetch_add(654_321, Ordering::Relaxed);
    traffic.policy_drops.fetch_add(3, Ordering::Relaxed);
    fsync.record(Duration::from_millis(2));

    prom.wait_for(sent, before_sent + 1_234_567.0, WAIT)
        .await
        .unwrap();
    prom.wait_for(received, before_received + 3_654_321.0, WAIT)
        .await
        .unwrap();
    prom.wait_for(
        r#"ferry_packets_dropped_total{job="ferry-agent",reason="policy"}"#,
        3.0,
        WAIT,
    )
    .await
    .unwrap();
    prom.wait_for(
        r#"ferry_store_fsync_seconds_count{job="ferry-agent"}"#,
        1.0,
        WAIT,
    )
    .await
    .unwrap();
    // The counter history went 0 -> 1e6 -> 1234567 with no reset.
    let resets = prom
        .query(r#"resets(wireguard_sent_bytes_total{job="ferry-agent"}[5m])"#)
        .await
        .unwrap();
    assert_eq!(resets, Some(0.0));
    let rss = prom
        .query(r#"process_resident_memory_bytes{job="ferry-agent"}"#)
        .await
        .unwrap()
        .unwrap();
    assert!(rss > 1e6, "rss {rss}");
}
