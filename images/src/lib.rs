//! Deterministic image formats for the appliance: writers **and** readers.
//!
//! * [`cpio`]: newc archives (initramfs), streamed to any [`std::io::Write`].
//! * [`initramfs`]: compressed initramfs segments (zstd, xz), and reading an
//!   initramfs back as the kernel unpacks it.
//! * [`fat`]: FAT32 EFI system partitions with VFAT long names.
//! * [`gpt`]: GPT disks (protective MBR, primary and backup headers), written sparsely,
//!   plus the appliance's A/B layout.
//! * [`pe`]: PE32+ parsing, UKI assembly on top of systemd-stub, the Authenticode
//!   image hash and the PCR 11 section measurements of systemd-stub.
//! * [`qcow2`]: raw → qcow2 conversion through `qemu-img`.
//! * [`ab`]: the appliance's A/B layout (one ESP holding both slots' UKIs).
//! * [`bmap`]: bmap 2.0 block maps of what a writer put on a disk, for flashing.
//!
//! # Invariants
//! Nothing in this crate reads the clock or a random source. Every GUID, timestamp,
//! volume ID and serial number is a parameter; [`guid_from_digest`] derives GUIDs from
//! digests. The same inputs therefore give the same bytes.
//!
//! Readers never panic on malformed input; they return [`Error`]. No public function
//! panics unless its documentation says so.

#![forbid(unsafe_code)]

pub mod ab;
pub mod bmap;
pub mod cpio;
mod error;
pub mod fat;
pub mod gpt;
pub mod initramfs;
pub mod pe;
pub mod qcow2;
mod types;

pub use error::Error;
pub use types::{guid_from_digest, ByteLen, Content, Epoch, Guid, Lba, SECTOR_SIZE};

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
