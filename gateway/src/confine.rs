//! Confinement of personality processes: the seccomp denylist (data, one reason per
//! system call), the Landlock filesystem rules and the capability bounding set.
//!
//! A personality is untrusted Linux userland, so its filter is a *denylist*: ordinary
//! programs (shells, `ip`, dnsmasq, DHCP clients) keep working, while every system
//! call that reaches beyond the compartment or could undo its confinement fails with
//! `EPERM`. The other layers (user namespace without a mapping for real root, read-only
//! root filesystem, no device nodes but null/zero/full/random/urandom, no TPM) hold even
//! if a call is missing here; the filter closes the kernel attack surface on top.
//!
//! The Viaduct is confined by its own allowlist (crate `viaduct`, `confine.rs`).

use landlock::{
    path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    ABI,
};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use std::collections::BTreeMap;

/// System calls a personality may never make, each with why. They fail with `EPERM`.
pub const PERSONALITY_DENYLIST: &[(i64, &str)] = &[
    (libc::SYS_init_module, "load a kernel module"),
    (libc::SYS_finit_module, "load a kernel module from a file"),
    (libc::SYS_delete_module, "unload a kernel module"),
    (libc::SYS_kexec_load, "replace the running kernel"),
    (libc::SYS_kexec_file_load, "replace the running kernel"),
    (libc::SYS_ptrace, "inspect or control another process"),
    (libc::SYS_process_vm_readv, "read another process's memory"),
    (
        libc::SYS_process_vm_writev,
        "write another process's memory",
    ),
    (libc::SYS_bpf, "load eBPF programs into the kernel"),
    (
        libc::SYS_perf_event_open,
        "kernel/hardware performance monitoring (side channels)",
    ),
    (
        libc::SYS_mount,
        "mount filesystems (the compartment's mounts are fixed by the init)",
    ),
    (libc::SYS_umount2, "unmount and reveal what lies beneath"),
    (libc::SYS_pivot_root, "change the root filesystem"),
    (libc::SYS_chroot, "change root (chroot escapes)"),
    (libc::SYS_open_tree, "new mount API: clone mounts"),
    (libc::SYS_move_mount, "new mount API: attach mounts"),
    (
        libc::SYS_fsopen,
        "new mount API: create a filesystem context",
    ),
    (
        libc::SYS_fsconfig,
        "new mount API: configure a filesystem context",
    ),
    (libc::SYS_fsmount, "new mount API: create a mount"),
    (libc::SYS_fspick, "new mount API: reconfigure a mount"),
    (
        libc::SYS_mount_setattr,
        "change mount attributes (e.g. drop read-only)",
    ),
    (
        libc::SYS_setns,
        "join another namespace (the init's, the other personality's)",
    ),
    (
        libc::SYS_unshare,
        "create namespaces (a fresh user namespace regains capabilities)",
    ),
    (libc::SYS_keyctl, "kernel keyrings are not namespaced"),
    (libc::SYS_add_key, "kernel keyrings are not namespaced"),
    (libc::SYS_request_key, "kernel keyrings are not namespaced"),
    (libc::SYS_syslog, "read or clear the kernel log"),
    (libc::SYS_reboot, "reboot or power off the gateway"),
    (libc::SYS_kcmp, "compare kernel objects of other processes"),
    (libc::SYS_swapon, "enable swap"),
    (libc::SYS_swapoff, "disable swap"),
    (libc::SYS_acct, "process accounting to a file"),
    (
        libc::SYS_settimeofday,
        "set the system clock (not namespaced)",
    ),
    (
        libc::SYS_clock_settime,
        "set the system clock (not namespaced)",
    ),
    (
        libc::SYS_clock_adjtime,
        "adjust the system clock (not namespaced)",
    ),
    (
        libc::SYS_adjtimex,
        "adjust the system clock (not namespaced)",
    ),
    (
        libc::SYS_userfaultfd,
        "page-fault handling in user space (kernel exploit primitive)",
    ),
    (
        libc::SYS_open_by_handle_at,
        "open files by handle, bypassing path checks",
    ),
    (
        libc::SYS_name_to_handle_at,
        "obtain file handles for open_by_handle_at",
    ),
    (libc::SYS_quotactl, "filesystem quotas"),
    (libc::SYS_iopl, "raw I/O port access"),
    (libc::SYS_ioperm, "raw I/O port access"),
    (libc::SYS_lookup_dcookie, "kernel profiling interface"),
    (libc::SYS_vhangup, "hang up the terminal"),
    (
        libc::SYS_personality,
        "change execution domain (e.g. disable ASLR)",
    ),
    (libc::SYS_fanotify_init, "filesystem-wide monitoring"),
    (
        libc::SYS_io_uring_setup,
        "io_uring bypasses this filter for the operations it runs",
    ),
    (
        libc::SYS_io_uring_enter,
        "io_uring bypasses this filter for the operations it runs",
    ),
    (
        libc::SYS_io_uring_register,
        "io_uring bypasses this filter for the operations it runs",
    ),
];

/// `clone` flags a personality may not use (each a new namespace; a new user namespace
/// would give back every capability inside it). `clone` with any of them fails with
/// `EPERM`; `clone3`, whose flags the filter cannot see, fails with `ENOSYS` so that
/// the C library falls back to `clone`.
pub const DENIED_CLONE_FLAGS: &[(libc::c_int, &str)] = &[
    (libc::CLONE_NEWUSER, "new user namespace"),
    (libc::CLONE_NEWNS, "new mount namespace"),
    (libc::CLONE_NEWNET, "new network namespace"),
    (libc::CLONE_NEWPID, "new PID namespace"),
    (libc::CLONE_NEWIPC, "new IPC namespace"),
    (libc::CLONE_NEWUTS, "new UTS namespace"),
    (libc::CLONE_NEWCGROUP, "new cgroup namespace"),
];

/// Errors while confining.
#[derive(Debug, thiserror::Error)]
#[error("confinement step {step}: {detail}")]
pub struct ConfineError {
    /// Which step failed.
    pub step: &'static str,
    /// What the library or kernel said.
    pub detail: String,
}

fn err(step: &'static str, detail: impl ToString) -> ConfineError {
    ConfineError {
        step,
        detail: detail.to_string(),
    }
}

fn compile(
    rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>>,
    errno: i32,
) -> Result<BpfProgram, ConfineError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| err("seccomp", e))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .map_err(|e| err("seccomp", e))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| err("seccomp", e))
}

/// Compiles the personality filters for this architecture: [`PERSONALITY_DENYLIST`]
/// and [`DENIED_CLONE_FLAGS`] (→ `EPERM`), then `clone3` (→ `ENOSYS`). Everything
/// else is allowed. Install both with [`apply_filters`].
pub fn personality_filters() -> Result<Vec<BpfProgram>, ConfineError> {
    use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = PERSONALITY_DENYLIST
        .iter()
        .map(|(nr, _)| (*nr, Vec::new()))
        .collect();
    let clone_rules = DENIED_CLONE_FLAGS
        .iter()
        .map(|&(flag, _)| {
            let flag = flag as u64;
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(|e| err("seccomp", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    let deny = compile(rules, libc::EPERM)?;
    let clone3 = compile(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        libc::ENOSYS,
    )?;
    Ok(vec![deny, clone3])
}

/// Installs compiled filters on the calling thread (inherited by children and kept
/// across `execve`). Needs `no_new_privs` or CAP_SYS_ADMIN.
pub fn apply_filters(programs: &[BpfProgram]) -> Result<(), ConfineError> {
    for p in programs {
        seccompiler::apply_filter(p).map_err(|e| err("seccomp", e))?;
    }
    Ok(())
}

/// Drops every capability not in `keep` (numbers) from the bounding set. Needs
/// CAP_SETPCAP in the current user namespace.
pub fn limit_bounding_set(keep: &[u8]) -> Result<(), ConfineError> {
    for cap in caps::all() {
        if !keep.contains(&cap.index()) {
            caps::drop(None, caps::CapSet::Bounding, cap).map_err(|e| err("bounding set", e))?;
        }
    }
    Ok(())
}

/// What Landlock achieved on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LandlockStatus {
    /// Every requested restriction is enforced.
    Full,
    /// Some (the kernel's ABI is older than ours).
    Partial,
    /// None: the kernel has no Landlock (or it is disabled).
    Unavailable,
}

/// Landlock for a compartment (inside its chroot): read and execute everywhere,
/// write only below `/run`, `/tmp`, `/dev`, and to files below `/proc` (open for
/// writing and truncating, as the shell's `>` does; network
/// sysctls; the rule sits on the procfs root because sysctl directories get a new
/// inode on each lookup; file permissions still keep every non-network sysctl, owned
/// by real root, read-only for the personality).
pub fn landlock_personality() -> Result<LandlockStatus, ConfineError> {
    let abi = ABI::V3;
    let read = AccessFs::from_read(abi);
    let all = AccessFs::from_all(abi);
    let status = Ruleset::default()
        .handle_access(all)
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(["/"], read)))
        .and_then(|r| r.add_rules(path_beneath_rules(["/run", "/tmp", "/dev"], all)))
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                ["/proc"],
                AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate,
            ))
        })
        .and_then(|r| r.restrict_self())
        .map_err(|e| err("landlock", e))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockStatus::Full,
        RulesetStatus::PartiallyEnforced => LandlockStatus::Partial,
        RulesetStatus::NotEnforced => LandlockStatus::Unavailable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denylist_compiles_covers_the_issue_and_has_reasons() {
        assert_eq!(personality_filters().unwrap().len(), 2);
        for nr in [
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_kexec_load,
            libc::SYS_kexec_file_load,
            libc::SYS_ptrace,
            libc::SYS_bpf,
            libc::SYS_mount,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_setns,
        ] {
            assert!(
                PERSONALITY_DENYLIST.iter().any(|(n, _)| *n == nr),
                "syscall {nr} not denied"
            );
        }
        let mut seen = std::collections::HashSet::new();
        assert!(PERSONALITY_DENYLIST
            .iter()
            .all(|(n, why)| seen.insert(*n) && !why.is_empty()));
        // What ordinary userland needs stays allowed.
        for nr in [
            libc::SYS_execve,
            libc::SYS_socket,
            libc::SYS_openat,
            libc::SYS_clone,
        ] {
            assert!(PERSONALITY_DENYLIST.iter().all(|(n, _)| *n != nr));
        }
    }
}
