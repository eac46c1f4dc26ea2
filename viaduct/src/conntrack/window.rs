//! TCP sequence and window tracking: which segments of a tracked TCP flow
//! are in its window, after Guido van Rooij's "Real Stateful TCP Packet
//! Filtering in IP Filter" as Linux conntrack implements it
//! (`nf_conntrack_proto_tcp.c`: `tcp_in_window` and the state handling
//! around it in `nf_conntrack_tcp_packet`), so that the Viaduct and
//! nftables judge the same segment alike (the differential test).
//!
//! Per side of a flow: the highest sequence number sent (`end`), the
//! highest the other side's window allows (`maxend`), the largest window
//! the side was offered (`maxwin`), its window scale and the highest ACK it
//! sent. A segment is checked against them:
//! - its sequence number must lie below the receiver's window's end, and
//!   its ACK must not acknowledge data not yet sent: else it is `invalid`
//!   (a blind attacker's reset or data guesses wrong here);
//! - data entirely below the window (an old retransmission) and an ACK far
//!   below the last one (an overly delayed packet) are part of the flow but
//!   change nothing (Linux's "ignore");
//! - a reset must carry a sequence number at or above the highest the other
//!   side acknowledged; one that is in the window but not exactly where the
//!   peer's data ends leaves the flow as it is (RFC 5961: the receiver
//!   answers with a challenge ACK), only the exact one closes it.
//!
//! Everything here is pure: [`TcpTrack::segment`] changes the track it is
//! given, so the tracker runs it on a copy to classify and on the flow
//! itself to commit.

use super::{tcp_move, Tcp, TcpMove, Who, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// `a` before `b` in sequence space.
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a` after `b` in sequence space.
fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// The least window the ACK check allows below the receiver's end (Linux's
/// `MAXACKWINCONST`).
const MAX_ACK_WINDOW: u32 = 66_000;
/// RFC 7323's largest window scale.
const MAX_WSCALE: u8 = 14;

/// The side sent a window scale option.
const F_WSCALE: u8 = 0x01;
/// The side sent SACK-permitted.
const F_SACK_PERM: u8 = 0x02;
/// The side closed first (its FIN moved the flow to `FIN_WAIT`).
const F_CLOSE_INIT: u8 = 0x04;
/// `maxack` holds an ACK the side sent.
const F_MAXACK_SET: u8 = 0x20;
/// `last_flags` only: an ignored SYN in `LAST_ACK` may draw an RFC 5961
/// challenge ACK, which must not be taken as acknowledging the last FIN.
const F_EXP_CHALLENGE_ACK: u8 = 0x40;

/// Segment kinds, as rows of the transition tables ([`super::tcp_kind`])
const K_SYN: u8 = 0;
const K_SYNACK: u8 = 1;
const K_FIN: u8 = 2;
const K_ACK: u8 = 3;
const K_RST: u8 = 4;
const K_NONE: u8 = 5;

/// What the tracker needs of a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Segment {
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    /// The window field, unscaled.
    pub win: u16,
    /// `seq` plus the payload's length, plus one for SYN and one for FIN.
    pub end: u32,
    /// The highest right edge of its SACK blocks above `ack` (else `ack`).
    pub sack: u32,
    /// Options it carries (a SYN's window scale and SACK-permitted).
    pub options: Option<Options>,
}

/// A SYN's options that tracking uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Options {
    pub wscale: Option<u8>,
    pub sack_perm: bool,
}

impl Segment {
    /// Parses the TCP header at the start of `l4` (the whole segment):
    /// `None` when it is truncated or its data offset is impossible
    /// (such a segment is `invalid`).
    pub fn parse(l4: &[u8]) -> Option<Segment> {
        let word = |at: usize| -> Option<u32> {
            Some(u32::from_be_bytes(l4.get(at..at + 4)?.try_into().ok()?))
        };
        let seq = word(4)?;
        let ack = word(8)?;
        let doff = usize::from(*l4.get(12)? >> 4) * 4;
        let flags = *l4.get(13)?;
        let win = u16::from_be_bytes([*l4.get(14)?, *l4.get(15)?]);
        if doff < 20 || doff > l4.len() {
            return None;
        }
        let payload = (l4.len() - doff) as u32;
        let end = seq
            .wrapping_add(payload)
            .wrapping_add(u32::from(flags & TCP_SYN != 0))
            .wrapping_add(u32::from(flags & TCP_FIN != 0));
        let opts = &l4[20..doff];
        Some(Segment {
            flags,
            seq,
            ack,
            win,
            end,
            sack: sack_edge(opts, ack),
            options: (!opts.is_empty()).then(|| parse_options(opts)),
        })
    }

    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    fn kind(&self) -> u8 {
        super::tcp_kind(self.flags) as u8
    }
}

/// Walks TCP options as Linux does (`tcp_options`, `tcp_sack`): EOL ends,
/// NOP is one byte, any other option has a length of at least 2 that fits;
/// a malformed option ends the walk. Calls `f(kind, body)` for each.
fn walk_options(mut opts: &[u8], mut f: impl FnMut(u8, &[u8]) -> bool) {
    while let Some((&kind, rest)) = opts.split_first() {
        match kind {
            0 => return,
            1 => opts = rest,
            _ => {
                let Some(&size) = rest.first() else { return };
                let size = usize::from(size);
                if size < 2 || size > opts.len() {
                    return;
                }
                if !f(kind, &opts[2..size]) {
                    return;
                }
                opts = &opts[size..];
            }
        }
    }
}

fn parse_options(opts: &[u8]) -> Options {
    let mut o = Options::default();
    walk_options(opts, |kind, body| {
        match (kind, body.len()) {
            (4, 0) => o.sack_perm = true,
            (3, 1) => o.wscale = Some(body[0].min(MAX_WSCALE)),
            _ => {}
        }
        true
    });
    o
}

/// The highest right edge of the first SACK option's blocks, if above
/// `ack`.
fn sack_edge(opts: &[u8], ack: u32) -> u32 {
    let mut sack = ack;
    walk_options(opts, |kind, body| {
        if kind == 5 && !body.is_empty() && body.len() % 8 == 0 {
            for block in body.chunks_exact(8) {
                let edge = u32::from_be_bytes([block[4], block[5], block[6], block[7]]);
                if after(edge, sack) {
                    sack = edge;
                }
            }
            return false;
        }
        true
    });
    sack
}

/// One side of a flow (Linux's `ip_ct_tcp_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Side {
    end: u32,
    maxend: u32,
    maxwin: u32,
    maxack: u32,
    scale: u8,
    flags: u8,
}

impl Side {
    /// Takes a SYN's options (none: the side's flags stay as they were).
    fn options(&mut self, o: Option<Options>) {
        let Some(o) = o else { return };
        self.scale = 0;
        self.flags = 0;
        if o.sack_perm {
            self.flags |= F_SACK_PERM;
        }
        if let Some(s) = o.wscale {
            self.scale = s;
            self.flags |= F_WSCALE;
        }
    }
}

/// A TCP flow's state and windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TcpTrack {
    pub state: Tcp,
    /// The originator's side, then the responder's.
    seen: [Side; 2],
    /// The responder has sent a segment the flow took.
    pub seen_reply: bool,
    /// The handshake completed (Linux's `IPS_ASSURED`).
    assured: bool,
    /// Both sides sent a SYN (simultaneous open).
    simultaneous: bool,
    /// The last segment taken (or ignored): its kind, side and numbers.
    last_kind: u8,
    last_who: Who,
    last_seq: u32,
    last_ack: u32,
    last_end: u32,
    last_win: u16,
    last_wscale: u8,
    last_flags: u8,
}

/// What a segment is to a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// In the window: the flow moved on.
    Taken,
    /// Taken, and the flow ends at once (a reset before any answer).
    TakenAndGone,
    /// Part of the flow, but it changes nothing (an old retransmission, an
    /// overly delayed ACK, a segment the state table ignores).
    Ignored,
    /// A SYN on a flow that is over: it opens a new one.
    Reopens,
    /// Not part of the flow.
    Invalid,
    /// Not part of the flow: outside its window (a kind of `Invalid`,
    /// counted on its own).
    OutOfWindow,
}

impl TcpTrack {
    /// The flow an opening SYN starts (Linux's `tcp_new`, then the SYN
    /// itself through the window, which always takes it).
    pub fn open(syn: &Segment) -> TcpTrack {
        let mut seen = [Side::default(); 2];
        seen[0].end = syn.end;
        seen[0].maxend = syn.end;
        seen[0].maxwin = u32::from(syn.win).max(1);
        seen[0].options(syn.options);
        let mut t = TcpTrack {
            state: Tcp::SynSent,
            seen,
            seen_reply: false,
            assured: false,
            simultaneous: false,
            last_kind: K_NONE,
            last_who: Who::Originator,
            last_seq: 0,
            last_ack: 0,
            last_end: 0,
            last_win: 0,
            last_wscale: 0,
            last_flags: 0,
        };
        let r = t.in_window(Who::Originator, syn);
        debug_assert_eq!(r, Window::Accept);
        t.last_kind = K_SYN;
        t.last_who = Who::Originator;
        t
    }

    /// Takes a segment from `who` (Linux's `nf_conntrack_tcp_packet` for a
    /// known flow), changing the track as Linux would.
    pub fn segment(&mut self, who: Who, seg: &Segment) -> Outcome {
        let out = self.segment_inner(who, seg);
        if who == Who::Responder && matches!(out, Outcome::Taken | Outcome::Ignored) {
            self.seen_reply = true;
        }
        out
    }

    fn segment_inner(&mut self, who: Who, seg: &Segment) -> Outcome {
        let kind = seg.kind();
        let d = who as usize;
        let old = self.state;
        // `None`: the table ignores the segment.
        let mut new = match tcp_move(old, who, seg.flags) {
            TcpMove::To(s) => Some(s),
            TcpMove::Ignore => None,
            TcpMove::Invalid => return Outcome::Invalid,
        };
        let mut check_window = true;
        match new {
            Some(Tcp::SynSent) if old as u8 >= Tcp::TimeWait as u8 => {
                // A SYN after the flow closed: a new connection if this
                // side's or the other's FIN closed it, or this side reset
                // it; else the table's state may be out of step with the
                // hosts': treat it as ignored (below).
                if (self.seen[0].flags | self.seen[1].flags) & F_CLOSE_INIT != 0
                    || (self.last_who == who && self.last_kind == K_RST)
                {
                    return Outcome::Reopens;
                }
                new = None;
            }
            Some(Tcp::TimeWait)
                if old == Tcp::LastAck
                    && kind == K_ACK
                    && self.last_who != who
                    && self.last_kind == K_SYN
                    && self.last_flags & F_EXP_CHALLENGE_ACK != 0 =>
            {
                // An RFC 5961 challenge ACK to an ignored SYN, not the
                // acknowledgement of the last FIN.
                self.last_flags &= !F_EXP_CHALLENGE_ACK;
                return Outcome::Ignored;
            }
            Some(Tcp::SynSent2) => self.simultaneous = true,
            Some(Tcp::SynRecv) if who == Who::Responder && kind == K_ACK && self.simultaneous => {
                new = Some(Tcp::Established);
            }
            Some(Tcp::Close)
                if kind == K_RST
                    && matches!(
                        old,
                        Tcp::FinWait | Tcp::CloseWait | Tcp::LastAck | Tcp::TimeWait | Tcp::Close
                    ) =>
            {
                // A closing flow: its numbers may already belong to a new
                // connection on the same ports; a reset is taken as it is
                // (Linux: `tcp_can_early_drop`). It can only end a flow
                // that is ending anyway.
                check_window = false;
            }
            Some(Tcp::Close) if kind == K_RST => {
                let other = &self.seen[1 - d];
                if other.flags & F_MAXACK_SET != 0 && self.last_kind != K_SYN {
                    let established = self.state == Tcp::Established && self.assured;
                    let seq = seg.seq;
                    if seq == 0 && !established {
                        // Most likely the answer to a SYN let through.
                    } else if before(seq, other.maxack) {
                        return Outcome::Invalid;
                    } else if !established
                        || seq == other.maxack
                        || (self.last_kind == K_ACK && self.last_who == who && seq == self.last_end)
                    {
                        // Exactly where the peer expects it: it closes.
                    } else {
                        // In the window but not exact: the flow stays,
                        // for the receiver's challenge ACK.
                        new = Some(old);
                    }
                }
                if ((self.seen_reply && self.last_kind == K_SYN)
                    || (!self.assured && self.last_kind == K_ACK))
                    && self.last_who != who
                    && seg.ack == self.last_end
                {
                    // A reset answering a SYN or ACK the table let through
                    // while out of step: the segment may acknowledge what
                    // the table ignored. (Only from the other side: Linux
                    // 6.18 refuses a reset from the SYN's own side here,
                    // `nft::…packet_by_packet` steps W8 to W10 and W13.)
                    check_window = false;
                }
                if old == Tcp::SynSent
                    && self.last_kind == K_ACK
                    && self.last_who == Who::Responder
                    && seg.seq == self.last_ack
                {
                    // A reset answering a challenge ACK let through.
                    check_window = false;
                }
            }
            _ => {}
        }
        let Some(new) = new else {
            return self.ignored(who, seg, old);
        };
        if check_window {
            match self.in_window(who, seg) {
                Window::Accept => {}
                Window::Ignore => return Outcome::Ignored,
                Window::Invalid => {
                    self.out_of_window(who, kind);
                    return Outcome::OutOfWindow;
                }
            }
        }
        self.last_kind = kind;
        self.last_who = who;
        self.state = new;
        if old != new && new == Tcp::FinWait {
            self.seen[d].flags |= F_CLOSE_INIT;
        }
        if !self.seen_reply {
            // Only a reset came back, or the originator reset before any
            // answer: nothing remains for a later forged SYN-ACK to ride
            // on.
            if seg.has(TCP_RST) {
                return Outcome::TakenAndGone;
            }
        } else if !self.assured
            && matches!(old, Tcp::SynRecv | Tcp::Established)
            && new == Tcp::Established
        {
            self.assured = true;
        }
        Outcome::Taken
    }

    /// An out-of-window reset or FIN on an established flow is remembered
    /// as the last segment seen (Linux's `nf_tcp_handle_invalid`), unless
    /// it answers one from the other side: a later reset is then held to
    /// the acknowledged sequence number even after an ignored SYN. This
    /// only makes later checks stricter (a reset must then be at or past
    /// the peer's ACK). No timeout is shortened (Linux shortens it here:
    /// a blind attacker's FIN would age a long-lived flow out).
    pub fn out_of_window(&mut self, who: Who, kind: u8) {
        if !self.assured || !matches!(kind, K_RST | K_FIN) {
            return;
        }
        if self.last_who != who && matches!(self.last_kind, K_RST | K_FIN) {
            return;
        }
        self.last_kind = kind;
        self.last_who = who;
    }

    /// A segment the state table ignores: taken as part of the flow,
    /// changing nothing but what the table remembers of it, so that a
    /// SYN-ACK answering an ignored SYN can bring the table back in step.
    fn ignored(&mut self, who: Who, seg: &Segment, old: Tcp) -> Outcome {
        let kind = seg.kind();
        if kind == K_SYNACK
            && self.last_kind == K_SYN
            && self.last_who != who
            && seg.ack == self.last_end
        {
            // This SYN-ACK acknowledges a SYN the table ignored: the hosts
            // are in step and the table is not. Start over from that SYN.
            let l = self.last_who as usize;
            self.seen[l] = Side {
                end: self.last_end,
                maxend: self.last_end,
                maxwin: u32::from(self.last_win).max(1),
                maxack: 0,
                scale: self.last_wscale,
                flags: self.last_flags & !F_EXP_CHALLENGE_ACK,
            };
            self.seen[1 - l] = Side::default();
            return match self.in_window(who, seg) {
                Window::Accept => {
                    self.last_kind = kind;
                    self.last_who = who;
                    self.state = Tcp::SynRecv;
                    Outcome::Taken
                }
                Window::Ignore => Outcome::Ignored,
                Window::Invalid => Outcome::OutOfWindow,
            };
        }
        self.last_kind = kind;
        self.last_who = who;
        self.last_seq = seg.seq;
        self.last_end = seg.end;
        self.last_win = seg.win;
        if kind == K_SYN && who == Who::Originator {
            self.last_flags = 0;
            self.last_wscale = 0;
            let o = seg.options.unwrap_or_default();
            if let Some(s) = o.wscale {
                self.last_flags |= F_WSCALE;
                self.last_wscale = s;
            }
            if o.sack_perm {
                self.last_flags |= F_SACK_PERM;
            }
            if old == Tcp::LastAck {
                self.last_flags |= F_EXP_CHALLENGE_ACK;
            }
        }
        if old == Tcp::SynSent && kind == K_ACK && who == Who::Responder {
            // Perhaps a challenge ACK answering the SYN: a reset with
            // this sequence number then answers it.
            self.last_ack = seg.ack;
        }
        Outcome::Ignored
    }

    /// Linux's `tcp_in_window` (without NAT's sequence offsets).
    fn in_window(&mut self, who: Who, seg: &Segment) -> Window {
        let d = who as usize;
        let (s, r) = (d, 1 - d);
        let syn = seg.has(TCP_SYN);
        let has_ack = seg.has(TCP_ACK);
        let mut seq = seg.seq;
        let mut ack = seg.ack;
        let mut sack = if self.seen[r].flags & F_SACK_PERM != 0 {
            seg.sack
        } else {
            seg.ack
        };
        let mut end = seg.end;
        let mut win = u32::from(seg.win);

        if self.seen[s].maxwin == 0 {
            if syn {
                self.init_sender(s, seg);
                if !has_ack {
                    // Simultaneous open.
                    return Window::Accept;
                }
            } else {
                // The side's first segment is not a SYN: take what it says.
                let sender = &mut self.seen[s];
                sender.end = end;
                let swin = win.checked_shl(u32::from(sender.scale)).unwrap_or(0);
                sender.maxwin = swin.max(1);
                sender.maxend = end.wrapping_add(sender.maxwin);
                if self.seen[r].maxwin == 0 {
                    self.seen[r].end = sack;
                    self.seen[r].maxend = sack;
                } else if sack == self.seen[r].end.wrapping_add(1) {
                    // Likely the answer to a keepalive.
                    self.seen[r].end = self.seen[r].end.wrapping_add(1);
                }
            }
        } else if syn
            && after(end, self.seen[s].end)
            && matches!(self.state, Tcp::SynSent | Tcp::SynRecv)
        {
            // A new SYN (or SYN-ACK) with a higher sequence number: the
            // host started over (RFC 793), take it as the side's first.
            self.init_sender(s, seg);
            if who == Who::Responder && !has_ack {
                return Window::Accept;
            }
        }

        if !has_ack || (seg.has(TCP_RST) && seg.ack == 0) {
            // No ACK (or a reset with a zero one): pretend it acknowledges
            // everything seen.
            ack = self.seen[r].end;
            sack = ack;
        }
        if seg.has(TCP_RST) && seq == 0 && self.state == Tcp::SynSent {
            // A reset answering the SYN.
            seq = self.seen[s].end;
            end = seq;
        }

        let sender = self.seen[s];
        let receiver = self.seen[r];
        let max_ack_window = sender.maxwin.max(MAX_ACK_WINDOW);
        if !before(seq, sender.maxend.wrapping_add(1)) {
            // Beyond the receiver's window. A TCP that sends a little more
            // than the window allowed is tolerated: the data is recorded
            // (so that its ACK is not "data never seen"), the segment
            // ignored.
            let overshot = end.wrapping_sub(sender.maxend).wrapping_add(1);
            let ack_ok = after(
                sack,
                receiver.end.wrapping_sub(max_ack_window).wrapping_sub(1),
            );
            let in_recv_win = receiver.maxwin != 0
                && after(
                    end,
                    sender.end.wrapping_sub(receiver.maxwin).wrapping_sub(1),
                );
            if in_recv_win
                && ack_ok
                && overshot <= receiver.maxwin
                && before(sack, receiver.end.wrapping_add(1))
            {
                self.seen[s].end = end;
                return Window::Ignore;
            }
            return Window::Invalid;
        }
        if !before(sack, receiver.end.wrapping_add(1)) {
            // Acknowledges data the other side never sent.
            return Window::Invalid;
        }
        let in_recv_win = receiver.maxwin == 0
            || after(
                end,
                sender.end.wrapping_sub(receiver.maxwin).wrapping_sub(1),
            );
        if !in_recv_win {
            // Data already acknowledged, sent again.
            return Window::Ignore;
        }
        if !after(
            sack,
            receiver.end.wrapping_sub(max_ack_window).wrapping_sub(1),
        ) {
            // An ACK far below the last: overly delayed.
            return Window::Ignore;
        }

        if !syn {
            win = win.checked_shl(u32::from(self.seen[s].scale)).unwrap_or(0);
        }
        // The sender.
        let swin = win.wrapping_add(sack.wrapping_sub(ack));
        let sender = &mut self.seen[s];
        if sender.maxwin < swin {
            sender.maxwin = swin;
        }
        if after(end, sender.end) {
            sender.end = end;
        }
        if has_ack {
            if sender.flags & F_MAXACK_SET == 0 {
                sender.maxack = ack;
                sender.flags |= F_MAXACK_SET;
            } else if after(ack, sender.maxack) {
                sender.maxack = ack;
            }
        }
        let sender_maxend = sender.maxend;
        // The receiver.
        let receiver = &mut self.seen[r];
        if receiver.maxwin != 0 && after(end, sender_maxend) {
            receiver.maxwin = receiver
                .maxwin
                .wrapping_add(end.wrapping_sub(sender_maxend));
        }
        if after(sack.wrapping_add(win), receiver.maxend.wrapping_sub(1)) {
            receiver.maxend = sack.wrapping_add(win);
            if win == 0 {
                receiver.maxend = receiver.maxend.wrapping_add(1);
            }
        }
        // Retransmission bookkeeping (what the RST checks compare with).
        if seg.kind() == K_ACK {
            let same = self.last_who == who
                && self.last_seq == seq
                && self.last_ack == ack
                && self.last_end == end
                && self.last_win == seg.win;
            if !same {
                self.last_who = who;
                self.last_seq = seq;
                self.last_ack = ack;
                self.last_end = end;
                self.last_win = seg.win;
            }
        }
        Window::Accept
    }

    /// A side's SYN (or SYN-ACK): its numbers and options start over.
    fn init_sender(&mut self, s: usize, seg: &Segment) {
        let sender = &mut self.seen[s];
        sender.end = seg.end;
        sender.maxend = seg.end;
        sender.maxwin = u32::from(seg.win).max(1);
        sender.options(seg.options);
        // RFC 7323: scaling holds only if both sides offered it.
        if !(self.seen[s].flags & F_WSCALE != 0 && self.seen[1 - s].flags & F_WSCALE != 0) {
            self.seen[s].scale = 0;
            self.seen[1 - s].scale = 0;
        }
    }
}

/// `tcp_in_window`'s verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    Accept,
    Ignore,
    Invalid,
}
