//! Ed25519 signing keys for manifests.
//!
//! * Private key: PKCS#8 (RFC 5958) wrapped in PKCS#5 PBES2 (scrypt + AES-256-CBC),
//!   PEM label `ENCRYPTED PRIVATE KEY` — the format `openssl pkey` reads.
//! * Public key: SubjectPublicKeyInfo (RFC 8410), PEM label `PUBLIC KEY`.
//! * Fingerprint: SHA-256 of the public key's DER SubjectPublicKeyInfo, so
//!   `openssl pkey -pubin -in K.pub -outform DER | sha256sum` gives the same hex.
//! * Signatures: raw 64-byte Ed25519 (RFC 8032) over the exact bytes signed, so
//!   `openssl pkeyutl -verify -pubin -inkey K.pub -rawin -in FILE -sigfile FILE.sig`
//!   checks them too.
//!
//! Decrypted key material lives only in [`zeroize::Zeroizing`] buffers and
//! inside aws-lc's key object (which clears it on drop).

use std::fmt;

use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use pkcs8::der::pem::LineEnding;
use pkcs8::{EncryptedPrivateKeyInfoRef, PrivateKeyInfoRef};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410 §4): SEQUENCE {
/// SEQUENCE { OID 1.3.101.112 }, BIT STRING (33 bytes, 0 unused bits) }.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// OID 1.3.101.112 (id-Ed25519), DER-encoded content bytes.
const ED25519_OID: [u8; 3] = [0x2b, 0x65, 0x70];

/// Length of a signature.
pub const SIGNATURE_LEN: usize = 64;

/// Errors about keys and signatures.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not PEM at all, or a PEM block of another kind.
    #[error("{what}: not a PEM {expected} block ({detail})")]
    NotPem {
        /// What was being read (usually a file name).
        what: String,
        /// The label expected.
        expected: &'static str,
        /// What was found.
        detail: String,
    },
    /// A PEM block with a different label.
    #[error("{what}: holds a `{found}` block, expected `{expected}`{hint}")]
    WrongLabel {
        /// What was being read.
        what: String,
        /// Label found.
        found: String,
        /// Label expected.
        expected: &'static str,
        /// A hint (e.g. how to encrypt an unencrypted key).
        hint: &'static str,
    },
    /// The passphrase does not decrypt the key.
    #[error("{what}: wrong passphrase (or the key file is damaged)")]
    WrongPassphrase {
        /// What was being read.
        what: String,
    },
    /// A key of another algorithm.
    #[error("{what}: not an Ed25519 key (algorithm OID {oid}); manifests are signed with Ed25519 keys made by `appliance key generate`")]
    WrongType {
        /// What was being read.
        what: String,
        /// The algorithm OID found.
        oid: String,
    },
    /// Structurally broken key.
    #[error("{what}: malformed key: {detail}")]
    Malformed {
        /// What was being read.
        what: String,
        /// Details.
        detail: String,
    },
    /// The passphrase is empty.
    #[error("empty passphrase: a signing key must be protected by a passphrase")]
    EmptyPassphrase,
    /// Signature has the wrong length.
    #[error("signature is {0} bytes, an Ed25519 signature is 64")]
    SignatureLength(usize),
    /// Signature does not verify.
    #[error("signature does not verify with key {fingerprint}")]
    BadSignature {
        /// Fingerprint of the key tried.
        fingerprint: String,
    },
    /// Key generation failed (random source).
    #[error("key generation failed: {0}")]
    Generate(String),
}

/// A public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    raw: [u8; 32],
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl PublicKey {
    /// From the 32 raw bytes.
    pub fn from_raw(raw: [u8; 32]) -> Self {
        PublicKey { raw }
    }

    /// The raw 32 bytes.
    pub fn raw(&self) -> &[u8; 32] {
        &self.raw
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        let mut v = SPKI_PREFIX.to_vec();
        v.extend_from_slice(&self.raw);
        v
    }

    /// PEM `PUBLIC KEY`.
    pub fn to_pem(&self) -> String {
        pem_rfc7468::encode_string("PUBLIC KEY", pem_rfc7468::LineEnding::LF, &self.spki_der())
            .expect("PEM encoding of 44 bytes cannot fail")
    }

    /// Parse PEM `PUBLIC KEY`. `what` names the source in errors.
    pub fn from_pem(pem: &[u8], what: &str) -> Result<Self, KeyError> {
        let (label, der) = decode_pem(pem, what, "PUBLIC KEY")?;
        if label != "PUBLIC KEY" {
            return Err(KeyError::WrongLabel {
                what: what.into(),
                found: label,
                expected: "PUBLIC KEY",
                hint: if pem_has_private_label(pem) {
                    " (this is a private key; pass the .pub file)"
                } else {
                    ""
                },
            });
        }
        Self::from_spki_der(&der, what)
    }

    /// Parse a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8], what: &str) -> Result<Self, KeyError> {
        if der.len() == 44 && der[..12] == SPKI_PREFIX {
            let mut raw = [0u8; 32];
            raw.copy_from_slice(&der[12..]);
            return Ok(PublicKey { raw });
        }
        match spki_algorithm_oid(der) {
            Some(oid) if oid != ED25519_OID => Err(KeyError::WrongType {
                what: what.into(),
                oid: oid_to_string(&oid),
            }),
            _ => Err(KeyError::Malformed {
                what: what.into(),
                detail: "not an Ed25519 SubjectPublicKeyInfo".into(),
            }),
        }
    }

    /// `sha256:<hex>` over the DER SubjectPublicKeyInfo.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(self.spki_der())))
    }

    /// Verify a detached signature over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), KeyError> {
        if sig.len() != SIGNATURE_LEN {
            return Err(KeyError::SignatureLength(sig.len()));
        }
        UnparsedPublicKey::new(&signature::ED25519, &self.raw)
            .verify(msg, sig)
            .map_err(|_| KeyError::BadSignature {
                fingerprint: self.fingerprint(),
            })
    }
}

/// A decrypted signing key. The key material is cleared when this is dropped.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public_key().fingerprint())
    }
}

impl SigningKey {
    /// A fresh key from the system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::generate().map_err(|e| KeyError::Generate(e.to_string()))?;
        Ok(SigningKey { pair })
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey { raw }
    }

    /// Sign `msg` (deterministic, RFC 8032).
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.pair.sign(msg).as_ref());
        out
    }

    /// An ECDSA P-256 key derived from this key's seed for `purpose` (HMAC-SHA-256 of
    /// the seed as a PRF, a counter until the scalar is in range): the same release key
    /// always gives the same derived key, and nothing about the seed is learnt from it.
    /// The PCR-policy key (`crate::pcr_policy`) is one: the TPM checks ECDSA, not
    /// Ed25519. It signs deterministically (RFC 6979), so builds stay reproducible.
    ///
    /// # Errors
    /// The seed cannot be read (not expected).
    pub fn derive_p256(&self, purpose: &str) -> Result<p256::ecdsa::SigningKey, KeyError> {
        use aws_lc_rs::encoding::AsBigEndian;
        use aws_lc_rs::hmac;
        let seed = self
            .pair
            .seed()
            .map_err(|_| KeyError::Generate("no seed".into()))?;
        let seed = seed
            .as_be_bytes()
            .map_err(|_| KeyError::Generate("no seed".into()))?;
        let prf = hmac::Key::new(hmac::HMAC_SHA256, seed.as_ref());
        for counter in 0u32..64 {
            let mut msg = Zeroizing::new(Vec::new());
            msg.extend_from_slice(b"appliance derived P-256 key v1\0");
            msg.extend_from_slice(purpose.as_bytes());
            msg.extend_from_slice(&counter.to_be_bytes());
            let tag = hmac::sign(&prf, &msg);
            // Zero or not below the group order: the next counter.
            if let Ok(k) = p256::ecdsa::SigningKey::from_slice(tag.as_ref()) {
                return Ok(k);
            }
        }
        Err(KeyError::Generate(
            "no derived P-256 scalar in range".into(),
        ))
    }

    /// The key as encrypted PKCS#8 PEM (`ENCRYPTED PRIVATE KEY`).
    pub fn to_encrypted_pem(&self, passphrase: &[u8]) -> Result<Zeroizing<String>, KeyError> {
        if passphrase.is_empty() {
            return Err(KeyError::EmptyPassphrase);
        }
        let doc = self
            .pair
            .to_pkcs8v1()
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let der = Zeroizing::new(doc.as_ref().to_vec());
        let info = PrivateKeyInfoRef::try_from(der.as_slice())
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let enc = info
            .encrypt(passphrase)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let pem = enc
            .to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        Ok(Zeroizing::new(pem.as_str().to_owned()))
    }

    /// Read an encrypted PKCS#8 PEM key. `what` names the source in errors.
    pub fn from_encrypted_pem(pem: &[u8], passphrase: &[u8], what: &str) -> Result<Self, KeyError> {
        let (label, der) = decode_pem(pem, what, "ENCRYPTED PRIVATE KEY")?;
        let der = Zeroizing::new(der);
        match label.as_str() {
            "ENCRYPTED PRIVATE KEY" => {}
            "PRIVATE KEY" => {
                return Err(KeyError::WrongLabel {
                    what: what.into(),
                    found: label,
                    expected: "ENCRYPTED PRIVATE KEY",
                    hint: " (unencrypted keys are refused; make one with `appliance key generate`)",
                })
            }
            "PUBLIC KEY" => {
                return Err(KeyError::WrongLabel {
                    what: what.into(),
                    found: label,
                    expected: "ENCRYPTED PRIVATE KEY",
                    hint: " (this is a public key; pass the .key file)",
                })
            }
            _ => {
                return Err(KeyError::WrongLabel {
                    what: what.into(),
                    found: label,
                    expected: "ENCRYPTED PRIVATE KEY",
                    hint: "",
                })
            }
        }
        let info = EncryptedPrivateKeyInfoRef::try_from(der.as_slice()).map_err(|e| {
            KeyError::Malformed {
                what: what.into(),
                detail: e.to_string(),
            }
        })?;
        let plain = info
            .decrypt(passphrase)
            .map_err(|_| KeyError::WrongPassphrase { what: what.into() })?;
        let plain = Zeroizing::new(plain.as_bytes().to_vec());
        let pk =
            PrivateKeyInfoRef::try_from(plain.as_slice()).map_err(|e| KeyError::Malformed {
                what: what.into(),
                detail: e.to_string(),
            })?;
        let oid = pk.algorithm.oid.as_bytes();
        if oid != ED25519_OID {
            return Err(KeyError::WrongType {
                what: what.into(),
                oid: oid_to_string(oid),
            });
        }
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&plain).map_err(|e| {
            KeyError::Malformed {
                what: what.into(),
                detail: e.to_string(),
            }
        })?;
        Ok(SigningKey { pair })
    }
}

fn pem_has_private_label(pem: &[u8]) -> bool {
    let s = String::from_utf8_lossy(pem);
    s.contains("PRIVATE KEY-----")
}

fn decode_pem(
    pem: &[u8],
    what: &str,
    expected: &'static str,
) -> Result<(String, Vec<u8>), KeyError> {
    // Tolerate text around the block (e.g. comments), as openssl does.
    let text = String::from_utf8_lossy(pem);
    let Some(start) = text.find("-----BEGIN ") else {
        return Err(KeyError::NotPem {
            what: what.into(),
            expected,
            detail: "no -----BEGIN line".into(),
        });
    };
    let block = &text[start..];
    pem_rfc7468::decode_vec(block.as_bytes())
        .map(|(l, d)| (l.to_string(), d))
        .map_err(|e| KeyError::NotPem {
            what: what.into(),
            expected,
            detail: e.to_string(),
        })
}

/// Extract the algorithm OID from a DER SubjectPublicKeyInfo, if it has the
/// expected outer shape (short-form lengths are enough for the keys we see).
fn spki_algorithm_oid(der: &[u8]) -> Option<Vec<u8>> {
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let tag = *b.first()?;
        let l0 = *b.get(1)? as usize;
        let (len, hdr) = if l0 < 0x80 {
            (l0, 2)
        } else {
            let n = l0 & 0x7f;
            if n == 0 || n > 3 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | *b.get(2 + i)? as usize;
            }
            (len, 2 + n)
        };
        let body = b.get(hdr..hdr.checked_add(len)?)?;
        Some((tag, body, &b[hdr + len..]))
    }
    let (t, outer, _) = tlv(der)?;
    if t != 0x30 {
        return None;
    }
    let (t, alg, _) = tlv(outer)?;
    if t != 0x30 {
        return None;
    }
    let (t, oid, _) = tlv(alg)?;
    (t == 0x06).then(|| oid.to_vec())
}

fn oid_to_string(oid: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut v: u64 = 0;
    for (i, b) in oid.iter().enumerate() {
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() && i < 8 {
                let (a, b) = if v < 40 {
                    (0, v)
                } else if v < 80 {
                    (1, v - 40)
                } else {
                    (2, v - 80)
                };
                parts.push(a.to_string());
                parts.push(b.to_string());
            } else {
                parts.push(v.to_string());
            }
            v = 0;
        }
    }
    parts.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_sign() {
        let k = SigningKey::generate().unwrap();
        let pem = k.to_encrypted_pem(b"correct horse").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        let k2 = SigningKey::from_encrypted_pem(pem.as_bytes(), b"correct horse", "k").unwrap();
        assert_eq!(k.public_key(), k2.public_key());
        let sig = k2.sign(b"hello");
        k.public_key().verify(b"hello", &sig).unwrap();
        assert!(k.public_key().verify(b"hellp", &sig).is_err());
        let e = SigningKey::from_encrypted_pem(pem.as_bytes(), b"wrong", "k.key").unwrap_err();
        assert!(matches!(e, KeyError::WrongPassphrase { .. }), "{e}");
        let p = PublicKey::from_pem(k.public_key().to_pem().as_bytes(), "k.pub").unwrap();
        assert_eq!(p, k.public_key());
    }

    #[test]
    fn oid_text() {
        assert_eq!(
            oid_to_string(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
            "1.2.840.10045.2.1"
        );
        assert_eq!(oid_to_string(&ED25519_OID), "1.3.101.112");
    }
}
