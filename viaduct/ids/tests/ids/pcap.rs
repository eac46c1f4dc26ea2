//! A minimal classic-pcap reader and writer, and the flow driver that runs
//! the engine over a capture the way the Viaduct will: per packet, and per
//! reassembled TCP stream window.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use viaduct_ids::{Engine, Packet, Proto, Reassembler, ReassemblyConfig, Scratch};

/// One end of a flow.
pub type End = (IpAddr, u16);
/// A flow, normalised: protocol, then the two ends in order.
pub type FlowKey = (Proto, End, End);

/// One transport packet of a capture.
pub struct L4 {
    pub proto: Proto,
    pub src: End,
    pub dst: End,
    /// TCP: sequence number and flags.
    pub seq: u32,
    pub flags: u8,
    pub payload: Vec<u8>,
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn be16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

fn be32(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// The packets of a classic pcap (Ethernet with VLAN and PPPoE, Linux
/// cooked, raw IP, BSD loopback; IPv4 and IPv6; TCP and UDP; the rest
/// skipped).
pub fn read(data: &[u8]) -> Vec<L4> {
    let mut out = Vec::new();
    let Some(magic) = data.get(..4) else {
        return out;
    };
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return out,
    };
    let u32_at = |i: usize| -> Option<u32> {
        let b: [u8; 4] = data.get(i..i + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let Some(linktype) = u32_at(20) else {
        return out;
    };
    let mut off = 24;
    while let Some(incl) = u32_at(off + 8) {
        let start = off + 16;
        let Some(frame) = data.get(start..start + incl as usize) else {
            break;
        };
        off = start + incl as usize;
        let ip = match linktype {
            1 => ethernet(frame),
            113 => be16(frame, 14).and_then(|t| l3(t, frame.get(16..)?)),
            12 | 14 | 101 => frame.first().and_then(|v| match v >> 4 {
                4 => Some(frame),
                6 => Some(frame),
                _ => None,
            }),
            228 | 229 => Some(frame),
            // BSD loopback (DLT_NULL, DLT_LOOP): a 4-byte address family,
            // then the datagram (its version says which).
            0 | 108 => frame
                .get(4..)
                .filter(|f| matches!(f.first().map(|v| v >> 4), Some(4 | 6))),
            _ => None,
        };
        if let Some(p) = ip.and_then(ip_packet) {
            out.push(p);
        }
    }
    out
}

fn ethernet(f: &[u8]) -> Option<&[u8]> {
    let mut t = be16(f, 12)?;
    let mut rest = f.get(14..)?;
    while t == 0x8100 || t == 0x88a8 {
        t = be16(rest, 2)?;
        rest = rest.get(4..)?;
    }
    l3(t, rest)
}

fn l3(ethertype: u16, rest: &[u8]) -> Option<&[u8]> {
    match ethertype {
        0x0800 | 0x86dd => Some(rest),
        // PPPoE session: 6-byte header, then the PPP protocol.
        0x8864 => match be16(rest, 6)? {
            0x0021 | 0x0057 => rest.get(8..),
            _ => None,
        },
        _ => None,
    }
}

fn ip_packet(ip: &[u8]) -> Option<L4> {
    let (src, dst, proto, l4) = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip.first()? & 15) * 4;
            let total = usize::from(be16(ip, 2)?);
            // A truncated packet is invalid: Suricata's decoder drops it.
            if total > ip.len() {
                return None;
            }
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            // Skip fragments other than the first.
            if be16(ip, 6)? & 0x1fff != 0 {
                return None;
            }
            (
                IpAddr::from(s),
                IpAddr::from(d),
                *ip.get(9)?,
                ip.get(ihl..total)?,
            )
        }
        6 => {
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            let plen = usize::from(be16(ip, 4)?);
            (
                IpAddr::from(s),
                IpAddr::from(d),
                *ip.get(6)?,
                ip.get(40..40 + plen)?,
            )
        }
        _ => return None,
    };
    match proto {
        6 => {
            let doff = usize::from(l4.get(12)? >> 4) * 4;
            Some(L4 {
                proto: Proto::Tcp,
                src: (src, be16(l4, 0)?),
                dst: (dst, be16(l4, 2)?),
                seq: be32(l4, 4)?,
                flags: *l4.get(13)?,
                payload: l4.get(doff..)?.to_vec(),
            })
        }
        17 => Some(L4 {
            proto: Proto::Udp,
            src: (src, be16(l4, 0)?),
            dst: (dst, be16(l4, 2)?),
            seq: 0,
            flags: 0,
            payload: l4.get(8..usize::from(be16(l4, 4)?))?.to_vec(),
        }),
        _ => None,
    }
}

/// The normalised key of a packet's flow.
pub fn key(proto: Proto, a: End, b: End) -> FlowKey {
    if a <= b {
        (proto, a, b)
    } else {
        (proto, b, a)
    }
}

struct Flow {
    client: End,
    synack: bool,
    established: bool,
    seen_both: bool,
    streams: [Reassembler; 2],
}

/// Runs the engine over the packets: the set of (flow, sid) that alerted.
pub fn run(e: &Engine, pkts: &[L4]) -> BTreeSet<(FlowKey, u32)> {
    let cfg = ReassemblyConfig::for_engine(e);
    let mut flows: HashMap<FlowKey, Flow> = HashMap::new();
    let mut scratch = Scratch::default();
    let mut hits = Vec::new();
    let mut alerts = BTreeSet::new();
    for p in pkts {
        let k = key(p.proto, p.src, p.dst);
        let f = flows.entry(k).or_insert_with(|| Flow {
            // The first SYN (without ACK) names the client; else the first packet.
            client: if p.flags & (SYN | ACK) == SYN || p.proto != Proto::Tcp {
                p.src
            } else if p.flags & (SYN | ACK) == SYN | ACK {
                p.dst
            } else {
                p.src
            },
            synack: false,
            established: false,
            seen_both: false,
            streams: [Reassembler::new(cfg), Reassembler::new(cfg)],
        });
        let to_server = p.src == f.client;
        let dir = usize::from(!to_server);
        if p.proto == Proto::Tcp {
            if p.flags & SYN != 0 {
                f.streams[dir].syn(p.seq);
                if !to_server && p.flags & ACK != 0 {
                    f.synack = true;
                }
            } else if to_server && f.synack && p.flags & ACK != 0 {
                f.established = true;
            }
        } else if !to_server {
            f.seen_both = true;
        }
        let established = if p.proto == Proto::Tcp {
            f.established
        } else {
            f.seen_both
        };
        if p.payload.is_empty() {
            continue;
        }
        let pkt = Packet {
            proto: p.proto,
            src: p.src.0,
            dst: p.dst.0,
            src_port: p.src.1,
            dst_port: p.dst.1,
            to_server,
            established,
            dsize: p.payload.len(),
        };
        hits.clear();
        e.inspect_with(
            &mut scratch,
            &pkt,
            viaduct_ids::Buffer::packet(&p.payload),
            &mut hits,
        );
        if p.proto == Proto::Tcp {
            let seq = if p.flags & SYN != 0 {
                p.seq.wrapping_add(1)
            } else {
                p.seq
            };
            if let Some(w) = f.streams[dir].segment(seq, &p.payload) {
                e.inspect_with(&mut scratch, &pkt, w.buffer(), &mut hits);
            }
        }
        alerts.extend(hits.iter().map(|h| (k, h.sid)));
    }
    alerts
}

/// Writes a pcap (Ethernet, IPv4) of TCP packets.
pub struct Writer {
    pub bytes: Vec<u8>,
    t: u32,
}

impl Writer {
    pub fn new() -> Self {
        let mut bytes = Vec::new();
        for v in [0xa1b2c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        // The version is two u16s: fix the layout written above.
        bytes[4..8].copy_from_slice(&[2, 0, 4, 0]);
        Writer {
            bytes,
            t: 1_000_000,
        }
    }

    /// One TCP segment from `s` to `d`.
    pub fn tcp(
        &mut self,
        s: ([u8; 4], u16),
        d: ([u8; 4], u16),
        seq: u32,
        ack: u32,
        flags: u8,
        data: &[u8],
    ) {
        let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&s.0);
        ip.extend_from_slice(&d.0);
        let total = (20 + 20 + data.len()) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let mut sum = 0u32;
        for c in ip.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        ip.extend_from_slice(&s.1.to_be_bytes());
        ip.extend_from_slice(&d.1.to_be_bytes());
        ip.extend_from_slice(&seq.to_be_bytes());
        ip.extend_from_slice(&ack.to_be_bytes());
        ip.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        ip.extend_from_slice(data);
        let mut frame = vec![0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 6, 0x08, 0x00];
        frame.extend_from_slice(&ip);
        self.t += 1;
        for v in [self.t, 0, frame.len() as u32, frame.len() as u32] {
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
        self.bytes.extend_from_slice(&frame);
    }

    /// A connection from client port `cport` to port 80: handshake, the
    /// client's segments (offset in the stream, bytes) each acked by the
    /// server up to the contiguous end, then FIN both ways.
    pub fn conversation(&mut self, cport: u16, segs: &[(u32, &[u8])]) {
        let c = ([10, 1, 0, 1], cport);
        let s = ([10, 1, 0, 2], 80);
        let (ci, si) = (1000u32, 5000u32);
        self.tcp(c, s, ci, 0, SYN, &[]);
        self.tcp(s, c, si, ci + 1, SYN | ACK, &[]);
        self.tcp(c, s, ci + 1, si + 1, ACK, &[]);
        let mut have: Vec<(u32, u32)> = Vec::new();
        let mut contiguous = 0u32;
        for &(off, data) in segs {
            self.tcp(c, s, ci + 1 + off, si + 1, ACK | 0x08, data);
            have.push((off, off + data.len() as u32));
            have.sort();
            for &(a, b) in &have {
                if a <= contiguous {
                    contiguous = contiguous.max(b);
                }
            }
            self.tcp(s, c, si + 1, ci + 1 + contiguous, ACK, &[]);
        }
        let fin = ci + 1 + contiguous;
        self.tcp(c, s, fin, si + 1, ACK | 0x01, &[]);
        self.tcp(s, c, si + 1, fin + 1, ACK | 0x01, &[]);
        self.tcp(c, s, fin + 1, si + 2, ACK, &[]);
    }
}
