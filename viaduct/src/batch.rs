//! UDP segmentation batches for black: consecutive ESP-in-UDP datagrams of
//! one tunnel and equal size become one `GSO_UDP_L4` frame (one write), which
//! crosses the black personality's forwarding path as one packet and is cut
//! into datagrams by the kernel only where it must be (docs/design/
//! viaduct-throughput.md §2, option E).
//!
//! The frame is `[virtio_net_hdr][IP header][UDP header][payload 1]…[payload
//! n]`: every payload is `gso_size` bytes except the last, which may be
//! shorter. The header says `NEEDS_CSUM` with `csum_start` at the UDP header
//! and `csum_offset` 6, and the UDP checksum field holds the folded
//! pseudo-header sum, as `virtio_net_hdr_to_skb` requires for `UDP_L4`; the
//! kernel then writes each datagram's length, IPv4 ID and UDP checksum.
//!
//! A datagram joins the open batch when its IP and UDP headers equal the
//! batch's (apart from lengths, ID and checksums), its payload is not longer
//! than `gso_size`, the batch did not already end with a shorter payload,
//! and the frame stays within 65 535 bytes of IP and [`MAX_SEGMENTS`]
//! datagrams. Anything else (another size or tunnel, a non-UDP packet, IPv4
//! options, IPv6 extension headers) flushes the batch first, so the order of
//! packets on black is the order the engine produced them.
//!
//! Sans-IO: `push` and `flush` hand finished frames to a callback. No
//! allocation after [`UdpBatch::new`]; nothing here panics.

use crate::offload::{VnetHdr, GSO_UDP_L4, VIRTIO_NET_HDR_F_NEEDS_CSUM, VNET_HDR_LEN};
use crate::wire::{fold, internet_checksum, pseudo_header_sum};

/// Most datagrams in one frame (the kernel accepts up to `UDP_MAX_SEGMENTS`,
/// 64 on older kernels, 128 on newer ones).
pub const MAX_SEGMENTS: usize = 64;
/// Largest IP packet (IPv4 total length / IPv6 payload length limit).
const MAX_IP: usize = 65_535;
const UDP_HDR: usize = 8;
const UDP: u8 = 17;

/// Counters of a [`UdpBatch`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// Frames emitted.
    pub frames: u64,
    /// Frames that carried more than one datagram (`GSO_UDP_L4`).
    pub gso_frames: u64,
    /// Datagrams carried in those frames.
    pub gso_datagrams: u64,
}

/// One open batch and its frame buffer.
#[derive(Debug)]
pub struct UdpBatch {
    frame: Vec<u8>,
    /// Bytes of `frame` in use (0 = no batch open).
    used: usize,
    /// IP header length of the open batch.
    iphl: usize,
    /// Payload bytes per datagram (the first one's).
    seg: usize,
    count: usize,
    /// The last payload was shorter than `seg`: nothing more may join.
    closed: bool,
    stats: BatchStats,
}

impl Default for UdpBatch {
    fn default() -> Self {
        Self::new()
    }
}

/// IP header length of a UDP datagram the batch can carry: IPv4 without
/// options or fragmentation, IPv6 with UDP as the first next header.
/// `None` for anything else.
fn udp_header_len(pkt: &[u8]) -> Option<usize> {
    match pkt.first()? >> 4 {
        4 => {
            let h = pkt.get(..20)?;
            let frag = u16::from_be_bytes([h[6], h[7]]) & 0x3fff;
            (h[0] == 0x45 && h[9] == UDP && frag == 0).then_some(20)
        }
        6 => {
            let h = pkt.get(..40)?;
            (h[6] == UDP).then_some(40)
        }
        _ => None,
    }
}

/// Whether `a` and `b` (both UDP datagrams with IP header length `iphl`)
/// have equal headers apart from the lengths, the IPv4 ID and checksums.
fn same_flow(a: &[u8], b: &[u8], iphl: usize) -> bool {
    let eq = |r: std::ops::Range<usize>| a.get(r.clone()).is_some() && a.get(r.clone()) == b.get(r);
    let ip = if iphl == 20 {
        // version/IHL/TOS, flags/fragment/TTL/protocol, addresses.
        eq(0..2) && eq(6..10) && eq(12..20)
    } else {
        // version/traffic class/flow label, next header/hop limit, addresses.
        eq(0..4) && eq(6..40)
    };
    // UDP ports.
    ip && eq(iphl..iphl + 4)
}

impl UdpBatch {
    /// An empty batch with its frame buffer (64 KiB + header).
    pub fn new() -> UdpBatch {
        UdpBatch {
            frame: vec![0u8; VNET_HDR_LEN + MAX_IP],
            used: 0,
            iphl: 0,
            seg: 0,
            count: 0,
            closed: false,
            stats: BatchStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> BatchStats {
        self.stats
    }

    /// Offers one IP packet for black. It joins the open batch, opens a new
    /// one (after flushing), or, if no batch can carry it, is emitted alone
    /// behind a zero header (after flushing). Frames go to `out`.
    pub fn push(&mut self, pkt: &[u8], out: &mut impl FnMut(&[u8])) {
        let Some(iphl) = udp_header_len(pkt) else {
            self.flush(out);
            self.emit_alone(pkt, out);
            return;
        };
        let payload = pkt.len().saturating_sub(iphl + UDP_HDR);
        if payload == 0 || pkt.len() > MAX_IP {
            self.flush(out);
            self.emit_alone(pkt, out);
            return;
        }
        if self.used != 0 {
            let head = &self.frame[VNET_HDR_LEN..VNET_HDR_LEN + iphl + UDP_HDR];
            let fits = iphl == self.iphl
                && !self.closed
                && payload <= self.seg
                && self.count < MAX_SEGMENTS
                && self.used - VNET_HDR_LEN + payload <= MAX_IP
                && same_flow(head, pkt, iphl);
            if fits {
                let start = iphl + UDP_HDR;
                self.frame[self.used..self.used + payload].copy_from_slice(&pkt[start..]);
                self.used += payload;
                self.count += 1;
                self.closed = payload < self.seg;
                return;
            }
            self.flush(out);
        }
        self.frame[VNET_HDR_LEN..VNET_HDR_LEN + pkt.len()].copy_from_slice(pkt);
        self.used = VNET_HDR_LEN + pkt.len();
        self.iphl = iphl;
        self.seg = payload;
        self.count = 1;
        self.closed = false;
    }

    /// Emits the open batch, if any: one datagram as it came (zero header),
    /// several as one `GSO_UDP_L4` frame.
    pub fn flush(&mut self, out: &mut impl FnMut(&[u8])) {
        if self.used == 0 {
            return;
        }
        let used = std::mem::take(&mut self.used);
        if self.count == 1 {
            self.frame[..VNET_HDR_LEN].copy_from_slice(&VnetHdr::NONE.to_bytes());
        } else if self.finish_gso(used).is_err() {
            // Cannot happen (lengths were checked on push); never emit a
            // frame with inconsistent headers.
            return;
        }
        self.stats.frames += 1;
        if self.count > 1 {
            self.stats.gso_frames += 1;
            self.stats.gso_datagrams += self.count as u64;
        }
        out(&self.frame[..used]);
    }

    /// Writes the lengths, checksums and the vnet header of a multi-datagram
    /// frame of `used` bytes.
    fn finish_gso(&mut self, used: usize) -> Result<(), std::num::TryFromIntError> {
        let iphl = self.iphl;
        let ip_len = used - VNET_HDR_LEN;
        let udp_len = u16::try_from(ip_len - iphl)?;
        let pkt = &mut self.frame[VNET_HDR_LEN..used];
        if iphl == 20 {
            pkt[2..4].copy_from_slice(&u16::try_from(ip_len)?.to_be_bytes());
            pkt[10..12].copy_from_slice(&[0, 0]);
            let c = internet_checksum(&pkt[..20]);
            pkt[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            pkt[4..6].copy_from_slice(&udp_len.to_be_bytes());
        }
        pkt[iphl + 4..iphl + 6].copy_from_slice(&udp_len.to_be_bytes());
        let (src, dst) = if iphl == 20 {
            (&pkt[12..16], &pkt[16..20])
        } else {
            (&pkt[8..24], &pkt[24..40])
        };
        let pseudo = fold(pseudo_header_sum(src, dst, UDP, u32::from(udp_len)));
        pkt[iphl + 6..iphl + 8].copy_from_slice(&pseudo.to_be_bytes());
        let hdr = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: u16::try_from(iphl + UDP_HDR)?,
            gso_size: u16::try_from(self.seg)?,
            csum_start: u16::try_from(iphl)?,
            csum_offset: 6,
        };
        self.frame[..VNET_HDR_LEN].copy_from_slice(&hdr.to_bytes());
        Ok(())
    }

    fn emit_alone(&mut self, pkt: &[u8], out: &mut impl FnMut(&[u8])) {
        let Some(dst) = self.frame.get_mut(VNET_HDR_LEN..VNET_HDR_LEN + pkt.len()) else {
            return;
        };
        dst.copy_from_slice(pkt);
        self.frame[..VNET_HDR_LEN].copy_from_slice(&VnetHdr::NONE.to_bytes());
        self.stats.frames += 1;
        out(&self.frame[..VNET_HDR_LEN + pkt.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::{gso_split, GSO_NONE};
    use proptest::prelude::*;

    fn udp4(id: u16, payload: &[u8], dport: u16) -> Vec<u8> {
        let total = 28 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[203, 0, 113, 1]);
        p[16..20].copy_from_slice(&[203, 0, 113, 2]);
        let c = internet_checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20..22].copy_from_slice(&4500u16.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p[28..].copy_from_slice(payload);
        p
    }

    fn udp6(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 48 + payload.len()];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p[6] = 17;
        p[7] = 64;
        p[8] = 0x20;
        p[23] = 1;
        p[24] = 0x20;
        p[39] = 2;
        p[40..42].copy_from_slice(&4500u16.to_be_bytes());
        p[42..44].copy_from_slice(&4500u16.to_be_bytes());
        p[44..46].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p[48..].copy_from_slice(payload);
        p
    }

    /// Pushes all, flushes, returns the frames.
    fn run(pkts: &[Vec<u8>]) -> (Vec<Vec<u8>>, BatchStats) {
        let mut b = UdpBatch::new();
        let mut frames = Vec::new();
        for p in pkts {
            b.push(p, &mut |f: &[u8]| frames.push(f.to_vec()));
        }
        b.flush(&mut |f: &[u8]| frames.push(f.to_vec()));
        (frames, b.stats())
    }

    /// Cuts frames back into packets (as the kernel would) and returns the
    /// UDP payloads with their ports, in order.
    fn payloads(frames: &[Vec<u8>]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let mut scratch = vec![0u8; 65_535];
        for f in frames {
            let h = VnetHdr::parse(f).unwrap();
            let pkt = &f[VNET_HDR_LEN..];
            let mut take = |p: &[u8]| {
                let hl = if p[0] >> 4 == 4 { 20 } else { 40 };
                out.push((p[hl..hl + 4].to_vec(), p[hl + 8..].to_vec()));
            };
            if h.gso_type == GSO_NONE {
                take(pkt);
            } else {
                gso_split(pkt, &h, &mut scratch, |s| take(s)).unwrap();
            }
        }
        out
    }

    #[test]
    fn equal_datagrams_become_one_gso_frame_with_a_short_last() {
        let pkts: Vec<Vec<u8>> = (0..5u16)
            .map(|i| udp4(i, &vec![i as u8; if i == 4 { 100 } else { 1000 }], 4500))
            .collect();
        let (frames, st) = run(&pkts);
        assert_eq!(frames.len(), 1);
        let f = &frames[0];
        let h = VnetHdr::parse(f).unwrap();
        assert_eq!(h.gso_type, GSO_UDP_L4);
        assert_eq!(h.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert_eq!(
            (h.gso_size, h.csum_start, h.csum_offset, h.hdr_len),
            (1000, 20, 6, 28)
        );
        let ip = &f[VNET_HDR_LEN..];
        assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());
        assert_eq!(internet_checksum(&ip[..20]), 0, "IPv4 header checksum");
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[24], ip[25]])),
            ip.len() - 20
        );
        let pseudo = fold(pseudo_header_sum(
            &ip[12..16],
            &ip[16..20],
            17,
            (ip.len() - 20) as u32,
        ));
        assert_eq!(u16::from_be_bytes([ip[26], ip[27]]), pseudo);
        assert_eq!(
            st,
            BatchStats {
                frames: 1,
                gso_frames: 1,
                gso_datagrams: 5
            }
        );
        let got = payloads(&frames);
        assert_eq!(got.len(), 5);
        for (i, (_, p)) in got.iter().enumerate() {
            assert_eq!(p, &pkts[i][28..]);
        }
    }

    #[test]
    fn a_short_datagram_closes_the_batch_and_a_longer_one_starts_another() {
        let pkts = vec![
            udp4(1, &[1; 500], 4500),
            udp4(2, &[2; 300], 4500),
            udp4(3, &[3; 300], 4500),
            udp4(4, &[4; 600], 4500),
            udp4(5, &[5; 600], 4500),
        ];
        let (frames, st) = run(&pkts);
        assert_eq!(frames.len(), 3);
        assert_eq!(st.gso_frames, 2);
        let got: Vec<Vec<u8>> = payloads(&frames).into_iter().map(|x| x.1).collect();
        let want: Vec<Vec<u8>> = pkts.iter().map(|p| p[28..].to_vec()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn other_flows_and_non_udp_flush_in_order() {
        let mut tcp = udp4(9, &[7; 40], 4500);
        tcp[9] = 6;
        let mut opts = udp4(10, &[8; 40], 4500);
        opts[0] = 0x46;
        let mut frag = udp4(11, &[9; 40], 4500);
        frag[6] = 0x20;
        let pkts = vec![
            udp4(1, &[1; 100], 4500),
            udp4(2, &[2; 100], 53),
            udp4(3, &[3; 100], 53),
            tcp.clone(),
            udp4(4, &[4; 100], 4500),
            opts.clone(),
            frag.clone(),
            udp6(&[5; 100]),
            udp6(&[6; 100]),
            vec![0x45],
        ];
        let (frames, st) = run(&pkts);
        // [1] [2,3] tcp [4] opts frag [5,6] junk
        assert_eq!(frames.len(), 8);
        assert_eq!(st.gso_frames, 2);
        assert_eq!(&frames[2][VNET_HDR_LEN..], &tcp[..]);
        assert_eq!(&frames[4][VNET_HDR_LEN..], &opts[..]);
        assert_eq!(&frames[5][VNET_HDR_LEN..], &frag[..]);
        assert_eq!(&frames[7][VNET_HDR_LEN..], &[0x45]);
        for f in [&frames[0], &frames[2], &frames[3], &frames[7]] {
            assert_eq!(&f[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
        }
        let h = VnetHdr::parse(&frames[6]).unwrap();
        assert_eq!(
            (h.gso_type, h.csum_start, h.gso_size),
            (GSO_UDP_L4, 40, 100)
        );
    }

    #[test]
    fn limits_on_segments_and_size() {
        let pkts: Vec<Vec<u8>> = (0..(MAX_SEGMENTS as u16 + 3))
            .map(|i| udp4(i, &[1; 10], 4500))
            .collect();
        let (frames, _) = run(&pkts);
        assert_eq!(frames.len(), 2);
        let big: Vec<Vec<u8>> = (0..50u16).map(|i| udp4(i, &[2; 1400], 4500)).collect();
        let (frames, _) = run(&big);
        for f in &frames {
            assert!(f.len() - VNET_HDR_LEN <= 65_535);
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(payloads(&frames).len(), 50);
    }

    proptest! {
        #[test]
        fn any_sequence_comes_back_in_order(
            sizes in proptest::collection::vec((0usize..1500, 0u8..3), 0..200)
        ) {
            let pkts: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &(n, kind))| {
                    let body: Vec<u8> = (0..n).map(|j| (i + j) as u8).collect();
                    match kind {
                        0 => udp4(i as u16, &body, 4500),
                        1 => udp4(i as u16, &body, 4501),
                        _ => udp6(&body),
                    }
                })
                .collect();
            let (frames, st) = run(&pkts);
            prop_assert_eq!(st.frames as usize, frames.len());
            let got: Vec<Vec<u8>> = payloads(&frames).into_iter().map(|x| x.1).collect();
            let want: Vec<Vec<u8>> = pkts
                .iter()
                .map(|p| p[if p[0] >> 4 == 4 { 28 } else { 48 }..].to_vec())
                .collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(pkts in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..200), 0..20)) {
            let _ = run(&pkts);
        }
    }
}
