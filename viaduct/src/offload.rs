//! TUN offloads, sans-IO: the `virtio_net_hdr` that prefixes every frame on a
//! TUN opened with `IFF_VNET_HDR`, segmentation of the kernel's TSO/USO
//! super-packets (read side) and userspace GRO into super-packets (write
//! side).
//!
//! Why: with `TUNSETOFFLOAD` the kernel hands the red reader whole TCP bursts
//! (up to 64 KiB, one `read`) with the checksum left to us, and accepts one
//! 64 KiB coalesced frame per `write` instead of ~45 packets. That removes
//! most per-packet syscalls and kernel work on the red side (see
//! `docs/design/viaduct-throughput.md` §1).
//!
//! - [`VnetHdr`]: the 10-byte header (`parse`/`emit`, little-endian).
//! - [`complete_csum`]: a `GSO_NONE` packet with `NEEDS_CSUM` gets its L4
//!   checksum completed in place.
//! - [`gso_split`]: a `TCPV4`/`TCPV6`/`UDP_L4` super-packet is validated as a
//!   whole, then cut into MTU-sized IP packets, one at a time, in a caller's
//!   scratch buffer; every segment has its IPv4 header checksum and its L4
//!   checksum computed from scratch.
//! - [`Coalescer`]: TCP packets of one flow that arrive in order are merged
//!   into one `NEEDS_CSUM` + `TCPV4`/`TCPV6` frame; everything else is
//!   written unchanged behind an all-zero header, in per-flow order.
//!
//! Invariants: no `unsafe`; no allocation after [`Coalescer::new`]; no panic
//! on any input (every access is bounds-checked with `get`, errors are
//! values). The coalescer never emits `NEEDS_CSUM` for a packet whose IPv4
//! header and TCP checksums it has not verified: the kernel trusts
//! `NEEDS_CSUM` frames, so merging an unverified packet would launder a
//! corrupted one into a valid-looking segment.
#![forbid(unsafe_code)]

use crate::wire::{checksum_sum, fold, internet_checksum, pseudo_header_sum};

/// Length of `struct virtio_net_hdr` (without `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;
/// `flags`: the L4 checksum is to be completed from `csum_start`.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `gso_type`: not a super-packet.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4 super-packet.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: TCP over IPv6 super-packet.
pub const GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation (USO) super-packet, either IP version.
pub const GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: TCP with ECN (CWR) segmentation; never negotiated here.
pub const GSO_ECN: u8 = 0x80;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
/// Offset of the TCP checksum in the TCP header.
const TCP_CSUM_OFFSET: usize = 16;
/// Offset of the UDP checksum in the UDP header.
const UDP_CSUM_OFFSET: usize = 6;
/// The largest IP packet a frame carries.
const MAX_IP: usize = 65535;
/// The largest frame the coalescer emits.
const FRAME_CAP: usize = VNET_HDR_LEN + MAX_IP;
/// Number of flows the coalescer holds at once.
const SLOTS: usize = 8;

/// A `struct virtio_net_hdr` (include/uapi/linux/virtio_net.h), the 10-byte
/// prefix of every frame on a TUN with `IFF_VNET_HDR`. Fields are
/// little-endian on the wire (`__virtio16` of a modern TUN).
///
/// `hdr_len` is a hint only (the kernel may set it to the whole first
/// packet); [`gso_split`] recomputes the header length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `GSO_*`, possibly with [`GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers (hint).
    pub hdr_len: u16,
    /// Payload bytes per segment (MSS, or UDP payload).
    pub gso_size: u16,
    /// Offset of the L4 header from the start of the IP packet.
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The all-zero header: a complete packet, checksums done.
    pub const NONE: VnetHdr = VnetHdr {
        flags: 0,
        gso_type: GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Reads the header from the first 10 bytes of `b` (a whole frame may be
    /// passed). `Err(Truncated)` if `b` is shorter.
    pub fn parse(b: &[u8]) -> Result<VnetHdr, OffloadError> {
        let b = b.get(..VNET_HDR_LEN).ok_or(OffloadError::Truncated)?;
        let le = |at: usize| {
            b.get(at..at + 2)
                .map_or(0, |w| u16::from_le_bytes([w[0], w[1]]))
        };
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        })
    }

    /// The header's 10 bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// Writes the header into the first 10 bytes of `b`. `Err(Truncated)`
    /// (and nothing written) if `b` is shorter.
    pub fn emit(&self, b: &mut [u8]) -> Result<(), OffloadError> {
        b.get_mut(..VNET_HDR_LEN)
            .ok_or(OffloadError::Truncated)?
            .copy_from_slice(&self.to_bytes());
        Ok(())
    }
}

/// Why a frame could not be processed (the pump drops it and counts
/// `offload_malformed`). The string names the field or rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// Shorter than the headers it declares.
    #[error("offload frame truncated")]
    Truncated,
    /// A header field contradicts the packet or the offload rules.
    #[error("malformed offload frame: {0}")]
    Malformed(&'static str),
    /// Valid, but not something this module handles.
    #[error("unsupported offload frame: {0}")]
    Unsupported(&'static str),
}

use OffloadError::{Malformed, Truncated, Unsupported};

fn rd8(b: &[u8], at: usize) -> Result<u8, OffloadError> {
    b.get(at).copied().ok_or(Truncated)
}

fn rd16(b: &[u8], at: usize) -> Result<u16, OffloadError> {
    match b.get(at..at.wrapping_add(2)) {
        Some(&[x, y]) => Ok(u16::from_be_bytes([x, y])),
        _ => Err(Truncated),
    }
}

fn rd32(b: &[u8], at: usize) -> Result<u32, OffloadError> {
    match b.get(at..at.wrapping_add(4)) {
        Some(&[w, x, y, z]) => Ok(u32::from_be_bytes([w, x, y, z])),
        _ => Err(Truncated),
    }
}

fn wr8(b: &mut [u8], at: usize, v: u8) -> Result<(), OffloadError> {
    *b.get_mut(at).ok_or(Truncated)? = v;
    Ok(())
}

fn wr16(b: &mut [u8], at: usize, v: u16) -> Result<(), OffloadError> {
    b.get_mut(at..at.wrapping_add(2))
        .ok_or(Truncated)?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

fn wr32(b: &mut [u8], at: usize, v: u32) -> Result<(), OffloadError> {
    b.get_mut(at..at.wrapping_add(4))
        .ok_or(Truncated)?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Completes the L4 checksum of a `GSO_NONE` packet in place (RFC 1071;
/// docs §1.5). With `NEEDS_CSUM`, the field at `csum_start + csum_offset`
/// holds the folded pseudo-header sum (not inverted); the checksum covers
/// `pkt[csum_start..]`. Without `NEEDS_CSUM`: `Ok(())`, nothing changed.
///
/// A result of 0 is stored as 0xFFFF when `csum_offset` is 6 (UDP, where 0
/// means "no checksum"); both encode zero in ones' complement, so this is
/// also safe for the other protocols with a checksum at offset 6.
///
/// Errors: `Unsupported` for a super-packet (use [`gso_split`]);
/// `Truncated` if the field lies outside `pkt`. `pkt` is unchanged on error.
pub fn complete_csum(pkt: &mut [u8], h: &VnetHdr) -> Result<(), OffloadError> {
    if h.gso_type != GSO_NONE {
        return Err(Unsupported("gso_type"));
    }
    if h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let cs = usize::from(h.csum_start);
    let co = cs + usize::from(h.csum_offset);
    // The field lies inside `pkt`, hence so does `csum_start`: nothing can
    // fail after the field is zeroed.
    let init = rd16(pkt, co)?;
    wr16(pkt, co, 0)?;
    let l4 = pkt.get(cs..).unwrap_or_default();
    let mut c = !fold(checksum_sum(l4, u64::from(init)));
    if c == 0 && usize::from(h.csum_offset) == UDP_CSUM_OFFSET {
        c = 0xffff;
    }
    wr16(pkt, co, c)
}

/// A super-packet that passed validation.
#[derive(Debug, Clone, Copy)]
struct Super {
    v6: bool,
    udp: bool,
    /// IP header length including IPv6 extension headers (= `csum_start`).
    iphl: usize,
    /// IP + L4 header length: the bytes repeated in every segment.
    hl: usize,
    gso: usize,
}

/// Checks a super-packet against its header (docs §1.4). Every segment
/// written afterwards is then known to fit.
fn validate_super(pkt: &[u8], h: &VnetHdr) -> Result<Super, OffloadError> {
    if h.gso_type & GSO_ECN != 0 {
        return Err(Unsupported("gso ecn"));
    }
    let (udp, version) = match h.gso_type {
        GSO_NONE => return Err(Unsupported("gso_type none")),
        GSO_TCPV4 => (false, Some(4)),
        GSO_TCPV6 => (false, Some(6)),
        GSO_UDP_L4 => (true, None),
        _ => return Err(Unsupported("gso_type")),
    };
    if h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 {
        return Err(Malformed("flags"));
    }
    if h.gso_size == 0 {
        return Err(Malformed("gso_size"));
    }
    let proto = if udp { PROTO_UDP } else { PROTO_TCP };
    let len = pkt.len();
    let cs = usize::from(h.csum_start);
    let v = rd8(pkt, 0)? >> 4;
    if version.is_some_and(|want| want != v) {
        return Err(Malformed("ip version"));
    }
    match v {
        4 => {
            let ihl = usize::from(rd8(pkt, 0)? & 0x0f) * 4;
            rd8(pkt, 19)?;
            if ihl < 20 {
                return Err(Malformed("ihl"));
            }
            if usize::from(rd16(pkt, 2)?) != len {
                return Err(Malformed("tot_len"));
            }
            if rd16(pkt, 6)? & 0x3fff != 0 {
                return Err(Malformed("ipv4 fragment"));
            }
            if rd8(pkt, 9)? != proto {
                return Err(Malformed("protocol"));
            }
            if cs != ihl {
                return Err(Malformed("csum_start"));
            }
            check_v4_options(pkt.get(20..ihl).ok_or(Truncated)?)?;
        }
        6 => {
            rd8(pkt, 39)?;
            if usize::from(rd16(pkt, 4)?) + 40 != len {
                return Err(Malformed("payload_len"));
            }
            if cs < 40 {
                return Err(Malformed("csum_start"));
            }
            if v6_upper_layer(pkt, cs)? != proto {
                return Err(Malformed("protocol"));
            }
        }
        _ => return Err(Malformed("ip version")),
    }
    let want_offset = if udp {
        UDP_CSUM_OFFSET
    } else {
        TCP_CSUM_OFFSET
    };
    if usize::from(h.csum_offset) != want_offset {
        return Err(Malformed("csum_offset"));
    }
    let thl = if udp {
        8
    } else {
        let thl = usize::from(rd8(pkt, cs + 12)? >> 4) * 4;
        if thl < 20 {
            return Err(Malformed("tcp data offset"));
        }
        thl
    };
    let hl = cs + thl;
    if hl > len {
        return Err(Truncated);
    }
    Ok(Super {
        v6: v == 6,
        udp,
        iphl: cs,
        hl,
        gso: usize::from(h.gso_size),
    })
}

/// Refuses IPv4 source-route options: with them the pseudo header holds the
/// final destination, not the header's, and a recomputed checksum would be
/// wrong.
fn check_v4_options(opts: &[u8]) -> Result<(), OffloadError> {
    let mut i = 0;
    while let Some(&t) = opts.get(i) {
        match t {
            0 => return Ok(()),
            1 => i += 1,
            131 | 137 => return Err(Unsupported("ipv4 source route")),
            _ => {
                let l = opts.get(i + 1).map_or(0, |&l| usize::from(l));
                if l < 2 || i + l > opts.len() {
                    return Err(Malformed("ipv4 options"));
                }
                i += l;
            }
        }
    }
    Ok(())
}

/// Walks IPv6 extension headers from byte 40 to `cs` and returns the
/// upper-layer protocol. Only hop-by-hop and destination options may come
/// before the L4 header: a routing header changes the pseudo header's
/// destination, a fragment header cannot be in a super-packet.
fn v6_upper_layer(pkt: &[u8], cs: usize) -> Result<u8, OffloadError> {
    let mut nh = rd8(pkt, 6)?;
    let mut off = 40;
    while off < cs {
        match nh {
            0 | 60 => {
                nh = rd8(pkt, off)?;
                off += (usize::from(rd8(pkt, off + 1)?) + 1) * 8;
            }
            43 => return Err(Unsupported("ipv6 routing header")),
            44 => return Err(Malformed("ipv6 fragment")),
            _ => return Err(Malformed("csum_start")),
        }
    }
    if off != cs {
        return Err(Malformed("csum_start"));
    }
    Ok(nh)
}

/// Address ranges of the pseudo header: (src, dst).
fn addr_ranges(v6: bool) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    if v6 {
        (8..24, 24..40)
    } else {
        (12..16, 16..20)
    }
}

/// Writes the length fields of one segment (`seg` is the whole segment, its
/// headers copied from the super-packet): IPv6 `payload_len`, or IPv4
/// `tot_len`, identification `id` and header checksum; for UDP the UDP
/// length. L4 checksums are the caller's.
fn set_segment_lengths(seg: &mut [u8], s: &Super, id: u16) -> Result<(), OffloadError> {
    let seg_len = seg.len();
    if s.v6 {
        wr16(seg, 4, (seg_len - 40) as u16)?;
    } else {
        wr16(seg, 2, seg_len as u16)?;
        wr16(seg, 4, id)?;
        wr16(seg, 10, 0)?;
        let c = internet_checksum(seg.get(..s.iphl).ok_or(Truncated)?);
        wr16(seg, 10, c)?;
    }
    if s.udp {
        wr16(seg, s.iphl + 4, (seg_len - s.iphl) as u16)?;
    }
    Ok(())
}

/// Splits a `TCPV4`/`TCPV6`/`UDP_L4` super-packet into segments of
/// `gso_size` payload bytes (the last may be shorter), written one at a time
/// into `scratch` and passed to `f` as complete IP packets (mutable, so a
/// consumer may decrypt in place): IPv4 `tot_len`,
/// `id0 + i` and header checksum, or IPv6 `payload_len`; TCP `seq0 + i *
/// gso_size`, FIN/PSH only on the last and CWR only on the first segment;
/// UDP length; the L4 checksum computed from scratch over the segment
/// (docs §1.4). Returns the number of segments. `hdr_len` is not trusted:
/// the header length is recomputed from `csum_start` and the L4 header.
///
/// The whole packet is validated before the first call to `f`, so on `Err`
/// nothing was emitted. `GSO_NONE` is `Err(Unsupported)` (use
/// [`complete_csum`]); `scratch` shorter than the largest segment is
/// `Err(Unsupported("scratch"))`. A super-packet without payload gives one
/// segment of headers only.
pub fn gso_split(
    pkt: &[u8],
    h: &VnetHdr,
    scratch: &mut [u8],
    mut f: impl FnMut(&mut [u8]),
) -> Result<usize, OffloadError> {
    let s = validate_super(pkt, h)?;
    let (head, payload) = pkt.split_at_checked(s.hl).ok_or(Truncated)?;
    if scratch.len() < s.hl + s.gso.min(payload.len()) {
        return Err(Unsupported("scratch"));
    }
    let n = payload.len().div_ceil(s.gso).max(1);
    let cs = s.iphl;
    let (src, dst) = addr_ranges(s.v6);
    let src = pkt.get(src).ok_or(Truncated)?;
    let dst = pkt.get(dst).ok_or(Truncated)?;
    let proto = if s.udp { PROTO_UDP } else { PROTO_TCP };
    let csum_at = cs
        + if s.udp {
            UDP_CSUM_OFFSET
        } else {
            TCP_CSUM_OFFSET
        };
    let id0 = if s.v6 { 0 } else { rd16(pkt, 4)? };
    let seq0 = if s.udp { 0 } else { rd32(pkt, cs + 4)? };
    let flags0 = if s.udp { 0 } else { rd8(pkt, cs + 13)? };
    for i in 0..n {
        let start = i * s.gso;
        let data = payload
            .get(start..payload.len().min(start + s.gso))
            .unwrap_or_default();
        let seg_len = s.hl + data.len();
        let seg = scratch.get_mut(..seg_len).ok_or(Truncated)?;
        let (hdr, body) = seg.split_at_mut_checked(s.hl).ok_or(Truncated)?;
        hdr.copy_from_slice(head);
        body.copy_from_slice(data);
        set_segment_lengths(seg, &s, id0.wrapping_add(i as u16))?;
        if !s.udp {
            wr32(seg, cs + 4, seq0.wrapping_add(start as u32))?;
            let mut fl = flags0;
            if i + 1 != n {
                fl &= !(TCP_FIN | TCP_PSH);
            }
            if i != 0 {
                fl &= !TCP_CWR;
            }
            wr8(seg, cs + 13, fl)?;
        }
        wr16(seg, csum_at, 0)?;
        let l4 = seg.get(cs..).ok_or(Truncated)?;
        let pseudo = pseudo_header_sum(src, dst, proto, l4.len() as u32);
        let mut c = !fold(checksum_sum(l4, pseudo));
        if s.udp && c == 0 {
            c = 0xffff;
        }
        wr16(seg, csum_at, c)?;
        f(seg);
    }
    Ok(n)
}

/// Splits a `UDP_L4` super-packet in place, without copying payloads: segment
/// `i` is handed to `f` as `pkt[start_i - hl .. end_i]` after the IP and UDP
/// headers have been written in front of its payload (over the tail of
/// segment `i - 1`, which `f` has finished with). IPv4 `tot_len`, `id0 + i`
/// and header checksum, IPv6 `payload_len` and the UDP length are set; **the
/// UDP checksum is set to zero, not computed**: for consumers that
/// authenticate the payload themselves (ESP in UDP, RFC 3948 §3.1.2), never
/// for packets that leave the Viaduct. `f` may modify its segment.
///
/// Validation is [`gso_split`]'s; on `Err` nothing was emitted. Headers
/// longer than 256 bytes are `Err(Unsupported("header length"))`.
pub fn split_udp_in_place(
    pkt: &mut [u8],
    h: &VnetHdr,
    mut f: impl FnMut(&mut [u8]),
) -> Result<usize, OffloadError> {
    if h.gso_type != GSO_UDP_L4 {
        return Err(Unsupported("gso_type"));
    }
    let s = validate_super(pkt, h)?;
    let mut head = [0u8; 256];
    let head = head.get_mut(..s.hl).ok_or(Unsupported("header length"))?;
    head.copy_from_slice(pkt.get(..s.hl).ok_or(Truncated)?);
    let total = pkt.len();
    let n = (total - s.hl).div_ceil(s.gso).max(1);
    let cs = s.iphl;
    let id0 = if s.v6 { 0 } else { rd16(pkt, 4)? };
    for i in 0..n {
        let start = s.hl + i * s.gso;
        let end = total.min(start + s.gso);
        let seg = pkt.get_mut(start - s.hl..end).ok_or(Truncated)?;
        seg.get_mut(..s.hl).ok_or(Truncated)?.copy_from_slice(head);
        set_segment_lengths(seg, &s, id0.wrapping_add(i as u16))?;
        wr16(seg, cs + UDP_CSUM_OFFSET, 0)?;
        f(seg);
    }
    Ok(n)
}

/// Counters of a [`Coalescer`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CoalescerStats {
    /// Frames emitted.
    pub frames: u64,
    /// Packets that went into multi-packet (GSO) frames.
    pub merged: u64,
    /// Frames emitted with a `GSO_NONE` (all-zero) header.
    pub passthrough: u64,
    /// Packets longer than 65535 bytes, not emitted.
    pub dropped: u64,
}

/// A TCP flow as the coalescer keys it. The ACK number is compared on
/// append, so a slot holds one (version, src, dst, sport, dport, ack) and a
/// flow never has two slots (which keeps per-flow order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Flow {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
}

/// How `push` treats a packet.
enum Class {
    /// Mergeable TCP data (all conditions on the packet alone hold,
    /// checksums verified).
    Cand(Cand),
    /// TCP, not mergeable: flush its flow, then write it unchanged.
    Flow(Flow),
    /// TCP without readable ports (a later fragment): flush every flow
    /// between the two addresses, then write it unchanged.
    Addrs(Flow),
    /// Not TCP, or not parseable: write unchanged.
    Other,
}

/// A mergeable TCP packet.
#[derive(Debug, Clone, Copy)]
struct Cand {
    flow: Flow,
    iphl: usize,
    thl: usize,
    plen: usize,
    seq: u32,
    ack: u32,
    psh: bool,
    /// IPv4 identification (0 for v6).
    id: u16,
    /// IPv4 DF.
    df: bool,
}

/// The addresses of a TCP packet, ports 0.
fn addrs_of(v6: bool, pkt: &[u8]) -> Option<Flow> {
    let (s, d) = addr_ranges(v6);
    let (s, d) = (pkt.get(s)?, pkt.get(d)?);
    let mut f = Flow {
        v6,
        ..Flow::default()
    };
    f.src.get_mut(..s.len())?.copy_from_slice(s);
    f.dst.get_mut(..d.len())?.copy_from_slice(d);
    Some(f)
}

/// The flow of a TCP packet whose TCP header is `l4`: `Flow` when the ports
/// are readable, else `Addrs`, else `Other`.
fn flow_class(v6: bool, pkt: &[u8], l4: Option<&[u8]>) -> Class {
    let Some(f) = addrs_of(v6, pkt) else {
        return Class::Other;
    };
    match l4.map(|l4| (rd16(l4, 0), rd16(l4, 2))) {
        Some((Ok(sport), Ok(dport))) => Class::Flow(Flow { sport, dport, ..f }),
        _ => Class::Addrs(f),
    }
}

fn classify(pkt: &[u8]) -> Class {
    let (v6, iphl, direct) = match pkt.first().map(|b| b >> 4) {
        Some(4) => {
            let ihl = pkt.first().map_or(0, |b| usize::from(b & 0x0f) * 4);
            let ok = pkt.len() >= 20
                && ihl >= 20
                && ihl <= pkt.len()
                && rd16(pkt, 2).is_ok_and(|t| usize::from(t) == pkt.len());
            if !ok || rd8(pkt, 9) != Ok(PROTO_TCP) {
                return Class::Other;
            }
            let frag = rd16(pkt, 6).unwrap_or(0);
            if frag & 0x1fff != 0 {
                return flow_class(false, pkt, None);
            }
            // A first fragment (MF) or options: its flow, but never merged.
            (false, ihl, ihl == 20 && frag & 0x2000 == 0)
        }
        Some(6) => {
            // Checks payload_len + 40 == len.
            let Ok(p) = crate::wire::Ipv6Packet::new_checked(pkt) else {
                return Class::Other;
            };
            if p.next_header() != PROTO_TCP {
                // Extension headers: never merged, but order kept.
                return match p.upper_layer() {
                    Ok((PROTO_TCP, l4, later_fragment)) => {
                        flow_class(true, pkt, (!later_fragment).then_some(l4))
                    }
                    _ => Class::Other,
                };
            }
            (true, 40, true)
        }
        _ => return Class::Other,
    };
    let l4 = pkt.get(iphl..).unwrap_or_default();
    let flow = match flow_class(v6, pkt, Some(l4)) {
        Class::Flow(f) => f,
        other => return other,
    };
    match candidate(pkt, v6, iphl, l4, flow, direct) {
        Some(c) => Class::Cand(c),
        None => Class::Flow(flow),
    }
}

/// The per-packet merge conditions (docs §1.6), including both checksums.
fn candidate(
    pkt: &[u8],
    v6: bool,
    iphl: usize,
    l4: &[u8],
    flow: Flow,
    direct: bool,
) -> Option<Cand> {
    if !direct {
        return None;
    }
    let thl = usize::from(rd8(l4, 12).ok()? >> 4) * 4;
    if thl < 20 || thl > l4.len() {
        return None;
    }
    // Reserved/AE bits clear, flags exactly ACK or ACK|PSH.
    if rd8(l4, 12).ok()? & 0x0f != 0 {
        return None;
    }
    let fl = rd8(l4, 13).ok()?;
    if fl != TCP_ACK && fl != TCP_ACK | TCP_PSH {
        return None;
    }
    let plen = l4.len() - thl;
    if plen == 0 {
        return None;
    }
    if !v6 && internet_checksum(pkt.get(..iphl)?) != 0 {
        return None;
    }
    let (s, d) = addr_ranges(v6);
    let pseudo = pseudo_header_sum(pkt.get(s)?, pkt.get(d)?, PROTO_TCP, l4.len() as u32);
    if fold(checksum_sum(l4, pseudo)) != 0xffff {
        return None;
    }
    Some(Cand {
        flow,
        iphl,
        thl,
        plen,
        seq: rd32(l4, 4).ok()?,
        ack: rd32(l4, 8).ok()?,
        psh: fl & TCP_PSH != 0,
        id: if v6 { 0 } else { rd16(pkt, 4).ok()? },
        df: !v6 && rd16(pkt, 6).ok()? & 0x4000 != 0,
    })
}

/// One flow's pending frame: `buf` is `[vnet hdr][IP packet]`.
struct Slot {
    buf: Box<[u8]>,
    /// IP packet bytes held; 0 = free.
    len: usize,
    flow: Flow,
    iphl: usize,
    thl: usize,
    /// Payload length of the head packet: the frame's `gso_size`.
    gso: usize,
    ack: u32,
    next_seq: u32,
    head_id: u16,
    /// Packets held.
    count: usize,
    /// A PSH packet was taken: nothing more may follow.
    psh: bool,
    /// A packet shorter than `gso` was appended: nothing more may follow.
    short: bool,
    /// Tick of the last packet (LRU eviction).
    used: u64,
    /// Tick of the first packet (flush order).
    born: u64,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            buf: vec![0u8; FRAME_CAP].into_boxed_slice(),
            len: 0,
            flow: Flow::default(),
            iphl: 0,
            thl: 0,
            gso: 0,
            ack: 0,
            next_seq: 0,
            head_id: 0,
            count: 0,
            psh: false,
            short: false,
            used: 0,
            born: 0,
        }
    }

    fn ip(&self) -> &[u8] {
        self.buf
            .get(VNET_HDR_LEN..VNET_HDR_LEN + self.len)
            .unwrap_or_default()
    }

    /// Makes `pkt` the head. `None` (slot left free) if it does not fit.
    fn start(&mut self, pkt: &[u8], c: &Cand, tick: u64) -> Option<()> {
        self.buf
            .get_mut(VNET_HDR_LEN..VNET_HDR_LEN + pkt.len())?
            .copy_from_slice(pkt);
        self.len = pkt.len();
        self.flow = c.flow;
        self.iphl = c.iphl;
        self.thl = c.thl;
        self.gso = c.plen;
        self.ack = c.ack;
        self.next_seq = c.seq.wrapping_add(c.plen as u32);
        self.head_id = c.id;
        self.count = 1;
        self.psh = c.psh;
        self.short = false;
        self.used = tick;
        self.born = tick;
        Some(())
    }

    /// The append conditions that relate `pkt` to the slot (docs §1.6).
    fn accepts(&self, pkt: &[u8], c: &Cand) -> bool {
        let head = self.ip();
        let same = |r: std::ops::Range<usize>| match (head.get(r.clone()), pkt.get(r)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        let ip_same = if c.flow.v6 {
            same(0..4) && same(7..8)
        } else {
            // TOS, flags (DF/reserved), TTL.
            same(1..2) && same(6..9)
        };
        let id_ok = c.flow.v6 || c.df || c.id == self.head_id.wrapping_add(self.count as u16);
        !self.psh
            && !self.short
            && ip_same
            && id_ok
            && c.ack == self.ack
            && c.seq == self.next_seq
            && c.thl == self.thl
            && c.iphl == self.iphl
            && same(self.iphl + 20..self.iphl + self.thl)
            && c.plen <= self.gso
            && self.len + c.plen <= MAX_IP
    }

    /// Appends the payload of an accepted packet.
    fn append(&mut self, pkt: &[u8], c: &Cand, tick: u64) -> Option<()> {
        let data = pkt.get(c.iphl + c.thl..)?;
        let at = VNET_HDR_LEN + self.len;
        self.buf.get_mut(at..at + data.len())?.copy_from_slice(data);
        self.len += data.len();
        self.count += 1;
        self.next_seq = self.next_seq.wrapping_add(c.plen as u32);
        self.short = c.plen < self.gso;
        if c.psh {
            self.psh = true;
            let at = VNET_HDR_LEN + self.iphl + 13;
            let fl = self.buf.get_mut(at)?;
            *fl |= TCP_PSH;
        }
        self.used = tick;
        Some(())
    }

    /// The frame to write: the head unchanged behind a zero header, or the
    /// merged packet with its GSO header and rewritten lengths.
    fn finish(&mut self) -> Result<&[u8], OffloadError> {
        let frame_len = VNET_HDR_LEN + self.len;
        if self.count <= 1 {
            VnetHdr::NONE.emit(&mut self.buf)?;
            return self.buf.get(..frame_len).ok_or(Truncated);
        }
        let v6 = self.flow.v6;
        let hdr = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: (self.iphl + self.thl) as u16,
            gso_size: self.gso as u16,
            csum_start: self.iphl as u16,
            csum_offset: TCP_CSUM_OFFSET as u16,
        };
        hdr.emit(&mut self.buf)?;
        let (len, iphl) = (self.len, self.iphl);
        let ip = self.buf.get_mut(VNET_HDR_LEN..frame_len).ok_or(Truncated)?;
        if v6 {
            wr16(ip, 4, (len - 40) as u16)?;
        } else {
            wr16(ip, 2, len as u16)?;
            wr16(ip, 10, 0)?;
            let c = internet_checksum(ip.get(..iphl).ok_or(Truncated)?);
            wr16(ip, 10, c)?;
        }
        let (s, d) = addr_ranges(v6);
        let pseudo = fold(pseudo_header_sum(
            ip.get(s).ok_or(Truncated)?,
            ip.get(d).ok_or(Truncated)?,
            PROTO_TCP,
            (len - iphl) as u32,
        ));
        wr16(ip, iphl + TCP_CSUM_OFFSET, pseudo)?;
        self.buf.get(..frame_len).ok_or(Truncated)
    }
}

/// Userspace GRO for the frames written to a TUN with `IFF_VNET_HDR`
/// (docs §1.6).
///
/// [`push`](Coalescer::push) takes one complete IP packet at a time. A TCP
/// data packet (flags exactly ACK or ACK|PSH, IPv4 without options or
/// fragmentation, IPv6 without extension headers, valid checksums) is held
/// in its flow's slot and merged with the packets that follow it in sequence
/// (same ack, IP fields, TCP options; equal sizes; only the last may be
/// shorter or carry PSH; at most 65535 bytes). Anything else first flushes
/// its flow's slot, then is emitted unchanged behind an all-zero header, so
/// the order within a flow is kept. With all 8 slots busy, the least
/// recently used one is flushed. Call [`flush`](Coalescer::flush) at the end
/// of each batch: nothing is held across batches and there are no timers.
///
/// A frame emitted is `[vnet hdr 10][IP packet]`, at most 10 + 65535 bytes.
/// A merged frame has `NEEDS_CSUM` + `TCPV4`/`TCPV6`, the head's headers
/// with lengths (and the IPv4 header checksum) rewritten, and the folded
/// pseudo-header sum in the TCP checksum field, as the kernel expects.
pub struct Coalescer {
    slots: [Slot; SLOTS],
    /// Staging for unchanged packets: `[0; 10][packet]`.
    pass: Box<[u8]>,
    tick: u64,
    stats: CoalescerStats,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new()
    }
}

impl Coalescer {
    /// Allocates the slots (8 × 64 KiB) and a staging buffer; nothing else
    /// is allocated later.
    pub fn new() -> Coalescer {
        Coalescer {
            slots: std::array::from_fn(|_| Slot::new()),
            pass: vec![0u8; FRAME_CAP].into_boxed_slice(),
            tick: 0,
            stats: CoalescerStats::default(),
        }
    }

    /// Takes one complete IP packet; holds it, merges it, or emits it (and
    /// possibly frames held before it) through `out`. A packet longer than
    /// 65535 bytes cannot be framed: it is dropped and counted in `dropped`.
    pub fn push(&mut self, pkt: &[u8], out: &mut impl FnMut(&[u8])) {
        if pkt.len() > MAX_IP {
            self.stats.dropped += 1;
            return;
        }
        self.tick += 1;
        let tick = self.tick;
        match classify(pkt) {
            Class::Cand(c) => {
                let i = match self.find(&c.flow) {
                    Some(i) => {
                        if let Some(s) = self.slots.get_mut(i) {
                            if s.accepts(pkt, &c) && s.append(pkt, &c, tick).is_some() {
                                return;
                            }
                        }
                        self.flush_slot(i, out);
                        i
                    }
                    None => self.free_slot(out),
                };
                let started = self.slots.get_mut(i).and_then(|s| s.start(pkt, &c, tick));
                if started.is_none() {
                    self.emit_plain(pkt, out);
                }
            }
            Class::Flow(f) => {
                if let Some(i) = self.find(&f) {
                    self.flush_slot(i, out);
                }
                self.emit_plain(pkt, out);
            }
            Class::Addrs(f) => {
                for i in 0..SLOTS {
                    let hit = self.slots.get(i).is_some_and(|s| {
                        s.len != 0
                            && s.flow.v6 == f.v6
                            && s.flow.src == f.src
                            && s.flow.dst == f.dst
                    });
                    if hit {
                        self.flush_slot(i, out);
                    }
                }
                self.emit_plain(pkt, out);
            }
            Class::Other => self.emit_plain(pkt, out),
        }
    }

    /// Emits every held slot, oldest first.
    pub fn flush(&mut self, out: &mut impl FnMut(&[u8])) {
        while let Some(i) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.len != 0)
            .min_by_key(|(_, s)| s.born)
            .map(|(i, _)| i)
        {
            self.flush_slot(i, out);
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> CoalescerStats {
        self.stats
    }

    fn find(&self, f: &Flow) -> Option<usize> {
        self.slots.iter().position(|s| s.len != 0 && s.flow == *f)
    }

    /// A free slot, flushing the least recently used one if all are busy.
    fn free_slot(&mut self, out: &mut impl FnMut(&[u8])) -> usize {
        if let Some(i) = self.slots.iter().position(|s| s.len == 0) {
            return i;
        }
        let lru = self
            .slots
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.used)
            .map_or(0, |(i, _)| i);
        self.flush_slot(lru, out);
        lru
    }

    fn flush_slot(&mut self, i: usize, out: &mut impl FnMut(&[u8])) {
        let Some(s) = self.slots.get_mut(i) else {
            return;
        };
        if s.len == 0 {
            return;
        }
        let count = s.count as u64;
        if let Ok(frame) = s.finish() {
            out(frame);
            self.stats.frames += 1;
            if count > 1 {
                self.stats.merged += count;
            } else {
                self.stats.passthrough += 1;
            }
        }
        s.len = 0;
        s.count = 0;
    }

    fn emit_plain(&mut self, pkt: &[u8], out: &mut impl FnMut(&[u8])) {
        let Some(dst) = self.pass.get_mut(VNET_HDR_LEN..VNET_HDR_LEN + pkt.len()) else {
            self.stats.dropped += 1;
            return;
        };
        dst.copy_from_slice(pkt);
        if let Some(frame) = self.pass.get(..VNET_HDR_LEN + pkt.len()) {
            out(frame);
            self.stats.frames += 1;
            self.stats.passthrough += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::{reference_checksum, reference_sum};
    use proptest::prelude::*;

    // ---------------------------------------------------------------
    // Reference packet builder and checker (byte-pair checksums only).
    // ---------------------------------------------------------------

    /// Every field of a TCP or UDP packet over IPv4 or IPv6.
    #[derive(Clone, Debug)]
    struct Pkt {
        v6: bool,
        udp: bool,
        src: Vec<u8>,
        dst: Vec<u8>,
        tos: u8,
        ttl: u8,
        id: u16,
        df: bool,
        mf: bool,
        frag_off: u16,
        ip_opts: Vec<u8>,
        flow_label: u32,
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        opts: Vec<u8>,
        payload: Vec<u8>,
    }

    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn pseudo_bytes(src: &[u8], dst: &[u8], proto: u8, len: usize) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(src);
        p.extend_from_slice(dst);
        if src.len() == 4 {
            p.extend_from_slice(&[0, proto]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, proto]);
        }
        p
    }

    /// RFC 1071 checksum of pseudo header ‖ l4 (0 when `l4` verifies).
    fn ref_l4_check(src: &[u8], dst: &[u8], proto: u8, l4: &[u8]) -> u16 {
        let mut b = pseudo_bytes(src, dst, proto, l4.len());
        b.extend_from_slice(l4);
        reference_checksum(&b)
    }

    impl Pkt {
        fn new(v6: bool, udp: bool) -> Pkt {
            let (src, dst) = if v6 {
                let mut s = vec![0x20, 0x01, 0x0d, 0xb8];
                s.extend_from_slice(&[0; 11]);
                s.push(1);
                let mut d = s.clone();
                d[15] = 2;
                d[7] = 0x77;
                (s, d)
            } else {
                (vec![10, 1, 0, 1], vec![10, 2, 0, 7])
            };
            Pkt {
                v6,
                udp,
                src,
                dst,
                tos: 0,
                ttl: 64,
                id: 0x1234,
                df: true,
                mf: false,
                frag_off: 0,
                ip_opts: Vec::new(),
                flow_label: 0x12345,
                sport: 40000,
                dport: 5201,
                seq: 1000,
                ack: 5000,
                flags: TCP_ACK,
                window: 512,
                opts: Vec::new(),
                payload: Vec::new(),
            }
        }
        fn tcp4(payload: usize) -> Pkt {
            Pkt {
                payload: pattern(payload, 4),
                ..Pkt::new(false, false)
            }
        }
        fn tcp6(payload: usize) -> Pkt {
            Pkt {
                payload: pattern(payload, 6),
                ..Pkt::new(true, false)
            }
        }
        fn proto(&self) -> u8 {
            if self.udp {
                PROTO_UDP
            } else {
                PROTO_TCP
            }
        }
        fn iphl(&self) -> usize {
            if self.v6 {
                40
            } else {
                20 + self.ip_opts.len()
            }
        }
        fn check_at(&self) -> usize {
            if self.udp {
                6
            } else {
                16
            }
        }
        /// The L4 header and payload, checksum field zero.
        fn l4(&self) -> Vec<u8> {
            let mut b = Vec::new();
            b.extend_from_slice(&self.sport.to_be_bytes());
            b.extend_from_slice(&self.dport.to_be_bytes());
            if self.udp {
                b.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
            } else {
                b.extend_from_slice(&self.seq.to_be_bytes());
                b.extend_from_slice(&self.ack.to_be_bytes());
                b.push((((20 + self.opts.len()) / 4) as u8) << 4);
                b.push(self.flags);
                b.extend_from_slice(&self.window.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0]);
                b.extend_from_slice(&self.opts);
            }
            b.extend_from_slice(&self.payload);
            b
        }
        /// Prepends the IP header (IPv4 header checksum by the reference).
        fn wrap(&self, l4: &[u8]) -> Vec<u8> {
            let mut b = Vec::new();
            if self.v6 {
                let vtf = (6u32 << 28) | (u32::from(self.tos) << 20) | (self.flow_label & 0xfffff);
                b.extend_from_slice(&vtf.to_be_bytes());
                b.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                b.push(self.proto());
                b.push(self.ttl);
                b.extend_from_slice(&self.src);
                b.extend_from_slice(&self.dst);
            } else {
                let ihl = self.iphl();
                b.push(0x40 | (ihl / 4) as u8);
                b.push(self.tos);
                b.extend_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
                b.extend_from_slice(&self.id.to_be_bytes());
                let ff = (u16::from(self.df) << 14) | (u16::from(self.mf) << 13) | self.frag_off;
                b.extend_from_slice(&ff.to_be_bytes());
                b.push(self.ttl);
                b.push(self.proto());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(&self.src);
                b.extend_from_slice(&self.dst);
                b.extend_from_slice(&self.ip_opts);
                let c = reference_checksum(&b);
                b[10..12].copy_from_slice(&c.to_be_bytes());
            }
            b.extend_from_slice(l4);
            b
        }
        /// A complete packet with valid checksums.
        fn build(&self) -> Vec<u8> {
            let mut l4 = self.l4();
            let mut c = ref_l4_check(&self.src, &self.dst, self.proto(), &l4);
            if self.udp && c == 0 {
                c = 0xffff;
            }
            let at = self.check_at();
            l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
            self.wrap(&l4)
        }
        /// The same packet as a super-packet from the kernel: check field =
        /// folded pseudo-header sum, not inverted.
        fn build_super(&self, gso: u16) -> (Vec<u8>, VnetHdr) {
            let mut l4 = self.l4();
            let ps = reference_sum(
                &pseudo_bytes(&self.src, &self.dst, self.proto(), l4.len()),
                0,
            );
            let at = self.check_at();
            l4[at..at + 2].copy_from_slice(&ps.to_be_bytes());
            let thl = if self.udp { 8 } else { 20 + self.opts.len() };
            let h = VnetHdr {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                gso_type: match (self.udp, self.v6) {
                    (true, _) => GSO_UDP_L4,
                    (false, false) => GSO_TCPV4,
                    (false, true) => GSO_TCPV6,
                },
                hdr_len: (self.iphl() + thl) as u16,
                gso_size: gso,
                csum_start: self.iphl() as u16,
                csum_offset: at as u16,
            };
            (self.wrap(&l4), h)
        }
        /// The naive segmenter: one `build` per segment.
        fn ref_segments(&self, gso: usize) -> Vec<Vec<u8>> {
            let chunks: Vec<&[u8]> = if self.payload.is_empty() {
                vec![&[]]
            } else {
                self.payload.chunks(gso).collect()
            };
            let n = chunks.len();
            chunks
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut q = self.clone();
                    q.payload = c.to_vec();
                    q.id = self.id.wrapping_add(i as u16);
                    q.seq = self.seq.wrapping_add((i * gso) as u32);
                    if i + 1 != n {
                        q.flags &= !(TCP_FIN | TCP_PSH);
                    }
                    if i != 0 {
                        q.flags &= !TCP_CWR;
                    }
                    q.build()
                })
                .collect()
        }
        /// Consecutive packets of one flow with the given payload sizes.
        fn stream(&self, sizes: &[usize]) -> Vec<Vec<u8>> {
            let mut q = self.clone();
            sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    q.payload = pattern(n, i as u64 + 100);
                    let b = q.build();
                    q.seq = q.seq.wrapping_add(n as u32);
                    q.id = q.id.wrapping_add(1);
                    b
                })
                .collect()
        }
    }

    /// Parsed view of a segment for assertions: (l4 start, proto).
    fn l4_start(p: &[u8]) -> (usize, u8) {
        if p[0] >> 4 == 4 {
            (usize::from(p[0] & 0x0f) * 4, p[9])
        } else if p[6] == 0 {
            (40 + (usize::from(p[41]) + 1) * 8, p[40])
        } else {
            (40, p[6])
        }
    }

    /// IPv4 header checksum (true for v6) and L4 checksum verify.
    fn verifies(p: &[u8]) -> bool {
        let (cs, proto) = l4_start(p);
        let (s, d) = if p[0] >> 4 == 4 {
            (&p[12..16], &p[16..20])
        } else {
            (&p[8..24], &p[24..40])
        };
        let ip_ok = p[0] >> 4 == 6 || reference_checksum(&p[..cs]) == 0;
        ip_ok && ref_l4_check(s, d, proto, &p[cs..]) == 0
    }

    fn split(pkt: &[u8], h: &VnetHdr) -> Result<Vec<Vec<u8>>, OffloadError> {
        let mut scratch = vec![0u8; MAX_IP + 40];
        let mut v = Vec::new();
        let n = gso_split(pkt, h, &mut scratch, |s| v.push(s.to_vec()))?;
        assert_eq!(n, v.len());
        Ok(v)
    }

    fn coalesce(pkts: &[Vec<u8>]) -> (Vec<Vec<u8>>, CoalescerStats) {
        let mut c = Coalescer::new();
        let mut frames = Vec::new();
        let mut out = |f: &[u8]| frames.push(f.to_vec());
        for p in pkts {
            c.push(p, &mut out);
        }
        c.flush(&mut out);
        (frames, c.stats())
    }

    /// The IP packets a frame stands for.
    fn unframe(frame: &[u8]) -> Vec<Vec<u8>> {
        let h = VnetHdr::parse(frame).unwrap();
        if h == VnetHdr::NONE {
            vec![frame[VNET_HDR_LEN..].to_vec()]
        } else {
            split(&frame[VNET_HDR_LEN..], &h).unwrap()
        }
    }

    fn plain(pkt: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN];
        f.extend_from_slice(pkt);
        f
    }

    fn assert_not_merged(pkts: &[Vec<u8>]) {
        let (frames, st) = coalesce(pkts);
        let want: Vec<Vec<u8>> = pkts.iter().map(|p| plain(p)).collect();
        assert_eq!(frames, want);
        assert_eq!(st.merged, 0);
    }

    fn assert_merged(pkts: &[Vec<u8>]) -> Vec<u8> {
        let (frames, st) = coalesce(pkts);
        assert_eq!(frames.len(), 1, "expected one frame");
        assert_eq!(st.merged, pkts.len() as u64);
        assert_eq!(&unframe(&frames[0]), pkts);
        frames[0].clone()
    }

    // -------------------------- header --------------------------

    #[test]
    fn header_parse_emit() {
        let h = VnetHdr {
            flags: 1,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        let b = [1, 1, 54, 0, 0xa8, 0x05, 20, 0, 16, 0];
        assert_eq!(h.to_bytes(), b);
        let mut out = [0xffu8; 12];
        h.emit(&mut out).unwrap();
        assert_eq!(&out[..10], &b);
        assert_eq!(out[10..], [0xff, 0xff]);
        assert_eq!(VnetHdr::parse(&out).unwrap(), h);
        assert_eq!(VnetHdr::parse(&[0; 10]).unwrap(), VnetHdr::NONE);
        assert_eq!(VnetHdr::NONE, VnetHdr::default());
    }

    #[test]
    fn header_truncated() {
        for n in 0..VNET_HDR_LEN {
            assert_eq!(VnetHdr::parse(&[0u8; 16][..n]), Err(Truncated));
            let mut b = vec![0x55u8; n];
            assert_eq!(VnetHdr::NONE.emit(&mut b), Err(Truncated));
            assert!(b.iter().all(|&x| x == 0x55));
        }
    }

    #[test]
    fn error_display_names_the_rule() {
        assert_eq!(
            Malformed("gso_size").to_string(),
            "malformed offload frame: gso_size"
        );
        assert!(Unsupported("gso ecn").to_string().contains("gso ecn"));
        assert!(!Truncated.to_string().is_empty());
    }

    // ------------------------ validation ------------------------

    fn good(v6: bool, udp: bool) -> (Vec<u8>, VnetHdr) {
        Pkt {
            payload: pattern(3000, 1),
            ..Pkt::new(v6, udp)
        }
        .build_super(1000)
    }

    fn err(pkt: &[u8], h: &VnetHdr) -> OffloadError {
        let mut called = false;
        let mut scratch = vec![0u8; MAX_IP];
        let e = gso_split(pkt, h, &mut scratch, |_| called = true).unwrap_err();
        assert!(!called, "a segment was emitted before the error");
        e
    }

    #[test]
    fn good_fixtures_split() {
        for (v6, udp) in [(false, false), (true, false), (false, true), (true, true)] {
            let (p, h) = good(v6, udp);
            assert_eq!(split(&p, &h).unwrap().len(), 3);
        }
    }

    #[test]
    fn rejects_gso_size_zero() {
        let (p, mut h) = good(false, false);
        h.gso_size = 0;
        assert_eq!(err(&p, &h), Malformed("gso_size"));
    }

    #[test]
    fn rejects_missing_needs_csum() {
        let (p, mut h) = good(false, false);
        h.flags = 0;
        assert_eq!(err(&p, &h), Malformed("flags"));
        h.flags = 2; // DATA_VALID alone
        assert_eq!(err(&p, &h), Malformed("flags"));
    }

    #[test]
    fn rejects_ecn() {
        let (p, mut h) = good(false, false);
        h.gso_type |= GSO_ECN;
        assert_eq!(err(&p, &h), Unsupported("gso ecn"));
    }

    #[test]
    fn rejects_gso_none_and_unknown_types() {
        let (p, mut h) = good(false, false);
        h.gso_type = GSO_NONE;
        assert_eq!(err(&p, &h), Unsupported("gso_type none"));
        for t in [2, 3, 6, 0x7f] {
            h.gso_type = t;
            assert_eq!(err(&p, &h), Unsupported("gso_type"));
        }
    }

    #[test]
    fn rejects_version_mismatch() {
        let (p6, mut h6) = good(true, false);
        h6.gso_type = GSO_TCPV4;
        assert_eq!(err(&p6, &h6), Malformed("ip version"));
        let (p4, mut h4) = good(false, false);
        h4.gso_type = GSO_TCPV6;
        assert_eq!(err(&p4, &h4), Malformed("ip version"));
        let (mut pu, hu) = good(false, true);
        pu[0] = 0x55;
        assert_eq!(err(&pu, &hu), Malformed("ip version"));
    }

    #[test]
    fn rejects_ipv4_fragment() {
        let (p, h) = good(false, false);
        let mut mf = p.clone();
        mf[6] |= 0x20;
        assert_eq!(err(&mf, &h), Malformed("ipv4 fragment"));
        let mut off = p.clone();
        off[7] = 1;
        assert_eq!(err(&off, &h), Malformed("ipv4 fragment"));
    }

    #[test]
    fn rejects_length_mismatch() {
        let (p, h) = good(false, false);
        let mut q = p.clone();
        q[3] ^= 1;
        assert_eq!(err(&q, &h), Malformed("tot_len"));
        assert_eq!(err(&p[..p.len() - 1], &h), Malformed("tot_len"));
        let (p6, h6) = good(true, false);
        let mut q6 = p6.clone();
        q6[5] ^= 1;
        assert_eq!(err(&q6, &h6), Malformed("payload_len"));
        let mut long = p6.clone();
        long.push(0);
        assert_eq!(err(&long, &h6), Malformed("payload_len"));
    }

    #[test]
    fn rejects_wrong_protocol() {
        let (mut p, h) = good(false, false);
        p[9] = PROTO_UDP;
        assert_eq!(err(&p, &h), Malformed("protocol"));
        let (mut pu, hu) = good(false, true);
        pu[9] = PROTO_TCP;
        assert_eq!(err(&pu, &hu), Malformed("protocol"));
        let (mut p6, h6) = good(true, false);
        p6[6] = PROTO_UDP;
        assert_eq!(err(&p6, &h6), Malformed("protocol"));
    }

    #[test]
    fn rejects_bad_csum_start() {
        let (p, mut h) = good(false, false);
        h.csum_start = 24;
        assert_eq!(err(&p, &h), Malformed("csum_start"));
        let (p6, mut h6) = good(true, false);
        h6.csum_start = 20;
        assert_eq!(err(&p6, &h6), Malformed("csum_start"));
        // Beyond 40 without extension headers.
        h6.csum_start = 48;
        assert_eq!(err(&p6, &h6), Malformed("csum_start"));
    }

    #[test]
    fn rejects_bad_csum_offset() {
        let (p, mut h) = good(false, false);
        h.csum_offset = 6;
        assert_eq!(err(&p, &h), Malformed("csum_offset"));
        let (pu, mut hu) = good(true, true);
        hu.csum_offset = 16;
        assert_eq!(err(&pu, &hu), Malformed("csum_offset"));
    }

    #[test]
    fn rejects_short_tcp_data_offset() {
        let (mut p, h) = good(false, false);
        for doff in 0..5u8 {
            p[20 + 12] = doff << 4;
            assert_eq!(err(&p, &h), Malformed("tcp data offset"));
        }
    }

    #[test]
    fn rejects_headers_beyond_packet() {
        // TCP data offset 15 (60 bytes) but only 20 header bytes and no payload.
        let p = Pkt::new(false, false);
        let (mut b, h) = p.build_super(100);
        b[32] = 15 << 4;
        assert_eq!(err(&b, &h), Truncated);
        // IPv4 header cut short.
        assert_eq!(err(&b[..12], &h), Truncated);
        assert_eq!(err(&[], &h), Truncated);
        let (p6, h6) = good(true, false);
        assert_eq!(err(&p6[..30], &h6), Truncated);
    }

    #[test]
    fn rejects_bad_ihl() {
        let (mut p, h) = good(false, false);
        p[0] = 0x44;
        assert_eq!(err(&p, &h), Malformed("ihl"));
    }

    #[test]
    fn rejects_small_scratch() {
        let (p, h) = good(false, false);
        let mut scratch = vec![0u8; 40 + 999];
        assert_eq!(
            gso_split(&p, &h, &mut scratch, |_| panic!("emitted")),
            Err(Unsupported("scratch"))
        );
        let mut scratch = vec![0u8; 40 + 1000];
        assert_eq!(gso_split(&p, &h, &mut scratch, |_| ()), Ok(3));
    }

    #[test]
    fn rejects_source_route_and_bad_options() {
        let mut p = Pkt::tcp4(3000);
        p.ip_opts = vec![131, 3, 4, 0];
        let (b, h) = p.build_super(1000);
        assert_eq!(err(&b, &h), Unsupported("ipv4 source route"));
        p.ip_opts = vec![1, 137, 3, 4];
        let (b, h) = p.build_super(1000);
        assert_eq!(err(&b, &h), Unsupported("ipv4 source route"));
        p.ip_opts = vec![7, 0, 0, 0];
        let (b, h) = p.build_super(1000);
        assert_eq!(err(&b, &h), Malformed("ipv4 options"));
        p.ip_opts = vec![1, 7, 9, 0];
        let (b, h) = p.build_super(1000);
        assert_eq!(err(&b, &h), Malformed("ipv4 options"));
        p.ip_opts = vec![1, 1, 1, 7];
        let (b, h) = p.build_super(1000);
        assert_eq!(err(&b, &h), Malformed("ipv4 options"));
    }

    #[test]
    fn ipv4_options_are_copied() {
        let mut p = Pkt::tcp4(2500);
        // NOP, NOP, then a 6-byte unknown option (type 0x44 timestamp-like).
        p.ip_opts = vec![1, 1, 0x88, 6, 0, 0, 0, 0];
        let (b, h) = p.build_super(1000);
        let segs = split(&b, &h).unwrap();
        assert_eq!(segs, p.ref_segments(1000));
        assert!(segs.iter().all(|s| verifies(s)));
    }

    /// Inserts a hop-by-hop header (PadN) after the fixed IPv6 header.
    fn with_hop_by_hop(b: &[u8], nh: u8) -> Vec<u8> {
        let mut q = b[..40].to_vec();
        let proto = q[6];
        q[6] = nh;
        let pl = u16::from_be_bytes([q[4], q[5]]) + 8;
        q[4..6].copy_from_slice(&pl.to_be_bytes());
        q.extend_from_slice(&[proto, 0, 1, 4, 0, 0, 0, 0]);
        q.extend_from_slice(&b[40..]);
        q
    }

    #[test]
    fn ipv6_hop_by_hop_is_copied() {
        let p = Pkt::tcp6(2500);
        let (b, mut h) = p.build_super(1000);
        let b = with_hop_by_hop(&b, 0);
        h.csum_start = 48;
        let segs = split(&b, &h).unwrap();
        let want: Vec<Vec<u8>> = p
            .ref_segments(1000)
            .iter()
            .map(|s| with_hop_by_hop(s, 0))
            .collect();
        assert_eq!(segs, want);
        assert!(segs.iter().all(|s| verifies(s)));
    }

    #[test]
    fn rejects_ipv6_routing_and_fragment_headers() {
        let (b, mut h) = Pkt::tcp6(2500).build_super(1000);
        h.csum_start = 48;
        assert_eq!(
            err(&with_hop_by_hop(&b, 43), &h),
            Unsupported("ipv6 routing header")
        );
        assert_eq!(
            err(&with_hop_by_hop(&b, 44), &h),
            Malformed("ipv6 fragment")
        );
        assert_eq!(err(&with_hop_by_hop(&b, 51), &h), Malformed("csum_start"));
        h.csum_start = 40;
        assert_eq!(err(&with_hop_by_hop(&b, 0), &h), Malformed("protocol"));
    }

    #[test]
    fn empty_payload_gives_one_segment() {
        let mut p = Pkt::tcp4(0);
        p.flags = TCP_ACK | TCP_FIN;
        let (b, h) = p.build_super(1000);
        let segs = split(&b, &h).unwrap();
        assert_eq!(segs, vec![p.build()]);
    }

    // ----------------------- complete_csum -----------------------

    /// The packet as the kernel hands it over: check field = folded pseudo
    /// sum, header GSO_NONE + NEEDS_CSUM.
    fn partial(p: &Pkt) -> (Vec<u8>, VnetHdr) {
        let (b, mut h) = p.build_super(1);
        h.gso_type = GSO_NONE;
        h.gso_size = 0;
        (b, h)
    }

    #[test]
    fn complete_csum_tcp_and_udp() {
        for (v6, udp) in [(false, false), (true, false), (false, true), (true, true)] {
            for len in [0, 1, 2, 3, 100, 1401] {
                let p = Pkt {
                    payload: pattern(len, len as u64),
                    opts: if udp {
                        vec![]
                    } else {
                        vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]
                    },
                    ..Pkt::new(v6, udp)
                };
                let (mut b, h) = partial(&p);
                complete_csum(&mut b, &h).unwrap();
                assert!(verifies(&b), "v6={v6} udp={udp} len={len}");
                assert_eq!(b, p.build());
            }
        }
    }

    #[test]
    fn complete_csum_udp_zero_becomes_ffff() {
        for v6 in [false, true] {
            let mut p = Pkt {
                payload: pattern(64, 9),
                ..Pkt::new(v6, true)
            };
            // Choose the last payload word so that the checksum comes out 0.
            p.payload[62] = 0;
            p.payload[63] = 0;
            let l4 = p.l4();
            let s = reference_sum(
                &[pseudo_bytes(&p.src, &p.dst, 17, l4.len()), l4].concat(),
                0,
            );
            p.payload[62..64].copy_from_slice(&(!s).to_be_bytes());
            let (mut b, h) = partial(&p);
            complete_csum(&mut b, &h).unwrap();
            let cs = if v6 { 40 } else { 20 };
            assert_eq!(&b[cs + 6..cs + 8], &[0xff, 0xff]);
            assert!(verifies(&b));
            assert_eq!(b, p.build());
            // TCP with a checksum of 0 keeps 0 (also valid).
            let mut t = Pkt {
                payload: pattern(64, 9),
                ..Pkt::new(v6, false)
            };
            t.payload[62] = 0;
            t.payload[63] = 0;
            let l4 = t.l4();
            let s = reference_sum(&[pseudo_bytes(&t.src, &t.dst, 6, l4.len()), l4].concat(), 0);
            t.payload[62..64].copy_from_slice(&(!s).to_be_bytes());
            let (mut b, h) = partial(&t);
            complete_csum(&mut b, &h).unwrap();
            assert_eq!(&b[cs + 16..cs + 18], &[0, 0]);
            assert!(verifies(&b));
        }
    }

    #[test]
    fn complete_csum_without_needs_csum_is_a_no_op() {
        let p = Pkt::tcp4(100);
        let (b, mut h) = partial(&p);
        h.flags = 0;
        let mut c = b.clone();
        complete_csum(&mut c, &h).unwrap();
        assert_eq!(c, b);
        complete_csum(&mut c, &VnetHdr::NONE).unwrap();
        assert_eq!(c, b);
    }

    #[test]
    fn complete_csum_errors_leave_packet_alone() {
        let p = Pkt::tcp4(10);
        let (b, h) = partial(&p);
        let mut c = b.clone();
        let mut gso = h;
        gso.gso_type = GSO_TCPV4;
        assert_eq!(complete_csum(&mut c, &gso), Err(Unsupported("gso_type")));
        let mut far = h;
        far.csum_offset = (b.len() - 21) as u16; // field would end one past the end
        assert_eq!(complete_csum(&mut c, &far), Err(Truncated));
        far.csum_start = u16::MAX;
        far.csum_offset = u16::MAX;
        assert_eq!(complete_csum(&mut c, &far), Err(Truncated));
        assert_eq!(c, b);
        let mut empty: [u8; 0] = [];
        assert_eq!(complete_csum(&mut empty, &h), Err(Truncated));
    }

    // ------------------------- gso_split -------------------------

    fn split_case() -> impl Strategy<Value = (Pkt, u16)> {
        (
            any::<bool>(),
            any::<bool>(),
            0usize..=10,
            1usize..=20000,
            any::<u32>(),
            prop_oneof![any::<u32>(), (u32::MAX - 30000)..=u32::MAX],
            prop_oneof![any::<u16>(), (u16::MAX - 40)..=u16::MAX],
            any::<u8>(),
            any::<bool>(),
            any::<u64>(),
        )
            .prop_map(|(v6, udp, words, len, g, seq, id, fl, df, seed)| {
                let gso = 1 + (g as usize % len);
                let p = Pkt {
                    opts: if udp {
                        vec![]
                    } else {
                        pattern(words * 4, seed ^ 7)
                    },
                    payload: pattern(len, seed),
                    seq,
                    id,
                    df,
                    flags: TCP_ACK | (fl & (TCP_FIN | TCP_PSH | TCP_CWR)),
                    ..Pkt::new(v6, udp)
                };
                (p, gso as u16)
            })
    }

    proptest! {
        /// In-place UDP splitting gives gso_split's segments with the UDP
        /// checksum zero, and refuses what gso_split refuses.
        #[test]
        fn split_udp_in_place_matches_gso_split((p, gso) in split_case()) {
            let (b, h) = p.build_super(gso);
            let want = split(&b, &h).unwrap();
            let mut inplace = b.clone();
            let mut got = Vec::new();
            let r = split_udp_in_place(&mut inplace, &h, |s| {
                got.push(s.to_vec());
                // The consumer may scribble over its segment.
                s.fill(0xa5);
            });
            if !p.udp {
                prop_assert_eq!(r, Err(Unsupported("gso_type")));
                prop_assert!(got.is_empty());
                return Ok(());
            }
            prop_assert_eq!(r, Ok(want.len()));
            let cs = usize::from(h.csum_start);
            for (w, g) in want.iter().zip(&got) {
                let mut w = w.clone();
                w[cs + 6..cs + 8].copy_from_slice(&[0, 0]);
                prop_assert_eq!(&w, g);
            }
        }

        #[test]
        fn split_udp_in_place_never_panics(mut pkt in proptest::collection::vec(any::<u8>(), 0..400),
                                           hb in proptest::collection::vec(any::<u8>(), 10)) {
            let mut h = VnetHdr::parse(&hb).unwrap();
            h.gso_type = GSO_UDP_L4;
            let _ = split_udp_in_place(&mut pkt, &h, |s| s.fill(0));
        }

        #[test]
        fn gso_split_matches_reference((p, gso) in split_case()) {
            let (b, h) = p.build_super(gso);
            let segs = split(&b, &h).unwrap();
            let gso = usize::from(gso);
            prop_assert_eq!(segs.len(), p.payload.len().div_ceil(gso));
            let hl = usize::from(h.hdr_len);
            let mut joined = Vec::new();
            let n = segs.len();
            for (i, s) in segs.iter().enumerate() {
                let data = &s[hl..];
                if i + 1 < n {
                    prop_assert_eq!(data.len(), gso);
                }
                joined.extend_from_slice(data);
                prop_assert!(verifies(s));
                if p.v6 {
                    prop_assert_eq!(usize::from(u16::from_be_bytes([s[4], s[5]])) + 40, s.len());
                } else {
                    prop_assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), s.len());
                    prop_assert_eq!(u16::from_be_bytes([s[4], s[5]]), p.id.wrapping_add(i as u16));
                }
                let cs = usize::from(h.csum_start);
                if p.udp {
                    prop_assert_eq!(usize::from(u16::from_be_bytes([s[cs + 4], s[cs + 5]])), s.len() - cs);
                } else {
                    let seq = u32::from_be_bytes([s[cs + 4], s[cs + 5], s[cs + 6], s[cs + 7]]);
                    prop_assert_eq!(seq, p.seq.wrapping_add((i * gso) as u32));
                    let fl = s[cs + 13];
                    let last = i + 1 == n;
                    prop_assert_eq!(fl & (TCP_FIN | TCP_PSH), if last { p.flags & (TCP_FIN | TCP_PSH) } else { 0 });
                    prop_assert_eq!(fl & TCP_CWR, if i == 0 { p.flags & TCP_CWR } else { 0 });
                }
            }
            prop_assert_eq!(&joined, &p.payload);
            prop_assert_eq!(segs, p.ref_segments(gso));
        }

        #[test]
        fn complete_csum_matches_reference(v6 in any::<bool>(), udp in any::<bool>(),
                                           len in 0usize..3000, seed in any::<u64>()) {
            let p = Pkt { payload: pattern(len, seed), ..Pkt::new(v6, udp) };
            let (mut b, h) = partial(&p);
            complete_csum(&mut b, &h).unwrap();
            prop_assert_eq!(b, p.build());
        }

        #[test]
        fn header_round_trip(b in any::<[u8; 10]>()) {
            let h = VnetHdr::parse(&b).unwrap();
            prop_assert_eq!(h.to_bytes(), b);
            let mut out = [0u8; 10];
            h.emit(&mut out).unwrap();
            prop_assert_eq!(VnetHdr::parse(&out).unwrap(), h);
        }
    }

    // ------------------------- Coalescer -------------------------

    fn round_trip_case() -> impl Strategy<Value = (Pkt, u16)> {
        (
            any::<bool>(),
            0usize..=10,
            2usize..=20000,
            any::<u32>(),
            prop_oneof![any::<u32>(), (u32::MAX - 30000)..=u32::MAX],
            any::<u16>(),
            any::<bool>(),
            any::<bool>(),
            any::<u64>(),
        )
            .prop_map(|(v6, words, len, g, seq, id, psh, df, seed)| {
                // At least two segments: gso < len.
                let gso = 1 + (g as usize % (len - 1));
                let p = Pkt {
                    opts: pattern(words * 4, seed ^ 3),
                    payload: pattern(len, seed),
                    seq,
                    id,
                    df,
                    flags: TCP_ACK | if psh { TCP_PSH } else { 0 },
                    ..Pkt::new(v6, false)
                };
                (p, gso as u16)
            })
    }

    proptest! {
        #[test]
        fn coalescer_inverts_gso_split((p, gso) in round_trip_case()) {
            let (x, h) = p.build_super(gso);
            let segs = split(&x, &h).unwrap();
            prop_assert!(segs.len() >= 2);
            let (frames, st) = coalesce(&segs);
            prop_assert_eq!(frames.len(), 1);
            let f = &frames[0];
            prop_assert_eq!(&f[VNET_HDR_LEN..], &x[..]);
            let fh = VnetHdr::parse(f).unwrap();
            prop_assert_eq!(fh, h);
            prop_assert_eq!(split(&f[VNET_HDR_LEN..], &fh).unwrap(), segs.clone());
            prop_assert_eq!(st, CoalescerStats { frames: 1, merged: segs.len() as u64, passthrough: 0, dropped: 0 });
        }

        #[test]
        fn coalescer_fin_segment_is_separate((mut p, gso) in round_trip_case()) {
            p.flags |= TCP_FIN;
            let (x, h) = p.build_super(gso);
            let segs = split(&x, &h).unwrap();
            let n = segs.len();
            let (frames, _) = coalesce(&segs);
            prop_assert_eq!(frames.len(), 2);
            prop_assert_eq!(&frames[1], &plain(&segs[n - 1]));
            prop_assert_eq!(unframe(&frames[0]), segs[..n - 1].to_vec());
            if n > 2 {
                prop_assert_ne!(VnetHdr::parse(&frames[0]).unwrap(), VnetHdr::NONE);
            }
        }
    }

    #[test]
    fn merged_frame_layout() {
        let p = Pkt {
            opts: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            ..Pkt::tcp4(0)
        };
        let pkts = p.stream(&[1000, 1000, 400]);
        let f = assert_merged(&pkts);
        let h = VnetHdr::parse(&f).unwrap();
        assert_eq!(
            h,
            VnetHdr {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: 52,
                gso_size: 1000,
                csum_start: 20,
                csum_offset: 16,
            }
        );
        let ip = &f[VNET_HDR_LEN..];
        assert_eq!(ip.len(), 52 + 2400);
        assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());
        assert_eq!(reference_checksum(&ip[..20]), 0);
        let ps = reference_sum(&pseudo_bytes(&p.src, &p.dst, 6, ip.len() - 20), 0);
        assert_eq!(u16::from_be_bytes([ip[36], ip[37]]), ps);
    }

    #[test]
    fn single_packets_pass_unchanged() {
        let p = Pkt::tcp4(100);
        let pkts = vec![p.build()];
        let (frames, st) = coalesce(&pkts);
        assert_eq!(frames, vec![plain(&pkts[0])]);
        assert_eq!(
            st,
            CoalescerStats {
                frames: 1,
                merged: 0,
                passthrough: 1,
                dropped: 0
            }
        );
        // UDP, ICMP-ish garbage, empty, pure ACK: unchanged, in order.
        let udp = Pkt {
            payload: pattern(10, 1),
            ..Pkt::new(false, true)
        }
        .build();
        let ack = Pkt::tcp4(0).build();
        let junk = vec![0x45, 0, 0];
        assert_not_merged(&[udp, ack, junk, vec![], p.build()]);
    }

    #[test]
    fn merges_v6() {
        assert_merged(&Pkt::tcp6(0).stream(&[1200, 1200, 1200, 7]));
    }

    #[test]
    fn merges_v4_without_df_when_ids_increase() {
        let p = Pkt {
            df: false,
            ..Pkt::tcp4(0)
        };
        assert_merged(&p.stream(&[500, 500, 500]));
        // Same id twice without DF: not merged.
        let mut pkts = p.stream(&[500, 500]);
        let mut q = p.clone();
        q.seq += 500;
        q.payload = pattern(500, 101);
        pkts[1] = q.build();
        assert_not_merged(&pkts);
    }

    #[test]
    fn merges_v4_with_df_whatever_the_ids() {
        let p = Pkt::tcp4(0);
        let mut pkts = p.stream(&[500, 500]);
        let mut q = p.clone();
        q.seq += 500;
        q.id = 7;
        q.payload = pattern(500, 101);
        pkts[1] = q.build();
        let f = assert_merged_frames(&pkts);
        assert_eq!(&f[VNET_HDR_LEN + 4..VNET_HDR_LEN + 6], &p.id.to_be_bytes());
    }

    /// Like `assert_merged`, without requiring the split to give back the
    /// inputs byte for byte (IDs are renumbered).
    fn assert_merged_frames(pkts: &[Vec<u8>]) -> Vec<u8> {
        let (frames, st) = coalesce(pkts);
        assert_eq!(frames.len(), 1);
        assert_eq!(st.merged, pkts.len() as u64);
        frames[0].clone()
    }

    /// Two consecutive packets, the second one changed by `f` (and rebuilt
    /// with valid checksums).
    fn pair(base: &Pkt, f: impl FnOnce(&mut Pkt)) -> Vec<Vec<u8>> {
        let mut q = base.clone();
        q.payload = pattern(1000, 1);
        let first = q.build();
        q.seq = q.seq.wrapping_add(1000);
        q.id = q.id.wrapping_add(1);
        q.payload = pattern(1000, 2);
        f(&mut q);
        vec![first, q.build()]
    }

    #[test]
    fn pair_baseline_merges() {
        assert_merged(&pair(&Pkt::tcp4(0), |_| ()));
        assert_merged(&pair(&Pkt::tcp6(0), |_| ()));
    }

    #[test]
    fn gro_different_ack() {
        assert_not_merged(&pair(&Pkt::tcp4(0), |q| q.ack += 1));
        assert_not_merged(&pair(&Pkt::tcp6(0), |q| q.ack += 1));
    }

    #[test]
    fn gro_options_differ() {
        let base = Pkt {
            opts: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            ..Pkt::tcp4(0)
        };
        assert_not_merged(&pair(&base, |q| q.opts[7] = 2));
        assert_not_merged(&pair(&base, |q| q.opts.truncate(0)));
        assert_merged(&pair(&base, |_| ()));
    }

    #[test]
    fn gro_ip_fields_differ() {
        let v4 = Pkt::tcp4(0);
        assert_not_merged(&pair(&v4, |q| q.ttl -= 1));
        assert_not_merged(&pair(&v4, |q| q.tos = 0x02));
        assert_not_merged(&pair(&v4, |q| q.df = false));
        let v6 = Pkt::tcp6(0);
        assert_not_merged(&pair(&v6, |q| q.flow_label ^= 1));
        assert_not_merged(&pair(&v6, |q| q.tos = 0x03));
        assert_not_merged(&pair(&v6, |q| q.ttl = 1));
    }

    #[test]
    fn gro_ipv4_options_and_fragments() {
        let opts = Pkt {
            ip_opts: vec![1, 1, 1, 1],
            ..Pkt::tcp4(0)
        };
        assert_not_merged(&pair(&opts, |_| ()));
        let mf = Pkt {
            mf: true,
            df: false,
            ..Pkt::tcp4(0)
        };
        assert_not_merged(&pair(&mf, |_| ()));
        // A later fragment flushes the flows between its addresses first.
        let base = Pkt::tcp4(0);
        let mut pkts = base.stream(&[100, 100]);
        let frag = Pkt {
            frag_off: 100,
            df: false,
            payload: pattern(40, 3),
            ..Pkt::tcp4(0)
        };
        pkts.push(frag.build());
        let (frames, _) = coalesce(&pkts);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1], plain(&pkts[2]));
        assert_eq!(unframe(&frames[0]), pkts[..2].to_vec());
    }

    #[test]
    fn gro_ipv6_extension_headers_not_merged() {
        let p = Pkt::tcp6(0);
        let pkts: Vec<Vec<u8>> = p
            .stream(&[100, 100])
            .iter()
            .map(|b| with_hop_by_hop(b, 0))
            .collect();
        assert_not_merged(&pkts);
    }

    #[test]
    fn gro_seq_gap_and_reorder() {
        assert_not_merged(&pair(&Pkt::tcp4(0), |q| q.seq += 1));
        let mut pkts = Pkt::tcp4(0).stream(&[100, 100]);
        pkts.swap(0, 1);
        assert_not_merged(&pkts);
    }

    #[test]
    fn gro_larger_after_smaller() {
        let p = Pkt::tcp4(0);
        assert_not_merged(&p.stream(&[100, 200]));
        // After a short packet nothing more is appended.
        let pkts = p.stream(&[100, 50, 50]);
        let (frames, _) = coalesce(&pkts);
        assert_eq!(frames.len(), 2);
        assert_eq!(unframe(&frames[0]), pkts[..2].to_vec());
        assert_eq!(frames[1], plain(&pkts[2]));
    }

    #[test]
    fn gro_psh() {
        let p = Pkt::tcp4(0);
        // PSH on the head: nothing appended after it.
        assert_not_merged(&pair(
            &Pkt {
                flags: TCP_ACK | TCP_PSH,
                ..p.clone()
            },
            |q| q.flags = TCP_ACK,
        ));
        // PSH as the last one appended, ORed into the head; then a new slot.
        let mut pkts = p.stream(&[100, 100, 100]);
        let mut q = p.clone();
        q.seq += 200;
        q.id += 2;
        q.payload = pattern(100, 102);
        q.flags = TCP_ACK | TCP_PSH;
        pkts[2] = q.build();
        q.seq += 100;
        q.id += 1;
        q.flags = TCP_ACK;
        pkts.push(q.build());
        let (frames, _) = coalesce(&pkts);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0][VNET_HDR_LEN + 20 + 13], TCP_ACK | TCP_PSH);
        assert_eq!(unframe(&frames[0]), pkts[..3].to_vec());
        assert_eq!(frames[1], plain(&pkts[3]));
    }

    #[test]
    fn gro_other_flags_not_candidates() {
        for fl in [
            TCP_ACK | TCP_FIN,
            0x02,
            TCP_ACK | 0x04,
            TCP_ACK | 0x20,
            TCP_ACK | TCP_CWR,
            TCP_ACK | 0x40,
            0,
        ] {
            assert_not_merged(&pair(
                &Pkt {
                    flags: fl,
                    ..Pkt::tcp4(0)
                },
                |_| (),
            ));
        }
    }

    #[test]
    fn gro_bad_checksums() {
        let p = Pkt::tcp4(0);
        let mut pkts = p.stream(&[100, 100, 100]);
        pkts[1][60] ^= 0x40; // payload byte: TCP checksum now wrong
        let (frames, st) = coalesce(&pkts);
        assert_eq!(frames, pkts.iter().map(|b| plain(b)).collect::<Vec<_>>());
        assert_eq!(st.merged, 0);
        // A bad IPv4 header checksum, too.
        let mut pkts = p.stream(&[100, 100]);
        pkts[1][10] ^= 1;
        assert_not_merged(&pkts);
        // A bad head is not merged either (it stays a 1-packet frame).
        let mut pkts = p.stream(&[100, 100]);
        pkts[0][60] ^= 1;
        assert_not_merged(&pkts);
    }

    #[test]
    fn gro_65535_boundary() {
        let p = Pkt::tcp4(0);
        // 40 header bytes + 5 × 13099 = 65535 exactly.
        let pkts = p.stream(&[13099; 6]);
        let (frames, st) = coalesce(&pkts);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].len(), VNET_HDR_LEN + 65535);
        assert_eq!(unframe(&frames[0]), pkts[..5].to_vec());
        assert_eq!(frames[1], plain(&pkts[5]));
        assert_eq!(st.merged, 5);
        // One byte over: the fifth packet starts a new slot.
        let pkts = p.stream(&[13100, 13100, 13100, 13100, 13099, 100]);
        let (frames, _) = coalesce(&pkts);
        assert_eq!(frames.len(), 2);
        assert_eq!(unframe(&frames[0]), pkts[..4].to_vec());
        assert_eq!(unframe(&frames[1]), pkts[4..].to_vec());
        assert!(frames.iter().all(|f| f.len() <= FRAME_CAP));
    }

    #[test]
    fn gro_oversized_packet_dropped() {
        let mut c = Coalescer::new();
        let big = vec![0x45u8; MAX_IP + 1];
        c.push(&big, &mut |_: &[u8]| panic!("emitted"));
        assert_eq!(c.stats().dropped, 1);
    }

    /// The TCP payload stream of each flow (by source port) recovered from
    /// the frames, in order, checking sequence numbers are contiguous.
    fn streams(frames: &[Vec<u8>]) -> std::collections::BTreeMap<u16, Vec<u8>> {
        let mut m: std::collections::BTreeMap<u16, (u32, Vec<u8>)> = Default::default();
        for f in frames {
            for p in unframe(f) {
                let (cs, _) = l4_start(&p);
                let sport = u16::from_be_bytes([p[cs], p[cs + 1]]);
                let seq = u32::from_be_bytes([p[cs + 4], p[cs + 5], p[cs + 6], p[cs + 7]]);
                let thl = usize::from(p[cs + 12] >> 4) * 4;
                let e = m.entry(sport).or_insert((seq, Vec::new()));
                assert_eq!(e.0, seq, "flow {sport} out of order");
                e.1.extend_from_slice(&p[cs + thl..]);
                e.0 = seq.wrapping_add((p.len() - cs - thl) as u32);
            }
        }
        m.into_iter().map(|(k, (_, v))| (k, v)).collect()
    }

    #[test]
    fn gro_nine_interleaved_flows() {
        let flows: Vec<Vec<Vec<u8>>> = (0..9u16)
            .map(|i| {
                let p = Pkt {
                    sport: 1000 + i,
                    v6: i % 2 == 1,
                    ..if i % 2 == 1 {
                        Pkt::tcp6(0)
                    } else {
                        Pkt::tcp4(0)
                    }
                };
                p.stream(&[300; 6])
            })
            .collect();
        let mut input = Vec::new();
        for k in 0..6 {
            for f in &flows {
                input.push(f[k].clone());
            }
        }
        let (frames, st) = coalesce(&input);
        assert!(frames.len() > 9);
        assert_eq!(st.frames, frames.len() as u64);
        let got = streams(&frames);
        for (i, f) in flows.iter().enumerate() {
            let want: Vec<u8> = f.iter().flat_map(|b| b[b.len() - 300..].to_vec()).collect();
            assert_eq!(got[&(1000 + i as u16)], want);
        }
    }

    #[test]
    fn gro_lru_flushes_least_recently_used() {
        let ps: Vec<Pkt> = (0..9u16)
            .map(|i| Pkt {
                sport: 2000 + i,
                ..Pkt::tcp4(0)
            })
            .collect();
        let streams: Vec<Vec<Vec<u8>>> = ps.iter().map(|p| p.stream(&[100, 100])).collect();
        let mut c = Coalescer::new();
        let mut frames: Vec<Vec<u8>> = Vec::new();
        // Flows 0..8 take all slots; flow 0 then gets a second packet, so
        // flow 1 is the least recently used when flow 8 arrives.
        for s in &streams[..8] {
            c.push(&s[0], &mut |f: &[u8]| frames.push(f.to_vec()));
        }
        c.push(&streams[0][1], &mut |f: &[u8]| frames.push(f.to_vec()));
        assert!(frames.is_empty());
        c.push(&streams[8][0], &mut |f: &[u8]| frames.push(f.to_vec()));
        assert_eq!(frames, vec![plain(&streams[1][0])]);
        c.flush(&mut |f: &[u8]| frames.push(f.to_vec()));
        assert_eq!(frames.len(), 9);
        // Oldest first: flow 0 (merged) is the first of the flushed ones.
        assert_eq!(unframe(&frames[1]), streams[0].clone());
        assert_eq!(c.stats().merged, 2);
    }

    // ---------------------- model & robustness ----------------------

    /// One pushed packet: (flow, payload len, flags, corrupt, bump ack, skip seq).
    fn op() -> impl Strategy<Value = (usize, usize, u8, bool, bool, bool)> {
        (
            0usize..4,
            prop_oneof![Just(500usize), Just(500), Just(500), 0usize..600],
            prop_oneof![
                4 => Just(TCP_ACK),
                2 => Just(TCP_ACK | TCP_PSH),
                1 => Just(TCP_ACK | TCP_FIN),
                1 => Just(0x02u8),
            ],
            proptest::bool::weighted(0.05),
            proptest::bool::weighted(0.05),
            proptest::bool::weighted(0.05),
        )
    }

    proptest! {
        /// Whatever is pushed, splitting the frames gives back exactly the
        /// packets of each flow, in order.
        #[test]
        fn coalescer_preserves_every_flow(ops in proptest::collection::vec(op(), 0..200)) {
            let mut flows = [
                Pkt { sport: 1, ..Pkt::tcp4(0) },
                Pkt { sport: 2, df: false, ..Pkt::tcp4(0) },
                Pkt { sport: 3, opts: vec![1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8], ..Pkt::tcp6(0) },
                Pkt { sport: 4, seq: u32::MAX - 1000, ..Pkt::tcp6(0) },
            ];
            let mut input = Vec::new();
            for (k, (f, len, flags, corrupt, bump, skip)) in ops.into_iter().enumerate() {
                let p = &mut flows[f];
                if bump {
                    p.ack = p.ack.wrapping_add(1);
                }
                if skip {
                    p.seq = p.seq.wrapping_add(7);
                }
                p.flags = flags;
                p.payload = pattern(len, k as u64);
                let mut b = p.build();
                if corrupt {
                    let i = b.len() - 1;
                    b[i] ^= 0x10;
                }
                input.push(b);
                p.seq = p.seq.wrapping_add(len as u32);
                p.id = p.id.wrapping_add(1);
            }
            let (frames, st) = coalesce(&input);
            prop_assert!(frames.iter().all(|f| f.len() <= FRAME_CAP));
            prop_assert_eq!(st.frames, frames.len() as u64);
            let out: Vec<Vec<u8>> = frames.iter().flat_map(|f| unframe(f)).collect();
            prop_assert_eq!(out.len(), input.len());
            let sport = |b: &Vec<u8>| { let (cs, _) = l4_start(b); u16::from_be_bytes([b[cs], b[cs + 1]]) };
            for s in 1..=4u16 {
                let a: Vec<&Vec<u8>> = input.iter().filter(|b| sport(b) == s).collect();
                let b: Vec<&Vec<u8>> = out.iter().filter(|b| sport(b) == s).collect();
                prop_assert_eq!(a, b, "flow {}", s);
            }
        }

        /// Arbitrary bytes: no panic, frames within bounds, segments
        /// counted.
        #[test]
        fn arbitrary_input_never_panics(hdr in any::<[u8; 10]>(),
                                        pkt in proptest::collection::vec(any::<u8>(), 0..300),
                                        valid in any::<bool>(),
                                        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6)) {
            let (mut pkt, mut h) = if valid {
                let (b, h) = good(pkt.len() % 2 == 0, pkt.len() % 3 == 0);
                (b, h)
            } else {
                (pkt, VnetHdr::parse(&hdr).unwrap())
            };
            for (i, v) in flips {
                match i % 4 {
                    0 if !pkt.is_empty() => { let n = pkt.len(); pkt[i % n] = v; }
                    1 => h.gso_size = u16::from(v),
                    2 => h.csum_start = u16::from(v),
                    _ => h.csum_offset = u16::from(v) % 20,
                }
            }
            let mut c = pkt.clone();
            let _ = complete_csum(&mut c, &h);
            let mut none = h;
            none.gso_type = GSO_NONE;
            let _ = complete_csum(&mut c, &none);
            let mut scratch = vec![0u8; MAX_IP];
            let mut segs = Vec::new();
            if let Ok(n) = gso_split(&pkt, &h, &mut scratch, |s| segs.push(s.to_vec())) {
                prop_assert_eq!(n, segs.len());
            }
            let mut co = Coalescer::new();
            let mut frames = 0usize;
            let mut out = |f: &[u8]| { assert!(f.len() <= FRAME_CAP); frames += 1; };
            co.push(&pkt, &mut out);
            co.push(&c, &mut out);
            for s in &segs {
                prop_assert!(s.len() <= MAX_IP + 40);
                co.push(s, &mut out);
            }
            co.flush(&mut out);
            prop_assert_eq!(co.stats().frames, frames as u64);
        }
    }
}
