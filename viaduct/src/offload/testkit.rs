//! The tests' reference packets: a builder for TCP and UDP packets over IPv4
//! and IPv6 with every header field settable, a naive segmenter, and a
//! checker, all computing checksums byte pair by byte pair
//! ([`crate::wire::tests::reference_checksum`]) so that they share no code
//! with what they check.

use super::field::{PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_CWR, TCP_FIN, TCP_PSH};
use super::vnet::{VnetHdr, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VIRTIO_NET_HDR_F_NEEDS_CSUM};
use crate::wire::tests::{reference_checksum, reference_sum};

/// Every field of a TCP or UDP packet over IPv4 or IPv6.
#[derive(Clone, Debug)]
pub(super) struct Pkt {
    pub(super) v6: bool,
    pub(super) udp: bool,
    pub(super) src: Vec<u8>,
    pub(super) dst: Vec<u8>,
    pub(super) tos: u8,
    pub(super) ttl: u8,
    pub(super) id: u16,
    pub(super) df: bool,
    pub(super) mf: bool,
    pub(super) frag_off: u16,
    pub(super) ip_opts: Vec<u8>,
    pub(super) flow_label: u32,
    pub(super) sport: u16,
    pub(super) dport: u16,
    pub(super) seq: u32,
    pub(super) ack: u32,
    pub(super) flags: u8,
    pub(super) window: u16,
    pub(super) opts: Vec<u8>,
    pub(super) payload: Vec<u8>,
}

pub(super) fn pattern(len: usize, seed: u64) -> Vec<u8> {
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

pub(super) fn pseudo_bytes(src: &[u8], dst: &[u8], proto: u8, len: usize) -> Vec<u8> {
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
pub(super) fn ref_l4_check(src: &[u8], dst: &[u8], proto: u8, l4: &[u8]) -> u16 {
    let mut b = pseudo_bytes(src, dst, proto, l4.len());
    b.extend_from_slice(l4);
    reference_checksum(&b)
}

impl Pkt {
    pub(super) fn new(v6: bool, udp: bool) -> Pkt {
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
    pub(super) fn tcp4(payload: usize) -> Pkt {
        Pkt {
            payload: pattern(payload, 4),
            ..Pkt::new(false, false)
        }
    }
    pub(super) fn tcp6(payload: usize) -> Pkt {
        Pkt {
            payload: pattern(payload, 6),
            ..Pkt::new(true, false)
        }
    }
    pub(super) fn proto(&self) -> u8 {
        if self.udp {
            PROTO_UDP
        } else {
            PROTO_TCP
        }
    }
    pub(super) fn iphl(&self) -> usize {
        if self.v6 {
            40
        } else {
            20 + self.ip_opts.len()
        }
    }
    pub(super) fn check_at(&self) -> usize {
        if self.udp {
            6
        } else {
            16
        }
    }
    /// The L4 header and payload, checksum field zero.
    pub(super) fn l4(&self) -> Vec<u8> {
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
    pub(super) fn wrap(&self, l4: &[u8]) -> Vec<u8> {
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
    pub(super) fn build(&self) -> Vec<u8> {
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
    pub(super) fn build_super(&self, gso: u16) -> (Vec<u8>, VnetHdr) {
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
    pub(super) fn ref_segments(&self, gso: usize) -> Vec<Vec<u8>> {
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
    pub(super) fn stream(&self, sizes: &[usize]) -> Vec<Vec<u8>> {
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
pub(super) fn l4_start(p: &[u8]) -> (usize, u8) {
    if p[0] >> 4 == 4 {
        (usize::from(p[0] & 0x0f) * 4, p[9])
    } else if p[6] == 0 {
        (40 + (usize::from(p[41]) + 1) * 8, p[40])
    } else {
        (40, p[6])
    }
}

/// IPv4 header checksum (true for v6) and L4 checksum verify.
pub(super) fn verifies(p: &[u8]) -> bool {
    let (cs, proto) = l4_start(p);
    let (s, d) = if p[0] >> 4 == 4 {
        (&p[12..16], &p[16..20])
    } else {
        (&p[8..24], &p[24..40])
    };
    let ip_ok = p[0] >> 4 == 6 || reference_checksum(&p[..cs]) == 0;
    ip_ok && ref_l4_check(s, d, proto, &p[cs..]) == 0
}

/// A valid super-packet: 3000 payload bytes in segments of 1000.
pub(super) fn good(v6: bool, udp: bool) -> (Vec<u8>, VnetHdr) {
    Pkt {
        payload: pattern(3000, 1),
        ..Pkt::new(v6, udp)
    }
    .build_super(1000)
}

/// Inserts a hop-by-hop header (PadN) after the fixed IPv6 header.
pub(super) fn with_hop_by_hop(b: &[u8], nh: u8) -> Vec<u8> {
    let mut q = b[..40].to_vec();
    let proto = q[6];
    q[6] = nh;
    let pl = u16::from_be_bytes([q[4], q[5]]) + 8;
    q[4..6].copy_from_slice(&pl.to_be_bytes());
    q.extend_from_slice(&[proto, 0, 1, 4, 0, 0, 0, 0]);
    q.extend_from_slice(&b[40..]);
    q
}
