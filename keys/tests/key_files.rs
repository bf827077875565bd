//! Key generation, key files (mode 0600, refusal of loose modes, garbage) and
//! compatibility with `wg genkey` / `wg pubkey`.
#![allow(clippy::unwrap_used)]

use std::fs::{self, Permissions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use ferry_keys::{IdentityKey, KeyError, WgPrivateKey, WgPublicKey, WriteMode, load_identity};

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
}

#[test]
fn identity_key_round_trips_through_a_0600_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.key");
    let key = IdentityKey::generate().unwrap();
    key.write_to(&path, WriteMode::CreateNew).unwrap();
    assert_eq!(mode_of(&path), 0o600);
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.len(), 45, "one base64 line of 32 bytes plus newline");
    assert_eq!(text.trim_end(), key.to_base64().as_str());

    let loaded = IdentityKey::load(&path).unwrap();
    assert_eq!(loaded.public_key(), key.public_key());
    let signer = load_identity(&path).unwrap();
    assert_eq!(signer.public_key(), key.public_key());
    // Same seed → same (deterministic) signatures.
    assert_eq!(signer.sign(b"t", b"m"), key.signing_key().sign(b"t", b"m"));
}

#[test]
fn generated_keys_differ() {
    let a = IdentityKey::generate().unwrap();
    let b = IdentityKey::generate().unwrap();
    assert_ne!(a.public_key(), b.public_key());
    let a = WgPrivateKey::generate().unwrap();
    let b = WgPrivateKey::generate().unwrap();
    assert_ne!(a.public_key(), b.public_key());
}

#[test]
fn identity_seed_matches_the_receipts_test_vector() {
    // Seed 01 × 32 is the ledger key of receipts' frozen vectors (docs/receipts.md).
    let key = IdentityKey::from_base64("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=").unwrap();
    assert_eq!(
        key.public_key().to_hex(),
        "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
    );
}

#[test]
fn wireguard_key_round_trips_through_a_0600_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wg.key");
    let key = WgPrivateKey::generate().unwrap();
    key.write_to(&path, WriteMode::CreateNew).unwrap();
    assert_eq!(mode_of(&path), 0o600);
    let loaded = WgPrivateKey::load(&path).unwrap();
    assert_eq!(loaded.public_key(), key.public_key());
    assert_eq!(loaded.to_base64().as_str(), key.to_base64().as_str());
    assert_eq!(
        x25519_dalek::PublicKey::from(&loaded.static_secret()).to_bytes(),
        key.public_key().0
    );
    let pk = key.public_key();
    assert_eq!(WgPublicKey::from_base64(&pk.to_base64()).unwrap(), pk);
}

#[test]
fn generated_wireguard_keys_are_clamped_like_wg_genkey() {
    for _ in 0..16 {
        let key = WgPrivateKey::generate().unwrap();
        let b = base64_32(&key.to_base64());
        assert_eq!(b[0] & 7, 0);
        assert_eq!(b[31] & 0x80, 0);
        assert_eq!(b[31] & 0x40, 0x40);
    }
}

#[test]
fn wireguard_public_key_matches_rfc7748_vector() {
    // RFC 7748 §6.1, Alice: private key and public key.
    let private = hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let key = WgPrivateKey::from_bytes(&private);
    assert_eq!(
        key.public_key().0,
        hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    );
}

#[test]
fn existing_files_are_not_overwritten_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id.key");
    let first = IdentityKey::generate().unwrap();
    first.write_to(&path, WriteMode::CreateNew).unwrap();
    let second = IdentityKey::generate().unwrap();
    let err = second.write_to(&path, WriteMode::CreateNew).unwrap_err();
    assert!(matches!(err, KeyError::Exists { .. }), "{err}");
    assert_eq!(
        IdentityKey::load(&path).unwrap().public_key(),
        first.public_key()
    );

    // Replacing a loose file tightens its mode before writing the key.
    chmod(&path, 0o644);
    second.write_to(&path, WriteMode::Replace).unwrap();
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(
        IdentityKey::load(&path).unwrap().public_key(),
        second.public_key()
    );
}

#[test]
fn loose_modes_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wg.key");
    WgPrivateKey::generate()
        .unwrap()
        .write_to(&path, WriteMode::CreateNew)
        .unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660, 0o601, 0o610, 0o777] {
        chmod(&path, mode);
        let err = WgPrivateKey::load(&path).unwrap_err();
        match &err {
            KeyError::InsecurePermissions { mode: m, .. } => assert_eq!(*m, mode),
            other => panic!("mode {mode:o}: unexpected error {other}"),
        }
        let msg = err.to_string();
        let shown = path.display().to_string();
        assert!(msg.contains(&shown), "{msg}");
        assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
        assert!(msg.contains(&format!("chmod 600 {shown}")), "{msg}");
        assert!(matches!(
            load_identity(&path),
            Err(KeyError::InsecurePermissions { .. })
        ));
    }
    for ok in [0o600, 0o400] {
        chmod(&path, ok);
        WgPrivateKey::load(&path).unwrap();
    }
}

#[test]
fn garbage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8]); 7] = [
        ("empty", b""),
        ("not base64", b"this is not a key at all!!\n"),
        ("31 bytes", b"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ==\n"),
        ("33 bytes", b"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB\n"),
        ("two keys", b"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n"),
        ("binary", &[0xff, 0xfe, 0x00, 0x01]),
        ("hex", b"0101010101010101010101010101010101010101010101010101010101010101\n"),
    ];
    for (name, contents) in cases {
        let path = dir.path().join(name.replace(' ', "-"));
        let mut f = fs::File::create(&path).unwrap();
        f.write_all(contents).unwrap();
        chmod(&path, 0o600);
        let err = IdentityKey::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }), "{name}: {err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert!(WgPrivateKey::load(&path).is_err(), "{name}");
    }
    // A valid key with surrounding whitespace is fine (wg tools add a newline).
    let ok = dir.path().join("ok");
    fs::write(&ok, b"  AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=  \n").unwrap();
    chmod(&ok, 0o600);
    IdentityKey::load(&ok).unwrap();
}

#[test]
fn missing_files_and_directories_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.key");
    let err = IdentityKey::load(&missing).unwrap_err();
    assert!(matches!(err, KeyError::Io { .. }));
    assert!(err.to_string().contains("nope.key"));
    chmod(dir.path(), 0o700);
    assert!(matches!(
        IdentityKey::load(dir.path()),
        Err(KeyError::NotAFile { .. })
    ));
}

#[test]
fn debug_output_never_shows_secrets() {
    let key = IdentityKey::generate().unwrap();
    let wg = WgPrivateKey::generate().unwrap();
    assert!(!format!("{key:?}").contains(key.to_base64().as_str()));
    assert!(!format!("{wg:?}").contains(wg.to_base64().as_str()));
}

// ------------------------------------------------------- wg(8) compatibility

fn wg_available() -> bool {
    let ok = Command::new("wg")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "NOTE: `wg` not installed; skipping wg compatibility (apt-get install wireguard-tools)"
        );
    }
    ok
}

fn wg(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("wg")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "wg {args:?} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn wg_pubkey_agrees_with_our_public_key() {
    if !wg_available() {
        return;
    }
    for _ in 0..4 {
        let key = WgPrivateKey::generate().unwrap();
        let theirs = wg(&["pubkey"], &format!("{}\n", key.to_base64().as_str()));
        assert_eq!(theirs, key.public_key().to_base64());
    }
}

#[test]
fn wg_genkey_output_loads_and_gives_the_same_public_key() {
    if !wg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wg.key");
    let private = wg(&["genkey"], "");
    fs::write(&path, format!("{private}\n")).unwrap();
    chmod(&path, 0o600);
    let key = WgPrivateKey::load(&path).unwrap();
    assert_eq!(
        key.to_base64().as_str(),
        private,
        "wg genkey keys are already clamped"
    );
    assert_eq!(key.public_key().to_base64(), wg(&["pubkey"], &private));
}

fn hex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn base64_32(s: &str) -> [u8; 32] {
    *WgPublicKey::from_base64(s).unwrap().as_bytes()
}

#[test]
fn a_key_file_owned_by_another_user_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("identity.key");
    IdentityKey::generate()
        .unwrap()
        .write_to(&p, WriteMode::CreateNew)
        .unwrap();
    assert!(
        IdentityKey::load(&p).is_ok(),
        "positive control: our own 0600 file"
    );
    // Hand the file to `nobody` (needs root, as CI runs; elsewhere there is nothing to test).
    if std::os::unix::fs::chown(&p, Some(65534), None).is_err() {
        eprintln!("not root: cannot chown, skipped");
        return;
    }
    let e = IdentityKey::load(&p).unwrap_err();
    assert!(
        matches!(e, KeyError::WrongOwner { owner: 65534, .. }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("owned by uid 65534") && msg.contains("chown"),
        "{msg}"
    );
    assert!(WgPrivateKey::load(&p).is_err());
}
