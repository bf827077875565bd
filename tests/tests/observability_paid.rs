//! The receipt metrics of a paid ferry-agent (TUN egress, `[paid]`, real ferry-ledger on the
//! internet host, in-process paying client of `ferry_e2e::metering`), read from `/metrics` on
//! the router's loopback and checked against what the client and the ledger saw:
//! issued ≥ co-signed = receipts the client co-signed, earned bytes = the latest co-signed
//! receipt's total (all traffic covered), fsyncs timed, nothing pending once the ledger credited; an over-claiming relay
//! shows the client's refusal in `ferry_receipts_rejected_total`.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferry_e2e::agent::{AgentConfig, Egress, agent_binary};
use ferry_e2e::metering::{
    Behaviour, ClientSpec, Ledger, PaidClient, UdpCounter, agent_test_binary, paid_sections,
    start_agent,
};
use ferry_e2e::netns::Ns;
use ferry_e2e::observability::{http_get, sample};
use ferry_e2e::paid_lab::PaidLab;
use ferry_e2e::topology::{INET4, ROUTER_WAN4, Topology};
use ferry_e2e::wait::wait_until;
use ferry_e2e::wg::{KeyPair, tunnel};
use ferry_receipts::SigningKey;

const SINK_PORT: u16 = 9000;

struct Paid {
    topo: Topology,
    ledger: Ledger,
    relay_id: SigningKey,
    spec: ClientSpec,
    _sink: UdpCounter,
}

fn setup(metering: &str, test_hooks: bool) -> Paid {
    let bin = if test_hooks {
        agent_test_binary().unwrap()
    } else {
        agent_binary().unwrap()
    };
    let PaidLab {
        mut topo,
        dir,
        id_file,
        relay_id,
        client_id,
        ledger,
        voucher,
        sink,
        relay_wg,
        key_file,
    } = PaidLab::build(SINK_PORT, true).unwrap();
    let mut cfg = AgentConfig::new(Egress::Tun);
    cfg.extra = paid_sections(&id_file, &ledger, &dir.join("state"), metering);
    let config = dir.join("agent.toml");
    std::fs::write(&config, cfg.render(&key_file, &topo.lab.ifname("ft"))).unwrap();
    start_agent(&mut topo.lab, &topo.router, &bin, &config, "agent").unwrap();
    // "ferry-agent starting" is logged before the TUN device and the metrics server are up.
    wait_until(Duration::from_secs(20), "agent /healthz", || {
        http_get(&topo.router, "http://127.0.0.1:9586/healthz", None).is_ok_and(|r| r.0 == 200)
    })
    .unwrap();
    let spec = ClientSpec {
        wg: KeyPair::generate().unwrap(),
        identity: client_id,
        voucher,
        relay_identity: relay_id.public_key(),
        relay_wg: relay_wg.public_key(),
        endpoint: SocketAddr::from((ROUTER_WAN4, tunnel::RELAY_PORT)),
        hello: SocketAddr::from((ROUTER_WAN4, ferry_metering::CONTROL_PORT)),
        target: SocketAddr::from((INET4, SINK_PORT)),
        payload: 1000,
        behaviour: Behaviour::Honest,
    };
    Paid {
        topo,
        ledger,
        relay_id,
        spec,
        _sink: sink,
    }
}

fn metric(router: &Ns, series: &str) -> u64 {
    let (code, text) = http_get(router, "http://127.0.0.1:9586/metrics", None).unwrap();
    assert_eq!(code, 200, "{text}");
    sample(&text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}")) as u64
}

/// Polls `series` until `ok` (metrics lag the client by one scheduling round at most).
fn wait_metric(router: &Ns, series: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = metric(router, series);
        if ok(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{series} stuck at {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs root: netns"]
fn receipt_metrics_match_the_clients_receipts_and_the_ledger() {
    let p = setup(
        "receipt-every-mib = 0.25\nreceipt-every-secs = 1\ncredit-window-mib = 2\n",
        false,
    );
    let router = p.topo.router.clone();
    let client = PaidClient::start(&p.topo.client, p.spec.clone()).unwrap();
    client
        .wait(Duration::from_secs(10), "session accepted", |r| {
            r.address.is_some()
        })
        .unwrap();
    client.set_rate(200);
    std::thread::sleep(Duration::from_secs(3));
    // Mid-session: bytes served beyond the last stored co-signed receipt are bounded by W.
    let unacked = metric(&router, "ferry_unacknowledged_bytes");
    assert!(unacked <= 2 << 20, "unacknowledged {unacked} > W");
    client.set_rate(0);
    // Without new traffic the relay issues one more receipt for the rest (receipt-every-secs);
    // wait until the client co-signed and got acks for everything it sent and received.
    let r = client
        .wait(
            Duration::from_secs(15),
            "all traffic co-signed and acked",
            |r| {
                r.cosigned.last().is_some_and(|c| {
                    c.body().bytes_up == r.up_bytes && c.body().bytes_down == r.down_bytes
                }) && r.acked.len() == r.cosigned.len()
            },
        )
        .unwrap();
    let fin = *r.cosigned.last().unwrap();
    let total = fin.body().total_bytes();
    assert!(r.cosigned.len() >= 4, "{}", r.cosigned.len());

    let cosigned = wait_metric(&router, "ferry_receipts_cosigned_total", |v| {
        v >= r.cosigned.len() as u64
    });
    assert_eq!(cosigned, r.cosigned.len() as u64);
    let issued = metric(&router, "ferry_receipts_issued_total");
    assert!(issued >= cosigned, "issued {issued} < co-signed {cosigned}");
    assert_eq!(metric(&router, "ferry_earned_bytes_total"), total);
    assert_eq!(metric(&router, "ferry_receipts_rejected_total"), 0);
    // Every stored receipt was fsynced and timed.
    let fsyncs = metric(&router, "ferry_store_fsync_seconds_count");
    assert!(fsyncs >= 1, "fsync histogram empty");
    // The ledger takes them all; nothing stays pending.
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.ledger.relay_credit(&p.relay_id.public_key()).unwrap().0 != total {
        assert!(Instant::now() < deadline, "ledger did not credit {total}");
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_metric(&router, "ferry_receipts_pending", |v| v == 0);
    let submitted = wait_metric(&router, "ferry_receipts_submitted_total", |v| v >= 1);
    assert!(submitted <= cosigned, "submitted {submitted} > co-signed");
    wait_metric(&router, "ferry_unacknowledged_bytes", |v| v == 0);
}

#[test]
#[ignore = "needs root: netns"]
fn a_client_refusing_an_over_claim_is_counted_as_rejected() {
    let p = setup(
        "receipt-every-mib = 0.25\nreceipt-every-secs = 1\ncredit-window-mib = 8\ntest-overclaim-percent = 50\n",
        true,
    );
    let router = p.topo.router.clone();
    assert_eq!(metric(&router, "ferry_receipts_rejected_total"), 0);
    let client = PaidClient::start(&p.topo.client, p.spec.clone()).unwrap();
    client
        .wait(Duration::from_secs(10), "session accepted", |r| {
            r.address.is_some()
        })
        .unwrap();
    client.set_rate(400);
    client
        .wait(Duration::from_secs(30), "an over-claim refused", |r| {
            r.rejected.is_some()
        })
        .unwrap();
    wait_metric(&router, "ferry_receipts_rejected_total", |v| v == 1);
}
