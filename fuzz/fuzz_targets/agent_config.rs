//! Arbitrary text as `ferry-agent`'s TOML config (`Config::parse`: TOML + validation).
//! ferry-agent has no library target, so its `config.rs` is compiled in here with `#[path]`.
//! Check in `checks/config.rs`, replayed by `router-agent/tests/fuzz_replay_config.rs`.
#![no_main]

#[allow(dead_code, unreachable_pub)]
#[path = "../../router-agent/src/config.rs"]
mod config;
// `config.rs` refers to `crate::config_paid` ([identity], [network], [metering], [paid]).
#[allow(dead_code, unreachable_pub)]
#[path = "../../router-agent/src/config_paid.rs"]
mod config_paid;

#[path = "../checks/config.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check::check(data);
});
