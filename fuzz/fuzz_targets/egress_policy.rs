//! Fuzzed allow/deny/router-address lists and destinations against `EgressPolicy`:
//! decision order, household ranges blocked unless allowed, v4 == v4-mapped v6 == NAT64 v6.
//! Check in `checks/policy.rs`, replayed by `relay/core/tests/fuzz_replay_policy.rs`.
#![no_main]

#[path = "../checks/input.rs"]
mod input;
#[path = "../checks/policy.rs"]
mod policy;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    policy::check(data);
});
