//! The relay's packet entry points (`Relay::handle_udp`, `handle_tun`, timers) driven by a
//! fuzzed operation sequence around one real boringtun session; arbitrary inner packets go
//! through the packet classifier and egress policy. Check in `checks/relay.rs`, replayed by
//! `relay/core/tests/fuzz_replay_relay.rs`.
#![no_main]

#[path = "../checks/input.rs"]
mod input;
#[allow(dead_code)]
#[path = "../checks/policy.rs"]
mod policy;
#[path = "../checks/relay.rs"]
mod relay;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    relay::check(data);
});
