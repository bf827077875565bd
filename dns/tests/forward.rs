//! The forwarder against a real upstream (the in-memory test server) over loopback, queried
//! with hickory's client.
#![cfg(feature = "testserver")]
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

#[tokio::test]
async fn resolves_through_the_forwarder_over_udp_and_tcp() {
    let s = setup().await;
    let mut udp = udp_client(s.addr).await;
    let answer = ask(&mut udp, "canary.ferry.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&answer), vec![Ipv4Addr::new(203, 0, 113, 7)]);
    assert!(answer.metadata.recursion_available);
    assert!(
        !answer.metadata.authoritative,
        "a forwarder is not authoritative"
    );

    let mut tcp = tcp_client(s.addr).await;
    let answer = ask(&mut tcp, "alias.ferry.test.", RecordType::A).await;
    assert_eq!(a_records(&answer), vec![Ipv4Addr::new(203, 0, 113, 7)]);
    assert!(
        answer
            .answers
            .iter()
            .any(|r| r.record_type() == RecordType::CNAME),
        "CNAME chain must reach the client"
    );
    assert_eq!(s.stats.snapshot().queries, 2);
}

#[tokio::test]
async fn repeated_query_is_served_from_cache_with_decreasing_ttl() {
    let s = setup().await;
    let mut client = udp_client(s.addr).await;
    let first = ask(&mut client, "canary.ferry.test.", RecordType::A).await;
    assert_eq!(s.upstream.hits(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = ask(&mut client, "canary.ferry.test.", RecordType::A).await;
    assert_eq!(a_records(&second), vec![Ipv4Addr::new(203, 0, 113, 7)]);
    assert_eq!(
        s.upstream.hits(),
        1,
        "second answer must come from the cache"
    );
    assert!(
        second.answers[0].ttl < first.answers[0].ttl,
        "cached TTL counts down"
    );
    assert!(first.answers[0].ttl <= 300);
}

#[tokio::test]
async fn nxdomain_is_passed_through_with_soa_and_cached() {
    let s = setup().await;
    let mut client = udp_client(s.addr).await;
    for _ in 0..2 {
        let answer = ask(&mut client, "missing.ferry.test.", RecordType::A).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
        assert!(answer.answers.is_empty());
        assert!(
            answer
                .authorities
                .iter()
                .any(|r| r.record_type() == RecordType::SOA)
        );
    }
    assert_eq!(
        s.upstream.hits(),
        1,
        "negative answer cached (SOA minimum 60 s)"
    );
}

#[tokio::test]
async fn upstream_down_gives_servfail_promptly_and_the_forwarder_keeps_serving() {
    // A port with nothing behind it: bind, note, close.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (addr, stats, _stop) = start_forwarder(&config(dead)).await;
    let mut client = udp_client(addr).await;
    for _ in 0..2 {
        let started = Instant::now();
        let answer = ask(&mut client, "canary.ferry.test.", RecordType::A).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
    }
    // The UDP client may retransmit while the forwarder waits on the dead upstream; every
    // answer, retransmissions included, must be SERVFAIL.
    let snap = stats.snapshot();
    assert!(snap.upstream_failures >= 2, "{snap:?}");
    assert_eq!(snap.upstream_failures, snap.queries, "{snap:?}");
}

#[tokio::test]
async fn large_answers_are_truncated_over_udp_and_complete_over_tcp() {
    let zone: String = (1..=40)
        .map(|i| format!("big.ferry.test. 300 A 198.51.100.{i}\n"))
        .collect();
    let s = setup_with(parse_zone(&zone).unwrap()).await;
    let mut udp = udp_client(s.addr).await;
    udp.disable_edns();
    let small = ask(&mut udp, "big.ferry.test.", RecordType::A).await;
    assert!(
        small.metadata.truncation,
        "40 A records do not fit 512 bytes"
    );
    assert!(small.answers.is_empty());
    let mut tcp = tcp_client(s.addr).await;
    let full = ask(&mut tcp, "big.ferry.test.", RecordType::A).await;
    assert!(!full.metadata.truncation);
    assert_eq!(a_records(&full).len(), 40);
}

#[tokio::test]
async fn any_and_zone_transfers_are_not_forwarded() {
    let s = setup().await;
    let mut client = tcp_client(s.addr).await;
    let any = ask(&mut client, "ferry.test.", RecordType::ANY).await;
    assert_eq!(any.metadata.response_code, ResponseCode::Refused);
    let axfr = raw_udp(s.addr, &query_bytes(7, "ferry.test.", RecordType::AXFR))
        .await
        .unwrap();
    assert_eq!(
        Message::from_vec(&axfr).unwrap().metadata.response_code,
        ResponseCode::NotImp
    );
    let chaos = {
        let mut m = Message::query();
        let mut q = Query::query(Name::from_str("version.bind.").unwrap(), RecordType::TXT);
        q.set_query_class(DNSClass::CH);
        m.add_query(q);
        m.to_vec().unwrap()
    };
    let reply = raw_udp(s.addr, &chaos).await.unwrap();
    assert_eq!(
        Message::from_vec(&reply).unwrap().metadata.response_code,
        ResponseCode::Refused
    );
    assert_eq!(s.upstream.hits(), 0);
}

#[tokio::test]
async fn malformed_datagrams_get_formerr_or_silence_never_a_crash() {
    let s = setup().await;
    let mut garbage = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0xff; 20]);
    let reply = raw_udp(s.addr, &garbage).await.unwrap();
    let msg = Message::from_vec(&reply).unwrap();
    assert_eq!(
        (msg.metadata.id, msg.metadata.response_code),
        (0x1234, ResponseCode::FormErr)
    );
    assert!(
        raw_udp(s.addr, &[1, 2, 3]).await.is_none(),
        "short datagram: no reply"
    );
    // Still alive.
    let mut client = udp_client(s.addr).await;
    let answer = ask(&mut client, "canary.ferry.test.", RecordType::A).await;
    assert_eq!(a_records(&answer).len(), 1);
}

fn query_bytes(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_str(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

async fn raw_udp(addr: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(datagram, addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (len, _) = tokio::time::timeout(Duration::from_millis(800), socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(len);
    Some(buf)
}
