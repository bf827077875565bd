//! Receipt decoding and signature verification for submissions: Ed25519 batch
//! verification across all cores, with an exact one-by-one (ring) fallback.

use std::num::NonZeroUsize;

use ferry_receipts::{CoSignedReceipt, NetworkId, VerifyError};

use crate::domain::VerifiedReceipt;
use crate::service::ItemError;

/// Decodes and verifies one encoding (ring, one signature at a time).
pub fn verify_one(encoded: Vec<u8>, network: &NetworkId) -> Result<VerifiedReceipt, ItemError> {
    let (receipt, encoded) = decode_one(encoded, network)?;
    receipt.verify(network).map_err(ItemError::Verify)?;
    Ok(VerifiedReceipt { receipt, encoded })
}

fn decode_one(
    encoded: Vec<u8>,
    network: &NetworkId,
) -> Result<(CoSignedReceipt, Vec<u8>), ItemError> {
    if encoded.len() != CoSignedReceipt::LEN {
        return Err(ItemError::Malformed("wrong length"));
    }
    let receipt = CoSignedReceipt::decode(&encoded).map_err(ItemError::Decode)?;
    if &receipt.body().network_id != network {
        return Err(ItemError::Verify(VerifyError::WrongNetwork));
    }
    Ok((receipt, encoded))
}

/// Verifies a batch: split across the machine's cores, and within each share all
/// signatures are checked at once with Ed25519 batch verification (ed25519-dalek, about
/// 2-3x cheaper per signature than one-by-one). If a share's batch fails, every receipt
/// in it is re-verified one by one with ring (`CoSignedReceipt::verify`) to pinpoint the
/// bad ones, so errors are exactly those of [`verify_one`].
pub fn verify_all(
    encoded: Vec<Vec<u8>>,
    network: &NetworkId,
) -> Vec<Result<VerifiedReceipt, ItemError>> {
    let threads = std::thread::available_parallelism()
        .map(NonZeroUsize::get)
        .unwrap_or(1);
    if encoded.len() < 64 || threads == 1 {
        return verify_share(encoded, network);
    }
    let chunk = encoded.len().div_ceil(threads);
    let mut chunks: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut it = encoded.into_iter().peekable();
    while it.peek().is_some() {
        chunks.push(it.by_ref().take(chunk).collect());
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|c| {
                let n = c.len();
                (n, s.spawn(move || verify_share(c, network)))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(n, h)| match h.join() {
                Ok(v) => v,
                Err(_) => vec![Err(ItemError::Malformed("internal: verifier panicked")); n],
            })
            .collect()
    })
}

fn verify_share(
    encoded: Vec<Vec<u8>>,
    network: &NetworkId,
) -> Vec<Result<VerifiedReceipt, ItemError>> {
    let decoded: Vec<_> = encoded
        .into_iter()
        .map(|e| decode_one(e, network))
        .collect();
    let ok = decoded.iter().filter(|d| d.is_ok()).count();
    let batch_ok = ok >= 2 && batch_verify(decoded.iter().filter_map(|d| d.as_ref().ok()));
    decoded
        .into_iter()
        .map(|d| {
            let (receipt, encoded) = d?;
            if !batch_ok {
                receipt.verify(network).map_err(ItemError::Verify)?;
            }
            Ok(VerifiedReceipt { receipt, encoded })
        })
        .collect()
}

// Byte ranges inside `CoSignedReceipt::encode()` (docs/receipts.md): the relay signs
// RECEIPT_RELAY || body (bytes 2..180) with its signature at 180..244; the client signs
// RECEIPT_CLIENT || bytes 2..268 with its signature at 268..332.
const BODY: std::ops::Range<usize> = 2..180;
const RELAY_SIG: std::ops::Range<usize> = 180..244;
const CLIENT_SIGNED: std::ops::Range<usize> = 2..268;
const CLIENT_SIG: std::ops::Range<usize> = 268..332;

/// True only if every relay and client signature of `items` verifies (batch equation).
fn batch_verify<'a>(items: impl Iterator<Item = &'a (CoSignedReceipt, Vec<u8>)>) -> bool {
    use ed25519_dalek::{Signature as DSig, VerifyingKey};
    use ferry_receipts::domain;
    let mut msgs: Vec<Vec<u8>> = Vec::new();
    let mut sigs = Vec::new();
    let mut keys = Vec::new();
    for (r, enc) in items {
        let body = r.body();
        let (Ok(relay), Ok(client)) = (
            VerifyingKey::from_bytes(body.relay_key.as_bytes()),
            VerifyingKey::from_bytes(body.client_key.as_bytes()),
        ) else {
            return false;
        };
        let sig = |range: std::ops::Range<usize>| -> Option<DSig> {
            let b: [u8; 64] = enc.get(range)?.try_into().ok()?;
            Some(DSig::from_bytes(&b))
        };
        let (Some(rs), Some(cs)) = (sig(RELAY_SIG), sig(CLIENT_SIG)) else {
            return false;
        };
        msgs.push([domain::RECEIPT_RELAY, &enc[BODY]].concat());
        msgs.push([domain::RECEIPT_CLIENT, &enc[CLIENT_SIGNED]].concat());
        sigs.extend([rs, cs]);
        keys.extend([relay, client]);
    }
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    ed25519_dalek::verify_batch(&refs, &sigs, &keys).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, NETWORK};
    use ferry_receipts::VoucherId;

    fn receipts(n: u64) -> Vec<Vec<u8>> {
        let (relay, client) = (testkit::key(2, 0), testkit::key(3, 0));
        (1..=n)
            .map(|i| {
                testkit::receipt(
                    NETWORK,
                    &relay,
                    &client,
                    VoucherId([1; 32]),
                    5,
                    testkit::session(i),
                    i,
                    i,
                    i,
                )
                .encode()
            })
            .collect()
    }

    #[test]
    fn signed_ranges_match_the_canonical_layout() {
        let enc = receipts(1).remove(0);
        let r = CoSignedReceipt::decode(&enc).unwrap();
        assert_eq!(&enc[BODY], r.body().encode().as_slice());
        assert_eq!(&enc[RELAY_SIG], r.receipt.relay_signature.as_bytes());
        assert_eq!(&enc[CLIENT_SIG], r.client_signature.as_bytes());
        assert_eq!(
            &enc[CLIENT_SIGNED][..SignedReceiptLen::LEN],
            r.receipt.encode().as_slice()
        );
    }

    struct SignedReceiptLen;
    impl SignedReceiptLen {
        const LEN: usize = ferry_receipts::SignedReceipt::LEN;
    }

    #[test]
    fn batch_and_one_by_one_verification_agree() {
        let good = receipts(300);
        let mut all = verify_all(good.clone(), &NETWORK);
        assert!(all.iter().all(Result::is_ok));
        // Flip one byte in a few receipts (signatures, counters, keys): the batch fails,
        // the fallback pinpoints exactly those.
        let mut bad = good;
        for (i, off) in [(3, 190), (77, 300), (150, 140), (299, 20)] {
            bad[i][off] ^= 1;
        }
        all = verify_all(bad.clone(), &NETWORK);
        for (i, (r, e)) in all.iter().zip(bad).enumerate() {
            let single = verify_one(e, &NETWORK).map(|v| v.receipt);
            assert_eq!(
                r.as_ref().map(|v| v.receipt).map_err(|e| *e),
                single,
                "item {i}"
            );
        }
        assert_eq!(all.iter().filter(|r| r.is_err()).count(), 4);
    }
}
