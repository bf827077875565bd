//! Frozen vectors of the session-tunnel message and the client's latency probe (a
//! [`ProbeChallenge`] without a ledger signature), as in tests/vectors.rs: a failing test
//! here means the wire format changed. Signatures cross-checked with Python `cryptography`.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferry_receipts::{
    DecodeError, ProbeChallenge, SessionTunnel, TUNNEL_DNS_V4, TUNNEL_DNS_V6, VerifyError, domain,
};

const SESSION_TUNNEL_HEX: &str = concat!(
    "020666657272792d746573746e65742d30318139770ea87d175f56a35466c34c",
    "7ecccb8d8a91b4ee37a25df60f5b8fc9b394202122232425262728292a2b2c2d",
    "2e2f0a4d0001fd770000000000000000000000000001058c0322975d96a26bed",
    "be07d49e2b221557725d5949b8c16d06ee026a680ed0df0c3e685afa01155685",
    "7644b15caf5b729a25348d434f16de3251089ef97fd4bfce0e",
);
const PING_HEX: &str = concat!(
    "023266657272792d746573746e65742d30310000000000000000000000000000",
    "0000000000000000000000000000000000008139770ea87d175f56a35466c34c",
    "7ecccb8d8a91b4ee37a25df60f5b8fc9b394707172737475767778797a7b7c7d",
    "7e7f000000006955bce800000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000000000",
);

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn tunnel() -> SessionTunnel {
    SessionTunnel::for_session(
        &accept(),
        Some(std::net::Ipv4Addr::new(10, 77, 0, 1)),
        Some("fd77::1".parse().unwrap()),
        1420,
        TUNNEL_DNS_V4 | TUNNEL_DNS_V6,
    )
    .sign(&relay())
}

fn ping() -> ProbeChallenge {
    ProbeChallenge::ping(NETWORK_ID, relay().public_key(), counting(0x70), T0 + 1000)
}

#[test]
fn tag_and_lengths_are_frozen() {
    assert_eq!(domain::SESSION_TUNNEL, b"ferry/v2/session-tunnel\0");
    assert_eq!(SessionTunnel::LEN, 153);
    assert_eq!(ping().encode().len(), ProbeChallenge::LEN);
}

#[test]
fn encodings_are_frozen_and_decode_to_the_fixtures() {
    let t = tunnel();
    assert_eq!(hex::encode(t.encode()), SESSION_TUNNEL_HEX);
    assert_eq!(
        SessionTunnel::decode(&unhex(SESSION_TUNNEL_HEX)).unwrap(),
        t
    );
    assert_eq!(hex::encode(ping().encode()), PING_HEX);
    let p = ProbeChallenge::decode(&unhex(PING_HEX)).unwrap();
    assert!(p.is_ping());
    assert!(!probe_challenge().is_ping(), "a directory probe is no ping");
}

#[test]
fn the_tunnel_verifies_only_under_its_relay_and_belongs_to_its_session() {
    let t = tunnel();
    t.verify(&NETWORK_ID, &relay().public_key()).unwrap();
    assert!(t.answers(&accept()));
    assert_eq!(
        t.verify(&NETWORK_ID, &client().public_key()),
        Err(VerifyError::WrongKey)
    );
    let mut other = accept();
    other.session_id.0[0] ^= 1;
    assert!(!t.answers(&other));
    let mut enc = t.encode();
    enc[66] ^= 1; // relay_v4
    let forged = SessionTunnel::decode(&enc).unwrap();
    assert_eq!(
        forged.verify(&NETWORK_ID, &relay().public_key()),
        Err(VerifyError::BadRelaySignature)
    );
}

#[test]
fn the_decoder_refuses_what_the_format_forbids() {
    let bad = |f: fn(&mut SessionTunnel)| {
        let mut t = tunnel();
        f(&mut t);
        SessionTunnel::decode(&t.encode())
    };
    assert!(matches!(
        bad(|t| {
            t.relay_v4 = std::net::Ipv4Addr::UNSPECIFIED;
            t.relay_v6 = std::net::Ipv6Addr::UNSPECIFIED;
            t.dns = 0;
        }),
        Err(DecodeError::InvalidField(_))
    ));
    assert!(matches!(
        bad(|t| t.mtu = 1279),
        Err(DecodeError::InvalidField(_))
    ));
    assert!(matches!(
        bad(|t| t.mtu = 9001),
        Err(DecodeError::InvalidField(_))
    ));
    assert!(matches!(
        bad(|t| t.dns = 4),
        Err(DecodeError::InvalidField(_))
    ));
    assert!(matches!(
        bad(|t| t.relay_v6 = std::net::Ipv6Addr::UNSPECIFIED),
        Err(DecodeError::InvalidField(_))
    ));
    // IPv4 only: down to IPv4's 576 (an IPv4-only agent may run a small MTU).
    assert!(
        bad(|t| {
            t.relay_v6 = std::net::Ipv6Addr::UNSPECIFIED;
            t.dns = TUNNEL_DNS_V4;
            t.mtu = 576;
        })
        .is_ok()
    );
    assert!(matches!(
        bad(|t| {
            t.relay_v6 = std::net::Ipv6Addr::UNSPECIFIED;
            t.dns = TUNNEL_DNS_V4;
            t.mtu = 575;
        }),
        Err(DecodeError::InvalidField(_))
    ));
    // Only v4, DNS on it: fine.
    assert!(
        bad(|t| {
            t.relay_v6 = std::net::Ipv6Addr::UNSPECIFIED;
            t.dns = TUNNEL_DNS_V4;
        })
        .is_ok()
    );
    let enc = tunnel().encode();
    assert!(SessionTunnel::decode(&enc[..152]).is_err());
    let mut long = enc.clone();
    long.push(0);
    assert!(SessionTunnel::decode(&long).is_err());
}

#[test]
fn docs_carry_the_same_vectors() {
    let doc: String = include_str!("../../docs/receipts.md")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    assert!(
        doc.contains(SESSION_TUNNEL_HEX),
        "docs/receipts.md lacks the session tunnel vector"
    );
    let dir: String = include_str!("../../docs/directory.md")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    assert!(
        dir.contains(PING_HEX),
        "docs/directory.md lacks the ping vector"
    );
}
