//! Feeds an arbitrary byte stream to the FPM reader (`viaduct::fpm`) in two
//! pushes: the first input byte picks where the rest is split (0 = all in
//! the second push, 255 = all in the first). After each push the frames are
//! taken until more bytes are needed or an error. The rest of the input is
//! also parsed as a bare netlink payload. Whatever the bytes: nothing may
//! panic; a frame yields 1 to `MAX_MESSAGES` messages; every route yielded
//! has a prefix length within its family's (32, 128) and no bit set beyond
//! it; after an error the reader refuses everything; at most `MAX_FRAME`
//! bytes stay buffered once the complete frames are taken.
//!
//! Seeds (`seeds/fpm/`): the two captures of FRR 8.4's `dplane_fpm_nl`
//! stream from `tests/data/fpm/` (`frr-8.4-nexthop-groups.bin`, nexthop
//! groups and routes with `RTA_NH_ID`; `frr-8.4-plain.bin`, routes with
//! `RTA_OIF`, `RTA_GATEWAY` and a nested `RTA_MULTIPATH`), each behind one
//! split byte 0x80 (`*-split80.bin`), so that both decode in full before the
//! fuzzer mutates them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use viaduct::fpm::{parse_netlink, FpmError, FpmReader, Message, MAX_FRAME, MAX_MESSAGES};

/// Checks every route of `messages`: length within the family's, no host
/// bits (computed here, not by the parser's code).
fn check(messages: &[Message]) {
    for m in messages {
        let Message::Route(r) = m else { continue };
        match r.prefix {
            IpAddr::V4(a) => {
                assert!(r.len <= 32, "{r:?}");
                if r.len < 32 {
                    assert_eq!(u32::from(a) & (u32::MAX >> r.len), 0, "{r:?}");
                }
            }
            IpAddr::V6(a) => {
                assert!(r.len <= 128, "{r:?}");
                if r.len < 128 {
                    assert_eq!(u128::from(a) & (u128::MAX >> r.len), 0, "{r:?}");
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    if let Ok(messages) = parse_netlink(stream) {
        assert!(messages.len() <= MAX_MESSAGES);
        check(&messages);
    }
    let split = usize::from(first) * stream.len() / 255;
    let (a, b) = stream.split_at(split);
    let mut reader = FpmReader::new();
    for part in [a, b] {
        if reader.push(part).is_err() {
            assert!(matches!(reader.push(&[]), Err(FpmError::Refused { .. })));
            assert!(matches!(reader.next_frame(), Err(FpmError::Refused { .. })));
            return;
        }
        loop {
            match reader.next_frame() {
                Ok(Some(messages)) => {
                    assert!(!messages.is_empty() && messages.len() <= MAX_MESSAGES);
                    check(&messages);
                }
                Ok(None) => break,
                Err(_) => {
                    assert!(matches!(reader.next_frame(), Err(FpmError::Refused { .. })));
                    assert!(matches!(reader.push(&[]), Err(FpmError::Refused { .. })));
                    return;
                }
            }
        }
        assert!(reader.buffered() <= MAX_FRAME);
    }
});
