//! TUN ports: open or attach to a TUN device (IFF_TUN | IFF_NO_PI), possibly
//! inside another network namespace, or adopt an inherited descriptor. All
//! descriptors are non-blocking and close-on-exec.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{self, Mode, OFlags};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

use crate::error::EngineError;
use crate::sys;

/// Opens (creating if absent) the TUN device `name` in the current network
/// namespace.
pub fn open(name: &str) -> Result<OwnedFd, EngineError> {
    let err = |e: std::io::Error| EngineError::Tun {
        name: name.to_owned(),
        source: e,
    };
    let fd = fs::open(
        "/dev/net/tun",
        OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(e.into()))?;
    sys::tun_set_iff(fd.as_fd(), name).map_err(err)?;
    Ok(fd)
}

/// Opens the TUN device `name` inside the network namespace at `netns`
/// (e.g. /run/netns/red) and returns the calling thread to its own
/// namespace afterwards, even on failure.
pub fn open_in_netns(name: &str, netns: &str) -> Result<OwnedFd, EngineError> {
    let nserr = |path: &str, e: std::io::Error| EngineError::Netns {
        path: path.to_owned(),
        source: e,
    };
    let own = fs::open(
        "/proc/thread-self/ns/net",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| nserr("/proc/thread-self/ns/net", e.into()))?;
    let target = fs::open(netns, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| nserr(netns, e.into()))?;
    move_into_link_name_space(target.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(|e| nserr(netns, e.into()))?;
    let result = open(name);
    move_into_link_name_space(own.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(|e| nserr("/proc/thread-self/ns/net", e.into()))?;
    result
}

/// Adopts an inherited descriptor: checks it is a TUN device with
/// IFF_NO_PI and makes it non-blocking. Takes ownership of `fd`.
pub fn adopt(fd: i32) -> Result<OwnedFd, EngineError> {
    let bad = |e: std::io::Error| EngineError::BadFd { fd, source: e };
    if fd < 3 {
        return Err(bad(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "descriptors 0-2 are stdio, not TUN devices",
        )));
    }
    let owned = sys::adopt_fd(fd).map_err(bad)?;
    let flags = fs::fcntl_getfl(owned.as_fd()).map_err(|e| bad(e.into()))?;
    let (_, tflags) = sys::tun_get_iff(owned.as_fd()).map_err(bad)?;
    if tflags & sys::TUN_FLAGS != sys::TUN_FLAGS {
        return Err(bad(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the device must be opened with IFF_TUN | IFF_NO_PI",
        )));
    }
    fs::fcntl_setfl(owned.as_fd(), flags | OFlags::NONBLOCK).map_err(|e| bad(e.into()))?;
    Ok(owned)
}
