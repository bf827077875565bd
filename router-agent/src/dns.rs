//! `[dns]`: the private DNS forwarder (ferry-dns) for tunnel clients.
//!
//! - TUN mode: the forwarder binds each tunnel address, port 53 (UDP and TCP), once the TUN
//!   device carries those addresses; `dns.listen` overrides the addresses.
//! - Userspace mode: the tunnel addresses are not kernel addresses, so the forwarder binds
//!   loopback (`127.0.0.1:0` unless `dns.listen` is set) and the netstack hands flows to
//!   `<tunnel address>:53` to it ([`local_services`]).
//!
//! Either way the relay core must let clients reach port 53 on its tunnel addresses: an
//! enabled `[dns]` adds `udp/53` and `tcp/53` to `egress.tunnel-services` (nothing else).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use ferry_dns::{DnsConfig, DnsError, Forwarder, ForwarderStats};

/// The DNS port on the relay's tunnel addresses.
pub(crate) const DNS_PORT: u16 = 53;

/// How long to retry binding a tunnel address that is not usable yet (IPv6 DAD).
const BIND_RETRY: Duration = Duration::from_secs(3);

/// A running forwarder.
pub(crate) struct Running {
    /// Counters for the metrics snapshot.
    pub(crate) stats: Arc<ForwarderStats>,
    /// Bound addresses.
    pub(crate) addrs: Vec<SocketAddr>,
}

/// TUN mode: serve on `dns.listen`, or on every tunnel address port 53.
pub(crate) async fn start_tun(
    cfg: &DnsConfig,
    tunnel_ips: &[IpAddr],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running> {
    let mut cfg = cfg.clone();
    if cfg.listen.is_empty() {
        cfg.listen = tunnel_ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, DNS_PORT))
            .collect();
    }
    let started = Instant::now();
    let forwarder = loop {
        match Forwarder::bind(&cfg).await {
            Err(DnsError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrNotAvailable
                    && started.elapsed() < BIND_RETRY =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => break other.map_err(|e| anyhow!("starting the DNS forwarder: {e}"))?,
        }
    };
    Ok(spawn(forwarder, shutdown))
}

/// Userspace mode: serve on `dns.listen`, or on `127.0.0.1:<any port>`.
pub(crate) async fn start_userspace(
    cfg: &DnsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running> {
    let mut cfg = cfg.clone();
    if cfg.listen.is_empty() {
        cfg.listen = vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0)];
    }
    let forwarder = Forwarder::bind(&cfg)
        .await
        .map_err(|e| anyhow!("starting the DNS forwarder: {e}"))?;
    Ok(spawn(forwarder, shutdown))
}

fn spawn(forwarder: Forwarder, shutdown: impl Future<Output = ()> + Send + 'static) -> Running {
    let addrs = forwarder.local_addrs();
    let stats = forwarder.stats();
    tracing::info!(listen = ?addrs, "DNS forwarder started");
    tokio::spawn(forwarder.run(shutdown));
    Running { stats, addrs }
}

/// Userspace mode: `<tunnel ip>:53` → the forwarder's first bound address (an unspecified
/// listen address is reached through loopback of the same family).
pub(crate) fn local_services(
    tunnel_ips: &[IpAddr],
    running: &Running,
) -> BTreeMap<SocketAddr, SocketAddr> {
    let Some(first) = running.addrs.first() else {
        return BTreeMap::new();
    };
    let mut target = *first;
    if target.ip().is_unspecified() {
        target.set_ip(match target.ip() {
            IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    tunnel_ips
        .iter()
        .map(|ip| (SocketAddr::new(*ip, DNS_PORT), target))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::add_dns_services as validate;
    use ferry_relay_core::{Proto, Service};

    fn dns(text: &str) -> DnsConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn enabled_dns_opens_only_port_53_on_the_tunnel_address() {
        let cfg = dns("[[upstream]]\nprotocol = \"udp\"\naddress = \"192.0.2.1\"\n");
        let mut services = vec![Service {
            proto: Proto::Udp,
            port: DNS_PORT,
        }];
        validate(Some(&cfg), &mut services).unwrap();
        assert_eq!(
            services,
            vec![
                Service {
                    proto: Proto::Udp,
                    port: 53
                },
                Service {
                    proto: Proto::Tcp,
                    port: 53
                }
            ]
        );
    }

    #[test]
    fn disabled_or_absent_dns_adds_nothing_and_is_not_validated() {
        let mut services = Vec::new();
        validate(None, &mut services).unwrap();
        // No upstream would be an error if it were enabled.
        validate(Some(&dns("enabled = false\n")), &mut services).unwrap();
        assert!(services.is_empty());
        let err = validate(Some(&dns("")), &mut services).unwrap_err();
        assert!(format!("{err:#}").contains("upstream"), "{err:#}");
    }

    #[tokio::test]
    async fn userspace_redirects_every_tunnel_address_to_loopback() {
        let cfg = dns("[[upstream]]\nprotocol = \"udp\"\naddress = \"127.0.0.1:9\"\n");
        let running = start_userspace(&cfg, std::future::pending()).await.unwrap();
        let ips: Vec<IpAddr> = vec!["10.77.0.1".parse().unwrap(), "fd77::1".parse().unwrap()];
        let map = local_services(&ips, &running);
        assert_eq!(map.len(), 2);
        for (from, to) in &map {
            assert_eq!(from.port(), 53);
            assert!(to.ip().is_loopback() && to.port() != 0, "{to}");
        }
    }
}
