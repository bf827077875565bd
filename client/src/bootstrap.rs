//! Opening a paid session before the tunnel exists (docs/metering.md, "Bootstrap"): the
//! client is not yet a WireGuard peer of the relay, so `Hello` goes as plain UDP to the
//! relay's public Hello port (default: endpoint IP, port 51821). The relay verifies the offer,
//! admits our WireGuard key and answers `Accept` + `Address` (our tunnel addresses), or
//! `Reject`. Everything after that runs inside the tunnel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry_metering::{ClientConfig, ClientSession, HelloOutcome, HelloReplies, Message, encode};
use ferry_receipts::{SessionAccept, SessionOffer, SigningKey, Voucher};
use ferry_store::{Store, unix_now};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

const RETRY: Duration = Duration::from_secs(1);

/// Everything a paid session needs.
pub(crate) struct PaidSetup {
    /// Our identity (signs offers and co-signatures).
    pub(crate) identity: Arc<SigningKey>,
    /// The voucher paying for the session.
    pub(crate) voucher: Voucher,
    /// Co-signed receipt log.
    pub(crate) store: Arc<Mutex<Store>>,
    /// Wakes the ledger submitter after a receipt is stored.
    pub(crate) kick: Option<Arc<Notify>>,
    /// Over-claim tolerance.
    pub(crate) cfg: ClientConfig,
    /// The session, if it was opened outside the tunnel (see `bootstrap`); otherwise the
    /// engine says `Hello` inside the tunnel.
    pub(crate) boot: Option<Bootstrapped>,
}

impl PaidSetup {
    /// The same identity, voucher, store and tolerance, without a session: for opening a new
    /// one after the relay ended the last.
    pub(crate) fn fresh(&self) -> Self {
        Self {
            identity: self.identity.clone(),
            voucher: self.voucher.clone(),
            store: self.store.clone(),
            kick: self.kick.clone(),
            cfg: self.cfg,
            boot: None,
        }
    }
}

/// An accepted session, ready for the engine.
pub(crate) struct Bootstrapped {
    pub(crate) session: ClientSession,
    pub(crate) offer: SessionOffer,
    pub(crate) accept: SessionAccept,
    pub(crate) v4: Option<Ipv4Addr>,
    pub(crate) v6: Option<Ipv6Addr>,
    /// The relay's side of the tunnel (control and DNS address, MTU), when it sent it.
    pub(crate) tunnel: Option<ferry_receipts::SessionTunnel>,
}

/// Sends `Hello` to `hello` until the relay accepts (and sends our addresses, and its
/// tunnel facts when `need_tunnel`) or refuses.
pub(crate) async fn bootstrap(
    setup: &PaidSetup,
    relay_key: ferry_receipts::PublicKey,
    wg_public: [u8; 32],
    hello: SocketAddr,
    timeout: Duration,
    need_tunnel: bool,
) -> Result<Bootstrapped> {
    let mut session = ClientSession::new(
        setup.cfg,
        setup.identity.clone(),
        setup.voucher.network_id,
        relay_key,
    );
    let mut nonce = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    let msg = session.hello(setup.voucher.clone(), wg_public, nonce, unix_now());
    let Message::Hello(offer) = &msg else {
        bail!("internal: hello() did not build a Hello");
    };
    let offer = offer.clone();
    let frame = encode(&msg);
    let bind: SocketAddr = if hello.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(hello)
        .await
        .with_context(|| format!("relay Hello port {hello}"))?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 2048];
    let mut replies = if need_tunnel {
        HelloReplies::needing_tunnel()
    } else {
        HelloReplies::default()
    };
    while Instant::now() < deadline {
        let _ = sock.send(&frame).await;
        let until = Instant::now() + RETRY;
        while Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            let Ok(r) = tokio::time::timeout(left, sock.recv(&mut buf)).await else {
                break;
            };
            let Ok(n) = r else { continue };
            match replies.on_datagram(&mut session, &buf[..n]) {
                HelloOutcome::Pending => {}
                HelloOutcome::Refused(r) => bail!("relay refused the session: {r}"),
                HelloOutcome::Accepted {
                    accept,
                    v4,
                    v6,
                    tunnel,
                } => {
                    if replies.ignored() > 0 {
                        tracing::info!(
                            ignored = replies.ignored(),
                            "session accepted; replies on the Hello socket that were not \
                             signed by the relay for this offer were ignored"
                        );
                    }
                    return Ok(Bootstrapped {
                        session,
                        offer,
                        accept: *accept,
                        v4,
                        v6,
                        tunnel: tunnel.map(|t| *t),
                    });
                }
            }
        }
    }
    if replies.waiting_for_tunnel() {
        bail!(
            "the relay at {hello} accepted but sent no tunnel facts (its control address): it \
             runs an older ferry-agent; add it as a [[relay]] with control-address instead"
        );
    }
    let ignored = replies.ignored();
    if ignored > 0 {
        bail!(
            "no answer signed by the relay from its Hello port {hello} within {timeout:?} \
             ({ignored} replies ignored: unsigned, forged, or from an older ferry-agent that \
             does not sign them)"
        );
    }
    bail!("no answer from the relay's Hello port {hello} within {timeout:?}")
}

/// Our tunnel addresses as host prefixes.
pub(crate) fn host_nets(v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> Vec<ipnet::IpNet> {
    let mut v = Vec::new();
    if let Some(a) = v4 {
        v.push(ipnet::IpNet::from(IpAddr::V4(a)));
    }
    if let Some(a) = v6 {
        v.push(ipnet::IpNet::from(IpAddr::V6(a)));
    }
    v
}
