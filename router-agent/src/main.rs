//! ferry-agent: the router daemon relaying paying clients' WireGuard traffic and signing receipts.

fn main() {}
