//! UEFI Secure Boot for the build: signs UKIs with an X.509 certificate's RSA
//! key ([`CertSigner`]). What gets enrolled, and how a signed UKI is
//! inspected, is in [`signing::secure_boot`].

use std::fmt;
use std::path::Path;

use secureboot::varstore::EnrolledVariables;
use secureboot::{Certificate, Guid};
use signing::manifest::SecureBootInfo;
use signing::secure_boot::describe;

use crate::BuildError;

/// Signature owner GUID of the appliance's enrolled certificates.
pub const OWNER: Guid = secureboot::guid::APPLIANCE_OWNER;

/// An Authenticode signer: an RSA key and its certificate.
pub struct CertSigner {
    key: secureboot::SigningKey,
    cert: Certificate,
}

impl fmt::Debug for CertSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertSigner({})", describe(&self.cert).subject)
    }
}

impl CertSigner {
    /// Read the RSA key and certificate (PEM) and check that they match.
    pub fn load(key: &Path, cert: &Path) -> Result<Self, BuildError> {
        let kb = zeroize::Zeroizing::new(
            std::fs::read(key).map_err(BuildError::io("reading Secure Boot key", key))?,
        );
        let k = secureboot::SigningKey::from_pem(&kb).map_err(|e| {
            BuildError::SecureBoot(format!("Secure Boot key {}: {e}", key.display()))
        })?;
        let cb =
            std::fs::read(cert).map_err(BuildError::io("reading Secure Boot certificate", cert))?;
        let c = Certificate::from_pem(&cb).map_err(|e| {
            BuildError::SecureBoot(format!("Secure Boot certificate {}: {e}", cert.display()))
        })?;
        k.check_matches(&c).map_err(|e| {
            BuildError::SecureBoot(format!(
                "{} does not belong to {}: {e}",
                key.display(),
                cert.display()
            ))
        })?;
        Ok(CertSigner { key: k, cert: c })
    }

    /// The certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }
}

impl crate::SecureBootSigner for CertSigner {
    fn sign(&self, uki: &[u8]) -> Result<Vec<u8>, String> {
        secureboot::authenticode::sign(uki, &self.key, &self.cert).map_err(|e| e.to_string())
    }
    fn signer(&self) -> SecureBootInfo {
        describe(&self.cert)
    }
    fn variables(&self) -> EnrolledVariables {
        signing::secure_boot::enrolled(&self.cert)
    }
}
