//! The appliance's disk layout (see `images/README.md` for the rationale).
//!
//! ```text
//! GPT disk
//! ├── 1: "ESP" (EFI System Partition, FAT32)
//! │   ├── EFI/BOOT/BOOTX64.EFI          systemd-boot (the firmware's default path)
//! │   ├── loader/loader.conf            locked down: no menu wait, no editor, no other entries
//! │   └── EFI/Linux/NAME_VERSION.efi    the UKI; an update adds NAME_VERSION+TRIES.efi
//! └── 2: "appliance-state" (optional; Linux /var type, left zero: the gateway
//!        formats it on first boot and keeps its TPM-sealed identity there)
//! ```
//!
//! systemd-boot boots the newest UKI with tries left: its entries sort by
//! `IMAGE_ID`, then `IMAGE_VERSION` (newest first), and an entry whose
//! boot-counter suffix says no tries are left (`+0-N`) sorts last. A freshly
//! written image's UKI carries no counter (it is the only one: known good);
//! an update writes the next version as `NAME_VERSION+TRIES.efi`, which
//! systemd-boot renames on every attempt (`+2-1`, `+1-2`, …) and the gateway
//! renames to `NAME_VERSION.efi` once the boot is good (the two update slots
//! are the two UKIs an ESP keeps).
//!
//! All identifiers derive from one digest (e.g. of the manifest inputs) through
//! [`DiskIds::derive`]. Nothing here panics.

use std::path::Path;

use crate::fat::{FatBuilder, FatParams};
use crate::gpt::{type_guid, GptBuilder, PartitionSpec};
use crate::{guid_from_digest, ByteLen, Content, Epoch, Guid, Result};

/// Path the firmware boots without any boot entry (removable-media path, x86-64).
pub const DEFAULT_BOOT_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
/// systemd-boot's configuration.
pub const LOADER_CONF_PATH: &str = "loader/loader.conf";
/// Where systemd-boot finds UKIs (type #2 entries).
pub const LINUX_DIR: &str = "EFI/Linux";

/// systemd-boot's configuration for an appliance: boot the default entry at
/// once (a key pressed within 100 ms still opens the menu: the console is an
/// adversary, see the threat model), never edit a command line, offer no
/// firmware, shell or foreign entries, never enroll Secure Boot keys, never
/// write a random seed to the ESP.
pub const LOADER_CONF: &str = "\
timeout 0
editor no
auto-entries no
auto-firmware no
secure-boot-enroll off
random-seed-mode off
console-mode keep
";

/// The ESP file name of an appliance's UKI: `NAME_VERSION.efi`, or with a
/// boot counter `NAME_VERSION+TRIES.efi` (an update on trial).
pub fn uki_file_name(name: &str, version: &str, tries: Option<u32>) -> String {
    match tries {
        Some(t) => format!("{name}_{version}+{t}.efi"),
        None => format!("{name}_{version}.efi"),
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
    /// The boot loader (systemd-boot), at [`DEFAULT_BOOT_PATH`].
    pub boot_loader: Content,
    /// The UKIs: file name in [`LINUX_DIR`] and contents.
    pub ukis: Vec<(String, Content)>,
    /// Free space the ESP must keep for an update's UKI.
    pub reserve: ByteLen,
}

impl ApplianceLayout {
    /// The ESP file system. Fails if there is no UKI, or the files and the
    /// reserve do not fit.
    pub fn esp(&self) -> Result<FatBuilder> {
        let mut fat = FatBuilder::new(FatParams {
            size: self.esp_size,
            volume_id: self.ids.esp_volume_id,
            label: Some("APPLIANCE".into()),
            timestamp: self.timestamp,
            hidden_sectors: (crate::gpt::ALIGNMENT.0 / crate::SECTOR_SIZE) as u32,
        })?;
        if self.ukis.is_empty() {
            return Err(crate::Error::GptLayout(
                "an appliance ESP needs at least one UKI".into(),
            ));
        }
        fat.add_file(DEFAULT_BOOT_PATH, self.boot_loader.clone())?;
        fat.add_file(LOADER_CONF_PATH, LOADER_CONF.as_bytes().to_vec())?;
        for (name, uki) in &self.ukis {
            fat.add_file(&format!("{LINUX_DIR}/{name}"), uki.clone())?;
        }
        fat.check_room(self.reserve)?;
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

    fn layout() -> ApplianceLayout {
        ApplianceLayout {
            ids: DiskIds::derive(&[3u8; 32]),
            esp_size: ByteLen::mib(40),
            state_size: Some(ByteLen::mib(4)),
            timestamp: Epoch(1_700_000_000),
            boot_loader: vec![0xB; 2000].into(),
            ukis: vec![(uki_file_name("gw", "1.0", None), vec![0xA; 1000].into())],
            reserve: ByteLen(1000),
        }
    }

    #[test]
    fn appliance_disk_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let layout = layout();
        let ids = layout.ids;
        assert_eq!(ids, DiskIds::derive(&[3u8; 32]));
        assert_ne!(ids.disk, ids.esp);
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
        assert_eq!(
            esp.read_file(LOADER_CONF_PATH).unwrap(),
            LOADER_CONF.as_bytes()
        );
        assert_eq!(
            esp.read_file("EFI/Linux/gw_1.0.efi").unwrap(),
            vec![0xA; 1000]
        );
        let mut none = layout.clone();
        none.ukis.clear();
        assert!(none.esp().is_err());
    }

    #[test]
    fn the_reserve_for_an_update_must_fit() {
        let mut l = layout();
        l.reserve = ByteLen::mib(40);
        match l.esp() {
            Err(crate::Error::FatDoesNotFit { suggested_size, .. }) => {
                assert!(suggested_size > ByteLen::mib(40).0, "{suggested_size}")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("40 MiB of reserve fit a 40 MiB ESP"),
        }
    }

    #[test]
    fn boot_counted_names() {
        assert_eq!(uki_file_name("gw-a", "0.2.0", Some(3)), "gw-a_0.2.0+3.efi");
        assert_eq!(uki_file_name("gw-a", "0.2.0", None), "gw-a_0.2.0.efi");
    }
}
