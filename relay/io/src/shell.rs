//! The event loop: three tasks around one `Mutex<Relay>`.
//!
//! - `udp -> egress`: recvmmsg/GRO batch, decrypt the whole batch under one lock, then write the
//!   accepted packets to the egress and send any handshake replies;
//! - `egress -> udp`: one blocking read plus whatever else is ready (up to a batch), encrypt under
//!   one lock, then send runs of equal-sized datagrams to one peer as a single GSO send;
//! - `timers`: every 250 ms `handle_timeout` and drain `poll_transmit`; in between it sleeps
//!   until the rate shaper's next held download packet is due (woken early when a packet due
//!   sooner is held) and sends everything due, GSO-merged like the above.
//!
//! The lock is never held across an await; syscalls happen outside it, so the directions overlap.

use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::Notify;

use ferry_relay_core::{Action, Relay, TIMER_INTERVAL, buffer_len};
use quinn_udp::RecvMeta;
use tokio::task::JoinSet;

use crate::egress::{Egress, HEADROOM, TUN_MIN_BATCH};
use crate::socket::UdpEndpoint;

/// The relay shared between the shell's tasks and observers (metering, telemetry).
pub type SharedRelay = Arc<Mutex<Relay>>;

/// Shell tuning.
#[derive(Debug, Clone, Copy)]
pub struct ShellConfig {
    /// Tunnel MTU (largest inner packet).
    pub mtu: usize,
    /// Packets processed per lock acquisition in the egress -> udp direction (at least 128).
    pub batch: usize,
}

impl Default for ShellConfig {
    fn default() -> Self {
        Self {
            mtu: 1420,
            batch: 64,
        }
    }
}

/// Drives a [`Relay`] with a UDP socket and an [`Egress`].
pub struct Shell<E: Egress> {
    relay: SharedRelay,
    udp: Arc<UdpEndpoint>,
    egress: Arc<E>,
    cfg: ShellConfig,
}

impl<E: Egress> Shell<E> {
    /// Wraps the parts; nothing runs until [`run`](Self::run).
    pub fn new(relay: Relay, udp: UdpEndpoint, egress: E, cfg: ShellConfig) -> Self {
        Self::with_shared(Arc::new(Mutex::new(relay)), udp, egress, cfg)
    }

    /// Like [`new`](Self::new) with a relay already shared (e.g. with the egress's policy hook).
    pub fn with_shared(relay: SharedRelay, udp: UdpEndpoint, egress: E, cfg: ShellConfig) -> Self {
        Self {
            relay,
            udp: Arc::new(udp),
            egress: Arc::new(egress),
            cfg,
        }
    }

    /// The shared relay (peer counters, stats, peer management while running).
    pub fn relay(&self) -> SharedRelay {
        self.relay.clone()
    }

    /// The WireGuard UDP socket (for [`crate::send_to_peer`]: agent-originated packets
    /// such as metering control replies).
    pub fn udp(&self) -> Arc<UdpEndpoint> {
        self.udp.clone()
    }

    /// Runs until `shutdown` completes (Ok) or a socket/device fails (Err).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let mut tasks = JoinSet::new();
        tasks.spawn(udp_to_egress(
            self.relay.clone(),
            self.udp.clone(),
            self.egress.clone(),
            self.cfg,
        ));
        let rearm = Arc::new(Notify::new());
        tasks.spawn(egress_to_udp(
            self.relay.clone(),
            self.udp.clone(),
            self.egress.clone(),
            self.cfg,
            rearm.clone(),
        ));
        tasks.spawn(timers(
            self.relay.clone(),
            self.udp.clone(),
            self.cfg,
            rearm,
        ));
        let result = tokio::select! {
            () = shutdown => Ok(()),
            r = tasks.join_next() => match r {
                Some(Ok(Err(e))) => Err(e),
                Some(Err(e)) => Err(io::Error::other(e)),
                _ => Ok(()),
            },
        };
        tasks.shutdown().await;
        result
    }
}

fn lock(relay: &SharedRelay) -> MutexGuard<'_, Relay> {
    relay.lock().unwrap_or_else(PoisonError::into_inner)
}

fn slot(arena: &mut Vec<u8>, k: usize, size: usize) -> &mut [u8] {
    if arena.len() < (k + 1) * size {
        arena.resize((k + 1) * size, 0);
    }
    &mut arena[k * size..(k + 1) * size]
}

async fn udp_to_egress<E: Egress>(
    relay: SharedRelay,
    udp: Arc<UdpEndpoint>,
    egress: Arc<E>,
    cfg: ShellConfig,
) -> io::Result<()> {
    let gro = udp.gro_segments().max(1);
    let slot_len = (buffer_len(cfg.mtu) + 128).max(2048);
    // With GRO each buffer can hold a 64 KiB train of datagrams: fewer buffers suffice
    // (router memory), without GRO recvmmsg fills up to BATCH_SIZE small ones.
    let (batch, rx_len) = if gro > 1 {
        (8, 64 * 1024)
    } else {
        (quinn_udp::BATCH_SIZE, slot_len)
    };
    let mut rx: Vec<Vec<u8>> = (0..batch).map(|_| vec![0u8; rx_len]).collect();
    let mut meta = vec![RecvMeta::default(); batch];
    // Decrypted packets, each at [HEADROOM..] of its own buffer (what `send_batch` wants).
    let mut tun_bufs: Vec<Vec<u8>> = Vec::new();
    // Datagrams to send back (handshake responses, cookies, flushed queues): (dst, range).
    let mut udp_out: Vec<u8> = Vec::new();
    let mut udp_meta: Vec<(SocketAddr, usize, usize)> = Vec::new();
    let mut scratch = vec![0u8; slot_len];
    loop {
        let n = {
            let mut iovs: Vec<IoSliceMut<'_>> = rx.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            match udp.recv(&mut iovs, &mut meta).await {
                Ok(n) => n,
                Err(e) if transient(&e) => continue,
                Err(e) => return Err(e),
            }
        };
        let now = Instant::now();
        udp_out.clear();
        udp_meta.clear();
        let mut t = 0;
        {
            let mut r = lock(&relay);
            for (m, data) in meta.iter().zip(&rx).take(n) {
                let stride = if m.stride == 0 { m.len } else { m.stride };
                for seg in data[..m.len].chunks(stride.max(1)) {
                    if tun_bufs.len() <= t {
                        tun_bufs.push(Vec::with_capacity(HEADROOM + slot_len));
                    }
                    let tb = &mut tun_bufs[t];
                    tb.resize(HEADROOM + slot_len, 0);
                    let (_, body) = tb.split_at_mut(HEADROOM);
                    let head = body.as_ptr() as usize;
                    match r.handle_udp(m.addr, seg, now, body) {
                        Action::WriteTun(p) => {
                            let (off, len) = ((p.as_ptr() as usize).saturating_sub(head), p.len());
                            if off != 0 {
                                tb.copy_within(HEADROOM + off..HEADROOM + off + len, HEADROOM);
                            }
                            tb.truncate(HEADROOM + len);
                            t += 1;
                        }
                        Action::SendUdp { dst, bytes } => {
                            udp_meta.push((dst, udp_out.len(), bytes.len()));
                            udp_out.extend_from_slice(bytes);
                        }
                        Action::Done | Action::Drop(_) => {}
                    }
                }
            }
            while let Some(tx) = r.poll_transmit(&mut scratch) {
                udp_meta.push((tx.dst, udp_out.len(), tx.bytes.len()));
                udp_out.extend_from_slice(tx.bytes);
            }
        }
        if t > 0 {
            if let Err(e) = egress.send_batch(&mut tun_bufs[..t]).await {
                tracing::debug!(error = %e, "egress write failed");
            }
        }
        for &(dst, start, len) in &udp_meta {
            if let Err(e) = udp.send(dst, &udp_out[start..start + len], None).await {
                tracing::debug!(error = %e, "udp send failed");
            }
        }
    }
}

async fn egress_to_udp<E: Egress>(
    relay: SharedRelay,
    udp: Arc<UdpEndpoint>,
    egress: Arc<E>,
    cfg: ShellConfig,
    rearm: Arc<Notify>,
) -> io::Result<()> {
    let batch = cfg.batch.max(2 * TUN_MIN_BATCH);
    // Full-MTU packets encrypt to exactly `stride` bytes, so consecutive ones are GSO-contiguous.
    let stride = buffer_len(cfg.mtu);
    let in_len = cfg.mtu.max(1280) + 64;
    let mut inbufs: Vec<Vec<u8>> = (0..batch).map(|_| vec![0u8; in_len]).collect();
    let mut lens = vec![0usize; batch];
    let mut arena = vec![0u8; stride * batch];
    // (dst, slot, offset in slot, len)
    let mut outs: Vec<(SocketAddr, usize, usize, usize)> = Vec::with_capacity(batch);
    loop {
        let cnt = egress.recv_batch(&mut inbufs, &mut lens).await?;
        let now = Instant::now();
        outs.clear();
        {
            let mut r = lock(&relay);
            let mut k = 0;
            for (pkt, len) in inbufs.iter().zip(&lens).take(cnt) {
                let buf = slot(&mut arena, k, stride);
                let head = buf.as_ptr() as usize;
                if let Action::SendUdp { dst, bytes } = r.handle_tun(&pkt[..*len], now, buf) {
                    let off = (bytes.as_ptr() as usize).saturating_sub(head);
                    outs.push((dst, k, off, bytes.len()));
                    k += 1;
                }
            }
            loop {
                let buf = slot(&mut arena, k, stride);
                let head = buf.as_ptr() as usize;
                let Some(t) = r.poll_transmit(buf) else { break };
                let off = (t.bytes.as_ptr() as usize).saturating_sub(head);
                outs.push((t.dst, k, off, t.bytes.len()));
                k += 1;
            }
            if r.take_release_rearm() {
                rearm.notify_one();
            }
        }
        send_runs(&udp, &arena, &outs, stride).await;
    }
}

/// Sends `outs`, merging runs of full-stride datagrams to one destination into GSO sends.
async fn send_runs(
    udp: &UdpEndpoint,
    arena: &[u8],
    outs: &[(SocketAddr, usize, usize, usize)],
    stride: usize,
) {
    let max_seg = udp.gso_segments_for(stride);
    let mut i = 0;
    while i < outs.len() {
        let (dst, k0, off0, len0) = outs[i];
        let mut j = i + 1;
        if max_seg > 1 && off0 == 0 && len0 == stride {
            // Extend while the previous one was full-size, contiguous and to the same peer.
            while j < outs.len() && j - i < max_seg {
                let (d, k, off, len) = outs[j];
                let prev_full = outs[j - 1].3 == stride;
                if d != dst || off != 0 || k != k0 + (j - i) || !prev_full || len > stride {
                    break;
                }
                j += 1;
            }
        }
        let start = k0 * stride + off0;
        let (segs, end) = if j - i > 1 {
            let (_, kl, _, ll) = outs[j - 1];
            (Some(stride), kl * stride + ll)
        } else {
            (None, start + len0)
        };
        if let Err(e) = udp.send(dst, &arena[start..end], segs).await {
            if segs.is_some() {
                // GSO refused (e.g. EIO on a device without checksum offload): send one by one.
                tracing::debug!(error = %e, "gso send failed, falling back");
                for chunk in arena[start..end].chunks(stride) {
                    if let Err(e) = udp.send(dst, chunk, None).await {
                        tracing::debug!(error = %e, "udp send failed");
                    }
                }
            } else {
                tracing::debug!(error = %e, "udp send failed");
            }
        }
        i = j;
    }
}

async fn timers(
    relay: SharedRelay,
    udp: Arc<UdpEndpoint>,
    cfg: ShellConfig,
    rearm: Arc<Notify>,
) -> io::Result<()> {
    let mut buf = vec![0u8; buffer_len(cfg.mtu)];
    let mut pending: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    let stride = buffer_len(cfg.mtu);
    let batch = cfg.batch.max(2 * TUN_MIN_BATCH);
    let mut arena = vec![0u8; stride * batch];
    let mut outs: Vec<(SocketAddr, usize, usize, usize)> = Vec::with_capacity(batch);
    let mut next_tick = tokio::time::Instant::now();
    loop {
        let release = lock(&relay)
            .next_release()
            .map(tokio::time::Instant::from_std);
        let wake = release.map_or(next_tick, |r| r.min(next_tick));
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = rearm.notified() => continue,
        }
        let now = tokio::time::Instant::now();
        if now >= next_tick {
            // Missed ticks are skipped, not caught up.
            next_tick = (next_tick + TIMER_INTERVAL).max(now);
            {
                let mut r = lock(&relay);
                r.handle_timeout(now.into_std());
                while let Some(t) = r.poll_transmit(&mut buf) {
                    pending.push((t.dst, t.bytes.to_vec()));
                }
            }
            for (dst, bytes) in pending.drain(..) {
                if let Err(e) = udp.send(dst, &bytes, None).await {
                    tracing::debug!(error = %e, "udp send failed");
                }
            }
        }
        // Everything the shaper has due, a batch at a time (no lock across sends).
        loop {
            outs.clear();
            {
                let mut r = lock(&relay);
                let now = Instant::now();
                while outs.len() < batch {
                    let k = outs.len();
                    let buf = slot(&mut arena, k, stride);
                    let head = buf.as_ptr() as usize;
                    let Some(t) = r.poll_released(now, buf) else {
                        break;
                    };
                    let off = (t.bytes.as_ptr() as usize).saturating_sub(head);
                    outs.push((t.dst, k, off, t.bytes.len()));
                }
            }
            send_runs(&udp, &arena, &outs, stride).await;
            if outs.len() < batch {
                break;
            }
        }
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
    )
}
