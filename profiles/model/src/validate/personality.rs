//! `[personalities.red]` and `[personalities.black]`: each one's NIC,
//! packages, addresses and gateway, services and limits; and that red's and
//! black's subnets are disjoint.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;

use crate::model::*;
use crate::net::{parse_ip, IfAddr};
use crate::raw::*;
use crate::units::ByteSize;

use super::checker::{debian_package, list, V};
use super::files::files;
use super::hardware::Nics;
use super::services::services;

/// A personality if valid, with the span of its table.
type PersonalityOut = Option<(Range<usize>, Personality)>;

/// `[personalities]`: exactly `red` and `black`, each checked on its own.
pub(super) fn personalities_of(
    v: &mut V<'_>,
    p: &Sp<BTreeMap<String, Sp<RawPersonality>>>,
    nics: Option<&Nics>,
) -> (PersonalityOut, PersonalityOut) {
    let mut unknown = false;
    for (name, raw) in &p.value {
        if name != "red" && name != "black" {
            unknown = true;
            v.err(
                &raw.span,
                format!("personalities.{name}"),
                format!("unknown personality `{name}`; a gateway has exactly `red` and `black`"),
            );
        }
    }
    let mut get = |side: Side| -> PersonalityOut {
        let n = side.name();
        match p.value.get(n) {
            // A misspelt personality is reported above; that it is then
            // missing under its right name is the same mistake.
            None if unknown => None,
            None => {
                v.err(
                    &p.span,
                    format!("personalities.{n}"),
                    format!("missing [personalities.{n}]"),
                );
                None
            }
            Some(raw) => personality(v, side, raw, nics).map(|pp| (raw.span.clone(), pp)),
        }
    };
    let red = get(Side::Red);
    let black = get(Side::Black);
    (red, black)
}

/// One personality; `side` says which. `None` when it has an error
/// (reported).
pub(super) fn personality(
    v: &mut V<'_>,
    side: Side,
    p: &Sp<RawPersonality>,
    nics: Option<&Nics>,
) -> Option<Personality> {
    let t = format!("personalities.{}", side.name());
    let mut ok = true;
    let nic = nic(v, p, &t, nics);
    let packages = packages(v, p, &t);
    ok &= packages.is_some();
    let dhcp = p.dhcp.as_ref().is_some_and(|d| d.value);
    if dhcp && side == Side::Red {
        let span = &p
            .dhcp
            .as_ref()
            .map(|d| d.span.clone())
            .unwrap_or(p.span.clone());
        v.err(
            span,
            format!("{t}.dhcp"),
            "red serves its LAN and needs static addresses; DHCP client mode is for black only",
        );
        ok = false;
    }
    let (addresses, addresses_ok) = if_addresses(v, p, &t);
    ok &= addresses_ok;
    if addresses.is_empty() && !dhcp && ok {
        let span = p
            .addresses
            .as_ref()
            .map(|a| a.span.clone())
            .unwrap_or(p.span.clone());
        v.err(
            &span,
            format!("{t}.addresses"),
            "no address: give at least one `addresses` entry (or `dhcp = true` on black)",
        );
        ok = false;
    }
    let gateway = gateway(v, p, &t, dhcp, &addresses, addresses_ok);
    if p.gateway.is_some() && gateway.is_none() {
        ok = false;
    }
    let services = services(v, p, &t);
    let files = files(v, p, &t);
    let memory_limit = memory_limit(v, p, &t);
    let pids_limit = pids_limit(v, p, &t);
    ok.then_some(())?;
    Some(Personality {
        side,
        nic: nic?,
        packages: packages?,
        addresses,
        gateway,
        dhcp,
        services: services?,
        files: files?,
        memory_limit: memory_limit?,
        pids_limit: pids_limit?,
    })
}

/// `nic`: a role declared in `[hardware.nics]` (not checked when
/// `[hardware]` is missing).
fn nic(v: &mut V<'_>, p: &Sp<RawPersonality>, t: &str, nics: Option<&Nics>) -> Option<String> {
    v.req(&p.nic, &p.span, t, "nic").and_then(|n| match nics {
        Some(nics) if !nics.contains_key(&n.value) => {
            let known: Vec<&str> = nics.keys().map(String::as_str).collect();
            v.err(
                &n.span,
                format!("{t}.nic"),
                format!(
                    "no NIC with role `{}` in [hardware.nics]; known: {}",
                    n.value,
                    known.join(", ")
                ),
            );
            None
        }
        _ => Some(n.value.clone()),
    })
}

/// `packages`: Debian package names, each once. `None` when one is not.
fn packages(v: &mut V<'_>, p: &Sp<RawPersonality>, t: &str) -> Option<Vec<String>> {
    let mut ok = true;
    let mut packages = Vec::new();
    for (i, pk) in list(&p.packages).iter().enumerate() {
        match debian_package(v, pk, &format!("{t}.packages[{i}]")) {
            Some(name) if packages.contains(&name) => {
                v.err(
                    &pk.span,
                    format!("{t}.packages[{i}]"),
                    format!("package `{name}` is listed twice"),
                );
                ok = false;
            }
            Some(name) => packages.push(name),
            None => ok = false,
        }
    }
    ok.then_some(packages)
}

/// `addresses`, each once, and whether all of them are valid (the valid
/// ones are kept in order).
fn if_addresses(v: &mut V<'_>, p: &Sp<RawPersonality>, t: &str) -> (Vec<IfAddr>, bool) {
    let mut addresses = Vec::new();
    let mut addresses_ok = true;
    for (i, a) in list(&p.addresses).iter().enumerate() {
        match v.parse(a, &format!("{t}.addresses[{i}]"), |s| s.parse::<IfAddr>()) {
            Some(addr) if addresses.contains(&addr) => {
                v.err(
                    &a.span,
                    format!("{t}.addresses[{i}]"),
                    format!("address {addr} is listed twice"),
                );
                addresses_ok = false;
            }
            Some(addr) => addresses.push(addr),
            None => addresses_ok = false,
        }
    }
    (addresses, addresses_ok)
}

/// `gateway`: an address on one of the personality's networks.
fn gateway(
    v: &mut V<'_>,
    p: &Sp<RawPersonality>,
    t: &str,
    dhcp: bool,
    addresses: &[IfAddr],
    addresses_ok: bool,
) -> Option<IpAddr> {
    // With an address already reported, the gateway may be on the network
    // that address was meant to give: not checked then.
    p.gateway.as_ref().and_then(|g| {
        let ip = v.parse(g, &format!("{t}.gateway"), parse_ip)?;
        if !dhcp
            && addresses_ok
            && !addresses.is_empty()
            && !addresses.iter().any(|a| a.network().contains(&ip))
        {
            let nets: Vec<String> = addresses.iter().map(|a| a.network().to_string()).collect();
            match &p.addresses {
                Some(list) => v.err_note(
                    &g.span,
                    format!("{t}.gateway"),
                    format!(
                        "gateway {ip} is not on any of this personality's networks ({})",
                        nets.join(", ")
                    ),
                    &list.span,
                    "the addresses are set here",
                ),
                None => v.err(
                    &g.span,
                    format!("{t}.gateway"),
                    format!("gateway {ip} is not on any of this personality's networks"),
                ),
            }
            return None;
        }
        Some(ip)
    })
}

/// `memory_limit`: at least 16 MiB, 256 MiB when not given.
fn memory_limit(v: &mut V<'_>, p: &Sp<RawPersonality>, t: &str) -> Option<ByteSize> {
    match &p.memory_limit {
        None => Some(ByteSize(256 << 20)),
        Some(m) => v.parse(m, &format!("{t}.memory_limit"), |s| {
            let b = ByteSize::parse(s)?;
            if b.0 < (16 << 20) {
                return Err(format!(
                    "`{s}` is too small; a personality needs at least 16MiB"
                ));
            }
            Ok(b)
        }),
    }
}

/// `pids_limit`: 8 to 65536, 256 when not given.
fn pids_limit(v: &mut V<'_>, p: &Sp<RawPersonality>, t: &str) -> Option<u64> {
    match &p.pids_limit {
        None => Some(256),
        Some(n) if n.value < 8 || n.value > 65536 => {
            v.err(
                &n.span,
                format!("{t}.pids_limit"),
                "pids_limit must be between 8 and 65536",
            );
            None
        }
        Some(n) => Some(n.value),
    }
}

/// Red's and black's subnets do not overlap; an overlap is reported at the
/// address written later, with a note at the other.
pub(super) fn disjoint_subnets(
    v: &mut V<'_>,
    red: &(Range<usize>, Personality),
    black: &(Range<usize>, Personality),
    personalities: Option<&Sp<BTreeMap<String, Sp<RawPersonality>>>>,
) {
    let spans = |side: &str, whole: &Range<usize>, n: usize| -> Vec<Range<usize>> {
        let raw: Vec<Range<usize>> = personalities
            .and_then(|p| p.value.get(side))
            .map(|b| list(&b.addresses).iter().map(|a| a.span.clone()).collect())
            .unwrap_or_default();
        (0..n)
            .map(|i| raw.get(i).cloned().unwrap_or(whole.clone()))
            .collect()
    };
    let black_spans = spans("black", &black.0, black.1.addresses.len());
    let red_spans = spans("red", &red.0, red.1.addresses.len());
    for (i, b) in black.1.addresses.iter().enumerate() {
        for (j, r) in red.1.addresses.iter().enumerate() {
            if b.network().overlaps(&r.network()) {
                let (bs, rs) = (&black_spans[i], &red_spans[j]);
                let (span, field, other, note) = if v.later(rs, bs) {
                    (
                        rs,
                        format!("personalities.red.addresses[{j}]"),
                        bs,
                        format!("black's network {} is set here", b.network()),
                    )
                } else {
                    (
                        bs,
                        format!("personalities.black.addresses[{i}]"),
                        rs,
                        format!("red's network {} is set here", r.network()),
                    )
                };
                v.err_note(span, field, format!("black network {} overlaps red network {}; red and black subnets must be disjoint", b.network(), r.network()), other, note);
                break;
            }
        }
    }
}

/// A valid personality with the span of its table, if there is one.
pub(super) type Side2<'a> = Option<&'a (Range<usize>, Personality)>;

/// Spans of a personality's addresses as written (for a valid personality,
/// in the order of [`Personality::addresses`]), and of the whole list.
pub(super) fn address_spans(
    personalities: Option<&Sp<BTreeMap<String, Sp<RawPersonality>>>>,
    side: &str,
) -> (Vec<Range<usize>>, Option<Range<usize>>) {
    let raw = personalities.and_then(|p| p.value.get(side));
    let each = raw
        .map(|r| list(&r.addresses).iter().map(|a| a.span.clone()).collect())
        .unwrap_or_default();
    let whole = raw.and_then(|r| r.addresses.as_ref().map(|a| a.span.clone()));
    (each, whole)
}

/// Addresses of a personality as `IpAddr`s (for the compiler).
pub fn addresses(p: &Personality) -> Vec<IpAddr> {
    p.addresses.iter().map(|a| a.addr).collect()
}
