//! EFI GUIDs.
//!
//! A [`Guid`] is held in text order (the order of the hex digits in
//! `8be4df61-93ca-11d2-aa0d-00e098032b8c`). On disk, `EFI_GUID` is
//! `{ UINT32 Data1; UINT16 Data2; UINT16 Data3; UINT8 Data4[8]; }` in little-endian
//! byte order, so the first three groups are byte-swapped ("mixed endian"); see
//! [`Guid::to_bytes_le`] / [`Guid::from_bytes_le`].

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A GUID in text (big-endian) byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid([u8; 16]);

impl Guid {
    /// The all-zero GUID.
    pub const NIL: Guid = Guid([0; 16]);

    /// Builds a GUID from the `EFI_GUID` fields, as written in EDK2 headers.
    pub const fn from_fields(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> Guid {
        let a = data1.to_be_bytes();
        let b = data2.to_be_bytes();
        let c = data3.to_be_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], data4[0], data4[1], data4[2], data4[3],
            data4[4], data4[5], data4[6], data4[7],
        ])
    }

    /// From bytes in text order.
    pub const fn from_bytes(b: [u8; 16]) -> Guid {
        Guid(b)
    }

    /// The bytes in text order.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// From the on-disk `EFI_GUID` layout (mixed endian).
    pub const fn from_bytes_le(b: [u8; 16]) -> Guid {
        Guid([
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ])
    }

    /// The on-disk `EFI_GUID` layout (mixed endian).
    pub const fn to_bytes_le(&self) -> [u8; 16] {
        // The swap is an involution.
        Guid::from_bytes_le(self.0).0
    }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (case-insensitive, optionally in
    /// braces).
    pub fn parse(s: &str) -> Result<Guid, Error> {
        let err = || Error::Guid(s.to_owned());
        let t = s
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(s);
        let b = t.as_bytes();
        if b.len() != 36 {
            return Err(err());
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b[i] != b'-' {
                    return Err(err());
                }
                i += 1;
                continue;
            }
            let hi = (b[i] as char).to_digit(16).ok_or_else(err)?;
            let lo = (b[i + 1] as char).to_digit(16).ok_or_else(err)?;
            out[n] = (hi * 16 + lo) as u8;
            n += 1;
            i += 2;
        }
        Ok(Guid(out))
    }
}

impl FromStr for Guid {
    type Err = Error;
    fn from_str(s: &str) -> Result<Guid, Error> {
        Guid::parse(s)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// `EFI_GLOBAL_VARIABLE` (PK, KEK, SecureBoot, SetupMode, ...).
pub const EFI_GLOBAL_VARIABLE: Guid = Guid::from_fields(
    0x8be4df61,
    0x93ca,
    0x11d2,
    [0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c],
);
/// `EFI_IMAGE_SECURITY_DATABASE_GUID` (db, dbx, dbt).
pub const EFI_IMAGE_SECURITY_DATABASE: Guid = Guid::from_fields(
    0xd719b2cb,
    0x3d3a,
    0x4596,
    [0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f],
);
/// `gEfiSecureBootEnableDisableGuid` (EDK2's `SecureBootEnable`).
pub const EFI_SECURE_BOOT_ENABLE_DISABLE: Guid = Guid::from_fields(
    0xf0a30bc7,
    0xaf08,
    0x4556,
    [0x99, 0xc4, 0x00, 0x10, 0x09, 0xc9, 0x3a, 0x44],
);
/// `EFI_CUSTOM_MODE_ENABLE_GUID` (EDK2's `CustomMode`).
pub const EFI_CUSTOM_MODE_ENABLE: Guid = Guid::from_fields(
    0xc076ec0c,
    0x7028,
    0x4399,
    [0xa0, 0x72, 0x71, 0xee, 0x5c, 0x44, 0x8b, 0x9f],
);
/// `EFI_CERT_X509_GUID` (signature list of DER X.509 certificates).
pub const EFI_CERT_X509: Guid = Guid::from_fields(
    0xa5c059a1,
    0x94e4,
    0x4aa7,
    [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72],
);
/// `EFI_CERT_SHA256_GUID` (signature list of SHA-256 hashes).
pub const EFI_CERT_SHA256: Guid = Guid::from_fields(
    0xc1c41626,
    0x504c,
    0x4092,
    [0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28],
);
/// `gEfiSystemNvDataFvGuid`: file system GUID of the non-volatile variable FV.
pub const EFI_SYSTEM_NV_DATA_FV: Guid = Guid::from_fields(
    0xfff12b8d,
    0x7696,
    0x4c8b,
    [0xa9, 0x85, 0x27, 0x47, 0x07, 0x5b, 0x4f, 0x50],
);
/// `gEfiAuthenticatedVariableGuid`: signature of an authenticated variable store.
pub const EFI_AUTHENTICATED_VARIABLE: Guid = Guid::from_fields(
    0xaaf32c78,
    0x947b,
    0x439a,
    [0xa1, 0x80, 0x2e, 0x14, 0x4e, 0xc3, 0x77, 0x92],
);
/// `gEfiVariableGuid`: signature of a (non-authenticated) variable store.
pub const EFI_VARIABLE: Guid = Guid::from_fields(
    0xddcf3616,
    0x3275,
    0x4164,
    [0x98, 0xb6, 0xfe, 0x85, 0x70, 0x7f, 0xfe, 0x7d],
);
/// OVMF's `EnrollDefaultKeys` owner GUID; virt-firmware uses it for its dummy dbx
/// entry.
pub const OVMF_ENROLL_DEFAULT_KEYS: Guid = Guid::from_fields(
    0xa0baa8a3,
    0x041d,
    0x48a8,
    [0xbc, 0x87, 0xc3, 0x6d, 0x12, 0x1b, 0x5e, 0x3d],
);
/// Microsoft's signature owner GUID.
pub const MICROSOFT_VENDOR: Guid = Guid::from_fields(
    0x77fa9abd,
    0x0359,
    0x4d32,
    [0xbd, 0x60, 0x28, 0xf4, 0xe7, 0x8f, 0x78, 0x4b],
);

/// Signature owner of the certificates the appliance tooling enrolls
/// (`appliance secure-boot enroll`); part of the PCR 7 prediction, so it is fixed.
pub const APPLIANCE_OWNER: Guid = Guid::from_fields(
    0x5a6c_0b1e,
    0x7f0d,
    0x4e53,
    [0x9c, 0x2a, 0x61, 0x70, 0x70, 0x6c, 0x69, 0x63],
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_disk_forms() {
        let g = Guid::parse("8BE4DF61-93CA-11d2-AA0D-00E098032B8C").unwrap();
        assert_eq!(g, EFI_GLOBAL_VARIABLE);
        assert_eq!(g.to_string(), "8be4df61-93ca-11d2-aa0d-00e098032b8c");
        assert_eq!(
            g.to_bytes_le(),
            [
                0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03,
                0x2b, 0x8c
            ]
        );
        assert_eq!(Guid::from_bytes_le(g.to_bytes_le()), g);
        assert_eq!(
            "{a5c059a1-94e4-4aa7-87b5-ab155c2bf072}"
                .parse::<Guid>()
                .unwrap(),
            EFI_CERT_X509
        );
        for bad in [
            "",
            "8be4df61-93ca-11d2-aa0d-00e098032b8",
            "8be4df61x93ca-11d2-aa0d-00e098032b8c",
            "8be4df61-93ca-11d2-aa0d-00e098032b8g",
            "8be4df61-93ca-11d2-aa0d-00e098032b8ç",
        ] {
            assert!(Guid::parse(bad).is_err(), "{bad}");
        }
    }
}
