//! Decodes arbitrary bytes as every Ferry message type; whenever a decode succeeds,
//! re-encoding must give back exactly the input. The check lives in
//! `ferry_receipts::fuzzing` so `receipts/tests/fuzz_corpus.rs` replays the committed
//! corpus through the same code on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferry_receipts::fuzzing::check_decode(data);
});
