//! Errors of the codec: what the peer got wrong ([`PeerError`]) and what we
//! were asked to encode but cannot ([`EncodeError`]), each located in the
//! message ([`Location`]) so that an administrator reading the log sees, e.g.,
//! `SA payload #1, proposal 2, transform 3, attribute 1: attribute length 9
//! exceeds the transform (5 bytes left)`.

use std::fmt;

use super::header::HeaderRepr;
use super::notify::NotifyType;
use super::types::PayloadType;

/// Any error of [`crate::wire`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The peer's message was refused; nothing of it should be acted on.
    #[error("IKE message from the peer refused: {0}")]
    Peer(#[from] PeerError),
    /// A message of ours could not be encoded (a bug or a configuration
    /// value out of range, never the peer's doing).
    #[error("IKE message not encoded: {0}")]
    Encode(#[from] EncodeError),
}

impl Error {
    /// The peer error, if this is one.
    pub fn peer(&self) -> Option<&PeerError> {
        match self {
            Error::Peer(e) => Some(e),
            Error::Encode(_) => None,
        }
    }

    /// Re-files a rejection of bytes we wrote ourselves as an encode error.
    pub(crate) fn into_encode(self) -> Error {
        match self {
            Error::Peer(PeerError::Malformed { at, problem }) => {
                Error::Encode(EncodeError::Invalid { at, problem })
            }
            Error::Peer(PeerError::UnsupportedCriticalPayload { at, .. }) => {
                Error::Encode(EncodeError::Invalid {
                    at,
                    problem: Problem::Rule("payload type not understood"),
                })
            }
            Error::Peer(PeerError::UnsupportedVersion { .. }) => {
                Error::Encode(EncodeError::Invalid {
                    at: Location::HEADER,
                    problem: Problem::Rule("major version is not 2"),
                })
            }
            e @ Error::Encode(_) => e,
        }
    }

    /// Adds the payload's place in its chain to a payload-level error.
    pub(crate) fn in_payload(self, ty: PayloadType, index: u16, encrypted: bool) -> Error {
        let fix = |at: Location| Location {
            place: Place::Payload { ty, index },
            encrypted,
            ..at
        };
        match self {
            Error::Peer(PeerError::Malformed { at, problem }) => {
                Error::Peer(PeerError::Malformed {
                    at: fix(at),
                    problem,
                })
            }
            Error::Encode(EncodeError::Invalid { at, problem }) => {
                Error::Encode(EncodeError::Invalid {
                    at: fix(at),
                    problem,
                })
            }
            e => e,
        }
    }
}

/// Why a peer's message was refused. Every variant is the peer's doing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The bytes do not follow RFC 7296 (or RFC 7383 for SKF).
    #[error("{at}: {problem}")]
    Malformed {
        /// Where.
        at: Location,
        /// What.
        problem: Problem,
    },
    /// The header's major version is not 2 (§3.1). `header` holds what an
    /// INVALID_MAJOR_VERSION answer needs (SPIs, exchange, message ID; no
    /// answer to a response, §2.21.1).
    #[error(
        "IKE version {major}.{minor}: only major version 2 is spoken \
         (a request is answered with INVALID_MAJOR_VERSION)"
    )]
    UnsupportedVersion {
        /// Major version received.
        major: u8,
        /// Minor version received.
        minor: u8,
        /// The rest of the header.
        header: HeaderRepr,
    },
    /// A payload of a type not understood has its critical bit set (§2.5):
    /// the message is refused and a request answered with
    /// UNSUPPORTED_CRITICAL_PAYLOAD carrying `payload_type`.
    #[error(
        "{at}: payload type {payload_type} is not understood and marked critical \
         (a request is answered with UNSUPPORTED_CRITICAL_PAYLOAD)"
    )]
    UnsupportedCriticalPayload {
        /// The payload type, the one byte of the notification data.
        payload_type: u8,
        /// Where.
        at: Location,
    },
}

impl PeerError {
    /// The error notification that answers this refusal in a request
    /// (§2.21: whether to answer at all is the exchange's decision; an
    /// unauthenticated message is usually dropped silently).
    pub fn notify_type(&self) -> NotifyType {
        match self {
            PeerError::Malformed { .. } => NotifyType::INVALID_SYNTAX,
            PeerError::UnsupportedVersion { .. } => NotifyType::INVALID_MAJOR_VERSION,
            PeerError::UnsupportedCriticalPayload { .. } => {
                NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD
            }
        }
    }
}

/// Why a message of ours could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The caller's buffer is shorter than the message.
    #[error("the buffer holds {have} bytes, {need} needed")]
    BufferTooSmall {
        /// Bytes needed (at least).
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A field is out of range or a rule of the format is broken; the
    /// receiver would refuse the result.
    #[error("{at}: {problem}")]
    Invalid {
        /// Where.
        at: Location,
        /// What.
        problem: Problem,
    },
}

/// The part of a message a [`Location`] starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The fixed IKE header.
    Header,
    /// The payload chain as a whole (e.g. bytes after the last payload).
    Chain,
    /// One payload: its type and its 1-based position in its chain (0 when
    /// the payload was checked on its own, outside a chain).
    Payload {
        /// Payload type.
        ty: PayloadType,
        /// Position in the chain, from 1; 0 if unknown.
        index: u16,
    },
}

/// A substructure inside a payload, numbered from 1 in order of appearance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// A proposal of an SA payload (by position, not by Proposal Num).
    Proposal(u16),
    /// A transform of a proposal.
    Transform(u16),
    /// An attribute of a transform.
    Attribute(u16),
    /// A traffic selector of a TS payload.
    Selector(u16),
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Proposal(n) => write!(f, "proposal {n}"),
            Part::Transform(n) => write!(f, "transform {n}"),
            Part::Attribute(n) => write!(f, "attribute {n}"),
            Part::Selector(n) => write!(f, "traffic selector {n}"),
        }
    }
}

/// Where in a message a problem lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Inside the decrypted content of an SK or SKF payload.
    pub encrypted: bool,
    /// The header, the chain or a payload.
    pub place: Place,
    /// The path of substructures inside the payload, outermost first.
    pub parts: [Option<Part>; 3],
}

impl Location {
    /// The IKE header.
    pub const HEADER: Location = Location {
        encrypted: false,
        place: Place::Header,
        parts: [None; 3],
    };

    /// The payload chain (`encrypted`: the decrypted content of SK/SKF).
    pub fn chain(encrypted: bool) -> Location {
        Location {
            encrypted,
            place: Place::Chain,
            parts: [None; 3],
        }
    }

    /// A payload of type `ty` checked on its own (the chain fills in its
    /// position).
    pub fn payload(ty: PayloadType) -> Location {
        Location {
            encrypted: false,
            place: Place::Payload { ty, index: 0 },
            parts: [None; 3],
        }
    }

    /// This location with `part` appended to its path (dropped past depth 3).
    pub fn with(mut self, part: Part) -> Location {
        if let Some(slot) = self.parts.iter_mut().find(|p| p.is_none()) {
            *slot = Some(part);
        }
        self
    }

    /// A peer error at this location.
    pub(crate) fn malformed(self, problem: Problem) -> Error {
        Error::Peer(PeerError::Malformed { at: self, problem })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.place, self.encrypted) {
            (Place::Header, _) => f.write_str("IKE header")?,
            (Place::Chain, false) => f.write_str("payload chain")?,
            (Place::Chain, true) => f.write_str("payload chain inside SK")?,
            (Place::Payload { ty, index }, enc) => {
                write!(f, "{ty} payload")?;
                if index != 0 {
                    write!(f, " #{index}")?;
                }
                if enc {
                    f.write_str(" inside SK")?;
                }
            }
        }
        for p in self.parts.iter().flatten() {
            write!(f, ", {p}")?;
        }
        Ok(())
    }
}

/// What is wrong. Field and structure names are those of RFC 7296 §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A fixed-size part does not fit in what remains.
    Truncated {
        /// The part (e.g. "proposal header").
        what: &'static str,
        /// Bytes it needs.
        need: usize,
        /// Bytes left.
        have: usize,
    },
    /// A length field points past its container.
    Exceeds {
        /// The length field (e.g. "attribute length").
        field: &'static str,
        /// Its value.
        value: usize,
        /// The container (e.g. "transform").
        container: &'static str,
        /// Bytes left in the container.
        room: usize,
    },
    /// A length field is below its structure's fixed size.
    TooSmall {
        /// The length field.
        field: &'static str,
        /// Its value.
        value: usize,
        /// The smallest allowed.
        min: usize,
    },
    /// A field disagrees with the enclosing data.
    Mismatch {
        /// The field (e.g. "message length").
        field: &'static str,
        /// Its value.
        value: usize,
        /// What it should equal (e.g. "datagram length").
        of: &'static str,
        /// That quantity.
        expected: usize,
    },
    /// Bytes follow where the format allows none.
    Trailing {
        /// How many.
        count: usize,
        /// After what (e.g. "last proposal").
        after: &'static str,
    },
    /// A field holds a value the format does not allow.
    Value {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A count field disagrees with the substructures present.
    Count {
        /// The field (e.g. "number of transforms").
        field: &'static str,
        /// Its value.
        declared: usize,
        /// Substructures found.
        found: usize,
    },
    /// Another rule of the format, stated.
    Rule(&'static str),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Problem::Truncated { what, need, have } => {
                write!(f, "{what} needs {need} bytes but only {have} remain")
            }
            Problem::Exceeds {
                field,
                value,
                container,
                room,
            } => write!(
                f,
                "{field} {value} exceeds the {container} ({room} bytes left)"
            ),
            Problem::TooSmall { field, value, min } => {
                write!(f, "{field} {value} is below the minimum {min}")
            }
            Problem::Mismatch {
                field,
                value,
                of,
                expected,
            } => write!(f, "{field} {value} differs from the {of} ({expected})"),
            Problem::Trailing { count, after } => {
                write!(f, "{count} unexpected bytes after the {after}")
            }
            Problem::Value {
                field,
                value,
                allowed,
            } => write!(f, "{field} {value} is not allowed ({allowed})"),
            Problem::Count {
                field,
                declared,
                found,
            } => write!(f, "{field} says {declared} but {found} are present"),
            Problem::Rule(rule) => f.write_str(rule),
        }
    }
}
