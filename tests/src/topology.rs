//! The standard Ferry test topology: a client, a home router with a LAN, and an internet host.
//!
//! ```text
//!   client ns                 router ns                              inet ns
//!  198.51.100.2/24 ---veth--- 198.51.100.1/24 (router "WAN" as the client sees it)
//!  2001:db8:5100::2/64        2001:db8:5100::1/64
//!                             203.0.113.1/24 ---------------veth--- 203.0.113.2/24
//!                             2001:db8:1::1/64                      2001:db8:1::2/64
//!                             default via 203.0.113.2               (no route to anything else)
//!                             192.168.77.1/24, fd00:77::1/64
//!                                  |veth
//!                             lan ns: 192.168.77.2/24, fd00:77::2/64, default via the router
//! ```
//! The client has no default route: the only way for it to reach the internet host is through a
//! tunnel terminated on the router. The router forwards (v4 and v6); the internet host knows only
//! its own subnet, so it can answer only the router's address (masquerading is required).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::Result;

use crate::netns::{Lab, Ns};

/// Client's public-looking address towards the router.
pub const CLIENT_WAN4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// Spare client address used for roaming.
pub const CLIENT_WAN4_ALT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
/// Client's IPv6 address towards the router.
pub const CLIENT_WAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x5100, 0, 0, 0, 0, 2);
/// Router address the client reaches the relay's UDP port on.
pub const ROUTER_WAN4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Router IPv6 address on the client side.
pub const ROUTER_WAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x5100, 0, 0, 0, 0, 1);
/// Router address on the internet side (what the internet host sees after masquerading).
pub const ROUTER_UP4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// Router IPv6 address on the internet side.
pub const ROUTER_UP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// The internet host.
pub const INET4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// The internet host, IPv6.
pub const INET6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
/// Router's LAN address (its admin port listens here, among others).
pub const ROUTER_LAN4: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
/// Router's LAN IPv6 address.
pub const ROUTER_LAN6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
/// A household device on the LAN.
pub const LAN_HOST4: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
/// The household device, IPv6.
pub const LAN_HOST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);

/// Port of the data service on the internet host and on the LAN host.
pub const DATA_PORT: u16 = 8000;
/// Port of the UDP echo service on the internet host and LAN host.
pub const ECHO_PORT: u16 = 7007;
/// Router admin port (think LuCI), listening on every router address.
pub const ADMIN_PORT: u16 = 8080;

/// Every address the router owns outside any tunnel.
pub fn router_addrs() -> Vec<IpAddr> {
    vec![
        ROUTER_WAN4.into(),
        ROUTER_UP4.into(),
        ROUTER_LAN4.into(),
        ROUTER_WAN6.into(),
        ROUTER_UP6.into(),
        ROUTER_LAN6.into(),
    ]
}

/// `ip:port` helper.
pub fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// The four namespaces, wired and addressed; owns the [`Lab`].
#[derive(Debug)]
pub struct Topology {
    /// Owner of everything (drop order: this is dropped last by the test).
    pub lab: Lab,
    /// The paying client.
    pub client: Ns,
    /// The home router running the relay.
    pub router: Ns,
    /// The internet host.
    pub inet: Ns,
    /// A household device behind the router.
    pub lan: Ns,
    /// Client-side veth in the client namespace.
    pub client_if: String,
    /// Router's veth towards the client.
    pub router_wan_if: String,
    /// Router's veth towards the internet host.
    pub router_up_if: String,
    /// Router's veth towards the LAN.
    pub router_lan_if: String,
}

impl Topology {
    /// Builds the topology in a fresh lab.
    pub fn build() -> Result<Self> {
        let mut lab = Lab::new()?;
        let client = lab.add_ns("client")?;
        let router = lab.add_ns("router")?;
        let inet = lab.add_ns("inet")?;
        let lan = lab.add_ns("lan")?;
        let (client_if, router_wan_if) = (lab.ifname("c"), lab.ifname("rc"));
        let (router_up_if, inet_if) = (lab.ifname("ri"), lab.ifname("i"));
        let (router_lan_if, lan_if) = (lab.ifname("rl"), lab.ifname("l"));
        lab.veth(&client, &client_if, &router, &router_wan_if)?;
        lab.veth(&router, &router_up_if, &inet, &inet_if)?;
        lab.veth(&router, &router_lan_if, &lan, &lan_if)?;

        client.addr(&client_if, &format!("{CLIENT_WAN4}/24"))?;
        client.addr(&client_if, &format!("{CLIENT_WAN6}/64"))?;
        router.addr(&router_wan_if, &format!("{ROUTER_WAN4}/24"))?;
        router.addr(&router_wan_if, &format!("{ROUTER_WAN6}/64"))?;
        router.addr(&router_up_if, &format!("{ROUTER_UP4}/24"))?;
        router.addr(&router_up_if, &format!("{ROUTER_UP6}/64"))?;
        router.addr(&router_lan_if, &format!("{ROUTER_LAN4}/24"))?;
        router.addr(&router_lan_if, &format!("{ROUTER_LAN6}/64"))?;
        inet.addr(&inet_if, &format!("{INET4}/24"))?;
        inet.addr(&inet_if, &format!("{INET6}/64"))?;
        lan.addr(&lan_if, &format!("{LAN_HOST4}/24"))?;
        lan.addr(&lan_if, &format!("{LAN_HOST6}/64"))?;

        router.route(&["default", "via", &INET4.to_string()])?;
        router.route(&["::/0", "via", &INET6.to_string()])?;
        lan.route(&["default", "via", &ROUTER_LAN4.to_string()])?;
        lan.route(&["::/0", "via", &ROUTER_LAN6.to_string()])?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        router.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        Ok(Self {
            lab,
            client,
            router,
            inet,
            lan,
            client_if,
            router_wan_if,
            router_up_if,
            router_lan_if,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_match_the_documented_prefixes() {
        assert_eq!(ROUTER_LAN6.to_string(), "fd00:77::1");
        assert_eq!(LAN_HOST6.to_string(), "fd00:77::2");
        assert_eq!(INET6.to_string(), "2001:db8:1::2");
        assert_eq!(ROUTER_WAN6.to_string(), "2001:db8:5100::1");
    }
}
