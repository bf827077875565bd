//! Frozen vectors of the directory messages (descriptor, annotation, probe), as in
//! tests/vectors.rs: a failing test here means the wire format changed.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferry_receipts::{
    DirectoryAnnotation, ProbeChallenge, ProbeResponse, RelayDescriptor, VerifyError, domain,
};

const DESCRIPTOR_HEX: &str = concat!(
    "023066657272792d746573746e65742d30318139770ea87d175f56a35466c34c",
    "7ecccb8d8a91b4ee37a25df60f5b8fc9b394505152535455565758595a5b5c5d",
    "5e5f606162636465666768696a6b6c6d6e6fc000020aca6c20010db800000000",
    "0000000000000010ca6cca6d00000000001312d000000032000001f4ffffffff",
    "ffffffffffffffffffffffffffffffffff4445000000006955bb580000000069",
    "55c26003001901d1024b064265726c696e1166657272792d6167656e742f302e",
    "312e30116162757365406578616d706c652e6f726739f810985d4fe3ca650dbe",
    "bd58bc48b7f961bc456d19ad5be7c3fcd1de5f89aa920ec8fcc0f872fb3c1e5b",
    "768da5db718aafcb96ed0041dc8e7b35bafa0f8f06",
);
const ANNOTATION_HEX: &str = concat!(
    "023166657272792d746573746e65742d30318a88e3dd7409f195fd52db2d3cba",
    "5d72ca6709bf1d94121bf3748801b40f6f5c8139770ea87d175f56a35466c34c",
    "7ecccb8d8a91b4ee37a25df60f5b8fc9b39464b3b9aaea8a3f4344779724fa94",
    "52bcf32503bc52ab6a49bbd7b5783c796df8000000006955bbbc000000006955",
    "bb59000000006955bb5901000004d20000000300000004028000000001400000",
    "00000000000000000c0000000700000001b60855276decc9c6cf684cf88a7f79",
    "dc9418d9af37dc8108482c81bf20b4e33cfee8d2fc157a754761726283a78348",
    "97cfe3e624a7d6f134e401e409fd491309",
);
const PROBE_CHALLENGE_HEX: &str = concat!(
    "023266657272792d746573746e65742d30318a88e3dd7409f195fd52db2d3cba",
    "5d72ca6709bf1d94121bf3748801b40f6f5c8139770ea87d175f56a35466c34c",
    "7ecccb8d8a91b4ee37a25df60f5b8fc9b394606162636465666768696a6b6c6d",
    "6e6f000000006955bb5a3ea85d45a1e5d06d44c960e6e66074bd7653c389f925",
    "e9579c24528fa9ee12f8b87ca570dd2d9944f79fd01d0dfd7b8fd8b126891256",
    "d15b23286d0ecad1520d",
);
const PROBE_RESPONSE_HEX: &str = concat!(
    "023366657272792d746573746e65742d30318139770ea87d175f56a35466c34c",
    "7ecccb8d8a91b4ee37a25df60f5b8fc9b394606162636465666768696a6b6c6d",
    "6e6f933367786c327412ce1ec2e359e0e1f2ea918faf9003972e68c477db3594",
    "50cc1088afb7da6b0d916a1af11a10d8516ac47d9ee616fed3797b95bfbfde96",
    "6b08",
);

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

#[test]
fn tags_and_lengths_are_frozen() {
    assert_eq!(domain::RELAY_DESCRIPTOR, b"ferry/v2/relay-descriptor\0");
    assert_eq!(
        domain::DIRECTORY_ANNOTATION,
        b"ferry/v2/directory-annotation\0"
    );
    assert_eq!(domain::PROBE_CHALLENGE, b"ferry/v2/probe-challenge\0");
    assert_eq!(domain::PROBE_RESPONSE, b"ferry/v2/probe-response\0");
    assert_eq!(
        [
            RelayDescriptor::MIN_LEN,
            RelayDescriptor::MAX_LEN,
            DirectoryAnnotation::LEN,
            ProbeChallenge::LEN,
            ProbeResponse::LEN,
        ],
        [231, 423, 241, 170, 130]
    );
    const { assert!(RelayDescriptor::MAX_LEN <= ferry_receipts::MAX_MESSAGE_LEN) };
    // The answer is smaller than the question: probing a relay amplifies nothing.
    const { assert!(ProbeResponse::LEN < ProbeChallenge::LEN) };
}

#[test]
fn encodings_are_frozen_and_decode_to_the_fixtures() {
    // Signatures cross-checked with Python `cryptography` (Ed25519 over tag || bytes).
    let d = descriptor();
    assert_eq!(hex::encode(d.encode()), DESCRIPTOR_HEX);
    assert_eq!(RelayDescriptor::decode(&unhex(DESCRIPTOR_HEX)).unwrap(), d);
    let a = annotation();
    assert_eq!(hex::encode(a.encode()), ANNOTATION_HEX);
    assert_eq!(
        DirectoryAnnotation::decode(&unhex(ANNOTATION_HEX)).unwrap(),
        a
    );
    // The annotation names the descriptor by the SHA-256 of its encoding (offset 82).
    assert_eq!(&ANNOTATION_HEX[82 * 2..114 * 2], d.id().to_hex());
    let c = probe_challenge();
    assert_eq!(hex::encode(c.encode()), PROBE_CHALLENGE_HEX);
    assert_eq!(
        ProbeChallenge::decode(&unhex(PROBE_CHALLENGE_HEX)).unwrap(),
        c
    );
    let r = probe_response();
    assert_eq!(hex::encode(r.encode()), PROBE_RESPONSE_HEX);
    assert_eq!(
        ProbeResponse::decode(&unhex(PROBE_RESPONSE_HEX)).unwrap(),
        r
    );
    // The response echoes the challenge's nonce (challenge offset 82, response offset 50).
    assert_eq!(
        &PROBE_RESPONSE_HEX[50 * 2..66 * 2],
        &PROBE_CHALLENGE_HEX[82 * 2..98 * 2]
    );
}

#[test]
fn signatures_bind_every_field_and_the_signer() {
    let (net, ledger_key, relay_key) = (NETWORK_ID, ledger().public_key(), relay().public_key());
    let d = descriptor();
    d.verify(&net, d.issued_at, 0).unwrap();
    assert_eq!(
        d.verify(&net, d.expires_at + 1, 0),
        Err(VerifyError::Expired)
    );
    assert_eq!(
        d.verify(&net, d.issued_at - 61, 60),
        Err(VerifyError::Expired)
    );
    d.verify(&net, d.issued_at - 60, 60).unwrap();
    let mut cheaper = d.clone();
    cheaper.price_micros_per_gib -= 1;
    assert_eq!(
        cheaper.verify(&net, d.issued_at, 0),
        Err(VerifyError::BadRelaySignature)
    );
    let mut moved = d.clone();
    moved.ipv4 = Some("198.51.100.7:51820".parse().unwrap());
    assert_eq!(
        moved.verify(&net, d.issued_at, 0),
        Err(VerifyError::BadRelaySignature)
    );
    assert_eq!(
        d.verify(&ferry_receipts::NetworkId([7; 16]), d.issued_at, 0),
        Err(VerifyError::WrongNetwork)
    );

    let a = annotation();
    a.verify(&net, &ledger_key).unwrap();
    assert_eq!(a.verify(&net, &relay_key), Err(VerifyError::WrongKey));
    let mut better = a.clone();
    better.score = 1000;
    assert_eq!(
        better.verify(&net, &ledger_key),
        Err(VerifyError::BadLedgerSignature)
    );
    // A relay signing an annotation about itself names its own key, not the ledger's.
    assert_eq!(
        a.clone().sign(&relay()).verify(&net, &ledger_key),
        Err(VerifyError::WrongKey)
    );

    let c = probe_challenge();
    c.verify(&net, &relay_key, &ledger_key, c.issued_at + 30, 60)
        .unwrap();
    assert_eq!(
        c.verify(&net, &relay_key, &ledger_key, c.issued_at + 61, 60),
        Err(VerifyError::Expired)
    );
    assert_eq!(
        c.verify(&net, &ledger_key, &ledger_key, c.issued_at, 60),
        Err(VerifyError::WrongKey)
    );
    let forged = c.clone().sign(&client());
    assert_eq!(
        forged.verify(&net, &relay_key, &ledger_key, c.issued_at, 60),
        Err(VerifyError::WrongKey)
    );
    let r = probe_response();
    assert!(r.answers(&c));
    let mut other = c.clone();
    other.nonce[0] ^= 1;
    assert!(!r.answers(&other), "an answer to another challenge");
    assert!(
        !c.response().sign(&client()).answers(&c),
        "signed by someone else"
    );
}

#[test]
fn descriptors_breaking_a_rule_are_refused_by_the_decoder() {
    let base = descriptor();
    type Edit = fn(&mut ferry_receipts::RelayDescriptor);
    let edits: [(&str, Edit); 9] = [
        ("no endpoint", |d| {
            d.ipv4 = None;
            d.ipv6 = None;
        }),
        ("port zero", |d| {
            d.ipv4 = Some("192.0.2.1:0".parse().unwrap())
        }),
        ("hello port zero", |d| d.hello_port = 0),
        ("expiry", |d| d.expires_at = d.issued_at),
        ("country", |d| d.country = *b"de"),
        ("ports order", |d| d.limits.blocked_ports = vec![465, 25]),
        ("port zero blocked", |d| {
            d.limits.blocked_ports = vec![0, 25]
        }),
        ("text", |d| d.region = "Zürich".into()),
        ("long text", |d| d.abuse_contact = "a".repeat(65)),
    ];
    for (what, edit) in edits {
        let mut d = base.clone();
        edit(&mut d);
        assert!(d.check().is_err(), "{what}: check");
        let bytes = d.sign(&relay()).encode();
        assert!(RelayDescriptor::decode(&bytes).is_err(), "{what}: decode");
    }
    // A descriptor with only IPv6, no texts and no blocked ports is fine.
    let mut d = base.clone();
    d.ipv4 = None;
    d.region.clear();
    d.software.clear();
    d.abuse_contact.clear();
    d.limits.blocked_ports.clear();
    let d = d.sign(&relay());
    assert_eq!(d.encode().len(), RelayDescriptor::MIN_LEN);
    assert_eq!(RelayDescriptor::decode(&d.encode()).unwrap(), d);
}

#[test]
fn docs_carry_the_same_vectors() {
    let doc: String = include_str!("../../docs/directory.md")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    for (name, hex) in [
        ("relay descriptor", DESCRIPTOR_HEX),
        ("directory annotation", ANNOTATION_HEX),
        ("probe challenge", PROBE_CHALLENGE_HEX),
        ("probe response", PROBE_RESPONSE_HEX),
    ] {
        assert!(
            doc.contains(hex),
            "docs/directory.md lacks the {name} vector"
        );
    }
}

#[test]
fn the_schedule_is_read_in_utc_hours_of_the_week_from_monday() {
    use ferry_receipts::AdvertisedLimits;
    let mut l = AdvertisedLimits::unlimited();
    assert!(l.shares_at_unix(0) && l.shared_hours() == 168);
    // Only Monday 00:00-01:00 and Sunday 23:00-24:00 UTC.
    l.schedule = [0; 21];
    l.schedule[0] = 0x80;
    l.schedule[20] = 0x01;
    // 1970-01-01 00:00 was a Thursday; Monday 1970-01-05 00:30, Sunday 1970-01-04 23:30.
    assert!(!l.shares_at_unix(0));
    assert!(l.shares_at_unix(4 * 86_400 + 1800));
    assert!(!l.shares_at_unix(4 * 86_400 + 3600));
    assert!(l.shares_at_unix(3 * 86_400 + 23 * 3600 + 1800));
    // 2026-12-07 was a Monday.
    assert!(l.shares_at_unix(1_796_601_600 + 60));
    assert_eq!(l.shared_hours(), 2);
}
