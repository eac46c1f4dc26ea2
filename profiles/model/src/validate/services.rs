//! The services of a personality: `[[personalities.<side>.services]]`,
//! each a named program with its restart policy and the capabilities it
//! keeps (from a fixed allowlist).

use crate::model::*;
use crate::raw::*;

use super::checker::{list, V};

/// Capabilities a service may keep.
const ALLOWED_CAPS: &[&str] = &[
    "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_KILL",
    // FRR's daemons ask for it at start (network-namespace VRFs) and exit
    // without it. Held inside the personality's own user namespace only;
    // the personality's system-call filter refuses every call it would
    // widen (mount, setns, unshare, new namespaces, bpf, keyctl).
    "CAP_SYS_ADMIN",
];

/// `services`: each with a unique name, an absolute program path, a restart
/// policy and allowed capabilities. `None` when one has an error (reported).
pub(super) fn services(v: &mut V<'_>, p: &Sp<RawPersonality>, t: &str) -> Option<Vec<Service>> {
    let mut ok = true;
    let mut services = Vec::new();
    let mut names = Vec::new();
    for (i, s) in list(&p.services).iter().enumerate() {
        let st = format!("{t}.services[{i}]");
        let name = v
            .req(&s.name, &s.span, &st, "name")
            .and_then(|n| v.name(n, &format!("{st}.name")));
        if let Some(n) = &s.name {
            names.push((n.value.clone(), n.span.clone(), format!("{st}.name")));
        }
        let command = v.req(&s.command, &s.span, &st, "command").and_then(|c| {
            let words: Vec<String> = c.value.iter().map(|w| w.value.clone()).collect();
            match words.first() {
                None => {
                    v.err(
                        &c.span,
                        format!("{st}.command"),
                        "the command is empty; give the program's absolute path and its arguments",
                    );
                    None
                }
                Some(prog) if !prog.starts_with('/') => {
                    v.err(
                        &c.value[0].span,
                        format!("{st}.command[0]"),
                        format!("`{prog}` must be an absolute path (e.g. /usr/sbin/{prog})"),
                    );
                    None
                }
                Some(_) => Some(words),
            }
        });
        let restart = match &s.restart {
            None => Some(Restart::Always),
            Some(r) => v.one_of(
                r,
                &format!("{st}.restart"),
                &[
                    ("always", Restart::Always),
                    ("on-failure", Restart::OnFailure),
                    ("never", Restart::Never),
                ],
            ),
        };
        let mut caps = Vec::new();
        for (j, c) in list(&s.capabilities).iter().enumerate() {
            if ALLOWED_CAPS.contains(&c.value.as_str()) {
                caps.push(c.value.clone());
            } else {
                v.err(
                    &c.span,
                    format!("{st}.capabilities[{j}]"),
                    format!(
                        "capability `{}` is not allowed in a personality; allowed: {}",
                        c.value,
                        ALLOWED_CAPS.join(", ")
                    ),
                );
                ok = false;
            }
        }
        match (name, command, restart) {
            (Some(name), Some(command), Some(restart)) => services.push(Service {
                name,
                command,
                restart,
                capabilities: caps,
            }),
            _ => ok = false,
        }
    }
    v.unique("service", &names);
    ok.then_some(services)
}
