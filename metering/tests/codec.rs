//! Control-protocol framing: round trips, garbage never panics, stream reassembly.
#![allow(clippy::unwrap_used)]

use ferry_metering::{
    FrameError, HEADER_LEN, Message, ReceiptRejectReason, SessionRejectReason, decode,
    decode_prefix, encode,
};
use ferry_receipts::{
    NetworkId, PublicKey, ReceiptBody, SessionAccept, SessionAddress, SessionId, SessionOffer,
    SessionReject, Signature, SigningKey, Voucher, VoucherId,
};
use proptest::prelude::*;

fn body(seq: u64, up: u64, down: u64, ts: u64) -> ReceiptBody {
    ReceiptBody {
        network_id: NetworkId([1; 16]),
        relay_key: PublicKey([2; 32]),
        client_key: PublicKey([3; 32]),
        session_id: SessionId([4; 16]),
        voucher_id: VoucherId([5; 32]),
        seq,
        bytes_up: up,
        bytes_down: down,
        session_started_at: ts,
        issued_at: ts,
        price_micros_per_gib: 7,
    }
}

fn arb_message() -> impl Strategy<Value = Message> {
    let key = SigningKey::from_seed(&[8; 32]);
    let receipt = (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>())
        .prop_map(move |(s, u, d, t)| body(s, u, d, t).sign(&SigningKey::from_seed(&[8; 32])));
    let voucher =
        (any::<u64>(), any::<u64>(), any::<[u8; 16]>()).prop_map(|(a, i, nonce)| Voucher {
            network_id: NetworkId([1; 16]),
            ledger_key: PublicKey([9; 32]),
            client_key: PublicKey([3; 32]),
            nonce,
            budget_micros: a,
            max_price_micros_per_gib: 3,
            issued_at: i / 2,
            expires_at: i / 2 + 100,
            signature: Signature([6; 64]),
        });
    let _ = key;
    prop_oneof![
        (voucher, any::<[u8; 32]>(), any::<u64>()).prop_map(|(voucher, wg, t)| {
            Message::Hello(SessionOffer {
                network_id: NetworkId([1; 16]),
                relay_key: PublicKey([2; 32]),
                client_key: PublicKey([3; 32]),
                client_wg_key: wg,
                nonce: [4; 16],
                created_at: t,
                voucher,
                signature: Signature([5; 64]),
            })
        }),
        (any::<u64>(), any::<[u8; 16]>()).prop_map(|(t, sid)| Message::Accept(SessionAccept {
            network_id: NetworkId([1; 16]),
            relay_key: PublicKey([2; 32]),
            client_key: PublicKey([3; 32]),
            session_id: SessionId(sid),
            voucher_id: VoucherId([5; 32]),
            started_at: t,
            price_micros_per_gib: t / 3,
            signature: Signature([7; 64]),
        })),
        (1u8..=7, any::<[u8; 16]>()).prop_map(|(c, nonce)| Message::Reject(SessionReject {
            network_id: NetworkId([1; 16]),
            relay_key: PublicKey([2; 32]),
            client_key: PublicKey([3; 32]),
            offer_nonce: nonce,
            reason: c,
            signature: Signature([7; 64]),
        })),
        receipt.clone().prop_map(Message::Receipt),
        receipt.clone().prop_map(Message::FinalReceipt),
        (any::<[u8; 16]>(), any::<u64>()).prop_map(|(nonce, t)| {
            Message::Probe(ferry_receipts::ProbeChallenge {
                network_id: NetworkId([1; 16]),
                ledger_key: PublicKey([9; 32]),
                relay_key: PublicKey([2; 32]),
                nonce,
                issued_at: t,
                signature: Signature([6; 64]),
            })
        }),
        any::<[u8; 16]>().prop_map(|nonce| {
            Message::ProbeReply(ferry_receipts::ProbeResponse {
                network_id: NetworkId([1; 16]),
                relay_key: PublicKey([2; 32]),
                nonce,
                signature: Signature([6; 64]),
            })
        }),
        (receipt, any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(r, u, d, t)| {
            Message::CoSigned(r.cosign(&SigningKey::from_seed(&[3; 32]), u, d, t))
        }),
        (
            (any::<u64>(), any::<u64>())
                .prop_map(|(s, u)| body(s, u, u / 2, 9).sign(&SigningKey::from_seed(&[8; 32]))),
            any::<u64>()
        )
            .prop_map(|(r, t)| Message::Resync(r.cosign(
                &SigningKey::from_seed(&[3; 32]),
                1,
                2,
                t
            ))),
        (any::<u64>(), 1u8..=5).prop_map(|(seq, c)| Message::ReceiptRejected {
            seq,
            reason: match c {
                1 => ReceiptRejectReason::OverClaim,
                2 => ReceiptRejectReason::NonMonotonic,
                3 => ReceiptRejectReason::WrongSession,
                4 => ReceiptRejectReason::BadSignature,
                _ => ReceiptRejectReason::OutOfRange,
            },
        }),
        any::<u64>().prop_map(|seq| Message::Ack { seq }),
        (any::<[u8; 4]>(), any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(a, b, n)| {
            Message::Address(SessionAddress {
                network_id: NetworkId([1; 16]),
                relay_key: PublicKey([2; 32]),
                offer_nonce: n,
                session_id: SessionId([4; 16]),
                client_wg_key: [5; 32],
                v4: a.into(),
                v6: b.into(),
                signature: Signature([7; 64]),
            })
        }),
        Just(Message::Close),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_message_round_trips(m in arb_message()) {
        let b = encode(&m);
        prop_assert_eq!(decode(&b).unwrap(), m);
    }

    #[test]
    fn decode_never_panics_on_garbage(b in proptest::collection::vec(any::<u8>(), 0..1200)) {
        let _ = decode(&b);
        let _ = decode_prefix(&b);
    }

    #[test]
    fn mutated_frames_never_panic_and_never_decode_to_a_different_length(
        m in arb_message(), idx in any::<prop::sample::Index>(), byte in any::<u8>()
    ) {
        let mut b = encode(&m);
        let i = idx.index(b.len());
        b[i] = byte;
        if let Ok((_, used)) = decode_prefix(&b) {
            prop_assert_eq!(used, b.len());
        }
    }

    #[test]
    fn a_stream_of_frames_splits_back_into_the_same_messages(
        ms in proptest::collection::vec(arb_message(), 1..6), cut in any::<prop::sample::Index>()
    ) {
        let stream: Vec<u8> = ms.iter().flat_map(encode).collect();
        let mut out = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let (m, used) = decode_prefix(rest).unwrap();
            out.push(m);
            rest = &rest[used..];
        }
        prop_assert_eq!(&out, &ms);
        // Any strict prefix of the first frame is `Incomplete`, never an error or a message.
        let first = encode(&ms[0]);
        let c = cut.index(first.len());
        let incomplete = matches!(decode_prefix(&first[..c]), Err(FrameError::Incomplete { .. }));
        prop_assert!(incomplete);
    }
}

#[test]
fn trailing_bytes_unknown_types_and_bad_lengths_are_rejected() {
    let mut b = encode(&Message::Ack { seq: 5 });
    b.push(0);
    assert_eq!(decode(&b), Err(FrameError::TrailingBytes(1)));
    assert_eq!(decode(&[0x7f, 0, 0]), Err(FrameError::UnknownType(0x7f)));
    assert!(matches!(
        decode(&[0x13, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        Err(FrameError::BadLength { .. })
    ));
    // A signed Reject with an undefined reason code does not decode.
    let mut reject = SessionReject {
        network_id: NetworkId([1; 16]),
        relay_key: PublicKey([2; 32]),
        client_key: PublicKey([3; 32]),
        offer_nonce: [4; 16],
        reason: 6,
        signature: Signature([7; 64]),
    };
    let ok = encode(&Message::Reject(reject.clone()));
    assert_eq!(ok[0], 0x05);
    assert_eq!(
        ferry_metering::reject_reason(&match decode(&ok).unwrap() {
            Message::Reject(r) => r,
            m => panic!("{m:?}"),
        }),
        SessionRejectReason::Busy
    );
    // Every defined code decodes to its reason (9, 10: the owner's quota and schedule).
    for (code, want) in [
        (8, SessionRejectReason::NotSharing),
        (9, SessionRejectReason::QuotaReached),
        (10, SessionRejectReason::OutsideSchedule),
    ] {
        reject.reason = code;
        let Ok(Message::Reject(r)) = decode(&encode(&Message::Reject(reject.clone()))) else {
            panic!("code {code} does not decode");
        };
        assert_eq!(ferry_metering::reject_reason(&r), want);
        assert_eq!(want.code(), code);
    }
    for code in [0, 11, 255] {
        reject.reason = code;
        assert_eq!(
            decode(&encode(&Message::Reject(reject.clone()))),
            Err(FrameError::UnknownReason(code))
        );
    }
    assert_eq!(encode(&Message::Close), vec![0x20, 0, 0]);
    assert_eq!(encode(&Message::Ack { seq: 1 }).len(), HEADER_LEN + 8);
}

#[test]
fn control_protocol_v1_unsigned_reject_and_address_are_refused_by_name() {
    // Exactly what a v1 relay sends: Reject "relay busy" (type 0x03, 1-byte reason) and
    // Address 10.77.0.2 / :: (type 0x04, 20 bytes). v2 refuses both, saying why.
    let v1_reject = [0x03, 0x00, 0x01, 0x06];
    let mut v1_address = vec![0x04, 0x00, 0x14, 10, 77, 0, 2];
    v1_address.extend_from_slice(&[0; 16]);
    assert_eq!(ferry_metering::CONTROL_VERSION, 2);
    for (frame, ty) in [(&v1_reject[..], 0x03), (&v1_address[..], 0x04)] {
        let e = decode(frame).unwrap_err();
        assert_eq!(e, FrameError::Retired(ty));
        assert!(e.to_string().contains("older ferry-agent"), "{e}");
        assert_eq!(decode_prefix(frame).unwrap_err(), FrameError::Retired(ty));
    }
}
