//! Releases on the build host: what an update changes.
//!
//! * [`build`]: one output directory of `appliance build`, read and checked —
//!   the manifest (and, given a public key, its signature), `uki.efi` against
//!   the manifest, and the runtime plan and the policy blob taken from the
//!   UKI's initramfs, each against the digest that pins it;
//! * [`diff`]: two builds compared — the report `appliance diff` prints
//!   before an update is rolled out (versions, packages, kernel, policy and
//!   plan in words, each predicted PCR, and what survives of secrets sealed
//!   on the device);
//! * [`words`]: a policy and a plan as items in words, the unit of comparison.
//!
//! Host-side only; it reads what the builder wrote and never writes.
//! Nothing here panics on any input: a missing, garbled or changed file is a
//! [`ReleaseError`] naming it. Keys of lab policies are never printed: a
//! changed key is reported as changed, nothing more.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod build;
pub mod diff;
pub mod words;

use std::path::PathBuf;

pub use build::Build;
pub use diff::Diff;

/// Why a build could not be read or compared. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// A file could not be read.
    #[error("{path}: {source} (is it the output directory of `appliance build`?)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// `manifest.json` does not parse.
    #[error("{path}: not a manifest this tool reads: {message}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A public key was given but the build has no signature.
    #[error("{path}: missing ({source}): the manifest is not signed, and --pubkey asks for signed builds (sign it with `appliance sign`)")]
    Unsigned {
        /// `manifest.sig`.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The signature does not verify with the key given.
    #[error("{path}: the signature {signature} does not verify with key {fingerprint}: the manifest or its signature was changed after signing, or another key signed it")]
    Signature {
        /// `manifest.json`.
        path: PathBuf,
        /// `manifest.sig`.
        signature: PathBuf,
        /// The key's fingerprint.
        fingerprint: String,
    },
    /// A file's digest differs from the one that pins it.
    #[error("{path}: SHA-256 {actual}, but {pinned_by} says {expected}: it was changed after the build (`appliance verify` checks every file)")]
    Digest {
        /// The file (or `file:member`).
        path: String,
        /// What pins it (`manifest.json`, the plan).
        pinned_by: &'static str,
        /// The pinned digest.
        expected: String,
        /// What the file hashes to.
        actual: String,
    },
    /// A file is not what the builder writes (a UKI without an initramfs,
    /// an initramfs without a plan, a plan or policy that does not decode).
    #[error("{path}: {message}")]
    Content {
        /// The file (or `file:member`).
        path: String,
        /// What is wrong.
        message: String,
    },
}
