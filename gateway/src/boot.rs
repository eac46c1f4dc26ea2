//! The boot sequence, with every path injectable so it runs in tests as well as PID 1.
//!
//! Order: log version → read the plan digest from the kernel command line → hash the
//! plan file and compare (constant time) → decode the plan → load its modules in order
//! → hash the policy blob and compare → read PCRs 4, 7, 11 and print them → print the
//! firmware event log. The caller then starts the compartments ([`crate::runtime`])
//! and prints `ready <profile> <version>` ([`ready_line`]).
//!
//! Invariants: `ready` is printed only if the plan matches the cmdline digest, decodes,
//! all modules load and the policy matches; any such failure returns an error and the
//! caller stays closed. TPM problems are reported loudly but do not close the gateway
//! (the policy is still enforced; remote attestation will fail instead). Nothing here
//! panics.

use crate::console::Logger;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::plan::{Plan, MAX_PLAN_LEN};
use crate::tpm::{self, PcrIndex, StreamTransport};
use std::io::Read;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The PCRs printed at boot: boot loader and UKI (4), Secure Boot state (7), UKI
/// sections incl. cmdline (11), the command line the boot loader passed (12).
pub const BOOT_PCRS: [u8; 4] = [4, 7, 11, 12];

/// Where things are. [`Env::device`] gives the real paths.
#[derive(Clone, Debug)]
pub struct Env {
    /// Root of the initramfs (`/` on the device); plan, policy and modules are below it.
    pub root: PathBuf,
    /// The kernel command line (`/proc/cmdline`).
    pub cmdline: PathBuf,
    /// TPM character devices to try, first existing wins.
    pub tpm_devices: Vec<PathBuf>,
    /// The firmware event log in securityfs.
    pub event_log: PathBuf,
    /// The kernel's console log level control (`/proc/sys/kernel/printk`):
    /// lowered while the event log is dumped so kernel messages cannot land
    /// in the middle of a chunk line. `None` leaves it alone.
    pub printk: Option<PathBuf>,
}

impl Env {
    /// The paths on the device.
    pub fn device() -> Self {
        Env {
            root: PathBuf::from("/"),
            cmdline: PathBuf::from("/proc/cmdline"),
            tpm_devices: vec![PathBuf::from("/dev/tpmrm0"), PathBuf::from("/dev/tpm0")],
            event_log: PathBuf::from(crate::eventlog::BIOS_MEASUREMENTS),
            printk: Some(PathBuf::from("/proc/sys/kernel/printk")),
        }
    }
}

/// What happened to one module.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ModuleOutcome {
    /// Newly loaded.
    Loaded,
    /// Was already loaded (EEXIST).
    AlreadyLoaded,
}

/// Loads kernel modules (real: `finit_module`; tests: a recorder).
pub trait ModuleLoader {
    /// Loads the module at `path` (a path below the initramfs root).
    fn load(&mut self, path: &Path) -> Result<ModuleOutcome>;
}

/// Loads modules with `finit_module(2)`.
pub struct KernelModules;

impl ModuleLoader for KernelModules {
    fn load(&mut self, path: &Path) -> Result<ModuleOutcome> {
        use std::os::fd::AsFd;
        let f =
            std::fs::File::open(path).map_err(|e| Error::io("opening kernel module", path, e))?;
        match crate::sys::finit_module(f.as_fd()) {
            Ok(()) => Ok(ModuleOutcome::Loaded),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(ModuleOutcome::AlreadyLoaded),
            Err(e) => Err(Error::Module {
                path: path.to_owned(),
                hint: module_errno_hint(e.raw_os_error().unwrap_or(0)),
                errno: e.raw_os_error().unwrap_or(0),
                source: e,
            }),
        }
    }
}

/// What an errno from `finit_module(2)` usually means, for the operator.
pub fn module_errno_hint(errno: i32) -> &'static str {
    match errno {
        libc::ENOENT => "unknown symbol: a module it depends on is missing from the plan or listed after it (see the kernel log)",
        libc::ENOEXEC => "not a valid module for this kernel (compressed, or built for another kernel version)",
        libc::EPERM => "module loading is not permitted (missing CAP_SYS_MODULE, or modules disabled)",
        libc::EKEYREJECTED | libc::EBADMSG | libc::ENOKEY => "module signature rejected (lockdown / Secure Boot requires signed modules)",
        libc::EINVAL => "invalid module or parameters (see the kernel log)",
        _ => "check that the profile's driver set matches the kernel",
    }
}

/// Reads a whole file, refusing files larger than `limit` bytes.
pub fn read_limited(path: &Path, limit: usize, what: &'static str) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(what, path, e))?;
    let mut buf = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    f.take(cap)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(what, path, e))?;
    if buf.len() > limit {
        return Err(Error::io(
            what,
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("larger than {limit} bytes"),
            ),
        ));
    }
    Ok(buf)
}

/// Largest policy blob accepted.
pub const MAX_POLICY_LEN: usize = 16 * 1024 * 1024;

/// Reads a file that holds secrets (the policy blob, with its keys) into a buffer that
/// is wiped when dropped, refusing files larger than `limit` bytes. The buffer is
/// sized from the file's length up front; should the file be longer, it moves into a
/// bigger buffer and the old one is wiped, so no reallocation leaves a copy behind.
pub fn read_secret(path: &Path, limit: usize, what: &'static str) -> Result<Zeroizing<Vec<u8>>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(what, path, e))?;
    let hint = f.metadata().map(|m| m.len()).unwrap_or(0);
    let first = usize::try_from(hint)
        .unwrap_or(usize::MAX)
        .max(4096)
        .min(limit)
        .saturating_add(1);
    let mut buf = Zeroizing::new(vec![0u8; first]);
    let mut len = 0;
    loop {
        if len == buf.len() {
            if len > limit {
                return Err(Error::io(
                    what,
                    path,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("larger than {limit} bytes"),
                    ),
                ));
            }
            let mut bigger = Zeroizing::new(vec![
                0u8;
                len.saturating_mul(2).min(limit.saturating_add(1))
            ]);
            bigger[..len].copy_from_slice(&buf[..len]);
            buf = bigger;
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(what, path, e)),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// Reads the policy blob at `path` and checks it against `expected` (constant time):
/// the bytes returned are exactly the bytes that were hashed, in a buffer wiped on
/// drop. This is what the Viaduct is given, read afresh for each start, so the init
/// keeps no copy of the keys between starts.
pub fn read_verified_policy(path: &Path, expected: &Sha256Digest) -> Result<Zeroizing<Vec<u8>>> {
    let blob = read_secret(path, MAX_POLICY_LEN, "reading policy blob")?;
    let actual = Sha256Digest::of_secret(&blob);
    if !actual.ct_eq(expected) {
        return Err(Error::PolicyDigestMismatch {
            path: path.to_owned(),
            expected: expected.to_hex(),
            actual: actual.to_hex(),
        });
    }
    Ok(blob)
}

/// Verifies the plan against the cmdline and decodes it.
pub fn load_plan(env: &Env) -> Result<Plan> {
    let cmdline = read_limited(&env.cmdline, 64 * 1024, "reading kernel command line")?;
    let path = env.root.join(&crate::plan::PLAN_PATH[1..]);
    let bytes = read_limited(&path, MAX_PLAN_LEN, "reading plan")?;
    check_plan(&cmdline, &bytes, &path)
}

/// The checks of [`load_plan`] on bytes already read: the kernel command line must
/// pin the plan's digest (`appliance.plan=`), the plan must hash to it (constant-time
/// comparison) and decode. `path` only names the plan in errors. Never panics.
pub fn check_plan(cmdline: &[u8], bytes: &[u8], path: &Path) -> Result<Plan> {
    let pinned = crate::cmdline::plan_digest(&String::from_utf8_lossy(cmdline))?;
    let actual = Sha256Digest::of(bytes);
    if !actual.ct_eq(&pinned) {
        return Err(Error::PlanDigestMismatch {
            path: path.to_owned(),
            expected: pinned.to_hex(),
            actual: actual.to_hex(),
        });
    }
    Ok(Plan::decode(bytes)?)
}

/// Verifies the policy blob named by the plan (its bytes are wiped afterwards).
pub fn verify_policy(env: &Env, plan: &Plan) -> Result<Sha256Digest> {
    let path = plan.policy_path.under(&env.root);
    read_verified_policy(&path, &plan.policy_sha256).map(|_| plan.policy_sha256)
}

/// Prints `pcr <n> sha256 <hex>` for [`BOOT_PCRS`] using `t`.
pub fn report_pcrs(t: &mut dyn tpm::Transport, log: &mut Logger) -> Result<()> {
    let pcrs: Vec<PcrIndex> = BOOT_PCRS.iter().filter_map(|&n| PcrIndex::new(n)).collect();
    for (p, d) in tpm::read_pcrs(t, &pcrs)? {
        log.log(&format!("pcr {p} sha256 {d}"));
    }
    Ok(())
}

/// Finds the TPM, reads and prints the boot PCRs; prints the event log if present.
/// Errors are logged, never returned (see module invariants).
pub fn report_measurements(env: &Env, log: &mut Logger) {
    match env.tpm_devices.iter().find(|p| p.exists()) {
        None => log.log("tpm absent: no PCRs to report"),
        Some(dev) => {
            let opened = std::fs::OpenOptions::new().read(true).write(true).open(dev);
            match opened {
                Err(e) => log.log(&format!("tpm error: opening {}: {e}", dev.display())),
                Ok(f) => {
                    log.log(&format!("tpm {}", dev.display()));
                    if let Err(e) = report_pcrs(&mut StreamTransport(f), log) {
                        log.log(&format!("tpm error: {e}"));
                    }
                }
            }
        }
    }
    if env.event_log.exists() {
        match read_limited(&env.event_log, 4 * 1024 * 1024, "reading event log") {
            Ok(bytes) => {
                // Only emergencies reach the console during the dump; the
                // previous console level is restored after it.
                let saved = env.printk.as_ref().and_then(|p| {
                    let level = std::fs::read_to_string(p).ok()?;
                    let level = level.split_whitespace().next()?.to_owned();
                    std::fs::write(p, "1").ok()?;
                    Some((p, level))
                });
                for line in crate::eventlog::frame(&bytes) {
                    log.log(&line);
                }
                if let Some((p, level)) = saved {
                    let _ = std::fs::write(p, level);
                }
            }
            Err(e) => log.log(&format!("eventlog error: {e}")),
        }
    } else {
        log.log("eventlog absent");
    }
}

/// A `microvm` image carries KVM for both processor vendors (`kvm_amd`,
/// `kvm_intel`): the other vendor's refuses to load. `Some(vendor)` when
/// the module at `path` is KVM for a vendor that `cpuinfo`'s
/// (`/proc/cpuinfo`) processor is not; `None` for any other module, and
/// when the vendor cannot be told (then loading decides).
pub fn kvm_for_another_cpu(path: &str, cpuinfo: &str) -> Option<&'static str> {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split('.').next().unwrap_or(file);
    let (module_vendor, ids): (&'static str, &[&str]) = match stem {
        "kvm-amd" | "kvm_amd" => ("AMD", &["AuthenticAMD", "HygonGenuine"]),
        "kvm-intel" | "kvm_intel" => ("Intel", &["GenuineIntel"]),
        _ => return None,
    };
    let vendor = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("vendor_id"))
        .and_then(|rest| rest.split(':').nth(1))
        .map(str::trim)?;
    (!ids.contains(&vendor)).then_some(module_vendor)
}

/// The line that tells the operator (and the tests) the gateway is up.
pub fn ready_line(plan: &Plan) -> String {
    format!("ready {} {}", plan.profile_name, plan.profile_version)
}

/// Runs the verified boot sequence. `Ok(plan)` means every check passed; the caller
/// starts the compartments and then prints [`ready_line`].
pub fn run(env: &Env, modules: &mut dyn ModuleLoader, log: &mut Logger) -> Result<Plan> {
    log.log(&format!("gateway-init {}", env!("CARGO_PKG_VERSION")));
    let plan = load_plan(env)?;
    log.log(&format!(
        "plan sha256 {} profile {} version {} security-version {}",
        plan.digest(),
        plan.profile_name,
        plan.profile_version,
        plan.security_version.0
    ));
    let cpuinfo = std::fs::read_to_string(env.root.join("proc/cpuinfo")).unwrap_or_default();
    for m in &plan.modules {
        if let Some(vendor) = kvm_for_another_cpu(m.path().as_str(), &cpuinfo) {
            log.log(&format!(
                "module {} skipped: KVM for {vendor} processors, and this one is not",
                m.path()
            ));
            continue;
        }
        let outcome = modules.load(&m.path().under(&env.root))?;
        let what = match outcome {
            ModuleOutcome::Loaded => "loaded",
            ModuleOutcome::AlreadyLoaded => "already loaded",
        };
        log.log(&format!("module {} {what}", m.path()));
    }
    let policy = verify_policy(env, &plan)?;
    log.log(&format!("policy {} sha256 {policy}", plan.policy_path));
    report_measurements(env, log);
    measure_runtime(&env.tpm_devices, &plan, log)?;
    Ok(plan)
}

/// The events the init extends for `plan` before it starts anything (PCR 12: the
/// plan's digest, then the compiled policy's; see `attest_wire::runtime`).
pub fn runtime_events(plan: &Plan) -> Vec<attest_wire::runtime::Event> {
    attest_wire::runtime::boot_events(&plan.digest().to_hex(), &plan.policy_sha256.to_hex())
}

/// Extends [`runtime_events`] into their PCRs, logging each as `measured pcr <n> <event>`.
/// Without a TPM nothing is measured (said on the console); a TPM that fails keeps
/// the gateway closed: a verifier would see PCR 12 unexplained, and nothing may start
/// unmeasured.
///
/// # Errors
/// The TPM cannot be opened or refuses an extend.
pub fn measure_runtime(tpm_devices: &[PathBuf], plan: &Plan, log: &mut Logger) -> Result<()> {
    let Some(dev) = tpm_devices.iter().find(|p| p.exists()) else {
        log.log("tpm absent: the plan and policy are not measured into PCR 12");
        return Ok(());
    };
    let mut t = crate::runtime::open_tpm(dev)?;
    measure_with(&mut *t, plan, log)
}

/// [`measure_runtime`] on an open TPM.
///
/// # Errors
/// The TPM refuses an extend.
pub fn measure_with(t: &mut dyn tpm::Transport, plan: &Plan, log: &mut Logger) -> Result<()> {
    for e in runtime_events(plan) {
        let pcr = PcrIndex::new(e.pcr).ok_or_else(|| {
            crate::error::Error::TpmMalformed(format!("runtime event for PCR {}", e.pcr))
        })?;
        tpm::extend_pcr(t, pcr, &Sha256Digest(e.digest()))?;
        log.log(&format!("measured pcr {} {}", e.pcr, e.text));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_of_the_other_vendor_is_skipped() {
        let amd = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 23\n";
        let intel = "processor\t: 0\nvendor_id\t: GenuineIntel\n";
        let dir = "/lib/modules/6.1.0-57-amd64/kernel/arch/x86/kvm";
        let kvm_amd = format!("{dir}/kvm-amd.ko");
        let kvm_intel = format!("{dir}/kvm-intel.ko");
        assert_eq!(kvm_for_another_cpu(&kvm_intel, amd), Some("Intel"));
        assert_eq!(kvm_for_another_cpu(&kvm_amd, amd), None);
        assert_eq!(kvm_for_another_cpu(&kvm_amd, intel), Some("AMD"));
        assert_eq!(kvm_for_another_cpu(&kvm_intel, intel), None);
        assert_eq!(
            kvm_for_another_cpu("/x/kvm_amd.ko.xz", "vendor_id : HygonGenuine"),
            None
        );
        // Not KVM, or no vendor to tell: load it.
        assert_eq!(kvm_for_another_cpu(&format!("{dir}/kvm.ko"), amd), None);
        assert_eq!(kvm_for_another_cpu(&kvm_intel, ""), None);
    }

    #[test]
    fn secrets_are_read_whole_and_limited() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blob");
        for n in [0usize, 1, 4095, 4096, 4097, 10_000, 70_000] {
            let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            std::fs::write(&p, &data).unwrap();
            assert_eq!(
                &read_secret(&p, 1 << 20, "t").unwrap()[..],
                &data[..],
                "{n}"
            );
            assert_eq!(
                &read_secret(&p, n, "t").unwrap()[..],
                &data[..],
                "{n} at the limit"
            );
            if n > 0 {
                assert!(read_secret(&p, n - 1, "t").is_err(), "{n} over the limit");
            }
        }
        assert!(read_secret(&dir.path().join("none"), 10, "t").is_err());
    }

    #[test]
    fn the_verified_policy_is_the_bytes_that_were_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("policy.bin");
        std::fs::write(&p, b"policy bytes").unwrap();
        let pinned = Sha256Digest::of(b"policy bytes");
        assert_eq!(
            &read_verified_policy(&p, &pinned).unwrap()[..],
            b"policy bytes"
        );
        std::fs::write(&p, b"policy bytez").unwrap();
        assert!(matches!(
            read_verified_policy(&p, &pinned),
            Err(Error::PolicyDigestMismatch { .. })
        ));
    }
}
