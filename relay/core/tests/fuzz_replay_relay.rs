//! Replays the committed cargo-fuzz corpus `fuzz/corpus/relay_packet/` through the check the
//! `relay_packet` fuzz target runs (`fuzz/checks/relay.rs`, compiled in here): a relay with
//! one real boringtun session fed forged, replayed and attacker-shaped packets.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::path::PathBuf;

#[path = "../../../fuzz/checks/input.rs"]
mod input;
#[allow(dead_code)]
#[path = "../../../fuzz/checks/policy.rs"]
mod policy;
#[path = "../../../fuzz/checks/relay.rs"]
mod relay;

#[test]
fn relay_packet_corpus_replays_cleanly() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/relay_packet");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut seeds = 0;
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let out = relay::check(&data);
        if name.starts_with("seed-") {
            assert!(out.ops > 0, "{name} runs no operation");
            seeds += 1;
        }
        // Positive and negative controls: the seeds' packets reach the egress or not.
        let expect = match name.trim_end_matches(".bin") {
            "seed-upstream-public-v4-v6" => Some(3),
            "seed-upstream-operator-allowed" => Some(2),
            "seed-upstream-tunnel-services" => Some(3),
            "seed-replay-from-other-source" | "seed-timers-and-rehandshake" => Some(1),
            // NAT64 (64:ff9b::/96) addresses embedding private IPv4 are blocked like the IPv4.
            "seed-upstream-nat64-embedded-private" => Some(0),
            "seed-upstream-household-v4"
            | "seed-upstream-household-v6"
            | "seed-upstream-spoofed-source"
            | "seed-upstream-garbage" => Some(0),
            _ => None,
        };
        if let Some(n) = expect {
            assert_eq!(out.egress, n, "{name}: packets reaching the egress");
        }
    }
    assert!(seeds >= 12, "corpus too small: {seeds} seeds");
}
