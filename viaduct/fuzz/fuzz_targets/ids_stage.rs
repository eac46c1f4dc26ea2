//! Feeds sequences of arbitrary datagrams through an engine with the IDS
//! role, both ways: each chunk is `[flags, dt, len_hi, len_lo, bytes…]`
//! (flags: bit 0 inbound, black → red; else red → black). The policy
//! bypasses the SPD and accepts everything in the filter, so every datagram
//! the wire parser takes reaches the IDS stage: L4 payload extraction, the
//! stream table, inline admission, reassembly and the signatures (stream
//! and packet, TCP, UDP, ICMP and other protocols, `drop`, `dsize`,
//! relative contents, negations). Nothing may panic; every alert line is
//! one JSON object holding no control character; the report never fails.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy_blob::{Direction, FilterAction, Policy, Selector, SpdAction};
use viaduct::ledger::MemoryLedger;
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

fuzz_target!(|data: &[u8]| {
    let Ok(mut e) = Engine::new(&policy(), Timestamp(0), &mut MemoryLedger::default()) else {
        panic!("the harness's policy is valid");
    };
    let mut now = 0u64;
    let mut rest = data;
    let mut out = vec![0u8; 70_000];
    while rest.len() >= 4 {
        let (flags, dt) = (rest[0], rest[1]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let end = (4 + len).min(rest.len());
        let pkt = &rest[4..end];
        rest = &rest[end..];
        now += u64::from(dt) * u64::from(dt);
        if flags & 1 == 1 {
            let mut b = pkt.to_vec();
            let _ = e.inbound(&mut b, Timestamp(now));
        } else {
            let _ = e.outbound(pkt, &mut out, Timestamp(now));
        }
        for l in e.outbound.take_log().into_iter().chain(e.inbound.take_log()) {
            if l.starts_with("filter log") {
                continue;
            }
            assert!(l.starts_with("{\"event_type\":\"alert\"") && l.ends_with("}}"), "{l}");
            assert!(!l.chars().any(|c| c.is_control()), "{l}");
        }
    }
    let _ = e.outbound.report();
    let _ = e.inbound.report();
});
