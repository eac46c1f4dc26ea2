//! The appliance's A/B disk layout (see `images/README.md` for the rationale).
//!
//! ```text
//! GPT disk
//! ├── 1: "ESP" (EFI System Partition, FAT32)
//! │   ├── EFI/BOOT/BOOTX64.EFI          copy of the active slot's UKI (firmware default path)
//! │   ├── EFI/Linux/appliance-a.efi     slot A UKI
//! │   └── EFI/Linux/appliance-b.efi     slot B UKI (absent until the first update)
//! └── 2: "appliance-state" (optional; Linux /var type, left zero: the gateway
//!        formats it on first boot and keeps its TPM-sealed identity there)
//! ```
//!
//! All identifiers derive from one digest (e.g. of the manifest inputs) through
//! [`DiskIds::derive`]. Nothing here panics.

use std::path::Path;

use crate::fat::{FatBuilder, FatParams};
use crate::gpt::{type_guid, GptBuilder, PartitionSpec};
use crate::{guid_from_digest, ByteLen, Content, Epoch, Guid, Result};

/// Path the firmware boots without any boot entry (removable-media path, x86-64).
pub const DEFAULT_BOOT_PATH: &str = "EFI/BOOT/BOOTX64.EFI";

/// An update slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    /// Slot A.
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// Where this slot's UKI lives on the ESP.
    pub fn uki_path(self) -> &'static str {
        match self {
            Slot::A => "EFI/Linux/appliance-a.efi",
            Slot::B => "EFI/Linux/appliance-b.efi",
        }
    }

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

/// Every identifier of an appliance disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskIds {
    /// GPT disk GUID.
    pub disk: Guid,
    /// ESP unique partition GUID.
    pub esp: Guid,
    /// State partition unique GUID.
    pub state: Guid,
    /// FAT volume serial number of the ESP.
    pub esp_volume_id: u32,
}

impl DiskIds {
    /// Derives all identifiers from one digest with distinct labels
    /// (`appliance-disk`, `appliance-esp`, `appliance-state`, `appliance-esp-volume`).
    pub fn derive(digest: &[u8; 32]) -> DiskIds {
        let vol = guid_from_digest(digest, "appliance-esp-volume").0;
        DiskIds {
            disk: guid_from_digest(digest, "appliance-disk"),
            esp: guid_from_digest(digest, "appliance-esp"),
            state: guid_from_digest(digest, "appliance-state"),
            esp_volume_id: u32::from_le_bytes([vol[0], vol[1], vol[2], vol[3]]),
        }
    }
}

/// What goes on an appliance disk.
#[derive(Clone, Debug)]
pub struct ApplianceLayout {
    /// Identifiers.
    pub ids: DiskIds,
    /// ESP size (at least [`crate::fat::min_fat32_size`]; a multiple of 1 MiB).
    pub esp_size: ByteLen,
    /// Size of the state partition; `None` for no state partition.
    pub state_size: Option<ByteLen>,
    /// Timestamp of the ESP's files (SOURCE_DATE_EPOCH).
    pub timestamp: Epoch,
    /// Slot booted by default (copied to [`DEFAULT_BOOT_PATH`]).
    pub active: Slot,
    /// UKI of slot A.
    pub uki_a: Option<Content>,
    /// UKI of slot B.
    pub uki_b: Option<Content>,
}

impl ApplianceLayout {
    fn uki(&self, s: Slot) -> Option<&Content> {
        match s {
            Slot::A => self.uki_a.as_ref(),
            Slot::B => self.uki_b.as_ref(),
        }
    }

    /// The ESP file system. Fails if the active slot has no UKI.
    pub fn esp(&self) -> Result<FatBuilder> {
        let mut fat = FatBuilder::new(FatParams {
            size: self.esp_size,
            volume_id: self.ids.esp_volume_id,
            label: Some("APPLIANCE".into()),
            timestamp: self.timestamp,
            hidden_sectors: (crate::gpt::ALIGNMENT.0 / crate::SECTOR_SIZE) as u32,
        })?;
        let active = self.uki(self.active).ok_or_else(|| {
            crate::Error::GptLayout(format!(
                "the active slot {:?} has no UKI; give one or make the other slot active",
                self.active
            ))
        })?;
        fat.add_file(DEFAULT_BOOT_PATH, active.clone())?;
        for s in [Slot::A, Slot::B] {
            if let Some(u) = self.uki(s) {
                fat.add_file(s.uki_path(), u.clone())?;
            }
        }
        Ok(fat)
    }

    /// Writes the ESP to `esp_image` and returns the GPT builder for the disk, whose
    /// first partition is that ESP (at 1 MiB, matching the ESP's `HiddSec`).
    pub fn disk(&self, esp_image: &Path) -> Result<GptBuilder> {
        self.esp()?.write_file(esp_image)?;
        self.gpt(Content::File(esp_image.to_owned()))
    }

    /// The GPT builder for the disk whose first partition holds `esp` (the
    /// bytes of [`ApplianceLayout::esp`], in memory or in a file).
    pub fn gpt(&self, esp: Content) -> Result<GptBuilder> {
        let mut gpt = GptBuilder::new(self.ids.disk);
        gpt.add_partition(PartitionSpec {
            name: "ESP".into(),
            type_guid: type_guid::ESP,
            unique_guid: self.ids.esp,
            size: self.esp_size,
            attributes: 0,
            content: Some(esp),
        })?;
        if let Some(size) = self.state_size {
            gpt.add_partition(PartitionSpec {
                name: "appliance-state".into(),
                type_guid: type_guid::LINUX_VAR,
                unique_guid: self.ids.state,
                size,
                attributes: 0,
                content: None,
            })?;
        }
        Ok(gpt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fat::FatVolume;
    use crate::gpt::read_gpt_file;

    #[test]
    fn appliance_disk_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let ids = DiskIds::derive(&[3u8; 32]);
        assert_eq!(ids, DiskIds::derive(&[3u8; 32]));
        assert_ne!(ids.disk, ids.esp);
        let layout = ApplianceLayout {
            ids,
            esp_size: ByteLen::mib(40),
            state_size: Some(ByteLen::mib(4)),
            timestamp: Epoch(1_700_000_000),
            active: Slot::B,
            uki_a: Some(vec![0xA; 1000].into()),
            uki_b: Some(vec![0xB; 2000].into()),
        };
        let gpt = layout.disk(&dir.path().join("esp.img")).unwrap();
        let img = dir.path().join("disk.img");
        gpt.write_file(&img).unwrap();
        let disk = read_gpt_file(&img).unwrap();
        assert_eq!(disk.disk_guid, ids.disk);
        assert_eq!(disk.partitions.len(), 2);
        let bytes = std::fs::read(&img).unwrap();
        let p = &disk.partitions[0];
        let esp =
            FatVolume::parse(&bytes[p.offset().0 as usize..(p.offset().0 + p.size().0) as usize])
                .unwrap();
        assert_eq!(esp.volume_id(), ids.esp_volume_id);
        assert_eq!(esp.read_file(DEFAULT_BOOT_PATH).unwrap(), vec![0xB; 2000]);
        assert_eq!(esp.read_file(Slot::A.uki_path()).unwrap(), vec![0xA; 1000]);
        assert_eq!(Slot::A.other(), Slot::B);

        let mut missing = layout.clone();
        missing.uki_b = None;
        assert!(missing.esp().is_err());
    }
}
