//! Deterministic scenario tests of the sans-IO core with a virtual clock and a smoltcp client.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll, Waker};
use std::time::Duration as StdDuration;

use common::{Client, is_tcp_rst, parse_udp, pattern, udp_packet};
use ferry_netstack::{Event, FlowId, NetStack, NetstackConfig};
use smoltcp::socket::tcp::State;
use smoltcp::time::{Duration, Instant};

struct World {
    core: NetStack,
    client: Client,
    now: Instant,
    /// Client-bound packets seen (copies), for assertions.
    seen: Vec<Vec<u8>>,
}

impl World {
    fn new(cfg: NetstackConfig) -> Self {
        let now = Instant::from_secs(1000);
        Self {
            core: NetStack::new(cfg, 42, now),
            client: Client::new(now),
            now,
            seen: Vec::new(),
        }
    }

    /// Exchange packets until both sides are quiet, advancing 1 ms per round.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            self.client.poll(self.now);
            let mut moved = false;
            while let Some(p) = self.client.dev.tx.pop_front() {
                self.core.handle_client_packet(&p, self.now);
                moved = true;
            }
            self.core.poll(self.now);
            while let Some(p) = self.core.poll_client_packet() {
                self.seen.push(p.clone());
                self.client.dev.rx.push_back(p);
                moved = true;
            }
            if !moved {
                return;
            }
            self.now += Duration::from_millis(1);
        }
        panic!("network never went quiet");
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.core.handle_timeout(self.now);
        self.pump();
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.core.poll_event()).collect()
    }
}

fn cx() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

fn dial_flow(ev: &[Event]) -> (FlowId, SocketAddr) {
    match ev {
        [Event::TcpDial { flow, remote }] => (*flow, *remote),
        other => panic!("expected one TcpDial, got {other:?}"),
    }
}

const REMOTE: &str = "203.0.113.5:80";

#[test]
fn syn_asks_for_a_dial_and_a_failed_dial_resets_the_client() {
    let mut w = World::new(NetstackConfig::default());
    let remote: SocketAddr = REMOTE.parse().unwrap();
    let h = w.client.connect(remote, 4096);
    w.pump();
    let (flow, r) = dial_flow(&w.events());
    assert_eq!(r, remote);
    // The SYN is held: the client has heard nothing yet.
    assert!(w.seen.is_empty());
    assert_eq!(w.client.tcp(h).state(), State::SynSent);

    w.core.tcp_dial_result(flow, false, w.now);
    w.pump();
    assert_eq!(w.seen.len(), 1);
    assert!(is_tcp_rst(&w.seen[0]));
    assert_eq!(w.client.tcp(h).state(), State::Closed);
    let s = w.core.stats();
    assert_eq!((s.dial_failed, s.tcp_active), (1, 0));
}

#[test]
fn tcp_data_flows_both_ways_then_idle_timeout_resets() {
    let cfg = NetstackConfig {
        tcp_idle_timeout: StdDuration::from_secs(300),
        ..NetstackConfig::default()
    };
    let mut w = World::new(cfg);
    let remote: SocketAddr = "[2001:db8::7]:443".parse().unwrap();
    let h = w.client.connect(remote, 64 * 1024);
    w.pump();
    let (flow, _) = dial_flow(&w.events());
    w.core.tcp_dial_result(flow, true, w.now);
    w.pump();
    assert_eq!(w.client.tcp(h).state(), State::Established);

    let up = pattern(1, 200_000);
    let down = pattern(2, 150_000);
    let (mut sent_up, mut got_up, mut sent_down, mut got_down) = (0, Vec::new(), 0, Vec::new());
    let mut buf = vec![0u8; 8192];
    for _ in 0..10_000 {
        if sent_up < up.len() {
            sent_up += w.client.tcp(h).send_slice(&up[sent_up..]).unwrap();
        }
        if let Poll::Ready(Ok(n)) = w.core.poll_tcp_recv(flow, &mut cx(), &mut buf) {
            got_up.extend_from_slice(&buf[..n]);
        }
        if sent_down < down.len() {
            if let Poll::Ready(n) = w.core.poll_tcp_send(flow, &mut cx(), &down[sent_down..]) {
                sent_down += n.unwrap();
            }
        }
        if w.client.tcp(h).can_recv() {
            let n = w.client.tcp(h).recv_slice(&mut buf).unwrap();
            got_down.extend_from_slice(&buf[..n]);
        }
        w.pump();
        if got_up.len() == up.len() && got_down.len() == down.len() {
            break;
        }
    }
    assert!(got_up == up, "client->outside bytes differ");
    assert!(got_down == down, "outside->client bytes differ");
    assert_eq!(w.core.stats().tcp_active, 1);

    // Quiet for longer than the idle timeout: the client gets a RST and the flow is freed.
    w.seen.clear();
    for _ in 0..301 {
        w.advance(Duration::from_secs(1));
    }
    assert!(w.seen.iter().any(|p| is_tcp_rst(p)));
    assert_eq!(w.client.tcp(h).state(), State::Closed);
    assert_eq!(w.core.stats().tcp_active, 0);
    assert!(matches!(
        w.core.poll_tcp_recv(flow, &mut cx(), &mut buf),
        Poll::Ready(Err(_))
    ));
}

#[test]
fn graceful_close_frees_the_flow() {
    let mut w = World::new(NetstackConfig::default());
    let h = w.client.connect(REMOTE.parse().unwrap(), 4096);
    w.pump();
    let (flow, _) = dial_flow(&w.events());
    w.core.tcp_dial_result(flow, true, w.now);
    w.pump();
    w.client.tcp(h).close();
    w.pump();
    let mut buf = [0u8; 16];
    assert!(matches!(
        w.core.poll_tcp_recv(flow, &mut cx(), &mut buf),
        Poll::Ready(Ok(0))
    ));
    w.core.tcp_close(flow);
    w.core.tcp_release(flow);
    w.pump();
    assert_eq!(w.core.stats().tcp_active, 0);
    assert!(matches!(
        w.client.tcp(h).state(),
        State::TimeWait | State::Closed
    ));
}

#[test]
fn tcp_flow_limit_refuses_with_rst() {
    let cfg = NetstackConfig {
        max_flows: 2,
        ..NetstackConfig::default()
    };
    let mut w = World::new(cfg);
    let remote: SocketAddr = REMOTE.parse().unwrap();
    let a = w.client.connect(remote, 4096);
    let b = w.client.connect(remote, 4096);
    w.pump();
    assert_eq!(w.events().len(), 2);
    let c = w.client.connect(remote, 4096);
    w.pump();
    assert!(w.events().is_empty());
    assert_eq!(w.client.tcp(c).state(), State::Closed);
    assert_eq!(w.client.tcp(a).state(), State::SynSent);
    assert_eq!(w.client.tcp(b).state(), State::SynSent);
    assert_eq!(w.core.stats().refused_limit, 1);
}

#[test]
fn policy_hook_refuses_tcp_and_udp() {
    let blocked: IpAddr = "198.51.100.9".parse().unwrap();
    let cfg = NetstackConfig::default().with_policy(move |ip| ip != blocked);
    let mut w = World::new(cfg);
    let h = w.client.connect(SocketAddr::new(blocked, 22), 4096);
    w.pump();
    let ep = w.client.local_endpoint(SocketAddr::new(blocked, 53));
    let client = SocketAddr::new(ep.addr.into(), ep.port);
    w.core.handle_client_packet(
        &udp_packet(client, SocketAddr::new(blocked, 53), b"q"),
        w.now,
    );
    w.pump();
    assert!(w.events().is_empty());
    assert_eq!(w.client.tcp(h).state(), State::Closed);
    assert_eq!(w.core.stats().refused_policy, 2);

    // Positive control: another destination is dialed.
    w.client.connect(REMOTE.parse().unwrap(), 4096);
    w.pump();
    assert_eq!(w.events().len(), 1);
}

#[test]
fn udp_flow_relays_and_expires_when_idle() {
    let mut w = World::new(NetstackConfig::default());
    let client: SocketAddr = "10.77.0.2:5353".parse().unwrap();
    let remote: SocketAddr = "192.0.2.53:443".parse().unwrap();
    w.core
        .handle_client_packet(&udp_packet(client, remote, b"one"), w.now);
    w.core
        .handle_client_packet(&udp_packet(client, remote, b"two"), w.now);
    w.core.poll(w.now);
    let flow = match w.events().as_slice() {
        [Event::UdpOpen { flow, remote: r }] if *r == remote => *flow,
        other => panic!("expected UdpOpen, got {other:?}"),
    };
    assert_eq!(
        w.core.poll_udp_datagram(flow, &mut cx()),
        Poll::Ready(Some(b"one".to_vec()))
    );
    assert_eq!(
        w.core.poll_udp_datagram(flow, &mut cx()),
        Poll::Ready(Some(b"two".to_vec()))
    );
    assert_eq!(w.core.poll_udp_datagram(flow, &mut cx()), Poll::Pending);

    w.core.udp_reply(flow, b"answer", w.now);
    let pkt = w.core.poll_client_packet().unwrap();
    assert_eq!(parse_udp(&pkt), Some((remote, client, b"answer".to_vec())));

    // Oversized replies are dropped, not truncated.
    w.core.udp_reply(flow, &vec![0u8; 1420 - 28 + 1], w.now);
    assert!(w.core.poll_client_packet().is_none());

    // A DNS flow expires after the short DNS timeout, the other one only after udp_idle_timeout.
    let dns: SocketAddr = "192.0.2.53:53".parse().unwrap();
    w.core
        .handle_client_packet(&udp_packet(client, dns, b"q"), w.now);
    w.core.poll(w.now);
    assert_eq!(w.events().len(), 1);
    w.advance(Duration::from_secs(11));
    assert_eq!(w.core.stats().udp_active, 1);
    assert_eq!(w.core.poll_udp_datagram(flow, &mut cx()), Poll::Pending);
    w.advance(Duration::from_secs(50));
    assert_eq!(w.core.stats().udp_active, 0);
    assert_eq!(w.core.poll_udp_datagram(flow, &mut cx()), Poll::Ready(None));
}

#[test]
fn udp_flow_limit_and_icmp_drop_are_counted() {
    let cfg = NetstackConfig {
        max_flows: 1,
        ..NetstackConfig::default()
    };
    let mut w = World::new(cfg);
    let remote: SocketAddr = "192.0.2.53:53".parse().unwrap();
    for port in [1000, 1001] {
        let client = SocketAddr::new(common::CLIENT_V4.into(), port);
        w.core
            .handle_client_packet(&udp_packet(client, remote, b"x"), w.now);
    }
    let mut icmp = vec![
        0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 77, 0, 2, 1, 1, 1, 1,
    ];
    icmp.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
    w.core.handle_client_packet(&icmp, w.now);
    w.core.poll(w.now);
    assert_eq!(w.events().len(), 1);
    let s = w.core.stats();
    assert_eq!(
        (s.udp_active, s.refused_limit, s.dropped_unsupported),
        (1, 1, 1)
    );
    assert!(
        w.core.poll_client_packet().is_none(),
        "ICMP echo must not be answered"
    );
}

#[test]
fn unspecified_broadcast_and_multicast_destinations_are_never_dialed() {
    let mut w = World::new(NetstackConfig::default());
    let client = SocketAddr::new(common::CLIENT_V4.into(), 4000);
    let client6 = SocketAddr::new(common::CLIENT_V6.into(), 4000);
    for (c, dst) in [
        (client, "0.0.0.0:53"),
        (client, "255.255.255.255:67"),
        (client, "224.0.0.251:5353"),
        (client6, "[::]:53"),
        (client6, "[ff02::fb]:5353"),
    ] {
        let remote: SocketAddr = dst.parse().unwrap();
        w.core
            .handle_client_packet(&udp_packet(c, remote, b"x"), w.now);
    }
    w.core.poll(w.now);
    assert!(w.events().is_empty());
    assert_eq!(w.core.stats().refused_policy, 5);
}

/// CPU cost of the core (plus the smoltcp client) per byte: one download, no I/O.
/// Run: `cargo test -p ferry-netstack --profile bench-fast --test core -- --ignored --nocapture`
#[test]
#[ignore = "throughput measurement, run by hand"]
fn measure_core_download_throughput() {
    const LEN: usize = 64 << 20;
    let mut w = World::new(NetstackConfig::default());
    let h = w.client.connect(REMOTE.parse().unwrap(), 256 * 1024);
    w.pump();
    let (flow, _) = dial_flow(&w.events());
    w.core.tcp_dial_result(flow, true, w.now);
    w.pump();
    let chunk = pattern(3, 64 * 1024);
    let (mut sent, mut got) = (0usize, 0usize);
    let mut buf = vec![0u8; 64 * 1024];
    let start = tokio::time::Instant::now();
    while got < LEN {
        while sent < LEN {
            match w
                .core
                .poll_tcp_send(flow, &mut cx(), &chunk[..chunk.len().min(LEN - sent)])
            {
                Poll::Ready(n) => sent += n.unwrap(),
                Poll::Pending => break,
            }
        }
        while w.client.tcp(h).can_recv() {
            got += w.client.tcp(h).recv_slice(&mut buf).unwrap();
        }
        w.pump();
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "core download: {} MiB in {secs:.2} s = {:.0} Mbit/s (virtual-time pump, one core)",
        LEN >> 20,
        (LEN as f64 * 8.0) / secs / 1e6
    );
}

#[test]
fn simultaneous_dials_to_one_destination_keep_clients_apart() {
    let mut w = World::new(NetstackConfig::default());
    let remote: SocketAddr = REMOTE.parse().unwrap();
    let a = w.client.connect(remote, 4096);
    let b = w.client.connect(remote, 4096);
    w.pump();
    let ev = w.events();
    let flows: Vec<FlowId> = ev
        .iter()
        .map(|e| match e {
            Event::TcpDial { flow, .. } => *flow,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(flows.len(), 2);
    // Both dials finish before the stack is polled, in reverse order.
    w.core.tcp_dial_result(flows[1], true, w.now);
    w.core.tcp_dial_result(flows[0], true, w.now);
    w.pump();
    assert_eq!(w.client.tcp(a).state(), State::Established);
    assert_eq!(w.client.tcp(b).state(), State::Established);
    w.client.tcp(a).send_slice(b"from a").unwrap();
    w.client.tcp(b).send_slice(b"from b").unwrap();
    w.pump();
    let mut buf = [0u8; 16];
    let Poll::Ready(Ok(n)) = w.core.poll_tcp_recv(flows[0], &mut cx(), &mut buf) else {
        panic!("no data on flow a");
    };
    assert_eq!(&buf[..n], b"from a");
    let Poll::Ready(Ok(n)) = w.core.poll_tcp_recv(flows[1], &mut cx(), &mut buf) else {
        panic!("no data on flow b");
    };
    assert_eq!(&buf[..n], b"from b");
}

#[test]
fn local_service_is_dialed_at_its_target_despite_the_policy_and_replies_from_the_tunnel_address() {
    let dns: SocketAddr = "10.77.0.1:53".parse().unwrap();
    let forwarder: SocketAddr = "127.0.0.1:5300".parse().unwrap();
    // The policy refuses the tunnel address itself (as the relay policy's check_addr does).
    let tunnel: IpAddr = dns.ip();
    let cfg = NetstackConfig::default()
        .with_policy(move |ip| ip != tunnel)
        .with_local_service(dns, forwarder);
    let mut w = World::new(cfg);
    let client: SocketAddr = "10.77.0.2:40000".parse().unwrap();
    w.core
        .handle_client_packet(&udp_packet(client, dns, b"query"), w.now);
    w.core.poll(w.now);
    let flow = match w.events().as_slice() {
        [Event::UdpOpen { flow, remote }] if *remote == forwarder => *flow,
        other => panic!("expected UdpOpen to the forwarder, got {other:?}"),
    };
    w.core.udp_reply(flow, b"answer", w.now);
    let pkt = w.core.poll_client_packet().unwrap();
    assert_eq!(parse_udp(&pkt), Some((dns, client, b"answer".to_vec())));

    // TCP to the service is dialed at the target too.
    w.client.connect(dns, 4096);
    w.pump();
    assert_eq!(dial_flow(&w.events()).1, forwarder);

    // Other ports on the tunnel address still go through the policy hook (refused).
    w.client.connect(SocketAddr::new(tunnel, 22), 4096);
    w.pump();
    assert!(w.events().is_empty());
    assert_eq!(w.core.stats().refused_policy, 1);
}
