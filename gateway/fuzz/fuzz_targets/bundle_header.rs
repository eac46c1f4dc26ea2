//! The update receiver never panics on what black sends: the request, the
//! bundle header and the signature check, through `gateway::update::serve`
//! (nothing here is signed, so nothing reaches the ESP), and the version
//! order the receiver applies.
#![no_main]
use gateway::update::{serve, Answer, Context, EspAccess};
use libfuzzer_sys::fuzz_target;

struct Stream<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

impl std::io::Read for Stream<'_> {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(b)
    }
}

impl std::io::Write for Stream<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let ctx = Context {
        name: "gw-a".into(),
        version: "0.1.0".into(),
        security_version: 1,
        update: gateway::plan::UpdatePlan {
            port: 7443,
            tries: 3,
            release_key: [0x42; 32],
        },
        on_trial: None,
        not_judged: false,
    };
    let mut s = Stream {
        input: data,
        output: Vec::new(),
    };
    let esp = EspAccess::Dir("/nonexistent-esp".into());
    match serve(&mut s, &ctx, &esp, &[], &mut |_| {}) {
        Answer::Refused(_) => assert!(s.output.starts_with(b"refused: ")),
        Answer::Installed { .. } => panic!("an unsigned stream was installed"),
    }
    if let Ok(t) = std::str::from_utf8(data) {
        let mid = (0..=t.len() / 2)
            .rev()
            .find(|&i| t.is_char_boundary(i))
            .unwrap_or(0);
        let (a, b) = t.split_at(mid);
        assert_eq!(
            update_bundle::compare_versions(a, b),
            update_bundle::compare_versions(b, a).reverse()
        );
    }
});
