//! ESP packet view (RFC 4303 §2) for AEAD transforms with an 8-byte explicit
//! IV and a 16-byte ICV (RFC 4106, RFC 7634):
//!
//! ```text
//! SPI(4) | Sequence Number(4) | IV(8) | ciphertext (payload|pad|pad len|next hdr) | ICV(16)
//! ```
//! `new_checked` guarantees room for every field and a ciphertext of at least
//! the 2-byte trailer, so no accessor panics.

use std::ops::Range;

use super::{be32, WireError};

/// Byte ranges of the ESP header.
pub mod field {
    use std::ops::Range;
    /// Security Parameters Index.
    pub const SPI: Range<usize> = 0..4;
    /// Low 32 bits of the sequence number.
    pub const SEQ: Range<usize> = 4..8;
    /// Explicit IV.
    pub const IV: Range<usize> = 8..16;
    /// Start of the ciphertext.
    pub const PAYLOAD: usize = 16;
}

/// ESP header length (SPI + sequence number).
pub const HEADER_LEN: usize = 8;
/// Explicit IV length.
pub const IV_LEN: usize = 8;
/// ICV (tag) length.
pub const ICV_LEN: usize = 16;
/// Trailer (pad length + next header).
pub const TRAILER_LEN: usize = 2;
/// Smallest well-formed ESP packet.
pub const MIN_LEN: usize = HEADER_LEN + IV_LEN + TRAILER_LEN + ICV_LEN;

/// A checked ESP packet (everything after the outer IP header).
#[derive(Debug, Clone, Copy)]
pub struct EspPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> EspPacket<T> {
    /// Requires room for header, IV, trailer and ICV.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < MIN_LEN {
            return Err(WireError::Truncated);
        }
        Ok(EspPacket { buf })
    }

    /// SPI.
    pub fn spi(&self) -> u32 {
        be32(self.buf.as_ref(), field::SPI.start)
    }
    /// Low 32 bits of the sequence number as transmitted.
    pub fn seq_low(&self) -> u32 {
        be32(self.buf.as_ref(), field::SEQ.start)
    }
    /// Explicit IV.
    pub fn iv(&self) -> [u8; IV_LEN] {
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&self.buf.as_ref()[field::IV]);
        iv
    }
    /// Range of ciphertext || ICV within the buffer.
    pub fn sealed_range(&self) -> Range<usize> {
        field::PAYLOAD..self.buf.as_ref().len()
    }
    /// Length of the ciphertext without the ICV.
    pub fn ciphertext_len(&self) -> usize {
        self.buf.as_ref().len() - field::PAYLOAD - ICV_LEN
    }
    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }
}
