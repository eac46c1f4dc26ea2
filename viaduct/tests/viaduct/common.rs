//! Shared helpers: hex, packet builders, mirrored lab policies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use policy_blob::*;

pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse::<Ipv4Addr>().unwrap())
}

#[allow(dead_code)]
pub fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

fn checksum(data: &[u8]) -> u16 {
    viaduct::wire::internet_checksum(data)
}

/// An IPv4 UDP datagram.
pub fn udp4(src: &str, dst: &str, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.parse::<Ipv4Addr>().unwrap().octets());
    p[16..20].copy_from_slice(&dst.parse::<Ipv4Addr>().unwrap().octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// An IPv4 TCP segment (20-byte header, no options) with `flags` and
/// `payload`; checksums are not computed (the engine does not check them).
#[allow(dead_code)]
pub fn tcp4(src: &str, dst: &str, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 20 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.parse::<Ipv4Addr>().unwrap().octets());
    p[16..20].copy_from_slice(&dst.parse::<Ipv4Addr>().unwrap().octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = flags;
    p[40..].copy_from_slice(payload);
    p
}

/// TCP flag bits.
#[allow(dead_code)]
pub mod tcp {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// A 20-byte TCP header (no options, checksum zero).
#[allow(dead_code)]
pub fn tcp_hdr(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags;
    h
}

/// An IPv4 fragment of a `proto` datagram: `data` at `offset` (8-byte
/// units), More Fragments set if `more`.
#[allow(dead_code)]
pub fn frag4(src: &str, dst: &str, proto: u8, offset: u16, more: bool, data: &[u8]) -> Vec<u8> {
    let total = 20 + data.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
    let ff = offset | if more { 0x2000 } else { 0 };
    p[6..8].copy_from_slice(&ff.to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src.parse::<Ipv4Addr>().unwrap().octets());
    p[16..20].copy_from_slice(&dst.parse::<Ipv4Addr>().unwrap().octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..].copy_from_slice(data);
    p
}

/// An IPv6 datagram: extension headers `exts` (types 0, 43 or 60, 8 bytes
/// each) in order, then a fragment header if `frag` is `Some((offset in
/// 8-byte units, more))`, then `data`; the last header's next header is
/// `proto`.
#[allow(dead_code)]
pub fn frag6(
    src: &str,
    dst: &str,
    exts: &[u8],
    frag: Option<(u16, bool)>,
    proto: u8,
    data: &[u8],
) -> Vec<u8> {
    let mut types: Vec<u8> = exts.to_vec();
    if frag.is_some() {
        types.push(44);
    }
    let mut chain = Vec::new();
    for (i, t) in types.iter().enumerate() {
        let next = types.get(i + 1).copied().unwrap_or(proto);
        let mut h = [0u8; 8];
        h[0] = next;
        if *t == 44 {
            let (off, more) = frag.unwrap();
            let v = (off << 3) | u16::from(more);
            h[2..4].copy_from_slice(&v.to_be_bytes());
            h[4..8].copy_from_slice(&0x4242_4242u32.to_be_bytes());
        } else if *t == 43 {
            h[2] = 4; // routing type 4 (segment routing), segments left 0
        } else {
            h[2] = 1; // PadN option filling the header
            h[3] = 4;
        }
        chain.extend_from_slice(&h);
    }
    let plen = chain.len() + data.len();
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
    p[6] = types.first().copied().unwrap_or(proto);
    p[7] = 64;
    p[8..24].copy_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
    p[24..40].copy_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
    p.extend_from_slice(&chain);
    p.extend_from_slice(data);
    p
}

/// An IPv6 UDP datagram.
pub fn udp6(src: &str, dst: &str, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let plen = 8 + payload.len();
    let mut p = vec![0u8; 40 + plen];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
    p[24..40].copy_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
    p[40..42].copy_from_slice(&sport.to_be_bytes());
    p[42..44].copy_from_slice(&dport.to_be_bytes());
    p[44..46].copy_from_slice(&(plen as u16).to_be_bytes());
    p[48..].copy_from_slice(payload);
    p
}

pub fn key(aead: Aead, seed: u8) -> KeyMaterial {
    KeyMaterial::new(
        (0..aead.key_material_len())
            .map(|i| seed.wrapping_add(i as u8))
            .collect(),
    )
}

pub const SPI_A_TO_B: u32 = 0x0000_a0b0;
pub const SPI_B_TO_A: u32 = 0x0000_b0a0;

/// Addressing of one side of a lab pair.
#[derive(Clone, Copy)]
pub struct Side {
    pub outer: &'static str,
    pub lan: &'static str,
    pub lan_len: u8,
}

pub const A4: Side = Side {
    outer: "198.51.100.1",
    lan: "10.1.0.0",
    lan_len: 24,
};
pub const B4: Side = Side {
    outer: "198.51.100.2",
    lan: "10.2.0.0",
    lan_len: 24,
};
pub const A6: Side = Side {
    outer: "2001:db8:100::1",
    lan: "fd00:1::",
    lan_len: 64,
};
pub const B6: Side = Side {
    outer: "2001:db8:100::2",
    lan: "fd00:2::",
    lan_len: 64,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The policy of gateway `me` talking to `peer` (mirrored manual SAs).
/// `inner_me`/`inner_peer` give the LAN prefixes (may be another family
/// than the outer addresses).
pub fn lab_policy(
    aead: Aead,
    me: Side,
    peer: Side,
    inner_me: Side,
    inner_peer: Side,
    a_side: bool,
) -> Policy {
    let (out_spi, in_spi, out_seed, in_seed) = if a_side {
        (SPI_A_TO_B, SPI_B_TO_A, 1, 101)
    } else {
        (SPI_B_TO_A, SPI_A_TO_B, 101, 1)
    };
    let mine = Prefix::new(ip(inner_me.lan), inner_me.lan_len);
    let theirs = Prefix::new(ip(inner_peer.lan), inner_peer.lan_len);
    let t = Tunnel::new(1, "lab", ip(me.outer), ip(peer.outer), aead)
        .with_local_ts(TrafficSelector::prefix(mine))
        .with_remote_ts(TrafficSelector::prefix(theirs))
        .with_manual_keys(
            ManualSa {
                spi: Spi(out_spi),
                key: key(aead, out_seed),
            },
            ManualSa {
                spi: Spi(in_spi),
                key: key(aead, in_seed),
            },
        );
    let any = if mine.addr.is_ipv4() {
        Selector::any_v4()
    } else {
        Selector::any_v6()
    };
    Policy::new("lab", "1")
        .with_local(ip(me.outer))
        .with_tunnel(t)
        .with_spd(
            "to-peer",
            Selector::between(mine, theirs),
            SpdAction::Protect(TunnelId(1)),
        )
        .with_spd("rest", any, SpdAction::Discard)
}

/// The policy of lab gateway A (`a_side`) or B: outer 203.0.113.1/.2, LANs
/// 10.1.0.0/24 and 10.2.0.0/24, mirrored manual SAs.
pub fn gateway_policy(aead: Aead, a_side: bool) -> Policy {
    const GA: Side = Side {
        outer: "203.0.113.1",
        lan: "10.1.0.0",
        lan_len: 24,
    };
    const GB: Side = Side {
        outer: "203.0.113.2",
        lan: "10.2.0.0",
        lan_len: 24,
    };
    if a_side {
        lab_policy(aead, GA, GB, GA, GB, true)
    } else {
        lab_policy(aead, GB, GA, GB, GA, false)
    }
}

pub const ALL_AEADS: [Aead; 3] = [Aead::Aes128Gcm16, Aead::Aes256Gcm16, Aead::ChaCha20Poly1305];
