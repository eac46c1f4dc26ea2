//! Key-use records: the one-way record of a manual cipher key that a plan's
//! `manual-key` lines carry and the init's TPM ledger stores, so that no
//! manual key is ever installed twice (the init's `keyledger` module holds
//! the ledger itself).

use crate::digest::Sha256Digest;

/// Bytes per record.
pub const ENTRY_LEN: usize = 16;
/// Records the ledger holds: the most manual keys one plan can name.
pub const LEDGER_ENTRIES: usize = 64;

/// A one-way record of one manual cipher key (see `policy_blob::KeyUse`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct KeyUse(pub [u8; ENTRY_LEN]);

impl KeyUse {
    /// Parses 32 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<KeyUse> {
        crate::digest::from_hex(s).map(KeyUse)
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        crate::digest::to_hex(&self.0)
    }
}

/// SHA-256 over `"appliance key-use set v1\0"` and the records in ascending order:
/// what the Viaduct's `--key-claim` names (`policy_blob::KeyUses::digest`).
pub fn set_digest(keys: &[KeyUse]) -> Sha256Digest {
    let mut sorted = keys.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut b = b"appliance key-use set v1\0".to_vec();
    for k in &sorted {
        b.extend_from_slice(&k.0);
    }
    Sha256Digest::of(&b)
}
