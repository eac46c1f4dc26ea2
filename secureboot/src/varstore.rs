//! EFI signature lists and the EDK2/OVMF non-volatile variable store, edited offline.
//!
//! # Layout (EDK2 `MdeModulePkg/Include/Guid/VariableFormat.h`,
//! `AuthenticatedVariableFormat.h`, `PiFirmwareVolume.h`)
//! ```text
//! EFI_FIRMWARE_VOLUME_HEADER (0x38 bytes + block map)
//!   ZeroVector[16], FileSystemGuid = gEfiSystemNvDataFvGuid, FvLength u64,
//!   Signature "_FVH", Attributes u32, HeaderLength u16, Checksum u16 (16-bit sum of
//!   the header is 0), ExtHeaderOffset u16, Reserved u8, Revision u8,
//!   BlockMap[] { NumBlocks u32, Length u32 } terminated by { 0, 0 }
//! VARIABLE_STORE_HEADER at HeaderLength (28 bytes)
//!   Signature = gEfiAuthenticatedVariableGuid, Size u32 (including this header),
//!   Format u8 = 0x5A (formatted), State u8 = 0xFE (healthy), Reserved u16, Reserved1 u32
//! AUTHENTICATED_VARIABLE_HEADER records, each 4-byte aligned (60 bytes + name + data)
//!   StartId u16 = 0x55AA, State u8, Reserved u8, Attributes u32, MonotonicCount u64,
//!   TimeStamp EFI_TIME (16 bytes), PubKeyIndex u32, NameSize u32, DataSize u32,
//!   VendorGuid, Name (UTF-16LE, NUL-terminated, NameSize bytes), Data (DataSize bytes)
//! free space (0xFF) up to the end of the store (HeaderLength + Size)
//! ... the rest of the FV (FTW working block, spare area) ...
//! ```
//! The first header without `StartId == 0x55AA` ends the list. A record is live if
//! `State == VAR_ADDED (0x3F)`, or if `State == VAR_ADDED & VAR_IN_DELETED_TRANSITION
//! (0x3E)` and there is no `VAR_ADDED` copy of the same variable (EDK2's rule for an
//! update interrupted between writing the new copy and deleting the old one). Any
//! other state (deleted 0x3C, header-only 0x7F, ...) is a dead record.
//!
//! # Editing
//! [`VarStore::parse`] keeps every record, dead ones as raw bytes, so that
//! [`VarStore::to_bytes`] reproduces an unmodified store byte for byte. The first
//! [`VarStore::set`] or [`VarStore::delete`] compacts the store: dead records are
//! dropped and live ones get `State = 0x3F`. Live variables keep their order; new ones
//! are appended. Padding and free space are written as 0xFF (erased flash).
//! Everything outside the variable store region is copied unchanged.

use sha2::{Digest, Sha256};

use crate::guid::{self, Guid};
use crate::x509::Certificate;
use crate::{Error, Result};

/// `EFI_VARIABLE_NON_VOLATILE`
pub const EFI_VARIABLE_NON_VOLATILE: u32 = 0x0000_0001;
/// `EFI_VARIABLE_BOOTSERVICE_ACCESS`
pub const EFI_VARIABLE_BOOTSERVICE_ACCESS: u32 = 0x0000_0002;
/// `EFI_VARIABLE_RUNTIME_ACCESS`
pub const EFI_VARIABLE_RUNTIME_ACCESS: u32 = 0x0000_0004;
/// `EFI_VARIABLE_HARDWARE_ERROR_RECORD`
pub const EFI_VARIABLE_HARDWARE_ERROR_RECORD: u32 = 0x0000_0008;
/// `EFI_VARIABLE_AUTHENTICATED_WRITE_ACCESS` (deprecated)
pub const EFI_VARIABLE_AUTHENTICATED_WRITE_ACCESS: u32 = 0x0000_0010;
/// `EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS`
pub const EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS: u32 = 0x0000_0020;
/// `EFI_VARIABLE_APPEND_WRITE`
pub const EFI_VARIABLE_APPEND_WRITE: u32 = 0x0000_0040;

/// Attributes of PK, KEK, db and dbx: NV | BS | RT | TIME_BASED_AUTHENTICATED_WRITE_ACCESS
/// (0x27).
pub const SECURE_BOOT_DB_ATTRIBUTES: u32 = EFI_VARIABLE_NON_VOLATILE
    | EFI_VARIABLE_BOOTSERVICE_ACCESS
    | EFI_VARIABLE_RUNTIME_ACCESS
    | EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS;

/// Attributes of EDK2's `SecureBootEnable` and `CustomMode`: NV | BS (0x03).
pub const EDK2_SETTING_ATTRIBUTES: u32 =
    EFI_VARIABLE_NON_VOLATILE | EFI_VARIABLE_BOOTSERVICE_ACCESS;

/// `VAR_ADDED`
pub const VAR_ADDED: u8 = 0x3F;
/// `VAR_DELETED`
pub const VAR_DELETED: u8 = 0xFD;
/// `VAR_IN_DELETED_TRANSITION`
pub const VAR_IN_DELETED_TRANSITION: u8 = 0xFE;
/// `VAR_HEADER_VALID_ONLY`
pub const VAR_HEADER_VALID_ONLY: u8 = 0x7F;

const FV_SIGNATURE: &[u8; 4] = b"_FVH";
const FV_FIXED_HEADER: usize = 0x38;
const STORE_HEADER: usize = 28;
const VAR_HEADER: usize = 60;
const START_ID: u16 = 0x55AA;
const STORE_FORMATTED: u8 = 0x5A;
const STORE_HEALTHY: u8 = 0xFE;

/// `EFI_TIME`, kept field by field (including the pad bytes) so that parsed records are
/// reproduced exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EfiTime {
    /// 1900 – 9999 (0 = no time).
    pub year: u16,
    /// 1 – 12.
    pub month: u8,
    /// 1 – 31.
    pub day: u8,
    /// 0 – 23.
    pub hour: u8,
    /// 0 – 59.
    pub minute: u8,
    /// 0 – 59.
    pub second: u8,
    /// Pad1 (0).
    pub pad1: u8,
    /// 0 – 999,999,999.
    pub nanosecond: u32,
    /// Minutes from UTC, or 0x07FF (unspecified).
    pub time_zone: i16,
    /// Daylight saving flags.
    pub daylight: u8,
    /// Pad2 (0).
    pub pad2: u8,
}

impl EfiTime {
    /// All zero: what EDK2 stores for variables without time-based authentication.
    pub const ZERO: EfiTime = EfiTime::utc(0, 0, 0, 0, 0, 0);

    /// A UTC time with zero nanoseconds, time zone, daylight and pads, as
    /// `EFI_VARIABLE_AUTHENTICATION_2` requires.
    pub const fn utc(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> Self {
        EfiTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            pad1: 0,
            nanosecond: 0,
            time_zone: 0,
            daylight: 0,
            pad2: 0,
        }
    }

    /// Decodes the 16-byte on-disk form.
    pub fn from_bytes(b: &[u8; 16]) -> EfiTime {
        EfiTime {
            year: u16::from_le_bytes([b[0], b[1]]),
            month: b[2],
            day: b[3],
            hour: b[4],
            minute: b[5],
            second: b[6],
            pad1: b[7],
            nanosecond: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            time_zone: i16::from_le_bytes([b[12], b[13]]),
            daylight: b[14],
            pad2: b[15],
        }
    }

    /// Encodes the 16-byte on-disk form.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&self.year.to_le_bytes());
        b[2] = self.month;
        b[3] = self.day;
        b[4] = self.hour;
        b[5] = self.minute;
        b[6] = self.second;
        b[7] = self.pad1;
        b[8..12].copy_from_slice(&self.nanosecond.to_le_bytes());
        b[12..14].copy_from_slice(&self.time_zone.to_le_bytes());
        b[14] = self.daylight;
        b[15] = self.pad2;
        b
    }
}

/// The fixed timestamp [`enroll`] gives PK, KEK, db and dbx: 2000-01-01T00:00:00Z.
///
/// A fixed value keeps the output deterministic. It is deliberately early: a later
/// time-based authenticated update (e.g. a signed db or dbx update from the OS) must
/// carry a newer timestamp, which any real update does.
pub const ENROLL_TIMESTAMP: EfiTime = EfiTime::utc(2000, 1, 1, 0, 0, 0);

/// One UEFI variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    /// Name (without the terminating NUL).
    pub name: String,
    /// Vendor GUID.
    pub guid: Guid,
    /// `EFI_VARIABLE_*` attribute bits.
    pub attributes: u32,
    /// Value.
    pub data: Vec<u8>,
    /// Timestamp of the last time-based authenticated write (zero otherwise).
    pub timestamp: EfiTime,
    /// `MonotonicCount` (count-based authenticated variables; 0 otherwise).
    pub monotonic_count: u64,
    /// `PubKeyIndex` (count-based authenticated variables; 0 otherwise).
    pub pubkey_index: u32,
}

impl Variable {
    /// A variable with a zero timestamp, monotonic count and public key index.
    pub fn new(name: impl Into<String>, guid: Guid, attributes: u32, data: Vec<u8>) -> Variable {
        Variable {
            name: name.into(),
            guid,
            attributes,
            data,
            timestamp: EfiTime::ZERO,
            monotonic_count: 0,
            pubkey_index: 0,
        }
    }

    fn name_utf16(&self) -> Result<Vec<u8>> {
        if self.name.is_empty() || self.name.contains('\0') {
            return Err(Error::InvalidVariable {
                name: self.name.clone(),
                reason: "name must be non-empty and contain no NUL".into(),
            });
        }
        let mut out: Vec<u8> = self
            .name
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        out.extend_from_slice(&[0, 0]);
        Ok(out)
    }

    fn encode(&self, state: u8, reserved: u8) -> Result<Vec<u8>> {
        let name = self.name_utf16()?;
        let too_big = |what: &str| Error::InvalidVariable {
            name: self.name.clone(),
            reason: format!("{what} does not fit a u32"),
        };
        let name_size = u32::try_from(name.len()).map_err(|_| too_big("name"))?;
        let data_size = u32::try_from(self.data.len()).map_err(|_| too_big("data"))?;
        let mut r = Vec::with_capacity(VAR_HEADER + name.len() + self.data.len() + 3);
        r.extend_from_slice(&START_ID.to_le_bytes());
        r.push(state);
        r.push(reserved);
        r.extend_from_slice(&self.attributes.to_le_bytes());
        r.extend_from_slice(&self.monotonic_count.to_le_bytes());
        r.extend_from_slice(&self.timestamp.to_bytes());
        r.extend_from_slice(&self.pubkey_index.to_le_bytes());
        r.extend_from_slice(&name_size.to_le_bytes());
        r.extend_from_slice(&data_size.to_le_bytes());
        r.extend_from_slice(&self.guid.to_bytes_le());
        r.extend_from_slice(&name);
        r.extend_from_slice(&self.data);
        Ok(r)
    }
}

#[derive(Clone, Debug)]
enum Record {
    Live {
        state: u8,
        reserved: u8,
        var: Variable,
    },
    /// A deleted or superseded record, verbatim (header through data, no padding).
    Dead(Vec<u8>),
}

/// An EDK2 authenticated variable store inside its firmware volume.
#[derive(Clone, Debug)]
pub struct VarStore {
    image: Vec<u8>,
    vars_start: usize,
    vars_end: usize,
    records: Vec<Record>,
}

fn u16at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(o..o.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(o..o.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(o..o.checked_add(8)?)?.try_into().ok()?,
    ))
}
fn guid_at(b: &[u8], o: usize) -> Option<Guid> {
    Some(Guid::from_bytes_le(
        b.get(o..o.checked_add(16)?)?.try_into().ok()?,
    ))
}
fn store_err(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::VarStore {
        field: field.into(),
        reason: reason.into(),
    }
}
fn align4(x: usize) -> usize {
    x.next_multiple_of(4)
}

/// Decodes a NUL-terminated UTF-16LE name that fills exactly `raw`.
fn decode_name(raw: &[u8], offset: usize) -> Result<String> {
    let field = format!("variable record at {offset:#x}: Name");
    if raw.len() < 2 || raw.len() % 2 != 0 {
        return Err(store_err(
            field,
            format!("NameSize {} is not a positive even number", raw.len()),
        ));
    }
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let nul = units.iter().position(|&u| u == 0);
    if nul != Some(units.len() - 1) || units.len() < 2 {
        return Err(store_err(
            field,
            "is not a non-empty UTF-16 string whose only NUL is its last character",
        ));
    }
    String::from_utf16(&units[..units.len() - 1])
        .map_err(|_| store_err(field, "is not valid UTF-16"))
}

impl VarStore {
    /// Parses a firmware volume holding an authenticated variable store (e.g.
    /// `OVMF_VARS_4M.fd`). See the module docs for what is checked.
    pub fn parse(image: &[u8]) -> Result<VarStore> {
        let fv = "firmware volume header";
        if image.len() < FV_FIXED_HEADER {
            return Err(store_err(
                fv,
                format!(
                    "truncated: {} bytes, need at least {FV_FIXED_HEADER:#x}",
                    image.len()
                ),
            ));
        }
        if &image[0x28..0x2c] != FV_SIGNATURE {
            return Err(store_err(
                format!("{fv}: Signature"),
                "is not \"_FVH\": not a firmware volume",
            ));
        }
        let fs_guid = guid_at(image, 0x10).unwrap_or_default();
        if fs_guid != guid::EFI_SYSTEM_NV_DATA_FV {
            return Err(store_err(
                format!("{fv}: FileSystemGuid"),
                format!(
                    "is {fs_guid}, expected gEfiSystemNvDataFvGuid {}: not a variable store volume",
                    guid::EFI_SYSTEM_NV_DATA_FV
                ),
            ));
        }
        let fv_length = u64at(image, 0x20).unwrap_or(0);
        if fv_length > image.len() as u64 {
            return Err(store_err(
                format!("{fv}: FvLength"),
                format!("{fv_length:#x} exceeds the file size {:#x}", image.len()),
            ));
        }
        let fv_length = fv_length as usize;
        let header_len = u16at(image, 0x30).unwrap_or(0) as usize;
        if header_len < FV_FIXED_HEADER + 8 || header_len % 2 != 0 || header_len > fv_length {
            return Err(store_err(
                format!("{fv}: HeaderLength"),
                format!(
                    "{header_len:#x} is not an even value in {:#x}..={fv_length:#x}",
                    FV_FIXED_HEADER + 8
                ),
            ));
        }
        let sum = image[..header_len].chunks_exact(2).fold(0u16, |a, c| {
            a.wrapping_add(u16::from_le_bytes([c[0], c[1]]))
        });
        if sum != 0 {
            return Err(store_err(
                format!("{fv}: Checksum"),
                format!("16-bit sum of the header is {sum:#06x}, expected 0"),
            ));
        }

        let s = header_len;
        let vs = "VARIABLE_STORE_HEADER";
        if s + STORE_HEADER > fv_length {
            return Err(store_err(vs, "truncated by the end of the firmware volume"));
        }
        let sig = guid_at(image, s).unwrap_or_default();
        if sig != guid::EFI_AUTHENTICATED_VARIABLE {
            let hint = if sig == guid::EFI_VARIABLE {
                "a non-authenticated store (gEfiVariableGuid), which cannot hold Secure Boot keys"
                    .to_owned()
            } else {
                format!("unknown store {sig}")
            };
            return Err(store_err(
                format!("{vs}: Signature"),
                format!(
                    "expected gEfiAuthenticatedVariableGuid {}, found {hint}",
                    guid::EFI_AUTHENTICATED_VARIABLE
                ),
            ));
        }
        let size = u32at(image, s + 16).unwrap_or(0) as usize;
        if size < STORE_HEADER || s + size > fv_length {
            return Err(store_err(
                format!("{vs}: Size"),
                format!(
                    "{size:#x} is outside {STORE_HEADER:#x}..={:#x} (the firmware volume)",
                    fv_length - s
                ),
            ));
        }
        let format = image[s + 20];
        let state = image[s + 21];
        if format != STORE_FORMATTED {
            return Err(store_err(
                format!("{vs}: Format"),
                format!("is {format:#04x}, expected 0x5a (formatted)"),
            ));
        }
        if state != STORE_HEALTHY {
            return Err(store_err(
                format!("{vs}: State"),
                format!("is {state:#04x}, expected 0xfe (healthy)"),
            ));
        }
        let vars_start = align4(s + STORE_HEADER);
        let vars_end = s + size;

        // First pass: raw records.
        struct Raw {
            offset: usize,
            end: usize,
            state: u8,
            name: std::ops::Range<usize>,
            guid: Guid,
        }
        let mut raws = Vec::new();
        let mut pos = vars_start;
        while pos + 2 <= vars_end && u16at(image, pos) == Some(START_ID) {
            let field = format!("variable record at {pos:#x}");
            if pos + VAR_HEADER > vars_end {
                return Err(store_err(
                    field,
                    "header is truncated by the end of the store",
                ));
            }
            let name_size = u32at(image, pos + 36).unwrap_or(0) as usize;
            let data_size = u32at(image, pos + 40).unwrap_or(0) as usize;
            let name_start = pos + VAR_HEADER;
            let end = name_start
                .checked_add(name_size)
                .and_then(|x| x.checked_add(data_size))
                .filter(|&e| e <= vars_end)
                .ok_or_else(|| {
                    store_err(
                        field.clone(),
                        format!(
                            "NameSize {name_size} + DataSize {data_size} run past the end of the store at {vars_end:#x}"
                        ),
                    )
                })?;
            raws.push(Raw {
                offset: pos,
                end,
                state: image[pos + 2],
                name: name_start..name_start + name_size,
                guid: guid_at(image, pos + 44).unwrap_or_default(),
            });
            pos = align4(end);
        }

        // Liveness per EDK2: the first VAR_ADDED copy, else the first in-transition copy.
        const IN_TRANSITION: u8 = VAR_ADDED & VAR_IN_DELETED_TRANSITION;
        let same =
            |a: &Raw, b: &Raw| a.guid == b.guid && image[a.name.clone()] == image[b.name.clone()];
        let mut records = Vec::with_capacity(raws.len());
        for (i, r) in raws.iter().enumerate() {
            let live = match r.state {
                VAR_ADDED => !raws[..i].iter().any(|o| o.state == VAR_ADDED && same(o, r)),
                IN_TRANSITION => {
                    !raws.iter().any(|o| o.state == VAR_ADDED && same(o, r))
                        && !raws[..i]
                            .iter()
                            .any(|o| o.state == IN_TRANSITION && same(o, r))
                }
                _ => false,
            };
            if !live {
                records.push(Record::Dead(image[r.offset..r.end].to_vec()));
                continue;
            }
            let o = r.offset;
            let name = decode_name(&image[r.name.clone()], o)?;
            let ts: [u8; 16] = image[o + 16..o + 32].try_into().unwrap_or([0; 16]);
            records.push(Record::Live {
                state: r.state,
                reserved: image[o + 3],
                var: Variable {
                    name,
                    guid: r.guid,
                    attributes: u32at(image, o + 4).unwrap_or(0),
                    data: image[r.name.end..r.end].to_vec(),
                    timestamp: EfiTime::from_bytes(&ts),
                    monotonic_count: u64at(image, o + 8).unwrap_or(0),
                    pubkey_index: u32at(image, o + 32).unwrap_or(0),
                },
            });
        }
        Ok(VarStore {
            image: image.to_vec(),
            vars_start,
            vars_end,
            records,
        })
    }

    /// The live variables, in store order.
    pub fn vars(&self) -> impl Iterator<Item = &Variable> + '_ {
        self.records.iter().filter_map(|r| match r {
            Record::Live { var, .. } => Some(var),
            Record::Dead(_) => None,
        })
    }

    /// The live variable `name` under `guid`.
    pub fn get(&self, name: &str, guid: Guid) -> Option<&Variable> {
        self.vars().find(|v| v.name == name && v.guid == guid)
    }

    /// Number of dead (deleted or superseded) records still in the store.
    pub fn dead_records(&self) -> usize {
        self.records
            .iter()
            .filter(|r| matches!(r, Record::Dead(_)))
            .count()
    }

    /// Bytes available for variable records (the store minus its header).
    pub fn capacity(&self) -> usize {
        self.vars_end - self.vars_start
    }

    /// Drops dead records and marks every live one `VAR_ADDED`.
    pub fn compact(&mut self) {
        self.records.retain(|r| matches!(r, Record::Live { .. }));
        for r in &mut self.records {
            if let Record::Live { state, .. } = r {
                *state = VAR_ADDED;
            }
        }
    }

    /// Adds `var`, or replaces the live variable with the same name and GUID in place.
    /// Compacts the store first.
    pub fn set(&mut self, var: Variable) -> Result<()> {
        var.name_utf16()?;
        self.compact();
        for r in &mut self.records {
            if let Record::Live {
                var: v, reserved, ..
            } = r
            {
                if v.name == var.name && v.guid == var.guid {
                    *v = var;
                    *reserved = 0;
                    return Ok(());
                }
            }
        }
        self.records.push(Record::Live {
            state: VAR_ADDED,
            reserved: 0,
            var,
        });
        Ok(())
    }

    /// Deletes the live variable `name` under `guid`; returns whether it existed.
    /// Compacts the store first.
    pub fn delete(&mut self, name: &str, guid: Guid) -> bool {
        self.compact();
        let before = self.records.len();
        self.records.retain(|r| match r {
            Record::Live { var, .. } => !(var.name == name && var.guid == guid),
            Record::Dead(_) => true,
        });
        before != self.records.len()
    }

    /// The whole firmware volume (same size as parsed) with the current variables.
    /// Fails with [`Error::StoreFull`] if they do not fit.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut recs = Vec::new();
        for r in &self.records {
            match r {
                Record::Live {
                    state,
                    reserved,
                    var,
                } => recs.extend_from_slice(&var.encode(*state, *reserved)?),
                Record::Dead(raw) => recs.extend_from_slice(raw),
            }
            recs.resize(align4(recs.len()), 0xFF);
        }
        let available = self.capacity();
        if recs.len() > available {
            return Err(Error::StoreFull {
                needed: recs.len(),
                available,
            });
        }
        let mut out = self.image.clone();
        out[self.vars_start..self.vars_start + recs.len()].copy_from_slice(&recs);
        out[self.vars_start + recs.len()..self.vars_end].fill(0xFF);
        Ok(out)
    }
}

/// One `EFI_SIGNATURE_DATA`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureData {
    /// `SignatureOwner`.
    pub owner: Guid,
    /// The signature (certificate DER, hash, ...).
    pub data: Vec<u8>,
}

/// One `EFI_SIGNATURE_LIST`:
/// `{ SignatureType GUID, SignatureListSize u32, SignatureHeaderSize u32,
/// SignatureSize u32, header[SignatureHeaderSize], EFI_SIGNATURE_DATA[] }`, every
/// `EFI_SIGNATURE_DATA` being `SignatureSize` bytes (owner GUID + data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureList {
    /// `SignatureType` (e.g. [`guid::EFI_CERT_X509`]).
    pub signature_type: Guid,
    /// The type-specific header (empty for X.509 and SHA-256 lists).
    pub header: Vec<u8>,
    /// The entries; all must have the same data length.
    pub signatures: Vec<SignatureData>,
}

impl SignatureList {
    /// An `EFI_CERT_X509_GUID` list holding one DER certificate.
    pub fn x509(owner: Guid, cert_der: &[u8]) -> SignatureList {
        SignatureList {
            signature_type: guid::EFI_CERT_X509,
            header: Vec::new(),
            signatures: vec![SignatureData {
                owner,
                data: cert_der.to_vec(),
            }],
        }
    }

    /// An `EFI_CERT_SHA256_GUID` list holding one hash.
    pub fn sha256(owner: Guid, hash: [u8; 32]) -> SignatureList {
        SignatureList {
            signature_type: guid::EFI_CERT_SHA256,
            header: Vec::new(),
            signatures: vec![SignatureData {
                owner,
                data: hash.to_vec(),
            }],
        }
    }

    /// Encodes the list. Fails if the entries differ in size or sizes overflow u32.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let err = |reason: String| Error::SignatureList { offset: 0, reason };
        let data_len = self.signatures.first().map_or(0, |s| s.data.len());
        if self.signatures.iter().any(|s| s.data.len() != data_len) {
            return Err(err("entries of one list must have the same size".into()));
        }
        let sig_size = 16 + data_len;
        let total = 28 + self.header.len() + sig_size * self.signatures.len();
        let (total32, hdr32, sig32) = match (
            u32::try_from(total),
            u32::try_from(self.header.len()),
            u32::try_from(sig_size),
        ) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            _ => return Err(err("list is larger than 4 GiB".into())),
        };
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&self.signature_type.to_bytes_le());
        out.extend_from_slice(&total32.to_le_bytes());
        out.extend_from_slice(&hdr32.to_le_bytes());
        out.extend_from_slice(&sig32.to_le_bytes());
        out.extend_from_slice(&self.header);
        for s in &self.signatures {
            out.extend_from_slice(&s.owner.to_bytes_le());
            out.extend_from_slice(&s.data);
        }
        Ok(out)
    }

    /// Parses a signature database (the value of PK, KEK, db, dbx): a sequence of
    /// `EFI_SIGNATURE_LIST`s filling `data` exactly.
    pub fn parse_all(data: &[u8]) -> Result<Vec<SignatureList>> {
        let mut out = Vec::new();
        let mut off = 0usize;
        while off < data.len() {
            let err = |reason: String| Error::SignatureList {
                offset: off,
                reason,
            };
            let rest = &data[off..];
            if rest.len() < 28 {
                return Err(err(format!("truncated header ({} bytes left)", rest.len())));
            }
            let signature_type = guid_at(rest, 0).unwrap_or_default();
            let list_size = u32at(rest, 16).unwrap_or(0) as usize;
            let header_size = u32at(rest, 20).unwrap_or(0) as usize;
            let sig_size = u32at(rest, 24).unwrap_or(0) as usize;
            if list_size > rest.len() || list_size < 28 {
                return Err(err(format!(
                    "SignatureListSize {list_size} is outside 28..={}",
                    rest.len()
                )));
            }
            let body = list_size - 28;
            if header_size > body {
                return Err(err(format!(
                    "SignatureHeaderSize {header_size} exceeds the list body ({body} bytes)"
                )));
            }
            let sigs_len = body - header_size;
            if sig_size < 16 || sigs_len % sig_size != 0 {
                return Err(err(format!(
                    "SignatureSize {sig_size} is below 16 or does not divide the {sigs_len} bytes of entries"
                )));
            }
            let header = rest[28..28 + header_size].to_vec();
            let signatures = rest[28 + header_size..list_size]
                .chunks_exact(sig_size)
                .map(|c| SignatureData {
                    owner: guid_at(c, 0).unwrap_or_default(),
                    data: c[16..].to_vec(),
                })
                .collect();
            out.push(SignatureList {
                signature_type,
                header,
                signatures,
            });
            off += list_size;
        }
        Ok(out)
    }
}

/// `EFI_SIGNATURE_DATA` = owner GUID (on-disk layout) + certificate DER. OVMF measures
/// exactly these bytes (inside [`uefi_variable_data`] for variable `db`) as the
/// `EV_EFI_VARIABLE_AUTHORITY` event in PCR 7 when a db certificate verifies an image.
pub fn signature_data(owner: Guid, cert_der: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + cert_der.len());
    v.extend_from_slice(&owner.to_bytes_le());
    v.extend_from_slice(cert_der);
    v
}

/// The TCG `UEFI_VARIABLE_DATA` structure that firmware hashes for
/// `EV_EFI_VARIABLE_DRIVER_CONFIG` (SecureBoot, PK, KEK, db, dbx) and
/// `EV_EFI_VARIABLE_AUTHORITY` events:
/// `{ VariableName GUID (on-disk layout), UnicodeNameLength u64 (characters, no NUL),
/// VariableDataLength u64, UnicodeName (UTF-16LE, no NUL), VariableData }`.
pub fn uefi_variable_data(name: &str, guid: Guid, data: &[u8]) -> Vec<u8> {
    let name16: Vec<u16> = name.encode_utf16().collect();
    let mut v = Vec::with_capacity(32 + name16.len() * 2 + data.len());
    v.extend_from_slice(&guid.to_bytes_le());
    v.extend_from_slice(&(name16.len() as u64).to_le_bytes());
    v.extend_from_slice(&(data.len() as u64).to_le_bytes());
    for u in name16 {
        v.extend_from_slice(&u.to_le_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// The dbx [`enroll`] writes when the template has none, as virt-firmware's
/// `virt-fw-vars --secure-boot` does: one `EFI_CERT_SHA256_GUID` list holding
/// SHA-256("") owned by [`guid::OVMF_ENROLL_DEFAULT_KEYS`]. It revokes nothing (no
/// image hashes to the empty string's hash) but makes dbx exist, which some OS tools
/// and firmware paths expect.
pub fn dummy_dbx() -> SignatureList {
    SignatureList::sha256(guid::OVMF_ENROLL_DEFAULT_KEYS, Sha256::digest(b"").into())
}

/// Enrolls `cert_der` offline into an EDK2 variable store template (e.g. Debian's
/// `OVMF_VARS_4M.fd`), like `virt-fw-vars --set-pk/--add-kek/--add-db ... --secure-boot`:
///
/// * `PK`, `KEK` (under `EFI_GLOBAL_VARIABLE`) and `db` (under
///   `EFI_IMAGE_SECURITY_DATABASE`) are **replaced** by one `EFI_CERT_X509_GUID` list
///   holding the certificate, owned by `owner`;
/// * `dbx` is kept if the template has one, otherwise it becomes [`dummy_dbx`];
/// * these four get attributes NV|BS|RT|TIME_BASED_AUTHENTICATED_WRITE_ACCESS (0x27)
///   and the fixed timestamp [`ENROLL_TIMESTAMP`];
/// * `SecureBootEnable` = 1 (`gEfiSecureBootEnableDisableGuid`) and `CustomMode` = 0
///   (`EFI_CUSTOM_MODE_ENABLE_GUID`), attributes NV|BS, zero timestamp.
///
/// With PK present the firmware starts in user mode with Secure Boot enforced. The
/// output depends only on the inputs.
pub fn enroll(template: &[u8], cert_der: &[u8], owner: Guid) -> Result<Vec<u8>> {
    Certificate::from_der(cert_der)?;
    let mut store = VarStore::parse(template)?;
    let list = SignatureList::x509(owner, cert_der).to_bytes()?;
    let db_var = |name: &str, guid: Guid, data: Vec<u8>| Variable {
        timestamp: ENROLL_TIMESTAMP,
        ..Variable::new(name, guid, SECURE_BOOT_DB_ATTRIBUTES, data)
    };
    store.set(db_var("PK", guid::EFI_GLOBAL_VARIABLE, list.clone()))?;
    store.set(db_var("KEK", guid::EFI_GLOBAL_VARIABLE, list.clone()))?;
    store.set(db_var("db", guid::EFI_IMAGE_SECURITY_DATABASE, list))?;
    if store
        .get("dbx", guid::EFI_IMAGE_SECURITY_DATABASE)
        .is_none()
    {
        store.set(db_var(
            "dbx",
            guid::EFI_IMAGE_SECURITY_DATABASE,
            dummy_dbx().to_bytes()?,
        ))?;
    }
    store.set(Variable::new(
        "SecureBootEnable",
        guid::EFI_SECURE_BOOT_ENABLE_DISABLE,
        EDK2_SETTING_ATTRIBUTES,
        vec![1],
    ))?;
    store.set(Variable::new(
        "CustomMode",
        guid::EFI_CUSTOM_MODE_ENABLE,
        EDK2_SETTING_ATTRIBUTES,
        vec![0],
    ))?;
    store.to_bytes()
}

/// The Secure Boot variables' contents after [`enroll`] into a template
/// without a `dbx` (such as Debian's `OVMF_VARS_4M.fd`): what the firmware
/// measures into PCR 7, and the `db` entry it logs as the authority that
/// verified an image signed with this certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrolledVariables {
    /// `PK` data.
    pub pk: Vec<u8>,
    /// `KEK` data.
    pub kek: Vec<u8>,
    /// `db` data.
    pub db: Vec<u8>,
    /// `dbx` data ([`dummy_dbx`]).
    pub dbx: Vec<u8>,
    /// EFI_SIGNATURE_DATA of the certificate in `db` ([`signature_data`]).
    pub authority: Vec<u8>,
}

/// See [`EnrolledVariables`].
pub fn enrolled_variables(cert_der: &[u8], owner: Guid) -> Result<EnrolledVariables> {
    Certificate::from_der(cert_der)?;
    let list = SignatureList::x509(owner, cert_der).to_bytes()?;
    Ok(EnrolledVariables {
        pk: list.clone(),
        kek: list.clone(),
        db: list,
        dbx: dummy_dbx().to_bytes()?,
        authority: signature_data(owner, cert_der),
    })
}
