//! TPM2_MakeCredential in software: the host's half of credential activation.
//!
//! The enrolment server proves that an attestation key (AK) lives in the same TPM as an
//! endorsement key (EK) whose certificate it has checked: it encrypts a secret to the
//! EK, bound to the AK's *name*, and the device can only recover it with
//! TPM2_ActivateCredential if the TPM holds both keys. This module computes what
//! `tpm2_makecredential -T none` (tpm2-tools) computes, following TPM 2.0 Library
//! Part 1 §24 "Credential Protection", §11.4.9.2 (KDFa) and Annex B.10.3 (RSA secret
//! sharing):
//!
//! ```text
//! seed            = 32 random bytes
//! encryptedSecret = RSA-OAEP-SHA256(EK, seed, label = "IDENTITY\0")
//! symKey          = KDFa(SHA-256, seed, "STORAGE", akName, "", 128)
//! encIdentity     = AES-128-CFB(symKey, IV = 0^16, u16 len(secret) ‖ secret)
//! hmacKey         = KDFa(SHA-256, seed, "INTEGRITY", "", "", 256)
//! integrityHMAC   = HMAC-SHA256(hmacKey, encIdentity ‖ akName)
//! idObject        = TPM2B_ID_OBJECT(TPM2B_DIGEST(integrityHMAC) ‖ encIdentity)
//! ```
//!
//! # The EK it supports
//!
//! The TCG default RSA-2048 EK (EK Credential Profile template L-1: nameAlg SHA-256,
//! AES-128-CFB symmetric parameters, exponent 0 meaning 65537), as created by
//! `tpm2_createek -G rsa` and certified in NV index `0x01c00002`.
//!
//! # Invariants and refusals
//!
//! - The EK modulus must be exactly 256 bytes with its top bit set (a 2048-bit
//!   modulus); other sizes are refused with [`CredentialError::EkModulusSize`].
//! - The exponent is `0` (meaning 65537) or an odd number ≥ 3.
//! - The secret is 1 to [`MAX_SECRET_LEN`] bytes (it travels as a TPM2B_DIGEST).
//! - The AK name is `nameAlg ‖ digest` with a known TPM hash algorithm and a digest of
//!   that algorithm's size (34 bytes for a SHA-256 name).
//! - The seed and every derived key live in zeroizing buffers and are wiped when
//!   [`make_credential`] returns.
//!
//! Nothing here panics, whatever the input: every failure is a [`CredentialError`].

use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{
    OaepPublicEncryptingKey, PublicEncryptingKey, PublicKeyComponents, OAEP_SHA256_MGF1SHA256,
};
use zeroize::Zeroizing;

/// Size in bytes of the RSA-2048 EK modulus this module accepts.
pub const EK_MODULUS_LEN: usize = 256;

/// Largest secret a credential can carry: a SHA-256 TPM2B_DIGEST.
pub const MAX_SECRET_LEN: usize = 32;

/// Size of the seed (the EK's nameAlg digest size, SHA-256).
const SEED_LEN: usize = 32;

/// OAEP label of a credential's seed, with its terminating NUL (Part 1 §24.4).
const IDENTITY_LABEL: &[u8] = b"IDENTITY\0";

/// AES-128 key size in bits (the EK's symmetric parameters).
const SYM_KEY_BITS: u32 = 128;

/// HMAC key size in bits (the EK's nameAlg, SHA-256).
const HMAC_KEY_BITS: u32 = 256;

/// The exponent a TPM means by `0`.
const DEFAULT_EXPONENT: u32 = 65537;

/// The two parameters of TPM2_ActivateCredential, marshalled.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// Marshalled TPM2B_ID_OBJECT: `u16 size ‖ u16 32 ‖ integrityHMAC ‖ encIdentity`.
    pub id_object: Vec<u8>,
    /// Marshalled TPM2B_ENCRYPTED_SECRET: `u16 size ‖ RSA-OAEP ciphertext of the seed`.
    pub encrypted_secret: Vec<u8>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("id_object", &hex::encode(&self.id_object))
            .field("encrypted_secret", &hex::encode(&self.encrypted_secret))
            .finish()
    }
}

/// Magic number of a tpm2-tools credential blob file.
pub const TPM2_TOOLS_BLOB_MAGIC: u32 = 0xBADC_C0DE;

/// Version of the tpm2-tools credential blob file format.
pub const TPM2_TOOLS_BLOB_VERSION: u32 = 1;

impl Credential {
    /// The credential as the file `tpm2_makecredential -o` writes and
    /// `tpm2_activatecredential -i` reads (also Keylime's wire format):
    /// `u32 0xBADCC0DE ‖ u32 1 ‖ id_object ‖ encrypted_secret`, big-endian.
    pub fn to_tpm2_tools_blob(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.id_object.len() + self.encrypted_secret.len());
        out.extend_from_slice(&TPM2_TOOLS_BLOB_MAGIC.to_be_bytes());
        out.extend_from_slice(&TPM2_TOOLS_BLOB_VERSION.to_be_bytes());
        out.extend_from_slice(&self.id_object);
        out.extend_from_slice(&self.encrypted_secret);
        out
    }
}

/// Why a credential could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialError {
    /// The EK modulus is not a 2048-bit modulus.
    #[error("EK modulus is {got} bytes{}; credentials are made for the TCG default RSA-2048 EK (a 256-byte modulus with its top bit set, as in `tpm2_createek -G rsa`)", if *.top_bit_clear { " with its top bit clear" } else { "" })]
    EkModulusSize {
        /// Length of the modulus given.
        got: usize,
        /// The modulus is 256 bytes but its top bit is clear (fewer than 2048 bits).
        top_bit_clear: bool,
    },
    /// The EK exponent cannot be an RSA public exponent.
    #[error("EK public exponent {0} is not usable: it must be 0 (meaning 65537) or an odd number of at least 3")]
    EkExponent(u32),
    /// The RSA implementation refused the EK public key.
    #[error("EK public key (2048-bit modulus, exponent {exponent}) was refused by the RSA implementation; check that the modulus was read from the EK's TPM2B_PUBLIC unique field")]
    EkKeyRejected {
        /// The exponent used (65537 if 0 was given).
        exponent: u32,
    },
    /// The secret is empty or too long.
    #[error("secret is {got} bytes; a credential carries 1 to 32 bytes (a SHA-256 TPM2B_DIGEST)")]
    SecretSize {
        /// Length of the secret given.
        got: usize,
    },
    /// The AK name is not `nameAlg ‖ digest`.
    #[error("AK name ({len} bytes, {hex}) is not a TPM name: {reason}")]
    AkName {
        /// Length of the name given.
        len: usize,
        /// The name in hex (at most its first 70 bytes).
        hex: String,
        /// What is wrong.
        reason: String,
    },
    /// The system random number generator failed.
    #[error("the system random number generator failed; no credential was made")]
    Random,
    /// A cryptographic primitive failed unexpectedly.
    #[error("{0} failed unexpectedly; no credential was made")]
    Crypto(&'static str),
}

/// Makes a credential for the AK named `ak_name`, decryptable only by the TPM that holds
/// the RSA-2048 EK (`ek_modulus`, `ek_exponent`; exponent 0 means 65537).
///
/// `secret` (1 to 32 bytes) is what TPM2_ActivateCredential returns on the device. The
/// result's two fields are that command's `credentialBlob` and `secret` parameters.
pub fn make_credential(
    ek_modulus: &[u8],
    ek_exponent: u32,
    ak_name: &[u8],
    secret: &[u8],
) -> Result<Credential, CredentialError> {
    check_ak_name(ak_name)?;
    if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
        return Err(CredentialError::SecretSize { got: secret.len() });
    }
    let ek = ek_public_key(ek_modulus, ek_exponent)?;

    let mut seed = Zeroizing::new([0u8; SEED_LEN]);
    aws_lc_rs::rand::fill(&mut seed[..]).map_err(|_| CredentialError::Random)?;

    let mut ciphertext = vec![0u8; ek.ciphertext_size()];
    let written = ek
        .encrypt(
            &OAEP_SHA256_MGF1SHA256,
            &seed[..],
            &mut ciphertext,
            Some(IDENTITY_LABEL),
        )
        .map_err(|_| CredentialError::Crypto("RSA-OAEP encryption of the seed"))?
        .len();
    ciphertext.truncate(written);
    let encrypted_secret = tpm2b(&ciphertext)?;

    let id_object = id_object(&seed, ak_name, secret)?;
    Ok(Credential {
        id_object,
        encrypted_secret,
    })
}

/// The marshalled TPM2B_ID_OBJECT protecting `secret` with `seed` for `ak_name`.
fn id_object(
    seed: &[u8; SEED_LEN],
    ak_name: &[u8],
    secret: &[u8],
) -> Result<Vec<u8>, CredentialError> {
    let sym_key = kdfa_sha256(seed, b"STORAGE", ak_name, &[], SYM_KEY_BITS)?;
    let hmac_key = kdfa_sha256(seed, b"INTEGRITY", &[], &[], HMAC_KEY_BITS)?;

    // encIdentity: the marshalled TPM2B_DIGEST of the secret, encrypted in place.
    let mut enc_identity = Zeroizing::new(tpm2b(secret)?);
    let key = UnboundCipherKey::new(&AES_128, &sym_key)
        .map_err(|_| CredentialError::Crypto("AES-128 key setup"))?;
    let key = EncryptingKey::cfb128(key).map_err(|_| CredentialError::Crypto("AES-CFB setup"))?;
    key.less_safe_encrypt(
        &mut enc_identity,
        EncryptionContext::Iv128(FixedLength::from([0u8; 16])),
    )
    .map_err(|_| CredentialError::Crypto("AES-128-CFB encryption of the secret"))?;

    let mac_key = hmac::Key::new(hmac::HMAC_SHA256, &hmac_key);
    let mut ctx = hmac::Context::with_key(&mac_key);
    ctx.update(&enc_identity);
    ctx.update(ak_name);
    let integrity = ctx.sign();

    let mut inner = tpm2b(integrity.as_ref())?;
    inner.extend_from_slice(&enc_identity);
    tpm2b(&inner)
}

/// KDFa (TPM 2.0 Part 1 §11.4.9.2) with HMAC-SHA256, for a whole number of bytes:
/// `HMAC(key, u32 i ‖ label ‖ 0x00 ‖ context_u ‖ context_v ‖ u32 bits)` for
/// i = 1, 2, …, concatenated and truncated to `bits` / 8 bytes.
fn kdfa_sha256(
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
    if bits == 0 || bits % 8 != 0 || bits > 8 * 1024 {
        return Err(CredentialError::Crypto("KDFa (bit count)"));
    }
    let len = (bits / 8) as usize;
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut out = Zeroizing::new(Vec::with_capacity(len + 32));
    let mut counter: u32 = 1;
    while out.len() < len {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(&counter.to_be_bytes());
        ctx.update(label);
        ctx.update(&[0]);
        ctx.update(context_u);
        ctx.update(context_v);
        ctx.update(&bits.to_be_bytes());
        out.extend_from_slice(ctx.sign().as_ref());
        counter += 1;
    }
    out.truncate(len);
    Ok(out)
}

/// `u16 big-endian size ‖ data`.
fn tpm2b(data: &[u8]) -> Result<Vec<u8>, CredentialError> {
    let size =
        u16::try_from(data.len()).map_err(|_| CredentialError::Crypto("TPM2B marshalling"))?;
    let mut out = Vec::with_capacity(2 + data.len());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(data);
    Ok(out)
}

/// The EK as an RSA-OAEP public key, after the size and exponent checks.
fn ek_public_key(
    modulus: &[u8],
    exponent: u32,
) -> Result<OaepPublicEncryptingKey, CredentialError> {
    match modulus.first() {
        Some(&b) if modulus.len() == EK_MODULUS_LEN && b & 0x80 != 0 => {}
        _ => {
            return Err(CredentialError::EkModulusSize {
                got: modulus.len(),
                top_bit_clear: modulus.len() == EK_MODULUS_LEN,
            })
        }
    }
    let exponent = match exponent {
        0 => DEFAULT_EXPONENT,
        e if e >= 3 && e % 2 == 1 => e,
        e => return Err(CredentialError::EkExponent(e)),
    };
    let e_bytes = exponent.to_be_bytes();
    let skip = e_bytes.iter().take_while(|&&b| b == 0).count();
    let components = PublicKeyComponents {
        n: modulus,
        e: &e_bytes[skip..],
    };
    let key: PublicEncryptingKey = components
        .try_into()
        .map_err(|_| CredentialError::EkKeyRejected { exponent })?;
    OaepPublicEncryptingKey::new(key).map_err(|_| CredentialError::EkKeyRejected { exponent })
}

/// Digest size of a TPM_ALG_ID hash algorithm.
fn digest_len(alg: u16) -> Option<usize> {
    match alg {
        0x0004 => Some(20), // SHA1
        0x000B => Some(32), // SHA256
        0x000C => Some(48), // SHA384
        0x000D => Some(64), // SHA512
        0x0012 => Some(32), // SM3_256
        0x0027 => Some(32), // SHA3_256
        0x0028 => Some(48), // SHA3_384
        0x0029 => Some(64), // SHA3_512
        _ => None,
    }
}

fn check_ak_name(name: &[u8]) -> Result<(), CredentialError> {
    let err = |reason: String| CredentialError::AkName {
        len: name.len(),
        hex: hex::encode(name.get(..70).unwrap_or(name)),
        reason,
    };
    let (alg, digest) = match name {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => {
            return Err(err(
                "too short; an object's name is nameAlg (2 bytes) followed by a digest".into(),
            ))
        }
    };
    let want = digest_len(alg).ok_or_else(|| {
        err(format!(
            "nameAlg {alg:#06x} is not a TPM hash algorithm (SHA-256 is 0x000b)"
        ))
    })?;
    if digest.len() != want {
        return Err(err(format!(
            "nameAlg {alg:#06x} has {want}-byte digests, the name carries {}",
            digest.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey};

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// `000b ‖ SHA-256("ak")`.
    const AK_NAME: &str = "000b7f093592aebbb47767b5655699cdab8c86c4b24f5c93e3b22a3c2538856e9bf1";

    /// Vectors computed independently with Python's `hmac`/`hashlib`:
    /// `HMAC(key, struct.pack(">I", i) + label + b"\0" + u + v + struct.pack(">I", bits))`
    /// for i = 1, 2, … concatenated and truncated; key = bytes(range(32)).
    #[test]
    fn kdfa_matches_python_vectors() {
        let key: Vec<u8> = (0u8..32).collect();
        let got = kdfa_sha256(&key, b"STORAGE", &unhex(AK_NAME), &[], 128).unwrap();
        assert_eq!(hex::encode(&*got), "5a02fd7c7454d58831350af38dbbd17d");
        let got = kdfa_sha256(&key, b"INTEGRITY", &[], &[], 256).unwrap();
        assert_eq!(
            hex::encode(&*got),
            "bacf689f634ece301e1f1b15b072d9c87db6a69585db42b1a0cb8f73ebe2692e"
        );
        // Three HMAC blocks, the last truncated; both contexts used.
        let got = kdfa_sha256(&key, b"TEST", b"u", b"vv", 520).unwrap();
        assert_eq!(
            hex::encode(&*got),
            "bcba99434d7f8b0c47b46d5133ef768c047d4f8d4a05d576f38b3c1ecdac345d\
             8dea0870da2ecd759104978f6e1aa3ec12e19607ba9bb440f760a7ada7ec43df33"
        );
        assert!(kdfa_sha256(&key, b"X", &[], &[], 0).is_err());
        assert!(kdfa_sha256(&key, b"X", &[], &[], 12).is_err());
    }

    /// The TPM2B_ID_OBJECT for a fixed seed, computed independently in Python (`hmac`,
    /// and `cryptography`'s AES-CFB with a zero IV) from the formulas in the module doc.
    #[test]
    fn id_object_matches_python_vector() {
        let seed = [0x11u8; 32];
        let secret = b"attestation secret 0123456789ab";
        let got = id_object(&seed, &unhex(AK_NAME), secret).unwrap();
        assert_eq!(
            hex::encode(got),
            "00430020494b0c2d60e770a51a26128cc6ba9e3230b6e3bc85f588ce720a1e531543ef42\
             1c82b9ecb97fc38cbed067e47c8dadb904b3ae40dedfbfa6dd292b94a1ae9b10c9"
        );
    }

    /// A fresh RSA-2048 key and its modulus (read from the fixed SPKI layout).
    fn rsa2048() -> (OaepPrivateDecryptingKey, Vec<u8>) {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let spki = key.public_key().as_der().unwrap();
        let spki = spki.as_ref();
        // SEQUENCE { AlgorithmIdentifier, BIT STRING { 00 SEQUENCE { INTEGER 00 n, e } } }
        assert_eq!(&spki[28..33], &[0x02, 0x82, 0x01, 0x01, 0x00]);
        let modulus = spki[33..33 + 256].to_vec();
        (OaepPrivateDecryptingKey::new(key).unwrap(), modulus)
    }

    #[test]
    fn seed_decrypts_with_identity_label_and_rebuilds_the_id_object() {
        let (private, modulus) = rsa2048();
        let name = unhex(AK_NAME);
        let secret = [0x5au8; 32];
        let c = make_credential(&modulus, 0, &name, &secret).unwrap();
        assert_eq!(c.id_object.len(), 2 + 2 + 32 + 2 + 32);
        assert_eq!(&c.id_object[..4], &[0x00, 0x44, 0x00, 0x20]);
        assert_eq!(c.encrypted_secret.len(), 2 + 256);
        assert_eq!(&c.encrypted_secret[..2], &[0x01, 0x00]);

        let mut out = [0u8; 256];
        let seed = private
            .decrypt(
                &OAEP_SHA256_MGF1SHA256,
                &c.encrypted_secret[2..],
                &mut out,
                Some(b"IDENTITY\0"),
            )
            .unwrap();
        let seed: [u8; 32] = seed.try_into().unwrap();
        assert_eq!(c.id_object, id_object(&seed, &name, &secret).unwrap());
        // The label includes the NUL: without it, OAEP decryption fails.
        assert!(private
            .decrypt(
                &OAEP_SHA256_MGF1SHA256,
                &c.encrypted_secret[2..],
                &mut out,
                Some(b"IDENTITY"),
            )
            .is_err());

        // A fresh seed each time.
        let d = make_credential(&modulus, 65537, &name, &secret).unwrap();
        assert_ne!(c.id_object, d.id_object);

        let blob = c.to_tpm2_tools_blob();
        assert_eq!(&blob[..8], &[0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1]);
        assert_eq!(blob.len(), 8 + 70 + 258);
    }

    #[test]
    fn refuses_bad_inputs_clearly() {
        let (_, modulus) = rsa2048();
        let name = unhex(AK_NAME);
        let e = make_credential(&modulus[..128], 0, &name, b"s").unwrap_err();
        assert!(matches!(e, CredentialError::EkModulusSize { got: 128, .. }));
        assert!(e.to_string().contains("256-byte"), "{e}");
        let mut short = modulus.clone();
        short[0] = 0x7f;
        let e = make_credential(&short, 0, &name, b"s").unwrap_err();
        assert!(e.to_string().contains("top bit clear"), "{e}");
        let mut long = vec![0u8];
        long.extend_from_slice(&modulus);
        assert!(matches!(
            make_credential(&long, 0, &name, b"s"),
            Err(CredentialError::EkModulusSize { got: 257, .. })
        ));
        for bad in [1, 2, 65536] {
            assert_eq!(
                make_credential(&modulus, bad, &name, b"s"),
                Err(CredentialError::EkExponent(bad))
            );
        }
        assert_eq!(
            make_credential(&modulus, 0, &name, b""),
            Err(CredentialError::SecretSize { got: 0 })
        );
        assert_eq!(
            make_credential(&modulus, 0, &name, &[1; 33]),
            Err(CredentialError::SecretSize { got: 33 })
        );
        for bad_name in [&name[..1], &name[..33], &[0x00, 0x99, 1, 2][..], &[][..]] {
            let e = make_credential(&modulus, 0, bad_name, b"s").unwrap_err();
            assert!(matches!(e, CredentialError::AkName { .. }), "{e}");
        }
        // A SHA-1 name is still a name.
        let mut sha1_name = vec![0x00, 0x04];
        sha1_name.extend_from_slice(&[7; 20]);
        make_credential(&modulus, 0, &sha1_name, b"s").unwrap();
    }

    proptest::proptest! {
        #[test]
        fn never_panics(
            modulus in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            exponent in proptest::num::u32::ANY,
            name in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
            secret in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
        ) {
            let _ = make_credential(&modulus, exponent, &name, &secret);
        }
    }
}
