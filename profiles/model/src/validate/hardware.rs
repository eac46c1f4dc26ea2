//! `[hardware]`: each NIC (role name, driver, PCI and MAC address, one card
//! per role), which personality owns it, that its driver is among the
//! kernel's, and the target.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use crate::model::*;
use crate::raw::*;

use super::checker::{list, V};

/// A declared NIC: its table's span, the NIC if valid, and the span of its `network`.
pub(super) struct NicInfo {
    pub(super) span: Range<usize>,
    pub(super) nic: Option<Nic>,
    pub(super) network_span: Option<Range<usize>>,
}

/// The declared NICs by role.
pub(super) type Nics = BTreeMap<String, NicInfo>;

/// `[hardware.nics]`: each NIC on its own, then no two roles for one card.
/// Every NIC declared is in the result, valid or not (see [`NicInfo`]).
pub(super) fn nics(v: &mut V<'_>, h: &Sp<RawHardware>) -> Nics {
    let mut out = BTreeMap::new();
    let Some(nics) = v.req(&h.nics, &h.span, "hardware", "nics") else {
        return out;
    };
    if nics.value.is_empty() {
        v.err(
            &nics.span,
            "hardware.nics",
            "no NICs declared; a gateway needs one NIC for red and one for black",
        );
    }
    for (role, n) in &nics.value {
        out.insert(role.clone(), nic(v, role, n));
    }
    one_card_per_role(v, &out, nics);
    out
}

/// One NIC, under its role name.
fn nic(v: &mut V<'_>, role: &String, n: &Sp<RawNic>) -> NicInfo {
    let t = format!("hardware.nics.{role}");
    let role_ok = v
        .name(
            &Sp {
                span: n.span.clone(),
                value: role.clone(),
            },
            &t,
        )
        .is_some();
    let driver = v.req(&n.driver, &n.span, &t, "driver").and_then(|d| {
        let norm = d.value.replace('-', "_");
        if norm.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && !norm.is_empty() {
            Some(norm)
        } else {
            v.err(
                &d.span,
                format!("{t}.driver"),
                format!("`{}` is not a kernel module name", d.value),
            );
            None
        }
    });
    let pci = pci(v, n, &t);
    let mac = mac(v, n, &t);
    let network = n
        .network
        .as_ref()
        .and_then(|net| v.name(net, &format!("{t}.network")));
    let attach = match &n.attach {
        None => Some(NicAttach::Vfio),
        Some(a) => match a.value.as_str() {
            "vfio" => Some(NicAttach::Vfio),
            "macvtap" => Some(NicAttach::Macvtap),
            other => {
                v.err(
                    &a.span,
                    format!("{t}.attach"),
                    format!("unknown attachment `{other}`; use `vfio` or `macvtap`"),
                );
                None
            }
        },
    };
    let nic = match (role_ok, driver, attach) {
        (true, Some(driver), Some(attach))
            if n.pci.is_some() == pci.is_some()
                && n.mac.is_some() == mac.is_some()
                && n.network.is_some() == network.is_some() =>
        {
            Some(Nic {
                role: role.clone(),
                driver,
                pci,
                mac,
                network,
                owner: Side::Red,
                attach,
            })
        }
        _ => None,
    };
    NicInfo {
        span: n.span.clone(),
        nic,
        network_span: n.network.as_ref().map(|x| x.span.clone()),
    }
}

/// `pci`: domain:bus:device.function, kept in lower case.
fn pci(v: &mut V<'_>, n: &Sp<RawNic>, t: &str) -> Option<String> {
    n.pci.as_ref().and_then(|p| {
        if is_pci(&p.value) {
            Some(p.value.to_ascii_lowercase())
        } else {
            let with_domain = format!("0000:{}", p.value);
            let msg = if is_pci(&with_domain) {
                format!(
                    "`{}` lacks the PCI domain; write `{}`",
                    p.value,
                    with_domain.to_ascii_lowercase()
                )
            } else {
                format!(
                    "`{}` is not a PCI address; write domain:bus:device.function in hex, e.g. `0000:00:02.0`",
                    p.value
                )
            };
            v.err(&p.span, format!("{t}.pci"), msg);
            None
        }
    })
}

/// `mac`: six hex pairs with colons, kept in lower case.
fn mac(v: &mut V<'_>, n: &Sp<RawNic>, t: &str) -> Option<String> {
    n.mac.as_ref().and_then(|m| {
        if is_mac(&m.value) {
            Some(m.value.to_ascii_lowercase())
        } else {
            let msg = match mac_with_colons(&m.value) {
                Some(fixed) => {
                    format!("`{}`: write a MAC address with colons, `{fixed}`", m.value)
                }
                None => format!(
                    "`{}` is not a MAC address; write six hex pairs, e.g. `52:54:00:12:34:56`",
                    m.value
                ),
            };
            v.err(&m.span, format!("{t}.mac"), msg);
            None
        }
    })
}

/// Two roles for one card: the same PCI address or the same MAC address
/// (compared normalised: lower case). The later one is reported.
fn one_card_per_role(v: &mut V<'_>, declared: &Nics, nics: &Sp<BTreeMap<String, Sp<RawNic>>>) {
    for (key, what) in [("pci", "PCI address"), ("mac", "MAC address")] {
        let mut seen: Vec<(String, &str, Range<usize>)> = Vec::new();
        for (role, info) in declared {
            let (Some(nic), Some(raw)) = (&info.nic, nics.value.get(role)) else {
                continue;
            };
            let (value, span) = match key {
                "pci" => (nic.pci.clone(), raw.pci.as_ref().map(|p| p.span.clone())),
                _ => (nic.mac.clone(), raw.mac.as_ref().map(|m| m.span.clone())),
            };
            let (Some(value), Some(span)) = (value, span) else {
                continue;
            };
            if let Some((_, other, other_span)) = seen.iter().find(|(x, _, _)| *x == value) {
                let (this, that, this_span, that_span) = if v.later(&span, other_span) {
                    (role.as_str(), *other, &span, other_span)
                } else {
                    (*other, role.as_str(), other_span, &span)
                };
                v.err_note(
                    this_span,
                    format!("hardware.nics.{this}.{key}"),
                    format!(
                        "NICs `{that}` and `{this}` have the same {what} {value}; each role is a different card: correct the {what} or remove one of the roles"
                    ),
                    that_span,
                    format!("NIC `{that}` has {what} {value} here"),
                );
                continue;
            }
            seen.push((value, role.as_str(), span));
        }
    }
}

/// `target`: only `x86_64-uefi`, which is also the default.
pub(super) fn target(v: &mut V<'_>, hardware: Option<&Sp<RawHardware>>) -> String {
    hardware
        .and_then(|h| h.target.as_ref())
        .map(|t| {
            if t.value != "x86_64-uefi" {
                v.err(
                    &t.span,
                    "hardware.target",
                    format!("unsupported target `{}`; supported: x86_64-uefi", t.value),
                );
            }
            t.value.clone()
        })
        .unwrap_or_else(|| "x86_64-uefi".into())
}

/// `52-54-00-12-34-56`, `525400123456` or `5254.0012.3456` written the way
/// profiles accept it (`52:54:00:12:34:56`), if it is a MAC address.
fn mac_with_colons(s: &str) -> Option<String> {
    let hex: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let pairs: Vec<String> = (0..6)
        .map(|i| hex[2 * i..2 * i + 2].to_ascii_lowercase())
        .collect();
    Some(pairs.join(":"))
}

/// `dddd:bb:dd.f` in hex, with a device number up to 1f and a function up
/// to 7.
fn is_pci(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && s[..4]
            .bytes()
            .chain(s[5..7].bytes())
            .chain(s[8..10].bytes())
            .all(|c| c.is_ascii_hexdigit())
        && (b'0'..=b'7').contains(&b[11])
        // The device number has 5 bits: 00-1f.
        && u8::from_str_radix(&s[8..10], 16).is_ok_and(|d| d <= 0x1f)
}

/// Six hex pairs separated by colons.
fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// Every NIC's driver must be among the kernel's drivers, or the card never
/// comes up. Checked when both lists are valid, for each NIC a personality
/// names (a NIC no personality names is reported as unused instead).
pub(super) fn nic_drivers(
    v: &mut V<'_>,
    hw: &Sp<RawHardware>,
    nics: &Nics,
    k: &Sp<RawKernel>,
    personalities: Option<&Sp<BTreeMap<String, Sp<RawPersonality>>>>,
) {
    let mut drivers = Vec::new();
    for d in list(&k.drivers) {
        let norm = d.value.replace('-', "_");
        if norm.is_empty() || !norm.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return; // reported by `kernel`
        }
        drivers.push(norm);
    }
    let named: BTreeSet<&str> = personalities
        .map(|p| {
            p.value
                .values()
                .filter_map(|x| x.nic.as_ref().map(|n| n.value.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let raw_nics = hw.nics.as_ref().map(|n| &n.value);
    // NICs by missing driver: one missing driver is one mistake, however
    // many cards need it.
    let mut missing: BTreeMap<&str, Vec<(&str, &Sp<String>)>> = BTreeMap::new();
    for (role, info) in nics {
        let (Some(nic), Some(raw)) = (&info.nic, raw_nics.and_then(|n| n.get(role))) else {
            continue;
        };
        let Some(d) = &raw.driver else { continue };
        if drivers.contains(&nic.driver) || !named.contains(role.as_str()) {
            continue;
        }
        missing
            .entry(nic.driver.as_str())
            .or_default()
            .push((role.as_str(), d));
    }
    for (driver, users) in missing {
        let Some((role, d)) = users.first() else {
            continue;
        };
        let cards = match users.as_slice() {
            [_] => format!("NIC `{role}` needs driver `{}`", d.value),
            _ => {
                let roles: Vec<String> = users.iter().map(|(r, _)| format!("`{r}`")).collect();
                format!("NICs {} need driver `{}`", roles.join(" and "), d.value)
            }
        };
        let them = if users.len() == 1 {
            "the card"
        } else {
            "the cards"
        };
        let msg = format!(
            "{cards}, which is not in kernel.drivers, so {them} would never come up; add `{driver}` to kernel.drivers"
        );
        let field = format!("hardware.nics.{role}.driver");
        match &k.drivers {
            Some(list) => {
                // The list comes from a base profile: `{ append = [...] }`
                // in the profile itself adds to it instead of replacing it.
                let other_file = v.sources.file_at(list.span.start).map(|f| f.base) != Some(0);
                let note = if other_file {
                    format!("kernel.drivers is set here; to add to it from the extending profile, write `drivers = {{ append = [\"{driver}\"] }}` under [kernel]")
                } else {
                    "kernel.drivers is set here".to_string()
                };
                v.err_note(&d.span, field, msg, &list.span, note);
            }
            None => v.err(&d.span, field, msg),
        }
    }
}

/// Each NIC belongs to exactly one personality: not to both, and not to
/// none. Returns the NICs that have an owner, with it.
pub(super) fn nic_ownership(
    v: &mut V<'_>,
    hw: &Sp<RawHardware>,
    nics: &Nics,
    red: Option<&(Range<usize>, Personality)>,
    black: Option<&(Range<usize>, Personality)>,
    personalities: Option<&Sp<BTreeMap<String, Sp<RawPersonality>>>>,
) -> Vec<Nic> {
    let nic_span = |side: &str| -> Range<usize> {
        personalities
            .and_then(|p| p.value.get(side))
            .and_then(|p| p.nic.as_ref())
            .map(|n| n.span.clone())
            .unwrap_or(hw.span.clone())
    };
    let mut shared = None;
    if let (Some((_, r)), Some((_, b))) = (red, black) {
        if r.nic == b.nic {
            shared = Some(b.nic.clone());
            // Report the assignment written last (in the extending profile,
            // or further down the file); the other one is the note.
            let (rs, bs) = (nic_span("red"), nic_span("black"));
            let (this, that, this_span, that_span) = if v.later(&rs, &bs) {
                ("red", "black", rs, bs)
            } else {
                ("black", "red", bs, rs)
            };
            v.err_note(
                &this_span,
                format!("personalities.{this}.nic"),
                format!(
                    "NIC `{}` is already given to {that}; each NIC belongs to exactly one personality",
                    b.nic
                ),
                &that_span,
                format!("{that} is given NIC `{}` here", b.nic),
            );
        }
    }
    let mut out = Vec::new();
    for (role, NicInfo { span, nic, .. }) in nics {
        let owners: Vec<Side> = [red, black]
            .iter()
            .flatten()
            .filter(|(_, p)| &p.nic == role)
            .map(|(_, p)| p.side)
            .collect();
        // With one NIC given to both, the other one is left over: the
        // double assignment is the mistake to report, not the leftover.
        if owners.is_empty() && red.is_some() && black.is_some() && shared.is_none() {
            v.err(span, format!("hardware.nics.{role}"), format!("NIC `{role}` is not given to any personality; set `nic = \"{role}\"` on red or black, or remove it"));
        }
        if let (Some(nic), Some(owner)) = (nic, owners.first()) {
            let mut nic = nic.clone();
            nic.owner = *owner;
            out.push(nic);
        }
    }
    out
}
