//! Exposes the firmware's TCG event log on the console so the host can reassemble it.
//!
//! Console framing (each line prefixed `appliance: ` by the logger):
//! ```text
//! eventlog begin <length in bytes> <sha256 of the log>
//! eventlog <hex of at most 64 bytes>
//! ...
//! eventlog end
//! ```
//! Invariants: chunks are emitted in order, each at most [`CHUNK`] bytes (128 hex
//! digits); [`reassemble`] accepts only a transcript whose chunks add up to the announced
//! length and digest, so interleaved or lost console output is detected, never silently
//! accepted. Nothing here panics.

use crate::digest::{to_hex, Sha256Digest};
use crate::error::{Error, Result};

/// Where Linux exposes the firmware event log.
pub const BIOS_MEASUREMENTS: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";
/// Largest chunk per console line, in bytes.
pub const CHUNK: usize = 64;

/// The framed lines (without the `appliance: ` prefix) for `log`.
pub fn frame(log: &[u8]) -> Vec<String> {
    let mut lines = Vec::with_capacity(log.len() / CHUNK + 3);
    lines.push(format!(
        "eventlog begin {} {}",
        log.len(),
        Sha256Digest::of(log)
    ));
    lines.extend(log.chunks(CHUNK).map(|c| format!("eventlog {}", to_hex(c))));
    lines.push("eventlog end".to_owned());
    lines
}

fn bad(reason: impl Into<String>) -> Error {
    Error::EventLog(reason.into())
}

/// Reassembles the event log from a console transcript (other lines are ignored; a
/// `\r` at line end, as serial consoles add, is tolerated).
pub fn reassemble(transcript: &str) -> Result<Vec<u8>> {
    let mut lines = transcript
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter_map(|l| l.strip_prefix("appliance: eventlog "));
    let begin = lines
        .next()
        .ok_or_else(|| bad("no `eventlog begin` line"))?;
    let mut words = begin.split(' ');
    let (Some("begin"), Some(len), Some(digest), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(bad(format!("malformed begin line {begin:?}")));
    };
    let len: usize = len
        .parse()
        .map_err(|_| bad(format!("bad length {len:?}")))?;
    let digest = Sha256Digest::from_hex(digest).ok_or_else(|| bad("bad digest in begin line"))?;
    let mut out = Vec::new();
    for line in lines {
        if line == "end" {
            if out.len() != len {
                return Err(bad(format!(
                    "got {} bytes, begin announced {len}",
                    out.len()
                )));
            }
            if !Sha256Digest::of(&out).ct_eq(&digest) {
                return Err(bad("digest mismatch: console output was corrupted"));
            }
            return Ok(out);
        }
        if line.is_empty() || line.len() > 2 * CHUNK || line.len() % 2 != 0 {
            return Err(bad(format!(
                "malformed chunk line of {} characters",
                line.len()
            )));
        }
        for pair in line.as_bytes().chunks_exact(2) {
            let s = std::str::from_utf8(pair).map_err(|_| bad("non-ASCII in chunk"))?;
            let b = u8::from_str_radix(s, 16).map_err(|_| bad(format!("bad hex {s:?}")))?;
            out.push(b);
        }
        if out.len() > len {
            return Err(bad("more bytes than announced"));
        }
    }
    Err(bad("no `eventlog end` line"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn transcript(lines: &[String]) -> String {
        lines
            .iter()
            .map(|l| format!("appliance: {l}\r\n"))
            .collect()
    }

    #[test]
    fn frames_in_64_byte_chunks() {
        let log: Vec<u8> = (0..=200u8).collect();
        let lines = frame(&log);
        assert_eq!(lines.len(), 2 + 4);
        assert_eq!(
            lines[0],
            format!("eventlog begin 201 {}", Sha256Digest::of(&log))
        );
        assert_eq!(lines[1].len(), "eventlog ".len() + 128);
        assert_eq!(lines[4].len(), "eventlog ".len() + 18);
        assert_eq!(lines[5], "eventlog end");
    }

    #[test]
    fn detects_lost_and_corrupted_chunks() {
        let log = vec![7u8; 300];
        let mut lines = frame(&log);
        lines.remove(2);
        assert!(reassemble(&transcript(&lines)).is_err());
        let mut lines = frame(&log);
        lines[1] = lines[1].replacen("07", "08", 1);
        assert!(reassemble(&transcript(&lines)).is_err());
    }

    proptest! {
        #[test]
        fn round_trip_through_noisy_console(log in prop::collection::vec(any::<u8>(), 0..1000)) {
            let lines = frame(&log);
            let mut t = String::from("[    1.0] kernel noise\n");
            for l in &lines { t.push_str(&format!("appliance: {l}\r\n[    1.1] more noise\n")); }
            prop_assert_eq!(reassemble(&t).unwrap(), log);
        }

        #[test]
        fn reassemble_never_panics(s in "\\PC{0,300}") {
            let _ = reassemble(&s);
            let _ = reassemble(&format!("appliance: eventlog begin 3 {}\nappliance: eventlog {s}\nappliance: eventlog end\n", "0".repeat(64)));
        }
    }
}
