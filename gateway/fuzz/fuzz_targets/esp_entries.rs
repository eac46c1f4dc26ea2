//! The ESP readers never panic: entry names from the boot loader's
//! variables and the directory, and a UKI's security version from its PE
//! headers and `.osrel` (a physical attacker writes both).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = gateway::esp::entry_path(s);
        if let Some((stem, _, _)) = gateway::esp::counter(s) {
            assert!(s.starts_with(stem));
        }
        let _ = gateway::esp::good_path(s);
    }
    let _ = gateway::esp::uki_security_version(&mut std::io::Cursor::new(data));
});
