//! UEFI Secure Boot glue: signs UKIs for the builder, inspects signed UKIs for
//! `verify`/`measure`, and enrolls our certificate into an OVMF variable store
//! (`appliance secure-boot enroll`).
//!
//! Enrollment (and therefore the PCR 7 prediction for Secure Boot on) is fixed:
//! `PK`, `KEK` and `db` each hold one `EFI_CERT_X509` list with our certificate
//! owned by [`OWNER`]; `dbx` holds the placeholder entry of
//! [`secureboot::varstore::dummy_dbx`] (a template's own `dbx` is not used by
//! the prediction, so enroll into a template without one, such as Debian's
//! `OVMF_VARS_4M.fd`).

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use secureboot::varstore;
use secureboot::{Certificate, Guid};
use sha2::{Digest, Sha256};
use signing::manifest::SecureBootInfo;
use signing::measure::SecureBootVariables;

use crate::fsutil::write_atomic;
use crate::Outcome;

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

fn describe(cert: &Certificate) -> SecureBootInfo {
    SecureBootInfo {
        certificate_sha256: hex::encode(Sha256::digest(cert.der())),
        subject: cert
            .subject_common_name()
            .map(|cn| format!("CN={cn}"))
            .unwrap_or_else(|| "(no common name)".into()),
    }
}

/// An Authenticode signer for the builder.
pub struct Signer {
    key: secureboot::SigningKey,
    cert: Certificate,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({})", describe(&self.cert).subject)
    }
}

impl Signer {
    /// Read the RSA key and certificate (PEM) and check that they match.
    pub fn load(key: &Path, cert: &Path) -> anyhow::Result<Self> {
        let kb = zeroize::Zeroizing::new(
            std::fs::read(key)
                .with_context(|| format!("reading Secure Boot key {}", key.display()))?,
        );
        let k = secureboot::SigningKey::from_pem(&kb)
            .with_context(|| format!("Secure Boot key {}", key.display()))?;
        let cb = std::fs::read(cert)
            .with_context(|| format!("reading Secure Boot certificate {}", cert.display()))?;
        let c = Certificate::from_pem(&cb)
            .with_context(|| format!("Secure Boot certificate {}", cert.display()))?;
        k.check_matches(&c)
            .with_context(|| format!("{} does not belong to {}", key.display(), cert.display()))?;
        Ok(Signer { key: k, cert: c })
    }
}

impl builder::SecureBootSigner for Signer {
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

#[derive(Debug, clap::Subcommand)]
pub enum SecureBootCmd {
    /// Write a copy of an OVMF variable store with our certificate enrolled as PK, KEK and db.
    Enroll {
        /// Certificate (PEM) given to `build --secure-boot-cert`.
        #[arg(long)]
        cert: PathBuf,
        /// Empty variable store template.
        #[arg(long, default_value = "/usr/share/OVMF/OVMF_VARS_4M.fd")]
        template: PathBuf,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cmd: SecureBootCmd, json: bool) -> anyhow::Result<Outcome> {
    match cmd {
        SecureBootCmd::Enroll {
            cert,
            template,
            out,
        } => {
            let c = Certificate::from_pem(
                &std::fs::read(&cert).with_context(|| format!("reading {}", cert.display()))?,
            )
            .with_context(|| format!("certificate {}", cert.display()))?;
            let t = match std::fs::read(&template) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    bail!("{}: not found (apt-get install ovmf)", template.display())
                }
                Err(e) => return Err(e).with_context(|| format!("reading {}", template.display())),
            };
            if varstore::VarStore::parse(&t)
                .ok()
                .and_then(|s| {
                    s.get("dbx", secureboot::guid::EFI_IMAGE_SECURITY_DATABASE)
                        .cloned()
                })
                .is_some()
            {
                eprintln!(
                    "note: {} has its own dbx; it is kept, and PCR 7 will differ from `appliance measure`, which assumes a template without dbx",
                    template.display()
                );
            }
            let vars = varstore::enroll(&t, c.der(), OWNER)
                .with_context(|| format!("enrolling into {}", template.display()))?;
            write_atomic(&out, &vars)?;
            let d = describe(&c);
            if json {
                println!(
                    "{}",
                    serde_json::json!({"out": out, "certificate_sha256": d.certificate_sha256, "subject": d.subject})
                );
            } else {
                println!(
                    "{}: PK, KEK and db hold {} ({})",
                    out.display(),
                    d.subject,
                    d.certificate_sha256
                );
            }
            Ok(Outcome::Ok)
        }
    }
}
