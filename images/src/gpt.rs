//! GUID Partition Table disks (UEFI 2.10 §5), 512-byte sectors.
//!
//! # Writer invariants
//! * LBA 0 is a protective MBR (one `0xEE` entry covering the disk, capped at
//!   `0xFFFFFFFF` sectors); LBA 1 the primary header; LBAs 2–33 the 128 × 128-byte
//!   entry array; the backup array occupies the 32 sectors before the last LBA and the
//!   backup header the last LBA.
//! * Partitions are placed in the order given, each starting on a 1 MiB boundary;
//!   every partition's size is rounded up to 1 MiB.
//! * Every GUID comes from the caller; names are UTF-16LE, at most 36 code units.
//! * The output file is written sparsely: all-zero 64 KiB chunks are seeked over.
//!   The same builder gives the same bytes.
//!
//! # Reader
//! [`read_gpt`] checks the protective MBR, both headers (signature, revision, size,
//! CRC32, self/alternate LBAs, usable range), both entry arrays (CRC32, identical
//! content) and the partitions (inside the usable range, no overlaps, unique GUIDs).
//! It never panics.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::{ByteLen, Content, Error, Guid, Lba, Result, SECTOR_SIZE};

/// Well-known partition type GUIDs.
pub mod type_guid {
    use crate::Guid;

    /// EFI System Partition.
    pub const ESP: Guid = Guid([
        0xC1, 0x2A, 0x73, 0x28, 0xF8, 0x1F, 0x11, 0xD2, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9,
        0x3B,
    ]);
    /// Linux filesystem data (0FC63DAF-8483-4772-8E79-3D69D8477DE4).
    pub const LINUX_DATA: Guid = Guid([
        0x0F, 0xC6, 0x3D, 0xAF, 0x84, 0x83, 0x47, 0x72, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D,
        0xE4,
    ]);
    /// Linux variable data, `/var` (4D21B016-B534-45C2-A9FB-5C16E091FD2D).
    pub const LINUX_VAR: Guid = Guid([
        0x4D, 0x21, 0xB0, 0x16, 0xB5, 0x34, 0x45, 0xC2, 0xA9, 0xFB, 0x5C, 0x16, 0xE0, 0x91, 0xFD,
        0x2D,
    ]);
}

/// Partition alignment and granularity.
pub const ALIGNMENT: ByteLen = ByteLen::mib(1);
/// Entries in the partition entry array.
pub const ENTRY_COUNT: u32 = 128;
/// Size of one partition entry.
pub const ENTRY_SIZE: u32 = 128;
const ENTRY_ARRAY_BYTES: usize = (ENTRY_COUNT * ENTRY_SIZE) as usize;
const ENTRY_ARRAY_SECTORS: u64 = ENTRY_ARRAY_BYTES as u64 / SECTOR_SIZE;
const HEADER_SIZE: u32 = 92;
const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION: u32 = 0x0001_0000;
const ALIGN_SECTORS: u64 = ALIGNMENT.0 / SECTOR_SIZE;

/// One partition to be created.
#[derive(Clone, Debug)]
pub struct PartitionSpec {
    /// Partition name (at most 36 UTF-16 code units).
    pub name: String,
    /// Partition type.
    pub type_guid: Guid,
    /// Unique partition GUID.
    pub unique_guid: Guid,
    /// Size; rounded up to 1 MiB.
    pub size: ByteLen,
    /// Attribute bits (bit 0 required, bit 2 legacy BIOS bootable, 48–63 type specific).
    pub attributes: u64,
    /// Content written at the start of the partition (at most `size` bytes);
    /// `None` leaves the partition zero.
    pub content: Option<Content>,
}

/// A partition's position, as planned or as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptPartition {
    /// 1-based index in the entry array (as in `/dev/sda1`).
    pub number: u32,
    /// Partition type.
    pub type_guid: Guid,
    /// Unique partition GUID.
    pub unique_guid: Guid,
    /// First LBA.
    pub first: Lba,
    /// Last LBA (inclusive).
    pub last: Lba,
    /// Attribute bits.
    pub attributes: u64,
    /// Name.
    pub name: String,
}

impl GptPartition {
    /// Byte offset of the partition.
    pub fn offset(&self) -> ByteLen {
        self.first.byte_offset()
    }

    /// Size of the partition in bytes.
    pub fn size(&self) -> ByteLen {
        ByteLen((self.last.0 - self.first.0 + 1) * SECTOR_SIZE)
    }
}

/// A complete disk layout (the result of planning, or of reading a disk).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptDisk {
    /// Disk GUID.
    pub disk_guid: Guid,
    /// Disk size.
    pub size: ByteLen,
    /// First usable LBA.
    pub first_usable: Lba,
    /// Last usable LBA.
    pub last_usable: Lba,
    /// Partitions in entry-array order.
    pub partitions: Vec<GptPartition>,
}

impl GptDisk {
    /// The last LBA of the disk (where the backup header lives).
    pub fn last_lba(&self) -> Lba {
        Lba(self.size.0 / SECTOR_SIZE - 1)
    }

    /// The byte ranges `(offset, length)` the writer puts the GPT in: the
    /// protective MBR, primary header and entry array at the start, the
    /// backup entry array and header at the end. Zeros included: on a device
    /// all of it must be written.
    pub fn metadata_ranges(&self) -> [(u64, u64); 2] {
        let last = self.last_lba().0;
        [
            (0, (2 + ENTRY_ARRAY_SECTORS) * SECTOR_SIZE),
            (
                (last - ENTRY_ARRAY_SECTORS) * SECTOR_SIZE,
                (ENTRY_ARRAY_SECTORS + 1) * SECTOR_SIZE,
            ),
        ]
    }
}

/// Builds a GPT disk image.
#[derive(Clone, Debug)]
pub struct GptBuilder {
    disk_guid: Guid,
    disk_size: Option<ByteLen>,
    partitions: Vec<PartitionSpec>,
}

fn encode_name(name: &str) -> Result<[u8; 72]> {
    let units: Vec<u16> = name.encode_utf16().collect();
    if units.len() > 36 {
        return Err(Error::GptLayout(format!(
            "partition name {name:?} is {} UTF-16 units long; the maximum is 36",
            units.len()
        )));
    }
    if units.contains(&0) {
        return Err(Error::GptLayout(format!(
            "partition name {name:?} contains NUL"
        )));
    }
    let mut out = [0u8; 72];
    for (i, u) in units.iter().enumerate() {
        out[2 * i..2 * i + 2].copy_from_slice(&u.to_le_bytes());
    }
    Ok(out)
}

fn decode_name(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

impl GptBuilder {
    /// A new disk with the given disk GUID.
    pub fn new(disk_guid: Guid) -> Self {
        GptBuilder {
            disk_guid,
            disk_size: None,
            partitions: Vec::new(),
        }
    }

    /// Sets the disk size. Without it the disk ends 1 MiB after the last partition.
    /// Must be a multiple of 1 MiB.
    pub fn disk_size(&mut self, size: ByteLen) -> &mut Self {
        self.disk_size = Some(size);
        self
    }

    /// Appends a partition (placed after the previous one).
    pub fn add_partition(&mut self, spec: PartitionSpec) -> Result<&mut Self> {
        encode_name(&spec.name)?;
        if spec.unique_guid == Guid::NIL || spec.type_guid == Guid::NIL {
            return Err(Error::GptLayout(format!(
                "partition {:?}: type and unique GUIDs must not be nil",
                spec.name
            )));
        }
        if self
            .partitions
            .iter()
            .any(|p| p.unique_guid == spec.unique_guid)
        {
            return Err(Error::GptLayout(format!(
                "partition {:?}: unique GUID {} is already used; derive a different one",
                spec.name, spec.unique_guid
            )));
        }
        if spec.unique_guid == self.disk_guid {
            return Err(Error::GptLayout(format!(
                "partition {:?}: unique GUID equals the disk GUID",
                spec.name
            )));
        }
        if spec.size.0 == 0 {
            return Err(Error::GptLayout(format!(
                "partition {:?} has size 0",
                spec.name
            )));
        }
        if self.partitions.len() >= ENTRY_COUNT as usize {
            return Err(Error::GptLayout("more than 128 partitions".into()));
        }
        self.partitions.push(spec);
        Ok(self)
    }

    /// Computes the layout without writing anything.
    pub fn plan(&self) -> Result<GptDisk> {
        let mut next = ALIGN_SECTORS;
        let mut parts = Vec::new();
        for (i, p) in self.partitions.iter().enumerate() {
            let sectors = p.size.0.div_ceil(ALIGNMENT.0) * ALIGN_SECTORS;
            if let Some(c) = &p.content {
                let len = c.len()?;
                if len.0 > sectors * SECTOR_SIZE {
                    return Err(Error::GptLayout(format!(
                        "partition {:?}: content is {} bytes but the partition holds {}; enlarge it",
                        p.name,
                        len.0,
                        sectors * SECTOR_SIZE
                    )));
                }
            }
            parts.push(GptPartition {
                number: i as u32 + 1,
                type_guid: p.type_guid,
                unique_guid: p.unique_guid,
                first: Lba(next),
                last: Lba(next + sectors - 1),
                attributes: p.attributes,
                name: p.name.clone(),
            });
            next += sectors;
        }
        let min_size = (next + ALIGN_SECTORS) * SECTOR_SIZE;
        let size = match self.disk_size {
            None => min_size,
            Some(s) => {
                if s.0 % ALIGNMENT.0 != 0 {
                    return Err(Error::GptLayout(format!(
                        "disk size {} is not a multiple of 1 MiB",
                        s.0
                    )));
                }
                if s.0 < min_size {
                    return Err(Error::GptLayout(format!(
                        "the partitions need a disk of at least {min_size} bytes, but {} was requested",
                        s.0
                    )));
                }
                s.0
            }
        };
        let last = size / SECTOR_SIZE - 1;
        Ok(GptDisk {
            disk_guid: self.disk_guid,
            size: ByteLen(size),
            first_usable: Lba(2 + ENTRY_ARRAY_SECTORS),
            last_usable: Lba(last - 1 - ENTRY_ARRAY_SECTORS),
            partitions: parts,
        })
    }

    /// Writes the disk image to a new file at `path` (replacing it) and returns the
    /// layout.
    pub fn write_file(&self, path: &Path) -> Result<GptDisk> {
        let disk = self.plan()?;
        let mut f = File::create(path).map_err(Error::io("creating", path))?;
        f.set_len(disk.size.0)
            .map_err(Error::io("setting the length of", path))?;
        let emit = emit_metadata(&disk);
        let mut put = |off: u64, data: &[u8]| -> Result<()> {
            f.seek(SeekFrom::Start(off))
                .map_err(Error::io("seeking in", path))?;
            f.write_all(data).map_err(Error::io("writing", path))
        };
        put(0, &emit.head)?;
        put(
            (disk.last_lba().0 - ENTRY_ARRAY_SECTORS) * SECTOR_SIZE,
            &emit.tail,
        )?;
        for (spec, part) in self.partitions.iter().zip(&disk.partitions) {
            if let Some(c) = &spec.content {
                let len = c.len()?;
                let base = part.offset().0;
                c.for_each_chunk(len.0, |off, chunk| {
                    if chunk.iter().all(|&b| b == 0) {
                        Ok(())
                    } else {
                        put(base + off, chunk)
                    }
                })?;
            }
        }
        f.sync_all().map_err(Error::io("syncing", path))?;
        Ok(disk)
    }
}

struct Emitted {
    /// MBR + primary header + primary entries (34 sectors).
    head: Vec<u8>,
    /// Backup entries + backup header (33 sectors).
    tail: Vec<u8>,
}

fn emit_entries(disk: &GptDisk) -> Vec<u8> {
    let mut a = vec![0u8; ENTRY_ARRAY_BYTES];
    for (i, p) in disk.partitions.iter().enumerate() {
        let e = &mut a[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&p.type_guid.to_mixed_endian());
        e[16..32].copy_from_slice(&p.unique_guid.to_mixed_endian());
        e[32..40].copy_from_slice(&p.first.0.to_le_bytes());
        e[40..48].copy_from_slice(&p.last.0.to_le_bytes());
        e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        // Names were validated when the partition was added.
        if let Ok(n) = encode_name(&p.name) {
            e[56..128].copy_from_slice(&n);
        }
    }
    a
}

fn emit_header(
    disk: &GptDisk,
    my: u64,
    alternate: u64,
    entries_lba: u64,
    entries_crc: u32,
) -> Vec<u8> {
    let mut h = vec![0u8; SECTOR_SIZE as usize];
    h[0..8].copy_from_slice(SIGNATURE);
    h[8..12].copy_from_slice(&REVISION.to_le_bytes());
    h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
    h[24..32].copy_from_slice(&my.to_le_bytes());
    h[32..40].copy_from_slice(&alternate.to_le_bytes());
    h[40..48].copy_from_slice(&disk.first_usable.0.to_le_bytes());
    h[48..56].copy_from_slice(&disk.last_usable.0.to_le_bytes());
    h[56..72].copy_from_slice(&disk.disk_guid.to_mixed_endian());
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&ENTRY_COUNT.to_le_bytes());
    h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
    h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
    let crc = crc32fast::hash(&h[..HEADER_SIZE as usize]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

fn emit_metadata(disk: &GptDisk) -> Emitted {
    let last = disk.last_lba().0;
    let entries = emit_entries(disk);
    let ecrc = crc32fast::hash(&entries);
    let mut head = vec![0u8; SECTOR_SIZE as usize];
    // Protective MBR partition record (UEFI 2.10 table 5-4).
    let rec = &mut head[446..462];
    rec[0] = 0x00;
    rec[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    rec[4] = 0xEE;
    rec[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    rec[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(last).unwrap_or(u32::MAX);
    rec[12..16].copy_from_slice(&size.to_le_bytes());
    head[510] = 0x55;
    head[511] = 0xAA;
    head.extend_from_slice(&emit_header(disk, 1, last, 2, ecrc));
    head.extend_from_slice(&entries);
    let mut tail = entries;
    tail.extend_from_slice(&emit_header(
        disk,
        last,
        1,
        last - ENTRY_ARRAY_SECTORS,
        ecrc,
    ));
    Emitted { head, tail }
}

fn le32(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}

fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

fn read_at<R: Read + Seek>(r: &mut R, off: u64, len: usize) -> Result<Vec<u8>> {
    let io =
        |e: std::io::Error| Error::GptMalformed(format!("cannot read {len} bytes at {off}: {e}"));
    r.seek(SeekFrom::Start(off)).map_err(io)?;
    let mut v = vec![0u8; len];
    r.read_exact(&mut v).map_err(io)?;
    Ok(v)
}

struct Header {
    my: u64,
    alternate: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Guid,
    entries_lba: u64,
    count: u32,
    entry_size: u32,
    entries_crc: u32,
}

fn parse_header(which: &str, h: &[u8]) -> Result<Header> {
    let bad = |m: String| Error::GptMalformed(format!("{which} header: {m}"));
    if h.len() < SECTOR_SIZE as usize || &h[0..8] != SIGNATURE {
        return Err(bad("missing \"EFI PART\" signature".into()));
    }
    if le32(h, 8) != REVISION {
        return Err(bad(format!("unsupported revision {:#x}", le32(h, 8))));
    }
    let size = le32(h, 12);
    if !(HEADER_SIZE..=SECTOR_SIZE as u32).contains(&size) {
        return Err(bad(format!("header size {size} is out of range")));
    }
    let mut copy = h[..size as usize].to_vec();
    copy[16..20].fill(0);
    let crc = crc32fast::hash(&copy);
    if crc != le32(h, 16) {
        return Err(bad(format!(
            "header CRC32 mismatch (stored {:#010x}, computed {crc:#010x}): the header is corrupt",
            le32(h, 16)
        )));
    }
    let hd = Header {
        my: le64(h, 24),
        alternate: le64(h, 32),
        first_usable: le64(h, 40),
        last_usable: le64(h, 48),
        disk_guid: Guid::from_mixed_endian(h[56..72].try_into().unwrap_or([0; 16])),
        entries_lba: le64(h, 72),
        count: le32(h, 80),
        entry_size: le32(h, 84),
        entries_crc: le32(h, 88),
    };
    if hd.entry_size < 128 || !hd.entry_size.is_power_of_two() || hd.entry_size > 4096 {
        return Err(bad(format!("entry size {} is invalid", hd.entry_size)));
    }
    if hd.count == 0 || hd.count > 4096 {
        return Err(bad(format!("entry count {} is out of range", hd.count)));
    }
    Ok(hd)
}

fn parse_entries(which: &str, hd: &Header, a: &[u8]) -> Result<Vec<GptPartition>> {
    let crc = crc32fast::hash(a);
    if crc != hd.entries_crc {
        return Err(Error::GptMalformed(format!(
            "{which} partition entry array CRC32 mismatch: the entries are corrupt"
        )));
    }
    let mut parts = Vec::new();
    for (i, e) in a.chunks_exact(hd.entry_size as usize).enumerate() {
        let type_guid = Guid::from_mixed_endian(e[0..16].try_into().unwrap_or([0; 16]));
        if type_guid == Guid::NIL {
            continue;
        }
        parts.push(GptPartition {
            number: i as u32 + 1,
            type_guid,
            unique_guid: Guid::from_mixed_endian(e[16..32].try_into().unwrap_or([0; 16])),
            first: Lba(le64(e, 32)),
            last: Lba(le64(e, 40)),
            attributes: le64(e, 48),
            name: decode_name(&e[56..128]),
        });
    }
    Ok(parts)
}

/// Reads and validates the GPT of a disk image (see the module docs for the checks).
pub fn read_gpt<R: Read + Seek>(r: &mut R) -> Result<GptDisk> {
    let len = r
        .seek(SeekFrom::End(0))
        .map_err(|e| Error::GptMalformed(format!("cannot determine the disk size: {e}")))?;
    if len % SECTOR_SIZE != 0 || len < (3 + 2 * ENTRY_ARRAY_SECTORS) * SECTOR_SIZE {
        return Err(Error::GptMalformed(format!(
            "disk size {len} is not a multiple of 512 or too small for a GPT"
        )));
    }
    let last = len / SECTOR_SIZE - 1;
    let mbr = read_at(r, 0, SECTOR_SIZE as usize)?;
    if mbr[510..512] != [0x55, 0xAA] {
        return Err(Error::GptMalformed(
            "protective MBR has no 55AA signature".into(),
        ));
    }
    if !(0..4).any(|i| mbr[446 + 16 * i + 4] == 0xEE && le32(&mbr, 446 + 16 * i + 8) == 1) {
        return Err(Error::GptMalformed(
            "no protective 0xEE MBR partition starting at LBA 1".into(),
        ));
    }
    let mut read_side = |which: &str, at: u64| -> Result<(Header, Vec<u8>)> {
        let h = read_at(r, at * SECTOR_SIZE, SECTOR_SIZE as usize)?;
        let hd = parse_header(which, &h)?;
        let bytes = hd.count as u64 * hd.entry_size as u64;
        let sectors = bytes.div_ceil(SECTOR_SIZE);
        if hd.entries_lba < 2 || hd.entries_lba.saturating_add(sectors) > last + 1 {
            return Err(Error::GptMalformed(format!(
                "{which} entry array at LBA {} lies outside the disk",
                hd.entries_lba
            )));
        }
        let a = read_at(r, hd.entries_lba * SECTOR_SIZE, bytes as usize)?;
        Ok((hd, a))
    };
    let (p, pa) = read_side("primary", 1)?;
    if p.my != 1 || p.alternate != last {
        return Err(Error::GptMalformed(format!(
            "primary header says it is at LBA {} with backup at {}, expected 1 and {last}",
            p.my, p.alternate
        )));
    }
    let (b, ba) = read_side("backup", last)?;
    if b.my != last || b.alternate != 1 {
        return Err(Error::GptMalformed(format!(
            "backup header says it is at LBA {} with alternate {}, expected {last} and 1",
            b.my, b.alternate
        )));
    }
    let primary_entry_end =
        p.entries_lba + (p.count as u64 * p.entry_size as u64).div_ceil(SECTOR_SIZE);
    if p.first_usable < primary_entry_end
        || p.last_usable >= b.entries_lba
        || p.first_usable > p.last_usable
    {
        return Err(Error::GptMalformed(format!(
            "usable range {}..={} overlaps the GPT structures",
            p.first_usable, p.last_usable
        )));
    }
    if (
        p.first_usable,
        p.last_usable,
        p.disk_guid,
        p.count,
        p.entry_size,
        p.entries_crc,
    ) != (
        b.first_usable,
        b.last_usable,
        b.disk_guid,
        b.count,
        b.entry_size,
        b.entries_crc,
    ) || pa != ba
    {
        return Err(Error::GptMalformed(
            "primary and backup GPT differ; repair the disk (e.g. sgdisk -e)".into(),
        ));
    }
    let parts = parse_entries("primary", &p, &pa)?;
    parse_entries("backup", &b, &ba)?;
    let mut sorted: Vec<&GptPartition> = parts.iter().collect();
    sorted.sort_by_key(|q| q.first);
    for q in &sorted {
        if q.first > q.last || q.first.0 < p.first_usable || q.last.0 > p.last_usable {
            return Err(Error::GptMalformed(format!(
                "partition {} ({}..={}) is outside the usable range {}..={}",
                q.number, q.first.0, q.last.0, p.first_usable, p.last_usable
            )));
        }
    }
    for w in sorted.windows(2) {
        if w[1].first <= w[0].last {
            return Err(Error::GptMalformed(format!(
                "partitions {} and {} overlap",
                w[0].number, w[1].number
            )));
        }
    }
    for (i, q) in parts.iter().enumerate() {
        if parts[..i].iter().any(|o| o.unique_guid == q.unique_guid) {
            return Err(Error::GptMalformed(format!(
                "partition {} reuses unique GUID {}",
                q.number, q.unique_guid
            )));
        }
    }
    Ok(GptDisk {
        disk_guid: p.disk_guid,
        size: ByteLen(len),
        first_usable: Lba(p.first_usable),
        last_usable: Lba(p.last_usable),
        partitions: parts,
    })
}

/// A GPT header that checks (signature, revision, CRC) wherever it was found,
/// with the partitions of its entry array when that checks too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundHeader {
    /// Where it was found (1: primary; the disk's last LBA: backup).
    pub lba: u64,
    /// Where it says its alternate is.
    pub alternate: u64,
    /// Disk GUID.
    pub disk_guid: Guid,
    /// Its partitions (empty when the entry array is corrupt).
    pub partitions: Vec<GptPartition>,
}

/// Every valid GPT header at the places firmware and operating systems look
/// for one — LBA 1, and the disk's last LBA — and, when the primary one checks,
/// also the LBA it names as its alternate. Unlike [`read_gpt`] this accepts
/// a disk whose backup is not at its end (an image flashed onto a larger
/// disk) or is missing: it answers "could anything take this disk for a
/// GPT disk, and which partitions would it see". Never fails: a read error
/// counts as no header there.
pub fn valid_headers<R: Read + Seek>(r: &mut R) -> Vec<FoundHeader> {
    let Ok(len) = r.seek(SeekFrom::End(0)) else {
        return Vec::new();
    };
    let sectors = len / SECTOR_SIZE;
    if sectors < 2 {
        return Vec::new();
    }
    let mut out: Vec<FoundHeader> = Vec::new();
    let look = |r: &mut R, lba: u64, out: &mut Vec<FoundHeader>| {
        if lba == 0 || lba >= sectors || out.iter().any(|h| h.lba == lba) {
            return;
        }
        let Ok(h) = read_at(r, lba * SECTOR_SIZE, SECTOR_SIZE as usize) else {
            return;
        };
        let Ok(hd) = parse_header("GPT", &h) else {
            return;
        };
        if hd.my != lba {
            return;
        }
        let bytes = hd.count as u64 * hd.entry_size as u64;
        let partitions = if hd.entries_lba >= 2
            && hd.entries_lba.saturating_add(bytes.div_ceil(SECTOR_SIZE)) <= sectors
        {
            read_at(r, hd.entries_lba * SECTOR_SIZE, bytes as usize)
                .ok()
                .and_then(|a| parse_entries("GPT", &hd, &a).ok())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        out.push(FoundHeader {
            lba,
            alternate: hd.alternate,
            disk_guid: hd.disk_guid,
            partitions,
        });
    };
    look(r, 1, &mut out);
    look(r, sectors - 1, &mut out);
    if let Some(alt) = out.first().filter(|h| h.lba == 1).map(|h| h.alternate) {
        look(r, alt, &mut out);
    }
    out
}

/// Opens `path` and reads its GPT.
pub fn read_gpt_file(path: &Path) -> Result<GptDisk> {
    let mut f = File::open(path).map_err(Error::io("opening", path))?;
    read_gpt(&mut f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    fn g(n: u8) -> Guid {
        crate::guid_from_digest(&[n; 32], "test")
    }

    fn builder() -> GptBuilder {
        let mut b = GptBuilder::new(g(1));
        b.add_partition(PartitionSpec {
            name: "ESP".into(),
            type_guid: type_guid::ESP,
            unique_guid: g(2),
            size: ByteLen::mib(2),
            attributes: 0,
            content: Some(vec![0xAB; 1000].into()),
        })
        .unwrap();
        b.add_partition(PartitionSpec {
            name: "dätä".into(),
            type_guid: type_guid::LINUX_DATA,
            unique_guid: g(3),
            size: ByteLen(1),
            attributes: 1 << 60,
            content: None,
        })
        .unwrap();
        b
    }

    fn image() -> (GptDisk, Vec<u8>) {
        static IMG: std::sync::OnceLock<(GptDisk, Vec<u8>)> = std::sync::OnceLock::new();
        IMG.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("d.img");
            let d = builder().write_file(&p).unwrap();
            (d, std::fs::read(&p).unwrap())
        })
        .clone()
    }

    #[test]
    fn valid_headers_finds_each_copy_where_firmware_looks() {
        let (d, img) = image();
        let lba = |v: &[FoundHeader]| v.iter().map(|h| h.lba).collect::<Vec<_>>();
        let last = img.len() as u64 / 512 - 1;
        let found = valid_headers(&mut Cursor::new(&img));
        assert_eq!(lba(&found), [1, last]);
        assert!(found
            .iter()
            .all(|h| h.disk_guid == d.disk_guid && h.partitions == d.partitions));
        // On a larger disk: the primary, and the backup where it names it
        // (not at the disk's end).
        let mut big = img.clone();
        big.resize(img.len() + (1 << 20), 0);
        assert_eq!(lba(&valid_headers(&mut Cursor::new(&big))), [1, last]);
        // No primary header: the backup at the end is still found...
        let mut no_primary = img.clone();
        no_primary[512..1024].fill(0);
        assert_eq!(lba(&valid_headers(&mut Cursor::new(&no_primary))), [last]);
        // ...but not in the middle of a larger disk, where nothing looks.
        no_primary.resize(img.len() + (1 << 20), 0);
        assert!(valid_headers(&mut Cursor::new(&no_primary)).is_empty());
        // A header with a bad CRC does not count; a corrupt entry array
        // leaves the header with no partitions.
        let mut bad = img.clone();
        bad[512 + 60] ^= 1;
        let end = bad.len();
        bad[end - 512 + 60] ^= 1;
        assert!(valid_headers(&mut Cursor::new(&bad)).is_empty());
        let mut entries = img.clone();
        entries[1024 + 40] ^= 1;
        let f = valid_headers(&mut Cursor::new(&entries));
        assert_eq!(lba(&f), [1, last]);
        assert!(f[0].partitions.is_empty());
        assert_eq!(f[1].partitions, d.partitions);
    }

    #[test]
    fn plan_aligns_and_roundtrips() {
        let (d, img) = image();
        assert_eq!(d.partitions[0].first, Lba(2048));
        assert_eq!(d.partitions[0].last, Lba(2048 + 4096 - 1));
        assert_eq!(d.partitions[1].first, Lba(2048 + 4096));
        assert_eq!(d.size, ByteLen::mib(5));
        assert_eq!(img.len() as u64, d.size.0);
        let off = d.partitions[0].offset().0 as usize;
        assert_eq!(&img[off..off + 1000], &[0xAB; 1000][..]);
        let back = read_gpt(&mut Cursor::new(&img)).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.partitions[1].name, "dätä");
    }

    #[test]
    fn flipped_header_byte_is_detected() {
        let (_, img) = image();
        for off in [512 + 40, 512 + 60, 512 + 90, img.len() - 512 + 45] {
            let mut bad = img.clone();
            bad[off] ^= 0x01;
            let e = read_gpt(&mut Cursor::new(&bad)).unwrap_err();
            assert!(matches!(e, Error::GptMalformed(_)), "{e}");
        }
        let mut bad = img.clone();
        bad[1024 + 33] ^= 0x80; // primary entry array
        assert!(read_gpt(&mut Cursor::new(&bad)).is_err());
    }

    #[test]
    fn layout_errors() {
        let mut b = builder();
        assert!(b
            .add_partition(PartitionSpec {
                name: "x".repeat(37),
                type_guid: type_guid::ESP,
                unique_guid: g(9),
                size: ByteLen(1),
                attributes: 0,
                content: None,
            })
            .is_err());
        assert!(b
            .add_partition(PartitionSpec {
                name: "dup".into(),
                type_guid: type_guid::ESP,
                unique_guid: g(2),
                size: ByteLen(1),
                attributes: 0,
                content: None,
            })
            .is_err());
        b.disk_size(ByteLen::mib(4));
        assert!(b.plan().is_err());
        b.disk_size(ByteLen(5 * 1024 * 1024 + 512));
        assert!(b.plan().is_err());
        let mut c = GptBuilder::new(g(1));
        c.add_partition(PartitionSpec {
            name: "small".into(),
            type_guid: type_guid::ESP,
            unique_guid: g(5),
            size: ByteLen(10),
            attributes: 0,
            content: Some(vec![1u8; 2 * 1024 * 1024].into()),
        })
        .unwrap();
        assert!(c.plan().is_err());
    }

    proptest! {
        #[test]
        fn reader_never_panics(data in proptest::collection::vec(any::<u8>(), 0..40000)) {
            let _ = read_gpt(&mut Cursor::new(&data));
        }

        #[test]
        fn reader_never_panics_on_mutations(idx in 0usize..40000, val in any::<u8>()) {
            let (_, img) = image();
            let mut img = img;
            let len = img.len();
            // Mutate within the GPT structures at either end of the disk.
            let i = if idx < 20000 { idx % (34 * 512) } else { len - 1 - (idx % (33 * 512)) };
            img[i] = val;
            let _ = read_gpt(&mut Cursor::new(&img));
        }
    }
}
