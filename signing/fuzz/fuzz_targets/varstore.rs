//! OVMF variable-store parser (and re-serialisation) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(store) = secureboot::varstore::VarStore::parse(data) {
        let _ = store.to_bytes();
    }
    let _ = secureboot::varstore::SignatureList::parse_all(data);
});
