//! The common start of every paid-session netns test: the topology, a real `ferry-ledger`
//! on the internet host with the relay and the client registered, a voucher for the client,
//! a UDP sink on the internet host, and the relay's identity and WireGuard key files.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use ferry_receipts::{SigningKey, Voucher};

use crate::metering::{Ledger, UdpCounter, random_seed, write_identity};
use crate::topology::{INET4, Topology};
use crate::wg::KeyPair;

/// Voucher allowance every paid lab starts with (1 GiB).
pub const VOUCHER_BYTES: u64 = 1 << 30;

/// Everything a paid-session test needs before it starts the agent.
pub struct PaidLab {
    /// Client, router, internet host (and LAN) namespaces.
    pub topo: Topology,
    /// The lab's scratch directory.
    pub dir: PathBuf,
    /// The relay's Ed25519 identity key file (mode 0600).
    pub id_file: PathBuf,
    /// The relay's identity (registered at the ledger).
    pub relay_id: SigningKey,
    /// The client's identity (registered at the ledger).
    pub client_id: Arc<SigningKey>,
    /// The ledger, listening on the internet host.
    pub ledger: Ledger,
    /// A voucher of [`VOUCHER_BYTES`] for the client.
    pub voucher: Voucher,
    /// UDP sink (optionally echoing) on the internet host at `sink_port`.
    pub sink: UdpCounter,
    /// The relay's WireGuard key pair.
    pub relay_wg: KeyPair,
    /// The relay's WireGuard private key file (mode 0600).
    pub key_file: PathBuf,
}

impl PaidLab {
    /// Builds the topology and starts the ledger and the sink.
    pub fn build(sink_port: u16, echo: bool) -> Result<Self> {
        let mut topo = Topology::build()?;
        let dir = topo.lab.dir().to_owned();
        let (id_file, relay_id) = write_identity(&dir, "relay-identity.key", random_seed()?)?;
        let client_id = Arc::new(SigningKey::from_seed(&random_seed()?));
        let ledger = Ledger::start(
            &mut topo.lab,
            &topo.inet,
            IpAddr::V4(INET4),
            &[relay_id.public_key()],
            &[client_id.public_key()],
        )?;
        let voucher = ledger.voucher(&client_id.public_key(), VOUCHER_BYTES)?;
        let sink = UdpCounter::start(&topo.inet, SocketAddr::from((INET4, sink_port)), echo)?;
        let relay_wg = KeyPair::generate()?;
        let key_file = relay_wg.write_private(&dir, "relay-wg.key")?;
        Ok(Self {
            topo,
            dir,
            id_file,
            relay_id,
            client_id,
            ledger,
            voucher,
            sink,
            relay_wg,
            key_file,
        })
    }
}
