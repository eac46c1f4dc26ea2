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

use ids_rules::{parse, Vars};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let set = parse(&text, &Vars::suricata_defaults());
    assert_eq!(set.invariant_violation(), None);
    let c = set.coverage();
    assert_eq!(c.total, c.compiled + c.refused);
    assert_eq!(c.refused, c.keywords.values().sum::<usize>() + c.other);
    let _ = c.to_string();
});
