//! The exit port policy with the real `ferry-agent`, in both egress modes: outgoing SMTP
//! (tcp/25) is closed by default (a client's connection to the internet host's port 25 fails
//! and never reaches it, counted as `exit_port` in `/metrics`) while other ports work
//! (positive control); `block-ports = []` opens it (so the block was the policy, not the
//! service); a reduced exit policy (`allow-ports`) lets only its ports through.
//! Needs root: `cargo test -p ferry-e2e --test exit_policy -- --ignored --test-threads=1`.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use ferry_e2e::agent::Egress;
use ferry_e2e::client::ClientLab;
use ferry_e2e::observability::{http_get, sample};
use ferry_e2e::servers::{TcpService, connect, fetch};
use ferry_e2e::topology::{DATA_PORT, INET4};

const SMTP: u16 = 25;

/// Starts a lab in `egress` mode with `egress_extra` in `[egress]`, connects, and returns
/// (whether tcp/25 got through, whether tcp/8000 got through, exit_port drops).
fn run(egress: Egress, egress_extra: &str) -> (bool, bool, f64) {
    let mut lab = ClientLab::start(|cfg| {
        cfg.egress = egress;
        cfg.egress_extra = egress_extra.to_owned();
    })
    .unwrap();
    let smtp = TcpService::start(&lab.topo.inet, SocketAddr::from((INET4, SMTP)), "smtp").unwrap();
    lab.connect().unwrap();
    let to = |port| SocketAddr::from((INET4, port));
    let smtp_ok = connect(&lab.topo.client, to(SMTP), Duration::from_secs(3)).is_ok();
    let data_ok = fetch(
        &lab.topo.client,
        to(DATA_PORT),
        1 << 20,
        Duration::from_secs(5),
    )
    .is_ok();
    let (_, metrics) = http_get(&lab.topo.router, "http://127.0.0.1:9586/metrics", None).unwrap();
    let drops = sample(
        &metrics,
        "ferry_packets_dropped_total{reason=\"exit_port\"}",
    )
    .unwrap_or(0.0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        smtp_ok,
        !smtp.seen().is_empty(),
        "{egress:?} {egress_extra:?}: the service saw {:?}",
        smtp.seen()
    );
    lab.disconnect().unwrap();
    (smtp_ok, data_ok, drops)
}

#[test]
#[ignore = "needs root (network namespaces)"]
fn smtp_is_closed_by_default_and_the_operator_decides_in_both_egress_modes() {
    for egress in [Egress::Tun, Egress::Userspace] {
        let (smtp, data, drops) = run(egress, "");
        assert!(
            !smtp && data,
            "{egress:?} default: smtp {smtp}, data {data}"
        );
        assert!(drops >= 1.0, "{egress:?}: exit_port drops {drops}");
        let (smtp, data, drops) = run(egress, "block-ports = []\n");
        assert!(smtp && data, "{egress:?} open: smtp {smtp}, data {data}");
        assert_eq!(drops, 0.0, "{egress:?}");
    }
    // Only port 25 allowed (the port check is the relay core's, shared by both modes): the
    // data port is closed now, SMTP open.
    let (smtp, data, drops) = run(Egress::Tun, "allow-ports = [\"tcp/25\"]\n");
    assert!(smtp && !data, "allow-only: smtp {smtp}, data {data}");
    assert!(drops >= 1.0);
}
