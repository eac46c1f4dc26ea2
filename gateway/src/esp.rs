//! Boot assessment: which boot-loader entry this boot is, whether it is on
//! trial, and marking it good.
//!
//! systemd-boot (252) tells the booted system, through volatile EFI
//! variables of its vendor GUID, the ESP it started from
//! (`LoaderDevicePartUUID`, the partition's unique GUID) and, when the entry
//! it started carries a boot counter (`NAME+LEFT[-DONE].efi`), the file's
//! new name after it counted this try (`LoaderBootCountPath`,
//! `\EFI\Linux\NAME+LEFT-DONE.efi`). A boot is good when the init renames
//! that file to `NAME.efi` (what `systemd-bless-boot good` does); an entry
//! whose tries reach 0 sorts last and the other one boots.
//!
//! The init finds the ESP among the kernel's partitions by reading each
//! disk's GPT (nothing here trusts the GPT beyond locating the partition:
//! the ESP's files are not executed by the init, and a physical attacker who
//! can change the disk can change the ESP anyway), mounts it only for the
//! moment it reads or renames, and never follows a name it did not check:
//! entry names are `[A-Za-z0-9._+-]` only.

use std::path::{Path, PathBuf};

use crate::sys;

/// The vendor GUID of systemd-boot's variables.
pub const LOADER_VENDOR: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// Where UKIs live on the ESP.
pub const LINUX_DIR: &str = "EFI/Linux";

/// Where the boot loader's facts are read and the ESP is mounted.
#[derive(Debug, Clone)]
pub struct EspEnv {
    /// efivarfs.
    pub efivars: PathBuf,
    /// `/sys/class/block`.
    pub sys_block: PathBuf,
    /// `/dev`.
    pub dev: PathBuf,
    /// Where to mount the ESP.
    pub mount_at: PathBuf,
    /// The TPM devices to try, in order.
    pub tpm: Vec<PathBuf>,
}

impl EspEnv {
    /// The device's places.
    pub fn device() -> EspEnv {
        EspEnv {
            efivars: "/sys/firmware/efi/efivars".into(),
            sys_block: "/sys/class/block".into(),
            dev: "/dev".into(),
            mount_at: "/run/esp".into(),
            tpm: vec!["/dev/tpmrm0".into(), "/dev/tpm0".into()],
        }
    }

    /// A UTF-16 string variable of systemd-boot's (attributes, then the
    /// string, NUL-terminated), at most 1 KiB.
    fn loader_var(&self, name: &str) -> Option<String> {
        let raw = std::fs::read(self.efivars.join(format!("{name}-{LOADER_VENDOR}"))).ok()?;
        if raw.len() > 1024 + 4 {
            return None;
        }
        let units: Vec<u16> = raw
            .get(4..)?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        String::from_utf16(&units).ok()
    }

    /// The ESP's partition GUID (upper case, as the boot loader writes it).
    pub fn boot_partuuid(&self) -> Option<String> {
        let s = self
            .loader_var("LoaderDevicePartUUID")?
            .trim()
            .to_ascii_uppercase();
        (s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(s)
    }

    /// This boot's counted entry, relative to the ESP's root
    /// (`EFI/Linux/NAME+LEFT-DONE.efi`), when the boot is on trial.
    pub fn boot_count_path(&self) -> Option<String> {
        let v = self.loader_var("LoaderBootCountPath")?;
        entry_path(&v)
    }
}

/// A checked ESP path from the boot loader's `\EFI\Linux\NAME.efi`: under
/// [`LINUX_DIR`], one file name of `[A-Za-z0-9._+-]`, not starting with a dot.
pub fn entry_path(v: &str) -> Option<String> {
    let p = v.trim_start_matches('\\').replace('\\', "/");
    let name = p.strip_prefix(LINUX_DIR)?.strip_prefix('/')?;
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    ok.then(|| format!("{LINUX_DIR}/{name}"))
}

/// The counter of an entry's file name: `NAME+LEFT[-DONE].efi` → (`NAME`,
/// LEFT, DONE), as systemd-boot parses it (the last `+`, decimal numbers,
/// then `.efi` in any case).
pub fn counter(file: &str) -> Option<(&str, u32, u32)> {
    let (stem, rest) = file.rsplit_once('+')?;
    let ext = rest.len().checked_sub(4)?;
    if !rest.get(ext..)?.eq_ignore_ascii_case(".efi") {
        return None;
    }
    let nums = rest.get(..ext)?;
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let (left, done) = match nums.split_once('-') {
        Some((l, d)) => (num(l)?, num(d)?),
        None => (num(nums)?, 0),
    };
    Some((stem, left, done))
}

/// The name a good boot gives its entry: the counter removed
/// (`EFI/Linux/x+2-1.efi` → `EFI/Linux/x.efi`).
pub fn good_path(counted: &str) -> Option<String> {
    let (dir, file) = counted.rsplit_once('/')?;
    let (stem, _, _) = counter(file)?;
    Some(format!("{dir}/{stem}.efi"))
}

/// Reads the partition GUID of every partition of `disk` from its primary
/// GPT (512-byte sectors): (partition number, GUID in upper-case text).
fn gpt_partition_guids(disk: &Path) -> Vec<(u32, String)> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(disk) else {
        return Vec::new();
    };
    let mut h = [0u8; 512];
    if f.seek(SeekFrom::Start(512)).is_err() || f.read_exact(&mut h).is_err() {
        return Vec::new();
    }
    if h.get(..8) != Some(b"EFI PART".as_slice()) {
        return Vec::new();
    }
    let le64 = |o: usize| {
        h.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0)
    };
    let le32 = |o: usize| {
        h.get(o..o + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .unwrap_or(0)
    };
    let (lba, count, size) = (le64(72), le32(80), le32(84));
    if !(128..=4096).contains(&size) || !size.is_power_of_two() || count == 0 || count > 1024 {
        return Vec::new();
    }
    let mut entries = vec![0u8; (count * size) as usize];
    if f.seek(SeekFrom::Start(lba.saturating_mul(512))).is_err()
        || f.read_exact(&mut entries).is_err()
    {
        return Vec::new();
    }
    entries
        .chunks_exact(size as usize)
        .enumerate()
        .filter(|(_, e)| e.get(..16).is_some_and(|t| t.iter().any(|b| *b != 0)))
        .filter_map(|(i, e)| Some((i as u32 + 1, guid_text(e.get(16..32)?))))
        .collect()
}

/// A GUID's text from its on-disk (mixed-endian) bytes, upper case.
fn guid_text(b: &[u8]) -> String {
    let mut s = String::with_capacity(36);
    for (i, idx) in [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15]
        .iter()
        .enumerate()
    {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{:02X}", b.get(*idx).copied().unwrap_or(0)));
    }
    s
}

/// The partition device (`/dev/vda1`) whose GPT partition GUID is `uuid`.
pub fn find_partition(env: &EspEnv, uuid: &str) -> Option<PathBuf> {
    let rd = std::fs::read_dir(&env.sys_block).ok()?;
    let mut names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let dir = env.sys_block.join(&name);
        let Some(number) = std::fs::read_to_string(dir.join("partition"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let Some(disk) = std::fs::canonicalize(&dir)
            .ok()
            .and_then(|p| p.parent().and_then(|d| d.file_name()).map(|n| n.to_owned()))
        else {
            continue;
        };
        let guids = gpt_partition_guids(&env.dev.join(&disk));
        if guids
            .iter()
            .any(|(n, g)| *n == number && g.eq_ignore_ascii_case(uuid))
        {
            return Some(env.dev.join(&name));
        }
    }
    None
}

/// At most 64 KiB of the section `name` of the PE file `r` (a UKI), read with
/// bounded seeks; `None` when the file is no PE file or has no such section.
pub fn uki_section<R: std::io::Read + std::io::Seek>(r: &mut R, name: &str) -> Option<Vec<u8>> {
    use std::io::SeekFrom;
    let mut at = |off: u64, len: usize| -> Option<Vec<u8>> {
        r.seek(SeekFrom::Start(off)).ok()?;
        let mut b = vec![0u8; len];
        r.read_exact(&mut b).ok()?;
        Some(b)
    };
    let dos = at(0, 64)?;
    if dos.get(..2)? != b"MZ" {
        return None;
    }
    let pe = u64::from(u32::from_le_bytes(dos.get(0x3c..0x40)?.try_into().ok()?));
    let coff = at(pe, 24)?;
    if coff.get(..4)? != b"PE\0\0" {
        return None;
    }
    let sections = u16::from_le_bytes(coff.get(6..8)?.try_into().ok()?);
    let opt = u16::from_le_bytes(coff.get(20..22)?.try_into().ok()?);
    if sections > 96 {
        return None;
    }
    let mut want = [0u8; 8];
    let n = name.len().min(8);
    want[..n].copy_from_slice(&name.as_bytes()[..n]);
    let table = at(pe + 24 + u64::from(opt), usize::from(sections) * 40)?;
    for s in table.chunks_exact(40) {
        if s.get(..8)? != want {
            continue;
        }
        let le = |o: usize| -> Option<u32> {
            Some(u32::from_le_bytes(s.get(o..o + 4)?.try_into().ok()?))
        };
        let (vsize, raw_size, raw_at) = (le(8)?, le(16)?, le(20)?);
        let len = vsize.min(raw_size).min(64 * 1024) as usize;
        return at(u64::from(raw_at), len);
    }
    None
}

/// The `APPLIANCE_SECURITY_VERSION` in the `.osrel` section of the UKI
/// `r` (a PE file): read with bounded seeks, never more than 64 KiB of the
/// section; `None` when the file is not such a UKI.
pub fn uki_security_version<R: std::io::Read + std::io::Seek>(r: &mut R) -> Option<u64> {
    let text = uki_section(r, ".osrel")?;
    let text = String::from_utf8_lossy(&text);
    text.lines().find_map(|l| {
        let v = l.trim().strip_prefix("APPLIANCE_SECURITY_VERSION=")?;
        let v = v.trim_matches('"');
        (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .then(|| v.parse().ok())
            .flatten()
    })
}

/// The security versions of the entries systemd-boot may still boot (no
/// counter, or tries left), by path; `None` for an entry whose version
/// cannot be read.
fn bootable_versions(esp_root: &Path) -> Vec<(String, Option<u64>)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(esp_root.join(LINUX_DIR)) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.to_ascii_lowercase().ends_with(".efi") || name.starts_with('.') {
            continue;
        }
        if counter(&name).is_some_and(|(_, left, _)| left == 0) {
            continue;
        }
        let v = std::fs::File::open(e.path())
            .ok()
            .and_then(|mut f| uki_security_version(&mut f));
        out.push((format!("{LINUX_DIR}/{name}"), v));
    }
    out.sort();
    out
}

/// After a good boot: raises the TPM's anti-rollback floor to the lowest
/// security version among the bootable entries (so the fallback keeps
/// booting), never above `own` (this image's). Logs what it did.
fn raise_floor(env: &EspEnv, esp: Option<&Path>, own: u64, log: &mut crate::console::Logger) {
    let mut lowest = own;
    if let Some(esp) = esp {
        let m = match Mounted::new(env, esp, false) {
            Ok(m) => m,
            Err(e) => {
                log.log(&format!(
                    "warning: anti-rollback floor not raised: mounting {}: {e}",
                    esp.display()
                ));
                return;
            }
        };
        for (path, v) in bootable_versions(&m.0.mount_at) {
            match v {
                Some(v) => lowest = lowest.min(v),
                None => {
                    log.log(&format!(
                        "warning: anti-rollback floor not raised: the security version of {path} cannot be read"
                    ));
                    return;
                }
            }
        }
    }
    let Some(dev) = env.tpm.iter().find(|p| p.exists()) else {
        log.log("warning: anti-rollback floor not raised: no TPM");
        return;
    };
    match crate::runtime::open_tpm(dev).and_then(|mut t| crate::floor::raise(&mut *t, lowest)) {
        Ok((before, after)) if after > before => log.log(&format!(
            "anti-rollback floor raised from {before} to {after} (the lowest security version among bootable entries)"
        )),
        Ok((_, after)) => log.log(&format!(
            "anti-rollback floor stays {after} (the lowest security version among bootable entries is {lowest})"
        )),
        Err(e) => log.log(&format!("error: {e}")),
    }
}

/// Checks this image's security version against the TPM's floor before
/// anything starts.
///
/// # Errors
/// The version is below the floor (a rollback), or the floor cannot be read.
pub fn check_floor(env: &EspEnv, own: u64) -> Result<Option<u64>, String> {
    let Some(dev) = env.tpm.iter().find(|p| p.exists()) else {
        return Ok(None);
    };
    let floor = crate::runtime::open_tpm(dev)
        .and_then(|mut t| crate::floor::read(&mut *t))
        .map_err(|e| e.to_string())?;
    match floor {
        Some(f) if own < f => Err(format!(
            "this image's security version {own} is below the device's anti-rollback floor {f} (a rollback); not starting"
        )),
        f => Ok(f),
    }
}

/// What this boot is, as the boot loader and the ESP say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootEntries {
    /// The ESP's partition device.
    pub esp: Option<PathBuf>,
    /// This boot's counted entry (on trial), relative to the ESP.
    pub trial: Option<String>,
    /// Entries with no tries left: updates that failed.
    pub failed: Vec<String>,
}

/// The ESP mounted at `env.mount_at` until dropped.
struct Mounted<'a>(&'a EspEnv);

impl<'a> Mounted<'a> {
    fn new(env: &'a EspEnv, dev: &Path, writable: bool) -> std::io::Result<Mounted<'a>> {
        std::fs::create_dir_all(&env.mount_at)?;
        let flags = libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC
            | if writable { 0 } else { libc::MS_RDONLY };
        sys::mount(
            &dev.to_string_lossy(),
            &env.mount_at.to_string_lossy(),
            "vfat",
            flags,
            "codepage=437,iocharset=ascii",
        )?;
        Ok(Mounted(env))
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        sys::sync();
        let _ = sys::umount(&self.0.mount_at.to_string_lossy(), 0);
    }
}

/// Runs `f` on the ESP `dev` mounted at `env.mount_at` (read-write when
/// `writable`), then syncs and unmounts it.
///
/// # Errors
/// Mounting failed.
pub fn with_mounted<T>(
    env: &EspEnv,
    dev: &Path,
    writable: bool,
    f: impl FnOnce(&Path) -> T,
) -> Result<T, String> {
    let m =
        Mounted::new(env, dev, writable).map_err(|e| format!("mounting {}: {e}", dev.display()))?;
    let out = f(&m.0.mount_at);
    drop(m);
    Ok(out)
}

/// Reads what this boot is: the ESP, the trial entry, the failed entries.
///
/// # Errors
/// Mounting the ESP failed (the boot loader named one).
pub fn inspect(env: &EspEnv) -> Result<BootEntries, String> {
    let trial = env.boot_count_path();
    let Some(uuid) = env.boot_partuuid() else {
        return Ok(BootEntries {
            trial,
            ..Default::default()
        });
    };
    // The disk's driver was loaded a moment ago: its partitions may take a
    // while to appear (a SATA link, a USB bus). Wait up to 10 s.
    let mut esp = find_partition(env, &uuid);
    for _ in 0..100 {
        if esp.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        esp = find_partition(env, &uuid);
    }
    let esp = esp.ok_or_else(|| {
        format!("no partition with the boot loader's ESP GUID {uuid} (is the disk's driver in [kernel] drivers?)")
    })?;
    let m =
        Mounted::new(env, &esp, false).map_err(|e| format!("mounting {}: {e}", esp.display()))?;
    let mut failed: Vec<String> = std::fs::read_dir(m.0.mount_at.join(LINUX_DIR))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| counter(n).is_some_and(|(_, left, _)| left == 0))
                .map(|n| format!("{LINUX_DIR}/{n}"))
                .collect()
        })
        .unwrap_or_default();
    failed.sort();
    drop(m);
    Ok(BootEntries {
        esp: Some(esp),
        trial,
        failed,
    })
}

/// Marks the trial entry good: renames it to its name without counter,
/// unless that name exists (then nothing is renamed, as systemd-bless-boot
/// does). Returns the new path.
///
/// # Errors
/// Mounting or renaming failed.
pub fn mark_good(env: &EspEnv, esp: &Path, counted: &str) -> Result<String, String> {
    let good = good_path(counted).ok_or_else(|| format!("{counted} carries no boot counter"))?;
    let m = Mounted::new(env, esp, true).map_err(|e| format!("mounting {}: {e}", esp.display()))?;
    let (from, to) = (m.0.mount_at.join(counted), m.0.mount_at.join(&good));
    if to.exists() {
        return Err(format!("{good} exists already; {counted} left as it is"));
    }
    std::fs::rename(&from, &to).map_err(|e| format!("renaming {counted} to {good}: {e}"))?;
    if let Some(dir) = to.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    drop(m);
    Ok(good)
}

/// Judges this boot: good once the gateway is ready and enough tunnels are
/// keyed, within the plan's time. A boot on trial that is not good in time
/// ends in a reboot, so that systemd-boot counts the try (after the last one
/// it boots the other entry); a good one has its entry renamed.
#[derive(Debug)]
pub struct Assessment {
    env: EspEnv,
    want: gateway_plan::BootAssessment,
    own_version: u64,
    entries: BootEntries,
    deadline: std::time::Instant,
    done: bool,
}

/// How long a trial boot whose plan could not be read gets before the
/// reboot (the plan's own figure is unknown).
pub const CLOSED_TIMEOUT_S: u32 = 300;

impl Assessment {
    /// Reads the boot loader's view (mounting efivarfs if needed) and logs
    /// it: the trial entry, and updates that failed their tries.
    pub fn start(
        env: EspEnv,
        want: gateway_plan::BootAssessment,
        own_version: u64,
        log: &mut crate::console::Logger,
    ) -> Assessment {
        mount_efivarfs(&env, log);
        let entries = match inspect(&env) {
            Ok(e) => e,
            Err(e) => {
                log.log(&format!("warning: boot assessment: {e}"));
                BootEntries {
                    trial: env.boot_count_path(),
                    ..Default::default()
                }
            }
        };
        for f in &entries.failed {
            log.log(&format!(
                "boot entry {f} failed its tries; it is not booted again"
            ));
        }
        match &entries.trial {
            Some(t) => log.log(&format!(
                "boot entry {t} on trial: good once ready{}, within {} s",
                if want.tunnels > 0 {
                    format!(" with {} tunnel(s) keyed", want.tunnels)
                } else {
                    String::new()
                },
                want.timeout_s
            )),
            None => log.log("boot entry not on trial (no boot counter)"),
        }
        Assessment {
            env,
            want,
            own_version,
            entries,
            deadline: std::time::Instant::now()
                + std::time::Duration::from_secs(u64::from(want.timeout_s)),
            done: false,
        }
    }

    /// The entries found at start.
    pub fn entries(&self) -> &BootEntries {
        &self.entries
    }

    /// While this boot is not judged yet: `Some` of its boot-counted entry
    /// (`None` inside when it is not on trial).
    pub fn pending(&self) -> Option<Option<String>> {
        (!self.done).then(|| self.entries.trial.clone())
    }

    /// Called by the supervision loop: `ready` and `keyed` as the runtime
    /// reports them. Returns true when the gateway must reboot.
    pub fn tick(&mut self, ready: bool, keyed: usize, log: &mut crate::console::Logger) -> bool {
        if self.done {
            return false;
        }
        let want = self.want.tunnels as usize;
        if ready && keyed >= want {
            self.done = true;
            match (&self.entries.trial, &self.entries.esp) {
                (Some(t), Some(esp)) => match mark_good(&self.env, esp, t) {
                    Ok(good) => log.log(&format!("boot good: {t} is now {good}")),
                    Err(e) => log.log(&format!("error: marking the boot good: {e}")),
                },
                (Some(t), None) => log.log(&format!(
                    "error: marking the boot good: {t} is on trial but its ESP was not found"
                )),
                (None, _) => log.log("boot good (not on trial)"),
            }
            raise_floor(
                &self.env,
                self.entries.esp.as_deref(),
                self.own_version,
                log,
            );
            return false;
        }
        if std::time::Instant::now() < self.deadline {
            return false;
        }
        self.done = true;
        let state = format!(
            "ready: {}, tunnels keyed: {keyed} of {want}",
            if ready { "yes" } else { "no" }
        );
        match &self.entries.trial {
            Some(t) => {
                log.log(&format!(
                    "boot entry {t} not good within {} s ({state}); rebooting, and systemd-boot counts the try",
                    self.want.timeout_s
                ));
                true
            }
            None => {
                log.log(&format!(
                    "warning: not good within {} s ({state}); not on trial, so staying up",
                    self.want.timeout_s
                ));
                false
            }
        }
    }
}

/// The efivarfs module of the running kernel in the initramfs at `root`
/// (`/lib/modules/<release>/kernel/fs/efivarfs/efivarfs.ko`), for a boot
/// that failed before its plan loaded it; `None` when the kernel release
/// cannot be read or has a character a path must not hold.
pub fn efivarfs_module(root: &Path, osrelease: &str) -> Option<PathBuf> {
    let rel = osrelease.trim();
    let ok = !rel.is_empty()
        && rel.len() <= 64
        && !rel.starts_with('.')
        && rel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    ok.then(|| {
        root.join("lib/modules")
            .join(rel)
            .join("kernel/fs/efivarfs/efivarfs.ko")
    })
}

/// For a boot that stays closed before its plan's modules are in: loads
/// the running kernel's efivarfs module from the initramfs (if it is there
/// and not loaded), so that a trial can still be seen and rebooted.
pub fn load_efivarfs_module(
    root: &Path,
    loader: &mut dyn crate::boot::ModuleLoader,
    log: &mut crate::console::Logger,
) {
    let Some(path) = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|r| efivarfs_module(root, &r))
    else {
        return;
    };
    if !path.exists() {
        return;
    }
    match loader.load(&path) {
        Ok(crate::boot::ModuleOutcome::Loaded) => log.log(&format!(
            "module {} loaded (to read the boot loader's variables)",
            path.display()
        )),
        Ok(crate::boot::ModuleOutcome::AlreadyLoaded) => {}
        Err(e) => log.log(&format!("warning: {e}")),
    }
}

/// Mounts efivarfs where the boot loader's variables are read, if the
/// system booted by EFI and it is not there yet (the module must be loaded:
/// by the plan, or by [`load_efivarfs_module`] when the boot failed first).
pub fn mount_efivarfs(env: &EspEnv, log: &mut crate::console::Logger) {
    if !Path::new("/sys/firmware/efi").exists()
        || env
            .efivars
            .join(".")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
    {
        return;
    }
    if let Err(e) = sys::mount(
        "efivarfs",
        &env.efivars.to_string_lossy(),
        "efivarfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY,
        "",
    ) {
        if e.raw_os_error() != Some(libc::EBUSY) {
            log.log(&format!("warning: mounting efivarfs: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_efivarfs_module_is_found_by_the_kernel_release() {
        assert_eq!(
            efivarfs_module(Path::new("/"), "6.1.0-57-amd64\n"),
            Some(PathBuf::from(
                "/lib/modules/6.1.0-57-amd64/kernel/fs/efivarfs/efivarfs.ko"
            ))
        );
        for bad in ["", "..", "../../etc", "6.1/x", "a b", &"9".repeat(65)] {
            assert_eq!(efivarfs_module(Path::new("/"), bad), None, "{bad:?}");
        }
    }

    #[test]
    fn entry_paths_are_checked() {
        assert_eq!(
            entry_path("\\EFI\\Linux\\gw-a_0.2.0+2-1.efi").as_deref(),
            Some("EFI/Linux/gw-a_0.2.0+2-1.efi")
        );
        for bad in [
            "\\EFI\\Linux\\..\\x.efi",
            "\\EFI\\Linux\\a/b.efi",
            "\\EFI\\BOOT\\BOOTX64.EFI",
            "\\EFI\\Linux\\",
            "\\EFI\\Linux\\.hidden+1.efi",
            "\\EFI\\Linux\\sp ace+1.efi",
        ] {
            assert_eq!(entry_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn counters_parse_as_systemd_boot_parses_them() {
        assert_eq!(counter("gw-a_0.2.0+3.efi"), Some(("gw-a_0.2.0", 3, 0)));
        assert_eq!(counter("gw-a_0.2.0+2-1.efi"), Some(("gw-a_0.2.0", 2, 1)));
        assert_eq!(counter("gw-a_0.2.0+0-3.EFI"), Some(("gw-a_0.2.0", 0, 3)));
        assert_eq!(counter("a+b+1.efi"), Some(("a+b", 1, 0)));
        for none in [
            "gw-a_0.2.0.efi",
            "x+.efi",
            "x+1-.efi",
            "x+-1.efi",
            "x+1.conf",
            "x+a.efi",
            "+1",
        ] {
            assert_eq!(counter(none), None, "{none}");
        }
        assert_eq!(
            good_path("EFI/Linux/gw-a_0.2.0+2-1.efi").as_deref(),
            Some("EFI/Linux/gw-a_0.2.0.efi")
        );
        assert_eq!(good_path("EFI/Linux/gw-a_0.2.0.efi"), None);
    }

    #[test]
    fn loader_variables_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let env = EspEnv {
            efivars: dir.path().into(),
            ..EspEnv::device()
        };
        let put = |name: &str, v: &str| {
            let mut b = vec![6, 0, 0, 0];
            for u in format!("{v}\0").encode_utf16() {
                b.extend_from_slice(&u.to_le_bytes());
            }
            std::fs::write(dir.path().join(format!("{name}-{LOADER_VENDOR}")), b).unwrap();
        };
        assert_eq!(env.boot_partuuid(), None);
        assert_eq!(env.boot_count_path(), None);
        put(
            "LoaderDevicePartUUID",
            "8f3a1c2e-0b4d-4e5f-8a6b-7c8d9e0f1a2b",
        );
        put("LoaderBootCountPath", "\\EFI\\Linux\\gw_2+1-2.efi");
        assert_eq!(
            env.boot_partuuid().as_deref(),
            Some("8F3A1C2E-0B4D-4E5F-8A6B-7C8D9E0F1A2B")
        );
        assert_eq!(
            env.boot_count_path().as_deref(),
            Some("EFI/Linux/gw_2+1-2.efi")
        );
        put(
            "LoaderDevicePartUUID",
            "not a guid at all, but 36 chars long",
        );
        assert_eq!(env.boot_partuuid(), None);
    }

    #[test]
    fn the_esp_is_found_by_its_partition_guid() {
        // A fake sysfs: vda with partition vda1, and the disk image as /dev/vda.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let devices = root.join("devices/vda");
        std::fs::create_dir_all(devices.join("vda1")).unwrap();
        std::fs::write(devices.join("vda1/partition"), "1\n").unwrap();
        let class = root.join("class");
        std::fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink(&devices, class.join("vda")).unwrap();
        std::os::unix::fs::symlink(devices.join("vda1"), class.join("vda1")).unwrap();
        let dev = root.join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        let guid = images::guid_from_digest(&[9; 32], "esp");
        let mut b = images::gpt::GptBuilder::new(images::guid_from_digest(&[8; 32], "disk"));
        b.add_partition(images::gpt::PartitionSpec {
            name: "ESP".into(),
            type_guid: images::gpt::type_guid::ESP,
            unique_guid: guid,
            size: images::ByteLen::mib(1),
            attributes: 0,
            content: None,
        })
        .unwrap();
        b.write_file(&dev.join("vda")).unwrap();
        let env = EspEnv {
            efivars: root.join("efivars"),
            sys_block: class,
            dev: dev.clone(),
            mount_at: root.join("esp"),
            tpm: Vec::new(),
        };
        assert_eq!(
            find_partition(&env, &guid.to_string().to_lowercase()),
            Some(dev.join("vda1"))
        );
        assert_eq!(
            find_partition(&env, "00000000-0000-0000-0000-000000000001"),
            None
        );
        assert_eq!(
            gpt_partition_guids(&dev.join("vda")),
            vec![(1, guid.to_string())]
        );
    }

    #[test]
    fn a_ukis_security_version_is_read_from_its_osrel() {
        let stub = std::fs::read("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
            .expect("systemd-boot-efi (scripts/test installs it)");
        let mut b = images::pe::UkiBuilder::new(stub);
        b.osrel(b"ID=appliance\nIMAGE_VERSION=\"0.2.0\"\nAPPLIANCE_SECURITY_VERSION=7\n".to_vec())
            .unwrap()
            .cmdline(b"console=ttyS0".to_vec())
            .unwrap()
            .linux(vec![0x4d; 4096])
            .unwrap();
        let uki = b.build().unwrap();
        assert_eq!(
            uki_security_version(&mut std::io::Cursor::new(&uki)),
            Some(7)
        );
        let mut other = images::pe::UkiBuilder::new(
            std::fs::read("/usr/lib/systemd/boot/efi/linuxx64.efi.stub").unwrap(),
        );
        other
            .osrel(b"ID=appliance\n".to_vec())
            .unwrap()
            .linux(vec![0x4d; 4096])
            .unwrap();
        let other = other.build().unwrap();
        assert_eq!(
            uki_security_version(&mut std::io::Cursor::new(&other)),
            None
        );
        assert_eq!(uki_security_version(&mut std::io::Cursor::new(b"MZ")), None);
    }

    proptest::proptest! {
        #[test]
        fn uki_reading_never_panics(mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048), pe in 64u32..1024) {
            if bytes.len() > 0x40 {
                bytes[0] = b'M';
                bytes[1] = b'Z';
                bytes[0x3c..0x40].copy_from_slice(&pe.to_le_bytes());
                let p = pe as usize;
                if bytes.len() > p + 4 {
                    bytes[p..p + 4].copy_from_slice(b"PE\0\0");
                }
            }
            let _ = uki_security_version(&mut std::io::Cursor::new(&bytes));
        }

        #[test]
        fn name_parsing_never_panics(s in "\\PC{0,80}") {
            let _ = entry_path(&s);
            let _ = counter(&s);
            let _ = good_path(&s);
        }

        #[test]
        fn gpt_reading_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("d");
            let mut b = bytes.clone();
            if b.len() > 520 {
                b[512..520].copy_from_slice(b"EFI PART");
            }
            std::fs::write(&p, &b).unwrap();
            let _ = gpt_partition_guids(&p);
        }
    }
}
