//! TUN ports: open or attach to a TUN device (IFF_TUN | IFF_NO_PI, optionally
//! IFF_VNET_HDR), possibly inside another network namespace, or adopt an
//! inherited descriptor; then negotiate offloads. All descriptors are
//! non-blocking and close-on-exec.
//!
//! With IFF_VNET_HDR every frame starts with a 10-byte `virtio_net_hdr`
//! ([`crate::offload`]). The Viaduct then tells the kernel (TUNSETOFFLOAD)
//! that it completes checksums and segments TCP (and, on kernels ≥ 6.2, UDP)
//! super-packets itself, so a personality hands over 64 KiB at a time.
//! Offload state belongs to the device, which outlives a restarted Viaduct:
//! without offloads the Viaduct sets the mask to 0 explicitly.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{self, Mode, OFlags};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

use crate::error::EngineError;
use crate::offload::VNET_HDR_LEN;
use crate::sys;

/// `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`: what the Viaduct asks for first.
pub const OFFLOAD_TCP: u32 = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
/// UDP segmentation offload (both families; the kernel takes them only together).
pub const OFFLOAD_USO: u32 = libc::TUN_F_USO4 | libc::TUN_F_USO6;

/// TUNGETIFF flags a port may carry. Anything else (TAP, NAPI_FRAGS, bits a
/// newer kernel adds) changes the frame format or write semantics: refused.
const KNOWN_FLAGS: libc::c_short = sys::TUN_FLAGS
    | sys::IFF_VNET_HDR
    | libc::IFF_PERSIST as libc::c_short
    | libc::IFF_ONE_QUEUE as libc::c_short
    | libc::IFF_MULTI_QUEUE as libc::c_short
    | libc::IFF_NAPI as libc::c_short;

/// An open TUN port.
#[derive(Debug)]
pub struct Port {
    /// The device descriptor (non-blocking).
    pub fd: OwnedFd,
    /// Frames carry a virtio-net header.
    pub vnet: bool,
    /// Negotiated `TUN_F_*` offloads (0 without a vnet header).
    pub offloads: u32,
}

impl Port {
    /// A second descriptor for the same port (one per pump thread).
    pub fn try_clone(&self) -> std::io::Result<Port> {
        Ok(Port {
            fd: self.fd.try_clone()?,
            vnet: self.vnet,
            offloads: self.offloads,
        })
    }

    /// Offloads in words, for the log: `csum,tso4,tso6,uso` or `none`.
    pub fn describe_offloads(&self) -> String {
        let names = [
            (libc::TUN_F_CSUM, "csum"),
            (libc::TUN_F_TSO4, "tso4"),
            (libc::TUN_F_TSO6, "tso6"),
            (libc::TUN_F_TSO_ECN, "tso_ecn"),
            (libc::TUN_F_USO4, "uso4"),
            (libc::TUN_F_USO6, "uso6"),
        ];
        let on: Vec<&str> = names
            .iter()
            .filter(|(bit, _)| self.offloads & bit != 0)
            .map(|(_, n)| *n)
            .collect();
        if !self.vnet {
            "none (no vnet header)".to_owned()
        } else if on.is_empty() {
            "none".to_owned()
        } else {
            on.join(",")
        }
    }
}

/// Opens (creating if absent) the TUN device `name` in the current network
/// namespace, with a vnet header when `vnet`. A device that exists with other
/// flags is refused by the kernel (EINVAL).
pub fn open(name: &str, vnet: bool) -> Result<OwnedFd, EngineError> {
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
    let flags = sys::TUN_FLAGS | if vnet { sys::IFF_VNET_HDR } else { 0 };
    sys::tun_set_iff(fd.as_fd(), name, flags).map_err(err)?;
    Ok(fd)
}

/// Opens the TUN device `name` inside the network namespace at `netns`
/// (e.g. /run/netns/red) and returns the calling thread to its own
/// namespace afterwards, even on failure.
pub fn open_in_netns(name: &str, netns: &str, vnet: bool) -> Result<OwnedFd, EngineError> {
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
    let result = open(name, vnet);
    move_into_link_name_space(own.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(|e| nserr("/proc/thread-self/ns/net", e.into()))?;
    result
}

/// Adopts an inherited descriptor: checks it is a TUN device with IFF_NO_PI
/// and no flag the pump does not understand, makes it non-blocking and says
/// whether it carries vnet headers. Takes ownership of `fd`.
pub fn adopt(fd: i32) -> Result<(OwnedFd, bool), EngineError> {
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
    check_flags(tflags)
        .map_err(|m| bad(std::io::Error::new(std::io::ErrorKind::InvalidInput, m)))?;
    fs::fcntl_setfl(owned.as_fd(), flags | OFlags::NONBLOCK).map_err(|e| bad(e.into()))?;
    Ok((owned, tflags & sys::IFF_VNET_HDR != 0))
}

/// Takes ownership of inherited descriptor `fd` (≥ 3, checked open), for
/// ports that are not TUN devices (a vhost-user listening socket).
pub fn adopt_raw(fd: i32) -> std::io::Result<OwnedFd> {
    if fd < 3 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "descriptors 0-2 are stdio",
        ));
    }
    sys::adopt_fd(fd)
}

/// Accepts exactly IFF_TUN | IFF_NO_PI plus harmless flags (see
/// [`KNOWN_FLAGS`]); says why otherwise.
fn check_flags(tflags: libc::c_short) -> Result<(), String> {
    if tflags & sys::TUN_FLAGS != sys::TUN_FLAGS {
        return Err("the device must be opened with IFF_TUN | IFF_NO_PI".into());
    }
    let unknown = tflags & !KNOWN_FLAGS;
    if unknown != 0 {
        return Err(format!(
            "the device carries TUN flags {unknown:#06x} the Viaduct does not handle"
        ));
    }
    Ok(())
}

/// What a port asks the kernel for (`TUN_F_*` masks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadRequest {
    /// Tried first.
    pub want: u32,
    /// Set when the kernel refuses `want` (kernels before 6.2 know no USO
    /// bits and refuse the whole mask).
    pub fallback: u32,
}

impl OffloadRequest {
    /// Red: TCP segmentation and checksums, plus UDP segmentation.
    pub const RED: OffloadRequest = OffloadRequest {
        want: OFFLOAD_TCP | OFFLOAD_USO,
        fallback: OFFLOAD_TCP,
    };
    /// Black with ESP in UDP: UDP segmentation (it needs checksum offload),
    /// or nothing.
    pub const BLACK_UDP: OffloadRequest = OffloadRequest {
        want: libc::TUN_F_CSUM | OFFLOAD_USO,
        fallback: 0,
    };
    /// No offloads.
    pub const NONE: OffloadRequest = OffloadRequest {
        want: 0,
        fallback: 0,
    };
}

/// Sets up a port's offloads. Without a vnet header there is nothing to set.
/// With one: header size 10, then `req.want` (or `req.fallback` when the
/// kernel refuses it). The mask is always set explicitly, 0 included: a
/// previous Viaduct may have enabled offloads on the same device.
pub fn negotiate(
    fd: OwnedFd,
    vnet: bool,
    req: OffloadRequest,
    name: &str,
) -> Result<Port, EngineError> {
    if !vnet {
        return Ok(Port {
            fd,
            vnet,
            offloads: 0,
        });
    }
    let err = |e: std::io::Error| EngineError::Tun {
        name: name.to_owned(),
        source: e,
    };
    sys::tun_set_vnet_hdr_sz(fd.as_fd(), VNET_HDR_LEN as libc::c_int).map_err(err)?;
    let offloads = if sys::tun_set_offload(fd.as_fd(), req.want).is_ok() {
        req.want
    } else {
        sys::tun_set_offload(fd.as_fd(), req.fallback).map_err(err)?;
        req.fallback
    };
    Ok(Port { fd, vnet, offloads })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_strictly() {
        let base = sys::TUN_FLAGS;
        assert!(check_flags(base).is_ok());
        assert!(check_flags(base | sys::IFF_VNET_HDR).is_ok());
        assert!(check_flags(base | libc::IFF_PERSIST as libc::c_short).is_ok());
        assert!(check_flags(libc::IFF_TUN as libc::c_short).is_err());
        let tap = libc::IFF_TAP as libc::c_short | libc::IFF_NO_PI as libc::c_short;
        assert!(check_flags(tap).is_err());
        let frags = base | libc::IFF_NAPI_FRAGS as libc::c_short;
        let e = check_flags(frags).unwrap_err();
        assert!(e.contains("0x0020"), "{e}");
    }
}
