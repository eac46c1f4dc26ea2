//! The init's runtime measurement log: the events the gateway init extends into PCRs
//! after the firmware's log ends, so a verifier can replay them.
//!
//! An event is a line of text; the digest extended is SHA-256 of that text, so the
//! event's content is what the PCR covers (a verifier never trusts a description that
//! the digest does not cover). The log is one event per line: `<pcr> <text>`.
//!
//! Events the init writes (in this order, before it starts anything):
//! - PCR 12 `appliance-init plan sha256:<hex>`: the runtime plan's digest (what runs:
//!   compartments, drivers, release key);
//! - PCR 12 `appliance-init policy sha256:<hex>`: the compiled policy's digest (which
//!   network policy the Viaduct enforces).
//!
//! Invariants: [`parse`] accepts only PCRs 8–15, printable ASCII text of at most
//! [`MAX_TEXT`] bytes and at most [`MAX_EVENTS`] events; it never panics.

use crate::tpms::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The PCR the init measures the plan and policy into.
pub const PCR_RUNTIME: u8 = 12;
/// The PCR for device-identity events.
pub const PCR_IDENTITY: u8 = 15;
/// Longest event text.
pub const MAX_TEXT: usize = 256;
/// Most events in a log.
pub const MAX_EVENTS: usize = 256;

/// One runtime event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The PCR extended.
    pub pcr: u8,
    /// What was measured.
    pub text: String,
}

impl Event {
    /// The plan event.
    pub fn plan(sha256_hex: &str) -> Self {
        Event {
            pcr: PCR_RUNTIME,
            text: format!("appliance-init plan sha256:{sha256_hex}"),
        }
    }
    /// The policy event.
    pub fn policy(sha256_hex: &str) -> Self {
        Event {
            pcr: PCR_RUNTIME,
            text: format!("appliance-init policy sha256:{sha256_hex}"),
        }
    }
    /// The digest extended.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.text.as_bytes()).into()
    }
    /// The log line (without the newline).
    pub fn line(&self) -> String {
        format!("{} {}", self.pcr, self.text)
    }
}

/// The events the init extends at every boot for a plan and policy (PCR 12).
pub fn boot_events(plan_sha256_hex: &str, policy_sha256_hex: &str) -> Vec<Event> {
    vec![
        Event::plan(plan_sha256_hex),
        Event::policy(policy_sha256_hex),
    ]
}

/// Serialises a log.
pub fn to_bytes(events: &[Event]) -> Vec<u8> {
    let mut s = String::new();
    for e in events {
        s.push_str(&e.line());
        s.push('\n');
    }
    s.into_bytes()
}

/// Parses a log.
pub fn parse(b: &[u8]) -> Result<Vec<Event>> {
    let s = std::str::from_utf8(b).map_err(|_| Error("runtime log: not UTF-8".into()))?;
    let mut out = Vec::new();
    for (i, line) in s.split_terminator('\n').enumerate() {
        let n = i + 1;
        if out.len() == MAX_EVENTS {
            return Err(Error(format!("runtime log: more than {MAX_EVENTS} events")));
        }
        let (pcr, text) = line
            .split_once(' ')
            .ok_or_else(|| Error(format!("runtime log line {n}: no PCR")))?;
        let pcr: u8 = pcr
            .parse()
            .map_err(|_| Error(format!("runtime log line {n}: PCR {pcr:?}")))?;
        if !(8..=15).contains(&pcr) {
            return Err(Error(format!(
                "runtime log line {n}: PCR {pcr} (only 8-15)"
            )));
        }
        if text.is_empty()
            || text.len() > MAX_TEXT
            || !text.bytes().all(|c| (0x20..0x7f).contains(&c))
        {
            return Err(Error(format!(
                "runtime log line {n}: event text empty, longer than {MAX_TEXT} or not printable ASCII"
            )));
        }
        out.push(Event {
            pcr,
            text: text.to_owned(),
        });
    }
    if !s.is_empty() && !s.ends_with('\n') {
        return Err(Error("runtime log: the last line is cut".into()));
    }
    Ok(out)
}

/// Replays `events` on top of `start` (each PCR's value before the init's events;
/// absent = 32 zero bytes): the value of every PCR the events touch.
pub fn replay(start: &BTreeMap<u8, [u8; 32]>, events: &[Event]) -> BTreeMap<u8, [u8; 32]> {
    let mut pcrs: BTreeMap<u8, [u8; 32]> = BTreeMap::new();
    for e in events {
        let old = pcrs
            .get(&e.pcr)
            .or_else(|| start.get(&e.pcr))
            .copied()
            .unwrap_or([0; 32]);
        let mut h = Sha256::new();
        h.update(old);
        h.update(e.digest());
        pcrs.insert(e.pcr, h.finalize().into());
    }
    pcrs
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_and_replays() {
        let ev = boot_events(&"ab".repeat(32), &"cd".repeat(32));
        let b = to_bytes(&ev);
        assert_eq!(parse(&b).unwrap(), ev);
        let r = replay(&BTreeMap::new(), &ev);
        let mut v = [0u8; 32];
        for e in &ev {
            let mut h = Sha256::new();
            h.update(v);
            h.update(Sha256::digest(e.text.as_bytes()));
            v = h.finalize().into();
        }
        assert_eq!(r[&12], v);
        assert!(parse(b"16 x\n").is_err());
        assert!(parse(b"12 x").is_err());
        assert!(parse(b"12 \x01\n").is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(b in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&b);
        }
    }
}
