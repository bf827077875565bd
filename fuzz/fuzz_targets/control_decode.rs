//! Arbitrary bytes as a metering control-protocol frame (`ferry_metering::decode` and
//! `decode_prefix`): no panic, accepted frames re-encode to the same bytes. The check is in
//! `checks/control.rs`, which `metering/tests/fuzz_replay_control.rs` replays on stable.
#![no_main]

#[path = "../checks/control.rs"]
mod control;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    control::check(data);
});
