//! Userspace GRO (write side, docs §1.6): TCP packets of one flow that
//! arrive in order are merged into one `NEEDS_CSUM` + `TCPV4`/`TCPV6` frame
//! for the kernel to cut again; everything else is written unchanged behind
//! an all-zero header, in per-flow order.
//!
//! The coalescer never emits `NEEDS_CSUM` for a packet whose IPv4 header and
//! TCP checksums it has not verified: the kernel trusts `NEEDS_CSUM` frames,
//! so merging an unverified packet would launder a corrupted one into a
//! valid-looking segment.

use super::error::OffloadError::{self, Truncated};
use super::field::{
    addr_ranges, rd16, rd32, rd8, wr16, PROTO_TCP, TCP_ACK, TCP_CSUM_OFFSET, TCP_PSH,
};
use super::vnet::{
    VnetHdr, GSO_TCPV4, GSO_TCPV6, MAX_IP, VIRTIO_NET_HDR_F_NEEDS_CSUM, VNET_HDR_LEN,
};
use crate::wire::{checksum_sum, fold, internet_checksum, pseudo_header_sum};

/// The largest frame the coalescer emits.
pub(super) const FRAME_CAP: usize = VNET_HDR_LEN + MAX_IP;
/// Number of flows the coalescer holds at once.
const SLOTS: usize = 8;

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
    use crate::offload::field::{TCP_CWR, TCP_FIN};
    use crate::offload::segment::tests::split;
    use crate::offload::testkit::{l4_start, pattern, pseudo_bytes, with_hop_by_hop, Pkt};
    use crate::wire::tests::{reference_checksum, reference_sum};
    use proptest::prelude::*;

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
    }
}
