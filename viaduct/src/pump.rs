//! The packet pump: one thread per direction, each owning one engine half.
//! A thread waits for its input port with `poll` (200 ms timeout, so it sees
//! stop and dump requests), then reads packets until EAGAIN (at most
//! [`BATCH`] per wake-up), runs them through the engine and writes the
//! results to the other port. Buffers are allocated once per thread; nothing
//! is allocated per packet.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;

use crate::engine::{InboundPath, OutboundPath, Verdict};
use crate::sa::Timestamp;

/// Packets handled per wake-up before checking control flags again.
pub const BATCH: usize = 64;
/// Largest datagram a port carries.
pub const MAX_PACKET: usize = 65_535;
/// Room for the outer header and ESP overhead.
pub const OVERHEAD: usize = 40 + 8 + 8 + 3 + 2 + 16;

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
    /// Packets read.
    pub read: u64,
    /// Packets written.
    pub written: u64,
    /// Writes that failed (port down, full).
    pub write_errors: u64,
}

fn write_out(fd: &OwnedFd, pkt: &[u8], io: &mut IoCounters) {
    match rustix::io::write(fd, pkt) {
        Ok(_) => io.written += 1,
        Err(_) => io.write_errors += 1,
    }
}

/// Which way a pump thread moves packets.
pub enum Half {
    /// red → black.
    Outbound(OutboundPath),
    /// black → red.
    Inbound(InboundPath),
}

impl Half {
    fn name(&self) -> &'static str {
        match self {
            Half::Outbound(_) => "red->black",
            Half::Inbound(_) => "black->red",
        }
    }

    fn report(&self, io: &IoCounters) -> String {
        let body = match self {
            Half::Outbound(o) => o.report(),
            Half::Inbound(i) => i.report(),
        };
        format!(
            "viaduct {}: read={} written={} write_errors={}\n{}",
            self.name(),
            io.read,
            io.written,
            io.write_errors,
            body
        )
    }
}

/// Runs one direction until `ctl.stop` is set or the input port fails;
/// prints the counters on every dump request and at exit.
pub fn run(
    mut half: Half,
    input: OwnedFd,
    output: OwnedFd,
    ctl: Arc<Control>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_PACKET + OVERHEAD];
    let mut out = vec![0u8; MAX_PACKET + OVERHEAD];
    let mut io = IoCounters::default();
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
            eprint!("{}", half.report(&io));
        }
        let mut fds = [PollFd::new(&input, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) | Err(Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => break Err(e.into()),
        }
        let now = ctl.now();
        let mut failed = None;
        for _ in 0..BATCH {
            let n = match rustix::io::read(input.as_fd(), &mut buf[..MAX_PACKET]) {
                Ok(n) => n,
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            io.read += 1;
            match &mut half {
                Half::Outbound(o) => {
                    if let Verdict::Send(len) = o.process(&buf[..n], &mut out, now) {
                        write_out(&output, &out[..len], &mut io);
                    }
                }
                Half::Inbound(i) => {
                    if let Verdict::Send(len) = i.process(&mut buf[..n], now) {
                        write_out(&output, &buf[..len], &mut io);
                    }
                }
            }
        }
        if let Some(e) = failed {
            break Err(e.into());
        }
        match &mut half {
            Half::Outbound(o) => {
                o.poll_events(now, |ev| eprintln!("viaduct: SA lifetime event {ev:?}"))
            }
            Half::Inbound(i) => {
                i.poll_events(now, |ev| eprintln!("viaduct: SA lifetime event {ev:?}"))
            }
        }
    };
    eprint!("{}", half.report(&io));
    result
}
