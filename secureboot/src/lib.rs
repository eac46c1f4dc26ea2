//! UEFI Secure Boot on the build host.
//!
//! * [`authenticode`]: Authenticode signing and verification of PE32+ (EFI) images,
//!   compatible with `sbsign`/`sbverify`, `osslsigncode`, `pesign` and OVMF.
//! * [`varstore`]: EFI signature lists and offline enrollment of Secure Boot keys into
//!   an OVMF (EDK2) variable store, plus the byte strings firmware measures into PCR 7.
//! * [`guid`]: EFI GUIDs (text form, on-disk mixed-endian form, well-known values).
//!
//! # Determinism
//! Nothing here reads the clock: signatures carry no signing time (and RSA PKCS#1
//! v1.5 is deterministic), and enrolled variables get the fixed
//! [`varstore::ENROLL_TIMESTAMP`]. The same inputs give the same bytes.
//!
//! Parsers never panic on malformed input; they return [`Error`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod authenticode;
mod der;
mod error;
pub mod guid;
mod key;
mod pem;
pub mod varstore;
mod x509;

pub use authenticode::{Certificate, SigningKey};
pub use error::{Error, Result};
pub use guid::Guid;
pub use key::SUPPORTED_RSA_BITS;
