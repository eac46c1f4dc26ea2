//! Addresses, prefixes, port ranges and traffic selectors.
//!
//! All parsing returns a message for the user; nothing panics.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// An IP network prefix with no host bits set (`10.1.0.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// Builds a prefix; `None` if `len` is too long for the family or host bits are set.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        let p = Prefix { addr, len };
        (len <= p.max_len() && p.network() == addr).then_some(p)
    }

    /// The whole address space of `addr`'s family.
    pub fn any_of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Prefix {
                addr: IpAddr::V4(0.into()),
                len: 0,
            },
            IpAddr::V6(_) => Prefix {
                addr: IpAddr::V6(0u128.into()),
                len: 0,
            },
        }
    }

    /// Network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// Prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for `/0`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True for IPv4.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    fn max_len(&self) -> u8 {
        if self.addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    fn bits(addr: &IpAddr) -> u128 {
        match addr {
            IpAddr::V4(a) => u128::from(u32::from(*a)) << 96,
            IpAddr::V6(a) => u128::from(*a),
        }
    }

    /// Mask over [`Prefix::bits`] (IPv4 addresses live in the top 32 bits).
    fn mask(&self) -> u128 {
        if self.len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(self.len))
        }
    }

    fn network(&self) -> IpAddr {
        let masked = Self::bits(&self.addr) & self.mask();
        match self.addr {
            IpAddr::V4(_) => IpAddr::V4(((masked >> 96) as u32).into()),
            IpAddr::V6(_) => IpAddr::V6(masked.into()),
        }
    }

    /// Does the prefix contain `addr`?
    pub fn contains(&self, addr: &IpAddr) -> bool {
        addr.is_ipv4() == self.addr.is_ipv4()
            && (Self::bits(addr) & self.mask()) == Self::bits(&self.addr)
    }

    /// Is every address of `other` in `self`?
    pub fn covers(&self, other: &Prefix) -> bool {
        other.addr.is_ipv4() == self.addr.is_ipv4()
            && other.len >= self.len
            && self.contains(&other.addr)
    }

    /// Do the two prefixes share any address?
    pub fn overlaps(&self, other: &Prefix) -> bool {
        self.covers(other) || other.covers(self)
    }

    /// The two halves (one bit longer), or `None` for a single address.
    pub fn halves(&self) -> Option<(Prefix, Prefix)> {
        if self.len >= self.max_len() {
            return None;
        }
        let len = self.len + 1;
        let bit = 1u128 << (128 - u32::from(len));
        let high = Self::bits(&self.addr) | bit;
        let addr = match self.addr {
            IpAddr::V4(_) => IpAddr::V4(((high >> 96) as u32).into()),
            IpAddr::V6(_) => IpAddr::V6(high.into()),
        };
        Some((
            Prefix {
                addr: self.addr,
                len,
            },
            Prefix { addr, len },
        ))
    }

    /// A part of `self` that no prefix of `set` covers (the largest such
    /// part found first), or `None` when the union of `set` covers `self`.
    pub fn uncovered_by(&self, set: &[Prefix]) -> Option<Prefix> {
        if set.iter().any(|s| s.covers(self)) {
            return None;
        }
        if !set.iter().any(|s| s.overlaps(self)) {
            return Some(*self);
        }
        // Some prefix of `set` lies strictly inside `self`: look at each half.
        let (a, b) = self.halves()?;
        a.uncovered_by(set).or_else(|| b.uncovered_by(set))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = parse_addr_len(s, Want::Network)?;
        Prefix::new(addr, len).ok_or_else(|| {
            let p = Prefix { addr, len };
            format!(
                "`{s}` has host bits set; the network is `{}/{len}`",
                p.network()
            )
        })
    }
}

/// An interface address with its prefix length (`10.1.0.1/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfAddr {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length of the attached network.
    pub len: u8,
}

impl IfAddr {
    /// The attached network.
    pub fn network(&self) -> Prefix {
        let p = Prefix {
            addr: self.addr,
            len: self.len,
        };
        Prefix {
            addr: p.network(),
            len: self.len,
        }
    }
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for IfAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for IfAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = parse_addr_len(s, Want::Host)?;
        IfAddr::checked(addr, len).ok_or_else(|| match first_host(addr, len) {
            Some(h) => format!(
                "`{s}` is a network address, not a host address on it; use a host address such as `{h}`"
            ),
            None => format!("`{s}` is a network address, not a host address on it"),
        })
    }
}

impl IfAddr {
    /// `addr/len` if `addr` is a host address on the network (not the
    /// network address itself, except on /31 and /32 or /127 and /128).
    fn checked(addr: IpAddr, len: u8) -> Option<IfAddr> {
        let a = IfAddr { addr, len };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max && (a.network().addr() != addr || len >= max - 1)).then_some(a)
    }
}

/// The first host address of `addr/len`'s network.
fn first_host(addr: IpAddr, len: u8) -> Option<IfAddr> {
    let net = Prefix { addr, len }.network();
    let next = match net {
        IpAddr::V4(a) => IpAddr::V4(u32::from(a).checked_add(1)?.into()),
        IpAddr::V6(a) => IpAddr::V6(u128::from(a).checked_add(1)?.into()),
    };
    IfAddr::checked(next, len)
}

/// What an `ADDRESS/LENGTH` string stands for, so that a suggested rewrite
/// is one the same parser accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    /// A network prefix (no host bits).
    Network,
    /// An interface address on its network.
    Host,
}

/// `addr` with prefix length `len` written the way `want` accepts it: the
/// network for a prefix; for an interface address, the address itself if
/// it is a host address, else the network's first host.
fn rewrite(addr: IpAddr, len: u8, want: Want) -> Option<String> {
    let s = match want {
        Want::Network => Prefix {
            addr: Prefix { addr, len }.network(),
            len,
        }
        .to_string(),
        Want::Host => IfAddr::checked(addr, len)
            .or_else(|| first_host(addr, len))?
            .to_string(),
    };
    // Only suggest what is accepted.
    let ok = match want {
        Want::Network => s.parse::<Prefix>().is_ok(),
        Want::Host => s.parse::<IfAddr>().is_ok(),
    };
    ok.then_some(s)
}

/// The prefix length of a netmask of `addr`'s family (`255.255.255.0` → 24),
/// if `m` is one.
fn mask_len(addr: &IpAddr, m: &str) -> Option<u8> {
    let mask: IpAddr = m.trim().parse().ok()?;
    let (bits, width) = match (addr, mask) {
        (IpAddr::V4(_), IpAddr::V4(m)) => (u128::from(u32::from(m)) << 96, 32),
        (IpAddr::V6(_), IpAddr::V6(m)) => (u128::from(m), 128),
        _ => return None,
    };
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0 && ones <= width).then_some(ones as u8)
}

fn netmask_message(s: &str, addr: IpAddr, len: u8, want: Want) -> String {
    match rewrite(addr, len, want) {
        Some(r) => format!("`{s}` gives a netmask; write the prefix length instead: `{r}`"),
        None => format!("`{s}` gives a netmask; write the prefix length instead (/{len})"),
    }
}

fn parse_addr_len(s: &str, want: Want) -> Result<(IpAddr, u8), String> {
    let Some((a, l)) = s.split_once('/') else {
        // `ADDRESS NETMASK`, as ifconfig prints it.
        if let Some((a, m)) = s.trim().split_once(char::is_whitespace) {
            if let Ok(addr) = a.parse::<IpAddr>() {
                if let Some(len) = mask_len(&addr, m) {
                    return Err(netmask_message(s, addr, len, want));
                }
            }
        }
        let Ok(addr) = s.trim().parse::<IpAddr>() else {
            return Err(format!(
                "`{s}` is not an address with a prefix length, such as `10.1.0.0/24`"
            ));
        };
        let (guess, single) = if addr.is_ipv4() { (24, 32) } else { (64, 128) };
        return Err(match want {
            Want::Network => {
                let net = rewrite(addr, guess, want).filter(|r| r.starts_with(&addr.to_string()));
                match net {
                    Some(r) => format!("`{s}` needs a prefix length, such as `{r}`"),
                    None => format!(
                        "`{s}` needs a prefix length; for this one address write `{addr}/{single}`"
                    ),
                }
            }
            Want::Host => match rewrite(addr, guess, want)
                .filter(|r| r.starts_with(&addr.to_string()))
            {
                Some(r) => format!("`{s}` needs the prefix length of its network, such as `{r}`"),
                None => format!(
                    "`{s}` needs the prefix length of its network, such as `{addr}/{single}`"
                ),
            },
        });
    };
    let addr: IpAddr = a
        .trim()
        .parse()
        .map_err(|_| format!("`{a}` is not an IPv4 or IPv6 address"))?;
    let len: u8 = match l.trim().parse() {
        Ok(len) => len,
        Err(_) => {
            if let Some(len) = mask_len(&addr, l) {
                return Err(netmask_message(s, addr, len, want));
            }
            if l.trim().parse::<IpAddr>().is_ok() {
                return Err(format!(
                    "`{l}` is not a netmask (its one bits must come first, as in 255.255.255.0); write a prefix length such as /24"
                ));
            }
            return Err(format!("`{l}` is not a prefix length"));
        }
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("prefix length {len} is longer than {max}"));
    }
    Ok((addr, len))
}

/// Parses a plain IP address with a helpful message.
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an IPv4 or IPv6 address"))
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (inclusive).
    pub end: u16,
}

impl PortRange {
    /// All ports.
    pub const ANY: PortRange = PortRange {
        start: 0,
        end: 65535,
    };

    /// True when every port of `other` is in `self`.
    pub fn covers(&self, other: &PortRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// True when the ranges share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("`{p}` is not a port number (0-65535)"))
        };
        let (start, end) = match s.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let p = parse(s)?;
                (p, p)
            }
        };
        if start > end {
            return Err(format!(
                "port range `{s}` is reversed; write `{end}-{start}`"
            ));
        }
        Ok(PortRange { start, end })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// IP protocol numbers with names.
pub fn parse_protocol(s: &str) -> Result<Option<u8>, String> {
    Ok(match s {
        "any" => None,
        "icmp" => Some(1),
        "tcp" => Some(6),
        "udp" => Some(17),
        "esp" => Some(50),
        "icmpv6" => Some(58),
        other => match other.parse::<u8>() {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(_) => {
                return Err(format!(
                    "unknown protocol `{other}`; use tcp, udp, icmp, icmpv6, any or a number 1-255"
                ))
            }
        },
    })
}

/// A traffic selector (RFC 4301 §4.4.1): prefix, protocol, port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TrafficSelector {
    /// Addresses.
    pub prefix: Prefix,
    /// IP protocol, `None` for any.
    pub protocol: Option<u8>,
    /// Ports (only meaningful for TCP/UDP); `0-65535` for any.
    pub ports: PortRange,
}

impl TrafficSelector {
    /// Does `self` contain every packet `other` matches?
    pub fn covers(&self, other: &TrafficSelector) -> bool {
        self.prefix.covers(&other.prefix)
            && (self.protocol.is_none() || self.protocol == other.protocol)
            && self.ports.covers(&other.ports)
    }

    /// Could a packet match both?
    pub fn overlaps(&self, other: &TrafficSelector) -> bool {
        self.prefix.overlaps(&other.prefix)
            && (self.protocol.is_none()
                || other.protocol.is_none()
                || self.protocol == other.protocol)
            && self.ports.overlaps(&other.ports)
    }
}

impl FromStr for TrafficSelector {
    type Err = String;
    /// `PREFIX [PROTOCOL [PORTS]]`, e.g. `10.1.0.0/24`, `10.1.0.0/24 tcp 443`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split_whitespace().peekable();
        let first = parts.next().ok_or("empty traffic selector")?;
        if let (false, Ok(addr), Some(m)) =
            (first.contains('/'), first.parse::<IpAddr>(), parts.peek())
        {
            if let Some(len) = mask_len(&addr, m) {
                let rest: Vec<&str> = parts.skip(1).collect();
                let msg = match rewrite(addr, len, Want::Network) {
                    Some(p) => {
                        let fixed = std::iter::once(p.as_str())
                            .chain(rest.iter().copied())
                            .collect::<Vec<_>>()
                            .join(" ");
                        format!("`{s}` gives a netmask; write the prefix length instead: `{fixed}`")
                    }
                    None => {
                        format!("`{s}` gives a netmask; write the prefix length instead (/{len})")
                    }
                };
                return Err(msg);
            }
        }
        let prefix: Prefix = first.parse()?;
        let protocol = parts.next().map(parse_protocol).transpose()?.flatten();
        let ports = match parts.next() {
            Some(p) => {
                if !matches!(protocol, Some(6) | Some(17)) {
                    return Err("ports are only allowed with tcp or udp".into());
                }
                p.parse()?
            }
            None => PortRange::ANY,
        };
        if let Some(extra) = parts.next() {
            return Err(format!(
                "unexpected `{extra}`; a selector is `PREFIX [PROTOCOL [PORTS]]`"
            ));
        }
        Ok(TrafficSelector {
            prefix,
            protocol,
            ports,
        })
    }
}

impl fmt::Display for TrafficSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.prefix)?;
        if let Some(p) = self.protocol {
            write!(f, " {p}")?;
            if self.ports != PortRange::ANY {
                write!(f, " {}", self.ports)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_parsing_and_relations() {
        let a: Prefix = "10.1.0.0/24".parse().unwrap();
        let b: Prefix = "10.1.0.128/25".parse().unwrap();
        let c: Prefix = "10.2.0.0/24".parse().unwrap();
        assert!(a.covers(&b) && !b.covers(&a) && a.overlaps(&b));
        assert!(!a.overlaps(&c));
        assert!("10.1.0.1/24"
            .parse::<Prefix>()
            .unwrap_err()
            .contains("host bits"));
        assert!("10.1.0.0/33".parse::<Prefix>().is_err());
        assert!("10.1.0.0".parse::<Prefix>().is_err());
        let v6: Prefix = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(&"2001:db8::1".parse().unwrap()));
        assert!(!v6.overlaps(&a));
        let any: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(any.covers(&a));
    }

    #[test]
    fn ifaddr_rejects_network_address() {
        assert!("10.1.0.0/24".parse::<IfAddr>().is_err());
        let a: IfAddr = "10.1.0.1/24".parse().unwrap();
        assert_eq!(a.network().to_string(), "10.1.0.0/24");
    }

    #[test]
    fn selectors() {
        let t: TrafficSelector = "10.1.0.0/24 tcp 443".parse().unwrap();
        assert_eq!(t.protocol, Some(6));
        assert!("10.1.0.0/24 icmp 5".parse::<TrafficSelector>().is_err());
        let any: TrafficSelector = "10.1.0.0/24".parse().unwrap();
        assert!(any.covers(&t) && !t.covers(&any) && t.overlaps(&any));
    }
}
