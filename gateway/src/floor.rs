//! The anti-rollback floor: the lowest security version this device still
//! runs, in a TPM NV counter.
//!
//! A TPM counter only counts up, one `NV_Increment` at a time, and starts —
//! at its first increment — at the highest value any counter of the TPM ever
//! had, not at 0. So the floor is kept as two indices: the counter
//! [`FLOOR_COUNTER`] and, written once right after its first increment and
//! then write-locked, its starting value [`FLOOR_BASE`]; the floor is their
//! difference. Raising it to `v` increments the counter until the difference
//! is `v`. Nothing lowers it: the counter cannot go down, and the base
//! cannot be rewritten (`TPMA_NV_WRITEDEFINE`, locked).
//!
//! When: at boot, before anything starts, an image whose security version is
//! below the floor stays closed (a rollback). After a good boot the init
//! raises the floor to the lowest security version among the bootable
//! entries on the ESP (this one and any other with tries left), so the
//! fallback keeps booting (ChromeOS's rule). Both indices are defined by the
//! init under the owner hierarchy (empty owner password, as after a TPM
//! clear; otherwise an administrator defines them beforehand, see
//! docs/admin-guide.md).
//!
//! Limits: whoever can clear the TPM or undefine the indices with the owner's
//! authorisation resets the floor (to 0: every image runs again); a TPM
//! that loses writes cannot raise it.
//!
//! Nothing in this module panics on any TPM response.

use crate::error::{Error, Result};
use crate::tpm::{self, NvPublic, Transport, TPM_ALG_SHA256};

/// The counter (owner range).
pub const FLOOR_COUNTER: u32 = 0x0180_0A12;
/// Its starting value, written once.
pub const FLOOR_BASE: u32 = 0x0180_0A13;
/// Most increments one raise may take (a security version is raised by
/// small steps; a huge jump is a mistake, not a release).
pub const MAX_STEP: u64 = 4096;

const COUNTER_PUBLIC: NvPublic = NvPublic {
    index: FLOOR_COUNTER,
    name_alg: TPM_ALG_SHA256,
    attributes: tpm::TPMA_NV_COUNTER
        | tpm::TPMA_NV_AUTHWRITE
        | tpm::TPMA_NV_AUTHREAD
        | tpm::TPMA_NV_NO_DA,
    auth_policy_len: 0,
    data_size: 8,
};

const BASE_PUBLIC: NvPublic = NvPublic {
    index: FLOOR_BASE,
    name_alg: TPM_ALG_SHA256,
    attributes: tpm::TPMA_NV_WRITEDEFINE
        | tpm::TPMA_NV_AUTHWRITE
        | tpm::TPMA_NV_AUTHREAD
        | tpm::TPMA_NV_NO_DA,
    auth_policy_len: 0,
    data_size: 8,
};

fn err(problem: impl Into<String>) -> Error {
    Error::Floor {
        counter: FLOOR_COUNTER,
        base: FLOOR_BASE,
        problem: problem.into(),
    }
}

/// The index's public area, or `None` when it is not defined.
fn public(t: &mut dyn Transport, index: u32) -> Result<Option<NvPublic>> {
    let resp = t.transact(&tpm::nv_read_public_command(index))?;
    match tpm::parse_nv_read_public_response(&resp) {
        Ok(p) => Ok(Some(p)),
        Err(Error::TpmResponseCode { rc, .. }) if tpm::rc_is_no_handle(rc) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks an existing index against what the init defines (the TPM's own
/// state bits aside).
fn check_ours(p: &NvPublic, want: &NvPublic) -> Result<()> {
    let mine = NvPublic {
        attributes: p.attributes & !(tpm::TPMA_NV_WRITTEN | tpm::TPMA_NV_WRITELOCKED),
        ..*p
    };
    if mine != *want {
        return Err(err(format!(
            "NV {:#010x} exists with other properties (attributes {:#010x}, size {}); it is not ours",
            p.index, p.attributes, p.data_size
        )));
    }
    Ok(())
}

fn read_u64(t: &mut dyn Transport, index: u32) -> Result<u64> {
    let resp = t.transact(&tpm::nv_read_command(index, 0, 8))?;
    let b = tpm::parse_nv_read_response(&resp, 8)?;
    let a: [u8; 8] = b.as_slice().try_into().map_err(|_| err("short read"))?;
    Ok(u64::from_be_bytes(a))
}

fn run(t: &mut dyn Transport, cmd: &[u8], what: &'static str) -> Result<()> {
    let resp = tpm::transact_retrying(t, cmd)?;
    tpm::parse_empty_session_response(&resp, what)
}

/// The floor, or `None` when this device has none yet (every version runs).
///
/// # Errors
/// A TPM failure, or an index at our handles that is not ours.
pub fn read(t: &mut dyn Transport) -> Result<Option<u64>> {
    let (Some(c), Some(b)) = (public(t, FLOOR_COUNTER)?, public(t, FLOOR_BASE)?) else {
        return Ok(None);
    };
    check_ours(&c, &COUNTER_PUBLIC)?;
    check_ours(&b, &BASE_PUBLIC)?;
    if c.attributes & tpm::TPMA_NV_WRITTEN == 0 || b.attributes & tpm::TPMA_NV_WRITELOCKED == 0 {
        // Interrupted while being set up: no floor yet.
        return Ok(None);
    }
    let (counter, base) = (read_u64(t, FLOOR_COUNTER)?, read_u64(t, FLOOR_BASE)?);
    counter
        .checked_sub(base)
        .map(Some)
        .ok_or_else(|| err(format!("counter {counter} is below its base {base}")))
}

/// Defines and starts the two indices if needed; returns the floor.
fn setup(t: &mut dyn Transport) -> Result<u64> {
    if let Some(f) = read(t)? {
        return Ok(f);
    }
    let define = |t: &mut dyn Transport, p: &NvPublic| -> Result<()> {
        match public(t, p.index)? {
            Some(have) => check_ours(&have, p),
            None => run(t, &tpm::nv_define_space_command(p), "NV_DefineSpace").map_err(|e| {
                err(format!(
                    "cannot define NV {:#010x} ({e}); if the owner hierarchy has a password, \
                     define it beforehand (docs/admin-guide.md, anti-rollback)",
                    p.index
                ))
            }),
        }
    };
    define(t, &COUNTER_PUBLIC)?;
    define(t, &BASE_PUBLIC)?;
    let c = public(t, FLOOR_COUNTER)?.ok_or_else(|| err("the counter vanished"))?;
    if c.attributes & tpm::TPMA_NV_WRITTEN == 0 {
        run(
            t,
            &tpm::nv_self_auth_command(tpm::TPM_CC_NV_INCREMENT, FLOOR_COUNTER),
            "NV_Increment",
        )?;
    }
    let b = public(t, FLOOR_BASE)?.ok_or_else(|| err("the base vanished"))?;
    if b.attributes & tpm::TPMA_NV_WRITELOCKED == 0 {
        // Nothing raised the counter since its first increment: the base
        // exists only with it (a raise needs both).
        let start = read_u64(t, FLOOR_COUNTER)?;
        let resp = tpm::transact_retrying(
            t,
            &tpm::nv_write_command(FLOOR_BASE, 0, &start.to_be_bytes()),
        )?;
        tpm::parse_empty_session_response(&resp, "NV_Write")?;
        run(
            t,
            &tpm::nv_self_auth_command(tpm::TPM_CC_NV_WRITE_LOCK, FLOOR_BASE),
            "NV_WriteLock",
        )?;
    }
    read(t)?.ok_or_else(|| err("set up, but it does not read back"))
}

/// Raises the floor to `to` (never lowers it); returns (before, after).
///
/// # Errors
/// A TPM failure, or a step larger than [`MAX_STEP`].
pub fn raise(t: &mut dyn Transport, to: u64) -> Result<(u64, u64)> {
    let before = setup(t)?;
    if to <= before {
        return Ok((before, before));
    }
    if to - before > MAX_STEP {
        return Err(err(format!(
            "raising it from {before} to {to} takes more than {MAX_STEP} increments; refused"
        )));
    }
    for _ in before..to {
        run(
            t,
            &tpm::nv_self_auth_command(tpm::TPM_CC_NV_INCREMENT, FLOOR_COUNTER),
            "NV_Increment",
        )?;
    }
    let after = read(t)?.ok_or_else(|| err("raised, but it does not read back"))?;
    if after < to {
        return Err(err(format!("raised to {to}, but it reads {after}")));
    }
    Ok((before, after))
}
