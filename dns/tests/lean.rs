//! The lean plain-DNS backend (builds without the `resolver` feature, as on small routers)
//! behind the forwarder, against the in-memory test server over loopback.
//! Run: `cargo test -p ferry-dns --no-default-features --features testserver`.
#![cfg(all(feature = "testserver", not(feature = "resolver")))]
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

const CHAIN_ZONE: &str = "\
canary.ferry.test. 300 A 203.0.113.7
alias.ferry.test. 120 CNAME canary.ferry.test.
alias2.ferry.test. 200 CNAME alias.ferry.test.
v6.ferry.test. 300 AAAA 2001:db8::7
";

#[tokio::test]
async fn a_aaaa_and_cname_chains_are_forwarded() {
    let s = setup_with(parse_zone(CHAIN_ZONE).unwrap()).await;
    let mut client = udp_client(s.addr).await;

    let chain = ask(&mut client, "alias2.ferry.test.", RecordType::A).await;
    assert_eq!(chain.metadata.response_code, ResponseCode::NoError);
    let types: Vec<RecordType> = chain.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(
        types,
        [RecordType::CNAME, RecordType::CNAME, RecordType::A],
        "whole chain, in order"
    );
    assert_eq!(a_records(&chain), [Ipv4Addr::new(203, 0, 113, 7)]);

    let v6 = ask(&mut client, "v6.ferry.test.", RecordType::AAAA).await;
    let aaaa: Vec<std::net::Ipv6Addr> = v6
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .collect();
    assert_eq!(aaaa, ["2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap()]);

    // NODATA: NOERROR, no answers, the zone's SOA.
    let nodata = ask(&mut client, "v6.ferry.test.", RecordType::A).await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert!(
        nodata
            .authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA)
    );
    assert_eq!(s.upstream.hits(), 3);
}

#[tokio::test]
async fn nxdomain_carries_the_soa_and_is_cached_for_its_minimum() {
    let s = setup().await;
    let mut client = tcp_client(s.addr).await;
    for _ in 0..3 {
        let answer = ask(&mut client, "missing.ferry.test.", RecordType::A).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
        let soa = answer
            .authorities
            .iter()
            .find(|r| r.record_type() == RecordType::SOA)
            .unwrap();
        assert!(soa.ttl <= 60, "capped to the SOA minimum: {}", soa.ttl);
    }
    assert_eq!(s.upstream.hits(), 1);
}

#[tokio::test]
async fn cached_answers_survive_the_upstream_going_away() {
    let s = setup().await;
    let mut client = udp_client(s.addr).await;
    let first = ask(&mut client, "canary.ferry.test.", RecordType::A).await;
    assert_eq!(a_records(&first), [Ipv4Addr::new(203, 0, 113, 7)]);
    let Setup {
        upstream,
        stats,
        _stop,
        ..
    } = s;
    drop(upstream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again = ask(&mut client, "canary.ferry.test.", RecordType::A).await;
    assert_eq!(again.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&again), [Ipv4Addr::new(203, 0, 113, 7)]);
    // Not cached and the upstream is gone: SERVFAIL, promptly.
    let started = Instant::now();
    let other = ask(&mut client, "alias.ferry.test.", RecordType::A).await;
    assert_eq!(other.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_secs(2));
    let snap = stats.snapshot();
    assert_eq!(snap.upstream_failures, 1, "{snap:?}");
}

#[tokio::test]
async fn a_dead_first_upstream_fails_over_to_the_next() {
    let upstream = TestServer::start(
        "127.0.0.1:0".parse().unwrap(),
        "ferry.test.",
        parse_zone(ZONE).unwrap(),
    )
    .await
    .unwrap();
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg = config(dead);
    cfg.upstream.push(Upstream::plain(upstream.addr()));
    let (addr, stats, _stop) = start_forwarder(&cfg).await;
    let mut client = udp_client(addr).await;
    let answer = ask(&mut client, "canary.ferry.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&answer), [Ipv4Addr::new(203, 0, 113, 7)]);
    assert_eq!(upstream.hits(), 1);
    assert_eq!(stats.snapshot().upstream_failures, 0);
}

#[tokio::test]
async fn answers_too_big_for_udp_are_fetched_over_tcp_from_the_upstream() {
    // 100 A records (~1.6 KB) exceed our EDNS 1232: the upstream truncates over UDP, the lean
    // backend retries over TCP and the client (TCP) gets all of them.
    let zone: String = (1..=100)
        .map(|i| format!("big.ferry.test. 300 A 198.51.100.{i}\n"))
        .collect();
    let s = setup_with(parse_zone(&zone).unwrap()).await;
    let mut tcp = tcp_client(s.addr).await;
    let full = ask(&mut tcp, "big.ferry.test.", RecordType::A).await;
    assert!(!full.metadata.truncation);
    assert_eq!(a_records(&full).len(), 100);
    assert_eq!(s.upstream.hits(), 2, "UDP (truncated), then TCP");
    // A UDP client with EDNS 1232 gets TC from us (served from the cache).
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(
        Name::from_str("big.ferry.test.").unwrap(),
        RecordType::A,
    ));
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(1232);
    q.set_edns(edns);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&q.to_vec().unwrap(), s.addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (len, _) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let reply = Message::from_vec(&buf[..len]).unwrap();
    assert!(reply.metadata.truncation);
    assert_eq!(s.upstream.hits(), 2, "served from the cache");
}
