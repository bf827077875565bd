//! Where decrypted client packets go and replies come from: kernel TUN or userspace stack.

use std::future::Future;
use std::io;
use std::process::Command;

use ipnet::IpNet;

pub use ferry_netstack::UserspaceEgress;

/// Scratch bytes in front of each packet handed to [`Egress::send_batch`] (a TUN with offload
/// writes its virtio-net header there).
pub const HEADROOM: usize = 16;

/// An IP-packet pipe to the outside world. `send` takes one inner packet accepted by the relay
/// core; `recv` yields the next packet destined to a client. The batch methods have defaults
/// built on the single-packet ones; a device overrides them when it can do better.
pub trait Egress: Send + Sync + 'static {
    /// Forwards one IP packet.
    fn send(&self, packet: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Waits for the next client-bound IP packet; returns its length in `buf`.
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;
    /// Returns another packet if one is ready right now (for batching); `None` otherwise.
    fn try_recv(&self, _buf: &mut [u8]) -> Option<usize> {
        None
    }

    /// Forwards several packets; each one is `bufs[i][HEADROOM..]` (the headroom is scratch).
    /// May coalesce packets of one flow. Errors are per batch, best effort.
    fn send_batch(&self, bufs: &mut [Vec<u8>]) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            let mut result = Ok(());
            for b in bufs.iter() {
                if let Err(e) = self.send(&b[HEADROOM.min(b.len())..]).await {
                    result = Err(e);
                }
            }
            result
        }
    }

    /// Waits for at least one client-bound packet and takes whatever else is ready, up to
    /// `bufs.len()`: packet `i` is `bufs[i][..sizes[i]]`. Returns the number of packets.
    fn recv_batch(
        &self,
        bufs: &mut [Vec<u8>],
        sizes: &mut [usize],
    ) -> impl Future<Output = io::Result<usize>> + Send {
        async move {
            let Some(first) = bufs.first_mut() else {
                return Ok(0);
            };
            sizes[0] = self.recv(first).await?;
            let mut n = 1;
            while n < bufs.len() {
                match self.try_recv(&mut bufs[n]) {
                    Some(len) => {
                        sizes[n] = len;
                        n += 1;
                    }
                    None => break,
                }
            }
            Ok(n)
        }
    }
}

/// Kernel TUN egress: the host routes and NATs the packets. With offload (virtio-net header,
/// TSO/GRO) one read returns a whole TCP burst split into packets and one write carries
/// several coalesced TCP segments, cutting syscalls by an order of magnitude.
pub struct TunEgress {
    dev: tun_rs::AsyncDevice,
    name: String,
    offload: bool,
    rx_scratch: tokio::sync::Mutex<Vec<u8>>,
    gro: tokio::sync::Mutex<tun_rs::GROTable>,
}

impl std::fmt::Debug for TunEgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunEgress")
            .field("name", &self.name)
            .field("offload", &self.offload)
            .finish()
    }
}

/// Fewest packet buffers [`TunEgress::recv_batch`] needs to split one offloaded read.
pub const TUN_MIN_BATCH: usize = 64;

impl TunEgress {
    /// Creates TUN `name` with `mtu`, assigns `addresses` and brings it up (needs
    /// CAP_NET_ADMIN and `ip` from iproute2 or busybox). With `offload`, TSO/GRO through a
    /// virtio-net header is requested and silently not used if the kernel refuses it.
    /// The device vanishes when dropped.
    pub fn create(name: &str, mtu: u16, addresses: &[IpNet], offload: bool) -> io::Result<Self> {
        let build = |off: bool| {
            tun_rs::DeviceBuilder::new()
                .name(name)
                .mtu(mtu)
                .offload(off)
                .build_async()
        };
        let (dev, offload) = match build(offload) {
            Ok(d) => (d, offload),
            Err(e) if offload => {
                tracing::debug!(error = %e, "TUN offload unavailable, using plain TUN");
                (build(false)?, false)
            }
            Err(e) => return Err(e),
        };
        for a in addresses {
            let fam = if a.addr().is_ipv6() { "-6" } else { "-4" };
            run_ip(&[fam, "addr", "replace", &a.to_string(), "dev", name])?;
        }
        run_ip(&["link", "set", "dev", name, "mtu", &mtu.to_string(), "up"])?;
        Ok(Self {
            dev,
            name: name.to_owned(),
            offload,
            rx_scratch: tokio::sync::Mutex::new(vec![0u8; tun_rs::VIRTIO_NET_HDR_LEN + 65_535]),
            gro: tokio::sync::Mutex::new(tun_rs::GROTable::new()),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether TSO/GRO offload is active.
    pub fn offload(&self) -> bool {
        self.offload
    }
}

fn run_ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Egress for TunEgress {
    async fn send(&self, packet: &[u8]) -> io::Result<()> {
        let mut one = vec![0u8; HEADROOM];
        one.extend_from_slice(packet);
        self.send_batch(std::slice::from_mut(&mut one)).await
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        if self.offload {
            return Err(io::Error::other("TunEgress with offload: use recv_batch"));
        }
        self.dev.recv(buf).await
    }

    fn try_recv(&self, buf: &mut [u8]) -> Option<usize> {
        if self.offload {
            return None;
        }
        self.dev.try_recv(buf).ok()
    }

    async fn send_batch(&self, bufs: &mut [Vec<u8>]) -> io::Result<()> {
        if bufs.is_empty() {
            return Ok(());
        }
        let mut gro = self.gro.lock().await;
        self.dev
            .send_multiple(&mut gro, bufs, HEADROOM)
            .await
            .map(|_| ())
    }

    async fn recv_batch(&self, bufs: &mut [Vec<u8>], sizes: &mut [usize]) -> io::Result<usize> {
        if !self.offload {
            // Plain TUN: one blocking read, then whatever else is queued.
            let Some(first) = bufs.first_mut() else {
                return Ok(0);
            };
            sizes[0] = self.dev.recv(first).await?;
            let mut n = 1;
            while n < bufs.len() {
                match self.dev.try_recv(&mut bufs[n]) {
                    Ok(len) => {
                        sizes[n] = len;
                        n += 1;
                    }
                    Err(_) => break,
                }
            }
            return Ok(n);
        }
        let mut scratch = self.rx_scratch.lock().await;
        let mut n = loop {
            match self.dev.recv_multiple(&mut scratch, bufs, sizes, 0).await {
                Ok(n) => break n,
                // A packet tun-rs could not split (no OS error): drop it and read on.
                Err(e) if e.raw_os_error().is_none() => {
                    tracing::debug!(error = %e, "dropping unsplittable TUN read");
                }
                Err(e) => return Err(e),
            }
        };
        while bufs.len() - n >= TUN_MIN_BATCH {
            match self
                .dev
                .try_recv_multiple(&mut scratch, &mut bufs[n..], &mut sizes[n..], 0)
            {
                Ok(m) => n += m,
                Err(_) => break,
            }
        }
        Ok(n)
    }
}

impl Egress for UserspaceEgress {
    async fn send(&self, packet: &[u8]) -> io::Result<()> {
        UserspaceEgress::send(self, packet).await;
        Ok(())
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(UserspaceEgress::recv(self, buf).await)
    }
}
