//! The exchanges that establish an IKE SA and its first CHILD SA
//! (RFC 7296 §1.2): IKE_SA_INIT and IKE_AUTH, as initiator and responder.
//!
//! # Shape
//!
//! Sans-IO. An [`Ike`] holds the IKE SAs of one connection ([`Config`]),
//! keyed by our SPI. The caller feeds it datagrams ([`Ike::handle`]), the
//! time ([`Ike::tick`]) and the wish to connect ([`Ike::initiate`]), and
//! carries out the [`Action`]s that come back, in order: send a datagram,
//! install or delete a CHILD SA, set the timer, log an [`Event`]. The
//! engine reads no clock ([`Timestamp`] comes in) and draws no random
//! numbers ([`Entropy`] comes in), so tests fix both.
//!
//! Each IKE SA is in one state, one type per state (`engine::State`):
//!
//! ```text
//! initiator:  InitSent ──IKE_SA_INIT response──► AuthSent ──IKE_AUTH response──► Established
//!                 │ COOKIE / INVALID_KE: same state, request rebuilt
//! responder:  (stateless COOKIE / INVALID_KE / NO_PROPOSAL_CHOSEN)
//!             IKE_SA_INIT ──► InitAnswered ──IKE_AUTH──► Established
//!                                   └──AUTHENTICATION_FAILED──► Closing
//! ```
//!
//! Only the state that holds the key exchange can complete it, only the
//! states that hold keys can open SK payloads: a transition that makes no
//! sense does not type-check.
//!
//! # Invariants
//!
//! - **Message IDs, window of 1** (§2.3): the initiator has one request
//!   outstanding (IDs 0 and 1) and retransmits its stored bytes on the
//!   timer ([`Retransmit`]), never a re-sealed copy (an IV is never
//!   reused). The responder answers a retransmitted request with the
//!   response it stored, byte for byte, without processing it again: an
//!   IKE_SA_INIT is recognised by SPIi, the sender's address and identical
//!   bytes; later requests by message ID.
//! - **Stateless until acceptable** (§2.6): the responder keeps nothing,
//!   and draws and computes nothing, for a request it answers with COOKIE,
//!   INVALID_KE_PAYLOAD, NO_PROPOSAL_CHOSEN or INVALID_SYNTAX. Cookies are
//!   demanded above a global and a per-address count of half-open SAs;
//!   their secret rotates, the previous one still accepted.
//! - **Unauthenticated messages change nothing** they should not: an SK
//!   payload that does not open is dropped and the SA waits on (§2.21.2).
//!   IKE_SA_INIT answers are unauthenticated by nature; an error in one
//!   ends the attempt (as strongSwan does).
//! - **Authentication failures** are reported with the identity and the
//!   method only ([`Failure::AuthenticationFailed`]); the peer learns
//!   AUTHENTICATION_FAILED and nothing more.
//! - **CHILD SA keys** (§2.17) leave the engine only in
//!   [`Action::InstallChildSa`], zeroized when the action is dropped; the
//!   responder's install comes before its IKE_AUTH response.
//! - **No panics** on any input: this module denies indexing, `unwrap` and
//!   friends outside tests; lengths come from the checked views of
//!   [`crate::wire`].
//!
//! # Not yet
//!
//! CREATE_CHILD_SA (rekeying; answered NO_ADDITIONAL_SAS), our own
//! INFORMATIONAL requests (DPD, deletes), IKE fragmentation (RFC 7383; SKF
//! is dropped), INITIAL_CONTACT, certificates, EAP, and configuration from
//! the policy blob.
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

mod action;
mod authn;
mod config;
mod cookie;
mod engine;
mod entropy;
mod established;
mod failure;
mod initiator;
mod msg;
mod natd;
mod proposal;
mod responder;
mod ts;

pub use action::{
    Action, ChildSaDelete, ChildSaInstall, Closed, Datagram, EspSa, Established, Event, IkeSaId,
    NatStatus, Path, Timestamp,
};
pub use config::{
    host_selector, Auth, ChildLifetimes, Config, CookiePolicy, EspProposal, Identity, IkeProposal,
    Retransmit,
};
pub use engine::{Ike, Phase};
pub use entropy::Entropy;
pub use failure::{AuthSide, ChildFailure, Dropped, Failure, TsMismatch};
pub use proposal::{transform_name, Closest, OfferedProposal, ProposalMismatch, TransformDesc};

/// What went wrong setting up [`Ike`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range.
    #[error("IKE configuration: {field}: {problem}")]
    Config {
        /// The field of [`Config`].
        field: &'static str,
        /// What is allowed.
        problem: String,
    },
}

#[cfg(test)]
mod tests;
