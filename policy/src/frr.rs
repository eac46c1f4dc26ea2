//! `appliance policy export --format frr`: the router role's learned-route
//! ranges as FRR prefix lists, so that black's FRR may refuse, inbound from
//! its BGP peers, what the Viaduct would refuse anyway (and so that the two
//! can be compared: `viaduct/tests/viaduct/netns/router.rs`).
//!
//! `viaduct-learn` (IPv4) and `viaduct-learn6` (IPv6): with martians
//! denied, a `deny … le <width>` entry per special-purpose block first
//! (`policy_blob::special`; IPv6 outside `2000::/3` as the complement's
//! blocks), then a `permit` per allowed range, in order; FRR's implicit
//! deny ends each list. Routes into red's networks need no entry: the
//! profile's ranges never reach them.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};

use policy_blob as blob;

/// One range as FRR writes it: `P`, `P le M` or `P ge N le M` (FRR takes
/// `ge` only above the prefix's length).
fn range(a: &blob::PrefixRange) -> String {
    let p = format!("{}/{}", a.prefix.addr, a.prefix.len);
    match (a.min_len == a.prefix.len, a.max_len == a.min_len) {
        (true, true) => p,
        (true, false) => format!("{p} le {}", a.max_len),
        (false, _) => format!("{p} ge {} le {}", a.min_len, a.max_len),
    }
}

/// IPv6 outside global unicast (`2000::/3`), as prefixes: `::/3` (with
/// `::1`, IPv4-mapped, NAT64), `4000::/2`, `8000::/1` (with `fc00::/7`,
/// `fe80::/10`, `ff00::/8`).
const V6_OUTSIDE_GLOBAL: [(Ipv6Addr, u8); 3] = [
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 3),
    (Ipv6Addr::new(0x4000, 0, 0, 0, 0, 0, 0, 0), 2),
    (Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0), 1),
];

/// The prefix lists, or a comment saying there is nothing to export.
pub fn export(p: &blob::Policy) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "! The learned-route ranges of policy {} {} (digest {}), from `appliance policy export --format frr`.",
        p.profile_name,
        p.profile_version,
        p.digest().to_hex()
    );
    let Some(l) = &p.learn else {
        let _ = writeln!(o, "! This policy learns no routes: nothing to export.");
        return o;
    };
    let _ = writeln!(
        o,
        "! Apply inbound to each BGP neighbour (`neighbor X prefix-list viaduct-learn in`,\n\
         ! `viaduct-learn6` under `address-family ipv6 unicast`). The Viaduct also holds at\n\
         ! most {} learned routes (FRR: `neighbor X maximum-prefix`, counted per neighbour).",
        l.max_routes
    );
    for (v6, name, cmd) in [
        (false, "viaduct-learn", "ip"),
        (true, "viaduct-learn6", "ipv6"),
    ] {
        let mut seq = 0u32;
        let entry = |o: &mut String, seq: &mut u32, action: &str, what: String| {
            *seq += 5;
            let _ = writeln!(o, "{cmd} prefix-list {name} seq {seq} {action} {what}");
        };
        if !l.martians {
            let width = if v6 { 128 } else { 32 };
            let blocks: Vec<(IpAddr, u8)> = if v6 {
                V6_OUTSIDE_GLOBAL
                    .iter()
                    .map(|(a, n)| (IpAddr::V6(*a), *n))
                    .chain(
                        blob::special::SPECIAL_V6
                            .iter()
                            .map(|(a, n, _)| (IpAddr::V6(*a), *n)),
                    )
                    .collect()
            } else {
                blob::special::SPECIAL_V4
                    .iter()
                    .map(|(a, n, _)| (IpAddr::V4(*a), *n))
                    .collect()
            };
            for (a, n) in blocks {
                entry(&mut o, &mut seq, "deny", format!("{a}/{n} le {width}"));
            }
        }
        let mut any = false;
        for a in l.allow.iter().filter(|a| a.prefix.addr.is_ipv6() == v6) {
            entry(&mut o, &mut seq, "permit", range(a));
            any = true;
        }
        if !any {
            let _ = writeln!(
                o,
                "! no {} range allowed: `{name}` denies everything",
                if v6 { "IPv6" } else { "IPv4" }
            );
            if seq == 0 {
                entry(
                    &mut o,
                    &mut seq,
                    "deny",
                    if v6 { "::/0 le 128" } else { "0.0.0.0/0 le 32" }.into(),
                );
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(s: &str) -> blob::Prefix {
        let (a, l) = s.split_once('/').unwrap();
        blob::Prefix::new(a.parse().unwrap(), l.parse().unwrap())
    }

    #[test]
    fn ranges_and_martians_become_prefix_lists() {
        let p = blob::Policy::new("r", "1")
            .with_route(pre("10.1.0.0/24"), blob::RouteVia::Red)
            .with_learn(blob::LearnPolicy {
                allow: vec![
                    blob::PrefixRange {
                        prefix: pre("1.1.0.0/16"),
                        min_len: 16,
                        max_len: 24,
                    },
                    blob::PrefixRange {
                        prefix: pre("0.0.0.0/0"),
                        min_len: 0,
                        max_len: 0,
                    },
                    blob::PrefixRange {
                        prefix: pre("2a00::/12"),
                        min_len: 32,
                        max_len: 48,
                    },
                ],
                max_routes: 100,
                martians: false,
            });
        let t = export(&p);
        for want in [
            "ip prefix-list viaduct-learn seq 5 deny 0.0.0.0/8 le 32",
            "ip prefix-list viaduct-learn seq 10 deny 10.0.0.0/8 le 32",
            "ip prefix-list viaduct-learn seq 80 permit 1.1.0.0/16 le 24",
            "ip prefix-list viaduct-learn seq 85 permit 0.0.0.0/0\n",
            "ipv6 prefix-list viaduct-learn6 seq 5 deny ::/3 le 128",
            "ipv6 prefix-list viaduct-learn6 seq 15 deny 8000::/1 le 128",
            "ipv6 prefix-list viaduct-learn6 seq 25 deny 2001:db8::/32 le 128",
            "ipv6 prefix-list viaduct-learn6 seq 40 permit 2a00::/12 ge 32 le 48",
            "most 100 learned routes",
        ] {
            assert!(t.contains(want), "{want:?} in\n{t}");
        }
        let none = export(&blob::Policy::new("fw", "1"));
        assert!(none.contains("learns no routes"), "{none}");
    }
}
