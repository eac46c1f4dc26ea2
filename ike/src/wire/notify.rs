//! Notify (RFC 7296 §3.10) and Delete (§3.11) payloads.
//!
//! ```text
//! Notify: Protocol ID(1) SPI Size(1) Notify Message Type(2) SPI Notification Data
//! Delete: Protocol ID(1) SPI Size(1) Num of SPIs(2) SPIs...
//! ```
//!
//! [`NotifyPayload::new_checked`] requires the SPI within the payload and,
//! when there is one, Protocol ID and SPI Size to agree (AH and ESP: 4,
//! IKE: 8); without an SPI the Protocol ID is ignored, as §3.10 says. The
//! data of the notifications read here must have their length:
//! INVALID_KE_PAYLOAD 2 bytes, NAT_DETECTION_*_IP 20 (a SHA-1 digest),
//! COOKIE 1 to 64, SIGNATURE_HASH_ALGORITHMS an even length; REKEY_SA must
//! name an AH or ESP SPI.
//!
//! [`DeletePayload::new_checked`] requires Protocol ID IKE with SPI Size 0
//! and no SPIs, or AH/ESP with SPI Size 4 and exactly Num of SPIs SPIs.

use super::error::{EncodeError, Error, Location, Problem};
use super::payload::{body_codec, KeMethod};
use super::types::{registry, ChildSpi, IkeSpi, PayloadType, ProtocolId};
use super::{be16, be32, be64, byte, slice, tail, Writer};

/// Byte ranges of the Notify payload body.
#[allow(dead_code)] // the whole layout, not every field is read
mod field {
    use std::ops::Range;
    /// Protocol ID.
    pub const PROTOCOL: usize = 0;
    /// SPI Size.
    pub const SPI_SIZE: usize = 1;
    /// Notify Message Type.
    pub const TYPE: Range<usize> = 2..4;
    /// Start of the SPI, then the Notification Data.
    pub const SPI: usize = 4;
}

/// Byte ranges of the Delete payload body.
#[allow(dead_code)] // the whole layout, not every field is read
mod delete_field {
    use std::ops::Range;
    /// Protocol ID.
    pub const PROTOCOL: usize = 0;
    /// SPI Size.
    pub const SPI_SIZE: usize = 1;
    /// Num of SPIs.
    pub const COUNT: Range<usize> = 2..4;
    /// Start of the SPIs.
    pub const SPIS: usize = 4;
}

registry! {
    /// Notify Message Type (§3.10.1; IANA "IKEv2 Notify Message Types").
    /// Below 16384: errors; from 16384: status.
    NotifyType(u16) {
        /// A critical payload type was not understood (data: the type).
        UNSUPPORTED_CRITICAL_PAYLOAD = 1 => "UNSUPPORTED_CRITICAL_PAYLOAD",
        /// Message for an unknown IKE SA.
        INVALID_IKE_SPI = 4 => "INVALID_IKE_SPI",
        /// Major version not supported (data: the highest supported).
        INVALID_MAJOR_VERSION = 5 => "INVALID_MAJOR_VERSION",
        /// Malformed or unacceptable message.
        INVALID_SYNTAX = 7 => "INVALID_SYNTAX",
        /// Message ID out of the window.
        INVALID_MESSAGE_ID = 9 => "INVALID_MESSAGE_ID",
        /// ESP or AH packet for an unknown SPI.
        INVALID_SPI = 11 => "INVALID_SPI",
        /// No proposal acceptable.
        NO_PROPOSAL_CHOSEN = 14 => "NO_PROPOSAL_CHOSEN",
        /// Wrong key exchange method (data: the accepted group).
        INVALID_KE_PAYLOAD = 17 => "INVALID_KE_PAYLOAD",
        /// Authentication failed.
        AUTHENTICATION_FAILED = 24 => "AUTHENTICATION_FAILED",
        /// Only one pair of traffic selectors accepted.
        SINGLE_PAIR_REQUIRED = 34 => "SINGLE_PAIR_REQUIRED",
        /// No more Child SAs accepted.
        NO_ADDITIONAL_SAS = 35 => "NO_ADDITIONAL_SAS",
        /// No internal address available.
        INTERNAL_ADDRESS_FAILURE = 36 => "INTERNAL_ADDRESS_FAILURE",
        /// A configuration payload was required.
        FAILED_CP_REQUIRED = 37 => "FAILED_CP_REQUIRED",
        /// Traffic selectors unacceptable.
        TS_UNACCEPTABLE = 38 => "TS_UNACCEPTABLE",
        /// Packet outside the Child SA's selectors.
        INVALID_SELECTORS = 39 => "INVALID_SELECTORS",
        /// Try again later (e.g. during a rekey collision).
        TEMPORARY_FAILURE = 43 => "TEMPORARY_FAILURE",
        /// The Child SA to rekey does not exist.
        CHILD_SA_NOT_FOUND = 44 => "CHILD_SA_NOT_FOUND",
        /// The first IKE SA with this peer.
        INITIAL_CONTACT = 16384 => "INITIAL_CONTACT",
        /// Window size for concurrent requests.
        SET_WINDOW_SIZE = 16385 => "SET_WINDOW_SIZE",
        /// More traffic selectors could have been accepted.
        ADDITIONAL_TS_POSSIBLE = 16386 => "ADDITIONAL_TS_POSSIBLE",
        /// IPComp supported.
        IPCOMP_SUPPORTED = 16387 => "IPCOMP_SUPPORTED",
        /// Hash of the sender's address and port (NAT detection).
        NAT_DETECTION_SOURCE_IP = 16388 => "NAT_DETECTION_SOURCE_IP",
        /// Hash of the receiver's address and port (NAT detection).
        NAT_DETECTION_DESTINATION_IP = 16389 => "NAT_DETECTION_DESTINATION_IP",
        /// Stateless cookie (§2.6).
        COOKIE = 16390 => "COOKIE",
        /// Transport mode requested.
        USE_TRANSPORT_MODE = 16391 => "USE_TRANSPORT_MODE",
        /// Hash-and-URL certificates supported.
        HTTP_CERT_LOOKUP_SUPPORTED = 16392 => "HTTP_CERT_LOOKUP_SUPPORTED",
        /// The Child SA being rekeyed (its SPI).
        REKEY_SA = 16393 => "REKEY_SA",
        /// TFC padding not supported.
        ESP_TFC_PADDING_NOT_SUPPORTED = 16394 => "ESP_TFC_PADDING_NOT_SUPPORTED",
        /// Non-first fragments also sent over the SA.
        NON_FIRST_FRAGMENTS_ALSO = 16395 => "NON_FIRST_FRAGMENTS_ALSO",
        /// MOBIKE supported (RFC 4555).
        MOBIKE_SUPPORTED = 16396 => "MOBIKE_SUPPORTED",
        /// Redirect supported (RFC 5685).
        REDIRECT_SUPPORTED = 16406 => "REDIRECT_SUPPORTED",
        /// Childless IKE SA supported (RFC 6023).
        CHILDLESS_IKEV2_SUPPORTED = 16418 => "CHILDLESS_IKEV2_SUPPORTED",
        /// IKE fragmentation supported (RFC 7383).
        IKEV2_FRAGMENTATION_SUPPORTED = 16430 => "IKEV2_FRAGMENTATION_SUPPORTED",
        /// Hash algorithms for digital signatures (RFC 7427; data: u16 list).
        SIGNATURE_HASH_ALGORITHMS = 16431 => "SIGNATURE_HASH_ALGORITHMS",
        /// A postquantum preshared key is wanted (RFC 8784).
        USE_PPK = 16435 => "USE_PPK",
        /// PPK identity (RFC 8784).
        PPK_IDENTITY = 16436 => "PPK_IDENTITY",
        /// AUTH without PPK (RFC 8784).
        NO_PPK_AUTH = 16437 => "NO_PPK_AUTH",
        /// IKE_INTERMEDIATE supported (RFC 9242).
        INTERMEDIATE_EXCHANGE_SUPPORTED = 16438 => "INTERMEDIATE_EXCHANGE_SUPPORTED",
        /// An additional key exchange follows (RFC 9370).
        ADDITIONAL_KEY_EXCHANGE = 16441 => "ADDITIONAL_KEY_EXCHANGE",
    }
}

impl NotifyType {
    /// An error type (below 16384), which makes a response a failure.
    pub fn is_error(self) -> bool {
        self.0 < 16384
    }
}

/// What a notification or deletion concerns: the SPI and its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyTarget {
    /// No SPI (the IKE SA, or nothing in particular); Protocol ID sent as 0.
    None,
    /// An IKE SA named by an 8-byte SPI (Protocol ID 1), as some older
    /// implementations send.
    Ike(IkeSpi),
    /// An AH SA (Protocol ID 2).
    Ah(ChildSpi),
    /// An ESP SA (Protocol ID 3).
    Esp(ChildSpi),
}

/// A checked Notify payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyPayload<'a> {
    body: &'a [u8],
}

impl<'a> NotifyPayload<'a> {
    /// Checks a Notify payload body: see the module documentation.
    pub fn new_checked(body: &'a [u8]) -> Result<Self, Error> {
        let at = Location::payload(PayloadType::NOTIFY);
        if body.len() < field::SPI {
            return Err(at.malformed(Problem::Truncated {
                what: "Notify payload header",
                need: field::SPI,
                have: body.len(),
            }));
        }
        let spi_size = usize::from(byte(body, field::SPI_SIZE));
        let protocol = ProtocolId(byte(body, field::PROTOCOL));
        if field::SPI + spi_size > body.len() {
            return Err(at.malformed(Problem::Exceeds {
                field: "SPI size",
                value: spi_size,
                container: "Notify payload",
                room: body.len() - field::SPI,
            }));
        }
        match (spi_size, protocol) {
            (0, _) | (8, ProtocolId::IKE) | (4, ProtocolId::AH | ProtocolId::ESP) => {}
            (n, _) => {
                return Err(at.malformed(Problem::Value {
                    field: "SPI size",
                    value: n as u64,
                    allowed: "0, 4 with AH or ESP, or 8 with IKE",
                }))
            }
        }
        let p = NotifyPayload { body };
        let data = p.data().len();
        let bad = |allowed| {
            Err(at.malformed(Problem::Value {
                field: "notification data length",
                value: data as u64,
                allowed,
            }))
        };
        match p.notify_type() {
            NotifyType::INVALID_KE_PAYLOAD if data != 2 => return bad("2 for INVALID_KE_PAYLOAD"),
            NotifyType::NAT_DETECTION_SOURCE_IP | NotifyType::NAT_DETECTION_DESTINATION_IP
                if data != 20 =>
            {
                return bad("20 for NAT_DETECTION_*_IP")
            }
            NotifyType::COOKIE if !(1..=64).contains(&data) => return bad("1 to 64 for COOKIE"),
            NotifyType::SIGNATURE_HASH_ALGORITHMS if data % 2 != 0 => {
                return bad("even for SIGNATURE_HASH_ALGORITHMS")
            }
            NotifyType::REKEY_SA if spi_size != 4 => {
                return Err(at.malformed(Problem::Rule("REKEY_SA names no AH or ESP SPI")))
            }
            _ => {}
        }
        Ok(p)
    }

    /// Protocol ID as received (meaningless without an SPI).
    pub fn protocol_id(&self) -> ProtocolId {
        ProtocolId(byte(self.body, field::PROTOCOL))
    }
    /// The SPI as received (0, 4 or 8 bytes).
    pub fn spi(&self) -> &'a [u8] {
        let n = usize::from(byte(self.body, field::SPI_SIZE));
        slice(self.body, field::SPI..field::SPI + n)
    }
    /// What the notification concerns.
    pub fn target(&self) -> NotifyTarget {
        spi_target(self.protocol_id(), self.spi())
    }
    /// Notify Message Type.
    pub fn notify_type(&self) -> NotifyType {
        NotifyType(be16(self.body, field::TYPE.start))
    }
    /// Notification Data.
    pub fn data(&self) -> &'a [u8] {
        tail(self.body, field::SPI + self.spi().len())
    }
    /// For INVALID_KE_PAYLOAD: the group the responder accepts.
    pub fn invalid_ke_group(&self) -> Option<KeMethod> {
        (self.notify_type() == NotifyType::INVALID_KE_PAYLOAD)
            .then(|| KeMethod(be16(self.data(), 0)))
    }
    /// For SIGNATURE_HASH_ALGORITHMS: the hash algorithm identifiers
    /// (RFC 7427 §4; 5 is Identity, needed for Ed25519, RFC 8420).
    pub fn signature_hash_algorithms(&self) -> Option<impl Iterator<Item = u16> + 'a> {
        (self.notify_type() == NotifyType::SIGNATURE_HASH_ALGORITHMS)
            .then(|| self.data().chunks_exact(2).map(|c| be16(c, 0)))
    }
}

fn spi_target(protocol: ProtocolId, spi: &[u8]) -> NotifyTarget {
    match (spi.len(), protocol) {
        (4, ProtocolId::AH) => NotifyTarget::Ah(ChildSpi(be32(spi, 0))),
        (4, ProtocolId::ESP) => NotifyTarget::Esp(ChildSpi(be32(spi, 0))),
        (8, _) => NotifyTarget::Ike(IkeSpi(be64(spi, 0))),
        _ => NotifyTarget::None,
    }
}

/// Notify payload content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NotifyRepr {
    /// Notify Message Type.
    pub notify_type: NotifyType,
    /// What it concerns.
    pub target: NotifyTarget,
    /// Notification Data.
    pub data: Vec<u8>,
}

impl NotifyRepr {
    /// A notification without SPI.
    pub fn new(notify_type: NotifyType, data: Vec<u8>) -> Self {
        NotifyRepr {
            notify_type,
            target: NotifyTarget::None,
            data,
        }
    }

    /// Content of a checked Notify payload.
    pub fn parse(p: &NotifyPayload<'_>) -> NotifyRepr {
        NotifyRepr {
            notify_type: p.notify_type(),
            target: p.target(),
            data: p.data().to_vec(),
        }
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>, _at: Location) -> Result<(), EncodeError> {
        let (protocol, ike, child);
        let spi: &[u8] = match self.target {
            NotifyTarget::None => {
                protocol = 0;
                &[]
            }
            NotifyTarget::Ike(s) => {
                protocol = ProtocolId::IKE.0;
                ike = s.0.to_be_bytes();
                &ike
            }
            NotifyTarget::Ah(s) | NotifyTarget::Esp(s) => {
                protocol = if matches!(self.target, NotifyTarget::Ah(_)) {
                    ProtocolId::AH.0
                } else {
                    ProtocolId::ESP.0
                };
                child = s.0.to_be_bytes();
                &child
            }
        };
        w.u8(protocol)?;
        // 0, 4 or 8: fits.
        w.u8(spi.len() as u8)?;
        w.u16(self.notify_type.0)?;
        w.bytes(spi)?;
        w.bytes(&self.data)
    }
}
body_codec!(NotifyRepr, PayloadType::NOTIFY, |_s, b| {
    NotifyPayload::new_checked(b)
});

/// A checked Delete payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletePayload<'a> {
    body: &'a [u8],
}

impl<'a> DeletePayload<'a> {
    /// Checks a Delete payload body: see the module documentation.
    pub fn new_checked(body: &'a [u8]) -> Result<Self, Error> {
        let at = Location::payload(PayloadType::DELETE);
        if body.len() < delete_field::SPIS {
            return Err(at.malformed(Problem::Truncated {
                what: "Delete payload header",
                need: delete_field::SPIS,
                have: body.len(),
            }));
        }
        let protocol = ProtocolId(byte(body, delete_field::PROTOCOL));
        let spi_size = byte(body, delete_field::SPI_SIZE);
        let count = usize::from(be16(body, delete_field::COUNT.start));
        let size = match protocol {
            ProtocolId::IKE => 0,
            ProtocolId::AH | ProtocolId::ESP => 4,
            p => {
                return Err(at.malformed(Problem::Value {
                    field: "protocol ID",
                    value: u64::from(p.0),
                    allowed: "1 (IKE), 2 (AH) or 3 (ESP)",
                }))
            }
        };
        if usize::from(spi_size) != size {
            return Err(at.malformed(Problem::Value {
                field: "SPI size",
                value: u64::from(spi_size),
                allowed: "0 for IKE, 4 for AH and ESP",
            }));
        }
        if protocol == ProtocolId::IKE && count != 0 {
            return Err(at.malformed(Problem::Rule("the deletion of an IKE SA carries no SPIs")));
        }
        let present = body.len() - delete_field::SPIS;
        if present != count * size {
            return Err(at.malformed(Problem::Mismatch {
                field: "SPI bytes",
                value: present,
                of: "number of SPIs times 4",
                expected: count * size,
            }));
        }
        Ok(DeletePayload { body })
    }

    /// Protocol ID (IKE, AH or ESP).
    pub fn protocol_id(&self) -> ProtocolId {
        ProtocolId(byte(self.body, delete_field::PROTOCOL))
    }
    /// The SPIs of the AH or ESP SAs deleted (none for IKE).
    pub fn spis(&self) -> impl Iterator<Item = ChildSpi> + 'a {
        tail(self.body, delete_field::SPIS)
            .chunks_exact(4)
            .map(|c| ChildSpi(be32(c, 0)))
    }
}

/// Delete payload content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeleteRepr {
    /// Delete the IKE SA the message is sent on.
    Ike,
    /// Delete these AH SAs (the sender's inbound SPIs).
    Ah(Vec<ChildSpi>),
    /// Delete these ESP SAs (the sender's inbound SPIs).
    Esp(Vec<ChildSpi>),
}

impl DeleteRepr {
    /// Content of a checked Delete payload.
    pub fn parse(p: &DeletePayload<'_>) -> DeleteRepr {
        match p.protocol_id() {
            ProtocolId::AH => DeleteRepr::Ah(p.spis().collect()),
            ProtocolId::ESP => DeleteRepr::Esp(p.spis().collect()),
            _ => DeleteRepr::Ike,
        }
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>, at: Location) -> Result<(), EncodeError> {
        let (protocol, spis) = match self {
            DeleteRepr::Ike => (ProtocolId::IKE, &[][..]),
            DeleteRepr::Ah(s) => (ProtocolId::AH, &s[..]),
            DeleteRepr::Esp(s) => (ProtocolId::ESP, &s[..]),
        };
        w.u8(protocol.0)?;
        w.u8(if protocol == ProtocolId::IKE { 0 } else { 4 })?;
        w.u16(w.count(spis.len(), "number of SPIs", "at most 65535", at)?)?;
        for s in spis {
            w.u32(s.0)?;
        }
        Ok(())
    }
}
body_codec!(DeleteRepr, PayloadType::DELETE, |_s, b| {
    DeletePayload::new_checked(b)
});

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::payload::tests::bytes;
    use proptest::prelude::*;

    #[test]
    fn notify_layouts() {
        // INVALID_KE_PAYLOAD, no SPI, data: group 31.
        let b = [0, 0, 0, 17, 0, 31];
        let n = NotifyPayload::new_checked(&b).unwrap();
        assert_eq!(n.notify_type(), NotifyType::INVALID_KE_PAYLOAD);
        assert!(n.notify_type().is_error());
        assert_eq!(n.target(), NotifyTarget::None);
        assert_eq!(n.invalid_ke_group(), Some(KeMethod::CURVE25519));
        assert!(NotifyPayload::new_checked(&b[..5]).is_err());
        // REKEY_SA for ESP SPI 0x01020304, no data.
        let b = [3, 4, 0x40, 0x09, 1, 2, 3, 4];
        let n = NotifyPayload::new_checked(&b).unwrap();
        assert_eq!(n.notify_type(), NotifyType::REKEY_SA);
        assert_eq!(n.target(), NotifyTarget::Esp(ChildSpi(0x0102_0304)));
        assert!(n.data().is_empty());
        assert!(NotifyPayload::new_checked(&[0, 0, 0x40, 0x09]).is_err());
        // SIGNATURE_HASH_ALGORITHMS: SHA2-256, SHA2-384, SHA2-512, Identity.
        let b = [0, 0, 0x40, 0x2f, 0, 2, 0, 3, 0, 4, 0, 5];
        let n = NotifyPayload::new_checked(&b).unwrap();
        assert_eq!(
            n.signature_hash_algorithms().unwrap().collect::<Vec<_>>(),
            vec![2, 3, 4, 5]
        );
        assert!(NotifyPayload::new_checked(&b[..11]).is_err());
        // NAT detection needs 20 bytes; COOKIE 1 to 64.
        let mut nat = vec![0, 0, 0x40, 0x04];
        nat.extend_from_slice(&[9; 20]);
        assert!(NotifyPayload::new_checked(&nat).is_ok());
        nat.pop();
        assert!(NotifyPayload::new_checked(&nat).is_err());
        assert!(NotifyPayload::new_checked(&[0, 0, 0x40, 0x06]).is_err());
        assert!(NotifyPayload::new_checked(&[0, 0, 0x40, 0x06, 1]).is_ok());
        // The Protocol ID without an SPI is ignored (and written back as 0).
        let n = NotifyPayload::new_checked(&[1, 0, 0x40, 0x00]).unwrap();
        assert_eq!(n.target(), NotifyTarget::None);
        // SPI sizes must fit and agree with the protocol.
        assert!(NotifyPayload::new_checked(&[3, 4, 0, 38, 1, 2, 3]).is_err());
        assert!(NotifyPayload::new_checked(&[1, 4, 0, 38, 1, 2, 3, 4]).is_err());
        assert!(NotifyPayload::new_checked(&[3, 8, 0, 38, 1, 2, 3, 4, 5, 6, 7, 8]).is_err());
        assert_eq!(
            NotifyPayload::new_checked(&[1, 8, 0, 38, 1, 2, 3, 4, 5, 6, 7, 8])
                .unwrap()
                .target(),
            NotifyTarget::Ike(IkeSpi(0x0102_0304_0506_0708))
        );
        assert!(NotifyPayload::new_checked(&[3, 2, 0, 38, 1, 2]).is_err());
    }

    #[test]
    fn delete_layouts() {
        let d = DeletePayload::new_checked(&[1, 0, 0, 0]).unwrap();
        assert_eq!(DeleteRepr::parse(&d), DeleteRepr::Ike);
        let b = [3, 4, 0, 2, 0, 0, 0, 1, 0xff, 0, 0, 2];
        let d = DeletePayload::new_checked(&b).unwrap();
        assert_eq!(
            DeleteRepr::parse(&d),
            DeleteRepr::Esp(vec![ChildSpi(1), ChildSpi(0xff00_0002)])
        );
        let mut out = [0u8; 12];
        DeleteRepr::parse(&d).emit(&mut out).unwrap();
        assert_eq!(out, b);
        for bad in [
            &[1, 0, 0, 1][..],
            &[1, 8, 0, 0],
            &[3, 4, 0, 2, 0, 0, 0, 1],
            &[3, 4, 0, 1, 0, 0, 0, 1, 0],
            &[3, 0, 0, 0],
            &[0, 0, 0, 0],
            &[4, 4, 0, 0],
            &[3, 4, 0],
        ] {
            assert!(DeletePayload::new_checked(bad).is_err(), "{bad:?}");
        }
        let e = DeletePayload::new_checked(&[3, 4, 0, 2, 0, 0, 0, 1]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "IKE message from the peer refused: Delete payload: SPI bytes 4 differs from \
             the number of SPIs times 4 (8)"
        );
    }

    pub(crate) fn target() -> impl Strategy<Value = NotifyTarget> {
        prop_oneof![
            Just(NotifyTarget::None),
            any::<u64>().prop_map(|s| NotifyTarget::Ike(IkeSpi(s))),
            any::<u32>().prop_map(|s| NotifyTarget::Ah(ChildSpi(s))),
            any::<u32>().prop_map(|s| NotifyTarget::Esp(ChildSpi(s))),
        ]
    }

    pub(crate) fn notify() -> impl Strategy<Value = NotifyRepr> {
        (
            prop_oneof![
                Just(NotifyType::INITIAL_CONTACT),
                Just(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED),
                Just(NotifyType::INVALID_KE_PAYLOAD),
                Just(NotifyType::COOKIE),
                Just(NotifyType::NAT_DETECTION_SOURCE_IP),
                Just(NotifyType::SIGNATURE_HASH_ALGORITHMS),
                Just(NotifyType::REKEY_SA),
                any::<u16>().prop_map(NotifyType),
            ],
            target(),
            bytes(0..70),
        )
            .prop_map(|(notify_type, target, data)| NotifyRepr {
                notify_type,
                target,
                data,
            })
    }

    pub(crate) fn delete() -> impl Strategy<Value = DeleteRepr> {
        prop_oneof![
            Just(DeleteRepr::Ike),
            proptest::collection::vec(any::<u32>().prop_map(ChildSpi), 0..5)
                .prop_map(DeleteRepr::Ah),
            proptest::collection::vec(any::<u32>().prop_map(ChildSpi), 0..5)
                .prop_map(DeleteRepr::Esp),
        ]
    }

    proptest! {
        #[test]
        fn notify_round_trip(r in notify()) {
            let mut buf = vec![0; r.buffer_len()];
            match r.emit(&mut buf) {
                Ok(n) => prop_assert_eq!(NotifyRepr::parse(&NotifyPayload::new_checked(&buf[..n]).unwrap()), r),
                // Only the length rules of the types read here can fail.
                Err(_) => prop_assert!(matches!(r.notify_type,
                    NotifyType::INVALID_KE_PAYLOAD | NotifyType::COOKIE
                    | NotifyType::NAT_DETECTION_SOURCE_IP
                    | NotifyType::SIGNATURE_HASH_ALGORITHMS | NotifyType::REKEY_SA)),
            }
        }

        #[test]
        fn delete_round_trip(r in delete()) {
            let mut buf = vec![0; r.buffer_len()];
            let n = r.emit(&mut buf).unwrap();
            prop_assert_eq!(DeleteRepr::parse(&DeletePayload::new_checked(&buf[..n]).unwrap()), r);
        }

        #[test]
        fn bytes_never_panic(b in bytes(0..40)) {
            if let Ok(n) = NotifyPayload::new_checked(&b) {
                let _ = (n.target(), n.data(), n.invalid_ke_group());
                let _ = n.signature_hash_algorithms().map(|i| i.count());
            }
            if let Ok(d) = DeletePayload::new_checked(&b) {
                let _ = d.spis().count();
            }
        }
    }
}
