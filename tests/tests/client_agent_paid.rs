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

/// The lab both tests share: topology, services, the real agent in paid mode, a client home
/// configured for it (the fields drop in order: agent and services before the topology).
struct AgentLab {
    _agent: Agent,
    _services: Services,
    _resolv: NetnsResolvConf,
    home: FerryHome,
    topo: Topology,
}

fn agent_lab() -> AgentLab {
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
    let agent = Agent::start(&mut topo.lab, &topo.router, &relay_key, &cfg).unwrap();
    home.write_config(&format!(
        "[[relay]]\nname = \"agent\"\nendpoint = \"{}\"\npublic-key = \"{}\"\nkeepalive = 5\nidentity-key = \"{}\"\ncontrol-address = \"10.77.0.1\"\n",
        Agent::endpoint(),
        relay_key.public,
        relay_home.identity_public
    ))
    .unwrap();

    AgentLab {
        _agent: agent,
        _services: services,
        _resolv: resolv,
        home,
        topo,
    }
}

#[test]
#[ignore = "needs root: netns"]
fn paying_the_real_agent_cosigns_receipts_and_the_final_one() {
    let mut lab = agent_lab();
    let AgentLab { home, topo, .. } = &mut lab;
    let tun = topo.lab.ifname("fc");
    start_connect(&mut topo.lab, &topo.client, home, "agent", &tun).unwrap();
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

#[test]
#[ignore = "needs root: netns"]
fn spoofed_hello_replies_on_the_wire_change_nothing() {
    // An on-path host that sees the Hello injects v1's unsigned Reject ("relay busy") and
    // Address (an attacker-chosen tunnel address), and replies signed by a key of its own,
    // while the relay's real answers are held back (its Hello port drops for a while). Before
    // signed replies the first forged Reject ended `ferry connect` ("relay refused the
    // session: relay busy") and a forged Address was configured. Now they are ignored, the
    // client keeps repeating its Hello, and connects with the relay's own session.
    use ferry_e2e::inject::{send_spoofed, udp_socket_connected_to};
    use ferry_metering::{Message, encode};
    use std::net::{Ipv4Addr, SocketAddrV4};
    let mut lab = agent_lab();
    let AgentLab { home, topo, .. } = &mut lab;
    let hello = SocketAddrV4::new(ROUTER_WAN4, 51821);
    topo.router
        .exec(&[
            "nft",
            "add table inet ferrytest; add chain inet ferrytest hold { type filter hook input \
             priority -300; }; add rule inet ferrytest hold udp dport 51821 drop",
        ])
        .unwrap();
    let tun = topo.lab.ifname("fs");
    let argv = home.argv(&["connect", "agent", "--tun", &tun]).unwrap();
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let connect = topo
        .lab
        .spawn_env(
            &topo.client,
            "ferry-connect",
            &refs,
            &[("FERRY_LOG", "debug")],
        )
        .unwrap();
    let mut client_sock = None;
    wait_until(Duration::from_secs(10), "the client's Hello socket", || {
        client_sock = udp_socket_connected_to(&topo.client, hello.into()).unwrap();
        client_sock.is_some()
    })
    .unwrap();
    let client_sock = client_sock.unwrap();
    // Forged replies: unsigned v1 frames, and v2 frames signed by the attacker's own key for
    // a made-up offer/session (it cannot sign as the relay).
    let network = ferry_receipts::NetworkId::from_hex(NETWORK).unwrap();
    let forger = ferry_receipts::SigningKey::from_seed(&[0x66; 32]);
    let forged = vec![
        vec![0x03, 0, 1, 6],
        [&[0x04, 0, 20, 10, 77, 0, 66][..], &[0; 16]].concat(),
        encode(&Message::Reject(
            ferry_receipts::SessionReject {
                network_id: network,
                relay_key: ferry_receipts::PublicKey([0; 32]),
                client_key: ferry_receipts::PublicKey([0; 32]),
                offer_nonce: [0; 16],
                reason: 6,
                signature: ferry_receipts::Signature::ZERO,
            }
            .sign(&forger),
        )),
        encode(&Message::Address(
            ferry_receipts::SessionAddress {
                network_id: network,
                relay_key: ferry_receipts::PublicKey([0; 32]),
                offer_nonce: [0; 16],
                session_id: ferry_receipts::SessionId([0; 16]),
                client_wg_key: [0; 32],
                v4: Ipv4Addr::new(10, 77, 0, 66),
                v6: std::net::Ipv6Addr::UNSPECIFIED,
                signature: ferry_receipts::Signature::ZERO,
            }
            .sign(&forger),
        )),
    ];
    let t0 = std::time::Instant::now();
    let mut sent = 0;
    while t0.elapsed() < Duration::from_secs(4) {
        send_spoofed(&topo.client, hello, client_sock, &forged).unwrap();
        sent += forged.len();
        assert!(
            topo.lab.is_running(connect),
            "ferry connect gave up on forged replies:\n{}",
            topo.lab.log("ferry-connect")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The relay's real answers get through again.
    topo.router
        .exec(&["nft", "delete table inet ferrytest"])
        .unwrap();
    let status = home.state.join("status.json");
    wait_until(
        Duration::from_secs(20),
        "connected after the attack",
        || std::fs::read_to_string(&status).is_ok_and(|s| s.contains("\"state\": \"connected\"")),
    )
    .unwrap();
    let log = topo.lab.log("ferry-connect");
    assert!(!log.contains("refused"), "{log}");
    // The forged replies did reach the client's Hello socket (and were ignored).
    assert!(log.contains("were ignored"), "{log}");
    let st = home.cli(&topo.client, &["status", "--json"]).unwrap();
    assert!(
        !st.contains("10.77.0.66"),
        "forged address configured: {st}"
    );
    let addrs = topo
        .client
        .exec(&["ip", "-4", "addr", "show", "dev", &tun])
        .unwrap();
    assert!(
        !addrs.contains(&Ipv4Addr::new(10, 77, 0, 66).to_string()),
        "{addrs}"
    );
    let got = fetch(
        &topo.client,
        sa(INET4, DATA_PORT),
        1 << 20,
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(got.peer_seen.ip(), std::net::IpAddr::from(ROUTER_UP4));
    eprintln!("{sent} forged replies injected over 4 s; connected with the relay's own session");
    home.cli(&topo.client, &["disconnect"]).unwrap();
}
