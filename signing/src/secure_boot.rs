//! The Secure Boot view of a UKI: who signed it, and the firmware state that
//! accepts it.
//!
//! Enrollment (and therefore the PCR 7 prediction for Secure Boot on) is fixed:
//! `PK`, `KEK` and `db` each hold one `EFI_CERT_X509` list with our certificate
//! owned by [`secureboot::guid::APPLIANCE_OWNER`]; `dbx` holds the placeholder
//! entry of [`secureboot::varstore::dummy_dbx`] (a template's own `dbx` is not
//! used by the prediction, so enroll into a template without one, such as
//! Debian's `OVMF_VARS_4M.fd`).

use secureboot::guid::APPLIANCE_OWNER;
use secureboot::varstore::{self, EnrolledVariables};
use secureboot::Certificate;
use sha2::{Digest, Sha256};

use crate::manifest::SecureBootInfo;

/// The variables of firmware enrolled with `cert` (by `appliance secure-boot enroll`).
pub fn enrolled(cert: &Certificate) -> EnrolledVariables {
    varstore::enrolled_variables(cert.der(), APPLIANCE_OWNER)
        .expect("a parsed certificate fits a signature list")
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

/// Check a signed UKI's embedded signature against the certificate it
/// carries; returns the signer and the variables of firmware that accepts it.
pub fn inspect(uki: &[u8]) -> Result<(SecureBootInfo, EnrolledVariables), String> {
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
            Ok(()) => return Ok((describe(&cert), enrolled(&cert))),
            Err(e) => last_err = e.to_string(),
        }
    }
    Err(last_err)
}
