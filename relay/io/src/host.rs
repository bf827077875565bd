//! Host network setup for TUN mode: IP forwarding and an nftables masquerade table, both undone
//! on drop; and discovery of the router's own addresses for the egress policy.

use std::io::{self, Write};
use std::net::IpAddr;
use std::process::{Command, Stdio};

use ipnet::IpNet;

const SYSCTLS: [&str; 2] = [
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv6/conf/all/forwarding",
];

/// Enables IPv4/IPv6 forwarding; restores the previous values when dropped.
#[derive(Debug)]
pub struct ForwardingGuard {
    previous: Vec<(&'static str, String)>,
}

impl ForwardingGuard {
    /// Sets forwarding to 1 for IPv4 and (if `ipv6`) IPv6.
    pub fn enable(ipv6: bool) -> io::Result<Self> {
        let mut previous = Vec::new();
        for path in SYSCTLS.iter().take(if ipv6 { 2 } else { 1 }) {
            let old = std::fs::read_to_string(path)?.trim().to_owned();
            if old != "1" {
                std::fs::write(path, "1")?;
                previous.push((*path, old));
            }
        }
        Ok(Self { previous })
    }
}

impl Drop for ForwardingGuard {
    fn drop(&mut self) {
        for (path, old) in &self.previous {
            if let Err(e) = std::fs::write(path, old) {
                tracing::warn!(path, error = %e, "could not restore forwarding sysctl");
            }
        }
    }
}

/// An nftables table `inet ferry-<tun>` masquerading the tunnel subnets out of every other
/// interface; deleted when dropped.
#[derive(Debug)]
pub struct NatGuard {
    table: String,
}

impl NatGuard {
    /// Installs the table (replacing a stale one from a crashed run). Needs `nft` and root.
    pub fn install(tun: &str, subnets: &[IpNet]) -> io::Result<Self> {
        let table = format!("ferry-{tun}");
        let _ = nft(&format!("delete table inet {table}\n"));
        nft(&ruleset(&table, tun, subnets))?;
        Ok(Self { table })
    }

    /// The table name (for logs and docs).
    pub fn table(&self) -> &str {
        &self.table
    }
}

impl Drop for NatGuard {
    fn drop(&mut self) {
        if let Err(e) = nft(&format!("delete table inet {}\n", self.table)) {
            tracing::warn!(table = %self.table, error = %e, "could not remove nftables table");
        }
    }
}

/// The nftables ruleset text (public for docs/tests).
fn ruleset(table: &str, tun: &str, subnets: &[IpNet]) -> String {
    let mut rules = String::new();
    for net in subnets {
        let fam = if net.addr().is_ipv6() { "ip6" } else { "ip" };
        rules.push_str(&format!(
            "    {fam} saddr {} oifname != \"{tun}\" masquerade\n",
            net.trunc()
        ));
    }
    format!(
        "table inet {table} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n{rules}  }}\n  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    iifname \"{tun}\" accept\n    oifname \"{tun}\" ct state established,related accept\n  }}\n}}\n"
    )
}

fn nft(script: &str) -> io::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Every address configured on this host's interfaces (the "router's own addresses").
/// Every address configured on this host, with its interface name.
pub fn interface_addresses() -> io::Result<Vec<(String, IpAddr)>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        out.push((ifa.interface_name, ip));
    }
    Ok(out)
}

/// Interfaces that hold a default route (IPv4 or IPv6): the WAN side of a router, even when
/// its address is private (behind an ISP modem). Read from /proc/net/route and ipv6_route.
pub fn default_route_interfaces() -> Vec<String> {
    let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    default_route_ifaces(&v4, &v6)
}

fn default_route_ifaces(route4: &str, route6: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    // Iface Destination Gateway Flags ... Mask ...: a default route has destination and mask 0.
    for l in route4.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() > 7 && f[1] == "00000000" && f[7] == "00000000" {
            out.push(f[0].to_owned());
        }
    }
    // dest dest_len src src_len next_hop metric refcnt use flags iface
    for l in route6.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 10 && f[1] == "00" && f[0].bytes().all(|b| b == b'0') && f[9] != "lo" {
            out.push(f[9].to_owned());
        }
    }
    out.sort();
    out.dedup();
    out
}

pub fn local_addresses() -> io::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let Some(addr) = ifa.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            out.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            out.push(IpAddr::V6(v6.ip()));
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn default_route_interfaces_come_from_both_route_tables() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  wan\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  br-lan\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 wan6\n\
                  fd770000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 ferry0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n";
        assert_eq!(
            default_route_ifaces(v4, v6),
            vec!["wan".to_owned(), "wan6".to_owned()]
        );
        assert!(default_route_ifaces("", "").is_empty());
    }

    #[test]
    fn ruleset_masquerades_each_subnet_by_family() {
        let r = ruleset(
            "ferry-ferry0",
            "ferry0",
            &[
                "10.77.0.1/24".parse().unwrap(),
                "fd77::1/64".parse().unwrap(),
            ],
        );
        assert!(
            r.contains("ip saddr 10.77.0.0/24 oifname != \"ferry0\" masquerade"),
            "{r}"
        );
        assert!(
            r.contains("ip6 saddr fd77::/64 oifname != \"ferry0\" masquerade"),
            "{r}"
        );
        assert!(r.starts_with("table inet ferry-ferry0 {"));
    }

    #[test]
    fn local_addresses_include_loopback() {
        let a = local_addresses().unwrap();
        assert!(a.contains(&"127.0.0.1".parse().unwrap()), "{a:?}");
    }
}
