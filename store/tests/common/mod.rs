//! Receipt fixtures for store tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use ferry_receipts::{
    CoSignedReceipt, NetworkId, PublicKey, ReceiptBody, SessionId, SigningKey, VoucherId,
};

pub const NET: NetworkId = NetworkId([7; 16]);

/// A co-signed receipt for session `sid` with sequence `seq` (counters grow with seq).
pub fn receipt(sid: u8, seq: u64) -> CoSignedReceipt {
    let relay = SigningKey::from_seed(&[2; 32]);
    let client = SigningKey::from_seed(&[3; 32]);
    ReceiptBody {
        network_id: NET,
        relay_key: relay.public_key(),
        client_key: client.public_key(),
        session_id: SessionId([sid; 16]),
        voucher_id: VoucherId([sid; 32]),
        seq,
        bytes_up: seq * 1000,
        bytes_down: seq * 3000,
        session_started_at: 1_800_000_000,
        issued_at: 1_800_000_000 + seq,
        price_micros_per_gib: 5,
    }
    .sign(&relay)
    .cosign(&client, seq * 1000, seq * 3000, 1_800_000_000 + seq)
}

pub fn sid(n: u8) -> SessionId {
    SessionId([n; 16])
}

pub fn key() -> PublicKey {
    SigningKey::from_seed(&[2; 32]).public_key()
}
