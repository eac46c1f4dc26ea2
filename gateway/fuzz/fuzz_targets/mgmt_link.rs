//! The management link's frame parser (`mgmtlink::read_frame`), which the
//! init's bridge runs on what black's guest sends over its serial port:
//! arbitrary bytes read as a stream of frames until the first error or the
//! end. Each frame read must re-encode to the bytes it came from.
#![no_main]

use gateway::mgmtlink::{encode, read_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    loop {
        let before = r;
        match read_frame(&mut r) {
            Ok(Some(f)) => {
                let used = before.len() - r.len();
                assert_eq!(encode(&f), &before[..used]);
            }
            Ok(None) | Err(_) => break,
        }
    }
});
