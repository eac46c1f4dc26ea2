//! The attestation key code (`gateway::tpmkey`) against a TPM that answers arbitrary
//! bytes: each command gets the next piece of the input (a u16 length, then that
//! many bytes; `responseSize` set to the piece's length when the length's top bit is
//! set). Nothing may panic, whatever the TPM says.
#![no_main]

use gateway::tpm::Transport;
use libfuzzer_sys::fuzz_target;

struct Fake<'a> {
    data: &'a [u8],
}

impl Transport for Fake<'_> {
    fn transact(&mut self, _command: &[u8]) -> gateway::Result<Vec<u8>> {
        if self.data.len() < 2 {
            return Err(gateway::Error::TpmMalformed("end of input".into()));
        }
        let n = u16::from_be_bytes([self.data[0], self.data[1]]);
        let fix = n & 0x8000 != 0;
        let n = usize::from(n & 0x0fff).min(self.data.len() - 2);
        let mut r = self.data[2..2 + n].to_vec();
        self.data = &self.data[2 + n..];
        if fix && r.len() >= 6 {
            let len = r.len() as u32;
            r[2..6].copy_from_slice(&len.to_be_bytes());
        }
        // "Retry" answers make the code wait 20 ms and ask again: the same path as
        // any other answer afterwards, and too slow to fuzz; they become failures.
        if r.len() >= 10 {
            let rc = u32::from_be_bytes([r[6], r[7], r[8], r[9]]);
            if gateway::tpm::rc_is_retry(rc) {
                r[6..10].copy_from_slice(&0x101u32.to_be_bytes());
            }
        }
        Ok(r)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let mut t = Fake { data: rest };
    match which % 5 {
        0 => {
            let _ = gateway::tpmkey::ensure_ak(&mut t);
        }
        1 => {
            let _ = gateway::tpmkey::quote(&mut t, &[7; 32], 0x1890ff);
        }
        2 => {
            let _ = gateway::tpmkey::activate_credential(&mut t, &[0, 2, 1, 2], &[0, 1, 9]);
        }
        3 => {
            let _ = gateway::tpmkey::ek_certificate(&mut t);
        }
        _ => {
            let _ = gateway::tpmkey::read_public(&mut t, gateway::tpmkey::AK_HANDLE);
            let _ = gateway::tpmkey::ek_public(&mut t);
        }
    }
});
