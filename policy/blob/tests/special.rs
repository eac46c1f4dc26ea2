//! The special-purpose table ([`policy_blob::special`]) against an oracle we
//! did not write: Python's `ipaddress` module (the IANA special-purpose
//! registries), over 20,000 generated prefixes. A prefix long enough to lie
//! in one block or outside all of them (IPv4 /24 and longer, IPv6 /48 and
//! longer) is martian for us exactly when its network address is not
//! global, or is multicast or reserved, for Python — except in the blocks
//! listed in [`INTENDED`], where this table is stricter on purpose.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use policy_blob::special::is_martian;
use policy_blob::Prefix;

/// Where we refuse what Python calls global, and why.
const INTENDED: [(&str, &str); 6] = [
    (
        "fec0::/10",
        "site-local, deprecated by RFC 3879: outside global unicast 2000::/3; Python only flags it is_site_local",
    ),
    (
        "192.0.0.0/24",
        "IETF protocol assignments: RFC 6890 marks the block not globally reachable; Python only its /29 and a few hosts",
    ),
    (
        "192.88.99.0/24",
        "the 6to4 relay anycast block, deprecated by RFC 7526 and on every bogon list",
    ),
    ("2002::/16", "6to4 (RFC 3056): no route to it belongs in a table today"),
    ("3fff::/20", "documentation (RFC 9637), newer than Python 3.11's table"),
    (
        "2001::/23",
        "IETF protocol assignments: refused whole; Python calls a few of its sub-blocks (AS112, AMT, ORCHIDv2) global",
    ),
];

fn python_special(prefixes: &[Prefix]) -> Option<Vec<bool>> {
    let script = [
        "import sys, ipaddress",
        "for line in sys.stdin:",
        "    a = ipaddress.ip_network(line.strip()).network_address",
        "    print(1 if (not a.is_global) or a.is_multicast or a.is_reserved else 0)",
    ]
    .join("\n");
    let mut child = match Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIP (LOUD): python3 not found ({e}): the martian oracle did not run");
            return None;
        }
    };
    {
        let mut stdin = child.stdin.take().unwrap();
        for p in prefixes {
            writeln!(stdin, "{}/{}", p.addr, p.len).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3 failed");
    Some(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l == "1")
            .collect(),
    )
}

fn intended(p: &Prefix) -> Option<&'static str> {
    INTENDED.iter().find_map(|(block, why)| {
        let (a, l) = block.split_once('/').unwrap();
        let b = Prefix::new(a.parse().unwrap(), l.parse().unwrap());
        (b.len <= p.len && b.contains(p.addr)).then_some(*why)
    })
}

#[test]
fn martians_agree_with_pythons_ipaddress() {
    // A small deterministic generator: no dependency, the same prefixes
    // every run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut prefixes = Vec::new();
    for i in 0..20_000u32 {
        let r = next();
        let p = match i % 4 {
            // IPv4 anywhere, and near the special blocks' edges.
            0 | 1 => {
                let a = if i % 4 == 0 {
                    r as u32
                } else {
                    let bases = [
                        0x0a00_0000u32,
                        0x6440_0000,
                        0x7f00_0000,
                        0xa9fe_0000,
                        0xac10_0000,
                        0xc000_0000,
                        0xc000_0200,
                        0xc058_6300,
                        0xc0a8_0000,
                        0xc612_0000,
                        0xc633_6400,
                        0xcb00_7100,
                        0xe000_0000,
                        0xf000_0000,
                    ];
                    let b = bases[(r >> 40) as usize % bases.len()];
                    b.wrapping_add((r as u32 % 0x0040_0000).wrapping_sub(0x0020_0000))
                };
                let len = 24 + (r >> 50) as u8 % 9;
                let m = u32::MAX << (32 - u32::from(len));
                Prefix::new(IpAddr::V4(Ipv4Addr::from(a & m)), len)
            }
            // IPv6: global unicast mostly, the rest anywhere.
            _ => {
                let hi = if i % 4 == 2 {
                    let tops = [0x2000u16, 0x2001, 0x2002, 0x2a00, 0x3fff, 0x3ffe, 0x2400];
                    let t = tops[(r >> 40) as usize % tops.len()];
                    (u128::from(t) << 112) | (u128::from(next()) << 48)
                } else {
                    (u128::from(next()) << 64) | u128::from(next())
                };
                let len = 48 + (r >> 50) as u8 % 81;
                let m = u128::MAX << (128 - u32::from(len));
                Prefix::new(IpAddr::V6(Ipv6Addr::from(hi & m)), len)
            }
        };
        prefixes.push(p);
    }
    let Some(oracle) = python_special(&prefixes) else {
        return;
    };
    assert_eq!(oracle.len(), prefixes.len());
    let mut differ = Vec::new();
    let mut agreed = 0;
    for (p, py) in prefixes.iter().zip(oracle) {
        let ours = is_martian(p);
        if ours == py {
            agreed += 1;
            continue;
        }
        match intended(p) {
            Some(_) if ours && !py => {}
            _ => differ.push(format!("{}/{}: ours {ours}, Python {py}", p.addr, p.len)),
        }
    }
    assert!(
        differ.is_empty(),
        "{} unintended differences, e.g. {:?}",
        differ.len(),
        &differ[..differ.len().min(10)]
    );
    assert!(agreed > 19_000, "only {agreed} of 20000 agreed");
}
