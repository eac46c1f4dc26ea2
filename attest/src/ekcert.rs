//! The EK certificate and its chain to a CA the administrator names.
//!
//! A TPM's endorsement key (EK) certificate, read from NV index `0x01c00002` (RSA-2048
//! EK), is checked against the certificates of the administrator's EK CA file
//! (`--ek-ca CA.pem`) before the host makes a credential for that EK
//! ([`crate::credential`]). [`parse_pem_bundle`] reads that file;
//! [`verify_ek_certificate`] checks an EK certificate and returns its RSA key and the
//! TPM's manufacturer, model and firmware version.
//!
//! # The chain
//!
//! Every certificate of the CA file is a trust anchor, as with `openssl verify -CAfile`:
//! vendor roots and intermediates may both be in it. From the EK certificate the chain
//! goes up by issuer name = subject name (compared as RFC 5280 §7.1 suggests: attribute
//! by attribute, strings case-folded (ASCII) with white space collapsed) and a signature
//! that verifies, as far as the CA file allows: it ends at a self-issued certificate,
//! or at a certificate whose own issuer is not in the file. Where several certificates
//! carry the issuer's name, each is tried. At most [`MAX_CHAIN_LEN`] certificates, the
//! EK certificate included.
//!
//! For every certificate in the chain: notBefore ≤ now ≤ notAfter (UTCTime or
//! GeneralizedTime; `99991231235959Z` is fine), no unknown critical extension, no
//! extension twice. For every issuing certificate: basicConstraints cA=TRUE, keyCertSign
//! if it has a keyUsage extension, and its pathLenConstraint respected.
//!
//! # The EK certificate
//!
//! Its public key must be RSA (modulus and exponent are returned; the exponent must fit
//! in 32 bits); if it has an extendedKeyUsage extension, that must contain
//! `2.23.133.8.1` (tcg-kp-EKCertificate), which keeps platform certificates and other
//! TPM certificates out; it must not be a CA. The subjectAltName directoryName
//! attributes `2.23.133.2.1` (manufacturer), `2.23.133.2.2` (model) and `2.23.133.2.3`
//! (version) are reported when present. Critical extensions it may carry: keyUsage,
//! basicConstraints, subjectAltName (TCG marks it critical), extendedKeyUsage,
//! certificatePolicies, subjectDirectoryAttributes; a CA certificate may also carry a
//! critical subjectKeyIdentifier or authorityKeyIdentifier. Anything else critical
//! (nameConstraints, policyConstraints, …) is refused by OID, since it is not enforced.
//!
//! Bytes after the EK certificate are tolerated only if they are all `0x00` or all
//! `0xff` (an NV index larger than the certificate); [`EkCertificate::der`] is the
//! certificate alone.
//!
//! # Signatures
//!
//! sha256/384/512WithRSAEncryption (PKCS#1 v1.5, RSA keys of 2048 to 8192 bits) and
//! ecdsa-with-SHA256/SHA384 (P-256 and P-384 keys). Anything else (SHA-1, RSASSA-PSS,
//! Ed25519, other curves) is refused, naming the OID.
//!
//! # Parsing
//!
//! DER with low tag numbers and definite lengths of up to four octets; non-minimal
//! length octets and non-canonical BOOLEANs are tolerated (every signed byte is
//! checked by the signature, whatever its encoding). Nothing here panics on any input:
//! every failure is an [`EkCertError`] that names the certificate (the EK certificate,
//! or the CA file's certificate by position and subject) and the field at fault.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};

/// Largest number of certificates in a chain, the EK certificate included.
pub const MAX_CHAIN_LEN: usize = 8;

/// A verified EK certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EkCertificate {
    /// The certificate's DER, exactly (without any NV padding that followed it).
    pub der: Vec<u8>,
    /// The RSA modulus, big-endian, without leading zero octets.
    pub rsa_modulus: Vec<u8>,
    /// The RSA public exponent (65537 for TCG EKs).
    pub rsa_exponent: u32,
    /// subjectAltName attribute 2.23.133.2.1 (TPM manufacturer, e.g. `id:00001014`).
    pub manufacturer: Option<String>,
    /// subjectAltName attribute 2.23.133.2.2 (TPM model, e.g. `swtpm`).
    pub model: Option<String>,
    /// subjectAltName attribute 2.23.133.2.3 (TPM firmware version, e.g. `id:20191023`).
    pub version: Option<String>,
    /// Subject names from the EK certificate up to the trust anchor, e.g.
    /// `["CN=unknown", "CN=swtpm-localca", "CN=swtpm-localca-rootca"]`.
    pub chain: Vec<String>,
}

/// Why an EK certificate or the EK CA file was refused.
///
/// `cert` fields name the certificate: `EK certificate "CN=…"` or
/// `CA certificate #N "CN=…"` (N counts from 1 in the CA file).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EkCertError {
    /// The CA file is not usable PEM.
    #[error("EK CA file: {0}")]
    Pem(String),
    /// The CA file holds no certificate.
    #[error("EK CA file holds no certificate: give the TPM vendor's root (and intermediate) CA certificates")]
    NoTrustAnchors,
    /// A certificate is not well-formed DER / X.509.
    #[error("{cert}: malformed at {field}: {reason}")]
    Malformed {
        /// Which certificate.
        cert: String,
        /// The field being read.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The EK certificate's key is not RSA.
    #[error("{cert}: public key is {algorithm}, not RSA; give the RSA-2048 EK certificate (NV index 0x01c00002)")]
    NotRsa {
        /// Which certificate.
        cert: String,
        /// The key algorithm found.
        algorithm: String,
    },
    /// The EK certificate's RSA key cannot be used.
    #[error("{cert}: RSA public key: {reason}")]
    RsaKey {
        /// Which certificate.
        cert: String,
        /// What is wrong.
        reason: String,
    },
    /// The certificate's extendedKeyUsage does not allow EK use.
    #[error("{cert} is not an EK certificate: its extendedKeyUsage is [{found}] without 2.23.133.8.1 (tcg-kp-EKCertificate)")]
    NotEkCertificate {
        /// Which certificate.
        cert: String,
        /// The key purposes found.
        found: String,
    },
    /// The EK certificate says it is a CA.
    #[error("{cert} has basicConstraints cA=TRUE; an EK certificate is never a CA certificate")]
    EkIsCa {
        /// Which certificate.
        cert: String,
    },
    /// A critical extension this verifier does not enforce.
    #[error("{cert}: critical extension {oid} ({name}) is not supported; refused")]
    UnknownCriticalExtension {
        /// Which certificate.
        cert: String,
        /// Dotted OID.
        oid: String,
        /// Its name, if known.
        name: &'static str,
    },
    /// The same extension twice.
    #[error("{cert}: extension {oid} appears more than once")]
    DuplicateExtension {
        /// Which certificate.
        cert: String,
        /// Dotted OID.
        oid: String,
    },
    /// now < notBefore.
    #[error("{cert} is not valid yet: notBefore is {not_before}, now is {now}")]
    NotYetValid {
        /// Which certificate.
        cert: String,
        /// notBefore, as `YYYY-MM-DD hh:mm:ss UTC`.
        not_before: String,
        /// The time checked against.
        now: String,
    },
    /// now > notAfter.
    #[error("{cert} has expired: notAfter is {not_after}, now is {now}")]
    Expired {
        /// Which certificate.
        cert: String,
        /// notAfter, as `YYYY-MM-DD hh:mm:ss UTC`.
        not_after: String,
        /// The time checked against.
        now: String,
    },
    /// No CA certificate has the issuer's name.
    #[error("no certificate in the EK CA file has subject \"{issuer}\", the issuer of {cert}; add that CA certificate (the TPM vendor's intermediate or root) to the CA file")]
    MissingIssuer {
        /// The certificate whose issuer is missing.
        cert: String,
        /// The issuer's name.
        issuer: String,
    },
    /// The signature does not verify with the issuer's key.
    #[error("signature of {cert} does not verify with the public key of {issuer}")]
    BadSignature {
        /// The signed certificate.
        cert: String,
        /// The CA certificate whose key was tried.
        issuer: String,
    },
    /// The signature algorithm is not one this verifier accepts.
    #[error("{cert} is signed with {name} ({oid}), which is refused; supported: sha256/384/512WithRSAEncryption, ecdsa-with-SHA256/SHA384")]
    UnsupportedSignatureAlgorithm {
        /// The signed certificate.
        cert: String,
        /// Dotted OID.
        oid: String,
        /// Its name, if known.
        name: &'static str,
    },
    /// The issuer's key cannot check this kind of signature.
    #[error("public key of {issuer} cannot check the signature of {cert}: {reason}")]
    IssuerKey {
        /// The signed certificate.
        cert: String,
        /// The CA certificate.
        issuer: String,
        /// What is wrong.
        reason: String,
    },
    /// A certificate that issued another may not issue certificates.
    #[error("{issuer} may not issue certificates (it issued {cert}): {reason}")]
    NotCa {
        /// The certificate it issued.
        cert: String,
        /// The would-be CA certificate.
        issuer: String,
        /// What is missing.
        reason: String,
    },
    /// The chain does not end within [`MAX_CHAIN_LEN`] certificates.
    #[error("the chain from the EK certificate exceeds {max} certificates")]
    ChainTooLong {
        /// The limit.
        max: usize,
    },
}

/// The DER certificates of every `CERTIFICATE` block of a PEM file, in file order.
///
/// Other blocks (keys, CRLs) are skipped; a file without a certificate, a block
/// without its END line or a body that is not base64 is an error.
pub fn parse_pem_bundle(pem: &[u8]) -> Result<Vec<Vec<u8>>, EkCertError> {
    let text = std::str::from_utf8(pem).map_err(|_| {
        EkCertError::Pem(if pem.first() == Some(&0x30) {
            "this looks like a DER certificate, not PEM; convert it with `openssl x509 -inform der -in FILE -out FILE.pem`".into()
        } else {
            "not UTF-8 text".into()
        })
    })?;
    let mut certs = Vec::new();
    let mut others = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((_, line)) = lines.next() {
        let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut closed = false;
        for (_, l) in lines.by_ref() {
            let l = l.trim();
            if l == end {
                closed = true;
                break;
            }
            body.push_str(l);
        }
        if !closed {
            return Err(EkCertError::Pem(format!(
                "block \"{label}\" (certificate {}) has no \"{end}\" line",
                certs.len() + 1
            )));
        }
        if label == "CERTIFICATE" || label == "X509 CERTIFICATE" {
            let der = base64_decode(body.as_bytes()).ok_or_else(|| {
                EkCertError::Pem(format!(
                    "certificate {} is not valid base64",
                    certs.len() + 1
                ))
            })?;
            certs.push(der);
        } else {
            others.push(label.to_owned());
        }
    }
    if certs.is_empty() {
        return Err(EkCertError::Pem(if others.is_empty() {
            "no -----BEGIN CERTIFICATE----- block".into()
        } else {
            format!("no CERTIFICATE block (found {})", others.join(", "))
        }));
    }
    Ok(certs)
}

/// Checks the EK certificate `ek_der` and its chain to a certificate of `ca_certs_der`
/// (each a trust anchor) at `now_unix` (seconds since 1970, UTC).
pub fn verify_ek_certificate(
    ek_der: &[u8],
    ca_certs_der: &[Vec<u8>],
    now_unix: i64,
) -> Result<EkCertificate, EkCertError> {
    let ek_der = strip_nv_padding(ek_der);
    let ek = Cert::parse(ek_der, Role::Ek)?;
    if ca_certs_der.is_empty() {
        return Err(EkCertError::NoTrustAnchors);
    }
    let cas = ca_certs_der
        .iter()
        .enumerate()
        .map(|(i, der)| Cert::parse(der, Role::Ca(i + 1)))
        .collect::<Result<Vec<_>, _>>()?;

    // The EK certificate itself.
    let (rsa_modulus, rsa_exponent) = ek.rsa_key()?;
    ek.check_extensions(EK_CRITICAL_OK)?;
    ek.check_eku()?;
    if ek.basic_constraints()?.is_some_and(|bc| bc.ca) {
        return Err(EkCertError::EkIsCa { cert: ek.label() });
    }
    let tcg = ek.tcg_attributes()?;
    ek.check_validity(now_unix)?;

    // The chain.
    let mut path = Vec::new();
    extend_chain(&ek, &cas, &mut path, now_unix)?;

    let mut chain = vec![name_text(ek.subject)];
    chain.extend(
        path.iter()
            .filter_map(|&i| cas.get(i))
            .map(|c| name_text(c.subject)),
    );
    Ok(EkCertificate {
        der: ek.der.to_vec(),
        rsa_modulus,
        rsa_exponent,
        manufacturer: tcg.manufacturer,
        model: tcg.model,
        version: tcg.version,
        chain,
    })
}

/// Extends `path` (indices into `cas`, the EK's issuer first) up to an anchor. On error
/// `path` is as it was.
fn extend_chain(
    ek: &Cert<'_>,
    cas: &[Cert<'_>],
    path: &mut Vec<usize>,
    now: i64,
) -> Result<(), EkCertError> {
    let current = match path.last() {
        Some(&i) => match cas.get(i) {
            Some(c) => c,
            None => return Err(EkCertError::NoTrustAnchors),
        },
        None => ek,
    };
    if !path.is_empty() && current.is_self_issued() {
        return Ok(()); // a root of the CA file
    }
    let wanted = canonical_name(current.issuer);
    let candidates: Vec<usize> = cas
        .iter()
        .enumerate()
        .filter(|(i, c)| !path.contains(i) && canonical_name(c.subject) == wanted)
        .map(|(i, _)| i)
        .collect();
    if candidates.is_empty() {
        if path.is_empty() {
            return Err(EkCertError::MissingIssuer {
                cert: current.label(),
                issuer: name_text(current.issuer),
            });
        }
        return Ok(()); // every certificate of the CA file is a trust anchor
    }
    if path.len() + 2 > MAX_CHAIN_LEN {
        return Err(EkCertError::ChainTooLong { max: MAX_CHAIN_LEN });
    }
    let mut first_error = None;
    for i in candidates {
        let Some(issuer) = cas.get(i) else { continue };
        let checked = check_issuer(current, issuer, cas, path, now).and_then(|()| {
            path.push(i);
            let r = extend_chain(ek, cas, path, now);
            if r.is_err() {
                path.pop();
            }
            r
        });
        match checked {
            Ok(()) => return Ok(()),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or(EkCertError::NoTrustAnchors))
}

/// Whether `issuer` issued `cert` and may have: the signature, then the CA's own
/// properties (basicConstraints, keyUsage, pathLen, validity, critical extensions).
fn check_issuer(
    cert: &Cert<'_>,
    issuer: &Cert<'_>,
    cas: &[Cert<'_>],
    path: &[usize],
    now: i64,
) -> Result<(), EkCertError> {
    verify_signature(cert, issuer)?;
    let not_ca = |reason: String| EkCertError::NotCa {
        cert: cert.label(),
        issuer: issuer.label(),
        reason,
    };
    let bc = issuer.basic_constraints()?;
    let Some(bc) = bc.filter(|bc| bc.ca) else {
        return Err(not_ca("its basicConstraints does not say cA=TRUE".into()));
    };
    if let Some(ku) = issuer.key_usage()? {
        if !ku.key_cert_sign {
            return Err(not_ca("its keyUsage lacks keyCertSign".into()));
        }
    }
    if let Some(max) = bc.path_len {
        // Non-self-issued intermediates between this CA and the EK certificate.
        let below = path
            .iter()
            .filter_map(|&i| cas.get(i))
            .filter(|c| !c.is_self_issued())
            .count();
        if below as u64 > max {
            return Err(not_ca(format!(
                "its pathLenConstraint {max} allows {max} intermediate CA certificate(s) below it, the chain has {below}"
            )));
        }
    }
    issuer.check_validity(now)?;
    issuer.check_extensions(CA_CRITICAL_OK)?;
    Ok(())
}

/// Checks `cert`'s signature with `issuer`'s public key.
fn verify_signature(cert: &Cert<'_>, issuer: &Cert<'_>) -> Result<(), EkCertError> {
    let sig = SigAlg::from_identifier(&cert.sig_alg).map_err(|(oid, name)| {
        EkCertError::UnsupportedSignatureAlgorithm {
            cert: cert.label(),
            oid,
            name,
        }
    })?;
    let key_err = |reason: String| EkCertError::IssuerKey {
        cert: cert.label(),
        issuer: issuer.label(),
        reason,
    };
    let spki = &issuer.spki;
    let algorithm: &'static dyn VerificationAlgorithm = match (sig, spki.algorithm) {
        (SigAlg::Rsa(hash), oid::RSA_ENCRYPTION) => {
            let bits = rsa_modulus_bits(spki.key)
                .map_err(|r| key_err(format!("malformed RSA public key: {r}")))?;
            if !(2048..=8192).contains(&bits) {
                return Err(key_err(format!(
                    "RSA key of {bits} bits (2048 to 8192 bits are accepted)"
                )));
            }
            match hash {
                Hash::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                Hash::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                Hash::Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            }
        }
        (SigAlg::Ecdsa(hash), oid::EC_PUBLIC_KEY) => {
            let curve = spki.curve.unwrap_or(&[]);
            match (curve, hash) {
                (oid::P256, Hash::Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
                (oid::P256, Hash::Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
                (oid::P384, Hash::Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
                (oid::P384, Hash::Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
                _ => {
                    return Err(key_err(format!(
                        "EC key on curve {} (P-256 and P-384 are accepted)",
                        oid_text(curve)
                    )))
                }
            }
        }
        (sig, key) => {
            return Err(key_err(format!(
                "the signature is {} but the key is {}",
                sig.name(),
                key_algorithm_name(key, spki.curve)
            )))
        }
    };
    UnparsedPublicKey::new(algorithm, spki.key)
        .verify(cert.tbs, cert.signature)
        .map_err(|_| EkCertError::BadSignature {
            cert: cert.label(),
            issuer: issuer.label(),
        })
}

/// Critical extensions an EK certificate may carry.
const EK_CRITICAL_OK: &[&[u8]] = &[
    oid::KEY_USAGE,
    oid::BASIC_CONSTRAINTS,
    oid::SUBJECT_ALT_NAME,
    oid::EXT_KEY_USAGE,
    oid::CERTIFICATE_POLICIES,
    oid::SUBJECT_DIRECTORY_ATTRIBUTES,
];

/// Critical extensions a CA certificate may carry.
const CA_CRITICAL_OK: &[&[u8]] = &[
    oid::KEY_USAGE,
    oid::BASIC_CONSTRAINTS,
    oid::SUBJECT_ALT_NAME,
    oid::EXT_KEY_USAGE,
    oid::CERTIFICATE_POLICIES,
    oid::SUBJECT_DIRECTORY_ATTRIBUTES,
    oid::SUBJECT_KEY_IDENTIFIER,
    oid::AUTHORITY_KEY_IDENTIFIER,
];

/// Drops trailing NV padding (all `0x00` or all `0xff`) after the outer TLV.
fn strip_nv_padding(der: &[u8]) -> &[u8] {
    let mut r = Reader::new(der);
    match r.read("Certificate") {
        Ok(t) => {
            let rest = der.get(t.raw.len()..).unwrap_or(&[]);
            if !rest.is_empty() && (rest.iter().all(|&b| b == 0) || rest.iter().all(|&b| b == 0xff))
            {
                t.raw
            } else {
                der
            }
        }
        Err(_) => der,
    }
}

// ---------------------------------------------------------------------------------------
// X.509

/// Object identifiers (DER content octets).
mod oid {
    pub const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    pub const MD5_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04];
    pub const SHA1_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
    pub const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
    pub const SHA256_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    pub const SHA384_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    pub const SHA512_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
    pub const SHA224_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0e];
    pub const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    pub const ECDSA_WITH_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    pub const ECDSA_WITH_SHA224: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x01];
    pub const ECDSA_WITH_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    pub const ECDSA_WITH_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    pub const ECDSA_WITH_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
    pub const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
    pub const ED448: &[u8] = &[0x2b, 0x65, 0x71];
    pub const SM2_WITH_SM3: &[u8] = &[0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x83, 0x75];
    pub const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    pub const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    pub const P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];

    pub const SUBJECT_DIRECTORY_ATTRIBUTES: &[u8] = &[0x55, 0x1d, 0x09];
    pub const SUBJECT_KEY_IDENTIFIER: &[u8] = &[0x55, 0x1d, 0x0e];
    pub const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
    pub const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    pub const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
    pub const NAME_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x1e];
    pub const CERTIFICATE_POLICIES: &[u8] = &[0x55, 0x1d, 0x20];
    pub const POLICY_MAPPINGS: &[u8] = &[0x55, 0x1d, 0x21];
    pub const AUTHORITY_KEY_IDENTIFIER: &[u8] = &[0x55, 0x1d, 0x23];
    pub const POLICY_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x24];
    pub const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
    pub const INHIBIT_ANY_POLICY: &[u8] = &[0x55, 0x1d, 0x36];

    /// 2.23.133.8.1 tcg-kp-EKCertificate
    pub const TCG_KP_EK_CERTIFICATE: &[u8] = &[0x67, 0x81, 0x05, 0x08, 0x01];
    /// 2.23.133.8.2 tcg-kp-PlatformAttributeCertificate
    pub const TCG_KP_PLATFORM: &[u8] = &[0x67, 0x81, 0x05, 0x08, 0x02];
    /// 2.23.133.8.3 tcg-kp-AIKCertificate
    pub const TCG_KP_AIK: &[u8] = &[0x67, 0x81, 0x05, 0x08, 0x03];
    /// 2.23.133.2.1 tcg-at-tpmManufacturer
    pub const TCG_TPM_MANUFACTURER: &[u8] = &[0x67, 0x81, 0x05, 0x02, 0x01];
    /// 2.23.133.2.2 tcg-at-tpmModel
    pub const TCG_TPM_MODEL: &[u8] = &[0x67, 0x81, 0x05, 0x02, 0x02];
    /// 2.23.133.2.3 tcg-at-tpmVersion
    pub const TCG_TPM_VERSION: &[u8] = &[0x67, 0x81, 0x05, 0x02, 0x03];
}

/// Which certificate is being parsed (for messages).
#[derive(Clone, Copy)]
enum Role {
    Ek,
    /// Position in the CA file, from 1.
    Ca(usize),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SigAlg {
    Rsa(Hash),
    Ecdsa(Hash),
}

impl SigAlg {
    /// The algorithm of an AlgorithmIdentifier, or (dotted OID, name) if refused.
    fn from_identifier(id: &AlgId<'_>) -> Result<SigAlg, (String, &'static str)> {
        let refuse = |name: &'static str| Err((oid_text(id.oid), name));
        let alg = match id.oid {
            oid::SHA256_WITH_RSA => SigAlg::Rsa(Hash::Sha256),
            oid::SHA384_WITH_RSA => SigAlg::Rsa(Hash::Sha384),
            oid::SHA512_WITH_RSA => SigAlg::Rsa(Hash::Sha512),
            oid::ECDSA_WITH_SHA256 => SigAlg::Ecdsa(Hash::Sha256),
            oid::ECDSA_WITH_SHA384 => SigAlg::Ecdsa(Hash::Sha384),
            oid::SHA1_WITH_RSA => return refuse("sha1WithRSAEncryption (SHA-1)"),
            oid::MD5_WITH_RSA => return refuse("md5WithRSAEncryption (MD5)"),
            oid::SHA224_WITH_RSA => return refuse("sha224WithRSAEncryption"),
            oid::RSASSA_PSS => return refuse("RSASSA-PSS"),
            oid::ECDSA_WITH_SHA1 => return refuse("ecdsa-with-SHA1 (SHA-1)"),
            oid::ECDSA_WITH_SHA224 => return refuse("ecdsa-with-SHA224"),
            oid::ECDSA_WITH_SHA512 => return refuse("ecdsa-with-SHA512"),
            oid::ED25519 => return refuse("Ed25519"),
            oid::ED448 => return refuse("Ed448"),
            oid::SM2_WITH_SM3 => return refuse("SM2-with-SM3"),
            _ => return refuse("an unknown algorithm"),
        };
        // RFC 4055: NULL or absent parameters for PKCS#1 v1.5; RFC 5758: absent for ECDSA.
        let params_ok = match (alg, id.params) {
            (_, None) => true,
            (SigAlg::Rsa(_), Some(p)) => p.tag == TAG_NULL && p.content.is_empty(),
            (SigAlg::Ecdsa(_), Some(_)) => false,
        };
        if !params_ok {
            return refuse("a known algorithm with unexpected parameters");
        }
        Ok(alg)
    }

    fn name(self) -> &'static str {
        match self {
            SigAlg::Rsa(_) => "RSA PKCS#1 v1.5",
            SigAlg::Ecdsa(_) => "ECDSA",
        }
    }
}

fn key_algorithm_name(alg: &[u8], curve: Option<&[u8]>) -> String {
    match alg {
        oid::RSA_ENCRYPTION => "RSA".into(),
        oid::EC_PUBLIC_KEY => match curve {
            Some(oid::P256) => "EC P-256".into(),
            Some(oid::P384) => "EC P-384".into(),
            Some(oid::P521) => "EC P-521".into(),
            Some(c) => format!("EC on curve {}", oid_text(c)),
            None => "EC (curve not named)".into(),
        },
        oid::ED25519 => "Ed25519".into(),
        oid::RSASSA_PSS => "RSASSA-PSS".into(),
        o => format!("algorithm {}", oid_text(o)),
    }
}

fn extension_name(o: &[u8]) -> &'static str {
    match o {
        oid::SUBJECT_DIRECTORY_ATTRIBUTES => "subjectDirectoryAttributes",
        oid::SUBJECT_KEY_IDENTIFIER => "subjectKeyIdentifier",
        oid::KEY_USAGE => "keyUsage",
        oid::SUBJECT_ALT_NAME => "subjectAltName",
        oid::BASIC_CONSTRAINTS => "basicConstraints",
        oid::NAME_CONSTRAINTS => "nameConstraints",
        oid::CERTIFICATE_POLICIES => "certificatePolicies",
        oid::POLICY_MAPPINGS => "policyMappings",
        oid::AUTHORITY_KEY_IDENTIFIER => "authorityKeyIdentifier",
        oid::POLICY_CONSTRAINTS => "policyConstraints",
        oid::EXT_KEY_USAGE => "extendedKeyUsage",
        oid::INHIBIT_ANY_POLICY => "inhibitAnyPolicy",
        _ => "unknown",
    }
}

fn key_purpose_text(o: &[u8]) -> String {
    let name = match o {
        oid::TCG_KP_EK_CERTIFICATE => "tcg-kp-EKCertificate",
        oid::TCG_KP_PLATFORM => "tcg-kp-PlatformAttributeCertificate",
        oid::TCG_KP_AIK => "tcg-kp-AIKCertificate",
        [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01] => "serverAuth",
        [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02] => "clientAuth",
        [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03] => "codeSigning",
        [0x55, 0x1d, 0x25, 0x00] => "anyExtendedKeyUsage",
        _ => return oid_text(o),
    };
    format!("{} ({name})", oid_text(o))
}

/// An AlgorithmIdentifier.
struct AlgId<'a> {
    oid: &'a [u8],
    params: Option<Tlv<'a>>,
    raw: &'a [u8],
}

/// A SubjectPublicKeyInfo.
struct Spki<'a> {
    algorithm: &'a [u8],
    /// The named curve of an EC key.
    curve: Option<&'a [u8]>,
    /// The BIT STRING's content without its unused-bits octet.
    key: &'a [u8],
    /// The parameters of an RSA key (NULL expected).
    params: Option<Tlv<'a>>,
}

struct Extension<'a> {
    oid: &'a [u8],
    critical: bool,
    /// The OCTET STRING's content.
    value: &'a [u8],
}

#[derive(Clone, Copy)]
struct BasicConstraints {
    ca: bool,
    path_len: Option<u64>,
}

struct KeyUsage {
    key_cert_sign: bool,
}

#[derive(Default)]
struct TcgAttributes {
    manufacturer: Option<String>,
    model: Option<String>,
    version: Option<String>,
}

/// A parsed certificate: slices into its DER.
struct Cert<'a> {
    role: Role,
    der: &'a [u8],
    tbs: &'a [u8],
    sig_alg: AlgId<'a>,
    signature: &'a [u8],
    issuer: &'a [u8],
    subject: &'a [u8],
    not_before: i64,
    not_after: i64,
    spki: Spki<'a>,
    extensions: Vec<Extension<'a>>,
}

impl<'a> Cert<'a> {
    fn parse(der: &'a [u8], role: Role) -> Result<Cert<'a>, EkCertError> {
        Cert::parse_inner(der, role).map_err(|m| EkCertError::Malformed {
            cert: role_label(role, None),
            field: m.field,
            reason: m.reason,
        })
    }

    fn parse_inner(der: &'a [u8], role: Role) -> Result<Cert<'a>, Malformed> {
        let mut top = Reader::new(der);
        let cert = top.expect(TAG_SEQUENCE, "Certificate")?;
        top.finish("Certificate (trailing bytes)")?;
        let mut c = Reader::new(cert.content);
        let tbs = c.expect(TAG_SEQUENCE, "tbsCertificate")?;
        let sig_alg = read_alg_id(&mut c, "signatureAlgorithm")?;
        let signature = read_bit_string(&mut c, "signatureValue")?;
        c.finish("Certificate")?;

        let mut t = Reader::new(tbs.content);
        let version = match t.optional(ctx(0), "tbsCertificate.version")? {
            Some(v) => {
                let mut r = Reader::new(v.content);
                let n = r.small_uint("tbsCertificate.version")?;
                r.finish("tbsCertificate.version")?;
                if n > 2 {
                    return Err(Malformed::new(
                        "tbsCertificate.version",
                        format!("version {} is not 1, 2 or 3", n + 1),
                    ));
                }
                n
            }
            None => 0,
        };
        t.expect(TAG_INTEGER, "tbsCertificate.serialNumber")?;
        let inner_alg = read_alg_id(&mut t, "tbsCertificate.signature")?;
        if inner_alg.raw != sig_alg.raw {
            return Err(Malformed::new(
                "tbsCertificate.signature",
                "differs from the outer signatureAlgorithm",
            ));
        }
        let issuer = t.expect(TAG_SEQUENCE, "tbsCertificate.issuer")?;
        check_name(issuer.content, "tbsCertificate.issuer")?;
        let mut validity = t.sequence("tbsCertificate.validity")?;
        let not_before = read_time(&mut validity, "validity.notBefore")?;
        let not_after = read_time(&mut validity, "validity.notAfter")?;
        validity.finish("tbsCertificate.validity")?;
        let subject = t.expect(TAG_SEQUENCE, "tbsCertificate.subject")?;
        check_name(subject.content, "tbsCertificate.subject")?;
        let spki = read_spki(&mut t)?;
        // issuerUniqueID [1], subjectUniqueID [2] (IMPLICIT BIT STRING, v2/v3).
        for (tag, field) in [
            (0x81, "tbsCertificate.issuerUniqueID"),
            (0xa1, "tbsCertificate.issuerUniqueID"),
            (0x82, "tbsCertificate.subjectUniqueID"),
            (0xa2, "tbsCertificate.subjectUniqueID"),
        ] {
            t.optional(tag, field)?;
        }
        let mut extensions = Vec::new();
        if let Some(exts) = t.optional(ctx(3), "tbsCertificate.extensions")? {
            if version != 2 {
                return Err(Malformed::new(
                    "tbsCertificate.extensions",
                    "extensions in a certificate that is not version 3",
                ));
            }
            let mut outer = Reader::new(exts.content);
            let mut list = outer.sequence("extensions")?;
            outer.finish("extensions")?;
            while !list.is_empty() {
                let mut e = list.sequence("extensions.Extension")?;
                let oid = e.oid("Extension.extnID")?;
                let critical = match e.optional(TAG_BOOLEAN, "Extension.critical")? {
                    Some(b) => match b.content {
                        [v] => *v != 0,
                        _ => {
                            return Err(Malformed::new(
                                "Extension.critical",
                                "BOOLEAN is not one octet",
                            ))
                        }
                    },
                    None => false,
                };
                let value = e.expect(TAG_OCTET_STRING, "Extension.extnValue")?.content;
                e.finish("extensions.Extension")?;
                extensions.push(Extension {
                    oid,
                    critical,
                    value,
                });
            }
        }
        t.finish("tbsCertificate")?;
        Ok(Cert {
            role,
            der: cert.raw,
            tbs: tbs.raw,
            sig_alg,
            signature,
            issuer: issuer.raw,
            subject: subject.raw,
            not_before,
            not_after,
            spki,
            extensions,
        })
    }

    /// `EK certificate "CN=…"` or `CA certificate #N "CN=…"`.
    fn label(&self) -> String {
        role_label(self.role, Some(self.subject))
    }

    fn malformed(&self, field: &'static str, reason: impl Into<String>) -> EkCertError {
        EkCertError::Malformed {
            cert: self.label(),
            field,
            reason: reason.into(),
        }
    }

    fn is_self_issued(&self) -> bool {
        canonical_name(self.subject) == canonical_name(self.issuer)
    }

    fn extension(&self, oid: &[u8]) -> Option<&Extension<'a>> {
        self.extensions.iter().find(|e| e.oid == oid)
    }

    /// No extension twice, no critical extension outside `allowed`.
    fn check_extensions(&self, allowed: &[&[u8]]) -> Result<(), EkCertError> {
        for (i, e) in self.extensions.iter().enumerate() {
            if self
                .extensions
                .get(..i)
                .unwrap_or(&[])
                .iter()
                .any(|p| p.oid == e.oid)
            {
                return Err(EkCertError::DuplicateExtension {
                    cert: self.label(),
                    oid: oid_text(e.oid),
                });
            }
            if e.critical && !allowed.contains(&e.oid) {
                return Err(EkCertError::UnknownCriticalExtension {
                    cert: self.label(),
                    oid: oid_text(e.oid),
                    name: extension_name(e.oid),
                });
            }
        }
        Ok(())
    }

    fn check_validity(&self, now: i64) -> Result<(), EkCertError> {
        if now < self.not_before {
            return Err(EkCertError::NotYetValid {
                cert: self.label(),
                not_before: time_text(self.not_before),
                now: time_text(now),
            });
        }
        if now > self.not_after {
            return Err(EkCertError::Expired {
                cert: self.label(),
                not_after: time_text(self.not_after),
                now: time_text(now),
            });
        }
        Ok(())
    }

    fn basic_constraints(&self) -> Result<Option<BasicConstraints>, EkCertError> {
        let Some(e) = self.extension(oid::BASIC_CONSTRAINTS) else {
            return Ok(None);
        };
        let parse = || -> Result<BasicConstraints, Malformed> {
            let mut top = Reader::new(e.value);
            let mut s = top.sequence("basicConstraints")?;
            top.finish("basicConstraints")?;
            let ca = match s.optional(TAG_BOOLEAN, "basicConstraints.cA")? {
                Some(b) => match b.content {
                    [v] => *v != 0,
                    _ => {
                        return Err(Malformed::new(
                            "basicConstraints.cA",
                            "BOOLEAN is not one octet",
                        ))
                    }
                },
                None => false,
            };
            let path_len = if s.peek_tag() == Some(TAG_INTEGER) {
                Some(s.small_uint("basicConstraints.pathLenConstraint")?)
            } else {
                None
            };
            s.finish("basicConstraints")?;
            Ok(BasicConstraints { ca, path_len })
        };
        parse()
            .map(Some)
            .map_err(|m| self.malformed(m.field, m.reason))
    }

    fn key_usage(&self) -> Result<Option<KeyUsage>, EkCertError> {
        let Some(e) = self.extension(oid::KEY_USAGE) else {
            return Ok(None);
        };
        let mut r = Reader::new(e.value);
        let bits = r
            .expect(TAG_BIT_STRING, "keyUsage")
            .map_err(|m| self.malformed(m.field, m.reason))?;
        r.finish("keyUsage")
            .map_err(|m| self.malformed(m.field, m.reason))?;
        // Octet 0: unused bits; then bit 0 (digitalSignature) is the MSB. keyCertSign is bit 5.
        let first = bits.content.get(1).copied().unwrap_or(0);
        Ok(Some(KeyUsage {
            key_cert_sign: first & 0x04 != 0,
        }))
    }

    /// The RSA key of the EK certificate: (modulus without leading zeros, exponent).
    fn rsa_key(&self) -> Result<(Vec<u8>, u32), EkCertError> {
        if self.spki.algorithm != oid::RSA_ENCRYPTION {
            return Err(EkCertError::NotRsa {
                cert: self.label(),
                algorithm: key_algorithm_name(self.spki.algorithm, self.spki.curve),
            });
        }
        let err = |reason: String| EkCertError::RsaKey {
            cert: self.label(),
            reason,
        };
        if let Some(p) = &self.spki.params {
            if p.tag != TAG_NULL || !p.content.is_empty() {
                return Err(err("rsaEncryption parameters are not NULL".into()));
            }
        }
        let (n, e) = rsa_components(self.spki.key).map_err(|m| err(m.reason))?;
        if n.is_empty() {
            return Err(err("modulus is zero".into()));
        }
        let exponent = match e {
            [] => 0,
            e if e.len() <= 4 => e.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)),
            _ => {
                return Err(err(format!(
                    "exponent of {} octets does not fit in 32 bits",
                    e.len()
                )))
            }
        };
        if exponent < 3 || exponent % 2 == 0 {
            return Err(err(format!("exponent {exponent} is not an odd number ≥ 3")));
        }
        Ok((n.to_vec(), exponent))
    }

    /// extendedKeyUsage, if present, must allow tcg-kp-EKCertificate.
    fn check_eku(&self) -> Result<(), EkCertError> {
        let Some(e) = self.extension(oid::EXT_KEY_USAGE) else {
            return Ok(());
        };
        let mut purposes = Vec::new();
        let mut top = Reader::new(e.value);
        let mut s = top
            .sequence("extendedKeyUsage")
            .map_err(|m| self.malformed(m.field, m.reason))?;
        top.finish("extendedKeyUsage")
            .map_err(|m| self.malformed(m.field, m.reason))?;
        while !s.is_empty() {
            purposes.push(
                s.oid("extendedKeyUsage.KeyPurposeId")
                    .map_err(|m| self.malformed(m.field, m.reason))?,
            );
        }
        if purposes.contains(&oid::TCG_KP_EK_CERTIFICATE) {
            return Ok(());
        }
        Err(EkCertError::NotEkCertificate {
            cert: self.label(),
            found: purposes
                .iter()
                .map(|p| key_purpose_text(p))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The TCG TPM attributes of the subjectAltName's directoryName(s).
    fn tcg_attributes(&self) -> Result<TcgAttributes, EkCertError> {
        let mut out = TcgAttributes::default();
        let Some(e) = self.extension(oid::SUBJECT_ALT_NAME) else {
            return Ok(out);
        };
        let mut walk = || -> Result<(), Malformed> {
            let mut top = Reader::new(e.value);
            let mut names = top.sequence("subjectAltName")?;
            top.finish("subjectAltName")?;
            while !names.is_empty() {
                let gn = names.read("subjectAltName.GeneralName")?;
                if gn.tag != ctx(4) {
                    continue; // not a directoryName
                }
                let mut dn = Reader::new(gn.content);
                let name = dn.expect(TAG_SEQUENCE, "subjectAltName.directoryName")?;
                dn.finish("subjectAltName.directoryName")?;
                check_name(name.content, "subjectAltName.directoryName")?;
                for (oid, value) in name_attributes(name.content) {
                    let slot = match oid {
                        oid::TCG_TPM_MANUFACTURER => &mut out.manufacturer,
                        oid::TCG_TPM_MODEL => &mut out.model,
                        oid::TCG_TPM_VERSION => &mut out.version,
                        _ => continue,
                    };
                    if slot.is_none() {
                        *slot = Some(value_text(&value));
                    }
                }
            }
            Ok(())
        };
        walk().map_err(|m| self.malformed(m.field, m.reason))?;
        Ok(out)
    }
}

fn role_label(role: Role, subject: Option<&[u8]>) -> String {
    let what = match role {
        Role::Ek => "EK certificate".to_owned(),
        Role::Ca(n) => format!("CA certificate #{n}"),
    };
    match subject {
        Some(s) => format!("{what} \"{}\"", name_text(s)),
        None => what,
    }
}

fn read_alg_id<'a>(r: &mut Reader<'a>, field: &'static str) -> Result<AlgId<'a>, Malformed> {
    let t = r.expect(TAG_SEQUENCE, field)?;
    let mut s = Reader::new(t.content);
    let oid = s.oid(field)?;
    let params = if s.is_empty() {
        None
    } else {
        Some(s.read(field)?)
    };
    s.finish(field)?;
    Ok(AlgId {
        oid,
        params,
        raw: t.raw,
    })
}

/// A BIT STRING without unused bits; its content after the unused-bits octet.
fn read_bit_string<'a>(r: &mut Reader<'a>, field: &'static str) -> Result<&'a [u8], Malformed> {
    let t = r.expect(TAG_BIT_STRING, field)?;
    match t.content.split_first() {
        Some((0, rest)) => Ok(rest),
        Some(_) => Err(Malformed::new(field, "BIT STRING has unused bits")),
        None => Err(Malformed::new(field, "empty BIT STRING")),
    }
}

fn read_spki<'a>(t: &mut Reader<'a>) -> Result<Spki<'a>, Malformed> {
    let field = "subjectPublicKeyInfo";
    let mut s = t.sequence(field)?;
    let alg = read_alg_id(&mut s, "subjectPublicKeyInfo.algorithm")?;
    let key = read_bit_string(&mut s, "subjectPublicKeyInfo.subjectPublicKey")?;
    s.finish(field)?;
    let curve = if alg.oid == oid::EC_PUBLIC_KEY {
        match alg.params {
            Some(p) if p.tag == TAG_OID => Some(p.content),
            _ => {
                return Err(Malformed::new(
                    "subjectPublicKeyInfo.algorithm.parameters",
                    "EC key without a namedCurve",
                ))
            }
        }
    } else {
        None
    };
    Ok(Spki {
        algorithm: alg.oid,
        curve,
        key,
        params: alg.params,
    })
}

/// (modulus, exponent) of a PKCS#1 RSAPublicKey, without leading zero octets.
fn rsa_components(key: &[u8]) -> Result<(&[u8], &[u8]), Malformed> {
    let mut top = Reader::new(key);
    let mut s = top.sequence("RSAPublicKey")?;
    top.finish("RSAPublicKey")?;
    let n = s.expect(TAG_INTEGER, "RSAPublicKey.modulus")?.content;
    let e = s
        .expect(TAG_INTEGER, "RSAPublicKey.publicExponent")?
        .content;
    s.finish("RSAPublicKey")?;
    for (v, field) in [
        (n, "RSAPublicKey.modulus"),
        (e, "RSAPublicKey.publicExponent"),
    ] {
        if v.first().is_none_or(|&b| b & 0x80 != 0) {
            return Err(Malformed::new(field, "not a positive INTEGER"));
        }
    }
    Ok((strip_zeros(n), strip_zeros(e)))
}

fn rsa_modulus_bits(key: &[u8]) -> Result<usize, String> {
    let (n, _) = rsa_components(key).map_err(|m| format!("{}: {}", m.field, m.reason))?;
    Ok(match n.first() {
        Some(&b) => n.len() * 8 - b.leading_zeros() as usize,
        None => 0,
    })
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let skip = b.iter().take_while(|&&x| x == 0).count();
    b.get(skip..).unwrap_or(&[])
}

// ---------------------------------------------------------------------------------------
// Names

/// Checks the structure of a Name's content: SEQUENCE OF SET OF
/// SEQUENCE { OID, ANY }, so that the walkers below see only well-formed input.
fn check_name(content: &[u8], field: &'static str) -> Result<(), Malformed> {
    let mut r = Reader::new(content);
    while !r.is_empty() {
        let rdn = r.expect(TAG_SET, field)?;
        let mut a = Reader::new(rdn.content);
        if a.is_empty() {
            return Err(Malformed::new(field, "empty RelativeDistinguishedName"));
        }
        while !a.is_empty() {
            let mut atv = a.sequence(field)?;
            atv.oid(field)?;
            atv.read(field)?;
            atv.finish(field)?;
        }
    }
    Ok(())
}

/// An attribute value: its tag and content.
struct Value<'a> {
    tag: u8,
    content: &'a [u8],
}

/// Every (type, value) of a Name's content, in order; malformed parts are skipped
/// (names are checked with [`check_name`] at parse time).
fn name_attributes(content: &[u8]) -> Vec<(&[u8], Value<'_>)> {
    name_rdns(content).into_iter().flatten().collect()
}

/// The RDNs of a Name's content, each a list of (type, value).
fn name_rdns(content: &[u8]) -> Vec<Vec<(&[u8], Value<'_>)>> {
    let mut out = Vec::new();
    let mut r = Reader::new(content);
    while let Ok(rdn) = r.expect(TAG_SET, "Name") {
        let mut attrs = Vec::new();
        let mut a = Reader::new(rdn.content);
        while let Ok(mut atv) = a.sequence("Name") {
            if let (Ok(o), Ok(v)) = (atv.oid("Name"), atv.read("Name")) {
                attrs.push((
                    o,
                    Value {
                        tag: v.tag,
                        content: v.content,
                    },
                ));
            }
        }
        out.push(attrs);
    }
    out
}

/// The content of a Name TLV.
fn name_content(name: &[u8]) -> &[u8] {
    Reader::new(name)
        .expect(TAG_SEQUENCE, "Name")
        .map(|t| t.content)
        .unwrap_or(&[])
}

/// Decodes a string-typed value; `None` for other types.
fn value_string(v: &Value<'_>) -> Option<String> {
    match v.tag {
        // UTF8String, PrintableString, IA5String, VisibleString, NumericString
        0x0c | 0x13 | 0x16 | 0x1a | 0x12 => Some(String::from_utf8_lossy(v.content).into_owned()),
        // T61String / TeletexString: treated as Latin-1, as OpenSSL does.
        0x14 => Some(v.content.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16BE.
        0x1e => {
            let units: Vec<u16> = v
                .content
                .chunks(2)
                .map(|c| match c {
                    [a, b] => u16::from_be_bytes([*a, *b]),
                    _ => 0xfffd,
                })
                .collect();
            Some(String::from_utf16_lossy(&units))
        }
        // UniversalString: UTF-32BE.
        0x1c => Some(
            v.content
                .chunks(4)
                .map(|c| match c {
                    [a, b, x, y] => {
                        char::from_u32(u32::from_be_bytes([*a, *b, *x, *y])).unwrap_or('\u{fffd}')
                    }
                    _ => '\u{fffd}',
                })
                .collect(),
        ),
        _ => None,
    }
}

/// A value for display: the string with control characters escaped, or `#hex`.
fn value_text(v: &Value<'_>) -> String {
    match value_string(v) {
        Some(s) => s
            .chars()
            .flat_map(|c| {
                if c.is_control() {
                    c.escape_default().collect::<Vec<_>>()
                } else {
                    vec![c]
                }
            })
            .collect(),
        None => format!("#{}", hex::encode(v.content)),
    }
}

fn attribute_short_name(o: &[u8]) -> Option<&'static str> {
    Some(match o {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x05] => "serialNumber",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x09] => "street",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        [0x55, 0x04, 0x61] => "organizationIdentifier",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        _ => return None,
    })
}

/// A Name TLV as text: `CN=x, O=y` in encoded order, `+` between the attributes of a
/// multi-valued RDN, unknown types as dotted OIDs; `(empty name)` if it has none.
fn name_text(name: &[u8]) -> String {
    let rdns = name_rdns(name_content(name));
    if rdns.iter().all(|r| r.is_empty()) {
        return "(empty name)".into();
    }
    rdns.iter()
        .map(|rdn| {
            rdn.iter()
                .map(|(o, v)| {
                    let ty = attribute_short_name(o).map_or_else(|| oid_text(o), str::to_owned);
                    format!("{ty}={}", value_text(v))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One attribute in comparable form.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum CanonicalValue {
    /// A string, ASCII case-folded, white space trimmed and collapsed.
    Text(String),
    /// Any other type: tag and content octets.
    Other(u8, Vec<u8>),
}

/// A Name TLV in comparable form (RFC 5280 §7.1, as OpenSSL canonicalises names):
/// RDN by RDN, the attributes of each sorted.
fn canonical_name(name: &[u8]) -> Vec<Vec<(Vec<u8>, CanonicalValue)>> {
    name_rdns(name_content(name))
        .into_iter()
        .map(|rdn| {
            let mut attrs: Vec<_> = rdn
                .into_iter()
                .map(|(o, v)| {
                    let value = match value_string(&v) {
                        Some(s) => CanonicalValue::Text(
                            s.split_whitespace()
                                .collect::<Vec<_>>()
                                .join(" ")
                                .to_ascii_lowercase(),
                        ),
                        None => CanonicalValue::Other(v.tag, v.content.to_vec()),
                    };
                    (o.to_vec(), value)
                })
                .collect();
            attrs.sort();
            attrs
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Time

/// UTCTime (`YYMMDDhhmmssZ`, 1950–2049) or GeneralizedTime (`YYYYMMDDhhmmssZ`) as
/// seconds since 1970-01-01 UTC.
fn read_time(r: &mut Reader<'_>, field: &'static str) -> Result<i64, Malformed> {
    let t = r.read(field)?;
    let bad = |why: &str| {
        Malformed::new(
            field,
            format!("{why}: {:?}", String::from_utf8_lossy(t.content)),
        )
    };
    let (year, rest) = match t.tag {
        TAG_UTC_TIME => {
            if t.content.len() != 13 {
                return Err(bad("UTCTime is not YYMMDDhhmmssZ"));
            }
            let (yy, rest) = t.content.split_at(2);
            let yy = digits(yy).ok_or_else(|| bad("UTCTime has non-digits"))?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, rest)
        }
        TAG_GENERALIZED_TIME => {
            if t.content.len() != 15 {
                return Err(bad("GeneralizedTime is not YYYYMMDDhhmmssZ"));
            }
            let (yyyy, rest) = t.content.split_at(4);
            (
                digits(yyyy).ok_or_else(|| bad("GeneralizedTime has non-digits"))?,
                rest,
            )
        }
        tag => {
            return Err(Malformed::new(
                field,
                format!("tag {tag:#04x} is neither UTCTime nor GeneralizedTime"),
            ))
        }
    };
    // rest = MMDDhhmmssZ
    let (body, z) = rest.split_at(rest.len().saturating_sub(1));
    if z != b"Z" {
        return Err(bad("time is not in UTC (no trailing Z)"));
    }
    let mut parts = body.chunks(2).map(digits);
    let mut next = || {
        parts
            .next()
            .flatten()
            .ok_or_else(|| bad("time has non-digits"))
    };
    let (month, day, hour, minute, second) = (next()?, next()?, next()?, next()?, next()?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(bad("time is not a valid date and time"));
    }
    Ok(days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second)
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |a, &d| a * 10 + i64::from(d - b'0')))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD hh:mm:ss UTC`.
fn time_text(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

// ---------------------------------------------------------------------------------------
// DER and PEM

const TAG_BOOLEAN: u8 = 0x01;
const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_NULL: u8 = 0x05;
const TAG_OID: u8 = 0x06;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;

/// `[n]` context-specific, constructed.
const fn ctx(n: u8) -> u8 {
    0xa0 | n
}

/// A parse failure inside one certificate.
struct Malformed {
    field: &'static str,
    reason: String,
}

impl Malformed {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Malformed {
            field,
            reason: reason.into(),
        }
    }
}

/// One TLV.
#[derive(Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    raw: &'a [u8],
}

/// Sequential reader over the TLVs of one content. Never panics.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.data.first().copied()
    }

    /// The next TLV, whatever its tag.
    fn read(&mut self, field: &'static str) -> Result<Tlv<'a>, Malformed> {
        let data = self.data;
        let (&tag, rest) = data
            .split_first()
            .ok_or_else(|| Malformed::new(field, "missing (end of data)"))?;
        if tag & 0x1f == 0x1f {
            return Err(Malformed::new(field, "multi-octet tags are not supported"));
        }
        let (&l0, rest) = rest
            .split_first()
            .ok_or_else(|| Malformed::new(field, "truncated length"))?;
        let (len, rest) = if l0 < 0x80 {
            (usize::from(l0), rest)
        } else if l0 == 0x80 {
            return Err(Malformed::new(field, "indefinite length (BER) is not DER"));
        } else {
            let n = usize::from(l0 & 0x7f);
            if n > 4 {
                return Err(Malformed::new(
                    field,
                    format!("{n}-octet length is too long"),
                ));
            }
            if rest.len() < n {
                return Err(Malformed::new(field, "truncated length"));
            }
            let (len_octets, rest) = rest.split_at(n);
            let len = len_octets
                .iter()
                .fold(0usize, |a, &b| (a << 8) | usize::from(b));
            (len, rest)
        };
        if rest.len() < len {
            return Err(Malformed::new(
                field,
                format!(
                    "length {len} runs past the end of the data ({} octets left)",
                    rest.len()
                ),
            ));
        }
        let (content, after) = rest.split_at(len);
        let raw = data.get(..data.len() - after.len()).unwrap_or(data);
        self.data = after;
        Ok(Tlv { tag, content, raw })
    }

    /// The next TLV, which must have tag `tag`.
    fn expect(&mut self, tag: u8, field: &'static str) -> Result<Tlv<'a>, Malformed> {
        match self.peek_tag() {
            Some(t) if t == tag => self.read(field),
            Some(t) => Err(Malformed::new(
                field,
                format!("expected tag {tag:#04x}, found {t:#04x}"),
            )),
            None => Err(Malformed::new(field, "missing (end of data)")),
        }
    }

    /// The next TLV if it has tag `tag`.
    fn optional(&mut self, tag: u8, field: &'static str) -> Result<Option<Tlv<'a>>, Malformed> {
        if self.peek_tag() == Some(tag) {
            self.read(field).map(Some)
        } else {
            Ok(None)
        }
    }

    fn oid(&mut self, field: &'static str) -> Result<&'a [u8], Malformed> {
        let t = self.expect(TAG_OID, field)?;
        if t.content.is_empty() {
            return Err(Malformed::new(field, "empty OBJECT IDENTIFIER"));
        }
        Ok(t.content)
    }

    fn sequence(&mut self, field: &'static str) -> Result<Reader<'a>, Malformed> {
        Ok(Reader::new(self.expect(TAG_SEQUENCE, field)?.content))
    }

    /// A non-negative INTEGER of at most 8 octets.
    fn small_uint(&mut self, field: &'static str) -> Result<u64, Malformed> {
        let t = self.expect(TAG_INTEGER, field)?;
        let v = strip_zeros(t.content);
        if t.content.first().is_none_or(|&b| b & 0x80 != 0) || v.len() > 8 {
            return Err(Malformed::new(field, "not a small non-negative INTEGER"));
        }
        Ok(v.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)))
    }

    fn finish(&self, field: &'static str) -> Result<(), Malformed> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Malformed::new(
                field,
                format!("{} unexpected trailing octets", self.data.len()),
            ))
        }
    }
}

/// Dotted text of an OID's content octets. Never panics.
fn oid_text(content: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut cur: u64 = 0;
    for &b in content {
        if cur > (u64::MAX >> 8) {
            return format!("<invalid OID {}>", hex::encode(content));
        }
        cur = (cur << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (cur / 40).min(2);
                arcs.push(first);
                arcs.push(cur - first * 40);
            } else {
                arcs.push(cur);
            }
            cur = 0;
        }
    }
    if arcs.is_empty() || content.last().is_some_and(|b| b & 0x80 != 0) {
        return format!("<invalid OID {}>", hex::encode(content));
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

fn b64_value(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Standard base64 with padding; white space is ignored.
fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    let chars: Vec<u8> = input
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if chars.len() % 4 != 0 {
        return None;
    }
    let quads = chars.len() / 4;
    let mut out = Vec::with_capacity(quads * 3);
    for (i, q) in chars.chunks(4).enumerate() {
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != quads) {
            return None;
        }
        let mut acc = 0u32;
        for &c in q.get(..4 - pad)? {
            acc = (acc << 6) | b64_value(c)?;
        }
        acc <<= 6 * pad as u32;
        out.extend_from_slice(acc.to_be_bytes().get(1..4 - pad)?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_and_print() {
        let t = |tag: u8, s: &str| {
            let mut der = vec![tag, s.len() as u8];
            der.extend_from_slice(s.as_bytes());
            read_time(&mut Reader::new(&der), "t")
        };
        assert_eq!(t(TAG_UTC_TIME, "700101000000Z").ok(), Some(0));
        assert_eq!(t(TAG_UTC_TIME, "491231235959Z").ok(), Some(2_524_607_999));
        assert_eq!(t(TAG_UTC_TIME, "500101000000Z").ok(), Some(-631_152_000));
        assert_eq!(
            t(TAG_GENERALIZED_TIME, "99991231235959Z").ok(),
            Some(253_402_300_799)
        );
        assert_eq!(
            t(TAG_GENERALIZED_TIME, "20240229120000Z").ok(),
            Some(1_709_208_000)
        );
        for bad in [
            "20230229120000Z",
            "20241301000000Z",
            "20240101240000Z",
            "20240101000060Z",
            "2024010100000Z",
            "20240101000000+",
            "2024010100000+Z",
            "202401010000-0Z",
        ] {
            assert!(t(TAG_GENERALIZED_TIME, bad).is_err(), "{bad}");
        }
        assert!(t(TAG_UTC_TIME, "7001010000Z").is_err());
        assert!(t(TAG_OCTET_STRING, "700101000000Z").is_err());
        assert_eq!(time_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time_text(253_402_300_799), "9999-12-31 23:59:59 UTC");
        assert_eq!(time_text(1_709_208_000), "2024-02-29 12:00:00 UTC");
        assert_eq!(time_text(-1), "1969-12-31 23:59:59 UTC");
        // Extremes print without overflow.
        let _ = time_text(i64::MAX);
        let _ = time_text(i64::MIN);
    }

    fn name(rdns: &[&[(&[u8], u8, &str)]]) -> Vec<u8> {
        let mut seq = Vec::new();
        for rdn in rdns {
            let mut set = Vec::new();
            for (o, tag, v) in *rdn {
                let mut atv = vec![TAG_OID, o.len() as u8];
                atv.extend_from_slice(o);
                atv.extend_from_slice(&[*tag, v.len() as u8]);
                atv.extend_from_slice(v.as_bytes());
                set.extend_from_slice(&[TAG_SEQUENCE, atv.len() as u8]);
                set.extend_from_slice(&atv);
            }
            seq.extend_from_slice(&[TAG_SET, set.len() as u8]);
            seq.extend_from_slice(&set);
        }
        let mut out = vec![TAG_SEQUENCE, seq.len() as u8];
        out.extend_from_slice(&seq);
        out
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const O: &[u8] = &[0x55, 0x04, 0x0a];

    #[test]
    fn names_compare_canonically_and_print() {
        let a = name(&[&[(O, 0x13, "Acme  Corp")], &[(CN, 0x0c, "TPM CA")]]);
        let b = name(&[&[(O, 0x0c, " acme corp ")], &[(CN, 0x13, "tpm ca")]]);
        let c = name(&[&[(CN, 0x13, "tpm ca")], &[(O, 0x0c, "acme corp")]]);
        assert_eq!(canonical_name(&a), canonical_name(&b));
        assert_ne!(canonical_name(&a), canonical_name(&c), "RDN order matters");
        let m1 = name(&[&[(O, 0x0c, "x"), (CN, 0x0c, "y")]]);
        let m2 = name(&[&[(CN, 0x0c, "Y"), (O, 0x0c, "x")]]);
        assert_eq!(canonical_name(&m1), canonical_name(&m2), "RDN is a set");
        assert_eq!(name_text(&a), "O=Acme  Corp, CN=TPM CA");
        assert_eq!(name_text(&m1), "O=x+CN=y");
        assert_eq!(name_text(&[TAG_SEQUENCE, 0]), "(empty name)");
        let tcg = name(&[&[(oid::TCG_TPM_MODEL, 0x0c, "sw\ntpm")]]);
        assert_eq!(name_text(&tcg), "2.23.133.2.2=sw\\ntpm");
    }

    #[test]
    fn oids_print() {
        assert_eq!(oid_text(oid::TCG_KP_EK_CERTIFICATE), "2.23.133.8.1");
        assert_eq!(oid_text(oid::SHA1_WITH_RSA), "1.2.840.113549.1.1.5");
        assert_eq!(oid_text(oid::P384), "1.3.132.0.34");
        assert!(oid_text(&[0x81]).starts_with("<invalid"));
        assert!(oid_text(&[0xff; 20]).starts_with("<invalid"));
    }

    #[test]
    fn pem_bundles() {
        let p = b"junk\n-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n\
                  -----BEGIN PRIVATE KEY-----\nZm9v\n-----END PRIVATE KEY-----\n\
                  -----BEGIN CERTIFICATE-----\r\nMAMCAQE=\r\n-----END CERTIFICATE-----\r\n";
        assert_eq!(
            parse_pem_bundle(p).unwrap(),
            vec![vec![0x30, 0], vec![0x30, 3, 2, 1, 1]]
        );
        let e = parse_pem_bundle(b"-----BEGIN CERTIFICATE-----\nMAA=\n").unwrap_err();
        assert!(
            e.to_string().contains("no \"-----END CERTIFICATE-----\""),
            "{e}"
        );
        let e = parse_pem_bundle(b"-----BEGIN CERTIFICATE-----\nMA=A\n-----END CERTIFICATE-----")
            .unwrap_err();
        assert!(e.to_string().contains("not valid base64"), "{e}");
        let e = parse_pem_bundle(b"-----BEGIN X-----\nMAA=\n-----END X-----").unwrap_err();
        assert!(e.to_string().contains("found X"), "{e}");
        let e = parse_pem_bundle(&[0x30, 0x82, 0xff, 0xff]).unwrap_err();
        assert!(e.to_string().contains("DER"), "{e}");
        assert!(parse_pem_bundle(b"").is_err());
        for (enc, dec) in [("", ""), ("Zg==", "f"), ("Zm8=", "fo"), ("Zm9v", "foo")] {
            assert_eq!(base64_decode(enc.as_bytes()).unwrap(), dec.as_bytes());
        }
        for bad in ["Zg=", "Z===", "Zg==Zm9v", "Zm9!"] {
            assert!(base64_decode(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn der_reader_refuses_bad_encodings() {
        for bad in [
            &[0x30, 0x80, 0, 0][..],
            &[0x30, 0x81],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x1f, 0x01, 0x00],
            &[0x30, 0x05, 0x00],
            &[0x30],
            &[],
        ] {
            assert!(Reader::new(bad).read("x").is_err(), "{bad:02x?}");
        }
        // Non-minimal length octets are tolerated.
        let t = Reader::new(&[0x04, 0x81, 0x01, 0xaa])
            .read("x")
            .ok()
            .unwrap();
        assert_eq!(t.content, &[0xaa]);
        assert_eq!(t.raw.len(), 4);
    }

    #[test]
    fn nv_padding_is_dropped_and_other_trailing_bytes_refused() {
        let cert = [0x30, 0x03, 0x02, 0x01, 0x01];
        let mut padded = cert.to_vec();
        padded.extend_from_slice(&[0; 7]);
        assert_eq!(strip_nv_padding(&padded), &cert);
        padded.truncate(5);
        padded.extend_from_slice(&[0xff; 3]);
        assert_eq!(strip_nv_padding(&padded), &cert);
        padded.push(0);
        assert_eq!(strip_nv_padding(&padded), &padded[..]);
        let e = verify_ek_certificate(&padded, &[cert.to_vec()], 0).unwrap_err();
        assert!(e.to_string().contains("trailing"), "{e}");
    }

    // A fixed chain made once with Python `cryptography` 48 (and checked with
    // `openssl verify -CAfile root.pem ek.pem`): an ECDSA P-256 root
    // "O=Example TPM Vendor, CN=Example EK Root CA" (cA, keyCertSign|cRLSign) that signed
    // (ecdsa-with-SHA256) an RSA-2048 EK certificate with an empty subject, critical
    // basicConstraints CA:FALSE, critical keyUsage keyEncipherment, critical SAN
    // directoryName 2.23.133.2.1=id:49465800 / .2=SLB9670 / .3=id:000d0003, EKU
    // 2.23.133.8.1; both valid 2020-01-01 00:00:00 to 9999-12-31 23:59:59 UTC.
    const ROOT_PEM: &str = r#"-----BEGIN CERTIFICATE-----
MIIBiDCCAS6gAwIBAgIBATAKBggqhkjOPQQDAjA6MRswGQYDVQQKDBJFeGFtcGxl
IFRQTSBWZW5kb3IxGzAZBgNVBAMMEkV4YW1wbGUgRUsgUm9vdCBDQTAgFw0yMDAx
MDEwMDAwMDBaGA85OTk5MTIzMTIzNTk1OVowOjEbMBkGA1UECgwSRXhhbXBsZSBU
UE0gVmVuZG9yMRswGQYDVQQDDBJFeGFtcGxlIEVLIFJvb3QgQ0EwWTATBgcqhkjO
PQIBBggqhkjOPQMBBwNCAATT4qbHYZw5bNQVLOuD6S93z0M/EFvhpzzvEtJ7Bq1B
ti36ISpmKjLw1yQrHVjsVWbP4xlI3GETH/U++Rha4WqVoyMwITAPBgNVHRMBAf8E
BTADAQH/MA4GA1UdDwEB/wQEAwIBBjAKBggqhkjOPQQDAgNIADBFAiB7/6Vz5wTd
AmqE4qjP3Zd1U9a/vUu0g+hYtjiQ/zwHKwIhANn2Uq7KZaXJCEf5+4KeROjBLs+p
Ons1h2hRgP2koTJP
-----END CERTIFICATE-----
"#;
    const EK_PEM: &str = r#"-----BEGIN CERTIFICATE-----
MIIChDCCAiqgAwIBAgIFEjRWeJAwCgYIKoZIzj0EAwIwOjEbMBkGA1UECgwSRXhh
bXBsZSBUUE0gVmVuZG9yMRswGQYDVQQDDBJFeGFtcGxlIEVLIFJvb3QgQ0EwIBcN
MjAwMTAxMDAwMDAwWhgPOTk5OTEyMzEyMzU5NTlaMAAwggEiMA0GCSqGSIb3DQEB
AQUAA4IBDwAwggEKAoIBAQCwYCKcJRp1h3GXGBjio1rNer+jwCVhnALxlpVjlQ8P
6YJ3gry13/joxZZe7ISFehrW4X1/YFq1+EUlUwmEOART33ioijpG6sdd/ib9F8tO
IGS0tsny12cmkwAcTcn2aGVaGm5C4+LHopFl1T4VrxotoPG70wMcjdaNctdhYx4y
b/zQhLzEnvvPHZ3sRJv/AKZUCi/yN+m8LGMeMO0dlKMO6EbNpbWtiwe2+eWdfbR4
fRqa0J7rM3bL88GgFuZX6eCS0I1Lo8//g13NIPnJz5U/E+EXhMZ97cUFSzA5EJBT
hYCptuxy647BG8TmrlN3fsCZ50+4ybd2FX38lfM8sybxAgMBAAGjgYkwgYYwDAYD
VR0TAQH/BAIwADAOBgNVHQ8BAf8EBAMCBSAwVAYDVR0RAQH/BEowSKRGMEQxFjAU
BgVngQUCAQwLaWQ6NDk0NjU4MDAxEjAQBgVngQUCAgwHU0xCOTY3MDEWMBQGBWeB
BQIDDAtpZDowMDBkMDAwMzAQBgNVHSUECTAHBgVngQUIATAKBggqhkjOPQQDAgNI
ADBFAiBpSaptP3cRmS7mV3PipQTwm9Gj2buujBKXLy6hYrElVAIhANBiBEtwZVvS
zLQUgl8ToYkfYemT9NPjqr/lYJKuKZM7
-----END CERTIFICATE-----
"#;
    const EK_MODULUS: &str = "b060229c251a758771971818e2a35acd7abfa3c025619c02f1969563950f0fe9827782bcb5dff8e8c5965eec84857a1ad6e17d7f605ab5f84525530984380453df78a88a3a46eac75dfe26fd17cb4e2064b4b6c9f2d7672693001c4dc9f668655a1a6e42e3e2c7a29165d53e15af1a2da0f1bbd3031c8dd68d72d761631e326ffcd084bcc49efbcf1d9dec449bff00a6540a2ff237e9bc2c631e30ed1d94a30ee846cda5b5ad8b07b6f9e59d7db4787d1a9ad09eeb3376cbf3c1a016e657e9e092d08d4ba3cfff835dcd20f9c9cf953f13e11784c67dedc5054b30391090538580a9b6ec72eb8ec11bc4e6ae53777ec099e74fb8c9b776157dfc95f33cb326f1";
    /// 2024-06-01 00:00:00 UTC.
    const NOW: i64 = 1_717_200_000;

    fn fixture() -> (Vec<u8>, Vec<Vec<u8>>) {
        let ek = parse_pem_bundle(EK_PEM.as_bytes()).unwrap().remove(0);
        (ek, parse_pem_bundle(ROOT_PEM.as_bytes()).unwrap())
    }

    #[test]
    fn fixture_chain_verifies() {
        let (ek, roots) = fixture();
        let got = verify_ek_certificate(&ek, &roots, NOW).unwrap();
        assert_eq!(got.der, ek);
        assert_eq!(hex::encode(&got.rsa_modulus), EK_MODULUS);
        assert_eq!(got.rsa_exponent, 65537);
        assert_eq!(got.manufacturer.as_deref(), Some("id:49465800"));
        assert_eq!(got.model.as_deref(), Some("SLB9670"));
        assert_eq!(got.version.as_deref(), Some("id:000d0003"));
        assert_eq!(
            got.chain,
            [
                "(empty name)",
                "O=Example TPM Vendor, CN=Example EK Root CA"
            ]
        );
        // NV padding after the certificate.
        let mut padded = ek.clone();
        padded.extend_from_slice(&[0xff; 100]);
        assert_eq!(verify_ek_certificate(&padded, &roots, NOW).unwrap().der, ek);
        // Validity bounds are inclusive.
        verify_ek_certificate(&ek, &roots, 1_577_836_800).unwrap();
        verify_ek_certificate(&ek, &roots, 253_402_300_799).unwrap();
    }

    #[test]
    fn fixture_refusals() {
        let (ek, roots) = fixture();
        assert_eq!(
            verify_ek_certificate(&ek, &[], NOW),
            Err(EkCertError::NoTrustAnchors)
        );
        let e = verify_ek_certificate(&ek, &roots, 1_577_836_799).unwrap_err();
        assert!(matches!(e, EkCertError::NotYetValid { .. }), "{e}");
        assert!(e.to_string().contains("2020-01-01 00:00:00 UTC"), "{e}");
        let e = verify_ek_certificate(&ek, &roots, 253_402_300_800).unwrap_err();
        assert!(matches!(e, EkCertError::Expired { .. }), "{e}");
        assert!(e.to_string().contains("9999-12-31 23:59:59 UTC"), "{e}");
        // The root as its own EK: not RSA.
        let e = verify_ek_certificate(&roots[0], &roots, NOW).unwrap_err();
        assert!(matches!(e, EkCertError::NotRsa { .. }), "{e}");
        assert!(e.to_string().contains("EC P-256"), "{e}");
        // The EK certificate as the only trust anchor: its issuer is missing.
        let e = verify_ek_certificate(&ek, std::slice::from_ref(&ek), NOW).unwrap_err();
        assert_eq!(
            e,
            EkCertError::MissingIssuer {
                cert: "EK certificate \"(empty name)\"".into(),
                issuer: "O=Example TPM Vendor, CN=Example EK Root CA".into(),
            }
        );
        // A signature bit flipped (the last octet is inside the ECDSA s value).
        let mut bad = ek.clone();
        if let Some(b) = bad.last_mut() {
            *b ^= 1;
        }
        let e = verify_ek_certificate(&bad, &roots, NOW).unwrap_err();
        assert!(matches!(e, EkCertError::BadSignature { .. }), "{e}");
        // A malformed CA file entry is named by its position.
        let e = verify_ek_certificate(&ek, &[roots[0].clone(), vec![0x30, 0x01]], NOW).unwrap_err();
        assert!(e.to_string().starts_with("CA certificate #2"), "{e}");
    }

    fn mutate(base: &[u8], edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
        let mut m = base.to_vec();
        for &(at, x) in edits {
            let n = m.len();
            if let Some(b) = m.get_mut(at % n.max(1)) {
                *b ^= x;
            }
        }
        m.truncate(m.len().saturating_sub(cut));
        m
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]

        #[test]
        fn random_bytes_never_panic(
            a in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            b in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            now in proptest::num::i64::ANY,
        ) {
            let _ = verify_ek_certificate(&a, std::slice::from_ref(&b), now);
            let _ = verify_ek_certificate(&a, &[], now);
            let _ = parse_pem_bundle(&a);
            let _ = parse_pem_bundle(String::from_utf8_lossy(&b).as_bytes());
        }

        /// Mutated real certificates (bit flips and truncation, of the EK certificate
        /// and of the CA) reach deep into the parser and the chain checks.
        #[test]
        fn mutated_certificates_never_panic(
            ek_edits in proptest::collection::vec((proptest::num::usize::ANY, 1u8..=255), 0..4),
            ca_edits in proptest::collection::vec((proptest::num::usize::ANY, 1u8..=255), 0..4),
            ek_cut in 0usize..8,
            ca_cut in 0usize..8,
            now in 1_577_836_800i64..4_000_000_000,
        ) {
            let (ek, roots) = fixture();
            let ek_m = mutate(&ek, &ek_edits, ek_cut);
            let ca_m = mutate(&roots[0], &ca_edits, ca_cut);
            let r = verify_ek_certificate(&ek_m, std::slice::from_ref(&ca_m), now);
            if ek_m == ek && ca_m == roots[0] {
                proptest::prop_assert!(r.is_ok());
            }
            let _ = verify_ek_certificate(&ca_m, &[ek_m.clone(), ca_m.clone()], now);
            let _ = verify_ek_certificate(&ek_m, std::slice::from_ref(&ek_m), now);
        }
    }
}
