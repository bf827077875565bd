//! Arbitrary client packets never panic the core and are all accounted for.
#![allow(clippy::unwrap_used)]

use ferry_netstack::{NetStack, NetstackConfig};
use proptest::prelude::*;
use smoltcp::time::{Duration, Instant};

/// Byte strings that look like IPv4/IPv6 TCP/UDP headers often enough to go deep.
fn packetish() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(0x45u8), Just(0x60u8), any::<u8>()],
        prop_oneof![Just(6u8), Just(17u8), any::<u8>()],
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(first, proto, mut rest)| {
            rest.insert(0, first);
            if rest.len() > 9 && first == 0x45 {
                rest[9] = proto;
                let len = rest.len() as u16;
                rest[2..4].copy_from_slice(&len.to_be_bytes());
            }
            if rest.len() > 6 && first == 0x60 {
                rest[6] = proto;
                let len = rest.len().saturating_sub(40) as u16;
                rest[4..6].copy_from_slice(&len.to_be_bytes());
            }
            rest
        })
}

proptest! {
    #[test]
    fn arbitrary_packets_never_panic_and_are_counted(pkts in proptest::collection::vec(packetish(), 1..40)) {
        let mut now = Instant::from_secs(1);
        let mut core = NetStack::new(NetstackConfig::default(), 9, now);
        for p in &pkts {
            core.handle_client_packet(p, now);
            core.poll(now);
            while core.poll_event().is_some() {}
            while let Some(out) = core.poll_client_packet() {
                prop_assert!(out.len() <= 1420);
            }
            now += Duration::from_millis(3);
        }
        prop_assert_eq!(core.stats().packets_in, pkts.len() as u64);
    }
}
