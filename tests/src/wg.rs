//! Stock WireGuard endpoints for tests: keys, wireguard-go + `wg` interfaces, and a reference
//! relay (wireguard-go + nft masquerade, no egress policy) used to validate the harness itself.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use boringtun::x25519::{PublicKey, StaticSecret};
use ring::rand::{SecureRandom, SystemRandom};

use crate::netns::{Lab, Ns, ProcId};
use crate::topology::Topology;
use crate::wait::wait_until;

/// A WireGuard key pair in `wg genkey` (base64) format.
#[derive(Clone)]
pub struct KeyPair {
    /// The secret key.
    pub secret: StaticSecret,
    /// base64 private key.
    pub private: String,
    /// base64 public key.
    pub public: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({})", self.public)
    }
}

impl KeyPair {
    /// A fresh random key pair.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| anyhow::anyhow!("rng failed"))?;
        // Clamp as `wg genkey` does, so the file round-trips through every tool byte-identically.
        bytes[0] &= 248;
        bytes[31] = (bytes[31] & 127) | 64;
        let secret = StaticSecret::from(bytes);
        let public = B64.encode(PublicKey::from(&secret).as_bytes());
        Ok(Self {
            private: B64.encode(bytes),
            public,
            secret,
        })
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from(&self.secret)
    }

    /// Writes the private key to `<dir>/<name>` with mode 0600.
    pub fn write_private(&self, dir: &Path, name: &str) -> Result<PathBuf> {
        let path = dir.join(name);
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&path)?;
        std::io::Write::write_all(&mut f, format!("{}\n", self.private).as_bytes())?;
        Ok(path)
    }
}

/// Per-peer counters from `wg show IF dump`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// base64 public key.
    pub public: String,
    /// Current endpoint, if any.
    pub endpoint: Option<SocketAddr>,
    /// Unix time of the latest handshake (0 = never).
    pub latest_handshake: u64,
    /// Bytes received from the peer.
    pub rx: u64,
    /// Bytes sent to the peer.
    pub tx: u64,
}

/// A wireguard-go interface in a namespace, configured with `wg`.
#[derive(Debug)]
pub struct WgGo {
    ns: Ns,
    /// Host-unique interface name.
    pub ifname: String,
    /// The wireguard-go process.
    pub proc: ProcId,
}

impl WgGo {
    /// Starts `wireguard-go -f <tag><suffix>` in `ns` with `key` and `listen_port`.
    pub fn start(lab: &mut Lab, ns: &Ns, suffix: &str, key: &KeyPair, port: u16) -> Result<Self> {
        let ifname = lab.ifname(suffix);
        let sock = PathBuf::from(format!("/var/run/wireguard/{ifname}.sock"));
        lab.register_socket(sock.clone());
        let label = format!("wireguard-go-{ifname}");
        let proc = lab.spawn(ns, &label, &["wireguard-go", "-f", &ifname])?;
        wait_until(
            Duration::from_secs(10),
            &format!("UAPI socket {}", sock.display()),
            || sock.exists(),
        )?;
        let keyfile = key.write_private(lab.dir(), &format!("{ifname}.key"))?;
        let wg = Self {
            ns: ns.clone(),
            ifname,
            proc,
        };
        wg.set(&[
            "private-key",
            &keyfile.to_string_lossy(),
            "listen-port",
            &port.to_string(),
        ])?;
        Ok(wg)
    }

    /// `wg set <if> <args>`.
    pub fn set(&self, args: &[&str]) -> Result<()> {
        let mut v = vec!["wg", "set", &self.ifname];
        v.extend(args);
        self.ns.exec(&v).map(drop)
    }

    /// Adds a peer.
    pub fn add_peer(
        &self,
        public: &str,
        endpoint: Option<SocketAddr>,
        allowed_ips: &[&str],
        keepalive: Option<u16>,
    ) -> Result<()> {
        let allowed = allowed_ips.join(",");
        let mut v = vec!["peer", public, "allowed-ips", &allowed];
        let ep = endpoint.map(|e| e.to_string());
        if let Some(e) = &ep {
            v.extend(["endpoint", e]);
        }
        let ka = keepalive.map(|k| k.to_string());
        if let Some(k) = &ka {
            v.extend(["persistent-keepalive", k]);
        }
        self.set(&v)
    }

    /// Assigns addresses (IPv6 `nodad`), sets the MTU and brings the interface up.
    pub fn addrs_up(&self, addrs: &[&str], mtu: u32) -> Result<()> {
        for a in addrs {
            self.ns.addr(&self.ifname, a)?;
        }
        self.ns
            .ip(&["link", "set", &self.ifname, "mtu", &mtu.to_string(), "up"])
            .map(drop)
    }

    /// Sends everything from this namespace (v4 and v6) through the tunnel except the tunnel's own
    /// UDP packets, wg-quick style: fwmark on the socket plus `not fwmark` policy rules.
    pub fn full_tunnel(&self, fwmark: u32) -> Result<()> {
        let m = fwmark.to_string();
        self.set(&["fwmark", &m])?;
        for fam in ["-4", "-6"] {
            self.ns.ip(&[
                fam,
                "route",
                "add",
                "default",
                "dev",
                &self.ifname,
                "table",
                &m,
            ])?;
            let rule = ["not", "fwmark", &m, "table", &m, "pref", "100"];
            // A previous client in this namespace may have left the same rule: replace it.
            let _ = self.ns.ip(&[&[fam, "rule", "del"][..], &rule].concat());
            self.ns.ip(&[&[fam, "rule", "add"][..], &rule].concat())?;
        }
        Ok(())
    }

    /// Per-peer counters.
    pub fn peers(&self) -> Result<Vec<PeerStats>> {
        let out = self.ns.exec(&["wg", "show", &self.ifname, "dump"])?;
        let mut v = Vec::new();
        for line in out.lines().skip(1) {
            let f: Vec<&str> = line.split('\t').collect();
            ensure!(f.len() >= 8, "bad wg dump line {line:?}");
            v.push(PeerStats {
                public: f[0].to_owned(),
                endpoint: f[2].parse().ok(),
                latest_handshake: f[4].parse().context("handshake")?,
                rx: f[5].parse().context("rx")?,
                tx: f[6].parse().context("tx")?,
            });
        }
        Ok(v)
    }

    /// Counters of the single peer of a client interface.
    pub fn peer(&self) -> Result<PeerStats> {
        let mut p = self.peers()?;
        ensure!(
            p.len() == 1,
            "expected exactly one peer on {}, got {}",
            self.ifname,
            p.len()
        );
        Ok(p.remove(0))
    }
}

/// Tunnel-side constants shared by the reference relay and ferry-agent configs.
pub mod tunnel {
    /// Relay's tunnel addresses (prefix = client subnet).
    pub const RELAY_ADDRS: [&str; 2] = ["10.77.0.1/24", "fd77::1/64"];
    /// First client's tunnel addresses.
    pub const CLIENT_ADDRS: [&str; 2] = ["10.77.0.2/32", "fd77::2/128"];
    /// WireGuard port of the relay on the router.
    pub const RELAY_PORT: u16 = 51820;
    /// WireGuard port of the client.
    pub const CLIENT_PORT: u16 = 51900;
    /// Default inner MTU.
    pub const MTU: u32 = 1420;
    /// fwmark the stock client uses for its full-tunnel policy routing.
    pub const FWMARK: u32 = 0xfe77;
}

/// A stock client: wireguard-go in the client namespace, all its traffic through the tunnel.
pub fn stock_client(
    lab: &mut Lab,
    ns: &Ns,
    suffix: &str,
    key: &KeyPair,
    relay_public: &str,
    endpoint: SocketAddr,
    tunnel_addrs: &[&str],
) -> Result<WgGo> {
    let wg = WgGo::start(lab, ns, suffix, key, tunnel::CLIENT_PORT)?;
    wg.add_peer(relay_public, Some(endpoint), &["0.0.0.0/0", "::/0"], None)?;
    wg.addrs_up(tunnel_addrs, tunnel::MTU)?;
    wg.full_tunnel(tunnel::FWMARK)?;
    Ok(wg)
}

/// The reference relay: wireguard-go on the router with kernel forwarding and an nft masquerade
/// on the internet-side link, and deliberately NO egress policy (so the LAN is reachable).
pub fn reference_relay(topo: &mut Topology, key: &KeyPair) -> Result<WgGo> {
    let wg = WgGo::start(&mut topo.lab, &topo.router, "wr", key, tunnel::RELAY_PORT)?;
    wg.addrs_up(&tunnel::RELAY_ADDRS, tunnel::MTU)?;
    let r = &topo.router;
    r.exec(&["nft", "add", "table", "inet", "fe_ref"])?;
    r.exec(&[
        "nft",
        "add chain inet fe_ref post { type nat hook postrouting priority srcnat; }",
    ])?;
    r.exec(&[
        "nft",
        "add",
        "rule",
        "inet",
        "fe_ref",
        "post",
        "oifname",
        &topo.router_up_if,
        "masquerade",
    ])?;
    Ok(wg)
}
