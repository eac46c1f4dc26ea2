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
//! unconfined when asked to confine. The steps are `viaduct_confine`'s,
//! shared with the IKE process (which has its own allowlist).

use crate::error::EngineError;

pub use viaduct_confine::Confinement;

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
    (
        libc::SYS_mmap,
        "allocate thread stacks and heap; map a VM's sealed memory for its vhost-user port",
    ),
    (
        libc::SYS_munmap,
        "free thread stacks and heap; unmap a VM's memory when its VMM disconnects",
    ),
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
    (
        libc::SYS_accept4,
        "accept the personality VMM's vhost-user connection on the port's listening socket (microvm runtime)",
    ),
    (
        libc::SYS_recvmsg,
        "read vhost-user messages with the descriptors they carry (guest memory, kick and call eventfds)",
    ),
    (
        libc::SYS_fstat,
        "check a vhost-user memory file is as large as the regions mapped from it",
    ),
    (libc::SYS_exit, "pump thread exit"),
    (libc::SYS_exit_group, "process exit"),
];

fn err(e: viaduct_confine::ConfineError) -> EngineError {
    EngineError::Confine {
        step: e.step,
        detail: e.detail,
    }
}

/// Builds the seccomp BPF program from [`SYSCALL_ALLOWLIST`] for this
/// architecture (also used by tests to check that it compiles).
pub fn seccomp_program() -> Result<seccompiler::BpfProgram, EngineError> {
    viaduct_confine::seccomp_program(SYSCALL_ALLOWLIST).map_err(err)
}

/// Confines the calling thread (and the threads it spawns afterwards).
pub fn confine() -> Result<Confinement, EngineError> {
    viaduct_confine::confine(SYSCALL_ALLOWLIST).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list compiles, names no call that opens files, executes, makes
    /// sockets or traces; and the program itself (run, not read) allows each
    /// listed call and kills everything else, x32 and i386 calls included
    /// (the review's x32 finding, for the Viaduct's own filter).
    #[test]
    fn allowlist_compiles_excludes_open_and_kills_the_rest() {
        assert!(!seccomp_program().unwrap().is_empty());
        viaduct_confine::check_allowlist(
            SYSCALL_ALLOWLIST,
            &[
                libc::SYS_openat,
                libc::SYS_execve,
                libc::SYS_socket,
                libc::SYS_ptrace,
            ],
        );
    }
}
