//! The payload chain (RFC 7296 §3.2): payloads linked by the Next Payload
//! field of the previous one, each behind a generic header.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Next Payload  |C|  RESERVED   |         Payload Length        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`Chain::new_checked`] walks the chain once and checks: each generic
//! header and Payload Length (at least 4, within the bytes), no bytes after
//! the payload whose Next Payload is 0, the SK and SKF payloads last (their
//! Next Payload is the type of the first payload *inside* them, §3.14 and
//! RFC 7383 §2.5), and every understood payload's body (its view's
//! `new_checked`). A payload type not understood
//! ([`PayloadType::is_understood`]) is skipped if its critical bit is clear
//! and refused with [`PeerError::UnsupportedCriticalPayload`] if it is set;
//! for understood types the critical bit is ignored (§3.2).
//!
//! The decrypted content of an SK payload is a chain too, checked with
//! [`Chain::new_checked_inner`], where SK and SKF may not appear.

use super::error::{EncodeError, Error, Location, PeerError, Place, Problem};
use super::payload::{Payload, PayloadRepr};
use super::types::PayloadType;
use super::{be16, byte, counted_len, emit_checked, slice, tail, Writer};

/// Byte ranges of the generic payload header.
#[allow(dead_code)] // the whole layout, not every field is read
mod field {
    use std::ops::Range;
    /// Type of the next payload (for SK/SKF: of the first inner payload).
    pub const NEXT_PAYLOAD: usize = 0;
    /// Critical bit (0x80) and reserved bits.
    pub const FLAGS: usize = 1;
    /// Length of the payload, generic header included.
    pub const LENGTH: Range<usize> = 2..4;
    /// Start of the payload body.
    pub const BODY: usize = 4;
}

/// Length of the generic payload header.
pub const GENERIC_HEADER_LEN: usize = 4;

/// The critical bit in the flags byte of the generic header.
pub const CRITICAL: u8 = 0x80;

/// One payload as framed by its generic header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPayload<'a> {
    /// This payload's type (from the previous Next Payload field).
    pub payload_type: PayloadType,
    /// This payload's Next Payload field; for SK and SKF the type of the
    /// first payload of the encrypted content.
    pub next_payload: PayloadType,
    /// The critical bit.
    pub critical: bool,
    /// Position in the chain, from 1 (payloads skipped as not understood
    /// count too).
    pub index: u16,
    /// Offset of the generic header from the start of the chain.
    pub offset: usize,
    /// The body after the generic header.
    pub body: &'a [u8],
}

/// Walks a chain, yielding understood payloads and the first error.
#[derive(Debug, Clone)]
struct Walker<'a> {
    bytes: &'a [u8],
    next: PayloadType,
    off: usize,
    index: u16,
    encrypted: bool,
    done: bool,
}

impl<'a> Walker<'a> {
    fn new(first: PayloadType, bytes: &'a [u8], encrypted: bool) -> Self {
        Walker {
            bytes,
            next: first,
            off: 0,
            index: 0,
            encrypted,
            done: false,
        }
    }

    fn fail(&mut self, e: Error) -> Option<Result<RawPayload<'a>, Error>> {
        self.done = true;
        Some(Err(e))
    }
}

impl<'a> Iterator for Walker<'a> {
    type Item = Result<RawPayload<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let ty = self.next;
            let rest = tail(self.bytes, self.off);
            if ty == PayloadType::NONE {
                self.done = true;
                if rest.is_empty() {
                    return None;
                }
                return Some(Err(Location::chain(self.encrypted).malformed(
                    Problem::Trailing {
                        count: rest.len(),
                        after: "last payload",
                    },
                )));
            }
            self.index = self.index.saturating_add(1);
            let at = Location {
                encrypted: self.encrypted,
                place: Place::Payload {
                    ty,
                    index: self.index,
                },
                parts: [None; 3],
            };
            if rest.len() < GENERIC_HEADER_LEN {
                return self.fail(at.malformed(Problem::Truncated {
                    what: "generic payload header",
                    need: GENERIC_HEADER_LEN,
                    have: rest.len(),
                }));
            }
            let len = usize::from(be16(rest, field::LENGTH.start));
            if len < GENERIC_HEADER_LEN {
                return self.fail(at.malformed(Problem::TooSmall {
                    field: "payload length",
                    value: len,
                    min: GENERIC_HEADER_LEN,
                }));
            }
            if len > rest.len() {
                return self.fail(at.malformed(Problem::Exceeds {
                    field: "payload length",
                    value: len,
                    container: if self.encrypted {
                        "encrypted content"
                    } else {
                        "message"
                    },
                    room: rest.len(),
                }));
            }
            let raw = RawPayload {
                payload_type: ty,
                next_payload: PayloadType(byte(rest, field::NEXT_PAYLOAD)),
                critical: byte(rest, field::FLAGS) & CRITICAL != 0,
                index: self.index,
                offset: self.off,
                body: slice(rest, field::BODY..len),
            };
            self.off = self.off.saturating_add(len);
            self.next = raw.next_payload;
            if ty == PayloadType::SK || ty == PayloadType::SKF {
                self.done = true;
                if self.encrypted {
                    return Some(Err(at.malformed(Problem::Rule(
                        "an SK or SKF payload cannot be inside encrypted content",
                    ))));
                }
                let after = self.bytes.len().saturating_sub(self.off);
                if after != 0 {
                    return Some(Err(at.malformed(Problem::Trailing {
                        count: after,
                        after: "SK/SKF payload, which must be the last payload",
                    })));
                }
                return Some(Ok(raw));
            }
            if !ty.is_understood() {
                if raw.critical {
                    return self.fail(Error::Peer(PeerError::UnsupportedCriticalPayload {
                        payload_type: ty.0,
                        at,
                    }));
                }
                continue;
            }
            return Some(Ok(raw));
        }
    }
}

/// A checked payload chain: the payloads of a message after its header, or
/// the decrypted content of an SK payload.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a> {
    bytes: &'a [u8],
    first: PayloadType,
    encrypted: bool,
}

impl<'a> Chain<'a> {
    /// Checks the chain `bytes` whose first payload has type `first` (the
    /// header's Next Payload): see the module documentation.
    pub fn new_checked(first: PayloadType, bytes: &'a [u8]) -> Result<Self, Error> {
        Self::check(first, bytes, false)
    }

    /// Checks decrypted SK content (padding and pad length already removed)
    /// whose first payload has type `first` (the SK payload's Next Payload).
    /// SK and SKF payloads are refused here; errors say "inside SK".
    pub fn new_checked_inner(first: PayloadType, bytes: &'a [u8]) -> Result<Self, Error> {
        Self::check(first, bytes, true)
    }

    fn check(first: PayloadType, bytes: &'a [u8], encrypted: bool) -> Result<Self, Error> {
        for raw in Walker::new(first, bytes, encrypted) {
            let raw = raw?;
            Payload::parse(&raw)
                .map_err(|e| e.in_payload(raw.payload_type, raw.index, encrypted))?;
        }
        Ok(Chain {
            bytes,
            first,
            encrypted,
        })
    }

    /// A chain already checked (by [`super::Message::new_checked`]).
    pub(crate) fn new_unchecked(first: PayloadType, bytes: &'a [u8]) -> Self {
        Chain {
            bytes,
            first,
            encrypted: false,
        }
    }

    /// Type of the first payload.
    pub fn first_payload(&self) -> PayloadType {
        self.first
    }

    /// The chain's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Whether this is decrypted SK content.
    pub fn is_inner(&self) -> bool {
        self.encrypted
    }

    /// The understood payloads as framed, in order (skipped ones left out).
    pub fn raw(&self) -> RawPayloads<'a> {
        RawPayloads(Walker::new(self.first, self.bytes, self.encrypted))
    }

    /// The understood payloads as typed views, in order.
    pub fn payloads(&self) -> Payloads<'a> {
        Payloads(Walker::new(self.first, self.bytes, self.encrypted))
    }

    /// The SK or SKF payload, if the chain ends with one.
    pub fn last_encrypted(&self) -> Option<RawPayload<'a>> {
        self.raw()
            .last()
            .filter(|r| r.payload_type == PayloadType::SK || r.payload_type == PayloadType::SKF)
    }
}

/// Iterator over the framed payloads of a checked [`Chain`].
#[derive(Debug, Clone)]
pub struct RawPayloads<'a>(Walker<'a>);

impl<'a> Iterator for RawPayloads<'a> {
    type Item = RawPayload<'a>;

    fn next(&mut self) -> Option<RawPayload<'a>> {
        // The chain was checked: the walker yields no error.
        self.0.next()?.ok()
    }
}

/// Iterator over the typed payloads of a checked [`Chain`].
#[derive(Debug, Clone)]
pub struct Payloads<'a>(Walker<'a>);

impl<'a> Iterator for Payloads<'a> {
    type Item = Payload<'a>;

    fn next(&mut self) -> Option<Payload<'a>> {
        // The chain and every payload were checked: neither step fails.
        let raw = self.0.next()?.ok()?;
        Payload::parse(&raw).ok()
    }
}

/// Writes the chain of `payloads` (generic headers with Next Payload and
/// Payload Length computed, critical bits clear). An SK or SKF payload must
/// be the last; its Next Payload is its own first inner type.
pub(crate) fn write_chain(
    payloads: &[PayloadRepr],
    w: &mut Writer<'_>,
    encrypted: bool,
) -> Result<(), EncodeError> {
    for (i, p) in payloads.iter().enumerate() {
        let loc = Location {
            encrypted,
            place: Place::Payload {
                ty: p.payload_type(),
                index: u16::try_from(i.saturating_add(1)).unwrap_or(u16::MAX),
            },
            parts: [None; 3],
        };
        let following = payloads.get(i.saturating_add(1));
        let next = match p.first_inner() {
            Some(first) if following.is_none() => first,
            Some(_) => {
                return Err(EncodeError::Invalid {
                    at: loc,
                    problem: Problem::Rule("the SK/SKF payload must be the last payload"),
                })
            }
            None => following.map_or(PayloadType::NONE, PayloadRepr::payload_type),
        };
        let start = w.pos();
        w.u8(next.0)?;
        w.u8(0)?;
        w.u16(0)?;
        p.write_body(w, loc)?;
        w.patch_len16(
            start.saturating_add(field::LENGTH.start),
            start,
            "payload length",
            loc,
        )?;
    }
    Ok(())
}

/// A chain as owned payload Reprs: the decrypted content of an SK payload
/// (for a whole message see [`super::MessageRepr`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainRepr {
    /// The payloads in order.
    pub payloads: Vec<PayloadRepr>,
}

impl ChainRepr {
    /// The payloads of a checked chain.
    pub fn parse(chain: &Chain<'_>) -> ChainRepr {
        ChainRepr {
            payloads: chain.payloads().map(|p| PayloadRepr::parse(&p)).collect(),
        }
    }

    /// Type of the first payload: the Next Payload of the SK payload that
    /// will carry this content.
    pub fn first_payload(&self) -> PayloadType {
        self.payloads
            .first()
            .map_or(PayloadType::NONE, PayloadRepr::payload_type)
    }

    /// Length of the encoded chain.
    pub fn buffer_len(&self) -> usize {
        counted_len(|w| write_chain(&self.payloads, w, true))
    }

    /// Writes the chain as SK content (to be padded and encrypted) into
    /// `buf` and returns its length; checked as [`Chain::new_checked_inner`]
    /// would.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let first = self.first_payload();
        emit_checked(
            buf,
            |w| write_chain(&self.payloads, w, true),
            |b| Chain::new_checked_inner(first, b).map(|_| ()),
        )
    }

    /// The encoded chain in a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut v = vec![0u8; self.buffer_len()];
        let n = self.emit(&mut v)?;
        v.truncate(n);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{NonceRepr, PayloadRepr};

    fn vid(data: &[u8]) -> PayloadRepr {
        PayloadRepr::VendorId(data.to_vec())
    }

    /// Nonce (16 bytes of 0xaa) then a Vendor ID "ab": §3.2 by hand.
    fn two_payloads() -> Vec<u8> {
        let mut b = vec![43, 0, 0, 20];
        b.extend_from_slice(&[0xaa; 16]);
        b.extend_from_slice(&[0, 0, 0, 6, b'a', b'b']);
        b
    }

    #[test]
    fn walks_and_links() {
        let b = two_payloads();
        let c = Chain::new_checked(PayloadType::NONCE, &b).unwrap();
        let raw: Vec<_> = c.raw().collect();
        assert_eq!(raw.len(), 2);
        assert_eq!(raw[0].payload_type, PayloadType::NONCE);
        assert_eq!(raw[0].next_payload, PayloadType::VENDOR_ID);
        assert_eq!(raw[0].body, &[0xaa; 16]);
        assert_eq!((raw[1].index, raw[1].offset), (2, 20));
        assert_eq!(raw[1].body, b"ab");
        let r = ChainRepr::parse(&c);
        assert_eq!(
            r.payloads,
            vec![
                PayloadRepr::Nonce(NonceRepr {
                    data: vec![0xaa; 16]
                }),
                vid(b"ab")
            ]
        );
        assert_eq!(r.to_vec().unwrap(), b);
        assert_eq!(r.first_payload(), PayloadType::NONCE);
    }

    #[test]
    fn empty_chain() {
        let c = Chain::new_checked(PayloadType::NONE, &[]).unwrap();
        assert_eq!(c.payloads().count(), 0);
        assert!(Chain::new_checked(PayloadType::NONE, &[0]).is_err());
        assert_eq!(ChainRepr::default().to_vec().unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn length_errors() {
        let b = two_payloads();
        // Truncated generic header, length below 4, length past the end.
        assert!(Chain::new_checked(PayloadType::NONCE, &b[..3]).is_err());
        let mut short = b.clone();
        short[3] = 3;
        let e = Chain::new_checked(PayloadType::NONCE, &short).unwrap_err();
        assert_eq!(
            e.to_string(),
            "IKE message from the peer refused: Nonce payload #1: payload length 3 is below \
             the minimum 4"
        );
        let mut long = b.clone();
        long[23] = 7;
        let e = Chain::new_checked(PayloadType::NONCE, &long).unwrap_err();
        assert_eq!(
            e.to_string(),
            "IKE message from the peer refused: Vendor ID payload #2: payload length 7 \
             exceeds the message (6 bytes left)"
        );
        let mut trailing = b.clone();
        trailing.push(0);
        let e = Chain::new_checked(PayloadType::NONCE, &trailing).unwrap_err();
        assert_eq!(
            e.to_string(),
            "IKE message from the peer refused: payload chain: 1 unexpected bytes after \
             the last payload"
        );
    }

    #[test]
    fn unknown_payloads_skipped_or_refused() {
        // Nonce → type 200 (not critical) → Vendor ID.
        let mut b = vec![200, 0, 0, 20];
        b.extend_from_slice(&[0xaa; 16]);
        b.extend_from_slice(&[43, 0x7f, 0, 5, 9]);
        b.extend_from_slice(&[0, 0, 0, 5, b'x']);
        let c = Chain::new_checked(PayloadType::NONCE, &b).unwrap();
        let raw: Vec<_> = c.raw().collect();
        assert_eq!(raw.len(), 2);
        assert_eq!(
            (raw[1].payload_type, raw[1].index),
            (PayloadType::VENDOR_ID, 3)
        );
        // The same payload marked critical: refused with its type.
        b[21] = 0x80;
        match Chain::new_checked(PayloadType::NONCE, &b) {
            Err(Error::Peer(e @ PeerError::UnsupportedCriticalPayload { .. })) => {
                assert!(matches!(
                    e,
                    PeerError::UnsupportedCriticalPayload {
                        payload_type: 200,
                        ..
                    }
                ));
                assert_eq!(
                    e.notify_type(),
                    crate::wire::NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD
                );
                assert!(
                    e.to_string()
                        .starts_with("unknown (200) payload #2: payload type 200"),
                    "{e}"
                );
            }
            other => panic!("{other:?}"),
        }
        // The critical bit of an understood payload is ignored.
        let mut b = two_payloads();
        b[1] = 0x80;
        assert!(Chain::new_checked(PayloadType::NONCE, &b).is_ok());
    }

    #[test]
    fn sk_must_be_last_and_not_nested() {
        // Vendor ID, then SK whose first inner payload is IDi (35).
        let mut b = vec![46, 0, 0, 5, b'v', 35, 0, 0, 8, 1, 2, 3, 4];
        let c = Chain::new_checked(PayloadType::VENDOR_ID, &b).unwrap();
        let sk = c.last_encrypted().unwrap();
        assert_eq!(sk.next_payload, PayloadType::ID_I);
        assert_eq!(sk.body, &[1, 2, 3, 4]);
        b.extend_from_slice(&[0, 0, 0, 4]);
        let e = Chain::new_checked(PayloadType::VENDOR_ID, &b).unwrap_err();
        assert!(
            e.to_string()
                .contains("SK payload #2: 4 unexpected bytes after the SK/SKF"),
            "{e}"
        );
        let inner = [35, 0, 0, 8, 1, 2, 3, 4];
        let e = Chain::new_checked_inner(PayloadType::SK, &inner).unwrap_err();
        assert!(e.to_string().contains("SK payload #1 inside SK"), "{e}");
    }

    #[test]
    fn emit_rules() {
        let sk = PayloadRepr::Sk(crate::wire::SkRepr {
            first_inner: PayloadType::NONE,
            body: vec![0; 4],
        });
        let bad = ChainRepr {
            payloads: vec![sk.clone(), vid(b"x")],
        };
        assert!(bad.to_vec().is_err());
        // Inner content may not hold SK at all.
        let nested = ChainRepr { payloads: vec![sk] };
        assert!(nested.to_vec().is_err());
        // A payload body over 65531 bytes does not fit its length field.
        let big = ChainRepr {
            payloads: vec![vid(&vec![0; 65_532])],
        };
        assert_eq!(big.buffer_len(), 65_536);
        let e = big.to_vec().unwrap_err();
        assert!(e.to_string().contains("payload length 65536"), "{e}");
    }
}
