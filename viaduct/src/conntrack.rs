//! Connection tracking for the firewall stage (sans-IO, no clock, no
//! panics): a bounded table of flows between red and black, each with the
//! state its packets have moved it to and a timeout that state gives it.
//!
//! How the firewall uses it, per packet:
//! 1. [`Tracker::classify`] says what the packet is to the table: the first
//!    packet of a new flow ([`CtState::New`]), a packet of a tracked flow
//!    ([`CtState::Established`]), an ICMP error about a tracked flow
//!    ([`CtState::Related`]), or none of these ([`CtState::Invalid`]: a TCP
//!    segment other than a SYN with no flow, an echo reply nobody asked
//!    for, an ICMP error about nothing tracked, a later fragment).
//! 2. The rules decide, knowing that state.
//! 3. Only an accepted packet is given back to [`Tracker::commit`]: a new
//!    flow is entered (with the rule that admitted it), a tracked one moves
//!    on. A dropped packet changes nothing: neither a stray reply nor a
//!    refused opening leaves state behind.
//!
//! What is tracked (timeouts after pf):
//! - **TCP**: a segment whose flags TCP never sends (no flag, FIN without
//!   ACK, SYN with FIN or RST …) or whose header is truncated is invalid; a
//!   flow opens only with a bare SYN (no ACK, RST or FIN) and then moves
//!   through Linux conntrack's states by its transition table
//!   (`TCP_ORIGINAL`, `TCP_REPLY`), which also says which segments are not
//!   part of it; each segment must also lie in the flow's sequence window
//!   ([`window`]: out-of-window data and resets are invalid); a reset
//!   before the responder answered anything ends the flow at once; a SYN on
//!   a flow closed by a FIN, or reset by the SYN's own side, opens a new one.
//! - **UDP** and other protocols with or without ports: a pseudo-connection
//!   by the 5-tuple, `first` after its first packet, `single` while only the
//!   originator sends, `multiple` once the responder has answered.
//! - **ICMP echo** (v4 types 8/0, v6 128/129): by the addresses and the echo
//!   identifier; only a request opens one, and then requests come from the
//!   originator, replies from the responder.
//! - **ICMP errors** (destination unreachable, time exceeded, parameter
//!   problem, and IPv6's packet too big): related only when the datagram
//!   they quote belongs to a tracked flow, went the other way, and was sent
//!   by the host the error is addressed to.
//!
//! Timeouts are pf's defaults (`pfctl -s timeouts`), overridable per flow by
//! the admitting rule. The table holds at most [`Tracker::capacity`] flows:
//! expired flows are reclaimed first, and a new flow that still finds it
//! full is refused and counted (`table_full`), never admitted untracked.
//! Keys are hashed with a per-table random key (SipHash), so that a peer
//! choosing addresses and ports cannot choose collisions.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use policy_blob::Direction;

use crate::sa::Timestamp;

mod window;
use crate::wire::ip::{FiveTuple, Ipv4Packet, Ipv6Packet};
use window::{Outcome, Segment, TcpTrack};

/// Timeouts in seconds, by protocol and state (pf's names and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP after the first SYN (`tcp.first`, 120).
    pub tcp_first: u32,
    /// TCP once both sides sent, not yet established (`tcp.opening`, 30).
    pub tcp_opening: u32,
    /// TCP established (`tcp.established`, 86400).
    pub tcp_established: u32,
    /// TCP after the first FIN (`tcp.closing`, 900).
    pub tcp_closing: u32,
    /// TCP after both FINs (`tcp.finwait`, 45).
    pub tcp_finwait: u32,
    /// TCP after a RST (`tcp.closed`, 90).
    pub tcp_closed: u32,
    /// UDP after the first packet (`udp.first`, 60).
    pub udp_first: u32,
    /// UDP while only the originator sends (`udp.single`, 30).
    pub udp_single: u32,
    /// UDP once both sides sent (`udp.multiple`, 60).
    pub udp_multiple: u32,
    /// ICMP echo after a packet (`icmp.first`, 20).
    pub icmp_first: u32,
    /// ICMP echo after an error about it (`icmp.error`, 10).
    pub icmp_error: u32,
    /// Other protocols after the first packet (`other.first`, 60).
    pub other_first: u32,
    /// Other protocols while only the originator sends (`other.single`, 30).
    pub other_single: u32,
    /// Other protocols once both sides sent (`other.multiple`, 60).
    pub other_multiple: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::from_array(policy_blob::DEFAULT_FLOW_TIMEOUTS)
    }
}

impl Timeouts {
    /// From the 14 values in the order of [`policy_blob::FLOW_TIMEOUT_NAMES`]
    /// (a policy rule's timeouts).
    pub fn from_array(t: [u32; 14]) -> Timeouts {
        Timeouts {
            tcp_first: t[0],
            tcp_opening: t[1],
            tcp_established: t[2],
            tcp_closing: t[3],
            tcp_finwait: t[4],
            tcp_closed: t[5],
            udp_first: t[6],
            udp_single: t[7],
            udp_multiple: t[8],
            icmp_first: t[9],
            icmp_error: t[10],
            other_first: t[11],
            other_single: t[12],
            other_multiple: t[13],
        }
    }
}

/// What a packet is to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtState {
    /// It may open a flow (none is tracked for it).
    New,
    /// It belongs to a tracked flow.
    Established,
    /// An ICMP error about a tracked flow.
    Related,
    /// None of these: it can neither open a flow nor belongs to one.
    Invalid,
}

impl CtState {
    /// The state's name as rules and logs write it.
    pub fn name(self) -> &'static str {
        match self {
            CtState::New => "new",
            CtState::Established => "established",
            CtState::Related => "related",
            CtState::Invalid => "invalid",
        }
    }
}

/// The key of a flow: its endpoints in a canonical order (the lower
/// (address, port) first), so both directions find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    protocol: u8,
    a: (IpAddr, u16),
    b: (IpAddr, u16),
}

impl FlowKey {
    fn new(protocol: u8, src: (IpAddr, u16), dst: (IpAddr, u16)) -> (FlowKey, bool) {
        if src <= dst {
            (
                FlowKey {
                    protocol,
                    a: src,
                    b: dst,
                },
                true,
            )
        } else {
            (
                FlowKey {
                    protocol,
                    a: dst,
                    b: src,
                },
                false,
            )
        }
    }
}

/// Which side of a flow sent a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Who {
    Originator,
    Responder,
}

/// A TCP flow's state, as Linux conntrack names them (its transitions are
/// [`TCP_ORIGINAL`] and [`TCP_REPLY`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tcp {
    /// The originator's SYN seen.
    SynSent,
    /// The responder's SYN-ACK seen.
    SynRecv,
    Established,
    /// One FIN, from the originator …
    FinWait,
    /// … or from the responder.
    CloseWait,
    /// Both FINs, the last not acknowledged.
    LastAck,
    /// Both FINs acknowledged.
    TimeWait,
    /// A reset.
    Close,
    /// The responder's own SYN (simultaneous open).
    SynSent2,
}

/// What a segment does to a TCP flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcpMove {
    To(Tcp),
    /// Accepted as part of the flow, the state unchanged (a retransmitted
    /// SYN, a SYN-ACK in the wrong place, an ACK before the SYN-ACK …).
    Ignore,
    /// Not part of the flow: `invalid`.
    Invalid,
}

/// A FIN, from either side: the same moves (Linux's table).
const TCP_FIN_ROW: [TcpMove; 10] = {
    use Tcp::*;
    use TcpMove::{Invalid as IV, To};
    [
        IV,
        IV,
        To(FinWait),
        To(FinWait),
        To(LastAck),
        To(LastAck),
        To(LastAck),
        To(TimeWait),
        To(Close),
        IV,
    ]
};

/// A reset, from either side, closes any flow.
const TCP_RST_ROW: [TcpMove; 10] = {
    use TcpMove::{Invalid as IV, To};
    let c = To(Tcp::Close);
    [IV, c, c, c, c, c, c, c, c, c]
};

/// The transitions by segment kind (SYN, SYN-ACK, FIN, ACK, RST, none) and
/// state (none, then [`Tcp`] in its order), for the originator's segments
/// and for the responder's: Linux's `tcp_conntracks` (its "none" column is
/// used only for openings: a bare SYN).
const TCP_ORIGINAL: [[TcpMove; 10]; 6] = {
    use Tcp::*;
    use TcpMove::{Ignore as IG, Invalid as IV, To};
    [
        // syn
        [
            To(SynSent),
            To(SynSent),
            IG,
            IG,
            IG,
            IG,
            IG,
            To(SynSent),
            To(SynSent),
            To(SynSent2),
        ],
        // syn-ack
        [IV, IV, To(SynRecv), IV, IV, IV, IV, IV, IV, To(SynRecv)],
        TCP_FIN_ROW,
        // ack
        [
            To(Established),
            IV,
            To(Established),
            To(Established),
            To(CloseWait),
            To(CloseWait),
            To(TimeWait),
            To(TimeWait),
            To(Close),
            IV,
        ],
        TCP_RST_ROW,
        // none
        [IV; 10],
    ]
};

/// The responder's column of [`TCP_ORIGINAL`].
const TCP_REPLY: [[TcpMove; 10]; 6] = {
    use Tcp::*;
    use TcpMove::{Ignore as IG, Invalid as IV, To};
    [
        // syn
        [
            IV,
            To(SynSent2),
            IV,
            IV,
            IV,
            IV,
            IV,
            To(SynSent),
            IV,
            To(SynSent2),
        ],
        // syn-ack
        [IV, To(SynRecv), IG, IG, IG, IG, IG, IG, IG, To(SynRecv)],
        TCP_FIN_ROW,
        // ack
        [
            IV,
            IG,
            To(SynRecv),
            To(Established),
            To(CloseWait),
            To(CloseWait),
            To(TimeWait),
            To(TimeWait),
            To(Close),
            IG,
        ],
        TCP_RST_ROW,
        // none
        [IV; 10],
    ]
};

/// The row of a segment in the transition tables.
fn tcp_kind(flags: u8) -> usize {
    if flags & TCP_RST != 0 {
        4
    } else if flags & TCP_SYN != 0 {
        if flags & TCP_ACK != 0 {
            1
        } else {
            0
        }
    } else if flags & TCP_FIN != 0 {
        2
    } else if flags & TCP_ACK != 0 {
        3
    } else {
        5
    }
}

/// The move a segment of `who` with `flags` makes on a flow in `state`.
fn tcp_move(state: Tcp, who: Who, flags: u8) -> TcpMove {
    let col = state as usize + 1;
    let table = match who {
        Who::Originator => &TCP_ORIGINAL,
        Who::Responder => &TCP_REPLY,
    };
    table[tcp_kind(flags)][col]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Tcp(TcpTrack),
    /// UDP, ICMP echo and other protocols: packets from each side (capped).
    Datagrams {
        originator: u8,
        responder: u8,
    },
}

/// One tracked flow.
#[derive(Debug, Clone, Copy)]
struct Flow {
    key: FlowKey,
    /// The originator is `key.a` (else `key.b`).
    originator_is_a: bool,
    /// The direction the originator's packets go.
    direction: Direction,
    progress: Progress,
    expires: u64,
    /// The rule that admitted it, and its own timeouts if it has any.
    rule: u32,
    timeouts: Timeouts,
    /// Packets and bytes, originator → responder and back.
    packets: [u64; 2],
    bytes: [u64; 2],
}

impl Flow {
    fn timeout(&self) -> u32 {
        let t = &self.timeouts;
        match (self.key.protocol, self.progress) {
            (_, Progress::Tcp(track)) => match track.state {
                Tcp::SynSent => t.tcp_first,
                Tcp::SynRecv | Tcp::SynSent2 => t.tcp_opening,
                Tcp::Established => t.tcp_established,
                Tcp::FinWait | Tcp::CloseWait => t.tcp_closing,
                Tcp::LastAck | Tcp::TimeWait => t.tcp_finwait,
                Tcp::Close => t.tcp_closed,
            },
            (1 | 58, _) => t.icmp_first,
            (
                protocol,
                Progress::Datagrams {
                    originator,
                    responder,
                },
            ) => {
                let (first, single, multiple) = if protocol == 17 {
                    (t.udp_first, t.udp_single, t.udp_multiple)
                } else {
                    (t.other_first, t.other_single, t.other_multiple)
                };
                if responder > 0 {
                    multiple
                } else if originator > 1 {
                    single
                } else {
                    first
                }
            }
        }
    }

    /// Whether the responder has answered (a packet the flow took).
    fn replied(&self) -> bool {
        match self.progress {
            Progress::Tcp(t) => t.seen_reply,
            Progress::Datagrams { responder, .. } => responder > 0,
        }
    }

    /// What a policy re-check and a listing see of it.
    fn view(&self) -> FlowView {
        let (src, dst) = if self.originator_is_a {
            (self.key.a, self.key.b)
        } else {
            (self.key.b, self.key.a)
        };
        FlowView {
            direction: self.direction,
            protocol: self.key.protocol,
            src: src.0,
            dst: dst.0,
            ports: (src.1, dst.1),
            rule: self.rule,
        }
    }
}

/// What [`Tracker::classify`] found, to hand to [`Tracker::commit`] if the
/// rules accept the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// The packet's state.
    pub state: CtState,
    /// The rule that admitted the flow (for `Established` and `Related`).
    pub rule: Option<u32>,
    what: Pending,
}

impl Classified {
    /// Whether the packet comes from the flow's originator (`None`: it
    /// belongs to no flow, or is an ICMP error related to one).
    pub fn from_originator(&self) -> Option<bool> {
        match self.what {
            Pending::Open { .. } => Some(true),
            Pending::Advance { who, .. } => Some(who == Who::Originator),
            Pending::RelatedTo { .. } | Pending::Nothing => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Nothing,
    Open {
        key: FlowKey,
        originator_is_a: bool,
        direction: Direction,
        replaces: Option<u32>,
        len: usize,
        /// The opening SYN.
        seg: Option<Segment>,
    },
    Advance {
        slot: u32,
        key: FlowKey,
        who: Who,
        seg: Option<Segment>,
        len: usize,
    },
    RelatedTo {
        slot: u32,
        key: FlowKey,
    },
}

/// Counters of the table (all since the tracker was made).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtCounters {
    /// Flows entered.
    pub inserted: u64,
    /// Flows removed at their timeout.
    pub expired: u64,
    /// Flows removed because a new policy no longer admits them.
    pub removed_by_policy: u64,
    /// New flows refused because the table was full.
    pub table_full: u64,
    /// Packets classified invalid.
    pub invalid: u64,
    /// Of those, TCP segments outside their flow's window (a blind
    /// attacker's resets and data among them).
    pub out_of_window: u64,
    /// ICMP errors classified related.
    pub related: u64,
}

/// What a policy re-check sees of a flow: its first packet's five-tuple
/// (ports or ICMP type/code as [`FiveTuple`] has them), its direction and
/// the rule that admitted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowView {
    /// The originator's packets' direction.
    pub direction: Direction,
    /// Protocol.
    pub protocol: u8,
    /// Originator.
    pub src: IpAddr,
    /// Responder.
    pub dst: IpAddr,
    /// Originator's and responder's ports (for ICMP echo: the identifier
    /// twice).
    pub ports: (u16, u16),
    /// The admitting rule.
    pub rule: u32,
}

/// The connection table.
#[derive(Debug)]
pub struct Tracker {
    index: HashMap<FlowKey, u32>,
    slots: Vec<Option<Flow>>,
    free: Vec<u32>,
    capacity: usize,
    sweep: usize,
    defaults: Timeouts,
    counters: CtCounters,
}

/// How many slots an insertion looks at for expired flows.
const SWEEP_STEP: usize = 8;

/// The transport bytes of a whole datagram (not a later fragment).
fn l4(pkt: &[u8]) -> Option<(u8, &[u8])> {
    let (protocol, at, len) = match pkt.first().map(|b| b >> 4) {
        Some(4) => {
            let p = Ipv4Packet::new_checked(pkt).ok()?;
            if p.frag_offset() != 0 {
                return None;
            }
            (p.protocol(), p.header_len(), p.payload().len())
        }
        Some(6) => {
            let p = Ipv6Packet::new_checked(pkt).ok()?;
            let u = p.upper_layer_fragment().ok()?;
            if matches!(u.fragment, crate::wire::ip::Fragment::Later { .. }) {
                return None;
            }
            // Where the view's bytes start within `pkt`.
            let at = (u.bytes.as_ptr() as usize).checked_sub(pkt.as_ptr() as usize)?;
            (u.protocol, at, u.bytes.len())
        }
        _ => return None,
    };
    Some((protocol, pkt.get(at..at.checked_add(len)?)?))
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// ICMP message kinds the tracker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Icmp {
    EchoRequest(u16),
    EchoReply(u16),
    /// An error quoting a datagram (the quote's bytes).
    Error,
    Other,
}

fn icmp_kind(protocol: u8, l4: &[u8]) -> Option<Icmp> {
    let ty = *l4.first()?;
    let id = || be16(l4, 4);
    Some(match (protocol, ty) {
        (1, 8) | (58, 128) => Icmp::EchoRequest(id()?),
        (1, 0) | (58, 129) => Icmp::EchoReply(id()?),
        (1, 3 | 11 | 12) | (58, 1..=4) => Icmp::Error,
        _ => Icmp::Other,
    })
}

/// The quoted datagram of an ICMP error: (protocol, source, destination,
/// source port, destination port), the ports being the echo identifier
/// for a quoted echo request. Only the quote's first 8 transport bytes are
/// read (all RFC 792 promises).
fn quoted(protocol: u8, l4: &[u8]) -> Option<(u8, IpAddr, IpAddr, u16, u16)> {
    let q = l4.get(8..)?;
    let (proto, src, dst, t) = if protocol == 1 {
        if q.first()? >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(q[0] & 0x0f) * 4;
        if ihl < 20 {
            return None;
        }
        let frag = be16(q, 6)? & 0x1fff;
        if frag != 0 {
            return None;
        }
        let a: [u8; 4] = q.get(12..16)?.try_into().ok()?;
        let b: [u8; 4] = q.get(16..20)?.try_into().ok()?;
        (
            *q.get(9)?,
            IpAddr::V4(Ipv4Addr::from(a)),
            IpAddr::V4(Ipv4Addr::from(b)),
            q.get(ihl..)?,
        )
    } else {
        if q.first()? >> 4 != 6 {
            return None;
        }
        let a: [u8; 16] = q.get(8..24)?.try_into().ok()?;
        let b: [u8; 16] = q.get(24..40)?.try_into().ok()?;
        // Extension headers in a quote are not followed: such a quote
        // relates to nothing.
        (
            *q.get(6)?,
            IpAddr::V6(Ipv6Addr::from(a)),
            IpAddr::V6(Ipv6Addr::from(b)),
            q.get(40..)?,
        )
    };
    let (sp, dp) = match proto {
        6 | 17 | 132 | 136 => (be16(t, 0)?, be16(t, 2)?),
        1 | 58 => match icmp_kind(proto, t)? {
            Icmp::EchoRequest(id) | Icmp::EchoReply(id) => (id, id),
            _ => return None,
        },
        _ => (0, 0),
    };
    Some((proto, src, dst, sp, dp))
}

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_URG: u8 = 0x20;
const TCP_ECE: u8 = 0x40;
const TCP_CWR: u8 = 0x80;

/// Whether a TCP segment's flags are a combination TCP sends (PSH, ECE and
/// CWR aside): a SYN, a SYN-ACK, a reset, a FIN with ACK, an ACK, each with
/// or without URG where TCP allows it. Others (no flag at all, FIN without
/// ACK, SYN with FIN or RST, "Christmas tree" segments) are `invalid`,
/// whether they would open a flow or belong to one, as Linux conntrack
/// judges them (`tcp_valid_flags`).
fn tcp_flags_valid(flags: u8) -> bool {
    let f = flags & !(TCP_ECE | TCP_CWR | TCP_PSH);
    [
        TCP_SYN,
        TCP_SYN | TCP_URG,
        TCP_SYN | TCP_ACK,
        TCP_RST,
        TCP_RST | TCP_ACK,
        TCP_FIN | TCP_ACK,
        TCP_FIN | TCP_ACK | TCP_URG,
        TCP_ACK,
        TCP_ACK | TCP_URG,
    ]
    .contains(&f)
}

impl Tracker {
    /// An empty table for at most `capacity` flows, with these default
    /// timeouts.
    pub fn new(capacity: usize, defaults: Timeouts) -> Tracker {
        Tracker {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            capacity,
            sweep: 0,
            defaults,
            counters: CtCounters::default(),
        }
    }

    /// The most flows it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Flows held now (expired ones not yet reclaimed included).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether it holds no flow.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Its counters.
    pub fn counters(&self) -> CtCounters {
        self.counters
    }

    fn live(&self, slot: u32, now: Timestamp) -> Option<&Flow> {
        self.slots
            .get(slot as usize)?
            .as_ref()
            .filter(|f| f.expires > now.0)
    }

    fn find(&self, key: &FlowKey, now: Timestamp) -> Option<u32> {
        let slot = *self.index.get(key)?;
        self.live(slot, now).map(|_| slot)
    }

    /// What `pkt` (whose five-tuple is `t`, going `dir`) is to the table at
    /// `now`. Changes nothing.
    pub fn classify(
        &mut self,
        dir: Direction,
        pkt: &[u8],
        t: &FiveTuple,
        now: Timestamp,
    ) -> Classified {
        let mut keep = None;
        let mut out_of_window = false;
        let c = self.classify_inner(dir, pkt, t, now, &mut keep, &mut out_of_window);
        if c.state == CtState::Invalid {
            self.counters.invalid += 1;
            self.counters.out_of_window += u64::from(out_of_window);
        }
        // What an out-of-window segment leaves behind (see
        // `TcpTrack::out_of_window`).
        if let Some((slot, track)) = keep {
            if let Some(Some(f)) = self.slots.get_mut(slot as usize) {
                f.progress = Progress::Tcp(track);
            }
        }
        c
    }

    fn classify_inner(
        &self,
        dir: Direction,
        pkt: &[u8],
        t: &FiveTuple,
        now: Timestamp,
        keep: &mut Option<(u32, TcpTrack)>,
        out_of_window: &mut bool,
    ) -> Classified {
        const INVALID: Classified = Classified {
            state: CtState::Invalid,
            rule: None,
            what: Pending::Nothing,
        };
        if t.ports_unknown {
            return INVALID;
        }
        let Some((protocol, l4)) = l4(pkt) else {
            return INVALID;
        };
        if protocol != t.protocol {
            return INVALID;
        }
        let len = pkt.len();
        let mut seg = None;
        // ICMP: echo by identifier, errors by their quote.
        let (sp, dp, opens) = match protocol {
            1 | 58 => match icmp_kind(protocol, l4) {
                Some(Icmp::EchoRequest(id)) => (id, id, true),
                Some(Icmp::EchoReply(id)) => (id, id, false),
                Some(Icmp::Error) => return self.related(dir, protocol, l4, t, now),
                _ => return INVALID,
            },
            6 => {
                let Some((sp, dp)) = t.ports else {
                    return INVALID;
                };
                let Some(flags) = t.tcp_flags else {
                    return INVALID;
                };
                if !tcp_flags_valid(flags) {
                    return INVALID;
                }
                let Some(s) = Segment::parse(l4).filter(|s| s.flags == flags) else {
                    return INVALID;
                };
                seg = Some(s);
                (
                    sp,
                    dp,
                    flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN,
                )
            }
            _ => {
                let (sp, dp) = t.ports.unwrap_or((0, 0));
                (sp, dp, true)
            }
        };
        let (key, src_is_a) = FlowKey::new(protocol, (t.src, sp), (t.dst, dp));
        // The packet opens a flow (in place of `replaces`, if any).
        let opening = |replaces: Option<u32>| Classified {
            state: CtState::New,
            rule: None,
            what: Pending::Open {
                key,
                originator_is_a: src_is_a,
                direction: dir,
                replaces,
                len,
                seg,
            },
        };
        if let Some(slot) = self.find(&key, now) {
            let f = self.slots[slot as usize].as_ref().expect("live slot");
            let who = if src_is_a == f.originator_is_a {
                Who::Originator
            } else {
                Who::Responder
            };
            // A packet's side must go the side's way.
            let expected = match who {
                Who::Originator => f.direction,
                Who::Responder => opposite(f.direction),
            };
            if dir != expected {
                return INVALID;
            }
            // TCP: the segment must be one the flow's state and window
            // admit (judged on a copy: classifying changes nothing); a SYN
            // on a flow that is over may open a new one.
            if let (Progress::Tcp(mut track), Some(s)) = (f.progress, seg.as_ref()) {
                let before = track;
                let o = track.segment(who, s);
                match o {
                    Outcome::Invalid | Outcome::OutOfWindow => {
                        if track != before {
                            *keep = Some((slot, track));
                        }
                        *out_of_window = o == Outcome::OutOfWindow;
                        return INVALID;
                    }
                    Outcome::Reopens => return opening(Some(slot)),
                    Outcome::Taken | Outcome::TakenAndGone | Outcome::Ignored => {}
                }
            }
            // ICMP echo: requests from the originator, replies from the
            // responder (`opens` is true for a request).
            if matches!(protocol, 1 | 58) && opens != (who == Who::Originator) {
                return INVALID;
            }
            // Until the responder has answered, the originator's packets
            // are still `new` (Linux's `IP_CT_NEW` before `SEEN_REPLY`):
            // the rules that let the first one in decide on each again, so
            // that a rule for new connections that takes only SYNs also
            // holds for what the opener sends before any answer.
            let (state, rule) = if who == Who::Originator && !f.replied() {
                (CtState::New, None)
            } else {
                (CtState::Established, Some(f.rule))
            };
            return Classified {
                state,
                rule,
                what: Pending::Advance {
                    slot,
                    key,
                    who,
                    seg,
                    len,
                },
            };
        }
        if !opens {
            return INVALID;
        }
        opening(self.index.get(&key).copied())
    }

    fn related(
        &self,
        dir: Direction,
        protocol: u8,
        l4: &[u8],
        t: &FiveTuple,
        now: Timestamp,
    ) -> Classified {
        const INVALID: Classified = Classified {
            state: CtState::Invalid,
            rule: None,
            what: Pending::Nothing,
        };
        let Some((qp, qsrc, qdst, qsp, qdp)) = quoted(protocol, l4) else {
            return INVALID;
        };
        // The error goes back to the host that sent the quoted datagram.
        if qsrc != t.dst || qsrc.is_ipv4() != t.src.is_ipv4() {
            return INVALID;
        }
        let (key, qsrc_is_a) = FlowKey::new(qp, (qsrc, qsp), (qdst, qdp));
        let Some(slot) = self.find(&key, now) else {
            return INVALID;
        };
        let f = self.slots[slot as usize].as_ref().expect("live slot");
        // The quoted datagram went the other way than the error.
        let quoted_dir = if qsrc_is_a == f.originator_is_a {
            f.direction
        } else {
            opposite(f.direction)
        };
        if quoted_dir == dir {
            return INVALID;
        }
        Classified {
            state: CtState::Related,
            rule: Some(f.rule),
            what: Pending::RelatedTo { slot, key },
        }
    }

    /// The key a slot holds, if it holds a flow.
    fn slot_key(&self, slot: u32) -> Option<FlowKey> {
        self.slots.get(slot as usize)?.as_ref().map(|f| f.key)
    }

    /// Whether the flow `c` would open fits (reclaiming expired flows when
    /// the table is full); `false` is counted as `table_full`, and the
    /// packet must be dropped. Anything but an opening always fits.
    pub fn has_room(&mut self, c: &Classified, now: Timestamp) -> bool {
        let Pending::Open { key, replaces, .. } = c.what else {
            return true;
        };
        if replaces.is_some_and(|old| self.slot_key(old) == Some(key)) {
            return true;
        }
        self.make_room(now)
    }

    /// Whether one more flow fits, reclaiming every expired flow when the
    /// table is full; `false` is counted as `table_full`.
    fn make_room(&mut self, now: Timestamp) -> bool {
        if self.index.len() >= self.capacity {
            self.reclaim(now, self.slots.len());
        }
        if self.index.len() >= self.capacity {
            self.counters.table_full += 1;
            return false;
        }
        true
    }

    /// Records an accepted packet: enters the new flow it opens (admitted
    /// by `rule`, with `timeouts` or the table's defaults), or moves its
    /// flow on. Returns `false` when a new flow found the table full
    /// (counted as `table_full`). It may be called after the packet has
    /// gone on ([`Tracker::has_room`] first), with the table changed in
    /// between by the other direction: a flow that is no longer where
    /// `c` found it is left alone, and an opening someone else entered
    /// meanwhile is not entered twice.
    pub fn commit(
        &mut self,
        c: &Classified,
        rule: u32,
        timeouts: Option<Timeouts>,
        now: Timestamp,
    ) -> bool {
        match c.what {
            Pending::Nothing => true,
            Pending::RelatedTo { slot, key } => {
                self.counters.related += 1;
                if let Some(Some(f)) = self.slots.get_mut(slot as usize) {
                    if f.key == key && matches!(f.key.protocol, 1 | 58) {
                        let e = now.0 + u64::from(f.timeouts.icmp_error);
                        f.expires = f.expires.min(e);
                    }
                }
                true
            }
            Pending::Advance {
                slot,
                key,
                who,
                seg,
                len,
            } => {
                let Some(Some(f)) = self.slots.get_mut(slot as usize) else {
                    return true;
                };
                if f.key != key {
                    return true;
                }
                let outcome = match (&mut f.progress, seg) {
                    (Progress::Tcp(track), Some(s)) => track.segment(who, &s),
                    (Progress::Tcp(_), None) => Outcome::Invalid,
                    (p, _) => {
                        *p = advance(*p, who);
                        Outcome::Taken
                    }
                };
                // An ignored segment counts, but neither moves the flow
                // nor keeps it alive longer; one the flow no longer takes
                // (the other direction moved it meanwhile) changes nothing.
                if matches!(
                    outcome,
                    Outcome::Invalid | Outcome::OutOfWindow | Outcome::Reopens
                ) {
                    return true;
                }
                let i = usize::from(who == Who::Responder);
                f.packets[i] += 1;
                f.bytes[i] += len as u64;
                if outcome == Outcome::Taken {
                    f.expires = now.0 + u64::from(f.timeout());
                }
                // A reset before the responder has answered anything ends
                // the flow at once (Linux: "if only reply is a RST … delete
                // the conntrack immediately"): a refused connection leaves
                // nothing for a later forged SYN-ACK to ride on.
                if outcome == Outcome::TakenAndGone {
                    self.remove(slot);
                }
                true
            }
            Pending::Open {
                key,
                originator_is_a,
                direction,
                replaces,
                len,
                seg,
            } => {
                if let Some(old) = replaces {
                    if self.slot_key(old) == Some(key) {
                        self.remove(old);
                    }
                }
                if self.index.contains_key(&key) {
                    return true;
                }
                if !self.make_room(now) {
                    return false;
                }
                let progress = if let Some(syn) = seg.filter(|_| key.protocol == 6) {
                    Progress::Tcp(TcpTrack::open(&syn))
                } else {
                    Progress::Datagrams {
                        originator: 1,
                        responder: 0,
                    }
                };
                let mut flow = Flow {
                    key,
                    originator_is_a,
                    direction,
                    progress,
                    expires: 0,
                    rule,
                    timeouts: timeouts.unwrap_or(self.defaults),
                    packets: [1, 0],
                    bytes: [len as u64, 0],
                };
                flow.expires = now.0 + u64::from(flow.timeout());
                let slot = match self.free.pop() {
                    Some(s) => {
                        self.slots[s as usize] = Some(flow);
                        s
                    }
                    None => {
                        self.slots.push(Some(flow));
                        (self.slots.len() - 1) as u32
                    }
                };
                self.index.insert(key, slot);
                self.counters.inserted += 1;
                // Amortised reclaiming: a few slots per new flow.
                self.reclaim(now, SWEEP_STEP);
                true
            }
        }
    }

    fn remove(&mut self, slot: u32) {
        if let Some(f) = self.slots.get_mut(slot as usize).and_then(Option::take) {
            self.index.remove(&f.key);
            self.free.push(slot);
        }
    }

    /// Removes expired flows among the next `budget` slots.
    fn reclaim(&mut self, now: Timestamp, budget: usize) {
        let n = self.slots.len();
        if n == 0 {
            return;
        }
        for _ in 0..budget.min(n) {
            self.sweep = (self.sweep + 1) % n;
            let expired = matches!(&self.slots[self.sweep], Some(f) if f.expires <= now.0);
            if expired {
                self.remove(self.sweep as u32);
                self.counters.expired += 1;
            }
        }
    }

    /// Removes every expired flow (the pump calls it now and then).
    pub fn expire(&mut self, now: Timestamp) {
        self.reclaim(now, self.slots.len());
    }

    /// A new policy: each live flow is shown to `admits` as its first packet
    /// was; a flow it no longer admits is removed, one it admits keeps its
    /// state under the rule it names now. Returns how many were removed.
    pub fn recheck(&mut self, mut admits: impl FnMut(&FlowView) -> Option<u32>) -> usize {
        let mut removed = 0;
        for slot in 0..self.slots.len() {
            let Some(f) = self.slots[slot].as_mut() else {
                continue;
            };
            match admits(&f.view()) {
                Some(rule) => f.rule = rule,
                None => {
                    self.remove(slot as u32);
                    removed += 1;
                }
            }
        }
        self.counters.removed_by_policy += removed as u64;
        removed
    }

    /// Every live flow (for `policy show`-like listings and tests), with its
    /// state's name, seconds left, and packets each way.
    pub fn flows(&self, now: Timestamp) -> Vec<(FlowView, &'static str, u64, [u64; 2])> {
        self.slots
            .iter()
            .flatten()
            .filter(|f| f.expires > now.0)
            .map(|f| {
                (
                    f.view(),
                    state_name(f.progress),
                    f.expires - now.0,
                    f.packets,
                )
            })
            .collect()
    }
}

fn opposite(d: Direction) -> Direction {
    match d {
        Direction::Outbound => Direction::Inbound,
        Direction::Inbound => Direction::Outbound,
    }
}

fn state_name(p: Progress) -> &'static str {
    match p {
        Progress::Tcp(t) => match t.state {
            Tcp::SynSent => "first",
            Tcp::SynRecv | Tcp::SynSent2 => "opening",
            Tcp::Established => "established",
            Tcp::FinWait | Tcp::CloseWait => "closing",
            Tcp::LastAck | Tcp::TimeWait => "fin-wait",
            Tcp::Close => "closed",
        },
        Progress::Datagrams { responder: 0, .. } => "single",
        Progress::Datagrams { .. } => "multiple",
    }
}

/// A datagram flow (UDP, ICMP echo, others) after a packet from `who`.
fn advance(p: Progress, who: Who) -> Progress {
    match p {
        Progress::Tcp(_) => p,
        Progress::Datagrams {
            originator,
            responder,
        } => match who {
            Who::Originator => Progress::Datagrams {
                originator: originator.saturating_add(1),
                responder,
            },
            Who::Responder => Progress::Datagrams {
                originator,
                responder: responder.saturating_add(1),
            },
        },
    }
}

#[cfg(test)]
mod tests;
