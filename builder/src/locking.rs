//! The lock stage: which exact packages a build uses, and the lock file's life.
//!
//! - A plain build takes Debian's current versions (security updates
//!   included): it refreshes the private package indices when they are older
//!   than [`components::MAX_INDEX_AGE`], resolves the profile's packages
//!   against them, and compares the result with the lock beside the profile.
//!   When they differ, the build uses the new resolution, reports each
//!   package whose version changed, and — only once the image is in place —
//!   writes the new lock, so the lock always records exactly what was built.
//!   When they agree, the lock is kept byte for byte (its
//!   `source_date_epoch` included), so the image is the same.
//! - `--locked` builds exactly what the lock pins or fails: no lock, a lock
//!   that does not cover the profile, or a pinned version the archive no
//!   longer has is an error naming the fix.
//! - `--snapshot URL` (implies `--locked`) fetches pinned versions the
//!   archive has dropped from snapshot archives, for rebuilding an old release.

use std::path::{Path, PathBuf};

use components::{AptContext, Lock, LockChange, LockRequest, Refresh};

use crate::{BuildError, EXCLUDES};

/// Package that carries the UEFI stub.
pub(crate) const STUB_PACKAGE: &str = "systemd-boot-efi";

/// How a build treats the lock file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockPolicy {
    /// Build exactly what the lock pins; never change it.
    pub locked: bool,
    /// Snapshot archives (base URLs) for pinned versions the archive dropped.
    /// Non-empty implies `locked`.
    pub snapshots: Vec<String>,
    /// When the private package indices are refreshed.
    pub refresh: Refresh,
}

impl LockPolicy {
    /// Whether the lock must be used as it is.
    pub fn is_locked(&self) -> bool {
        self.locked || !self.snapshots.is_empty()
    }
}

/// The lock file that belongs to a profile: same name, `.lock` extension.
pub fn lock_path_for(profile: &Path) -> PathBuf {
    profile.with_extension("lock")
}

/// The package of the `microvm` runtime's VMM (the `vmm` group).
pub(crate) const VMM_PACKAGE: &str = "qemu-system-x86";

/// What the VMM's package depends on that a `microvm` image never runs:
/// QEMU's loadable modules and helpers (`qemu-system-common`: TCG, displays,
/// audio, USB, spice, and the libraries they pull in) and the firmware of
/// PC machines (SeaBIOS, iPXE). A VM boots `-machine microvm` under KVM with
/// the firmware of `qemu-system-data`.
pub(crate) const VMM_EXCLUDES: [&str; 3] = ["ipxe-qemu", "qemu-system-common", "seabios"];

/// The groups of root packages a profile needs: a `microvm` profile's also
/// holds the VMM (`vmm`).
pub(crate) fn lock_request(p: &profiles::Profile) -> LockRequest {
    let microvm = p.appliance.runtime == profiles::Runtime::Microvm;
    let mut groups = vec![
        ("black".into(), p.black.packages.clone()),
        ("boot".into(), vec![STUB_PACKAGE.into()]),
        ("kernel".into(), vec![p.kernel.package.clone()]),
        ("red".into(), p.red.packages.clone()),
    ];
    let mut excludes: Vec<String> = EXCLUDES.iter().map(|s| s.to_string()).collect();
    if microvm {
        groups.push(("vmm".into(), vec![VMM_PACKAGE.into()]));
        excludes.extend(VMM_EXCLUDES.iter().map(|s| s.to_string()));
        excludes.sort();
    }
    LockRequest { groups, excludes }
}

/// What the lock stage decided.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The lock file.
    pub path: PathBuf,
    /// The lock the build uses.
    pub lock: Lock,
    /// `Some` when the build moves the lock (to be written once the image is
    /// in place): each package that changed. An empty list means only the
    /// file is new (there was none) or was rewritten in canonical form.
    pub update: Option<Vec<LockChange>>,
    /// Whether there was no lock file before.
    pub created: bool,
}

/// Decides which lock the build of `profile` (at `profile_path`) uses.
pub(crate) fn resolve(
    profile_path: &Path,
    profile: &profiles::Profile,
    policy: &LockPolicy,
    apt: &AptContext,
) -> Result<Resolved, BuildError> {
    let path = lock_path_for(profile_path);
    let request = lock_request(profile);
    if policy.is_locked() {
        if !path.exists() {
            return Err(BuildError::MissingLock {
                lock: path,
                profile: profile_path.to_path_buf(),
            });
        }
        let lock = Lock::load(&path)?;
        check_lock(&lock, &request, &path, profile_path)?;
        return Ok(Resolved {
            path,
            lock,
            update: None,
            created: false,
        });
    }
    let old = if path.exists() {
        Some(Lock::load(&path).map_err(|e| BuildError::LockUnreadable {
            lock: path.clone(),
            message: e.to_string(),
        })?)
    } else {
        None
    };
    apt.refresh(policy.refresh)?;
    let fresh = components::lock(&request, apt)?;
    match old {
        Some(old) if old.same_packages(&fresh) => Ok(Resolved {
            path,
            lock: old,
            update: None,
            created: false,
        }),
        Some(old) => Ok(Resolved {
            update: Some(old.changes(&fresh)),
            path,
            lock: fresh,
            created: false,
        }),
        None => Ok(Resolved {
            path,
            lock: fresh,
            update: Some(Vec::new()),
            created: true,
        }),
    }
}

/// `appliance lock`: refreshes the package indices, resolves the profile's
/// packages and writes the lock beside the profile (atomically). Returns its
/// path, the lock and what changed from the previous lock (empty when there
/// was none).
pub fn lock_profile(
    profile_path: &Path,
    cache_dir: &Path,
) -> Result<(PathBuf, Lock, Vec<LockChange>), BuildError> {
    let profile = profiles::load_profile(profile_path)?;
    let apt = AptContext::new(&cache_dir.join("apt"))?;
    apt.refresh(Refresh::Always)?;
    let lock = components::lock(&lock_request(&profile), &apt)?;
    let path = lock_path_for(profile_path);
    let changes = match Lock::load(&path) {
        Ok(old) if old.same_packages(&lock) => {
            // Nothing moved: keep the file (and its epoch) as it is.
            return Ok((path, old, Vec::new()));
        }
        Ok(old) => old.changes(&lock),
        Err(_) => Vec::new(),
    };
    lock.save(&path)?;
    Ok((path, lock, changes))
}

/// Checks that `lock` pins the roots `want` asks for.
fn check_lock(
    lock: &Lock,
    want: &LockRequest,
    lock_path: &Path,
    profile: &Path,
) -> Result<(), BuildError> {
    for (name, roots) in &want.groups {
        let mismatch = |what: String| BuildError::LockMismatch {
            lock: lock_path.to_path_buf(),
            profile: profile.to_path_buf(),
            what,
        };
        let g = lock
            .group(name)
            .ok_or_else(|| mismatch(format!("it has no `{name}` package group")))?;
        let mut a = g.roots.clone();
        let mut b = roots.clone();
        a.sort();
        b.sort();
        if a != b {
            return Err(mismatch(format!(
                "its `{name}` packages are {} but the profile asks for {}",
                a.join(", "),
                b.join(", ")
            )));
        }
    }
    Ok(())
}

/// Where a snapshot of Debian's archive as of the lock's date can be found:
/// snapshot.debian.org serves the archive as it was at any time. The
/// timestamp is the lock's `source_date_epoch` plus a day, rounded to the
/// day: a snapshot after the newest Release file the lock used, and before
/// most later changes.
pub fn snapshot_hint(lock: &Lock) -> [String; 2] {
    let t = lock.source_date_epoch.0 + 86_400;
    let (y, m, d) = civil_from_days((t / 86_400) as i64);
    let stamp = format!("{y:04}{m:02}{d:02}T000000Z");
    [
        format!("https://snapshot.debian.org/archive/debian/{stamp}"),
        format!("https://snapshot.debian.org/archive/debian-security/{stamp}"),
    ]
}

/// (year, month, day) of a day number since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Turns the fetch stage's "versions gone" into the build's error, naming
/// the lock and the ways forward.
pub(crate) fn gone_error(resolved: &Resolved, e: components::Error) -> BuildError {
    match e {
        components::Error::VersionsGone(gone) => BuildError::LockedVersionsGone {
            lock: resolved.path.clone(),
            gone: gone.iter().map(ToString::to_string).collect(),
            snapshots: snapshot_hint(&resolved.lock).to_vec(),
        },
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(19_723), (2024, 1, 1));
        // 2026-12-04
        assert_eq!(super::civil_from_days(20_791), (2026, 12, 4));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
