//! `ferry-agent check-config` checks what `run` would load: with paid sessions on, the identity
//! key must exist, be 0600 and be ours (it used to say "config ok" and `run` then failed).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use ferry_keys::{IdentityKey, WgPrivateKey, WriteMode};

fn check(config: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
        .args(["check-config", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A paid relay's config in `d` (with a fresh wg.key), `network_extra` added to `[network]`.
fn paid_config(d: &std::path::Path, network_extra: &str) -> std::path::PathBuf {
    WgPrivateKey::generate()
        .unwrap()
        .write_to(&d.join("wg.key"), WriteMode::CreateNew)
        .unwrap();
    let cfg = d.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[wireguard]\nprivate-key-file = \"wg.key\"\naddress = [\"10.77.0.1/24\"]\n\
             [identity]\nkey-file = \"identity.key\"\n\
             [network]\nid = \"00112233445566778899aabbccddeeff\"\n\
             ledger-key = \"0000000000000000000000000000000000000000000000000000000000000000\"\n\
             {network_extra}[metering]\nstate-dir = \"state\"\n[paid]\nenabled = true\nprice-micros-per-gib = 500000\n"
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn check_config_refuses_a_missing_or_loose_identity_key_of_a_paid_relay() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = paid_config(d, "");
    let (ok, text) = check(&cfg);
    assert!(
        !ok && text.contains("does not exist") && text.contains("identity --generate --config"),
        "missing key accepted, or no way out named: {text}"
    );
    let id = d.join("identity.key");
    IdentityKey::generate()
        .unwrap()
        .write_to(&id, WriteMode::CreateNew)
        .unwrap();
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, text) = check(&cfg);
    assert!(
        !ok && text.contains("chmod 600"),
        "0644 key accepted: {text}"
    );
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, text) = check(&cfg);
    assert!(
        ok && text.contains("config ok") && text.contains("paid sessions on"),
        "{text}"
    );
}

#[test]
fn genkey_out_creates_the_key_directory_and_names_the_path_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("new/sub/wg.key");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
        .args(["genkey", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(key.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    // A second run refuses to overwrite, naming the file once.
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
        .args(["genkey", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.matches(key.to_str().unwrap()).count(), 1, "{err}");
}

#[test]
fn an_https_ledger_url_is_accepted_with_the_https_feature_and_named_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    IdentityKey::generate()
        .unwrap()
        .write_to(&d.join("identity.key"), WriteMode::CreateNew)
        .unwrap();
    let cfg = paid_config(d, "ledger-url = \"https://ledger.example/api\"\n");
    let (ok, text) = check(&cfg);
    if cfg!(feature = "https") {
        assert!(ok && text.contains("config ok"), "{text}");
    } else {
        assert!(!ok && text.contains("https feature"), "{text}");
    }
}
