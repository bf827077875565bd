//! The project demo (`scripts/demo.sh`, `ferry-demo`) as a test: the same library function,
//! [`ferry_e2e::demo::run`], with its numbers checked. A client buys a voucher from the real
//! `ferry-ledger`, chooses the cheaper of two listed relays (`ferry connect --auto`), pays the
//! real `ferry-agent` (paid mode, TUN egress),
//! downloads 20 MiB from the internet host and disconnects (final receipt).
//! Needs root: `cargo test -p ferry-e2e --test demo -- --ignored`.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;

use ferry_e2e::demo::{DemoOptions, run};
use ferry_e2e::topology::ROUTER_UP4;

#[test]
#[ignore = "needs root: netns"]
fn demo_bills_exactly_what_the_agent_metered_and_leaves_nothing_behind() {
    let opts = DemoOptions::default();
    let r = run(&opts, &AtomicBool::new(false)).unwrap();
    eprintln!("{r:#?}");
    let (seq, up, down) = r.final_receipt;
    let final_total = up + down;

    // Traffic went through the relay and left from the router's address.
    assert_eq!(r.downloaded, opts.download_bytes);
    assert_eq!(r.inet_saw.unwrap().ip(), IpAddr::from(ROUTER_UP4));
    // The owner's total share cap held (TCP payload below the cap on inner IP bytes, +2 %
    // for the 64 KiB burst and timing).
    let cap = opts.share_down_mbit as f64;
    assert!(
        r.download_mbit <= cap * 1.02,
        "{} Mbit/s over the {cap} cap",
        r.download_mbit
    );

    // Several receipts (1 MiB cadence over 20 MiB), every one co-signed and stored by both.
    assert!(r.client_cosigned >= 2, "{r:?}");
    assert_eq!(r.client_cosigned, seq, "client co-signed every receipt");
    assert_eq!(r.agent_stored, seq, "agent stored every co-signed receipt");
    assert!(r.final_acked && r.agent_closed_acknowledged, "{r:?}");

    // Ledger credit == final co-signed receipt == what the agent metered (its own log and
    // its /metrics); the final receipt covers the download and matches the client's count
    // within the client's tolerance (2 % + 1 MiB).
    assert_eq!(r.ledger_credited_bytes, final_total);
    assert_eq!(r.agent_metered, final_total);
    if let Some(m) = r.agent_metrics_earned {
        assert_eq!(m, final_total);
    }
    assert!(down >= opts.download_bytes, "{r:?}");
    assert!(final_total <= r.client_counted + r.client_counted / 50 + (1 << 20));
    assert!(r.client_counted <= final_total + final_total / 50 + (1 << 20));
    // The client chose from the directory: two relays listed, the cheaper (home) one taken,
    // and billed at its own price.
    assert_eq!(r.listed, 2, "{r:?}");
    assert_eq!(r.chosen, r.relay_key);
    assert!(r.choice_reason.contains("cheapest"), "{r:?}");
    assert!(r.relay_price_micros_per_gib < r.other_price_micros_per_gib);
    assert_eq!(
        r.ledger_earned_micros,
        ((u128::from(final_total) * u128::from(r.relay_price_micros_per_gib)) >> 30) as u64
    );
    assert!((1..=seq).contains(&r.ledger_receipts), "{r:?}");
    assert_eq!(
        r.voucher_used_micros,
        ferry_receipts::money::debit_micros(final_total, r.relay_price_micros_per_gib),
        "the voucher paid the chosen relay's price"
    );

    // The client paid the voucher price, exactly once.
    let cost = (u128::from(opts.voucher_bytes) * u128::from(r.price_micros_per_gib))
        .div_ceil(1 << 30) as u64;
    assert_eq!(r.balance_before, opts.deposit_micros);
    assert_eq!(r.voucher_cost, cost);
    assert_eq!(r.balance_after, opts.deposit_micros - cost);

    // Nothing left behind.
    assert_eq!(r.namespaces.len(), 4);
    assert!(r.leftover_namespaces.is_empty(), "{r:?}");
    let list =
        ferry_e2e::netns::run(std::process::Command::new("ip").args(["netns", "list"])).unwrap();
    for ns in &r.namespaces {
        assert!(!list.contains(ns.as_str()), "{ns} still exists: {list}");
    }
}
