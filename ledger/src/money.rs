//! Integer money math: the one implementation relays, clients and the ledger share lives in
//! `ferry_receipts::money` (debits round up, credits round down, see there).

pub use ferry_receipts::money::{GIB, bytes_within, debit_micros, earned_micros};
