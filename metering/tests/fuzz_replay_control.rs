//! Replays the committed cargo-fuzz corpus `fuzz/corpus/control_decode/` through the check
//! the `control_decode` fuzz target runs (`fuzz/checks/control.rs`, compiled in here), so the
//! corpus is exercised on stable in every CI run.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

#[path = "../../fuzz/checks/control.rs"]
mod control;

#[test]
fn control_decode_corpus_replays_cleanly() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/control_decode");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let (mut valid, mut bad) = (0, 0);
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let accepted = control::check(&data);
        // Seeds say what they are; inputs the fuzzer added only have to pass the check.
        if name.starts_with("valid-") {
            assert!(accepted, "{name} should decode");
            valid += 1;
        } else if name.starts_with("bad-") {
            assert!(!accepted, "{name} should be rejected");
            bad += 1;
        }
    }
    // Every message type has a valid seed; the broken ones cover each FrameError.
    assert!(
        valid >= 12 && bad >= 15,
        "corpus too small: {valid} valid, {bad} bad"
    );
}
