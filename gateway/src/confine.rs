//! Confinement of personality processes: the seccomp filters (data: one reason per
//! system call, per socket family, per socket option), the Landlock filesystem rules
//! and the capability bounding set.
//!
//! # The seccomp filters of a personality
//! A personality is untrusted Linux userland: busybox, iproute2, dnsmasq, a DHCP
//! client, whatever services a profile adds. Its filter is an **allowlist**
//! ([`PERSONALITY_ALLOWLIST`]): the calls such userland makes are allowed, and every
//! other number — the calls a personality has no use for ([`PERSONALITY_NOT_OFFERED`]),
//! calls added to the kernel after Linux 6.1, numbers no kernel has — fails with
//! `ENOSYS`, as on a kernel without them, so programs take their fallbacks. The calls
//! that would reach beyond the compartment or undo its confinement are listed with
//! their reason ([`PERSONALITY_DENYLIST`]) and fail with `EPERM`. Why an allowlist and
//! not a denylist: a denylist must name every dangerous call, and the review found
//! eleven it had missed; the kernel keeps adding calls (each new one is new kernel
//! surface); with an allowlist a forgotten call is refused, not allowed. See
//! docs/runtime.md ("Seccomp: an allowlist").
//!
//! On top of the numbers, the arguments (the kernel passes them by value, so the
//! filter sees exactly what the kernel acts on):
//! - `clone` with any `CLONE_NEW*` flag ([`DENIED_CLONE_FLAGS`]) fails with `EPERM`;
//!   `clone3`, whose flags sit behind a pointer, fails with `ENOSYS` so that the C
//!   library falls back to `clone`;
//! - `socket` only for the compartment's families (the plan's `socket-family` lines;
//!   `AF_PACKET` only where a DHCP client needs it), else `EAFNOSUPPORT`; also
//!   `(AF_INET, SOCK_PACKET)`, which the kernel turns into `AF_PACKET`; `socketpair`
//!   only for `AF_UNIX`;
//! - `AF_NETLINK` only with `NETLINK_ROUTE`, no `IPPROTO_MPTCP` sockets
//!   ([`DENIED_PROTOCOLS`], `EPROTONOSUPPORT`);
//! - `setsockopt`: [`DENIED_SOCKOPTS`] (multicast routing, kernel IPsec, routing
//!   headers, TCP upper-layer protocols) and every `SOL_PACKET` option but
//!   [`ALLOWED_PACKET_SOCKOPTS`] (no packet rings, fanout or version switch) fail with
//!   `EPERM`.
//!
//! Before any of that, [`abi_guard`] kills the process for a system call from another
//! ABI: an architecture other than x86_64 in `seccomp_data.arch` (i386 `int 0x80`), or
//! a number with the x32 bit (`0x40000000`) set. x32 calls arrive with
//! `AUDIT_ARCH_X86_64` and their own numbers, so without this guard they would match
//! no rule at all.
//!
//! The other layers (user namespace without a mapping for real root, read-only root
//! filesystem, no device nodes but null/zero/full/random/urandom, no TPM) hold even
//! if a call slipped through here; the filters close the kernel attack surface on top.
//!
//! The Viaduct is confined by its own allowlist (crate `viaduct`, `confine.rs`).

use crate::plan::SocketFamily;
use landlock::{
    path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    ABI,
};
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// System calls a personality may make, each with who needs it. Every other number
/// fails with `ENOSYS` (see the module docs); `clone`, `socket`, `socketpair` and
/// `setsockopt` are further restricted by their arguments.
pub const PERSONALITY_ALLOWLIST: &[(i64, &str)] = &[
    // Files and descriptors (Landlock and the read-only root decide what they reach).
    (libc::SYS_read, "read a descriptor"),
    (libc::SYS_write, "write a descriptor"),
    (libc::SYS_pread64, "read at an offset (dynamic loader)"),
    (libc::SYS_pwrite64, "write at an offset"),
    (libc::SYS_readv, "vectored read (stdio)"),
    (libc::SYS_writev, "vectored write (stdio, syslog)"),
    (libc::SYS_preadv, "vectored read at an offset"),
    (libc::SYS_pwritev, "vectored write at an offset"),
    (libc::SYS_preadv2, "vectored read with flags"),
    (libc::SYS_pwritev2, "vectored write with flags"),
    (libc::SYS_open, "open a file (busybox)"),
    (libc::SYS_openat, "open a file (glibc)"),
    (libc::SYS_openat2, "open a file with resolution flags"),
    (libc::SYS_creat, "create a file"),
    (libc::SYS_close, "close a descriptor"),
    (
        libc::SYS_close_range,
        "close inherited descriptors (the compartment init)",
    ),
    (libc::SYS_lseek, "seek"),
    (libc::SYS_dup, "duplicate a descriptor"),
    (libc::SYS_dup2, "shell redirections"),
    (libc::SYS_dup3, "duplicate with close-on-exec"),
    (libc::SYS_fcntl, "descriptor flags and record locks"),
    (libc::SYS_flock, "file locks (lease files)"),
    (libc::SYS_fsync, "flush a file (lease files)"),
    (libc::SYS_fdatasync, "flush a file's data"),
    (libc::SYS_sync, "flush everything (busybox sync)"),
    (libc::SYS_syncfs, "flush a filesystem"),
    (libc::SYS_sync_file_range, "flush part of a file"),
    (libc::SYS_truncate, "truncate a file by name"),
    (libc::SYS_ftruncate, "truncate an open file"),
    (libc::SYS_fallocate, "reserve file space"),
    (libc::SYS_fadvise64, "access-pattern hints"),
    (libc::SYS_readahead, "read-ahead hint"),
    (
        libc::SYS_sendfile,
        "copy between descriptors (busybox cat, httpd)",
    ),
    (libc::SYS_copy_file_range, "copy between files (cp)"),
    (libc::SYS_splice, "move data through a pipe"),
    (libc::SYS_tee, "duplicate pipe data"),
    (libc::SYS_pipe, "shell pipelines"),
    (libc::SYS_pipe2, "pipes with flags"),
    (
        libc::SYS_ioctl,
        "terminal, socket and interface requests (SIOCSARP for dnsmasq, SIOCGIFINDEX for udhcpc)",
    ),
    // File metadata and directories.
    (libc::SYS_stat, "file status"),
    (libc::SYS_fstat, "file status of a descriptor"),
    (libc::SYS_lstat, "file status without following links"),
    (libc::SYS_newfstatat, "file status (glibc)"),
    (libc::SYS_statx, "extended file status"),
    (libc::SYS_statfs, "filesystem status (df)"),
    (libc::SYS_fstatfs, "filesystem status of a descriptor"),
    (libc::SYS_access, "permission check"),
    (
        libc::SYS_faccessat,
        "permission check relative to a directory",
    ),
    (libc::SYS_faccessat2, "permission check with flags"),
    (libc::SYS_getdents, "list a directory (old ABI)"),
    (libc::SYS_getdents64, "list a directory"),
    (libc::SYS_getcwd, "current directory"),
    (libc::SYS_chdir, "change directory"),
    (libc::SYS_fchdir, "change directory by descriptor"),
    (libc::SYS_readlink, "read a symbolic link"),
    (
        libc::SYS_readlinkat,
        "read a symbolic link relative to a directory",
    ),
    (libc::SYS_umask, "file creation mask"),
    (libc::SYS_rename, "rename (lease files)"),
    (libc::SYS_renameat, "rename relative to directories"),
    (libc::SYS_renameat2, "rename with flags"),
    (libc::SYS_mkdir, "create a directory under /run or /tmp"),
    (
        libc::SYS_mkdirat,
        "create a directory relative to a directory",
    ),
    (libc::SYS_rmdir, "remove a directory"),
    (libc::SYS_link, "hard link"),
    (libc::SYS_linkat, "hard link relative to directories"),
    (libc::SYS_unlink, "remove a file"),
    (libc::SYS_unlinkat, "remove a file relative to a directory"),
    (libc::SYS_symlink, "symbolic link"),
    (libc::SYS_symlinkat, "symbolic link relative to a directory"),
    (
        libc::SYS_mknod,
        "FIFOs (device nodes need CAP_MKNOD in the init's namespace: EPERM)",
    ),
    (libc::SYS_mknodat, "FIFOs, relative to a directory"),
    (libc::SYS_chmod, "file mode"),
    (libc::SYS_fchmod, "file mode of a descriptor"),
    (libc::SYS_fchmodat, "file mode relative to a directory"),
    (libc::SYS_chown, "file owner (dnsmasq's lease file)"),
    (libc::SYS_fchown, "file owner of a descriptor"),
    (libc::SYS_lchown, "owner of a link"),
    (libc::SYS_fchownat, "file owner relative to a directory"),
    (libc::SYS_utime, "file times (touch)"),
    (libc::SYS_utimes, "file times"),
    (libc::SYS_utimensat, "file times in nanoseconds"),
    (libc::SYS_futimesat, "file times relative to a directory"),
    (libc::SYS_getxattr, "extended attributes (ls, cp)"),
    (libc::SYS_lgetxattr, "extended attributes of a link"),
    (libc::SYS_fgetxattr, "extended attributes of a descriptor"),
    (libc::SYS_listxattr, "list extended attributes"),
    (libc::SYS_llistxattr, "list extended attributes of a link"),
    (
        libc::SYS_flistxattr,
        "list extended attributes of a descriptor",
    ),
    (
        libc::SYS_setxattr,
        "set extended attributes (cp -a; tmpfs only)",
    ),
    (libc::SYS_lsetxattr, "set extended attributes of a link"),
    (
        libc::SYS_fsetxattr,
        "set extended attributes of a descriptor",
    ),
    (libc::SYS_removexattr, "remove extended attributes"),
    (
        libc::SYS_lremovexattr,
        "remove extended attributes of a link",
    ),
    (
        libc::SYS_fremovexattr,
        "remove extended attributes of a descriptor",
    ),
    (
        libc::SYS_inotify_init,
        "watch files (dnsmasq --dhcp-hostsdir)",
    ),
    (libc::SYS_inotify_init1, "watch files, with flags"),
    (libc::SYS_inotify_add_watch, "watch a file"),
    (libc::SYS_inotify_rm_watch, "stop watching a file"),
    // Memory.
    (libc::SYS_brk, "heap"),
    (libc::SYS_mmap, "map memory and libraries"),
    (libc::SYS_munmap, "unmap memory"),
    (libc::SYS_mremap, "grow a mapping (realloc)"),
    (
        libc::SYS_mprotect,
        "page protection (dynamic loader, RELRO)",
    ),
    (libc::SYS_madvise, "memory-use hints (malloc)"),
    (libc::SYS_msync, "flush a file mapping"),
    (libc::SYS_mincore, "page residency"),
    (
        libc::SYS_mlock,
        "lock pages (RLIMIT_MEMLOCK and the cgroup bound it)",
    ),
    (libc::SYS_mlock2, "lock pages with flags"),
    (libc::SYS_munlock, "unlock pages"),
    (libc::SYS_mlockall, "lock every page"),
    (libc::SYS_munlockall, "unlock every page"),
    (libc::SYS_memfd_create, "anonymous files (glibc, runtimes)"),
    (
        libc::SYS_membarrier,
        "memory barriers across threads (runtimes)",
    ),
    (libc::SYS_pkey_mprotect, "protection keys"),
    (libc::SYS_pkey_alloc, "protection keys"),
    (libc::SYS_pkey_free, "protection keys"),
    // Processes and threads (own PID namespace).
    (
        libc::SYS_clone,
        "fork and threads; CLONE_NEW* flags refused (DENIED_CLONE_FLAGS)",
    ),
    (libc::SYS_fork, "fork"),
    (libc::SYS_vfork, "vfork (busybox)"),
    (libc::SYS_execve, "run a program"),
    (
        libc::SYS_execveat,
        "run a program by descriptor (the compartment init)",
    ),
    (libc::SYS_exit, "thread exit"),
    (libc::SYS_exit_group, "process exit"),
    (libc::SYS_wait4, "reap children"),
    (libc::SYS_waitid, "reap children"),
    (libc::SYS_getpid, "own pid"),
    (libc::SYS_getppid, "parent pid"),
    (libc::SYS_gettid, "thread id"),
    (libc::SYS_getpgid, "process group"),
    (libc::SYS_setpgid, "process group (shell job control)"),
    (libc::SYS_getpgrp, "process group"),
    (libc::SYS_getsid, "session"),
    (libc::SYS_setsid, "new session (daemons)"),
    (libc::SYS_set_tid_address, "thread start (glibc)"),
    (libc::SYS_set_robust_list, "thread start (glibc)"),
    (libc::SYS_rseq, "restartable sequences (glibc)"),
    (libc::SYS_arch_prctl, "thread-local storage"),
    (
        libc::SYS_prctl,
        "process attributes (no_new_privs, dumpable, bounding set drops)",
    ),
    (libc::SYS_kill, "signal a process of the compartment"),
    (libc::SYS_tkill, "signal a thread"),
    (libc::SYS_tgkill, "signal a thread (abort, raise)"),
    (
        libc::SYS_pidfd_open,
        "process descriptors (newer libraries)",
    ),
    (
        libc::SYS_pidfd_send_signal,
        "signal through a process descriptor",
    ),
    (libc::SYS_getpriority, "scheduling priority"),
    (libc::SYS_setpriority, "scheduling priority (nice)"),
    (libc::SYS_sched_yield, "yield the CPU"),
    (libc::SYS_sched_setparam, "scheduling parameters"),
    (libc::SYS_sched_getparam, "scheduling parameters"),
    (
        libc::SYS_sched_setscheduler,
        "scheduling policy (real-time needs CAP_SYS_NICE)",
    ),
    (libc::SYS_sched_getscheduler, "scheduling policy"),
    (libc::SYS_sched_get_priority_max, "scheduling limits"),
    (libc::SYS_sched_get_priority_min, "scheduling limits"),
    (libc::SYS_sched_rr_get_interval, "round-robin time slice"),
    (libc::SYS_sched_setaffinity, "CPU affinity"),
    (libc::SYS_sched_getaffinity, "CPU count (glibc, runtimes)"),
    (libc::SYS_sched_setattr, "scheduling attributes"),
    (libc::SYS_sched_getattr, "scheduling attributes"),
    (libc::SYS_getcpu, "current CPU"),
    (libc::SYS_ioprio_set, "I/O priority (ionice)"),
    (libc::SYS_ioprio_get, "I/O priority"),
    (libc::SYS_getrlimit, "resource limits"),
    (libc::SYS_setrlimit, "resource limits (dnsmasq)"),
    (libc::SYS_prlimit64, "resource limits (glibc)"),
    (libc::SYS_getrusage, "resource usage"),
    (libc::SYS_times, "process times"),
    (libc::SYS_sysinfo, "uptime and memory (free, uptime)"),
    (libc::SYS_uname, "system name"),
    (libc::SYS_sethostname, "host name of its own UTS namespace"),
    (
        libc::SYS_setdomainname,
        "domain name of its own UTS namespace",
    ),
    (
        libc::SYS_seccomp,
        "add filters (they can only restrict further)",
    ),
    (
        libc::SYS_landlock_create_ruleset,
        "Landlock (the compartment init; can only restrict)",
    ),
    (
        libc::SYS_landlock_add_rule,
        "Landlock (the compartment init; can only restrict)",
    ),
    (
        libc::SYS_landlock_restrict_self,
        "Landlock (the compartment init; can only restrict)",
    ),
    (libc::SYS_capget, "read capabilities"),
    (libc::SYS_capset, "drop capabilities (dnsmasq)"),
    // Identities (inside its user namespace).
    (libc::SYS_getuid, "user id"),
    (libc::SYS_geteuid, "effective user id"),
    (libc::SYS_getgid, "group id"),
    (libc::SYS_getegid, "effective group id"),
    (
        libc::SYS_setuid,
        "drop to an unprivileged user (dnsmasq: nobody)",
    ),
    (libc::SYS_setgid, "drop to an unprivileged group"),
    (libc::SYS_setreuid, "change user ids"),
    (libc::SYS_setregid, "change group ids"),
    (libc::SYS_setresuid, "change user ids (glibc)"),
    (libc::SYS_getresuid, "user ids"),
    (libc::SYS_setresgid, "change group ids (glibc)"),
    (libc::SYS_getresgid, "group ids"),
    (libc::SYS_setfsuid, "filesystem user id"),
    (libc::SYS_setfsgid, "filesystem group id"),
    (libc::SYS_getgroups, "supplementary groups"),
    (libc::SYS_setgroups, "drop supplementary groups (dnsmasq)"),
    // Signals.
    (libc::SYS_rt_sigaction, "signal handlers"),
    (libc::SYS_rt_sigprocmask, "signal mask"),
    (libc::SYS_rt_sigreturn, "return from a signal handler"),
    (libc::SYS_rt_sigpending, "pending signals"),
    (libc::SYS_rt_sigtimedwait, "wait for a signal"),
    (libc::SYS_rt_sigqueueinfo, "queue a signal"),
    (libc::SYS_rt_tgsigqueueinfo, "queue a signal to a thread"),
    (libc::SYS_rt_sigsuspend, "wait for a signal (shell)"),
    (libc::SYS_sigaltstack, "signal stack (runtimes)"),
    (libc::SYS_pause, "wait for a signal"),
    (libc::SYS_alarm, "timer signal"),
    (libc::SYS_signalfd, "signals as a descriptor"),
    (
        libc::SYS_signalfd4,
        "signals as a descriptor (the compartment init)",
    ),
    (
        libc::SYS_restart_syscall,
        "restart a call interrupted by a signal",
    ),
    // Time (reading and waiting; setting the clock is denied).
    (libc::SYS_nanosleep, "sleep"),
    (libc::SYS_clock_nanosleep, "sleep (glibc)"),
    (libc::SYS_clock_gettime, "read a clock"),
    (libc::SYS_clock_getres, "clock resolution"),
    (libc::SYS_gettimeofday, "read the clock"),
    (libc::SYS_time, "read the clock"),
    (libc::SYS_getitimer, "interval timers"),
    (libc::SYS_setitimer, "interval timers"),
    (libc::SYS_timer_create, "POSIX timers"),
    (libc::SYS_timer_settime, "POSIX timers"),
    (libc::SYS_timer_gettime, "POSIX timers"),
    (libc::SYS_timer_getoverrun, "POSIX timers"),
    (libc::SYS_timer_delete, "POSIX timers"),
    (libc::SYS_timerfd_create, "timers as descriptors"),
    (libc::SYS_timerfd_settime, "timers as descriptors"),
    (libc::SYS_timerfd_gettime, "timers as descriptors"),
    // Waiting for descriptors and threads.
    (libc::SYS_poll, "wait for descriptors (dnsmasq)"),
    (libc::SYS_ppoll, "wait for descriptors"),
    (libc::SYS_select, "wait for descriptors (udhcpc)"),
    (libc::SYS_pselect6, "wait for descriptors"),
    (libc::SYS_epoll_create, "event polling"),
    (libc::SYS_epoll_create1, "event polling"),
    (libc::SYS_epoll_ctl, "event polling"),
    (libc::SYS_epoll_wait, "event polling"),
    (libc::SYS_epoll_pwait, "event polling"),
    (libc::SYS_epoll_pwait2, "event polling"),
    (libc::SYS_eventfd, "event descriptors"),
    (libc::SYS_eventfd2, "event descriptors"),
    (libc::SYS_futex, "thread synchronisation"),
    (libc::SYS_futex_waitv, "thread synchronisation"),
    (
        libc::SYS_getrandom,
        "random numbers (DHCP transaction ids, DNS ids)",
    ),
    // Sockets (families, protocols and options restricted by argument).
    (libc::SYS_socket, "sockets: only the compartment's families"),
    (libc::SYS_socketpair, "local socket pairs: AF_UNIX only"),
    (libc::SYS_bind, "bind a socket"),
    (libc::SYS_listen, "listen (DNS over TCP)"),
    (libc::SYS_accept, "accept a connection"),
    (libc::SYS_accept4, "accept a connection with flags"),
    (libc::SYS_connect, "connect a socket (syslog, DNS)"),
    (libc::SYS_getsockname, "socket address"),
    (libc::SYS_getpeername, "peer address"),
    (libc::SYS_sendto, "send a datagram"),
    (libc::SYS_recvfrom, "receive a datagram"),
    (
        libc::SYS_sendmsg,
        "send with ancillary data (DHCP replies, netlink)",
    ),
    (
        libc::SYS_recvmsg,
        "receive with ancillary data (IP_PKTINFO, netlink)",
    ),
    (
        libc::SYS_sendmmsg,
        "send several datagrams (glibc resolver)",
    ),
    (libc::SYS_recvmmsg, "receive several datagrams"),
    (libc::SYS_shutdown, "shut a connection down"),
    (
        libc::SYS_setsockopt,
        "socket options; some refused (DENIED_SOCKOPTS)",
    ),
    (libc::SYS_getsockopt, "read socket options"),
    // System V and POSIX IPC (the compartment's own IPC namespace).
    (libc::SYS_shmget, "shared memory"),
    (libc::SYS_shmat, "shared memory"),
    (libc::SYS_shmctl, "shared memory"),
    (libc::SYS_shmdt, "shared memory"),
    (libc::SYS_semget, "semaphores"),
    (libc::SYS_semop, "semaphores"),
    (libc::SYS_semctl, "semaphores"),
    (libc::SYS_semtimedop, "semaphores"),
    (libc::SYS_msgget, "message queues"),
    (libc::SYS_msgsnd, "message queues"),
    (libc::SYS_msgrcv, "message queues"),
    (libc::SYS_msgctl, "message queues"),
    (libc::SYS_mq_open, "POSIX message queues"),
    (libc::SYS_mq_unlink, "POSIX message queues"),
    (libc::SYS_mq_timedsend, "POSIX message queues"),
    (libc::SYS_mq_timedreceive, "POSIX message queues"),
    (libc::SYS_mq_notify, "POSIX message queues"),
    (libc::SYS_mq_getsetattr, "POSIX message queues"),
];

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
    (
        libc::SYS_pidfd_getfd,
        "take a descriptor out of another process",
    ),
    (libc::SYS_process_madvise, "act on another process's memory"),
    (libc::SYS_kcmp, "compare kernel objects of other processes"),
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
    (libc::SYS_swapon, "enable swap"),
    (libc::SYS_swapoff, "disable swap"),
    (libc::SYS_acct, "process accounting to a file"),
    (libc::SYS_quotactl, "filesystem quotas"),
    (libc::SYS_quotactl_fd, "filesystem quotas by descriptor"),
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
        libc::SYS_memfd_secret,
        "memory removed from the kernel's direct map (exploit primitive, not needed)",
    ),
    (
        libc::SYS_mbind,
        "NUMA memory policy: not namespaced, kernel surface without a use here",
    ),
    (libc::SYS_set_mempolicy, "NUMA memory policy"),
    (libc::SYS_set_mempolicy_home_node, "NUMA memory policy"),
    (libc::SYS_get_mempolicy, "NUMA memory policy"),
    (
        libc::SYS_migrate_pages,
        "move another process's pages between NUMA nodes",
    ),
    (
        libc::SYS_move_pages,
        "move pages between NUMA nodes (also another process's)",
    ),
    (
        libc::SYS_open_by_handle_at,
        "open files by handle, bypassing path checks",
    ),
    (
        libc::SYS_name_to_handle_at,
        "obtain file handles for open_by_handle_at",
    ),
    (libc::SYS_iopl, "raw I/O port access"),
    (libc::SYS_ioperm, "raw I/O port access"),
    (
        libc::SYS_modify_ldt,
        "segment descriptors (16-bit code, kernel exploit primitive)",
    ),
    (
        libc::SYS_uselib,
        "load a library the a.out way (obsolete kernel path)",
    ),
    (libc::SYS_lookup_dcookie, "kernel profiling interface"),
    (libc::SYS_vhangup, "hang up the terminal"),
    (
        libc::SYS_personality,
        "change execution domain (e.g. disable ASLR)",
    ),
    (libc::SYS_fanotify_init, "filesystem-wide monitoring"),
    (libc::SYS_fanotify_mark, "filesystem-wide monitoring"),
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

/// The rest of Linux 6.1's x86_64 table: calls a personality has no use for. Like any
/// number in neither list (calls newer than 6.1, numbers no kernel has) they fail with
/// `ENOSYS`, as on a kernel built without them.
pub const PERSONALITY_NOT_OFFERED: &[(i64, &str)] = &[
    (libc::SYS_ustat, "obsolete (statfs)"),
    (libc::SYS_sysfs, "obsolete (/proc/filesystems)"),
    (libc::SYS__sysctl, "removed from Linux (5.5)"),
    (174, "create_module: removed from Linux (2.6)"),
    (177, "get_kernel_syms: removed from Linux (2.6)"),
    (178, "query_module: removed from Linux (2.6)"),
    (libc::SYS_nfsservctl, "removed from Linux (3.1)"),
    (libc::SYS_getpmsg, "never implemented"),
    (libc::SYS_putpmsg, "never implemented"),
    (libc::SYS_afs_syscall, "never implemented"),
    (libc::SYS_tuxcall, "never implemented"),
    (libc::SYS_security, "never implemented"),
    (libc::SYS_vserver, "never implemented"),
    (libc::SYS_epoll_ctl_old, "never used (epoll_ctl)"),
    (libc::SYS_epoll_wait_old, "never used (epoll_wait)"),
    (libc::SYS_set_thread_area, "32-bit TLS (x86_64 uses arch_prctl)"),
    (libc::SYS_get_thread_area, "32-bit TLS (x86_64 uses arch_prctl)"),
    (libc::SYS_remap_file_pages, "deprecated (emulated with mmap)"),
    (libc::SYS_io_setup, "Linux AIO: not used by this userland (glibc's aio uses threads)"),
    (libc::SYS_io_destroy, "Linux AIO"),
    (libc::SYS_io_getevents, "Linux AIO"),
    (libc::SYS_io_submit, "Linux AIO"),
    (libc::SYS_io_cancel, "Linux AIO"),
    (333, "io_pgetevents: Linux AIO"),
    (libc::SYS_vmsplice, "map user pages into a pipe: not used by this userland"),
    (libc::SYS_get_robust_list, "read another thread's robust list (debuggers)"),
    (libc::SYS_process_mrelease, "reap another process's memory (out-of-memory daemons)"),
    (libc::SYS_clone3, "its flags sit behind a pointer the filter cannot read; ENOSYS makes the C library use clone"),
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

/// `IPPROTO_MPTCP` (Linux 5.6).
pub const IPPROTO_MPTCP: i32 = 262;
/// `SOCK_PACKET`: the obsolete packet socket type (`socket(AF_INET, SOCK_PACKET, …)`
/// is turned into an `AF_PACKET` socket by the kernel).
pub const SOCK_PACKET: i32 = 10;

/// Protocols refused for an allowed family, `(family, protocol, why)`; they fail with
/// `EPROTONOSUPPORT`. `AF_NETLINK` is further limited to `NETLINK_ROUTE` (every other
/// netlink protocol — netfilter, XFRM, generic netlink with its MPTCP and SRv6
/// families, audit, uevents — is refused).
pub const DENIED_PROTOCOLS: &[(i32, i32, &str)] = &[
    (
        libc::AF_INET,
        IPPROTO_MPTCP,
        "multipath TCP: a large protocol nothing here uses",
    ),
    (
        libc::AF_INET6,
        IPPROTO_MPTCP,
        "multipath TCP: a large protocol nothing here uses",
    ),
];

/// Netlink protocols a personality may open: `NETLINK_ROUTE` (iproute2, busybox `ip`,
/// dnsmasq's interface tracking, glibc's `getifaddrs`).
pub const ALLOWED_NETLINK_PROTOCOLS: &[(i32, &str)] =
    &[(libc::NETLINK_ROUTE, "interfaces, addresses, routes, rules")];

/// `setsockopt` options a personality may not set, `(level, first, last, why)` (an
/// inclusive range of option numbers). They fail with `EPERM`.
pub const DENIED_SOCKOPTS: &[(i32, i32, i32, &str)] = &[
    (
        libc::IPPROTO_IP,
        200,
        255,
        "IPv4 multicast routing (MRT_*): mroute code, not needed",
    ),
    (
        libc::IPPROTO_IPV6,
        200,
        255,
        "IPv6 multicast routing (MRT6_*): mroute code, not needed",
    ),
    (
        libc::IPPROTO_IP,
        16,
        17,
        "per-socket IPsec policy (IP_IPSEC_POLICY, IP_XFRM_POLICY): IPsec is the Viaduct's",
    ),
    (
        libc::IPPROTO_IPV6,
        34,
        35,
        "per-socket IPsec policy (IPV6_IPSEC_POLICY, IPV6_XFRM_POLICY)",
    ),
    (
        libc::IPPROTO_UDP,
        100,
        100,
        "UDP_ENCAP: ESP-in-UDP decapsulation by the kernel",
    ),
    (
        libc::IPPROTO_IPV6,
        5,
        5,
        "IPV6_2292RTHDR: routing headers, including SRv6",
    ),
    (
        libc::IPPROTO_IPV6,
        57,
        57,
        "IPV6_RTHDR: routing headers, including SRv6",
    ),
    (
        libc::IPPROTO_TCP,
        31,
        31,
        "TCP_ULP: kernel TLS and espintcp upper-layer protocols",
    ),
];

/// `SOL_PACKET` options a compartment with `AF_PACKET` may set; every other one
/// (`PACKET_RX_RING`, `PACKET_TX_RING`, `PACKET_VERSION`, `PACKET_FANOUT`,
/// `PACKET_VNET_HDR` …: the packet-socket code with a history of kernel exploits) fails
/// with `EPERM`.
pub const ALLOWED_PACKET_SOCKOPTS: &[(i32, &str)] = &[
    (
        libc::PACKET_ADD_MEMBERSHIP,
        "join a link-layer multicast group",
    ),
    (
        libc::PACKET_DROP_MEMBERSHIP,
        "leave a link-layer multicast group",
    ),
    (
        libc::PACKET_AUXDATA,
        "udhcpc: checksum status with each frame",
    ),
];

/// `SOL_PACKET`.
const SOL_PACKET: i32 = 263;
/// `AUDIT_ARCH_X86_64`: the only architecture a personality's calls may come from.
pub const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// `__X32_SYSCALL_BIT`: x32 system call numbers have it set.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

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
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    on_match: SeccompAction,
) -> Result<BpfProgram, ConfineError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| err("seccomp", e))?;
    let filter =
        SeccompFilter::new(rules, mismatch, on_match, arch).map_err(|e| err("seccomp", e))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| err("seccomp", e))
}

/// A condition on the low 32 bits of argument `arg` (an `int` for the kernel).
fn int_arg(arg: u8, op: SeccompCmpOp, value: i32) -> Result<SeccompCondition, ConfineError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, u64::from(value as u32))
        .map_err(|e| err("seccomp", e))
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, ConfineError> {
    SeccompRule::new(conditions).map_err(|e| err("seccomp", e))
}

/// A hand-written program that kills the process for a system call from another ABI:
/// an architecture other than x86_64, or an x32 number (`nr >= 0x40000000`). Every
/// filter compiled by `seccompiler` checks the architecture, but none looks at the x32
/// bit. Install it with the others (its kill outranks their verdicts).
pub fn abi_guard() -> BpfProgram {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        ins(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        ins(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        ins(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        ins(JGE_K, 0, 1, X32_SYSCALL_BIT),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Compiles the filters of a personality whose processes may open `families`, in the
/// order to install them (see the module docs):
/// 1. [`PERSONALITY_ALLOWLIST`]; every other number → `ENOSYS` (so also `clone3`);
/// 2. [`PERSONALITY_DENYLIST`], [`DENIED_CLONE_FLAGS`], [`DENIED_SOCKOPTS`] and the
///    `SOL_PACKET` options outside [`ALLOWED_PACKET_SOCKOPTS`] → `EPERM`;
/// 3. socket families outside `families`, `(AF_INET, SOCK_PACKET)`, `socketpair` other
///    than `AF_UNIX` → `EAFNOSUPPORT`;
/// 4. [`DENIED_PROTOCOLS`] and netlink protocols outside
///    [`ALLOWED_NETLINK_PROTOCOLS`] → `EPROTONOSUPPORT`;
/// 5. [`abi_guard`] → kill.
///
/// The kernel runs every filter and keeps the most severe verdict; between two errno
/// verdicts the later-installed filter wins, which is why the specific refusals come
/// after the allowlist. Install them with [`apply_filters`].
pub fn personality_filters(families: &[SocketFamily]) -> Result<Vec<BpfProgram>, ConfineError> {
    use SeccompCmpOp::{Eq, Ge, Le, MaskedEq, Ne};
    let errno = |e: i32| SeccompAction::Errno(e as u32);

    let allow: BTreeMap<i64, Vec<SeccompRule>> = PERSONALITY_ALLOWLIST
        .iter()
        .map(|(nr, _)| (*nr, Vec::new()))
        .collect();
    let allow = compile(allow, errno(libc::ENOSYS), SeccompAction::Allow)?;

    let mut deny: BTreeMap<i64, Vec<SeccompRule>> = PERSONALITY_DENYLIST
        .iter()
        .map(|(nr, _)| (*nr, Vec::new()))
        .collect();
    let clone_rules = DENIED_CLONE_FLAGS
        .iter()
        .map(|&(flag, _)| {
            let flag = flag as u64;
            SeccompCondition::new(0, SeccompCmpArgLen::Qword, MaskedEq(flag), flag)
                .map_err(|e| err("seccomp", e))
                .and_then(|c| rule(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()?;
    deny.insert(libc::SYS_clone, clone_rules);
    let mut sockopt_rules = Vec::new();
    for &(level, first, last, _) in DENIED_SOCKOPTS {
        let mut c = vec![int_arg(1, Eq, level)?];
        if first == last {
            c.push(int_arg(2, Eq, first)?);
        } else {
            c.push(int_arg(2, Ge, first)?);
            c.push(int_arg(2, Le, last)?);
        }
        sockopt_rules.push(rule(c)?);
    }
    let mut packet = vec![int_arg(1, Eq, SOL_PACKET)?];
    for &(opt, _) in ALLOWED_PACKET_SOCKOPTS {
        packet.push(int_arg(2, Ne, opt)?);
    }
    sockopt_rules.push(rule(packet)?);
    deny.insert(libc::SYS_setsockopt, sockopt_rules);
    let deny = compile(deny, SeccompAction::Allow, errno(libc::EPERM))?;

    let mut socket_rules = Vec::new();
    let other_family = families
        .iter()
        .map(|f| int_arg(0, Ne, f.number()))
        .collect::<Result<Vec<_>, _>>()?;
    if !other_family.is_empty() {
        socket_rules.push(rule(other_family)?);
    }
    if families.contains(&SocketFamily::Inet) {
        socket_rules.push(rule(vec![
            int_arg(0, Eq, libc::AF_INET)?,
            int_arg(1, MaskedEq(0xf), SOCK_PACKET)?,
        ])?);
    }
    // An empty rule list matches unconditionally: no family at all.
    let family = compile(
        BTreeMap::from([
            (libc::SYS_socket, socket_rules),
            (
                libc::SYS_socketpair,
                vec![rule(vec![int_arg(0, Ne, libc::AF_UNIX)?])?],
            ),
        ]),
        SeccompAction::Allow,
        errno(libc::EAFNOSUPPORT),
    )?;

    let mut protocol_rules = Vec::new();
    for &(fam, proto, _) in DENIED_PROTOCOLS {
        protocol_rules.push(rule(vec![int_arg(0, Eq, fam)?, int_arg(2, Eq, proto)?])?);
    }
    let mut netlink = vec![int_arg(0, Eq, libc::AF_NETLINK)?];
    for &(proto, _) in ALLOWED_NETLINK_PROTOCOLS {
        netlink.push(int_arg(2, Ne, proto)?);
    }
    protocol_rules.push(rule(netlink)?);
    let protocol = compile(
        BTreeMap::from([(libc::SYS_socket, protocol_rules)]),
        SeccompAction::Allow,
        errno(libc::EPROTONOSUPPORT),
    )?;

    Ok(vec![allow, deny, family, protocol, abi_guard()])
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
    use super::eval::{decide, errno, Data, ALLOW, AUDIT_ARCH_I386, KILL_PROCESS, X32};
    use super::*;
    use std::collections::HashSet;

    const RED: &[SocketFamily] = &[
        SocketFamily::Unix,
        SocketFamily::Inet,
        SocketFamily::Inet6,
        SocketFamily::Netlink,
    ];

    fn black() -> Vec<SocketFamily> {
        SocketFamily::ALL.to_vec()
    }

    fn filters(families: &[SocketFamily]) -> Vec<BpfProgram> {
        personality_filters(families).unwrap()
    }

    #[test]
    fn lists_are_disjoint_have_reasons_and_classify_the_whole_table() {
        let mut seen = HashSet::new();
        for (n, why) in PERSONALITY_ALLOWLIST
            .iter()
            .chain(PERSONALITY_DENYLIST)
            .chain(PERSONALITY_NOT_OFFERED)
        {
            assert!(seen.insert(*n), "syscall {n} listed twice");
            assert!(!why.is_empty(), "syscall {n} has no reason");
        }
        // Every number of Linux 6.1's x86_64 table has a decision (335..=423 are unused).
        for n in (0..=334).chain(424..=450) {
            assert!(seen.contains(&n), "syscall {n} is in no list");
        }
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
            libc::SYS_unshare,
        ] {
            assert!(
                PERSONALITY_DENYLIST.iter().any(|(n, _)| *n == nr),
                "syscall {nr} not denied"
            );
        }
        // What ordinary userland needs stays allowed.
        for nr in [
            libc::SYS_execve,
            libc::SYS_socket,
            libc::SYS_openat,
            libc::SYS_clone,
        ] {
            assert!(PERSONALITY_ALLOWLIST.iter().any(|(n, _)| *n == nr));
        }
    }

    #[test]
    fn x32_numbers_are_refused_by_every_personality_filter() {
        for f in [filters(RED), filters(&black()), filters(&[])] {
            // The x32 twins of allowed and denied calls, of the clone rule and of
            // clone3: none may reach the kernel's x32 table.
            for &(nr, _) in PERSONALITY_ALLOWLIST
                .iter()
                .chain(PERSONALITY_DENYLIST)
                .chain(PERSONALITY_NOT_OFFERED)
            {
                let d = Data::call(nr | i64::from(X32), &[libc::CLONE_NEWUSER as u64]);
                assert_eq!(decide(&f, &d), KILL_PROCESS, "x32 syscall {nr}");
            }
            // x32-only numbers (512..547: the compat entry points) and the top of the range.
            for nr in (0..1024).chain([0x3fff_ffff, 0x7fff_ffff, 0xffff_ffff]) {
                let d = Data::call(i64::from(X32 | nr), &[]);
                assert_eq!(decide(&f, &d), KILL_PROCESS, "x32 syscall {nr:#x}");
            }
        }
    }

    #[test]
    fn foreign_architectures_are_killed() {
        let f = filters(RED);
        for arch in [
            AUDIT_ARCH_I386,
            0,
            0xc000_00b7, /* aarch64 */
            62,          /* no 64-bit flag */
        ] {
            for nr in [102 /* i386 socketcall */, 20, 0, 1, 59] {
                let mut d = Data::call(nr, &[]);
                d.arch = arch;
                assert_eq!(decide(&f, &d), KILL_PROCESS, "arch {arch:#x} nr {nr}");
            }
        }
        // Each program on its own, too: none may be installed without the check.
        for p in &f {
            let mut d = Data::call(libc::SYS_getpid, &[]);
            d.arch = AUDIT_ARCH_I386;
            assert_eq!(eval::run(p, &d), KILL_PROCESS);
        }
    }

    #[test]
    fn kernel_surface_named_in_the_review_is_denied() {
        let f = filters(&black());
        for nr in [
            libc::SYS_pidfd_getfd,
            libc::SYS_process_madvise,
            libc::SYS_quotactl_fd,
            libc::SYS_modify_ldt,
            libc::SYS_uselib,
            libc::SYS_mbind,
            libc::SYS_migrate_pages,
            libc::SYS_move_pages,
            libc::SYS_set_mempolicy,
            libc::SYS_memfd_secret,
            libc::SYS_fanotify_mark,
        ] {
            assert_eq!(
                decide(&f, &Data::call(nr, &[])),
                errno(libc::EPERM),
                "syscall {nr}"
            );
        }
    }

    #[test]
    fn every_number_gets_its_listed_verdict() {
        let f = filters(RED);
        for &(nr, _) in PERSONALITY_ALLOWLIST {
            if [libc::SYS_socket, libc::SYS_socketpair].contains(&nr) {
                continue; // family 0 (AF_UNSPEC) is refused, see below
            }
            assert_eq!(decide(&f, &Data::call(nr, &[])), ALLOW, "syscall {nr}");
        }
        for &(nr, _) in PERSONALITY_DENYLIST {
            assert_eq!(decide(&f, &Data::call(nr, &[])), errno(libc::EPERM), "{nr}");
        }
        for &(nr, _) in PERSONALITY_NOT_OFFERED {
            assert_eq!(
                decide(&f, &Data::call(nr, &[])),
                errno(libc::ENOSYS),
                "{nr}"
            );
        }
        // clone3 and anything newer than the table, or no call at all.
        for nr in [libc::SYS_clone3, 335, 423, 451, 452, 462, 1000, 0x3fff_ffff] {
            assert_eq!(
                decide(&f, &Data::call(nr, &[])),
                errno(libc::ENOSYS),
                "{nr}"
            );
        }
    }

    #[test]
    fn clone_with_a_namespace_flag_is_denied() {
        let f = filters(RED);
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM) as u64;
        let fork = libc::SIGCHLD as u64;
        for ok in [thread, fork, 0] {
            assert_eq!(decide(&f, &Data::call(libc::SYS_clone, &[ok])), ALLOW);
        }
        for &(flag, _) in DENIED_CLONE_FLAGS {
            for base in [thread, fork] {
                let d = Data::call(libc::SYS_clone, &[base | flag as u64]);
                assert_eq!(decide(&f, &d), errno(libc::EPERM), "{flag:#x}");
            }
        }
    }

    #[test]
    fn socket_families_follow_the_plan() {
        let socket =
            |fam: u64, ty: u64, proto: u64| Data::call(libc::SYS_socket, &[fam, ty, proto]);
        for (families, f) in [(RED.to_vec(), filters(RED)), (black(), filters(&black()))] {
            for fam in 0..=64u64 {
                let allowed = families.iter().any(|x| x.number() as u64 == fam);
                let want = if allowed {
                    ALLOW
                } else {
                    errno(libc::EAFNOSUPPORT)
                };
                let proto = if fam == libc::AF_NETLINK as u64 { 0 } else { 6 };
                assert_eq!(decide(&f, &socket(fam, 1, proto)), want, "family {fam}");
            }
            // AF_PACKET only where the plan gives it (black's DHCP client).
            let packet = socket(libc::AF_PACKET as u64, libc::SOCK_DGRAM as u64, 0x0008);
            let want = if families.contains(&SocketFamily::Packet) {
                ALLOW
            } else {
                errno(libc::EAFNOSUPPORT)
            };
            assert_eq!(decide(&f, &packet), want);
            // (AF_INET, SOCK_PACKET) is an AF_PACKET socket in disguise.
            for ty in [
                SOCK_PACKET,
                SOCK_PACKET | libc::SOCK_CLOEXEC,
                SOCK_PACKET | libc::SOCK_NONBLOCK,
            ] {
                let d = socket(libc::AF_INET as u64, ty as u64, 0x0300);
                assert_eq!(decide(&f, &d), errno(libc::EAFNOSUPPORT), "type {ty:#x}");
            }
            // Netlink: route only.
            for proto in 0..32u64 {
                let d = socket(
                    libc::AF_NETLINK as u64,
                    (libc::SOCK_RAW | libc::SOCK_CLOEXEC) as u64,
                    proto,
                );
                let want = if proto == libc::NETLINK_ROUTE as u64 {
                    ALLOW
                } else {
                    errno(libc::EPROTONOSUPPORT)
                };
                assert_eq!(decide(&f, &d), want, "netlink protocol {proto}");
            }
            // MPTCP, either family; plain TCP, UDP, raw ICMP stay.
            for fam in [libc::AF_INET, libc::AF_INET6] {
                let d = socket(fam as u64, 1, IPPROTO_MPTCP as u64);
                assert_eq!(decide(&f, &d), errno(libc::EPROTONOSUPPORT));
                for (ty, proto) in [(1, 0), (1, 6), (2, 17), (3, 1), (3, 58), (3, 255)] {
                    assert_eq!(decide(&f, &socket(fam as u64, ty, proto)), ALLOW);
                }
            }
            // socketpair: AF_UNIX only.
            for fam in 0..=64u64 {
                let d = Data::call(libc::SYS_socketpair, &[fam, 1, 0]);
                let want = if fam == libc::AF_UNIX as u64 {
                    ALLOW
                } else {
                    errno(libc::EAFNOSUPPORT)
                };
                assert_eq!(decide(&f, &d), want, "socketpair family {fam}");
            }
        }
        // No family at all: every socket refused.
        let none = filters(&[]);
        for fam in [1u64, 2, 10, 16, 17] {
            assert_eq!(decide(&none, &socket(fam, 1, 0)), errno(libc::EAFNOSUPPORT));
        }
    }

    #[test]
    fn socket_options_for_rings_routing_and_kernel_ipsec_are_denied() {
        let f = filters(&black());
        let set = |level: i32, opt: i32| {
            Data::call(libc::SYS_setsockopt, &[3, level as u64, opt as u64, 0, 4])
        };
        // What dnsmasq, udhcpc and iproute2 set (strace on Debian 12).
        for (level, opt) in [
            (libc::SOL_SOCKET, libc::SO_REUSEADDR),
            (libc::SOL_SOCKET, libc::SO_BROADCAST),
            (libc::SOL_SOCKET, libc::SO_RCVBUF),
            (libc::SOL_SOCKET, libc::SO_ATTACH_FILTER),
            (libc::IPPROTO_IP, libc::IP_PKTINFO),
            (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
            (libc::IPPROTO_IP, libc::IP_TOS),
            (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
            (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
            (libc::IPPROTO_TCP, libc::TCP_FASTOPEN),
            (libc::SOL_NETLINK, libc::NETLINK_EXT_ACK),
            (SOL_PACKET, libc::PACKET_AUXDATA),
            (SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP),
        ] {
            assert_eq!(decide(&f, &set(level, opt)), ALLOW, "{level} {opt}");
        }
        for (level, opt) in [
            (SOL_PACKET, libc::PACKET_RX_RING),
            (SOL_PACKET, libc::PACKET_TX_RING),
            (SOL_PACKET, libc::PACKET_VERSION),
            (SOL_PACKET, libc::PACKET_RESERVE),
            (SOL_PACKET, libc::PACKET_FANOUT),
            (SOL_PACKET, libc::PACKET_VNET_HDR),
            (SOL_PACKET, libc::PACKET_QDISC_BYPASS),
            (SOL_PACKET, 0),
            (SOL_PACKET, -1),
            (libc::IPPROTO_IP, 200),   // MRT_INIT
            (libc::IPPROTO_IP, 202),   // MRT_ADD_VIF
            (libc::IPPROTO_IP, 204),   // MRT_ADD_MFC
            (libc::IPPROTO_IP, 209),   // MRT_TABLE
            (libc::IPPROTO_IPV6, 200), // MRT6_INIT
            (libc::IPPROTO_IPV6, 204), // MRT6_ADD_MFC
            (libc::IPPROTO_IP, libc::IP_XFRM_POLICY),
            (libc::IPPROTO_IP, libc::IP_IPSEC_POLICY),
            (libc::IPPROTO_IPV6, libc::IPV6_XFRM_POLICY),
            (libc::IPPROTO_IPV6, libc::IPV6_IPSEC_POLICY),
            (libc::IPPROTO_IPV6, libc::IPV6_RTHDR),
            (libc::IPPROTO_IPV6, libc::IPV6_2292RTHDR),
            (libc::IPPROTO_UDP, 100), // UDP_ENCAP
            (libc::IPPROTO_TCP, 31),  // TCP_ULP
        ] {
            assert_eq!(
                decide(&f, &set(level, opt)),
                errno(libc::EPERM),
                "{level} {opt}"
            );
        }
        // The level and option are ints: garbage in the upper halves changes nothing.
        let mut d = set(SOL_PACKET, libc::PACKET_RX_RING);
        d.args[1] |= 0xdead_0000_0000_0000;
        d.args[2] |= 0xbeef_0000_0000_0000;
        assert_eq!(decide(&f, &d), errno(libc::EPERM));
    }

    #[test]
    fn the_abi_guard_alone() {
        let g = abi_guard();
        assert_eq!(eval::run(&g, &Data::call(0, &[])), ALLOW);
        assert_eq!(eval::run(&g, &Data::call(0x3fff_ffff, &[])), ALLOW);
        assert_eq!(eval::run(&g, &Data::call(0x4000_0000, &[])), KILL_PROCESS);
        let mut d = Data::call(0, &[]);
        d.arch = AUDIT_ARCH_I386;
        assert_eq!(eval::run(&g, &d), KILL_PROCESS);
    }
}

/// A classic-BPF interpreter for the seccomp programs above, and the kernel's rule for
/// a stack of filters: the tests run the generated programs instead of trusting them.
#[cfg(test)]
pub(crate) mod eval {
    use seccompiler::{sock_filter, BpfProgram};

    pub const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    pub const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
    pub const KILL_PROCESS: u32 = 0x8000_0000;
    pub const ALLOW: u32 = 0x7fff_0000;
    pub const X32: u32 = 0x4000_0000;

    pub fn errno(e: i32) -> u32 {
        0x0005_0000 | (e as u32 & 0xffff)
    }

    /// `struct seccomp_data` as the filter sees it.
    #[derive(Clone, Copy, Debug)]
    pub struct Data {
        pub nr: u32,
        pub arch: u32,
        pub args: [u64; 6],
    }

    impl Data {
        pub fn call(nr: i64, args: &[u64]) -> Data {
            let mut a = [0u64; 6];
            a[..args.len()].copy_from_slice(args);
            Data {
                nr: nr as u32,
                arch: AUDIT_ARCH_X86_64,
                args: a,
            }
        }
    }

    fn load(d: &Data, off: u32) -> u32 {
        match off {
            0 => d.nr,
            4 => d.arch,
            8 | 12 => 0, // instruction pointer
            16..=63 if off % 4 == 0 => {
                let a = d.args[((off - 16) / 8) as usize];
                if off % 8 == 0 {
                    a as u32
                } else {
                    (a >> 32) as u32
                }
            }
            _ => panic!("load outside seccomp_data at {off}"),
        }
    }

    /// Runs one program; panics on anything the kernel's checker would refuse.
    pub fn run(prog: &[sock_filter], d: &Data) -> u32 {
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let i = prog.get(pc).expect("program runs off its end");
            match i.code {
                0x20 => acc = load(d, i.k), // LD W ABS
                0x54 => acc &= i.k,         // ALU AND K
                0x05 => pc += i.k as usize, // JA
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let taken = match i.code {
                        0x15 => acc == i.k,
                        0x25 => acc > i.k,
                        0x35 => acc >= i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                0x06 => return i.k, // RET K
                c => panic!("unexpected BPF instruction {c:#x}"),
            }
            pc += 1;
        }
    }

    /// What the kernel returns for a stack of filters (installed in slice order): every
    /// filter runs, newest first; the most restrictive action wins, ties go to the newest.
    pub fn decide(progs: &[BpfProgram], d: &Data) -> u32 {
        let action = |r: u32| (r & 0xffff_0000) as i32;
        let mut ret = ALLOW;
        for p in progs.iter().rev() {
            let cur = run(p, d);
            if action(cur) < action(ret) {
                ret = cur;
            }
        }
        ret
    }
}
