//! The runtime plan decoder (`Plan::decode`) on arbitrary bytes: it never panics, an
//! accepted plan is canonical (`encode` gives the input back), and what the init
//! derives from an accepted plan (bounding sets, seccomp filters) is built without
//! error.
#![no_main]

use gateway::plan::Plan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(plan) = Plan::decode(data) else { return };
    assert_eq!(plan.encode(), data, "an accepted plan has one encoding");
    for c in &plan.compartments {
        let _ = c.bounding_set();
        gateway::confine::personality_filters(&c.socket_families)
            .expect("the filters of an accepted plan compile");
    }
});
