//! Stage 5, the initramfs: the cached parts (kernel modules, personalities'
//! roots, binaries) followed by one configuration segment (the plan, the
//! policy blob, `os-release`, and what the render stage adds to each
//! personality's root), each a separately compressed newc archive. The
//! configuration segment comes last, so that its entries override the
//! packages' when the kernel unpacks the initramfs.

use std::path::Path;

use images::cpio::CpioBuilder;
use images::Epoch;

use super::parts::{compress_segment, compression, Kernel, Roots};
use super::profile::Resolved;
use super::render::network::RootEntry;
use super::render::Rendered;
use super::sha256;
use crate::{BuildError, BuildOptions};

/// The initramfs and its digest.
pub(crate) struct Initramfs {
    /// The concatenated segments.
    pub bytes: Vec<u8>,
    /// Their SHA-256.
    pub sha256: [u8; 32],
}

/// Concatenates the parts and the configuration segment.
pub(crate) fn assemble(
    opts: &BuildOptions,
    epoch: Epoch,
    input: &Resolved,
    kernel: &Kernel,
    roots: &Roots,
    rendered: &Rendered,
) -> Result<Initramfs, BuildError> {
    let mut initramfs = Vec::new();
    for seg in [
        &kernel.part.segment,
        &roots.personalities.segment,
        &roots.binaries,
    ] {
        append_file(&mut initramfs, seg)?;
    }
    let mut base = CpioBuilder::new(epoch)?;
    for d in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "etc/appliance",
        "usr/sbin",
    ] {
        base.add_dir(d, 0o755)?;
    }
    base.add_char_device("dev/console", 0o600, 5, 1)?;
    base.add_char_device("dev/null", 0o666, 1, 3)?;
    base.add_file(gateway_plan::PLAN_PATH, 0o444, rendered.plan_bytes.clone())?;
    base.add_file(
        "etc/appliance/policy.bin",
        0o400,
        input.policy_bytes.clone(),
    )?;
    base.add_file(
        "etc/os-release",
        0o444,
        rendered.os_release.clone().into_bytes(),
    )?;
    base.add_file(
        "personalities/red/etc/dnsmasq.conf",
        0o444,
        rendered.dnsmasq.clone().into_bytes(),
    )?;
    for (side, files) in &rendered.roots {
        for (path, entry) in files {
            let full = format!("personalities/{}/{path}", side.name());
            match entry {
                RootEntry::Dir(mode) => base.add_dir(&full, *mode)?,
                RootEntry::File(mode, bytes) => base.add_file(&full, *mode, bytes.clone())?,
                RootEntry::Symlink(target) => base.add_symlink(&full, target)?,
            }
        }
    }
    initramfs.extend(compress_segment(&base.to_vec()?, compression(opts))?);
    let sha256 = sha256(&initramfs);
    Ok(Initramfs {
        bytes: initramfs,
        sha256,
    })
}

/// Appends a file's bytes to `out`.
fn append_file(out: &mut Vec<u8>, path: &Path) -> Result<(), BuildError> {
    let mut f = std::fs::File::open(path).map_err(BuildError::io("reading", path))?;
    std::io::copy(&mut f, out).map_err(BuildError::io("reading", path))?;
    Ok(())
}
