//! Property tests of the directory messages: every valid descriptor round-trips through its
//! one encoding, any single changed byte either fails to decode or fails verification, and
//! truncated or extended encodings are refused.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferry_receipts::{
    AdvertisedLimits, DirectoryAnnotation, NetworkId, PublicKey, REACHABLE_V4, REACHABLE_V6,
    RelayDescriptor, Signature,
};
use proptest::prelude::*;
use proptest::sample::Index;

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(0x20u8..=0x7e, 0..=max).prop_map(|b| String::from_utf8(b).unwrap())
}

fn ports() -> impl Strategy<Value = Vec<u16>> {
    proptest::collection::btree_set(1u16.., 0..=ferry_receipts::MAX_BLOCKED_PORTS)
        .prop_map(|s| s.into_iter().collect())
}

/// Any descriptor the format allows, signed by the fixture relay.
fn arb_descriptor() -> impl Strategy<Value = RelayDescriptor> {
    let v4 = proptest::option::of(
        (1u32.., 1u16..).prop_map(|(a, p)| std::net::SocketAddrV4::new(a.into(), p)),
    );
    let v6 = proptest::option::of(
        (1u128.., 1u16..).prop_map(|(a, p)| std::net::SocketAddrV6::new(a.into(), p, 0, 0)),
    );
    (
        (v4, v6, any::<[u8; 32]>(), 1u16.., any::<u64>()),
        (any::<u32>(), any::<u32>(), any::<[u8; 21]>(), ports()),
        (b'A'..=b'Z', b'A'..=b'Z', text(32), text(32), text(64)),
        (any::<u64>(), 1u64..=1 << 40),
    )
        .prop_filter("one endpoint", |((v4, v6, ..), ..)| {
            v4.is_some() || v6.is_some()
        })
        .prop_map(
            |(
                (ipv4, ipv6, wg_key, hello_port, price),
                (mbit, quota, schedule, blocked),
                (c0, c1, region, software, abuse),
                (issued, ttl),
            )| {
                RelayDescriptor {
                    network_id: NETWORK_ID,
                    relay_key: PublicKey([0; 32]),
                    wg_key,
                    ipv4,
                    ipv6,
                    hello_port,
                    price_micros_per_gib: price,
                    limits: AdvertisedLimits {
                        max_mbit: mbit,
                        monthly_quota_gib: quota,
                        schedule,
                        blocked_ports: blocked,
                    },
                    country: [c0, c1],
                    region,
                    software,
                    abuse_contact: abuse,
                    issued_at: issued,
                    expires_at: issued.saturating_add(ttl),
                    signature: Signature::ZERO,
                }
            },
        )
        .prop_filter("expiry after issue", |d| d.expires_at > d.issued_at)
        .prop_map(|d| d.sign(&relay()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn descriptors_round_trip_and_verify(d in arb_descriptor()) {
        let bytes = d.encode();
        prop_assert!(bytes.len() >= RelayDescriptor::MIN_LEN && bytes.len() <= RelayDescriptor::MAX_LEN);
        let back = RelayDescriptor::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &d);
        prop_assert_eq!(back.encode(), bytes);
        back.verify(&NETWORK_ID, d.issued_at, 0).unwrap();
    }

    #[test]
    fn a_flipped_descriptor_byte_never_verifies(d in arb_descriptor(), pos in any::<Index>(), x in 1u8..=255) {
        let mut bytes = d.encode();
        let i = pos.index(bytes.len());
        bytes[i] ^= x;
        if let Ok(changed) = RelayDescriptor::decode(&bytes) {
            prop_assert!(changed.verify(&NETWORK_ID, changed.issued_at, 0).is_err(), "byte {} flipped and still valid", i);
        }
    }

    #[test]
    fn truncated_or_extended_descriptors_are_refused(d in arb_descriptor(), cut in any::<Index>(), extra in 1usize..8) {
        let bytes = d.encode();
        prop_assert!(RelayDescriptor::decode(&bytes[..cut.index(bytes.len())]).is_err());
        let mut longer = bytes.clone();
        longer.extend(std::iter::repeat_n(0u8, extra));
        prop_assert!(RelayDescriptor::decode(&longer).is_err());
    }

    #[test]
    fn a_flipped_annotation_byte_never_verifies(
        reachable in 0u8..=(REACHABLE_V4 | REACHABLE_V6), score in 0u16..=1000,
        counts in any::<(u64, u64, u32, u32)>(), pos in any::<Index>(), x in 1u8..=255,
    ) {
        let mut a = annotation();
        a.reachable = reachable;
        a.score = score;
        (a.paid_bytes, a.completed_sessions, a.paying_clients, a.refusals) = counts;
        let a = a.sign(&ledger());
        let bytes = a.encode();
        prop_assert_eq!(DirectoryAnnotation::decode(&bytes).unwrap(), a.clone());
        let mut bent = bytes.clone();
        let i = pos.index(bent.len());
        bent[i] ^= x;
        if let Ok(changed) = DirectoryAnnotation::decode(&bent) {
            let lk = ledger().public_key();
            prop_assert!(changed.verify(&NETWORK_ID, &lk).is_err());
            prop_assert!(changed.verify(&NetworkId([0; 16]), &lk).is_err());
        }
    }
}
