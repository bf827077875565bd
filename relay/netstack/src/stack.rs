//! Sans-IO core: a smoltcp [`Interface`] that accepts any destination, plus flow tables.
//!
//! Driving contract (all calls take the caller's time; nothing here reads a clock or a socket):
//! - [`NetStack::handle_client_packet`] for every IP packet from a client, then
//!   [`NetStack::poll`] (may batch several packets per poll).
//! - [`NetStack::poll_event`] until `None` after every `poll`: open the outside sockets asked for.
//! - [`NetStack::poll_client_packet`] until `None` after every `poll` / `tcp_dial_result`:
//!   packets to encrypt towards clients.
//! - [`NetStack::poll_timeout`] says when to call [`NetStack::handle_timeout`] at the latest.
//! - Flow data: `poll_tcp_recv`/`poll_tcp_send` (std `Context` wakers, no runtime needed),
//!   `poll_udp_datagram`/`udp_reply`; call `poll` after they made progress.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::task::{Context, Poll};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, RecvError, State};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint};
use tracing::{debug, trace};

use crate::NetstackConfig;
use crate::device::QueueDevice;
use crate::packet::{self, Parsed};

mod udp;
use udp::UdpFlow;

/// The interface's own addresses (IPv4 dummy address RFC 7600, IPv6 discard prefix RFC 6666).
/// They only serve as gateways of the catch-all routes that make AnyIP accept every destination.
const OWN_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 8);
const OWN_V6: Ipv6Addr = Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 1);
/// How often idle flows are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// A client that stops acknowledging for this long gets its connection dropped.
const TCP_RETRANSMIT_TIMEOUT: Duration = Duration::from_secs(120);
/// Client TCP segments queued for smoltcp between two polls; more are dropped (TCP retransmits).
const RX_QUEUE_MAX: usize = 1024;

/// Identifies one TCP connection or UDP flow for the lifetime of the [`NetStack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowId(pub u64);

/// Work for the I/O shell.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Connect a TCP socket to `remote`, then report with [`NetStack::tcp_dial_result`].
    TcpDial {
        /// The new flow.
        flow: FlowId,
        /// Where to dial: the original destination, or the target of a
        /// [`NetstackConfig::local_services`](crate::NetstackConfig::local_services) entry.
        remote: SocketAddr,
    },
    /// Open a UDP socket to `remote`; pull datagrams with [`NetStack::poll_udp_datagram`],
    /// push replies with [`NetStack::udp_reply`].
    UdpOpen {
        /// The new flow.
        flow: FlowId,
        /// Where to dial: the original destination, or the target of a
        /// [`NetstackConfig::local_services`](crate::NetstackConfig::local_services) entry.
        remote: SocketAddr,
    },
}

/// Counters (monotonic unless named `*_active`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetstackStats {
    /// Client packets handed in.
    pub packets_in: u64,
    /// Client-bound packets produced.
    pub packets_out: u64,
    /// TCP connections accepted for dialing.
    pub tcp_opened: u64,
    /// UDP flows opened.
    pub udp_opened: u64,
    /// TCP flows currently tracked (dialing or open).
    pub tcp_active: u64,
    /// UDP flows currently tracked.
    pub udp_active: u64,
    /// Outbound TCP connects that failed or timed out (client got a RST).
    pub dial_failed: u64,
    /// New flows refused because a flow limit was reached.
    pub refused_limit: u64,
    /// New flows refused by the policy hook.
    pub refused_policy: u64,
    /// Packets dropped: ICMP, other protocols, fragments, extension headers.
    pub dropped_unsupported: u64,
    /// Packets dropped: not parseable.
    pub dropped_malformed: u64,
    /// Packets dropped: queue full, oversized reply, segment for a flow still dialing.
    pub dropped_other: u64,
}

enum TcpPhase {
    /// Outbound connect in progress; the client's latest SYN waits here.
    Dialing { syn: Vec<u8> },
    /// smoltcp socket accepted (or accepting) the connection.
    Open { handle: SocketHandle },
}

struct TcpFlow {
    client: SocketAddr,
    remote: SocketAddr,
    phase: TcpPhase,
    last_active: Instant,
    /// The shell's flow task is gone (or the flow was aborted): reap once closed.
    released: bool,
}

/// Sans-IO userspace network stack terminating clients' TCP and UDP.
pub struct NetStack {
    cfg: NetstackConfig,
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    tcp: BTreeMap<FlowId, TcpFlow>,
    tcp_index: BTreeMap<(SocketAddr, SocketAddr), FlowId>,
    udp: BTreeMap<FlowId, UdpFlow>,
    udp_index: BTreeMap<(SocketAddr, SocketAddr), FlowId>,
    /// Client-bound packets not produced by smoltcp (RSTs, UDP replies).
    out: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    next_flow: u64,
    now: Instant,
    next_sweep: Instant,
    stats: NetstackStats,
}

impl NetStack {
    /// New stack. `seed` randomizes TCP initial sequence numbers (use a fresh random value).
    pub fn new(cfg: NetstackConfig, seed: u64, now: Instant) -> Self {
        let mut device = QueueDevice::new(cfg.mtu);
        let mut icfg = Config::new(HardwareAddress::Ip);
        icfg.random_seed = seed;
        let mut iface = Interface::new(icfg, &mut device, now);
        iface.set_any_ip(true);
        iface.update_ip_addrs(|addrs| {
            // Capacity is 2 by default; we add exactly 2.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(OWN_V4), 32));
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(OWN_V6), 128));
        });
        // Default routes via our own addresses: AnyIP then accepts every unicast destination,
        // and replies to any client address leave through the device.
        let routes = iface.routes_mut();
        let _ = routes.add_default_ipv4_route(OWN_V4);
        let _ = routes.add_default_ipv6_route(OWN_V6);
        Self {
            cfg,
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            tcp: BTreeMap::new(),
            tcp_index: BTreeMap::new(),
            udp: BTreeMap::new(),
            udp_index: BTreeMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            next_flow: 1,
            now,
            next_sweep: now + SWEEP_EVERY,
            stats: NetstackStats::default(),
        }
    }

    /// Take one decrypted, policy-checked IP packet from a client. Call [`Self::poll`] after.
    pub fn handle_client_packet(&mut self, pkt: &[u8], now: Instant) {
        self.now = now;
        self.stats.packets_in += 1;
        match packet::parse(pkt) {
            Parsed::Tcp {
                client,
                remote,
                syn_only,
                seq,
                seg_len,
            } => self.handle_tcp(pkt, client, remote, syn_only, seq, seg_len),
            Parsed::Udp {
                client,
                remote,
                payload,
            } => self.handle_udp(client, remote, payload),
            Parsed::Unsupported => {
                trace!("dropping unsupported packet");
                self.stats.dropped_unsupported += 1;
            }
            Parsed::Malformed => {
                trace!("dropping malformed packet");
                self.stats.dropped_malformed += 1;
            }
        }
    }

    /// Run smoltcp (process queued client packets, emit segments), sweep idle flows when due,
    /// and free closed sockets.
    pub fn poll(&mut self, now: Instant) {
        self.now = now;
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_EVERY;
            self.sweep_idle(now);
            // Let aborted sockets send their RST.
            self.iface.poll(now, &mut self.device, &mut self.sockets);
        }
        self.reap();
    }

    /// Timer expiry (see [`Self::poll_timeout`]); equivalent to [`Self::poll`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.poll(now);
    }

    /// Latest time at which [`Self::handle_timeout`] must be called.
    pub fn poll_timeout(&mut self, now: Instant) -> Instant {
        match self.iface.poll_at(now, &self.sockets) {
            Some(t) if t < self.next_sweep => t,
            _ => self.next_sweep,
        }
    }

    /// Next flow the shell must open.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Next client-bound IP packet.
    pub fn poll_client_packet(&mut self) -> Option<Vec<u8>> {
        let p = self
            .out
            .pop_front()
            .or_else(|| self.device.tx.pop_front())?;
        self.stats.packets_out += 1;
        Some(p)
    }

    /// Counters.
    pub fn stats(&self) -> NetstackStats {
        let mut s = self.stats;
        s.tcp_active = self.tcp.len() as u64;
        s.udp_active = self.udp.len() as u64;
        s
    }

    /// Outcome of the outbound connect for `flow`. On success the client's SYN is handed to a
    /// listening socket (call [`Self::poll`] next); on failure the client gets a RST.
    pub fn tcp_dial_result(&mut self, flow: FlowId, connected: bool, now: Instant) {
        self.now = now;
        let Some(f) = self.tcp.get_mut(&flow) else {
            return;
        };
        let TcpPhase::Dialing { syn } = &mut f.phase else {
            return;
        };
        let syn = std::mem::take(syn);
        if !connected {
            self.stats.dial_failed += 1;
            debug!(flow = flow.0, "outbound connect failed, resetting client");
            if let Parsed::Tcp {
                client,
                remote,
                seq,
                seg_len,
                ..
            } = packet::parse(&syn)
            {
                self.out
                    .push_back(packet::tcp_rst(client, remote, seq, seg_len));
            }
            let (client, remote) = (f.client, f.remote);
            self.tcp.remove(&flow);
            self.tcp_index.remove(&(client, remote));
            return;
        }
        let size = self.cfg.tcp_buffer;
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; size]),
            tcp::SocketBuffer::new(vec![0u8; size]),
        );
        sock.set_nagle_enabled(false);
        sock.set_timeout(Some(TCP_RETRANSMIT_TIMEOUT));
        // Without congestion control smoltcp sends the whole window every round trip; where
        // the relay's per-client rate limit drops the excess (`client-rate-mbit`), that
        // collapses to a few Mbit/s. Reno backs off on loss like the kernel's TCP does.
        sock.set_congestion_control(tcp::CongestionControl::Reno);
        let ep = IpListenEndpoint {
            addr: Some(f.remote.ip().into()),
            port: f.remote.port(),
        };
        if sock.listen(ep).is_err() {
            self.stats.dropped_other += 1;
            let (client, remote) = (f.client, f.remote);
            self.tcp.remove(&flow);
            self.tcp_index.remove(&(client, remote));
            return;
        }
        let handle = self.sockets.add(sock);
        f.phase = TcpPhase::Open { handle };
        f.last_active = now;
        let client = f.client;
        // Feed the SYN alone and poll right away, so this fresh listener is the only socket in
        // LISTEN when it arrives and cannot linger to capture another client's SYN.
        let pending = std::mem::take(&mut self.device.rx);
        self.device.rx.push_back(syn);
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        self.device.rx = pending;
        let s = self.sockets.get::<tcp::Socket>(handle);
        let accepted = s.state() == State::SynReceived
            && s.remote_endpoint() == Some(IpEndpoint::new(client.ip().into(), client.port()));
        if !accepted {
            self.stats.dropped_other += 1;
            self.remove_tcp(flow);
        }
    }

    /// Read client → outside bytes of `flow`. `Ok(0)` means the client finished sending (FIN).
    pub fn poll_tcp_recv(
        &mut self,
        flow: FlowId,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let sock = match self.open_socket(flow) {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if matches!(sock.state(), State::Listen | State::SynReceived) {
            sock.register_recv_waker(cx.waker());
            return Poll::Pending;
        }
        match sock.recv_slice(buf) {
            Ok(0) => {
                sock.register_recv_waker(cx.waker());
                Poll::Pending
            }
            Ok(n) => Poll::Ready(Ok(n)),
            Err(RecvError::Finished) => Poll::Ready(Ok(0)),
            Err(_) => Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
        }
    }

    /// Queue outside → client bytes of `flow`; returns how many were taken (never 0 when Ready).
    pub fn poll_tcp_send(
        &mut self,
        flow: FlowId,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let now = self.now;
        let sock = match self.open_socket(flow) {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if matches!(sock.state(), State::Listen | State::SynReceived) {
            sock.register_send_waker(cx.waker());
            return Poll::Pending;
        }
        if !sock.may_send() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        match sock.send_slice(data) {
            Ok(0) if !data.is_empty() => {
                sock.register_send_waker(cx.waker());
                Poll::Pending
            }
            Ok(n) => {
                if let Some(f) = self.tcp.get_mut(&flow) {
                    f.last_active = now;
                }
                Poll::Ready(Ok(n))
            }
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    /// The client (tunnel address and port) of a TCP flow.
    pub fn tcp_client(&self, flow: FlowId) -> Option<SocketAddr> {
        self.tcp.get(&flow).map(|f| f.client)
    }

    /// The outside closed its sending side: send FIN to the client after queued data.
    pub fn tcp_close(&mut self, flow: FlowId) {
        if let Ok(s) = self.open_socket(flow) {
            s.close();
        }
    }

    /// The outside connection failed: reset the client.
    pub fn tcp_abort(&mut self, flow: FlowId) {
        if let Ok(s) = self.open_socket(flow) {
            s.abort();
        }
        if let Some(f) = self.tcp.get_mut(&flow) {
            f.released = true;
        }
    }

    /// The shell's task for `flow` has finished; the socket is freed once closed.
    pub fn tcp_release(&mut self, flow: FlowId) {
        if let Some(f) = self.tcp.get_mut(&flow) {
            f.released = true;
        }
    }

    fn open_socket(&mut self, flow: FlowId) -> io::Result<&mut tcp::Socket<'static>> {
        match self.tcp.get(&flow).map(|f| &f.phase) {
            Some(TcpPhase::Open { handle }) => Ok(self.sockets.get_mut::<tcp::Socket>(*handle)),
            _ => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn flow_count(&self) -> usize {
        self.tcp.len() + self.udp.len()
    }

    fn alloc_flow(&mut self) -> FlowId {
        let id = FlowId(self.next_flow);
        self.next_flow += 1;
        id
    }

    fn handle_tcp(
        &mut self,
        pkt: &[u8],
        client: SocketAddr,
        remote: SocketAddr,
        syn_only: bool,
        seq: u32,
        seg_len: u32,
    ) {
        let now = self.now;
        if let Some(&id) = self.tcp_index.get(&(client, remote)) {
            let stale = match self.tcp.get(&id).map(|f| &f.phase) {
                Some(TcpPhase::Open { handle }) => {
                    let st = self.sockets.get::<tcp::Socket>(*handle).state();
                    matches!(st, State::Closed | State::TimeWait)
                }
                _ => false,
            };
            if !(syn_only && stale) {
                let Some(f) = self.tcp.get_mut(&id) else {
                    return;
                };
                f.last_active = now;
                match &mut f.phase {
                    TcpPhase::Dialing { syn } => {
                        // Keep the newest SYN (retransmission); anything else waits for the dial.
                        if syn_only {
                            *syn = pkt.to_vec();
                        } else {
                            self.stats.dropped_other += 1;
                        }
                    }
                    TcpPhase::Open { .. } => self.queue_for_smoltcp(pkt),
                }
                return;
            }
            // Port reuse after the old connection closed: start over.
            self.remove_tcp(id);
        }
        if !syn_only {
            // Unknown connection: smoltcp answers with RST (no socket matches).
            self.queue_for_smoltcp(pkt);
            return;
        }
        let refuse = if self.flow_count() >= self.cfg.max_flows
            || self.tcp.len() >= self.cfg.max_tcp_flows
        {
            self.stats.refused_limit += 1;
            true
        } else if !self.dialable(client, remote) {
            self.stats.refused_policy += 1;
            true
        } else {
            false
        };
        if refuse {
            trace!("refusing TCP SYN");
            self.out
                .push_back(packet::tcp_rst(client, remote, seq, seg_len));
            return;
        }
        let id = self.alloc_flow();
        debug!(flow = id.0, "new TCP flow");
        // Destinations only at TRACE (team rule 6; the privacy canary test runs at DEBUG).
        trace!(flow = id.0, %remote, "TCP flow destination");
        self.stats.tcp_opened += 1;
        self.tcp.insert(
            id,
            TcpFlow {
                client,
                remote,
                phase: TcpPhase::Dialing { syn: pkt.to_vec() },
                last_active: now,
                released: false,
            },
        );
        self.tcp_index.insert((client, remote), id);
        let dial = self.cfg.local_service(remote).unwrap_or(remote);
        self.events.push_back(Event::TcpDial {
            flow: id,
            remote: dial,
        });
    }

    fn queue_for_smoltcp(&mut self, pkt: &[u8]) {
        if self.device.rx.len() >= RX_QUEUE_MAX {
            self.stats.dropped_other += 1;
            return;
        }
        self.device.rx.push_back(pkt.to_vec());
    }

    /// Local services (the agent's own, on its tunnel address) are always dialable. Otherwise
    /// never dial non-unicast or unspecified addresses (connecting to 0.0.0.0 reaches the
    /// router itself on Linux), nor across address families; then ask the policy hook.
    fn dialable(&self, client: SocketAddr, remote: SocketAddr) -> bool {
        if self.cfg.local_service(remote).is_some() {
            return true;
        }
        let (client, remote) = (client.ip(), remote.ip());
        let unicast = match remote {
            IpAddr::V4(a) => !(a.is_unspecified() || a.is_broadcast() || a.is_multicast()),
            IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
        };
        unicast && same_family(client, remote) && self.cfg.allows(remote)
    }

    fn sweep_idle(&mut self, now: Instant) {
        let tcp_idle = to_smol(self.cfg.tcp_idle_timeout);
        let udp_idle = to_smol(self.cfg.udp_idle_timeout);
        let dns_idle = to_smol(self.cfg.udp_dns_idle_timeout);
        let idle_udp: Vec<FlowId> = self
            .udp
            .iter()
            .filter(|(_, f)| {
                let limit = if f.remote.port() == 53 {
                    dns_idle
                } else {
                    udp_idle
                };
                now - f.last_active >= limit
            })
            .map(|(id, _)| *id)
            .collect();
        for id in idle_udp {
            trace!(flow = id.0, "UDP flow idle");
            self.udp_release(id);
        }
        for (id, f) in &mut self.tcp {
            if let TcpPhase::Open { handle } = f.phase {
                if now - f.last_active >= tcp_idle && !f.released {
                    trace!(flow = id.0, "TCP flow idle, resetting");
                    self.sockets.get_mut::<tcp::Socket>(handle).abort();
                    f.released = true;
                }
            }
        }
    }

    /// Free sockets that are closed and no longer needed by their task.
    fn reap(&mut self) {
        let done: Vec<FlowId> = self
            .tcp
            .iter()
            .filter(|(_, f)| match f.phase {
                TcpPhase::Open { handle } => {
                    let s = self.sockets.get::<tcp::Socket>(handle);
                    matches!(s.state(), State::Closed | State::TimeWait)
                        && (f.released || s.recv_queue() == 0)
                }
                TcpPhase::Dialing { .. } => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            self.remove_tcp(id);
        }
    }

    fn remove_tcp(&mut self, id: FlowId) {
        let Some(f) = self.tcp.remove(&id) else {
            return;
        };
        self.tcp_index.remove(&(f.client, f.remote));
        if let TcpPhase::Open { handle } = f.phase {
            // abort() wakes the task's wakers so it notices the flow is gone.
            self.sockets.get_mut::<tcp::Socket>(handle).abort();
            self.sockets.remove(handle);
        }
        trace!(flow = id.0, "TCP flow removed");
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

fn to_smol(d: std::time::Duration) -> Duration {
    Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
