//! ESP encap/decap per packet vs raw aws-lc-rs seal/open of the same size,
//! for each AEAD at 64 and 1400 bytes of inner packet, each without TFC
//! padding and with it (`tfc_classes`: sizes 128, 256, 512, 1024, 1400;
//! `tfc_1400`: every packet padded to 1400) in the same run; the Internet
//! checksum over 1400 bytes; `gso_split` of a 64000-byte TCPv4
//! super-packet. Throughput counts inner bytes, so padding shows as its
//! cost.
//!
//! Run: `cargo bench -p viaduct --bench esp` (one AEAD and the ESP
//! benches only: `cargo bench -p viaduct --bench esp -- 'aes128gcm16/esp_'`)

use std::net::{IpAddr, Ipv4Addr};

use aws_lc_rs::aead::{
    Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305,
};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use policy_blob::{Aead, Lifetimes, Spi, TunnelId};
use viaduct::offload::{gso_split, VnetHdr, GSO_TCPV4, VIRTIO_NET_HDR_F_NEEDS_CSUM};
use viaduct::wire::{fold, internet_checksum, pseudo_header_sum};
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

/// TFC padding variants: (bench name suffix, sizes).
const TFC: [(&str, &[u16]); 3] = [
    ("", &[]),
    ("_tfc_classes", &[128, 256, 512, 1024, 1400]),
    ("_tfc_1400", &[1400]),
];

fn bench(c: &mut Criterion) {
    for aead in [Aead::Aes128Gcm16, Aead::Aes256Gcm16, Aead::ChaCha20Poly1305] {
        let mut g = c.benchmark_group(aead.to_string());
        for size in [64usize, 1400] {
            g.throughput(Throughput::Bytes(size as u64));
            let inner = inner_packet(size);
            for (suffix, tfc) in TFC {
                let (mut out_sa, mut in_sa) = sas(aead);
                out_sa.set_tfc_sizes(tfc);
                let mut out = vec![0u8; 2048];
                let id = format!("esp_encap{suffix}");
                g.bench_with_input(BenchmarkId::new(id, size), &size, |b, _| {
                    b.iter(|| out_sa.encap(&inner, &mut out, Timestamp(0)).unwrap())
                });
                let (mut sender, _) = sas(aead);
                sender.set_tfc_sizes(tfc);
                let id = format!("esp_decap{suffix}");
                g.bench_with_input(BenchmarkId::new(id, size), &size, |b, _| {
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
            }
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

/// A TCPv4 super-packet of `len` bytes as a TUN read returns it: the TCP
/// check field holds the folded pseudo-header sum.
fn tcp4_super(len: usize, gso_size: u16) -> (Vec<u8>, VnetHdr) {
    let mut p: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    p[..20].copy_from_slice(&[
        0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 1, 0, 1, 10, 2, 0, 7,
    ]);
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    let c = internet_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x18;
    let ps = fold(pseudo_header_sum(
        &p[12..16],
        &p[16..20],
        6,
        (len - 20) as u32,
    ));
    p[36..38].copy_from_slice(&ps.to_be_bytes());
    let h = VnetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 40,
        gso_size,
        csum_start: 20,
        csum_offset: 16,
    };
    (p, h)
}

fn bench_offload(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    let data: Vec<u8> = (0..1400).map(|i| i as u8).collect();
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("internet_checksum/1400", |b| {
        b.iter(|| internet_checksum(std::hint::black_box(&data)))
    });
    g.finish();

    let mut g = c.benchmark_group("offload");
    let (pkt, h) = tcp4_super(64000, 1348);
    let mut scratch = vec![0u8; 65535];
    g.throughput(Throughput::Bytes(pkt.len() as u64));
    g.bench_function("gso_split/64000/1348", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            gso_split(&pkt, &h, &mut scratch, |s| bytes += s.len()).unwrap();
            bytes
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_offload);
criterion_main!(benches);
