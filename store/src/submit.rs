//! Sends co-signed receipts to the ledger (`POST {ledger_url}/v1/receipts/batch`, body
//! `{"receipts":[base64, ...]}`), marking them submitted in the store only after the
//! ledger answered 2xx and listed the item as advanced, duplicate or stale. Anything else
//! stays pending and is retried with exponential backoff, so nothing is lost while the
//! ledger is down. Items the ledger rejects stay stored and are retried only every
//! `rejected_retry` (they may be accepted later, e.g. once a voucher is known).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_receipts::{CoSignedReceipt, SessionId};
use thiserror::Error;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Store;
use crate::backoff::Backoff;

/// A boxed cause (I/O, HTTP, store and task errors share the variants below).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why one submission attempt failed (all are retried).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The ledger URL is not `http[s]://host[:port][/prefix]`, or its TLS setup failed.
    #[error("unusable ledger url or TLS setup: {0} (expected http[s]://host[:port][/prefix])")]
    BadUrl(String),
    /// Connecting, sending or reading failed (the cause is the source).
    #[error("ledger unreachable")]
    Transport(#[source] BoxError),
    /// The ledger answered with a non-2xx status.
    #[error("ledger answered HTTP {0}")]
    Status(u16),
    /// The response was not the expected JSON.
    #[error("unexpected ledger response: {0}")]
    BadResponse(String),
    /// The store failed (the cause is the source).
    #[error("receipt store")]
    Store(#[source] BoxError),
}

/// What the ledger said about one receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Recorded (advanced, duplicate or stale): done.
    Accepted,
    /// Refused with this code.
    Rejected(String),
}

/// Client for the ledger's batch endpoint (`http://` or `https://`, see [`crate::LedgerClient`]).
#[derive(Debug, Clone)]
pub struct HttpLedger {
    client: crate::LedgerClient,
}

impl HttpLedger {
    /// `ledger_url` like `http://10.0.0.5:8080`, `https://ledger.example/api`.
    pub fn new(ledger_url: &str, timeout: Duration) -> Result<Self, SubmitError> {
        Self::with_ca_file(ledger_url, None, timeout)
    }

    /// As [`HttpLedger::new`], trusting only the CA certificates in `ca_file` for https.
    pub fn with_ca_file(
        ledger_url: &str,
        ca_file: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<Self, SubmitError> {
        Ok(Self {
            client: crate::LedgerClient::new(ledger_url, ca_file, timeout)?,
        })
    }

    /// Posts one batch; returns one outcome per receipt, in order.
    pub async fn post_batch(
        &self,
        receipts: &[CoSignedReceipt],
    ) -> Result<Vec<ItemOutcome>, SubmitError> {
        let list: Vec<String> = receipts.iter().map(|c| B64.encode(c.encode())).collect();
        let body = serde_json::to_string(&ferry_ledger_api::BatchRequest { receipts: list })
            .map_err(|e| SubmitError::BadResponse(e.to_string()))?;
        let (status, bytes) = self
            .client
            .request("POST", "/v1/receipts/batch", Some(body))
            .await?;
        if !(200..300).contains(&status) {
            return Err(SubmitError::Status(status));
        }
        parse_results(&bytes, receipts.len())
    }
}

fn parse_results(body: &[u8], n: usize) -> Result<Vec<ItemOutcome>, SubmitError> {
    let r: ferry_ledger_api::BatchResponse =
        serde_json::from_slice(body).map_err(|e| SubmitError::BadResponse(e.to_string()))?;
    if r.results.len() != n {
        return Err(SubmitError::BadResponse(
            "results length differs from batch length".to_owned(),
        ));
    }
    Ok(r.results
        .into_iter()
        .map(|item| match item {
            ferry_ledger_api::ItemResult::Rejected { code, .. } => ItemOutcome::Rejected(code),
            _ => ItemOutcome::Accepted,
        })
        .collect())
}

/// Submitter policy.
#[derive(Debug, Clone)]
pub struct SubmitterConfig {
    /// Receipts per POST.
    pub batch: usize,
    /// First retry delay.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Re-check the store this often even without a kick.
    pub idle_poll: Duration,
    /// Retry receipts the ledger rejected after this long.
    pub rejected_retry: Duration,
}

impl Default for SubmitterConfig {
    fn default() -> Self {
        Self {
            batch: 64,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            idle_poll: Duration::from_secs(30),
            rejected_retry: Duration::from_secs(3600),
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmitterStats {
    /// Receipts the ledger accepted.
    pub accepted: u64,
    /// Receipts the ledger rejected (kept, retried later).
    pub rejected: u64,
    /// Failed attempts (ledger down, bad answer, store error).
    pub failures: u64,
    /// When the ledger last answered a batch.
    pub last_contact: Option<std::time::Instant>,
    /// The last failure with its causes (`None` after a success).
    pub last_error: Option<String>,
}

/// `e: cause: cause …` (each cause once).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Background task moving pending receipts from the store to the ledger.
pub struct Submitter {
    store: Arc<Mutex<Store>>,
    ledger: HttpLedger,
    cfg: SubmitterConfig,
    random: Box<dyn FnMut() -> u64 + Send>,
    kick: Arc<Notify>,
    stats: Arc<Mutex<SubmitterStats>>,
    held: BTreeMap<(SessionId, u64), Instant>,
}

impl Submitter {
    /// `random` supplies jitter (e.g. from `ring::rand::SystemRandom`).
    pub fn new(
        store: Arc<Mutex<Store>>,
        ledger: HttpLedger,
        cfg: SubmitterConfig,
        random: Box<dyn FnMut() -> u64 + Send>,
    ) -> Self {
        Self {
            store,
            ledger,
            cfg,
            random,
            kick: Arc::new(Notify::new()),
            stats: Arc::new(Mutex::new(SubmitterStats::default())),
            held: BTreeMap::new(),
        }
    }

    /// Notify after storing a receipt to submit it without waiting for `idle_poll`.
    pub fn kicker(&self) -> Arc<Notify> {
        self.kick.clone()
    }

    /// Shared counters.
    pub fn stats(&self) -> Arc<Mutex<SubmitterStats>> {
        self.stats.clone()
    }

    fn bump(&self, f: impl FnOnce(&mut SubmitterStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    /// Runs until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Backoff::new(self.cfg.backoff_base, self.cfg.backoff_max);
        loop {
            let wait = match self.attempt().await {
                Ok(0) => {
                    backoff.reset();
                    self.cfg.idle_poll
                }
                Ok(_) => {
                    backoff.reset();
                    continue;
                }
                Err(e) => {
                    self.bump(|s| {
                        s.failures += 1;
                        s.last_error = Some(chain(&e));
                    });
                    let d = backoff.next_delay((self.random)());
                    tracing::debug!(
                        error = &e as &(dyn std::error::Error + 'static),
                        retry_in_ms = d.as_millis() as u64,
                        "receipt submission failed"
                    );
                    if backoff.failures() == 5 {
                        tracing::warn!(
                            error = &e as &(dyn std::error::Error + 'static),
                            "ledger unreachable; co-signed receipts are kept and retried"
                        );
                    }
                    d
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = self.kick.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One round: submits one batch; returns how many receipts were marked submitted.
    pub async fn attempt(&mut self) -> Result<usize, SubmitError> {
        let now = Instant::now();
        let retry = self.cfg.rejected_retry;
        self.held.retain(|_, t| now.duration_since(*t) < retry);
        let want = self.cfg.batch + self.held.len();
        let store = self.store.clone();
        let pending = tokio::task::spawn_blocking(move || {
            store.lock().map(|s| s.pending(want)).unwrap_or_default()
        })
        .await
        .map_err(|e| SubmitError::Store(Box::new(e)))?;
        let batch: Vec<CoSignedReceipt> = pending
            .into_iter()
            .filter(|c| !self.held.contains_key(&key(c)))
            .take(self.cfg.batch)
            .collect();
        if batch.is_empty() {
            return Ok(0);
        }
        let outcomes = self.ledger.post_batch(&batch).await?;
        self.bump(|s| {
            s.last_contact = Some(std::time::Instant::now());
            s.last_error = None;
        });
        let mut done = Vec::new();
        for (c, o) in batch.iter().zip(outcomes) {
            match o {
                ItemOutcome::Accepted => done.push(key(c)),
                ItemOutcome::Rejected(code) => {
                    tracing::warn!(session = %c.body().session_id, seq = c.body().seq, %code, "ledger rejected a co-signed receipt; kept for retry");
                    self.bump(|s| s.rejected += 1);
                    self.held.insert(key(c), now);
                }
            }
        }
        let n = done.len();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || match store.lock() {
            Ok(mut s) => s.mark_submitted(&done).map_err(BoxError::from),
            Err(_) => Err(BoxError::from("store mutex poisoned")),
        })
        .await
        .map_err(|e| SubmitError::Store(Box::new(e)))?
        .map_err(SubmitError::Store)?;
        self.bump(|s| s.accepted += n as u64);
        Ok(n)
    }
}

fn key(c: &CoSignedReceipt) -> (SessionId, u64) {
    (c.body().session_id, c.body().seq)
}
