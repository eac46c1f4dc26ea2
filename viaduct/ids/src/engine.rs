//! The engine: signature checks, the prefilter and the per-buffer inspection.

use std::net::IpAddr;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use crate::model::{Action, FlowDirection, FlowState, Proto, Signature};
use crate::verify::{chain_matches, Compiled, Cx};

/// The most signatures an engine holds.
pub const MAX_SIGNATURES: usize = 65_536;
/// The most contents in one signature.
pub const MAX_CONTENTS: usize = 32;
/// The longest content, in bytes.
pub const MAX_CONTENT_LEN: usize = 1024;
/// Content searches allowed per signature and buffer (Suricata's default
/// `inspection-recursion-limit` is 3000 too): the verifier's work on one
/// buffer is at most this many linear scans of it.
pub const SEARCH_BUDGET: u32 = 3000;
/// Above this many distinct fast patterns per automaton the prefilter uses a
/// contiguous NFA instead of a DFA (a DFA of 5,000 patterns is ≈ 18 MiB).
pub const DFA_MAX_PATTERNS: usize = 10_000;

/// Why an engine cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    /// Too many signatures.
    #[error("{count} signatures: an engine holds at most {max}; split the rule set")]
    TooManySignatures {
        /// How many were given.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A sid is 0 or used twice.
    #[error("sid {sid} is 0 or used twice: every signature needs its own sid")]
    BadSid {
        /// The sid.
        sid: u32,
    },
    /// Something in one signature's contents is wrong.
    #[error("sid {sid}: {reason}")]
    Content {
        /// The signature.
        sid: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// The prefilter could not be built.
    #[error("the prefilter could not be built: {0}")]
    Prefilter(String),
}

/// The packet a buffer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Transport protocol (`Ip`: another IP protocol).
    pub proto: Proto,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (0 without ports).
    pub src_port: u16,
    /// Destination port (0 without ports).
    pub dst_port: u16,
    /// Sent by the flow's initiator.
    pub to_server: bool,
    /// The flow is established (TCP: after the handshake).
    pub established: bool,
    /// The packet's own payload length (for `dsize`).
    pub dsize: usize,
}

/// What kind of bytes are inspected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferKind {
    /// A packet's payload: `dsize` applies, positions start at 0.
    Packet,
    /// A reassembled stream window: signatures with `dsize` never match;
    /// `offset`/`depth` count from the stream's first byte.
    Stream {
        /// Stream offset of the window's first byte.
        stream_offset: u64,
        /// Index in the window of its first new byte: a match must end
        /// after it.
        new_from: usize,
    },
}

/// A buffer to inspect.
#[derive(Clone, Copy, Debug)]
pub struct Buffer<'a> {
    /// The bytes.
    pub data: &'a [u8],
    /// What they are.
    pub kind: BufferKind,
}

impl<'a> Buffer<'a> {
    /// A packet payload.
    pub fn packet(data: &'a [u8]) -> Self {
        Buffer {
            data,
            kind: BufferKind::Packet,
        }
    }
}

/// A signature that matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hit {
    /// Its sid.
    pub sid: u32,
    /// Its action.
    pub action: Action,
    /// Its index in [`Engine::signatures`] (for the message).
    pub signature: u32,
}

/// What one inspection did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InspectStats {
    /// Signatures whose fast pattern occurred (verified).
    pub candidates: u32,
    /// Signatures abandoned because they used up [`SEARCH_BUDGET`].
    pub budget_exhausted: u32,
}

/// Per-caller working memory, so inspection does not allocate once warm.
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    sig_seen: Vec<u64>,
    pat_seen: [Vec<u64>; 2],
    cands: Vec<u32>,
    pats: [Vec<u32>; 2],
}

/// One prefilter automaton and the signatures behind each pattern.
#[derive(Debug)]
struct Prefilter {
    ac: Option<AhoCorasick>,
    /// Pattern id → signature indices.
    sigs: Vec<Vec<u32>>,
}

impl Prefilter {
    fn build(pats: Vec<(Vec<u8>, u32)>, nocase: bool) -> Result<Prefilter, BuildError> {
        let mut sorted = pats;
        sorted.sort();
        let mut uniq: Vec<Vec<u8>> = Vec::new();
        let mut sigs: Vec<Vec<u32>> = Vec::new();
        for (p, s) in sorted {
            if uniq.last() != Some(&p) {
                uniq.push(p);
                sigs.push(Vec::new());
            }
            if let Some(v) = sigs.last_mut() {
                v.push(s);
            }
        }
        if uniq.is_empty() {
            return Ok(Prefilter { ac: None, sigs });
        }
        let kind = if uniq.len() <= DFA_MAX_PATTERNS {
            AhoCorasickKind::DFA
        } else {
            AhoCorasickKind::ContiguousNFA
        };
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(nocase)
            .kind(Some(kind))
            .build(&uniq)
            .or_else(|_| {
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .ascii_case_insensitive(nocase)
                    .build(&uniq)
            })
            .map_err(|e| BuildError::Prefilter(e.to_string()))?;
        Ok(Prefilter { ac: Some(ac), sigs })
    }
}

/// The IDS engine: immutable once built, shared by every flow.
#[derive(Debug)]
pub struct Engine {
    sigs: Vec<Signature>,
    chains: Vec<Vec<Compiled>>,
    /// Case-sensitive and ASCII-case-insensitive prefilters.
    pre: [Prefilter; 2],
    max_pattern_len: usize,
}

fn check(s: &Signature) -> Result<(), BuildError> {
    let bad = |reason| Err(BuildError::Content { sid: s.sid, reason });
    if s.contents.is_empty() {
        return bad("no content: a signature needs one to be prefiltered");
    }
    if s.contents.len() > MAX_CONTENTS {
        return bad("more than 32 contents");
    }
    if s.contents.iter().all(|c| c.negated) {
        return bad("every content is negated: nothing can prefilter the signature");
    }
    if s.contents.iter().filter(|c| c.fast_pattern).count() > 1 {
        return bad("more than one fast_pattern");
    }
    for c in &s.contents {
        let len = c.bytes.len();
        if len == 0 {
            return bad("an empty content");
        }
        if len > MAX_CONTENT_LEN {
            return bad("a content is longer than 1024 bytes");
        }
        if c.fast_pattern && c.negated {
            return bad("fast_pattern on a negated content");
        }
        if c.is_relative() && (c.offset.is_some() || c.depth.is_some()) {
            return bad("offset/depth and distance/within on one content");
        }
        let short = |v: Option<u32>| v.is_some_and(|v| (v as usize) < len);
        if short(c.depth) || short(c.within) {
            return bad("depth or within is shorter than its content");
        }
    }
    Ok(())
}

/// The checks of [`Engine::new`] without building anything: at most
/// [`MAX_SIGNATURES`], every sid non-zero and used once, and each
/// signature's contents able to match and be prefiltered. The policy blob's
/// validation runs them, so a policy the Viaduct would refuse is never
/// signed.
pub fn check_signatures(sigs: &[Signature]) -> Result<(), BuildError> {
    if sigs.len() > MAX_SIGNATURES {
        return Err(BuildError::TooManySignatures {
            count: sigs.len(),
            max: MAX_SIGNATURES,
        });
    }
    let mut sids: Vec<u32> = sigs.iter().map(|s| s.sid).collect();
    sids.sort_unstable();
    if let Some(w) = sids.windows(2).find(|w| w.first() == w.get(1)) {
        return Err(BuildError::BadSid {
            sid: w.first().copied().unwrap_or(0),
        });
    }
    if sids.first() == Some(&0) {
        return Err(BuildError::BadSid { sid: 0 });
    }
    sigs.iter().try_for_each(check)
}

/// The signature's prefilter pattern: the content marked `fast_pattern`,
/// else the longest non-negated content (the first of equal length).
/// Suricata's default choice also weighs how common a pattern is; longest
/// is simpler and, since the prefilter only narrows, never changes a result.
pub fn fast_pattern(s: &Signature) -> Option<usize> {
    if let Some(i) = s.contents.iter().position(|c| c.fast_pattern) {
        return Some(i);
    }
    let mut best: Option<(usize, usize)> = None;
    for (i, c) in s.contents.iter().enumerate() {
        if !c.negated && best.is_none_or(|(_, l)| c.bytes.len() > l) {
            best = Some((i, c.bytes.len()));
        }
    }
    best.map(|(i, _)| i)
}

impl Engine {
    /// Checks the signatures and builds the prefilter. Refuses more than
    /// [`MAX_SIGNATURES`], a sid that is 0 or repeated, and contents that
    /// are empty, too long or too many, all negated, or placed in ways that
    /// can never match.
    pub fn new(sigs: Vec<Signature>) -> Result<Engine, BuildError> {
        check_signatures(&sigs)?;
        let mut pats: [Vec<(Vec<u8>, u32)>; 2] = [Vec::new(), Vec::new()];
        let mut max_pattern_len = 0;
        for (i, s) in sigs.iter().enumerate() {
            let fp = fast_pattern(s).and_then(|f| s.contents.get(f));
            let Some(fp) = fp else {
                return Err(BuildError::Content {
                    sid: s.sid,
                    reason: "no fast pattern",
                });
            };
            let idx = u32::try_from(i).unwrap_or(u32::MAX);
            pats[usize::from(fp.nocase)].push((fp.bytes.clone(), idx));
            for c in &s.contents {
                max_pattern_len = max_pattern_len.max(c.bytes.len());
            }
        }
        let [cs, ci] = pats;
        let pre = [Prefilter::build(cs, false)?, Prefilter::build(ci, true)?];
        let chains = sigs.iter().map(|s| Compiled::chain(&s.contents)).collect();
        Ok(Engine {
            sigs,
            chains,
            pre,
            max_pattern_len,
        })
    }

    /// The signatures, in the order given ([`Hit::signature`] indexes them).
    pub fn signatures(&self) -> &[Signature] {
        &self.sigs
    }

    /// The longest content of any signature: a stream window keeps this
    /// many bytes minus one before its new bytes.
    pub fn max_pattern_len(&self) -> usize {
        self.max_pattern_len
    }

    /// Inspects a packet payload. Allocates its working memory: the hot
    /// path uses [`Engine::inspect_with`].
    pub fn inspect(&self, pkt: &Packet, buffer: &[u8], out: &mut Vec<Hit>) -> InspectStats {
        self.inspect_with(&mut Scratch::default(), pkt, Buffer::packet(buffer), out)
    }

    /// Inspects one buffer and appends a [`Hit`] per matching signature,
    /// in signature order. Allocates only to grow `scratch` and `out`.
    pub fn inspect_with(
        &self,
        scratch: &mut Scratch,
        pkt: &Packet,
        buffer: Buffer<'_>,
        out: &mut Vec<Hit>,
    ) -> InspectStats {
        let mut stats = InspectStats::default();
        let words = self.sigs.len().div_ceil(64);
        scratch.sig_seen.resize(words, 0);
        scratch.cands.clear();
        for (k, pre) in self.pre.iter().enumerate() {
            let Some(ac) = &pre.ac else { continue };
            let pw = pre.sigs.len().div_ceil(64);
            let (seen, touched) = (&mut scratch.pat_seen[k], &mut scratch.pats[k]);
            seen.resize(pw, 0);
            touched.clear();
            for m in ac.find_overlapping_iter(buffer.data) {
                let p = m.pattern().as_usize();
                let (w, b) = (p / 64, 1u64 << (p % 64));
                let Some(word) = seen.get_mut(w) else {
                    continue;
                };
                if *word & b != 0 {
                    continue;
                }
                *word |= b;
                touched.push(u32::try_from(p).unwrap_or(u32::MAX));
                for &s in pre.sigs.get(p).map_or(&[][..], |v| &v[..]) {
                    let (w, b) = ((s / 64) as usize, 1u64 << (s % 64));
                    if let Some(word) = scratch.sig_seen.get_mut(w) {
                        if *word & b == 0 {
                            *word |= b;
                            scratch.cands.push(s);
                        }
                    }
                }
            }
            for &p in touched.iter() {
                if let Some(word) = seen.get_mut((p / 64) as usize) {
                    *word = 0;
                }
            }
        }
        for &s in &scratch.cands {
            if let Some(word) = scratch.sig_seen.get_mut((s / 64) as usize) {
                *word = 0;
            }
        }
        scratch.cands.sort_unstable();
        for &s in &scratch.cands {
            let (Some(sig), Some(chain)) = (self.sigs.get(s as usize), self.chains.get(s as usize))
            else {
                continue;
            };
            stats.candidates = stats.candidates.saturating_add(1);
            if !header_matches(sig, pkt, buffer.kind) {
                continue;
            }
            let (base, new_from) = match buffer.kind {
                BufferKind::Packet => (0, 0),
                BufferKind::Stream {
                    stream_offset,
                    new_from,
                } => (stream_offset, new_from),
            };
            let mut cx = Cx::new(buffer.data, base, new_from, SEARCH_BUDGET);
            if chain_matches(chain, &mut cx) {
                out.push(Hit {
                    sid: sig.sid,
                    action: sig.action,
                    signature: s,
                });
            } else if cx.exhausted {
                stats.budget_exhausted = stats.budget_exhausted.saturating_add(1);
            }
        }
        stats
    }
}

/// Protocol, addresses and ports (both ways when bidirectional), flow and
/// `dsize`.
fn header_matches(s: &Signature, p: &Packet, kind: BufferKind) -> bool {
    if s.proto != Proto::Ip && s.proto != p.proto {
        return false;
    }
    let ports = s.proto.has_ports();
    let fwd = s.src.contains(p.src)
        && s.dst.contains(p.dst)
        && (!ports || (s.src_ports.contains(p.src_port) && s.dst_ports.contains(p.dst_port)));
    let rev = s.bidirectional
        && s.src.contains(p.dst)
        && s.dst.contains(p.src)
        && (!ports || (s.src_ports.contains(p.dst_port) && s.dst_ports.contains(p.src_port)));
    if !fwd && !rev {
        return false;
    }
    match s.flow.direction {
        Some(FlowDirection::ToServer) if !p.to_server => return false,
        Some(FlowDirection::ToClient) if p.to_server => return false,
        _ => {}
    }
    match s.flow.state {
        Some(FlowState::Established) if !p.established => return false,
        Some(FlowState::NotEstablished) if p.established => return false,
        _ => {}
    }
    match (s.dsize, kind) {
        (None, _) => true,
        (Some(d), BufferKind::Packet) => d.matches(p.dsize),
        (Some(_), BufferKind::Stream { .. }) => false,
    }
}
