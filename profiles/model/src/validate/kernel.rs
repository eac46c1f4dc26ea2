//! `[kernel]`: the Debian kernel package, the drivers to load, and the
//! command line (each word checked against [`crate::cmdline`]'s refusals).

use crate::model::*;
use crate::raw::*;

use super::checker::{debian_package, list, V};

/// `[kernel]`: the package, drivers (module names, each once, `-` and `_`
/// alike) and the command line.
pub(super) fn kernel(v: &mut V<'_>, k: &Sp<RawKernel>) -> Option<Kernel> {
    let package = v
        .req(&k.package, &k.span, "kernel", "package")
        .and_then(|p| debian_package(v, p, "kernel.package"));
    let mut drivers = Vec::new();
    let mut ok = true;
    for (i, d) in list(&k.drivers).iter().enumerate() {
        let field = format!("kernel.drivers[{i}]");
        let norm = d.value.replace('-', "_");
        if norm.is_empty() || !norm.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            v.err(
                &d.span,
                field,
                format!("`{}` is not a kernel module name", d.value),
            );
            ok = false;
        } else if drivers.contains(&norm) {
            v.err(
                &d.span,
                field,
                format!("driver `{}` is listed twice", d.value),
            );
            ok = false;
        } else {
            drivers.push(norm);
        }
    }
    let cmdline: Vec<String> = list(&k.cmdline).iter().map(|c| c.value.clone()).collect();
    for (i, c) in list(&k.cmdline).iter().enumerate() {
        if c.value.is_empty()
            || c.value
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control())
        {
            v.err(
                &c.span,
                format!("kernel.cmdline[{i}]"),
                "a command-line argument must be one word without spaces",
            );
            ok = false;
        } else if let Some((_, why)) = crate::cmdline::refusal(&c.value) {
            v.err(&c.span, format!("kernel.cmdline[{i}]"), why);
            ok = false;
        }
    }
    ok.then_some(())?;
    Some(Kernel {
        package: package?,
        drivers,
        cmdline,
    })
}
