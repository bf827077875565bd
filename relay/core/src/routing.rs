//! Cryptokey routing table: longest-prefix match over the peers' allowed IPs.
//!
//! One hash map per prefix length present, probed longest first: the common case (every peer
//! owns one /32 and one /128) is a single hash lookup per packet, independent of peer count.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// Longest-prefix-match table from IP networks to values.
#[derive(Debug, Clone)]
pub(crate) struct AllowedIps<T> {
    v4: Family<T>,
    v6: Family<T>,
}

#[derive(Debug, Clone)]
struct Family<T> {
    /// (prefix length, masked network bits -> value), sorted by prefix length, longest first.
    levels: Vec<(u8, HashMap<u128, T>)>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        Self {
            v4: Family { levels: Vec::new() },
            v6: Family { levels: Vec::new() },
        }
    }
}

impl<T: Copy + PartialEq> AllowedIps<T> {
    /// Inserts `net -> value`, replacing (and returning) a previous value for exactly `net`.
    pub(crate) fn insert(&mut self, net: IpNet, value: T) -> Option<T> {
        let (fam, bits, len, width) = self.split_mut(net);
        let key = mask(bits, len, width);
        let pos = match fam.levels.iter().position(|(l, _)| *l <= len) {
            Some(p) if fam.levels[p].0 == len => p,
            Some(p) => {
                fam.levels.insert(p, (len, HashMap::new()));
                p
            }
            None => {
                fam.levels.push((len, HashMap::new()));
                fam.levels.len() - 1
            }
        };
        fam.levels[pos].1.insert(key, value)
    }

    /// Removes every entry whose value is `value`.
    pub(crate) fn remove_value(&mut self, value: T) {
        for fam in [&mut self.v4, &mut self.v6] {
            for (_, map) in &mut fam.levels {
                map.retain(|_, v| *v != value);
            }
            fam.levels.retain(|(_, m)| !m.is_empty());
        }
    }

    /// The value of the longest prefix containing `addr`.
    pub(crate) fn lookup(&self, addr: IpAddr) -> Option<T> {
        let (fam, bits, width) = match addr {
            IpAddr::V4(a) => (&self.v4, u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (&self.v6, u128::from(a), 128),
        };
        fam.levels
            .iter()
            .find_map(|(len, map)| map.get(&mask(bits, *len, width)).copied())
    }

    fn split_mut(&mut self, net: IpNet) -> (&mut Family<T>, u128, u8, u8) {
        match net {
            IpNet::V4(n) => (
                &mut self.v4,
                u128::from(u32::from(n.network())),
                n.prefix_len(),
                32,
            ),
            IpNet::V6(n) => (&mut self.v6, u128::from(n.network()), n.prefix_len(), 128),
        }
    }
}

fn mask(bits: u128, len: u8, width: u8) -> u128 {
    if len == 0 {
        return 0;
    }
    let shift = u32::from(width - len);
    (bits >> shift) << shift
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_and_families_are_separate() {
        let mut t = AllowedIps::default();
        t.insert(net("10.0.0.0/8"), 1);
        t.insert(net("10.77.0.0/24"), 2);
        t.insert(net("10.77.0.2/32"), 3);
        t.insert(net("::/0"), 4);
        assert_eq!(t.lookup(ip("10.77.0.2")), Some(3));
        assert_eq!(t.lookup(ip("10.77.0.3")), Some(2));
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(1));
        assert_eq!(t.lookup(ip("11.0.0.1")), None);
        assert_eq!(t.lookup(ip("fd77::2")), Some(4));
        t.remove_value(3);
        assert_eq!(t.lookup(ip("10.77.0.2")), Some(2));
    }

    proptest! {
        #[test]
        fn lookup_matches_a_linear_scan(
            nets in proptest::collection::vec((any::<u32>(), 0u8..=32), 1..20),
            probes in proptest::collection::vec(any::<u32>(), 1..50),
        ) {
            let mut t = AllowedIps::default();
            let mut list: Vec<(ipnet::Ipv4Net, usize)> = Vec::new();
            for (i, (a, l)) in nets.iter().enumerate() {
                let n = ipnet::Ipv4Net::new((*a).into(), *l).unwrap().trunc();
                list.retain(|(m, _)| *m != n);
                list.push((n, i));
                t.insert(IpNet::V4(n), i);
            }
            for p in probes {
                let addr = std::net::Ipv4Addr::from(p);
                let want = list.iter().filter(|(n, _)| n.contains(&addr))
                    .max_by_key(|(n, _)| n.prefix_len()).map(|(_, v)| *v);
                prop_assert_eq!(t.lookup(IpAddr::V4(addr)), want);
            }
        }
    }
}
