//! Replays the committed cargo-fuzz corpus `fuzz/corpus/agent_config/` through the check the
//! `agent_config` fuzz target runs (`fuzz/checks/config.rs`, which uses `ferry_agent::config`).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

#[path = "../../fuzz/checks/config.rs"]
mod check;

#[test]
fn agent_config_corpus_replays_cleanly() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/agent_config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let (mut valid, mut bad) = (0, 0);
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let accepted = check::check(&data);
        if name.starts_with("valid-") {
            assert!(accepted, "{name} should be accepted");
            valid += 1;
        } else if name.starts_with("bad-") {
            assert!(!accepted, "{name} should be rejected");
            bad += 1;
        }
    }
    assert!(
        valid >= 3 && bad >= 20,
        "corpus too small: {valid} valid, {bad} bad"
    );
}
