//! The open-market endpoints: self-serve registration with proof of possession
//! (`POST /v1/keys` with a signature), relay announces (`POST /v1/directory/announce`) and
//! the listing (`GET /v1/relays`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_ledger_api as api;
use ferry_receipts::Signature;
use ferry_telemetry::http1::PeerAddr;
use ring::signature::{ED25519, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiJson, AppState, check_admin, parse_hex, parse_key};
use crate::directory::{AnnounceError, DirectoryError, RefusalError};
use crate::domain::Role;
use crate::store::{RelayFilter, Store};

/// Who may register a key without the admin token.
#[derive(Debug, Clone)]
pub struct JoinPolicy {
    /// A key may register itself with a request it signed (proof of possession).
    pub self_registration: bool,
    /// Self-registrations accepted per source address per hour.
    pub per_source_per_hour: u32,
    windows: Arc<Mutex<HashMap<IpAddr, (u64, u32)>>>,
}

impl Default for JoinPolicy {
    fn default() -> Self {
        Self::new(true, 10)
    }
}

/// Sources tracked at once; beyond this the table starts over (a flood from many addresses
/// then gets at most one more hour's allowance each).
const MAX_SOURCES: usize = 65_536;

impl JoinPolicy {
    /// A policy.
    pub fn new(self_registration: bool, per_source_per_hour: u32) -> Self {
        Self {
            self_registration,
            per_source_per_hour,
            windows: Arc::default(),
        }
    }

    /// Takes one registration from `src`'s hourly allowance at `now`.
    fn allow(&self, src: IpAddr, now: u64) -> bool {
        let Ok(mut w) = self.windows.lock() else {
            return false;
        };
        if w.len() >= MAX_SOURCES && !w.contains_key(&src) {
            w.retain(|_, (start, _)| now.saturating_sub(*start) < 3600);
            if w.len() >= MAX_SOURCES {
                w.clear();
            }
        }
        let e = w.entry(src).or_insert((now, 0));
        if now.saturating_sub(e.0) >= 3600 {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= self.per_source_per_hour
    }
}

/// A /64 (IPv6) or the address (IPv4): one household or host, for the rate limit.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

pub(super) async fn register<S: Store>(
    State(st): State<AppState<S>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<api::RegisterRequest>,
) -> Result<Response, ApiError> {
    let key = parse_key(&body.public_key)?;
    let role = Role::parse(&body.role)
        .ok_or_else(|| ApiError::bad("role must be \"relay\" or \"client\""))?;
    let now = (st.clock)();
    match (&body.signature, body.at) {
        (Some(sig), Some(at)) => {
            if !st.join.self_registration {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "self_registration_disabled",
                    "this ledger registers keys only with the admin token",
                ));
            }
            let sig = Signature(parse_hex("signature", sig)?);
            let p = st.ledger.params();
            let mut msg = api::signing::REGISTER_DOMAIN.to_vec();
            msg.extend(api::signing::register_bytes(
                p.network_id.as_bytes(),
                key.as_bytes(),
                role_byte(role),
                at,
            ));
            let valid = UnparsedPublicKey::new(&ED25519, key.as_bytes())
                .verify(&msg, sig.as_bytes())
                .is_ok();
            if !valid {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "bad_signature",
                    "the registration is not signed by the key it registers (for this network)",
                ));
            }
            if at.abs_diff(now) > p.request_skew_secs {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "stale_request",
                    format!(
                        "signed at {at}, ledger time {now}: more than {} s apart; check the clock",
                        p.request_skew_secs
                    ),
                ));
            }
            // Already registered: nothing to limit.
            if !st
                .ledger
                .store()
                .has_key(key, role)
                .await
                .map_err(crate::LedgerError::from)?
            {
                let src = peer.map_or(IpAddr::from([0, 0, 0, 0]), |Extension(PeerAddr(a))| a.ip());
                if !st.join.allow(source_of(src), now) {
                    return Err(rate_limited(&st.join));
                }
            }
        }
        (None, None) if st.open_registration => {}
        (None, None) => check_admin(&st, &headers)?,
        _ => {
            return Err(ApiError::bad(
                "a self-registration needs both at and signature",
            ));
        }
    }
    let created = st.ledger.register(key, role, now).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = json!({"public_key": key.to_hex(), "role": role.as_str(), "created": created});
    Ok((status, Json(body)).into_response())
}

fn rate_limited(join: &JoinPolicy) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "registration_rate_limited",
        format!(
            "at most {} self-registrations per source address per hour",
            join.per_source_per_hour
        ),
    )
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Relay => api::signing::ROLE_RELAY,
        Role::Client => api::signing::ROLE_CLIENT,
    }
}

fn directory_disabled() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "directory_disabled",
        "this ledger runs no relay directory ([directory] enabled = false)",
    )
}

impl From<DirectoryError> for ApiError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::Announce(a) => {
                let status = match a {
                    AnnounceError::UnknownRelay => StatusCode::FORBIDDEN,
                    AnnounceError::TooSoon { .. } => StatusCode::TOO_MANY_REQUESTS,
                    _ => StatusCode::BAD_REQUEST,
                };
                Self::new(status, a.code(), a.to_string())
            }
            DirectoryError::Refusal(r) => {
                let status = match r {
                    RefusalError::UnknownKey | RefusalError::NotPaid => StatusCode::FORBIDDEN,
                    _ => StatusCode::BAD_REQUEST,
                };
                Self::new(status, r.code(), r.to_string())
            }
            DirectoryError::Store(s) => crate::LedgerError::from(s).into(),
        }
    }
}

/// `POST /v1/directory/refusals`.
pub(super) async fn refuse<S: Store>(
    State(st): State<AppState<S>>,
    ApiJson(body): ApiJson<api::RefusalRequest>,
) -> Result<Json<api::RefusalResponse>, ApiError> {
    let dir = st.directory.clone().ok_or_else(directory_disabled)?;
    let bytes = B64
        .decode(body.refusal.as_bytes())
        .map_err(|_| ApiError::bad("refusal must be standard base64"))?;
    let recorded = dir.refuse(&bytes, (st.clock)()).await?;
    Ok(Json(api::RefusalResponse { recorded }))
}

pub(super) async fn announce<S: Store>(
    State(st): State<AppState<S>>,
    peer: Option<Extension<PeerAddr>>,
    ApiJson(body): ApiJson<api::AnnounceRequest>,
) -> Result<Json<api::AnnounceResponse>, ApiError> {
    let dir = st.directory.clone().ok_or_else(directory_disabled)?;
    let bytes = B64
        .decode(body.descriptor.as_bytes())
        .map_err(|_| ApiError::bad("descriptor must be standard base64"))?;
    let seen = peer.map_or(IpAddr::from([0, 0, 0, 0]), |Extension(PeerAddr(a))| a.ip());
    let now = (st.clock)();
    let nonce = super::random_nonce()?;
    let a = match dir.announce(&bytes, seen, nonce, now).await {
        // `UnknownRelay` comes only after the descriptor verified, and it is signed by the relay
        // key: proof of possession. With self-registration on, a relay's first announce
        // registers it (under the same per-source limit) and is taken again.
        Err(DirectoryError::Announce(AnnounceError::UnknownRelay)) if st.join.self_registration => {
            let relay = ferry_receipts::RelayDescriptor::decode(&bytes)
                .map_err(|e| ApiError::bad(format!("malformed descriptor: {e}")))?
                .relay_key;
            if !st.join.allow(source_of(seen), now) {
                return Err(rate_limited(&st.join));
            }
            st.ledger.register(relay, Role::Relay, now).await?;
            tracing::info!(relay = %relay, "relay registered by its first announce");
            dir.announce(&bytes, seen, nonce, now).await?
        }
        r => r?,
    };
    Ok(Json(api::AnnounceResponse {
        listed: a.listed,
        seen_from: a.seen_from.to_string(),
        reachable_v4: a.annotation.reachable & ferry_receipts::REACHABLE_V4 != 0,
        reachable_v6: a.annotation.reachable & ferry_receipts::REACHABLE_V6 != 0,
        probe_rtt_micros: a
            .rtt
            .map(|r| u64::try_from(r.as_micros()).unwrap_or(u64::MAX)),
        annotation: B64.encode(a.annotation.encode()),
        diagnosis: a
            .findings
            .iter()
            .map(|f| api::Diagnosis {
                code: f.code().to_owned(),
                message: f.message(),
            })
            .collect(),
    }))
}

/// `GET /v1/relays` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    country: Option<String>,
    max_price: Option<u64>,
    min_score: Option<u16>,
    ipv6: Option<bool>,
    limit: Option<usize>,
}

pub(super) async fn list<S: Store>(
    State(st): State<AppState<S>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<api::RelayList>, ApiError> {
    let dir = st.directory.clone().ok_or_else(directory_disabled)?;
    let country = match q.country {
        Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Some(c.to_ascii_uppercase())
        }
        Some(c) => {
            return Err(ApiError::bad(format!(
                "country must be a two-letter ISO 3166 code, got {c:?}"
            )));
        }
        None => None,
    };
    let filter = RelayFilter {
        country,
        max_price: q.max_price,
        min_score: q.min_score,
        ipv6: q.ipv6,
        limit: q.limit.unwrap_or(100),
    };
    let now = (st.clock)();
    let rows = dir.list(filter, now).await?;
    Ok(Json(api::RelayList {
        generated_at: now,
        relays: rows
            .into_iter()
            .map(|(d, a)| api::RelayListing {
                descriptor: B64.encode(d),
                annotation: B64.encode(a),
            })
            .collect(),
    }))
}
