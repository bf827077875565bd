//! `client.toml`: where keys and receipts live, which ledger to use, and the relays the
//! user can connect to. Loaded only by [`Config::load`], which validates.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use ferry_keys::WgPublicKey;
use ferry_receipts::PublicKey;
use ipnet::IpNet;
use serde::Deserialize;

use crate::endpoint::Endpoint;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Config {
    /// `[client]` section.
    #[serde(default)]
    pub(crate) client: ClientSection,
    /// `[[relay]]` entries.
    #[serde(default, rename = "relay")]
    pub(crate) relays: Vec<RelayEntry>,
    /// Set when the file did not exist (so errors can name it).
    #[serde(skip)]
    missing: Option<PathBuf>,
}

/// `[client]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ClientSection {
    /// Ledger base URL (`http://host:port` or `https://host[:port]`): receipt submission;
    /// default for `voucher request` and `balance`.
    pub(crate) ledger_url: Option<String>,
    /// PEM CA certificate(s) an `https://` ledger must chain to (instead of the web roots).
    pub(crate) ledger_ca_file: Option<PathBuf>,
    /// Receipt log (ferry-store). Default: `<key dir>/receipts.log`.
    pub(crate) receipts: Option<PathBuf>,
    /// Over-claim tolerance, basis points of the own count (default 200 = 2 %).
    pub(crate) tolerance_bp: Option<u32>,
    /// Over-claim tolerance, absolute KiB (default 1024).
    pub(crate) tolerance_slack_kib: Option<u64>,
}

/// One `[[relay]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RelayEntry {
    /// Name used on the command line (`ferry connect NAME`).
    pub(crate) name: String,
    /// The relay's WireGuard UDP endpoint: `ip:port`, `[v6]:port` or `host:port` (a name is
    /// resolved once when `connect`/`socks5` start).
    pub(crate) endpoint: Endpoint,
    /// The relay's WireGuard public key (base64).
    pub(crate) public_key: String,
    /// Our tunnel addresses (`10.77.0.2/32`, `fd77::2/128`). Paid relays assign them at
    /// session setup (`Address`), which overrides this.
    #[serde(default)]
    pub(crate) address: Vec<String>,
    /// DNS servers to use while connected (the relay's resolver, reached through the tunnel).
    #[serde(default)]
    pub(crate) dns: Vec<IpAddr>,
    /// Inner MTU.
    #[serde(default = "default_mtu")]
    pub(crate) mtu: u16,
    /// WireGuard persistent keepalive seconds (0 = off).
    #[serde(default = "default_keepalive")]
    pub(crate) keepalive: u16,
    /// Paid sessions: the relay's Ed25519 receipts key (hex). Absent = trusted peer, no receipts.
    pub(crate) identity_key: Option<String>,
    /// Paid sessions: the relay's tunnel address running the control service (port 51821).
    pub(crate) control_address: Option<IpAddr>,
    /// Paid sessions: the voucher file (base64). Default `<key dir>/voucher`.
    pub(crate) voucher: Option<PathBuf>,
    /// Paid sessions: the relay's public Hello port (default: endpoint IP, port 51821).
    pub(crate) hello: Option<SocketAddr>,
}

fn default_mtu() -> u16 {
    1420
}

fn default_keepalive() -> u16 {
    25
}

/// A relay entry with its fields parsed.
#[derive(Debug, Clone)]
pub(crate) struct Relay {
    pub(crate) name: String,
    /// As configured (unresolved); see [`Endpoint::resolve`].
    pub(crate) endpoint: Endpoint,
    pub(crate) public_key: WgPublicKey,
    pub(crate) address: Vec<IpNet>,
    pub(crate) dns: Vec<IpAddr>,
    pub(crate) mtu: u16,
    pub(crate) keepalive: u16,
    pub(crate) paid: Option<Paid>,
    /// Chosen from the directory (`--auto`): control address, DNS and MTU come with the
    /// session, and a failing relay is left sooner for the next.
    pub(crate) from_directory: bool,
}

/// What a paid session needs besides the tunnel.
#[derive(Debug, Clone)]
pub(crate) struct Paid {
    pub(crate) identity_key: PublicKey,
    /// Configured, or (a relay from the directory) what its signed `Tunnel` message said;
    /// `None` until then.
    pub(crate) control_address: Option<IpAddr>,
    pub(crate) voucher: Option<PathBuf>,
    /// The configured Hello address; `None` = the resolved endpoint IP, port 51821.
    pub(crate) hello: Option<SocketAddr>,
}

impl Paid {
    /// The Hello address, given the resolved WireGuard endpoint.
    pub(crate) fn hello_addr(&self, endpoint: SocketAddr) -> SocketAddr {
        self.hello
            .unwrap_or(SocketAddr::new(endpoint.ip(), ferry_metering::CONTROL_PORT))
    }
}

impl Config {
    /// Reads and validates `path`. A missing file is an empty config (keys only).
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    missing: Some(path.to_owned()),
                    ..Self::default()
                });
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Self::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    /// Parses and validates TOML text.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let mut names = std::collections::BTreeSet::new();
        for r in &self.relays {
            ensure!(names.insert(&r.name), "relay {:?} defined twice", r.name);
            r.parse()?;
        }
        if let Some(u) = &self.client.ledger_url {
            ferry_store::LedgerUrl::parse(u).map_err(|e| anyhow::anyhow!("ledger-url: {e}"))?;
        }
        Ok(())
    }

    /// The relay called `name`.
    pub(crate) fn relay(&self, name: &str) -> Result<Relay> {
        let Some(r) = self.relays.iter().find(|r| r.name == name) else {
            if let Some(path) = &self.missing {
                bail!(
                    "no config file at {}: create it with a [[relay]] section for {name:?} \
                     (docs/client.md, \"Configuration\")",
                    path.display()
                );
            }
            if self.relays.is_empty() {
                bail!("the config has no [[relay]] section; add one named {name:?}");
            }
            let known: Vec<_> = self.relays.iter().map(|r| r.name.as_str()).collect();
            bail!(
                "no relay named {name:?} in the config (it has: {})",
                known.join(", ")
            );
        };
        r.parse()
    }
}

impl RelayEntry {
    fn parse(&self) -> Result<Relay> {
        let ctx = || format!("relay {:?}", self.name);
        ensure!(!self.name.is_empty(), "relay name must not be empty");
        let public_key = WgPublicKey::from_base64(&self.public_key)
            .with_context(|| format!("{}: public-key", ctx()))?;
        ensure!(
            !self.address.is_empty() || self.identity_key.is_some(),
            "{}: address must list at least one tunnel address (only paid relays assign them)",
            ctx()
        );
        let address = self
            .address
            .iter()
            .map(|a| a.parse::<IpNet>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{}: address", ctx()))?;
        ensure!(
            (1280..=9000).contains(&self.mtu),
            "{}: mtu must be 1280..=9000",
            ctx()
        );
        let paid = match &self.identity_key {
            None => None,
            Some(k) => {
                let mut b = [0u8; 32];
                hex::decode_to_slice(k, &mut b).with_context(|| {
                    format!("{}: identity-key must be 64 hex characters", ctx())
                })?;
                let control_address = self.control_address.with_context(|| {
                    format!(
                        "{}: paid relays need control-address (relay tunnel address)",
                        ctx()
                    )
                })?;
                Some(Paid {
                    identity_key: PublicKey(b),
                    control_address: Some(control_address),
                    voucher: self.voucher.clone(),
                    hello: self.hello,
                })
            }
        };
        Ok(Relay {
            name: self.name.clone(),
            endpoint: self.endpoint.clone(),
            public_key,
            address,
            dns: self.dns.clone(),
            mtu: self.mtu,
            keepalive: self.keepalive,
            paid,
            from_directory: false,
        })
    }
}

impl Relay {
    /// Our tunnel address of the given family, if any.
    pub(crate) fn addr_v4(&self) -> Option<std::net::Ipv4Addr> {
        self.address.iter().find_map(|n| match n.addr() {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
    }

    /// Our IPv6 tunnel address, if any.
    pub(crate) fn addr_v6(&self) -> Option<std::net::Ipv6Addr> {
        self.address.iter().find_map(|n| match n.addr() {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        })
    }
}

/// Expands a leading `~/` with `$HOME`.
pub(crate) fn expand_home(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const KEY: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    fn relay(extra: &str) -> String {
        format!(
            "[[relay]]\nname = \"home\"\nendpoint = \"198.51.100.1:51820\"\npublic-key = \"{KEY}\"\naddress = [\"10.77.0.2/32\", \"fd77::2/128\"]\n{extra}"
        )
    }

    #[test]
    fn a_trusted_relay_parses_with_defaults() {
        let c = Config::parse(&relay("dns = [\"10.77.0.1\"]")).unwrap();
        let r = c.relay("home").unwrap();
        assert_eq!(r.mtu, 1420);
        assert_eq!(r.keepalive, 25);
        assert!(r.paid.is_none());
        assert_eq!(r.addr_v4(), Some("10.77.0.2".parse().unwrap()));
        assert_eq!(r.addr_v6(), Some("fd77::2".parse().unwrap()));
        let err = c.relay("other").unwrap_err().to_string();
        assert!(err.contains("it has: home"), "{err}");
        // No file at all: say so, naming it (not "known: []").
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        let err = Config::load(&path)
            .unwrap()
            .relay("home")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no config file at") && err.contains(path.to_str().unwrap()),
            "{err}"
        );
        let err = Config::parse("")
            .unwrap()
            .relay("home")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no [[relay]] section"), "{err}");
    }

    #[test]
    fn a_paid_relay_needs_a_control_address_and_a_hex_key() {
        let k = "ab".repeat(32);
        let err = Config::parse(&relay(&format!("identity-key = \"{k}\""))).unwrap_err();
        assert!(format!("{err:#}").contains("control-address"), "{err:#}");
        let err = Config::parse(&relay(
            "identity-key = \"zz\"\ncontrol-address = \"10.77.0.1\"",
        ))
        .unwrap_err();
        assert!(format!("{err:#}").contains("hex"), "{err:#}");
        let c = Config::parse(&relay(&format!(
            "identity-key = \"{k}\"\ncontrol-address = \"10.77.0.1\""
        )))
        .unwrap();
        let p = c.relay("home").unwrap().paid.unwrap();
        assert_eq!(p.identity_key.0, [0xab; 32]);
        assert_eq!(p.hello, None);
        assert_eq!(
            p.hello_addr("198.51.100.1:51820".parse().unwrap()),
            "198.51.100.1:51821".parse().unwrap()
        );
        // Paid relays may leave the addresses to the relay; trusted ones may not.
        let no_addr = relay(&format!(
            "identity-key = \"{k}\"\ncontrol-address = \"10.77.0.1\""
        ))
        .replace("address = [\"10.77.0.2/32\", \"fd77::2/128\"]\n", "");
        assert!(
            Config::parse(&no_addr)
                .unwrap()
                .relay("home")
                .unwrap()
                .address
                .is_empty()
        );
        let trusted_no_addr =
            relay("").replace("address = [\"10.77.0.2/32\", \"fd77::2/128\"]\n", "");
        assert!(Config::parse(&trusted_no_addr).is_err());
    }

    #[test]
    fn endpoints_may_be_host_names_and_the_hello_default_follows_the_resolved_ip() {
        let k = "ab".repeat(32);
        let text = relay(&format!(
            "identity-key = \"{k}\"\ncontrol-address = \"10.77.0.1\""
        ))
        .replace("198.51.100.1:51820", "home.dyndns.example:51820");
        let r = Config::parse(&text).unwrap().relay("home").unwrap();
        assert_eq!(r.endpoint.host(), Some("home.dyndns.example"));
        assert_eq!(r.endpoint.to_string(), "home.dyndns.example:51820");
        let p = r.paid.unwrap();
        // The default Hello port uses whatever the name resolved to, never the name.
        assert_eq!(
            p.hello_addr("192.0.2.7:51820".parse().unwrap()),
            "192.0.2.7:51821".parse().unwrap()
        );
        assert_eq!(
            p.hello_addr("[2001:db8::7]:51820".parse().unwrap()),
            "[2001:db8::7]:51821".parse().unwrap()
        );
        // An explicit hello wins.
        let text = format!("{text}\nhello = \"192.0.2.9:4000\"");
        let p = Config::parse(&text)
            .unwrap()
            .relay("home")
            .unwrap()
            .paid
            .unwrap();
        assert_eq!(
            p.hello_addr("192.0.2.7:51820".parse().unwrap()),
            "192.0.2.9:4000".parse().unwrap()
        );
        // IPv6 literals keep working.
        let v6 = relay("").replace("198.51.100.1:51820", "[2001:db8::1]:51820");
        let r = Config::parse(&v6).unwrap().relay("home").unwrap();
        assert_eq!(r.endpoint.to_string(), "[2001:db8::1]:51820");
    }

    #[test]
    fn a_bad_endpoint_is_a_config_error_saying_what_is_wrong() {
        for (bad, want) in [
            ("home.dyndns.example", "missing port"),
            ("198.51.100.1", "missing port"),
            ("home.dyndns.example:99999", "1..=65535"),
            ("2001:db8::1:51820", "brackets"),
            ("not a host:1", "not a valid host name"),
        ] {
            let text = relay("").replace("198.51.100.1:51820", bad);
            let err = format!("{:#}", Config::parse(&text).unwrap_err());
            assert!(err.contains(want), "{bad}: {err}");
            assert!(err.contains("endpoint"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_keys_duplicates_and_bad_values_are_refused() {
        assert!(Config::parse(&relay("colour = \"red\"")).is_err());
        let twice = format!("{}\n{}", relay(""), relay(""));
        assert!(Config::parse(&twice).is_err());
        assert!(Config::parse(&relay("mtu = 100")).is_err());
        assert!(Config::parse("[client]\nledger-url = \"ftp://x\"").is_err());
        let bad_key = relay("").replace(KEY, "short");
        assert!(Config::parse(&bad_key).is_err());
    }

    #[test]
    fn the_shipped_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("client") && name.ends_with(".toml") {
                let c = Config::load(&p).unwrap();
                assert!(!c.relays.is_empty(), "{name}");
                for r in &c.relays {
                    c.relay(&r.name).unwrap();
                }
                n += 1;
            }
        }
        assert!(n >= 1);
    }

    #[test]
    fn home_is_expanded() {
        let p = expand_home(Path::new("~/x/y"));
        if std::env::var_os("HOME").is_some() {
            assert!(!p.starts_with("~"));
            assert!(p.ends_with("x/y"));
        }
        assert_eq!(expand_home(Path::new("/a/b")), PathBuf::from("/a/b"));
    }
}
