//! The identity signer's messages (`attest_wire::signer`) on arbitrary bytes: what
//! the signer child reads from the IKE process, and what the IKE process reads
//! back. An answer that parses re-encodes to the same bytes.
#![no_main]

use attest_wire::signer::{Answer, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(r) = Request::decode(data) {
        assert_eq!(&r.encode()[..], data);
    }
    if let Some(a) = Answer::decode(data) {
        assert_eq!(a.encode(), data);
    }
});
