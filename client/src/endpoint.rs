//! A relay endpoint as configured: `ip:port`, `[v6]:port` or `host:port` (home routers
//! usually sit behind a dynamic public IP and are reached through a dynamic-DNS name).
//!
//! Names are resolved once, when a command starts, with the system resolver
//! (`getaddrinfo` via [`tokio::net::lookup_host`], so `/etc/hosts` and nsswitch apply), and
//! before the kill switch goes in. The first address the resolver returns is used, whatever
//! its family: glibc already orders the answers by RFC 6724 / `gai.conf`, so this is
//! deterministic for a given host configuration. Must not: resolve anything while parsing
//! the config (`export-wg` and validation keep the name as written).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

/// How long the system resolver may take before `connect`/`socks5` give up.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A relay endpoint: an address, or a host name still to be resolved, plus a UDP port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub(crate) enum Endpoint {
    /// `ip:port` or `[v6]:port`.
    Addr(SocketAddr),
    /// `host:port` (resolved when the command starts).
    Name { host: String, port: u16 },
}

impl From<SocketAddr> for Endpoint {
    fn from(a: SocketAddr) -> Self {
        Self::Addr(a)
    }
}

impl fmt::Display for Endpoint {
    /// As written in the config (a wg-quick `Endpoint =` accepts both forms).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(a) => write!(f, "{a}"),
            Self::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl TryFrom<String> for Endpoint {
    type Error = anyhow::Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl FromStr for Endpoint {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let hint = "expected ip:port, [ipv6]:port or host:port";
        if let Ok(a) = s.parse::<SocketAddr>() {
            if a.port() == 0 {
                bail!("endpoint {s:?}: port must be 1..=65535");
            }
            return Ok(Self::Addr(a));
        }
        if s.contains('/') {
            bail!("endpoint {s:?}: write host:port, without a scheme or path");
        }
        if s.starts_with('[') {
            bail!("endpoint {s:?}: not a valid [ipv6]:port ({hint})");
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            if !s.is_empty() {
                bail!("endpoint {s:?}: missing port ({hint})");
            }
            bail!("endpoint is empty ({hint})");
        };
        if host.contains(':') {
            bail!("endpoint {s:?}: IPv6 addresses need brackets, e.g. [2001:db8::1]:51820");
        }
        let port: u16 =
            port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
                anyhow!("endpoint {s:?}: port {port:?} is not 1..=65535 ({hint})")
            })?;
        if host.is_empty() {
            bail!("endpoint {s:?}: missing host ({hint})");
        }
        if let Err(why) = check_hostname(host) {
            bail!("endpoint {s:?}: {host:?} is not a valid host name ({why})");
        }
        Ok(Self::Name {
            host: host.to_owned(),
            port,
        })
    }
}

/// RFC 1123 host name rules (letters, digits, `-`, `_` tolerated; dot-separated labels of
/// 1..=63 characters, 253 in all; the last label is not all digits, i.e. not a broken IPv4).
fn check_hostname(host: &str) -> std::result::Result<(), &'static str> {
    let h = host.strip_suffix('.').unwrap_or(host);
    if h.is_empty() || h.len() > 253 {
        return Err("length must be 1..=253");
    }
    for label in h.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated label must be 1..=63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, '-', '_' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label must not start or end with '-'");
        }
    }
    if h.rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("looks like an IPv4 address but is not a valid one");
    }
    Ok(())
}

impl Endpoint {
    /// The configured host name, if this is not a literal address.
    pub(crate) fn host(&self) -> Option<&str> {
        match self {
            Self::Addr(_) => None,
            Self::Name { host, .. } => Some(host),
        }
    }

    /// The address to use: a literal as is; a name through the system resolver (the first
    /// address returned). Errors name the host.
    pub(crate) async fn resolve(&self) -> Result<SocketAddr> {
        let (host, port) = match self {
            Self::Addr(a) => return Ok(*a),
            Self::Name { host, port } => (host.as_str(), *port),
        };
        let lookup = tokio::net::lookup_host((host, port));
        let mut addrs = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
            .await
            .map_err(|_| anyhow!("timed out after {}s", RESOLVE_TIMEOUT.as_secs()))
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| format!("cannot resolve relay endpoint host {host:?}"))?;
        let addr = addrs
            .next()
            .with_context(|| format!("relay endpoint host {host:?} resolved to no address"))?;
        tracing::debug!(host, %addr, "resolved the relay endpoint");
        Ok(addr)
    }

    /// [`Self::resolve`] outside a runtime (a short-lived current-thread one).
    pub(crate) fn resolve_blocking(&self) -> Result<SocketAddr> {
        if let Self::Addr(a) = self {
            return Ok(*a);
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(self.resolve())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn err(s: &str) -> String {
        format!("{:#}", s.parse::<Endpoint>().unwrap_err())
    }

    #[test]
    fn literal_addresses_parse_unchanged() {
        let e: Endpoint = "198.51.100.1:51820".parse().unwrap();
        assert_eq!(e, Endpoint::Addr("198.51.100.1:51820".parse().unwrap()));
        assert_eq!(e.to_string(), "198.51.100.1:51820");
        assert_eq!(e.host(), None);
        let e: Endpoint = "[2001:db8::1]:51820".parse().unwrap();
        assert_eq!(e, Endpoint::Addr("[2001:db8::1]:51820".parse().unwrap()));
        assert_eq!(e.to_string(), "[2001:db8::1]:51820");
    }

    #[test]
    fn host_names_parse_and_print_as_written() {
        for s in [
            "relay.example.net:51820",
            "my-home.dyndns.org:443",
            "localhost:1",
            "fqdn.example.:65535",
            "_srv.x1.example:9",
        ] {
            let e: Endpoint = s.parse().unwrap();
            let (host, port) = s.rsplit_once(':').unwrap();
            assert_eq!(
                e,
                Endpoint::Name {
                    host: host.into(),
                    port: port.parse().unwrap()
                }
            );
            assert_eq!(e.host(), Some(host));
            assert_eq!(e.to_string(), s);
        }
    }

    #[test]
    fn bad_endpoints_are_clear_errors() {
        assert!(err("relay.example.net").contains("missing port"));
        assert!(err("198.51.100.1").contains("missing port"));
        assert!(err("").contains("empty"));
        assert!(err(":51820").contains("missing host"));
        assert!(err("relay.example.net:").contains("port \"\""));
        assert!(err("relay.example.net:0").contains("1..=65535"));
        assert!(err("1.2.3.4:0").contains("1..=65535"));
        assert!(err("relay.example.net:65536").contains("1..=65535"));
        assert!(err("relay.example.net:http").contains("port \"http\""));
        assert!(err("2001:db8::1:51820").contains("brackets"));
        assert!(err("[2001:db8::1]").contains("[ipv6]:port"));
        assert!(err("[2001:db8::zz]:1").contains("[ipv6]:port"));
        assert!(err("300.1.1.1:51820").contains("IPv4"));
        assert!(err("bad host:51820").contains("not a valid host name"));
        assert!(err("-bad.example:51820").contains("'-'"));
        assert!(err("a..b:51820").contains("label"));
        assert!(err(&format!("{}.x:1", "a".repeat(64))).contains("label"));
        assert!(err("http://relay.example.net:51820").contains("without a scheme"));
        // Every error says what is expected or what is wrong, and quotes the input.
        assert!(err("relay:x").contains("\"relay:x\""));
    }

    #[tokio::test]
    async fn literals_resolve_to_themselves() {
        let e: Endpoint = "[2001:db8::1]:51820".parse().unwrap();
        assert_eq!(
            e.resolve().await.unwrap(),
            "[2001:db8::1]:51820".parse::<SocketAddr>().unwrap()
        );
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_with_the_configured_port() {
        let e: Endpoint = "localhost:51820".parse().unwrap();
        let a = e.resolve().await.unwrap();
        assert!(a.ip().is_loopback(), "{a}");
        assert_eq!(a.port(), 51820);
    }

    // The failure path (an unresolvable name is an error naming the host, nothing changed on
    // the host) is tested in netns by tests/tests/client_connect.rs, where the lookup cannot
    // reach a real resolver; a unit test here would query the machine's DNS servers.

    #[test]
    fn resolve_blocking_works_outside_a_runtime() {
        let e: Endpoint = "localhost:9".parse().unwrap();
        assert!(e.resolve_blocking().unwrap().ip().is_loopback());
    }
}
