//! The open market end to end, with real processes only (ferry-agent ×4, ferry-ledger, ferry):
//! four relays at different prices and countries join and announce themselves; the one whose
//! Hello port is firewalled is never listed and its agent says why; `ferry connect --auto`
//! pings the listed ones and picks the documented best (the cheapest, all else equal), which
//! over-claims: the client refuses its receipt, fails over to the next relay behind the kill
//! switch, and the refusal drops the over-claimer's listed score. Killing the relay in use
//! (kill -9) mid-download puts the client on the next one within 10 s, the kill switch never
//! lifted (a packet sent around the tunnel never arrives); each relay is credited exactly at
//! its own price and the voucher debited the sum. Then `ferry socks5 --auto` leaves the
//! over-claimer (its score is now far below the best) and the dead relay out.
//! Needs root: `cargo test -p ferry-e2e --test market_auto -- --ignored --test-threads=1`.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_e2e::market::{CLIENT4, DATA4, Market};
use ferry_e2e::observability::http_get;
use ferry_e2e::servers::{Download, TcpService, fetch};
use ferry_e2e::wait::{wait_for, wait_until};
use ferry_receipts::money::{debit_micros, earned_micros};

const METERING: &str = "receipt-every-mib = 0.25\nreceipt-every-secs = 1\ncredit-window-mib = 8\n";

fn status(m: &Market) -> serde_json::Value {
    let text = std::fs::read_to_string(m.home.state.join("status.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

fn current(m: &Market) -> String {
    status(m)["choice"]["current"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn connected_to(m: &Market, key: &str) -> bool {
    let s = status(m);
    s["state"] == "connected" && s["choice"]["current"] == key
}

fn listing(m: &Market, key: &str) -> Option<serde_json::Value> {
    let out = m.home.cli(&m.client, &["relays", "--json"]).ok()?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v.as_array()?
        .iter()
        .find(|l| l["relay_key"] == key)
        .cloned()
}

#[test]
#[ignore = "needs root (network namespaces)"]
fn auto_picks_the_documented_best_fails_over_behind_the_kill_switch_and_bills_each_at_its_price() {
    let mut m = Market::build(4).unwrap();
    let data = TcpService::start(&m.inet, SocketAddr::from((DATA4, 8000)), "inet").unwrap();
    // R0 DE 300k honest; R1 NL 200k over-claims (+50 %); R2 FR 400k honest; R3 SE 100k,
    // the cheapest, with its Hello port firewalled.
    let r0 = m.start_relay(0, "DE", 300_000, METERING, false).unwrap();
    let r1 = m
        .start_relay(
            1,
            "NL",
            200_000,
            &format!("{METERING}test-overclaim-percent = 50\n"),
            false,
        )
        .unwrap();
    let r2 = m.start_relay(2, "FR", 400_000, METERING, false).unwrap();
    let r3 = m.start_relay(3, "SE", 100_000, METERING, true).unwrap();
    let hex = |k: &ferry_receipts::SigningKey| k.public_key().to_hex();
    let (k0, k1, k2, k3) = (hex(&r0.key), hex(&r1.key), hex(&r2.key), hex(&r3.key));

    // Listed: the three that answered the directory's probe; never the firewalled one, whose
    // agent says why.
    wait_until(Duration::from_secs(30), "three relays listed", || {
        [&k0, &k1, &k2].iter().all(|k| listing(&m, k).is_some())
    })
    .unwrap();
    assert!(
        listing(&m, &k3).is_none(),
        "a relay with a closed Hello port is never listed"
    );
    let dir = wait_for(Duration::from_secs(30), "R3's diagnosis", || {
        let (_, body) = http_get(&m.routers[3], "http://127.0.0.1:9586/status", None).ok()?;
        let s: serde_json::Value = serde_json::from_str(&body).ok()?;
        let d = s["paid"]["directory"].clone();
        d["problems"]
            .as_array()?
            .iter()
            .any(|p| p["code"] == "hello_port_closed")
            .then_some(d)
    })
    .unwrap();
    assert_eq!(dir["listed"], false, "{dir}");
    assert!(m.lab.log("agent3").contains("Hello port closed"));
    assert_eq!(
        listing(&m, &k1).unwrap()["score"],
        400,
        "a new reachable relay starts at 400"
    );

    m.home
        .cli(&m.client, &["voucher", "request", "--bytes", "1GiB"])
        .unwrap();
    // Positive control for the leak probe: without the kill switch a packet around the
    // tunnel arrives.
    let leak_probe = |m: &Market| {
        m.client
            .exec_unchecked(&[
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "-I",
                &m.client_if,
                &DATA4.to_string(),
            ])
            .is_ok_and(|o| o.status.success())
    };
    assert!(leak_probe(&m), "the probe reaches inet outside any tunnel");

    let tun = m.lab.ifname("fc");
    let argv = m
        .home
        .argv(&["connect", "--auto", "--tun", &tun, "--no-dns"])
        .unwrap();
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let connect = m
        .lab
        .spawn_env(
            &m.client,
            "ferry-connect",
            &refs,
            &[("FERRY_LOG", "info,ferry=debug")],
        )
        .unwrap();
    wait_until(
        Duration::from_secs(20),
        "connected to the first choice",
        || status(&m)["state"] == "connected",
    )
    .unwrap();
    let st = status(&m);
    // The documented best: all scores 400 and round trips alike, so the cheapest listed.
    let ranked: Vec<String> = st["choice"]["ranked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["relay_key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ranked, vec![k1.clone(), k0.clone(), k2.clone()], "{st}");
    assert_eq!(st["choice"]["current"], k1.as_str());
    assert_eq!(st["price_micros_per_gib"], 200_000);
    let reason = st["choice"]["reason"].as_str().unwrap();
    assert!(reason.contains("cheapest (200000 micros/GiB"), "{reason}");
    let shown = m.home.cli(&m.client, &["status"]).unwrap();
    assert!(
        shown.contains("chosen:") && shown.contains("good enough"),
        "{shown}"
    );

    // Watch the kill switch and the leak probe from now on.
    let stop = Arc::new(AtomicBool::new(false));
    let (lifted, leaked) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let watcher = {
        let (client, ifname) = (m.client.clone(), m.client_if.clone());
        let (stop, lifted, leaked) = (stop.clone(), lifted.clone(), leaked.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if client
                    .exec(&["nft", "list", "table", "inet", "ferry"])
                    .is_err()
                {
                    lifted.fetch_add(1, Ordering::Relaxed);
                }
                let out = client.exec_unchecked(&[
                    "ping",
                    "-c",
                    "1",
                    "-W",
                    "0.2",
                    "-I",
                    &ifname,
                    &DATA4.to_string(),
                ]);
                if out.is_ok_and(|o| o.status.success()) {
                    leaked.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // Through the over-claimer: the client refuses its receipt and moves to the next (R0).
    let _ = fetch(
        &m.client,
        SocketAddr::from((DATA4, 8000)),
        8 << 20,
        Duration::from_secs(5),
    );
    wait_until(
        Duration::from_secs(30),
        "failover from the over-claimer to R0",
        || connected_to(&m, &k0),
    )
    .unwrap();
    let st = status(&m);
    let fo = st["choice"]["failovers"][0].as_str().unwrap().to_owned();
    assert!(fo.starts_with(&k1[..16]) && fo.ends_with(&k0[..16]), "{fo}");
    assert_eq!(st["price_micros_per_gib"], 300_000);
    // The refusal reached the directory (through the new tunnel): the over-claimer's score
    // drops to 0 (honesty factor) and its factors show the refusal.
    let l1 = wait_for(
        Duration::from_secs(60),
        "the over-claimer's score to drop",
        || listing(&m, &k1).filter(|l| l["factors"]["refusals"] == 1),
    )
    .unwrap();
    assert_eq!(l1["score"], 0, "{l1}");

    // Mid-download through R0, kill -9 its agent.
    let mut dl = Download::start(
        &m.client,
        SocketAddr::from((DATA4, 8000)),
        64 << 20,
        Duration::from_secs(3),
    )
    .unwrap();
    dl.read_to(4 << 20).unwrap();
    // Something co-signed with R0 first (a relay killed before any receipt is simply unpaid).
    wait_until(
        Duration::from_secs(10),
        "a co-signed receipt from R0",
        || {
            let s = status(&m);
            s["choice"]["current"] == k0.as_str() && s["last_receipt"]["seq"].as_u64() >= Some(1)
        },
    )
    .unwrap();
    dl.read_to(8 << 20).unwrap();
    let killed = Instant::now();
    std::process::Command::new("kill")
        .args(["-9", &r0.proc.pid().to_string()])
        .status()
        .unwrap();
    let _ = dl.read_to(64 << 20); // the connection dies with R0's NAT state
    wait_until(
        Duration::from_secs(10),
        "on R2 within 10 s of the kill",
        || connected_to(&m, &k2),
    )
    .unwrap();
    let took = killed.elapsed();
    assert!(took <= Duration::from_secs(10), "{took:?}");
    let got = fetch(
        &m.client,
        SocketAddr::from((DATA4, 8000)),
        2 << 20,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        got.peer_seen.ip(),
        std::net::IpAddr::V4(ferry_e2e::market::relay_wan(2)),
        "the data service sees R2"
    );
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert_eq!(
        lifted.load(Ordering::Relaxed),
        0,
        "the kill switch was lifted"
    );
    assert_eq!(
        leaked.load(Ordering::Relaxed),
        0,
        "a packet around the tunnel arrived"
    );
    assert!(
        data.seen()
            .iter()
            .all(|p| p.ip() != std::net::IpAddr::V4(CLIENT4))
    );

    // Disconnect (final receipt with R2), then each relay is credited at its own price and the
    // voucher debited exactly the sum; the over-claimer, refused at its first claim, nothing.
    let out = m.home.cli(&m.client, &["disconnect"]).unwrap();
    let _ = out;
    m.lab.stop(connect, Duration::from_secs(5));
    let voucher_text = std::fs::read_to_string(m.home.dir.join("voucher")).unwrap();
    let voucher = ferry_receipts::Voucher::decode(
        &base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            voucher_text.trim(),
        )
        .unwrap(),
    )
    .unwrap();
    let pk = |k: &ferry_receipts::SigningKey| k.public_key();
    let mut last = (0, 0, 0);
    let settled = wait_until(
        Duration::from_secs(30),
        "the ledger credits both sessions",
        || {
            let c0 = m.ledger.relay_credit(&pk(&r0.key)).unwrap();
            let c2 = m.ledger.relay_credit(&pk(&r2.key)).unwrap();
            let used = m.ledger.voucher_used(&voucher.id()).unwrap_or(0);
            let now = (c0.0, c2.0, used);
            let settled = now == last && c0.0 > 0 && c2.0 > 0;
            last = now;
            std::thread::sleep(Duration::from_millis(200));
            settled
        },
    );
    if let Err(e) = settled {
        panic!("{e}: {last:?}\n{}", m.lab.log("ferry-connect"));
    }
    let (c0, e0) = m.ledger.relay_credit(&pk(&r0.key)).unwrap();
    let (c1, e1) = m.ledger.relay_credit(&pk(&r1.key)).unwrap();
    let (c2, e2) = m.ledger.relay_credit(&pk(&r2.key)).unwrap();
    let used = m.ledger.voucher_used(&voucher.id()).unwrap();
    assert_eq!(e0, earned_micros(c0, r0.price));
    assert_eq!(e2, earned_micros(c2, r2.price));
    assert_eq!((c1, e1), (0, 0), "nothing co-signed for the over-claimer");
    assert_eq!(
        used,
        debit_micros(c0, r0.price) + debit_micros(c2, r2.price)
    );
    eprintln!(
        "market: R1 refused and left, R0 killed -> R2 in {took:?}; R0 {c0} B at {} = {e0} µ, \
         R2 {c2} B at {} = {e2} µ, voucher used {used} µ; kill switch lifted 0 times, 0 leaks",
        r0.price, r2.price
    );

    // socks5 --auto now: R0 is dead (no ping answer), R1's score is far below the best (a
    // fallback), so R2 is chosen although R1 is cheaper.
    let argv = m
        .home
        .argv(&["socks5", "--auto", "--listen", "127.0.0.1:10800"])
        .unwrap();
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let socks = m.lab.spawn(&m.client, "ferry-socks5", &refs).unwrap();
    wait_until(Duration::from_secs(20), "socks5 --auto connected", || {
        status(&m)["state"] == "connected" && status(&m)["mode"] == "socks5"
    })
    .unwrap();
    let st = status(&m);
    assert_eq!(current(&m), k2, "{st}");
    let tiers: Vec<(String, serde_json::Value)> = st["choice"]["ranked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["relay_key"].as_str().unwrap().to_owned(),
                r["tier"].clone(),
            )
        })
        .collect();
    assert!(
        tiers.contains(&(k1.clone(), serde_json::json!(1))),
        "{tiers:?}"
    );
    assert!(
        tiers.contains(&(k0.clone(), serde_json::Value::Null)),
        "{tiers:?}"
    );
    m.lab.stop(socks, Duration::from_secs(5));
}
