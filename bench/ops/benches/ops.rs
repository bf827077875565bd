//! Per-operation costs of the cryptography Ferry's binaries spend their CPU on. Run in both
//! build profiles by `bench/ops-bench.sh` (release = opt-level 3, router = opt-level "z").
#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use std::hint::black_box;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey as DalekKey, Verifier, VerifyingKey};
use ring::signature::{ED25519, UnparsedPublicKey};

fn secret(seed: u8) -> StaticSecret {
    StaticSecret::from([seed; 32])
}

fn tunn_pair() -> (Tunn, Tunn) {
    let (a, b) = (secret(1), secret(2));
    let ta = Tunn::new(a.clone(), PublicKey::from(&b), None, None, 1, None);
    let tb = Tunn::new(b, PublicKey::from(&a), None, None, 2, None);
    (ta, tb)
}

/// A full WireGuard handshake: initiation (initiator), response (responder), first data
/// message consumed (initiator). Two DH-heavy halves, as a relay and a client spend them.
fn handshake(ta: &mut Tunn, tb: &mut Tunn, buf: &mut [u8], buf2: &mut [u8]) {
    let init = match ta.format_handshake_initiation(buf, true) {
        TunnResult::WriteToNetwork(b) => b.to_vec(),
        _ => panic!("no initiation"),
    };
    let resp = match tb.decapsulate(None, &init, buf2) {
        TunnResult::WriteToNetwork(b) => b.to_vec(),
        _ => panic!("no response"),
    };
    match ta.decapsulate(None, &resp, buf) {
        TunnResult::WriteToNetwork(_) => {}
        _ => panic!("no keepalive"),
    }
}

fn wireguard(c: &mut Criterion) {
    let a = secret(1);
    let b = PublicKey::from(&secret(2));
    c.bench_function("x25519_dh", |bench| {
        bench.iter(|| black_box(a.diffie_hellman(black_box(&b))))
    });
    c.bench_function("wg_handshake_full", |bench| {
        bench.iter_batched(
            tunn_pair,
            |(mut ta, mut tb)| {
                let (mut b1, mut b2) = (vec![0u8; 2048], vec![0u8; 2048]);
                handshake(&mut ta, &mut tb, &mut b1, &mut b2);
            },
            BatchSize::SmallInput,
        );
    });
    let mut g = c.benchmark_group("chacha20poly1305_1420");
    g.throughput(Throughput::Bytes(1420));
    let (mut ta, mut tb) = tunn_pair();
    let (mut b1, mut b2) = (vec![0u8; 2048], vec![0u8; 2048]);
    handshake(&mut ta, &mut tb, &mut b1, &mut b2);
    let mut pkt = vec![0u8; 1420];
    pkt[0] = 0x45;
    pkt[2..4].copy_from_slice(&1420u16.to_be_bytes());
    g.bench_function("encapsulate", |bench| {
        bench.iter(|| match ta.encapsulate(black_box(&pkt), &mut b1) {
            TunnResult::WriteToNetwork(b) => black_box(b.len()),
            _ => panic!("no data"),
        });
    });
    // Decrypt: a fresh sealed message each time (the replay window refuses repeats).
    g.bench_function("encapsulate_and_decapsulate", |bench| {
        bench.iter(|| {
            let sealed = match ta.encapsulate(&pkt, &mut b1) {
                TunnResult::WriteToNetwork(b) => b.to_vec(),
                _ => panic!("no data"),
            };
            match tb.decapsulate(None, &sealed, &mut b2) {
                TunnResult::WriteToTunnelV4(p, _) => black_box(p.len()),
                other => panic!("{other:?}"),
            }
        });
    });
    g.finish();
}

fn ed25519(c: &mut Criterion) {
    let msg = [0x42u8; 120]; // about a receipt body
    let key = ferry_receipts::SigningKey::from_seed(&[7; 32]);
    let public = key.public_key();
    c.bench_function("ed25519_sign_ring", |b| {
        b.iter(|| black_box(key.sign(b"ferry-bench", &msg)))
    });
    let sig = key.sign(b"", &msg);
    let ring_key = UnparsedPublicKey::new(&ED25519, public.as_bytes().to_vec());
    c.bench_function("ed25519_verify_ring", |b| {
        b.iter(|| ring_key.verify(black_box(&msg), sig.as_bytes()).unwrap());
    });
    let dk = DalekKey::from_bytes(&[7; 32]);
    let dsig = dk.sign(&msg);
    let vk: VerifyingKey = dk.verifying_key();
    c.bench_function("ed25519_verify_dalek", |b| {
        b.iter(|| vk.verify(black_box(&msg), &dsig).unwrap())
    });
    let mut g = c.benchmark_group("ed25519_batch_verify_64");
    g.throughput(Throughput::Elements(64));
    let keys: Vec<DalekKey> = (0..64u8).map(|i| DalekKey::from_bytes(&[i; 32])).collect();
    let msgs: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 120]).collect();
    let sigs: Vec<_> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
    let vks: Vec<VerifyingKey> = keys.iter().map(DalekKey::verifying_key).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    g.bench_function("dalek", |b| {
        b.iter(|| ed25519_dalek::verify_batch(black_box(&refs), &sigs, &vks).unwrap());
    });
    g.finish();
}

criterion_group!(benches, wireguard, ed25519);
criterion_main!(benches);
