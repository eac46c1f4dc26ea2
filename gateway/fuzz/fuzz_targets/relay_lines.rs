//! What the init does with a personality's output and with console input: the line
//! splitter (fed in chunks of a fuzzed size), the sanitiser, the rate limit, the
//! logger with a console that takes a few bytes at a time, the console's line buffer
//! and command parser. Nothing may panic; lines stay bounded, no byte is lost or
//! invented by the splitter, and what reaches the console is printable ASCII in
//! whole `appliance: ` lines.
#![no_main]

use gateway::console::{parse_command, LineBuffer, LineSplitter, Logger, RateLimit};
use gateway::runtime::{sanitize, RELAY_BURST, RELAY_PER_SEC};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A console that takes `room` bytes per write call, or would block.
#[derive(Clone)]
struct Console(Rc<RefCell<(Vec<u8>, usize)>>);

impl Write for Console {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut c = self.0.borrow_mut();
        let n = b.len().min(c.1);
        if n == 0 {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        c.0.extend_from_slice(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, input)) = data.split_first() else { return };
    let chunk = usize::from(k % 64) * 67 + 1;
    let console = Console(Rc::new(RefCell::new((Vec::new(), usize::from(k >> 6) * 40))));
    let mut log = Logger::new(vec![Box::new(console.clone())]);
    let t0 = Instant::now();
    let mut limit = RateLimit::new(RELAY_BURST, RELAY_PER_SEC, t0);
    let mut split = LineSplitter::default();
    let (mut bytes, mut n) = (0usize, 0u64);
    let mut line = |l: &[u8]| {
        assert!(l.len() <= LineSplitter::MAX_LINE);
        assert!(!l.contains(&b'\n'));
        bytes += l.len();
        n += 1;
        let text = sanitize(l);
        assert!(text.len() <= 200 && text.bytes().all(|c| (0x20..0x7f).contains(&c)));
        if limit.admit(t0 + Duration::from_millis(n)) {
            log.relay(&format!("red| {text}"));
        }
    };
    for c in input.chunks(chunk) {
        split.feed(c, &mut line);
        assert!(split.held() <= LineSplitter::MAX_LINE);
    }
    split.finish(&mut line);
    let newlines = input.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(bytes + newlines, input.len(), "the splitter keeps every byte");
    let _ = limit.take_dropped();
    console.0.borrow_mut().1 = usize::MAX;
    assert!(log.flush_pending());
    let out = console.0.borrow().0.clone();
    assert!(out.is_empty() || out.ends_with(b"\n"));
    for l in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(l.starts_with(b"appliance: "), "{:?}", String::from_utf8_lossy(l));
        assert!(l.iter().all(|&c| (0x20..0x7f).contains(&c)));
    }

    let mut console_in = LineBuffer::default();
    for c in input.chunks(chunk) {
        for l in console_in.feed(c) {
            assert!(l.len() <= 4 * LineBuffer::MAX_LINE);
            let _ = parse_command(&l);
        }
    }
});
