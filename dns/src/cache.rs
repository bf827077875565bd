//! The lean backend's answer cache: at most `cache-size` entries, TTLs respected and counted
//! down, negative answers cached for the SOA minimum (RFC 2308).
//!
//! A plain struct without clock reads: callers pass `now`, so expiry is tested without sleeping.
//! Must not: hold anything longer than its TTL, or more than `capacity` entries.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Longest time a positive answer is kept (and the TTL clients see is capped to).
pub(crate) const MAX_POSITIVE_TTL: u32 = 86_400;
/// Longest time a negative answer (NXDOMAIN, NODATA) is kept.
pub(crate) const MAX_NEGATIVE_TTL: u32 = 300;

/// What the forwarder copies into its response: the upstream's response code, answer and
/// authority sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) rcode: ResponseCode,
    pub(crate) answers: Vec<Record>,
    pub(crate) authorities: Vec<Record>,
}

impl Answer {
    pub(crate) fn from_message(message: Message) -> Self {
        Self {
            rcode: message.metadata.response_code,
            answers: message.answers,
            authorities: message.authorities,
        }
    }

    /// Seconds this answer may be cached, `None` for not at all: the smallest answer TTL
    /// (capped at a day); for NXDOMAIN and NODATA the SOA's `min(ttl, minimum)` (capped at
    /// 5 minutes; no SOA: not cached).
    pub(crate) fn cache_ttl(&self) -> Option<u32> {
        let negative = self.rcode == ResponseCode::NXDomain || self.answers.is_empty();
        let mut ttl = if negative {
            let soa = self.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })?;
            soa.min(MAX_NEGATIVE_TTL)
        } else {
            MAX_POSITIVE_TTL
        };
        if let Some(min) = self.answers.iter().map(|r| r.ttl).min() {
            ttl = ttl.min(min);
        }
        match self.rcode {
            ResponseCode::NoError | ResponseCode::NXDomain if ttl > 0 => Some(ttl),
            _ => None,
        }
    }
}

impl Answer {
    /// Caps every record's TTL to [`Answer::cache_ttl`], so clients never keep a record
    /// longer than we would (e.g. an NXDOMAIN's SOA at its minimum, RFC 2308 section 3).
    pub(crate) fn cap_ttls(&mut self) {
        if let Some(ttl) = self.cache_ttl() {
            for record in self.answers.iter_mut().chain(&mut self.authorities) {
                record.ttl = record.ttl.min(ttl);
            }
        }
    }
}

struct Entry {
    answer: Answer,
    stored: Instant,
    expires: Instant,
}

/// Answers by (lower-cased name, type).
pub(crate) struct Cache {
    capacity: usize,
    entries: HashMap<(Name, RecordType), Entry>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// A cache of at most `capacity` entries (0: caches nothing).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
        }
    }

    /// Entries held (expired ones included until they are looked up or evicted).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The cached answer with every TTL reduced by the time it has been held, or `None` if
    /// there is none or it has expired (then it is dropped).
    pub(crate) fn get(&mut self, name: &Name, qtype: RecordType, now: Instant) -> Option<Answer> {
        let key = (name.to_lowercase(), qtype);
        let entry = self.entries.get(&key)?;
        if now >= entry.expires {
            self.entries.remove(&key);
            return None;
        }
        let held = now.saturating_duration_since(entry.stored).as_secs();
        let held = u32::try_from(held).unwrap_or(u32::MAX);
        let mut answer = entry.answer.clone();
        for record in answer.answers.iter_mut().chain(&mut answer.authorities) {
            record.ttl = record.ttl.saturating_sub(held);
        }
        Some(answer)
    }

    /// Stores `answer` if it is cacheable (see [`Answer::cache_ttl`]); record TTLs are capped
    /// to the entry's lifetime. When full: drops expired entries, then the one expiring first.
    pub(crate) fn insert(&mut self, name: &Name, qtype: RecordType, answer: &Answer, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        let Some(ttl) = answer.cache_ttl() else {
            return;
        };
        let key = (name.to_lowercase(), qtype);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.evict(now);
        }
        let mut answer = answer.clone();
        answer.cap_ttls();
        let entry = Entry {
            answer,
            stored: now,
            expires: now + Duration::from_secs(u64::from(ttl)),
        };
        self.entries.insert(key, entry);
    }

    fn evict(&mut self, now: Instant) {
        self.entries.retain(|_, e| e.expires > now);
        while self.entries.len() >= self.capacity {
            let Some(first) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            self.entries.remove(&first);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::str::FromStr;

    use hickory_proto::rr::rdata::{A, CNAME, SOA};

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn a(owner: &str, ttl: u32, ip: [u8; 4]) -> Record {
        Record::from_rdata(name(owner), ttl, RData::A(A(ip.into())))
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let soa = SOA::new(
            name("ns.ferry.test."),
            name("hostmaster.ferry.test."),
            1,
            3600,
            600,
            86400,
            minimum,
        );
        Record::from_rdata(name("ferry.test."), ttl, RData::SOA(soa))
    }

    fn positive(ttl: u32) -> Answer {
        Answer {
            rcode: ResponseCode::NoError,
            answers: vec![
                Record::from_rdata(
                    name("www.ferry.test."),
                    ttl + 100,
                    RData::CNAME(CNAME(name("x.ferry.test."))),
                ),
                a("x.ferry.test.", ttl, [192, 0, 2, 1]),
            ],
            authorities: Vec::new(),
        }
    }

    fn nxdomain(soa_ttl: u32, minimum: u32) -> Answer {
        Answer {
            rcode: ResponseCode::NXDomain,
            answers: Vec::new(),
            authorities: vec![soa(soa_ttl, minimum)],
        }
    }

    #[test]
    fn cache_ttl_follows_the_records() {
        assert_eq!(positive(60).cache_ttl(), Some(60), "smallest answer TTL");
        assert_eq!(positive(10 * 86_400).cache_ttl(), Some(MAX_POSITIVE_TTL));
        assert_eq!(positive(0).cache_ttl(), None, "TTL 0 is not cached");
        assert_eq!(nxdomain(3600, 60).cache_ttl(), Some(60), "SOA minimum");
        assert_eq!(nxdomain(30, 60).cache_ttl(), Some(30), "SOA's own TTL");
        assert_eq!(nxdomain(3600, 86_400).cache_ttl(), Some(MAX_NEGATIVE_TTL));
        let nodata = Answer {
            rcode: ResponseCode::NoError,
            ..nxdomain(3600, 45)
        };
        assert_eq!(nodata.cache_ttl(), Some(45), "NODATA is negative too");
        let no_soa = Answer {
            authorities: Vec::new(),
            ..nxdomain(3600, 60)
        };
        assert_eq!(no_soa.cache_ttl(), None);
        let servfail = Answer {
            rcode: ResponseCode::ServFail,
            ..positive(60)
        };
        assert_eq!(servfail.cache_ttl(), None);
    }

    #[test]
    fn hits_count_ttls_down_and_expire_on_time() {
        let t0 = Instant::now();
        let mut cache = Cache::new(8);
        let www = name("www.ferry.test.");
        cache.insert(&www, RecordType::A, &positive(60), t0);
        let fresh = cache.get(&www, RecordType::A, t0).unwrap();
        // The CNAME's TTL (160) is capped to the entry's lifetime.
        assert_eq!(
            fresh.answers.iter().map(|r| r.ttl).collect::<Vec<_>>(),
            [60, 60]
        );
        let later = cache
            .get(&www, RecordType::A, t0 + Duration::from_millis(25_900))
            .unwrap();
        assert_eq!(
            later.answers.iter().map(|r| r.ttl).collect::<Vec<_>>(),
            [35, 35]
        );
        assert!(
            cache
                .get(&www, RecordType::AAAA, t0 + Duration::from_secs(1))
                .is_none(),
            "type is part of the key"
        );
        assert!(
            cache
                .get(
                    &name("WWW.Ferry.TEST."),
                    RecordType::A,
                    t0 + Duration::from_secs(59)
                )
                .is_some(),
            "names are case-insensitive"
        );
        assert!(
            cache
                .get(&www, RecordType::A, t0 + Duration::from_secs(60))
                .is_none()
        );
        assert_eq!(cache.len(), 0, "expired entry dropped on lookup");
    }

    #[test]
    fn negative_answers_expire_at_the_soa_minimum() {
        let t0 = Instant::now();
        let mut cache = Cache::new(8);
        let missing = name("missing.ferry.test.");
        cache.insert(&missing, RecordType::A, &nxdomain(3600, 60), t0);
        let hit = cache
            .get(&missing, RecordType::A, t0 + Duration::from_secs(59))
            .unwrap();
        assert_eq!(hit.rcode, ResponseCode::NXDomain);
        assert_eq!(hit.authorities[0].ttl, 1, "SOA TTL capped to 60, 59 s held");
        assert!(
            cache
                .get(&missing, RecordType::A, t0 + Duration::from_secs(60))
                .is_none()
        );
    }

    #[test]
    fn size_bound_holds_evicting_expired_then_soonest() {
        let t0 = Instant::now();
        let mut cache = Cache::new(4);
        for i in 0..4u8 {
            let ttl = 10 + u32::from(i) * 100;
            let answer = Answer {
                answers: vec![a("x.ferry.test.", ttl, [192, 0, 2, i])],
                ..positive(1)
            };
            cache.insert(&name(&format!("n{i}.test.")), RecordType::A, &answer, t0);
        }
        assert_eq!(cache.len(), 4);
        // Full; n0 (10 s) has expired at t0+20s: only it goes.
        let t1 = t0 + Duration::from_secs(20);
        cache.insert(&name("n4.test."), RecordType::A, &positive(1000), t1);
        assert_eq!(cache.len(), 4);
        assert!(cache.get(&name("n1.test."), RecordType::A, t1).is_some());
        assert!(cache.get(&name("n4.test."), RecordType::A, t1).is_some());
        // Full, nothing expired: the entry expiring first (n1, 110 s) goes.
        cache.insert(&name("n5.test."), RecordType::A, &positive(1000), t1);
        assert_eq!(cache.len(), 4);
        assert!(cache.get(&name("n1.test."), RecordType::A, t1).is_none());
        for n in ["n2.test.", "n3.test.", "n4.test.", "n5.test."] {
            assert!(cache.get(&name(n), RecordType::A, t1).is_some(), "{n}");
        }
        // Replacing an existing key never evicts.
        cache.insert(&name("n5.test."), RecordType::A, &positive(500), t1);
        assert_eq!(cache.len(), 4);
        // Many more names: still at most 4.
        for i in 0..100 {
            cache.insert(
                &name(&format!("m{i}.test.")),
                RecordType::A,
                &positive(30),
                t1,
            );
            assert!(cache.len() <= 4);
        }
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let t0 = Instant::now();
        let mut cache = Cache::new(0);
        cache.insert(&name("a.test."), RecordType::A, &positive(60), t0);
        assert_eq!(cache.len(), 0);
        assert!(cache.get(&name("a.test."), RecordType::A, t0).is_none());
    }
}
