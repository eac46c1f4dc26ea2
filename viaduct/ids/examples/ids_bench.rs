//! The engine over a whole capture, as `scripts/bench-ids` runs it beside
//! Suricata: `ids_bench PCAP RULES` reads the rules (Suricata syntax, through
//! the host-side parser), then times the flow driver of the tests (every
//! packet inspected, every TCP stream reassembled and its windows
//! inspected) over the capture's packets on one core, and prints
//! `frames=N bytes=B seconds=S gbits=G alerts=A` (bytes: whole frames, as
//! Suricata's decoder counts them). Parsing the capture is not timed.

#[allow(dead_code)]
#[path = "../tests/ids/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "../tests/ids/pcap.rs"]
mod pcap;

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(cap), Some(rules)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: ids_bench PCAP RULES");
        std::process::exit(2);
    };
    let data = std::fs::read(cap).unwrap_or_else(|e| panic!("{cap}: {e}"));
    let text = std::fs::read_to_string(rules).unwrap_or_else(|e| panic!("{rules}: {e}"));
    let set = ids_rules::parse(&text, &ids_rules::Vars::suricata_defaults());
    if !set.refused.is_empty() {
        eprintln!(
            "ids_bench: {} rules refused, e.g. {}",
            set.refused.len(),
            set.refused[0]
        );
        std::process::exit(1);
    }
    let sigs: Vec<_> = set.rules.iter().map(common::signature).collect();
    let engine = viaduct_ids::Engine::new(sigs).expect("the engine builds");
    let frames = frame_bytes(&data);
    let pkts = pcap::read(&data);
    let t = Instant::now();
    let alerts = pcap::run(&engine, &pkts);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "frames={} bytes={} seconds={secs:.4} gbits={:.3} alerts={}",
        frames.0,
        frames.1,
        frames.1 as f64 * 8.0 / secs / 1e9,
        alerts.len()
    );
}

/// Frames and their captured bytes in a classic pcap.
fn frame_bytes(d: &[u8]) -> (usize, usize) {
    let (mut n, mut bytes, mut off) = (0, 0, 24);
    while let Some(h) = d.get(off..off + 16) {
        let incl = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        off += 16 + incl;
        if off > d.len() {
            break;
        }
        n += 1;
        bytes += incl;
    }
    (n, bytes)
}
