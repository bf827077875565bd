//! `--auto`: the directory's relays, verified (`relays.rs`), pinged on their Hello ports, ranked
//! by the documented rule (`choose.rs`), and turned into relays to connect to. Runs before the
//! kill switch exists. The ranking is kept for failover and shown by `ferry status`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry_keys::WgPublicKey;
use ferry_metering::{Message, decode, encode};
use ferry_receipts::{ProbeChallenge, PublicKey, Voucher};
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;

use crate::choose::{Ranked, candidates, rank};
use crate::config::{Config, Paid, Relay};
use crate::relays::{Filters, Listed, verify_list};

/// How long a ping may take before the relay counts as not answering.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_millis(1000);
/// Pings per relay within [`PING_TIMEOUT`] (a lost datagram is not a dead relay).
const PING_TRIES: u8 = 3;

/// Why the relay in use was chosen, and what happened since (the status file's `choice`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Choice {
    /// The first choice, in words (the rule's numbers).
    pub(crate) reason: String,
    /// Relay key (hex) in use now.
    pub(crate) current: String,
    /// Every relay pinged, with the numbers the rule used (in ranking order first).
    pub(crate) ranked: Vec<Ranked>,
    /// Each failover: `<old relay>: <why> -> <new relay>`.
    #[serde(default)]
    pub(crate) failovers: Vec<String>,
}

/// The ranking in use.
#[derive(Debug, Clone)]
pub(crate) struct Auto {
    /// Eligible relays, in order of use.
    pub(crate) ranked: Vec<Listed>,
    /// Index into `ranked` of the relay in use.
    pub(crate) current: usize,
    /// What the status file shows.
    pub(crate) choice: Choice,
}

impl Auto {
    /// The relay in use.
    pub(crate) fn listed(&self) -> &Listed {
        &self.ranked[self.current]
    }

    /// Moves to the next relay of the ranking (noting why); `None` when none is left.
    pub(crate) fn advance(&mut self, why: &str) -> Option<&Listed> {
        let old = short(&self.listed().descriptor.relay_key);
        self.current += 1;
        let next = self.ranked.get(self.current)?;
        self.choice.current = next.descriptor.relay_key.to_hex();
        self.choice.failovers.push(format!(
            "{old}: {why} -> {}",
            short(&next.descriptor.relay_key)
        ));
        Some(next)
    }

    /// Every address a session with any ranked relay sends to (WireGuard endpoint and Hello
    /// port): what the kill switch lets out.
    pub(crate) fn all_addresses(&self, ipv6: bool) -> Vec<SocketAddr> {
        let mut v = Vec::new();
        for l in &self.ranked {
            if let Some(ep) = endpoint(l, ipv6) {
                v.push(ep);
                v.push(SocketAddr::new(ep.ip(), l.descriptor.hello_port));
            }
        }
        v
    }
}

fn short(k: &PublicKey) -> String {
    k.to_hex()[..16].to_owned()
}

/// The WireGuard endpoint to use: IPv4 unless `ipv6` (or the relay has no IPv4).
pub(crate) fn endpoint(l: &Listed, ipv6: bool) -> Option<SocketAddr> {
    let d = &l.descriptor;
    let (v4, v6) = (d.ipv4.map(SocketAddr::V4), d.ipv6.map(SocketAddr::V6));
    if ipv6 { v6.or(v4) } else { v4.or(v6) }
}

/// A relay entry for a listing: its keys and endpoints; the control address, DNS and MTU come
/// with the session (the relay's signed `Tunnel` message).
pub(crate) fn relay_of(l: &Listed, ipv6: bool) -> Result<Relay> {
    let d = &l.descriptor;
    let ep = endpoint(l, ipv6).context("the listing has no endpoint")?;
    Ok(Relay {
        name: short(&d.relay_key),
        endpoint: ep.into(),
        public_key: WgPublicKey(d.wg_key),
        address: Vec::new(),
        dns: Vec::new(),
        mtu: 1420,
        keepalive: 25,
        paid: Some(Paid {
            identity_key: d.relay_key,
            control_address: None,
            voucher: None,
            hello: Some(SocketAddr::new(ep.ip(), d.hello_port)),
        }),
        from_directory: true,
    })
}

/// Fetches the directory's list (filtered), verifies it against the voucher's network and
/// ledger key, pings the best candidates and ranks them. Fails, saying what was seen, when no
/// relay qualifies.
pub(crate) fn choose(
    cfg: &Config,
    f: &Filters,
    voucher: &Voucher,
    own_key: &PublicKey,
) -> Result<Auto> {
    let url = cfg
        .client
        .ledger_url
        .as_deref()
        .context("--auto needs [client] ledger-url in client.toml (the directory is there)")?;
    let ledger = crate::ledger::client(url, cfg.client.ledger_ca_file.as_deref())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let list = ferry_store::market::relays(&ledger, &f.query())
            .await
            .map_err(anyhow::Error::from)
            .context("asking the directory for relays")?;
        let now = ferry_store::unix_now();
        let (ok, refused) = verify_list(&list, &voucher.network_id, &voucher.ledger_key, now);
        let matching: Vec<Listed> = ok.into_iter().filter(|l| f.keep(l)).collect();
        let listed = matching.len();
        let max = voucher.max_price_micros_per_gib;
        let cands = candidates(matching, max, own_key, f.ipv6, now);
        if cands.is_empty() {
            bail!(
                "no relay to choose: the directory listed {} relay(s), {listed} verified and \
                 matched the filters, none of them reachable, sharing now (its owner's \
                 schedule) and at a price up to the voucher's max ({max} micros/GiB){}",
                list.relays.len(),
                if refused > 0 {
                    format!("; {refused} listing(s) did not verify")
                } else {
                    String::new()
                }
            );
        }
        let rtts = ping_all(&cands, f.ipv6).await;
        let pinged: Vec<(Listed, Option<u32>)> = cands.into_iter().zip(rtts).collect();
        let r = rank(&pinged);
        if r.order.is_empty() {
            bail!(
                "no relay to choose: none of the {} best candidates answered a ping on its Hello \
                 port within {PING_TIMEOUT:?}",
                pinged.len()
            );
        }
        let mut table: Vec<Ranked> = r.order.iter().map(|&i| r.table[i].clone()).collect();
        table.extend(r.table.iter().filter(|t| t.tier.is_none()).cloned());
        let ranked: Vec<Listed> = r.order.iter().map(|&i| pinged[i].0.clone()).collect();
        tracing::info!(relay = %short(&ranked[0].descriptor.relay_key), reason = %r.reason, "relay chosen");
        Ok(Auto {
            choice: Choice {
                reason: r.reason,
                current: ranked[0].descriptor.relay_key.to_hex(),
                ranked: table,
                failovers: Vec::new(),
            },
            ranked,
            current: 0,
        })
    })
}

/// Pings every candidate at once; round trips in input order.
async fn ping_all(cands: &[Listed], ipv6: bool) -> Vec<Option<u32>> {
    let mut set = tokio::task::JoinSet::new();
    for (i, l) in cands.iter().enumerate() {
        let l = l.clone();
        set.spawn(async move { (i, ping(&l, ipv6, PING_TIMEOUT).await) });
    }
    let mut out = vec![None; cands.len()];
    while let Some(r) = set.join_next().await {
        if let Ok((i, rtt)) = r {
            out[i] = rtt;
        }
    }
    out
}

/// Round trip (microseconds) of a ping to the relay's Hello port, answered by a response
/// signed by the listed relay key; `None` when no valid answer came within `timeout`.
pub(crate) async fn ping(l: &Listed, ipv6: bool, timeout: Duration) -> Option<u32> {
    let d = &l.descriptor;
    let to = SocketAddr::new(endpoint(l, ipv6)?.ip(), d.hello_port);
    let bind: SocketAddr = match to.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(bind).await.ok()?;
    sock.connect(to).await.ok()?;
    let mut nonce = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce).ok()?;
    let start = Instant::now();
    let deadline = start + timeout;
    let gap = timeout / u32::from(PING_TRIES);
    let mut sent = Vec::new();
    let mut buf = [0u8; 512];
    for attempt in 0..PING_TRIES {
        nonce[15] = attempt;
        let c = ProbeChallenge::ping(d.network_id, d.relay_key, nonce, ferry_store::unix_now());
        let _ = sock.send(&encode(&Message::Probe(c.clone()))).await;
        sent.push((c, Instant::now()));
        let until = (Instant::now() + gap).min(deadline);
        while let Ok(Ok(n)) = tokio::time::timeout(
            until.saturating_duration_since(Instant::now()),
            sock.recv(&mut buf),
        )
        .await
        {
            let Ok(Message::ProbeReply(r)) = decode(&buf[..n]) else {
                continue;
            };
            if let Some((_, at)) = sent.iter().find(|(c, _)| r.answers(c)) {
                let rtt = at.elapsed().as_micros();
                return Some(u32::try_from(rtt).unwrap_or(u32::MAX).max(1));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use ferry_metering::RelayIdentity;
    use ferry_receipts::{NetworkId, SigningKey};
    use std::sync::Arc;

    use super::*;

    /// A Hello port that answers pings like ferry-agent (the same `RelayIdentity` code).
    async fn relay_port(seed: [u8; 32], delay: Duration) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let id = RelayIdentity {
            network_id: NetworkId([1; 16]),
            ledger_key: SigningKey::from_seed(&[9; 32]).public_key(),
            key: Arc::new(SigningKey::from_seed(&seed)),
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                if let Ok(Message::Probe(c)) = decode(&buf[..n]) {
                    if let Some(m) = id.answer_probe(&c, 0) {
                        tokio::time::sleep(delay).await;
                        let _ = sock.send_to(&encode(&m), from).await;
                    }
                }
            }
        });
        addr
    }

    fn listing(key: &SigningKey, at: SocketAddr) -> Listed {
        let mut l = crate::choose::test_listed(1, 1, 1, 1);
        l.descriptor.relay_key = key.public_key();
        l.descriptor.ipv4 = Some(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 51820));
        l.descriptor.hello_port = at.port();
        l
    }

    #[tokio::test]
    async fn a_ping_measures_the_round_trip_to_the_listed_key_only() {
        let key = SigningKey::from_seed(&[2; 32]);
        let fast = relay_port([2; 32], Duration::ZERO).await;
        let slow = relay_port([2; 32], Duration::from_millis(150)).await;
        let rtt = ping(&listing(&key, fast), false, PING_TIMEOUT)
            .await
            .unwrap();
        assert!(rtt < 100_000, "{rtt}");
        let rtt = ping(&listing(&key, slow), false, PING_TIMEOUT)
            .await
            .unwrap();
        assert!((150_000..900_000).contains(&rtt), "{rtt}");
        // A listing naming another key at the same port: the answer does not verify.
        let other = SigningKey::from_seed(&[3; 32]);
        let mut l = listing(&key, fast);
        l.descriptor.relay_key = other.public_key();
        assert_eq!(ping(&l, false, Duration::from_millis(300)).await, None);
        // Nothing listening.
        let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let l = listing(&key, dead.local_addr().unwrap());
        drop(dead);
        assert_eq!(ping(&l, false, Duration::from_millis(300)).await, None);
    }
}
