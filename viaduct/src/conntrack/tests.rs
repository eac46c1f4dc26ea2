//! The tracker against hand-built datagrams, parsed by the Viaduct's own
//! five-tuple parser as the engine would.

use super::*;
use crate::wire::ip::five_tuple;
use policy_blob::Direction::{Inbound, Outbound};

const LAN: [u8; 4] = [10, 1, 0, 2];
const NET: [u8; 4] = [198, 51, 100, 7];
const ROUTER: [u8; 4] = [203, 0, 113, 1];

fn ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, l4: &[u8]) -> Vec<u8> {
    let total = 20 + l4.len();
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0,
        0,
        64,
        protocol,
        0,
        0,
    ];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(l4);
    p
}

fn tcp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sp.to_be_bytes());
    h[2..4].copy_from_slice(&dp.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags;
    ipv4(src, dst, 6, &h)
}

fn udp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> Vec<u8> {
    let mut h = vec![0u8; 12];
    h[0..2].copy_from_slice(&sp.to_be_bytes());
    h[2..4].copy_from_slice(&dp.to_be_bytes());
    h[4..6].copy_from_slice(&12u16.to_be_bytes());
    ipv4(src, dst, 17, &h)
}

fn echo(src: [u8; 4], dst: [u8; 4], ty: u8, id: u16) -> Vec<u8> {
    let mut h = vec![ty, 0, 0, 0, 0, 0, 0, 1];
    h[4..6].copy_from_slice(&id.to_be_bytes());
    ipv4(src, dst, 1, &h)
}

/// An ICMP error (type 3 code 1, or 11) from `from` to `to`, quoting the
/// first 28 bytes of `quoted`.
fn icmp_error(from: [u8; 4], to: [u8; 4], ty: u8, quoted: &[u8]) -> Vec<u8> {
    let mut h = vec![ty, 1, 0, 0, 0, 0, 0, 0];
    h.extend_from_slice(&quoted[..quoted.len().min(28)]);
    ipv4(from, to, 1, &h)
}

const SYN: u8 = 0x02;
const SYNACK: u8 = 0x12;
const ACK: u8 = 0x10;
const FINACK: u8 = 0x11;
const RST: u8 = 0x04;

/// Classifies and, when `accept`, commits (rule 7): the state seen.
fn pass(t: &mut Tracker, dir: Direction, pkt: &[u8], now: u64, accept: bool) -> CtState {
    let ft = five_tuple(pkt).unwrap();
    let c = t.classify(dir, pkt, &ft, Timestamp(now));
    if accept {
        assert!(t.commit(&c, 7, None, Timestamp(now)), "table full");
    }
    c.state
}

fn state_of(t: &Tracker, now: u64) -> Vec<(&'static str, u64)> {
    t.flows(Timestamp(now))
        .into_iter()
        .map(|(_, s, left, _)| (s, left))
        .collect()
}

#[test]
fn a_tcp_connection_moves_through_linuxs_states_with_pf_timeouts() {
    let mut t = Tracker::new(16, Timeouts::default());
    let d = Timeouts::default();
    assert_eq!(
        pass(&mut t, Outbound, &tcp(LAN, 40000, NET, 443, SYN), 0, true),
        CtState::New
    );
    assert_eq!(state_of(&t, 0), [("first", u64::from(d.tcp_first))]);
    // A retransmitted SYN is part of the flow, still `new` until the
    // server answers (Linux: `IP_CT_NEW` before `SEEN_REPLY`).
    assert_eq!(
        pass(&mut t, Outbound, &tcp(LAN, 40000, NET, 443, SYN), 1, true),
        CtState::New
    );
    assert_eq!(t.len(), 1);
    assert_eq!(
        pass(&mut t, Inbound, &tcp(NET, 443, LAN, 40000, SYNACK), 2, true),
        CtState::Established
    );
    assert_eq!(state_of(&t, 2), [("opening", u64::from(d.tcp_opening))]);
    pass(&mut t, Outbound, &tcp(LAN, 40000, NET, 443, ACK), 3, true);
    assert_eq!(
        state_of(&t, 3),
        [("established", u64::from(d.tcp_established))]
    );
    pass(&mut t, Inbound, &tcp(NET, 443, LAN, 40000, FINACK), 4, true);
    assert_eq!(state_of(&t, 4), [("closing", u64::from(d.tcp_closing))]);
    pass(
        &mut t,
        Outbound,
        &tcp(LAN, 40000, NET, 443, FINACK),
        5,
        true,
    );
    assert_eq!(state_of(&t, 5), [("fin-wait", u64::from(d.tcp_finwait))]);
    // Before the last ACK a SYN is taken as part of the flow (Linux's
    // LAST_ACK ignores it); once both FINs are acknowledged (TIME_WAIT) a new
    // SYN opens a new flow (port reuse).
    assert_eq!(
        pass(&mut t, Outbound, &tcp(LAN, 40000, NET, 443, SYN), 5, false),
        CtState::Established
    );
    pass(&mut t, Inbound, &tcp(NET, 443, LAN, 40000, ACK), 5, true);
    assert_eq!(state_of(&t, 5), [("fin-wait", u64::from(d.tcp_finwait))]);
    assert_eq!(
        pass(&mut t, Outbound, &tcp(LAN, 40000, NET, 443, SYN), 6, true),
        CtState::New
    );
    assert_eq!(state_of(&t, 6), [("first", u64::from(d.tcp_first))]);
    assert_eq!(t.len(), 1);
    // A reset answering that SYN (nothing else answered yet) ends the flow
    // at once; a reset of an answered connection leaves it closed.
    pass(&mut t, Inbound, &tcp(NET, 443, LAN, 40000, RST), 7, true);
    assert_eq!(state_of(&t, 7), []);
    assert_eq!(
        pass(
            &mut t,
            Inbound,
            &tcp(NET, 443, LAN, 40000, SYNACK),
            7,
            false
        ),
        CtState::Invalid
    );
    pass(&mut t, Outbound, &tcp(LAN, 40000, NET, 443, SYN), 8, true);
    pass(&mut t, Inbound, &tcp(NET, 443, LAN, 40000, SYNACK), 8, true);
    pass(&mut t, Outbound, &tcp(LAN, 40000, NET, 443, RST), 9, true);
    assert_eq!(state_of(&t, 9), [("closed", u64::from(d.tcp_closed))]);
}

#[test]
fn only_a_bare_syn_opens_a_tcp_flow() {
    let mut t = Tracker::new(16, Timeouts::default());
    for flags in [SYNACK, ACK, FINACK, RST, SYN | RST, SYN | 0x01, 0] {
        assert_eq!(
            pass(&mut t, Inbound, &tcp(NET, 443, LAN, 40000, flags), 0, false),
            CtState::Invalid,
            "flags {flags:#x}"
        );
    }
    // With ECN and PSH bits a SYN still opens.
    assert_eq!(
        pass(&mut t, Inbound, &tcp(NET, 5, LAN, 22, SYN | 0xc0), 0, false),
        CtState::New
    );
    assert!(t.is_empty());
    assert_eq!(t.counters().invalid, 7);
}

#[test]
fn flags_tcp_never_sends_are_invalid_even_on_a_tracked_flow() {
    let mut t = Tracker::new(16, Timeouts::default());
    pass(&mut t, Outbound, &tcp(LAN, 40000, NET, 443, SYN), 0, true);
    pass(&mut t, Inbound, &tcp(NET, 443, LAN, 40000, SYNACK), 0, true);
    pass(&mut t, Outbound, &tcp(LAN, 40000, NET, 443, ACK), 0, true);
    for flags in [0u8, 0x01, 0x08, 0x20, 0x29, 0x03, 0x06, 0x13, 0xff] {
        assert_eq!(
            pass(&mut t, Inbound, &tcp(NET, 443, LAN, 40000, flags), 1, false),
            CtState::Invalid,
            "flags {flags:#04x}"
        );
    }
    for flags in [0x30u8, 0xd0, 0x18, 0x14, 0x11] {
        assert_eq!(
            pass(&mut t, Inbound, &tcp(NET, 443, LAN, 40000, flags), 1, false),
            CtState::Established,
            "flags {flags:#04x}"
        );
    }
    // SYN with URG, PSH or the ECN set-up bits still opens.
    for (port, flags) in [(1u16, 0x22u8), (2, 0x0a), (3, 0xc2)] {
        assert_eq!(
            pass(&mut t, Outbound, &tcp(LAN, port, NET, 443, flags), 1, false),
            CtState::New
        );
    }
}

/// What `classify` found may be committed after the other direction changed
/// the table: a flow no longer where it was is left alone, and an opening
/// someone else entered meanwhile is not entered twice.
#[test]
fn a_late_commit_touches_only_the_flow_it_classified() {
    let mut t = Tracker::new(16, Timeouts::default());
    let syn = tcp(LAN, 40000, NET, 443, SYN);
    let ft = five_tuple(&syn).unwrap();
    // Two openings of the same flow classified before either commits.
    let a = t.classify(Outbound, &syn, &ft, Timestamp(0));
    let b = t.classify(Outbound, &syn, &ft, Timestamp(0));
    assert!(t.commit(&a, 1, None, Timestamp(0)));
    assert!(t.commit(&b, 1, None, Timestamp(0)));
    assert_eq!(t.len(), 1);
    assert_eq!(t.counters().inserted, 1);
    // A SYN-ACK classified, then its flow reset away and the slot reused by
    // another flow: the late commit does not move the newcomer.
    let synack = tcp(NET, 443, LAN, 40000, SYNACK);
    let ft = five_tuple(&synack).unwrap();
    let late = t.classify(Inbound, &synack, &ft, Timestamp(1));
    assert_eq!(late.state, CtState::Established);
    pass(&mut t, Inbound, &tcp(NET, 443, LAN, 40000, RST), 1, true);
    assert!(t.is_empty());
    pass(&mut t, Outbound, &udp(LAN, 5000, NET, 53), 1, true);
    let before = t.flows(Timestamp(1));
    assert!(t.commit(&late, 1, None, Timestamp(1)));
    assert_eq!(t.flows(Timestamp(1)), before);
}

#[test]
fn a_dropped_packet_leaves_no_state() {
    let mut t = Tracker::new(16, Timeouts::default());
    // The opening refused by the rules: nothing entered.
    assert_eq!(
        pass(&mut t, Inbound, &tcp(NET, 5, LAN, 22, SYN), 0, false),
        CtState::New
    );
    assert!(t.is_empty());
    // A tracked flow's packet refused: the flow does not move.
    pass(&mut t, Outbound, &tcp(LAN, 40000, NET, 443, SYN), 0, true);
    pass(
        &mut t,
        Inbound,
        &tcp(NET, 443, LAN, 40000, SYNACK),
        1,
        false,
    );
    assert_eq!(state_of(&t, 1), [("first", 119)]);
}

#[test]
fn each_side_must_come_from_its_own_direction() {
    let mut t = Tracker::new(16, Timeouts::default());
    pass(&mut t, Outbound, &tcp(LAN, 40000, NET, 443, SYN), 0, true);
    // The server's answer arriving from red (a spoofed reply inside the
    // LAN), or the client's packet arriving from black: neither belongs.
    assert_eq!(
        pass(
            &mut t,
            Outbound,
            &tcp(NET, 443, LAN, 40000, SYNACK),
            1,
            false
        ),
        CtState::Invalid
    );
    assert_eq!(
        pass(&mut t, Inbound, &tcp(LAN, 40000, NET, 443, ACK), 1, false),
        CtState::Invalid
    );
    assert_eq!(
        pass(
            &mut t,
            Inbound,
            &tcp(NET, 443, LAN, 40000, SYNACK),
            1,
            false
        ),
        CtState::Established
    );
}

#[test]
fn udp_times_out_as_first_single_and_multiple() {
    let d = Timeouts::default();
    let mut t = Tracker::new(16, d);
    assert_eq!(
        pass(&mut t, Outbound, &udp(LAN, 50000, NET, 53), 0, true),
        CtState::New
    );
    assert_eq!(state_of(&t, 0), [("single", u64::from(d.udp_first))]);
    pass(&mut t, Outbound, &udp(LAN, 50000, NET, 53), 1, true);
    assert_eq!(state_of(&t, 1), [("single", u64::from(d.udp_single))]);
    assert_eq!(
        pass(&mut t, Inbound, &udp(NET, 53, LAN, 50000), 2, true),
        CtState::Established
    );
    assert_eq!(state_of(&t, 2), [("multiple", u64::from(d.udp_multiple))]);
    // Another client port is another flow; a reply to a port nobody used
    // opens one from black (the rules decide whether it may).
    assert_eq!(
        pass(&mut t, Inbound, &udp(NET, 53, LAN, 50001), 3, false),
        CtState::New
    );
    // After the timeout the reply is new again, not established.
    let late = 2 + u64::from(d.udp_multiple);
    assert_eq!(
        pass(&mut t, Inbound, &udp(NET, 53, LAN, 50000), late, false),
        CtState::New
    );
    assert!(t.flows(Timestamp(late)).is_empty());
    t.expire(Timestamp(late));
    assert!(t.is_empty());
    assert_eq!(t.counters().expired, 1);
}

#[test]
fn echo_replies_need_their_request_and_its_identifier() {
    let mut t = Tracker::new(16, Timeouts::default());
    assert_eq!(
        pass(&mut t, Inbound, &echo(NET, LAN, 0, 9), 0, false),
        CtState::Invalid
    );
    assert_eq!(
        pass(&mut t, Outbound, &echo(LAN, NET, 8, 9), 0, true),
        CtState::New
    );
    assert_eq!(
        pass(&mut t, Inbound, &echo(NET, LAN, 0, 9), 1, true),
        CtState::Established
    );
    assert_eq!(
        pass(&mut t, Inbound, &echo(NET, LAN, 0, 10), 1, false),
        CtState::Invalid
    );
    // Replies come from the responder, requests from the originator: the
    // pinging host's own reply, or a request back from the pinged one, is
    // not part of the flow.
    assert_eq!(
        pass(&mut t, Outbound, &echo(LAN, NET, 0, 9), 1, false),
        CtState::Invalid
    );
    assert_eq!(
        pass(&mut t, Inbound, &echo(NET, LAN, 8, 9), 1, false),
        CtState::Invalid
    );
    assert_eq!(state_of(&t, 1), [("multiple", 20)]);
}

#[test]
fn an_icmp_error_is_related_only_to_the_flow_it_quotes() {
    let mut t = Tracker::new(16, Timeouts::default());
    let syn = tcp(LAN, 40000, NET, 443, SYN);
    pass(&mut t, Outbound, &syn, 0, true);
    // A router on the way says the server is unreachable: related.
    let err = icmp_error(ROUTER, LAN, 3, &syn);
    assert_eq!(pass(&mut t, Inbound, &err, 1, true), CtState::Related);
    assert_eq!(t.counters().related, 1);
    // Time exceeded too.
    assert_eq!(
        pass(
            &mut t,
            Inbound,
            &icmp_error(ROUTER, LAN, 11, &syn),
            1,
            false
        ),
        CtState::Related
    );
    // Quoting a flow nobody opened (another port): invalid.
    let other = tcp(LAN, 40001, NET, 443, SYN);
    assert_eq!(
        pass(
            &mut t,
            Inbound,
            &icmp_error(ROUTER, LAN, 3, &other),
            1,
            false
        ),
        CtState::Invalid
    );
    // Addressed to someone else than the quoted datagram's sender: invalid.
    assert_eq!(
        pass(
            &mut t,
            Inbound,
            &icmp_error(ROUTER, [10, 1, 0, 3], 3, &syn),
            1,
            false
        ),
        CtState::Invalid
    );
    // The client answering the server's packet with an error (outbound,
    // quoting what came in): related.
    let reply = tcp(NET, 443, LAN, 40000, SYNACK);
    assert_eq!(
        pass(&mut t, Outbound, &icmp_error(LAN, NET, 3, &reply), 1, false),
        CtState::Related
    );
    // An error about the server's packet arriving from black, addressed to
    // the server: it went the quoted datagram's own way, invalid.
    assert_eq!(
        pass(
            &mut t,
            Inbound,
            &icmp_error(ROUTER, NET, 3, &reply),
            1,
            false
        ),
        CtState::Invalid
    );
    // A quote too short for its ports: invalid, never a panic.
    let mut cut = icmp_error(ROUTER, LAN, 3, &syn);
    cut.truncate(20 + 8 + 20 + 2);
    let total = cut.len() as u16;
    cut[2..4].copy_from_slice(&total.to_be_bytes());
    assert_eq!(pass(&mut t, Inbound, &cut, 1, false), CtState::Invalid);
    // An error about an echo request: related, and it shortens the echo
    // flow to icmp.error.
    let ping = echo(LAN, NET, 8, 77);
    pass(&mut t, Outbound, &ping, 2, true);
    assert_eq!(
        pass(&mut t, Inbound, &icmp_error(ROUTER, LAN, 3, &ping), 3, true),
        CtState::Related
    );
    let left: Vec<u64> = t
        .flows(Timestamp(3))
        .into_iter()
        .filter(|(v, ..)| v.protocol == 1)
        .map(|(_, _, l, _)| l)
        .collect();
    assert_eq!(left, [10]);
}

#[test]
fn a_full_table_refuses_new_flows_and_counts_them_but_reclaims_expired_ones() {
    let mut t = Tracker::new(2, Timeouts::default());
    assert_eq!(
        pass(&mut t, Outbound, &udp(LAN, 1, NET, 53), 0, true),
        CtState::New
    );
    assert_eq!(
        pass(&mut t, Outbound, &udp(LAN, 2, NET, 53), 0, true),
        CtState::New
    );
    let third = udp(LAN, 3, NET, 53);
    let ft = five_tuple(&third).unwrap();
    let c = t.classify(Outbound, &third, &ft, Timestamp(1));
    assert_eq!(c.state, CtState::New);
    assert!(!t.commit(&c, 1, None, Timestamp(1)));
    assert_eq!(t.counters().table_full, 1);
    assert_eq!(t.len(), 2);
    // Tracked flows still pass.
    assert_eq!(
        pass(&mut t, Inbound, &udp(NET, 53, LAN, 1), 1, true),
        CtState::Established
    );
    // Once the other has expired (60 s after its one packet; the answered
    // one lives until 61 s), its place is taken.
    let c = t.classify(Outbound, &third, &ft, Timestamp(60));
    assert!(t.commit(&c, 1, None, Timestamp(60)));
    assert_eq!(t.len(), 2);
    assert_eq!(t.counters().expired, 1);
}

#[test]
fn a_rule_may_set_its_own_timeouts() {
    let mut t = Tracker::new(4, Timeouts::default());
    let short = Timeouts {
        udp_first: 5,
        ..Timeouts::default()
    };
    let p = udp(LAN, 1, NET, 53);
    let ft = five_tuple(&p).unwrap();
    let c = t.classify(Outbound, &p, &ft, Timestamp(0));
    assert!(t.commit(&c, 3, Some(short), Timestamp(0)));
    assert_eq!(state_of(&t, 0), [("single", 5)]);
    assert_eq!(
        pass(&mut t, Inbound, &udp(NET, 53, LAN, 1), 5, false),
        CtState::New
    );
}

#[test]
fn a_new_policy_removes_the_flows_it_no_longer_admits() {
    let mut t = Tracker::new(16, Timeouts::default());
    pass(&mut t, Outbound, &tcp(LAN, 40000, NET, 443, SYN), 0, true);
    pass(&mut t, Outbound, &tcp(LAN, 40001, NET, 22, SYN), 0, true);
    pass(&mut t, Outbound, &udp(LAN, 5000, NET, 53), 0, true);
    let mut seen = Vec::new();
    let removed = t.recheck(|v| {
        seen.push((v.direction, v.protocol, v.src, v.dst, v.ports, v.rule));
        (v.ports.1 != 22).then_some(9)
    });
    assert_eq!(removed, 1);
    assert_eq!(t.counters().removed_by_policy, 1);
    seen.sort_by_key(|s| s.4);
    assert_eq!(
        seen[0],
        (
            Outbound,
            17,
            IpAddr::from(LAN),
            IpAddr::from(NET),
            (5000, 53),
            7
        )
    );
    // The ssh flow is gone: its server's answer is not established.
    assert_eq!(
        pass(&mut t, Inbound, &tcp(NET, 22, LAN, 40001, SYNACK), 1, false),
        CtState::Invalid
    );
    // The others keep their state, under the rule the new policy names.
    let c = {
        let p = tcp(NET, 443, LAN, 40000, SYNACK);
        let ft = five_tuple(&p).unwrap();
        t.classify(Inbound, &p, &ft, Timestamp(1))
    };
    assert_eq!((c.state, c.rule), (CtState::Established, Some(9)));
}

#[test]
fn later_fragments_and_malformed_datagrams_are_invalid() {
    let mut t = Tracker::new(16, Timeouts::default());
    let mut frag = udp(LAN, 1, NET, 53);
    frag[6] = 0x00;
    frag[7] = 0x02; // offset 16 bytes, past the UDP header
    let ft = five_tuple(&frag).unwrap();
    assert!(ft.ports_unknown);
    assert_eq!(
        t.classify(Outbound, &frag, &ft, Timestamp(0)).state,
        CtState::Invalid
    );
    // A five-tuple that does not match the bytes (engine misuse) is
    // invalid, not trusted.
    let p = udp(LAN, 1, NET, 53);
    let mut ft = five_tuple(&p).unwrap();
    ft.protocol = 6;
    assert_eq!(
        t.classify(Outbound, &p, &ft, Timestamp(0)).state,
        CtState::Invalid
    );
}

#[test]
fn ipv6_echo_and_packet_too_big_are_tracked() {
    fn ipv6(src: u8, dst: u8, nh: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        p.extend_from_slice(&[nh, 64]);
        let mut a = [0u8; 16];
        a[0] = 0x20;
        a[1] = 0x01;
        a[2] = 0x0d;
        a[3] = 0xb8;
        a[15] = src;
        p.extend_from_slice(&a);
        a[15] = dst;
        p.extend_from_slice(&a);
        p.extend_from_slice(l4);
        p
    }
    let mut t = Tracker::new(16, Timeouts::default());
    let req = ipv6(1, 2, 58, &[128, 0, 0, 0, 0, 5, 0, 1]);
    assert_eq!(pass(&mut t, Outbound, &req, 0, true), CtState::New);
    let rep = ipv6(2, 1, 58, &[129, 0, 0, 0, 0, 5, 0, 1]);
    assert_eq!(pass(&mut t, Inbound, &rep, 1, true), CtState::Established);
    // Packet too big (type 2) from a router (::9), quoting the request.
    let mut l4 = vec![2, 0, 0, 0, 0, 0, 5, 0xdc];
    l4.extend_from_slice(&req[..48]);
    let ptb = ipv6(9, 1, 58, &l4);
    assert_eq!(pass(&mut t, Inbound, &ptb, 1, false), CtState::Related);
}

proptest::proptest! {
    /// Whatever a sequence of packets (random flags, ports, directions,
    /// times, accepted or not) does: no panic; a flow is entered only by
    /// an accepted `New`; a dropped packet never changes the table; the
    /// table never holds more than its capacity.
    #[test]
    fn drops_never_change_the_table_and_only_accepted_openings_enter(
        steps in proptest::collection::vec(
            (0u8..4, 0u8..0x40, 0u16..3, 0u16..3, proptest::bool::ANY, proptest::bool::ANY, 0u64..40),
            1..80,
        )
    ) {
        let mut t = Tracker::new(4, Timeouts { udp_first: 20, udp_single: 10, udp_multiple: 20, tcp_first: 30, ..Timeouts::default() });
        let mut now = 0;
        for (kind, flags, a, b, inbound, accept, dt) in steps {
            now += dt;
            let (src, dst) = if inbound { (NET, LAN) } else { (LAN, NET) };
            let (sp, dp) = (1000 + a, 2000 + b);
            let (sp, dp) = if inbound { (dp, sp) } else { (sp, dp) };
            let pkt = match kind {
                0 => tcp(src, sp, dst, dp, flags),
                1 => udp(src, sp, dst, dp),
                2 => echo(src, dst, if flags & 1 == 0 { 8 } else { 0 }, a),
                _ => icmp_error(ROUTER, dst, 3, &tcp(dst, dp, src, sp, flags)),
            };
            let dir = if inbound { Inbound } else { Outbound };
            let ft = five_tuple(&pkt).unwrap();
            let before = t.flows(Timestamp(now));
            let inserted = t.counters().inserted;
            let c = t.classify(dir, &pkt, &ft, Timestamp(now));
            if accept {
                t.commit(&c, 1, None, Timestamp(now));
                if t.counters().inserted > inserted {
                    proptest::prop_assert_eq!(c.state, CtState::New);
                }
            } else {
                proptest::prop_assert_eq!(t.flows(Timestamp(now)), before);
            }
            proptest::prop_assert!(t.len() <= t.capacity());
        }
    }
}

/// A TCP segment with its numbers, window, options and payload length.
#[allow(clippy::too_many_arguments)]
fn seg(
    src: [u8; 4],
    sp: u16,
    dst: [u8; 4],
    dp: u16,
    flags: u8,
    (seq, ack, win): (u32, u32, u16),
    options: &[u8],
    payload: usize,
) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sp.to_be_bytes());
    h[2..4].copy_from_slice(&dp.to_be_bytes());
    h[4..8].copy_from_slice(&seq.to_be_bytes());
    h[8..12].copy_from_slice(&ack.to_be_bytes());
    h[12] = (((20 + options.len()) / 4) << 4) as u8;
    h[13] = flags;
    h[14..16].copy_from_slice(&win.to_be_bytes());
    h.extend_from_slice(options);
    h.extend(std::iter::repeat_n(b'x', payload));
    ipv4(src, dst, 6, &h)
}

const PSHACK: u8 = 0x18;
const CI: u32 = 1_000_000;
const SI: u32 = 3_000_000;

/// LAN:40000 → NET:443 opened and 100 bytes answered (windows 65535, no
/// options); the LAN acknowledged them.
fn established() -> Tracker {
    let mut t = Tracker::new(16, Timeouts::default());
    let out = |f, n: (u32, u32), len| seg(LAN, 40000, NET, 443, f, (n.0, n.1, 65535), &[], len);
    let inn = |f, n: (u32, u32), len| seg(NET, 443, LAN, 40000, f, (n.0, n.1, 65535), &[], len);
    assert_eq!(
        pass(&mut t, Outbound, &out(SYN, (CI, 0), 0), 0, true),
        CtState::New
    );
    assert_eq!(
        pass(&mut t, Inbound, &inn(SYNACK, (SI, CI + 1), 0), 0, true),
        CtState::Established
    );
    assert_eq!(
        pass(&mut t, Outbound, &out(ACK, (CI + 1, SI + 1), 0), 0, true),
        CtState::Established
    );
    assert_eq!(
        pass(
            &mut t,
            Inbound,
            &inn(PSHACK, (SI + 1, CI + 1), 100),
            0,
            true
        ),
        CtState::Established
    );
    assert_eq!(
        pass(&mut t, Outbound, &out(ACK, (CI + 1, SI + 101), 0), 0, true),
        CtState::Established
    );
    t
}

fn inbound(t: &mut Tracker, flags: u8, seq: u32, ack: u32, len: usize, now: u64) -> CtState {
    let p = seg(NET, 443, LAN, 40000, flags, (seq, ack, 65535), &[], len);
    pass(t, Inbound, &p, now, true)
}

#[test]
fn a_blind_reset_or_injection_outside_the_window_is_invalid_and_changes_nothing() {
    let mut t = established();
    // Far ahead, half the space away, or more than a window past the
    // LAN's window (within one, Linux tolerates a TCP that overshoots:
    // taken, changing nothing).
    for seq in [
        SI + 101 + 10_000_000,
        SI.wrapping_add(1 << 31),
        SI + 101 + 140_000,
    ] {
        assert_eq!(
            inbound(&mut t, RST, seq, 0, 0, 1),
            CtState::Invalid,
            "{seq}"
        );
        assert_eq!(
            inbound(&mut t, PSHACK, seq, CI + 1, 20, 1),
            CtState::Invalid,
            "{seq}"
        );
    }
    // Acknowledging data the LAN never sent.
    assert_eq!(
        inbound(&mut t, ACK, SI + 101, CI + 1 + 5_000, 0, 1),
        CtState::Invalid
    );
    // Below what the LAN acknowledged.
    assert_eq!(inbound(&mut t, RST, SI + 50, 0, 0, 1), CtState::Invalid);
    assert_eq!(state_of(&t, 1)[0].0, "established");
    // Counted: all invalid, those outside the window on their own (the
    // reset below the ACK fails the reset check, before the window).
    let c = t.counters();
    assert_eq!((c.invalid, c.out_of_window), (8, 7));
    // Just past the window: tolerated, nothing moves.
    assert_eq!(
        inbound(&mut t, RST, SI + 101 + 65_536, 0, 0, 1),
        CtState::Established
    );
    assert_eq!(state_of(&t, 1)[0].0, "established");
    // The real server goes on.
    assert_eq!(
        inbound(&mut t, PSHACK, SI + 101, CI + 1, 10, 1),
        CtState::Established
    );
}

#[test]
fn only_a_reset_at_the_acknowledged_number_ends_a_flow() {
    let mut t = established();
    // In the window but not exact (RFC 5961: the host answers with a
    // challenge ACK): taken, the flow stays established.
    assert_eq!(
        inbound(&mut t, RST, SI + 101 + 1000, 0, 0, 1),
        CtState::Established
    );
    assert_eq!(state_of(&t, 1)[0].0, "established");
    // Exactly where the LAN's ACK points: closed.
    assert_eq!(
        inbound(&mut t, RST, SI + 101, 0, 0, 2),
        CtState::Established
    );
    assert_eq!(state_of(&t, 2)[0].0, "closed");
}

#[test]
fn old_retransmissions_are_part_of_the_flow_but_keep_nothing_alive() {
    let mut t = established();
    let left = state_of(&t, 0)[0].1;
    // Data acknowledged long ago, sent again an hour later: taken (the
    // receiver answers it with an ACK), but the timeout does not restart.
    assert_eq!(
        inbound(&mut t, PSHACK, SI - 100_000, CI + 1, 10, 3600),
        CtState::Established
    );
    assert_eq!(state_of(&t, 3600)[0].1, left - 3600);
    // An in-window segment does restart it.
    assert_eq!(
        inbound(&mut t, ACK, SI + 101, CI + 1, 0, 3600),
        CtState::Established
    );
    assert_eq!(state_of(&t, 3600)[0].1, left);
}

#[test]
fn a_window_scale_counts_only_when_both_sides_offer_it() {
    // Windows of 1024: 100,000 bytes ahead is inside 1024 << 7, not 1024.
    const WS7: [u8; 4] = [1, 3, 3, 7];
    for (server_opts, expect) in [
        (&WS7[..], CtState::Established),
        (&[][..], CtState::Invalid),
    ] {
        let mut t = Tracker::new(4, Timeouts::default());
        let out = |f, n: (u32, u32), o| seg(LAN, 40000, NET, 443, f, (n.0, n.1, 1024), o, 0);
        let inn = |f, n: (u32, u32), o, len| seg(NET, 443, LAN, 40000, f, (n.0, n.1, 1024), o, len);
        pass(&mut t, Outbound, &out(SYN, (CI, 0), &WS7[..]), 0, true);
        pass(
            &mut t,
            Inbound,
            &inn(SYNACK, (SI, CI + 1), server_opts, 0),
            0,
            true,
        );
        pass(&mut t, Outbound, &out(ACK, (CI + 1, SI + 1), &[]), 0, true);
        let ahead = inn(PSHACK, (SI + 100_001, CI + 1), &[], 10);
        assert_eq!(pass(&mut t, Inbound, &ahead, 0, true), expect);
    }
}

#[test]
fn segments_with_an_impossible_header_are_invalid() {
    let mut t = Tracker::new(4, Timeouts::default());
    // A data offset past the segment's end, and one below the header.
    for doff in [15u8, 4] {
        let mut p = seg(LAN, 40000, NET, 443, SYN, (CI, 0, 1024), &[], 0);
        p[32] = doff << 4;
        assert_eq!(pass(&mut t, Outbound, &p, 0, true), CtState::Invalid);
    }
    assert!(t.is_empty());
    // Options are walked as Linux does: a scale above 14 is 14, a
    // malformed option ends the walk.
    let o = window::Segment::parse(
        &seg(
            LAN,
            1,
            NET,
            2,
            SYN,
            (1, 0, 1),
            &[3, 3, 40, 4, 2, 0, 0, 0],
            0,
        )[20..],
    )
    .unwrap()
    .options
    .unwrap();
    assert_eq!((o.wscale, o.sack_perm), (Some(14), true));
    let o = window::Segment::parse(&seg(LAN, 1, NET, 2, SYN, (1, 0, 1), &[4, 9, 3, 3], 0)[20..])
        .unwrap()
        .options
        .unwrap();
    assert_eq!((o.wscale, o.sack_perm), (None, false));
}
