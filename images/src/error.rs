//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong while building or reading an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing ("reading", "writing", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing to a caller-provided stream failed.
    #[error("writing {what} to the output stream: {source}")]
    Write {
        /// The image being written.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A source file changed size between planning and writing.
    #[error("{path} changed while the image was built (expected {expected} bytes, found {found}); do not modify inputs during a build")]
    SourceChanged {
        /// The source file.
        path: PathBuf,
        /// Size at planning time.
        expected: u64,
        /// Size found while copying.
        found: u64,
    },
    /// A path given for an archive or file system entry is not acceptable.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two entries were given for the same path.
    #[error("duplicate entry {0:?}: each path may be added once")]
    DuplicatePath(String),
    /// A path's parent was added as something other than a directory.
    #[error("{path:?} needs {parent:?} to be a directory, but it was added as a file, symlink or device")]
    ParentNotDirectory {
        /// The entry.
        path: String,
        /// Its parent.
        parent: String,
    },
    /// A value does not fit its on-disk field.
    #[error("{what} = {value} does not fit the on-disk field (maximum {max}); {hint}")]
    FieldOverflow {
        /// The field.
        what: &'static str,
        /// The value.
        value: u64,
        /// Largest accepted value.
        max: u64,
        /// How to fix it.
        hint: &'static str,
    },
    /// A cpio archive is malformed.
    #[error("malformed cpio archive at byte {offset}: {reason}")]
    CpioMalformed {
        /// Offset of the offending header.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The requested FAT32 volume is too small to be FAT32.
    #[error("a FAT32 volume of {size} bytes is too small: FAT32 needs at least 65525 clusters, i.e. at least {minimum} bytes; enlarge the ESP")]
    FatTooSmall {
        /// Requested size.
        size: u64,
        /// Minimum size.
        minimum: u64,
    },
    /// The requested FAT32 volume is too large for this writer.
    #[error(
        "a FAT32 volume of {size} bytes is larger than the supported maximum of {maximum} bytes"
    )]
    FatTooLarge {
        /// Requested size.
        size: u64,
        /// Maximum size.
        maximum: u64,
    },
    /// The tree does not fit the FAT volume.
    #[error("the ESP tree needs {needed} bytes of data clusters but the volume has only {available}; make the ESP at least {suggested_size} bytes")]
    FatDoesNotFit {
        /// Bytes of clusters needed.
        needed: u64,
        /// Bytes of clusters available.
        available: u64,
        /// A volume size that fits.
        suggested_size: u64,
    },
    /// A file name cannot be represented on FAT.
    #[error("file name {name:?} cannot be stored on FAT: {reason}")]
    FatInvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A FAT volume is malformed.
    #[error("malformed FAT volume: {0}")]
    FatMalformed(String),
    /// A path was not found in a FAT volume.
    #[error("{0:?} not found in the FAT volume")]
    NotFound(String),
    /// A bmap file is malformed or inconsistent.
    #[error("bmap line {line}: {reason}")]
    BmapMalformed {
        /// 1-based line of the offending element (0: the file as a whole).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A GPT disk is malformed.
    #[error("malformed GPT disk: {0}")]
    GptMalformed(String),
    /// A GPT layout cannot be realised.
    #[error("invalid GPT layout: {0}")]
    GptLayout(String),
    /// A PE image is malformed or unsupported.
    #[error("malformed PE image: {0}")]
    PeMalformed(String),
    /// A PE image cannot be turned into a UKI.
    #[error("cannot assemble the UKI: {0}")]
    Uki(String),
    /// The section table does not fit into the stub's header space.
    #[error("the PE section table needs {needed} bytes of headers but the stub has room for {available}; use a stub built with more header space")]
    PeNoHeaderRoom {
        /// Bytes needed.
        needed: u64,
        /// Bytes available (SizeOfHeaders).
        available: u64,
    },
    /// An external tool is not installed.
    #[error("{tool} not found; install the Debian package {package}")]
    ToolMissing {
        /// Program name.
        tool: &'static str,
        /// Debian package providing it.
        package: &'static str,
    },
    /// An external tool failed.
    #[error("{tool} failed ({status}): {stderr}")]
    ToolFailed {
        /// Program name.
        tool: &'static str,
        /// Exit status.
        status: String,
        /// Its standard error.
        stderr: String,
    },
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn write(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Error::Write { what, source }
    }
}
