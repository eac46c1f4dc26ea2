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

    /// A minimal interpreter for the classic-BPF subset `seccompiler` emits, so the
    /// program itself is checked, not the table it was built from.
    fn run(prog: &[seccompiler::sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let load = |off: u32| -> u32 {
            match off {
                0 => nr,
                4 => arch,
                8 | 12 => 0,
                16..=63 => {
                    let a = args[((off - 16) / 8) as usize];
                    if off % 8 == 0 {
                        a as u32
                    } else {
                        (a >> 32) as u32
                    }
                }
                _ => panic!("load outside seccomp_data at {off}"),
            }
        };
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = prog.get(pc).expect("program runs off its end");
            match i.code {
                0x20 => acc = load(i.k),
                0x54 => acc &= i.k,
                0x05 => pc += i.k as usize,
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let taken = match i.code {
                        0x15 => acc == i.k,
                        0x25 => acc > i.k,
                        0x35 => acc >= i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                0x06 => return i.k,
                c => panic!("unexpected BPF instruction {c:#x}"),
            }
            pc += 1;
        }
    }

    const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const KILL_PROCESS: u32 = 0x8000_0000;
    const ALLOW: u32 = 0x7fff_0000;

    /// The review's x32 finding, for the Viaduct's own filter: an allowlist whose
    /// default is "kill" never matches an x32 number (bit 30 set) nor an i386 call, so
    /// neither ABI reaches a call the list does not name.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_and_i386_calls_are_killed_allowed_calls_pass() {
        let prog = seccomp_program().unwrap();
        for (nr, why) in SYSCALL_ALLOWLIST {
            let nr = *nr as u32;
            assert_eq!(run(&prog, nr, AUDIT_ARCH_X86_64, [0; 6]), ALLOW, "{why}");
            assert_eq!(
                run(&prog, nr | X32_SYSCALL_BIT, AUDIT_ARCH_X86_64, [0; 6]),
                KILL_PROCESS,
                "x32 {nr}"
            );
            assert_eq!(
                run(&prog, nr, AUDIT_ARCH_I386, [0; 6]),
                KILL_PROCESS,
                "i386 {nr}"
            );
        }
        // x32's own numbers (512..=547, and every call OR-ed with bit 30), the i386
        // socketcall, and calls the list does not name.
        for nr in (0..600u32).chain([X32_SYSCALL_BIT | 512, X32_SYSCALL_BIT | 547, u32::MAX]) {
            if SYSCALL_ALLOWLIST.iter().any(|(n, _)| *n as u32 == nr) {
                continue;
            }
            assert_eq!(
                run(&prog, nr, AUDIT_ARCH_X86_64, [0; 6]),
                KILL_PROCESS,
                "{nr}"
            );
        }
        assert_eq!(run(&prog, 102, AUDIT_ARCH_I386, [0; 6]), KILL_PROCESS);
    }
}
