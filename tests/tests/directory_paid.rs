//! The directory with real processes: a ferry-agent with a relay key nobody registered joins
//! by itself (self-registration signed by the key), announces its descriptor, the real
//! ferry-ledger probes its Hello port from the internet host and lists it; the listing carries
//! the relay's and the ledger's signatures. A router whose Hello port is firewalled is never
//! listed, and its agent says why in the log, `/status` and `/metrics`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_e2e::agent::{AgentConfig, Egress, agent_binary};
use ferry_e2e::metering::{paid_sections, random_seed, start_agent, write_identity};
use ferry_e2e::observability::{http_get, sample};
use ferry_e2e::paid_lab::PaidLab;
use ferry_e2e::topology::ROUTER_UP4;
use ferry_e2e::wait::wait_until;
use ferry_receipts::{DirectoryAnnotation, RelayDescriptor, SigningKey};

const DIRECTORY: &str = "\n[directory]\ncountry = \"NL\"\nregion = \"Amsterdam\"\n\
                         price-micros-per-gib = 700000\nabuse-contact = \"abuse@example.org\"\n";

struct Listed {
    lab: PaidLab,
    relay: SigningKey,
    config: std::path::PathBuf,
}

/// A paid agent with `[directory]` and a fresh, unregistered identity; `firewall` drops the
/// Hello port on the router before the agent starts.
fn start(firewall: bool) -> Listed {
    let mut lab = PaidLab::build(9000, false).unwrap();
    let (id_file, relay) =
        write_identity(&lab.dir, "stranger.key", random_seed().unwrap()).unwrap();
    if firewall {
        lab.topo
            .router
            .exec(&[
                "nft",
                "add table inet ferrytest; add chain inet ferrytest hold { type filter hook \
                 input priority -300; }; add rule inet ferrytest hold udp dport 51821 drop",
            ])
            .unwrap();
    }
    let mut cfg = AgentConfig::new(Egress::Tun);
    cfg.extra = paid_sections(&id_file, &lab.ledger, &lab.dir.join("state"), "") + DIRECTORY;
    let config = lab.dir.join("agent.toml");
    std::fs::write(
        &config,
        cfg.render(&lab.key_file, &lab.topo.lab.ifname("fd")),
    )
    .unwrap();
    start_agent(
        &mut lab.topo.lab,
        &lab.topo.router,
        &agent_binary().unwrap(),
        &config,
        "agent",
    )
    .unwrap();
    Listed { lab, relay, config }
}

fn relays(lab: &PaidLab, query: &str) -> serde_json::Value {
    let url = format!("{}/v1/relays?{query}", lab.ledger.url);
    let out = lab
        .topo
        .inet
        .exec(&["curl", "-sS", "-m", "5", &url])
        .unwrap();
    serde_json::from_str(&out).unwrap()
}

fn status(lab: &PaidLab) -> serde_json::Value {
    let (code, body) = http_get(&lab.topo.router, "http://127.0.0.1:9586/status", None).unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn metrics(lab: &PaidLab) -> String {
    http_get(&lab.topo.router, "http://127.0.0.1:9586/metrics", None)
        .unwrap()
        .1
}

#[test]
#[ignore = "needs root (network namespaces)"]
fn a_stranger_relay_joins_by_itself_and_is_listed_with_both_signatures() {
    let Listed { lab, relay, config } = start(false);
    let t0 = Instant::now();
    wait_until(Duration::from_secs(20), "listed", || {
        lab.topo
            .lab
            .log("agent")
            .contains("listed in the relay directory")
    })
    .unwrap();
    let joined = t0.elapsed();
    let ledger_log = lab.topo.lab.log("ferry-ledger");
    assert!(
        ledger_log.contains("relay registered by its first announce"),
        "{ledger_log}"
    );
    let list = relays(&lab, "country=NL");
    let items = list["relays"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    let d = RelayDescriptor::decode(
        &B64.decode(items[0]["descriptor"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let a = DirectoryAnnotation::decode(
        &B64.decode(items[0]["annotation"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    d.verify(&lab.ledger.network_id, ferry_store::unix_now(), 300)
        .unwrap();
    a.verify(&lab.ledger.network_id, &lab.ledger.ledger_key)
        .unwrap();
    assert_eq!(a.descriptor_id, d.id());
    assert_eq!(d.relay_key, relay.public_key());
    assert_eq!(d.wg_key, *lab.relay_wg.public_key().as_bytes());
    assert_eq!(d.price_micros_per_gib, 700_000);
    assert_eq!((d.country_code(), d.region.as_str()), ("NL", "Amsterdam"));
    // The address the router uses towards the ledger, with the WireGuard and Hello ports.
    assert_eq!(d.ipv4.unwrap().to_string(), format!("{ROUTER_UP4}:51820"));
    assert_eq!(d.hello_port, 51821);
    assert_eq!(
        (a.reachable, a.probes_ok, a.probes_total, a.score),
        (1, 1, 1, 400)
    );
    assert!(a.probe_rtt_micros > 0 && a.probe_rtt_micros < 100_000);
    assert!(
        relays(&lab, "country=DE")["relays"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // The agent's own view.
    let s = status(&lab);
    let dir = &s["paid"]["directory"];
    assert_eq!(dir["listed"], true, "{s}");
    assert_eq!(dir["seen_from"], ROUTER_UP4.to_string());
    assert!(dir["probes_answered"].as_u64().unwrap() >= 1);
    let m = metrics(&lab);
    assert_eq!(sample(&m, "ferry_directory_listed"), Some(1.0), "{m}");
    assert!(sample(&m, "ferry_directory_probes_total{result=\"answered\"}").unwrap() >= 1.0);
    // `ferry-agent descriptor` prints the same terms.
    let out = lab
        .topo
        .router
        .exec(&[
            agent_binary().unwrap().to_str().unwrap(),
            "descriptor",
            "--config",
            config.to_str().unwrap(),
        ])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["relay_key"], relay.public_key().to_hex());
    assert_eq!(v["price_micros_per_gib"], 700_000);
    eprintln!("joined and listed {joined:?} after the agent was started");
}

#[test]
#[ignore = "needs root (network namespaces)"]
fn a_firewalled_hello_port_is_never_listed_and_the_agent_says_why() {
    let Listed { lab, .. } = start(true);
    wait_until(Duration::from_secs(30), "diagnosis in the log", || {
        lab.topo.lab.log("agent").contains("Hello port closed")
    })
    .unwrap();
    let log = lab.topo.lab.log("agent");
    assert!(log.contains("not listed in the relay directory"), "{log}");
    assert!(log.contains(&format!("{ROUTER_UP4}:51821")), "{log}");
    assert!(relays(&lab, "")["relays"].as_array().unwrap().is_empty());
    let s = status(&lab);
    let dir = &s["paid"]["directory"];
    assert_eq!(dir["listed"], false, "{s}");
    let codes: Vec<&str> = dir["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"hello_port_closed"), "{s}");
    let m = metrics(&lab);
    assert_eq!(sample(&m, "ferry_directory_listed"), Some(0.0), "{m}");
    assert_eq!(
        sample(&m, "ferry_directory_problem{code=\"hello_port_closed\"}"),
        Some(1.0)
    );
}
