//! Where decrypted client packets go and replies come from: kernel TUN or userspace stack.

use std::future::Future;
use std::io;
use std::process::Command;

use ipnet::IpNet;

pub use ferry_netstack::UserspaceEgress;

/// An IP-packet pipe to the outside world. `send` takes one inner packet accepted by the relay
/// core; `recv` yields the next packet destined to a client.
pub trait Egress: Send + Sync + 'static {
    /// Forwards one IP packet.
    fn send(&self, packet: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Waits for the next client-bound IP packet; returns its length in `buf`.
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;
    /// Returns another packet if one is ready right now (for batching); `None` otherwise.
    fn try_recv(&self, _buf: &mut [u8]) -> Option<usize> {
        None
    }
}

/// Kernel TUN egress: the host routes and NATs the packets.
pub struct TunEgress {
    dev: tun_rs::AsyncDevice,
    name: String,
}

impl std::fmt::Debug for TunEgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunEgress")
            .field("name", &self.name)
            .finish()
    }
}

impl TunEgress {
    /// Creates TUN `name` with `mtu`, assigns `addresses` and brings it up (needs
    /// CAP_NET_ADMIN and `ip` from iproute2 or busybox). The device vanishes when dropped.
    pub fn create(name: &str, mtu: u16, addresses: &[IpNet]) -> io::Result<Self> {
        let dev = tun_rs::DeviceBuilder::new()
            .name(name)
            .mtu(mtu)
            .build_async()?;
        for a in addresses {
            let fam = if a.addr().is_ipv6() { "-6" } else { "-4" };
            run_ip(&[fam, "addr", "replace", &a.to_string(), "dev", name])?;
        }
        run_ip(&["link", "set", "dev", name, "mtu", &mtu.to_string(), "up"])?;
        Ok(Self {
            dev,
            name: name.to_owned(),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
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
        self.dev.send(packet).await.map(|_| ())
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.dev.recv(buf).await
    }

    fn try_recv(&self, buf: &mut [u8]) -> Option<usize> {
        self.dev.try_recv(buf).ok()
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
