//! Feeds arbitrary bytes (as lossy UTF-8) to `ids_rules::parse` with
//! Suricata's default variables. Whatever the bytes: nothing may panic;
//! every refusal has a line and a reason; every compiled rule has a sid
//! greater than 0 (unique in the set), a non-negated content, at most one
//! fast pattern, no content with both absolute and relative positions, and
//! `depth`/`within` no smaller than its content; the coverage report adds up.
//!
//! Seeds (`seeds/parse/`): the five smoke-test rules, a rule using every
//! supported construct, and lines from Debian's sagan-rules.
#![no_main]

use std::collections::HashSet;

use ids_rules::{parse, Vars};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let set = parse(&text, &Vars::suricata_defaults());
    let mut sids = HashSet::new();
    for r in &set.rules {
        assert!(r.sid > 0 && sids.insert(r.sid), "{r:?}");
        assert!(r.contents.iter().any(|c| !c.negated), "{r:?}");
        assert!(r.contents.iter().filter(|c| c.fast_pattern).count() <= 1);
        for c in &r.contents {
            assert!(!c.bytes.is_empty());
            assert!(!(c.is_relative() && (c.offset.is_some() || c.depth.is_some())));
            for n in [c.depth, c.within].into_iter().flatten() {
                assert!(n as usize >= c.bytes.len(), "{c:?}");
            }
        }
        assert!(!r.src.is_empty() && !r.dst.is_empty());
        assert!(!r.src_ports.is_empty() && !r.dst_ports.is_empty());
    }
    for r in &set.refused {
        assert!(r.line >= 1 && !r.reason.trim().is_empty(), "{r:?}");
    }
    let c = set.coverage();
    assert_eq!(c.total, c.compiled + c.refused);
    assert_eq!(c.refused, c.keywords.values().sum::<usize>() + c.other);
    let _ = c.to_string();
});
