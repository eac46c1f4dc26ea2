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
//! digits). The host reassembles the log with `signing::eventlog::from_console` (host-side
//! event-log code lives with signing's), which accepts only a transcript whose chunks add
//! up to the announced length and digest, so interleaved or lost console output is
//! detected, never silently accepted; `tests/eventlog.rs` checks the two agree. Nothing
//! here panics.

use crate::digest::{to_hex, Sha256Digest};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
