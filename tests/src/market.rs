//! A small open market: several relays (each a router namespace running a real `ferry-agent`
//! that joins and announces itself to the directory), a client, and "the internet" (inet: the
//! real `ferry-ledger` with its directory, a data service, and the routes between them all).
//!
//! ```text
//!  client 10.99.0.2/24 --- 10.99.0.1/24 inet 203.0.113.(4i+2)/30 --- 203.0.113.(4i+1)/30 relay i
//!   default via inet       lo: ledger 198.51.100.1:7878, data 192.0.2.80       default via inet
//! ```
//! (The client's link is a private subnet like a home LAN: a ledger on the client's own
//! subnet would be reached around the tunnel, which the kill switch rightly blocks.)
//! The client reaches the data service directly (it has a default route), so only the kill
//! switch keeps its traffic in the tunnel: a leak would arrive.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result};
use ferry_receipts::{PublicKey, SigningKey};

use crate::agent::{AgentConfig, Egress};
use crate::client::FerryHome;
use crate::metering::{
    Ledger, agent_test_binary, paid_sections, random_seed, start_agent, write_identity,
};
use crate::netns::{Lab, Ns, ProcId};
use crate::wg::KeyPair;

/// The client's address.
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// inet's address towards the client (the client's default gateway).
pub const GATEWAY4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// The ledger (on inet).
pub const INET4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The data service on inet.
pub const DATA4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 80);

/// Relay `i`'s WAN address (what it announces).
pub fn relay_wan(i: usize) -> Ipv4Addr {
    let i = u8::try_from(i).unwrap_or(0);
    Ipv4Addr::new(203, 0, 113, 4 * i + 1)
}

fn inet_side(i: usize) -> Ipv4Addr {
    let i = u8::try_from(i).unwrap_or(0);
    Ipv4Addr::new(203, 0, 113, 4 * i + 2)
}

/// The namespaces, the ledger and the client's home.
pub struct Market {
    /// Owner of everything.
    pub lab: Lab,
    /// The paying client.
    pub client: Ns,
    /// The client's interface (towards inet).
    pub client_if: String,
    /// The internet.
    pub inet: Ns,
    /// One namespace per relay.
    pub routers: Vec<Ns>,
    /// The ledger and directory on inet.
    pub ledger: Ledger,
    /// The client's keys and config (`[client] ledger-url` set; no `[[relay]]`).
    pub home: FerryHome,
}

/// A relay started by [`Market::start_relay`].
pub struct MarketRelay {
    /// The agent process.
    pub proc: ProcId,
    /// Its identity.
    pub key: SigningKey,
    /// Its price.
    pub price: u64,
    /// Its config file.
    pub config: PathBuf,
}

impl Market {
    /// Builds `n` relay namespaces, the client and inet, starts the ledger (the client
    /// registered and credited; relays register themselves) and writes the client's config.
    pub fn build(n: usize) -> Result<Self> {
        let mut lab = Lab::new()?;
        let client = lab.add_ns("client")?;
        let inet = lab.add_ns("inet")?;
        let (client_if, inet_if) = (lab.ifname("c"), lab.ifname("ic"));
        lab.veth(&client, &client_if, &inet, &inet_if)?;
        client.addr(&client_if, &format!("{CLIENT4}/24"))?;
        inet.addr(&inet_if, &format!("{GATEWAY4}/24"))?;
        client.route(&["default", "via", &GATEWAY4.to_string()])?;
        inet.addr("lo", &format!("{DATA4}/32"))?;
        inet.addr("lo", &format!("{INET4}/32"))?;
        inet.sysctl("net.ipv4.ip_forward", "1")?;
        let mut routers = Vec::new();
        for i in 0..n {
            let r = lab.add_ns(&format!("r{i}"))?;
            let (rif, iif) = (lab.ifname(&format!("r{i}")), lab.ifname(&format!("i{i}")));
            lab.veth(&r, &rif, &inet, &iif)?;
            r.addr(&rif, &format!("{}/30", relay_wan(i)))?;
            inet.addr(&iif, &format!("{}/30", inet_side(i)))?;
            r.route(&["default", "via", &inet_side(i).to_string()])?;
            r.sysctl("net.ipv4.ip_forward", "1")?;
            routers.push(r);
        }
        let home = FerryHome::create(&lab, "market-home")?;
        let client_key =
            PublicKey::from_hex(&home.identity_public).context("client identity hex")?;
        let ledger = Ledger::start(&mut lab, &inet, IpAddr::V4(INET4), &[], &[client_key])?;
        home.write_config(&format!("[client]\nledger-url = \"{}\"\n", ledger.url))?;
        Ok(Self {
            lab,
            client,
            client_if,
            inet,
            routers,
            ledger,
            home,
        })
    }

    /// Starts relay `i` with a fresh, unregistered identity, `[directory]` (country, price)
    /// and `metering` lines; `firewall_hello` drops its Hello port first.
    pub fn start_relay(
        &mut self,
        i: usize,
        country: &str,
        price: u64,
        metering: &str,
        firewall_hello: bool,
    ) -> Result<MarketRelay> {
        let ns = self.routers[i].clone();
        let dir = self.lab.dir().join(format!("relay{i}"));
        std::fs::create_dir_all(&dir)?;
        let (id_file, key) = write_identity(&dir, "identity.key", random_seed()?)?;
        let wg = KeyPair::generate()?;
        let key_file = wg.write_private(&dir, "wg.key")?;
        if firewall_hello {
            ns.exec(&[
                "nft",
                "add table inet ferrytest; add chain inet ferrytest hold { type filter hook \
                 input priority -300; }; add rule inet ferrytest hold udp dport 51821 drop",
            ])?;
        }
        let mut cfg = AgentConfig::new(Egress::Tun);
        cfg.listen = SocketAddr::new(relay_wan(i).into(), 51820);
        cfg.allow = vec![format!("{DATA4}/32"), format!("{INET4}/32")];
        cfg.extra = paid_sections(&id_file, &self.ledger, &dir.join("state"), metering)
            + &format!(
                "\n[directory]\ncountry = \"{country}\"\nprice-micros-per-gib = {price}\n\
                 abuse-contact = \"abuse@relay{i}.example\"\n"
            );
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            cfg.render(&key_file, &self.lab.ifname(&format!("t{i}"))),
        )?;
        let proc = start_agent(
            &mut self.lab,
            &ns,
            &agent_test_binary()?,
            &config,
            &format!("agent{i}"),
        )?;
        Ok(MarketRelay {
            proc,
            key,
            price,
            config,
        })
    }
}
