//! The Security Association payload (RFC 7296 §3.3): proposals, their
//! transforms, and transform attributes.
//!
//! ```text
//! Proposal:   Last Substruc(1) RESERVED(1) Proposal Length(2)
//!             Proposal Num(1) Protocol ID(1) SPI Size(1) Num Transforms(1)
//!             SPI(SPI Size) Transforms...
//! Transform:  Last Substruc(1) RESERVED(1) Transform Length(2)
//!             Transform Type(1) RESERVED(1) Transform ID(2) Attributes...
//! Attribute:  A|Attribute Type(15 bits)  Attribute Value (TV, A=1)
//!             0|Attribute Type(15 bits)  Attribute Length(2) Value (TLV)
//! ```
//!
//! [`SaPayload::new_checked`] requires: at least one proposal; Last
//! Substruc 0 on the last proposal (transform) and 2 (3) on the others, with
//! no bytes after the last; each length within its container; Proposal Num
//! not 0 and each one more than the previous (§3.3.1: a request numbers from
//! 1, a response repeats the number it accepts; which of the two is the
//! exchange's business); Protocol ID IKE, AH or ESP with SPI Size 0 or 8 for
//! IKE and 4 for AH and ESP; Num Transforms equal to the transforms present;
//! attributes within their transform; the Key Length attribute (14) in TV
//! format and at most once per transform. Unknown transform types, IDs and
//! attributes are carried (the exchange refuses proposals it does not
//! understand, §3.3.6).

use super::error::{EncodeError, Error, Location, Part, Problem};
use super::payload::body_codec;
use super::types::{registry, ChildSpi, IkeSpi, PayloadType, ProtocolId};
use super::{be16, be32, be64, byte, slice, tail, Writer};

/// Byte ranges of a proposal substructure.
#[allow(dead_code)] // the whole layout, not every field is read
mod proposal_field {
    use std::ops::Range;
    /// Last Substruc: 0 (last) or 2 (more).
    pub const LAST: usize = 0;
    /// Proposal Length.
    pub const LENGTH: Range<usize> = 2..4;
    /// Proposal Num.
    pub const NUMBER: usize = 4;
    /// Protocol ID.
    pub const PROTOCOL: usize = 5;
    /// SPI Size.
    pub const SPI_SIZE: usize = 6;
    /// Num Transforms.
    pub const NUM_TRANSFORMS: usize = 7;
    /// Start of the SPI.
    pub const SPI: usize = 8;
}

/// Byte ranges of a transform substructure.
#[allow(dead_code)] // the whole layout, not every field is read
mod transform_field {
    use std::ops::Range;
    /// Last Substruc: 0 (last) or 3 (more).
    pub const LAST: usize = 0;
    /// Transform Length.
    pub const LENGTH: Range<usize> = 2..4;
    /// Transform Type.
    pub const TYPE: usize = 4;
    /// Transform ID.
    pub const ID: Range<usize> = 6..8;
    /// Start of the attributes.
    pub const ATTRIBUTES: usize = 8;
}

/// Byte ranges of a transform attribute.
#[allow(dead_code)] // the whole layout, not every field is read
mod attribute_field {
    use std::ops::Range;
    /// Format bit (0x8000: TV) and Attribute Type.
    pub const TYPE: Range<usize> = 0..2;
    /// Attribute Value (TV) or Attribute Length (TLV).
    pub const VALUE_OR_LENGTH: Range<usize> = 2..4;
    /// Start of a TLV attribute's value.
    pub const VALUE: usize = 4;
}

/// Attribute Type of Key Length (in bits), the one attribute of RFC 7296.
pub const KEY_LENGTH_ATTRIBUTE: u16 = 14;
/// The format bit: the attribute is TV (type/value), not TLV.
const ATTRIBUTE_TV: u16 = 0x8000;
const MORE_PROPOSALS: u8 = 2;
const MORE_TRANSFORMS: u8 = 3;
const SUB_HEADER_LEN: usize = 8;

registry! {
    /// Transform Type (§3.3.2; IANA "Transform Type Values").
    TransformType(u8) {
        /// Encryption algorithm.
        ENCR = 1 => "ENCR",
        /// Pseudorandom function.
        PRF = 2 => "PRF",
        /// Integrity algorithm.
        INTEG = 3 => "INTEG",
        /// Key exchange method (Diffie-Hellman group).
        KE = 4 => "KE",
        /// Extended sequence numbers.
        ESN = 5 => "ESN",
        /// Additional key exchange 1 (RFC 9370).
        ADDKE1 = 6 => "ADDKE1",
        /// Additional key exchange 2.
        ADDKE2 = 7 => "ADDKE2",
        /// Additional key exchange 3.
        ADDKE3 = 8 => "ADDKE3",
        /// Additional key exchange 4.
        ADDKE4 = 9 => "ADDKE4",
        /// Additional key exchange 5.
        ADDKE5 = 10 => "ADDKE5",
        /// Additional key exchange 6.
        ADDKE6 = 11 => "ADDKE6",
        /// Additional key exchange 7.
        ADDKE7 = 12 => "ADDKE7",
    }
}

/// Transform ID; its meaning depends on the [`TransformType`] (IANA keeps
/// one registry per type). A few common values are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransformId(pub u16);

impl TransformId {
    /// ENCR: AES-CBC (RFC 3602).
    pub const ENCR_AES_CBC: TransformId = TransformId(12);
    /// ENCR: AES-GCM with a 16-byte ICV (RFC 5282).
    pub const ENCR_AES_GCM_16: TransformId = TransformId(20);
    /// ENCR: ChaCha20-Poly1305 (RFC 7634).
    pub const ENCR_CHACHA20_POLY1305: TransformId = TransformId(28);
    /// PRF: HMAC-SHA2-256 (RFC 4868).
    pub const PRF_HMAC_SHA2_256: TransformId = TransformId(5);
    /// PRF: HMAC-SHA2-384.
    pub const PRF_HMAC_SHA2_384: TransformId = TransformId(6);
    /// PRF: HMAC-SHA2-512.
    pub const PRF_HMAC_SHA2_512: TransformId = TransformId(7);
    /// INTEG: HMAC-SHA2-256-128 (RFC 4868).
    pub const AUTH_HMAC_SHA2_256_128: TransformId = TransformId(12);
    /// ESN: no extended sequence numbers.
    pub const ESN_NO: TransformId = TransformId(0);
    /// ESN: extended sequence numbers.
    pub const ESN_YES: TransformId = TransformId(1);
}

impl std::fmt::Display for TransformId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How proposals or transforms are framed, for the shared walker.
struct SubKind {
    header: &'static str,
    length: &'static str,
    container: &'static str,
    more: u8,
    last_values: &'static str,
    after_last: &'static str,
    more_but_none: &'static str,
    part: fn(u16) -> Part,
}

const PROPOSALS: SubKind = SubKind {
    header: "proposal header",
    length: "proposal length",
    container: "SA payload",
    more: MORE_PROPOSALS,
    last_values: "0 (last) or 2 (more)",
    after_last: "proposal marked last",
    more_but_none: "the last proposal is marked as followed by more",
    part: Part::Proposal,
};

const TRANSFORMS: SubKind = SubKind {
    header: "transform header",
    length: "transform length",
    container: "proposal",
    more: MORE_TRANSFORMS,
    last_values: "0 (last) or 3 (more)",
    after_last: "transform marked last",
    more_but_none: "the last transform is marked as followed by more",
    part: Part::Transform,
};

/// Walks proposals or transforms: the Last Substruc / Length framing.
#[derive(Clone)]
struct Subs<'a> {
    rest: &'a [u8],
    kind: &'static SubKind,
    at: Location,
    n: u16,
    done: bool,
}

impl std::fmt::Debug for Subs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subs")
            .field("rest", &self.rest.len())
            .field("n", &self.n)
            .finish()
    }
}

impl<'a> Subs<'a> {
    fn new(bytes: &'a [u8], kind: &'static SubKind, at: Location) -> Self {
        Subs {
            rest: bytes,
            kind,
            at,
            n: 0,
            done: false,
        }
    }

    fn fail(
        &mut self,
        at: Location,
        problem: Problem,
    ) -> Option<Result<(Location, &'a [u8]), Error>> {
        self.done = true;
        Some(Err(at.malformed(problem)))
    }
}

impl<'a> Iterator for Subs<'a> {
    type Item = Result<(Location, &'a [u8]), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.rest.is_empty() {
            return None;
        }
        let k = self.kind;
        self.n = self.n.saturating_add(1);
        let at = self.at.with((k.part)(self.n));
        let rest = self.rest;
        if rest.len() < SUB_HEADER_LEN {
            return self.fail(
                at,
                Problem::Truncated {
                    what: k.header,
                    need: SUB_HEADER_LEN,
                    have: rest.len(),
                },
            );
        }
        // Proposals and transforms frame alike (§3.3.1, §3.3.2).
        let last = byte(rest, proposal_field::LAST);
        if last != 0 && last != k.more {
            return self.fail(
                at,
                Problem::Value {
                    field: "last substructure",
                    value: u64::from(last),
                    allowed: k.last_values,
                },
            );
        }
        let len = usize::from(be16(rest, proposal_field::LENGTH.start));
        if len < SUB_HEADER_LEN {
            return self.fail(
                at,
                Problem::TooSmall {
                    field: k.length,
                    value: len,
                    min: SUB_HEADER_LEN,
                },
            );
        }
        if len > rest.len() {
            return self.fail(
                at,
                Problem::Exceeds {
                    field: k.length,
                    value: len,
                    container: k.container,
                    room: rest.len(),
                },
            );
        }
        let sub = slice(rest, 0..len);
        self.rest = tail(rest, len);
        if last == 0 {
            self.done = true;
            if !self.rest.is_empty() {
                return Some(Err(at.malformed(Problem::Trailing {
                    count: self.rest.len(),
                    after: k.after_last,
                })));
            }
        } else if self.rest.is_empty() {
            return self.fail(at, Problem::Rule(k.more_but_none));
        }
        Some(Ok((at, sub)))
    }
}

/// A checked SA payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaPayload<'a> {
    body: &'a [u8],
}

impl<'a> SaPayload<'a> {
    /// Checks an SA payload body: see the module documentation.
    pub fn new_checked(body: &'a [u8]) -> Result<Self, Error> {
        let at = Location::payload(PayloadType::SA);
        if body.is_empty() {
            return Err(at.malformed(Problem::Rule("the SA payload holds no proposal")));
        }
        let mut prev: Option<u8> = None;
        for sub in Subs::new(body, &PROPOSALS, at) {
            let (pat, bytes) = sub?;
            check_proposal(bytes, pat)?;
            let num = byte(bytes, proposal_field::NUMBER);
            match prev {
                None if num == 0 => {
                    return Err(pat.malformed(Problem::Value {
                        field: "proposal number",
                        value: 0,
                        allowed: "1 or more",
                    }))
                }
                Some(p) if p.checked_add(1) != Some(num) => {
                    return Err(pat.malformed(Problem::Value {
                        field: "proposal number",
                        value: u64::from(num),
                        allowed: "one more than the previous proposal's",
                    }))
                }
                _ => {}
            }
            prev = Some(num);
        }
        Ok(SaPayload { body })
    }

    /// The proposals, in order.
    pub fn proposals(&self) -> Proposals<'a> {
        Proposals(Subs::new(
            self.body,
            &PROPOSALS,
            Location::payload(PayloadType::SA),
        ))
    }
}

fn check_proposal(b: &[u8], at: Location) -> Result<(), Error> {
    let protocol = byte(b, proposal_field::PROTOCOL);
    let spi_size = byte(b, proposal_field::SPI_SIZE);
    match (ProtocolId(protocol), spi_size) {
        (ProtocolId::IKE, 0 | 8) | (ProtocolId::AH | ProtocolId::ESP, 4) => {}
        (ProtocolId::IKE, n) => {
            return Err(at.malformed(Problem::Value {
                field: "SPI size",
                value: u64::from(n),
                allowed: "0 or 8 for IKE",
            }))
        }
        (ProtocolId::AH | ProtocolId::ESP, n) => {
            return Err(at.malformed(Problem::Value {
                field: "SPI size",
                value: u64::from(n),
                allowed: "4 for AH and ESP",
            }))
        }
        (p, _) => {
            return Err(at.malformed(Problem::Value {
                field: "protocol ID",
                value: u64::from(p.0),
                allowed: "1 (IKE), 2 (AH) or 3 (ESP)",
            }))
        }
    }
    let transforms_at = proposal_field::SPI + usize::from(spi_size);
    if transforms_at > b.len() {
        return Err(at.malformed(Problem::Exceeds {
            field: "SPI size",
            value: usize::from(spi_size),
            container: "proposal",
            room: b.len().saturating_sub(proposal_field::SPI),
        }));
    }
    let mut found = 0usize;
    for sub in Subs::new(tail(b, transforms_at), &TRANSFORMS, at) {
        let (tat, t) = sub?;
        check_attributes(tail(t, transform_field::ATTRIBUTES), tat)?;
        found += 1;
    }
    let declared = usize::from(byte(b, proposal_field::NUM_TRANSFORMS));
    if declared != found {
        return Err(at.malformed(Problem::Count {
            field: "number of transforms",
            declared,
            found,
        }));
    }
    Ok(())
}

fn check_attributes(mut rest: &[u8], at: Location) -> Result<(), Error> {
    let mut n = 0u16;
    let mut key_length = false;
    while !rest.is_empty() {
        n = n.saturating_add(1);
        let aat = at.with(Part::Attribute(n));
        if rest.len() < attribute_field::VALUE {
            return Err(aat.malformed(Problem::Truncated {
                what: "attribute header",
                need: attribute_field::VALUE,
                have: rest.len(),
            }));
        }
        let t = be16(rest, attribute_field::TYPE.start);
        let tv = t & ATTRIBUTE_TV != 0;
        let len = if tv {
            attribute_field::VALUE
        } else {
            let vlen = usize::from(be16(rest, attribute_field::VALUE_OR_LENGTH.start));
            let room = rest.len() - attribute_field::VALUE;
            if vlen > room {
                return Err(aat.malformed(Problem::Exceeds {
                    field: "attribute length",
                    value: vlen,
                    container: "transform",
                    room,
                }));
            }
            attribute_field::VALUE + vlen
        };
        if t & !ATTRIBUTE_TV == KEY_LENGTH_ATTRIBUTE {
            if !tv {
                return Err(aat.malformed(Problem::Rule(
                    "the Key Length attribute must use the TV format",
                )));
            }
            if key_length {
                return Err(aat.malformed(Problem::Rule("more than one Key Length attribute")));
            }
            key_length = true;
        }
        rest = tail(rest, len);
    }
    Ok(())
}

/// Iterator over the proposals of a checked SA payload.
#[derive(Debug, Clone)]
pub struct Proposals<'a>(Subs<'a>);

impl<'a> Iterator for Proposals<'a> {
    type Item = Proposal<'a>;
    fn next(&mut self) -> Option<Proposal<'a>> {
        let (_, bytes) = self.0.next()?.ok()?;
        Some(Proposal { bytes })
    }
}

/// The protocol of a proposal with its SPI (§3.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProposalProtocol {
    /// IKE: no SPI in IKE_SA_INIT (it is in the header), the new SPI when
    /// rekeying the IKE SA.
    Ike(Option<IkeSpi>),
    /// AH with the sender's inbound SPI.
    Ah(ChildSpi),
    /// ESP with the sender's inbound SPI.
    Esp(ChildSpi),
}

impl ProposalProtocol {
    /// The Protocol ID.
    pub fn protocol_id(&self) -> ProtocolId {
        match self {
            ProposalProtocol::Ike(_) => ProtocolId::IKE,
            ProposalProtocol::Ah(_) => ProtocolId::AH,
            ProposalProtocol::Esp(_) => ProtocolId::ESP,
        }
    }
}

/// A proposal of a checked SA payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal<'a> {
    bytes: &'a [u8],
}

impl<'a> Proposal<'a> {
    /// Proposal Num.
    pub fn number(&self) -> u8 {
        byte(self.bytes, proposal_field::NUMBER)
    }
    /// Protocol ID (IKE, AH or ESP).
    pub fn protocol_id(&self) -> ProtocolId {
        ProtocolId(byte(self.bytes, proposal_field::PROTOCOL))
    }
    /// The SPI as sent (0, 4 or 8 bytes).
    pub fn spi(&self) -> &'a [u8] {
        let size = usize::from(byte(self.bytes, proposal_field::SPI_SIZE));
        slice(self.bytes, proposal_field::SPI..proposal_field::SPI + size)
    }
    /// Protocol and SPI.
    pub fn protocol(&self) -> ProposalProtocol {
        let spi = self.spi();
        match self.protocol_id() {
            ProtocolId::AH => ProposalProtocol::Ah(ChildSpi(be32(spi, 0))),
            ProtocolId::ESP => ProposalProtocol::Esp(ChildSpi(be32(spi, 0))),
            _ if spi.is_empty() => ProposalProtocol::Ike(None),
            _ => ProposalProtocol::Ike(Some(IkeSpi(be64(spi, 0)))),
        }
    }
    /// Num Transforms (equal to the transforms present).
    pub fn transform_count(&self) -> u8 {
        byte(self.bytes, proposal_field::NUM_TRANSFORMS)
    }
    /// The transforms, in order.
    pub fn transforms(&self) -> Transforms<'a> {
        let start = proposal_field::SPI + self.spi().len();
        Transforms(Subs::new(
            tail(self.bytes, start),
            &TRANSFORMS,
            Location::payload(PayloadType::SA),
        ))
    }
}

/// Iterator over the transforms of a proposal.
#[derive(Debug, Clone)]
pub struct Transforms<'a>(Subs<'a>);

impl<'a> Iterator for Transforms<'a> {
    type Item = Transform<'a>;
    fn next(&mut self) -> Option<Transform<'a>> {
        let (_, bytes) = self.0.next()?.ok()?;
        Some(Transform { bytes })
    }
}

/// A transform of a checked proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transform<'a> {
    bytes: &'a [u8],
}

impl<'a> Transform<'a> {
    /// Transform Type.
    pub fn transform_type(&self) -> TransformType {
        TransformType(byte(self.bytes, transform_field::TYPE))
    }
    /// Transform ID.
    pub fn id(&self) -> TransformId {
        TransformId(be16(self.bytes, transform_field::ID.start))
    }
    /// The attributes, in order.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            rest: tail(self.bytes, transform_field::ATTRIBUTES),
        }
    }
    /// The Key Length attribute (bits), if present.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes().find_map(|a| match a {
            Attribute::Tv {
                attr_type: KEY_LENGTH_ATTRIBUTE,
                value,
            } => Some(value),
            _ => None,
        })
    }
}

/// A transform attribute (§3.3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute<'a> {
    /// Type/value format: a 15-bit type and a 2-byte value.
    Tv {
        /// Attribute Type (without the format bit).
        attr_type: u16,
        /// Attribute Value.
        value: u16,
    },
    /// Type/length/value format.
    Tlv {
        /// Attribute Type.
        attr_type: u16,
        /// Attribute Value.
        value: &'a [u8],
    },
}

/// Iterator over the attributes of a checked transform.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Attribute<'a>;
    fn next(&mut self) -> Option<Attribute<'a>> {
        let r = self.rest;
        if r.len() < attribute_field::VALUE {
            return None;
        }
        let t = be16(r, attribute_field::TYPE.start);
        let v = be16(r, attribute_field::VALUE_OR_LENGTH.start);
        let attr_type = t & !ATTRIBUTE_TV;
        if t & ATTRIBUTE_TV != 0 {
            self.rest = tail(r, attribute_field::VALUE);
            Some(Attribute::Tv {
                attr_type,
                value: v,
            })
        } else {
            let end = attribute_field::VALUE + usize::from(v);
            let value = r.get(attribute_field::VALUE..end)?;
            self.rest = tail(r, end);
            Some(Attribute::Tlv { attr_type, value })
        }
    }
}

/// A transform attribute's content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AttributeRepr {
    /// TV format (type below 0x8000).
    Tv {
        /// Attribute Type.
        attr_type: u16,
        /// Attribute Value.
        value: u16,
    },
    /// TLV format (type below 0x8000, value at most 65535 bytes).
    Tlv {
        /// Attribute Type.
        attr_type: u16,
        /// Attribute Value.
        value: Vec<u8>,
    },
}

/// A transform's content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransformRepr {
    /// Transform Type.
    pub transform_type: TransformType,
    /// Transform ID.
    pub id: TransformId,
    /// Attributes, in order.
    pub attributes: Vec<AttributeRepr>,
}

impl TransformRepr {
    /// A transform without attributes.
    pub fn new(transform_type: TransformType, id: TransformId) -> Self {
        TransformRepr {
            transform_type,
            id,
            attributes: Vec::new(),
        }
    }

    /// This transform with a Key Length attribute of `bits`.
    pub fn with_key_length(mut self, bits: u16) -> Self {
        self.attributes.push(AttributeRepr::Tv {
            attr_type: KEY_LENGTH_ATTRIBUTE,
            value: bits,
        });
        self
    }

    /// The Key Length attribute (bits), if present.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            AttributeRepr::Tv {
                attr_type: KEY_LENGTH_ATTRIBUTE,
                value,
            } => Some(*value),
            _ => None,
        })
    }

    /// Content of a checked transform.
    pub fn parse(t: &Transform<'_>) -> TransformRepr {
        TransformRepr {
            transform_type: t.transform_type(),
            id: t.id(),
            attributes: t
                .attributes()
                .map(|a| match a {
                    Attribute::Tv { attr_type, value } => AttributeRepr::Tv { attr_type, value },
                    Attribute::Tlv { attr_type, value } => AttributeRepr::Tlv {
                        attr_type,
                        value: value.to_vec(),
                    },
                })
                .collect(),
        }
    }
}

/// A proposal's content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProposalRepr {
    /// Proposal Num.
    pub number: u8,
    /// Protocol and SPI.
    pub protocol: ProposalProtocol,
    /// Transforms, in order.
    pub transforms: Vec<TransformRepr>,
}

impl ProposalRepr {
    /// Content of a checked proposal.
    pub fn parse(p: &Proposal<'_>) -> ProposalRepr {
        ProposalRepr {
            number: p.number(),
            protocol: p.protocol(),
            transforms: p.transforms().map(|t| TransformRepr::parse(&t)).collect(),
        }
    }
}

/// SA payload content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SaRepr {
    /// Proposals, in order (at least one).
    pub proposals: Vec<ProposalRepr>,
}

impl SaRepr {
    /// Content of a checked SA payload.
    pub fn parse(p: &SaPayload<'_>) -> SaRepr {
        SaRepr {
            proposals: p.proposals().map(|p| ProposalRepr::parse(&p)).collect(),
        }
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>, at: Location) -> Result<(), EncodeError> {
        let np = self.proposals.len();
        for (i, p) in self.proposals.iter().enumerate() {
            let pat = at.with(Part::Proposal(part_no(i)));
            let start = w.pos();
            w.u8(if i + 1 == np { 0 } else { MORE_PROPOSALS })?;
            w.u8(0)?;
            w.u16(0)?;
            w.u8(p.number)?;
            w.u8(p.protocol.protocol_id().0)?;
            let (ike, child);
            let spi: &[u8] = match p.protocol {
                ProposalProtocol::Ike(None) => &[],
                ProposalProtocol::Ike(Some(s)) => {
                    ike = s.0.to_be_bytes();
                    &ike
                }
                ProposalProtocol::Ah(s) | ProposalProtocol::Esp(s) => {
                    child = s.0.to_be_bytes();
                    &child
                }
            };
            // 0, 4 or 8: fits.
            w.u8(spi.len() as u8)?;
            w.u8(w.count(
                p.transforms.len(),
                "number of transforms",
                "at most 255",
                pat,
            )?)?;
            w.bytes(spi)?;
            let nt = p.transforms.len();
            for (j, t) in p.transforms.iter().enumerate() {
                let tat = pat.with(Part::Transform(part_no(j)));
                let tstart = w.pos();
                w.u8(if j + 1 == nt { 0 } else { MORE_TRANSFORMS })?;
                w.u8(0)?;
                w.u16(0)?;
                w.u8(t.transform_type.0)?;
                w.u8(0)?;
                w.u16(t.id.0)?;
                for (k, a) in t.attributes.iter().enumerate() {
                    write_attribute(w, a, tat.with(Part::Attribute(part_no(k))))?;
                }
                w.patch_len16(tstart + 2, tstart, "transform length", tat)?;
            }
            w.patch_len16(start + 2, start, "proposal length", pat)?;
        }
        Ok(())
    }
}
body_codec!(SaRepr, PayloadType::SA, |_s, b| SaPayload::new_checked(b));

fn part_no(i: usize) -> u16 {
    u16::try_from(i.saturating_add(1)).unwrap_or(u16::MAX)
}

fn write_attribute(w: &mut Writer<'_>, a: &AttributeRepr, at: Location) -> Result<(), EncodeError> {
    let (AttributeRepr::Tv { attr_type, .. } | AttributeRepr::Tlv { attr_type, .. }) = a;
    if *attr_type & ATTRIBUTE_TV != 0 {
        return Err(EncodeError::Invalid {
            at,
            problem: Problem::Value {
                field: "attribute type",
                value: u64::from(*attr_type),
                allowed: "0 to 32767",
            },
        });
    }
    match a {
        AttributeRepr::Tv { attr_type, value } => {
            w.u16(attr_type | ATTRIBUTE_TV)?;
            w.u16(*value)
        }
        AttributeRepr::Tlv { attr_type, value } => {
            w.u16(*attr_type)?;
            w.u16(w.count(value.len(), "attribute length", "at most 65535", at)?)?;
            w.bytes(value)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::payload::tests::bytes;
    use proptest::prelude::*;

    /// One IKE proposal (§3.3 layout by hand): AES-GCM-16 with Key Length
    /// 256, PRF HMAC-SHA2-256, KE curve25519.
    pub(crate) fn ike_proposal_bytes() -> Vec<u8> {
        vec![
            0, 0, 0, 36, // last, reserved, proposal length 36
            1, 1, 0, 3, // proposal 1, IKE, SPI size 0, 3 transforms
            3, 0, 0, 12, 1, 0, 0, 20, 0x80, 14, 1, 0, // ENCR 20, key length 256
            3, 0, 0, 8, 2, 0, 0, 5, // PRF 5
            0, 0, 0, 8, 4, 0, 0, 31, // KE 31
        ]
    }

    #[test]
    fn ike_proposal() {
        let b = ike_proposal_bytes();
        let sa = SaPayload::new_checked(&b).unwrap();
        let props: Vec<_> = sa.proposals().collect();
        assert_eq!(props.len(), 1);
        let p = props[0];
        assert_eq!(p.number(), 1);
        assert_eq!(p.protocol(), ProposalProtocol::Ike(None));
        assert_eq!(p.transform_count(), 3);
        let ts: Vec<_> = p.transforms().collect();
        assert_eq!(ts[0].transform_type(), TransformType::ENCR);
        assert_eq!(ts[0].id(), TransformId::ENCR_AES_GCM_16);
        assert_eq!(ts[0].key_length(), Some(256));
        assert_eq!(ts[1].key_length(), None);
        assert_eq!(ts[2].transform_type(), TransformType::KE);
        let r = SaRepr::parse(&sa);
        assert_eq!(
            r,
            SaRepr {
                proposals: vec![ProposalRepr {
                    number: 1,
                    protocol: ProposalProtocol::Ike(None),
                    transforms: vec![
                        TransformRepr::new(TransformType::ENCR, TransformId::ENCR_AES_GCM_16)
                            .with_key_length(256),
                        TransformRepr::new(TransformType::PRF, TransformId::PRF_HMAC_SHA2_256),
                        TransformRepr::new(TransformType::KE, TransformId(31)),
                    ],
                }]
            }
        );
        let mut out = vec![0; r.buffer_len()];
        r.emit(&mut out).unwrap();
        assert_eq!(out, b);
    }

    fn esp_proposal(number: u8, last: bool, spi: u32) -> Vec<u8> {
        let mut v = vec![if last { 0 } else { 2 }, 0, 0, 28, number, 3, 4, 2];
        v.extend_from_slice(&spi.to_be_bytes());
        v.extend_from_slice(&[3, 0, 0, 8, 1, 0, 0, 28]); // ENCR chacha20-poly1305
        v.extend_from_slice(&[0, 0, 0, 8, 5, 0, 0, 0]); // no ESN
        v
    }

    #[test]
    fn esp_proposals_numbered() {
        let mut b = esp_proposal(1, false, 0xc0ffee);
        b.extend(esp_proposal(2, true, 0xc0ffee));
        let sa = SaPayload::new_checked(&b).unwrap();
        let r = SaRepr::parse(&sa);
        assert_eq!(r.proposals.len(), 2);
        assert_eq!(
            r.proposals[1].protocol,
            ProposalProtocol::Esp(ChildSpi(0xc0ffee))
        );
        // A response repeats the accepted number.
        assert!(SaPayload::new_checked(&esp_proposal(2, true, 1)).is_ok());
        // Gaps, repeats and 0 are refused.
        for (a, c) in [(1u8, 3u8), (1, 1), (2, 1)] {
            let mut b = esp_proposal(a, false, 1);
            b.extend(esp_proposal(c, true, 1));
            let e = SaPayload::new_checked(&b).unwrap_err();
            assert!(
                e.to_string()
                    .contains("SA payload, proposal 2: proposal number"),
                "{e}"
            );
        }
        assert!(SaPayload::new_checked(&esp_proposal(0, true, 1)).is_err());
        assert!(SaPayload::new_checked(&[]).is_err());
    }

    #[test]
    fn framing_errors() {
        let good = esp_proposal(1, true, 1);
        // Marked "more" but last; marked last with bytes after.
        let mut b = good.clone();
        b[0] = 2;
        assert!(SaPayload::new_checked(&b).is_err());
        let mut b = good.clone();
        b.extend_from_slice(&[0; 8]);
        let e = SaPayload::new_checked(&b).unwrap_err();
        assert!(
            e.to_string()
                .contains("8 unexpected bytes after the proposal marked last"),
            "{e}"
        );
        // Last substruc 3 in a proposal, 2 in a transform.
        let mut b = good.clone();
        b[0] = 3;
        assert!(SaPayload::new_checked(&b).is_err());
        let mut b = good.clone();
        b[12] = 2;
        assert!(SaPayload::new_checked(&b).is_err());
        // Proposal length too small / too large.
        let mut b = good.clone();
        b[3] = 7;
        assert!(SaPayload::new_checked(&b).is_err());
        let mut b = good.clone();
        b[3] = 29;
        assert!(SaPayload::new_checked(&b).is_err());
        // Transform count mismatch.
        let mut b = good.clone();
        b[7] = 3;
        let e = SaPayload::new_checked(&b).unwrap_err();
        assert!(
            e.to_string()
                .contains("number of transforms says 3 but 2 are present"),
            "{e}"
        );
        // SPI sizes per protocol, and unknown protocols.
        let mut b = good.clone();
        b[6] = 8;
        assert!(SaPayload::new_checked(&b).is_err());
        let mut b = good.clone();
        b[5] = 4;
        assert!(SaPayload::new_checked(&b).is_err());
        let mut b = ike_proposal_bytes();
        b[6] = 4;
        assert!(SaPayload::new_checked(&b).is_err());
        // Truncated proposal header.
        assert!(SaPayload::new_checked(&good[..7]).is_err());
    }

    #[test]
    fn attribute_errors_are_located() {
        // Proposal 2, transform 3, attribute 1: TLV length 9 with 5 bytes left.
        let mut b = esp_proposal(1, false, 1);
        let mut p2 = vec![0, 0, 0, 0, 2, 3, 4, 3];
        p2.extend_from_slice(&1u32.to_be_bytes());
        p2.extend_from_slice(&[3, 0, 0, 8, 1, 0, 0, 28]);
        p2.extend_from_slice(&[3, 0, 0, 8, 5, 0, 0, 0]);
        p2.extend_from_slice(&[0, 0, 0, 17, 1, 0, 0, 12, 0, 1, 0, 9, 1, 2, 3, 4, 5]);
        let len = p2.len() as u16;
        p2[2..4].copy_from_slice(&len.to_be_bytes());
        b.extend(p2);
        let e = SaPayload::new_checked(&b).unwrap_err();
        assert_eq!(
            e.to_string(),
            "IKE message from the peer refused: SA payload, proposal 2, transform 3, \
             attribute 1: attribute length 9 exceeds the transform (5 bytes left)"
        );
    }

    #[test]
    fn key_length_rules() {
        let with_attrs = |attrs: &[u8]| {
            let mut v = vec![0, 0, 0, 0, 1, 1, 0, 1];
            let tlen = 8 + attrs.len();
            v.extend_from_slice(&[0, 0, 0, tlen as u8, 1, 0, 0, 20]);
            v.extend_from_slice(attrs);
            let len = v.len() as u16;
            v[2..4].copy_from_slice(&len.to_be_bytes());
            v
        };
        assert!(SaPayload::new_checked(&with_attrs(&[0x80, 14, 0, 128])).is_ok());
        // TLV Key Length, two Key Lengths: refused.
        assert!(SaPayload::new_checked(&with_attrs(&[0, 14, 0, 2, 0, 128])).is_err());
        assert!(SaPayload::new_checked(&with_attrs(&[0x80, 14, 0, 128, 0x80, 14, 1, 0])).is_err());
        // Unknown attributes, TV and TLV, are carried.
        let b = with_attrs(&[0x80, 99, 0, 1, 0, 98, 0, 1, 7]);
        let sa = SaPayload::new_checked(&b).unwrap();
        let t = sa.proposals().next().unwrap().transforms().next().unwrap();
        let attrs: Vec<_> = t.attributes().collect();
        assert_eq!(
            attrs,
            vec![
                Attribute::Tv {
                    attr_type: 99,
                    value: 1
                },
                Attribute::Tlv {
                    attr_type: 98,
                    value: &[7]
                }
            ]
        );
        // Truncated attribute header.
        assert!(SaPayload::new_checked(&with_attrs(&[0x80, 14, 0])).is_err());
        // Emitting a type with the format bit set is refused.
        let r = SaRepr {
            proposals: vec![ProposalRepr {
                number: 1,
                protocol: ProposalProtocol::Ike(None),
                transforms: vec![TransformRepr {
                    transform_type: TransformType::ENCR,
                    id: TransformId(20),
                    attributes: vec![AttributeRepr::Tv {
                        attr_type: 0x800e,
                        value: 1,
                    }],
                }],
            }],
        };
        assert!(r.emit(&mut [0; 64]).is_err());
    }

    pub(crate) fn attribute() -> impl Strategy<Value = AttributeRepr> {
        prop_oneof![
            (0u16..0x8000, any::<u16>())
                .prop_map(|(attr_type, value)| AttributeRepr::Tv { attr_type, value }),
            (0u16..0x8000, bytes(0..6))
                .prop_map(|(attr_type, value)| AttributeRepr::Tlv { attr_type, value }),
        ]
    }

    pub(crate) fn transform() -> impl Strategy<Value = TransformRepr> {
        (
            any::<u8>(),
            any::<u16>(),
            proptest::option::of(any::<u16>()),
            proptest::collection::vec(attribute(), 0..2),
        )
            .prop_map(|(t, id, kl, mut attributes)| {
                attributes.retain(|a| {
                    !matches!(
                        a,
                        AttributeRepr::Tv { attr_type: 14, .. }
                            | AttributeRepr::Tlv { attr_type: 14, .. }
                    )
                });
                let tr = TransformRepr {
                    transform_type: TransformType(t),
                    id: TransformId(id),
                    attributes,
                };
                match kl {
                    Some(bits) => tr.with_key_length(bits),
                    None => tr,
                }
            })
    }

    pub(crate) fn protocol() -> impl Strategy<Value = ProposalProtocol> {
        prop_oneof![
            Just(ProposalProtocol::Ike(None)),
            any::<u64>().prop_map(|s| ProposalProtocol::Ike(Some(IkeSpi(s)))),
            any::<u32>().prop_map(|s| ProposalProtocol::Ah(ChildSpi(s))),
            any::<u32>().prop_map(|s| ProposalProtocol::Esp(ChildSpi(s))),
        ]
    }

    /// Valid SA payloads: consecutive numbers from any start.
    pub(crate) fn sa() -> impl Strategy<Value = SaRepr> {
        (
            1u8..=250,
            proptest::collection::vec(
                (protocol(), proptest::collection::vec(transform(), 0..5)),
                1..4,
            ),
        )
            .prop_map(|(first, ps)| SaRepr {
                proposals: ps
                    .into_iter()
                    .enumerate()
                    .map(|(i, (protocol, transforms))| ProposalRepr {
                        number: first + i as u8,
                        protocol,
                        transforms,
                    })
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn round_trip(r in sa()) {
            let mut buf = vec![0; r.buffer_len()];
            let n = r.emit(&mut buf).unwrap();
            prop_assert_eq!(n, buf.len());
            prop_assert_eq!(SaRepr::parse(&SaPayload::new_checked(&buf).unwrap()), r);
        }

        #[test]
        fn arbitrary_reprs_never_panic(number in any::<u8>(), p in protocol(),
                                       ts in proptest::collection::vec(transform(), 0..3),
                                       extra in proptest::collection::vec(attribute(), 0..3)) {
            let mut ts = ts;
            if let Some(t) = ts.first_mut() {
                t.attributes.extend(extra);
            }
            let r = SaRepr { proposals: vec![ProposalRepr { number, protocol: p, transforms: ts }] };
            let mut buf = vec![0; r.buffer_len()];
            if let Ok(n) = r.emit(&mut buf) {
                prop_assert_eq!(SaRepr::parse(&SaPayload::new_checked(&buf[..n]).unwrap()), r);
            }
        }

        #[test]
        fn bytes_never_panic(b in bytes(0..200)) {
            if let Ok(sa) = SaPayload::new_checked(&b) {
                for p in sa.proposals() {
                    let _ = (p.number(), p.protocol(), p.spi());
                    for t in p.transforms() {
                        let _ = (t.transform_type(), t.id(), t.key_length(), t.attributes().count());
                    }
                }
                let r = SaRepr::parse(&sa);
                let mut out = vec![0; r.buffer_len()];
                prop_assert_eq!(r.emit(&mut out).unwrap(), b.len());
            }
        }
    }
}
