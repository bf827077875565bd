//! The relay directory: relays announce a signed [`RelayDescriptor`], the directory probes
//! their Hello ports, scores them from what they were paid for, signs an annotation and
//! serves both. Times and nonces are arguments; probing goes through a [`Prober`].

pub mod probe;
pub mod rules;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ferry_receipts::{
    DirectoryAnnotation, ProbeChallenge, PublicKey, REACHABLE_V4, REACHABLE_V6, RelayDescriptor,
    Signature,
};

pub use probe::{Prober, UdpProber};
pub use rules::{AnnounceError, DirectoryParams, Finding, RefusalError};

use crate::domain::Role;
use crate::service::Ledger;
use crate::store::directory::Listing;
use crate::store::{DirectoryRow, RefusalRow, RelayFilter, Store, StoreError};

/// Why an announce or a listing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The announce broke a rule.
    #[error("{0}")]
    Announce(#[from] AnnounceError),
    /// The refusal report broke a rule.
    #[error("{0}")]
    Refusal(#[from] RefusalError),
    /// Storage failed.
    #[error("storage")]
    Store(#[from] StoreError),
}

/// What an announce found.
#[derive(Debug, Clone)]
pub struct Announced {
    /// Listed now (answered on some endpoint).
    pub listed: bool,
    /// The announce's source.
    pub seen_from: IpAddr,
    /// Best round trip of the probe.
    pub rtt: Option<Duration>,
    /// The annotation now served with the descriptor.
    pub annotation: DirectoryAnnotation,
    /// Findings for the operator.
    pub findings: Vec<Finding>,
}

/// A relay's reachability as of its last probe.
struct ProbeState {
    reachable: u8,
    rtt: Option<Duration>,
    last_probe: u64,
    ok: u32,
    total: u32,
}

/// The directory over a ledger's store and key.
pub struct Directory<S> {
    ledger: Arc<Ledger<S>>,
    params: DirectoryParams,
    prober: Arc<dyn Prober>,
}

impl<S> std::fmt::Debug for Directory<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl<S: Store> Directory<S> {
    /// A directory signing annotations with `ledger`'s key.
    pub fn new(ledger: Arc<Ledger<S>>, params: DirectoryParams, prober: Arc<dyn Prober>) -> Self {
        Self {
            ledger,
            params,
            prober,
        }
    }

    /// Parameters.
    pub fn params(&self) -> &DirectoryParams {
        &self.params
    }

    /// Records a client's refusal of a relay's receipt (`ReceiptRefusal` encoding) received
    /// at `now`: both keys registered, signatures valid, and the refused receipt paid by a
    /// voucher of that client (so making one costs a real paid session). One per session;
    /// returns whether it is new. The relay's score counts distinct refusing clients from
    /// its next announce on.
    pub async fn refuse(&self, bytes: &[u8], now: u64) -> Result<bool, DirectoryError> {
        let r = ferry_receipts::ReceiptRefusal::decode(bytes).map_err(RefusalError::Decode)?;
        r.verify(&self.params.network_id)
            .map_err(RefusalError::Verify)?;
        let b = r.body();
        let store = self.ledger.store();
        if !store.has_key(b.relay_key, Role::Relay).await?
            || !store.has_key(b.client_key, Role::Client).await?
        {
            return Err(RefusalError::UnknownKey.into());
        }
        match store.voucher(b.voucher_id).await? {
            Some(v) if v.client_key == b.client_key => {}
            _ => return Err(RefusalError::NotPaid.into()),
        }
        let new = store
            .put_refusal(RefusalRow {
                relay_key: b.relay_key,
                session_id: b.session_id,
                client_key: b.client_key,
                reason: r.reason,
                received_at: now,
                encoded: bytes.to_vec(),
            })
            .await?;
        // The refusal is recorded; a failed re-signing only delays the lower score to the
        // relay's next announce (a retried report answers `recorded: false`).
        if new {
            if let Err(e) = self.reannotate(b.relay_key, now).await {
                tracing::warn!(error = %e, "refusal recorded; annotation not re-signed until the next announce");
            }
        }
        Ok(new)
    }

    /// The score factors and score of `relay` now, with `ok` of `total` probes answered.
    async fn scored(
        &self,
        relay: PublicKey,
        ok: u32,
        total: u32,
    ) -> Result<(rules::Factors, u16), DirectoryError> {
        let store = self.ledger.store();
        let usage = store.relay_clients(relay).await?;
        let refusals = store.relay_refusals(relay).await?;
        let f = rules::factors(&usage, refusals);
        let score = rules::score(&f, ok, total);
        Ok((f, score))
    }

    /// Re-signs a listed relay's annotation with its factors now: a recorded refusal lowers
    /// the listed score at once instead of at the relay's next announce (one signature per
    /// new refusal, and only a paying client can make one).
    async fn reannotate(&self, relay: PublicKey, now: u64) -> Result<(), DirectoryError> {
        let store = self.ledger.store();
        let Some(mut row) = store.directory_entry(relay).await? else {
            return Ok(());
        };
        let Ok(old) = DirectoryAnnotation::decode(&row.annotation) else {
            return Ok(());
        };
        let (f, score) = self.scored(relay, row.probes_ok, row.probes_total).await?;
        let a = f
            .annotate(
                DirectoryAnnotation {
                    annotated_at: now,
                    ..old
                },
                score,
            )
            .sign(self.ledger.signing_key());
        row.annotation = a.encode();
        row.score = score;
        store.put_directory_entry(row).await?;
        Ok(())
    }

    /// Accepts a descriptor announced from `seen_from` at `now`: checks it, probes the
    /// endpoints (challenge nonce `nonce`) unless an unchanged one was probed within
    /// `min_probe_interval_secs`, scores, signs the annotation and stores both.
    /// [`AnnounceError::UnknownRelay`] comes only for a descriptor that verified.
    pub async fn announce(
        &self,
        bytes: &[u8],
        seen_from: IpAddr,
        nonce: [u8; 16],
        now: u64,
    ) -> Result<Announced, DirectoryError> {
        let d = rules::admit(&self.params, bytes, now)?;
        let store = self.ledger.store();
        if !store.has_key(d.relay_key, Role::Relay).await? {
            return Err(AnnounceError::UnknownRelay.into());
        }
        let prev = store.directory_entry(d.relay_key).await?;
        let probed = match self.recent_probe(&d, prev.as_ref(), now)? {
            Some(reused) => reused,
            None => {
                let (reachable, rtt) = self.probe(&d, nonce, now).await;
                let (ok, total) = prev
                    .as_ref()
                    .map_or((0, 0), |p| (p.probes_ok, p.probes_total));
                ProbeState {
                    reachable,
                    rtt,
                    last_probe: now,
                    ok: ok.saturating_add(u32::from(reachable != 0)),
                    total: total.saturating_add(1),
                }
            }
        };
        let ProbeState {
            reachable,
            rtt,
            last_probe,
            ok,
            total,
        } = probed;
        store.expire_directory(now).await?;
        let (f, score) = self.scored(d.relay_key, ok, total).await?;
        let first_seen = prev.as_ref().map_or(now, |p| p.first_seen.min(now));
        let annotation = f
            .annotate(
                DirectoryAnnotation {
                    network_id: self.params.network_id,
                    ledger_key: PublicKey([0; 32]),
                    relay_key: d.relay_key,
                    descriptor_id: d.id(),
                    annotated_at: now,
                    first_seen,
                    last_seen: now,
                    reachable,
                    probe_rtt_micros: rtt
                        .map_or(0, |r| u32::try_from(r.as_micros()).unwrap_or(u32::MAX)),
                    probes_ok: ok,
                    probes_total: total,
                    score: 0,
                    paid_bytes: 0,
                    completed_sessions: 0,
                    paying_clients: 0,
                    refusals: 0,
                    signature: Signature::ZERO,
                },
                score,
            )
            .sign(self.ledger.signing_key());
        store
            .put_directory_entry(DirectoryRow {
                relay_key: d.relay_key,
                descriptor: bytes.to_vec(),
                annotation: annotation.encode(),
                country: d.country_code().to_owned(),
                price_micros_per_gib: d.price_micros_per_gib,
                ipv6: reachable & REACHABLE_V6 != 0,
                reachable: reachable != 0,
                score,
                expires_at: d.expires_at,
                first_seen,
                last_seen: now,
                last_probe,
                probes_ok: ok,
                probes_total: total,
            })
            .await?;
        let findings = rules::findings(
            &d,
            seen_from,
            reachable & REACHABLE_V4 != 0,
            reachable & REACHABLE_V6 != 0,
        );
        Ok(Announced {
            listed: reachable != 0,
            seen_from,
            rtt,
            annotation,
            findings,
        })
    }

    /// Listed relays matching `filter` at `now` (descriptor, annotation encodings).
    pub async fn list(
        &self,
        mut filter: RelayFilter,
        now: u64,
    ) -> Result<Vec<Listing>, DirectoryError> {
        filter.limit = filter.limit.clamp(1, self.params.max_list);
        Ok(self.ledger.store().list_directory(filter, now).await?)
    }

    /// The last probe's result when the endpoints are unchanged and it is recent enough;
    /// an endpoint change that soon is refused (a relay cannot aim probes at others fast).
    fn recent_probe(
        &self,
        d: &RelayDescriptor,
        prev: Option<&DirectoryRow>,
        now: u64,
    ) -> Result<Option<ProbeState>, AnnounceError> {
        let Some(p) = prev else { return Ok(None) };
        let since = now.saturating_sub(p.last_probe);
        if since >= self.params.min_probe_interval_secs {
            return Ok(None);
        }
        let (Ok(old_d), Ok(old_a)) = (
            RelayDescriptor::decode(&p.descriptor),
            DirectoryAnnotation::decode(&p.annotation),
        ) else {
            return Ok(None);
        };
        if old_d.endpoints() != d.endpoints() || old_d.hello_port != d.hello_port {
            return Err(AnnounceError::TooSoon {
                since,
                retry: self.params.min_probe_interval_secs - since,
            });
        }
        let rtt = (old_a.probe_rtt_micros > 0)
            .then(|| Duration::from_micros(u64::from(old_a.probe_rtt_micros)));
        Ok(Some(ProbeState {
            reachable: old_a.reachable,
            rtt,
            last_probe: p.last_probe,
            ok: p.probes_ok,
            total: p.probes_total,
        }))
    }

    /// Probes every endpoint's Hello port at once; returns the reachability bits and the
    /// best round trip.
    async fn probe(
        &self,
        d: &RelayDescriptor,
        nonce: [u8; 16],
        now: u64,
    ) -> (u8, Option<Duration>) {
        let challenge = ProbeChallenge {
            network_id: self.params.network_id,
            ledger_key: PublicKey([0; 32]),
            relay_key: d.relay_key,
            nonce,
            issued_at: now,
            signature: Signature::ZERO,
        }
        .sign(self.ledger.signing_key());
        let hello = |a: SocketAddr| SocketAddr::new(a.ip(), d.hello_port);
        let v4 = async {
            match d.ipv4 {
                Some(a) => self.prober.probe(hello(a.into()), &challenge).await,
                None => None,
            }
        };
        let v6 = async {
            match d.ipv6 {
                Some(a) => self.prober.probe(hello(a.into()), &challenge).await,
                None => None,
            }
        };
        let (r4, r6) = tokio::join!(v4, v6);
        let bits = if r4.is_some() { REACHABLE_V4 } else { 0 }
            | if r6.is_some() { REACHABLE_V6 } else { 0 };
        (bits, [r4, r6].into_iter().flatten().min())
    }
}
