//! TCG PC Client event log (crypto-agile format, TCG PC Client Platform
//! Firmware Profile §10): parse the log the firmware hands to the OS
//! (`/sys/kernel/security/tpm0/binary_bios_measurements`) and replay it to PCR
//! values.
//!
//! The first record is a legacy `TCG_PCClientPCREvent` (SHA-1 layout) holding
//! the `Spec ID Event03` structure that lists the digest algorithms and their
//! sizes; every later record is a `TCG_PCR_EVENT2` with one digest per
//! algorithm. Replay starts each PCR at zero (PCR 0 at the locality given by a
//! `StartupLocality` event, if any) and extends every event except
//! `EV_NO_ACTION`.
//!
//! The parser works on untrusted bytes: every length is checked, nothing
//! panics, and sizes are bounded by the input.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// TPM_ALG_SHA1.
pub const ALG_SHA1: u16 = 0x0004;
/// TPM_ALG_SHA256.
pub const ALG_SHA256: u16 = 0x000b;
/// TPM_ALG_SHA384.
pub const ALG_SHA384: u16 = 0x000c;
/// TPM_ALG_SHA512.
pub const ALG_SHA512: u16 = 0x000d;

/// EV_NO_ACTION: informational, never extended.
pub const EV_NO_ACTION: u32 = 0x3;
/// EV_SEPARATOR.
pub const EV_SEPARATOR: u32 = 0x4;
/// EV_IPL (systemd-stub's PCR 11 section measurements).
pub const EV_IPL: u32 = 0xd;
/// EV_EFI_VARIABLE_DRIVER_CONFIG.
pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
/// EV_EFI_BOOT_SERVICES_APPLICATION.
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
/// EV_EFI_ACTION.
pub const EV_EFI_ACTION: u32 = 0x8000_0007;
/// EV_EFI_VARIABLE_AUTHORITY.
pub const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00e0;

/// The name of an event type, as the TCG specification spells it.
pub fn event_type_name(t: u32) -> String {
    let s = match t {
        0x0 => "EV_PREBOOT_CERT",
        0x1 => "EV_POST_CODE",
        0x3 => "EV_NO_ACTION",
        0x4 => "EV_SEPARATOR",
        0x5 => "EV_ACTION",
        0x6 => "EV_EVENT_TAG",
        0x7 => "EV_S_CRTM_CONTENTS",
        0x8 => "EV_S_CRTM_VERSION",
        0x9 => "EV_CPU_MICROCODE",
        0xa => "EV_PLATFORM_CONFIG_FLAGS",
        0xb => "EV_TABLE_OF_DEVICES",
        0xc => "EV_COMPACT_HASH",
        0xd => "EV_IPL",
        0xe => "EV_IPL_PARTITION_DATA",
        0xf => "EV_NONHOST_CODE",
        0x10 => "EV_NONHOST_CONFIG",
        0x11 => "EV_NONHOST_INFO",
        0x12 => "EV_OMIT_BOOT_DEVICE_EVENTS",
        0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
        0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
        0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
        0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x8000_0006 => "EV_EFI_GPT_EVENT",
        0x8000_0007 => "EV_EFI_ACTION",
        0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
        0x8000_000a => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        0x8000_000b => "EV_EFI_HANDOFF_TABLES2",
        0x8000_000c => "EV_EFI_VARIABLE_BOOT2",
        0x8000_000d => "EV_EFI_GPT_EVENT2",
        0x8000_0010 => "EV_EFI_HCRTM_EVENT",
        0x8000_00e0 => "EV_EFI_VARIABLE_AUTHORITY",
        0x8000_00e1 => "EV_EFI_SPDM_FIRMWARE_BLOB",
        0x8000_00e2 => "EV_EFI_SPDM_FIRMWARE_CONFIG",
        _ => return format!("0x{t:08x}"),
    };
    s.to_string()
}

/// Errors, with the byte offset where the log stopped making sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventLogError {
    /// Too short for what a header says.
    #[error("event log truncated at byte {offset}: {what}")]
    Truncated {
        /// Byte offset of the record.
        offset: usize,
        /// Which field.
        what: &'static str,
    },
    /// A structural error.
    #[error("event log invalid at byte {offset}: {what}")]
    Invalid {
        /// Byte offset of the record.
        offset: usize,
        /// What is wrong.
        what: String,
    },
    /// A console transcript does not hold a complete, intact event log.
    #[error("event log transcript: {0}; capture the whole serial console output again")]
    Transcript(String),
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the log (0 = the Spec ID header event).
    pub number: usize,
    /// Byte offset of the record.
    pub offset: usize,
    /// PCR index.
    pub pcr: u32,
    /// Event type.
    pub event_type: u32,
    /// Digests by algorithm id.
    pub digests: BTreeMap<u16, Vec<u8>>,
    /// Event data.
    pub data: Vec<u8>,
}

impl Event {
    /// The SHA-256 digest, if logged.
    pub fn sha256(&self) -> Option<[u8; 32]> {
        self.digests
            .get(&ALG_SHA256)
            .and_then(|d| d.as_slice().try_into().ok())
    }

    /// A one-line description of the event data for people (strings for
    /// actions and IPL events, variable names for variable events).
    pub fn describe(&self) -> String {
        match self.event_type {
            EV_EFI_ACTION | 0x5 => String::from_utf8_lossy(&self.data)
                .trim_end_matches('\0')
                .to_string(),
            EV_IPL => {
                // systemd-stub logs the section name as UTF-16LE.
                if self.data.len() % 2 == 0 && self.data.iter().skip(1).step_by(2).all(|b| *b == 0)
                {
                    let s: String = self
                        .data
                        .chunks_exact(2)
                        .map(|c| char::from(c[0]))
                        .filter(|c| *c != '\0')
                        .collect();
                    s
                } else {
                    String::from_utf8_lossy(&self.data)
                        .trim_end_matches('\0')
                        .to_string()
                }
            }
            0x8000_0001 | 0x8000_0002 | 0x8000_000c | 0x8000_00e0 => {
                variable_name(&self.data).unwrap_or_default()
            }
            EV_SEPARATOR => format!("separator {}", hex::encode(&self.data)),
            _ => String::new(),
        }
    }
}

/// The UnicodeName of a UEFI_VARIABLE_DATA event body.
fn variable_name(d: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(d.get(16..24)?.try_into().ok()?) as usize;
    let bytes = d.get(32..32usize.checked_add(n.checked_mul(2)?)?)?;
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    Some(String::from_utf16_lossy(&units))
}

/// A parsed log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// Algorithms and digest sizes from the Spec ID event.
    pub algorithms: Vec<(u16, u16)>,
    /// Events after the header, in log order.
    pub events: Vec<Event>,
    /// Locality from a `StartupLocality` EV_NO_ACTION event (PCR 0's start value).
    pub startup_locality: Option<u8>,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(
        &mut self,
        n: usize,
        rec: usize,
        what: &'static str,
    ) -> Result<&'a [u8], EventLogError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or(EventLogError::Truncated { offset: rec, what })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self, rec: usize, what: &'static str) -> Result<u32, EventLogError> {
        let s = self.take(4, rec, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u16(&mut self, rec: usize, what: &'static str) -> Result<u16, EventLogError> {
        let s = self.take(2, rec, what)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
}

impl EventLog {
    /// Parse a crypto-agile event log.
    pub fn parse(bytes: &[u8]) -> Result<Self, EventLogError> {
        let mut r = Reader { b: bytes, pos: 0 };
        // Header: TCG_PCClientPCREvent.
        let _pcr = r.u32(0, "header pcrIndex")?;
        let ty = r.u32(0, "header eventType")?;
        r.take(20, 0, "header digest")?;
        let size = r.u32(0, "header eventSize")? as usize;
        let spec = r.take(size, 0, "Spec ID event")?;
        if ty != EV_NO_ACTION || spec.len() < 28 || &spec[..16] != b"Spec ID Event03\0" {
            return Err(EventLogError::Invalid {
                offset: 0,
                what:
                    "first event is not a `Spec ID Event03` (only crypto-agile logs are supported)"
                        .into(),
            });
        }
        let mut s = Reader { b: spec, pos: 28 };
        let n = u32::from_le_bytes([spec[24], spec[25], spec[26], spec[27]]) as usize;
        if n == 0 || n > 16 {
            return Err(EventLogError::Invalid {
                offset: 32,
                what: format!("Spec ID event lists {n} algorithms"),
            });
        }
        let mut algorithms = Vec::with_capacity(n);
        for _ in 0..n {
            let id = s.u16(0, "Spec ID algorithmId")?;
            let sz = s.u16(0, "Spec ID digestSize")?;
            if sz == 0 || sz > 64 {
                return Err(EventLogError::Invalid {
                    offset: 32,
                    what: format!("algorithm 0x{id:04x} has digest size {sz}"),
                });
            }
            algorithms.push((id, sz));
        }
        let mut events = Vec::new();
        let mut startup_locality = None;
        let mut number = 1;
        while r.pos < r.b.len() {
            let rec = r.pos;
            let pcr = r.u32(rec, "pcrIndex")?;
            let event_type = r.u32(rec, "eventType")?;
            let count = r.u32(rec, "digest count")? as usize;
            if count > algorithms.len() {
                return Err(EventLogError::Invalid {
                    offset: rec,
                    what: format!("{count} digests, the header announced {}", algorithms.len()),
                });
            }
            let mut digests = BTreeMap::new();
            for _ in 0..count {
                let alg = r.u16(rec, "hashAlg")?;
                let Some((_, sz)) = algorithms.iter().find(|(a, _)| *a == alg) else {
                    return Err(EventLogError::Invalid {
                        offset: rec,
                        what: format!("digest algorithm 0x{alg:04x} not in the header"),
                    });
                };
                let d = r.take(*sz as usize, rec, "digest")?;
                digests.insert(alg, d.to_vec());
            }
            let size = r.u32(rec, "eventSize")? as usize;
            let data = r.take(size, rec, "event data")?.to_vec();
            if event_type == EV_NO_ACTION
                && pcr == 0
                && data.len() == 17
                && &data[..16] == b"StartupLocality\0"
            {
                startup_locality = Some(data[16]);
            }
            events.push(Event {
                number,
                offset: rec,
                pcr,
                event_type,
                digests,
                data,
            });
            number += 1;
        }
        Ok(EventLog {
            algorithms,
            events,
            startup_locality,
        })
    }

    /// Replay the SHA-256 bank: PCR index → value, for every PCR with at
    /// least one extending event.
    pub fn replay_sha256(&self) -> Result<BTreeMap<u32, [u8; 32]>, EventLogError> {
        let mut pcrs: BTreeMap<u32, [u8; 32]> = BTreeMap::new();
        for e in &self.events {
            if e.event_type == EV_NO_ACTION {
                continue;
            }
            let d = e.sha256().ok_or_else(|| EventLogError::Invalid {
                offset: e.offset,
                what: format!("event {} has no SHA-256 digest", e.number),
            })?;
            let start = {
                let mut z = [0u8; 32];
                if e.pcr == 0 {
                    if let Some(l) = self.startup_locality {
                        z[31] = l;
                    }
                }
                z
            };
            let cur = pcrs.entry(e.pcr).or_insert(start);
            *cur = extend(cur, &d);
        }
        Ok(pcrs)
    }

    /// Events of one PCR, in order.
    pub fn events_of(&self, pcr: u32) -> impl Iterator<Item = &Event> {
        self.events
            .iter()
            .filter(move |e| e.pcr == pcr && e.event_type != EV_NO_ACTION)
    }
}

/// `PCR ← SHA-256(PCR ‖ digest)`.
pub fn extend(pcr: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(pcr);
    h.update(digest);
    h.finalize().into()
}

/// Console framing of the event log: the gateway init cannot hand the host a
/// file, so it prints the firmware's log on the serial console (its
/// `eventlog` module writes it), each line prefixed `appliance: ` by its
/// logger:
/// ```text
/// eventlog begin <length in bytes> <sha256 of the log>
/// eventlog <hex of at most 64 bytes>
/// ...
/// eventlog end
/// ```
/// Chunks are at most this many bytes (128 hex digits).
pub const CONSOLE_CHUNK: usize = 64;

fn bad(reason: impl Into<String>) -> EventLogError {
    EventLogError::Transcript(reason.into())
}

/// Reassembles the event log from a console transcript in the framing of
/// [`CONSOLE_CHUNK`] (other lines are ignored; a `\r` at line end, as serial
/// consoles add, is tolerated). Only a transcript whose chunks add up to the
/// announced length and digest is accepted, so interleaved or lost console
/// output is detected, never silently accepted. Nothing here panics.
pub fn from_console(transcript: &str) -> Result<Vec<u8>, EventLogError> {
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
    let digest: [u8; 32] = match hex::decode(digest).ok().map(<[u8; 32]>::try_from) {
        Some(Ok(d)) if digest.len() == 64 && digest.bytes().all(|c| !c.is_ascii_uppercase()) => d,
        _ => return Err(bad("bad digest in begin line")),
    };
    let mut out = Vec::new();
    for line in lines {
        if line == "end" {
            if out.len() != len {
                return Err(bad(format!(
                    "got {} bytes, begin announced {len}",
                    out.len()
                )));
            }
            let actual: [u8; 32] = Sha256::digest(&out).into();
            if !bool::from(subtle::ConstantTimeEq::ct_eq(&actual[..], &digest[..])) {
                return Err(bad("digest mismatch: console output was corrupted"));
            }
            return Ok(out);
        }
        if line.is_empty() || line.len() > 2 * CONSOLE_CHUNK || line.len() % 2 != 0 {
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
mod console_tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reassembles_a_framed_log_and_refuses_a_broken_one() {
        let log: Vec<u8> = (0..=200u8).collect();
        let hexd = |b: &[u8]| hex::encode(b);
        let mut t = format!(
            "noise\nappliance: eventlog begin 201 {}\r\n",
            hexd(&Sha256::digest(&log))
        );
        for c in log.chunks(CONSOLE_CHUNK) {
            t.push_str(&format!("appliance: eventlog {}\r\n", hexd(c)));
        }
        assert_eq!(
            from_console(&format!("{t}appliance: eventlog end\n")).unwrap(),
            log
        );
        for (broken, why) in [
            (t.clone(), "no `eventlog end` line"),
            (
                t.replacen("begin 201", "begin 202", 1) + "appliance: eventlog end\n",
                "got 201 bytes, begin announced 202",
            ),
            (
                t.replacen("eventlog 00", "eventlog 01", 1) + "appliance: eventlog end\n",
                "digest mismatch",
            ),
            (
                String::from("appliance: eventlog end\n"),
                "malformed begin line",
            ),
        ] {
            let e = from_console(&broken).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    proptest! {
        #[test]
        fn from_console_never_panics(s in "\\PC{0,300}") {
            let _ = from_console(&s);
            let _ = from_console(&format!("appliance: eventlog begin 3 {}\nappliance: eventlog {s}\nappliance: eventlog end\n", "0".repeat(64)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_garbage_are_errors() {
        assert!(EventLog::parse(&[]).is_err());
        assert!(EventLog::parse(&[0u8; 64]).is_err());
    }
}
