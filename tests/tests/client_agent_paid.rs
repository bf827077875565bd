//! `ferry connect` paying the real `ferry-agent` (paid mode): Hello to the agent's public
//! Hello port, Accept + Address, TCP traffic through the agent's egress, receipts co-signed
//! automatically, final receipt at disconnect. The voucher is minted with a test ledger key
//! (`ferry-test-relay voucher`); the agent's ledger is unreachable, so its submitter just
//! keeps the receipts.
//! Needs root: `cargo test -p ferry-e2e --test client_agent_paid -- --ignored`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ferry_e2e::agent::{Agent, AgentConfig, Egress};
use ferry_e2e::client::{FerryHome, NetnsResolvConf, start_connect, test_relay_binary};
use ferry_e2e::scenario::Services;
use ferry_e2e::servers::fetch;
use ferry_e2e::topology::{DATA_PORT, INET4, ROUTER_UP4, ROUTER_WAN4, Topology, sa};
use ferry_e2e::wait::wait_until;
use ferry_e2e::wg::KeyPair;

const LEDGER_SEED: &str = "0303030303030303030303030303030303030303030303030303030303030303";
const NETWORK: &str = "42424242424242424242424242424242";

#[test]
#[ignore = "needs root: netns"]
fn paying_the_real_agent_cosigns_receipts_and_the_final_one() {
    let mut topo = Topology::build().unwrap();
    topo.client
        .route(&["default", "via", &ROUTER_WAN4.to_string()])
        .unwrap();
    let _resolv =
        NetnsResolvConf::create(&topo.client, &format!("nameserver {ROUTER_WAN4}\n")).unwrap();
    let _services = Services::start(&topo).unwrap();
    let home = FerryHome::create(&topo.lab, "agent-paid-home").unwrap();
    // The relay's receipts identity, in ferry-keys format.
    let relay_home = FerryHome::create(&topo.lab, "agent-identity").unwrap();
    let bin = test_relay_binary().unwrap();
    let out = ferry_e2e::netns::run(std::process::Command::new(&bin).args([
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
    cfg.extra = format!(
        "\n[identity]\nkey-file = \"{}\"\n\n[network]\nid = \"{NETWORK}\"\nledger-key = \"{ledger_key}\"\nledger-url = \"http://127.0.0.1:9\"\n\n[metering]\nstate-dir = \"{}\"\nreceipt-every-mib = 0.25\nreceipt-every-secs = 2\ncredit-window-mib = 4\n\n[paid]\nenabled = true\n",
        relay_home.dir.join("identity.key").display(),
        state.display()
    );
    let relay_key = KeyPair::generate().unwrap();
    let _agent = Agent::start(&mut topo.lab, &topo.router, &relay_key, &cfg).unwrap();
    home.write_config(&format!(
        "[[relay]]\nname = \"agent\"\nendpoint = \"{}\"\npublic-key = \"{}\"\nkeepalive = 5\nidentity-key = \"{}\"\ncontrol-address = \"10.77.0.1\"\n",
        Agent::endpoint(),
        relay_key.public,
        relay_home.identity_public
    ))
    .unwrap();

    let tun = topo.lab.ifname("fc");
    start_connect(&mut topo.lab, &topo.client, &home, "agent", &tun).unwrap();
    let got = fetch(
        &topo.client,
        sa(INET4, DATA_PORT),
        8 << 20,
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(got.peer_seen.ip(), std::net::IpAddr::from(ROUTER_UP4));
    let status = || home.cli(&topo.client, &["status", "--json"]).unwrap();
    wait_until(Duration::from_secs(10), "an acknowledged receipt", || {
        status().contains("\"acked\": true")
    })
    .unwrap();
    let st = status();
    assert!(st.contains("\"paid\": true"), "{st}");
    assert!(!st.contains("\"spend_micros\": 0,"), "{st}");

    home.cli(&topo.client, &["disconnect"]).unwrap();
    let st = status();
    assert!(st.contains("\"state\": \"stopped\""), "{st}");
    let log = topo.lab.log("ferry-connect");
    assert!(!log.contains("refused"), "{log}");
    // The final receipt covers at least the 8 MiB download and was co-signed by us.
    let st_down = st
        .split("\"last_receipt\": {")
        .nth(1)
        .and_then(|r| r.split("\"bytes_down\": ").nth(1))
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    assert!(st_down >= 8 << 20, "{st}");
}
