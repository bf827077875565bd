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

#[test]
fn check_config_refuses_a_missing_or_loose_identity_key_of_a_paid_relay() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    WgPrivateKey::generate()
        .unwrap()
        .write_to(&d.join("wg.key"), WriteMode::CreateNew)
        .unwrap();
    let cfg = d.join("agent.toml");
    std::fs::write(
        &cfg,
        "[wireguard]\nprivate-key-file = \"wg.key\"\naddress = [\"10.77.0.1/24\"]\n\
         [identity]\nkey-file = \"identity.key\"\n\
         [network]\nid = \"00112233445566778899aabbccddeeff\"\n\
         ledger-key = \"0000000000000000000000000000000000000000000000000000000000000000\"\n\
         [metering]\nstate-dir = \"state\"\n[paid]\nenabled = true\n",
    )
    .unwrap();
    let (ok, text) = check(&cfg);
    assert!(
        !ok && text.contains("identity key"),
        "missing key accepted: {text}"
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
