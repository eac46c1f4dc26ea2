//! The crate's only `unsafe`: mapping the front end's memory regions and
//! reading and writing them. Every access is bounds-checked against the
//! mapping's length before the pointer is formed.
//!
//! The memory is shared with an untrusted guest that may change any byte at
//! any time. Ring fields are read once each with volatile or atomic loads
//! (never re-read after checking); payload is copied into the Viaduct's own
//! buffers with `copy_nonoverlapping` before anything parses it.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

/// A `MAP_SHARED` read-write mapping of part of a memory file.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value until drop; every
// access goes through the bounds-checked methods below, which use volatile,
// atomic or copy operations that are sound from any thread (a concurrent
// writer — another thread or the guest — can only change the bytes read,
// never the validity of the access).
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`: no method hands out references into the mapping.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` from `offset` (page-aligned), shared and
    /// read-write.
    pub fn map_shared(fd: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        // SAFETY: a fresh mapping at an address the kernel chooses (null
        // hint) cannot alias any Rust object; `fd` is valid for the call;
        // the result is checked before use and unmapped exactly once in Drop.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                fd,
                offset,
            )
        }?;
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Mapping { ptr, len })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false (mappings are never empty).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `[off, off+n)` lies inside the mapping and `off` is aligned
    /// to `align`.
    fn fits(&self, off: usize, n: usize, align: usize) -> bool {
        off.checked_add(n).is_some_and(|end| end <= self.len) && off % align == 0
    }

    /// A volatile 16-bit little-endian read, or `None` out of bounds or
    /// misaligned.
    pub fn read_u16(&self, off: usize) -> Option<u16> {
        if !self.fits(off, 2, 2) {
            return None;
        }
        // SAFETY: in bounds and aligned (checked above); the mapping lives as
        // long as `self`.
        Some(u16::from_le(unsafe {
            self.ptr.as_ptr().add(off).cast::<u16>().read_volatile()
        }))
    }

    /// A volatile 32-bit little-endian read.
    pub fn read_u32(&self, off: usize) -> Option<u32> {
        if !self.fits(off, 4, 4) {
            return None;
        }
        // SAFETY: in bounds and aligned (checked above).
        Some(u32::from_le(unsafe {
            self.ptr.as_ptr().add(off).cast::<u32>().read_volatile()
        }))
    }

    /// A volatile 64-bit little-endian read.
    pub fn read_u64(&self, off: usize) -> Option<u64> {
        if !self.fits(off, 8, 8) {
            return None;
        }
        // SAFETY: in bounds and aligned (checked above).
        Some(u64::from_le(unsafe {
            self.ptr.as_ptr().add(off).cast::<u64>().read_volatile()
        }))
    }

    /// A volatile 16-bit little-endian write; false out of bounds.
    pub fn write_u16(&self, off: usize, v: u16) -> bool {
        if !self.fits(off, 2, 2) {
            return false;
        }
        // SAFETY: in bounds and aligned (checked above); shared memory that
        // no Rust reference points into.
        unsafe {
            self.ptr
                .as_ptr()
                .add(off)
                .cast::<u16>()
                .write_volatile(v.to_le())
        };
        true
    }

    /// A volatile 32-bit little-endian write.
    pub fn write_u32(&self, off: usize, v: u32) -> bool {
        if !self.fits(off, 4, 4) {
            return false;
        }
        // SAFETY: in bounds and aligned (checked above).
        unsafe {
            self.ptr
                .as_ptr()
                .add(off)
                .cast::<u32>()
                .write_volatile(v.to_le())
        };
        true
    }

    /// A volatile 64-bit little-endian write.
    pub fn write_u64(&self, off: usize, v: u64) -> bool {
        if !self.fits(off, 8, 8) {
            return false;
        }
        // SAFETY: in bounds and aligned (checked above).
        unsafe {
            self.ptr
                .as_ptr()
                .add(off)
                .cast::<u64>()
                .write_volatile(v.to_le())
        };
        true
    }

    /// An acquire load of a 16-bit ring index (x86 and other little-endian
    /// hosts only, like the rest of the back end).
    pub fn load_u16_acquire(&self, off: usize) -> Option<u16> {
        if !self.fits(off, 2, 2) {
            return None;
        }
        // SAFETY: in bounds and 2-aligned (checked above), so a valid
        // `AtomicU16` location for the mapping's lifetime, which outlives
        // this borrow; other writers (the guest) use atomic or plain stores
        // of the same size.
        let a = unsafe { AtomicU16::from_ptr(self.ptr.as_ptr().add(off).cast::<u16>()) };
        Some(u16::from_le(a.load(Ordering::Acquire)))
    }

    /// A release store of a 16-bit ring index.
    pub fn store_u16_release(&self, off: usize, v: u16) -> bool {
        if !self.fits(off, 2, 2) {
            return false;
        }
        // SAFETY: as in `load_u16_acquire`.
        let a = unsafe { AtomicU16::from_ptr(self.ptr.as_ptr().add(off).cast::<u16>()) };
        a.store(v.to_le(), Ordering::Release);
        true
    }

    /// Copies `dst.len()` bytes from `off` into `dst`; false (and nothing
    /// copied) out of bounds.
    pub fn copy_out(&self, off: usize, dst: &mut [u8]) -> bool {
        if !self.fits(off, dst.len(), 1) {
            return false;
        }
        // SAFETY: the source range is inside the mapping (checked above) and
        // cannot overlap `dst`, which is Rust-owned memory outside every
        // mapping; the bytes may change under the copy, which only changes
        // what is copied (every byte pattern is a valid `u8`).
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), dst.as_mut_ptr(), dst.len())
        };
        true
    }

    /// Copies `src` into the mapping at `off`; false out of bounds.
    pub fn copy_in(&self, off: usize, src: &[u8]) -> bool {
        if !self.fits(off, src.len(), 1) {
            return false;
        }
        // SAFETY: the destination range is inside the mapping (checked
        // above) and cannot overlap `src`, which is Rust-owned memory.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(off), src.len())
        };
        true
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; nothing refers
        // into the mapping past this point (no references are ever handed
        // out).
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
