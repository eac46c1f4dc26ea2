//! Taking ownership of the descriptors the init passes down (the channel,
//! the credentials): the only `unsafe` of the `viaduct-ike` binary.

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
