//! A real `ferry-agent` in paid mode with a `ferry connect` client home configured for it
//! (voucher minted with a test ledger key; the agent's ledger is unreachable, so its
//! submitter keeps the receipts): the lab of `client_agent_paid.rs` and `household_share.rs`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use crate::agent::{Agent, AgentConfig, Egress};
use crate::client::{FerryHome, NetnsResolvConf, start_connect, test_relay_binary};
use crate::scenario::Services;
use crate::topology::{ROUTER_WAN4, Topology};
use crate::wait::wait_until;
use crate::wg::KeyPair;

pub const LEDGER_SEED: &str = "0303030303030303030303030303030303030303030303030303030303030303";
pub const NETWORK: &str = "42424242424242424242424242424242";

/// The lab both tests share: topology, services, the real agent in paid mode, a client home
/// configured for it (the fields drop in order: agent and services before the topology).
pub struct AgentLab {
    pub agent: Agent,
    pub _services: Services,
    pub _resolv: NetnsResolvConf,
    pub home: FerryHome,
    /// The agent's config (to start it again).
    pub agent_cfg: AgentConfig,
    /// The relay's WireGuard key pair and receipts identity (hex).
    pub relay_wg: KeyPair,
    pub relay_identity: String,
    pub topo: Topology,
}

/// [`agent_lab_with`] without extra `[limits]`.
pub fn agent_lab() -> AgentLab {
    agent_lab_with("")
}

/// The lab; `limits` are raw TOML lines for the agent's `[limits]`.
pub fn agent_lab_with(limits: &str) -> AgentLab {
    let mut topo = Topology::build().unwrap();
    topo.client
        .route(&["default", "via", &ROUTER_WAN4.to_string()])
        .unwrap();
    let resolv =
        NetnsResolvConf::create(&topo.client, &format!("nameserver {ROUTER_WAN4}\n")).unwrap();
    let services = Services::start(&topo).unwrap();
    let home = FerryHome::create(&topo.lab, "agent-paid-home").unwrap();
    // The relay's receipts identity, in ferry-keys format.
    let relay_home = FerryHome::create(&topo.lab, "agent-identity").unwrap();
    let bin = test_relay_binary().unwrap();
    let out = crate::netns::run(std::process::Command::new(&bin).args([
        "voucher",
        "--ledger-seed",
        LEDGER_SEED,
        "--network",
        NETWORK,
        "--client-key",
        &home.identity_public,
        "--out",
        &home.dir.join("voucher").to_string_lossy(),
    ]))
    .unwrap();
    let ledger_key = out
        .lines()
        .find_map(|l| l.strip_prefix("ledger "))
        .unwrap()
        .trim()
        .to_owned();
    let state = topo.lab.dir().join("agent-state");
    std::fs::create_dir_all(&state).unwrap();
    let mut cfg = AgentConfig::new(Egress::Tun);
    cfg.limits_extra = limits.to_owned();
    cfg.extra = format!(
        "\n[identity]\nkey-file = \"{}\"\n\n[network]\nid = \"{NETWORK}\"\nledger-key = \"{ledger_key}\"\nledger-url = \"http://127.0.0.1:9\"\n\n[metering]\nstate-dir = \"{}\"\nreceipt-every-mib = 0.25\nreceipt-every-secs = 2\ncredit-window-mib = 4\n\n[paid]\nenabled = true\nprice-micros-per-gib = 500000\n",
        relay_home.dir.join("identity.key").display(),
        state.display()
    );
    let relay_key = KeyPair::generate().unwrap();
    let agent = Agent::start(&mut topo.lab, &topo.router, &relay_key, &cfg).unwrap();
    home.write_config(&format!(
        "[[relay]]\nname = \"agent\"\nendpoint = \"{}\"\npublic-key = \"{}\"\nkeepalive = 5\nidentity-key = \"{}\"\ncontrol-address = \"10.77.0.1\"\n",
        Agent::endpoint(),
        relay_key.public,
        relay_home.identity_public
    ))
    .unwrap();

    AgentLab {
        agent,
        _services: services,
        _resolv: resolv,
        home,
        agent_cfg: cfg,
        relay_wg: relay_key,
        relay_identity: relay_home.identity_public.clone(),
        topo,
    }
}

impl AgentLab {
    /// Starts the agent again (same keys, config and state directory).
    pub fn restart_agent(&mut self) {
        self.agent = Agent::start(
            &mut self.topo.lab,
            &self.topo.router,
            &self.relay_wg,
            &self.agent_cfg,
        )
        .unwrap();
    }

    /// Waits until the client is connected on a session other than `first`.
    pub fn wait_new_session(&self, first: &str, limit: Duration) -> anyhow::Result<()> {
        wait_until(limit, "connected again with a new session", || {
            let st = status_json(&self.home, &self.topo);
            st.contains("\"state\": \"connected\"") && session_id(&st).is_some_and(|s| s != first)
        })
    }
}

/// [`agent_lab`] with `ferry connect` connected on a TUN named after `tag`.
pub fn connected_lab(tag: &str) -> (AgentLab, String) {
    connected_lab_with(tag, "")
}

/// [`connected_lab`] with extra `[limits]` lines for the agent.
pub fn connected_lab_with(tag: &str, limits: &str) -> (AgentLab, String) {
    let mut lab = agent_lab_with(limits);
    let tun = lab.topo.lab.ifname(tag);
    let AgentLab { home, topo, .. } = &mut lab;
    start_connect(&mut topo.lab, &topo.client, home, "agent", &tun).unwrap();
    (lab, tun)
}

/// `ferry status --json` of `home`, run in the client namespace; the error text while there is
/// no status yet (a process just spawned has not written it: polls keep waiting).
pub fn status_json(home: &FerryHome, topo: &Topology) -> String {
    home.cli(&topo.client, &["status", "--json"])
        .unwrap_or_else(|e| format!("no status yet: {e}"))
}

/// The paid session id in a `ferry status --json` text.
pub fn session_id(status: &str) -> Option<String> {
    status
        .split("\"session_id\": \"")
        .nth(1)
        .map(|r| r[..32].to_owned())
}
