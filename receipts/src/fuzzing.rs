//! The decoder check shared by the `receipt_decode` fuzz target and the corpus replay
//! test. Not part of the stable API.

use crate::{
    CoSignedReceipt, DirectoryAnnotation, ProbeChallenge, ProbeResponse, ReceiptRefusal,
    RelayDescriptor, SessionAccept, SessionAddress, SessionOffer, SessionReject, SessionTunnel,
    SignedReceipt, Voucher,
};

/// Decodes `data` as every Ferry message type. Whenever a decode succeeds, re-encoding
/// must reproduce `data` exactly (the encoding is canonical) and decoding that again must
/// give an equal value. Returns how many message types accepted the bytes (0 or 1: type
/// bytes differ, so no input can be two messages at once).
///
/// # Panics
/// When the decoder and encoder disagree; that is the bug the fuzzer looks for.
pub fn check_decode(data: &[u8]) -> usize {
    let mut accepted = 0;
    accepted += round_trip(data, Voucher::decode, Voucher::encode);
    accepted += round_trip(data, SessionOffer::decode, SessionOffer::encode);
    accepted += round_trip(data, SessionAccept::decode, SessionAccept::encode);
    accepted += round_trip(data, SessionAddress::decode, SessionAddress::encode);
    accepted += round_trip(data, SessionReject::decode, SessionReject::encode);
    accepted += round_trip(data, SessionTunnel::decode, SessionTunnel::encode);
    accepted += round_trip(data, SignedReceipt::decode, SignedReceipt::encode);
    accepted += round_trip(data, CoSignedReceipt::decode, CoSignedReceipt::encode);
    accepted += round_trip(data, ReceiptRefusal::decode, ReceiptRefusal::encode);
    accepted += round_trip(data, RelayDescriptor::decode, RelayDescriptor::encode);
    accepted += round_trip(
        data,
        DirectoryAnnotation::decode,
        DirectoryAnnotation::encode,
    );
    accepted += round_trip(data, ProbeChallenge::decode, ProbeChallenge::encode);
    accepted += round_trip(data, ProbeResponse::decode, ProbeResponse::encode);
    assert!(
        accepted <= 1,
        "{accepted} message types accepted the same bytes"
    );
    accepted
}

fn round_trip<T, E>(
    data: &[u8],
    decode: fn(&[u8]) -> Result<T, E>,
    encode: fn(&T) -> Vec<u8>,
) -> usize
where
    T: PartialEq + std::fmt::Debug,
{
    let Ok(msg) = decode(data) else {
        return 0;
    };
    let bytes = encode(&msg);
    assert_eq!(bytes, data, "re-encoding {msg:?} changed the bytes");
    let again = decode(&bytes).ok();
    assert_eq!(again.as_ref(), Some(&msg), "decode(encode(x)) != x");
    1
}
