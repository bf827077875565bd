//! Property tests of the wire format: round trips, strict framing, and that no single
//! changed byte or field survives verification. `CumulativeState` is in `state.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferry_receipts::{
    CoSignedReceipt, DecodeError, NetworkId, PublicKey, ReceiptBody, SessionAccept, SessionId,
    SessionOffer, Signature, SignedReceipt, Voucher, VoucherId,
};
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------- strategies

fn arr16() -> impl Strategy<Value = [u8; 16]> {
    any::<[u8; 16]>()
}
fn arr32() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}
fn sig() -> impl Strategy<Value = Signature> {
    (arr32(), arr32()).prop_map(|(a, b)| {
        let mut s = [0u8; 64];
        s[..32].copy_from_slice(&a);
        s[32..].copy_from_slice(&b);
        Signature(s)
    })
}

/// Any voucher the decoder accepts (`expires_at >= issued_at`), with an arbitrary signature.
fn arb_voucher() -> impl Strategy<Value = Voucher> {
    (
        arr16(),
        arr32(),
        arr32(),
        arr16(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        sig(),
    )
        .prop_map(|(n, l, c, nonce, allowance, price, t1, t2, s)| Voucher {
            network_id: NetworkId(n),
            ledger_key: PublicKey(l),
            client_key: PublicKey(c),
            nonce,
            budget_micros: allowance,
            max_price_micros_per_gib: price,
            issued_at: t1.min(t2),
            expires_at: t1.max(t2),
            signature: s,
        })
}

fn arb_offer() -> impl Strategy<Value = SessionOffer> {
    (
        arr16(),
        arr32(),
        arr32(),
        arr32(),
        arr16(),
        any::<u64>(),
        arb_voucher(),
        sig(),
    )
        .prop_map(|(n, r, c, wg, nonce, t, voucher, s)| SessionOffer {
            network_id: NetworkId(n),
            relay_key: PublicKey(r),
            client_key: PublicKey(c),
            client_wg_key: wg,
            nonce,
            created_at: t,
            voucher,
            signature: s,
        })
}

fn arb_accept() -> impl Strategy<Value = SessionAccept> {
    (
        arr16(),
        arr32(),
        arr32(),
        arr16(),
        arr32(),
        any::<u64>(),
        any::<u64>(),
        sig(),
    )
        .prop_map(|(n, r, c, sid, vid, t, price, s)| SessionAccept {
            network_id: NetworkId(n),
            relay_key: PublicKey(r),
            client_key: PublicKey(c),
            session_id: SessionId(sid),
            voucher_id: VoucherId(vid),
            started_at: t,
            price_micros_per_gib: price,
            signature: s,
        })
}

fn arb_body() -> impl Strategy<Value = ReceiptBody> {
    (
        (arr16(), arr32(), arr32(), arr16(), arr32()),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |((n, r, c, sid, vid), (seq, up, down, st, it, price))| ReceiptBody {
                network_id: NetworkId(n),
                relay_key: PublicKey(r),
                client_key: PublicKey(c),
                session_id: SessionId(sid),
                voucher_id: VoucherId(vid),
                seq,
                bytes_up: up,
                bytes_down: down,
                session_started_at: st,
                issued_at: it,
                price_micros_per_gib: price,
            },
        )
}

fn arb_signed() -> impl Strategy<Value = SignedReceipt> {
    (arb_body(), sig()).prop_map(|(body, relay_signature)| SignedReceipt {
        body,
        relay_signature,
    })
}

fn arb_refusal() -> impl Strategy<Value = ferry_receipts::ReceiptRefusal> {
    (
        arb_signed(),
        any::<(u64, u64, u64)>(),
        1..=ferry_receipts::MAX_REFUSAL_REASON,
        sig(),
    )
        .prop_map(
            |(receipt, (u, d, t), reason, s)| ferry_receipts::ReceiptRefusal {
                receipt,
                client_observed_up: u,
                client_observed_down: d,
                reason,
                refused_at: t,
                client_signature: s,
            },
        )
}

fn arb_cosigned() -> impl Strategy<Value = CoSignedReceipt> {
    (arb_signed(), any::<(u64, u64, u64)>(), sig()).prop_map(|(receipt, (u, d, t), s)| {
        CoSignedReceipt {
            receipt,
            client_observed_up: u,
            client_observed_down: d,
            cosigned_at: t,
            client_signature: s,
        }
    })
}

/// Every message type, encoded, with the length its type declares.
fn arb_encoding() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        arb_voucher().prop_map(|m| m.encode()),
        arb_offer().prop_map(|m| m.encode()),
        arb_accept().prop_map(|m| m.encode()),
        arb_signed().prop_map(|m| m.encode()),
        arb_cosigned().prop_map(|m| m.encode()),
    ]
}

/// Decodes as whichever type the bytes claim to be; `Ok(())` if that decode succeeds.
fn decode_any(b: &[u8]) -> Result<(), DecodeError> {
    match b.get(1) {
        Some(0x01) => Voucher::decode(b).map(drop),
        Some(0x02) => SessionOffer::decode(b).map(drop),
        Some(0x03) => SessionAccept::decode(b).map(drop),
        Some(0x11) => CoSignedReceipt::decode(b).map(drop),
        _ => SignedReceipt::decode(b).map(drop),
    }
}

// ------------------------------------------- properly signed, arbitrary content

/// A voucher signed by the fixture ledger for the fixture client, with arbitrary terms.
fn signed_voucher(nonce: [u8; 16], allowance: u64, price: u64, t: u64, ttl: u32) -> Voucher {
    Voucher {
        network_id: NETWORK_ID,
        ledger_key: PublicKey([0; 32]),
        client_key: client().public_key(),
        nonce,
        budget_micros: allowance,
        max_price_micros_per_gib: price,
        issued_at: t,
        expires_at: t.saturating_add(u64::from(ttl)),
        signature: Signature::ZERO,
    }
    .sign(&ledger())
}

fn voucher_params() -> impl Strategy<Value = Voucher> {
    (
        arr16(),
        any::<u64>(),
        any::<u64>(),
        0..u64::MAX / 2,
        any::<u32>(),
    )
        .prop_map(|(n, a, p, t, ttl)| signed_voucher(n, a, p, t, ttl))
}

fn signed_offer() -> impl Strategy<Value = SessionOffer> {
    (voucher_params(), arr32(), arr16()).prop_map(|(voucher, wg, nonce)| {
        SessionOffer {
            network_id: NETWORK_ID,
            relay_key: relay().public_key(),
            client_key: PublicKey([0; 32]),
            client_wg_key: wg,
            nonce,
            created_at: voucher.issued_at,
            voucher,
            signature: Signature::ZERO,
        }
        .sign(&client())
    })
}

fn signed_accept() -> impl Strategy<Value = SessionAccept> {
    (arr16(), arr32(), any::<u64>(), any::<u64>()).prop_map(|(sid, vid, t, price)| {
        SessionAccept {
            network_id: NETWORK_ID,
            relay_key: PublicKey([0; 32]),
            client_key: client().public_key(),
            session_id: SessionId(sid),
            voucher_id: VoucherId(vid),
            started_at: t,
            price_micros_per_gib: price,
            signature: Signature::ZERO,
        }
        .sign(&relay())
    })
}

fn relay_signed_receipt() -> impl Strategy<Value = SignedReceipt> {
    (signed_accept(), any::<(u64, u64, u64, u64)>()).prop_map(|(a, (seq, up, down, t))| {
        ReceiptBody::for_session(&a, seq, up, down, t).sign(&relay())
    })
}

fn client_cosigned_receipt() -> impl Strategy<Value = CoSignedReceipt> {
    (relay_signed_receipt(), any::<(u64, u64, u64)>())
        .prop_map(|(r, (u, d, t))| r.cosign(&client(), u, d, t))
}

fn flip(bytes: &[u8], pos: Index, xor: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let i = pos.index(b.len());
    b[i] ^= xor;
    b
}

/// Changes one byte of `a` (the one `pos` picks) so the result always differs.
fn mutate<const N: usize>(a: [u8; N], pos: Index, xor: u8) -> [u8; N] {
    let mut a = a;
    a[pos.index(N)] ^= xor;
    a
}

proptest! {
    // ------------------------------------------------------------ round trips

    #[test]
    fn voucher_round_trips(m in arb_voucher()) {
        let b = m.encode();
        prop_assert_eq!(b.len(), Voucher::LEN);
        prop_assert_eq!(Voucher::decode(&b).unwrap(), m);
    }

    #[test]
    fn session_offer_round_trips(m in arb_offer()) {
        let b = m.encode();
        prop_assert_eq!(b.len(), SessionOffer::LEN);
        prop_assert_eq!(SessionOffer::decode(&b).unwrap(), m);
    }

    #[test]
    fn session_accept_round_trips(m in arb_accept()) {
        let b = m.encode();
        prop_assert_eq!(b.len(), SessionAccept::LEN);
        prop_assert_eq!(SessionAccept::decode(&b).unwrap(), m);
    }

    #[test]
    fn signed_receipt_round_trips(m in arb_signed()) {
        let b = m.encode();
        prop_assert_eq!(b.len(), SignedReceipt::LEN);
        let body = m.body.encode();
        prop_assert_eq!(&b[..ReceiptBody::LEN], body.as_slice());
        prop_assert_eq!(SignedReceipt::decode(&b).unwrap(), m);
    }

    #[test]
    fn cosigned_receipt_round_trips(m in arb_cosigned()) {
        let b = m.encode();
        prop_assert_eq!(b.len(), CoSignedReceipt::LEN);
        prop_assert_eq!(CoSignedReceipt::decode(&b).unwrap(), m);
    }

    #[test]
    fn receipt_refusal_round_trips_and_is_no_co_signed_receipt(m in arb_refusal()) {
        let b = m.encode();
        prop_assert_eq!(b.len(), ferry_receipts::ReceiptRefusal::LEN);
        prop_assert_eq!(ferry_receipts::ReceiptRefusal::decode(&b).unwrap(), m);
        prop_assert!(CoSignedReceipt::decode(&b).is_err());
        prop_assert_eq!(ferry_receipts::fuzzing::check_decode(&b), 1);
    }

    // ----------------------------------------------- framing is strict

    #[test]
    fn trailing_bytes_are_rejected(
        b in arb_encoding(),
        extra in prop::collection::vec(any::<u8>(), 1..32),
    ) {
        let mut long = b.clone();
        long.extend_from_slice(&extra);
        prop_assert_eq!(decode_any(&long), Err(DecodeError::TrailingBytes(extra.len())));
    }

    #[test]
    fn truncated_input_is_rejected(b in arb_encoding(), cut in any::<Index>()) {
        let short = &b[..cut.index(b.len())];
        let is_truncated = matches!(decode_any(short), Err(DecodeError::Truncated { .. }));
        prop_assert!(is_truncated);
    }

    #[test]
    fn unknown_versions_are_rejected(b in arb_encoding(), v in 0u8..=255) {
        // Every version but 2, v1 (the fixed-price format) included.
        let v = if v == ferry_receipts::WIRE_VERSION { 1 } else { v };
        let mut b = b;
        b[0] = v;
        prop_assert_eq!(decode_any(&b), Err(DecodeError::UnknownVersion(v)));
    }

    #[test]
    fn a_message_decodes_as_no_other_type(b in arb_encoding()) {
        let decoders: [fn(&[u8]) -> bool; 5] = [
            |b| Voucher::decode(b).is_ok(),
            |b| SessionOffer::decode(b).is_ok(),
            |b| SessionAccept::decode(b).is_ok(),
            |b| SignedReceipt::decode(b).is_ok(),
            |b| CoSignedReceipt::decode(b).is_ok(),
        ];
        prop_assert_eq!(decoders.iter().filter(|d| d(&b)).count(), 1);
        prop_assert_eq!(ferry_receipts::fuzzing::check_decode(&b), 1);
    }

    // ----------------------------------- any flipped byte fails decode or verify

    #[test]
    fn flipped_voucher_byte_fails(v in voucher_params(), pos in any::<Index>(), x in 1u8..=255) {
        let ledger_key = ledger().public_key();
        prop_assert!(v.verify(&NETWORK_ID, &ledger_key, v.issued_at).is_ok());
        let b = flip(&v.encode(), pos, x);
        if let Ok(m) = Voucher::decode(&b) {
            prop_assert!(m.verify(&NETWORK_ID, &ledger_key, m.issued_at).is_err());
        }
    }

    #[test]
    fn flipped_offer_byte_fails(o in signed_offer(), pos in any::<Index>(), x in 1u8..=255) {
        let (relay_key, ledger_key) = (relay().public_key(), ledger().public_key());
        let t = o.created_at;
        prop_assert!(o.verify(&NETWORK_ID, &relay_key, &ledger_key, t).is_ok());
        let b = flip(&o.encode(), pos, x);
        if let Ok(m) = SessionOffer::decode(&b) {
            prop_assert!(m.verify(&NETWORK_ID, &relay_key, &ledger_key, t).is_err());
        }
    }

    #[test]
    fn flipped_accept_byte_fails(a in signed_accept(), pos in any::<Index>(), x in 1u8..=255) {
        prop_assert!(a.verify(&NETWORK_ID).is_ok());
        if let Ok(m) = SessionAccept::decode(&flip(&a.encode(), pos, x)) {
            prop_assert!(m.verify(&NETWORK_ID).is_err());
        }
    }

    #[test]
    fn flipped_receipt_byte_fails(r in relay_signed_receipt(), pos in any::<Index>(), x in 1u8..=255) {
        prop_assert!(r.verify(&NETWORK_ID).is_ok());
        if let Ok(m) = SignedReceipt::decode(&flip(&r.encode(), pos, x)) {
            prop_assert!(m.verify(&NETWORK_ID).is_err());
        }
    }

    #[test]
    fn flipped_cosigned_byte_fails(c in client_cosigned_receipt(), pos in any::<Index>(), x in 1u8..=255) {
        prop_assert!(c.verify(&NETWORK_ID).is_ok());
        if let Ok(m) = CoSignedReceipt::decode(&flip(&c.encode(), pos, x)) {
            prop_assert!(m.verify(&NETWORK_ID).is_err());
        }
    }

    // ---------------------------------- changing any signed field breaks verification

    #[test]
    fn mutated_receipt_fields_fail_verification(
        c in client_cosigned_receipt(),
        field in 0usize..14,
        pos in any::<Index>(),
        x in 1u8..=255,
        delta in 1u64..,
    ) {
        let mut m = c;
        let b = &mut m.receipt.body;
        match field {
            0 => b.network_id = NetworkId(mutate(b.network_id.0, pos, x)),
            1 => b.relay_key = PublicKey(mutate(b.relay_key.0, pos, x)),
            2 => b.client_key = PublicKey(mutate(b.client_key.0, pos, x)),
            3 => b.session_id = SessionId(mutate(b.session_id.0, pos, x)),
            4 => b.voucher_id = VoucherId(mutate(b.voucher_id.0, pos, x)),
            5 => b.seq = b.seq.wrapping_add(delta),
            6 => b.bytes_up = b.bytes_up.wrapping_add(delta),
            7 => b.bytes_down = b.bytes_down.wrapping_add(delta),
            8 => b.session_started_at = b.session_started_at.wrapping_add(delta),
            9 => b.issued_at = b.issued_at.wrapping_add(delta),
            10 => b.price_micros_per_gib = b.price_micros_per_gib.wrapping_add(delta),
            11 => m.client_observed_up = m.client_observed_up.wrapping_add(delta),
            12 => m.client_observed_down = m.client_observed_down.wrapping_add(delta),
            _ => m.cosigned_at = m.cosigned_at.wrapping_add(delta),
        }
        prop_assert_ne!(m, c);
        // Whichever network the verifier expects, the mutated receipt must not verify.
        prop_assert!(m.verify(&NETWORK_ID).is_err());
        prop_assert!(m.verify(&m.receipt.body.network_id).is_err());
        if field <= 10 {
            prop_assert!(m.receipt.verify(&m.receipt.body.network_id).is_err());
        }
    }

    #[test]
    fn mutated_offer_fields_fail_verification(
        o in signed_offer(),
        field in 0usize..14,
        pos in any::<Index>(),
        x in 1u8..=255,
        delta in 1u64..,
    ) {
        let mut m = o.clone();
        let v = &mut m.voucher;
        match field {
            0 => m.network_id = NetworkId(mutate(m.network_id.0, pos, x)),
            1 => m.relay_key = PublicKey(mutate(m.relay_key.0, pos, x)),
            2 => m.client_key = PublicKey(mutate(m.client_key.0, pos, x)),
            3 => m.client_wg_key = mutate(m.client_wg_key, pos, x),
            4 => m.nonce = mutate(m.nonce, pos, x),
            5 => m.created_at = m.created_at.wrapping_add(delta),
            6 => v.network_id = NetworkId(mutate(v.network_id.0, pos, x)),
            7 => v.ledger_key = PublicKey(mutate(v.ledger_key.0, pos, x)),
            8 => v.client_key = PublicKey(mutate(v.client_key.0, pos, x)),
            9 => v.nonce = mutate(v.nonce, pos, x),
            10 => v.budget_micros = v.budget_micros.wrapping_add(delta),
            11 => v.max_price_micros_per_gib = v.max_price_micros_per_gib.wrapping_add(delta),
            12 => v.issued_at = v.issued_at.wrapping_sub(delta),
            _ => v.expires_at = v.expires_at.wrapping_add(delta),
        }
        prop_assert_ne!(&m, &o);
        let (r, l) = (relay().public_key(), ledger().public_key());
        let t = o.created_at;
        prop_assert!(m.verify(&NETWORK_ID, &r, &l, t).is_err());
        prop_assert!(m.verify(&m.network_id, &m.relay_key, &m.voucher.ledger_key, t).is_err());
    }

    #[test]
    fn mutated_accept_fields_fail_verification(
        a in signed_accept(),
        field in 0usize..7,
        pos in any::<Index>(),
        x in 1u8..=255,
        delta in 1u64..,
    ) {
        let mut m = a;
        match field {
            0 => m.network_id = NetworkId(mutate(m.network_id.0, pos, x)),
            1 => m.relay_key = PublicKey(mutate(m.relay_key.0, pos, x)),
            2 => m.client_key = PublicKey(mutate(m.client_key.0, pos, x)),
            3 => m.session_id = SessionId(mutate(m.session_id.0, pos, x)),
            4 => m.voucher_id = VoucherId(mutate(m.voucher_id.0, pos, x)),
            5 => m.started_at = m.started_at.wrapping_add(delta),
            _ => m.price_micros_per_gib = m.price_micros_per_gib.wrapping_add(delta),
        }
        prop_assert!(m.verify(&NETWORK_ID).is_err());
        prop_assert!(m.verify(&m.network_id).is_err());
    }

    #[test]
    fn voucher_checks_network_key_and_expiry(v in voucher_params(), other in arr16(), late in 1u64..1000) {
        let l = ledger().public_key();
        prop_assert!(v.verify(&NETWORK_ID, &l, v.expires_at).is_ok());
        prop_assume!(v.expires_at < u64::MAX - late);
        prop_assert_eq!(
            v.verify(&NETWORK_ID, &l, v.expires_at + late),
            Err(ferry_receipts::VerifyError::Expired)
        );
        prop_assume!(NetworkId(other) != NETWORK_ID);
        prop_assert!(v.verify(&NetworkId(other), &l, v.issued_at).is_err());
        prop_assert!(v.verify(&NETWORK_ID, &relay().public_key(), v.issued_at).is_err());
    }
}

/// Ed25519 group order L, little-endian.
const ED25519_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Adds L to the signature's S half: the same signature mathematically, a different encoding.
fn malleate(sig: Signature) -> Signature {
    let mut out = sig;
    let mut carry = 0u16;
    for (i, l) in ED25519_L.iter().enumerate() {
        let sum = u16::from(sig.0[32 + i]) + u16::from(*l) + carry;
        out.0[32 + i] = sum.to_le_bytes()[0];
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
    out
}

#[test]
fn non_canonical_signatures_are_rejected() {
    // A malleable signature would give one voucher two ids (the id hashes the signature).
    let mut v = voucher();
    v.signature = malleate(v.signature);
    assert_ne!(v.id(), voucher().id());
    assert_eq!(
        v.verify(&NETWORK_ID, &ledger().public_key(), T0),
        Err(ferry_receipts::VerifyError::BadLedgerSignature)
    );
    let mut r = signed_receipt();
    r.relay_signature = malleate(r.relay_signature);
    assert!(r.verify(&NETWORK_ID).is_err());
}
