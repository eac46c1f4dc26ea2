//! The attestation agent's protocol, spoken over the management channel (after the
//! 10-byte `APLMGMT1` request whose endpoint byte is [`ENDPOINT_ATTEST`] or
//! [`ENDPOINT_ENROLL`]).
//!
//! Every message is a frame: `u32 length | fields`, each field `u8 tag | u32 length |
//! bytes`; a tag appears at most once, an unknown tag is refused, a frame is at most
//! [`MAX_FRAME`] bytes. Typed messages ([`QuoteRequest`], [`Evidence`], …) say which
//! fields they need.
//!
//! Attest (one request, one answer):
//! - verifier → agent: [`QuoteRequest`] (nonce, PCR mask, the address the verifier
//!   dialled);
//! - agent → verifier: [`Evidence`] (AK public area, quote, signature, PCR values, the
//!   firmware event log, the init's runtime log) or an error frame.
//!
//! Enrol (two rounds on one stream):
//! - verifier → agent: an empty frame; agent → verifier: [`Identity`] (EK public area,
//!   EK certificate, AK public area);
//! - verifier → agent: [`Challenge`] (TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET from
//!   MakeCredential); agent → verifier: [`Proof`] = [`proof`] of the secret
//!   ActivateCredential recovered.
//!
//! The nonce binding: the agent quotes with `qualifyingData` = [`binding`] (nonce,
//! the AK's name, the dialled address), never the raw nonce; a relay that forwards a
//! verifier's request to another device gets a quote the verifier refuses (another
//! AK name), and a quote cannot be answered to a request it was not made for.
//!
//! Nothing here panics on any input.

use crate::tpms::{Error, Reader, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

/// Endpoint byte of the attestation agent's quote service.
pub const ENDPOINT_ATTEST: u8 = 2;
/// Endpoint byte of enrolment (EK, AK, credential activation).
pub const ENDPOINT_ENROLL: u8 = 3;
/// Endpoint byte of secret provisioning.
pub const ENDPOINT_PROVISION: u8 = 4;
/// Largest provisioned secret.
pub const MAX_SECRET: usize = 1024;
/// Largest part of a secret carried by one credential (the EK's name algorithm's
/// digest size).
pub const SECRET_PART: usize = 32;
/// Largest frame.
pub const MAX_FRAME: usize = 4 << 20;
/// Longest dialled address.
pub const MAX_TARGET: usize = 255;

/// Field tags.
pub mod tag {
    /// A 32-byte nonce.
    pub const NONCE: u8 = 1;
    /// u32 PCR mask (SHA-256 bank).
    pub const PCRS: u8 = 2;
    /// The address the verifier dialled (UTF-8).
    pub const TARGET: u8 = 3;
    /// The AK's `TPM2B_PUBLIC`.
    pub const AK_PUBLIC: u8 = 10;
    /// The quote's `TPMS_ATTEST`.
    pub const QUOTE: u8 = 11;
    /// The quote's `TPMT_SIGNATURE`.
    pub const SIGNATURE: u8 = 12;
    /// The quoted PCR values, 32 bytes each, ascending.
    pub const PCR_VALUES: u8 = 13;
    /// The firmware's TCG event log.
    pub const EVENT_LOG: u8 = 14;
    /// The init's runtime measurement log.
    pub const RUNTIME_LOG: u8 = 15;
    /// The device identity key's `TPM2B_PUBLIC`.
    pub const IDENTITY_PUBLIC: u8 = 16;
    /// `TPM2_Certify` of the identity key by the AK: `TPMS_ATTEST`.
    pub const IDENTITY_CERTIFY: u8 = 17;
    /// That certification's `TPMT_SIGNATURE`.
    pub const IDENTITY_SIGNATURE: u8 = 18;
    /// The EK's `TPM2B_PUBLIC`.
    pub const EK_PUBLIC: u8 = 20;
    /// The EK certificate (DER).
    pub const EK_CERT: u8 = 21;
    /// `TPM2B_ID_OBJECT`.
    pub const ID_OBJECT: u8 = 22;
    /// `TPM2B_ENCRYPTED_SECRET`.
    pub const ENCRYPTED_SECRET: u8 = 23;
    /// The activation proof.
    pub const PROOF: u8 = 24;
    /// A provisioned secret's name.
    pub const NAME: u8 = 25;
    /// Part index and count (two bytes).
    pub const PART: u8 = 26;
    /// The release key's Ed25519 signature over [`super::provision_digest`].
    pub const RELEASE_SIGNATURE: u8 = 27;
    /// What the gateway did, in words.
    pub const RESULT: u8 = 28;
    /// An error, in words.
    pub const ERROR: u8 = 99;
}

/// A frame's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    fields: Vec<(u8, Vec<u8>)>,
}

impl Frame {
    /// An empty frame.
    pub fn new() -> Self {
        Frame::default()
    }
    /// Adds a field (a tag given twice replaces the first).
    pub fn with(mut self, tag: u8, v: impl Into<Vec<u8>>) -> Self {
        self.fields.retain(|(t, _)| *t != tag);
        self.fields.push((tag, v.into()));
        self
    }
    /// A field.
    pub fn get(&self, tag: u8) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, v)| v.as_slice())
    }
    /// A field that must be there.
    pub fn need(&self, tag: u8, what: &str) -> Result<&[u8]> {
        self.get(tag)
            .ok_or_else(|| Error(format!("the message has no {what} (field {tag})")))
    }
    /// An error frame.
    pub fn error(text: &str) -> Self {
        Frame::new().with(tag::ERROR, text.as_bytes())
    }
    /// The error text, if this is an error frame.
    pub fn error_text(&self) -> Option<String> {
        self.get(tag::ERROR)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// Marshals the frame with its length prefix.
    pub fn to_bytes(&self) -> Vec<u8> {
        let body: usize = self.fields.iter().map(|(_, v)| 5 + v.len()).sum();
        let mut out = Vec::with_capacity(4 + body);
        out.extend_from_slice(&(body as u32).to_be_bytes());
        for (t, v) in &self.fields {
            out.push(*t);
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v);
        }
        out
    }

    /// Parses a frame's body (without the length prefix), as [`Frame::read`] does.
    pub fn parse_body(body: &[u8]) -> Result<Frame> {
        let mut r = Reader::new(body, "frame");
        let mut fields: Vec<(u8, Vec<u8>)> = Vec::new();
        while r.position() < body.len() {
            let t = r.u8("tag")?;
            let known = matches!(t, 1..=3 | 10..=18 | 20..=28 | 99);
            if !known {
                return Err(Error(format!("frame: unknown field {t}")));
            }
            let n = r.u32("field length")? as usize;
            let v = r.take(n, "field")?;
            if fields.iter().any(|(x, _)| *x == t) {
                return Err(Error(format!("frame: field {t} twice")));
            }
            fields.push((t, v.to_vec()));
        }
        Ok(Frame { fields })
    }

    /// Reads one frame.
    pub fn read<R: Read>(r: &mut R) -> Result<Frame> {
        let mut n = [0u8; 4];
        r.read_exact(&mut n)
            .map_err(|e| Error(format!("reading a frame: {e}")))?;
        let n = u32::from_be_bytes(n) as usize;
        if n > MAX_FRAME {
            return Err(Error(format!("frame of {n} bytes (at most {MAX_FRAME})")));
        }
        let mut body = vec![0u8; n];
        r.read_exact(&mut body)
            .map_err(|e| Error(format!("reading a frame of {n} bytes: {e}")))?;
        Frame::parse_body(&body)
    }

    /// Writes it.
    pub fn write<W: Write>(&self, w: &mut W) -> std::io::Result<()> {
        w.write_all(&self.to_bytes())?;
        w.flush()
    }
}

/// The verifier's quote request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteRequest {
    /// Fresh random nonce.
    pub nonce: [u8; 32],
    /// PCRs to quote (SHA-256 bank).
    pub pcrs: u32,
    /// The address the verifier dialled (`host:port`).
    pub target: String,
}

impl QuoteRequest {
    /// As a frame.
    pub fn to_frame(&self) -> Frame {
        Frame::new()
            .with(tag::NONCE, self.nonce.to_vec())
            .with(tag::PCRS, self.pcrs.to_be_bytes().to_vec())
            .with(tag::TARGET, self.target.as_bytes())
    }
    /// From a frame.
    pub fn from_frame(f: &Frame) -> Result<Self> {
        let nonce: [u8; 32] = f
            .need(tag::NONCE, "nonce")?
            .try_into()
            .map_err(|_| Error("the nonce is not 32 bytes".into()))?;
        let pcrs: [u8; 4] = f
            .need(tag::PCRS, "PCR mask")?
            .try_into()
            .map_err(|_| Error("the PCR mask is not 4 bytes".into()))?;
        let pcrs = u32::from_be_bytes(pcrs);
        if pcrs == 0 || pcrs >> 24 != 0 {
            return Err(Error(format!(
                "PCR mask {pcrs:#010x}: empty or beyond PCR 23"
            )));
        }
        let target = f.need(tag::TARGET, "target")?;
        if target.len() > MAX_TARGET {
            return Err(Error("the target address is too long".into()));
        }
        let target = std::str::from_utf8(target)
            .map_err(|_| Error("the target address is not UTF-8".into()))?
            .to_owned();
        Ok(QuoteRequest {
            nonce,
            pcrs,
            target,
        })
    }
}

/// The device identity key, certified by the AK (`TPM2_Certify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifiedIdentity {
    /// The identity key's `TPM2B_PUBLIC`.
    pub public: Vec<u8>,
    /// `TPMS_ATTEST` of the certification.
    pub certify: Vec<u8>,
    /// Its `TPMT_SIGNATURE` by the AK.
    pub signature: Vec<u8>,
}

impl CertifiedIdentity {
    fn add(&self, f: Frame) -> Frame {
        f.with(tag::IDENTITY_PUBLIC, self.public.clone())
            .with(tag::IDENTITY_CERTIFY, self.certify.clone())
            .with(tag::IDENTITY_SIGNATURE, self.signature.clone())
    }
    fn from_frame(f: &Frame) -> Result<Option<Self>> {
        match (
            f.get(tag::IDENTITY_PUBLIC),
            f.get(tag::IDENTITY_CERTIFY),
            f.get(tag::IDENTITY_SIGNATURE),
        ) {
            (None, None, None) => Ok(None),
            (Some(p), Some(c), Some(s)) => Ok(Some(CertifiedIdentity {
                public: p.to_vec(),
                certify: c.to_vec(),
                signature: s.to_vec(),
            })),
            _ => Err(Error(
                "the identity key's fields come together or not at all".into(),
            )),
        }
    }
}

/// The qualifying data of the identity key's certification at enrolment (a quote's
/// certification uses the quote's [`binding`]).
pub fn enrol_binding(ak_name: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"appliance enroll identity v1\0");
    h.update(ak_name);
    h.finalize().into()
}

/// What the agent answers a quote request with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The AK's `TPM2B_PUBLIC`.
    pub ak_public: Vec<u8>,
    /// `TPMS_ATTEST`.
    pub quote: Vec<u8>,
    /// `TPMT_SIGNATURE`.
    pub signature: Vec<u8>,
    /// The quoted PCRs' values, ascending (unsigned: the verifier hashes them and
    /// compares with the signed digest).
    pub pcr_values: Vec<[u8; 32]>,
    /// The firmware's TCG event log (may be empty).
    pub event_log: Vec<u8>,
    /// The init's runtime log ([`crate::runtime`]).
    pub runtime_log: Vec<u8>,
    /// The device identity key certified by the AK for this request, if the gateway
    /// has one this boot.
    pub identity: Option<CertifiedIdentity>,
}

impl Evidence {
    /// As a frame.
    pub fn to_frame(&self) -> Frame {
        let f = Frame::new()
            .with(tag::AK_PUBLIC, self.ak_public.clone())
            .with(tag::QUOTE, self.quote.clone())
            .with(tag::SIGNATURE, self.signature.clone())
            .with(tag::PCR_VALUES, self.pcr_values.concat())
            .with(tag::EVENT_LOG, self.event_log.clone())
            .with(tag::RUNTIME_LOG, self.runtime_log.clone());
        match &self.identity {
            Some(i) => i.add(f),
            None => f,
        }
    }
    /// From a frame (an error frame gives its text as the error).
    pub fn from_frame(f: &Frame) -> Result<Self> {
        if let Some(e) = f.error_text() {
            return Err(Error(format!("the gateway answered: {e}")));
        }
        let values = f.need(tag::PCR_VALUES, "PCR values")?;
        if values.len() % 32 != 0 {
            return Err(Error("PCR values are not 32-byte digests".into()));
        }
        Ok(Evidence {
            ak_public: f.need(tag::AK_PUBLIC, "AK public area")?.to_vec(),
            quote: f.need(tag::QUOTE, "quote")?.to_vec(),
            signature: f.need(tag::SIGNATURE, "signature")?.to_vec(),
            pcr_values: values
                .chunks_exact(32)
                .map(|c| {
                    let mut a = [0u8; 32];
                    a.copy_from_slice(c);
                    a
                })
                .collect(),
            event_log: f.need(tag::EVENT_LOG, "event log")?.to_vec(),
            runtime_log: f.need(tag::RUNTIME_LOG, "runtime log")?.to_vec(),
            identity: CertifiedIdentity::from_frame(f)?,
        })
    }
}

/// What the agent answers the first enrolment round with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The EK's `TPM2B_PUBLIC`.
    pub ek_public: Vec<u8>,
    /// The EK certificate (DER); empty if the TPM holds none.
    pub ek_cert: Vec<u8>,
    /// The AK's `TPM2B_PUBLIC`.
    pub ak_public: Vec<u8>,
    /// The device identity key certified by the AK ([`enrol_binding`]), if any.
    pub identity: Option<CertifiedIdentity>,
}

impl Identity {
    /// As a frame.
    pub fn to_frame(&self) -> Frame {
        let f = Frame::new()
            .with(tag::EK_PUBLIC, self.ek_public.clone())
            .with(tag::EK_CERT, self.ek_cert.clone())
            .with(tag::AK_PUBLIC, self.ak_public.clone());
        match &self.identity {
            Some(i) => i.add(f),
            None => f,
        }
    }
    /// From a frame.
    pub fn from_frame(f: &Frame) -> Result<Self> {
        if let Some(e) = f.error_text() {
            return Err(Error(format!("the gateway answered: {e}")));
        }
        Ok(Identity {
            ek_public: f.need(tag::EK_PUBLIC, "EK public area")?.to_vec(),
            ek_cert: f.need(tag::EK_CERT, "EK certificate")?.to_vec(),
            ak_public: f.need(tag::AK_PUBLIC, "AK public area")?.to_vec(),
            identity: CertifiedIdentity::from_frame(f)?,
        })
    }
}

/// The credential challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `TPM2B_ID_OBJECT`.
    pub id_object: Vec<u8>,
    /// `TPM2B_ENCRYPTED_SECRET`.
    pub encrypted_secret: Vec<u8>,
}

impl Challenge {
    /// As a frame.
    pub fn to_frame(&self) -> Frame {
        Frame::new()
            .with(tag::ID_OBJECT, self.id_object.clone())
            .with(tag::ENCRYPTED_SECRET, self.encrypted_secret.clone())
    }
    /// From a frame.
    pub fn from_frame(f: &Frame) -> Result<Self> {
        let id_object = f.need(tag::ID_OBJECT, "credential")?.to_vec();
        let encrypted_secret = f.need(tag::ENCRYPTED_SECRET, "encrypted secret")?.to_vec();
        if id_object.len() > 1024 || encrypted_secret.len() > 1024 {
            return Err(Error("credential challenge too large".into()));
        }
        Ok(Challenge {
            id_object,
            encrypted_secret,
        })
    }
}

/// The activation proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof(pub [u8; 32]);

impl Proof {
    /// As a frame.
    pub fn to_frame(&self) -> Frame {
        Frame::new().with(tag::PROOF, self.0.to_vec())
    }
    /// From a frame.
    pub fn from_frame(f: &Frame) -> Result<Self> {
        if let Some(e) = f.error_text() {
            return Err(Error(format!("the gateway answered: {e}")));
        }
        let p: [u8; 32] = f
            .need(tag::PROOF, "proof")?
            .try_into()
            .map_err(|_| Error("the proof is not 32 bytes".into()))?;
        Ok(Proof(p))
    }
}

/// One part of a provisioned secret: a credential (MakeCredential to the device's EK,
/// bound to its AK's name) carrying at most [`SECRET_PART`] bytes, signed by the
/// release key over [`provision_digest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretPart {
    /// The secret's name (`tpm:<name>` in profiles).
    pub name: String,
    /// This part's index.
    pub index: u8,
    /// How many parts the secret has.
    pub count: u8,
    /// `TPM2B_ID_OBJECT`.
    pub id_object: Vec<u8>,
    /// `TPM2B_ENCRYPTED_SECRET`.
    pub encrypted_secret: Vec<u8>,
    /// Ed25519 signature by the release key.
    pub signature: [u8; 64],
}

/// The name that is not a provisioned secret but the device identity key
/// (`tpm:identity`): generated in the TPM, never provisioned.
pub const DEVICE_IDENTITY: &str = "identity";

/// Whether `name` may name a provisioned secret (the profile's rule for
/// `tpm:<name>`): 1 to 63 of `a-z 0-9 -`, not starting or ending with `-`,
/// and not [`DEVICE_IDENTITY`].
pub fn secret_name_ok(name: &str) -> bool {
    name != DEVICE_IDENTITY
        && (1..=63).contains(&name.len())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

impl SecretPart {
    /// As a frame.
    pub fn to_frame(&self) -> Frame {
        Frame::new()
            .with(tag::NAME, self.name.as_bytes())
            .with(tag::PART, vec![self.index, self.count])
            .with(tag::ID_OBJECT, self.id_object.clone())
            .with(tag::ENCRYPTED_SECRET, self.encrypted_secret.clone())
            .with(tag::RELEASE_SIGNATURE, self.signature.to_vec())
    }
    /// From a frame.
    pub fn from_frame(f: &Frame) -> Result<Self> {
        let name = std::str::from_utf8(f.need(tag::NAME, "secret name")?)
            .ok()
            .filter(|n| secret_name_ok(n))
            .ok_or_else(|| {
                Error(
                    "the secret's name is not 1-63 of a-z 0-9 - (not starting or ending with -)"
                        .into(),
                )
            })?
            .to_owned();
        let part = f.need(tag::PART, "part")?;
        let [index, count] = part else {
            return Err(Error("the part field is not two bytes".into()));
        };
        let max = (MAX_SECRET / SECRET_PART) as u8;
        if *count == 0 || *count > max || index >= count {
            return Err(Error(format!(
                "part {index} of {count} (at most {max} parts)"
            )));
        }
        let c = Challenge::from_frame(f)?;
        let signature: [u8; 64] = f
            .need(tag::RELEASE_SIGNATURE, "release signature")?
            .try_into()
            .map_err(|_| Error("the release signature is not 64 bytes".into()))?;
        Ok(SecretPart {
            name,
            index: *index,
            count: *count,
            id_object: c.id_object,
            encrypted_secret: c.encrypted_secret,
            signature,
        })
    }
}

/// What the release key signs for one secret part: SHA-256 of a domain label, the
/// device's fresh nonce, its AK's name, the secret's name, the part, and the
/// credential. A part cannot be replayed to another session, device or name.
pub fn provision_digest(nonce: &[u8; 32], ak_name: &[u8], part: &SecretPart) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"appliance provision v1\0");
    h.update(nonce);
    h.update((ak_name.len() as u16).to_be_bytes());
    h.update(ak_name);
    h.update([part.name.len() as u8]);
    h.update(part.name.as_bytes());
    h.update([part.index, part.count]);
    h.update((part.id_object.len() as u16).to_be_bytes());
    h.update(&part.id_object);
    h.update((part.encrypted_secret.len() as u16).to_be_bytes());
    h.update(&part.encrypted_secret);
    h.finalize().into()
}

/// `qualifyingData` of a quote: SHA-256 of a domain label, the verifier's nonce,
/// the AK's name and the address the verifier dialled.
pub fn binding(nonce: &[u8; 32], ak_name: &[u8], target: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"appliance attest v1\0");
    h.update(nonce);
    h.update((ak_name.len() as u16).to_be_bytes());
    h.update(ak_name);
    h.update((target.len() as u16).to_be_bytes());
    h.update(target.as_bytes());
    h.finalize().into()
}

/// The activation proof: SHA-256 of a domain label, the secret ActivateCredential
/// recovered and the AK's name. The secret itself never crosses black.
pub fn proof(secret: &[u8], ak_name: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"appliance enroll v1\0");
    h.update((secret.len() as u16).to_be_bytes());
    h.update(secret);
    h.update(ak_name);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip_and_refuse_duplicates_and_unknown_tags() {
        let q = QuoteRequest {
            nonce: [7; 32],
            pcrs: 0x1890ff,
            target: "198.51.100.1:7443".into(),
        };
        let b = q.to_frame().to_bytes();
        let f = Frame::read(&mut &b[..]).unwrap();
        assert_eq!(QuoteRequest::from_frame(&f).unwrap(), q);
        let mut dup = b.clone();
        dup.extend_from_slice(&[1, 0, 0, 0, 0]);
        let n = (dup.len() - 4) as u32;
        dup[..4].copy_from_slice(&n.to_be_bytes());
        assert!(Frame::read(&mut &dup[..]).unwrap_err().0.contains("twice"));
        let unknown = [0, 0, 0, 5, 77, 0, 0, 0, 0];
        assert!(Frame::read(&mut &unknown[..])
            .unwrap_err()
            .0
            .contains("unknown"));
        let big = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(Frame::read(&mut &big[..]).is_err());
    }

    #[test]
    fn binding_depends_on_every_input() {
        let b = binding(&[1; 32], b"ak", "h:1");
        assert_ne!(b, binding(&[2; 32], b"ak", "h:1"));
        assert_ne!(b, binding(&[1; 32], b"ak2", "h:1"));
        assert_ne!(b, binding(&[1; 32], b"ak", "h:2"));
        assert_ne!(b, [1; 32]);
    }

    proptest! {
        #[test]
        fn frame_parsing_never_panics(b in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(f) = Frame::parse_body(&b) {
                let _ = QuoteRequest::from_frame(&f);
                let _ = Evidence::from_frame(&f);
                let _ = Identity::from_frame(&f);
                let _ = Challenge::from_frame(&f);
                let _ = Proof::from_frame(&f);
            }
        }
    }
}
