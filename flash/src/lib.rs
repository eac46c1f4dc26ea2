//! `appliance flash`: write a signed appliance image onto a disk so that the
//! disk either boots exactly the signed image or does not look like a GPT
//! disk at all.
//!
//! The sequence (each step in its module):
//!
//! 1. [`release`]: the manifest's Ed25519 signature, the bmap's digest in it,
//!    the image's size, then every mapped range of the image hashed against
//!    the bmap — all before the device is opened for writing. A tampered
//!    image is refused here, with nothing written.
//! 2. [`device`]: the target is a whole block device, not mounted, not held
//!    (device mapper, md, swap), not the disk the running system booted from
//!    (the boot loader's `LoaderDevicePartUUID`, also when the system runs
//!    from RAM and mounts nothing), at least as large as the image, with
//!    512-byte logical sectors, and removable unless the caller says `--yes`.
//!    It is opened `O_EXCL`, so nothing can mount it meanwhile.
//! 3. [`write`]: both GPT headers the firmware could find are destroyed
//!    first; then the mapped ranges are written (`O_DIRECT`, falling back to
//!    buffered writes with `fdatasync`), except the first block and the
//!    image's last block; everything is read back past the cache and checked
//!    against the signed range digests; only then the backup header's block
//!    and, last, the first block (protective MBR and primary header) go down
//!    and are read back. On a larger disk the stale backup GPT at its end is
//!    cleared. An interrupted or failed flash therefore leaves a disk without
//!    a valid GPT header, and the error says so (after checking it).

pub mod device;
mod error;
pub mod release;
mod sys;
pub mod write;

pub use device::{Host, Target};
pub use error::{Error, Refusal};
pub use release::Release;
pub use write::{flash, Options, Phase, Progress, Report};
