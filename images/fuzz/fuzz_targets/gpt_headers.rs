//! `valid_headers` and `read_gpt` never panic on any disk contents.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = images::gpt::valid_headers(&mut std::io::Cursor::new(data));
    let _ = images::gpt::read_gpt(&mut std::io::Cursor::new(data));
});
