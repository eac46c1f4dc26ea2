//! The IDS stage in the Viaduct's pipeline (role `ids`): both directions,
//! flows from the connection table, streams reassembled in order, `drop`
//! dropping (and blocking the stream), alerts as JSON lines, and what it
//! cannot inspect refused rather than passed.

use policy_blob::{Aead, Direction, FilterAction, Policy, Selector, SpdAction};
use viaduct::engine::{DropReason, Engine, Verdict};
use viaduct::ledger::MemoryLedger;
use viaduct::sa::Timestamp;

use crate::common::{frag4, lab_policy, tcp, udp4, A4, B4};

const CLIENT: &str = "10.1.0.7";
const SERVER: &str = "203.0.113.80";
const ISN_C: u32 = 1000;
const ISN_S: u32 = 50_000;

/// Signatures from rule text, as the policy compiler makes them.
fn signatures(rules: &str) -> Vec<viaduct_ids::Signature> {
    let mut vars = ids_rules::Vars::suricata_defaults();
    vars.set("HOME_NET", "[10.1.0.0/24]");
    let set = ids_rules::parse(rules, &vars);
    assert!(set.refused.is_empty(), "{:?}", set.refused);
    set.rules.iter().map(ids_rules::signature).collect()
}

/// Cleartext between red and black (SPD bypass), the filter accepting
/// everything, the IDS on.
fn engine(rules: &str) -> Engine {
    let p = Policy::new("ids", "1")
        .with_spd("all", Selector::any_v4(), SpdAction::Bypass)
        .with_filter(
            "all",
            Direction::Outbound,
            Selector::any_v4(),
            FilterAction::Accept,
        )
        .with_filter(
            "all-in",
            Direction::Inbound,
            Selector::any_v4(),
            FilterAction::Accept,
        )
        .with_ids(signatures(rules));
    Engine::new(&p, Timestamp(0), &mut MemoryLedger::default()).unwrap()
}

/// An IPv4 TCP segment with sequence, acknowledgement and a full window.
#[allow(clippy::too_many_arguments)]
fn seg(
    src: &str,
    sp: u16,
    dst: &str,
    dp: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    data: &[u8],
) -> Vec<u8> {
    let mut p = crate::common::tcp4(src, dst, sp, dp, flags, data);
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[28..32].copy_from_slice(&ack.to_be_bytes());
    p[34..36].copy_from_slice(&0xffffu16.to_be_bytes());
    p
}

fn out(e: &mut Engine, pkt: &[u8]) -> Verdict {
    let mut buf = vec![0u8; 4096];
    e.outbound(pkt, &mut buf, Timestamp(1))
}

fn inb(e: &mut Engine, pkt: &[u8]) -> Verdict {
    let mut buf = pkt.to_vec();
    e.inbound(&mut buf, Timestamp(1))
}

/// A client in red opens a connection to port 80 of a server behind black.
fn handshake(e: &mut Engine) {
    let syn = seg(CLIENT, 40000, SERVER, 80, tcp::SYN, ISN_C, 0, b"");
    assert_eq!(out(e, &syn), Verdict::Send(syn.len()));
    let sa = seg(
        SERVER,
        80,
        CLIENT,
        40000,
        tcp::SYN | tcp::ACK,
        ISN_S,
        ISN_C + 1,
        b"",
    );
    assert_eq!(inb(e, &sa), Verdict::Send(sa.len()));
    let ack = seg(
        CLIENT,
        40000,
        SERVER,
        80,
        tcp::ACK,
        ISN_C + 1,
        ISN_S + 1,
        b"",
    );
    assert_eq!(out(e, &ack), Verdict::Send(ack.len()));
}

/// Client data at stream offset `off`.
fn client(off: u32, data: &[u8]) -> Vec<u8> {
    seg(
        CLIENT,
        40000,
        SERVER,
        80,
        tcp::ACK | tcp::PSH,
        ISN_C + 1 + off,
        ISN_S + 1,
        data,
    )
}

/// Server data at stream offset `off`.
fn server(off: u32, data: &[u8]) -> Vec<u8> {
    seg(
        SERVER,
        80,
        CLIENT,
        40000,
        tcp::ACK | tcp::PSH,
        ISN_S + 1 + off,
        ISN_C + 1,
        data,
    )
}

fn log(e: &mut Engine) -> Vec<String> {
    let mut l = e.outbound.take_log();
    l.extend(e.inbound.take_log());
    l
}

const SHELLSHOCK_ALERT: &str = r#"alert tcp any any -> any 80 (msg:"Shellshock \"probe\""; flow:to_server,established; content:"() {"; sid:1000001; rev:2;)"#;

/// The first part of a request whose User-Agent is split inside "() {".
const PART1: &[u8] = b"GET / HTTP/1.0\r\nUser-Agent: (";
const PART2: &[u8] = b") { :; }; /bin/id\r\n\r\n";

#[test]
fn a_pattern_split_across_segments_alerts_once_as_a_json_line() {
    let mut e = engine(SHELLSHOCK_ALERT);
    handshake(&mut e);
    let a = client(0, PART1);
    let b = client(PART1.len() as u32, PART2);
    assert_eq!(out(&mut e, &a), Verdict::Send(a.len()));
    assert!(log(&mut e).is_empty(), "no match in the first part");
    assert_eq!(out(&mut e, &b), Verdict::Send(b.len()), "alert only");
    let lines = log(&mut e);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let v: serde_json::Value = serde_json::from_str(&lines[0]).expect("a JSON line");
    assert_eq!(v["event_type"], "alert");
    assert_eq!(v["direction"], "red-to-black");
    assert_eq!(v["proto"], "TCP");
    assert_eq!(v["src_ip"], CLIENT);
    assert_eq!(v["src_port"], 40000);
    assert_eq!(v["dest_ip"], SERVER);
    assert_eq!(v["dest_port"], 80);
    assert_eq!(v["buffer"], "stream");
    assert_eq!(v["flow"]["to_server"], true);
    assert_eq!(v["flow"]["established"], true);
    assert_eq!(v["alert"]["action"], "allowed");
    assert_eq!(v["alert"]["signature_id"], 1000001);
    assert_eq!(v["alert"]["rev"], 2);
    assert_eq!(v["alert"]["signature"], "Shellshock \"probe\"");
    // Nothing of the payload is in the line.
    assert!(!lines[0].contains("bin/id") && !lines[0].contains("User-Agent"));
    // The same bytes again (a retransmission): no second alert.
    assert_eq!(out(&mut e, &b), Verdict::Send(b.len()));
    assert!(log(&mut e).is_empty());
    let report = e.outbound.report();
    assert!(report.contains("out ids signatures=1 packets="), "{report}");
    assert!(report.contains(" alerts=1 dropped=0 "), "{report}");
    assert!(report.contains("out ids sid=1000001 matches=1"), "{report}");
}

#[test]
fn a_drop_rule_drops_the_packet_and_blocks_the_stream() {
    let mut e = engine(
        r#"drop tcp any any -> any 80 (msg:"Shellshock"; flow:to_server,established; content:"() {"; sid:7;)"#,
    );
    handshake(&mut e);
    let a = client(0, PART1);
    let b = client(PART1.len() as u32, PART2);
    assert_eq!(out(&mut e, &a), Verdict::Send(a.len()));
    assert_eq!(out(&mut e, &b), Verdict::Drop(DropReason::IdsDrop));
    let lines = log(&mut e);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains(r#""action":"blocked""#), "{}", lines[0]);
    // Its bytes are in the stream now: the retransmission, and anything
    // after, is dropped too.
    assert_eq!(out(&mut e, &b), Verdict::Drop(DropReason::IdsBlocked));
    let c = client((PART1.len() + PART2.len()) as u32, b"more");
    assert_eq!(out(&mut e, &c), Verdict::Drop(DropReason::IdsBlocked));
    // One packet alone with the whole pattern: dropped at once.
    let mut e = engine(r#"drop tcp any any -> any 80 (msg:"Shellshock"; content:"() {"; sid:7;)"#);
    handshake(&mut e);
    let whole = client(0, b"User-Agent: () { :; };");
    assert_eq!(out(&mut e, &whole), Verdict::Drop(DropReason::IdsDrop));
    let report = e.outbound.report();
    assert!(report.contains(" dropped=1 "), "{report}");
    assert!(report.contains("out drop ids_drop=1"), "{report}");
}

#[test]
fn flow_direction_follows_the_connection_both_ways() {
    let mut e = engine(
        r#"alert tcp any any -> any any (msg:"server says secret"; flow:to_client; content:"secret"; sid:2;)
alert tcp any any -> any any (msg:"client says secret"; flow:to_server; content:"secret"; sid:3;)"#,
    );
    handshake(&mut e);
    let reply = server(0, b"HTTP/1.0 200 OK\r\n\r\nthe secret");
    assert_eq!(inb(&mut e, &reply), Verdict::Send(reply.len()));
    let lines = log(&mut e);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["direction"], "black-to-red");
    assert_eq!(v["alert"]["signature_id"], 2);
    assert_eq!(v["flow"]["to_server"], false);
    let ask = client(0, b"tell me the secret");
    assert_eq!(out(&mut e, &ask), Verdict::Send(ask.len()));
    let lines = log(&mut e);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains(r#""signature_id":3"#), "{}", lines[0]);
    assert!(e.inbound.report().contains("in ids sid=2 matches=1"));
}

#[test]
fn segments_it_cannot_place_are_dropped_and_the_stream_kept() {
    let mut e = engine(r#"drop tcp any any -> any 80 (msg:"evil"; content:"evil"; sid:4;)"#);
    handshake(&mut e);
    let a = client(0, b"GET /ev");
    assert_eq!(out(&mut e, &a), Verdict::Send(a.len()));
    // The same offsets with other bytes: the server might keep either copy.
    let other = client(4, b"/xx");
    assert_eq!(
        out(&mut e, &other),
        Verdict::Drop(DropReason::IdsUnplaceable)
    );
    // Far beyond what a stream may buffer out of order: dropped, not a gap.
    let far = client(200_000, b"il");
    assert_eq!(out(&mut e, &far), Verdict::Drop(DropReason::IdsUnplaceable));
    // Before the stream's first byte.
    let before = seg(
        CLIENT,
        40000,
        SERVER,
        80,
        tcp::ACK,
        ISN_C - 10,
        ISN_S + 1,
        b"ab",
    );
    assert!(matches!(out(&mut e, &before), Verdict::Drop(_)));
    // The stream goes on where it was: the pattern across the first
    // segment and this one is still seen.
    let b = client(7, b"il!");
    assert_eq!(out(&mut e, &b), Verdict::Drop(DropReason::IdsDrop));
    // Out of order within bounds waits for the hole, and the pattern
    // across it is found when the hole fills.
    let mut e = engine(r#"alert tcp any any -> any 80 (msg:"evil"; content:"evil"; sid:4;)"#);
    handshake(&mut e);
    let late = client(3, b"il");
    assert_eq!(out(&mut e, &late), Verdict::Send(late.len()));
    assert!(log(&mut e).is_empty());
    let early = client(0, b"GEv");
    assert_eq!(out(&mut e, &early), Verdict::Send(early.len()));
    assert!(log(&mut e).is_empty(), "\"GEvil\" holds no \"evil\"");
    let mut e = engine(r#"alert tcp any any -> any 80 (msg:"evil"; content:"evil"; sid:4;)"#);
    handshake(&mut e);
    assert!(matches!(out(&mut e, &client(3, b"il")), Verdict::Send(_)));
    assert!(matches!(out(&mut e, &client(0, b"Gev")), Verdict::Send(_)));
    let lines = log(&mut e);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains(r#""buffer":"stream""#));
}

#[test]
fn data_of_no_connection_and_fragments_are_refused() {
    let mut e = engine(r#"alert tcp any any -> any any (msg:"m"; content:"zz"; sid:5;)"#);
    // No handshake: the filter accepts (any state), the IDS cannot place it.
    let stray = client(0, b"hello");
    assert_eq!(
        out(&mut e, &stray),
        Verdict::Drop(DropReason::IdsUnplaceable)
    );
    // A fragment the filter accepts: the IDS cannot inspect it.
    let f = frag4(CLIENT, SERVER, 17, 0, true, &[0u8; 16]);
    assert_eq!(out(&mut e, &f), Verdict::Drop(DropReason::IdsFragment));
    let f = frag4(CLIENT, SERVER, 17, 2, false, b"zz");
    assert_eq!(out(&mut e, &f), Verdict::Drop(DropReason::IdsFragment));
    let report = e.outbound.report();
    assert!(report.contains("out drop ids_fragment=2"), "{report}");
    assert!(report.contains("out drop ids_unplaceable=1"), "{report}");
}

#[test]
fn alerts_are_rate_limited_and_every_match_counted() {
    let mut e = engine(r#"alert udp any any -> any 53 (msg:"dns zz"; content:"zz"; sid:6;)"#);
    for i in 0..300u16 {
        let q = udp4(CLIENT, SERVER, 1000 + i, 53, b"..zz..");
        assert_eq!(out(&mut e, &q), Verdict::Send(q.len()));
    }
    let lines = log(&mut e);
    assert_eq!(lines.len(), viaduct::engine::LOG_BURST as usize);
    let report = e.outbound.report();
    assert!(report.contains("out ids sid=6 matches=300"), "{report}");
    assert!(
        report.contains(" log_written=100 log_suppressed=200"),
        "{report}"
    );
}

/// Through a tunnel: B inspects what it decrypted, A what it encrypts.
#[test]
fn tunnelled_traffic_is_inspected_after_decryption() {
    let rule = r#"drop udp any any -> any 5000 (msg:"m"; content:"attack"; sid:8;)"#;
    let with_ids = |p: Policy| {
        Engine::new(
            &p.with_ids(signatures(rule)),
            Timestamp(0),
            &mut MemoryLedger::default(),
        )
        .unwrap()
    };
    let mut a = Engine::new(
        &lab_policy(Aead::Aes256Gcm16, A4, B4, A4, B4, true),
        Timestamp(0),
        &mut MemoryLedger::default(),
    )
    .unwrap();
    let mut b = with_ids(lab_policy(Aead::Aes256Gcm16, B4, A4, B4, A4, false));
    fn wire(a: &mut Engine, payload: &[u8]) -> Vec<u8> {
        let inner = udp4("10.1.0.5", "10.2.0.7", 4000, 5000, payload);
        let mut buf = vec![0u8; 2048];
        match a.outbound(&inner, &mut buf, Timestamp(1)) {
            Verdict::Send(n) => buf[..n].to_vec(),
            v => panic!("{v:?}"),
        }
    }
    let good = wire(&mut a, b"hello");
    assert!(matches!(inb(&mut b, &good), Verdict::Send(_)));
    let bad = wire(&mut a, b"an attack");
    assert_eq!(inb(&mut b, &bad), Verdict::Drop(DropReason::IdsDrop));
    let lines = b.inbound.take_log();
    assert!(
        lines[0].contains(r#""direction":"black-to-red""#),
        "{lines:?}"
    );
}
