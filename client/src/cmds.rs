//! Command dispatch and the small commands (keys, vouchers, status, export-wg, disconnect).

use std::io::Write as _;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferry_keys::{IdentityKey, WgPrivateKey, WriteMode};

use crate::cli::{Cli, Cmd, VoucherCmd};
use crate::config::Config;
pub(crate) use crate::paths::Paths;
use crate::status::Status;

/// Runs one command.
pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    let paths = Paths::from_cli(&cli);
    match cli.cmd {
        Cmd::Keygen { force } => keygen(&paths.dir, force),
        Cmd::Pubkey => pubkey(&paths),
        Cmd::Voucher { cmd } => voucher(&paths, cmd),
        Cmd::Balance { ledger, json } => balance(&paths, ledger, json),
        Cmd::Register { ledger } => register(&paths, ledger),
        Cmd::Relays {
            ledger,
            country,
            max_price,
            min_score,
            ipv6,
            min_mbit,
            limit,
            json,
        } => {
            let f = crate::relays::Filters {
                country,
                max_price,
                min_score,
                ipv6,
                limit,
                min_mbit,
            };
            relays(&paths, ledger, &f, json)
        }
        Cmd::Connect(a) => crate::connect::run(&paths, &Config::load(&paths.config)?, a),
        Cmd::Socks5(a) => crate::socks::run(&paths, &Config::load(&paths.config)?, a),
        Cmd::Disconnect { wait } => crate::connect::disconnect(&paths, Duration::from_secs(wait)),
        Cmd::Status { json } => status(&paths, json),
        Cmd::ExportWg { relay } => {
            let cfg = Config::load(&paths.config)?;
            let text = export_wg(&cfg, &relay, &WgPrivateKey::load(&paths.wg())?)?;
            out(&text)
        }
    }
}

/// The ledger URL (`--ledger` or `[client] ledger-url`) and our identity key.
fn ledger_and_identity(
    paths: &Paths,
    ledger: Option<String>,
) -> Result<(ferry_store::LedgerClient, ferry_receipts::SigningKey)> {
    let cfg = Config::load(&paths.config)?;
    let url = match ledger {
        Some(url) => url,
        None => cfg
            .client
            .ledger_url
            .clone()
            .context("no ledger: pass --ledger URL or set [client] ledger-url")?,
    };
    let url = crate::ledger::client(&url, cfg.client.ledger_ca_file.as_deref())?;
    let key = IdentityKey::load(&paths.identity())
        .context("run `ferry keygen` first")?
        .signing_key();
    Ok((url, key))
}

fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn register(paths: &Paths, ledger: Option<String>) -> Result<ExitCode> {
    let (client, key) = ledger_and_identity(paths, ledger)?;
    let created = block_on(async {
        let li = crate::ledger::info(&client).await?;
        let at = ferry_store::unix_now();
        ferry_store::market::register_self(
            &client,
            &li.network_id,
            &key,
            ferry_store::market::Role::Client,
            at,
        )
        .await
        .map_err(anyhow::Error::from)
    })?;
    let pk = key.public_key();
    out(&if created {
        format!("client {pk} registered\n")
    } else {
        format!("client {pk} was already registered\n")
    })
}

fn balance(paths: &Paths, ledger: Option<String>, json: bool) -> Result<ExitCode> {
    let (url, key) = ledger_and_identity(paths, ledger)?;
    let a = block_on(crate::ledger::account(&url, &key, ferry_store::unix_now()))?;
    if json {
        return out(&format!("{}\n", serde_json::to_string_pretty(&a)?));
    }
    out(&format!(
        "client {}\nbalance {} micro (deposited {}, spent {})\nvouchers {}: {} micro bought, {} used\n",
        a.client_key,
        a.balance_micros,
        a.deposited_micros,
        a.spent_micros,
        a.vouchers,
        a.budget_micros,
        a.used_micros,
    ))
}

/// The network and ledger key listings must verify under: the stored voucher's (the ledger we
/// already pay), else what the ledger says about itself.
async fn trust_root(
    paths: &Paths,
    ledger: &ferry_store::LedgerClient,
) -> Result<(ferry_receipts::NetworkId, ferry_receipts::PublicKey)> {
    if let Ok(v) = crate::ledger::load_voucher(&paths.voucher()) {
        return Ok((v.network_id, v.ledger_key));
    }
    let li = crate::ledger::info(ledger).await?;
    Ok((li.network_id, li.ledger_key))
}

fn relays(
    paths: &Paths,
    ledger: Option<String>,
    f: &crate::relays::Filters,
    json: bool,
) -> Result<ExitCode> {
    use crate::relays::{read_cache, table, verify_list, write_cache};
    let (client, _) = ledger_and_identity(paths, ledger)?;
    let cache = paths.dir.join("relays.cache");
    let now = ferry_store::unix_now();
    let (list, trust, cached) = block_on(async {
        let fetched = ferry_store::market::relays(&client, &f.query())
            .await
            .map_err(anyhow::Error::from);
        let trust = trust_root(paths, &client).await;
        match (fetched, trust) {
            (Ok(list), Ok(t)) => Ok((list, t, false)),
            (Err(e), _) | (_, Err(e)) if !cache.exists() => {
                Err(anyhow::anyhow!("{e:#}")).context("listing relays (no cached list either)")
            }
            (Err(e), Ok(t)) => {
                eprintln!("ferry: ledger unreachable ({e:#}); showing the cached list");
                Ok((read_cache(&cache)?, t, true))
            }
            (_, Err(e)) => Err(e),
        }
    })?;
    let (mut ok, refused) = verify_list(&list, &trust.0, &trust.1, now);
    if cached {
        ok.retain(|l| f.keep(l));
    } else if let Err(e) = write_cache(&cache, &list) {
        eprintln!("ferry: could not cache the relay list: {e:#}");
    }
    if refused > 0 {
        eprintln!(
            "ferry: {refused} listing(s) dropped: a signature, the ledger key or the expiry did              not verify"
        );
    }
    if json {
        let items: Vec<serde_json::Value> = ok
            .iter()
            .map(|l| {
                let (d, a) = (&l.descriptor, &l.annotation);
                serde_json::json!({
                    "relay_key": d.relay_key.to_hex(),
                    "country": d.country_code(),
                    "region": d.region,
                    "price_micros_per_gib": d.price_micros_per_gib,
                    "score": a.score,
                    "probe_rtt_micros": a.probe_rtt_micros,
                    "endpoints": d.endpoints().iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "hello_port": d.hello_port,
                    "max_mbit": d.limits.max_mbit,
                    "monthly_quota_gib": d.limits.monthly_quota_gib,
                    "shared_hours_per_week": d.limits.shared_hours(),
                    "sharing_now": d.limits.shares_at_unix(ferry_store::unix_now()),
                    "expires_at": d.expires_at,
                    "factors": {
                        "paid_bytes": a.paid_bytes,
                        "paying_clients": a.paying_clients,
                        "completed_sessions": a.completed_sessions,
                        "refusals": a.refusals,
                        "probes_ok": a.probes_ok,
                        "probes_total": a.probes_total,
                    },
                })
            })
            .collect();
        return out(&format!("{}\n", serde_json::to_string_pretty(&items)?));
    }
    if ok.is_empty() {
        return out("no relays listed (try fewer filters)\n");
    }
    out(&table(&ok))
}

fn out(text: &str) -> Result<ExitCode> {
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// Writes `identity.key` and `wg.key` into `dir` (created 0700), mode 0600.
pub(crate) fn keygen(dir: &Path, force: bool) -> Result<ExitCode> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mode = if force {
        WriteMode::Replace
    } else {
        WriteMode::CreateNew
    };
    let id = IdentityKey::generate()?;
    let wg = WgPrivateKey::generate()?;
    id.write_to(&dir.join("identity.key"), mode)
        .context("use --force to replace existing keys")?;
    wg.write_to(&dir.join("wg.key"), mode)?;
    let text = format!(
        "identity {}\nwireguard {}\n",
        id.public_key().to_hex(),
        wg.public_key()
    );
    out(&text)
}

fn pubkey(paths: &Paths) -> Result<ExitCode> {
    let id = IdentityKey::load(&paths.identity())?;
    let wg = WgPrivateKey::load(&paths.wg())?;
    out(&format!(
        "identity {}\nwireguard {}\n",
        id.public_key().to_hex(),
        wg.public_key()
    ))
}

fn voucher(paths: &Paths, cmd: VoucherCmd) -> Result<ExitCode> {
    match cmd {
        VoucherCmd::Request {
            ledger,
            bytes,
            max_price,
            out: dest,
        } => {
            let (url, key) = ledger_and_identity(paths, ledger)?;
            let mut nonce = [0u8; 16];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
                .map_err(|_| anyhow::anyhow!("no randomness"))?;
            let now = ferry_store::unix_now();
            let (v, answer) = block_on(crate::ledger::request_voucher(
                &url, &key, bytes, max_price, nonce, now,
            ))?;
            let dest = dest.unwrap_or_else(|| paths.voucher());
            crate::ledger::save_voucher(&dest, &v)?;
            out(&format!(
                "voucher {} saved to {}\nbudget {} micro, max price {} micro/GiB ({} bytes at that price), expires at {}, cost {} micro, balance {}\n",
                v.id().to_hex(),
                dest.display(),
                v.budget_micros,
                v.max_price_micros_per_gib,
                v.bytes_at(v.max_price_micros_per_gib, 0),
                v.expires_at,
                answer.cost_micros,
                answer
                    .balance_micros
                    .map_or_else(|| "unchanged (issued before)".to_owned(), |b| b.to_string()),
            ))
        }
        VoucherCmd::Show { file } => {
            let p = file.unwrap_or_else(|| paths.voucher());
            let v = crate::ledger::load_voucher(&p)?;
            let log = paths.receipts(&Config::load(&paths.config)?);
            let used = match std::fs::read(&log) {
                Ok(buf) => match ferry_store::scan(&buf) {
                    Some(s) => {
                        let u = crate::usage::usage(s.records.iter().map(|(_, r)| r), &v.id());
                        format!(
                            "used {} bytes ({} micro) in {} session(s), {} micro left (this machine's receipts, {})\n",
                            u.used,
                            u.micros,
                            u.sessions,
                            v.budget_micros.saturating_sub(u.micros),
                            log.display()
                        )
                    }
                    None => format!(
                        "used unknown: {} is not a Ferry receipt log\n",
                        log.display()
                    ),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    format!("used 0 bytes (no receipts yet at {})\n", log.display())
                }
                Err(e) => format!("used unknown: reading {}: {e}\n", log.display()),
            };
            out(&format!(
                "voucher {}\nnetwork {}\nclient {}\nbudget {} micro\nmax price {} micro/GiB\nissued {} expires {} ({})\n{used}",
                v.id().to_hex(),
                v.network_id.to_hex(),
                v.client_key.to_hex(),
                v.budget_micros,
                v.max_price_micros_per_gib,
                v.issued_at,
                v.expires_at,
                crate::usage::expiry(v.expires_at, ferry_store::unix_now()),
            ))
        }
    }
}

fn status(paths: &Paths, json: bool) -> Result<ExitCode> {
    let st = match Status::read(&paths.status()) {
        Ok(s) => s,
        Err(_) if !paths.status().exists() => {
            if json {
                return out("{\"state\":\"disconnected\"}\n");
            }
            return out("state:      disconnected\n");
        }
        Err(e) => return Err(e),
    };
    let alive = st.process_alive();
    if json {
        let mut v = serde_json::to_value(&st)?;
        v["running"] = serde_json::Value::Bool(alive);
        return out(&format!("{}\n", serde_json::to_string_pretty(&v)?));
    }
    out(&st.human(alive))
}

/// A wg-quick config for a trusted relay.
pub(crate) fn export_wg(cfg: &Config, relay: &str, key: &WgPrivateKey) -> Result<String> {
    let r = cfg.relay(relay)?;
    if r.paid.is_some() {
        bail!(
            "relay {relay:?} is a paid relay: stock WireGuard apps cannot open a session or \
             co-sign receipts, so it would cut them off; use `ferry connect` instead"
        );
    }
    let mut s = String::from("# generated by `ferry export-wg` (trusted relay, no receipts)\n");
    s.push_str("[Interface]\n");
    s.push_str(&format!("PrivateKey = {}\n", &*key.to_base64()));
    let addrs: Vec<String> = r.address.iter().map(|a| a.to_string()).collect();
    s.push_str(&format!("Address = {}\n", addrs.join(", ")));
    if !r.dns.is_empty() {
        let d: Vec<String> = r.dns.iter().map(|a| a.to_string()).collect();
        s.push_str(&format!("DNS = {}\n", d.join(", ")));
    }
    s.push_str(&format!("MTU = {}\n\n[Peer]\n", r.mtu));
    s.push_str(&format!("PublicKey = {}\n", r.public_key));
    s.push_str("AllowedIPs = 0.0.0.0/0, ::/0\n");
    s.push_str(&format!("Endpoint = {}\n", r.endpoint));
    if r.keepalive > 0 {
        s.push_str(&format!("PersistentKeepalive = {}\n", r.keepalive));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn keygen_writes_0600_keys_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("ferry");
        keygen(&d, false).unwrap();
        assert_eq!(mode(&d.join("identity.key")), 0o600);
        assert_eq!(mode(&d.join("wg.key")), 0o600);
        assert_eq!(mode(&d), 0o700);
        let before = std::fs::read(d.join("wg.key")).unwrap();
        assert!(keygen(&d, false).is_err());
        assert_eq!(std::fs::read(d.join("wg.key")).unwrap(), before);
        keygen(&d, true).unwrap();
        assert_ne!(std::fs::read(d.join("wg.key")).unwrap(), before);
        // Loose permissions are refused on load.
        std::fs::set_permissions(d.join("wg.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(WgPrivateKey::load(&d.join("wg.key")).is_err());
    }

    #[test]
    fn export_wg_renders_trusted_relays_and_refuses_paid_ones() {
        let key = WgPrivateKey::from_bytes(&[5; 32]);
        let base = "[[relay]]\nname = \"home\"\nendpoint = \"198.51.100.1:51820\"\npublic-key = \"HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\"\naddress = [\"10.77.0.2/32\", \"fd77::2/128\"]\ndns = [\"10.77.0.1\"]\n";
        let cfg = Config::parse(base).unwrap();
        let text = export_wg(&cfg, "home", &key).unwrap();
        assert!(text.contains(&format!("PrivateKey = {}", &*key.to_base64())));
        assert!(text.contains("Address = 10.77.0.2/32, fd77::2/128"));
        assert!(text.contains("DNS = 10.77.0.1"));
        assert!(text.contains("AllowedIPs = 0.0.0.0/0, ::/0"));
        assert!(text.contains("Endpoint = 198.51.100.1:51820"));
        assert!(text.contains("PersistentKeepalive = 25"));
        // A host name is written as given: wg-quick resolves it itself.
        let named = base.replace("198.51.100.1:51820", "home.dyndns.example:51820");
        let text = export_wg(&Config::parse(&named).unwrap(), "home", &key).unwrap();
        assert!(
            text.contains("Endpoint = home.dyndns.example:51820\n"),
            "{text}"
        );
        let v6 = base.replace("198.51.100.1:51820", "[2001:db8::1]:51820");
        let text = export_wg(&Config::parse(&v6).unwrap(), "home", &key).unwrap();
        assert!(text.contains("Endpoint = [2001:db8::1]:51820\n"), "{text}");
        let paid = format!(
            "{base}identity-key = \"{}\"\ncontrol-address = \"10.77.0.1\"\n",
            "11".repeat(32)
        );
        let cfg = Config::parse(&paid).unwrap();
        let err = export_wg(&cfg, "home", &key).unwrap_err();
        assert!(err.to_string().contains("paid relay"), "{err}");
    }

    #[test]
    fn paths_default_under_the_key_dir() {
        let cli = <Cli as clap::Parser>::try_parse_from([
            "ferry",
            "--dir",
            "/k",
            "--state-dir",
            "/s",
            "status",
        ])
        .unwrap();
        let p = Paths::from_cli(&cli);
        assert_eq!(p.config, PathBuf::from("/k/client.toml"));
        assert_eq!(p.identity(), PathBuf::from("/k/identity.key"));
        assert_eq!(p.status(), PathBuf::from("/s/status.json"));
        assert_eq!(
            p.receipts(&Config::default()),
            PathBuf::from("/k/receipts.log")
        );
    }
}
