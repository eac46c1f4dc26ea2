//! The crate's single error type.
//!
//! Every message says what is wrong and, where it helps, what to do about it:
//! the init prints these on the console of a device that has no other UI.

use std::path::PathBuf;

/// Everything that can go wrong in the gateway init.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runtime plan is malformed, has an unknown format version, or a
    /// value cannot be put into one.
    #[error(transparent)]
    Plan(#[from] gateway_plan::Error),
    /// The kernel command line does not pin the plan.
    #[error(
        "kernel command line: {0}; the UKI cmdline must carry `appliance.plan=<64 hex digits>`"
    )]
    Cmdline(String),
    /// The plan's SHA-256 differs from the one pinned on the kernel command line.
    #[error("plan digest mismatch: cmdline pins {expected} but {path} hashes to {actual}; the image was tampered with or built inconsistently — staying closed")]
    PlanDigestMismatch {
        /// Plan path.
        path: PathBuf,
        /// Digest from the command line.
        expected: String,
        /// Digest of the file.
        actual: String,
    },
    /// The policy blob's SHA-256 differs from the one in the plan.
    #[error("policy digest mismatch: plan expects {expected} but {path} hashes to {actual}; the image was tampered with or built inconsistently — staying closed")]
    PolicyDigestMismatch {
        /// Policy path.
        path: PathBuf,
        /// Digest from the plan.
        expected: String,
        /// Digest of the file.
        actual: String,
    },
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What the file is (e.g. "reading plan").
        what: &'static str,
        /// Which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{call}({arg}) failed: {source}")]
    Sys {
        /// System call name.
        call: &'static str,
        /// Its main argument, for the operator.
        arg: String,
        /// errno as an io::Error.
        #[source]
        source: std::io::Error,
    },
    /// A kernel module could not be loaded.
    #[error("loading kernel module {path}: {source} (errno {errno}): {hint}")]
    Module {
        /// Module path in the initramfs.
        path: PathBuf,
        /// What the errno usually means for `finit_module` and what to do.
        hint: &'static str,
        /// Raw errno.
        errno: i32,
        /// errno as an io::Error.
        #[source]
        source: std::io::Error,
    },
    /// The TPM answered something that is not a well-formed response.
    /// The device identity key (see `crate::identity`).
    #[error("device identity: {0}")]
    Identity(String),
    #[error("malformed TPM response: {0}")]
    TpmMalformed(String),
    /// The TPM returned an error code.
    #[error("TPM command {command} failed with response code {rc:#010x}")]
    TpmResponseCode {
        /// Command name.
        command: &'static str,
        /// TPM_RC value.
        rc: u32,
    },
    /// A NIC the profile names is not present (or more than one card matches).
    #[error("{side} NIC `{role}` ({want}): {problem}; present: {present}. Check the profile's [hardware.nics] against the machine — staying closed")]
    Nic {
        /// Personality that owns the NIC.
        side: &'static str,
        /// The NIC's role name.
        role: String,
        /// How it is matched.
        want: String,
        /// "not present" or "matched by more than one card".
        problem: &'static str,
        /// The interfaces that exist.
        present: String,
    },
    /// Setting up a compartment failed.
    #[error("compartment {name}: {what}: {source}")]
    Compartment {
        /// red, black or viaduct.
        name: &'static str,
        /// The step.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Confinement could not be prepared.
    /// A personality's VM cannot be started as planned.
    #[error("{side} VM: {problem}")]
    Vm {
        /// red or black.
        side: &'static str,
        /// What is wrong, naming the file or device.
        problem: String,
    },
    #[error(transparent)]
    Confine(#[from] crate::confine::ConfineError),
    /// The TPM's key-use ledger cannot be used (see `crate::keyledger`).
    #[error("key-use ledger (TPM NV index {index:#010x}): {problem}")]
    KeyLedger {
        /// The NV index.
        index: u32,
        /// What is wrong and what to do.
        problem: String,
    },
    /// The anti-rollback floor cannot be used (see `crate::floor`).
    #[error("anti-rollback floor (TPM NV {counter:#010x}, {base:#010x}): {problem}")]
    Floor {
        /// The counter index.
        counter: u32,
        /// The base index.
        base: u32,
        /// What is wrong.
        problem: String,
    },
    /// Talking to the TPM failed.
    #[error("TPM transport ({what}): {source}")]
    TpmIo {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error on `path`.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
