//! The engine's semantics, one modifier at a time, on packets and streams.

use std::net::IpAddr;

use viaduct_ids::{
    fast_pattern, BuildError, ContentMatch, Engine, Proto, Reassembler, ReassemblyConfig, Scratch,
    Signature,
};

use crate::common::{engine, sids, signatures, tcp};

fn one(opts: &str) -> Engine {
    engine(&format!(
        "alert tcp any any -> any any (msg:\"t\"; {opts} sid:1;)"
    ))
}

fn hits(opts: &str, payload: &str) -> bool {
    let e = one(opts);
    !sids(&e, &tcp(payload.len()), payload.as_bytes()).is_empty()
}

#[test]
fn offset_and_depth_are_absolute() {
    assert!(hits("content:\"abc\"; offset:2;", "xxabc"));
    assert!(!hits("content:\"abc\"; offset:3;", "xxabc"));
    assert!(hits("content:\"abc\"; depth:5;", "xxabc"));
    assert!(!hits("content:\"abc\"; depth:4;", "xxabc"));
    // depth counts from offset.
    assert!(hits("content:\"abc\"; offset:2; depth:3;", "xxabcx"));
    assert!(!hits("content:\"abc\"; offset:1; depth:3;", "xxabcx"));
    // The first occurrence outside the window does not hide a later one.
    assert!(hits("content:\"abc\"; offset:3;", "abcxabc"));
}

#[test]
fn distance_and_within_are_relative_to_the_previous_match() {
    let r = "content:\"ab\"; content:\"cd\";";
    assert!(hits(&format!("{r} distance:2;"), "abxxcd"));
    assert!(!hits(&format!("{r} distance:3;"), "abxxcd"));
    assert!(hits(&format!("{r} within:4;"), "abxxcd"));
    assert!(!hits(&format!("{r} within:3;"), "abxxcd"));
    assert!(hits(&format!("{r} distance:1; within:3;"), "abxxcd"));
    // Negative distance reaches back before the previous match's end.
    assert!(hits(
        "content:\"cd\"; content:\"ab\"; distance:-4; within:2;",
        "abcd"
    ));
    assert!(!hits(
        "content:\"cd\"; content:\"ab\"; distance:-3; within:2;",
        "abcd"
    ));
    // On the first content: relative to the buffer start.
    assert!(hits("content:\"cd\"; distance:2;", "abcd"));
    assert!(!hits("content:\"cd\"; distance:3;", "abcd"));
}

#[test]
fn negation_and_nocase() {
    assert!(hits("content:\"GET\"; content:!\"evil\";", "GET /x"));
    assert!(!hits("content:\"GET\"; content:!\"evil\";", "GET /evil"));
    // A negated relative content is checked in its window only.
    assert!(hits(
        "content:\"GET\"; content:!\"evil\"; distance:0; within:6;",
        "GET /abcdevil"
    ));
    assert!(!hits(
        "content:\"GET\"; content:!\"evil\"; distance:0; within:10;",
        "GET /abcdevil"
    ));
    assert!(hits("content:\"HOST\"; nocase;", "xhOsT"));
    assert!(!hits("content:\"HOST\";", "xhOsT"));
    assert!(hits("content:\"a|00|B\"; nocase;", "A\0b"));
}

#[test]
fn backtracking_finds_a_later_occurrence() {
    assert!(hits(
        "content:\"a\"; content:\"b\"; distance:0; within:1;",
        "a a ab"
    ));
    assert!(!hits(
        "content:\"a\"; content:\"b\"; distance:0; within:1;",
        "a a a b"
    ));
    // Three levels.
    assert!(hits(
        "content:\"a\"; content:\"b\"; distance:0; within:2; content:\"c\"; distance:0; within:1;",
        "ab a bc axbxc abc"
    ));
}

#[test]
fn hostile_payload_is_bounded_and_counted() {
    let e = one(
        "content:\"a\"; content:\"a\"; distance:0; within:2; content:\"b\"; distance:0; within:1;",
    );
    let payload = vec![b'a'; 60_000];
    let mut out = Vec::new();
    let stats = e.inspect(&tcp(payload.len()), &payload, &mut out);
    assert!(out.is_empty());
    assert_eq!(stats.budget_exhausted, 1);
}

#[test]
fn headers_ports_and_bidirectional() {
    let e = engine(concat!(
        "alert tcp 10.0.0.1 any -> 10.0.0.2 80 (content:\"x\"; sid:1;)\n",
        "alert tcp 10.0.0.2 80 -> 10.0.0.1 any (content:\"x\"; sid:2;)\n",
        "alert tcp 10.0.0.2 80 <> 10.0.0.1 any (content:\"x\"; sid:3;)\n",
        "alert udp any any -> any any (content:\"x\"; sid:4;)\n",
        "alert ip any any -> any any (content:\"x\"; sid:5;)\n",
        "alert tcp any any -> any 81 (content:\"x\"; sid:6;)\n",
        "alert tcp any any -> [fd00::/8] any (content:\"x\"; sid:7;)\n",
    ));
    assert_eq!(sids(&e, &tcp(1), b"x"), vec![1, 3, 5]);
    let mut v6 = tcp(1);
    v6.dst = "fd00::1".parse::<IpAddr>().unwrap();
    v6.src = "fd00::2".parse::<IpAddr>().unwrap();
    assert_eq!(sids(&e, &v6, b"x"), vec![5, 7]);
}

#[test]
fn flow_conditions() {
    let e = engine(concat!(
        "alert tcp any any -> any any (flow:to_server; content:\"x\"; sid:1;)\n",
        "alert tcp any any -> any any (flow:to_client; content:\"x\"; sid:2;)\n",
        "alert tcp any any -> any any (flow:established; content:\"x\"; sid:3;)\n",
        "alert tcp any any -> any any (flow:not_established; content:\"x\"; sid:4;)\n",
        "alert tcp any any -> any any (flow:to_server,established; content:\"x\"; sid:5;)\n",
    ));
    assert_eq!(sids(&e, &tcp(1), b"x"), vec![1, 3, 5]);
    let mut p = tcp(1);
    p.to_server = false;
    p.established = false;
    assert_eq!(sids(&e, &p, b"x"), vec![2, 4]);
}

#[test]
fn dsize_applies_to_packets_only() {
    let e = engine(concat!(
        "alert tcp any any -> any any (dsize:<5; content:\"ab\"; sid:1;)\n",
        "alert tcp any any -> any any (dsize:3<>10; content:\"ab\"; sid:2;)\n",
    ));
    assert_eq!(sids(&e, &tcp(3), b"abx"), vec![1]);
    assert_eq!(sids(&e, &tcp(4), b"abxy"), vec![1, 2]);
    // A stream window never satisfies dsize.
    let mut r = Reassembler::new(ReassemblyConfig::for_engine(&e));
    let w = r.segment(1, b"ab").unwrap();
    let mut out = Vec::new();
    e.inspect_with(&mut Scratch::default(), &tcp(2), w.buffer(), &mut out);
    assert!(out.is_empty());
}

#[test]
fn the_prefilter_uses_the_fast_pattern() {
    let s = &signatures(concat!(
        "alert tcp any any -> any any (content:\"ab\"; content:\"longest\"; content:!\"neverlonger\"; sid:1;)\n",
        "alert tcp any any -> any any (content:\"ab\"; fast_pattern; content:\"longest\"; sid:2;)\n",
    ));
    assert_eq!(fast_pattern(&s[0]), Some(1));
    assert_eq!(fast_pattern(&s[1]), Some(0));
    let e = Engine::new(s.clone()).unwrap();
    let mut out = Vec::new();
    let stats = e.inspect(&tcp(2), b"ab", &mut out);
    // Only sid 2 is a candidate (its fast pattern occurs); neither matches.
    assert_eq!((stats.candidates, out.len()), (1, 0));
    let stats = e.inspect(&tcp(9), b"ablongest", &mut out);
    assert_eq!(stats.candidates, 2);
    assert_eq!(out.iter().map(|h| h.sid).collect::<Vec<_>>(), vec![1, 2]);
    // A nocase fast pattern goes through the case-insensitive automaton.
    let e = one("content:\"HeLLo\"; nocase;");
    assert_eq!(sids(&e, &tcp(5), b"hello"), vec![1]);
}

#[test]
fn build_refusals() {
    let mut s = Signature::any(1, Proto::Tcp, vec![]);
    assert!(matches!(
        Engine::new(vec![s.clone()]),
        Err(BuildError::Content { .. })
    ));
    s.contents = vec![ContentMatch::new(b"")];
    assert!(matches!(
        Engine::new(vec![s.clone()]),
        Err(BuildError::Content { .. })
    ));
    s.contents = vec![ContentMatch {
        negated: true,
        ..ContentMatch::new(b"a")
    }];
    assert!(matches!(
        Engine::new(vec![s.clone()]),
        Err(BuildError::Content { .. })
    ));
    s.contents = vec![ContentMatch {
        depth: Some(1),
        ..ContentMatch::new(b"ab")
    }];
    assert!(matches!(
        Engine::new(vec![s.clone()]),
        Err(BuildError::Content { .. })
    ));
    s.contents = vec![ContentMatch::new(b"a")];
    assert_eq!(
        Engine::new(vec![s.clone(), s.clone()]).err(),
        Some(BuildError::BadSid { sid: 1 })
    );
    let many = (1..=viaduct_ids::MAX_SIGNATURES as u32 + 1)
        .map(|i| Signature::any(i, Proto::Tcp, vec![ContentMatch::new(b"a")]))
        .collect();
    assert!(matches!(
        Engine::new(many),
        Err(BuildError::TooManySignatures { .. })
    ));
    assert!(Engine::new(vec![]).is_ok());
}

/// Feeds segments (seq, bytes) to one direction; returns the sids per window.
fn stream(e: &Engine, cfg: ReassemblyConfig, segs: &[(u32, &[u8])]) -> (Vec<u32>, Reassembler) {
    let mut r = Reassembler::new(cfg);
    r.syn(0);
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    for &(seq, data) in segs {
        if let Some(w) = r.segment(seq, data) {
            e.inspect_with(&mut scratch, &tcp(data.len()), w.buffer(), &mut out);
        }
    }
    (out.iter().map(|h| h.sid).collect(), r)
}

#[test]
fn split_patterns_match_once_per_occurrence() {
    let e = one("content:\"attack\";");
    let cfg = ReassemblyConfig::for_engine(&e);
    assert_eq!(stream(&e, cfg, &[(1, b"xxat"), (5, b"tackyy")]).0, vec![1]);
    assert_eq!(
        stream(&e, cfg, &[(1, b"xat"), (4, b"ta"), (6, b"ckz")]).0,
        vec![1]
    );
    // Two occurrences, each reported once; the retained bytes never re-match.
    assert_eq!(
        stream(
            &e,
            cfg,
            &[(1, b"attack"), (7, b"a"), (8, b"ttack"), (13, b"x")]
        )
        .0,
        vec![1, 1]
    );
}

#[test]
fn stream_chains_and_absolute_positions() {
    let e = one("content:\"GET\"; depth:3; content:\"/x\"; distance:1; within:2;");
    let cfg = ReassemblyConfig {
        lookback: 64,
        ..ReassemblyConfig::for_engine(&e)
    };
    assert_eq!(
        stream(&e, cfg, &[(1, b"GE"), (3, b"T /"), (6, b"x")]).0,
        vec![1]
    );
    // depth counts from the stream start: "GET" at stream offset 4 is too late.
    assert!(stream(&e, cfg, &[(1, b"xxxx"), (5, b"GET /x")])
        .0
        .is_empty());
}

#[test]
fn out_of_order_and_overlapping_segments() {
    let e = one("content:\"attack\";");
    let cfg = ReassemblyConfig::for_engine(&e);
    assert_eq!(stream(&e, cfg, &[(4, b"ack"), (1, b"att")]).0, vec![1]);
    // First copy wins: the later "attack" overlay is ignored and counted.
    let (s, r) = stream(&e, cfg, &[(4, b"ick"), (1, b"attack")]);
    assert!(s.is_empty());
    assert_eq!(r.events().overlap_different_data, 1);
    let (s, r) = stream(&e, cfg, &[(1, b"attick"), (4, b"ack")]);
    assert!(s.is_empty());
    assert_eq!(r.events().overlap_different_data, 1);
}

#[test]
fn gaps_and_depth_stop_inspection() {
    let e = one("content:\"attack\";");
    let cfg = ReassemblyConfig {
        max_ooo_bytes: 100,
        ..ReassemblyConfig::for_engine(&e)
    };
    let (s, r) = stream(&e, cfg, &[(1, b"x"), (500, b"attack"), (2, b"attack")]);
    assert!(s.is_empty() && r.events().gap);
    let cfg = ReassemblyConfig {
        depth: 10,
        ..ReassemblyConfig::for_engine(&e)
    };
    let (s, r) = stream(&e, cfg, &[(1, b"12345"), (6, b"attack")]);
    assert!(s.is_empty() && r.events().depth_reached);
    let (s, _) = stream(&e, cfg, &[(1, b"1234"), (5, b"attack")]);
    assert_eq!(s, vec![1]);
}
