//! Anti-replay window with 64-bit extended sequence numbers (RFC 4303 §3.4.3
//! and Appendix A).
//!
//! The window is split into two steps so that it only moves after the ICV
//! verified: [`ReplayWindow::check`] infers the full 64-bit sequence number
//! and rejects replays and too-old packets without changing state;
//! [`ReplayWindow::accept`] records a verified packet. The bitmap holds at
//! least `size` bits, rounded up to 64; bit `s mod capacity` stands for the
//! sequence number `s` while `s` is inside the window. Nothing here panics.

/// A sequence number as carried on the SA (64 bits with ESN, else 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeqNo(pub u64);

impl SeqNo {
    /// Low 32 bits (transmitted).
    pub fn low(self) -> u32 {
        self.0 as u32
    }
    /// High 32 bits (not transmitted; in the AAD with ESN).
    pub fn high(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// Already received.
    Replay,
    /// Older than the window (or sequence number 0).
    OutsideWindow,
}

/// Sliding anti-replay window.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    bits: Vec<u64>,
    size: u64,
    top: u64,
    esn: bool,
}

impl ReplayWindow {
    /// A window of `size` packets (≥ 1) for an SA with or without ESN.
    pub fn new(size: u32, esn: bool) -> Self {
        let size = u64::from(size.max(1));
        let words = size.div_ceil(64) as usize;
        ReplayWindow {
            bits: vec![0; words],
            size,
            top: 0,
            esn,
        }
    }

    /// Highest sequence number accepted so far (0 before the first).
    pub fn top(&self) -> SeqNo {
        SeqNo(self.top)
    }

    fn capacity(&self) -> u64 {
        self.bits.len() as u64 * 64
    }

    fn bit(&self, s: u64) -> (usize, u64) {
        let i = s % self.capacity();
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// Infers the full sequence number from its low 32 bits (RFC 4303 A2.1)
    /// and checks it against the window. Does not modify the window.
    pub fn check(&self, seq_low: u32) -> Result<SeqNo, ReplayError> {
        let seq = if self.esn {
            self.infer(seq_low).ok_or(ReplayError::OutsideWindow)?
        } else {
            u64::from(seq_low)
        };
        if seq == 0 {
            return Err(ReplayError::OutsideWindow);
        }
        if seq > self.top {
            return Ok(SeqNo(seq));
        }
        if self.top - seq >= self.size {
            return Err(ReplayError::OutsideWindow);
        }
        let (w, m) = self.bit(seq);
        if self.bits[w] & m != 0 {
            return Err(ReplayError::Replay);
        }
        Ok(SeqNo(seq))
    }

    /// RFC 4303 Appendix A2.1: choose Seqh so that the packet is either in
    /// the window or just ahead of it. `None` if that would need Seqh < 0 or
    /// > 2^32 - 1.
    fn infer(&self, seql: u32) -> Option<u64> {
        let w = self.size;
        let tl = u64::from(self.top as u32);
        let th = self.top >> 32;
        let seql = u64::from(seql);
        let seqh = if tl >= w - 1 {
            // Window within one sequence number subspace.
            if seql >= tl - (w - 1) {
                th
            } else {
                th.checked_add(1)?
            }
        } else {
            // Window spans two subspaces: bottom = tl - w + 1 (mod 2^32).
            let bottom = (tl + (1 << 32) - (w - 1)) & 0xffff_ffff;
            if seql >= bottom {
                th.checked_sub(1)?
            } else {
                th
            }
        };
        if seqh > u64::from(u32::MAX) {
            return None;
        }
        Some((seqh << 32) | seql)
    }

    /// Whether `seq` (from [`check`](Self::check)) is the A2.1 guess that
    /// a low value below the window belongs to the next subspace, i.e. a
    /// forward jump of more than 2^31. When such a packet fails its ICV it
    /// is almost certainly a stale packet, counted as outside the window.
    pub fn is_wrap_guess(&self, seq: SeqNo) -> bool {
        self.esn && seq.0 > self.top && seq.0 - self.top > 1 << 31
    }

    /// Records a verified sequence number (returned by [`check`](Self::check)).
    pub fn accept(&mut self, seq: SeqNo) {
        let s = seq.0;
        if s > self.top {
            let advance = s - self.top;
            if advance >= self.capacity() {
                self.bits.iter_mut().for_each(|w| *w = 0);
            } else {
                for x in self.top + 1..=s {
                    let (w, m) = self.bit(x);
                    self.bits[w] &= !m;
                }
            }
            self.top = s;
        }
        let (w, m) = self.bit(s);
        self.bits[w] |= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(w: &mut ReplayWindow, low: u32) -> Result<SeqNo, ReplayError> {
        let s = w.check(low)?;
        w.accept(s);
        Ok(s)
    }

    #[test]
    fn first_packets_and_replay() {
        let mut w = ReplayWindow::new(1024, false);
        assert_eq!(take(&mut w, 0), Err(ReplayError::OutsideWindow));
        assert_eq!(take(&mut w, 1), Ok(SeqNo(1)));
        assert_eq!(take(&mut w, 1), Err(ReplayError::Replay));
        assert_eq!(take(&mut w, 3), Ok(SeqNo(3)));
        assert_eq!(take(&mut w, 2), Ok(SeqNo(2)));
        assert_eq!(take(&mut w, 2), Err(ReplayError::Replay));
    }

    #[test]
    fn window_edge() {
        let mut w = ReplayWindow::new(1024, false);
        take(&mut w, 5000).unwrap();
        // 5000 - 1023 = 3977 is the oldest in the window.
        assert_eq!(w.check(3976), Err(ReplayError::OutsideWindow));
        assert_eq!(take(&mut w, 3977), Ok(SeqNo(3977)));
        assert_eq!(take(&mut w, 3977), Err(ReplayError::Replay));
        // Moving the top by one pushes 3977 out.
        take(&mut w, 5001).unwrap();
        assert_eq!(w.check(3977), Err(ReplayError::OutsideWindow));
        assert_eq!(take(&mut w, 3978), Ok(SeqNo(3978)));
    }

    #[test]
    fn check_does_not_move_window() {
        let mut w = ReplayWindow::new(64, false);
        take(&mut w, 10).unwrap();
        assert_eq!(w.check(100_000), Ok(SeqNo(100_000)));
        assert_eq!(w.top(), SeqNo(10));
        assert_eq!(take(&mut w, 9), Ok(SeqNo(9)));
    }

    #[test]
    fn big_jump_clears_old_bits() {
        let mut w = ReplayWindow::new(128, false);
        for s in 1..=128 {
            take(&mut w, s).unwrap();
        }
        take(&mut w, 128 + 256).unwrap();
        // The bits of 1..=128 must not alias into the new window.
        for s in 257..384 {
            assert_eq!(w.check(s), Ok(SeqNo(u64::from(s))), "seq {s}");
        }
    }

    #[test]
    fn esn_rollover_across_2_pow_32() {
        let mut w = ReplayWindow::new(1024, true);
        let base = (1u64 << 32) - 10;
        // Fast-forward the window near the boundary.
        w.accept(SeqNo(base));
        for i in 1..=20u64 {
            let s = base + i;
            assert_eq!(take(&mut w, s as u32), Ok(SeqNo(s)), "seq {s:#x}");
        }
        assert_eq!(w.top(), SeqNo((1 << 32) + 10));
        // A late packet from before the boundary is still in the window.
        assert_eq!(take(&mut w, (base - 5) as u32), Ok(SeqNo(base - 5)));
        assert_eq!(take(&mut w, (base + 3) as u32), Err(ReplayError::Replay));
        // A low value below the window's bottom is taken as the next
        // subspace (A2.1): a forward jump that only the ICV can confirm.
        let x = (1u64 << 32) - 2000;
        assert_eq!(w.check(x as u32), Ok(SeqNo((1 << 32) + x)));
        assert_eq!(w.top(), SeqNo((1 << 32) + 10));
    }

    #[test]
    fn esn_start_rejects_negative_subspace() {
        let w = ReplayWindow::new(1024, true);
        assert_eq!(w.check(u32::MAX - 2), Err(ReplayError::OutsideWindow));
        assert_eq!(w.check(5), Ok(SeqNo(5)));
    }

    #[test]
    fn non_esn_never_wraps() {
        let mut w = ReplayWindow::new(64, false);
        take(&mut w, u32::MAX).unwrap();
        assert_eq!(w.check(1), Err(ReplayError::OutsideWindow));
    }
}
