//! The personality's memory as the front end described it (SET_MEM_TABLE):
//! up to eight regions, each a shared mapping of a sealed memory file.
//!
//! Checked before anything is mapped: regions are non-empty, do not
//! overflow and do not overlap (in guest-physical or front-end addresses);
//! each file carries `F_SEAL_SHRINK` (a front end that could shrink it would
//! turn the Viaduct's next access into SIGBUS) and is large enough for the
//! region. Lookups return a region index and offset only when the whole
//! range lies inside one region.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::SealFlags;
use thiserror::Error;

use crate::msg::RegionDesc;
use crate::sys::Mapping;

const PAGE: u64 = 4096;

/// A refused memory table.
#[derive(Debug, Error)]
pub enum MemError {
    /// The table and its descriptors disagree.
    #[error("{regions} regions but {fds} descriptors")]
    FdCount {
        /// Regions in the table.
        regions: usize,
        /// Descriptors received.
        fds: usize,
    },
    /// A region is empty, wraps around, or is too large to map.
    #[error("region {index} (guest {gpa:#x}, {size} bytes) is empty, wraps or is too large")]
    BadRange {
        /// Region index.
        index: usize,
        /// Its guest-physical address.
        gpa: u64,
        /// Its size.
        size: u64,
    },
    /// Two regions overlap.
    #[error("regions {0} and {1} overlap")]
    Overlap(usize, usize),
    /// A region's file can shrink.
    #[error("region {index}'s memory file is not sealed against shrinking (F_SEAL_SHRINK): a shrink would fault the Viaduct; use memory-backend-memfd (seal=on)")]
    NotSealed {
        /// Region index.
        index: usize,
    },
    /// A region's file is smaller than the region.
    #[error("region {index} ends at byte {end} of a {file}-byte memory file")]
    PastEof {
        /// Region index.
        index: usize,
        /// Offset of the region's end in the file.
        end: u64,
        /// File size.
        file: u64,
    },
    /// A system call failed.
    #[error("region {index}: {what}: {source}")]
    Io {
        /// Region index.
        index: usize,
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// One mapped region.
#[derive(Debug)]
pub struct Region {
    gpa: u64,
    uva: u64,
    size: u64,
    /// Offset of the region's first byte inside `map` (the mapping starts
    /// at the page below `mmap_offset`).
    skew: usize,
    map: Mapping,
    desc: RegionDesc,
}

/// The personality's memory.
#[derive(Debug)]
pub struct GuestMemory {
    regions: Vec<Region>,
}

/// Where a range lies: region index and offset inside that region's mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    /// Region index.
    pub region: usize,
    /// Byte offset in the region's mapping.
    pub off: usize,
}

impl GuestMemory {
    /// Checks the table, then maps every region.
    pub fn new(table: &[RegionDesc], fds: Vec<OwnedFd>) -> Result<GuestMemory, MemError> {
        if table.len() != fds.len() {
            return Err(MemError::FdCount {
                regions: table.len(),
                fds: fds.len(),
            });
        }
        for (i, r) in table.iter().enumerate() {
            let ok = r.size > 0
                && r.size <= isize::MAX as u64 / 2
                && r.gpa.checked_add(r.size).is_some()
                && r.uva.checked_add(r.size).is_some()
                && r.mmap_offset.checked_add(r.size).is_some();
            if !ok {
                return Err(MemError::BadRange {
                    index: i,
                    gpa: r.gpa,
                    size: r.size,
                });
            }
        }
        for (i, a) in table.iter().enumerate() {
            for (j, b) in table.iter().enumerate().skip(i + 1) {
                let overlap = |x: u64, y: u64| x < y + b.size && y < x + a.size;
                if overlap(a.gpa, b.gpa) || overlap(a.uva, b.uva) {
                    return Err(MemError::Overlap(i, j));
                }
            }
        }
        let mut regions = Vec::with_capacity(table.len());
        for (i, (r, fd)) in table.iter().zip(fds).enumerate() {
            let io = |what: &'static str| {
                move |e: rustix::io::Errno| MemError::Io {
                    index: i,
                    what,
                    source: e.into(),
                }
            };
            let seals = rustix::fs::fcntl_get_seals(fd.as_fd()).map_err(io("F_GET_SEALS"))?;
            if !seals.contains(SealFlags::SHRINK) {
                return Err(MemError::NotSealed { index: i });
            }
            let st = rustix::fs::fstat(fd.as_fd()).map_err(io("fstat"))?;
            let file = st.st_size.max(0) as u64;
            let end = r.mmap_offset + r.size;
            if end > file {
                return Err(MemError::PastEof {
                    index: i,
                    end,
                    file,
                });
            }
            let start = r.mmap_offset & !(PAGE - 1);
            let skew = (r.mmap_offset - start) as usize;
            let len = (r.size as usize)
                .checked_add(skew)
                .ok_or(MemError::BadRange {
                    index: i,
                    gpa: r.gpa,
                    size: r.size,
                })?;
            let map = Mapping::map_shared(fd.as_fd(), start, len).map_err(|e| MemError::Io {
                index: i,
                what: "mmap",
                source: e,
            })?;
            regions.push(Region {
                gpa: r.gpa,
                uva: r.uva,
                size: r.size,
                skew,
                map,
                desc: *r,
            });
        }
        Ok(GuestMemory { regions })
    }

    /// Whether `table` describes exactly these regions (a repeated
    /// SET_MEM_TABLE).
    pub fn same_layout(&self, table: &[RegionDesc]) -> bool {
        table.len() == self.regions.len()
            && table.iter().zip(&self.regions).all(|(t, r)| *t == r.desc)
    }

    fn find(&self, addr: u64, len: u64, uva: bool) -> Option<Loc> {
        let end = addr.checked_add(len)?;
        self.regions.iter().enumerate().find_map(|(i, r)| {
            let base = if uva { r.uva } else { r.gpa };
            (addr >= base && end <= base + r.size).then(|| Loc {
                region: i,
                off: r.skew + (addr - base) as usize,
            })
        })
    }

    /// The region and offset of guest-physical `[gpa, gpa+len)`, if it lies
    /// inside one region.
    pub fn gpa(&self, gpa: u64, len: u64) -> Option<Loc> {
        self.find(gpa, len, false)
    }

    /// The same for a range of the front end's virtual addresses.
    pub fn uva(&self, uva: u64, len: u64) -> Option<Loc> {
        self.find(uva, len, true)
    }

    /// The mapping of region `i`.
    pub fn map(&self, i: usize) -> Option<&Mapping> {
        self.regions.get(i).map(|r| &r.map)
    }

    /// Total bytes mapped.
    pub fn size(&self) -> u64 {
        self.regions.iter().map(|r| r.size).sum()
    }
}

/// A sealed memory file of `size` bytes, as a conforming front end makes
/// it (`memory-backend-memfd` with `seal=on`): for the driver and tests.
pub fn sealed_memfd(name: &str, size: u64) -> std::io::Result<OwnedFd> {
    use rustix::fs::MemfdFlags;
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, size)?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(gpa: u64, size: u64, uva: u64, off: u64) -> RegionDesc {
        RegionDesc {
            gpa,
            size,
            uva,
            mmap_offset: off,
        }
    }

    #[test]
    fn a_file_that_can_shrink_is_refused() {
        let fd = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 8192).unwrap();
        let e = GuestMemory::new(&[region(0, 8192, 0x7000_0000, 0)], vec![fd]).unwrap_err();
        assert!(matches!(e, MemError::NotSealed { index: 0 }), "{e}");
    }

    #[test]
    fn regions_past_the_file_or_overlapping_are_refused() {
        let fd = sealed_memfd("t", 8192).unwrap();
        let e = GuestMemory::new(&[region(0, 8192, 0, 4096)], vec![fd]).unwrap_err();
        assert!(matches!(e, MemError::PastEof { .. }), "{e}");
        let (a, b) = (
            sealed_memfd("a", 8192).unwrap(),
            sealed_memfd("b", 8192).unwrap(),
        );
        let e = GuestMemory::new(
            &[region(0, 8192, 0x10000, 0), region(4096, 8192, 0x40000, 0)],
            vec![a, b],
        )
        .unwrap_err();
        assert!(matches!(e, MemError::Overlap(0, 1)), "{e}");
        let fd = sealed_memfd("t", 8192).unwrap();
        let e = GuestMemory::new(&[region(u64::MAX - 10, 8192, 0, 0)], vec![fd]).unwrap_err();
        assert!(matches!(e, MemError::BadRange { .. }), "{e}");
    }

    #[test]
    fn lookups_stay_inside_one_region_and_honour_the_file_offset() {
        let a = sealed_memfd("a", 3 * 4096).unwrap();
        let b = sealed_memfd("b", 4096).unwrap();
        let m = GuestMemory::new(
            &[
                region(0x1000, 8192, 0x9000, 4096),
                region(0x3000, 4096, 0x20000, 0),
            ],
            vec![a, b],
        )
        .unwrap();
        assert_eq!(m.gpa(0x1000, 8192), Some(Loc { region: 0, off: 0 }));
        // Across the boundary of two adjacent regions: refused.
        assert_eq!(m.gpa(0x2ff0, 0x20), None);
        assert_eq!(m.gpa(0x3000, 4096), Some(Loc { region: 1, off: 0 }));
        assert_eq!(
            m.uva(0x9010, 4),
            Some(Loc {
                region: 0,
                off: 0x10
            })
        );
        assert_eq!(m.gpa(u64::MAX, 2), None);
        assert!(m.map(0).unwrap().write_u32(0x10, 7));
        assert_eq!(m.map(0).unwrap().read_u32(0x10), Some(7));
    }
}
