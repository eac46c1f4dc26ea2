//! `[[links]]`: the graph of red, black, the Viaduct and the networks the
//! NICs are on. Red reaches black only through the Viaduct, and the Viaduct
//! is linked to both.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Range;

use crate::model::*;
use crate::raw::*;

use super::checker::{list, V};
use super::hardware::{NicInfo, Nics};
use super::personality::Side2;

/// An edge of the graph: its two ends, and the span and field that declare
/// it.
type Edge = (Node, Node, Range<usize>, String);

/// `[[links]]`: each link on its own, then the graph they make with the
/// NICs' networks. `None` when a link or the graph has an error (reported).
pub(super) fn links(
    v: &mut V<'_>,
    raw: &RawProfile,
    nics: Option<&Nics>,
    red: Side2<'_>,
    black: Side2<'_>,
) -> Option<Vec<Link>> {
    let mut ok = true;
    let known = KnownEnds::new(raw, nics);
    // A link with an error is reported on its own; which ends it was meant
    // to join is unknown, so a missing link is not reported on top of it.
    let mut broken_link = false;
    let mut out = Vec::new();
    let mut names = Vec::new();
    // Graph edges with the span that declared them.
    let mut edges: Vec<Edge> = Vec::new();
    for (i, l) in list(&raw.links).iter().enumerate() {
        let f = format!("links[{i}]");
        let name = v
            .req(&l.name, &l.span, &f, "name")
            .and_then(|n| v.name(n, &format!("{f}.name")));
        if let Some(n) = &l.name {
            names.push((n.value.clone(), n.span.clone(), format!("{f}.name")));
        }
        let Some((a, b, between)) = link_ends(v, l, &f, &known) else {
            ok = false;
            broken_link = true;
            continue;
        };
        edges.push((a.clone(), b.clone(), between, format!("{f}.between")));
        if let Some(name) = name {
            out.push(Link {
                name,
                between: [a, b],
            });
        } else {
            ok = false;
        }
    }
    v.unique("link", &names);
    nic_edges(nics, red, black, &mut edges);
    if red.is_none() || black.is_none() {
        return ok.then_some(out);
    }
    ok &= through_viaduct(v, raw, &edges, broken_link);
    ok.then_some(out)
}

/// What a link end may name besides red, black and the Viaduct.
struct KnownEnds<'a> {
    /// Networks of the NICs that are valid.
    networks: BTreeSet<String>,
    /// Network names as written, valid or not: a link to a network whose
    /// NIC has an error is not also reported as naming an unknown end.
    raw_networks: BTreeSet<&'a str>,
    /// The NICs (a NIC named as a link end gets its own message).
    nics: Option<&'a Nics>,
}

impl<'a> KnownEnds<'a> {
    fn new(raw: &'a RawProfile, nics: Option<&'a Nics>) -> Self {
        let networks: BTreeSet<String> = nics
            .map(|n| {
                n.values()
                    .filter_map(|i| i.nic.as_ref().and_then(|x| x.network.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let raw_networks: BTreeSet<&str> = raw
            .hardware
            .as_ref()
            .and_then(|h| h.nics.as_ref())
            .map(|n| {
                n.value
                    .values()
                    .filter_map(|x| x.network.as_ref().map(|net| net.value.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        KnownEnds {
            networks,
            raw_networks,
            nics,
        }
    }
}

/// A link's two ends: two different ones of red, black, the Viaduct and the
/// NICs' networks, the Viaduct joined to no network. `None` when the link
/// is broken (reported). With the ends comes the span of `between`.
fn link_ends(
    v: &mut V<'_>,
    l: &Sp<RawLink>,
    f: &str,
    known: &KnownEnds<'_>,
) -> Option<(Node, Node, Range<usize>)> {
    let between = v.req(&l.between, &l.span, f, "between")?;
    if between.value.len() != 2 {
        v.err(
            &between.span,
            format!("{f}.between"),
            "a link has exactly two ends",
        );
        return None;
    }
    let mut ends = Vec::new();
    for (j, e) in between.value.iter().enumerate() {
        let node = match e.value.as_str() {
            "red" => Some(Node::Red),
            "black" => Some(Node::Black),
            "viaduct" => Some(Node::Viaduct),
            other if known.networks.contains(other) => Some(Node::Network(other.to_string())),
            other if known.raw_networks.contains(other) => None,
            other if known.nics.is_some_and(|n| n.contains_key(other)) => {
                v.err(&e.span, format!("{f}.between[{j}]"), format!("`{other}` is a NIC; NICs belong to personalities (`nic = ...`), links join red, black, viaduct and networks"));
                None
            }
            other => {
                v.err(&e.span, format!("{f}.between[{j}]"), format!("unknown link end `{other}`; use red, black, viaduct or a network named in hardware.nics"));
                None
            }
        };
        ends.push(node);
    }
    let (Some(a), Some(b)) = (ends[0].clone(), ends[1].clone()) else {
        return None;
    };
    if a == b {
        v.err(
            &between.span,
            format!("{f}.between"),
            "a link joins two different ends",
        );
        return None;
    }
    if matches!(
        (&a, &b),
        (Node::Viaduct, Node::Network(_)) | (Node::Network(_), Node::Viaduct)
    ) {
        v.err(
            &between.span,
            format!("{f}.between"),
            "the Viaduct owns no NIC and joins no network; link it to red and black only",
        );
        return None;
    }
    Some((a, b, between.span.clone()))
}

/// NIC attachments are edges too: each personality to its NIC's network
/// (unless one NIC is given to both personalities: that mistake is reported
/// on its own).
fn nic_edges(nics: Option<&Nics>, red: Side2<'_>, black: Side2<'_>, edges: &mut Vec<Edge>) {
    let shared_nic = matches!((red, black), (Some((_, r)), Some((_, b))) if r.nic == b.nic);
    for (side, p) in [(Node::Red, red), (Node::Black, black)]
        .into_iter()
        .filter(|_| !shared_nic)
    {
        if let (Some((span, p)), Some(nics)) = (p, nics) {
            if let Some(NicInfo {
                nic: Some(nic),
                network_span,
                ..
            }) = nics.get(&p.nic)
            {
                let net = nic
                    .network
                    .clone()
                    .unwrap_or_else(|| format!("nic:{}", nic.role));
                let span = network_span.clone().unwrap_or(span.clone());
                edges.push((
                    side.clone(),
                    Node::Network(net),
                    span,
                    format!("hardware.nics.{}.network", nic.role),
                ));
            }
        }
    }
}

/// Red reaches black only through the Viaduct, and the Viaduct is linked to
/// both (not reported after a broken link, which may be the one meant).
/// `false` when not.
fn through_viaduct(v: &mut V<'_>, raw: &RawProfile, edges: &[Edge], broken_link: bool) -> bool {
    let mut ok = true;
    let whole = 0..0;
    let links_span = raw
        .links
        .as_ref()
        .map(|l| l.span.clone())
        .unwrap_or(whole.clone());
    // Path check: without the Viaduct, red must not reach black.
    let bypass = bypass_path(edges);
    if let Some((span, field, path)) = &bypass {
        v.err(span, field.clone(), format!("red reaches black without passing through the Viaduct ({path}); the only path between red and black must be the Viaduct"));
        ok = false;
    }
    // A missing Viaduct link next to a bypass is most likely the bypass
    // link written with the wrong end: the bypass is the one reported.
    for side in [Node::Red, Node::Black]
        .into_iter()
        .filter(|_| !broken_link && bypass.is_none())
    {
        let linked = edges.iter().any(|(a, b, _, _)| {
            (a == &Node::Viaduct && b == &side) || (b == &Node::Viaduct && a == &side)
        });
        if !linked {
            let n = if side == Node::Red { "red" } else { "black" };
            v.err(&links_span, "links", format!("no link between the Viaduct and {n}: add [[links]] with `between = [\"{n}\", \"viaduct\"]`"));
            ok = false;
        }
    }
    ok
}

/// How a node is named in a bypass path.
fn node_name(n: &Node) -> String {
    match n {
        Node::Red => "red".into(),
        Node::Black => "black".into(),
        Node::Viaduct => "viaduct".into(),
        Node::Network(s) => s
            .strip_prefix("nic:")
            .map(|r| format!("NIC {r}"))
            .unwrap_or_else(|| format!("network {s}")),
    }
}

/// Breadth-first search from red to black over every edge not touching the
/// Viaduct; returns the span and field of the edge that completes the path.
fn bypass_path(edges: &[Edge]) -> Option<(Range<usize>, String, String)> {
    let mut prev: HashMap<Node, (Node, usize)> = HashMap::new();
    let mut queue = VecDeque::from([Node::Red]);
    let mut seen = BTreeSet::from([Node::Red]);
    while let Some(n) = queue.pop_front() {
        for (i, (a, b, _, _)) in edges.iter().enumerate() {
            if a == &Node::Viaduct || b == &Node::Viaduct {
                continue;
            }
            let next = if a == &n {
                b
            } else if b == &n {
                a
            } else {
                continue;
            };
            if seen.insert(next.clone()) {
                prev.insert(next.clone(), (n.clone(), i));
                if next == &Node::Black {
                    let mut path = vec![node_name(&Node::Black)];
                    let mut cur = Node::Black;
                    let mut last_edge = i;
                    let mut first = true;
                    while let Some((p, e)) = prev.get(&cur) {
                        if first {
                            last_edge = *e;
                            first = false;
                        }
                        path.push(node_name(p));
                        cur = p.clone();
                    }
                    path.reverse();
                    let (_, _, span, field) = &edges[last_edge];
                    return Some((span.clone(), field.clone(), path.join(" - ")));
                }
                queue.push_back(next.clone());
            }
        }
    }
    None
}
