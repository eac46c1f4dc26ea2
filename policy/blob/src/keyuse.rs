//! Key-use records: what a key-use ledger stores so that no manual key ever
//! carries traffic twice.
//!
//! A manually keyed SA starts at sequence number 1 (= the explicit IV of AES-GCM and
//! ChaCha20-Poly1305) and with an empty replay window every time it is installed. Its
//! key may therefore be installed only once, ever: a second installation (a restarted
//! Viaduct, a reboot, another image built with the same key) would seal other packets
//! under the same (key, nonce) — both confidentiality and integrity lost — and accept
//! every packet captured before as new.
//!
//! A [`KeyUse`] is a one-way, 16-byte record of one cipher key (the salt aside, as in
//! the policy's own check that no key serves two SAs): SHA-256 over one 64-byte block
//! `"appliance key-use ledger v1\0" || key length || key || zeros`, truncated. It
//! reveals nothing about the key (a 128-bit or 256-bit secret) and names it across
//! policies, images and tunnels: a key used once is recognised wherever it turns up
//! again. [`KeyUses`] is the sorted set of one policy's records; its
//! [`digest`](KeyUses::digest) is what the init hands the Viaduct to say "these keys
//! were claimed for this start".
//!
//! The block is built on the stack and wiped after hashing; the hasher never buffers
//! key bytes (a whole block is compressed directly).

use crate::model::{Aead, Policy};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// Length of one key-use record in bytes.
pub const KEY_USE_LEN: usize = 16;

const LABEL: &[u8] = b"appliance key-use ledger v1\0";

/// A one-way record of one manual cipher key (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyUse(pub [u8; KEY_USE_LEN]);

impl KeyUse {
    /// The record of `key` (key || salt, as in the policy) under `aead`: only the
    /// cipher key counts, so the same key with another salt is the same record.
    pub fn of(aead: Aead, key: &[u8]) -> KeyUse {
        let key = key.get(..aead.key_len()).unwrap_or(key);
        let mut block = [0u8; 64];
        let n = key.len().min(64 - LABEL.len() - 1);
        block[..LABEL.len()].copy_from_slice(LABEL);
        block[LABEL.len()] = n as u8;
        block[LABEL.len() + 1..][..n].copy_from_slice(&key[..n]);
        let mut h = Sha256::new();
        h.update(block);
        block.zeroize();
        let d = h.finalize();
        let mut out = [0u8; KEY_USE_LEN];
        out.copy_from_slice(&d[..KEY_USE_LEN]);
        KeyUse(out)
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses 32 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<KeyUse> {
        let mut out = [0u8; KEY_USE_LEN];
        unhex(s, &mut out)?;
        Some(KeyUse(out))
    }
}

impl std::fmt::Debug for KeyUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyUse({})", self.to_hex())
    }
}

/// The key-use records of one policy: sorted, without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyUses(Vec<KeyUse>);

impl KeyUses {
    /// Builds the set from records in any order.
    pub fn new(mut uses: Vec<KeyUse>) -> KeyUses {
        uses.sort();
        uses.dedup();
        KeyUses(uses)
    }

    /// The records, sorted.
    pub fn as_slice(&self) -> &[KeyUse] {
        &self.0
    }

    /// Whether the policy has no manual key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// SHA-256 over `"appliance key-use set v1\0"` and the sorted records: names this
    /// exact set of keys (the Viaduct's `--key-claim`).
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"appliance key-use set v1\0");
        for u in &self.0 {
            h.update(u.0);
        }
        h.finalize().into()
    }

    /// Whether `digest` names this set (constant time).
    pub fn digest_matches(&self, digest: &[u8; 32]) -> bool {
        bool::from(self.digest().ct_eq(digest))
    }
}

impl Policy {
    /// The key-use records of every manually keyed SA, both directions: the inbound
    /// keys too, since a reinstalled inbound SA starts with an empty replay window.
    pub fn manual_key_uses(&self) -> KeyUses {
        KeyUses::new(
            self.tunnels
                .iter()
                .filter_map(|t| Some((t.aead, t.manual.as_ref()?)))
                .flat_map(|(aead, m)| {
                    [
                        KeyUse::of(aead, m.outbound.key.expose()),
                        KeyUse::of(aead, m.inbound.key.expose()),
                    ]
                })
                .collect(),
        )
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Parses exactly `out.len() * 2` lowercase hex digits into `out`.
pub fn unhex(s: &str, out: &mut [u8]) -> Option<()> {
    let s = s.as_bytes();
    if s.len() != out.len() * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_the_documented_block_hash() {
        let key = [7u8; 20]; // AES-128-GCM: 16-byte key || 4-byte salt
        let mut block = [0u8; 64];
        block[..LABEL.len()].copy_from_slice(LABEL);
        block[LABEL.len()] = 16;
        block[LABEL.len() + 1..][..16].copy_from_slice(&key[..16]);
        let d = Sha256::digest(block);
        assert_eq!(KeyUse::of(Aead::Aes128Gcm16, &key).0, d[..16]);
    }

    #[test]
    fn salt_does_not_count_key_does() {
        let mut a = vec![1u8; 36];
        let b = KeyUse::of(Aead::ChaCha20Poly1305, &a);
        a[35] ^= 1; // salt
        assert_eq!(KeyUse::of(Aead::ChaCha20Poly1305, &a), b);
        a[0] ^= 1; // key
        assert_ne!(KeyUse::of(Aead::ChaCha20Poly1305, &a), b);
    }

    #[test]
    fn set_is_sorted_unique_and_its_digest_names_it() {
        let x = KeyUse([1; 16]);
        let y = KeyUse([2; 16]);
        let s = KeyUses::new(vec![y, x, y]);
        assert_eq!(s.as_slice(), &[x, y]);
        assert!(s.digest_matches(&KeyUses::new(vec![x, y]).digest()));
        assert!(!s.digest_matches(&KeyUses::new(vec![x]).digest()));
        assert!(!KeyUses::new(vec![x]).digest_matches(&KeyUses::default().digest()));
    }

    #[test]
    fn hex_round_trips_and_refuses_other_text() {
        let u = KeyUse([0xab; 16]);
        assert_eq!(KeyUse::from_hex(&u.to_hex()), Some(u));
        assert_eq!(KeyUse::from_hex(&u.to_hex().to_uppercase()), None);
        assert_eq!(KeyUse::from_hex("ab"), None);
        assert_eq!(KeyUse::from_hex(&"zz".repeat(16)), None);
    }
}
