//! Host-side trust for appliance images:
//!
//! * [`keys`]: Ed25519 signing keys (encrypted PKCS#8 PEM) and detached signatures;
//! * [`manifest`]: `manifest.json`, the signed statement of every digest of a build;
//! * [`measure`]: PCR 4/7/11 prediction for a UKI and the reference-values file;
//! * [`eventlog`]: TCG crypto-agile event-log parser and replay, to check a
//!   prediction against what a booted TPM recorded;
//! * [`secure_boot`]: the signer of a Secure Boot-signed UKI and the firmware state that accepts it;
//! * [`verify`]: recompute every digest of an image and compare with its signed manifest.
#![forbid(unsafe_code)]

pub mod eventlog;
pub mod keys;
pub mod manifest;
pub mod measure;
pub mod pcr_policy;
pub mod secure_boot;
pub mod verify;

pub use keys::{KeyError, PublicKey, SigningKey};
pub use manifest::Manifest;
