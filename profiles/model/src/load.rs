//! Loading: read a profile and its `extends` chain, merge them, and
//! deserialise the result into the raw model, keeping every span.
//!
//! Merge rules: tables merge deeply and the derived profile wins; any other
//! value (lists included) is replaced by the derived profile's value; a
//! derived value written `{ append = [...] }` is appended to the base's list.
//! `extends` and `abstract` are never inherited.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_spanned::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use crate::diag::{Diagnostic, Diagnostics};
use crate::raw::RawProfile;
use crate::shape::{field_of, header_of, Seg};
use crate::source::{read_profile_file, ReadFailure, SourceMap, MAX_PROFILE_BYTES};

/// Longest `extends` chain accepted.
pub const MAX_EXTENDS_DEPTH: usize = 16;

/// A profile read from disk with its bases merged in, not yet validated.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Every file read, the profile itself first.
    pub sources: SourceMap,
    /// The merged raw model.
    pub raw: RawProfile,
}

/// The next file to read and, for a base, the file and span of the `extends` naming it.
type Pending = Option<(PathBuf, Option<(usize, Range<usize>)>)>;

/// One file's parse result with spans shifted into the virtual space.
struct FileNode {
    index: usize,
}

/// Reads `path`, resolves `extends`, merges and deserialises.
pub fn load(path: &Path) -> Result<Loaded, Diagnostics> {
    let mut sources = SourceMap::default();
    // Phase 1: read the chain of files (the text must outlive the parse trees).
    let mut chain: Vec<FileNode> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut next: Pending = Some((path.to_path_buf(), None));
    while let Some((file, referrer)) = next.take() {
        let canonical = std::fs::canonicalize(&file).ok();
        if let (Some(canon), Some((_, span))) = (&canonical, &referrer) {
            if seen.contains(canon) {
                let names: Vec<String> = chain
                    .iter()
                    .map(|n| sources.file(n.index).path.display().to_string())
                    .chain(std::iter::once(file.display().to_string()))
                    .collect();
                return Err(Diagnostics(vec![Diagnostic::spanned(
                    &sources,
                    span,
                    "extends",
                    format!(
                        "`extends` cycle: {}; remove one of these `extends` lines",
                        names.join(" -> ")
                    ),
                )]));
            }
        }
        if chain.len() >= MAX_EXTENDS_DEPTH {
            let span = referrer.map(|r| r.1).unwrap_or(0..0);
            return Err(Diagnostics(vec![Diagnostic::spanned(
                &sources,
                &span,
                "extends",
                format!("`extends` chain longer than {MAX_EXTENDS_DEPTH} files"),
            )]));
        }
        let text = match read_profile_file(&file) {
            Ok(t) => t,
            Err(failure) => {
                return Err(Diagnostics(vec![read_failure(
                    &sources,
                    &file,
                    referrer.as_ref(),
                    failure,
                )]))
            }
        };
        if text.trim().is_empty() {
            return Err(Diagnostics(vec![Diagnostic::file_level(
                file.clone(),
                1,
                1,
                "the profile is empty; a profile needs at least [appliance], [hardware], [kernel], [personalities], [viaduct] and [image] (or `extends = \"<base>\"`)",
            )]));
        }
        let index = sources.add(file.clone(), Arc::from(text.as_str()));
        // Parse once to find `extends`; the full parse happens in phase 2.
        let extends = match DeTable::parse(&text) {
            Ok(table) => table.get_ref().get("extends").map(|v| match v.get_ref() {
                DeValue::String(s) => Ok((s.to_string(), v.span())),
                _ => Err(v.span()),
            }),
            Err(e) => return Err(Diagnostics(vec![syntax_error(&sources, index, &e)])),
        };
        let extends = match extends {
            None => None,
            Some(Ok((p, span))) => Some((p, shift(span, sources.file(index).base))),
            Some(Err(span)) => {
                let span = shift(span, sources.file(index).base);
                return Err(Diagnostics(vec![Diagnostic::spanned(
                    &sources,
                    &span,
                    "extends",
                    "`extends` must be a string: the path of the base profile, relative to this file",
                )]));
            }
        };
        if let Some(c) = canonical {
            seen.push(c);
        }
        if let Some((base, span)) = &extends {
            let dir = file.parent().unwrap_or(Path::new("."));
            next = Some((dir.join(base), Some((index, span.clone()))));
        }
        chain.push(FileNode { index });
    }

    // Phase 2: parse every file with spans shifted, merge base-first.
    let mut merged: Option<Spanned<DeTable<'_>>> = None;
    for node in chain.iter().rev() {
        let file = sources.file(node.index);
        let table = match DeTable::parse(&file.text) {
            Ok(t) => t,
            Err(e) => return Err(Diagnostics(vec![syntax_error(&sources, node.index, &e)])),
        };
        let mut table = shift_table(table, file.base);
        // `abstract` and `extends` belong to the file they are written in:
        // they are dropped from a base before the derived file merges over it.
        merged = Some(match merged.take() {
            None => table,
            Some(mut base) => {
                base.get_mut().remove("abstract");
                base.get_mut().remove("extends");
                let span = table.span();
                let t = std::mem::take(table.get_mut());
                merge_tables(base.get_mut(), t);
                Spanned::new(span, std::mem::take(base.get_mut()))
            }
        });
    }
    let Some(merged) = merged else {
        return Err(Diagnostics(vec![Diagnostic::file_level(
            path.to_path_buf(),
            1,
            1,
            "the profile could not be read",
        )]));
    };
    let mut shape = crate::shape::check(&sources, &merged);
    if !shape.is_empty() {
        let mut d = Diagnostics(std::mem::take(&mut shape));
        d.sort();
        return Err(d);
    }
    let raw = deserialize(&sources, merged)?;
    Ok(Loaded { sources, raw })
}

fn shift(r: Range<usize>, by: usize) -> Range<usize> {
    r.start + by..r.end + by
}

fn shift_value<'i>(v: Spanned<DeValue<'i>>, by: usize) -> Spanned<DeValue<'i>> {
    let span = shift(v.span(), by);
    let value = match v.into_inner() {
        DeValue::Table(t) => DeValue::Table(shift_table(Spanned::new(0..0, t), by).into_inner()),
        DeValue::Array(mut a) => {
            for item in a.iter_mut() {
                let old = std::mem::replace(item, Spanned::new(0..0, DeValue::Boolean(false)));
                *item = shift_value(old, by);
            }
            DeValue::Array(a)
        }
        other => other,
    };
    Spanned::new(span, value)
}

fn shift_table(t: Spanned<DeTable<'_>>, by: usize) -> Spanned<DeTable<'_>> {
    let span = shift(t.span(), by);
    let mut out = DeTable::new();
    for (k, v) in t.into_inner() {
        let kspan = shift(k.span(), by);
        out.insert(Spanned::new(kspan, k.into_inner()), shift_value(v, by));
    }
    Spanned::new(span, out)
}

/// Merges `over` into `base` (derived profile wins).
fn merge_tables<'i>(base: &mut DeTable<'i>, over: DeTable<'i>) {
    for (k, v) in over {
        let key: &str = k.get_ref();
        let existing = base.remove(key);
        let merged = match (existing, v) {
            (Some(b), o) => merge_values(b, o),
            (None, o) => resolve_append(o),
        };
        base.insert(k, merged);
    }
}

fn merge_values<'i>(
    base: Spanned<DeValue<'i>>,
    over: Spanned<DeValue<'i>>,
) -> Spanned<DeValue<'i>> {
    let over_span = over.span();
    match (base.into_inner(), over.into_inner()) {
        (DeValue::Table(mut b), DeValue::Table(o)) if append_list(&o).is_none() => {
            merge_tables(&mut b, o);
            Spanned::new(over_span, DeValue::Table(b))
        }
        (DeValue::Array(mut b), DeValue::Table(o)) if append_list(&o).is_some() => {
            if let Some(DeValue::Array(extra)) = take_append(o) {
                for item in extra.iter() {
                    b.push(item.clone());
                }
            }
            Spanned::new(over_span, DeValue::Array(b))
        }
        (_, o) => resolve_append(Spanned::new(over_span, o)),
    }
}

/// `{ append = [...] }` with nothing to append to is just the list.
fn resolve_append(v: Spanned<DeValue<'_>>) -> Spanned<DeValue<'_>> {
    let span = v.span();
    match v.into_inner() {
        DeValue::Table(t) if append_list(&t).is_some() => match take_append(t) {
            Some(list) => Spanned::new(span, list),
            None => Spanned::new(span, DeValue::Array(DeArray::new())),
        },
        other => Spanned::new(span, other),
    }
}

fn append_list<'a, 'i>(t: &'a DeTable<'i>) -> Option<&'a DeArray<'i>> {
    if t.len() != 1 {
        return None;
    }
    match t.get("append").map(|v| v.get_ref()) {
        Some(DeValue::Array(a)) => Some(a),
        _ => None,
    }
}

fn take_append(mut t: DeTable<'_>) -> Option<DeValue<'_>> {
    t.remove("append").map(|v| v.into_inner())
}

fn deserialize(
    sources: &SourceMap,
    table: Spanned<DeTable<'_>>,
) -> Result<RawProfile, Diagnostics> {
    let de = toml::de::Deserializer::from(table);
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(de, &mut track);
    match <RawProfile as serde::Deserialize>::deserialize(tracked) {
        Ok(raw) => Ok(raw),
        Err(e) => {
            let path = segments(&track.path());
            let span = e.span().unwrap_or(0..0);
            Err(Diagnostics(vec![Diagnostic::spanned(
                sources,
                &span,
                field_of(&path),
                friendly_serde_message(e.message(), &path),
            )]))
        }
    }
}

/// serde_path_to_error's path as map keys and list indices, without the
/// segments `Sp<T>` adds (serde_spanned's private field name).
fn segments(path: &serde_path_to_error::Path) -> Vec<Seg> {
    path.iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            serde_path_to_error::Segment::Map { key } if !key.starts_with("$__serde_spanned") => {
                Some(Seg::Key(key.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Serde's message in an administrator's words (see [`crate::shape`]):
/// what the field should hold and what it holds, without Rust type names.
fn friendly_serde_message(msg: &str, path: &[Seg]) -> String {
    crate::shape::serde_message(msg, path)
}

fn syntax_error(sources: &SourceMap, index: usize, e: &toml::de::Error) -> Diagnostic {
    let file = sources.file(index);
    let local = e.span();
    let span = local
        .clone()
        .map(|s| shift(s, file.base))
        .unwrap_or(file.base..file.base);
    let msg = e.message().trim().to_string();
    if msg == "duplicate key" {
        if let Some(d) = duplicate_key(sources, index, local.unwrap_or(0..0)) {
            return d;
        }
    }
    Diagnostic::spanned(
        sources,
        &span,
        "(syntax)",
        format!("TOML syntax error: {msg}"),
    )
}

/// A duplicate key, named, with a note at its first definition.
///
/// The parser says only "duplicate key" at the second key. The key is the
/// text it points at; to find the table it is in and the first definition,
/// the file is parsed again with the second key replaced by a filler key of
/// the same length: the filler's place in the tree is the path, and the
/// original key next to it is the first definition. When that second parse
/// fails (another error further on), the key is still named.
fn duplicate_key(sources: &SourceMap, index: usize, local: Range<usize>) -> Option<Diagnostic> {
    let file = sources.file(index);
    let text: &str = &file.text;
    let written = text.get(local.clone())?;
    let key = unquote(written);
    if key.is_empty() && written.is_empty() {
        return None;
    }
    let span = shift(local.clone(), file.base);
    let filler = "_".repeat(written.len().max(1));
    let mut patched = String::with_capacity(text.len());
    patched.push_str(&text[..local.start]);
    patched.push_str(&filler);
    patched.push_str(&text[local.end..]);
    let first = DeTable::parse(&patched).ok().and_then(|t| {
        let mut path = Vec::new();
        find_key(t.get_ref(), &filler, &local, &key, &mut path).map(|first| (path, first))
    });
    // `[a.b]` written twice: the key is in a section header.
    let line_start = text[..local.start].rfind('\n').map_or(0, |i| i + 1);
    let header = text[line_start..local.start].trim_start().starts_with('[');
    match first {
        Some((path, first)) => {
            let field = field_of(&path);
            let parent = &path[..path.len().saturating_sub(1)];
            let msg = if header {
                format!(
                    "{} is defined twice; merge the two sections into one",
                    header_of(&path)
                )
            } else if parent.is_empty() {
                format!("`{key}` is set twice at the top level; keep one of them")
            } else {
                format!(
                    "`{key}` is set twice in {}; keep one of them",
                    header_of(parent)
                )
            };
            let first = shift(first, file.base);
            let note = if header {
                "first defined here".to_string()
            } else {
                format!("`{key}` is first set here")
            };
            Some(Diagnostic::spanned(sources, &span, field, msg).with_note(sources, &first, note))
        }
        None => Some(Diagnostic::spanned(
            sources,
            &span,
            "(syntax)",
            format!("`{key}` is set twice; a key may appear only once in a table"),
        )),
    }
}

/// A key as the parser sees it: without the quotes of `"a b"` or `'a b'`.
fn unquote(written: &str) -> String {
    let w = written.trim();
    for q in ['"', '\''] {
        if let Some(inner) = w.strip_prefix(q).and_then(|x| x.strip_suffix(q)) {
            return inner.to_string();
        }
    }
    w.to_string()
}

/// Finds the filler key at `at` in `t`; on the way, `path` is its path and
/// the result is the span of `key` in the same table.
fn find_key(
    t: &DeTable<'_>,
    filler: &str,
    at: &Range<usize>,
    key: &str,
    path: &mut Vec<Seg>,
) -> Option<Range<usize>> {
    if t.iter()
        .any(|(k, _)| k.get_ref().as_ref() == filler && k.span() == *at)
    {
        path.push(Seg::Key(key.to_string()));
        return t
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(k, _)| k.span());
    }
    for (k, v) in t.iter() {
        path.push(Seg::Key(k.get_ref().to_string()));
        if let Some(found) = find_in_value(v.get_ref(), filler, at, key, path) {
            return Some(found);
        }
        path.pop();
    }
    None
}

fn find_in_value(
    v: &DeValue<'_>,
    filler: &str,
    at: &Range<usize>,
    key: &str,
    path: &mut Vec<Seg>,
) -> Option<Range<usize>> {
    match v {
        DeValue::Table(t) => find_key(t, filler, at, key, path),
        DeValue::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                if let Some(found) = find_in_value(x.get_ref(), filler, at, key, path) {
                    return Some(found);
                }
                path.pop();
            }
            None
        }
        _ => None,
    }
}

fn read_failure(
    sources: &SourceMap,
    file: &Path,
    referrer: Option<&(usize, Range<usize>)>,
    failure: ReadFailure,
) -> Diagnostic {
    match (failure, referrer) {
        (ReadFailure::Io(msg), Some((_, span))) => Diagnostic::spanned(
            sources,
            span,
            "extends",
            format!("base profile {} cannot be read: {msg}; check the path (it is relative to this file)", file.display()),
        ),
        (ReadFailure::Io(msg), None) => {
            Diagnostic::file_level(file.to_path_buf(), 1, 1, format!("cannot read the profile: {msg}"))
        }
        (ReadFailure::TooLarge(size), _) => Diagnostic::file_level(
            file.to_path_buf(),
            1,
            1,
            format!("the file is {size} bytes; profiles are limited to {MAX_PROFILE_BYTES} bytes (1 MiB)"),
        ),
        (ReadFailure::NotUtf8 { prefix }, _) => {
            let (line, column) = crate::source::line_col(&prefix, prefix.len());
            Diagnostic::file_level(
                file.to_path_buf(),
                line,
                column,
                "the file is not UTF-8 text (a profile is a TOML text file); is this the right file?",
            )
        }
    }
}
