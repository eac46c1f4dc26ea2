//! SHA-256 digests as a newtype, lowercase hex, and a constant-time comparison.
//!
//! [`Sha256Digest::of_secret`] hashes key material without leaving copies of it: no
//! hasher buffer keeps the last partial block, the padded tail is wiped, and so is
//! the stack the compression function used.
//!
//! Invariants: a [`Sha256Digest`] is always exactly 32 bytes; [`Sha256Digest::from_hex`]
//! accepts only 64 lowercase hex digits (one canonical spelling per digest).
//! Nothing in this module panics.

use sha2::digest::{consts::U64, generic_array::GenericArray};
use sha2::{Digest as _, Sha256};
use std::fmt;
use zeroize::Zeroize;

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// Overwrites the stack below the caller's frame, where the functions it called kept
/// their locals (the compression function's message schedule is the data itself).
#[inline(never)]
fn scrub_stack() {
    let mut area = [0u8; 16 * 1024];
    area.zeroize();
    std::hint::black_box(&area);
}

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Length of the digest in bytes.
    pub const LEN: usize = 32;

    /// Hashes `data`.
    pub fn of(data: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(data).into())
    }

    /// Hashes `data`, which is secret (a policy blob holding keys): the same digest as
    /// [`Sha256Digest::of`], without copies of `data` left in memory afterwards.
    pub fn of_secret(data: &[u8]) -> Self {
        let mut state = H0;
        let mut blocks = data.chunks_exact(64);
        for b in &mut blocks {
            sha2::compress256(
                &mut state,
                std::slice::from_ref(GenericArray::<u8, U64>::from_slice(b)),
            );
        }
        let tail = blocks.remainder();
        let mut last = [0u8; 128];
        last[..tail.len()].copy_from_slice(tail);
        last[tail.len()] = 0x80;
        let n = if tail.len() < 56 { 64 } else { 128 };
        let bits = (data.len() as u64).wrapping_mul(8);
        last[n - 8..n].copy_from_slice(&bits.to_be_bytes());
        for b in last[..n].chunks_exact(64) {
            sha2::compress256(
                &mut state,
                std::slice::from_ref(GenericArray::<u8, U64>::from_slice(b)),
            );
        }
        last.zeroize();
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        state.zeroize();
        scrub_stack();
        Sha256Digest(out)
    }

    /// Parses exactly 64 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        from_hex(s).map(Sha256Digest)
    }

    /// Lowercase hex spelling (64 characters).
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// Compares in time independent of where the digests differ.
    pub fn ct_eq(&self, other: &Sha256Digest) -> bool {
        ct_eq(&self.0, &other.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({})", self.to_hex())
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Parses exactly `2 * N` lowercase hex digits.
pub fn from_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
    }
    Some(out)
}

/// Lowercase hex of arbitrary bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Constant-time equality of two byte strings (time depends only on the lengths).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut acc = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        acc |= x ^ y;
    }
    std::hint::black_box(acc) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_hashing_equals_plain_hashing_at_every_length() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for n in 0..data.len() {
            assert_eq!(
                Sha256Digest::of_secret(&data[..n]),
                Sha256Digest::of(&data[..n]),
                "length {n}"
            );
        }
        assert_eq!(
            Sha256Digest::of_secret(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn sha256_of_abc_matches_fips_180_vector() {
        assert_eq!(
            Sha256Digest::of(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hex_round_trip_and_rejects_uppercase_and_wrong_length() {
        let d = Sha256Digest::of(b"x");
        assert_eq!(Sha256Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Sha256Digest::from_hex(&d.to_hex().to_uppercase()), None);
        assert_eq!(Sha256Digest::from_hex(&d.to_hex()[..62]), None);
        assert_eq!(Sha256Digest::from_hex(&format!("{}0", d.to_hex())), None);
        assert_eq!(Sha256Digest::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn ct_eq_detects_any_single_bit_difference() {
        let a = [0x5au8; 32];
        assert!(ct_eq(&a, &a));
        for i in 0..32 {
            for bit in 0..8 {
                let mut b = a;
                b[i] ^= 1 << bit;
                assert!(!ct_eq(&a, &b));
            }
        }
        assert!(!ct_eq(&a, &a[..31]));
    }
}
