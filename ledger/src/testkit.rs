//! Deterministic fixtures (keys, vouchers, co-signed receipts) for tests and the
//! `ferry-ledger bench` command. Not used by the server path.

use ferry_receipts::{
    CoSignedReceipt, NetworkId, ReceiptBody, SessionId, SigningKey, Voucher, VoucherId,
};

/// Network id used by fixtures.
pub const NETWORK: NetworkId = NetworkId([0x42; 16]);

/// Ledger parameters for tests: `network_id`, 1-hour epochs, 500,000 micros/GiB, one-day
/// vouchers, batches of 2,000, 300 s request skew, 1-hour refund grace.
pub fn params(network_id: NetworkId) -> crate::Params {
    crate::Params {
        network_id,
        epoch_secs: 3600,
        price_micros_per_gib: 500_000,
        voucher_ttl_secs: 86_400,
        max_batch: 2000,
        request_skew_secs: 300,
        refund_grace_secs: 3600,
    }
}

/// A signing key derived from `n` (distinct `n` → distinct keys).
pub fn key(tag: u8, n: u64) -> SigningKey {
    let mut seed = [tag; 32];
    seed[..8].copy_from_slice(&n.to_be_bytes());
    SigningKey::from_seed(&seed)
}

/// A session id derived from `n`.
pub fn session(n: u64) -> SessionId {
    let mut s = [0x5e; 16];
    s[..8].copy_from_slice(&n.to_be_bytes());
    SessionId(s)
}

/// A relay-signed, client co-signed receipt with the given cumulative counters.
#[allow(clippy::too_many_arguments)]
pub fn receipt(
    network: NetworkId,
    relay: &SigningKey,
    client: &SigningKey,
    voucher_id: VoucherId,
    price_micros_per_gib: u64,
    session_id: SessionId,
    seq: u64,
    bytes_up: u64,
    bytes_down: u64,
) -> CoSignedReceipt {
    ReceiptBody {
        network_id: network,
        relay_key: relay.public_key(),
        client_key: client.public_key(),
        session_id,
        voucher_id,
        seq,
        bytes_up,
        bytes_down,
        session_started_at: 1_700_000_000,
        issued_at: 1_700_000_000 + seq,
        price_micros_per_gib,
    }
    .sign(relay)
    .cosign(client, bytes_up, bytes_down, 1_700_000_000 + seq)
}

/// A session's receipts `1..=n` of a voucher, priced at the voucher's max; counters grow by pseudo-random steps seeded
/// with `seed`.
pub fn session_receipts(
    voucher: &Voucher,
    relay: &SigningKey,
    client: &SigningKey,
    session_id: SessionId,
    n: u64,
    seed: u64,
) -> Vec<CoSignedReceipt> {
    let mut rng = SplitMix(seed);
    let (mut up, mut down) = (0u64, 0u64);
    (1..=n)
        .map(|seq| {
            up += rng.next() % 5_000_000;
            down += rng.next() % 50_000_000;
            receipt(
                voucher.network_id,
                relay,
                client,
                voucher.id(),
                voucher.max_price_micros_per_gib,
                session_id,
                seq,
                up,
                down,
            )
        })
        .collect()
}

/// SplitMix64: a tiny seeded generator for reproducible test data.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Next pseudo-random value.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-ish value below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// A descriptor of `relay` at `ipv4` (Hello port 51821) asking `price`, declared in
/// `country`, valid for 30 minutes from `now`.
pub fn descriptor(
    network_id: NetworkId,
    relay: &SigningKey,
    ipv4: std::net::SocketAddrV4,
    price: u64,
    country: [u8; 2],
    now: u64,
) -> ferry_receipts::RelayDescriptor {
    ferry_receipts::RelayDescriptor {
        network_id,
        relay_key: relay.public_key(),
        wg_key: [7; 32],
        ipv4: Some(ipv4),
        ipv6: None,
        hello_port: 51821,
        price_micros_per_gib: price,
        limits: ferry_receipts::AdvertisedLimits::unlimited(),
        country,
        region: String::new(),
        software: "ferry-agent/test".into(),
        abuse_contact: String::new(),
        issued_at: now,
        expires_at: now + 1800,
        signature: ferry_receipts::Signature::ZERO,
    }
    .sign(relay)
}

/// A prober that answers for the listed Hello addresses only (after `rtt`), without
/// sockets; counts the probes it was asked for.
#[derive(Debug, Default)]
pub struct FakeProber {
    /// Addresses that answer.
    pub open: std::sync::Mutex<std::collections::BTreeSet<std::net::SocketAddr>>,
    /// Probes asked for.
    pub probes: std::sync::atomic::AtomicU64,
}

impl crate::directory::Prober for FakeProber {
    fn probe<'a>(
        &'a self,
        to: std::net::SocketAddr,
        _challenge: &'a ferry_receipts::ProbeChallenge,
    ) -> crate::directory::probe::ProbeFuture<'a> {
        self.probes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let open = self.open.lock().map(|o| o.contains(&to)).unwrap_or(false);
        Box::pin(async move { open.then(|| std::time::Duration::from_micros(800)) })
    }
}
