//! Validates the harness itself against a reference relay (wireguard-go + nft masquerade, no egress
//! policy): what the ferry-agent tests assert as "blocked" must be reachable here, so a probe that
//! cannot succeed would be caught.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ferry_e2e::multipeer::{PeerSpec, run_peers};
use ferry_e2e::servers::{TcpService, UdpEcho, fetch, probe_tcp, probe_udp, upload};
use ferry_e2e::topology::*;
use ferry_e2e::wg::{KeyPair, reference_relay, stock_client, tunnel};

const T: Duration = Duration::from_secs(5);

#[test]
#[ignore = "needs root: netns"]
fn reference_relay_carries_traffic_and_probes_see_an_unprotected_lan() {
    let mut topo = Topology::build().unwrap();
    let data = TcpService::start(
        &topo.inet,
        sa(std::net::Ipv6Addr::UNSPECIFIED, DATA_PORT),
        "inet",
    )
    .unwrap();
    let lan = TcpService::start(
        &topo.lan,
        sa(std::net::Ipv6Addr::UNSPECIFIED, DATA_PORT),
        "lan",
    )
    .unwrap();
    let admin = TcpService::start(
        &topo.router,
        sa(std::net::Ipv6Addr::UNSPECIFIED, ADMIN_PORT),
        "admin",
    )
    .unwrap();

    // Without a tunnel the client reaches nothing beyond its link.
    assert!(probe_tcp(&topo.client, sa(INET4, DATA_PORT), Duration::from_secs(1)).is_none());

    let (rk, ck) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
    let relay = reference_relay(&mut topo, &rk).unwrap();
    relay
        .add_peer(&ck.public, None, &tunnel::CLIENT_ADDRS, None)
        .unwrap();
    let endpoint = sa(ROUTER_WAN4, tunnel::RELAY_PORT);
    let client = stock_client(
        &mut topo.lab,
        &topo.client,
        "wc",
        &ck,
        &rk.public,
        endpoint,
        &tunnel::CLIENT_ADDRS,
    )
    .unwrap();

    let f4 = fetch(&topo.client, sa(INET4, DATA_PORT), 4 << 20, T).unwrap();
    assert_eq!(f4.bytes, 4 << 20);
    assert_eq!(
        f4.peer_seen.ip(),
        ROUTER_UP4,
        "masqueraded to the router's address"
    );
    let f6 = fetch(&topo.client, sa(INET6, DATA_PORT), 1 << 20, T).unwrap();
    assert_eq!(f6.peer_seen.ip(), ROUTER_UP6);
    let up = upload(&topo.client, sa(INET4, DATA_PORT), 2 << 20, T).unwrap();
    assert_eq!(up.ip(), ROUTER_UP4);
    assert!(
        data.seen()
            .iter()
            .all(|a| a.ip() == ROUTER_UP4 || a.ip() == ROUTER_UP6)
    );
    let st = client.peer().unwrap();
    assert!(st.rx > 4 << 20 && st.tx > 2 << 20, "wg counters {st:?}");

    // No policy here: the LAN host and router admin port ARE reachable through the tunnel.
    let (b, seen) = probe_tcp(&topo.client, sa(LAN_HOST4, DATA_PORT), T).unwrap();
    assert_eq!(
        (b.as_str(), seen.ip()),
        ("lan", "10.77.0.2".parse().unwrap())
    );
    assert!(probe_tcp(&topo.client, sa(LAN_HOST6, DATA_PORT), T).is_some());
    for ip in router_addrs() {
        assert_eq!(
            probe_tcp(&topo.client, sa(ip, ADMIN_PORT), T)
                .map(|x| x.0)
                .as_deref(),
            Some("admin"),
            "{ip}"
        );
    }
    assert!(!lan.seen().is_empty() && !admin.seen().is_empty());
}

#[test]
#[ignore = "needs root: netns"]
fn multipeer_client_works_against_reference_relay() {
    let mut topo = Topology::build().unwrap();
    let echo = UdpEcho::start(
        &topo.inet,
        sa(std::net::Ipv6Addr::UNSPECIFIED, ECHO_PORT),
        "inet",
    )
    .unwrap();
    assert!(probe_udp(&topo.inet, sa(INET4, ECHO_PORT), T).is_some());
    let rk = KeyPair::generate().unwrap();
    let relay = reference_relay(&mut topo, &rk).unwrap();
    let peers: Vec<PeerSpec> = (0..8u8)
        .map(|i| PeerSpec {
            key: KeyPair::generate().unwrap(),
            inner: vec![
                format!("10.77.0.{}", i + 10).parse().unwrap(),
                format!("fd77::1:{}", i + 1).parse().unwrap(),
            ],
        })
        .collect();
    for p in &peers {
        let a: Vec<String> = p
            .inner
            .iter()
            .map(|ip| format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 }))
            .collect();
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        relay.add_peer(&p.key.public, None, &a, None).unwrap();
    }
    let targets = [sa(INET4, ECHO_PORT), sa(INET6, ECHO_PORT)];
    let out = run_peers(
        &topo.client,
        rk.public_key(),
        sa(ROUTER_WAN4, tunnel::RELAY_PORT),
        &peers,
        &targets,
        Duration::from_secs(15),
    )
    .unwrap();
    for (i, o) in out.iter().enumerate() {
        assert_eq!(o.answered.len(), 2, "peer {i}: {o:?}");
        for (_, seen) in &o.answered {
            assert!(
                seen.ip() == ROUTER_UP4 || seen.ip() == ROUTER_UP6,
                "peer {i}: {o:?}"
            );
        }
    }
    assert!(echo.seen().len() >= 16);
}

#[test]
#[ignore = "needs root: netns"]
fn lab_removes_namespaces_and_processes_even_on_panic() {
    use std::sync::Mutex;
    let created: Mutex<Option<(String, u32)>> = Mutex::new(None);
    let r = std::panic::catch_unwind(|| {
        let mut lab = ferry_e2e::netns::Lab::new().unwrap();
        let ns = lab.add_ns("boom").unwrap();
        let p = lab.spawn(&ns, "sleeper", &["sleep", "300"]).unwrap();
        *created.lock().unwrap() = Some((ns.name().to_owned(), p.pid()));
        panic!("deliberate");
    });
    assert!(r.is_err());
    let (name, pid) = created.lock().unwrap().clone().unwrap();
    let list =
        ferry_e2e::netns::run(std::process::Command::new("ip").args(["netns", "list"])).unwrap();
    assert!(
        !list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&name)),
        "{name} left: {list}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} survived"
    );
}
