//! Scenario tests of the client tunnel against the relay core and hub, in memory.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{MIB, Pair};
use ferry_metering::{RelayConfig, RelayEvent};
use ferry_tunnel::{Event, Failure};

fn cfg() -> RelayConfig {
    RelayConfig {
        receipt_every_bytes: 64 * 1024,
        credit_window_bytes: MIB,
        ..RelayConfig::default()
    }
}

/// Sends `n` packets of `len` bytes, ticking 10 ms each.
fn traffic(p: &mut Pair, n: usize, len: usize) {
    for _ in 0..n {
        p.send_up(len);
        p.step();
        p.advance(Duration::from_millis(10));
    }
}

#[test]
fn a_paid_session_opens_in_the_tunnel_bills_exactly_and_closes_with_a_cosigned_final_receipt() {
    let mut p = Pair::new(cfg(), 1 << 40);
    p.connect();
    assert!(p.events.contains(&Event::Connected));
    assert!(
        p.events
            .iter()
            .any(|e| matches!(e, Event::StoreSession { .. }))
    );
    traffic(&mut p, 600, 1000);
    // Our count equals the relay's meter, byte for byte (echo: as much down as up).
    let (up, down) = p.relay_meter().unwrap();
    assert_eq!((p.client.bytes_up(), p.client.bytes_down()), (up, down));
    assert_eq!(up, 600 * 1000);
    let delivered = p
        .events
        .iter()
        .filter(|e| matches!(e, Event::Deliver(_)))
        .count();
    assert_eq!(delivered, 600);
    // Receipts every 64 KiB, each stored by the client before the relay got its co-signature.
    assert!(p.client_stored.len() >= 15, "{}", p.client_stored.len());
    let stored = p.hub(|h| h.stored.clone());
    assert!(!stored.is_empty());
    for c in &stored {
        assert!(
            p.client_stored.contains(c),
            "relay holds a co-signature the client never stored"
        );
    }
    assert!(p.events.iter().any(|e| matches!(e, Event::Acked(_))));
    let now = p.now;
    p.client.close(now);
    for _ in 0..50 {
        p.advance(Duration::from_millis(100));
        if p.client.closed() {
            break;
        }
    }
    assert!(
        p.events.contains(&Event::Closed {
            final_cosigned: true
        }),
        "{:?}",
        p.events.last()
    );
    assert!(p.events.iter().any(|e| matches!(
        e,
        Event::StoreCosigned {
            final_receipt: true,
            ..
        }
    )));
    let last = p.client_stored.last().unwrap().body();
    assert_eq!(last.total_bytes(), up + down);
    assert!(
        p.relay_events
            .iter()
            .any(|e| matches!(e, RelayEvent::Closed { acknowledged: true }))
    );
}

#[test]
fn loss_and_reordering_leave_the_bill_exact_and_every_cosignature_stored_first() {
    let mut p = Pair::new(cfg(), 1 << 40);
    p.connect();
    p.drop_every = 7;
    p.reorder = true;
    traffic(&mut p, 800, 900);
    p.drop_every = 0;
    p.reorder = false;
    for _ in 0..100 {
        p.advance(Duration::from_millis(200));
    }
    // Lost datagrams are neither counted by the relay nor by us on the way they were lost:
    // the relay's meter never exceeds what we sent up and what we received down.
    let (up, down) = p.relay_meter().unwrap();
    assert!(up <= p.client.bytes_up() && up > 0);
    assert!(down >= p.client.bytes_down());
    for c in p.hub(|h| h.stored.clone()) {
        assert!(p.client_stored.contains(&c));
    }
    // Receipts kept flowing despite the loss (retransmissions), and none was refused.
    assert!(p.client.failure().is_none(), "{:?}", p.client.failure());
    assert!(p.hub(|h| h.stored.len()) >= 5);
}

#[test]
fn a_client_that_crashes_before_storing_never_hands_out_a_cosignature_and_is_cut_off() {
    let mut p = Pair::new(cfg(), 1 << 40);
    p.connect();
    p.client_stores = false;
    traffic(&mut p, 1500, 1000);
    for _ in 0..80 {
        p.advance(Duration::from_secs(1));
    }
    assert!(
        p.events
            .iter()
            .any(|e| matches!(e, Event::StoreCosigned { .. }))
    );
    assert!(
        p.hub(|h| h.stored.is_empty()),
        "nothing unstored reached the relay"
    );
    let (up, down) = p.relay_meter().unwrap_or((0, 0));
    assert!(up + down <= MIB + 2000, "credit window held: {}", up + down);
    assert!(
        p.relay_events
            .iter()
            .any(|e| matches!(e, RelayEvent::CutOff(_))),
        "{:?}",
        p.relay_events
    );
}

#[test]
fn an_over_claiming_relay_is_refused_and_the_tunnel_stops() {
    let mut p = Pair::new(cfg(), 1 << 40);
    p.connect();
    p.hub(|h| h.phantom_down = 20_000);
    traffic(&mut p, 400, 1000);
    let failed = p.events.iter().find_map(|e| match e {
        Event::Failed(f) => Some(f.clone()),
        _ => None,
    });
    assert!(
        matches!(failed, Some(Failure::ReceiptRefused { .. })),
        "{failed:?}"
    );
    let now = p.now;
    assert!(
        !p.client.send_inner(&[0x45; 40], now),
        "nothing is sent after a failure"
    );
    assert!(
        p.client
            .failure()
            .unwrap()
            .to_string()
            .contains("refused receipt")
    );
}

#[test]
fn local_packets_to_the_control_service_are_not_sent() {
    let mut p = Pair::new(cfg(), 1 << 40);
    p.connect();
    let spoof = ferry_metering::udp_packet(
        "10.77.0.2:51821".parse().unwrap(),
        "10.77.0.1:51821".parse().unwrap(),
        &ferry_metering::encode(&ferry_metering::Message::Close),
    )
    .unwrap();
    let now = p.now;
    assert!(!p.client.send_inner(&spoof, now));
    assert_eq!(p.client.bytes_up(), 0);
}

#[test]
fn a_session_the_relay_ends_is_cosigned_reported_and_stops_sending() {
    // A voucher for 300 kB: the relay ends the session when it is used up.
    let mut p = Pair::new(cfg(), 300_000);
    p.connect();
    traffic(&mut p, 600, 1000);
    for _ in 0..30 {
        p.advance(Duration::from_millis(200));
    }
    let ended = p.events.iter().find_map(|e| match e {
        Event::EndedByRelay { total_bytes } => Some(*total_bytes),
        _ => None,
    });
    let total = ended.expect("the client noticed that the relay ended the session");
    assert!(total <= 300_000 && total > 250_000, "{total}");
    // The final receipt was co-signed (stored first) and reached the relay.
    assert!(p.events.iter().any(|e| matches!(
        e,
        Event::StoreCosigned {
            final_receipt: true,
            ..
        }
    )));
    let relay_final = p.hub(|h| h.stored.last().copied()).unwrap();
    assert_eq!(relay_final.body().total_bytes(), total);
    assert!(p.client.closed());
    let now = p.now;
    assert!(
        !p.client.send_inner(&[0x45; 40], now),
        "nothing more is sent"
    );
}

#[test]
fn unsolicited_inbound_traffic_is_neither_counted_nor_delivered() {
    let mut p = Pair::new(cfg(), 1 << 40);
    p.connect();
    traffic(&mut p, 50, 1000);
    let (down, delivered) = (p.client.bytes_down(), count_delivered(&p));
    assert_eq!(
        down,
        50 * 1000,
        "positive control: replies to our flow are counted"
    );
    // UDP to a closed port of ours, and a ping we never sent: the relay forwards (and meters)
    // them, the client drops them uncounted.
    for i in 0..40u16 {
        let junk = ferry_metering::udp_packet(
            "198.51.100.9:9999".parse().unwrap(),
            format!("10.77.0.2:{}", 20_000 + i).parse().unwrap(),
            &[0u8; 1000],
        )
        .unwrap();
        p.inject_down(&junk);
    }
    assert_eq!(p.client.dropped_unsolicited(), 40);
    assert_eq!(p.client.bytes_down(), down);
    assert_eq!(count_delivered(&p), delivered);
    let (_, relay_down) = p.relay_meter().unwrap();
    assert_eq!(
        relay_down,
        down + 40 * 1028,
        "the relay did forward and meter them"
    );
}

fn count_delivered(p: &Pair) -> usize {
    p.events
        .iter()
        .filter(|e| matches!(e, Event::Deliver(_)))
        .count()
}

#[test]
fn a_wrong_relay_key_fails_in_words_after_the_handshake_timeout() {
    // The client knows a key that is not the relay's: its initiations are never answered.
    let mut p = Pair::new(cfg(), 1 << 40);
    let wrong =
        boringtun::x25519::PublicKey::from(&boringtun::x25519::StaticSecret::from([77; 32]));
    p.client = ferry_tunnel::ClientTunnel::new(
        common::tunnel_config(wrong, Some(Duration::from_secs(20))),
        None,
    );
    for _ in 0..19 {
        p.advance(Duration::from_secs(1));
    }
    assert!(
        p.client.failure().is_none(),
        "still trying before the timeout"
    );
    p.advance(Duration::from_secs(2));
    let f = p
        .client
        .failure()
        .cloned()
        .expect("failed after the timeout");
    assert!(matches!(f, Failure::NoHandshake(_)), "{f:?}");
    assert!(
        f.to_string()
            .contains("did not answer the WireGuard handshake within 20 s")
    );
}

#[test]
fn a_relay_that_dropped_the_session_is_noticed_once_our_packets_go_unanswered() {
    let mut p = Pair::new(cfg(), 1 << 40);
    p.connect();
    traffic(&mut p, 20, 1000);
    // Idle is not lost: nothing sent, nothing expected back.
    for _ in 0..60 {
        p.advance(Duration::from_secs(1));
    }
    assert!(p.client.failure().is_none(), "{:?}", p.client.failure());
    // One packet nobody replies to: the relay still answers it (a keepalive), so the
    // session is alive.
    p.echo = false;
    assert!(p.send_up(200));
    for _ in 0..60 {
        p.advance(Duration::from_secs(1));
    }
    assert!(p.client.failure().is_none(), "{:?}", p.client.failure());
    // The relay loses the session (restart without it): nothing at all comes back.
    p.drop_every = 1;
    assert!(p.send_up(200));
    for _ in 0..24 {
        p.advance(Duration::from_secs(1));
        assert!(
            p.client.failure().is_none(),
            "not before {:?}",
            common::SILENT_AFTER
        );
    }
    for _ in 0..2 {
        p.advance(Duration::from_secs(1));
    }
    let f = p
        .client
        .failure()
        .cloned()
        .expect("the silence was noticed");
    assert_eq!(f, Failure::RelaySilent(common::SILENT_AFTER));
    assert!(f.to_string().contains("stopped answering"), "{f}");
    assert!(p.events.iter().any(|e| *e == Event::Failed(f.clone())));
}
