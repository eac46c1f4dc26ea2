//! `[viaduct]`: its roles, the sections each role needs (and no section
//! without its role), then each section in turn.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use crate::model::*;
use crate::raw::*;

use super::checker::{list, V};
use super::ipsec::ipsec;
use super::personality::Side2;
use super::routes::routes;
use super::rules::{selector, tcp_flags};

pub(super) fn viaduct(
    v: &mut V<'_>,
    vr: &Sp<RawViaduct>,
    red: Side2<'_>,
    black: Side2<'_>,
    personalities: Option<&Sp<BTreeMap<String, Sp<RawPersonality>>>>,
) -> Option<Viaduct> {
    let mut ok = true;
    if let Some(n) = &vr.nic {
        v.err(&n.span, "viaduct.nic", "the Viaduct owns no NIC: give every NIC to red or black and link the Viaduct to both with [[links]]");
        ok = false;
    }
    let mut roles = BTreeSet::new();
    // A misspelt role is reported once: the section of the role meant is
    // then not also reported as given without its role.
    let mut misspelt_role = false;
    let role_list = v.req(&vr.roles, &vr.span, "viaduct", "roles");
    if let Some(rl) = role_list {
        if rl.value.is_empty() {
            v.err(
                &rl.span,
                "viaduct.roles",
                "no role: give one or more of vpn, firewall, ids, router",
            );
            ok = false;
        }
        for (i, r) in rl.value.iter().enumerate() {
            match v.one_of(
                r,
                &format!("viaduct.roles[{i}]"),
                &[
                    ("vpn", Role::Vpn),
                    ("firewall", Role::Firewall),
                    ("ids", Role::Ids),
                    ("router", Role::Router),
                ],
            ) {
                Some(role) => {
                    if !roles.insert(role) {
                        v.err(
                            &r.span,
                            format!("viaduct.roles[{i}]"),
                            format!("role `{}` is listed twice", r.value),
                        );
                    }
                }
                None => {
                    ok = false;
                    misspelt_role = true;
                }
            }
        }
    } else {
        ok = false;
    }
    let role_span = role_list.map(|r| r.span.clone()).unwrap_or(vr.span.clone());

    // Sections must match roles.
    let need = |v: &mut V<'_>,
                role: Role,
                present: bool,
                span: Option<&Range<usize>>,
                key: &str,
                what: &str|
     -> bool {
        let has_role = roles.contains(&role);
        match (has_role, present, span) {
            (true, false, _) => {
                v.err(
                    &role_span,
                    format!("viaduct.{key}"),
                    format!("role `{}` needs {what}", role_name(role)),
                );
                false
            }
            (false, true, Some(_)) if misspelt_role => false,
            (false, true, Some(span)) => {
                v.err(span, format!("viaduct.{key}"), format!("{what} given but role `{}` is not in viaduct.roles; add it or remove the section", role_name(role)));
                false
            }
            _ => true,
        }
    };
    if role_list.is_some() {
        ok &= need(
            v,
            Role::Vpn,
            vr.ipsec.is_some(),
            vr.ipsec.as_ref().map(|s| &s.span),
            "ipsec",
            "an [viaduct.ipsec] section",
        );
        ok &= need(
            v,
            Role::Firewall,
            !list(&vr.filter).is_empty(),
            vr.filter.as_ref().map(|s| &s.span),
            "filter",
            "[[viaduct.filter]] rules",
        );
        ok &= need(
            v,
            Role::Ids,
            !list(&vr.ids).is_empty(),
            vr.ids.as_ref().map(|s| &s.span),
            "ids",
            "[[viaduct.ids]] rules",
        );
        ok &= need(
            v,
            Role::Router,
            !list(&vr.routes).is_empty(),
            vr.routes.as_ref().map(|s| &s.span),
            "routes",
            "[[viaduct.routes]]",
        );
    }

    let ipsec = match &vr.ipsec {
        Some(ip) if roles.contains(&Role::Vpn) => {
            let r = ipsec(v, ip, red, black, personalities);
            if r.is_none() {
                ok = false;
            }
            r
        }
        _ => None,
    };

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
        let sel = selector(
            v,
            &f,
            &r.src,
            &r.dst,
            &r.protocol,
            &r.src_ports,
            &r.dst_ports,
        );
        // After a protocol that did not parse, flags are not checked
        // against it (one mistake, one error).
        let flags = match (&r.tcp_flags, &sel) {
            (None, _) => Some(TcpFlags::default()),
            (Some(l), Some(s)) => tcp_flags(v, l, s.protocol, &f),
            (Some(_), None) => None,
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
        match (name, direction, sel, flags, action) {
            (Some(name), Some(direction), Some(selector), Some(tcp_flags), Some(action)) => filter
                .push(FilterRule {
                    name,
                    direction,
                    selector,
                    tcp_flags,
                    action,
                }),
            _ => ok = false,
        }
    }
    v.unique("filter rule", &names);
    let filter_default = match &vr.filter_default {
        None => Some(FilterAction::Accept),
        Some(d) => v.one_of(
            d,
            "viaduct.filter_default",
            &[
                ("accept", FilterAction::Accept),
                ("drop", FilterAction::Drop),
            ],
        ),
    };

    let mut names = Vec::new();
    let mut ids = Vec::new();
    for (i, r) in list(&vr.ids).iter().enumerate() {
        let f = format!("viaduct.ids[{i}]");
        let name = v
            .req(&r.name, &r.span, &f, "name")
            .and_then(|n| v.name(n, &format!("{f}.name")));
        if let Some(n) = &r.name {
            names.push((n.value.clone(), n.span.clone(), format!("{f}.name")));
        }
        let content = v.req(&r.content, &r.span, &f, "content").and_then(|c| {
            if c.value.is_empty() || c.value.len() > 256 {
                v.err(
                    &c.span,
                    format!("{f}.content"),
                    "content must be 1 to 256 bytes",
                );
                None
            } else {
                Some(c.value.clone())
            }
        });
        let sel = selector(v, &f, &None, &None, &r.protocol, &None, &r.dst_ports);
        let action = v.req(&r.action, &r.span, &f, "action").and_then(|a| {
            v.one_of(
                a,
                &format!("{f}.action"),
                &[("alert", IdsAction::Alert), ("drop", IdsAction::Drop)],
            )
        });
        match (name, content, sel, action) {
            (Some(name), Some(content), Some(sel), Some(action)) => ids.push(IdsRule {
                name,
                content,
                protocol: sel.protocol,
                dst_ports: sel.dst_ports,
                action,
            }),
            _ => ok = false,
        }
    }
    v.unique("IDS rule", &names);

    let routes = match routes(v, vr, ipsec.as_ref(), red, personalities) {
        Some(r) => r,
        None => {
            ok = false;
            Vec::new()
        }
    };

    ok.then_some(())?;
    Some(Viaduct {
        roles,
        ipsec,
        spd,
        filter,
        filter_default: filter_default?,
        ids,
        routes,
    })
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Vpn => "vpn",
        Role::Firewall => "firewall",
        Role::Ids => "ids",
        Role::Router => "router",
    }
}
