//! Traffic Selector payloads TSi and TSr (RFC 7296 §3.13).
//!
//! ```text
//! TS payload:  Number of TSs(1) RESERVED(3) Traffic Selectors...
//! Selector:    TS Type(1) IP Protocol ID(1) Selector Length(2)
//!              Start Port(2) End Port(2) Starting Address End Address
//! ```
//!
//! [`TsPayload::new_checked`] requires: Number of TSs equal to the selectors
//! present, each Selector Length within the payload, no bytes after the last;
//! TS_IPV4_ADDR_RANGE (7) exactly 16 bytes and TS_IPV6_ADDR_RANGE (8) 40;
//! Start Port ≤ End Port except the OPAQUE ports (65535, 0) of §3.13.1;
//! starting address ≤ ending address. A selector of another type (e.g.
//! TS_SECLABEL, RFC 9478) is carried as opaque bytes for the exchange to
//! answer TS_UNACCEPTABLE.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::error::{EncodeError, Error, Location, Part, Problem};
use super::payload::body_codec;
use super::types::{registry, PayloadType};
use super::{be16, byte, slice, tail, Writer};

/// Byte ranges of the TS payload body.
#[allow(dead_code)] // the whole layout, not every field is read
mod field {
    use std::ops::Range;
    /// Number of TSs.
    pub const COUNT: usize = 0;
    /// Reserved.
    pub const RESERVED: Range<usize> = 1..4;
    /// Start of the selectors.
    pub const SELECTORS: usize = 4;
}

/// Byte ranges of a traffic selector.
#[allow(dead_code)] // the whole layout, not every field is read
mod selector_field {
    use std::ops::Range;
    /// TS Type.
    pub const TS_TYPE: usize = 0;
    /// IP Protocol ID (0: any).
    pub const IP_PROTOCOL: usize = 1;
    /// Selector Length.
    pub const LENGTH: Range<usize> = 2..4;
    /// Start Port.
    pub const START_PORT: Range<usize> = 4..6;
    /// End Port.
    pub const END_PORT: Range<usize> = 6..8;
    /// Starting Address (then the Ending Address).
    pub const ADDRESSES: usize = 8;
}

const SELECTOR_HEADER_LEN: usize = 4;
const V4_LEN: usize = 16;
const V6_LEN: usize = 40;

registry! {
    /// TS Type (§3.13.1; IANA "IKEv2 Traffic Selector Types").
    TsType(u8) {
        /// A range of IPv4 addresses.
        IPV4_ADDR_RANGE = 7 => "TS_IPV4_ADDR_RANGE",
        /// A range of IPv6 addresses.
        IPV6_ADDR_RANGE = 8 => "TS_IPV6_ADDR_RANGE",
        /// A security label (RFC 9478).
        SECLABEL = 10 => "TS_SECLABEL",
    }
}

/// An address-range traffic selector: protocol, ports and addresses, both
/// addresses of one family. `(65535, 0)` as ports means OPAQUE (§3.13.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// IP protocol (0: any).
    pub ip_protocol: u8,
    /// Start Port.
    pub start_port: u16,
    /// End Port.
    pub end_port: u16,
    /// Starting address.
    pub start: IpAddr,
    /// Ending address (same family, not below `start`).
    pub end: IpAddr,
}

impl TrafficSelector {
    /// The TS Type of this selector's address family.
    pub fn ts_type(&self) -> TsType {
        match self.start {
            IpAddr::V4(_) => TsType::IPV4_ADDR_RANGE,
            IpAddr::V6(_) => TsType::IPV6_ADDR_RANGE,
        }
    }

    /// Whether the ports are OPAQUE (§3.13.1).
    pub fn opaque_ports(&self) -> bool {
        (self.start_port, self.end_port) == (u16::MAX, 0)
    }
}

/// A selector of a checked TS payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector<'a> {
    /// TS_IPV4_ADDR_RANGE or TS_IPV6_ADDR_RANGE.
    Range(TrafficSelector),
    /// Any other type: its type and the bytes after the Selector Length.
    Other {
        /// TS Type.
        ts_type: TsType,
        /// The selector after its first four bytes.
        data: &'a [u8],
    },
}

fn v4(b: &[u8], at: usize) -> Ipv4Addr {
    b.get(at..)
        .and_then(|r| r.first_chunk::<4>())
        .map_or(Ipv4Addr::UNSPECIFIED, |a| Ipv4Addr::from(*a))
}

fn v6(b: &[u8], at: usize) -> Ipv6Addr {
    b.get(at..)
        .and_then(|r| r.first_chunk::<16>())
        .map_or(Ipv6Addr::UNSPECIFIED, |a| Ipv6Addr::from(*a))
}

/// Decodes one selector (whose length is already within bounds).
fn selector(b: &[u8]) -> Selector<'_> {
    let ts_type = TsType(byte(b, selector_field::TS_TYPE));
    let addr = selector_field::ADDRESSES;
    let (start, end) = match ts_type {
        TsType::IPV4_ADDR_RANGE => (IpAddr::V4(v4(b, addr)), IpAddr::V4(v4(b, addr + 4))),
        TsType::IPV6_ADDR_RANGE => (IpAddr::V6(v6(b, addr)), IpAddr::V6(v6(b, addr + 16))),
        _ => {
            return Selector::Other {
                ts_type,
                data: tail(b, SELECTOR_HEADER_LEN),
            }
        }
    };
    Selector::Range(TrafficSelector {
        ip_protocol: byte(b, selector_field::IP_PROTOCOL),
        start_port: be16(b, selector_field::START_PORT.start),
        end_port: be16(b, selector_field::END_PORT.start),
        start,
        end,
    })
}

/// Splits the next selector off `rest`, checking its framing and content.
fn next_selector<'a>(rest: &'a [u8], at: Location) -> Result<(Selector<'a>, &'a [u8]), Error> {
    if rest.len() < SELECTOR_HEADER_LEN {
        return Err(at.malformed(Problem::Truncated {
            what: "traffic selector header",
            need: SELECTOR_HEADER_LEN,
            have: rest.len(),
        }));
    }
    let ts_type = TsType(byte(rest, selector_field::TS_TYPE));
    let len = usize::from(be16(rest, selector_field::LENGTH.start));
    let want = match ts_type {
        TsType::IPV4_ADDR_RANGE => Some(V4_LEN),
        TsType::IPV6_ADDR_RANGE => Some(V6_LEN),
        _ => None,
    };
    match want {
        Some(want) if len != want => {
            return Err(at.malformed(Problem::Value {
                field: "selector length",
                value: len as u64,
                allowed: "16 for TS_IPV4_ADDR_RANGE, 40 for TS_IPV6_ADDR_RANGE",
            }))
        }
        None if len < SELECTOR_HEADER_LEN => {
            return Err(at.malformed(Problem::TooSmall {
                field: "selector length",
                value: len,
                min: SELECTOR_HEADER_LEN,
            }))
        }
        _ => {}
    }
    if len > rest.len() {
        return Err(at.malformed(Problem::Exceeds {
            field: "selector length",
            value: len,
            container: "TS payload",
            room: rest.len(),
        }));
    }
    let sel = selector(slice(rest, 0..len));
    if let Selector::Range(ts) = sel {
        if ts.start_port > ts.end_port && !ts.opaque_ports() {
            return Err(at.malformed(Problem::Rule(
                "start port above end port (only 65535-0, OPAQUE, may be reversed)",
            )));
        }
        if ts.start > ts.end {
            return Err(at.malformed(Problem::Rule("starting address above ending address")));
        }
    }
    Ok((sel, tail(rest, len)))
}

/// A checked TSi or TSr payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsPayload<'a> {
    body: &'a [u8],
}

impl<'a> TsPayload<'a> {
    /// Checks a TS payload body: see the module documentation. Errors name
    /// TSi (in a chain, the actual type).
    pub fn new_checked(body: &'a [u8]) -> Result<Self, Error> {
        let at = Location::payload(PayloadType::TS_I);
        if body.len() < field::SELECTORS {
            return Err(at.malformed(Problem::Truncated {
                what: "TS payload header",
                need: field::SELECTORS,
                have: body.len(),
            }));
        }
        let mut rest = tail(body, field::SELECTORS);
        let mut found = 0usize;
        while !rest.is_empty() {
            found += 1;
            let sat = at.with(Part::Selector(u16::try_from(found).unwrap_or(u16::MAX)));
            rest = next_selector(rest, sat)?.1;
        }
        let declared = usize::from(byte(body, field::COUNT));
        if declared != found {
            return Err(at.malformed(Problem::Count {
                field: "number of TSs",
                declared,
                found,
            }));
        }
        Ok(TsPayload { body })
    }

    /// Number of TSs.
    pub fn count(&self) -> u8 {
        byte(self.body, field::COUNT)
    }

    /// The selectors, in order.
    pub fn selectors(&self) -> Selectors<'a> {
        Selectors {
            rest: tail(self.body, field::SELECTORS),
        }
    }
}

/// Iterator over the selectors of a checked TS payload.
#[derive(Debug, Clone)]
pub struct Selectors<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Selectors<'a> {
    type Item = Selector<'a>;
    fn next(&mut self) -> Option<Selector<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let (sel, rest) = next_selector(self.rest, Location::payload(PayloadType::TS_I)).ok()?;
        self.rest = rest;
        Some(sel)
    }
}

/// A traffic selector's content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SelectorRepr {
    /// TS_IPV4_ADDR_RANGE or TS_IPV6_ADDR_RANGE.
    Range(TrafficSelector),
    /// Another type: its type and the bytes after the Selector Length.
    Other {
        /// TS Type (not 7 or 8).
        ts_type: TsType,
        /// The selector after its first four bytes (the second byte of the
        /// selector is written as zero).
        data: Vec<u8>,
    },
}

/// TSi/TSr payload content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TsRepr {
    /// Traffic selectors, in order.
    pub selectors: Vec<SelectorRepr>,
}

impl TsRepr {
    /// Content of a checked TS payload.
    pub fn parse(p: &TsPayload<'_>) -> TsRepr {
        TsRepr {
            selectors: p
                .selectors()
                .map(|s| match s {
                    Selector::Range(ts) => SelectorRepr::Range(ts),
                    Selector::Other { ts_type, data } => SelectorRepr::Other {
                        ts_type,
                        data: data.to_vec(),
                    },
                })
                .collect(),
        }
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>, at: Location) -> Result<(), EncodeError> {
        w.u8(w.count(self.selectors.len(), "number of TSs", "at most 255", at)?)?;
        w.bytes(&[0; 3])?;
        for (i, s) in self.selectors.iter().enumerate() {
            let sat = at.with(Part::Selector(
                u16::try_from(i.saturating_add(1)).unwrap_or(u16::MAX),
            ));
            match s {
                SelectorRepr::Range(ts) => {
                    let len = match (ts.start, ts.end) {
                        (IpAddr::V4(_), IpAddr::V4(_)) => V4_LEN,
                        (IpAddr::V6(_), IpAddr::V6(_)) => V6_LEN,
                        _ => {
                            return Err(EncodeError::Invalid {
                                at: sat,
                                problem: Problem::Rule(
                                    "starting and ending addresses of different families",
                                ),
                            })
                        }
                    };
                    w.u8(ts.ts_type().0)?;
                    w.u8(ts.ip_protocol)?;
                    // 16 or 40: fits.
                    w.u16(len as u16)?;
                    w.u16(ts.start_port)?;
                    w.u16(ts.end_port)?;
                    for a in [ts.start, ts.end] {
                        match a {
                            IpAddr::V4(a) => w.bytes(&a.octets())?,
                            IpAddr::V6(a) => w.bytes(&a.octets())?,
                        }
                    }
                }
                SelectorRepr::Other { ts_type, data } => {
                    if matches!(*ts_type, TsType::IPV4_ADDR_RANGE | TsType::IPV6_ADDR_RANGE) {
                        return Err(EncodeError::Invalid {
                            at: sat,
                            problem: Problem::Rule(
                                "an address-range selector must be given as a TrafficSelector",
                            ),
                        });
                    }
                    let start = w.pos();
                    w.u8(ts_type.0)?;
                    w.u8(0)?;
                    w.u16(0)?;
                    w.bytes(data)?;
                    w.patch_len16(start + 2, start, "selector length", sat)?;
                }
            }
        }
        Ok(())
    }
}
body_codec!(TsRepr, PayloadType::TS_I, |_s, b| TsPayload::new_checked(b));

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::payload::tests::bytes;
    use proptest::prelude::*;

    fn v4_selector(proto: u8, ports: (u16, u16), a: [u8; 4], b: [u8; 4]) -> Vec<u8> {
        let mut v = vec![7, proto, 0, 16];
        v.extend_from_slice(&ports.0.to_be_bytes());
        v.extend_from_slice(&ports.1.to_be_bytes());
        v.extend_from_slice(&a);
        v.extend_from_slice(&b);
        v
    }

    #[test]
    fn v4_and_v6() {
        // 10.1.0.0/24 any protocol, then 2001:db8::/64 UDP port 500.
        let mut b = vec![2, 0, 0, 0];
        b.extend(v4_selector(0, (0, 65535), [10, 1, 0, 0], [10, 1, 0, 255]));
        let mut s6 = vec![8, 17, 0, 40, 1, 244, 1, 244];
        s6.extend_from_slice(&"2001:db8::".parse::<Ipv6Addr>().unwrap().octets());
        s6.extend_from_slice(
            &"2001:db8::ffff:ffff:ffff:ffff"
                .parse::<Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        b.extend(s6);
        let p = TsPayload::new_checked(&b).unwrap();
        assert_eq!(p.count(), 2);
        let sels: Vec<_> = p.selectors().collect();
        assert_eq!(
            sels[0],
            Selector::Range(TrafficSelector {
                ip_protocol: 0,
                start_port: 0,
                end_port: 65535,
                start: "10.1.0.0".parse().unwrap(),
                end: "10.1.0.255".parse().unwrap(),
            })
        );
        match sels[1] {
            Selector::Range(ts) => {
                assert_eq!(ts.ts_type(), TsType::IPV6_ADDR_RANGE);
                assert_eq!((ts.ip_protocol, ts.start_port, ts.end_port), (17, 500, 500));
            }
            _ => panic!(),
        }
        let r = TsRepr::parse(&p);
        let mut out = vec![0; r.buffer_len()];
        r.emit(&mut out).unwrap();
        assert_eq!(out, b);
    }

    #[test]
    fn reversed_ranges() {
        let wrap = |s: Vec<u8>| {
            let mut b = vec![1, 0, 0, 0];
            b.extend(s);
            b
        };
        let e =
            TsPayload::new_checked(&wrap(v4_selector(6, (80, 79), [1; 4], [1; 4]))).unwrap_err();
        assert!(
            e.to_string()
                .contains("TSi payload, traffic selector 1: start port above end port"),
            "{e}"
        );
        // OPAQUE ports are the one allowed reversal.
        let opaque = wrap(v4_selector(6, (65535, 0), [1; 4], [1; 4]));
        let p = TsPayload::new_checked(&opaque).unwrap();
        match p.selectors().next().unwrap() {
            Selector::Range(ts) => assert!(ts.opaque_ports()),
            _ => panic!(),
        }
        let e = TsPayload::new_checked(&wrap(v4_selector(
            0,
            (0, 65535),
            [10, 0, 0, 2],
            [10, 0, 0, 1],
        )))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("starting address above ending address"),
            "{e}"
        );
    }

    #[test]
    fn framing() {
        let s = v4_selector(0, (0, 65535), [0; 4], [255; 4]);
        let mut b = vec![2, 0, 0, 0];
        b.extend(s.clone());
        let e = TsPayload::new_checked(&b).unwrap_err();
        assert!(
            e.to_string()
                .contains("number of TSs says 2 but 1 are present"),
            "{e}"
        );
        let mut b = vec![1, 0, 0, 0];
        b.extend(s.clone());
        b[7] = 17;
        assert!(TsPayload::new_checked(&b).is_err());
        assert!(TsPayload::new_checked(&b[..b.len() - 1]).is_err());
        assert!(TsPayload::new_checked(&[0, 0, 0]).is_err());
        assert!(TsPayload::new_checked(&[0, 0, 0, 0]).is_ok());
        // An unknown type (TS_SECLABEL) is carried; its length must cover its header.
        let b = [1, 0, 0, 0, 10, 0, 0, 6, b'l', b'b'];
        let p = TsPayload::new_checked(&b).unwrap();
        assert_eq!(
            p.selectors().next(),
            Some(Selector::Other {
                ts_type: TsType::SECLABEL,
                data: b"lb"
            })
        );
        let r = TsRepr::parse(&p);
        let mut out = vec![0; r.buffer_len()];
        r.emit(&mut out).unwrap();
        assert_eq!(out, b);
        assert!(TsPayload::new_checked(&[1, 0, 0, 0, 10, 0, 0, 3]).is_err());
        // Mixed families cannot be emitted.
        let mixed = TsRepr {
            selectors: vec![SelectorRepr::Range(TrafficSelector {
                ip_protocol: 0,
                start_port: 0,
                end_port: 0,
                start: "10.0.0.1".parse().unwrap(),
                end: "::1".parse().unwrap(),
            })],
        };
        assert!(mixed.emit(&mut [0; 64]).is_err());
    }

    pub(crate) fn traffic_selector() -> impl Strategy<Value = TrafficSelector> {
        (
            any::<u8>(),
            any::<(u16, u16)>(),
            any::<bool>(),
            any::<(u128, u128)>(),
        )
            .prop_map(|(ip_protocol, (p1, p2), six, (a1, a2))| {
                let (start_port, end_port) = if (p1, p2) == (u16::MAX, 0) {
                    (p1, p2)
                } else {
                    (p1.min(p2), p1.max(p2))
                };
                let (start, end): (IpAddr, IpAddr) = if six {
                    (
                        Ipv6Addr::from(a1.min(a2)).into(),
                        Ipv6Addr::from(a1.max(a2)).into(),
                    )
                } else {
                    let (x, y) = (a1 as u32, a2 as u32);
                    (
                        Ipv4Addr::from(x.min(y)).into(),
                        Ipv4Addr::from(x.max(y)).into(),
                    )
                };
                TrafficSelector {
                    ip_protocol,
                    start_port,
                    end_port,
                    start,
                    end,
                }
            })
    }

    pub(crate) fn ts() -> impl Strategy<Value = TsRepr> {
        proptest::collection::vec(
            prop_oneof![
                4 => traffic_selector().prop_map(SelectorRepr::Range),
                1 => (prop_oneof![Just(10u8), 11u8..=255, 0u8..7], bytes(0..8))
                    .prop_map(|(t, data)| SelectorRepr::Other { ts_type: TsType(t), data }),
            ],
            0..4,
        )
        .prop_map(|selectors| TsRepr { selectors })
    }

    proptest! {
        #[test]
        fn round_trip(r in ts()) {
            let mut buf = vec![0; r.buffer_len()];
            let n = r.emit(&mut buf).unwrap();
            prop_assert_eq!(TsRepr::parse(&TsPayload::new_checked(&buf[..n]).unwrap()), r);
        }

        #[test]
        fn arbitrary_selectors_never_panic(ip_protocol in any::<u8>(), ports in any::<(u16, u16)>(),
                                           a in any::<(u32, u32)>()) {
            let r = TsRepr { selectors: vec![SelectorRepr::Range(TrafficSelector {
                ip_protocol, start_port: ports.0, end_port: ports.1,
                start: Ipv4Addr::from(a.0).into(), end: Ipv4Addr::from(a.1).into(),
            })] };
            let mut buf = vec![0; r.buffer_len()];
            match r.emit(&mut buf) {
                Ok(n) => prop_assert_eq!(TsRepr::parse(&TsPayload::new_checked(&buf[..n]).unwrap()), r),
                Err(_) => prop_assert!((ports.0 > ports.1 && ports != (65535, 0)) || a.0 > a.1),
            }
        }

        #[test]
        fn bytes_never_panic(b in bytes(0..120)) {
            if let Ok(p) = TsPayload::new_checked(&b) {
                prop_assert_eq!(p.selectors().count(), usize::from(p.count()));
            }
        }
    }
}
