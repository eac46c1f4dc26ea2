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
use crate::index::Index;
use crate::lock::{Lock, LockedPackage, Sha256Digest};
use crate::{io_err, Error};

/// `$XDG_CACHE_HOME/appliance` or `~/.cache/appliance`.
pub fn user_cache_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".cache"),
    };
    Some(base.join("appliance"))
}

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

/// The `apt-get download` arguments for `missing`, after checking that the
/// archive still has each locked version with the locked digest.
fn check_available(missing: &[&LockedPackage], index: &Index) -> Result<Vec<String>, Error> {
    let mut specs = Vec::new();
    for p in missing {
        let versions = index.versions(p.name.as_str());
        if versions.is_empty() {
            return Err(Error::UnknownPackage {
                name: p.name.to_string(),
                suggestions: index.suggestions(p.name.as_str()),
            });
        }
        let Some(found) = versions
            .iter()
            .find(|v| v.version == p.version && v.architecture == p.architecture)
        else {
            return Err(Error::VersionGone {
                name: p.name.to_string(),
                locked: p.version.to_string(),
                arch: p.architecture.clone(),
                available: versions.iter().map(|v| v.version.to_string()).collect(),
            });
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
    Ok(specs)
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
/// locked version, `ctx` is updated once before the version is reported
/// gone ([`Error::VersionGone`]). Never changes the lock.
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
        // Stale private indices can lack a version the lock (made later) names:
        // refresh once before declaring it gone.
        let specs = match check_available(&missing, &*ctx.index()?) {
            Ok(specs) => specs,
            Err(Error::VersionGone { .. } | Error::UnknownPackage { .. }) => {
                ctx.update()?;
                check_available(&missing, &*ctx.index()?)?
            }
            Err(e) => return Err(e),
        };
        progress(Event::Downloading {
            count: missing.len(),
            bytes: missing.iter().map(|p| p.size).sum(),
        });
        let tmp = tempfile::Builder::new()
            .prefix("tmp")
            .tempdir_in(cache.dir())
            .map_err(io_err("creating download directory in", cache.dir()))?;
        ctx.download(&specs, tmp.path())?;
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
