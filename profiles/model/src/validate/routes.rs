//! `[[viaduct.routes]]`: each route on its own, then the table as a whole.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::model::*;
use crate::net::Prefix;
use crate::raw::*;

use super::checker::{list, V};
use super::personality::Side2;

/// A route that parsed, with where it was written.
struct RouteAt {
    route: Route,
    field: String,
    dst_span: Range<usize>,
}

/// `[[viaduct.routes]]`: each route on its own, then the table as a whole:
/// no destination routed twice, no part of red's networks sent out of black
/// (by longest-prefix match over all routes), and a route into a tunnel
/// only for destinations the tunnel's remote selectors cover.
pub(super) fn routes(
    v: &mut V<'_>,
    vr: &Sp<RawViaduct>,
    ipsec: Option<&Ipsec>,
    red: Side2<'_>,
    personalities: Option<&Sp<BTreeMap<String, Sp<RawPersonality>>>>,
) -> Option<Vec<Route>> {
    let mut ok = true;
    // Tunnels as written (a tunnel with its own error is still a tunnel:
    // a route into it is not reported as naming no tunnel).
    let raw_tunnels: Vec<&Sp<RawTunnel>> = vr
        .ipsec
        .iter()
        .flat_map(|i| list(&i.peers))
        .flat_map(|p| list(&p.tunnels))
        .collect();
    let valid: Vec<&Tunnel> = ipsec
        .iter()
        .flat_map(|i| i.peers.iter().flat_map(|p| p.tunnels.iter()))
        .collect();
    let mut parsed: Vec<RouteAt> = Vec::new();
    for (i, r) in list(&vr.routes).iter().enumerate() {
        match route(v, r, i, &valid, &raw_tunnels) {
            Some(r) => parsed.push(r),
            None => ok = false,
        }
    }
    let doubled = doubled(v, &parsed);
    if doubled.contains(&true) {
        ok = false;
    }
    // Red's own networks must not leave through black: for each route via
    // black, the part of red's network it matches must be taken by more
    // specific routes (longest prefix wins). This looks at the whole table:
    // with a route already reported (perhaps the one meant for red), it
    // would report a consequence of that mistake, so it waits.
    if let (Some((_, red)), true) = (red, ok) {
        ok &= red_stays_in(v, &parsed, &doubled, red, personalities);
    }
    ok &= within_tunnels(v, &parsed, &doubled, &valid, &raw_tunnels);
    ok.then(|| parsed.into_iter().map(|r| r.route).collect())
}

/// Route `i` on its own: a destination prefix and a next hop (`red`,
/// `black` or a tunnel; `valid` are the tunnels that validated,
/// `raw_tunnels` all tunnels as written). `None` when it has an error.
fn route(
    v: &mut V<'_>,
    r: &Sp<RawRoute>,
    i: usize,
    valid: &[&Tunnel],
    raw_tunnels: &[&Sp<RawTunnel>],
) -> Option<RouteAt> {
    let f = format!("viaduct.routes[{i}]");
    let dst = v
        .req(&r.dst, &r.span, &f, "dst")
        .and_then(|d| v.parse(d, &format!("{f}.dst"), |s| s.parse::<Prefix>()));
    let via = v
        .req(&r.via, &r.span, &f, "via")
        .and_then(|via| match via.value.as_str() {
            "red" => Some(RouteVia::Red),
            "black" => Some(RouteVia::Black),
            s => match s.strip_prefix("tunnel:") {
                Some(t) if valid.iter().any(|x| x.name == t) => {
                    Some(RouteVia::Tunnel(t.to_string()))
                }
                Some(t)
                    if raw_tunnels
                        .iter()
                        .any(|x| x.name.as_ref().is_some_and(|n| n.value == t)) =>
                {
                    None
                }
                Some(t) => {
                    let names: Vec<&str> = raw_tunnels
                        .iter()
                        .filter_map(|x| x.name.as_ref().map(|n| n.value.as_str()))
                        .collect();
                    let known = if names.is_empty() {
                        "there are no tunnels".to_string()
                    } else {
                        format!("tunnels: {}", names.join(", "))
                    };
                    v.err(
                        &via.span,
                        format!("{f}.via"),
                        format!("no tunnel named `{t}` ({known})"),
                    );
                    None
                }
                None => {
                    v.err(
                        &via.span,
                        format!("{f}.via"),
                        format!("`{s}` is not a next hop; use `red`, `black` or `tunnel:<name>`"),
                    );
                    None
                }
            },
        });
    match (dst, via, &r.dst) {
        (Some(dst), Some(via), Some(d)) => Some(RouteAt {
            route: Route { dst, via },
            field: format!("{f}.dst"),
            dst_span: d.span.clone(),
        }),
        _ => None,
    }
}

/// The same destination twice (prefixes compare as networks: `10.2.0.0/16`
/// and `10.2.0.0/016` are one destination; IPv4 and IPv6 never are). Each
/// is reported at the later route; both are marked in the result.
fn doubled(v: &mut V<'_>, parsed: &[RouteAt]) -> Vec<bool> {
    let via_name = |via: &RouteVia| match via {
        RouteVia::Red => "red".to_string(),
        RouteVia::Black => "black".to_string(),
        RouteVia::Tunnel(t) => format!("tunnel:{t}"),
    };
    let mut doubled = vec![false; parsed.len()];
    for j in 0..parsed.len() {
        if let Some(i) = (0..j).find(|&i| parsed[i].route.dst == parsed[j].route.dst) {
            doubled[i] = true;
            doubled[j] = true;
            let (a, b) = (&parsed[i], &parsed[j]);
            let (this, that) = if v.later(&b.dst_span, &a.dst_span) {
                (b, a)
            } else {
                (a, b)
            };
            let msg = if a.route.via == b.route.via {
                format!(
                    "{} is routed twice, both via {}; remove one of the routes",
                    this.route.dst,
                    via_name(&this.route.via)
                )
            } else {
                format!(
                    "{} is routed twice, via {} and via {}; a destination has one next hop: remove one of the routes",
                    this.route.dst,
                    via_name(&that.route.via),
                    via_name(&this.route.via)
                )
            };
            let (span, field, other) = (
                this.dst_span.clone(),
                this.field.clone(),
                that.dst_span.clone(),
            );
            v.err_note(
                &span,
                field,
                msg,
                &other,
                format!("{} is also routed here", that.route.dst),
            );
        }
    }
    doubled
}

/// Red's networks stay in: no route via black (but a doubled one) takes a
/// part of them that no more specific route takes. `false` when one does.
fn red_stays_in(
    v: &mut V<'_>,
    parsed: &[RouteAt],
    doubled: &[bool],
    red: &Personality,
    personalities: Option<&Sp<BTreeMap<String, Sp<RawPersonality>>>>,
) -> bool {
    let mut ok = true;
    // A valid personality's addresses are its raw addresses, in order.
    let red_spans: Vec<Range<usize>> = personalities
        .and_then(|p| p.value.get("red"))
        .map(|r| list(&r.addresses).iter().map(|a| a.span.clone()).collect())
        .unwrap_or_default();
    for (k, r) in parsed.iter().enumerate() {
        if r.route.via != RouteVia::Black || doubled[k] {
            continue;
        }
        let more_specific: Vec<Prefix> = parsed
            .iter()
            .map(|x| x.route.dst)
            .filter(|d| d.len() > r.route.dst.len())
            .collect();
        for (j, a) in red.addresses.iter().enumerate() {
            let net = a.network();
            if !net.overlaps(&r.route.dst) {
                continue;
            }
            let region = if r.route.dst.covers(&net) {
                net
            } else {
                r.route.dst
            };
            if let Some(part) = region.uncovered_by(&more_specific) {
                let what = if part == net {
                    format!("red's network {net}")
                } else {
                    format!("{part}, part of red's network {net},")
                };
                let other = red_spans.get(j).cloned().unwrap_or(r.dst_span.clone());
                v.err_note(
                    &r.dst_span,
                    r.field.clone(),
                    format!(
                        "route {} via black sends {what} out of the internet side; add a more specific route to it via red, or narrow this route",
                        r.route.dst
                    ),
                    &other,
                    format!("red's address {a} is set here"),
                );
                ok = false;
                break;
            }
        }
    }
    ok
}

/// A route into a tunnel carries only what the tunnel's remote selectors
/// cover; the rest would be dropped by the Viaduct. `false` when a route
/// (but a doubled one) reaches past them.
fn within_tunnels(
    v: &mut V<'_>,
    parsed: &[RouteAt],
    doubled: &[bool],
    valid: &[&Tunnel],
    raw_tunnels: &[&Sp<RawTunnel>],
) -> bool {
    let mut ok = true;
    for (k, r) in parsed.iter().enumerate() {
        let RouteVia::Tunnel(name) = &r.route.via else {
            continue;
        };
        if doubled[k] {
            continue;
        }
        let Some(t) = valid.iter().find(|t| &t.name == name) else {
            continue;
        };
        let remote: Vec<Prefix> = t.remote_ts.iter().map(|s| s.prefix).collect();
        if let Some(part) = r.route.dst.uncovered_by(&remote) {
            let sels: Vec<String> = remote.iter().map(Prefix::to_string).collect();
            let what = if part == r.route.dst {
                format!("{}", r.route.dst)
            } else {
                format!("{part} (part of {})", r.route.dst)
            };
            let note_span = raw_tunnels
                .iter()
                .find(|x| x.name.as_ref().is_some_and(|n| &n.value == name))
                .and_then(|x| x.remote_ts.as_ref().map(|l| l.span.clone()))
                .unwrap_or(r.dst_span.clone());
            v.err_note(
                &r.dst_span,
                r.field.clone(),
                format!(
                    "route {} into tunnel `{name}`: its remote selectors ({}) do not cover {what}, which the Viaduct would drop; narrow the route or widen the tunnel's remote_ts",
                    r.route.dst,
                    sels.join(", ")
                ),
                &note_span,
                format!("tunnel `{name}`'s remote selectors are set here"),
            );
            ok = false;
        }
    }
    ok
}

/// One `allow` entry: `P`, `P le M`, `P ge N` or `P ge N le M`, as FRR's
/// prefix lists: `P` alone admits that prefix only; `ge` defaults to the
/// prefix's length; `le` to the family's width when `ge` is given.
pub(crate) fn parse_prefix_range(s: &str) -> Result<PrefixRange, String> {
    let mut words = s.split_whitespace();
    let prefix: Prefix = words
        .next()
        .ok_or("empty: write a prefix, optionally followed by `ge N` and `le M`")?
        .parse()?;
    let width = if prefix.is_ipv4() { 32 } else { 128 };
    let (mut ge, mut le) = (None, None);
    while let Some(w) = words.next() {
        let slot = match w {
            "ge" if ge.is_none() && le.is_none() => &mut ge,
            "le" if le.is_none() => &mut le,
            "ge" | "le" => {
                return Err(format!(
                    "`{w}` again or out of order: write `P`, `P ge N`, `P le M` or `P ge N le M`"
                ))
            }
            other => {
                return Err(format!(
                    "unexpected `{other}`: write `P`, `P ge N`, `P le M` or `P ge N le M`"
                ))
            }
        };
        let n: u8 = words
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or(format!("`{w}` needs a prefix length (0 to {width})"))?;
        *slot = Some(n);
    }
    let plen = prefix.len();
    let ge_v = ge.unwrap_or(plen);
    let le_v = le.unwrap_or(if ge.is_some() { width } else { plen });
    if ge_v < plen || ge_v > width {
        return Err(format!(
            "ge {ge_v} must be between the prefix's length {plen} and {width}"
        ));
    }
    if le_v < ge_v || le_v > width {
        return Err(format!("le {le_v} must be between {} and {width}", ge_v));
    }
    Ok(PrefixRange {
        prefix,
        ge: ge_v,
        le: le_v,
    })
}

/// `[viaduct.learned_routes]`: the allowed ranges (none reaching red's
/// networks or a route via red or into a tunnel; with martians denied,
/// none wholly inside special-purpose space), the most routes, martians.
pub(super) fn learned_routes(
    v: &mut V<'_>,
    lr: &Sp<RawLearnedRoutes>,
    red: Side2<'_>,
    routes: &[Route],
) -> Option<LearnedRoutes> {
    let f = "viaduct.learned_routes";
    let mut ok = true;
    let martians = match &lr.martians {
        None => Some(false),
        Some(m) => v.one_of(
            m,
            &format!("{f}.martians"),
            &[("deny", false), ("allow", true)],
        ),
    };
    let max = match &lr.max {
        None => Some(DEFAULT_MAX_LEARNED_ROUTES),
        Some(m) if (1..=MAX_MAX_LEARNED_ROUTES).contains(&m.value) => u32::try_from(m.value).ok(),
        Some(m) => {
            v.err(
                &m.span,
                format!("{f}.max"),
                "max must be between 1 and 2000000 (routes held at once)",
            );
            None
        }
    };
    let mut allow = Vec::new();
    match &lr.allow {
        None => {
            v.err(
                &lr.span,
                format!("{f}.allow"),
                "missing `allow`: the prefix ranges black's routes may fall in, e.g. [\"203.0.113.0/24 le 28\"]",
            );
            ok = false;
        }
        Some(list) if list.value.is_empty() => {
            v.err(
                &list.span,
                format!("{f}.allow"),
                "empty: give the prefix ranges black's routes may fall in",
            );
            ok = false;
        }
        Some(list) => {
            for (i, e) in list.value.iter().enumerate() {
                let field = format!("{f}.allow[{i}]");
                let Some(r) = v.parse(e, &field, parse_prefix_range) else {
                    ok = false;
                    continue;
                };
                // Red's networks and what is routed to red or into a
                // tunnel: a learned route there would take that traffic
                // to black.
                let red_nets = red
                    .map(|(_, p)| {
                        p.addresses
                            .iter()
                            .map(|a| (a.network(), "red's network".to_string()))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                let kept = routes.iter().filter(|x| x.via != RouteVia::Black).map(|x| {
                    (
                        x.dst,
                        match &x.via {
                            RouteVia::Tunnel(t) => format!("the route into tunnel `{t}`"),
                            _ => "the route via red".to_string(),
                        },
                    )
                });
                if let Some((net, what)) = red_nets
                    .into_iter()
                    .chain(kept)
                    .find(|(net, _)| net.overlaps(&r.prefix) && r.le >= net.len())
                {
                    v.err(
                        &e.span,
                        &field,
                        format!(
                            "{} reaches {what} {net}: a route learned there would take its traffic to black; narrow the range",
                            e.value.trim()
                        ),
                    );
                    ok = false;
                    continue;
                }
                if martians == Some(false) {
                    let blob = policy_blob::Prefix::new(r.prefix.addr(), r.prefix.len());
                    if let Some(what) = policy_blob::special::martian(&blob) {
                        v.err(
                            &e.span,
                            &field,
                            format!(
                                "{} lies in special-purpose space ({what}), whose routes are refused: set `martians = \"allow\"` to route it",
                                r.prefix
                            ),
                        );
                        ok = false;
                        continue;
                    }
                }
                allow.push(r);
            }
        }
    }
    ok.then_some(())?;
    Some(LearnedRoutes {
        allow,
        max: max?,
        martians: martians?,
    })
}
