//! Host side of attestation: enrolment and verification of a gateway's TPM evidence.
//!
//! - [`credential`]: TPM2_MakeCredential in software (the host's half of credential
//!   activation, which proves the attestation key lives in the TPM that holds the EK).
//! - [`ekcert`]: the EK certificate and its chain to a CA the administrator names.

pub mod credential;
pub mod ekcert;
