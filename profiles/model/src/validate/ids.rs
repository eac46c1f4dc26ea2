//! `[viaduct.ids]`: the IDS rules, inline and from files locked by their
//! SHA-256, read with `ids_rules` (a Suricata/Snort subset). A rule outside
//! the subset refuses the profile, naming the file, the line, the sid and
//! the keyword, unless `unsupported = "skip"` leaves it out (counted in the
//! coverage report). Never silently weakened: a rule is compiled whole or
//! not at all.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::diag::Diagnostic;
use crate::model::*;
use crate::raw::*;

use super::checker::{list, V};
use super::personality::Side2;

/// Largest rules file read.
pub const MAX_RULES_FILE: u64 = 16 << 20;
/// Most rules compiled over all sources.
pub const MAX_IDS_RULES: usize = 100_000;

/// `[viaduct.ids]`. `None` when something is wrong (reported).
pub(super) fn ids(v: &mut V<'_>, raw: &Sp<RawIds>, red: Side2<'_>) -> Option<Ids> {
    let t = "viaduct.ids";
    let mut ok = true;
    let skip = match &raw.unsupported {
        None => false,
        Some(u) => match v.one_of(
            u,
            &format!("{t}.unsupported"),
            &[("fail", false), ("skip", true)],
        ) {
            Some(s) => s,
            None => {
                ok = false;
                false
            }
        },
    };
    // Variables: Suricata's defaults, HOME_NET red's networks, then the profile's.
    let mut vars = ids_rules::Vars::suricata_defaults();
    let mut shown = BTreeMap::new();
    if let Some((_, p)) = red {
        let nets: Vec<String> = p
            .addresses
            .iter()
            .map(|a| a.network().to_string())
            .collect();
        if !nets.is_empty() {
            let home = format!("[{}]", nets.join(","));
            vars.set("HOME_NET", &home);
            shown.insert("HOME_NET".to_string(), home);
        }
    }
    if let Some(given) = &raw.vars {
        for (name, value) in &given.value {
            let good = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !good {
                v.err(
                    &value.span,
                    format!("{t}.vars.{name}"),
                    format!("`{name}` is not a variable name: upper-case letters, digits and `_`, as in HOME_NET"),
                );
                ok = false;
                continue;
            }
            vars.set(name, &value.value);
            shown.insert(name.clone(), value.value.clone());
        }
    }
    let mut sources = Vec::new();
    let mut sets = Vec::new();
    if let Some(r) = &raw.rules {
        let set = ids_rules::parse(&r.value, &vars);
        if !skip {
            for refusal in &set.refused {
                let (span, line) = line_span(v, &r.span, refusal.line);
                let msg = match line {
                    Some(_) => refusal_text(refusal),
                    None => format!(
                        "rule on line {} of `rules`: {}",
                        refusal.line,
                        refusal_text(refusal)
                    ),
                };
                v.err(&span, format!("{t}.rules"), msg);
                ok = false;
            }
        }
        sources.push(IdsSource {
            origin: "inline".into(),
            sha256: hex(&Sha256::digest(r.value.as_bytes())),
            text: r.value.clone(),
        });
        sets.push((r.span.clone(), "inline".to_string(), set));
    }
    for (i, f) in list(&raw.rules_files).iter().enumerate() {
        let ft = format!("{t}.rules_files[{i}]");
        let path = v.req(&f.path, &f.span, &ft, "path").cloned();
        let want = v.req(&f.sha256, &f.span, &ft, "sha256").and_then(|s| {
            let h = s.value.to_ascii_lowercase();
            if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                Some(h)
            } else {
                v.err(
                    &s.span,
                    format!("{ft}.sha256"),
                    "give the file's SHA-256 as 64 hex digits (`sha256sum FILE`)",
                );
                None
            }
        });
        let (Some(path), Some(want)) = (path, want) else {
            ok = false;
            continue;
        };
        let full = relative_to(v, &path.span, &path.value);
        let text = match read_rules(&full) {
            Ok(t) => t,
            Err(e) => {
                v.err(
                    &path.span,
                    format!("{ft}.path"),
                    format!("{}: {e}", full.display()),
                );
                ok = false;
                continue;
            }
        };
        let got = hex(&Sha256::digest(text.as_bytes()));
        if got != want {
            v.err(
                &f.sha256.as_ref().map(|s| s.span.clone()).unwrap_or(f.span.clone()),
                format!("{ft}.sha256"),
                format!("{} has SHA-256 {got}, not the one locked here: check what changed, then write the new digest", full.display()),
            );
            ok = false;
            continue;
        }
        let set = ids_rules::parse(&text, &vars);
        if !skip {
            for refusal in &set.refused {
                v.diags.push(file_diag(
                    &full,
                    &text,
                    refusal.line,
                    &ft,
                    &refusal_text(refusal),
                ));
                ok = false;
            }
        }
        sources.push(IdsSource {
            origin: path.value.clone(),
            sha256: got,
            text,
        });
        sets.push((path.span.clone(), full.display().to_string(), set));
    }
    if raw.rules.is_none() && list(&raw.rules_files).is_empty() {
        v.err(&raw.span, t, "no rules: give `rules` or `rules_files`");
        return None;
    }
    if sources.is_empty() {
        // Every file was refused above: one error each is enough.
        return None;
    }
    // A sid names one rule across every source.
    let mut seen: BTreeMap<u32, String> = BTreeMap::new();
    for (span, origin, set) in &sets {
        for r in &set.rules {
            let here = format!("{origin} line {}", r.line);
            if let Some(first) = seen.get(&r.sid) {
                v.err(
                    span,
                    format!("{t}.rules"),
                    format!("sid {} is used twice: {first} and {here}", r.sid),
                );
                ok = false;
            } else {
                seen.insert(r.sid, here);
            }
        }
    }
    let compiled: usize = sets.iter().map(|(_, _, s)| s.rules.len()).sum();
    let skipped: usize = sets.iter().map(|(_, _, s)| s.refused.len()).sum();
    if compiled == 0 && ok {
        v.err(&raw.span, t, "no rule compiled: every rule is outside the supported subset (see the coverage report of `appliance profile check`)");
        ok = false;
    }
    if compiled > MAX_IDS_RULES {
        v.err(
            &raw.span,
            t,
            format!("{compiled} rules; the Viaduct takes at most {MAX_IDS_RULES}"),
        );
        ok = false;
    }
    let mut total = ids_rules::Ruleset {
        rules: Vec::new(),
        refused: Vec::new(),
    };
    for (_, _, s) in sets {
        total.rules.extend(s.rules);
        total.refused.extend(s.refused);
    }
    ok.then(|| Ids {
        sources,
        vars: shown,
        skip_unsupported: skip,
        compiled,
        skipped,
        coverage: total.coverage().to_string(),
    })
}

/// A refusal as the profile's error says it.
fn refusal_text(r: &ids_rules::Refusal) -> String {
    match r.sid {
        Some(sid) => format!("sid {sid}: {}", r.reason),
        None => r.reason.clone(),
    }
}

/// The span of line `line` (from 1) of the string value at `span`, when the
/// string's lines are the source's lines (a literal or basic string without
/// line continuations); else the string's own span and `None`.
fn line_span(v: &V<'_>, span: &Range<usize>, line: usize) -> (Range<usize>, Option<usize>) {
    let fallback = (span.clone(), None);
    let Some(file) = v.sources.file_at(span.start) else {
        return fallback;
    };
    let (Some(start), Some(end)) = (
        span.start.checked_sub(file.base),
        span.end.checked_sub(file.base),
    ) else {
        return fallback;
    };
    let Some(raw) = file.text.get(start..end) else {
        return fallback;
    };
    let (open, close) = if raw.starts_with("'''") || raw.starts_with("\"\"\"") {
        (3, 3)
    } else if raw.starts_with('\'') || raw.starts_with('"') {
        (1, 1)
    } else {
        return fallback;
    };
    if raw.len() < open + close {
        return fallback;
    }
    let mut body_start = open;
    // TOML drops a newline right after a multi-line string's delimiter.
    if open == 3 {
        if raw[body_start..].starts_with("\r\n") {
            body_start += 2;
        } else if raw[body_start..].starts_with('\n') {
            body_start += 1;
        }
    }
    let body = &raw[body_start..raw.len() - close];
    // A basic string's `\` at a line's end joins lines: then the lines differ.
    if raw.starts_with('"') && body.lines().any(|l| l.trim_end().ends_with('\\')) {
        return fallback;
    }
    let mut offset = 0usize;
    for (i, l) in body.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let s = span.start + body_start + offset;
            let len = l.trim_end_matches(['\n', '\r']).len().max(1);
            return (s..s + len, Some(line));
        }
        offset += l.len();
    }
    fallback
}

/// `path` relative to the directory of the profile file that wrote it.
fn relative_to(v: &V<'_>, span: &Range<usize>, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let dir = v
        .sources
        .file_at(span.start)
        .and_then(|f| f.path.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    dir.join(p)
}

/// Reads a rules file: at most [`MAX_RULES_FILE`] bytes of UTF-8.
fn read_rules(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a file".into());
    }
    if meta.len() > MAX_RULES_FILE {
        return Err(format!(
            "{} bytes; a rules file holds at most {MAX_RULES_FILE}",
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    String::from_utf8(bytes)
        .map_err(|e| format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()))
}

/// A diagnostic at line `line` of a rules file.
fn file_diag(path: &Path, text: &str, line: usize, field: &str, msg: &str) -> Diagnostic {
    let mut d = Diagnostic::file_level(path.to_path_buf(), line, 1, msg);
    d.field = field.to_string();
    d.source_line = text.lines().nth(line.saturating_sub(1)).map(str::to_owned);
    d.underline = 0..d
        .source_line
        .as_ref()
        .map_or(0, |l| l.chars().count().min(80));
    d
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
