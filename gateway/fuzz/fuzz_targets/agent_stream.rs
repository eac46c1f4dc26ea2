//! The attestation agent (`gateway::agent`) reading an arbitrary stream, as black may
//! send it: the quote and enrolment endpoints parse what they read and answer an
//! error frame (this harness has no TPM); nothing may panic or read without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

struct Stream<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

impl std::io::Read for Stream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::io::Read::read(&mut self.input, buf)
    }
}

impl std::io::Write for Stream<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let ctx = gateway::agent::AgentContext {
        tpm: Vec::new(),
        event_log: std::path::PathBuf::new(),
        runtime_log: Vec::new(),
        identity: None,
    };
    let mut s = Stream {
        input: rest,
        output: Vec::new(),
    };
    let mut note = |_: &str| {};
    if which & 1 == 0 {
        gateway::agent::serve_quote(&mut s, &ctx, &mut note);
    } else {
        gateway::agent::serve_enroll(&mut s, &ctx, &mut note);
    }
    // Every answer is one well-formed frame.
    let f = attest_wire::proto::Frame::read(&mut &s.output[..]).expect("one frame");
    assert!(f.error_text().is_some());
});
