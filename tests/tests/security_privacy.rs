//! Privacy canary: a client session to a canary destination must leave no trace of that
//! destination in the agent's logs or files, at the agent's default log filter and at DEBUG.
//!
//! The internet host additionally owns a canary address per family (public-looking, allowed by
//! the default policy). The client downloads from it, uploads to it, sends UDP to it and pings
//! it, and also tries a canary address in a blocked range (so the drop path is covered). Then the
//! agent's log and every file in the lab directory (config, keys, logs and any state the agent
//! writes next to its config) are searched for the canaries in every textual form.
//!
//! A canary name is resolved through the agent's DNS forwarder (`[dns]`, upstream: a test
//! server on the internet host) and must not appear either. Pending: a paid session, so the
//! receipts store is part of the searched state.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use ferry_e2e::agent::Egress;
use ferry_e2e::netns::ProcId;
use ferry_e2e::scenario::{Probe, Scenario, probe_all};
use ferry_e2e::servers::{TcpService, UdpEcho, fetch, upload};
use ferry_e2e::topology::*;
use ferry_e2e::wait::wait_until;
use ferry_e2e::wg::tunnel;

const T: Duration = Duration::from_secs(10);
const MIB: u64 = 1 << 20;
const CANARY4: Ipv4Addr = Ipv4Addr::new(45, 77, 123, 231);
const CANARY6: Ipv6Addr = Ipv6Addr::new(0x2a0a, 0xcafe, 0x77, 0, 0, 0, 0xc4, 0x9a);
/// In 10.0.0.0/8: blocked, exercises the policy-drop path.
const CANARY_BLOCKED: Ipv4Addr = Ipv4Addr::new(10, 123, 45, 67);
const CANARY_PORT: u16 = 8443;
/// Resolved through the agent's DNS forwarder (upstream: a test server on the internet host).
const CANARY_NAME: &str = "canary-h9x.ferry-privacy.test";
const CANARY_UDP: u16 = 5353;

/// Every way a canary could be written down.
fn needles() -> Vec<String> {
    let mut v = vec!["canary-h9x".to_owned(), "ferry-privacy".to_owned()];
    for a in [CANARY4, CANARY_BLOCKED] {
        v.push(a.to_string());
        v.push(format!(
            "{:02x}{:02x}{:02x}{:02x}",
            a.octets()[0],
            a.octets()[1],
            a.octets()[2],
            a.octets()[3]
        ));
        v.push(format!("::ffff:{a}"));
    }
    v.push(CANARY6.to_string());
    v.push(
        CANARY6
            .segments()
            .iter()
            .map(|s| format!("{s:x}"))
            .collect::<Vec<_>>()
            .join(":"),
    );
    v.push(
        CANARY6
            .segments()
            .iter()
            .map(|s| format!("{s:04x}"))
            .collect::<Vec<_>>()
            .join(":"),
    );
    // Byte-array debug forms (e.g. `[45, 77, 123, 231]`).
    v.push(format!("{:?}", CANARY4.octets()));
    v.push(format!("{:?}", CANARY_BLOCKED.octets()));
    v.push(format!("{:?}", CANARY6.octets()));
    v
}

/// Files under `dir` (recursively) containing a needle, with the needle.
fn find_canaries(dir: &Path) -> Vec<(String, String)> {
    let needles = needles();
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            // The upstream DNS server is "the internet", not the agent.
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("dns-upstream"))
            {
                continue;
            }
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).into_owned();
            let lower = text.to_lowercase();
            for n in &needles {
                if lower.contains(&n.to_lowercase()) {
                    hits.push((p.display().to_string(), n.clone()));
                }
            }
        }
    }
    hits
}

/// Stops the scenario's agent and starts the same binary and config with `RUST_LOG=filter`.
fn restart_agent_with_filter(s: &mut Scenario, filter: &str, label: &str) -> ProcId {
    s.topo.lab.stop(s.agent.proc, Duration::from_secs(5));
    let bin = ferry_e2e::agent::agent_binary().unwrap();
    let bin = bin.to_string_lossy().into_owned();
    let cfg = s.agent.config_path.to_string_lossy().into_owned();
    let proc = s
        .topo
        .lab
        .spawn_env(
            &s.topo.router,
            label,
            &[&bin, "run", "--config", &cfg],
            &[("RUST_LOG", filter), ("NO_COLOR", "1")],
        )
        .unwrap();
    let port = format!(":{} ", tunnel::RELAY_PORT);
    let router = s.topo.router.clone();
    wait_until(Duration::from_secs(20), "agent UDP port", || {
        router
            .exec(&["ss", "-Huln"])
            .is_ok_and(|o| o.lines().any(|l| l.contains(&port)))
    })
    .unwrap();
    if s.config.egress == Egress::Tun {
        let tun = s.agent.tun_name.clone();
        wait_until(Duration::from_secs(10), "agent TUN", || {
            router.ip(&["link", "show", &tun]).is_ok()
        })
        .unwrap();
    }
    proc
}

/// A session to the canaries; asserts it really went through (positive control).
fn canary_session(s: &Scenario) {
    let c = &s.topo.client;
    // The name resolves through the agent's forwarder on its tunnel address.
    for server in ["10.77.0.1", "fd77::1"] {
        let out = c
            .exec(&[
                "dig",
                "+short",
                "+time=3",
                "+tries=2",
                &format!("@{server}"),
                CANARY_NAME,
            ])
            .unwrap();
        assert_eq!(out.trim(), CANARY4.to_string(), "DNS via {server}");
    }
    for ip in [IpAddr::from(CANARY4), IpAddr::from(CANARY6)] {
        let f = fetch(c, sa(ip, CANARY_PORT), MIB, T).unwrap();
        assert_eq!((f.bytes, f.banner.as_str()), (MIB, "canary"));
        upload(c, sa(ip, CANARY_PORT), MIB / 4, T).unwrap();
    }
    let probes = [
        Probe::Udp(sa(CANARY4, CANARY_UDP)),
        Probe::Udp(sa(CANARY6, CANARY_UDP)),
    ];
    assert_eq!(probe_all(c, &probes, T).len(), 2, "canary UDP echo");
    if s.config.egress == Egress::Tun {
        let pings = [Probe::Ping(CANARY4.into()), Probe::Ping(CANARY6.into())];
        assert_eq!(probe_all(c, &pings, T).len(), 2, "canary ping");
    }
    // Blocked canary: dropped by policy (nothing answers), must not be logged either.
    let blocked = [
        Probe::Tcp(sa(CANARY_BLOCKED, CANARY_PORT)),
        Probe::Udp(sa(CANARY_BLOCKED, CANARY_UDP)),
    ];
    assert!(probe_all(c, &blocked, Duration::from_secs(2)).is_empty());
}

fn privacy(egress: Egress) {
    let mut s = Scenario::start(egress, |c| {
        c.extra = format!(
            "\n[dns]\nenabled = true\n\n[[dns.upstream]]\nprotocol = \"udp\"\naddress = \"{INET4}\"\n"
        );
    })
    .unwrap();
    let inet = s.topo.inet.clone();
    let record = format!("{CANARY_NAME}. 60 A {CANARY4}");
    let inet_ns = inet.clone();
    ferry_e2e::client::dns_server(
        &mut s.topo.lab,
        &inet_ns,
        "dns-upstream",
        sa(INET4, 53),
        &[&record],
    )
    .unwrap();
    inet.addr("lo", &format!("{CANARY4}/32")).unwrap();
    inet.addr("lo", &format!("{CANARY6}/128")).unwrap();
    inet.addr("lo", &format!("{CANARY_BLOCKED}/32")).unwrap();
    let _tcp = TcpService::start(&inet, sa(Ipv6Addr::UNSPECIFIED, CANARY_PORT), "canary").unwrap();
    // Bound per address so the echo answers from the canary itself.
    let _udp4 = UdpEcho::start(&inet, sa(CANARY4, CANARY_UDP), "canary").unwrap();
    let _udp6 = UdpEcho::start(&inet, sa(CANARY6, CANARY_UDP), "canary").unwrap();
    assert!(
        find_canaries(s.topo.lab.dir()).is_empty(),
        "canary in the lab before the session"
    );

    // The agent's default filter (what run.rs uses without RUST_LOG), then DEBUG.
    let runs = [
        ("info,boringtun=off", "agent-default", "wp"),
        ("debug", "agent-debug", "wq"),
    ];
    for (filter, label, wg_suffix) in runs {
        let proc = restart_agent_with_filter(&mut s, filter, label);
        s.agent.proc = proc;
        let key = s.client_key.clone();
        s.restart_client(wg_suffix, &key, &tunnel::CLIENT_ADDRS)
            .unwrap();
        canary_session(&s);
        // Stop the agent so everything it would write on shutdown is on disk too.
        s.topo.lab.stop(proc, Duration::from_secs(5));
        let log = s.topo.lab.log(label);
        assert!(log.contains("ferry-agent starting"), "{label} log: {log}");
        if filter == "debug" {
            assert!(log.contains("DEBUG"), "DEBUG lines expected in {label}");
        }
        let hits = find_canaries(s.topo.lab.dir());
        assert!(
            hits.is_empty(),
            "{egress:?} {filter}: canary found: {hits:?}"
        );
    }
}

#[test]
#[ignore = "needs root: netns"]
fn tun_egress_canary_never_logged() {
    privacy(Egress::Tun);
}

#[test]
#[ignore = "needs root: netns"]
fn userspace_egress_canary_never_logged() {
    privacy(Egress::Userspace);
}
