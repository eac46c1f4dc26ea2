//! The crate's single error type (setup and I/O errors; per-packet outcomes
//! are [`crate::DropReason`]s, not errors).

use policy_blob::{Aead, BlobError};

/// Everything that stops the Viaduct from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The policy blob is unreadable or invalid.
    #[error("cannot load policy: {0}")]
    Policy(#[from] BlobError),
    /// The IDS signatures cannot be built into an engine.
    #[error("cannot load policy: IDS signatures: {0}")]
    Ids(#[from] viaduct_ids::BuildError),
    /// The policy file could not be read.
    #[error("cannot read policy file {path}: {source}; check the --policy path")]
    PolicyFile {
        /// The path given.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Key material of the wrong length.
    #[error("{aead} needs {expected} bytes of key material (key || salt), got {found}")]
    KeyLength {
        /// The transform.
        aead: Aead,
        /// Required.
        expected: usize,
        /// Found.
        found: usize,
    },
    /// A TUN device could not be opened or created.
    #[error("cannot open TUN device {name:?}: {source}; check the name (≤ 15 bytes), that /dev/net/tun exists and that we have CAP_NET_ADMIN")]
    Tun {
        /// Interface name.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Entering a network namespace failed.
    #[error(
        "cannot enter network namespace {path}: {source}; check the path (e.g. /run/netns/NAME)"
    )]
    Netns {
        /// Namespace path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file descriptor passed with --red-fd/--black-fd is unusable.
    #[error("file descriptor {fd} is not a usable TUN device: {source}")]
    BadFd {
        /// The descriptor.
        fd: i32,
        /// The OS error.
        source: std::io::Error,
    },
    /// Self-confinement failed; the Viaduct refuses to run unconfined.
    #[error("cannot confine the process ({step}): {detail}")]
    Confine {
        /// Which step (seccomp, capabilities, no_new_privs, landlock).
        step: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// Packet I/O failed.
    #[error("packet I/O on the {port} port failed: {source}")]
    Io {
        /// red / black.
        port: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A manual key of the policy carried traffic before: installing it again would
    /// repeat AEAD nonces (sequence numbers restart at 1) and reopen the replay window.
    #[error("{reused} of the policy's {total} manual keys already carried traffic; sequence numbers would restart at 1 and repeat AEAD nonces under the same key, so no manual SA is installed: put new keys in the profile and rebuild (or key the tunnel with IKEv2)")]
    KeysAlreadyUsed {
        /// Keys found in the ledger.
        reused: usize,
        /// Keys in the policy.
        total: usize,
    },
    /// The policy has manual keys but no claim was given for them.
    #[error("the policy has manual keys but no key-use claim for them (--key-claim, given by the gateway init once it has recorded the keys); without one the keys could be installed twice and AEAD nonces repeat")]
    NoKeyClaim,
    /// The claim given names another set of keys than the policy's.
    #[error("the key-use claim (--key-claim) names other keys than this policy's manual keys; no manual SA is installed")]
    KeyClaimMismatch,
    /// Command-line usage error.
    #[error("{0}")]
    Usage(String),
}
