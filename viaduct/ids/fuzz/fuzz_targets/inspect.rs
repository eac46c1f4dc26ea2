//! Arbitrary segments (sequence numbers, flags, payloads) through both
//! directions' reassemblers and the inspector of a small fixed engine.
//! Checks: no panic; windows stay within the configured bounds; every hit
//! names a signature of the engine.

#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use viaduct_ids::{
    Buffer, ContentMatch, DsizeMatch, Engine, Packet, Proto, Reassembler, ReassemblyConfig,
    Scratch, Signature,
};

fn c(b: &[u8]) -> ContentMatch {
    ContentMatch::new(b)
}

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        let mut sigs = vec![
            Signature::any(
                1,
                Proto::Tcp,
                vec![
                    c(b"GET"),
                    ContentMatch {
                        distance: Some(0),
                        within: Some(4),
                        ..c(b"/")
                    },
                ],
            ),
            Signature::any(
                2,
                Proto::Tcp,
                vec![ContentMatch {
                    nocase: true,
                    ..c(b"attack")
                }],
            ),
            Signature::any(
                3,
                Proto::Ip,
                vec![
                    c(b"a"),
                    ContentMatch {
                        distance: Some(0),
                        within: Some(2),
                        ..c(b"a")
                    },
                    ContentMatch {
                        distance: Some(-3),
                        within: Some(4),
                        ..c(b"b")
                    },
                ],
            ),
            Signature::any(
                4,
                Proto::Tcp,
                vec![
                    ContentMatch {
                        offset: Some(2),
                        depth: Some(6),
                        ..c(b"xyz")
                    },
                    ContentMatch {
                        negated: true,
                        distance: Some(0),
                        ..c(b"q")
                    },
                ],
            ),
            Signature::any(
                5,
                Proto::Tcp,
                vec![
                    ContentMatch {
                        fast_pattern: true,
                        ..c(b"ab")
                    },
                    ContentMatch {
                        offset: Some(100),
                        ..c(b"abcdefgh")
                    },
                ],
            ),
        ];
        sigs[1].bidirectional = true;
        sigs[3].dsize = Some(DsizeMatch::Range(2, 50));
        Engine::new(sigs).expect("fixed engine")
    })
}

fuzz_target!(|data: &[u8]| {
    let e = engine();
    let cfg = ReassemblyConfig {
        depth: 4096,
        max_ooo_segments: 8,
        max_ooo_bytes: 1024,
        ..ReassemblyConfig::for_engine(e)
    };
    let mut dirs = [Reassembler::new(cfg), Reassembler::new(cfg)];
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    let mut rest = data;
    // Each record: [flags] [seq: 4] [len] payload.
    while rest.len() >= 6 {
        let flags = rest[0];
        let seq = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]);
        let len = usize::from(rest[5]).min(rest.len() - 6);
        let payload = &rest[6..6 + len];
        rest = &rest[6 + len..];
        let dir = usize::from(flags & 1);
        let pkt = Packet {
            proto: if flags & 2 != 0 {
                Proto::Tcp
            } else {
                Proto::Udp
            },
            src: IpAddr::from([10, 0, 0, 1 + dir as u8]),
            dst: IpAddr::from([10, 0, 0, 2 - dir as u8]),
            src_port: 1000,
            dst_port: 80,
            to_server: dir == 0,
            established: flags & 4 != 0,
            dsize: payload.len(),
        };
        if flags & 8 != 0 {
            dirs[dir].syn(seq);
        }
        e.inspect_with(&mut scratch, &pkt, Buffer::packet(payload), &mut out);
        if let Some(w) = dirs[dir].segment(seq, payload) {
            assert!(w.new_from <= cfg.lookback && w.new_from < w.data.len());
            assert!(w.data.len() <= cfg.lookback + 255 + cfg.max_ooo_bytes);
            assert!(w.stream_offset + w.data.len() as u64 <= cfg.depth);
            e.inspect_with(&mut scratch, &pkt, w.buffer(), &mut out);
        }
        for h in &out {
            assert!(e.signatures().iter().any(|s| s.sid == h.sid));
        }
        out.clear();
    }
});
