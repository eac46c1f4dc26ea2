//! `ParsedBmap::from_xml` never panics, and what it accepts is consistent.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = images::bmap::ParsedBmap::from_xml(text) {
        let mut prev = None;
        for r in &p.ranges {
            assert!(r.first <= r.last);
            if let Some(l) = prev {
                assert!(r.first > l);
            }
            prev = Some(r.last);
            let (_, len) = p.byte_span(r);
            assert!(len > 0);
        }
        let _ = p.mapped_bytes();
    }
});
