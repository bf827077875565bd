//! Arbitrary text as `ferry-agent`'s TOML config (`Config::parse`: TOML + validation).
//! Uses ferry-agent's library target (`ferry_agent::config`).
//! Check in `checks/config.rs`, replayed by `router-agent/tests/fuzz_replay_config.rs`.
#![no_main]

#[path = "../checks/config.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check::check(data);
});
