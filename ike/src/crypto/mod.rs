//! IKEv2 cryptography: PRFs, `prf+`, key derivation, key exchange, the Encrypted (SK)
//! payload and AUTH.
//!
//! | What | Where | Specification |
//! |---|---|---|
//! | [`Prf`]: PRF_HMAC_SHA2_256/384/512 (IDs 5/6/7), `prf+` | `prf.rs` | RFC 4868, RFC 7296 §2.13 |
//! | [`Skeyseed`], [`IkeSaKeys`], [`ChildSaKeys`]: SKEYSEED, SK_*, rekey, KEYMAT | `keys.rs` | RFC 7296 §2.14, §2.17, §2.18 |
//! | [`KeyExchange`]: group 31 (x25519), group 19 (ECP-256) | `ke.rs` | RFC 8031, RFC 5903 |
//! | [`seal`] / [`open`]: the SK payload with AES-GCM-16 and ChaCha20-Poly1305 | `sk.rs` | RFC 7296 §3.14, RFC 5282, RFC 7634 |
//! | [`signed_octets`], PSK and digital-signature (method 14) AUTH | `auth.rs` | RFC 7296 §2.15, RFC 7427, RFC 8420 |
//!
//! All primitives are aws-lc-rs. Integrity transforms (SK_ai/SK_ar) are not offered: every
//! encryption transform here is an AEAD, so those keys are empty (RFC 5282 §7.1, RFC 7634 §4).
//!
//! # Invariants
//!
//! - **No panics on any input.** Every length taken from a message or a caller is checked
//!   before a slice is taken, and length arithmetic is checked. A function that can fail
//!   returns [`Error`]. The only panics left are aws-lc-rs's own `expect`s on library
//!   failures that do not depend on the input (e.g. `HMAC_Update` failing to allocate).
//! - **Zeroization.** Every secret — g^ir ([`SharedSecret`]), SKEYSEED, SK_d, SK_e, SK_p,
//!   KEYMAT, pre-shared keys, decrypted payloads — lives in a type that zeroizes its bytes on
//!   drop and whose `Debug` prints only its name and length. None of them is `Clone`.
//!   Private keys and expanded key schedules live inside aws-lc, which cleanses them when
//!   they are freed. Not covered: HMAC tags that aws-lc-rs returns by value on the stack
//!   before they are copied into a zeroizing buffer.
//! - **IV uniqueness.** The SK payload's 8-byte IV is the AEAD nonce's varying part and must
//!   never repeat under one key. [`seal`] takes it from the caller, who takes it from an
//!   [`IvCounter`]: one counter per sealing key (per IKE SA and direction), never cloned,
//!   never reset while the key lives. The message ID alone is *not* unique: SK_ei protects
//!   both the initiator's requests and its responses, whose message IDs overlap. A
//!   retransmission resends the stored bytes and does not seal again.
//! - **Constant time.** AEAD tags are checked by aws-lc; PSK AUTH values and all-zero
//!   shared-secret checks use `subtle`. Failures of [`open`] and of AUTH verification say
//!   only "authentication failed".
//! - **No I/O, no clock, no random numbers drawn here**, with one exception: ECDSA signing,
//!   whose per-signature nonce aws-lc draws internally (aws-lc-rs ignores the RNG argument).
//!   Ephemeral key-exchange secrets come from the caller as bytes.
//!
//! Known-answer and Wycheproof tests are in `tests/` beside this file, with their data in
//! `ike/testdata/`.

mod auth;
mod ke;
mod keys;
mod prf;
mod secret;
mod sk;

#[cfg(test)]
mod tests;

pub use auth::{
    ecdsa_der, signed_octets, ExternalSigner, HashAlgorithm, PinnedPublicKey, PreSharedKey,
    SignatureScheme, SigningKey, AUTH_METHOD_DIGITAL_SIGNATURE, AUTH_METHOD_SHARED_KEY,
};
pub use ke::{Ecp256Exchange, Group, KeyExchange, SharedSecret, X25519Exchange};
pub use keys::{
    check_nonce, ChildSaKeys, EspKeyMaterial, IkeSaKeys, IkeSpis, Role, SkD, SkP, Skeyseed,
    MAX_NONCE_LEN, MIN_NONCE_LEN,
};
pub use prf::{Prf, PrfOutput, PRF_PLUS_MAX_BLOCKS};
pub use sk::{
    open, seal, sealed_lengths, Aead, IvCounter, Plaintext, SealedLengths, SkIv, SkKey, ICV_LEN,
    IV_LEN,
};

/// What went wrong in [`crate::crypto`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `prf+` was asked for more than 255 blocks.
    #[error(
        "prf+ can produce at most {max} bytes with this PRF (255 blocks, RFC 7296 §2.13), \
         {requested} were requested: choose transforms with shorter keys"
    )]
    PrfPlusTooLong {
        /// Bytes requested.
        requested: usize,
        /// 255 × the PRF's output length.
        max: usize,
    },
    /// A nonce is outside the lengths RFC 7296 §2.10 and §3.9 allow.
    #[error(
        "nonce of {len} bytes: RFC 7296 requires {min} to {max} bytes (at least 16, and at \
         least half the PRF key size)"
    )]
    NonceLength {
        /// Length received.
        len: usize,
        /// Minimum for the negotiated PRF.
        min: usize,
        /// 256.
        max: usize,
    },
    /// Key material of the wrong length was supplied.
    #[error("key material of {got} bytes where {expected} are needed")]
    KeyLength {
        /// Length the transform needs.
        expected: usize,
        /// Length supplied.
        got: usize,
    },
    /// The peer's KE data has the wrong length or is not a valid public value
    /// (for ECP-256: not a point on the curve).
    #[error("the peer's key exchange data is not a valid public value for this group")]
    InvalidPeerPublicValue,
    /// The x25519 shared secret is all zeros (RFC 8031 §2: the peer sent a low-order point).
    #[error("the x25519 shared secret is all zeros: the peer's public value has low order")]
    ZeroSharedSecret,
    /// A private key (ephemeral scalar, signing key) was rejected, e.g. an ECP-256 scalar
    /// that is zero or not below the group order.
    #[error("private key rejected: for an ephemeral key, draw new random bytes and retry")]
    PrivateKeyRejected,
    /// A pinned public key is malformed (wrong length, wrong encoding, not on the curve).
    #[error(
        "public key rejected: pin Ed25519 keys as 32 raw bytes and ECDSA P-256 keys as a \
         65-byte uncompressed point (0x04 || x || y)"
    )]
    InvalidPublicKey,
    /// A pre-shared key is empty.
    #[error("the pre-shared key is empty")]
    EmptyPreSharedKey,
    /// [`seal`]: the lengths in the IKE header or the SK payload header do not match the
    /// message being sealed.
    #[error(
        "the IKE header or SK payload header length does not match the sealed message: \
         write the lengths from sealed_lengths() before sealing"
    )]
    SkLengthMismatch,
    /// [`seal`]: the output buffer is too small.
    #[error("output buffer too small: {needed} bytes needed")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// [`seal`]: the message would exceed the IKE length fields.
    #[error("message too long for the IKE length fields")]
    MessageTooLong,
    /// An [`IvCounter`] has handed out every IV: the SA must be rekeyed.
    #[error("the IV counter of this key is exhausted: rekey the IKE SA")]
    IvExhausted,
    /// An SK payload, a PSK AUTH value or a signature did not verify. Deliberately says
    /// nothing more.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// The AUTH data of a digital signature names an algorithm we do not accept for the
    /// pinned key.
    #[error(
        "the peer signed with an algorithm that does not match its pinned key \
         (only Ed25519 and ecdsa-with-SHA256 are accepted)"
    )]
    UnsupportedSignatureAlgorithm,
    /// aws-lc reported a failure that no input explains.
    #[error("the cryptographic library failed")]
    Library,
    /// An external signer (the TPM holding the device identity key) gave no
    /// signature, or one that does not verify under its public key.
    #[error("the external signer failed: {0}")]
    ExternalSigner(&'static str),
}
