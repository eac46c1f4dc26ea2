//! Zero-copy views of the wire formats the Viaduct reads and writes: IPv4,
//! IPv6 and ESP, plus the five-tuple extraction used by selectors.
//!
//! Invariant: every `Packet::new_checked` validates the lengths that its
//! accessors rely on, so no accessor can panic on a value it returned.

pub mod esp;
pub mod ip;

pub use esp::EspPacket;
pub use ip::{FiveTuple, Ipv4Packet, Ipv6Packet};

/// Errors of the wire parsers (mapped to drop reasons by the engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the fixed header or the declared length.
    Truncated,
    /// A field holds a value the format does not allow.
    Malformed,
}

pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// RFC 1071 Internet checksum over `data`.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
