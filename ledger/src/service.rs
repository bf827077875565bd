//! The ledger service: verification, voucher issuance, receipt ingestion, epoch reports
//! and proofs over any [`Store`]. Callers pass the time (`now`, unix seconds); this module
//! reads no clock, so tests drive it deterministically.

use ferry_receipts::{
    DecodeError, NetworkId, PublicKey, SessionId, Signature, SigningKey, VerifyError, Voucher,
    VoucherId,
};
use ring::signature::{ED25519, UnparsedPublicKey};

use crate::domain::{Outcome, Reject, Role, VoucherRow};
use crate::merkle::{self, Hash};
use crate::store::{ClientAccount, RelayEarnings, Store, StoreError, VoucherClose, VoucherInsert};
pub use crate::verify::{verify_all, verify_one};

/// Tunables the service needs (validated by the config loader).
#[derive(Debug, Clone)]
pub struct Params {
    /// Network this ledger serves.
    pub network_id: NetworkId,
    /// Epoch length in seconds (epoch n covers `[n × len, (n + 1) × len)` unix time).
    pub epoch_secs: u64,
    /// Price written into every voucher.
    pub price_micros_per_gib: u64,
    /// Voucher validity.
    pub voucher_ttl_secs: u64,
    /// Largest batch accepted in one submission.
    pub max_batch: usize,
    /// How far a signed voucher request's timestamp may be from the ledger's clock.
    pub request_skew_secs: u64,
    /// How long after expiry a voucher may be closed and its unused part refunded (late
    /// receipts of sessions started before expiry still count until then).
    pub refund_grace_secs: u64,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// Admin authentication is missing or wrong, or a signed request does not verify.
    #[error("{0}")]
    Unauthorized(String),
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The client has not enough balance for the voucher.
    #[error("insufficient balance: have {have} micros, need {need}")]
    InsufficientFunds {
        /// Balance.
        have: u64,
        /// Cost.
        need: u64,
    },
    /// A single submitted receipt was refused.
    #[error("{0}")]
    Receipt(ItemError),
    /// Storage failed.
    #[error("storage: {0}")]
    Store(StoreError),
}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownClient => Self::NotFound("client"),
            StoreError::InsufficientFunds { have, need } => Self::InsufficientFunds { have, need },
            StoreError::Overflow => Self::BadRequest("amount out of range".into()),
            StoreError::UnknownVoucher => Self::NotFound("voucher"),
            StoreError::TooEarly(t) => {
                Self::BadRequest(format!("voucher can be closed from unix time {t}"))
            }
            e => Self::Store(e),
        }
    }
}

/// Why one submitted receipt was refused; nothing was stored for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ItemError {
    /// Not a valid co-signed receipt encoding (or not base64).
    #[error("malformed receipt: {0}")]
    Malformed(&'static str),
    /// Decoding failed.
    #[error("malformed receipt: {0}")]
    Decode(DecodeError),
    /// A signature or the network id did not verify.
    #[error("{0}")]
    Verify(VerifyError),
    /// The ledger's rules refused it.
    #[error("{0}")]
    Rejected(Reject),
}

impl ItemError {
    /// Stable machine-readable code (JSON `code` field).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) | Self::Decode(_) => "malformed_receipt",
            Self::Verify(VerifyError::BadRelaySignature) => "bad_relay_signature",
            Self::Verify(VerifyError::BadClientSignature) => "bad_client_signature",
            Self::Verify(VerifyError::WrongNetwork) => "wrong_network",
            Self::Verify(_) => "verification_failed",
            Self::Rejected(Reject::UnknownRelay) => "unknown_relay",
            Self::Rejected(Reject::UnknownClient) => "unknown_client",
            Self::Rejected(Reject::UnknownVoucher) => "unknown_voucher",
            Self::Rejected(Reject::VoucherMismatch(_)) => "voucher_mismatch",
            Self::Rejected(Reject::Session(_)) => "session_conflict",
            Self::Rejected(Reject::TooLarge) => "counter_too_large",
        }
    }
}

/// Per-item result of a submission.
pub type SubmitResult = Result<Outcome, ItemError>;

/// A client's signed request for a voucher (so nobody else can spend its balance). The
/// voucher is derived deterministically from the request (nonce, time), so replaying the
/// request returns the same voucher without charging twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoucherRequest {
    /// Client paying.
    pub client_key: PublicKey,
    /// Money to put on the voucher (micros), debited from the balance.
    pub budget_micros: u64,
    /// The highest session price (micros per GiB) the voucher may pay.
    pub max_price_micros_per_gib: u64,
    /// Client-chosen random nonce (becomes the voucher nonce).
    pub nonce: [u8; 16],
    /// Unix seconds when the client made the request (becomes the voucher's issued_at).
    pub requested_at: u64,
    /// Client signature over [`VoucherRequest::DOMAIN`] || [`VoucherRequest::signed_bytes`].
    pub signature: Signature,
}

impl VoucherRequest {
    /// Domain tag of the request signature.
    pub const DOMAIN: &'static [u8] = ferry_ledger_api::signing::VOUCHER_REQUEST_DOMAIN;

    /// `network_id(16) || client_key(32) || budget_micros(8, BE) || max_price(8, BE) ||
    /// nonce(16) || requested_at(8, BE)` ([`ferry_ledger_api::signing::voucher_request_bytes`]).
    pub fn signed_bytes(&self, network_id: &NetworkId) -> Vec<u8> {
        ferry_ledger_api::signing::voucher_request_bytes(
            network_id.as_bytes(),
            self.client_key.as_bytes(),
            self.budget_micros,
            self.max_price_micros_per_gib,
            &self.nonce,
            self.requested_at,
        )
    }

    /// Sets `client_key` to the signer and signs.
    pub fn sign(mut self, network_id: &NetworkId, client: &SigningKey) -> Self {
        self.client_key = client.public_key();
        self.signature = client.sign(Self::DOMAIN, &self.signed_bytes(network_id));
        self
    }

    /// Checks the signature under `client_key`.
    pub fn verify(&self, network_id: &NetworkId) -> bool {
        let mut msg = Self::DOMAIN.to_vec();
        msg.extend_from_slice(&self.signed_bytes(network_id));
        UnparsedPublicKey::new(&ED25519, self.client_key.as_bytes())
            .verify(&msg, self.signature.as_bytes())
            .is_ok()
    }
}

/// A freshly issued (or re-fetched) voucher.
#[derive(Debug, Clone)]
pub struct IssuedVoucher {
    /// The signed voucher.
    pub voucher: Voucher,
    /// What it cost.
    pub cost_micros: u64,
    /// Balance after the debit (`None` when it already existed and nothing was charged).
    pub balance_micros: Option<u64>,
}

/// Per-relay line of an epoch report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayEpoch {
    /// Relay.
    pub relay_key: PublicKey,
    /// Accepted receipts in the epoch.
    pub receipts: u64,
    /// Bytes credited in the epoch.
    pub credited_bytes: u64,
    /// Micros earned in the epoch.
    pub earned_micros: u64,
}

/// An epoch's rewards and Merkle root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochReport {
    /// Epoch number.
    pub epoch: u64,
    /// First unix second.
    pub start: u64,
    /// First unix second after it.
    pub end: u64,
    /// `now ≥ end`: no more receipts land in it (given synchronised ledger clocks).
    pub closed: bool,
    /// Leaves.
    pub receipts: u64,
    /// Merkle root over the leaves.
    pub root: Hash,
    /// Per relay, ordered by key.
    pub relays: Vec<RelayEpoch>,
}

/// Inclusion proof of one accepted receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptProof {
    /// Epoch.
    pub epoch: u64,
    /// Position among the epoch's leaves.
    pub leaf_index: u64,
    /// Number of leaves.
    pub leaf_count: u64,
    /// Leaf hash.
    pub leaf_hash: Hash,
    /// Audit path, bottom-up.
    pub path: Vec<Hash>,
    /// Root the path leads to.
    pub root: Hash,
    /// The co-signed receipt encoding.
    pub receipt: Vec<u8>,
}

impl ReceiptProof {
    /// Recomputes the leaf from the receipt and checks the path against the root.
    pub fn verify(&self) -> bool {
        merkle::leaf_hash(&self.receipt) == self.leaf_hash
            && merkle::verify(
                &self.leaf_hash,
                self.leaf_index,
                self.leaf_count,
                &self.path,
                &self.root,
            )
    }
}

/// The ledger.
#[derive(Debug)]
pub struct Ledger<S> {
    store: S,
    key: SigningKey,
    params: Params,
    stats: std::sync::Arc<crate::stats::LedgerStats>,
}

impl<S: Store> Ledger<S> {
    /// A ledger signing vouchers with `key`.
    pub fn new(store: S, key: SigningKey, params: Params) -> Self {
        Self {
            store,
            key,
            params,
            stats: Default::default(),
        }
    }

    /// Counters for `/metrics` (see [`crate::stats`]).
    pub fn stats(&self) -> std::sync::Arc<crate::stats::LedgerStats> {
        self.stats.clone()
    }

    /// The store (tests and benchmarks inspect it).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The ledger's voucher-signing public key.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// The ledger key (the directory signs its annotations and probes with it).
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Registers a relay or client key.
    pub async fn register(
        &self,
        key: PublicKey,
        role: Role,
        now: u64,
    ) -> Result<bool, LedgerError> {
        Ok(self.store.register_key(key, role, now).await?)
    }

    /// Operator credit of a client's balance; returns the new balance.
    pub async fn credit(&self, key: PublicKey, amount_micros: u64) -> Result<u64, LedgerError> {
        if amount_micros == 0 {
            return Err(LedgerError::BadRequest("amount must be positive".into()));
        }
        Ok(self.store.credit_client(key, amount_micros).await?)
    }

    /// Issues a voucher for a signed client request.
    pub async fn issue_signed(
        &self,
        req: &VoucherRequest,
        now: u64,
    ) -> Result<IssuedVoucher, LedgerError> {
        if !req.verify(&self.params.network_id) {
            return Err(LedgerError::Unauthorized(
                "voucher request signature invalid".into(),
            ));
        }
        if req.requested_at.abs_diff(now) > self.params.request_skew_secs {
            return Err(LedgerError::BadRequest(format!(
                "requested_at is more than {} s from the ledger clock",
                self.params.request_skew_secs
            )));
        }
        self.issue(
            req.client_key,
            req.budget_micros,
            req.max_price_micros_per_gib,
            req.nonce,
            req.requested_at,
        )
        .await
    }

    /// Issues a voucher (admin path or after [`Ledger::issue_signed`] checks) of
    /// `budget_micros` for sessions priced at most `max_price_micros_per_gib`; debits the
    /// budget from the client.
    pub async fn issue(
        &self,
        client_key: PublicKey,
        budget_micros: u64,
        max_price_micros_per_gib: u64,
        nonce: [u8; 16],
        issued_at: u64,
    ) -> Result<IssuedVoucher, LedgerError> {
        if budget_micros == 0 || budget_micros > i64::MAX as u64 {
            return Err(LedgerError::BadRequest(
                "budget_micros must be in 1..2^63".into(),
            ));
        }
        if max_price_micros_per_gib == 0 || max_price_micros_per_gib > i64::MAX as u64 {
            return Err(LedgerError::BadRequest(
                "max_price_micros_per_gib must be in 1..2^63".into(),
            ));
        }
        let cost = budget_micros;
        let expires_at = issued_at
            .checked_add(self.params.voucher_ttl_secs)
            .filter(|e| *e <= i64::MAX as u64)
            .ok_or_else(|| LedgerError::BadRequest("issued_at out of range".into()))?;
        let voucher = Voucher {
            network_id: self.params.network_id,
            ledger_key: self.key.public_key(),
            client_key,
            nonce,
            budget_micros,
            max_price_micros_per_gib,
            issued_at,
            expires_at,
            signature: Signature::ZERO,
        }
        .sign(&self.key);
        let row = VoucherRow {
            id: voucher.id(),
            client_key,
            budget_micros,
            max_price_micros_per_gib,
            issued_at,
            expires_at,
            used_micros: 0,
            cost_micros: cost,
            encoded: voucher.encode(),
        };
        let balance = match self.store.insert_voucher(row).await? {
            VoucherInsert::Issued { balance_micros } => {
                self.stats.voucher_issued();
                Some(balance_micros)
            }
            VoucherInsert::AlreadyIssued => None,
        };
        Ok(IssuedVoucher {
            voucher,
            cost_micros: cost,
            balance_micros: balance,
        })
    }

    /// Closes an expired voucher and refunds its unused part to the client.
    pub async fn close_voucher(
        &self,
        id: VoucherId,
        now: u64,
    ) -> Result<VoucherClose, LedgerError> {
        let closed = self
            .store
            .close_voucher(id, now, self.params.refund_grace_secs)
            .await?;
        if !closed.already_closed {
            self.stats.voucher_closed();
        }
        Ok(closed)
    }

    /// Looks up an issued voucher.
    pub async fn voucher(&self, id: VoucherId) -> Result<VoucherRow, LedgerError> {
        self.store
            .voucher(id)
            .await?
            .ok_or(LedgerError::NotFound("voucher"))
    }

    /// Decodes and verifies every encoding (in parallel for large batches), then ingests
    /// the valid ones in one transaction. One result per input, in order.
    pub async fn submit(
        &self,
        encoded: Vec<Vec<u8>>,
        now: u64,
    ) -> Result<Vec<SubmitResult>, LedgerError> {
        if encoded.len() > self.params.max_batch {
            return Err(LedgerError::BadRequest(format!(
                "batch of {} receipts exceeds the limit of {}",
                encoded.len(),
                self.params.max_batch
            )));
        }
        let network = self.params.network_id;
        let verified = tokio::task::spawn_blocking(move || verify_all(encoded, &network))
            .await
            .map_err(|e| LedgerError::Store(StoreError::Worker(e.to_string())))?;
        let mut out: Vec<Option<SubmitResult>> = Vec::with_capacity(verified.len());
        let mut good = Vec::new();
        let mut positions = Vec::new();
        for (i, v) in verified.into_iter().enumerate() {
            match v {
                Ok(v) => {
                    good.push(v);
                    positions.push(i);
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        if !good.is_empty() {
            let results = self.store.ingest(good, now, self.params.epoch_secs).await?;
            for (pos, r) in positions.into_iter().zip(results) {
                out[pos] = Some(r.map_err(ItemError::Rejected));
            }
        }
        let out: Vec<SubmitResult> = out
            .into_iter()
            .map(|r| r.unwrap_or(Err(ItemError::Malformed("internal: no result"))))
            .collect();
        self.stats.count_results(&out);
        Ok(out)
    }

    /// Submits one receipt; refusals become [`LedgerError::Receipt`].
    pub async fn submit_one(&self, encoded: Vec<u8>, now: u64) -> Result<Outcome, LedgerError> {
        let mut r = self.submit(vec![encoded], now).await?;
        match r.pop() {
            Some(Ok(o)) => Ok(o),
            Some(Err(e)) => Err(LedgerError::Receipt(e)),
            None => Err(LedgerError::BadRequest("empty submission".into())),
        }
    }

    /// A client's account.
    /// A client's account for a read signed by that client at `at` (within the request skew):
    /// only the client itself (or the admin, see the HTTP layer) may see balance and spend.
    pub async fn client_signed(
        &self,
        key: PublicKey,
        at: u64,
        signature: &Signature,
        now: u64,
    ) -> Result<ClientAccount, LedgerError> {
        let mut msg = ferry_ledger_api::signing::ACCOUNT_READ_DOMAIN.to_vec();
        msg.extend_from_slice(&ferry_ledger_api::signing::account_read_bytes(
            self.params.network_id.as_bytes(),
            key.as_bytes(),
            at,
        ));
        if UnparsedPublicKey::new(&ED25519, key.as_bytes())
            .verify(&msg, signature.as_bytes())
            .is_err()
        {
            return Err(LedgerError::Unauthorized(
                "account read signature invalid".into(),
            ));
        }
        if at.abs_diff(now) > self.params.request_skew_secs {
            return Err(LedgerError::Unauthorized(format!(
                "account read signed at {at}, more than {} s from the ledger clock {now}",
                self.params.request_skew_secs
            )));
        }
        self.client(key).await
    }

    /// A client's account (callers check who asks).
    pub async fn client(&self, key: PublicKey) -> Result<ClientAccount, LedgerError> {
        self.store
            .client(key)
            .await?
            .ok_or(LedgerError::NotFound("client"))
    }

    /// A relay's earnings.
    pub async fn relay(&self, key: PublicKey) -> Result<RelayEarnings, LedgerError> {
        if !self.store.has_key(key, Role::Relay).await? {
            return Err(LedgerError::NotFound("relay"));
        }
        Ok(self.store.relay(key).await?)
    }

    /// Epoch number of unix time `t`.
    pub fn epoch_of(&self, t: u64) -> u64 {
        t / self.params.epoch_secs.max(1)
    }

    /// Epochs with receipts, and their receipt counts.
    pub async fn epochs(&self) -> Result<Vec<(u64, u64)>, LedgerError> {
        Ok(self.store.epochs().await?)
    }

    /// Report of `epoch` as of `now`.
    pub async fn epoch_report(&self, epoch: u64, now: u64) -> Result<EpochReport, LedgerError> {
        let len = self.params.epoch_secs.max(1);
        let start = epoch
            .checked_mul(len)
            .ok_or_else(|| LedgerError::BadRequest("epoch out of range".into()))?;
        let leaves = self.store.epoch_leaves(epoch).await?;
        let hashes: Vec<Hash> = leaves.iter().map(|l| l.leaf_hash).collect();
        let mut relays: Vec<RelayEpoch> = Vec::new();
        for l in &leaves {
            match relays.last_mut() {
                Some(r) if r.relay_key == l.relay_key => {
                    r.receipts += 1;
                    r.credited_bytes += l.credited_bytes;
                    r.earned_micros += l.credited_micros;
                }
                _ => relays.push(RelayEpoch {
                    relay_key: l.relay_key,
                    receipts: 1,
                    credited_bytes: l.credited_bytes,
                    earned_micros: l.credited_micros,
                }),
            }
        }
        Ok(EpochReport {
            epoch,
            start,
            end: start.saturating_add(len),
            closed: now >= start.saturating_add(len),
            receipts: leaves.len() as u64,
            root: merkle::root(&hashes),
            relays,
        })
    }

    /// Inclusion proof of an accepted receipt.
    pub async fn proof(
        &self,
        relay: PublicKey,
        session: SessionId,
        seq: u64,
    ) -> Result<ReceiptProof, LedgerError> {
        let stored = self
            .store
            .accepted(relay, session, seq)
            .await?
            .ok_or(LedgerError::NotFound("accepted receipt"))?;
        let leaves = self.store.epoch_leaves(stored.epoch).await?;
        let index = leaves
            .iter()
            .position(|l| l.relay_key == relay && l.session_id == session && l.seq == seq)
            .ok_or(LedgerError::NotFound("accepted receipt"))?;
        let hashes: Vec<Hash> = leaves.iter().map(|l| l.leaf_hash).collect();
        Ok(ReceiptProof {
            epoch: stored.epoch,
            leaf_index: index as u64,
            leaf_count: hashes.len() as u64,
            leaf_hash: hashes[index],
            path: merkle::proof(&hashes, index).unwrap_or_default(),
            root: merkle::root(&hashes),
            receipt: stored.encoded,
        })
    }
}
