//! HTTP endpoints: `/metrics` (OpenMetrics text), `/healthz`, optional `/status` (JSON).
//!
//! With a bearer token configured, `/metrics` and `/status` answer 401 unless the request
//! carries `Authorization: Bearer <token>`; `/healthz` stays open (it says only "ok").
//!
//! Served by hyper's HTTP/1 server directly (no axum/tower: the agent already links hyper for
//! its receipt submitter, so this adds little to the router binary). hyper does the protocol;
//! this module only routes on path and method; [`crate::http1`] serves it. Connections are
//! capped ([`MAX_CONNECTIONS`]) and idle ones closed after [`HEADER_READ_TIMEOUT`].

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};

use crate::TelemetryError;
use crate::metrics::{Metrics, MetricsConfig};

/// Library default listen address. The agent passes its LAN address instead.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, DEFAULT_PORT));

/// Default metrics port (the LuCI status page GETs `http://127.0.0.1:9586/status`).
pub const DEFAULT_PORT: u16 = 9586;

/// OpenMetrics content type; Prometheus negotiates it.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Produces the `/status` JSON document (for the LuCI page). Called per request.
pub type StatusSource = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// A bearer token; never printed.
#[derive(Clone)]
pub struct BearerToken(String);

impl BearerToken {
    /// Wraps a token string (surrounding whitespace is trimmed).
    pub fn new(token: &str) -> Self {
        Self(token.trim().to_owned())
    }

    /// Reads a token file, refusing files readable by group or others.
    pub fn from_file(path: &Path) -> Result<Self, TelemetryError> {
        use std::os::unix::fs::PermissionsExt;
        let io_err = |source| TelemetryError::TokenFile {
            path: path.to_owned(),
            source,
        };
        let mode = std::fs::metadata(path)
            .map_err(io_err)?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(TelemetryError::TokenFileMode {
                path: path.to_owned(),
                mode,
            });
        }
        let token = Self::new(&std::fs::read_to_string(path).map_err(io_err)?);
        if token.0.is_empty() {
            return Err(TelemetryError::TokenEmpty {
                path: path.to_owned(),
            });
        }
        Ok(token)
    }

    fn matches(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let Some(given) = value.as_bytes().strip_prefix(b"Bearer ") else {
            return false;
        };
        constant_time_eq(given, self.0.as_bytes())
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen addresses (`127.0.0.1:0` in tests); every one serves the same endpoints.
    pub listen: Vec<SocketAddr>,
    /// Required bearer token, if any.
    pub token: Option<BearerToken>,
}

impl ServerConfig {
    /// No token, one address.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen: vec![listen],
            token: None,
        }
    }

    /// From the `[metrics]` table: `listen` (or `default_listen` when it is empty), token read
    /// from `token-file`.
    pub fn from_config(
        config: &MetricsConfig,
        default_listen: &[SocketAddr],
    ) -> Result<Self, TelemetryError> {
        let token = config
            .token_file
            .as_deref()
            .map(BearerToken::from_file)
            .transpose()?;
        let listen = if config.listen.is_empty() {
            default_listen.to_vec()
        } else {
            config.listen.clone()
        };
        Ok(Self { listen, token })
    }
}

/// At most this many connections are served at once per [`MetricsServer`]; further clients
/// wait in the kernel's accept backlog. Scrapers and the LuCI page need a handful; a router has
/// little RAM to spare for more.
pub const MAX_CONNECTIONS: usize = 64;

/// A connection that has not sent a complete request head this long after connecting (or after
/// its previous response, for keep-alive) is closed, so idle or slow-header clients cannot hold
/// the [`MAX_CONNECTIONS`] slots.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

type Body = Full<Bytes>;

/// A bound, not yet serving, metrics server.
pub struct MetricsServer {
    listeners: Vec<tokio::net::TcpListener>,
    state: Arc<AppState>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("listeners", &self.listeners)
            .field("status", &self.state.status.is_some())
            .field("token", &self.state.token)
            .finish_non_exhaustive()
    }
}

struct AppState {
    metrics: Arc<Metrics>,
    status: Option<StatusSource>,
    token: Option<BearerToken>,
}

impl MetricsServer {
    /// Binds every listen address (fails on the first that cannot be bound, or on none);
    /// serve with [`MetricsServer::serve`].
    pub async fn bind(
        config: ServerConfig,
        metrics: Arc<Metrics>,
        status: Option<StatusSource>,
    ) -> Result<Self, TelemetryError> {
        if config.listen.is_empty() {
            return Err(TelemetryError::NoListenAddress);
        }
        let mut listeners = Vec::with_capacity(config.listen.len());
        for &addr in &config.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| TelemetryError::Bind { addr, source })?;
            listeners.push(listener);
        }
        let state = Arc::new(AppState {
            metrics,
            status,
            token: config.token,
        });
        Ok(Self { listeners, state })
    }

    /// The first bound address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs()
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    }

    /// All bound addresses, in configuration order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Serves on every listener until `shutdown` completes (or one listener fails). On
    /// shutdown the listeners close at once; in-flight requests get a few seconds to finish.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), TelemetryError> {
        let state = self.state;
        let service = service_fn(move |req: Request<Incoming>| {
            let response = respond(&state, &req);
            async move { Ok::<_, Infallible>(response) }
        });
        crate::http1::serve("metrics server", self.listeners, LIMITS, service, shutdown)
            .await
            .map_err(TelemetryError::Serve)
    }
}

const LIMITS: crate::http1::Limits = crate::http1::Limits {
    max_connections: MAX_CONNECTIONS,
    header_read_timeout: HEADER_READ_TIMEOUT,
    max_buf_size: crate::http1::MAX_BUF_SIZE,
    drain_timeout: crate::http1::DRAIN_TIMEOUT,
};

/// Routes on path, then method: unknown paths are 404 (empty body); other methods than GET and
/// HEAD on a known path are 405 with `Allow: GET,HEAD`. hyper omits the body of HEAD replies.
fn respond(state: &AppState, req: &Request<Incoming>) -> Response<Body> {
    #[derive(Clone, Copy)]
    enum Endpoint {
        Metrics,
        Healthz,
        Status,
    }
    let endpoint = match req.uri().path() {
        "/metrics" => Endpoint::Metrics,
        "/healthz" => Endpoint::Healthz,
        "/status" => Endpoint::Status,
        _ => return reply(StatusCode::NOT_FOUND, None, Bytes::new()),
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, None, Bytes::new());
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
        return response;
    }
    match endpoint {
        Endpoint::Healthz => text(StatusCode::OK, "ok\n"),
        Endpoint::Metrics => metrics_response(state, req.headers()),
        Endpoint::Status => status_response(state, req.headers()),
    }
}

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

fn reply(status: StatusCode, content_type: Option<&'static str>, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    reply(
        status,
        Some(TEXT_PLAIN),
        Bytes::from_static(body.as_bytes()),
    )
}

fn unauthorized() -> Response<Body> {
    let mut response = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    state.token.as_ref().is_none_or(|t| t.matches(headers))
}

fn metrics_response(state: &AppState, headers: &HeaderMap) -> Response<Body> {
    if !authorized(state, headers) {
        return unauthorized();
    }
    match state.metrics.encode() {
        Ok(body) => reply(
            StatusCode::OK,
            Some(OPENMETRICS_CONTENT_TYPE),
            Bytes::from(body),
        ),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
    }
}

fn status_response(state: &AppState, headers: &HeaderMap) -> Response<Body> {
    if !authorized(state, headers) {
        return unauthorized();
    }
    let Some(status) = &state.status else {
        return text(StatusCode::NOT_FOUND, "no status source\n");
    };
    match serde_json::to_vec(&status()) {
        Ok(json) => reply(StatusCode::OK, Some("application/json"), Bytes::from(json)),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(TEXT_PLAIN),
            Bytes::from(e.to_string()),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn token_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = BearerToken::from_file(&path).unwrap_err();
        assert!(
            matches!(err, TelemetryError::TokenFileMode { mode: 0o644, .. }),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let token = BearerToken::from_file(&path).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(token.matches(&headers));
        assert_eq!(format!("{token:?}"), "BearerToken(..)");
    }

    #[test]
    fn empty_token_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  \n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            BearerToken::from_file(&path),
            Err(TelemetryError::TokenEmpty { .. })
        ));
    }

    #[test]
    fn wrong_or_missing_token_does_not_match() {
        let token = BearerToken::new("abc");
        let mut headers = HeaderMap::new();
        assert!(!token.matches(&headers));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abd"),
        );
        assert!(!token.matches(&headers));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(!token.matches(&headers));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert!(token.matches(&headers));
    }
}
