//! ferry-ledger: rewards ledger (vouchers, co-signed receipt ingestion, epochs).

fn main() {}
