//! Host side of attestation: enrolment and verification of a gateway's TPM evidence.
//!
//! - [`credential`]: TPM2_MakeCredential in software (the host's half of credential
//!   activation, which proves the attestation key lives in the TPM that holds the EK).
//! - [`ekcert`]: the EK certificate and its chain to a CA the administrator names.
//! - [`fleet`]: the record of an enrolled device.
//! - [`identity`]: the device identity key, certified by the AK.
//! - [`reference`]: reference values trusted through the build's signed manifest.
//! - [`quote`]: every check of a quote, by name.
//! - [`client`]: the verifier's side of the management channel.
//! - [`export`]: reference values and evidence in Keylime's and tpm2-tools' formats.

#![forbid(unsafe_code)]

pub mod client;
pub mod credential;
pub mod ekcert;
pub mod export;
pub mod fleet;
pub mod identity;
pub mod quote;
pub mod reference;
