//! The image pipeline: from a validated profile and its lock file to a
//! reproducible, bootable GPT disk image with a UKI, and its manifest.
//!
//! ```text
//! profile ─► policy blob ─┐
//! lock ─► fetch (.debs) ──┼─► kernel + modules ─┐
//!                         ├─► red / black rootfs ┼─► initramfs (concatenated newc segments)
//! gateway-init, viaduct ──┘   plan, policy ──────┘        │
//! systemd-stub ─────────────────────────────► UKI (.osrel .cmdline .uname .linux .initrd)
//!                                                          └─► ESP (FAT32, A/B) ─► GPT disk
//! ```
//!
//! [`build`] (in `pipeline.rs`) reads as the list of stages; each stage is a
//! module of `stages/`, named for its step, with a typed input and output:
//! `profile` → `fetch` (lock and fetch) → `parts` (kernel modules,
//! personality roots, binaries) → `render` (plan, network scripts, service
//! configuration) → `initramfs` → `uki` → `disk` (ESP and GPT) → `manifest`
//! (PCR prediction, manifest, signature) → `commit`.
//!
//! Invariants:
//! - **Reproducible.** Timestamps come from the lock's `source_date_epoch`,
//!   GUIDs and volume IDs from digests of the inputs, archives are sorted;
//!   nothing reads the clock, a random source or the build host's state
//!   beyond the lock and the package cache.
//! - **Atomic.** Everything is written into a temporary directory beside the
//!   output, which then replaces the output in one rename (an exchange when
//!   the output exists). A failure leaves the previous output untouched.
//! - **Cached by content.** Slow parts (kernel modules, personality root
//!   filesystems) are cpio segments stored under the digest of everything
//!   they are made from, so a policy-only change rebuilds in seconds.
//! - The private signing key never enters the image.

#![forbid(unsafe_code)]

mod elf;
pub use signing::manifest;
pub mod locking;
mod pipeline;
pub mod secure_boot;
mod stages;

pub use locking::{lock_path_for, lock_profile, LockPolicy};
pub use pipeline::{build, BuildOptions, BuildOutput, Card, Progress, SecureBootSigner};
pub use stages::parts::COMPRESSION;
pub use stages::render::network_script;

use std::path::PathBuf;

/// Packages never pulled into an image by dependency resolution: they exist
/// for maintainer scripts, package management or a full init system, none of
/// which run on the gateway.
pub const EXCLUDES: &[&str] = &[
    "adduser",
    "apparmor",
    "debconf",
    "debconf-2.0",
    "dpkg",
    "init-system-helpers",
    "initramfs-tools",
    "initramfs-tools-core",
    "kmod",
    "libc-bin",
    "linux-base",
    "linux-initramfs-tool",
    "login",
    "lsb-base",
    "passwd",
    "perl-base",
    "systemd",
    "systemd-sysv",
    "sysvinit-utils",
    "usr-is-merged",
    "usrmerge",
];

/// Why a build failed. Every message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The profile is invalid.
    #[error("{0}")]
    Profile(#[from] profiles::Diagnostics),
    /// The policy cannot be compiled.
    #[error("{0}")]
    Policy(#[from] policy::PolicyError),
    /// `--locked` without a lock file beside the profile.
    #[error("there is no lock file {lock}, and --locked builds only from one: build once without --locked (or run `appliance lock {profile}`) to create it")]
    MissingLock {
        /// Expected lock path.
        lock: PathBuf,
        /// The profile.
        profile: PathBuf,
    },
    /// With `--locked`: the lock does not cover what the profile needs.
    #[error("{lock} does not match {profile}: {what}; build without --locked to update the lock")]
    LockMismatch {
        /// Lock path.
        lock: PathBuf,
        /// Profile path.
        profile: PathBuf,
        /// What differs.
        what: String,
    },
    /// The lock file beside the profile cannot be read.
    #[error("{message}; repair it, or delete it and build again to make a new one")]
    LockUnreadable {
        /// Lock path.
        lock: PathBuf,
        /// What is wrong (names the file).
        message: String,
    },
    /// With `--locked`: pinned versions the archive no longer has.
    #[error("{lock} pins what Debian's archive no longer has: {}. Build without --locked to move the lock to the current versions, or rebuild this lock exactly by fetching the pinned versions from snapshot archives: --snapshot {}", .gone.join(", "), .snapshots.join(" --snapshot "))]
    LockedVersionsGone {
        /// Lock path.
        lock: PathBuf,
        /// Each package, its pinned version and what the archive has now.
        gone: Vec<String>,
        /// Snapshot archive URLs that should have the pinned versions.
        snapshots: Vec<String>,
    },
    /// Package handling failed (fetch, verify, extract).
    #[error("{0}")]
    Components(#[from] components::Error),
    /// The kernel package cannot be used (its image, modules or their
    /// dependencies).
    #[error("{0}")]
    Kernel(#[from] kernel::Error),
    /// The profile asks for something the gateway cannot carry out yet.
    #[error("{location}{field}: {message}")]
    NotYet {
        /// `file:line:col: ` of the field in the profile, when found.
        location: String,
        /// The field.
        field: &'static str,
        /// What, and what to do instead.
        message: &'static str,
    },
    /// A driver named in the profile is not in the kernel package.
    #[error("{location}kernel.drivers: {message}")]
    Driver {
        /// `file:line:col: ` of the driver in the profile, when found.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// The ESP is too small for the UKIs of the image being built.
    #[error("{location}image.esp_size: {message}")]
    EspTooSmall {
        /// `file:line:col: ` of `esp_size` in the profile, when found.
        location: String,
        /// What is wrong and the size needed.
        message: String,
    },
    /// An image format failed (size, layout, PE).
    #[error("{0}")]
    Image(#[from] images::Error),
    /// A gateway binary is missing or not static.
    #[error("{0}")]
    Binary(String),
    /// Secure Boot key, certificate or signing.
    #[error("{0}")]
    SecureBoot(String),
    /// A gateway-side format (plan) rejected a value.
    #[error("runtime plan: {0}")]
    Plan(String),
    /// A template failed to render.
    #[error("template {name}: {message}")]
    Template {
        /// Template name.
        name: String,
        /// What failed.
        message: String,
    },
    /// A file system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl BuildError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> BuildError {
        let path = path.into();
        move |source| BuildError::Io {
            action,
            path,
            source,
        }
    }
}
