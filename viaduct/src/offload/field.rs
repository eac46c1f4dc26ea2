//! Bounds-checked big-endian field access and the IP, TCP and UDP numbers
//! that the layers above share.
//!
//! Every read and write goes through `get`/`get_mut` and turns an
//! out-of-range offset into [`OffloadError::Truncated`]: this is what lets
//! the layers above handle any input without a panic.

use super::error::OffloadError::{self, Truncated};

pub(super) const TCP_FIN: u8 = 0x01;
pub(super) const TCP_PSH: u8 = 0x08;
pub(super) const TCP_ACK: u8 = 0x10;
pub(super) const TCP_CWR: u8 = 0x80;
pub(super) const PROTO_TCP: u8 = 6;
pub(super) const PROTO_UDP: u8 = 17;
/// Offset of the TCP checksum in the TCP header.
pub(super) const TCP_CSUM_OFFSET: usize = 16;
/// Offset of the UDP checksum in the UDP header.
pub(super) const UDP_CSUM_OFFSET: usize = 6;

pub(super) fn rd8(b: &[u8], at: usize) -> Result<u8, OffloadError> {
    b.get(at).copied().ok_or(Truncated)
}

pub(super) fn rd16(b: &[u8], at: usize) -> Result<u16, OffloadError> {
    match b.get(at..at.wrapping_add(2)) {
        Some(&[x, y]) => Ok(u16::from_be_bytes([x, y])),
        _ => Err(Truncated),
    }
}

pub(super) fn rd32(b: &[u8], at: usize) -> Result<u32, OffloadError> {
    match b.get(at..at.wrapping_add(4)) {
        Some(&[w, x, y, z]) => Ok(u32::from_be_bytes([w, x, y, z])),
        _ => Err(Truncated),
    }
}

pub(super) fn wr8(b: &mut [u8], at: usize, v: u8) -> Result<(), OffloadError> {
    *b.get_mut(at).ok_or(Truncated)? = v;
    Ok(())
}

pub(super) fn wr16(b: &mut [u8], at: usize, v: u16) -> Result<(), OffloadError> {
    b.get_mut(at..at.wrapping_add(2))
        .ok_or(Truncated)?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

pub(super) fn wr32(b: &mut [u8], at: usize, v: u32) -> Result<(), OffloadError> {
    b.get_mut(at..at.wrapping_add(4))
        .ok_or(Truncated)?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Address ranges of the pseudo header: (src, dst).
pub(super) fn addr_ranges(v6: bool) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    if v6 {
        (8..24, 24..40)
    } else {
        (12..16, 16..20)
    }
}
