//! The engine's own signature model.
//!
//! The Viaduct receives signatures from the policy blob, never as rule text:
//! these types are what a signature is once it reaches the device. They say
//! nothing about how a rule was written; [`crate::Engine::new`] checks them.

use std::net::IpAddr;

/// What a signature does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Raise an alert.
    Alert,
    /// Drop the packet (and alert).
    Drop,
}

/// A signature's protocol, or a packet's transport protocol.
///
/// For a signature `Ip` matches every packet; for a packet it means "an IP
/// protocol other than TCP, UDP and ICMP".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP (v4 and v6).
    Icmp,
    /// Any IP protocol.
    Ip,
}

impl Proto {
    /// Whether the protocol has ports (TCP and UDP).
    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp)
    }
}

/// Sorted, disjoint, inclusive ranges of `T` (merged on construction).
fn normalise<T: Ord + Copy>(mut r: Vec<(T, T)>, succ: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    r.retain(|(a, b)| a <= b);
    r.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(r.len());
    for (a, b) in r {
        if let Some(last) = out.last_mut() {
            // Adjacent or overlapping: extend the previous range.
            if a <= last.1 || succ(last.1) == Some(a) {
                if b > last.1 {
                    last.1 = b;
                }
                continue;
            }
        }
        out.push((a, b));
    }
    out
}

/// Whether `v` lies in one of the sorted, disjoint ranges.
fn in_ranges<T: Ord + Copy>(r: &[(T, T)], v: T) -> bool {
    // The first range whose end is >= v is the only one that can hold it.
    let i = r.partition_point(|&(_, hi)| hi < v);
    r.get(i).is_some_and(|&(lo, _)| lo <= v)
}

/// A set of addresses: inclusive ranges, IPv4 and IPv6 kept apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AddrMatch {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl AddrMatch {
    /// Every address.
    pub fn any() -> Self {
        AddrMatch {
            v4: vec![(0, u32::MAX)],
            v6: vec![(0, u128::MAX)],
        }
    }

    /// The addresses in the given inclusive ranges (in any order; reversed
    /// ranges are dropped, overlapping ones merged).
    pub fn from_ranges(v4: Vec<(u32, u32)>, v6: Vec<(u128, u128)>) -> Self {
        AddrMatch {
            v4: normalise(v4, |x| x.checked_add(1)),
            v6: normalise(v6, |x| x.checked_add(1)),
        }
    }

    /// Whether `addr` is in the set.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => in_ranges(&self.v4, u32::from(a)),
            IpAddr::V6(a) => in_ranges(&self.v6, u128::from(a)),
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The IPv4 ranges, sorted and disjoint.
    pub fn v4_ranges(&self) -> &[(u32, u32)] {
        &self.v4
    }

    /// The IPv6 ranges, sorted and disjoint.
    pub fn v6_ranges(&self) -> &[(u128, u128)] {
        &self.v6
    }
}

/// A set of ports: sorted, disjoint, inclusive ranges.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortMatch {
    ranges: Vec<(u16, u16)>,
}

impl PortMatch {
    /// Every port.
    pub fn any() -> Self {
        PortMatch {
            ranges: vec![(0, u16::MAX)],
        }
    }

    /// The ports in the given inclusive ranges (normalised as for
    /// [`AddrMatch::from_ranges`]).
    pub fn from_ranges(ranges: Vec<(u16, u16)>) -> Self {
        PortMatch {
            ranges: normalise(ranges, |x| x.checked_add(1)),
        }
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        in_ranges(&self.ranges, port)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges, sorted and disjoint.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.ranges
    }
}

/// The direction part of `flow:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowDirection {
    /// From the connection's initiator.
    ToServer,
    /// From the responder.
    ToClient,
}

/// The state part of `flow:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowState {
    /// Only once the connection is established.
    Established,
    /// Only before it is.
    NotEstablished,
}

/// A signature's flow conditions (`None`: no condition).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowMatch {
    /// Required direction.
    pub direction: Option<FlowDirection>,
    /// Required connection state.
    pub state: Option<FlowState>,
}

/// A payload size condition; as in Suricata, range bounds are exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DsizeMatch {
    /// Exactly N bytes.
    Eq(u16),
    /// Fewer than N bytes.
    Lt(u16),
    /// More than N bytes.
    Gt(u16),
    /// More than N and fewer than M bytes.
    Range(u16, u16),
}

impl DsizeMatch {
    /// Whether a payload of `len` bytes satisfies the condition.
    pub fn matches(self, len: usize) -> bool {
        match self {
            DsizeMatch::Eq(n) => len == usize::from(n),
            DsizeMatch::Lt(n) => len < usize::from(n),
            DsizeMatch::Gt(n) => len > usize::from(n),
            DsizeMatch::Range(lo, hi) => len > usize::from(lo) && len < usize::from(hi),
        }
    }
}

/// One `content` and its modifiers, with Suricata's meaning:
/// `offset` is where the search starts in the buffer and `depth` how many
/// bytes from there the match must lie within; `distance` is where the
/// search starts relative to the end of the previous content's match (the
/// buffer start for the first content; may be negative) and `within` how
/// many bytes from there the match must lie within. A content has
/// `offset`/`depth` or `distance`/`within`, never both.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContentMatch {
    /// The bytes to find (never empty).
    pub bytes: Vec<u8>,
    /// The signature matches only where these bytes are absent.
    pub negated: bool,
    /// ASCII letters match either case.
    pub nocase: bool,
    /// `offset`.
    pub offset: Option<u32>,
    /// `depth` (at least the content's length).
    pub depth: Option<u32>,
    /// `distance`.
    pub distance: Option<i32>,
    /// `within` (at least the content's length).
    pub within: Option<u32>,
    /// This content is the signature's prefilter pattern.
    pub fast_pattern: bool,
}

impl ContentMatch {
    /// A plain content: no modifier.
    pub fn new(bytes: &[u8]) -> Self {
        ContentMatch {
            bytes: bytes.to_vec(),
            negated: false,
            nocase: false,
            offset: None,
            depth: None,
            distance: None,
            within: None,
            fast_pattern: false,
        }
    }

    /// Whether the content is placed relative to the previous match.
    pub fn is_relative(&self) -> bool {
        self.distance.is_some() || self.within.is_some()
    }
}

/// One signature.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Signature {
    /// Signature id (unique in an engine, > 0).
    pub sid: u32,
    /// Revision.
    pub rev: u32,
    /// What a match does.
    pub action: Action,
    /// The protocol inspected (`Ip`: every packet).
    pub proto: Proto,
    /// Source addresses.
    pub src: AddrMatch,
    /// Source ports (checked only for TCP and UDP signatures).
    pub src_ports: PortMatch,
    /// Destination addresses.
    pub dst: AddrMatch,
    /// Destination ports (checked only for TCP and UDP signatures).
    pub dst_ports: PortMatch,
    /// The header also matches with source and destination swapped.
    pub bidirectional: bool,
    /// Flow conditions.
    pub flow: FlowMatch,
    /// Payload size condition (packet inspection only: a signature with one
    /// never matches a stream window, as in Suricata).
    pub dsize: Option<DsizeMatch>,
    /// The content chain, in rule order.
    pub contents: Vec<ContentMatch>,
    /// Message for the alert.
    pub msg: String,
}

impl Signature {
    /// A signature on every packet of `proto` with the given contents
    /// (alert, no flow or size condition), for tests and tools.
    pub fn any(sid: u32, proto: Proto, contents: Vec<ContentMatch>) -> Self {
        Signature {
            sid,
            rev: 1,
            action: Action::Alert,
            proto,
            src: AddrMatch::any(),
            src_ports: PortMatch::any(),
            dst: AddrMatch::any(),
            dst_ports: PortMatch::any(),
            bidirectional: false,
            flow: FlowMatch::default(),
            dsize: None,
            contents,
            msg: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn ranges_merge_and_contain() {
        let p = PortMatch::from_ranges(vec![(80, 80), (10, 20), (21, 30), (5, 12), (9, 3)]);
        assert_eq!(p.ranges(), &[(5, 30), (80, 80)]);
        assert!(p.contains(5) && p.contains(30) && p.contains(80));
        assert!(!p.contains(4) && !p.contains(31) && !p.contains(81));
        assert!(PortMatch::from_ranges(vec![]).is_empty());
        assert!(PortMatch::any().contains(0) && PortMatch::any().contains(65535));
    }

    #[test]
    fn addresses_by_family() {
        let a = AddrMatch::from_ranges(
            vec![(
                u32::from(Ipv4Addr::new(10, 0, 0, 0)),
                u32::from(Ipv4Addr::new(10, 0, 0, 255)),
            )],
            vec![(1, 1)],
        );
        assert!(a.contains(Ipv4Addr::new(10, 0, 0, 7).into()));
        assert!(!a.contains(Ipv4Addr::new(10, 0, 1, 0).into()));
        assert!(a.contains(Ipv6Addr::LOCALHOST.into()));
        assert!(!a.contains(Ipv6Addr::UNSPECIFIED.into()));
        assert!(AddrMatch::any().contains(Ipv6Addr::UNSPECIFIED.into()));
    }

    #[test]
    fn dsize_bounds_are_exclusive() {
        assert!(DsizeMatch::Range(2, 5).matches(3) && !DsizeMatch::Range(2, 5).matches(5));
        assert!(DsizeMatch::Lt(3).matches(2) && !DsizeMatch::Lt(3).matches(3));
        assert!(DsizeMatch::Gt(3).matches(4) && DsizeMatch::Eq(0).matches(0));
    }
}
