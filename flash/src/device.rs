//! What the target device is, and every reason not to flash it.
//!
//! Facts come from the kernel (`/sys/dev/block`, `/proc/self/mountinfo`,
//! `/proc/swaps`), from the device's own partition table, and from the boot
//! loader's `LoaderDevicePartUUID` EFI variable, which systemd-boot and
//! systemd-stub set to the unique GUID of the ESP they were loaded from. A
//! system running from RAM (as our gateways do) mounts nothing from its boot
//! disk, so only that variable tells which disk it is.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Refusal};
use crate::sys;

/// The vendor GUID of systemd-boot's variables.
const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// Where the system's facts are read. [`Host::system`] gives the real
/// places; tests point `efivars` elsewhere.
#[derive(Debug, Clone)]
pub struct Host {
    /// sysfs (`/sys`).
    pub sys: PathBuf,
    /// `/proc/self/mountinfo`.
    pub mountinfo: PathBuf,
    /// `/proc/swaps`.
    pub swaps: PathBuf,
    /// The EFI variables (`/sys/firmware/efi/efivars`).
    pub efivars: PathBuf,
    /// `/dev/disk/by-partuuid`.
    pub by_partuuid: PathBuf,
}

impl Host {
    /// The running system. `APPLIANCE_EFIVARS_DIR`, when set, names the
    /// directory to read the boot loader's variables from instead of
    /// `/sys/firmware/efi/efivars`.
    pub fn system() -> Host {
        Host {
            sys: "/sys".into(),
            mountinfo: "/proc/self/mountinfo".into(),
            swaps: "/proc/swaps".into(),
            efivars: std::env::var_os("APPLIANCE_EFIVARS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/sys/firmware/efi/efivars".into()),
            by_partuuid: "/dev/disk/by-partuuid".into(),
        }
    }

    /// The boot loader's `LoaderDevicePartUUID`, lower case, if set.
    pub fn boot_partuuid(&self) -> Option<String> {
        let raw = std::fs::read(
            self.efivars
                .join(format!("LoaderDevicePartUUID-{LOADER_GUID}")),
        )
        .ok()?;
        // 4 bytes of attributes, then UTF-16LE, NUL-terminated.
        let units: Vec<u16> = raw
            .get(4..)?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        let s = String::from_utf16(&units).ok()?.trim().to_ascii_lowercase();
        (s.len() == 36).then_some(s)
    }
}

/// A block device, as the kernel describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Target {
    /// The path given.
    pub path: PathBuf,
    /// Its kernel name (`sdb`, `loop3`, `nvme0n1`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Logical block size.
    pub logical_block_size: u32,
    /// Removable (the kernel's flag, or attached by USB).
    pub removable: bool,
    /// Model or backing file, for messages.
    pub description: String,
    #[serde(skip)]
    dev: (u32, u32),
    #[serde(skip)]
    partitions: Vec<(String, (u32, u32))>,
    #[serde(skip)]
    sysdir: PathBuf,
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn dev_of(dir: &Path) -> Option<(u32, u32)> {
    let s = read_trim(&dir.join("dev"))?;
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl Target {
    /// Looks `path` up in the kernel. Refuses what is not a whole block
    /// device.
    ///
    /// # Errors
    /// [`Error::Refused`] (not a block device, a partition) or
    /// [`Error::Inspect`].
    pub fn inspect(path: &Path, host: &Host) -> Result<Target, Error> {
        let inspect = |source: std::io::Error| Error::Inspect {
            device: path.to_path_buf(),
            source,
        };
        let refused = |reason: Refusal| Error::Refused {
            device: path.to_path_buf(),
            reason,
        };
        let md = std::fs::metadata(path).map_err(inspect)?;
        if !md.file_type().is_block_device() {
            return Err(refused(Refusal::NotBlockDevice));
        }
        let (maj, min) = sys::major_minor(md.rdev());
        let link = host.sys.join(format!("dev/block/{maj}:{min}"));
        let sysdir = std::fs::canonicalize(&link).map_err(inspect)?;
        if sysdir.join("partition").exists() {
            let disk = sysdir
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(refused(Refusal::Partition { disk }));
        }
        let name = sysdir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sectors: u64 = read_trim(&sysdir.join("size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let logical_block_size = read_trim(&sysdir.join("queue/logical_block_size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(512);
        let usb = sysdir.to_string_lossy().contains("/usb");
        let removable = usb || read_trim(&sysdir.join("removable")).as_deref() == Some("1");
        let mut description = [
            read_trim(&sysdir.join("device/vendor")),
            read_trim(&sysdir.join("device/model")),
            read_trim(&sysdir.join("loop/backing_file")).map(|f| format!("loop over {f}")),
            read_trim(&sysdir.join("dm/name")).map(|n| format!("device mapper {n}")),
        ]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
        if description.is_empty() {
            description = "no model given".into();
        }
        if usb {
            description.push_str(", USB");
        }
        let mut partitions = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&sysdir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.join("partition").exists() {
                    if let Some(d) = dev_of(&p) {
                        partitions.push((e.file_name().to_string_lossy().into_owned(), d));
                    }
                }
            }
        }
        partitions.sort();
        Ok(Target {
            path: path.to_path_buf(),
            name,
            size: sectors * 512,
            logical_block_size,
            removable,
            description,
            dev: (maj, min),
            partitions,
            sysdir,
        })
    }

    /// Every reason not to write an image of `image_size` bytes here, the
    /// first found. `yes` accepts a non-removable disk (nothing else).
    ///
    /// # Errors
    /// [`Error::Refused`] with the reason, or [`Error::Inspect`].
    pub fn check(&self, host: &Host, image_size: u64, yes: bool) -> Result<(), Error> {
        let refused = |reason: Refusal| Error::Refused {
            device: self.path.clone(),
            reason,
        };
        let inspect = |source: std::io::Error| Error::Inspect {
            device: self.path.clone(),
            source,
        };
        let mut devs: Vec<(String, (u32, u32), PathBuf)> =
            vec![(self.name.clone(), self.dev, self.sysdir.clone())];
        for (n, d) in &self.partitions {
            devs.push((n.clone(), *d, self.sysdir.join(n)));
        }
        // Mounted (any mount namespace we can see: ours).
        let mountinfo = std::fs::read_to_string(&host.mountinfo).map_err(inspect)?;
        for line in mountinfo.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let (Some(majmin), Some(mp)) = (f.get(2), f.get(4)) else {
                continue;
            };
            for (n, (a, b), _) in &devs {
                if *majmin == format!("{a}:{b}") {
                    return Err(refused(Refusal::Mounted {
                        what: format!("/dev/{n}"),
                        mountpoint: unescape(mp),
                    }));
                }
            }
        }
        // Held by device mapper, md, bcache.
        for (n, _, dir) in &devs {
            if let Ok(rd) = std::fs::read_dir(dir.join("holders")) {
                if let Some(h) = rd.flatten().next() {
                    return Err(refused(Refusal::Held {
                        what: format!("/dev/{n}"),
                        holder: h.file_name().to_string_lossy().into_owned(),
                    }));
                }
            }
        }
        // Swap.
        if let Ok(swaps) = std::fs::read_to_string(&host.swaps) {
            for line in swaps.lines().skip(1) {
                let Some(p) = line.split_whitespace().next() else {
                    continue;
                };
                if let Ok(md) = std::fs::metadata(unescape(p)) {
                    if md.file_type().is_block_device() {
                        let d = sys::major_minor(md.rdev());
                        if let Some((n, _, _)) = devs.iter().find(|(_, x, _)| *x == d) {
                            return Err(refused(Refusal::Swap {
                                what: format!("/dev/{n}"),
                            }));
                        }
                    }
                }
            }
        }
        // The boot disk: by the partition table on the device, and by the
        // kernel's partition-UUID links.
        if let Some(boot) = host.boot_partuuid() {
            let mut f = File::open(&self.path).map_err(inspect)?;
            for h in images::gpt::valid_headers(&mut f) {
                if h.partitions
                    .iter()
                    .any(|p| p.unique_guid.to_string().eq_ignore_ascii_case(&boot))
                {
                    return Err(refused(Refusal::BootDisk { partuuid: boot }));
                }
            }
            if let Ok(md) = std::fs::metadata(host.by_partuuid.join(&boot)) {
                let d = sys::major_minor(md.rdev());
                if md.file_type().is_block_device() && devs.iter().any(|(_, x, _)| *x == d) {
                    return Err(refused(Refusal::BootDisk { partuuid: boot }));
                }
            }
        }
        if self.size < image_size {
            return Err(refused(Refusal::TooSmall {
                have: self.size,
                need: image_size,
            }));
        }
        if self.logical_block_size != 512 {
            return Err(refused(Refusal::SectorSize {
                size: self.logical_block_size,
            }));
        }
        if !self.removable && !yes {
            return Err(refused(Refusal::NotRemovable {
                description: self.description.clone(),
            }));
        }
        Ok(())
    }
}

/// Undoes the octal escapes of `/proc` files (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_escapes_are_undone() {
        assert_eq!(unescape("/mnt/my\\040disk"), "/mnt/my disk");
        assert_eq!(unescape("/a\\"), "/a\\");
        assert_eq!(unescape("/a\\04"), "/a\\04");
    }

    #[test]
    fn the_boot_loaders_partition_uuid_is_read_from_its_variable() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host {
            efivars: dir.path().into(),
            ..Host::system()
        };
        assert_eq!(host.boot_partuuid(), None);
        let mut v = vec![6, 0, 0, 0];
        for u in "8F3A1C2E-0B4D-4E5F-8A6B-7C8D9E0F1A2B\0".encode_utf16() {
            v.extend_from_slice(&u.to_le_bytes());
        }
        std::fs::write(
            dir.path()
                .join(format!("LoaderDevicePartUUID-{LOADER_GUID}")),
            v,
        )
        .unwrap();
        assert_eq!(
            host.boot_partuuid().as_deref(),
            Some("8f3a1c2e-0b4d-4e5f-8a6b-7c8d9e0f1a2b")
        );
    }
}
