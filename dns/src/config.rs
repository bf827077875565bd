//! The `[dns]` table of the agent config and its validation.
//!
//! ```toml
//! [dns]
//! listen = ["10.77.0.1:53"]        # agent default: each tunnel address, port 53
//! cache-size = 1024                # cached answers (entries), TTLs respected
//! timeout-ms = 2000                # per upstream attempt
//! attempts = 2
//! [[dns.upstream]]
//! protocol = "tls"                 # udp | tcp | plain (udp, tcp fallback) | tls | https
//! address = "1.1.1.1"              # IP or IP:port (defaults 53 / 853 / 443)
//! tls-name = "cloudflare-dns.com"  # required for tls and https
//! # path = "/dns-query"            # https only
//! ```
//! Optional `ca-file = "/etc/ferry/dns-ca.pem"` replaces the bundled webpki roots for
//! tls/https upstreams. Builds without the `dot`/`doh` features (the small-router builds) refuse
//! `tls`/`https` upstreams and `ca-file` with an error naming the missing feature.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use crate::DnsError;

/// Forwarder configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DnsConfig {
    /// Turn the forwarder on or off (agent config; the library ignores it).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Addresses to listen on (UDP and TCP each). Empty: the agent fills in its tunnel
    /// addresses with port 53.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Upstream resolvers, tried in order of health.
    #[serde(default)]
    pub upstream: Vec<Upstream>,
    /// Maximum cached answers; 0 disables caching.
    #[serde(default = "default_cache_size")]
    pub cache_size: u64,
    /// Timeout of one upstream attempt, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts per query (across upstreams).
    #[serde(default = "default_attempts")]
    pub attempts: usize,
    /// Queries handled at once (UDP and TCP together); more are dropped.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
    /// Open TCP client connections at once.
    #[serde(default = "default_max_tcp_connections")]
    pub max_tcp_connections: usize,
    /// PEM bundle of CA certificates trusted for tls/https upstreams *instead of* the bundled
    /// webpki roots (for a self-hosted upstream with a private CA).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: Vec::new(),
            upstream: Vec::new(),
            cache_size: default_cache_size(),
            timeout_ms: default_timeout_ms(),
            attempts: default_attempts(),
            max_inflight: default_max_inflight(),
            max_tcp_connections: default_max_tcp_connections(),
            ca_file: None,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_cache_size() -> u64 {
    1024
}
fn default_timeout_ms() -> u64 {
    2000
}
fn default_attempts() -> usize {
    2
}
fn default_max_inflight() -> usize {
    256
}
fn default_max_tcp_connections() -> usize {
    64
}

/// Transport to an upstream resolver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// DNS over UDP only.
    Udp,
    /// DNS over TCP only.
    Tcp,
    /// UDP, retrying over TCP on truncation.
    Plain,
    /// DNS over TLS (RFC 7858), port 853 by default. Certificates checked against webpki roots.
    Tls,
    /// DNS over HTTPS (RFC 8484, HTTP/2), port 443 by default.
    Https,
}

impl Protocol {
    fn default_port(self) -> u16 {
        match self {
            Self::Udp | Self::Tcp | Self::Plain => 53,
            Self::Tls => 853,
            Self::Https => 443,
        }
    }
}

/// One upstream resolver.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Upstream {
    /// Transport.
    pub protocol: Protocol,
    /// `IP` or `IP:port` (IPv6 with port: `[::1]:53`). Names are not accepted: resolving the
    /// resolver would need a resolver.
    pub address: String,
    /// Name checked in the upstream's TLS certificate (tls, https).
    #[serde(default)]
    pub tls_name: Option<String>,
    /// HTTP path (https only; default `/dns-query`).
    #[serde(default)]
    pub path: Option<String>,
}

impl Upstream {
    /// Plain DNS (UDP with TCP fallback) to `addr`; handy in tests.
    pub fn plain(addr: SocketAddr) -> Self {
        Self {
            protocol: Protocol::Plain,
            address: addr.to_string(),
            tls_name: None,
            path: None,
        }
    }

    /// The socket address (default port filled in).
    pub fn socket_addr(&self) -> Result<SocketAddr, DnsError> {
        let invalid =
            |reason: &str| DnsError::Config(format!("upstream {:?}: {reason}", self.address));
        if let Ok(addr) = self.address.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(invalid("port 0"));
            }
            return Ok(addr);
        }
        let ip: IpAddr = self
            .address
            .parse()
            .map_err(|_| invalid("expected an IP address or IP:port"))?;
        Ok(SocketAddr::new(ip, self.protocol.default_port()))
    }

    /// Checks the upstream against this build: address, `tls-name` and `path` where they
    /// apply, and that its transport is compiled in. Returns the socket address.
    pub(crate) fn check(&self) -> Result<SocketAddr, DnsError> {
        let addr = self.socket_addr()?;
        if self.path.is_some() && self.protocol != Protocol::Https {
            return Err(DnsError::Config(format!(
                "upstream {}: path is only valid for https",
                self.address
            )));
        }
        if matches!(self.protocol, Protocol::Tls | Protocol::Https) {
            // Checked first so the error message is the most useful one.
            self.tls_name()?;
            let (compiled, feature) = match self.protocol {
                Protocol::Tls => (cfg!(feature = "dot"), "dot"),
                _ => (cfg!(feature = "doh"), "doh"),
            };
            if !compiled {
                return Err(DnsError::Config(format!(
                    "upstream {}: protocol {:?} needs ferry-dns built with the {feature} feature",
                    self.address, self.protocol
                )));
            }
            if self.protocol == Protocol::Https && !self.https_path().starts_with('/') {
                return Err(DnsError::Config(format!(
                    "upstream {}: path must start with '/'",
                    self.address
                )));
            }
        }
        Ok(addr)
    }

    fn tls_name(&self) -> Result<&str, DnsError> {
        match self.tls_name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => Ok(name),
            _ => Err(DnsError::Config(format!(
                "upstream {}: protocol {:?} needs tls-name",
                self.address, self.protocol
            ))),
        }
    }

    #[cfg_attr(not(feature = "doh"), allow(dead_code))]
    fn https_path(&self) -> &str {
        self.path.as_deref().unwrap_or("/dns-query")
    }

    #[cfg(feature = "resolver")]
    pub(crate) fn to_name_server(
        &self,
    ) -> Result<hickory_resolver::config::NameServerConfig, DnsError> {
        use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ProtocolConfig};
        use std::sync::Arc;
        let addr = self.check()?;
        let protocols = match self.protocol {
            Protocol::Udp => vec![ProtocolConfig::Udp],
            Protocol::Tcp => vec![ProtocolConfig::Tcp],
            Protocol::Plain => vec![ProtocolConfig::Udp, ProtocolConfig::Tcp],
            #[cfg(feature = "dot")]
            Protocol::Tls => vec![ProtocolConfig::Tls {
                server_name: Arc::from(self.tls_name()?),
            }],
            #[cfg(feature = "doh")]
            Protocol::Https => vec![ProtocolConfig::Https {
                server_name: Arc::from(self.tls_name()?),
                path: Arc::from(self.https_path()),
            }],
            // `check` refused transports that are not compiled in.
            #[allow(unreachable_patterns)]
            other => {
                return Err(DnsError::Config(format!(
                    "upstream {}: protocol {other:?} is not compiled in",
                    self.address
                )));
            }
        };
        let connections = protocols
            .into_iter()
            .map(|p| {
                let mut c = ConnectionConfig::new(p);
                c.port = addr.port();
                c
            })
            .collect();
        Ok(NameServerConfig::new(addr.ip(), true, connections))
    }
}

impl DnsConfig {
    /// Checks everything that can be checked without binding sockets.
    pub fn validate(&self) -> Result<(), DnsError> {
        if self.upstream.is_empty() {
            return Err(DnsError::Config(
                "at least one [[dns.upstream]] is required".into(),
            ));
        }
        for upstream in &self.upstream {
            upstream.check()?;
        }
        #[cfg(not(feature = "dot"))]
        if let Some(ca_file) = &self.ca_file {
            return Err(DnsError::Config(format!(
                "ca-file {} needs ferry-dns built with the dot feature",
                ca_file.display()
            )));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 30_000 {
            return Err(DnsError::Config("timeout-ms must be 1..=30000".into()));
        }
        if self.attempts == 0 || self.attempts > 10 {
            return Err(DnsError::Config("attempts must be 1..=10".into()));
        }
        if self.max_inflight == 0 || self.max_tcp_connections == 0 {
            return Err(DnsError::Config(
                "max-inflight and max-tcp-connections must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Per-attempt upstream timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> DnsConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    #[cfg(feature = "doh")]
    fn full_table_parses_and_validates() {
        let cfg = parse(
            r#"
            listen = ["10.77.0.1:53", "[fd77::1]:53"]
            cache-size = 50
            timeout-ms = 700
            [[upstream]]
            protocol = "tls"
            address = "1.1.1.1"
            tls-name = "cloudflare-dns.com"
            [[upstream]]
            protocol = "https"
            address = "[2606:4700:4700::1111]:443"
            tls-name = "cloudflare-dns.com"
            path = "/dns-query"
            [[upstream]]
            protocol = "plain"
            address = "192.0.2.53:5353"
            "#,
        );
        cfg.validate().unwrap();
        assert_eq!(cfg.listen.len(), 2);
        assert_eq!(cfg.upstream[0].socket_addr().unwrap().port(), 853);
        assert_eq!(cfg.upstream[2].socket_addr().unwrap().port(), 5353);
        let ns = cfg.upstream[2].to_name_server().unwrap();
        assert_eq!(ns.connections.len(), 2);
        assert!(ns.connections.iter().all(|c| c.port == 5353));
        assert_eq!(cfg.attempts, 2);
    }

    #[test]
    fn tls_and_https_need_a_tls_name() {
        for protocol in ["tls", "https"] {
            let cfg = parse(&format!(
                "[[upstream]]\nprotocol = \"{protocol}\"\naddress = \"9.9.9.9\"\n"
            ));
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains("tls-name"), "{err}");
        }
    }

    #[test]
    #[cfg(not(feature = "dot"))]
    fn encrypted_upstreams_and_ca_file_name_the_missing_feature() {
        for protocol in ["tls", "https"] {
            let cfg = parse(&format!(
                "[[upstream]]\nprotocol = \"{protocol}\"\naddress = \"9.9.9.9\"\ntls-name = \"dns.quad9.net\"\n"
            ));
            let err = cfg.validate().unwrap_err().to_string();
            let feature = if protocol == "tls" { "dot" } else { "doh" };
            assert!(
                err.contains(&format!("needs ferry-dns built with the {feature} feature")),
                "{err}"
            );
        }
        let cfg = parse(
            "ca-file = \"/etc/ferry/dns-ca.pem\"\n[[upstream]]\nprotocol = \"plain\"\naddress = \"9.9.9.9\"\n",
        );
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains(
                "ca-file /etc/ferry/dns-ca.pem needs ferry-dns built with the dot feature"
            ),
            "{err}"
        );
        // Plain upstreams are fine without the features.
        parse("[[upstream]]\nprotocol = \"plain\"\naddress = \"9.9.9.9\"\n")
            .validate()
            .unwrap();
    }

    #[test]
    fn bad_values_are_rejected() {
        let bad = [
            "[[upstream]]\nprotocol = \"udp\"\naddress = \"dns.google\"\n",
            "[[upstream]]\nprotocol = \"udp\"\naddress = \"1.1.1.1:0\"\n",
            "[[upstream]]\nprotocol = \"udp\"\naddress = \"1.1.1.1\"\npath = \"/x\"\n",
            "timeout-ms = 0\n[[upstream]]\nprotocol = \"udp\"\naddress = \"1.1.1.1\"\n",
            "",
        ];
        for text in bad {
            assert!(
                parse(text).validate().is_err(),
                "{text:?} should be invalid"
            );
        }
        assert!(toml::from_str::<DnsConfig>("cache_size = 3\n").is_err());
        assert!(
            toml::from_str::<DnsConfig>(
                "[[upstream]]\nprotocol = \"quic\"\naddress = \"1.1.1.1\"\n"
            )
            .is_err()
        );
    }
}
