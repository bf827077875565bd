//! A ready-to-use scenario: the standard topology with services on every host, `ferry-agent` on
//! the router and a stock wireguard-go client whose traffic all goes through the relay.
//!
//! Services: internet host TCP data [`DATA_PORT`] + UDP echo [`ECHO_PORT`]; LAN host the same;
//! router admin TCP [`ADMIN_PORT`] and UDP echo [`ECHO_PORT`] on every router address (`[::]`).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::Result;

use crate::agent::{Agent, AgentConfig, Egress};
use crate::multipeer::PeerSpec;
use crate::servers::{TcpService, UdpEcho, probe_tcp, probe_udp};
use crate::topology::{ADMIN_PORT, DATA_PORT, ECHO_PORT, Topology, sa};
use crate::wg::{KeyPair, WgGo, stock_client, tunnel};

/// Everything a relay end-to-end test needs; dropping it cleans up.
#[derive(Debug)]
pub struct Scenario {
    /// Services (declared first: dropped before the lab deletes their namespaces).
    pub services: Services,
    /// The running agent.
    pub agent: Agent,
    /// The stock client interface.
    pub client: WgGo,
    /// The client's key.
    pub client_key: KeyPair,
    /// The config the agent was started with.
    pub config: AgentConfig,
    /// Namespaces and lab (dropped last).
    pub topo: Topology,
}

/// In-process services on the topology's hosts.
#[derive(Debug)]
pub struct Services {
    /// Internet host TCP data service.
    pub inet_data: TcpService,
    /// Internet host UDP echo.
    pub inet_echo: UdpEcho,
    /// LAN host TCP data service.
    pub lan_data: TcpService,
    /// LAN host UDP echo.
    pub lan_echo: UdpEcho,
    /// Router admin port (TCP, all router addresses).
    pub router_admin: TcpService,
    /// Router UDP echo (all router addresses), stands in for a DNS/other UDP service.
    pub router_echo: UdpEcho,
}

impl Services {
    /// Starts every service on `topo`.
    pub fn start(topo: &Topology) -> Result<Self> {
        let any = Ipv6Addr::UNSPECIFIED;
        Ok(Self {
            inet_data: TcpService::start(&topo.inet, sa(any, DATA_PORT), "inet")?,
            inet_echo: UdpEcho::start(&topo.inet, sa(any, ECHO_PORT), "inet")?,
            lan_data: TcpService::start(&topo.lan, sa(any, DATA_PORT), "lan")?,
            lan_echo: UdpEcho::start(&topo.lan, sa(any, ECHO_PORT), "lan")?,
            router_admin: TcpService::start(&topo.router, sa(any, ADMIN_PORT), "admin")?,
            router_echo: UdpEcho::start(&topo.router, sa(any, ECHO_PORT), "router")?,
        })
    }
}

impl Scenario {
    /// Builds the topology, starts services, the agent (config from `tweak`) with one trusted
    /// client peer (10.77.0.2, fd77::2), and the stock client.
    pub fn start(egress: Egress, tweak: impl FnOnce(&mut AgentConfig)) -> Result<Self> {
        let mut topo = Topology::build()?;
        let services = Services::start(&topo)?;
        let (relay_key, client_key) = (KeyPair::generate()?, KeyPair::generate()?);
        let mut config = AgentConfig::new(egress);
        config.peer("client", &client_key.public, &tunnel::CLIENT_ADDRS);
        tweak(&mut config);
        let agent = Agent::start(&mut topo.lab, &topo.router, &relay_key, &config)?;
        let client = stock_client(
            &mut topo.lab,
            &topo.client,
            "wc",
            &client_key,
            &relay_key.public,
            Agent::endpoint(),
            &tunnel::CLIENT_ADDRS,
        )?;
        Ok(Self {
            services,
            agent,
            client,
            client_key,
            config,
            topo,
        })
    }

    /// Like [`Scenario::start`], plus `n` trusted peers for the multi-peer client, each with
    /// 10.77.0.(10+i)/32 and fd77::(100+i)/128 (n ≤ 200).
    pub fn start_with_peers(egress: Egress, n: usize) -> Result<(Self, Vec<PeerSpec>)> {
        let peers = (0..n)
            .map(|i| {
                Ok(PeerSpec {
                    key: KeyPair::generate()?,
                    inner: vec![
                        format!("10.77.0.{}", 10 + i).parse()?,
                        format!("fd77::{:x}", 0x100 + i).parse()?,
                    ],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let s = Self::start(egress, |cfg| {
            for (i, p) in peers.iter().enumerate() {
                let a4 = format!("{}/32", p.inner[0]);
                let a6 = format!("{}/128", p.inner[1]);
                cfg.peer(&format!("p{i}"), &p.key.public, &[&a4, &a6]);
            }
        })?;
        Ok((s, peers))
    }

    /// Stops the agent and starts a new one with `config` and the same key.
    pub fn restart_agent(&mut self, config: AgentConfig) -> Result<()> {
        self.topo.lab.stop(self.agent.proc, Duration::from_secs(5));
        let key = self.agent.key.clone();
        self.agent = Agent::start(&mut self.topo.lab, &self.topo.router, &key, &config)?;
        self.config = config;
        Ok(())
    }

    /// Replaces the stock client by a fresh wireguard-go interface using `key` and inner
    /// addresses `addrs` (a new handshake; the old interface is removed).
    pub fn restart_client(&mut self, suffix: &str, key: &KeyPair, addrs: &[&str]) -> Result<()> {
        self.topo.lab.stop(self.client.proc, Duration::from_secs(3));
        self.client = stock_client(
            &mut self.topo.lab,
            &self.topo.client,
            suffix,
            key,
            &self.agent.key.public,
            Agent::endpoint(),
            addrs,
        )?;
        Ok(())
    }
}

/// A reachability probe target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// TCP service answering [`probe_tcp`].
    Tcp(SocketAddr),
    /// UDP echo answering [`probe_udp`].
    Udp(SocketAddr),
    /// ICMP echo.
    Ping(IpAddr),
}

/// Runs all probes from `ns` in parallel; returns those that got an answer, with the answer's
/// banner (`"icmp"` for pings).
pub fn probe_all(
    ns: &crate::netns::Ns,
    probes: &[Probe],
    timeout: Duration,
) -> Vec<(Probe, String)> {
    std::thread::scope(|s| {
        let hs: Vec<_> = probes
            .iter()
            .map(|p| {
                s.spawn(move || {
                    let got = match *p {
                        Probe::Tcp(a) => probe_tcp(ns, a, timeout).map(|x| x.0),
                        Probe::Udp(a) => probe_udp(ns, a, timeout).map(|x| x.0),
                        Probe::Ping(ip) => {
                            let secs = timeout.as_secs().max(1) as u32;
                            let answered = crate::servers::ping(ns, ip, secs)
                                .unwrap_or_else(|e| panic!("probe harness broken: {e:#}"));
                            answered.then(|| "icmp".to_owned())
                        }
                    };
                    got.map(|b| (*p, b))
                })
            })
            .collect();
        hs.into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .collect()
    })
}

/// Probes of the household from a client: LAN host (TCP, UDP, ICMP; v4 and v6) and every
/// router address (admin TCP, UDP service, ICMP), plus the relay's tunnel addresses' admin port.
pub fn household_probes() -> Vec<Probe> {
    use crate::topology::*;
    let mut v = vec![
        Probe::Tcp(sa(LAN_HOST4, DATA_PORT)),
        Probe::Tcp(sa(LAN_HOST6, DATA_PORT)),
        Probe::Udp(sa(LAN_HOST4, ECHO_PORT)),
        Probe::Udp(sa(LAN_HOST6, ECHO_PORT)),
        Probe::Ping(LAN_HOST4.into()),
        Probe::Ping(LAN_HOST6.into()),
    ];
    for ip in router_addrs() {
        v.extend([
            Probe::Tcp(sa(ip, ADMIN_PORT)),
            Probe::Udp(sa(ip, ECHO_PORT)),
            Probe::Ping(ip),
        ]);
    }
    for ip in ["10.77.0.1", "fd77::1"] {
        if let Ok(ip) = ip.parse::<IpAddr>() {
            v.extend([
                Probe::Tcp(sa(ip, ADMIN_PORT)),
                Probe::Udp(sa(ip, ECHO_PORT)),
            ]);
        }
    }
    v
}
