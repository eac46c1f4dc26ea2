//! The build itself. See the crate docs for the invariants.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use components::{AptContext, Cache, Deb, EntryKind, KernelTree, Lock, LockRequest};
use images::ab::{ApplianceLayout, DiskIds, Slot};
use images::cpio::CpioBuilder;
use images::{ByteLen, Content, Epoch};
use profiles::{Profile, Slots};
use sha2::{Digest, Sha256};

use crate::manifest::{self, Manifest};
use crate::{elf, render, BuildError, EXCLUDES};

/// Where systemd-boot-efi puts the stub.
const STUB_PATH: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// Package that carries the stub.
const STUB_PACKAGE: &str = "systemd-boot-efi";
/// Version of the part-cache key derivation; bump to invalidate old parts.
const PARTS_VERSION: &str = "parts-v2";

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
    /// Directory holding the static gateway binaries (`gateway-init`, optionally `viaduct`).
    pub bin_dir: PathBuf,
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
    /// Wall-clock seconds per stage (not part of any output file).
    pub durations: Vec<(String, f64)>,
}

/// The lock file that belongs to a profile: same name, `.lock` extension.
pub fn lock_path_for(profile: &Path) -> PathBuf {
    profile.with_extension("lock")
}

/// The groups of root packages a profile needs.
fn lock_request(p: &Profile) -> LockRequest {
    LockRequest {
        groups: vec![
            ("black".into(), p.black.packages.clone()),
            ("boot".into(), vec![STUB_PACKAGE.into()]),
            ("kernel".into(), vec![p.kernel.package.clone()]),
            ("red".into(), p.red.packages.clone()),
        ],
        excludes: EXCLUDES.iter().map(|s| s.to_string()).collect(),
    }
}

/// `appliance lock`: resolves the profile's packages against the archive
/// and writes the lock beside the profile (atomically). Returns its path.
pub fn lock_profile(profile_path: &Path, cache_dir: &Path) -> Result<(PathBuf, Lock), BuildError> {
    let profile = profiles::load_profile(profile_path)?;
    let apt = AptContext::new(&cache_dir.join("apt"))?;
    apt.update()?;
    let lock = components::lock(&lock_request(&profile), &apt)?;
    let path = lock_path_for(profile_path);
    lock.save(&path)?;
    Ok((path, lock))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn hexd(d: &[u8; 32]) -> String {
    hex::encode(d)
}

struct Stages<'a> {
    durations: Vec<(String, f64)>,
    last: Instant,
    progress: &'a mut dyn FnMut(Progress),
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

    let lock_path = lock_path_for(&opts.profile);
    if !lock_path.exists() {
        return Err(BuildError::MissingLock {
            lock: lock_path,
            profile: opts.profile.clone(),
        });
    }
    let lock = Lock::load(&lock_path)?;
    check_lock(&lock, &lock_request(&profile), &lock_path, &opts.profile)?;
    let epoch = Epoch(lock.source_date_epoch.0);

    // Gateway binaries: checked before any slow work.
    let init =
        read_static_binary(&opts.bin_dir.join("gateway-init"), true)?.expect("required binary");
    let viaduct = read_static_binary(&opts.bin_dir.join("viaduct"), false)?;

    st.start("fetch");
    let apt = AptContext::new(&opts.cache_dir.join("apt"))?;
    let cache = Cache::new(&opts.cache_dir.join("debs"))?;
    let fetched = {
        let progress = &mut st.progress;
        components::fetch(&lock, &cache, &apt, &mut |e| progress(Progress::Fetch(e)))?
    };
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
    let kernel = kernel_part(
        &parts,
        &deb_path(kernel_pkg.name.as_str())?,
        &kernel_pkg.sha256.to_hex(),
        &profile,
        &mut st,
    )?;

    st.start("rootfs");
    let mut segments: Vec<PathBuf> = vec![kernel.cpio.clone()];
    for side in ["red", "black"] {
        let pkgs: Vec<(String, PathBuf, String)> = lock
            .group_packages(side)
            .into_iter()
            .map(|p| {
                Ok((
                    p.name.as_str().to_string(),
                    deb_path(p.name.as_str())?,
                    p.sha256.to_hex(),
                ))
            })
            .collect::<Result<_, BuildError>>()?;
        segments.push(rootfs_part(&parts, side, &pkgs, epoch, &mut st)?);
    }

    st.start("initramfs");
    let plan = make_plan(&profile, &policy_digest, &kernel.modules)?;
    let plan_bytes = plan.encode();
    let plan_digest = plan.digest();
    let osrel = render::render(
        "os-release",
        serde_json::json!({
            "name": profile.appliance.name, "version": profile.appliance.version,
            "security_version": profile.appliance.security_version, "policy_digest": hexd(&policy_digest),
        }),
    )?;
    let mut base = CpioBuilder::new(epoch)?;
    for d in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "etc/appliance",
        "usr/sbin",
        "personalities/red/etc",
        "personalities/black/etc",
    ] {
        base.add_dir(d, 0o755)?;
    }
    base.add_char_device("dev/console", 0o600, 5, 1)?;
    base.add_char_device("dev/null", 0o666, 1, 3)?;
    base.add_file("init", 0o755, init.clone())?;
    if let Some(v) = &viaduct {
        base.add_file("usr/sbin/viaduct", 0o755, v.clone())?;
    }
    base.add_file(gateway::plan::PLAN_PATH, 0o444, plan_bytes.clone())?;
    base.add_file("etc/appliance/policy.bin", 0o400, policy_bytes.clone())?;
    base.add_file("etc/os-release", 0o444, osrel.clone().into_bytes())?;
    base.add_file(
        "personalities/red/etc/dnsmasq.conf",
        0o444,
        dnsmasq_conf(&profile)?.into_bytes(),
    )?;
    let mut initramfs = Vec::new();
    for seg in &segments {
        let mut f = std::fs::File::open(seg).map_err(BuildError::io("reading", seg))?;
        std::io::copy(&mut f, &mut initramfs).map_err(BuildError::io("reading", seg))?;
    }
    base.write_to(&mut initramfs)?;
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

    let layout = ApplianceLayout {
        ids: DiskIds::derive(&uki_digest),
        esp_size: ByteLen(profile.image.esp_size.0),
        state_size: None,
        timestamp: epoch,
        active: Slot::A,
        uki_a: Some(Content::from(uki.clone())),
        uki_b: (profile.image.slots == Slots::Ab).then(|| Content::from(uki.clone())),
    };
    let esp_path = tmp.join("esp.img");
    let mut gpt = layout.disk(&esp_path)?;
    gpt.disk_size(ByteLen(profile.image.size.0));
    let disk_path = tmp.join("disk.img");
    let disk = gpt.write_file(&disk_path)?;
    // The ESP is read once: its digest, its size, and each file's digest as
    // read back through our FAT reader.
    let esp_bytes = std::fs::read(&esp_path).map_err(BuildError::io("reading", &esp_path))?;
    let esp_digest = sha256(&esp_bytes);
    let esp_size = esp_bytes.len() as u64;
    let esp_files = {
        let vol = images::fat::FatVolume::parse(&esp_bytes)?;
        let mut files = BTreeMap::new();
        let mut paths = vec![
            images::ab::DEFAULT_BOOT_PATH,
            images::ab::Slot::A.uki_path(),
        ];
        if layout.uki_b.is_some() {
            paths.push(images::ab::Slot::B.uki_path());
        }
        for p in paths {
            files.insert(p.to_string(), hexd(&sha256(&vol.read_file(p)?)));
        }
        files
    };
    drop(esp_bytes);
    std::fs::remove_file(&esp_path).map_err(BuildError::io("removing", &esp_path))?;
    let disk_digest = hash_file(&disk_path)?;
    let mut partitions = Vec::new();
    for p in &disk.partitions {
        let digest = hash_range(&disk_path, p.offset().0, p.size().0)?;
        partitions.push(manifest::Partition {
            number: p.number,
            name: p.name.clone(),
            type_guid: p.type_guid.to_string(),
            guid: p.unique_guid.to_string(),
            first_lba: p.first.0,
            last_lba: p.last.0,
            sha256: hexd(&digest),
        });
    }
    write_file(&tmp.join("uki.efi"), &uki)?;
    let mut outputs = BTreeMap::new();
    outputs.insert("disk.img".to_string(), hexd(&disk_digest));
    outputs.insert("uki.efi".to_string(), hexd(&uki_digest));
    if opts.qcow2.unwrap_or(profile.image.qcow2) {
        st.start("qcow2");
        let q = tmp.join("disk.qcow2");
        images::qcow2::convert_raw_to_qcow2(&disk_path, &q)?;
        outputs.insert("disk.qcow2".to_string(), hexd(&hash_file(&q)?));
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
            if let Some(v) = &viaduct {
                b.insert("viaduct".to_string(), hexd(&sha256(v)));
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
        esp: manifest::EspInfo {
            sha256: hexd(&esp_digest),
            size: esp_size,
            files: esp_files,
        },
        disk: manifest::DiskInfo {
            sha256: hexd(&disk_digest),
            size: profile.image.size.0,
            guid: disk_guid(&layout),
            partitions,
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
    st.finish();
    Ok(BuildOutput {
        out: opts.out.clone(),
        manifest,
        durations: st.durations,
    })
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

fn hash_file(path: &Path) -> Result<[u8; 32], BuildError> {
    Ok(components::cache::hash_file(path)?.0)
}

fn hash_range(path: &Path, offset: u64, len: u64) -> Result<[u8; 32], BuildError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(BuildError::io("reading", path))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(BuildError::io("reading", path))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f.take(len), &mut h).map_err(BuildError::io("reading", path))?;
    Ok(h.finalize().into())
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

fn check_lock(
    lock: &Lock,
    want: &LockRequest,
    lock_path: &Path,
    profile: &Path,
) -> Result<(), BuildError> {
    for (name, roots) in &want.groups {
        let mismatch = |what: String| BuildError::LockMismatch {
            lock: lock_path.to_path_buf(),
            profile: profile.to_path_buf(),
            what,
        };
        let g = lock
            .group(name)
            .ok_or_else(|| mismatch(format!("group `{name}` is missing")))?;
        let mut a = g.roots.clone();
        let mut b = roots.clone();
        a.sort();
        b.sort();
        if a != b {
            return Err(mismatch(format!(
                "group `{name}` locks {a:?} but the profile asks for {b:?}"
            )));
        }
    }
    Ok(())
}

fn read_static_binary(path: &Path, required: bool) -> Result<Option<Vec<u8>>, BuildError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(None),
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
    Ok(Some(bytes))
}

struct KernelPart {
    cpio: PathBuf,
    vmlinuz: PathBuf,
    version: String,
    /// Module paths inside the initramfs, load order.
    modules: Vec<String>,
}

/// Kernel image and the profile's modules (with dependencies) as a cached
/// cpio segment, keyed by the kernel package digest and the driver list.
fn kernel_part(
    parts: &Path,
    deb: &Path,
    deb_sha: &str,
    profile: &Profile,
    st: &mut Stages<'_>,
) -> Result<KernelPart, BuildError> {
    let mut h = Sha256::new();
    h.update(PARTS_VERSION);
    h.update("kernel");
    h.update(deb_sha);
    for d in &profile.kernel.drivers {
        h.update([0]);
        h.update(d);
    }
    let key = hex::encode(h.finalize());
    let cpio = parts.join(format!("kernel-{key}.cpio"));
    let vmlinuz = parts.join(format!("kernel-{key}.vmlinuz"));
    let meta = parts.join(format!("kernel-{key}.meta"));
    if cpio.exists() && vmlinuz.exists() && meta.exists() {
        let text = std::fs::read_to_string(&meta).map_err(BuildError::io("reading", &meta))?;
        let mut lines = text.lines();
        if let Some(version) = lines.next() {
            (st.progress)(Progress::Reused(format!("kernel {version}")));
            return Ok(KernelPart {
                cpio,
                vmlinuz,
                version: version.to_string(),
                modules: lines.map(str::to_string).collect(),
            });
        }
    }
    let bytes = std::fs::read(deb).map_err(BuildError::io("reading", deb))?;
    let deb = Deb::parse(&bytes)?;
    let tree = KernelTree::from_deb(&deb)?;
    let drivers: Vec<&str> = profile.kernel.drivers.iter().map(String::as_str).collect();
    let res = match tree.resolve(&drivers) {
        Ok(r) => r,
        Err(components::Error::UnknownDriver {
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
    write_atomic(&cpio, &c.to_vec()?)?;
    write_atomic(&vmlinuz, tree.image())?;
    let mut m = format!("{}\n", tree.version());
    for p in &modules {
        m.push_str(p);
        m.push('\n');
    }
    write_atomic(&meta, m.as_bytes())?;
    Ok(KernelPart {
        cpio,
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

/// A personality's root filesystem (every package of its closure, under
/// `personalities/<side>/`, without [`pruned`] paths) as a cached cpio segment.
fn rootfs_part(
    parts: &Path,
    side: &str,
    pkgs: &[(String, PathBuf, String)],
    epoch: Epoch,
    st: &mut Stages<'_>,
) -> Result<PathBuf, BuildError> {
    let mut h = Sha256::new();
    h.update(PARTS_VERSION);
    h.update("rootfs");
    h.update(side);
    h.update(epoch.0.to_le_bytes());
    for (name, _, sha) in pkgs {
        h.update([0]);
        h.update(name);
        h.update(sha);
    }
    let key = hex::encode(h.finalize());
    let path = parts.join(format!("rootfs-{side}-{key}.cpio"));
    if path.exists() {
        (st.progress)(Progress::Reused(format!("{side} root filesystem")));
        return Ok(path);
    }
    // Later packages win on a path conflict; the order is the lock's (sorted), so deterministic.
    let mut tree: BTreeMap<String, (u32, EntryKind)> = BTreeMap::new();
    for (_, deb_path, _) in pkgs {
        let bytes = std::fs::read(deb_path).map_err(BuildError::io("reading", deb_path))?;
        let deb = Deb::parse(&bytes)?;
        for e in deb.data_entries_where(|p| !pruned(p.trim_start_matches("./")))? {
            let mode = match &e.kind {
                EntryKind::File { mode, .. } | EntryKind::Dir { mode } => *mode,
                _ => 0o777,
            };
            tree.insert(e.path.trim_end_matches('/').to_string(), (mode, e.kind));
        }
    }
    let mut c = CpioBuilder::new(epoch)?;
    let prefix = format!("personalities/{side}");
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
    }
    write_atomic(&path, &c.to_vec()?)?;
    Ok(path)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    write_file(&tmp, bytes)?;
    std::fs::rename(&tmp, path).map_err(BuildError::io("renaming into place", path))
}

fn make_plan(
    profile: &Profile,
    policy_digest: &[u8; 32],
    modules: &[String],
) -> Result<gateway::plan::Plan, BuildError> {
    use gateway::plan::*;
    let e = |e: gateway::Error| BuildError::Plan(e.to_string());
    Ok(Plan {
        profile_name: ProfileName::new(&profile.appliance.name).map_err(e)?,
        profile_version: ProfileVersion::new(&profile.appliance.version).map_err(e)?,
        security_version: SecurityVersion(
            u32::try_from(profile.appliance.security_version).map_err(|_| {
                BuildError::Plan(format!(
                    "security_version {} is larger than the gateway supports (2^32-1)",
                    profile.appliance.security_version
                ))
            })?,
        ),
        policy_path: InitramfsPath::new("/etc/appliance/policy.bin").map_err(e)?,
        policy_sha256: gateway::digest::Sha256Digest(*policy_digest),
        modules: modules
            .iter()
            .map(|m| ModulePath::new(m))
            .collect::<Result<_, _>>()
            .map_err(e)?,
    })
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
