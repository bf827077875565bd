//! The tokio shell against real loopback sockets, with a smoltcp client on the tunnel side.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Client, is_tcp_rst, parse_udp, pattern, udp_packet};
use ferry_netstack::{NetstackConfig, UserspaceEgress};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::State;
use smoltcp::time::Instant as SmolInstant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Notify;
use tokio::time::{Instant, timeout};

/// Client ⇄ egress plumbing: client packets go to `send`, a task moves `recv` output to `inbox`.
struct Harness {
    egress: Arc<UserspaceEgress>,
    client: Client,
    inbox: Arc<Mutex<VecDeque<Vec<u8>>>>,
    arrived: Arc<Notify>,
    epoch: Instant,
    /// Every client-bound packet, for assertions.
    seen: Vec<Vec<u8>>,
}

impl Harness {
    fn new(cfg: NetstackConfig) -> Self {
        let egress = Arc::new(UserspaceEgress::new(cfg));
        let inbox = Arc::new(Mutex::new(VecDeque::new()));
        let arrived = Arc::new(Notify::new());
        let (e, i, a) = (egress.clone(), inbox.clone(), arrived.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; e.mtu()];
            loop {
                let n = e.recv(&mut buf).await;
                i.lock().unwrap().push_back(buf[..n].to_vec());
                a.notify_one();
            }
        });
        Self {
            egress,
            client: Client::new(SmolInstant::from_micros(0)),
            inbox,
            arrived,
            epoch: Instant::now(),
            seen: Vec::new(),
        }
    }

    fn now(&self) -> SmolInstant {
        SmolInstant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    /// One round: client emits, egress answers (waiting up to 2 ms), client absorbs.
    async fn step(&mut self) {
        let now = self.now();
        self.client.poll(now);
        while let Some(p) = self.client.dev.tx.pop_front() {
            self.egress.send(&p).await;
        }
        let _ = timeout(Duration::from_millis(2), self.arrived.notified()).await;
        let got: Vec<_> = self.inbox.lock().unwrap().drain(..).collect();
        for p in got {
            self.seen.push(p.clone());
            self.client.dev.rx.push_back(p);
        }
        let now = self.now();
        self.client.poll(now);
    }

    /// Step until `done` or panic after `secs`.
    async fn until(&mut self, secs: u64, mut done: impl FnMut(&mut Self) -> bool) {
        let end = Instant::now() + Duration::from_secs(secs);
        while !done(self) {
            assert!(Instant::now() < end, "timed out");
            self.step().await;
        }
    }

    fn state(&mut self, h: SocketHandle) -> State {
        self.client.tcp(h).state()
    }
}

/// Echo-style server: reads everything the client sends (returned through the handle) while
/// writing `down`, then closes its side.
async fn serve_once(listener: TcpListener, down: Vec<u8>) -> Vec<u8> {
    let (s, _) = listener.accept().await.unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&down).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    got
}

/// Move `LEN` bytes each way at once through the egress; returns the elapsed time.
async fn transfer_both_ways<const LEN: usize>(bind: IpAddr) -> Duration {
    let start = Instant::now();
    let listener = TcpListener::bind((bind, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (up, down) = (pattern(11, LEN), pattern(12, LEN));
    let server = tokio::spawn(serve_once(listener, down.clone()));

    let mut h = Harness::new(NetstackConfig::default());
    let sock = h.client.connect(addr, 64 * 1024);
    let (mut sent, mut got, mut closed) = (0usize, Vec::with_capacity(LEN), false);
    let mut buf = vec![0u8; 16 * 1024];
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < end,
            "transfer timed out: sent {sent} got {}",
            got.len()
        );
        let s = h.client.tcp(sock);
        if s.may_send() && sent < LEN {
            sent += s.send_slice(&up[sent..]).unwrap();
        }
        if sent == LEN && !closed {
            s.close();
            closed = true;
        }
        while s.can_recv() {
            let n = s.recv_slice(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        if closed && !s.may_recv() && got.len() == LEN {
            break;
        }
        h.step().await;
    }
    // Keep the client side running until the server saw our FIN.
    h.until(10, |_| server.is_finished()).await;
    let server_got = server.await.unwrap();
    assert!(
        server_got == up,
        "server received different bytes ({} of {LEN})",
        server_got.len()
    );
    assert!(got == down, "client received different bytes");
    // Both sides closed: the flow is torn down.
    h.until(10, |h| h.egress.stats().tcp_active == 0).await;
    assert_eq!(h.egress.stats().tcp_opened, 1);
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_ipv4_relays_one_mib_each_way_exactly() {
    transfer_both_ways::<{ 1 << 20 }>(Ipv4Addr::LOCALHOST.into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_ipv6_relays_one_mib_each_way_exactly() {
    transfer_both_ways::<{ 1 << 20 }>(Ipv6Addr::LOCALHOST.into()).await;
}

/// Run: `cargo test -p ferry-netstack --profile bench-fast --test egress -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement, run by hand"]
async fn measure_tcp_throughput_through_shell() {
    const LEN: usize = 32 << 20;
    let t = transfer_both_ways::<LEN>(Ipv4Addr::LOCALHOST.into()).await;
    eprintln!(
        "shell: {} MiB each way in {:.2} s = {:.0} Mbit/s aggregate (test client included)",
        LEN >> 20,
        t.as_secs_f64(),
        (2 * LEN) as f64 * 8.0 / t.as_secs_f64() / 1e6
    );
}

/// A loopback port with nothing listening.
async fn closed_port(bind: IpAddr) -> SocketAddr {
    let l = TcpListener::bind((bind, 0)).await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_to_closed_port_is_reset() {
    let addr = closed_port(Ipv4Addr::LOCALHOST.into()).await;
    let mut h = Harness::new(NetstackConfig::default());
    let sock = h.client.connect(addr, 4096);
    h.until(10, |h| h.state(sock) == State::Closed).await;
    assert!(h.seen.iter().any(|p| is_tcp_rst(p)));
    let s = h.egress.stats();
    assert_eq!((s.dial_failed, s.tcp_active), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_hook_blocks_a_destination_before_dialing() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = NetstackConfig::default().with_policy(|ip| !ip.is_loopback() || ip.is_ipv6());
    let mut h = Harness::new(cfg);
    let sock = h.client.connect(addr, 4096);
    h.until(10, |h| h.state(sock) == State::Closed).await;
    assert!(
        timeout(Duration::from_millis(200), listener.accept())
            .await
            .is_err(),
        "blocked destination was dialed"
    );
    assert_eq!(h.egress.stats().refused_policy, 1);

    // Positive control: an allowed destination (::1) goes through.
    let l6 = TcpListener::bind("[::1]:0").await.unwrap();
    let sock6 = h.client.connect(l6.local_addr().unwrap(), 4096);
    h.until(10, |h| h.state(sock6) == State::Established).await;
    timeout(Duration::from_secs(5), l6.accept())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_flow_limit_is_enforced_and_slots_are_freed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = tokio::spawn(async move {
        let mut conns = Vec::new();
        loop {
            let (s, _) = listener.accept().await.unwrap();
            conns.push(s);
            if conns.len() == 3 {
                return conns;
            }
        }
    });
    let cfg = NetstackConfig {
        max_tcp_flows: 2,
        ..NetstackConfig::default()
    };
    let mut h = Harness::new(cfg);
    let a = h.client.connect(addr, 4096);
    let b = h.client.connect(addr, 4096);
    h.until(10, |h| {
        h.state(a) == State::Established && h.state(b) == State::Established
    })
    .await;
    let c = h.client.connect(addr, 4096);
    h.until(10, |h| h.state(c) == State::Closed).await;
    assert_eq!(h.egress.stats().refused_limit, 1);

    // Abort one connection: its slot is freed and a new connection is accepted.
    h.client.tcp(a).abort();
    h.until(10, |h| h.egress.stats().tcp_active == 1).await;
    let d = h.client.connect(addr, 4096);
    h.until(10, |h| h.state(d) == State::Established).await;
    assert_eq!(
        timeout(Duration::from_secs(5), accepted)
            .await
            .unwrap()
            .unwrap()
            .len(),
        3
    );
}

async fn udp_echo(bind: IpAddr, client_ip: IpAddr) {
    let server = UdpSocket::bind((bind, 0)).await.unwrap();
    let saddr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            server.send_to(&buf[..n], from).await.unwrap();
        }
    });
    let mut h = Harness::new(NetstackConfig::default());
    let client = SocketAddr::new(client_ip, 5353);
    let msgs: Vec<Vec<u8>> = (0..3).map(|i| pattern(i, 100 + 500 * i as usize)).collect();
    for m in &msgs {
        h.egress.send(&udp_packet(client, saddr, m)).await;
    }
    h.until(10, |h| h.seen.len() >= msgs.len()).await;
    let mut echoed: Vec<_> = h.seen.iter().map(|p| parse_udp(p).unwrap()).collect();
    echoed.sort_by_key(|(_, _, p)| p.len());
    for ((src, dst, payload), m) in echoed.iter().zip(&msgs) {
        assert_eq!((*src, *dst), (saddr, client));
        assert_eq!(payload, m);
    }
    let s = h.egress.stats();
    assert_eq!((s.udp_opened, s.udp_active), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_echo_ipv4() {
    udp_echo(Ipv4Addr::LOCALHOST.into(), common::CLIENT_V4.into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_echo_ipv6() {
    udp_echo(Ipv6Addr::LOCALHOST.into(), common::CLIENT_V6.into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_outside_connections() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut h = Harness::new(NetstackConfig::default());
    let sock = h.client.connect(addr, 4096);
    h.until(10, |h| h.state(sock) == State::Established).await;
    let (mut server, _) = timeout(Duration::from_secs(5), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut buf = [0u8; 16];
    // Positive control: the connection is idle and open.
    assert!(
        timeout(Duration::from_millis(100), server.read(&mut buf))
            .await
            .is_err()
    );
    h.egress.shutdown();
    let r = timeout(Duration::from_secs(5), server.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "connection still open after shutdown"
    );
}
