//! Check for the `agent_config` fuzz target, shared with
//! `router-agent/tests/fuzz_replay_config.rs`. Both use ferry-agent's library target
//! (`ferry_agent::config`).
//!
//! Arbitrary text goes through `Config::parse` (TOML + validation). It must not panic, and
//! an accepted config must satisfy everything the agent relies on later.

use std::collections::HashSet;
use std::path::Path;

use ferry_relay_core::{EgressPolicy, IpNet};

use ferry_agent::config::{Config, MAX_PEERS_LIMIT};

/// Returns whether the text was accepted.
pub(crate) fn check(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let v = match Config::parse(text, Path::new("/etc/ferry")) {
        Ok(v) => v,
        Err(e) => {
            // Error messages are built from the input; formatting them must not panic.
            let msg = format!("{e:#}");
            assert!(!msg.is_empty());
            return false;
        }
    };
    assert!(v.private_key_file.is_absolute(), "key path not resolved");
    assert_ne!(v.listen.port(), 0);
    assert!(!v.address.is_empty());
    let min_mtu = if v.address.iter().any(|a| a.addr().is_ipv6()) {
        1280
    } else {
        576
    };
    assert!((min_mtu..=9000).contains(&v.mtu), "mtu {}", v.mtu);
    let l = &v.raw.limits;
    assert!((1..=MAX_PEERS_LIMIT).contains(&l.max_peers));
    assert!(v.peers.len() <= l.max_peers);
    let name = &v.raw.egress.tun_name;
    // A name Linux accepts (dev_valid_name): 1..=15 bytes, not "." or "..", no '/', ':', space.
    assert!((1..=15).contains(&name.len()), "tun-name {name:?}");
    assert!(name != "." && name != "..", "tun-name {name:?}");
    assert!(
        !name.contains(['/', ':']) && !name.chars().any(char::is_whitespace),
        "tun-name {name:?}"
    );
    // Operator networks in IPv4-mapped or NAT64 notation are stored as IPv4 networks.
    for n in v.allow.iter().chain(&v.deny) {
        if let IpNet::V6(n6) = n {
            let o = n6.network().octets();
            let mapped = o[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
            let nat64 = o[..12] == [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0];
            assert!(
                n6.prefix_len() < 96 || !(mapped || nat64),
                "{n} kept as IPv6"
            );
        }
    }
    let (mut names, mut keys, mut nets) = (HashSet::new(), HashSet::new(), HashSet::new());
    for p in &v.peers {
        assert!(names.insert(p.name.clone()), "duplicate name accepted");
        assert!(keys.insert(p.public_key), "duplicate key accepted");
        assert!(!p.allowed_ips.is_empty());
        for n in &p.allowed_ips {
            assert!(nets.insert(n.trunc()), "duplicate allowed IP accepted");
        }
    }
    assert!(v.tunnel_services.iter().all(|s| s.port != 0));
    // The accepted values build a relay policy without panicking.
    let policy = EgressPolicy::new(v.policy(Vec::new()), &v.tunnel_ips());
    for a in v.tunnel_ips() {
        let _ = policy.check_addr(a);
    }
    true
}
