//! Stage 3, the parts: cached, compressed initramfs segments.
//!
//! The initramfs is a concatenation of separately compressed newc segments,
//! unpacked by the kernel in this order:
//! 1. the kernel's driver modules ([`kernel_part`]);
//! 2. both personalities' root filesystems in ONE segment
//!    ([`personalities_part`]), written directories first and then every
//!    file ordered by its path inside the root, red's copy next to black's.
//!    The personalities share most of their packages (libc, libcrypto,
//!    busybox, iproute2 …); with the copies adjacent, zstd stores each second
//!    copy as a reference to the first, within an 8 MiB window;
//! 3. the gateway binaries ([`binaries_part`]);
//! 4. the per-build configuration (plan, policy, network scripts), rendered
//!    by [`super::render`] and archived by [`super::initramfs`].
//!
//! Parts 1–3 are slow to make and depend only on packages and binaries, so
//! each is stored under `<cache>/parts/` by the digest of everything it is
//! made from: a policy-only rebuild reuses them without decompressing.
//!
//! Why the personalities' identical files are stored twice in the unpacked
//! root filesystem rather than hard-linked or shared: a shared inode is state
//! both compartments can reach — a file lock (`flock`, `fcntl`), an inotify
//! watch's events — and so a channel from red to black that bypasses the
//! Viaduct. Each compartment keeps its own inodes (every cpio entry has one
//! link); only the *compressed* image stores the bytes once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use components::{Deb, EntryKind, LockedPackage};
use images::cpio::CpioBuilder;
use images::initramfs::{compress, Compression, MAX_ZSTD_WINDOW_LOG};
use images::Epoch;
use kernel::KernelTree;
use profiles::{Profile, Side};
use sha2::{Digest, Sha256};

use super::commit::write_atomic;
use super::fetch::Fetched;
use super::profile::Resolved;
use crate::pipeline::{Progress, Stages};
use crate::{BuildError, BuildOptions};

/// Where the Viaduct binary lives in the initramfs.
pub(crate) const VIADUCT_PATH: &str = "/usr/sbin/viaduct";
/// Where the IKE process's binary lives in the initramfs.
pub(crate) const IKE_PATH: &str = "/usr/sbin/viaduct-ike";

/// The kernel part and the locked package it came from.
pub(crate) struct Kernel {
    /// The kernel image and its modules.
    pub part: KernelPart,
    /// The `linux-image-<version>` package.
    pub package: LockedPackage,
}

/// The personalities' root filesystems and the gateway binaries.
pub(crate) struct Roots {
    /// Both root filesystems: one host segment (compartments) or one guest
    /// segment each (VMs).
    pub personalities: PersonalitiesPart,
    /// The binaries' segment.
    pub binaries: PathBuf,
    /// Runtime `microvm`: both VMMs' roots, one host segment ([`vmm_part`]).
    pub vmm: Option<PathBuf>,
}

/// How this build compresses segments.
pub(crate) fn compression(opts: &BuildOptions) -> Compression {
    opts.compression.unwrap_or(COMPRESSION)
}

/// The part cache, created if need be.
fn cache_dir(opts: &BuildOptions) -> Result<PathBuf, BuildError> {
    let parts = opts.cache_dir.join("parts");
    std::fs::create_dir_all(&parts).map_err(BuildError::io("creating", &parts))?;
    Ok(parts)
}

/// The kernel image package of the lock's kernel group and its part.
pub(crate) fn kernel(
    opts: &BuildOptions,
    input: &Resolved,
    fetched: &Fetched,
    st: &mut Stages<'_>,
) -> Result<Kernel, BuildError> {
    let parts = cache_dir(opts)?;
    let package = kernel::image_package(fetched.lock().group_packages("kernel"))
        .ok_or_else(|| {
            fetched.mismatch(format!(
                "the kernel group has no linux-image-<version> package (from {})",
                input.profile.kernel.package
            ))
        })?
        .clone();
    let part = kernel_part(
        &parts,
        &fetched.deb_path(package.name.as_str())?,
        &package.sha256.to_hex(),
        &input.profile,
        compression(opts),
        st,
    )?;
    Ok(Kernel { part, package })
}

/// Both personalities' root filesystems from their locked packages, and the
/// gateway binaries.
pub(crate) fn roots(
    opts: &BuildOptions,
    input: &Resolved,
    fetched: &Fetched,
    kernel: &Kernel,
    st: &mut Stages<'_>,
) -> Result<Roots, BuildError> {
    let parts = cache_dir(opts)?;
    let epoch = Epoch(fetched.lock().source_date_epoch.0);
    let how = compression(opts);
    let sides = [Side::Red, Side::Black]
        .into_iter()
        .map(|side| {
            let pkgs = fetched
                .group(side.name())?
                .into_iter()
                .map(|(p, path)| (p.name.as_str().to_string(), path, p.sha256.to_hex()))
                .collect::<Packages>();
            Ok((side, pkgs))
        })
        .collect::<Result<Vec<_>, BuildError>>()?;
    let vm = microvm(&input.profile);
    let personalities = if vm {
        guest_roots_part(&parts, &sides, epoch, how, st)?
    } else {
        personalities_part(&parts, &sides, epoch, how, st)?
    };
    let vmm = if vm {
        let pkgs = fetched
            .group("vmm")?
            .into_iter()
            .map(|(p, path)| (p.name.as_str().to_string(), path, p.sha256.to_hex()))
            .collect::<Packages>();
        Some(vmm_part(
            &parts,
            &pkgs,
            &kernel.part.vmlinuz,
            epoch,
            how,
            st,
        )?)
    } else {
        None
    };
    let b = &input.binaries;
    let binaries = binaries_part(
        &parts,
        &b.init,
        &b.viaduct,
        VIADUCT_PATH,
        b.ike.as_deref().map(|bin| (bin, IKE_PATH)),
        epoch,
        how,
        st,
    )?;
    Ok(Roots {
        personalities,
        binaries,
        vmm,
    })
}

/// How every initramfs segment is compressed: zstd at level 12 with an
/// 8 MiB window. Measured under emulation (docs/design/image-size.md), it
/// boots as fast as level 19 and faster than xz, for a UKI 7 % larger than
/// level 19's, and makes the parts three times faster.
pub const COMPRESSION: Compression = Compression::Zstd {
    level: 12,
    window_log: 23,
};

/// The window of the VMM roots' segment ([`vmm_part`]), log2 bytes: 32 MiB,
/// so that black's copy of QEMU (18 MB) and of the guest kernel (8 MB)
/// refer back to red's. Unpacking it takes a 32 MiB buffer, once, at boot.
pub const VMM_WINDOW_LOG: u32 = MAX_ZSTD_WINDOW_LOG;

/// Version of the part-cache key derivation; bump to invalidate old parts.
const PARTS_VERSION: &str = "parts-v5";

/// Where a part's files live and under which key.
fn part_key(kind: &str, how: Compression, feed: impl FnOnce(&mut Sha256)) -> String {
    let mut h = Sha256::new();
    h.update(PARTS_VERSION);
    h.update([0]);
    h.update(kind);
    h.update([0]);
    h.update(how.to_string());
    h.update([0]);
    feed(&mut h);
    hex::encode(h.finalize())
}

/// Compresses a newc archive.
pub(crate) fn compress_segment(archive: &[u8], how: Compression) -> Result<Vec<u8>, BuildError> {
    Ok(compress(archive, how)?)
}

/// The kernel image and the profile's driver modules.
pub(crate) struct KernelPart {
    /// The compressed modules segment.
    pub segment: PathBuf,
    /// The kernel image (bzImage).
    pub vmlinuz: PathBuf,
    /// The kernel release (`uname -r`).
    pub version: String,
    /// Module paths inside the initramfs, load order.
    pub modules: Vec<String>,
    /// Runtime `microvm`: each guest kernel's modules.
    pub guests: BTreeMap<Side, GuestModules>,
}

/// The modules an A/B image needs besides the profile's drivers: the
/// init reads the boot loader's variables (efivarfs) and renames the trial
/// entry on the ESP (vfat, with code page 437 and ASCII names). The disk's
/// own driver (virtio_blk, ahci and sd_mod, nvme, …) is the profile's to name.
pub(crate) const BOOT_ASSESSMENT_MODULES: [&str; 4] =
    ["efivarfs", "vfat", "nls_cp437", "nls_ascii"];

/// What the host kernel of a `microvm` image loads beside the profile's
/// drivers: KVM for either vendor (the init loads the one for its CPU) and
/// VFIO with its IOMMU backend. The IOMMU drivers are built in.
pub(crate) const MICROVM_HOST_MODULES: [&str; 4] =
    ["kvm_amd", "kvm_intel", "vfio_pci", "vfio_iommu_type1"];

/// What every personality's guest kernel loads before its NIC's driver:
/// virtio over MMIO, the Viaduct's port (`virtio_net`) and the event line
/// (`virtio_console`).
pub(crate) const GUEST_BASE_MODULES: [&str; 3] = ["virtio_mmio", "virtio_net", "virtio_console"];

/// Whether the profile's personalities run as VMs.
pub(crate) fn microvm(profile: &Profile) -> bool {
    profile.appliance.runtime == profiles::Runtime::Microvm
}

/// What an A/B image's boot chain needs, then the profile's drivers: the
/// boot-assessment modules come first, so that a driver that fails to load
/// (a broken update) still leaves the init able to see its trial and reboot.
///
/// Under `microvm` the host kernel drives no card the guests own: the
/// drivers of the cards passed through by VFIO (they load in the guests'
/// kernels, [`guest_drivers`]) and `tun` (the Viaduct's ports are
/// vhost-user) are left out, and [`MICROVM_HOST_MODULES`] plus, for a card
/// attached by macvtap, `macvtap` come in.
fn drivers(profile: &Profile) -> Vec<&str> {
    let mut v: Vec<&str> = Vec::new();
    if profile.image.slots == profiles::Slots::Ab {
        v.extend(BOOT_ASSESSMENT_MODULES);
    }
    let vm = microvm(profile);
    let guest_owned = |d: &str| {
        vm && (d == "tun"
            || profile
                .hardware
                .nics
                .iter()
                .any(|n| n.attach == profiles::NicAttach::Vfio && n.driver == d))
    };
    for d in &profile.kernel.drivers {
        if !v.contains(&d.as_str()) && !guest_owned(d) {
            v.push(d);
        }
    }
    if vm {
        let macvtap = profile
            .hardware
            .nics
            .iter()
            .any(|n| n.attach == profiles::NicAttach::Macvtap);
        for m in MICROVM_HOST_MODULES
            .into_iter()
            .chain(macvtap.then_some("macvtap"))
        {
            if !v.contains(&m) {
                v.push(m);
            }
        }
    }
    v
}

/// The modules of `side`'s guest kernel (runtime `microvm`):
/// [`GUEST_BASE_MODULES`], then its card's driver when the card is passed
/// through.
pub(crate) fn guest_drivers(profile: &Profile, side: Side) -> Vec<String> {
    let mut v: Vec<String> = GUEST_BASE_MODULES.iter().map(|s| s.to_string()).collect();
    let nic = match side {
        Side::Red => &profile.red.nic,
        Side::Black => &profile.black.nic,
    };
    if let Some(n) = profile.hardware.nics.iter().find(|n| &n.role == nic) {
        if n.attach == profiles::NicAttach::Vfio && !v.contains(&n.driver) {
            v.push(n.driver.clone());
        }
    }
    v
}

/// A guest kernel's modules (runtime `microvm`).
#[derive(Debug, Clone)]
pub(crate) struct GuestModules {
    /// The compressed segment of the module files (paths as in the guest).
    pub segment: PathBuf,
    /// Module paths, load order (the guest's `guest-modules` list).
    pub modules: Vec<String>,
}

/// Kernel image and the profile's modules (with dependencies), keyed by the
/// kernel package digest and the driver lists; under `microvm` also each
/// guest kernel's modules (the guests run the same kernel).
pub(crate) fn kernel_part(
    parts: &Path,
    deb: &Path,
    deb_sha: &str,
    profile: &Profile,
    how: Compression,
    st: &mut Stages<'_>,
) -> Result<KernelPart, BuildError> {
    let all = drivers(profile);
    let guests: Vec<(Side, Vec<String>)> = if microvm(profile) {
        [Side::Red, Side::Black]
            .into_iter()
            .map(|s| (s, guest_drivers(profile, s)))
            .collect()
    } else {
        Vec::new()
    };
    let key = part_key("kernel", how, |h| {
        h.update(deb_sha);
        for d in &all {
            h.update([0]);
            h.update(d);
        }
        for (side, ds) in &guests {
            h.update([1]);
            h.update(side.name());
            for d in ds {
                h.update([0]);
                h.update(d);
            }
        }
    });
    let segment = parts.join(format!("kernel-{key}.cpio.zst"));
    let vmlinuz = parts.join(format!("kernel-{key}.vmlinuz"));
    let meta = parts.join(format!("kernel-{key}.meta"));
    let guest_segment = |side: Side| parts.join(format!("kernel-{key}.{}.cpio.zst", side.name()));
    if segment.exists() && vmlinuz.exists() && meta.exists() {
        let text = std::fs::read_to_string(&meta).map_err(BuildError::io("reading", &meta))?;
        if let Some((version, modules, mut guest_modules)) = parse_kernel_meta(&text) {
            let complete = guests
                .iter()
                .all(|(side, _)| guest_modules.contains_key(side) && guest_segment(*side).exists());
            if complete {
                (st.progress)(Progress::Reused(format!("kernel {version}")));
                return Ok(KernelPart {
                    segment,
                    vmlinuz,
                    version,
                    modules,
                    guests: guests
                        .iter()
                        .map(|(side, _)| {
                            let modules = guest_modules.remove(side).unwrap_or_default();
                            (
                                *side,
                                GuestModules {
                                    segment: guest_segment(*side),
                                    modules,
                                },
                            )
                        })
                        .collect(),
                });
            }
        }
    }
    let bytes = std::fs::read(deb).map_err(BuildError::io("reading", deb))?;
    let deb = Deb::parse(&bytes)?;
    let tree = KernelTree::from_deb(&deb)?;
    let modules_segment = |names: &[&str],
                           field: &str|
     -> Result<(Vec<u8>, Vec<String>), BuildError> {
        let res = match tree.resolve(names) {
            Ok(r) => r,
            Err(kernel::Error::UnknownDriver {
                name,
                kver,
                suggestions,
            }) => {
                let location = profiles::find_in_sources(profile, &format!("\"{name}\""))
                    .map(|(f, l, c)| format!("{}:{l}:{c}: ", f.display()))
                    .unwrap_or_default();
                let hint = if suggestions.is_empty() {
                    String::new()
                } else {
                    format!(" (did you mean {}?)", suggestions.join(", "))
                };
                return Err(BuildError::Driver {
                    location,
                    message: format!("{field}driver `{name}` is not in kernel {kver}: no module or built-in of that name{hint}"),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let files = tree.module_files_from_deb(&deb, &res)?;
        let mut c = CpioBuilder::new(Epoch(0))?;
        let mut modules = Vec::new();
        for f in &files {
            c.add_file(&f.path, 0o644, f.data.clone())?;
            modules.push(format!("/{}", f.path.trim_start_matches('/')));
        }
        Ok((compress_segment(&c.to_vec()?, how)?, modules))
    };
    let host = if microvm(profile) {
        without_network_drivers(&tree, profile, &all)
    } else {
        all.clone()
    };
    let (host_bytes, modules) = modules_segment(&host, "")?;
    let mut guest_parts = BTreeMap::new();
    for (side, ds) in &guests {
        let names: Vec<&str> = ds.iter().map(String::as_str).collect();
        let (bytes, modules) =
            modules_segment(&names, &format!("the {} guest kernel: ", side.name()))?;
        write_atomic(&guest_segment(*side), &bytes)?;
        guest_parts.insert(
            *side,
            GuestModules {
                segment: guest_segment(*side),
                modules,
            },
        );
    }
    write_atomic(&segment, &host_bytes)?;
    write_atomic(&vmlinuz, tree.image())?;
    let mut m = format!("{}\n", tree.version());
    for p in &modules {
        m.push_str(&format!("host {p}\n"));
    }
    for (side, g) in &guest_parts {
        for p in &g.modules {
            m.push_str(&format!("{} {p}\n", side.name()));
        }
    }
    write_atomic(&meta, m.as_bytes())?;
    Ok(KernelPart {
        segment,
        vmlinuz,
        version: tree.version().to_string(),
        modules,
        guests: guest_parts,
    })
}

/// Under `microvm` the gateway's kernel drives no network card but those
/// attached by macvtap: every module of `all` that lives under the kernel's
/// `drivers/net/` (the cards' drivers a base profile lists for any hardware,
/// `virtio_net`, `igb` …) is left out, but a macvtap card's driver and
/// `macvtap` itself. Dependencies are resolved afterwards, so what a kept
/// module needs still comes in.
fn without_network_drivers<'a>(
    tree: &KernelTree,
    profile: &Profile,
    all: &[&'a str],
) -> Vec<&'a str> {
    let keep: Vec<&str> = profile
        .hardware
        .nics
        .iter()
        .filter(|n| n.attach == profiles::NicAttach::Macvtap)
        .map(|n| n.driver.as_str())
        .chain(["macvtap"])
        .collect();
    all.iter()
        .copied()
        .filter(|d| {
            keep.contains(d)
                || !tree
                    .modules()
                    .get(&kernel::ModuleName::new(d))
                    .is_some_and(|m| m.path.contains("/kernel/drivers/net/"))
        })
        .collect()
}

/// The kernel part's `.meta`: the release, then `host|red|black <path>`
/// per module, in load order.
type KernelMeta = (String, Vec<String>, BTreeMap<Side, Vec<String>>);

fn parse_kernel_meta(text: &str) -> Option<KernelMeta> {
    let mut lines = text.lines();
    let version = lines.next()?.to_string();
    let mut host = Vec::new();
    let mut guests: BTreeMap<Side, Vec<String>> = BTreeMap::new();
    for l in lines {
        let (who, path) = l.split_once(' ')?;
        match who {
            "host" => host.push(path.to_string()),
            "red" => guests.entry(Side::Red).or_default().push(path.to_string()),
            "black" => guests
                .entry(Side::Black)
                .or_default()
                .push(path.to_string()),
            _ => return None,
        }
    }
    Some((version, host, guests))
}

/// Paths of a package that a gateway never uses: documentation, manual
/// pages, translations, bug-reporting and lintian hooks.
fn pruned(path: &str) -> bool {
    const PRUNE: &[&str] = &[
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "usr/share/lintian",
        "usr/share/bug",
    ];
    PRUNE
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

/// What a personality's packages put in its root (paths relative to the
/// root, without a leading `/`), and whether each is a directory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Shipped(pub BTreeMap<String, bool>);

impl Shipped {
    pub fn has(&self, path: &str) -> bool {
        self.0.contains_key(path)
    }

    /// Some(true) for a directory, Some(false) for anything else, None if absent.
    pub fn is_dir(&self, path: &str) -> Option<bool> {
        self.0.get(path).copied()
    }
}

/// A personality's packages: `(name, .deb path, SHA-256 hex)` in lock order.
pub(crate) type Packages = Vec<(String, PathBuf, String)>;

/// Both personalities' root filesystems.
pub(crate) struct PersonalitiesPart {
    /// Compartments: both roots, one compressed host segment
    /// ([`personalities_part`]). VMs: `None`.
    pub segment: Option<PathBuf>,
    /// VMs: each side's root at `/`, one compressed segment of its guest
    /// initramfs each ([`guest_roots_part`]).
    pub guests: BTreeMap<Side, PathBuf>,
    /// What each side's packages ship.
    pub shipped: BTreeMap<Side, Shipped>,
}

/// The cache key of a part made of each side's packages.
fn roots_key(kind: &str, how: Compression, epoch: Epoch, sides: &[(Side, Packages)]) -> String {
    part_key(kind, how, |h| {
        h.update(epoch.0.to_le_bytes());
        for (side, pkgs) in sides {
            h.update([1]);
            h.update(side.name());
            for (name, _, sha) in pkgs {
                h.update([0]);
                h.update(name);
                h.update(sha);
            }
        }
    })
}

/// The order of a segment holding both sides' copies under
/// `personalities/<side>/`: by the path inside the root, then the side, so
/// that the two copies of a file are adjacent.
fn side_by_side(path: &str) -> (String, String) {
    let mut it = path.splitn(3, '/');
    let (_, side, rest) = (it.next(), it.next(), it.next());
    (
        rest.unwrap_or(path).to_owned(),
        side.unwrap_or("").to_owned(),
    )
}

/// Every package of each side's closure under `personalities/<side>/`,
/// without [`pruned`] paths, as one cached segment (see the module docs for
/// the order of its entries).
pub(crate) fn personalities_part(
    parts: &Path,
    sides: &[(Side, Packages)],
    epoch: Epoch,
    how: Compression,
    st: &mut Stages<'_>,
) -> Result<PersonalitiesPart, BuildError> {
    let key = roots_key("personalities", how, epoch, sides);
    let segment = parts.join(format!("personalities-{key}.cpio.zst"));
    let listing = parts.join(format!("personalities-{key}.paths"));
    if segment.exists() {
        if let Some(shipped) = reused_listing(&listing, st) {
            return Ok(PersonalitiesPart {
                segment: Some(segment),
                guests: BTreeMap::new(),
                shipped,
            });
        }
    }
    let mut c = CpioBuilder::new(epoch)?;
    let mut shipped = BTreeMap::new();
    for (side, pkgs) in sides {
        let tree = root_tree(side.name(), pkgs)?;
        let prefix = format!("personalities/{}/", side.name());
        shipped.insert(*side, add_root(&mut c, side.name(), &tree, &prefix)?);
    }
    let mut archive = Vec::new();
    c.write_grouped_to(&mut archive, side_by_side)?;
    write_atomic(&segment, &compress_segment(&archive, how)?)?;
    write_atomic(&listing, render_listing(&shipped).as_bytes())?;
    Ok(PersonalitiesPart {
        segment: Some(segment),
        guests: BTreeMap::new(),
        shipped,
    })
}

/// A root's entries under `prefix` (empty, or ending in `/`); what it ships.
fn add_root(
    c: &mut CpioBuilder,
    side: &str,
    tree: &BTreeMap<String, (u32, EntryKind)>,
    prefix: &str,
) -> Result<Shipped, BuildError> {
    let mut paths = BTreeMap::new();
    for (p, (mode, kind)) in tree {
        if p.is_empty() || p == "." {
            continue;
        }
        let full = format!("{prefix}{p}");
        let perm = mode & 0o7777;
        match kind {
            EntryKind::Dir { .. } => c.add_dir(&full, perm)?,
            EntryKind::File { data, .. } => c.add_file(&full, perm, data.clone())?,
            EntryKind::Symlink { target } => c.add_symlink(&full, target)?,
            EntryKind::Hardlink { target } => match tree.get(target.trim_end_matches('/')) {
                // A package's own hard link becomes a second, separate file.
                Some((m, EntryKind::File { data, .. })) => {
                    c.add_file(&full, m & 0o7777, data.clone())?
                }
                _ => {
                    return Err(BuildError::Binary(format!(
                        "{side} root filesystem: hard link {p} -> {target} has no regular target"
                    )))
                }
            },
        }
        paths.insert(p.clone(), matches!(kind, EntryKind::Dir { .. }));
    }
    Ok(Shipped(paths))
}

/// Runtime `microvm`: each side's packages as the root (`/`) of its guest
/// initramfs, one compressed segment per side, cached like
/// [`personalities_part`]. The guests share nothing: each has its own copy.
pub(crate) fn guest_roots_part(
    parts: &Path,
    sides: &[(Side, Packages)],
    epoch: Epoch,
    how: Compression,
    st: &mut Stages<'_>,
) -> Result<PersonalitiesPart, BuildError> {
    let key = roots_key("guest-roots", how, epoch, sides);
    let segment = |side: Side| parts.join(format!("guest-root-{key}.{}.cpio.zst", side.name()));
    let listing = parts.join(format!("guest-root-{key}.paths"));
    let guests: BTreeMap<Side, PathBuf> = sides.iter().map(|(s, _)| (*s, segment(*s))).collect();
    if guests.values().all(|p| p.exists()) {
        if let Some(shipped) = reused_listing(&listing, st) {
            return Ok(PersonalitiesPart {
                segment: None,
                guests,
                shipped,
            });
        }
    }
    let mut shipped = BTreeMap::new();
    for (side, pkgs) in sides {
        let tree = root_tree(side.name(), pkgs)?;
        let mut c = CpioBuilder::new(epoch)?;
        shipped.insert(*side, add_root(&mut c, side.name(), &tree, "")?);
        write_atomic(&segment(*side), &compress_segment(&c.to_vec()?, how)?)?;
    }
    write_atomic(&listing, render_listing(&shipped).as_bytes())?;
    Ok(PersonalitiesPart {
        segment: None,
        guests,
        shipped,
    })
}

/// QEMU's binary inside a VMM's root.
pub(crate) const QEMU_PATH: &str = "/usr/bin/qemu-system-x86_64";
/// The guest kernel inside a VMM's root.
pub(crate) const GUEST_KERNEL_PATH: &str = "/vm/vmlinuz";
/// The guest initramfs inside a VMM's root.
pub(crate) const GUEST_INITRD_PATH: &str = "/vm/initrd";
/// The firmware QEMU reads for `-machine microvm` and a `-kernel` boot
/// (`qemu-system-data`), inside a VMM's root.
const VMM_FIRMWARE: [&str; 5] = [
    "usr/share/qemu/bios-microvm.bin",
    "usr/share/qemu/qboot.rom",
    "usr/share/qemu/linuxboot_dma.bin",
    "usr/share/qemu/kvmvapic.bin",
    "usr/share/qemu/pvh.bin",
];
/// Where the dynamic loader looks for libraries (Debian amd64).
const LIBRARY_DIRS: [&str; 4] = [
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib64",
    "usr/lib",
];

/// Runtime `microvm`: each VMM's root under `personalities/<side>/`, one
/// cached segment: QEMU, exactly the libraries it loads (its `DT_NEEDED`
/// closure and the dynamic loader, found in the `vmm` group's packages),
/// the firmware [`VMM_FIRMWARE`], the guest kernel at
/// [`GUEST_KERNEL_PATH`], and empty mount points for the jail. Each VMM
/// gets its own copy (no inode shared between red's and black's VMMs),
/// the copies adjacent so that the compressed segment stores most bytes
/// once.
pub(crate) fn vmm_part(
    parts: &Path,
    pkgs: &Packages,
    vmlinuz: &Path,
    epoch: Epoch,
    how: Compression,
    st: &mut Stages<'_>,
) -> Result<PathBuf, BuildError> {
    let kernel = std::fs::read(vmlinuz).map_err(BuildError::io("reading", vmlinuz))?;
    let key = part_key("vmm", how, |h| {
        h.update(epoch.0.to_le_bytes());
        h.update(VMM_WINDOW_LOG.to_le_bytes());
        h.update(Sha256::digest(&kernel));
        for (name, _, sha) in pkgs {
            h.update([0]);
            h.update(name);
            h.update(sha);
        }
    });
    let segment = parts.join(format!("vmm-{key}.cpio.zst"));
    if segment.exists() {
        (st.progress)(Progress::Reused("the VMM's root".into()));
        return Ok(segment);
    }
    let tree = root_tree("the VMM's", pkgs)?;
    let files = vmm_files(&tree)?;
    let mut c = CpioBuilder::new(epoch)?;
    for side in [Side::Red, Side::Black] {
        let prefix = format!("personalities/{}/", side.name());
        let mut dirs = std::collections::BTreeSet::new();
        for d in ROOT_DIRS {
            dirs.insert(d.to_string());
        }
        for p in files.keys() {
            let mut acc = String::new();
            for part in p
                .split('/')
                .collect::<Vec<_>>()
                .split_last()
                .map(|x| x.1)
                .unwrap_or(&[])
            {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(part);
                dirs.insert(acc.clone());
            }
        }
        for d in &dirs {
            c.add_dir(&format!("{prefix}{d}"), 0o755)?;
        }
        for (p, entry) in &files {
            let full = format!("{prefix}{p}");
            match entry {
                VmmFile::File(mode, data) => c.add_file(&full, *mode, data.clone())?,
                VmmFile::Symlink(target) => c.add_symlink(&full, target)?,
            }
        }
        c.add_file(
            &format!("{prefix}{}", &GUEST_KERNEL_PATH[1..]),
            0o644,
            kernel.clone(),
        )?;
    }
    let mut archive = Vec::new();
    c.write_grouped_to(&mut archive, side_by_side)?;
    let how = match how {
        Compression::Zstd { level, .. } => Compression::Zstd {
            level,
            window_log: VMM_WINDOW_LOG,
        },
        other => other,
    };
    write_atomic(&segment, &compress_segment(&archive, how)?)?;
    Ok(segment)
}

/// The directories of every VMM's root: the jail's mount points and `vm/`.
const ROOT_DIRS: [&str; 6] = ["dev", "proc", "run", "sys", "tmp", "vm"];

/// A file of a VMM's root.
enum VmmFile {
    File(u32, Vec<u8>),
    Symlink(String),
}

/// `path` inside the tree, following symbolic links (at most 16).
fn follow(tree: &BTreeMap<String, (u32, EntryKind)>, path: &str) -> Option<String> {
    let mut p = path.to_string();
    for _ in 0..16 {
        match tree.get(&p) {
            Some((_, EntryKind::Symlink { target })) => {
                p = if let Some(abs) = target.strip_prefix('/') {
                    abs.to_string()
                } else {
                    let dir = p.rsplit_once('/').map(|x| x.0).unwrap_or("");
                    normalize(&format!("{dir}/{target}"))?
                };
            }
            Some(_) => return Some(p),
            None => return None,
        }
    }
    None
}

/// `a/./b/../c` → `a/c`; `None` when it climbs above the root.
fn normalize(path: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            p => out.push(p),
        }
    }
    Some(out.join("/"))
}

/// Adds `path` (and, if it is a link, the chain to its target) to `out`;
/// returns the resolved file's path.
fn take(
    tree: &BTreeMap<String, (u32, EntryKind)>,
    path: &str,
    out: &mut BTreeMap<String, VmmFile>,
) -> Option<String> {
    let mut p = path.to_string();
    for _ in 0..16 {
        match tree.get(&p)? {
            (_, EntryKind::Symlink { target }) => {
                out.insert(p.clone(), VmmFile::Symlink(target.clone()));
                p = if let Some(abs) = target.strip_prefix('/') {
                    abs.to_string()
                } else {
                    let dir = p.rsplit_once('/').map(|x| x.0).unwrap_or("");
                    normalize(&format!("{dir}/{target}"))?
                };
            }
            (mode, EntryKind::File { data, .. }) => {
                out.insert(p.clone(), VmmFile::File(mode & 0o7777, data.clone()));
                return Some(p);
            }
            (_, EntryKind::Hardlink { target }) => {
                let t = target
                    .trim_start_matches("./")
                    .trim_end_matches('/')
                    .to_string();
                let real = follow(tree, &t)?;
                if let Some((mode, EntryKind::File { data, .. })) = tree.get(&real) {
                    out.insert(p.clone(), VmmFile::File(mode & 0o7777, data.clone()));
                    return Some(p);
                }
                return None;
            }
            (_, EntryKind::Dir { .. }) => return None,
        }
    }
    None
}

/// QEMU, its loader and library closure, and the firmware, from the `vmm`
/// group's files: what a VMM's root holds besides the guest.
fn vmm_files(
    tree: &BTreeMap<String, (u32, EntryKind)>,
) -> Result<BTreeMap<String, VmmFile>, BuildError> {
    let fail = |m: String| BuildError::Binary(format!("the VMM's root: {m}"));
    let mut out = BTreeMap::new();
    let qemu = &QEMU_PATH[1..];
    take(tree, qemu, &mut out).ok_or_else(|| {
        fail(format!(
            "{QEMU_PATH} is not in the packages of the lock's `vmm` group"
        ))
    })?;
    for f in VMM_FIRMWARE {
        take(tree, f, &mut out).ok_or_else(|| {
            fail(format!(
                "/{f} is not in the packages of the lock's `vmm` group"
            ))
        })?;
    }
    let mut queue = vec![qemu.to_string()];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(path) = queue.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let Some(VmmFile::File(_, data)) = out.get(&path) else {
            continue;
        };
        let d = crate::elf::dynamic(data).map_err(|e| fail(format!("/{path}: {e}")))?;
        if let Some(interp) = d.interpreter {
            let real = take(tree, interp.trim_start_matches('/'), &mut out).ok_or_else(|| {
                fail(format!(
                    "/{path} needs the loader {interp}, which no package of the `vmm` group ships"
                ))
            })?;
            queue.push(real);
        }
        for lib in d.needed {
            let found = LIBRARY_DIRS
                .iter()
                .find_map(|dir| take(tree, &format!("{dir}/{lib}"), &mut out));
            match found {
                Some(real) => queue.push(real),
                None => {
                    return Err(fail(format!(
                        "/{path} needs {lib}, which no package of the `vmm` group ships"
                    )))
                }
            }
        }
    }
    Ok(out)
}

/// One side's root: every package's entries, later packages winning on a
/// path conflict (the lock's sorted order, so deterministic).
fn root_tree(
    side: &str,
    pkgs: &Packages,
) -> Result<BTreeMap<String, (u32, EntryKind)>, BuildError> {
    let mut tree: BTreeMap<String, (u32, EntryKind)> = BTreeMap::new();
    for (_, deb_path, _) in pkgs {
        let bytes = std::fs::read(deb_path).map_err(BuildError::io("reading", deb_path))?;
        let deb = Deb::parse(&bytes)
            .map_err(|e| BuildError::Binary(format!("{side} root filesystem: {e}")))?;
        for e in deb.data_entries_where(|p| !pruned(p.trim_start_matches("./")))? {
            let mode = match &e.kind {
                EntryKind::File { mode, .. } | EntryKind::Dir { mode } => *mode,
                _ => 0o777,
            };
            tree.insert(e.path.trim_end_matches('/').to_string(), (mode, e.kind));
        }
    }
    Ok(tree)
}

/// A cached roots part's listing, when it is readable: the part is reused
/// (and the front end told so).
fn reused_listing(listing: &Path, st: &mut Stages<'_>) -> Option<BTreeMap<Side, Shipped>> {
    let shipped = parse_listing(&std::fs::read_to_string(listing).ok()?)?;
    (st.progress)(Progress::Reused("personality root filesystems".into()));
    Some(shipped)
}

/// `<side> d|f <path>` per line.
fn render_listing(shipped: &BTreeMap<Side, Shipped>) -> String {
    let mut out = String::new();
    for (side, s) in shipped {
        for (p, dir) in &s.0 {
            out.push_str(side.name());
            out.push_str(if *dir { " d " } else { " f " });
            out.push_str(p);
            out.push('\n');
        }
    }
    out
}

fn parse_listing(text: &str) -> Option<BTreeMap<Side, Shipped>> {
    let mut out: BTreeMap<Side, Shipped> = BTreeMap::new();
    for line in text.lines() {
        let mut it = line.splitn(3, ' ');
        let side = match it.next()? {
            "red" => Side::Red,
            "black" => Side::Black,
            _ => return None,
        };
        let dir = match it.next()? {
            "d" => true,
            "f" => false,
            _ => return None,
        };
        out.entry(side)
            .or_default()
            .0
            .insert(it.next()?.to_owned(), dir);
    }
    Some(out)
}

/// The gateway init (`/init`), the Viaduct (`viaduct_path`) and, when the
/// policy keys tunnels by IKE, its IKE process (`ike`: bytes and path) as a
/// cached segment, keyed by their digests.
#[allow(clippy::too_many_arguments)]
pub(crate) fn binaries_part(
    parts: &Path,
    init: &[u8],
    viaduct: &[u8],
    viaduct_path: &str,
    ike: Option<(&[u8], &str)>,
    epoch: Epoch,
    how: Compression,
    st: &mut Stages<'_>,
) -> Result<PathBuf, BuildError> {
    let key = part_key("binaries", how, |h| {
        h.update(epoch.0.to_le_bytes());
        h.update(Sha256::digest(init));
        h.update(Sha256::digest(viaduct));
        h.update(viaduct_path);
        if let Some((bin, path)) = ike {
            h.update(b"ike");
            h.update(Sha256::digest(bin));
            h.update(path);
        }
    });
    let segment = parts.join(format!("binaries-{key}.cpio.zst"));
    if segment.exists() {
        (st.progress)(Progress::Reused("gateway binaries".into()));
        return Ok(segment);
    }
    let mut c = CpioBuilder::new(epoch)?;
    c.add_file("init", 0o755, init.to_vec())?;
    c.add_file(viaduct_path, 0o755, viaduct.to_vec())?;
    if let Some((bin, path)) = ike {
        c.add_file(path, 0o755, bin.to_vec())?;
    }
    write_atomic(&segment, &compress_segment(&c.to_vec()?, how)?)?;
    Ok(segment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_round_trips() {
        let mut m = BTreeMap::new();
        m.insert(
            Side::Red,
            Shipped(
                [("bin".to_string(), true), ("bin/a b".to_string(), false)]
                    .into_iter()
                    .collect(),
            ),
        );
        m.insert(Side::Black, Shipped::default());
        let back = parse_listing(&render_listing(&m)).unwrap();
        assert_eq!(back.get(&Side::Red), m.get(&Side::Red));
        assert!(parse_listing("green d x\n").is_none());
    }

    /// An A/B image loads what its boot assessment needs before any driver:
    /// a driver that fails to load still leaves the trial visible.
    #[test]
    fn boot_assessment_modules_come_first() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/lab/gw-a.toml");
        let mut p = profiles::load_profile(&path).unwrap();
        assert_eq!(p.image.slots, profiles::Slots::Ab);
        p.kernel.drivers.push("vfat".into());
        let d = drivers(&p);
        assert_eq!(&d[..4], BOOT_ASSESSMENT_MODULES);
        assert_eq!(d.iter().filter(|m| **m == "vfat").count(), 1);
        assert_eq!(d[4], p.kernel.drivers[0]);
        p.image.slots = profiles::Slots::Single;
        assert!(!drivers(&p).contains(&"efivarfs"));
    }

    /// Under `microvm` the host loads KVM and VFIO, not the drivers of the
    /// cards the guests own nor `tun`; each guest loads virtio and its card's
    /// driver. A card by macvtap keeps its driver on the host.
    #[test]
    fn microvm_moves_the_card_drivers_into_the_guests() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../profiles/lab/microvm/gw-a.toml");
        let mut p = profiles::load_profile(&path).unwrap();
        let host = drivers(&p);
        for m in MICROVM_HOST_MODULES {
            assert!(host.contains(&m), "{m} missing: {host:?}");
        }
        assert!(
            !host.contains(&"e1000e") && !host.contains(&"tun"),
            "{host:?}"
        );
        assert!(!host.contains(&"macvtap"));
        assert!(host.contains(&"virtio_blk") && host.contains(&"tpm_crb"));
        for side in [Side::Red, Side::Black] {
            assert_eq!(
                guest_drivers(&p, side),
                ["virtio_mmio", "virtio_net", "virtio_console", "e1000e"]
            );
        }
        // black's card by macvtap: its driver (shared with red's here) stays
        // out of the host only while some VFIO card uses it.
        for n in &mut p.hardware.nics {
            if n.role == "wan" {
                n.attach = profiles::NicAttach::Macvtap;
                n.driver = "igb".into();
            }
        }
        let host = drivers(&p);
        assert!(
            host.contains(&"macvtap") && host.contains(&"igb"),
            "{host:?}"
        );
        assert!(!host.contains(&"e1000e"));
        assert_eq!(guest_drivers(&p, Side::Black), GUEST_BASE_MODULES);
        // The compartment runtime: the profile's drivers as they are.
        p.appliance.runtime = profiles::Runtime::Compartment;
        let host = drivers(&p);
        assert!(host.contains(&"e1000e") && host.contains(&"tun"));
        assert!(!host.contains(&"kvm_amd"));
    }

    fn file(mode: u32, data: &[u8]) -> (u32, EntryKind) {
        (
            mode,
            EntryKind::File {
                mode,
                data: data.to_vec(),
            },
        )
    }

    fn link(target: &str) -> (u32, EntryKind) {
        (
            0o777,
            EntryKind::Symlink {
                target: target.into(),
            },
        )
    }

    /// The VMM's root takes QEMU, the firmware and the chains of links to
    /// them; a missing piece is named.
    #[test]
    fn vmm_files_follow_links_and_name_what_is_missing() {
        let mut tree: BTreeMap<String, (u32, EntryKind)> = BTreeMap::new();
        tree.insert("usr/bin/qemu-system-x86_64".into(), file(0o755, b"not elf"));
        let e = match vmm_files(&tree) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        assert!(
            e.contains("/usr/share/qemu/bios-microvm.bin is not in the packages"),
            "{e}"
        );
        for f in VMM_FIRMWARE {
            tree.insert(f.into(), file(0o644, b"rom"));
        }
        let e = match vmm_files(&tree) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        assert!(
            e.contains("usr/bin/qemu-system-x86_64: not an ELF file"),
            "{e}"
        );
        let ls = std::fs::read("/bin/ls").unwrap();
        tree.insert("usr/bin/qemu-system-x86_64".into(), file(0o755, &ls));
        for f in VMM_FIRMWARE {
            tree.insert(f.into(), file(0o644, b"rom"));
        }
        tree.insert("usr/share/qemu/bios-microvm.bin".into(), link("qboot.rom"));
        let e = match vmm_files(&tree) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        assert!(
            e.contains("needs the loader /lib64/ld-linux-x86-64.so.2"),
            "{e}"
        );
        // The loader by an absolute link, libraries by relative ones.
        tree.insert(
            "lib64/ld-linux-x86-64.so.2".into(),
            link("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        );
        tree.insert(
            "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into(),
            file(
                0o755,
                &std::fs::read("/lib64/ld-linux-x86-64.so.2").unwrap(),
            ),
        );
        let needed = crate::elf::dynamic(&ls).unwrap().needed;
        for lib in &needed {
            let real = std::fs::read(format!("/lib/x86_64-linux-gnu/{lib}")).unwrap();
            tree.insert(
                format!("usr/lib/x86_64-linux-gnu/{lib}.1.2"),
                file(0o644, &real),
            );
            tree.insert(
                format!("usr/lib/x86_64-linux-gnu/{lib}"),
                link(&format!("./../x86_64-linux-gnu/{lib}.1.2")),
            );
        }
        let mut missing = String::new();
        let files = loop {
            match vmm_files(&tree) {
                Ok(f) => break f,
                // Libraries the libraries need (libselinux → libpcre2 …).
                Err(e) => {
                    let m = e.to_string();
                    let lib = m
                        .split(" needs ")
                        .nth(1)
                        .and_then(|r| r.split(',').next())
                        .unwrap_or_else(|| panic!("{m}"))
                        .to_string();
                    assert_ne!(lib, missing, "{m}");
                    let real = std::fs::read(format!("/lib/x86_64-linux-gnu/{lib}")).unwrap();
                    tree.insert(format!("lib/x86_64-linux-gnu/{lib}"), file(0o644, &real));
                    missing = lib;
                }
            }
        };
        assert!(matches!(
            files.get("usr/share/qemu/bios-microvm.bin"),
            Some(VmmFile::Symlink(t)) if t == "qboot.rom"
        ));
        assert!(matches!(
            files.get("lib64/ld-linux-x86-64.so.2"),
            Some(VmmFile::Symlink(_))
        ));
        for lib in &needed {
            assert!(files.contains_key(&format!("usr/lib/x86_64-linux-gnu/{lib}")));
            assert!(matches!(
                files.get(&format!("usr/lib/x86_64-linux-gnu/{lib}.1.2")),
                Some(VmmFile::File(0o644, _))
            ));
        }
        // Nothing it does not need.
        tree.insert("usr/bin/qemu-img".into(), file(0o755, b"x"));
        assert!(!vmm_files(&tree).unwrap().contains_key("usr/bin/qemu-img"));
        assert_eq!(normalize("a/./b/../c"), Some("a/c".into()));
        assert_eq!(normalize("../x"), None);
    }

    #[test]
    fn pruned_paths() {
        assert!(pruned("usr/share/doc"));
        assert!(pruned("usr/share/doc/x/copyright"));
        assert!(!pruned("usr/share/docs"));
        assert!(!pruned("usr/lib/x"));
    }
}
