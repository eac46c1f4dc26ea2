//! Segmentation of the kernel's TSO/USO super-packets (read side, docs
//! §1.4): a `TCPV4`/`TCPV6`/`UDP_L4` super-packet is validated as a whole
//! against its header, then cut into MTU-sized IP packets, each with its
//! lengths, IPv4 identification and header checksum, TCP sequence number
//! and flags, and L4 checksum written as if it had been sent alone.
//!
//! Validation comes first so that a frame is either refused before anything
//! is emitted or split completely: a consumer never sees part of a bad
//! super-packet.

use super::error::OffloadError::{self, Malformed, Truncated, Unsupported};
use super::field::{
    addr_ranges, rd16, rd32, rd8, wr16, wr32, wr8, PROTO_TCP, PROTO_UDP, TCP_CSUM_OFFSET, TCP_CWR,
    TCP_FIN, TCP_PSH, UDP_CSUM_OFFSET,
};
use super::vnet::{
    VnetHdr, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VIRTIO_NET_HDR_F_NEEDS_CSUM,
};
use crate::wire::{checksum_sum, fold, internet_checksum, pseudo_header_sum};

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
/// [`complete_csum`](super::complete_csum)); `scratch` shorter than the
/// largest segment is `Err(Unsupported("scratch"))`. A super-packet without
/// payload gives one segment of headers only.
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::offload::field::TCP_ACK;
    use crate::offload::testkit::{good, pattern, verifies, with_hop_by_hop, Pkt};
    use crate::offload::vnet::MAX_IP;
    use proptest::prelude::*;

    /// Every segment of a super-packet, through a scratch buffer large
    /// enough for any.
    pub(crate) fn split(pkt: &[u8], h: &VnetHdr) -> Result<Vec<Vec<u8>>, OffloadError> {
        let mut scratch = vec![0u8; MAX_IP + 40];
        let mut v = Vec::new();
        let n = gso_split(pkt, h, &mut scratch, |s| v.push(s.to_vec()))?;
        assert_eq!(n, v.len());
        Ok(v)
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
    }
}
