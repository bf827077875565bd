//! Egress policy: which inner destinations a client may reach.
//!
//! Order: the relay's own tunnel addresses (only configured services + optional ping), then the
//! operator `deny` list, then the operator `allow` list, then the default block of
//! private/special ranges and the router's own addresses; a destination that passes is then
//! checked against the exit port policy ([`ExitPorts`]: blocked ports, or only allowed ones).
//! Everything else is allowed.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::packet::{IpHeader, PROTO_TCP, PROTO_UDP, Transport};

/// IPv4 ranges blocked unless allowed: RFC 1918, CGNAT, loopback, link-local, multicast,
/// "this network", IETF/benchmark/documentation ranges, reserved and broadcast.
pub const DEFAULT_BLOCKED_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// IPv6 ranges blocked unless allowed: unspecified, loopback, IPv4-mapped (would bypass the v4
/// list), local-use NAT64, discard, documentation, 6to4, ULA, link-local, site-local, multicast.
pub const DEFAULT_BLOCKED_V6: &[&str] = &[
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// A transport protocol of a service on the relay's tunnel address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A service clients may reach on the relay's own tunnel addresses (e.g. DNS on udp/53).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Service {
    /// Transport protocol.
    pub proto: Proto,
    /// Destination port.
    pub port: u16,
}

/// TCP and/or UDP ports `first..=last` (an exit port rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRule {
    /// `None`: both TCP and UDP.
    pub proto: Option<Proto>,
    /// First port (> 0).
    pub first: u16,
    /// Last port (>= `first`).
    pub last: u16,
}

impl PortRule {
    /// Whether `proto`/`port` falls under this rule.
    pub fn matches(&self, proto: Proto, port: u16) -> bool {
        self.proto.is_none_or(|p| p == proto) && (self.first..=self.last).contains(&port)
    }
}

/// Which destination ports clients may use (TCP and UDP; other protocols are not
/// port-filtered). Protects the household's IP reputation (no outgoing SMTP, no torrents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitPorts {
    /// Every port except these.
    Block(Vec<PortRule>),
    /// Only these ports (a reduced exit policy).
    AllowOnly(Vec<PortRule>),
}

impl Default for ExitPorts {
    /// No port rule at all (the agent's config default blocks tcp/25).
    fn default() -> Self {
        Self::Block(Vec::new())
    }
}

impl ExitPorts {
    /// Whether any port is closed (an allow-list always closes some).
    pub fn has_rules(&self) -> bool {
        match self {
            Self::Block(r) => !r.is_empty(),
            Self::AllowOnly(_) => true,
        }
    }

    /// Whether `proto`/`port` may be used.
    pub fn allows(&self, proto: Proto, port: u16) -> bool {
        match self {
            Self::Block(r) => !r.iter().any(|r| r.matches(proto, port)),
            Self::AllowOnly(r) => r.iter().any(|r| r.matches(proto, port)),
        }
    }
}

/// Operator-facing policy settings.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    /// CIDRs exempted from the default block (deny still wins).
    pub allow: Vec<IpNet>,
    /// Extra CIDRs to block.
    pub deny: Vec<IpNet>,
    /// The router's own addresses (all interfaces); blocked unless allowed.
    pub router_addresses: Vec<IpAddr>,
    /// Services of the agent reachable on the relay's tunnel addresses.
    pub tunnel_services: Vec<Service>,
    /// Whether clients may ping the relay's tunnel addresses.
    pub tunnel_ping: bool,
    /// Exit port policy for destinations that pass the address rules.
    pub exit_ports: ExitPorts,
}

/// The outcome of a policy check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the packet.
    Allow,
    /// Destination blocked (private/special range, router address or deny list).
    Blocked,
    /// Destination is the relay's tunnel address but not a served port.
    TunnelAddress,
    /// Destination port closed by the exit port policy.
    ExitPort,
}

/// Compiled egress policy.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    cfg: PolicyConfig,
    tunnel_addresses: Vec<IpAddr>,
    blocked: Vec<IpNet>,
}

impl EgressPolicy {
    /// Builds the policy for a relay whose own tunnel addresses are `tunnel_addresses`.
    pub fn new(cfg: PolicyConfig, tunnel_addresses: &[IpAddr]) -> Self {
        let blocked = DEFAULT_BLOCKED_V4
            .iter()
            .chain(DEFAULT_BLOCKED_V6)
            .filter_map(|s| s.parse::<IpNet>().ok())
            .collect();
        let mut cfg = cfg;
        for n in cfg.allow.iter_mut().chain(cfg.deny.iter_mut()) {
            *n = canonical_net(*n);
        }
        Self {
            cfg,
            tunnel_addresses: tunnel_addresses.to_vec(),
            blocked,
        }
    }

    /// Replaces the router's own addresses (they change with DHCP/PPPoE on the WAN).
    pub fn set_router_addresses(&mut self, addresses: Vec<IpAddr>) {
        self.cfg.router_addresses = addresses;
    }

    /// Decides on an inner packet sent by a client.
    pub(crate) fn check(&self, hdr: &IpHeader) -> Verdict {
        let dst = canonical(hdr.dst);
        if self.tunnel_addresses.contains(&dst) {
            return self.check_tunnel_service(hdr.transport);
        }
        match self.check_addr(dst) {
            Verdict::Allow => match (port_of(hdr.transport), hdr.transport) {
                (Some((proto, port)), _) => self.check_port(proto, port),
                // Fails closed: a port rule cannot be checked on a header we could not read.
                (None, Transport::Unparsed) if self.cfg.exit_ports.has_rules() => Verdict::ExitPort,
                (None, _) => Verdict::Allow,
            },
            v => v,
        }
    }

    /// Decides on a destination port alone (for egress implementations that dial out).
    pub fn check_port(&self, proto: Proto, port: u16) -> Verdict {
        if self.cfg.exit_ports.allows(proto, port) {
            Verdict::Allow
        } else {
            Verdict::ExitPort
        }
    }

    /// Decides on a destination address alone (for egress implementations that dial out).
    pub fn check_addr(&self, dst: IpAddr) -> Verdict {
        let dst = canonical(dst);
        if self.tunnel_addresses.contains(&dst) {
            return Verdict::TunnelAddress;
        }
        // The router itself is never reachable, whatever `allow` opens around it (sharing a
        // printer's subnet must not expose the router's admin page on that subnet); services
        // on the router are reached on its tunnel address (`tunnel-services`).
        if self
            .cfg
            .router_addresses
            .iter()
            .any(|a| canonical(*a) == dst)
        {
            return Verdict::Blocked;
        }
        if self.cfg.deny.iter().any(|n| n.contains(&dst)) {
            return Verdict::Blocked;
        }
        if self.cfg.allow.iter().any(|n| n.contains(&dst)) {
            return Verdict::Allow;
        }
        if self.blocked.iter().any(|n| n.contains(&dst)) {
            return Verdict::Blocked;
        }
        Verdict::Allow
    }

    fn check_tunnel_service(&self, t: Transport) -> Verdict {
        let ok = match t {
            Transport::EchoRequest => self.cfg.tunnel_ping,
            Transport::Port(..) => match port_of(t) {
                Some((proto, port)) => self.cfg.tunnel_services.contains(&Service { proto, port }),
                None => return Verdict::TunnelAddress,
            },
            Transport::Other | Transport::Unparsed => false,
        };
        if ok {
            Verdict::Allow
        } else {
            Verdict::TunnelAddress
        }
    }
}

/// The TCP/UDP protocol and destination port of a transport, if it has one.
fn port_of(t: Transport) -> Option<(Proto, u16)> {
    match t {
        Transport::Port(PROTO_TCP, port) => Some((Proto::Tcp, port)),
        Transport::Port(PROTO_UDP, port) => Some((Proto::Udp, port)),
        _ => None,
    }
}

/// Rewrites an operator network written in IPv4-mapped (`::ffff:a.b.c.d/n`) or NAT64
/// well-known-prefix (`64:ff9b::a.b.c.d/n`) notation, `n >= 96`, as the IPv4 network it
/// denotes (`a.b.c.d/(n-96)`), because destinations are compared in canonical (IPv4) form and
/// such a network would otherwise never match. Other networks are returned truncated to their
/// prefix; broader IPv6 networks (e.g. `::/0`) apply to native IPv6 destinations only (the
/// IPv4 carried by a mapped or NAT64 destination is judged by the IPv4 rules).
pub fn canonical_net(net: IpNet) -> IpNet {
    let net = net.trunc();
    let IpNet::V6(v6) = net else {
        return net;
    };
    let prefix = v6.prefix_len();
    if prefix < 96 {
        return net;
    }
    let IpAddr::V4(v4) = canonical(IpAddr::V6(v6.network())) else {
        return net;
    };
    ipnet::Ipv4Net::new(v4, prefix - 96).map_or(net, IpNet::V4)
}

/// Maps IPv4-mapped (`::ffff:0:0/96`) and NAT64 well-known-prefix (`64:ff9b::/96`) IPv6
/// addresses to the IPv4 address they carry, so a v4 rule cannot be bypassed through them
/// (a router running NAT64 would otherwise reach `64:ff9b::192.168.1.1`).
fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let o = v6.octets();
                return IpAddr::V4(std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            a
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::packet::testpkt;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy(cfg: PolicyConfig) -> EgressPolicy {
        EgressPolicy::new(cfg, &[ip("10.77.0.1"), ip("fd77::1")])
    }

    /// First, last and a middle address of every default-blocked range.
    fn samples(net: &IpNet) -> Vec<IpAddr> {
        let mid = match net {
            IpNet::V4(n) => {
                let a = u32::from(n.network()) / 2 + u32::from(n.broadcast()) / 2;
                IpAddr::V4(a.into())
            }
            IpNet::V6(n) => {
                let a = u128::from(n.network()) / 2 + u128::from(n.broadcast()) / 2;
                IpAddr::V6(a.into())
            }
        };
        vec![net.network(), mid, net.broadcast()]
    }

    #[test]
    fn every_default_range_is_blocked_in_both_families() {
        let p = policy(PolicyConfig::default());
        for s in DEFAULT_BLOCKED_V4.iter().chain(DEFAULT_BLOCKED_V6) {
            let net: IpNet = s.parse().unwrap();
            for a in samples(&net) {
                assert_eq!(p.check_addr(a), Verdict::Blocked, "{a} in {net}");
            }
        }
        for named in [
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "100.100.1.1",
            "169.254.1.1",
            "127.0.0.1",
            "224.0.0.251",
            "255.255.255.255",
            "fd00::1",
            "fe80::1",
            "::1",
            "ff02::1",
            "::ffff:192.168.1.1",
            "::ffff:10.0.0.1",
            "64:ff9b::c0a8:101",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
        ] {
            assert_eq!(p.check_addr(ip(named)), Verdict::Blocked, "{named}");
        }
    }

    #[test]
    fn public_destinations_are_allowed() {
        let p = policy(PolicyConfig::default());
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
        ] {
            assert_eq!(p.check_addr(ip(a)), Verdict::Allow, "{a}");
        }
    }

    #[test]
    fn allow_list_overrides_default_block_but_not_deny() {
        let p = policy(PolicyConfig {
            allow: vec![
                "192.168.50.0/24".parse().unwrap(),
                "fd00:50::/64".parse().unwrap(),
            ],
            deny: vec![
                "192.168.50.7/32".parse().unwrap(),
                "8.8.8.0/24".parse().unwrap(),
            ],
            ..PolicyConfig::default()
        });
        assert_eq!(p.check_addr(ip("192.168.50.1")), Verdict::Allow);
        assert_eq!(p.check_addr(ip("fd00:50::9")), Verdict::Allow);
        assert_eq!(p.check_addr(ip("192.168.50.7")), Verdict::Blocked);
        assert_eq!(p.check_addr(ip("192.168.51.1")), Verdict::Blocked);
        assert_eq!(p.check_addr(ip("8.8.8.8")), Verdict::Blocked);
        assert_eq!(p.check_addr(ip("1.1.1.1")), Verdict::Allow);
    }

    #[test]
    fn allow_never_opens_the_routers_own_addresses() {
        // Sharing a printer's subnet must not expose the router's address on it (its admin
        // page, /status): allowed ranges stop short of the router's own addresses, v4 and v6,
        // also when they change at run time.
        let mut p = policy(PolicyConfig {
            allow: vec![
                "10.202.0.0/24".parse().unwrap(),
                "fd00:202::/64".parse().unwrap(),
            ],
            router_addresses: vec![ip("10.202.0.1"), ip("fd00:202::1")],
            ..PolicyConfig::default()
        });
        assert_eq!(
            p.check_addr(ip("10.202.0.9")),
            Verdict::Allow,
            "positive control"
        );
        assert_eq!(
            p.check_addr(ip("fd00:202::9")),
            Verdict::Allow,
            "positive control"
        );
        assert_eq!(p.check_addr(ip("10.202.0.1")), Verdict::Blocked);
        assert_eq!(p.check_addr(ip("fd00:202::1")), Verdict::Blocked);
        assert_eq!(
            p.check_addr(ip("::ffff:10.202.0.1")),
            Verdict::Blocked,
            "v4-mapped"
        );
        p.set_router_addresses(vec![ip("10.202.0.9")]);
        assert_eq!(p.check_addr(ip("10.202.0.9")), Verdict::Blocked);
    }

    #[test]
    fn router_addresses_are_blocked_even_when_public() {
        let p = policy(PolicyConfig {
            router_addresses: vec![ip("203.0.114.9"), ip("2001:4860::9")],
            ..PolicyConfig::default()
        });
        assert_eq!(p.check_addr(ip("203.0.114.9")), Verdict::Blocked);
        assert_eq!(p.check_addr(ip("2001:4860::9")), Verdict::Blocked);
        assert_eq!(p.check_addr(ip("203.0.114.10")), Verdict::Allow);
    }

    #[test]
    fn tunnel_address_serves_only_configured_services_and_ping() {
        let cfg = PolicyConfig {
            tunnel_services: vec![Service {
                proto: Proto::Udp,
                port: 53,
            }],
            tunnel_ping: true,
            ..PolicyConfig::default()
        };
        let p = policy(cfg.clone());
        let c4 = ip("10.77.0.2");
        let r4 = ip("10.77.0.1");
        let c6 = ip("fd77::2");
        let r6 = ip("fd77::1");
        let check = |p: &EgressPolicy, pkt: Vec<u8>| p.check(&IpHeader::parse(&pkt).unwrap());
        assert_eq!(check(&p, testpkt::udp(c4, r4, 53, b"q")), Verdict::Allow);
        assert_eq!(check(&p, testpkt::udp(c6, r6, 53, b"q")), Verdict::Allow);
        assert_eq!(check(&p, testpkt::tcp(c4, r4, 53)), Verdict::TunnelAddress);
        assert_eq!(check(&p, testpkt::tcp(c4, r4, 22)), Verdict::TunnelAddress);
        assert_eq!(check(&p, testpkt::tcp(c6, r6, 80)), Verdict::TunnelAddress);
        assert_eq!(check(&p, testpkt::ping(c4, r4)), Verdict::Allow);
        assert_eq!(check(&p, testpkt::ping(c6, r6)), Verdict::Allow);
        let no_ping = policy(PolicyConfig {
            tunnel_ping: false,
            ..cfg
        });
        assert_eq!(
            check(&no_ping, testpkt::ping(c4, r4)),
            Verdict::TunnelAddress
        );
        // An allow entry covering the tunnel subnet does not open the relay itself.
        let open = policy(PolicyConfig {
            allow: vec!["10.77.0.0/24".parse().unwrap()],
            ..PolicyConfig::default()
        });
        assert_eq!(
            check(&open, testpkt::tcp(c4, r4, 22)),
            Verdict::TunnelAddress
        );
        assert_eq!(
            check(&open, testpkt::tcp(c4, ip("10.77.0.3"), 22)),
            Verdict::Allow
        );
    }

    #[test]
    fn mapped_and_nat64_operator_networks_are_rewritten_as_ipv4() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        for (written, v4) in [
            ("::ffff:8.8.8.0/120", "8.8.8.0/24"),
            ("::ffff:8.8.8.8/128", "8.8.8.8/32"),
            ("::ffff:0:0/96", "0.0.0.0/0"),
            ("64:ff9b::c0a8:100/120", "192.168.1.0/24"),
            ("64:ff9b::192.168.1.77/128", "192.168.1.77/32"),
            ("::ffff:10.1.2.3/104", "10.0.0.0/8"),
        ] {
            assert_eq!(canonical_net(net(written)), net(v4), "{written}");
        }
        // Native IPv6, IPv4, broader prefixes and local-use NAT64 are kept (truncated).
        for (written, kept) in [
            ("2001:db8::1/32", "2001:db8::/32"),
            ("::/0", "::/0"),
            ("64:ff9b::/64", "64:ff9b::/64"),
            ("64:ff9b:1::a00:1/128", "64:ff9b:1::a00:1/128"),
            ("10.1.2.3/8", "10.0.0.0/8"),
        ] {
            assert_eq!(canonical_net(net(written)), net(kept), "{written}");
        }
        // In a policy: a mapped deny blocks the IPv4 destination in every notation, a NAT64
        // allow opens the private IPv4 range in every notation.
        let p = policy(PolicyConfig {
            deny: vec![net("::ffff:8.8.8.0/120")],
            allow: vec![net("64:ff9b::c0a8:100/120")],
            ..PolicyConfig::default()
        });
        for a in ["8.8.8.8", "::ffff:8.8.8.8", "64:ff9b::808:808"] {
            assert_eq!(p.check_addr(ip(a)), Verdict::Blocked, "{a}");
        }
        for a in ["192.168.1.5", "::ffff:192.168.1.5", "64:ff9b::c0a8:105"] {
            assert_eq!(p.check_addr(ip(a)), Verdict::Allow, "{a}");
        }
        assert_eq!(p.check_addr(ip("192.168.2.5")), Verdict::Blocked);
        assert_eq!(p.check_addr(ip("8.8.4.4")), Verdict::Allow);
    }

    #[test]
    fn exit_ports_block_or_allow_only_and_leave_other_protocols_and_the_tunnel_alone() {
        let (c4, c6) = (ip("10.77.0.2"), ip("fd77::2"));
        let (far4, far6) = (ip("1.1.1.1"), ip("2606:4700::1111"));
        let smtp = PortRule {
            proto: Some(Proto::Tcp),
            first: 25,
            last: 25,
        };
        let torrents = PortRule {
            proto: None,
            first: 6881,
            last: 6889,
        };
        let p = policy(PolicyConfig {
            exit_ports: ExitPorts::Block(vec![smtp, torrents]),
            tunnel_services: vec![Service {
                proto: Proto::Tcp,
                port: 25,
            }],
            ..PolicyConfig::default()
        });
        let chk = |pkt: Vec<u8>| p.check(&IpHeader::parse(&pkt).unwrap());
        assert_eq!(chk(testpkt::tcp(c4, far4, 25)), Verdict::ExitPort);
        assert_eq!(chk(testpkt::tcp(c6, far6, 25)), Verdict::ExitPort);
        assert_eq!(
            chk(testpkt::udp(c4, far4, 25, b"x")),
            Verdict::Allow,
            "tcp only"
        );
        assert_eq!(chk(testpkt::tcp(c4, far4, 26)), Verdict::Allow);
        for port in [6881, 6885, 6889] {
            assert_eq!(chk(testpkt::udp(c4, far4, port, b"x")), Verdict::ExitPort);
            assert_eq!(chk(testpkt::tcp(c6, far6, port)), Verdict::ExitPort);
        }
        assert_eq!(chk(testpkt::udp(c4, far4, 6890, b"x")), Verdict::Allow);
        assert_eq!(
            chk(testpkt::ping(c4, far4)),
            Verdict::Allow,
            "ICMP has no port"
        );
        // The address rules come first; the relay's own services are not exit traffic.
        assert_eq!(
            chk(testpkt::tcp(c4, ip("192.168.1.1"), 25)),
            Verdict::Blocked
        );
        assert_eq!(chk(testpkt::tcp(c4, ip("10.77.0.1"), 25)), Verdict::Allow);
        assert_eq!(p.check_port(Proto::Tcp, 25), Verdict::ExitPort);

        // A reduced exit policy: only web and DNS.
        let web = |proto, port| PortRule {
            proto: Some(proto),
            first: port,
            last: port,
        };
        let p = policy(PolicyConfig {
            exit_ports: ExitPorts::AllowOnly(vec![
                web(Proto::Tcp, 443),
                web(Proto::Tcp, 80),
                web(Proto::Udp, 53),
            ]),
            ..PolicyConfig::default()
        });
        let chk = |pkt: Vec<u8>| p.check(&IpHeader::parse(&pkt).unwrap());
        assert_eq!(chk(testpkt::tcp(c4, far4, 443)), Verdict::Allow);
        assert_eq!(chk(testpkt::udp(c4, far4, 53, b"q")), Verdict::Allow);
        assert_eq!(chk(testpkt::udp(c4, far4, 443, b"q")), Verdict::ExitPort);
        assert_eq!(chk(testpkt::tcp(c4, far4, 22)), Verdict::ExitPort);
        assert_eq!(chk(testpkt::ping(c4, far4)), Verdict::Allow);
        // No rule at all (the core's default): every port.
        let p = policy(PolicyConfig::default());
        assert_eq!(p.check_port(Proto::Tcp, 25), Verdict::Allow);
        // Headers the port cannot be read from fail closed under a rule, and only then: an
        // IPv6 TCP SYN behind an AH header, a truncated TCP header.
        let mut ah = testpkt::tcp(c6, far6, 25);
        ah[6] = 51;
        let mut short = testpkt::tcp(c4, far4, 25);
        short.truncate(20 + 2);
        let smtp_only = policy(PolicyConfig {
            exit_ports: ExitPorts::Block(vec![smtp]),
            ..PolicyConfig::default()
        });
        for pkt in [&ah, &short] {
            let hdr = IpHeader::parse(pkt).unwrap();
            assert_eq!(hdr.transport, Transport::Unparsed);
            assert_eq!(smtp_only.check(&hdr), Verdict::ExitPort);
            assert_eq!(p.check(&hdr), Verdict::Allow, "no rule: nothing to refuse");
        }
    }
}
