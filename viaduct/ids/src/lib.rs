//! The Viaduct's IDS engine, sans-IO: packets and stream windows in, matches
//! out.
//!
//! # Pieces
//! - [`Signature`]: the engine's own model of a rule (header, `flow`,
//!   `dsize`, a chain of [`ContentMatch`]). The Viaduct gets signatures from
//!   the policy blob; this crate never parses rule text.
//! - [`Engine`]: built once from the signatures ([`Engine::new`] refuses
//!   what cannot match or exceeds a bound), then shared read-only.
//! - [`Reassembler`]: one per direction of a TCP flow; yields the
//!   [`StreamWindow`] to inspect.
//!
//! # Matching
//! 1. **Prefilter.** Each signature has one fast pattern (see
//!    [`fast_pattern`]). Two Aho-Corasick automata hold them, one
//!    case-sensitive and one ASCII-case-insensitive, searched with
//!    `MatchKind::Standard` and overlapping iteration, so every occurrence of
//!    every pattern is seen: a signature is a candidate when its fast pattern
//!    occurs anywhere in the buffer. The prefilter only narrows.
//! 2. **Header.** Protocol (`ip` matches any), addresses and ports (both
//!    ways when bidirectional; ports only for TCP and UDP signatures),
//!    `flow` direction and state, `dsize` (packets only: a signature with
//!    `dsize` never matches a stream window, as Suricata marks such
//!    signatures packet-only).
//! 3. **Content chain**, with Suricata's semantics (its
//!    `DetectEngineContentInspection`):
//!    - `offset`/`depth`: the match lies in `[offset, offset + depth)` of the
//!      buffer; `distance`/`within`: in `[prev + distance, prev + distance +
//!      within)` where `prev` is the end of the previous non-negated content's
//!      match (the buffer start for the first); a negative start is clamped to
//!      the buffer start.
//!    - Negated content: absent from its window. `nocase`: ASCII letters match
//!      either case.
//!    - Backtracking: when a later content fails, the content before it is
//!      retried at its next occurrence (its match start + 1) — only when the
//!      failing content has `within`, as in Suricata (with `distance` alone a
//!      later occurrence cannot help a positive content). An absolute content
//!      that is absent ends the signature at once.
//!    - Work bound: at most [`SEARCH_BUDGET`] content searches per signature
//!      and buffer, each linear in the buffer (KMP). A signature that runs out
//!      does not match and is counted in [`InspectStats::budget_exhausted`].
//!
//! # Stream windows
//! A window is a stretch of the stream starting at stream offset
//! `stream_offset`, of which the bytes from `new_from` are new. Positions are
//! absolute stream offsets: `offset`/`depth` (and `distance`/`within` of a
//! first content) count from the stream's first byte, so a content whose
//! whole `[offset, offset + depth)` lies before the window can no longer
//! match, and one whose window starts before it is searched in the retained
//! part only. A match is reported only when the chain's last non-negated
//! content ends in the new bytes, so each occurrence is reported once. A
//! chain spanning more than the window (look-back plus new bytes) and
//! crossing a segment boundary is not seen by stream inspection (packet
//! inspection still sees it within one packet); negations are checked within
//! the window only.
//!
//! # Intended differences from Suricata 7
//! - Suricata applies `offset` of a stream chunk relative to the chunk but
//!   `depth` relative to the stream; here both are relative to the stream.
//! - A `distance` so negative that `prev + distance + within < 0` makes
//!   Suricata search the whole buffer (an integer wrap); here the window is
//!   empty.
//!
//! # Panics and memory
//! No function of this crate panics on any input: positions use checked or
//! saturating arithmetic and every slice is taken with `get`. Memory is
//! bounded by the engine (signatures, automata) and, per direction, by
//! [`ReassemblyConfig`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod engine;
mod model;
mod stream;
mod verify;

pub use engine::{
    check_signatures, fast_pattern, Buffer, BufferKind, BuildError, Engine, Hit, InspectStats,
    Packet, Scratch, DFA_MAX_PATTERNS, MAX_CONTENTS, MAX_CONTENT_LEN, MAX_SIGNATURES,
    SEARCH_BUDGET,
};
pub use model::{
    Action, AddrMatch, ContentMatch, DsizeMatch, FlowDirection, FlowMatch, FlowState, PortMatch,
    Proto, Signature,
};
pub use stream::{Reassembler, ReassemblyConfig, StreamEvents, StreamWindow, Unplaceable};
