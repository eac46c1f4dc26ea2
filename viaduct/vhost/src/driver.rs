//! The guest side of a port, for tests, benchmarks and fuzzing (feature
//! `driver`; never in the gateway): a front end with its own sealed memfd
//! "RAM", the two rings in it, and a simple buffer scheme — descriptor `i`
//! of a queue always points at buffer `i` of that queue.
//!
//! It speaks vhost-user to a back end either over a socket or straight to
//! an in-process [`Session`], and offers raw access to its rings so tests
//! can play a hostile guest.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::event::{eventfd, EventfdFlags};

use crate::backend::{Session, F_PROTOCOL_FEATURES, OFFERED};
use crate::mem::sealed_memfd;
use crate::msg::{self, code, Header, Request, HDR_LEN};
use crate::net::{ETH_LEN, HDR_LEN as NET_HDR};
use crate::sys::Mapping;

/// Queue size the driver uses.
pub const QSIZE: u16 = 256;
/// Bytes per buffer.
pub const BUF: u32 = 2048;
/// Where the driver's RAM "is" in its own (fictional) address space.
pub const UVA_BASE: u64 = 0x7f00_0000_0000;
/// RAM size.
pub const RAM: u64 = 4 << 20;
pub use crate::net::{GUEST_MAC_RED as GUEST_MAC, VIADUCT_MAC};

/// Guest-physical layout of queue `q`: rings, then buffers.
pub fn desc_gpa(q: usize) -> u64 {
    0x4000 * q as u64
}
/// The available ring of queue `q`.
pub fn avail_gpa(q: usize) -> u64 {
    desc_gpa(q) + 16 * QSIZE as u64
}
/// The used ring of queue `q`.
pub fn used_gpa(q: usize) -> u64 {
    desc_gpa(q) + 0x2000
}
/// Buffer `i` of queue `q`.
pub fn buf_gpa(q: usize, i: u16) -> u64 {
    0x10000 + (q as u64 * QSIZE as u64 + i as u64) * BUF as u64
}

/// How the driver reaches the back end.
pub enum Transport {
    /// A connected vhost-user socket.
    Socket(OwnedFd),
    /// An in-process session (no socket, no thread).
    Direct(Box<Session>),
}

/// A guest with a virtio-net card served by the back end.
pub struct Guest {
    /// The RAM file.
    pub ram_fd: OwnedFd,
    ram: Mapping,
    transport: Transport,
    /// Kick eventfds (the guest notifies) per queue.
    pub kick: [Arc<OwnedFd>; 2],
    /// Call eventfds (the device interrupts) per queue.
    pub call: [Arc<OwnedFd>; 2],
    next_avail: [u16; 2],
    last_used: [u16; 2],
    /// Features negotiated.
    pub features: u64,
    /// This guest's MAC (red's by default).
    pub mac: [u8; 6],
}

fn ev() -> std::io::Result<OwnedFd> {
    Ok(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?)
}

impl Guest {
    /// Makes the RAM and rings and sets the device up with `features`
    /// (a subset of the offer).
    pub fn new(transport: Transport, features: u64) -> std::io::Result<Guest> {
        let ram_fd = sealed_memfd("guest-ram", RAM)?;
        let ram = Mapping::map_shared(ram_fd.as_fd(), 0, RAM as usize)?;
        let mut g = Guest {
            ram_fd,
            ram,
            transport,
            kick: [Arc::new(ev()?), Arc::new(ev()?)],
            call: [Arc::new(ev()?), Arc::new(ev()?)],
            next_avail: [0; 2],
            last_used: [0; 2],
            features,
            mac: GUEST_MAC,
        };
        g.setup(features).map_err(std::io::Error::other)?;
        Ok(g)
    }

    /// Sends one request; returns the reply payload, if any.
    pub fn request(
        &mut self,
        req: u32,
        payload: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<Option<Vec<u8>>, String> {
        let wants_reply = matches!(
            req,
            code::GET_FEATURES | code::GET_PROTOCOL_FEATURES | code::GET_VRING_BASE
        );
        match &mut self.transport {
            Transport::Direct(s) => {
                let h = Header {
                    request: req,
                    flags: msg::VERSION,
                    size: payload.len() as u32,
                };
                let r = Request::parse(&h, payload).map_err(|e| {
                    // As `serve_connection` does: a refused message ends
                    // the session.
                    s.reset();
                    e.to_string()
                })?;
                let out = s.handle(&h, r, fds).map_err(|e| {
                    s.reset();
                    e.to_string()
                })?;
                Ok(out.map(|b| b[HDR_LEN..].to_vec()))
            }
            Transport::Socket(sock) => {
                let bytes = msg::request(req, 0, payload);
                let fdrefs: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
                let mut space =
                    [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
                let mut anc = rustix::net::SendAncillaryBuffer::new(&mut space);
                if !fdrefs.is_empty() {
                    anc.push(rustix::net::SendAncillaryMessage::ScmRights(&fdrefs));
                }
                rustix::net::sendmsg(
                    &*sock,
                    &[std::io::IoSlice::new(&bytes)],
                    &mut anc,
                    rustix::net::SendFlags::empty(),
                )
                .map_err(|e| e.to_string())?;
                if !wants_reply {
                    return Ok(None);
                }
                let mut hdr = [0u8; HDR_LEN];
                read_exact(sock, &mut hdr)?;
                let size = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as usize;
                let mut p = vec![0u8; size];
                read_exact(sock, &mut p)?;
                Ok(Some(p))
            }
        }
    }

    fn setup(&mut self, features: u64) -> Result<(), String> {
        let u64p = |v: u64| v.to_le_bytes().to_vec();
        let offered = self.request(code::GET_FEATURES, &[], vec![])?;
        if offered != Some(u64p(OFFERED)) {
            return Err(format!("unexpected offer {offered:?}"));
        }
        self.request(code::SET_FEATURES, &u64p(features), vec![])?;
        if features & F_PROTOCOL_FEATURES != 0 {
            self.request(code::GET_PROTOCOL_FEATURES, &[], vec![])?;
            // No REPLY_ACK: the driver reads only the replies requests have.
            self.request(code::SET_PROTOCOL_FEATURES, &u64p(0), vec![])?;
        }
        self.request(code::SET_OWNER, &[], vec![])?;
        let mut t = vec![0u8; 8 + 32];
        t[0] = 1;
        t[16..24].copy_from_slice(&RAM.to_le_bytes());
        t[24..32].copy_from_slice(&UVA_BASE.to_le_bytes());
        let fd = self.ram_fd.try_clone().map_err(|e| e.to_string())?;
        self.request(code::SET_MEM_TABLE, &t, vec![fd])?;
        for q in 0..2 {
            self.start_queue(q)?;
        }
        // Receive buffers: all of them, once.
        for i in 0..QSIZE {
            self.offer(0, i, BUF, true);
        }
        // A request with a reply as a barrier: the back end handles messages
        // in order, so once it answers, both queues run (without this a
        // packet for this guest could come before its receive queue started).
        self.request(code::GET_FEATURES, &[], vec![])?;
        Ok(())
    }

    /// Sets queue `q` up and starts it.
    pub fn start_queue(&mut self, q: usize) -> Result<(), String> {
        let mut st = [0u8; 8];
        st[..4].copy_from_slice(&(q as u32).to_le_bytes());
        st[4..].copy_from_slice(&(QSIZE as u32).to_le_bytes());
        self.request(code::SET_VRING_NUM, &st, vec![])?;
        st[4..].copy_from_slice(&(self.next_avail[q] as u32).to_le_bytes());
        self.request(code::SET_VRING_BASE, &st, vec![])?;
        let mut a = [0u8; 40];
        a[..4].copy_from_slice(&(q as u32).to_le_bytes());
        a[8..16].copy_from_slice(&(UVA_BASE + desc_gpa(q)).to_le_bytes());
        a[16..24].copy_from_slice(&(UVA_BASE + used_gpa(q)).to_le_bytes());
        a[24..32].copy_from_slice(&(UVA_BASE + avail_gpa(q)).to_le_bytes());
        self.request(code::SET_VRING_ADDR, &a, vec![])?;
        let dup = |f: &Arc<OwnedFd>| f.try_clone().map_err(|e| e.to_string());
        let call = dup(&self.call[q])?;
        self.request(code::SET_VRING_CALL, &(q as u64).to_le_bytes(), vec![call])?;
        let kick = dup(&self.kick[q])?;
        self.request(code::SET_VRING_KICK, &(q as u64).to_le_bytes(), vec![kick])?;
        if self.features & F_PROTOCOL_FEATURES != 0 {
            st[4..].copy_from_slice(&1u32.to_le_bytes());
            self.request(code::SET_VRING_ENABLE, &st, vec![])?;
        }
        Ok(())
    }

    /// Writes `bytes` at guest-physical `gpa`.
    pub fn write_mem(&self, gpa: u64, bytes: &[u8]) {
        assert!(self.ram.copy_in(gpa as usize, bytes));
    }

    /// Reads guest memory.
    pub fn read_mem(&self, gpa: u64, out: &mut [u8]) {
        assert!(self.ram.copy_out(gpa as usize, out));
    }

    /// Writes descriptor `i` of queue `q` raw.
    pub fn write_desc(&self, q: usize, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = (desc_gpa(q) + 16 * i as u64) as usize;
        assert!(self.ram.write_u64(at, addr));
        assert!(self.ram.write_u32(at + 8, len));
        assert!(self.ram.write_u16(at + 12, flags));
        assert!(self.ram.write_u16(at + 14, next));
    }

    /// Puts head `head` into queue `q`'s available ring and publishes it.
    pub fn make_available(&mut self, q: usize, head: u16) {
        let n = self.next_avail[q];
        let slot = (avail_gpa(q) + 4 + 2 * (n % QSIZE) as u64) as usize;
        assert!(self.ram.write_u16(slot, head));
        self.next_avail[q] = n.wrapping_add(1);
        assert!(self
            .ram
            .store_u16_release(avail_gpa(q) as usize + 2, self.next_avail[q]));
    }

    /// Sets queue `q`'s available index raw (for hostile-guest tests).
    pub fn set_avail_idx(&mut self, q: usize, idx: u16) {
        assert!(self.ram.store_u16_release(avail_gpa(q) as usize + 2, idx));
    }

    /// Offers buffer `i` of queue `q` (`len` bytes; device-writable when `write`).
    pub fn offer(&mut self, q: usize, i: u16, len: u32, write: bool) {
        self.write_desc(q, i, buf_gpa(q, i), len, if write { 2 } else { 0 }, 0);
        self.make_available(q, i);
    }

    /// Notifies the device about queue `q`.
    pub fn kick(&self, q: usize) {
        let _ = rustix::io::write(self.kick[q].as_fd(), &1u64.to_ne_bytes());
    }

    /// Whether the device interrupted on queue `q` since the last call.
    pub fn interrupted(&self, q: usize) -> bool {
        rustix::io::read(self.call[q].as_fd(), &mut [0u8; 8]).is_ok()
    }

    fn used(&self, q: usize) -> u16 {
        self.ram
            .load_u16_acquire(used_gpa(q) as usize + 2)
            .unwrap_or(0)
    }

    /// The used element `n` of queue `q`: `(id, len)`.
    fn used_elem(&self, q: usize, n: u16) -> (u32, u32) {
        let at = (used_gpa(q) + 4 + 8 * (n % QSIZE) as u64) as usize;
        (
            self.ram.read_u32(at).unwrap_or(u32::MAX),
            self.ram.read_u32(at + 4).unwrap_or(0),
        )
    }

    /// Header length for the negotiated features.
    pub fn hdr_len(&self) -> usize {
        if self.features & (crate::backend::F_VERSION_1 | crate::backend::F_MRG_RXBUF) != 0 {
            NET_HDR
        } else {
            10
        }
    }

    /// Transmits an IP packet (virtio-net header, Ethernet header, packet)
    /// without kicking; false when the ring is full or it does not fit.
    pub fn transmit(&mut self, pkt: &[u8]) -> bool {
        let et: [u8; 2] = if pkt.first().map(|b| b >> 4) == Some(6) {
            [0x86, 0xdd]
        } else {
            [0x08, 0x00]
        };
        let mut f = vec![0u8; self.hdr_len()];
        f.extend_from_slice(&VIADUCT_MAC);
        f.extend_from_slice(&self.mac);
        f.extend_from_slice(&et);
        f.extend_from_slice(pkt);
        self.transmit_frame(&f)
    }

    /// Transmits a whole frame (headers included) as one descriptor.
    pub fn transmit_frame(&mut self, frame: &[u8]) -> bool {
        self.reclaim_tx();
        let q = 1;
        if self.next_avail[q].wrapping_sub(self.last_used[q]) >= QSIZE || frame.len() > BUF as usize
        {
            return false;
        }
        let i = self.next_avail[q] % QSIZE;
        self.write_mem(buf_gpa(q, i), frame);
        self.write_desc(q, i, buf_gpa(q, i), frame.len() as u32, 0, 0);
        self.make_available(q, i);
        true
    }

    /// Collects what the device has used of the transmit queue.
    pub fn reclaim_tx(&mut self) -> u16 {
        let u = self.used(1);
        let n = u.wrapping_sub(self.last_used[1]);
        self.last_used[1] = u;
        n
    }

    /// Takes the next received frame (merged buffers joined) and re-offers
    /// its buffers; returns the frame with its headers.
    pub fn receive(&mut self) -> Option<Vec<u8>> {
        let q = 0;
        if self.used(q) == self.last_used[q] {
            return None;
        }
        let mut frame = Vec::new();
        let mut parts = 1u16;
        let mut k = 0u16;
        while k < parts {
            if self.used(q) == self.last_used[q] {
                break;
            }
            let (id, len) = self.used_elem(q, self.last_used[q]);
            self.last_used[q] = self.last_used[q].wrapping_add(1);
            let id = (id as u16) % QSIZE;
            let mut b = vec![0u8; (len.min(BUF)) as usize];
            self.read_mem(buf_gpa(q, id), &mut b);
            if k == 0 && self.features & crate::backend::F_MRG_RXBUF != 0 && b.len() >= NET_HDR {
                parts = u16::from_le_bytes([b[10], b[11]]).max(1);
            }
            frame.extend_from_slice(&b);
            self.offer(q, id, BUF, true);
            k += 1;
        }
        Some(frame)
    }

    /// Takes the next received IP packet (headers checked and removed).
    pub fn receive_packet(&mut self) -> Option<Vec<u8>> {
        let f = self.receive()?;
        let hl = self.hdr_len();
        assert!(f.len() >= hl + ETH_LEN, "short frame");
        assert_eq!(&f[hl..hl + 6], &self.mac, "destination MAC");
        assert_eq!(&f[hl + 6..hl + 12], &VIADUCT_MAC, "source MAC");
        Some(f[hl + ETH_LEN..].to_vec())
    }

    /// The session, when in-process.
    pub fn session(&mut self) -> Option<&mut Session> {
        match &mut self.transport {
            Transport::Direct(s) => Some(s),
            Transport::Socket(_) => None,
        }
    }
}

fn read_exact(sock: &OwnedFd, mut b: &mut [u8]) -> Result<(), String> {
    while !b.is_empty() {
        match rustix::io::read(sock, &mut *b) {
            Ok(0) => return Err("the back end closed the connection".into()),
            Ok(n) => b = &mut b[n..],
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {
                std::thread::sleep(std::time::Duration::from_millis(1))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}
