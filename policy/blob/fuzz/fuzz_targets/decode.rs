//! Arbitrary bytes into `Policy::decode`: must never panic, and whatever it
//! accepts must re-encode to the same bytes (canonical encoding).
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy_blob::Policy;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Policy::decode(data) {
        assert_eq!(p.encode(), data, "accepted blob is not canonical");
    }
});
