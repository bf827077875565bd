//! HTTP JSON API (axum). Binary values travel as lower-case hex (keys, ids, hashes) or
//! standard base64 (whole encodings: vouchers, co-signed receipts). Every error is
//! `{"error": {"code": "...", "message": "..."}}` with a 4xx/5xx status. The endpoint
//! reference with curl examples is docs/ledger-api.md.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_ledger_api as api;
use ferry_receipts::{PublicKey, SessionId, Signature, VoucherId};
use ring::digest::{SHA256, digest};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

mod market;

pub use market::JoinPolicy;

use crate::directory::Directory;
use crate::domain::Outcome;
use crate::service::{ItemError, Ledger, LedgerError, SubmitResult, VoucherRequest};
use crate::store::{Store, StoreError};

/// Supplies unix seconds to handlers (tests pin it).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

/// Shared handler state.
pub struct AppState<S> {
    /// The ledger.
    pub ledger: Arc<Ledger<S>>,
    /// SHA-256 of the admin bearer token; `None` disables admin endpoints.
    pub admin_token_hash: Option<[u8; 32]>,
    /// Whether anyone may register keys (otherwise admin only).
    pub open_registration: bool,
    /// Request body limit in bytes.
    pub max_body_bytes: usize,
    /// Time source.
    pub clock: Clock,
    /// Self-serve registration.
    pub join: JoinPolicy,
    /// The relay directory (`None`: its endpoints answer 404 `directory_disabled`).
    pub directory: Option<Arc<Directory<S>>>,
}

impl<S> Clone for AppState<S> {
    fn clone(&self) -> Self {
        Self {
            ledger: self.ledger.clone(),
            admin_token_hash: self.admin_token_hash,
            open_registration: self.open_registration,
            max_body_bytes: self.max_body_bytes,
            clock: self.clock.clone(),
            join: self.join.clone(),
            directory: self.directory.clone(),
        }
    }
}

/// Hashes an admin token for [`AppState::admin_token_hash`].
pub fn hash_token(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

/// Builds the router.
pub fn router<S: Store>(state: AppState<S>) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/v1/info", get(info::<S>))
        .route("/v1/keys", post(market::register::<S>))
        .route("/v1/directory/announce", post(market::announce::<S>))
        .route("/v1/directory/refusals", post(market::refuse::<S>))
        .route("/v1/relays", get(market::list::<S>))
        .route("/v1/clients/{key}", get(client::<S>))
        .route("/v1/clients/{key}/credit", post(credit::<S>))
        .route("/v1/vouchers", post(issue::<S>))
        .route("/v1/vouchers/{id}", get(voucher::<S>))
        .route("/v1/vouchers/{id}/close", post(close_voucher::<S>))
        .route("/v1/receipts", post(submit::<S>))
        .route("/v1/receipts/batch", post(submit_batch::<S>))
        .route("/v1/relays/{key}", get(relay::<S>))
        .route("/v1/epochs", get(epochs::<S>))
        .route("/v1/epochs/{epoch}", get(epoch::<S>))
        .route("/v1/proofs/{relay}/{session}/{seq}", get(proof::<S>))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// How [`serve`] bounds connections and requests.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connection cap, head/idle timeout and head size (the shared hyper accept loop).
    pub connections: ferry_telemetry::http1::Limits,
    /// A request (body read and handler) must finish within this long, else 408.
    pub request_timeout: std::time::Duration,
}

impl ServeLimits {
    /// Limits from the configured values (16 KiB heads, 5 s drain after shutdown).
    pub fn new(
        max_connections: usize,
        header_timeout_secs: u64,
        request_timeout_secs: u64,
    ) -> Self {
        use std::time::Duration;
        Self {
            connections: ferry_telemetry::http1::Limits {
                max_connections,
                header_read_timeout: Duration::from_secs(header_timeout_secs),
                max_buf_size: ferry_telemetry::http1::MAX_BUF_SIZE,
                drain_timeout: ferry_telemetry::http1::DRAIN_TIMEOUT,
            },
            request_timeout: Duration::from_secs(request_timeout_secs),
        }
    }
}

/// Serves `app` on `listeners` with `limits` until `shutdown` completes: at most
/// `max_connections` at once, slow or idle request heads closed after the header timeout, and
/// each request answered (or timed out with 408 `request_timeout`) within the request timeout,
/// so slow clients cannot starve the others.
pub async fn serve(
    listeners: Vec<tokio::net::TcpListener>,
    limits: ServeLimits,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use tower::ServiceExt as _;
    let timeout = limits.request_timeout;
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move {
            let response = match tokio::time::timeout(timeout, app.oneshot(req)).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!("request not completed within {} s", timeout.as_secs()),
                )
                .into_response(),
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    ferry_telemetry::http1::serve("ledger", listeners, limits.connections, service, shutdown).await
}

/// A JSON error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = api::ErrorBody {
            error: api::ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<&ItemError> for StatusCode {
    fn from(e: &ItemError) -> Self {
        match e.code() {
            "malformed_receipt" => Self::BAD_REQUEST,
            "unknown_relay" | "unknown_client" | "unknown_voucher" => Self::FORBIDDEN,
            "session_conflict" => Self::CONFLICT,
            _ => Self::UNPROCESSABLE_ENTITY,
        }
    }
}

impl From<&LedgerError> for StatusCode {
    fn from(e: &LedgerError) -> Self {
        match e {
            LedgerError::BadRequest(_) => Self::BAD_REQUEST,
            LedgerError::Unauthorized(_) => Self::UNAUTHORIZED,
            LedgerError::NotFound(_) => Self::NOT_FOUND,
            LedgerError::InsufficientFunds { .. } => Self::PAYMENT_REQUIRED,
            LedgerError::Receipt(e) => e.into(),
            LedgerError::Store(StoreError::Contention) => Self::SERVICE_UNAVAILABLE,
            _ => Self::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        let status = StatusCode::from(&e);
        let code = match &e {
            LedgerError::BadRequest(_) => "bad_request",
            LedgerError::Unauthorized(_) => "unauthorized",
            LedgerError::NotFound("client") => "unknown_client",
            LedgerError::NotFound("relay") => "unknown_relay",
            LedgerError::NotFound(_) => "not_found",
            LedgerError::InsufficientFunds { .. } => "insufficient_funds",
            LedgerError::Receipt(e) => e.code(),
            LedgerError::Store(StoreError::Contention) => "busy",
            _ => "internal",
        };
        if status.is_server_error() {
            tracing::error!(
                error = &e as &(dyn std::error::Error + 'static),
                "request failed"
            );
        }
        Self::new(status, code, e.to_string())
    }
}

/// `Json<T>` whose rejections are our JSON errors (400 malformed, 413 too large, 415).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, St: Send + Sync> FromRequest<St> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &St) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rej) => Err(json_rejection(&rej)),
        }
    }
}

fn json_rejection(rej: &JsonRejection) -> ApiError {
    let status = rej.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "malformed_json",
    };
    let status = if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiError::new(status, code, rej.body_text())
}

fn parse_hex<const N: usize>(what: &str, s: &str) -> Result<[u8; N], ApiError> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out)
        .map_err(|_| ApiError::bad(format!("{what} must be {} hex characters", N * 2)))?;
    Ok(out)
}

fn parse_key(s: &str) -> Result<PublicKey, ApiError> {
    parse_hex("public key", s).map(PublicKey)
}

fn check_admin<S>(st: &AppState<S>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = st.admin_token_hash else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "no admin token is configured on this ledger",
        ));
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Comparing digests keeps the comparison's timing independent of the token.
    match token {
        Some(t) if hash_token(t.trim()) == expected => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong admin bearer token",
        )),
    }
}

fn is_admin<S>(st: &AppState<S>, headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION) && check_admin(st, headers).is_ok()
}

async fn info<S: Store>(State(st): State<AppState<S>>) -> Json<api::Info> {
    let p = st.ledger.params();
    Json(api::Info {
        network_id: p.network_id.to_hex(),
        ledger_key: st.ledger.public_key().to_hex(),
        epoch_seconds: p.epoch_secs,
        current_epoch: st.ledger.epoch_of((st.clock)()),
        price_micros_per_gib: p.price_micros_per_gib,
        voucher_ttl_seconds: p.voucher_ttl_secs,
        max_batch: p.max_batch as u64,
        max_body_bytes: st.max_body_bytes as u64,
        open_registration: st.open_registration,
        self_registration: st.join.self_registration,
        min_price_micros_per_gib: st
            .directory
            .as_ref()
            .map_or(0, |d| d.params().min_price_micros_per_gib),
        max_price_micros_per_gib: st
            .directory
            .as_ref()
            .map_or(0, |d| d.params().max_price_micros_per_gib),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditBody {
    amount_micros: u64,
}

async fn credit<S: Store>(
    State(st): State<AppState<S>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreditBody>,
) -> Result<Json<Value>, ApiError> {
    check_admin(&st, &headers)?;
    let key = parse_key(&key)?;
    let balance = st.ledger.credit(key, body.amount_micros).await?;
    Ok(Json(
        json!({"client_key": key.to_hex(), "balance_micros": balance}),
    ))
}

/// `?at=<unix>&sig=<hex>`: the client's signature over its own account read.
#[derive(Debug, Deserialize)]
struct AccountQuery {
    at: Option<u64>,
    sig: Option<String>,
}

async fn client<S: Store>(
    State(st): State<AppState<S>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<AccountQuery>,
) -> Result<Json<api::ClientAccount>, ApiError> {
    let key = parse_key(&key)?;
    let a = match (q.at, &q.sig) {
        (Some(at), Some(sig)) => {
            let sig = Signature(parse_hex("sig", sig)?);
            st.ledger.client_signed(key, at, &sig, (st.clock)()).await?
        }
        (None, None) if is_admin(&st, &headers) => st.ledger.client(key).await?,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "signature_required",
                "a client's account is shown only to that client (?at=<unix>&sig=<hex>, \
                 signed by its identity key: `ferry balance`) or with the admin token",
            ));
        }
    };
    Ok(Json(api::ClientAccount {
        client_key: key.to_hex(),
        balance_micros: a.balance_micros,
        deposited_micros: a.deposited_micros,
        spent_micros: a.spent_micros,
        vouchers: a.vouchers,
        budget_micros: a.budget_micros,
        used_micros: a.used_micros,
    }))
}

async fn issue<S: Store>(
    State(st): State<AppState<S>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<api::VoucherRequest>,
) -> Result<Response, ApiError> {
    let client_key = parse_key(&body.client_key)?;
    let now = (st.clock)();
    let issued = match (&body.signature, body.requested_at, &body.nonce) {
        (Some(sig), Some(at), Some(nonce)) => {
            let Some(max_price) = body.max_price_micros_per_gib else {
                return Err(ApiError::bad(
                    "a signed request must state max_price_micros_per_gib",
                ));
            };
            let req = VoucherRequest {
                client_key,
                budget_micros: body.budget_micros,
                max_price_micros_per_gib: max_price,
                nonce: parse_hex("nonce", nonce)?,
                requested_at: at,
                signature: Signature(parse_hex("signature", sig)?),
            };
            st.ledger.issue_signed(&req, now).await?
        }
        (None, None, nonce) if is_admin(&st, &headers) => {
            let nonce = match nonce {
                Some(n) => parse_hex("nonce", n)?,
                None => random_nonce()?,
            };
            let max_price = body
                .max_price_micros_per_gib
                .unwrap_or(st.ledger.params().price_micros_per_gib);
            st.ledger
                .issue(client_key, body.budget_micros, max_price, nonce, now)
                .await?
        }
        (None, None, _) => {
            check_admin(&st, &headers)?;
            return Err(ApiError::bad(
                "signature, nonce and requested_at are required",
            ));
        }
        _ => {
            return Err(ApiError::bad(
                "a signed request needs signature, nonce and requested_at together",
            ));
        }
    };
    let v = &issued.voucher;
    let status = if issued.balance_micros.is_some() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = api::IssuedVoucher {
        voucher: B64.encode(v.encode()),
        voucher_id: v.id().to_hex(),
        client_key: v.client_key.to_hex(),
        budget_micros: v.budget_micros,
        max_price_micros_per_gib: v.max_price_micros_per_gib,
        issued_at: v.issued_at,
        expires_at: v.expires_at,
        cost_micros: issued.cost_micros,
        balance_micros: issued.balance_micros,
        already_issued: issued.balance_micros.is_none(),
    };
    Ok((status, Json(body)).into_response())
}

fn random_nonce() -> Result<[u8; 16], ApiError> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut n = [0u8; 16];
    SystemRandom::new().fill(&mut n).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "no randomness",
        )
    })?;
    Ok(n)
}

async fn voucher<S: Store>(
    State(st): State<AppState<S>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = VoucherId(parse_hex("voucher id", &id)?);
    let v = st.ledger.voucher(id).await?;
    Ok(Json(json!({
        "voucher": B64.encode(&v.encoded),
        "voucher_id": id.to_hex(),
        "client_key": v.client_key.to_hex(),
        "budget_micros": v.budget_micros,
        "used_micros": v.used_micros,
        "max_price_micros_per_gib": v.max_price_micros_per_gib,
        "issued_at": v.issued_at,
        "expires_at": v.expires_at,
        "cost_micros": v.cost_micros,
    })))
}

async fn close_voucher<S: Store>(
    State(st): State<AppState<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_admin(&st, &headers)?;
    let id = VoucherId(parse_hex("voucher id", &id)?);
    let c = st.ledger.close_voucher(id, (st.clock)()).await?;
    Ok(Json(json!({
        "voucher_id": id.to_hex(),
        "used_micros": c.used_micros,
        "refunded_micros": c.refunded_micros,
        "already_closed": c.already_closed,
    })))
}

fn outcome_json(o: &Outcome) -> api::ItemResult {
    match *o {
        Outcome::Advanced {
            epoch,
            credited_bytes,
            clamped,
        } => api::ItemResult::Advanced {
            epoch,
            credited_bytes,
            clamped,
        },
        Outcome::Duplicate => api::ItemResult::Duplicate { credited_bytes: 0 },
        Outcome::Stale => api::ItemResult::Stale { credited_bytes: 0 },
    }
}

fn decode_b64(s: &str) -> Vec<u8> {
    // An undecodable string becomes an empty encoding, refused as malformed per item.
    B64.decode(s).unwrap_or_default()
}

async fn submit<S: Store>(
    State(st): State<AppState<S>>,
    ApiJson(body): ApiJson<api::SubmitRequest>,
) -> Result<Json<api::ItemResult>, ApiError> {
    let bytes = B64.decode(&body.receipt).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_receipt",
            "receipt is not base64",
        )
    })?;
    let o = st.ledger.submit_one(bytes, (st.clock)()).await?;
    Ok(Json(outcome_json(&o)))
}

async fn submit_batch<S: Store>(
    State(st): State<AppState<S>>,
    ApiJson(body): ApiJson<api::BatchRequest>,
) -> Result<Json<api::BatchResponse>, ApiError> {
    if body.receipts.is_empty() {
        return Err(ApiError::bad("receipts must not be empty"));
    }
    let encoded = body.receipts.iter().map(|s| decode_b64(s)).collect();
    let results = st.ledger.submit(encoded, (st.clock)()).await?;
    let mut counts = [0u64; 4];
    let items: Vec<api::ItemResult> = results
        .iter()
        .map(|r: &SubmitResult| match r {
            Ok(o) => {
                counts[match o {
                    Outcome::Advanced { .. } => 0,
                    Outcome::Duplicate => 1,
                    Outcome::Stale => 2,
                }] += 1;
                outcome_json(o)
            }
            Err(e) => {
                counts[3] += 1;
                api::ItemResult::Rejected {
                    code: e.code().to_owned(),
                    message: e.to_string(),
                }
            }
        })
        .collect();
    Ok(Json(api::BatchResponse {
        advanced: counts[0],
        duplicate: counts[1],
        stale: counts[2],
        rejected: counts[3],
        results: items,
    }))
}

async fn relay<S: Store>(
    State(st): State<AppState<S>>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let key = parse_key(&key)?;
    let e = st.ledger.relay(key).await?;
    Ok(Json(json!({
        "relay_key": key.to_hex(),
        "sessions": e.sessions,
        "receipts": e.receipts,
        "credited_bytes": e.credited_bytes,
        "earned_micros": e.earned_micros,
        "clamped_sessions": e.clamped_sessions,
    })))
}

async fn epochs<S: Store>(State(st): State<AppState<S>>) -> Result<Json<Value>, ApiError> {
    let list = st.ledger.epochs().await?;
    let items: Vec<Value> = list
        .iter()
        .map(|(e, n)| json!({"epoch": e, "receipts": n}))
        .collect();
    Ok(Json(json!({
        "epoch_seconds": st.ledger.params().epoch_secs,
        "current_epoch": st.ledger.epoch_of((st.clock)()),
        "epochs": items,
    })))
}

async fn epoch<S: Store>(
    State(st): State<AppState<S>>,
    Path(epoch): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let epoch: u64 = epoch
        .parse()
        .map_err(|_| ApiError::bad("epoch must be a non-negative integer"))?;
    let r = st.ledger.epoch_report(epoch, (st.clock)()).await?;
    let relays: Vec<Value> = r
        .relays
        .iter()
        .map(|x| {
            json!({"relay_key": x.relay_key.to_hex(), "receipts": x.receipts,
                   "credited_bytes": x.credited_bytes, "earned_micros": x.earned_micros})
        })
        .collect();
    Ok(Json(json!({
        "epoch": r.epoch, "start": r.start, "end": r.end, "closed": r.closed,
        "receipts": r.receipts, "merkle_root": hex::encode(r.root), "relays": relays,
    })))
}

async fn proof<S: Store>(
    State(st): State<AppState<S>>,
    Path((relay, session, seq)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let relay = parse_key(&relay)?;
    let session = SessionId(parse_hex("session id", &session)?);
    let seq: u64 = seq
        .parse()
        .map_err(|_| ApiError::bad("seq must be a non-negative integer"))?;
    let p = st.ledger.proof(relay, session, seq).await?;
    Ok(Json(json!({
        "epoch": p.epoch,
        "leaf_index": p.leaf_index,
        "leaf_count": p.leaf_count,
        "leaf_hash": hex::encode(p.leaf_hash),
        "path": p.path.iter().map(hex::encode).collect::<Vec<_>>(),
        "merkle_root": hex::encode(p.root),
        "receipt": B64.encode(&p.receipt),
    })))
}
