//! `[appliance]`: name, version, security version, runtime, and whether this
//! is a lab profile (later checks read it from `V::lab`).

use crate::model::*;
use crate::raw::*;

use super::checker::V;

/// `[appliance]`. Sets `V::lab` for the checks that follow.
pub(super) fn appliance(v: &mut V<'_>, a: &Sp<RawAppliance>) -> Option<Appliance> {
    let t = "appliance";
    let name = v
        .req(&a.name, &a.span, t, "name")
        .and_then(|n| v.name(n, "appliance.name"));
    let version = v.req(&a.version, &a.span, t, "version").and_then(|ver| {
        let ok = !ver.value.is_empty()
            && ver.value.len() <= 64
            && ver
                .value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+~-".contains(&b))
            && ver.value.as_bytes()[0].is_ascii_digit();
        if ok {
            Some(ver.value.clone())
        } else {
            v.err(
                &ver.span,
                "appliance.version",
                format!(
                    "`{}` is not a version: start with a digit, use letters, digits and . _ + ~ -",
                    ver.value
                ),
            );
            None
        }
    });
    let security_version = v
        .req(&a.security_version, &a.span, t, "security_version")
        .map(|s| s.value);
    let lab = a.lab.as_ref().is_some_and(|l| l.value);
    v.lab = lab;
    let runtime = match &a.runtime {
        None => Some(Runtime::Compartment),
        Some(r) => match r.value.as_str() {
            "compartment" => Some(Runtime::Compartment),
            "microvm" => Some(Runtime::Microvm),
            other => {
                v.err(
                    &r.span,
                    "appliance.runtime",
                    format!("unknown runtime `{other}`; use `compartment` or `microvm`"),
                );
                None
            }
        },
    };
    Some(Appliance {
        name: name?,
        version: version?,
        security_version: security_version?,
        description: a.description.as_ref().map(|d| d.value.clone()),
        runtime: runtime?,
        lab,
    })
}
