//! Split virtqueues (virtio 1.x §2.7) in the personality's memory, seen from
//! the device side.
//!
//! The guest owns the descriptor table and the available ring and may
//! rewrite them at any moment; the device owns the used ring. So:
//! - every descriptor is read once into a local copy, then checked: index
//!   below the queue size, no `INDIRECT` (not negotiated), the direction the
//!   queue expects (device-readable on transmit, device-writable on
//!   receive), a buffer inside one memory region;
//! - a chain is at most [`MAX_CHAIN`] descriptors and [`MAX_CHAIN_BYTES`]
//!   bytes: loops and oversized chains end there;
//! - a bad chain is returned to the guest as used with length 0 and
//!   counted; an available index that runs more than the queue size ahead,
//!   or a head outside the table, breaks the queue (nothing more is taken
//!   from it until the front end sets it up again);
//! - payload is copied out ([`Queue::read`]) before anything parses it.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use thiserror::Error;

use crate::mem::{GuestMemory, Loc};
use crate::msg::VringAddr;

/// Largest queue size accepted.
pub const MAX_QUEUE_SIZE: u16 = 1024;
/// Descriptors per chain, at most. Without offloads a Linux guest sends a
/// frame in one to three descriptors and posts one per receive buffer.
pub const MAX_CHAIN: usize = 16;
/// Bytes per chain, at most (a 64 KiB packet, its headers and slack).
pub const MAX_CHAIN_BYTES: u32 = 65_536 + 4096;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
/// Available ring flag: the guest does not want interrupts.
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Which way a queue's buffers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Guest → device (the guest's transmit queue): buffers are read.
    DeviceReads,
    /// Device → guest (the guest's receive queue): buffers are written.
    DeviceWrites,
}

/// A queue that cannot be set up.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SetupError {
    /// The size is not a power of two in 1..=1024.
    #[error("queue size {0} (a power of two up to {MAX_QUEUE_SIZE})")]
    Size(u32),
    /// A ring does not lie, aligned, inside one memory region.
    #[error(
        "the {ring} ring at {addr:#x} ({len} bytes) is misaligned or outside the memory table"
    )]
    Ring {
        /// Which ring.
        ring: &'static str,
        /// Its front-end address.
        addr: u64,
        /// Its length.
        len: u64,
    },
    /// Logging (live migration) was asked for.
    #[error("used-ring logging (flags {0:#x}) is not supported")]
    Logging(u32),
}

/// Why a chain was returned unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadChain {
    /// A descriptor index at or past the queue size.
    Index,
    /// An indirect descriptor (not negotiated).
    Indirect,
    /// A buffer the device may not read (or write) on this queue.
    Direction,
    /// A buffer outside the memory table or across two regions.
    Address,
    /// More than [`MAX_CHAIN`] descriptors (or a loop).
    TooLong,
    /// More than [`MAX_CHAIN_BYTES`] bytes.
    TooBig,
}

/// The queue is broken: nothing more is taken from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Broken {
    /// The available index ran more than the queue size ahead.
    #[error("the guest's available index ran ahead of its ring")]
    AvailIndex,
    /// A head index outside the descriptor table.
    #[error("the guest offered a chain head outside its descriptor table")]
    Head,
    /// A ring became unreadable.
    #[error("a ring could not be read")]
    Ring,
}

/// What [`Queue::pop`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pop {
    /// Nothing available.
    Empty,
    /// A chain to use, now in the caller's [`Chain`].
    Chain,
    /// A bad chain, already returned to the guest (used, length 0).
    Bad(BadChain),
}

/// One buffer of a chain: a region and a range in its mapping.
#[derive(Debug, Clone, Copy, Default)]
struct Seg {
    off: usize,
    len: u32,
    region: u32,
}

/// A descriptor chain taken from the available ring. Its buffers were
/// checked when it was taken; their contents were not (see [`Queue::read`]).
/// Callers keep one (or a few) and let [`Queue::pop`] fill it: nothing on
/// the data path allocates or moves chains around.
#[derive(Debug, Clone)]
pub struct Chain {
    head: u16,
    segs: [Seg; MAX_CHAIN],
    n: usize,
    total: u32,
}

impl Default for Chain {
    fn default() -> Chain {
        Chain {
            head: 0,
            segs: [Seg::default(); MAX_CHAIN],
            n: 0,
            total: 0,
        }
    }
}

impl Chain {
    /// The head descriptor's index (what goes into the used ring).
    pub fn head(&self) -> u16 {
        self.head
    }
    /// Total bytes of its buffers.
    pub fn len(&self) -> u32 {
        self.total
    }
    /// Whether its buffers hold no bytes.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

#[derive(Debug, Clone, Copy)]
struct Rings {
    desc: Loc,
    avail: Loc,
    used: Loc,
}

/// A started queue.
#[derive(Debug)]
pub struct Queue {
    mem: Arc<GuestMemory>,
    dir: Dir,
    size: u16,
    rings: Rings,
    last_avail: u16,
    /// The guest's available index as last read (reread only when the
    /// chains it announced are all taken).
    avail_seen: u16,
    used_idx: u16,
    broken: Option<Broken>,
}

impl Queue {
    /// Sets up a queue of `size` at the front end's addresses `addr`,
    /// continuing from available index `base`. Checks size and that each
    /// ring lies, aligned, in one region.
    pub fn new(
        mem: Arc<GuestMemory>,
        dir: Dir,
        size: u32,
        addr: &VringAddr,
        base: u16,
    ) -> Result<Queue, SetupError> {
        if size == 0 || size > MAX_QUEUE_SIZE as u32 || !size.is_power_of_two() {
            return Err(SetupError::Size(size));
        }
        if addr.flags != 0 {
            return Err(SetupError::Logging(addr.flags));
        }
        let n = size as u64;
        let ring = |ring: &'static str, a: u64, len: u64, align: u64| {
            mem.uva(a, len)
                .filter(|l| a % align == 0 && l.off as u64 % align == 0)
                .ok_or(SetupError::Ring { ring, addr: a, len })
        };
        let rings = Rings {
            desc: ring("descriptor", addr.desc, 16 * n, 16)?,
            avail: ring("available", addr.avail, 6 + 2 * n, 2)?,
            used: ring("used", addr.used, 6 + 8 * n, 4)?,
        };
        // The used index continues where the ring's own used index stands
        // (what the guest has seen); a fresh ring has both at `base`.
        let used_idx = mem
            .map(rings.used.region)
            .and_then(|m| m.load_u16_acquire(rings.used.off + 2))
            .unwrap_or(base);
        Ok(Queue {
            mem,
            dir,
            size: size as u16,
            rings,
            last_avail: base,
            avail_seen: base,
            used_idx,
            broken: None,
        })
    }

    /// The next available index (what GET_VRING_BASE returns).
    pub fn last_avail(&self) -> u16 {
        self.last_avail
    }

    /// Why the queue is broken, if it is.
    pub fn broken(&self) -> Option<Broken> {
        self.broken
    }

    fn map(&self, l: Loc) -> Option<&crate::sys::Mapping> {
        self.mem.map(l.region)
    }

    /// Whether the guest has made a chain available.
    pub fn has_available(&self) -> bool {
        self.broken.is_none() && self.avail_idx().is_some_and(|i| i != self.last_avail)
    }

    fn avail_idx(&self) -> Option<u16> {
        let a = self.rings.avail;
        self.map(a)?.load_u16_acquire(a.off + 2)
    }

    /// Takes the next available chain into `c`. `Empty` when there is
    /// none or the queue is broken.
    pub fn pop(&mut self, c: &mut Chain) -> Pop {
        if self.broken.is_some() {
            return Pop::Empty;
        }
        if self.avail_seen == self.last_avail {
            let Some(avail) = self.avail_idx() else {
                self.broken = Some(Broken::Ring);
                return Pop::Empty;
            };
            if avail == self.last_avail {
                return Pop::Empty;
            }
            if avail.wrapping_sub(self.last_avail) > self.size {
                self.broken = Some(Broken::AvailIndex);
                return Pop::Empty;
            }
            self.avail_seen = avail;
        }
        let a = self.rings.avail;
        let slot = a.off + 4 + 2 * (self.last_avail % self.size) as usize;
        let Some(head) = self.map(a).and_then(|m| m.read_u16(slot)) else {
            self.broken = Some(Broken::Ring);
            return Pop::Empty;
        };
        if head >= self.size {
            self.broken = Some(Broken::Head);
            return Pop::Empty;
        }
        self.last_avail = self.last_avail.wrapping_add(1);
        match self.walk(head, c) {
            Ok(()) => Pop::Chain,
            Err(b) => {
                self.add_used(head, 0);
                Pop::Bad(b)
            }
        }
    }

    /// Puts the last `n` popped chains back (not yet used): for a receive
    /// that found too little room.
    pub fn unpop(&mut self, n: u16) {
        self.last_avail = self.last_avail.wrapping_sub(n);
    }

    fn walk(&self, head: u16, c: &mut Chain) -> Result<(), BadChain> {
        c.head = head;
        c.n = 0;
        c.total = 0;
        let d = self.rings.desc;
        let m = self.map(d).ok_or(BadChain::Address)?;
        let mut idx = head;
        loop {
            if idx >= self.size {
                return Err(BadChain::Index);
            }
            if c.n == MAX_CHAIN || c.n >= self.size as usize {
                return Err(BadChain::TooLong);
            }
            let at = d.off + 16 * idx as usize;
            // Each field read once; decisions use only these copies.
            let addr = m.read_u64(at).ok_or(BadChain::Address)?;
            let len = m.read_u32(at + 8).ok_or(BadChain::Address)?;
            let flags = m.read_u16(at + 12).ok_or(BadChain::Address)?;
            let next = m.read_u16(at + 14).ok_or(BadChain::Address)?;
            if flags & F_INDIRECT != 0 {
                return Err(BadChain::Indirect);
            }
            let writes = flags & F_WRITE != 0;
            if writes != (self.dir == Dir::DeviceWrites) {
                return Err(BadChain::Direction);
            }
            c.total = c
                .total
                .checked_add(len)
                .filter(|t| *t <= MAX_CHAIN_BYTES)
                .ok_or(BadChain::TooBig)?;
            let loc = self.mem.gpa(addr, len as u64).ok_or(BadChain::Address)?;
            c.segs[c.n] = Seg {
                region: loc.region as u32,
                off: loc.off,
                len,
            };
            c.n += 1;
            if flags & F_NEXT == 0 {
                return Ok(());
            }
            idx = next;
        }
    }

    /// Walks `len` bytes of the chain's buffers from offset `skip`, calling
    /// `f(mapping, offset in it, offset in the caller's bytes, length)` per
    /// piece; stops at the chain's end or when `f` fails. Returns the bytes
    /// walked.
    fn span(
        &self,
        c: &Chain,
        mut skip: usize,
        len: usize,
        mut f: impl FnMut(&crate::sys::Mapping, usize, usize, usize) -> bool,
    ) -> usize {
        let mut done = 0;
        for s in &c.segs[..c.n] {
            if done == len {
                break;
            }
            let seg = s.len as usize;
            if skip >= seg {
                skip -= seg;
                continue;
            }
            let n = (seg - skip).min(len - done);
            let ok = self
                .mem
                .map(s.region as usize)
                .is_some_and(|m| f(m, s.off + skip, done, n));
            if !ok {
                break;
            }
            done += n;
            skip = 0;
        }
        done
    }

    /// Copies the chain's bytes from offset `skip` into `dst`; returns how
    /// many were copied (less than `dst.len()` when the chain is shorter).
    pub fn read(&self, c: &Chain, skip: usize, dst: &mut [u8]) -> usize {
        let len = dst.len();
        self.span(c, skip, len, |m, off, at, n| {
            m.copy_out(off, &mut dst[at..at + n])
        })
    }

    /// Copies `src` into the chain's buffers from offset `skip`; returns how
    /// many bytes fitted.
    pub fn write(&self, c: &Chain, skip: usize, src: &[u8]) -> usize {
        self.span(c, skip, src.len(), |m, off, at, n| {
            m.copy_in(off, &src[at..at + n])
        })
    }

    /// Returns a chain to the guest with `len` bytes written.
    pub fn add_used(&mut self, head: u16, len: u32) {
        let u = self.rings.used;
        let Some(m) = self.mem.map(u.region) else {
            return;
        };
        let slot = u.off + 4 + 8 * (self.used_idx % self.size) as usize;
        let ok = m.write_u32(slot, head as u32) && m.write_u32(slot + 4, len);
        self.used_idx = self.used_idx.wrapping_add(1);
        if !(ok && m.store_u16_release(u.off + 2, self.used_idx)) {
            self.broken = Some(Broken::Ring);
        }
    }

    /// Whether the guest wants an interrupt for what was just used (it may
    /// suppress them while it polls).
    pub fn wants_interrupt(&self) -> bool {
        // The used index store must be visible before the flags are read.
        fence(Ordering::SeqCst);
        let a = self.rings.avail;
        self.map(a)
            .and_then(|m| m.read_u16(a.off))
            .is_none_or(|f| f & AVAIL_F_NO_INTERRUPT == 0)
    }
}
