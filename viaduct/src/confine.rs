//! Self-confinement of the Viaduct process, applied after the TUN ports are
//! open and the policy is loaded, before the pump threads start (so they
//! inherit every restriction):
//!
//! 1. capability bounding set emptied (while CAP_SETPCAP is still held);
//! 2. `no_new_privs` set;
//! 3. Landlock ruleset handling every filesystem and TCP access with no rule,
//!    i.e. no filesystem access at all (best effort: older kernels without
//!    Landlock still get 5.);
//! 4. effective, permitted, inheritable and ambient capabilities cleared;
//! 5. seccomp filter from [`SYSCALL_ALLOWLIST`]: every other system call
//!    kills the process. `open`/`openat` are not in the list.
//!
//! The allowlist is data: one entry per system call with the reason it is
//! needed. Confinement failing is an error; the Viaduct never runs
//! unconfined when asked to confine.

use std::collections::BTreeMap;

use caps::CapSet;
use landlock::{Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetStatus, ABI};
use seccompiler::{SeccompAction, SeccompFilter, TargetArch};

use crate::error::EngineError;

/// The system calls the pump may make after confinement, each with why.
pub const SYSCALL_ALLOWLIST: &[(i64, &str)] = &[
    (libc::SYS_read, "read packets from the TUN ports"),
    (
        libc::SYS_write,
        "write packets to the TUN ports and counters to stderr",
    ),
    (libc::SYS_writev, "std's stderr may write vectored"),
    (
        libc::SYS_ppoll,
        "wait for packets with a timeout (rustix poll)",
    ),
    (libc::SYS_futex, "thread join and std synchronisation"),
    (
        libc::SYS_rt_sigtimedwait,
        "main thread waits for SIGUSR1/SIGTERM (sigtimedwait, 200 ms, so it also notices a pump thread that ended)",
    ),
    (
        libc::SYS_rt_sigprocmask,
        "glibc masks signals around thread creation",
    ),
    (
        libc::SYS_rt_sigreturn,
        "return from a signal handler installed by std",
    ),
    (
        libc::SYS_rt_sigaction,
        "std checks/installs its stack-overflow (SIGSEGV) handler per thread",
    ),
    (
        libc::SYS_sigaltstack,
        "std installs a stack-overflow handler stack per thread",
    ),
    (libc::SYS_clone3, "start the two pump threads"),
    (libc::SYS_clone, "start the pump threads (older glibc path)"),
    (libc::SYS_mmap, "allocate thread stacks and heap"),
    (libc::SYS_munmap, "free thread stacks and heap"),
    (libc::SYS_mprotect, "thread stack guard pages"),
    (libc::SYS_madvise, "glibc releases freed thread stacks"),
    (libc::SYS_brk, "heap growth"),
    (libc::SYS_set_robust_list, "glibc thread start"),
    (libc::SYS_rseq, "glibc thread start (restartable sequences)"),
    (libc::SYS_sched_yield, "std lock back-off"),
    (
        libc::SYS_sched_getaffinity,
        "glibc malloc sizes its per-thread arenas by CPU count",
    ),
    (
        libc::SYS_clock_gettime,
        "monotonic time when the vDSO is unavailable",
    ),
    (libc::SYS_close, "close the TUN ports at exit"),
    (
        libc::SYS_fcntl,
        "std (debug builds) checks an OwnedFd is open (F_GETFD) before closing it",
    ),
    (
        libc::SYS_getpid,
        "abort() on panic raises SIGABRT on ourselves",
    ),
    (
        libc::SYS_gettid,
        "abort() on panic raises SIGABRT on ourselves",
    ),
    (
        libc::SYS_tgkill,
        "abort() on panic raises SIGABRT on ourselves",
    ),
    (libc::SYS_exit, "pump thread exit"),
    (libc::SYS_exit_group, "process exit"),
];

/// What confinement achieved (Landlock depends on the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confinement {
    /// Landlock fully or partially enforced.
    pub landlock: bool,
}

fn err(step: &'static str, detail: impl ToString) -> EngineError {
    EngineError::Confine {
        step,
        detail: detail.to_string(),
    }
}

/// Builds the seccomp BPF program from [`SYSCALL_ALLOWLIST`] for this
/// architecture (also used by tests to check that it compiles).
pub fn seccomp_program() -> Result<seccompiler::BpfProgram, EngineError> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = SYSCALL_ALLOWLIST
        .iter()
        .map(|(nr, _)| (*nr, Vec::new()))
        .collect();
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| err("seccomp", e))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| err("seccomp", e))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| err("seccomp", e))
}

/// Confines the calling thread (and the threads it spawns afterwards).
pub fn confine() -> Result<Confinement, EngineError> {
    let program = seccomp_program()?;
    // 1. Bounding set, while we may still hold CAP_SETPCAP.
    if caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::all() {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| err("capability bounding set", e))?;
        }
    }
    // 2. no_new_privs.
    rustix::thread::set_no_new_privs(true).map_err(|e| err("no_new_privs", e))?;
    // 3. Landlock: handle everything, allow nothing.
    let abi = ABI::V5;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self())
        .map_err(|e| err("landlock", e))?;
    let landlock = status.ruleset != RulesetStatus::NotEnforced;
    // 4. Capabilities.
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| err("capabilities", e))?;
    }
    // 5. Seccomp last: it forbids what the steps above needed.
    seccompiler::apply_filter(&program).map_err(|e| err("seccomp", e))?;
    Ok(Confinement { landlock })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_compiles_and_excludes_open() {
        let prog = seccomp_program().unwrap();
        assert!(!prog.is_empty());
        for nr in [
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_socket,
            libc::SYS_ptrace,
        ] {
            assert!(
                SYSCALL_ALLOWLIST.iter().all(|(n, _)| *n != nr),
                "syscall {nr} allowed"
            );
        }
        let mut seen = std::collections::HashSet::new();
        assert!(SYSCALL_ALLOWLIST
            .iter()
            .all(|(n, why)| seen.insert(*n) && !why.is_empty()));
    }
}
