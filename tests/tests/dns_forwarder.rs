//! The agent's DNS forwarder end to end: a stock WireGuard client resolves a name served by an
//! authoritative test server on the internet host through the relay's tunnel address
//! (10.77.0.1 and fd77::1, port 53, UDP and TCP), in both egress modes.
//!
//! Controls: a name outside the zone gives NXDOMAIN (the answer really comes from the upstream
//! zone); with `[dns]` removed the tunnel address does not answer while the upstream itself
//! still answers the client through the same tunnel; the query names never reach the agent's
//! log even at DEBUG.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::time::Duration;

use ferry_e2e::agent::Egress;
use ferry_e2e::observability::{CANARY_ADDR, CANARY_NAME, dig, dns_testserver, http_get, sample};
use ferry_e2e::scenario::Scenario;
use ferry_e2e::topology::{INET4, sa};
use ferry_e2e::wait::wait_for;
use ferry_e2e::wg::tunnel;

const RELAY4: &str = "10.77.0.1";
const RELAY6: &str = "fd77::1";

fn dns_section() -> String {
    format!(
        "\n[dns]\ncache-size = 64\ntimeout-ms = 1000\nattempts = 2\n\n[[dns.upstream]]\nprotocol = \"plain\"\naddress = \"{INET4}\"\n"
    )
}

fn resolves_through_relay(egress: Egress) {
    let mut s = Scenario::start(egress, |c| c.extra.push_str(&dns_section())).unwrap();
    let records = [
        format!("{CANARY_NAME} 60 A {CANARY_ADDR}"),
        "www.ferry.test. 60 CNAME canary.ferry.test.".to_owned(),
    ];
    let records: Vec<&str> = records.iter().map(String::as_str).collect();
    dns_testserver(
        &mut s.topo.lab,
        &s.topo.inet,
        "dns-upstream",
        sa(INET4, 53),
        &records,
    )
    .unwrap();
    let c = s.topo.client.clone();
    let relay4: IpAddr = RELAY4.parse().unwrap();
    let relay6: IpAddr = RELAY6.parse().unwrap();

    // The first query may race the forwarder's start-up: retry briefly.
    let first = wait_for(
        Duration::from_secs(10),
        "first answer via 10.77.0.1",
        || dig(&c, relay4, CANARY_NAME, false).unwrap(),
    )
    .unwrap();
    assert_eq!(first.status, "NOERROR", "{first:?}");
    assert_eq!(first.addrs, vec![CANARY_ADDR.to_owned()]);

    for (server, tcp) in [(relay4, true), (relay6, false), (relay6, true)] {
        let r = dig(&c, server, CANARY_NAME, tcp)
            .unwrap()
            .unwrap_or_else(|| panic!("no answer from {server} tcp={tcp}"));
        assert_eq!(r.status, "NOERROR", "{server} tcp={tcp}: {r:?}");
        assert_eq!(r.addrs, vec![CANARY_ADDR.to_owned()], "{server} tcp={tcp}");
    }
    // CNAME chain resolved by the upstream and handed to the client.
    let www = dig(&c, relay4, "www.ferry.test.", false).unwrap().unwrap();
    assert_eq!(www.addrs, vec![CANARY_ADDR.to_owned()], "{www:?}");
    // Negative control: a name the zone does not have.
    let nx = dig(&c, relay4, "missing.ferry.test.", false)
        .unwrap()
        .expect("NXDOMAIN answer");
    assert_eq!(nx.status, "NXDOMAIN", "{nx:?}");
    assert!(nx.addrs.is_empty());

    // The forwarder's counters reach /metrics (router loopback, default listen).
    let (code, text) = http_get(&s.topo.router, "http://127.0.0.1:9586/metrics", None).unwrap();
    assert_eq!(code, 200, "{text}");
    let queries = sample(&text, "ferry_dns_queries_total").unwrap();
    assert!(
        queries >= 6.0,
        "ferry_dns_queries_total = {queries}\n{text}"
    );

    // Privacy: query names never reach the agent's log (the harness runs it at DEBUG).
    let log = s.topo.lab.log(&s.agent.label);
    assert!(log.contains("DNS forwarder started"), "{log}");
    for secret in ["canary", "missing.ferry", CANARY_ADDR] {
        assert!(!log.contains(secret), "{secret:?} in the agent log:\n{log}");
    }

    // Disabled forwarder: the tunnel address stays silent on 53, while the upstream itself
    // answers the client through the same (restarted) tunnel: the positive control.
    let mut cfg = s.config.clone();
    cfg.extra.clear();
    s.restart_agent(cfg).unwrap();
    let key = s.client_key.clone();
    s.restart_client("wd", &key, &tunnel::CLIENT_ADDRS).unwrap();
    let direct = wait_for(Duration::from_secs(10), "upstream via the tunnel", || {
        dig(&c, INET4.into(), CANARY_NAME, false).unwrap()
    })
    .unwrap();
    assert_eq!(direct.addrs, vec![CANARY_ADDR.to_owned()]);
    assert_eq!(dig(&c, relay4, CANARY_NAME, false).unwrap(), None);
    assert_eq!(dig(&c, relay4, CANARY_NAME, true).unwrap(), None);
}

#[test]
#[ignore = "needs root: netns"]
fn tun_egress_client_resolves_through_the_relay_tunnel_address() {
    resolves_through_relay(Egress::Tun);
}

#[test]
#[ignore = "needs root: netns"]
fn userspace_egress_client_resolves_through_the_relay_tunnel_address() {
    resolves_through_relay(Egress::Userspace);
}
