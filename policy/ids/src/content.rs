//! `content` and its modifiers.
//!
//! A content is a quoted string, optionally negated (`content:!"…"`), whose
//! `|41 42|` blocks are hex bytes (pairs of hex digits, blanks allowed
//! between pairs) and whose `\"`, `\;`, `\\` and `\:` are escapes. Each
//! modifier applies to the most recent content; the refusals follow
//! Suricata's signature checks:
//!
//! - a modifier with no content before it, or given twice on one content;
//! - `depth`/`offset` together with `distance`/`within` on one content;
//! - `depth` or `within` smaller than the content (it could never match);
//! - more than one `fast_pattern` in a rule, the `fast_pattern:offset,length`
//!   form, and `fast_pattern` on a negated content (it cannot prefilter).
//!
//! `distance`/`within` on the first content are accepted, as Suricata does:
//! they are then relative to the start of the buffer.

use crate::expr::shorten;
use crate::text::quoted_inner;
use crate::Refuse;

/// One `content` match and its modifiers.
///
/// Positions follow Suricata: `offset` is where the search starts in the
/// buffer, `depth` how many bytes from `offset` (or from the start) the match
/// must lie within; `distance` is where the search starts relative to the
/// end of the previous content's match (the buffer start for the first
/// content) and may be negative, `within` how many bytes from there the match
/// must lie within. A content has `offset`/`depth` or `distance`/`within`,
/// never both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    /// The bytes to find (never empty).
    pub bytes: Vec<u8>,
    /// `content:!"…"`: the rule matches only where these bytes are absent.
    pub negated: bool,
    /// `nocase`: ASCII letters match either case.
    pub nocase: bool,
    /// `offset:N`.
    pub offset: Option<u32>,
    /// `depth:N` (at least the content's length).
    pub depth: Option<u32>,
    /// `distance:N` (may be negative).
    pub distance: Option<i32>,
    /// `within:N` (at least the content's length).
    pub within: Option<u32>,
    /// `fast_pattern` (or `fast_pattern:only`): the rule's prefilter pattern.
    pub fast_pattern: bool,
}

impl Content {
    /// Whether this content is placed relative to the previous match
    /// (`distance` or `within`).
    pub fn is_relative(&self) -> bool {
        self.distance.is_some() || self.within.is_some()
    }
}

/// A content being built: the public part and what the checks need.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) content: Content,
    /// `fast_pattern:only` was given.
    pub(crate) only: bool,
}

/// Parses a `content` value.
pub(crate) fn parse_content(value: &str) -> Result<Pending, Refuse> {
    let err = |reason: String| Refuse::kw("content", reason);
    let v = value.trim();
    let (negated, v) = match v.strip_prefix('!') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, v),
    };
    let inner = quoted_inner(v).ok_or_else(|| {
        err(format!(
            "`content` takes a quoted string, not `{}`",
            shorten(value.trim())
        ))
    })?;
    let bytes = unescape_content(inner).map_err(err)?;
    if bytes.is_empty() {
        return Err(err("empty content".to_string()));
    }
    Ok(Pending {
        content: Content {
            bytes,
            negated,
            nocase: false,
            offset: None,
            depth: None,
            distance: None,
            within: None,
            fast_pattern: false,
        },
        only: false,
    })
}

/// The bytes of a content's quoted text (quotes removed).
fn unescape_content(inner: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('"' | ';' | '\\' | ':')) => out.push(e as u8),
                Some(e) => return Err(format!("unknown escape `\\{e}` in content")),
                None => return Err("content ends in a lone `\\`".to_string()),
            },
            '"' => return Err("unescaped `\"` inside content".to_string()),
            '|' => hex_block(&mut chars, &mut out)?,
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    Ok(out)
}

/// Reads hex pairs up to the closing `|`.
fn hex_block(chars: &mut std::str::Chars<'_>, out: &mut Vec<u8>) -> Result<(), String> {
    let mut high: Option<u8> = None;
    let mut count = 0usize;
    loop {
        match chars.next() {
            None => return Err("unterminated hex block (missing `|`)".to_string()),
            Some('|') => {
                if high.is_some() {
                    return Err("odd number of hex digits in a `|…|` block".to_string());
                }
                if count == 0 {
                    return Err("empty hex block `||`".to_string());
                }
                return Ok(());
            }
            Some(' ') => {
                if high.is_some() {
                    return Err("hex digits come in pairs: a blank splits one".to_string());
                }
            }
            Some(c) => {
                let Some(d) = c.to_digit(16) else {
                    return Err(format!("`{c}` is not a hex digit (in a `|…|` block)"));
                };
                let d = d as u8;
                match high.take() {
                    Some(h) => {
                        out.push(h << 4 | d);
                        count += 1;
                    }
                    None => high = Some(d),
                }
            }
        }
    }
}

/// A content modifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Modifier {
    Nocase,
    Offset(u32),
    Depth(u32),
    Distance(i32),
    Within(u32),
    /// `fast_pattern`; `true` for `fast_pattern:only`.
    FastPattern(bool),
}

impl Modifier {
    pub(crate) fn keyword(self) -> &'static str {
        match self {
            Modifier::Nocase => "nocase",
            Modifier::Offset(_) => "offset",
            Modifier::Depth(_) => "depth",
            Modifier::Distance(_) => "distance",
            Modifier::Within(_) => "within",
            Modifier::FastPattern(_) => "fast_pattern",
        }
    }
}

/// Applies `m` to the most recent content of `contents`.
pub(crate) fn apply(contents: &mut [Pending], m: Modifier) -> Result<(), Refuse> {
    let kw = m.keyword();
    let err = |reason: String| Refuse::kw(kw, reason);
    let Some(p) = contents.last_mut() else {
        return Err(err(format!("`{kw}` needs a `content` before it")));
    };
    let c = &mut p.content;
    let twice = || err(format!("`{kw}` is given twice for one content"));
    let absolute = c.offset.is_some() || c.depth.is_some();
    let relative = c.is_relative();
    let len = c.bytes.len();
    match m {
        Modifier::Nocase => {
            if c.nocase {
                return Err(twice());
            }
            c.nocase = true;
        }
        Modifier::Offset(_) | Modifier::Depth(_) if relative => {
            return Err(err(format!(
                "`{kw}` cannot be combined with `distance`/`within` on one content"
            )));
        }
        Modifier::Distance(_) | Modifier::Within(_) if absolute => {
            return Err(err(format!(
                "`{kw}` cannot be combined with `depth`/`offset` on one content"
            )));
        }
        Modifier::Offset(n) => {
            if c.offset.replace(n).is_some() {
                return Err(twice());
            }
        }
        Modifier::Depth(n) => {
            if c.depth.is_some() {
                return Err(twice());
            }
            if (n as usize) < len {
                return Err(err(format!(
                    "`depth:{n}` is smaller than the content ({len} bytes): it could never match"
                )));
            }
            c.depth = Some(n);
        }
        Modifier::Distance(n) => {
            if c.distance.replace(n).is_some() {
                return Err(twice());
            }
        }
        Modifier::Within(n) => {
            if c.within.is_some() {
                return Err(twice());
            }
            if (n as usize) < len {
                return Err(err(format!(
                    "`within:{n}` is smaller than the content ({len} bytes): it could never match"
                )));
            }
            c.within = Some(n);
        }
        Modifier::FastPattern(only) => {
            if c.negated {
                return Err(err(
                    "`fast_pattern` on a negated content: it cannot prefilter".to_string(),
                ));
            }
            c.fast_pattern = true;
            p.only = only;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(v: &str) -> Vec<u8> {
        parse_content(v).unwrap().content.bytes
    }

    fn err(v: &str) -> String {
        parse_content(v).unwrap_err().reason
    }

    #[test]
    fn text_hex_and_escapes() {
        assert_eq!(bytes(r#""GET""#), b"GET");
        assert_eq!(bytes(r#""ETag|3a 20 22|""#), b"ETag: \"");
        assert_eq!(bytes(r#""|41 42 0a|x|4142|""#), b"AB\nxAB");
        assert_eq!(bytes(r#""a\"b\;c\\d\:e""#), b"a\"b;c\\d:e");
        assert_eq!(bytes(r#"  "é" "#), "é".as_bytes());
        let p = parse_content(r#"! "abc""#).unwrap();
        assert!(p.content.negated);
        assert_eq!(p.content.bytes, b"abc");
    }

    #[test]
    fn malformed_contents() {
        assert_eq!(err(r#""""#), "empty content");
        assert_eq!(err(r#""|4|""#), "odd number of hex digits in a `|…|` block");
        assert_eq!(
            err(r#""|4 1|""#),
            "hex digits come in pairs: a blank splits one"
        );
        assert_eq!(
            err(r#""|zz|""#),
            "`z` is not a hex digit (in a `|…|` block)"
        );
        assert_eq!(err(r#""|41""#), "unterminated hex block (missing `|`)");
        assert_eq!(err(r#""||""#), "empty hex block `||`");
        assert_eq!(err(r#""a\nb""#), "unknown escape `\\n` in content");
        assert_eq!(err("abc"), "`content` takes a quoted string, not `abc`");
        assert_eq!(
            err(r#""abc"def"#),
            "`content` takes a quoted string, not `\"abc\"def`"
        );
    }
}
