//! Address sets: what a rule's source or destination field matches.
//!
//! Atoms are `any`, an IPv4 or IPv6 address, a prefix `addr/len` (IPv4 also
//! `addr/netmask` with a contiguous mask) and a range `addr-addr` within one
//! family. As Suricata does, a prefix with host bits set is masked, not
//! refused: `10.1.2.3/8` is `10.0.0.0/8`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::expr::{shorten, Domain};
use crate::ranges::Ranges;

/// A normalised set of IPv4 and IPv6 addresses.
///
/// Two sets that match the same addresses compare equal, however they were
/// written (`[10.0.0.0/9,10.128.0.0/9]` equals `10.0.0.0/8`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AddrSet {
    v4: Ranges<u32>,
    v6: Ranges<u128>,
}

impl AddrSet {
    /// Every address of both families (`any`).
    pub fn any() -> Self {
        AddrSet {
            v4: Ranges::full(),
            v6: Ranges::full(),
        }
    }

    /// No address.
    pub fn none() -> Self {
        AddrSet {
            v4: Ranges::empty(),
            v6: Ranges::empty(),
        }
    }

    /// Whether `addr` is in the set.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.v4.contains(u32::from(a)),
            IpAddr::V6(a) => self.v6.contains(u128::from(a)),
        }
    }

    /// Whether the set holds every address (`any`).
    pub fn is_any(&self) -> bool {
        self.v4.is_full() && self.v6.is_full()
    }

    /// Whether the set holds no address.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The IPv4 addresses, as sorted, disjoint inclusive ranges.
    pub fn v4_ranges(&self) -> Vec<(Ipv4Addr, Ipv4Addr)> {
        self.v4
            .ranges()
            .iter()
            .map(|&(a, b)| (Ipv4Addr::from(a), Ipv4Addr::from(b)))
            .collect()
    }

    /// The IPv6 addresses, as sorted, disjoint inclusive ranges.
    pub fn v6_ranges(&self) -> Vec<(Ipv6Addr, Ipv6Addr)> {
        self.v6
            .ranges()
            .iter()
            .map(|&(a, b)| (Ipv6Addr::from(a), Ipv6Addr::from(b)))
            .collect()
    }
}

impl Domain for AddrSet {
    fn universe() -> Self {
        Self::any()
    }

    fn nothing() -> Self {
        Self::none()
    }

    fn union(&self, other: &Self) -> Self {
        AddrSet {
            v4: self.v4.union(&other.v4),
            v6: self.v6.union(&other.v6),
        }
    }

    fn subtract(&self, other: &Self) -> Self {
        AddrSet {
            v4: self.v4.subtract(&other.v4),
            v6: self.v6.subtract(&other.v6),
        }
    }

    fn atom(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("any") {
            return Ok(Self::any());
        }
        let bad = || format!("`{}` is not an address", shorten(text));
        if let Some((addr, len)) = text.split_once('/') {
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            return prefix(addr, len).ok_or_else(bad);
        }
        if let Some((lo, hi)) = text.split_once('-') {
            let lo: IpAddr = lo.parse().map_err(|_| bad())?;
            let hi: IpAddr = hi.parse().map_err(|_| bad())?;
            let set = match (lo, hi) {
                (IpAddr::V4(a), IpAddr::V4(b)) => v4(Ranges::span(a.into(), b.into())),
                (IpAddr::V6(a), IpAddr::V6(b)) => v6(Ranges::span(a.into(), b.into())),
                _ => return Err(format!("`{}` mixes IPv4 and IPv6", shorten(text))),
            };
            if set.is_empty() {
                return Err(format!("address range `{}` is empty", shorten(text)));
            }
            return Ok(set);
        }
        let addr: IpAddr = text.parse().map_err(|_| bad())?;
        Ok(match addr {
            IpAddr::V4(a) => v4(Ranges::span(a.into(), a.into())),
            IpAddr::V6(a) => v6(Ranges::span(a.into(), a.into())),
        })
    }
}

fn v4(r: Ranges<u32>) -> AddrSet {
    AddrSet {
        v4: r,
        v6: Ranges::empty(),
    }
}

fn v6(r: Ranges<u128>) -> AddrSet {
    AddrSet {
        v4: Ranges::empty(),
        v6: r,
    }
}

/// `addr/len` (or IPv4 `addr/netmask`), host bits masked.
fn prefix(addr: IpAddr, len: &str) -> Option<AddrSet> {
    match addr {
        IpAddr::V4(a) => {
            let len: u32 = if len.contains('.') {
                let mask = u32::from(len.parse::<Ipv4Addr>().ok()?);
                // Contiguous: ones then zeros.
                if mask.leading_ones() + mask.trailing_zeros() != 32 {
                    return None;
                }
                mask.leading_ones()
            } else {
                decimal(len).filter(|&l| l <= 32)?
            };
            let host = u32::MAX.checked_shr(len).unwrap_or(0);
            let net = u32::from(a) & !host;
            Some(v4(Ranges::span(net, net | host)))
        }
        IpAddr::V6(a) => {
            let len = decimal(len).filter(|&l| l <= 128)?;
            let host = u128::MAX.checked_shr(len).unwrap_or(0);
            let net = u128::from(a) & !host;
            Some(v6(Ranges::span(net, net | host)))
        }
    }
}

/// A plain decimal number (ASCII digits only).
fn decimal(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::eval;
    use crate::Vars;

    fn set(text: &str) -> AddrSet {
        eval::<AddrSet>(text, &Vars::suricata_defaults()).unwrap()
    }

    fn err(text: &str) -> String {
        eval::<AddrSet>(text, &Vars::suricata_defaults()).unwrap_err()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn any_holds_both_families() {
        let s = set("any");
        assert!(s.is_any());
        assert!(s.contains(ip("0.0.0.0")) && s.contains(ip("255.255.255.255")));
        assert!(s.contains(ip("::")) && s.contains(ip("ffff::1")));
    }

    #[test]
    fn single_addresses_and_prefixes() {
        let s = set("192.0.2.7");
        assert!(s.contains(ip("192.0.2.7")));
        assert!(!s.contains(ip("192.0.2.8")));
        assert!(!s.contains(ip("::1")));
        let p = set("2001:db8::/32");
        assert!(p.contains(ip("2001:db8:ffff::1")));
        assert!(!p.contains(ip("2001:db9::")));
        assert!(!p.contains(ip("10.0.0.1")));
        assert_eq!(set("10.0.0.0/255.0.0.0"), set("10.0.0.0/8"));
        assert_eq!(set("0.0.0.0/0").v4_ranges().len(), 1);
        assert_eq!(
            set("::/0").v6_ranges(),
            vec![(ip6("::"), ip6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))]
        );
    }

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn host_bits_are_masked_like_suricata() {
        assert_eq!(set("10.1.2.3/8"), set("10.0.0.0/8"));
        assert_eq!(set("2001:db8::1/64"), set("2001:db8::/64"));
    }

    #[test]
    fn ranges_of_addresses() {
        let s = set("10.0.0.5-10.0.0.9");
        assert!(s.contains(ip("10.0.0.5")) && s.contains(ip("10.0.0.9")));
        assert!(!s.contains(ip("10.0.0.10")));
        assert_eq!(
            err("10.0.0.9-10.0.0.5"),
            "address range `10.0.0.9-10.0.0.5` is empty"
        );
        assert_eq!(err("10.0.0.1-::1"), "`10.0.0.1-::1` mixes IPv4 and IPv6");
    }

    #[test]
    fn lists_negations_and_nesting() {
        let s = set("[10.0.0.0/8,!10.1.0.0/16,[192.0.2.1,2001:db8::1]]");
        assert!(s.contains(ip("10.2.0.1")));
        assert!(!s.contains(ip("10.1.2.3")));
        assert!(s.contains(ip("192.0.2.1")) && s.contains(ip("2001:db8::1")));
        assert!(!s.contains(ip("192.0.2.2")));
        let n = set("!10.0.0.0/8");
        assert!(!n.contains(ip("10.9.9.9")) && n.contains(ip("11.0.0.0")) && n.contains(ip("::1")));
        // A list of negations only starts from every address.
        assert_eq!(set("[!10.0.0.0/8]"), n);
        let nl = set("![10.0.0.0/8,192.168.0.0/16]");
        assert!(!nl.contains(ip("192.168.1.1")) && nl.contains(ip("172.16.0.1")));
    }

    #[test]
    fn variables_resolve_and_nest() {
        let home = set("$HOME_NET");
        assert!(home.contains(ip("192.168.1.1")) && home.contains(ip("172.31.255.255")));
        assert!(!home.contains(ip("172.32.0.0")));
        let ext = set("$EXTERNAL_NET");
        assert_eq!(ext, AddrSet::any().subtract(&home));
        assert_eq!(set("$HTTP_SERVERS"), home);
        assert_eq!(set("!$EXTERNAL_NET"), home);
        assert_eq!(err("$NOPE"), "unknown variable `$NOPE`");
    }

    #[test]
    fn variable_cycles_are_refused() {
        let mut v = Vars::new();
        v.set("A", "[$B]").set("B", "$A");
        let e = eval::<AddrSet>("$A", &v).unwrap_err();
        assert!(e.starts_with("nested more than 16 levels deep"), "{e}");
    }

    #[test]
    fn huge_expansions_are_refused() {
        let mut v = Vars::new();
        v.set("A0", "10.0.0.1");
        for i in 1..=5 {
            let prev = format!("$A{}", i - 1);
            v.set(&format!("A{i}"), &format!("[{}]", vec![prev; 8].join(",")));
        }
        let e = eval::<AddrSet>("$A5", &v).unwrap_err();
        assert_eq!(e, "expands to more than 4096 elements");
    }

    #[test]
    fn malformed_addresses() {
        assert_eq!(err("10.0.0.256"), "`10.0.0.256` is not an address");
        assert_eq!(err("10.0.0.0/33"), "`10.0.0.0/33` is not an address");
        assert_eq!(
            err("10.0.0.0/255.0.255.0"),
            "`10.0.0.0/255.0.255.0` is not an address"
        );
        assert_eq!(err("[10.0.0.1"), "`[10.0.0.1`: unbalanced `[`");
        assert_eq!(
            err("[10.0.0.1]]"),
            "`[10.0.0.1]]`: text after the closing `]`"
        );
        assert_eq!(err("10.0.0.1]"), "`10.0.0.1]`: unbalanced `]`");
        assert_eq!(err("[]"), "`[]`: empty element in a list");
        assert_eq!(
            err("[1.2.3.4,,1.2.3.5]"),
            "`[1.2.3.4,,1.2.3.5]`: empty element in a list"
        );
        assert_eq!(err("$"), "`$` is not a variable name");
        assert!(set("!any").is_empty());
    }
}
