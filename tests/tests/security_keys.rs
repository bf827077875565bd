//! Key theft: `ferry-agent` refuses to start with a private key file readable by group or
//! others, and says how to fix it; the same file at 0600 is accepted (positive control).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use ferry_e2e::agent::agent_binary;
use ferry_e2e::wg::KeyPair;

#[test]
#[ignore = "builds and runs ferry-agent (e2e suite)"]
fn agent_refuses_group_or_world_readable_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let key_file = key.write_private(dir.path(), "wg.key").unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        "[wireguard]\nprivate-key-file = \"wg.key\"\naddress = [\"10.77.0.1/24\"]\n",
    )
    .unwrap();
    let bin = agent_binary().unwrap();
    let check = || {
        Command::new(&bin)
            .args(["check-config", "--config"])
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let ok = check();
    assert!(ok.status.success(), "0600 key refused: {ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains(&key.public));
    for mode in [0o640, 0o604, 0o644, 0o666] {
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = check();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "mode {mode:o} accepted");
        assert!(
            err.contains("chmod 600"),
            "mode {mode:o}: no fix in {err:?}"
        );
        assert!(!err.contains(&key.private), "the error leaks the key");
    }
    // `run` refuses too (before touching the network).
    let out = Command::new(&bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}
