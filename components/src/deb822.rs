//! deb822 paragraphs (Packages indices, Release files, `control`).
//!
//! Zero-copy: a [`Paragraph`] borrows field names and values from the input.
//! A value spans its first line and all continuation lines (lines starting
//! with a space or tab), trimmed; callers that need folded text treat the
//! embedded newlines as whitespace. Lines starting with `#` are comments.
//! Field names compare ASCII-case-insensitively. Never panics.

use crate::Error;

/// One paragraph: fields in file order, and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paragraph<'a> {
    /// 1-based line of the first field.
    pub line: usize,
    /// `(name, value)` in file order.
    pub fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Paragraph<'a> {
    /// The value of field `name` (case-insensitive), if present.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// Parses `text` into paragraphs. `file` names the source in errors.
pub fn parse<'a>(text: &'a str, file: &str) -> Result<Vec<Paragraph<'a>>, Error> {
    let mut out = Vec::new();
    let mut cur: Option<Paragraph<'a>> = None;
    // (name, value start offset, value end offset) of the field being read.
    let mut open: Option<(&'a str, usize, usize)> = None;
    let mut offset = 0usize;
    let close = |cur: &mut Option<Paragraph<'a>>, open: &mut Option<(&'a str, usize, usize)>| {
        if let (Some(p), Some((name, s, e))) = (cur.as_mut(), open.take()) {
            p.fields.push((name, text.get(s..e).unwrap_or("").trim()));
        }
    };
    for (idx, raw) in text.split_inclusive('\n').enumerate() {
        let lineno = idx + 1;
        let start = offset;
        offset += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            close(&mut cur, &mut open);
            if let Some(p) = cur.take() {
                out.push(p);
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match open.as_mut() {
                Some((_, _, end)) => *end = start + line.len(),
                None => {
                    return Err(Error::IndexSyntax {
                        file: file.to_owned(),
                        line: lineno,
                        message: "continuation line without a field before it".into(),
                    })
                }
            }
            continue;
        }
        let Some(colon) = line.find(':') else {
            return Err(Error::IndexSyntax {
                file: file.to_owned(),
                line: lineno,
                message: format!("expected `Field: value`, found {:?}", truncate(line)),
            });
        };
        let name = &line[..colon];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::IndexSyntax {
                file: file.to_owned(),
                line: lineno,
                message: format!("invalid field name {:?}", truncate(name)),
            });
        }
        close(&mut cur, &mut open);
        let p = cur.get_or_insert_with(|| Paragraph {
            line: lineno,
            fields: Vec::new(),
        });
        if p.get(name).is_some() {
            return Err(Error::IndexSyntax {
                file: file.to_owned(),
                line: lineno,
                message: format!("field `{name}` appears twice in one paragraph"),
            });
        }
        open = Some((name, start + colon + 1, start + line.len()));
    }
    close(&mut cur, &mut open);
    if let Some(p) = cur.take() {
        out.push(p);
    }
    Ok(out)
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_and_continuations() {
        let t = "Package: a\nVersion: 1\nDescription: x\n more\n .\n\n\nPackage: b\r\ndepends: c,\n d\n";
        let p = parse(t, "t").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].get("package"), Some("a"));
        assert_eq!(p[0].get("Description"), Some("x\n more\n ."));
        assert_eq!(p[1].line, 8);
        assert_eq!(p[1].get("Depends"), Some("c,\n d"));
    }

    #[test]
    fn errors_name_line() {
        let e = parse("Package: a\nbroken\n", "f").unwrap_err().to_string();
        assert!(e.starts_with("f:2:"), "{e}");
        let e = parse(" cont\n", "f").unwrap_err().to_string();
        assert!(e.starts_with("f:1:"), "{e}");
        let e = parse("A: 1\na: 2\n", "f").unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,300}") {
            let _ = parse(&s, "p");
        }
    }
}
