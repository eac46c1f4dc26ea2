//! A virtio-net port of the Viaduct: the personality's network card, seen
//! from the device side, carrying plain IP packets in Ethernet frames.
//!
//! Two halves, each driven by one pump thread:
//! - [`TxHalf`] takes what the guest transmits (its queue 1): copies the
//!   virtio-net header and the Ethernet header out first, then the packet
//!   straight into the caller's buffer; checks the copies (no offloads: the
//!   header's flags and GSO type must be zero; EtherType IPv4 or IPv6) and
//!   hands over the IP packet. Anything else is dropped and counted.
//! - [`RxHalf`] gives packets to the guest (its queue 0): a zero virtio-net
//!   header (`num_buffers` set with merged buffers), an Ethernet header from
//!   the Viaduct's MAC to the guest's, the packet.
//!
//! The guest runs its interface without ARP (`ip link set eth0 arp off`):
//! Linux then sends every frame to its own MAC and never asks for a
//! neighbour, so the Viaduct answers no ARP and no neighbour discovery — no
//! link-layer protocol in the trusted engine.
//!
//! The control thread ([`crate::backend`]) sets the queues up and tears them
//! down; each half takes its queue's lock per packet and notices a new
//! setup by its generation number (and the `changed` eventfd it polls).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::event::{eventfd, EventfdFlags};
use rustix::io::Errno;

use crate::queue::{Chain, Pop, Queue};

/// The guest's receive queue (the device writes).
pub const RX: usize = 0;
/// The guest's transmit queue (the device reads).
pub const TX: usize = 1;
/// Ethernet header length.
pub const ETH_LEN: usize = 14;
/// The virtio-net header with `VERSION_1` or `MRG_RXBUF`.
pub const HDR_LEN: usize = 12;
/// The red guest's MAC (the init gives it to the VMM).
pub const GUEST_MAC_RED: [u8; 6] = [0x02, 0x76, 0x64, 0, 0, 0x01];
/// The black guest's MAC.
pub const GUEST_MAC_BLACK: [u8; 6] = [0x02, 0x76, 0x64, 0, 0, 0x02];
/// The Viaduct's MAC on both ports.
pub const VIADUCT_MAC: [u8; 6] = [0x02, 0x76, 0x64, 0, 0, 0xfe];
/// Chains one received packet may span with merged buffers.
pub const MAX_MERGE: usize = 64;

/// A queue slot shared between the control thread and one half.
#[derive(Debug, Default)]
pub struct Slot {
    /// Bumped on every change the half must notice.
    pub gen: u64,
    /// The running queue, when set up, started and enabled.
    pub queue: Option<Queue>,
    /// The guest's notifications for this queue.
    pub kick: Option<Arc<OwnedFd>>,
    /// The guest's interrupt for this queue.
    pub call: Option<Arc<OwnedFd>>,
    /// Virtio-net header length negotiated (10 or 12).
    pub hdr_len: usize,
    /// Merged receive buffers negotiated.
    pub mrg: bool,
}

/// One port's state shared between its control thread and its two halves.
#[derive(Debug)]
pub struct PortShared {
    /// `red` or `black`, for messages.
    pub name: &'static str,
    /// The guest's MAC (destination of frames to it).
    pub guest_mac: [u8; 6],
    /// The Viaduct's MAC on this port (source of frames to the guest).
    pub our_mac: [u8; 6],
    /// One per queue, each on its own cache lines: the two halves run on
    /// different pump threads.
    slots: [Padded<Mutex<Slot>>; 2],
    changed: [OwnedFd; 2],
}

/// Keeps a value on cache lines of its own (no false sharing between the
/// pump threads).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

impl PortShared {
    /// A port with no front end yet.
    pub fn new(
        name: &'static str,
        guest_mac: [u8; 6],
        our_mac: [u8; 6],
    ) -> std::io::Result<Arc<PortShared>> {
        let ev = || eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK);
        Ok(Arc::new(PortShared {
            name,
            guest_mac,
            our_mac,
            slots: [Padded::default(), Padded::default()],
            changed: [ev()?, ev()?],
        }))
    }

    /// Locks queue `i`'s slot (a poisoned lock is taken as is: the slot is
    /// plain data, consistent after every statement).
    pub fn slot(&self, i: usize) -> MutexGuard<'_, Slot> {
        self.slots[i & 1]
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Tells half `i` its slot changed (bumps the generation, wakes it).
    pub fn changed(&self, i: usize, slot: &mut Slot) {
        slot.gen += 1;
        let _ = rustix::io::write(&self.changed[i & 1], &1u64.to_ne_bytes());
    }

    /// The two halves. Call once.
    pub fn halves(self: &Arc<Self>) -> (TxHalf, RxHalf) {
        (
            TxHalf {
                shared: self.clone(),
                chain: Box::default(),
                gen: u64::MAX,
                kick: None,
                pending: false,
                counters: PortCounters::default(),
            },
            RxHalf {
                shared: self.clone(),
                pending: false,
                chains: vec![Chain::default(); MAX_MERGE],
                counters: PortCounters::default(),
            },
        )
    }
}

/// What a port half dropped or did.
#[derive(Debug, Default, Clone, Copy)]
pub struct PortCounters {
    /// Packets passed (to the pump, or to the guest).
    pub packets: u64,
    /// Frames that are not IPv4 or IPv6 (ARP, VLAN, ...), dropped.
    pub not_ip: u64,
    /// Frames with offload requests or shorter than their headers, dropped.
    pub malformed: u64,
    /// Frames larger than the pump's buffer, dropped.
    pub too_big: u64,
    /// Chains refused (bad index, direction, address, length), returned empty.
    pub bad_chains: u64,
    /// Packets for the guest dropped: no receive buffer (or too small).
    pub no_buffers: u64,
    /// Packets dropped because no front end has the queue running.
    pub not_ready: u64,
    /// Interrupts sent.
    pub interrupts: u64,
}

impl PortCounters {
    /// One line for the counters dump.
    pub fn line(&self, what: &str) -> String {
        format!(
            "viaduct {what}: packets={} not_ip={} malformed={} too_big={} bad_chains={} \
             no_buffers={} not_ready={} interrupts={}\n",
            self.packets,
            self.not_ip,
            self.malformed,
            self.too_big,
            self.bad_chains,
            self.no_buffers,
            self.not_ready,
            self.interrupts
        )
    }
}

fn signal(slot: &Slot, c: &mut PortCounters) {
    let wants = slot.queue.as_ref().is_some_and(|q| q.wants_interrupt());
    if let (true, Some(call)) = (wants, slot.call.as_ref()) {
        let _ = rustix::io::write(call.as_fd(), &1u64.to_ne_bytes());
        c.interrupts += 1;
    }
}

fn ethertype(pkt: &[u8]) -> Option<[u8; 2]> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => Some([0x08, 0x00]),
        Some(6) => Some([0x86, 0xdd]),
        _ => None,
    }
}

/// What the guest transmits, as IP packets.
#[derive(Debug)]
pub struct TxHalf {
    shared: Arc<PortShared>,
    chain: Box<Chain>,
    gen: u64,
    kick: Option<Arc<OwnedFd>>,
    pending: bool,
    /// This half's counters.
    pub counters: PortCounters,
}

impl TxHalf {
    /// Copies the next IP packet the guest transmitted into `buf` and
    /// returns its length; `Err(AGAIN)` when there is none (then wait for
    /// [`TxHalf::poll_fds`]). Frames that are not IP, carry offload
    /// requests or do not fit `buf` are dropped and counted.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        // Borrowed, not cloned: no reference count touched per packet.
        let sh = &self.shared;
        let mut slot = sh.slot(TX);
        if slot.gen != self.gen {
            self.gen = slot.gen;
            self.kick = slot.kick.clone();
            let _ = rustix::io::read(&sh.changed[TX], &mut [0u8; 8]);
        }
        let hl = slot.hdr_len;
        let mut drained = false;
        loop {
            let Some(q) = slot.queue.as_mut() else {
                return Err(Errno::AGAIN);
            };
            let c = &mut self.chain;
            match q.pop(c) {
                Pop::Chain => {}
                Pop::Bad(_) => {
                    self.counters.bad_chains += 1;
                    self.pending = true;
                    continue;
                }
                Pop::Empty => {
                    if !drained {
                        // Clear the notification, then look once more: a
                        // chain made available in between is seen now, one
                        // made later notifies again.
                        drained = true;
                        if let Some(k) = self.kick.as_ref() {
                            let _ = rustix::io::read(k.as_fd(), &mut [0u8; 8]);
                        }
                        continue;
                    }
                    if self.pending {
                        self.pending = false;
                        signal(&slot, &mut self.counters);
                    }
                    return Err(Errno::AGAIN);
                }
            };
            // Copy, then parse: the headers and the packet are copied out of
            // guest memory once; only the copies are looked at.
            let mut head = [0u8; HDR_LEN + ETH_LEN];
            let head = &mut head[..hl + ETH_LEN];
            let got = q.read(c, 0, head);
            let body = (c.len() as usize).saturating_sub(hl + ETH_LEN);
            let n = if body <= buf.len() {
                q.read(c, hl + ETH_LEN, &mut buf[..body])
            } else {
                0
            };
            q.add_used(c.head(), 0);
            self.pending = true;
            if got < head.len() || head[0] != 0 || head[1] != 0 {
                // Short, or flags (NEEDS_CSUM, DATA_VALID) or a GSO type:
                // no offload was negotiated.
                self.counters.malformed += 1;
                continue;
            }
            let et = [head[hl + 12], head[hl + 13]];
            if et != [0x08, 0x00] && et != [0x86, 0xdd] {
                self.counters.not_ip += 1;
                continue;
            }
            if body > buf.len() {
                self.counters.too_big += 1;
                continue;
            }
            if n < body || ethertype(&buf[..n]) != Some(et) {
                self.counters.malformed += 1;
                continue;
            }
            self.counters.packets += 1;
            return Ok(n);
        }
    }

    /// Interrupts the guest for the chains returned since the last one, if
    /// it wants them (call after a batch of reads).
    pub fn finish(&mut self) {
        if self.pending {
            self.pending = false;
            let slot = self.shared.slot(TX);
            signal(&slot, &mut self.counters);
        }
    }

    /// What to poll: the slot's change notification and, while a front end
    /// runs the queue, the guest's kick.
    pub fn poll_fds(&self) -> (BorrowedFd<'_>, Option<BorrowedFd<'_>>) {
        (
            self.shared.changed[TX].as_fd(),
            self.kick.as_ref().map(|k| k.as_fd()),
        )
    }
}

/// What the guest receives.
#[derive(Debug)]
pub struct RxHalf {
    shared: Arc<PortShared>,
    pending: bool,
    chains: Vec<Chain>,
    /// This half's counters.
    pub counters: PortCounters,
}

/// Why a packet did not reach the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No front end runs the queue.
    NotReady,
    /// The guest has not posted room for it.
    NoBuffers,
    /// Not an IPv4 or IPv6 packet.
    NotIp,
}

impl RxHalf {
    /// Gives `pkt` (an IP packet) to the guest. Drops are counted.
    pub fn send(&mut self, pkt: &[u8]) -> Result<(), SendError> {
        let r = self.send_inner(pkt);
        match r {
            Ok(()) => self.counters.packets += 1,
            Err(SendError::NotReady) => self.counters.not_ready += 1,
            Err(SendError::NoBuffers) => self.counters.no_buffers += 1,
            Err(SendError::NotIp) => self.counters.not_ip += 1,
        }
        r
    }

    fn send_inner(&mut self, pkt: &[u8]) -> Result<(), SendError> {
        let et = ethertype(pkt).ok_or(SendError::NotIp)?;
        let sh = &self.shared;
        let mut slot = sh.slot(RX);
        let (hl, mrg) = (slot.hdr_len, slot.mrg);
        let q = slot.queue.as_mut().ok_or(SendError::NotReady)?;
        let mut head = [0u8; HDR_LEN + ETH_LEN];
        let head = &mut head[..hl + ETH_LEN];
        head[hl..hl + 6].copy_from_slice(&sh.guest_mac);
        head[hl + 6..hl + 12].copy_from_slice(&sh.our_mac);
        head[hl + 12..hl + 14].copy_from_slice(&et);
        let total = head.len() + pkt.len();
        // Take chains until they hold the frame (one without merged buffers).
        let chains = &mut self.chains;
        let (mut k, mut room) = (0usize, 0usize);
        while room < total {
            if k == MAX_MERGE || (!mrg && k == 1) {
                q.unpop(k as u16);
                return Err(SendError::NoBuffers);
            }
            match q.pop(&mut chains[k]) {
                Pop::Chain => {
                    room += chains[k].len() as usize;
                    k += 1;
                }
                Pop::Empty => {
                    q.unpop(k as u16);
                    return Err(SendError::NoBuffers);
                }
                Pop::Bad(_) => {
                    // Chains taken before it cannot be put back behind it:
                    // return them empty, and drop this packet.
                    self.counters.bad_chains += 1;
                    for c in &chains[..k] {
                        q.add_used(c.head(), 0);
                    }
                    self.pending = true;
                    return Err(SendError::NoBuffers);
                }
            }
        }
        if hl == HDR_LEN && mrg {
            head[10..12].copy_from_slice(&(k as u16).to_le_bytes());
        }
        let mut at = 0usize;
        for c in &chains[..k] {
            let cap = c.len() as usize;
            let mut w = 0;
            while w < cap && at < total {
                let n = if at < head.len() {
                    q.write(c, w, &head[at..])
                } else {
                    let end = (at - head.len() + (cap - w)).min(pkt.len());
                    q.write(c, w, &pkt[at - head.len()..end])
                };
                if n == 0 {
                    break;
                }
                w += n;
                at += n;
            }
            q.add_used(c.head(), w as u32);
        }
        self.pending = true;
        Ok(())
    }

    /// Interrupts the guest for what was given since the last one.
    pub fn finish(&mut self) {
        if self.pending {
            self.pending = false;
            let slot = self.shared.slot(RX);
            signal(&slot, &mut self.counters);
        }
    }
}
