//! The key-use ledger: a TPM NV index recording every manual key that was ever
//! installed on this device, so that none is installed twice.
//!
//! Why: a manually keyed SA starts at sequence number 1 — the explicit IV, hence the
//! AEAD nonce — and with an empty replay window each time the Viaduct installs it. A
//! second installation under the same key (the Viaduct restarted, the gateway
//! rebooted, another image with the same key) would seal other packets under used
//! (key, nonce) pairs, which with AES-GCM or ChaCha20-Poly1305 gives a wire observer
//! the XOR of plaintexts and forgeries, and would accept every captured packet again.
//!
//! How: the plan names the policy's manual keys by one-way [`KeyUse`] records (16
//! bytes each; computed by the builder with `policy_blob::KeyUse`, the same formula).
//! Before each start of the Viaduct the init calls [`claim`]: if any record is already
//! in the ledger the Viaduct is not started (the gateway stays closed and says why);
//! otherwise the records are appended, read back, and only then is the Viaduct started
//! with `--key-claim` = [`set_digest`] of the records (it checks the digest against its
//! own policy and refuses manual SAs without it). The runtime also remembers in memory
//! that the keys were installed, so even a TPM that lost the write cannot make it
//! start the Viaduct twice in one boot.
//!
//! The index: handle [`LEDGER_INDEX`] (TCG owner range), [`LEDGER_SIZE`] bytes =
//! [`LEDGER_ENTRIES`] records, ordinary, `authread|authwrite|no_da`, empty
//! authorisation, no policy; defined by the init on first use under the owner
//! hierarchy (empty owner password, as after a TPM clear; where the owner password is
//! set, an administrator defines it beforehand: `tpm2_nvdefine 0x01800a11 -C o -s 1024
//! -a "authread|authwrite|no_da"`) and zeroed. Records are appended after the last
//! non-zero one; an all-zero entry is free. An index at that handle with other
//! attributes or size is not used (the ledger is refused, not repurposed). A full
//! ledger refuses new keys (undefine it only with the keys it records retired).
//!
//! Limits: whoever can clear the TPM (the owner hierarchy's `TPM2_Clear`, firmware
//! menus, physical presence) erases the ledger. Manual keys are for lab images only
//! (the profile validation refuses them otherwise); production tunnels are keyed by IKE.
//!
//! Nothing in this module panics on any TPM response.

use crate::error::{Error, Result};
use crate::tpm::{self, NvPublic, Transport, NV_CHUNK, TPM_ALG_SHA256};
pub use gateway_plan::keyuse::{set_digest, KeyUse, ENTRY_LEN, LEDGER_ENTRIES};

/// The NV index handle of the ledger (owner range 0x01800000–0x01BFFFFF).
pub const LEDGER_INDEX: u32 = 0x0180_0A11;
/// Size of the NV index in bytes.
pub const LEDGER_SIZE: u16 = (ENTRY_LEN * LEDGER_ENTRIES) as u16;
/// The index's attributes (ordinary index).
pub const LEDGER_ATTRIBUTES: u32 =
    tpm::TPMA_NV_AUTHWRITE | tpm::TPMA_NV_AUTHREAD | tpm::TPMA_NV_NO_DA;

/// The ledger's public area as the init defines it.
pub const LEDGER_PUBLIC: NvPublic = NvPublic {
    index: LEDGER_INDEX,
    name_alg: TPM_ALG_SHA256,
    attributes: LEDGER_ATTRIBUTES,
    auth_policy_len: 0,
    data_size: LEDGER_SIZE,
};

/// What [`claim`] found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Claim {
    /// None of the keys was in the ledger; they are now (read back).
    Recorded {
        /// Records in the ledger now.
        used: usize,
        /// Whether the index was defined by this claim.
        defined: bool,
    },
    /// `reused` of the keys are in the ledger already: nothing was written.
    AlreadyUsed {
        /// How many.
        reused: usize,
    },
}

fn ledger_err(problem: impl Into<String>) -> Error {
    Error::KeyLedger {
        index: LEDGER_INDEX,
        problem: problem.into(),
    }
}

fn read_all(t: &mut dyn Transport) -> Result<Vec<u8>> {
    let mut data = Vec::with_capacity(usize::from(LEDGER_SIZE));
    for off in (0..usize::from(LEDGER_SIZE)).step_by(NV_CHUNK) {
        let n = NV_CHUNK.min(usize::from(LEDGER_SIZE) - off) as u16;
        let resp = t.transact(&tpm::nv_read_command(LEDGER_INDEX, off as u16, n))?;
        data.extend_from_slice(&tpm::parse_nv_read_response(&resp, n)?);
    }
    Ok(data)
}

fn write_at(t: &mut dyn Transport, offset: usize, data: &[u8]) -> Result<()> {
    for (i, chunk) in data.chunks(NV_CHUNK).enumerate() {
        let off = u16::try_from(offset + i * NV_CHUNK)
            .map_err(|_| ledger_err("write beyond the index"))?;
        let resp = t.transact(&tpm::nv_write_command(LEDGER_INDEX, off, chunk))?;
        tpm::parse_empty_session_response(&resp, "NV_Write")?;
    }
    Ok(())
}

/// Makes sure the ledger index exists as [`LEDGER_PUBLIC`] and has been written;
/// returns whether it was defined now.
fn ensure_index(t: &mut dyn Transport) -> Result<bool> {
    let resp = t.transact(&tpm::nv_read_public_command(LEDGER_INDEX))?;
    let public = match tpm::parse_nv_read_public_response(&resp) {
        Ok(p) => Some(p),
        Err(Error::TpmResponseCode { rc, .. }) if tpm::rc_is_no_handle(rc) => None,
        Err(e) => return Err(e),
    };
    let defined = match public {
        None => {
            let resp = t.transact(&tpm::nv_define_space_command(&LEDGER_PUBLIC))?;
            tpm::parse_empty_session_response(&resp, "NV_DefineSpace").map_err(|e| {
                ledger_err(format!(
                    "cannot define it ({e}); if the owner hierarchy has a password, define it \
                     beforehand: tpm2_nvdefine {LEDGER_INDEX:#010x} -C o -s {LEDGER_SIZE} \
                     -a \"authread|authwrite|no_da\""
                ))
            })?;
            true
        }
        Some(p) => {
            let mine = NvPublic {
                attributes: p.attributes & !tpm::TPMA_NV_WRITTEN,
                ..p
            };
            if mine != LEDGER_PUBLIC {
                return Err(ledger_err(format!(
                    "the index exists with other properties (attributes {:#010x}, name \
                     algorithm {:#06x}, policy {} bytes, size {}; expected {LEDGER_ATTRIBUTES:#010x}, \
                     SHA-256, none, {LEDGER_SIZE}); it is not ours, so it is not used",
                    p.attributes, p.name_alg, p.auth_policy_len, p.data_size
                )));
            }
            if p.attributes & tpm::TPMA_NV_WRITTEN != 0 {
                return Ok(false);
            }
            false
        }
    };
    // Defined but never written (now, or a claim interrupted before): zero it.
    write_at(t, 0, &[0u8; LEDGER_SIZE as usize])?;
    Ok(defined)
}

/// Claims `keys` (see the module docs): if none is recorded, appends them and reads
/// them back. Any TPM failure is an error (the caller stays closed).
pub fn claim(t: &mut dyn Transport, keys: &[KeyUse]) -> Result<Claim> {
    let defined = ensure_index(t)?;
    let data = read_all(t)?;
    let entries: Vec<&[u8]> = data.chunks_exact(ENTRY_LEN).collect();
    let reused = keys
        .iter()
        .filter(|k| entries.iter().any(|e| *e == k.0))
        .count();
    if reused > 0 {
        return Ok(Claim::AlreadyUsed { reused });
    }
    let used = entries
        .iter()
        .rposition(|e| e.iter().any(|&b| b != 0))
        .map_or(0, |i| i + 1);
    let mut new: Vec<KeyUse> = keys.to_vec();
    new.sort();
    new.dedup();
    if used + new.len() > LEDGER_ENTRIES {
        return Err(ledger_err(format!(
            "full: {used} of {LEDGER_ENTRIES} records used, {} more needed; the keys it \
             records must never be used again — retire them, then undefine the index \
             (tpm2_nvundefine {LEDGER_INDEX:#010x})",
            new.len()
        )));
    }
    let bytes: Vec<u8> = new.iter().flat_map(|k| k.0).collect();
    write_at(t, used * ENTRY_LEN, &bytes)?;
    let back = read_all(t)?;
    if back.get(used * ENTRY_LEN..(used + new.len()) * ENTRY_LEN) != Some(&bytes[..]) {
        return Err(ledger_err("the records written could not be read back"));
    }
    Ok(Claim::Recorded {
        used: used + new.len(),
        defined,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An NV-only TPM model following the TPM 2.0 Library rules the ledger relies on
    /// (handle errors, the WRITTEN bit, bounds), with fault injection.
    #[derive(Default)]
    pub(crate) struct NvTpm {
        pub public: Option<NvPublic>,
        pub data: Vec<u8>,
        /// Fail the n-th NV_Write from now (0 = next) with TPM_RC_FAILURE.
        pub fail_write: Option<usize>,
        /// Acknowledge NV_Write without storing (a TPM that loses writes).
        pub drop_writes: bool,
        pub commands: Vec<u32>,
    }

    fn resp(tag: u16, rc: u32, body: &[u8]) -> Vec<u8> {
        let mut r = tag.to_be_bytes().to_vec();
        r.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
        r.extend_from_slice(&rc.to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    fn session_resp(params: &[u8]) -> Vec<u8> {
        let mut b = (params.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(params);
        b.extend_from_slice(&[0, 0, 1, 0, 0]); // nonce, attributes, hmac
        resp(tpm::TPM_ST_SESSIONS, 0, &b)
    }

    impl Transport for NvTpm {
        fn transact(&mut self, c: &[u8]) -> Result<Vec<u8>> {
            let cc = u32::from_be_bytes(c[6..10].try_into().unwrap());
            self.commands.push(cc);
            let u16_at = |o: usize| u16::from_be_bytes([c[o], c[o + 1]]);
            let u32_at = |o: usize| u32::from_be_bytes(c[o..o + 4].try_into().unwrap());
            const RC_HANDLE_1: u32 = 0x18B;
            const RC_NV_UNINITIALIZED: u32 = 0x14A;
            const RC_NV_DEFINED: u32 = 0x14C;
            const RC_NV_RANGE: u32 = 0x146;
            match cc {
                tpm::TPM_CC_NV_READ_PUBLIC => match self.public {
                    None => Ok(resp(tpm::TPM_ST_NO_SESSIONS, RC_HANDLE_1, &[])),
                    Some(p) => {
                        let mut b = 14u16.to_be_bytes().to_vec();
                        b.extend_from_slice(&p.index.to_be_bytes());
                        b.extend_from_slice(&p.name_alg.to_be_bytes());
                        b.extend_from_slice(&p.attributes.to_be_bytes());
                        b.extend_from_slice(&0u16.to_be_bytes());
                        b.extend_from_slice(&p.data_size.to_be_bytes());
                        b.extend_from_slice(&34u16.to_be_bytes());
                        b.extend_from_slice(&[0; 34]);
                        Ok(resp(tpm::TPM_ST_NO_SESSIONS, 0, &b))
                    }
                },
                tpm::TPM_CC_NV_DEFINE_SPACE => {
                    if self.public.is_some() {
                        return Ok(resp(tpm::TPM_ST_SESSIONS, RC_NV_DEFINED, &[]));
                    }
                    // header 10, handle 4, auth 4+9, auth2b 2, public 2+14
                    let p = 10 + 4 + 13 + 2 + 2;
                    self.public = Some(NvPublic {
                        index: u32_at(p),
                        name_alg: u16_at(p + 4),
                        attributes: u32_at(p + 6),
                        auth_policy_len: u16_at(p + 10),
                        data_size: u16_at(p + 12),
                    });
                    self.data = vec![0xff; usize::from(u16_at(p + 12))];
                    Ok(session_resp(&[]))
                }
                tpm::TPM_CC_NV_WRITE => {
                    if let Some(n) = self.fail_write.as_mut() {
                        if *n == 0 {
                            self.fail_write = None;
                            return Ok(resp(tpm::TPM_ST_SESSIONS, 0x101, &[]));
                        }
                        *n -= 1;
                    }
                    let p = 10 + 8 + 13;
                    let len = usize::from(u16_at(p));
                    let data = &c[p + 2..p + 2 + len];
                    let off = usize::from(u16_at(p + 2 + len));
                    if off + len > self.data.len() {
                        return Ok(resp(tpm::TPM_ST_SESSIONS, RC_NV_RANGE, &[]));
                    }
                    if !self.drop_writes {
                        self.data[off..off + len].copy_from_slice(data);
                        if let Some(p) = self.public.as_mut() {
                            p.attributes |= tpm::TPMA_NV_WRITTEN;
                        }
                    }
                    Ok(session_resp(&[]))
                }
                tpm::TPM_CC_NV_READ => {
                    let Some(p) = self.public else {
                        return Ok(resp(tpm::TPM_ST_SESSIONS, RC_HANDLE_1, &[]));
                    };
                    if p.attributes & tpm::TPMA_NV_WRITTEN == 0 {
                        return Ok(resp(tpm::TPM_ST_SESSIONS, RC_NV_UNINITIALIZED, &[]));
                    }
                    let at = 10 + 8 + 13;
                    let size = usize::from(u16_at(at));
                    let off = usize::from(u16_at(at + 2));
                    if off + size > self.data.len() {
                        return Ok(resp(tpm::TPM_ST_SESSIONS, RC_NV_RANGE, &[]));
                    }
                    let mut params = (size as u16).to_be_bytes().to_vec();
                    params.extend_from_slice(&self.data[off..off + size]);
                    Ok(session_resp(&params))
                }
                _ => Ok(resp(tpm::TPM_ST_NO_SESSIONS, 0x143, &[])),
            }
        }
    }

    fn k(b: u8) -> KeyUse {
        KeyUse([b; ENTRY_LEN])
    }

    #[test]
    fn first_claim_defines_zeroes_and_records_second_is_refused() {
        let mut t = NvTpm::default();
        assert_eq!(
            claim(&mut t, &[k(2), k(1)]).unwrap(),
            Claim::Recorded {
                used: 2,
                defined: true
            }
        );
        assert_eq!(
            t.public.unwrap().attributes & !tpm::TPMA_NV_WRITTEN,
            LEDGER_ATTRIBUTES
        );
        assert_eq!(&t.data[..32], &[[1u8; 16], [2u8; 16]].concat()[..]);
        assert!(t.data[32..].iter().all(|&b| b == 0));
        let before = t.data.clone();
        // The same set, a set sharing one key: refused, nothing written.
        assert_eq!(
            claim(&mut t, &[k(1), k(2)]).unwrap(),
            Claim::AlreadyUsed { reused: 2 }
        );
        assert_eq!(
            claim(&mut t, &[k(9), k(2)]).unwrap(),
            Claim::AlreadyUsed { reused: 1 }
        );
        assert_eq!(t.data, before);
        // New keys are appended.
        assert_eq!(
            claim(&mut t, &[k(9)]).unwrap(),
            Claim::Recorded {
                used: 3,
                defined: false
            }
        );
        assert_eq!(&t.data[32..48], &[9u8; 16]);
    }

    #[test]
    fn full_ledger_foreign_index_and_tpm_failures_are_errors() {
        let mut t = NvTpm::default();
        let many: Vec<KeyUse> = (1..=LEDGER_ENTRIES as u8).map(k).collect();
        claim(&mut t, &many).unwrap();
        let e = claim(&mut t, &[k(200)]).unwrap_err().to_string();
        assert!(e.contains("full: 64 of 64"), "{e}");

        let mut t = NvTpm {
            public: Some(NvPublic {
                attributes: LEDGER_ATTRIBUTES | 1 << 1, // + OWNERWRITE
                ..LEDGER_PUBLIC
            }),
            ..NvTpm::default()
        };
        let e = claim(&mut t, &[k(1)]).unwrap_err().to_string();
        assert!(e.contains("not ours"), "{e}");
        let mut t = NvTpm {
            public: Some(NvPublic {
                data_size: 2048,
                ..LEDGER_PUBLIC
            }),
            ..NvTpm::default()
        };
        assert!(claim(&mut t, &[k(1)]).is_err());

        // A write that fails: an error; what was recorded stays; retrying finds the
        // key recorded only if it was written, never installs it twice.
        let mut t = NvTpm::default();
        claim(&mut t, &[k(1)]).unwrap();
        t.fail_write = Some(0);
        assert!(claim(&mut t, &[k(2), k(3)]).is_err());
        // A TPM that acknowledges but loses writes: caught by the read-back.
        let mut t = NvTpm {
            drop_writes: true,
            ..NvTpm::default()
        };
        t.public = Some(NvPublic {
            attributes: LEDGER_ATTRIBUTES | tpm::TPMA_NV_WRITTEN,
            ..LEDGER_PUBLIC
        });
        t.data = vec![0; usize::from(LEDGER_SIZE)];
        let e = claim(&mut t, &[k(1)]).unwrap_err().to_string();
        assert!(e.contains("read back"), "{e}");
    }

    #[test]
    fn index_defined_but_never_written_is_zeroed_first() {
        let mut t = NvTpm {
            public: Some(LEDGER_PUBLIC),
            data: vec![0xff; usize::from(LEDGER_SIZE)],
            ..NvTpm::default()
        };
        assert_eq!(
            claim(&mut t, &[k(5)]).unwrap(),
            Claim::Recorded {
                used: 1,
                defined: false
            }
        );
        assert!(t.data[16..].iter().all(|&b| b == 0));
    }

    #[test]
    fn set_digest_is_order_free_and_matches_the_documented_formula() {
        let d = set_digest(&[k(2), k(1), k(2)]);
        let mut b = b"appliance key-use set v1\0".to_vec();
        b.extend_from_slice(&[1u8; 16]);
        b.extend_from_slice(&[2u8; 16]);
        assert_eq!(d, crate::digest::Sha256Digest::of(&b));
        assert_eq!(KeyUse::from_hex(&k(0xab).to_hex()), Some(k(0xab)));
        assert_eq!(KeyUse::from_hex("AB"), None);
    }

    proptest::proptest! {
        #[test]
        fn nv_parsers_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..700)) {
            let _ = tpm::parse_nv_read_public_response(&b);
            let _ = tpm::parse_nv_read_response(&b, 512);
            let _ = tpm::parse_empty_session_response(&b, "NV_Write");
        }
    }
}
