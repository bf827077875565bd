//! The rule `ferry connect --auto` and `ferry socks5 --auto` pick a relay by (sans-IO: the
//! caller fetched and verified the directory's list and measured the round trips; docs/client.md,
//! "Choosing a relay"):
//!
//! 1. **Candidates** ([`candidates`]): verified listings that match the filters, answered the
//!    directory's probe over the family the client will use, ask at most the voucher's max
//!    price, and are not the client's own relay key. The [`PROBED`] best by score (then price) are pinged.
//! 2. **Eligible**: answered our ping within the timeout. Nothing else is ever chosen.
//! 3. **Good enough** (tier 0): score at least the best eligible score minus [`SCORE_SLACK`],
//!    and round trip at most twice the fastest of those plus [`RTT_SLACK_MICROS`]. The others
//!    are tier 1 (fallbacks). Tier 0 is never empty when anything answered.
//! 4. **Order**: tier, then lowest price, then highest score, then lowest round trip, then
//!    relay key (so the order is total and the same on every run with the same inputs). The
//!    first is used; failover takes the next.

use ferry_receipts::{PublicKey, REACHABLE_V4, REACHABLE_V6};
use serde::{Deserialize, Serialize};

use crate::relays::Listed;

/// How many candidates are pinged.
pub(crate) const PROBED: usize = 6;
/// Score points below the best that still count as good enough.
pub(crate) const SCORE_SLACK: u16 = 150;
/// Round trip above twice the fastest that still counts as good enough, microseconds.
pub(crate) const RTT_SLACK_MICROS: u32 = 20_000;

/// One relay of the ranking, with the numbers the rule used (shown by `ferry status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ranked {
    /// Relay identity key (hex).
    pub(crate) relay_key: String,
    /// Declared country.
    pub(crate) country: String,
    /// Its price, micros per GiB.
    pub(crate) price_micros_per_gib: u64,
    /// The directory's score.
    pub(crate) score: u16,
    /// Our ping's round trip, microseconds (`None`: no answer).
    pub(crate) rtt_micros: Option<u32>,
    /// 0 = good enough, 1 = fallback, `None` = not eligible (no answer).
    pub(crate) tier: Option<u8>,
}

/// The outcome: the eligible relays in the order they are used, everything pinged, and why the
/// first was chosen (in words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ranking {
    /// Indexes into the input, in order of use.
    pub(crate) order: Vec<usize>,
    /// Every input relay (input order), with its tier.
    pub(crate) table: Vec<Ranked>,
    /// Why `order[0]` (empty when nothing is eligible).
    pub(crate) reason: String,
}

/// Step 1: the listings worth pinging, best first (score, then price, then key).
pub(crate) fn candidates(
    list: Vec<Listed>,
    max_price: u64,
    own_key: &PublicKey,
    ipv6: bool,
    now: u64,
) -> Vec<Listed> {
    let mut c: Vec<Listed> = list
        .into_iter()
        .filter(|l| {
            // Reachable over the family we will use: IPv6 with `--ipv6` (or when the relay
            // has no IPv4 endpoint), IPv4 otherwise.
            let family = if ipv6 || l.descriptor.ipv4.is_none() {
                REACHABLE_V6
            } else {
                REACHABLE_V4
            };
            l.annotation.reachable & family != 0
                && l.descriptor.price_micros_per_gib <= max_price
                && &l.descriptor.relay_key != own_key
                // Its owner's schedule shares now (a relay outside it refuses offers).
                && l.descriptor.limits.shares_at_unix(now)
        })
        .collect();
    c.sort_by_key(|l| {
        (
            std::cmp::Reverse(l.annotation.score),
            l.descriptor.price_micros_per_gib,
            l.descriptor.relay_key,
        )
    });
    c.truncate(PROBED);
    c
}

/// Steps 2-4 on `pinged` (each listing with our ping's round trip, `None` = no answer).
pub(crate) fn rank(pinged: &[(Listed, Option<u32>)]) -> Ranking {
    let eligible: Vec<usize> = (0..pinged.len())
        .filter(|&i| pinged[i].1.is_some())
        .collect();
    let best_score = eligible
        .iter()
        .map(|&i| pinged[i].0.annotation.score)
        .max()
        .unwrap_or(0);
    let score_floor = best_score.saturating_sub(SCORE_SLACK);
    // The fastest of those with a good enough score: a fast relay far below the best score
    // must not push every well-scored one out of tier 0 (tier 0 is never empty).
    let fastest = eligible
        .iter()
        .filter(|&&i| pinged[i].0.annotation.score >= score_floor)
        .filter_map(|&i| pinged[i].1)
        .min()
        .unwrap_or(0);
    let rtt_ceiling = fastest.saturating_mul(2).saturating_add(RTT_SLACK_MICROS);
    let tier = |i: usize| -> Option<u8> {
        let (l, rtt) = &pinged[i];
        let rtt = (*rtt)?;
        Some(u8::from(
            l.annotation.score < score_floor || rtt > rtt_ceiling,
        ))
    };
    let mut order = eligible.clone();
    order.sort_by_key(|&i| {
        let (l, rtt) = &pinged[i];
        (
            tier(i),
            l.descriptor.price_micros_per_gib,
            std::cmp::Reverse(l.annotation.score),
            *rtt,
            l.descriptor.relay_key,
        )
    });
    let table = (0..pinged.len())
        .map(|i| {
            let (l, rtt) = &pinged[i];
            Ranked {
                relay_key: l.descriptor.relay_key.to_hex(),
                country: l.descriptor.country_code().to_owned(),
                price_micros_per_gib: l.descriptor.price_micros_per_gib,
                score: l.annotation.score,
                rtt_micros: *rtt,
                tier: tier(i),
            }
        })
        .collect();
    let reason = match order.first() {
        None => String::new(),
        Some(&i) => {
            let good = order.iter().filter(|&&j| tier(j) == Some(0)).count();
            let (l, rtt) = &pinged[i];
            format!(
                "the cheapest ({} micros/GiB; score {}, {:.1} ms) of {good} relay(s) within {SCORE_SLACK} \
                 points of the best score ({best_score}) and 2x+{} ms of the fastest round trip ({:.1} ms); \
                 {} pinged, {} answered",
                l.descriptor.price_micros_per_gib,
                l.annotation.score,
                f64::from(rtt.unwrap_or(0)) / 1000.0,
                RTT_SLACK_MICROS / 1000,
                f64::from(fastest) / 1000.0,
                pinged.len(),
                eligible.len()
            )
        }
    };
    Ranking {
        order,
        table,
        reason,
    }
}

/// A listing for tests (unsigned): relay key and WireGuard key `[key; 32]`, 192.0.2.1.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_listed(key: u8, price: u64, score: u16, reachable: u8) -> Listed {
    use ferry_receipts::{
        AdvertisedLimits, DescriptorId, DirectoryAnnotation, NetworkId, RelayDescriptor, Signature,
    };
    Listed {
        descriptor: RelayDescriptor {
            network_id: NetworkId([1; 16]),
            relay_key: PublicKey([key; 32]),
            wg_key: [key; 32],
            ipv4: Some("192.0.2.1:51820".parse().unwrap()),
            ipv6: None,
            hello_port: 51821,
            price_micros_per_gib: price,
            limits: AdvertisedLimits::unlimited(),
            country: *b"DE",
            region: String::new(),
            software: String::new(),
            abuse_contact: String::new(),
            issued_at: 0,
            expires_at: 1,
            signature: Signature::ZERO,
        },
        annotation: DirectoryAnnotation {
            network_id: NetworkId([1; 16]),
            ledger_key: PublicKey([0; 32]),
            relay_key: PublicKey([key; 32]),
            descriptor_id: DescriptorId([0; 32]),
            annotated_at: 0,
            first_seen: 0,
            last_seen: 0,
            reachable,
            probe_rtt_micros: 1000,
            probes_ok: 1,
            probes_total: 1,
            score,
            paid_bytes: 0,
            completed_sessions: 0,
            paying_clients: 0,
            refusals: 0,
            signature: Signature::ZERO,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn listed(key: u8, price: u64, score: u16, reachable: u8) -> Listed {
        test_listed(key, price, score, reachable)
    }

    fn keys(r: &Ranking, pinged: &[(Listed, Option<u32>)]) -> Vec<u8> {
        r.order
            .iter()
            .map(|&i| pinged[i].0.descriptor.relay_key.0[0])
            .collect()
    }

    #[test]
    fn the_cheapest_good_enough_relay_wins_and_the_rest_follow_in_rule_order() {
        let pinged = vec![
            (listed(1, 900_000, 700, 1), Some(5_000)),
            // Cheapest but its score is more than 150 below the best: a fallback.
            (listed(2, 100_000, 500, 1), Some(4_000)),
            // Cheap, good score, but far: 2 x 4 ms (the fastest, relay 2) + 20 ms = 28 ms is the ceiling.
            (listed(3, 200_000, 690, 1), Some(31_000)),
            // Good enough and cheaper than 1: the choice.
            (listed(4, 500_000, 600, 1), Some(9_000)),
            // No answer: never chosen.
            (listed(5, 50_000, 900, 1), None),
            // Same price as 4, higher score: ahead of 4.
            (listed(6, 500_000, 650, 1), Some(27_000)),
        ];
        let r = rank(&pinged);
        assert_eq!(keys(&r, &pinged), vec![6, 4, 1, 2, 3]);
        assert_eq!(r.table[4].tier, None);
        assert_eq!(r.table[1].tier, Some(1));
        assert_eq!(r.table[2].tier, Some(1));
        assert_eq!(r.table[5].tier, Some(0));
        assert!(
            r.reason.contains("cheapest (500000 micros/GiB; score 650")
                && r.reason.contains("of 3 relay(s)")
                && r.reason.contains("best score (700)")
                && r.reason.contains("6 pinged, 5 answered"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn a_fast_cheap_relay_far_below_the_best_score_does_not_push_the_good_ones_out() {
        // B was refused by clients (score 100) but is 1 ms away and nearly free; A is good
        // and 40 ms away. The ceiling comes from A (the fastest good-scored), so A is tier 0.
        let pinged = vec![
            (listed(1, 500, 900, 1), Some(40_000)),
            (listed(2, 10, 100, 1), Some(1_000)),
        ];
        let r = rank(&pinged);
        assert_eq!(keys(&r, &pinged), vec![1, 2]);
        assert_eq!((r.table[0].tier, r.table[1].tier), (Some(0), Some(1)));
        assert!(r.reason.contains("of 1 relay(s)"), "{}", r.reason);
    }

    #[test]
    fn ties_are_broken_by_round_trip_then_key_and_nothing_answering_gives_nothing() {
        let pinged = vec![
            (listed(9, 100, 500, 1), Some(2_000)),
            (listed(8, 100, 500, 1), Some(2_000)),
            (listed(7, 100, 500, 1), Some(1_000)),
        ];
        assert_eq!(keys(&rank(&pinged), &pinged), vec![7, 8, 9]);
        let none = vec![(listed(1, 1, 1, 1), None)];
        let r = rank(&none);
        assert!(r.order.is_empty() && r.reason.is_empty());
    }

    #[test]
    fn candidates_are_reachable_affordable_not_our_own_and_the_best_few() {
        let own = PublicKey([3; 32]);
        let mut list = vec![
            listed(1, 1_000, 100, 1),
            listed(2, 2_000_000, 900, 1), // above the voucher's max
            listed(3, 1_000, 900, 1),     // our own key
            listed(4, 1_000, 800, 0),     // not reachable
            listed(5, 1_000, 200, 2),     // reached over IPv6 only: not for an IPv4 client
        ];
        for k in 10..20 {
            list.push(listed(k, 1_000, 300 + u16::from(k), 1));
        }
        // Relay 20 shares only on Mondays 00:00-01:00 UTC: not now (a Thursday 12:00 UTC).
        let mut off = listed(20, 1_000, 999, 1);
        off.descriptor.limits.schedule = [0; 21];
        off.descriptor.limits.schedule[0] = 0x80;
        list.push(off.clone());
        let thursday_noon = 12 * 3600;
        let monday = 4 * 86_400 + 1800;
        assert!(off.descriptor.limits.shares_at_unix(monday));
        assert_eq!(
            candidates(vec![off], 1_000_000, &own, false, monday).len(),
            1
        );
        let c = candidates(list.clone(), 1_000_000, &own, false, thursday_noon);
        let got: Vec<u8> = c.iter().map(|l| l.descriptor.relay_key.0[0]).collect();
        assert_eq!(got, vec![19, 18, 17, 16, 15, 14]);
        let v6 = candidates(list, 1_000_000, &own, true, thursday_noon);
        assert_eq!(v6.len(), 1);
        assert_eq!(v6[0].descriptor.relay_key.0[0], 5);
    }
}
