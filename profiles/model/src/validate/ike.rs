//! IKE and ESP parameters of a peer: proposals, dead peer detection,
//! lifetimes.

use crate::model::*;
use crate::raw::*;
use crate::units::{ByteSize, Seconds};

use super::checker::V;

/// `ike_proposals` or `esp_proposals` as given: at least one, each parsed by
/// `parse`.
pub(super) fn proposals<T>(
    v: &mut V<'_>,
    l: &Sp<Vec<Sp<String>>>,
    f: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Option<Vec<T>> {
    if l.value.is_empty() {
        v.err(
            &l.span,
            f,
            "no proposals; remove the key to use the default or give at least one",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (i, p) in l.value.iter().enumerate() {
        match v.parse(p, &format!("{f}[{i}]"), parse) {
            Some(x) => out.push(x),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// `dpd`: `delay` a duration from 1 s to 1 h or `off`; `action` `restart` or
/// `clear`.
pub(super) fn dpd(v: &mut V<'_>, d: Option<&Sp<RawDpd>>, f: &str) -> Option<Dpd> {
    let Some(d) = d else {
        return Some(Dpd::default());
    };
    let delay = match &d.value.delay {
        None => Some(Some(Seconds(30))),
        Some(s) if s.value.trim() == "off" => Some(None),
        Some(s) => v
            .parse(s, &format!("{f}.delay"), |t| {
                let x = Seconds::parse(t)?;
                if !(1..=3600).contains(&x.0) {
                    return Err(format!(
                        "`{t}` is out of range: 1s to 1h, or `off` for no liveness checks"
                    ));
                }
                Ok(x)
            })
            .map(Some),
    };
    let action = match &d.value.action {
        None => Some(DpdAction::Restart),
        Some(a) => match a.value.as_str() {
            "restart" => Some(DpdAction::Restart),
            "clear" => Some(DpdAction::Clear),
            other => {
                v.err(
                    &a.span,
                    format!("{f}.action"),
                    format!("`{other}` is not a DPD action: use `restart` or `clear`"),
                );
                None
            }
        },
    };
    Some(Dpd {
        delay: delay?,
        action: action?,
    })
}

/// The longest IKE or child SA lifetime (and rekey time) a profile may give:
/// a year, far beyond any sensible setting, and far from where the engines'
/// time arithmetic could overflow.
const MAX_LIFETIME: u64 = 365 * 86400;

/// `lifetimes`: IKE and child SA lifetimes of at least 60 s and at most a
/// year, a rekey time shorter than the child lifetime, and no zero byte or
/// packet limit.
pub(super) fn lifetimes(v: &mut V<'_>, l: Option<&Sp<RawLifetimes>>, f: &str) -> Option<Lifetimes> {
    let dur = |v: &mut V<'_>, x: &Option<Sp<String>>, key: &str, default: u64| -> Option<Seconds> {
        match x {
            None => Some(Seconds(default)),
            Some(s) => v.parse(s, &format!("{f}.{key}"), |t| {
                let d = Seconds::parse(t)?;
                if d.0 < 60 {
                    return Err(format!("`{t}` is too short; at least 60s"));
                }
                if d.0 > MAX_LIFETIME {
                    return Err(format!("`{t}` is too long; at most 365d"));
                }
                Ok(d)
            }),
        }
    };
    let none = RawLifetimes {
        ike: None,
        child: None,
        child_rekey: None,
        child_bytes: None,
        child_packets: None,
    };
    let raw = l.map(|l| &l.value).unwrap_or(&none);
    let ike = dur(v, &raw.ike, "ike", 86400);
    let child = dur(v, &raw.child, "child", 3600);
    // Parsed on its own, so that a mistake in it is reported even when
    // `child` has one too; compared with `child` only when both are valid.
    let rekey = raw
        .child_rekey
        .as_ref()
        .map(|r| (r, dur(v, &Some(r.clone()), "child_rekey", 0)));
    let rekey = match (rekey, child) {
        (None, Some(c)) => Some(Seconds(c.0 / 10 * 9 + c.0 % 10 * 9 / 10)),
        (Some((r, Some(d))), Some(c)) => {
            if d >= c {
                let msg = "child_rekey must be shorter than child (it is the soft lifetime)";
                match &raw.child {
                    Some(cs) => v.err_note(
                        &r.span,
                        format!("{f}.child_rekey"),
                        msg,
                        &cs.span,
                        "child is set here",
                    ),
                    None => v.err(
                        &r.span,
                        format!("{f}.child_rekey"),
                        format!("{msg}, which is 1h when not given"),
                    ),
                }
                None
            } else {
                Some(d)
            }
        }
        _ => None,
    };
    // A limit of zero would expire every SA at once: a limit is left out
    // for none, never written as 0.
    let bytes = match &raw.child_bytes {
        None => Some(None),
        Some(b) => v
            .parse(b, &format!("{f}.child_bytes"), |s| {
                let n = ByteSize::parse(s)?;
                if n.0 == 0 {
                    return Err(format!(
                        "`{s}` is a byte limit of zero, which would expire every child SA at once; give a size such as `64GiB`, or remove child_bytes for no byte limit"
                    ));
                }
                Ok(n)
            })
            .map(Some),
    };
    let packets = match &raw.child_packets {
        None => Some(None),
        Some(p) if p.value == 0 => {
            v.err(
                &p.span,
                format!("{f}.child_packets"),
                "a packet limit of zero would expire every child SA at once; give a number of packets, or remove child_packets for no packet limit",
            );
            None
        }
        Some(p) => Some(Some(p.value)),
    };
    Some(Lifetimes {
        ike: ike?,
        child: child?,
        child_rekey: rekey?,
        child_bytes: bytes?,
        child_packets: packets?,
    })
}
