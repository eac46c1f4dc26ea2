//! Bounded in-order reassembly of one direction of a TCP flow.
//!
//! - The stream starts at the initial sequence number: the byte after the
//!   SYN ([`Reassembler::syn`]), else the first segment seen. Sequence
//!   numbers are read relative to the next expected byte, so they may wrap.
//! - Segments ahead of the next expected byte wait in an out-of-order buffer
//!   bounded in segments and bytes ([`ReassemblyConfig`]). A segment that
//!   cannot be buffered (the buffer is full, or the gap before it is larger
//!   than the buffer) stops inspection of the direction for good:
//!   [`StreamEvents::gap`]. A silent gap is never skipped over.
//! - Overlaps: the first copy of a byte wins. A later copy that differs is
//!   ignored and counted ([`StreamEvents::overlap_different_data`]). Bytes
//!   already delivered can only be compared while they are retained (the
//!   window's look-back); older ones are ignored without comparison.
//! - Depth: nothing beyond [`ReassemblyConfig::depth`] bytes (1 MiB by
//!   default, Suricata's `stream.reassembly.depth`) is delivered.
//! - Each segment that makes bytes contiguous yields a [`StreamWindow`]: the
//!   new bytes preceded by up to `lookback` bytes already delivered (the
//!   engine's longest content minus one), so a content split across segments
//!   lies whole in exactly one window, and the engine reports only matches
//!   ending in the new bytes.
//!
//! Memory per direction: at most `lookback` + one segment + the
//! out-of-order buffer. Allocation: the window buffer grows to that size
//! once; each buffered out-of-order piece is one allocation.

use crate::engine::{Buffer, BufferKind};

/// Bounds of one direction's reassembly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// Stream bytes delivered at most (default 1 MiB; at most 1 GiB).
    pub depth: u64,
    /// Out-of-order pieces buffered at most.
    pub max_ooo_segments: usize,
    /// Out-of-order bytes buffered at most; also the largest gap waited for.
    pub max_ooo_bytes: usize,
    /// Bytes before the new ones kept in each window (at most 64 KiB).
    pub lookback: usize,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        ReassemblyConfig {
            depth: 1 << 20,
            max_ooo_segments: 64,
            max_ooo_bytes: 256 << 10,
            lookback: 0,
        }
    }
}

impl ReassemblyConfig {
    /// The defaults, with the look-back an engine needs
    /// (`max_pattern_len - 1`).
    pub fn for_engine(engine: &crate::Engine) -> Self {
        ReassemblyConfig {
            lookback: engine.max_pattern_len().saturating_sub(1),
            ..Self::default()
        }
    }
}

/// What happened to a direction so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamEvents {
    /// Segments that carried bytes differing from earlier copies.
    pub overlap_different_data: u32,
    /// A gap could not be buffered: inspection of the direction stopped.
    pub gap: bool,
    /// The depth was reached: later bytes are not inspected.
    pub depth_reached: bool,
}

/// Bytes to inspect: see [`BufferKind::Stream`].
#[derive(Clone, Copy, Debug)]
pub struct StreamWindow<'a> {
    /// Retained bytes, then the new ones.
    pub data: &'a [u8],
    /// Stream offset of `data[0]`.
    pub stream_offset: u64,
    /// Index of the first new byte in `data`.
    pub new_from: usize,
}

impl<'a> StreamWindow<'a> {
    /// The window as an engine buffer.
    pub fn buffer(&self) -> Buffer<'a> {
        Buffer {
            data: self.data,
            kind: BufferKind::Stream {
                stream_offset: self.stream_offset,
                new_from: self.new_from,
            },
        }
    }

    /// The new bytes only.
    pub fn new_bytes(&self) -> &'a [u8] {
        self.data.get(self.new_from..).unwrap_or(&[])
    }
}

/// Why an inline stage must drop a segment rather than let it pass
/// ([`Reassembler::admit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unplaceable {
    /// It starts before the stream's first byte (before the SYN's
    /// sequence number + 1).
    BeforeStart,
    /// It carries bytes that differ from a copy already taken (still
    /// retained): the receiver might keep either.
    Differs,
    /// It lies ahead of a gap that the out-of-order buffer cannot hold.
    NoRoom,
}

/// One direction of a TCP flow.
#[derive(Clone, Debug)]
pub struct Reassembler {
    cfg: ReassemblyConfig,
    /// Sequence number of stream offset 0.
    base: Option<u32>,
    /// Stream offset of the next in-order byte.
    next: u64,
    /// Sorted, disjoint pieces, each starting after `next`.
    ooo: Vec<(u64, Vec<u8>)>,
    ooo_bytes: usize,
    win: Vec<u8>,
    win_off: u64,
    events: StreamEvents,
}

impl Reassembler {
    /// A direction with no data yet.
    pub fn new(cfg: ReassemblyConfig) -> Self {
        let cfg = ReassemblyConfig {
            depth: cfg.depth.min(1 << 30),
            lookback: cfg.lookback.min(1 << 16),
            ..cfg
        };
        Reassembler {
            cfg,
            base: None,
            next: 0,
            ooo: Vec::new(),
            ooo_bytes: 0,
            win: Vec::new(),
            win_off: 0,
            events: StreamEvents::default(),
        }
    }

    /// The SYN's sequence number: the stream starts after it. Ignored once
    /// the stream has started.
    pub fn syn(&mut self, seq: u32) {
        if self.base.is_none() {
            self.base = Some(seq.wrapping_add(1));
        }
    }

    /// What happened so far.
    pub fn events(&self) -> StreamEvents {
        self.events
    }

    /// Whether new bytes can still be delivered.
    pub fn inspecting(&self) -> bool {
        !self.events.gap && !self.events.depth_reached
    }

    /// Stream bytes delivered so far.
    pub fn delivered(&self) -> u64 {
        self.next
    }

    /// Bytes held: the retained window and the out-of-order buffer.
    pub fn buffered(&self) -> usize {
        self.win.len().saturating_add(self.ooo_bytes)
    }

    /// Whether a segment at `seq` would start exactly at the next expected
    /// byte (so it buffers nothing out of order).
    pub fn in_order(&self, seq: u32) -> bool {
        self.base
            .is_none_or(|b| b.wrapping_add(self.next as u32) == seq)
    }

    /// Whether a segment can be taken without the stream losing anything:
    /// an inline stage (which can drop) drops a segment this refuses, and
    /// the stream stays as it was, so its sender's retransmission is
    /// inspected when it fits. Read-only. A segment that [`segment`]
    /// would take with a gap, or as a differing overlap of a retained or
    /// buffered byte, is refused here; bytes older than the retained
    /// look-back cannot be compared and are not refused (they are ignored,
    /// first copy wins).
    ///
    /// [`segment`]: Reassembler::segment
    pub fn admit(&self, seq: u32, payload: &[u8]) -> Result<(), Unplaceable> {
        if payload.is_empty() || !self.inspecting() {
            return Ok(());
        }
        let Some(base) = self.base else {
            return Ok(());
        };
        let next_seq = base.wrapping_add(self.next as u32);
        let diff = i64::from(seq.wrapping_sub(next_seq) as i32);
        let next = i64::try_from(self.next).unwrap_or(i64::MAX);
        let start = next.saturating_add(diff);
        if start < 0 {
            return Err(Unplaceable::BeforeStart);
        }
        let len = i64::try_from(payload.len()).unwrap_or(i64::MAX);
        let depth = i64::try_from(self.cfg.depth).unwrap_or(i64::MAX);
        let end = start.saturating_add(len).min(depth);
        if start < next && self.retained_differs(start, payload) {
            return Err(Unplaceable::Differs);
        }
        if end <= next {
            return Ok(());
        }
        let from = next.max(start);
        let a = usize::try_from(from - start).unwrap_or(usize::MAX);
        let b = usize::try_from(end - start).unwrap_or(usize::MAX);
        let Some(data) = payload.get(a..b) else {
            return Ok(());
        };
        let from = u64::try_from(from).unwrap_or(u64::MAX);
        if from == self.next && self.ooo.is_empty() {
            return Ok(());
        }
        if from - self.next > self.cfg.max_ooo_bytes as u64 {
            return Err(Unplaceable::NoRoom);
        }
        let (pieces, differs) = self.plan_insert(from, data);
        if differs {
            return Err(Unplaceable::Differs);
        }
        // What stays buffered afterwards: the pieces before `next` moves
        // on are drained, so only an insertion that leaves data out of
        // order can overflow.
        if from > self.next {
            let bytes: usize = pieces.iter().map(|(_, r)| r.len()).sum();
            if self.ooo.len() + pieces.len() > self.cfg.max_ooo_segments
                || self.ooo_bytes.saturating_add(bytes) > self.cfg.max_ooo_bytes
            {
                return Err(Unplaceable::NoRoom);
            }
        }
        Ok(())
    }

    /// Takes one segment's payload; returns the window to inspect when it
    /// made new bytes contiguous.
    pub fn segment(&mut self, seq: u32, payload: &[u8]) -> Option<StreamWindow<'_>> {
        if payload.is_empty() || !self.inspecting() {
            return None;
        }
        let base = *self.base.get_or_insert(seq);
        // Where the segment starts relative to the next expected byte.
        let next_seq = base.wrapping_add(self.next as u32);
        let diff = i64::from(seq.wrapping_sub(next_seq) as i32);
        let start = i64::try_from(self.next)
            .unwrap_or(i64::MAX)
            .saturating_add(diff);
        let len = i64::try_from(payload.len()).unwrap_or(i64::MAX);
        let depth = i64::try_from(self.cfg.depth).unwrap_or(i64::MAX);
        let end = start.saturating_add(len).min(depth);
        let next = i64::try_from(self.next).unwrap_or(i64::MAX);
        if start < next {
            self.compare_retained(start, payload);
        }
        if end <= next {
            if start >= depth {
                self.events.depth_reached = true;
            }
            return None;
        }
        // The part of the segment at or after `next`, up to the depth.
        let from = next.max(start);
        let a = usize::try_from(from - start).unwrap_or(usize::MAX);
        let b = usize::try_from(end - start).unwrap_or(usize::MAX);
        let data = payload.get(a..b)?;
        let from = u64::try_from(from).unwrap_or(u64::MAX);
        if from > self.next {
            let gap = from - self.next;
            if gap > self.cfg.max_ooo_bytes as u64 {
                self.events.gap = true;
                return None;
            }
        }
        // Trim the window to the look-back before adding new bytes.
        let drop = self.win.len().saturating_sub(self.cfg.lookback);
        self.win.drain(..drop);
        self.win_off += drop as u64;
        let new_from = self.win.len();
        if from == self.next && self.ooo.is_empty() {
            self.win.extend_from_slice(data);
            self.next += data.len() as u64;
        } else {
            self.insert(from, data);
            while self.ooo.first().is_some_and(|(s, _)| *s == self.next) {
                let (_, piece) = self.ooo.remove(0);
                self.ooo_bytes = self.ooo_bytes.saturating_sub(piece.len());
                self.next += piece.len() as u64;
                self.win.extend_from_slice(&piece);
            }
            if self.ooo.len() > self.cfg.max_ooo_segments || self.ooo_bytes > self.cfg.max_ooo_bytes
            {
                self.events.gap = true;
                self.ooo.clear();
                self.ooo_bytes = 0;
            }
        }
        if self.next >= self.cfg.depth {
            self.events.depth_reached = true;
        }
        if self.win.len() == new_from {
            return None;
        }
        Some(StreamWindow {
            data: &self.win,
            stream_offset: self.win_off,
            new_from,
        })
    }

    /// Compares a segment starting before `next` with the retained bytes.
    fn compare_retained(&mut self, start: i64, payload: &[u8]) {
        if self.retained_differs(start, payload) {
            self.bump_overlap();
        }
    }

    /// Whether a segment at stream offset `start` differs from the retained
    /// bytes it overlaps.
    fn retained_differs(&self, start: i64, payload: &[u8]) -> bool {
        let w0 = i64::try_from(self.win_off).unwrap_or(i64::MAX);
        let w1 = w0.saturating_add(i64::try_from(self.win.len()).unwrap_or(0));
        let lo = start.max(w0);
        let hi = start
            .saturating_add(i64::try_from(payload.len()).unwrap_or(0))
            .min(w1);
        if lo >= hi {
            return false;
        }
        let idx = |x: i64, o: i64| usize::try_from(x - o).unwrap_or(0);
        let old = self.win.get(idx(lo, w0)..idx(hi, w0));
        let new = payload.get(idx(lo, start)..idx(hi, start));
        old != new
    }

    fn bump_overlap(&mut self) {
        self.events.overlap_different_data = self.events.overlap_different_data.saturating_add(1);
    }

    /// Where the new bytes of `data` at stream offset `start` (≥ `next`) go
    /// among the buffered pieces, first copy wins: (offset, range of
    /// `data`) for each hole it fills, and whether it differs from a
    /// buffered byte it overlaps.
    fn plan_insert(&self, start: u64, data: &[u8]) -> (Vec<(u64, std::ops::Range<usize>)>, bool) {
        let end = start + data.len() as u64;
        let mut pos = start;
        let mut pieces = Vec::new();
        let mut differs = false;
        let at = |x: u64, o: u64| usize::try_from(x - o).unwrap_or(usize::MAX);
        for (ps, pd) in &self.ooo {
            let pe = ps + pd.len() as u64;
            if pe <= pos {
                continue;
            }
            if *ps >= end {
                break;
            }
            if *ps > pos {
                pieces.push((pos, at(pos, start)..at(*ps, start)));
                pos = *ps;
            }
            let hi = pe.min(end);
            if data.get(at(pos, start)..at(hi, start)) != pd.get(at(pos, *ps)..at(hi, *ps)) {
                differs = true;
            }
            pos = hi;
            if pos >= end {
                break;
            }
        }
        if pos < end {
            pieces.push((pos, at(pos, start)..data.len()));
        }
        (pieces, differs)
    }

    /// Inserts `data` at stream offset `start` (≥ `next`), first copy wins.
    fn insert(&mut self, start: u64, data: &[u8]) {
        let (pieces, differs) = self.plan_insert(start, data);
        if differs {
            self.bump_overlap();
        }
        for (off, range) in pieces {
            let Some(d) = data.get(range) else { continue };
            self.ooo_bytes = self.ooo_bytes.saturating_add(d.len());
            let i = self.ooo.partition_point(|(s, _)| *s < off);
            self.ooo.insert(i, (off, d.to_vec()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(lookback: usize) -> ReassemblyConfig {
        ReassemblyConfig {
            lookback,
            ..ReassemblyConfig::default()
        }
    }

    fn win(r: &mut Reassembler, seq: u32, p: &[u8]) -> Option<(Vec<u8>, u64, usize)> {
        r.segment(seq, p)
            .map(|w| (w.data.to_vec(), w.stream_offset, w.new_from))
    }

    #[test]
    fn in_order_with_lookback() {
        let mut r = Reassembler::new(cfg(3));
        r.syn(99);
        assert_eq!(win(&mut r, 100, b"hello"), Some((b"hello".to_vec(), 0, 0)));
        assert_eq!(
            win(&mut r, 105, b"world"),
            Some((b"lloworld".to_vec(), 2, 3))
        );
        // A retransmission yields nothing.
        assert_eq!(win(&mut r, 100, b"hello"), None);
        assert_eq!(r.events(), StreamEvents::default());
    }

    #[test]
    fn out_of_order_waits_for_the_gap() {
        let mut r = Reassembler::new(cfg(0));
        r.syn(0);
        assert_eq!(win(&mut r, 4, b"def"), None);
        assert_eq!(win(&mut r, 1, b"abc"), Some((b"abcdef".to_vec(), 0, 0)));
        assert_eq!(r.delivered(), 6);
    }

    #[test]
    fn first_copy_wins_and_is_counted() {
        let mut r = Reassembler::new(cfg(8));
        r.syn(0);
        assert_eq!(win(&mut r, 4, b"DEF"), None);
        assert_eq!(win(&mut r, 5, b"xFG"), None);
        assert_eq!(r.events().overlap_different_data, 1);
        assert_eq!(win(&mut r, 1, b"abcdz"), Some((b"abcDEFG".to_vec(), 0, 0)));
        assert_eq!(r.events().overlap_different_data, 2);
        // Delivered bytes win too.
        assert_eq!(win(&mut r, 6, b"FGhi"), Some((b"abcDEFGhi".to_vec(), 0, 7)));
        assert_eq!(win(&mut r, 6, b"Xg"), None);
        assert_eq!(r.events().overlap_different_data, 3);
    }

    #[test]
    fn gap_beyond_the_buffer_stops_inspection() {
        let mut r = Reassembler::new(ReassemblyConfig {
            max_ooo_bytes: 10,
            ..cfg(0)
        });
        r.syn(0);
        assert_eq!(win(&mut r, 100, b"far"), None);
        assert!(r.events().gap && !r.inspecting());
        assert_eq!(win(&mut r, 1, b"abc"), None);
    }

    #[test]
    fn too_many_pieces_stop_inspection() {
        let mut r = Reassembler::new(ReassemblyConfig {
            max_ooo_segments: 2,
            ..cfg(0)
        });
        r.syn(0);
        for s in [3u32, 5, 7] {
            assert_eq!(win(&mut r, s, b"x"), None);
        }
        assert!(r.events().gap);
    }

    #[test]
    fn depth_bounds_the_stream() {
        let mut r = Reassembler::new(ReassemblyConfig { depth: 5, ..cfg(0) });
        assert_eq!(win(&mut r, 7, b"abcdefgh"), Some((b"abcde".to_vec(), 0, 0)));
        assert!(r.events().depth_reached);
        assert_eq!(win(&mut r, 15, b"ij"), None);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut r = Reassembler::new(cfg(0));
        r.syn(u32::MAX - 1);
        assert!(win(&mut r, u32::MAX, b"ab").is_some());
        assert_eq!(win(&mut r, 1, b"cd").map(|w| w.0), Some(b"cd".to_vec()));
    }

    /// Feeds a segment the way an inline stage does: refused ones are
    /// dropped and leave the stream as it was.
    fn inline(r: &mut Reassembler, seq: u32, p: &[u8]) -> Result<Option<Vec<u8>>, Unplaceable> {
        r.admit(seq, p)?;
        Ok(r.segment(seq, p).map(|w| w.new_bytes().to_vec()))
    }

    #[test]
    fn inline_admission_refuses_what_would_be_lost() {
        let mut r = Reassembler::new(ReassemblyConfig {
            max_ooo_segments: 2,
            max_ooo_bytes: 8,
            ..cfg(4)
        });
        r.syn(99);
        assert_eq!(inline(&mut r, 100, b"abcd"), Ok(Some(b"abcd".to_vec())));
        // Before the stream's first byte.
        assert_eq!(inline(&mut r, 98, b"zz"), Err(Unplaceable::BeforeStart));
        // A retransmission of retained bytes: the same passes, other data
        // does not.
        assert_eq!(inline(&mut r, 102, b"cd"), Ok(None));
        assert_eq!(inline(&mut r, 102, b"cX"), Err(Unplaceable::Differs));
        // Out of order: buffered while it fits, then refused, never a gap.
        assert_eq!(inline(&mut r, 106, b"gh"), Ok(None));
        assert_eq!(inline(&mut r, 106, b"gX"), Err(Unplaceable::Differs));
        assert_eq!(inline(&mut r, 109, b"j"), Ok(None));
        assert_eq!(inline(&mut r, 111, b"l"), Err(Unplaceable::NoRoom));
        assert_eq!(inline(&mut r, 120, b"far"), Err(Unplaceable::NoRoom));
        assert!(r.inspecting(), "{:?}", r.events());
        // The hole filled: everything delivered once, in order.
        assert_eq!(inline(&mut r, 104, b"ef"), Ok(Some(b"efgh".to_vec())));
        assert_eq!(inline(&mut r, 108, b"ij"), Ok(Some(b"ij".to_vec())));
        assert_eq!(r.delivered(), 10);
        assert_eq!(r.events().overlap_different_data, 0);
    }
}
