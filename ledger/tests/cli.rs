//! The `ferry-ledger` binary: init writes 0600 secrets, run refuses open key files,
//! admin commands work and fail clearly, and a served ledger answers over TCP.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

fn ledger(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry-ledger"))
        .args(args)
        .env_remove("FERRY_LEDGER_ADMIN_TOKEN")
        .output()
        .unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_register_credit_and_permission_checks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ledger.toml");
    let cfg_s = cfg.to_str().unwrap();
    let out = ledger(&["init", "--config", cfg_s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ledger-key = \""), "{stdout}");
    assert_eq!(mode(&dir.path().join("ledger.key")), 0o600);
    assert_eq!(mode(&dir.path().join("ledger-admin.token")), 0o600);
    // Idempotent: a second init keeps the key.
    let again = ledger(&["init", "--config", cfg_s]);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        stdout
            .lines()
            .filter(|l| !l.starts_with("wrote"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );

    let client = ferry_ledger::testkit::key(3, 1).public_key().to_hex();
    let out = ledger(&[
        "credit", "--config", cfg_s, "--client", &client, "--amount", "5",
    ]);
    // The database (balances, who paid whom) is owner-only like the keys.
    let dbs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "db"))
        .collect();
    assert!(
        !dbs.is_empty(),
        "no database file in {}",
        dir.path().display()
    );
    for db in &dbs {
        assert_eq!(mode(db), 0o600, "{}", db.display());
    }
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("client key is not registered"), "{err}");
    let out = ledger(&[
        "register", "--config", cfg_s, "--key", &client, "--role", "client",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ledger(&[
        "credit", "--config", cfg_s, "--client", &client, "--amount", "5",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("balance-micros = 5"));
    let out = ledger(&[
        "credit", "--config", cfg_s, "--client", "zz", "--amount", "5",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 hex characters"));

    std::fs::set_permissions(
        dir.path().join("ledger.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = ledger(&["run", "--config", cfg_s]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permissions too open"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_or_broken_config_is_a_clear_error() {
    let out = ledger(&["run", "--config", "/nonexistent/ledger.toml"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("loading config /nonexistent/ledger.toml")
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("l.toml");
    std::fs::write(&cfg, "network-id = 5\n").unwrap();
    let out = ledger(&["run", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid type"), "{err}");
}

#[test]
fn served_ledger_answers_over_tcp() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ledger.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(
        ledger(&["init", "--config", cfg.to_str().unwrap()])
            .status
            .success()
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("127.0.0.1:7878", &format!("127.0.0.1:{port}"));
    std::fs::write(&cfg, text).unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(
        Command::new(env!("CARGO_BIN_EXE_ferry-ledger"))
            .args(["run", "--config", cfg.to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut body = String::new();
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET /v1/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            s.read_to_string(&mut body).unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("\"ledger_key\""), "{body}");
}

#[test]
fn pubkey_prints_the_agents_network_section_ready_to_paste() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ledger.toml");
    let cfg_s = cfg.to_str().unwrap();
    assert!(ledger(&["init", "--config", cfg_s]).status.success());
    let out = ledger(&["pubkey", "--config", cfg_s]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // What it prints is TOML whose [network] keys are the agent's (id, ledger-key, ledger-url).
    let doc: toml::Table = toml::from_str(&text).unwrap();
    let net = doc["network"].as_table().unwrap();
    let conf: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    assert_eq!(net["id"].as_str(), conf["network-id"].as_str());
    assert_eq!(net["ledger-key"].as_str().unwrap().len(), 64);
    assert_eq!(net["ledger-url"].as_str(), Some("http://127.0.0.1:7878"));
    assert_eq!(net.len(), 3, "{text}");
}

#[test]
fn logs_written_to_a_file_have_no_colour_codes() {
    // stderr is a pipe here, as with a log file or journald.
    let out = ledger(&["run", "--config", "/nonexistent/ledger.toml"]);
    assert!(!out.status.success());
    let help = ledger(&["run", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("Ledger configuration file"), "{help}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ledger.toml");
    assert!(
        ledger(&["init", "--config", cfg.to_str().unwrap()])
            .status
            .success()
    );
    // A ledger that starts logs at least its "serving" line; stop it after that.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry-ledger"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("FERRY_LEDGER_ADMIN_TOKEN", "0123456789abcdef0123")
        .env_remove("NO_COLOR")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read until the first tracing line that ends the startup ("serving", or a bind error).
    use std::io::BufRead as _;
    let mut log = String::new();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    while let Some(Ok(line)) = lines.next() {
        log.push_str(&line);
        log.push('\n');
        if line.contains("ferry-ledger serving") || line.contains("binding") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        log.contains("ferry-ledger serving") || log.contains("binding"),
        "{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in a piped log: {log:?}"
    );
}
