//! The IDS stage (role `ids`): the policy's signatures applied to every
//! packet the filter admits, red → black and black → red, with TCP streams
//! reassembled in order so that a pattern split across segments matches.
//!
//! One [`IdsStage`] per half; each sees only its own direction's packets, so
//! the stages share nothing and take no lock. What a signature sees of a
//! packet's flow (`flow:to_server`, `established`) comes from the connection
//! table, which the IDS role always keeps ([`policy_blob::Policy::tracks_connections`]).
//!
//! # Fail closed
//! An inline stage can drop, so nothing it cannot inspect passes:
//! - **IP fragments** are dropped (`ids_fragment`): the Viaduct does not
//!   reassemble them, and a pattern split across fragments would pass.
//! - **TCP segments it cannot place** are dropped (`ids_unplaceable`) and
//!   leave the stream as it was, so the sender's retransmission is inspected:
//!   data before the stream's first byte, data differing from a copy already
//!   taken (and still retained), data beyond what the out-of-order buffer
//!   (per stream, and [`STREAM_BUDGET`] per half) holds, and data the
//!   connection table did not take (no connection, or outside its window).
//! - **`drop`**: the packet is dropped (`ids_drop`) and, for TCP, every later
//!   packet of that direction of the connection (`ids_blocked`): its bytes
//!   are already in the stream, so a retransmission would otherwise pass
//!   unseen. Suricata's inline mode drops the flow likewise.
//! - A stream table that is full drops the new stream's packets
//!   (`ids_streams_full`). When it is full, streams idle for
//!   [`STREAM_IDLE_SECONDS`] (the connection table's default for an
//!   established connection), or for [`CLOSING_IDLE_SECONDS`] after their
//!   connection's FIN or RST, are forgotten first; a later segment of a
//!   forgotten stream is picked up mid-stream (counted).
//!
//! # Alerts
//! One JSON line per matching signature and packet (EVE-like: `event_type`,
//! the Viaduct's uptime, direction, five-tuple, flow, the signature's sid,
//! rev and message, `allowed` or `blocked`), rate-limited like the filter's
//! log ([`crate::engine::LOG_LINES_PER_SECOND`]); the lines left out are
//! counted, and every match is counted per signature. A line holds the
//! signature's own fields and numbers and addresses the Viaduct formats,
//! never a byte of the packet's payload.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use viaduct_ids::{
    Action, Buffer, Engine as Signatures, Hit, Packet, Proto, Reassembler, ReassemblyConfig,
    Scratch,
};

use crate::drop::DropReason;
use crate::engine::FilterLog;
use crate::sa::Timestamp;
use crate::wire::ip::{upper_layer, FiveTuple, Fragment};

/// A stream idle this long may be forgotten (pf's and the connection
/// table's default timeout of an established TCP connection).
pub const STREAM_IDLE_SECONDS: u64 = 86_400;
/// A stream whose sender closed or reset its connection (a FIN or RST the
/// connection table took) may be forgotten after this long idle (the
/// table's `tcp_closing`), so a busy gateway's table does not fill with
/// closed connections.
pub const CLOSING_IDLE_SECONDS: u64 = 900;
/// Bytes all of one half's streams hold at most (retained windows and
/// out-of-order buffers); beyond, only in-order segments are taken.
pub const STREAM_BUDGET: usize = 64 << 20;
/// Out-of-order bytes one stream holds at most.
pub const STREAM_OOO_BYTES: usize = 64 << 10;

const TCP_SYN: u8 = 0x02;
const TCP_FIN_RST: u8 = 0x05;

/// What the connection table says of a packet's flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowInfo {
    /// Sent by the connection's originator.
    pub to_server: bool,
    /// The connection is established.
    pub established: bool,
}

/// The stage's counters (matches per signature are kept apart).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdsCounters {
    /// Packets inspected.
    pub packets: u64,
    /// Stream windows inspected.
    pub stream_windows: u64,
    /// Matches (one per signature and packet).
    pub alerts: u64,
    /// Packets dropped by `drop` signatures.
    pub dropped: u64,
    /// Streams picked up after their start (idle-forgotten, or older than
    /// the policy).
    pub midstream: u64,
    /// Streams that reached the reassembly depth (later bytes are
    /// inspected per packet only).
    pub depth_reached: u64,
    /// Signatures abandoned on a buffer for their search budget.
    pub budget_exhausted: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StreamKey {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
}

#[derive(Debug)]
struct Stream {
    r: Reassembler,
    /// The SYN's sequence number, when the stream started with one.
    isn: Option<u32>,
    blocked: bool,
    /// Its sender sent a FIN or RST that the connection table took.
    closing: bool,
    depth_counted: bool,
    last: u64,
}

/// One direction's IDS stage.
#[derive(Debug)]
pub struct IdsStage {
    sigs: Arc<Signatures>,
    cfg: ReassemblyConfig,
    streams: HashMap<StreamKey, Stream>,
    max_streams: usize,
    buffered: usize,
    last_sweep: u64,
    scratch: Scratch,
    hits: Vec<Hit>,
    per_signature: Vec<u64>,
    counters: IdsCounters,
    dir: &'static str,
    log: FilterLog,
}

/// A TCP segment's sequence number and flags.
type TcpMeta = Option<(u32, u8)>;

/// The TCP, UDP or ICMP payload (a whole upper layer for other
/// protocols), and for TCP the sequence number and flags.
fn payload(protocol: u8, l4: &[u8]) -> Result<(Proto, &[u8], TcpMeta), DropReason> {
    match protocol {
        6 => {
            let off = usize::from(l4.get(12).ok_or(DropReason::Truncated)? >> 4) * 4;
            if off < 20 {
                return Err(DropReason::Malformed);
            }
            let data = l4.get(off..).ok_or(DropReason::Truncated)?;
            let seq = l4
                .get(4..8)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(DropReason::Truncated)?;
            let flags = *l4.get(13).ok_or(DropReason::Truncated)?;
            Ok((Proto::Tcp, data, Some((seq, flags))))
        }
        17 => Ok((Proto::Udp, l4.get(8..).ok_or(DropReason::Truncated)?, None)),
        1 | 58 => Ok((Proto::Icmp, l4.get(8..).unwrap_or(&[]), None)),
        _ => Ok((Proto::Ip, l4, None)),
    }
}

/// The most characters of a signature's message an alert line carries
/// (escaped): the line stays well under the init's relay limit for the
/// Viaduct (1,024).
pub const ALERT_MSG_MAX: usize = 256;

/// Appends `s` as a JSON string in printable ASCII (everything else
/// escaped, UTF-16 as JSON has it), at most [`ALERT_MSG_MAX`] characters
/// of it, cut at a character with `...`.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    let start = out.len();
    let mut buf = [0u16; 2];
    for c in s.chars() {
        let at = out.len();
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c => {
                for u in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
        if out.len() - start > ALERT_MSG_MAX {
            out.truncate(at);
            out.push_str("...");
            break;
        }
    }
    out.push('"');
}

impl IdsStage {
    /// A stage for one direction (`red-to-black` or `black-to-red`), with
    /// room for `max_streams` TCP streams.
    pub fn new(sigs: Arc<Signatures>, dir: &'static str, max_streams: usize) -> IdsStage {
        let cfg = ReassemblyConfig {
            max_ooo_bytes: STREAM_OOO_BYTES,
            ..ReassemblyConfig::for_engine(&sigs)
        };
        let n = sigs.signatures().len();
        IdsStage {
            sigs,
            cfg,
            streams: HashMap::new(),
            max_streams: max_streams.max(1),
            buffered: 0,
            last_sweep: 0,
            scratch: Scratch::default(),
            hits: Vec::new(),
            per_signature: vec![0; n],
            counters: IdsCounters::default(),
            dir,
            log: FilterLog::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> IdsCounters {
        self.counters
    }

    /// The alert lines since the last call (rate-limited).
    pub fn take_lines(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log.lines)
    }

    /// Streams tracked now.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Forgets streams idle for [`STREAM_IDLE_SECONDS`], or
    /// [`CLOSING_IDLE_SECONDS`] once closing (at most once a second).
    fn sweep(&mut self, now: u64) {
        if now == self.last_sweep {
            return;
        }
        self.last_sweep = now;
        let before = self.streams.len();
        let mut freed = 0usize;
        self.streams.retain(|_, s| {
            let idle = if s.closing {
                CLOSING_IDLE_SECONDS
            } else {
                STREAM_IDLE_SECONDS
            };
            let keep = now.saturating_sub(s.last) < idle;
            if !keep {
                freed = freed.saturating_add(s.r.buffered());
            }
            keep
        });
        if self.streams.len() != before {
            self.buffered = self.buffered.saturating_sub(freed);
        }
    }

    /// Inspects one admitted packet; `Err` drops it. `flow` is `None` for a
    /// packet of no tracked connection (then it counts as sent to the
    /// server, not established).
    pub fn inspect(
        &mut self,
        pkt: &[u8],
        t: &FiveTuple,
        flow: Option<FlowInfo>,
        now: Timestamp,
    ) -> Result<(), DropReason> {
        let u = upper_layer(pkt).map_err(|_| DropReason::Malformed)?;
        if u.fragment != Fragment::No || t.ports_unknown {
            return Err(DropReason::IdsFragment);
        }
        let (proto, data, tcp) = payload(u.protocol, u.bytes)?;
        let (src_port, dst_port) = match proto {
            Proto::Tcp | Proto::Udp => t.ports.unwrap_or((0, 0)),
            _ => (0, 0),
        };
        let info = flow.unwrap_or(FlowInfo {
            to_server: true,
            established: false,
        });
        let packet = Packet {
            proto,
            src: t.src,
            dst: t.dst,
            src_port,
            dst_port,
            to_server: info.to_server,
            established: info.established,
            dsize: data.len(),
        };
        self.hits.clear();
        let key = StreamKey {
            src: t.src,
            dst: t.dst,
            sport: src_port,
            dport: dst_port,
        };
        // TCP: the stream first, so that a segment it cannot place is
        // dropped before anything else looks at it.
        let mut seg = None;
        if let Some((seq, flags)) = tcp {
            if self.streams.get(&key).is_some_and(|s| s.blocked) {
                return Err(DropReason::IdsBlocked);
            }
            if !data.is_empty() && flow.is_none() {
                // Data the connection table did not take (no connection,
                // or outside its window): the receiver may or may not, so
                // it must not become the stream's first copy.
                return Err(DropReason::IdsUnplaceable);
            }
            let syn = flags & TCP_SYN != 0;
            let seg_seq = if syn { seq.wrapping_add(1) } else { seq };
            let known = self.streams.contains_key(&key);
            let restart = syn && self.streams.get(&key).is_some_and(|s| s.isn != Some(seq));
            if (!known || restart) && (syn || !data.is_empty()) {
                if !known && self.streams.len() >= self.max_streams {
                    self.sweep(now.0);
                    if self.streams.len() >= self.max_streams {
                        return Err(DropReason::IdsStreamsFull);
                    }
                }
                let mut r = Reassembler::new(self.cfg);
                if syn {
                    r.syn(seq);
                } else {
                    self.counters.midstream += 1;
                }
                let old = self.streams.insert(
                    key,
                    Stream {
                        r,
                        isn: syn.then_some(seq),
                        blocked: false,
                        closing: false,
                        depth_counted: false,
                        last: now.0,
                    },
                );
                if let Some(o) = old {
                    self.buffered = self.buffered.saturating_sub(o.r.buffered());
                }
            }
            if flags & TCP_FIN_RST != 0 && flow.is_some() {
                if let Some(s) = self.streams.get_mut(&key) {
                    s.closing = true;
                    s.last = now.0;
                }
            }
            if !data.is_empty() {
                if let Some(s) = self.streams.get(&key) {
                    s.r.admit(seg_seq, data)
                        .map_err(|_| DropReason::IdsUnplaceable)?;
                    if self.buffered.saturating_add(data.len()) > STREAM_BUDGET
                        && !s.r.in_order(seg_seq)
                    {
                        return Err(DropReason::IdsUnplaceable);
                    }
                    seg = Some(seg_seq);
                }
            }
        }
        self.counters.packets += 1;
        let stats = self.sigs.inspect_with(
            &mut self.scratch,
            &packet,
            Buffer::packet(data),
            &mut self.hits,
        );
        self.counters.budget_exhausted += u64::from(stats.budget_exhausted);
        let packet_drop = self.hits.iter().any(|h| h.action == Action::Drop);
        let mut from_stream = self.hits.len();
        if let (Some(seq), false) = (seg, packet_drop) {
            if let Some(s) = self.streams.get_mut(&key) {
                let before = s.r.buffered();
                s.last = now.0;
                if let Some(w) = s.r.segment(seq, data) {
                    self.counters.stream_windows += 1;
                    from_stream = self.hits.len();
                    let stats = self.sigs.inspect_with(
                        &mut self.scratch,
                        &packet,
                        w.buffer(),
                        &mut self.hits,
                    );
                    self.counters.budget_exhausted += u64::from(stats.budget_exhausted);
                }
                if !s.r.inspecting() && !s.depth_counted {
                    s.depth_counted = true;
                    self.counters.depth_reached += 1;
                }
                self.buffered = self
                    .buffered
                    .saturating_sub(before)
                    .saturating_add(s.r.buffered());
            }
        }
        if self.hits.is_empty() {
            return Ok(());
        }
        // One event per signature: a packet and its stream window may both
        // match.
        let drop = self.hits.iter().any(|h| h.action == Action::Drop);
        let mut seen: Vec<u32> = Vec::new();
        for (i, h) in self.hits.iter().enumerate() {
            if seen.contains(&h.signature) {
                continue;
            }
            seen.push(h.signature);
            self.counters.alerts += 1;
            if let Some(n) = self.per_signature.get_mut(h.signature as usize) {
                *n += 1;
            }
            if self.log.admit(now) {
                let line = self.alert_line(h, &packet, drop, i >= from_stream, now);
                self.log.lines.push(line);
            }
        }
        if drop {
            self.counters.dropped += 1;
            if let Some(s) = self.streams.get_mut(&key) {
                if tcp.is_some() {
                    s.blocked = true;
                }
            }
            return Err(DropReason::IdsDrop);
        }
        Ok(())
    }

    fn alert_line(
        &self,
        h: &Hit,
        p: &Packet,
        dropped: bool,
        stream: bool,
        now: Timestamp,
    ) -> String {
        let sig = self.sigs.signatures().get(h.signature as usize);
        let mut l = String::with_capacity(256);
        let _ = write!(
            l,
            "{{\"event_type\":\"alert\",\"uptime_s\":{},\"direction\":\"{}\",\"proto\":\"{}\",\"src_ip\":\"{}\",",
            now.0,
            self.dir,
            match p.proto {
                Proto::Tcp => "TCP",
                Proto::Udp => "UDP",
                Proto::Icmp => "ICMP",
                Proto::Ip => "IP",
            },
            p.src
        );
        if p.proto.has_ports() {
            let _ = write!(l, "\"src_port\":{},", p.src_port);
        }
        let _ = write!(l, "\"dest_ip\":\"{}\",", p.dst);
        if p.proto.has_ports() {
            let _ = write!(l, "\"dest_port\":{},", p.dst_port);
        }
        let _ = write!(
            l,
            "\"flow\":{{\"to_server\":{},\"established\":{}}},\"buffer\":\"{}\",\"alert\":{{\"action\":\"{}\",\"signature_id\":{},\"rev\":{},\"signature\":",
            p.to_server,
            p.established,
            if stream { "stream" } else { "packet" },
            if dropped { "blocked" } else { "allowed" },
            h.sid,
            sig.map_or(0, |s| s.rev),
        );
        json_str(&mut l, sig.map_or("", |s| s.msg.as_str()));
        l.push_str("}}");
        l
    }

    /// Counter lines for the Viaduct's report (`<prefix> ids …`).
    pub fn write_report(&self, s: &mut String, prefix: &str) {
        let c = &self.counters;
        let _ = writeln!(
            s,
            "{prefix} ids signatures={} packets={} stream_windows={} streams={} alerts={} dropped={} midstream={} depth_reached={} budget_exhausted={} log_written={} log_suppressed={}",
            self.per_signature.len(),
            c.packets,
            c.stream_windows,
            self.streams.len(),
            c.alerts,
            c.dropped,
            c.midstream,
            c.depth_reached,
            c.budget_exhausted,
            self.log.written,
            self.log.suppressed
        );
        for (i, n) in self.per_signature.iter().enumerate() {
            if *n > 0 {
                let sid = self.sigs.signatures().get(i).map_or(0, |s| s.sid);
                let _ = writeln!(s, "{prefix} ids sid={sid} matches={n}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(s: &str) -> String {
        let mut out = String::new();
        json_str(&mut out, s);
        out
    }

    #[test]
    fn messages_become_bounded_printable_json_strings() {
        assert_eq!(quoted(r#"a "q" \ b"#), r#""a \"q\" \\ b""#);
        assert_eq!(quoted("é\n😀"), r#""\u00e9\u000a\ud83d\ude00""#);
        let long = quoted(&"x".repeat(5000));
        assert_eq!(long.len(), ALERT_MSG_MAX + 2 + 3);
        assert!(long.ends_with("...\""));
        // An escape is never cut in half.
        let cut = quoted(&"é".repeat(1000));
        assert!(cut.ends_with("\\u00e9...\""), "{cut}");
        for s in [long, cut] {
            assert!(s.bytes().all(|b| (0x20..0x7f).contains(&b)));
        }
    }

    /// A full table forgets the streams of closed connections first: a busy
    /// gateway does not refuse new connections for streams long gone.
    #[test]
    fn a_full_table_forgets_closed_streams_before_refusing() {
        use viaduct_ids::{ContentMatch, Signature};
        let sigs = Arc::new(
            Signatures::new(vec![Signature::any(
                1,
                Proto::Tcp,
                vec![ContentMatch::new(b"zz")],
            )])
            .unwrap(),
        );
        let mut stage = IdsStage::new(sigs, "red-to-black", 2);
        let seg = |sport: u16, flags: u8| {
            let mut p = vec![0u8; 40];
            p[0] = 0x45;
            p[2..4].copy_from_slice(&40u16.to_be_bytes());
            p[8] = 64;
            p[9] = 6;
            p[12..16].copy_from_slice(&[10, 1, 0, 7]);
            p[16..20].copy_from_slice(&[203, 0, 113, 80]);
            p[20..22].copy_from_slice(&sport.to_be_bytes());
            p[22..24].copy_from_slice(&80u16.to_be_bytes());
            p[24..28].copy_from_slice(&1000u32.to_be_bytes());
            p[32] = 5 << 4;
            p[33] = flags;
            p
        };
        let flow = Some(FlowInfo {
            to_server: true,
            established: false,
        });
        let mut send = |sport, flags, at| {
            let p = seg(sport, flags);
            let t = crate::wire::ip::five_tuple(&p).unwrap();
            stage.inspect(&p, &t, flow, Timestamp(at))
        };
        assert_eq!(send(1, TCP_SYN, 0), Ok(()));
        assert_eq!(send(2, TCP_SYN, 0), Ok(()));
        // Full, nothing idle long enough.
        assert_eq!(send(3, TCP_SYN, 1), Err(DropReason::IdsStreamsFull));
        // Connection 1 closes; 900 s later its stream makes room, connection
        // 2's (open, idle as long) does not.
        assert_eq!(send(1, 0x11, 10), Ok(())); // FIN, ACK
        assert_eq!(send(3, TCP_SYN, 500), Err(DropReason::IdsStreamsFull));
        assert_eq!(send(3, TCP_SYN, 911), Ok(()));
        assert_eq!(send(4, TCP_SYN, 912), Err(DropReason::IdsStreamsFull));
        // An open stream goes after a day idle.
        assert_eq!(send(4, TCP_SYN, 86_401), Ok(()));
    }
}
