//! The filter stage per packet, red → black in clear (SPD bypass, so the
//! figures are the filter's and the copy's, no ESP), 64-byte TCP segments:
//!
//! - `stateless_1000_rules`: today's stateless filter, 1,000 rules, the
//!   packet accepted by the last (every rule looked at: the worst case of a
//!   first-match list);
//! - `stateful_1000_rules_100k_flows`: the same 1,000 rules after a
//!   `state = ["established", "related"]` rule, 100,000 established flows
//!   (handshakes done), each packet one of them (spread over the table):
//!   the lock, the hash lookup, the first rule, the record after it;
//! - `stateful_open_1000_rules`: a new flow per packet, accepted by the last
//!   rule and entered (a fresh engine, so an empty table, every 100,000
//!   openings, made outside the clock).
//!
//! Run: `cargo bench -p viaduct --bench filter`.

use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use policy_blob::*;
use viaduct::{Engine, MemoryLedger, Timestamp, Verdict};

const FLOWS: u32 = 100_000;
const RULES: u32 = 1_000;

fn tcp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, flags: u8) -> Vec<u8> {
    let mut p = vec![0u8; 64];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&64u16.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..22].copy_from_slice(&sp.to_be_bytes());
    p[22..24].copy_from_slice(&dp.to_be_bytes());
    p[32] = 0x50;
    p[33] = flags;
    p
}

/// `RULES - 1` rules that never match the benchmark's packets (drops of
/// other sources to other ports), then one that accepts them.
fn rules(mut p: Policy) -> Policy {
    for i in 0..RULES - 1 {
        let src = Ipv4Addr::from(0xc000_0000u32 + (i << 8));
        p = p.with_filter(
            format!("r{i}"),
            Direction::Outbound,
            Selector {
                src: Prefix::new(src.into(), 24),
                protocol: Protocol::TCP,
                dst_ports: PortRange::single(10_000 + i as u16),
                ..Selector::any_v4()
            },
            FilterAction::Drop,
        );
    }
    p.with_filter(
        "lan-out",
        Direction::Outbound,
        Selector {
            src: Prefix::new(Ipv4Addr::new(10, 1, 0, 0).into(), 16),
            protocol: Protocol::TCP,
            ..Selector::any_v4()
        },
        FilterAction::Accept,
    )
}

fn base() -> Policy {
    Policy::new("bench", "1")
        .with_spd("all", Selector::any_v4(), SpdAction::Bypass)
        .with_default_filter(FilterAction::Drop)
        .with_max_flows(FLOWS + 1)
}

fn stateful() -> Policy {
    let p = base()
        .with_filter(
            "tracked-in",
            Direction::Inbound,
            Selector::any_v4(),
            FilterAction::Accept,
        )
        .with_states(FilterStates(
            FilterStates::ESTABLISHED | FilterStates::RELATED,
        ))
        .with_filter(
            "tracked-out",
            Direction::Outbound,
            Selector::any_v4(),
            FilterAction::Accept,
        )
        .with_states(FilterStates(
            FilterStates::ESTABLISHED | FilterStates::RELATED,
        ));
    rules(p)
}

fn engine(p: &Policy) -> Engine {
    Engine::new(p, Timestamp(0), &mut MemoryLedger::default()).unwrap()
}

/// The i-th flow's client address and port.
fn client(i: u32) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::from(0x0a01_0000u32 + (i >> 12)),
        40_000 + (i & 0xfff) as u16,
    )
}

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 80);

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("filter");
    g.throughput(Throughput::Elements(1));
    let mut out = [0u8; 256];

    let mut e = engine(&rules(base()));
    let (a, p) = client(7);
    let pkt = tcp(a, p, SERVER, 443, 0x10);
    assert!(matches!(
        e.outbound(&pkt, &mut out, Timestamp(0)),
        Verdict::Send(_)
    ));
    g.bench_function("stateless_1000_rules", |b| {
        b.iter(|| e.outbound(std::hint::black_box(&pkt), &mut out, Timestamp(0)))
    });

    let mut e = engine(&stateful());
    // Each flow's handshake: SYN out, SYN-ACK in, ACK out (established).
    for i in 0..FLOWS {
        let (a, p) = client(i);
        let syn = tcp(a, p, SERVER, 443, 0x02);
        assert!(matches!(
            e.outbound(&syn, &mut out, Timestamp(0)),
            Verdict::Send(_)
        ));
        let mut synack = tcp(SERVER, 443, a, p, 0x12);
        assert!(matches!(
            e.inbound(&mut synack, Timestamp(0)),
            Verdict::Send(_)
        ));
        let ack = tcp(a, p, SERVER, 443, 0x10);
        assert!(matches!(
            e.outbound(&ack, &mut out, Timestamp(0)),
            Verdict::Send(_)
        ));
    }
    assert!(e
        .outbound
        .report()
        .contains(&format!("conntrack flows={FLOWS} ")));
    // Packets of flows spread over the table (a stride coprime to FLOWS).
    let pkts: Vec<Vec<u8>> = (0..4096u32)
        .map(|k| {
            let (a, p) = client((k * 7919) % FLOWS);
            tcp(a, p, SERVER, 443, 0x10)
        })
        .collect();
    let mut k = 0usize;
    g.bench_function("stateful_1000_rules_100k_flows", |b| {
        b.iter(|| {
            k = (k + 1) & 4095;
            e.outbound(std::hint::black_box(&pkts[k]), &mut out, Timestamp(1))
        })
    });

    let policy = stateful();
    let syns: Vec<Vec<u8>> = (0..FLOWS)
        .map(|i| {
            let (a, p) = client(i);
            tcp(a, p, SERVER, 443, 0x02)
        })
        .collect();
    g.bench_function("stateful_open_1000_rules", |b| {
        // Timed: the openings only; a fresh engine (empty table) every
        // FLOWS openings, made outside the clock.
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(u64::from(FLOWS)) as usize;
                let mut e = engine(&policy);
                let start = std::time::Instant::now();
                for syn in &syns[..n] {
                    std::hint::black_box(e.outbound(
                        std::hint::black_box(syn),
                        &mut out,
                        Timestamp(0),
                    ));
                }
                total += start.elapsed();
                left -= n as u64;
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
