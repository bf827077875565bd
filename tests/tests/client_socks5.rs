//! `ferry socks5` end to end, run as an unprivileged user (no TUN, no root): TCP CONNECT to
//! IPv4, IPv6 and domain-name targets through the relay; names are resolved by the resolver
//! behind the relay, through the tunnel.
//! Needs root to build the lab: `cargo test -p ferry-e2e --test client_socks5 -- --ignored`.
#![allow(clippy::unwrap_used)]

use std::net::TcpStream;
use std::time::Duration;

use ferry_e2e::client::{ClientLab, DATA_NAME, WireCounters};
use ferry_e2e::servers::SocksDst as Dst;
use ferry_e2e::topology::{DATA_PORT, INET4, INET6, ROUTER_UP4, sa};
use ferry_e2e::wait::wait_until;

const LISTEN: &str = "127.0.0.1:1080";

/// SOCKS5 CONNECT + `GET n` through the proxy at [`LISTEN`] in the client namespace.
fn socks_fetch(lab: &ClientLab, dst: Dst<'_>, n: u64) -> Result<(String, u64), u8> {
    ferry_e2e::servers::socks_fetch(&lab.topo.client, LISTEN, dst, n)
}

#[test]
#[ignore = "needs root: netns"]
fn socks5_as_nobody_fetches_by_address_and_by_name_through_the_tunnel() {
    let mut lab = ClientLab::start(|_| {}).unwrap();
    let wire = WireCounters::install(
        &lab.topo.router,
        &lab.topo.router_wan_if,
        "fesockswire",
        &[("dns", "meta l4proto { tcp, udp } th dport 53")],
    )
    .unwrap();
    lab.home.give_to_nobody().unwrap();
    let links_before = lab.topo.client.ip(&["-o", "link"]).unwrap().lines().count();
    let mut argv = vec![
        "setpriv".to_owned(),
        "--reuid=nobody".into(),
        "--regid=nogroup".into(),
        "--clear-groups".into(),
        "--".into(),
    ];
    argv.extend(
        lab.home
            .argv(&["socks5", "lab", "--listen", LISTEN])
            .unwrap(),
    );
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let proc = lab
        .topo
        .lab
        .spawn_env(
            &lab.topo.client,
            "ferry-socks5",
            &refs,
            &[("FERRY_LOG", "debug")],
        )
        .unwrap();
    let status = lab.home.state.join("status.json");
    wait_until(Duration::from_secs(20), "socks5 connected", || {
        std::fs::read_to_string(&status).is_ok_and(|s| s.contains("\"state\": \"connected\""))
    })
    .unwrap();
    // Really unprivileged, and no TUN device appeared.
    let st = std::fs::read_to_string(format!("/proc/{}/status", proc.pid())).unwrap();
    let uid = st.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid}"
    );
    let caps = st.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert!(caps.ends_with("0000000000000000"), "{caps}");
    let links_after = lab.topo.client.ip(&["-o", "link"]).unwrap().lines().count();
    assert_eq!(links_before, links_after);

    let (banner, n) = socks_fetch(&lab, Dst::Ip(sa(INET4, DATA_PORT)), 2 << 20).unwrap();
    assert_eq!(n, 2 << 20);
    assert!(
        banner.starts_with(&format!("inet {ROUTER_UP4}:")),
        "{banner}"
    );
    let (_, n) = socks_fetch(&lab, Dst::Ip(sa(INET6, DATA_PORT)), 256 << 10).unwrap();
    assert_eq!(n, 256 << 10);

    // By name: resolved behind the relay; nothing asks the ISP resolver.
    let name = DATA_NAME.trim_end_matches('.');
    let (banner, n) = socks_fetch(&lab, Dst::Name(name, DATA_PORT), 1 << 20).unwrap();
    assert_eq!(n, 1 << 20);
    assert!(banner.starts_with("inet "), "{banner}");
    assert_eq!(wire.packets("dns").unwrap(), 0);
    // Unknown names and closed ports get proper SOCKS errors.
    assert_eq!(
        socks_fetch(&lab, Dst::Name("nope.test", DATA_PORT), 1),
        Err(4)
    );
    assert_eq!(socks_fetch(&lab, Dst::Ip(sa(INET4, 9)), 1), Err(5));
    let st = lab.status_json().unwrap();
    assert!(st.contains("\"mode\": \"socks5\""), "{st}");
    // One lifecycle with `connect`: a second session is refused while it runs, and
    // `ferry disconnect` stops the proxy (it used to say "stopped" while it kept serving).
    let err = lab
        .home
        .cli(
            &lab.topo.client,
            &["socks5", "lab", "--listen", "127.0.0.1:1081"],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("ferry socks5 is already running"), "{err}");
    lab.disconnect().unwrap();
    wait_until(Duration::from_secs(10), "the proxy to exit", || {
        !lab.topo.lab.is_running(proc)
    })
    .unwrap();
    let out = lab.topo.lab.stop(proc, Duration::from_secs(1));
    assert!(out.contains("exit status: 0"), "{out}");
    let refused = lab
        .topo
        .client
        .enter(|| TcpStream::connect(LISTEN).is_err())
        .unwrap();
    assert!(refused, "the proxy still serves after `ferry disconnect`");
    let st = lab.status_json().unwrap();
    assert!(st.contains("\"state\": \"stopped\""), "{st}");
}
