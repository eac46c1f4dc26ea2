//! Typed payloads: the [`Payload`] view and [`PayloadRepr`] over all
//! understood types, and the payloads with a simple layout: KE (§3.4), IDi
//! and IDr (§3.5), CERT and CERTREQ (§3.6, §3.7), AUTH (§3.8), Nonce (§3.9),
//! Vendor ID (§3.12), SK (§3.14), CP (§3.15, opaque), EAP (§3.16, opaque)
//! and SKF (RFC 7383 §2.5). SA, TS, Notify and Delete have their own modules.
//!
//! All views here take the payload *body* (after the generic header).

use std::ops::RangeInclusive;

use super::chain::RawPayload;
use super::error::{EncodeError, Error, Location, Problem};
use super::notify::{DeletePayload, DeleteRepr, NotifyPayload, NotifyRepr};
use super::sa::{SaPayload, SaRepr};
use super::ts::{TsPayload, TsRepr};
use super::types::{registry, PayloadType};
use super::{be16, byte, tail, Writer};

/// Adds `buffer_len` and `emit` to a payload-body Repr that has
/// `write(&self, &mut Writer, Location)`; `emit` checks what it wrote with
/// the receiver's view (`|repr, bytes| check`).
macro_rules! body_codec {
    ($repr:ty, $ty:expr, |$s:ident, $b:ident| $check:expr) => {
        impl $repr {
            /// Length of the encoded payload body (after the generic header).
            pub fn buffer_len(&self) -> usize {
                $crate::wire::counted_len(|w| self.write(w, $crate::wire::Location::payload($ty)))
            }

            /// Writes the payload body (after the generic header) into `buf`,
            /// checks it as a receiver would, and returns its length.
            pub fn emit(&self, buf: &mut [u8]) -> Result<usize, $crate::wire::Error> {
                let $s = self;
                $crate::wire::emit_checked(
                    buf,
                    |w| $s.write(w, $crate::wire::Location::payload($ty)),
                    |$b: &[u8]| $check.map(|_| ()),
                )
            }
        }
    };
}
pub(crate) use body_codec;

registry! {
    /// Key exchange method: Transform ID of transform type 4 (IANA "Transform
    /// Type 4 - Key Exchange Method Transform IDs"), the KE payload's group.
    KeMethod(u16) {
        /// 2048-bit MODP group (RFC 3526).
        MODP_2048 = 14 => "modp2048",
        /// 256-bit random ECP group (RFC 5903).
        ECP_256 = 19 => "ecp256",
        /// 384-bit random ECP group (RFC 5903).
        ECP_384 = 20 => "ecp384",
        /// 521-bit random ECP group (RFC 5903).
        ECP_521 = 21 => "ecp521",
        /// Curve25519 (RFC 8031).
        CURVE25519 = 31 => "curve25519",
        /// Curve448 (RFC 8031).
        CURVE448 = 32 => "curve448",
        /// ML-KEM-512 (draft-ietf-ipsecme-ikev2-mlkem).
        ML_KEM_512 = 35 => "mlkem512",
        /// ML-KEM-768.
        ML_KEM_768 = 36 => "mlkem768",
        /// ML-KEM-1024.
        ML_KEM_1024 = 37 => "mlkem1024",
    }
}

registry! {
    /// ID Type (§3.5; IANA "IKEv2 Identification Payload ID Types").
    IdType(u8) {
        /// A single four-octet IPv4 address.
        IPV4_ADDR = 1 => "ID_IPV4_ADDR",
        /// A fully qualified domain name.
        FQDN = 2 => "ID_FQDN",
        /// An RFC 822 email address.
        RFC822_ADDR = 3 => "ID_RFC822_ADDR",
        /// A single sixteen-octet IPv6 address.
        IPV6_ADDR = 5 => "ID_IPV6_ADDR",
        /// DER-encoded X.500 Distinguished Name.
        DER_ASN1_DN = 9 => "ID_DER_ASN1_DN",
        /// DER-encoded X.509 GeneralName.
        DER_ASN1_GN = 10 => "ID_DER_ASN1_GN",
        /// Opaque octet stream.
        KEY_ID = 11 => "ID_KEY_ID",
        /// Fibre Channel name (RFC 4595).
        FC_NAME = 12 => "ID_FC_NAME",
        /// No identity (RFC 7619).
        NULL = 13 => "ID_NULL",
    }
}

registry! {
    /// Certificate Encoding (§3.6; IANA "IKEv2 Certificate Encodings").
    CertEncoding(u8) {
        /// PKCS #7 wrapped X.509 certificate.
        PKCS7_X509 = 1 => "PKCS #7 X.509",
        /// PGP certificate.
        PGP = 2 => "PGP",
        /// DNS signed key.
        DNS_SIGNED_KEY = 3 => "DNS signed key",
        /// X.509 certificate - signature.
        X509_SIGNATURE = 4 => "X.509 certificate",
        /// Kerberos token.
        KERBEROS = 6 => "Kerberos token",
        /// Certificate revocation list.
        CRL = 7 => "CRL",
        /// Authority revocation list.
        ARL = 8 => "ARL",
        /// SPKI certificate.
        SPKI = 9 => "SPKI",
        /// X.509 certificate - attribute.
        X509_ATTRIBUTE = 10 => "X.509 attribute certificate",
        /// Raw RSA key (deprecated).
        RAW_RSA_KEY = 11 => "raw RSA key",
        /// Hash and URL of X.509 certificate.
        HASH_URL_X509_CERT = 12 => "hash and URL of X.509 certificate",
        /// Hash and URL of X.509 bundle.
        HASH_URL_X509_BUNDLE = 13 => "hash and URL of X.509 bundle",
        /// OCSP content (RFC 4806).
        OCSP_CONTENT = 14 => "OCSP content",
        /// Raw public key (RFC 7670).
        RAW_PUBLIC_KEY = 15 => "raw public key",
    }
}

registry! {
    /// Auth Method (§3.8; IANA "IKEv2 Authentication Method").
    AuthMethod(u8) {
        /// RSA digital signature (PKCS #1 v1.5).
        RSA_SIG = 1 => "RSA signature",
        /// Shared key message integrity code.
        SHARED_KEY_MIC = 2 => "shared key MIC",
        /// DSS digital signature.
        DSS_SIG = 3 => "DSS signature",
        /// ECDSA with SHA-256 on the P-256 curve (RFC 4754).
        ECDSA_SHA256_P256 = 9 => "ECDSA SHA-256 P-256",
        /// ECDSA with SHA-384 on the P-384 curve.
        ECDSA_SHA384_P384 = 10 => "ECDSA SHA-384 P-384",
        /// ECDSA with SHA-512 on the P-521 curve.
        ECDSA_SHA512_P521 = 11 => "ECDSA SHA-512 P-521",
        /// Generic Secure Password Authentication Method (RFC 6467).
        GENERIC_SECURE_PASSWORD = 12 => "generic secure password",
        /// NULL authentication (RFC 7619).
        NULL = 13 => "NULL",
        /// Digital Signature (RFC 7427).
        DIGITAL_SIGNATURE = 14 => "digital signature",
    }
}

/// Allowed length of the Nonce Data (§3.9).
pub const NONCE_LEN: RangeInclusive<usize> = 16..=256;

fn need(at: Location, what: &'static str, need: usize, body: &[u8]) -> Result<(), Error> {
    if body.len() < need {
        return Err(at.malformed(Problem::Truncated {
            what,
            need,
            have: body.len(),
        }));
    }
    Ok(())
}

// ---------------------------------------------------------------- KE (§3.4)

/// Byte ranges of the KE payload body.
#[allow(dead_code)] // the whole layout, not every field is read
mod ke_field {
    use std::ops::Range;
    /// Key Exchange Method (DH Group Num).
    pub const GROUP: Range<usize> = 0..2;
    /// Reserved.
    pub const RESERVED: Range<usize> = 2..4;
    /// Key Exchange Data.
    pub const DATA: usize = 4;
}

/// A checked KE payload: group and non-empty key exchange data. Whether the
/// data has the group's length is for the key exchange to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KePayload<'a> {
    body: &'a [u8],
}

impl<'a> KePayload<'a> {
    /// Checks a KE payload body.
    pub fn new_checked(body: &'a [u8]) -> Result<Self, Error> {
        let at = Location::payload(PayloadType::KE);
        need(at, "KE payload header", ke_field::DATA, body)?;
        if body.len() == ke_field::DATA {
            return Err(at.malformed(Problem::Rule("key exchange data is empty")));
        }
        Ok(KePayload { body })
    }
    /// Key exchange method (Diffie-Hellman group).
    pub fn group(&self) -> KeMethod {
        KeMethod(be16(self.body, ke_field::GROUP.start))
    }
    /// Key exchange data.
    pub fn data(&self) -> &'a [u8] {
        tail(self.body, ke_field::DATA)
    }
}

/// KE payload content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeRepr {
    /// Key exchange method.
    pub group: KeMethod,
    /// Key exchange data (not empty).
    pub data: Vec<u8>,
}

impl KeRepr {
    /// Content of a checked KE payload.
    pub fn parse(p: &KePayload<'_>) -> KeRepr {
        KeRepr {
            group: p.group(),
            data: p.data().to_vec(),
        }
    }
    pub(crate) fn write(&self, w: &mut Writer<'_>, _at: Location) -> Result<(), EncodeError> {
        w.u16(self.group.0)?;
        w.u16(0)?;
        w.bytes(&self.data)
    }
}
body_codec!(KeRepr, PayloadType::KE, |_s, b| KePayload::new_checked(b));

// ---------------------------------------------------------- IDi/IDr (§3.5)

/// Byte ranges of the ID payload body.
#[allow(dead_code)] // the whole layout, not every field is read
mod id_field {
    use std::ops::Range;
    /// ID Type.
    pub const ID_TYPE: usize = 0;
    /// Reserved.
    pub const RESERVED: Range<usize> = 1..4;
    /// Identification Data.
    pub const DATA: usize = 4;
}

/// A checked IDi or IDr payload. ID_IPV4_ADDR data must be 4 bytes and
/// ID_IPV6_ADDR 16; other types are opaque here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdPayload<'a> {
    body: &'a [u8],
}

impl<'a> IdPayload<'a> {
    /// Checks an IDi/IDr payload body (errors name IDi; in a chain, the
    /// actual type).
    pub fn new_checked(body: &'a [u8]) -> Result<Self, Error> {
        let at = Location::payload(PayloadType::ID_I);
        need(at, "ID payload header", id_field::DATA, body)?;
        let data_len = body.len().saturating_sub(id_field::DATA);
        let want = match IdType(byte(body, id_field::ID_TYPE)) {
            IdType::IPV4_ADDR => Some(4),
            IdType::IPV6_ADDR => Some(16),
            _ => None,
        };
        if let Some(want) = want {
            if data_len != want {
                return Err(at.malformed(Problem::Mismatch {
                    field: "identification data length",
                    value: data_len,
                    of: "address length",
                    expected: want,
                }));
            }
        }
        Ok(IdPayload { body })
    }
    /// ID Type.
    pub fn id_type(&self) -> IdType {
        IdType(byte(self.body, id_field::ID_TYPE))
    }
    /// Identification Data.
    pub fn data(&self) -> &'a [u8] {
        tail(self.body, id_field::DATA)
    }
    /// The body as received, reserved bytes included: `RestOfInitIDPayload`
    /// / `RestOfRespIDPayload`, the input of the AUTH computation (§2.15).
    pub fn rest_of_payload(&self) -> &'a [u8] {
        self.body
    }
}

/// IDi/IDr payload content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdRepr {
    /// ID Type.
    pub id_type: IdType,
    /// Identification Data.
    pub data: Vec<u8>,
}

impl IdRepr {
    /// Content of a checked ID payload.
    pub fn parse(p: &IdPayload<'_>) -> IdRepr {
        IdRepr {
            id_type: p.id_type(),
            data: p.data().to_vec(),
        }
    }
    pub(crate) fn write(&self, w: &mut Writer<'_>, _at: Location) -> Result<(), EncodeError> {
        w.u8(self.id_type.0)?;
        w.bytes(&[0; 3])?;
        w.bytes(&self.data)
    }
}
body_codec!(IdRepr, PayloadType::ID_I, |_s, b| IdPayload::new_checked(b));

// ------------------------------------------------- CERT, CERTREQ (§3.6, §3.7)

/// A checked CERT or CERTREQ payload: an encoding and opaque data (for
/// CERTREQ with X.509, concatenated SHA-1 hashes of CA public keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertPayload<'a> {
    body: &'a [u8],
}

impl<'a> CertPayload<'a> {
    /// Checks a CERT/CERTREQ payload body (one encoding byte, then data).
    pub fn new_checked(body: &'a [u8]) -> Result<Self, Error> {
        need(
            Location::payload(PayloadType::CERT),
            "certificate encoding",
            1,
            body,
        )?;
        Ok(CertPayload { body })
    }
    /// Certificate Encoding.
    pub fn encoding(&self) -> CertEncoding {
        CertEncoding(byte(self.body, 0))
    }
    /// Certificate Data / Certification Authority.
    pub fn data(&self) -> &'a [u8] {
        tail(self.body, 1)
    }
}

/// CERT/CERTREQ payload content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRepr {
    /// Certificate Encoding.
    pub encoding: CertEncoding,
    /// Certificate Data / Certification Authority.
    pub data: Vec<u8>,
}

impl CertRepr {
    /// Content of a checked CERT/CERTREQ payload.
    pub fn parse(p: &CertPayload<'_>) -> CertRepr {
        CertRepr {
            encoding: p.encoding(),
            data: p.data().to_vec(),
        }
    }
    pub(crate) fn write(&self, w: &mut Writer<'_>, _at: Location) -> Result<(), EncodeError> {
        w.u8(self.encoding.0)?;
        w.bytes(&self.data)
    }
}
body_codec!(CertRepr, PayloadType::CERT, |_s, b| {
    CertPayload::new_checked(b)
});

// -------------------------------------------------------------- AUTH (§3.8)

/// Byte ranges of the AUTH payload body.
#[allow(dead_code)] // the whole layout, not every field is read
mod auth_field {
    use std::ops::Range;
    /// Auth Method.
    pub const METHOD: usize = 0;
    /// Reserved.
    pub const RESERVED: Range<usize> = 1..4;
    /// Authentication Data.
    pub const DATA: usize = 4;
}

/// A checked AUTH payload: a method and opaque data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthPayload<'a> {
    body: &'a [u8],
}

impl<'a> AuthPayload<'a> {
    /// Checks an AUTH payload body.
    pub fn new_checked(body: &'a [u8]) -> Result<Self, Error> {
        need(
            Location::payload(PayloadType::AUTH),
            "AUTH payload header",
            auth_field::DATA,
            body,
        )?;
        Ok(AuthPayload { body })
    }
    /// Auth Method.
    pub fn method(&self) -> AuthMethod {
        AuthMethod(byte(self.body, auth_field::METHOD))
    }
    /// Authentication Data.
    pub fn data(&self) -> &'a [u8] {
        tail(self.body, auth_field::DATA)
    }
    /// For method 14 (RFC 7427 §3): the ASN.1 AlgorithmIdentifier and the
    /// signature, split at the one-byte length in front; `None` for other
    /// methods or when the length does not fit.
    pub fn digital_signature(&self) -> Option<(&'a [u8], &'a [u8])> {
        if self.method() != AuthMethod::DIGITAL_SIGNATURE {
            return None;
        }
        let (len, rest) = self.data().split_first()?;
        let len = usize::from(*len);
        Some((rest.get(..len)?, rest.get(len..)?))
    }
}

/// AUTH payload content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRepr {
    /// Auth Method.
    pub method: AuthMethod,
    /// Authentication Data.
    pub data: Vec<u8>,
}

impl AuthRepr {
    /// Content of a checked AUTH payload.
    pub fn parse(p: &AuthPayload<'_>) -> AuthRepr {
        AuthRepr {
            method: p.method(),
            data: p.data().to_vec(),
        }
    }
    pub(crate) fn write(&self, w: &mut Writer<'_>, _at: Location) -> Result<(), EncodeError> {
        w.u8(self.method.0)?;
        w.bytes(&[0; 3])?;
        w.bytes(&self.data)
    }
}
body_codec!(AuthRepr, PayloadType::AUTH, |_s, b| {
    AuthPayload::new_checked(b)
});

// ------------------------------------------------------------- Nonce (§3.9)

/// A checked Nonce payload: 16 to 256 bytes of Nonce Data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoncePayload<'a> {
    body: &'a [u8],
}

impl<'a> NoncePayload<'a> {
    /// Checks a Nonce payload body.
    pub fn new_checked(body: &'a [u8]) -> Result<Self, Error> {
        if !NONCE_LEN.contains(&body.len()) {
            return Err(
                Location::payload(PayloadType::NONCE).malformed(Problem::Value {
                    field: "nonce length",
                    value: body.len() as u64,
                    allowed: "16 to 256 bytes",
                }),
            );
        }
        Ok(NoncePayload { body })
    }
    /// Nonce Data.
    pub fn data(&self) -> &'a [u8] {
        self.body
    }
}

/// Nonce payload content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceRepr {
    /// Nonce Data (16 to 256 bytes).
    pub data: Vec<u8>,
}

impl NonceRepr {
    /// Content of a checked Nonce payload.
    pub fn parse(p: &NoncePayload<'_>) -> NonceRepr {
        NonceRepr {
            data: p.data().to_vec(),
        }
    }
    pub(crate) fn write(&self, w: &mut Writer<'_>, _at: Location) -> Result<(), EncodeError> {
        w.bytes(&self.data)
    }
}
body_codec!(NonceRepr, PayloadType::NONCE, |_s, b| {
    NoncePayload::new_checked(b)
});

// --------------------------------------------------------------- SK (§3.14)

/// An SK payload: the type of the first inner payload (its Next Payload
/// field) and its body, Initialization Vector ‖ Encrypted Payloads ‖
/// Integrity Checksum Data, which the crypto layer splits (the IV and ICV
/// sizes depend on the negotiated transform). Any body is accepted here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkPayload<'a> {
    first_inner: PayloadType,
    body: &'a [u8],
}

impl<'a> SkPayload<'a> {
    /// The SK payload with Next Payload `first_inner` and body `body`.
    pub fn new(first_inner: PayloadType, body: &'a [u8]) -> Self {
        SkPayload { first_inner, body }
    }
    /// Type of the first payload inside.
    pub fn first_inner(&self) -> PayloadType {
        self.first_inner
    }
    /// IV ‖ ciphertext ‖ ICV.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

/// SK payload content, still encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkRepr {
    /// Type of the first payload inside (`NONE` when empty).
    pub first_inner: PayloadType,
    /// IV ‖ ciphertext ‖ ICV.
    pub body: Vec<u8>,
}

impl SkRepr {
    /// Content of an SK payload.
    pub fn parse(p: &SkPayload<'_>) -> SkRepr {
        SkRepr {
            first_inner: p.first_inner(),
            body: p.body().to_vec(),
        }
    }
    pub(crate) fn write(&self, w: &mut Writer<'_>, _at: Location) -> Result<(), EncodeError> {
        w.bytes(&self.body)
    }
}
body_codec!(SkRepr, PayloadType::SK, |_s, _b| Ok::<(), Error>(()));

// -------------------------------------------------------- SKF (RFC 7383 §2.5)

/// Byte ranges of the SKF payload body.
#[allow(dead_code)] // the whole layout, not every field is read
pub(crate) mod skf_field {
    use std::ops::Range;
    /// Fragment Number.
    pub const FRAGMENT_NUMBER: Range<usize> = 0..2;
    /// Total Fragments.
    pub const TOTAL_FRAGMENTS: Range<usize> = 2..4;
    /// IV ‖ encrypted content ‖ ICV.
    pub const BODY: usize = 4;
}

/// A checked SKF payload (RFC 7383 §2.5): Fragment Number from 1 to Total
/// Fragments, and Next Payload 0 in all but the first fragment (as
/// strongSwan requires). The associated data of its AEAD covers the
/// fragment fields: see [`super::Encrypted::aad`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkfPayload<'a> {
    first_inner: PayloadType,
    body: &'a [u8],
}

impl<'a> SkfPayload<'a> {
    /// Checks an SKF payload body with Next Payload `first_inner`.
    pub fn new_checked(first_inner: PayloadType, body: &'a [u8]) -> Result<Self, Error> {
        let at = Location::payload(PayloadType::SKF);
        need(at, "fragment numbers", skf_field::BODY, body)?;
        let number = be16(body, skf_field::FRAGMENT_NUMBER.start);
        let total = be16(body, skf_field::TOTAL_FRAGMENTS.start);
        if total == 0 {
            return Err(at.malformed(Problem::Value {
                field: "total fragments",
                value: 0,
                allowed: "at least 1",
            }));
        }
        if number == 0 || number > total {
            return Err(at.malformed(Problem::Value {
                field: "fragment number",
                value: u64::from(number),
                allowed: "1 to the total fragments",
            }));
        }
        if number > 1 && first_inner != PayloadType::NONE {
            return Err(at.malformed(Problem::Rule(
                "only the first fragment names the first inner payload",
            )));
        }
        Ok(SkfPayload { first_inner, body })
    }
    /// Type of the first inner payload (fragment 1), else `NONE`.
    pub fn first_inner(&self) -> PayloadType {
        self.first_inner
    }
    /// Fragment Number (1 ..= total).
    pub fn fragment_number(&self) -> u16 {
        be16(self.body, skf_field::FRAGMENT_NUMBER.start)
    }
    /// Total Fragments.
    pub fn total_fragments(&self) -> u16 {
        be16(self.body, skf_field::TOTAL_FRAGMENTS.start)
    }
    /// IV ‖ ciphertext ‖ ICV.
    pub fn body(&self) -> &'a [u8] {
        tail(self.body, skf_field::BODY)
    }
}

/// SKF payload content, still encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkfRepr {
    /// Type of the first inner payload in fragment 1, else `NONE`.
    pub first_inner: PayloadType,
    /// Fragment Number.
    pub fragment_number: u16,
    /// Total Fragments.
    pub total_fragments: u16,
    /// IV ‖ ciphertext ‖ ICV.
    pub body: Vec<u8>,
}

impl SkfRepr {
    /// Content of a checked SKF payload.
    pub fn parse(p: &SkfPayload<'_>) -> SkfRepr {
        SkfRepr {
            first_inner: p.first_inner(),
            fragment_number: p.fragment_number(),
            total_fragments: p.total_fragments(),
            body: p.body().to_vec(),
        }
    }
    pub(crate) fn write(&self, w: &mut Writer<'_>, _at: Location) -> Result<(), EncodeError> {
        w.u16(self.fragment_number)?;
        w.u16(self.total_fragments)?;
        w.bytes(&self.body)
    }
}
body_codec!(SkfRepr, PayloadType::SKF, |s, b| SkfPayload::new_checked(
    s.first_inner,
    b
));

// ------------------------------------------------------------ all payloads

/// A checked payload of an understood type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// Security Association.
    Sa(SaPayload<'a>),
    /// Key Exchange.
    Ke(KePayload<'a>),
    /// Identification - Initiator.
    IdI(IdPayload<'a>),
    /// Identification - Responder.
    IdR(IdPayload<'a>),
    /// Certificate.
    Cert(CertPayload<'a>),
    /// Certificate Request.
    CertReq(CertPayload<'a>),
    /// Authentication.
    Auth(AuthPayload<'a>),
    /// Nonce.
    Nonce(NoncePayload<'a>),
    /// Notify.
    Notify(NotifyPayload<'a>),
    /// Delete.
    Delete(DeletePayload<'a>),
    /// Vendor ID: opaque.
    VendorId(&'a [u8]),
    /// Traffic Selector - Initiator.
    TsI(TsPayload<'a>),
    /// Traffic Selector - Responder.
    TsR(TsPayload<'a>),
    /// Encrypted and Authenticated.
    Sk(SkPayload<'a>),
    /// Configuration: the body, not parsed further (no configuration
    /// payload is processed by this project yet).
    Cp(&'a [u8]),
    /// EAP: the body, not parsed further (EAP is not supported; the
    /// exchange refuses it).
    Eap(&'a [u8]),
    /// Encrypted and Authenticated Fragment.
    Skf(SkfPayload<'a>),
}

impl<'a> Payload<'a> {
    /// The typed view of a framed payload, its body checked.
    pub fn parse(raw: &RawPayload<'a>) -> Result<Payload<'a>, Error> {
        let b = raw.body;
        Ok(match raw.payload_type {
            PayloadType::SA => Payload::Sa(SaPayload::new_checked(b)?),
            PayloadType::KE => Payload::Ke(KePayload::new_checked(b)?),
            PayloadType::ID_I => Payload::IdI(IdPayload::new_checked(b)?),
            PayloadType::ID_R => Payload::IdR(IdPayload::new_checked(b)?),
            PayloadType::CERT => Payload::Cert(CertPayload::new_checked(b)?),
            PayloadType::CERTREQ => Payload::CertReq(CertPayload::new_checked(b)?),
            PayloadType::AUTH => Payload::Auth(AuthPayload::new_checked(b)?),
            PayloadType::NONCE => Payload::Nonce(NoncePayload::new_checked(b)?),
            PayloadType::NOTIFY => Payload::Notify(NotifyPayload::new_checked(b)?),
            PayloadType::DELETE => Payload::Delete(DeletePayload::new_checked(b)?),
            PayloadType::VENDOR_ID => Payload::VendorId(b),
            PayloadType::TS_I => Payload::TsI(TsPayload::new_checked(b)?),
            PayloadType::TS_R => Payload::TsR(TsPayload::new_checked(b)?),
            PayloadType::SK => Payload::Sk(SkPayload::new(raw.next_payload, b)),
            PayloadType::CP => Payload::Cp(b),
            PayloadType::EAP => Payload::Eap(b),
            PayloadType::SKF => Payload::Skf(SkfPayload::new_checked(raw.next_payload, b)?),
            ty => {
                return Err(
                    Location::payload(ty).malformed(Problem::Rule("payload type not understood"))
                )
            }
        })
    }

    /// The payload type.
    pub fn payload_type(&self) -> PayloadType {
        match self {
            Payload::Sa(_) => PayloadType::SA,
            Payload::Ke(_) => PayloadType::KE,
            Payload::IdI(_) => PayloadType::ID_I,
            Payload::IdR(_) => PayloadType::ID_R,
            Payload::Cert(_) => PayloadType::CERT,
            Payload::CertReq(_) => PayloadType::CERTREQ,
            Payload::Auth(_) => PayloadType::AUTH,
            Payload::Nonce(_) => PayloadType::NONCE,
            Payload::Notify(_) => PayloadType::NOTIFY,
            Payload::Delete(_) => PayloadType::DELETE,
            Payload::VendorId(_) => PayloadType::VENDOR_ID,
            Payload::TsI(_) => PayloadType::TS_I,
            Payload::TsR(_) => PayloadType::TS_R,
            Payload::Sk(_) => PayloadType::SK,
            Payload::Cp(_) => PayloadType::CP,
            Payload::Eap(_) => PayloadType::EAP,
            Payload::Skf(_) => PayloadType::SKF,
        }
    }
}

/// The content of a payload of an understood type, for the encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadRepr {
    /// Security Association.
    Sa(SaRepr),
    /// Key Exchange.
    Ke(KeRepr),
    /// Identification - Initiator.
    IdI(IdRepr),
    /// Identification - Responder.
    IdR(IdRepr),
    /// Certificate.
    Cert(CertRepr),
    /// Certificate Request.
    CertReq(CertRepr),
    /// Authentication.
    Auth(AuthRepr),
    /// Nonce.
    Nonce(NonceRepr),
    /// Notify.
    Notify(NotifyRepr),
    /// Delete.
    Delete(DeleteRepr),
    /// Vendor ID.
    VendorId(Vec<u8>),
    /// Traffic Selector - Initiator.
    TsI(TsRepr),
    /// Traffic Selector - Responder.
    TsR(TsRepr),
    /// Encrypted and Authenticated (must be last).
    Sk(SkRepr),
    /// Configuration (opaque body).
    Cp(Vec<u8>),
    /// EAP (opaque body).
    Eap(Vec<u8>),
    /// Encrypted and Authenticated Fragment (must be last).
    Skf(SkfRepr),
}

impl PayloadRepr {
    /// The content of a checked payload.
    pub fn parse(p: &Payload<'_>) -> PayloadRepr {
        match p {
            Payload::Sa(v) => PayloadRepr::Sa(SaRepr::parse(v)),
            Payload::Ke(v) => PayloadRepr::Ke(KeRepr::parse(v)),
            Payload::IdI(v) => PayloadRepr::IdI(IdRepr::parse(v)),
            Payload::IdR(v) => PayloadRepr::IdR(IdRepr::parse(v)),
            Payload::Cert(v) => PayloadRepr::Cert(CertRepr::parse(v)),
            Payload::CertReq(v) => PayloadRepr::CertReq(CertRepr::parse(v)),
            Payload::Auth(v) => PayloadRepr::Auth(AuthRepr::parse(v)),
            Payload::Nonce(v) => PayloadRepr::Nonce(NonceRepr::parse(v)),
            Payload::Notify(v) => PayloadRepr::Notify(NotifyRepr::parse(v)),
            Payload::Delete(v) => PayloadRepr::Delete(DeleteRepr::parse(v)),
            Payload::VendorId(v) => PayloadRepr::VendorId(v.to_vec()),
            Payload::TsI(v) => PayloadRepr::TsI(TsRepr::parse(v)),
            Payload::TsR(v) => PayloadRepr::TsR(TsRepr::parse(v)),
            Payload::Sk(v) => PayloadRepr::Sk(SkRepr::parse(v)),
            Payload::Cp(v) => PayloadRepr::Cp(v.to_vec()),
            Payload::Eap(v) => PayloadRepr::Eap(v.to_vec()),
            Payload::Skf(v) => PayloadRepr::Skf(SkfRepr::parse(v)),
        }
    }

    /// The payload type.
    pub fn payload_type(&self) -> PayloadType {
        match self {
            PayloadRepr::Sa(_) => PayloadType::SA,
            PayloadRepr::Ke(_) => PayloadType::KE,
            PayloadRepr::IdI(_) => PayloadType::ID_I,
            PayloadRepr::IdR(_) => PayloadType::ID_R,
            PayloadRepr::Cert(_) => PayloadType::CERT,
            PayloadRepr::CertReq(_) => PayloadType::CERTREQ,
            PayloadRepr::Auth(_) => PayloadType::AUTH,
            PayloadRepr::Nonce(_) => PayloadType::NONCE,
            PayloadRepr::Notify(_) => PayloadType::NOTIFY,
            PayloadRepr::Delete(_) => PayloadType::DELETE,
            PayloadRepr::VendorId(_) => PayloadType::VENDOR_ID,
            PayloadRepr::TsI(_) => PayloadType::TS_I,
            PayloadRepr::TsR(_) => PayloadType::TS_R,
            PayloadRepr::Sk(_) => PayloadType::SK,
            PayloadRepr::Cp(_) => PayloadType::CP,
            PayloadRepr::Eap(_) => PayloadType::EAP,
            PayloadRepr::Skf(_) => PayloadType::SKF,
        }
    }

    /// For SK and SKF: the Next Payload they carry (first inner type).
    pub fn first_inner(&self) -> Option<PayloadType> {
        match self {
            PayloadRepr::Sk(s) => Some(s.first_inner),
            PayloadRepr::Skf(s) => Some(s.first_inner),
            _ => None,
        }
    }

    /// Length of the encoded body (without the generic header).
    pub fn buffer_len(&self) -> usize {
        super::counted_len(|w| self.write_body(w, Location::payload(self.payload_type())))
    }

    pub(crate) fn write_body(&self, w: &mut Writer<'_>, at: Location) -> Result<(), EncodeError> {
        match self {
            PayloadRepr::Sa(r) => r.write(w, at),
            PayloadRepr::Ke(r) => r.write(w, at),
            PayloadRepr::IdI(r) | PayloadRepr::IdR(r) => r.write(w, at),
            PayloadRepr::Cert(r) | PayloadRepr::CertReq(r) => r.write(w, at),
            PayloadRepr::Auth(r) => r.write(w, at),
            PayloadRepr::Nonce(r) => r.write(w, at),
            PayloadRepr::Notify(r) => r.write(w, at),
            PayloadRepr::Delete(r) => r.write(w, at),
            PayloadRepr::VendorId(b) | PayloadRepr::Cp(b) | PayloadRepr::Eap(b) => w.bytes(b),
            PayloadRepr::TsI(r) | PayloadRepr::TsR(r) => r.write(w, at),
            PayloadRepr::Sk(r) => r.write(w, at),
            PayloadRepr::Skf(r) => r.write(w, at),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::{EncodeError, PeerError};
    use proptest::prelude::*;

    fn err_text(e: Error) -> String {
        e.to_string()
    }

    #[test]
    fn ke() {
        // x25519: group 31, reserved, 32 bytes of data (§3.4 layout).
        let mut b = vec![0, 31, 0, 0];
        b.extend_from_slice(&[7; 32]);
        let p = KePayload::new_checked(&b).unwrap();
        assert_eq!(p.group(), KeMethod::CURVE25519);
        assert_eq!(p.data(), &[7; 32]);
        let r = KeRepr::parse(&p);
        let mut out = vec![0; r.buffer_len()];
        assert_eq!(r.emit(&mut out).unwrap(), 36);
        assert_eq!(out, b);
        assert!(KePayload::new_checked(&b[..4]).is_err());
        assert!(KePayload::new_checked(&b[..3]).is_err());
        // Reserved bytes are ignored.
        b[2] = 0xff;
        assert_eq!(KeRepr::parse(&KePayload::new_checked(&b).unwrap()), r);
        let empty = KeRepr {
            group: KeMethod::CURVE25519,
            data: vec![],
        };
        assert!(matches!(
            empty.emit(&mut [0; 8]),
            Err(Error::Encode(EncodeError::Invalid { .. }))
        ));
    }

    #[test]
    fn id() {
        let b = [1, 0, 0, 0, 192, 0, 2, 1];
        let p = IdPayload::new_checked(&b).unwrap();
        assert_eq!(p.id_type(), IdType::IPV4_ADDR);
        assert_eq!(p.data(), &[192, 0, 2, 1]);
        assert_eq!(p.rest_of_payload(), &b);
        let e = IdPayload::new_checked(&b[..7]).unwrap_err();
        assert_eq!(
            err_text(e),
            "IKE message from the peer refused: IDi payload: identification data length 3 \
             differs from the address length (4)"
        );
        let fqdn = [2, 0, 0, 0, b'v', b'd', b'.', b't', b'e', b's', b't'];
        let p = IdPayload::new_checked(&fqdn).unwrap();
        assert_eq!(p.data(), b"vd.test");
        assert!(IdPayload::new_checked(&[5, 0, 0, 0, 1, 2, 3, 4]).is_err());
        assert!(IdPayload::new_checked(&[13, 0, 0, 0]).is_ok());
        // The raw body keeps the reserved bytes for the AUTH computation.
        let odd = [2, 1, 2, 3, b'x'];
        assert_eq!(
            IdPayload::new_checked(&odd).unwrap().rest_of_payload(),
            &odd
        );
    }

    #[test]
    fn cert_auth() {
        let c = CertPayload::new_checked(&[4, 1, 2, 3]).unwrap();
        assert_eq!(c.encoding(), CertEncoding::X509_SIGNATURE);
        assert_eq!(c.data(), &[1, 2, 3]);
        assert!(CertPayload::new_checked(&[]).is_err());
        let a = AuthPayload::new_checked(&[2, 0, 0, 0, 9, 9]).unwrap();
        assert_eq!(a.method(), AuthMethod::SHARED_KEY_MIC);
        assert_eq!(a.data(), &[9, 9]);
        assert_eq!(a.digital_signature(), None);
        assert!(AuthPayload::new_checked(&[2, 0, 0]).is_err());
        // RFC 7427: length 2, AlgorithmIdentifier "ab", signature "xyz".
        let ds = AuthPayload::new_checked(&[14, 0, 0, 0, 2, b'a', b'b', b'x', b'y', b'z']).unwrap();
        assert_eq!(ds.digital_signature(), Some((&b"ab"[..], &b"xyz"[..])));
        let short = AuthPayload::new_checked(&[14, 0, 0, 0, 9, b'a']).unwrap();
        assert_eq!(short.digital_signature(), None);
        let empty = AuthPayload::new_checked(&[14, 0, 0, 0]).unwrap();
        assert_eq!(empty.digital_signature(), None);
    }

    #[test]
    fn nonce_bounds() {
        for n in [0usize, 15, 257, 1000] {
            let e = NoncePayload::new_checked(&vec![0; n]).unwrap_err();
            assert!(matches!(e, Error::Peer(PeerError::Malformed { .. })));
        }
        for n in [16usize, 32, 256] {
            assert_eq!(
                NoncePayload::new_checked(&vec![1; n]).unwrap().data().len(),
                n
            );
        }
        assert!(NonceRepr { data: vec![0; 15] }.emit(&mut [0; 64]).is_err());
        assert!(NonceRepr { data: vec![0; 16] }.emit(&mut [0; 15]).is_err());
    }

    #[test]
    fn skf() {
        let b = [0, 1, 0, 3, 0xee, 0xee];
        let p = SkfPayload::new_checked(PayloadType::ID_I, &b).unwrap();
        assert_eq!((p.fragment_number(), p.total_fragments()), (1, 3));
        assert_eq!(p.body(), &[0xee, 0xee]);
        assert_eq!(p.first_inner(), PayloadType::ID_I);
        // Later fragments carry Next Payload 0.
        assert!(SkfPayload::new_checked(PayloadType::ID_I, &[0, 2, 0, 3]).is_err());
        assert!(SkfPayload::new_checked(PayloadType::NONE, &[0, 2, 0, 3]).is_ok());
        assert!(SkfPayload::new_checked(PayloadType::NONE, &[0, 4, 0, 3]).is_err());
        assert!(SkfPayload::new_checked(PayloadType::NONE, &[0, 0, 0, 3]).is_err());
        assert!(SkfPayload::new_checked(PayloadType::NONE, &[0, 0, 0, 0]).is_err());
        assert!(SkfPayload::new_checked(PayloadType::NONE, &[0, 1, 0]).is_err());
    }

    pub(crate) fn bytes(range: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), range)
    }

    proptest! {
        #[test]
        fn ke_round_trip(group in any::<u16>(), data in bytes(0..600)) {
            let r = KeRepr { group: KeMethod(group), data };
            let mut buf = vec![0; r.buffer_len()];
            match r.emit(&mut buf) {
                Ok(n) => prop_assert_eq!(KeRepr::parse(&KePayload::new_checked(&buf[..n]).unwrap()), r),
                Err(_) => prop_assert!(r.data.is_empty()),
            }
        }

        #[test]
        fn id_round_trip(t in any::<u8>(), data in bytes(0..40)) {
            let r = IdRepr { id_type: IdType(t), data };
            let mut buf = vec![0; r.buffer_len()];
            if let Ok(n) = r.emit(&mut buf) {
                prop_assert_eq!(IdRepr::parse(&IdPayload::new_checked(&buf[..n]).unwrap()), r);
            } else {
                prop_assert!(t == 1 || t == 5);
            }
        }

        #[test]
        fn cert_auth_nonce_round_trip(t in any::<u8>(), data in bytes(0..300)) {
            let c = CertRepr { encoding: CertEncoding(t), data: data.clone() };
            let mut buf = vec![0; c.buffer_len()];
            let n = c.emit(&mut buf).unwrap();
            prop_assert_eq!(CertRepr::parse(&CertPayload::new_checked(&buf[..n]).unwrap()), c);
            let a = AuthRepr { method: AuthMethod(t), data: data.clone() };
            let mut buf = vec![0; a.buffer_len()];
            let n = a.emit(&mut buf).unwrap();
            prop_assert_eq!(AuthRepr::parse(&AuthPayload::new_checked(&buf[..n]).unwrap()), a);
            let nr = NonceRepr { data };
            let mut buf = vec![0; nr.buffer_len()];
            match nr.emit(&mut buf) {
                Ok(n) => prop_assert_eq!(NonceRepr::parse(&NoncePayload::new_checked(&buf[..n]).unwrap()), nr),
                Err(_) => prop_assert!(!NONCE_LEN.contains(&nr.data.len())),
            }
        }

        #[test]
        fn sk_skf_round_trip(first in any::<u8>(), num in any::<u16>(), total in any::<u16>(), body in bytes(0..100)) {
            let s = SkRepr { first_inner: PayloadType(first), body: body.clone() };
            let mut buf = vec![0; s.buffer_len()];
            let n = s.emit(&mut buf).unwrap();
            prop_assert_eq!(SkRepr::parse(&SkPayload::new(s.first_inner, &buf[..n])), s);
            let f = SkfRepr { first_inner: PayloadType(first), fragment_number: num, total_fragments: total, body };
            let mut buf = vec![0; f.buffer_len()];
            if let Ok(n) = f.emit(&mut buf) {
                prop_assert_eq!(SkfRepr::parse(&SkfPayload::new_checked(f.first_inner, &buf[..n]).unwrap()), f);
            } else {
                prop_assert!(num == 0 || num > total || (num > 1 && first != 0));
            }
        }
    }
}
