//! What every check uses: `V`, the state of one validation run (the
//! sources that locate an error, the diagnostics so far, whether the profile
//! is a lab profile), with its helpers for located errors, required values,
//! names, choices and uniqueness; and value syntax that several parts share
//! (lists, Debian package names, hex bytes).
//!
//! Nothing here knows a part of a profile: the per-part modules build on
//! this one, never the other way round.

use std::collections::HashMap;
use std::ops::Range;

use crate::diag::Diagnostic;
use crate::raw::*;
use crate::source::SourceMap;

/// One validation run: where errors are located, the errors so far, and
/// whether the profile is a lab profile (set by `[appliance]`, read by the
/// checks of inline keys).
pub(super) struct V<'a> {
    pub(super) sources: &'a SourceMap,
    pub(super) diags: Vec<Diagnostic>,
    pub(super) lab: bool,
}

impl V<'_> {
    pub(super) fn err(
        &mut self,
        span: &Range<usize>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) {
        self.diags
            .push(Diagnostic::spanned(self.sources, span, field, msg));
    }

    /// An error that involves a second place, shown as a note with its own
    /// snippet (it may be in another file of the `extends` chain).
    pub(super) fn err_note(
        &mut self,
        span: &Range<usize>,
        field: impl Into<String>,
        msg: impl Into<String>,
        other: &Range<usize>,
        note: impl Into<String>,
    ) {
        self.diags.push(
            Diagnostic::spanned(self.sources, span, field, msg).with_note(
                self.sources,
                other,
                note,
            ),
        );
    }

    /// Was `a` written after `b`? Later in the same file, or in a file that
    /// extends `b`'s (the profile's own file comes first in the source map).
    /// Of two conflicting values, the later one is reported, the earlier one
    /// is the note.
    pub(super) fn later(&self, a: &Range<usize>, b: &Range<usize>) -> bool {
        let base = |s: &Range<usize>| self.sources.file_at(s.start).map(|f| f.base);
        match (base(a), base(b)) {
            (Some(fa), Some(fb)) if fa != fb => fa < fb,
            _ => a.start > b.start,
        }
    }

    /// A required value; reports it missing at the parent table's span.
    pub(super) fn req<'b, T>(
        &mut self,
        v: &'b Option<Sp<T>>,
        parent: &Range<usize>,
        table: &str,
        key: &str,
    ) -> Option<&'b Sp<T>> {
        if v.is_none() {
            let field = if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            };
            let place = if table.is_empty() {
                "the profile".to_string()
            } else {
                format!("[{table}]")
            };
            self.err(parent, field, format!("missing `{key}` in {place}"));
        }
        v.as_ref()
    }

    pub(super) fn name(&mut self, v: &Sp<String>, field: &str) -> Option<String> {
        let s = v.value.as_str();
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Some(s.to_string())
        } else {
            self.err(
                &v.span,
                field,
                format!("`{s}` is not a valid name: use 1-63 lowercase letters, digits and `-`"),
            );
            None
        }
    }

    pub(super) fn parse<T>(
        &mut self,
        v: &Sp<String>,
        field: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match f(&v.value) {
            Ok(t) => Some(t),
            Err(msg) => {
                self.err(&v.span, field, msg);
                None
            }
        }
    }

    pub(super) fn one_of<T: Copy>(
        &mut self,
        v: &Sp<String>,
        field: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        if let Some((_, t)) = options.iter().find(|(n, _)| *n == v.value) {
            return Some(*t);
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        self.err(
            &v.span,
            field,
            format!("`{}` is not one of: {}", v.value, names.join(", ")),
        );
        None
    }

    /// Reports duplicate names; `names` holds (name, span, field), in
    /// list order. The second use is reported, with a note at the first.
    pub(super) fn unique(&mut self, what: &str, names: &[(String, Range<usize>, String)]) {
        let mut seen: HashMap<&str, &Range<usize>> = HashMap::new();
        for (n, span, field) in names {
            if let Some(first) = seen.get(n.as_str()) {
                let first = (*first).clone();
                let msg = if what == "SPI" {
                    format!("SPI {n} is used twice; each manually keyed SA needs its own SPI")
                } else {
                    format!("{what} name `{n}` is used twice; names must be unique")
                };
                self.err_note(
                    span,
                    field.clone(),
                    msg,
                    &first,
                    format!("`{n}` is first used here"),
                );
            } else {
                seen.insert(n.as_str(), span);
            }
        }
    }
}

/// The items of an optional list (none when it is not given).
pub(super) fn list<T>(v: &Option<Sp<Vec<Sp<T>>>>) -> &[Sp<T>] {
    v.as_ref().map(|l| l.value.as_slice()).unwrap_or(&[])
}

/// A Debian package name (lower case, digits and `+-.`, at least two
/// characters, starting with a letter or digit).
pub(super) fn debian_package(v: &mut V<'_>, p: &Sp<String>, field: &str) -> Option<String> {
    let s = &p.value;
    let ok = s.len() >= 2
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    if ok {
        Some(s.clone())
    } else {
        v.err(
            &p.span,
            field,
            format!("`{s}` is not a Debian package name"),
        );
        None
    }
}

/// Bytes written as hex digits, with or without `0x`.
pub(super) fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}
