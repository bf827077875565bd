//! Tokio shell: drives [`NetStack`] with the real clock and dials out with tokio sockets.

use std::future::poll_fn;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

// portable-atomic: 32-bit MIPS routers have no native 64-bit atomics (lock-based fallback there).
use portable_atomic::{AtomicU64, Ordering};
use smoltcp::time::Instant as SmolInstant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{Notify, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, trace};

use crate::stack::{Event, FlowId, NetStack, NetstackStats};
use crate::{NetstackConfig, packet};

/// Copy chunk per direction per TCP flow task.
const TCP_CHUNK: usize = 8 * 1024;

/// `userspace` egress: hand it client IP packets with [`Self::send`], take client-bound IP
/// packets with [`Self::recv`]. Dropping it stops every flow.
pub struct UserspaceEgress {
    shared: Arc<Shared>,
    out_rx: tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>,
    driver: JoinHandle<()>,
}

struct Shared {
    core: Mutex<NetStack>,
    kick: Notify,
    epoch: Instant,
    connect_timeout: Duration,
    mtu: usize,
    out_tx: mpsc::Sender<Vec<u8>>,
    dropped_out: AtomicU64,
    pacer: Option<Pacer>,
}

/// Paces internet-to-client TCP payload per client address to just under the relay's
/// per-client rate, so its bucket (which drops) never has to.
struct Pacer {
    /// Payload bytes per second.
    rate: u64,
    buckets: Mutex<std::collections::HashMap<std::net::IpAddr, ferry_ratelimit::TokenBucket>>,
}

/// Most clients remembered at once (full buckets are forgotten first).
const MAX_PACED_CLIENTS: usize = 4096;

impl Pacer {
    /// 98 % of `ip_rate` (bytes/s of IP packets), less the 40 header bytes per `mtu` packet.
    fn new(ip_rate: u64, mtu: usize) -> Option<Self> {
        if ip_rate == 0 {
            return None;
        }
        let mtu = mtu.max(576) as u64;
        let rate = (ip_rate.saturating_mul(98) / 100).saturating_mul(mtu - 40) / mtu;
        Some(Self {
            rate: rate.max(1),
            buckets: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// How long to wait before handing `bytes` for `client` to the stack.
    fn delay(&self, client: std::net::IpAddr, bytes: usize) -> Duration {
        let now = Instant::now().into_std();
        let mut b = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if b.len() >= MAX_PACED_CLIENTS && !b.contains_key(&client) {
            b.retain(|_, t| !t.is_full(now));
        }
        let rate = self.rate;
        b.entry(client)
            .or_insert_with(|| ferry_ratelimit::TokenBucket::new(rate, 64 * 1024))
            .reserve(now, bytes as u64)
    }
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, NetStack> {
        // A panic while holding the lock leaves the stack usable (no invariant spans calls).
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> SmolInstant {
        let us = i64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(i64::MAX);
        SmolInstant::from_micros(us)
    }

    fn to_tokio(&self, t: SmolInstant) -> Instant {
        self.epoch + Duration::from_micros(u64::try_from(t.total_micros()).unwrap_or(0))
    }
}

impl UserspaceEgress {
    /// Start the egress. Must be called inside a tokio runtime (spawns the driver task).
    pub fn new(cfg: NetstackConfig) -> Self {
        let epoch = Instant::now();
        let (out_tx, out_rx) = mpsc::channel(cfg.out_queue.max(1));
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let pacer = Pacer::new(cfg.client_rate_bytes, cfg.mtu);
        let shared = Arc::new(Shared {
            connect_timeout: cfg.connect_timeout,
            mtu: cfg.mtu,
            core: Mutex::new(NetStack::new(cfg, seed, SmolInstant::from_micros(0))),
            kick: Notify::new(),
            epoch,
            out_tx,
            dropped_out: AtomicU64::new(0),
            pacer,
        });
        let driver = tokio::spawn(drive(shared.clone()));
        Self {
            shared,
            out_rx: tokio::sync::Mutex::new(out_rx),
            driver,
        }
    }

    /// Client → internet: one decrypted, policy-checked IPv4/IPv6 packet. Never fails;
    /// unusable packets are counted and dropped.
    pub async fn send(&self, ip_packet: &[u8]) {
        let now = self.shared.now();
        self.shared.core().handle_client_packet(ip_packet, now);
        self.shared.kick.notify_one();
    }

    /// Internet → client: waits for the next IP packet and copies it into `buf`, returning its
    /// length. Packets longer than `buf` are dropped (counted); size `buf` to the MTU.
    pub async fn recv(&self, buf: &mut [u8]) -> usize {
        let mut rx = self.out_rx.lock().await;
        loop {
            let Some(p) = rx.recv().await else {
                // The driver is gone (runtime shutting down): nothing will ever arrive.
                return std::future::pending().await;
            };
            if let Some(dst) = buf.get_mut(..p.len()) {
                dst.copy_from_slice(&p);
                return p.len();
            }
            self.shared.dropped_out.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counters; `dropped_other` includes client-bound packets dropped by the shell.
    pub fn stats(&self) -> NetstackStats {
        let mut s = self.shared.core().stats();
        s.dropped_other += self.shared.dropped_out.load(Ordering::Relaxed);
        s
    }

    /// Stop the driver and every flow (outside sockets are closed). Afterwards `send` is a
    /// no-op for the network and `recv` never returns. Dropping the egress does the same.
    pub fn shutdown(&self) {
        self.driver.abort();
    }

    /// The configured MTU (largest packet `recv` returns).
    pub fn mtu(&self) -> usize {
        self.shared.mtu
    }
}

impl Drop for UserspaceEgress {
    fn drop(&mut self) {
        // The driver owns the JoinSet of flow tasks: aborting it aborts them all.
        self.driver.abort();
    }
}

/// Driver: polls the core when kicked or when its timer expires, forwards client-bound
/// packets, and spawns flow tasks.
async fn drive(shared: Arc<Shared>) {
    let mut tasks = JoinSet::new();
    loop {
        let (events, deadline) = {
            let mut core = shared.core();
            let now = shared.now();
            core.poll(now);
            let mut events = Vec::new();
            while let Some(e) = core.poll_event() {
                events.push(e);
            }
            while let Some(p) = core.poll_client_packet() {
                if shared.out_tx.try_send(p).is_err() {
                    shared.dropped_out.fetch_add(1, Ordering::Relaxed);
                }
            }
            (events, core.poll_timeout(now))
        };
        for e in events {
            match e {
                Event::TcpDial { flow, remote } => {
                    tasks.spawn(tcp_flow(shared.clone(), flow, remote));
                }
                Event::UdpOpen { flow, remote } => {
                    tasks.spawn(udp_flow(shared.clone(), flow, remote));
                }
            }
        }
        tokio::select! {
            () = shared.kick.notified() => {}
            () = tokio::time::sleep_until(shared.to_tokio(deadline)) => {}
            Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = res {
                    if e.is_panic() {
                        tracing::error!("netstack flow task panicked");
                    }
                }
            }
        }
    }
}

async fn tcp_flow(shared: Arc<Shared>, flow: FlowId, remote: SocketAddr) {
    let dial = tokio::time::timeout(shared.connect_timeout, TcpStream::connect(remote)).await;
    let stream = match dial {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(flow = flow.0, error = %e, "TCP dial failed");
            fail_dial(&shared, flow);
            return;
        }
        Err(_) => {
            debug!(flow = flow.0, "TCP dial timed out");
            fail_dial(&shared, flow);
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    shared.core().tcp_dial_result(flow, true, shared.now());
    shared.kick.notify_one();
    let (mut rd, mut wr) = stream.into_split();

    let upstream = async {
        let mut buf = vec![0u8; TCP_CHUNK];
        loop {
            let n = poll_fn(|cx| shared.core().poll_tcp_recv(flow, cx, &mut buf)).await?;
            // Reading freed receive window: let the driver advertise it.
            shared.kick.notify_one();
            if n == 0 {
                wr.shutdown().await?;
                return Ok::<(), std::io::Error>(());
            }
            wr.write_all(&buf[..n]).await?;
        }
    };
    let client = shared.core().tcp_client(flow).map(|c| c.ip());
    let downstream = async {
        let mut buf = vec![0u8; TCP_CHUNK];
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                shared.core().tcp_close(flow);
                shared.kick.notify_one();
                return Ok::<(), std::io::Error>(());
            }
            if let (Some(p), Some(c)) = (&shared.pacer, client) {
                let wait = p.delay(c, n);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            let mut off = 0;
            while off < n {
                off += poll_fn(|cx| shared.core().poll_tcp_send(flow, cx, &buf[off..n])).await?;
                shared.kick.notify_one();
            }
        }
    };
    let res = tokio::try_join!(upstream, downstream);
    {
        let mut core = shared.core();
        if let Err(e) = res {
            trace!(flow = flow.0, error = %e, "TCP flow ended with error");
            core.tcp_abort(flow);
        }
        core.tcp_release(flow);
    }
    shared.kick.notify_one();
}

fn fail_dial(shared: &Shared, flow: FlowId) {
    shared.core().tcp_dial_result(flow, false, shared.now());
    shared.kick.notify_one();
}

async fn udp_flow(shared: Arc<Shared>, flow: FlowId, remote: SocketAddr) {
    let bind: SocketAddr = if remote.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            debug!(flow = flow.0, error = %e, "UDP bind failed");
            shared.core().udp_release(flow);
            return;
        }
    };
    if let Err(e) = sock.connect(remote).await {
        debug!(flow = flow.0, error = %e, "UDP connect failed");
        shared.core().udp_release(flow);
        return;
    }
    // One byte more than fits, to detect (and drop) oversized replies instead of truncating.
    let mut buf = vec![0u8; packet::max_udp_payload(shared.mtu, &remote) + 1];
    loop {
        tokio::select! {
            d = poll_fn(|cx| shared.core().poll_udp_datagram(flow, cx)) => {
                let Some(d) = d else { return };
                if let Err(e) = sock.send(&d).await {
                    trace!(flow = flow.0, error = %e, "UDP send failed");
                }
            }
            r = sock.recv(&mut buf) => match r {
                Ok(n) => {
                    shared.core().udp_reply(flow, &buf[..n], shared.now());
                    shared.kick.notify_one();
                }
                // ICMP errors surface here (e.g. ECONNREFUSED); the flow stays until idle.
                Err(e) => trace!(flow = flow.0, error = %e, "UDP recv error"),
            }
        }
    }
}
