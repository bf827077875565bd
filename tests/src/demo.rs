//! The Ferry demo as one library function ([`run`]), shared by the `ferry-demo` binary
//! (`scripts/demo.sh`) and the `demo` end-to-end test, so the test checks exactly what the demo
//! shows.
//!
//! Flow: binaries → namespaces (client, router with LAN, internet host) → `ferry-ledger` on the
//! internet host (init, relay + client registered, client credited) → `ferry voucher request`
//! from the client → `ferry-agent` in paid mode on the router, and a second relay (a stranger
//! that registers itself) on the same router, both announcing to the directory → `ferry
//! relays` → `ferry connect --auto` (the client chooses: the cheaper one) and a download
//! from the internet host → `ferry status`, `ferry disconnect` (final receipt) → ledger credit
//! checked against the final co-signed receipt and the agent's own receipt log → cleanup.
//!
//! Must not: touch anything outside its [`Lab`](crate::netns::Lab) (names `fe<pid>x<n>…`; `ferry connect` runs with
//! `--no-dns`, so no resolv.conf is rewritten), or leave namespaces or processes behind: the
//! lab is dropped before [`run`] returns, also on errors and on cancellation.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferry_receipts::CoSignedReceipt;

use crate::agent::{Agent, AgentConfig, Egress};
use crate::client::FerryHome;
use crate::netns::{Ns, ProcId, run as run_cmd};
use crate::servers::{TcpService, fetch};
use crate::topology::{
    CLIENT_WAN4, DATA_PORT, INET4, ROUTER_UP4, ROUTER_WAN4, ROUTER_WAN6, Topology, sa,
};
use crate::wg::KeyPair;

/// Ledger port on the internet host.
pub const LEDGER_PORT: u16 = 7878;
/// Agent metrics on the router's loopback.
const METRICS: &str = "127.0.0.1:9586";

/// What the demo does; [`Default`] is the documented demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Bytes downloaded from the internet host through the relay.
    pub download_bytes: u64,
    /// `[metering] receipt-every-mib` of the agent.
    pub receipt_every_mib: f64,
    /// Voucher allowance the client buys.
    pub voucher_bytes: u64,
    /// What the operator credits to the client's ledger balance (micros).
    pub deposit_micros: u64,
    /// The home relay's `[limits] share-down-mbit` (all paying clients together; 0 = none).
    pub share_down_mbit: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            download_bytes: 20 << 20,
            receipt_every_mib: 1.0,
            voucher_bytes: 256 << 20,
            deposit_micros: 1_000_000,
            share_down_mbit: 30,
        }
    }
}

/// What the demo measured (all numbers are read from the programs, none computed by the demo
/// except `voucher_cost_expected`).
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    /// Namespaces the demo created (all deleted when [`run`] returns).
    pub namespaces: Vec<String>,
    /// Which profile the binaries were built with.
    pub profile: String,
    /// Payload bytes downloaded and verified.
    pub downloaded: u64,
    /// Download time.
    pub download_time: Duration,
    /// Its rate, TCP payload Mbit/s.
    pub download_mbit: f64,
    /// Source address the internet host saw.
    pub inet_saw: Option<SocketAddr>,
    /// Distinct receipts the client co-signed (its receipt log).
    pub client_cosigned: u64,
    /// Distinct co-signed receipts the agent stored (its receipt log).
    pub agent_stored: u64,
    /// Seq, up and down bytes of the final co-signed receipt (client status after disconnect).
    pub final_receipt: (u64, u64, u64),
    /// Whether the relay acknowledged the final receipt.
    pub final_acked: bool,
    /// The agent logged the session's end with the final receipt co-signed.
    pub agent_closed_acknowledged: bool,
    /// Bytes the agent metered: total of the latest receipt in its own store.
    pub agent_metered: u64,
    /// `ferry_earned_bytes_total` from the agent's /metrics, if it could be read.
    pub agent_metrics_earned: Option<u64>,
    /// The client's own inner byte count (up + down).
    pub client_counted: u64,
    /// Spend shown by `ferry status`.
    pub client_spend_micros: u64,
    /// Ledger: bytes credited to the relay.
    pub ledger_credited_bytes: u64,
    /// Ledger: micros earned by the relay.
    pub ledger_earned_micros: u64,
    /// Ledger: advancing receipts stored for the relay.
    pub ledger_receipts: u64,
    /// Price of the network, micros per GiB (the voucher's max price).
    pub price_micros_per_gib: u64,
    /// The home relay's own price (80 % of the network's), what its sessions are billed at.
    pub relay_price_micros_per_gib: u64,
    /// The second relay's price (90 % of the network's).
    pub other_price_micros_per_gib: u64,
    /// Relays the client saw in the directory (`ferry relays`).
    pub listed: usize,
    /// The relay `ferry connect --auto` chose (identity key hex), and why.
    pub chosen: String,
    /// The home relay's identity key (hex).
    pub relay_key: String,
    /// The reason `ferry status` gave.
    pub choice_reason: String,
    /// What the session debited from the voucher (ledger, micros).
    pub voucher_used_micros: u64,
    /// Client balance after the operator's credit, before the voucher.
    pub balance_before: u64,
    /// Client balance at the end.
    pub balance_after: u64,
    /// `cost_micros` the ledger charged for the voucher.
    pub voucher_cost: u64,
    /// `ceil(allowance × price / 2³⁰)`.
    pub voucher_cost_expected: u64,
    /// Namespaces of this demo still present after cleanup (should be empty).
    pub leftover_namespaces: Vec<String>,
    /// Time from the first namespace to the end of cleanup.
    pub elapsed: Duration,
}

/// Paths of the three programs.
#[derive(Debug, Clone)]
struct Bins {
    agent: PathBuf,
    ledger: PathBuf,
    ferry: PathBuf,
}

fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn header(n: u32, text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "\n[{n}/9] {text}");
}

fn indent(text: &str) -> String {
    text.lines().fold(String::new(), |mut s, l| {
        let _ = writeln!(s, "      {l}");
        s
    })
}

fn check_cancel(cancel: &AtomicBool) -> Result<()> {
    ensure!(!cancel.load(Ordering::Relaxed), "interrupted");
    Ok(())
}

/// Polls `f` every 100 ms until `Some`, failing after `timeout` or when cancelled.
fn poll<T>(
    cancel: &AtomicBool,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        check_cancel(cancel)?;
        if let Some(v) = f() {
            return Ok(v);
        }
        ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// First unsigned number after `"key":` in JSON text (compact or pretty).
pub fn json_u64(text: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let i = text.find(&pat)? + pat.len();
    let digits: String = text[i..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// First string value after `"key":`.
fn json_str(text: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":");
    let i = text.find(&pat)? + pat.len();
    let rest = text[i..].trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

/// Sum of the samples of a Prometheus metric (any labels).
fn metric_sum(text: &str, name: &str) -> Option<u64> {
    let mut found = None;
    for l in text.lines() {
        let Some(rest) = l.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let v: f64 = rest.rsplit(' ').next()?.trim().parse().ok()?;
        found = Some(found.unwrap_or(0) + v as u64);
    }
    found
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Step 1: `FERRY_AGENT_BIN`, `FERRY_LEDGER_BIN`, `FERRY_BIN` if all set (scripts/demo.sh
/// builds them), else one debug `cargo build` of the three.
fn binaries(report: &mut DemoReport) -> Result<Bins> {
    let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
    if let (Some(agent), Some(ledger), Some(ferry)) = (
        env("FERRY_AGENT_BIN"),
        env("FERRY_LEDGER_BIN"),
        env("FERRY_BIN"),
    ) {
        report.profile = std::env::var("FERRY_DEMO_PROFILE").unwrap_or_else(|_| "prebuilt".into());
        say(&format!(
            "      using {} binaries:\n      {}\n      {}\n      {}",
            report.profile,
            agent.display(),
            ledger.display(),
            ferry.display()
        ));
        return Ok(Bins {
            agent,
            ledger,
            ferry,
        });
    }
    let t = Instant::now();
    say(
        "      cargo build --locked (debug profile) -p ferry-agent -p ferry-ledger -p ferry-client",
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_cmd(Command::new(cargo).current_dir(workspace()).args([
        "build",
        "--quiet",
        "--locked",
        "-p",
        "ferry-agent",
        "--bin",
        "ferry-agent",
        "-p",
        "ferry-ledger",
        "--bin",
        "ferry-ledger",
        "-p",
        "ferry-client",
        "--bin",
        "ferry",
    ]))
    .context("building the demo binaries")?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("debug");
    report.profile = "debug".into();
    say(&format!(
        "      built in {:.1} s: {}/{{ferry-agent,ferry-ledger,ferry}}",
        t.elapsed().as_secs_f64(),
        target.display()
    ));
    Ok(Bins {
        agent: target.join("ferry-agent"),
        ledger: target.join("ferry-ledger"),
        ferry: target.join("ferry"),
    })
}

/// Runs the whole demo (needs root). The namespaces are gone when this returns, whatever the
/// outcome; `cancel` (e.g. set on Ctrl-C) stops it at the next step or poll.
pub fn run(opts: &DemoOptions, cancel: &AtomicBool) -> Result<DemoReport> {
    let mut report = DemoReport::default();
    header(1, "Binaries");
    let bins = binaries(&mut report)?;
    for p in [&bins.agent, &bins.ledger, &bins.ferry] {
        ensure!(p.exists(), "{} does not exist", p.display());
    }
    check_cancel(cancel)?;
    let t0 = Instant::now();
    header(2, "Network namespaces");
    let mut topo = Topology::build()?;
    report.namespaces = [&topo.client, &topo.router, &topo.inet, &topo.lan]
        .iter()
        .map(|n| n.name().to_owned())
        .collect();
    let outcome = flow(opts, cancel, &bins, &mut topo, &mut report);
    // Step 9 runs whatever happened: stop everything, delete the namespaces.
    let interrupted = cancel.load(Ordering::Relaxed);
    if outcome.is_err() && !interrupted && std::env::var_os("FERRY_E2E_LOGS").is_none() {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(topo.lab.dir())
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
        logs.sort();
        for p in logs {
            let log = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!("----- {} (last lines) -----", p.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
    header(9, "Cleanup");
    drop(topo);
    let list = run_cmd(Command::new("ip").args(["netns", "list"])).unwrap_or_default();
    report.leftover_namespaces = report
        .namespaces
        .iter()
        .filter(|n| list.lines().any(|l| l.split_whitespace().next() == Some(n)))
        .cloned()
        .collect();
    report.elapsed = t0.elapsed();
    if report.leftover_namespaces.is_empty() {
        say(&format!(
            "      processes stopped, namespaces {} deleted",
            report.namespaces.join(", ")
        ));
    } else {
        say(&format!(
            "      LEFT BEHIND: {:?}",
            report.leftover_namespaces
        ));
    }
    outcome?;
    ensure!(
        report.leftover_namespaces.is_empty(),
        "namespaces left behind: {:?}",
        report.leftover_namespaces
    );
    say(&format!(
        "\nDemo OK in {:.1} s (after the build).",
        report.elapsed.as_secs_f64()
    ));
    Ok(report)
}

/// Ledger admin CLI + HTTP, on the internet host.
struct LedgerCtl<'a> {
    bin: &'a Path,
    config: PathBuf,
    inet: Ns,
    url: String,
}

impl LedgerCtl<'_> {
    fn cli(&self, args: &[&str]) -> Result<String> {
        run_cmd(
            Command::new(self.bin)
                .arg(args[0])
                .arg("--config")
                .arg(&self.config)
                .args(&args[1..]),
        )
    }

    fn get(&self, path: &str) -> Result<String> {
        self.inet.exec(&[
            "curl",
            "-sS",
            "--max-time",
            "10",
            &format!("{}{path}", self.url),
        ])
    }
}

fn flow(
    opts: &DemoOptions,
    cancel: &AtomicBool,
    bins: &Bins,
    topo: &mut Topology,
    report: &mut DemoReport,
) -> Result<()> {
    // ---- 2. namespaces (built by the caller) + routes.
    // The client's only way out is its router's WAN side; the internet host may answer the
    // client's public address (needed for the voucher request before the tunnel exists).
    topo.client
        .route(&["default", "via", &ROUTER_WAN4.to_string()])?;
    topo.client
        .route(&["::/0", "via", &ROUTER_WAN6.to_string()])?;
    topo.inet
        .route(&["198.51.100.0/24", "via", &ROUTER_UP4.to_string()])?;
    say(&format!(
        "      client  {}  {CLIENT_WAN4}  (default via the router)\n      router  {}  WAN {ROUTER_WAN4}, uplink {ROUTER_UP4}, LAN 192.168.77.1 ({} behind it)\n      inet    {}  {INET4}  (internet host: ledger + data server)",
        topo.client.name(),
        topo.router.name(),
        topo.lan.name(),
        topo.inet.name()
    ));
    check_cancel(cancel)?;

    // ---- 3. ledger.
    header(
        3,
        "Rewards ledger (ferry-ledger, SQLite) on the internet host",
    );
    let ldir = topo.lab.dir().join("ledger");
    std::fs::create_dir_all(&ldir)?;
    let listen = sa(INET4, LEDGER_PORT);
    let ledger = LedgerCtl {
        bin: &bins.ledger,
        config: ldir.join("ledger.toml"),
        inet: topo.inet.clone(),
        url: format!("http://{listen}"),
    };
    ledger.cli(&["init"])?;
    let text = std::fs::read_to_string(&ledger.config)?;
    let patched: String = text
        .lines()
        .map(|l| {
            if l.starts_with("listen") {
                format!("listen = \"{listen}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&ledger.config, patched)?;
    let pk = ledger.cli(&["pubkey"])?;
    let (network_id, ledger_key) = crate::metering::ledger_pubkey_fields(&pk)?;
    say(&format!(
        "      ferry-ledger init   -> {}\n      network-id {network_id}\n      ledger-key {ledger_key}",
        ledger.config.display()
    ));

    // Relay keys: WireGuard (X25519) and the receipts identity via `ferry-agent identity`.
    let relay_wg = KeyPair::generate()?;
    let state_dir = topo.lab.dir().join("agent-state");
    let mut cfg = AgentConfig::new(Egress::Tun);
    // Bound to the address it announces (the router's uplink): a socket on 0.0.0.0 would
    // answer the client from the router's WAN-side address, which a client's connected
    // socket drops.
    cfg.listen = sa(ROUTER_UP4, 51820);
    cfg.limits_extra = format!("share-down-mbit = {}\n", opts.share_down_mbit);
    cfg.extra = format!(
        "\n[identity]\nkey-file = \"{}\"\n\n[network]\nid = \"{network_id}\"\nledger-key = \"{ledger_key}\"\nledger-url = \"{}\"\n\n[metering]\nstate-dir = \"{}\"\nreceipt-every-mib = {:.3}\nreceipt-every-secs = 30\ncredit-window-mib = 16\nclose-grace-secs = 3\n\n[paid]\nenabled = true\n\n[metrics]\nenabled = true\nlisten = [\"{METRICS}\"]\n",
        topo.lab.dir().join("relay-identity.key").display(),
        ledger.url,
        state_dir.display(),
        opts.receipt_every_mib
    );
    // `[directory]` is added once the network price is known (below).
    let base_extra = cfg.extra.clone();
    let setup_cfg = topo.lab.dir().join("agent-setup.toml");
    let wg_file = relay_wg.write_private(topo.lab.dir(), "relay-wg.key")?;
    std::fs::write(&setup_cfg, cfg.render(&wg_file, &topo.lab.ifname("ft")))?;
    let relay_id = run_cmd(
        Command::new(&bins.agent)
            .args(["identity", "--generate", "--config"])
            .arg(&setup_cfg),
    )?
    .trim()
    .to_owned();
    ensure!(
        relay_id.len() == 64,
        "ferry-agent identity printed {relay_id:?}"
    );
    ledger.cli(&["register", "--key", &relay_id, "--role", "relay"])?;
    say(&format!(
        "      ferry-agent identity --generate -> relay key {relay_id}\n      ferry-ledger register --role relay"
    ));

    let home = FerryHome::create(&topo.lab, "client-home")?;
    let client_id = home.identity_public.clone();
    ledger.cli(&["register", "--key", &client_id, "--role", "client"])?;
    let deposit = opts.deposit_micros.to_string();
    ledger.cli(&["credit", "--client", &client_id, "--amount", &deposit])?;
    say(&format!(
        "      ferry keygen -> client key {client_id}\n      ferry-ledger register --role client; ferry-ledger credit --amount {deposit} (micros)"
    ));
    let bin_s = bins.ledger.to_string_lossy().into_owned();
    let cfg_s = ledger.config.to_string_lossy().into_owned();
    let ledger_proc = topo.lab.spawn_env(
        &topo.inet,
        "ferry-ledger",
        &[&bin_s, "run", "--config", &cfg_s],
        &[("RUST_LOG", "info"), ("NO_COLOR", "1")],
    )?;
    poll(cancel, Duration::from_secs(20), "ledger HTTP API", || {
        ledger
            .get("/v1/info")
            .ok()
            .filter(|s| s.contains("ledger_key"))
    })?;
    let info = ledger.get("/v1/info")?;
    report.price_micros_per_gib = json_u64(&info, "price_micros_per_gib").context("price")?;
    let acct = home.cli(
        &topo.client,
        &["balance", "--ledger", &ledger.url, "--json"],
    )?;
    report.balance_before = json_u64(&acct, "balance_micros").context("balance")?;
    say(&format!(
        "      ferry-ledger run on {} (pid {}), price {} micros/GiB; client balance {} micros",
        ledger.url,
        ledger_proc.pid(),
        report.price_micros_per_gib,
        report.balance_before
    ));
    check_cancel(cancel)?;

    // ---- 4. voucher.
    header(4, "Client buys a voucher (ferry voucher request)");
    // No [[relay]]: the client will choose from the directory.
    home.write_config(&format!("[client]\nledger-url = \"{}\"\n", ledger.url))?;
    let bytes = opts.voucher_bytes.to_string();
    let out = home.cli(&topo.client, &["voucher", "request", "--bytes", &bytes])?;
    say(&indent(&format!(
        "$ ferry voucher request --bytes {bytes}\n{}",
        out.trim()
    )));
    let acct = home.cli(&topo.client, &["balance", "--json"])?;
    let after_voucher = json_u64(&acct, "balance_micros").context("balance")?;
    report.voucher_cost = report.balance_before.saturating_sub(after_voucher);
    report.voucher_cost_expected = (u128::from(opts.voucher_bytes)
        * u128::from(report.price_micros_per_gib))
    .div_ceil(1 << 30) as u64;
    say(&format!(
        "      ledger: client balance {} -> {after_voucher} micros (voucher cost {})",
        report.balance_before, report.voucher_cost
    ));
    check_cancel(cancel)?;

    // ---- 5. agents.
    header(
        5,
        "Relays: ferry-agent in paid mode on the router, announcing to the directory",
    );
    report.relay_price_micros_per_gib = report.price_micros_per_gib * 4 / 5;
    report.other_price_micros_per_gib = report.price_micros_per_gib * 9 / 10;
    report.relay_key = relay_id.clone();
    cfg.extra = format!(
        "{base_extra}\n[directory]\ncountry = \"NL\"\nregion = \"Amsterdam\"\nprice-micros-per-gib = {}\nabuse-contact = \"abuse@home.example\"\n",
        report.relay_price_micros_per_gib
    );
    let agent = Agent::start(&mut topo.lab, &topo.router, &relay_wg, &cfg)?;
    say(&format!(
        "      ferry-agent run (pid {}): WireGuard {ROUTER_UP4}:51820, Hello :51821, TUN {} + masquerade\n      price {} micros/GiB (NL), receipts every {} MiB, submits to {}; metrics {METRICS}",
        agent.proc.pid(),
        agent.tun_name,
        report.relay_price_micros_per_gib,
        opts.receipt_every_mib,
        ledger.url
    ));
    let other = start_other_relay(topo, bins, &base_extra, report.other_price_micros_per_gib)?;
    say(&format!(
        "      a second relay on the same router (pid {}): :51830, Hello :51831, userspace egress,\n      price {} micros/GiB (DE); nobody registered its key: its first announce does",
        other.pid(),
        report.other_price_micros_per_gib
    ));
    let listed = poll(
        cancel,
        Duration::from_secs(30),
        "both relays listed",
        || {
            let out = home.cli(&topo.client, &["relays"]).ok()?;
            (out.lines().count() >= 3).then_some(out)
        },
    )?;
    report.listed = listed.lines().count() - 1;
    say(&indent(&format!("$ ferry relays\n{}", listed.trim_end())));
    check_cancel(cancel)?;

    // ---- 6. connect + download.
    header(6, "Client: ferry connect, download from the internet host");
    let data = TcpService::start(
        &topo.inet,
        sa(std::net::Ipv6Addr::UNSPECIFIED, DATA_PORT),
        "inet",
    )?;
    let tun = topo.lab.ifname("fc");
    let connect = start_connect(topo, &home, &tun, cancel)?;
    let st = home.cli(&topo.client, &["status", "--json"])?;
    report.chosen = json_str(&st, "current").unwrap_or_default();
    report.choice_reason = json_str(&st, "reason").unwrap_or_default();
    say(&format!(
        "      ferry connect --auto --tun {tun} --no-dns (pid {}): connected, session {}\n      chose {}: {}",
        connect.pid(),
        json_str(&st, "session_id").unwrap_or_default(),
        &report.chosen[..report.chosen.len().min(16)],
        report.choice_reason
    ));
    ensure!(
        report.chosen == relay_id,
        "--auto chose {} instead of the cheaper home relay {relay_id}",
        report.chosen
    );
    let t = Instant::now();
    let got = fetch(
        &topo.client,
        sa(INET4, DATA_PORT),
        opts.download_bytes,
        Duration::from_secs(30),
    )?;
    report.download_time = t.elapsed();
    report.downloaded = got.bytes;
    report.inet_saw = Some(got.peer_seen);
    let secs = report.download_time.as_secs_f64().max(1e-6);
    let mbit = got.bytes as f64 * 8.0 / secs / 1e6;
    report.download_mbit = mbit;
    say(&format!(
        "      downloaded {} bytes (verified) in {secs:.2} s = {mbit:.1} Mbit/s",
        got.bytes,
    ));
    if opts.share_down_mbit > 0 {
        say(&format!(
            "      the router's owner shares {} Mbit/s with all paying clients together ([limits] share-down-mbit): the download kept to it; the household's own traffic is not limited",
            opts.share_down_mbit
        ));
    }
    say(&format!(
        "      internet host saw the connection from {} (the router's uplink, not the client {CLIENT_WAN4})",
        got.peer_seen.ip()
    ));
    ensure!(
        got.peer_seen.ip() == IpAddr::from(ROUTER_UP4),
        "internet host saw {} instead of the router {ROUTER_UP4}",
        got.peer_seen
    );
    ensure!(
        data.seen()
            .iter()
            .all(|a| a.ip() == IpAddr::from(ROUTER_UP4)),
        "data server saw other sources: {:?}",
        data.seen()
    );
    check_cancel(cancel)?;

    // ---- 7. status, disconnect.
    header(7, "ferry status, then ferry disconnect (final receipt)");
    poll(
        cancel,
        Duration::from_secs(15),
        "an acknowledged receipt",
        || {
            home.cli(&topo.client, &["status", "--json"])
                .ok()
                .filter(|s| s.contains("\"acked\": true"))
        },
    )?;
    let human = home.cli(&topo.client, &["status"])?;
    say(&indent(&format!("$ ferry status\n{}", human.trim_end())));
    let out = home.cli(&topo.client, &["disconnect"])?;
    say(&indent(&format!("$ ferry disconnect\n{}", out.trim_end())));
    let st = home.cli(&topo.client, &["status", "--json"])?;
    ensure!(
        st.contains("\"state\": \"stopped\""),
        "client did not stop cleanly: {st}"
    );
    let last = st
        .split("\"last_receipt\":")
        .nth(1)
        .context("no last receipt in status")?;
    report.final_receipt = (
        json_u64(last, "seq").context("seq")?,
        json_u64(last, "bytes_up").context("bytes_up")?,
        json_u64(last, "bytes_down").context("bytes_down")?,
    );
    report.final_acked = last
        .split('}')
        .next()
        .is_some_and(|r| r.contains("\"acked\": true"));
    report.client_counted =
        json_u64(&st, "bytes_up").unwrap_or(0) + json_u64(&st, "bytes_down").unwrap_or(0);
    report.client_spend_micros = json_u64(&st, "spend_micros").unwrap_or(0);
    let (seq, up, down) = report.final_receipt;
    say(&format!(
        "      final co-signed receipt: seq {seq}, {up} B up + {down} B down = {} B, acknowledged by the relay: {}",
        up + down,
        report.final_acked
    ));
    check_cancel(cancel)?;

    // ---- 8. ledger.
    header(8, "Settlement: receipts submitted to the ledger");
    let final_total = up + down;
    let relay_path = format!("/v1/relays/{relay_id}");
    let t = Instant::now();
    let credited = poll(
        cancel,
        Duration::from_secs(40),
        "the ledger to credit the final receipt",
        || {
            let r = ledger.get(&relay_path).ok()?;
            (json_u64(&r, "credited_bytes")? == final_total).then_some(r)
        },
    );
    let relay_acct = match credited {
        Ok(r) => r,
        Err(e) => {
            let r = ledger.get(&relay_path).unwrap_or_default();
            bail!("{e:#}; ledger relay account: {r}");
        }
    };
    let metrics = topo
        .router
        .exec(&[
            "curl",
            "-sS",
            "--max-time",
            "5",
            &format!("http://{METRICS}/metrics"),
        ])
        .unwrap_or_default();
    report.ledger_credited_bytes = json_u64(&relay_acct, "credited_bytes").unwrap_or(0);
    report.ledger_earned_micros = json_u64(&relay_acct, "earned_micros").unwrap_or(0);
    report.ledger_receipts = json_u64(&relay_acct, "receipts").unwrap_or(0);
    let acct = home.cli(&topo.client, &["balance", "--json"])?;
    report.balance_after = json_u64(&acct, "balance_micros").context("balance")?;
    let used = json_u64(&acct, "used_micros").unwrap_or(0);
    report.voucher_used_micros = used;
    say(&format!(
        "      credited after {:.1} s\n      GET /v1/relays/<relay>:  {} receipts, credited {} B, earned {} micros\n      ferry balance:           balance {} micros (deposit {} - voucher {}), voucher used {} of {} micros",
        t.elapsed().as_secs_f64(),
        report.ledger_receipts,
        report.ledger_credited_bytes,
        report.ledger_earned_micros,
        report.balance_after,
        report.balance_before,
        report.voucher_cost,
        used,
        report.voucher_cost
    ));

    // The agent's own durable record of what it metered, and the client's receipt log.
    let (agent_n, agent_latest) = receipt_log(&state_dir.join("receipts.log"))?;
    let (client_n, client_latest) = receipt_log(&home.dir.join("receipts.log"))?;
    report.agent_stored = agent_n;
    report.client_cosigned = client_n;
    let agent_latest = agent_latest.context("agent's receipt log has no receipt")?;
    report.agent_metered = agent_latest.body().total_bytes();
    report.agent_metrics_earned = metric_sum(&metrics, "ferry_earned_bytes_total");
    say(&format!(
        "      agent receipt log: {agent_n} co-signed receipts stored, last seq {} = {} B metered\n      client receipt log: {client_n} receipts co-signed; client's own count {} B",
        agent_latest.body().seq,
        report.agent_metered,
        report.client_counted
    ));
    if let Some(e) = report.agent_metrics_earned {
        let issued = metric_sum(&metrics, "ferry_receipts_issued_total").unwrap_or(0);
        let cosigned = metric_sum(&metrics, "ferry_receipts_cosigned_total").unwrap_or(0);
        say(&format!(
            "      agent /metrics: ferry_earned_bytes_total {e}, receipts issued {issued}, co-signed {cosigned}"
        ));
        // Every co-signed receipt was issued first (the final one included); re-sends may
        // make `issued` larger, never smaller.
        ensure!(
            issued >= cosigned,
            "agent metrics: {issued} receipts issued < {cosigned} co-signed"
        );
    }
    let log = topo.lab.log(&agent.label);
    report.agent_closed_acknowledged = log
        .lines()
        .any(|l| l.contains("paid session closed") && l.contains("acknowledged=true"));
    say(&format!(
        "      agent log: paid session closed, final receipt co-signed: {}; unbilled: {} B (client count - final receipt)",
        report.agent_closed_acknowledged,
        report.client_counted as i64 - final_total as i64
    ));
    let client_final = client_latest.context("client's receipt log has no receipt")?;
    ensure!(
        client_final.body().seq == seq && client_final.body().total_bytes() == final_total,
        "client's log ends at seq {} ({} B), status says seq {seq} ({final_total} B)",
        client_final.body().seq,
        client_final.body().total_bytes()
    );
    let ok = report.ledger_credited_bytes == final_total && report.agent_metered == final_total;
    say(&format!(
        "      CHECK ledger credited {} B == final co-signed receipt {final_total} B == agent metered {} B: {}",
        report.ledger_credited_bytes,
        report.agent_metered,
        if ok { "OK" } else { "MISMATCH" }
    ));
    ensure!(ok, "credited bytes do not match the final receipt");
    let expected_earned =
        ((u128::from(final_total) * u128::from(report.relay_price_micros_per_gib)) >> 30) as u64;
    ensure!(
        report.ledger_earned_micros == expected_earned,
        "relay earned {} micros, floor(bytes x price / 2^30) = {expected_earned}",
        report.ledger_earned_micros
    );
    ensure!(
        report.voucher_cost == report.voucher_cost_expected
            && report.balance_after + report.voucher_cost == report.balance_before,
        "client balance {} -> {} does not reflect the voucher price {}",
        report.balance_before,
        report.balance_after,
        report.voucher_cost_expected
    );
    // Orderly stop: the agent removes its nft table, the ledger finishes its transactions.
    topo.lab.stop(other, Duration::from_secs(8));
    topo.lab.stop(agent.proc, Duration::from_secs(8));
    topo.lab.stop(ledger_proc, Duration::from_secs(5));
    drop(data);
    Ok(())
}

/// A second paid relay on the router (a stranger: fresh identity, registered by its first
/// announce), dearer than the home relay: userspace egress on other ports and subnets, no
/// metrics server.
fn start_other_relay(
    topo: &mut Topology,
    bins: &Bins,
    base_extra: &str,
    price: u64,
) -> Result<ProcId> {
    let dir = topo.lab.dir().join("other-relay");
    std::fs::create_dir_all(&dir)?;
    let wg = KeyPair::generate()?;
    let wg_file = wg.write_private(&dir, "wg.key")?;
    let mut cfg = AgentConfig::new(Egress::Userspace);
    cfg.listen = sa(ROUTER_UP4, 51830);
    cfg.address = vec!["10.78.0.1/24".into(), "fd78::1/64".into()];
    let id_file = dir.join("identity.key");
    cfg.extra = base_extra
        .replace(
            &topo
                .lab
                .dir()
                .join("relay-identity.key")
                .display()
                .to_string(),
            &id_file.display().to_string(),
        )
        .replace(
            &topo.lab.dir().join("agent-state").display().to_string(),
            &dir.join("state").display().to_string(),
        )
        .replace("enabled = true\nlisten", "enabled = false\nlisten")
        .replace(
            "[paid]\nenabled = true\n",
            &format!("[paid]\nenabled = true\nhello-listen = \"{ROUTER_UP4}:51831\"\n"),
        )
        + &format!(
            "\n[directory]\ncountry = \"DE\"\nregion = \"Berlin\"\nprice-micros-per-gib = {price}\nabuse-contact = \"abuse@cafe.example\"\n"
        );
    let config = dir.join("agent.toml");
    std::fs::write(&config, cfg.render(&wg_file, "unused0"))?;
    run_cmd(
        Command::new(&bins.agent)
            .args(["identity", "--generate", "--config"])
            .arg(&config),
    )?;
    crate::metering::start_agent(
        &mut topo.lab,
        &topo.router,
        &bins.agent,
        &config,
        "other-relay",
    )
}

/// `ferry connect --auto --tun <tun> --no-dns` in the client namespace, waiting for
/// `connected`.
fn start_connect(
    topo: &mut Topology,
    home: &FerryHome,
    tun: &str,
    cancel: &AtomicBool,
) -> Result<ProcId> {
    let argv = home.argv(&["connect", "--auto", "--tun", tun, "--no-dns"])?;
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let level = std::env::var("FERRY_DEMO_CLIENT_LOG").unwrap_or_else(|_| "info".into());
    let id = topo.lab.spawn_env(
        &topo.client,
        "ferry-connect",
        &refs,
        &[("FERRY_LOG", level.as_str())],
    )?;
    let status = home.state.join("status.json");
    let lab = &mut topo.lab;
    let r = poll(cancel, Duration::from_secs(25), "ferry connect", || {
        if !lab.is_running(id) {
            return Some(false);
        }
        std::fs::read_to_string(&status)
            .is_ok_and(|s| s.contains("\"state\": \"connected\""))
            .then_some(true)
    })?;
    if !r {
        bail!("ferry connect exited:\n{}", lab.log("ferry-connect"));
    }
    Ok(id)
}

/// Distinct co-signed receipts (by seq) in a ferry-store log and the one with the highest seq.
/// Reads the file only (no recovery, no truncation): the owner may still have it open.
fn receipt_log(path: &Path) -> Result<(u64, Option<CoSignedReceipt>)> {
    let buf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let scan =
        ferry_store::scan(&buf).with_context(|| format!("{} is no receipt log", path.display()))?;
    let mut seqs = std::collections::BTreeSet::new();
    let mut latest: Option<CoSignedReceipt> = None;
    for (_, rec) in scan.records {
        if let ferry_store::Record::CoSigned(c) = rec {
            seqs.insert(c.body().seq);
            if latest.is_none_or(|l| l.body().seq < c.body().seq) {
                latest = Some(c);
            }
        }
    }
    Ok((seqs.len() as u64, latest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_metric_helpers_read_pretty_and_compact_text() {
        let pretty = "{\n  \"bytes_up\": 12,\n  \"last_receipt\": {\n    \"seq\": 7\n  },\n  \"session_id\": \"ab12\"\n}";
        assert_eq!(json_u64(pretty, "bytes_up"), Some(12));
        assert_eq!(json_u64(pretty, "seq"), Some(7));
        assert_eq!(json_u64("{\"a\":5}", "a"), Some(5));
        assert_eq!(json_u64("{\"a\":null}", "a"), None);
        assert_eq!(json_str(pretty, "session_id").as_deref(), Some("ab12"));
        let m = "# HELP x\nferry_earned_bytes_total 42\nferry_earned_bytes_totalx 1\nferry_receipts_issued_total{a=\"b\"} 3\nferry_receipts_issued_total{a=\"c\"} 4\n";
        assert_eq!(metric_sum(m, "ferry_earned_bytes_total"), Some(42));
        assert_eq!(metric_sum(m, "ferry_receipts_issued_total"), Some(7));
        assert_eq!(metric_sum(m, "missing"), None);
    }
}
