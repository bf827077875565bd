//! `ferry relays`: the network's relay directory, verified here. Each listing carries the
//! relay's signed descriptor and the ledger's signed annotation; a listing is shown only when
//! both signatures verify (relay key from the descriptor, the ledger key we trust), the
//! annotation names that descriptor, and the descriptor is unexpired. The last verified list
//! is cached (`<key dir>/relays.cache`) and used when the ledger cannot be reached.

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_ledger_api as api;
use ferry_receipts::{DirectoryAnnotation, NetworkId, PublicKey, RelayDescriptor};

/// A listing that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    /// The relay's own terms.
    pub(crate) descriptor: RelayDescriptor,
    /// The ledger's statement about it.
    pub(crate) annotation: DirectoryAnnotation,
}

/// Listings of `list` that verify at `now`, in the directory's order, and how many did not.
pub(crate) fn verify_list(
    list: &api::RelayList,
    network_id: &NetworkId,
    ledger_key: &PublicKey,
    now: u64,
) -> (Vec<Listed>, usize) {
    let mut ok = Vec::new();
    let mut refused = 0;
    for l in &list.relays {
        match verify_one(l, network_id, ledger_key, now) {
            Some(x) => ok.push(x),
            None => refused += 1,
        }
    }
    (ok, refused)
}

/// Clock difference allowed on a descriptor's issue time.
const SKEW_SECS: u64 = 300;

fn verify_one(
    l: &api::RelayListing,
    network_id: &NetworkId,
    ledger_key: &PublicKey,
    now: u64,
) -> Option<Listed> {
    let d = RelayDescriptor::decode(&B64.decode(&l.descriptor).ok()?).ok()?;
    let a = DirectoryAnnotation::decode(&B64.decode(&l.annotation).ok()?).ok()?;
    d.verify(network_id, now, SKEW_SECS).ok()?;
    a.verify(network_id, ledger_key).ok()?;
    (a.descriptor_id == d.id() && a.relay_key == d.relay_key).then_some(Listed {
        descriptor: d,
        annotation: a,
    })
}

/// Filters for `GET /v1/relays` as its query string.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filters {
    pub(crate) country: Option<String>,
    pub(crate) max_price: Option<u64>,
    pub(crate) min_score: Option<u16>,
    pub(crate) ipv6: bool,
    pub(crate) limit: Option<usize>,
    /// Only relays offering at least this per-client rate (not limited counts as enough).
    pub(crate) min_mbit: Option<u32>,
}

impl Filters {
    pub(crate) fn query(&self) -> String {
        let mut q = Vec::new();
        if let Some(c) = &self.country {
            q.push(format!("country={}", c.to_ascii_uppercase()));
        }
        if let Some(p) = self.max_price {
            q.push(format!("max_price={p}"));
        }
        if let Some(s) = self.min_score {
            q.push(format!("min_score={s}"));
        }
        if self.ipv6 {
            q.push("ipv6=true".into());
        }
        if let Some(l) = self.limit {
            q.push(format!("limit={l}"));
        }
        q.join("&")
    }

    /// The same filters applied to a cached list.
    pub(crate) fn keep(&self, l: &Listed) -> bool {
        let d = &l.descriptor;
        self.country
            .as_ref()
            .is_none_or(|c| c.eq_ignore_ascii_case(d.country_code()))
            && self.max_price.is_none_or(|p| d.price_micros_per_gib <= p)
            && self.min_score.is_none_or(|s| l.annotation.score >= s)
            && (!self.ipv6 || l.annotation.reachable & ferry_receipts::REACHABLE_V6 != 0)
            && self
                .min_mbit
                .is_none_or(|m| d.limits.max_mbit == 0 || d.limits.max_mbit >= m)
    }
}

/// When the relay shares: `always`, or `now`/`off now` with its hours per week, and its
/// monthly quota.
fn sharing(l: &ferry_receipts::AdvertisedLimits, now: u64) -> String {
    let hours = l.shared_hours();
    let mut s = match (hours, l.shares_at_unix(now)) {
        (168, _) => "always".to_owned(),
        (h, true) => format!("now {h}h/wk"),
        (h, false) => format!("off {h}h/wk"),
    };
    if l.monthly_quota_gib > 0 {
        s += &format!(" {}GiB/mo", l.monthly_quota_gib);
    }
    s
}

/// The table `ferry relays` prints.
pub(crate) fn table(list: &[Listed]) -> String {
    let mut s = format!(
        "{:<16} {:<7} {:<14} {:>12} {:>5} {:>8} {:>6} {:<11}  {}\n",
        "RELAY",
        "COUNTRY",
        "REGION",
        "PRICE/GiB",
        "SCORE",
        "RTT ms",
        "Mbit/s",
        "SHARING",
        "ENDPOINT"
    );
    let now = ferry_store::unix_now();
    for l in list {
        let d = &l.descriptor;
        let a = &l.annotation;
        let endpoint = d
            .endpoints()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let mbit = match d.limits.max_mbit {
            0 => "-".to_owned(),
            m => m.to_string(),
        };
        s += &format!(
            "{:<16} {:<7} {:<14} {:>12} {:>5} {:>8.1} {:>6} {:<11}  {}\n",
            &d.relay_key.to_hex()[..16],
            d.country_code(),
            d.region.chars().take(14).collect::<String>(),
            format!("{:.6}", d.price_micros_per_gib as f64 / 1e6),
            a.score,
            f64::from(a.probe_rtt_micros) / 1000.0,
            mbit,
            sharing(&d.limits, now),
            endpoint
        );
    }
    s
}

/// Reads the cached list (as the ledger served it).
pub(crate) fn read_cache(path: &Path) -> Result<api::RelayList> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not a relay list", path.display()))
}

/// Writes the list to the cache (0600, atomically).
pub(crate) fn write_cache(path: &Path, list: &api::RelayList) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec(list)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use ferry_receipts::{AdvertisedLimits, Signature, SigningKey};

    use super::*;

    const NET: NetworkId = NetworkId([5; 16]);
    const T: u64 = 1_800_000_000;

    fn listing(relay: &SigningKey, ledger: &SigningKey, price: u64) -> api::RelayListing {
        let d = RelayDescriptor {
            network_id: NET,
            relay_key: PublicKey([0; 32]),
            wg_key: [1; 32],
            ipv4: Some("81.2.69.160:51820".parse().unwrap()),
            ipv6: None,
            hello_port: 51821,
            price_micros_per_gib: price,
            limits: AdvertisedLimits::unlimited(),
            country: *b"DE",
            region: "Berlin".into(),
            software: String::new(),
            abuse_contact: String::new(),
            issued_at: T,
            expires_at: T + 1800,
            signature: Signature::ZERO,
        }
        .sign(relay);
        let a = DirectoryAnnotation {
            network_id: NET,
            ledger_key: PublicKey([0; 32]),
            relay_key: d.relay_key,
            descriptor_id: d.id(),
            annotated_at: T,
            first_seen: T,
            last_seen: T,
            reachable: 1,
            probe_rtt_micros: 2500,
            probes_ok: 1,
            probes_total: 1,
            score: 400,
            paid_bytes: 0,
            completed_sessions: 0,
            paying_clients: 0,
            refusals: 0,
            signature: Signature::ZERO,
        }
        .sign(ledger);
        api::RelayListing {
            descriptor: B64.encode(d.encode()),
            annotation: B64.encode(a.encode()),
        }
    }

    #[test]
    fn tampered_or_foreign_listings_are_dropped() {
        let ledger = SigningKey::from_seed(&[1; 32]);
        let relay = SigningKey::from_seed(&[2; 32]);
        let good = listing(&relay, &ledger, 1_000_000);
        // The descriptor re-signed by someone else under the relay's key field: bad signature.
        let mut d = RelayDescriptor::decode(&B64.decode(&good.descriptor).unwrap()).unwrap();
        d.price_micros_per_gib = 1;
        let cheaper = api::RelayListing {
            descriptor: B64.encode(d.encode()),
            annotation: good.annotation.clone(),
        };
        // A genuine descriptor with an annotation of another descriptor (score borrowed).
        let other = listing(&relay, &ledger, 2_000_000);
        let swapped = api::RelayListing {
            descriptor: good.descriptor.clone(),
            annotation: other.annotation.clone(),
        };
        // An annotation signed by a key that is not our ledger.
        let forged = listing(&relay, &SigningKey::from_seed(&[3; 32]), 1_000_000);
        let list = api::RelayList {
            generated_at: T,
            relays: vec![good, cheaper, swapped, forged, other],
        };
        let (ok, refused) = verify_list(&list, &NET, &ledger.public_key(), T + 10);
        assert_eq!(refused, 3);
        let prices: Vec<u64> = ok
            .iter()
            .map(|l| l.descriptor.price_micros_per_gib)
            .collect();
        assert_eq!(prices, [1_000_000, 2_000_000]);
        // Expired descriptors are dropped too (a stale cache).
        assert_eq!(
            verify_list(&list, &NET, &ledger.public_key(), T + 1801)
                .0
                .len(),
            0
        );
        let t = table(&ok);
        assert!(
            t.contains("1.000000") && t.contains("81.2.69.160:51820") && t.contains("2.5"),
            "{t}"
        );
        let f = Filters {
            max_price: Some(1_500_000),
            country: Some("de".into()),
            ..Filters::default()
        };
        assert_eq!(f.query(), "country=DE&max_price=1500000");
        assert_eq!(ok.iter().filter(|l| f.keep(l)).count(), 1);
    }
}
