//! Host network changes made by `ferry connect` and undone by `ferry disconnect`: the kill
//! switch (nft table `inet ferry`), full-tunnel routes, the host route to the relay endpoint,
//! and the resolver (`resolv.conf`, backed up and restored). Uses `nft` and `ip` (iproute2).
//!
//! What was changed is remembered in `<state dir>/netcfg.json`, so `ferry disconnect` can undo
//! it even after the connect process died.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The nft table (family `inet`) holding the kill switch.
pub(crate) const TABLE: &str = "ferry";

/// Routes that send everything through the tunnel without replacing the default route.
pub(crate) const FULL_TUNNEL_V4: [&str; 2] = ["0.0.0.0/1", "128.0.0.0/1"];
/// IPv6 halves.
pub(crate) const FULL_TUNNEL_V6: [&str; 2] = ["::/1", "8000::/1"];

/// What `connect` changed, for `disconnect`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Applied {
    /// Kill switch table installed.
    pub(crate) kill_switch: bool,
    /// Host route to the relay endpoint we added (`ip route` destination).
    pub(crate) endpoint_route: Option<String>,
    /// `--auto`: host routes to the other relays of the ranking (failover).
    #[serde(default)]
    pub(crate) extra_routes: Vec<String>,
    /// resolv.conf we rewrote, and where its backup is.
    pub(crate) resolv_conf: Option<(PathBuf, PathBuf)>,
    /// Network namespace (inode) these changes were made in.
    #[serde(default)]
    pub(crate) netns: Option<u64>,
}

impl Applied {
    pub(crate) fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("netcfg.json")
    }

    pub(crate) fn load(state_dir: &Path) -> Self {
        std::fs::read_to_string(Self::path(state_dir))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    pub(crate) fn save(&self, state_dir: &Path) -> Result<()> {
        let p = Self::path(state_dir);
        std::fs::write(&p, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", p.display()))
    }
}

/// The kill-switch ruleset: on output, only loopback, the tunnel device and the WireGuard
/// datagrams to the relay endpoint may leave; everything else is dropped (IPv4 and IPv6).
/// Replacing an existing table happens in the same nft transaction, so there is no gap.
pub(crate) fn kill_switch_rules(tun: &str, allowed: &[SocketAddr]) -> String {
    let mut allow = String::new();
    for ep in allowed {
        let daddr = match ep.ip() {
            IpAddr::V4(a) => format!("ip daddr {a}"),
            IpAddr::V6(a) => format!("ip6 daddr {a}"),
        };
        allow.push_str(&format!("\t\t{daddr} udp dport {} accept\n", ep.port()));
    }
    format!(
        "table inet {TABLE} {{}}\n\
         delete table inet {TABLE}\n\
         table inet {TABLE} {{\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority 0; policy drop;\n\
         \t\toifname \"lo\" accept\n\
         \t\toifname \"{tun}\" accept\n\
         {allow}\
         \t\tcounter comment \"ferry kill switch\"\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority 0; policy drop;\n\
         \t\toifname \"{tun}\" accept\n\
         \t\tiifname \"{tun}\" ct state established,related accept\n\
         \t}}\n\
         }}\n"
    )
}

/// Installs (or atomically replaces) the kill switch; `allowed` are the relay's UDP
/// endpoints (WireGuard, and the Hello port of a paid relay).
pub(crate) fn kill_switch_on(tun: &str, allowed: &[SocketAddr]) -> Result<()> {
    nft_script(&kill_switch_rules(tun, allowed)).context("installing the kill switch")
}

/// Removes the kill switch (no error if it is absent).
pub(crate) fn kill_switch_off() -> Result<()> {
    nft_script(&format!(
        "table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"
    ))
    .context("removing the kill switch")
}

/// Whether the kill-switch table exists.
pub(crate) fn kill_switch_present() -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", TABLE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn nft_script(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (is nftables installed?)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Runs `ip <args>`.
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `ip route` arguments of the current path to `dst` (`via GW dev IF` or `dev IF`), from
/// `ip route get` output.
pub(crate) fn parse_route_get(out: &str) -> Option<(Option<String>, String)> {
    let words: Vec<&str> = out.split_whitespace().collect();
    let after = |k: &str| {
        words
            .iter()
            .position(|w| *w == k)
            .and_then(|i| words.get(i + 1))
            .map(|s| (*s).to_owned())
    };
    Some((after("via"), after("dev")?))
}

/// Pins the relay endpoint to its current (physical) path with a host route, so the
/// full-tunnel routes never capture the encrypted datagrams. Returns the route destination.
pub(crate) fn pin_endpoint_route(endpoint: IpAddr) -> Result<String> {
    let out = ip(&["route", "get", &endpoint.to_string()])
        .with_context(|| format!("no route to the relay endpoint {endpoint}"))?;
    pin_like(endpoint, &out)
}

/// After a network change: keeps the pinned host route to `endpoint` if it is still there,
/// otherwise pins it again through the main table's default route (the full-tunnel routes are
/// two halves, never `default`, so this is the physical path).
pub(crate) fn repin_endpoint_route(endpoint: IpAddr) -> Result<()> {
    let (fam, dst) = host_route(endpoint);
    if !ip(&[fam, "route", "show", &dst])?.trim().is_empty() {
        return Ok(());
    }
    let out = ip(&[fam, "route", "show", "default"])?;
    let line = out
        .lines()
        .next()
        .context("no default route (no network yet)")?;
    pin_like(endpoint, line).map(drop)
}

/// (`ip` family flag, host-route destination) of `endpoint`.
fn host_route(endpoint: IpAddr) -> (&'static str, String) {
    match endpoint {
        IpAddr::V4(a) => ("-4", format!("{a}/32")),
        IpAddr::V6(a) => ("-6", format!("{a}/128")),
    }
}

/// Routes `endpoint` (host route) the way `route` (an `ip route` line) goes: via, dev.
fn pin_like(endpoint: IpAddr, route: &str) -> Result<String> {
    let (via, dev) =
        parse_route_get(route).with_context(|| format!("cannot parse the route `{route}`"))?;
    let (fam, dst) = host_route(endpoint);
    let mut args = vec![fam, "route", "replace", &dst];
    if let Some(v) = &via {
        args.extend(["via", v]);
    }
    args.extend(["dev", &dev]);
    ip(&args)?;
    Ok(dst)
}

/// Puts `addresses` on `tun` and removes those of `previous` it no longer has (a new session
/// may get other tunnel addresses than the last).
pub(crate) fn set_tunnel_addresses(
    tun: &str,
    previous: &[ipnet::IpNet],
    addresses: &[ipnet::IpNet],
) -> Result<()> {
    let fam = |a: &ipnet::IpNet| if a.addr().is_ipv6() { "-6" } else { "-4" };
    for a in previous.iter().filter(|a| !addresses.contains(a)) {
        let _ = ip(&[fam(a), "addr", "del", &a.to_string(), "dev", tun]);
    }
    for a in addresses {
        ip(&[fam(a), "addr", "replace", &a.to_string(), "dev", tun])?;
    }
    Ok(())
}

/// Routes both halves of each family's address space into `tun`. IPv6 routes are best
/// effort (a host without IPv6 cannot leak it; the kill switch drops it anyway).
pub(crate) fn full_tunnel_routes(tun: &str) -> Result<()> {
    for r in FULL_TUNNEL_V4 {
        ip(&["-4", "route", "replace", r, "dev", tun])?;
    }
    for r in FULL_TUNNEL_V6 {
        if let Err(e) = ip(&["-6", "route", "replace", r, "dev", tun]) {
            tracing::warn!(error = %format!("{e:#}"), "IPv6 full-tunnel route not installed (IPv6 stays blocked by the kill switch)");
        }
    }
    Ok(())
}

/// The resolv.conf text pointing at the tunnel's resolvers.
pub(crate) fn resolv_conf_text(dns: &[IpAddr]) -> String {
    let mut s = String::from("# written by `ferry connect`; restored by `ferry disconnect`\n");
    for d in dns {
        s.push_str(&format!("nameserver {d}\n"));
    }
    s.push_str("options edns0\n");
    s
}

/// Points `path` at `dns`, backing the original up to `backup` first (an existing backup is
/// kept: it is the user's file from before an earlier, unfinished session). Written in place,
/// not renamed, because resolv.conf is often a bind mount (netns, containers).
pub(crate) fn set_dns(path: &Path, backup: &Path, dns: &[IpAddr]) -> Result<()> {
    if !backup.exists() {
        let orig = std::fs::read(path).unwrap_or_default();
        std::fs::write(backup, orig)
            .with_context(|| format!("backing up {} to {}", path.display(), backup.display()))?;
    }
    std::fs::write(path, resolv_conf_text(dns))
        .with_context(|| format!("writing {}", path.display()))
}

/// Restores `path` from `backup` and deletes the backup.
pub(crate) fn restore_dns(path: &Path, backup: &Path) -> Result<()> {
    let orig =
        std::fs::read(backup).with_context(|| format!("reading backup {}", backup.display()))?;
    std::fs::write(path, orig).with_context(|| format!("restoring {}", path.display()))?;
    std::fs::remove_file(backup).with_context(|| format!("removing {}", backup.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kill_switch_allows_only_loopback_tunnel_and_the_endpoint() {
        let r = kill_switch_rules(
            "ferry0",
            &[
                "198.51.100.1:51820".parse().unwrap(),
                "198.51.100.1:51821".parse().unwrap(),
            ],
        );
        assert!(r.contains("policy drop;"));
        assert!(r.contains("oifname \"lo\" accept"));
        assert!(r.contains("oifname \"ferry0\" accept"));
        assert!(r.contains("ip daddr 198.51.100.1 udp dport 51820 accept"));
        assert!(r.contains("ip daddr 198.51.100.1 udp dport 51821 accept"));
        // Replace in one transaction: create-if-missing, delete, re-create.
        assert!(r.starts_with("table inet ferry {}\ndelete table inet ferry\n"));
        let r6 = kill_switch_rules("t", &["[2001:db8::1]:4000".parse().unwrap()]);
        assert!(r6.contains("ip6 daddr 2001:db8::1 udp dport 4000 accept"));
    }

    #[test]
    fn route_get_output_is_parsed_with_and_without_gateway() {
        let gw = "198.51.100.1 via 192.168.1.1 dev eth0 src 192.168.1.5 uid 0 \n    cache \n";
        assert_eq!(
            parse_route_get(gw),
            Some((Some("192.168.1.1".into()), "eth0".into()))
        );
        let link = "198.51.100.1 dev fe1x0c src 198.51.100.2 uid 0 \n    cache \n";
        assert_eq!(parse_route_get(link), Some((None, "fe1x0c".into())));
        assert_eq!(parse_route_get("unreachable"), None);
    }

    #[test]
    fn dns_is_backed_up_once_and_restored() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("resolv.conf");
        let backup = dir.path().join("resolv.conf.ferry-backup");
        std::fs::write(&conf, "nameserver 192.168.1.1\n").unwrap();
        let dns: Vec<IpAddr> = vec!["10.77.0.1".parse().unwrap(), "fd77::1".parse().unwrap()];
        set_dns(&conf, &backup, &dns).unwrap();
        let now = std::fs::read_to_string(&conf).unwrap();
        assert!(now.contains("nameserver 10.77.0.1\nnameserver fd77::1\n"));
        assert!(!now.contains("192.168.1.1"));
        // A second connect must not back up our own file over the user's.
        set_dns(&conf, &backup, &dns).unwrap();
        restore_dns(&conf, &backup).unwrap();
        assert_eq!(
            std::fs::read_to_string(&conf).unwrap(),
            "nameserver 192.168.1.1\n"
        );
        assert!(!backup.exists());
        assert!(restore_dns(&conf, &backup).is_err());
    }

    #[test]
    fn applied_changes_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Applied::load(dir.path()), Applied::default());
        let a = Applied {
            kill_switch: true,
            endpoint_route: Some("198.51.100.1/32".into()),
            extra_routes: vec!["203.0.113.5/32".into()],
            resolv_conf: Some(("/etc/resolv.conf".into(), dir.path().join("b"))),
            netns: Some(4026531840),
        };
        a.save(dir.path()).unwrap();
        assert_eq!(Applied::load(dir.path()), a);
    }
}
