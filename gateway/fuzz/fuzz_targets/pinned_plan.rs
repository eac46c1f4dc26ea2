//! The boot's plan check (`boot::check_plan`): the kernel command line pins the plan's
//! SHA-256, so random plans would stop at the digest comparison. The harness computes
//! the digest of the fuzzed plan and pins it on a command line of fuzzed words, so the
//! command-line parser and the decoder behind the digest are both exercised.
//!
//! Input: `<command-line words> 0x00 <plan bytes>` (no 0x00: all of it is the plan).
#![no_main]

use gateway::digest::Sha256Digest;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let (words, plan) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let mut cmdline = words.to_vec();
    cmdline.extend_from_slice(b" appliance.plan=");
    cmdline.extend_from_slice(Sha256Digest::of(plan).to_hex().as_bytes());
    cmdline.extend_from_slice(b" quiet\n");
    if let Ok(p) = gateway::boot::check_plan(&cmdline, plan, Path::new("/etc/appliance/plan")) {
        assert_eq!(p.encode(), plan);
        assert_eq!(p.digest(), Sha256Digest::of(plan));
    }
    // The words alone, as the whole command line, must not panic either.
    let _ = gateway::cmdline::plan_digest(&String::from_utf8_lossy(words));
});
