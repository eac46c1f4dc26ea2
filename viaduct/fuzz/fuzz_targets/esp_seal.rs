//! The inbound path behind the AEAD check. Two engines with mirrored
//! policies and known keys (`viaduct_fuzz::policy`): the left seals, the
//! right opens. The input is `[params: 4 bytes]` (AEAD, outer IPv4/IPv6, UDP
//! encapsulation, ESN, TFC sizes, outer DSCP, small lifetimes, small replay
//! window; see `Params::decode`) followed by up to 64 operations, each
//! `[op][len: 2 bytes BE][data]`. `op & 3`:
//!
//! - 0 seal: `data` is an inner packet; the left engine's outbound path
//!   (filter, SPD, ESP with TFC padding) seals it and the right engine's
//!   inbound path opens it. While no crafted packet, sequence jump or
//!   lifetime can interfere, and the outer ECN is Not-ECT: what the left
//!   sends, the right delivers byte for byte, or drops by its inbound
//!   filter (a bypassed packet: or as an outer fragment).
//! - 1 craft: `data` is `[flags][b1][b2][seq: 8 bytes][payload]`; the target
//!   builds the ESP plaintext itself (`flags & 3`: 0 the payload is the
//!   whole plaintext, trailer included; 1 payload || pad length b1 || next
//!   header b2; 2 payload || canonical padding || b2; 3 as the Viaduct
//!   would (TFC zeros, canonical padding, next header from the version)
//!   then byte `len - 1 - b1 % len` XORed with b2), seals it with the
//!   left's key (tunnel 2's with flag 0x10) per RFC 4303/4106/7634, wraps
//!   it in the outer header (UDP/4500 flipped with 0x20) and feeds it to
//!   the right: trailer and padding checks, next header, TFC stripping,
//!   inner-header, selector and SPD checks, filter and RFC 6040
//!   decapsulation on fuzzer-chosen plaintext. Flag 0x04 takes the next
//!   header from the payload's IP version, 0x08 the next sequence number
//!   (else `seq`), 0x40 computes the AAD with the wrong ESN setting.
//! - 2 raw: `data` goes to the right's inbound path as an outer datagram.
//! - 3 control on `data[0]`: 0 replays the last packet, 1 sets the left's
//!   last sequence number of tunnel 1 (`data[1..9]`), 2 advances the clock
//!   by `data[1]` seconds, 3 polls lifetime events and renders the reports.
//!
//! For ops 0 and 1, `(op >> 2) & 3` is the outer ECN field written on the
//! sealed packet; `op >> 4` seconds pass before each operation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy_blob::{Aead, TunnelId};
use viaduct::sa::{pad_len, tfc_len};
use viaduct::{DropReason, SeqNo, Timestamp, Verdict};
use viaduct_fuzz::*;

fn next_header_of(payload: &[u8]) -> Option<u8> {
    match payload.first().map(|b| b >> 4) {
        Some(4) => Some(4),
        Some(6) => Some(41),
        _ => None,
    }
}

fn canonical_pad(pt: &mut Vec<u8>) {
    let pad = pad_len(pt.len());
    pt.extend((1..=pad).map(|i| i as u8));
    pt.push(pad as u8);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let head = input.bytes(Params::LEN);
    let mut h = [0u8; Params::LEN];
    h[..head.len()].copy_from_slice(head);
    let p = Params::decode(h);
    let mut now = Timestamp(0);
    let mut left = engine(&policy(&p, Side::Left), now);
    let mut right = engine(&policy(&p, Side::Right), now);
    let (l_local, l_remote) = outer_addrs(&p, Side::Left);
    // The left's last sequence number on tunnel 1, as far as we know.
    let mut seq1: u64 = 0;
    // Nothing has yet happened that would let a well-formed packet be dropped.
    let mut clean = !p.lifetimes;
    let mut last: Vec<u8> = Vec::new();
    let mut out = vec![0u8; 65_535 + 2_000];
    // Where the ESP header starts in what the left sends on tunnel 1.
    let esp_at = if p.v6 { 40 } else { 20 } + if p.udp { 8 } else { 0 };

    for _ in 0..64 {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        let rec = input.record();
        now = Timestamp(now.0 + u64::from(op >> 4));
        let ecn = (op >> 2) & 3;
        match op & 3 {
            0 => {
                let inner = rec;
                let Verdict::Send(n) = left.outbound(inner, &mut out, now) else {
                    continue;
                };
                let mut pkt = out[..n].to_vec();
                let bypassed = pkt == inner;
                if !bypassed {
                    if pkt.get(esp_at..esp_at + 4) == Some(&SPI_1_LR.to_be_bytes()[..]) {
                        seq1 += 1;
                    }
                }
                if ecn != 0 {
                    set_outer_ecn(&mut pkt, ecn);
                }
                last = pkt.clone();
                let v = right.inbound(&mut pkt, now);
                if clean && ecn == 0 {
                    match v {
                        Verdict::Send(len) => {
                            assert_eq!(&pkt[..len], inner, "the right delivered another packet")
                        }
                        Verdict::Drop(DropReason::Filter | DropReason::UnclassifiedFragment) => {}
                        Verdict::Drop(DropReason::Fragment) if bypassed => {}
                        Verdict::Drop(r) => panic!(
                            "the left sent {} bytes (bypassed: {bypassed}), the right dropped them: {r}",
                            inner.len()
                        ),
                        Verdict::Ike(i) => panic!("the harness's policies have no IKE peer: {i:?}"),
                    }
                }
            }
            1 => {
                clean = false;
                let mut r = Input(rec);
                let flags = r.u8();
                let b1 = r.u8();
                let b2 = r.u8();
                let explicit = r.u64();
                let payload = r.0;
                let mut pt = payload.to_vec();
                let nh = if flags & 0x04 != 0 {
                    next_header_of(payload).unwrap_or(b2)
                } else {
                    b2
                };
                match flags & 3 {
                    0 => {}
                    1 => pt.extend_from_slice(&[b1, nh]),
                    2 => {
                        canonical_pad(&mut pt);
                        pt.push(nh);
                    }
                    _ => {
                        pt.resize(tfc_len(&p.tfc, pt.len()), 0);
                        canonical_pad(&mut pt);
                        pt.push(next_header_of(payload).unwrap_or(b2));
                        let len = pt.len();
                        pt[len - 1 - usize::from(b1) % len] ^= b2;
                    }
                }
                let t2 = flags & 0x10 != 0;
                let (aead, k, spi, esn, src, dst, udp) = if t2 {
                    let (s, d) = (
                        "192.0.2.2".parse().expect("address"),
                        "198.51.100.2".parse().expect("address"),
                    );
                    (
                        Aead::ChaCha20Poly1305,
                        key(Aead::ChaCha20Poly1305, 0x33),
                        SPI_2_LR,
                        true,
                        s,
                        d,
                        false,
                    )
                } else {
                    (
                        p.aead,
                        key(p.aead, KEY_1_LR),
                        SPI_1_LR,
                        p.esn,
                        l_local,
                        l_remote,
                        p.udp,
                    )
                };
                let seq = if flags & 0x08 != 0 && !t2 {
                    seq1 + 1
                } else {
                    explicit
                };
                if !t2 && seq > seq1 {
                    // Keep the left's own packets after this one.
                    seq1 = seq;
                    if let Some(sa) = left.outbound.sa_mut(TunnelId(1)) {
                        sa.set_last_seq(SeqNo(seq));
                    }
                }
                let aad_esn = esn ^ (flags & 0x40 != 0);
                let esp = seal_esp(aead, &k, spi, seq, aad_esn, seq.to_be_bytes(), &pt);
                let in_udp = udp ^ (flags & 0x20 != 0);
                let tos = (p.dscp << 2) | ecn;
                let Some(mut pkt) = wrap_outer(src, dst, tos, in_udp, &esp) else {
                    continue;
                };
                last = pkt.clone();
                let _ = right.inbound(&mut pkt, now);
            }
            2 => {
                let mut pkt = rec.to_vec();
                let _ = right.inbound(&mut pkt, now);
            }
            _ => match rec.first().copied().unwrap_or(0) & 3 {
                0 => {
                    let mut pkt = last.clone();
                    let _ = right.inbound(&mut pkt, now);
                }
                1 => {
                    clean = false;
                    let s = Input(rec.get(1..).unwrap_or(&[])).u64();
                    seq1 = s;
                    if let Some(sa) = left.outbound.sa_mut(TunnelId(1)) {
                        sa.set_last_seq(SeqNo(s));
                    }
                }
                2 => now = Timestamp(now.0 + u64::from(rec.get(1).copied().unwrap_or(0))),
                _ => {
                    left.outbound.poll_events(now, |_| ());
                    right.inbound.poll_events(now, |_| ());
                    let _ = left.outbound.report();
                    let _ = right.inbound.report();
                }
            },
        }
    }
});
