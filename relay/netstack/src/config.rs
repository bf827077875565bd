//! Configuration of the userspace egress (plain struct; the agent maps its TOML onto it).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Defense-in-depth destination check: return `true` to allow dialing `IpAddr`.
pub type PolicyFn = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Limits and knobs of the userspace egress. `Default` gives router-sized values.
///
/// Worst-case TCP buffer memory is `max_tcp_flows * 2 * tcp_buffer` (default 512 × 128 KiB = 64 MiB);
/// buffers are allocated when a flow is accepted and freed when it closes.
#[derive(Clone)]
pub struct NetstackConfig {
    /// Largest IP packet handed to / taken from the relay (tunnel MTU). Default 1420.
    pub mtu: usize,
    /// Maximum concurrent flows (TCP + UDP). New flows over the limit are refused. Default 4096.
    pub max_flows: usize,
    /// Maximum concurrent TCP flows (each owns `2 * tcp_buffer` bytes). Default 512.
    pub max_tcp_flows: usize,
    /// TCP buffer size per direction per connection, in bytes. Default 64 KiB.
    pub tcp_buffer: usize,
    /// Timeout for the outbound TCP connect; on expiry the client gets a RST. Default 10 s.
    pub connect_timeout: Duration,
    /// A TCP flow with no packets either way for this long is reset. Default 1 h.
    pub tcp_idle_timeout: Duration,
    /// A UDP flow with no datagrams either way for this long is closed. Default 60 s.
    pub udp_idle_timeout: Duration,
    /// Idle timeout of UDP flows to port 53 (one socket per DNS query otherwise piles up
    /// against `max_flows`). Default 10 s.
    pub udp_dns_idle_timeout: Duration,
    /// Client datagrams queued per UDP flow while the socket is busy; extra ones drop. Default 64.
    pub udp_queue: usize,
    /// Client-bound packets queued for [`crate::UserspaceEgress::recv`]; extra ones drop. Default 1024.
    pub out_queue: usize,
    /// Optional destination check applied before any dial (the relay core already applies the
    /// egress policy; this is defense in depth). `None` allows every destination.
    pub policy: Option<PolicyFn>,
    /// Services of the agent itself on the relay's tunnel addresses: a TCP or UDP flow to a
    /// key (e.g. `10.77.0.1:53`) is dialed at the value (e.g. the DNS forwarder on
    /// `127.0.0.1:5353`) instead, without asking [`Self::policy`] (the relay core already
    /// allowed it as a tunnel service). Replies still come from the key's address. Default empty.
    pub local_services: BTreeMap<SocketAddr, SocketAddr>,
    /// The relay's per-client rate (`client-rate-mbit`, bytes/s of IP packets; 0 = none).
    /// Internet-to-client TCP data is paced to 98 % of it per client address instead of
    /// being dropped by the relay's bucket: smoltcp's TCP recovers from those drops so badly
    /// that a 50 Mbit/s limit delivered 1–18 Mbit/s. Default 0.
    pub client_rate_bytes: u64,
}

impl NetstackConfig {
    /// Set the defense-in-depth destination check.
    #[must_use]
    pub fn with_policy(mut self, policy: impl Fn(IpAddr) -> bool + Send + Sync + 'static) -> Self {
        self.policy = Some(Arc::new(policy));
        self
    }

    /// Route flows to `service` (a tunnel address and port) to the local socket `target`.
    #[must_use]
    pub fn with_local_service(mut self, service: SocketAddr, target: SocketAddr) -> Self {
        self.local_services.insert(service, target);
        self
    }

    pub(crate) fn allows(&self, ip: IpAddr) -> bool {
        self.policy.as_ref().is_none_or(|p| p(ip))
    }

    /// The local service a flow to `remote` is handed to, if any.
    pub(crate) fn local_service(&self, remote: SocketAddr) -> Option<SocketAddr> {
        self.local_services.get(&remote).copied()
    }
}

impl Default for NetstackConfig {
    fn default() -> Self {
        Self {
            mtu: 1420,
            max_flows: 4096,
            max_tcp_flows: 512,
            tcp_buffer: 64 * 1024,
            connect_timeout: Duration::from_secs(10),
            tcp_idle_timeout: Duration::from_secs(3600),
            udp_idle_timeout: Duration::from_secs(60),
            udp_dns_idle_timeout: Duration::from_secs(10),
            udp_queue: 64,
            out_queue: 1024,
            policy: None,
            local_services: BTreeMap::new(),
            client_rate_bytes: 0,
        }
    }
}

impl fmt::Debug for NetstackConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetstackConfig")
            .field("mtu", &self.mtu)
            .field("max_flows", &self.max_flows)
            .field("max_tcp_flows", &self.max_tcp_flows)
            .field("tcp_buffer", &self.tcp_buffer)
            .field("connect_timeout", &self.connect_timeout)
            .field("tcp_idle_timeout", &self.tcp_idle_timeout)
            .field("udp_idle_timeout", &self.udp_idle_timeout)
            .field("udp_dns_idle_timeout", &self.udp_dns_idle_timeout)
            .field("udp_queue", &self.udp_queue)
            .field("out_queue", &self.out_queue)
            .field("policy", &self.policy.as_ref().map(|_| "<fn>"))
            .field("local_services", &self.local_services)
            .finish()
    }
}
