//! Test client: a second smoltcp `Interface` acting as a tunnel client, plus raw UDP helpers.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpProtocol, IpRepr, Ipv4Packet, Ipv6Packet,
    TcpPacket, UdpPacket, UdpRepr,
};

pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);

#[derive(Default)]
pub struct QDev {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: VecDeque<Vec<u8>>,
}
pub struct Rx(Vec<u8>);
pub struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);
impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}
impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0; len];
        let r = f(&mut b);
        self.0.push_back(b);
        r
    }
}
impl Device for QDev {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;
    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.pop_front()?;
        Some((Rx(p), Tx(&mut self.tx)))
    }
    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = 1420;
        c
    }
}

/// A smoltcp "tunnel client" with addresses 10.77.0.2/24 and fd77::2/64.
pub struct Client {
    pub iface: Interface,
    pub dev: QDev,
    pub sockets: SocketSet<'static>,
    next_port: u16,
}

impl Client {
    pub fn new(now: Instant) -> Self {
        let mut dev = QDev::default();
        let mut cfg = Config::new(HardwareAddress::Ip);
        cfg.random_seed = 7;
        let mut iface = Interface::new(cfg, &mut dev, now);
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(CLIENT_V4), 24)).unwrap();
            a.push(IpCidr::new(IpAddress::Ipv6(CLIENT_V6), 64)).unwrap();
        });
        iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Addr::new(10, 77, 0, 1))
            .unwrap();
        iface
            .routes_mut()
            .add_default_ipv6_route(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1))
            .unwrap();
        Self {
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            next_port: 40000,
        }
    }

    /// Open a TCP connection to `remote` from the client's address of the same family.
    pub fn connect(&mut self, remote: SocketAddr, buf: usize) -> SocketHandle {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; buf]),
            tcp::SocketBuffer::new(vec![0; buf]),
        );
        let local = self.local_endpoint(remote);
        s.connect(self.iface.context(), IpEndpoint::from(remote), local)
            .unwrap();
        self.sockets.add(s)
    }

    pub fn local_endpoint(&mut self, remote: SocketAddr) -> IpEndpoint {
        self.next_port += 1;
        let ip: IpAddr = if remote.is_ipv4() {
            CLIENT_V4.into()
        } else {
            CLIENT_V6.into()
        };
        IpEndpoint::new(ip.into(), self.next_port)
    }

    pub fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    pub fn poll(&mut self, now: Instant) {
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
    }
}

/// A raw client UDP packet from `client` to `remote`.
pub fn udp_packet(client: SocketAddr, remote: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let repr = UdpRepr {
        src_port: client.port(),
        dst_port: remote.port(),
    };
    let src: IpAddress = client.ip().into();
    let dst: IpAddress = remote.ip().into();
    let ip = IpRepr::new(src, dst, IpProtocol::Udp, 8 + payload.len(), 64);
    let hl = ip.header_len();
    let mut buf = vec![0; hl + 8 + payload.len()];
    let caps = Default::default();
    ip.emit(&mut buf[..], &caps);
    repr.emit(
        &mut UdpPacket::new_unchecked(&mut buf[hl..]),
        &src,
        &dst,
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps,
    );
    buf
}

/// Parsed client-bound UDP packet: (src, dst, payload), with checksums verified.
pub fn parse_udp(pkt: &[u8]) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
    let (src, dst, payload): (IpAddr, IpAddr, &[u8]) = match pkt[0] >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(pkt).ok()?;
            assert!(p.verify_checksum());
            if p.next_header() != IpProtocol::Udp {
                return None;
            }
            (p.src_addr().into(), p.dst_addr().into(), p.payload())
        }
        6 => {
            let p = Ipv6Packet::new_checked(pkt).ok()?;
            if p.next_header() != IpProtocol::Udp {
                return None;
            }
            (p.src_addr().into(), p.dst_addr().into(), p.payload())
        }
        _ => return None,
    };
    let u = UdpPacket::new_checked(payload).ok()?;
    assert!(u.verify_checksum(&src.into(), &dst.into()));
    Some((
        SocketAddr::new(src, u.src_port()),
        SocketAddr::new(dst, u.dst_port()),
        u.payload().to_vec(),
    ))
}

/// Is this a TCP segment with RST set?
pub fn is_tcp_rst(pkt: &[u8]) -> bool {
    let payload = match pkt[0] >> 4 {
        4 => Ipv4Packet::new_checked(pkt).map(|p| p.payload().to_vec()),
        _ => Ipv6Packet::new_checked(pkt).map(|p| p.payload().to_vec()),
    };
    payload
        .ok()
        .and_then(|p| TcpPacket::new_checked(p).ok().map(|t| t.rst()))
        .unwrap_or(false)
}

/// Deterministic test data: byte `i` of stream `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
