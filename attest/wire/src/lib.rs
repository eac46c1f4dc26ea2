//! What the gateway and the host share for attestation:
//!
//! - [`tpms`]: the TPM 2.0 structures (public areas and names, the EK and AK templates,
//!   `TPMS_ATTEST`, `TPMT_SIGNATURE`, PCR selections);
//! - [`proto`]: the attestation agent's protocol on the management channel and the
//!   nonce binding;
//! - [`runtime`]: the init's runtime measurement log (PCR 12 and 15 events).
//! - [`policy`]: the identity key's signed PCR policy (PolicyAuthorize, PolicyPCR).
//! - [`signer`]: the identity signer's protocol between the IKE process and the init.
//!
//! No parser here panics on any input.

#![forbid(unsafe_code)]

pub mod policy;
pub mod proto;
pub mod runtime;
pub mod signer;
pub mod tpms;
