//! The IKE process's confinement: `viaduct_confine`'s steps (no
//! capabilities, `no_new_privs`, Landlock with no filesystem or network
//! access) and this allowlist, applied once the policy and the credentials
//! are read. The process holds one descriptor that matters, the channel,
//! and may not open, create or receive another: no `open`, `socket`,
//! `recvmsg` or `execve`. A compromised IKE process can still send any
//! record on the channel; what the data plane accepts is bounded by its
//! own check (`viaduct_channel::InstallRules`).

/// The system calls `viaduct-ike` may make once confined, each with why.
pub const SYSCALL_ALLOWLIST: &[(i64, &str)] = &[
    (
        libc::SYS_read,
        "read a record from the channel (std's read path)",
    ),
    (
        libc::SYS_recvfrom,
        "read a record from the channel (rustix recv)",
    ),
    (
        libc::SYS_sendto,
        "write a record to the channel (rustix send)",
    ),
    (libc::SYS_write, "log lines to stderr"),
    (libc::SYS_writev, "std's stderr may write vectored"),
    (libc::SYS_ppoll, "wait for a record or the next timer"),
    (libc::SYS_poll, "wait for a record (older libc path)"),
    (libc::SYS_getrandom, "nonces, SPIs, key-exchange secrets"),
    (
        libc::SYS_clock_gettime,
        "the engine's clock when the vDSO is unavailable",
    ),
    (libc::SYS_futex, "std and aws-lc synchronisation"),
    (libc::SYS_mmap, "heap"),
    (libc::SYS_munmap, "heap"),
    (libc::SYS_mremap, "growing large buffers"),
    (libc::SYS_brk, "heap growth"),
    (libc::SYS_madvise, "the allocator returns memory"),
    (libc::SYS_mprotect, "the allocator's guard pages"),
    (libc::SYS_rt_sigprocmask, "libc masks signals around abort"),
    (
        libc::SYS_rt_sigreturn,
        "return from a signal handler installed by std",
    ),
    (libc::SYS_rt_sigaction, "std's stack-overflow handler"),
    (libc::SYS_sigaltstack, "std's stack-overflow handler stack"),
    (libc::SYS_sched_yield, "std lock back-off"),
    (libc::SYS_close, "drop descriptors at exit"),
    (
        libc::SYS_fcntl,
        "std (debug builds) checks an OwnedFd is open before closing it",
    ),
    (libc::SYS_getpid, "abort() raises SIGABRT on ourselves"),
    (libc::SYS_gettid, "abort() raises SIGABRT on ourselves"),
    (libc::SYS_tgkill, "abort() raises SIGABRT on ourselves"),
    (libc::SYS_exit, "thread exit"),
    (libc::SYS_exit_group, "process exit"),
];

/// Confines the process to [`SYSCALL_ALLOWLIST`].
///
/// # Errors
/// The step that failed.
pub fn confine() -> Result<viaduct_confine::Confinement, viaduct_confine::ConfineError> {
    viaduct_confine::confine(SYSCALL_ALLOWLIST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_opens_creates_or_receives_nothing_and_kills_the_rest() {
        viaduct_confine::check_allowlist(
            SYSCALL_ALLOWLIST,
            &[
                libc::SYS_open,
                libc::SYS_openat,
                libc::SYS_openat2,
                libc::SYS_execve,
                libc::SYS_execveat,
                libc::SYS_socket,
                libc::SYS_socketpair,
                libc::SYS_connect,
                libc::SYS_recvmsg,
                libc::SYS_sendmsg,
                libc::SYS_ptrace,
                libc::SYS_clone,
                libc::SYS_clone3,
                libc::SYS_fork,
                libc::SYS_dup3,
            ],
        );
    }
}
