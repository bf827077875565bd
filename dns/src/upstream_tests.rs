//! The lean backend against fake upstreams on loopback: sockets that answer (or misbehave)
//! exactly as each test scripts them.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::op::OpCode;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::*;
use crate::Upstream;

/// Given a query and how many the fake has seen (1-based), the datagrams to send back.
type Script = Arc<dyn Fn(&Message, usize) -> Vec<Vec<u8>> + Send + Sync>;

struct Fake {
    addr: SocketAddr,
    udp_hits: Arc<AtomicUsize>,
    tcp_hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(SocketAddr, Message)>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Fake {
    /// UDP (and, with `tcp`, TCP on the same port) upstream following the scripts.
    async fn start(udp: Script, tcp: Option<Script>) -> Self {
        let (socket, listener) = loop {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            if tcp.is_none() {
                break (socket, None);
            }
            if let Ok(l) = TcpListener::bind(socket.local_addr().unwrap()).await {
                break (socket, Some(l));
            }
        };
        let addr = socket.local_addr().unwrap();
        let udp_hits = Arc::new(AtomicUsize::new(0));
        let tcp_hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let (hits, log) = (udp_hits.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (len, peer) = socket.recv_from(&mut buf).await.unwrap();
                let query = Message::from_vec(&buf[..len]).unwrap();
                let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
                log.lock().unwrap().push((peer, query.clone()));
                for datagram in udp(&query, n) {
                    socket.send_to(&datagram, peer).await.unwrap();
                }
            }
        }));
        if let (Some(listener), Some(script)) = (listener, tcp) {
            let hits = tcp_hits.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let (mut stream, _) = listener.accept().await.unwrap();
                    let mut len = [0u8; 2];
                    stream.read_exact(&mut len).await.unwrap();
                    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    stream.read_exact(&mut buf).await.unwrap();
                    let query = Message::from_vec(&buf).unwrap();
                    let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
                    for msg in script(&query, n) {
                        let len = u16::try_from(msg.len()).unwrap();
                        stream.write_all(&len.to_be_bytes()).await.unwrap();
                        stream.write_all(&msg).await.unwrap();
                    }
                }
            }));
        }
        Self {
            addr,
            udp_hits,
            tcp_hits,
            seen,
            tasks,
        }
    }

    fn udp_hits(&self) -> usize {
        self.udp_hits.load(Ordering::SeqCst)
    }

    fn tcp_hits(&self) -> usize {
        self.tcp_hits.load(Ordering::SeqCst)
    }
}

fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

/// A NOERROR reply to `query` with one A record per address.
fn reply(query: &Message, addrs: &[Ipv4Addr]) -> Message {
    let mut r = Message::response(query.metadata.id, OpCode::Query);
    r.metadata.recursion_available = true;
    r.add_queries(query.queries.iter().cloned());
    let owner = query.queries[0].name().clone();
    for ip in addrs {
        r.add_answer(Record::from_rdata(owner.clone(), 60, RData::A(A(*ip))));
    }
    r
}

fn bytes(m: &Message) -> Vec<u8> {
    m.to_vec().unwrap()
}

fn answering(ip: Ipv4Addr) -> Script {
    Arc::new(move |q, _| vec![bytes(&reply(q, &[ip]))])
}

fn rcode(code: ResponseCode) -> Script {
    Arc::new(move |q, _| {
        let mut r = reply(q, &[]);
        r.metadata.response_code = code;
        vec![bytes(&r)]
    })
}

fn silent() -> Script {
    Arc::new(|_, _| Vec::new())
}

fn config(upstreams: Vec<Upstream>, timeout_ms: u64, attempts: usize) -> DnsConfig {
    DnsConfig {
        upstream: upstreams,
        timeout_ms,
        attempts,
        ..DnsConfig::default()
    }
}

fn upstream(protocol: Protocol, addr: SocketAddr) -> Upstream {
    Upstream {
        protocol,
        ..Upstream::plain(addr)
    }
}

fn ips(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

/// A port with nothing behind it (UDP: ICMP port unreachable; TCP: RST).
fn dead_addr() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

const IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const EVIL: Ipv4Addr = Ipv4Addr::new(6, 6, 6, 6);

#[tokio::test]
async fn queries_have_rd_edns_and_fresh_ids_and_ports() {
    let fake = Fake::start(answering(IP), None).await;
    let ups = Upstreams::new(&config(vec![Upstream::plain(fake.addr)], 500, 1)).unwrap();
    let qname = name("www.ferry.test.");
    for _ in 0..4 {
        let got = ups.lookup(&qname, RecordType::A, soon()).await.unwrap();
        assert_eq!(ips(&got.message), [IP]);
        assert!(got.cacheable);
    }
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    for (_, q) in &seen {
        assert!(q.metadata.recursion_desired);
        assert_eq!(q.edns.as_ref().unwrap().max_payload(), 1232);
        assert_eq!(q.queries, [Query::query(qname.clone(), RecordType::A)]);
    }
    let ids: std::collections::HashSet<u16> = seen.iter().map(|(_, q)| q.metadata.id).collect();
    let ports: std::collections::HashSet<u16> = seen.iter().map(|(p, _)| p.port()).collect();
    assert!(ids.len() > 1, "IDs must be random: {ids:?}");
    assert!(ports.len() > 1, "source ports must vary: {ports:?}");
}

#[tokio::test]
async fn spoofed_and_mismatched_replies_are_ignored() {
    let script: Script = Arc::new(|q, _| {
        let mut wrong_id = reply(q, &[EVIL]);
        wrong_id.metadata.id = q.metadata.id.wrapping_add(1);
        let mut wrong_question = reply(q, &[EVIL]);
        wrong_question.queries = vec![Query::query(name("evil.test."), RecordType::A)];
        let mut wrong_type = reply(q, &[EVIL]);
        wrong_type.queries = vec![Query::query(q.queries[0].name().clone(), RecordType::AAAA)];
        let mut not_a_response = reply(q, &[EVIL]);
        not_a_response.metadata.message_type = MessageType::Query;
        vec![
            bytes(&wrong_id),
            bytes(&wrong_question),
            bytes(&wrong_type),
            bytes(&not_a_response),
            vec![0xde, 0xad, 0xbe, 0xef],
            bytes(&reply(q, &[IP])),
        ]
    });
    let fake = Fake::start(script, None).await;
    let ups = Upstreams::new(&config(vec![Upstream::plain(fake.addr)], 1000, 1)).unwrap();
    let got = ups
        .lookup(&name("www.ferry.test."), RecordType::A, soon())
        .await
        .unwrap();
    assert_eq!(ips(&got.message), [IP], "only the matching reply counts");

    // Only forgeries: the try times out instead of accepting one.
    let forger: Script = Arc::new(|q, _| {
        let mut r = reply(q, &[EVIL]);
        r.metadata.id ^= 0x8000;
        vec![bytes(&r)]
    });
    let fake = Fake::start(forger, None).await;
    let ups = Upstreams::new(&config(vec![Upstream::plain(fake.addr)], 300, 1)).unwrap();
    let started = Instant::now();
    let err = ups
        .lookup(&name("www.ferry.test."), RecordType::A, soon())
        .await
        .unwrap_err();
    assert!(matches!(err, LookupError::NoAnswer));
    assert!(started.elapsed() >= Duration::from_millis(290));
    assert_eq!(fake.udp_hits(), 1);
}

fn big(q: &Message) -> Message {
    let addrs: Vec<Ipv4Addr> = (1..=100).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect();
    reply(q, &addrs)
}

fn truncated() -> Script {
    Arc::new(|q, _| {
        let mut r = reply(q, &[]);
        r.metadata.truncation = true;
        vec![bytes(&r)]
    })
}

#[tokio::test]
async fn truncated_udp_reply_is_retried_over_tcp_for_plain_only() {
    let fake = Fake::start(truncated(), Some(Arc::new(|q, _| vec![bytes(&big(q))]))).await;
    let qname = name("big.ferry.test.");

    let plain = Upstreams::new(&config(vec![Upstream::plain(fake.addr)], 1000, 1)).unwrap();
    let got = plain.lookup(&qname, RecordType::A, soon()).await.unwrap();
    assert_eq!(ips(&got.message).len(), 100);
    assert!(!got.message.metadata.truncation);
    assert!(got.cacheable);
    assert_eq!((fake.udp_hits(), fake.tcp_hits()), (1, 1));

    let udp_only =
        Upstreams::new(&config(vec![upstream(Protocol::Udp, fake.addr)], 1000, 1)).unwrap();
    let got = udp_only
        .lookup(&qname, RecordType::A, soon())
        .await
        .unwrap();
    assert!(got.message.metadata.truncation);
    assert!(!got.cacheable, "a truncated answer is never cached");
    assert_eq!(
        (fake.udp_hits(), fake.tcp_hits()),
        (2, 1),
        "udp: no TCP retry"
    );

    let tcp_only =
        Upstreams::new(&config(vec![upstream(Protocol::Tcp, fake.addr)], 1000, 1)).unwrap();
    let got = tcp_only
        .lookup(&qname, RecordType::A, soon())
        .await
        .unwrap();
    assert_eq!(ips(&got.message).len(), 100);
    assert_eq!((fake.udp_hits(), fake.tcp_hits()), (2, 2), "tcp: no UDP");
}

#[tokio::test]
async fn tcp_reply_with_a_wrong_id_is_ignored() {
    let script: Script = Arc::new(|q, _| {
        let mut forged = reply(q, &[EVIL]);
        forged.metadata.id = q.metadata.id.wrapping_add(7);
        vec![bytes(&forged), bytes(&reply(q, &[IP]))]
    });
    let fake = Fake::start(silent(), Some(script)).await;
    let ups = Upstreams::new(&config(vec![upstream(Protocol::Tcp, fake.addr)], 1000, 1)).unwrap();
    let got = ups
        .lookup(&name("www.ferry.test."), RecordType::A, soon())
        .await
        .unwrap();
    assert_eq!(ips(&got.message), [IP]);
}

#[tokio::test]
async fn fails_over_past_dead_silent_and_refusing_upstreams_then_prefers_the_live_one() {
    let silent_fake = Fake::start(silent(), None).await;
    let refusing = Fake::start(rcode(ResponseCode::Refused), None).await;
    let live = Fake::start(answering(IP), None).await;
    let ups = Upstreams::new(&config(
        vec![
            Upstream::plain(dead_addr()),
            Upstream::plain(silent_fake.addr),
            Upstream::plain(refusing.addr),
            Upstream::plain(live.addr),
        ],
        300,
        1,
    ))
    .unwrap();
    let qname = name("www.ferry.test.");
    let started = Instant::now();
    let got = ups.lookup(&qname, RecordType::A, soon()).await.unwrap();
    let took = started.elapsed();
    assert_eq!(ips(&got.message), [IP]);
    assert!(
        took >= Duration::from_millis(290),
        "waited for the silent one: {took:?}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(
        (silent_fake.udp_hits(), refusing.udp_hits(), live.udp_hits()),
        (1, 1, 1)
    );

    // The live upstream is asked first from now on.
    let started = Instant::now();
    ups.lookup(&qname, RecordType::A, soon()).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(250));
    assert_eq!(
        (silent_fake.udp_hits(), refusing.udp_hits(), live.udp_hits()),
        (1, 1, 2)
    );
}

#[tokio::test]
async fn servfail_everywhere_is_an_error_and_attempts_retry() {
    let failing = Fake::start(rcode(ResponseCode::ServFail), None).await;
    let ups = Upstreams::new(&config(vec![Upstream::plain(failing.addr)], 300, 3)).unwrap();
    assert!(
        ups.lookup(&name("a.test."), RecordType::A, soon())
            .await
            .is_err()
    );
    assert_eq!(failing.udp_hits(), 3, "one try per attempt");

    // Drops the first query, answers the second: needs attempts = 2.
    let flaky: Script = Arc::new(|q, n| {
        if n % 2 == 1 {
            Vec::new()
        } else {
            vec![bytes(&reply(q, &[IP]))]
        }
    });
    let fake = Fake::start(flaky.clone(), None).await;
    let once = Upstreams::new(&config(vec![Upstream::plain(fake.addr)], 200, 1)).unwrap();
    assert!(
        once.lookup(&name("a.test."), RecordType::A, soon())
            .await
            .is_err()
    );
    let fake = Fake::start(flaky, None).await;
    let twice = Upstreams::new(&config(vec![Upstream::plain(fake.addr)], 200, 2)).unwrap();
    let got = twice
        .lookup(&name("a.test."), RecordType::A, soon())
        .await
        .unwrap();
    assert_eq!(ips(&got.message), [IP]);
}

#[tokio::test]
async fn deadline_bounds_the_whole_lookup() {
    let a = Fake::start(silent(), None).await;
    let b = Fake::start(silent(), None).await;
    let ups = Upstreams::new(&config(
        vec![Upstream::plain(a.addr), Upstream::plain(b.addr)],
        1000,
        3,
    ))
    .unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_millis(400);
    assert!(
        ups.lookup(&name("a.test."), RecordType::A, deadline)
            .await
            .is_err()
    );
    let took = started.elapsed();
    assert!(took < Duration::from_millis(900), "{took:?}");
    assert_eq!((a.udp_hits(), b.udp_hits()), (1, 0));
}

#[tokio::test]
async fn cached_answer_is_served_without_the_upstream() {
    let fake = Fake::start(answering(IP), None).await;
    let lean = Lean::new(&config(vec![Upstream::plain(fake.addr)], 300, 1)).unwrap();
    let qname = name("www.ferry.test.");
    let first = lean.resolve(&qname, RecordType::A, soon()).await.unwrap();
    assert_eq!(first.rcode, ResponseCode::NoError);
    assert_eq!(fake.udp_hits(), 1);
    drop(fake); // upstream gone
    tokio::task::yield_now().await;
    let second = lean
        .resolve(&name("WWW.ferry.test."), RecordType::A, soon())
        .await
        .unwrap();
    assert_eq!(second.answers, first.answers);
    assert!(
        lean.resolve(&qname, RecordType::AAAA, soon())
            .await
            .is_err(),
        "another type is not cached, and the upstream is gone"
    );

    // cache-size = 0: every query goes upstream.
    let fake = Fake::start(answering(IP), None).await;
    let mut cfg = config(vec![Upstream::plain(fake.addr)], 300, 1);
    cfg.cache_size = 0;
    let uncached = Lean::new(&cfg).unwrap();
    for _ in 0..2 {
        uncached
            .resolve(&qname, RecordType::A, soon())
            .await
            .unwrap();
    }
    assert_eq!(fake.udp_hits(), 2);
}

#[test]
fn encrypted_upstreams_are_refused_by_the_lean_backend() {
    let mut up = upstream(Protocol::Tls, "192.0.2.53:853".parse().unwrap());
    up.tls_name = Some("dns.example".into());
    let err = Upstreams::new(&config(vec![up], 300, 1)).unwrap_err();
    assert!(
        err.to_string().contains("needs ferry-dns built with the"),
        "{err}"
    );
}
