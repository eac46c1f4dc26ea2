//! Console output (`appliance: ` lines) and console commands.
//!
//! Invariants: every log line is written with one `write_all` per sink, so the init's
//! own lines never interleave with each other; a sink that fails is skipped (the init
//! must not die because a console went away). Nothing here panics.

use std::io::Write;

/// The prefix of every line the init prints.
pub const PREFIX: &str = "appliance: ";

/// Writes `appliance: ` lines to every sink (the console and, if different, stdout).
pub struct Logger {
    sinks: Vec<Box<dyn Write>>,
}

impl Logger {
    /// A logger writing to `sinks`.
    pub fn new(sinks: Vec<Box<dyn Write>>) -> Self {
        Logger { sinks }
    }

    /// Logs one line (`msg` must not contain a newline; any is replaced by a space).
    pub fn log(&mut self, msg: &str) {
        let mut line = String::with_capacity(PREFIX.len() + msg.len() + 1);
        line.push_str(PREFIX);
        line.extend(
            msg.chars()
                .map(|c| if c == '\n' || c == '\r' { ' ' } else { c }),
        );
        line.push('\n');
        for sink in &mut self.sinks {
            // A console error must never stop PID 1: ignore it and keep going.
            let _ = sink.write_all(line.as_bytes()).and_then(|()| sink.flush());
        }
    }
}

/// A command typed on the console.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Command {
    /// Clean shutdown and power off.
    Poweroff,
    /// Clean shutdown and reboot.
    Reboot,
    /// Print a status line (and one per compartment).
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
