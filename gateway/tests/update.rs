//! The update receiver (`gateway::update::serve`) on a directory standing for
//! the ESP: what it installs, what it refuses, and that a refusal leaves the
//! ESP's entries as they were. The path through black's relay is in
//! `runtime.rs` (`updates_arrive_through_black_and_only_signed_ones_install`),
//! the boot of an installed update in `builder/tests/build.rs`.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use bundles::{bundle, sha, uki};
use gateway::plan::UpdatePlan;
use gateway::update::{serve, Answer, Context, EspAccess, TMP_NAME};
use update_bundle::wire;

mod bundles;

/// A request stream in memory: what the client sent, and the answer.
struct Duplex {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Duplex {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(b)
    }
}

impl Write for Duplex {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Esp {
    dir: tempfile::TempDir,
}

impl Esp {
    /// The running 0.1.0 (known good) and an older other slot.
    fn new() -> Esp {
        let dir = tempfile::tempdir().unwrap();
        let linux = dir.path().join("EFI/Linux");
        std::fs::create_dir_all(&linux).unwrap();
        std::fs::write(linux.join("gw-a_0.1.0.efi"), uki("0.1.0", 1)).unwrap();
        std::fs::write(linux.join("gw-a_0.0.9.efi"), uki("0.0.9", 1)).unwrap();
        Esp { dir }
    }
    fn linux(&self) -> PathBuf {
        self.dir.path().join("EFI/Linux")
    }
    /// Every file under EFI/Linux with its digest.
    fn listing(&self) -> BTreeMap<String, String> {
        std::fs::read_dir(self.linux())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    sha(&std::fs::read(e.path()).unwrap()),
                )
            })
            .collect()
    }
}

fn ctx(key: &signing::SigningKey) -> Context {
    Context {
        name: "gw-a".into(),
        version: "0.1.0".into(),
        security_version: 1,
        update: UpdatePlan {
            port: wire::DEFAULT_PORT,
            tries: 3,
            release_key: *key.public_key().raw(),
        },
        on_trial: None,
        not_judged: false,
    }
}

/// Serves `input` (as a client sent it) with the receiver; the answer.
fn serve_raw(esp: &Path, ctx: &Context, input: Vec<u8>) -> (Answer, String, Vec<String>) {
    let mut s = Duplex {
        input: Cursor::new(input),
        output: Vec::new(),
    };
    let mut notes = Vec::new();
    let a = serve(
        &mut s,
        ctx,
        &EspAccess::Dir(esp.to_owned()),
        &[],
        &mut |l| notes.push(l.to_owned()),
    );
    (a, String::from_utf8(s.output).unwrap(), notes)
}

/// An update request with `flags` and `body`.
fn send(esp: &Path, ctx: &Context, flags: u8, body: &[u8]) -> (Answer, String, Vec<String>) {
    let mut input = wire::request(wire::ENDPOINT_UPDATE, flags).to_vec();
    input.extend_from_slice(body);
    serve_raw(esp, ctx, input)
}

fn refused(esp: &Esp, ctx: &Context, body: &[u8], reason: &str) {
    let before = esp.listing();
    let (a, answer, _) = send(esp.dir.path(), ctx, 0, body);
    assert!(
        matches!(&a, Answer::Refused(r) if r.contains(reason)),
        "want a refusal containing {reason:?}, got {a:?}"
    );
    assert!(
        answer.starts_with("refused: ") && answer.contains(reason),
        "{answer}"
    );
    assert_eq!(wire::outcome(&answer), Some(Err(answer[9..].trim_end())));
    assert_eq!(esp.listing(), before, "a refusal changed the ESP");
}

#[test]
fn a_signed_newer_bundle_replaces_the_other_slot_and_keeps_the_running_one() {
    let key = signing::SigningKey::generate().unwrap();
    let esp = Esp::new();
    let running = esp.listing()["gw-a_0.1.0.efi"].clone();
    let new = uki("0.2.0", 2);
    // An interrupted earlier update left its temporary file.
    std::fs::write(esp.linux().join(TMP_NAME), b"half a UKI").unwrap();
    let (a, answer, notes) = send(
        esp.dir.path(),
        &ctx(&key),
        wire::FLAG_REBOOT,
        &bundle(&key, "gw-a", "0.2.0", 2, &new),
    );
    match &a {
        Answer::Installed {
            path,
            release,
            reboot,
        } => {
            assert_eq!(path, "EFI/Linux/gw-a_0.2.0+3.efi");
            assert_eq!(release.security_version, 2);
            assert!(*reboot);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        answer,
        "ok: installed gw-a 0.2.0 (security version 2) as EFI/Linux/gw-a_0.2.0+3.efi; rebooting into it now\n"
    );
    let l = esp.listing();
    assert_eq!(
        l.keys().collect::<Vec<_>>(),
        ["gw-a_0.1.0.efi", "gw-a_0.2.0+3.efi"]
    );
    assert_eq!(l["gw-a_0.1.0.efi"], running);
    assert_eq!(l["gw-a_0.2.0+3.efi"], sha(&new));
    for want in [
        "removed EFI/Linux/.update.tmp left by an interrupted update",
        "removed EFI/Linux/gw-a_0.0.9.efi (the other slot)",
        "signed by the release key sha256:",
    ] {
        assert!(
            notes.iter().any(|n| n.contains(want)),
            "{want:?} not in {notes:#?}"
        );
    }
    // Without the flag: installed, no reboot; a failed entry goes too.
    std::fs::rename(
        esp.linux().join("gw-a_0.2.0+3.efi"),
        esp.linux().join("gw-a_0.2.0+0-3.efi"),
    )
    .unwrap();
    let (a, answer, _) = send(
        esp.dir.path(),
        &ctx(&key),
        0,
        &bundle(&key, "gw-a", "0.2.1", 2, &uki("0.2.1", 2)),
    );
    assert!(
        matches!(a, Answer::Installed { reboot: false, .. }),
        "{a:?}"
    );
    assert!(
        answer.ends_with("it boots at the next restart\n"),
        "{answer}"
    );
    assert_eq!(
        esp.listing().keys().collect::<Vec<_>>(),
        ["gw-a_0.1.0.efi", "gw-a_0.2.1+3.efi"]
    );
}

#[test]
fn every_bad_bundle_is_refused_with_its_reason_and_the_esp_unchanged() {
    let key = signing::SigningKey::generate().unwrap();
    let other_key = signing::SigningKey::generate().unwrap();
    let esp = Esp::new();
    let c = ctx(&key);
    let new = uki("0.2.0", 2);
    refused(
        &esp,
        &c,
        &bundle(&other_key, "gw-a", "0.2.0", 2, &new),
        "manifest.sig does not verify with the release key",
    );
    refused(
        &esp,
        &c,
        &bundle(&key, "gw-b", "0.2.0", 2, &new),
        "the bundle is for appliance \"gw-b\"; this gateway is \"gw-a\"",
    );
    refused(
        &esp,
        &c,
        &bundle(&key, "gw-a", "0.1.0", 2, &new),
        "version 0.1.0 is not newer than the running 0.1.0",
    );
    refused(
        &esp,
        &c,
        &bundle(&key, "gw-a", "0.0.10", 2, &new),
        "not newer than the running",
    );
    // The UKI changed after signing: its digest is not the manifest's.
    let mut tampered = bundle(&key, "gw-a", "0.2.0", 2, &new);
    let n = tampered.len();
    tampered[n - 100] ^= 1;
    refused(&esp, &c, &tampered, "uki.efi sha256");
    // The manifest changed after signing.
    let mut forged = bundle(&key, "gw-a", "0.2.0", 2, &new);
    let at = forged
        .windows(5)
        .position(|w| w == b"0.2.0")
        .expect("version in the manifest");
    forged[at + 2] = b'9';
    refused(&esp, &c, &forged, "does not verify");
    // The signed manifest and the UKI's .osrel disagree on the security version.
    refused(
        &esp,
        &c,
        &bundle(&key, "gw-a", "0.2.0", 5, &new),
        "the UKI's .osrel says security version 2, its signed manifest 5",
    );
    // Not a bundle; cut short in the header; cut short in the UKI.
    refused(&esp, &c, b"PK\x03\x04 a zip file", "not an update bundle");
    let good = bundle(&key, "gw-a", "0.2.0", 2, &new);
    refused(&esp, &c, &good[..100], "the stream ended early");
    refused(&esp, &c, &good[..good.len() - 10], "the bundle ended after");
    assert!(!esp.linux().join(TMP_NAME).exists());
    // A boot on trial installs nothing.
    let mut trial = c.clone();
    trial.on_trial = Some("EFI/Linux/gw-a_0.1.0+2-1.efi".into());
    refused(&esp, &trial, &good, "is on trial");
    let mut unjudged = c.clone();
    unjudged.not_judged = true;
    refused(&esp, &unjudged, &good, "this boot is not judged yet");
    // The running image's entry must be there: nothing else is removed blindly.
    let mut elsewhere = c.clone();
    elsewhere.version = "0.1.5".into();
    refused(
        &esp,
        &elsewhere,
        &bundle(&key, "gw-a", "0.2.0", 2, &new),
        "the running image's entry EFI/Linux/gw-a_0.1.5.efi is not on the ESP",
    );
}

#[test]
fn other_requests_are_refused() {
    let key = signing::SigningKey::generate().unwrap();
    let esp = Esp::new();
    for (input, want) in [
        (wire::request(9, 0).to_vec(), "unknown endpoint 9"),
        (
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            "not a management request",
        ),
        (
            wire::request(wire::ENDPOINT_UPDATE, 0x80).to_vec(),
            "unknown request flags 0x80",
        ),
    ] {
        let (a, answer, _) = serve_raw(esp.dir.path(), &ctx(&key), input);
        assert!(
            matches!(&a, Answer::Refused(r) if r.contains(want)),
            "{a:?}"
        );
        assert!(answer.starts_with("refused: "), "{answer}");
    }
}
