//! FAT32 file systems for the EFI system partition: a deterministic writer and a
//! reader for verification.
//!
//! # Geometry
//! 512-byte sectors, 32 reserved sectors (boot sector at 0, FSInfo at 1, backups at 6
//! and 7), two FATs, root directory at cluster 2. Cluster size follows Microsoft's
//! FAT32 table: 512 bytes (1 sector) below 260 MiB, then 4 KiB up to 8 GiB, 8 KiB up to
//! 16 GiB, 16 KiB up to 32 GiB and 32 KiB above. FAT32 needs at least 65525 clusters,
//! so the smallest volume is [`min_fat32_size`] = 34 089 472 bytes (≈ 32.5 MiB); use
//! at least 33 MiB, 64 MiB is a comfortable ESP. The largest is 2 TiB.
//!
//! # Writer invariants
//! * Volume ID, label and every timestamp come from [`FatParams`]; nothing else varies.
//! * Children of a directory are sorted by their upper-cased name; clusters are
//!   allocated contiguously in depth-first pre-order (directory, then its children).
//! * A name that fits 8.3 with a single case per part gets a short entry only (lower
//!   case recorded in the NT case bits, as Windows/Linux/mtools do); any other name
//!   gets VFAT long-name entries plus a generated `BASIS~N.EXT` short name. `.` and
//!   `..` never get long-name entries.
//! * FSInfo's free-cluster count and next-free hint are exact; FAT[1] has the clean
//!   bits set.
//! * The writer writes only non-zero regions: the target must read as zeros (a new
//!   file; [`FatBuilder::write_file`] and [`FatBuilder::to_vec`] guarantee this).
//!
//! # Reader
//! [`FatVolume`] validates the boot sector, follows cluster chains with loop and range
//! checks, and never panics.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use crate::{ByteLen, Content, Epoch, Error, Result, SECTOR_SIZE};

const SECTOR: usize = SECTOR_SIZE as usize;
const RESERVED_SECTORS: u64 = 32;
const NUM_FATS: u64 = 2;
const MIN_CLUSTERS: u64 = 65525;
const MAX_CLUSTERS: u64 = 0x0FFF_FFF5 - 2;
const EOC: u32 = 0x0FFF_FFFF;
const ATTR_READ_ONLY: u8 = 0x01;
const ATTR_HIDDEN: u8 = 0x02;
const ATTR_SYSTEM: u8 = 0x04;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LFN: u8 = ATTR_READ_ONLY | ATTR_HIDDEN | ATTR_SYSTEM | ATTR_VOLUME_ID;
const NT_LOWER_BASE: u8 = 0x08;
const NT_LOWER_EXT: u8 = 0x10;

/// Parameters of a FAT32 volume; all caller-given so the image is reproducible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatParams {
    /// Volume size; a multiple of 512 bytes, at least [`min_fat32_size`].
    pub size: ByteLen,
    /// Volume serial number (derive it from a digest).
    pub volume_id: u32,
    /// Volume label: up to 11 characters from `A-Z 0-9 _ -` and space; `None` = "NO NAME".
    pub label: Option<String>,
    /// Timestamp of every file and directory (clamped to 1980-01-01..2107-12-31).
    pub timestamp: Epoch,
    /// Sectors preceding the volume on its disk (BPB `HiddSec`; the partition's start
    /// LBA, or 0).
    pub hidden_sectors: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    total_sectors: u64,
    sectors_per_cluster: u64,
    fat_sectors: u64,
    clusters: u64,
}

impl Geometry {
    fn cluster_bytes(&self) -> u64 {
        self.sectors_per_cluster * SECTOR_SIZE
    }

    fn data_start_sector(&self) -> u64 {
        RESERVED_SECTORS + NUM_FATS * self.fat_sectors
    }

    fn cluster_offset(&self, cluster: u64) -> u64 {
        (self.data_start_sector() + (cluster - 2) * self.sectors_per_cluster) * SECTOR_SIZE
    }
}

fn sectors_per_cluster_for(total_sectors: u64) -> u64 {
    match total_sectors {
        0..532_480 => 1,
        532_480..16_777_216 => 8,
        16_777_216..33_554_432 => 16,
        33_554_432..67_108_864 => 32,
        _ => 64,
    }
}

fn geometry_with(total_sectors: u64, spc: u64) -> Option<Geometry> {
    // Smallest FAT size (in sectors) that covers all clusters left after it; the left
    // side decreases and the right side grows with `fat`, so binary search works.
    let clusters_for = |fat: u64| {
        total_sectors
            .checked_sub(RESERVED_SECTORS + NUM_FATS * fat)
            .map(|d| d / spc)
    };
    let fits = |fat: u64| clusters_for(fat).is_none_or(|c| (c + 2) * 4 <= fat * SECTOR_SIZE);
    let (mut lo, mut hi) = (1u64, total_sectors.max(1));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let clusters = clusters_for(lo)?;
    Some(Geometry {
        total_sectors,
        sectors_per_cluster: spc,
        fat_sectors: lo,
        clusters,
    })
}

fn geometry(size: ByteLen) -> Result<Geometry> {
    if size.0 % SECTOR_SIZE != 0 {
        return Err(Error::FatMalformed(format!(
            "volume size {} is not a multiple of 512 bytes",
            size.0
        )));
    }
    let total = size.0 / SECTOR_SIZE;
    if total > u32::MAX as u64 {
        return Err(Error::FatTooLarge {
            size: size.0,
            maximum: u32::MAX as u64 * SECTOR_SIZE,
        });
    }
    let g = geometry_with(total, sectors_per_cluster_for(total));
    match g {
        Some(g) if (MIN_CLUSTERS..=MAX_CLUSTERS).contains(&g.clusters) => Ok(g),
        _ => Err(Error::FatTooSmall {
            size: size.0,
            minimum: min_fat32_size().0,
        }),
    }
}

/// The smallest size of a FAT32 volume this writer accepts (65525 clusters of 512
/// bytes plus 32 reserved sectors and two FATs): 34 089 472 bytes.
pub fn min_fat32_size() -> ByteLen {
    // 65525 clusters need 2 × 512 FAT sectors.
    let fat = ((MIN_CLUSTERS + 2) * 4).div_ceil(SECTOR_SIZE);
    ByteLen((RESERVED_SECTORS + NUM_FATS * fat + MIN_CLUSTERS) * SECTOR_SIZE)
}

#[derive(Clone, Debug)]
enum Node {
    Dir(BTreeMap<String, (String, Node)>),
    File(Content),
}

/// Collects a tree of directories and files and writes a FAT32 image.
#[derive(Clone, Debug)]
pub struct FatBuilder {
    params: FatParams,
    root: BTreeMap<String, (String, Node)>,
}

fn validate_component(c: &str) -> Result<()> {
    let bad = |reason| Error::FatInvalidName {
        name: c.to_owned(),
        reason,
    };
    if c.is_empty() || c == "." || c == ".." {
        return Err(bad("empty, '.' and '..' components are not allowed"));
    }
    if c.encode_utf16().count() > 255 {
        return Err(bad("longer than 255 UTF-16 units"));
    }
    if c.chars()
        .any(|ch| (ch as u32) < 0x20 || "\"*/:<>?\\|\u{7f}".contains(ch))
    {
        return Err(bad(
            "contains a control character or one of \" * / : < > ? \\ |",
        ));
    }
    if c.ends_with('.') || c.ends_with(' ') || c.starts_with(' ') {
        return Err(bad(
            "leading spaces and trailing dots or spaces are not portable",
        ));
    }
    Ok(())
}

fn split_path(path: &str) -> Result<Vec<&str>> {
    let comps: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for c in &comps {
        validate_component(c)?;
    }
    Ok(comps)
}

fn label_bytes(label: &Option<String>) -> Result<[u8; 11]> {
    let mut out = *b"NO NAME    ";
    if let Some(l) = label {
        if l.is_empty()
            || l.len() > 11
            || !l
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"_- ".contains(&b))
        {
            return Err(Error::FatInvalidName {
                name: l.clone(),
                reason: "a volume label has 1 to 11 characters from A-Z 0-9 _ - and space",
            });
        }
        out = [b' '; 11];
        out[..l.len()].copy_from_slice(l.as_bytes());
    }
    Ok(out)
}

/// DOS date and time (2-second resolution, UTC).
fn dos_datetime(t: Epoch) -> (u16, u16) {
    const MIN: u64 = 315_532_800; // 1980-01-01
    const MAX: u64 = 4_354_819_198; // 2107-12-31 23:59:58
    let s = t.0.clamp(MIN, MAX);
    let days = (s / 86_400) as i64;
    let rem = s % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let date = (((year - 1980) as u16) << 9) | ((month as u16) << 5) | day as u16;
    let time =
        (((rem / 3600) as u16) << 11) | ((((rem / 60) % 60) as u16) << 5) | ((rem % 60) / 2) as u16;
    (date, time)
}

fn is_sfn_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || b"!#$%&'()-@^_`{}~".contains(&b)
}

/// If `name` can be stored as a short entry alone, returns the 11-byte name and the NT
/// case flags.
fn exact_short_name(name: &str) -> Option<([u8; 11], u8)> {
    if !name.is_ascii() {
        return None;
    }
    let (base, ext) = match name.rfind('.') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (name, ""),
    };
    if base.is_empty() || base.len() > 8 || ext.len() > 3 || base.contains('.') {
        return None;
    }
    if name.contains('.') && ext.is_empty() {
        return None;
    }
    let case = |s: &str, flag: u8| -> Option<u8> {
        let lower = s.bytes().any(|b| b.is_ascii_lowercase());
        let upper = s.bytes().any(|b| b.is_ascii_uppercase());
        match (lower, upper) {
            (true, true) => None,
            (true, false) => Some(flag),
            _ => Some(0),
        }
    };
    let flags = case(base, NT_LOWER_BASE)? | case(ext, NT_LOWER_EXT)?;
    let mut out = [b' '; 11];
    for (i, b) in base.bytes().enumerate() {
        let u = b.to_ascii_uppercase();
        if !is_sfn_char(u) {
            return None;
        }
        out[i] = u;
    }
    for (i, b) in ext.bytes().enumerate() {
        let u = b.to_ascii_uppercase();
        if !is_sfn_char(u) {
            return None;
        }
        out[8 + i] = u;
    }
    if out[0] == 0xE5 {
        return None;
    }
    Some((out, flags))
}

/// The generated `BASIS~N.EXT` short name for a long name.
fn numbered_short_name(name: &str, n: u32) -> [u8; 11] {
    let conv = |s: &str| -> Vec<u8> {
        s.chars()
            .filter(|&c| c != ' ' && c != '.')
            .map(|c| {
                let u = c.to_ascii_uppercase();
                if u.is_ascii() && is_sfn_char(u as u8) {
                    u as u8
                } else {
                    b'_'
                }
            })
            .collect()
    };
    let trimmed = name.trim_start_matches('.');
    let (base, ext) = match trimmed.rfind('.') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (trimmed, ""),
    };
    let mut base = conv(base);
    let ext = conv(ext);
    if base.is_empty() {
        base.push(b'_');
    }
    let tail = format!("~{n}");
    base.truncate(8 - tail.len());
    base.extend_from_slice(tail.as_bytes());
    let mut out = [b' '; 11];
    out[..base.len()].copy_from_slice(&base);
    for (i, b) in ext.iter().take(3).enumerate() {
        out[8 + i] = *b;
    }
    out
}

fn sfn_checksum(sfn: &[u8; 11]) -> u8 {
    sfn.iter().fold(0u8, |s, &c| {
        ((s & 1) << 7).wrapping_add(s >> 1).wrapping_add(c)
    })
}

struct DirEntryPlan {
    sfn: [u8; 11],
    nt_flags: u8,
    lfn: Vec<[u8; 32]>,
}

fn lfn_entries(name: &str, sfn: &[u8; 11]) -> Vec<[u8; 32]> {
    let units: Vec<u16> = name.encode_utf16().collect();
    let n = units.len().div_ceil(13);
    let ck = sfn_checksum(sfn);
    let mut padded = units.clone();
    if padded.len() < n * 13 {
        padded.push(0);
    }
    padded.resize(n * 13, 0xFFFF);
    let mut out = Vec::with_capacity(n);
    for i in (0..n).rev() {
        let mut e = [0u8; 32];
        e[0] = (i as u8 + 1) | if i == n - 1 { 0x40 } else { 0 };
        e[11] = ATTR_LFN;
        e[13] = ck;
        let chunk = &padded[i * 13..(i + 1) * 13];
        let pos: [usize; 13] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
        for (u, p) in chunk.iter().zip(pos) {
            e[p..p + 2].copy_from_slice(&u.to_le_bytes());
        }
        out.push(e);
    }
    out
}

fn plan_names(children: &BTreeMap<String, (String, Node)>) -> Vec<DirEntryPlan> {
    let mut used: BTreeSet<[u8; 11]> = BTreeSet::new();
    let mut exact: BTreeMap<&str, ([u8; 11], u8)> = BTreeMap::new();
    for (key, (name, _)) in children {
        if let Some((s, f)) = exact_short_name(name) {
            used.insert(s);
            exact.insert(key, (s, f));
        }
    }
    let mut out = Vec::new();
    for (key, (name, _)) in children {
        if let Some(&(sfn, nt)) = exact.get(key.as_str()) {
            out.push(DirEntryPlan {
                sfn,
                nt_flags: nt,
                lfn: Vec::new(),
            });
            continue;
        }
        let mut n = 1;
        let sfn = loop {
            let s = numbered_short_name(name, n);
            if used.insert(s) {
                break s;
            }
            n += 1;
        };
        out.push(DirEntryPlan {
            sfn,
            nt_flags: 0,
            lfn: lfn_entries(name, &sfn),
        });
    }
    out
}

/// Where a directory or file ended up (returned by the writer, useful in tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatLayout {
    /// Cluster size in bytes.
    pub cluster_size: ByteLen,
    /// Number of data clusters.
    pub clusters: u64,
    /// Clusters in use (directories and files).
    pub used_clusters: u64,
    /// Bytes from the volume's start to the end of its last used cluster:
    /// the reserved sectors, both FATs in full, every directory and file. All
    /// of it must be on a device (zeros included); the free clusters after it
    /// need not be.
    pub written_len: ByteLen,
}

struct Alloc {
    next: u64,
    chains: Vec<(u64, u64)>, // (first cluster, count)
}

impl Alloc {
    fn take(&mut self, count: u64) -> u32 {
        if count == 0 {
            return 0;
        }
        let first = self.next;
        self.chains.push((first, count));
        self.next += count;
        first as u32
    }
}

/// Sink for non-zero regions of the image.
type Put<'a> = dyn FnMut(u64, &[u8]) -> Result<()> + 'a;

impl FatBuilder {
    /// A new, empty volume. Validates the size and label.
    pub fn new(params: FatParams) -> Result<Self> {
        geometry(params.size)?;
        label_bytes(&params.label)?;
        Ok(FatBuilder {
            params,
            root: BTreeMap::new(),
        })
    }

    fn dir_mut(
        &mut self,
        comps: &[&str],
        create: bool,
    ) -> Result<&mut BTreeMap<String, (String, Node)>> {
        let mut cur = &mut self.root;
        for (i, c) in comps.iter().enumerate() {
            let key = c.to_uppercase();
            if !cur.contains_key(&key) {
                if !create {
                    return Err(Error::NotFound(comps[..=i].join("/")));
                }
                cur.insert(key.clone(), ((*c).to_owned(), Node::Dir(BTreeMap::new())));
            }
            match cur.get_mut(&key) {
                Some((_, Node::Dir(d))) => cur = d,
                _ => {
                    return Err(Error::FatInvalidName {
                        name: comps[..=i].join("/"),
                        reason: "is a file but is used as a directory",
                    })
                }
            }
        }
        Ok(cur)
    }

    /// Adds a directory (and its parents). Adding an existing directory is a no-op.
    pub fn add_dir(&mut self, path: &str) -> Result<()> {
        let comps = split_path(path)?;
        self.dir_mut(&comps, true).map(|_| ())
    }

    /// Adds a file (parents are created). Names are case-insensitive: `a` and `A`
    /// collide.
    pub fn add_file(&mut self, path: &str, content: impl Into<Content>) -> Result<()> {
        let comps = split_path(path)?;
        let (name, parents) = comps
            .split_last()
            .ok_or_else(|| Error::NotFound(path.to_owned()))?;
        let dir = self.dir_mut(parents, true)?;
        let key = name.to_uppercase();
        if dir.contains_key(&key) {
            return Err(Error::DuplicatePath(path.to_owned()));
        }
        let content = content.into();
        let len = content.len()?;
        if len.0 > u32::MAX as u64 {
            return Err(Error::FieldOverflow {
                what: "FAT file size",
                value: len.0,
                max: u32::MAX as u64,
                hint: "FAT32 files must be smaller than 4 GiB",
            });
        }
        dir.insert(key, ((*name).to_owned(), Node::File(content)));
        Ok(())
    }

    fn clusters_needed(
        dir: &BTreeMap<String, (String, Node)>,
        is_root: bool,
        g: &Geometry,
        has_label: bool,
    ) -> Result<u64> {
        let cb = g.cluster_bytes();
        let names = plan_names(dir);
        let mut slots: u64 = if is_root { u64::from(has_label) } else { 2 };
        slots += names.iter().map(|p| 1 + p.lfn.len() as u64).sum::<u64>();
        let mut total = (slots * 32).div_ceil(cb).max(1);
        for (_, node) in dir.values() {
            total += match node {
                Node::Dir(d) => Self::clusters_needed(d, false, g, false)?,
                Node::File(c) => c.len()?.0.div_ceil(cb),
            };
        }
        Ok(total)
    }

    /// Checks that the tree fits with `extra` bytes of further files (one
    /// file of that size) left free: room for a later update.
    ///
    /// # Errors
    /// [`Error::FatDoesNotFit`] with the size that would fit.
    pub fn check_room(&self, extra: ByteLen) -> Result<()> {
        self.check_fits_with(extra.0).map(|_| ())
    }

    fn check_fits(&self) -> Result<Geometry> {
        self.check_fits_with(0)
    }

    fn check_fits_with(&self, extra: u64) -> Result<Geometry> {
        let g = geometry(self.params.size)?;
        let has_label = self.params.label.is_some();
        let extra_clusters = |g: &Geometry| extra.div_ceil(g.cluster_bytes());
        let needed = Self::clusters_needed(&self.root, true, &g, has_label)? + extra_clusters(&g);
        if needed <= g.clusters {
            return Ok(g);
        }
        // Find the smallest size (in MiB steps) that fits.
        let mut size = (self.params.size.0 + needed.saturating_sub(g.clusters) * g.cluster_bytes())
            .div_ceil(1 << 20)
            << 20;
        loop {
            if let Ok(g2) = geometry(ByteLen(size)) {
                if Self::clusters_needed(&self.root, true, &g2, has_label)? + extra_clusters(&g2)
                    <= g2.clusters
                {
                    break;
                }
            }
            size += 1 << 20;
        }
        Err(Error::FatDoesNotFit {
            needed: needed * g.cluster_bytes(),
            available: g.clusters * g.cluster_bytes(),
            suggested_size: size,
        })
    }

    /// Writes the volume into `out`, which must read as zeros (e.g. a new file).
    /// Only non-zero regions are written; the caller sets the length.
    fn emit(&self, put: &mut Put<'_>) -> Result<FatLayout> {
        let g = self.check_fits()?;
        let cb = g.cluster_bytes();
        let (date, time) = dos_datetime(self.params.timestamp);
        let label = label_bytes(&self.params.label)?;
        let mut alloc = Alloc {
            next: 2,
            chains: Vec::new(),
        };
        // Directories are emitted after allocation; files streamed directly.
        let root_cluster = {
            let slots = u64::from(self.params.label.is_some())
                + plan_names(&self.root)
                    .iter()
                    .map(|p| 1 + p.lfn.len() as u64)
                    .sum::<u64>();
            alloc.take((slots * 32).div_ceil(cb).max(1))
        };
        self.emit_dir(
            &self.root,
            root_cluster,
            0,
            true,
            &g,
            &mut alloc,
            put,
            (date, time),
            label,
        )?;
        let used = alloc.next - 2;
        // FAT.
        let mut fat: Vec<u8> = Vec::with_capacity((alloc.next as usize) * 4);
        fat.extend_from_slice(&0x0FFF_FFF8u32.to_le_bytes());
        fat.extend_from_slice(&EOC.to_le_bytes());
        for &(first, count) in &alloc.chains {
            for c in first..first + count {
                let v = if c + 1 == first + count {
                    EOC
                } else {
                    (c + 1) as u32
                };
                fat.extend_from_slice(&v.to_le_bytes());
            }
        }
        for i in 0..NUM_FATS {
            put((RESERVED_SECTORS + i * g.fat_sectors) * SECTOR_SIZE, &fat)?;
        }
        // Boot sector and FSInfo, plus backups.
        let boot = self.boot_sector(&g, label);
        let mut fsinfo = [0u8; SECTOR];
        fsinfo[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
        fsinfo[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
        fsinfo[488..492].copy_from_slice(&((g.clusters - used) as u32).to_le_bytes());
        let next_free = if used < g.clusters {
            alloc.next as u32
        } else {
            0xFFFF_FFFF
        };
        fsinfo[492..496].copy_from_slice(&next_free.to_le_bytes());
        fsinfo[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
        for base in [0u64, 6] {
            put(base * SECTOR_SIZE, &boot)?;
            put((base + 1) * SECTOR_SIZE, &fsinfo)?;
        }
        Ok(FatLayout {
            cluster_size: ByteLen(cb),
            clusters: g.clusters,
            used_clusters: used,
            written_len: ByteLen(g.cluster_offset(alloc.next)),
        })
    }

    fn boot_sector(&self, g: &Geometry, label: [u8; 11]) -> [u8; SECTOR] {
        let mut b = [0u8; SECTOR];
        b[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
        b[3..11].copy_from_slice(b"MSWIN4.1");
        b[11..13].copy_from_slice(&(SECTOR_SIZE as u16).to_le_bytes());
        b[13] = g.sectors_per_cluster as u8;
        b[14..16].copy_from_slice(&(RESERVED_SECTORS as u16).to_le_bytes());
        b[16] = NUM_FATS as u8;
        b[21] = 0xF8;
        b[24..26].copy_from_slice(&63u16.to_le_bytes());
        b[26..28].copy_from_slice(&255u16.to_le_bytes());
        b[28..32].copy_from_slice(&self.params.hidden_sectors.to_le_bytes());
        b[32..36].copy_from_slice(&(g.total_sectors as u32).to_le_bytes());
        b[36..40].copy_from_slice(&(g.fat_sectors as u32).to_le_bytes());
        b[44..48].copy_from_slice(&2u32.to_le_bytes());
        b[48..50].copy_from_slice(&1u16.to_le_bytes());
        b[50..52].copy_from_slice(&6u16.to_le_bytes());
        b[64] = 0x80;
        b[66] = 0x29;
        b[67..71].copy_from_slice(&self.params.volume_id.to_le_bytes());
        b[71..82].copy_from_slice(&label);
        b[82..90].copy_from_slice(b"FAT32   ");
        // Not bootable in BIOS mode: cli; hlt; jmp hlt.
        b[90..94].copy_from_slice(&[0xFA, 0xF4, 0xEB, 0xFD]);
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_dir(
        &self,
        dir: &BTreeMap<String, (String, Node)>,
        my_cluster: u32,
        parent_cluster: u32,
        is_root: bool,
        g: &Geometry,
        alloc: &mut Alloc,
        put: &mut Put<'_>,
        (date, time): (u16, u16),
        label: [u8; 11],
    ) -> Result<()> {
        let cb = g.cluster_bytes();
        let sfn_entry = |name: &[u8; 11], attr: u8, nt: u8, cluster: u32, size: u32| {
            let mut e = [0u8; 32];
            e[0..11].copy_from_slice(name);
            e[11] = attr;
            e[12] = nt;
            e[14..16].copy_from_slice(&time.to_le_bytes());
            e[16..18].copy_from_slice(&date.to_le_bytes());
            e[18..20].copy_from_slice(&date.to_le_bytes());
            e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
            e[22..24].copy_from_slice(&time.to_le_bytes());
            e[24..26].copy_from_slice(&date.to_le_bytes());
            e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
            e[28..32].copy_from_slice(&size.to_le_bytes());
            e
        };
        let mut bytes: Vec<u8> = Vec::new();
        if is_root {
            if self.params.label.is_some() {
                let mut e = sfn_entry(&label, ATTR_VOLUME_ID, 0, 0, 0);
                e[14..20].fill(0);
                bytes.extend_from_slice(&e);
            }
        } else {
            bytes.extend_from_slice(&sfn_entry(b".          ", ATTR_DIRECTORY, 0, my_cluster, 0));
            bytes.extend_from_slice(&sfn_entry(
                b"..         ",
                ATTR_DIRECTORY,
                0,
                parent_cluster,
                0,
            ));
        }
        let names = plan_names(dir);
        // Allocate children in order, then recurse into subdirectories.
        let mut subdirs = Vec::new();
        for (plan, (_, node)) in names.iter().zip(dir.values()) {
            for l in &plan.lfn {
                bytes.extend_from_slice(l);
            }
            match node {
                Node::File(c) => {
                    let len = c.len()?.0;
                    let first = alloc.take(len.div_ceil(cb));
                    if first != 0 {
                        let base = g.cluster_offset(first as u64);
                        c.for_each_chunk(len, |off, chunk| {
                            if chunk.iter().all(|&b| b == 0) {
                                Ok(())
                            } else {
                                put(base + off, chunk)
                            }
                        })?;
                    }
                    bytes.extend_from_slice(&sfn_entry(
                        &plan.sfn,
                        ATTR_ARCHIVE,
                        plan.nt_flags,
                        first,
                        len as u32,
                    ));
                }
                Node::Dir(d) => {
                    let sub_names = plan_names(d);
                    let slots = 2 + sub_names
                        .iter()
                        .map(|p| 1 + p.lfn.len() as u64)
                        .sum::<u64>();
                    let first = alloc.take((slots * 32).div_ceil(cb).max(1));
                    bytes.extend_from_slice(&sfn_entry(
                        &plan.sfn,
                        ATTR_DIRECTORY,
                        plan.nt_flags,
                        first,
                        0,
                    ));
                    subdirs.push((d, first));
                }
            }
        }
        put(g.cluster_offset(my_cluster as u64), &bytes)?;
        for (d, first) in subdirs {
            self.emit_dir(
                d,
                first,
                if is_root { 0 } else { my_cluster },
                false,
                g,
                alloc,
                put,
                (date, time),
                label,
            )?;
        }
        Ok(())
    }

    /// Writes the image to a new file at `path` (replacing it).
    pub fn write_file(&self, path: &Path) -> Result<FatLayout> {
        let mut f = File::create(path).map_err(Error::io("creating", path))?;
        f.set_len(self.params.size.0)
            .map_err(Error::io("setting the length of", path))?;
        let layout = self.emit(&mut |off, data| {
            f.seek(SeekFrom::Start(off))
                .map_err(Error::io("seeking in", path))?;
            f.write_all(data).map_err(Error::io("writing", path))
        })?;
        f.sync_all().map_err(Error::io("syncing", path))?;
        Ok(layout)
    }

    /// The image in memory (size = [`FatParams::size`]).
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        self.to_vec_with_layout().map(|(v, _)| v)
    }

    /// The image in memory and where its parts ended up.
    pub fn to_vec_with_layout(&self) -> Result<(Vec<u8>, FatLayout)> {
        let size = usize::try_from(self.params.size.0).map_err(|_| Error::FatTooLarge {
            size: self.params.size.0,
            maximum: usize::MAX as u64,
        })?;
        let mut v = vec![0u8; size];
        let layout = self.emit(&mut |off, data| {
            let s = off as usize;
            v[s..s + data.len()].copy_from_slice(data);
            Ok(())
        })?;
        Ok((v, layout))
    }
}

/// One entry listed by [`FatVolume::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatEntry {
    /// Path from the root, `/`-separated, long names where present.
    pub path: String,
    /// True for directories.
    pub is_dir: bool,
    /// File size in bytes (0 for directories).
    pub size: u32,
    /// First cluster.
    pub first_cluster: u32,
}

/// A parsed FAT32 volume (read-only view over its bytes).
#[derive(Debug)]
pub struct FatVolume<'a> {
    data: &'a [u8],
    g: Geometry,
    root_cluster: u32,
    volume_id: u32,
    label: [u8; 11],
}

fn rd16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn rd32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl<'a> FatVolume<'a> {
    /// Parses and validates the boot sector of a FAT32 volume.
    pub fn parse(data: &'a [u8]) -> Result<Self> {
        let bad = |m: &str| Error::FatMalformed(m.to_owned());
        if data.len() < SECTOR {
            return Err(bad("shorter than one sector"));
        }
        let b = &data[..SECTOR];
        if b[510..512] != [0x55, 0xAA] {
            return Err(bad("boot sector has no 55AA signature"));
        }
        if rd16(b, 11) as u64 != SECTOR_SIZE {
            return Err(bad("only 512-byte sectors are supported"));
        }
        let spc = b[13] as u64;
        if spc == 0 || !spc.is_power_of_two() {
            return Err(bad("sectors per cluster is not a power of two"));
        }
        let reserved = rd16(b, 14) as u64;
        let nfats = b[16] as u64;
        if rd16(b, 17) != 0 || rd16(b, 22) != 0 || reserved == 0 || nfats == 0 {
            return Err(bad("not a FAT32 boot sector (root entries / FATSz16 set)"));
        }
        let total = rd32(b, 32) as u64;
        let fat_sectors = rd32(b, 36) as u64;
        if total * SECTOR_SIZE > data.len() as u64 {
            return Err(bad("volume is larger than the data given"));
        }
        let meta = reserved + nfats * fat_sectors;
        if meta >= total {
            return Err(bad("FATs do not fit the volume"));
        }
        let clusters = (total - meta) / spc;
        if clusters < MIN_CLUSTERS || (clusters + 2) * 4 > fat_sectors * SECTOR_SIZE {
            return Err(bad("cluster count is not FAT32 or does not fit the FAT"));
        }
        let root_cluster = rd32(b, 44);
        if root_cluster < 2 || root_cluster as u64 >= clusters + 2 {
            return Err(bad("root cluster out of range"));
        }
        if reserved != RESERVED_SECTORS || nfats != NUM_FATS {
            // Offsets below assume our reserved-sector and FAT counts.
            return Err(bad(
                "only volumes with 32 reserved sectors and 2 FATs are supported",
            ));
        }
        let mut label = [0u8; 11];
        label.copy_from_slice(&b[71..82]);
        Ok(FatVolume {
            data,
            g: Geometry {
                total_sectors: total,
                sectors_per_cluster: spc,
                fat_sectors,
                clusters,
            },
            root_cluster,
            volume_id: rd32(b, 67),
            label,
        })
    }

    /// Volume serial number.
    pub fn volume_id(&self) -> u32 {
        self.volume_id
    }

    /// Volume label from the boot sector (trailing spaces removed).
    pub fn label(&self) -> String {
        String::from_utf8_lossy(&self.label).trim_end().to_owned()
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> ByteLen {
        ByteLen(self.g.cluster_bytes())
    }

    fn fat_entry(&self, cluster: u32) -> Result<u32> {
        let off = (RESERVED_SECTORS * SECTOR_SIZE + cluster as u64 * 4) as usize;
        let b = self
            .data
            .get(off..off + 4)
            .ok_or_else(|| Error::FatMalformed("FAT entry out of range".into()))?;
        Ok(rd32(b, 0) & 0x0FFF_FFFF)
    }

    fn chain(&self, first: u32) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut c = first;
        loop {
            if c < 2 || c as u64 >= self.g.clusters + 2 {
                return Err(Error::FatMalformed(format!(
                    "cluster {c} out of range in a chain"
                )));
            }
            if out.len() as u64 > self.g.clusters {
                return Err(Error::FatMalformed("cluster chain loops".into()));
            }
            out.push(c);
            let n = self.fat_entry(c)?;
            if n >= 0x0FFF_FFF8 {
                return Ok(out);
            }
            c = n;
        }
    }

    fn read_chain(&self, first: u32, limit: Option<u64>) -> Result<Vec<u8>> {
        let cb = self.g.cluster_bytes();
        let mut out = Vec::new();
        if first == 0 {
            return Ok(out);
        }
        for c in self.chain(first)? {
            let off = self.g.cluster_offset(c as u64) as usize;
            let b = self
                .data
                .get(off..off + cb as usize)
                .ok_or_else(|| Error::FatMalformed("cluster beyond the end of the image".into()))?;
            out.extend_from_slice(b);
            if limit.is_some_and(|l| out.len() as u64 >= l) {
                break;
            }
        }
        if let Some(l) = limit {
            if (out.len() as u64) < l {
                return Err(Error::FatMalformed(
                    "file is longer than its cluster chain".into(),
                ));
            }
            out.truncate(l as usize);
        }
        Ok(out)
    }

    fn read_dir(&self, cluster: u32) -> Result<Vec<FatEntry>> {
        let bytes = self.read_chain(cluster, None)?;
        let mut out = Vec::new();
        let mut lfn: Vec<(u8, u8, Vec<u16>)> = Vec::new(); // (ord, checksum, units)
        for e in bytes.chunks_exact(32) {
            if e[0] == 0 {
                break;
            }
            if e[0] == 0xE5 {
                lfn.clear();
                continue;
            }
            let attr = e[11];
            if attr & 0x3F == ATTR_LFN {
                let pos: [usize; 13] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
                let units: Vec<u16> = pos.iter().map(|&p| rd16(e, p)).collect();
                if e[0] & 0x40 != 0 {
                    lfn.clear();
                }
                lfn.push((e[0] & 0x3F, e[13], units));
                continue;
            }
            let mut sfn = [0u8; 11];
            sfn.copy_from_slice(&e[0..11]);
            let long = std::mem::take(&mut lfn);
            if attr & ATTR_VOLUME_ID != 0 || &sfn == b".          " || &sfn == b"..         " {
                continue;
            }
            let ck = sfn_checksum(&sfn);
            let n = long.len();
            let valid_long = n > 0
                && long
                    .iter()
                    .enumerate()
                    .all(|(i, (ord, c, _))| *c == ck && *ord as usize == n - i);
            let name = if valid_long {
                let mut units = Vec::new();
                for (_, _, u) in long.iter().rev() {
                    units.extend_from_slice(u);
                }
                let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
                units.truncate(end);
                String::from_utf16_lossy(&units)
            } else {
                let nt = e[12];
                let conv = |s: &[u8], lower: bool| -> String {
                    let s = String::from_utf8_lossy(s).trim_end().to_owned();
                    if lower {
                        s.to_ascii_lowercase()
                    } else {
                        s
                    }
                };
                let base = conv(&sfn[..8], nt & NT_LOWER_BASE != 0);
                let ext = conv(&sfn[8..], nt & NT_LOWER_EXT != 0);
                if ext.is_empty() {
                    base
                } else {
                    format!("{base}.{ext}")
                }
            };
            let first = ((rd16(e, 20) as u32) << 16) | rd16(e, 26) as u32;
            out.push(FatEntry {
                path: name,
                is_dir: attr & ATTR_DIRECTORY != 0,
                size: if attr & ATTR_DIRECTORY != 0 {
                    0
                } else {
                    rd32(e, 28)
                },
                first_cluster: first,
            });
        }
        Ok(out)
    }

    /// Lists every file and directory, depth first, children in directory order.
    pub fn list(&self) -> Result<Vec<FatEntry>> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        self.walk(self.root_cluster, "", &mut seen, &mut out)?;
        Ok(out)
    }

    fn walk(
        &self,
        cluster: u32,
        prefix: &str,
        seen: &mut BTreeSet<u32>,
        out: &mut Vec<FatEntry>,
    ) -> Result<()> {
        if !seen.insert(cluster) {
            return Err(Error::FatMalformed("directory cycle".into()));
        }
        for mut e in self.read_dir(cluster)? {
            e.path = if prefix.is_empty() {
                e.path
            } else {
                format!("{prefix}/{}", e.path)
            };
            let (is_dir, first, path) = (e.is_dir, e.first_cluster, e.path.clone());
            out.push(e);
            if is_dir {
                self.walk(first, &path, seen, out)?;
            }
        }
        Ok(())
    }

    fn lookup(&self, path: &str) -> Result<FatEntry> {
        let mut cluster = self.root_cluster;
        let comps: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for (i, c) in comps.iter().enumerate() {
            let e = self
                .read_dir(cluster)?
                .into_iter()
                .find(|e| {
                    e.path.eq_ignore_ascii_case(c) || e.path.to_uppercase() == c.to_uppercase()
                })
                .ok_or_else(|| Error::NotFound(path.to_owned()))?;
            if i + 1 == comps.len() {
                return Ok(e);
            }
            if !e.is_dir {
                return Err(Error::NotFound(path.to_owned()));
            }
            cluster = e.first_cluster;
        }
        Err(Error::NotFound(path.to_owned()))
    }

    /// Reads a file by path (case-insensitive, `/`-separated).
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let e = self.lookup(path)?;
        if e.is_dir {
            return Err(Error::NotFound(format!("{path} (is a directory)")));
        }
        if e.size == 0 {
            return Ok(Vec::new());
        }
        self.read_chain(e.first_cluster, Some(e.size as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(size: u64) -> FatParams {
        FatParams {
            size: ByteLen(size),
            volume_id: 0x1234_5678,
            label: Some("ESP".into()),
            timestamp: Epoch(1_700_000_000),
            hidden_sectors: 2048,
        }
    }

    fn sample() -> FatBuilder {
        let mut b = FatBuilder::new(params(40 << 20)).unwrap();
        b.add_file("EFI/BOOT/BOOTX64.EFI", vec![0x4D; 3000])
            .unwrap();
        b.add_file("EFI/Linux/appliance-a.efi", vec![1; 1500])
            .unwrap();
        b.add_file("EFI/Linux/appliance-b.efi", vec![2; 700])
            .unwrap();
        b.add_file("loader/entries/x.conf", b"title x\n".to_vec())
            .unwrap();
        b.add_file("empty", Vec::new()).unwrap();
        b.add_dir("EFI/empty-dir-with-a-long-name").unwrap();
        b
    }

    #[test]
    fn minimum_size_is_documented_value() {
        assert_eq!(min_fat32_size().0, 34_089_472);
        assert!(FatBuilder::new(params(min_fat32_size().0)).is_ok());
        let e = FatBuilder::new(params(min_fat32_size().0 - 512)).unwrap_err();
        assert!(e.to_string().contains("34089472"), "{e}");
    }

    #[test]
    fn cluster_size_table() {
        assert_eq!(geometry(ByteLen(64 << 20)).unwrap().sectors_per_cluster, 1);
        assert_eq!(geometry(ByteLen(512 << 20)).unwrap().sectors_per_cluster, 8);
    }

    #[test]
    fn dos_dates() {
        // 2023-11-14 22:13:20 UTC
        let (d, t) = dos_datetime(Epoch(1_700_000_000));
        assert_eq!((d >> 9, (d >> 5) & 15, d & 31), (43, 11, 14));
        assert_eq!((t >> 11, (t >> 5) & 63, (t & 31) * 2), (22, 13, 20));
        assert_eq!(dos_datetime(Epoch(0)), ((1 << 5) | 1, 0));
    }

    #[test]
    fn short_names_and_checksum() {
        assert_eq!(
            exact_short_name("BOOTX64.EFI").unwrap(),
            (*b"BOOTX64 EFI", 0)
        );
        assert_eq!(
            exact_short_name("boot").unwrap(),
            (*b"BOOT       ", NT_LOWER_BASE)
        );
        assert!(exact_short_name("Linux").is_none());
        assert!(exact_short_name("appliance-a.efi").is_none());
        assert!(exact_short_name("a.b.c").is_none());
        assert_eq!(&numbered_short_name("appliance-a.efi", 1), b"APPLIA~1EFI");
        assert_eq!(&numbered_short_name("appliance-b.efi", 12), b"APPLI~12EFI");
        // Checksum example from the FAT specification's algorithm.
        assert_eq!(sfn_checksum(b"FOO     BAR"), {
            let mut s = 0u8;
            for &c in b"FOO     BAR" {
                s = (if s & 1 != 0 { 0x80u8 } else { 0 })
                    .wrapping_add(s >> 1)
                    .wrapping_add(c);
            }
            s
        });
    }

    #[test]
    fn write_read_roundtrip_and_determinism() {
        let img = sample().to_vec().unwrap();
        assert_eq!(img, sample().to_vec().unwrap());
        let v = FatVolume::parse(&img).unwrap();
        assert_eq!(v.volume_id(), 0x1234_5678);
        assert_eq!(v.label(), "ESP");
        assert_eq!(
            v.read_file("EFI/BOOT/BOOTX64.EFI").unwrap(),
            vec![0x4D; 3000]
        );
        assert_eq!(
            v.read_file("efi/linux/APPLIANCE-A.EFI").unwrap(),
            vec![1; 1500]
        );
        assert_eq!(
            v.read_file("/EFI/Linux/appliance-b.efi").unwrap(),
            vec![2; 700]
        );
        assert_eq!(v.read_file("empty").unwrap(), Vec::<u8>::new());
        assert!(matches!(v.read_file("nope"), Err(Error::NotFound(_))));
        let paths: Vec<String> = v.list().unwrap().into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                "EFI",
                "EFI/BOOT",
                "EFI/BOOT/BOOTX64.EFI",
                "EFI/empty-dir-with-a-long-name",
                "EFI/Linux",
                "EFI/Linux/appliance-a.efi",
                "EFI/Linux/appliance-b.efi",
                "empty",
                "loader",
                "loader/entries",
                "loader/entries/x.conf",
            ]
        );
    }

    #[test]
    fn does_not_fit_says_how_much_is_needed() {
        let mut b = FatBuilder::new(params(40 << 20)).unwrap();
        b.add_file("big", vec![7u8; 45 << 20]).unwrap();
        match b.to_vec() {
            Err(Error::FatDoesNotFit {
                needed,
                available,
                suggested_size,
            }) => {
                assert!(needed > available);
                assert!(suggested_size >= 46 << 20);
                let mut b2 = FatBuilder::new(params(suggested_size)).unwrap();
                b2.add_file("big", vec![7u8; 45 << 20]).unwrap();
                assert!(b2.to_vec().is_ok());
            }
            other => panic!("expected FatDoesNotFit, got {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_names_and_case_collisions() {
        let mut b = FatBuilder::new(params(40 << 20)).unwrap();
        b.add_file("A.TXT", vec![1]).unwrap();
        assert!(matches!(
            b.add_file("a.txt", vec![1]),
            Err(Error::DuplicatePath(_))
        ));
        for p in ["a/../b", "a//b", "x:y", "trail.", ""] {
            assert!(b.add_file(p, vec![1]).is_err(), "{p:?}");
        }
        assert!(b.add_file("A.TXT/x", vec![1]).is_err());
        let mut p = params(40 << 20);
        p.label = Some("lower".into());
        assert!(FatBuilder::new(p).is_err());
    }

    proptest! {
        #[test]
        fn reader_never_panics(idx in proptest::collection::vec((0usize..70_000, any::<u8>()), 1..20)) {
            static IMG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let mut img = IMG.get_or_init(|| sample().to_vec().unwrap()).clone();
            let data_start = (RESERVED_SECTORS as usize) * SECTOR;
            for (i, v) in idx {
                // Hit the boot sector, the FAT and the first directory clusters.
                let at = if i < 512 { i } else { data_start + (i * 37) % (2 << 20) };
                img[at] = v;
            }
            if let Ok(v) = FatVolume::parse(&img) {
                let _ = v.list();
                let _ = v.read_file("EFI/BOOT/BOOTX64.EFI");
            }
        }

        #[test]
        fn parse_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = FatVolume::parse(&data);
        }
    }
}
