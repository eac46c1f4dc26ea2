//! Diagnostics: every problem found in a profile, with the file, line,
//! column and field it concerns, and the source line for a snippet.
//!
//! A problem that involves two places (a NIC given to both personalities, a
//! name used twice, a conflict between a base profile and the profile that
//! extends it) names the second place in a [`Note`], with its own snippet, so
//! that the printed diagnostic shows both.
//!
//! Snippets are cut to a window of at most [`MAX_SNIPPET_COLUMNS`] columns
//! around the underlined text, with `…` where the line was cut; the caret
//! line accounts for tabs, wide and zero-width characters. Quoted values in
//! messages are shortened the same way. Nothing here panics.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use serde::Serialize;

use crate::source::{Location, SourceMap};

/// Widest snippet printed, in terminal columns (the `…` marks included).
pub const MAX_SNIPPET_COLUMNS: usize = 100;
/// Columns of context kept before the underlined text when a line is cut.
const CONTEXT_BEFORE: usize = 32;
/// Longest `quoted` value kept whole in a message, in characters.
const MAX_QUOTED_CHARS: usize = 64;

/// One problem in a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// File the problem is in.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// Dotted path of the field concerned (`viaduct.ipsec.peers[0].auth`), or
    /// `(file)` when the problem is with the file as a whole.
    pub field: String,
    /// What is wrong and what to do about it.
    pub message: String,
    /// The source line the problem is on, when there is one (cut to a window
    /// around the problem when the line is long).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_line: Option<String>,
    /// Characters of `source_line` to underline (0-based, end exclusive).
    #[serde(skip)]
    pub underline: Range<usize>,
    /// Other places the problem involves (the other side of a conflict, the
    /// first of two duplicates), in the order they should be shown.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
}

/// A second place a [`Diagnostic`] involves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    /// File of that place.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// What that place has to do with the problem (`red is given NIC `lan` here`).
    pub message: String,
    /// The source line, cut like [`Diagnostic::source_line`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_line: Option<String>,
    /// Characters of `source_line` to underline (0-based, end exclusive).
    #[serde(skip)]
    pub underline: Range<usize>,
}

impl Note {
    /// A note at a virtual span of `sources`; `None` when the span is in no file.
    pub fn spanned(
        sources: &SourceMap,
        span: &Range<usize>,
        message: impl Into<String>,
    ) -> Option<Self> {
        let loc = sources.locate(span)?;
        let (source_line, underline) = snippet_of(sources, &loc);
        Some(Note {
            file: loc.path,
            line: loc.line,
            column: loc.column,
            message: shorten_quoted(&message.into()),
            source_line,
            underline,
        })
    }
}

fn snippet_of(sources: &SourceMap, loc: &Location) -> (Option<String>, Range<usize>) {
    let text = sources
        .files()
        .iter()
        .find(|f| f.path == loc.path)
        .map(|f| f.text.clone());
    match text {
        Some(text) if !text.is_empty() => snippet_line(&text, &loc.range),
        _ => (None, 0..0),
    }
}

impl Diagnostic {
    /// A diagnostic at a resolved location.
    pub fn at(
        sources: &SourceMap,
        loc: &Location,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let (source_line, underline) = snippet_of(sources, loc);
        Diagnostic {
            file: loc.path.clone(),
            line: loc.line,
            column: loc.column,
            field: field.into(),
            message: shorten_quoted(&message.into()),
            source_line,
            underline,
            notes: Vec::new(),
        }
    }

    /// A diagnostic at a virtual span of `sources`.
    pub fn spanned(
        sources: &SourceMap,
        span: &Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        match sources.locate(span) {
            Some(loc) => Self::at(sources, &loc, field, message),
            None => Diagnostic {
                file: sources
                    .files()
                    .first()
                    .map(|f| f.path.clone())
                    .unwrap_or_default(),
                line: 1,
                column: 1,
                field: field.into(),
                message: shorten_quoted(&message.into()),
                source_line: None,
                underline: 0..0,
                notes: Vec::new(),
            },
        }
    }

    /// A diagnostic about a whole file that could not be read or parsed.
    pub fn file_level(
        file: PathBuf,
        line: usize,
        column: usize,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file,
            line,
            column,
            field: "(file)".into(),
            message: message.into(),
            source_line: None,
            underline: 0..0,
            notes: Vec::new(),
        }
    }

    /// Adds a note at a virtual span (nothing if the span is in no file, or
    /// if it is the diagnostic's own place).
    pub fn with_note(
        mut self,
        sources: &SourceMap,
        span: &Range<usize>,
        message: impl Into<String>,
    ) -> Self {
        if let Some(n) = Note::spanned(sources, span, message) {
            if (&n.file, n.line, n.column) != (&self.file, self.line, self.column) {
                self.notes.push(n);
            }
        }
        self
    }

    /// Renders the diagnostic the way the CLI prints it: the
    /// `file:line:col: field: message` line, then the source line with the
    /// span underlined; then each note the same way
    /// (`file:line:col: note: message` and its snippet).
    pub fn render(&self) -> String {
        let width = std::iter::once(self.line)
            .chain(self.notes.iter().map(|n| n.line))
            .max()
            .unwrap_or(1)
            .to_string()
            .len();
        let mut out = format!("{self}\n");
        render_snippet(
            &mut out,
            width,
            self.line,
            self.source_line.as_deref(),
            &self.underline,
        );
        for n in &self.notes {
            out.push_str(&format!(
                "{}:{}:{}: note: {}\n",
                n.file.display(),
                n.line,
                n.column,
                n.message
            ));
            render_snippet(
                &mut out,
                width,
                n.line,
                n.source_line.as_deref(),
                &n.underline,
            );
        }
        out
    }
}

fn render_snippet(
    out: &mut String,
    width: usize,
    line: usize,
    src: Option<&str>,
    underline: &Range<usize>,
) {
    let Some(src) = src else { return };
    let pad = " ".repeat(width);
    let before: usize = src.chars().take(underline.start).map(char_width).sum();
    let marked: usize = src
        .chars()
        .skip(underline.start)
        .take(underline.end.saturating_sub(underline.start))
        .map(char_width)
        .sum();
    out.push_str(&format!(
        "{pad} |\n{line:>width$} | {src}\n{pad} | {}{}\n",
        " ".repeat(before),
        "^".repeat(marked.max(1))
    ));
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.field,
            self.message
        )
    }
}

/// Terminal columns a character takes: 0 for combining and zero-width
/// characters, 2 for East Asian wide characters and emoji, 1 otherwise.
/// An approximation of Unicode's East Asian Width that covers the ranges a
/// profile is likely to contain.
pub fn char_width(c: char) -> usize {
    let u = c as u32;
    let zero = matches!(u,
        0x0300..=0x036F | 0x0483..=0x0489 | 0x0591..=0x05BD | 0x0610..=0x061A
        | 0x064B..=0x065F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x200B..=0x200F
        | 0x2028..=0x202E | 0x2060..=0x2064 | 0x20D0..=0x20FF | 0xFE00..=0xFE0F
        | 0xFE20..=0xFE2F | 0xFEFF | 0xE0100..=0xE01EF);
    let wide = matches!(u,
        0x1100..=0x115F | 0x231A..=0x231B | 0x2329..=0x232A | 0x23E9..=0x23EC
        | 0x23F0 | 0x23F3 | 0x25FD..=0x25FE | 0x2614..=0x2615 | 0x2648..=0x2653
        | 0x267F | 0x2693 | 0x26A1 | 0x26AA..=0x26AB | 0x26BD..=0x26BE
        | 0x26C4..=0x26C5 | 0x26CE | 0x26D4 | 0x26EA | 0x26F2..=0x26F3 | 0x26F5
        | 0x26FA | 0x26FD | 0x2705 | 0x270A..=0x270B | 0x2728 | 0x274C | 0x274E
        | 0x2753..=0x2755 | 0x2757 | 0x2795..=0x2797 | 0x27B0 | 0x27BF
        | 0x2B1B..=0x2B1C | 0x2B50 | 0x2B55 | 0x2E80..=0x303E | 0x3041..=0x33FF
        | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xA000..=0xA4CF | 0xA960..=0xA97F
        | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF | 0xFE10..=0xFE19 | 0xFE30..=0xFE6F
        | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6 | 0x1F004 | 0x1F0CF | 0x1F18E
        | 0x1F191..=0x1F19A | 0x1F200..=0x1F251 | 0x1F300..=0x1F64F
        | 0x1F680..=0x1F6FF | 0x1F900..=0x1F9FF | 0x1FA70..=0x1FAFF
        | 0x20000..=0x2FFFD | 0x30000..=0x3FFFD);
    if zero {
        0
    } else if wide {
        2
    } else {
        1
    }
}

/// The line containing `range.start`, cut to a window around the range when
/// it is long, and the underlined character range on what is returned.
fn snippet_line(text: &str, range: &Range<usize>) -> (Option<String>, Range<usize>) {
    let mut start = range.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[line_start..line_end].trim_end_matches('\r');
    // A span starting on a line's `\r` (CRLF files) starts at the line's end.
    let shown_end = line_start + line.len();
    let start = start.min(shown_end);
    let mut end = range.end.clamp(start, shown_end);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let col_start = text[line_start..start].chars().count();
    let col_end = col_start + text[start..end].chars().count();
    // Tabs and other control characters would misalign the caret line;
    // show each as one space.
    let chars: Vec<char> = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let (shown, underline) = window(&chars, col_start..col_end);
    (Some(shown), underline)
}

/// Cuts `chars` to at most [`MAX_SNIPPET_COLUMNS`] columns around
/// `underline`, marking each cut with `…`; returns the text and the
/// underline moved onto it.
fn window(chars: &[char], underline: Range<usize>) -> (String, Range<usize>) {
    let total: usize = chars.iter().copied().map(char_width).sum();
    if total <= MAX_SNIPPET_COLUMNS {
        return (chars.iter().collect(), underline);
    }
    let s = underline.start.min(chars.len());
    // Room for the text between the two marks.
    let budget = MAX_SNIPPET_COLUMNS - 2;
    // Go back from the underline by up to CONTEXT_BEFORE columns.
    let mut a = s;
    let mut used = 0;
    while a > 0 && used + char_width(chars[a - 1]) <= CONTEXT_BEFORE {
        used += char_width(chars[a - 1]);
        a -= 1;
    }
    // Forward from `a` as far as the budget allows.
    let mut b = a;
    let mut used = 0;
    while b < chars.len() && used + char_width(chars[b]) <= budget {
        used += char_width(chars[b]);
        b += 1;
    }
    // When the end of the line is reached early, use the rest of the budget
    // for more context before the underline.
    while a > 0 && used + char_width(chars[a - 1]) <= budget {
        used += char_width(chars[a - 1]);
        a -= 1;
    }
    let left = a > 0;
    let right = b < chars.len();
    let mut out = String::new();
    if left {
        out.push('…');
    }
    out.extend(&chars[a..b]);
    if right {
        out.push('…');
    }
    let shift = usize::from(left);
    let us = s.clamp(a, b) - a + shift;
    let ue = underline.end.clamp(s.clamp(a, b), b) - a + shift;
    (out, us..ue)
}

/// Shortens every `quoted` run of a message longer than
/// [`MAX_QUOTED_CHARS`] characters to its start and end around a `…`, so
/// that a huge value is not echoed whole.
pub fn shorten_quoted(message: &str) -> String {
    let parts: Vec<&str> = message.split('`').collect();
    if parts.len() < 3 {
        return message.to_string();
    }
    let mut out = String::with_capacity(message.len().min(4096));
    let closed = parts.len() - usize::from(parts.len() % 2 == 0);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push('`');
        }
        let quoted = i % 2 == 1 && i < closed;
        let n = p.chars().count();
        if quoted && n > MAX_QUOTED_CHARS {
            let keep = MAX_QUOTED_CHARS / 2;
            out.extend(p.chars().take(keep));
            out.push('…');
            out.extend(p.chars().skip(n - keep));
        } else {
            out.push_str(p);
        }
    }
    out
}

/// All problems of one load, in source order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Sorts by file, line, column (stable for equal positions).
    pub fn sort(&mut self) {
        self.0
            .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        self.0.dedup();
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    fn caret_column(rendered: &str) -> usize {
        // The caret line is the last line; columns after "<pad> | ".
        let last = rendered.lines().last().unwrap();
        let body = &last[last.find('|').unwrap() + 2..];
        body.chars().take_while(|c| *c == ' ').count()
    }

    fn render_at(text: &str, needle: &str) -> (String, Diagnostic) {
        let mut m = SourceMap::default();
        m.add("p.toml".into(), text.into());
        let off = text.find(needle).unwrap();
        let d = Diagnostic::spanned(&m, &(off..off + needle.len()), "f", "m");
        (d.render(), d)
    }

    #[test]
    fn short_lines_are_shown_whole() {
        let (r, d) = render_at("a = 1\nname = \"x\"\n", "\"x\"");
        assert_eq!(d.source_line.as_deref(), Some("name = \"x\""));
        assert_eq!(caret_column(&r), 7);
    }

    #[test]
    fn long_lines_are_cut_around_the_caret() {
        let mut text = String::from("drivers = [");
        for i in 0..20_000 {
            text.push_str(&format!("\"d{i}\", "));
        }
        text.push_str("\"BAD\"");
        for i in 0..20_000 {
            text.push_str(&format!(", \"é{i}\""));
        }
        text.push_str("]\n");
        assert!(text.len() > 150_000);
        let (r, d) = render_at(&text, "\"BAD\"");
        let shown = d.source_line.clone().unwrap();
        let cols: usize = shown.chars().map(char_width).sum();
        assert!(cols <= MAX_SNIPPET_COLUMNS, "{cols}: {shown}");
        assert!(shown.starts_with('…') && shown.ends_with('…'), "{shown}");
        // The caret is under the value.
        let line = r.lines().nth(2).unwrap();
        let body: String = line.chars().skip(line.find('|').unwrap() + 2).collect();
        let at: String = body.chars().skip(caret_column(&r)).take(5).collect();
        assert_eq!(at, "\"BAD\"", "{r}");
        assert!(r.lines().last().unwrap().ends_with("^^^^^"));
    }

    #[test]
    fn caret_stays_aligned_after_tabs_and_wide_characters() {
        let mut text = String::from("#\t日本語 ");
        text.push_str(&"x".repeat(300));
        text.push_str(" key = \"v\"\n");
        let (r, _) = render_at(&text, "\"v\"");
        let line = r.lines().nth(2).unwrap();
        let body: String = line.chars().skip(line.find('|').unwrap() + 2).collect();
        // Count columns up to the caret.
        let mut cols = 0;
        let mut shown = String::new();
        for c in body.chars() {
            if cols >= caret_column(&r) {
                shown.push(c);
            }
            cols += char_width(c);
        }
        assert!(shown.starts_with("\"v\""), "{r}");

        let (r, _) = render_at("#\t日本 = \"v\"\n", "\"v\"");
        // `#`, a tab shown as one space, two wide characters, ` = `.
        assert_eq!(caret_column(&r), 1 + 1 + 4 + 3, "{r}");
    }

    #[test]
    fn a_long_underline_is_cut_too() {
        let text = format!("name = \"{}\"\n", "a".repeat(150_000));
        let (r, d) = render_at(&text, &format!("\"{}\"", "a".repeat(150_000)));
        assert!(r.len() < 400, "{r}");
        assert!(d.source_line.unwrap().ends_with('…'));
    }

    proptest::proptest! {
        /// Any span over any text (CRLF, multi-byte, control characters)
        /// gives a snippet without panicking, with the underline inside it.
        #[test]
        fn snippets_never_panic(
            text in "(a|é|日|\t|\r\n|\n|\r|x{0,200}|\u{feff}){0,40}",
            start in 0usize..2000,
            len in 0usize..400,
        ) {
            let mut m = SourceMap::default();
            m.add("p.toml".into(), text.as_str().into());
            let d = Diagnostic::spanned(&m, &(start..start + len), "f", "m");
            let _ = d.render();
            if let Some(src) = &d.source_line {
                proptest::prop_assert!(d.underline.start <= d.underline.end);
                proptest::prop_assert!(d.underline.end <= src.chars().count());
            }
        }
    }

    #[test]
    fn quoted_values_are_shortened() {
        let long = "x".repeat(1000);
        let m = shorten_quoted(&format!("`{long}` is not a name; use `a-b`"));
        assert!(m.len() < 100, "{m}");
        assert!(m.ends_with("; use `a-b`"), "{m}");
        assert_eq!(shorten_quoted("no `closing"), "no `closing");
    }

    #[test]
    fn notes_render_with_their_own_snippet() {
        let mut m = SourceMap::default();
        m.add("a.toml".into(), "x = 1\n".into());
        let base = m.files()[0].text.len() + 1;
        m.add("b.toml".into(), "\n\n\n\n\n\n\n\n\n\ny = 2\n".into());
        let d = Diagnostic::spanned(&m, &(4..5), "x", "conflicts").with_note(
            &m,
            &(base + 10..base + 11),
            "set here",
        );
        let r = d.render();
        assert_eq!(
            r,
            "a.toml:1:5: x: conflicts\n   |\n 1 | x = 1\n   |     ^\nb.toml:11:1: note: set here\n   |\n11 | y = 2\n   | ^\n"
        );
    }
}
