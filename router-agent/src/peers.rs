//! Trusted-peer management on the config file: `add-peer`, `peers`, `export-client`.

use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ferry_keys::{WgPrivateKey, WgPublicKey, WriteMode};
use ferry_relay_core::IpNet;

use crate::config::{Config, Validated, parse_cidr};

pub(crate) fn add_peer(
    config: &Path,
    public_key: Option<String>,
    generate_key: Option<&Path>,
    allowed_ips: &[String],
    name: Option<String>,
) -> Result<()> {
    let current = Config::load(config)?;
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let generated = match generate_key {
        Some(_) => Some(WgPrivateKey::generate().context("generating peer key")?),
        None => None,
    };
    let public_key = match (&generated, public_key) {
        (Some(k), _) => k.public_key(),
        (None, Some(s)) => WgPublicKey::from_base64(&s).context("--public-key")?,
        (None, None) => bail!("--public-key or --generate-key is required"),
    };
    let nets: Vec<IpNet> = if allowed_ips.is_empty() {
        next_free(&current)?
    } else {
        allowed_ips
            .iter()
            .map(|s| parse_cidr(s))
            .collect::<Result<_>>()
            .context("--allowed-ip")?
    };
    let name = name.unwrap_or_else(|| format!("peer-{}", current.peers.len() + 1));
    let updated = append_peer(&text, &name, &public_key, &nets)?;
    // Validate the result exactly as `run` would before touching the file.
    Config::parse(&updated, config.parent().unwrap_or(Path::new(".")))
        .context("the config would become invalid")?;
    if let (Some(k), Some(path)) = (&generated, generate_key) {
        k.write_to(path, WriteMode::CreateNew)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    write_atomically(config, &updated)?;
    let ips: Vec<String> = nets.iter().map(ToString::to_string).collect();
    writeln!(
        std::io::stdout().lock(),
        "added peer {name} ({public_key}) with {}",
        ips.join(", ")
    )?;
    Ok(())
}

/// `remove-peer NAME`: drops that `[[peer]]` table (comments elsewhere kept), validates the
/// result like `run`, and replaces the file atomically.
pub(crate) fn remove_peer(config: &Path, name: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let updated = without_peer(&text, name).with_context(|| format!("{}", config.display()))?;
    Config::parse(&updated, config.parent().unwrap_or(Path::new(".")))
        .context("the config would become invalid")?;
    write_atomically(config, &updated)?;
    writeln!(
        std::io::stdout().lock(),
        "removed peer {name}; a running agent drops it on SIGHUP (`kill -HUP <pid>`, or \
         `/etc/init.d/ferry reload` on OpenWrt)"
    )?;
    Ok(())
}

fn without_peer(text: &str, name: &str) -> Result<String> {
    let mut doc: toml_edit::DocumentMut = text.parse().context("parsing config as TOML")?;
    let Some(aot) = doc
        .get_mut("peer")
        .and_then(toml_edit::Item::as_array_of_tables_mut)
    else {
        bail!("no [[peer]] named {name:?} (the config has no peers)");
    };
    let names: Vec<String> = aot
        .iter()
        .map(|t| {
            t.get("name")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    let Some(i) = names.iter().position(|n| n == name) else {
        bail!("no [[peer]] named {name:?} (peers: {})", names.join(", "));
    };
    aot.remove(i);
    if aot.is_empty() {
        doc.remove("peer");
    }
    Ok(doc.to_string())
}

/// Appends a `[[peer]]` table, keeping the rest of the document (comments included) intact.
fn append_peer(text: &str, name: &str, key: &WgPublicKey, nets: &[IpNet]) -> Result<String> {
    let mut doc: toml_edit::DocumentMut = text.parse().context("parsing config as TOML")?;
    let mut table = toml_edit::Table::new();
    table.insert("name", toml_edit::value(name));
    table.insert("public-key", toml_edit::value(key.to_base64()));
    let mut arr = toml_edit::Array::new();
    for n in nets {
        arr.push(n.to_string());
    }
    table.insert("allowed-ips", toml_edit::value(arr));
    match doc.get_mut("peer") {
        None => {
            // The document's trailing comments follow the last section's keys (often its
            // commented-out options): keep them there, above the new table, not after it.
            let trailing = doc.trailing().as_str().unwrap_or("").to_owned();
            if !trailing.trim().is_empty() {
                let sep = if trailing.ends_with('\n') {
                    "\n"
                } else {
                    "\n\n"
                };
                table.decor_mut().set_prefix(format!("{trailing}{sep}"));
                doc.set_trailing("");
            } else {
                table.decor_mut().set_prefix("\n");
            }
            let mut aot = toml_edit::ArrayOfTables::new();
            aot.push(table);
            doc.insert("peer", toml_edit::Item::ArrayOfTables(aot));
        }
        Some(item) => match item.as_array_of_tables_mut() {
            Some(aot) => aot.push(table),
            None => bail!("`peer` in the config is not an array of tables ([[peer]])"),
        },
    }
    Ok(doc.to_string())
}

/// The first address of each tunnel subnet's trusted pool (`pools.rs`) not used by the relay
/// or any peer; paid sessions draw from the other pool, so this never collides with one.
fn next_free(cfg: &Validated) -> Result<Vec<IpNet>> {
    let used: Vec<IpAddr> = cfg
        .address
        .iter()
        .map(IpNet::addr)
        .chain(
            cfg.peers
                .iter()
                .flat_map(|p| p.allowed_ips.iter().map(IpNet::addr)),
        )
        .collect();
    let mut out = Vec::new();
    for subnet in &cfg.address {
        let (first, count) = crate::pools::trusted_range(subnet);
        let host = (0..count.min(1 << 16))
            .filter_map(|off| crate::pools::host_at(subnet, first + off))
            .find(|a| !used.contains(a));
        match host {
            Some(a) => out.push(IpNet::from(a)),
            None => bail!(
                "no free address in the trusted-peer part of {subnet} (its first quarter); \
                 pass --allowed-ip or widen the subnet"
            ),
        }
    }
    Ok(out)
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("toml.tmp");
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0o644);
    {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

pub(crate) fn list(config: &Path) -> Result<()> {
    let cfg = Config::load(config)?;
    let mut out = String::new();
    let _ = writeln!(out, "{:<20} {:<44} allowed-ips", "name", "public-key");
    for p in &cfg.peers {
        let ips: Vec<String> = p.allowed_ips.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "{:<20} {:<44} {}",
            p.name,
            p.public_key,
            ips.join(", ")
        );
    }
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(())
}

pub(crate) fn export_client(
    config: &Path,
    peer: &str,
    endpoint: &str,
    private_key_file: Option<&Path>,
    dns: Option<&str>,
) -> Result<()> {
    let cfg = Config::load(config)?;
    let p = cfg
        .peers
        .iter()
        .find(|p| p.name == peer)
        .with_context(|| format!("no peer named {peer:?} in {}", config.display()))?;
    if !endpoint.contains(':') || endpoint.ends_with(':') {
        bail!("--endpoint must be host:port, got {endpoint:?}");
    }
    let relay_key = WgPrivateKey::load(&cfg.private_key_file)
        .with_context(|| format!("loading relay key {}", cfg.private_key_file.display()))?;
    let client_key = match private_key_file {
        Some(path) => {
            let k =
                WgPrivateKey::load(path).with_context(|| format!("loading {}", path.display()))?;
            if k.public_key() != p.public_key {
                bail!(
                    "{} does not belong to peer {peer:?} (public key differs)",
                    path.display()
                );
            }
            k.to_base64().to_string()
        }
        None => "<client private key: the one whose public key is in the relay config>".to_owned(),
    };
    let text = render_client(
        &cfg,
        &p.allowed_ips,
        &client_key,
        &relay_key.public_key(),
        endpoint,
        dns,
    );
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

fn render_client(
    cfg: &Validated,
    addresses: &[IpNet],
    client_key: &str,
    relay_pub: &WgPublicKey,
    endpoint: &str,
    dns: Option<&str>,
) -> String {
    let addrs: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    let has_v6 = addresses.iter().any(|a| a.addr().is_ipv6());
    let allowed = if has_v6 {
        "0.0.0.0/0, ::/0"
    } else {
        "0.0.0.0/0"
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# wg-quick config generated by ferry-agent export-client"
    );
    let _ = writeln!(s, "[Interface]");
    let _ = writeln!(s, "PrivateKey = {client_key}");
    let _ = writeln!(s, "Address = {}", addrs.join(", "));
    let _ = writeln!(s, "MTU = {}", cfg.mtu);
    if let Some(d) = dns {
        let _ = writeln!(s, "DNS = {d}");
    }
    let _ = writeln!(s, "\n[Peer]");
    let _ = writeln!(s, "PublicKey = {relay_pub}");
    let _ = writeln!(s, "Endpoint = {endpoint}");
    let _ = writeln!(s, "AllowedIPs = {allowed}");
    let _ = writeln!(s, "PersistentKeepalive = 25");
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BASE: &str = "# my relay\n[wireguard]\nprivate-key-file = \"wg.key\" # keep\naddress = [\"10.77.0.1/24\", \"fd77::1/64\"]\n";

    #[test]
    fn add_peer_keeps_comments_and_picks_next_free_addresses() {
        let cfg = Config::parse(BASE, Path::new("/")).unwrap();
        let nets = next_free(&cfg).unwrap();
        assert_eq!(nets[0].to_string(), "10.77.0.2/32");
        assert_eq!(nets[1].to_string(), "fd77::2/128");
        let key = WgPrivateKey::from_bytes(&[7; 32]).public_key();
        let text = append_peer(BASE, "laptop", &key, &nets).unwrap();
        assert!(text.starts_with("# my relay\n"));
        assert!(text.contains("# keep"));
        let cfg = Config::parse(&text, Path::new("/")).unwrap();
        assert_eq!(cfg.peers.len(), 1);
        assert_eq!(cfg.peers[0].public_key, key);
        let nets = next_free(&cfg).unwrap();
        assert_eq!(nets[0].to_string(), "10.77.0.3/32");
        let key2 = WgPrivateKey::from_bytes(&[8; 32]).public_key();
        let text = append_peer(&text, "phone", &key2, &nets).unwrap();
        let cfg = Config::parse(&text, Path::new("/")).unwrap();
        assert_eq!(
            cfg.peers
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["laptop", "phone"]
        );
    }

    #[test]
    fn a_new_peer_goes_after_the_comments_that_belong_to_the_last_section() {
        // Commented keys of the last section stay with it: uncommenting them later must not
        // land them inside the new [[peer]].
        let text = format!("{BASE}[paid]\nenabled = false\n# hello-listen = \"0.0.0.0:51821\"\n");
        let key = WgPrivateKey::from_bytes(&[7; 32]).public_key();
        let nets = next_free(&Config::parse(&text, Path::new("/")).unwrap()).unwrap();
        let out = append_peer(&text, "laptop", &key, &nets).unwrap();
        let comment = out.find("# hello-listen").unwrap();
        assert!(comment < out.find("[[peer]]").unwrap(), "{out}");
        let uncommented = out.replace("# hello-listen", "hello-listen");
        let cfg = Config::parse(&uncommented, Path::new("/")).unwrap();
        assert_eq!(cfg.peers.len(), 1, "{uncommented}");
        // A commented-out section at the end stays a section of its own.
        let text = format!("{BASE}\n# [paid]\n# enabled = false\n");
        let out = append_peer(&text, "laptop", &key, &nets).unwrap();
        let un = out
            .replace("# [paid]", "[paid]")
            .replace("# enabled", "enabled");
        assert_eq!(
            Config::parse(&un, Path::new("/")).unwrap().peers.len(),
            1,
            "{un}"
        );
    }

    #[test]
    fn remove_peer_drops_exactly_that_peer_and_keeps_the_rest() {
        let key = WgPrivateKey::from_bytes(&[7; 32]).public_key();
        let key2 = WgPrivateKey::from_bytes(&[8; 32]).public_key();
        let cfg = Config::parse(BASE, Path::new("/")).unwrap();
        let t = append_peer(BASE, "laptop", &key, &next_free(&cfg).unwrap()).unwrap();
        let nets = next_free(&Config::parse(&t, Path::new("/")).unwrap()).unwrap();
        let t = append_peer(&t, "phone", &key2, &nets).unwrap();
        let out = without_peer(&t, "laptop").unwrap();
        assert!(out.contains("# keep"));
        let cfg = Config::parse(&out, Path::new("/")).unwrap();
        assert_eq!(cfg.peers.len(), 1);
        assert_eq!(cfg.peers[0].name, "phone");
        let err = without_peer(&out, "laptop").unwrap_err().to_string();
        assert!(err.contains("peers: phone"), "{err}");
        let none = without_peer(&out, "phone").unwrap();
        assert!(
            Config::parse(&none, Path::new("/"))
                .unwrap()
                .peers
                .is_empty()
        );
        assert!(!none.contains("[[peer]]"));
    }

    #[test]
    fn add_and_export_round_trip_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("agent.toml");
        std::fs::write(&cfg_path, BASE).unwrap();
        let relay = WgPrivateKey::generate().unwrap();
        relay
            .write_to(&dir.path().join("wg.key"), WriteMode::CreateNew)
            .unwrap();
        let client_key = dir.path().join("laptop.key");
        add_peer(
            &cfg_path,
            None,
            Some(&client_key),
            &[],
            Some("laptop".into()),
        )
        .unwrap();
        let cfg = Config::load(&cfg_path).unwrap();
        let ck = WgPrivateKey::load(&client_key).unwrap();
        assert_eq!(cfg.peers[0].public_key, ck.public_key());
        let text = render_client(
            &cfg,
            &cfg.peers[0].allowed_ips,
            &ck.to_base64(),
            &relay.public_key(),
            "relay.example:51820",
            None,
        );
        assert!(text.contains(&format!("PublicKey = {}", relay.public_key())));
        assert!(text.contains("Address = 10.77.0.2/32, fd77::2/128"));
        assert!(text.contains("AllowedIPs = 0.0.0.0/0, ::/0"));
        assert!(text.contains("Endpoint = relay.example:51820"));
        // A duplicate address is refused and the file is left unchanged.
        let before = std::fs::read_to_string(&cfg_path).unwrap();
        let other = WgPrivateKey::generate().unwrap().public_key().to_base64();
        assert!(add_peer(&cfg_path, Some(other), None, &["10.77.0.2/32".into()], None).is_err());
        assert_eq!(std::fs::read_to_string(&cfg_path).unwrap(), before);
    }
}
