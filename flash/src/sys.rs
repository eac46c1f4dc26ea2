//! The few system facilities the flasher needs beyond `std`, through
//! `rustix`'s safe wrappers (no `unsafe` here).

use std::fs::File;
use std::num::NonZeroU64;

/// The logical block size of a block device (`BLKSSZGET`).
pub fn logical_block_size(f: &File) -> std::io::Result<u32> {
    rustix::fs::ioctl_blksszget(f).map_err(std::io::Error::from)
}

/// Flushes the device's data (and its write cache).
pub fn sync_data(f: &File) -> std::io::Result<()> {
    rustix::fs::fdatasync(f).map_err(std::io::Error::from)
}

/// Drops the cached pages of `offset .. offset + len`, so that the next read
/// comes from the device.
pub fn drop_cache(f: &File, offset: u64, len: u64) -> std::io::Result<()> {
    rustix::fs::fadvise(
        f,
        offset,
        NonZeroU64::new(len),
        rustix::fs::Advice::DontNeed,
    )
    .map_err(std::io::Error::from)
}

/// Major and minor number of a device number.
pub fn major_minor(rdev: u64) -> (u32, u32) {
    (rustix::fs::major(rdev), rustix::fs::minor(rdev))
}

/// `O_DIRECT` for `OpenOptionsExt::custom_flags`.
pub const O_DIRECT: i32 = libc::O_DIRECT;
/// `O_EXCL` (on a block device: fail with `EBUSY` if mounted or held).
pub const O_EXCL: i32 = libc::O_EXCL;

/// A buffer aligned for `O_DIRECT` (4096 bytes, which covers every logical
/// block size a disk has).
pub struct AlignedBuf {
    raw: Vec<u8>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    /// Alignment.
    pub const ALIGN: usize = 4096;

    /// A zeroed buffer of `len` bytes.
    pub fn new(len: usize) -> AlignedBuf {
        let raw = vec![0u8; len + Self::ALIGN];
        let off = raw.as_ptr().align_offset(Self::ALIGN);
        AlignedBuf { raw, off, len }
    }

    /// Its length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The first `n` bytes (at most the buffer's length).
    pub fn get_mut(&mut self, n: usize) -> &mut [u8] {
        let n = n.min(self.len);
        self.raw.get_mut(self.off..self.off + n).unwrap_or_default()
    }
}
