//! Stage 2, lock and fetch: decide which lock file the build uses (see
//! [`crate::locking`]), then fetch every locked package into the cache by
//! its SHA-256. When the archive moved on since the indices were read, the
//! indices are refreshed and the lock resolved again, once.

use std::path::{Path, PathBuf};

use components::{AptContext, Cache, Lock, LockedPackage};
use profiles::Profile;

use crate::locking::{self, LockPolicy, Resolved};
use crate::pipeline::{Progress, Stages};
use crate::{BuildError, BuildOptions};

/// The lock the build uses, before anything is fetched.
pub(crate) struct Locked {
    apt: AptContext,
    cache: Cache,
    resolved: Resolved,
}

/// The lock the build uses and every package it names, in the cache.
pub(crate) struct Fetched {
    /// The lock file and the lock (and whether the build moves it).
    pub resolved: Resolved,
    debs: components::cache::Fetched,
    profile_path: PathBuf,
}

impl Fetched {
    /// The lock.
    pub fn lock(&self) -> &Lock {
        &self.resolved.lock
    }

    /// The cached `.deb` of the locked package `name`.
    pub fn deb_path(&self, name: &str) -> Result<PathBuf, BuildError> {
        self.debs
            .path(name)
            .map(Path::to_path_buf)
            .ok_or_else(|| self.mismatch(format!("package {name} is not in the lock")))
    }

    /// The locked packages of a group, with their cached files.
    pub fn group(&self, group: &str) -> Result<Vec<(LockedPackage, PathBuf)>, BuildError> {
        self.lock()
            .group_packages(group)
            .into_iter()
            .map(|p| Ok((p.clone(), self.deb_path(p.name.as_str())?)))
            .collect()
    }

    /// The lock does not hold what the build needs.
    pub fn mismatch(&self, what: String) -> BuildError {
        BuildError::LockMismatch {
            lock: self.resolved.path.clone(),
            profile: self.profile_path.clone(),
            what,
        }
    }
}

/// Decides which lock the build of `profile` uses.
pub(crate) fn lock(
    opts: &BuildOptions,
    profile: &Profile,
    st: &mut Stages<'_>,
) -> Result<Locked, BuildError> {
    let apt = AptContext::new(&opts.cache_dir.join("apt"))?;
    let cache = Cache::new(&opts.cache_dir.join("debs"))?;
    if !opts.lock.is_locked() && apt.needs_refresh(opts.lock.refresh) {
        (st.progress)(Progress::Refreshing);
    }
    let resolved = locking::resolve(&opts.profile, profile, &opts.lock, &apt)?;
    if let Some(changes) = &resolved.update {
        (st.progress)(Progress::LockMoves {
            lock: resolved.path.clone(),
            created: resolved.created,
            changes: changes.clone(),
        });
    }
    Ok(Locked {
        apt,
        cache,
        resolved,
    })
}

/// Fetches every package of the lock into the cache.
pub(crate) fn fetch(
    opts: &BuildOptions,
    profile: &Profile,
    locked: Locked,
    st: &mut Stages<'_>,
) -> Result<Fetched, BuildError> {
    let Locked {
        apt,
        cache,
        mut resolved,
    } = locked;
    let fetch = |lock: &Lock, progress: &mut dyn FnMut(Progress)| {
        components::fetch_from(
            &lock.packages,
            &cache,
            &apt,
            &opts.lock.snapshots,
            &mut |e| progress(Progress::Fetch(e)),
        )
    };
    let debs = match fetch(&resolved.lock, &mut *st.progress) {
        Ok(f) => f,
        // The archive moved on since the indices were read: refresh them and
        // resolve again, once.
        Err(components::Error::AptFailed { .. } | components::Error::VersionsGone(_))
            if !opts.lock.is_locked() =>
        {
            let again = LockPolicy {
                refresh: components::Refresh::Always,
                ..opts.lock.clone()
            };
            (st.progress)(Progress::Refreshing);
            let old = resolved;
            resolved = locking::resolve(&opts.profile, profile, &again, &apt)?;
            if resolved.update != old.update {
                if let Some(changes) = &resolved.update {
                    (st.progress)(Progress::LockMoves {
                        lock: resolved.path.clone(),
                        created: resolved.created,
                        changes: changes.clone(),
                    });
                }
            }
            fetch(&resolved.lock, &mut *st.progress)?
        }
        Err(e) => return Err(locking::gone_error(&resolved, e)),
    };
    Ok(Fetched {
        resolved,
        debs,
        profile_path: opts.profile.clone(),
    })
}
