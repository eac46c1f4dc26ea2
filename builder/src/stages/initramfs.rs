//! Stage 5, the initramfs: the cached parts (kernel modules, personalities'
//! roots, binaries) followed by one configuration segment (the plan, the
//! policy blob, `os-release`, and what the render stage adds to each
//! personality's root), each a separately compressed newc archive. The
//! configuration segment comes last, so that its entries override the
//! packages' when the kernel unpacks the initramfs.

use std::path::Path;

use images::cpio::CpioBuilder;
use images::Epoch;

use profiles::Side;

use super::parts::{compress_segment, compression, Kernel, Roots, GUEST_INITRD_PATH};
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
    let segments = [
        Some(&kernel.part.segment),
        roots.personalities.segment.as_ref(),
        roots.vmm.as_ref(),
        Some(&roots.binaries),
    ];
    for seg in segments.into_iter().flatten() {
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
    if roots.vmm.is_some() {
        // Each VMM's root gets its guest's initramfs.
        for side in [Side::Red, Side::Black] {
            let initrd = guest_initrd(opts, epoch, input, kernel, roots, rendered, side)?;
            base.add_file(
                &format!("personalities/{}{GUEST_INITRD_PATH}", side.name()),
                0o444,
                initrd,
            )?;
        }
    } else {
        add_personality_files(&mut base, rendered, &[Side::Red, Side::Black], |side| {
            format!("personalities/{}/", side.name())
        })?;
    }
    initramfs.extend(compress_segment(&base.to_vec()?, compression(opts))?);
    let sha256 = sha256(&initramfs);
    Ok(Initramfs {
        bytes: initramfs,
        sha256,
    })
}

/// What the render stage adds to each personality's root (red's dnsmasq
/// configuration, the network setup, accounts …), under `prefix(side)`.
fn add_personality_files(
    c: &mut CpioBuilder,
    rendered: &Rendered,
    sides: &[Side],
    prefix: impl Fn(Side) -> String,
) -> Result<(), BuildError> {
    if sides.contains(&Side::Red) {
        c.add_file(
            &format!("{}etc/dnsmasq.conf", prefix(Side::Red)),
            0o444,
            rendered.dnsmasq.clone().into_bytes(),
        )?;
    }
    for (side, files) in rendered.roots.iter().filter(|(s, _)| sides.contains(s)) {
        for (path, entry) in files {
            let full = format!("{}{path}", prefix(*side));
            match entry {
                RootEntry::Dir(mode) => c.add_dir(&full, *mode)?,
                RootEntry::File(mode, bytes) => c.add_file(&full, *mode, bytes.clone())?,
                RootEntry::Symlink(target) => c.add_symlink(&full, target)?,
            }
        }
    }
    Ok(())
}

/// Runtime `microvm`: `side`'s guest initramfs — the guest kernel's modules
/// and the personality's packages (cached segments), then its configuration:
/// mount points and device nodes, the guest init (the gateway init's own
/// binary under the name that selects its guest mode), the plan (the same
/// bytes the host's init checked against the command line), the list of
/// modules to load, and what the render stage adds to the personality's
/// root.
fn guest_initrd(
    opts: &BuildOptions,
    epoch: Epoch,
    input: &Resolved,
    kernel: &Kernel,
    roots: &Roots,
    rendered: &Rendered,
    side: Side,
) -> Result<Vec<u8>, BuildError> {
    let missing = || BuildError::Binary(format!("the {} guest's parts are missing", side.name()));
    let modules = kernel.part.guests.get(&side).ok_or_else(missing)?;
    let root = roots.personalities.guests.get(&side).ok_or_else(missing)?;
    let mut out = Vec::new();
    append_file(&mut out, &modules.segment)?;
    append_file(&mut out, root)?;
    let mut c = CpioBuilder::new(epoch)?;
    let rendered_here = rendered.roots.get(&side);
    for d in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "etc",
        "etc/appliance",
        "usr",
        "usr/lib",
        "usr/lib/appliance",
    ] {
        if !rendered_here.is_some_and(|r| r.contains_key(d)) {
            c.add_dir(d, 0o755)?;
        }
    }
    c.add_char_device("dev/console", 0o600, 5, 1)?;
    c.add_char_device("dev/null", 0o666, 1, 3)?;
    c.add_file(&GUEST_INIT[1..], 0o755, input.binaries.init.clone())?;
    c.add_file(
        &gateway_plan::PLAN_PATH[1..],
        0o444,
        rendered.plan_bytes.clone(),
    )?;
    let mut list = String::new();
    for m in &modules.modules {
        list.push_str(m);
        list.push('\n');
    }
    c.add_file(&GUEST_MODULES[1..], 0o444, list.into_bytes())?;
    add_personality_files(&mut c, rendered, &[side], |_| String::new())?;
    out.extend(compress_segment(&c.to_vec()?, compression(opts))?);
    Ok(out)
}

/// Where the guest init lives in a guest initramfs (the gateway's
/// `vmm::GUEST_INIT`: the file name selects the init's guest mode).
pub(crate) const GUEST_INIT: &str = "/usr/lib/appliance/appliance-guest";
/// The guest's module list (the gateway's `guest::GUEST_MODULES`).
pub(crate) const GUEST_MODULES: &str = "/etc/appliance/guest-modules";

/// Appends a file's bytes to `out`.
fn append_file(out: &mut Vec<u8>, path: &Path) -> Result<(), BuildError> {
    let mut f = std::fs::File::open(path).map_err(BuildError::io("reading", path))?;
    std::io::copy(&mut f, out).map_err(BuildError::io("reading", path))?;
    Ok(())
}
