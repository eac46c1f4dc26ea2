//! Console output (`appliance: ` lines), console commands, and the handling of what
//! the compartments print: split into lines ([`LineSplitter`]) and rate-limited
//! ([`RateLimit`]) before the init relays it.
//!
//! Invariants:
//! - PID 1 never waits for the console. Sinks are non-blocking (a serial console at
//!   115200 baud takes about 11 KB/s); what a busy sink cannot take now waits in a
//!   bounded backlog, flushed from the supervision loop ([`Logger::flush_pending`]).
//!   Relayed lines ([`Logger::relay`]) may fill [`RELAY_BACKLOG`] bytes of it; beyond
//!   that a relayed line is dropped and counted, and the count is printed once the
//!   console has caught up. The init's own lines ([`Logger::log`]) may fill
//!   [`OWN_BACKLOG`]; only a burst of its own beyond that (the event log printed at
//!   boot) waits for the console, at most [`OWN_WAIT`] per line. Compartments cannot
//!   make it wait: what they send is rate-limited and never fills more than the
//!   relay backlog.
//! - A line is never split: it goes out whole, or (its first part written) its rest is
//!   kept regardless of the limits, so lines never interleave.
//! - A sink that fails is skipped (the init must not die because a console went away).
//!
//! Nothing here panics.

use std::io::Write;
use std::time::{Duration, Instant};

/// Bytes of relayed (compartment) lines a sink may hold back while it is busy.
pub const RELAY_BACKLOG: usize = 16 * 1024;
/// Bytes of the init's own lines a sink may hold back while it is busy.
pub const OWN_BACKLOG: usize = 64 * 1024;
/// How long one of the init's own lines may wait for room in a full backlog.
pub const OWN_WAIT: Duration = Duration::from_secs(5);

/// One destination of the log and what it could not take yet.
struct Sink {
    w: Box<dyn Write>,
    pending: Vec<u8>,
    dropped: u64,
}

impl Sink {
    /// Writes as much of `bytes` as the sink takes now; returns how much.
    fn write_some(w: &mut dyn Write, bytes: &[u8]) -> Result<usize, ()> {
        let mut done = 0;
        while done < bytes.len() {
            match w.write(&bytes[done..]) {
                Ok(0) => return Err(()),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return Err(()),
            }
        }
        let _ = w.flush();
        Ok(done)
    }

    /// Writes what is pending; true when nothing is left.
    fn flush_pending(&mut self) -> bool {
        if !self.pending.is_empty() {
            match Self::write_some(&mut *self.w, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                // A broken sink: forget its backlog (as a line it fails on is forgotten).
                Err(()) => self.pending.clear(),
            }
        }
        if self.pending.is_empty() && self.dropped > 0 {
            let note = format!(
                "{PREFIX}console: {} lines dropped (the console was too slow)\n",
                self.dropped
            );
            self.dropped = 0;
            if let Ok(n) = Self::write_some(&mut *self.w, note.as_bytes()) {
                self.pending.extend_from_slice(&note.as_bytes()[n..]);
            }
        }
        self.pending.is_empty()
    }

    fn emit(&mut self, line: &[u8], limit: usize, wait: Duration) {
        self.flush_pending();
        if !self.pending.is_empty() && self.pending.len() + line.len() > limit {
            let deadline = Instant::now() + wait;
            while !self.flush_pending() && self.pending.len() + line.len() > limit {
                if Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if self.pending.is_empty() {
            if let Ok(n) = Self::write_some(&mut *self.w, line) {
                self.pending.extend_from_slice(&line[n..]);
            }
        } else if self.pending.len() + line.len() <= limit {
            self.pending.extend_from_slice(line);
        } else {
            self.dropped += 1;
        }
    }
}

/// The prefix of every line the init prints.
pub const PREFIX: &str = "appliance: ";

/// Writes `appliance: ` lines to every sink (the console and, if different, stdout).
/// Sinks should be non-blocking (see the module invariants).
pub struct Logger {
    sinks: Vec<Sink>,
}

impl Logger {
    /// A logger writing to `sinks`.
    pub fn new(sinks: Vec<Box<dyn Write>>) -> Self {
        Logger {
            sinks: sinks
                .into_iter()
                .map(|w| Sink {
                    w,
                    pending: Vec::new(),
                    dropped: 0,
                })
                .collect(),
        }
    }

    fn line(msg: &str) -> String {
        let mut line = String::with_capacity(PREFIX.len() + msg.len() + 1);
        line.push_str(PREFIX);
        line.extend(
            msg.chars()
                .map(|c| if c == '\n' || c == '\r' { ' ' } else { c }),
        );
        line.push('\n');
        line
    }

    /// Logs one of the init's own lines (`msg` must not contain a newline; any is
    /// replaced by a space).
    pub fn log(&mut self, msg: &str) {
        let line = Self::line(msg);
        for sink in &mut self.sinks {
            sink.emit(line.as_bytes(), OWN_BACKLOG, OWN_WAIT);
        }
    }

    /// Logs a line relayed from a compartment: dropped first when the console is busy.
    pub fn relay(&mut self, msg: &str) {
        let line = Self::line(msg);
        for sink in &mut self.sinks {
            sink.emit(line.as_bytes(), RELAY_BACKLOG, Duration::ZERO);
        }
    }

    /// Writes what the sinks could not take before; true when nothing is pending.
    pub fn flush_pending(&mut self) -> bool {
        let mut done = true;
        for sink in &mut self.sinks {
            done &= sink.flush_pending();
        }
        done
    }

    /// Flushes for at most `limit` (before the init exits or the machine stops): true
    /// when everything went out.
    pub fn drain(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.flush_pending() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether some sink holds lines back (call [`Logger::flush_pending`] soon).
    pub fn pending(&self) -> bool {
        self.sinks
            .iter()
            .any(|s| !s.pending.is_empty() || s.dropped > 0)
    }
}

/// Splits a byte stream into lines (without their `\n`). A line longer than
/// [`LineSplitter::MAX_LINE`] is cut into pieces of that size, so the buffer never
/// grows beyond it; the work is linear in the input.
#[derive(Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Longest line kept whole.
    pub const MAX_LINE: usize = 4096;

    /// Feeds `bytes`; calls `line` for every line they complete.
    pub fn feed(&mut self, bytes: &[u8], mut line: impl FnMut(&[u8])) {
        let mut rest = bytes;
        while let Some(i) = rest.iter().position(|&c| c == b'\n') {
            if self.buf.is_empty() {
                line(&rest[..i]);
            } else {
                self.buf.extend_from_slice(&rest[..i]);
                line(&self.buf);
                self.buf.clear();
            }
            rest = &rest[i + 1..];
        }
        self.buf.extend_from_slice(rest);
        while self.buf.len() > Self::MAX_LINE {
            line(&self.buf[..Self::MAX_LINE]);
            self.buf.drain(..Self::MAX_LINE);
        }
    }

    /// The writer closed: calls `line` for an unfinished last line.
    pub fn finish(&mut self, mut line: impl FnMut(&[u8])) {
        if !self.buf.is_empty() {
            line(&self.buf);
            self.buf.clear();
        }
    }

    /// Bytes held for an unfinished line (at most [`LineSplitter::MAX_LINE`]).
    pub fn held(&self) -> usize {
        self.buf.len()
    }
}

/// A token bucket for lines: `burst` at once, then `per_sec` a second. What it refuses
/// is counted.
#[derive(Clone, Debug)]
pub struct RateLimit {
    tokens: u32,
    burst: u32,
    interval: Duration,
    last: Instant,
    dropped: u64,
}

impl RateLimit {
    /// A full bucket at `now`. `per_sec` of 0 is taken as 1.
    pub fn new(burst: u32, per_sec: u32, now: Instant) -> Self {
        RateLimit {
            tokens: burst,
            burst,
            interval: Duration::from_secs(1) / per_sec.max(1),
            last: now,
            dropped: 0,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        let new = elapsed.as_nanos() / self.interval.as_nanos().max(1);
        if new == 0 {
            return;
        }
        let new = u32::try_from(new).unwrap_or(u32::MAX);
        self.tokens = self.tokens.saturating_add(new).min(self.burst);
        self.last = if self.tokens == self.burst {
            now
        } else {
            self.last + self.interval * new
        };
    }

    /// Whether one more line may pass at `now`; if not, it is counted as dropped.
    pub fn admit(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// When the next line may pass (`now` if one may now).
    pub fn next_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens > 0 {
            now
        } else {
            self.last + self.interval
        }
    }

    /// Lines dropped since [`RateLimit::take_dropped`] was last called.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Lines dropped since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

/// A command typed on the console.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Command {
    /// Clean shutdown and power off.
    Poweroff,
    /// Clean shutdown and reboot.
    Reboot,
    /// Print a status line (and one per compartment), then the SAs: the IKE
    /// process's table (`ike| viaduct-ike: status peer …`) and the Viaduct's
    /// per-SA counters.
    Status,
    /// `kill <compartment>`: SIGKILL a compartment's first process (fault injection;
    /// the supervisor restarts it).
    Kill(String),
    /// `counters`: ask the Viaduct for its per-SA and drop counters (it prints them,
    /// relayed as `appliance: viaduct| …`).
    Counters,
    /// Anything else (echoed back as an error).
    Unknown(String),
}

/// Parses one console line; `None` for a blank line. Surrounding whitespace is ignored,
/// commands are case-sensitive.
pub fn parse_command(line: &str) -> Option<Command> {
    let word = line.trim();
    Some(match word {
        "" => return None,
        "poweroff" => Command::Poweroff,
        "reboot" => Command::Reboot,
        "status" => Command::Status,
        "counters" => Command::Counters,
        other => match other.split_once(' ') {
            Some(("kill", name)) if !name.trim().is_empty() => {
                Command::Kill(name.trim().chars().take(32).collect())
            }
            _ => Command::Unknown(other.chars().take(64).collect()),
        },
    })
}

/// Splits bytes read from the console into complete lines, keeping a partial last line
/// (bounded to 256 bytes: longer input is discarded up to the next newline).
#[derive(Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
    overflow: bool,
}

impl LineBuffer {
    /// Largest line kept.
    pub const MAX_LINE: usize = 256;

    /// Feeds bytes, returns the complete lines they finish.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if !self.overflow && !self.buf.is_empty() {
                    out.push(String::from_utf8_lossy(&self.buf).into_owned());
                }
                self.buf.clear();
                self.overflow = false;
            } else if self.buf.len() < Self::MAX_LINE {
                self.buf.push(b);
            } else {
                self.overflow = true;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[derive(Clone, Default)]
    struct Shared(Rc<RefCell<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A sink that takes `room` bytes, then would block until given more room.
    #[derive(Clone, Default)]
    struct Slow(Rc<RefCell<(Vec<u8>, usize)>>);
    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let mut s = self.0.borrow_mut();
            let n = b.len().min(s.1);
            if n == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            s.0.extend_from_slice(&b[..n]);
            s.1 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_busy_console_never_blocks_relayed_lines_go_first_and_lines_stay_whole() {
        let slow = Slow::default();
        slow.0.borrow_mut().1 = 30;
        let mut l = Logger::new(vec![Box::new(slow.clone())]);
        // Relayed lines: the first is cut by the sink, its rest kept; more fill the
        // relay backlog, then are dropped (and counted); the init's own lines still fit.
        let relayed = "x".repeat(100);
        for _ in 0..1000 {
            l.relay(&relayed);
        }
        l.log("own line");
        assert!(l.pending());
        let backlog = l.sinks[0].pending.len();
        assert!(backlog <= RELAY_BACKLOG + 200, "{backlog}");
        assert!(l.sinks[0].dropped > 800);
        // The console catches up: everything kept comes out whole, then the count.
        slow.0.borrow_mut().1 = usize::MAX;
        assert!(l.flush_pending());
        let out = String::from_utf8(slow.0.borrow().0.clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[..lines.len() - 2]
            .iter()
            .all(|x| *x == format!("appliance: {relayed}")));
        assert_eq!(lines[lines.len() - 2], "appliance: own line");
        assert!(
            lines[lines.len() - 1].starts_with("appliance: console: ")
                && lines[lines.len() - 1].ends_with(" lines dropped (the console was too slow)"),
            "{}",
            lines[lines.len() - 1]
        );
        assert!(!l.pending());
    }

    #[test]
    fn splitter_is_linear_bounded_and_keeps_every_byte() {
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        s.feed(b"a\nbb\n\nccc", |l| got.push(l.to_vec()));
        assert_eq!(got, [b"a".to_vec(), b"bb".to_vec(), b"".to_vec()]);
        s.feed(b"c\n", |l| got.push(l.to_vec()));
        assert_eq!(got.last().unwrap(), b"cccc");
        got.clear();
        s.feed(&[b'y'; 10_000], |l| got.push(l.to_vec()));
        assert_eq!(got.len(), 2);
        assert!(s.held() <= LineSplitter::MAX_LINE);
        s.finish(|l| got.push(l.to_vec()));
        assert_eq!(got.iter().map(Vec::len).sum::<usize>(), 10_000);
        // A megabyte of empty lines: one pass.
        let flood = vec![b'\n'; 1 << 20];
        let mut n = 0;
        let t = Instant::now();
        s.feed(&flood, |_| n += 1);
        assert_eq!(n, 1 << 20);
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn rate_limit_bursts_refills_and_counts() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(5, 10, t0);
        assert_eq!((0..8).filter(|_| r.admit(t0)).count(), 5);
        assert_eq!(r.take_dropped(), 3);
        assert_eq!(r.take_dropped(), 0);
        assert!(r.next_at(t0) > t0);
        let t1 = t0 + Duration::from_millis(250);
        assert_eq!((0..8).filter(|_| r.admit(t1)).count(), 2);
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..8).filter(|_| r.admit(t2)).count(), 5);
        assert_eq!(r.take_dropped(), 6 + 3);
        // Time going backwards refills nothing and does not panic.
        assert!(!r.admit(t0));
    }

    #[test]
    fn logger_prefixes_and_survives_broken_sinks() {
        let s = Shared::default();
        let mut l = Logger::new(vec![Box::new(Broken), Box::new(s.clone())]);
        l.log("ready x 1\nfake");
        assert_eq!(&*s.0.borrow(), b"appliance: ready x 1 fake\n");
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse_command("poweroff\n"), Some(Command::Poweroff));
        assert_eq!(parse_command("  status \r"), Some(Command::Status));
        assert_eq!(parse_command("reboot"), Some(Command::Reboot));
        assert_eq!(parse_command(" counters"), Some(Command::Counters));
        assert_eq!(parse_command("   "), None);
        assert_eq!(
            parse_command("PowerOff"),
            Some(Command::Unknown("PowerOff".into()))
        );
        assert_eq!(
            parse_command("poweroff now"),
            Some(Command::Unknown("poweroff now".into()))
        );
    }

    #[test]
    fn line_buffer_splits_keeps_partial_and_drops_overlong() {
        let mut b = LineBuffer::default();
        assert_eq!(b.feed(b"stat"), Vec::<String>::new());
        assert_eq!(b.feed(b"us\r\npoweroff\nreb"), vec!["status", "poweroff"]);
        assert_eq!(b.feed(b"oot\n"), vec!["reboot"]);
        let mut long = vec![b'a'; 1000];
        long.extend_from_slice(b"\nstatus\n");
        assert_eq!(b.feed(&long), vec!["status"]);
    }
}
