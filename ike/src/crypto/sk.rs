//! The Encrypted payload (SK, RFC 7296 §3.14) with AEAD transforms:
//! ENCR_AES_GCM_16 (ID 20, 128- or 256-bit keys, RFC 5282) and ENCR_CHACHA20_POLY1305
//! (ID 28, RFC 7634).
//!
//! ```text
//! message = IKE header | ... | SK generic header | IV (8) | ciphertext | ICV (16)
//! AAD     = IKE header | ... | SK generic header        (RFC 5282 §5.1, RFC 7634 §3)
//! nonce   = salt (4, the last bytes of SK_e) | IV (8)   (RFC 5282 §4, RFC 7634 §2)
//! plaintext = inner payloads | padding | pad length (1)
//! ```
//!
//! [`seal`] writes no padding (pad length 0, which AEADs allow: their block size is 1);
//! [`open`] accepts any padding that fits. The Encrypted payload must be the last payload
//! (RFC 7296 §3.14): [`open`] requires it to end exactly where the message ends, and the
//! IKE header's length to be the message's.
//!
//! # IV uniqueness
//!
//! The IV must never repeat under a key: a repeated GCM or ChaCha20-Poly1305 nonce leaks
//! the XOR of plaintexts and, for GCM, the authentication key. Take every IV for a key from
//! that key's one [`IvCounter`] (one per IKE SA and direction; it cannot be cloned). Do not
//! derive the IV from the message ID alone: a sealing key protects both our requests and our
//! responses, whose message IDs overlap. To retransmit, resend the stored bytes.
//!
//! # Failures
//!
//! Every failure of [`open`] — too short, lengths that disagree, tag mismatch, bad pad
//! length — is [`Error::AuthenticationFailed`] and nothing more, and the tag is checked by
//! aws-lc in constant time before any padding is looked at.

use std::ops::Deref;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

use super::secret::SecretBytes;
use super::Error;

/// Length of the SK payload's IV.
pub const IV_LEN: usize = 8;
/// Length of the SK payload's ICV (the AEAD tag).
pub const ICV_LEN: usize = 16;
const SALT_LEN: usize = 4;
const IKE_HEADER_LEN: usize = 28;
const GENERIC_HEADER_LEN: usize = 4;
/// Offset of the Length field in the IKE header.
const IKE_LENGTH_AT: usize = 24;
/// Smallest SK payload: header, IV, the pad-length byte, ICV.
const MIN_SK_PAYLOAD_LEN: usize = GENERIC_HEADER_LEN + IV_LEN + 1 + ICV_LEN;

/// An AEAD encryption transform (Transform Type 1), for the SK payload and for ESP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Aead {
    /// ENCR_AES_GCM_16 (ID 20) with Key Length 128 (RFC 5282, RFC 4106 for ESP).
    AesGcm16_128,
    /// ENCR_AES_GCM_16 (ID 20) with Key Length 256.
    AesGcm16_256,
    /// ENCR_CHACHA20_POLY1305 (ID 28, RFC 7634); carries no Key Length attribute.
    ChaCha20Poly1305,
}

impl Aead {
    /// Every transform offered.
    pub const ALL: [Aead; 3] = [
        Aead::AesGcm16_128,
        Aead::AesGcm16_256,
        Aead::ChaCha20Poly1305,
    ];

    /// The IANA transform ID.
    pub const fn transform_id(self) -> u16 {
        match self {
            Aead::AesGcm16_128 | Aead::AesGcm16_256 => 20,
            Aead::ChaCha20Poly1305 => 28,
        }
    }

    /// The Key Length attribute, in bits, if the transform carries one.
    pub const fn key_length_attribute(self) -> Option<u16> {
        match self {
            Aead::AesGcm16_128 => Some(128),
            Aead::AesGcm16_256 => Some(256),
            Aead::ChaCha20Poly1305 => None,
        }
    }

    /// The transform for an ID and Key Length attribute, if we offer it. AES-GCM needs the
    /// attribute (RFC 5282 §8); ChaCha20-Poly1305 must not have one (RFC 7634 §4).
    pub const fn from_transform(id: u16, key_length_attribute: Option<u16>) -> Option<Self> {
        match (id, key_length_attribute) {
            (20, Some(128)) => Some(Aead::AesGcm16_128),
            (20, Some(256)) => Some(Aead::AesGcm16_256),
            (28, None) => Some(Aead::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// The cipher key length in bytes (16 or 32).
    pub const fn key_len(self) -> usize {
        match self {
            Aead::AesGcm16_128 => 16,
            Aead::AesGcm16_256 | Aead::ChaCha20Poly1305 => 32,
        }
    }

    /// The key material per direction: key || 4-byte salt (20 or 36 bytes).
    pub const fn keymat_len(self) -> usize {
        self.key_len() + SALT_LEN
    }

    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Aead::AesGcm16_128 => &aead::AES_128_GCM,
            Aead::AesGcm16_256 => &aead::AES_256_GCM,
            Aead::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

/// SK_ei or SK_er: an AEAD key and its salt. The raw material is zeroized on drop; the
/// expanded key lives in aws-lc, which cleanses it when freed.
pub struct SkKey {
    aead: Aead,
    material: SecretBytes,
    cipher: LessSafeKey,
}

impl SkKey {
    /// From key material: key || 4-byte salt, [`Aead::keymat_len`] bytes.
    ///
    /// # Errors
    /// [`Error::KeyLength`] for material of the wrong length.
    pub fn from_bytes(aead: Aead, material: &[u8]) -> Result<Self, Error> {
        Self::new(aead, SecretBytes::from_slice(material))
    }

    pub(crate) fn new(aead: Aead, material: SecretBytes) -> Result<Self, Error> {
        if material.len() != aead.keymat_len() {
            return Err(Error::KeyLength {
                expected: aead.keymat_len(),
                got: material.len(),
            });
        }
        let key = UnboundKey::new(aead.algorithm(), &material.as_bytes()[..aead.key_len()])
            .map_err(|_| Error::Library)?;
        Ok(Self {
            aead,
            material,
            cipher: LessSafeKey::new(key),
        })
    }

    /// The transform.
    pub fn aead(&self) -> Aead {
        self.aead
    }

    /// The key material (key || salt). Named so that every use is visible in review: hand
    /// it only to a key log on purpose.
    pub fn expose_secret(&self) -> &[u8] {
        self.material.as_bytes()
    }

    /// Length of the key material.
    pub fn len(&self) -> usize {
        self.material.len()
    }

    /// Always false: key material is never empty.
    pub fn is_empty(&self) -> bool {
        self.material.len() == 0
    }

    fn nonce(&self, iv: SkIv) -> Nonce {
        let mut n = [0u8; SALT_LEN + IV_LEN];
        n[..SALT_LEN].copy_from_slice(&self.material.as_bytes()[self.aead.key_len()..]);
        n[SALT_LEN..].copy_from_slice(&iv.0);
        Nonce::assume_unique_for_key(n)
    }

    /// Encrypts `in_out` in place; returns the tag. The same aws-lc-rs call the
    /// Wycheproof tests exercise.
    pub(crate) fn seal_in_place(
        &self,
        iv: SkIv,
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; ICV_LEN], Error> {
        let tag = self
            .cipher
            .seal_in_place_separate_tag(self.nonce(iv), Aad::from(aad), in_out)
            .map_err(|_| Error::Library)?;
        tag.as_ref().try_into().map_err(|_| Error::Library)
    }

    /// Decrypts `ciphertext` into `plaintext` (same length) if `tag` verifies.
    pub(crate) fn open_into(
        &self,
        iv: SkIv,
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        plaintext: &mut [u8],
    ) -> Result<(), Error> {
        self.cipher
            .open_separate_gather(self.nonce(iv), Aad::from(aad), ciphertext, tag, plaintext)
            .map_err(|_| Error::AuthenticationFailed)
    }
}

impl std::fmt::Debug for SkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SkKey({:?}, [redacted; {} bytes])",
            self.aead,
            self.material.len()
        )
    }
}

/// The 8-byte IV of an SK payload. Must be unique per key: take it from an [`IvCounter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SkIv([u8; IV_LEN]);

impl SkIv {
    /// The IV for a counter value (big-endian).
    pub const fn from_counter(counter: u64) -> Self {
        Self(counter.to_be_bytes())
    }

    /// An IV given as bytes, e.g. by a test vector. Production code takes IVs from an
    /// [`IvCounter`].
    pub const fn from_bytes(bytes: [u8; IV_LEN]) -> Self {
        Self(bytes)
    }

    /// The bytes as they appear in the payload.
    pub const fn to_bytes(self) -> [u8; IV_LEN] {
        self.0
    }
}

/// Hands out the IVs of one sealing key: 0, 1, 2, ... Keep exactly one per [`SkKey`]
/// used for sealing, for as long as the key lives. Not `Clone`, so it cannot be forked.
#[derive(Debug, Default)]
pub struct IvCounter {
    next: u64,
}

impl IvCounter {
    /// A counter starting at 0, for a fresh key.
    pub const fn new() -> Self {
        Self { next: 0 }
    }

    /// The next IV.
    ///
    /// # Errors
    /// [`Error::IvExhausted`] after 2^64 - 1 IVs: rekey.
    pub fn next_iv(&mut self) -> Result<SkIv, Error> {
        if self.next == u64::MAX {
            return Err(Error::IvExhausted);
        }
        let iv = SkIv::from_counter(self.next);
        self.next += 1;
        Ok(iv)
    }
}

/// The lengths a sealed message will have, to be written into the IKE header and the SK
/// payload header before [`seal`] is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealedLengths {
    /// The IKE header's Length: the whole message.
    pub message: u32,
    /// The SK payload header's Payload Length.
    pub sk_payload: u16,
}

/// The lengths of a message sealed by [`seal`] with an `aad_prefix_len`-byte prefix (IKE
/// header through SK generic header) and `plaintext_len` bytes of inner payloads.
///
/// # Errors
/// [`Error::MessageTooLong`] if a length field would overflow.
pub fn sealed_lengths(aad_prefix_len: usize, plaintext_len: usize) -> Result<SealedLengths, Error> {
    let sk_payload = plaintext_len
        .checked_add(MIN_SK_PAYLOAD_LEN)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or(Error::MessageTooLong)?;
    let message = aad_prefix_len
        .checked_sub(GENERIC_HEADER_LEN)
        .and_then(|n| n.checked_add(usize::from(sk_payload)))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or(Error::MessageTooLong)?;
    Ok(SealedLengths {
        message,
        sk_payload,
    })
}

/// Seals `plaintext_payloads` into an SK payload and writes the whole message to `out`:
/// `aad_prefix | iv | ciphertext | ICV`. Returns the message length.
///
/// `aad_prefix` is the IKE header, any payloads before SK, and the SK generic header, with
/// the final lengths ([`sealed_lengths`]) already written: it is the AAD. `iv` must be new
/// for `key` (see the module docs). No padding is added (pad length 0).
///
/// # Errors
/// [`Error::SkLengthMismatch`] if `aad_prefix` is shorter than an IKE header and a generic
/// header or its length fields disagree with the message; [`Error::BufferTooSmall`];
/// [`Error::MessageTooLong`].
pub fn seal(
    key: &SkKey,
    aad_prefix: &[u8],
    iv: SkIv,
    plaintext_payloads: &[u8],
    out: &mut [u8],
) -> Result<usize, Error> {
    let p = aad_prefix.len();
    if p < IKE_HEADER_LEN + GENERIC_HEADER_LEN {
        return Err(Error::SkLengthMismatch);
    }
    let lens = sealed_lengths(p, plaintext_payloads.len())?;
    if be_u32(aad_prefix, IKE_LENGTH_AT) != Some(lens.message)
        || be_u16(aad_prefix, p - 2) != Some(lens.sk_payload)
    {
        return Err(Error::SkLengthMismatch);
    }
    let total = lens.message as usize;
    let out = out
        .get_mut(..total)
        .ok_or(Error::BufferTooSmall { needed: total })?;
    let (aad, rest) = out.split_at_mut(p);
    aad.copy_from_slice(aad_prefix);
    let (iv_out, rest) = rest.split_at_mut(IV_LEN);
    iv_out.copy_from_slice(&iv.0);
    let (body, icv) = rest.split_at_mut(plaintext_payloads.len() + 1);
    let n = plaintext_payloads.len();
    body[..n].copy_from_slice(plaintext_payloads);
    body[n] = 0; // Pad Length: no padding.
    let tag = key.seal_in_place(iv, aad, body)?;
    icv.copy_from_slice(&tag);
    Ok(total)
}

/// Opens the SK payload that starts at `sk_offset` (its generic header) in `message` and
/// returns the inner payloads, padding removed.
///
/// # Errors
/// [`Error::AuthenticationFailed`], whatever the reason (see the module docs).
pub fn open(key: &SkKey, message: &[u8], sk_offset: usize) -> Result<Plaintext, Error> {
    let fail = Error::AuthenticationFailed;
    if sk_offset < IKE_HEADER_LEN {
        return Err(fail);
    }
    if be_u32(message, IKE_LENGTH_AT).map(|n| n as usize) != Some(message.len()) {
        return Err(fail);
    }
    let sk = message.get(sk_offset..).ok_or(fail)?;
    let sk_len = be_u16(sk, 2).ok_or(fail)? as usize;
    if sk_len != sk.len() || sk_len < MIN_SK_PAYLOAD_LEN {
        return Err(fail);
    }
    let aad = &message[..sk_offset + GENERIC_HEADER_LEN];
    let mut iv = [0u8; IV_LEN];
    iv.copy_from_slice(&sk[GENERIC_HEADER_LEN..GENERIC_HEADER_LEN + IV_LEN]);
    let (ciphertext, tag) =
        sk[GENERIC_HEADER_LEN + IV_LEN..].split_at(sk_len - GENERIC_HEADER_LEN - IV_LEN - ICV_LEN);
    let mut plaintext = SecretBytes::zeroed(ciphertext.len());
    key.open_into(SkIv(iv), aad, ciphertext, tag, plaintext.as_mut_bytes())?;
    // The tag verified; now the padding. `ciphertext` is at least one byte long.
    let last = plaintext.len() - 1;
    let pad_len = usize::from(plaintext.as_bytes()[last]);
    let len = last.checked_sub(pad_len).ok_or(fail)?;
    Ok(Plaintext {
        bytes: plaintext,
        len,
    })
}

/// The decrypted inner payloads of an SK payload, padding removed; zeroized on drop.
pub struct Plaintext {
    bytes: SecretBytes,
    len: usize,
}

impl Deref for Plaintext {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes.as_bytes()[..self.len]
    }
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plaintext([redacted; {} bytes])", self.len)
    }
}

fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IKE header (INFORMATIONAL) and an SK generic header (next payload Notify), with
    /// lengths for `plaintext_len` bytes of inner payloads.
    pub(crate) fn prefix(plaintext_len: usize) -> Vec<u8> {
        let lens = sealed_lengths(32, plaintext_len).unwrap();
        let mut p = vec![0u8; 32];
        p[..8].copy_from_slice(&[0xc0; 8]);
        p[8..16].copy_from_slice(&[0xd0; 8]);
        p[16] = 46; // next payload: SK
        p[17] = 0x20; // version 2.0
        p[18] = 37; // INFORMATIONAL
        p[24..28].copy_from_slice(&lens.message.to_be_bytes());
        p[28] = 41; // SK's next payload: Notify
        p[30..32].copy_from_slice(&lens.sk_payload.to_be_bytes());
        p
    }

    fn key(aead: Aead) -> SkKey {
        SkKey::from_bytes(aead, &vec![0x42; aead.keymat_len()]).unwrap()
    }

    #[test]
    fn transforms_round_trip() {
        for a in Aead::ALL {
            assert_eq!(
                Aead::from_transform(a.transform_id(), a.key_length_attribute()),
                Some(a)
            );
        }
        assert_eq!(Aead::from_transform(20, None), None);
        assert_eq!(Aead::from_transform(20, Some(192)), None);
        assert_eq!(Aead::from_transform(28, Some(256)), None);
        assert_eq!(Aead::from_transform(12, Some(128)), None, "AES-CBC");
    }

    #[test]
    fn seal_then_open_round_trips() {
        for aead in Aead::ALL {
            let k = key(aead);
            for n in [0, 1, 15, 16, 17, 200] {
                let pt: Vec<u8> = (0..n).map(|i| i as u8).collect();
                let p = prefix(n);
                let mut out = vec![0u8; 2000];
                let len = seal(&k, &p, SkIv::from_counter(7), &pt, &mut out).unwrap();
                assert_eq!(len, 32 + 8 + n + 1 + 16);
                let opened = open(&k, &out[..len], 28).unwrap();
                assert_eq!(&opened[..], &pt[..]);
            }
        }
    }

    #[test]
    fn seal_checks_lengths_and_buffer() {
        let k = key(Aead::AesGcm16_128);
        let mut out = vec![0u8; 100];
        let p = prefix(10);
        assert_eq!(
            seal(&k, &p, SkIv::from_counter(0), &[0; 11], &mut out),
            Err(Error::SkLengthMismatch)
        );
        assert_eq!(
            seal(&k, &p[..31], SkIv::from_counter(0), &[0; 10], &mut out),
            Err(Error::SkLengthMismatch)
        );
        assert_eq!(
            seal(&k, &p, SkIv::from_counter(0), &[0; 10], &mut out[..66]),
            Err(Error::BufferTooSmall { needed: 67 })
        );
        assert_eq!(
            sealed_lengths(32, 65535).unwrap_err(),
            Error::MessageTooLong
        );
    }

    #[test]
    fn open_rejects_tampering_and_bad_structure() {
        let k = key(Aead::ChaCha20Poly1305);
        let p = prefix(12);
        let mut out = vec![0u8; 200];
        let len = seal(&k, &p, SkIv::from_counter(1), &[9; 12], &mut out).unwrap();
        let msg = &out[..len];
        for i in 0..len {
            let mut m = msg.to_vec();
            m[i] ^= 0x01;
            assert_eq!(
                open(&k, &m, 28).unwrap_err(),
                Error::AuthenticationFailed,
                "flip at {i}"
            );
        }
        assert!(open(&k, msg, 27).is_err());
        assert!(open(&k, msg, 29).is_err());
        assert!(open(&k, msg, usize::MAX).is_err());
        assert!(open(&k, &msg[..len - 1], 28).is_err());
        let mut longer = msg.to_vec();
        longer.push(0);
        assert!(open(&k, &longer, 28).is_err());
        let other = SkKey::from_bytes(Aead::ChaCha20Poly1305, &[0x43; 36]).unwrap();
        assert!(open(&other, msg, 28).is_err());
    }

    #[test]
    fn open_removes_padding_and_rejects_overlong_pad_length() {
        let k = key(Aead::AesGcm16_256);
        // Inner payloads "abc", 4 padding bytes, pad length 4 — sealed by hand.
        let inner = b"abc\xff\xff\xff\xff\x04";
        let p = prefix(inner.len() - 1);
        let mut msg = p.clone();
        msg.extend_from_slice(&SkIv::from_counter(3).to_bytes());
        let mut body = inner.to_vec();
        let tag = k
            .seal_in_place(SkIv::from_counter(3), &p, &mut body)
            .unwrap();
        msg.extend_from_slice(&body);
        msg.extend_from_slice(&tag);
        assert_eq!(&open(&k, &msg, 28).unwrap()[..], b"abc");

        // Pad length 8 with only 7 bytes before it: authentic, but malformed.
        let inner = b"abc\xff\xff\xff\xff\x08";
        let mut msg = p.clone();
        msg.extend_from_slice(&SkIv::from_counter(4).to_bytes());
        let mut body = inner.to_vec();
        let tag = k
            .seal_in_place(SkIv::from_counter(4), &p, &mut body)
            .unwrap();
        msg.extend_from_slice(&body);
        msg.extend_from_slice(&tag);
        assert_eq!(open(&k, &msg, 28).unwrap_err(), Error::AuthenticationFailed);
    }

    #[test]
    fn iv_counter_counts_and_stops() {
        let mut c = IvCounter::new();
        assert_eq!(c.next_iv().unwrap().to_bytes(), [0; 8]);
        assert_eq!(c.next_iv().unwrap().to_bytes(), [0, 0, 0, 0, 0, 0, 0, 1]);
        let mut c = IvCounter { next: u64::MAX - 1 };
        assert!(c.next_iv().is_ok());
        assert_eq!(c.next_iv().unwrap_err(), Error::IvExhausted);
        assert_eq!(c.next_iv().unwrap_err(), Error::IvExhausted);
    }

    #[test]
    fn key_length_is_checked_and_debug_redacted() {
        assert_eq!(
            SkKey::from_bytes(Aead::AesGcm16_128, &[0; 16]).unwrap_err(),
            Error::KeyLength {
                expected: 20,
                got: 16
            }
        );
        let k = key(Aead::AesGcm16_128);
        assert_eq!(
            format!("{k:?}"),
            "SkKey(AesGcm16_128, [redacted; 20 bytes])"
        );
    }
}
