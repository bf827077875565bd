//! Building, configuring and running the real `ferry-agent` binary inside the router namespace.
//!
//! The binary is built once per test process with `cargo build -p ferry-agent` (cargo's own
//! lock serialises it with other builds). Overrides: `FERRY_AGENT_BIN=/path/to/ferry-agent` skips
//! the build; `FERRY_AGENT_PROFILE=bench-fast` builds and uses another profile.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

use crate::netns::{Lab, Ns, ProcId, run};
use crate::wait::wait_until;
use crate::wg::{KeyPair, tunnel};

/// Path of the `ferry-agent` binary, building it on first use.
pub fn agent_binary() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| build_agent().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build_agent() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("FERRY_AGENT_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let profile = std::env::var("FERRY_AGENT_PROFILE").unwrap_or_else(|_| "dev".into());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "--locked",
            "-p",
            "ferry-agent",
            "--bin",
            "ferry-agent",
            "--profile",
        ])
        .arg(&profile))
    .context("building ferry-agent")?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let dir = if profile == "dev" {
        "debug".to_owned()
    } else {
        profile
    };
    Ok(target.join(dir).join("ferry-agent"))
}

/// Egress mode of the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    /// Kernel TUN device, forwarding and nft masquerade.
    Tun,
    /// smoltcp terminates client flows; the agent dials out with ordinary sockets.
    Userspace,
}

impl Egress {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Egress::Tun => "tun",
            Egress::Userspace => "userspace",
        }
    }
}

/// One `[[peer]]` entry.
#[derive(Clone, Debug)]
pub struct PeerEntry {
    /// Peer name.
    pub name: String,
    /// base64 public key.
    pub public: String,
    /// Allowed inner source addresses.
    pub allowed_ips: Vec<String>,
}

/// What the harness writes into the agent's TOML config.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Egress mode.
    pub egress: Egress,
    /// WireGuard UDP listen address.
    pub listen: SocketAddr,
    /// Relay's own tunnel addresses.
    pub address: Vec<String>,
    /// Inner MTU.
    pub mtu: u32,
    /// `[egress] allow`.
    pub allow: Vec<String>,
    /// `[egress] deny`.
    pub deny: Vec<String>,
    /// `[limits] max-peers`.
    pub max_peers: usize,
    /// `[limits] client-rate-mbit`.
    pub client_rate_mbit: u64,
    /// Trusted peers.
    pub peers: Vec<PeerEntry>,
    /// Raw TOML appended verbatim (sections owned by later features).
    pub extra: String,
    /// Raw TOML lines added to `[egress]` (e.g. `block-ports = []`).
    pub egress_extra: String,
    /// Raw TOML lines added to `[limits]` (e.g. `share-down-mbit = 5`).
    pub limits_extra: String,
}

impl AgentConfig {
    /// Defaults matching [`tunnel`]: listen on all v4 addresses, 10.77.0.1/24 + fd77::1/64, and
    /// `allow` = exactly the internet host: the topology uses documentation ranges (RFC 5737/3849),
    /// which the agent blocks by default like every special range.
    pub fn new(egress: Egress) -> Self {
        Self {
            egress,
            listen: SocketAddr::from(([0, 0, 0, 0], tunnel::RELAY_PORT)),
            address: tunnel::RELAY_ADDRS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            mtu: tunnel::MTU,
            allow: vec![
                format!("{}/32", crate::topology::INET4),
                format!("{}/128", crate::topology::INET6),
            ],
            deny: vec![],
            max_peers: 1024,
            client_rate_mbit: 0,
            peers: vec![],
            extra: String::new(),
            egress_extra: String::new(),
            limits_extra: String::new(),
        }
    }

    /// Adds a trusted peer.
    pub fn peer(&mut self, name: &str, public: &str, allowed_ips: &[&str]) -> &mut Self {
        self.peers.push(PeerEntry {
            name: name.to_owned(),
            public: public.to_owned(),
            allowed_ips: allowed_ips.iter().map(|s| (*s).to_owned()).collect(),
        });
        self
    }

    /// Renders the TOML file.
    pub fn render(&self, key_file: &Path, tun_name: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "[wireguard]");
        let _ = writeln!(s, "private-key-file = {}", q(&key_file.to_string_lossy()));
        let _ = writeln!(s, "listen = {}", q(&self.listen.to_string()));
        let _ = writeln!(s, "mtu = {}", self.mtu);
        let _ = writeln!(s, "address = {}", list(&self.address));
        let _ = writeln!(s, "\n[egress]\nmode = {}", q(self.egress.as_str()));
        if self.egress == Egress::Tun {
            let _ = writeln!(s, "tun-name = {}\nmasquerade = true", q(tun_name));
        }
        let _ = writeln!(
            s,
            "allow = {}\ndeny = {}",
            list(&self.allow),
            list(&self.deny)
        );
        s.push_str(&self.egress_extra);
        let _ = writeln!(
            s,
            "\n[limits]\nmax-peers = {}\nclient-rate-mbit = {}",
            self.max_peers, self.client_rate_mbit
        );
        s.push_str(&self.limits_extra);
        s.push_str(&self.extra);
        for p in &self.peers {
            let _ = writeln!(
                s,
                "\n[[peer]]\nname = {}\npublic-key = {}\nallowed-ips = {}",
                q(&p.name),
                q(&p.public),
                list(&p.allowed_ips)
            );
        }
        s
    }
}

fn q(s: &str) -> String {
    // TOML basic strings share JSON's escapes for everything we emit.
    format!("{s:?}")
}

fn list(v: &[String]) -> String {
    format!(
        "[{}]",
        v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
    )
}

/// A running `ferry-agent` in a namespace.
#[derive(Debug)]
pub struct Agent {
    /// The process.
    pub proc: ProcId,
    /// Its config file.
    pub config_path: PathBuf,
    /// Its WireGuard key pair.
    pub key: KeyPair,
    /// Its TUN device name (tun mode).
    pub tun_name: String,
    /// Log label (see [`Lab::log`]).
    pub label: String,
    ns: Ns,
}

impl Agent {
    /// Writes key and config into the lab dir and starts `ferry-agent run --config` in `ns`,
    /// waiting until its UDP port is bound (and its TUN exists in tun mode).
    pub fn start(lab: &mut Lab, ns: &Ns, key: &KeyPair, cfg: &AgentConfig) -> Result<Self> {
        let bin = agent_binary()?;
        let tun_name = lab.ifname("ft");
        let n = std::fs::read_dir(lab.dir())?.count();
        let label = format!("ferry-agent-{n}");
        let key_file = key.write_private(lab.dir(), &format!("{label}.key"))?;
        let config_path = lab.dir().join(format!("{label}.toml"));
        std::fs::write(&config_path, cfg.render(&key_file, &tun_name))?;
        let level = std::env::var("FERRY_E2E_AGENT_LOG").unwrap_or_else(|_| "debug".into());
        let bin_s = bin.to_string_lossy().into_owned();
        let cfg_s = config_path.to_string_lossy().into_owned();
        let proc = lab.spawn_env(
            ns,
            &label,
            &[&bin_s, "run", "--config", &cfg_s],
            &[("RUST_LOG", &level), ("NO_COLOR", "1")],
        )?;
        let agent = Self {
            proc,
            config_path,
            key: key.clone(),
            tun_name,
            label,
            ns: ns.clone(),
        };
        let port = format!(":{} ", cfg.listen.port());
        let mut exited = false;
        let ready = wait_until(
            Duration::from_secs(20),
            "ferry-agent UDP port and TUN",
            || {
                if !lab.is_running(proc) {
                    exited = true;
                    return true;
                }
                let udp = ns
                    .exec(&["ss", "-Huln"])
                    .is_ok_and(|o| o.lines().any(|l| l.contains(&port)));
                udp && (cfg.egress != Egress::Tun
                    || ns.ip(&["link", "show", &agent.tun_name]).is_ok())
            },
        );
        if exited || ready.is_err() {
            let log = lab.log(&agent.label);
            let state = if exited {
                "exited"
            } else {
                "running but not ready"
            };
            return Err(anyhow!(
                "ferry-agent {state}; config:\n{}\nlog:\n{log}",
                cfg.render(&key_file, &agent.tun_name)
            ));
        }
        Ok(agent)
    }

    /// Runs a `ferry-agent` subcommand against this agent's config (e.g. `peers`).
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let bin = agent_binary()?;
        let bin_s = bin.to_string_lossy().into_owned();
        let cfg = self.config_path.to_string_lossy().into_owned();
        let mut v = vec![bin_s.as_str()];
        v.extend(args);
        v.extend(["--config", &cfg]);
        self.ns.exec(&v)
    }

    /// `host:port` a client in the standard topology uses as endpoint.
    pub fn endpoint() -> SocketAddr {
        SocketAddr::from((crate::topology::ROUTER_WAN4, tunnel::RELAY_PORT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_config_is_toml_with_the_contract_keys() {
        let mut c = AgentConfig::new(Egress::Tun);
        c.peer("a\"b", "KEY=", &["10.77.0.2/32", "fd77::2/128"]);
        let text = c.render(Path::new("/tmp/k ey"), "fe1x0ft");
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            v["wireguard"]["private-key-file"].as_str(),
            Some("/tmp/k ey")
        );
        assert_eq!(v["wireguard"]["listen"].as_str(), Some("0.0.0.0:51820"));
        assert_eq!(v["egress"]["mode"].as_str(), Some("tun"));
        assert_eq!(v["egress"]["tun-name"].as_str(), Some("fe1x0ft"));
        assert_eq!(v["egress"]["allow"].as_array().unwrap().len(), 2);
        let peer = &v["peer"].as_array().unwrap()[0];
        assert_eq!(peer["name"].as_str(), Some("a\"b"));
        assert_eq!(peer["allowed-ips"].as_array().unwrap().len(), 2);
        let us = AgentConfig::new(Egress::Userspace).render(Path::new("k"), "x");
        let v: toml::Table = toml::from_str(&us).unwrap();
        assert!(v["egress"].get("tun-name").is_none());
    }
}
