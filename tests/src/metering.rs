//! Paid sessions end to end: a real `ferry-ledger` (vouchers, relay credit), `ferry-agent`
//! built with `--features test-hooks` and `[paid]` enabled, and an in-process paying client
//! ([`PaidClient`]: ferry-metering's `ClientSession` + boringtun on a UDP socket in the client
//! namespace) whose own byte counts, co-signed and acknowledged receipts the tests inspect.
//!
//! The client speaks the protocol of docs/metering.md: `Hello` as plain UDP to the relay's
//! public port 51821, then WireGuard with the address from `Address`, receipts inside the
//! tunnel to `10.77.0.1:51821`. It counts exactly what the relay bills: inner IP packet bytes.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_metering::{
    ClientConfig, ClientSession, HelloOutcome, HelloReplies, ReceiptRejectReason,
    SessionRejectReason, encode,
};
use ferry_receipts::{CoSignedReceipt, NetworkId, PublicKey, SessionAccept, SigningKey, Voucher};
use ferry_tunnel::{ClientTunnel, ControlPath, Event, Failure, PaidConfig, TunnelConfig};

use crate::multipeer::udp_packet;
use crate::netns::{Lab, Ns, ProcId, run};
use crate::wait::wait_tcp_port;
use crate::wg::KeyPair;

/// The relay's tunnel address (control service).
pub const RELAY_TUN4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// Where the ledger listens (on the internet host).
pub const LEDGER_PORT: u16 = 7878;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

fn cargo_build(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .current_dir(workspace())
        .args(["build", "--quiet"])
        .args(args))
    .map(drop)
}

/// `ferry-agent` built with `--features test-hooks`, copied to
/// `target/debug/ferry-agent-test-hooks` (other tests build the plain binary to the same
/// place, so the copy is checked: it must accept `test-overclaim-percent`).
pub fn agent_test_binary() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| build_agent_hooks().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build_agent_hooks() -> Result<PathBuf> {
    let out = target_dir().join("debug").join("ferry-agent-test-hooks");
    let probe_dir = tempfile::tempdir()?;
    let probe = probe_dir.path().join("probe.toml");
    std::fs::write(
        &probe,
        "[wireguard]\nprivate-key-file = \"k\"\naddress = [\"10.77.0.1/24\"]\n[metering]\ntest-overclaim-percent = 1\n",
    )?;
    for _ in 0..3 {
        cargo_build(&[
            "-p",
            "ferry-agent",
            "--bin",
            "ferry-agent",
            "--features",
            "test-hooks",
        ])
        .context("building ferry-agent --features test-hooks")?;
        std::fs::copy(target_dir().join("debug").join("ferry-agent"), &out)?;
        // check-config fails on the missing key, but only after parsing: a binary without the
        // feature fails earlier with "unknown field".
        let o = Command::new(&out)
            .args(["check-config", "--config"])
            .arg(&probe)
            .output()?;
        if !String::from_utf8_lossy(&o.stderr).contains("unknown field") {
            return Ok(out);
        }
    }
    bail!("could not get a ferry-agent built with test-hooks (concurrent builds?)")
}

/// `ferry-ledger`, built on first use.
pub fn ledger_binary() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        cargo_build(&["-p", "ferry-ledger", "--bin", "ferry-ledger"])
            .map(|()| target_dir().join("debug").join("ferry-ledger"))
            .map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// A running ferry-ledger in a namespace.
#[derive(Debug)]
pub struct Ledger {
    /// `http://ip:port`.
    pub url: String,
    /// Network id from the ledger's config.
    pub network_id: NetworkId,
    /// Ledger voucher key.
    pub ledger_key: PublicKey,
    /// Price in vouchers.
    pub price_micros_per_gib: u64,
    config: PathBuf,
    token: String,
    ns: Ns,
    /// The process.
    pub proc: ProcId,
}

fn json_str<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let i = body.find(&pat)? + pat.len();
    let j = body[i..].find('"')?;
    Some(&body[i..i + j])
}

fn json_u64(body: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let i = body.find(&pat)? + pat.len();
    let digits: String = body[i..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl Ledger {
    /// Initialises a ledger in the lab dir, registers `relays` and `clients` (crediting each
    /// client 1000 units), and serves it in `ns` on `ip:7878`.
    pub fn start(
        lab: &mut Lab,
        ns: &Ns,
        ip: IpAddr,
        relays: &[PublicKey],
        clients: &[PublicKey],
    ) -> Result<Self> {
        let bin = ledger_binary()?;
        let dir = lab.dir().join("ledger");
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("ledger.toml");
        run(Command::new(&bin).arg("init").arg("--config").arg(&config))?;
        let listen = SocketAddr::new(ip, LEDGER_PORT);
        let text = std::fs::read_to_string(&config)?;
        let mut out = String::new();
        for line in text.lines() {
            if line.starts_with("listen") {
                let _ = writeln!(out, "listen = \"{listen}\"");
            } else {
                let _ = writeln!(out, "{line}");
            }
        }
        std::fs::write(&config, out)?;
        let pk = run(Command::new(&bin)
            .arg("pubkey")
            .arg("--config")
            .arg(&config))?;
        let (network_id, ledger_key) = ledger_pubkey_fields(&pk)?;
        let network_id = NetworkId::from_hex(&network_id).context("network id hex")?;
        let ledger_key = PublicKey::from_hex(&ledger_key).context("ledger key hex")?;
        let price_micros_per_gib = text
            .lines()
            .find_map(|l| l.strip_prefix("price-micros-per-gib"))
            .and_then(|v| v.trim().trim_start_matches('=').trim().parse().ok())
            .unwrap_or(500_000);
        let token = std::fs::read_to_string(dir.join("ledger-admin.token"))?
            .trim()
            .to_owned();
        for (keys, role) in [(relays, "relay"), (clients, "client")] {
            for k in keys {
                run(Command::new(&bin)
                    .args(["register", "--config"])
                    .arg(&config)
                    .args(["--key", &k.to_hex(), "--role", role]))?;
            }
        }
        for k in clients {
            run(Command::new(&bin)
                .args(["credit", "--config"])
                .arg(&config)
                .args(["--client", &k.to_hex(), "--amount", "1000000000"]))?;
        }
        let bin_s = bin.to_string_lossy().into_owned();
        let cfg_s = config.to_string_lossy().into_owned();
        let proc = lab.spawn(ns, "ferry-ledger", &[&bin_s, "run", "--config", &cfg_s])?;
        wait_tcp_port(ns, listen, Duration::from_secs(20))?;
        Ok(Self {
            url: format!("http://{listen}"),
            network_id,
            ledger_key,
            price_micros_per_gib,
            config,
            token,
            ns: ns.clone(),
            proc,
        })
    }

    fn curl(&self, args: &[&str]) -> Result<String> {
        let mut v = vec!["curl", "-sS", "--max-time", "10"];
        v.extend(args);
        self.ns.exec(&v)
    }

    /// Issues a voucher for `client` (admin) paying for `allowance_bytes` at the network
    /// price (its max price), returning it decoded.
    pub fn voucher(&self, client: &PublicKey, allowance_bytes: u64) -> Result<Voucher> {
        let budget =
            ferry_receipts::money::debit_micros(allowance_bytes, self.price_micros_per_gib);
        let body = format!(
            "{{\"client_key\":\"{}\",\"budget_micros\":{budget}}}",
            client.to_hex()
        );
        let auth = format!("authorization: Bearer {}", self.token);
        let url = format!("{}/v1/vouchers", self.url);
        let out = self.curl(&[
            "-H",
            &auth,
            "-H",
            "content-type: application/json",
            "-d",
            &body,
            &url,
        ])?;
        let b64 = json_str(&out, "voucher").with_context(|| format!("voucher answer {out}"))?;
        let bytes = B64.decode(b64)?;
        Voucher::decode(&bytes).map_err(|e| anyhow!("voucher decode: {e:?}"))
    }

    /// (credited_bytes, earned_micros) of a relay; (0, 0) if the ledger has nothing yet.
    pub fn relay_credit(&self, relay: &PublicKey) -> Result<(u64, u64)> {
        let out = self.curl(&[&format!("{}/v1/relays/{}", self.url, relay.to_hex())])?;
        Ok((
            json_u64(&out, "credited_bytes").unwrap_or(0),
            json_u64(&out, "earned_micros").unwrap_or(0),
        ))
    }

    /// What voucher `id`'s sessions debited so far (micros).
    pub fn voucher_used(&self, id: &ferry_receipts::VoucherId) -> Result<u64> {
        let out = self.curl(&[&format!("{}/v1/vouchers/{}", self.url, id.to_hex())])?;
        json_u64(&out, "used_micros").with_context(|| format!("voucher answer {out}"))
    }

    /// The config path (for CLI commands).
    pub fn config(&self) -> &Path {
        &self.config
    }
}

/// Writes an identity key file (base64 Ed25519 seed, 0600) and returns its signing key.
pub fn write_identity(dir: &Path, name: &str, seed: [u8; 32]) -> Result<(PathBuf, SigningKey)> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)?;
    std::io::Write::write_all(&mut f, format!("{}\n", B64.encode(seed)).as_bytes())?;
    Ok((path, SigningKey::from_seed(&seed)))
}

/// Random 32 bytes.
pub fn random_seed() -> Result<[u8; 32]> {
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| anyhow!("rng"))?;
    Ok(b)
}

/// The `[identity]`/`[network]`/`[metering]`/`[paid]` TOML for the agent.
pub fn paid_sections(
    identity_file: &Path,
    ledger: &Ledger,
    state_dir: &Path,
    metering: &str,
) -> String {
    format!(
        "\n[identity]\nkey-file = {:?}\n\n[network]\nid = \"{}\"\nledger-key = \"{}\"\nledger-url = \"{}\"\n\n[metering]\nstate-dir = {:?}\n{metering}\n\n[paid]\nenabled = true\n",
        identity_file.to_string_lossy(),
        ledger.network_id.to_hex(),
        ledger.ledger_key.to_hex(),
        ledger.url,
        state_dir.to_string_lossy(),
    )
}

/// Starts (or restarts) `bin run --config cfg` in `ns` with log label `label` and waits until
/// the log shows one more "ferry-agent starting" than before and both UDP ports are bound.
pub fn start_agent(
    lab: &mut Lab,
    ns: &Ns,
    bin: &Path,
    config: &Path,
    label: &str,
) -> Result<ProcId> {
    let starts_before = lab.log(label).matches("ferry-agent starting").count();
    let bin_s = bin.to_string_lossy().into_owned();
    let cfg_s = config.to_string_lossy().into_owned();
    let proc = lab.spawn_env(
        ns,
        label,
        &[&bin_s, "run", "--config", &cfg_s],
        &[
            (
                "RUST_LOG",
                "info,ferry_agent=debug,ferry_store=debug,boringtun=off",
            ),
            ("NO_COLOR", "1"),
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if lab.log(label).matches("ferry-agent starting").count() > starts_before {
            return Ok(proc);
        }
        if !lab.is_running(proc) || Instant::now() > deadline {
            let log = lab.log(label);
            let tail: String = log
                .chars()
                .skip(log.chars().count().saturating_sub(4000))
                .collect();
            bail!("ferry-agent did not start; log tail:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A UDP service on the internet host that counts what it receives and optionally echoes
/// each datagram's payload unchanged.
#[derive(Debug)]
pub struct UdpCounter {
    /// Bound address.
    pub addr: SocketAddr,
    /// Datagrams received.
    pub datagrams: Arc<AtomicU64>,
    /// Payload bytes received.
    pub bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpCounter {
    /// Binds `bind` in `ns`.
    pub fn start(ns: &Ns, bind: SocketAddr, echo: bool) -> Result<Self> {
        let sock = ns.enter(|| UdpSocket::bind(bind))??;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = sock.local_addr()?;
        let (datagrams, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (d2, b2, s2) = (datagrams.clone(), bytes.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s2.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                d2.fetch_add(1, Ordering::Relaxed);
                b2.fetch_add(n as u64, Ordering::Relaxed);
                if echo {
                    let _ = sock.send_to(&buf[..n], peer);
                }
            }
        });
        Ok(Self {
            addr,
            datagrams,
            bytes,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How the paying client behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Co-signs receipts within tolerance, rejects over-claims (ferry-metering defaults).
    Honest,
    /// Opens the session and sends traffic but never answers a receipt.
    NeverCosign,
}

/// Everything the paying client needs.
#[derive(Clone)]
pub struct ClientSpec {
    /// WireGuard key pair.
    pub wg: KeyPair,
    /// Client identity (voucher owner).
    pub identity: Arc<SigningKey>,
    /// The voucher paying for the session.
    pub voucher: Voucher,
    /// Relay's receipts identity.
    pub relay_identity: PublicKey,
    /// Relay's WireGuard key.
    pub relay_wg: boringtun::x25519::PublicKey,
    /// Relay WireGuard endpoint.
    pub endpoint: SocketAddr,
    /// Relay Hello address (public, port 51821).
    pub hello: SocketAddr,
    /// Where data goes (a [`UdpCounter`] on the internet host).
    pub target: SocketAddr,
    /// UDP payload size of each data packet.
    pub payload: usize,
    /// Behaviour.
    pub behaviour: Behaviour,
}

/// What the client observed (snapshot).
#[derive(Debug, Clone, Default)]
pub struct ClientReport {
    /// The session the relay accepted.
    pub accepted: Option<SessionAccept>,
    /// The tunnel address the relay assigned.
    pub address: Option<Ipv4Addr>,
    /// A session refusal.
    pub refused: Option<SessionRejectReason>,
    /// Inner bytes / packets of data the client sent (its own up count).
    pub up_bytes: u64,
    /// Data packets sent.
    pub up_packets: u64,
    /// Inner bytes of data received (its own down count).
    pub down_bytes: u64,
    /// Receipts (and final receipts) received.
    pub receipts_seen: u64,
    /// Every receipt the client co-signed, in order (new seqs only).
    pub cosigned: Vec<CoSignedReceipt>,
    /// Co-signed receipts the relay acknowledged (stored), in order.
    pub acked: Vec<CoSignedReceipt>,
    /// Resync messages sent (relay restarted before storing a co-signed receipt).
    pub resyncs: u64,
    /// A receipt the client refused.
    pub rejected: Option<(u64, ReceiptRejectReason)>,
    /// Seq of the co-signed final receipt.
    pub final_seq: Option<u64>,
    /// The final receipt was co-signed and acknowledged.
    pub closed: bool,
    /// Handshake initiations the client sent.
    pub handshakes: u64,
}

struct Ctl {
    stop: AtomicBool,
    pps: AtomicU32,
    close: AtomicBool,
}

/// The in-process paying client; stops on drop.
pub struct PaidClient {
    report: Arc<Mutex<ClientReport>>,
    ctl: Arc<Ctl>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl std::fmt::Debug for PaidClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaidClient").finish_non_exhaustive()
    }
}

impl PaidClient {
    /// Starts the client thread in `ns` (sockets created there). Data rate starts at 0.
    pub fn start(ns: &Ns, spec: ClientSpec) -> Result<Self> {
        let wg_sock = ns.enter(|| UdpSocket::bind("0.0.0.0:0"))??;
        wg_sock.connect(spec.endpoint)?;
        wg_sock.set_read_timeout(Some(Duration::from_millis(2)))?;
        let hello_sock = ns.enter(|| UdpSocket::bind("0.0.0.0:0"))??;
        hello_sock.connect(spec.hello)?;
        hello_sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let report = Arc::new(Mutex::new(ClientReport::default()));
        let ctl = Arc::new(Ctl {
            stop: AtomicBool::new(false),
            pps: AtomicU32::new(0),
            close: AtomicBool::new(false),
        });
        let (r2, c2) = (report.clone(), ctl.clone());
        let thread = std::thread::spawn(move || client_main(spec, wg_sock, hello_sock, r2, c2));
        Ok(Self {
            report,
            ctl,
            thread: Some(thread),
        })
    }

    /// A snapshot of what the client saw.
    pub fn report(&self) -> ClientReport {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Data packets per second (0 = pause).
    pub fn set_rate(&self, pps: u32) {
        self.ctl.pps.store(pps, Ordering::Relaxed);
    }

    /// Stops sending data and asks for the final receipt (`Close`).
    pub fn close(&self) {
        self.set_rate(0);
        self.ctl.close.store(true, Ordering::Relaxed);
    }

    /// Polls the report until `f` holds.
    pub fn wait(
        &self,
        timeout: Duration,
        what: &str,
        f: impl Fn(&ClientReport) -> bool,
    ) -> Result<ClientReport> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.report();
            if f(&r) {
                return Ok(r);
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}; client report: {r:?}");
            }
            if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
                bail!("client thread ended while waiting for {what}; report: {r:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the thread and returns its result.
    pub fn stop(mut self) -> Result<ClientReport> {
        self.ctl.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| anyhow!("client thread panicked"))??;
        }
        Ok(self.report())
    }
}

impl Drop for PaidClient {
    fn drop(&mut self) {
        self.ctl.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

use ferry_store::unix_now;

/// Hello until Accept + Address (or a refusal).
fn open_session(
    spec: &ClientSpec,
    sock: &UdpSocket,
    session: &mut ClientSession,
    report: &Mutex<ClientReport>,
    ctl: &Ctl,
) -> Result<Option<Ipv4Addr>> {
    let mut nonce = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| anyhow!("rng"))?;
    let wg_pub = *spec.wg.public_key().as_bytes();
    let hello = encode(&session.hello(spec.voucher.clone(), wg_pub, nonce, unix_now()));
    let mut buf = [0u8; 2048];
    let mut replies = HelloReplies::default();
    while !ctl.stop.load(Ordering::Relaxed) {
        sock.send(&hello)?;
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            let Ok(n) = sock.recv(&mut buf) else { continue };
            match replies.on_datagram(session, &buf[..n]) {
                HelloOutcome::Pending => {}
                HelloOutcome::Refused(r) => {
                    lock(report).refused = Some(r);
                    return Ok(None);
                }
                HelloOutcome::Accepted { accept, v4, .. } => {
                    let mut rep = lock(report);
                    rep.accepted = Some(*accept);
                    rep.address = v4;
                    return Ok(v4);
                }
            }
        }
    }
    Ok(None)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn client_main(
    spec: ClientSpec,
    sock: UdpSocket,
    hello_sock: UdpSocket,
    report: Arc<Mutex<ClientReport>>,
    ctl: Arc<Ctl>,
) -> Result<()> {
    let mut session = ClientSession::new(
        ClientConfig::default(),
        spec.identity.clone(),
        spec.voucher.network_id,
        spec.relay_identity,
    );
    let Some(me) = open_session(&spec, &hello_sock, &mut session, &report, &ctl)? else {
        return Ok(());
    };
    // The same sans-IO tunnel as `ferry connect`; this shell owns the socket and the clock.
    let mut tunnel = ClientTunnel::new(
        TunnelConfig {
            secret: spec.wg.secret.clone(),
            relay_key: spec.relay_wg,
            keepalive: None,
            index: 7,
            relay_ip: spec.endpoint.ip(),
            mtu: 1420,
            // A restarted relay has no session: re-handshake quickly instead of waiting for
            // WireGuard's rekey timeout.
            rehandshake_after: Some(Duration::from_millis(400)),
            // Close is repeated until the final receipt is co-signed and acknowledged.
            close_grace: Duration::from_secs(3600),
            // The relay may be down for a while (kill -9 tests): keep trying.
            handshake_timeout: None,
            silent_after: None,
        },
        Some(PaidConfig {
            session,
            control: ControlPath::new(IpAddr::V4(me), IpAddr::V4(RELAY_TUN4)),
            hello: None,
            answer_receipts: spec.behaviour == Behaviour::Honest,
        }),
    );
    let me_data = SocketAddr::new(IpAddr::V4(me), 40_000);
    let payload: Vec<u8> = (0..spec.payload).map(|i| (i % 251) as u8).collect();
    let data_pkt = udp_packet(me_data, spec.target, &payload);
    let mut rx = vec![0u8; 65536];
    let mut last_timers = Instant::now();
    let mut sent_at = Instant::now();
    let mut credit = 0.0f64;
    let mut closing = false;
    while !ctl.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if let Ok(n) = sock.recv(&mut rx) {
            tunnel.handle_datagram(&rx[..n], now, unix_now());
        }
        // Data.
        let pps = ctl.pps.load(Ordering::Relaxed);
        let dt = now.duration_since(sent_at).as_secs_f64();
        sent_at = now;
        if pps > 0 {
            credit = (credit + dt * f64::from(pps)).min(64.0);
            while credit >= 1.0 {
                credit -= 1.0;
                if tunnel.send_inner(&data_pkt, now) {
                    let mut r = lock(&report);
                    r.up_bytes += data_pkt.len() as u64;
                    r.up_packets += 1;
                }
            }
        } else {
            credit = 0.0;
        }
        // Close: ask for the final receipt (the tunnel repeats it every second).
        if ctl.close.load(Ordering::Relaxed) && !closing {
            closing = true;
            tunnel.close(now);
        }
        if now.duration_since(last_timers) > Duration::from_millis(100) {
            last_timers = now;
            tunnel.handle_timeout(now);
        }
        if !drain(&mut tunnel, &sock, &report) {
            // Refused a receipt: disconnect (stop sending anything).
            ctl.pps.store(0, Ordering::Relaxed);
            return Ok(());
        }
    }
    Ok(())
}

/// Sends the tunnel's datagrams and records its events in the report (co-signed receipts are
/// "stored" in the report, then released); false once the tunnel failed.
fn drain(tunnel: &mut ClientTunnel, sock: &UdpSocket, report: &Mutex<ClientReport>) -> bool {
    let mut ok = true;
    loop {
        while let Some(d) = tunnel.poll_transmit() {
            if d.first() == Some(&1) {
                lock(report).handshakes += 1;
            }
            let _ = sock.send(&d);
        }
        let Some(ev) = tunnel.poll_event() else {
            return ok;
        };
        let mut r = lock(report);
        match ev {
            Event::Deliver(p) => r.down_bytes += p.len() as u64,
            Event::ReceiptSeen { .. } => r.receipts_seen += 1,
            Event::StoreCosigned {
                receipt,
                final_receipt,
            } => {
                if r.cosigned
                    .last()
                    .is_none_or(|l| l.body().seq < receipt.body().seq)
                {
                    r.cosigned.push(*receipt);
                }
                if final_receipt {
                    r.final_seq = Some(receipt.body().seq);
                }
                drop(r);
                tunnel.persisted(receipt.body().seq);
                continue;
            }
            Event::Resynced(_) => r.resyncs += 1,
            Event::Acked(a) => {
                if r.acked.last().is_none_or(|l| l.body().seq < a) {
                    if let Some(c) = r.cosigned.iter().find(|c| c.body().seq == a).copied() {
                        r.acked.push(c);
                    }
                }
                if r.final_seq == Some(a) {
                    r.closed = true;
                }
            }
            Event::Failed(Failure::ReceiptRefused { seq, reason }) => {
                r.rejected = Some((seq, reason));
                ok = false;
            }
            Event::Failed(_) => ok = false,
            _ => {}
        }
    }
}

/// `(network id, ledger key)` from `ferry-ledger pubkey`'s output (the agent's `[network]`
/// section: `id = "..."`, `ledger-key = "..."`).
pub fn ledger_pubkey_fields(out: &str) -> Result<(String, String)> {
    let field = |k: &str| {
        out.lines()
            .find_map(|l| {
                let (key, v) = l.split_once('=')?;
                (key.trim() == k).then(|| v.trim().trim_matches('"').to_owned())
            })
            .with_context(|| format!("{k} in `ferry-ledger pubkey` output: {out}"))
    };
    Ok((field("id")?, field("ledger-key")?))
}
