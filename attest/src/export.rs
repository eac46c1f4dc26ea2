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

/// Writes `evidence` and the request it answers into `dir` in the formats other tools
/// read: `ak.pub` (`TPM2B_PUBLIC`), `quote.msg` (`TPMS_ATTEST`), `quote.sig`
/// (`TPMT_SIGNATURE`), `quote.pcrs` ([`tpm2_tools_pcrs`]), `eventlog.bin` (the
/// firmware's TCG log), `runtime.log` (the init's events), `request.json` (nonce,
/// PCR mask, address) and `qualifying.hex` (what `tpm2_checkquote -q` takes); with a
/// device identity, `identity.pub`, `identity.certify` and `identity.sig` (the AK's
/// `TPM2_Certify` of it). Each file is written atomically.
///
/// # Errors
/// A file cannot be written.
pub fn save_evidence(
    dir: &std::path::Path,
    request: &attest_wire::proto::QuoteRequest,
    evidence: &attest_wire::proto::Evidence,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ak = attest_wire::tpms::Public::parse_tpm2b(&evidence.ak_public)
        .map_err(|e| format!("the AK: {e}"))?;
    let name = ak.name().map_err(|e| e.to_string())?;
    let qualifying = attest_wire::proto::binding(&request.nonce, &name, &request.target);
    let req = serde_json::json!({
        "nonce": hex::encode(request.nonce),
        "pcrs": format!("{:#x}", request.pcrs),
        "target": request.target,
    });
    for (f, bytes) in [
        ("ak.pub", evidence.ak_public.clone()),
        ("quote.msg", evidence.quote.clone()),
        ("quote.sig", evidence.signature.clone()),
        (
            "quote.pcrs",
            tpm2_tools_pcrs(request.pcrs, &evidence.pcr_values),
        ),
        ("eventlog.bin", evidence.event_log.clone()),
        ("runtime.log", evidence.runtime_log.clone()),
        (
            "qualifying.hex",
            format!("{}\n", hex::encode(qualifying)).into_bytes(),
        ),
        ("request.json", format!("{req:#}\n").into_bytes()),
    ] {
        crate::fleet::write_atomic(&dir.join(f), &bytes)?;
    }
    if let Some(i) = &evidence.identity {
        for (f, bytes) in [
            ("identity.pub", &i.public),
            ("identity.certify", &i.certify),
            ("identity.sig", &i.signature),
        ] {
            crate::fleet::write_atomic(&dir.join(f), bytes)?;
        }
    }
    Ok(())
}

/// Reads what [`save_evidence`] wrote: the request and the evidence.
///
/// # Errors
/// A missing or malformed file.
pub fn load_evidence(
    dir: &std::path::Path,
) -> Result<
    (
        attest_wire::proto::QuoteRequest,
        attest_wire::proto::Evidence,
    ),
    String,
> {
    let read =
        |f: &str| std::fs::read(dir.join(f)).map_err(|e| format!("{}/{f}: {e}", dir.display()));
    let req: serde_json::Value =
        serde_json::from_slice(&read("request.json")?).map_err(|e| format!("request.json: {e}"))?;
    let mut nonce = [0u8; 32];
    hex::decode_to_slice(req["nonce"].as_str().unwrap_or_default(), &mut nonce)
        .map_err(|_| "request.json: nonce".to_string())?;
    let pcrs = u32::from_str_radix(
        req["pcrs"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("0x"),
        16,
    )
    .map_err(|_| "request.json: pcrs".to_string())?;
    let request = attest_wire::proto::QuoteRequest {
        nonce,
        pcrs,
        target: req["target"].as_str().unwrap_or_default().to_owned(),
    };
    // The PCR file: values in its TPML_DIGESTs, in order.
    let file = read("quote.pcrs")?;
    let n = attest_wire::tpms::pcrs_of(pcrs).len();
    let mut values = Vec::with_capacity(n);
    let mut at = 4 + 16 * 8 + 4;
    while values.len() < n {
        let count = file
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or("quote.pcrs: truncated")?;
        for i in 0..count.min(8) {
            let o = at + 4 + i * 66;
            let v: [u8; 32] = file
                .get(o + 2..o + 34)
                .and_then(|b| b.try_into().ok())
                .ok_or("quote.pcrs: truncated")?;
            values.push(v);
        }
        at += 4 + 8 * 66;
        if count == 0 {
            return Err("quote.pcrs: fewer values than PCRs".into());
        }
    }
    values.truncate(n);
    Ok((
        request,
        attest_wire::proto::Evidence {
            ak_public: read("ak.pub")?,
            quote: read("quote.msg")?,
            signature: read("quote.sig")?,
            pcr_values: values,
            event_log: read("eventlog.bin")?,
            runtime_log: read("runtime.log")?,
            identity: if dir.join("identity.pub").exists() {
                Some(attest_wire::proto::CertifiedIdentity {
                    public: read("identity.pub")?,
                    certify: read("identity.certify")?,
                    signature: read("identity.sig")?,
                })
            } else {
                None
            },
        },
    ))
}

/// The SHA-256 PCR values at the end of `tpm2_eventlog`'s YAML (its replay of a
/// firmware log: `pcrs: sha256: N : 0x…`), to compare with a quote.
pub fn tpm2_eventlog_pcrs(yaml: &str) -> BTreeMap<u8, [u8; 32]> {
    yaml.split("pcrs:")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (n, v) = l.trim().split_once(':')?;
            let mut d = [0u8; 32];
            hex::decode_to_slice(v.trim().strip_prefix("0x")?, &mut d).ok()?;
            Some((n.trim().parse().ok()?, d))
        })
        .collect()
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

    #[test]
    fn saved_evidence_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let req = attest_wire::proto::QuoteRequest {
            nonce: [9; 32],
            pcrs: 0x1890ff,
            target: "[2001:db8::1]:7443".into(),
        };
        let ev = attest_wire::proto::Evidence {
            ak_public: attest_wire::tpms::ak_rsa_template().to_tpm2b(),
            quote: vec![1, 2, 3],
            signature: vec![4],
            pcr_values: (0..12u8).map(|i| [i; 32]).collect(),
            event_log: vec![5; 10],
            runtime_log: b"12 x\n".to_vec(),
            identity: Some(attest_wire::proto::CertifiedIdentity {
                public: vec![1],
                certify: vec![2],
                signature: vec![3],
            }),
        };
        save_evidence(dir.path(), &req, &ev).unwrap();
        assert_eq!(load_evidence(dir.path()).unwrap(), (req, ev));
    }
}
