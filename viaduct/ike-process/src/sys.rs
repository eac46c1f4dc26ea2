//! Taking ownership of the descriptors the init passes down (the channel,
//! the credentials) and the status signal's descriptor: the only `unsafe`
//! of the `viaduct-ike` binary.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Takes ownership of an inherited descriptor.
///
/// The caller names a descriptor the init opened for this process and
/// nothing else in the process owns: it is called once per descriptor
/// number, at start, before any other descriptor is opened or closed,
/// and only after `fcntl(F_GETFD)` showed the number is open.
pub fn inherited(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: the borrow lives only for this `fcntl` call, which is
    // harmless on any number: it fails with EBADF if nothing is open.
    let borrowed = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
    let open = rustix::io::fcntl_getfd(borrowed);
    // SAFETY: the number is open (F_GETFD succeeded), inherited from
    // the init for this process only, and owned by nothing else here;
    // `inherited` is called once per number.
    open.ok().map(|_| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Blocks SIGUSR1 and returns a descriptor that becomes readable when it
/// arrives (a signalfd): the console's `status` asks for the SA table this
/// way. Made before confinement; reading it later is a plain `read`.
pub fn status_signal() -> std::io::Result<OwnedFd> {
    // SAFETY: `set` is a local the libc calls initialise (sigemptyset) and
    // fill; it outlives both calls that read it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        if libc::sigemptyset(&mut set) != 0 || libc::sigaddset(&mut set, libc::SIGUSR1) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY (of the conversion): signalfd returned a new descriptor that
        // nothing else owns.
        Ok(OwnedFd::from_raw_fd(fd))
    }
}
