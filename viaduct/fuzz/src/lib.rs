//! Shared set-up of the Viaduct fuzz targets and of the seed generator
//! (`examples/gen_seeds.rs`): a pair of mirrored policies ("left" seals,
//! "right" opens) with known manual keys, a reader for the targets' input
//! formats, and an ESP sealer written here from RFC 4303/4106/7634 with the
//! AEAD the Viaduct itself uses (aws-lc-rs), so a target can encrypt
//! plaintext the Viaduct's outbound path would never produce (any trailer,
//! padding, next header, sequence number).
//!
//! Nothing here is part of the trusted crate; only its public API is used.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use policy_blob::*;
use viaduct::wire::ip::OuterRepr;
use viaduct::wire::udp;
use viaduct::{Engine, Timestamp};

/// The AEADs of `policy_blob::Aead`, indexed by the low bits of a
/// parameter byte.
pub const AEADS: [Aead; 3] = [Aead::Aes128Gcm16, Aead::Aes256Gcm16, Aead::ChaCha20Poly1305];

/// Tunnel parameters chosen by the fuzzer (or by the seed generator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Transform of tunnel 1.
    pub aead: Aead,
    /// Outer IPv6 (else IPv4).
    pub v6: bool,
    /// ESP in UDP/4500 (RFC 3948).
    pub udp: bool,
    /// Extended sequence numbers.
    pub esn: bool,
    /// TFC padding sizes (increasing, 20..=65000; empty: none).
    pub tfc: Vec<u16>,
    /// Outer DSCP (0..=63).
    pub dscp: u8,
    /// Small soft/hard lifetimes (packets, bytes, seconds).
    pub lifetimes: bool,
    /// Smallest replay window (32) instead of 1024.
    pub small_window: bool,
}

impl Params {
    /// Length of the encoded parameters at the start of an input.
    pub const LEN: usize = 4;

    /// Decodes `[flags][tfc hi][tfc lo][dscp]`:
    /// flags bits 0-1 AEAD (3 = ChaCha20-Poly1305 again), 2 IPv6 outer,
    /// 3 UDP encapsulation, 4 ESN, 5 TFC padding (sizes `20 + tfc % 1480`
    /// and 1500), 6 small lifetimes, 7 replay window 32.
    pub fn decode(b: [u8; 4]) -> Params {
        let f = b[0];
        let tfc = if f & 0x20 != 0 {
            let base = 20 + u16::from_be_bytes([b[1], b[2]]) % 1480;
            vec![base, 1500]
        } else {
            Vec::new()
        };
        Params {
            aead: AEADS[usize::from(f & 3).min(2)],
            v6: f & 0x04 != 0,
            udp: f & 0x08 != 0,
            esn: f & 0x10 != 0,
            tfc,
            dscp: b[3] & 0x3f,
            lifetimes: f & 0x40 != 0,
            small_window: f & 0x80 != 0,
        }
    }

    /// The inverse of [`Params::decode`] (for the seed generator).
    pub fn encode(&self) -> [u8; 4] {
        let a = AEADS.iter().position(|&x| x == self.aead).unwrap_or(0) as u8;
        let mut f = a;
        f |= u8::from(self.v6) << 2;
        f |= u8::from(self.udp) << 3;
        f |= u8::from(self.esn) << 4;
        f |= u8::from(!self.tfc.is_empty()) << 5;
        f |= u8::from(self.lifetimes) << 6;
        f |= u8::from(self.small_window) << 7;
        let t = self.tfc.first().map_or(0, |&n| n.saturating_sub(20));
        let t = t.to_be_bytes();
        [f, t[0], t[1], self.dscp & 0x3f]
    }
}

/// Which end of the mirrored pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Seals (its outbound SA is the right's inbound SA).
    Left,
    /// Opens.
    Right,
}

/// SPI of tunnel 1, left → right.
pub const SPI_1_LR: u32 = 0x0000_1001;
/// SPI of tunnel 1, right → left.
pub const SPI_1_RL: u32 = 0x0000_2001;
/// SPI of tunnel 2 (fixed ChaCha20-Poly1305, IPv4, no UDP), left → right.
pub const SPI_2_LR: u32 = 0x0000_1002;
/// SPI of tunnel 2, right → left.
pub const SPI_2_RL: u32 = 0x0000_2002;

/// Key material (key || salt) of one SA: a fixed byte pattern per SA.
pub fn key(aead: Aead, fill: u8) -> Vec<u8> {
    (0..aead.key_material_len())
        .map(|i| fill ^ (i as u8))
        .collect()
}

/// Key fill of tunnel 1 left → right (the one the targets seal with).
pub const KEY_1_LR: u8 = 0x11;
const KEY_1_RL: u8 = 0x22;
const KEY_2_LR: u8 = 0x33;
const KEY_2_RL: u8 = 0x44;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(seg: [u16; 8]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        seg[0], seg[1], seg[2], seg[3], seg[4], seg[5], seg[6], seg[7],
    ))
}

/// Outer addresses of tunnel 1 as seen from `side`: (local, remote).
pub fn outer_addrs(p: &Params, side: Side) -> (IpAddr, IpAddr) {
    let (l, r) = if p.v6 {
        (
            v6([0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 1]),
            v6([0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 1]),
        )
    } else {
        (v4(192, 0, 2, 1), v4(198, 51, 100, 1))
    };
    match side {
        Side::Left => (l, r),
        Side::Right => (r, l),
    }
}

fn outer2(side: Side) -> (IpAddr, IpAddr) {
    let (l, r) = (v4(192, 0, 2, 2), v4(198, 51, 100, 2));
    match side {
        Side::Left => (l, r),
        Side::Right => (r, l),
    }
}

fn pfx(addr: IpAddr, len: u8) -> Prefix {
    Prefix::new(addr, len)
}

/// Inner networks: (left v4, right v4, left v6, right v6).
fn nets() -> (Prefix, Prefix, Prefix, Prefix) {
    (
        pfx(v4(10, 1, 0, 0), 16),
        pfx(v4(10, 2, 0, 0), 16),
        pfx(v6([0xfd00, 1, 0, 0, 0, 0, 0, 0]), 64),
        pfx(v6([0xfd00, 2, 0, 0, 0, 0, 0, 0]), 64),
    )
}

fn sel(src: Prefix, dst: Prefix, proto: Protocol, sport: PortRange, dport: PortRange) -> Selector {
    Selector {
        src,
        dst,
        protocol: proto,
        src_ports: sport,
        dst_ports: dport,
    }
}

/// The policy of one side. Both sides describe the same traffic: the
/// right's SPD, selectors and SAs are the left's mirrored (sources and
/// destinations, ports, SPIs and keys swapped), so whatever the left's
/// outbound path protects, the right's inbound SPD check accepts.
///
/// Tunnel 1 carries the fuzzer's parameters; tunnel 2 (fixed, ChaCha20,
/// IPv4 outer) encloses a part of tunnel 1's networks (10.2.9.0/24 and
/// fd00:2::900/120 on the right) so the inbound SPD check sees nested
/// selectors. The SPD also has a BYPASS (UDP to port 53 of 10.2.0.53) and a
/// DISCARD (TCP port 23) carved out of tunnel 1; the filters drop inbound
/// TCP to port 22 with SYN and without ACK, and UDP to port 9 both ways.
pub fn policy(p: &Params, side: Side) -> Policy {
    let (l4, r4, l6, r6) = nets();
    let nest4 = pfx(v4(10, 2, 9, 0), 24);
    let nest6 = pfx(v6([0xfd00, 2, 0, 0, 0, 0, 0, 0x900]), 120);
    let dns = pfx(v4(10, 2, 0, 53), 32);
    let any = PortRange::ANY;
    // Selectors written from the left's point of view (src left, dst right).
    let spd: Vec<(&str, Selector, SpdAction)> = vec![
        (
            "dns-bypass",
            sel(l4, dns, Protocol::UDP, any, PortRange::single(53)),
            SpdAction::Bypass,
        ),
        (
            "telnet-discard",
            sel(l4, r4, Protocol::TCP, any, PortRange::single(23)),
            SpdAction::Discard,
        ),
        (
            "nested-v4",
            sel(l4, nest4, Protocol::ANY, any, any),
            SpdAction::Protect(TunnelId(2)),
        ),
        (
            "nested-v6",
            sel(l6, nest6, Protocol::ANY, any, any),
            SpdAction::Protect(TunnelId(2)),
        ),
        (
            "tunnel-v4",
            sel(l4, r4, Protocol::ANY, any, any),
            SpdAction::Protect(TunnelId(1)),
        ),
        (
            "tunnel-v6",
            sel(l6, r6, Protocol::ANY, any, any),
            SpdAction::Protect(TunnelId(1)),
        ),
        (
            "icmp-bypass",
            sel(
                pfx(v4(172, 16, 0, 0), 12),
                pfx(v4(172, 16, 0, 0), 12),
                Protocol::ICMP,
                any,
                any,
            ),
            SpdAction::Bypass,
        ),
    ];
    let mirror = |s: &Selector| match side {
        Side::Left => s.clone(),
        Side::Right => sel(s.dst, s.src, s.protocol, s.dst_ports, s.src_ports),
    };
    let (ll, lr) = match side {
        Side::Left => ((l4, l6), (r4, r6)),
        Side::Right => ((r4, r6), (l4, l6)),
    };
    let (local, remote) = outer_addrs(p, side);
    let (spi_out, spi_in, k_out, k_in) = match side {
        Side::Left => (SPI_1_LR, SPI_1_RL, KEY_1_LR, KEY_1_RL),
        Side::Right => (SPI_1_RL, SPI_1_LR, KEY_1_RL, KEY_1_LR),
    };
    let mut t1 = Tunnel::new(1, "t1", local, remote, p.aead)
        .with_local_ts(TrafficSelector::prefix(ll.0))
        .with_local_ts(TrafficSelector::prefix(ll.1))
        .with_remote_ts(TrafficSelector::prefix(lr.0))
        .with_remote_ts(TrafficSelector::prefix(lr.1))
        .with_manual_keys(
            ManualSa {
                spi: Spi(spi_out),
                key: KeyMaterial::new(key(p.aead, k_out)),
            },
            ManualSa {
                spi: Spi(spi_in),
                key: KeyMaterial::new(key(p.aead, k_in)),
            },
        );
    t1.esn = p.esn;
    t1.udp_encap = p.udp;
    t1.outer_dscp = p.dscp;
    t1.tfc_sizes = p.tfc.clone();
    t1.replay_window = if p.small_window { 32 } else { 1024 };
    if p.lifetimes {
        t1.lifetimes = Lifetimes {
            soft: LifetimeLimits {
                bytes: Some(2_000),
                packets: Some(3),
                seconds: Some(20),
            },
            hard: LifetimeLimits {
                bytes: Some(6_000),
                packets: Some(6),
                seconds: Some(40),
            },
        };
    }
    let (l2, r2) = outer2(side);
    let (spi2_out, spi2_in, k2_out, k2_in) = match side {
        Side::Left => (SPI_2_LR, SPI_2_RL, KEY_2_LR, KEY_2_RL),
        Side::Right => (SPI_2_RL, SPI_2_LR, KEY_2_RL, KEY_2_LR),
    };
    let (n2_local, n2_remote) = match side {
        Side::Left => ((l4, l6), (nest4, nest6)),
        Side::Right => ((nest4, nest6), (l4, l6)),
    };
    let c = Aead::ChaCha20Poly1305;
    let t2 = Tunnel::new(2, "t2", l2, r2, c)
        .with_local_ts(TrafficSelector::prefix(n2_local.0))
        .with_local_ts(TrafficSelector::prefix(n2_local.1))
        .with_remote_ts(TrafficSelector::prefix(n2_remote.0))
        .with_remote_ts(TrafficSelector::prefix(n2_remote.1))
        .with_manual_keys(
            ManualSa {
                spi: Spi(spi2_out),
                key: KeyMaterial::new(key(c, k2_out)),
            },
            ManualSa {
                spi: Spi(spi2_in),
                key: KeyMaterial::new(key(c, k2_in)),
            },
        );
    let mut pol = Policy::new("fuzz", "1")
        .with_local(local)
        .with_local(l2)
        .with_tunnel(t1)
        .with_tunnel(t2);
    for (name, s, a) in spd {
        pol = pol.with_spd(name, mirror(&s), a);
    }
    // Filters (the same on both sides; each engine applies its own
    // direction's): inbound SSH without ACK dropped, discard port 9 dropped.
    let ssh = sel(
        Prefix::any_v4(),
        Prefix::any_v4(),
        Protocol::TCP,
        any,
        PortRange::single(22),
    );
    let nine = sel(
        Prefix::any_v4(),
        Prefix::any_v4(),
        Protocol::UDP,
        any,
        PortRange::single(9),
    );
    let nine6 = sel(
        Prefix::any_v6(),
        Prefix::any_v6(),
        Protocol::UDP,
        any,
        PortRange::single(9),
    );
    pol.with_tcp_filter(
        "ssh-syn-in",
        Direction::Inbound,
        ssh,
        TcpFlags {
            mask: TcpFlags::SYN | TcpFlags::ACK,
            value: TcpFlags::SYN,
        },
        FilterAction::Drop,
    )
    .with_filter(
        "nine-in",
        Direction::Inbound,
        nine.clone(),
        FilterAction::Drop,
    )
    .with_filter("nine-out", Direction::Outbound, nine, FilterAction::Drop)
    .with_filter("nine6-in", Direction::Inbound, nine6, FilterAction::Drop)
}

/// Builds an engine from a valid policy, with a fresh key-use ledger (each
/// engine's keys are claimed once, in its own ledger). The one place that
/// knows `Engine::new`'s signature.
pub fn engine(policy: &Policy, now: Timestamp) -> Engine {
    Engine::new(policy, now, &mut viaduct::MemoryLedger::default()).expect("valid policy")
}

/// A cursor over the fuzzer's bytes.
#[derive(Debug)]
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    /// Next byte (0 when exhausted).
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    /// Next `n` bytes, or fewer if the input ends.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    /// A record: 2-byte big-endian length, then that many bytes (or the rest).
    pub fn record(&mut self) -> &'a [u8] {
        let n = u16::from_be_bytes([self.u8(), self.u8()]);
        self.bytes(usize::from(n))
    }
    /// Big-endian u64 from the next 8 bytes (zero-filled).
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let s = self.bytes(8);
        b[..s.len()].copy_from_slice(s);
        u64::from_be_bytes(b)
    }
    /// Whether the input is exhausted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Appends a record (2-byte length, bytes) to `out` (seed generator).
pub fn push_record(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

fn algorithm(a: Aead) -> &'static aead::Algorithm {
    match a {
        Aead::Aes128Gcm16 => &aead::AES_128_GCM,
        Aead::Aes256Gcm16 => &aead::AES_256_GCM,
        Aead::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
    }
}

/// Seals an ESP packet (SPI || seq-low || IV || E(plaintext) || ICV) as
/// RFC 4303 §2 with RFC 4106 / RFC 7634: nonce = salt || IV, AAD = SPI ||
/// seq-low, or SPI || seq-high || seq-low with ESN. `plaintext` is the whole
/// ESP payload including padding, pad length and next header, as the
/// caller wants it (well-formed or not).
pub fn seal_esp(
    aead_alg: Aead,
    material: &[u8],
    spi: u32,
    seq: u64,
    esn: bool,
    iv: [u8; 8],
    plaintext: &[u8],
) -> Vec<u8> {
    let (k, salt) = material.split_at(aead_alg.key_len());
    let key = LessSafeKey::new(UnboundKey::new(algorithm(aead_alg), k).expect("key length"));
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(salt);
    nonce[4..].copy_from_slice(&iv);
    let lo = (seq as u32).to_be_bytes();
    let hi = ((seq >> 32) as u32).to_be_bytes();
    let mut aad = Vec::with_capacity(12);
    aad.extend_from_slice(&spi.to_be_bytes());
    if esn {
        aad.extend_from_slice(&hi);
    }
    aad.extend_from_slice(&lo);
    let mut out = Vec::with_capacity(16 + plaintext.len() + 16);
    out.extend_from_slice(&spi.to_be_bytes());
    out.extend_from_slice(&lo);
    out.extend_from_slice(&iv);
    let mut body = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(&aad[..]),
        &mut body,
    )
    .expect("seal");
    out.extend_from_slice(&body);
    out
}

/// Wraps an ESP packet in an outer IPv4/IPv6 header from `src` to `dst`
/// (and UDP/4500 if `in_udp`), with TOS / traffic class `tos`.
pub fn wrap_outer(src: IpAddr, dst: IpAddr, tos: u8, in_udp: bool, esp: &[u8]) -> Option<Vec<u8>> {
    let outer = OuterRepr {
        src,
        dst,
        tos,
        ident: 1,
        protocol: if in_udp { udp::PROTOCOL } else { 50 },
    };
    let hl = outer.header_len();
    let ul = if in_udp { udp::HEADER_LEN } else { 0 };
    let mut pkt = vec![0u8; hl + ul + esp.len()];
    outer.emit(&mut pkt[..hl], ul + esp.len()).ok()?;
    pkt[hl + ul..].copy_from_slice(esp);
    if in_udp {
        udp::emit(&mut pkt[hl..hl + ul], esp.len()).ok()?;
        if let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) {
            udp::fill_checksum(&mut pkt[hl..], &s.octets(), &d.octets()).ok()?;
        }
    }
    Some(pkt)
}

/// Sets the ECN field of an outer header in place (IPv4: the header
/// checksum is recomputed).
pub fn set_outer_ecn(pkt: &mut [u8], ecn: u8) {
    let ecn = ecn & 3;
    match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= 20 => {
            pkt[1] = (pkt[1] & !3) | ecn;
            let ihl = (usize::from(pkt[0] & 0x0f) * 4).clamp(20, pkt.len());
            pkt[10] = 0;
            pkt[11] = 0;
            let c = viaduct::wire::internet_checksum(&pkt[..ihl]);
            pkt[10..12].copy_from_slice(&c.to_be_bytes());
        }
        Some(6) if pkt.len() >= 40 => {
            pkt[1] = (pkt[1] & 0xcf) | (ecn << 4);
        }
        _ => {}
    }
}

/// Inner test packets (whole datagrams with correct lengths; checksums as
/// a real stack would write them are not needed by the engine).
pub mod inner {
    /// IPv4 header + `payload` for protocol `proto`, `tos`, addresses.
    pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, tos: u8, payload: &[u8]) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let mut p = vec![0x45, tos];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, proto, 0, 0]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        let c = viaduct::wire::internet_checksum(&p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }
    /// IPv6 header + `payload` (next header `nh`).
    pub fn ipv6(src: [u8; 16], dst: [u8; 16], nh: u8, tc: u8, payload: &[u8]) -> Vec<u8> {
        let vtf = (6u32 << 28) | (u32::from(tc) << 20) | 0x12345;
        let mut p = vtf.to_be_bytes().to_vec();
        p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[nh, 64]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }
    /// A TCP header (20 bytes) with ports, flags and `data`.
    pub fn tcp(sport: u16, dport: u16, flags: u8, data: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend_from_slice(data);
        t
    }
    /// A UDP header with ports and `data`.
    pub fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(data);
        u
    }
    /// An ICMP echo request.
    pub fn icmp_echo(data: &[u8]) -> Vec<u8> {
        let mut i = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
        i.extend_from_slice(data);
        i
    }
    /// Left v4 host.
    pub const L4: [u8; 4] = [10, 1, 0, 5];
    /// Right v4 host.
    pub const R4: [u8; 4] = [10, 2, 0, 7];
    /// Right v4 host inside tunnel 2's selectors.
    pub const R4_NESTED: [u8; 4] = [10, 2, 9, 9];
    /// Left v6 host.
    pub const L6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
    /// Right v6 host.
    pub const R6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];

    /// A small set of inner packets from left to right that the left's SPD
    /// protects with tunnel 1 (TCP, UDP, ICMP over IPv4 and IPv6, ECN
    /// codepoints), plus a few it treats otherwise (nested tunnel 2, DNS
    /// bypass, telnet discard, dropped by the filter).
    pub fn samples() -> Vec<(&'static str, Vec<u8>)> {
        let data: Vec<u8> = (0u8..48).collect();
        vec![
            (
                "v4-tcp-syn",
                ipv4(L4, R4, 6, 0, &tcp(40000, 443, 0x02, &[])),
            ),
            (
                "v4-tcp-ack-ect0",
                ipv4(L4, R4, 6, 0x02, &tcp(40000, 443, 0x10, &data)),
            ),
            (
                "v4-udp-ect1",
                ipv4(L4, R4, 17, 0x01, &udp(5000, 5001, &data)),
            ),
            (
                "v4-udp-ce",
                ipv4(L4, R4, 17, 0x03, &udp(5000, 5001, &data[..10])),
            ),
            ("v4-icmp", ipv4(L4, R4, 1, 0xb8, &icmp_echo(&data))),
            (
                "v6-tcp",
                ipv6(L6, R6, 6, 0x02, &tcp(40000, 22, 0x12, &data)),
            ),
            ("v6-udp", ipv6(L6, R6, 17, 0, &udp(7, 9999, &data))),
            (
                "v6-icmp",
                ipv6(L6, R6, 58, 0x01, &[128, 0, 0, 0, 0, 1, 0, 1]),
            ),
            (
                "v4-nested",
                ipv4(L4, R4_NESTED, 17, 0, &udp(1, 2, &data[..4])),
            ),
            (
                "v4-dns-bypass",
                ipv4(L4, [10, 2, 0, 53], 17, 0, &udp(3333, 53, &data[..12])),
            ),
            (
                "v4-telnet-discard",
                ipv4(L4, R4, 6, 0, &tcp(1024, 23, 0x02, &[])),
            ),
            ("v4-udp9-filtered", ipv4(L4, R4, 17, 0, &udp(9, 9, &[]))),
        ]
    }
}
