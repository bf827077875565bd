//! The WireGuard UDP socket: large kernel buffers, non-blocking, wrapped for quinn-udp batching.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Requested SO_RCVBUF / SO_SNDBUF (the default 212 KB overflows at ~0.6 Gbit/s).
pub const SOCKET_BUFFER: usize = 4 << 20;

/// A bound UDP socket plus quinn-udp's per-socket state (GSO/GRO capabilities).
#[derive(Debug)]
pub struct UdpEndpoint {
    socket: UdpSocket,
    state: UdpSocketState,
}

/// Binds the WireGuard socket on `addr` with 4 MiB buffers (forced past `rmem_max` when
/// running with CAP_NET_ADMIN, otherwise as large as the sysctl allows).
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpEndpoint> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // "[::]:port" serves IPv4 too.
        sock.set_only_v6(false)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    let std_sock: std::net::UdpSocket = sock.into();
    let socket = UdpSocket::from_std(std_sock)?;
    set_buffers(&socket);
    let state = UdpSocketState::new((&socket).into())?;
    Ok(UdpEndpoint { socket, state })
}

fn set_buffers(socket: &UdpSocket) {
    let fd = socket.as_fd();
    let forced =
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::RcvBufForce, &SOCKET_BUFFER)
            .and_then(|()| {
                nix::sys::socket::setsockopt(
                    &fd,
                    nix::sys::socket::sockopt::SndBufForce,
                    &SOCKET_BUFFER,
                )
            });
    if forced.is_err() {
        let s = SockRef::from(socket);
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    }
    let s = SockRef::from(socket);
    tracing::debug!(
        rcvbuf = s.recv_buffer_size().unwrap_or(0),
        sndbuf = s.send_buffer_size().unwrap_or(0),
        forced = forced.is_ok(),
        "udp socket buffers"
    );
}

impl UdpEndpoint {
    /// The bound local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Effective receive buffer size (for diagnostics).
    pub fn recv_buffer_size(&self) -> usize {
        SockRef::from(&self.socket).recv_buffer_size().unwrap_or(0)
    }

    /// Datagrams the kernel may coalesce into one receive buffer (GRO); 1 if unsupported.
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// Segments one GSO send may carry; 1 if unsupported.
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Segments of `stride` bytes one GSO send may carry: the kernel's segment limit, and the
    /// whole super-datagram must stay a valid (< 64 KiB) UDP datagram.
    pub fn gso_segments_for(&self, stride: usize) -> usize {
        let by_size = (usize::from(u16::MAX) - 48) / stride.max(1);
        self.state.max_gso_segments().min(by_size).max(1)
    }

    /// Receives a batch (recvmmsg, GRO); returns how many `meta` entries were filled.
    pub async fn recv(
        &self,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        loop {
            self.socket.readable().await?;
            match self.socket.try_io(Interest::READABLE, || {
                self.state.recv((&self.socket).into(), bufs, meta)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    /// Sends one datagram, or several equal-sized ones with `segment_size` (GSO).
    pub async fn send(
        &self,
        dst: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<()> {
        let t = Transmit {
            destination: dst,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        loop {
            self.socket.writable().await?;
            match self.socket.try_io(Interest::WRITABLE, || {
                self.state.try_send((&self.socket).into(), &t)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }
}
