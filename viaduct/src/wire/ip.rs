//! IPv4 (RFC 791) and IPv6 (RFC 8200) views, enough to read addresses,
//! protocol, ports, and to write the outer header of a tunnel packet.
//!
//! `new_checked` validates: version, header length within the buffer, and
//! the declared total length equal to the buffer length (the Viaduct only sees
//! whole datagrams, so trailing bytes are rejected).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{be16, internet_checksum, WireError};

/// Byte ranges of the IPv4 header.
pub mod field4 {
    use std::ops::Range;
    /// Version and IHL.
    pub const VER_IHL: usize = 0;
    /// DSCP/ECN.
    pub const TOS: usize = 1;
    /// Total length.
    pub const LENGTH: Range<usize> = 2..4;
    /// Identification.
    pub const IDENT: Range<usize> = 4..6;
    /// Flags and fragment offset.
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    /// TTL.
    pub const TTL: usize = 8;
    /// Protocol.
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: Range<usize> = 10..12;
    /// Source address.
    pub const SRC: Range<usize> = 12..16;
    /// Destination address.
    pub const DST: Range<usize> = 16..20;
    /// Minimum header length.
    pub const HEADER_LEN: usize = 20;
}

/// Byte ranges of the IPv6 header.
pub mod field6 {
    use std::ops::Range;
    /// Version, traffic class, flow label.
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    /// Payload length.
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    /// Next header.
    pub const NEXT_HEADER: usize = 6;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source address.
    pub const SRC: Range<usize> = 8..24;
    /// Destination address.
    pub const DST: Range<usize> = 24..40;
    /// Header length.
    pub const HEADER_LEN: usize = 40;
}

/// A checked IPv4 datagram.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Validates version 4, IHL ≥ 5 within the buffer, total length == buffer length.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < field4::HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        let total = usize::from(be16(b, field4::LENGTH.start));
        if ihl < field4::HEADER_LEN || total < ihl {
            return Err(WireError::Malformed);
        }
        if total > b.len() {
            return Err(WireError::Truncated);
        }
        if total != b.len() {
            return Err(WireError::Malformed);
        }
        Ok(Ipv4Packet { buf })
    }

    /// Header length in bytes.
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[0] & 0x0f) * 4
    }
    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }
    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }
    /// Protocol number.
    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[field4::PROTOCOL]
    }
    /// TOS byte (DSCP + ECN).
    pub fn tos(&self) -> u8 {
        self.buf.as_ref()[field4::TOS]
    }
    /// Fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        be16(self.buf.as_ref(), field4::FLAGS_FRAG.start) & 0x1fff
    }
    /// The More Fragments flag.
    pub fn more_fragments(&self) -> bool {
        be16(self.buf.as_ref(), field4::FLAGS_FRAG.start) & 0x2000 != 0
    }
    /// Payload after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
}

/// A checked IPv6 datagram.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Validates version 6 and 40 + payload length == buffer length.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < field6::HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(WireError::Malformed);
        }
        let total = field6::HEADER_LEN + usize::from(be16(b, field6::PAYLOAD_LEN.start));
        if total > b.len() {
            return Err(WireError::Truncated);
        }
        if total != b.len() {
            return Err(WireError::Malformed);
        }
        Ok(Ipv6Packet { buf })
    }

    fn addr(&self, at: usize) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buf.as_ref()[at..at + 16]);
        Ipv6Addr::from(a)
    }
    /// Source address.
    pub fn src(&self) -> Ipv6Addr {
        self.addr(field6::SRC.start)
    }
    /// Destination address.
    pub fn dst(&self) -> Ipv6Addr {
        self.addr(field6::DST.start)
    }
    /// Next header of the fixed header.
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[field6::NEXT_HEADER]
    }
    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        let b = self.buf.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }
    /// Payload after the fixed header.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[field6::HEADER_LEN..]
    }

    /// Walks extension headers (hop-by-hop, routing, fragment, destination
    /// options) and returns (upper-layer protocol, its bytes, is a non-first
    /// fragment). Stops after 8 headers; never panics.
    pub fn upper_layer(&self) -> Result<(u8, &[u8], bool), WireError> {
        let u = self.upper_layer_fragment()?;
        Ok((
            u.protocol,
            u.bytes,
            matches!(u.fragment, Fragment::Later { .. }),
        ))
    }

    /// Walks the extension headers (hop-by-hop, routing, fragment,
    /// destination options) to the upper layer. In a later fragment the
    /// walk stops at the fragment header: what follows is the middle of the
    /// datagram, and its next header names the protocol. Stops after 8
    /// headers; never panics.
    pub fn upper_layer_fragment(&self) -> Result<UpperLayer<'_>, WireError> {
        let mut nh = self.next_header();
        let mut rest = self.payload();
        let mut fragment = Fragment::No;
        for _ in 0..8 {
            match nh {
                0 | 43 | 60 => {
                    if rest.len() < 8 {
                        return Err(WireError::Truncated);
                    }
                    let len = (usize::from(rest[1]) + 1) * 8;
                    if rest.len() < len {
                        return Err(WireError::Truncated);
                    }
                    nh = rest[0];
                    rest = &rest[len..];
                }
                44 => {
                    if rest.len() < 8 {
                        return Err(WireError::Truncated);
                    }
                    let off_more = be16(rest, 2);
                    let offset = usize::from(off_more & 0xfff8);
                    nh = rest[0];
                    rest = &rest[8..];
                    if offset != 0 {
                        return Ok(UpperLayer {
                            protocol: nh,
                            bytes: rest,
                            fragment: Fragment::Later { offset },
                        });
                    }
                    // Offset 0 with M clear is an atomic fragment: the whole
                    // datagram (RFC 6946).
                    if off_more & 1 != 0 {
                        fragment = Fragment::First;
                    }
                }
                _ => {
                    return Ok(UpperLayer {
                        protocol: nh,
                        bytes: rest,
                        fragment,
                    })
                }
            }
        }
        Err(WireError::Malformed)
    }
}

/// Where a datagram stands in fragmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented (an IPv6 atomic fragment counts as not fragmented).
    No,
    /// The first fragment (offset 0, more to come).
    First,
    /// A later fragment, `offset` bytes into the datagram's upper layer.
    Later {
        /// Offset in bytes.
        offset: usize,
    },
}

/// The upper layer of a datagram.
#[derive(Debug, Clone, Copy)]
pub struct UpperLayer<'a> {
    /// Protocol number (for an IPv6 later fragment: the fragment header's
    /// next header).
    pub protocol: u8,
    /// Its bytes in this datagram.
    pub bytes: &'a [u8],
    /// Fragmentation.
    pub fragment: Fragment,
}

/// The selector-relevant fields of an IP datagram. Ports are `None` when the
/// protocol has none or the datagram is a later fragment (then
/// `ports_unknown` says they exist but are elsewhere: RFC 4301's "OPAQUE").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FiveTuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Upper-layer protocol.
    pub protocol: u8,
    /// (source, destination) ports, or ICMP (type, code) as RFC 4301 §4.4.1.1.
    pub ports: Option<(u16, u16)>,
    /// The TCP flags byte, when the datagram holds a whole TCP header
    /// (20 bytes; never in a later fragment).
    pub tcp_flags: Option<u8>,
    /// A later fragment of a protocol with ports: its ports (and TCP
    /// flags) are in the first fragment, not here. A rule about ports or
    /// flags can neither match it nor be skipped by it
    /// (`engine::Lookup::Unclassified`).
    pub ports_unknown: bool,
}

impl FiveTuple {
    /// The same flow seen from the other side.
    pub fn reversed(&self) -> FiveTuple {
        FiveTuple {
            src: self.dst,
            dst: self.src,
            protocol: self.protocol,
            ports: self.ports.map(|(a, b)| match self.protocol {
                // ICMP type and code are not a direction's (RFC 4301 §4.4.1.1).
                1 | 58 => (a, b),
                _ => (b, a),
            }),
            tcp_flags: self.tcp_flags,
            ports_unknown: self.ports_unknown,
        }
    }
}

/// The length of the transport header that holds what selectors and the
/// filter read (ports, ICMP type and code, TCP flags), for the protocols
/// that have one: TCP 20, UDP and UDP-Lite 8, SCTP 12 (common header),
/// ICMP and ICMPv6 4 (type, code, checksum). `None`: no ports.
pub fn transport_header_len(protocol: u8) -> Option<usize> {
    match protocol {
        6 => Some(20),
        17 | 136 => Some(8),
        132 => Some(12),
        1 | 58 => Some(4),
        _ => None,
    }
}

/// Ports, TCP flags, ports unknown (a later fragment).
type Transport = (Option<(u16, u16)>, Option<u8>, bool);

/// The five-tuple's transport fields from the upper layer, and the
/// fragment rules: the header must be whole in an unfragmented datagram
/// (`Truncated`) and in a first fragment (`Fragment`: RFC 1858's tiny
/// fragment, RFC 7112 for IPv6); a later fragment must start past it
/// (`Fragment`: it would overwrite it, RFC 1858 §3.2) and has no ports
/// (`ports_unknown`). An IPv6 later fragment whose fragmentable part starts
/// with an extension header is refused (`Fragment`): its transport
/// protocol is in the first fragment only.
fn transport(protocol: u8, l4: &[u8], fragment: Fragment) -> Result<Transport, WireError> {
    const NONE: Transport = (None, None, false);
    if let Fragment::Later { offset } = fragment {
        if matches!(protocol, 0 | 43 | 44 | 60) {
            return Err(WireError::Fragment);
        }
        return match transport_header_len(protocol) {
            Some(h) if offset < h => Err(WireError::Fragment),
            Some(_) => Ok((None, None, true)),
            None => Ok(NONE),
        };
    }
    let Some(h) = transport_header_len(protocol) else {
        return Ok(NONE);
    };
    if l4.len() < h {
        return Err(match fragment {
            Fragment::First => WireError::Fragment,
            _ => WireError::Truncated,
        });
    }
    let ports = match protocol {
        1 | 58 => (u16::from(l4[0]), u16::from(l4[1])),
        _ => (be16(l4, 0), be16(l4, 2)),
    };
    let flags = (protocol == 6).then(|| l4[13]);
    Ok((Some(ports), flags, false))
}

/// The addresses and the upper layer of an IPv4 or IPv6 datagram.
fn addressed(pkt: &[u8]) -> Result<(IpAddr, IpAddr, UpperLayer<'_>), WireError> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => {
            let p = Ipv4Packet::new_checked(pkt)?;
            let fragment = match (p.frag_offset(), p.more_fragments()) {
                (0, false) => Fragment::No,
                (0, true) => Fragment::First,
                (units, _) => Fragment::Later {
                    offset: usize::from(units) * 8,
                },
            };
            let bytes = pkt
                .get(p.header_len()..p.header_len() + p.payload().len())
                .ok_or(WireError::Truncated)?;
            let u = UpperLayer {
                protocol: p.protocol(),
                bytes,
                fragment,
            };
            Ok((IpAddr::V4(p.src()), IpAddr::V4(p.dst()), u))
        }
        Some(6) => {
            let p = Ipv6Packet::new_checked(pkt)?;
            let u = p.upper_layer_fragment()?;
            // The view borrows from `p`; find the same bytes in `pkt`.
            let at = (u.bytes.as_ptr() as usize)
                .checked_sub(pkt.as_ptr() as usize)
                .ok_or(WireError::Malformed)?;
            let bytes = pkt
                .get(at..at + u.bytes.len())
                .ok_or(WireError::Truncated)?;
            let u = UpperLayer {
                protocol: u.protocol,
                bytes,
                fragment: u.fragment,
            };
            Ok((IpAddr::V6(p.src()), IpAddr::V6(p.dst()), u))
        }
        Some(_) => Err(WireError::Malformed),
        None => Err(WireError::Truncated),
    }
}

/// The upper layer of an IPv4 or IPv6 datagram: its protocol, its bytes in
/// this datagram (to the IP length, without padding) and whether the
/// datagram is a fragment.
pub fn upper_layer(pkt: &[u8]) -> Result<UpperLayer<'_>, WireError> {
    addressed(pkt).map(|(_, _, u)| u)
}

/// Parses a whole IPv4 or IPv6 datagram and extracts its five-tuple.
/// Refuses what the filter could be fooled by (see [`transport`]): a
/// transport header cut short, a tiny first fragment, a later fragment
/// overlapping the header.
pub fn five_tuple(pkt: &[u8]) -> Result<FiveTuple, WireError> {
    let (src, dst, u) = addressed(pkt)?;
    let (ports, tcp_flags, ports_unknown) = transport(u.protocol, u.bytes, u.fragment)?;
    Ok(FiveTuple {
        src,
        dst,
        protocol: u.protocol,
        ports,
        tcp_flags,
        ports_unknown,
    })
}

/// Outer header to write in front of an ESP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterRepr {
    /// Source (our outer address).
    pub src: IpAddr,
    /// Destination (peer).
    pub dst: IpAddr,
    /// TOS / traffic class: the policy's DSCP, ECN Not-ECT. Never copied
    /// from the inner packet (RFC 4301 §5.1.2.1 lets the policy decide;
    /// a copy would carry 8 bits of red's choosing in clear).
    pub tos: u8,
    /// IPv4 identification.
    pub ident: u16,
    /// Upper-layer protocol: 50 (ESP) or 17 (ESP in UDP, RFC 3948).
    pub protocol: u8,
}

impl OuterRepr {
    /// Header length for the address family (20 or 40).
    pub fn header_len(&self) -> usize {
        if self.src.is_ipv4() {
            field4::HEADER_LEN
        } else {
            field6::HEADER_LEN
        }
    }

    /// Writes the header for `payload_len` bytes of `protocol` into `buf[..header_len()]`.
    /// Returns `Err(Malformed)` for mixed families or a payload too long for
    /// the length field; `Err(Truncated)` if `buf` is shorter than the header.
    pub fn emit(&self, buf: &mut [u8], payload_len: usize) -> Result<(), WireError> {
        let hl = self.header_len();
        if buf.len() < hl {
            return Err(WireError::Truncated);
        }
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = u16::try_from(hl + payload_len).map_err(|_| WireError::Malformed)?;
                let h = &mut buf[..hl];
                h[field4::VER_IHL] = 0x45;
                h[field4::TOS] = self.tos;
                h[field4::LENGTH].copy_from_slice(&total.to_be_bytes());
                h[field4::IDENT].copy_from_slice(&self.ident.to_be_bytes());
                h[field4::FLAGS_FRAG].copy_from_slice(&[0, 0]);
                h[field4::TTL] = 64;
                h[field4::PROTOCOL] = self.protocol;
                h[field4::CHECKSUM].copy_from_slice(&[0, 0]);
                h[field4::SRC].copy_from_slice(&s.octets());
                h[field4::DST].copy_from_slice(&d.octets());
                let c = internet_checksum(h);
                h[field4::CHECKSUM].copy_from_slice(&c.to_be_bytes());
                Ok(())
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let plen = u16::try_from(payload_len).map_err(|_| WireError::Malformed)?;
                let h = &mut buf[..hl];
                let vtf = (6u32 << 28) | (u32::from(self.tos) << 20);
                h[field6::VER_TC_FLOW].copy_from_slice(&vtf.to_be_bytes());
                h[field6::PAYLOAD_LEN].copy_from_slice(&plen.to_be_bytes());
                h[field6::NEXT_HEADER] = self.protocol;
                h[field6::HOP_LIMIT] = 64;
                h[field6::SRC].copy_from_slice(&s.octets());
                h[field6::DST].copy_from_slice(&d.octets());
                Ok(())
            }
            _ => Err(WireError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outer_v4_checksum_verifies() {
        let mut b = [0u8; 20];
        OuterRepr {
            src: "198.51.100.1".parse().unwrap(),
            dst: "198.51.100.2".parse().unwrap(),
            tos: 0,
            ident: 7,
            protocol: 50,
        }
        .emit(&mut b, 100)
        .unwrap();
        assert_eq!(internet_checksum(&b), 0);
        assert_eq!(be16(&b, 2), 120);
    }

    #[test]
    fn v4_rejects_trailing_and_short() {
        let mut b = [0u8; 24];
        b[0] = 0x45;
        b[3] = 20;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
        b[3] = 28;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Truncated
        );
        b[3] = 24;
        assert!(Ipv4Packet::new_checked(&b[..]).is_ok());
    }

    /// IPv6 header + `chain` (already linked) with next header `first`.
    fn v6_with(first: u8, chain: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        b[0] = 0x60;
        b[4..6].copy_from_slice(&(chain.len() as u16).to_be_bytes());
        b[6] = first;
        b.extend_from_slice(chain);
        b
    }

    #[test]
    fn v6_later_fragment_stops_at_the_fragment_header() {
        // Fragment header (next: UDP, offset 16 bytes) followed by data that
        // looks like a destination-options header: not walked into.
        let mut chain = vec![17, 0, 0, 16, 0, 0, 0, 1];
        chain.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9]);
        let t = five_tuple(&v6_with(44, &chain)).unwrap();
        assert_eq!((t.protocol, t.ports, t.ports_unknown), (17, None, true));
        // A later fragment whose fragmentable part starts with an
        // extension header: protocol unknown, refused.
        chain[0] = 60;
        assert_eq!(five_tuple(&v6_with(44, &chain)), Err(WireError::Fragment));
    }

    #[test]
    fn fragments_and_transport_headers() {
        // IPv4 UDP first fragment with a whole header: ports known.
        let mut v4 = vec![0u8; 28];
        v4[0] = 0x45;
        v4[3] = 28;
        v4[6] = 0x20; // MF
        v4[9] = 17;
        v4[20..24].copy_from_slice(&[0, 53, 0x80, 0]);
        let t = five_tuple(&v4).unwrap();
        assert_eq!(
            (t.ports, t.ports_unknown, t.tcp_flags),
            (Some((53, 0x8000)), false, None)
        );
        // The same as TCP: the header is cut, a tiny fragment.
        v4[9] = 6;
        assert_eq!(five_tuple(&v4), Err(WireError::Fragment));
        // Not fragmented: truncated.
        v4[6] = 0;
        assert_eq!(five_tuple(&v4), Err(WireError::Truncated));
        // A later TCP fragment at 24 bytes: ports unknown; at 16: overlaps.
        v4[7] = 3;
        let t = five_tuple(&v4).unwrap();
        assert_eq!((t.ports, t.tcp_flags, t.ports_unknown), (None, None, true));
        v4[7] = 2;
        assert_eq!(five_tuple(&v4), Err(WireError::Fragment));
        // ESP (no ports) at any offset: nothing unknown.
        v4[9] = 50;
        v4[7] = 1;
        let t = five_tuple(&v4).unwrap();
        assert_eq!((t.ports, t.ports_unknown), (None, false));
        // ICMP type and code stay in place when reversed.
        let mut icmp = vec![0u8; 28];
        icmp[0] = 0x45;
        icmp[3] = 28;
        icmp[9] = 1;
        icmp[20] = 8;
        let t = five_tuple(&icmp).unwrap();
        assert_eq!(t.ports, Some((8, 0)));
        assert_eq!(t.reversed().ports, Some((8, 0)));
        // An atomic IPv6 fragment (offset 0, M clear) is not fragmented.
        let mut chain = vec![6, 0, 0, 0, 0, 0, 0, 1];
        let mut tcp = vec![0u8; 20];
        tcp[3] = 23;
        tcp[13] = 0x02;
        chain.extend_from_slice(&tcp);
        let t = five_tuple(&v6_with(44, &chain)).unwrap();
        assert_eq!(
            (t.ports, t.tcp_flags, t.ports_unknown),
            (Some((0, 23)), Some(2), false)
        );
    }

    #[test]
    fn v6_walks_extension_headers() {
        let mut b = vec![0u8; 40 + 8 + 8];
        b[0] = 0x60;
        b[5] = 16;
        b[6] = 0; // hop-by-hop
        b[40] = 17; // next: UDP
        b[48..50].copy_from_slice(&53u16.to_be_bytes());
        b[50..52].copy_from_slice(&5353u16.to_be_bytes());
        let t = five_tuple(&b).unwrap();
        assert_eq!(t.protocol, 17);
        assert_eq!(t.ports, Some((53, 5353)));
    }
}
