//! Runtime housekeeping beside the data plane: refresh the router's own addresses (WAN
//! addresses change with DHCP/PPPoE) and reload trusted peers on SIGHUP.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use ferry_relay_core::{PeerConfig, PeerId, PublicKey, Relay};
use ferry_relay_io::{SharedRelay, local_addresses};

use crate::config::{Config, ValidPeer};

const ADDRESS_REFRESH: Duration = Duration::from_secs(30);

/// Peers that belong to paid sessions (SIGHUP must not remove them); None without metering.
pub(crate) type PaidPeers = Option<std::sync::Arc<dyn Fn(PeerId) -> bool + Send + Sync>>;

pub(crate) async fn run(config: PathBuf, relay: SharedRelay, paid: PaidPeers) {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(ADDRESS_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => refresh_addresses(&relay),
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                reload_peers(&config, &relay, &paid);
            }
        }
    }
}

fn refresh_addresses(relay: &SharedRelay) {
    match local_addresses() {
        Ok(addrs) => {
            if let Ok(mut r) = relay.lock() {
                r.set_router_addresses(addrs);
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not list the router's addresses"),
    }
}

fn reload_peers(config: &std::path::Path, relay: &SharedRelay, paid: &PaidPeers) {
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "SIGHUP: config not reloaded");
            return;
        }
    };
    let Ok(mut r) = relay.lock() else { return };
    let is_paid = |id: PeerId| paid.as_ref().is_some_and(|f| f(id));
    let (added, removed) = sync_peers(&mut r, &cfg.peers, &is_paid);
    tracing::info!(
        added,
        removed,
        peers = cfg.peers.len(),
        "SIGHUP: peers reloaded"
    );
}

/// Makes the relay's peer table equal to `peers` (by public key and allowed IPs); returns
/// (added, removed). Unchanged peers keep their sessions and counters; peers for which
/// `is_paid` holds (paid sessions, not from the config) are left alone.
pub(crate) fn sync_peers(
    relay: &mut Relay,
    peers: &[ValidPeer],
    is_paid: &dyn Fn(PeerId) -> bool,
) -> (usize, usize) {
    let wanted: HashMap<[u8; 32], &ValidPeer> = peers.iter().map(|p| (p.public_key.0, p)).collect();
    let mut removed = 0;
    let current: Vec<_> = relay.peers().collect();
    for info in current {
        if is_paid(info.id) {
            continue;
        }
        let keep = wanted.get(&info.public_key).is_some_and(|p| {
            let mut a: Vec<_> = p.allowed_ips.iter().map(|n| n.trunc()).collect();
            let mut b = info.allowed_ips.clone();
            a.sort_unstable();
            b.sort_unstable();
            a == b
        });
        if !keep && relay.remove_peer(info.id).is_some() {
            removed += 1;
        }
    }
    let mut added = 0;
    for p in peers {
        if relay.peer_by_key(&p.public_key.0).is_some() {
            continue;
        }
        let cfg = PeerConfig {
            public_key: PublicKey::from(p.public_key.0),
            allowed_ips: p.allowed_ips.clone(),
            preshared_key: None,
            persistent_keepalive: p.persistent_keepalive,
        };
        match relay.add_peer(cfg) {
            Ok(_) => added += 1,
            Err(e) => tracing::warn!(peer = %p.name, error = %e, "peer not added"),
        }
    }
    (added, removed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::Path;

    use ferry_relay_core::{PolicyConfig, RelayConfig, StaticSecret};

    use super::*;

    fn peers(text: &str) -> Vec<ValidPeer> {
        let base = "[wireguard]\nprivate-key-file = \"k\"\naddress = [\"10.77.0.1/24\"]\n";
        Config::parse(&format!("{base}{text}"), Path::new("/"))
            .unwrap()
            .peers
    }

    fn peer(name: &str, seed: u8, ip: &str) -> String {
        let key = ferry_keys::WgPrivateKey::from_bytes(&[seed; 32]).public_key();
        format!("[[peer]]\nname = \"{name}\"\npublic-key = \"{key}\"\nallowed-ips = [\"{ip}\"]\n")
    }

    #[test]
    fn sync_adds_removes_and_keeps_unchanged_peers() {
        let mut relay = Relay::new(RelayConfig {
            private_key: StaticSecret::from([1u8; 32]),
            tunnel_addresses: vec!["10.77.0.1".parse().unwrap()],
            policy: PolicyConfig::default(),
            max_peers: 10,
            client_rate_bytes: 0,
            index_salt: 0,
        });
        let v1 = peers(&(peer("a", 2, "10.77.0.2/32") + &peer("b", 3, "10.77.0.3/32")));
        assert_eq!(sync_peers(&mut relay, &v1, &|_| false), (2, 0));
        let a_id = relay.peers().next().unwrap().id;
        // b removed, a unchanged, c added, then b's address reused by c.
        let v2 = peers(&(peer("a", 2, "10.77.0.2/32") + &peer("c", 4, "10.77.0.3/32")));
        assert_eq!(sync_peers(&mut relay, &v2, &|_| false), (1, 1));
        assert_eq!(relay.peers().next().unwrap().id, a_id);
        assert_eq!(relay.peers().count(), 2);
        // a's address changes: re-created.
        let v3 = peers(&(peer("a", 2, "10.77.0.9/32") + &peer("c", 4, "10.77.0.3/32")));
        assert_eq!(sync_peers(&mut relay, &v3, &|_| false), (1, 1));
        assert_eq!(sync_peers(&mut relay, &v3, &|_| false), (0, 0));
    }
}
