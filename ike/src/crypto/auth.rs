//! AUTH (RFC 7296 §2.15): the signed octets, pre-shared-key AUTH, and Digital Signature
//! AUTH (method 14, RFC 7427) with Ed25519 (RFC 8420) and ECDSA P-256 with SHA-256, against
//! pinned public keys.
//!
//! ```text
//! InitiatorSignedOctets = RealMessage1 | NonceRData | prf(SK_pi, RestOfInitIDPayload)
//! ResponderSignedOctets = RealMessage2 | NonceIData | prf(SK_pr, RestOfRespIDPayload)
//! PSK:       AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)
//! method 14: AUTH = ASN.1 length (1) | AlgorithmIdentifier | Signature Value
//! ```
//!
//! The functions here produce and check the AUTH payload's Authentication Data; the Auth
//! Method octet (2 or 14) is the codec's. PSK values are compared in constant time. An
//! ECDSA Signature Value is the DER `Ecdsa-Sig-Value` (RFC 7427 §3, as strongSwan's
//! `SIGN_ECDSA_WITH_SHA256_DER`); an Ed25519 one is the 64-byte signature over the octets
//! themselves (RFC 8420: hash "Identity").

use aws_lc_rs::agreement;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey};
use subtle::ConstantTimeEq;

use super::keys::SkP;
use super::prf::Prf;
use super::secret::{secret_newtype, SecretBytes};
use super::Error;

/// Auth Method 2, "Shared Key Message Integrity Code".
pub const AUTH_METHOD_SHARED_KEY: u8 = 2;
/// Auth Method 14, "Digital Signature" (RFC 7427).
pub const AUTH_METHOD_DIGITAL_SIGNATURE: u8 = 14;

/// The key pad of PSK authentication (RFC 7296 §2.15), without a terminator.
const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// AlgorithmIdentifier for Ed25519: id-Ed25519 1.3.101.112, parameters absent
/// (RFC 8420 §3, RFC 8410 §3).
const ED25519_ALGORITHM_IDENTIFIER: [u8; 7] = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];
/// AlgorithmIdentifier for ecdsa-with-SHA256, 1.2.840.10045.4.3.2, parameters absent
/// (RFC 7427 Appendix A.4.1, RFC 5758 §3.2).
const ECDSA_SHA256_ALGORITHM_IDENTIFIER: [u8; 12] = [
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];

/// The octets signed or MACed by the party playing `authenticated`:
/// `RealMessage | Nonce | prf(SK_p, RestOfIDPayload)` (RFC 7296 §2.15).
///
/// - `sk_p`: `keys.sk_p(authenticated)` (SK_pi for the initiator, SK_pr for the responder).
/// - `real_message`: the authenticated party's IKE_SA_INIT message, as sent, from the first
///   octet of the IKE header to the end.
/// - `other_nonce`: the *other* party's Nonce Data (NonceRData for the initiator).
/// - `id_payload_body`: the authenticated party's ID payload without its generic header
///   (ID Type, the three RESERVED octets, Identification Data).
pub fn signed_octets(
    sk_p: &SkP,
    real_message: &[u8],
    other_nonce: &[u8],
    id_payload_body: &[u8],
) -> Vec<u8> {
    let maced_id = sk_p.prf().prf(sk_p.expose_secret(), &[id_payload_body]);
    [real_message, other_nonce, maced_id.expose_secret()].concat()
}

secret_newtype!(
    /// A pre-shared key (AUTH method 2); zeroized on drop.
    PreSharedKey
);

impl PreSharedKey {
    /// Wraps a pre-shared key.
    ///
    /// # Errors
    /// [`Error::EmptyPreSharedKey`].
    pub fn new(secret: &[u8]) -> Result<Self, Error> {
        if secret.is_empty() {
            return Err(Error::EmptyPreSharedKey);
        }
        Ok(Self(SecretBytes::from_slice(secret)))
    }

    /// `AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), signed_octets)`: the
    /// Authentication Data to send.
    pub fn auth(&self, prf: Prf, signed_octets: &[u8]) -> Vec<u8> {
        let key = prf.prf(self.expose_secret(), &[KEY_PAD]);
        prf.prf(key.expose_secret(), &[signed_octets])
            .expose_secret()
            .to_vec()
    }

    /// Checks received Authentication Data, in constant time.
    ///
    /// # Errors
    /// [`Error::AuthenticationFailed`].
    pub fn verify(&self, prf: Prf, signed_octets: &[u8], received: &[u8]) -> Result<(), Error> {
        let expected = self.auth(prf, signed_octets);
        // The length is public (the PRF's output length); the contents are compared in
        // constant time.
        if bool::from(expected.as_slice().ct_eq(received)) {
            Ok(())
        } else {
            Err(Error::AuthenticationFailed)
        }
    }
}

/// A value of the SIGNATURE_HASH_ALGORITHMS notify (RFC 7427 §4, RFC 8420 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// 1, SHA1 (recognised, never sent).
    Sha1,
    /// 2, SHA2-256: what we sign with for ECDSA P-256.
    Sha2_256,
    /// 3, SHA2-384 (recognised, never sent).
    Sha2_384,
    /// 4, SHA2-512 (recognised, never sent).
    Sha2_512,
    /// 5, Identity: "no hash", for Ed25519 (RFC 8420).
    Identity,
}

impl HashAlgorithm {
    /// What we send in SIGNATURE_HASH_ALGORITHMS: the algorithms of
    /// [`SignatureScheme::hash_algorithm`].
    pub const SUPPORTED: [HashAlgorithm; 2] = [HashAlgorithm::Sha2_256, HashAlgorithm::Identity];

    /// The 16-bit value in the notify.
    pub const fn value(self) -> u16 {
        match self {
            HashAlgorithm::Sha1 => 1,
            HashAlgorithm::Sha2_256 => 2,
            HashAlgorithm::Sha2_384 => 3,
            HashAlgorithm::Sha2_512 => 4,
            HashAlgorithm::Identity => 5,
        }
    }

    /// The algorithm for a notify value, if it is one IANA registered up to RFC 8420.
    pub const fn from_value(value: u16) -> Option<Self> {
        match value {
            1 => Some(HashAlgorithm::Sha1),
            2 => Some(HashAlgorithm::Sha2_256),
            3 => Some(HashAlgorithm::Sha2_384),
            4 => Some(HashAlgorithm::Sha2_512),
            5 => Some(HashAlgorithm::Identity),
            _ => None,
        }
    }
}

/// A signature algorithm for Digital Signature AUTH (method 14).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureScheme {
    /// Ed25519 (RFC 8420).
    Ed25519,
    /// ECDSA over P-256 with SHA-256 (RFC 7427).
    EcdsaP256Sha256,
}

impl SignatureScheme {
    /// The DER AlgorithmIdentifier that prefixes the signature in AUTH.
    pub const fn algorithm_identifier(self) -> &'static [u8] {
        match self {
            SignatureScheme::Ed25519 => &ED25519_ALGORITHM_IDENTIFIER,
            SignatureScheme::EcdsaP256Sha256 => &ECDSA_SHA256_ALGORITHM_IDENTIFIER,
        }
    }

    /// The SIGNATURE_HASH_ALGORITHMS value the peer must have announced.
    pub const fn hash_algorithm(self) -> HashAlgorithm {
        match self {
            SignatureScheme::Ed25519 => HashAlgorithm::Identity,
            SignatureScheme::EcdsaP256Sha256 => HashAlgorithm::Sha2_256,
        }
    }

    fn verification_algorithm(self) -> &'static dyn signature::VerificationAlgorithm {
        match self {
            SignatureScheme::Ed25519 => &signature::ED25519,
            SignatureScheme::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_ASN1,
        }
    }
}

/// A peer's public key, pinned out of band (no CERT payload).
#[derive(Clone)]
pub struct PinnedPublicKey {
    scheme: SignatureScheme,
    raw: Box<[u8]>,
    key: ParsedPublicKey,
}

impl PinnedPublicKey {
    /// The key's bytes: Ed25519's 32 raw bytes, or ECDSA P-256's
    /// uncompressed point (what a peer pins).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// An Ed25519 key: the 32 raw bytes (RFC 8032 §5.1.5).
    ///
    /// # Errors
    /// [`Error::InvalidPublicKey`] for the wrong length or a key aws-lc rejects.
    pub fn ed25519(raw: &[u8]) -> Result<Self, Error> {
        if raw.len() != 32 {
            return Err(Error::InvalidPublicKey);
        }
        Self::parse(SignatureScheme::Ed25519, raw)
    }

    /// An ECDSA P-256 key: the 65-byte uncompressed point `0x04 || x || y`.
    ///
    /// # Errors
    /// [`Error::InvalidPublicKey`] for another length or encoding, or a point not on the
    /// curve.
    pub fn ecdsa_p256(uncompressed: &[u8]) -> Result<Self, Error> {
        if uncompressed.len() != 65 || uncompressed[0] != 0x04 {
            return Err(Error::InvalidPublicKey);
        }
        Self::parse(SignatureScheme::EcdsaP256Sha256, uncompressed)
    }

    fn parse(scheme: SignatureScheme, raw: &[u8]) -> Result<Self, Error> {
        let key = ParsedPublicKey::new(scheme.verification_algorithm(), raw)
            .map_err(|_| Error::InvalidPublicKey)?;
        Ok(Self {
            scheme,
            raw: raw.into(),
            key,
        })
    }

    /// The scheme the key verifies.
    pub fn scheme(&self) -> SignatureScheme {
        self.scheme
    }

    /// The key as pinned.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// Checks the Authentication Data of a method-14 AUTH payload over `signed_octets`.
    /// The AlgorithmIdentifier must be exactly the one of this key's scheme.
    ///
    /// # Errors
    /// [`Error::UnsupportedSignatureAlgorithm`] for another AlgorithmIdentifier,
    /// [`Error::AuthenticationFailed`] for malformed data or a bad signature.
    pub fn verify_auth(&self, auth_data: &[u8], signed_octets: &[u8]) -> Result<(), Error> {
        let (&len, rest) = auth_data.split_first().ok_or(Error::AuthenticationFailed)?;
        let len = usize::from(len);
        if rest.len() < len {
            return Err(Error::AuthenticationFailed);
        }
        let (algorithm_identifier, signature) = rest.split_at(len);
        if algorithm_identifier != self.scheme.algorithm_identifier() {
            return Err(Error::UnsupportedSignatureAlgorithm);
        }
        self.verify(signed_octets, signature)
    }

    /// Checks a bare signature (no AlgorithmIdentifier prefix).
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        self.key
            .verify_sig(message, signature)
            .map_err(|_| Error::AuthenticationFailed)
    }
}

impl std::fmt::Debug for PinnedPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinnedPublicKey({:?}, ", self.scheme)?;
        for b in self.raw.iter() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// A private key held elsewhere — the device identity key in the TPM — that signs
/// SHA-256 digests with ECDSA P-256. The engine calls it synchronously when it builds
/// an AUTH payload (once per IKE SA and side), so an implementation answers within a
/// bounded time or fails.
pub trait ExternalSigner: Send + Sync {
    /// The ECDSA signature `(r, s)`, each 32 bytes big-endian, over `digest` (the
    /// SHA-256 of the octets to sign).
    ///
    /// # Errors
    /// [`Error::ExternalSigner`] when no signature can be had.
    fn sign_p256_sha256(&self, digest: &[u8; 32]) -> Result<([u8; 32], [u8; 32]), Error>;
}

/// Our private key for Digital Signature AUTH. A software key lives in aws-lc, which
/// cleanses it when freed; an external one never enters this process.
pub struct SigningKey(SigningKeyInner);

enum SigningKeyInner {
    Ed25519(Ed25519KeyPair),
    EcdsaP256(EcdsaKeyPair),
    External {
        public: PinnedPublicKey,
        signer: std::sync::Arc<dyn ExternalSigner>,
    },
}

/// The DER `Ecdsa-Sig-Value` (`SEQUENCE { r INTEGER, s INTEGER }`) of a signature given
/// as two 32-byte big-endian integers.
pub fn ecdsa_der(r: &[u8; 32], s: &[u8; 32]) -> Vec<u8> {
    fn integer(out: &mut Vec<u8>, v: &[u8; 32]) {
        let start = v.iter().position(|b| *b != 0).unwrap_or(31);
        let v = &v[start..];
        let pad = v[0] & 0x80 != 0;
        out.push(0x02);
        out.push((v.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
    }
    let mut body = Vec::with_capacity(70);
    integer(&mut body, r);
    integer(&mut body, s);
    // At most 2 × 35 bytes: a one-byte length.
    let mut out = vec![0x30, body.len() as u8];
    out.extend_from_slice(&body);
    out
}

impl SigningKey {
    /// An Ed25519 key from its 32-byte seed (the RFC 8032 private key).
    ///
    /// # Errors
    /// [`Error::PrivateKeyRejected`].
    pub fn ed25519_from_seed(seed: &[u8; 32]) -> Result<Self, Error> {
        Ed25519KeyPair::from_seed_unchecked(seed)
            .map(|k| Self(SigningKeyInner::Ed25519(k)))
            .map_err(|_| Error::PrivateKeyRejected)
    }

    /// An Ed25519 key from PKCS#8 DER (as `pki --gen --type ed25519 --outform der` writes).
    ///
    /// # Errors
    /// [`Error::PrivateKeyRejected`].
    pub fn ed25519_from_pkcs8(der: &[u8]) -> Result<Self, Error> {
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(|k| Self(SigningKeyInner::Ed25519(k)))
            .map_err(|_| Error::PrivateKeyRejected)
    }

    /// An ECDSA P-256 key from its 32-byte big-endian scalar, in [1, n-1].
    ///
    /// # Errors
    /// [`Error::PrivateKeyRejected`].
    pub fn ecdsa_p256_from_scalar(scalar: &[u8; 32]) -> Result<Self, Error> {
        let private = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, scalar)
            .map_err(|_| Error::PrivateKeyRejected)?;
        let public = private
            .compute_public_key()
            .map_err(|_| Error::PrivateKeyRejected)?;
        EcdsaKeyPair::from_private_key_and_public_key(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            scalar,
            public.as_ref(),
        )
        .map(|k| Self(SigningKeyInner::EcdsaP256(k)))
        .map_err(|_| Error::PrivateKeyRejected)
    }

    /// An ECDSA P-256 key held by `signer`, whose public key is the uncompressed point
    /// `public`. Every signature it returns is checked against `public` before it is
    /// sent.
    ///
    /// # Errors
    /// [`Error::InvalidPublicKey`] for a malformed point.
    pub fn external_p256(
        public: &[u8],
        signer: std::sync::Arc<dyn ExternalSigner>,
    ) -> Result<Self, Error> {
        Ok(Self(SigningKeyInner::External {
            public: PinnedPublicKey::ecdsa_p256(public)?,
            signer,
        }))
    }

    /// An ECDSA P-256 key from PKCS#8 or RFC 5915 DER.
    ///
    /// # Errors
    /// [`Error::PrivateKeyRejected`].
    pub fn ecdsa_p256_from_der(der: &[u8]) -> Result<Self, Error> {
        let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        EcdsaKeyPair::from_pkcs8(alg, der)
            .or_else(|_| EcdsaKeyPair::from_private_key_der(alg, der))
            .map(|k| Self(SigningKeyInner::EcdsaP256(k)))
            .map_err(|_| Error::PrivateKeyRejected)
    }

    /// The scheme the key signs with.
    pub fn scheme(&self) -> SignatureScheme {
        match self.0 {
            SigningKeyInner::Ed25519(_) => SignatureScheme::Ed25519,
            SigningKeyInner::EcdsaP256(_) | SigningKeyInner::External { .. } => {
                SignatureScheme::EcdsaP256Sha256
            }
        }
    }

    /// Whether the key is held by an [`ExternalSigner`] (the TPM).
    pub fn is_external(&self) -> bool {
        matches!(self.0, SigningKeyInner::External { .. })
    }

    /// Our public key, in the form a peer pins it.
    ///
    /// # Errors
    /// [`Error::Library`] if aws-lc produced an unusable public key.
    pub fn public_key(&self) -> Result<PinnedPublicKey, Error> {
        match &self.0 {
            SigningKeyInner::Ed25519(k) => PinnedPublicKey::ed25519(k.public_key().as_ref()),
            SigningKeyInner::EcdsaP256(k) => PinnedPublicKey::ecdsa_p256(k.public_key().as_ref()),
            SigningKeyInner::External { public, .. } => Ok(public.clone()),
        }
        .map_err(|_| Error::Library)
    }

    /// The Authentication Data of a method-14 AUTH payload over `signed_octets`:
    /// `length | AlgorithmIdentifier | signature`.
    ///
    /// Ed25519 is deterministic. ECDSA draws its nonce inside aws-lc.
    ///
    /// # Errors
    /// [`Error::Library`] if aws-lc fails to sign.
    pub fn sign_auth(&self, signed_octets: &[u8]) -> Result<Vec<u8>, Error> {
        let algorithm_identifier = self.scheme().algorithm_identifier();
        let signature = self.sign(signed_octets)?;
        let mut out = Vec::with_capacity(1 + algorithm_identifier.len() + signature.len());
        // Both identifiers are shorter than 256 bytes.
        out.push(algorithm_identifier.len() as u8);
        out.extend_from_slice(algorithm_identifier);
        out.extend_from_slice(&signature);
        Ok(out)
    }

    /// A bare signature.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        match &self.0 {
            SigningKeyInner::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
            // aws-lc-rs ignores this RNG: aws-lc draws the nonce itself.
            SigningKeyInner::EcdsaP256(k) => k
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| Error::Library),
            SigningKeyInner::External { public, signer } => {
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
                let digest: [u8; 32] = digest.as_ref().try_into().map_err(|_| Error::Library)?;
                let (r, s) = signer.sign_p256_sha256(&digest)?;
                let der = ecdsa_der(&r, &s);
                // A signer that answers with anything but a valid signature by the
                // pinned key is caught here, not by the peer.
                public.verify(message, &der).map_err(|_| {
                    Error::ExternalSigner("its signature does not verify under its public key")
                })?;
                Ok(der)
            }
        }
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({:?}, [redacted])", self.scheme())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Aead, IkeSaKeys, IkeSpis, Role, SharedSecret};

    fn keys() -> IkeSaKeys {
        let spis = IkeSpis {
            initiator: [1; 8],
            responder: [2; 8],
        };
        IkeSaKeys::initial(
            Prf::HmacSha2_256,
            Aead::AesGcm16_256,
            &SharedSecret::from_bytes(&[3; 32]),
            &[4; 32],
            &[5; 32],
            &spis,
        )
        .unwrap()
    }

    #[test]
    fn signed_octets_layout() {
        let k = keys();
        let id = b"\x02\0\0\0sw.test";
        let octets = signed_octets(k.sk_p(Role::Initiator), b"MSG1", b"NONCE_R", id);
        let maced = Prf::HmacSha2_256.prf(k.sk_p(Role::Initiator).expose_secret(), &[id]);
        assert_eq!(
            octets,
            [&b"MSG1NONCE_R"[..], maced.expose_secret()].concat()
        );
        let other = signed_octets(k.sk_p(Role::Responder), b"MSG1", b"NONCE_R", id);
        assert_ne!(octets, other, "SK_pi and SK_pr differ");
    }

    #[test]
    fn psk_auth_matches_the_formula_and_verifies_in_constant_time() {
        let psk = PreSharedKey::new(b"secretsecretsecret").unwrap();
        let prf = Prf::HmacSha2_384;
        let auth = psk.auth(prf, b"octets");
        let inner = prf.prf(b"secretsecretsecret", &[b"Key Pad for IKEv2"]);
        let expected = prf.prf(inner.expose_secret(), &[b"octets"]);
        assert_eq!(auth, expected.expose_secret());
        assert_eq!(psk.verify(prf, b"octets", &auth), Ok(()));
        let mut bad = auth.clone();
        bad[47] ^= 1;
        assert_eq!(
            psk.verify(prf, b"octets", &bad),
            Err(Error::AuthenticationFailed)
        );
        assert_eq!(
            psk.verify(prf, b"octets", &auth[..47]),
            Err(Error::AuthenticationFailed)
        );
        assert_eq!(
            psk.verify(prf, b"octets", &[]),
            Err(Error::AuthenticationFailed)
        );
        assert_eq!(
            psk.verify(prf, b"other", &auth),
            Err(Error::AuthenticationFailed)
        );
        assert_eq!(
            PreSharedKey::new(b"").unwrap_err(),
            Error::EmptyPreSharedKey
        );
        assert_eq!(format!("{psk:?}"), "PreSharedKey([redacted; 18 bytes])");
    }

    #[test]
    fn algorithm_identifiers() {
        assert_eq!(
            SignatureScheme::Ed25519.algorithm_identifier(),
            [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70]
        );
        assert_eq!(SignatureScheme::Ed25519.hash_algorithm().value(), 5);
        assert_eq!(
            SignatureScheme::EcdsaP256Sha256
                .algorithm_identifier()
                .len(),
            12
        );
        assert_eq!(SignatureScheme::EcdsaP256Sha256.hash_algorithm().value(), 2);
        for v in 1..=5 {
            assert_eq!(HashAlgorithm::from_value(v).unwrap().value(), v);
        }
        assert_eq!(HashAlgorithm::from_value(0), None);
        assert_eq!(HashAlgorithm::from_value(6), None);
    }

    #[test]
    fn sign_and_verify_auth_with_both_schemes() {
        let keys = [
            SigningKey::ed25519_from_seed(&[9; 32]).unwrap(),
            SigningKey::ecdsa_p256_from_scalar(&[9; 32]).unwrap(),
        ];
        for key in &keys {
            let pinned = key.public_key().unwrap();
            let auth = key.sign_auth(b"octets").unwrap();
            let id = key.scheme().algorithm_identifier();
            assert_eq!(usize::from(auth[0]), id.len());
            assert_eq!(&auth[1..1 + id.len()], id);
            assert_eq!(pinned.verify_auth(&auth, b"octets"), Ok(()));
            assert_eq!(
                pinned.verify_auth(&auth, b"octetz"),
                Err(Error::AuthenticationFailed)
            );
            let mut bad = auth.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert_eq!(
                pinned.verify_auth(&bad, b"octets"),
                Err(Error::AuthenticationFailed)
            );
            for cut in 0..auth.len().min(1 + id.len()) {
                assert!(pinned.verify_auth(&auth[..cut], b"octets").is_err());
            }
        }
        // A signature by one scheme does not pass for the other's key.
        let ed = keys[0].sign_auth(b"octets").unwrap();
        let ec_pinned = keys[1].public_key().unwrap();
        assert_eq!(
            ec_pinned.verify_auth(&ed, b"octets"),
            Err(Error::UnsupportedSignatureAlgorithm)
        );
        // ECDSA with explicit NULL parameters is not the identifier we pinned.
        let ec = keys[1].sign_auth(b"octets").unwrap();
        let mut with_null = vec![14, 0x30, 0x0c];
        with_null.extend_from_slice(&ec[3..13]);
        with_null.extend_from_slice(&[0x05, 0x00]);
        with_null.extend_from_slice(&ec[13..]);
        assert_eq!(
            ec_pinned.verify_auth(&with_null, b"octets"),
            Err(Error::UnsupportedSignatureAlgorithm)
        );
    }

    #[test]
    fn pinned_keys_are_validated() {
        assert!(PinnedPublicKey::ed25519(&[0; 31]).is_err());
        let ec = SigningKey::ecdsa_p256_from_scalar(&[9; 32])
            .unwrap()
            .public_key()
            .unwrap();
        let raw = ec.as_bytes().to_vec();
        assert!(PinnedPublicKey::ecdsa_p256(&raw).is_ok());
        // Compressed form and SPKI are refused: only the uncompressed point is pinned.
        let mut compressed = vec![0x02 | (raw[64] & 1)];
        compressed.extend_from_slice(&raw[1..33]);
        assert_eq!(
            PinnedPublicKey::ecdsa_p256(&compressed).unwrap_err(),
            Error::InvalidPublicKey
        );
        let mut off_curve = raw.clone();
        off_curve[64] ^= 1;
        assert_eq!(
            PinnedPublicKey::ecdsa_p256(&off_curve).unwrap_err(),
            Error::InvalidPublicKey
        );
        assert!(format!("{ec:?}").starts_with("PinnedPublicKey(EcdsaP256Sha256, 04"));
        let sk = SigningKey::ed25519_from_seed(&[1; 32]).unwrap();
        assert_eq!(format!("{sk:?}"), "SigningKey(Ed25519, [redacted])");
    }

    /// A software stand-in for the TPM: signs prehashed digests with `p256`.
    struct SoftSigner(p256::ecdsa::SigningKey, std::sync::atomic::AtomicU32, bool);

    impl ExternalSigner for SoftSigner {
        fn sign_p256_sha256(&self, digest: &[u8; 32]) -> Result<([u8; 32], [u8; 32]), Error> {
            use p256::ecdsa::signature::hazmat::PrehashSigner;
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let sig: p256::ecdsa::Signature = self
                .0
                .sign_prehash(digest)
                .map_err(|_| Error::ExternalSigner("p256"))?;
            let b = sig.to_bytes();
            let (mut r, mut s) = ([0u8; 32], [0u8; 32]);
            r.copy_from_slice(&b[..32]);
            s.copy_from_slice(&b[32..]);
            if self.2 {
                // A broken signer: a valid-looking but wrong signature.
                s[31] ^= 1;
            }
            Ok((r, s))
        }
    }

    fn soft(seed: u8, broken: bool) -> (std::sync::Arc<SoftSigner>, Vec<u8>) {
        let k = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
        let public = k
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        (
            std::sync::Arc::new(SoftSigner(k, Default::default(), broken)),
            public,
        )
    }

    #[test]
    fn an_external_signer_signs_auth_that_a_pinned_key_verifies() {
        let (signer, public) = soft(7, false);
        let key = SigningKey::external_p256(&public, signer.clone()).unwrap();
        assert_eq!(key.scheme(), SignatureScheme::EcdsaP256Sha256);
        assert_eq!(key.public_key().unwrap().as_bytes(), &public[..]);
        let pinned = PinnedPublicKey::ecdsa_p256(&public).unwrap();
        for n in 0..20u8 {
            let octets = vec![n; 100 + usize::from(n)];
            let auth = key.sign_auth(&octets).unwrap();
            assert_eq!(&auth[1..13], &ECDSA_SHA256_ALGORITHM_IDENTIFIER);
            pinned.verify_auth(&auth, &octets).unwrap();
            assert_eq!(
                pinned.verify_auth(&auth, &[n; 3]),
                Err(Error::AuthenticationFailed)
            );
        }
        assert_eq!(signer.1.load(std::sync::atomic::Ordering::Relaxed), 20);
        // Another key's signer is caught before anything is sent.
        let (other, _) = soft(8, false);
        let wrong = SigningKey::external_p256(&public, other).unwrap();
        assert!(matches!(
            wrong.sign_auth(b"octets"),
            Err(Error::ExternalSigner(_))
        ));
        let (broken, public) = soft(9, true);
        let broken = SigningKey::external_p256(&public, broken).unwrap();
        assert!(matches!(
            broken.sign_auth(b"octets"),
            Err(Error::ExternalSigner(_))
        ));
        assert_eq!(
            SigningKey::external_p256(&public[..64], soft(1, false).0).unwrap_err(),
            Error::InvalidPublicKey
        );
    }

    #[test]
    fn ecdsa_der_is_the_minimal_encoding() {
        // Against p256's own DER, over values with leading zero bytes and high bits.
        let mut cases: Vec<([u8; 32], [u8; 32])> = vec![([1; 32], [0x80; 32])];
        let mut r = [0u8; 32];
        r[31] = 5;
        cases.push((r, [0x7f; 32]));
        let mut s = [0xff; 32];
        s[0] = 0;
        s[1] = 0;
        cases.push(([0x40; 32], s));
        for (r, s) in cases {
            let sig = p256::ecdsa::Signature::from_scalars(r, s).unwrap();
            assert_eq!(ecdsa_der(&r, &s), sig.to_der().as_bytes(), "{r:?} {s:?}");
        }
    }
}
