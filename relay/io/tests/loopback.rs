//! The tokio shell over real loopback UDP with an in-memory egress and a boringtun client.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use boringtun::noise::{Tunn, TunnResult};
use ferry_relay_core::{PeerConfig, PolicyConfig, PublicKey, Relay, RelayConfig, StaticSecret};
use ferry_relay_io::{Egress, Shell, ShellConfig, bind_udp};
use tokio::net::UdpSocket;
use tokio::sync::{Mutex, mpsc};
use tokio::time::timeout;

struct ChanEgress {
    to_net: mpsc::UnboundedSender<Vec<u8>>,
    from_net: Mutex<mpsc::UnboundedReceiver<Vec<u8>>>,
}

impl Egress for ChanEgress {
    async fn send(&self, packet: &[u8]) -> io::Result<()> {
        self.to_net.send(packet.to_vec()).map_err(io::Error::other)
    }
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let p = self
            .from_net
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| io::Error::other("closed"))?;
        buf[..p.len()].copy_from_slice(&p);
        Ok(p.len())
    }
}

fn udp4(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(28 + payload.len()).unwrap();
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0x30, 0x39, 0, 53]);
    p.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

async fn recv_dg(sock: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    let n = timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("datagram")
        .unwrap();
    buf.truncate(n);
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_talks_through_the_shell_over_loopback() {
    let relay_secret = StaticSecret::from([1u8; 32]);
    let client_secret = StaticSecret::from([2u8; 32]);
    let mut relay = Relay::new(RelayConfig {
        private_key: relay_secret.clone(),
        tunnel_addresses: vec!["10.77.0.1".parse().unwrap()],
        policy: PolicyConfig::default(),
        max_peers: 8,
        client_rate_bytes: 0,
        index_salt: 7,
    });
    relay
        .add_peer(PeerConfig {
            public_key: PublicKey::from(&client_secret),
            allowed_ips: vec!["10.77.0.2/32".parse().unwrap()],
            preshared_key: None,
            persistent_keepalive: None,
        })
        .unwrap();
    let relay_pub = relay.public_key();
    let udp = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    let relay_addr = udp.local_addr().unwrap();
    let (to_net, mut outbox) = mpsc::unbounded_channel();
    let (inbox, from_net) = mpsc::unbounded_channel();
    let egress = ChanEgress {
        to_net,
        from_net: Mutex::new(from_net),
    };
    let shell = Shell::new(relay, udp, egress, ShellConfig::default());
    let shared = shell.relay();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(shell.run(async move {
        let _ = stop_rx.await;
    }));

    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(relay_addr).await.unwrap();
    let mut client = Tunn::new(client_secret, relay_pub, None, None, 99, None);
    let mut buf = vec![0u8; 2048];
    let init = match client.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(b) => b.to_vec(),
        other => panic!("{other:?}"),
    };
    sock.send(&init).await.unwrap();
    let resp = recv_dg(&sock).await;
    let keepalive = match client.decapsulate(Some(relay_addr.ip()), &resp, &mut buf) {
        TunnResult::WriteToNetwork(b) => b.to_vec(),
        other => panic!("{other:?}"),
    };
    sock.send(&keepalive).await.unwrap();

    // Client -> internet.
    let c = Ipv4Addr::new(10, 77, 0, 2);
    let server = Ipv4Addr::new(1, 1, 1, 1);
    let out = udp4(c, server, b"query");
    let TunnResult::WriteToNetwork(dg) = client.encapsulate(&out, &mut buf) else {
        panic!()
    };
    sock.send(dg).await.unwrap();
    let got = timeout(Duration::from_secs(5), outbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, out);

    // Internet -> client: a burst of full-MTU packets (exercises the GSO path) plus a small one.
    let big = udp4(server, c, &[0xab; 1420 - 28]);
    let small = udp4(server, c, b"tail");
    for _ in 0..50 {
        inbox.send(big.clone()).unwrap();
    }
    inbox.send(small.clone()).unwrap();
    let mut received = Vec::new();
    while received.len() < 51 {
        let dg = recv_dg(&sock).await;
        let mut out = vec![0u8; 2048];
        match client.decapsulate(Some(relay_addr.ip()), &dg, &mut out) {
            TunnResult::WriteToTunnelV4(p, _) => received.push(p.to_vec()),
            other => panic!("{other:?}"),
        }
    }
    assert!(received[..50].iter().all(|p| *p == big));
    assert_eq!(received[50], small);

    let counters = {
        let r = shared.lock().unwrap();
        let id = r.peers().next().unwrap().id;
        r.peer_counters(id).unwrap()
    };
    assert_eq!(counters.from_client_bytes, out.len() as u64);
    assert_eq!(
        counters.to_client_bytes,
        (50 * big.len() + small.len()) as u64
    );
    assert_eq!(
        shared.lock().unwrap().peers().next().unwrap().endpoint,
        Some(sock.local_addr().unwrap())
    );

    stop_tx.send(()).unwrap();
    timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
