//! Shape check: the merged TOML tree against the profile schema, before it
//! is deserialised.
//!
//! Serde reports the first type mismatch in its own vocabulary
//! (`invalid type: map, expected a sequence`, `expected struct RawImage`)
//! and accepts a list where a table is expected (fields by position). This
//! walk uses the JSON Schema of the raw model ([`crate::schema`]), so it
//! follows every field the model has without a list to maintain, reports
//! every wrong type and unknown key at once, and says what the profile
//! should contain in an administrator's words: `expected a list of
//! strings`, `expected a size such as "256MiB"`, `expected a list of tables
//! (a [[personalities.red.services]] section for each)`. The same words
//! describe the rare error serde still reports ([`serde_message`]).
//!
//! Nothing here panics; the walk follows the schema, so its depth is the
//! schema's.

use std::ops::Range;

use serde_json::{Map, Value};
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diag::Diagnostic;
use crate::source::SourceMap;

/// Keys accepted without being in the schema: declared in the raw model
/// only so that validation can explain why they are wrong (`viaduct.nic`:
/// the Viaduct owns no NIC). `(table path, key)`.
const UNDOCUMENTED_KEYS: &[(&str, &str)] = &[("viaduct", "nic")];

/// The profile schema with its definitions, for lookups by field.
pub(crate) struct Schema {
    root: Value,
}

/// What a field holds, as the schema says.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind<'a> {
    /// A table with fixed keys (a `[section]`).
    Table(&'a Map<String, Value>),
    /// A table of tables by name (`[hardware.nics.<name>]`).
    Named(&'a Value),
    /// A list (of the item schema), with an example of a whole list.
    List(&'a Value, Option<&'a Value>),
    /// A string; `format` is `size` or `duration` when it has one.
    Str {
        format: Option<&'a str>,
        example: Option<&'a str>,
    },
    /// A whole number with its largest value.
    Int(u64),
    /// `true` or `false`.
    Bool,
    /// Anything (not checked here).
    Any,
}

impl Schema {
    pub(crate) fn new() -> Self {
        Schema {
            root: crate::schema(),
        }
    }

    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        let mut v = v;
        for _ in 0..8 {
            if let Some(r) = v.get("$ref").and_then(Value::as_str) {
                match r
                    .strip_prefix("#/$defs/")
                    .and_then(|n| self.root.get("$defs")?.get(n))
                {
                    Some(d) => v = d,
                    None => return v,
                }
            } else if let Some(Value::Array(items)) = v.get("anyOf").or_else(|| v.get("oneOf")) {
                match items
                    .iter()
                    .find(|i| i.get("type").and_then(Value::as_str) != Some("null"))
                {
                    Some(x) => v = x,
                    None => return v,
                }
            } else {
                return v;
            }
        }
        v
    }

    pub(crate) fn kind<'a>(&'a self, v: &'a Value) -> Kind<'a> {
        let v = self.resolve(v);
        let ty = match v.get("type") {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .find(|s| *s != "null")
                .unwrap_or(""),
            _ => "",
        };
        match ty {
            "object" => match (v.get("properties"), v.get("additionalProperties")) {
                (Some(Value::Object(p)), _) => Kind::Table(p),
                (_, Some(item @ Value::Object(_))) => Kind::Named(item),
                _ => Kind::Any,
            },
            "array" => match v.get("items") {
                Some(item) => Kind::List(item, v.get("examples").and_then(|e| e.get(0))),
                None => Kind::Any,
            },
            "string" => Kind::Str {
                format: v.get("format").and_then(Value::as_str),
                example: v
                    .get("examples")
                    .and_then(|e| e.get(0))
                    .and_then(Value::as_str),
            },
            "integer" => Kind::Int(match v.get("format").and_then(Value::as_str) {
                Some("uint8") => u8::MAX.into(),
                Some("uint16") => u16::MAX.into(),
                Some("uint32") => u32::MAX.into(),
                _ => u64::MAX,
            }),
            "boolean" => Kind::Bool,
            _ => Kind::Any,
        }
    }

    /// The kind of the whole profile.
    fn top(&self) -> Kind<'_> {
        self.kind(&self.root)
    }

    /// Every table of the schema with its path (`<name>` for a table of a
    /// table of tables, index 0 for an entry of a list of tables).
    fn tables(&self) -> Vec<(Vec<Seg>, &Map<String, Value>)> {
        let mut out = Vec::new();
        let mut todo = vec![(Vec::new(), self.top())];
        while let Some((path, kind)) = todo.pop() {
            if path.len() > 16 {
                continue;
            }
            match kind {
                Kind::Table(props) => {
                    for (k, v) in props {
                        let mut p = path.clone();
                        p.push(Seg::Key(k.clone()));
                        todo.push((p, self.kind(v)));
                    }
                    out.push((path, props));
                }
                Kind::Named(item) => {
                    let mut p = path.clone();
                    p.push(Seg::Key(NAME.into()));
                    todo.push((p, self.kind(item)));
                }
                Kind::List(item, _) => {
                    let mut p = path.clone();
                    p.push(Seg::Index(0));
                    todo.push((p, self.kind(item)));
                }
                _ => {}
            }
        }
        out.sort_by_key(|(p, _)| p.len());
        out
    }

    /// The table all of `keys` belong to, preferring one under `here`.
    pub(crate) fn home_of(&self, keys: &[&str], here: &[Seg]) -> Option<Home> {
        let fits: Vec<Vec<Seg>> = self
            .tables()
            .into_iter()
            .filter(|(_, props)| keys.iter().all(|k| props.contains_key(*k)))
            .map(|(p, _)| p)
            .collect();
        let under = |p: &Vec<Seg>| {
            p.len() > here.len()
                && p.iter().zip(here).all(|(a, b)| match (a, b) {
                    (Seg::Key(a), Seg::Key(b)) => a == NAME || a == b,
                    (Seg::Index(_), Seg::Index(_)) => true,
                    _ => false,
                })
        };
        let best = fits.iter().find(|p| under(p)).or_else(|| fits.first())?;
        let below = under(best).then(|| {
            let mut b = here.to_vec();
            if let Some(next) = best.get(here.len()) {
                b.push(next.clone());
            }
            field_of(&b)
        });
        Some(Home {
            header: header_of(best),
            below,
        })
    }

    /// The kind of the field at `path` (map keys and list indices), if the
    /// schema has it.
    pub(crate) fn at(&self, path: &[Seg]) -> Option<Kind<'_>> {
        let mut k = self.top();
        for seg in path {
            k = match (k, seg) {
                (Kind::Table(p), Seg::Key(key)) => self.kind(p.get(key.as_str())?),
                (Kind::Named(item), Seg::Key(_)) => self.kind(item),
                (Kind::List(item, _), Seg::Index(_)) => self.kind(item),
                _ => return None,
            };
        }
        Some(k)
    }
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A table key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// `a.b[0].c`
pub(crate) fn field_of(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(&key_text(k));
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    if s.is_empty() {
        "(profile)".into()
    } else {
        s
    }
}

/// The key standing for any name in a table of named tables.
const NAME: &str = "<name>";

/// A key as written in a header: bare when it can be, quoted otherwise.
fn key_text(k: &str) -> String {
    if k == NAME {
        return k.to_string();
    }
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        format!("{k:?}")
    }
}

/// The section header naming the table at `path`: `[a.b]`, or `[[a.b]]`
/// when the last step is a list entry; list indices are dropped.
pub(crate) fn header_of(path: &[Seg]) -> String {
    let keys: Vec<String> = path
        .iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(key_text(k)),
            Seg::Index(_) => None,
        })
        .collect();
    if matches!(path.last(), Some(Seg::Index(_))) {
        format!("[[{}]]", keys.join("."))
    } else {
        format!("[{}]", keys.join("."))
    }
}

/// What a field of `kind` at `path` should hold, in words.
pub(crate) fn expected(schema: &Schema, kind: Kind<'_>, path: &[Seg]) -> String {
    let keys = || header_of(path).trim_matches(['[', ']']).to_string();
    match kind {
        Kind::Table(_) => format!("a table (a {} section)", header_of(path)),
        Kind::Named(_) => format!(
            "a table of named tables (a [{}.<name>] section for each)",
            keys()
        ),
        Kind::List(item, example) => match schema.kind(item) {
            Kind::Table(_) => format!("a list of tables (a [[{}]] section for each)", keys()),
            Kind::Str { .. } => match example.and_then(Value::as_array) {
                Some(e) => {
                    let items: Vec<String> = e
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|s| format!("{s:?}"))
                        .collect();
                    format!("a list of strings such as [{}]", items.join(", "))
                }
                None => "a list of strings (in square brackets)".into(),
            },
            Kind::Int(_) => "a list of whole numbers".into(),
            Kind::Bool => "a list of true/false values".into(),
            _ => "a list".into(),
        },
        Kind::Str { format, example } => {
            let noun = match format {
                Some("size") => "a size",
                Some("duration") => "a duration",
                _ => "a string",
            };
            match example {
                Some(e) => format!("{noun} such as {e:?}"),
                None => format!("{noun} (in quotes)"),
            }
        }
        Kind::Int(max) if max == u64::MAX => "a whole number (0 or more)".into(),
        Kind::Int(max) => format!("a whole number from 0 to {max}"),
        Kind::Bool => "true or false".into(),
        Kind::Any => "a value".into(),
    }
}

/// What a field of `kind` holds, in two or three words (`a list of tables`).
fn brief(schema: &Schema, kind: Kind<'_>) -> String {
    match kind {
        Kind::Table(_) => "a table".into(),
        Kind::Named(_) => "a table of named tables".into(),
        Kind::List(item, _) => match schema.kind(item) {
            Kind::Table(_) => "a list of tables".into(),
            Kind::Str { .. } => "a list of strings".into(),
            Kind::Int(_) => "a list of whole numbers".into(),
            Kind::Bool => "a list of true/false values".into(),
            _ => "a list".into(),
        },
        Kind::Str { format, .. } => match format {
            Some("size") => "a size".into(),
            Some("duration") => "a duration".into(),
            _ => "a string".into(),
        },
        Kind::Int(max) if max == u64::MAX => "a whole number".into(),
        Kind::Int(max) => format!("a whole number from 0 to {max}"),
        Kind::Bool => "true or false".into(),
        Kind::Any => "a value".into(),
    }
}

/// A TOML value, in words (`the string "x"`, `a list`).
fn found(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("the string {:?}", short(s)),
        DeValue::Integer(i) => match i.radix() {
            10 => format!("the number {}", i.as_str()),
            _ => match u128::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => format!("the number {n}"),
                Err(_) => "a number".into(),
            },
        },
        DeValue::Float(f) => format!("the number {}", f.as_str()),
        DeValue::Boolean(b) => format!("`{b}`"),
        DeValue::Datetime(d) => format!("the date {d}"),
        DeValue::Array(_) => "a list".into(),
        DeValue::Table(_) => "a table".into(),
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > 40 {
        let head: String = s.chars().take(37).collect();
        format!("{head}…")
    } else {
        s.to_string()
    }
}

/// The source text a virtual span covers.
fn text_at<'a>(sources: &'a SourceMap, span: &Range<usize>) -> &'a str {
    let Some(f) = sources.file_at(span.start) else {
        return "";
    };
    let start = span.start - f.base;
    let end = span.end.saturating_sub(f.base).clamp(start, f.text.len());
    f.text.get(start..end).unwrap_or("")
}

struct Walk<'s> {
    sources: &'s SourceMap,
    schema: &'s Schema,
    diags: Vec<Diagnostic>,
    /// Fields whose problems follow from one already reported.
    suppressed: Vec<String>,
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Where a set of keys belongs.
pub(crate) struct Home {
    /// The section header (`[[viaduct.ipsec.peers]]`, `[hardware.nics.<name>]`).
    header: String,
    /// When the home is under the table the keys were found in: the field
    /// path of that table's child the home is in (`viaduct.ipsec.peers`).
    below: Option<String>,
}

/// Checks the merged tree; every wrong type and unknown key is reported.
pub(crate) fn check(sources: &SourceMap, table: &Spanned<DeTable<'_>>) -> Vec<Diagnostic> {
    let schema = Schema::new();
    let mut w = Walk {
        sources,
        schema: &schema,
        diags: Vec::new(),
        suppressed: Vec::new(),
    };
    if let Kind::Table(props) = schema.top() {
        w.table(table.get_ref(), props, &mut Vec::new());
    }
    let suppressed = w.suppressed;
    w.diags
        .into_iter()
        .filter(|d| {
            !suppressed.iter().any(|s| {
                d.field == *s
                    || d.field
                        .strip_prefix(s.as_str())
                        .is_some_and(|rest| rest.starts_with(['.', '[']))
            })
        })
        .collect()
}

impl Walk<'_> {
    fn table(&mut self, t: &DeTable<'_>, props: &Map<String, Value>, path: &mut Vec<Seg>) {
        let table = field_of(path);
        let mut unknown: Vec<(String, Range<usize>)> = Vec::new();
        for (k, v) in t.iter() {
            let key: &str = k.get_ref();
            path.push(Seg::Key(key.to_string()));
            match props.get(key) {
                Some(p) => {
                    let kind = self.schema.kind(p);
                    self.value(v, kind, path);
                }
                None if UNDOCUMENTED_KEYS.contains(&(table.as_str(), key)) => {}
                None => unknown.push((key.to_string(), k.span())),
            }
            path.pop();
        }
        if unknown.is_empty() {
            return;
        }
        // In source order; several unknown keys in one table are one
        // mistake more often than not (a section header left out above
        // them), so they are reported together.
        unknown.sort_by_key(|(_, span)| span.start);
        let keys: Vec<&str> = unknown.iter().map(|(k, _)| k.as_str()).collect();
        let (first, span) = &unknown[0];
        let mut field = path.clone();
        field.push(Seg::Key(first.clone()));
        let msg = match keys.as_slice() {
            [one] => unknown_key(one, path, props.keys().map(String::as_str), self.schema),
            _ => {
                let home = self.schema.home_of(&keys, path);
                let named: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
                let place = if path.is_empty() {
                    "at the top level".to_string()
                } else {
                    format!("in {}", header_of(path))
                };
                match home {
                    Some(h) => {
                        // What is under the missing header is not reported
                        // on its own: it follows from the same mistake.
                        if let Some(below) = h.below {
                            self.suppressed.push(below);
                        }
                        format!(
                            "unknown keys {} {place}; they belong in {}: is its section header missing above them?",
                            and_list(&named),
                            h.header
                        )
                    }
                    None => format!(
                        "unknown keys {} {place}; remove them or fix their spelling (known keys: {})",
                        and_list(&named),
                        props.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
                    ),
                }
            }
        };
        self.diags.push(Diagnostic::spanned(
            self.sources,
            span,
            field_of(&field),
            msg,
        ));
    }

    fn value(&mut self, v: &Spanned<DeValue<'_>>, kind: Kind<'_>, path: &mut Vec<Seg>) {
        let ok = match (kind, v.get_ref()) {
            (Kind::Any, _) => true,
            (Kind::Table(props), DeValue::Table(t)) => {
                self.table(t, props, path);
                true
            }
            (Kind::Named(item), DeValue::Table(t)) => {
                let kind = self.schema.kind(item);
                for (k, x) in t.iter() {
                    path.push(Seg::Key(k.get_ref().to_string()));
                    self.value(x, kind, path);
                    path.pop();
                }
                true
            }
            (Kind::List(item, _), DeValue::Array(a)) => {
                let kind = self.schema.kind(item);
                for (i, x) in a.iter().enumerate() {
                    path.push(Seg::Index(i));
                    self.value(x, kind, path);
                    path.pop();
                }
                true
            }
            (Kind::Str { .. }, DeValue::String(_)) => true,
            (Kind::Bool, DeValue::Boolean(_)) => true,
            (Kind::Int(max), DeValue::Integer(i)) => {
                u128::from_str_radix(i.as_str(), i.radix()).is_ok_and(|n| n <= u128::from(max))
            }
            _ => false,
        };
        if !ok {
            let msg = self.mismatch(v, kind, path);
            self.diags.push(Diagnostic::spanned(
                self.sources,
                &v.span(),
                field_of(path),
                msg,
            ));
        }
    }

    /// `expected …, found …` and, when the mistake is a recognisable one,
    /// how to write it instead.
    fn mismatch(&self, v: &Spanned<DeValue<'_>>, kind: Kind<'_>, path: &[Seg]) -> String {
        let src = text_at(self.sources, &v.span()).trim_start();
        let header = header_of(path);
        let hint = match (kind, v.get_ref()) {
            (Kind::List(item, _), DeValue::Table(_))
                if matches!(self.schema.kind(item), Kind::Table(_)) =>
            {
                let keys = header.trim_matches(['[', ']']);
                if src.starts_with('{') {
                    Some(format!("put the table in a list, [{{ … }}], or write a [[{keys}]] section for each entry"))
                } else {
                    Some(format!("write the section header with double brackets, [[{keys}]], once for each entry"))
                }
            }
            (Kind::Table(_) | Kind::Named(_), DeValue::Array(_)) if src.starts_with("[[") => {
                let keys = header.trim_matches(['[', ']']);
                Some(format!(
                    "write the section header with single brackets, [{keys}]: there is only one"
                ))
            }
            (Kind::List(item, _), DeValue::String(s))
                if matches!(self.schema.kind(item), Kind::Str { .. }) =>
            {
                Some(format!("put it in square brackets: [{s:?}]"))
            }
            (
                Kind::Str { format: None, .. },
                DeValue::Integer(_)
                | DeValue::Float(_)
                | DeValue::Boolean(_)
                | DeValue::Datetime(_),
            ) if !src.is_empty() && src.len() <= 64 && !src.contains(['"', '\'', '\n']) => {
                Some(format!("put the value in quotes: \"{}\"", src.trim_end()))
            }
            (Kind::Int(max), DeValue::String(s))
                if s.trim().parse::<u64>().is_ok_and(|n| n <= max) =>
            {
                Some(format!("remove the quotes: {}", s.trim()))
            }
            (Kind::Bool, DeValue::String(s)) if matches!(s.trim(), "true" | "false") => {
                Some(format!("remove the quotes: {}", s.trim()))
            }
            _ => None,
        };
        // The hint shows how to write it: the expectation is then said
        // without its own example, so that nothing is said twice.
        match hint {
            Some(h) => format!(
                "expected {}, found {}; {h}",
                brief(self.schema, kind),
                found(v.get_ref())
            ),
            None => format!(
                "expected {}, found {}",
                expected(self.schema, kind, path),
                found(v.get_ref())
            ),
        }
    }
}

/// `unknown key …` with the closest known key, the table it belongs in, or
/// the known keys.
fn unknown_key<'k>(
    key: &str,
    table: &[Seg],
    known: impl Iterator<Item = &'k str>,
    schema: &Schema,
) -> String {
    let known: Vec<&str> = known.collect();
    let place = if table.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in {}", header_of(table))
    };
    let mut best: Option<(usize, &str)> = None;
    let mut tie = false;
    for k in &known {
        let d = edit_distance(&key.to_ascii_lowercase(), k);
        match best {
            Some((bd, _)) if d > bd => {}
            Some((bd, _)) if d == bd => tie = true,
            _ => {
                best = Some((d, k));
                tie = false;
            }
        }
    }
    match best {
        Some((d, k)) if !tie && d <= (key.chars().count() / 3).max(1) => {
            format!("unknown key `{key}` {place}; did you mean `{k}`?")
        }
        _ if known.is_empty() => format!("unknown key `{key}` {place}; remove it"),
        _ if schema
            .tables()
            .iter()
            .filter(|(_, p)| p.contains_key(key))
            .count()
            == 1 =>
        {
            let home = schema
                .tables()
                .into_iter()
                .find(|(_, p)| p.contains_key(key))
                .map(|(p, _)| header_of(&p))
                .unwrap_or_default();
            format!("unknown key `{key}` {place}; `{key}` belongs in {home}")
        }
        _ => format!(
            "unknown key `{key}` {place}; remove it or fix its spelling (known keys: {})",
            known.join(", ")
        ),
    }
}

/// Edit distance in characters, a swap of two neighbours counting as one
/// edit (optimal string alignment; profiles' keys are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().take(64).collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// Serde's message for a deserialisation error, in the words of this module.
///
/// The shape check runs first, so serde rarely reports anything; when it
/// does, its grammar (`invalid type: X, expected Y`, `invalid value: …`,
/// `invalid length N, expected …`, `unknown field …`, `missing field …`)
/// is rewritten with the schema's description of the field at `path`, and
/// no Rust type name (`u64`, `struct RawImage`, `sequence`, `map`) is left.
pub(crate) fn serde_message(msg: &str, path: &[Seg]) -> String {
    let msg = msg.trim();
    let schema = Schema::new();
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        let key = rest
            .split('`')
            .nth(1)
            .unwrap_or_else(|| rest.split(',').next().unwrap_or(rest));
        let table = path.get(..path.len().saturating_sub(1)).unwrap_or(&[]);
        let known: Vec<String> = match schema.at(table) {
            Some(Kind::Table(p)) => p.keys().cloned().collect(),
            _ => Vec::new(),
        };
        return unknown_key(key, table, known.iter().map(String::as_str), &schema);
    }
    if let Some(rest) = msg.strip_prefix("missing field ") {
        return format!("missing {rest}");
    }
    let unexpected = if let Some(rest) = msg.strip_prefix("invalid type: ") {
        rest.split_once(", expected ").map(|(u, _)| u.to_string())
    } else if let Some(rest) = msg.strip_prefix("invalid value: ") {
        rest.split_once(", expected ").map(|(u, _)| u.to_string())
    } else if msg.starts_with("invalid length ") {
        Some("sequence".into())
    } else {
        None
    };
    match (unexpected, schema.at(path)) {
        (Some(u), Some(kind)) => format!(
            "expected {}, found {}",
            expected(&schema, kind, path),
            serde_unexpected(&u)
        ),
        _ => plain_words(msg),
    }
}

/// Serde's `Unexpected` display, in words.
fn serde_unexpected(u: &str) -> String {
    let u = u.trim();
    let value = u.split('`').nth(1);
    if let Some(s) = u.strip_prefix("string ") {
        format!("the string {s}")
    } else if u.starts_with("integer") || u.starts_with("floating point") {
        value.map_or("a number".into(), |n| format!("the number {n}"))
    } else if u.starts_with("boolean") {
        value.map_or("true or false".into(), |b| format!("`{b}`"))
    } else if u.starts_with("sequence") {
        "a list".into()
    } else if u.starts_with("map") {
        "a table".into()
    } else {
        plain_words(u)
    }
}

/// Replaces the Rust and serde names that may remain in a message.
fn plain_words(msg: &str) -> String {
    let mut out = String::new();
    for (i, word) in msg.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let core = word.trim_end_matches([',', ';', '.']);
        let tail = &word[core.len()..];
        let repl = match core {
            "u8" | "u16" | "u32" | "u64" | "i64" | "usize" => Some("a whole number"),
            "sequence" => Some("list"),
            "map" => Some("table"),
            "f64" | "f32" => Some("a number"),
            "bool" => Some("true or false"),
            _ if core.starts_with("Raw") => Some("table"),
            _ => None,
        };
        match repl {
            Some(r) => {
                out.push_str(r);
                out.push_str(tail);
            }
            None => out.push_str(word),
        }
    }
    out.replace("struct table", "a table").replace("a a ", "a ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<Seg> {
        s.split('.')
            .map(|k| match k.parse::<usize>() {
                Ok(i) => Seg::Index(i),
                Err(_) => Seg::Key(k.to_string()),
            })
            .collect()
    }

    #[test]
    fn serde_messages_lose_their_rust_names() {
        let cases = [
            ("invalid type: string \"x\", expected u64", "appliance.security_version", "expected a whole number (0 or more), found the string \"x\""),
            ("invalid value: integer `-1`, expected u64", "appliance.security_version", "expected a whole number (0 or more), found the number -1"),
            ("invalid value: integer `99999999999`, expected u32", "viaduct.ipsec.peers.0.tunnels.0.manual.spi_in", "expected a whole number from 0 to 4294967295, found the number 99999999999"),
            ("invalid type: map, expected a sequence", "personalities.red.services", "expected a list of tables (a [[personalities.red.services]] section for each), found a table"),
            ("invalid type: string \"x\", expected struct RawImage", "image", "expected a table (a [image] section), found the string \"x\""),
            ("invalid type: integer `5`, expected a map", "personalities", "expected a table of named tables (a [personalities.<name>] section for each), found the number 5"),
            ("invalid length 2, expected struct RawImage with 4 elements", "image", "expected a table (a [image] section), found a list"),
            ("invalid type: integer `5`, expected a string", "image.size", "expected a size such as \"512MiB\", found the number 5"),
            ("invalid type: boolean `true`, expected a sequence", "kernel.drivers", "expected a list of strings"),
            ("invalid type: floating point `1.5`, expected a boolean", "appliance.lab", "expected true or false, found the number 1.5"),
            ("unknown field `nmae`, expected one of `name`, `version`", "appliance.nmae", "unknown key `nmae` in [appliance]; did you mean `name`?"),
        ];
        for (msg, path, want) in cases {
            let got = serde_message(msg, &p(path));
            assert!(got.starts_with(want), "{msg}\n got {got}\nwant {want}");
        }
        // Whatever is left unrecognised still loses the Rust names.
        let got = serde_message("something about u64 and struct RawPeer", &[]);
        assert_eq!(got, "something about a whole number and a table");
    }

    #[test]
    fn every_field_of_the_schema_has_words() {
        // Walk the whole schema: every kind yields a description without
        // Rust names.
        let s = Schema::new();
        let mut todo = vec![(Vec::new(), s.top())];
        let mut n = 0;
        while let Some((path, kind)) = todo.pop() {
            let words = expected(&s, kind, &path);
            for bad in [
                "Raw", "u64", "u32", "sequence", " map", "struct", "Option", "Sp<",
            ] {
                assert!(!words.contains(bad), "{}: {words}", field_of(&path));
            }
            n += 1;
            match kind {
                Kind::Table(props) => {
                    for (k, v) in props {
                        let mut p = path.clone();
                        p.push(Seg::Key(k.clone()));
                        todo.push((p, s.kind(v)));
                    }
                }
                Kind::Named(item) => {
                    let mut p = path.clone();
                    p.push(Seg::Key("x".into()));
                    todo.push((p, s.kind(item)));
                }
                Kind::List(item, _) => {
                    let mut p = path.clone();
                    p.push(Seg::Index(0));
                    todo.push((p, s.kind(item)));
                }
                _ => {}
            }
        }
        assert!(n > 80, "{n} fields");
    }

    #[test]
    fn close_keys_are_suggested() {
        let known = ["name", "version", "security_version"];
        let s = Schema::new();
        let m = unknown_key("nmae", &p("appliance"), known.iter().copied(), &s);
        assert!(m.ends_with("did you mean `name`?"), "{m}");
        let m = unknown_key("drivers", &p("appliance"), known.iter().copied(), &s);
        assert!(m.ends_with("`drivers` belongs in [kernel]"), "{m}");
        let m = unknown_key("colour", &p("appliance"), known.iter().copied(), &s);
        assert!(
            m.contains("known keys: name, version, security_version"),
            "{m}"
        );
        assert_eq!(edit_distance("abc", "abd"), 1);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("nmae", "name"), 1);
    }
}
