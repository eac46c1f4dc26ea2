//! A whole IKE message: header and payload chain, as a checked view
//! ([`Message`]) and as owned content for the encoder ([`MessageRepr`]).
//!
//! # Encrypted messages
//!
//! Receiving: [`Message::encrypted`] gives the SK (or SKF) payload's body
//! (IV ‖ ciphertext ‖ ICV), its associated data (every byte before the IV:
//! header, any payloads before it, the SK generic header and, for SKF, the
//! fragment numbers — RFC 5282 §5.1, RFC 7383 §2.5) and the first inner
//! payload type. The crypto layer decrypts and strips the padding; the
//! plaintext is checked with [`Chain::new_checked_inner`].
//!
//! Sending: encode the inner payloads with [`ChainRepr::emit`], encrypt,
//! and put the body in a [`PayloadRepr::Sk`] as the last payload. Since the
//! associated data includes the final Length, a caller that knows the body
//! size in advance can also emit the message with a zeroed body and then
//! encrypt in place through [`Message::encrypted_parts_mut`].

use std::ops::Range;

use super::chain::{write_chain, Chain, ChainRepr, Payloads, RawPayload, GENERIC_HEADER_LEN};
use super::error::Error;
use super::header::{Header, HeaderRepr, HEADER_LEN};
use super::payload::{skf_field, PayloadRepr};
use super::types::PayloadType;
use super::{be16, counted_len, emit_checked, tail, Writer};

/// A checked IKE message: header and every payload valid.
#[derive(Debug, Clone, Copy)]
pub struct Message<T: AsRef<[u8]>> {
    buf: T,
}

/// The SK or SKF payload of a message, split for the crypto layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encrypted<'a> {
    payload_offset: usize,
    aad: &'a [u8],
    body: &'a [u8],
    first_inner: PayloadType,
    fragment: Option<(u16, u16)>,
}

impl<'a> Encrypted<'a> {
    /// Offset in the message of the SK/SKF payload's generic header (what
    /// `crypto::open` takes).
    pub fn payload_offset(&self) -> usize {
        self.payload_offset
    }
    /// The associated data: the message up to the IV.
    pub fn aad(&self) -> &'a [u8] {
        self.aad
    }
    /// IV ‖ ciphertext ‖ ICV, to the end of the message.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
    /// Where the body lies in the message.
    pub fn body_range(&self) -> Range<usize> {
        self.aad.len()..self.aad.len() + self.body.len()
    }
    /// Type of the first payload inside (`NONE` for an empty content and
    /// for SKF fragments after the first).
    pub fn first_inner(&self) -> PayloadType {
        self.first_inner
    }
    /// For SKF: (Fragment Number, Total Fragments).
    pub fn fragment(&self) -> Option<(u16, u16)> {
        self.fragment
    }
}

impl<T: AsRef<[u8]>> Message<T> {
    /// Checks a whole message (the UDP payload after any non-ESP marker):
    /// the header ([`Header::new_checked`]), the chain and every payload
    /// ([`Chain::new_checked`]). The encrypted content is not looked at.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        let h = Header::new_checked(b)?;
        Chain::new_checked(h.next_payload(), tail(b, HEADER_LEN))?;
        Ok(Message { buf })
    }

    /// The message's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// The header.
    pub fn header(&self) -> Header<&[u8]> {
        Header::new_unchecked(self.buf.as_ref())
    }

    /// The payload chain after the header.
    pub fn chain(&self) -> Chain<'_> {
        let b = self.buf.as_ref();
        Chain::new_unchecked(self.header().next_payload(), tail(b, HEADER_LEN))
    }

    /// The payloads (understood types only), in order.
    pub fn payloads(&self) -> Payloads<'_> {
        self.chain().payloads()
    }

    /// The SK or SKF payload, if the message has one (always last).
    pub fn encrypted(&self) -> Option<Encrypted<'_>> {
        let b = self.buf.as_ref();
        let raw = self.chain().last_encrypted()?;
        let start = encrypted_body_start(&raw);
        let fragment = (raw.payload_type == PayloadType::SKF).then(|| {
            (
                be16(raw.body, skf_field::FRAGMENT_NUMBER.start),
                be16(raw.body, skf_field::TOTAL_FRAGMENTS.start),
            )
        });
        Some(Encrypted {
            payload_offset: HEADER_LEN + raw.offset,
            aad: b.get(..start)?,
            body: b.get(start..)?,
            first_inner: raw.next_payload,
            fragment,
        })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Message<T> {
    /// The associated data and the writable body of the SK/SKF payload,
    /// to encrypt or decrypt in place. Changing the body keeps the message
    /// valid (the body is opaque here).
    pub fn encrypted_parts_mut(&mut self) -> Option<(&[u8], &mut [u8])> {
        let start = encrypted_body_start(&self.chain().last_encrypted()?);
        let b = self.buf.as_mut();
        if start > b.len() {
            return None;
        }
        let (aad, body) = b.split_at_mut(start);
        Some((aad, body))
    }
}

/// Offset in the message of an SK/SKF payload's IV: after the generic
/// header, and for SKF after the fragment numbers too.
fn encrypted_body_start(raw: &RawPayload<'_>) -> usize {
    let fields = if raw.payload_type == PayloadType::SKF {
        skf_field::BODY
    } else {
        0
    };
    HEADER_LEN + raw.offset + GENERIC_HEADER_LEN + fields
}

/// A whole message's content, for the encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRepr {
    /// Header fields.
    pub header: HeaderRepr,
    /// Payloads in order; an SK or SKF payload only last.
    pub payloads: Vec<PayloadRepr>,
}

impl MessageRepr {
    /// The content of a checked message.
    pub fn parse<T: AsRef<[u8]>>(m: &Message<T>) -> MessageRepr {
        MessageRepr {
            header: HeaderRepr::parse(&m.header()),
            payloads: ChainRepr::parse(&m.chain()).payloads,
        }
    }

    /// Checks `bytes` as a message and returns its content.
    pub fn from_bytes(bytes: &[u8]) -> Result<MessageRepr, Error> {
        Ok(MessageRepr::parse(&Message::new_checked(bytes)?))
    }

    /// Type of the first payload.
    pub fn first_payload(&self) -> PayloadType {
        self.payloads
            .first()
            .map_or(PayloadType::NONE, PayloadRepr::payload_type)
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), super::EncodeError> {
        let chain_len = counted_len(|w| write_chain(&self.payloads, w, false));
        self.header.write(
            w,
            self.first_payload(),
            HEADER_LEN.saturating_add(chain_len),
        )?;
        write_chain(&self.payloads, w, false)
    }

    /// Length of the encoded message.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN.saturating_add(counted_len(|w| write_chain(&self.payloads, w, false)))
    }

    /// Writes the message into `buf` (Next Payload fields and lengths
    /// computed), checks it as [`Message::new_checked`] would, and returns
    /// its length. On error the buffer holds garbage.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        emit_checked(
            buf,
            |w| self.write(w),
            |b| Message::new_checked(b).map(|_| ()),
        )
    }

    /// The encoded message in a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut v = vec![0u8; self.buffer_len()];
        let n = self.emit(&mut v)?;
        v.truncate(n);
        Ok(v)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::{
        ExchangeType, Flags, IkeSpi, KeMethod, KeRepr, NonceRepr, NotifyRepr, NotifyType, Payload,
        SkRepr,
    };

    pub(crate) fn init_header() -> HeaderRepr {
        HeaderRepr {
            spi_i: IkeSpi(0x1111_2222_3333_4444),
            spi_r: IkeSpi(0),
            exchange: ExchangeType::IKE_SA_INIT,
            flags: Flags {
                initiator: true,
                ..Flags::default()
            },
            message_id: 0,
        }
    }

    #[test]
    fn builds_and_links_the_chain() {
        let m = MessageRepr {
            header: init_header(),
            payloads: vec![
                PayloadRepr::Ke(KeRepr {
                    group: KeMethod::CURVE25519,
                    data: vec![1; 32],
                }),
                PayloadRepr::Nonce(NonceRepr { data: vec![2; 32] }),
                PayloadRepr::Notify(NotifyRepr::new(
                    NotifyType::IKEV2_FRAGMENTATION_SUPPORTED,
                    vec![],
                )),
            ],
        };
        let bytes = m.to_vec().unwrap();
        assert_eq!(bytes.len(), 28 + 40 + 36 + 8);
        assert_eq!(bytes[16], 34); // header → KE
        assert_eq!(&bytes[24..28], &112u32.to_be_bytes());
        assert_eq!(&bytes[28..32], &[40, 0, 0, 40]); // KE → Nonce, length 40
        assert_eq!(&bytes[68..72], &[41, 0, 0, 36]); // Nonce → Notify
        assert_eq!(&bytes[104..112], &[0, 0, 0, 8, 0, 0, 0x40, 0x2e]);
        let parsed = Message::new_checked(&bytes[..]).unwrap();
        assert_eq!(MessageRepr::parse(&parsed), m);
        assert_eq!(parsed.encrypted(), None);
        let kinds: Vec<_> = parsed.payloads().map(|p| p.payload_type()).collect();
        assert_eq!(
            kinds,
            vec![PayloadType::KE, PayloadType::NONCE, PayloadType::NOTIFY]
        );
        // Exactly the length: smaller buffers are refused.
        let mut small = vec![0; bytes.len() - 1];
        assert!(m.emit(&mut small).is_err());
    }

    #[test]
    fn sk_split_and_in_place() {
        let m = MessageRepr {
            header: HeaderRepr {
                exchange: ExchangeType::IKE_AUTH,
                message_id: 1,
                ..init_header()
            },
            payloads: vec![PayloadRepr::Sk(SkRepr {
                first_inner: PayloadType::ID_I,
                body: vec![0; 40],
            })],
        };
        let mut bytes = m.to_vec().unwrap();
        let mut msg = Message::new_checked(&mut bytes[..]).unwrap();
        {
            let e = msg.encrypted().unwrap();
            assert_eq!(e.aad().len(), 32);
            assert_eq!(e.payload_offset(), 28);
            assert_eq!(e.body_range(), 32..72);
            assert_eq!(e.first_inner(), PayloadType::ID_I);
            assert_eq!(e.fragment(), None);
        }
        let (aad, body) = msg.encrypted_parts_mut().unwrap();
        assert_eq!(&aad[28..32], &[35, 0, 0, 44]);
        body.fill(0xab);
        let bytes = msg.into_inner();
        let again = Message::new_checked(&bytes[..]).unwrap();
        match again.payloads().next() {
            Some(Payload::Sk(sk)) => assert_eq!(sk.body(), &[0xab; 40]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn header_only_message() {
        let m = MessageRepr {
            header: init_header(),
            payloads: vec![],
        };
        let b = m.to_vec().unwrap();
        assert_eq!(b.len(), 28);
        assert_eq!(MessageRepr::from_bytes(&b).unwrap(), m);
    }

    #[test]
    fn too_large_refused() {
        let m = MessageRepr {
            header: init_header(),
            payloads: vec![
                PayloadRepr::VendorId(vec![0; 40_000]),
                PayloadRepr::VendorId(vec![0; 40_000]),
            ],
        };
        let e = m.to_vec().unwrap_err();
        assert!(
            e.to_string()
                .contains("IKE header: message length 80036 is not allowed (28 to 65535)"),
            "{e}"
        );
    }
}
