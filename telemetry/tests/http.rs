//! The metrics HTTP server, scraped over real loopback TCP.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use ferry_telemetry::server::{
    BearerToken, HEADER_READ_TIMEOUT, MAX_CONNECTIONS, OPENMETRICS_CONTENT_TYPE,
};
use ferry_telemetry::{Metrics, MetricsConfig, MetricsServer, ServerConfig, Snapshot};
use hyper::Method;
use support::{http_get, http_request, sample};
use tokio::io::AsyncReadExt;

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

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_405_with_allow() {
    let srv = start(None, true).await;
    for path in ["/", "/nope", "/metrics/", "/healthz/x", "/Metrics"] {
        let reply = http_get(srv.addr, path, None).await.unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (404, ""), "{path}");
    }
    for (method, path) in [
        (Method::POST, "/metrics"),
        (Method::PUT, "/status"),
        (Method::DELETE, "/healthz"),
        (Method::OPTIONS, "/metrics"),
    ] {
        let reply = http_request(srv.addr, method.clone(), path, &[])
            .await
            .unwrap();
        assert_eq!(reply.status, 405, "{method} {path}");
        assert_eq!(reply.headers["allow"], "GET,HEAD", "{method} {path}");
        assert!(reply.body.is_empty(), "{method} {path}");
    }
    let with_query = http_get(srv.addr, "/healthz?verbose=1", None)
        .await
        .unwrap();
    assert_eq!((with_query.status, with_query.body.as_str()), (200, "ok\n"));
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let srv = start(None, true).await;
    let get = http_get(srv.addr, "/healthz", None).await.unwrap();
    let head = http_request(srv.addr, Method::HEAD, "/healthz", &[])
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.content_type, get.content_type);
    assert_eq!(head.content_type, "text/plain; charset=utf-8");
    assert_eq!(head.headers["content-length"], "3");
    assert!(head.body.is_empty());
    let metrics = http_request(srv.addr, Method::HEAD, "/metrics", &[])
        .await
        .unwrap();
    assert_eq!(
        (
            metrics.status,
            metrics.content_type.as_str(),
            metrics.body.as_str()
        ),
        (200, OPENMETRICS_CONTENT_TYPE, "")
    );
}

#[tokio::test]
async fn unauthorized_reply_names_the_bearer_scheme() {
    let srv = start(Some("tok-123"), true).await;
    for path in ["/metrics", "/status"] {
        let reply = http_get(srv.addr, path, Some("nope")).await.unwrap();
        assert_eq!(reply.status, 401, "{path}");
        assert_eq!(reply.headers["www-authenticate"], "Bearer", "{path}");
        assert_eq!(reply.body, "unauthorized\n", "{path}");
    }
    // Auth is checked before the method is served, but after routing.
    let head = http_request(srv.addr, Method::HEAD, "/metrics", &[])
        .await
        .unwrap();
    assert_eq!(head.status, 401);
    assert_eq!(http_get(srv.addr, "/nope", None).await.unwrap().status, 404);
}

#[tokio::test]
async fn oversized_request_head_is_refused() {
    let srv = start(None, false).await;
    let big = "x".repeat(32 * 1024);
    let reply = http_request(srv.addr, Method::GET, "/healthz", &[("x-padding", &big)])
        .await
        .unwrap();
    assert_eq!(reply.status, 431);
    assert_eq!(
        http_get(srv.addr, "/healthz", None).await.unwrap().status,
        200
    );
}

#[tokio::test]
async fn idle_connections_hold_slots_only_until_the_header_timeout() {
    let srv = start(None, false).await;
    // Fill every slot with connections that never send a request.
    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        idle.push(tokio::net::TcpStream::connect(srv.addr).await.unwrap());
    }
    let addr = srv.addr;
    let mut probe = tokio::spawn(async move { http_get(addr, "/healthz", None).await });
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut probe)
            .await
            .is_err(),
        "a request beyond the connection cap was served at once"
    );
    // The server closes the idle connections after the header timeout, freeing the slots.
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(
        HEADER_READ_TIMEOUT + Duration::from_secs(5),
        idle[0].read(&mut buf),
    )
    .await
    .expect("idle connection closed by the server");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    let reply = tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .expect("probe served once slots freed")
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, 200);
}
