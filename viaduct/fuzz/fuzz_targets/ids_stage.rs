//! Feeds sequences of arbitrary datagrams to the IDS stage, both ways, with
//! a connection table telling it each packet's flow, as the engine does:
//! each chunk is `[flags, dt, len_hi, len_lo, bytes…]` (flags: bit 0
//! inbound, black → red; else red → black). Every datagram the wire parser
//! takes reaches the stage (the first input of a process also goes through
//! a whole engine whose policy bypasses the SPD and accepts everything): L4 payload extraction, the
//! stream table, inline admission, reassembly and the signatures (stream
//! and packet, TCP, UDP, ICMP and other protocols, `drop`, `dsize`,
//! relative contents, negations). Nothing may panic; every alert line is
//! one JSON object holding no control character; the report never fails.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use policy_blob::{Direction, FilterAction, Policy, Selector, SpdAction};
use viaduct::conntrack::{CtState, Timeouts, Tracker};
use viaduct::ids::{FlowInfo, IdsStage};
use viaduct::ledger::MemoryLedger;
use viaduct::wire::ip::five_tuple;
use viaduct::{Engine, Timestamp};
use viaduct_ids::{
    Action, ContentMatch, DsizeMatch, FlowDirection, FlowMatch, FlowState, Proto, Signature,
};

fn sig(sid: u32, action: Action, proto: Proto, contents: Vec<ContentMatch>) -> Signature {
    let mut s = Signature::any(sid, proto, contents);
    s.action = action;
    s.msg = format!("sig \"{sid}\"\n\u{1}");
    s
}

fn policy() -> Policy {
    let mut p = Policy::new("fuzz-ids", "1");
    for (any, name) in [(Selector::any_v4(), "v4"), (Selector::any_v6(), "v6")] {
        p = p
            .with_spd(name, any.clone(), SpdAction::Bypass)
            .with_filter(name, Direction::Outbound, any.clone(), FilterAction::Accept)
            .with_filter(name, Direction::Inbound, any, FilterAction::Accept);
    }
    p.filter_max_flows = 16;
    let mut established = sig(
        3,
        Action::Alert,
        Proto::Tcp,
        vec![
            ContentMatch {
                nocase: true,
                depth: Some(64),
                ..ContentMatch::new(b"GET ")
            },
            ContentMatch {
                distance: Some(-2),
                within: Some(40),
                ..ContentMatch::new(b"() {")
            },
            ContentMatch {
                negated: true,
                ..ContentMatch::new(b"safe")
            },
        ],
    );
    established.flow = FlowMatch {
        direction: Some(FlowDirection::ToServer),
        state: Some(FlowState::Established),
    };
    let mut sized = sig(5, Action::Alert, Proto::Udp, vec![ContentMatch::new(b"zz")]);
    sized.dsize = Some(DsizeMatch::Range(2, 100));
    let mut reply = sig(6, Action::Drop, Proto::Tcp, vec![ContentMatch::new(b"EVIL")]);
    reply.flow.direction = Some(FlowDirection::ToClient);
    reply.src = viaduct_ids::AddrMatch::from_ranges(vec![(0, u32::MAX >> 1)], vec![]);
    p.with_ids(vec![
        sig(1, Action::Drop, Proto::Tcp, vec![ContentMatch::new(b"attack")]),
        sig(2, Action::Alert, Proto::Ip, vec![ContentMatch::new(b"\x00\x01")]),
        established,
        sig(4, Action::Alert, Proto::Icmp, vec![ContentMatch::new(b"ping")]),
        sized,
        reply,
    ])
}

/// The signatures, built once: building them (two Aho-Corasick automata)
/// per input would cost more than the input's packets.
fn signatures() -> Arc<viaduct_ids::Engine> {
    static SIGS: OnceLock<Arc<viaduct_ids::Engine>> = OnceLock::new();
    SIGS.get_or_init(|| {
        let sigs = policy().ids.map(|i| i.signatures).unwrap_or_default();
        Arc::new(viaduct_ids::Engine::new(sigs).expect("the harness's signatures build"))
    })
    .clone()
}

/// The first input of each process also runs through a whole engine (the
/// stage wired into the pipeline); the rest drive the two stages and a
/// connection table directly, as the engine does, at a fuzzer's pace.
fuzz_target!(|data: &[u8]| {
    static WHOLE: OnceLock<()> = OnceLock::new();
    if WHOLE.set(()).is_ok() {
        whole_engine(data);
    }
    let sigs = signatures();
    let mut stages = [
        IdsStage::new(sigs.clone(), "red-to-black", 16),
        IdsStage::new(sigs, "black-to-red", 16),
    ];
    let mut table = Tracker::new(16, Timeouts::default());
    let mut now = 0u64;
    for (inbound, dt, pkt) in chunks(data) {
        now += u64::from(dt) * u64::from(dt);
        let Ok(t) = five_tuple(pkt) else { continue };
        let dir = if inbound {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        let c = table.classify(dir, pkt, &t, Timestamp(now));
        let flow = c.from_originator().map(|to_server| FlowInfo {
            to_server,
            established: c.state == CtState::Established,
        });
        let stage = &mut stages[usize::from(inbound)];
        if stage.inspect(pkt, &t, flow, Timestamp(now)).is_ok() && table.has_room(&c, Timestamp(now)) {
            table.commit(&c, 1, None, Timestamp(now));
        }
        check_lines(stage.take_lines());
        let mut report = String::new();
        stage.write_report(&mut report, "x");
    }
});

/// `[flags, dt, len_hi, len_lo, bytes…]` chunks: (inbound, dt, datagram).
fn chunks(data: &[u8]) -> impl Iterator<Item = (bool, u8, &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let (flags, dt) = (rest[0], rest[1]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let end = (4 + len).min(rest.len());
        let pkt = &rest[4..end];
        rest = &rest[end..];
        Some((flags & 1 == 1, dt, pkt))
    })
}

/// Every alert line is one printable JSON object.
fn check_lines(lines: Vec<String>) {
    for l in lines {
        if l.starts_with("filter log") {
            continue;
        }
        assert!(l.starts_with("{\"event_type\":\"alert\"") && l.ends_with("}}"), "{l}");
        assert!(l.bytes().all(|b| (0x20..0x7f).contains(&b)), "{l}");
    }
}

fn whole_engine(data: &[u8]) {
    let Ok(mut e) = Engine::new(&policy(), Timestamp(0), &mut MemoryLedger::default()) else {
        panic!("the harness's policy is valid");
    };
    let mut now = 0u64;
    let mut out = vec![0u8; 70_000];
    for (inbound, dt, pkt) in chunks(data) {
        now += u64::from(dt) * u64::from(dt);
        if inbound {
            let mut b = pkt.to_vec();
            let _ = e.inbound(&mut b, Timestamp(now));
        } else {
            let _ = e.outbound(pkt, &mut out, Timestamp(now));
        }
        check_lines(e.outbound.take_log());
        check_lines(e.inbound.take_log());
    }
    let _ = e.outbound.report();
    let _ = e.inbound.report();
}
