//! X.509 certificates: just enough parsing to sign with and verify against them.

use std::ops::Range;

use crate::der::{self, oid, Reader, TAG_BIT_STRING, TAG_INTEGER, TAG_SEQUENCE, TAG_SET};
use crate::{pem, Error, Result};

/// An X.509 certificate. The DER encoding is kept verbatim; the fields Authenticode
/// needs (issuer, serial number, subject, public key) are located once at parse time.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    der: Vec<u8>,
    serial: Range<usize>,
    issuer: Range<usize>,
    subject: Range<usize>,
    spki: Range<usize>,
    key_algorithm: Vec<u8>,
    public_key: Range<usize>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("subject_cn", &self.subject_common_name())
            .field("serial", &der::hex(self.serial()))
            .finish()
    }
}

const WHAT: &str = "certificate";

fn range_of(outer: &[u8], inner: &[u8]) -> Range<usize> {
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    start..start + inner.len()
}

impl Certificate {
    /// Parses the first `CERTIFICATE` block of a PEM file.
    pub fn from_pem(pem: &[u8]) -> Result<Certificate> {
        let blocks = pem::parse(pem, WHAT)?;
        let b = blocks
            .iter()
            .find(|b| b.label == "CERTIFICATE" || b.label == "X509 CERTIFICATE")
            .ok_or_else(|| Error::Pem {
                what: WHAT,
                reason: format!(
                    "no CERTIFICATE block (found {})",
                    blocks
                        .iter()
                        .map(|b| b.label.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        Certificate::from_der(&b.der)
    }

    /// Parses a DER-encoded certificate.
    pub fn from_der(der: &[u8]) -> Result<Certificate> {
        let mut top = Reader::new(der, WHAT);
        let cert = top.expect(TAG_SEQUENCE, "Certificate")?;
        top.finish("Certificate")?;
        let mut c = top.inner(&cert);
        let tbs = c.expect(TAG_SEQUENCE, "tbsCertificate")?;
        c.sequence("signatureAlgorithm")?;
        c.expect(TAG_BIT_STRING, "signatureValue")?;
        c.finish("Certificate")?;
        let mut t = c.inner(&tbs);
        t.optional(der::ctx(0), "tbsCertificate.version")?;
        let serial = t.expect(TAG_INTEGER, "tbsCertificate.serialNumber")?;
        if serial.content.is_empty() {
            return Err(Error::Certificate("serialNumber is empty".into()));
        }
        t.sequence("tbsCertificate.signature")?;
        let issuer = t.expect(TAG_SEQUENCE, "tbsCertificate.issuer")?;
        t.sequence("tbsCertificate.validity")?;
        let subject = t.expect(TAG_SEQUENCE, "tbsCertificate.subject")?;
        let spki = t.expect(TAG_SEQUENCE, "tbsCertificate.subjectPublicKeyInfo")?;
        let mut s = t.inner(&spki);
        let mut alg = s.sequence("subjectPublicKeyInfo.algorithm")?;
        let key_algorithm = alg
            .oid("subjectPublicKeyInfo.algorithm.algorithm")?
            .to_vec();
        let bits = s.expect(TAG_BIT_STRING, "subjectPublicKeyInfo.subjectPublicKey")?;
        s.finish("subjectPublicKeyInfo")?;
        if bits.content.first() != Some(&0) {
            return Err(Error::Certificate(
                "subjectPublicKey BIT STRING has unused bits".into(),
            ));
        }
        // Validate the name structure now so that accessors cannot fail later.
        for (name, field) in [(&issuer, "issuer"), (&subject, "subject")] {
            let mut r = t.inner(name);
            while !r.is_empty() {
                let rdn = r.expect(TAG_SET, field)?;
                let mut a = r.inner(&rdn);
                while !a.is_empty() {
                    let mut atv = a.sequence(field)?;
                    atv.oid(field)?;
                    atv.any(field)?;
                    atv.finish(field)?;
                }
            }
        }
        let cert = Certificate {
            der: der.to_vec(),
            serial: range_of(der, serial.content),
            issuer: range_of(der, issuer.raw),
            subject: range_of(der, subject.raw),
            spki: range_of(der, spki.raw),
            key_algorithm,
            public_key: range_of(der, &bits.content[1..]),
        };
        if cert.key_algorithm == oid::RSA_ENCRYPTION {
            rsa_components(cert.public_key_bits()).map_err(|e| {
                Error::Certificate(format!("RSA subjectPublicKey is malformed: {e}"))
            })?;
        }
        Ok(cert)
    }

    /// The DER encoding, exactly as given.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Content octets of the serial number INTEGER (big-endian, as encoded).
    pub fn serial(&self) -> &[u8] {
        &self.der[self.serial.clone()]
    }

    /// The issuer Name (complete DER TLV).
    pub fn issuer_der(&self) -> &[u8] {
        &self.der[self.issuer.clone()]
    }

    /// The subject Name (complete DER TLV).
    pub fn subject_der(&self) -> &[u8] {
        &self.der[self.subject.clone()]
    }

    /// The SubjectPublicKeyInfo (complete DER TLV).
    pub fn spki_der(&self) -> &[u8] {
        &self.der[self.spki.clone()]
    }

    /// The subject's common name (first CN attribute), if any.
    pub fn subject_common_name(&self) -> Option<String> {
        name_common_name(self.subject_der())
    }

    /// The issuer's common name (first CN attribute), if any.
    pub fn issuer_common_name(&self) -> Option<String> {
        name_common_name(self.issuer_der())
    }

    /// True if the subject public key is an RSA key.
    pub fn is_rsa(&self) -> bool {
        self.key_algorithm == oid::RSA_ENCRYPTION
    }

    /// Dotted OID of the public key algorithm.
    pub fn key_algorithm(&self) -> String {
        der::oid_text(&self.key_algorithm)
    }

    /// The PKCS#1 `RSAPublicKey` DER of an RSA certificate.
    pub fn rsa_public_key_der(&self) -> Result<&[u8]> {
        if !self.is_rsa() {
            return Err(Error::Certificate(format!(
                "public key algorithm is {} ({}), not rsaEncryption; UEFI Secure Boot needs RSA",
                self.key_algorithm(),
                key_algorithm_name(&self.key_algorithm)
            )));
        }
        Ok(self.public_key_bits())
    }

    fn public_key_bits(&self) -> &[u8] {
        &self.der[self.public_key.clone()]
    }

    /// Modulus and exponent (without sign padding) of an RSA certificate.
    pub(crate) fn rsa_components(&self) -> Result<(&[u8], &[u8])> {
        rsa_components(self.rsa_public_key_der()?)
    }
}

/// Parses a PKCS#1 `RSAPublicKey` into (modulus, exponent) without sign padding.
pub(crate) fn rsa_components(der_key: &[u8]) -> Result<(&[u8], &[u8])> {
    let mut r = Reader::new(der_key, "RSA public key");
    let mut s = r.sequence("RSAPublicKey")?;
    r.finish("RSAPublicKey")?;
    let n = s.expect(TAG_INTEGER, "RSAPublicKey.modulus")?;
    let e = s.expect(TAG_INTEGER, "RSAPublicKey.publicExponent")?;
    s.finish("RSAPublicKey")?;
    Ok((der::strip_int(n.content), der::strip_int(e.content)))
}

/// Human name of a key algorithm OID, for messages.
pub(crate) fn key_algorithm_name(o: &[u8]) -> &'static str {
    match o {
        oid::RSA_ENCRYPTION => "RSA",
        [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01] => "EC",
        [0x2b, 0x65, 0x70] => "Ed25519",
        [0x2b, 0x65, 0x71] => "Ed448",
        [0x2b, 0x65, 0x6e] => "X25519",
        [0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01] => "DSA",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a] => "RSASSA-PSS",
        _ => "unknown algorithm",
    }
}

pub(crate) fn name_common_name(name: &[u8]) -> Option<String> {
    let mut top = Reader::new(name, WHAT);
    let mut r = top.sequence("Name").ok()?;
    while !r.is_empty() {
        let rdn = r.expect(TAG_SET, "RDN").ok()?;
        let mut a = r.inner(&rdn);
        while !a.is_empty() {
            let mut atv = a.sequence("AttributeTypeAndValue").ok()?;
            let o = atv.oid("type").ok()?;
            let v = atv.any("value").ok()?;
            if o == oid::COMMON_NAME {
                return Some(match v.tag {
                    // BMPString
                    0x1e => {
                        let u: Vec<u16> = v
                            .content
                            .chunks(2)
                            .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                            .collect();
                        String::from_utf16_lossy(&u)
                    }
                    _ => String::from_utf8_lossy(v.content).into_owned(),
                });
            }
        }
    }
    None
}
