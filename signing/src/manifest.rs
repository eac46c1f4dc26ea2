//! `manifest.json`: every input and output digest of a build. It is the
//! document that gets signed; its field order is fixed by these structs, so
//! the same build gives the same bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Manifest format version. 2 added the build epoch, the ESP's files, the
/// predicted PCRs and the Secure Boot signer; 3 the boot loader
/// (systemd-boot) and PCR 12.
pub const FORMAT: u32 = 3;

/// The manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The profile.
    pub profile: ProfileInfo,
    /// The lock file.
    pub lock: LockInfo,
    /// The compiled policy blob.
    pub policy: Digested,
    /// The runtime plan (its digest is on the kernel command line).
    pub plan: Digested,
    /// Every package, by group.
    pub components: Vec<Component>,
    /// The kernel.
    pub kernel: KernelInfo,
    /// Gateway binaries (name → SHA-256).
    pub binaries: BTreeMap<String, String>,
    /// The initramfs.
    pub initramfs: Digested,
    /// The UKI.
    pub uki: UkiInfo,
    /// The boot loader the firmware starts (systemd-boot), when the image
    /// has one; it starts the UKI.
    pub boot_loader: Option<BootLoaderInfo>,
    /// The ESP file system.
    pub esp: EspInfo,
    /// The disk.
    pub disk: DiskInfo,
    /// SOURCE_DATE_EPOCH of the build: every timestamp in the image.
    pub build_epoch: u64,
    /// Predicted PCR values (SHA-256 bank) for a measured boot of this image.
    pub pcrs: PcrSummary,
    /// The Secure Boot signer of the UKI, if it is signed.
    pub secure_boot: Option<SecureBootInfo>,
    /// Files in the output directory (name → SHA-256), except the manifest
    /// and its signature.
    pub outputs: BTreeMap<String, String>,
}

impl Manifest {
    /// Parse `manifest.json` (unknown fields and other formats are refused).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Probe {
            format: u32,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if probe.format != FORMAT {
            return Err(format!(
                "manifest format {} is not supported (this tool reads format {FORMAT})",
                probe.format
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// Canonical JSON (pretty, fixed field order, trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serialises");
        v.push(b'\n');
        v
    }
}

/// The ESP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EspInfo {
    /// SHA-256 of the file system image (the ESP partition's bytes).
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// Files on the ESP (path → SHA-256).
    pub files: BTreeMap<String, String>,
}

/// Predicted PCRs, hex SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcrSummary {
    /// PCR 4 with Secure Boot off: boot path (the firmware's measurement of
    /// the UKI and of the kernel systemd-stub starts).
    pub pcr4: String,
    /// PCR 4 with Secure Boot on (signed UKIs): the UKI only.
    pub pcr4_secure_boot_on: Option<String>,
    /// PCR 7 with Secure Boot off (no keys enrolled).
    pub pcr7_secure_boot_off: String,
    /// PCR 7 with Secure Boot on and our certificate enrolled (signed UKIs only).
    pub pcr7_secure_boot_on: Option<String>,
    /// PCR 11: systemd-stub's measurement of the UKI sections.
    pub pcr11: String,
    /// PCR 12 with Secure Boot off: the command line systemd-boot passes,
    /// measured by it and by systemd-stub.
    pub pcr12: String,
    /// PCR 12 with Secure Boot on (signed UKIs): systemd-boot's measurement only.
    pub pcr12_secure_boot_on: Option<String>,
}

/// Who signed the UKI for Secure Boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureBootInfo {
    /// SHA-256 of the signer certificate (DER).
    pub certificate_sha256: String,
    /// Subject of the signer certificate.
    pub subject: String,
}

/// Profile identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileInfo {
    /// Appliance name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Anti-rollback counter.
    pub security_version: u64,
    /// Lab profile (may carry test keys).
    pub lab: bool,
    /// SHA-256 over the SHA-256 of each profile source file.
    pub sha256: String,
}

/// Lock identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockInfo {
    /// SHA-256 of the lock's canonical form.
    pub sha256: String,
    /// Timestamp of every file in the image.
    pub source_date_epoch: u64,
}

/// A digest and a size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digested {
    /// SHA-256, hex.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

/// One package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Lock group.
    pub group: String,
    /// Package.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture.
    pub architecture: String,
    /// SHA-256 of the .deb.
    pub sha256: String,
}

/// The kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelInfo {
    /// `uname -r`.
    pub version: String,
    /// Package it came from.
    pub package: String,
    /// SHA-256 of the kernel image.
    pub image_sha256: String,
    /// Module files in load order.
    pub modules: Vec<String>,
}

/// The UKI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UkiInfo {
    /// SHA-256 of the file.
    pub sha256: String,
    /// Authenticode digest (what firmware measures into PCR 4).
    pub authenticode_sha256: String,
    /// Bytes.
    pub size: u64,
    /// Kernel command line.
    pub cmdline: String,
    /// Sections added to the stub.
    pub sections: Vec<Section>,
}

/// The boot loader on the ESP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootLoaderInfo {
    /// The package it comes from, and its version.
    pub package: String,
    /// Where it is on the ESP.
    pub path: String,
    /// SHA-256 of the file (signed for Secure Boot when the UKI is).
    pub sha256: String,
    /// Authenticode digest (what firmware measures into PCR 4).
    pub authenticode_sha256: String,
    /// The UKI's file name on the ESP (`EFI/Linux/…`).
    pub uki_path: String,
}

/// A UKI section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// `.linux`, …
    pub name: String,
    /// Virtual size.
    pub size: u64,
    /// SHA-256 of the section's contents (virtual size).
    pub sha256: String,
}

/// The disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskInfo {
    /// SHA-256 of `disk.img`.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// GPT disk GUID.
    pub guid: String,
    /// Partitions.
    pub partitions: Vec<Partition>,
}

/// A GPT partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// 1-based number.
    pub number: u32,
    /// Name.
    pub name: String,
    /// Type GUID.
    pub type_guid: String,
    /// Unique GUID.
    pub guid: String,
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
    /// SHA-256 of the partition's bytes.
    pub sha256: String,
}
