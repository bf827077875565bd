//! ferry: the privacy VPN client that pays relays by co-signing receipts.

fn main() {}
