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
    /// Both root filesystems, one segment.
    pub personalities: PersonalitiesPart,
    /// The binaries' segment.
    pub binaries: PathBuf,
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
    let personalities = personalities_part(&parts, &sides, epoch, how, st)?;
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
    })
}

/// How every initramfs segment is compressed: zstd at level 12 with an
/// 8 MiB window. Measured under emulation (docs/design/image-size.md), it
/// boots as fast as level 19 and faster than xz, for a UKI 7 % larger than
/// level 19's, and makes the parts three times faster.
pub const COMPRESSION: Compression = Compression::Zstd {
    level: 12,
    window_log: MAX_ZSTD_WINDOW_LOG,
};

/// Version of the part-cache key derivation; bump to invalidate old parts.
const PARTS_VERSION: &str = "parts-v3";

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
}

/// The modules an A/B image needs besides the profile's drivers: the
/// init reads the boot loader's variables (efivarfs) and renames the trial
/// entry on the ESP (vfat, with code page 437 and ASCII names). The disk's
/// own driver (virtio_blk, ahci and sd_mod, nvme, …) is the profile's to name.
pub(crate) const BOOT_ASSESSMENT_MODULES: [&str; 4] =
    ["efivarfs", "vfat", "nls_cp437", "nls_ascii"];

/// What an A/B image's boot chain needs, then the profile's drivers: the
/// boot-assessment modules come first, so that a driver that fails to load
/// (a broken update) still leaves the init able to see its trial and reboot.
fn drivers(profile: &Profile) -> Vec<&str> {
    let mut v: Vec<&str> = Vec::new();
    if profile.image.slots == profiles::Slots::Ab {
        v.extend(BOOT_ASSESSMENT_MODULES);
    }
    for d in &profile.kernel.drivers {
        if !v.contains(&d.as_str()) {
            v.push(d);
        }
    }
    v
}

/// Kernel image and the profile's modules (with dependencies), keyed by the
/// kernel package digest and the driver list.
pub(crate) fn kernel_part(
    parts: &Path,
    deb: &Path,
    deb_sha: &str,
    profile: &Profile,
    how: Compression,
    st: &mut Stages<'_>,
) -> Result<KernelPart, BuildError> {
    let all = drivers(profile);
    let key = part_key("kernel", how, |h| {
        h.update(deb_sha);
        for d in &all {
            h.update([0]);
            h.update(d);
        }
    });
    let segment = parts.join(format!("kernel-{key}.cpio.zst"));
    let vmlinuz = parts.join(format!("kernel-{key}.vmlinuz"));
    let meta = parts.join(format!("kernel-{key}.meta"));
    if segment.exists() && vmlinuz.exists() && meta.exists() {
        let text = std::fs::read_to_string(&meta).map_err(BuildError::io("reading", &meta))?;
        let mut lines = text.lines();
        if let Some(version) = lines.next() {
            (st.progress)(Progress::Reused(format!("kernel {version}")));
            return Ok(KernelPart {
                segment,
                vmlinuz,
                version: version.to_string(),
                modules: lines.map(str::to_string).collect(),
            });
        }
    }
    let bytes = std::fs::read(deb).map_err(BuildError::io("reading", deb))?;
    let deb = Deb::parse(&bytes)?;
    let tree = KernelTree::from_deb(&deb)?;
    let res = match tree.resolve(&all) {
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
                message: format!("driver `{name}` is not in kernel {kver}: no module or built-in of that name{hint}"),
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
    write_atomic(&segment, &compress_segment(&c.to_vec()?, how)?)?;
    write_atomic(&vmlinuz, tree.image())?;
    let mut m = format!("{}\n", tree.version());
    for p in &modules {
        m.push_str(p);
        m.push('\n');
    }
    write_atomic(&meta, m.as_bytes())?;
    Ok(KernelPart {
        segment,
        vmlinuz,
        version: tree.version().to_string(),
        modules,
    })
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

/// Both personalities' root filesystems as one compressed segment.
pub(crate) struct PersonalitiesPart {
    /// The compressed segment.
    pub segment: PathBuf,
    /// What each side's packages ship.
    pub shipped: BTreeMap<Side, Shipped>,
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
    let key = part_key("personalities", how, |h| {
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
    });
    let segment = parts.join(format!("personalities-{key}.cpio.zst"));
    let listing = parts.join(format!("personalities-{key}.paths"));
    if segment.exists() {
        if let Some(shipped) = std::fs::read_to_string(&listing)
            .ok()
            .and_then(|t| parse_listing(&t))
        {
            (st.progress)(Progress::Reused("personality root filesystems".into()));
            return Ok(PersonalitiesPart { segment, shipped });
        }
    }
    let mut c = CpioBuilder::new(epoch)?;
    let mut shipped = BTreeMap::new();
    for (side, pkgs) in sides {
        let tree = root_tree(side.name(), pkgs)?;
        let prefix = format!("personalities/{}", side.name());
        let mut paths = BTreeMap::new();
        for (p, (mode, kind)) in &tree {
            if p.is_empty() || p == "." {
                continue;
            }
            let full = format!("{prefix}/{p}");
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
                            "{} root filesystem: hard link {p} -> {target} has no regular target",
                            side.name()
                        )))
                    }
                },
            }
            paths.insert(p.clone(), matches!(kind, EntryKind::Dir { .. }));
        }
        shipped.insert(*side, Shipped(paths));
    }
    let mut archive = Vec::new();
    c.write_grouped_to(&mut archive, |path| {
        // `personalities/<side>/<rest>` → (`<rest>`, side): copies adjacent.
        let mut it = path.splitn(3, '/');
        let (_, side, rest) = (it.next(), it.next(), it.next());
        (
            rest.unwrap_or(path).to_owned(),
            side.unwrap_or("").to_owned(),
        )
    })?;
    write_atomic(&segment, &compress_segment(&archive, how)?)?;
    write_atomic(&listing, render_listing(&shipped).as_bytes())?;
    Ok(PersonalitiesPart { segment, shipped })
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

    #[test]
    fn pruned_paths() {
        assert!(pruned("usr/share/doc"));
        assert!(pruned("usr/share/doc/x/copyright"));
        assert!(!pruned("usr/share/docs"));
        assert!(!pruned("usr/lib/x"));
    }
}
