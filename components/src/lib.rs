//! Debian components: lock file, private apt download, content-addressed
//! cache, `.deb` extraction.
//!
//! The pipeline, host side:
//!
//! 1. [`apt::AptContext`] runs `apt-get` with private state, cache and
//!    configuration directories (host sources and keyrings copied in), so it
//!    needs no root and never touches `/var/lib/apt`, `/var/cache/apt` or
//!    `/var/lib/dpkg`.
//! 2. [`index::Index`] parses the Packages indices that `apt-get update`
//!    left in the private lists directory; [`index::Index::resolve`] computes
//!    the dependency closure of root packages.
//! 3. [`lock::lock`] records each group's closure in a [`lock::Lock`] (TOML,
//!    beside the profile). Only `appliance lock` writes it; a build only reads it.
//! 4. [`cache::fetch`] makes every locked `.deb` present in the
//!    content-addressed cache (`<sha256>.deb`), verified against the lock.
//! 5. [`deb::Deb`] reads a `.deb` in Rust (ar + xz/zstd/gzip + tar) into an
//!    in-memory tree.
//!
//! What a kernel package holds (the image, driver modules and their
//! dependencies) is the `kernel` crate's business, on top of this one.
//!
//! Nothing in this crate reads the clock: results depend only on the lock,
//! the archive's indices and the package contents.
//!
//! # Layering
//!
//! Modules, lowest first; each imports only the modules listed before it,
//! plus what the crate root holds for all of them ([`Error`], [`Result`],
//! [`user_cache_dir`], [`close_names`] and the private helper `io_err`):
//!
//! - [`version`]: package names and dpkg version ordering; no module.
//! - [`digest`]: [`Sha256Digest`], the name of every `.deb`, lock and set of
//!   indices; no module.
//! - [`deb822`]: deb822 paragraphs; no module.
//! - [`deb`]: `.deb` reading; deb822.
//! - [`index`]: Packages indices and dependency resolution; version, digest,
//!   deb822.
//! - [`apt`]: the private apt, which keeps the parsed index; digest, index.
//! - [`lock`](mod@lock): the lock file, resolved with a private apt's
//!   index; version, digest, index, apt.
//! - [`cache`]: the content-addressed cache and [`fetch`], which checks the
//!   lock against the index and downloads with the private apt; digest,
//!   index, apt, lock.
//!
//! The root names one module item: [`Error::VersionsGone`] carries the
//! [`cache::GonePackage`]s that [`fetch`] reports. A unit test checks the
//! code against this list.

#![forbid(unsafe_code)]

pub mod apt;
pub mod cache;
pub mod deb;
pub mod deb822;
pub mod digest;
pub mod index;
pub mod lock;
pub mod version;

pub use apt::{AptContext, Refresh, MAX_INDEX_AGE};
pub use cache::{fetch, fetch_from, Cache, Event, GonePackage};
pub use deb::{Deb, Entry, EntryKind};
pub use digest::Sha256Digest;
pub use index::{Index, Package};
pub use lock::{lock, Lock, LockChange, LockRequest, LockedPackage, SourceDateEpoch};
pub use version::{PackageName, Version};

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing ("reading", "creating directory", …).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A name or version does not follow Debian's syntax.
    #[error("invalid {what} {value:?}: {rule}")]
    InvalidName {
        /// "package name", "Debian version", …
        what: &'static str,
        /// The offending text.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// `apt-get` could not be started.
    #[error("cannot run {program}: {source} (install the Debian package `apt`)")]
    AptMissing {
        /// The program we tried to run.
        program: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `apt-get` ran and failed.
    #[error("`{command}` failed ({status}):\n{stderr}")]
    AptFailed {
        /// The command line (for reproducing by hand, with `APT_CONFIG` set).
        command: String,
        /// Exit status.
        status: String,
        /// apt's error output.
        stderr: String,
    },
    /// The private apt state has no Packages indices yet.
    #[error("no Debian package indices in {lists} yet: they are downloaded by a build or `appliance lock` that may refresh them (not --offline)")]
    NoIndices {
        /// The private lists directory.
        lists: PathBuf,
    },
    /// A Packages index or control file is malformed.
    #[error("{file}:{line}: {message}")]
    IndexSyntax {
        /// The file (or member) concerned.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// No package (real or virtual) has this name in the archive.
    #[error("package `{name}` does not exist in the configured Debian suites{}", suggest(.suggestions))]
    UnknownPackage {
        /// The requested name.
        name: String,
        /// Close names that do exist.
        suggestions: Vec<String>,
    },
    /// A dependency cannot be satisfied from the archive.
    #[error("`{package}` depends on `{dependency}`, which no package in the archive satisfies (add the missing package to the excludes if the base system provides it)")]
    Unsatisfiable {
        /// The package whose dependency fails.
        package: String,
        /// The dependency, as written in the index.
        dependency: String,
    },
    /// A root package is also listed in the excludes.
    #[error("`{name}` is both requested in group `{group}` and excluded: remove it from one of the two lists")]
    ExcludedRoot {
        /// The package.
        name: String,
        /// The group naming it.
        group: String,
    },
    /// Locked versions the archive no longer has.
    #[error("Debian's archive no longer has {}", gone_list(.0))]
    VersionsGone(Vec<cache::GonePackage>),
    /// No snapshot archive has a locked version.
    #[error("{name} {version} is in none of the snapshot archives: {}", .tried.join("; "))]
    NotInSnapshots {
        /// The package.
        name: String,
        /// The locked version.
        version: String,
        /// Each URL tried and why it failed.
        tried: Vec<String>,
    },
    /// The archive's index has the locked version, but with other content.
    #[error("{name} {version}: the archive now lists SHA-256 {archive}, the lock says {locked}; the archive changed under the lock. Re-lock with `appliance lock <profile>` and review the change")]
    ArchiveChanged {
        /// The package.
        name: String,
        /// The version.
        version: String,
        /// Digest in the archive's index.
        archive: String,
        /// Digest in the lock.
        locked: String,
    },
    /// A file in the cache does not have the digest its name promises.
    #[error("cached file {path} has SHA-256 {actual}, expected {expected} for {package}: delete {path} and fetch again")]
    CacheCorrupt {
        /// The cached file.
        path: PathBuf,
        /// The package it should hold.
        package: String,
        /// Digest from the lock.
        expected: String,
        /// Digest of the file.
        actual: String,
    },
    /// apt-get download finished but a package is not among the files.
    #[error("apt-get download did not produce {name} {version} with SHA-256 {sha256} (got: {})", .got.join(", "))]
    DownloadMissing {
        /// The package.
        name: String,
        /// The version.
        version: String,
        /// The expected digest.
        sha256: String,
        /// The files apt produced.
        got: Vec<String>,
    },
    /// The lock file cannot be parsed.
    #[error("{file}:{line}:{column}: {message}")]
    LockSyntax {
        /// The lock file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The lock file parses but is inconsistent.
    #[error("{file}: {message} (regenerate it with `appliance lock <profile>`)")]
    LockInvalid {
        /// The lock file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A lock request is malformed.
    #[error("invalid lock request: {0}")]
    BadRequest(String),
    /// A `.deb` (or one of its members) is malformed.
    #[error("malformed .deb: {0}")]
    Deb(String),
    /// An archive entry would land outside the extraction root.
    #[error("unsafe path {path:?} in package archive: {reason}")]
    UnsafePath {
        /// The path as written in the archive.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
}

fn gone_list(gone: &[cache::GonePackage]) -> String {
    let items: Vec<String> = gone.iter().map(ToString::to_string).collect();
    match items.len() {
        1 => format!("the locked version {}", items.join("")),
        _ => format!("these locked versions: {}", items.join(", ")),
    }
}

fn suggest(s: &[String]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", s.join(", "))
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

/// The user's cache for this project: `$XDG_CACHE_HOME/appliance` or
/// `~/.cache/appliance` (`None` when neither variable is set). The private apt
/// and the `.deb` cache live below it.
pub fn user_cache_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".cache"),
    };
    Some(base.join("appliance"))
}

/// Names among `candidates` close to `name` (edit distance ≤ 2, or sharing a
/// prefix/substring), best first, at most five: the "did you mean" of an
/// error about an unknown name (a package here, a driver in the `kernel`
/// crate).
pub fn close_names<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut scored: Vec<(usize, &str)> = candidates
        .filter_map(|c| {
            let d = levenshtein(name, c);
            let related = name.len() >= 3 && (c.contains(name) || name.contains(c) && c.len() >= 3);
            if d <= 2 {
                Some((d, c))
            } else if related {
                Some((3 + c.len().abs_diff(name.len()), c))
            } else {
                None
            }
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(5)
        .map(|(_, c)| c.to_owned())
        .collect()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn close_names_ranks_by_distance() {
        let names = ["virtio_net", "virtio_blk", "e1000e", "e1000", "esp4"];
        assert_eq!(
            super::close_names("virtio-net", names.iter().copied())[0],
            "virtio_net"
        );
        assert_eq!(
            super::close_names("e1000f", names.iter().copied()),
            vec!["e1000", "e1000e"]
        );
        assert!(super::close_names("zzzzzz", names.iter().copied()).is_empty());
    }

    /// The first name of every `crate::…` path in `code` (`crate::x::…`,
    /// `crate::{x, y::…}`), line comments dropped.
    fn crate_paths(code: &str) -> Vec<String> {
        let ident = |s: &str| -> String {
            s.trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        };
        let code: Vec<&str> = code
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect();
        let code = code.join("\n");
        let mut out = Vec::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            match rest.strip_prefix('{') {
                Some(group) => {
                    let group = group.split('}').next().unwrap_or("");
                    out.extend(group.split(',').map(ident));
                }
                None => out.push(ident(rest)),
            }
        }
        out
    }

    /// The layering the crate docs state holds in the code: outside its
    /// tests, each module names only modules listed before it.
    #[test]
    fn modules_import_only_lower_modules() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
        let order: Vec<&str> = lib
            .lines()
            .filter_map(|l| l.strip_prefix("//! - [`"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let declared = lib.lines().filter(|l| l.starts_with("pub mod ")).count();
        assert_eq!(order.len(), declared, "every module in the layering list");
        for (rank, module) in order.iter().enumerate() {
            let text = std::fs::read_to_string(src.join(format!("{module}.rs"))).unwrap();
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
            for used in crate_paths(code) {
                if let Some(used_rank) = order.iter().position(|m| *m == used) {
                    assert!(
                        used_rank < rank,
                        "{module} imports {used}, which is not below it"
                    );
                }
            }
        }
    }
}
