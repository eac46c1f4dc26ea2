//! Why a negotiation failed ([`Failure`], [`ChildFailure`]) or a datagram
//! was ignored ([`Dropped`]): values for the log, each with a `Display` that
//! tells an administrator what to look at.
//!
//! Authentication failures name the identity and the method and nothing
//! more: a PSK that does not match is "authentication failed", never which
//! bytes differed.

use std::fmt;
use std::time::Duration;

use crate::crypto::{Group, HashAlgorithm};
use crate::wire::{self, AuthMethod, ExchangeType, KeMethod, NotifyType, TrafficSelector};

use super::config::Identity;
use super::proposal::ProposalMismatch;

/// Whose authentication failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthSide {
    /// We could not verify the peer's AUTH.
    Peer,
    /// The peer could not verify ours (it sent AUTHENTICATION_FAILED).
    Us,
}

/// Why an IKE SA failed (or, on a responder, an IKE_SA_INIT was refused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// We are the responder and no IKE proposal of the peer's is one we allow.
    NoProposalChosen(Box<ProposalMismatch>),
    /// The peer answered NO_PROPOSAL_CHOSEN to what we offered.
    PeerChoseNoProposal {
        /// The exchange.
        exchange: ExchangeType,
        /// Our proposals, as offered.
        offered: Vec<String>,
    },
    /// The responder asked (INVALID_KE_PAYLOAD) for a key exchange method we
    /// do not allow, or asked again for one we already use.
    InvalidKeGroup {
        /// The method the responder named.
        requested: KeMethod,
        /// Ours.
        allowed: Vec<Group>,
    },
    /// Authentication failed. Says whose, with which identity and method,
    /// and nothing about why.
    AuthenticationFailed {
        /// Whose authentication failed.
        side: AuthSide,
        /// The identity that was to be authenticated.
        identity: Identity,
        /// The method used.
        method: AuthMethod,
    },
    /// The peer authenticated (or asked to talk to) an identity that is
    /// not the one configured. Sent to the peer as AUTHENTICATION_FAILED.
    IdentityMismatch {
        /// IDi when we are the responder, IDr when we are the initiator.
        payload: &'static str,
        /// What the configuration says.
        expected: Identity,
        /// What the peer sent.
        received: Identity,
    },
    /// The peer used an authentication method other than the configured
    /// one. Sent to the peer as AUTHENTICATION_FAILED.
    UnexpectedAuthMethod {
        /// The peer's identity.
        identity: Identity,
        /// The configured method.
        expected: AuthMethod,
        /// The method of its AUTH payload.
        received: AuthMethod,
    },
    /// We authenticate with a signature, but the peer did not announce
    /// (SIGNATURE_HASH_ALGORITHMS, RFC 7427) the hash our key needs.
    PeerLacksSignatureHash {
        /// The hash algorithm needed.
        needed: HashAlgorithm,
    },
    /// The peer answered with an error notification.
    PeerError {
        /// The exchange.
        exchange: ExchangeType,
        /// The notification.
        notify: NotifyType,
    },
    /// No response after the last retransmission.
    Timeout {
        /// The exchange.
        exchange: ExchangeType,
        /// How many times the request was sent.
        sends: u32,
    },
    /// The responder's half-open IKE SA saw no IKE_AUTH in time.
    HalfOpenExpired {
        /// How long it waited.
        after: Duration,
    },
    /// The peer's message breaks the protocol.
    Protocol {
        /// The exchange.
        exchange: ExchangeType,
        /// What is wrong.
        problem: &'static str,
    },
    /// The peer's key exchange data, nonce or SPI is unusable.
    PeerValue {
        /// The exchange.
        exchange: ExchangeType,
        /// The cryptographic layer's complaint.
        error: crate::crypto::Error,
    },
    /// Too many COOKIE or INVALID_KE_PAYLOAD round trips.
    TooManyRetries {
        /// What kept coming back.
        notify: NotifyType,
    },
    /// A message of ours could not be built (a bug or a configuration out
    /// of range).
    Internal {
        /// What failed.
        what: &'static str,
        /// The detail.
        detail: String,
    },
}

impl Failure {
    pub(crate) fn internal(what: &'static str, e: impl fmt::Display) -> Failure {
        Failure::Internal {
            what,
            detail: e.to_string(),
        }
    }

    /// The error notification that tells the peer about this failure, if
    /// one is sent.
    pub fn notify_type(&self) -> Option<NotifyType> {
        Some(match self {
            Failure::NoProposalChosen(_) => NotifyType::NO_PROPOSAL_CHOSEN,
            Failure::AuthenticationFailed {
                side: AuthSide::Peer,
                ..
            }
            | Failure::IdentityMismatch { .. }
            | Failure::UnexpectedAuthMethod { .. }
            | Failure::PeerLacksSignatureHash { .. } => NotifyType::AUTHENTICATION_FAILED,
            Failure::Protocol { .. } | Failure::PeerValue { .. } => NotifyType::INVALID_SYNTAX,
            _ => return None,
        })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NoProposalChosen(m) => write!(f, "{m}"),
            Failure::PeerChoseNoProposal { exchange, offered } => write!(
                f,
                "{exchange}: the peer accepted none of our proposals [{}] \
                 (NO_PROPOSAL_CHOSEN); compare its configured proposals",
                offered.join(", ")
            ),
            Failure::InvalidKeGroup { requested, allowed } => {
                write!(
                    f,
                    "the responder asks for key exchange method {requested}, we allow ["
                )?;
                for (i, g) in allowed.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{}", KeMethod(g.transform_id()))?;
                }
                f.write_str("]")
            }
            Failure::AuthenticationFailed {
                side,
                identity,
                method,
            } => match side {
                AuthSide::Peer => write!(
                    f,
                    "authentication of the peer {identity} ({method}) failed: check the \
                     pre-shared key or pinned public key configured for it"
                ),
                AuthSide::Us => write!(
                    f,
                    "the peer refused our authentication as {identity} ({method}): \
                     AUTHENTICATION_FAILED"
                ),
            },
            Failure::IdentityMismatch {
                payload,
                expected,
                received,
            } => write!(
                f,
                "the peer's {payload} is {received}, but the configuration expects {expected}"
            ),
            Failure::UnexpectedAuthMethod {
                identity,
                expected,
                received,
            } => write!(
                f,
                "the peer {identity} authenticated with {received}, but {expected} is configured"
            ),
            Failure::PeerLacksSignatureHash { needed } => write!(
                f,
                "the peer did not announce signature hash algorithm {needed:?} \
                 (SIGNATURE_HASH_ALGORITHMS, RFC 7427) that our key needs"
            ),
            Failure::PeerError { exchange, notify } => {
                write!(f, "{exchange}: the peer answered {notify}")
            }
            Failure::Timeout { exchange, sends } => write!(
                f,
                "{exchange}: no response after sending the request {sends} times"
            ),
            Failure::HalfOpenExpired { after } => write!(
                f,
                "no IKE_AUTH request within {} s of our IKE_SA_INIT response",
                after.as_secs()
            ),
            Failure::Protocol { exchange, problem } => write!(f, "{exchange}: {problem}"),
            Failure::PeerValue { exchange, error } => write!(f, "{exchange}: {error}"),
            Failure::TooManyRetries { notify } => {
                write!(f, "IKE_SA_INIT: too many {notify} answers, giving up")
            }
            Failure::Internal { what, detail } => write!(f, "{what}: {detail}"),
        }
    }
}

/// Why the first CHILD SA was not created (the IKE SA is up regardless).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChildFailure {
    /// We are the responder and no ESP proposal of the peer's is one we allow.
    NoProposalChosen(Box<ProposalMismatch>),
    /// The traffic selectors do not intersect ours.
    TsUnacceptable(Box<TsMismatch>),
    /// The peer refused (NO_PROPOSAL_CHOSEN, TS_UNACCEPTABLE, ...).
    PeerRefused {
        /// The notification.
        notify: NotifyType,
    },
    /// The peer's answer breaks the protocol (e.g. selectors wider than
    /// ours, an SA we did not offer).
    Protocol(&'static str),
}

impl ChildFailure {
    /// The notification that tells the peer.
    pub fn notify_type(&self) -> NotifyType {
        match self {
            ChildFailure::NoProposalChosen(_) => NotifyType::NO_PROPOSAL_CHOSEN,
            ChildFailure::TsUnacceptable(_) => NotifyType::TS_UNACCEPTABLE,
            ChildFailure::PeerRefused { notify } => *notify,
            ChildFailure::Protocol(_) => NotifyType::INVALID_SYNTAX,
        }
    }
}

impl fmt::Display for ChildFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildFailure::NoProposalChosen(m) => write!(f, "{m}"),
            ChildFailure::TsUnacceptable(m) => write!(f, "{m}"),
            ChildFailure::PeerRefused { notify } => {
                write!(f, "the peer refused the CHILD SA: {notify}")
            }
            ChildFailure::Protocol(p) => write!(f, "CHILD SA: {p}"),
        }
    }
}

/// Traffic selectors that do not intersect, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsMismatch {
    /// TSi as received.
    pub peer_tsi: Vec<TrafficSelector>,
    /// TSr as received.
    pub peer_tsr: Vec<TrafficSelector>,
    /// Our selectors for the initiator's side.
    pub our_tsi: Vec<TrafficSelector>,
    /// Our selectors for the responder's side.
    pub our_tsr: Vec<TrafficSelector>,
}

/// Writes selectors as `10.1.0.0-10.1.0.255[proto 0 ports 0-65535]`.
pub(crate) struct SelectorList<'a>(pub &'a [TrafficSelector]);

impl fmt::Display for SelectorList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}-{}", t.start, t.end)?;
            if t.ip_protocol != 0 || (t.start_port, t.end_port) != (0, u16::MAX) {
                write!(
                    f,
                    " proto {} ports {}-{}",
                    t.ip_protocol, t.start_port, t.end_port
                )?;
            }
        }
        f.write_str("]")
    }
}

impl fmt::Display for TsMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "traffic selectors do not intersect (TS_UNACCEPTABLE): peer offered TSi {} TSr {}, \
             we allow TSi {} TSr {}",
            SelectorList(&self.peer_tsi),
            SelectorList(&self.peer_tsr),
            SelectorList(&self.our_tsi),
            SelectorList(&self.our_tsr),
        )
    }
}

/// Why a datagram was ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// It is not a valid IKEv2 message.
    Malformed(wire::Error),
    /// It names an IKE SA we do not have.
    UnknownSpi,
    /// It does not fit the IKE SA's state (message ID out of the window,
    /// a response to no request, ...).
    Unexpected {
        /// The exchange.
        exchange: ExchangeType,
        /// Its message ID.
        message_id: u32,
        /// Why it does not fit.
        why: &'static str,
    },
    /// Its SK payload did not authenticate (RFC 7296 §2.21.2: dropped
    /// silently, as an attacker may send it).
    DecryptionFailed {
        /// The exchange.
        exchange: ExchangeType,
    },
    /// The content decrypted but is not a valid payload chain.
    MalformedContent {
        /// The exchange.
        exchange: ExchangeType,
        /// The codec's complaint.
        error: wire::Error,
    },
    /// It is fragmented (RFC 7383), which is not supported yet.
    Fragmented,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dropped::Malformed(e) => write!(f, "{e}"),
            Dropped::UnknownSpi => f.write_str("no IKE SA with this SPI"),
            Dropped::Unexpected {
                exchange,
                message_id,
                why,
            } => write!(f, "{exchange} message {message_id}: {why}"),
            Dropped::DecryptionFailed { exchange } => {
                write!(f, "{exchange}: the encrypted payload did not authenticate")
            }
            Dropped::MalformedContent { exchange, error } => {
                write!(f, "{exchange}: encrypted content: {error}")
            }
            Dropped::Fragmented => f.write_str("IKE fragments (RFC 7383) are not supported"),
        }
    }
}
