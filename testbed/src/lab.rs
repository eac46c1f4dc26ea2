//! The lab profiles, for tests that build images.

use std::path::{Path, PathBuf};

/// Copies `profiles/lab/gw-a.toml` and the base it extends from the
/// repository at `repo` into `dest` (same relative layout `base/`, `lab/`,
/// so `extends` resolves); returns the copied profile's path. Tests lock and
/// build the copy, never the committed profile and lock.
pub fn copy_lab_profile(repo: &Path, dest: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dest.join("lab"))?;
    std::fs::create_dir_all(dest.join("base"))?;
    std::fs::copy(
        repo.join("profiles/base/gateway.toml"),
        dest.join("base/gateway.toml"),
    )?;
    let profile = dest.join("lab/gw-a.toml");
    std::fs::copy(repo.join("profiles/lab/gw-a.toml"), &profile)?;
    Ok(profile)
}
