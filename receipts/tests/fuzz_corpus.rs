//! Replays the committed cargo-fuzz corpus (`fuzz/corpus/receipt_decode/`) through the
//! same check the fuzz target runs, so the corpus is exercised on stable in every CI run.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ferry_receipts::fuzzing::check_decode;

#[test]
fn committed_fuzz_corpus_replays_cleanly() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/receipt_decode");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let (mut valid, mut bad) = (0, 0);
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let accepted = check_decode(&data);
        // Seed files say what they are; files the fuzzer added only have to not panic.
        if name.starts_with("valid-") {
            assert_eq!(accepted, 1, "{name} should decode");
            valid += 1;
        } else if name.starts_with("bad-") {
            assert_eq!(accepted, 0, "{name} should be rejected");
            bad += 1;
        }
    }
    // One valid and several broken seeds per message type must be present.
    assert!(
        valid >= 5 && bad >= 25,
        "corpus too small: {valid} valid, {bad} bad"
    );
}
