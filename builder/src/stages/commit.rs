//! Stage 9, commit — and the staging directory every stage writes into.
//!
//! Everything a build outputs is written into a temporary directory beside
//! the output ([`Staging`]), which then replaces the output in one rename (an
//! exchange when the output exists, [`commit`]). A failure anywhere before
//! leaves the previous output untouched and the staging directory removed.
//! The lock file is written last, once the image is in place.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::fetch::Fetched;
use crate::{BuildError, BuildOptions};

/// The temporary output directory, removed unless committed.
pub(crate) struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// A fresh staging directory beside `out` (its parent is created).
    pub fn beside(out: &Path) -> Result<Staging, BuildError> {
        let out_parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&out_parent).map_err(BuildError::io("creating", &out_parent))?;
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let tmp = out_parent.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(BuildError::io("creating output directory", &tmp))?;
        Ok(Staging { dir: tmp })
    }

    /// The path of `name` inside the staging directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `name` (synced).
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), BuildError> {
        write_file(&self.dir.join(name), bytes)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Puts the staging directory in place of `opts.out`, then writes the lock
/// file if the build moves it.
pub(crate) fn commit(
    opts: &BuildOptions,
    staging: Staging,
    fetched: &Fetched,
) -> Result<(), BuildError> {
    replace_dir(&staging.dir, &opts.out)?;
    std::mem::forget(staging);
    // The lock records what was built: written only now, once the image is
    // in place.
    let resolved = &fetched.resolved;
    if resolved.update.is_some() {
        resolved
            .lock
            .save(&resolved.path)
            .map_err(|e| BuildError::LockUnreadable {
                lock: resolved.path.clone(),
                message: format!(
                    "the image is in {}, but its lock could not be written: {e}",
                    opts.out.display()
                ),
            })?;
    }
    Ok(())
}

/// Puts `tmp` in place of `out`: an atomic exchange when `out` exists (then
/// the old output is removed), a rename otherwise.
fn replace_dir(tmp: &Path, out: &Path) -> Result<(), BuildError> {
    if out.exists() {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            tmp,
            rustix::fs::CWD,
            out,
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .map_err(|e| BuildError::Io {
            action: "replacing",
            path: out.to_path_buf(),
            source: e.into(),
        })?;
        // `tmp` now holds the previous output.
        std::fs::remove_dir_all(tmp)
            .map_err(BuildError::io("removing the previous output", tmp))?;
    } else {
        std::fs::rename(tmp, out).map_err(BuildError::io("renaming into place", out))?;
    }
    Ok(())
}

/// Creates `path` with `bytes`, synced.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let mut f = std::fs::File::create(path).map_err(BuildError::io("creating", path))?;
    f.write_all(bytes)
        .map_err(BuildError::io("writing", path))?;
    f.sync_all().map_err(BuildError::io("writing", path))
}

/// Writes `path` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    write_file(&tmp, bytes)?;
    std::fs::rename(&tmp, path).map_err(BuildError::io("renaming into place", path))
}
