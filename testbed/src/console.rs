//! The serial console of a lab gateway that outlives the command which started it:
//! QEMU writes everything the guest prints to a log file and listens on a Unix socket
//! for input. [`LogConsole`] follows the log line by line and types commands into the
//! socket.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::host::{interrupted, io, Error};

/// One gateway's console.
pub struct LogConsole {
    name: String,
    log: PathBuf,
    socket: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    lines: Vec<(SystemTime, String)>,
}

impl LogConsole {
    /// Follows `log` from its start; commands go to `socket`.
    pub fn new(name: &str, log: &Path, socket: &Path) -> Self {
        LogConsole {
            name: name.into(),
            log: log.into(),
            socket: socket.into(),
            offset: 0,
            partial: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// Reads what was appended to the log since the last call.
    pub fn poll(&mut self) {
        let Ok(mut f) = std::fs::File::open(&self.log) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return;
        }
        self.offset += buf.len() as u64;
        let now = SystemTime::now();
        for b in buf {
            if b == b'\n' {
                let l = String::from_utf8_lossy(&self.partial)
                    .trim_end_matches('\r')
                    .to_string();
                self.lines.push((now, l));
                self.partial.clear();
            } else if self.partial.len() < 64 * 1024 {
                self.partial.push(b);
            }
        }
    }

    /// Every complete line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().map(|(_, l)| l.clone()).collect()
    }

    /// Number of lines so far (to wait only for lines after a point).
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether nothing was read yet.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The last `n` lines, without the event-log hex dump.
    pub fn tail(&self, n: usize) -> String {
        crate::vm::console_tail(self.lines.iter().map(|(_, l)| l.as_str()), n)
    }

    /// Waits for a line at index ≥ `from` matching `pred`; returns its index, the line
    /// and when it was read. Times out with the last 50 lines; a line matching
    /// `fatal` ends the wait at once with the same report.
    pub fn wait_for(
        &mut self,
        what: &str,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
        fatal: impl Fn(&str) -> bool,
    ) -> Result<(usize, String, SystemTime), Error> {
        let deadline = Instant::now() + timeout;
        let mut checked = from;
        loop {
            self.poll();
            while checked < self.lines.len() {
                let (t, l) = &self.lines[checked];
                if pred(l) {
                    return Ok((checked, l.clone(), *t));
                }
                if fatal(l) {
                    return Err(Error::State(format!(
                        "{}: {what}: the gateway reported `{l}`; last console lines:\n{}",
                        self.name,
                        self.tail(50)
                    )));
                }
                checked += 1;
            }
            if interrupted() {
                return Err(Error::Interrupted);
            }
            if Instant::now() >= deadline {
                return Err(Error::State(format!(
                    "{}: no console line {what} within {} s; last console lines:\n{}",
                    self.name,
                    timeout.as_secs(),
                    self.tail(50)
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `line` on the console.
    pub fn send(&self, line: &str) -> Result<(), Error> {
        let before = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let mut s = UnixStream::connect(&self.socket).map_err(io(format!(
            "{}: connecting to {}",
            self.name,
            self.socket.display()
        )))?;
        s.write_all(format!("{line}\n").as_bytes())
            .and_then(|_| s.flush())
            .map_err(io(format!("{}: writing to the console", self.name)))?;
        // QEMU drops the input it has not read yet when the client leaves,
        // and a busy guest under TCG reads its UART slowly: stay until the
        // gateway's terminal echoes the line with its end (then the line
        // has reached the reader; 5 s at most), reading what QEMU sends
        // back meanwhile. Leave right then: while a client is connected,
        // each character QEMU cannot write to it at once (its socket holds
        // a few hundred one-byte writes: a client that two busy TCG vCPUs
        // keep from running falls behind) is logged, retried and logged
        // again, so that the log file holds it twice (`oout drop`); with
        // no client, what the command prints is logged once.
        let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
        let start = Instant::now();
        let mut sink = [0u8; 4096];
        loop {
            match s.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
            if start.elapsed() >= Duration::from_secs(5) || self.echoed(before, line) {
                break;
            }
        }
        Ok(())
    }

    /// Whether `line` and its end appear in the log after byte `from` (the
    /// console's echo of what was typed, newline included).
    fn echoed(&self, from: u64, line: &str) -> bool {
        let Ok(mut f) = std::fs::File::open(&self.log) else {
            return false;
        };
        let mut buf = Vec::new();
        f.seek(SeekFrom::Start(from)).is_ok()
            && f.read_to_end(&mut buf).is_ok()
            && echo_in(&buf, line)
    }
}

/// Whether `buf` holds `line` followed by a line end (`\r` or `\n`).
fn echo_in(buf: &[u8], line: &str) -> bool {
    let n = line.len();
    buf.windows(n + 1)
        .any(|w| &w[..n] == line.as_bytes() && (w[n] == b'\r' || w[n] == b'\n'))
}

/// Connects the terminal to a console socket (`appliance testbed console`): what is
/// typed goes to the gateway, what it prints comes back, until stdin closes (then
/// one more second of output, so that `echo status | … console gw-a` shows the answer).
pub fn attach(socket: &Path) -> Result<(), Error> {
    let s =
        UnixStream::connect(socket).map_err(io(format!("connecting to {}", socket.display())))?;
    let mut r = s.try_clone().map_err(io("console socket"))?;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut r, &mut std::io::stdout());
    });
    let mut w = s;
    std::io::copy(&mut std::io::stdin(), &mut w).map_err(io("console"))?;
    std::thread::sleep(Duration::from_secs(1));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::echo_in;

    #[test]
    fn an_echo_counts_once_its_line_end_is_there() {
        assert!(echo_in(b"x\r\n# counters\r\nviaduct| out", "counters"));
        assert!(echo_in(b"counters\n", "counters"));
        assert!(!echo_in(b"# counters", "counters"));
        assert!(!echo_in(b"# counterss\r\n", "counters"));
        assert!(!echo_in(b"", "counters"));
    }
}
