//! Key-use claims: a manually keyed SA is installed only under a claim that its keys
//! never carried traffic before.
//!
//! Manual SAs start at sequence number 1 with an empty replay window each time they are
//! installed, so installing the same key twice repeats AEAD nonces (P1 ⊕ P2 and
//! forgeries for a wire observer) and re-accepts every captured packet. [`Engine::new`]
//! therefore asks a [`KeyLedger`] to claim the policy's [`KeyUses`] before it installs a
//! manual SA; a refused claim is [`EngineError::KeysAlreadyUsed`] and nothing is built.
//!
//! Where the record lives is the caller's business: on the gateway the init keeps it
//! in a TPM NV index (it survives restarts and reboots; the Viaduct cannot reach the
//! TPM) and hands the Viaduct a one-time [`ClaimToken`] for the set it has just
//! recorded (`--key-claim`). [`MemoryLedger`] keeps it in memory (one process, e.g.
//! tests and benchmarks that build several engines from one policy).
//!
//! [`Engine::new`]: crate::Engine::new

use crate::error::EngineError;
use policy_blob::{KeyUse, KeyUses};
use std::collections::BTreeSet;

/// Records key uses; a claim succeeds at most once for any key.
pub trait KeyLedger {
    /// Claims every key of `uses` for one installation. Fails — recording nothing — if
    /// any of them was claimed before (or the ledger cannot tell).
    fn claim(&mut self, uses: &KeyUses) -> Result<(), EngineError>;
}

/// A ledger in memory: every key claimed through it is refused afterwards.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    used: BTreeSet<KeyUse>,
}

impl KeyLedger for MemoryLedger {
    fn claim(&mut self, uses: &KeyUses) -> Result<(), EngineError> {
        let reused = uses
            .as_slice()
            .iter()
            .filter(|u| self.used.contains(u))
            .count();
        if reused > 0 {
            return Err(EngineError::KeysAlreadyUsed {
                reused,
                total: uses.as_slice().len(),
            });
        }
        self.used.extend(uses.as_slice().iter().copied());
        Ok(())
    }
}

/// The init's word that it has recorded exactly this set of keys for this start
/// (`--key-claim <sha256 of the set>`): accepts one claim for that set, nothing else.
#[derive(Debug)]
pub struct ClaimToken {
    set: Option<[u8; 32]>,
}

impl ClaimToken {
    /// A token for the set whose [`KeyUses::digest`] is `set`.
    pub fn new(set: [u8; 32]) -> ClaimToken {
        ClaimToken { set: Some(set) }
    }

    /// No token: every manual key is refused (the Viaduct started without
    /// `--key-claim`).
    pub fn none() -> ClaimToken {
        ClaimToken { set: None }
    }
}

impl KeyLedger for ClaimToken {
    fn claim(&mut self, uses: &KeyUses) -> Result<(), EngineError> {
        match self.set.take() {
            None => Err(EngineError::NoKeyClaim),
            Some(set) if uses.digest_matches(&set) => Ok(()),
            Some(_) => Err(EngineError::KeyClaimMismatch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uses(b: &[u8]) -> KeyUses {
        KeyUses::new(b.iter().map(|&x| KeyUse([x; 16])).collect())
    }

    #[test]
    fn memory_ledger_refuses_any_key_seen_before_and_records_nothing_then() {
        let mut l = MemoryLedger::default();
        l.claim(&uses(&[1, 2])).unwrap();
        let e = l.claim(&uses(&[2, 3])).unwrap_err();
        assert!(matches!(
            e,
            EngineError::KeysAlreadyUsed {
                reused: 1,
                total: 2
            }
        ));
        l.claim(&uses(&[3, 4])).unwrap(); // 3 was not recorded by the refused claim
        assert!(l.claim(&uses(&[4])).is_err());
    }

    #[test]
    fn token_accepts_its_set_once_and_nothing_else() {
        let s = uses(&[1, 2]);
        let mut t = ClaimToken::new(s.digest());
        assert!(matches!(
            t.claim(&uses(&[1])),
            Err(EngineError::KeyClaimMismatch)
        ));
        let mut t = ClaimToken::new(s.digest());
        t.claim(&s).unwrap();
        assert!(matches!(t.claim(&s), Err(EngineError::NoKeyClaim)));
        assert!(matches!(
            ClaimToken::none().claim(&s),
            Err(EngineError::NoKeyClaim)
        ));
    }
}
