//! `[viaduct]`: its roles, the sections each role needs (and no section
//! without its role), then each section in turn.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use crate::model::*;
use crate::raw::*;

use super::checker::{list, V};
use super::ipsec::ipsec;
use super::personality::Side2;
use super::routes::{learned_routes, routes};
use super::rules::{address_sets, filter_default, filter_max_flows, filter_rules, spd_rules};

/// `[viaduct]`: no NIC of its own, its roles and the sections they need,
/// then IPsec, the SPD, the filter, IDS rules and routes, in that order.
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
    let roles = roles(v, vr);
    ok &= roles.ok;
    if roles.given {
        ok &= sections(v, vr, &roles);
    }

    let ipsec = match &vr.ipsec {
        Some(ip) if roles.set.contains(&Role::Vpn) => {
            let r = ipsec(v, ip, red, black, personalities);
            if r.is_none() {
                ok = false;
            }
            r
        }
        _ => None,
    };
    let spd = spd_rules(v, vr);
    let (sets, sets_ok) = address_sets(v, vr);
    let filter = filter_rules(v, vr, &sets);
    let sets = sets_ok.then_some(sets);
    let filter_default = filter_default(v, vr);
    let filter_max_flows = filter_max_flows(v, vr);
    let ids = match &vr.ids {
        None => Some(None),
        Some(raw) if roles.set.contains(&Role::Ids) => super::ids::ids(v, raw, red).map(Some),
        Some(_) => Some(None),
    };
    let routes = match routes(v, vr, ipsec.as_ref(), red, personalities) {
        Some(r) => r,
        None => {
            ok = false;
            Vec::new()
        }
    };
    let learned_routes = match &vr.learned_routes {
        None => Some(None),
        Some(lr) => learned_routes(v, lr, red, &routes).map(Some),
    };

    ok.then_some(())?;
    Some(Viaduct {
        roles: roles.set,
        ipsec,
        spd: spd?,
        filter: filter?,
        sets: sets?,
        filter_default: filter_default?,
        filter_max_flows: filter_max_flows?,
        filter_default_log: vr.filter_default_log.as_ref().is_some_and(|b| b.value),
        ids: ids?,
        routes,
        learned_routes: learned_routes?,
    })
}

/// `viaduct.roles` as far as it is valid.
struct Roles {
    /// The roles that are valid.
    set: BTreeSet<Role>,
    /// A role is misspelt: the section of the role meant is then not also
    /// reported as given without its role.
    misspelt: bool,
    /// The list is given (when it is not, that is reported, and no section
    /// is checked against it).
    given: bool,
    /// Where a section that a role needs is reported missing: the list, or
    /// `[viaduct]` without one.
    span: Range<usize>,
    /// `false` when the list is missing or empty, or a role is misspelt.
    ok: bool,
}

/// `viaduct.roles`: one or more of vpn, firewall, ids and router, each once.
fn roles(v: &mut V<'_>, vr: &Sp<RawViaduct>) -> Roles {
    let mut ok = true;
    let mut roles = BTreeSet::new();
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
    Roles {
        set: roles,
        misspelt: misspelt_role,
        given: role_list.is_some(),
        span: role_list.map(|r| r.span.clone()).unwrap_or(vr.span.clone()),
        ok,
    }
}

/// Sections must match roles: each role's section is given, and no section
/// is given without its role. `false` when one does not.
fn sections(v: &mut V<'_>, vr: &Sp<RawViaduct>, roles: &Roles) -> bool {
    let mut ok = true;
    let need = |v: &mut V<'_>,
                role: Role,
                present: bool,
                span: Option<&Range<usize>>,
                key: &str,
                what: &str|
     -> bool {
        let has_role = roles.set.contains(&role);
        match (has_role, present, span) {
            (true, false, _) => {
                v.err(
                    &roles.span,
                    format!("viaduct.{key}"),
                    format!("role `{}` needs {what}", role_name(role)),
                );
                false
            }
            (false, true, Some(_)) if roles.misspelt => false,
            (false, true, Some(span)) => {
                v.err(span, format!("viaduct.{key}"), format!("{what} given but role `{}` is not in viaduct.roles; add it or remove the section", role_name(role)));
                false
            }
            _ => true,
        }
    };
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
        vr.ids.is_some(),
        vr.ids.as_ref().map(|s| &s.span),
        "ids",
        "[viaduct.ids] rules",
    );
    ok &= need(
        v,
        Role::Router,
        !list(&vr.routes).is_empty(),
        vr.routes.as_ref().map(|s| &s.span),
        "routes",
        "[[viaduct.routes]]",
    );
    if let (Some(lr), false) = (&vr.learned_routes, roles.set.contains(&Role::Router)) {
        if !roles.misspelt {
            v.err(
                &lr.span,
                "viaduct.learned_routes",
                "[viaduct.learned_routes] given but role `router` is not in viaduct.roles; add it or remove the section",
            );
            ok = false;
        }
    }
    ok
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Vpn => "vpn",
        Role::Firewall => "firewall",
        Role::Ids => "ids",
        Role::Router => "router",
    }
}
