//! `[directory]`: publishing this relay in the network's directory (docs/directory.md).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The keys `[directory]` may hold (any other is an error, as `deny_unknown_fields` elsewhere).
/// Read from the section's table by hand: one more serde-derived struct costs ~10 KB of flash.
const KEYS: [&str; 9] = [
    "announce",
    "public-address",
    "public-address-v6",
    "price-micros-per-gib",
    "country",
    "region",
    "abuse-contact",
    "announce-every-secs",
    "descriptor-ttl-secs",
];

/// `[directory]` as written (see config/agent.example.toml). Present = announce (unless
/// `announce = false`).
pub type Directory = toml::Table;

fn get_bool(t: &toml::Table, k: &str, default: bool) -> Result<bool> {
    match t.get(k) {
        None => Ok(default),
        Some(v) => v
            .as_bool()
            .with_context(|| format!("directory.{k}: must be true or false")),
    }
}

fn get_str<'a>(t: &'a toml::Table, k: &str) -> Result<Option<&'a str>> {
    match t.get(k) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .with_context(|| format!("directory.{k}: must be a string")),
    }
}

fn get_u64(t: &toml::Table, k: &str) -> Result<Option<u64>> {
    match t.get(k) {
        None => Ok(None),
        Some(v) => v
            .as_integer()
            .and_then(|i| u64::try_from(i).ok())
            .map(Some)
            .with_context(|| format!("directory.{k}: must be a non-negative integer")),
    }
}

/// Validated `[directory]`.
#[derive(Debug, Clone)]
pub struct DirectorySettings {
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
    let Some(t) = d else { return Ok(None) };
    if let Some(k) = t.keys().find(|k| !KEYS.contains(&k.as_str())) {
        bail!("directory: unknown key {k:?} (known: {})", KEYS.join(", "));
    }
    if !get_bool(t, "announce", true)? {
        return Ok(None);
    }
    let c = get_str(t, "country")?
        .unwrap_or("ZZ")
        .trim()
        .to_ascii_uppercase();
    let country: [u8; 2] = match c.as_bytes() {
        [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => [*a, *b],
        _ => bail!(
            "directory.country: {c:?} is not a two-letter ISO 3166 code like \"DE\" (ZZ = not declared)"
        ),
    };
    let region = get_str(t, "region")?.unwrap_or_default();
    let abuse_contact = get_str(t, "abuse-contact")?.unwrap_or_default();
    for (field, text, max) in [
        ("region", region, ferry_receipts::MAX_REGION_LEN),
        (
            "abuse-contact",
            abuse_contact,
            ferry_receipts::MAX_CONTACT_LEN,
        ),
    ] {
        if text.len() > max || !text.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            bail!("directory.{field}: at most {max} printable ASCII characters");
        }
    }
    let every = get_u64(t, "announce-every-secs")?.unwrap_or(600);
    let ttl = get_u64(t, "descriptor-ttl-secs")?.unwrap_or(1800);
    if !(60..=3600).contains(&every) {
        bail!("directory.announce-every-secs: must be in 60..=3600");
    }
    if ttl <= every || ttl > 3600 {
        bail!(
            "directory.descriptor-ttl-secs: must exceed announce-every-secs ({every}) and be at \
             most 3600 (the directory's limit)"
        );
    }
    let price = get_u64(t, "price-micros-per-gib")?;
    if price == Some(0) {
        bail!("directory.price-micros-per-gib: must be positive");
    }
    let public_address = match get_str(t, "public-address")? {
        Some(a) => match a.trim().parse::<Ipv4Addr>() {
            Ok(ip) if !ip.is_unspecified() && !ip.is_loopback() => Some(ip),
            _ => bail!("directory.public-address: {a:?} is not the router's public IPv4 address"),
        },
        None => None,
    };
    let public_address_v6 = match get_str(t, "public-address-v6")? {
        Some(a) => match a.trim().parse::<Ipv6Addr>() {
            Ok(ip) if !ip.is_unspecified() && !ip.is_loopback() => Some(ip),
            _ => bail!("directory.public-address-v6: {a:?} is not a public IPv6 address"),
        },
        None => None,
    };
    Ok(Some(DirectorySettings {
        public_address,
        public_address_v6,
        price_micros_per_gib: price,
        country,
        region: region.to_owned(),
        abuse_contact: abuse_contact.to_owned(),
        every: Duration::from_secs(every),
        ttl_secs: ttl,
    }))
}
