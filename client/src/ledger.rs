//! Talking to the ledger: `GET /v1/info` and `POST /v1/vouchers` (a voucher request signed
//! by our identity key, see docs/ledger-api.md). Receipt submission reuses
//! `ferry_store::Submitter`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use ferry_ledger_api as api;
use ferry_receipts::{NetworkId, PublicKey, SigningKey, Voucher};
use ferry_store::LedgerClient;

const TIMEOUT: Duration = Duration::from_secs(15);

use ferry_ledger_api::signing::{
    ACCOUNT_READ_DOMAIN, VOUCHER_REQUEST_DOMAIN, account_read_bytes, voucher_request_bytes,
};

/// What the ledger says about itself.
#[derive(Debug, Clone)]
pub(crate) struct LedgerInfo {
    pub(crate) network_id: NetworkId,
    pub(crate) ledger_key: PublicKey,
    /// The network price (micros per GiB).
    pub(crate) price_micros_per_gib: u64,
}

/// The body of a signed voucher request.
pub(crate) fn voucher_request_body(
    network_id: &NetworkId,
    key: &SigningKey,
    budget_micros: u64,
    max_price_micros_per_gib: u64,
    nonce: [u8; 16],
    requested_at: u64,
) -> api::VoucherRequest {
    let client_key = key.public_key();
    let msg = voucher_request_bytes(
        network_id.as_bytes(),
        client_key.as_bytes(),
        budget_micros,
        max_price_micros_per_gib,
        &nonce,
        requested_at,
    );
    let sig = key.sign(VOUCHER_REQUEST_DOMAIN, &msg);
    api::VoucherRequest {
        client_key: client_key.to_hex(),
        budget_micros,
        max_price_micros_per_gib: Some(max_price_micros_per_gib),
        nonce: Some(hex::encode(nonce)),
        requested_at: Some(requested_at),
        signature: Some(hex::encode(sig.as_bytes())),
    }
}

/// Fetches `/v1/info`.
pub(crate) async fn info(ledger: &LedgerClient) -> Result<LedgerInfo> {
    let (status, body) = request(ledger, "GET", "/v1/info", None).await?;
    if status != 200 {
        let (code, msg) = error_of(&body);
        bail!("ledger /v1/info answered HTTP {status} {code}: {msg}");
    }
    let v: api::Info = serde_json::from_slice(&body).context("ledger /v1/info: unexpected JSON")?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(&v.ledger_key, &mut key).context("ledger info: bad ledger_key")?;
    let mut net = [0u8; 16];
    hex::decode_to_slice(&v.network_id, &mut net).context("ledger info: bad network_id")?;
    Ok(LedgerInfo {
        network_id: NetworkId(net),
        ledger_key: PublicKey(key),
        price_micros_per_gib: v.price_micros_per_gib,
    })
}

/// Requests a voucher paying for `bytes` at `max_price` (default: the network price), i.e. a
/// budget of `ceil(bytes × max price / 2^30)` micros; verifies it and returns it with the
/// ledger's answer (cost, balance).
pub(crate) async fn request_voucher(
    ledger: &LedgerClient,
    key: &SigningKey,
    bytes: u64,
    max_price: Option<u64>,
    nonce: [u8; 16],
    now: u64,
) -> Result<(Voucher, api::IssuedVoucher)> {
    let li = info(ledger).await?;
    let max_price = max_price.unwrap_or(li.price_micros_per_gib);
    let budget = ferry_receipts::money::debit_micros(bytes, max_price);
    if budget == 0 {
        bail!("{bytes} bytes at {max_price} micros/GiB cost nothing: nothing to buy");
    }
    let req = voucher_request_body(&li.network_id, key, budget, max_price, nonce, now);
    let (status, body) = request(
        ledger,
        "POST",
        "/v1/vouchers",
        Some(serde_json::to_string(&req)?),
    )
    .await?;
    if !(200..300).contains(&status) {
        let (code, msg) = error_of(&body);
        bail!("ledger refused the voucher request (HTTP {status} {code}): {msg}");
    }
    let v: api::IssuedVoucher =
        serde_json::from_slice(&body).context("ledger /v1/vouchers: unexpected JSON")?;
    let raw = B64.decode(&v.voucher).context("voucher is not base64")?;
    let voucher = Voucher::decode(&raw).context("voucher")?;
    voucher
        .verify(&li.network_id, &li.ledger_key, now)
        .context("voucher does not verify")?;
    ensure!(
        voucher.client_key == key.public_key(),
        "voucher is for another client key"
    );
    Ok((voucher, v))
}

/// Our own account (`GET /v1/clients/{key}`, signed by our identity key at `now`).
pub(crate) async fn account(
    ledger: &LedgerClient,
    key: &SigningKey,
    now: u64,
) -> Result<api::ClientAccount> {
    let li = info(ledger).await?;
    let client_key = key.public_key();
    let msg = account_read_bytes(li.network_id.as_bytes(), client_key.as_bytes(), now);
    let sig = key.sign(ACCOUNT_READ_DOMAIN, &msg);
    let path = format!(
        "/v1/clients/{}?at={now}&sig={}",
        client_key.to_hex(),
        hex::encode(sig.as_bytes())
    );
    let (status, body) = request(ledger, "GET", &path, None).await?;
    if status == 404 {
        bail!(
            "the ledger does not know client key {client_key} (register it, or ask the \
             ledger's operator to)"
        );
    }
    if status != 200 {
        let (code, msg) = error_of(&body);
        bail!("ledger refused the account read (HTTP {status} {code}): {msg}");
    }
    serde_json::from_slice(&body).context("ledger /v1/clients: unexpected JSON")
}

/// (code, message) of a ledger error body; an unexpected body is the message as text.
fn error_of(body: &[u8]) -> (String, String) {
    match serde_json::from_slice::<api::ErrorBody>(body) {
        Ok(e) => (e.error.code, e.error.message),
        Err(_) => (String::new(), String::from_utf8_lossy(body).into_owned()),
    }
}

/// Reads a voucher file (base64, one line).
pub(crate) fn load_voucher(path: &Path) -> Result<Voucher> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading voucher {} (run `ferry voucher request`)",
            path.display()
        )
    })?;
    let raw = B64
        .decode(text.trim())
        .with_context(|| format!("{}: not base64", path.display()))?;
    Voucher::decode(&raw).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Writes a voucher file.
pub(crate) fn save_voucher(path: &Path, v: &Voucher) -> Result<()> {
    std::fs::write(path, format!("{}\n", B64.encode(v.encode())))
        .with_context(|| format!("writing {}", path.display()))
}

/// One request to the ledger (`http://` or `https://`, ferry-store's client).
async fn request(
    ledger: &LedgerClient,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<(u16, Bytes)> {
    ledger.request(method, path, body).await.map_err(|e| {
        anyhow::Error::new(e).context(format!("ledger at {}", ledger.url().authority()))
    })
}

/// A client for `url` (`ca_file`: the CA an https ledger must chain to).
pub(crate) fn client(url: &str, ca_file: Option<&Path>) -> Result<LedgerClient> {
    LedgerClient::new(url, ca_file, TIMEOUT).map_err(anyhow::Error::new)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn voucher_request_signature_verifies_under_the_client_key() {
        let key = SigningKey::from_seed(&[7; 32]);
        let net = NetworkId([3; 16]);
        let body = voucher_request_body(&net, &key, 1 << 30, 500_000, [9; 16], 1_700_000_000);
        assert_eq!(
            (body.budget_micros, body.max_price_micros_per_gib),
            (1u64 << 30, Some(500_000))
        );
        let sig = hex::decode(body.signature.unwrap()).unwrap();
        let mut msg = VOUCHER_REQUEST_DOMAIN.to_vec();
        msg.extend(voucher_request_bytes(
            net.as_bytes(),
            key.public_key().as_bytes(),
            1 << 30,
            500_000,
            &[9; 16],
            1_700_000_000,
        ));
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key.public_key().0)
            .verify(&msg, &sig)
            .unwrap();
        // The signed layout is 16 + 32 + 8 + 8 + 16 + 8 bytes.
        assert_eq!(msg.len() - VOUCHER_REQUEST_DOMAIN.len(), 88);
    }

    #[test]
    fn voucher_files_round_trip() {
        let ledger = SigningKey::from_seed(&[1; 32]);
        let v = Voucher {
            network_id: NetworkId([1; 16]),
            ledger_key: ledger.public_key(),
            client_key: PublicKey([2; 32]),
            nonce: [0; 16],
            budget_micros: 5,
            max_price_micros_per_gib: 6,
            issued_at: 1,
            expires_at: 2,
            signature: ferry_receipts::Signature::ZERO,
        }
        .sign(&ledger);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("voucher");
        save_voucher(&p, &v).unwrap();
        assert_eq!(load_voucher(&p).unwrap(), v);
        std::fs::write(&p, "!!").unwrap();
        assert!(load_voucher(&p).is_err());
    }
}
