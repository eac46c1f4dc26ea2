//! Which extra kernel command-line words a profile may add
//! (`kernel.cmdline`), and why the others are refused.
//!
//! The command line is measured (it is a section of the signed UKI), so a
//! word is never a secret change; but a word can undo what the image is
//! built to guarantee: that only the measured initramfs and the gateway
//! init run first, that the Linux security modules, lockdown and module
//! signing stay as the kernel was configured, that the compartments'
//! seccomp filters police the one system-call ABI they are written for,
//! that CPU-vulnerability mitigations and kernel hardening stay on, that
//! devices cannot reach all memory by DMA, and that nobody at a console
//! gets kernel-level access. Words that would do any of that are refused,
//! each family with its reason; anything else (console, logging, driver
//! options, hardening that adds protection) is passed to the kernel as
//! written.
//!
//! Parameter names are compared as the kernel compares them: `-` and `_`
//! are the same character. Boolean values are read as the kernel's
//! `kstrtobool` reads them (`0`, `n`, `no`, `off` are false). A parameter
//! whose every value weakens something is refused whatever its value: the
//! image, not the profile, decides it.

/// The family of a refused word: what it would undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// It would let code other than the measured initramfs's gateway init
    /// run first, or hand the init arguments or environment.
    Userland,
    /// It would turn off or replace a Linux security module, lockdown or
    /// the integrity subsystem.
    SecurityModules,
    /// It would open a second system-call entry (another ABI) or map the
    /// legacy vsyscall page.
    SyscallAbi,
    /// It would turn off a CPU-vulnerability mitigation or a kernel
    /// hardening.
    Mitigations,
    /// It would let kernel modules load unsigned or skip CPU microcode.
    Modules,
    /// It would weaken the isolation of memory from devices (IOMMU) or of
    /// the compartments' resources (cgroup controllers).
    Isolation,
    /// It would give whoever holds a console or debug port kernel-level
    /// access, or print kernel secrets.
    Debug,
    /// It would set a sysctl before the init sets its own.
    Sysctl,
    /// It would change how the kernel splits the command line into words.
    Syntax,
}

impl Family {
    fn what(self) -> &'static str {
        match self {
            Family::Userland => "would let something other than the measured initramfs and its gateway init decide what runs first",
            Family::SecurityModules => "would weaken the Linux security modules, lockdown or integrity checks the image's kernel is built with",
            Family::SyscallAbi => "would give every process a second way into the kernel that the compartments' seccomp filters are not written for",
            Family::Mitigations => "would turn off a CPU-vulnerability mitigation or a kernel hardening",
            Family::Modules => "would let the kernel run code it has not verified",
            Family::Isolation => "would weaken the isolation the compartments rely on",
            Family::Debug => "would give whoever holds a console kernel-level access or reveal kernel secrets",
            Family::Sysctl => "would set a kernel sysctl before the gateway init applies its own",
            Family::Syntax => "would change how the kernel splits the command line",
        }
    }
}

/// When a parameter is refused.
#[derive(Debug, Clone, Copy)]
enum When {
    /// Whatever its value (or none).
    Always,
    /// When its value (case-insensitive) is one of these.
    Values(&'static [&'static str]),
    /// When its value is a kernel boolean false (`0`, `n…`, `off`).
    False,
    /// When its value is a kernel boolean true (`1`, `y…`, `on`) or absent.
    True,
}

/// (parameter name with `_` for `-`, or a prefix ending in `*`; when;
/// family; what it does).
const RULES: &[(&str, When, Family, &str)] = &[
    // The first process and its arguments.
    ("init", When::Always, Family::Userland, "names the program the kernel starts as PID 1 instead of the gateway init"),
    ("rdinit", When::Always, Family::Userland, "names the program the kernel starts from the initramfs instead of the gateway init"),
    ("root", When::Always, Family::Userland, "names a root filesystem outside the measured initramfs"),
    ("nfsroot", When::Always, Family::Userland, "mounts a root filesystem from the network"),
    ("ip", When::Always, Family::Userland, "configures a network card in the kernel's own namespace at boot (for a network root)"),
    ("noinitrd", When::Always, Family::Userland, "makes the kernel ignore the measured initramfs and boot from a disk"),
    ("initrd", When::Always, Family::Userland, "makes the EFI stub load another initramfs from the disk, outside the signed image"),
    ("appliance.*", When::Always, Family::Userland, "is set by the image builder (it pins the runtime plan) and cannot be overridden"),
    // Security modules, lockdown, integrity.
    ("lsm", When::Always, Family::SecurityModules, "chooses which security modules (Landlock, Yama, AppArmor …) run"),
    ("security", When::Always, Family::SecurityModules, "chooses the major security module"),
    ("apparmor", When::Always, Family::SecurityModules, "turns AppArmor on or off"),
    ("selinux", When::Always, Family::SecurityModules, "turns SELinux on or off"),
    ("enforcing", When::Always, Family::SecurityModules, "sets SELinux to permissive"),
    ("checkreqprot", When::Always, Family::SecurityModules, "makes SELinux check the protection a program asked for, not the one applied"),
    ("lockdown", When::Always, Family::SecurityModules, "sets the kernel lockdown, which Secure Boot decides"),
    ("loadpin.*", When::Always, Family::SecurityModules, "changes LoadPin, which pins where the kernel loads files from"),
    ("ima*", When::Always, Family::SecurityModules, "changes the integrity measurement architecture"),
    ("evm", When::Always, Family::SecurityModules, "changes extended verification of file attributes"),
    // Second system-call entries.
    ("syscall.x32", When::Always, Family::SyscallAbi, "turns on the x32 system-call ABI"),
    ("ia32_emulation", When::Always, Family::SyscallAbi, "turns on (or off) the 32-bit system-call ABI; the kernel's configuration decides"),
    ("vsyscall", When::Values(&["emulate", "native"]), Family::SyscallAbi, "maps the legacy vsyscall page readable or executable at a fixed address, a known gadget for exploits"),
    // Mitigations and hardening.
    ("mitigations", When::Values(&["off"]), Family::Mitigations, "turns off every CPU-vulnerability mitigation"),
    ("nopti", When::Always, Family::Mitigations, "turns off page-table isolation (Meltdown)"),
    ("pti", When::Values(&["off"]), Family::Mitigations, "turns off page-table isolation (Meltdown)"),
    ("kpti", When::False, Family::Mitigations, "turns off page-table isolation"),
    ("nosmep", When::Always, Family::Mitigations, "lets the kernel execute user memory (SMEP off)"),
    ("nosmap", When::Always, Family::Mitigations, "lets the kernel read and write user memory freely (SMAP off)"),
    ("clearcpuid", When::Always, Family::Mitigations, "hides CPU features (SMEP, SMAP, UMIP …) from the kernel"),
    ("nospectre_v1", When::Always, Family::Mitigations, "turns off the Spectre v1 mitigation"),
    ("nospectre_v2", When::Always, Family::Mitigations, "turns off the Spectre v2 mitigation"),
    ("nospectre_bhb", When::Always, Family::Mitigations, "turns off the branch-history mitigation"),
    ("nospec_store_bypass_disable", When::Always, Family::Mitigations, "turns off the speculative-store-bypass mitigation"),
    ("noibrs", When::Always, Family::Mitigations, "turns off IBRS"),
    ("noibpb", When::Always, Family::Mitigations, "turns off IBPB"),
    ("spectre_v2", When::Values(&["off"]), Family::Mitigations, "turns off the Spectre v2 mitigation"),
    ("spectre_v2_user", When::Values(&["off"]), Family::Mitigations, "turns off the Spectre v2 mitigation between processes"),
    ("spectre_bhi", When::Values(&["off"]), Family::Mitigations, "turns off the branch-history-injection mitigation"),
    ("spec_store_bypass_disable", When::Values(&["off"]), Family::Mitigations, "turns off the speculative-store-bypass mitigation"),
    ("ssbd", When::Values(&["force-off"]), Family::Mitigations, "turns off the speculative-store-bypass mitigation"),
    ("l1tf", When::Values(&["off"]), Family::Mitigations, "turns off the L1TF mitigation"),
    ("l1d_flush", When::Values(&["off"]), Family::Mitigations, "turns off L1 data-cache flushing"),
    ("mds", When::Values(&["off"]), Family::Mitigations, "turns off the MDS mitigation"),
    ("tsx_async_abort", When::Values(&["off"]), Family::Mitigations, "turns off the TAA mitigation"),
    ("tsx", When::Values(&["on"]), Family::Mitigations, "turns on TSX, the surface of TSX asynchronous abort"),
    ("mmio_stale_data", When::Values(&["off"]), Family::Mitigations, "turns off the MMIO-stale-data mitigation"),
    ("retbleed", When::Values(&["off"]), Family::Mitigations, "turns off the Retbleed mitigation"),
    ("srbds", When::Values(&["off"]), Family::Mitigations, "turns off the SRBDS mitigation"),
    ("gather_data_sampling", When::Values(&["off"]), Family::Mitigations, "turns off the GDS (Downfall) mitigation"),
    ("spec_rstack_overflow", When::Values(&["off"]), Family::Mitigations, "turns off the Inception mitigation"),
    ("reg_file_data_sampling", When::Values(&["off"]), Family::Mitigations, "turns off the RFDS mitigation"),
    ("indirect_target_selection", When::Values(&["off"]), Family::Mitigations, "turns off the ITS mitigation"),
    ("kvm.nx_huge_pages", When::Values(&["off", "never"]), Family::Mitigations, "turns off the iTLB-multihit mitigation"),
    ("kvm_intel.vmentry_l1d_flush", When::Values(&["never"]), Family::Mitigations, "turns off L1TF flushing on VM entry"),
    ("ibt", When::Values(&["off"]), Family::Mitigations, "turns off indirect-branch tracking"),
    ("cfi", When::Values(&["off"]), Family::Mitigations, "turns off control-flow integrity"),
    ("noexec", When::Values(&["off"]), Family::Mitigations, "turns off non-executable memory"),
    ("noexec32", When::Values(&["off"]), Family::Mitigations, "turns off non-executable memory for 32-bit programs"),
    ("nokaslr", When::Always, Family::Mitigations, "turns off kernel address randomisation"),
    ("norandmaps", When::Always, Family::Mitigations, "turns off address randomisation of every program"),
    ("randomize_kstack_offset", When::False, Family::Mitigations, "turns off kernel stack offset randomisation"),
    ("init_on_alloc", When::False, Family::Mitigations, "stops zeroing memory when the kernel hands it out"),
    ("init_on_free", When::False, Family::Mitigations, "stops zeroing memory when the kernel frees it"),
    ("hardened_usercopy", When::False, Family::Mitigations, "turns off bounds checks on copies between kernel and user memory"),
    // Modules and microcode.
    ("module.sig_enforce", When::Always, Family::Modules, "changes whether modules must be signed; the kernel's configuration decides"),
    ("dis_ucode_ldr", When::Always, Family::Modules, "skips loading CPU microcode, on which several mitigations depend"),
    // Isolation.
    ("iommu", When::Values(&["off", "pt", "soft"]), Family::Isolation, "lets devices (the network cards red and black drive) reach memory outside the IOMMU's control"),
    ("iommu.passthrough", When::True, Family::Isolation, "lets devices reach all memory by DMA"),
    ("iommu.strict", When::False, Family::Isolation, "lets devices use memory after it was unmapped for them"),
    ("intel_iommu", When::Values(&["off"]), Family::Isolation, "turns the IOMMU off: devices reach all memory by DMA"),
    ("amd_iommu", When::Values(&["off"]), Family::Isolation, "turns the IOMMU off: devices reach all memory by DMA"),
    ("cgroup_disable", When::Always, Family::Isolation, "removes a cgroup controller the compartments' memory and process limits need"),
    ("cgroup_no_v1", When::Always, Family::Isolation, "changes the cgroup hierarchy the compartments' limits are set in"),
    // Debug access.
    ("kgdb*", When::Always, Family::Debug, "attaches the kernel debugger to a console or port"),
    ("ekgdboc", When::Always, Family::Debug, "attaches the kernel debugger to a console"),
    ("sysrq_always_enabled", When::Always, Family::Debug, "lets a console's SysRq keys kill, dump and reboot"),
    ("debugfs", When::Values(&["on"]), Family::Debug, "exposes debugfs, kernel internals as files"),
    ("no_hash_pointers", When::Always, Family::Debug, "prints kernel addresses in the clear (defeats address randomisation)"),
    ("hash_pointers", When::Values(&["never"]), Family::Debug, "prints kernel addresses in the clear (defeats address randomisation)"),
    // Sysctls.
    ("sysctl.*", When::Always, Family::Sysctl, "sets a sysctl (such as kernel.unprivileged_bpf_disabled) from the command line"),
];

/// `0`, `n…`, `N…`, `off`: what the kernel's `kstrtobool` reads as false.
fn is_false(v: &str) -> bool {
    let b = v.as_bytes();
    match b.first() {
        Some(b'0' | b'n' | b'N') => true,
        Some(b'o' | b'O') => matches!(b.get(1), Some(b'f' | b'F')),
        _ => false,
    }
}

/// `1`, `y…`, `Y…`, `on`, or no value: what the kernel reads as true.
fn is_true(v: Option<&str>) -> bool {
    let Some(v) = v else { return true };
    let b = v.as_bytes();
    match b.first() {
        Some(b'1' | b'y' | b'Y') => true,
        Some(b'o' | b'O') => matches!(b.get(1), Some(b'n' | b'N')),
        _ => false,
    }
}

/// Why `word` may not be added to the kernel command line: its family and
/// a sentence for the administrator; `None` if it may.
pub fn refusal(word: &str) -> Option<(Family, String)> {
    let refuse = |family: Family, what: &str| {
        Some((family, format!("`{word}` {what}: it {}", family.what())))
    };
    if word.contains('"') {
        return refuse(
            Family::Syntax,
            "contains a quote, which joins the words up to the next quote into one (the image builder's own words included)",
        );
    }
    if word == "--" {
        return refuse(
            Family::Userland,
            "passes every word after it to the init as its arguments",
        );
    }
    if word.starts_with('-') {
        return refuse(
            Family::Userland,
            "is an option for the init, not a kernel parameter",
        );
    }
    let (key, value) = match word.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (word, None),
    };
    if matches!(
        key,
        "single" | "emergency" | "rescue" | "s" | "S" | "1" | "2" | "3" | "4" | "5"
    ) {
        return refuse(
            Family::Userland,
            "is a run level the kernel passes to the init",
        );
    }
    if key.bytes().any(|b| b.is_ascii_uppercase()) {
        return refuse(
            Family::Userland,
            "is no kernel parameter (their names are lower case), so the kernel passes it to the init as an environment variable",
        );
    }
    let key = key.replace('-', "_");
    for (name, when, family, what) in RULES {
        let name = name.replace('-', "_");
        let hit = match name.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => key == name,
        };
        if !hit {
            continue;
        }
        let refused = match when {
            When::Always => true,
            When::Values(vs) => value.is_some_and(|v| vs.iter().any(|x| x.eq_ignore_ascii_case(v))),
            When::False => value.is_some_and(is_false),
            When::True => is_true(value),
        };
        if refused {
            return refuse(*family, what);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_words_by_family() {
        use Family::*;
        for (word, family) in [
            ("init=/bin/sh", Userland),
            ("rdinit=/bin/sh", Userland),
            ("root=/dev/sda2", Userland),
            ("root=PARTUUID=1234", Userland),
            ("noinitrd", Userland),
            ("initrd=\\evil.img", Userland),
            ("nfsroot=10.0.0.1:/x", Userland),
            ("ip=dhcp", Userland),
            ("--", Userland),
            ("-s", Userland),
            ("single", Userland),
            ("1", Userland),
            ("LD_PRELOAD=/tmp/x.so", Userland),
            ("Path=/tmp", Userland),
            ("appliance.plan=00", Userland),
            ("lsm=capability", SecurityModules),
            ("lsm=landlock,yama,apparmor", SecurityModules),
            ("security=none", SecurityModules),
            ("apparmor=0", SecurityModules),
            ("selinux=0", SecurityModules),
            ("enforcing=0", SecurityModules),
            ("lockdown=none", SecurityModules),
            ("lockdown=confidentiality", SecurityModules),
            ("loadpin.enforce=0", SecurityModules),
            ("ima_appraise=off", SecurityModules),
            ("ima=off", SecurityModules),
            ("evm=fix", SecurityModules),
            ("syscall.x32=y", SyscallAbi),
            ("syscall.x32=Yes", SyscallAbi),
            ("syscall.x32", SyscallAbi),
            ("syscall.x32=1", SyscallAbi),
            ("ia32_emulation=1", SyscallAbi),
            ("ia32-emulation=true", SyscallAbi),
            ("vsyscall=emulate", SyscallAbi),
            ("vsyscall=native", SyscallAbi),
            ("mitigations=off", Mitigations),
            ("mitigations=OFF", Mitigations),
            ("nopti", Mitigations),
            ("pti=off", Mitigations),
            ("kpti=0", Mitigations),
            ("nosmep", Mitigations),
            ("nosmap", Mitigations),
            ("clearcpuid=smep", Mitigations),
            ("nospectre_v2", Mitigations),
            ("nospectre-v1", Mitigations),
            ("spectre_v2=off", Mitigations),
            ("spectre-v2-user=off", Mitigations),
            ("spec_store_bypass_disable=off", Mitigations),
            ("ssbd=force-off", Mitigations),
            ("l1tf=off", Mitigations),
            ("mds=off", Mitigations),
            ("tsx=on", Mitigations),
            ("tsx_async_abort=off", Mitigations),
            ("retbleed=off", Mitigations),
            ("gather_data_sampling=off", Mitigations),
            ("kvm.nx_huge_pages=off", Mitigations),
            ("nokaslr", Mitigations),
            ("norandmaps", Mitigations),
            ("randomize_kstack_offset=off", Mitigations),
            ("init_on_free=0", Mitigations),
            ("init_on_alloc=n", Mitigations),
            ("hardened_usercopy=off", Mitigations),
            ("noexec=off", Mitigations),
            ("module.sig_enforce=0", Modules),
            ("module.sig_enforce=1", Modules),
            ("module.sig-enforce", Modules),
            ("dis_ucode_ldr", Modules),
            ("iommu=off", Isolation),
            ("iommu=pt", Isolation),
            ("iommu.passthrough=1", Isolation),
            ("iommu.strict=0", Isolation),
            ("intel_iommu=off", Isolation),
            ("amd_iommu=off", Isolation),
            ("cgroup_disable=memory", Isolation),
            ("kgdboc=ttyS0,115200", Debug),
            ("kgdbwait", Debug),
            ("sysrq_always_enabled", Debug),
            ("debugfs=on", Debug),
            ("no_hash_pointers", Debug),
            ("sysctl.kernel.unprivileged_bpf_disabled=0", Sysctl),
            ("sysctl.kernel.yama.ptrace_scope=0", Sysctl),
            ("console=\"ttyS0", Syntax),
            ("\"", Syntax),
        ] {
            match refusal(word) {
                Some((f, msg)) => {
                    assert_eq!(f, family, "{word}: {msg}");
                    assert!(msg.starts_with(&format!("`{word}` ")), "{msg}");
                }
                None => panic!("`{word}` accepted"),
            }
        }
    }

    #[test]
    fn harmless_and_hardening_words_pass() {
        for word in [
            "quiet",
            "loglevel=3",
            "console=ttyS0,115200",
            "panic=10",
            "mitigations=auto",
            "mitigations=auto,nosmt",
            "nosmt",
            "spectre_v2=retpoline",
            "pti=on",
            "kpti=1",
            "tsx=off",
            "vsyscall=none",
            "vsyscall=xonly",
            "slab_nomerge",
            "init_on_free=1",
            "init_on_alloc=1",
            "randomize_kstack_offset=on",
            "debugfs=off",
            "iommu=force",
            "iommu=nopt",
            "intel_iommu=on",
            "iommu.strict=1",
            "iommu.passthrough=0",
            "module_blacklist=floppy",
            "modprobe.blacklist=floppy",
            "ipv6.disable=1",
            "tpm_tis.interrupts=0",
            "lsm.debug",
            "random.trust_cpu=off",
            "net.ifnames=0",
            "é日ß",
        ] {
            assert_eq!(refusal(word), None, "{word}");
        }
    }

    #[test]
    fn kernel_booleans() {
        for v in ["0", "n", "N", "no", "off", "OFF", "Off"] {
            assert!(is_false(v), "{v}");
        }
        for v in ["1", "y", "yes", "on", "ON", "", "of?"] {
            assert_eq!(is_false(v), v == "of?", "{v}");
        }
        assert!(is_true(None) && is_true(Some("on")) && is_true(Some("Y")));
        assert!(!is_true(Some("0")) && !is_true(Some("off")));
    }
}
