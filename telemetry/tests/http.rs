//! The metrics HTTP server, scraped over real loopback TCP.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_telemetry::server::{BearerToken, OPENMETRICS_CONTENT_TYPE};
use ferry_telemetry::{Metrics, MetricsConfig, MetricsServer, ServerConfig, Snapshot};
use support::{http_get, sample};

struct Running {
    addr: std::net::SocketAddr,
    sent: Arc<AtomicU64>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(token: Option<&str>, with_status: bool) -> Running {
    let sent = Arc::new(AtomicU64::new(0));
    let mut metrics = Metrics::new(&MetricsConfig::default());
    let source = sent.clone();
    metrics.register_agent(move || {
        let mut s = Snapshot::default();
        s.sent_bytes = source.load(Ordering::Relaxed);
        s.received_bytes = 2 * source.load(Ordering::Relaxed);
        s
    });
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config.token = token.map(BearerToken::new);
    let status: Option<ferry_telemetry::StatusSource> =
        with_status.then(|| Arc::new(|| serde_json::json!({"peers": 2, "healthy": true})) as _);
    let server = MetricsServer::bind(config, Arc::new(metrics), status)
        .await
        .unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        sent,
        _stop: stop,
    }
}

#[tokio::test]
async fn metrics_endpoint_serves_openmetrics_with_live_counter_values() {
    let srv = start(None, false).await;
    let first = http_get(srv.addr, "/metrics", None).await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.content_type, OPENMETRICS_CONTENT_TYPE);
    assert_eq!(sample(&first.body, "wireguard_sent_bytes_total"), Some(0.0));

    srv.sent.fetch_add(4242, Ordering::Relaxed);
    let second = http_get(srv.addr, "/metrics", None).await.unwrap();
    assert_eq!(
        sample(&second.body, "wireguard_sent_bytes_total"),
        Some(4242.0)
    );
    assert_eq!(
        sample(&second.body, "wireguard_received_bytes_total"),
        Some(8484.0)
    );
    assert!(sample(&second.body, "process_resident_memory_bytes").unwrap() > 0.0);
}

#[tokio::test]
async fn token_is_required_for_metrics_and_status_but_not_healthz() {
    let srv = start(Some("tok-123"), true).await;
    for path in ["/metrics", "/status"] {
        assert_eq!(
            http_get(srv.addr, path, None).await.unwrap().status,
            401,
            "{path}"
        );
        assert_eq!(
            http_get(srv.addr, path, Some("wrong"))
                .await
                .unwrap()
                .status,
            401,
            "{path}"
        );
        assert_eq!(
            http_get(srv.addr, path, Some("tok-123"))
                .await
                .unwrap()
                .status,
            200,
            "{path}"
        );
    }
    let health = http_get(srv.addr, "/healthz", None).await.unwrap();
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let unauth = http_get(srv.addr, "/metrics", None).await.unwrap();
    assert!(
        !unauth.body.contains("wireguard"),
        "401 must not leak metrics"
    );
}

#[tokio::test]
async fn status_hook_returns_json_and_is_404_without_a_source() {
    let with = start(None, true).await;
    let reply = http_get(with.addr, "/status", None).await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.content_type.starts_with("application/json"));
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(json["peers"], 2);

    let without = start(None, false).await;
    assert_eq!(
        http_get(without.addr, "/status", None)
            .await
            .unwrap()
            .status,
        404
    );
}

#[tokio::test]
async fn server_config_from_metrics_table_reads_listen_and_token_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics.token");
    std::fs::write(&token_file, "from-file\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let table = MetricsConfig {
        token_file: Some(token_file),
        ..MetricsConfig::default()
    };
    let config = ServerConfig::from_config(&table, &["127.0.0.1:0".parse().unwrap()]).unwrap();
    let server = MetricsServer::bind(config, Arc::new(Metrics::new(&table)), None)
        .await
        .unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve(std::future::pending()));
    assert_eq!(http_get(addr, "/metrics", None).await.unwrap().status, 401);
    assert_eq!(
        http_get(addr, "/metrics", Some("from-file"))
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test]
async fn binding_a_busy_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = MetricsServer::bind(
        ServerConfig::new(addr),
        Arc::new(Metrics::new(&MetricsConfig::default())),
        None,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn every_listen_address_serves_and_shutdown_stops_all() {
    let config = ServerConfig {
        listen: vec![
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.2:0".parse().unwrap(),
        ],
        token: None,
    };
    let server = MetricsServer::bind(
        config,
        Arc::new(Metrics::new(&MetricsConfig::default())),
        None,
    )
    .await
    .unwrap();
    let addrs = server.local_addrs();
    assert_eq!(addrs.len(), 2);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    for addr in &addrs {
        assert_eq!(
            http_get(*addr, "/healthz", None).await.unwrap().status,
            200,
            "{addr}"
        );
    }
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
    for addr in &addrs {
        assert!(
            http_get(*addr, "/healthz", None).await.is_err(),
            "{addr} still serving"
        );
    }
}

#[tokio::test]
async fn empty_listen_list_is_an_error() {
    let config = ServerConfig {
        listen: vec![],
        token: None,
    };
    let err = MetricsServer::bind(
        config,
        Arc::new(Metrics::new(&MetricsConfig::default())),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ferry_telemetry::TelemetryError::NoListenAddress),
        "{err}"
    );
}
