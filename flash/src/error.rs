//! What can go wrong, each with the file or device it concerns.

use std::path::PathBuf;

/// Why a device is not flashed. Each is checked before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a block device.
    #[error("not a block device (give a whole disk such as /dev/sdb)")]
    NotBlockDevice,
    /// A partition, not a whole disk.
    #[error(
        "is a partition; the image holds its own partition table: give the whole disk /dev/{disk}"
    )]
    Partition {
        /// The disk it belongs to.
        disk: String,
    },
    /// The disk or one of its partitions is mounted.
    #[error("{what} is mounted on {mountpoint}; unmount it first")]
    Mounted {
        /// The device that is mounted.
        what: String,
        /// Where.
        mountpoint: String,
    },
    /// Something else holds it (device mapper, md, bcache).
    #[error("{what} is in use by {holder} (device mapper, RAID or similar); release it first")]
    Held {
        /// The device that is held.
        what: String,
        /// The holder.
        holder: String,
    },
    /// Active swap.
    #[error("{what} is active swap; swapoff it first")]
    Swap {
        /// The swap device.
        what: String,
    },
    /// The disk the running system booted from.
    #[error("is the disk this system booted from (its partition {partuuid} is the boot loader's LoaderDevicePartUUID); refusing to overwrite it")]
    BootDisk {
        /// The partition's unique GUID.
        partuuid: String,
    },
    /// Smaller than the image.
    #[error("holds {have} bytes, the image needs {need}")]
    TooSmall {
        /// Device size.
        have: u64,
        /// Image size.
        need: u64,
    },
    /// Logical sectors other than 512 bytes.
    #[error("has {size}-byte logical sectors; the image's GPT is laid out for 512-byte sectors and would not be found")]
    SectorSize {
        /// The device's logical block size.
        size: u32,
    },
    /// Not removable, and `--yes` was not given.
    #[error("is not a removable disk ({description}); it may be a system or data disk: check that it is the one to overwrite, then add --yes")]
    NotRemovable {
        /// What the kernel says it is.
        description: String,
    },
    /// Another process has it open exclusively (or it is mounted).
    #[error("is busy (opened exclusively by another program, or mounted)")]
    Busy,
}

/// Errors of a flash.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the output directory cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The manifest's signature does not verify with the given key.
    #[error("{path}: the signature does not verify with key {key}; nothing was written")]
    Signature {
        /// `manifest.sig`.
        path: PathBuf,
        /// The key's fingerprint.
        key: String,
    },
    /// The output directory does not hold what the signed manifest says.
    #[error("{path}: {reason}; nothing was written")]
    Release {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The image differs from its signed block map.
    #[error("{path}: bytes {start}..{end} differ from the signed block map: the image was changed after it was signed; nothing was written")]
    Tampered {
        /// `disk.img`.
        path: PathBuf,
        /// First byte of the range.
        start: u64,
        /// End of the range.
        end: u64,
    },
    /// The device is not flashed.
    #[error("{device}: {reason}; nothing was written")]
    Refused {
        /// The device.
        device: PathBuf,
        /// Why.
        reason: Refusal,
    },
    /// Inspecting the device failed.
    #[error("{device}: cannot inspect it: {source}; nothing was written")]
    Inspect {
        /// The device.
        device: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The flash started and did not finish.
    #[error("{device}: {what}; {state}")]
    Failed {
        /// The device.
        device: PathBuf,
        /// What failed (`writing bytes A..B: Input/output error`, `interrupted`, …).
        what: String,
        /// What the device holds now, checked after the failure.
        state: String,
    },
}
