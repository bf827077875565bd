//! Client side of the ledger's open-market endpoints, shared by the agent (self-registration,
//! announces) and the client (self-registration, the relay list): typed requests and answers,
//! the ledger's refusals as [`MarketError::Refused`] with its code and words.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_ledger_api as api;
use ferry_receipts::{NetworkId, RelayDescriptor, SigningKey};

use crate::{LedgerClient, SubmitError};

/// Why a market request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MarketError {
    /// The ledger could not be reached or answered nonsense.
    #[error(transparent)]
    Transport(#[from] SubmitError),
    /// The ledger refused, with its reason.
    #[error("ledger refused (HTTP {status}, {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Stable code, e.g. `announce_too_soon`.
        code: String,
        /// The ledger's explanation.
        message: String,
    },
}

/// The role a key registers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sells bandwidth.
    Relay,
    /// Buys it.
    Client,
}

/// Registers `key` in `role` with a request it signs itself (proof of possession) at unix
/// time `at`; `Ok(true)` when it was new.
pub async fn register_self(
    ledger: &LedgerClient,
    network_id: &NetworkId,
    key: &SigningKey,
    role: Role,
    at: u64,
) -> Result<bool, MarketError> {
    let (name, byte) = match role {
        Role::Relay => ("relay", api::signing::ROLE_RELAY),
        Role::Client => ("client", api::signing::ROLE_CLIENT),
    };
    let pk = key.public_key();
    let sig = key.sign(
        api::signing::REGISTER_DOMAIN,
        &api::signing::register_bytes(network_id.as_bytes(), pk.as_bytes(), byte, at),
    );
    let body = api::RegisterRequest {
        public_key: pk.to_hex(),
        role: name.into(),
        at: Some(at),
        signature: Some(sig.to_hex()),
    };
    #[derive(serde::Deserialize)]
    struct Created {
        created: bool,
    }
    let c: Created = exchange(ledger, "POST", "/v1/keys", Some(json(&body)?)).await?;
    Ok(c.created)
}

/// Publishes `descriptor`; the answer says whether it is listed and why not.
pub async fn announce(
    ledger: &LedgerClient,
    descriptor: &RelayDescriptor,
) -> Result<api::AnnounceResponse, MarketError> {
    let body = api::AnnounceRequest {
        descriptor: B64.encode(descriptor.encode()),
    };
    exchange(ledger, "POST", "/v1/directory/announce", Some(json(&body)?)).await
}

/// `GET /v1/relays` with `query` (e.g. `country=DE&max_price=900000`), unverified: callers
/// decode and verify each listing.
pub async fn relays(ledger: &LedgerClient, query: &str) -> Result<api::RelayList, MarketError> {
    let path = if query.is_empty() {
        "/v1/relays".to_owned()
    } else {
        format!("/v1/relays?{query}")
    };
    exchange(ledger, "GET", &path, None).await
}

/// Reports a client's signed refusal of a relay receipt (`POST /v1/directory/refusals`);
/// `Ok(true)` when it was new.
pub async fn report_refusal(
    ledger: &LedgerClient,
    r: &ferry_receipts::ReceiptRefusal,
) -> Result<bool, MarketError> {
    let body = json(&api::RefusalRequest {
        refusal: B64.encode(r.encode()),
    })?;
    let a: api::RefusalResponse =
        exchange(ledger, "POST", "/v1/directory/refusals", Some(body)).await?;
    Ok(a.recorded)
}

/// The network price from `GET /v1/info` (micros per GiB).
pub async fn network_price(ledger: &LedgerClient) -> Result<u64, MarketError> {
    // Only the one field: a full `api::Info` deserializer costs flash on routers.
    #[derive(serde::Deserialize)]
    struct Price {
        price_micros_per_gib: u64,
    }
    let p: Price = exchange(ledger, "GET", "/v1/info", None).await?;
    Ok(p.price_micros_per_gib)
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, MarketError> {
    serde_json::to_string(v).map_err(|e| SubmitError::BadResponse(e.to_string()).into())
}

async fn exchange<T: serde::de::DeserializeOwned>(
    ledger: &LedgerClient,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<T, MarketError> {
    let bytes = call(ledger, method, path, body).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| SubmitError::BadResponse(format!("{path}: {e}")).into())
}

/// The request itself, not generic (one copy of the future in small router binaries).
async fn call(
    ledger: &LedgerClient,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<bytes::Bytes, MarketError> {
    let (status, bytes) = ledger.request(method, path, body).await?;
    if (200..300).contains(&status) {
        return Ok(bytes);
    }
    Err(match serde_json::from_slice::<api::ErrorBody>(&bytes) {
        Ok(e) => MarketError::Refused {
            status,
            code: e.error.code,
            message: e.error.message,
        },
        Err(_) => SubmitError::Status(status).into(),
    })
}
