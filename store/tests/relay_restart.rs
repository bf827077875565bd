//! The relay state machine persisting into a real store, restarted (store reopened,
//! sessions resumed from it) many times during traffic: no co-signed receipt is lost,
//! counting continues from the stored state, and each crash costs at most W unbilled bytes.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_metering::{
    ClientConfig, ClientSession, Direction, Message, RelayConfig, RelayIdentity, RelaySession,
    SessionState, Verdict, decode, encode,
};
use ferry_receipts::{NetworkId, SessionId, Signature, SigningKey, Voucher};
use ferry_store::{Record, SessionOpen, Store};

const NET: NetworkId = NetworkId([7; 16]);
const MIB: u64 = 1 << 20;

#[test]
#[allow(clippy::disallowed_methods)]
fn relay_restarts_resume_from_the_store_without_losing_co_signed_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("receipts.log");
    let ledger = SigningKey::from_seed(&[1; 32]);
    let relay_key = Arc::new(SigningKey::from_seed(&[2; 32]));
    let client_key = Arc::new(SigningKey::from_seed(&[3; 32]));
    let cfg = RelayConfig {
        receipt_every_bytes: 256 * 1024,
        credit_window_bytes: MIB,
        ..RelayConfig::default()
    };
    let mut now = Instant::now();
    let unix = 1_800_000_000;
    let voucher = Voucher {
        network_id: NET,
        ledger_key: ledger.public_key(),
        client_key: client_key.public_key(),
        nonce: [0; 16],
        budget_micros: 1 << 40,
        max_price_micros_per_gib: 1,
        issued_at: unix,
        expires_at: unix + 3600,
        signature: Signature::ZERO,
    }
    .sign(&ledger);
    let mut client = ClientSession::new(
        ClientConfig::default(),
        client_key,
        NET,
        relay_key.public_key(),
    );
    let Message::Hello(offer) = client.hello(voucher.clone(), [5; 32], [6; 16], unix) else {
        unreachable!()
    };
    let id = RelayIdentity {
        network_id: NET,
        ledger_key: ledger.public_key(),
        key: relay_key.clone(),
    };
    let (mut store, _) = Store::open(&path).unwrap();
    let (mut relay, accept) = RelaySession::open(
        cfg.clone(),
        &id,
        &offer,
        SessionId([4; 16]),
        1,
        0,
        now,
        unix,
    )
    .unwrap();
    let Message::Accept(a) = accept.clone() else {
        unreachable!()
    };
    store
        .append(Record::SessionOpen(Box::new(SessionOpen {
            accept: a.clone(),
            offer: offer.clone(),
            extra: b"10.77.0.2/32".to_vec(),
        })))
        .unwrap();
    client.handle_message(accept, unix);

    let mut forwarded = 0u64;
    let mut lost = 0u64;
    let mut restarts = 0;
    for i in 0..30_000u64 {
        let len = 40 + (i * 7919) % 1381;
        let dir = if i % 2 == 0 {
            Direction::Up
        } else {
            Direction::Down
        };
        if dir == Direction::Up {
            client.record_up(len);
        }
        if relay.on_bytes(dir, len, now) == Verdict::Forward {
            forwarded += len;
            if dir == Direction::Down {
                client.record_down(len);
            }
        }
        now += Duration::from_micros(200);
        while let Some(m) = relay.poll_transmit(now, unix) {
            let reply = client.handle_message(decode(&encode(&m)).unwrap(), unix);
            let Some(reply) = reply else { continue };
            if let Some(c) = relay.handle_message(decode(&encode(&reply)).unwrap(), now) {
                store.append(Record::CoSigned(c)).unwrap();
                let ack = relay.persisted(c.body().seq).unwrap();
                client.handle_message(ack, unix);
            }
        }
        if i % 997 == 996 {
            // Crash: in-memory relay state and store handle are gone.
            restarts += 1;
            let stored = store
                .latest(&a.session_id)
                .map_or(0, |c| c.body().total_bytes());
            let unbilled = relay.meter().total() - stored;
            assert!(unbilled <= cfg.credit_window_bytes);
            lost += unbilled;
            drop(relay);
            drop(store);
            let (s, rep) = Store::open(&path).unwrap();
            assert_eq!(rep.dropped_bytes, 0);
            store = s;
            let e = store.open_sessions().next().unwrap().clone();
            let open = e.open.unwrap();
            assert_eq!(open.extra, b"10.77.0.2/32");
            let allowance = open
                .offer
                .voucher
                .bytes_at(open.accept.price_micros_per_gib, 0);
            relay = RelaySession::resume(
                cfg.clone(),
                relay_key.clone(),
                open.accept,
                allowance,
                open.offer.voucher.expires_at,
                e.latest,
                now,
            );
        }
    }
    relay.close(now);
    while let Some(m) = relay.poll_transmit(now, unix) {
        if let Some(reply) = client.handle_message(m, unix) {
            if let Some(c) = relay.handle_message(reply, now) {
                store.append(Record::CoSigned(c)).unwrap();
                relay.persisted(c.body().seq).unwrap();
            }
        }
    }
    assert_eq!(relay.state(), SessionState::Closed);
    store.append(Record::SessionClosed(a.session_id)).unwrap();
    assert!(restarts >= 30);
    assert!(client.rejected().is_none());
    let last = store.latest(&a.session_id).unwrap().body().total_bytes();
    assert_eq!(last, forwarded - lost);
    assert!(lost <= restarts * MIB);
    assert_eq!(store.open_sessions().count(), 0);
    assert_eq!(store.pending_count(), 1);
}
