//! Text layout: rule lines and the option list.
//!
//! One rule per line; a line ending in `\` (trailing blanks aside) continues
//! on the next one, and the rule reports its first line (counted from 1).
//! The continuation is joined first, then the rule is skipped if it is
//! blank or starts with `#` (a commented-out rule is never parsed).
//!
//! Options are separated by `;` outside double quotes; a backslash escapes
//! the next character everywhere. An unescaped `;` inside quotes refuses the
//! rule (Suricata ends the option there; we say so instead), and the last
//! option must be terminated by `;` as Suricata requires.

use crate::expr::shorten;
use crate::Refuse;

/// One rule's text and the line it starts on.
#[derive(Debug)]
pub(crate) struct Logical {
    pub(crate) line: usize,
    pub(crate) text: String,
}

/// The rules of `text`, comments and blank lines removed.
pub(crate) fn logical_rules(text: &str) -> Vec<Logical> {
    let mut out = Vec::new();
    let mut current: Option<Logical> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim_end();
        let (piece, continued) = match trimmed.strip_suffix('\\') {
            Some(p) => (p, true),
            None => (line, false),
        };
        match current.as_mut() {
            Some(l) => l.text.push_str(piece),
            None => {
                current = Some(Logical {
                    line: i + 1,
                    text: piece.to_string(),
                })
            }
        }
        if !continued {
            if let Some(l) = current.take() {
                push_rule(&mut out, l);
            }
        }
    }
    if let Some(l) = current.take() {
        push_rule(&mut out, l);
    }
    out
}

fn push_rule(out: &mut Vec<Logical>, l: Logical) {
    let t = l.text.trim_start();
    if !t.is_empty() && !t.starts_with('#') {
        out.push(l);
    }
}

/// One `keyword[:value]` option, as written (the keyword trimmed, the value
/// untrimmed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawOption<'a> {
    pub(crate) name: &'a str,
    pub(crate) value: Option<&'a str>,
}

/// Splits the text between the parentheses into options. Returns the
/// options read before the first error, and the error.
pub(crate) fn split_options(body: &str) -> (Vec<RawOption<'_>>, Option<Refuse>) {
    let mut opts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ';' if quoted => {
                let piece = &body[start..i];
                return (
                    opts,
                    Some(Refuse::new(
                        option_keyword(piece),
                        format!(
                            "unescaped `;` inside a quoted value in `{}` (write `\\;`)",
                            shorten(piece.trim())
                        ),
                    )),
                );
            }
            ';' => {
                match option(&body[start..i]) {
                    Ok(o) => opts.push(o),
                    Err(e) => return (opts, Some(e)),
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    let rest = &body[start..];
    if quoted {
        let reason = format!("unterminated quoted string in `{}`", shorten(rest.trim()));
        return (opts, Some(Refuse::new(option_keyword(rest), reason)));
    }
    if !rest.trim().is_empty() {
        let reason = format!("option `{}` is not terminated by `;`", shorten(rest.trim()));
        return (opts, Some(Refuse::new(option_keyword(rest), reason)));
    }
    (opts, None)
}

/// The keyword of an option's text, if it looks like one.
fn option_keyword(piece: &str) -> Option<String> {
    let name = piece.split(':').next().unwrap_or("").trim();
    valid_name(name).then(|| name.to_ascii_lowercase())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn option(piece: &str) -> Result<RawOption<'_>, Refuse> {
    let (name, value) = match piece.split_once(':') {
        Some((n, v)) => (n.trim(), Some(v)),
        None => (piece.trim(), None),
    };
    if name.is_empty() && value.is_none() {
        return Err(Refuse::new(None, "empty option (`;;`)".to_string()));
    }
    if !valid_name(name) {
        return Err(Refuse::new(
            None,
            format!("malformed option `{}`", shorten(piece.trim())),
        ));
    }
    Ok(RawOption { name, value })
}

/// The text between the double quotes of `value` (blanks around allowed),
/// escapes not yet resolved; `None` if `value` is not one quoted string.
pub(crate) fn quoted_inner(value: &str) -> Option<&str> {
    let v = value.trim();
    let inner = v.strip_prefix('"')?;
    // The closing quote is the first unescaped one; it must end the value.
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => return (i + 1 == inner.len()).then(|| &inner[..i]),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<(usize, String)> {
        logical_rules(text)
            .into_iter()
            .map(|l| (l.line, l.text))
            .collect()
    }

    #[test]
    fn comments_blanks_and_continuations() {
        let text = "# a comment\n\nalert a\r\n  #alert b\nalert c \\\n  more \\  \n end\n\\\n";
        assert_eq!(
            lines(text),
            vec![(3, "alert a".into()), (5, "alert c   more  end".into())]
        );
        // A commented-out rule with a continuation stays commented out.
        assert_eq!(
            lines("#alert x \\\nstill comment\nalert y"),
            vec![(3, "alert y".into())]
        );
        // A continuation at the end of the text ends the rule.
        assert_eq!(lines("alert z \\"), vec![(1, "alert z ".into())]);
    }

    #[test]
    fn options_split_on_unquoted_semicolons() {
        let (o, e) = split_options(r#"msg:"a\;b"; content:"x\"y"; nocase; sid : 5 ;"#);
        assert!(e.is_none());
        let names: Vec<_> = o.iter().map(|o| o.name).collect();
        assert_eq!(names, ["msg", "content", "nocase", "sid"]);
        assert_eq!(o[0].value, Some(r#""a\;b""#));
        assert_eq!(o[2].value, None);
        assert_eq!(o[3].value, Some(" 5 "));
    }

    #[test]
    fn option_errors() {
        let err = |s| split_options(s).1.unwrap();
        let e = err(r#"msg:"a;b"; sid:1;"#);
        assert_eq!(
            e.reason,
            "unescaped `;` inside a quoted value in `msg:\"a` (write `\\;`)"
        );
        assert_eq!(e.keyword.as_deref(), Some("msg"));
        let e = err("msg:\"x\"; sid:1");
        assert_eq!(e.reason, "option `sid:1` is not terminated by `;`");
        let e = err("sid:1;;");
        assert_eq!(e.reason, "empty option (`;;`)");
        let e = err("content:\"abc;");
        assert_eq!(
            e.reason,
            "unescaped `;` inside a quoted value in `content:\"abc` (write `\\;`)"
        );
        let e = err("content:\"abc");
        assert_eq!(e.reason, "unterminated quoted string in `content:\"abc`");
        let e = err("fast pattern;");
        assert_eq!(e.reason, "malformed option `fast pattern`");
    }

    #[test]
    fn quoted_values() {
        assert_eq!(quoted_inner(r#" "abc" "#), Some("abc"));
        assert_eq!(quoted_inner(r#""a\"b""#), Some(r#"a\"b"#));
        assert_eq!(quoted_inner(r#""abc"x"#), None);
        assert_eq!(quoted_inner(r#""abc\""#), None);
        assert_eq!(quoted_inner("abc"), None);
    }
}
