//! ESP encap/decap per packet vs raw aws-lc-rs seal/open of the same size,
//! for each AEAD at 64 and 1400 bytes of inner packet.
//!
//! Run: `cargo bench -p viaduct --bench esp`

use std::net::{IpAddr, Ipv4Addr};

use aws_lc_rs::aead::{
    Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305,
};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use policy_blob::{Aead, Lifetimes, Spi, TunnelId};
use viaduct::{InboundSa, OutboundSa, Timestamp};

fn inner_packet(len: usize) -> Vec<u8> {
    let mut p = vec![0xabu8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[9] = 17;
    p
}

fn material(aead: Aead) -> Vec<u8> {
    (0..aead.key_material_len()).map(|i| i as u8).collect()
}

fn sas(aead: Aead) -> (OutboundSa, InboundSa) {
    let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
    let m = material(aead);
    let out = OutboundSa::new(
        TunnelId(1),
        Spi(0x1000),
        aead,
        &m,
        true,
        ip,
        ip,
        Lifetimes::default(),
        Timestamp(0),
    )
    .unwrap();
    let inb = InboundSa::new(
        TunnelId(1),
        Spi(0x1000),
        aead,
        &m,
        true,
        1024,
        Lifetimes::default(),
        Timestamp(0),
    )
    .unwrap();
    (out, inb)
}

fn raw_key(aead: Aead) -> LessSafeKey {
    let alg = match aead {
        Aead::Aes128Gcm16 => &AES_128_GCM,
        Aead::Aes256Gcm16 => &AES_256_GCM,
        Aead::ChaCha20Poly1305 => &CHACHA20_POLY1305,
    };
    LessSafeKey::new(UnboundKey::new(alg, &material(aead)[..aead.key_len()]).unwrap())
}

fn bench(c: &mut Criterion) {
    for aead in [Aead::Aes128Gcm16, Aead::Aes256Gcm16, Aead::ChaCha20Poly1305] {
        let mut g = c.benchmark_group(aead.to_string());
        for size in [64usize, 1400] {
            g.throughput(Throughput::Bytes(size as u64));
            let inner = inner_packet(size);
            let (mut out_sa, mut in_sa) = sas(aead);
            let mut out = vec![0u8; 2048];
            g.bench_with_input(BenchmarkId::new("esp_encap", size), &size, |b, _| {
                b.iter(|| out_sa.encap(&inner, &mut out, Timestamp(0)).unwrap())
            });
            let (mut sender, _) = sas(aead);
            g.bench_with_input(BenchmarkId::new("esp_decap", size), &size, |b, _| {
                b.iter_batched(
                    || {
                        let mut buf = vec![0u8; 2048];
                        let n = sender.encap(&inner, &mut buf, Timestamp(0)).unwrap();
                        buf.truncate(n);
                        buf
                    },
                    |mut pkt| in_sa.decap(&mut pkt[20..], Timestamp(0)).unwrap(),
                    BatchSize::SmallInput,
                )
            });
            let key = raw_key(aead);
            let mut buf = vec![0u8; size];
            let mut ctr = 0u64;
            g.bench_with_input(BenchmarkId::new("raw_seal", size), &size, |b, _| {
                b.iter(|| {
                    ctr += 1;
                    let mut n = [0u8; 12];
                    n[4..].copy_from_slice(&ctr.to_be_bytes());
                    key.seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(n),
                        Aad::from([0u8; 12]),
                        &mut buf,
                    )
                    .unwrap()
                })
            });
            let mut sealed = vec![0u8; size];
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key([0; 12]),
                    Aad::from([0u8; 12]),
                    &mut sealed,
                )
                .unwrap();
            sealed.extend_from_slice(tag.as_ref());
            g.bench_with_input(BenchmarkId::new("raw_open", size), &size, |b, _| {
                b.iter_batched(
                    || sealed.clone(),
                    |mut s| {
                        key.open_in_place(
                            Nonce::assume_unique_for_key([0; 12]),
                            Aad::from([0u8; 12]),
                            &mut s,
                        )
                        .map(|p| p.len())
                        .unwrap()
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
