//! The key-use ledger (`keyledger::claim`) against a TPM whose every answer the fuzzer
//! writes: the NV parsers (`parse_nv_read_public_response`, `parse_nv_read_response`,
//! `parse_empty_session_response`) and the claim logic behind them (foreign index,
//! never-written index, records found, full ledger, read-back). Input: one byte of how
//! many keys to claim (records derived from it), then responses, each
//! `[flags][len: u16 BE][bytes]`; with `flags & 1` the harness writes the real length
//! into `responseSize` (so the parsers' first check passes). A claim may fail however
//! the TPM answers; it must never panic, and it may report `Recorded` only after the
//! TPM answered every write and the read-back.
#![no_main]

use gateway::keyledger::{self, Claim, KeyUse};
use gateway::tpm::Transport;
use libfuzzer_sys::fuzz_target;

struct Scripted<'a> {
    data: &'a [u8],
    writes: usize,
}

impl Transport for Scripted<'_> {
    fn transact(&mut self, command: &[u8]) -> gateway::Result<Vec<u8>> {
        if command.get(6..10) == Some(&gateway::tpm::TPM_CC_NV_WRITE.to_be_bytes()[..]) {
            self.writes += 1;
        }
        if self.data.len() < 3 {
            return Err(gateway::Error::TpmMalformed("script ended".into()));
        }
        let flags = self.data[0];
        let len = usize::from(u16::from_be_bytes([self.data[1], self.data[2]]));
        let rest = &self.data[3..];
        let take = len.min(rest.len());
        let mut resp = rest[..take].to_vec();
        self.data = &rest[take..];
        if flags & 1 == 1 && resp.len() >= 6 {
            let n = u32::try_from(resp.len()).unwrap_or(u32::MAX);
            resp[2..6].copy_from_slice(&n.to_be_bytes());
        }
        Ok(resp)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, script)) = data.split_first() else {
        return;
    };
    let keys: Vec<KeyUse> = (0..n % 80).map(|i| KeyUse([i.wrapping_add(1); 16])).collect();
    let mut t = Scripted { data: script, writes: 0 };
    if let Ok(Claim::Recorded { used, .. }) = keyledger::claim(&mut t, &keys) {
        assert!(used >= keys.len() && used <= keyledger::LEDGER_ENTRIES);
        assert!(keys.is_empty() || t.writes > 0, "recorded without writing");
    }
});
