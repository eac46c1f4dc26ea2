//! The packet pump. Each direction ([`Outbound`]: red → black, [`Inbound`]:
//! black → red) owns one engine half, its buffers and counters; [`run`]
//! drives one or both directions in the calling thread: in turns, it reads
//! each input port until EAGAIN ([`BATCH`] reads or [`TURN_BYTES`] per turn
//! at most), runs the packets through the engine and writes the results to
//! the other port; when a turn finds every input empty it waits for them
//! with one `poll` (200 ms timeout, so it sees stop and dump requests).
//! One thread may carry both directions (fewer wake-ups: the
//! acknowledgements of a bulk transfer are picked up between batches
//! instead of waking a thread of their own) or each direction may have its
//! own thread (a core per direction on machines with cores to spare). Buffers are allocated once; nothing is allocated per packet.
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

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;

use crate::batch::UdpBatch;
pub use crate::control::Control;
use crate::engine::{InboundPath, OutboundPath, Verdict};
use crate::error::EngineError;
use crate::ikelink::{InCmd, Mailbox, OutCmd, Post, Tap};
use crate::offload::{
    complete_csum, gso_split, split_udp_in_place, Coalescer, VnetHdr, GSO_NONE, GSO_UDP_L4,
    VNET_HDR_LEN,
};
pub use crate::port::Port;
use crate::sa::Timestamp;
use viaduct_channel::{IkeDatagram, ToIke};

/// Reads per direction and turn, at most.
pub const BATCH: usize = 64;
/// Bytes per direction and turn, at most (four super-packets): the other
/// direction's turn comes at least this often.
pub const TURN_BYTES: usize = 4 * 65_536;
/// Largest datagram a port carries.
pub const MAX_PACKET: usize = 65_535;
/// Room for the outer header and ESP overhead.
pub const OVERHEAD: usize = 40 + 8 + 8 + 3 + 2 + 16;
/// Coalesced writes the kernel may refuse before coalescing is turned off.
pub const GRO_EINVAL_LIMIT: u64 = 16;

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
pub fn write_packet(port: &mut Port, pkt: &[u8], io: &mut IoCounters) {
    match port.write_packet(pkt) {
        Ok(_) => io.written += 1,
        Err(_) => io.write_errors += 1,
    }
}

/// One direction of the pump, driven by [`run`].
pub trait Direction {
    /// The port this direction reads from.
    fn input(&self) -> &Port;
    /// The same, to read from.
    fn input_mut(&mut self) -> &mut Port;
    /// That port's name in errors: `red` or `black`.
    fn input_name(&self) -> &'static str;
    /// Handles one read, as the port delivered it.
    fn handle(&mut self, read: &mut [u8], now: Timestamp);
    /// Called after each batch of reads: writes what was held back.
    fn end_batch(&mut self, now: Timestamp);
    /// The direction's counters, one line per group.
    fn report(&self) -> String;
    /// Log lines waiting to be written (the filter's logged rules).
    fn log(&mut self) -> Vec<String> {
        Vec::new()
    }
    /// A descriptor that becomes readable when [`Direction::commands`] has
    /// work (the IKE link's mailbox), if any.
    fn wake(&self) -> Option<&OwnedFd> {
        None
    }
    /// Carries out waiting commands; called before each turn's reads.
    /// `woken`: the last `poll` found the wake-up descriptor readable (it is
    /// read only then: no system call on a turn without a command).
    fn commands(&mut self, _now: Timestamp, _woken: bool) {}
}

/// Size of the read buffer [`run`] needs: a vnet header, the largest
/// datagram and room for ESP overhead.
pub const READ_BUF: usize = VNET_HDR_LEN + MAX_PACKET + OVERHEAD;

/// Drives `dirs` (one or two) in the calling thread until `ctl.stop` or a
/// read error. Each turn reads every direction's input until EAGAIN,
/// [`BATCH`] reads or [`TURN_BYTES`], hands each read to its direction and
/// ends the direction's batch; only when a turn drained every input does it
/// wait in `poll` (200 ms at most, to see `ctl`). Dumps counters on request
/// and at exit. An error names the port it came from.
pub fn run(dirs: &mut [&mut dyn Direction], ctl: &Control) -> Result<(), EngineError> {
    let Some(first) = dirs.first().map(|d| d.input_name()) else {
        return Ok(());
    };
    let err = |port: &'static str, e: Errno| EngineError::Io {
        port,
        source: e.into(),
    };
    if dirs.len() > 2 {
        return Err(EngineError::Io {
            port: first,
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the pump drives one or two directions",
            ),
        });
    }
    let mut buf = vec![0u8; READ_BUF];
    let mut seen_dump = ctl.dump.load(Ordering::Relaxed);
    let timeout = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    let report = |dirs: &[&mut dyn Direction]| {
        let text: String = dirs.iter().map(|d| d.report()).collect();
        eprint!("{text}");
    };
    // Whether the last turn left input behind; poll only when all drained.
    let mut busy = true;
    let result = 'outer: loop {
        if ctl.stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let d = ctl.dump.load(Ordering::Relaxed);
        if d != seen_dump {
            seen_dump = d;
            report(dirs);
        }
        let mut woken = [false; 2];
        if !busy {
            match wait(dirs, &timeout) {
                Ok(Some(w)) => woken = w,
                Ok(None) | Err(Errno::INTR) => continue,
                Err(e) => break Err(err(first, e)),
            }
        }
        busy = false;
        let now = ctl.now();
        for (dir, woken) in dirs.iter_mut().zip(woken) {
            dir.commands(now, woken);
        }
        // One turn per direction: read until EAGAIN, BATCH reads or
        // TURN_BYTES, so that a bulk direction does not hold back the other.
        for dir in dirs.iter_mut() {
            let (mut reads, mut bytes) = (0, 0);
            let mut failed = None;
            while reads < BATCH && bytes < TURN_BYTES {
                let read = match dir.input_mut().read(&mut buf) {
                    Ok(n) => &mut buf[..n],
                    Err(Errno::AGAIN) => break,
                    Err(Errno::INTR) => continue,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                };
                bytes += read.len();
                dir.handle(read, now);
                reads += 1;
            }
            dir.input_mut().end_reads();
            if reads > 0 {
                dir.end_batch(now);
                // Rate-limited by the engine: a few lines a second at most.
                for l in dir.log() {
                    eprintln!("{l}");
                }
            }
            if let Some(e) = failed {
                break 'outer Err(err(dir.input_name(), e));
            }
            busy |= reads == BATCH || bytes >= TURN_BYTES;
        }
    };
    report(dirs);
    result
}

/// Waits until one of (at most two) directions has input or a command;
/// `None` after the timeout, else which directions' wake-ups fired.
fn wait(
    dirs: &[&mut dyn Direction],
    timeout: &rustix::event::Timespec,
) -> rustix::io::Result<Option<[bool; 2]>> {
    let Some(first) = dirs.first() else {
        return Ok(None);
    };
    // At most six descriptors: a fixed array, nothing allocated.
    let Some(any) = first.input().poll_fds()[0] else {
        return Ok(None);
    };
    let mut fds = [(); 6].map(|_| PollFd::from_borrowed_fd(any, PollFlags::IN));
    let mut n = 0;
    // Where each direction's wake-up descriptor sits in `fds`.
    let mut wake_at = [None, None];
    for (i, d) in dirs.iter().take(2).enumerate() {
        for fd in d.input().poll_fds().into_iter().flatten() {
            fds[n] = PollFd::from_borrowed_fd(fd, PollFlags::IN);
            n += 1;
        }
        if let Some(w) = d.wake() {
            fds[n] = PollFd::new(w, PollFlags::IN);
            wake_at[i] = Some(n);
            n += 1;
        }
    }
    if poll(&mut fds[..n], Some(timeout))? == 0 {
        return Ok(None);
    }
    let woken = |i: usize| wake_at[i].is_some_and(|k: usize| !fds[k].revents().is_empty());
    Ok(Some([woken(0), woken(1)]))
}

/// The values of `key=` in the lines of a counters dump (`report`, as the
/// Viaduct prints it) that start with `line`, in order: for tests, benches
/// and tools reading a Viaduct's log.
pub fn counter_values<'a>(
    report: &'a str,
    line: &'a str,
    key: &'a str,
) -> impl Iterator<Item = u64> + 'a {
    report
        .lines()
        .filter(move |l| l.starts_with(line))
        .filter_map(move |l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        })
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
/// each segment and writes it to black (batched into UDP super-packets when
/// black has UDP segmentation).
pub struct Outbound {
    o: OutboundPath,
    red: Port,
    black: Port,
    io: IoCounters,
    scratch: Vec<u8>,
    out: Vec<u8>,
    batch: Option<UdpBatch>,
    ike: Option<OutboundIke>,
}

/// The outbound thread's IKE link: its mailbox, its write end of the
/// channel, and the IKE messages it wrote to black.
struct OutboundIke {
    mail: Mailbox<OutCmd>,
    tap: Tap,
    sent: IoCounters,
}

impl Outbound {
    /// The outbound direction between `red` (input) and `black` (output).
    pub fn new(o: OutboundPath, red: impl Into<Port>, black: impl Into<Port>) -> Outbound {
        let (red, black) = (red.into(), black.into());
        // ESP in UDP to a black port with UDP segmentation: batch datagrams.
        let uso = black.vnet() && black.offloads() & crate::tun::OFFLOAD_USO != 0;
        Outbound {
            o,
            red,
            black,
            io: IoCounters::default(),
            scratch: vec![0u8; MAX_PACKET],
            out: vec![0u8; MAX_PACKET + OVERHEAD],
            batch: uso.then(UdpBatch::new),
            ike: None,
        }
    }

    /// Takes commands from the IKE link's `mail` (writing IKE messages to
    /// black after the commands before them) and reports the lifetimes of
    /// IKE's SAs on `tap`.
    pub fn with_ike(mut self, mail: Mailbox<OutCmd>, tap: Tap) -> Outbound {
        self.ike = Some(OutboundIke {
            mail,
            tap,
            sent: IoCounters::default(),
        });
        self
    }
}

impl Direction for Outbound {
    fn input(&self) -> &Port {
        &self.red
    }

    fn input_mut(&mut self) -> &mut Port {
        &mut self.red
    }

    fn input_name(&self) -> &'static str {
        "red"
    }

    fn handle(&mut self, read: &mut [u8], now: Timestamp) {
        let Outbound {
            o,
            red,
            black,
            io,
            scratch,
            out,
            batch,
            ike: _,
        } = self;
        io.read += 1;
        let mut send = |pkt: &[u8], c: &mut IoCounters| {
            if let Verdict::Send(len) = o.process(pkt, out, now) {
                match batch.as_mut() {
                    Some(b) => b.push(&out[..len], &mut |f: &[u8]| write_frame(black, f, c)),
                    None => write_packet(black, &out[..len], c),
                }
            }
        };
        if !red.vnet() {
            send(read, io);
        } else if split_read(read, scratch, UdpSplit::Checksummed, io, &mut |seg, c| {
            send(seg, c)
        })
        .is_err()
        {
            io.offload_malformed += 1;
        }
    }

    fn end_batch(&mut self, now: Timestamp) {
        if let Some(b) = self.batch.as_mut() {
            let (black, c) = (&mut self.black, &mut self.io);
            b.flush(&mut |f: &[u8]| write_frame(black, f, c));
        }
        self.black.flush();
        let (o, ike) = (&mut self.o, &mut self.ike);
        let mut events = Vec::new();
        o.poll_events(now, |ev| events.push(ev));
        for ev in events {
            match (o.active_pair(ev.sa.tunnel), ike.as_mut()) {
                (Some(inbound_spi), Some(OutboundIke { tap, .. })) => {
                    tap.send(&ToIke::SaLifetime {
                        tunnel: ev.sa.tunnel,
                        inbound_spi,
                        hard: ev.hard,
                    })
                }
                _ => eprintln!("viaduct: SA lifetime event {ev:?}"),
            }
        }
    }

    fn wake(&self) -> Option<&OwnedFd> {
        self.ike.as_ref().map(|k| k.mail.wake_fd())
    }

    fn commands(&mut self, _now: Timestamp, woken: bool) {
        let (o, black, ike) = (&mut self.o, &mut self.black, &mut self.ike);
        let Some(OutboundIke { mail, sent, .. }) = ike.as_mut() else {
            return;
        };
        mail.drain(woken, |cmd| match cmd {
            OutCmd::SendIke(pkt) => write_packet(black, &pkt, sent),
            OutCmd::Install(p) => o.insert(*p),
            OutCmd::Use(t, spi) => {
                if !o.use_outbound(t, spi) {
                    eprintln!("viaduct: no outbound SA paired with {spi:08x} to switch to");
                }
            }
            OutCmd::Remove(t, spi) => {
                o.remove(t, spi);
            }
        });
        black.flush();
    }

    fn log(&mut self) -> Vec<String> {
        self.o.take_log()
    }

    fn report(&self) -> String {
        let udp = match self.batch.as_ref() {
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
            "{}{}{}{}{}{}",
            io_line("red->black", &self.io),
            self.red.report("red port in"),
            self.black.report("black port out"),
            udp,
            self.o.report(),
            self.ike
                .as_ref()
                .map(|k| {
                    format!(
                        "viaduct black ike-out: written={} write_errors={}\n{}",
                        k.sent.written,
                        k.sent.write_errors,
                        k.tap.report("red->black")
                    )
                })
                .unwrap_or_default()
        )
    }
}

/// Writes a whole frame (vnet header included) to a port.
fn write_frame(port: &mut Port, frame: &[u8], io: &mut IoCounters) {
    match port.write_frame(frame) {
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
pub struct Inbound {
    i: InboundPath,
    black: Port,
    w: RedWriter,
    co: Coalescer,
    io: IoCounters,
    scratch: Vec<u8>,
    ike: Option<InboundIke>,
}

/// The inbound thread's IKE link: its mailbox, the outbound thread's, and
/// its write end of the channel.
struct InboundIke {
    mail: Mailbox<InCmd>,
    to_out: Post<OutCmd>,
    tap: Tap,
}

impl Inbound {
    /// The inbound direction between `black` (input) and `red` (output).
    pub fn new(
        i: InboundPath,
        black: impl Into<Port>,
        red: impl Into<Port>,
        cfg: PumpConfig,
    ) -> Inbound {
        let (black, red) = (black.into(), red.into());
        let gro = cfg.gro && red.vnet() && red.offloads() & crate::tun::OFFLOAD_TCP != 0;
        Inbound {
            i,
            black,
            w: RedWriter {
                red,
                gro,
                fallback: vec![0u8; MAX_PACKET],
            },
            co: Coalescer::new(),
            io: IoCounters::default(),
            scratch: vec![0u8; MAX_PACKET],
            ike: None,
        }
    }

    /// Takes commands from the IKE link's `mail` (passing the outbound
    /// thread's commands and the IKE messages to send on to `to_out`, in
    /// order), and passes IKE messages and the lifetimes of IKE's SAs to the
    /// IKE process on `tap`.
    pub fn with_ike(mut self, mail: Mailbox<InCmd>, to_out: Post<OutCmd>, tap: Tap) -> Inbound {
        self.ike = Some(InboundIke { mail, to_out, tap });
        self
    }
}

impl Direction for Inbound {
    fn input(&self) -> &Port {
        &self.black
    }

    fn input_mut(&mut self) -> &mut Port {
        &mut self.black
    }

    fn input_name(&self) -> &'static str {
        "black"
    }

    fn handle(&mut self, read: &mut [u8], now: Timestamp) {
        let Inbound {
            i,
            black,
            w,
            co,
            io,
            scratch,
            ike,
        } = self;
        io.read += 1;
        let mut decap = |pkt: &mut [u8], c: &mut IoCounters| match i.process(pkt, now) {
            Verdict::Send(len) => {
                let inner = &pkt[..len];
                if w.gro {
                    co.push(inner, &mut |f: &[u8]| w.emit(f, c));
                } else {
                    write_packet(&mut w.red, inner, c);
                }
            }
            Verdict::Ike(m) => {
                if let (Some(ike), Some(bytes)) =
                    (ike.as_mut(), pkt.get(m.offset..m.offset + m.len))
                {
                    ike.tap.send(&ToIke::IkeDatagram(IkeDatagram {
                        peer: m.peer,
                        local_port: m.local_port,
                        remote_port: m.remote_port,
                        bytes: bytes.to_vec(),
                    }));
                }
            }
            Verdict::Drop(_) => {}
        };
        if black.vnet() {
            // ESP-in-UDP super-packets (USO) are cut into datagrams in place.
            if split_read(read, scratch, UdpSplit::InPlaceEsp, io, &mut decap).is_err() {
                io.offload_malformed += 1;
            }
        } else {
            decap(read, io);
        }
    }

    fn end_batch(&mut self, now: Timestamp) {
        let (w, c) = (&mut self.w, &mut self.io);
        self.co.flush(&mut |f: &[u8]| w.emit(f, c));
        w.red.flush();
        let ike = &mut self.ike;
        self.i.poll_events(now, |ev| match ike.as_mut() {
            Some(ike) if ev.ike => ike.tap.send(&ToIke::SaLifetime {
                tunnel: ev.sa.tunnel,
                inbound_spi: ev.sa.spi.0,
                hard: ev.hard,
            }),
            _ => eprintln!("viaduct: SA lifetime event {ev:?}"),
        })
    }

    fn wake(&self) -> Option<&OwnedFd> {
        self.ike.as_ref().map(|k| k.mail.wake_fd())
    }

    fn commands(&mut self, _now: Timestamp, woken: bool) {
        let (i, ike) = (&mut self.i, &self.ike);
        let Some(InboundIke { mail, to_out, .. }) = ike.as_ref() else {
            return;
        };
        mail.drain(woken, |cmd| match cmd {
            InCmd::Install(p) => {
                let p = *p;
                if i.insert(p.inbound) {
                    to_out.send(OutCmd::Install(Box::new(p.outbound)));
                }
            }
            InCmd::Remove(spi) => {
                i.remove(spi);
            }
            InCmd::SendIke(pkt) => {
                to_out.send(OutCmd::SendIke(pkt));
            }
            InCmd::Outbound(c) => {
                to_out.send(c);
            }
        });
    }

    fn log(&mut self) -> Vec<String> {
        self.i.take_log()
    }

    fn report(&self) -> String {
        let s = self.co.stats();
        format!(
            "{}{}{}viaduct black->red: gro={} gro_frames={} gro_merged={} gro_passthrough={}\n{}",
            io_line("black->red", &self.io),
            self.black.report("black port in"),
            self.w.red.report("red port out"),
            if self.w.gro { "on" } else { "off" },
            s.frames,
            s.merged,
            s.passthrough,
            self.i.report()
        ) + &self
            .ike
            .as_ref()
            .map(|k| k.tap.report("black->red"))
            .unwrap_or_default()
    }
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
        let hdr = match self.red.write_frame(frame) {
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
        let red = &mut self.red;
        let _ = gso_split(&frame[VNET_HDR_LEN..], &hdr, &mut self.fallback, |seg| {
            write_packet(red, seg, c)
        });
    }
}
