//! Async front of the store for the agent: many sessions ask to persist co-signed
//! receipts concurrently; requests arriving within `linger` are written with one
//! `append_batch` (one fsync), bounding flash writes, and each caller learns the outcome
//! only after that fsync.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::{Record, Store, StoreError};

/// Why a persist request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PersistError {
    /// Disk full: do not ack, do not extend credit; the receipt will come again.
    #[error("receipt store is full")]
    NoSpace,
    /// Another store failure (logged by the persister).
    #[error("receipt store write failed")]
    Failed,
    /// The persister task is gone.
    #[error("persister stopped")]
    Closed,
}

struct Req {
    records: Vec<Record>,
    done: oneshot::Sender<Result<(), PersistError>>,
}

/// Handle to the batching persister task (cheap to clone).
#[derive(Debug, Clone)]
pub struct Persister {
    tx: mpsc::Sender<Req>,
}

impl std::fmt::Debug for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Req")
            .field("records", &self.records.len())
            .finish()
    }
}

impl Persister {
    /// Starts the task. `max_batch` records per fsync at most; after the first request
    /// it waits up to `linger` for more (0 = write what is queued right away).
    pub fn spawn(
        store: Arc<Mutex<Store>>,
        max_batch: usize,
        linger: Duration,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(run(store, rx, max_batch.max(1), linger));
        (Self { tx }, task)
    }

    /// Persists `records` (fsynced) and returns once they are durable.
    pub async fn persist(&self, records: Vec<Record>) -> Result<(), PersistError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Req { records, done })
            .await
            .map_err(|_| PersistError::Closed)?;
        rx.await.unwrap_or(Err(PersistError::Closed))
    }
}

async fn run(
    store: Arc<Mutex<Store>>,
    mut rx: mpsc::Receiver<Req>,
    max_batch: usize,
    linger: Duration,
) {
    while let Some(first) = rx.recv().await {
        let mut n = first.records.len();
        let mut reqs = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        while n < max_batch {
            let next = if linger.is_zero() {
                rx.try_recv().ok()
            } else {
                tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .ok()
                    .flatten()
            };
            let Some(r) = next else { break };
            n += r.records.len();
            reqs.push(r);
        }
        let records: Vec<Record> = reqs.iter().flat_map(|r| r.records.clone()).collect();
        let store = store.clone();
        let res = tokio::task::spawn_blocking(move || match store.lock() {
            Ok(mut s) => s.append_batch(records),
            Err(_) => Err(StoreError::Io {
                op: "lock",
                source: std::io::Error::other("store mutex poisoned"),
            }),
        })
        .await;
        let out = match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(StoreError::NoSpace)) => Err(PersistError::NoSpace),
            Ok(Err(e)) => {
                tracing::warn!(
                    error = &e as &(dyn std::error::Error + 'static),
                    "receipt store append failed"
                );
                Err(PersistError::Failed)
            }
            Err(_) => Err(PersistError::Failed),
        };
        for r in reqs {
            let _ = r.done.send(out);
        }
    }
}
