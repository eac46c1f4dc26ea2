//! Engine behaviour: round trips, every drop reason, ESN, lifetimes, filter.

use policy_blob::*;
use proptest::prelude::*;
use viaduct::crypto::SaKey;
use viaduct::wire::ip::OuterRepr;
use viaduct::{
    ClaimToken, DropReason, Engine, EngineError, KeyLedger, MemoryLedger, SeqNo, Timestamp, Verdict,
};

use crate::common::*;

const T0: Timestamp = Timestamp(0);

/// Writes an outer IPv4 header A → B (identification 1) for `payload_len`
/// bytes of `protocol` into `buf[..20]`.
fn outer_a_to_b(buf: &mut [u8], protocol: u8, payload_len: usize) {
    OuterRepr {
        src: v4(A4.outer),
        dst: v4(B4.outer),
        tos: 0,
        ident: 1,
        protocol,
    }
    .emit(buf, payload_len)
    .unwrap();
}

fn pair(aead: Aead) -> (Engine, Engine) {
    let a = Engine::new(
        &lab_policy(aead, A4, B4, A4, B4, true),
        T0,
        &mut MemoryLedger::default(),
    )
    .unwrap();
    let b = Engine::new(
        &lab_policy(aead, B4, A4, B4, A4, false),
        T0,
        &mut MemoryLedger::default(),
    )
    .unwrap();
    (a, b)
}

fn send(a: &mut Engine, inner: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 2048];
    match a.outbound(inner, &mut out, T0) {
        Verdict::Send(n) => out[..n].to_vec(),
        Verdict::Drop(r) => panic!("outbound dropped: {r}"),
        Verdict::Ike(i) => panic!("outbound never yields IKE: {i:?}"),
    }
}

fn recv(b: &mut Engine, pkt: &[u8]) -> Result<Vec<u8>, DropReason> {
    let mut buf = pkt.to_vec();
    match b.inbound(&mut buf, T0) {
        Verdict::Send(n) => Ok(buf[..n].to_vec()),
        Verdict::Drop(r) => Err(r),
        Verdict::Ike(i) => panic!("no IKE peer in these policies: {i:?}"),
    }
}

fn lan_a_to_b(payload: &[u8]) -> Vec<u8> {
    udp4("10.1.0.5", "10.2.0.7", 4000, 5000, payload)
}

/// An outer IPv4 ESP packet to B whose plaintext (payload || pad || padlen
/// || nh) is given verbatim, sealed with the A→B key.
fn craft(aead: Aead, seq: u32, plaintext: &[u8]) -> Vec<u8> {
    let sa_key = SaKey::new(aead, key(aead, 1).expose()).unwrap();
    let mut esp = Vec::new();
    esp.extend_from_slice(&SPI_A_TO_B.to_be_bytes());
    esp.extend_from_slice(&seq.to_be_bytes());
    let iv = u64::from(seq).to_be_bytes();
    esp.extend_from_slice(&iv);
    let mut ct = plaintext.to_vec();
    // ESN is on by default: AAD = SPI || seq-high (0) || seq-low.
    let mut aad = SPI_A_TO_B.to_be_bytes().to_vec();
    aad.extend_from_slice(&0u32.to_be_bytes());
    aad.extend_from_slice(&seq.to_be_bytes());
    let tag = sa_key.seal(&iv, &aad, &mut ct).unwrap();
    esp.extend_from_slice(&ct);
    esp.extend_from_slice(&tag);
    let mut pkt = vec![0u8; 20];
    outer_a_to_b(&mut pkt, 50, esp.len());
    pkt.extend_from_slice(&esp);
    pkt
}

fn with_trailer(inner: &[u8], pad: &[u8], nh: u8) -> Vec<u8> {
    let mut p = inner.to_vec();
    p.extend_from_slice(pad);
    p.push(pad.len() as u8);
    p.push(nh);
    p
}

#[test]
fn round_trip_ipv4_each_aead_both_ways() {
    for aead in ALL_AEADS {
        let (mut a, mut b) = pair(aead);
        let inner = lan_a_to_b(b"hello through the viaduct");
        let wire = send(&mut a, &inner);
        assert_eq!(wire[9], 50, "outer protocol is ESP");
        assert!(
            !wire.windows(5).any(|w| w == b"hello"),
            "{aead}: plaintext leaked"
        );
        assert_eq!(recv(&mut b, &wire).unwrap(), inner, "{aead}");
        let back = udp4("10.2.0.7", "10.1.0.5", 5000, 4000, b"reply");
        let wire = send(&mut b, &back);
        assert_eq!(recv(&mut a, &wire).unwrap(), back, "{aead}");
        assert_eq!(b.inbound.sa_mut(SPI_A_TO_B).unwrap().counters().packets, 1);
    }
}

#[test]
fn round_trip_ipv6_over_ipv6_and_ipv4_over_ipv6() {
    for aead in ALL_AEADS {
        let mut a = Engine::new(
            &lab_policy(aead, A6, B6, A6, B6, true),
            T0,
            &mut MemoryLedger::default(),
        )
        .unwrap();
        let mut b = Engine::new(
            &lab_policy(aead, B6, A6, B6, A6, false),
            T0,
            &mut MemoryLedger::default(),
        )
        .unwrap();
        let inner = udp6("fd00:1::5", "fd00:2::7", 1, 2, b"six in six");
        let wire = send(&mut a, &inner);
        assert_eq!(wire[0] >> 4, 6);
        assert_eq!(wire[6], 50);
        assert_eq!(recv(&mut b, &wire).unwrap(), inner);

        let mut a = Engine::new(
            &lab_policy(aead, A6, B6, A4, B4, true),
            T0,
            &mut MemoryLedger::default(),
        )
        .unwrap();
        let mut b = Engine::new(
            &lab_policy(aead, B6, A6, B4, A4, false),
            T0,
            &mut MemoryLedger::default(),
        )
        .unwrap();
        let inner = lan_a_to_b(b"four in six");
        let wire = send(&mut a, &inner);
        assert_eq!(wire[0] >> 4, 6);
        assert_eq!(recv(&mut b, &wire).unwrap(), inner);
    }
}

#[test]
fn replayed_packet_dropped_and_counted() {
    let (mut a, mut b) = pair(Aead::Aes128Gcm16);
    let wire = send(&mut a, &lan_a_to_b(b"x"));
    recv(&mut b, &wire).unwrap();
    assert_eq!(recv(&mut b, &wire), Err(DropReason::Replay));
    assert_eq!(b.inbound.drops().get(DropReason::Replay), 1);
}

#[test]
fn outside_window_dropped_and_counted() {
    let (mut a, mut b) = pair(Aead::Aes256Gcm16);
    let old = send(&mut a, &lan_a_to_b(b"old"));
    for _ in 0..1100 {
        let w = send(&mut a, &lan_a_to_b(b"new"));
        recv(&mut b, &w).unwrap();
    }
    assert_eq!(recv(&mut b, &old), Err(DropReason::OutsideWindow));
    assert_eq!(b.inbound.drops().get(DropReason::OutsideWindow), 1);
}

#[test]
fn window_edge_last_slot_accepted() {
    let (mut a, mut b) = pair(Aead::ChaCha20Poly1305);
    let pkts: Vec<_> = (0..1025).map(|_| send(&mut a, &lan_a_to_b(b"e"))).collect();
    // Receive seq 1025 first: window 1024 covers 2..=1025.
    recv(&mut b, &pkts[1024]).unwrap();
    assert_eq!(recv(&mut b, &pkts[0]), Err(DropReason::OutsideWindow));
    assert!(recv(&mut b, &pkts[1]).is_ok());
}

#[test]
fn wrong_spi_dropped_and_counted() {
    let (mut a, mut b) = pair(Aead::Aes128Gcm16);
    let mut wire = send(&mut a, &lan_a_to_b(b"x"));
    wire[20..24].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    assert_eq!(recv(&mut b, &wire), Err(DropReason::UnknownSpi));
    assert_eq!(b.inbound.drops().get(DropReason::UnknownSpi), 1);
}

#[test]
fn truncated_esp_dropped_and_counted() {
    let (mut a, mut b) = pair(Aead::Aes128Gcm16);
    let wire = send(&mut a, &lan_a_to_b(b"x"));
    // Cut the ESP short and fix the outer length so only ESP is truncated.
    let mut short = wire[..20 + 30].to_vec();
    outer_a_to_b(&mut short, 50, 30);
    assert_eq!(recv(&mut b, &short), Err(DropReason::Truncated));
    assert_eq!(b.inbound.drops().get(DropReason::Truncated), 1);
}

#[test]
fn bad_padding_dropped_and_counted() {
    let aead = Aead::Aes128Gcm16;
    let (_, mut b) = pair(aead);
    let inner = lan_a_to_b(b"padme!!"); // 35 bytes: needs 3 pad bytes
    let pkt = craft(aead, 1, &with_trailer(&inner, &[1, 2, 4], 4));
    assert_eq!(recv(&mut b, &pkt), Err(DropReason::BadPadding));
    // Pad length larger than the payload.
    let pkt = craft(aead, 2, &[0xaa, 0xbb, 0xff, 4]);
    assert_eq!(recv(&mut b, &pkt[..]), Err(DropReason::BadPadding));
    assert_eq!(b.inbound.drops().get(DropReason::BadPadding), 2);
    // The correctly padded packet passes, so the crafting is right.
    let pkt = craft(aead, 3, &with_trailer(&inner, &[1, 2, 3], 4));
    assert_eq!(recv(&mut b, &pkt).unwrap(), inner);
}

#[test]
fn wrong_tag_dropped_and_counted() {
    let (mut a, mut b) = pair(Aead::ChaCha20Poly1305);
    let mut wire = send(&mut a, &lan_a_to_b(b"x"));
    let last = wire.len() - 1;
    wire[last] ^= 0x80;
    assert_eq!(recv(&mut b, &wire), Err(DropReason::AuthFailed));
    assert_eq!(b.inbound.drops().get(DropReason::AuthFailed), 1);
    // A failed ICV does not move the window: the genuine packet still passes.
    wire[last] ^= 0x80;
    assert!(recv(&mut b, &wire).is_ok());
}

#[test]
fn inner_packet_outside_selectors_dropped_and_counted() {
    let aead = Aead::Aes256Gcm16;
    let (_, mut b) = pair(aead);
    // Authentic packet from the peer, but claiming a source outside 10.1.0.0/24.
    let inner = udp4("10.9.0.5", "10.2.0.7", 1, 2, b"spoof");
    let pad = [1u8, 2, 3][..viaduct::sa::pad_len(inner.len())].to_vec();
    let pkt = craft(aead, 1, &with_trailer(&inner, &pad, 4));
    assert_eq!(recv(&mut b, &pkt), Err(DropReason::SelectorMismatch));
    assert_eq!(b.inbound.drops().get(DropReason::SelectorMismatch), 1);
}

#[test]
fn dummy_packet_dropped_silently_and_counted() {
    let aead = Aead::Aes128Gcm16;
    let (_, mut b) = pair(aead);
    let pkt = craft(aead, 1, &[0xaa, 0xbb, 0, 59]);
    assert_eq!(recv(&mut b, &pkt), Err(DropReason::Dummy));
    assert_eq!(b.inbound.drops().get(DropReason::Dummy), 1);
}

#[test]
fn bad_next_header_dropped_and_counted() {
    let aead = Aead::Aes128Gcm16;
    let (_, mut b) = pair(aead);
    let inner = lan_a_to_b(b"padme!!");
    // Next header 6 (TCP: transport mode) is not accepted in tunnel mode.
    let pkt = craft(aead, 1, &with_trailer(&inner, &[1, 2, 3], 6));
    assert_eq!(recv(&mut b, &pkt), Err(DropReason::BadNextHeader));
    // Next header says IPv6 but the inner packet is IPv4.
    let pkt = craft(aead, 2, &with_trailer(&inner, &[1, 2, 3], 41));
    assert_eq!(recv(&mut b, &pkt), Err(DropReason::BadNextHeader));
    assert_eq!(b.inbound.drops().get(DropReason::BadNextHeader), 2);
}

#[test]
fn spd_discard_and_no_policy_counted() {
    let (mut a, _) = pair(Aead::Aes128Gcm16);
    let mut out = [0u8; 256];
    let other = udp4("10.1.0.5", "10.3.0.1", 1, 2, b"x");
    assert_eq!(
        a.outbound(&other, &mut out, T0),
        Verdict::Drop(DropReason::Discard)
    );
    let v6 = udp6("fd00:1::1", "fd00:2::1", 1, 2, b"x");
    assert_eq!(
        a.outbound(&v6, &mut out, T0),
        Verdict::Drop(DropReason::NoPolicy)
    );
    assert_eq!(
        a.outbound(b"\x45garbage", &mut out, T0),
        Verdict::Drop(DropReason::Truncated)
    );
    let mut bad_len = udp4("10.1.0.5", "10.2.0.7", 1, 2, b"x");
    bad_len.push(0);
    assert_eq!(
        a.outbound(&bad_len, &mut out, T0),
        Verdict::Drop(DropReason::Malformed)
    );
    let d = a.outbound.drops();
    assert_eq!(
        (d.get(DropReason::Discard), d.get(DropReason::NoPolicy)),
        (1, 1)
    );
}

#[test]
fn filter_drop_rule_enforced_outbound_and_inbound() {
    let aead = Aead::Aes128Gcm16;
    let telnet = Selector {
        protocol: Protocol::UDP,
        dst_ports: PortRange::single(23),
        ..Selector::any_v4()
    };
    let pa = lab_policy(aead, A4, B4, A4, B4, true).with_filter(
        "no-23-out",
        Direction::Outbound,
        telnet.clone(),
        FilterAction::Drop,
    );
    let pb = lab_policy(aead, B4, A4, B4, A4, false).with_filter(
        "no-23-in",
        Direction::Inbound,
        telnet,
        FilterAction::Drop,
    );
    let mut a = Engine::new(&pa, T0, &mut MemoryLedger::default()).unwrap();
    let mut b = Engine::new(&pb, T0, &mut MemoryLedger::default()).unwrap();
    let mut out = [0u8; 256];
    let p23 = udp4("10.1.0.5", "10.2.0.7", 1000, 23, b"x");
    assert_eq!(
        a.outbound(&p23, &mut out, T0),
        Verdict::Drop(DropReason::Filter)
    );
    // Through an unfiltered sender, B's inbound filter still drops it.
    let (mut a2, _) = pair(aead);
    let wire = send(&mut a2, &p23);
    assert_eq!(recv(&mut b, &wire), Err(DropReason::Filter));
    // Other ports pass.
    let ok = send(&mut a, &udp4("10.1.0.5", "10.2.0.7", 1000, 24, b"x"));
    let mut b2 = pair(aead).1;
    assert!(recv(&mut b2, &ok).is_ok());
}

#[test]
fn esn_rollover_across_2_pow_32() {
    let aead = Aead::Aes256Gcm16;
    let (mut a, mut b) = pair(aead);
    let start = (1u64 << 32) - 3;
    a.outbound
        .sa_mut(TunnelId(1))
        .unwrap()
        .set_last_seq(SeqNo(start));
    b.inbound
        .sa_mut(SPI_A_TO_B)
        .unwrap()
        .window_mut()
        .accept(SeqNo(start));
    let mut lows = Vec::new();
    for i in 1..=6u64 {
        let inner = lan_a_to_b(b"esn");
        let wire = send(&mut a, &inner);
        lows.push(u32::from_be_bytes(wire[24..28].try_into().unwrap()));
        assert_eq!(recv(&mut b, &wire).unwrap(), inner, "seq {:#x}", start + i);
    }
    // Only the low 32 bits travel; they wrap while the 64-bit counter does not.
    assert_eq!(lows, vec![u32::MAX - 1, u32::MAX, 0, 1, 2, 3]);
    assert_eq!(
        b.inbound.sa_mut(SPI_A_TO_B).unwrap().window().top(),
        SeqNo(start + 6)
    );
}

#[test]
fn esn_high_bits_are_authenticated() {
    let aead = Aead::ChaCha20Poly1305;
    let (mut a, mut b) = pair(aead);
    // Sender is in the second subspace; the receiver infers seq-high 0, so
    // the AAD differs and the ICV must fail.
    a.outbound
        .sa_mut(TunnelId(1))
        .unwrap()
        .set_last_seq(SeqNo(1 << 32));
    let wire = send(&mut a, &lan_a_to_b(b"hi"));
    assert_eq!(recv(&mut b, &wire), Err(DropReason::AuthFailed));
}

#[test]
fn seq_overflow_is_a_hard_stop() {
    let aead = Aead::Aes128Gcm16;
    let mut p = lab_policy(aead, A4, B4, A4, B4, true);
    p.tunnels[0].esn = false;
    let mut a = Engine::new(&p, T0, &mut MemoryLedger::default()).unwrap();
    a.outbound
        .sa_mut(TunnelId(1))
        .unwrap()
        .set_last_seq(SeqNo(u64::from(u32::MAX) - 1));
    let mut out = [0u8; 256];
    assert!(matches!(
        a.outbound(&lan_a_to_b(b"last"), &mut out, T0),
        Verdict::Send(_)
    ));
    for _ in 0..3 {
        assert_eq!(
            a.outbound(&lan_a_to_b(b"x"), &mut out, T0),
            Verdict::Drop(DropReason::SeqOverflow)
        );
    }
    let (mut e, _) = pair(aead);
    e.outbound
        .sa_mut(TunnelId(1))
        .unwrap()
        .set_last_seq(SeqNo(u64::MAX));
    assert_eq!(
        e.outbound(&lan_a_to_b(b"x"), &mut out, T0),
        Verdict::Drop(DropReason::SeqOverflow)
    );
}

#[test]
fn lifetimes_soft_event_then_hard_expiry() {
    let aead = Aead::Aes128Gcm16;
    let mut p = lab_policy(aead, A4, B4, A4, B4, true);
    p.tunnels[0].lifetimes.soft.packets = Some(2);
    p.tunnels[0].lifetimes.hard.packets = Some(3);
    p.tunnels[0].lifetimes.hard.seconds = Some(100);
    let mut a = Engine::new(&p, T0, &mut MemoryLedger::default()).unwrap();
    let mut events = Vec::new();
    let mut out = [0u8; 256];
    for _ in 0..2 {
        assert!(matches!(
            a.outbound(&lan_a_to_b(b"x"), &mut out, T0),
            Verdict::Send(_)
        ));
    }
    a.outbound.poll_events(T0, |e| events.push(e));
    assert_eq!(events.len(), 1);
    assert!(!events[0].hard);
    assert!(matches!(
        a.outbound(&lan_a_to_b(b"x"), &mut out, T0),
        Verdict::Send(_)
    ));
    assert_eq!(
        a.outbound(&lan_a_to_b(b"x"), &mut out, T0),
        Verdict::Drop(DropReason::Expired)
    );
    // Time-based hard expiry on a fresh engine.
    let mut a = Engine::new(&p, T0, &mut MemoryLedger::default()).unwrap();
    assert!(matches!(
        a.outbound(&lan_a_to_b(b"x"), &mut out, Timestamp(99)),
        Verdict::Send(_)
    ));
    assert_eq!(
        a.outbound(&lan_a_to_b(b"x"), &mut out, Timestamp(100)),
        Verdict::Drop(DropReason::Expired)
    );
    assert_eq!(a.outbound.drops().get(DropReason::Expired), 1);
}

fn udp_pair(aead: Aead, a_side: Side, b_side: Side, inner4: bool) -> (Engine, Engine) {
    let (ia, ib) = if inner4 { (A4, B4) } else { (A6, B6) };
    let mut pa = lab_policy(aead, a_side, b_side, ia, ib, true);
    let mut pb = lab_policy(aead, b_side, a_side, ib, ia, false);
    pa.tunnels[0].udp_encap = true;
    pb.tunnels[0].udp_encap = true;
    (
        Engine::new(&pa, T0, &mut MemoryLedger::default()).unwrap(),
        Engine::new(&pb, T0, &mut MemoryLedger::default()).unwrap(),
    )
}

fn ones_sum(data: &[u8]) -> u32 {
    let mut s: u32 = data
        .chunks(2)
        .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
        .sum();
    while s >> 16 != 0 {
        s = (s >> 16) + (s & 0xffff);
    }
    s
}

#[test]
fn udp_encapsulation_round_trip_ipv4_and_ipv6_outer() {
    for aead in ALL_AEADS {
        // IPv4 outer: protocol 17, ports 4500, UDP length, checksum zero (RFC 3948 §2.1).
        let (mut a, mut b) = udp_pair(aead, A4, B4, true);
        let inner = lan_a_to_b(b"in udp");
        let wire = send(&mut a, &inner);
        assert_eq!(wire[9], 17);
        assert_eq!(&wire[20..24], &[0x11, 0x94, 0x11, 0x94]);
        assert_eq!(
            usize::from(u16::from_be_bytes([wire[24], wire[25]])),
            wire.len() - 20
        );
        assert_eq!(&wire[26..28], &[0, 0]);
        assert_eq!(&wire[28..32], &SPI_A_TO_B.to_be_bytes());
        assert_eq!(recv(&mut b, &wire).unwrap(), inner);
        // B answers in UDP too.
        let back = udp4("10.2.0.7", "10.1.0.5", 5000, 4000, b"reply");
        let wire = send(&mut b, &back);
        assert_eq!(wire[9], 17);
        assert_eq!(recv(&mut a, &wire).unwrap(), back);

        // IPv6 outer: the checksum is computed (zero is not allowed on IPv6).
        let (mut a, mut b) = udp_pair(aead, A6, B6, false);
        let inner = udp6("fd00:1::5", "fd00:2::7", 1, 2, b"six in udp six");
        let wire = send(&mut a, &inner);
        assert_eq!(wire[6], 17);
        assert_ne!(&wire[46..48], &[0, 0]);
        let udp_len = (wire.len() - 40) as u32;
        let mut pseudo = wire[8..40].to_vec();
        pseudo.extend_from_slice(&udp_len.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 17]);
        pseudo.extend_from_slice(&wire[40..]);
        assert_eq!(ones_sum(&pseudo), 0xffff, "UDP checksum verifies");
        assert_eq!(recv(&mut b, &wire).unwrap(), inner);
    }
}

#[test]
fn udp_encapsulation_keepalive_marker_and_mismatch_are_counted() {
    let (mut a, mut b) = udp_pair(Aead::Aes128Gcm16, A4, B4, true);
    let wire = send(&mut a, &lan_a_to_b(b"x"));
    // A NAT-keepalive: one byte 0xFF after the UDP header.
    let mut ka = wire[..29].to_vec();
    ka[28] = 0xff;
    outer_a_to_b(&mut ka, 17, 9);
    ka[24..26].copy_from_slice(&9u16.to_be_bytes());
    assert_eq!(recv(&mut b, &ka), Err(DropReason::Keepalive));
    // The non-ESP marker: IKE on port 4500 is not the data plane's.
    let mut ike = wire.clone();
    ike[28..32].copy_from_slice(&[0, 0, 0, 0]);
    assert_eq!(recv(&mut b, &ike), Err(DropReason::NonEsp));
    // A UDP length that disagrees with the IP length.
    let mut bad = wire.clone();
    bad[24..26].copy_from_slice(&((wire.len() - 20 - 1) as u16).to_be_bytes());
    assert_eq!(recv(&mut b, &bad), Err(DropReason::Malformed));
    // The same ESP sent as protocol 50 to an SA that expects UDP.
    let mut plain = Vec::new();
    plain.extend_from_slice(&wire[..20]);
    plain.extend_from_slice(&wire[28..]);
    outer_a_to_b(&mut plain, 50, wire.len() - 28);
    assert_eq!(recv(&mut b, &plain), Err(DropReason::EncapMismatch));
    // And the genuine packet still passes (nothing above moved the window).
    assert!(recv(&mut b, &wire).is_ok());
    for r in [
        DropReason::Keepalive,
        DropReason::NonEsp,
        DropReason::Malformed,
        DropReason::EncapMismatch,
    ] {
        assert_eq!(b.inbound.drops().get(r), 1, "{r}");
    }

    // The other way round: ESP in UDP to an SA that expects protocol 50.
    let (_, mut pb) = pair(Aead::Aes128Gcm16);
    let (mut ua, _) = udp_pair(Aead::Aes128Gcm16, A4, B4, true);
    let wire = send(&mut ua, &lan_a_to_b(b"y"));
    // With no tunnel in UDP, port 4500 is ordinary cleartext: not protected.
    assert_eq!(recv(&mut pb, &wire), Err(DropReason::Unprotected));
}

#[test]
fn bypass_both_directions() {
    let p = lab_policy(Aead::Aes128Gcm16, A4, B4, A4, B4, true);
    let mut p2 = p.clone();
    p2.spd.insert(
        0,
        SpdEntry {
            name: "dns".into(),
            selector: Selector {
                protocol: Protocol::UDP,
                dst_ports: PortRange::single(53),
                ..Selector::any_v4()
            },
            action: SpdAction::Bypass,
        },
    );
    let mut a = Engine::new(&p2, T0, &mut MemoryLedger::default()).unwrap();
    let mut out = [0u8; 256];
    let q = udp4("10.1.0.5", "9.9.9.9", 3333, 53, b"q");
    assert_eq!(a.outbound(&q, &mut out, T0), Verdict::Send(q.len()));
    assert_eq!(&out[..q.len()], &q[..]);
    let mut answer = udp4("9.9.9.9", "10.1.0.5", 53, 3333, b"a");
    assert_eq!(a.inbound(&mut answer, T0), Verdict::Send(answer.len()));
    let mut other = udp4("9.9.9.9", "10.1.0.5", 80, 3333, b"a");
    assert_eq!(
        a.inbound(&mut other, T0),
        Verdict::Drop(DropReason::Unprotected)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn encap_decap_round_trip(aead_i in 0usize..3, payload in proptest::collection::vec(any::<u8>(), 0..1400), v6 in any::<bool>()) {
        let aead = ALL_AEADS[aead_i];
        let (mut a, mut b) = if v6 {
            (Engine::new(&lab_policy(aead, A6, B6, A6, B6, true), T0, &mut MemoryLedger::default()).unwrap(),
             Engine::new(&lab_policy(aead, B6, A6, B6, A6, false), T0, &mut MemoryLedger::default()).unwrap())
        } else {
            pair(aead)
        };
        let inner = if v6 { udp6("fd00:1::5", "fd00:2::7", 1, 2, &payload) } else { lan_a_to_b(&payload) };
        let wire = send(&mut a, &inner);
        prop_assert_eq!(recv(&mut b, &wire).unwrap(), inner);
    }

    #[test]
    fn any_single_byte_corruption_rejected(aead_i in 0usize..3, payload in proptest::collection::vec(any::<u8>(), 0..200), pos in any::<prop::sample::Index>(), x in 1u8..=255) {
        let aead = ALL_AEADS[aead_i];
        let (mut a, mut b) = pair(aead);
        let inner = lan_a_to_b(&payload);
        let mut wire = send(&mut a, &inner);
        // Corrupt any byte of the ESP part (outer header bytes may be benign:
        // TTL, TOS, identification are not protected by ESP by design).
        let i = 20 + pos.index(wire.len() - 20);
        wire[i] ^= x;
        prop_assert!(recv(&mut b, &wire).is_err());
    }

    #[test]
    fn udp_encap_round_trip_and_corruption_rejected(aead_i in 0usize..3, payload in proptest::collection::vec(any::<u8>(), 0..600), pos in any::<prop::sample::Index>(), x in 1u8..=255) {
        let aead = ALL_AEADS[aead_i];
        let (mut a, mut b) = udp_pair(aead, A4, B4, true);
        let inner = lan_a_to_b(&payload);
        let wire = send(&mut a, &inner);
        // Any change to the destination port, the UDP length or the ESP part
        // is refused. Not checked: the source port (a NAT may rewrite it) and
        // the UDP checksum (zero on IPv4; the ICV covers ESP).
        let mut bad = wire.clone();
        let mut i = 22 + pos.index(wire.len() - 22);
        if (26..28).contains(&i) {
            i = 28;
        }
        bad[i] ^= x;
        prop_assert!(recv(&mut b, &bad).is_err());
        prop_assert_eq!(recv(&mut b, &wire).unwrap(), inner);
    }

    #[test]
    fn udp_inbound_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (_, mut b) = udp_pair(Aead::Aes128Gcm16, A4, B4, true);
        // Behind a valid outer IPv4 + UDP/4500 header, and bare.
        let mut pkt = vec![0u8; 28];
        outer_a_to_b(&mut pkt, 17, 8 + bytes.len());
        pkt[20..22].copy_from_slice(&4500u16.to_be_bytes());
        pkt[22..24].copy_from_slice(&4500u16.to_be_bytes());
        pkt[24..26].copy_from_slice(&((8 + bytes.len()) as u16).to_be_bytes());
        pkt.extend_from_slice(&bytes);
        let _ = b.inbound(&mut pkt, T0);
        let mut buf = bytes.clone();
        let _ = b.inbound(&mut buf, T0);
    }

    #[test]
    fn inbound_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (_, mut b) = pair(Aead::Aes128Gcm16);
        let mut buf = bytes.clone();
        let _ = b.inbound(&mut buf, T0);
        let mut out = [0u8; 512];
        let _ = b.outbound(&bytes, &mut out, T0);
    }
}

// ---- Outer DSCP/ECN (RFC 4301 §5.1.2.1 as updated by RFC 6040), TFC padding ----

/// Sets an inner packet's TOS / traffic class byte (IPv4 header checksum
/// recomputed).
fn set_tos(p: &mut [u8], tos: u8) {
    if p[0] >> 4 == 4 {
        p[1] = tos;
        p[10..12].copy_from_slice(&[0, 0]);
        let c = viaduct::wire::internet_checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        p[0] = 0x60 | (tos >> 4);
        p[1] = (p[1] & 0x0f) | (tos << 4);
    }
}

/// The TOS / traffic class byte of an IP packet.
fn tos_of(p: &[u8]) -> u8 {
    if p[0] >> 4 == 4 {
        p[1]
    } else {
        (p[0] << 4) | (p[1] >> 4)
    }
}

/// Every combination of outer family, inner family and encapsulation:
/// (A's policy, B's policy, an inner packet A → B).
fn layouts(aead: Aead) -> Vec<(&'static str, Policy, Policy, Vec<u8>)> {
    let mut v = Vec::new();
    for (outer_name, oa, ob) in [("v4", A4, B4), ("v6", A6, B6)] {
        for (inner_name, ia, ib) in [("v4", A4, B4), ("v6", A6, B6)] {
            for udp in [false, true] {
                let mut pa = lab_policy(aead, oa, ob, ia, ib, true);
                let mut pb = lab_policy(aead, ob, oa, ib, ia, false);
                pa.tunnels[0].udp_encap = udp;
                pb.tunnels[0].udp_encap = udp;
                let inner = if inner_name == "v4" {
                    lan_a_to_b(b"dscp and ecn stay inside")
                } else {
                    udp6(
                        "fd00:1::5",
                        "fd00:2::7",
                        4000,
                        5000,
                        b"dscp and ecn stay inside",
                    )
                };
                let name = match (outer_name, inner_name, udp) {
                    ("v4", "v4", false) => "v4 in v4 esp",
                    ("v4", "v4", true) => "v4 in v4 udp",
                    ("v4", "v6", false) => "v6 in v4 esp",
                    ("v4", "v6", true) => "v6 in v4 udp",
                    ("v6", "v4", false) => "v4 in v6 esp",
                    ("v6", "v4", true) => "v4 in v6 udp",
                    ("v6", "v6", false) => "v6 in v6 esp",
                    _ => "v6 in v6 udp",
                };
                v.push((name, pa, pb, inner));
            }
        }
    }
    v
}

/// Length of the outer headers in front of ESP (IP, and UDP if any).
fn outer_len(wire: &[u8]) -> usize {
    let ip = if wire[0] >> 4 == 4 { 20 } else { 40 };
    let proto = if wire[0] >> 4 == 4 { wire[9] } else { wire[6] };
    ip + if proto == 17 { 8 } else { 0 }
}

#[test]
fn outer_header_copies_no_inner_dscp_or_ecn_bit() {
    // Red (or any LAN host, `ping -Q`, IP_TOS) chooses the inner TOS byte;
    // none of its 8 bits may reach the outer header. Two fresh senders
    // encapsulate packets that differ only in that byte: the outer headers
    // (IP and UDP) must be byte for byte the same, and the TOS / traffic
    // class the policy's (DSCP 0, Not-ECT).
    for (name, pa, _, inner) in layouts(Aead::Aes128Gcm16) {
        let mut reference: Option<Vec<u8>> = None;
        for tos in [0x00u8, 0x01, 0x02, 0x03, 0x04, 0x80, 0xb8, 0xfc, 0xff] {
            let mut a = Engine::new(&pa, T0, &mut MemoryLedger::default()).unwrap();
            let mut p = inner.clone();
            set_tos(&mut p, tos);
            let wire = send(&mut a, &p);
            assert_eq!(
                tos_of(&wire),
                0,
                "{name}: inner TOS {tos:#04x} reached the outer header"
            );
            let mut hdr = wire[..outer_len(&wire)].to_vec();
            if hdr.len() == 48 {
                // The IPv6 UDP checksum sums the ESP bytes that follow
                // (ciphertext): a function of what is on the wire anyway.
                hdr[46..48].copy_from_slice(&[0, 0]);
            }
            match &reference {
                None => reference = Some(hdr),
                Some(r) => assert_eq!(
                    &hdr, r,
                    "{name}: outer header depends on inner TOS {tos:#04x}"
                ),
            }
        }
    }
}

/// ECN codepoints (RFC 3168).
const NOT_ECT: u8 = 0b00;
const ECT1: u8 = 0b01;
const ECT0: u8 = 0b10;
const CE: u8 = 0b11;

/// RFC 6040 §4.2, Figure 4: the ECN field leaving the decapsulator, by
/// arriving inner (row) and outer (column) ECN; `None` = drop.
fn rfc6040_egress(inner: u8, outer: u8) -> Option<u8> {
    match (inner, outer) {
        (NOT_ECT, CE) => None,
        (NOT_ECT, _) => Some(NOT_ECT),
        (ECT0, NOT_ECT) | (ECT0, ECT0) => Some(ECT0),
        (ECT0, ECT1) => Some(ECT1),
        (ECT1, NOT_ECT) | (ECT1, ECT0) | (ECT1, ECT1) => Some(ECT1),
        (_, CE) | (CE, _) => Some(CE),
        _ => unreachable!(),
    }
}

/// Sets the ECN bits of the outer header (and fixes an IPv4 checksum): the
/// outer header is not authenticated, routers on the path may mark it.
fn set_outer_ecn(wire: &mut [u8], ecn: u8) {
    let tos = (tos_of(wire) & !3) | ecn;
    set_tos(wire, tos);
}

#[test]
fn decapsulation_follows_rfc6040_for_every_ecn_pair() {
    for (name, pa, pb, inner) in layouts(Aead::Aes256Gcm16) {
        let mut a = Engine::new(&pa, T0, &mut MemoryLedger::default()).unwrap();
        let mut b = Engine::new(&pb, T0, &mut MemoryLedger::default()).unwrap();
        for dscp in [0u8, 46] {
            for inner_ecn in [NOT_ECT, ECT1, ECT0, CE] {
                for outer_ecn in [NOT_ECT, ECT1, ECT0, CE] {
                    let mut p = inner.clone();
                    set_tos(&mut p, dscp << 2 | inner_ecn);
                    let mut wire = send(&mut a, &p);
                    set_outer_ecn(&mut wire, outer_ecn);
                    let what = format!("{name}: inner {inner_ecn:02b} outer {outer_ecn:02b}");
                    match rfc6040_egress(inner_ecn, outer_ecn) {
                        None => assert_eq!(
                            recv(&mut b, &wire),
                            Err(DropReason::CeOnNotEct),
                            "{what}: not dropped"
                        ),
                        Some(ecn) => {
                            let got = recv(&mut b, &wire).unwrap_or_else(|r| panic!("{what}: {r}"));
                            let mut want = p.clone();
                            set_tos(&mut want, dscp << 2 | ecn);
                            assert_eq!(got, want, "{what}: expected ECN {ecn:02b}, DSCP kept");
                            if got[0] >> 4 == 4 {
                                assert_eq!(
                                    viaduct::wire::internet_checksum(&got[..20]),
                                    0,
                                    "{what}: header checksum"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn tfc_padding_from_the_peer_is_stripped() {
    // RFC 4303 §2.4: a sender may pad the payload after the inner packet
    // (traffic flow confidentiality); the inner IP header says where the
    // packet ends. Linux sends it with `ip xfrm state … tfcpad`.
    let aead = Aead::Aes128Gcm16;
    let (_, mut b) = pair(aead);
    let inner = lan_a_to_b(b"short"); // 33 bytes
    for (seq, tfc) in [(1u32, 1usize), (2, 3), (3, 95), (4, 1367)] {
        let mut payload = inner.clone();
        payload.extend(std::iter::repeat_n(0u8, tfc));
        let pad: Vec<u8> = (1..=viaduct::sa::pad_len(payload.len()) as u8).collect();
        let pkt = craft(aead, seq, &with_trailer(&payload, &pad, 4));
        assert_eq!(
            recv(&mut b, &pkt),
            Ok(inner.clone()),
            "{tfc} bytes of TFC padding"
        );
    }
    let inner6 = udp6("fd00:1::5", "fd00:2::7", 1, 2, b"six");
    let p6 = lab_policy(aead, B4, A4, B6, A6, false);
    let mut b6 = Engine::new(&p6, T0, &mut MemoryLedger::default()).unwrap();
    let mut payload = inner6.clone();
    payload.extend([0u8; 200]);
    let pad: Vec<u8> = (1..=viaduct::sa::pad_len(payload.len()) as u8).collect();
    let pkt = craft(aead, 1, &with_trailer(&payload, &pad, 41));
    assert_eq!(recv(&mut b6, &pkt), Ok(inner6));
    // An inner header that claims more than the payload holds is refused.
    let mut short = inner.clone();
    short[2..4].copy_from_slice(&(inner.len() as u16 + 4).to_be_bytes());
    short[10..12].copy_from_slice(&[0, 0]);
    let c = viaduct::wire::internet_checksum(&short[..20]);
    short[10..12].copy_from_slice(&c.to_be_bytes());
    let pad: Vec<u8> = (1..=viaduct::sa::pad_len(short.len()) as u8).collect();
    let pkt = craft(aead, 5, &with_trailer(&short, &pad, 4));
    assert!(recv(&mut b, &pkt).is_err());
}

#[test]
fn outer_dscp_comes_from_the_policy() {
    for (name, mut pa, _, inner) in layouts(Aead::ChaCha20Poly1305) {
        pa.tunnels[0].outer_dscp = 46;
        let mut a = Engine::new(&pa, T0, &mut MemoryLedger::default()).unwrap();
        for tos in [0x00u8, 0x03, 0x20, 0xff] {
            let mut p = inner.clone();
            set_tos(&mut p, tos);
            let wire = send(&mut a, &p);
            assert_eq!(
                tos_of(&wire),
                46 << 2,
                "{name}: inner TOS {tos:#04x}: EF, Not-ECT"
            );
        }
    }
}

#[test]
fn ce_on_not_ect_is_counted() {
    let (mut a, mut b) = pair(Aead::Aes128Gcm16);
    let mut wire = send(&mut a, &lan_a_to_b(b"x"));
    set_outer_ecn(&mut wire, CE);
    assert_eq!(recv(&mut b, &wire), Err(DropReason::CeOnNotEct));
    assert_eq!(b.inbound.drops().get(DropReason::CeOnNotEct), 1);
    assert!(b.inbound.report().contains("in drop ce_on_not_ect=1"));
}

/// A packet of exactly `len` bytes A → B (IPv4 or IPv6 UDP).
fn sized(v6: bool, len: usize) -> Vec<u8> {
    if v6 {
        udp6("fd00:1::5", "fd00:2::7", 4000, 5000, &vec![0x5a; len - 48])
    } else {
        udp4("10.1.0.5", "10.2.0.7", 4000, 5000, &vec![0x5a; len - 28])
    }
}

#[test]
fn tfc_padding_sends_size_classes_and_the_peer_gets_the_packet() {
    let sizes = [128u16, 512, 1400];
    for (name, mut pa, pb, inner) in layouts(Aead::Aes256Gcm16) {
        pa.tunnels[0].tfc_sizes = sizes.to_vec();
        let mut a = Engine::new(&pa, T0, &mut MemoryLedger::default()).unwrap();
        // B has no padding of its own: accepting it needs nothing.
        let mut b = Engine::new(&pb, T0, &mut MemoryLedger::default()).unwrap();
        let v6 = inner[0] >> 4 == 6;
        let lens: Vec<usize> = [
            48, 60, 100, 127, 128, 129, 300, 511, 512, 513, 1000, 1399, 1400,
        ]
        .into_iter()
        .filter(|&n| n >= if v6 { 48 } else { 28 })
        .collect();
        let mut by_class: std::collections::BTreeMap<usize, usize> = Default::default();
        let mut padded = 0u64;
        for len in lens {
            let p = sized(v6, len);
            let wire = send(&mut a, &p);
            let class = usize::from(*sizes.iter().find(|&&c| usize::from(c) >= len).unwrap());
            padded += (class - len) as u64;
            let first = by_class.entry(class).or_insert(wire.len());
            assert_eq!(
                wire.len(),
                *first,
                "{name}: a {len}-byte packet shows its length, not class {class}"
            );
            assert_eq!(recv(&mut b, &wire), Ok(p), "{name}: {len} bytes");
        }
        assert_eq!(by_class.len(), 3, "{name}: three classes on the wire");
        assert_eq!(
            a.outbound.sa_mut(TunnelId(1)).unwrap().counters().tfc_bytes,
            padded
        );
        assert_eq!(
            b.inbound.sa_mut(SPI_A_TO_B).unwrap().counters().tfc_bytes,
            padded
        );
    }
    // Beyond the last size a packet keeps its length.
    let mut pa = lab_policy(Aead::Aes128Gcm16, A4, B4, A4, B4, true);
    pa.tunnels[0].tfc_sizes = vec![128];
    let mut a = Engine::new(&pa, T0, &mut MemoryLedger::default()).unwrap();
    let (mut plain, _) = pair(Aead::Aes128Gcm16);
    for len in [129, 600, 1400] {
        let p = sized(false, len);
        assert_eq!(send(&mut a, &p).len(), send(&mut plain, &p).len(), "{len}");
    }
}

// ---- The shipped firewall profile, compiled and enforced ----

/// The engine of a shipped profile (`profiles/<rel>`), compiled as the
/// image builder compiles it.
fn shipped(rel: &str) -> Engine {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../profiles")
        .join(rel);
    let profile = profiles::load_profile(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let policy = policy::compile(&profile).unwrap();
    Engine::new(&policy, T0, &mut MemoryLedger::default()).unwrap()
}

/// Black → red in clear through the firewall: the verdict.
fn fw_in(e: &mut Engine, pkt: &[u8]) -> Verdict {
    let mut b = pkt.to_vec();
    e.inbound(&mut b, T0)
}

const WEB: &str = "203.0.113.80";
const LAN: &str = "10.1.0.7";

/// Red → black through the firewall: the verdict.
fn fw_out(e: &mut Engine, pkt: &[u8]) -> Verdict {
    let mut out = [0u8; 512];
    e.outbound(pkt, &mut out, T0)
}

/// An ICMP destination unreachable (port unreachable) from `from` to `to`
/// quoting the first 28 bytes of `quoted`.
fn unreachable4(from: &str, to: &str, quoted: &[u8]) -> Vec<u8> {
    let q = &quoted[..quoted.len().min(28)];
    let total = 20 + 8 + q.len();
    let mut p = udp4(from, to, 0, 0, &[]);
    p.truncate(20);
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[9] = 1;
    p.extend_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0]);
    p.extend_from_slice(q);
    p
}

#[test]
fn firewall_profile_lets_no_connection_in() {
    let mut fw = shipped("firewall.toml");
    let f = DropReason::Filter;
    let pass = |v: Verdict, p: &[u8]| v == Verdict::Send(p.len());
    // Nothing from the internet opens a connection, nor passes as a reply
    // to one that was never opened, whatever its ports and flags.
    for sport in [22, 53, 80, 443, 40000] {
        for dport in [22, 80, 445, 3389, 8080, 32768, 40000, 60999, 61000, 65535] {
            for flags in [
                tcp::SYN,
                tcp::SYN | tcp::PSH,
                tcp::SYN | tcp::ACK,
                tcp::ACK,
                tcp::ACK | tcp::PSH,
                tcp::FIN | tcp::ACK,
                tcp::RST,
                tcp::RST | tcp::ACK,
            ] {
                let p = tcp4(WEB, LAN, sport, dport, flags, b"x");
                assert_eq!(
                    fw_in(&mut fw, &p),
                    Verdict::Drop(f),
                    ":{sport} -> :{dport} flags {flags:#04x}"
                );
            }
            let p = udp4("9.9.9.9", LAN, sport, dport, b"a");
            assert_eq!(
                fw_in(&mut fw, &p),
                Verdict::Drop(f),
                "udp :{sport} -> :{dport}"
            );
        }
    }
    // The LAN opens a TLS connection: its replies pass, both ways.
    let syn = tcp4(LAN, WEB, 40000, 443, tcp::SYN, b"");
    assert!(pass(fw_out(&mut fw, &syn), &syn));
    for (p, inbound) in [
        (tcp4(WEB, LAN, 443, 40000, tcp::SYN | tcp::ACK, b""), true),
        (tcp4(LAN, WEB, 40000, 443, tcp::ACK, b""), false),
        (
            tcp4(LAN, WEB, 40000, 443, tcp::ACK | tcp::PSH, b"hello"),
            false,
        ),
        (
            tcp4(WEB, LAN, 443, 40000, tcp::ACK | tcp::PSH, b"answer"),
            true,
        ),
    ] {
        let v = if inbound {
            fw_in(&mut fw, &p)
        } else {
            fw_out(&mut fw, &p)
        };
        assert!(pass(v, &p), "{v:?}");
    }
    // … but not to another client port, from another server port or
    // server, and not a new connection from the server back in.
    for p in [
        tcp4(WEB, LAN, 443, 40001, tcp::ACK, b"x"),
        tcp4(WEB, LAN, 444, 40000, tcp::ACK, b"x"),
        tcp4("203.0.113.81", LAN, 443, 40000, tcp::ACK, b"x"),
        tcp4(WEB, LAN, 443, 22, tcp::SYN, b""),
    ] {
        assert_eq!(fw_in(&mut fw, &p), Verdict::Drop(f));
    }
    // An ICMP error about that connection is related; about another, not.
    let about = unreachable4("198.51.100.1", LAN, &syn);
    assert!(pass(fw_in(&mut fw, &about), &about));
    let other = unreachable4(
        "198.51.100.1",
        LAN,
        &tcp4(LAN, WEB, 40002, 443, tcp::SYN, b""),
    );
    assert_eq!(fw_in(&mut fw, &other), Verdict::Drop(f));
    // DNS: the answer to the query passes, from that server only.
    let q = udp4(LAN, "9.9.9.9", 45000, 53, b"q");
    assert!(pass(fw_out(&mut fw, &q), &q));
    let a = udp4("9.9.9.9", LAN, 53, 45000, b"a");
    assert!(pass(fw_in(&mut fw, &a), &a));
    let spoofed = udp4("8.8.8.8", LAN, 53, 45000, b"a");
    assert_eq!(fw_in(&mut fw, &spoofed), Verdict::Drop(f));
    // What the LAN may not open stays in: ssh, a ping, another subnet.
    for p in [
        tcp4(LAN, WEB, 40003, 22, tcp::SYN, b""),
        tcp4("10.1.1.7", WEB, 40004, 443, tcp::SYN, b""),
        udp4(LAN, "9.9.9.9", 45001, 123, b"t"),
    ] {
        assert_eq!(fw_out(&mut fw, &p), Verdict::Drop(f));
    }
    // The counters say it: two connections, the rest counted invalid or new.
    let report = fw.outbound.report();
    eprintln!("{report}");
    assert!(
        report.contains("conntrack flows=2 max=100000 inserted=2 "),
        "{report}"
    );
    assert!(report.contains(" related=1"), "{report}");
    // Per rule: what each decided, each way.
    for line in [
        "out filter rule=2 name=tracked-out packets=2",
        "out filter rule=5 name=tls-out packets=1",
        "out filter rule=6 name=dns-out packets=1",
        "out filter default packets=3",
    ] {
        assert!(report.contains(line), "{line:?} in\n{report}");
    }
    let inbound = fw.inbound.report();
    eprintln!("{inbound}");
    assert!(
        inbound.contains("in filter rule=0 name=tracked-in packets=4\n"),
        "{inbound}"
    );
    let default: u64 = viaduct::pump::counter_values(&inbound, "in filter default", "packets")
        .next()
        .unwrap();
    assert_eq!(
        default,
        fw.inbound.drops().get(DropReason::Filter),
        "every inbound drop was the default's"
    );
}

/// `policy/tests/fixtures/firewall-sets.toml`: the firewall written with
/// named address sets, a port list and an ICMP type.
#[test]
fn sets_port_lists_and_icmp_types_are_enforced() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policy/tests/fixtures/firewall-sets.toml");
    let policy = policy::compile(&profiles::load_profile(&path).unwrap()).unwrap();
    let mut fw = Engine::new(&policy, T0, &mut MemoryLedger::default()).unwrap();
    let ok = |v: Verdict, p: &[u8]| v == Verdict::Send(p.len());
    // Both LANs of the set, both ports of the list; no other port, no
    // address outside the set.
    for (src, port, want) in [
        ("10.1.0.7", 443, true),
        ("10.1.1.7", 80, true),
        ("10.1.1.8", 443, true),
        ("10.1.1.9", 8443, false),
        ("10.1.2.7", 443, false),
    ] {
        let p = tcp4(src, WEB, 40000, port, tcp::SYN, b"");
        assert_eq!(ok(fw_out(&mut fw, &p), &p), want, "{src} -> :{port}");
    }
    // DNS only to the resolvers of the set.
    let q = udp4("10.1.1.7", "198.51.100.53", 45000, 53, b"q");
    assert!(ok(fw_out(&mut fw, &q), &q));
    let q = udp4("10.1.1.7", "9.9.9.9", 45000, 53, b"q");
    assert_eq!(fw_out(&mut fw, &q), Verdict::Drop(DropReason::Filter));
    // Echo requests out, not other ICMP types (a timestamp request, 13).
    let mut ping = udp4("10.1.0.7", WEB, 0, 0, b"");
    ping.truncate(20);
    ping[2..4].copy_from_slice(&28u16.to_be_bytes());
    ping[9] = 1;
    ping.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
    assert!(ok(fw_out(&mut fw, &ping), &ping));
    ping[20] = 13;
    assert_eq!(fw_out(&mut fw, &ping), Verdict::Drop(DropReason::Filter));
}

/// A clear-text firewall policy (SPD bypass) whose first rule accepts the
/// inbound packets of tracked flows (`established` and `related`); the
/// caller adds its rules and the default.
fn tracked_policy() -> Policy {
    Policy::new("fw", "1")
        .with_spd("all", Selector::any_v4(), SpdAction::Bypass)
        .with_filter(
            "tracked",
            Direction::Inbound,
            Selector::any_v4(),
            FilterAction::Accept,
        )
        .with_states(FilterStates(
            FilterStates::ESTABLISHED | FilterStates::RELATED,
        ))
}

/// A rule with a rate limit matches at most its rate (a token bucket over
/// the packets it would match); the rest go on to the next rules. Here:
/// 3 new connections per minute, burst 2, then a drop rule.
#[test]
fn a_rate_limited_rule_passes_packets_over_its_rate_to_the_next_rules() {
    let any = Selector::any_v4();
    let p = tracked_policy()
        .with_filter(
            "ssh-in",
            Direction::Inbound,
            any.clone(),
            FilterAction::Accept,
        )
        .with_states(FilterStates(FilterStates::NEW))
        .with_limit(RateLimit {
            rate: 3,
            per_seconds: 60,
            burst: 2,
        })
        .with_filter(
            "tracked-out",
            Direction::Outbound,
            any.clone(),
            FilterAction::Accept,
        )
        .with_states(FilterStates(FilterStates::ESTABLISHED))
        .with_default_filter(FilterAction::Drop);
    let mut fw = Engine::new(&p, T0, &mut MemoryLedger::default()).unwrap();
    let syn = |port: u16| tcp4(WEB, LAN, port, 22, tcp::SYN, b"");
    let mut at = |port: u16, t: u64| {
        let mut b = syn(port);
        matches!(fw.inbound(&mut b, Timestamp(t)), Verdict::Send(_))
    };
    // The burst: 2 at once, the third over the rate.
    assert!(at(1000, 0));
    assert!(at(1001, 0));
    assert!(!at(1002, 0));
    // 3 per minute: one more after 20 s, not before.
    assert!(!at(1003, 19));
    assert!(at(1004, 20));
    assert!(!at(1005, 20));
    // A minute later the bucket is full again (burst 2, not more).
    assert!(at(1006, 100));
    assert!(at(1007, 100));
    assert!(!at(1008, 100));
    // Until the server answers, what the opener sends is still `new`
    // (as in nftables): a retransmitted SYN counts against the limit.
    let mut b = tcp4(WEB, LAN, 1000, 22, tcp::SYN, b"");
    assert!(!matches!(
        fw.inbound(&mut b, Timestamp(100)),
        Verdict::Send(_)
    ));
    // Once it has, the connection's packets are `established` (another
    // rule) and not limited.
    let mut out = vec![0u8; 256];
    let synack = tcp4(LAN, WEB, 22, 1000, tcp::SYN | tcp::ACK, b"");
    assert!(matches!(
        fw.outbound(&synack, &mut out, Timestamp(100)),
        Verdict::Send(_)
    ));
    for _ in 0..10 {
        let mut b = tcp4(WEB, LAN, 1000, 22, tcp::ACK, b"");
        assert!(matches!(
            fw.inbound(&mut b, Timestamp(100)),
            Verdict::Send(_)
        ));
    }
    let report = fw.inbound.report();
    assert!(
        report.contains("in filter rule=1 name=ssh-in packets=5 limited=5"),
        "{report}"
    );
}

/// A logged rule writes one line per packet it decides (rule, verdict,
/// state, addresses, ports, flags; nothing of the payload), a rule without
/// `log` none; the default logs when the policy says so. The lines are
/// rate-limited: a burst of 100, then 20 a second, the rest counted.
#[test]
fn logged_rules_write_rate_limited_lines_without_payload() {
    let any = Selector::any_v4();
    let p = tracked_policy()
        .with_log()
        .with_filter(
            "web-out",
            Direction::Outbound,
            Selector {
                protocol: Protocol::TCP,
                dst_ports: PortRange::single(80),
                ..any.clone()
            },
            FilterAction::Accept,
        )
        .with_states(FilterStates(FilterStates::NEW))
        .with_log()
        .with_filter(
            "quiet-out",
            Direction::Outbound,
            Selector {
                protocol: Protocol::TCP,
                dst_ports: PortRange::single(443),
                ..any.clone()
            },
            FilterAction::Accept,
        )
        .with_default_filter(FilterAction::Drop)
        .with_default_log();
    let mut fw = Engine::new(&p, T0, &mut MemoryLedger::default()).unwrap();
    let secret = b"payload-marker-never-logged";
    let mut out = vec![0u8; 2048];
    let b = tcp4(LAN, WEB, 40000, 80, tcp::SYN, secret);
    assert!(matches!(fw.outbound(&b, &mut out, T0), Verdict::Send(_)));
    let mut b = tcp4(WEB, LAN, 80, 40000, tcp::SYN | tcp::ACK, secret);
    assert!(matches!(fw.inbound(&mut b, T0), Verdict::Send(_)));
    let b = tcp4(LAN, WEB, 40001, 443, tcp::SYN, secret);
    assert!(matches!(fw.outbound(&b, &mut out, T0), Verdict::Send(_)));
    let mut b = tcp4(WEB, LAN, 5555, 22, tcp::SYN, secret);
    assert!(!matches!(fw.inbound(&mut b, T0), Verdict::Send(_)));
    let out = fw.outbound.take_log();
    let inb = fw.inbound.take_log();
    assert_eq!(
        out,
        [format!(
            "filter log out rule=1 name=web-out accept state=new proto=6 {LAN}:40000 > {WEB}:80 flags=S"
        )]
    );
    assert_eq!(
        inb,
        [
            format!("filter log in rule=0 name=tracked accept state=established proto=6 {WEB}:80 > {LAN}:40000 flags=SA"),
            format!("filter log in default drop state=new proto=6 {WEB}:5555 > {LAN}:22 flags=S"),
        ]
    );
    assert!(fw.outbound.take_log().is_empty(), "taken once");
    // A flood: 1,000 refused SYNs in the same second give what is left of
    // the burst, the rest is counted; a second later, 20 more lines.
    for port in 0..1000u16 {
        let mut b = tcp4(WEB, LAN, 10000 + port, 22, tcp::SYN, b"");
        assert!(!matches!(fw.inbound(&mut b, T0), Verdict::Send(_)));
    }
    let burst = fw.inbound.take_log();
    assert_eq!(burst.len(), 98, "the burst less the lines already written");
    for port in 0..1000u16 {
        let mut b = tcp4(WEB, LAN, 20000 + port, 22, tcp::SYN, b"");
        assert!(!matches!(
            fw.inbound(&mut b, Timestamp(T0.0 + 1)),
            Verdict::Send(_)
        ));
    }
    assert_eq!(fw.inbound.take_log().len(), 20);
    let report = fw.inbound.report();
    assert!(
        report.contains("in filter log written=120 suppressed=1882"),
        "{report}"
    );
    assert!(
        !out.iter()
            .chain(&inb)
            .chain(&burst)
            .any(|l| l.contains("payload")),
        "no payload in a log line"
    );
}

/// A rule's own timeouts hold for the flows it admits, the defaults for
/// the others.
#[test]
fn a_rules_timeouts_hold_for_the_flows_it_admits() {
    let any = Selector::any_v4();
    let mut short = DEFAULT_FLOW_TIMEOUTS;
    short[6] = 5; // udp_first
    let p = tracked_policy()
        .with_filter(
            "ntp-out",
            Direction::Outbound,
            Selector {
                protocol: Protocol::UDP,
                dst_ports: PortRange::single(123),
                ..any.clone()
            },
            FilterAction::Accept,
        )
        .with_timeouts(short)
        .with_filter("out", Direction::Outbound, any, FilterAction::Accept)
        .with_default_filter(FilterAction::Drop);
    let mut fw = Engine::new(&p, T0, &mut MemoryLedger::default()).unwrap();
    let mut out = [0u8; 256];
    for (port, t) in [(123u16, 0u64), (53, 0)] {
        let q = udp4(LAN, "9.9.9.9", 45000 + port, port, b"q");
        assert!(matches!(
            fw.outbound(&q, &mut out, Timestamp(t)),
            Verdict::Send(_)
        ));
    }
    let answer = |fw: &mut Engine, port: u16, t: u64| {
        let mut a = udp4("9.9.9.9", LAN, port, 45000 + port, b"a");
        matches!(fw.inbound(&mut a, Timestamp(t)), Verdict::Send(_))
    };
    // At 6 s the NTP flow (5 s) is gone, the DNS one (60 s) not.
    assert!(!answer(&mut fw, 123, 6));
    assert!(answer(&mut fw, 53, 6));
}

/// An opening the filter accepts but the SPD then discards never went out:
/// it leaves no flow, so nothing can come back as its reply.
#[test]
fn a_packet_dropped_after_the_filter_leaves_no_state() {
    // The web server's network (WEB is in it).
    let blocked = Selector {
        dst: Prefix::new(v4("203.0.113.0"), 24),
        ..Selector::any_v4()
    };
    let p = tracked_policy()
        .with_filter(
            "out",
            Direction::Outbound,
            Selector::any_v4(),
            FilterAction::Accept,
        )
        .with_default_filter(FilterAction::Drop);
    let mut p = p;
    // The discard goes before the bypass (first match).
    p.spd.insert(
        0,
        SpdEntry {
            name: "blocked".into(),
            selector: blocked,
            action: SpdAction::Discard,
        },
    );
    let mut fw = Engine::new(&p, T0, &mut MemoryLedger::default()).unwrap();
    let syn = tcp4(LAN, "203.0.113.9", 40000, 443, tcp::SYN, b"");
    assert_eq!(fw_out(&mut fw, &syn), Verdict::Drop(DropReason::Discard));
    assert!(fw.outbound.report().contains("conntrack flows=0 "));
    let reply = tcp4("203.0.113.9", LAN, 443, 40000, tcp::SYN | tcp::ACK, b"");
    assert!(matches!(fw_in(&mut fw, &reply), Verdict::Drop(_)));
    // The same opening elsewhere goes out and is tracked.
    let syn = tcp4(LAN, "198.51.100.80", 40000, 443, tcp::SYN, b"");
    assert_eq!(fw_out(&mut fw, &syn), Verdict::Send(syn.len()));
    assert!(fw.outbound.report().contains("conntrack flows=1 "));
}

#[test]
fn a_full_connection_table_drops_new_connections_and_counts_them() {
    let p = tracked_policy()
        .with_filter(
            "out",
            Direction::Outbound,
            Selector::any_v4(),
            FilterAction::Accept,
        )
        .with_default_filter(FilterAction::Drop)
        .with_max_flows(2);
    let mut fw = Engine::new(&p, T0, &mut MemoryLedger::default()).unwrap();
    let mut out = [0u8; 256];
    let mut open = |port: u16| {
        let p = udp4(LAN, "9.9.9.9", port, 53, b"q");
        fw.outbound.process(&p, &mut out, T0)
    };
    assert!(matches!(open(1000), Verdict::Send(_)));
    assert!(matches!(open(1001), Verdict::Send(_)));
    assert_eq!(open(1002), Verdict::Drop(DropReason::StateTableFull));
    // The tracked ones still pass; the refused one has no state.
    let a = udp4("9.9.9.9", LAN, 53, 1001, b"a");
    assert_eq!(fw_in(&mut fw, &a), Verdict::Send(a.len()));
    let a = udp4("9.9.9.9", LAN, 53, 1002, b"a");
    assert_eq!(fw_in(&mut fw, &a), Verdict::Drop(DropReason::Filter));
    assert_eq!(fw.outbound.drops().get(DropReason::StateTableFull), 1);
    // Once the UDP flows time out (60 s), new ones fit again.
    let p = udp4(LAN, "9.9.9.9", 1002, 53, b"q");
    assert!(matches!(
        fw.outbound.process(&p, &mut out, Timestamp(61)),
        Verdict::Send(_)
    ));
}

#[test]
fn tcp_flags_rules_look_at_the_named_flags_only() {
    // accept "ack !syn" (an established segment), accept "syn ack"
    // (a SYN-ACK), accept "!ack" nothing else … default drop.
    let rule = |mask: u8, value: u8| TcpFlags { mask, value };
    let sel = Selector {
        protocol: Protocol::TCP,
        ..Selector::any_v4()
    };
    let p = Policy::new("flags", "1")
        .with_local(v4(A4.outer))
        .with_spd("all", Selector::any_v4(), SpdAction::Bypass)
        .with_tcp_filter(
            "established",
            Direction::Inbound,
            sel.clone(),
            rule(TcpFlags::ACK | TcpFlags::SYN, TcpFlags::ACK),
            FilterAction::Accept,
        )
        .with_tcp_filter(
            "fin-without-ack",
            Direction::Inbound,
            sel.clone(),
            rule(TcpFlags::FIN | TcpFlags::ACK, TcpFlags::FIN),
            FilterAction::Accept,
        )
        .with_default_filter(FilterAction::Drop);
    let mut e = Engine::new(&p, T0, &mut MemoryLedger::default()).unwrap();
    for (flags, pass) in [
        (tcp::ACK, true),
        (tcp::ACK | tcp::PSH, true),
        (tcp::ACK | tcp::FIN, true),
        (tcp::ACK | tcp::RST, true),
        (tcp::ACK | tcp::SYN, false),
        (tcp::SYN, false),
        (0, false),
        (tcp::FIN, true),
        (tcp::FIN | tcp::PSH | 0x20, true),
        (tcp::FIN | tcp::ACK | tcp::SYN, false),
        (0xff, false),
    ] {
        let pkt = tcp4("9.9.9.9", "10.1.0.5", 1, 2, flags, b"");
        let want = if pass {
            Verdict::Send(pkt.len())
        } else {
            Verdict::Drop(DropReason::Filter)
        };
        assert_eq!(fw_in(&mut e, &pkt), want, "flags {flags:#04x}");
    }
    // A flags rule never matches a packet without a TCP header: UDP, or a
    // "TCP" datagram too short to hold the flags.
    let u = udp4("9.9.9.9", "10.1.0.5", 1, 2, b"");
    assert_eq!(fw_in(&mut e, &u), Verdict::Drop(DropReason::Filter));
    let mut short = tcp4("9.9.9.9", "10.1.0.5", 1, 2, tcp::ACK, b"");
    short.truncate(20 + 13);
    short[2..4].copy_from_slice(&33u16.to_be_bytes());
    short[10..12].copy_from_slice(&[0, 0]);
    let c = viaduct::wire::internet_checksum(&short[..20]);
    short[10..12].copy_from_slice(&c.to_be_bytes());
    assert!(matches!(fw_in(&mut e, &short), Verdict::Drop(_)));
}

// ---- Inbound: the SPD decides, not only the SA's selectors (RFC 4301 §5.2) ----

const C4: Side = Side {
    outer: "198.51.100.3",
    lan: "10.9.0.0",
    lan_len: 16,
};

/// A manually keyed tunnel `local` ↔ `remote` (outer addresses) between
/// inner prefixes.
#[allow(clippy::too_many_arguments)]
fn tunnel_between(
    id: u32,
    name: &str,
    local: &str,
    remote: &str,
    local_ts: Prefix,
    remote_ts: Prefix,
    (spi_out, seed_out): (u32, u8),
    (spi_in, seed_in): (u32, u8),
) -> Tunnel {
    let aead = Aead::Aes128Gcm16;
    Tunnel::new(id, name, v4(local), v4(remote), aead)
        .with_local_ts(TrafficSelector::prefix(local_ts))
        .with_remote_ts(TrafficSelector::prefix(remote_ts))
        .with_manual_keys(
            ManualSa {
                spi: Spi(spi_out),
                key: key(aead, seed_out),
            },
            ManualSa {
                spi: Spi(spi_in),
                key: key(aead, seed_in),
            },
        )
}

fn pfx(s: &str, len: u8) -> Prefix {
    Prefix::new(v4(s), len)
}

/// Gateway B (LAN 10.2.0.0/24) with two nested tunnels and carve-outs:
/// `wide` to peer A for 10.0.0.0/8, inside it `narrow` to peer C for
/// 10.9.0.0/16, a DISCARD for 10.5.0.0/16 and a BYPASS for 10.7.0.0/16.
/// SPD most specific first, as the compiler orders it.
fn nested_b() -> Policy {
    let lan = pfx("10.2.0.0", 24);
    Policy::new("b", "1")
        .with_local(v4(B4.outer))
        .with_tunnel(tunnel_between(
            1,
            "wide",
            B4.outer,
            A4.outer,
            lan,
            pfx("10.0.0.0", 8),
            (0x1b0a, 11),
            (0x1a0b, 12),
        ))
        .with_tunnel(tunnel_between(
            2,
            "narrow",
            B4.outer,
            C4.outer,
            lan,
            pfx("10.9.0.0", 16),
            (0x2b0c, 21),
            (0x2c0b, 22),
        ))
        .with_spd(
            "narrow",
            Selector::between(lan, pfx("10.9.0.0", 16)),
            SpdAction::Protect(TunnelId(2)),
        )
        .with_spd(
            "no-10-5",
            Selector::between(lan, pfx("10.5.0.0", 16)),
            SpdAction::Discard,
        )
        .with_spd(
            "clear-10-7",
            Selector::between(lan, pfx("10.7.0.0", 16)),
            SpdAction::Bypass,
        )
        .with_spd(
            "wide",
            Selector::between(lan, pfx("10.0.0.0", 8)),
            SpdAction::Protect(TunnelId(1)),
        )
        .with_spd("rest", Selector::any_v4(), SpdAction::Discard)
}

/// A peer of B that sends anything from `from` (its whole /8 view) to B's
/// LAN through one tunnel: what a malicious peer can do with its own keys.
fn sender_to_b(me: &str, from: Prefix, spi_out: u32, seed_out: u8) -> Engine {
    let lan_b = pfx("10.2.0.0", 24);
    let p = Policy::new("peer", "1")
        .with_local(v4(me))
        .with_tunnel(tunnel_between(
            1,
            "to-b",
            me,
            B4.outer,
            from,
            lan_b,
            (spi_out, seed_out),
            (0xffff, 99),
        ))
        .with_spd(
            "to-b",
            Selector::between(from, lan_b),
            SpdAction::Protect(TunnelId(1)),
        );
    Engine::new(&p, T0, &mut MemoryLedger::default()).unwrap()
}

#[test]
fn decrypted_packet_must_be_one_the_spd_sends_through_this_tunnel() {
    let mut b = Engine::new(&nested_b(), T0, &mut MemoryLedger::default()).unwrap();
    let mut a = sender_to_b(A4.outer, pfx("10.0.0.0", 8), 0x1a0b, 12);
    let mut c = sender_to_b(C4.outer, pfx("10.9.0.0", 16), 0x2c0b, 22);
    let to_b = |src: &str| udp4(src, "10.2.0.7", 4000, 5000, b"nested");
    // A's own space, through A's tunnel: delivered.
    let ok = to_b("10.1.0.5");
    assert_eq!(recv(&mut b, &send(&mut a, &ok)), Ok(ok));
    // C's space through C's tunnel: delivered.
    let ok = to_b("10.9.0.5");
    assert_eq!(recv(&mut b, &send(&mut c, &ok)), Ok(ok));
    // A claims C's addresses: inside `wide`'s selectors, but the SPD sends
    // 10.9.0.0/16 through `narrow`, so A cannot inject as C.
    for src in ["10.9.0.5", "10.9.255.254"] {
        let w = send(&mut a, &to_b(src));
        assert_eq!(
            recv(&mut b, &w),
            Err(DropReason::SpdMismatch),
            "A injected {src} as C"
        );
    }
    // The DISCARD carve-out holds inbound too, and so does the BYPASS one
    // (traffic the SPD sends in clear does not arrive through a tunnel).
    for src in ["10.5.0.5", "10.7.0.5"] {
        let w = send(&mut a, &to_b(src));
        assert_eq!(
            recv(&mut b, &w),
            Err(DropReason::SpdMismatch),
            "{src} accepted through `wide`"
        );
    }
    assert_eq!(b.inbound.drops().get(DropReason::SpdMismatch), 4);
    // C outside its selectors: the SA's own check.
    let mut c_wide = sender_to_b(C4.outer, pfx("10.0.0.0", 8), 0x2c0b, 22);
    c_wide
        .outbound
        .sa_mut(TunnelId(1))
        .unwrap()
        .set_last_seq(SeqNo(100));
    let w = send(&mut c_wide, &to_b("10.1.0.5"));
    assert_eq!(recv(&mut b, &w), Err(DropReason::SelectorMismatch));
}

// ---- Fragments: ports and flags the filter cannot see ----

/// The verdicts on `inner` (A's LAN → B's LAN, IPv4 or IPv6) under the
/// filter `rules`: at A with them as outbound rules (from red), and at B
/// with them as inbound rules, `inner` sealed with A's key as a peer would
/// send it (whatever A's own checks say). Default accept, SPD PROTECT.
fn filtered(rules: &[(Selector, FilterAction)], inner: &[u8]) -> (Verdict, Verdict) {
    let aead = Aead::Aes128Gcm16;
    let v6 = inner[0] >> 4 == 6;
    let (ia, ib) = if v6 { (A6, B6) } else { (A4, B4) };
    let mut pa = lab_policy(aead, A4, B4, ia, ib, true);
    let mut pb = lab_policy(aead, B4, A4, ib, ia, false);
    for (i, (s, act)) in rules.iter().enumerate() {
        pa = pa.with_filter(format!("r{i}"), Direction::Outbound, s.clone(), *act);
        pb = pb.with_filter(format!("r{i}"), Direction::Inbound, s.clone(), *act);
    }
    let mut a = Engine::new(&pa, T0, &mut MemoryLedger::default()).unwrap();
    let mut b = Engine::new(&pb, T0, &mut MemoryLedger::default()).unwrap();
    let mut out = vec![0u8; 2048];
    let out_v = match a.outbound(inner, &mut out, T0) {
        Verdict::Send(_) => Verdict::Send(inner.len()),
        d => d,
    };
    let pad: Vec<u8> = (1..=viaduct::sa::pad_len(inner.len()) as u8).collect();
    let nh = if v6 { 41 } else { 4 };
    let pkt = craft(aead, 1, &with_trailer(inner, &pad, nh));
    let mut buf = pkt.clone();
    let in_v = b.inbound(&mut buf, T0);
    (out_v, in_v)
}

fn no_telnet(any: Selector) -> (Selector, FilterAction) {
    (
        Selector {
            protocol: Protocol::TCP,
            dst_ports: PortRange::single(23),
            ..any
        },
        FilterAction::Drop,
    )
}

/// Both directions give `want`.
#[track_caller]
fn both(rules: &[(Selector, FilterAction)], inner: &[u8], want: Verdict, what: &str) {
    let (o, i) = filtered(rules, inner);
    assert_eq!(o, want, "{what}: outbound");
    assert_eq!(i, want, "{what}: inbound");
}

const S4: &str = "10.1.0.5";
const D4: &str = "10.2.0.7";
const S6: &str = "fd00:1::5";
const D6: &str = "fd00:2::7";

fn telnet_rules() -> Vec<(Selector, FilterAction)> {
    vec![no_telnet(Selector::any_v4()), no_telnet(Selector::any_v6())]
}

#[test]
fn later_fragments_cannot_slip_past_a_port_rule() {
    let rules = telnet_rules();
    let u = Verdict::Drop(DropReason::UnclassifiedFragment);
    // Later fragments of TCP: the rule "drop tcp to 23" might be meant for
    // them, and the filter cannot see their port.
    let body = [0x41u8; 16];
    for off in [3u16, 4, 100, 0x1fff] {
        for more in [true, false] {
            let p = frag4(S4, D4, 6, off, more, &body);
            both(&rules, &p, u, &format!("v4 offset {off} more {more}"));
        }
    }
    for exts in [&[][..], &[0], &[0, 60], &[43], &[0, 43, 60]] {
        for (off, more) in [(3u16, true), (200, false)] {
            let p = frag6(S6, D6, exts, Some((off, more)), 6, &body);
            both(&rules, &p, u, &format!("v6 exts {exts:?} offset {off}"));
        }
    }
    // Later fragments of UDP: no rule about UDP ports, so nothing depends
    // on what they hide.
    let p = frag4(S4, D4, 17, 3, false, &body);
    both(&rules, &p, Verdict::Send(p.len()), "v4 UDP later fragment");
    let p = frag6(S6, D6, &[60], Some((3, false)), 17, &body);
    both(&rules, &p, Verdict::Send(p.len()), "v6 UDP later fragment");
    // First fragments holding the whole TCP header are filtered by port.
    for (dport, pass) in [(23u16, false), (80, true)] {
        let mut data = tcp_hdr(1234, dport, tcp::SYN);
        data.extend_from_slice(&[0; 12]);
        let want = |n| {
            if pass {
                Verdict::Send(n)
            } else {
                Verdict::Drop(DropReason::Filter)
            }
        };
        let p4 = frag4(S4, D4, 6, 0, true, &data);
        both(
            &rules,
            &p4,
            want(p4.len()),
            &format!("v4 first fragment to {dport}"),
        );
        for exts in [&[][..], &[0, 60]] {
            // First fragment and atomic fragment (RFC 6946: not fragmented).
            for more in [true, false] {
                let p6 = frag6(S6, D6, exts, Some((0, more)), 6, &data);
                let what = format!("v6 first fragment to {dport}, exts {exts:?}, more {more}");
                both(&rules, &p6, want(p6.len()), &what);
            }
        }
    }
    // A port-less rule in front decides for them: here it accepts TCP from
    // 10.1.0.0/28.
    let mut rules = telnet_rules();
    rules.insert(
        0,
        (
            Selector {
                protocol: Protocol::TCP,
                src: pfx("10.1.0.0", 28),
                ..Selector::any_v4()
            },
            FilterAction::Accept,
        ),
    );
    let p = frag4(S4, D4, 6, 3, false, &body);
    both(
        &rules,
        &p,
        Verdict::Send(p.len()),
        "after a port-less accept",
    );
    let p = frag4("10.1.0.99", D4, 6, 3, false, &body);
    both(&rules, &p, u, "not covered by the port-less accept");
    // Counted by name.
    let mut a = Engine::new(
        &lab_policy(Aead::Aes128Gcm16, A4, B4, A4, B4, true).with_filter(
            "t",
            Direction::Outbound,
            no_telnet(Selector::any_v4()).0,
            FilterAction::Drop,
        ),
        T0,
        &mut MemoryLedger::default(),
    )
    .unwrap();
    let mut out = [0u8; 256];
    let _ = a.outbound(&frag4(S4, D4, 6, 3, false, &body), &mut out, T0);
    assert!(a
        .outbound
        .report()
        .contains("out drop unclassified_fragment=1"));
}

#[test]
fn tiny_overlapping_and_truncated_transport_headers_are_dropped() {
    let rules = telnet_rules();
    let bad = Verdict::Drop(DropReason::BadFragment);
    // RFC 1858 tiny fragment: a first fragment with the ports but not the
    // flags; the rest of the header (and the real port, by overlap) later.
    for n in [0usize, 2, 4, 8, 16, 19] {
        let data = &tcp_hdr(1234, 80, tcp::ACK)[..n];
        both(
            &rules,
            &frag4(S4, D4, 6, 0, true, data),
            bad,
            &format!("v4 first fragment of {n} TCP bytes"),
        );
        for exts in [&[][..], &[0, 60]] {
            // RFC 7112: the first fragment holds the whole header chain.
            let p = frag6(S6, D6, exts, Some((0, true)), 6, data);
            both(
                &rules,
                &p,
                bad,
                &format!("v6 first fragment of {n} TCP bytes"),
            );
        }
    }
    for n in [0usize, 4, 7] {
        let data = &[0u8; 8][..n];
        both(
            &rules,
            &frag4(S4, D4, 17, 0, true, data),
            bad,
            &format!("v4 first fragment of {n} UDP bytes"),
        );
        let p = frag6(S6, D6, &[], Some((0, true)), 17, data);
        both(
            &rules,
            &p,
            bad,
            &format!("v6 first fragment of {n} UDP bytes"),
        );
    }
    // Later fragments that would overwrite the TCP header (offset 8 or 16
    // bytes: RFC 1858 §3.2 overlapping fragments).
    for off in [1u16, 2] {
        both(
            &rules,
            &frag4(S4, D4, 6, off, true, &[0; 16]),
            bad,
            &format!("v4 offset {off}"),
        );
        let p = frag6(S6, D6, &[0], Some((off, true)), 6, &[0; 16]);
        both(&rules, &p, bad, &format!("v6 offset {off}"));
    }
    // An IPv6 later fragment whose fragmentable part begins with an
    // extension header: its protocol is in the first fragment only.
    let p = frag6(S6, D6, &[], Some((5, false)), 60, &[0; 16]);
    both(&rules, &p, bad, "v6 later fragment of unknown protocol");
    // Not fragmented but too short for its transport header.
    for (proto, n) in [(6u8, 12usize), (6, 19), (17, 4), (17, 7), (1, 3), (58, 2)] {
        let t = Verdict::Drop(DropReason::Truncated);
        both(
            &rules,
            &frag4(S4, D4, proto, 0, false, &vec![0; n]),
            t,
            &format!("v4 proto {proto} {n} bytes"),
        );
        let p = frag6(S6, D6, &[], None, proto, &vec![0; n]);
        both(&rules, &p, t, &format!("v6 proto {proto} {n} bytes"));
    }
    // Protocols without ports are not affected: fragments of GRE.
    for off in [0u16, 1] {
        let p = frag4(S4, D4, 47, off, off == 0, &[0; 16]);
        both(&rules, &p, Verdict::Send(p.len()), "GRE fragment");
    }
}

#[test]
fn the_spd_never_sends_a_fragment_of_a_protected_flow_in_clear() {
    // PROTECT TCP to 10.2.0.0/24 port 443, everything else from the LAN in
    // clear. A host's later fragment of its 443 connection carries no port:
    // in clear it would leak; dropped instead.
    let lan = pfx("10.1.0.0", 24);
    let peer = pfx("10.2.0.0", 24);
    let mut t = tunnel_between(
        1,
        "tls",
        A4.outer,
        B4.outer,
        lan,
        peer,
        (0x1000, 1),
        (0x2000, 2),
    );
    t.remote_ts[0].protocol = Protocol::TCP;
    t.remote_ts[0].ports = PortRange::single(443);
    let p = Policy::new("a", "1")
        .with_local(v4(A4.outer))
        .with_tunnel(t)
        .with_spd(
            "tls",
            Selector {
                protocol: Protocol::TCP,
                dst_ports: PortRange::single(443),
                ..Selector::between(lan, peer)
            },
            SpdAction::Protect(TunnelId(1)),
        )
        .with_spd(
            "clear",
            Selector::between(lan, Prefix::any_v4()),
            SpdAction::Bypass,
        );
    let mut a = Engine::new(&p, T0, &mut MemoryLedger::default()).unwrap();
    let mut out = [0u8; 512];
    let mut first = tcp_hdr(40000, 443, tcp::ACK);
    first.extend_from_slice(&[0x53; 20]);
    let w = a.outbound(
        &frag4("10.1.0.5", "10.2.0.7", 6, 0, true, &first),
        &mut out,
        T0,
    );
    assert!(
        matches!(w, Verdict::Send(n) if out[9] == 50 && n > 40),
        "first fragment protected: {w:?}"
    );
    let later = frag4("10.1.0.5", "10.2.0.7", 6, 5, false, &[0x53; 32]);
    assert_eq!(
        a.outbound(&later, &mut out, T0),
        Verdict::Drop(DropReason::UnclassifiedFragment),
        "a later fragment of the protected flow went out in clear"
    );
    // UDP fragments are not concerned by the TCP entry: in clear, as the
    // SPD says.
    let udp_later = frag4("10.1.0.5", "10.2.0.7", 17, 5, false, &[0x53; 32]);
    assert_eq!(
        a.outbound(&udp_later, &mut out, T0),
        Verdict::Send(udp_later.len())
    );
}

// ------------------------------------------------------- key use (no nonce twice)

/// (SPI, sequence) of an outer IPv4 ESP packet.
fn spi_seq(pkt: &[u8]) -> (u32, u32) {
    let esp = &pkt[20..];
    (
        u32::from_be_bytes(esp[0..4].try_into().unwrap()),
        u32::from_be_bytes(esp[4..8].try_into().unwrap()),
    )
}

/// The review's first finding: two engines built from the same policy (a restarted
/// Viaduct, a second boot) sealed packets under the same key from sequence 1 again.
/// With the device's ledger shared between them, the second is never built, so no
/// (SPI, sequence) — hence no (key, nonce) — is emitted twice; a policy reusing any
/// one of the keys (another tunnel, another direction) is refused too, and one with
/// new keys is accepted.
#[test]
fn two_engines_from_one_policy_never_emit_the_same_spi_and_sequence() {
    for aead in ALL_AEADS {
        let mut ledger = MemoryLedger::default();
        let p = lab_policy(aead, A4, B4, A4, B4, true);
        let mut seen = std::collections::HashSet::new();
        let mut first = Engine::new(&p, T0, &mut ledger).unwrap();
        for i in 0..50u8 {
            assert!(seen.insert(spi_seq(&send(&mut first, &lan_a_to_b(&[i; 40])))));
        }
        for attempt in 0..3 {
            match Engine::new(&p, T0, &mut ledger) {
                Err(EngineError::KeysAlreadyUsed {
                    reused: 2,
                    total: 2,
                }) => {}
                Err(e) => panic!("{aead}: attempt {attempt}: {e}"),
                Ok(mut again) => {
                    let pkt = send(&mut again, &lan_a_to_b(&[0; 40]));
                    panic!("{aead}: second engine built; it sent {:?}", spi_seq(&pkt));
                }
            }
        }
        // One key of the set, in another tunnel and direction: still refused.
        let mut other = lab_policy(aead, B4, A4, B4, A4, false);
        let m = other.tunnels[0].manual.as_mut().unwrap();
        m.inbound.key = key(aead, 200); // B's inbound is now new; its outbound is A's inbound
        assert!(matches!(
            Engine::new(&other, T0, &mut ledger),
            Err(EngineError::KeysAlreadyUsed {
                reused: 1,
                total: 2
            })
        ));
        // New keys: accepted.
        let mut rotated = lab_policy(aead, A4, B4, A4, B4, true);
        let m = rotated.tunnels[0].manual.as_mut().unwrap();
        m.outbound.key = key(aead, 150);
        m.inbound.key = key(aead, 170);
        Engine::new(&rotated, T0, &mut ledger).unwrap();
    }
}

/// The Viaduct binary's ledger: a one-time token for exactly the policy's key set;
/// none, a token for another set, or a second use installs nothing. A policy without
/// manual keys needs no token.
#[test]
fn manual_sas_need_a_claim_for_exactly_their_keys() {
    let p = lab_policy(Aead::Aes128Gcm16, A4, B4, A4, B4, true);
    let set = p.manual_key_uses();
    assert_eq!(set.as_slice().len(), 2);
    assert!(matches!(
        Engine::new(&p, T0, &mut ClaimToken::none()),
        Err(EngineError::NoKeyClaim)
    ));
    let other = lab_policy(Aead::Aes128Gcm16, B4, A4, B4, A4, false);
    let mut wrong = ClaimToken::new(
        KeyUses::new(vec![set.as_slice()[0]]).digest(), // a subset is another set
    );
    assert!(matches!(
        Engine::new(&p, T0, &mut wrong),
        Err(EngineError::KeyClaimMismatch)
    ));
    // Mirror policies (the two gateways of a pair) hold the same two keys.
    assert_eq!(other.manual_key_uses(), set);
    let mut token = ClaimToken::new(set.digest());
    Engine::new(&p, T0, &mut token).unwrap();
    assert!(matches!(
        Engine::new(&p, T0, &mut token),
        Err(EngineError::NoKeyClaim)
    ));
    struct Refuse;
    impl KeyLedger for Refuse {
        fn claim(&mut self, _: &KeyUses) -> Result<(), EngineError> {
            panic!("no manual key, no claim")
        }
    }
    let no_tunnels =
        Policy::new("plain", "1").with_local(A4.outer.parse::<std::net::IpAddr>().unwrap());
    Engine::new(&no_tunnels, T0, &mut Refuse).unwrap();
}

/// Outer fragments are never reassembled: a fragmented ESP packet (first, middle or
/// last fragment; IPv4 and IPv6) and a fragmented cleartext datagram that a BYPASS
/// entry would admit are dropped as `fragment` and counted, before any SA or SPD
/// lookup.
#[test]
fn outer_fragments_are_dropped_unreassembled() {
    let (_, mut b) = pair(Aead::Aes128Gcm16);
    let esp = [0u8, 0, 0xa0, 0xb0, 0, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9];
    for (offset, more) in [(0, true), (3, true), (3, false)] {
        let mut f = frag4("198.51.100.1", "198.51.100.2", 50, offset, more, &esp);
        assert_eq!(b.inbound(&mut f, T0), Verdict::Drop(DropReason::Fragment));
    }
    let mut f = frag4(
        "9.9.9.9",
        "10.1.0.5",
        17,
        0,
        true,
        &[0, 53, 0x0d, 5, 0, 16, 0, 0],
    );
    assert_eq!(b.inbound(&mut f, T0), Verdict::Drop(DropReason::Fragment));
    assert_eq!(b.inbound.drops().get(DropReason::Fragment), 4);

    let mut b6 = Engine::new(
        &lab_policy(Aead::Aes128Gcm16, B6, A6, B6, A6, false),
        T0,
        &mut MemoryLedger::default(),
    )
    .unwrap();
    for (exts, frag) in [(&[][..], (0, true)), (&[0u8, 60][..], (2, false))] {
        let mut f = frag6(A6.outer, B6.outer, exts, Some(frag), 50, &esp);
        assert_eq!(b6.inbound(&mut f, T0), Verdict::Drop(DropReason::Fragment));
    }
    assert_eq!(b6.inbound.drops().get(DropReason::Fragment), 2);
}

/// A tunnel without keys (a non-lab profile's tunnel, to be keyed by IKE): what the
/// SPD would PROTECT into it is dropped as `no_sa` — never sent in clear — and ESP
/// for it finds no SA.
#[test]
fn a_tunnel_without_keys_drops_what_it_would_protect() {
    let mut p = lab_policy(Aead::Aes128Gcm16, A4, B4, A4, B4, true);
    for t in &mut p.tunnels {
        t.manual = None;
    }
    struct NoClaim;
    impl KeyLedger for NoClaim {
        fn claim(&mut self, _: &KeyUses) -> Result<(), EngineError> {
            panic!("a policy without manual keys claims nothing")
        }
    }
    let mut a = Engine::new(&p, T0, &mut NoClaim).unwrap();
    let mut out = [0u8; 2048];
    for i in 0..3u8 {
        assert_eq!(
            a.outbound(&lan_a_to_b(&[i; 100]), &mut out, T0),
            Verdict::Drop(DropReason::NoSa)
        );
    }
    assert_eq!(a.outbound.drops().get(DropReason::NoSa), 3);
    let (mut peer, _) = pair(Aead::Aes128Gcm16);
    let mut q = lab_policy(Aead::Aes128Gcm16, B4, A4, B4, A4, false);
    q.tunnels[0].manual = None;
    let mut b_keyless = Engine::new(&q, T0, &mut NoClaim).unwrap();
    let mut esp = send(&mut peer, &lan_a_to_b(b"x"));
    assert_eq!(
        b_keyless.inbound(&mut esp, T0),
        Verdict::Drop(DropReason::UnknownSpi)
    );
}

/// The router role: red's cleartext goes to black only where a route sends
/// it there (static, or learned from black inside the allowed ranges),
/// black's goes to red only where a route sends it to red; the rest is
/// dropped as `no_route`. A learned route reaching red's network is
/// refused and changes nothing; a withdrawal takes effect at once.
#[test]
fn the_router_role_forwards_cleartext_only_along_admitted_routes() {
    use viaduct::router::{Learned, Refusal};
    let pre = |s: &str| {
        let (a, l) = s.split_once('/').unwrap();
        Prefix::new(a.parse().unwrap(), l.parse().unwrap())
    };
    let p = Policy::new("router", "1")
        .with_spd("all", Selector::any_v4(), SpdAction::Bypass)
        .with_route(pre("10.1.0.0/24"), RouteVia::Red)
        .with_route(pre("192.0.2.0/24"), RouteVia::Black)
        .with_learn(LearnPolicy {
            allow: vec![PrefixRange {
                prefix: pre("1.0.0.0/8"),
                min_len: 8,
                max_len: 24,
            }],
            max_routes: 100,
            martians: false,
        });
    let mut e = Engine::new(&p, T0, &mut MemoryLedger::default()).unwrap();
    let routes = e.routes().expect("a routing policy");
    let mut out = vec![0u8; 2048];
    let mut send_out = |e: &mut Engine, dst: &str| {
        let b = udp4(LAN, dst, 5000, 53, b"q");
        e.outbound(&b, &mut out, T0)
    };
    assert!(matches!(send_out(&mut e, "192.0.2.5"), Verdict::Send(_)));
    assert_eq!(
        send_out(&mut e, "1.2.3.4"),
        Verdict::Drop(DropReason::NoRoute)
    );
    // Red to red: not through black.
    assert_eq!(
        send_out(&mut e, "10.1.0.9"),
        Verdict::Drop(DropReason::NoRoute)
    );
    // Black learns 1.2.3.0/24: red may reach it; black withdraws it: not.
    assert_eq!(
        routes.write().unwrap().add(pre("1.2.3.0/24")),
        Ok(Learned::Added)
    );
    assert!(matches!(send_out(&mut e, "1.2.3.4"), Verdict::Send(_)));
    assert_eq!(
        send_out(&mut e, "1.2.4.4"),
        Verdict::Drop(DropReason::NoRoute)
    );
    assert_eq!(
        routes.write().unwrap().remove(pre("1.2.3.0/24")),
        Learned::Withdrawn
    );
    assert_eq!(
        send_out(&mut e, "1.2.3.4"),
        Verdict::Drop(DropReason::NoRoute)
    );
    // A forged route into red's LAN, one outside the ranges: refused, and
    // nothing changes.
    assert_eq!(
        routes.write().unwrap().add(pre("10.1.0.0/25")),
        Err(Refusal::NotAllowed)
    );
    assert_eq!(
        routes.write().unwrap().add(pre("8.8.8.0/24")),
        Err(Refusal::NotAllowed)
    );
    assert_eq!(
        send_out(&mut e, "10.1.0.9"),
        Verdict::Drop(DropReason::NoRoute)
    );
    assert_eq!(
        send_out(&mut e, "8.8.8.8"),
        Verdict::Drop(DropReason::NoRoute)
    );
    // Black to red: only to what is routed to red.
    let mut b = udp4("192.0.2.5", "10.1.0.7", 53, 5000, b"a");
    assert!(matches!(e.inbound(&mut b, T0), Verdict::Send(_)));
    let mut b = udp4("192.0.2.5", "10.5.0.1", 53, 5000, b"a");
    assert_eq!(e.inbound(&mut b, T0), Verdict::Drop(DropReason::NoRoute));
    let mut b = udp4("192.0.2.5", "1.2.3.4", 53, 5000, b"a");
    assert_eq!(e.inbound(&mut b, T0), Verdict::Drop(DropReason::NoRoute));
    assert_eq!(e.outbound.drops().get(DropReason::NoRoute), 6);
    assert_eq!(e.inbound.drops().get(DropReason::NoRoute), 2);
    let report = e.outbound.report();
    assert!(
        report.contains("routes static=2 learned=0 max=100 added=1 withdrawn=1 ")
            && report.contains(" refused_not_allowed=2 "),
        "{report}"
    );
    assert!(report.contains("out drop no_route=6"), "{report}");
}
