//! Why a packet was dropped ([`DropReason`]) and the per-reason counters
//! ([`DropCounters`]).
//!
//! A layer below both the engine and the SAs: `sa` reports its drops in
//! these terms and the engine counts them, so `sa` does not depend on the
//! engine that drives it. The public paths are the re-exports
//! `viaduct::DropReason` and `viaduct::engine::DropReason` (likewise
//! `DropCounters`).

use std::fmt;

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// No inbound SA has the packet's SPI.
    UnknownSpi,
    /// Sequence number already received.
    Replay,
    /// Sequence number older than the replay window.
    OutsideWindow,
    /// Packet shorter than its headers.
    Truncated,
    /// ESP padding bytes or length invalid.
    BadPadding,
    /// ICV did not verify.
    AuthFailed,
    /// ESP next header neither IPv4 nor IPv6 (or not matching the inner packet).
    BadNextHeader,
    /// Dummy packet (next header 59), dropped silently.
    Dummy,
    /// Inner packet outside the tunnel's traffic selectors.
    SelectorMismatch,
    /// Decrypted packet that the SPD would not send through the tunnel it
    /// came from (another tunnel's, or a BYPASS or DISCARD carve-out:
    /// RFC 4301 §5.2).
    SpdMismatch,
    /// SPD said DISCARD.
    Discard,
    /// No SPD entry matched.
    NoPolicy,
    /// SPD protects with a tunnel that has no SA.
    NoSa,
    /// A filter rule (or the default) dropped it.
    Filter,
    /// The SA reached a hard lifetime.
    Expired,
    /// Sequence number space exhausted.
    SeqOverflow,
    /// Not a well-formed IP datagram.
    Malformed,
    /// Outer fragments are not reassembled.
    Fragment,
    /// An inner fragment that hides or could rewrite its transport header
    /// (tiny first fragment, later fragment overlapping the header, IPv6
    /// later fragment of unknown protocol).
    BadFragment,
    /// A later fragment (no ports, no TCP flags) that reached a filter rule
    /// or SPD entry about ports or flags matching its addresses and
    /// protocol: its verdict depends on what only the first fragment shows.
    UnclassifiedFragment,
    /// Inbound cleartext not allowed by a BYPASS entry.
    Unprotected,
    /// The caller's output buffer is too small.
    BufferTooSmall,
    /// UDP to port 4500 with the non-ESP marker (IKE; not for the data plane).
    NonEsp,
    /// NAT-keepalive (RFC 3948 §2.3), dropped silently.
    Keepalive,
    /// ESP for an SA in the other encapsulation (plain vs. in UDP).
    EncapMismatch,
    /// The outer header says congestion (ECN CE) but the inner packet's
    /// sender does not understand ECN (Not-ECT): dropped, the only signal
    /// it understands (RFC 6040 §4.2).
    CeOnNotEct,
    /// A packet that would open a tracked flow found the connection table
    /// full (`filter_max_flows`): refused rather than let through untracked.
    StateTableFull,
    /// Cleartext with no route to its destination on the side it was going
    /// to (role `router`): red's packet to an address no route sends to
    /// black, black's to an address not routed to red.
    NoRoute,
    /// An IDS `drop` signature matched (role `ids`).
    IdsDrop,
    /// A later packet of a TCP stream a `drop` signature matched: the
    /// stream stays blocked (its bytes were taken, so a retransmission
    /// would carry them past unseen).
    IdsBlocked,
    /// A TCP segment the IDS cannot place in its stream without losing
    /// inspection: before the stream's start, different bytes from a copy
    /// already taken, or beyond what the out-of-order buffer holds. Its
    /// sender retransmits.
    IdsUnplaceable,
    /// An IP fragment with the IDS on: the Viaduct does not reassemble
    /// fragments, so it cannot inspect them.
    IdsFragment,
    /// A TCP stream could not be tracked: the IDS's stream table is full.
    IdsStreamsFull,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 33] = [
        DropReason::UnknownSpi,
        DropReason::Replay,
        DropReason::OutsideWindow,
        DropReason::Truncated,
        DropReason::BadPadding,
        DropReason::AuthFailed,
        DropReason::BadNextHeader,
        DropReason::Dummy,
        DropReason::SelectorMismatch,
        DropReason::SpdMismatch,
        DropReason::Discard,
        DropReason::NoPolicy,
        DropReason::NoSa,
        DropReason::Filter,
        DropReason::Expired,
        DropReason::SeqOverflow,
        DropReason::Malformed,
        DropReason::Fragment,
        DropReason::BadFragment,
        DropReason::UnclassifiedFragment,
        DropReason::Unprotected,
        DropReason::BufferTooSmall,
        DropReason::NonEsp,
        DropReason::Keepalive,
        DropReason::EncapMismatch,
        DropReason::CeOnNotEct,
        DropReason::StateTableFull,
        DropReason::NoRoute,
        DropReason::IdsDrop,
        DropReason::IdsBlocked,
        DropReason::IdsUnplaceable,
        DropReason::IdsFragment,
        DropReason::IdsStreamsFull,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// Stable snake-case name for logs.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::UnknownSpi => "unknown_spi",
            DropReason::Replay => "replay",
            DropReason::OutsideWindow => "outside_window",
            DropReason::Truncated => "truncated",
            DropReason::BadPadding => "bad_padding",
            DropReason::AuthFailed => "auth_failed",
            DropReason::BadNextHeader => "bad_next_header",
            DropReason::Dummy => "dummy",
            DropReason::SelectorMismatch => "selector_mismatch",
            DropReason::SpdMismatch => "spd_mismatch",
            DropReason::Discard => "discard",
            DropReason::NoPolicy => "no_policy",
            DropReason::NoSa => "no_sa",
            DropReason::Filter => "filter",
            DropReason::Expired => "expired",
            DropReason::SeqOverflow => "seq_overflow",
            DropReason::Malformed => "malformed",
            DropReason::Fragment => "fragment",
            DropReason::BadFragment => "bad_fragment",
            DropReason::UnclassifiedFragment => "unclassified_fragment",
            DropReason::Unprotected => "unprotected",
            DropReason::BufferTooSmall => "buffer_too_small",
            DropReason::NonEsp => "non_esp",
            DropReason::Keepalive => "keepalive",
            DropReason::EncapMismatch => "encap_mismatch",
            DropReason::CeOnNotEct => "ce_on_not_ect",
            DropReason::StateTableFull => "state_table_full",
            DropReason::NoRoute => "no_route",
            DropReason::IdsDrop => "ids_drop",
            DropReason::IdsBlocked => "ids_blocked",
            DropReason::IdsUnplaceable => "ids_unplaceable",
            DropReason::IdsFragment => "ids_fragment",
            DropReason::IdsStreamsFull => "ids_streams_full",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Per-reason drop counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::ALL.len()]);

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters([0; DropReason::ALL.len()])
    }
}

impl DropCounters {
    /// Count of one reason.
    pub fn get(&self, r: DropReason) -> u64 {
        self.0[r.index()]
    }
    pub(crate) fn inc(&mut self, r: DropReason) {
        self.0[r.index()] += 1;
    }
    /// Sum of all drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}
