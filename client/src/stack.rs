//! The client-side userspace TCP/IP stack for `ferry socks5`: a smoltcp `Interface` whose
//! "device" is the tunnel (IP packets in and out of the [`crate::engine::Engine`]). SOCKS
//! connection tasks talk to it through channels; DNS names are resolved with UDP queries to
//! the relay's resolver, sent through the tunnel as well.
//!
//! Driving contract: push decrypted packets with [`Stack::receive`], call [`Stack::poll`]
//! after every event and at [`Stack::poll_delay`], then send [`Stack::take_outgoing`] into
//! the tunnel. Commands from connection tasks go to [`Stack::command`].

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};
use tokio::sync::{mpsc, oneshot};

const TCP_BUF: usize = 256 * 1024;
const READ_CHUNK: usize = 16 * 1024;
const DNS_PORT: u16 = 53;
const DNS_LOCAL_PORT: u16 = 5353;
const DNS_TIMEOUT: Duration = Duration::from_secs(2);
const DNS_TRIES: u32 = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// What a connect the relay's policy refused fails with (SOCKS reply 2).
pub(crate) const NOT_ALLOWED: &str = "not allowed by the relay's policy";

/// For an ICMP/ICMPv6 "administratively prohibited" error quoting one of our TCP packets:
/// (our port, the remote address and port it was for).
fn prohibited_tcp(pkt: &[u8]) -> Option<(u16, SocketAddr)> {
    use smoltcp::wire::{
        Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv4Packet,
        Ipv6Packet,
    };
    // The quoted packet: its IP header, then at least the ports.
    match pkt.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(pkt).ok()?;
            if ip.next_header() != IpProtocol::Icmp {
                return None;
            }
            let icmp = Icmpv4Packet::new_checked(ip.payload()).ok()?;
            // Codes 9, 10, 13: network, host, communication administratively prohibited.
            if icmp.msg_type() != Icmpv4Message::DstUnreachable
                || !matches!(icmp.msg_code(), 9 | 10 | 13)
            {
                return None;
            }
            quoted_v4(icmp.data())
        }
        6 => {
            let ip = Ipv6Packet::new_checked(pkt).ok()?;
            if ip.next_header() != IpProtocol::Icmpv6 {
                return None;
            }
            let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
            if icmp.msg_type() != Icmpv6Message::DstUnreachable || icmp.msg_code() != 1 {
                return None;
            }
            quoted_v6(icmp.payload())
        }
        _ => None,
    }
}

/// An IPv6 quote: a fixed header whose next header is TCP (we send no extension headers).
fn quoted_v6(q: &[u8]) -> Option<(u16, SocketAddr)> {
    if q.len() < 44 || q[6] != 6 {
        return None;
    }
    let dst: [u8; 16] = q[24..40].try_into().ok()?;
    let sport = u16::from_be_bytes([q[40], q[41]]);
    let dport = u16::from_be_bytes([q[42], q[43]]);
    Some((sport, SocketAddr::new(Ipv6Addr::from(dst).into(), dport)))
}

fn quoted_v4(q: &[u8]) -> Option<(u16, SocketAddr)> {
    let ihl = usize::from(*q.first()? & 0x0f) * 4;
    if ihl < 20 || q.len() < ihl + 4 || q[9] != 6 {
        return None;
    }
    let dst: [u8; 4] = q[16..20].try_into().ok()?;
    let sport = u16::from_be_bytes([q[ihl], q[ihl + 1]]);
    let dport = u16::from_be_bytes([q[ihl + 2], q[ihl + 3]]);
    Some((sport, SocketAddr::new(Ipv4Addr::from(dst).into(), dport)))
}

/// A request from a SOCKS connection task.
pub(crate) enum Command {
    /// Open a TCP connection; `ready` gets the outcome; afterwards bytes flow through the
    /// channels (`to_net` closed = our FIN; `from_net` closed = the peer's FIN or a reset).
    Connect {
        dst: SocketAddr,
        to_net: mpsc::Receiver<Vec<u8>>,
        from_net: mpsc::Sender<Vec<u8>>,
        ready: oneshot::Sender<Result<(), &'static str>>,
    },
    /// Resolve a name through the relay's resolver (A, then AAAA if no A).
    Resolve {
        name: String,
        reply: oneshot::Sender<Result<Vec<IpAddr>, &'static str>>,
    },
}

struct Conn {
    handle: SocketHandle,
    to_net: Option<mpsc::Receiver<Vec<u8>>>,
    pending: Vec<u8>,
    sent: usize,
    from_net: Option<mpsc::Sender<Vec<u8>>>,
    ready: Option<oneshot::Sender<Result<(), &'static str>>>,
    started: SmolInstant,
}

struct Lookup {
    name: Name,
    server: usize,
    tries: u32,
    qtype: RecordType,
    sent_at: SmolInstant,
    reply: oneshot::Sender<Result<Vec<IpAddr>, &'static str>>,
}

/// The stack.
pub(crate) struct Stack {
    iface: Interface,
    dev: TunnelDevice,
    sockets: SocketSet<'static>,
    conns: Vec<Conn>,
    dns_socket: Option<SocketHandle>,
    dns_servers: Vec<IpAddr>,
    lookups: BTreeMap<u16, Lookup>,
    next_id: u16,
    next_port: u16,
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
}

impl Stack {
    /// A stack with our tunnel addresses; `seed` randomises ports, sequence numbers and DNS ids.
    pub(crate) fn new(
        v4: Option<Ipv4Addr>,
        v6: Option<Ipv6Addr>,
        mtu: usize,
        dns_servers: Vec<IpAddr>,
        seed: u64,
        now: SmolInstant,
    ) -> Self {
        let mut dev = TunnelDevice {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            mtu,
        };
        let mut cfg = Config::new(HardwareAddress::Ip);
        cfg.random_seed = seed;
        let mut iface = Interface::new(cfg, &mut dev, now);
        iface.update_ip_addrs(|a| {
            if let Some(v4) = v4 {
                let _ = a.push(IpCidr::new(IpAddress::Ipv4(v4), 32));
            }
            if let Some(v6) = v6 {
                let _ = a.push(IpCidr::new(IpAddress::Ipv6(v6), 128));
            }
        });
        // With an IP medium there is no neighbour discovery: the "gateway" only has to exist
        // for smoltcp's route lookup; every packet goes into the tunnel.
        if let Some(v4) = v4 {
            let _ = iface.routes_mut().add_default_ipv4_route(v4);
        }
        if let Some(v6) = v6 {
            let _ = iface.routes_mut().add_default_ipv6_route(v6);
        }
        let mut sockets = SocketSet::new(Vec::new());
        let dns_socket = if dns_servers.is_empty() {
            None
        } else {
            let mut s = udp::Socket::new(
                udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16 * 1024]),
                udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16 * 1024]),
            );
            let _ = s.bind(DNS_LOCAL_PORT);
            Some(sockets.add(s))
        };
        Self {
            iface,
            dev,
            sockets,
            conns: Vec::new(),
            dns_socket,
            dns_servers,
            lookups: BTreeMap::new(),
            next_id: (seed & 0xffff) as u16,
            next_port: 20000 + (seed % 20000) as u16,
            v4,
            v6,
        }
    }

    /// A decrypted packet from the relay.
    pub(crate) fn receive(&mut self, pkt: Vec<u8>) {
        // smoltcp's TCP ignores ICMP errors: a connect the relay answers with "administratively
        // prohibited" (its egress policy) fails here at once instead of after the timeout.
        if let Some((local_port, remote)) = prohibited_tcp(&pkt) {
            self.refuse_pending(local_port, remote);
        }
        self.dev.rx.push_back(pkt);
    }

    /// Fails the pending connect from our `local_port` to `remote` with "not allowed".
    fn refuse_pending(&mut self, local_port: u16, remote: SocketAddr) {
        for c in &mut self.conns {
            let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
            let ours = s.local_endpoint().is_some_and(|l| l.port == local_port)
                && s.remote_endpoint()
                    .is_some_and(|r| SocketAddr::new(r.addr.into(), r.port) == remote);
            if ours {
                if let Some(r) = c.ready.take() {
                    s.abort();
                    let _ = r.send(Err(NOT_ALLOWED));
                }
            }
        }
    }

    /// Packets to encrypt and send.
    pub(crate) fn take_outgoing(&mut self) -> Vec<Vec<u8>> {
        self.dev.tx.drain(..).collect()
    }

    /// When to poll next at the latest.
    pub(crate) fn poll_delay(&mut self, now: SmolInstant) -> Duration {
        self.iface
            .poll_delay(now, &self.sockets)
            .map_or(Duration::from_millis(250), |d| {
                Duration::from_micros(d.total_micros()).min(Duration::from_millis(250))
            })
    }

    /// Number of open TCP connections.
    pub(crate) fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Handles one command.
    pub(crate) fn command(&mut self, cmd: Command, now: SmolInstant) {
        match cmd {
            Command::Connect {
                dst,
                to_net,
                from_net,
                ready,
            } => {
                let local_ip: Option<IpAddr> = match dst.ip() {
                    IpAddr::V4(_) => self.v4.map(IpAddr::V4),
                    IpAddr::V6(_) => self.v6.map(IpAddr::V6),
                };
                let Some(local_ip) = local_ip else {
                    let _ = ready.send(Err("no tunnel address of that family"));
                    return;
                };
                let mut s = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; TCP_BUF]),
                    tcp::SocketBuffer::new(vec![0; TCP_BUF]),
                );
                s.set_nagle_enabled(false);
                self.next_port = if self.next_port >= 60000 {
                    20000
                } else {
                    self.next_port + 1
                };
                let local = IpEndpoint::new(local_ip.into(), self.next_port);
                if s.connect(self.iface.context(), IpEndpoint::from(dst), local)
                    .is_err()
                {
                    let _ = ready.send(Err("invalid destination"));
                    return;
                }
                let handle = self.sockets.add(s);
                self.conns.push(Conn {
                    handle,
                    to_net: Some(to_net),
                    pending: Vec::new(),
                    sent: 0,
                    from_net: Some(from_net),
                    ready: Some(ready),
                    started: now,
                });
            }
            Command::Resolve { name, reply } => {
                if let Ok(ip) = IpAddr::from_str(&name) {
                    let _ = reply.send(Ok(vec![ip]));
                    return;
                }
                if self.dns_socket.is_none() {
                    let _ = reply.send(Err("the relay has no resolver configured"));
                    return;
                }
                let Ok(mut n) = Name::from_str(&name) else {
                    let _ = reply.send(Err("invalid domain name"));
                    return;
                };
                n.set_fqdn(true);
                let qtype = if self.v4.is_some() {
                    RecordType::A
                } else {
                    RecordType::AAAA
                };
                self.start_lookup(n, qtype, 0, 0, reply, now);
            }
        }
    }

    fn start_lookup(
        &mut self,
        name: Name,
        qtype: RecordType,
        server: usize,
        tries: u32,
        reply: oneshot::Sender<Result<Vec<IpAddr>, &'static str>>,
        now: SmolInstant,
    ) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_mul(25173).wrapping_add(13849);
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(name.clone(), qtype));
        let (Some(h), Ok(bytes)) = (self.dns_socket, m.to_vec()) else {
            let _ = reply.send(Err("cannot build DNS query"));
            return;
        };
        let server_ip = self.dns_servers[server % self.dns_servers.len()];
        let s = self.sockets.get_mut::<udp::Socket>(h);
        if s.send_slice(&bytes, IpEndpoint::new(server_ip.into(), DNS_PORT))
            .is_err()
        {
            let _ = reply.send(Err("DNS socket busy"));
            return;
        }
        tracing::debug!(name = %name, ?qtype, "resolving through the tunnel");
        self.lookups.insert(
            id,
            Lookup {
                name,
                server,
                tries,
                qtype,
                sent_at: now,
                reply,
            },
        );
    }

    /// Runs smoltcp and moves data between sockets and connection channels.
    pub(crate) fn poll(&mut self, now: SmolInstant) {
        for _ in 0..4 {
            self.iface.poll(now, &mut self.dev, &mut self.sockets);
            let moved = self.service_conns(now);
            self.service_dns(now);
            if !moved {
                break;
            }
        }
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
    }

    fn service_conns(&mut self, now: SmolInstant) -> bool {
        let mut moved = false;
        let mut i = 0;
        while i < self.conns.len() {
            let c = &mut self.conns[i];
            let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
            if let Some(r) = c.ready.take() {
                if s.may_send() {
                    let _ = r.send(Ok(()));
                } else if s.state() == tcp::State::Closed {
                    let _ = r.send(Err("connection refused"));
                } else if now - c.started
                    > smoltcp::time::Duration::from_micros(CONNECT_TIMEOUT.as_micros() as u64)
                {
                    s.abort();
                    let _ = r.send(Err("connection timed out"));
                } else {
                    c.ready = Some(r);
                }
            }
            if c.ready.is_none() {
                // Client -> network.
                loop {
                    if c.sent >= c.pending.len() {
                        c.pending.clear();
                        c.sent = 0;
                        match c.to_net.as_mut().map(|rx| rx.try_recv()) {
                            Some(Ok(v)) => c.pending = v,
                            Some(Err(mpsc::error::TryRecvError::Disconnected)) => {
                                c.to_net = None;
                                s.close();
                                break;
                            }
                            _ => break,
                        }
                    }
                    if !s.can_send() {
                        break;
                    }
                    match s.send_slice(&c.pending[c.sent..]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            c.sent += n;
                            moved = true;
                        }
                    }
                }
                // Network -> client.
                while s.can_recv() {
                    let Some(tx) = &c.from_net else { break };
                    let Ok(permit) = tx.try_reserve() else { break };
                    let mut buf = vec![0u8; READ_CHUNK];
                    match s.recv_slice(&mut buf) {
                        Ok(n) if n > 0 => {
                            buf.truncate(n);
                            permit.send(buf);
                            moved = true;
                        }
                        _ => break,
                    }
                }
                if !s.may_recv() && !s.can_recv() && c.from_net.is_some() {
                    // Peer finished (FIN or reset): tell the client side.
                    c.from_net = None;
                }
                if c.from_net.as_ref().is_some_and(|t| t.is_closed()) {
                    // The SOCKS client went away: reset.
                    s.abort();
                    c.from_net = None;
                    c.to_net = None;
                }
            }
            let done =
                matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait) && c.ready.is_none();
            if done {
                let h = c.handle;
                self.sockets.remove(h);
                self.conns.swap_remove(i);
            } else {
                i += 1;
            }
        }
        moved
    }

    fn service_dns(&mut self, now: SmolInstant) {
        let Some(h) = self.dns_socket else { return };
        let mut answers = Vec::new();
        {
            let s = self.sockets.get_mut::<udp::Socket>(h);
            while let Ok((data, meta)) = s.recv() {
                let from: IpAddr = meta.endpoint.addr.into();
                if meta.endpoint.port != DNS_PORT || !self.dns_servers.contains(&from) {
                    continue;
                }
                if let Ok(m) = Message::from_vec(data) {
                    answers.push(m);
                }
            }
        }
        for m in answers {
            let Some(l) = self.lookups.remove(&m.metadata.id) else {
                continue;
            };
            let ips: Vec<IpAddr> = m
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect();
            if !ips.is_empty() {
                let _ = l.reply.send(Ok(ips));
            } else if l.qtype == RecordType::A && self.v6.is_some() {
                self.start_lookup(l.name, RecordType::AAAA, l.server, 0, l.reply, now);
            } else {
                let _ = l.reply.send(Err("name not found"));
            }
        }
        let timeout = smoltcp::time::Duration::from_micros(DNS_TIMEOUT.as_micros() as u64);
        let expired: Vec<u16> = self
            .lookups
            .iter()
            .filter(|(_, l)| now - l.sent_at > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(l) = self.lookups.remove(&id) {
                if l.tries + 1 < DNS_TRIES {
                    self.start_lookup(l.name, l.qtype, l.server + 1, l.tries + 1, l.reply, now);
                } else {
                    let _ = l.reply.send(Err("resolver did not answer"));
                }
            }
        }
    }
}

/// Queue-backed IP-medium device between smoltcp and the tunnel.
struct TunnelDevice {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    mtu: usize,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0u8; len];
        let r = f(&mut b);
        self.0.push_back(b);
        r
    }
}

impl Device for TunnelDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: SmolInstant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let p = self.rx.pop_front()?;
        Some((Rx(p), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _now: SmolInstant) -> Option<Self::TxToken<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = self.mtu;
        c
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr,
    };

    /// What the relay answers a blocked packet with (see ferry-relay-core's `unreachable`).
    fn prohibited(orig: &[u8], code: Icmpv4DstUnreachable) -> Vec<u8> {
        let o = Ipv4Packet::new_checked(orig).unwrap();
        let icmp = Icmpv4Repr::DstUnreachable {
            reason: code,
            header: Ipv4Repr {
                src_addr: o.src_addr(),
                dst_addr: o.dst_addr(),
                next_header: o.next_header(),
                payload_len: o.payload().len(),
                hop_limit: o.hop_limit(),
            },
            data: o.payload(),
        };
        let outer = Ipv4Repr {
            src_addr: "10.77.0.1".parse().unwrap(),
            dst_addr: o.src_addr(),
            next_header: IpProtocol::Icmp,
            payload_len: icmp.buffer_len(),
            hop_limit: 64,
        };
        let caps = ChecksumCapabilities::default();
        let mut buf = vec![0u8; outer.buffer_len() + icmp.buffer_len()];
        let mut ip = Ipv4Packet::new_unchecked(&mut buf[..]);
        outer.emit(&mut ip, &caps);
        icmp.emit(&mut Icmpv4Packet::new_unchecked(ip.payload_mut()), &caps);
        buf
    }

    fn connecting(dst: &str) -> (Stack, oneshot::Receiver<Result<(), &'static str>>, Vec<u8>) {
        let now = SmolInstant::from_millis(0);
        let mut st = Stack::new(
            Some("10.77.0.2".parse().unwrap()),
            None,
            1420,
            vec![],
            7,
            now,
        );
        let (_to_tx, to_net) = mpsc::channel(4);
        let (from_net, _from_rx) = mpsc::channel(4);
        let (ready, rx) = oneshot::channel();
        st.command(
            Command::Connect {
                dst: dst.parse().unwrap(),
                to_net,
                from_net,
                ready,
            },
            now,
        );
        st.poll(now);
        let syn = st.take_outgoing().pop().expect("a SYN");
        (st, rx, syn)
    }

    #[test]
    fn a_connect_the_relay_prohibits_fails_at_once_with_not_allowed() {
        let (mut st, mut rx, syn) = connecting("192.168.77.2:8000");
        st.receive(prohibited(&syn, Icmpv4DstUnreachable::CommProhibited));
        st.poll(SmolInstant::from_millis(5));
        assert_eq!(rx.try_recv().unwrap(), Err(NOT_ALLOWED));
    }

    #[test]
    fn other_icmp_errors_and_other_flows_leave_the_connect_pending() {
        let (mut st, mut rx, syn) = connecting("192.168.77.2:8000");
        // Port unreachable is not a policy refusal.
        st.receive(prohibited(&syn, Icmpv4DstUnreachable::PortUnreachable));
        // A prohibition quoting another destination port.
        let mut other = syn.clone();
        other[22..24].copy_from_slice(&9u16.to_be_bytes());
        st.receive(prohibited(&other, Icmpv4DstUnreachable::CommProhibited));
        st.poll(SmolInstant::from_millis(5));
        assert!(rx.try_recv().is_err(), "still pending");
    }
}
