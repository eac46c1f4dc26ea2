//! The build itself. See the crate docs for the invariants.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use components::{AptContext, Cache, Deb, EntryKind, Lock, LockChange};
use images::ab::{ApplianceLayout, DiskIds, Slot};
use images::cpio::CpioBuilder;
use images::initramfs::Compression;
use images::{ByteLen, Content, Epoch};
use profiles::{Personality, Profile, Side, Slots};
use sha2::{Digest, Sha256};

use crate::locking::{self, LockPolicy, STUB_PACKAGE};
use crate::manifest::{self, Manifest};
use crate::parts::{self, Shipped};
use crate::{disk, elf, render, BuildError};

/// Where systemd-boot-efi puts the stub.
const STUB_PATH: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// Where the Viaduct binary lives in the initramfs.
const VIADUCT_PATH: &str = "/usr/sbin/viaduct";
const IKE_PATH: &str = "/usr/sbin/viaduct-ike";
/// A personality's network setup program, inside its root.
const NETWORK_SETUP: &str = "/etc/appliance/network";
/// The hooks of the DHCP client (`dhcp = true`), inside the personality's root.
const UDHCPC_SCRIPT: &str = "/etc/appliance/udhcpc.script";
/// Name of the DHCP client service added for `dhcp = true`.
const DHCP_SERVICE: &str = "dhcp";

/// What to build and where.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The profile file.
    pub profile: PathBuf,
    /// Output directory (replaced atomically).
    pub out: PathBuf,
    /// Write `disk.qcow2` too (overrides the profile's `formats` when `Some`).
    pub qcow2: Option<bool>,
    /// Cache root: `debs/` (packages by SHA-256), `parts/` (assembled parts), `apt/` (private apt state).
    pub cache_dir: PathBuf,
    /// Directory holding the static gateway binaries (`gateway-init` and `viaduct`).
    pub bin_dir: PathBuf,
    /// How the lock file is used (see [`crate::locking`]).
    pub lock: LockPolicy,
    /// How the initramfs segments are compressed (`None`: [`crate::COMPRESSION`];
    /// other settings exist for measuring boot times).
    pub compression: Option<Compression>,
    /// Sign `manifest.json` with this key (writes `manifest.sig`).
    pub signing_key: Option<std::sync::Arc<signing::SigningKey>>,
    /// Sign the UKI for UEFI Secure Boot.
    pub secure_boot: Option<std::sync::Arc<dyn SecureBootSigner>>,
}

/// Signs a UKI with Authenticode for UEFI Secure Boot and describes the
/// firmware state that accepts it (implemented by the CLI on top of the
/// `secureboot` crate, so this crate stays free of X.509 code).
pub trait SecureBootSigner: std::fmt::Debug + Send + Sync {
    /// The signed image.
    fn sign(&self, uki: &[u8]) -> Result<Vec<u8>, String>;
    /// The signer: certificate SHA-256 and subject.
    fn signer(&self) -> manifest::SecureBootInfo;
    /// The Secure Boot variables of firmware enrolled with our certificate.
    fn variables(&self) -> secureboot::varstore::EnrolledVariables;
}

/// Progress events for the front end.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A stage starts.
    Stage(&'static str),
    /// The package indices are being refreshed from Debian's archive.
    Refreshing,
    /// The build moves the lock file: `changes` lists each package whose
    /// version changes (empty when the lock file is new). The file is written
    /// once the image is in place.
    LockMoves {
        /// The lock file.
        lock: PathBuf,
        /// Whether there was no lock file before.
        created: bool,
        /// Each package that changes.
        changes: Vec<LockChange>,
    },
    /// Package fetching progress.
    Fetch(components::Event),
    /// A cached part was reused (name).
    Reused(String),
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The output directory.
    pub out: PathBuf,
    /// The manifest written there.
    pub manifest: Manifest,
    /// The lock file the build used.
    pub lock: PathBuf,
    /// `Some` when the build wrote the lock file: each package that changed
    /// (empty when the file is new).
    pub lock_written: Option<Vec<LockChange>>,
    /// Wall-clock seconds per stage (not part of any output file).
    pub durations: Vec<(String, f64)>,
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn hexd(d: &[u8; 32]) -> String {
    hex::encode(d)
}

pub(crate) struct Stages<'a> {
    durations: Vec<(String, f64)>,
    last: Instant,
    pub(crate) progress: &'a mut dyn FnMut(Progress),
}

impl Stages<'_> {
    fn start(&mut self, name: &'static str) {
        self.finish();
        self.durations.push((name.to_string(), 0.0));
        (self.progress)(Progress::Stage(name));
    }
    fn finish(&mut self) {
        let now = Instant::now();
        if let Some(last) = self.durations.last_mut() {
            last.1 += now.duration_since(self.last).as_secs_f64();
        }
        self.last = now;
    }
}

/// Builds the image. See the crate docs.
pub fn build(
    opts: &BuildOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<BuildOutput, BuildError> {
    let mut st = Stages {
        durations: Vec::new(),
        last: Instant::now(),
        progress,
    };
    st.start("profile");
    let profile = profiles::load_profile(&opts.profile)?;
    let policy = policy::compile(&profile)?;
    let policy_bytes = policy.encode();
    let policy_digest = sha256(&policy_bytes);
    // Gateway binaries: checked before any slow work.
    let init = read_static_binary(&opts.bin_dir.join("gateway-init"))?;
    let viaduct = read_static_binary(&opts.bin_dir.join("viaduct"))?;
    // The IKE process only in images whose policy keys tunnels by IKE.
    let ike_bin = match policy.ike {
        Some(_) => Some(read_static_binary(&opts.bin_dir.join("viaduct-ike"))?),
        None => None,
    };

    st.start("lock");
    let apt = AptContext::new(&opts.cache_dir.join("apt"))?;
    let cache = Cache::new(&opts.cache_dir.join("debs"))?;
    if !opts.lock.is_locked() && apt.needs_refresh(opts.lock.refresh) {
        (st.progress)(Progress::Refreshing);
    }
    let mut resolved = locking::resolve(&opts.profile, &profile, &opts.lock, &apt)?;
    if let Some(changes) = &resolved.update {
        (st.progress)(Progress::LockMoves {
            lock: resolved.path.clone(),
            created: resolved.created,
            changes: changes.clone(),
        });
    }

    st.start("fetch");
    let fetch = |lock: &Lock, progress: &mut dyn FnMut(Progress)| {
        components::fetch_from(
            &lock.packages,
            &cache,
            &apt,
            &opts.lock.snapshots,
            &mut |e| progress(Progress::Fetch(e)),
        )
    };
    let fetched = match fetch(&resolved.lock, &mut *st.progress) {
        Ok(f) => f,
        // The archive moved on since the indices were read: refresh them and
        // resolve again, once.
        Err(components::Error::AptFailed { .. } | components::Error::VersionsGone(_))
            if !opts.lock.is_locked() =>
        {
            let again = LockPolicy {
                refresh: components::Refresh::Always,
                ..opts.lock.clone()
            };
            (st.progress)(Progress::Refreshing);
            let old = resolved;
            resolved = locking::resolve(&opts.profile, &profile, &again, &apt)?;
            if resolved.update != old.update {
                if let Some(changes) = &resolved.update {
                    (st.progress)(Progress::LockMoves {
                        lock: resolved.path.clone(),
                        created: resolved.created,
                        changes: changes.clone(),
                    });
                }
            }
            fetch(&resolved.lock, &mut *st.progress)?
        }
        Err(e) => return Err(locking::gone_error(&resolved, e)),
    };
    let lock = &resolved.lock;
    let lock_path = &resolved.path;
    let epoch = Epoch(lock.source_date_epoch.0);
    let deb_path = |name: &str| -> Result<PathBuf, BuildError> {
        fetched
            .path(name)
            .map(Path::to_path_buf)
            .ok_or_else(|| BuildError::LockMismatch {
                lock: lock_path.clone(),
                profile: opts.profile.clone(),
                what: format!("package {name} is not in the lock"),
            })
    };
    let how = opts.compression.unwrap_or(parts::COMPRESSION);
    let parts = opts.cache_dir.join("parts");
    std::fs::create_dir_all(&parts).map_err(BuildError::io("creating", &parts))?;

    st.start("kernel");
    let kernel_pkg = lock
        .group_packages("kernel")
        .into_iter()
        .find(|p| {
            p.name
                .as_str()
                .strip_prefix("linux-image-")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .ok_or_else(|| BuildError::LockMismatch {
            lock: lock_path.clone(),
            profile: opts.profile.clone(),
            what: format!(
                "the kernel group has no linux-image-<version> package (from {})",
                profile.kernel.package
            ),
        })?
        .clone();
    let kernel = parts::kernel_part(
        &parts,
        &deb_path(kernel_pkg.name.as_str())?,
        &kernel_pkg.sha256.to_hex(),
        &profile,
        how,
        &mut st,
    )?;

    st.start("rootfs");
    let sides = [Side::Red, Side::Black]
        .into_iter()
        .map(|side| {
            let pkgs = lock
                .group_packages(side.name())
                .into_iter()
                .map(|p| {
                    Ok((
                        p.name.as_str().to_string(),
                        deb_path(p.name.as_str())?,
                        p.sha256.to_hex(),
                    ))
                })
                .collect::<Result<parts::Packages, BuildError>>()?;
            Ok((side, pkgs))
        })
        .collect::<Result<Vec<_>, BuildError>>()?;
    let personalities = parts::personalities_part(&parts, &sides, epoch, how, &mut st)?;
    let binaries = parts::binaries_part(
        &parts,
        &init,
        &viaduct,
        VIADUCT_PATH,
        ike_bin.as_deref().map(|b| (b, IKE_PATH)),
        epoch,
        how,
        &mut st,
    )?;

    st.start("initramfs");
    let plan = make_plan(
        &profile,
        &policy_digest,
        &manual_key_uses(&policy),
        ike_credentials(&policy).as_deref(),
        &kernel.modules,
    )?;
    let plan_bytes = plan.encode();
    let plan_digest = plan.digest();
    let osrel = render::render(
        "os-release",
        serde_json::json!({
            "name": profile.appliance.name, "version": profile.appliance.version,
            "security_version": profile.appliance.security_version, "policy_digest": hexd(&policy_digest),
        }),
    )?;
    // The cached segments come first (see `parts`); the configuration
    // segment comes last, so its entries override the packages' when the
    // kernel unpacks the initramfs.
    let mut initramfs = Vec::new();
    for seg in [&kernel.segment, &personalities.segment, &binaries] {
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
    base.add_file(gateway_plan::PLAN_PATH, 0o444, plan_bytes.clone())?;
    base.add_file("etc/appliance/policy.bin", 0o400, policy_bytes.clone())?;
    base.add_file("etc/os-release", 0o444, osrel.clone().into_bytes())?;
    base.add_file(
        "personalities/red/etc/dnsmasq.conf",
        0o444,
        dnsmasq_conf(&profile)?.into_bytes(),
    )?;
    for side in [Side::Red, Side::Black] {
        let files = personalities
            .shipped
            .get(&side)
            .cloned()
            .unwrap_or_default();
        for (path, entry) in personality_root(&profile, side, &files)? {
            let full = format!("personalities/{}/{path}", side.name());
            match entry {
                RootEntry::Dir(mode) => base.add_dir(&full, mode)?,
                RootEntry::File(mode, bytes) => base.add_file(&full, mode, bytes)?,
                RootEntry::Symlink(target) => base.add_symlink(&full, target)?,
            }
        }
    }
    initramfs.extend(parts::compress_segment(&base.to_vec()?, how)?);
    let initramfs_digest = sha256(&initramfs);
    let initramfs_len = initramfs.len() as u64;

    st.start("uki");
    let stub = {
        let bytes = std::fs::read(deb_path(STUB_PACKAGE)?)
            .map_err(BuildError::io("reading", STUB_PACKAGE))?;
        let deb = Deb::parse(&bytes)?;
        let entries = deb.data_entries_where(|p| p == STUB_PATH)?;
        match entries.into_iter().next().map(|e| e.kind) {
            Some(EntryKind::File { data, .. }) => data,
            _ => {
                return Err(BuildError::Binary(format!(
                    "{STUB_PACKAGE} has no {STUB_PATH}"
                )))
            }
        }
    };
    let mut cmdline = format!(
        "console=ttyS0 panic=-1 appliance.plan={}",
        plan_digest.to_hex()
    );
    for w in &profile.kernel.cmdline {
        cmdline.push(' ');
        cmdline.push_str(w);
    }
    let kernel_image =
        std::fs::read(&kernel.vmlinuz).map_err(BuildError::io("reading", &kernel.vmlinuz))?;
    let mut uki_b = images::pe::UkiBuilder::new(stub.clone());
    uki_b
        .osrel(osrel.into_bytes())?
        .cmdline(cmdline.clone().into_bytes())?
        .uname(kernel.version.clone().into_bytes())?
        .linux(kernel_image.clone())?
        .initrd(initramfs)?;
    let mut uki = uki_b.build()?;
    if let Some(sb) = &opts.secure_boot {
        uki = sb
            .sign(&uki)
            .map_err(|e| BuildError::SecureBoot(format!("Secure Boot signing: {e}")))?;
    }
    let uki_digest = sha256(&uki);
    let authenticode = images::pe::authenticode_sha256(&uki)?;
    let pe = images::pe::PeFile::parse(&uki)?;
    let sections: Vec<manifest::Section> = [".osrel", ".cmdline", ".uname", ".linux", ".initrd"]
        .iter()
        .filter_map(|n| {
            let s = pe.section(n)?;
            Some(manifest::Section {
                name: n.to_string(),
                size: u64::from(s.virtual_size),
                sha256: hexd(&sha256(&pe.memory_data(s))),
            })
        })
        .collect();

    st.start("disk");
    let out_parent = match opts.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&out_parent).map_err(BuildError::io("creating", &out_parent))?;
    let name = opts
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = out_parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(BuildError::io("creating output directory", &tmp))?;
    let guard = TmpDir(tmp.clone());

    let uki_content = Content::from(uki.clone());
    let layout = ApplianceLayout {
        ids: DiskIds::derive(&uki_digest),
        esp_size: ByteLen(profile.image.esp_size.0),
        state_size: None,
        timestamp: epoch,
        active: Slot::A,
        uki_a: Some(uki_content.clone()),
        uki_b: (profile.image.slots == Slots::Ab).then(|| uki_content.clone()),
    };
    let disk_path = tmp.join("disk.img");
    let disk = disk::write_disk(&layout, ByteLen(profile.image.size.0), &disk_path)
        .map_err(|e| esp_too_small(e, &profile, uki.len() as u64, &layout))?;
    write_file(&tmp.join("uki.efi"), &uki)?;
    let mut outputs = BTreeMap::new();
    outputs.insert("disk.img".to_string(), hexd(&disk.sha256));
    outputs.insert("uki.efi".to_string(), hexd(&uki_digest));
    if opts.qcow2.unwrap_or(profile.image.qcow2) {
        st.start("qcow2");
        let q = tmp.join("disk.qcow2");
        images::qcow2::convert_raw_to_qcow2(&disk_path, &q)?;
        outputs.insert(
            "disk.qcow2".to_string(),
            hexd(&components::cache::hash_file(&q)?.0),
        );
    }

    st.start("manifest");
    let prediction = signing::measure::predict(
        &uki,
        opts.secure_boot.as_ref().map(|s| s.variables()).as_ref(),
    )
    .map_err(|e| BuildError::Binary(format!("PCR prediction: {e}")))?;
    let reference = signing::measure::ReferenceValues::new(
        &profile.appliance.name,
        &profile.appliance.version,
        profile.appliance.security_version,
        &hexd(&authenticode),
        &prediction,
    )
    .to_json();
    write_file(&tmp.join(signing::verify::REFERENCE_VALUES), &reference)?;
    outputs.insert(
        signing::verify::REFERENCE_VALUES.to_string(),
        hexd(&sha256(&reference)),
    );
    let manifest = Manifest {
        format: manifest::FORMAT,
        profile: manifest::ProfileInfo {
            name: profile.appliance.name.clone(),
            version: profile.appliance.version.clone(),
            security_version: profile.appliance.security_version,
            lab: profile.appliance.lab,
            sha256: hexd(&profile_digest(&profile)?),
        },
        lock: manifest::LockInfo {
            sha256: lock.digest().to_hex(),
            source_date_epoch: lock.source_date_epoch.0,
        },
        policy: manifest::Digested {
            sha256: hexd(&policy_digest),
            size: policy_bytes.len() as u64,
        },
        plan: manifest::Digested {
            sha256: plan_digest.to_hex(),
            size: plan_bytes.len() as u64,
        },
        components: lock
            .groups
            .iter()
            .flat_map(|g| {
                g.packages
                    .iter()
                    .filter_map(|n| lock.package(n.as_str()))
                    .map(|p| manifest::Component {
                        group: g.name.clone(),
                        name: p.name.as_str().to_string(),
                        version: p.version.to_string(),
                        architecture: p.architecture.clone(),
                        sha256: p.sha256.to_hex(),
                    })
            })
            .collect(),
        kernel: manifest::KernelInfo {
            version: kernel.version.clone(),
            package: kernel_pkg.name.as_str().to_string(),
            image_sha256: hexd(&sha256(&kernel_image)),
            modules: kernel.modules.clone(),
        },
        binaries: {
            let mut b = BTreeMap::new();
            b.insert("gateway-init".to_string(), hexd(&sha256(&init)));
            b.insert("viaduct".to_string(), hexd(&sha256(&viaduct)));
            if let Some(ike) = &ike_bin {
                b.insert("viaduct-ike".to_string(), hexd(&sha256(ike)));
            }
            b
        },
        initramfs: manifest::Digested {
            sha256: hexd(&initramfs_digest),
            size: initramfs_len,
        },
        uki: manifest::UkiInfo {
            sha256: hexd(&uki_digest),
            authenticode_sha256: hexd(&authenticode),
            size: uki.len() as u64,
            cmdline,
            sections,
        },
        esp: disk.esp,
        disk: manifest::DiskInfo {
            sha256: hexd(&disk.sha256),
            size: profile.image.size.0,
            guid: disk_guid(&layout),
            partitions: disk.partitions,
        },
        build_epoch: lock.source_date_epoch.0,
        pcrs: prediction.summary(),
        secure_boot: opts.secure_boot.as_ref().map(|s| s.signer()),
        outputs,
    };
    let json = manifest.to_json();
    write_file(&tmp.join(signing::verify::MANIFEST), &json)?;
    if let Some(key) = &opts.signing_key {
        write_file(&tmp.join(signing::verify::SIGNATURE), &key.sign(&json))?;
    }

    st.start("commit");
    replace_dir(&tmp, &opts.out)?;
    guard.disarm();
    // The lock records what was built: written only now, once the image is
    // in place.
    if resolved.update.is_some() {
        resolved
            .lock
            .save(&resolved.path)
            .map_err(|e| BuildError::LockUnreadable {
                lock: resolved.path.clone(),
                message: format!(
                    "the image is in {}, but its lock could not be written: {e}",
                    opts.out.display()
                ),
            })?;
    }
    st.finish();
    Ok(BuildOutput {
        out: opts.out.clone(),
        manifest,
        lock: resolved.path.clone(),
        lock_written: resolved.update.clone(),
        durations: st.durations,
    })
}

/// An ESP that cannot hold the UKIs of this build, as a located profile error.
fn esp_too_small(
    e: BuildError,
    profile: &Profile,
    uki_len: u64,
    layout: &ApplianceLayout,
) -> BuildError {
    let BuildError::Image(images::Error::FatDoesNotFit { suggested_size, .. }) = e else {
        return e;
    };
    let copies = 1 + usize::from(layout.uki_a.is_some()) + usize::from(layout.uki_b.is_some());
    let mib = |b: u64| b.div_ceil(1 << 20);
    let location = profiles::find_in_sources(profile, "esp_size")
        .map(|(f, l, c)| format!("{}:{l}:{c}: ", f.display()))
        .unwrap_or_default();
    BuildError::EspTooSmall {
        location,
        message: format!(
            "{} MiB cannot hold this image's boot files: the UKI ({:.1} MiB) is stored {} (the firmware's default boot path{}); give at least esp_size = \"{}MiB\"",
            mib(profile.image.esp_size.0),
            uki_len as f64 / f64::from(1u32 << 20),
            if copies == 3 { "three times" } else { "twice" },
            if copies == 3 { " and slots A and B" } else { " and slot A" },
            mib(suggested_size),
        ),
    }
}

fn disk_guid(l: &ApplianceLayout) -> String {
    l.ids.disk.to_string()
}

/// Removes a temporary directory unless disarmed.
struct TmpDir(PathBuf);

impl TmpDir {
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Puts `tmp` in place of `out`: an atomic exchange when `out` exists (then
/// the old output is removed), a rename otherwise.
fn replace_dir(tmp: &Path, out: &Path) -> Result<(), BuildError> {
    if out.exists() {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            tmp,
            rustix::fs::CWD,
            out,
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .map_err(|e| BuildError::Io {
            action: "replacing",
            path: out.to_path_buf(),
            source: e.into(),
        })?;
        // `tmp` now holds the previous output.
        std::fs::remove_dir_all(tmp)
            .map_err(BuildError::io("removing the previous output", tmp))?;
    } else {
        std::fs::rename(tmp, out).map_err(BuildError::io("renaming into place", out))?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let mut f = std::fs::File::create(path).map_err(BuildError::io("creating", path))?;
    f.write_all(bytes)
        .map_err(BuildError::io("writing", path))?;
    f.sync_all().map_err(BuildError::io("writing", path))
}

/// SHA-256 over the SHA-256 of each source file of the profile, in order
/// (the profile first, then its bases): independent of where the files are.
fn profile_digest(p: &Profile) -> Result<[u8; 32], BuildError> {
    let mut h = Sha256::new();
    for f in &p.files {
        let bytes = std::fs::read(f).map_err(BuildError::io("reading", f))?;
        h.update(sha256(&bytes));
    }
    Ok(h.finalize().into())
}

/// A gateway binary (all are required), checked to be static.
fn read_static_binary(path: &Path) -> Result<Vec<u8>, BuildError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return Err(BuildError::Binary(format!(
                "{}: {e}; build the gateway binaries first: scripts/build-gateway-bins (or set --bin-dir)",
                path.display()
            )))
        }
    };
    elf::check_static(&bytes).map_err(|why| {
        BuildError::Binary(format!(
            "{name} ({}) cannot run on the gateway: {why}; build it with scripts/build-gateway-bins (static)",
            path.display()
        ))
    })?;
    Ok(bytes)
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    write_file(&tmp, bytes)?;
    std::fs::rename(&tmp, path).map_err(BuildError::io("renaming into place", path))
}

/// Appends a file's bytes to `out`.
fn append_file(out: &mut Vec<u8>, path: &Path) -> Result<(), BuildError> {
    let mut f = std::fs::File::open(path).map_err(BuildError::io("reading", path))?;
    std::io::copy(&mut f, out).map_err(BuildError::io("reading", path))?;
    Ok(())
}

/// First host uid/gid of each personality's user namespace (65536 ids each).
fn uid_base(side: Side) -> u32 {
    match side {
        Side::Red => 100_000,
        Side::Black => 200_000,
    }
}

fn personality(profile: &Profile, side: Side) -> &Personality {
    match side {
        Side::Red => &profile.red,
        Side::Black => &profile.black,
    }
}

/// A gateway validator's complaint about the profile value at `field`
/// (a profile path such as `personalities.red.services[0].capabilities[1]`).
fn at(field: impl Into<String>) -> impl FnOnce(gateway_plan::Error) -> BuildError {
    let field = field.into();
    move |e| BuildError::Plan(format!("{field}: {e}"))
}

/// The key-use records of the policy's manual keys, for the plan's `manual-key`
/// lines: the init records them in the TPM before the Viaduct installs the keys, and
/// never lets them be installed twice (the init's `keyledger`).
fn manual_key_uses(policy: &policy_blob::Policy) -> Vec<gateway_plan::keyuse::KeyUse> {
    policy
        .manual_key_uses()
        .as_slice()
        .iter()
        .map(|u| gateway_plan::keyuse::KeyUse(u.0))
        .collect()
}

/// For a policy that keys tunnels by IKE: the names of the device credentials
/// (`tpm:<name>`) its IKE process needs, ascending, once each (the plan's
/// `ike-credential` lines; the init hands them over). `None` without IKE.
fn ike_credentials(policy: &policy_blob::Policy) -> Option<Vec<String>> {
    use policy_blob::{Credential, IkeAuth};
    let ike = policy.ike.as_ref()?;
    let mut names: Vec<String> = ike
        .private_key
        .iter()
        .chain(ike.peers.iter().filter_map(|p| match &p.auth {
            IkeAuth::Psk(c) => Some(c),
            IkeAuth::Ed25519 { .. } => None,
        }))
        .filter_map(|c| match c {
            Credential::Device(name) => Some(name.clone()),
            Credential::Lab(_) => None,
        })
        .collect();
    names.sort();
    names.dedup();
    Some(names)
}

/// The runtime plan (see `gateway_plan`) for the profile.
fn make_plan(
    profile: &Profile,
    policy_digest: &[u8; 32],
    manual_keys: &[gateway_plan::keyuse::KeyUse],
    ike_credentials: Option<&[String]>,
    modules: &[String],
) -> Result<gateway_plan::Plan, BuildError> {
    use gateway_plan::*;
    let e = |e: gateway_plan::Error| BuildError::Plan(e.to_string());
    let plan = Plan {
        profile_name: ProfileName::new(&profile.appliance.name).map_err(at("appliance.name"))?,
        profile_version: ProfileVersion::new(&profile.appliance.version)
            .map_err(at("appliance.version"))?,
        security_version: SecurityVersion(
            u32::try_from(profile.appliance.security_version).map_err(|_| {
                BuildError::Plan(format!(
                    "appliance.security_version: {} is larger than the gateway supports (2^32-1)",
                    profile.appliance.security_version
                ))
            })?,
        ),
        policy_path: InitramfsPath::new("/etc/appliance/policy.bin").map_err(e)?,
        policy_sha256: gateway_plan::digest::Sha256Digest(*policy_digest),
        manual_keys: manual_keys.to_vec(),
        modules: modules
            .iter()
            .map(|m| ModulePath::new(m))
            .collect::<Result<_, _>>()
            .map_err(e)?,
        compartments: [profiles::Side::Red, profiles::Side::Black]
            .into_iter()
            .map(|side| compartment_plan(profile, side))
            .collect::<Result<_, _>>()?,
        viaduct: InitramfsPath::new(VIADUCT_PATH).map_err(e)?,
        ike: match ike_credentials {
            None => None,
            Some(names) => Some(IkePlan {
                binary: InitramfsPath::new(IKE_PATH).map_err(e)?,
                credentials: names
                    .iter()
                    .map(|n| CredentialName::new(n))
                    .collect::<Result<_, _>>()
                    .map_err(e)?,
            }),
        },
    };
    // The init refuses a plan it cannot decode and stays closed: find out here.
    match Plan::decode(&plan.encode()) {
        Ok(decoded) if decoded == plan => Ok(plan),
        Ok(_) => Err(BuildError::Plan(
            "the encoded plan decodes to a different plan (a builder bug)".into(),
        )),
        Err(err) => Err(BuildError::Plan(format!(
            "the gateway init would refuse this plan: {err}"
        ))),
    }
}

/// One personality's compartment in the runtime plan.
fn compartment_plan(
    profile: &Profile,
    side: Side,
) -> Result<gateway_plan::CompartmentPlan, BuildError> {
    use gateway_plan::*;
    let p = personality(profile, side);
    let t = format!("personalities.{}", side.name());
    let hw = profile
        .hardware
        .nics
        .iter()
        .find(|n| n.role == p.nic)
        .ok_or_else(|| {
            BuildError::Plan(format!(
                "{t}.nic: no NIC with role `{}` in [hardware.nics]",
                p.nic
            ))
        })?;
    let h = format!("hardware.nics.{}", hw.role);
    let pci = hw.pci.as_deref().map(str::to_ascii_lowercase);
    if let Some(pci) = &pci {
        check_pci(pci).map_err(at(format!("{h}.pci")))?;
    }
    let mac = hw.mac.as_deref().map(str::to_ascii_lowercase);
    if let Some(mac) = &mac {
        check_mac(mac).map_err(at(format!("{h}.mac")))?;
    }
    gateway_plan::check_ifname("match-driver", &hw.driver).map_err(at(format!("{h}.driver")))?;
    let mut services = Vec::new();
    for (i, s) in p.services.iter().enumerate() {
        let st = format!("{t}.services[{i}]");
        if p.dhcp && s.name == DHCP_SERVICE {
            return Err(BuildError::Plan(format!(
                "{st}.name: `{DHCP_SERVICE}` is the DHCP client's service name (dhcp = true); rename this service"
            )));
        }
        services.push(service_plan(&st, s)?);
    }
    if p.dhcp {
        services.push(ServicePlan {
            name: ShortName::new("service", DHCP_SERVICE).map_err(at(format!("{t}.dhcp")))?,
            restart: Restart::Always,
            caps: ["CAP_NET_ADMIN", "CAP_NET_RAW"]
                .into_iter()
                .map(Capability::from_name)
                .collect::<Result<_, _>>()
                .map_err(at(format!("{t}.dhcp")))?,
            argv: [
                "/bin/busybox",
                "udhcpc",
                "-f",
                "-i",
                p.nic.as_str(),
                "-s",
                UDHCPC_SCRIPT,
            ]
            .map(String::from)
            .to_vec(),
        });
    }
    if services.len() > MAX_SERVICES {
        return Err(BuildError::Plan(format!(
            "{t}.services: {} services (with the DHCP client, if any); a compartment runs at most {MAX_SERVICES}",
            services.len()
        )));
    }
    Ok(CompartmentPlan {
        side: match side {
            profiles::Side::Red => gateway_plan::Side::Red,
            profiles::Side::Black => gateway_plan::Side::Black,
        },
        root: InitramfsPath::new(&format!("/personalities/{}", side.name()))
            .map_err(at(t.clone()))?,
        uid_base: uid_base(side),
        memory_max: p.memory_limit.0,
        pids_max: u32::try_from(p.pids_limit).map_err(|_| {
            BuildError::Plan(format!(
                "{t}.pids_limit: {} is larger than the gateway supports (2^32-1)",
                p.pids_limit
            ))
        })?,
        nic: ShortName::new("nic", &p.nic).map_err(at(format!("{t}.nic")))?,
        nic_match: NicMatch {
            pci,
            mac,
            driver: Some(hw.driver.clone()),
            name: None,
        },
        setup: InitramfsPath::new(NETWORK_SETUP).map_err(at(format!("{t} (network setup)")))?,
        // The only socket families its processes may open (the init's seccomp filter
        // refuses the others): what iproute2, busybox and dnsmasq use, and AF_PACKET
        // only for the DHCP client, which talks before it has an address.
        socket_families: [
            SocketFamily::Unix,
            SocketFamily::Inet,
            SocketFamily::Inet6,
            SocketFamily::Netlink,
        ]
        .into_iter()
        .chain(p.dhcp.then_some(SocketFamily::Packet))
        .collect(),
        services,
    })
}

/// One service of a personality; `st` is its profile path (`personalities.red.services[0]`).
fn service_plan(st: &str, s: &profiles::Service) -> Result<gateway_plan::ServicePlan, BuildError> {
    use gateway_plan::*;
    let mut caps = Vec::new();
    for (j, c) in s.capabilities.iter().enumerate() {
        caps.push(Capability::from_name(c).map_err(at(format!("{st}.capabilities[{j}]")))?);
    }
    caps.sort();
    caps.dedup();
    if s.command.len() > MAX_ARGS {
        return Err(BuildError::Plan(format!(
            "{st}.command: {} words; a service takes at most {MAX_ARGS}",
            s.command.len()
        )));
    }
    for (k, w) in s.command.iter().enumerate() {
        gateway_plan::check_arg(w).map_err(at(format!("{st}.command[{k}]")))?;
    }
    match s.command.first() {
        Some(prog) if prog.starts_with('/') => {}
        _ => {
            return Err(BuildError::Plan(format!(
                "{st}.command[0]: the program must be an absolute path"
            )))
        }
    }
    Ok(ServicePlan {
        name: ShortName::new("service", &s.name).map_err(at(format!("{st}.name")))?,
        restart: match s.restart {
            profiles::Restart::Always => Restart::Always,
            profiles::Restart::OnFailure => Restart::OnFailure,
            profiles::Restart::Never => Restart::Never,
        },
        caps,
        argv: s.command.clone(),
    })
}

/// An entry the builder adds to a personality's root.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootEntry {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(&'static str),
}

/// The small files the builder adds to a personality's root, by path
/// relative to it: mount points, the network setup (and DHCP hooks),
/// `/etc/hostname`, and `/etc/passwd`, `/etc/group`, `/bin/sh` where the
/// packages do not ship them. Refuses a package set that cannot run the
/// network setup.
fn personality_root(
    profile: &Profile,
    side: Side,
    shipped: &Shipped,
) -> Result<BTreeMap<String, RootEntry>, BuildError> {
    let p = personality(profile, side);
    let packages = format!("personalities.{}.packages", side.name());
    let missing = |what: &str| {
        BuildError::Plan(format!(
            "{packages}: the {} personality's network setup ({NETWORK_SETUP}) needs {what}; add it to the packages and run `appliance lock`",
            side.name()
        ))
    };
    if !shipped.has("bin/sh") && !shipped.has("bin/busybox") {
        return Err(missing("a shell, /bin/sh (busybox-static provides one)"));
    }
    // Called by its path: busybox's shell prefers its own `ip` applet.
    let ip = ["bin/ip", "sbin/ip", "usr/bin/ip", "usr/sbin/ip"]
        .into_iter()
        .find(|ip| shipped.has(ip))
        .map(|ip| format!("/{ip}"))
        .ok_or_else(|| missing("iproute2's `ip`"))?;
    if p.dhcp && !shipped.has("bin/busybox") {
        return Err(missing("/bin/busybox for the DHCP client (busybox-static)"));
    }
    let ctx = serde_json::json!({
        "name": profile.appliance.name,
        "side": side.name(),
        "ip": ip,
    });
    let mut out = BTreeMap::new();
    for (d, mode) in [
        ("dev", 0o755),
        ("proc", 0o755),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("etc", 0o755),
        ("etc/appliance", 0o755),
    ] {
        out.insert(d.to_string(), RootEntry::Dir(mode));
    }
    let file = |mode: u32, text: String| RootEntry::File(mode, text.into_bytes());
    out.insert(
        NETWORK_SETUP[1..].to_string(),
        file(0o555, network_script(profile, side, &ip)?),
    );
    if p.dhcp {
        out.insert(
            UDHCPC_SCRIPT[1..].to_string(),
            file(0o555, render::render("udhcpc.script", &ctx)?),
        );
    }
    out.insert(
        "etc/hostname".into(),
        file(0o444, render::render("hostname", &ctx)?),
    );
    for f in ["passwd", "group"] {
        let path = format!("etc/{f}");
        if !shipped.has(&path) {
            out.insert(path, file(0o444, render::render(f, &ctx)?));
        }
    }
    if !shipped.has("bin/sh") {
        out.insert("bin/sh".into(), RootEntry::Symlink("busybox"));
    }
    // Nothing may land below something the packages made a file or symlink
    // (a symlinked /bin would be replaced by a directory when unpacking).
    for (path, entry) in &out {
        let mut ancestors: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
        if matches!(entry, RootEntry::Dir(_)) {
            ancestors.push(path);
        }
        if let Some(a) = ancestors
            .into_iter()
            .find(|a| shipped.is_dir(a) == Some(false))
        {
            return Err(BuildError::Plan(format!(
                "{packages}: a package ships /{a} as a file or symlink, but the builder needs the directory /{a} for /{path}"
            )));
        }
    }
    Ok(out)
}

/// The network setup script of a personality (`/etc/appliance/network`,
/// from `templates/network-<side>.j2`); `ip` is the path of iproute2's `ip`
/// inside the personality (called by path: busybox's shell would otherwise
/// run its own `ip` applet).
pub fn network_script(profile: &Profile, side: Side, ip: &str) -> Result<String, BuildError> {
    let p = personality(profile, side);
    let t = format!("personalities.{}", side.name());
    // Interpolated into a shell script: only validated names.
    let name =
        gateway_plan::ProfileName::new(&profile.appliance.name).map_err(at("appliance.name"))?;
    let nic = gateway_plan::ShortName::new("nic", &p.nic).map_err(at(format!("{t}.nic")))?;
    let addresses: Vec<String> = if p.dhcp {
        Vec::new()
    } else {
        p.addresses.iter().map(ToString::to_string).collect()
    };
    let ipv6 = !p.dhcp && p.addresses.iter().any(|a| a.addr.is_ipv6());
    let gateway = if p.dhcp {
        None
    } else {
        p.gateway.map(|g| g.to_string())
    };
    // Some peer receives ESP inside UDP (port 4500): black steers that too.
    let udp_encap = profile.viaduct.ipsec.as_ref().is_some_and(|i| {
        i.peers
            .iter()
            .any(|p| p.encapsulation == profiles::model::Encapsulation::Udp)
    });
    // Some tunnel is keyed by IKE: black steers IKE (UDP 500, and 4500 where
    // NAT traversal moves it) to the Viaduct.
    let ike = profile.viaduct.ipsec.as_ref().is_some_and(|i| {
        i.peers
            .iter()
            .any(|p| p.tunnels.iter().any(|t| t.manual.is_none()))
    });
    render::render(
        match side {
            Side::Red => "network-red",
            Side::Black => "network-black",
        },
        serde_json::json!({
            "name": name.as_str(),
            "ip": ip,
            "nic": nic.as_str(),
            "dhcp": p.dhcp,
            "addresses": addresses,
            "ipv6": ipv6,
            "gateway": gateway,
            "udp_encap": udp_encap,
            "ike": ike,
        }),
    )
}

fn dnsmasq_conf(p: &Profile) -> Result<String, BuildError> {
    let mut ranges = Vec::new();
    let mut addrs = Vec::new();
    for a in &p.red.addresses {
        addrs.push(a.addr.to_string());
        if let std::net::IpAddr::V4(v4) = a.addr {
            let net = u32::from(v4) & (u32::MAX << (32 - u32::from(a.len)));
            let size = 1u64 << (32 - u32::from(a.len));
            if size >= 16 {
                let start = std::net::Ipv4Addr::from(net + (size / 2) as u32);
                let end = std::net::Ipv4Addr::from(net + (size - 2) as u32);
                let mask = std::net::Ipv4Addr::from(u32::MAX << (32 - u32::from(a.len)));
                ranges.push(serde_json::json!({"start": start.to_string(), "end": end.to_string(), "netmask": mask.to_string()}));
            }
        }
    }
    render::render(
        "dnsmasq.conf",
        serde_json::json!({"name": p.appliance.name, "interface": p.red.nic, "ranges": ranges, "addresses": addrs}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_plan::{Capability, Plan, Restart, SocketFamily};

    fn gw_a() -> Profile {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/lab/gw-a.toml");
        profiles::load_profile(&path).expect("gw-a is valid")
    }

    /// gw-a keyed by hand (`profiles/lab/manual/gw-a.toml`).
    fn gw_a_manual() -> Profile {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/lab/manual/gw-a.toml");
        profiles::load_profile(&path).expect("manual gw-a is valid")
    }

    fn plan(p: &Profile) -> Result<Plan, BuildError> {
        make_plan(
            p,
            &[7; 32],
            &[],
            ike_credentials(&policy::compile(p).unwrap()).as_deref(),
            &["/lib/modules/6.1.0-1-amd64/kernel/drivers/net/virtio_net.ko".into()],
        )
    }

    /// The lab profile's manual keys reach the plan as key-use records, and the init's
    /// digest of them (its `--key-claim` to the Viaduct) is the one the Viaduct computes
    /// from the policy: a gateway built this way starts its Viaduct exactly once.
    #[test]
    fn manual_keys_reach_the_plan_and_the_claim_digests_agree() {
        let profile = gw_a_manual();
        let policy = policy::compile(&profile).unwrap();
        let uses = policy.manual_key_uses();
        assert_eq!(uses.as_slice().len(), 2, "gw-a has one manual tunnel");
        let keys = manual_key_uses(&policy);
        let p = make_plan(&profile, &[7; 32], &keys, None, &[]).unwrap();
        assert_eq!(p.manual_keys, keys);
        let decoded = Plan::decode(&p.encode()).unwrap();
        assert_eq!(
            gateway_plan::keyuse::set_digest(&decoded.manual_keys).0,
            uses.digest()
        );
        // No record reveals its key: none equals a prefix of any key in the blob.
        let blob = policy.encode();
        for k in &keys {
            assert!(!blob.windows(16).any(|w| w == k.0));
        }
    }

    /// What busybox-static and iproute2 ship that the checks look at.
    fn shipped() -> Shipped {
        Shipped(
            [("bin", true), ("bin/busybox", false), ("bin/ip", false)]
                .into_iter()
                .map(|(p, d)| (p.to_string(), d))
                .collect(),
        )
    }

    /// `sh -n`: the host shell parses the script.
    fn assert_sh_syntax(script: &str) {
        use std::io::Write as _;
        let mut child = std::process::Command::new("sh")
            .arg("-n")
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run sh");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sh -n: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Every `ip` is called by its path (busybox's shell would run its own applet).
    fn assert_no_bare_ip(script: &str) {
        assert!(
            !script.lines().any(|l| l.trim_start().starts_with("ip ")),
            "bare `ip` in\n{script}"
        );
    }

    fn cap_names(caps: &[Capability]) -> Vec<&'static str> {
        caps.iter().map(|c| c.name()).collect()
    }

    #[test]
    fn plan_for_gw_a_has_both_compartments_and_round_trips() {
        let p = plan(&gw_a()).unwrap();
        assert_eq!(p.profile_name.as_str(), "gw-a");
        assert_eq!(p.viaduct.as_str(), "/usr/sbin/viaduct");
        assert_eq!(p.compartments.len(), 2);
        let (red, black) = (&p.compartments[0], &p.compartments[1]);

        assert_eq!(red.side, gateway_plan::Side::Red);
        assert_eq!(red.root.as_str(), "/personalities/red");
        assert_eq!(red.uid_base, 100_000);
        assert_eq!(red.memory_max, 256 << 20);
        assert_eq!(red.pids_max, 256);
        assert_eq!(red.nic.as_str(), "lan");
        assert_eq!(red.nic_match.pci.as_deref(), Some("0000:00:02.0"));
        assert_eq!(red.nic_match.driver.as_deref(), Some("virtio_net"));
        assert_eq!(red.nic_match.mac, None);
        assert_eq!(red.nic_match.name, None);
        assert_eq!(red.setup.as_str(), "/etc/appliance/network");
        // No AF_PACKET without a DHCP client (dnsmasq's DHCP server needs none).
        assert_eq!(
            red.socket_families,
            [
                SocketFamily::Unix,
                SocketFamily::Inet,
                SocketFamily::Inet6,
                SocketFamily::Netlink
            ]
        );
        assert_eq!(red.services.len(), 1);
        let dnsmasq = &red.services[0];
        assert_eq!(dnsmasq.name.as_str(), "dnsmasq");
        assert_eq!(dnsmasq.restart, Restart::Always);
        assert_eq!(
            dnsmasq.argv,
            [
                "/usr/sbin/dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/etc/dnsmasq.conf"
            ]
        );
        // Sorted by number, whatever the profile's order.
        assert_eq!(
            cap_names(&dnsmasq.caps),
            [
                "CAP_SETGID",
                "CAP_SETUID",
                "CAP_NET_BIND_SERVICE",
                "CAP_NET_ADMIN",
                "CAP_NET_RAW"
            ]
        );

        assert_eq!(black.side, gateway_plan::Side::Black);
        assert_eq!(black.root.as_str(), "/personalities/black");
        assert_eq!(black.uid_base, 200_000);
        assert_eq!(black.memory_max, 128 << 20);
        assert_eq!(black.pids_max, 128);
        assert_eq!(black.nic.as_str(), "wan");
        assert_eq!(black.nic_match.pci.as_deref(), Some("0000:00:03.0"));
        assert_eq!(black.nic_match.driver.as_deref(), Some("virtio_net"));
        assert_eq!(black.setup.as_str(), "/etc/appliance/network");
        assert_eq!(black.socket_families, red.socket_families);
        assert!(black.services.is_empty());

        assert_eq!(Plan::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn nic_match_is_lower_cased() {
        let mut prof = gw_a();
        for n in &mut prof.hardware.nics {
            if n.role == "wan" {
                n.pci = Some("0000:00:0A.0".into());
                n.mac = Some("52:54:00:AB:CD:EF".into());
            }
        }
        let p = plan(&prof).unwrap();
        let m = &p.compartments[1].nic_match;
        assert_eq!(m.pci.as_deref(), Some("0000:00:0a.0"));
        assert_eq!(m.mac.as_deref(), Some("52:54:00:ab:cd:ef"));
    }

    #[test]
    fn forbidden_capability_is_refused_naming_the_profile_field() {
        // The profile validator refuses it too; the plan refuses it on its own.
        let mut prof = gw_a();
        prof.red.services[0]
            .capabilities
            .push("CAP_SYS_ADMIN".into());
        let err = plan(&prof).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, BuildError::Plan(_)), "{msg}");
        assert!(
            msg.contains("personalities.red.services[0].capabilities[5]")
                && msg.contains("CAP_SYS_ADMIN"),
            "{msg}"
        );
    }

    #[test]
    fn bad_values_name_their_profile_field() {
        let mut prof = gw_a();
        prof.red.services[0].command[1] = "--a  b".into();
        let msg = plan(&prof).unwrap_err().to_string();
        assert!(
            msg.contains("personalities.red.services[0].command[1]"),
            "{msg}"
        );

        let mut prof = gw_a();
        prof.black.pids_limit = u64::from(u32::MAX) + 1;
        let msg = plan(&prof).unwrap_err().to_string();
        assert!(msg.contains("personalities.black.pids_limit"), "{msg}");

        let mut prof = gw_a();
        prof.hardware.nics[0].mac = Some("52:54:00".into());
        let msg = plan(&prof).unwrap_err().to_string();
        assert!(msg.contains("hardware.nics."), "{msg}");
        assert!(msg.contains(".mac"), "{msg}");

        let mut prof = gw_a();
        prof.black.services.push(profiles::Service {
            name: "dhcp".into(),
            command: vec!["/bin/true".into()],
            restart: profiles::Restart::Never,
            capabilities: vec![],
        });
        prof.black.dhcp = true;
        let msg = plan(&prof).unwrap_err().to_string();
        assert!(
            msg.contains("personalities.black.services[0].name"),
            "{msg}"
        );
    }

    #[test]
    fn red_network_script_for_gw_a() {
        let s = network_script(&gw_a(), Side::Red, "/bin/ip").unwrap();
        assert!(s.starts_with("#!/bin/sh\n"), "{s}");
        for line in [
            "set -e",
            "/bin/ip link set lo up",
            "/bin/ip link set lan up",
            "/bin/ip addr replace 10.1.0.1/24 dev lan",
            "/bin/ip -o addr show dev lan scope global | while read -r _ _ _ addr _; do",
            "\tcase \" 10.1.0.1/24 \" in",
            "\t*) /bin/ip addr del \"$addr\" dev lan ;;",
            "/bin/ip link set viaduct mtu 1400 up",
            "/bin/ip route replace default dev viaduct",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
            "\techo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6",
            "\techo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
        ] {
            assert!(s.lines().any(|l| l == line), "missing {line:?} in\n{s}");
        }
        assert!(!s.contains("/bin/ip -6"), "{s}");
        assert!(!s.contains("\n\n\n"), "{s}");
        assert_no_bare_ip(&s);
        assert_sh_syntax(&s);
    }

    #[test]
    fn black_network_script_steers_udp_4500_only_for_udp_peers() {
        let s = network_script(&gw_a_manual(), Side::Black, "/bin/ip").unwrap();
        assert!(!s.contains("dport 4500"), "{s}");
        let mut p = gw_a_manual();
        p.viaduct.ipsec.as_mut().unwrap().peers[0].encapsulation =
            profiles::model::Encapsulation::Udp;
        let s = network_script(&p, Side::Black, "/bin/ip").unwrap();
        let rule = "[ -n \"$(/bin/ip rule list pref 91)\" ] || /bin/ip rule add pref 91 iif wan ipproto 17 dport 4500 lookup 90";
        assert!(s.lines().any(|l| l == rule), "missing {rule:?} in\n{s}");
        let steer = s.find("rule add pref 91").unwrap();
        let card_up = s.find("/bin/ip link set wan up").unwrap();
        assert!(steer < card_up, "{s}");
        assert!(!s.contains("\n\n\n"), "{s}");
        assert_sh_syntax(&s);
    }

    /// Keyed by IKE (no manual keys): IKE on 500 and 4500 goes to the Viaduct,
    /// steered before the card comes up; manual keys only: neither port.
    #[test]
    fn black_network_script_steers_ike_when_a_tunnel_is_keyed_by_ike() {
        let s = network_script(&gw_a_manual(), Side::Black, "/bin/ip").unwrap();
        assert!(!s.contains("dport 500 "), "{s}");
        let s = network_script(&gw_a(), Side::Black, "/bin/ip").unwrap();
        let card_up = s.find("/bin/ip link set wan up").unwrap();
        for (pref, port) in [(91, 4500), (92, 500)] {
            let rule = format!("[ -n \"$(/bin/ip rule list pref {pref})\" ] || /bin/ip rule add pref {pref} iif wan ipproto 17 dport {port} lookup 90");
            let at = s
                .find(&rule)
                .unwrap_or_else(|| panic!("missing {rule:?} in\n{s}"));
            assert!(at < card_up, "{s}");
        }
        assert!(!s.contains("\n\n\n"), "{s}");
        assert_sh_syntax(&s);
    }

    #[test]
    fn black_network_script_for_gw_a() {
        let s = network_script(&gw_a(), Side::Black, "/bin/ip").unwrap();
        for line in [
            "set -e",
            "/bin/ip link set lo up",
            "/bin/ip link set wan up",
            "/bin/ip addr replace 198.51.100.1/24 dev wan",
            "\tcase \" 198.51.100.1/24 \" in",
            "/bin/ip route replace default via 198.51.100.254 dev wan",
            "/bin/ip link set viaduct up",
            "/bin/ip route replace default dev viaduct table 90",
            "[ -n \"$(/bin/ip rule list pref 90)\" ] || /bin/ip rule add pref 90 iif wan ipproto 50 lookup 90",
            "[ -n \"$(/bin/ip rule list pref 100)\" ] || /bin/ip rule add pref 100 lookup local",
            "[ -z \"$(/bin/ip rule list pref 0)\" ] || /bin/ip rule del pref 0 lookup local",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
            "echo 0 > /proc/sys/net/ipv4/conf/all/rp_filter",
            "echo 0 > /proc/sys/net/ipv4/conf/viaduct/rp_filter",
            "echo 1 > /proc/sys/net/ipv4/conf/viaduct/accept_local",
            "echo 0 > /proc/sys/net/ipv4/conf/wan/rp_filter",
            "\techo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6",
        ] {
            assert!(s.lines().any(|l| l == line), "missing {line:?} in\n{s}");
        }
        // No window on a restart: nothing is flushed or deleted before its
        // replacement is in place, and ESP is steered to the Viaduct (and the
        // local table moved behind the steering) before the card comes up.
        assert!(!s.contains("flush"), "{s}");
        assert!(!s.contains("rule del pref 90"), "{s}");
        let steer = s.find("rule add pref 90").unwrap();
        let local_moved = s.find("rule del pref 0").unwrap();
        let card_up = s.find("/bin/ip link set wan up").unwrap();
        assert!(steer < local_moved && local_moved < card_up, "{s}");
        assert!(!s.contains("\n\n\n"), "{s}");
        assert_no_bare_ip(&s);
        assert_sh_syntax(&s);
    }

    #[test]
    fn ipv6_addresses_keep_ipv6_and_route_it_to_the_viaduct() {
        let mut prof = gw_a();
        prof.red.addresses.push("2001:db8:1::1/64".parse().unwrap());
        let s = network_script(&prof, Side::Red, "/bin/ip").unwrap();
        assert!(
            s.contains("\n/bin/ip addr replace 2001:db8:1::1/64 dev lan\n"),
            "{s}"
        );
        assert!(
            s.contains("\n/bin/ip -6 route replace default dev viaduct\n"),
            "{s}"
        );
        assert!(s.contains("\necho 1 > /proc/sys/net/ipv6/conf/all/forwarding\n"));
        assert!(!s.contains("disable_ipv6"), "{s}");
        assert_sh_syntax(&s);
        // Black keeps IPv6 off: it has no IPv6 address.
        assert!(network_script(&prof, Side::Black, "/bin/ip")
            .unwrap()
            .contains("disable_ipv6"));
    }

    #[test]
    fn black_dhcp_adds_the_client_service_and_its_hooks() {
        let mut prof = gw_a();
        prof.black.dhcp = true;
        let p = plan(&prof).unwrap();
        let dhcp = &p.compartments[1].services[0];
        assert_eq!(dhcp.name.as_str(), "dhcp");
        assert_eq!(dhcp.restart, Restart::Always);
        assert_eq!(cap_names(&dhcp.caps), ["CAP_NET_ADMIN", "CAP_NET_RAW"]);
        assert_eq!(
            dhcp.argv,
            [
                "/bin/busybox",
                "udhcpc",
                "-f",
                "-i",
                "wan",
                "-s",
                "/etc/appliance/udhcpc.script"
            ]
        );
        // The DHCP client's raw frames: AF_PACKET for black only.
        assert_eq!(
            p.compartments[1].socket_families.last(),
            Some(&SocketFamily::Packet)
        );
        assert!(!p.compartments[0]
            .socket_families
            .contains(&SocketFamily::Packet));
        assert_eq!(Plan::decode(&p.encode()).unwrap(), p);

        // Addresses and the default route are the DHCP client's.
        let s = network_script(&prof, Side::Black, "/bin/ip").unwrap();
        assert!(!s.contains("/bin/ip addr"), "{s}");
        assert!(!s.contains("addr show"), "{s}");
        assert!(!s.contains("default via"), "{s}");
        assert!(s.contains("ipproto 50"), "{s}");
        assert_sh_syntax(&s);

        let root = personality_root(&prof, Side::Black, &shipped()).unwrap();
        let Some(RootEntry::File(0o555, hooks)) = root.get("etc/appliance/udhcpc.script") else {
            panic!("no udhcpc.script: {root:?}");
        };
        let hooks = String::from_utf8(hooks.clone()).unwrap();
        for line in [
            "\t/bin/ip addr replace \"$ip/$mask\" dev \"$interface\"",
            "\t\t[ \"$addr\" = \"$ip/$mask\" ] || /bin/ip addr del \"$addr\" dev \"$interface\"",
            "\t\t/bin/ip route replace default via \"${router%% *}\" dev \"$interface\"",
        ] {
            assert!(
                hooks.lines().any(|l| l == line),
                "missing {line:?} in\n{hooks}"
            );
        }
        assert_no_bare_ip(&hooks);
        assert_sh_syntax(&hooks);
        // Not for red, which has no DHCP client.
        let red = personality_root(&prof, Side::Red, &shipped()).unwrap();
        assert!(!red.contains_key("etc/appliance/udhcpc.script"));
    }

    #[test]
    fn personality_root_has_mount_points_accounts_and_a_shell() {
        let prof = gw_a();
        let root = personality_root(&prof, Side::Red, &shipped()).unwrap();
        for (d, mode) in [
            ("dev", 0o755),
            ("proc", 0o755),
            ("run", 0o755),
            ("tmp", 0o1777),
            ("etc/appliance", 0o755),
        ] {
            assert_eq!(root.get(d), Some(&RootEntry::Dir(mode)), "{d}");
        }
        let text = |p: &str| match root.get(p) {
            Some(RootEntry::File(_, b)) => String::from_utf8(b.clone()).unwrap(),
            e => panic!("{p}: {e:?}"),
        };
        assert!(matches!(
            root.get("etc/appliance/network"),
            Some(RootEntry::File(0o555, _))
        ));
        assert_eq!(
            text("etc/appliance/network"),
            network_script(&prof, Side::Red, "/bin/ip").unwrap()
        );
        assert_eq!(text("etc/hostname"), "gw-a-red\n");
        assert_eq!(
            text("etc/passwd"),
            "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        );
        assert_eq!(text("etc/group"), "root:x:0:\nnogroup:x:65534:\n");
        assert_eq!(root.get("bin/sh"), Some(&RootEntry::Symlink("busybox")));
        let black = personality_root(&prof, Side::Black, &shipped()).unwrap();
        assert!(matches!(black.get("etc/hostname"),
            Some(RootEntry::File(0o444, b)) if b == b"gw-a-black\n"));

        // What the packages ship is kept.
        let mut more = shipped();
        for p in ["bin/sh", "etc", "etc/passwd", "etc/group"] {
            more.0.insert(p.into(), p == "etc");
        }
        let root = personality_root(&prof, Side::Red, &more).unwrap();
        for p in ["bin/sh", "etc/passwd", "etc/group"] {
            assert!(!root.contains_key(p), "{p}");
        }
        // `ip` is called where iproute2 put it.
        let mut usr = shipped();
        usr.0.remove("bin/ip");
        usr.0.insert("usr/sbin/ip".into(), false);
        let root = personality_root(&prof, Side::Red, &usr).unwrap();
        let Some(RootEntry::File(_, script)) = root.get("etc/appliance/network") else {
            panic!("no network script");
        };
        let script = String::from_utf8(script.clone()).unwrap();
        assert!(
            script.contains("\n/usr/sbin/ip link set lan up\n"),
            "{script}"
        );
    }

    #[test]
    fn personality_without_shell_or_ip_is_refused() {
        let prof = gw_a();
        let mut no_ip = shipped();
        no_ip.0.remove("bin/ip");
        let msg = personality_root(&prof, Side::Black, &no_ip)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("personalities.black.packages") && msg.contains("iproute2"),
            "{msg}"
        );
        let mut no_sh = shipped();
        no_sh.0.remove("bin/busybox");
        let msg = personality_root(&prof, Side::Red, &no_sh)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("personalities.red.packages"), "{msg}");
        // A /bin symlink (merged /usr) would be replaced by our directory.
        let mut merged = shipped();
        merged.0.insert("bin".into(), false);
        let msg = personality_root(&prof, Side::Red, &merged)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("/bin "), "{msg}");
    }

    #[test]
    fn dnsmasq_keeps_its_state_on_run_and_drops_to_nobody() {
        let c = dnsmasq_conf(&gw_a()).unwrap();
        for line in [
            "interface=lan",
            "dhcp-range=10.1.0.128,10.1.0.254,255.255.255.0,12h",
            "dhcp-option=option:router,10.1.0.1",
            "dhcp-leasefile=/run/dnsmasq.leases",
            "pid-file=",
            "user=nobody",
            "group=nogroup",
        ] {
            assert!(c.lines().any(|l| l == line), "missing {line:?} in\n{c}");
        }
    }
}
