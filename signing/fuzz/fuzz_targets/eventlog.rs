//! TCG event-log parser and replay on arbitrary bytes: must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = signing::eventlog::EventLog::parse(data) {
        let _ = log.replay_sha256();
        for e in &log.events {
            let _ = e.describe();
        }
    }
});
