//! Evidence and reference values in other verifiers' formats.
//!
//! - [`keylime_tpm_policy`]: Keylime's `tpm_policy` (PCR index → accepted values, and
//!   the mask of PCRs to quote) from one or more builds' reference values — several
//!   builds during a rollout, so the fleet accepts the old and the new image.
//! - [`tpm2_tools_pcrs`]: the tpm2-tools "serialized" PCR file (`tpm2_quote -o`),
//!   which `tpm2_checkquote -f` and Keylime read next to a quote.

use std::collections::{BTreeMap, BTreeSet};

use signing::measure::ReferenceValues;

/// Keylime's `tpm_policy` accepting every value of every accepted set of `refs`
/// (PCRs 4, 7, 11 and 12): `{"mask": "0x1890", "4": ["<hex>", …], …}`.
///
/// Keylime checks each PCR against its own list, not sets of PCRs together: a
/// quote mixing one build's PCR 4 with another's PCR 11 passes Keylime where
/// `appliance attest` (whole accepted sets) refuses it.
pub fn keylime_tpm_policy(refs: &[ReferenceValues]) -> serde_json::Value {
    let mut values: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for r in refs {
        for set in &r.accepted {
            for (p, v) in &set.pcrs {
                values.entry(*p).or_default().insert(v.to_lowercase());
            }
        }
    }
    let mask: u32 = values
        .keys()
        .filter(|p| **p < 24)
        .fold(0, |m, p| m | 1 << p);
    let mut obj = serde_json::Map::new();
    for (p, vs) in values {
        obj.insert(
            p.to_string(),
            serde_json::Value::Array(vs.into_iter().map(serde_json::Value::String).collect()),
        );
    }
    obj.insert(
        "mask".into(),
        serde_json::Value::String(format!("{mask:#x}")),
    );
    serde_json::Value::Object(obj)
}

/// The tpm2-tools "serialized" PCR file for the SHA-256 PCRs in `mask` with `values`
/// (ascending): a little-endian memory image of `TPML_PCR_SELECTION` (u32 count, 16
/// slots of `{u16 hash, u8 sizeofSelect, u8 pcrSelect[4], pad}`), then u32 n and n
/// `TPML_DIGEST` (u32 count, 8 slots of `{u16 size, u8 buffer[64]}`), 8 values each.
pub fn tpm2_tools_pcrs(mask: u32, values: &[[u8; 32]]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&1u32.to_le_bytes());
    for slot in 0..16 {
        if slot == 0 {
            out.extend_from_slice(&attest_wire::tpms::ALG_SHA256.to_le_bytes());
            out.push(3);
            out.extend_from_slice(&mask.to_le_bytes());
            out.push(0);
        } else {
            out.extend_from_slice(&[0; 8]);
        }
    }
    let chunks: Vec<&[[u8; 32]]> = values.chunks(8).collect();
    out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    for c in chunks {
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
        for i in 0..8 {
            match c.get(i) {
                Some(v) => {
                    out.extend_from_slice(&32u16.to_le_bytes());
                    out.extend_from_slice(v);
                    out.extend_from_slice(&[0; 32]);
                }
                None => out.extend_from_slice(&[0; 66]),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_files_have_tpm2_tools_sizes() {
        assert_eq!(tpm2_tools_pcrs(0x8ff, &[[1; 32]; 9]).len(), 1200);
        assert_eq!(tpm2_tools_pcrs(0xff, &[[1; 32]; 8]).len(), 668);
        let f = tpm2_tools_pcrs(0x0800, &[[7; 32]]);
        assert_eq!(&f[..11], &[1, 0, 0, 0, 0x0b, 0, 3, 0, 8, 0, 0]);
    }
}
