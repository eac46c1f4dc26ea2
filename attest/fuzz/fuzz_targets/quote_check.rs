//! Every check of `appliance attest` (`attest::quote::check`) on evidence the gateway
//! (or black) made up: the input is an agent frame. Nothing may panic, and made-up
//! evidence never passes.
#![no_main]

use attest_wire::proto::{Evidence, Frame, QuoteRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = Frame::parse_body(data) else { return };
    let Ok(ev) = Evidence::from_frame(&f) else { return };
    let device = attest::fleet::Device {
        format: 1,
        name: "gw".into(),
        enrolled_at: "h:1".into(),
        ek_public: String::new(),
        ek_chain: Vec::new(),
        tpm: String::new(),
        ak_public: "0118000100".into(),
        ak_name: String::new(),
        last_clock: None,
        identity: None,
    };
    let req = QuoteRequest {
        nonce: [1; 32],
        pcrs: 0x1890ff,
        target: "h:1".into(),
    };
    let r = attest::quote::check(&ev, &req, &device, &Err("none".into()));
    assert!(!r.ok());
});
