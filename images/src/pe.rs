//! PE32+ (EFI) images: a validating parser, UKI assembly on top of systemd-stub, the
//! Authenticode image hash, and the PCR 11 measurements systemd-stub makes.
//!
//! # Parser
//! [`PeFile::parse`] checks the DOS header, the `PE\0\0` signature, the COFF header,
//! a PE32+ optional header (magic `0x20b`), at most 16 data directories, that the
//! section table lies inside the file and inside `SizeOfHeaders`, that every section's
//! raw data lies inside the file, that the alignments are powers of two, and that
//! section virtual ranges ascend without overlapping. Afterwards no accessor can
//! panic. It never panics on any input.
//!
//! # UKI assembly (as systemd's `ukify` does it)
//! * A COFF symbol table at the very end of the stub is stripped.
//! * `SizeOfHeaders` is rounded up to `FileAlignment` (room for new section headers).
//! * New sections are appended after the stub's last section, in this order:
//!   `.osrel .cmdline .dtb .uname .splash .pcrpkey .initrd .ucode`, then extra
//!   sections in insertion order, then `.pcrsig` and finally `.linux` (last, so the
//!   kernel has room to decompress after it). Virtual addresses are
//!   `SectionAlignment`-aligned, raw data `FileAlignment`-aligned and zero padded;
//!   `VirtualSize` is the exact content length.
//! * A section that already exists in the stub (e.g. `.sbat`) is replaced in place if
//!   the new content fits its raw size.
//! * `NumberOfSections`, `SizeOfInitializedData` and `SizeOfImage` are updated; the
//!   checksum is set to 0 (as ukify does) or computed, per [`Checksum`]. The COFF
//!   timestamp is kept from the stub. A signed stub is refused.
//!
//! # Measurements
//! systemd-stub extends PCR 11, for each UKI section it knows that is present, in its
//! canonical order, first with SHA-256 of the section name including its NUL, then
//! with SHA-256 of the section's in-memory content (`VirtualSize` bytes: raw data
//! truncated, or zero-extended). `.pcrsig` is not measured.

use sha2::{Digest, Sha256};

use crate::{Error, Result};

const IMAGE_SCN_CNT_CODE: u32 = 0x0000_0020;
const IMAGE_SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
const IMAGE_SCN_MEM_READ: u32 = 0x4000_0000;
const IMAGE_FILE_LOCAL_SYMS_STRIPPED: u16 = 0x0008;
const SECTION_HEADER_LEN: usize = 40;
const COFF_LEN: usize = 20;
const OPT_FIXED_LEN: usize = 112;
/// Index of the Certificate Table in the data directories.
pub const CERTIFICATE_TABLE: usize = 4;

/// COFF file header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoffHeader {
    /// Target machine (0x8664 for x86-64).
    pub machine: u16,
    /// Number of sections.
    pub number_of_sections: u16,
    /// Link timestamp.
    pub time_date_stamp: u32,
    /// File offset of the COFF symbol table (0 if none).
    pub pointer_to_symbol_table: u32,
    /// Number of symbols.
    pub number_of_symbols: u32,
    /// Size of the optional header.
    pub size_of_optional_header: u16,
    /// Characteristics flags.
    pub characteristics: u16,
}

/// A data directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataDirectory {
    /// RVA (file offset for the Certificate Table).
    pub virtual_address: u32,
    /// Size in bytes.
    pub size: u32,
}

/// The fields of the PE32+ optional header this crate uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionalHeader {
    /// Sum of code section sizes.
    pub size_of_code: u32,
    /// Sum of initialised data section sizes.
    pub size_of_initialized_data: u32,
    /// Entry point RVA.
    pub address_of_entry_point: u32,
    /// Preferred image base.
    pub image_base: u64,
    /// Section alignment in memory.
    pub section_alignment: u32,
    /// Raw data alignment in the file.
    pub file_alignment: u32,
    /// Size of the loaded image.
    pub size_of_image: u32,
    /// Size of all headers (file offset of the first section's data at the latest).
    pub size_of_headers: u32,
    /// Image checksum.
    pub checksum: u32,
    /// Subsystem (10 = EFI application).
    pub subsystem: u16,
    /// Data directories.
    pub data_directories: Vec<DataDirectory>,
}

/// A section header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionHeader {
    /// Raw 8-byte name.
    pub name: [u8; 8],
    /// Size in memory.
    pub virtual_size: u32,
    /// RVA.
    pub virtual_address: u32,
    /// Size in the file (aligned).
    pub size_of_raw_data: u32,
    /// File offset of the raw data.
    pub pointer_to_raw_data: u32,
    /// Characteristics flags.
    pub characteristics: u32,
}

impl SectionHeader {
    /// The name without trailing NULs (lossy UTF-8).
    pub fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(8);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

/// A parsed, validated PE32+ image.
#[derive(Clone, Debug)]
pub struct PeFile<'a> {
    data: &'a [u8],
    opt_offset: usize,
    section_table_offset: usize,
    /// COFF header.
    pub coff: CoffHeader,
    /// Optional header.
    pub optional: OptionalHeader,
    /// Sections in table order.
    pub sections: Vec<SectionHeader>,
}

fn u16at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn u32at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn u64at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

fn round_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

fn malformed(m: impl Into<String>) -> Error {
    Error::PeMalformed(m.into())
}

impl<'a> PeFile<'a> {
    /// Parses and validates a PE32+ image (see the module docs).
    pub fn parse(data: &'a [u8]) -> Result<Self> {
        let trunc = || malformed("truncated headers");
        if data.get(0..2) != Some(b"MZ") {
            return Err(malformed("no MZ signature: not a PE image"));
        }
        let pe = u32at(data, 0x3c).ok_or_else(trunc)? as usize;
        if data.get(pe..pe + 4) != Some(b"PE\0\0") {
            return Err(malformed("no PE signature at e_lfanew"));
        }
        let c = pe + 4;
        let coff = CoffHeader {
            machine: u16at(data, c).ok_or_else(trunc)?,
            number_of_sections: u16at(data, c + 2).ok_or_else(trunc)?,
            time_date_stamp: u32at(data, c + 4).ok_or_else(trunc)?,
            pointer_to_symbol_table: u32at(data, c + 8).ok_or_else(trunc)?,
            number_of_symbols: u32at(data, c + 12).ok_or_else(trunc)?,
            size_of_optional_header: u16at(data, c + 16).ok_or_else(trunc)?,
            characteristics: u16at(data, c + 18).ok_or_else(trunc)?,
        };
        let o = c + COFF_LEN;
        if u16at(data, o).ok_or_else(trunc)? != 0x20b {
            return Err(malformed("optional header is not PE32+ (magic 0x20b)"));
        }
        let ndirs = u32at(data, o + 108).ok_or_else(trunc)? as usize;
        if ndirs > 16 {
            return Err(malformed(format!("{ndirs} data directories (maximum 16)")));
        }
        if (coff.size_of_optional_header as usize) < OPT_FIXED_LEN + 8 * ndirs {
            return Err(malformed(
                "SizeOfOptionalHeader too small for its data directories",
            ));
        }
        let mut dirs = Vec::with_capacity(ndirs);
        for i in 0..ndirs {
            let d = o + OPT_FIXED_LEN + 8 * i;
            dirs.push(DataDirectory {
                virtual_address: u32at(data, d).ok_or_else(trunc)?,
                size: u32at(data, d + 4).ok_or_else(trunc)?,
            });
        }
        let optional = OptionalHeader {
            size_of_code: u32at(data, o + 4).ok_or_else(trunc)?,
            size_of_initialized_data: u32at(data, o + 8).ok_or_else(trunc)?,
            address_of_entry_point: u32at(data, o + 16).ok_or_else(trunc)?,
            image_base: u64at(data, o + 24).ok_or_else(trunc)?,
            section_alignment: u32at(data, o + 32).ok_or_else(trunc)?,
            file_alignment: u32at(data, o + 36).ok_or_else(trunc)?,
            size_of_image: u32at(data, o + 56).ok_or_else(trunc)?,
            size_of_headers: u32at(data, o + 60).ok_or_else(trunc)?,
            checksum: u32at(data, o + 64).ok_or_else(trunc)?,
            subsystem: u16at(data, o + 68).ok_or_else(trunc)?,
            data_directories: dirs,
        };
        let fa = optional.file_alignment;
        let sa = optional.section_alignment;
        if !fa.is_power_of_two() || !(512..=65536).contains(&fa) || !sa.is_power_of_two() || sa < fa
        {
            return Err(malformed(format!(
                "invalid alignments (FileAlignment {fa:#x}, SectionAlignment {sa:#x})"
            )));
        }
        let st = o + coff.size_of_optional_header as usize;
        let st_end = st + SECTION_HEADER_LEN * coff.number_of_sections as usize;
        if st_end > data.len() || st_end > optional.size_of_headers as usize {
            return Err(malformed(
                "section table lies outside the file or SizeOfHeaders",
            ));
        }
        let mut sections = Vec::new();
        for i in 0..coff.number_of_sections as usize {
            let s = &data[st + SECTION_HEADER_LEN * i..st + SECTION_HEADER_LEN * (i + 1)];
            let mut name = [0u8; 8];
            name.copy_from_slice(&s[0..8]);
            let sh = SectionHeader {
                name,
                virtual_size: u32at(s, 8).ok_or_else(trunc)?,
                virtual_address: u32at(s, 12).ok_or_else(trunc)?,
                size_of_raw_data: u32at(s, 16).ok_or_else(trunc)?,
                pointer_to_raw_data: u32at(s, 20).ok_or_else(trunc)?,
                characteristics: u32at(s, 36).ok_or_else(trunc)?,
            };
            let end = sh.pointer_to_raw_data as u64 + sh.size_of_raw_data as u64;
            if sh.size_of_raw_data > 0 && end > data.len() as u64 {
                return Err(malformed(format!(
                    "section {} raw data ({:#x}+{:#x}) runs past the end of the file",
                    sh.name(),
                    sh.pointer_to_raw_data,
                    sh.size_of_raw_data
                )));
            }
            if let Some(prev) = sections.last() {
                let prev: &SectionHeader = prev;
                if (sh.virtual_address as u64)
                    < prev.virtual_address as u64 + prev.virtual_size as u64
                {
                    return Err(malformed(format!(
                        "section {} overlaps or precedes section {} in memory",
                        sh.name(),
                        prev.name()
                    )));
                }
            }
            if sh.virtual_address as u64 + sh.virtual_size as u64 > optional.size_of_image as u64 {
                return Err(malformed(format!(
                    "section {} ends beyond SizeOfImage",
                    sh.name()
                )));
            }
            sections.push(sh);
        }
        Ok(PeFile {
            data,
            opt_offset: o,
            section_table_offset: st,
            coff,
            optional,
            sections,
        })
    }

    /// The whole file.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }

    /// Finds a section by name.
    pub fn section(&self, name: &str) -> Option<&SectionHeader> {
        self.sections.iter().find(|s| s.name() == name)
    }

    /// Raw file data of a section (`SizeOfRawData` bytes).
    pub fn raw_data(&self, s: &SectionHeader) -> &'a [u8] {
        let start = s.pointer_to_raw_data as usize;
        self.data
            .get(start..start + s.size_of_raw_data as usize)
            .unwrap_or(&[])
    }

    /// Content of a section as loaded in memory: `VirtualSize` bytes (raw data
    /// truncated, or zero-extended).
    pub fn memory_data(&self, s: &SectionHeader) -> Vec<u8> {
        let raw = self.raw_data(s);
        let n = s.virtual_size as usize;
        let mut v = raw[..raw.len().min(n)].to_vec();
        v.resize(n, 0);
        v
    }

    /// The Certificate Table directory (file offset, size), if present and non-empty.
    pub fn certificate_table(&self) -> Option<DataDirectory> {
        self.optional
            .data_directories
            .get(CERTIFICATE_TABLE)
            .copied()
            .filter(|d| d.size != 0)
    }
}

/// Authenticode SHA-256 image hash (Microsoft PE/COFF spec, "Calculating the PE Image
/// Hash"): headers up to `SizeOfHeaders` without the CheckSum field and the
/// Certificate Table directory entry, then each section's raw data in file order,
/// then any data after the last section except the certificate table.
pub fn authenticode_sha256(image: &[u8]) -> Result<[u8; 32]> {
    let pe = PeFile::parse(image)?;
    let checksum_off = pe.opt_offset + 64;
    let soh = pe.optional.size_of_headers as usize;
    if soh > image.len() {
        return Err(malformed("SizeOfHeaders is larger than the file"));
    }
    let mut h = Sha256::new();
    h.update(&image[..checksum_off]);
    if pe.optional.data_directories.len() > CERTIFICATE_TABLE {
        let cert_off = pe.opt_offset + OPT_FIXED_LEN + 8 * CERTIFICATE_TABLE;
        h.update(&image[checksum_off + 4..cert_off]);
        h.update(&image[cert_off + 8..soh]);
    } else {
        h.update(&image[checksum_off + 4..soh]);
    }
    let mut secs: Vec<&SectionHeader> = pe
        .sections
        .iter()
        .filter(|s| s.size_of_raw_data > 0)
        .collect();
    secs.sort_by_key(|s| s.pointer_to_raw_data);
    let mut hashed = soh as u64;
    for s in secs {
        h.update(pe.raw_data(s));
        hashed += s.size_of_raw_data as u64;
    }
    let cert_size = pe.certificate_table().map_or(0, |d| d.size as u64);
    let len = image.len() as u64;
    if len > hashed + cert_size {
        let end = (len - cert_size) as usize;
        h.update(image.get(hashed as usize..end).unwrap_or(&[]));
    }
    Ok(h.finalize().into())
}

/// The standard PE image checksum (16-bit one's-complement-style sum with carries
/// folded, skipping the CheckSum field, plus the file length).
pub fn pe_checksum(image: &[u8]) -> Result<u32> {
    let pe = PeFile::parse(image)?;
    let skip = pe.opt_offset + 64;
    let mut sum: u64 = 0;
    for (i, chunk) in image.chunks(2).enumerate() {
        let off = i * 2;
        if off == skip || off == skip + 2 {
            continue;
        }
        let w = if chunk.len() == 2 {
            u16::from_le_bytes([chunk[0], chunk[1]])
        } else {
            chunk[0] as u16
        };
        sum += w as u64;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    Ok((sum as u32).wrapping_add(image.len() as u32))
}

/// How the assembled UKI's CheckSum field is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Checksum {
    /// 0, as ukify writes (UEFI ignores the field).
    #[default]
    Zero,
    /// The standard PE checksum.
    Compute,
}

/// Sections placed before extra sections, in ukify's order.
const LEADING: [&str; 8] = [
    ".osrel", ".cmdline", ".dtb", ".uname", ".splash", ".pcrpkey", ".initrd", ".ucode",
];
/// Sections placed after extra sections, `.linux` last.
const TRAILING: [&str; 2] = [".pcrsig", ".linux"];

/// Assembles a Unified Kernel Image from a systemd-stub and section contents.
#[derive(Clone, Debug)]
pub struct UkiBuilder {
    stub: Vec<u8>,
    sections: Vec<(String, Vec<u8>)>,
    checksum: Checksum,
}

impl UkiBuilder {
    /// Starts from a stub (e.g. `/usr/lib/systemd/boot/efi/linuxx64.efi.stub`).
    pub fn new(stub: Vec<u8>) -> Self {
        UkiBuilder {
            stub,
            sections: Vec::new(),
            checksum: Checksum::Zero,
        }
    }

    /// Chooses how the checksum is set (default [`Checksum::Zero`]).
    pub fn checksum(&mut self, c: Checksum) -> &mut Self {
        self.checksum = c;
        self
    }

    /// Adds a section. Names are 1–8 bytes of printable ASCII starting with `.`, each
    /// at most once; content must be non-empty.
    pub fn section(&mut self, name: &str, content: Vec<u8>) -> Result<&mut Self> {
        if !name.starts_with('.')
            || name.len() > 8
            || name.len() < 2
            || !name.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Error::Uki(format!(
                "section name {name:?} must be '.' plus 1 to 7 printable ASCII characters"
            )));
        }
        if self.sections.iter().any(|(n, _)| n == name) {
            return Err(Error::Uki(format!("section {name} was given twice")));
        }
        if content.is_empty() {
            return Err(Error::Uki(format!(
                "section {name} is empty; omit it instead"
            )));
        }
        self.sections.push((name.to_owned(), content));
        Ok(self)
    }

    /// `.osrel`: the os-release file.
    pub fn osrel(&mut self, c: Vec<u8>) -> Result<&mut Self> {
        self.section(".osrel", c)
    }

    /// `.cmdline`: the kernel command line.
    pub fn cmdline(&mut self, c: Vec<u8>) -> Result<&mut Self> {
        self.section(".cmdline", c)
    }

    /// `.uname`: the kernel release string.
    pub fn uname(&mut self, c: Vec<u8>) -> Result<&mut Self> {
        self.section(".uname", c)
    }

    /// `.linux`: the kernel image.
    pub fn linux(&mut self, c: Vec<u8>) -> Result<&mut Self> {
        self.section(".linux", c)
    }

    /// `.initrd`: the initramfs.
    pub fn initrd(&mut self, c: Vec<u8>) -> Result<&mut Self> {
        self.section(".initrd", c)
    }

    fn ordered(&self) -> Vec<&(String, Vec<u8>)> {
        let rank = |n: &str| {
            if let Some(i) = LEADING.iter().position(|&l| l == n) {
                (0, i)
            } else if let Some(i) = TRAILING.iter().position(|&l| l == n) {
                (2, i)
            } else {
                (1, 0)
            }
        };
        let mut v: Vec<&(String, Vec<u8>)> = self.sections.iter().collect();
        // Stable sort keeps extras in insertion order.
        v.sort_by_key(|(n, _)| rank(n));
        v
    }

    /// Builds the UKI. Requires `.linux`.
    pub fn build(&self) -> Result<Vec<u8>> {
        if !self.sections.iter().any(|(n, _)| n == ".linux") {
            return Err(Error::Uki("no .linux section: add the kernel".into()));
        }
        let mut out = self.stub.clone();
        let stub = PeFile::parse(&self.stub)?;
        if stub.certificate_table().is_some() {
            return Err(Error::Uki(
                "the stub is signed; use an unsigned stub and sign the UKI".into(),
            ));
        }
        let o = stub.opt_offset;
        let c = o - COFF_LEN;
        let fa = stub.optional.file_alignment as u64;
        let sa = stub.optional.section_alignment as u64;
        // Strip a trailing COFF symbol table, like ukify.
        let mut coff_chars = stub.coff.characteristics;
        if stub.coff.pointer_to_symbol_table != 0 {
            let st = stub.coff.pointer_to_symbol_table as u64;
            let mut size = 18 * stub.coff.number_of_symbols as u64;
            if let Some(strtab) = u32at(&self.stub, (st + size) as usize) {
                size += strtab as u64;
            }
            if st + size == self.stub.len() as u64 {
                out.truncate(st as usize);
                out[c + 8..c + 16].fill(0);
                coff_chars |= IMAGE_FILE_LOCAL_SYMS_STRIPPED;
            }
        }
        for s in &stub.sections {
            if s.size_of_raw_data > 0
                && (s.pointer_to_raw_data as u64 % fa != 0 || s.size_of_raw_data as u64 % fa != 0)
            {
                return Err(Error::Uki(format!(
                    "stub section {} is not FileAlignment-aligned; use a stub linked normally",
                    s.name()
                )));
            }
        }
        let first_raw = stub
            .sections
            .iter()
            .filter(|s| s.size_of_raw_data > 0)
            .map(|s| s.pointer_to_raw_data as u64)
            .min()
            .unwrap_or(out.len() as u64);
        let soh = round_up(stub.optional.size_of_headers as u64, fa)
            .min(first_raw.max(stub.optional.size_of_headers as u64));
        let mut sections = stub.sections.clone();
        let mut size_of_init = stub.optional.size_of_initialized_data as u64;
        let new: Vec<&(String, Vec<u8>)> = self.ordered();
        let added = new
            .iter()
            .filter(|(n, _)| stub.section(n).is_none())
            .count();
        let needed =
            (stub.section_table_offset + SECTION_HEADER_LEN * (sections.len() + added)) as u64;
        if needed > soh {
            return Err(Error::PeNoHeaderRoom {
                needed,
                available: soh,
            });
        }
        for (name, data) in new {
            let len = data.len() as u64;
            if let Some(i) = sections.iter().position(|s| &s.name() == name) {
                let s = &mut sections[i];
                if len > s.size_of_raw_data as u64 {
                    return Err(Error::Uki(format!(
                        "section {name} exists in the stub with {} bytes of room; {len} bytes do not fit",
                        s.size_of_raw_data
                    )));
                }
                let p = s.pointer_to_raw_data as usize;
                out[p..p + s.size_of_raw_data as usize].fill(0);
                out[p..p + data.len()].copy_from_slice(data);
                s.virtual_size = len as u32;
                continue;
            }
            let last = sections
                .last()
                .ok_or_else(|| Error::Uki("the stub has no sections".into()))?;
            let va = round_up(last.virtual_address as u64 + last.virtual_size as u64, sa);
            let ptr = round_up(out.len() as u64, fa);
            let raw = round_up(len, fa);
            if ptr + raw > u32::MAX as u64 || va + len > u32::MAX as u64 {
                return Err(Error::Uki(format!(
                    "section {name} makes the image larger than 4 GiB"
                )));
            }
            out.resize(ptr as usize, 0);
            out.extend_from_slice(data);
            out.resize((ptr + raw) as usize, 0);
            let mut n8 = [0u8; 8];
            n8[..name.len()].copy_from_slice(name.as_bytes());
            let kind = if name == ".linux" {
                IMAGE_SCN_CNT_CODE
            } else {
                IMAGE_SCN_CNT_INITIALIZED_DATA
            };
            sections.push(SectionHeader {
                name: n8,
                virtual_size: len as u32,
                virtual_address: va as u32,
                size_of_raw_data: raw as u32,
                pointer_to_raw_data: ptr as u32,
                characteristics: IMAGE_SCN_MEM_READ | kind,
            });
            size_of_init += len;
        }
        // Rewrite headers.
        let last = sections
            .last()
            .ok_or_else(|| Error::Uki("no sections".into()))?;
        let size_of_image = round_up(last.virtual_address as u64 + last.virtual_size as u64, sa);
        out[c + 2..c + 4].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        out[c + 18..c + 20].copy_from_slice(&coff_chars.to_le_bytes());
        out[o + 8..o + 12]
            .copy_from_slice(&(size_of_init.min(u32::MAX as u64) as u32).to_le_bytes());
        out[o + 56..o + 60].copy_from_slice(&(size_of_image as u32).to_le_bytes());
        out[o + 60..o + 64].copy_from_slice(&(soh as u32).to_le_bytes());
        out[o + 64..o + 68].fill(0);
        let st = stub.section_table_offset;
        for (i, s) in sections.iter().enumerate() {
            let e = &mut out[st + SECTION_HEADER_LEN * i..st + SECTION_HEADER_LEN * (i + 1)];
            if i < stub.sections.len() {
                // Keep relocation/line-number fields of the stub's own sections.
                e[8..12].copy_from_slice(&s.virtual_size.to_le_bytes());
                continue;
            }
            e.fill(0);
            e[0..8].copy_from_slice(&s.name);
            e[8..12].copy_from_slice(&s.virtual_size.to_le_bytes());
            e[12..16].copy_from_slice(&s.virtual_address.to_le_bytes());
            e[16..20].copy_from_slice(&s.size_of_raw_data.to_le_bytes());
            e[20..24].copy_from_slice(&s.pointer_to_raw_data.to_le_bytes());
            e[36..40].copy_from_slice(&s.characteristics.to_le_bytes());
        }
        if self.checksum == Checksum::Compute {
            let sum = pe_checksum(&out)?;
            out[o + 64..o + 68].copy_from_slice(&sum.to_le_bytes());
        }
        // Validate our own output.
        PeFile::parse(&out)?;
        Ok(out)
    }
}

/// Which systemd-stub measures the UKI (the set and order of measured sections
/// changed over time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StubGeneration {
    /// systemd 252 (Debian 12): `.linux .osrel .cmdline .initrd .splash .dtb .pcrpkey`.
    Systemd252,
    /// UAPI.5 UKI specification order (systemd ≥ 257): `.linux .osrel .cmdline
    /// .initrd .ucode .splash .dtb .uname .sbat .pcrpkey` (single-profile UKIs;
    /// `.profile`, `.dtbauto`, `.hwids`, `.efifw` are not predicted).
    Uapi,
}

impl StubGeneration {
    /// Measured section names in measurement order (`.pcrsig` is never measured).
    pub fn measured_sections(self) -> &'static [&'static str] {
        match self {
            StubGeneration::Systemd252 => &[
                ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey",
            ],
            StubGeneration::Uapi => &[
                ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname",
                ".sbat", ".pcrpkey",
            ],
        }
    }
}

/// One section's pair of PCR 11 events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionMeasurement {
    /// Section name.
    pub name: String,
    /// SHA-256 of the name including its terminating NUL.
    pub name_digest: [u8; 32],
    /// SHA-256 of the in-memory section content (`VirtualSize` bytes).
    pub data_digest: [u8; 32],
}

/// SHA-256 of a section as systemd-stub measures it (in-memory content), if present.
pub fn section_sha256(pe: &PeFile<'_>, name: &str) -> Option<[u8; 32]> {
    pe.section(name)
        .map(|s| Sha256::digest(pe.memory_data(s)).into())
}

/// The PCR 11 events systemd-stub makes for this UKI, in order.
pub fn pcr11_measurements(pe: &PeFile<'_>, generation: StubGeneration) -> Vec<SectionMeasurement> {
    generation
        .measured_sections()
        .iter()
        .filter_map(|&name| {
            let data_digest = section_sha256(pe, name)?;
            let mut n = name.as_bytes().to_vec();
            n.push(0);
            Some(SectionMeasurement {
                name: name.to_owned(),
                name_digest: Sha256::digest(&n).into(),
                data_digest,
            })
        })
        .collect()
}

/// Replays the events on a zero PCR: the SHA-256 PCR 11 value after systemd-stub, if
/// nothing else extended PCR 11 before.
pub fn predict_pcr11_sha256(events: &[SectionMeasurement]) -> [u8; 32] {
    let mut pcr = [0u8; 32];
    for e in events {
        for d in [e.name_digest, e.data_digest] {
            let mut h = Sha256::new();
            h.update(pcr);
            h.update(d);
            pcr = h.finalize().into();
        }
    }
    pcr
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal PE32+ EFI application with `.text` and `.data` (and optionally a
    /// trailing symbol table), for tests that must not depend on an installed stub.
    pub(crate) fn tiny_stub(with_symbols: bool) -> Vec<u8> {
        let mut f = vec![0u8; 0x400];
        f[0..2].copy_from_slice(b"MZ");
        f[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        f[0x80..0x84].copy_from_slice(b"PE\0\0");
        let c = 0x84;
        f[c..c + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        f[c + 2..c + 4].copy_from_slice(&2u16.to_le_bytes());
        f[c + 4..c + 8].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        f[c + 16..c + 18].copy_from_slice(&240u16.to_le_bytes());
        f[c + 18..c + 20].copy_from_slice(&0x0206u16.to_le_bytes());
        let o = c + 20;
        f[o..o + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        f[o + 4..o + 8].copy_from_slice(&0x200u32.to_le_bytes());
        f[o + 8..o + 12].copy_from_slice(&0x200u32.to_le_bytes());
        f[o + 16..o + 20].copy_from_slice(&0x1000u32.to_le_bytes());
        f[o + 32..o + 36].copy_from_slice(&0x1000u32.to_le_bytes());
        f[o + 36..o + 40].copy_from_slice(&0x200u32.to_le_bytes());
        f[o + 56..o + 60].copy_from_slice(&0x3000u32.to_le_bytes());
        f[o + 60..o + 64].copy_from_slice(&0x300u32.to_le_bytes()); // unaligned on purpose
        f[o + 68..o + 70].copy_from_slice(&10u16.to_le_bytes());
        f[o + 108..o + 112].copy_from_slice(&16u32.to_le_bytes());
        let st = o + 240;
        let mk = |f: &mut Vec<u8>, i: usize, name: &[u8], va: u32, ptr: u32, ch: u32| {
            let e = st + 40 * i;
            f[e..e + name.len()].copy_from_slice(name);
            f[e + 8..e + 12].copy_from_slice(&0x10u32.to_le_bytes());
            f[e + 12..e + 16].copy_from_slice(&va.to_le_bytes());
            f[e + 16..e + 20].copy_from_slice(&0x200u32.to_le_bytes());
            f[e + 20..e + 24].copy_from_slice(&ptr.to_le_bytes());
            f[e + 36..e + 40].copy_from_slice(&ch.to_le_bytes());
        };
        mk(&mut f, 0, b".text", 0x1000, 0x400, 0x6000_0020);
        mk(&mut f, 1, b".sbat", 0x2000, 0x600, 0x4000_0040);
        f.resize(0x800, 0);
        f[0x400..0x410].copy_from_slice(&[0xC3; 16]);
        f[0x600..0x610].copy_from_slice(b"sbat,1,SBAT.....");
        if with_symbols {
            f[c + 8..c + 12].copy_from_slice(&0x800u32.to_le_bytes());
            f[c + 12..c + 16].copy_from_slice(&2u32.to_le_bytes());
            f.extend_from_slice(&[0xAA; 36]);
            f.extend_from_slice(&8u32.to_le_bytes());
            f.extend_from_slice(b"abcd");
        }
        f
    }

    fn build(stub: Vec<u8>) -> Vec<u8> {
        let mut b = UkiBuilder::new(stub);
        b.linux(vec![0x4B; 5000]).unwrap();
        b.initrd(vec![0x49; 3000]).unwrap();
        b.cmdline(b"console=ttyS0".to_vec()).unwrap();
        b.section(".pcrpkey", b"KEY".to_vec()).unwrap();
        b.section(".extra", b"x".to_vec()).unwrap();
        b.osrel(b"ID=appliance\n".to_vec()).unwrap();
        b.build().unwrap()
    }

    #[test]
    fn uki_layout_follows_ukify() {
        let uki = build(tiny_stub(true));
        let pe = PeFile::parse(&uki).unwrap();
        let names: Vec<String> = pe.sections.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [".text", ".sbat", ".osrel", ".cmdline", ".pcrpkey", ".initrd", ".extra", ".linux"]
        );
        assert_eq!(pe.coff.number_of_sections, 8);
        assert_eq!(pe.coff.pointer_to_symbol_table, 0);
        assert_eq!(pe.coff.time_date_stamp, 0x1234_5678);
        assert_eq!(pe.optional.size_of_headers, 0x400);
        assert_eq!(pe.optional.checksum, 0);
        let mut prev_end = 0x2010u32;
        for s in &pe.sections[2..] {
            assert_eq!(s.virtual_address % 0x1000, 0);
            assert!(s.virtual_address >= prev_end);
            assert_eq!(s.pointer_to_raw_data % 0x200, 0);
            assert_eq!(s.size_of_raw_data % 0x200, 0);
            prev_end = s.virtual_address + s.virtual_size;
        }
        let linux = pe.section(".linux").unwrap();
        assert_eq!(linux.virtual_size, 5000);
        assert_eq!(
            linux.characteristics,
            IMAGE_SCN_MEM_READ | IMAGE_SCN_CNT_CODE
        );
        assert_eq!(pe.memory_data(linux), vec![0x4B; 5000]);
        assert_eq!(
            pe.memory_data(pe.section(".cmdline").unwrap()),
            b"console=ttyS0"
        );
        assert_eq!(
            pe.optional.size_of_image,
            (prev_end).div_ceil(0x1000) * 0x1000
        );
        assert_eq!(
            pe.optional.size_of_initialized_data,
            0x200 + 13 + 13 + 3 + 3000 + 1 + 5000
        );
        assert_eq!(
            uki.len() as u32,
            linux.pointer_to_raw_data + linux.size_of_raw_data
        );
        // Deterministic and independent of insertion order.
        let mut b = UkiBuilder::new(tiny_stub(true));
        b.osrel(b"ID=appliance\n".to_vec()).unwrap();
        b.section(".extra", b"x".to_vec()).unwrap();
        b.section(".pcrpkey", b"KEY".to_vec()).unwrap();
        b.cmdline(b"console=ttyS0".to_vec()).unwrap();
        b.initrd(vec![0x49; 3000]).unwrap();
        b.linux(vec![0x4B; 5000]).unwrap();
        assert_eq!(b.build().unwrap(), uki);
    }

    #[test]
    fn existing_section_is_replaced_in_place_and_checksum_computed() {
        let mut b = UkiBuilder::new(tiny_stub(false));
        b.linux(vec![1; 10]).unwrap();
        b.section(".sbat", b"sbat,1,x\n".to_vec()).unwrap();
        b.checksum(Checksum::Compute);
        let uki = b.build().unwrap();
        let pe = PeFile::parse(&uki).unwrap();
        assert_eq!(pe.sections.len(), 3);
        assert_eq!(pe.memory_data(pe.section(".sbat").unwrap()), b"sbat,1,x\n");
        assert_eq!(pe.optional.checksum, pe_checksum(&uki).unwrap());
        assert_ne!(pe.optional.checksum, 0);
        let mut big = UkiBuilder::new(tiny_stub(false));
        big.linux(vec![1; 10]).unwrap();
        big.section(".sbat", vec![b'x'; 0x201]).unwrap();
        assert!(big.build().is_err());
    }

    #[test]
    fn header_room_is_checked() {
        let mut b = UkiBuilder::new(tiny_stub(false));
        b.linux(vec![1]).unwrap();
        // The table starts at 0x188; 0x400 holds (0x400 - 0x188) / 40 = 15 headers.
        for i in 0..14 {
            b.section(&format!(".s{i}"), vec![1]).unwrap();
        }
        match b.build() {
            Err(Error::PeNoHeaderRoom { needed, available }) => {
                assert_eq!(available, 0x400);
                assert!(needed > available);
            }
            other => panic!("expected PeNoHeaderRoom, got {:?}", other.map(|v| v.len())),
        }
    }

    #[test]
    fn builder_rejects_bad_sections() {
        let mut b = UkiBuilder::new(tiny_stub(false));
        assert!(b.section("linux", vec![1]).is_err());
        assert!(b.section(".toolongname", vec![1]).is_err());
        assert!(b.section(".x", vec![]).is_err());
        b.section(".x", vec![1]).unwrap();
        assert!(b.section(".x", vec![1]).is_err());
        assert!(b.build().is_err(), "no .linux");
    }

    #[test]
    fn measurements_and_pcr11() {
        let uki = build(tiny_stub(false));
        let pe = PeFile::parse(&uki).unwrap();
        let m = pcr11_measurements(&pe, StubGeneration::Systemd252);
        let names: Vec<&str> = m.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [".linux", ".osrel", ".cmdline", ".initrd", ".pcrpkey"]
        );
        assert_eq!(
            m[0].name_digest,
            <[u8; 32]>::from(Sha256::digest(b".linux\0"))
        );
        assert_eq!(
            m[2].data_digest,
            <[u8; 32]>::from(Sha256::digest(b"console=ttyS0"))
        );
        let uapi = pcr11_measurements(&pe, StubGeneration::Uapi);
        // .sbat of the stub is measured by newer stubs.
        assert!(uapi.iter().any(|e| e.name == ".sbat"));
        let mut pcr = [0u8; 32];
        for e in &m {
            pcr = Sha256::digest([pcr, e.name_digest].concat()).into();
            pcr = Sha256::digest([pcr, e.data_digest].concat()).into();
        }
        assert_eq!(predict_pcr11_sha256(&m), pcr);
        assert_ne!(predict_pcr11_sha256(&m), predict_pcr11_sha256(&uapi));
    }

    #[test]
    fn authenticode_ignores_checksum_and_cert_dir() {
        let uki = build(tiny_stub(false));
        let a = authenticode_sha256(&uki).unwrap();
        let pe = PeFile::parse(&uki).unwrap();
        let mut b = uki.clone();
        b[pe.opt_offset + 64] ^= 0xFF;
        assert_eq!(authenticode_sha256(&b).unwrap(), a);
        let mut c = uki.clone();
        let last = c.len() - 1;
        c[last] ^= 1;
        assert_ne!(authenticode_sha256(&c).unwrap(), a);
    }

    #[test]
    fn parser_rejects_garbage() {
        assert!(PeFile::parse(b"").is_err());
        assert!(PeFile::parse(b"MZ").is_err());
        let mut s = tiny_stub(false);
        s[0x84 + 20] = 0x0b; // PE32 magic
        s[0x84 + 21] = 0x01;
        assert!(PeFile::parse(&s).is_err());
        let mut s = tiny_stub(false);
        s.truncate(0x700);
        assert!(PeFile::parse(&s).is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let _ = PeFile::parse(&data);
            let _ = authenticode_sha256(&data);
        }

        #[test]
        fn parser_never_panics_on_mutated_stub(muts in proptest::collection::vec((0usize..0x400, any::<u8>()), 1..8)) {
            let mut s = tiny_stub(true);
            for (i, v) in muts {
                s[i] = v;
            }
            if let Ok(pe) = PeFile::parse(&s) {
                for sec in pe.sections.iter().filter(|s| s.virtual_size < 1 << 20) {
                    let _ = pe.memory_data(sec);
                }
            }
            let _ = authenticode_sha256(&s);
            let _ = pe_checksum(&s);
            let mut b = UkiBuilder::new(s);
            let _ = b.linux(vec![1, 2, 3]).map(|b| b.build());
        }
    }
}
