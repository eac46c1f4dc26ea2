//! The content-addressed `.deb` cache and [`fetch`].
//!
//! Layout: `<dir>/<sha256>.deb`, nothing else but short-lived `tmp*`
//! download directories. A file is only ever created by renaming a verified
//! download into place, so a present file is complete; [`Cache::get`] still
//! re-hashes it and reports a mismatch (disk corruption, tampering) as an
//! error naming the file to delete. Several processes may fill one cache
//! concurrently: renames of identical content are harmless.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::apt::AptContext;
use crate::digest::Sha256Digest;
use crate::index::Index;
use crate::lock::{Lock, LockedPackage};
use crate::{io_err, Error};

// Defined at the crate root because the private apt, below this module,
// needs it too; the `.deb` cache's callers find it here.
pub use crate::user_cache_dir;

/// A content-addressed store of `.deb` files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    dir: PathBuf,
}

/// Progress of [`fetch`], for a progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Fetch starts: `total` packages, `bytes` in all.
    Start {
        /// Packages in the lock.
        total: usize,
        /// Their total size.
        bytes: u64,
    },
    /// A package was already in the cache (and verified).
    Cached {
        /// Package name.
        name: String,
        /// Its size.
        bytes: u64,
    },
    /// apt-get download starts for `count` packages of `bytes` in all.
    Downloading {
        /// Packages to download.
        count: usize,
        /// Their total size.
        bytes: u64,
    },
    /// A downloaded package was verified and stored.
    Stored {
        /// Package name.
        name: String,
        /// Its size.
        bytes: u64,
    },
    /// Every package is in the cache.
    Done,
}

/// Where each locked package is in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// `(package, cached file)`, in lock order.
    pub files: Vec<(LockedPackage, PathBuf)>,
}

impl Fetched {
    /// The cached file of `name`.
    pub fn path(&self, name: &str) -> Option<&Path> {
        self.files
            .iter()
            .find(|(p, _)| p.name.as_str() == name)
            .map(|(_, f)| f.as_path())
    }
}

impl Cache {
    /// A cache in `dir` (created if missing).
    pub fn new(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(io_err("creating cache directory", dir))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The default cache: `$XDG_CACHE_HOME/appliance/debs` or `~/.cache/appliance/debs`.
    pub fn default_location() -> Result<Self, Error> {
        let dir = user_cache_dir()
            .ok_or_else(|| {
                Error::BadRequest(
                    "neither XDG_CACHE_HOME nor HOME is set: pass a cache directory".into(),
                )
            })?
            .join("debs");
        Self::new(&dir)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the file with this digest lives (whether or not it exists).
    pub fn path_for(&self, sha: &Sha256Digest) -> PathBuf {
        self.dir.join(format!("{}.deb", sha.to_hex()))
    }

    /// The verified cached file of `pkg`, or `None` if absent. A present file
    /// with another digest is [`Error::CacheCorrupt`].
    pub fn get(&self, pkg: &LockedPackage) -> Result<Option<PathBuf>, Error> {
        let path = self.path_for(&pkg.sha256);
        if !path.exists() {
            return Ok(None);
        }
        let actual = hash_file(&path)?;
        if actual != pkg.sha256 {
            return Err(Error::CacheCorrupt {
                path,
                package: format!("{} {}", pkg.name, pkg.version),
                expected: pkg.sha256.to_hex(),
                actual: actual.to_hex(),
            });
        }
        Ok(Some(path))
    }

    /// Reads the verified bytes of `pkg` from the cache (error if absent).
    pub fn read(&self, pkg: &LockedPackage) -> Result<Vec<u8>, Error> {
        let path = self.path_for(&pkg.sha256);
        let bytes = std::fs::read(&path).map_err(io_err("reading cached package", &path))?;
        let actual = Sha256Digest::of(&bytes);
        if actual != pkg.sha256 {
            return Err(Error::CacheCorrupt {
                path,
                package: format!("{} {}", pkg.name, pkg.version),
                expected: pkg.sha256.to_hex(),
                actual: actual.to_hex(),
            });
        }
        Ok(bytes)
    }
}

/// What the archive's index says of the packages to download.
struct Availability {
    /// `apt-get download` arguments of the packages the archive has.
    specs: Vec<String>,
    /// Locked versions the archive no longer has.
    gone: Vec<GonePackage>,
}

/// Checks that the archive still has each of `missing` with its locked
/// digest. A locked version whose digest changed in the archive is an error
/// at once ([`Error::ArchiveChanged`]): that is not an update.
fn check_available(missing: &[&LockedPackage], index: &Index) -> Result<Availability, Error> {
    let mut specs = Vec::new();
    let mut gone = Vec::new();
    for p in missing {
        let versions = index.versions(p.name.as_str());
        let Some(found) = versions
            .iter()
            .find(|v| v.version == p.version && v.architecture == p.architecture)
        else {
            gone.push(GonePackage {
                package: (*p).clone(),
                available: versions.iter().map(|v| v.version.to_string()).collect(),
            });
            continue;
        };
        if found.sha256 != p.sha256 {
            return Err(Error::ArchiveChanged {
                name: p.name.to_string(),
                version: p.version.to_string(),
                archive: found.sha256.to_hex(),
                locked: p.sha256.to_hex(),
            });
        }
        // `name:amd64` also selects arch-all packages on amd64.
        specs.push(format!("{}:{}={}", p.name, crate::index::ARCH, p.version));
    }
    Ok(Availability { specs, gone })
}

/// A locked package version that Debian's archive no longer has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GonePackage {
    /// The package as locked.
    pub package: LockedPackage,
    /// The versions the archive has now (none: the name itself is gone, as
    /// happens to a kernel package when its ABI number moves).
    pub available: Vec<String>,
}

impl std::fmt::Display for GonePackage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} (", self.package.name, self.package.version)?;
        if self.available.is_empty() {
            write!(f, "no version of it is left")?;
        } else {
            write!(f, "the archive has {}", self.available.join(", "))?;
        }
        write!(f, ")")
    }
}

/// SHA-256 of a file, streamed.
pub fn hash_file(path: &Path) -> Result<Sha256Digest, Error> {
    let mut f = std::fs::File::open(path).map_err(io_err("opening", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or(&[]));
    }
    Ok(Sha256Digest(h.finalize().into()))
}

/// Makes every package of `lock` present and verified in `cache`,
/// downloading the missing ones with `ctx`. If the private indices lack a
/// locked version, `ctx` is updated once before the versions are reported
/// gone ([`Error::VersionsGone`]). Never changes the lock.
pub fn fetch(
    lock: &Lock,
    cache: &Cache,
    ctx: &AptContext,
    progress: &mut dyn FnMut(Event),
) -> Result<Fetched, Error> {
    fetch_packages(&lock.packages, cache, ctx, progress)
}

/// [`fetch`] for a subset of a lock's packages.
pub fn fetch_packages(
    packages: &[LockedPackage],
    cache: &Cache,
    ctx: &AptContext,
    progress: &mut dyn FnMut(Event),
) -> Result<Fetched, Error> {
    fetch_from(packages, cache, ctx, &[], progress)
}

/// [`fetch_packages`], taking the locked versions that the archive no longer
/// has from the snapshot archives `snapshots` (base URLs under which each
/// package's `pool/…` path exists, such as
/// `https://snapshot.debian.org/archive/debian/20261101T000000Z`), tried in
/// order. Every download is checked against the lock's SHA-256, so a
/// snapshot needs no trust of its own.
pub fn fetch_from(
    packages: &[LockedPackage],
    cache: &Cache,
    ctx: &AptContext,
    snapshots: &[String],
    progress: &mut dyn FnMut(Event),
) -> Result<Fetched, Error> {
    progress(Event::Start {
        total: packages.len(),
        bytes: packages.iter().map(|p| p.size).sum(),
    });
    let mut missing = Vec::new();
    for p in packages {
        if cache.get(p)?.is_some() {
            progress(Event::Cached {
                name: p.name.to_string(),
                bytes: p.size,
            });
        } else {
            missing.push(p);
        }
    }
    if !missing.is_empty() {
        // A new cache has no indices at all; stale ones can lack a version
        // the lock (made later) names: refresh once before declaring it gone.
        let mut refreshed = false;
        if !ctx.has_indices() {
            ctx.update()?;
            refreshed = true;
        }
        let mut avail = check_available(&missing, &*ctx.index()?)?;
        if !avail.gone.is_empty() && !refreshed {
            ctx.update()?;
            avail = check_available(&missing, &*ctx.index()?)?;
        }
        if !avail.gone.is_empty() && snapshots.is_empty() {
            return Err(Error::VersionsGone(avail.gone));
        }
        progress(Event::Downloading {
            count: missing.len(),
            bytes: missing.iter().map(|p| p.size).sum(),
        });
        let tmp = tempfile::Builder::new()
            .prefix("tmp")
            .tempdir_in(cache.dir())
            .map_err(io_err("creating download directory in", cache.dir()))?;
        ctx.download(&avail.specs, tmp.path())?;
        for g in &avail.gone {
            download_from_snapshots(&g.package, snapshots, ctx, tmp.path())?;
        }
        // Identify the downloads by digest, not by apt's file naming.
        let mut got = Vec::new();
        for e in std::fs::read_dir(tmp.path()).map_err(io_err("listing", tmp.path()))? {
            let path = e.map_err(io_err("listing", tmp.path()))?.path();
            got.push((hash_file(&path)?, path));
        }
        for p in &missing {
            let Some((_, path)) = got.iter().find(|(d, _)| *d == p.sha256) else {
                return Err(Error::DownloadMissing {
                    name: p.name.to_string(),
                    version: p.version.to_string(),
                    sha256: p.sha256.to_hex(),
                    got: got
                        .iter()
                        .map(|(d, f)| {
                            format!(
                                "{} ({d})",
                                f.file_name().unwrap_or_default().to_string_lossy()
                            )
                        })
                        .collect(),
                });
            };
            let dst = cache.path_for(&p.sha256);
            std::fs::rename(path, &dst).map_err(io_err("storing", &dst))?;
            progress(Event::Stored {
                name: p.name.to_string(),
                bytes: p.size,
            });
        }
    }
    progress(Event::Done);
    let files = packages
        .iter()
        .map(|p| (p.clone(), cache.path_for(&p.sha256)))
        .collect();
    Ok(Fetched { files })
}

/// Why apt could not fetch a file, from its error output, without the URL
/// (`E: Failed to fetch URL  404  Not Found [IP: …]` → `404 Not Found [IP: …]`).
fn fetch_failure(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("E: Failed to fetch"))
        .or_else(|| stderr.lines().find(|l| l.starts_with("E:")))
        .unwrap_or(stderr)
        .trim_start_matches("E:")
        .trim();
    match line.strip_prefix("Failed to fetch ") {
        Some(rest) => rest
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" "),
        None => line.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Downloads `p` from the first snapshot archive that has it, into `dir`
/// (named by its digest).
fn download_from_snapshots(
    p: &LockedPackage,
    snapshots: &[String],
    ctx: &AptContext,
    dir: &Path,
) -> Result<(), Error> {
    let target = dir.join(format!("{}.deb", p.sha256.to_hex()));
    let mut tried = Vec::new();
    for base in snapshots {
        let uri = format!(
            "{}/{}",
            base.trim_end_matches('/'),
            p.filename.trim_start_matches('/')
        );
        match ctx.download_uri(&uri, &target, &p.sha256) {
            Ok(()) => return Ok(()),
            Err(Error::AptFailed { stderr, .. }) => {
                let _ = std::fs::remove_file(&target);
                tried.push(format!("{uri}: {}", fetch_failure(&stderr)));
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::NotInSnapshots {
        name: p.name.to_string(),
        version: p.version.to_string(),
        tried,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn fetch_failures_are_said_without_the_url() {
        let e = "Err:1 http://h/p.deb\n  404  Not Found [IP: 127.0.0.1 80]\nE: Failed to fetch http://h/p%2b1.deb  404  Not Found [IP: 127.0.0.1 80]\nE: Download Failed\n";
        assert_eq!(super::fetch_failure(e), "404 Not Found [IP: 127.0.0.1 80]");
        assert_eq!(
            super::fetch_failure("E: Something else\n"),
            "Something else"
        );
        assert_eq!(super::fetch_failure("odd"), "odd");
    }
}
