//! UEFI Secure Boot for the build: signs UKIs with an X.509 certificate's RSA
//! key ([`CertSigner`]), and inspects signed UKIs for `verify`/`measure`
//! ([`inspect`]).
//!
//! Enrollment (and therefore the PCR 7 prediction for Secure Boot on) is fixed:
//! `PK`, `KEK` and `db` each hold one `EFI_CERT_X509` list with our certificate
//! owned by [`OWNER`]; `dbx` holds the placeholder entry of
//! [`secureboot::varstore::dummy_dbx`] (a template's own `dbx` is not used by
//! the prediction, so enroll into a template without one, such as Debian's
//! `OVMF_VARS_4M.fd`).

use std::fmt;
use std::path::Path;

use secureboot::varstore;
use secureboot::{Certificate, Guid};
use sha2::{Digest, Sha256};
use signing::manifest::SecureBootInfo;
use signing::measure::SecureBootVariables;

use crate::BuildError;

/// Signature owner GUID of the appliance's enrolled certificates.
pub const OWNER: Guid = secureboot::guid::APPLIANCE_OWNER;

/// The variables firmware enrolled with `cert_der` holds.
pub fn variables(cert_der: &[u8]) -> SecureBootVariables {
    let v =
        varstore::enrolled_variables(cert_der, OWNER).expect("the certificate was parsed before");
    SecureBootVariables {
        pk: v.pk,
        kek: v.kek,
        db: v.db,
        dbx: v.dbx,
        authority: v.authority,
    }
}

/// The manifest's description of a signer.
pub fn describe(cert: &Certificate) -> SecureBootInfo {
    SecureBootInfo {
        certificate_sha256: hex::encode(Sha256::digest(cert.der())),
        subject: cert
            .subject_common_name()
            .map(|cn| format!("CN={cn}"))
            .unwrap_or_else(|| "(no common name)".into()),
    }
}

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
    fn variables(&self) -> SecureBootVariables {
        variables(self.cert.der())
    }
}

/// Check a signed UKI's embedded signature against the certificate it
/// carries; returns (certificate SHA-256, subject, enrolled variables).
pub fn inspect(uki: &[u8]) -> Result<(String, String, SecureBootVariables), String> {
    let sigs = secureboot::authenticode::signatures(uki).map_err(|e| e.to_string())?;
    let Some(first) = sigs.first() else {
        return Err("the UKI carries no Authenticode signature".into());
    };
    let info = secureboot::authenticode::parse_signature(first).map_err(|e| e.to_string())?;
    let mut last_err = "the signature carries no certificate".to_string();
    for der in &info.certificates {
        let Ok(cert) = Certificate::from_der(der) else {
            continue;
        };
        if cert.serial() != info.serial.as_slice() || cert.issuer_der() != info.issuer.as_slice() {
            continue;
        }
        match secureboot::authenticode::verify(uki, &cert) {
            Ok(()) => {
                let d = describe(&cert);
                return Ok((d.certificate_sha256, d.subject, variables(cert.der())));
            }
            Err(e) => last_err = e.to_string(),
        }
    }
    Err(last_err)
}
