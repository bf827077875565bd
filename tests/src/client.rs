//! Harness pieces for `ferry` client tests: building the `ferry` and DNS test-server binaries,
//! a key/config/state home per client, a ready topology with ferry-agent trusting the client,
//! per-namespace `resolv.conf` (`/etc/netns/<ns>/resolv.conf`, removed on drop), and nft
//! counters on a wire (netdev ingress), which see what really left a namespace.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::agent::{Agent, AgentConfig, Egress};
use crate::netns::{Lab, Ns, ProcId, run};
use crate::scenario::Services;
use crate::topology::{INET4, ROUTER_WAN4, ROUTER_WAN6, Topology};
use crate::wait::wait_until;
use crate::wg::{KeyPair, tunnel};

fn build(package: &str, bin: &str, features: &[&str]) -> Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    let (kind, sub) = match bin.strip_prefix("example:") {
        Some(e) => (["--example", e], "examples"),
        None => (["--bin", bin], ""),
    };
    cmd.current_dir(&workspace)
        .args(["build", "--quiet", "-p", package])
        .args(kind);
    for f in features {
        cmd.args(["--features", f]);
    }
    run(&mut cmd).with_context(|| format!("building {bin}"))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    Ok(target.join("debug").join(sub).join(kind[1]))
}

/// Path of the `ferry` binary (built once; `FERRY_BIN` overrides).
pub fn ferry_binary() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("FERRY_BIN") {
        Some(p) => Ok(PathBuf::from(p)),
        None => build("ferry-client", "ferry", &[]).map_err(|e| format!("{e:#}")),
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Path of the test-only paid relay `ferry-test-relay` (client/examples; built once).
pub fn test_relay_binary() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        build("ferry-client", "example:ferry-test-relay", &[]).map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Starts `ferry connect <relay> --tun <tun>` in `ns` (log label `ferry-connect`) and waits
/// until its status file says connected.
pub fn start_connect(
    lab: &mut Lab,
    ns: &Ns,
    home: &FerryHome,
    relay: &str,
    tun: &str,
) -> Result<ProcId> {
    let argv = home.argv(&["connect", relay, "--tun", tun])?;
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let id = lab.spawn_env(ns, "ferry-connect", &refs, &[("FERRY_LOG", "debug")])?;
    let status = home.state.join("status.json");
    let mut exited = false;
    wait_until(
        Duration::from_secs(20),
        "ferry connect to be connected",
        || {
            if !lab.is_running(id) {
                exited = true;
                return true;
            }
            std::fs::read_to_string(&status).is_ok_and(|s| s.contains("\"state\": \"connected\""))
        },
    )?;
    if exited {
        bail!("ferry connect exited:\n{}", lab.log("ferry-connect"));
    }
    Ok(id)
}

/// Path of `ferry-dns-testserver` (built once).
pub fn dns_server_binary() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        build("ferry-dns", "ferry-dns-testserver", &["testserver"]).map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Starts an authoritative test DNS server in `ns` on `listen` (port 53) with `records`
/// (`"name. 60 A 1.2.3.4"`), waiting until it is ready.
pub fn dns_server(
    lab: &mut Lab,
    ns: &Ns,
    label: &str,
    listen: SocketAddr,
    records: &[&str],
) -> Result<ProcId> {
    let bin = dns_server_binary()?.to_string_lossy().into_owned();
    let listen_s = listen.to_string();
    let mut argv = vec![bin.as_str(), "--listen", &listen_s, "--origin", "test."];
    for r in records {
        argv.extend(["--record", r]);
    }
    let id = lab.spawn(ns, label, &argv)?;
    wait_until(Duration::from_secs(20), "dns test server", || {
        lab.log(label).contains("listening")
    })?;
    Ok(id)
}

/// A client's key directory, config and state directory.
#[derive(Debug, Clone)]
pub struct FerryHome {
    /// Key + config directory (`--dir`).
    pub dir: PathBuf,
    /// State directory (`--state-dir`).
    pub state: PathBuf,
    /// WireGuard public key (base64).
    pub wg_public: String,
    /// Identity public key (hex).
    pub identity_public: String,
}

impl FerryHome {
    /// `ferry keygen` into `<lab dir>/<name>`.
    pub fn create(lab: &Lab, name: &str) -> Result<Self> {
        let dir = lab.dir().join(name);
        let state = lab.dir().join(format!("{name}-state"));
        let bin = ferry_binary()?;
        let out = run(Command::new(&bin).arg("--dir").arg(&dir).arg("keygen"))?;
        let field = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_owned()))
                .with_context(|| format!("keygen output lacks {k}: {out}"))
        };
        Ok(Self {
            wg_public: field("wireguard ")?,
            identity_public: field("identity ")?,
            dir,
            state,
        })
    }

    /// Writes `client.toml`.
    pub fn write_config(&self, text: &str) -> Result<()> {
        std::fs::write(self.dir.join("client.toml"), text)?;
        Ok(())
    }

    /// `ferry --dir D --state-dir S <args>` as argv.
    pub fn argv(&self, args: &[&str]) -> Result<Vec<String>> {
        let mut v = vec![
            ferry_binary()?.to_string_lossy().into_owned(),
            "--dir".into(),
            self.dir.to_string_lossy().into_owned(),
            "--state-dir".into(),
            self.state.to_string_lossy().into_owned(),
        ];
        v.extend(args.iter().map(|s| (*s).to_owned()));
        Ok(v)
    }

    /// Runs a `ferry` command in `ns` to completion.
    pub fn cli(&self, ns: &Ns, args: &[&str]) -> Result<String> {
        let argv = self.argv(args)?;
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        ns.exec(&refs)
    }

    /// Hands the home to `nobody` (keys stay 0600) for unprivileged runs.
    pub fn give_to_nobody(&self) -> Result<()> {
        std::fs::create_dir_all(&self.state)?;
        for p in [&self.dir, &self.state] {
            run(Command::new("chown").args(["-R", "nobody:nogroup"]).arg(p))?;
        }
        // The lab dir itself must be traversable.
        if let Some(parent) = self.dir.parent() {
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(())
    }
}

/// A `[[relay]]` entry for a trusted peer.
pub fn trusted_relay(
    name: &str,
    endpoint: SocketAddr,
    relay_public: &str,
    dns: &[IpAddr],
) -> String {
    let dns: Vec<String> = dns.iter().map(|d| format!("\"{d}\"")).collect();
    let addrs: Vec<String> = tunnel::CLIENT_ADDRS
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    format!(
        "[[relay]]\nname = \"{name}\"\nendpoint = \"{endpoint}\"\npublic-key = \"{relay_public}\"\naddress = [{}]\ndns = [{}]\nkeepalive = 5\n",
        addrs.join(", "),
        dns.join(", ")
    )
}

/// `/etc/netns/<ns>/resolv.conf`: what programs started with `ip netns exec` see as
/// `/etc/resolv.conf`. Removed on drop.
#[derive(Debug)]
pub struct NetnsResolvConf {
    dir: PathBuf,
}

impl NetnsResolvConf {
    /// Creates it with `text` (before anything is spawned in `ns`).
    pub fn create(ns: &Ns, text: &str) -> Result<Self> {
        let dir = PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("resolv.conf"), text)?;
        Ok(Self { dir })
    }

    /// Current content.
    pub fn read(&self) -> String {
        std::fs::read_to_string(self.dir.join("resolv.conf")).unwrap_or_default()
    }
}

impl Drop for NetnsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Named nft counters on the ingress hook of one interface (family netdev): they count what
/// arrived over that wire, i.e. what the namespace at the other end really sent.
#[derive(Debug)]
pub struct WireCounters {
    ns: Ns,
    table: String,
}

impl WireCounters {
    /// Installs `(name, match)` counters (e.g. `("dns", "udp dport 53")`) on `ifname` in `ns`.
    pub fn install(ns: &Ns, ifname: &str, table: &str, rules: &[(&str, &str)]) -> Result<Self> {
        let mut s = format!("table netdev {table} {{\n");
        for (name, _) in rules {
            s.push_str(&format!("  counter {name} {{}}\n"));
        }
        s.push_str(&format!(
            "  chain ingress {{\n    type filter hook ingress device \"{ifname}\" priority -500;\n"
        ));
        for (name, m) in rules {
            s.push_str(&format!("    {m} counter name \"{name}\"\n"));
        }
        s.push_str("  }\n}\n");
        let path = std::env::temp_dir().join(format!("{table}.nft"));
        std::fs::write(&path, &s)?;
        let r = ns.exec(&["nft", "-f", &path.to_string_lossy()]);
        let _ = std::fs::remove_file(&path);
        r.with_context(|| format!("nft ruleset:\n{s}"))?;
        Ok(Self {
            ns: ns.clone(),
            table: table.to_owned(),
        })
    }

    /// Packets counted by `name`.
    pub fn packets(&self, name: &str) -> Result<u64> {
        let out = self
            .ns
            .exec(&["nft", "list", "counter", "netdev", &self.table, name])?;
        let words: Vec<&str> = out.split_whitespace().collect();
        let i = words
            .iter()
            .position(|w| *w == "packets")
            .with_context(|| format!("no packets in {out}"))?;
        Ok(words.get(i + 1).context("packets value")?.parse()?)
    }

    /// Zeroes `name`.
    pub fn reset(&self, name: &str) -> Result<()> {
        self.ns
            .exec(&["nft", "reset", "counter", "netdev", &self.table, name])
            .map(drop)
    }
}

/// The standard topology with services, `ferry-agent` (TUN egress) trusting one `ferry`
/// client, a DNS server on the internet host (the "relay's resolver" reached through the
/// tunnel) and a leaky DNS server on the router's WAN address (the "ISP resolver").
/// The client namespace gets a default route via the router, like a home network.
#[derive(Debug)]
pub struct ClientLab {
    /// The client namespace's resolv.conf (initially the ISP resolver).
    pub resolv: NetnsResolvConf,
    /// Services on every host.
    pub services: Services,
    /// ferry-agent.
    pub agent: Agent,
    /// The client's home.
    pub home: FerryHome,
    /// Namespaces and lab (dropped last).
    pub topo: Topology,
}

/// Record served by both DNS servers, with different answers: which one answered shows the path.
pub const CANARY: &str = "canary.test.";
/// Answer of the ISP resolver (outside the tunnel).
pub const CANARY_ISP: &str = "192.0.2.53";
/// Answer of the resolver reached through the tunnel.
pub const CANARY_TUNNEL: &str = "203.0.113.53";
/// A name for the data service on the internet host.
pub const DATA_NAME: &str = "data.test.";

impl ClientLab {
    /// Builds everything; `tweak` adjusts the agent config.
    pub fn start(tweak: impl FnOnce(&mut AgentConfig)) -> Result<Self> {
        let mut topo = Topology::build()?;
        topo.client
            .route(&["default", "via", &ROUTER_WAN4.to_string()])?;
        topo.client
            .route(&["::/0", "via", &ROUTER_WAN6.to_string()])?;
        let resolv = NetnsResolvConf::create(&topo.client, &format!("nameserver {ROUTER_WAN4}\n"))?;
        let services = Services::start(&topo)?;
        let isp = format!("{CANARY} 60 A {CANARY_ISP}");
        dns_server(
            &mut topo.lab,
            &topo.router,
            "dns-isp",
            SocketAddr::new(ROUTER_WAN4.into(), 53),
            &[&isp],
        )?;
        let tun = format!("{CANARY} 60 A {CANARY_TUNNEL}");
        let data = format!("{DATA_NAME} 60 A {INET4}");
        dns_server(
            &mut topo.lab,
            &topo.inet,
            "dns-inet",
            SocketAddr::new(INET4.into(), 53),
            &[&tun, &data],
        )?;
        let home = FerryHome::create(&topo.lab, "ferry-home")?;
        let relay_key = KeyPair::generate()?;
        let mut cfg = AgentConfig::new(Egress::Tun);
        cfg.peer("ferry", &home.wg_public, &tunnel::CLIENT_ADDRS);
        tweak(&mut cfg);
        let agent = Agent::start(&mut topo.lab, &topo.router, &relay_key, &cfg)?;
        home.write_config(&trusted_relay(
            "lab",
            Agent::endpoint(),
            &relay_key.public,
            &[INET4.into()],
        ))?;
        Ok(Self {
            resolv,
            services,
            agent,
            home,
            topo,
        })
    }

    /// The client's TUN name.
    pub fn tun(&self) -> String {
        self.topo.lab.ifname("fc")
    }

    /// Starts `ferry connect lab` in the client namespace and waits until it is connected.
    pub fn connect(&mut self) -> Result<ProcId> {
        let tun = self.tun();
        start_connect(
            &mut self.topo.lab,
            &self.topo.client,
            &self.home,
            "lab",
            &tun,
        )
    }

    /// `ferry status --json`.
    pub fn status_json(&self) -> Result<String> {
        self.home.cli(&self.topo.client, &["status", "--json"])
    }

    /// `ferry disconnect`.
    pub fn disconnect(&self) -> Result<String> {
        self.home.cli(&self.topo.client, &["disconnect"])
    }

    /// Whether the client namespace has the kill-switch table.
    pub fn kill_switch_present(&self) -> bool {
        self.topo
            .client
            .exec(&["nft", "list", "table", "inet", "ferry"])
            .is_ok()
    }
}
