//! Frozen test vectors: fixed seeds and inputs (tests/common) must produce exactly these
//! bytes. Ed25519 is deterministic, so signatures are frozen too. If a test here fails,
//! the wire format changed: that breaks every deployed relay, client and ledger, so it
//! needs a new WIRE_VERSION, not new vectors. The same hex is printed in
//! docs/receipts.md; `docs_carry_the_same_vectors` keeps the two in sync.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferry_receipts::{
    CoSignedReceipt, MAX_MESSAGE_LEN, SessionAccept, SessionAddress, SessionOffer, SessionReject,
    SignedReceipt, Voucher, WIRE_VERSION, domain,
};
use ring::digest;

const LEDGER_PUBLIC_HEX: &str = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
const RELAY_PUBLIC_HEX: &str = "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394";
const CLIENT_PUBLIC_HEX: &str = "ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d1";
const VOUCHER_ID_HEX: &str = "26ccd75da08df1d26c185cf49aec3e15eb4042ec446b597a19a8ec985ba780a8";

const VOUCHER_HEX: &str = concat!(
    "010166657272792d746573746e65742d30318a88e3dd7409f195fd52db2d3cba",
    "5d72ca6709bf1d94121bf3748801b40f6f5ced4928c628d1c2c6eae903389059",
    "95612959273a5c63f93636c14614ac8737d1000102030405060708090a0b0c0d",
    "0e0f0000000280000000000000000016e360000000006955b90000000000697d",
    "46007f4aed9583ad2210ac40b5de8b107692d0f7db3ca0e30eee4449cc594e80",
    "eb6ab31d9b57755ec2a574937df9a14326248519c88e7b9089c7882a602582a2",
    "b60b",
);

const SESSION_OFFER_HEX: &str = concat!(
    "010266657272792d746573746e65742d30318139770ea87d175f56a35466c34c",
    "7ecccb8d8a91b4ee37a25df60f5b8fc9b394ed4928c628d1c2c6eae903389059",
    "95612959273a5c63f93636c14614ac8737d1404142434445464748494a4b4c4d",
    "4e4f505152535455565758595a5b5c5d5e5f101112131415161718191a1b1c1d",
    "1e1f000000006955b93c010166657272792d746573746e65742d30318a88e3dd",
    "7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5ced4928c6",
    "28d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d100010203",
    "0405060708090a0b0c0d0e0f0000000280000000000000000016e36000000000",
    "6955b90000000000697d46007f4aed9583ad2210ac40b5de8b107692d0f7db3c",
    "a0e30eee4449cc594e80eb6ab31d9b57755ec2a574937df9a14326248519c88e",
    "7b9089c7882a602582a2b60bde3e53f337dc9264b8ac92082c1ce80c904c3c38",
    "30fb099aba6df22be4af29fe1a32427068d3e59d12187e2d5aa86a80f32c2eed",
    "c2bbc702a3f9758e5fed4205",
);

const SESSION_ACCEPT_HEX: &str = concat!(
    "010366657272792d746573746e65742d30318139770ea87d175f56a35466c34c",
    "7ecccb8d8a91b4ee37a25df60f5b8fc9b394ed4928c628d1c2c6eae903389059",
    "95612959273a5c63f93636c14614ac8737d1202122232425262728292a2b2c2d",
    "2e2f26ccd75da08df1d26c185cf49aec3e15eb4042ec446b597a19a8ec985ba7",
    "80a8000000006955b93d000000000016e360e74d4d15488c9c171f795c97524d",
    "1d9b641aa37d278c9ce37bcd7c56fbd5593d6a8af11ba9e4bbc8aadafe202ebd",
    "12de4dd0dc7b79a2279bdb7330b3bdd88c0e",
);

const SESSION_ADDRESS_HEX: &str = concat!(
    "010466657272792d746573746e65742d30318139770ea87d175f56a35466c34c",
    "7ecccb8d8a91b4ee37a25df60f5b8fc9b394101112131415161718191a1b1c1d",
    "1e1f202122232425262728292a2b2c2d2e2f404142434445464748494a4b4c4d",
    "4e4f505152535455565758595a5b5c5d5e5f0a4d0002fd770000000000000000",
    "00000000000239f67a1386c581d29fea6eb5cf01ab6f601510b3ac7ce06719f5",
    "d198aca0516406541b031ae95439b16f399fa01676dbc088c4d90fb25edeb9a3",
    "883307e24c0c",
);

const SESSION_REJECT_HEX: &str = concat!(
    "010566657272792d746573746e65742d30318139770ea87d175f56a35466c34c",
    "7ecccb8d8a91b4ee37a25df60f5b8fc9b394ed4928c628d1c2c6eae903389059",
    "95612959273a5c63f93636c14614ac8737d1101112131415161718191a1b1c1d",
    "1e1f06bb223bbc18d790e973c287fede57b10cc8a98296ce74d1c89f46b1f2a8",
    "8f03c9d802dca4082b8ce900e500af1244477b5ec62778423f82b06b2bd55c3c",
    "bb5200",
);

const SIGNED_RECEIPT_HEX: &str = concat!(
    "011066657272792d746573746e65742d30318139770ea87d175f56a35466c34c",
    "7ecccb8d8a91b4ee37a25df60f5b8fc9b394ed4928c628d1c2c6eae903389059",
    "95612959273a5c63f93636c14614ac8737d1202122232425262728292a2b2c2d",
    "2e2f26ccd75da08df1d26c185cf49aec3e15eb4042ec446b597a19a8ec985ba7",
    "80a8000000000000000300000000075bcd15000000003ade68b1000000006955",
    "b93d000000006955ba69000000000016e3609e609c27691c846d92531d900f6f",
    "6187ac7bff9744bd5c22c2bae41a214274f890ae07ece8f030d440e55da53858",
    "23895eb207657c6e17fd7f87fbe75a9efd09",
);

const COSIGNED_RECEIPT_HEX: &str = concat!(
    "0111011066657272792d746573746e65742d30318139770ea87d175f56a35466",
    "c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394ed4928c628d1c2c6eae90338",
    "905995612959273a5c63f93636c14614ac8737d1202122232425262728292a2b",
    "2c2d2e2f26ccd75da08df1d26c185cf49aec3e15eb4042ec446b597a19a8ec98",
    "5ba780a8000000000000000300000000075bcd15000000003ade68b100000000",
    "6955b93d000000006955ba69000000000016e3609e609c27691c846d92531d90",
    "0f6f6187ac7bff9744bd5c22c2bae41a214274f890ae07ece8f030d440e55da5",
    "385823895eb207657c6e17fd7f87fbe75a9efd0900000000075bb29000000000",
    "3ade57d0000000006955ba6a36cd13d75f295ee128f00fe4c2bc3c06f3d3810c",
    "4c420f8149a5489b8a7ab1cccb2c3a033571dacc495a8c6e9942e36f812fe6ad",
    "4e5baa40ca8c395ce673db00",
);

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn signature_hex(encoding_hex: &str) -> &str {
    &encoding_hex[encoding_hex.len() - 128..]
}

#[test]
fn seeds_give_the_frozen_public_keys() {
    // RFC 8032 key derivation; cross-checked against an independent implementation.
    assert_eq!(ledger().public_key().to_hex(), LEDGER_PUBLIC_HEX);
    assert_eq!(relay().public_key().to_hex(), RELAY_PUBLIC_HEX);
    assert_eq!(client().public_key().to_hex(), CLIENT_PUBLIC_HEX);
}

#[test]
fn version_domain_tags_and_lengths_are_frozen() {
    assert_eq!(WIRE_VERSION, 1);
    assert_eq!(domain::VOUCHER, b"ferry/v1/voucher\0");
    assert_eq!(domain::SESSION_OFFER, b"ferry/v1/session-offer\0");
    assert_eq!(domain::SESSION_ACCEPT, b"ferry/v1/session-accept\0");
    assert_eq!(domain::SESSION_ADDRESS, b"ferry/v1/session-address\0");
    assert_eq!(domain::SESSION_REJECT, b"ferry/v1/session-reject\0");
    assert_eq!(domain::RECEIPT_RELAY, b"ferry/v1/receipt-relay\0");
    assert_eq!(domain::RECEIPT_CLIENT, b"ferry/v1/receipt-client\0");
    assert_eq!(
        [
            Voucher::LEN,
            SessionOffer::LEN,
            SessionAccept::LEN,
            SessionAddress::LEN,
            SessionReject::LEN,
            SignedReceipt::LEN,
            CoSignedReceipt::LEN,
        ],
        [194, 396, 210, 198, 163, 242, 332]
    );
    for len in [Voucher::LEN, SessionOffer::LEN, CoSignedReceipt::LEN] {
        assert!(len <= MAX_MESSAGE_LEN);
    }
}

#[test]
fn voucher_encoding_is_frozen() {
    let v = voucher();
    assert_eq!(hex::encode(v.encode()), VOUCHER_HEX);
    assert_eq!(v.signature.to_hex(), signature_hex(VOUCHER_HEX));
    assert_eq!(&VOUCHER_HEX[..4], "0101");
}

#[test]
fn voucher_id_is_sha256_of_the_full_encoding() {
    let v = voucher();
    let sha = digest::digest(&digest::SHA256, &unhex(VOUCHER_HEX));
    assert_eq!(v.id().as_bytes().as_slice(), sha.as_ref());
    assert_eq!(v.id().to_hex(), VOUCHER_ID_HEX);
}

#[test]
fn session_offer_encoding_is_frozen() {
    let o = offer();
    assert_eq!(hex::encode(o.encode()), SESSION_OFFER_HEX);
    assert_eq!(o.signature.to_hex(), signature_hex(SESSION_OFFER_HEX));
    // The voucher is embedded verbatim at offset 138.
    assert_eq!(&SESSION_OFFER_HEX[138 * 2..332 * 2], VOUCHER_HEX);
}

#[test]
fn session_accept_encoding_is_frozen() {
    let a = accept();
    assert_eq!(hex::encode(a.encode()), SESSION_ACCEPT_HEX);
    assert_eq!(a.signature.to_hex(), signature_hex(SESSION_ACCEPT_HEX));
    assert_eq!(&SESSION_ACCEPT_HEX[98 * 2..130 * 2], VOUCHER_ID_HEX);
}

#[test]
fn session_address_and_reject_encodings_are_frozen() {
    // Cross-checked: Python `cryptography`'s Ed25519 over tag || bytes gives these signatures.
    let a = address();
    assert_eq!(hex::encode(a.encode()), SESSION_ADDRESS_HEX);
    assert_eq!(a.signature.to_hex(), signature_hex(SESSION_ADDRESS_HEX));
    // Bound to the offer's nonce (offset 50) and the accept's session id (offset 66).
    assert_eq!(
        &SESSION_ADDRESS_HEX[50 * 2..66 * 2],
        &SESSION_OFFER_HEX[114 * 2..130 * 2]
    );
    assert_eq!(
        &SESSION_ADDRESS_HEX[66 * 2..82 * 2],
        &SESSION_ACCEPT_HEX[82 * 2..98 * 2]
    );
    let r = reject();
    assert_eq!(hex::encode(r.encode()), SESSION_REJECT_HEX);
    assert_eq!(r.signature.to_hex(), signature_hex(SESSION_REJECT_HEX));
    assert_eq!(
        &SESSION_REJECT_HEX[82 * 2..98 * 2],
        &SESSION_OFFER_HEX[114 * 2..130 * 2]
    );
}

#[test]
fn signed_replies_verify_only_under_the_expected_relay_and_for_their_offer() {
    let (o, acc) = (offer(), accept());
    let relay_key = relay().public_key();
    let a = SessionAddress::decode(&unhex(SESSION_ADDRESS_HEX)).unwrap();
    assert_eq!(a, address());
    a.verify(&NETWORK_ID, &relay_key).unwrap();
    assert!(a.answers(&o, &acc));
    let r = SessionReject::decode(&unhex(SESSION_REJECT_HEX)).unwrap();
    assert_eq!(r, reject());
    r.verify(&NETWORK_ID, &relay_key).unwrap();
    assert!(r.answers(&o));
    // Another relay's key, a flipped address bit, another offer: refused.
    let other = client().public_key();
    assert!(a.verify(&NETWORK_ID, &other).is_err());
    assert!(r.verify(&NETWORK_ID, &other).is_err());
    let mut forged = a.clone();
    forged.v4 = std::net::Ipv4Addr::new(10, 77, 0, 66);
    assert!(forged.verify(&NETWORK_ID, &relay_key).is_err());
    let mut forged = r.clone();
    forged.reason = 1;
    assert!(forged.verify(&NETWORK_ID, &relay_key).is_err());
    let mut later = o.clone();
    later.nonce[0] ^= 1;
    assert!(!a.answers(&later, &acc));
    assert!(!r.answers(&later));
    // A forger's own signature over the same fields names the forger's key.
    let forger = ferry_receipts::SigningKey::from_seed(&[9; 32]);
    assert!(
        a.clone()
            .sign(&forger)
            .verify(&NETWORK_ID, &relay_key)
            .is_err()
    );
}

#[test]
fn signed_receipt_encoding_is_frozen() {
    let r = signed_receipt();
    assert_eq!(hex::encode(r.encode()), SIGNED_RECEIPT_HEX);
    assert_eq!(hex::encode(r.body.encode()), &SIGNED_RECEIPT_HEX[..178 * 2]);
    assert_eq!(
        r.relay_signature.to_hex(),
        signature_hex(SIGNED_RECEIPT_HEX)
    );
}

#[test]
fn cosigned_receipt_encoding_is_frozen() {
    let c = cosigned_receipt();
    assert_eq!(hex::encode(c.encode()), COSIGNED_RECEIPT_HEX);
    assert_eq!(
        c.client_signature.to_hex(),
        signature_hex(COSIGNED_RECEIPT_HEX)
    );
    // The relay-signed receipt is embedded verbatim after the 2-byte outer header.
    assert_eq!(&COSIGNED_RECEIPT_HEX[4..4 + 242 * 2], SIGNED_RECEIPT_HEX);
}

#[test]
fn vectors_decode_to_the_fixtures_and_verify() {
    let v = Voucher::decode(&unhex(VOUCHER_HEX)).unwrap();
    assert_eq!(v, voucher());
    v.verify(&NETWORK_ID, &ledger().public_key(), T0).unwrap();

    let o = SessionOffer::decode(&unhex(SESSION_OFFER_HEX)).unwrap();
    assert_eq!(o, offer());
    o.verify(
        &NETWORK_ID,
        &relay().public_key(),
        &ledger().public_key(),
        T0 + 60,
    )
    .unwrap();

    let a = SessionAccept::decode(&unhex(SESSION_ACCEPT_HEX)).unwrap();
    assert_eq!(a, accept());
    a.verify(&NETWORK_ID).unwrap();

    let r = SignedReceipt::decode(&unhex(SIGNED_RECEIPT_HEX)).unwrap();
    assert_eq!(r, signed_receipt());
    r.verify(&NETWORK_ID).unwrap();

    let c = CoSignedReceipt::decode(&unhex(COSIGNED_RECEIPT_HEX)).unwrap();
    assert_eq!(c, cosigned_receipt());
    c.verify(&NETWORK_ID).unwrap();
}

#[test]
fn docs_carry_the_same_vectors() {
    let doc: String = include_str!("../../docs/receipts.md")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    for (name, hex) in [
        ("ledger public key", LEDGER_PUBLIC_HEX),
        ("relay public key", RELAY_PUBLIC_HEX),
        ("client public key", CLIENT_PUBLIC_HEX),
        ("voucher id", VOUCHER_ID_HEX),
        ("voucher", VOUCHER_HEX),
        ("session offer", SESSION_OFFER_HEX),
        ("session accept", SESSION_ACCEPT_HEX),
        ("session address", SESSION_ADDRESS_HEX),
        ("session reject", SESSION_REJECT_HEX),
        ("signed receipt", SIGNED_RECEIPT_HEX),
        ("co-signed receipt", COSIGNED_RECEIPT_HEX),
    ] {
        assert!(
            doc.contains(hex),
            "docs/receipts.md lacks the {name} vector"
        );
    }
}
