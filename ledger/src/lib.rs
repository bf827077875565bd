//! ferry-ledger: the rewards ledger. It owns client balances, voucher issuance (signed
//! with the ledger's Ed25519 key), idempotent ingestion of co-signed receipts (credit only
//! the delta over the last accepted receipt of a session, clamp at the voucher
//! allowance), per-epoch reports with Merkle roots and inclusion proofs, and the SQLite /
//! PostgreSQL stores behind them, served as an axum HTTP JSON API.
//!
//! It must not define wire formats of its own for receipts or vouchers (those belong to
//! `ferry-receipts`), must not trust a submitter's counts without both signatures, and
//! must never credit the same bytes twice. The pure rules live in [`domain`] (no I/O);
//! [`service`] takes the time as an argument; only `http` and the binary read clocks.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
pub mod directory;
pub mod domain;
pub mod http;
pub mod merkle;
pub mod money;
pub mod service;
pub mod stats;
pub mod store;
pub mod testkit;
pub mod verify;

pub use domain::{Outcome, Reject, Role};
pub use service::{ItemError, Ledger, LedgerError, Params, VoucherRequest};
pub use store::{PgStore, SqliteStore, Store, StoreError};
