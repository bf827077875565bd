//! Runtime housekeeping beside the data plane: refresh the router's own addresses (WAN
//! addresses change with DHCP/PPPoE) and reload trusted peers on SIGHUP.

use std::path::PathBuf;
use std::time::Duration;

use ferry_relay_core::{PeerConfig, PublicKey, Relay};
use ferry_relay_io::{SharedRelay, local_addresses};

use crate::config::{Config, ValidPeer};

const ADDRESS_REFRESH: Duration = Duration::from_secs(30);

pub(crate) async fn run(config: PathBuf, relay: SharedRelay) {
    // What the agent started with, to say on SIGHUP which edits only a restart applies.
    let started = sections(&config);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(ADDRESS_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => refresh_addresses(&relay),
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                reload_peers(&config, &relay);
                let changed = restart_needed(&started, &sections(&config));
                if !changed.is_empty() {
                    tracing::warn!(
                        sections = %changed.join(", "),
                        "SIGHUP: only [[peer]] changes apply on reload; the changes to these \
                         sections need a restart (/etc/init.d/ferry restart, or restart the service)"
                    );
                }
            }
        }
    }
}

/// The config file's top-level tables (empty if unreadable: the reload reports that).
fn sections(config: &std::path::Path) -> toml::Table {
    std::fs::read_to_string(config)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .unwrap_or_default()
}

/// Top-level sections (other than `peer`) that differ between `old` and `new`, as `[name]`.
fn restart_needed(old: &toml::Table, new: &toml::Table) -> Vec<String> {
    if new.is_empty() {
        return Vec::new();
    }
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| k.as_str() != "peer" && old.get(*k) != new.get(*k))
        .map(|k| format!("[{k}]"))
        .collect()
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

fn reload_peers(config: &std::path::Path, relay: &SharedRelay) {
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "SIGHUP: config not reloaded");
            return;
        }
    };
    let Ok(mut r) = relay.lock() else { return };
    let (added, removed) = sync_peers(&mut r, &cfg.peers);
    tracing::info!(
        added,
        removed,
        peers = cfg.peers.len(),
        "SIGHUP: peers reloaded"
    );
}

/// Makes the relay's trusted peers equal to `peers` (`Relay::sync_trusted`: unchanged peers
/// keep their sessions and counters, paid peers are never touched); returns (added, removed).
pub(crate) fn sync_peers(relay: &mut Relay, peers: &[ValidPeer]) -> (usize, usize) {
    let cfgs: Vec<PeerConfig> = peers
        .iter()
        .map(|p| PeerConfig {
            public_key: PublicKey::from(p.public_key.0),
            allowed_ips: p.allowed_ips.clone(),
            preshared_key: None,
            persistent_keepalive: p.persistent_keepalive,
        })
        .collect();
    let report = relay.sync_trusted(&cfgs);
    for (i, e) in &report.failed {
        let name = peers.get(*i).map_or("?", |p| p.name.as_str());
        tracing::warn!(peer = %name, error = %e, "peer not added");
    }
    (report.added, report.removed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::Path;

    use ferry_relay_core::StaticSecret;

    use super::*;

    #[test]
    fn sighup_names_the_sections_that_need_a_restart() {
        let t = |s: &str| s.parse::<toml::Table>().unwrap();
        let old = t(
            "[wireguard]\nlisten = \"0.0.0.0:51820\"\n[paid]\nenabled = false\n\
                     [[peer]]\nname = \"a\"\n",
        );
        // Only peers changed: nothing to say.
        let peers_only = t(
            "[wireguard]\nlisten = \"0.0.0.0:51820\"\n[paid]\nenabled = false\n\
                            [[peer]]\nname = \"b\"\n",
        );
        assert!(restart_needed(&old, &peers_only).is_empty());
        let more = t(
            "[wireguard]\nlisten = \"0.0.0.0:51999\"\n[paid]\nenabled = false\n\
                      [limits]\nmax-peers = 5\n",
        );
        assert_eq!(restart_needed(&old, &more), ["[limits]", "[wireguard]"]);
        // An unreadable file is reported by the reload itself.
        assert!(restart_needed(&old, &toml::Table::new()).is_empty());
    }

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
        let mut relay = crate::test_support::relay(10);
        let v1 = peers(&(peer("a", 2, "10.77.0.2/32") + &peer("b", 3, "10.77.0.3/32")));
        assert_eq!(sync_peers(&mut relay, &v1), (2, 0));
        let a_id = relay.peers().next().unwrap().id;
        // b removed, a unchanged, c added, then b's address reused by c.
        let v2 = peers(&(peer("a", 2, "10.77.0.2/32") + &peer("c", 4, "10.77.0.3/32")));
        assert_eq!(sync_peers(&mut relay, &v2), (1, 1));
        assert_eq!(relay.peers().next().unwrap().id, a_id);
        assert_eq!(relay.peers().count(), 2);
        // a's address changes: re-created.
        let v3 = peers(&(peer("a", 2, "10.77.0.9/32") + &peer("c", 4, "10.77.0.3/32")));
        assert_eq!(sync_peers(&mut relay, &v3), (1, 1));
        assert_eq!(sync_peers(&mut relay, &v3), (0, 0));
        // A paid peer is never removed by a reload, and its key is not re-added as trusted.
        let paid = relay
            .add_peer_as(
                PeerConfig {
                    public_key: PublicKey::from(&StaticSecret::from([5u8; 32])),
                    allowed_ips: vec!["10.77.0.5/32".parse().unwrap()],
                    preshared_key: None,
                    persistent_keepalive: None,
                },
                ferry_relay_core::PeerKind::Paid,
            )
            .unwrap();
        assert_eq!(sync_peers(&mut relay, &v3), (0, 0));
        let v4 = peers(&(peer("a", 2, "10.77.0.9/32") + &peer("p", 5, "10.77.0.6/32")));
        assert_eq!(
            sync_peers(&mut relay, &v4),
            (0, 1),
            "c removed, p not added"
        );
        assert_eq!(
            relay.peer_kind(paid),
            Some(ferry_relay_core::PeerKind::Paid)
        );
    }
}
