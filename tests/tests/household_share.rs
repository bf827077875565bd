//! The household keeps its share of the uplink (docs/agent.md "Sharing limits"): the router's
//! uplink is modelled with a 40 Mbit/s tbf qdisc on the internet host's side (downloads), a
//! household LAN host and a paying `ferry connect` client download from the internet host
//! with iperf3 (10 s each). With `[limits] share-down-mbit = 2` / `share-up-mbit = 2`:
//! - the client's download and upload hold the cap within ±5 % (of the TCP goodput the cap
//!   leaves: it counts inner IP bytes, iperf3 counts payload), alone and beside the LAN host
//!   (uploads over the cap are dropped, not queued: at 2 Mbit/s the 64 KiB burst carries TCP
//!   to the cap; at 5 Mbit/s it got about half, see docs/agent.md);
//! - the LAN host downloading at the same time keeps >= 90 % of its solo throughput.
//!
//! Positive control: the same with no cap, and the LAN host gets less than 90 % (so the
//! uplink really is shared and the test would fail without the cap).
//! Needs root and iperf3: `cargo test -p ferry-e2e --test household_share -- --ignored`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ferry_e2e::netns::Ns;
use ferry_e2e::paid_connect::{connected_lab_with, session_id, status_json};
use ferry_e2e::topology::{INET4, ROUTER_UP4};

const UPLINK_MBIT: u32 = 40;
const CAP_MBIT: f64 = 2.0;
/// Inner MTU of the tunnel and the TCP/IP header bytes (20 + 20 + 12 timestamps) per packet.
const MTU: f64 = 1420.0;
const HEADERS: f64 = 52.0;

/// One iperf3 run of 10 s from `ns` to the internet host's server on `port`; `download`:
/// reverse mode (the server sends). Returns Mbit/s received.
fn iperf(ns: &Ns, port: u16, download: bool) -> f64 {
    let port = port.to_string();
    let host = INET4.to_string();
    let mut argv = vec!["iperf3", "-c", &host, "-p", &port, "-t", "10", "-J"];
    if download {
        argv.push("-R");
    }
    let out = ns.exec(&argv).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no result: {out}"));
    bps / 1e6
}

/// LAN download and client download at the same time: (LAN, client) Mbit/s.
fn together(lan: &Ns, client: &Ns) -> (f64, f64) {
    let (l, c) = (lan.clone(), client.clone());
    let a = std::thread::spawn(move || iperf(&l, 5201, true));
    let b = std::thread::spawn(move || iperf(&c, 5202, true));
    (a.join().unwrap(), b.join().unwrap())
}

#[test]
#[ignore = "needs root: netns, iperf3"]
fn the_household_keeps_its_download_while_paying_clients_are_held_to_the_share_cap() {
    let limits = format!("share-down-mbit = {CAP_MBIT}\nshare-up-mbit = {CAP_MBIT}\n");
    let (mut lab, _tun) = connected_lab_with("fh", &limits);
    let topo = &lab.topo;
    // The LAN host reaches the internet host through the router (routed, not NATed).
    topo.inet
        .route(&["192.168.77.0/24", "via", &ROUTER_UP4.to_string()])
        .unwrap();
    let inet_if = topo.lab.ifname("i");
    topo.inet
        .exec(&[
            "tc",
            "qdisc",
            "add",
            "dev",
            &inet_if,
            "root",
            "tbf",
            "rate",
            &format!("{UPLINK_MBIT}mbit"),
            "burst",
            "64kb",
            "latency",
            "50ms",
        ])
        .unwrap();
    let inet = topo.inet.clone();
    for port in ["5201", "5202"] {
        lab.topo
            .lab
            .spawn(&inet, "iperf3", &["iperf3", "-s", "-p", port])
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let topo = &lab.topo;
    let goodput_cap = CAP_MBIT * (MTU - HEADERS) / MTU;

    let solo = iperf(&topo.lan, 5201, true);
    let client_down = iperf(&topo.client, 5202, true);
    let client_up = iperf(&topo.client, 5202, false);
    let (lan_shared, client_shared) = together(&topo.lan, &topo.client);
    eprintln!(
        "uplink {UPLINK_MBIT} Mbit/s, clients capped at {CAP_MBIT} (goodput {goodput_cap:.2}): \
         LAN alone {solo:.1}; client down {client_down:.2}, up {client_up:.2}; together: LAN \
         {lan_shared:.1} ({:.1} % of alone), client {client_shared:.2}",
        100.0 * lan_shared / solo
    );
    for (what, r) in [
        ("download", client_down),
        ("upload", client_up),
        ("download beside the LAN", client_shared),
    ] {
        assert!(
            (r / goodput_cap - 1.0).abs() <= 0.05,
            "client {what} {r:.2} Mbit/s is not within 5 % of {goodput_cap:.2}"
        );
    }
    assert!(
        lan_shared >= 0.9 * solo,
        "LAN {lan_shared:.1} Mbit/s beside a capped client, {solo:.1} alone"
    );

    // Positive control: no cap (the agent restarts; the client opens a new session).
    let first = session_id(&status_json(&lab.home, &lab.topo)).unwrap();
    lab.agent_cfg.limits_extra = String::new();
    lab.topo.lab.stop(lab.agent.proc, Duration::from_secs(10));
    lab.restart_agent();
    lab.wait_new_session(&first, Duration::from_secs(40))
        .unwrap();
    let (lan_free, client_free) = together(&lab.topo.lan, &lab.topo.client);
    eprintln!(
        "no cap: LAN {lan_free:.1} ({:.1} % of alone), client {client_free:.1}",
        100.0 * lan_free / solo
    );
    assert!(
        lan_free < 0.9 * solo,
        "without a cap the client should take a real share: LAN {lan_free:.1} of {solo:.1}"
    );
}
