//! `ferry connect` to a paid relay: session offer with a voucher, receipts co-signed
//! automatically and kept locally, final receipt at disconnect; a relay that over-claims is
//! refused and the client disconnects with the kill switch still on.
//! The relay is `ferry-test-relay` (client/examples: boringtun + ferry-metering's RelayHub,
//! echoing UDP port 7) until ferry-agent's metering integration lands.
//! Needs root: `cargo test -p ferry-e2e --test client_paid -- --ignored --test-threads=1`.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use ferry_e2e::client::{
    FerryHome, NetnsResolvConf, WireCounters, start_connect, test_relay_binary,
};
use ferry_e2e::netns::ProcId;
use ferry_e2e::topology::{CLIENT_WAN4, INET4, ROUTER_WAN4, Topology};
use ferry_e2e::wait::{wait_for, wait_until};
use ferry_e2e::wg::{KeyPair, tunnel};

const LEDGER_SEED: &str = "0303030303030303030303030303030303030303030303030303030303030303";
const RELAY_SEED: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const NETWORK: &str = "42424242424242424242424242424242";

struct PaidLab {
    _resolv: NetnsResolvConf,
    home: FerryHome,
    relay: ProcId,
    topo: Topology,
}

fn paid_lab(phantom_down: u64) -> PaidLab {
    let mut topo = Topology::build().unwrap();
    topo.client
        .route(&["default", "via", &ROUTER_WAN4.to_string()])
        .unwrap();
    let resolv =
        NetnsResolvConf::create(&topo.client, &format!("nameserver {ROUTER_WAN4}\n")).unwrap();
    let home = FerryHome::create(&topo.lab, "paid-home").unwrap();
    let relay_key = KeyPair::generate().unwrap();
    let key_file = relay_key
        .write_private(topo.lab.dir(), "relay-wg.key")
        .unwrap();
    let bin = test_relay_binary().unwrap().to_string_lossy().into_owned();
    let voucher = home.dir.join("voucher");
    ferry_e2e::netns::run(std::process::Command::new(&bin).args([
        "voucher",
        "--ledger-seed",
        LEDGER_SEED,
        "--network",
        NETWORK,
        "--client-key",
        &home.identity_public,
        "--out",
        &voucher.to_string_lossy(),
    ]))
    .unwrap();
    let listen = format!("{ROUTER_WAN4}:{}", tunnel::RELAY_PORT);
    let relay = topo
        .lab
        .spawn(
            &topo.router,
            "test-relay",
            &[
                &bin,
                "run",
                "--listen",
                &listen,
                "--wg-key",
                &key_file.to_string_lossy(),
                "--client-wg",
                &home.wg_public,
                "--identity-seed",
                RELAY_SEED,
                "--ledger-seed",
                LEDGER_SEED,
                "--network",
                NETWORK,
                "--phantom-down",
                &phantom_down.to_string(),
            ],
        )
        .unwrap();
    let lab = &topo.lab;
    let identity = wait_for(Duration::from_secs(10), "test relay ready", || {
        let log = lab.log("test-relay");
        log.contains("ready")
            .then(|| {
                log.lines()
                    .find_map(|l| l.strip_prefix("identity ").map(str::to_owned))
            })
            .flatten()
    })
    .unwrap();
    // No `address`: the relay assigns it in `Address` after accepting the Hello, which goes
    // outside the tunnel to the relay's Hello port (endpoint IP, 51821).
    home.write_config(&format!(
        "[[relay]]\nname = \"paid\"\nendpoint = \"{listen}\"\npublic-key = \"{}\"\nkeepalive = 5\nidentity-key = \"{identity}\"\ncontrol-address = \"10.77.0.1\"\n",
        relay_key.public,
    ))
    .unwrap();
    PaidLab {
        _resolv: resolv,
        home,
        relay,
        topo,
    }
}

/// Sends `n` datagrams of 1000 bytes through the tunnel to the relay's echo; returns replies.
fn echo_traffic(lab: &PaidLab, n: usize) -> usize {
    let s = lab
        .topo
        .client
        .enter(|| UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
    let to = SocketAddr::new(INET4.into(), 7);
    let mut got = 0;
    let mut buf = [0u8; 2048];
    for i in 0..n {
        if s.send_to(&[i as u8; 1000], to).is_err() {
            break;
        }
        while s.recv_from(&mut buf).is_ok() {
            got += 1;
        }
    }
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    while s.recv_from(&mut buf).is_ok() {
        got += 1;
    }
    got
}

fn status(lab: &PaidLab) -> String {
    lab.home
        .cli(&lab.topo.client, &["status", "--json"])
        .unwrap()
}

#[test]
#[ignore = "needs root: netns"]
fn paid_session_cosigns_receipts_automatically_and_the_final_one_at_disconnect() {
    let mut lab = paid_lab(0);
    let tun = lab.topo.lab.ifname("fc");
    start_connect(&mut lab.topo.lab, &lab.topo.client, &lab.home, "paid", &tun).unwrap();
    let got = echo_traffic(&lab, 3000);
    assert!(got > 2000, "only {got} echoes");
    wait_until(Duration::from_secs(5), "an acknowledged receipt", || {
        status(&lab).contains("\"acked\": true")
    })
    .unwrap();
    let st = status(&lab);
    assert!(st.contains("\"paid\": true"), "{st}");
    assert!(st.contains("\"session_id\": \"07070707"), "{st}");
    assert!(!st.contains("\"spend_micros\": 0,"), "{st}");
    let log = lab.topo.lab.log("test-relay");
    assert!(log.contains("answered outside the tunnel: Accept"), "{log}");
    assert!(log.contains("relay stored co-signed receipt seq"), "{log}");
    // The addresses the relay assigned are on the TUN.
    let addrs = lab.topo.client.ip(&["addr", "show", &tun]).unwrap();
    assert!(
        addrs.contains("10.77.0.2/32") && addrs.contains("fd77::2/128"),
        "{addrs}"
    );

    lab.home.cli(&lab.topo.client, &["disconnect"]).unwrap();
    wait_until(Duration::from_secs(5), "relay closed acknowledged", || {
        lab.topo
            .lab
            .log("test-relay")
            .contains("Closed { acknowledged: true }")
    })
    .unwrap();
    let st = status(&lab);
    assert!(st.contains("\"state\": \"stopped\""), "{st}");
    assert!(st.contains("\"kill_switch\": false"), "{st}");
    // Kept locally: session record + co-signed receipts.
    let store = std::fs::metadata(lab.home.dir.join("receipts.log")).unwrap();
    assert!(
        store.len() > 600 + 332,
        "receipt log has {} bytes",
        store.len()
    );
    // `ferry voucher show` reads the same log: one session, every echoed datagram counted
    // (1000-byte payloads each way plus headers), bounded by what was sent.
    let shown = lab
        .home
        .cli(&lab.topo.client, &["voucher", "show"])
        .unwrap();
    let used: u64 = shown
        .lines()
        .find_map(|l| l.strip_prefix("used "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no used line: {shown}"));
    assert!(shown.contains(" in 1 session(s), "), "{shown}");
    assert!(
        shown.contains(" expires ") && shown.contains("(in "),
        "{shown}"
    );
    let got = got as u64;
    assert!(
        used >= got * 2_000 && used <= 3_000 * 2 * 1_100,
        "used {used} for {got} echoes: {shown}"
    );
    let _ = lab.relay;
}

#[test]
#[ignore = "needs root: netns"]
fn an_over_claiming_relay_is_refused_and_the_client_stays_behind_the_kill_switch() {
    let mut lab = paid_lab(64 << 10);
    let wire = WireCounters::install(
        &lab.topo.router,
        &lab.topo.router_wan_if,
        "fepaidwire",
        &[("plain", &format!("ip saddr {CLIENT_WAN4} ip daddr {INET4}"))],
    )
    .unwrap();
    let tun = lab.topo.lab.ifname("fc");
    let ferry =
        start_connect(&mut lab.topo.lab, &lab.topo.client, &lab.home, "paid", &tun).unwrap();
    echo_traffic(&lab, 500);
    wait_until(
        Duration::from_secs(15),
        "ferry connect to refuse and exit",
        || !lab.topo.lab.is_running(ferry),
    )
    .unwrap();
    let st = status(&lab);
    assert!(st.contains("\"state\": \"failed\""), "{st}");
    assert!(st.contains("more bytes than the client counted"), "{st}");
    assert!(st.contains("\"kill_switch\": true"), "{st}");
    wait_until(Duration::from_secs(5), "relay cut-off event", || {
        lab.topo
            .lab
            .log("test-relay")
            .contains("CutOff(Rejected(OverClaim))")
    })
    .unwrap();
    // The host stays cut off: traffic does not leave in the clear.
    echo_traffic(&lab, 20);
    assert_eq!(wire.packets("plain").unwrap(), 0);
    assert!(
        lab.topo
            .client
            .exec(&["nft", "list", "table", "inet", "ferry"])
            .is_ok()
    );
    lab.home.cli(&lab.topo.client, &["disconnect"]).unwrap();
    assert!(
        lab.topo
            .client
            .exec(&["nft", "list", "table", "inet", "ferry"])
            .is_err()
    );
    echo_traffic(&lab, 5);
    assert!(
        wire.packets("plain").unwrap() > 0,
        "positive control: traffic leaves once disconnected"
    );
}
