//! The files a profile puts into a personality's root:
//! `[[personalities.<side>.files]]`, each an absolute path, its content
//! inline and its permission bits. The builder writes them over what the
//! packages ship (a package's default configuration, `/etc/passwd`), never
//! over what the builder itself writes or what the runtime mounts.

use crate::model::*;
use crate::raw::*;

use super::checker::{list, V};

/// Largest content of one file.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Most files in one personality.
pub const MAX_FILES: usize = 64;
/// Longest path.
const MAX_PATH: usize = 255;
/// Default permission bits.
const DEFAULT_MODE: u32 = 0o444;

/// Where a profile's file may not go, and why: mount points the runtime
/// covers (what is written there would never be seen), and what the builder
/// writes itself.
const RESERVED: &[(&str, &str)] = &[
    ("/dev", "the runtime mounts its own /dev there"),
    ("/proc", "the runtime mounts /proc there"),
    ("/sys", "a personality has no /sys"),
    ("/run", "the runtime mounts an empty tmpfs there"),
    ("/tmp", "the runtime mounts an empty tmpfs there"),
    (
        "/etc/appliance",
        "the builder writes the network setup there",
    ),
    (
        "/etc/hostname",
        "the builder writes it from the profile's name",
    ),
    ("/usr/lib/appliance", "a microvm guest's init is there"),
];

/// `files`: each with a well-formed, unreserved, unique path, content
/// within [`MAX_FILE_BYTES`] and a mode within `0o777`. `None` when one has
/// an error (reported).
pub(super) fn files(v: &mut V<'_>, p: &Sp<RawPersonality>, t: &str) -> Option<Vec<RootFile>> {
    let mut ok = true;
    let mut out = Vec::new();
    let mut paths = Vec::new();
    let items = list(&p.files);
    if items.len() > MAX_FILES {
        let span = p.files.as_ref().map(|f| f.span.clone()).unwrap_or_default();
        v.err(
            &span,
            format!("{t}.files"),
            format!(
                "{} files; a personality takes at most {MAX_FILES}",
                items.len()
            ),
        );
        ok = false;
    }
    for (i, f) in items.iter().enumerate() {
        let ft = format!("{t}.files[{i}]");
        let path =
            v.req(&f.path, &f.span, &ft, "path")
                .and_then(|pth| match check_path(&pth.value) {
                    Ok(()) => Some(pth.value.clone()),
                    Err(msg) => {
                        v.err(&pth.span, format!("{ft}.path"), msg);
                        None
                    }
                });
        if let (Some(pth), Some(raw)) = (&path, &f.path) {
            paths.push((pth.clone(), raw.span.clone(), format!("{ft}.path")));
        }
        let content = v.req(&f.content, &f.span, &ft, "content").and_then(|c| {
            if c.value.len() > MAX_FILE_BYTES {
                v.err(
                    &c.span,
                    format!("{ft}.content"),
                    format!(
                        "{} bytes; a file holds at most {MAX_FILE_BYTES} (1 MiB)",
                        c.value.len()
                    ),
                );
                None
            } else {
                Some(c.value.clone())
            }
        });
        let mode = match &f.mode {
            None => Some(DEFAULT_MODE),
            Some(m) if m.value <= 0o777 => Some(m.value as u32),
            Some(m) => {
                v.err(
                    &m.span,
                    format!("{ft}.mode"),
                    format!(
                        "mode {:#o} has bits above 0o777 (set-user-ID, set-group-ID or sticky); give permission bits only, e.g. 0o644",
                        m.value
                    ),
                );
                None
            }
        };
        match (path, content, mode) {
            (Some(path), Some(content), Some(mode)) => out.push(RootFile {
                path,
                mode,
                content,
            }),
            _ => ok = false,
        }
    }
    ok &= unique_paths(v, &paths);
    ok.then_some(out)
}

/// A path is absolute and normalised: `/`-separated components of letters,
/// digits and `._+@-`, none empty, `.` or `..`; not reserved.
fn check_path(p: &str) -> Result<(), String> {
    let Some(rest) = p.strip_prefix('/') else {
        return Err(format!(
            "`{p}` is not an absolute path; write it from the personality's root, e.g. /etc/frr/bgpd.conf"
        ));
    };
    if p.len() > MAX_PATH {
        return Err(format!(
            "the path is {} bytes long; at most {MAX_PATH}",
            p.len()
        ));
    }
    for c in rest.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(format!(
                "`{p}` is not a normalised path (an empty, `.` or `..` component); write each directory once, e.g. /etc/frr/bgpd.conf"
            ));
        }
        if let Some(b) = c
            .chars()
            .find(|&b| !(b.is_ascii_alphanumeric() || "._+@-".contains(b)))
        {
            return Err(format!(
                "`{p}` holds {b:?}; a path takes ASCII letters, digits, `.`, `_`, `+`, `@`, `-` and `/`"
            ));
        }
    }
    for (r, why) in RESERVED {
        if p == *r || p.strip_prefix(r).is_some_and(|s| s.starts_with('/')) {
            return Err(format!("`{p}` is under {r}: {why}"));
        }
    }
    Ok(())
}

/// Reports a path given twice, or one that is a directory of another.
fn unique_paths(v: &mut V<'_>, paths: &[(String, std::ops::Range<usize>, String)]) -> bool {
    let mut ok = true;
    for (i, (p, span, field)) in paths.iter().enumerate() {
        for (q, first, _) in &paths[..i] {
            let clash = if p == q {
                Some(format!("`{p}` is given twice; each file once"))
            } else if q
                .strip_prefix(p.as_str())
                .is_some_and(|s| s.starts_with('/'))
            {
                Some(format!(
                    "`{p}` is a directory of `{q}`, which is a file here"
                ))
            } else if p
                .strip_prefix(q.as_str())
                .is_some_and(|s| s.starts_with('/'))
            {
                Some(format!(
                    "`{q}` is a file here, so `{p}` cannot be inside it"
                ))
            } else {
                None
            };
            if let Some(msg) = clash {
                v.err_note(
                    span,
                    field.clone(),
                    msg,
                    first,
                    format!("`{q}` is given here"),
                );
                ok = false;
                break;
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::check_path;

    #[test]
    fn paths_are_absolute_normalised_and_unreserved() {
        for good in [
            "/etc/frr/bgpd.conf",
            "/etc/passwd",
            "/usr/share/x+y@z_1.conf",
            "/tmpfoo",
        ] {
            assert_eq!(check_path(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("etc/frr.conf", "not an absolute path"),
            ("/etc//frr.conf", "not a normalised path"),
            ("/etc/../root", "not a normalised path"),
            ("/etc/./x", "not a normalised path"),
            ("/etc/frr/", "not a normalised path"),
            ("/", "not a normalised path"),
            ("/etc/a b", "holds ' '"),
            ("/etc/a\nb", "holds '\\n'"),
            ("/etc/é", "holds 'é'"),
            ("/run/frr/x", "under /run"),
            ("/tmp", "under /tmp"),
            ("/dev/null", "under /dev"),
            ("/etc/appliance/network", "under /etc/appliance"),
            ("/etc/hostname", "under /etc/hostname"),
            (
                "/usr/lib/appliance/appliance-guest",
                "under /usr/lib/appliance",
            ),
        ] {
            let e = check_path(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        assert!(check_path(&format!("/{}", "a".repeat(255)))
            .unwrap_err()
            .contains("256 bytes long"));
    }
}
