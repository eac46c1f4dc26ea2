//! The only place with `unsafe`: the TUN ioctls and signal masking/waiting,
//! which have no safe wrapper in rustix. Every block states why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `struct ifreq` as used by TUNSETIFF/TUNGETIFF (name + flags, padded to
/// the kernel's 40 bytes on 64-bit).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// IFF_TUN | IFF_NO_PI.
pub const TUN_FLAGS: libc::c_short = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
/// IFF_VNET_HDR: frames carry a 10-byte `virtio_net_hdr`.
pub const IFF_VNET_HDR: libc::c_short = libc::IFF_VNET_HDR as libc::c_short;

/// Attaches `fd` (an open /dev/net/tun) to interface `name` with `flags`,
/// creating it if absent. `name` must be 1..=15 bytes without NUL (checked).
pub fn tun_set_iff(fd: BorrowedFd<'_>, name: &str, flags: libc::c_short) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface names are 1 to 15 bytes without NUL",
        ));
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags,
        _pad: [0; 22],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: `fd` is a valid open descriptor for the duration of the call;
    // TUNSETIFF reads (and may write back) a `struct ifreq`, and `req` is a
    // properly aligned, initialised, 40-byte `#[repr(C)]` value that lives
    // across the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads the interface name and flags of a TUN descriptor (TUNGETIFF).
pub fn tun_get_iff(fd: BorrowedFd<'_>) -> io::Result<(String, libc::c_short)> {
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    // SAFETY: `fd` is valid for the call; TUNGETIFF writes a `struct ifreq`
    // into `req`, which is a live, writable, correctly sized `#[repr(C)]` value.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let end = req
        .name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(req.name.len());
    Ok((
        String::from_utf8_lossy(&req.name[..end]).into_owned(),
        req.flags,
    ))
}

/// Sets the size of the vnet header the device exchanges (TUNSETVNETHDRSZ).
/// Needs no capability, only an attached descriptor.
pub fn tun_set_vnet_hdr_sz(fd: BorrowedFd<'_>, size: libc::c_int) -> io::Result<()> {
    // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer; `size` is a
    // live local for the duration of the call and `fd` is open (borrowed).
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETVNETHDRSZ as _,
            &size as *const libc::c_int,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Tells the device which offloads its reader handles (TUNSETOFFLOAD, a
/// `TUN_F_*` mask passed by value). EINVAL for a bit the kernel lacks.
pub fn tun_set_offload(fd: BorrowedFd<'_>, offloads: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long),
    // no memory is passed; `fd` is open (borrowed).
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD as _,
            libc::c_ulong::from(offloads),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes glibc's allocator work without files once the process is
/// confined: every allocation of 32 KiB or more (the pump's packet buffers,
/// the coalescer's slots) gets its own mapping and is returned with
/// `munmap`, and the heaps are never trimmed. Trimming a thread arena's heap
/// (`shrink_heap`) reads /proc/sys/vm/overcommit_memory the first time,
/// which the seccomp filter forbids (`openat` kills the process). Must run
/// before the pump threads start.
pub fn malloc_without_files() -> io::Result<()> {
    // SAFETY: mallopt only sets allocator parameters; called from the main
    // thread before any other thread exists. It returns 1 on success.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
    };
    if !ok {
        return Err(io::Error::other("mallopt refused the allocator settings"));
    }
    Ok(())
}

fn sigset(signals: &[libc::c_int]) -> io::Result<libc::sigset_t> {
    // SAFETY: an all-zero `sigset_t` is a valid (if unspecified) value; it is
    // immediately initialised by `sigemptyset` below before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `sigset_t`.
    if unsafe { libc::sigemptyset(&mut set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for &s in signals {
        // SAFETY: `set` is an initialised `sigset_t`; an invalid signal number
        // makes `sigaddset` fail with EINVAL, which we report.
        if unsafe { libc::sigaddset(&mut set, s) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(set)
}

/// Blocks `signals` in the calling thread (inherited by threads it spawns
/// afterwards), so that only [`wait_signal`] receives them.
pub fn block_signals(signals: &[libc::c_int]) -> io::Result<()> {
    let set = sigset(signals)?;
    // SAFETY: `set` is an initialised signal set; passing a null old-set
    // pointer is allowed by pthread_sigmask.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits up to `timeout` for one of `signals` (which must be blocked) and
/// returns it; `None` when the time ran out or another signal interrupted
/// the wait.
pub fn wait_signal(
    signals: &[libc::c_int],
    timeout: std::time::Duration,
) -> io::Result<Option<libc::c_int>> {
    let set = sigset(signals)?;
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
    };
    // SAFETY: `set` is initialised, `ts` is a valid timespec, and a null
    // siginfo pointer is allowed by sigtimedwait.
    let rc = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    if rc >= 0 {
        return Ok(Some(rc));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
        _ => Err(e),
    }
}

/// Takes ownership of an inherited descriptor after checking it is open.
/// The caller must adopt each number at most once (main rejects
/// `--red-fd == --black-fd`).
pub fn adopt_fd(fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor table; an unused number
    // yields EBADF, which we report instead of adopting it.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is open (checked above) and was handed to this process on
    // the command line for its exclusive use; it is adopted exactly once, so
    // no other owner will close it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
