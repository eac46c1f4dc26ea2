//! The compiled policy blob: canonical, versioned, digest-checked format shared
//! by the host-side policy compiler and the Viaduct (trusted).
//!
//! # Wire format (version 8)
//! ```text
//! magic    5 bytes  b"VDPOL"
//! version  u16 BE   FORMAT_VERSION
//! length   u32 BE   length of body in bytes
//! body     length bytes (see `codec`)
//! digest   32 bytes SHA-256 over magic || version || length || body
//! ```
//! All integers are big-endian. Strings are u16-length-prefixed UTF-8, lists are
//! u32-count-prefixed, optional values carry a 0/1 flag byte, enums a tag byte.
//!
//! # Invariants
//! - The encoding is canonical: for every `p` that passes [`Policy::validate`],
//!   `Policy::decode(&p.encode()) == Ok(p)`, and every accepted blob `b` satisfies
//!   `Policy::decode(b)?.encode() == b` (flags are exactly 0 or 1, prefixes have
//!   zero host bits, nothing trails).
//! - [`Policy::decode`] never panics, whatever the input; it validates the policy
//!   before returning it, so a decoded policy is always internally consistent.
//! - Key material lives in [`KeyMaterial`], zeroized on drop, never printed by
//!   `Debug`. The blob produced by [`Policy::encode`] contains the keys in clear
//!   (lab manual keying only); the caller owns that buffer.
//!
//! Nothing in this crate reads the clock or a random source.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codec;
mod error;
mod keyuse;
mod model;
pub mod special;
mod validate;

pub use codec::{FORMAT_VERSION, MAGIC};
pub use error::BlobError;
pub use keyuse::{hex, unhex, KeyUse, KeyUses, KEY_USE_LEN};
pub use model::*;
pub use validate::{
    MAX_DSCP, MAX_IKE_PEERS, MAX_IKE_REKEY_SECONDS, MAX_PROPOSALS, MAX_REPLAY_WINDOW, MAX_TFC_SIZE,
    MAX_TFC_SIZES, MIN_IKE_REKEY_SECONDS, MIN_REPLAY_WINDOW, MIN_TFC_SIZE,
};
