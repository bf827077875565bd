//! `ferry-test-relay`: the minimal paid relay of `src/testrelay.rs` as a program, for the
//! netns tests of `ferry connect` with receipts while ferry-agent's metering integration is
//! pending. Test support only (an example: never built into or installed with `ferry`).
//!
//! ```text
//! ferry-test-relay voucher --ledger-seed HEX32 --network HEX16 --client-key HEX32 --out FILE
//! ferry-test-relay run --listen ADDR --wg-key FILE --client-wg B64 --identity-seed HEX32 \
//!     --ledger-seed HEX32 --network HEX16 [--phantom-down BYTES]
//! ```
#![allow(clippy::unwrap_used, clippy::print_stdout, unreachable_pub)]

// The relay of the client's own tests; it uses only other crates, so it compiles here as is.
#[path = "../src/testrelay.rs"]
mod testrelay;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use ferry_keys::{WgPrivateKey, WgPublicKey};
use ferry_metering::{RelayConfig, RelayHub, RelayIdentity};
use ferry_receipts::{NetworkId, PublicKey, Signature, SigningKey, Voucher};

fn hex_arr<const N: usize>(s: &str) -> [u8; N] {
    let mut b = [0u8; N];
    hex::decode_to_slice(s, &mut b).unwrap();
    b
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().cloned().unwrap_or_default();
    let mut opts = BTreeMap::new();
    for pair in args[1..].chunks(2) {
        opts.insert(pair[0].trim_start_matches("--").to_owned(), pair[1].clone());
    }
    let opt = |k: &str| {
        opts.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("--{k} missing"))
    };
    let ledger = SigningKey::from_seed(&hex_arr(&opt("ledger-seed")));
    let network = NetworkId(hex_arr(&opt("network")));
    match cmd.as_str() {
        "voucher" => {
            let now = ferry_store::unix_now();
            let v = Voucher {
                network_id: network,
                ledger_key: ledger.public_key(),
                client_key: PublicKey(hex_arr(&opt("client-key"))),
                nonce: [1; 16],
                budget_micros: 1_000_000,
                max_price_micros_per_gib: 1_000_000,
                issued_at: now - 60,
                expires_at: now + 3600,
                signature: Signature::ZERO,
            }
            .sign(&ledger);
            let text = base64::engine::general_purpose::STANDARD.encode(v.encode());
            std::fs::write(opt("out"), format!("{text}\n")).unwrap();
            println!("ledger {}", ledger.public_key().to_hex());
        }
        "run" => {
            let identity = Arc::new(SigningKey::from_seed(&hex_arr(&opt("identity-seed"))));
            let wg = WgPrivateKey::load(std::path::Path::new(&opt("wg-key"))).unwrap();
            let client = WgPublicKey::from_base64(&opt("client-wg")).unwrap();
            let phantom: u64 = opts.get("phantom-down").map_or(0, |p| p.parse().unwrap());
            let cfg = RelayConfig {
                receipt_every_bytes: 256 << 10,
                receipt_every: Duration::from_secs(1),
                credit_window_bytes: 8 << 20,
                retransmit_after: Duration::from_millis(500),
                close_grace: Duration::from_secs(3),
                ..RelayConfig::default()
            };
            let hub = RelayHub::new(
                cfg,
                RelayIdentity {
                    network_id: network,
                    ledger_key: ledger.public_key(),
                    key: identity.clone(),
                },
            );
            let tunn = boringtun::noise::Tunn::new(
                wg.static_secret(),
                x25519_dalek::PublicKey::from(client.0),
                None,
                None,
                1,
                None,
            );
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let sock = tokio::net::UdpSocket::bind(opt("listen")).await.unwrap();
                let mut hello_addr = sock.local_addr().unwrap();
                hello_addr.set_port(ferry_metering::CONTROL_PORT);
                let hello = tokio::net::UdpSocket::bind(hello_addr).await.unwrap();
                println!("identity {}", identity.public_key().to_hex());
                println!("ready {}", sock.local_addr().unwrap());
                let log = Arc::new(Mutex::new(testrelay::RelayLog::default()));
                testrelay::mini_relay(sock, Some(hello), tunn, hub, phantom, log).await;
            });
        }
        _ => panic!("usage: ferry-test-relay voucher|run ..."),
    }
}
