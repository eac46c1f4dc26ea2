//! The only place where the init talks to the kernel through `unsafe` FFI.
//!
//! Every function is a thin wrapper over one system call that turns `-1`/errno into
//! `std::io::Error`. Invariants: pointers passed to the kernel come from live Rust
//! values (`CString`, slices, locals) that outlive the call; no function here keeps a
//! pointer after returning. Nothing here panics: strings with interior NULs are
//! reported as `InvalidInput` errors.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in string"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `mount(2)`.
pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (s, t, f, d) = (cstr(source)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    // SAFETY: all four pointers are NUL-terminated strings owned by this frame and
    // valid for the duration of the call; the kernel copies them.
    let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) };
    check(r).map(drop)
}

/// `umount2(2)`.
pub fn umount(target: &str, flags: libc::c_int) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: `t` is a valid NUL-terminated string that lives across the call.
    check(unsafe { libc::umount2(t.as_ptr(), flags) }).map(drop)
}

/// Bytes free for unprivileged writers on the file system holding `fd`
/// (`fstatvfs(3)`: `f_bavail * f_frsize`).
pub fn free_bytes(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: statvfs is plain old data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is a live descriptor for the call; `st` is a valid, writable
    // statvfs owned by this frame.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// `finit_module(2)` with empty parameters.
pub fn finit_module(module: BorrowedFd<'_>) -> io::Result<()> {
    let params = c"";
    // SAFETY: the fd is open for the duration of the call (borrowed), `params` is a
    // static NUL-terminated string, flags 0; the syscall takes no other pointers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            module.as_raw_fd(),
            params.as_ptr(),
            0,
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `reboot(2)` with `cmd` (`RB_POWER_OFF`, `RB_AUTOBOOT`, `RB_DISABLE_CAD`). Returns
/// only on failure for the power commands.
pub fn reboot(cmd: libc::c_int) -> io::Result<()> {
    // SAFETY: reboot takes an integer command and no pointers.
    check(unsafe { libc::reboot(cmd) }).map(drop)
}

/// `sync(2)`.
pub fn sync() {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() }
}

/// `kill(2)`.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes integers only.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// `waitpid(-1, WNOHANG)`: `Ok(None)` when no child has exited yet, `Err(ECHILD)` when
/// there are no children at all.
pub fn reap_one() -> io::Result<Option<(libc::pid_t, libc::c_int)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a live local the kernel writes one int into.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some((pid, status))),
    }
}

/// Blocks `signals` for this thread and returns a signalfd that reports them.
pub fn signalfd(signals: &[libc::c_int]) -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live, writable sigset_t.
    check(unsafe { libc::sigemptyset(&mut set) })?;
    for &s in signals {
        // SAFETY: `set` is initialised; an invalid signal number yields EINVAL.
        check(unsafe { libc::sigaddset(&mut set, s) })?;
    }
    // SAFETY: `set` is initialised and lives across the call; old set not requested.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    // SAFETY: `set` is initialised; -1 asks for a new fd.
    let fd = check(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) })?;
    // SAFETY: signalfd just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `poll(2)` for readability on `fds`; returns which are readable (or hung up).
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout_ms: libc::c_int) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let n = libc::nfds_t::try_from(pfds.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `pfds` is a live array of `n` pollfd structs, the fds are borrowed (open).
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), n, timeout_ms) };
    check(r)?;
    Ok(pfds
        .iter()
        .map(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
        .collect())
}

// ---- Compartments: processes, namespaces, identities, file descriptors ----

/// `clone(2)` used like `fork(2)` with namespace `flags` (`CLONE_NEW*`): no new stack,
/// SIGCHLD on exit. Returns `Ok(0)` in the child and the child's pid in the parent.
///
/// The caller must be single-threaded (the init is): the child is a copy of this
/// process with only the calling thread, exactly as after `fork`.
pub fn clone_fork(flags: libc::c_int) -> io::Result<libc::pid_t> {
    let flags = libc::c_ulong::try_from(flags | libc::SIGCHLD)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: raw clone with a NULL stack behaves like fork: the child continues on a
    // copy of the parent's stack; no pointers are passed (parent/child tid pointers and
    // TLS are NULL because no CLONE_*TID/CLONE_SETTLS flag is set).
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        libc::pid_t::try_from(r).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
    }
}

/// `_exit(2)`: leaves a forked child without running the parent's destructors.
pub fn exit_now(code: libc::c_int) -> ! {
    // SAFETY: _exit takes an integer and never returns.
    unsafe { libc::_exit(code) }
}

/// `unshare(2)`.
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes an integer only.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

/// `setns(2)`.
pub fn setns(fd: BorrowedFd<'_>, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: the fd is open for the duration of the call (borrowed).
    check(unsafe { libc::setns(fd.as_raw_fd(), nstype) }).map(drop)
}

/// `chroot(2)`.
pub fn chroot(path: &str) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: `p` is a NUL-terminated string that lives across the call.
    check(unsafe { libc::chroot(p.as_ptr()) }).map(drop)
}

/// `sethostname(2)`.
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, live across the call.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// `mknod(2)` for a character device.
pub fn mknod_char(path: &str, mode: libc::mode_t, major: u32, minor: u32) -> io::Result<()> {
    let p = cstr(path)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: `p` is a NUL-terminated string that lives across the call.
    check(unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR | mode, dev) }).map(drop)
}

/// `setresuid(u, u, u)` and `setresgid(g, g, g)`, then an empty supplementary group
/// list (groups first: afterwards we may lack the right to change them).
pub fn become_ids(uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    clear_groups()?;
    set_ids(uid, gid)
}

/// An empty supplementary group list.
pub fn clear_groups() -> io::Result<()> {
    // SAFETY: setgroups with size 0 reads no memory.
    check(unsafe { libc::setgroups(0, std::ptr::null()) }).map(drop)
}

/// `setresgid(g, g, g)` then `setresuid(u, u, u)`, groups untouched (in a
/// user namespace whose `setgroups` is denied).
pub fn set_ids(uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: integers only.
    check(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: integers only.
    check(unsafe { libc::setresuid(uid, uid, uid) }).map(drop)
}

/// `prctl(option, arg2, 0, 0, 0)` for the integer-only options we use
/// (`PR_SET_NO_NEW_PRIVS`, `PR_CAPBSET_DROP`, `PR_SET_DUMPABLE`, `PR_SET_PDEATHSIG`,
/// `PR_SET_CHILD_SUBREAPER`, `PR_CAP_AMBIENT`).
pub fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: these options take integer arguments only; unused arguments are 0.
    check(unsafe {
        libc::prctl(
            option,
            arg2,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })
}

/// Clears the inheritable capability set (so `execve` cannot pass anything on through it)
/// while keeping permitted and effective: `capget` then `capset` with inheritable = 0.
pub fn clear_inheritable_caps() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const V3: u32 = 0x2008_0522;
    let mut h = Header {
        version: V3,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: `h` and `d` are live locals of the layout the kernel expects for
    // _LINUX_CAPABILITY_VERSION_3 (header + two data structs).
    check(unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) as libc::c_int })?;
    d[0].inheritable = 0;
    d[1].inheritable = 0;
    // SAFETY: as above; the kernel only reads them.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) as libc::c_int }).map(drop)
}

/// `setrlimit(resource, {value, value})`: soft and hard limit alike.
pub fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `lim` is a live local the kernel only reads.
    check(unsafe { libc::setrlimit(resource, &lim) }).map(drop)
}

/// `chown(path, uid, gid)`.
pub fn chown(path: &str, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: `p` is a NUL-terminated string that lives across the call.
    check(unsafe { libc::chown(p.as_ptr(), uid, gid) }).map(drop)
}

/// `fchown(fd, uid, gid)`.
pub fn fchown(fd: BorrowedFd<'_>, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: integers only; `fd` is a live descriptor borrowed for the call.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// `close_range(first, u32::MAX, 0)`: closes every descriptor from `first` up.
pub fn close_from(first: u32) -> io::Result<()> {
    // SAFETY: integers only; closing descriptors this child inherited and does not use.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `dup2(2)`; the new descriptor does not have `FD_CLOEXEC`.
pub fn dup2(old: BorrowedFd<'_>, new: libc::c_int) -> io::Result<()> {
    // SAFETY: `old` is open (borrowed); `new` is a descriptor number we own in this
    // (single-threaded, forked) process.
    check(unsafe { libc::dup2(old.as_raw_fd(), new) }).map(drop)
}

/// `pipe2(O_CLOEXEC)`: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a live array of two ints the kernel fills.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 just returned these two fds and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A connected pair of `SOCK_SEQPACKET` Unix sockets (close-on-exec): one message per
/// record, in order, and end-of-file when the other end's last holder closes it.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a live array of two ints the kernel fills.
    check(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair just returned these two fds and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets `FD_CLOEXEC`: the descriptor is closed when the process executes a program.
pub fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFD takes no pointer; the fd is open (borrowed).
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) })?;
    // SAFETY: F_SETFD takes an integer.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags | libc::FD_CLOEXEC) }).map(drop)
}

/// Sets or clears `O_NONBLOCK`.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL takes no pointer; the fd is open (borrowed).
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: F_SETFL takes an integer.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) }).map(drop)
}

fn cstrings(v: &[String]) -> io::Result<Vec<CString>> {
    v.iter().map(|s| cstr(s)).collect()
}

/// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)` (`fd` = `None`: `execve(argv[0], …)`).
/// Returns only on failure.
pub fn exec(fd: Option<BorrowedFd<'_>>, argv: &[String], env: &[String]) -> io::Error {
    let (a, e) = match (cstrings(argv), cstrings(env)) {
        (Ok(a), Ok(e)) => (a, e),
        (Err(err), _) | (_, Err(err)) => return err,
    };
    let Some(first) = a.first() else {
        return io::Error::new(io::ErrorKind::InvalidInput, "empty argv");
    };
    let mut ap: Vec<*const libc::c_char> = a.iter().map(|s| s.as_ptr()).collect();
    ap.push(std::ptr::null());
    let mut ep: Vec<*const libc::c_char> = e.iter().map(|s| s.as_ptr()).collect();
    ep.push(std::ptr::null());
    match fd {
        // SAFETY: argv/envp are NULL-terminated arrays of pointers into `a`/`e`, which
        // live across the call; the path is a static empty string; the fd is open.
        Some(fd) => unsafe {
            libc::syscall(
                libc::SYS_execveat,
                fd.as_raw_fd(),
                c"".as_ptr(),
                ap.as_ptr(),
                ep.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
        },
        // SAFETY: as above; `first` is a NUL-terminated path owned by `a`.
        None => unsafe {
            libc::execve(first.as_ptr(), ap.as_ptr(), ep.as_ptr());
        },
    }
    io::Error::last_os_error()
}

/// `waitpid(pid, 0)`: blocks until that child exits; returns the raw status.
pub fn wait_for(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a live local the kernel writes one int into.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(status);
    }
}

/// A `NETLINK_ROUTE` socket (close-on-exec), used with plain `read`/`write`.
pub fn netlink_route_socket() -> io::Result<OwnedFd> {
    // SAFETY: integers only; returns a new fd or -1.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    })?;
    // SAFETY: socket just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `IFF_VNET_HDR`: every frame on the descriptor carries a 10-byte
/// `virtio_net_hdr`, which lets the Viaduct negotiate TSO/checksum offloads.
/// It can only be chosen when the device is created.
pub const IFF_VNET_HDR: libc::c_short = 0x4000;

/// `ioctl(TUNSETIFF)` with `IFF_TUN | IFF_NO_PI` (plus `IFF_VNET_HDR` when
/// `vnet_hdr`) and the given name on an open
/// `/dev/net/tun`: creates the TUN device in the caller's network namespace.
pub fn tun_create(fd: BorrowedFd<'_>, name: &str, vnet_hdr: bool) -> io::Result<()> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short
            | if vnet_hdr { IFF_VNET_HDR } else { 0 },
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    // SAFETY: `req` is a live struct ifreq (40 bytes: name + union) the kernel reads
    // and may write back; the fd is open (borrowed).
    check(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) }).map(drop)
}

/// `ioctl(TUNGETIFF)`: the name of the TUN device `fd` is attached to. Fails with
/// `EBADFD` once the device is gone (deleted inside its network namespace).
pub fn tun_name(fd: BorrowedFd<'_>) -> io::Result<String> {
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
    // SAFETY: `req` is a live struct ifreq (40 bytes) the kernel writes into; the fd
    // is open (borrowed).
    check(unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETIFF, &mut req) })?;
    let len = req
        .name
        .iter()
        .position(|&c| c == 0)
        .unwrap_or(req.name.len());
    Ok(String::from_utf8_lossy(&req.name[..len]).into_owned())
}

/// Duplicates `fd` to the lowest free number ≥ `min`, close-on-exec (`F_DUPFD_CLOEXEC`).
pub fn dup_above(fd: BorrowedFd<'_>, min: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes an integer; the fd is open (borrowed).
    let n = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) })?;
    // SAFETY: fcntl just returned this new fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Takes ownership of an inherited descriptor number after checking it is open.
pub fn adopt_fd(fd: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD takes no pointer; it only tells whether `fd` is open.
    check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: the descriptor is open and was handed to this process (by the init, at
    // exec) for it to own; nothing else in this process refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Unblocks every signal (before `execve`: the mask survives exec).
pub fn unblock_all_signals() -> io::Result<()> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live, writable sigset_t.
    check(unsafe { libc::sigemptyset(&mut set) })?;
    // SAFETY: `set` is initialised and lives across the call.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}
