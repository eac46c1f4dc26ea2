//! The TPM response parsers (`tpm::parse_pcr_read_response`,
//! `tpm::parse_pcr_extend_response`) on arbitrary bytes. The first three bytes choose
//! the PCRs asked for, the fourth whether the harness sets `responseSize` to the real
//! length (a parser that checks it first would otherwise see few inputs get past it).
#![no_main]

use gateway::tpm::{self, PcrIndex, PcrSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let bits = u32::from(data[0]) | u32::from(data[1]) << 8 | u32::from(data[2]) << 16;
    let asked: Vec<PcrIndex> = (0..24)
        .filter(|n| bits & 1 << n != 0)
        .filter_map(PcrIndex::new)
        .collect();
    let asked = PcrSet::of(&asked);
    let mut resp = data[4..].to_vec();
    if data[3] & 1 == 1 && resp.len() >= 6 {
        let n = u32::try_from(resp.len()).unwrap_or(u32::MAX);
        resp[2..6].copy_from_slice(&n.to_be_bytes());
    }
    if let Ok(r) = tpm::parse_pcr_read_response(&resp, asked) {
        let _ = format!("{r:?}");
    }
    let _ = tpm::parse_pcr_extend_response(&resp);
});
