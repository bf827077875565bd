//! Shared helpers of the forwarder's loopback tests.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub use std::net::{Ipv4Addr, SocketAddr};
pub use std::str::FromStr;
pub use std::sync::{Arc, Mutex};
pub use std::time::{Duration, Instant};

pub use ferry_dns::testserver::{TestServer, parse_zone};
pub use ferry_dns::{DnsConfig, Forwarder, ForwarderStats, Upstream};
pub use hickory_net::client::{Client, ClientHandle};
pub use hickory_net::runtime::TokioRuntimeProvider;
pub use hickory_net::tcp::TcpClientStream;
pub use hickory_net::udp::UdpClientStream;
pub use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
pub use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

pub const ZONE: &str = "\
canary.ferry.test. 300 A 203.0.113.7
alias.ferry.test. 300 CNAME canary.ferry.test.
";

pub struct Setup {
    pub upstream: TestServer,
    pub addr: SocketAddr,
    pub stats: Arc<ForwarderStats>,
    pub _stop: tokio::sync::oneshot::Sender<()>,
}

pub fn config(upstream: SocketAddr) -> DnsConfig {
    DnsConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        upstream: vec![Upstream::plain(upstream)],
        timeout_ms: 400,
        attempts: 1,
        ..DnsConfig::default()
    }
}

pub async fn start_forwarder(
    config: &DnsConfig,
) -> (
    SocketAddr,
    Arc<ForwarderStats>,
    tokio::sync::oneshot::Sender<()>,
) {
    let forwarder = Forwarder::bind(config).await.unwrap();
    let addr = forwarder.local_addrs()[0];
    let stats = forwarder.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(forwarder.run(async move {
        let _ = stopped.await;
    }));
    (addr, stats, stop)
}

pub async fn setup_with(records: Vec<hickory_proto::rr::Record>) -> Setup {
    let upstream = TestServer::start("127.0.0.1:0".parse().unwrap(), "ferry.test.", records)
        .await
        .unwrap();
    let (addr, stats, stop) = start_forwarder(&config(upstream.addr())).await;
    Setup {
        upstream,
        addr,
        stats,
        _stop: stop,
    }
}

pub async fn setup() -> Setup {
    setup_with(parse_zone(ZONE).unwrap()).await
}

pub async fn udp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let stream = UdpClientStream::builder(addr, TokioRuntimeProvider::default())
        .with_timeout(Some(Duration::from_secs(5)))
        .build();
    let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(bg);
    client
}

pub async fn tcp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let (stream, sender) = TcpClientStream::new(
        addr,
        None,
        Some(Duration::from_secs(5)),
        TokioRuntimeProvider::new(),
    );
    let (client, bg) = Client::<TokioRuntimeProvider>::new(stream.await.unwrap(), sender);
    tokio::spawn(bg);
    client
}

pub async fn ask(
    client: &mut Client<TokioRuntimeProvider>,
    name: &str,
    qtype: RecordType,
) -> Message {
    let response = client
        .query(Name::from_str(name).unwrap(), DNSClass::IN, qtype)
        .await
        .unwrap();
    response.into_message()
}

pub fn a_records(msg: &Message) -> Vec<Ipv4Addr> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}
