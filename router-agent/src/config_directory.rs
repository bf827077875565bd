//! `[directory]`: publishing this relay in the network's directory (docs/directory.md).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Deserialize;

/// `[directory]` as written. Present = announce (unless `announce = false`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Directory {
    /// Publish the descriptor on start and every `announce-every-secs`.
    #[serde(default = "yes")]
    pub announce: bool,
    /// Register the relay key with the ledger (self-registration, signed by the key) first.
    #[serde(default = "yes")]
    pub register: bool,
    /// Public IPv4 address clients reach the router on (port forwarding, static IP). Default:
    /// the address the router uses towards the ledger.
    #[serde(default)]
    pub public_address: Option<Ipv4Addr>,
    /// Public IPv6 address to announce as well (none by default).
    #[serde(default)]
    pub public_address_v6: Option<Ipv6Addr>,
    /// This relay's price, micros per GiB (default: the network price from the ledger).
    #[serde(default)]
    pub price_micros_per_gib: Option<u64>,
    /// ISO 3166-1 alpha-2 country, e.g. `DE` (`ZZ` = not declared).
    #[serde(default = "zz")]
    pub country: String,
    /// Region or city, free text (printable ASCII, at most 32).
    #[serde(default)]
    pub region: String,
    /// Where abuse reports go (mail address or URL, at most 64).
    #[serde(default)]
    pub abuse_contact: String,
    /// Re-announce interval.
    #[serde(default = "every")]
    pub announce_every_secs: u64,
    /// Descriptor validity (must exceed the interval: a missed announce keeps the listing).
    #[serde(default = "ttl")]
    pub descriptor_ttl_secs: u64,
}

fn yes() -> bool {
    true
}
fn zz() -> String {
    "ZZ".into()
}
fn every() -> u64 {
    600
}
fn ttl() -> u64 {
    1800
}

/// Validated `[directory]`.
#[derive(Debug, Clone)]
pub struct DirectorySettings {
    pub register: bool,
    pub public_address: Option<Ipv4Addr>,
    pub public_address_v6: Option<Ipv6Addr>,
    pub price_micros_per_gib: Option<u64>,
    pub country: [u8; 2],
    pub region: String,
    pub abuse_contact: String,
    pub every: Duration,
    pub ttl_secs: u64,
}

/// `None` when not announcing. Needs paid sessions and a ledger URL (checked by the caller).
pub fn validate(d: Option<&Directory>) -> Result<Option<DirectorySettings>> {
    let Some(d) = d.filter(|d| d.announce) else {
        return Ok(None);
    };
    let c = d.country.trim().to_ascii_uppercase();
    let country: [u8; 2] = match c.as_bytes() {
        [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => [*a, *b],
        _ => bail!(
            "directory.country: {:?} is not a two-letter ISO 3166 code like \"DE\" (ZZ = not declared)",
            d.country
        ),
    };
    for (field, text, max) in [
        ("region", &d.region, ferry_receipts::MAX_REGION_LEN),
        (
            "abuse-contact",
            &d.abuse_contact,
            ferry_receipts::MAX_CONTACT_LEN,
        ),
    ] {
        if text.len() > max || !text.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            bail!("directory.{field}: at most {max} printable ASCII characters");
        }
    }
    if !(60..=3600).contains(&d.announce_every_secs) {
        bail!("directory.announce-every-secs: must be in 60..=3600");
    }
    if d.descriptor_ttl_secs <= d.announce_every_secs || d.descriptor_ttl_secs > 3600 {
        bail!(
            "directory.descriptor-ttl-secs: must exceed announce-every-secs ({}) and be at most \
             3600 (the directory's limit)",
            d.announce_every_secs
        );
    }
    if d.price_micros_per_gib == Some(0) {
        bail!("directory.price-micros-per-gib: must be positive");
    }
    if d.public_address
        .is_some_and(|a| a.is_unspecified() || a.is_loopback())
    {
        bail!("directory.public-address: must be the router's public IPv4 address");
    }
    Ok(Some(DirectorySettings {
        register: d.register,
        public_address: d.public_address,
        public_address_v6: d.public_address_v6,
        price_micros_per_gib: d.price_micros_per_gib,
        country,
        region: d.region.clone(),
        abuse_contact: d.abuse_contact.clone(),
        every: Duration::from_secs(d.announce_every_secs),
        ttl_secs: d.descriptor_ttl_secs,
    }))
}
