//! SA payloads (RFC 7296 §3.3): ours from the configuration, the
//! responder's choice among the peer's, the initiator's check of the
//! responder's answer, and — when nothing matches — a description of both
//! sides' offers ([`ProposalMismatch`]) in strongSwan's proposal syntax
//! (`aes256gcm16-prfsha256-x25519`), so that an administrator can compare
//! it with the peer's configuration.
//!
//! Matching rules (§3.3.6): a peer proposal is acceptable if, for each
//! transform type we need, it lists our transform, and it contains no
//! transform type we do not understand (ADDKE of RFC 9370, for instance).
//! With an AEAD, INTEG must be absent or list NONE. ESP needs ESN "no".
//! KE transforms in an ESP proposal of IKE_AUTH are ignored: there is no
//! key exchange in IKE_AUTH (§1.2). In CREATE_CHILD_SA they are not: with
//! PFS configured, the proposal must list our group; without, it must list
//! no group or NONE ([`KeRule`]). A transform with an attribute other
//! than Key Length is not acceptable.

use std::fmt;

use crate::crypto::{Aead, Group, Prf};
use crate::wire::{
    Attribute, ChildSpi, IkeSpi, KeMethod, Proposal, ProposalProtocol, ProposalRepr, ProtocolId,
    SaPayload, SaRepr, TransformId, TransformRepr, TransformType, KEY_LENGTH_ATTRIBUTE,
};

use super::config::{EspProposal, IkeProposal};

/// How many of a peer's proposals a mismatch report keeps.
const MAX_REPORTED: usize = 16;

/// A transform as offered by a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransformDesc {
    /// Transform Type.
    pub transform_type: TransformType,
    /// Transform ID.
    pub id: TransformId,
    /// Key Length attribute, if any.
    pub key_length: Option<u16>,
    /// It carries an attribute other than Key Length.
    pub other_attributes: bool,
}

impl fmt::Display for TransformDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&transform_name(
            self.transform_type,
            self.id,
            self.key_length,
        ))?;
        if self.other_attributes {
            f.write_str("(+attributes)")?;
        }
        Ok(())
    }
}

/// A peer's proposal, for matching and for the log.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OfferedProposal {
    /// Proposal Num.
    pub number: u8,
    /// Protocol and SPI.
    pub protocol: ProposalProtocol,
    /// The transforms, in order.
    pub transforms: Vec<TransformDesc>,
}

impl OfferedProposal {
    fn parse(p: &Proposal<'_>) -> OfferedProposal {
        OfferedProposal {
            number: p.number(),
            protocol: p.protocol(),
            transforms: p
                .transforms()
                .map(|t| TransformDesc {
                    transform_type: t.transform_type(),
                    id: t.id(),
                    key_length: t.key_length(),
                    other_attributes: t.attributes().any(|a| {
                        !matches!(
                            a,
                            Attribute::Tv {
                                attr_type: KEY_LENGTH_ATTRIBUTE,
                                ..
                            }
                        )
                    }),
                })
                .collect(),
        }
    }

    fn of_type(&self, ty: TransformType) -> impl Iterator<Item = &TransformDesc> {
        self.transforms
            .iter()
            .filter(move |t| t.transform_type == ty && !t.other_attributes)
    }

    fn has_type(&self, ty: TransformType) -> bool {
        self.transforms.iter().any(|t| t.transform_type == ty)
    }

    fn offers_aead(&self, aead: Aead) -> bool {
        self.of_type(TransformType::ENCR)
            .any(|t| Aead::from_transform(t.id.0, t.key_length) == Some(aead))
    }

    /// INTEG absent or listing NONE (0): acceptable with an AEAD.
    fn integ_none_possible(&self) -> bool {
        !self.has_type(TransformType::INTEG)
            || self.of_type(TransformType::INTEG).any(|t| t.id.0 == 0)
    }

    /// Transform types present that `known` does not list.
    fn unknown_types(&self, known: &[TransformType]) -> Vec<TransformType> {
        let mut out: Vec<TransformType> = Vec::new();
        for t in &self.transforms {
            if !known.contains(&t.transform_type) && !out.contains(&t.transform_type) {
                out.push(t.transform_type);
            }
        }
        out
    }
}

impl fmt::Display for OfferedProposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} ", self.number)?;
        if self.protocol.protocol_id() != ProtocolId::IKE {
            write!(f, "{} ", self.protocol.protocol_id())?;
        }
        // Group by type, strongSwan's order: ENCR, INTEG, PRF, KE, ESN, rest.
        let mut types: Vec<TransformType> = vec![
            TransformType::ENCR,
            TransformType::INTEG,
            TransformType::PRF,
            TransformType::KE,
            TransformType::ESN,
        ];
        for t in &self.transforms {
            if !types.contains(&t.transform_type) {
                types.push(t.transform_type);
            }
        }
        let mut first = true;
        for ty in types {
            let names: Vec<String> = self
                .transforms
                .iter()
                .filter(|t| t.transform_type == ty)
                .map(ToString::to_string)
                .collect();
            if names.is_empty() {
                continue;
            }
            if !first {
                f.write_str("-")?;
            }
            first = false;
            f.write_str(&names.join("/"))?;
        }
        Ok(())
    }
}

/// The proposals of both sides when none matched: what the peer offered,
/// what we allow, and the closest pair with the transform types that differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposalMismatch {
    /// IKE or ESP.
    pub protocol: ProtocolId,
    /// The peer's proposals (at most 16 are kept).
    pub offered: Vec<OfferedProposal>,
    /// How many the peer sent.
    pub offered_count: usize,
    /// Ours, in strongSwan's syntax.
    pub allowed: Vec<String>,
    /// The pair that came closest.
    pub closest: Option<Closest>,
}

/// The closest pair of a [`ProposalMismatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closest {
    /// The peer's proposal number.
    pub offered: u8,
    /// Our proposal.
    pub allowed: String,
    /// The transform types in which they differ.
    pub differ: Vec<TransformType>,
}

impl fmt::Display for ProposalMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no {} proposal chosen (NO_PROPOSAL_CHOSEN): peer offered [",
            self.protocol
        )?;
        for (i, p) in self.offered.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{p}")?;
        }
        if self.offered_count > self.offered.len() {
            write!(f, ", and {} more", self.offered_count - self.offered.len())?;
        }
        write!(f, "], we allow [{}]", self.allowed.join(", "))?;
        if let Some(c) = &self.closest {
            let differ: Vec<String> = c.differ.iter().map(ToString::to_string).collect();
            write!(
                f,
                "; closest: the peer's #{} and our {}, which differ in {}",
                c.offered,
                c.allowed,
                differ.join(", ")
            )?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------ our offers

fn encr(aead: Aead) -> TransformRepr {
    let t = TransformRepr::new(TransformType::ENCR, TransformId(aead.transform_id()));
    match aead.key_length_attribute() {
        Some(bits) => t.with_key_length(bits),
        None => t,
    }
}

fn ike_transforms(p: IkeProposal) -> Vec<TransformRepr> {
    vec![
        encr(p.aead),
        TransformRepr::new(TransformType::PRF, TransformId(p.prf.transform_id())),
        TransformRepr::new(TransformType::KE, TransformId(p.group.transform_id())),
    ]
}

fn esn_id(esn: bool) -> TransformId {
    if esn {
        TransformId::ESN_YES
    } else {
        TransformId::ESN_NO
    }
}

fn esp_transforms(p: EspProposal) -> Vec<TransformRepr> {
    vec![
        encr(p.aead),
        TransformRepr::new(TransformType::ESN, esn_id(p.esn)),
    ]
}

fn number(i: usize) -> u8 {
    u8::try_from(i.saturating_add(1)).unwrap_or(u8::MAX)
}

/// Our IKE SA payload for IKE_SA_INIT (`spi` None) or for rekeying the
/// IKE SA (our new SPI): one proposal per configured one.
pub(crate) fn ike_offer(ours: &[IkeProposal], spi: Option<IkeSpi>) -> SaRepr {
    SaRepr {
        proposals: ours
            .iter()
            .enumerate()
            .map(|(i, p)| ProposalRepr {
                number: number(i),
                protocol: ProposalProtocol::Ike(spi),
                transforms: ike_transforms(*p),
            })
            .collect(),
    }
}

/// The responder's IKE SA payload: the chosen proposal under its number
/// (with our new SPI when rekeying).
pub(crate) fn ike_answer(number: u8, p: IkeProposal, spi: Option<IkeSpi>) -> SaRepr {
    SaRepr {
        proposals: vec![ProposalRepr {
            number,
            protocol: ProposalProtocol::Ike(spi),
            transforms: ike_transforms(p),
        }],
    }
}

fn with_ke(mut t: Vec<TransformRepr>, pfs: Option<Group>) -> Vec<TransformRepr> {
    if let Some(g) = pfs {
        t.push(TransformRepr::new(
            TransformType::KE,
            TransformId(g.transform_id()),
        ));
    }
    t
}

/// Our ESP SA payload: one proposal per configured one, each with our SPI,
/// and our PFS group (CREATE_CHILD_SA only).
pub(crate) fn esp_offer(ours: &[EspProposal], spi: ChildSpi, pfs: Option<Group>) -> SaRepr {
    SaRepr {
        proposals: ours
            .iter()
            .enumerate()
            .map(|(i, p)| ProposalRepr {
                number: number(i),
                protocol: ProposalProtocol::Esp(spi),
                transforms: with_ke(esp_transforms(*p), pfs),
            })
            .collect(),
    }
}

/// The responder's ESP SA payload.
pub(crate) fn esp_answer(number: u8, p: EspProposal, spi: ChildSpi, pfs: Option<Group>) -> SaRepr {
    SaRepr {
        proposals: vec![ProposalRepr {
            number,
            protocol: ProposalProtocol::Esp(spi),
            transforms: with_ke(esp_transforms(p), pfs),
        }],
    }
}

/// What an ESP proposal's KE transforms must say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeRule {
    /// IKE_AUTH: whatever they say, there is no key exchange.
    Ignore,
    /// CREATE_CHILD_SA: this group (PFS), or no key exchange (`None`).
    Exactly(Option<Group>),
}

impl KeRule {
    fn accepts(self, offer: &OfferedProposal) -> bool {
        match self {
            KeRule::Ignore => true,
            KeRule::Exactly(Some(g)) => offer
                .of_type(TransformType::KE)
                .any(|t| t.id.0 == g.transform_id()),
            KeRule::Exactly(None) => {
                !offer.has_type(TransformType::KE)
                    || offer.of_type(TransformType::KE).any(|t| t.id.0 == 0)
            }
        }
    }
}
// ------------------------------------------------- the responder's choice

const IKE_TYPES: [TransformType; 4] = [
    TransformType::ENCR,
    TransformType::PRF,
    TransformType::INTEG,
    TransformType::KE,
];
const ESP_TYPES: [TransformType; 4] = [
    TransformType::ENCR,
    TransformType::INTEG,
    TransformType::KE,
    TransformType::ESN,
];

/// Transform types in which `offer` fails to provide `ours` (empty: acceptable).
fn ike_differences(offer: &OfferedProposal, ours: IkeProposal) -> Vec<TransformType> {
    let mut d = Vec::new();
    if !offer.offers_aead(ours.aead) {
        d.push(TransformType::ENCR);
    }
    if !offer.integ_none_possible() {
        d.push(TransformType::INTEG);
    }
    if !offer
        .of_type(TransformType::PRF)
        .any(|t| Prf::from_transform_id(t.id.0) == Some(ours.prf))
    {
        d.push(TransformType::PRF);
    }
    if !offer
        .of_type(TransformType::KE)
        .any(|t| Group::from_transform_id(t.id.0) == Some(ours.group))
    {
        d.push(TransformType::KE);
    }
    d.extend(offer.unknown_types(&IKE_TYPES));
    d
}

fn esp_differences(offer: &OfferedProposal, ours: EspProposal, ke: KeRule) -> Vec<TransformType> {
    let mut d = Vec::new();
    if !offer.offers_aead(ours.aead) {
        d.push(TransformType::ENCR);
    }
    if !ke.accepts(offer) {
        d.push(TransformType::KE);
    }
    if !offer.integ_none_possible() {
        d.push(TransformType::INTEG);
    }
    if !offer
        .of_type(TransformType::ESN)
        .any(|t| t.id == esn_id(ours.esn))
    {
        d.push(TransformType::ESN);
    }
    d.extend(offer.unknown_types(&ESP_TYPES));
    d
}

fn offers(sa: &SaPayload<'_>) -> Vec<OfferedProposal> {
    sa.proposals().map(|p| OfferedProposal::parse(&p)).collect()
}

/// What the responder makes of the initiator's IKE proposals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum IkeChoice {
    /// Accept this proposal (the peer's number).
    Accept { number: u8, proposal: IkeProposal },
    /// Acceptable, but with another key exchange method than the KE
    /// payload's: answer INVALID_KE_PAYLOAD naming it.
    WrongGroup(Group),
    /// Nothing acceptable.
    NoneAcceptable(Box<ProposalMismatch>),
}

/// The responder's choice, in our order of preference; a proposal whose
/// group is the KE payload's wins over a preferred one that would cost a
/// round trip.
pub(crate) fn choose_ike(sa: &SaPayload<'_>, ours: &[IkeProposal], ke: KeMethod) -> IkeChoice {
    choose_ike_with(sa, ours, ke, false).0
}

/// The responder's choice among IKE proposals for rekeying the IKE SA:
/// each must carry the initiator's new SPI (not zero); returned with it.
pub(crate) fn choose_ike_rekey(
    sa: &SaPayload<'_>,
    ours: &[IkeProposal],
    ke: KeMethod,
) -> (IkeChoice, Option<IkeSpi>) {
    choose_ike_with(sa, ours, ke, true)
}

fn ike_protocol_ok(p: ProposalProtocol, rekey: bool) -> bool {
    match p {
        ProposalProtocol::Ike(None) => !rekey,
        ProposalProtocol::Ike(Some(spi)) => rekey && spi.0 != 0,
        _ => false,
    }
}

fn choose_ike_with(
    sa: &SaPayload<'_>,
    ours: &[IkeProposal],
    ke: KeMethod,
    rekey: bool,
) -> (IkeChoice, Option<IkeSpi>) {
    let offers = offers(sa);
    let mut fallback: Option<Group> = None;
    for o in ours {
        for offer in &offers {
            if !ike_protocol_ok(offer.protocol, rekey) || !ike_differences(offer, *o).is_empty() {
                continue;
            }
            if o.group.transform_id() == ke.0 {
                let spi = match offer.protocol {
                    ProposalProtocol::Ike(spi) => spi,
                    _ => None,
                };
                return (
                    IkeChoice::Accept {
                        number: offer.number,
                        proposal: *o,
                    },
                    spi,
                );
            }
            fallback.get_or_insert(o.group);
        }
    }
    let choice = match fallback {
        Some(g) => IkeChoice::WrongGroup(g),
        None => IkeChoice::NoneAcceptable(Box::new(mismatch(
            ProtocolId::IKE,
            offers,
            ours,
            |offer, o| ike_protocol_ok(offer.protocol, rekey).then(|| ike_differences(offer, *o)),
            |o| describe_ike(*o),
        ))),
    };
    (choice, None)
}

/// The responder's choice among ESP proposals: (the peer's number, ours,
/// the peer's SPI).
pub(crate) fn choose_esp(
    sa: &SaPayload<'_>,
    ours: &[EspProposal],
    ke: KeRule,
) -> Result<(u8, EspProposal, ChildSpi), Box<ProposalMismatch>> {
    let offers = offers(sa);
    let esp_spi = |offer: &OfferedProposal| match offer.protocol {
        ProposalProtocol::Esp(spi) if spi.0 != 0 => Some(spi),
        _ => None,
    };
    for o in ours {
        for offer in &offers {
            if let Some(spi) = esp_spi(offer) {
                if esp_differences(offer, *o, ke).is_empty() {
                    return Ok((offer.number, *o, spi));
                }
            }
        }
    }
    Err(Box::new(mismatch(
        ProtocolId::ESP,
        offers,
        ours,
        |offer, o| esp_spi(offer).map(|_| esp_differences(offer, *o, ke)),
        |o| describe_esp(*o),
    )))
}

fn mismatch<P>(
    protocol: ProtocolId,
    offers: Vec<OfferedProposal>,
    ours: &[P],
    differences: impl Fn(&OfferedProposal, &P) -> Option<Vec<TransformType>>,
    describe: impl Fn(&P) -> String,
) -> ProposalMismatch {
    let mut closest: Option<(usize, Closest)> = None;
    for o in ours {
        for offer in &offers {
            let Some(differ) = differences(offer, o) else {
                continue;
            };
            if closest.as_ref().is_none_or(|(n, _)| differ.len() < *n) {
                closest = Some((
                    differ.len(),
                    Closest {
                        offered: offer.number,
                        allowed: describe(o),
                        differ,
                    },
                ));
            }
        }
    }
    let offered_count = offers.len();
    let mut offered = offers;
    offered.truncate(MAX_REPORTED);
    ProposalMismatch {
        protocol,
        offered,
        offered_count,
        allowed: ours.iter().map(describe).collect(),
        closest: closest.map(|(_, c)| c),
    }
}

// ----------------------------------------------- the initiator's check

/// The single proposal of a response, and its transforms by type; `Err` if
/// a type appears twice or an attribute we do not know is present.
fn single(sa: &SaPayload<'_>) -> Result<OfferedProposal, &'static str> {
    let mut props = sa.proposals();
    let (Some(p), None) = (props.next(), props.next()) else {
        return Err("the responder's SA payload must hold exactly one proposal");
    };
    let p = OfferedProposal::parse(&p);
    for (i, t) in p.transforms.iter().enumerate() {
        if t.other_attributes {
            return Err("the responder's proposal has an unknown transform attribute");
        }
        if p.transforms
            .iter()
            .skip(i.saturating_add(1))
            .any(|u| u.transform_type == t.transform_type)
        {
            return Err("the responder's proposal lists a transform type twice");
        }
    }
    Ok(p)
}

fn one(p: &OfferedProposal, ty: TransformType) -> Option<TransformDesc> {
    p.transforms
        .iter()
        .find(|t| t.transform_type == ty)
        .copied()
}

/// Checks the responder's IKE choice against what we offered.
pub(crate) fn check_ike_answer(
    sa: &SaPayload<'_>,
    ours: &[IkeProposal],
) -> Result<IkeProposal, &'static str> {
    let p = single(sa)?;
    if p.protocol != ProposalProtocol::Ike(None) {
        return Err("the responder's proposal is not an IKE proposal without SPI");
    }
    check_ike_transforms(&p, ours)
}

/// Checks the responder's choice for rekeying the IKE SA; returns it with
/// the responder's new SPI.
pub(crate) fn check_ike_rekey_answer(
    sa: &SaPayload<'_>,
    ours: &[IkeProposal],
) -> Result<(IkeProposal, IkeSpi), &'static str> {
    let p = single(sa)?;
    let ProposalProtocol::Ike(Some(spi)) = p.protocol else {
        return Err("the responder's proposal is not an IKE proposal with an SPI");
    };
    if spi.0 == 0 {
        return Err("the responder's new IKE SPI is zero");
    }
    Ok((check_ike_transforms(&p, ours)?, spi))
}

fn check_ike_transforms(
    p: &OfferedProposal,
    ours: &[IkeProposal],
) -> Result<IkeProposal, &'static str> {
    let o = *ours
        .get(usize::from(p.number).wrapping_sub(1))
        .ok_or("the responder's proposal number is not one of ours")?;
    let ok = p.unknown_types(&IKE_TYPES).is_empty()
        && one(p, TransformType::ENCR)
            .is_some_and(|t| Aead::from_transform(t.id.0, t.key_length) == Some(o.aead))
        && one(p, TransformType::PRF)
            .is_some_and(|t| Prf::from_transform_id(t.id.0) == Some(o.prf))
        && one(p, TransformType::KE)
            .is_some_and(|t| Group::from_transform_id(t.id.0) == Some(o.group))
        && one(p, TransformType::INTEG).is_none_or(|t| t.id.0 == 0);
    if ok {
        Ok(o)
    } else {
        Err("the responder chose transforms we did not offer in that proposal")
    }
}

/// Checks the responder's ESP choice; returns it with the responder's SPI.
pub(crate) fn check_esp_answer(
    sa: &SaPayload<'_>,
    ours: &[EspProposal],
    pfs: Option<Group>,
) -> Result<(EspProposal, ChildSpi), &'static str> {
    let p = single(sa)?;
    let ProposalProtocol::Esp(spi) = p.protocol else {
        return Err("the responder's CHILD SA proposal is not ESP");
    };
    if spi.0 == 0 {
        return Err("the responder's ESP SPI is zero");
    }
    let o = *ours
        .get(usize::from(p.number).wrapping_sub(1))
        .ok_or("the responder's ESP proposal number is not one of ours")?;
    let ok = p.unknown_types(&ESP_TYPES).is_empty()
        && one(&p, TransformType::ENCR)
            .is_some_and(|t| Aead::from_transform(t.id.0, t.key_length) == Some(o.aead))
        && one(&p, TransformType::ESN).map_or(!o.esn, |t| t.id == esn_id(o.esn))
        && one(&p, TransformType::INTEG).is_none_or(|t| t.id.0 == 0)
        && match pfs {
            Some(g) => one(&p, TransformType::KE).is_some_and(|t| t.id.0 == g.transform_id()),
            None => one(&p, TransformType::KE).is_none_or(|t| t.id.0 == 0),
        };
    if ok {
        Ok((o, spi))
    } else {
        Err("the responder chose ESP transforms we did not offer in that proposal")
    }
}

// ------------------------------------------------------------- names

/// strongSwan's name of a transform (`aes256gcm16`, `prfsha256`, `x25519`,
/// `noesn`), or `TYPE#id` for one it has no name for here.
pub fn transform_name(ty: TransformType, id: TransformId, key_length: Option<u16>) -> String {
    let kl = key_length.map_or(String::new(), |k| k.to_string());
    let known: Option<&str> = match (ty, id.0) {
        (TransformType::ENCR, 20) => return format!("aes{kl}gcm16"),
        (TransformType::ENCR, 19) => return format!("aes{kl}gcm12"),
        (TransformType::ENCR, 18) => return format!("aes{kl}gcm8"),
        (TransformType::ENCR, 12) => return format!("aes{kl}"),
        (TransformType::ENCR, 13) => return format!("aes{kl}ctr"),
        (TransformType::ENCR, 3) => Some("3des"),
        (TransformType::ENCR, 28) => Some("chacha20poly1305"),
        (TransformType::PRF, 2) => Some("prfsha1"),
        (TransformType::PRF, 4) => Some("prfaesxcbc"),
        (TransformType::PRF, 5) => Some("prfsha256"),
        (TransformType::PRF, 6) => Some("prfsha384"),
        (TransformType::PRF, 7) => Some("prfsha512"),
        (TransformType::INTEG, 0) => Some("none"),
        (TransformType::INTEG, 2) => Some("sha1"),
        (TransformType::INTEG, 12) => Some("sha256"),
        (TransformType::INTEG, 13) => Some("sha384"),
        (TransformType::INTEG, 14) => Some("sha512"),
        (TransformType::KE, 0) => Some("none"),
        (TransformType::KE, 2) => Some("modp1024"),
        (TransformType::KE, 14) => Some("modp2048"),
        (TransformType::KE, 15) => Some("modp3072"),
        (TransformType::KE, 19) => Some("ecp256"),
        (TransformType::KE, 20) => Some("ecp384"),
        (TransformType::KE, 21) => Some("ecp521"),
        (TransformType::KE, 31) => Some("x25519"),
        (TransformType::KE, 32) => Some("x448"),
        (TransformType::KE, 36) => Some("mlkem768"),
        (TransformType::ESN, 0) => Some("noesn"),
        (TransformType::ESN, 1) => Some("esn"),
        _ => None,
    };
    match known {
        Some(n) => n.to_owned(),
        None if kl.is_empty() => format!("{ty}#{}", id.0),
        None => format!("{ty}#{}({kl})", id.0),
    }
}

fn aead_name(a: Aead) -> String {
    transform_name(
        TransformType::ENCR,
        TransformId(a.transform_id()),
        a.key_length_attribute(),
    )
}

/// `aes256gcm16-prfsha256-x25519`.
pub(crate) fn describe_ike(p: IkeProposal) -> String {
    format!(
        "{}-{}-{}",
        aead_name(p.aead),
        transform_name(TransformType::PRF, TransformId(p.prf.transform_id()), None),
        transform_name(TransformType::KE, TransformId(p.group.transform_id()), None)
    )
}

/// `aes256gcm16-noesn`.
pub(crate) fn describe_esp(p: EspProposal) -> String {
    format!(
        "{}-{}",
        aead_name(p.aead),
        if p.esn { "esn" } else { "noesn" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{SaPayload, SaRepr};

    fn payload(sa: &SaRepr) -> Vec<u8> {
        let mut b = vec![0; sa.buffer_len()];
        sa.emit(&mut b).unwrap();
        b
    }

    const X25519_GCM: IkeProposal = IkeProposal {
        aead: Aead::AesGcm16_256,
        prf: Prf::HmacSha2_256,
        group: Group::Curve25519,
    };
    const ECP_CHACHA: IkeProposal = IkeProposal {
        aead: Aead::ChaCha20Poly1305,
        prf: Prf::HmacSha2_512,
        group: Group::Ecp256,
    };

    #[test]
    fn names() {
        assert_eq!(describe_ike(X25519_GCM), "aes256gcm16-prfsha256-x25519");
        assert_eq!(
            describe_ike(ECP_CHACHA),
            "chacha20poly1305-prfsha512-ecp256"
        );
        assert_eq!(
            describe_esp(EspProposal {
                aead: Aead::AesGcm16_128,
                esn: false,
            }),
            "aes128gcm16-noesn"
        );
        assert_eq!(
            describe_esp(EspProposal {
                aead: Aead::ChaCha20Poly1305,
                esn: true,
            }),
            "chacha20poly1305-esn"
        );
        assert_eq!(
            transform_name(TransformType::ADDKE1, TransformId(36), None),
            "ADDKE1#36"
        );
    }

    #[test]
    fn responder_prefers_its_order_but_avoids_a_round_trip() {
        let offer = payload(&ike_offer(&[ECP_CHACHA, X25519_GCM], None));
        let sa = SaPayload::new_checked(&offer).unwrap();
        // KE x25519: our first choice, the peer's #2.
        assert_eq!(
            choose_ike(&sa, &[X25519_GCM, ECP_CHACHA], KeMethod::CURVE25519),
            IkeChoice::Accept {
                number: 2,
                proposal: X25519_GCM
            }
        );
        // KE ecp256: acceptable too, no INVALID_KE round trip.
        assert_eq!(
            choose_ike(&sa, &[X25519_GCM, ECP_CHACHA], KeMethod::ECP_256),
            IkeChoice::Accept {
                number: 1,
                proposal: ECP_CHACHA
            }
        );
        // KE of a group we do not take: ask for our preferred one.
        assert_eq!(
            choose_ike(&sa, &[X25519_GCM, ECP_CHACHA], KeMethod::MODP_2048),
            IkeChoice::WrongGroup(Group::Curve25519)
        );
    }

    #[test]
    fn mismatch_describes_both_sides() {
        // strongSwan-like: one proposal with several values per type.
        let sa = SaRepr {
            proposals: vec![ProposalRepr {
                number: 1,
                protocol: ProposalProtocol::Ike(None),
                transforms: vec![
                    TransformRepr::new(TransformType::ENCR, TransformId::ENCR_AES_CBC)
                        .with_key_length(256),
                    TransformRepr::new(TransformType::INTEG, TransformId::AUTH_HMAC_SHA2_256_128),
                    TransformRepr::new(TransformType::PRF, TransformId::PRF_HMAC_SHA2_256),
                    TransformRepr::new(TransformType::KE, TransformId(31)),
                    TransformRepr::new(TransformType::KE, TransformId(14)),
                ],
            }],
        };
        let b = payload(&sa);
        let IkeChoice::NoneAcceptable(m) = choose_ike(
            &SaPayload::new_checked(&b).unwrap(),
            &[X25519_GCM],
            KeMethod::CURVE25519,
        ) else {
            panic!()
        };
        assert_eq!(
            m.to_string(),
            "no IKE proposal chosen (NO_PROPOSAL_CHOSEN): peer offered \
             [#1 aes256-sha256-prfsha256-x25519/modp2048], we allow \
             [aes256gcm16-prfsha256-x25519]; closest: the peer's #1 and our \
             aes256gcm16-prfsha256-x25519, which differ in ENCR, INTEG"
        );
    }

    #[test]
    fn unknown_types_and_attributes_are_unacceptable() {
        let mut sa = ike_offer(&[X25519_GCM], None);
        sa.proposals[0]
            .transforms
            .push(TransformRepr::new(TransformType::ADDKE1, TransformId(36)));
        let b = payload(&sa);
        let IkeChoice::NoneAcceptable(m) = choose_ike(
            &SaPayload::new_checked(&b).unwrap(),
            &[X25519_GCM],
            KeMethod::CURVE25519,
        ) else {
            panic!()
        };
        assert_eq!(m.closest.unwrap().differ, vec![TransformType::ADDKE1]);
        // ADDKE with NONE is fine for a peer that knows RFC 9370, but we
        // do not: still refused. An extra attribute is refused too.
        let mut sa = ike_offer(&[X25519_GCM], None);
        sa.proposals[0].transforms[1]
            .attributes
            .push(crate::wire::AttributeRepr::Tv {
                attr_type: 99,
                value: 1,
            });
        let b = payload(&sa);
        assert!(matches!(
            choose_ike(
                &SaPayload::new_checked(&b).unwrap(),
                &[X25519_GCM],
                KeMethod::CURVE25519
            ),
            IkeChoice::NoneAcceptable(_)
        ));
    }

    #[test]
    fn esp_choice_and_check() {
        let ours = [
            EspProposal {
                aead: Aead::ChaCha20Poly1305,
                esn: false,
            },
            EspProposal {
                aead: Aead::AesGcm16_256,
                esn: false,
            },
        ];
        let offer = payload(&esp_offer(&ours, ChildSpi(0x1234_5678), None));
        let sa = SaPayload::new_checked(&offer).unwrap();
        let theirs = [EspProposal {
            aead: Aead::AesGcm16_256,
            esn: false,
        }];
        let (n, chosen, spi) = choose_esp(&sa, &theirs, KeRule::Ignore).unwrap();
        assert_eq!((n, chosen, spi), (2, theirs[0], ChildSpi(0x1234_5678)));
        let answer = payload(&esp_answer(n, chosen, ChildSpi(0xabcd_0001), None));
        let back =
            check_esp_answer(&SaPayload::new_checked(&answer).unwrap(), &ours, None).unwrap();
        assert_eq!(back, (theirs[0], ChildSpi(0xabcd_0001)));
        // An answer naming our #1 with #2's transform is refused.
        let wrong = payload(&esp_answer(1, chosen, ChildSpi(0xabcd_0001), None));
        assert!(check_esp_answer(&SaPayload::new_checked(&wrong).unwrap(), &ours, None).is_err());
        // ESN must agree: an offer of ESN "yes" only does not match ours.
        let esn_only = [EspProposal {
            aead: Aead::AesGcm16_256,
            esn: true,
        }];
        let b = payload(&esp_offer(&esn_only, ChildSpi(0x1000), None));
        let m = choose_esp(
            &SaPayload::new_checked(&b).unwrap(),
            &theirs,
            KeRule::Ignore,
        )
        .unwrap_err();
        assert_eq!(m.closest.unwrap().differ, vec![TransformType::ESN]);
        let (_, chosen, _) = choose_esp(
            &SaPayload::new_checked(&b).unwrap(),
            &esn_only,
            KeRule::Ignore,
        )
        .unwrap();
        assert!(chosen.esn);
        let answer = payload(&esp_answer(1, chosen, ChildSpi(0x2000), None));
        let a = SaPayload::new_checked(&answer).unwrap();
        assert!(check_esp_answer(&a, &esn_only, None).is_ok());
        assert!(check_esp_answer(&a, &theirs, None).is_err());
        // No ESN transform: ESN is mandatory for ESP.
        let mut no_esn = esp_offer(&theirs, ChildSpi(0x1000), None);
        no_esn.proposals[0].transforms.pop();
        let b = payload(&no_esn);
        let m = choose_esp(
            &SaPayload::new_checked(&b).unwrap(),
            &theirs,
            KeRule::Ignore,
        )
        .unwrap_err();
        assert_eq!(m.closest.unwrap().differ, vec![TransformType::ESN]);
    }

    #[test]
    fn ike_answer_checked() {
        let ours = [ECP_CHACHA, X25519_GCM];
        let b = payload(&ike_answer(2, X25519_GCM, None));
        assert_eq!(
            check_ike_answer(&SaPayload::new_checked(&b).unwrap(), &ours),
            Ok(X25519_GCM)
        );
        let b = payload(&ike_answer(3, X25519_GCM, None));
        assert!(check_ike_answer(&SaPayload::new_checked(&b).unwrap(), &ours).is_err());
        let b = payload(&ike_offer(&ours, None));
        assert!(check_ike_answer(&SaPayload::new_checked(&b).unwrap(), &ours).is_err());
    }

    #[test]
    fn ike_rekey_proposals_carry_the_new_spi() {
        let ours = [ECP_CHACHA, X25519_GCM];
        let offer = payload(&ike_offer(&ours, Some(IkeSpi(0x1111))));
        let sa = SaPayload::new_checked(&offer).unwrap();
        assert_eq!(
            choose_ike_rekey(&sa, &[X25519_GCM], KeMethod::CURVE25519),
            (
                IkeChoice::Accept {
                    number: 2,
                    proposal: X25519_GCM
                },
                Some(IkeSpi(0x1111))
            )
        );
        // An IKE_SA_INIT offer (no SPI) is no rekey offer, and the other
        // way round.
        assert!(matches!(
            choose_ike(&sa, &[X25519_GCM], KeMethod::CURVE25519),
            IkeChoice::NoneAcceptable(_)
        ));
        let init = payload(&ike_offer(&ours, None));
        assert!(matches!(
            choose_ike_rekey(
                &SaPayload::new_checked(&init).unwrap(),
                &[X25519_GCM],
                KeMethod::CURVE25519
            )
            .0,
            IkeChoice::NoneAcceptable(_)
        ));
        let answer = payload(&ike_answer(2, X25519_GCM, Some(IkeSpi(0x2222))));
        assert_eq!(
            check_ike_rekey_answer(&SaPayload::new_checked(&answer).unwrap(), &ours),
            Ok((X25519_GCM, IkeSpi(0x2222)))
        );
        let no_spi = payload(&ike_answer(2, X25519_GCM, None));
        assert!(check_ike_rekey_answer(&SaPayload::new_checked(&no_spi).unwrap(), &ours).is_err());
    }

    #[test]
    fn pfs_groups_must_agree_in_create_child_sa() {
        let ours = [EspProposal {
            aead: Aead::AesGcm16_256,
            esn: false,
        }];
        let with = |g| payload(&esp_offer(&ours, ChildSpi(0x1000), g));
        let x25519 = with(Some(Group::Curve25519));
        let none = with(None);
        fn sa(b: &[u8]) -> SaPayload<'_> {
            SaPayload::new_checked(b).unwrap()
        }
        // IKE_AUTH ignores KE transforms.
        assert!(choose_esp(&sa(&x25519), &ours, KeRule::Ignore).is_ok());
        // PFS with the same group: accepted; with another or none: refused.
        assert!(choose_esp(
            &sa(&x25519),
            &ours,
            KeRule::Exactly(Some(Group::Curve25519))
        )
        .is_ok());
        let m = choose_esp(&sa(&x25519), &ours, KeRule::Exactly(Some(Group::Ecp256))).unwrap_err();
        assert_eq!(m.closest.unwrap().differ, vec![TransformType::KE]);
        assert!(choose_esp(&sa(&none), &ours, KeRule::Exactly(Some(Group::Curve25519))).is_err());
        // No PFS: an offer without KE, or listing NONE, is accepted; one
        // insisting on a group is not.
        assert!(choose_esp(&sa(&none), &ours, KeRule::Exactly(None)).is_ok());
        assert!(choose_esp(&sa(&x25519), &ours, KeRule::Exactly(None)).is_err());
        let mut optional = esp_offer(&ours, ChildSpi(0x1000), Some(Group::Curve25519));
        optional.proposals[0]
            .transforms
            .push(TransformRepr::new(TransformType::KE, TransformId(0)));
        let optional = payload(&optional);
        assert!(choose_esp(&sa(&optional), &ours, KeRule::Exactly(None)).is_ok());
        // The initiator checks the answer's group.
        let answer = payload(&esp_answer(
            1,
            ours[0],
            ChildSpi(0x2000),
            Some(Group::Curve25519),
        ));
        let a = SaPayload::new_checked(&answer).unwrap();
        assert!(check_esp_answer(&a, &ours, Some(Group::Curve25519)).is_ok());
        assert!(check_esp_answer(&a, &ours, Some(Group::Ecp256)).is_err());
        assert!(check_esp_answer(&a, &ours, None).is_err());
    }
}
