//! `ferry connect` end to end: TUN, full-tunnel routes, DNS through the tunnel, kill switch.
//! Needs root: `cargo test -p ferry-e2e --test client_connect -- --ignored --test-threads=1`.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use ferry_e2e::agent::Agent;
use ferry_e2e::client::{CANARY, CANARY_ISP, CANARY_TUNNEL, ClientLab, WireCounters};
use ferry_e2e::servers::{fetch, probe_tcp, probe_udp, upload};
use ferry_e2e::topology::{
    CLIENT_WAN4, DATA_PORT, ECHO_PORT, INET4, INET6, ROUTER_UP4, ROUTER_WAN4, sa,
};
use ferry_e2e::wait::wait_until;

const T: Duration = Duration::from_secs(10);

fn getent(lab: &ClientLab, name: &str) -> Option<String> {
    let out = lab
        .topo
        .client
        .exec_unchecked(&["timeout", "8", "getent", "ahostsv4", name])
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace().next().map(str::to_owned)
}

/// Sends one datagram from the client namespace (no answer expected).
fn send_udp(lab: &ClientLab, to: SocketAddr) {
    let s = lab
        .topo
        .client
        .enter(|| UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    let _ = s.send_to(b"ferry-leak-probe", to);
}

#[test]
#[ignore = "needs root: netns"]
fn connect_fetches_from_the_internet_host_over_ipv4_and_ipv6_then_disconnect_restores_everything() {
    let mut lab = ClientLab::start(|_| {}).unwrap();
    let c = &lab.topo.client;
    // Without the tunnel the internet host is unreachable (it only knows its own subnet).
    assert!(probe_tcp(c, sa(INET4, DATA_PORT), Duration::from_secs(2)).is_none());

    lab.connect().unwrap();
    let c = &lab.topo.client;
    let got = fetch(c, sa(INET4, DATA_PORT), 2 << 20, T).unwrap();
    assert_eq!(got.banner, "inet");
    // Masqueraded by the relay: the internet host sees the router, not the client.
    assert_eq!(got.peer_seen.ip(), std::net::IpAddr::from(ROUTER_UP4));
    let got6 = fetch(c, sa(INET6, DATA_PORT), 1 << 20, T).unwrap();
    assert_eq!(got6.bytes, 1 << 20);
    upload(c, sa(INET4, DATA_PORT), 1 << 20, T).unwrap();
    assert!(probe_udp(c, sa(INET4, ECHO_PORT), T).is_some());

    // Routes: full tunnel in both families, endpoint pinned to the physical path.
    let r4 = c.ip(&["-4", "route"]).unwrap();
    assert!(
        r4.contains("0.0.0.0/1 dev") && r4.contains("128.0.0.0/1 dev"),
        "{r4}"
    );
    assert!(
        r4.contains(&format!("{ROUTER_WAN4} via")) || r4.contains(&format!("{ROUTER_WAN4} dev")),
        "{r4}"
    );
    let r6 = c.ip(&["-6", "route"]).unwrap();
    assert!(
        r6.contains("::/1 dev") && r6.contains("8000::/1 dev"),
        "{r6}"
    );
    assert!(lab.kill_switch_present());
    assert_eq!(
        lab.resolv
            .read()
            .trim_end()
            .lines()
            .filter(|l| l.starts_with("nameserver"))
            .collect::<Vec<_>>(),
        [format!("nameserver {INET4}")]
    );

    // Status reflects the traffic (our own counts include the 3 MiB moved above).
    // (The file is rewritten about once a second.)
    std::thread::sleep(Duration::from_millis(1500));
    let st = lab.status_json().unwrap();
    assert!(st.contains("\"state\": \"connected\""), "{st}");
    assert!(st.contains("\"running\": true"), "{st}");
    let up: u64 = json_u64(&st, "bytes_up");
    let down: u64 = json_u64(&st, "bytes_down");
    assert!(down > 3 << 20 && up > 1 << 20, "{st}");
    let human = lab.home.cli(&lab.topo.client, &["status"]).unwrap();
    assert!(human.contains("state:      connected"), "{human}");

    // `ferry disconnect` from another network namespace (here: the host's) with the same
    // state dir refuses and changes nothing: the session, its kill switch and its DNS backup
    // belong to the client namespace (it used to copy that backup over the host's
    // resolv.conf and report "kill switch: off").
    let host_resolv = std::fs::read("/etc/resolv.conf").ok();
    let argv = lab.home.argv(&["disconnect"]).unwrap();
    let out = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "disconnect from the host succeeded");
    assert!(err.contains("another network namespace"), "{err}");
    assert_eq!(std::fs::read("/etc/resolv.conf").ok(), host_resolv);
    assert!(lab.kill_switch_present());
    let st = lab.status_json().unwrap();
    assert!(st.contains("\"state\": \"connected\""), "{st}");

    lab.disconnect().unwrap();
    assert!(!lab.kill_switch_present());
    assert_eq!(lab.resolv.read(), format!("nameserver {ROUTER_WAN4}\n"));
    let r4 = lab.topo.client.ip(&["-4", "route"]).unwrap();
    assert!(!r4.contains("0.0.0.0/1"), "{r4}");
    let st = lab.status_json().unwrap();
    assert!(st.contains("\"state\": \"stopped\""), "{st}");
    assert!(st.contains("\"kill_switch\": false"), "{st}");
    // A start that fails shows itself, not the previous run (relay, pid, state, error).
    let old_pid = json_u64(&st, "pid");
    assert!(
        lab.home
            .cli(&lab.topo.client, &["connect", "nosuch"])
            .is_err()
    );
    let st = lab.status_json().unwrap();
    assert!(st.contains("\"relay\": \"nosuch\""), "{st}");
    assert!(st.contains("\"state\": \"failed\""), "{st}");
    assert!(st.contains("no relay named"), "{st}");
    assert_ne!(json_u64(&st, "pid"), old_pid, "{st}");
}

/// `/etc/netns/<ns>/hosts`, which `ip netns exec` bind-mounts over `/etc/hosts` for every
/// program it starts in that namespace. Removed on drop (the lab's resolv.conf guard removes
/// the directory).
struct NetnsHosts(PathBuf);

impl NetnsHosts {
    fn create(ns: &str, text: &str) -> Self {
        let dir = PathBuf::from("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).unwrap();
        let guard = Self(dir.join("hosts"));
        std::fs::write(&guard.0, text).unwrap();
        guard
    }
}

impl Drop for NetnsHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
#[ignore = "needs root: netns"]
fn a_host_name_endpoint_is_resolved_at_start_and_the_kill_switch_allows_exactly_that_address() {
    const NAME: &str = "relay.ferry.test";
    let mut lab = ClientLab::start(|_| {}).unwrap();
    let ep = Agent::endpoint();
    let cfg_path = lab.home.dir.join("client.toml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let named = format!("endpoint = \"{NAME}:{}\"", ep.port());
    let cfg = cfg.replace(&format!("endpoint = \"{ep}\""), &named);
    assert!(cfg.contains(&named), "{cfg}");
    lab.home.write_config(&cfg).unwrap();
    let tun = lab.tun();
    let connect = lab.home.argv(&["connect", "lab", "--tun", &tun]).unwrap();
    let connect: Vec<&str> = connect.iter().map(String::as_str).collect();

    // Positive control: no DNS server knows the name, so without the hosts entry `connect`
    // fails at once, names the host, and leaves the host untouched (no kill switch, no pid).
    let out = lab.topo.client.exec_unchecked(&connect).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("\"{NAME}\"")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!lab.kill_switch_present());
    assert!(!lab.home.state.join("ferry.pid").exists());
    assert!(
        probe_tcp(
            &lab.topo.client,
            sa(INET4, DATA_PORT),
            Duration::from_secs(1)
        )
        .is_none()
    );

    // With the name in the namespace's hosts file, the system resolver finds it.
    let _hosts = NetnsHosts::create(
        lab.topo.client.name(),
        &format!("127.0.0.1 localhost\n{} {NAME}\n", ep.ip()),
    );
    lab.connect().unwrap();
    let c = &lab.topo.client;
    let got = fetch(c, sa(INET4, DATA_PORT), 1 << 20, T).unwrap();
    assert_eq!(got.banner, "inet");
    assert_eq!(got.peer_seen.ip(), std::net::IpAddr::from(ROUTER_UP4));

    // The kill switch allows exactly the resolved address (and nothing by name).
    let rules = c.exec(&["nft", "list", "table", "inet", "ferry"]).unwrap();
    let allows: Vec<&str> = rules.lines().filter(|l| l.contains("daddr")).collect();
    assert_eq!(allows.len(), 1, "{rules}");
    assert!(
        allows[0].contains(&format!(
            "ip daddr {} udp dport {} accept",
            ep.ip(),
            ep.port()
        )),
        "{rules}"
    );
    // The endpoint route pins the resolved address too.
    let r4 = c.ip(&["-4", "route"]).unwrap();
    assert!(
        r4.contains(&format!("{ROUTER_WAN4} via")) || r4.contains(&format!("{ROUTER_WAN4} dev")),
        "{r4}"
    );
    // Status shows the name and what it resolved to.
    let st = lab.status_json().unwrap();
    assert!(
        st.contains(&format!("\"endpoint\": \"{NAME}:{} ({ep})\"", ep.port())),
        "{st}"
    );
    // export-wg keeps the name for wg-quick.
    let wg = lab.home.cli(c, &["export-wg", "lab"]).unwrap();
    assert!(
        wg.contains(&format!("Endpoint = {NAME}:{}\n", ep.port())),
        "{wg}"
    );

    lab.disconnect().unwrap();
    assert!(!lab.kill_switch_present());
}

fn json_u64(text: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\": ");
    let i = text.find(&pat).unwrap() + pat.len();
    text[i..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
#[ignore = "needs root: netns"]
fn dns_queries_go_only_through_the_tunnel_with_a_positive_control() {
    let mut lab = ClientLab::start(|_| {}).unwrap();
    // Observe the client's physical wire from the router side.
    let wire = WireCounters::install(
        &lab.topo.router,
        &lab.topo.router_wan_if,
        "fednswire",
        &[
            ("dns", "meta l4proto { tcp, udp } th dport 53"),
            ("wg", "udp dport 51820"),
        ],
    )
    .unwrap();

    // Positive control: without the tunnel the system resolver asks the ISP resolver over the
    // physical interface, and the counter sees it.
    assert_eq!(getent(&lab, CANARY).as_deref(), Some(CANARY_ISP));
    assert!(wire.packets("dns").unwrap() > 0);
    wire.reset("dns").unwrap();
    wire.reset("wg").unwrap();

    lab.connect().unwrap();
    // The same lookup now reaches the resolver behind the relay, through the tunnel ...
    assert_eq!(getent(&lab, CANARY).as_deref(), Some(CANARY_TUNNEL));
    // ... and a program that ignores resolv.conf and asks the ISP resolver directly is stopped
    // by the kill switch.
    for _ in 0..3 {
        send_udp(&lab, SocketAddr::new(ROUTER_WAN4.into(), 53));
    }
    assert!(
        probe_tcp(
            &lab.topo.client,
            sa(ROUTER_WAN4, 53),
            Duration::from_secs(1)
        )
        .is_none()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        wire.packets("dns").unwrap(),
        0,
        "DNS leaked outside the tunnel"
    );
    assert!(
        wire.packets("wg").unwrap() > 0,
        "the observer saw no tunnel traffic at all"
    );

    lab.disconnect().unwrap();
    assert_eq!(getent(&lab, CANARY).as_deref(), Some(CANARY_ISP));
    assert!(wire.packets("dns").unwrap() > 0);
}

#[test]
#[ignore = "needs root: netns"]
fn kill_switch_holds_when_the_relay_dies_and_when_the_client_process_dies() {
    let mut lab = ClientLab::start(|_| {}).unwrap();
    let wire = WireCounters::install(
        &lab.topo.router,
        &lab.topo.router_wan_if,
        "fekswire",
        &[
            ("plain", &format!("ip saddr {CLIENT_WAN4} ip daddr {INET4}")),
            ("wg", "udp dport 51820"),
        ],
    )
    .unwrap();
    let probe = |lab: &ClientLab| {
        let c = &lab.topo.client;
        let _ = probe_tcp(c, sa(INET4, DATA_PORT), Duration::from_millis(700));
        let _ = probe_udp(c, sa(INET4, ECHO_PORT), Duration::from_millis(700));
        send_udp(lab, sa(INET4, ECHO_PORT));
    };
    // Positive control: without ferry the probes leave in the clear.
    probe(&lab);
    assert!(wire.packets("plain").unwrap() > 0);
    wire.reset("plain").unwrap();

    let ferry = lab.connect().unwrap();
    assert!(fetch(&lab.topo.client, sa(INET4, DATA_PORT), 1 << 20, T).is_ok());
    assert_eq!(wire.packets("plain").unwrap(), 0);

    // The relay dies: nothing reaches the internet host, nothing leaves in the clear.
    lab.topo.lab.stop(lab.agent.proc, Duration::from_secs(2));
    wire.reset("wg").unwrap();
    probe(&lab);
    assert!(
        probe_tcp(
            &lab.topo.client,
            sa(INET4, DATA_PORT),
            Duration::from_secs(2)
        )
        .is_none()
    );
    assert_eq!(
        wire.packets("plain").unwrap(),
        0,
        "probe left outside the tunnel"
    );
    assert!(
        wire.packets("wg").unwrap() > 0,
        "client stopped trying the relay"
    );
    assert!(
        lab.services.inet_data.seen().len() <= 2,
        "{:?}",
        lab.services.inet_data.seen()
    );

    // The client process dies too (TUN and its routes vanish): still nothing in the clear.
    let pid = ferry.pid().to_string();
    lab.topo.client.exec(&["kill", "-9", &pid]).unwrap();
    // Reap it (a zombie would still look alive).
    wait_until(T, "ferry connect to die", || {
        !lab.topo.lab.is_running(ferry)
    })
    .unwrap();
    probe(&lab);
    assert_eq!(
        wire.packets("plain").unwrap(),
        0,
        "probe leaked after the client died"
    );
    assert!(lab.kill_switch_present());
    let st = lab.status_json().unwrap();
    assert!(st.contains("\"running\": false"), "{st}");

    // Only `ferry disconnect` opens the host again.
    lab.disconnect().unwrap();
    probe(&lab);
    assert!(wire.packets("plain").unwrap() > 0);
}
