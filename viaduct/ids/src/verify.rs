//! The content chain verifier: Suricata's content inspection, with its
//! backtracking, on one buffer.
//!
//! Positions are absolute (`i64`): a packet buffer starts at 0, a stream
//! window at its stream offset. Every window is clamped to the bytes at hand
//! before any slice is taken, so no index can be out of range.

use crate::model::ContentMatch;

/// One content, ready to search.
#[derive(Clone, Debug)]
pub(crate) struct Compiled {
    /// The pattern, lower-cased when `nocase`.
    pat: Vec<u8>,
    /// KMP failure function of `pat` (nocase patterns).
    fail: Vec<u32>,
    /// A precompiled substring searcher (case-sensitive patterns; worst
    /// case linear, like KMP, and much faster on real payloads).
    finder: memchr::memmem::Finder<'static>,
    nocase: bool,
    negated: bool,
    relative: bool,
    offset: i64,
    /// `offset + depth`.
    end: Option<i64>,
    distance: i64,
    within: Option<i64>,
    /// The next content has `within`: Suricata retries this content at its
    /// next occurrence only then.
    within_next: bool,
    /// The chain's last non-negated content: in a stream window it must end
    /// in the new bytes, so each occurrence is reported once.
    last_positive: bool,
}

impl Compiled {
    /// Compiles a chain (the caller has checked every content is non-empty).
    pub(crate) fn chain(contents: &[ContentMatch]) -> Vec<Compiled> {
        let mut out: Vec<Compiled> = contents.iter().map(Compiled::one).collect();
        if let Some(p) = out.iter().rposition(|c| !c.negated) {
            if let Some(c) = out.get_mut(p) {
                c.last_positive = true;
            }
        }
        for i in 1..out.len() {
            let w = out.get(i).is_some_and(|c| c.within.is_some());
            if let Some(prev) = out.get_mut(i - 1) {
                prev.within_next = w;
            }
        }
        out
    }

    fn one(c: &ContentMatch) -> Compiled {
        let pat: Vec<u8> = if c.nocase {
            c.bytes.to_ascii_lowercase()
        } else {
            c.bytes.clone()
        };
        let fail = if c.nocase { failure(&pat) } else { Vec::new() };
        let finder = memchr::memmem::Finder::new(&pat).into_owned();
        let offset = i64::from(c.offset.unwrap_or(0));
        Compiled {
            pat,
            fail,
            finder,
            nocase: c.nocase,
            negated: c.negated,
            relative: c.is_relative(),
            offset,
            end: c.depth.map(|d| offset + i64::from(d)),
            distance: i64::from(c.distance.unwrap_or(0)),
            within: c.within.map(i64::from),
            within_next: false,
            last_positive: false,
        }
    }

    fn len(&self) -> i64 {
        // Contents are at most `MAX_CONTENT_LEN` bytes.
        i64::try_from(self.pat.len()).unwrap_or(i64::MAX)
    }

    /// The first occurrence of the pattern in `hay`, in linear time
    /// (`memmem`, or KMP over lower-cased bytes for `nocase`).
    fn find(&self, hay: &[u8]) -> Option<usize> {
        let m = self.pat.len();
        if m == 0 || m > hay.len() {
            return None;
        }
        if !self.nocase {
            return self.finder.find(hay);
        }
        let mut k = 0usize;
        for (i, &b) in hay.iter().enumerate() {
            let b = if self.nocase {
                b.to_ascii_lowercase()
            } else {
                b
            };
            while k > 0 && self.pat.get(k) != Some(&b) {
                k = self.fail.get(k - 1).map_or(0, |&f| f as usize);
            }
            if self.pat.get(k) == Some(&b) {
                k += 1;
            }
            if k == m {
                return Some(i + 1 - m);
            }
        }
        None
    }
}

/// KMP failure function: `f[i]` is the length of the longest proper prefix
/// of `p[..=i]` that is also its suffix.
fn failure(p: &[u8]) -> Vec<u32> {
    let mut f = vec![0u32; p.len()];
    let mut k = 0usize;
    for i in 1..p.len() {
        while k > 0 && p.get(i) != p.get(k) {
            k = f.get(k - 1).map_or(0, |&x| x as usize);
        }
        if p.get(i) == p.get(k) {
            k += 1;
        }
        if let Some(slot) = f.get_mut(i) {
            *slot = u32::try_from(k).unwrap_or(0);
        }
    }
    f
}

/// What one step of the chain says (Suricata's 1 / 0 / -1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Match,
    NoMatch,
    /// Give up the whole signature now.
    Discontinue,
}

/// The buffer under inspection and the work budget for one signature.
pub(crate) struct Cx<'a> {
    buf: &'a [u8],
    base: i64,
    /// A match must end after this absolute position (stream windows: the
    /// first new byte; packets: the buffer start).
    new_from: i64,
    left: u32,
    /// The budget ran out.
    pub(crate) exhausted: bool,
}

impl<'a> Cx<'a> {
    /// A context over `buf`, whose first byte is at absolute `base`, of
    /// which the bytes from `new_from` (relative to `buf`) on are new.
    pub(crate) fn new(buf: &'a [u8], base: u64, new_from: usize, budget: u32) -> Self {
        let base = i64::try_from(base)
            .unwrap_or(i64::MAX / 4)
            .min(i64::MAX / 4);
        let new_from = i64::try_from(new_from).unwrap_or(0).min(i64::MAX / 4);
        Cx {
            buf,
            base,
            new_from: base + new_from,
            left: budget,
            exhausted: false,
        }
    }

    fn end(&self) -> i64 {
        self.base + i64::try_from(self.buf.len()).unwrap_or(0).min(i64::MAX / 4)
    }
}

/// Whether the chain matches in the context's buffer.
pub(crate) fn chain_matches(chain: &[Compiled], cx: &mut Cx<'_>) -> bool {
    if chain.is_empty() {
        return false;
    }
    // The buffer start is the "previous match end" of the first content.
    step(chain, 0, cx, 0) == Step::Match
}

/// After content `i` matched (or a negated one was absent): the next
/// content, or the end of the chain.
fn after(chain: &[Compiled], i: usize, cx: &mut Cx<'_>, prev_end: i64) -> Step {
    if i + 1 >= chain.len() {
        Step::Match
    } else {
        step(chain, i + 1, cx, prev_end)
    }
}

/// Evaluates content `i` with the previous match ending at `prev_end`.
fn step(chain: &[Compiled], i: usize, cx: &mut Cx<'_>, prev_end: i64) -> Step {
    let Some(c) = chain.get(i) else {
        return Step::NoMatch;
    };
    let (buf_lo, buf_hi) = (cx.base, cx.end());
    let mut retry: Option<i64> = None;
    loop {
        if cx.left == 0 {
            cx.exhausted = true;
            return Step::Discontinue;
        }
        cx.left -= 1;
        let (mut lo, mut hi) = if c.relative {
            let lo = prev_end.saturating_add(c.distance).max(0);
            let hi = c.within.map_or(i64::MAX, |w| {
                prev_end.saturating_add(c.distance).saturating_add(w)
            });
            (lo, hi)
        } else {
            (c.offset, c.end.unwrap_or(i64::MAX))
        };
        if let Some(r) = retry {
            lo = r;
        }
        if c.last_positive {
            // Only an occurrence ending in the new bytes is a new match.
            lo = lo.max(cx.new_from.saturating_sub(c.len()).saturating_add(1));
        }
        lo = lo.max(buf_lo);
        hi = hi.min(buf_hi);
        let found = if lo < hi {
            let a = usize::try_from(lo - buf_lo).unwrap_or(usize::MAX);
            let b = usize::try_from(hi - buf_lo).unwrap_or(usize::MAX);
            cx.buf
                .get(a..b)
                .and_then(|w| c.find(w))
                .and_then(|p| i64::try_from(p).ok())
                .map(|p| lo + p)
        } else {
            None
        };
        let Some(start) = found else {
            if c.negated {
                return after(chain, i, cx, prev_end);
            }
            // An absolute content that is absent fails the signature; a
            // relative one lets the previous content try its next occurrence.
            return if c.relative {
                Step::NoMatch
            } else {
                Step::Discontinue
            };
        };
        if c.negated {
            return Step::NoMatch;
        }
        let end = start.saturating_add(c.len());
        match after(chain, i, cx, end) {
            Step::Match => return Step::Match,
            Step::Discontinue => return Step::Discontinue,
            Step::NoMatch if !c.within_next => return Step::Discontinue,
            Step::NoMatch => retry = Some(start + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(b: &str) -> ContentMatch {
        ContentMatch::new(b.as_bytes())
    }

    fn m(chain: &[ContentMatch], buf: &str) -> bool {
        let ch = Compiled::chain(chain);
        chain_matches(&ch, &mut Cx::new(buf.as_bytes(), 0, 0, 3000))
    }

    #[test]
    fn kmp_finds_first_occurrence() {
        let x = Compiled::one(&c("abab"));
        assert_eq!(x.find(b"xxabaabababab"), Some(5));
        assert_eq!(x.find(b"aba"), None);
        let y = Compiled::one(&ContentMatch {
            nocase: true,
            ..c("AbC")
        });
        assert_eq!(y.find(b"zzaBc"), Some(2));
    }

    #[test]
    fn backtracking_retries_the_earlier_content() {
        let b = ContentMatch {
            distance: Some(0),
            within: Some(1),
            ..c("b")
        };
        assert!(m(&[c("a"), b.clone()], "a a ab"));
        assert!(!m(&[c("a"), b], "a a a b"));
    }

    #[test]
    fn no_retry_without_within_on_the_next_content() {
        // "!b" after "a" with distance only: the first "a" sees a "b" later,
        // and Suricata does not retry "a" (the next content has no within).
        let nb = ContentMatch {
            negated: true,
            distance: Some(0),
            ..c("b")
        };
        assert!(!m(&[c("a"), nb.clone()], "a b a"));
        assert!(m(&[c("a"), nb], "b a"));
    }

    #[test]
    fn budget_is_counted() {
        let b = ContentMatch {
            distance: Some(0),
            within: Some(1),
            ..c("b")
        };
        let ch = Compiled::chain(&[c("a"), b]);
        let buf = "a".repeat(10_000);
        let mut cx = Cx::new(buf.as_bytes(), 0, 0, 3000);
        assert!(!chain_matches(&ch, &mut cx));
        assert!(cx.exhausted);
    }
}
