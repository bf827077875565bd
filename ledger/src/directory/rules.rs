//! The directory's pure rules: which descriptors it accepts, what it says about an announce,
//! and the quality score. No I/O and no clock: times are arguments.

use std::net::{IpAddr, SocketAddr};

use ferry_receipts::{DecodeError, DirectoryAnnotation, NetworkId, RelayDescriptor, VerifyError};

/// The directory's tunables (config `[directory]`).
#[derive(Debug, Clone)]
pub struct DirectoryParams {
    /// Network served.
    pub network_id: NetworkId,
    /// Lowest price a relay may ask.
    pub min_price_micros_per_gib: u64,
    /// Highest price a relay may ask.
    pub max_price_micros_per_gib: u64,
    /// Longest descriptor validity accepted (`expires_at - issued_at`).
    pub max_ttl_secs: u64,
    /// Clock difference allowed between relay and ledger.
    pub skew_secs: u64,
    /// A relay whose endpoints are unchanged is probed again only after this long (the
    /// last probe's result is reused); a changed endpoint this soon is refused.
    pub min_probe_interval_secs: u64,
    /// Most listings one query returns.
    pub max_list: usize,
}

/// Why an announce was refused (nothing was stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnnounceError {
    /// Not a descriptor encoding.
    #[error("malformed descriptor: {0}")]
    Decode(DecodeError),
    /// Signature, network or validity window did not verify.
    #[error("descriptor does not verify: {0}")]
    Verify(VerifyError),
    /// The relay key is not registered.
    #[error("relay key is not registered; register it first (POST /v1/keys)")]
    UnknownRelay,
    /// The price is outside the network's bounds.
    #[error("price {price} micros/GiB is outside this network's {min}..={max}")]
    Price {
        /// Asked.
        price: u64,
        /// Lowest allowed.
        min: u64,
        /// Highest allowed.
        max: u64,
    },
    /// The descriptor is valid for longer than the directory accepts.
    #[error("descriptor valid for {ttl} s; this directory accepts at most {max} s")]
    TooLong {
        /// Asked.
        ttl: u64,
        /// Allowed.
        max: u64,
    },
    /// The endpoints changed too soon after the last probe.
    #[error("endpoints changed {since} s after the last probe; retry in {retry} s")]
    TooSoon {
        /// Seconds since the last probe.
        since: u64,
        /// Seconds until a new probe is allowed.
        retry: u64,
    },
}

/// Why a client's refusal report was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefusalError {
    /// Not a `ReceiptRefusal` encoding.
    #[error("malformed refusal: {0}")]
    Decode(DecodeError),
    /// A signature or the network did not verify.
    #[error("refusal does not verify: {0}")]
    Verify(VerifyError),
    /// The relay or the client key is not registered.
    #[error("relay or client key is not registered")]
    UnknownKey,
    /// The refused receipt names no voucher of this client: only a paying client's refusal
    /// counts.
    #[error("the refused receipt is not paid by a voucher of this client")]
    NotPaid,
}

impl RefusalError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Decode(_) => "malformed_refusal",
            Self::Verify(_) => "refusal_not_verified",
            Self::UnknownKey => "unknown_key",
            Self::NotPaid => "refusal_not_paid",
        }
    }
}

impl AnnounceError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Decode(_) => "malformed_descriptor",
            Self::Verify(_) => "descriptor_not_verified",
            Self::UnknownRelay => "unknown_relay",
            Self::Price { .. } => "price_out_of_range",
            Self::TooLong { .. } => "descriptor_too_long_lived",
            Self::TooSoon { .. } => "announce_too_soon",
        }
    }
}

/// Decodes and checks a descriptor against the network's rules at `now` (registration is
/// the caller's check: it needs the store).
pub fn admit(
    p: &DirectoryParams,
    bytes: &[u8],
    now: u64,
) -> Result<RelayDescriptor, AnnounceError> {
    let d = RelayDescriptor::decode(bytes).map_err(AnnounceError::Decode)?;
    d.verify(&p.network_id, now, p.skew_secs)
        .map_err(AnnounceError::Verify)?;
    let price = d.price_micros_per_gib;
    if price < p.min_price_micros_per_gib || price > p.max_price_micros_per_gib {
        return Err(AnnounceError::Price {
            price,
            min: p.min_price_micros_per_gib,
            max: p.max_price_micros_per_gib,
        });
    }
    let ttl = d.expires_at - d.issued_at;
    if ttl > p.max_ttl_secs {
        return Err(AnnounceError::TooLong {
            ttl,
            max: p.max_ttl_secs,
        });
    }
    Ok(d)
}

/// One finding about an announce, said to the relay operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The probe to this endpoint's Hello port got no answer.
    HelloPortClosed(SocketAddr),
    /// The announced IPv4 address is not the one the announce came from.
    AddressMismatch {
        /// Announced.
        announced: IpAddr,
        /// Seen by the directory.
        seen: IpAddr,
    },
    /// The announced address is private, shared (CGNAT) or otherwise not public.
    NotPublic(IpAddr),
}

impl Finding {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::HelloPortClosed(_) => "hello_port_closed",
            Self::AddressMismatch { .. } => "address_mismatch",
            Self::NotPublic(_) => "address_not_public",
        }
    }

    /// What it means and what to do, in words.
    pub fn message(&self) -> String {
        match self {
            Self::HelloPortClosed(e) => format!(
                "Hello port closed: the directory's probe to UDP {e} got no answer; forward \
                 that port (and the WireGuard port) to the router, or open it in the firewall"
            ),
            Self::AddressMismatch { announced, seen } => format!(
                "endpoint address {announced} differs from the address you announced from \
                 ({seen}): behind another NAT or CGNAT? Set [directory] public-address, or map \
                 the ports on the upstream router"
            ),
            Self::NotPublic(a) => format!(
                "endpoint address {a} is private or shared (RFC 1918, 100.64.0.0/10, ...): \
                 clients on the internet cannot reach it"
            ),
        }
    }
}

/// What the directory finds about `d` announced from `seen`, given which endpoints answered.
pub fn findings(
    d: &RelayDescriptor,
    seen: IpAddr,
    answered_v4: bool,
    answered_v6: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let hello = |a: SocketAddr| SocketAddr::new(a.ip(), d.hello_port);
    if let Some(v4) = d.ipv4 {
        let ip = IpAddr::V4(*v4.ip());
        if !is_public(ip) {
            out.push(Finding::NotPublic(ip));
        }
        if let IpAddr::V4(s) = canonical(seen)
            && s != *v4.ip()
        {
            out.push(Finding::AddressMismatch {
                announced: ip,
                seen,
            });
        }
        if !answered_v4 {
            out.push(Finding::HelloPortClosed(hello(SocketAddr::V4(v4))));
        }
    }
    if let Some(v6) = d.ipv6
        && !answered_v6
    {
        out.push(Finding::HelloPortClosed(hello(SocketAddr::V6(v6))));
    }
    out
}

/// `::ffff:a.b.c.d` as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Globally routable unicast (not private, shared, loopback, link-local, documentation...).
/// Test networks built from private ranges see a `NotPublic` finding but are still listed
/// when the probe answers: reachability is what decides.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] == 0
                || o[0] >= 240)
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// One client's paid use of a relay and of the others (the store sums sessions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientUsage {
    /// Bytes credited to this relay from the client's sessions.
    pub bytes_here: u64,
    /// Sessions of the client on this relay with at least one credited receipt.
    pub sessions_here: u64,
    /// Bytes credited to every other relay from the client's sessions.
    pub bytes_elsewhere: u64,
}

/// The paid-use factors of the score (shown in the annotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Factors {
    /// Σ over clients of min(bytes here, bytes elsewhere).
    pub paid_bytes: u64,
    /// Sessions of clients that count (bytes elsewhere > 0).
    pub completed_sessions: u64,
    /// Clients that count.
    pub paying_clients: u32,
    /// Receipts paying clients refused.
    pub refusals: u32,
}

impl Factors {
    /// `a` with these factors and `score` in it (unsigned: the caller signs).
    pub fn annotate(&self, a: DirectoryAnnotation, score: u16) -> DirectoryAnnotation {
        DirectoryAnnotation {
            score,
            paid_bytes: self.paid_bytes,
            completed_sessions: self.completed_sessions,
            paying_clients: self.paying_clients,
            refusals: self.refusals,
            signature: ferry_receipts::Signature::ZERO,
            ..a
        }
    }
}

/// Paid use, discounted against self-dealing: a relay operator can pay its own relay with
/// its own client keys at no cost (the credit comes back to it), so a client's bytes count
/// for a relay only up to what the same client paid *other* relays. Raising a score by X
/// bytes then costs X bytes bought from someone else.
pub fn factors(usage: &[ClientUsage], refusals: u32) -> Factors {
    let mut f = Factors {
        refusals,
        ..Factors::default()
    };
    for u in usage {
        let counted = u.bytes_here.min(u.bytes_elsewhere);
        if counted == 0 {
            continue;
        }
        f.paid_bytes = f.paid_bytes.saturating_add(counted);
        f.completed_sessions = f.completed_sessions.saturating_add(u.sessions_here);
        f.paying_clients = f.paying_clients.saturating_add(1);
    }
    f
}

const GIB: f64 = (1u64 << 30) as f64;

/// The quality score, 0..=1000:
///
/// `1000 × reach × (0.4 + 0.3 × clients + 0.3 × volume) × honesty`, where
/// - `reach` = probes answered / probes sent (0 when never probed),
/// - `clients` = log2(1 + paying clients) / log2(1 + 32), at most 1,
/// - `volume` = log2(1 + paid GiB) / log2(1 + 1024), at most 1,
/// - `honesty` = 1 − min(1, 10 × refusals / (paying clients + refusals)).
///
/// A new reachable relay starts at 400; paid use by independent clients raises it.
pub fn score(f: &Factors, probes_ok: u32, probes_total: u32) -> u16 {
    if probes_total == 0 {
        return 0;
    }
    let reach = f64::from(probes_ok) / f64::from(probes_total);
    let clients = ((1.0 + f64::from(f.paying_clients)).log2() / 33f64.log2()).min(1.0);
    let volume = ((1.0 + f.paid_bytes as f64 / GIB).log2() / 1025f64.log2()).min(1.0);
    let judged = f64::from(f.paying_clients) + f64::from(f.refusals);
    let honesty = if judged == 0.0 {
        1.0
    } else {
        1.0 - (10.0 * f64::from(f.refusals) / judged).min(1.0)
    };
    let s = 1000.0 * reach * (0.4 + 0.3 * clients + 0.3 * volume) * honesty;
    s.round().clamp(0.0, 1000.0) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(here: u64, elsewhere: u64) -> ClientUsage {
        ClientUsage {
            bytes_here: here,
            sessions_here: 1,
            bytes_elsewhere: elsewhere,
        }
    }

    #[test]
    fn a_relays_own_clients_that_pay_nobody_else_do_not_count() {
        let own = [usage(500 << 30, 0), usage(100 << 30, 0)];
        let f = factors(&own, 0);
        assert_eq!(f, Factors::default());
        assert_eq!(score(&f, 10, 10), score(&Factors::default(), 10, 10));
        // An independent client counts up to what it paid elsewhere.
        let f = factors(&[usage(10 << 30, 3 << 30), usage(1 << 30, 0)], 0);
        assert_eq!((f.paid_bytes, f.paying_clients), (3 << 30, 1));
        assert!(score(&f, 10, 10) > score(&Factors::default(), 10, 10));
    }

    #[test]
    fn score_rises_with_reach_and_use_and_falls_with_refusals() {
        let none = Factors::default();
        assert_eq!(score(&none, 0, 0), 0);
        assert_eq!(score(&none, 1, 1), 400);
        assert_eq!(score(&none, 1, 2), 200);
        let used = Factors {
            paid_bytes: 1024 << 30,
            completed_sessions: 50,
            paying_clients: 32,
            refusals: 0,
        };
        assert_eq!(score(&used, 4, 4), 1000);
        let refused = Factors {
            refusals: 2,
            ..used
        };
        assert!(score(&refused, 4, 4) < 500, "{}", score(&refused, 4, 4));
        let worst = Factors {
            refusals: 30,
            ..used
        };
        assert_eq!(score(&worst, 4, 4), 0);
    }

    #[test]
    fn findings_name_a_closed_port_and_an_address_from_elsewhere() {
        let mut d = ferry_receipts::RelayDescriptor {
            network_id: NetworkId([1; 16]),
            relay_key: ferry_receipts::PublicKey([0; 32]),
            wg_key: [0; 32],
            ipv4: Some("203.0.113.5:51820".parse().unwrap()),
            ipv6: None,
            hello_port: 51821,
            price_micros_per_gib: 1,
            limits: ferry_receipts::AdvertisedLimits::unlimited(),
            country: *b"ZZ",
            region: String::new(),
            software: String::new(),
            abuse_contact: String::new(),
            issued_at: 1,
            expires_at: 2,
            signature: ferry_receipts::Signature::ZERO,
        };
        let seen: IpAddr = "198.51.100.9".parse().unwrap();
        let f = findings(&d, seen, false, false);
        let codes: Vec<_> = f.iter().map(Finding::code).collect();
        assert_eq!(
            codes,
            [
                "address_not_public",
                "address_mismatch",
                "hello_port_closed"
            ]
        );
        assert!(f[2].message().contains("203.0.113.5:51821"));
        assert!(f[1].message().contains("CGNAT"));
        d.ipv4 = Some("81.2.69.160:51820".parse().unwrap());
        let mapped: IpAddr = "::ffff:81.2.69.160".parse().unwrap();
        assert!(findings(&d, mapped, true, false).is_empty());
        assert!(!is_public("100.64.1.1".parse().unwrap()));
        assert!(!is_public("fd00::1".parse().unwrap()));
        assert!(is_public("2a00:1450::1".parse().unwrap()));
    }
}
