//! Source files of a profile and its bases, and the mapping from spans to
//! `file:line:column`.
//!
//! Every file of an `extends` chain is placed at its own offset in one
//! *virtual* byte space, so a span alone says which file it belongs to. Spans
//! stay valid through merging, deserialisation and validation. Nothing here
//! panics: out-of-range spans clamp to the end of the last file.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest profile file accepted, in bytes.
pub const MAX_PROFILE_BYTES: u64 = 1024 * 1024;

/// One loaded file.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path as the user named it (or as derived from `extends`).
    pub path: PathBuf,
    /// Whole text of the file.
    pub text: Arc<str>,
    /// Offset of this file's first byte in the virtual byte space.
    pub base: usize,
}

/// A position resolved to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// File the position is in.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// Byte range inside that file.
    pub range: Range<usize>,
}

/// All files of one profile load.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    files: Vec<SourceFile>,
    next_base: usize,
}

impl SourceMap {
    /// Adds a file and returns its index. Files are separated by one unused
    /// byte so that an empty span at a file's end is still unambiguous.
    pub fn add(&mut self, path: PathBuf, text: Arc<str>) -> usize {
        let base = self.next_base;
        self.next_base = base + text.len() + 1;
        self.files.push(SourceFile { path, text, base });
        self.files.len() - 1
    }

    /// The files, in the order they were added.
    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }

    /// File number `index`. Panics if out of range (indices come from [`SourceMap::add`]).
    pub fn file(&self, index: usize) -> &SourceFile {
        &self.files[index]
    }

    /// The file holding virtual offset `offset`, if any.
    pub fn file_at(&self, offset: usize) -> Option<&SourceFile> {
        self.files
            .iter()
            .rev()
            .find(|f| offset >= f.base && offset <= f.base + f.text.len())
    }

    /// Resolves a virtual span to a file location.
    pub fn locate(&self, span: &Range<usize>) -> Option<Location> {
        let file = self.file_at(span.start)?;
        let len = file.text.len();
        let start = (span.start - file.base).min(len);
        let end = span.end.saturating_sub(file.base).clamp(start, len);
        let (line, column) = line_col(&file.text, start);
        Some(Location {
            path: file.path.clone(),
            line,
            column,
            range: start..end,
        })
    }

    /// Location of the start of a whole file (for errors without a span).
    pub fn file_start(&self, index: usize) -> Location {
        let file = &self.files[index];
        Location {
            path: file.path.clone(),
            line: 1,
            column: 1,
            range: 0..0,
        }
    }
}

/// 1-based line and column (in characters) of byte offset `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Reads a profile file with the size limit and UTF-8 check; a leading
/// byte-order mark is dropped (see [`strip_bom`]).
///
/// Returns the text or a message (without location) and the byte offset
/// where the problem is.
pub fn read_profile_file(path: &Path) -> Result<String, ReadFailure> {
    let meta = std::fs::metadata(path).map_err(|e| ReadFailure::Io(e.to_string()))?;
    if !meta.is_file() {
        return Err(ReadFailure::Io("not a regular file".into()));
    }
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(ReadFailure::TooLarge(meta.len()));
    }
    let bytes = std::fs::read(path).map_err(|e| ReadFailure::Io(e.to_string()))?;
    if bytes.len() as u64 > MAX_PROFILE_BYTES {
        return Err(ReadFailure::TooLarge(bytes.len() as u64));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(strip_bom(text)),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            // The valid prefix is UTF-8 by definition.
            let prefix = strip_bom(String::from_utf8_lossy(&bytes[..valid]).into_owned());
            Err(ReadFailure::NotUtf8 { prefix })
        }
    }
}

/// The text without a leading UTF-8 byte-order mark. Editors on Windows
/// write one; it is not part of the TOML and would shift every column of
/// line 1 by one.
pub fn strip_bom(text: String) -> String {
    match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

/// Why a file could not be read as a profile.
#[derive(Debug)]
pub enum ReadFailure {
    /// The OS refused (message from the OS).
    Io(String),
    /// Over [`MAX_PROFILE_BYTES`].
    TooLarge(u64),
    /// Not UTF-8; `prefix` is the valid text before the first bad byte.
    NotUtf8 {
        /// Valid text before the first invalid byte.
        prefix: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let t = "a = 1\nbé = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 9), (2, 3));
        assert_eq!(line_col(t, 100), (3, 1));
    }

    #[test]
    fn locate_picks_the_right_file() {
        let mut m = SourceMap::default();
        m.add("a.toml".into(), "x = 1\n".into());
        m.add("b.toml".into(), "y = 2\nz = 3\n".into());
        let b = m.file(1).base;
        let loc = m.locate(&(b + 6..b + 7)).unwrap();
        assert_eq!(loc.path, PathBuf::from("b.toml"));
        assert_eq!((loc.line, loc.column), (2, 1));
        let loc = m.locate(&(0..1)).unwrap();
        assert_eq!(loc.path, PathBuf::from("a.toml"));
    }
}
