//! The Viaduct's packet rules: `[[viaduct.spd]]`, `[[viaduct.filter]]`
//! with `filter_default`; their traffic selectors
//! (addresses, protocol, ports) and the TCP flags of filter rules.

use std::collections::BTreeMap;

use crate::model::*;
use crate::net::{parse_protocol, PortRange, Prefix};
use crate::raw::*;

use super::checker::{list, V};

/// `[[viaduct.spd]]`: `None` when a rule has an error (reported).
pub(super) fn spd_rules(v: &mut V<'_>, vr: &Sp<RawViaduct>) -> Option<Vec<SpdRule>> {
    let mut ok = true;
    let mut names = Vec::new();
    let mut spd = Vec::new();
    for (i, r) in list(&vr.spd).iter().enumerate() {
        let f = format!("viaduct.spd[{i}]");
        let name = v
            .req(&r.name, &r.span, &f, "name")
            .and_then(|n| v.name(n, &format!("{f}.name")));
        if let Some(n) = &r.name {
            names.push((n.value.clone(), n.span.clone(), format!("{f}.name")));
        }
        let sel = selector(v, &f, &r.src, &r.dst, &r.protocol, &None, &r.dst_ports);
        let action = v.req(&r.action, &r.span, &f, "action").and_then(|a| {
            v.one_of(
                a,
                &format!("{f}.action"),
                &[
                    ("bypass", SpdAction::Bypass),
                    ("discard", SpdAction::Discard),
                ],
            )
        });
        match (name, sel, action) {
            (Some(name), Some(selector), Some(action)) => spd.push(SpdRule {
                name,
                selector,
                action,
            }),
            _ => ok = false,
        }
    }
    v.unique("SPD rule", &names);
    ok.then_some(spd)
}

/// The most selectors one filter rule may expand to (sets, port lists and
/// ICMP types multiplied).
pub const MAX_RULE_EXPANSION: usize = 1024;

/// `[viaduct.sets]`, and whether every set is valid (errors reported). A
/// set with an error is in the map with no prefix, so that rules naming it
/// are not reported again.
pub(super) fn address_sets(
    v: &mut V<'_>,
    vr: &Sp<RawViaduct>,
) -> (BTreeMap<String, Vec<Prefix>>, bool) {
    let mut ok = true;
    let mut sets = BTreeMap::new();
    let Some(raw) = &vr.sets else {
        return (sets, true);
    };
    for (name, list) in &raw.value {
        let field = format!("viaduct.sets.{name}");
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            v.err(
                &list.span,
                field.clone(),
                format!("set name `{name}`: use lowercase letters, digits and `-`"),
            );
            ok = false;
            sets.insert(name.clone(), Vec::new());
            continue;
        }
        if list.value.is_empty() {
            v.err(
                &list.span,
                field,
                "an empty set: list at least one prefix, or remove the set",
            );
            ok = false;
            sets.insert(name.clone(), Vec::new());
            continue;
        }
        let mut prefixes = Vec::new();
        let mut set_ok = true;
        for (i, p) in list.value.iter().enumerate() {
            match v.parse(p, &format!("{field}[{i}]"), |s| s.parse::<Prefix>()) {
                Some(x) => prefixes.push(x),
                None => set_ok = false,
            }
        }
        if !set_ok {
            prefixes.clear();
            ok = false;
        }
        sets.insert(name.clone(), prefixes);
    }
    (sets, ok)
}

/// A filter rule's `src` or `dst`: `@set` (its prefixes) or what the
/// selector parsed (one prefix, or any).
fn addresses(
    v: &mut V<'_>,
    raw: &Option<Sp<String>>,
    parsed: Option<Prefix>,
    field: String,
    sets: &BTreeMap<String, Vec<Prefix>>,
) -> Option<Vec<Option<Prefix>>> {
    let Some(r) = raw.as_ref().filter(|r| r.value.starts_with('@')) else {
        return Some(vec![parsed]);
    };
    let name = &r.value[1..];
    match sets.get(name) {
        // A set with an error, reported with it.
        Some(list) if list.is_empty() => None,
        Some(list) => Some(list.iter().copied().map(Some).collect()),
        None => {
            let known: Vec<&str> = sets.keys().map(String::as_str).collect();
            v.err(
                &r.span,
                field,
                if known.is_empty() {
                    format!("no set `{name}`: define it in [viaduct.sets]")
                } else {
                    format!(
                        "no set `{name}` in [viaduct.sets] (there are: {})",
                        known.join(", ")
                    )
                },
            );
            None
        }
    }
}

/// A filter rule's port list `80,443,8000-8080` (ports of TCP and UDP only).
fn port_list(
    v: &mut V<'_>,
    p: &Sp<String>,
    protocol: Option<u8>,
    field: String,
) -> Option<Vec<PortRange>> {
    if !matches!(protocol, Some(6) | Some(17)) {
        v.err(
            &p.span,
            field,
            "ports need `protocol = \"tcp\"` or `\"udp\"`",
        );
        return None;
    }
    let mut out = Vec::new();
    for item in p.value.split(',') {
        match item.trim().parse::<PortRange>() {
            Ok(r) => out.push(r),
            Err(e) => {
                v.err(&p.span, field, format!("in the list: {e}"));
                return None;
            }
        }
    }
    Some(out)
}

/// ICMP type names (for `protocol` 1 or 58).
fn icmp_types(
    v: &mut V<'_>,
    l: &Sp<Vec<Sp<String>>>,
    protocol: Option<u8>,
    f: &str,
) -> Option<Vec<PortRange>> {
    let field = format!("{f}.icmp_type");
    let v6 = match protocol {
        Some(1) => false,
        Some(58) => true,
        _ => {
            v.err(
                &l.span,
                field,
                "ICMP types need `protocol = \"icmp\"` or `\"icmpv6\"`",
            );
            return None;
        }
    };
    if l.value.is_empty() {
        v.err(
            &l.span,
            field,
            "no types: name at least one or leave icmp_type out",
        );
        return None;
    }
    let mut out = Vec::new();
    for (i, x) in l.value.iter().enumerate() {
        let ty = match (x.value.as_str(), v6) {
            ("echo-request", false) => Some(8),
            ("echo-reply", false) => Some(0),
            ("destination-unreachable", false) => Some(3),
            ("time-exceeded", false) => Some(11),
            ("parameter-problem", false) => Some(12),
            ("echo-request", true) => Some(128),
            ("echo-reply", true) => Some(129),
            ("destination-unreachable", true) => Some(1),
            ("packet-too-big", true) => Some(2),
            ("time-exceeded", true) => Some(3),
            ("parameter-problem", true) => Some(4),
            (n, _) => n.parse::<u8>().ok(),
        };
        let Some(ty) = ty else {
            v.err(
                &x.span,
                format!("{field}[{i}]"),
                format!(
                    "unknown ICMP{} type `{}`: use echo-request, echo-reply, destination-unreachable,{} time-exceeded, parameter-problem or a number 0-255",
                    if v6 { "v6" } else { "" },
                    x.value,
                    if v6 { " packet-too-big," } else { "" }
                ),
            );
            return None;
        };
        out.push(PortRange {
            start: u16::from(ty),
            end: u16::from(ty),
        });
    }
    Some(out)
}

/// `[[viaduct.filter]]`: `None` when a rule has an error (reported).
pub(super) fn filter_rules(
    v: &mut V<'_>,
    vr: &Sp<RawViaduct>,
    sets: &BTreeMap<String, Vec<Prefix>>,
) -> Option<Vec<FilterRule>> {
    let mut ok = true;
    let mut names = Vec::new();
    let mut filter = Vec::new();
    for (i, r) in list(&vr.filter).iter().enumerate() {
        let f = format!("viaduct.filter[{i}]");
        let name = v
            .req(&r.name, &r.span, &f, "name")
            .and_then(|n| v.name(n, &format!("{f}.name")));
        if let Some(n) = &r.name {
            names.push((n.value.clone(), n.span.clone(), format!("{f}.name")));
        }
        let direction = v.req(&r.direction, &r.span, &f, "direction").and_then(|d| {
            v.one_of(
                d,
                &format!("{f}.direction"),
                &[
                    ("outbound", Direction::Outbound),
                    ("inbound", Direction::Inbound),
                ],
            )
        });
        // Sets and lists are expanded below; the selector checks the rest.
        let set = |p: &Option<Sp<String>>| p.as_ref().is_some_and(|x| x.value.starts_with('@'));
        let list = |p: &Option<Sp<String>>| p.as_ref().is_some_and(|x| x.value.contains(','));
        let none = None;
        let sel = selector(
            v,
            &f,
            if set(&r.src) { &none } else { &r.src },
            if set(&r.dst) { &none } else { &r.dst },
            &r.protocol,
            if list(&r.src_ports) {
                &none
            } else {
                &r.src_ports
            },
            if list(&r.dst_ports) {
                &none
            } else {
                &r.dst_ports
            },
        );
        let selectors = sel.as_ref().and_then(|s| expand(v, r, s, &f, sets));
        // After a protocol that did not parse, flags are not checked
        // against it (one mistake, one error).
        let flags = match (&r.tcp_flags, &sel) {
            (None, _) => Some(TcpFlags::default()),
            (Some(l), Some(s)) => tcp_flags(v, l, s.protocol, &f),
            (Some(_), None) => None,
        };
        let states = match &r.state {
            None => Some(ConnStates::default()),
            Some(l) => conn_states(v, l, &f),
        };
        let limit = match &r.limit {
            None => Some(None),
            Some(l) => v.parse(l, &format!("{f}.limit"), parse_limit).map(Some),
        };
        let timeouts = match &r.timeouts {
            None => Some(None),
            Some(t) => flow_timeouts(v, t, &f).map(Some),
        };
        let action = v.req(&r.action, &r.span, &f, "action").and_then(|a| {
            v.one_of(
                a,
                &format!("{f}.action"),
                &[
                    ("accept", FilterAction::Accept),
                    ("drop", FilterAction::Drop),
                ],
            )
        });
        match (
            name, direction, selectors, flags, states, limit, timeouts, action,
        ) {
            (
                Some(name),
                Some(direction),
                Some(selectors),
                Some(tcp_flags),
                Some(states),
                Some(limit),
                Some(timeouts),
                Some(action),
            ) => filter.push(FilterRule {
                name,
                direction,
                selectors,
                tcp_flags,
                states,
                limit,
                timeouts,
                log: r.log.as_ref().is_some_and(|b| b.value),
                action,
            }),
            _ => ok = false,
        }
    }
    v.unique("filter rule", &names);
    ok.then_some(filter)
}

/// A filter rule's selectors: one per pair of addresses (sets), port range
/// (lists) and ICMP type; pairs of two address families are left out, and
/// a rule left with none, or with more than [`MAX_RULE_EXPANSION`], is an
/// error.
fn expand(
    v: &mut V<'_>,
    r: &Sp<RawFilterRule>,
    s: &Selector,
    f: &str,
    sets: &BTreeMap<String, Vec<Prefix>>,
) -> Option<Vec<Selector>> {
    let srcs = addresses(v, &r.src, s.src, format!("{f}.src"), sets);
    let dsts = addresses(v, &r.dst, s.dst, format!("{f}.dst"), sets);
    let ports = |v: &mut V<'_>, p: &Option<Sp<String>>, parsed: PortRange, key: &str| match p {
        Some(x) if x.value.contains(',') => port_list(v, x, s.protocol, format!("{f}.{key}")),
        _ => Some(vec![parsed]),
    };
    let sports = ports(v, &r.src_ports, s.src_ports, "src_ports");
    let dports = ports(v, &r.dst_ports, s.dst_ports, "dst_ports");
    let types = match &r.icmp_type {
        None => Some(None),
        Some(l) => icmp_types(v, l, s.protocol, f).map(Some),
    };
    let (srcs, dsts, sports, dports, types) = (srcs?, dsts?, sports?, dports?, types?);
    // ICMP types take the place of source ports (RFC 4301 §4.4.1.1).
    let sports = types.unwrap_or(sports);
    let mut out = Vec::new();
    for src in &srcs {
        for dst in &dsts {
            if let (Some(a), Some(b)) = (src, dst) {
                if a.is_ipv4() != b.is_ipv4() {
                    continue;
                }
            }
            for sp in &sports {
                for dp in &dports {
                    out.push(Selector {
                        src: *src,
                        dst: *dst,
                        protocol: s.protocol,
                        src_ports: *sp,
                        dst_ports: *dp,
                    });
                }
            }
        }
    }
    if out.is_empty() {
        v.err(
            &r.span,
            f.to_string(),
            "`src` and `dst` have no address family in common: the rule matches nothing",
        );
        return None;
    }
    if out.len() > MAX_RULE_EXPANSION {
        v.err(
            &r.span,
            f.to_string(),
            format!(
                "the rule's sets, port lists and ICMP types make {} combinations; at most {MAX_RULE_EXPANSION}: split it",
                out.len()
            ),
        );
        return None;
    }
    Some(out)
}

/// `viaduct.filter_default`: accept (when not given) or drop.
pub(super) fn filter_default(v: &mut V<'_>, vr: &Sp<RawViaduct>) -> Option<FilterAction> {
    match &vr.filter_default {
        None => Some(FilterAction::Accept),
        Some(d) => v.one_of(
            d,
            "viaduct.filter_default",
            &[
                ("accept", FilterAction::Accept),
                ("drop", FilterAction::Drop),
            ],
        ),
    }
}

/// A rate limit: `N/unit` with an optional ` burst M` (unit `s`,
/// `second`, `m`, `minute`, `h`, `hour`).
fn parse_limit(s: &str) -> Result<RuleLimit, String> {
    let usage = "write a rate as `20/s`, `100/minute` or `5/hour`, with an optional ` burst 40`";
    let mut words = s.split_whitespace();
    let rate = words.next().ok_or_else(|| usage.to_string())?;
    let (n, unit) = rate
        .split_once('/')
        .ok_or_else(|| format!("`{s}`: {usage}"))?;
    let count = |w: &str, what: &str| -> Result<u32, String> {
        match w.parse::<u32>() {
            Ok(x) if (1..=1_000_000).contains(&x) => Ok(x),
            _ => Err(format!(
                "`{w}`: the {what} is a whole number from 1 to 1000000"
            )),
        }
    };
    let rate = count(n, "rate")?;
    let per_seconds = match unit {
        "s" | "second" => 1,
        "m" | "minute" => 60,
        "h" | "hour" => 3600,
        other => return Err(format!("`{other}`: per s, second, m, minute, h or hour")),
    };
    let burst = match (words.next(), words.next(), words.next()) {
        (None, _, _) => rate,
        (Some("burst"), Some(b), None) => count(b, "burst")?,
        _ => return Err(format!("`{s}`: {usage}")),
    };
    Ok(RuleLimit {
        rate,
        per_seconds,
        burst,
    })
}

/// A rule's `timeouts` table: pf's names, 1 s to 1 year each; the rest
/// keep their defaults.
fn flow_timeouts(v: &mut V<'_>, t: &Sp<BTreeMap<String, Sp<u64>>>, f: &str) -> Option<[u32; 14]> {
    let mut out = FLOW_TIMEOUTS.map(|(_, d)| d);
    let mut ok = true;
    for (name, value) in &t.value {
        let field = format!("{f}.timeouts.{name}");
        let Some(i) = FLOW_TIMEOUTS.iter().position(|(n, _)| n == name) else {
            let names: Vec<&str> = FLOW_TIMEOUTS.iter().map(|(n, _)| *n).collect();
            v.err(
                &value.span,
                field,
                format!("unknown timeout `{name}`: use {}", names.join(", ")),
            );
            ok = false;
            continue;
        };
        if !(1..=31_536_000).contains(&value.value) {
            v.err(
                &value.span,
                field,
                "a timeout is 1 to 31536000 seconds (one year)",
            );
            ok = false;
            continue;
        }
        out[i] = value.value as u32;
    }
    ok.then_some(out)
}

/// `viaduct.filter_max_flows`: 1 to 4,000,000, 100,000 when not given.
pub(super) fn filter_max_flows(v: &mut V<'_>, vr: &Sp<RawViaduct>) -> Option<u32> {
    match &vr.filter_max_flows {
        None => Some(DEFAULT_MAX_FLOWS),
        Some(n) if n.value < 1 || n.value > 4_000_000 => {
            v.err(
                &n.span,
                "viaduct.filter_max_flows",
                "filter_max_flows must be between 1 and 4000000 (connections tracked at once)",
            );
            None
        }
        Some(n) => u32::try_from(n.value).ok(),
    }
}

/// `state` of a filter rule: state names, each once, at least one.
fn conn_states(v: &mut V<'_>, l: &Sp<Vec<Sp<String>>>, f: &str) -> Option<ConnStates> {
    let field = format!("{f}.state");
    if l.value.is_empty() {
        v.err(
            &l.span,
            field,
            "no states: name at least one (e.g. [\"established\", \"related\"]) or leave state out",
        );
        return None;
    }
    let mut states = ConnStates::default();
    for (i, x) in l.value.iter().enumerate() {
        let name = x.value.to_ascii_lowercase();
        let Some(&(canon, bit)) = ConnStates::NAMES.iter().find(|(n, _)| *n == name) else {
            v.err(
                &x.span,
                format!("{field}[{i}]"),
                format!(
                    "unknown connection state `{}`: use new, established, related or invalid",
                    x.value
                ),
            );
            return None;
        };
        if states.0 & bit != 0 {
            v.err(
                &x.span,
                format!("{field}[{i}]"),
                format!("`{canon}` is named twice; name each state once"),
            );
            return None;
        }
        states.0 |= bit;
    }
    Some(states)
}

/// A rule's traffic selector, `field` being the rule's: prefixes of one
/// address family, a protocol, and ports only for TCP and UDP.
fn selector(
    v: &mut V<'_>,
    field: &str,
    src: &Option<Sp<String>>,
    dst: &Option<Sp<String>>,
    protocol: &Option<Sp<String>>,
    src_ports: &Option<Sp<String>>,
    dst_ports: &Option<Sp<String>>,
) -> Option<Selector> {
    let mut ok = true;
    let mut prefix = |v: &mut V<'_>, p: &Option<Sp<String>>, key: &str| -> Option<Prefix> {
        let p = p.as_ref()?;
        let r = v.parse(p, &format!("{field}.{key}"), |s| s.parse::<Prefix>());
        if r.is_none() {
            ok = false;
        }
        r
    };
    let src_p = prefix(v, src, "src");
    let dst_p = prefix(v, dst, "dst");
    let mut proto_ok = true;
    let proto = match protocol {
        None => None,
        Some(p) => match v.parse(p, &format!("{field}.protocol"), parse_protocol) {
            Some(x) => x,
            None => {
                proto_ok = false;
                None
            }
        },
    };
    ok &= proto_ok;
    let mut ports = |v: &mut V<'_>, p: &Option<Sp<String>>, key: &str| -> PortRange {
        let Some(p) = p else { return PortRange::ANY };
        // After an unknown protocol (reported above) only the ports' own
        // syntax is checked: whether they fit the protocol meant is unknown.
        if !proto_ok {
            if v.parse(p, &format!("{field}.{key}"), |s| s.parse::<PortRange>())
                .is_none()
            {
                ok = false;
            }
            return PortRange::ANY;
        }
        if !matches!(proto, Some(6) | Some(17)) {
            v.err(
                &p.span,
                format!("{field}.{key}"),
                "ports need `protocol = \"tcp\"` or `\"udp\"`",
            );
            ok = false;
            return PortRange::ANY;
        }
        v.parse(p, &format!("{field}.{key}"), |s| s.parse::<PortRange>())
            .unwrap_or_else(|| {
                ok = false;
                PortRange::ANY
            })
    };
    let src_ports = ports(v, src_ports, "src_ports");
    let dst_ports = ports(v, dst_ports, "dst_ports");
    if let (Some(s), Some(d)) = (src_p, dst_p) {
        if s.is_ipv4() != d.is_ipv4() {
            if let Some(d) = dst {
                v.err(
                    &d.span,
                    format!("{field}.dst"),
                    "source and destination must be the same address family",
                );
            }
            ok = false;
        }
    }
    ok.then_some(Selector {
        src: src_p,
        dst: dst_p,
        protocol: proto,
        src_ports,
        dst_ports,
    })
}

/// `tcp_flags` of a filter rule: `flag` (set) or `!flag` (clear), each
/// named once, only on TCP rules.
fn tcp_flags(
    v: &mut V<'_>,
    l: &Sp<Vec<Sp<String>>>,
    protocol: Option<u8>,
    f: &str,
) -> Option<TcpFlags> {
    let field = format!("{f}.tcp_flags");
    if protocol != Some(6) {
        v.err(
            &l.span,
            field,
            "TCP flags need `protocol = \"tcp\"`; other packets have none",
        );
        return None;
    }
    if l.value.is_empty() {
        v.err(
            &l.span,
            field,
            "no flags: name at least one (e.g. [\"ack\"]) or leave tcp_flags out",
        );
        return None;
    }
    let mut flags = TcpFlags::default();
    for (i, x) in l.value.iter().enumerate() {
        let (clear, name) = match x.value.strip_prefix('!') {
            Some(n) => (true, n),
            None => (false, x.value.as_str()),
        };
        let name = name.to_ascii_lowercase();
        let Some(&(canon, bit)) = TcpFlags::NAMES.iter().find(|(n, _)| *n == name) else {
            v.err(
                &x.span,
                format!("{field}[{i}]"),
                format!("unknown TCP flag `{}`: use fin, syn, rst, psh, ack, urg, ece or cwr, written `!syn` for a flag that must be clear", x.value),
            );
            return None;
        };
        if flags.mask & bit != 0 {
            v.err(
                &x.span,
                format!("{field}[{i}]"),
                format!("`{canon}` is named twice; name each flag once, set (`{canon}`) or clear (`!{canon}`)"),
            );
            return None;
        }
        flags.mask |= bit;
        if !clear {
            flags.value |= bit;
        }
    }
    Some(flags)
}
