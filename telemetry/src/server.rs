//! HTTP endpoints: `/metrics` (OpenMetrics text), `/healthz`, optional `/status` (JSON).
//!
//! With a bearer token configured, `/metrics` and `/status` answer 401 unless the request
//! carries `Authorization: Bearer <token>`; `/healthz` stays open (it says only "ok").

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

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

/// A bound, not yet serving, metrics server.
#[derive(Debug)]
pub struct MetricsServer {
    listeners: Vec<tokio::net::TcpListener>,
    router: Router,
}

#[derive(Clone)]
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
        let state = AppState {
            metrics,
            status,
            token: config.token,
        };
        let router = Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/status", get(status_handler))
            .with_state(state);
        Ok(Self { listeners, router })
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

    /// Serves on every listener until `shutdown` completes (or one listener fails).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), TelemetryError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut servers = tokio::task::JoinSet::new();
        for listener in self.listeners {
            let addr = listener.local_addr().ok();
            tracing::info!(addr = ?addr, "metrics server listening");
            let mut stop = stop_rx.clone();
            let router = self.router.clone();
            servers.spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|stopped| *stopped).await;
                    })
                    .await
            });
        }
        let first_exit = tokio::select! {
            () = shutdown => None,
            exit = servers.join_next() => exit,
        };
        let _ = stop_tx.send(true);
        let mut result = flatten(first_exit);
        while let Some(exit) = servers.join_next().await {
            result = result.and(flatten(Some(exit)));
        }
        result
    }
}

fn flatten(
    exit: Option<Result<std::io::Result<()>, tokio::task::JoinError>>,
) -> Result<(), TelemetryError> {
    match exit {
        None | Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(e))) => Err(TelemetryError::Serve(e)),
        Some(Err(join)) => Err(TelemetryError::Serve(std::io::Error::other(join))),
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
        "unauthorized\n",
    )
        .into_response()
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    state.token.as_ref().is_none_or(|t| t.matches(headers))
}

async fn metrics_handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    match state.metrics.encode() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
            )],
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response(),
    }
}

async fn status_handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    match &state.status {
        Some(status) => axum::Json(status()).into_response(),
        None => (StatusCode::NOT_FOUND, "no status source\n").into_response(),
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
