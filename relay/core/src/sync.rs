//! Replacing the operator's trusted peers (config reload) without touching paid peers.

use std::collections::HashMap;

use crate::relay::{PeerConfig, PeerKind, Relay, RelayError};

/// What [`Relay::sync_trusted`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Trusted peers added.
    pub added: usize,
    /// Trusted peers removed.
    pub removed: usize,
    /// Configured peers that could not be added: (index in the list, why).
    pub failed: Vec<(usize, RelayError)>,
}

impl Relay {
    /// Makes the relay's trusted peers equal to `peers` (by public key and allowed IPs).
    /// Unchanged peers keep their sessions and counters. Paid peers are never removed or
    /// replaced: they are not in the operator's config, and a configured key that is already
    /// a paid peer is reported as [`RelayError::DuplicateKey`] in `failed`.
    pub fn sync_trusted(&mut self, peers: &[PeerConfig]) -> SyncReport {
        let wanted: HashMap<[u8; 32], &PeerConfig> = peers
            .iter()
            .map(|p| (*p.public_key.as_bytes(), p))
            .collect();
        let mut report = SyncReport::default();
        let current: Vec<_> = self.peers().collect();
        for info in current {
            if info.kind == PeerKind::Paid {
                continue;
            }
            let keep = wanted.get(&info.public_key).is_some_and(|p| {
                let mut a: Vec<_> = p.allowed_ips.iter().map(|n| n.trunc()).collect();
                let mut b = info.allowed_ips.clone();
                a.sort_unstable();
                b.sort_unstable();
                a == b
            });
            if !keep && self.remove_peer(info.id).is_some() {
                report.removed += 1;
            }
        }
        for (i, p) in peers.iter().enumerate() {
            match self.peer_by_key(p.public_key.as_bytes()) {
                Some(id) if self.peer_kind(id) == Some(PeerKind::Trusted) => continue,
                Some(_) => report.failed.push((i, RelayError::DuplicateKey)),
                None => match self.add_peer(p.clone()) {
                    Ok(_) => report.added += 1,
                    Err(e) => report.failed.push((i, e)),
                },
            }
        }
        report
    }
}
