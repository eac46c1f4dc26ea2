//! Authenticode signature extraction and parsing on arbitrary PE bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sigs) = secureboot::authenticode::signatures(data) {
        for s in sigs {
            let _ = secureboot::authenticode::parse_signature(&s);
        }
    }
    let _ = secureboot::authenticode::parse_signature(data);
});
