//! RSA signing keys (PKCS#8 or PKCS#1, PEM or DER).

use crate::der::{self, oid, Reader, TAG_INTEGER, TAG_OCTET_STRING, TAG_SEQUENCE};
use crate::x509::{self, Certificate};
use crate::{pem, Error, Result};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};

/// RSA key sizes accepted for signing, in bits.
pub const SUPPORTED_RSA_BITS: [usize; 3] = [2048, 3072, 4096];

/// An RSA private key for Authenticode signing (PKCS#1 v1.5 with SHA-256).
///
/// The decoded key bytes this crate handles are zeroized after loading; the key
/// itself lives inside aws-lc, which clears it when dropped.
pub struct SigningKey {
    pair: RsaKeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(RSA-{})", self.bits())
    }
}

const WHAT: &str = "private key";

impl SigningKey {
    /// Loads the first private key block of a PEM file: PKCS#8 `PRIVATE KEY` or
    /// PKCS#1 `RSA PRIVATE KEY`, unencrypted, RSA 2048/3072/4096. EC, Ed25519 and
    /// other key types are rejected: UEFI Secure Boot needs RSA.
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey> {
        let blocks = pem::parse(pem, WHAT)?;
        let b = blocks
            .iter()
            .find(|b| b.label.ends_with("PRIVATE KEY"))
            .ok_or_else(|| Error::Pem {
                what: WHAT,
                reason: format!(
                    "no PRIVATE KEY block (found {})",
                    blocks
                        .iter()
                        .map(|b| b.label.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        if b.encrypted || b.label == "ENCRYPTED PRIVATE KEY" {
            return Err(Error::Key(
                "the key is encrypted; decrypt it first (openssl pkey -in key.pem -out plain.pem)"
                    .into(),
            ));
        }
        match b.label.as_str() {
            "PRIVATE KEY" => SigningKey::from_pkcs8_der(&b.der),
            "RSA PRIVATE KEY" => SigningKey::from_pkcs1_der(&b.der),
            "EC PRIVATE KEY" => Err(Error::NotRsa {
                found: "an EC key (EC PRIVATE KEY)".into(),
            }),
            "DSA PRIVATE KEY" => Err(Error::NotRsa {
                found: "a DSA key (DSA PRIVATE KEY)".into(),
            }),
            other => Err(Error::Pem {
                what: WHAT,
                reason: format!("unsupported block type {other:?}"),
            }),
        }
    }

    /// Loads a DER private key, PKCS#8 `PrivateKeyInfo` or PKCS#1 `RSAPrivateKey`
    /// (told apart by their structure).
    pub fn from_der(der: &[u8]) -> Result<SigningKey> {
        let mut r = Reader::new(der, WHAT);
        let mut s = r.sequence("PrivateKeyInfo / RSAPrivateKey")?;
        s.expect(TAG_INTEGER, "version")?;
        match s.peek_tag() {
            Some(TAG_SEQUENCE) => SigningKey::from_pkcs8_der(der),
            Some(TAG_INTEGER) => SigningKey::from_pkcs1_der(der),
            _ => Err(Error::Key(
                "neither PKCS#8 PrivateKeyInfo nor PKCS#1 RSAPrivateKey".into(),
            )),
        }
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey> {
        let mut r = Reader::new(der, WHAT);
        let mut s = r.sequence("PrivateKeyInfo")?;
        r.finish("PrivateKeyInfo")?;
        s.expect(TAG_INTEGER, "PrivateKeyInfo.version")?;
        let mut alg = s.sequence("PrivateKeyInfo.privateKeyAlgorithm")?;
        let o = alg.oid("PrivateKeyInfo.privateKeyAlgorithm.algorithm")?;
        s.expect(TAG_OCTET_STRING, "PrivateKeyInfo.privateKey")?;
        if o != oid::RSA_ENCRYPTION {
            return Err(Error::NotRsa {
                found: format!(
                    "{} (PKCS#8 algorithm {})",
                    x509::key_algorithm_name(o),
                    der::oid_text(o)
                ),
            });
        }
        let pair = RsaKeyPair::from_pkcs8(der)
            .map_err(|e| Error::Key(format!("PKCS#8 RSA key rejected: {e}")))?;
        SigningKey::new(pair)
    }

    fn from_pkcs1_der(der: &[u8]) -> Result<SigningKey> {
        let pair = RsaKeyPair::from_der(der)
            .map_err(|e| Error::Key(format!("PKCS#1 RSA key rejected: {e}")))?;
        SigningKey::new(pair)
    }

    fn new(pair: RsaKeyPair) -> Result<SigningKey> {
        let k = SigningKey { pair };
        if !SUPPORTED_RSA_BITS.contains(&k.bits()) {
            return Err(Error::Key(format!(
                "RSA-{} is not supported; use RSA 2048, 3072 or 4096",
                k.bits()
            )));
        }
        Ok(k)
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.pair.public_modulus_len() * 8
    }

    /// The public key as PKCS#1 `RSAPublicKey` DER.
    pub fn public_key_der(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// Fails with [`Error::KeyMismatch`] unless `cert` holds this key's public key.
    pub fn check_matches(&self, cert: &Certificate) -> Result<()> {
        let mismatch = || Error::KeyMismatch {
            subject: cert.subject_common_name().unwrap_or_else(|| "?".into()),
        };
        let (cn, ce) = cert.rsa_components()?;
        let (kn, ke) = x509::rsa_components(self.public_key_der())?;
        if cn == kn && ce == ke {
            Ok(())
        } else {
            Err(mismatch())
        }
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `msg` (deterministic).
    pub fn sign_pkcs1_sha256(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
            .map_err(|_| Error::Crypto("RSA signing failed".into()))?;
        Ok(sig)
    }
}
