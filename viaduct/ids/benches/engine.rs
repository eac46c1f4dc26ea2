//! Throughput of packet inspection on the dpkt captures' payloads
//! (repeated), with 100 and 5,000 content signatures whose patterns come from
//! the sagan-rules corpus (`content:` strings of at least 4 bytes).
//! Criterion reports bytes/s; Gbit/s = GiB/s × 8.59.

use std::collections::BTreeSet;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use viaduct_ids::{Buffer, ContentMatch, Engine, Packet, Proto, Scratch, Signature};

/// TCP and UDP payloads of the Ethernet/IPv4 captures.
fn payloads() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/usr/share/doc/python3-dpkt/examples/data") else {
        return out;
    };
    for f in rd.flatten() {
        let Ok(d) = std::fs::read(f.path()) else {
            continue;
        };
        let mut off = 24;
        while let Some(h) = d.get(off..off + 16) {
            let incl = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
            let Some(fr) = d.get(off + 16..off + 16 + incl) else {
                break;
            };
            off += 16 + incl;
            if fr.len() < 34 || fr[12..14] != [8, 0] {
                continue;
            }
            let ip = &fr[14..];
            let ihl = usize::from(ip[0] & 15) * 4;
            let Some(l4) = ip.get(ihl..) else { continue };
            let pl = match ip[9] {
                6 => l4.get(usize::from(l4.get(12).copied().unwrap_or(0) >> 4) * 4..),
                17 => l4.get(8..),
                _ => None,
            };
            if let Some(p) = pl.filter(|p| !p.is_empty()) {
                out.push(p.to_vec());
            }
        }
    }
    out
}

/// Distinct plain `content:"…"` strings of at least 4 bytes from sagan.
fn sagan_patterns() -> Vec<Vec<u8>> {
    let mut set = BTreeSet::new();
    let Ok(rd) = std::fs::read_dir("/etc/sagan-rules") else {
        return Vec::new();
    };
    for f in rd.flatten() {
        let Ok(t) = std::fs::read_to_string(f.path()) else {
            continue;
        };
        // `content:"…"`, `content: "…"` and negated forms alike.
        for part in t.split("content:").skip(1) {
            let part = part.trim_start().trim_start_matches('!').trim_start();
            let Some(part) = part.strip_prefix('"') else {
                continue;
            };
            let Some(end) = part.find('"') else { continue };
            let s = &part[..end];
            if s.len() >= 4 && !s.contains('|') && !s.contains('\\') {
                set.insert(s.as_bytes().to_vec());
            }
        }
    }
    set.into_iter().collect()
}

fn engine(pats: &[Vec<u8>], n: usize) -> Engine {
    let sigs = pats
        .iter()
        .cycle()
        .take(n)
        .enumerate()
        .map(|(i, p)| {
            let c = ContentMatch {
                nocase: i % 4 == 0,
                ..ContentMatch::new(p)
            };
            Signature::any(i as u32 + 1, Proto::Tcp, vec![c])
        })
        .collect();
    Engine::new(sigs).expect("engine")
}

fn bench(c: &mut Criterion) {
    let pl = payloads();
    let pats = sagan_patterns();
    eprintln!("{} distinct sagan content strings", pats.len());
    if pl.is_empty() || pats.len() < 100 {
        eprintln!(
            "\n!!!!!!!! SKIPPED: python3-dpkt captures or /etc/sagan-rules missing !!!!!!!!\n"
        );
        return;
    }
    let repeat = 20;
    let total: usize = pl.iter().map(Vec::len).sum::<usize>() * repeat;
    let pkt = Packet {
        proto: Proto::Tcp,
        src: IpAddr::from([10, 0, 0, 1]),
        dst: IpAddr::from([10, 0, 0, 2]),
        src_port: 1000,
        dst_port: 80,
        to_server: true,
        established: true,
        dsize: 0,
    };
    let mut g = c.benchmark_group("inspect");
    g.throughput(Throughput::Bytes(total as u64));
    for n in [100usize, 5000] {
        let e = engine(&pats, n.min(pats.len()));
        let mut scratch = Scratch::default();
        let mut out = Vec::new();
        g.bench_function(format!("{n}_rules"), |b| {
            b.iter(|| {
                out.clear();
                for _ in 0..repeat {
                    for p in &pl {
                        e.inspect_with(&mut scratch, &pkt, Buffer::packet(p), &mut out);
                    }
                }
                out.len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
