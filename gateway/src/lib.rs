//! The gateway init (PID 1, trusted): mounts, modules, TPM PCRs, runtime plan, supervision.
//!
//! The binary `gateway-init` is a thin shell over these modules:
//! [`plan`] (the runtime plan codec: the `gateway-plan` crate, shared with the
//! image builder), [`cmdline`] (the pinned plan digest),
//! [`boot`] (the verified boot sequence, paths injectable), [`tpm`] (hand-marshalled
//! TPM 2.0 PCR commands), [`eventlog`] (console framing of the TCG log),
//! [`console`] (log lines and commands), [`pid1`] (mounts, signals, reaping, shutdown)
//! and [`sys`] (the only `unsafe`: thin syscall wrappers).
//!
//! [`runtime`] (compartments and supervision), [`cinit`] (PID 1 inside a personality),
//! [`confine`] (seccomp allowlist and argument filters, Landlock, bounding sets) and [`nic`] (NIC discovery
//! and moves) build the gateway after boot.
//!
//! Trust: this crate depends only on `gateway-plan`, `libc`, `sha2`, `thiserror`, `zeroize` and the confinement
//! crates the Viaduct also uses (`seccompiler`, `landlock`, `caps`), never parses TOML
//! and never depends on a host-side crate. No public function panics on any input.

pub mod agent;
pub mod boot;
pub mod cinit;
pub mod cmdline;
pub mod confine;
pub mod console;
pub mod error;
pub mod esp;
pub mod eventlog;
pub mod floor;
pub mod guest;
pub mod identity;
pub mod keyledger;
pub mod mgmtlink;
pub mod nic;
pub mod pid1;
pub mod relay;
pub mod runtime;
pub mod secrets;
pub mod signer;
pub mod sys;
pub mod tpm;
pub mod tpmkey;
pub mod update;
pub mod vfio;
pub mod vmm;

pub use error::{Error, Result};
/// The runtime plan's format (its own crate, shared with the builder).
pub use gateway_plan as plan;
/// SHA-256 digests (from the plan crate, which the builder shares).
pub use gateway_plan::digest;
