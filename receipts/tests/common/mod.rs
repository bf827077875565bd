//! Fixed fixtures shared by the integration tests: the inputs of the frozen test vectors
//! in `docs/receipts.md`. Changing anything here changes the vectors.
#![allow(dead_code, unreachable_pub)]

use ferry_receipts::{
    CoSignedReceipt, NetworkId, PublicKey, ReceiptBody, SessionAccept, SessionId, SessionOffer,
    Signature, SignedReceipt, SigningKey, Voucher, VoucherId,
};

pub const LEDGER_SEED: [u8; 32] = [0x01; 32];
pub const RELAY_SEED: [u8; 32] = [0x02; 32];
pub const CLIENT_SEED: [u8; 32] = [0x03; 32];
pub const NETWORK_ID: NetworkId = NetworkId(*b"ferry-testnet-01");
/// 2026-01-01T00:00:00Z.
pub const T0: u64 = 1_767_225_600;

pub fn ledger() -> SigningKey {
    SigningKey::from_seed(&LEDGER_SEED)
}
pub fn relay() -> SigningKey {
    SigningKey::from_seed(&RELAY_SEED)
}
pub fn client() -> SigningKey {
    SigningKey::from_seed(&CLIENT_SEED)
}

pub fn counting<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

pub fn voucher() -> Voucher {
    Voucher {
        network_id: NETWORK_ID,
        ledger_key: PublicKey([0; 32]),
        client_key: client().public_key(),
        nonce: counting(0x00),
        budget_micros: 15_000_000,
        max_price_micros_per_gib: 2_000_000,
        issued_at: T0,
        expires_at: T0 + 30 * 86_400,
        signature: Signature::ZERO,
    }
    .sign(&ledger())
}

pub fn offer() -> SessionOffer {
    SessionOffer {
        network_id: NETWORK_ID,
        relay_key: relay().public_key(),
        client_key: PublicKey([0; 32]),
        client_wg_key: counting(0x40),
        nonce: counting(0x10),
        created_at: T0 + 60,
        voucher: voucher(),
        signature: Signature::ZERO,
    }
    .sign(&client())
}

pub fn accept() -> SessionAccept {
    let v = voucher();
    SessionAccept {
        network_id: NETWORK_ID,
        relay_key: PublicKey([0; 32]),
        client_key: client().public_key(),
        session_id: SessionId(counting(0x20)),
        voucher_id: v.id(),
        started_at: T0 + 61,
        price_micros_per_gib: 1_500_000,
        signature: Signature::ZERO,
    }
    .sign(&relay())
}

pub fn receipt_body() -> ReceiptBody {
    ReceiptBody::for_session(&accept(), 3, 123_456_789, 987_654_321, T0 + 361)
}

pub fn signed_receipt() -> SignedReceipt {
    receipt_body().sign(&relay())
}

pub fn cosigned_receipt() -> CoSignedReceipt {
    signed_receipt().cosign(&client(), 123_450_000, 987_650_000, T0 + 362)
}

pub fn refusal() -> ferry_receipts::ReceiptRefusal {
    // The client counted 123 450 000 down where the relay claims 987 654 321: over-claim (1).
    ferry_receipts::ReceiptRefusal {
        receipt: signed_receipt(),
        client_observed_up: 123_450_000,
        client_observed_down: 123_450_000,
        reason: 1,
        refused_at: T0 + 362,
        client_signature: Signature::ZERO,
    }
    .sign(&client())
}

pub fn zero_voucher_id() -> VoucherId {
    VoucherId([0; 32])
}

pub fn address() -> ferry_receipts::SessionAddress {
    ferry_receipts::SessionAddress::for_session(
        &offer(),
        &accept(),
        Some(std::net::Ipv4Addr::new(10, 77, 0, 2)),
        Some("fd77::2".parse().unwrap()),
    )
    .sign(&relay())
}

pub fn reject() -> ferry_receipts::SessionReject {
    // Reason 6: the control protocol's "relay busy".
    ferry_receipts::SessionReject::for_offer(NETWORK_ID, &offer(), 6).sign(&relay())
}

pub fn descriptor() -> ferry_receipts::RelayDescriptor {
    ferry_receipts::RelayDescriptor {
        network_id: NETWORK_ID,
        relay_key: PublicKey([0; 32]),
        wg_key: counting(0x50),
        ipv4: Some("192.0.2.10:51820".parse().unwrap()),
        ipv6: Some("[2001:db8::10]:51820".parse().unwrap()),
        hello_port: 51821,
        price_micros_per_gib: 1_250_000,
        limits: ferry_receipts::AdvertisedLimits {
            max_mbit: 50,
            monthly_quota_gib: 500,
            schedule: ferry_receipts::AdvertisedLimits::ALWAYS,
            blocked_ports: vec![25, 465, 587],
        },
        country: *b"DE",
        region: "Berlin".into(),
        software: "ferry-agent/0.1.0".into(),
        abuse_contact: "abuse@example.org".into(),
        issued_at: T0 + 600,
        expires_at: T0 + 600 + 1800,
        signature: Signature::ZERO,
    }
    .sign(&relay())
}

pub fn annotation() -> ferry_receipts::DirectoryAnnotation {
    ferry_receipts::DirectoryAnnotation {
        network_id: NETWORK_ID,
        ledger_key: PublicKey([0; 32]),
        relay_key: relay().public_key(),
        descriptor_id: descriptor().id(),
        annotated_at: T0 + 700,
        first_seen: T0 + 601,
        last_seen: T0 + 601,
        reachable: ferry_receipts::REACHABLE_V4,
        probe_rtt_micros: 1_234,
        probes_ok: 3,
        probes_total: 4,
        score: 640,
        paid_bytes: 5 << 30,
        completed_sessions: 12,
        paying_clients: 7,
        refusals: 1,
        signature: Signature::ZERO,
    }
    .sign(&ledger())
}

pub fn probe_challenge() -> ferry_receipts::ProbeChallenge {
    ferry_receipts::ProbeChallenge {
        network_id: NETWORK_ID,
        ledger_key: PublicKey([0; 32]),
        relay_key: relay().public_key(),
        nonce: counting(0x60),
        issued_at: T0 + 602,
        signature: Signature::ZERO,
    }
    .sign(&ledger())
}

pub fn probe_response() -> ferry_receipts::ProbeResponse {
    probe_challenge().response().sign(&relay())
}
