//! The stages of a build, one module each, in the order [`crate::build`]
//! runs them (the order the design draws):
//!
//! 1. [`profile`] — resolve the profile: load and validate it, compile the
//!    policy blob, read the static gateway binaries;
//! 2. [`fetch`] — lock and fetch: resolve (or check) the lock file, fetch
//!    every locked package into the cache by its SHA-256;
//! 3. [`parts`] — the cached, compressed initramfs parts: the kernel and its
//!    driver modules, both personalities' root filesystems, the binaries;
//! 4. [`render`] — the per-build configuration: the runtime plan, the
//!    network scripts, the service configuration, `os-release`;
//! 5. [`initramfs`] — the parts and the configuration segment, concatenated;
//! 6. [`uki`] — the unified kernel image (systemd-stub, kernel, initramfs,
//!    command line pinning the plan), signed for Secure Boot if asked;
//! 7. [`disk`] — the ESP (FAT32, A/B UKIs) and the GPT disk around it, and
//!    the qcow2 copy;
//! 8. [`manifest`] — the PCR prediction, reference values, the manifest and
//!    its signature;
//! 9. [`commit`] — the output directory put in place in one rename, then the
//!    lock file.
//!
//! Each stage is a function from typed inputs (the options and what earlier
//! stages produced) to a typed output; none reads another stage's files
//! behind its back. Everything a stage writes goes into the staging
//! directory ([`commit::Staging`]) or the content-addressed part cache.

pub(crate) mod commit;
pub(crate) mod disk;
pub(crate) mod fetch;
pub(crate) mod initramfs;
pub(crate) mod manifest;
pub(crate) mod parts;
pub(crate) mod profile;
pub(crate) mod render;
pub(crate) mod uki;

use sha2::{Digest, Sha256};

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Lowercase hex of a digest.
pub(crate) fn hexd(d: &[u8; 32]) -> String {
    hex::encode(d)
}
