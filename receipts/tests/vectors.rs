//! Frozen test vectors: fixed seeds and inputs (tests/common) must produce exactly these
//! bytes. Ed25519 is deterministic, so signatures are frozen too. If a test here fails,
//! the wire format changed: that breaks every deployed relay, client and ledger, so it
//! needs a new WIRE_VERSION, not new vectors. The same hex is printed in
//! docs/receipts.md; `docs_carry_the_same_vectors` keeps the two in sync.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferry_receipts::{
    CoSignedReceipt, MAX_MESSAGE_LEN, ReceiptRefusal, SessionAccept, SessionAddress, SessionOffer,
    SessionReject, SignedReceipt, Voucher, WIRE_VERSION, domain,
};
use ring::digest;

const LEDGER_PUBLIC_HEX: &str = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
const RELAY_PUBLIC_HEX: &str = "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394";
const CLIENT_PUBLIC_HEX: &str = "ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d1";
const VOUCHER_ID_HEX: &str = "2323ab3c5dc20fce1e699eff629e5ffe6443c2299545656712981ba2d613923f";

const VOUCHER_HEX: &str = concat!(
    "020166657272792d746573746e65742d30318a88e3dd7409f195fd52db2d3cba",
    "5d72ca6709bf1d94121bf3748801b40f6f5ced4928c628d1c2c6eae903389059",
    "95612959273a5c63f93636c14614ac8737d1000102030405060708090a0b0c0d",
    "0e0f0000000000e4e1c000000000001e8480000000006955b90000000000697d",
    "4600bc2e5ae5f7b4c6f87dcb03eb12176cfa2d1abcc9368420c8043ce85e7c00",
    "0643b285487809672e5463c56798c189d1f1a481cedd0162d9435d56b4ea2379",
    "a004",
);

const SESSION_OFFER_HEX: &str = concat!(
    "020266657272792d746573746e65742d30318139770ea87d175f56a35466c34c",
    "7ecccb8d8a91b4ee37a25df60f5b8fc9b394ed4928c628d1c2c6eae903389059",
    "95612959273a5c63f93636c14614ac8737d1404142434445464748494a4b4c4d",
    "4e4f505152535455565758595a5b5c5d5e5f101112131415161718191a1b1c1d",
    "1e1f000000006955b93c020166657272792d746573746e65742d30318a88e3dd",
    "7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5ced4928c6",
    "28d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d100010203",
    "0405060708090a0b0c0d0e0f0000000000e4e1c000000000001e848000000000",
    "6955b90000000000697d4600bc2e5ae5f7b4c6f87dcb03eb12176cfa2d1abcc9",
    "368420c8043ce85e7c000643b285487809672e5463c56798c189d1f1a481cedd",
    "0162d9435d56b4ea2379a0046d9f0772ac58139438c28790372ccaddb27d8607",
    "91210f69924539cab5352108dd5f6f0a93a55a5df7a3ba140a96f801fb6a46f7",
    "9bcffc2a864cbb76b9290f06",
);

const SESSION_ACCEPT_HEX: &str = concat!(
    "020366657272792d746573746e65742d30318139770ea87d175f56a35466c34c",
    "7ecccb8d8a91b4ee37a25df60f5b8fc9b394ed4928c628d1c2c6eae903389059",
    "95612959273a5c63f93636c14614ac8737d1202122232425262728292a2b2c2d",
    "2e2f2323ab3c5dc20fce1e699eff629e5ffe6443c2299545656712981ba2d613",
    "923f000000006955b93d000000000016e36083859d84d18c7d43b9bc3f358b15",
    "bef4d593cea727ffeac0b0e47c41fc4ac0a142e94d7c739228d71072b6c5ec0a",
    "7e3b399126c491a23fdc6f033dc7b1900c02",
);

const SESSION_ADDRESS_HEX: &str = concat!(
    "020466657272792d746573746e65742d30318139770ea87d175f56a35466c34c",
    "7ecccb8d8a91b4ee37a25df60f5b8fc9b394101112131415161718191a1b1c1d",
    "1e1f202122232425262728292a2b2c2d2e2f404142434445464748494a4b4c4d",
    "4e4f505152535455565758595a5b5c5d5e5f0a4d0002fd770000000000000000",
    "000000000002b44eca4ef4b5779cb0b6f5ef2429eb4616e4d59634bffaf61a9a",
    "d3c955927db2128a321221a34c7496ed0a4bac791ee24b5894041307dd276266",
    "756f82b53706",
);

const SESSION_REJECT_HEX: &str = concat!(
    "020566657272792d746573746e65742d30318139770ea87d175f56a35466c34c",
    "7ecccb8d8a91b4ee37a25df60f5b8fc9b394ed4928c628d1c2c6eae903389059",
    "95612959273a5c63f93636c14614ac8737d1101112131415161718191a1b1c1d",
    "1e1f06236c067664069637531daacca2fc060434d8e8193823e38d1c4efc8c85",
    "4ba00f991373d6c5309b942a2a9238dedcf78c9a8a1b4194c3fd1e4bc588a879",
    "02c607",
);

const SIGNED_RECEIPT_HEX: &str = concat!(
    "021066657272792d746573746e65742d30318139770ea87d175f56a35466c34c",
    "7ecccb8d8a91b4ee37a25df60f5b8fc9b394ed4928c628d1c2c6eae903389059",
    "95612959273a5c63f93636c14614ac8737d1202122232425262728292a2b2c2d",
    "2e2f2323ab3c5dc20fce1e699eff629e5ffe6443c2299545656712981ba2d613",
    "923f000000000000000300000000075bcd15000000003ade68b1000000006955",
    "b93d000000006955ba69000000000016e360b93b5e9e4880bb484d06d7ccb808",
    "b46b08b49931579d7d53ccb6897540010a68d8046e1e1fc2e03a87aff748ec2c",
    "3449a9dae41124461b457f02085eeaa37d00",
);

const COSIGNED_RECEIPT_HEX: &str = concat!(
    "0211021066657272792d746573746e65742d30318139770ea87d175f56a35466",
    "c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394ed4928c628d1c2c6eae90338",
    "905995612959273a5c63f93636c14614ac8737d1202122232425262728292a2b",
    "2c2d2e2f2323ab3c5dc20fce1e699eff629e5ffe6443c2299545656712981ba2",
    "d613923f000000000000000300000000075bcd15000000003ade68b100000000",
    "6955b93d000000006955ba69000000000016e360b93b5e9e4880bb484d06d7cc",
    "b808b46b08b49931579d7d53ccb6897540010a68d8046e1e1fc2e03a87aff748",
    "ec2c3449a9dae41124461b457f02085eeaa37d0000000000075bb29000000000",
    "3ade57d0000000006955ba6ad7b786cee0c9f923c105db46ff0d69d63dd8d1ff",
    "709076ed730997d9d5576f2eaa487510bd73c456dc401e84b9b6b4093ad3e466",
    "97e9d736b275e7cd84791905",
);

const RECEIPT_REFUSAL_HEX: &str = concat!(
    "0212021066657272792d746573746e65742d30318139770ea87d175f56a35466",
    "c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394ed4928c628d1c2c6eae90338",
    "905995612959273a5c63f93636c14614ac8737d1202122232425262728292a2b",
    "2c2d2e2f2323ab3c5dc20fce1e699eff629e5ffe6443c2299545656712981ba2",
    "d613923f000000000000000300000000075bcd15000000003ade68b100000000",
    "6955b93d000000006955ba69000000000016e360b93b5e9e4880bb484d06d7cc",
    "b808b46b08b49931579d7d53ccb6897540010a68d8046e1e1fc2e03a87aff748",
    "ec2c3449a9dae41124461b457f02085eeaa37d0000000000075bb29000000000",
    "075bb29001000000006955ba6a2cd6ffbbc5839905821838d1d183071362e498",
    "bb227f3c27b6b801336cff3c6dd9f1602faa52be74267d93465ab7b305059888",
    "e815939327b8c9728863dc330d",
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
    assert_eq!(WIRE_VERSION, 2);
    assert_eq!(domain::VOUCHER, b"ferry/v2/voucher\0");
    assert_eq!(domain::SESSION_OFFER, b"ferry/v2/session-offer\0");
    assert_eq!(domain::SESSION_ACCEPT, b"ferry/v2/session-accept\0");
    assert_eq!(domain::SESSION_ADDRESS, b"ferry/v2/session-address\0");
    assert_eq!(domain::SESSION_REJECT, b"ferry/v2/session-reject\0");
    assert_eq!(domain::RECEIPT_RELAY, b"ferry/v2/receipt-relay\0");
    assert_eq!(domain::RECEIPT_CLIENT, b"ferry/v2/receipt-client\0");
    assert_eq!(domain::RECEIPT_REFUSAL, b"ferry/v2/receipt-refusal\0");
    assert_eq!(ReceiptRefusal::LEN, 333);
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
    assert_eq!(&VOUCHER_HEX[..4], "0201");
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
        ("receipt refusal", RECEIPT_REFUSAL_HEX),
    ] {
        assert!(
            doc.contains(hex),
            "docs/receipts.md lacks the {name} vector"
        );
    }
}

#[test]
fn receipt_refusal_encoding_is_frozen_and_verifies_only_as_the_clients() {
    // Cross-checked: Python `cryptography`'s Ed25519 over tag || bytes 2..269 gives it.
    let r = refusal();
    assert_eq!(hex::encode(r.encode()), RECEIPT_REFUSAL_HEX);
    // The refused relay-signed receipt is embedded verbatim after the 2-byte header.
    assert_eq!(&RECEIPT_REFUSAL_HEX[4..4 + 242 * 2], SIGNED_RECEIPT_HEX);
    let d = ReceiptRefusal::decode(&unhex(RECEIPT_REFUSAL_HEX)).unwrap();
    assert_eq!(d, r);
    d.verify(&NETWORK_ID).unwrap();
    // Another network, a changed count or reason, a relay posing as the client: refused.
    assert!(d.verify(&ferry_receipts::NetworkId([9; 16])).is_err());
    let mut forged = d;
    forged.client_observed_down += 1;
    assert!(forged.verify(&NETWORK_ID).is_err());
    let mut forged = d;
    forged.reason = 2;
    assert!(forged.verify(&NETWORK_ID).is_err());
    assert!(d.sign(&relay()).verify(&NETWORK_ID).is_err());
    // Undefined reasons do not decode.
    for bad in [0u8, 6, 255] {
        let mut b = unhex(RECEIPT_REFUSAL_HEX);
        b[260] = bad;
        assert!(ReceiptRefusal::decode(&b).is_err(), "reason {bad}");
    }
}
