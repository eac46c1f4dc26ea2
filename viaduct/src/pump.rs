//! The packet pump: one thread per direction, each owning one engine half.
//! A thread waits for its input port with `poll` (200 ms timeout, so it sees
//! stop and dump requests), then reads packets until EAGAIN (at most
//! [`BATCH`] per wake-up), runs them through the engine and writes the
//! results to the other port. Buffers are allocated once per thread; nothing
//! is allocated per packet.
//!
//! Offloads (red port with a vnet header, see [`crate::offload`]):
//! - outbound, a read may be a TSO/USO super-packet of up to 64 KiB: it is
//!   cut into MTU segments ([`gso_split`]), each of which goes through the
//!   engine on its own (SPD, ESP) exactly like a packet read alone; a packet
//!   whose checksum the personality left to "hardware" is completed first.
//! - inbound, decrypted TCP segments of one flow are coalesced
//!   ([`Coalescer`]) and written to red as one super-packet at the end of
//!   each read batch (no timers, no added latency). A kernel that refuses a
//!   coalesced write (EINVAL) gets the segments one by one; after
//!   [`GRO_EINVAL_LIMIT`] refusals coalescing is switched off.

use std::io::IoSlice;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;

use crate::batch::UdpBatch;
use crate::engine::{InboundPath, OutboundPath, Verdict};
use crate::offload::{
    complete_csum, gso_split, split_udp_in_place, Coalescer, VnetHdr, GSO_NONE, GSO_UDP_L4,
    VNET_HDR_LEN,
};
use crate::sa::Timestamp;
use crate::tun::Port;

/// Packets handled per wake-up before checking control flags again.
pub const BATCH: usize = 64;
/// Largest datagram a port carries.
pub const MAX_PACKET: usize = 65_535;
/// Room for the outer header and ESP overhead.
pub const OVERHEAD: usize = 40 + 8 + 8 + 3 + 2 + 16;
/// Coalesced writes the kernel may refuse before coalescing is turned off.
pub const GRO_EINVAL_LIMIT: u64 = 16;

/// Shared control flags set by the main thread on signals.
#[derive(Debug)]
pub struct Control {
    /// Stop the pump.
    pub stop: AtomicBool,
    /// Incremented to request a counter dump.
    pub dump: AtomicU64,
    start: Instant,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            stop: AtomicBool::new(false),
            dump: AtomicU64::new(0),
            start: Instant::now(),
        }
    }
}

impl Control {
    /// Seconds since the pump started (the engine's clock).
    pub fn now(&self) -> Timestamp {
        Timestamp(self.start.elapsed().as_secs())
    }
}

/// Port I/O counters of one direction.
#[derive(Debug, Default, Clone, Copy)]
pub struct IoCounters {
    /// Reads from the input port (a super-packet counts once).
    pub read: u64,
    /// Writes to the output port (a coalesced frame counts once).
    pub written: u64,
    /// Writes that failed (port down, full).
    pub write_errors: u64,
    /// Reads that were super-packets (TSO/USO).
    pub gso_reads: u64,
    /// Segments cut from super-packets.
    pub segments: u64,
    /// Reads whose L4 checksum the Viaduct completed.
    pub csum_completed: u64,
    /// Reads with an inconsistent vnet header or super-packet (dropped).
    pub offload_malformed: u64,
    /// Coalesced writes the kernel refused (then written segment by segment).
    pub gro_write_einval: u64,
}

/// Pump settings.
#[derive(Debug, Clone, Copy)]
pub struct PumpConfig {
    /// Coalesce decrypted TCP segments into super-packets on red (needs a
    /// red port with a vnet header and TSO offloads negotiated).
    pub gro: bool,
}

/// Writes a plain IP packet to a port, prefixing an all-zero vnet header
/// ("complete packet, checksums done") when the port carries headers.
fn write_packet(port: &Port, pkt: &[u8], io: &mut IoCounters) {
    const ZERO: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];
    let done = if port.vnet {
        rustix::io::writev(&port.fd, &[IoSlice::new(&ZERO), IoSlice::new(pkt)])
    } else {
        rustix::io::write(&port.fd, pkt)
    };
    match done {
        Ok(_) => io.written += 1,
        Err(_) => io.write_errors += 1,
    }
}

/// The loop shared by both directions: wait, read a batch, hand each read
/// to `handle`, then `end_batch`; dumps counters on request and at exit.
fn pump_loop(
    input: &Port,
    ctl: &Control,
    buf: &mut [u8],
    mut handle: impl FnMut(&mut [u8], usize, Timestamp),
    mut end_batch: impl FnMut(Timestamp),
    report: impl Fn() -> String,
) -> std::io::Result<()> {
    let mut seen_dump = ctl.dump.load(Ordering::Relaxed);
    let timeout = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    let result = loop {
        if ctl.stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let d = ctl.dump.load(Ordering::Relaxed);
        if d != seen_dump {
            seen_dump = d;
            eprint!("{}", report());
        }
        let mut fds = [PollFd::new(&input.fd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) | Err(Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => break Err(e.into()),
        }
        let now = ctl.now();
        let mut failed = None;
        for _ in 0..BATCH {
            let n = match rustix::io::read(input.fd.as_fd(), &mut *buf) {
                Ok(n) => n,
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            handle(buf, n, now);
        }
        end_batch(now);
        if let Some(e) = failed {
            break Err(e.into());
        }
    };
    eprint!("{}", report());
    result
}

fn io_line(name: &str, io: &IoCounters) -> String {
    format!(
        "viaduct {name}: read={} written={} write_errors={} gso_reads={} segments={} \
         csum_completed={} offload_malformed={} gro_write_einval={}\n",
        io.read,
        io.written,
        io.write_errors,
        io.gso_reads,
        io.segments,
        io.csum_completed,
        io.offload_malformed,
        io.gro_write_einval,
    )
}

/// red → black: reads (super-)packets from red, segments them, encrypts
/// each segment and writes it to black.
pub fn run_outbound(
    o: OutboundPath,
    red: Port,
    black: Port,
    ctl: Arc<Control>,
) -> std::io::Result<()> {
    let o = std::cell::RefCell::new(o);
    let io = std::cell::Cell::new(IoCounters::default());
    let mut buf = vec![0u8; VNET_HDR_LEN + MAX_PACKET];
    let mut scratch = vec![0u8; MAX_PACKET];
    let mut out = vec![0u8; MAX_PACKET + OVERHEAD];
    // ESP in UDP to a black port with UDP segmentation: batch datagrams.
    let uso = black.vnet && black.offloads & crate::tun::OFFLOAD_USO != 0;
    let batch = std::cell::RefCell::new(uso.then(UdpBatch::new));
    let handle = |buf: &mut [u8], n: usize, now: Timestamp| {
        let mut c = io.get();
        c.read += 1;
        let mut o = o.borrow_mut();
        let mut batch = batch.borrow_mut();
        let mut send = |pkt: &[u8], c: &mut IoCounters| {
            if let Verdict::Send(len) = o.process(pkt, &mut out, now) {
                match batch.as_mut() {
                    Some(b) => b.push(&out[..len], &mut |f: &[u8]| write_frame(&black, f, c)),
                    None => write_packet(&black, &out[..len], c),
                }
            }
        };
        if !red.vnet {
            send(&buf[..n], &mut c);
        } else {
            match split_read(
                &mut buf[..n],
                &mut scratch,
                UdpSplit::Checksummed,
                &mut c,
                &mut |seg, c| send(seg, c),
            ) {
                Ok(()) => {}
                Err(_) => c.offload_malformed += 1,
            }
        }
        io.set(c);
    };
    let end = |now: Timestamp| {
        if let Some(b) = batch.borrow_mut().as_mut() {
            let mut c = io.get();
            b.flush(&mut |f: &[u8]| write_frame(&black, f, &mut c));
            io.set(c);
        }
        o.borrow_mut()
            .poll_events(now, |ev| eprintln!("viaduct: SA lifetime event {ev:?}"))
    };
    let report = || {
        let udp = match batch.borrow().as_ref() {
            Some(b) => {
                let s = b.stats();
                format!(
                    "viaduct red->black: uso=on frames={} gso_frames={} gso_datagrams={}\n",
                    s.frames, s.gso_frames, s.gso_datagrams
                )
            }
            None => String::new(),
        };
        format!(
            "{}{}{}",
            io_line("red->black", &io.get()),
            udp,
            o.borrow().report()
        )
    };
    pump_loop(&red, &ctl, &mut buf, handle, end, report)
}

/// Writes a whole frame (vnet header included) to a port.
fn write_frame(port: &Port, frame: &[u8], io: &mut IoCounters) {
    match rustix::io::write(&port.fd, frame) {
        Ok(_) => io.written += 1,
        Err(_) => io.write_errors += 1,
    }
}

/// How [`split_read`] cuts a `UDP_L4` super-packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UdpSplit {
    /// Into `scratch`, UDP checksums computed (packets that leave the Viaduct).
    Checksummed,
    /// In place, UDP checksums not computed: ESP in UDP, whose ICV
    /// authenticates it (black → red).
    InPlaceEsp,
}

/// One read from a port with vnet headers: `frame` is `[hdr][IP packet]`.
/// Calls `f` once per complete IP packet (the packet itself, its checksum
/// completed, or each segment of a super-packet).
fn split_read(
    frame: &mut [u8],
    scratch: &mut [u8],
    udp: UdpSplit,
    c: &mut IoCounters,
    f: &mut dyn FnMut(&mut [u8], &mut IoCounters),
) -> Result<(), crate::offload::OffloadError> {
    let hdr = VnetHdr::parse(frame)?;
    let pkt = frame
        .get_mut(VNET_HDR_LEN..)
        .ok_or(crate::offload::OffloadError::Truncated)?;
    if hdr.gso_type == GSO_NONE {
        if hdr.flags & crate::offload::VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
            complete_csum(pkt, &hdr)?;
            c.csum_completed += 1;
        }
        f(pkt, c);
        return Ok(());
    }
    let n = if udp == UdpSplit::InPlaceEsp && hdr.gso_type == GSO_UDP_L4 {
        split_udp_in_place(pkt, &hdr, |seg| f(seg, c))?
    } else {
        gso_split(pkt, &hdr, scratch, |seg| f(seg, c))?
    };
    c.gso_reads += 1;
    c.segments += n as u64;
    Ok(())
}

/// black → red: decrypts what black delivers and writes it to red, coalesced
/// into super-packets when `cfg.gro` and red has TSO offloads.
pub fn run_inbound(
    i: InboundPath,
    black: Port,
    red: Port,
    ctl: Arc<Control>,
    cfg: PumpConfig,
) -> std::io::Result<()> {
    let i = std::cell::RefCell::new(i);
    let io = std::cell::Cell::new(IoCounters::default());
    let gro_on = cfg.gro && red.vnet && red.offloads & crate::tun::OFFLOAD_TCP != 0;
    let w = std::cell::RefCell::new(RedWriter {
        red,
        gro: gro_on,
        fallback: vec![0u8; MAX_PACKET],
    });
    let co = std::cell::RefCell::new(Coalescer::new());
    let mut buf = vec![0u8; VNET_HDR_LEN + MAX_PACKET + OVERHEAD];
    let mut scratch = vec![0u8; MAX_PACKET];
    let handle = |buf: &mut [u8], n: usize, now: Timestamp| {
        let mut c = io.get();
        c.read += 1;
        let mut decap = |pkt: &mut [u8], c: &mut IoCounters| {
            if let Verdict::Send(len) = i.borrow_mut().process(pkt, now) {
                let inner = &pkt[..len];
                let mut w = w.borrow_mut();
                if w.gro {
                    co.borrow_mut().push(inner, &mut |f: &[u8]| w.emit(f, c));
                } else {
                    write_packet(&w.red, inner, c);
                }
            }
        };
        if black.vnet {
            // ESP-in-UDP super-packets (USO) are cut into datagrams in place.
            let split = split_read(
                &mut buf[..n],
                &mut scratch,
                UdpSplit::InPlaceEsp,
                &mut c,
                &mut decap,
            );
            if split.is_err() {
                c.offload_malformed += 1;
            }
        } else {
            decap(&mut buf[..n], &mut c);
        }
        io.set(c);
    };
    let end = |now: Timestamp| {
        let mut c = io.get();
        let mut w = w.borrow_mut();
        co.borrow_mut().flush(&mut |f: &[u8]| w.emit(f, &mut c));
        drop(w);
        io.set(c);
        i.borrow_mut()
            .poll_events(now, |ev| eprintln!("viaduct: SA lifetime event {ev:?}"))
    };
    let report = || {
        let s = co.borrow().stats();
        format!(
            "{}viaduct black->red: gro={} gro_frames={} gro_merged={} gro_passthrough={}\n{}",
            io_line("black->red", &io.get()),
            if w.borrow().gro { "on" } else { "off" },
            s.frames,
            s.merged,
            s.passthrough,
            i.borrow().report()
        )
    };
    pump_loop(&black, &ctl, &mut buf, handle, end, report)
}

/// The red side of the inbound direction: writes coalesced frames, falling
/// back to single segments when the kernel refuses one.
struct RedWriter {
    red: Port,
    gro: bool,
    fallback: Vec<u8>,
}

impl RedWriter {
    fn emit(&mut self, frame: &[u8], c: &mut IoCounters) {
        let hdr = match rustix::io::write(&self.red.fd, frame) {
            Ok(_) => {
                c.written += 1;
                return;
            }
            Err(Errno::INVAL) => match VnetHdr::parse(frame) {
                Ok(h) if h.gso_type != GSO_NONE => h,
                _ => {
                    c.write_errors += 1;
                    return;
                }
            },
            Err(_) => {
                c.write_errors += 1;
                return;
            }
        };
        // The kernel refused a coalesced frame: write its segments instead.
        c.gro_write_einval += 1;
        if c.gro_write_einval >= GRO_EINVAL_LIMIT && self.gro {
            self.gro = false;
            eprintln!("viaduct: red refuses coalesced writes; coalescing turned off");
        }
        let red = &self.red;
        let _ = gso_split(&frame[VNET_HDR_LEN..], &hdr, &mut self.fallback, |seg| {
            write_packet(red, seg, c)
        });
    }
}
