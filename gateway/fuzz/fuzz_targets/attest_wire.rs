//! Every parser of `attest-wire` on arbitrary bytes: TPM public areas (bare and
//! `TPM2B`), `TPMS_ATTEST`, `TPMT_SIGNATURE`, agent frames and the typed messages
//! read from them, the runtime log and the signed PCR policy. Whatever parses is re-marshalled and parsed
//! again to the same value.
#![no_main]

use attest_wire::proto::{Challenge, Evidence, Frame, Identity, Proof, QuoteRequest};
use attest_wire::tpms::{Attest, Public, Signature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Public::parse(data) {
        assert_eq!(Public::parse(&p.to_bytes()).as_ref(), Ok(&p));
        let _ = p.name();
        let _ = p.ak_violations();
    }
    let _ = Public::parse_tpm2b(data);
    let _ = Attest::parse(data);
    let _ = Signature::parse(data);
    if let Ok(f) = Frame::parse_body(data) {
        let _ = QuoteRequest::from_frame(&f);
        let _ = Evidence::from_frame(&f);
        let _ = Identity::from_frame(&f);
        let _ = Challenge::from_frame(&f);
        let _ = Proof::from_frame(&f);
        let again = f.to_bytes();
        assert_eq!(Frame::parse_body(&again[4..]).as_ref(), Ok(&f));
    }
    let _ = Frame::read(&mut &data[..]);
    if let Ok(p) = attest_wire::policy::SignedPolicy::parse(data) {
        assert_eq!(
            attest_wire::policy::SignedPolicy::parse(p.to_text().as_bytes()),
            Ok(p)
        );
    }
    if let Ok(ev) = attest_wire::runtime::parse(data) {
        assert_eq!(
            attest_wire::runtime::parse(&attest_wire::runtime::to_bytes(&ev)),
            Ok(ev)
        );
    }
});
