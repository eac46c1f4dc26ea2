//! Special-purpose address space (RFC 6890 and the IANA special-purpose
//! registries, with multicast and the reserved blocks): a route into it,
//! learned from the internet side, is a "martian" and refused unless the
//! profile allows martians (`[viaduct.learned_routes] martians = "allow"`).
//!
//! A prefix is martian when it lies inside one of these blocks (as a
//! bogon prefix list `deny 10.0.0.0/8 le 32` refuses it); a shorter prefix
//! that merely covers one (`0.0.0.0/0`) is not: whether a default route may
//! be learned is the allowed ranges' question. IPv6 outside global unicast
//! (`2000::/3`) is martian as a whole.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::Prefix;

/// IPv4 special-purpose blocks (address, length) and what they are.
pub const SPECIAL_V4: [(Ipv4Addr, u8, &str); 15] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\" (RFC 791)"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private (RFC 1918)"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "shared address space (RFC 6598)",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback (RFC 1122)"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local (RFC 3927)"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private (RFC 1918)"),
    (
        Ipv4Addr::new(192, 0, 0, 0),
        24,
        "IETF protocol assignments (RFC 6890)",
    ),
    (
        Ipv4Addr::new(192, 0, 2, 0),
        24,
        "documentation TEST-NET-1 (RFC 5737)",
    ),
    (
        Ipv4Addr::new(192, 88, 99, 0),
        24,
        "6to4 relay anycast, deprecated (RFC 7526)",
    ),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private (RFC 1918)"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking (RFC 2544)"),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        "documentation TEST-NET-2 (RFC 5737)",
    ),
    (
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        "documentation TEST-NET-3 (RFC 5737)",
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast (RFC 5771)"),
    (
        Ipv4Addr::new(240, 0, 0, 0),
        4,
        "reserved and limited broadcast (RFC 1112, RFC 919)",
    ),
];

/// IPv6 special-purpose blocks inside global unicast (`2000::/3`); all of
/// IPv6 outside `2000::/3` is special too.
pub const SPECIAL_V6: [(Ipv6Addr, u8, &str); 4] = [
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        "IETF protocol assignments (RFC 2928)",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation (RFC 3849)",
    ),
    (
        Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0),
        16,
        "6to4 (RFC 3056)",
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation (RFC 9637)",
    ),
];

/// The special-purpose block `p` lies in, described, or `None` (also for
/// an invalid prefix: length beyond the family).
pub fn martian(p: &Prefix) -> Option<&'static str> {
    if p.len > p.max_len() {
        return None;
    }
    match p.addr {
        IpAddr::V4(_) => SPECIAL_V4
            .iter()
            .find(|(a, len, _)| *len <= p.len && Prefix::new(IpAddr::V4(*a), *len).contains(p.addr))
            .map(|(_, _, what)| *what),
        IpAddr::V6(_) => {
            let global = Prefix::new(IpAddr::V6(Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0)), 3);
            if p.len < 3 || !global.contains(p.addr) {
                return Some("outside IPv6 global unicast 2000::/3 (RFC 4291)");
            }
            SPECIAL_V6
                .iter()
                .find(|(a, len, _)| {
                    *len <= p.len && Prefix::new(IpAddr::V6(*a), *len).contains(p.addr)
                })
                .map(|(_, _, what)| *what)
        }
    }
}

/// Whether `p` lies inside special-purpose space.
pub fn is_martian(p: &Prefix) -> bool {
    martian(p).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        let (a, l) = s.split_once('/').unwrap();
        Prefix::new(a.parse().unwrap(), l.parse().unwrap())
    }

    #[test]
    fn inside_a_block_is_martian_covering_one_is_not() {
        for m in [
            "10.0.0.0/8",
            "10.1.0.0/24",
            "10.255.255.255/32",
            "100.64.0.0/10",
            "100.127.0.0/16",
            "127.0.0.1/32",
            "169.254.1.0/24",
            "172.16.0.0/12",
            "172.31.255.0/24",
            "192.0.0.0/29",
            "192.0.2.0/24",
            "192.168.1.0/24",
            "198.18.0.0/15",
            "198.19.255.0/24",
            "198.51.100.0/25",
            "203.0.113.0/24",
            "224.0.0.0/4",
            "239.1.2.0/24",
            "240.0.0.0/4",
            "255.255.255.255/32",
            "0.0.0.0/8",
            "::/128",
            "::1/128",
            "::ffff:0:0/96",
            "fe80::/10",
            "fc00::/7",
            "ff02::/16",
            "2001:db8::/32",
            "2001:db8:1::/48",
            "2002::/16",
            "2001::/32",
            "3fff::/20",
            "::/0",
        ] {
            assert!(is_martian(&p(m)), "{m}");
        }
        for g in [
            "0.0.0.0/0",
            "0.0.0.0/4",
            "8.8.8.0/24",
            "1.0.0.0/24",
            "100.63.0.0/16",
            "100.128.0.0/16",
            "172.15.0.0/16",
            "172.32.0.0/16",
            "192.0.3.0/24",
            "192.169.0.0/16",
            "198.17.0.0/16",
            "198.20.0.0/16",
            "223.255.255.0/24",
            "2000::/3",
            "2a00:1450::/32",
            "2001:200::/23",
            "2003::/16",
        ] {
            assert!(!is_martian(&p(g)), "{g}");
        }
        // Named.
        assert_eq!(martian(&p("10.1.0.0/16")), Some("private (RFC 1918)"));
        // An invalid length is not judged.
        assert_eq!(martian(&p("10.0.0.0/33")), None);
    }
}
