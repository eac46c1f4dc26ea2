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
