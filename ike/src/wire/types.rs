//! Identifiers and IANA registry values shared by the header and payloads.
//!
//! Registry values are newtypes over the wire integer with named constants,
//! not closed enums: a value the registry gained after this code was written
//! is still carried faithfully (and shown as "unknown (n)" in logs).

use std::fmt;

/// Defines a registry newtype with named constants and a `Display` that
/// shows the registry name or "unknown (n)".
macro_rules! registry {
    (
        $(#[$meta:meta])*
        $name:ident($int:ty) {
            $( $(#[$cmeta:meta])* $konst:ident = $val:literal => $label:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $int);

        impl $name {
            $( $(#[$cmeta])* pub const $konst: $name = $name($val); )*

            /// The registry name, if this value is one of the named constants.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $val => Some($label), )*
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "unknown ({})", self.0),
                }
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                match self.name() {
                    Some(n) => write!(f, "{}({})", n, self.0),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }
    };
}
pub(crate) use registry;

/// An IKE SA SPI (§3.1): eight bytes chosen by each side; zero is "not yet
/// known" (the responder's SPI in an IKE_SA_INIT request).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct IkeSpi(pub u64);

impl IkeSpi {
    /// The SPI as on the wire.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for IkeSpi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for IkeSpi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IkeSpi({:016x})", self.0)
    }
}

/// An ESP or AH SPI (four bytes) as carried in proposals, notifications and
/// Delete payloads.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ChildSpi(pub u32);

impl fmt::Display for ChildSpi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl fmt::Debug for ChildSpi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChildSpi({:08x})", self.0)
    }
}

registry! {
    /// IKEv2 payload type (IANA "IKEv2 Payload Types"; RFC 7296 §3.2,
    /// RFC 7383 for SKF).
    PayloadType(u8) {
        /// No next payload: the end of a chain.
        NONE = 0 => "none",
        /// Security Association (§3.3).
        SA = 33 => "SA",
        /// Key Exchange (§3.4).
        KE = 34 => "KE",
        /// Identification - Initiator (§3.5).
        ID_I = 35 => "IDi",
        /// Identification - Responder (§3.5).
        ID_R = 36 => "IDr",
        /// Certificate (§3.6).
        CERT = 37 => "CERT",
        /// Certificate Request (§3.7).
        CERTREQ = 38 => "CERTREQ",
        /// Authentication (§3.8).
        AUTH = 39 => "AUTH",
        /// Nonce (§3.9).
        NONCE = 40 => "Nonce",
        /// Notify (§3.10).
        NOTIFY = 41 => "Notify",
        /// Delete (§3.11).
        DELETE = 42 => "Delete",
        /// Vendor ID (§3.12).
        VENDOR_ID = 43 => "Vendor ID",
        /// Traffic Selector - Initiator (§3.13).
        TS_I = 44 => "TSi",
        /// Traffic Selector - Responder (§3.13).
        TS_R = 45 => "TSr",
        /// Encrypted and Authenticated (§3.14).
        SK = 46 => "SK",
        /// Configuration (§3.15).
        CP = 47 => "CP",
        /// Extensible Authentication (§3.16).
        EAP = 48 => "EAP",
        /// Generic Secure Password Method (RFC 6467); not understood here.
        GSPM = 49 => "GSPM",
        /// Encrypted and Authenticated Fragment (RFC 7383).
        SKF = 53 => "SKF",
        /// Puzzle Solution (RFC 8019); not understood here.
        PS = 54 => "PS",
    }
}

impl PayloadType {
    /// Payload types this module parses (RFC 7296's 33–48 and SKF). Any
    /// other type is skipped, or refused if marked critical.
    pub fn is_understood(self) -> bool {
        matches!(self.0, 33..=48 | 53)
    }
}

registry! {
    /// Exchange type (§3.1; IANA "IKEv2 Exchange Types").
    ExchangeType(u8) {
        /// IKE_SA_INIT.
        IKE_SA_INIT = 34 => "IKE_SA_INIT",
        /// IKE_AUTH.
        IKE_AUTH = 35 => "IKE_AUTH",
        /// CREATE_CHILD_SA.
        CREATE_CHILD_SA = 36 => "CREATE_CHILD_SA",
        /// INFORMATIONAL.
        INFORMATIONAL = 37 => "INFORMATIONAL",
        /// IKE_INTERMEDIATE (RFC 9242).
        IKE_INTERMEDIATE = 43 => "IKE_INTERMEDIATE",
        /// IKE_FOLLOWUP_KE (RFC 9370).
        IKE_FOLLOWUP_KE = 44 => "IKE_FOLLOWUP_KE",
    }
}

impl ExchangeType {
    /// One of the four exchanges of RFC 7296. Any other value is carried
    /// and reported (e.g. "unknown (50)"), for the exchange layer to refuse.
    pub fn is_rfc7296(self) -> bool {
        matches!(self.0, 34..=37)
    }
}

registry! {
    /// Security protocol ID (§3.3.1, §3.10, §3.11).
    ProtocolId(u8) {
        /// IKE.
        IKE = 1 => "IKE",
        /// AH.
        AH = 2 => "AH",
        /// ESP.
        ESP = 3 => "ESP",
    }
}
