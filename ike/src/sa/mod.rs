//! The IKEv2 exchanges (RFC 7296), as initiator and responder: IKE_SA_INIT
//! and IKE_AUTH (§1.2) establish an IKE SA and its first CHILD SA;
//! CREATE_CHILD_SA (§1.3) rekeys CHILD SAs (with or without PFS), creates
//! them and rekeys the IKE SA; INFORMATIONAL (§1.4) deletes SAs and checks
//! that the peer is alive.
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
//! Established ──IKE SA rekeyed──► a new Established (it takes the CHILD
//!             SAs; the old one waits for its Delete) ──Delete──► Closing
//! ```
//!
//! An established IKE SA runs its own requests one at a time (rekeys,
//! deletes, liveness checks) beside the peer's, each CHILD SA with its own
//! state (installed, rekeying, replaced, deleting, lingering); see
//! `established.rs` and, for rekeying and its collisions, `rekey.rs`.
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
//!   responder's install comes before its IKE_AUTH (or CREATE_CHILD_SA)
//!   response.
//! - **Make before break**: whichever SA a side sends with, the other has
//!   installed with the same key — the responder of a rekey switches its
//!   outbound SA ([`Action::UseOutbound`]) only when the initiator, which
//!   installs on the response, deletes the old SA; a replaced SA's inbound
//!   half lingers for [`Config::rekeyed_delete_delay`]. The exchange tests
//!   check this after every step over networks that lose, duplicate and
//!   reorder.
//! - **No panics** on any input: this module denies indexing, `unwrap` and
//!   friends outside tests; lengths come from the checked views of
//!   [`crate::wire`].
//!
//! # Not yet
//!
//! IKE fragmentation (RFC 7383; SKF is dropped), certificates, EAP and
//! multiple key exchanges (RFC 9370). (NAT-keepalives are sent as a one-byte
//! [`Action::Send`] of 0xFF on port 4500, which the caller writes without the
//! non-ESP marker.) (The configuration comes from the policy blob in
//! `viaduct-ike`.)
//!
//! **INITIAL_CONTACT** (RFC 7296 §2.4): an initiator with no established IKE
//! SA sends it in IKE_AUTH; an IKE_AUTH that carries it, once authenticated,
//! removes every other established IKE SA of the connection and its CHILD
//! SAs, without a Delete (the peer started again and knows none of them).
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
mod rekey;
mod responder;
mod ts;

pub use action::{
    Action, ChildDeleted, ChildSaDelete, ChildSaId, ChildSaInstall, ChildSaStatus, Closed,
    Datagram, EspSa, Established, Event, IkeSaId, IkeSaStatus, NatStatus, Path, Rekeyed, Timestamp,
};
pub use config::{
    host_selector, Auth, ChildLifetimes, Config, CookiePolicy, EspProposal, Identity, IkeProposal,
    Retransmit, Selectors, MAX_TUNNELS,
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
