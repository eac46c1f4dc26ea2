//! Diagnostics: every problem found in a profile, with the file, line,
//! column and field it concerns, and the source line for a snippet.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use serde::Serialize;

use crate::source::{Location, SourceMap};

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
    /// The source line the problem is on, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_line: Option<String>,
    /// Characters of `source_line` to underline (0-based, end exclusive).
    #[serde(skip)]
    pub underline: Range<usize>,
}

impl Diagnostic {
    /// A diagnostic at a resolved location.
    pub fn at(
        sources: &SourceMap,
        loc: &Location,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let text = sources
            .files()
            .iter()
            .find(|f| f.path == loc.path)
            .map(|f| f.text.clone());
        let (source_line, underline) = match text {
            Some(text) if !text.is_empty() => snippet_line(&text, &loc.range),
            _ => (None, 0..0),
        };
        Diagnostic {
            file: loc.path.clone(),
            line: loc.line,
            column: loc.column,
            field: field.into(),
            message: message.into(),
            source_line,
            underline,
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
                message: message.into(),
                source_line: None,
                underline: 0..0,
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
        }
    }

    /// Renders the diagnostic the way the CLI prints it: the
    /// `file:line:col: field: message` line, then the source line with the
    /// span underlined.
    pub fn render(&self) -> String {
        let mut out = format!("{self}\n");
        if let Some(src) = &self.source_line {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            let width = (self.underline.end.saturating_sub(self.underline.start)).max(1);
            out.push_str(&format!(
                "{pad} |\n{num} | {src}\n{pad} | {}{}\n",
                " ".repeat(self.underline.start),
                "^".repeat(width)
            ));
        }
        out
    }
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

/// The line containing `range.start` and the underlined character range on it.
fn snippet_line(text: &str, range: &Range<usize>) -> (Option<String>, Range<usize>) {
    let mut start = range.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[line_start..line_end].trim_end_matches('\r');
    let mut end = range.end.clamp(start, line_start + line.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let col_start = text[line_start..start].chars().count();
    let col_end = col_start + text[start..end].chars().count();
    // Tabs would misalign the caret line; show them as single spaces.
    (Some(line.replace('\t', " ")), col_start..col_end)
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
