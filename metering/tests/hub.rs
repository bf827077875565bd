//! The relay hub with three peers, control traffic carried in real inner UDP packets:
//! an honest paying client, a paying client that never co-signs, and a trusted peer.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::{MIB, NET, base_instant};
use ferry_metering::{
    CONTROL_PORT, ClientConfig, ClientSession, CutOffReason, Direction, Message, RelayConfig,
    RelayEvent, RelayHub, RelayIdentity, Verdict, control_datagram, decode, encode, udp_packet,
};
use ferry_receipts::{SessionId, Signature, SigningKey, Voucher};

const UNIX: u64 = 1_800_000_000;

fn addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 77, 0, last)), port)
}

fn client(n: u8, ledger: &SigningKey, relay: &SigningKey) -> (ClientSession, Message) {
    let key = Arc::new(SigningKey::from_seed(&[10 + n; 32]));
    let voucher = Voucher {
        network_id: NET,
        ledger_key: ledger.public_key(),
        client_key: key.public_key(),
        nonce: [n; 16],
        budget_micros: 1 << 40,
        max_price_micros_per_gib: 1,
        issued_at: UNIX,
        expires_at: UNIX + 3600,
        signature: Signature::ZERO,
    }
    .sign(ledger);
    let mut c = ClientSession::new(ClientConfig::default(), key, NET, relay.public_key());
    let hello = c.hello(voucher, [n; 32], [n; 16], UNIX);
    (c, hello)
}

#[test]
fn hub_bills_the_honest_client_cuts_off_the_silent_one_and_leaves_trusted_peers_alone() {
    let ledger = SigningKey::from_seed(&[1; 32]);
    let relay_key = Arc::new(SigningKey::from_seed(&[2; 32]));
    let relay_ip = addr(1, CONTROL_PORT);
    let cfg = RelayConfig {
        receipt_every_bytes: 256 * 1024,
        credit_window_bytes: MIB,
        ..RelayConfig::default()
    };
    let mut hub: RelayHub<u32> = RelayHub::new(
        cfg,
        RelayIdentity {
            network_id: NET,
            ledger_key: ledger.public_key(),
            key: relay_key.clone(),
        },
    );
    let mut now = base_instant();
    let mut clients = Vec::new();
    for peer in [1u32, 2] {
        let (mut c, hello) = client(peer as u8, &ledger, &relay_key);
        let Message::Hello(offer) = decode(&encode(&hello)).unwrap() else {
            unreachable!()
        };
        let accept = hub
            .open(peer, &offer, SessionId([peer as u8; 16]), 1, 0, now, UNIX)
            .unwrap();
        c.handle_message(accept, UNIX);
        clients.push(c);
    }
    let mut stored = Vec::new();
    let mut forwarded = [0u64; 4];
    for i in 0..20_000u64 {
        let len = 100 + i % 1300;
        for peer in [1u32, 2, 3] {
            if let Some(c) = clients.get_mut(peer as usize - 1) {
                c.record_up(len);
            }
            if hub.on_bytes(peer, Direction::Up, len, now) == Verdict::Forward {
                forwarded[peer as usize] += len;
            }
        }
        now += Duration::from_micros(500);
        hub.handle_timeout(now, UNIX);
        while let Some((peer, msg)) = hub.poll_transmit(now, UNIX) {
            // Relay -> client as an inner UDP packet from the control port.
            let to = addr(peer as u8 + 1, 40000);
            let pkt = udp_packet(relay_ip, to, &encode(&msg)).unwrap();
            let c = &mut clients[peer as usize - 1];
            let payload = &pkt[28..];
            let Some(reply) = c.handle_message(decode(payload).unwrap(), UNIX) else {
                continue;
            };
            if peer == 2 {
                continue; // the silent client never answers
            }
            let up = udp_packet(to, relay_ip, &encode(&reply)).unwrap();
            let d = control_datagram(&up, &[relay_ip.ip()]).unwrap();
            if let Some(co) = hub.handle_control(peer, d.payload, now) {
                stored.push(co);
                let ack = hub.persisted(peer, co.body().seq).unwrap();
                c.handle_message(ack, UNIX);
            }
        }
    }
    // Trusted peer 3: no session, everything forwarded.
    assert!(hub.session(3).is_none());
    assert_eq!(
        forwarded[3],
        (0..20_000u64).map(|i| 100 + i % 1300).sum::<u64>()
    );
    // Silent peer 2: at most W, then cut off after the co-sign timeout.
    assert!(forwarded[2] <= MIB && forwarded[2] > MIB - 1400);
    for _ in 0..70 {
        now += Duration::from_secs(1);
        hub.handle_timeout(now, UNIX);
        while let Some((peer, msg)) = hub.poll_transmit(now, UNIX) {
            if peer != 1 {
                continue;
            }
            let reply = clients[0].handle_message(msg, UNIX).unwrap();
            if let Some(co) = hub.handle_control(1, &encode(&reply), now) {
                stored.push(co);
                let ack = hub.persisted(1, co.body().seq).unwrap();
                clients[0].handle_message(ack, UNIX);
            }
        }
    }
    let events: Vec<_> = std::iter::from_fn(|| hub.poll_event()).collect();
    assert!(events.contains(&(2, RelayEvent::CutOff(CutOffReason::Unresponsive))));
    assert!(hub.remove(2).is_some());
    // Honest peer 1: close and check the bill equals every forwarded byte.
    hub.close_all(now);
    let mut finals = 0;
    while let Some((peer, msg)) = hub.poll_transmit(now, UNIX) {
        // Everything was co-signed already: the close still sends a final receipt (same
        // totals, next seq), so the client learns the session is over.
        let Message::FinalReceipt(r) = &msg else {
            panic!("expected a final receipt, got {msg:?}");
        };
        assert_eq!(r.body.total_bytes(), forwarded[1]);
        finals += 1;
        let reply = clients[peer as usize - 1]
            .handle_message(msg, UNIX)
            .unwrap();
        assert!(matches!(reply, Message::CoSigned(_)), "{reply:?}");
        let co = hub.handle_control(peer, &encode(&reply), now).unwrap();
        stored.push(co);
        hub.persisted(peer, co.body().seq).unwrap();
    }
    assert_eq!(finals, 1);
    assert_eq!(
        hub.poll_event(),
        Some((1, RelayEvent::Closed { acknowledged: true }))
    );
    assert_eq!(stored.last().unwrap().body().total_bytes(), forwarded[1]);
    assert_eq!(hub.handle_control(1, b"garbage", now), None);
    assert_eq!(hub.malformed, 1);
}
