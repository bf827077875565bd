//! A deterministic relay+client pair with a virtual clock, an in-memory "durable store"
//! and knobs for misbehaviour. Every control message goes through `encode`/`decode`.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_metering::{
    ClientConfig, ClientSession, Direction, Message, RelayConfig, RelayIdentity, RelaySession,
    Verdict, decode, encode,
};
use ferry_receipts::{CoSignedReceipt, NetworkId, SessionId, Signature, SigningKey, Voucher};

pub const MIB: u64 = 1 << 20;
pub const NET: NetworkId = NetworkId([7; 16]);

pub fn keys() -> (SigningKey, Arc<SigningKey>, Arc<SigningKey>) {
    (
        SigningKey::from_seed(&[1; 32]),
        Arc::new(SigningKey::from_seed(&[2; 32])),
        Arc::new(SigningKey::from_seed(&[3; 32])),
    )
}

#[allow(clippy::disallowed_methods)] // a base instant; time is virtual after it
pub fn base_instant() -> Instant {
    Instant::now()
}

pub struct World {
    pub start: Instant,
    pub now: Instant,
    pub unix: u64,
    pub cfg: RelayConfig,
    pub relay_key: Arc<SigningKey>,
    pub relay: RelaySession,
    pub client: ClientSession,
    /// What the relay shell stored (fsynced) in order.
    pub store: Vec<CoSignedReceipt>,
    /// When false the client never answers (receipts are swallowed).
    pub client_answers: bool,
    /// When false, appends "fail" (disk full): nothing is persisted, no ack.
    pub disk_ok: bool,
    /// Drop every k-th control message in each direction (0 = lossless).
    pub drop_every: u64,
    msg_counter: u64,
    pub forwarded_up: u64,
    pub forwarded_down: u64,
    pub dropped: u64,
    pub voucher_allowance: u64,
    pub voucher_expires: u64,
}

/// The relay's price in these worlds: 2^30 micros per GiB, one micro per byte.
pub const PRICE: u64 = 1 << 30;

impl World {
    pub fn new(cfg: RelayConfig) -> Self {
        Self::with_allowance(cfg, 1 << 40)
    }

    pub fn with_allowance(cfg: RelayConfig, allowance: u64) -> Self {
        cfg.validate().unwrap();
        let (ledger, relay_key, client_key) = keys();
        let now = base_instant();
        let unix = 1_800_000_000;
        let voucher = Voucher {
            network_id: NET,
            ledger_key: ledger.public_key(),
            client_key: client_key.public_key(),
            nonce: [9; 16],
            // One micro per byte: the budget is exactly `allowance` bytes at PRICE.
            budget_micros: allowance,
            max_price_micros_per_gib: PRICE,
            issued_at: unix - 10,
            expires_at: unix + 86_400,
            signature: Signature::ZERO,
        }
        .sign(&ledger);
        let mut client = ClientSession::new(
            ClientConfig::default(),
            client_key,
            NET,
            relay_key.public_key(),
        );
        let hello = client.hello(voucher, [5; 32], [6; 16], unix);
        let Message::Hello(offer) = decode(&encode(&hello)).unwrap() else {
            panic!("not a hello")
        };
        let id = RelayIdentity {
            network_id: NET,
            ledger_key: ledger.public_key(),
            key: relay_key.clone(),
        };
        let (relay, accept) = RelaySession::open(
            cfg.clone(),
            &id,
            &offer,
            SessionId([4; 16]),
            PRICE,
            0,
            now,
            unix,
        )
        .unwrap();
        assert!(
            client
                .handle_message(decode(&encode(&accept)).unwrap(), unix)
                .is_none()
        );
        assert!(client.accept().is_some());
        Self {
            start: now,
            now,
            unix,
            cfg,
            relay_key,
            relay,
            client,
            store: Vec::new(),
            client_answers: true,
            disk_ok: true,
            drop_every: 0,
            msg_counter: 0,
            forwarded_up: 0,
            forwarded_down: 0,
            dropped: 0,
            voucher_allowance: allowance,
            voucher_expires: unix + 86_400,
        }
    }

    fn lost(&mut self) -> bool {
        self.msg_counter += 1;
        self.drop_every != 0 && self.msg_counter % self.drop_every == 0
    }

    /// A packet from the client towards the internet.
    pub fn up(&mut self, len: u64) -> Verdict {
        self.client.record_up(len);
        let v = self.relay.on_bytes(Direction::Up, len, self.now);
        match v {
            Verdict::Forward => self.forwarded_up += len,
            Verdict::Drop(_) => self.dropped += len,
        }
        v
    }

    /// A packet from the internet towards the client.
    pub fn down(&mut self, len: u64) -> Verdict {
        let v = self.relay.on_bytes(Direction::Down, len, self.now);
        match v {
            Verdict::Forward => {
                self.forwarded_down += len;
                self.client.record_down(len);
            }
            Verdict::Drop(_) => self.dropped += len,
        }
        v
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.unix = 1_800_000_000 + (self.now - self.start).as_secs();
    }

    /// Runs timers and delivers control messages until quiet.
    pub fn pump(&mut self) {
        self.relay.handle_timeout(self.now, self.unix);
        while let Some(m) = self.relay.poll_transmit(self.now, self.unix) {
            if self.lost() {
                continue;
            }
            let m = decode(&encode(&m)).unwrap();
            let reply = self.client.handle_message(m, self.unix);
            let Some(reply) = reply else { continue };
            if !self.client_answers || self.lost() {
                continue;
            }
            let reply = decode(&encode(&reply)).unwrap();
            if let Some(c) = self.relay.handle_message(reply, self.now) {
                if !self.disk_ok {
                    continue;
                }
                c.verify(&NET).unwrap();
                self.store.push(c);
                let ack = self.relay.persisted(c.body().seq).unwrap();
                if !self.lost() {
                    self.client
                        .handle_message(decode(&encode(&ack)).unwrap(), self.unix);
                }
            }
        }
    }

    /// Advances to the relay's next timer (capped) and pumps.
    pub fn run_for(&mut self, total: Duration, step: Duration) {
        let end = self.now + total;
        while self.now < end {
            self.advance(step);
            self.pump();
        }
    }
}
