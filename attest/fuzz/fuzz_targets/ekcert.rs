//! EK certificate verification (`attest::ekcert`) on arbitrary certificates: the
//! input is split (first two bytes, big-endian) into a CA certificate and an EK
//! certificate, both DER; the PEM reader gets the whole input. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = attest::ekcert::parse_pem_bundle(data);
    if data.len() < 2 {
        return;
    }
    let at = usize::from(u16::from_be_bytes([data[0], data[1]])).min(data.len() - 2);
    let (ca, ek) = data[2..].split_at(at);
    let _ = attest::ekcert::verify_ek_certificate(ek, &[ca.to_vec()], 1_800_000_000);
    let _ = attest::ekcert::verify_ek_certificate(ek, &[], 0);
});
