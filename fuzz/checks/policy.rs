//! Check for the `egress_policy` fuzz target, shared with
//! `relay/core/tests/fuzz_replay_policy.rs` (included with `#[path]`).
//!
//! Builds an `EgressPolicy` from fuzzed allow/deny/router-address lists and probes it with
//! fuzzed destinations. The decisions must follow the documented order (tunnel address,
//! deny, allow, default block) and an independent list of the ranges the household must be
//! protected from (written here from the team brief, not copied from the policy), and an
//! IPv4 destination must get the same verdict in its IPv4-mapped IPv6 form. Operator networks
//! written in IPv4-mapped or NAT64 notation (prefix >= 96) apply to the IPv4 network they carry.

use std::net::{IpAddr, Ipv4Addr};

use ferry_relay_core::{
    DEFAULT_BLOCKED_V4, DEFAULT_BLOCKED_V6, EgressPolicy, PolicyConfig, Verdict,
};
use ipnet::IpNet;

use crate::input::Input;

/// Ranges a client must never reach unless the operator allows them (team brief, rule 5).
pub(crate) const PROTECTED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

pub(crate) fn protected() -> Vec<IpNet> {
    PROTECTED.iter().filter_map(|s| s.parse().ok()).collect()
}

/// The IPv4 address an IPv6 destination stands for: IPv4-mapped (`::ffff:0:0/96`) and NAT64
/// well-known-prefix (`64:ff9b::/96`, RFC 6052: a router running NAT64 translates it).
pub(crate) fn canonical(a: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = a else { return a };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let o = v6.octets();
    if o[..12] == [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0] {
        return IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    a
}

/// An operator network: one written in IPv4-mapped or NAT64 notation with a prefix of at
/// least 96 bits denotes the IPv4 network it carries (known gap G4, now normalised).
fn operator_net(n: &IpNet) -> IpNet {
    if let IpNet::V6(v6) = n {
        let len = v6.prefix_len();
        if let (true, IpAddr::V4(v4)) = (len >= 96, canonical(IpAddr::V6(v6.network()))) {
            if let Ok(net) = ipnet::Ipv4Net::new(v4, len - 96) {
                return IpNet::V4(net.trunc());
            }
        }
    }
    *n
}

/// `64:ff9b::a.b.c.d`.
fn nat64(v4: Ipv4Addr) -> IpAddr {
    let o = v4.octets();
    IpAddr::V6(std::net::Ipv6Addr::new(
        0x64,
        0xff9b,
        0,
        0,
        0,
        0,
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([o[2], o[3]]),
    ))
}

pub(crate) const TUNNEL: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1)),
    IpAddr::V6(std::net::Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1)),
];

/// Returns how many probes were checked.
pub(crate) fn check(data: &[u8]) -> usize {
    let total = DEFAULT_BLOCKED_V4.len() + DEFAULT_BLOCKED_V6.len();
    let parsed = DEFAULT_BLOCKED_V4
        .iter()
        .chain(DEFAULT_BLOCKED_V6)
        .filter(|s| s.parse::<IpNet>().is_ok())
        .count();
    assert_eq!(parsed, total, "a default-blocked range does not parse");

    let mut inp = Input(data);
    let counts = inp.byte().unwrap_or(0);
    let mut cfg = PolicyConfig {
        tunnel_ping: counts & 0x40 != 0,
        ..PolicyConfig::default()
    };
    for _ in 0..(counts & 3) {
        cfg.allow.extend(inp.net());
    }
    for _ in 0..((counts >> 2) & 3) {
        cfg.deny.extend(inp.net());
    }
    for _ in 0..((counts >> 4) & 3) {
        cfg.router_addresses.extend(inp.addr());
    }
    let policy = EgressPolicy::new(cfg.clone(), &TUNNEL);
    let protected = protected();
    let mut probes = 0;
    while let Some(dst) = inp.addr() {
        probes += 1;
        let verdict = policy.check_addr(dst);
        let c = canonical(dst);
        // The same destination in the other family's notation gets the same verdict.
        if let IpAddr::V4(v4) = c {
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            assert_eq!(verdict, policy.check_addr(mapped), "{dst} vs {mapped}");
            assert_eq!(verdict, policy.check_addr(c), "{dst} vs {c}");
            let n64 = nat64(v4);
            assert_eq!(verdict, policy.check_addr(n64), "{dst} vs {n64}");
        }
        let denied = cfg.deny.iter().any(|n| operator_net(n).contains(&c));
        let allowed = cfg.allow.iter().any(|n| operator_net(n).contains(&c));
        let is_router = cfg.router_addresses.iter().any(|a| canonical(*a) == c);
        let is_protected = protected.iter().any(|n| n.contains(&c));
        if TUNNEL.contains(&c) {
            assert_eq!(verdict, Verdict::TunnelAddress, "{dst}: tunnel address");
        } else if denied {
            assert_eq!(verdict, Verdict::Blocked, "{dst}: deny must win");
        } else if allowed {
            assert_eq!(verdict, Verdict::Allow, "{dst}: operator allowed it");
        } else if is_protected || is_router {
            assert_eq!(
                verdict,
                Verdict::Blocked,
                "{dst}: household range reachable"
            );
        }
    }
    probes
}
