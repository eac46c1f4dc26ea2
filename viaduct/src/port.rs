//! The pump's ports: a TUN device (the `namespaces` runtime) or one half of
//! a vhost-user-net port (the `microvm` runtime, see `viaduct_vhost`).
//!
//! A vhost-user port is split in two by direction: the guest's transmit
//! queue is read by the direction that takes from that personality
//! ([`Port::VhostIn`]), its receive queue written by the direction that
//! gives to it ([`Port::VhostOut`]); each half belongs to one pump thread.
//! Vhost-user ports negotiate no offloads: they carry plain IP packets,
//! like a TUN device without a vnet header.

use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;

use rustix::io::Errno;
use viaduct_vhost::{RxHalf, TxHalf};

use crate::offload::VNET_HDR_LEN;
use crate::tun;

/// A port of the pump.
#[derive(Debug)]
pub enum Port {
    /// A TUN device.
    Tun(tun::Port),
    /// What a personality's VM transmits (read side).
    VhostIn(TxHalf),
    /// What a personality's VM receives (write side).
    VhostOut(RxHalf),
}

impl From<tun::Port> for Port {
    fn from(p: tun::Port) -> Port {
        Port::Tun(p)
    }
}

impl Port {
    /// Frames carry a virtio-net header (TUN with IFF_VNET_HDR only).
    pub fn vnet(&self) -> bool {
        matches!(self, Port::Tun(t) if t.vnet)
    }

    /// Negotiated `TUN_F_*` offloads (0 for vhost-user halves).
    pub fn offloads(&self) -> u32 {
        match self {
            Port::Tun(t) => t.offloads,
            _ => 0,
        }
    }

    /// Reads one frame (TUN) or IP packet (vhost-user); `Err(AGAIN)` when
    /// there is none.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        match self {
            Port::Tun(t) => rustix::io::read(&t.fd, buf),
            Port::VhostIn(h) => h.recv(buf),
            Port::VhostOut(_) => Err(Errno::BADF),
        }
    }

    /// Called after a batch of reads (returns the guest's transmit buffers
    /// with one interrupt).
    pub fn end_reads(&mut self) {
        if let Port::VhostIn(h) = self {
            h.finish();
        }
    }

    /// What to poll for input: up to two descriptors.
    pub fn poll_fds(&self) -> [Option<BorrowedFd<'_>>; 2] {
        match self {
            Port::Tun(t) => [Some(t.fd.as_fd()), None],
            Port::VhostIn(h) => {
                let (changed, kick) = h.poll_fds();
                [Some(changed), kick]
            }
            Port::VhostOut(_) => [None, None],
        }
    }

    /// Writes a plain IP packet (an all-zero vnet header first on a TUN
    /// port that carries headers).
    pub fn write_packet(&mut self, pkt: &[u8]) -> Result<(), Errno> {
        const ZERO: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];
        match self {
            Port::Tun(t) if t.vnet => {
                rustix::io::writev(&t.fd, &[IoSlice::new(&ZERO), IoSlice::new(pkt)]).map(|_| ())
            }
            Port::Tun(t) => rustix::io::write(&t.fd, pkt).map(|_| ()),
            Port::VhostOut(h) => h.send(pkt).map_err(|_| Errno::NOBUFS),
            Port::VhostIn(_) => Err(Errno::BADF),
        }
    }

    /// Writes a whole frame, vnet header included (TUN ports with headers).
    pub fn write_frame(&mut self, frame: &[u8]) -> Result<(), Errno> {
        match self {
            Port::Tun(t) => rustix::io::write(&t.fd, frame).map(|_| ()),
            _ => Err(Errno::INVAL),
        }
    }

    /// Called after a batch of writes (one interrupt for the guest).
    pub fn flush(&mut self) {
        if let Port::VhostOut(h) = self {
            h.finish();
        }
    }

    /// The vhost-user half's counters line, if this is one.
    pub fn report(&self, what: &str) -> String {
        match self {
            Port::Tun(_) => String::new(),
            Port::VhostIn(h) => h.counters.line(what),
            Port::VhostOut(h) => h.counters.line(what),
        }
    }
}
