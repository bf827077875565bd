//! Test-only helpers shared by the agent's unit tests.

use ferry_relay_core::{PolicyConfig, Relay, RelayConfig, StaticSecret};

/// A relay with WireGuard key `[1; 32]`, tunnel address 10.77.0.1, the default policy, no rate
/// limit and index salt 0: what the agent's unit tests need unless they say otherwise.
pub(crate) fn relay(max_peers: usize) -> Relay {
    Relay::new(RelayConfig {
        private_key: StaticSecret::from([1u8; 32]),
        tunnel_addresses: vec![std::net::Ipv4Addr::new(10, 77, 0, 1).into()],
        policy: PolicyConfig::default(),
        max_peers,
        client_rate_bytes: 0,
        index_salt: 0,
    })
}
