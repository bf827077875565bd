//! The JSON bodies of ferry-ledger's HTTP API (docs/ledger-api.md) as serde types: the ledger
//! serializes them, the receipt submitter (ferry-store) and the client deserialize them, so a
//! field or status renamed on one side fails to compile on the other instead of being matched
//! as a string. Keys and signatures are lowercase hex, encodings standard base64, as on the wire.
//!
//! Must not: do I/O or depend on anything but serde (small enough for every binary).
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

/// Every non-2xx answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A machine-readable code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable code, e.g. `insufficient_balance`, `malformed_receipt`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// Network id (hex, 16 bytes).
    pub network_id: String,
    /// The ledger's Ed25519 key vouchers are signed with (hex, 32 bytes).
    pub ledger_key: String,
    /// Epoch length.
    pub epoch_seconds: u64,
    /// The epoch now.
    pub current_epoch: u64,
    /// Network price.
    pub price_micros_per_gib: u64,
    /// How long a voucher is valid.
    pub voucher_ttl_seconds: u64,
    /// Most receipts per batch.
    pub max_batch: u64,
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Whether keys may register without the admin token or a proof of possession.
    pub open_registration: bool,
    /// Whether a key may register itself with a request signed by that key.
    #[serde(default)]
    pub self_registration: bool,
    /// Lowest relay price the directory lists.
    #[serde(default)]
    pub min_price_micros_per_gib: u64,
    /// Highest relay price the directory lists.
    #[serde(default)]
    pub max_price_micros_per_gib: u64,
}

/// `POST /v1/keys`: register a relay or client key. Without the admin token (and with open
/// registration off) the request must carry `at` and `signature`: the key's own signature
/// over [`signing::register_bytes`] (proof of possession).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The key (hex).
    pub public_key: String,
    /// `"relay"` or `"client"`.
    pub role: String,
    /// Unix seconds of signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
    /// The key's signature (hex, 64 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// `POST /v1/directory/announce`: a relay publishes its signed descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnounceRequest {
    /// The descriptor's canonical encoding (base64).
    pub descriptor: String,
}

/// `POST /v1/directory/refusals`: a client reports a relay receipt it refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusalRequest {
    /// The `ReceiptRefusal` encoding (base64).
    pub refusal: String,
}

/// Answer to a [`RefusalRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalResponse {
    /// First report of this session's refusal (false: the same one again, changed nothing).
    pub recorded: bool,
}

/// One finding of the directory about an announcing relay, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// Stable code, e.g. `hello_port_closed`, `address_mismatch`.
    pub code: String,
    /// What it means and what to do.
    pub message: String,
}

/// `POST /v1/directory/announce` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceResponse {
    /// The relay is listed (it answered the probe on at least one endpoint).
    pub listed: bool,
    /// The address the announce came from, as the directory saw it.
    pub seen_from: String,
    /// The IPv4 endpoint answered the probe.
    pub reachable_v4: bool,
    /// The IPv6 endpoint answered the probe.
    pub reachable_v6: bool,
    /// Best probe round trip, microseconds.
    pub probe_rtt_micros: Option<u64>,
    /// The ledger-signed annotation now listed with the descriptor (base64).
    pub annotation: String,
    /// Findings, empty when all is well.
    pub diagnosis: Vec<Diagnosis>,
}

/// One relay of `GET /v1/relays`: verify both signatures before relying on either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayListing {
    /// The relay-signed descriptor (base64).
    pub descriptor: String,
    /// The ledger-signed annotation (base64).
    pub annotation: String,
}

/// `GET /v1/relays?country=&max_price=&min_score=&ipv6=&limit=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayList {
    /// Ledger time of the answer.
    pub generated_at: u64,
    /// Listed relays, best score first (then lower price).
    pub relays: Vec<RelayListing>,
}

/// `POST /v1/vouchers`: a client-signed request (`signature`, `nonce`, `requested_at`), or
/// an admin request (bearer token) with neither.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoucherRequest {
    /// The client's identity key (hex).
    pub client_key: String,
    /// Money to put on the voucher (micros), debited from the balance.
    pub budget_micros: u64,
    /// The highest relay price (micros per GiB) the voucher may pay; absent: the network
    /// price (`GET /v1/info`). Signed requests must state it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price_micros_per_gib: Option<u64>,
    /// Random, 16 bytes (hex); makes the request idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Unix seconds the client signed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<u64>,
    /// Client signature over the request (hex, 64 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// `POST /v1/vouchers` (201 issued now, 200 the same request again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedVoucher {
    /// The voucher's canonical encoding (base64).
    pub voucher: String,
    /// Its id (hex).
    pub voucher_id: String,
    /// Owner (hex).
    pub client_key: String,
    /// Money on it (micros).
    pub budget_micros: u64,
    /// The highest session price it pays (micros per GiB).
    pub max_price_micros_per_gib: u64,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds.
    pub expires_at: u64,
    /// What it cost.
    pub cost_micros: u64,
    /// The balance after paying (`None` when it was issued before: nothing was debited now).
    pub balance_micros: Option<u64>,
    /// The same request was answered before.
    pub already_issued: bool,
}

/// `POST /v1/receipts`: one co-signed receipt (base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The co-signed receipt's encoding.
    pub receipt: String,
}

/// `POST /v1/receipts/batch`: co-signed receipts (base64 each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The co-signed receipts' encodings.
    pub receipts: Vec<String>,
}

/// What the ledger did with one receipt (`status` tag on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase", try_from = "RawItem")]
pub enum ItemResult {
    /// The session's cumulative counters advanced: credited.
    Advanced {
        /// Epoch credited.
        epoch: u64,
        /// Bytes newly credited.
        credited_bytes: u64,
        /// The credit was clamped to what the voucher's budget pays for.
        clamped: bool,
    },
    /// Seen before: nothing changed.
    Duplicate {
        /// Always 0.
        credited_bytes: u64,
    },
    /// Older than what the ledger has: nothing changed.
    Stale {
        /// Always 0.
        credited_bytes: u64,
    },
    /// Refused (bad signature, unknown voucher, ...): the submitter keeps it for retry.
    Rejected {
        /// Stable code.
        code: String,
        /// Explanation.
        message: String,
    },
}

/// The flat shape an [`ItemResult`] is read through: serde's internally tagged enums buffer
/// every field into a generic `Content` first, which costs routers ~10 KB of flash; this reads
/// the fields once and [`ItemResult::try_from`] checks the tag and the fields it needs.
#[derive(Deserialize)]
struct RawItem {
    status: String,
    epoch: Option<u64>,
    credited_bytes: Option<u64>,
    clamped: Option<bool>,
    code: Option<String>,
    message: Option<String>,
}

impl TryFrom<RawItem> for ItemResult {
    type Error = String;

    fn try_from(r: RawItem) -> Result<Self, String> {
        let missing = |f: &str| format!("{} result without {f}", r.status);
        Ok(match r.status.as_str() {
            "advanced" => Self::Advanced {
                epoch: r.epoch.ok_or_else(|| missing("epoch"))?,
                credited_bytes: r.credited_bytes.ok_or_else(|| missing("credited_bytes"))?,
                clamped: r.clamped.ok_or_else(|| missing("clamped"))?,
            },
            "duplicate" => Self::Duplicate {
                credited_bytes: r.credited_bytes.ok_or_else(|| missing("credited_bytes"))?,
            },
            "stale" => Self::Stale {
                credited_bytes: r.credited_bytes.ok_or_else(|| missing("credited_bytes"))?,
            },
            "rejected" => Self::Rejected {
                code: r.code.clone().ok_or_else(|| missing("code"))?,
                message: r.message.clone().ok_or_else(|| missing("message"))?,
            },
            other => return Err(format!("unknown receipt status {other:?}")),
        })
    }
}

impl ItemResult {
    /// True when the ledger recorded the receipt (advanced, duplicate or stale): done.
    pub fn is_recorded(&self) -> bool {
        !matches!(self, Self::Rejected { .. })
    }
}

/// `POST /v1/receipts/batch` answer: counts and one result per receipt, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    /// Receipts that advanced.
    pub advanced: u64,
    /// Duplicates.
    pub duplicate: u64,
    /// Stale ones.
    pub stale: u64,
    /// Refused ones.
    pub rejected: u64,
    /// One per submitted receipt, in order.
    pub results: Vec<ItemResult>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn item_results_use_the_wire_status_names() {
        let r: Vec<ItemResult> = serde_json::from_str(
            r#"[{"status":"advanced","epoch":3,"credited_bytes":10,"clamped":false},
                {"status":"duplicate","credited_bytes":0},{"status":"stale","credited_bytes":0},
                {"status":"rejected","code":"bad_signature","message":"no"}]"#,
        )
        .unwrap();
        assert!(r[0].is_recorded() && r[1].is_recorded() && r[2].is_recorded());
        assert_eq!(
            r[3],
            ItemResult::Rejected {
                code: "bad_signature".into(),
                message: "no".into()
            }
        );
        assert_eq!(
            serde_json::to_value(&r[1]).unwrap(),
            serde_json::json!({"status": "duplicate", "credited_bytes": 0})
        );
        assert!(serde_json::from_str::<ItemResult>(r#"{"status":"lost"}"#).is_err());
    }

    #[test]
    fn voucher_requests_omit_absent_fields_and_refuse_unknown_ones() {
        let admin = VoucherRequest {
            client_key: "ab".into(),
            budget_micros: 5,
            max_price_micros_per_gib: None,
            nonce: None,
            requested_at: None,
            signature: None,
        };
        assert_eq!(
            serde_json::to_value(&admin).unwrap(),
            serde_json::json!({"client_key": "ab", "budget_micros": 5})
        );
        assert!(
            serde_json::from_str::<VoucherRequest>(
                r#"{"client_key":"ab","budget_micros":5,"price":1}"#
            )
            .is_err()
        );
    }
}

/// `GET /v1/clients/{key}`: the client's account (needs the client's signature or the admin
/// token, see [`signing::account_read_bytes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAccount {
    /// The client's identity key (hex).
    pub client_key: String,
    /// Spendable balance.
    pub balance_micros: u64,
    /// Everything credited to it.
    pub deposited_micros: u64,
    /// Everything spent on vouchers (net of refunds).
    pub spent_micros: u64,
    /// Vouchers issued to it.
    pub vouchers: u64,
    /// Money put on those vouchers (micros).
    pub budget_micros: u64,
    /// Micros their sessions debited.
    pub used_micros: u64,
}

/// What clients sign for the ledger (after a domain tag, Ed25519 over `tag || bytes`), shared
/// by the ledger (verifies) and the client (signs). Integers are big-endian.
pub mod signing {
    /// Domain tag of a voucher request (`POST /v1/vouchers`).
    pub const VOUCHER_REQUEST_DOMAIN: &[u8] = b"ferry/v2/ledger-voucher-request\0";
    /// Domain tag of an account read (`GET /v1/clients/{key}?at=&sig=`).
    pub const ACCOUNT_READ_DOMAIN: &[u8] = b"ferry/v1/ledger-account-read\0";
    /// Domain tag of a self-registration (`POST /v1/keys` with a signature).
    pub const REGISTER_DOMAIN: &[u8] = b"ferry/v1/ledger-register\0";

    /// Role byte of a relay in [`register_bytes`].
    pub const ROLE_RELAY: u8 = 1;
    /// Role byte of a client in [`register_bytes`].
    pub const ROLE_CLIENT: u8 = 2;

    /// `network_id(16) || key(32) || role(1: 1 relay, 2 client) || at(8)`: the key registers
    /// itself at unix time `at` (accepted within the ledger's request skew).
    pub fn register_bytes(network_id: &[u8; 16], key: &[u8; 32], role: u8, at: u64) -> Vec<u8> {
        let mut b = Vec::with_capacity(57);
        b.extend_from_slice(network_id);
        b.extend_from_slice(key);
        b.push(role);
        b.extend_from_slice(&at.to_be_bytes());
        b
    }

    /// `network_id(16) || client_key(32) || budget_micros(8) || max_price_micros_per_gib(8) ||
    /// nonce(16) || requested_at(8)`.
    pub fn voucher_request_bytes(
        network_id: &[u8; 16],
        client_key: &[u8; 32],
        budget_micros: u64,
        max_price_micros_per_gib: u64,
        nonce: &[u8; 16],
        requested_at: u64,
    ) -> Vec<u8> {
        let mut b = Vec::with_capacity(88);
        b.extend_from_slice(network_id);
        b.extend_from_slice(client_key);
        b.extend_from_slice(&budget_micros.to_be_bytes());
        b.extend_from_slice(&max_price_micros_per_gib.to_be_bytes());
        b.extend_from_slice(nonce);
        b.extend_from_slice(&requested_at.to_be_bytes());
        b
    }

    /// `network_id(16) || client_key(32) || at(8)`: the client asks for its own account at
    /// unix time `at` (accepted within the ledger's request skew).
    pub fn account_read_bytes(network_id: &[u8; 16], client_key: &[u8; 32], at: u64) -> Vec<u8> {
        let mut b = Vec::with_capacity(56);
        b.extend_from_slice(network_id);
        b.extend_from_slice(client_key);
        b.extend_from_slice(&at.to_be_bytes());
        b
    }
}
