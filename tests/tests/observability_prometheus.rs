//! A real Prometheus server (Debian's package) scrapes a running ferry-agent on the router's
//! loopback while a stock WireGuard client moves known amounts of data through the tunnel;
//! the byte counters read back through Prometheus's query API must cover the payload and stay
//! within the expected overhead plus what TCP retransmitted (counted from the senders'
//! `/proc/net/snmp`: the relay really forwarded those bytes again).
//!
//! What the counters mean: `wireguard_sent_bytes_total` / `wireguard_received_bytes_total`
//! are the relay's accepted *inner* bytes (IP packets after allowed-IPs and policy checks,
//! the metering basis), so a payload of N bytes over TCP costs N plus IP+TCP headers
//! (~40 B per 1380 B segment, < 3 %) plus the other direction's ACKs; WireGuard's own
//! overhead (32 B per packet + padding) is not in them.
//!
//! Also: the bearer token (401 without it, Prometheus job without it is down), `/healthz`
//! open, `/status` JSON for LuCI, and the default listen set (LAN address + loopback only).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use ferry_e2e::agent::Egress;
use ferry_e2e::observability::{Job, Prometheus, http_get, tcp_retrans_segs};
use ferry_e2e::scenario::Scenario;
use ferry_e2e::servers::{fetch, upload};
use ferry_e2e::topology::{DATA_PORT, INET4, ROUTER_LAN4, sa};

const T: Duration = Duration::from_secs(20);
const MIB: u64 = 1 << 20;
const TOKEN: &str = "fe-metrics-token-7f3a9c";
const METRICS: &str = "127.0.0.1:9586";

/// Upper bound of inner bytes for `payload` bytes of TCP payload in one direction plus the
/// ACKs of the other: 5 % headers and ACKs, plus 256 KiB for handshakes and stray packets.
fn bound(payload: u64) -> u64 {
    payload + payload / 20 + 256 * 1024
}

fn wait_value(prom: &Prometheus, expr: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + T;
    loop {
        let v = prom.query(expr).unwrap();
        if let Some(v) = v.filter(|v| ok(*v)) {
            return v;
        }
        assert!(Instant::now() < deadline, "{expr} stuck at {v:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The agent's metrics port listens on exactly 127.0.0.1 and the router's LAN address.
fn assert_listens_on_loopback_and_lan_only(router: &ferry_e2e::netns::Ns) {
    let listening = router.exec(&["ss", "-Htln", "sport = :9586"]).unwrap();
    let mut local: Vec<&str> = listening
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    local.sort_unstable();
    assert_eq!(
        local,
        vec![METRICS.to_owned(), format!("{ROUTER_LAN4}:9586")],
        "{listening}"
    );
}

#[test]
#[ignore = "needs root: netns"]
fn real_prometheus_sees_the_tunnel_bytes_move() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics.token");
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&token_file)
        .unwrap();
    std::io::Write::write_all(&mut f, format!("{TOKEN}\n").as_bytes()).unwrap();
    let metrics = format!(
        "\n[metrics]\ntoken-file = {:?}\n",
        token_file.to_string_lossy()
    );
    let mut s = Scenario::start(Egress::Tun, |c| c.extra.push_str(&metrics)).unwrap();
    let router = s.topo.router.clone();
    let c = s.topo.client.clone();

    // Default listen: the LAN address and loopback, nothing else (not WAN, not the tunnel).
    assert_listens_on_loopback_and_lan_only(&router);
    let lan_url = format!("http://{ROUTER_LAN4}:9586/healthz");
    assert_eq!(
        http_get(&s.topo.lan, &lan_url, None).unwrap(),
        (200, "ok\n".to_owned()),
        "LAN host reaches /healthz"
    );

    // Token: /healthz open, /metrics and /status need it.
    let url = |p: &str| format!("http://{METRICS}{p}");
    assert_eq!(http_get(&router, &url("/healthz"), None).unwrap().0, 200);
    assert_eq!(http_get(&router, &url("/metrics"), None).unwrap().0, 401);
    assert_eq!(
        http_get(&router, &url("/metrics"), Some("wrong"))
            .unwrap()
            .0,
        401
    );
    assert_eq!(http_get(&router, &url("/status"), None).unwrap().0, 401);
    let (code, text) = http_get(&router, &url("/metrics"), Some(TOKEN)).unwrap();
    assert_eq!(code, 200);
    assert!(
        text.contains("# TYPE wireguard_sent_bytes counter"),
        "{text}"
    );

    let prom = Prometheus::start(
        &mut s.topo.lab,
        &router,
        &[
            Job {
                name: "ferry-agent".into(),
                target: METRICS.parse().unwrap(),
                bearer: Some(TOKEN.into()),
            },
            Job {
                name: "no-token".into(),
                target: METRICS.parse().unwrap(),
                bearer: None,
            },
        ],
    )
    .unwrap();
    wait_value(&prom, "up{job=\"ferry-agent\"}", |v| v == 1.0);
    wait_value(&prom, "up{job=\"no-token\"}", |v| v == 0.0);
    // The scenario's set-up already did a handshake.
    wait_value(&prom, "ferry_sessions_active{job=\"ferry-agent\"}", |v| {
        v == 1.0
    });
    wait_value(&prom, "ferry_peers{job=\"ferry-agent\"}", |v| v == 1.0);
    wait_value(
        &prom,
        "wireguard_latest_handshake_seconds{job=\"ferry-agent\"}",
        |v| v > 1.6e9,
    );

    let sent = "sum(wireguard_sent_bytes_total{job=\"ferry-agent\"})";
    let recv = "sum(wireguard_received_bytes_total{job=\"ferry-agent\"})";
    let sent0 = wait_value(&prom, sent, |_| true) as u64;
    let recv0 = wait_value(&prom, recv, |_| true) as u64;

    let (retx_inet0, retx_client0) = (
        tcp_retrans_segs(&s.topo.inet).unwrap(),
        tcp_retrans_segs(&c).unwrap(),
    );
    let down = 16 * MIB;
    let up = 8 * MIB;
    assert_eq!(
        fetch(&c, sa(INET4, DATA_PORT), down, T).unwrap().bytes,
        down
    );
    upload(&c, sa(INET4, DATA_PORT), up, T).unwrap();

    let sent1 = wait_value(&prom, sent, |v| v as u64 >= sent0 + down) as u64;
    let recv1 = wait_value(&prom, recv, |v| v as u64 >= recv0 + up) as u64;
    // One more scrape interval: nothing else may trickle in beyond the bound.
    std::thread::sleep(Duration::from_millis(2500));
    let sent1 = sent1.max(prom.query(sent).unwrap().unwrap() as u64);
    let recv1 = recv1.max(prom.query(recv).unwrap().unwrap() as u64);
    let (d_sent, d_recv) = (sent1 - sent0, recv1 - recv0);
    // Full segments (1380 B payload + 40 B headers) that TCP sent twice.
    let retx_down = (tcp_retrans_segs(&s.topo.inet).unwrap() - retx_inet0) * 1420;
    let retx_up = (tcp_retrans_segs(&c).unwrap() - retx_client0) * 1420;
    assert!(
        d_sent <= bound(down + up / 40) + retx_down,
        "sent moved {d_sent} for {down} downloaded ({retx_down} B retransmitted)"
    );
    assert!(
        d_recv <= bound(up + down / 40) + retx_up,
        "received moved {d_recv} for {up} uploaded ({retx_up} B retransmitted)"
    );
    eprintln!(
        "inner bytes: sent {d_sent} for {down} (+{retx_down} retransmitted), received {d_recv} for {up} (+{retx_up})"
    );

    // /status: what the LuCI page shows.
    let (code, status) = http_get(&router, &url("/status"), Some(TOKEN)).unwrap();
    assert_eq!(code, 200, "{status}");
    for field in [
        "\"egress_mode\":\"tun\"",
        "\"name\":\"client\"",
        "\"uptime_secs\":",
        "\"last_handshake_secs\":",
    ] {
        assert!(status.contains(field), "{field} missing in {status}");
    }
    assert!(
        status.contains(&format!("\"public_key\":\"{}\"", s.client_key.public)),
        "{status}"
    );
    let number = |key: &str| -> u64 {
        let rest = status.split(&format!("\"{key}\":")).nth(1).unwrap();
        rest.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    // Per-peer inner bytes: the only peer carried all of it.
    assert!(number("tx_bytes") >= down, "{status}");
    assert!(number("rx_bytes") >= up, "{status}");
}

#[test]
#[ignore = "needs root: netns"]
fn behind_an_isp_modem_the_private_wan_address_is_not_in_the_default_listen() {
    // The router's WAN sits behind an ISP modem: its default route leaves through an interface
    // with a private address (10.99.0.1, the modem is 10.99.0.2). The default listen set must
    // not include it: only the LAN address and loopback serve /metrics and /status.
    let mut topo = ferry_e2e::topology::Topology::build().unwrap();
    topo.router
        .addr(&topo.router_up_if, "10.99.0.1/24")
        .unwrap();
    let inet_if = topo.lab.ifname("i");
    topo.inet.addr(&inet_if, "10.99.0.2/24").unwrap();
    topo.router
        .ip(&["route", "replace", "default", "via", "10.99.0.2"])
        .unwrap();
    let key = ferry_e2e::wg::KeyPair::generate().unwrap();
    let cfg = ferry_e2e::agent::AgentConfig::new(Egress::Tun);
    let _agent = ferry_e2e::agent::Agent::start(&mut topo.lab, &topo.router, &key, &cfg).unwrap();
    let router = topo.router.clone();
    ferry_e2e::wait::wait_until(T, "the metrics listener", || {
        http_get(&router, &format!("http://{METRICS}/healthz"), None).is_ok_and(|r| r.0 == 200)
    })
    .unwrap();
    assert_listens_on_loopback_and_lan_only(&router);
    let lan_url = format!("http://{ROUTER_LAN4}:9586/healthz");
    assert_eq!(http_get(&topo.lan, &lan_url, None).unwrap().0, 200);
    // From the modem's side the private WAN address does not answer (positive control: the
    // address itself is reachable, the admin port on it answers).
    assert_eq!(
        http_get(&topo.inet, "http://10.99.0.1:9586/healthz", None)
            .unwrap()
            .0,
        0
    );
    assert!(
        topo.inet
            .exec(&["ping", "-c", "1", "-W", "2", "10.99.0.1"])
            .is_ok()
    );
}
