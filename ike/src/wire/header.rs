//! The IKE header (RFC 7296 §3.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IKE SA Initiator's SPI                  |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IKE SA Responder's SPI                  |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Next Payload | MjVer | MnVer | Exchange Type |     Flags     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                          Message ID                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                            Length                             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`Header::new_checked`] requires the 28 bytes, major version 2 and a
//! Length equal to the datagram's length (at most [`MAX_MESSAGE_LEN`]). The
//! minor version and the reserved flag bits are ignored on receipt and sent
//! as zero (§3.1).

use super::error::{EncodeError, Error, Location, PeerError, Problem};
use super::types::{ExchangeType, IkeSpi, PayloadType};
use super::{be32, be64, byte, Writer};

/// Byte ranges of the IKE header.
#[allow(dead_code)] // the whole layout, not every field is read
mod field {
    use std::ops::Range;
    /// IKE SA initiator's SPI.
    pub const SPI_I: Range<usize> = 0..8;
    /// IKE SA responder's SPI.
    pub const SPI_R: Range<usize> = 8..16;
    /// Type of the first payload.
    pub const NEXT_PAYLOAD: usize = 16;
    /// Major version (high nibble) and minor version (low nibble).
    pub const VERSION: usize = 17;
    /// Exchange type.
    pub const EXCHANGE: usize = 18;
    /// Flags.
    pub const FLAGS: usize = 19;
    /// Message ID.
    pub const MESSAGE_ID: Range<usize> = 20..24;
    /// Length of the whole message.
    pub const LENGTH: Range<usize> = 24..28;
}

/// Length of the IKE header.
pub const HEADER_LEN: usize = 28;

/// The largest message accepted or built: 64 KiB − 1, the most a UDP
/// datagram (or an RFC 8229 TCP frame) can carry.
pub const MAX_MESSAGE_LEN: usize = 65_535;

/// The major version this module speaks.
pub const IKE_MAJOR_VERSION: u8 = 2;

/// The flags of the header (§3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Flags {
    /// I: sent by the original initiator of the IKE SA.
    pub initiator: bool,
    /// V: the sender can speak a higher major version (never set by us).
    pub higher_version: bool,
    /// R: this message is a response.
    pub response: bool,
}

impl Flags {
    /// Bit of the I flag.
    pub const INITIATOR: u8 = 0x08;
    /// Bit of the V flag.
    pub const VERSION: u8 = 0x10;
    /// Bit of the R flag.
    pub const RESPONSE: u8 = 0x20;

    /// The flags of a flags byte; reserved bits are ignored.
    pub fn from_byte(b: u8) -> Flags {
        Flags {
            initiator: b & Self::INITIATOR != 0,
            higher_version: b & Self::VERSION != 0,
            response: b & Self::RESPONSE != 0,
        }
    }

    /// The flags byte, reserved bits zero.
    pub fn to_byte(self) -> u8 {
        (if self.initiator { Self::INITIATOR } else { 0 })
            | (if self.higher_version {
                Self::VERSION
            } else {
                0
            })
            | (if self.response { Self::RESPONSE } else { 0 })
    }
}

/// A checked IKE header at the start of a whole message.
#[derive(Debug, Clone, Copy)]
pub struct Header<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Checks the header of the message `buf` (the whole UDP payload after
    /// any non-ESP marker): 28 bytes, major version 2, Length equal to
    /// `buf.len()` and at most [`MAX_MESSAGE_LEN`]. The payloads are not
    /// looked at (see [`super::Message::new_checked`]).
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Location::HEADER.malformed(Problem::Truncated {
                what: "IKE header",
                need: HEADER_LEN,
                have: b.len(),
            }));
        }
        let version = byte(b, field::VERSION);
        if version >> 4 != IKE_MAJOR_VERSION {
            return Err(Error::Peer(PeerError::UnsupportedVersion {
                major: version >> 4,
                minor: version & 0x0f,
                header: HeaderRepr::parse(&Header { buf: b }),
            }));
        }
        let length = be32(b, field::LENGTH.start) as usize;
        if length != b.len() {
            return Err(Location::HEADER.malformed(Problem::Mismatch {
                field: "message length",
                value: length,
                of: "datagram length",
                expected: b.len(),
            }));
        }
        if length > MAX_MESSAGE_LEN {
            return Err(Location::HEADER.malformed(Problem::Value {
                field: "message length",
                value: length as u64,
                allowed: "at most 65535",
            }));
        }
        Ok(Header { buf })
    }

    /// A header already checked (by [`super::Message::new_checked`]).
    pub(crate) fn new_unchecked(buf: T) -> Self {
        Header { buf }
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// IKE SA initiator's SPI.
    pub fn spi_i(&self) -> IkeSpi {
        IkeSpi(be64(self.b(), field::SPI_I.start))
    }
    /// IKE SA responder's SPI (zero in an IKE_SA_INIT request).
    pub fn spi_r(&self) -> IkeSpi {
        IkeSpi(be64(self.b(), field::SPI_R.start))
    }
    /// Type of the first payload.
    pub fn next_payload(&self) -> PayloadType {
        PayloadType(byte(self.b(), field::NEXT_PAYLOAD))
    }
    /// Major version (always 2 in a checked header).
    pub fn major_version(&self) -> u8 {
        byte(self.b(), field::VERSION) >> 4
    }
    /// Minor version (ignored, §3.1).
    pub fn minor_version(&self) -> u8 {
        byte(self.b(), field::VERSION) & 0x0f
    }
    /// Exchange type; may be one this code does not know.
    pub fn exchange(&self) -> ExchangeType {
        ExchangeType(byte(self.b(), field::EXCHANGE))
    }
    /// The I, V and R flags.
    pub fn flags(&self) -> Flags {
        Flags::from_byte(self.flags_byte())
    }
    /// The flags byte as received, reserved bits included.
    pub fn flags_byte(&self) -> u8 {
        byte(self.b(), field::FLAGS)
    }
    /// Message ID.
    pub fn message_id(&self) -> u32 {
        be32(self.b(), field::MESSAGE_ID.start)
    }
    /// Length of the message (equal to the buffer's).
    pub fn length(&self) -> usize {
        be32(self.b(), field::LENGTH.start) as usize
    }
    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }
}

/// The header's content, without what the encoder computes (Next Payload,
/// Length) or always writes the same way (version 2.0, reserved bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeaderRepr {
    /// IKE SA initiator's SPI.
    pub spi_i: IkeSpi,
    /// IKE SA responder's SPI.
    pub spi_r: IkeSpi,
    /// Exchange type.
    pub exchange: ExchangeType,
    /// Flags.
    pub flags: Flags,
    /// Message ID.
    pub message_id: u32,
}

impl HeaderRepr {
    /// The content of a checked header.
    pub fn parse<T: AsRef<[u8]>>(h: &Header<T>) -> HeaderRepr {
        HeaderRepr {
            spi_i: h.spi_i(),
            spi_r: h.spi_r(),
            exchange: h.exchange(),
            flags: h.flags(),
            message_id: h.message_id(),
        }
    }

    /// Length of the encoded header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into `buf[..28]` for a message of `message_len`
    /// bytes whose first payload has type `next_payload`.
    pub fn emit(
        &self,
        buf: &mut [u8],
        next_payload: PayloadType,
        message_len: usize,
    ) -> Result<(), Error> {
        self.write(&mut Writer::new(buf), next_payload, message_len)?;
        Ok(())
    }

    pub(crate) fn write(
        &self,
        w: &mut Writer<'_>,
        next_payload: PayloadType,
        message_len: usize,
    ) -> Result<(), EncodeError> {
        if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&message_len) {
            return Err(EncodeError::Invalid {
                at: Location::HEADER,
                problem: Problem::Value {
                    field: "message length",
                    value: message_len as u64,
                    allowed: "28 to 65535",
                },
            });
        }
        w.u64(self.spi_i.0)?;
        w.u64(self.spi_r.0)?;
        w.u8(next_payload.0)?;
        w.u8(IKE_MAJOR_VERSION << 4)?;
        w.u8(self.exchange.0)?;
        w.u8(self.flags.to_byte())?;
        w.u32(self.message_id)?;
        // At most 65535: fits.
        w.u32(message_len as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IKE_SA_INIT request header with no payloads, laid out by hand
    /// from §3.1.
    fn init_request() -> Vec<u8> {
        vec![
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // SPIi
            0, 0, 0, 0, 0, 0, 0, 0,    // SPIr
            0x00, // next payload: none
            0x20, // version 2.0
            34,   // IKE_SA_INIT
            0x08, // I
            0, 0, 0, 0, // message ID
            0, 0, 0, 28, // length
        ]
    }

    #[test]
    fn fields() {
        let b = init_request();
        let h = Header::new_checked(&b[..]).unwrap();
        assert_eq!(h.spi_i(), IkeSpi(0x0102_0304_0506_0708));
        assert_eq!(h.spi_r(), IkeSpi(0));
        assert_eq!(h.next_payload(), PayloadType::NONE);
        assert_eq!((h.major_version(), h.minor_version()), (2, 0));
        assert_eq!(h.exchange(), ExchangeType::IKE_SA_INIT);
        assert_eq!(
            h.flags(),
            Flags {
                initiator: true,
                higher_version: false,
                response: false
            }
        );
        assert_eq!(h.message_id(), 0);
        assert_eq!(h.length(), 28);
        let r = HeaderRepr::parse(&h);
        let mut out = [0u8; HEADER_LEN];
        r.emit(&mut out, PayloadType::NONE, 28).unwrap();
        assert_eq!(&out[..], &b[..]);
    }

    #[test]
    fn minor_version_and_reserved_flags_ignored() {
        let mut b = init_request();
        b[field::VERSION] = 0x2f;
        b[field::FLAGS] = 0xff;
        let h = Header::new_checked(&b[..]).unwrap();
        assert_eq!(h.minor_version(), 15);
        assert_eq!(
            h.flags(),
            Flags {
                initiator: true,
                higher_version: true,
                response: true
            }
        );
        assert_eq!(h.flags().to_byte(), 0x38);
    }

    #[test]
    fn other_major_versions_refused_with_header() {
        for v in [0x10u8, 0x30, 0x00, 0xf0] {
            let mut b = init_request();
            b[field::VERSION] = v;
            b[field::MESSAGE_ID.end - 1] = 7;
            match Header::new_checked(&b[..]) {
                Err(Error::Peer(PeerError::UnsupportedVersion {
                    major,
                    minor,
                    header,
                })) => {
                    assert_eq!((major, minor), (v >> 4, 0));
                    assert_eq!(header.spi_i, IkeSpi(0x0102_0304_0506_0708));
                    assert_eq!(header.message_id, 7);
                    assert_eq!(header.exchange, ExchangeType::IKE_SA_INIT);
                }
                other => panic!("version {v:#x}: {other:?}"),
            }
        }
        // The version is checked before the length: an IKEv1 message of any
        // length is reported as such.
        let mut b = init_request();
        b[field::VERSION] = 0x10;
        b.push(0);
        assert!(matches!(
            Header::new_checked(&b[..]),
            Err(Error::Peer(PeerError::UnsupportedVersion { major: 1, .. }))
        ));
    }

    #[test]
    fn length_must_match_datagram() {
        let mut b = init_request();
        b.push(0);
        let e = Header::new_checked(&b[..]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "IKE message from the peer refused: IKE header: message length 28 differs \
             from the datagram length (29)"
        );
        let b = init_request();
        assert!(Header::new_checked(&b[..27]).is_err());
        let mut b = init_request();
        b[27] = 29;
        assert!(Header::new_checked(&b[..]).is_err());
    }

    #[test]
    fn size_bound() {
        let mut b = vec![0u8; MAX_MESSAGE_LEN + 1];
        b[..HEADER_LEN].copy_from_slice(&init_request());
        b[field::LENGTH].copy_from_slice(&((MAX_MESSAGE_LEN + 1) as u32).to_be_bytes());
        assert!(matches!(
            Header::new_checked(&b[..]),
            Err(Error::Peer(PeerError::Malformed {
                problem: Problem::Value { .. },
                ..
            }))
        ));
        b.pop();
        b[field::LENGTH].copy_from_slice(&(MAX_MESSAGE_LEN as u32).to_be_bytes());
        assert!(Header::new_checked(&b[..]).is_ok());
        let r = HeaderRepr::parse(&Header::new_checked(&b[..]).unwrap());
        let mut out = [0u8; HEADER_LEN];
        assert!(r
            .emit(&mut out, PayloadType::NONE, MAX_MESSAGE_LEN + 1)
            .is_err());
        assert!(matches!(
            r.emit(&mut out[..27], PayloadType::NONE, 28),
            Err(Error::Encode(EncodeError::BufferTooSmall { .. }))
        ));
    }
}
