//! IKEv2 message codec (RFC 7296 §3): header, payload chain, typed payload views.
//!
//! Two layers, in the smoltcp style:
//!
//! - **Views** borrow the received bytes: [`Message`] and [`Header`] over any
//!   `T: AsRef<[u8]>`, the payload views ([`SaPayload`], [`NotifyPayload`], …)
//!   over `&[u8]`. Each has a `new_checked` that validates every length and
//!   every rule this module enforces, once; [`Message::new_checked`] does so
//!   for the header, the whole payload chain and every payload in it. A view
//!   that exists is valid, and its accessors and iterators cannot fail.
//! - **Reprs** ([`MessageRepr`], [`PayloadRepr`], [`SaRepr`], …) are owned,
//!   high-level values with `parse` (from a view), `buffer_len` and `emit`.
//!   `emit` writes the bytes and then checks them with the same `new_checked`
//!   the receiver uses, so whatever `emit` accepts, `parse` accepts and gives
//!   back unchanged: `parse(emit(x)) == x` (property-tested for every Repr).
//!
//! # What is checked
//!
//! - The header: 28 bytes, major version 2 ([`PeerError::UnsupportedVersion`]
//!   carries what an INVALID_MAJOR_VERSION answer needs), the Length field
//!   equal to the datagram length, at most [`MAX_MESSAGE_LEN`] bytes.
//! - The chain (§3.2): every payload length within the message, no bytes
//!   after the last payload, the SK (46) and SKF (53, RFC 7383) payloads last
//!   and never inside encrypted content. A payload type this module does not
//!   understand is skipped when its critical bit is clear and refused with
//!   [`PeerError::UnsupportedCriticalPayload`] (carrying the type for the
//!   UNSUPPORTED_CRITICAL_PAYLOAD answer) when it is set.
//! - Every understood payload: the layouts of §3.3–§3.16 with their length,
//!   count, numbering and value rules; no bytes after the last substructure.
//!   See each view for its rules.
//!
//! What is *not* checked here is the exchange's business: which payloads an
//! exchange carries, SPIs and message IDs against state, algorithm choices,
//! whether key exchange data has the group's length.
//!
//! # Nothing panics
//!
//! No function of this module panics on any input, received or to be sent:
//! parsing returns [`PeerError`], encoding returns [`EncodeError`] (a field
//! out of range, a rule broken, a buffer too small). Reads go through total
//! helpers (no slice indexing outside tests: `clippy::indexing_slicing` is
//! denied), and offsets derive from lengths bounded by [`MAX_MESSAGE_LEN`].
//! Property tests and the `message` fuzz target (`ike/fuzz`) check it.
//!
//! Reserved fields are written as zero and ignored on receipt. What is signed
//! is the bytes as received: the ID payload view gives the raw body
//! (`RestOfInitIDPayload`, §2.15) and [`Encrypted::aad`] the associated data
//! of the SK payload, not a re-encoding.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

mod chain;
mod error;
mod header;
mod message;
mod notify;
mod payload;
mod sa;
mod ts;
mod types;

#[cfg(test)]
mod tests;

pub use chain::{
    Chain, ChainRepr, Payloads, RawPayload, RawPayloads, CRITICAL, GENERIC_HEADER_LEN,
};
pub use error::{EncodeError, Error, Location, Part, PeerError, Place, Problem};
pub use header::{Flags, Header, HeaderRepr, HEADER_LEN, IKE_MAJOR_VERSION, MAX_MESSAGE_LEN};
pub use message::{Encrypted, Message, MessageRepr};
pub use notify::{DeletePayload, DeleteRepr, NotifyPayload, NotifyRepr, NotifyTarget, NotifyType};
pub use payload::{
    AuthMethod, AuthPayload, AuthRepr, CertEncoding, CertPayload, CertRepr, IdPayload, IdRepr,
    IdType, KeMethod, KePayload, KeRepr, NoncePayload, NonceRepr, Payload, PayloadRepr, SkPayload,
    SkRepr, SkfPayload, SkfRepr, NONCE_LEN,
};
pub use sa::{
    Attribute, AttributeRepr, Attributes, Proposal, ProposalProtocol, ProposalRepr, Proposals,
    SaPayload, SaRepr, Transform, TransformId, TransformRepr, TransformType, Transforms,
    KEY_LENGTH_ATTRIBUTE,
};
pub use ts::{Selector, SelectorRepr, Selectors, TrafficSelector, TsPayload, TsRepr, TsType};
pub use types::{ChildSpi, ExchangeType, IkeSpi, PayloadType, ProtocolId};

/// Big-endian u16 at `at`, or 0 where `b` is too short (never, after validation).
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    b.get(at..)
        .and_then(|r| r.first_chunk::<2>())
        .map_or(0, |a| u16::from_be_bytes(*a))
}

/// Big-endian u32 at `at`, or 0 where `b` is too short.
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..)
        .and_then(|r| r.first_chunk::<4>())
        .map_or(0, |a| u32::from_be_bytes(*a))
}

/// Big-endian u64 at `at`, or 0 where `b` is too short.
pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    b.get(at..)
        .and_then(|r| r.first_chunk::<8>())
        .map_or(0, |a| u64::from_be_bytes(*a))
}

/// Byte at `at`, or 0 where `b` is too short.
pub(crate) fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

/// `b[from..]`, or empty where `b` is too short.
pub(crate) fn tail(b: &[u8], from: usize) -> &[u8] {
    b.get(from..).unwrap_or(&[])
}

/// `b[range]`, or empty where `b` is too short.
pub(crate) fn slice(b: &[u8], range: std::ops::Range<usize>) -> &[u8] {
    b.get(range).unwrap_or(&[])
}

/// A cursor that writes into a caller's buffer, or only counts (to compute
/// `buffer_len` with the very code that emits). Never panics: writing past
/// the end is [`EncodeError::BufferTooSmall`].
pub(crate) struct Writer<'a> {
    buf: Option<&'a mut [u8]>,
    pos: usize,
}

impl<'a> Writer<'a> {
    /// Writes into `buf` from its start.
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Writer {
            buf: Some(buf),
            pos: 0,
        }
    }

    /// Counts the bytes that would be written.
    pub(crate) fn counting() -> Self {
        Writer { buf: None, pos: 0 }
    }

    /// Bytes written (or counted) so far.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Writes `data` at the cursor.
    pub(crate) fn bytes(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        let end = self.pos.saturating_add(data.len());
        if let Some(buf) = self.buf.as_deref_mut() {
            let have = buf.len();
            let dst = buf
                .get_mut(self.pos..end)
                .ok_or(EncodeError::BufferTooSmall { need: end, have })?;
            dst.copy_from_slice(data);
        }
        self.pos = end;
        Ok(())
    }

    pub(crate) fn u8(&mut self, v: u8) -> Result<(), EncodeError> {
        self.bytes(&[v])
    }

    pub(crate) fn u16(&mut self, v: u16) -> Result<(), EncodeError> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn u32(&mut self, v: u32) -> Result<(), EncodeError> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn u64(&mut self, v: u64) -> Result<(), EncodeError> {
        self.bytes(&v.to_be_bytes())
    }

    /// Overwrites the u16 at `at` (already written) with the length of
    /// what was written from `start` on: a length field patched afterwards.
    /// `at`/`start` come from [`Writer::pos`]. A length above 65535 is
    /// `Value` for `field` at `loc`. Never fails while only counting.
    pub(crate) fn patch_len16(
        &mut self,
        at: usize,
        start: usize,
        field: &'static str,
        loc: Location,
    ) -> Result<(), EncodeError> {
        if self.buf.is_none() {
            return Ok(());
        }
        let len = self.pos.saturating_sub(start);
        let v = u16::try_from(len).map_err(|_| EncodeError::Invalid {
            at: loc,
            problem: Problem::Value {
                field,
                value: len as u64,
                allowed: "at most 65535",
            },
        })?;
        self.patch(at, &v.to_be_bytes())
    }

    /// Converts a count to the `u8`/`u16` of its wire field, or an encode
    /// error (never while only counting, so `buffer_len` stays complete).
    pub(crate) fn count<N: TryFrom<usize> + Default>(
        &self,
        n: usize,
        field: &'static str,
        allowed: &'static str,
        loc: Location,
    ) -> Result<N, EncodeError> {
        match N::try_from(n) {
            Ok(v) => Ok(v),
            Err(_) if self.buf.is_none() => Ok(N::default()),
            Err(_) => Err(EncodeError::Invalid {
                at: loc,
                problem: Problem::Value {
                    field,
                    value: n as u64,
                    allowed,
                },
            }),
        }
    }

    /// Overwrites bytes at `at` (already written).
    pub(crate) fn patch(&mut self, at: usize, data: &[u8]) -> Result<(), EncodeError> {
        if let Some(buf) = self.buf.as_deref_mut() {
            let have = buf.len();
            let end = at.saturating_add(data.len());
            let dst = buf
                .get_mut(at..end)
                .ok_or(EncodeError::BufferTooSmall { need: end, have })?;
            dst.copy_from_slice(data);
        }
        Ok(())
    }
}

/// Emits with `write` into `buf`, then validates the written bytes with
/// `check` (the receiver's `new_checked`), turning a rejection into an
/// [`EncodeError`]. Returns the number of bytes written.
pub(crate) fn emit_checked(
    buf: &mut [u8],
    write: impl FnOnce(&mut Writer<'_>) -> Result<(), EncodeError>,
    check: impl FnOnce(&[u8]) -> Result<(), Error>,
) -> Result<usize, Error> {
    let mut w = Writer::new(buf);
    write(&mut w)?;
    let len = w.pos();
    let written = buf.get(..len).ok_or(EncodeError::BufferTooSmall {
        need: len,
        have: buf.len(),
    })?;
    check(written).map_err(Error::into_encode)?;
    Ok(len)
}

/// The length `write` would produce (saturating; errors are left to `emit`).
pub(crate) fn counted_len(write: impl FnOnce(&mut Writer<'_>) -> Result<(), EncodeError>) -> usize {
    let mut w = Writer::counting();
    let _ = write(&mut w);
    w.pos()
}
