//! The AEAD layer: AES-GCM-16 (RFC 4106) and ChaCha20-Poly1305 (RFC 7634)
//! through aws-lc-rs. Nonce = salt(4) || explicit IV(8). Tag checking is done
//! by aws-lc-rs (constant time).
//!
//! Key hygiene: the salt is kept in a zeroize-on-drop array; the cipher key
//! only lives inside aws-lc's key schedule (`LessSafeKey`, whose context
//! aws-lc cleanses on free) and in the caller's [`policy_blob::KeyMaterial`],
//! which zeroizes itself. Nothing here panics.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use policy_blob::Aead;
use zeroize::Zeroizing;

use crate::error::EngineError;
use crate::wire::esp::ICV_LEN;

/// Salt length (RFC 4106 §4, RFC 7634 §2).
pub const SALT_LEN: usize = 4;

/// An AEAD key bound to its ESP salt.
pub struct SaKey {
    key: LessSafeKey,
    salt: Zeroizing<[u8; SALT_LEN]>,
    aead: Aead,
}

impl std::fmt::Debug for SaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SaKey({}, <redacted>)", self.aead)
    }
}

/// The AEAD failed to authenticate (wrong key, tag, AAD or ciphertext).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailed;

fn algorithm(a: Aead) -> &'static aead::Algorithm {
    match a {
        Aead::Aes128Gcm16 => &aead::AES_128_GCM,
        Aead::Aes256Gcm16 => &aead::AES_256_GCM,
        Aead::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
    }
}

impl SaKey {
    /// Builds the key from `key || salt` material.
    pub fn new(aead: Aead, material: &[u8]) -> Result<SaKey, EngineError> {
        if material.len() != aead.key_material_len() {
            return Err(EngineError::KeyLength {
                aead,
                expected: aead.key_material_len(),
                found: material.len(),
            });
        }
        let (k, s) = material.split_at(aead.key_len());
        let unbound = UnboundKey::new(algorithm(aead), k).map_err(|_| EngineError::KeyLength {
            aead,
            expected: aead.key_material_len(),
            found: material.len(),
        })?;
        let mut salt = Zeroizing::new([0u8; SALT_LEN]);
        salt.copy_from_slice(s);
        Ok(SaKey {
            key: LessSafeKey::new(unbound),
            salt,
            aead,
        })
    }

    /// The transform.
    pub fn aead(&self) -> Aead {
        self.aead
    }

    fn nonce(&self, iv: &[u8; 8]) -> Nonce {
        let mut n = [0u8; 12];
        n[..SALT_LEN].copy_from_slice(&self.salt[..]);
        n[SALT_LEN..].copy_from_slice(iv);
        Nonce::assume_unique_for_key(n)
    }

    /// Encrypts `in_out` in place and returns the 16-byte tag.
    pub fn seal(
        &self,
        iv: &[u8; 8],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; ICV_LEN], AuthFailed> {
        let tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(iv), Aad::from(aad), in_out)
            .map_err(|_| AuthFailed)?;
        let mut t = [0u8; ICV_LEN];
        if tag.as_ref().len() != ICV_LEN {
            return Err(AuthFailed);
        }
        t.copy_from_slice(tag.as_ref());
        Ok(t)
    }

    /// Decrypts `in_out` = ciphertext || tag in place; returns the plaintext length.
    /// On failure the buffer content is unspecified.
    pub fn open(&self, iv: &[u8; 8], aad: &[u8], in_out: &mut [u8]) -> Result<usize, AuthFailed> {
        self.key
            .open_in_place(self.nonce(iv), Aad::from(aad), in_out)
            .map(|p| p.len())
            .map_err(|_| AuthFailed)
    }
}
