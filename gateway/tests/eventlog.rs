//! The init's console framing of the event log (`gateway::eventlog::frame`)
//! and the host's reassembly (`signing::eventlog::from_console`) agree, and
//! the host notices what a console loses or corrupts.

use gateway::eventlog::{frame, CHUNK};
use proptest::prelude::*;
use signing::eventlog::{from_console, CONSOLE_CHUNK};

fn transcript(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| format!("appliance: {l}\r\n"))
        .collect()
}

#[test]
fn both_sides_use_one_chunk_size() {
    assert_eq!(CHUNK, CONSOLE_CHUNK);
}

#[test]
fn detects_lost_and_corrupted_chunks() {
    let log = vec![7u8; 300];
    assert_eq!(from_console(&transcript(&frame(&log))).unwrap(), log);
    let mut lines = frame(&log);
    lines.remove(2);
    assert!(from_console(&transcript(&lines)).is_err());
    let mut lines = frame(&log);
    lines[1] = lines[1].replacen("07", "08", 1);
    assert!(from_console(&transcript(&lines)).is_err());
}

proptest! {
    #[test]
    fn round_trip_through_noisy_console(log in prop::collection::vec(any::<u8>(), 0..1000)) {
        let lines = frame(&log);
        let mut t = String::from("[    1.0] kernel noise\n");
        for l in &lines { t.push_str(&format!("appliance: {l}\r\n[    1.1] more noise\n")); }
        prop_assert_eq!(from_console(&t).unwrap(), log);
    }
}
