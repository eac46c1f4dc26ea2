//! End-to-end tests of `appliance bundle` and `appliance update` through the
//! real binary.
//!
//! One image of the lab profile `gw-a` (0.1.0, security version 1) is built
//! once per run from a private copy of `profiles/base/gateway.toml` and
//! `profiles/lab/gw-a.toml` with a fresh lock, its manifest signed by a key
//! from `appliance key generate`. The tests check:
//!
//! * `bundle`: two runs give identical bytes; the bundle reads back through
//!   `update_bundle::Header::read`, `verify` and `UkiCheck` as exactly
//!   manifest.json, manifest.sig and uki.efi; the summary (text and JSON);
//!   an unsigned build, a build with one byte of `uki.efi` flipped and
//!   another release key are each refused with one error naming what
//!   failed, leaving no file at `-o` (or the previous one untouched) and no
//!   temporary file;
//! * `update` against a fake gateway in a thread (a `TcpListener` on
//!   loopback that reads the request with `wire::read_request`, the header
//!   with `Header::read`, then the UKI, checks them with the release key and
//!   `update_bundle::admit`, and answers as the gateway's update receiver
//!   does): an installed update (with `--reboot` in the flags, and
//!   without), a refusal right after the header while the UKI is still
//!   being sent, a gateway refusing before it reads anything (a fake that answers at once), an
//!   answer cut off before its outcome, no answer within `--timeout`, the
//!   `[IPv6]:PORT` and name forms; and a changed bundle, another key or a
//!   cut bundle refused before any connection (the listener sees none).
//!
//! Needs the static gateway binaries (`scripts/build-gateway-bins`) and
//! Debian's archive through the host's apt sources (or a warm package
//! cache: `APPLIANCE_CACHE` or the default user cache).
//!
//! The build lives in `CARGO_TARGET_TMPDIR/bundle-fixture.<pid>`; a run
//! removes the fixtures of earlier runs whose process is gone.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use update_bundle::{wire, Header, Release, Running, UkiCheck};

mod common;
use common::{appliance, bin_dir, root, tmp_root, Run};

fn ok(r: Run, what: &str) -> Run {
    assert_eq!(r.code, Some(0), "{what} failed:\n{r}");
    r
}

/// Exit 1 with exactly one `error:` line on stderr, which is returned.
fn one_error(r: &Run) -> String {
    assert_eq!(r.code, Some(1), "expected a refusal:\n{r}");
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{r}");
    errors[0].to_string()
}

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{r}"))
}

/// The signed build and the keys.
struct Fixture {
    dir: PathBuf,
    out: PathBuf,
    public: PathBuf,
    other_public: PathBuf,
    fingerprint: String,
}

impl Fixture {
    /// The release key's raw bytes, as a gateway's plan carries them.
    fn release_key(&self) -> [u8; 32] {
        let pem = std::fs::read(&self.public).unwrap();
        *signing::keys::PublicKey::from_pem(&pem, "release.pub")
            .unwrap()
            .raw()
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let bins = bin_dir();
        let dir = common::fresh_fixture_dir("bundle-fixture");
        let pass = dir.join("pass");
        std::fs::write(&pass, "bundle test passphrase\n").unwrap();
        for name in ["release", "other"] {
            ok(
                appliance(&[
                    &"key",
                    &"generate",
                    &"--out",
                    &dir.join(name),
                    &"--passphrase-file",
                    &pass,
                ]),
                "key generate",
            );
        }
        let public = dir.join("release.pub");
        let shown = ok(appliance(&[&"key", &"show", &public]), "key show");
        let fingerprint = shown.stdout.split_whitespace().last().unwrap().to_string();
        assert!(fingerprint.starts_with("sha256:"), "{shown}");

        let profile = testbed::lab::copy_lab_profile(&root(), &dir.join("prof")).unwrap();
        ok(appliance(&[&"lock", &profile]), "lock");
        let out = dir.join("out");
        let built = ok(
            appliance(&[
                &"build",
                &profile,
                &"--out",
                &out,
                &"--format",
                &"raw",
                &"--bin-dir",
                &bins,
                &"--key",
                &dir.join("release.key"),
                &"--passphrase-file",
                &pass,
            ]),
            "build",
        );
        for f in ["disk.img", "uki.efi", "manifest.json", "manifest.sig"] {
            assert!(out.join(f).is_file(), "the build wrote no {f}");
        }
        // The key's public half is the image's release key.
        assert!(
            built.stdout.contains(&format!(
                "updates      port 7443 on black, bundles signed by {fingerprint} (boot tries 3)"
            )),
            "{built}"
        );
        Fixture {
            other_public: dir.join("other.pub"),
            dir,
            out,
            public,
            fingerprint,
        }
    })
}

/// The build's bundle, made once.
fn the_bundle() -> &'static PathBuf {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| {
        let f = fixture();
        let b = f.dir.join("gw-a-0.1.0.bundle");
        ok(
            appliance(&[&"bundle", &f.out, &"--pubkey", &f.public, &"-o", &b]),
            "bundle",
        );
        b
    })
}

/// A copy of the build (`disk.img` linked, the rest copied), without the
/// files named in `leave_out`.
fn copy_build(leave_out: &[&str]) -> tempfile::TempDir {
    let t = tempfile::Builder::new()
        .prefix("bundle-case.")
        .tempdir_in(tmp_root())
        .unwrap();
    for e in std::fs::read_dir(&fixture().out).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if leave_out.iter().any(|l| name == **l) {
            continue;
        }
        let dst = t.path().join(&name);
        if name == "disk.img" {
            std::os::unix::fs::symlink(e.path(), &dst).unwrap();
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
    t
}

/// An empty directory for outputs.
fn out_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bundle-out.")
        .tempdir_in(tmp_root())
        .unwrap()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn bundles_are_reproducible_and_read_back_as_the_signed_build() {
    let f = fixture();
    let o = out_dir();
    let (a, b) = (o.path().join("a.bundle"), o.path().join("b.bundle"));
    let text = ok(
        appliance(&[&"bundle", &f.out, &"--pubkey", &f.public, &"-o", &a]),
        "bundle",
    );
    let j = json(&ok(
        appliance(&[
            &"bundle",
            &f.out,
            &"--pubkey",
            &f.public,
            &"-o",
            &b,
            &"--json",
        ]),
        "bundle --json",
    ));
    let bytes = std::fs::read(&a).unwrap();
    assert!(
        bytes == std::fs::read(&b).unwrap(),
        "two bundles of one build differ"
    );
    assert_eq!(names_in(o.path()), ["a.bundle", "b.bundle"]);

    // The bundle is the build's three files, as signed.
    let manifest = std::fs::read(f.out.join("manifest.json")).unwrap();
    let sig = std::fs::read(f.out.join("manifest.sig")).unwrap();
    let uki = std::fs::read(f.out.join("uki.efi")).unwrap();
    let mut rest = &bytes[..];
    let h = Header::read(&mut rest).unwrap();
    assert!(h.manifest == manifest, "the bundle's manifest differs");
    assert_eq!(h.signature.as_slice(), sig.as_slice());
    assert_eq!(h.uki_len, uki.len() as u64);
    assert!(rest == uki.as_slice(), "the bundle's UKI differs");
    let release = update_bundle::verify(&h, &f.release_key()).unwrap();
    let mut check = UkiCheck::new();
    check.update(rest);
    check.finish(&release).unwrap();
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(release.name, "gw-a");
    assert_eq!(release.version, m["profile"]["version"]);
    assert_eq!(release.version, "0.1.0");
    assert_eq!(release.security_version, 1);
    assert!(release.lab);
    assert_eq!(hex::encode(release.uki_sha256), m["uki"]["sha256"]);
    assert_eq!(m["outputs"]["uki.efi"], m["uki"]["sha256"]);

    // The summary.
    let sha = hex::encode(Sha256::digest(&bytes));
    assert_eq!(j["bundle"], b.display().to_string());
    assert_eq!(j["appliance"], "gw-a");
    assert_eq!(j["version"], "0.1.0");
    assert_eq!(j["security_version"], 1);
    assert_eq!(j["lab"], true);
    assert_eq!(j["size"], bytes.len());
    assert_eq!(j["sha256"], sha);
    assert_eq!(j["uki_sha256"], m["uki"]["sha256"]);
    assert_eq!(j["release_key"], f.fingerprint);
    assert_eq!(
        text.stdout,
        format!(
            "{}: gw-a 0.1.0, security version 1 (lab image)\nsize {} bytes ({:.1} MiB), sha256 {sha}\nsigned by release key {}\n",
            a.display(),
            bytes.len(),
            bytes.len() as f64 / 1048576.0,
            f.fingerprint
        ),
        "{text}"
    );
}

#[test]
fn an_unsigned_build_is_refused_with_how_to_sign_it() {
    let f = fixture();
    let build = copy_build(&["manifest.sig"]);
    let o = out_dir();
    let target = o.path().join("gw-a.bundle");
    let r = appliance(&[
        &"bundle",
        &build.path(),
        &"--pubkey",
        &f.public,
        &"-o",
        &target,
    ]);
    let e = one_error(&r);
    assert_eq!(
        e,
        format!(
            "error: {}: missing: the build is not signed; sign it with `appliance sign {} --key NAME.key` (the release key whose NAME.pub the gateways carry), then bundle it",
            build.path().join("manifest.sig").display(),
            build.path().display()
        )
    );
    assert!(names_in(o.path()).is_empty(), "{:?}", names_in(o.path()));
}

#[test]
fn a_changed_uki_efi_is_refused_naming_the_check_and_nothing_is_written() {
    let f = fixture();
    let build = copy_build(&[]);
    let uki = build.path().join("uki.efi");
    let mut bytes = std::fs::read(&uki).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&uki, &bytes).unwrap();
    let o = out_dir();
    let target = o.path().join("gw-a.bundle");
    // A bundle already there stays as it was.
    std::fs::write(&target, b"the previous bundle").unwrap();
    let r = appliance(&[
        &"bundle",
        &build.path(),
        &"--pubkey",
        &f.public,
        &"-o",
        &target,
    ]);
    let e = one_error(&r);
    let want = hex::encode(Sha256::digest(
        std::fs::read(f.out.join("uki.efi")).unwrap(),
    ));
    let got = hex::encode(Sha256::digest(&bytes));
    assert!(
        e.starts_with(&format!(
            "error: {}: not bundled: 1 of ",
            build.path().display()
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            " checks against the signed manifest failed: uki.efi (manifest {}…, found {}…); `appliance verify {} --pubkey {}` shows every check",
            &want[..16],
            &got[..16],
            build.path().display(),
            f.public.display()
        )),
        "{e}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"the previous bundle");
    assert_eq!(names_in(o.path()), ["gw-a.bundle"]);

    // The same with --json: one JSON error.
    let r = appliance(&[
        &"--json",
        &"bundle",
        &build.path(),
        &"--pubkey",
        &f.public,
        &"-o",
        &target,
    ]);
    assert_eq!(r.code, Some(1), "{r}");
    let j = json(&r);
    assert!(
        j["error"].as_str().unwrap().contains("failed: uki.efi ("),
        "{r}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"the previous bundle");
}

#[test]
fn another_release_key_is_refused() {
    let f = fixture();
    let o = out_dir();
    let target = o.path().join("gw-a.bundle");
    let r = appliance(&[
        &"bundle",
        &f.out,
        &"--pubkey",
        &f.other_public,
        &"-o",
        &target,
    ]);
    let e = one_error(&r);
    assert!(
        e.starts_with(&format!("error: {}: not bundled: 1 of ", f.out.display())),
        "{e}"
    );
    assert!(
        e.contains("checks against the signed manifest failed: manifest.sig (")
            && e.contains("another key signed it"),
        "{e}"
    );
    assert!(names_in(o.path()).is_empty(), "{:?}", names_in(o.path()));
}

/// How the fake gateway behaves. It answers as the gateway's update
/// receiver does (`gateway/src/update.rs`): one line, a refusal as soon as
/// the signed header decides it (the UKI left unread, the connection
/// closed), `ok: installed …` once the UKI checks out.
#[derive(Clone, Copy)]
enum Gateway {
    /// Runs this version of gw-a (security version 1, floor 1): admits
    /// the bundle with `update_bundle::admit`, or refuses.
    Running(&'static str),
    /// Busy with another update: refuses at once, reading nothing.
    Busy,
    /// Reads the bundle, sends a line of progress, then closes: no outcome.
    CutsOff,
    /// Reads the bundle, then says nothing for this long and closes.
    Silent(Duration),
}

/// What the fake gateway received and answered.
#[derive(Debug)]
struct Seen {
    endpoint: u8,
    flags: u8,
    release: Option<Release>,
    /// Whether the UKI was read, and matched the signed manifest.
    uki_ok: Option<bool>,
    answer: String,
}

/// Reads the UKI that follows the header; whether it is the signed one.
fn read_uki(s: &mut TcpStream, h: &Header, release: &Release) -> bool {
    let mut check = UkiCheck::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut left = h.uki_len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = s.read(&mut buf[..want]).unwrap();
        assert!(n > 0, "the stream ended {left} bytes before the UKI's end");
        check.update(&buf[..n]);
        left -= n as u64;
    }
    // The client shut down its side: nothing after the bundle.
    assert_eq!(s.read(&mut buf).unwrap(), 0, "bytes after the bundle");
    check.finish(release).is_ok()
}

fn session(s: &mut TcpStream, key: &[u8; 32], how: Gateway) -> Seen {
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let mut seen = Seen {
        endpoint: 0,
        flags: 0,
        release: None,
        uki_ok: None,
        answer: String::new(),
    };
    if let Gateway::Busy = how {
        seen.answer = "refused: this boot (EFI/Linux/gw-a_0.0.9+2-1.efi) is on trial: its fallback is the other slot; install updates once it is marked good\n".into();
        s.write_all(seen.answer.as_bytes()).unwrap();
        return seen;
    }
    (seen.endpoint, seen.flags) = wire::read_request(s).unwrap();
    let h = Header::read(s).unwrap();
    let release = update_bundle::verify(&h, key).unwrap();
    seen.answer = match how {
        Gateway::Running(version) => {
            let running = Running {
                name: "gw-a",
                version,
                security_version: 1,
                floor: Some(1),
            };
            match update_bundle::admit(&release, &running) {
                Err(reason) => format!("refused: {reason}\n"),
                Ok(()) => {
                    let ok = read_uki(s, &h, &release);
                    seen.uki_ok = Some(ok);
                    if ok {
                        format!(
                            "ok: installed {} {} (security version {}) as EFI/Linux/{}; {}\n",
                            release.name,
                            release.version,
                            release.security_version,
                            release.file_name(3),
                            if seen.flags & wire::FLAG_REBOOT != 0 {
                                "rebooting into it now"
                            } else {
                                "it boots at the next restart"
                            }
                        )
                    } else {
                        "refused: uki.efi differs from the signed manifest\n".into()
                    }
                }
            }
        }
        Gateway::CutsOff => {
            seen.uki_ok = Some(read_uki(s, &h, &release));
            format!(
                "writing EFI/Linux/.update.tmp for {} {}\n",
                release.name, release.version
            )
        }
        Gateway::Silent(d) => {
            seen.uki_ok = Some(read_uki(s, &h, &release));
            // The client gives up meanwhile: nothing to answer.
            std::thread::sleep(d);
            String::new()
        }
        Gateway::Busy => unreachable!("answered above"),
    };
    seen.release = Some(release);
    if !seen.answer.is_empty() {
        s.write_all(seen.answer.as_bytes()).unwrap();
    }
    seen
}

/// A fake gateway on `listener`, serving one connection.
fn serve(listener: TcpListener, how: Gateway) -> JoinHandle<Seen> {
    let key = fixture().release_key();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        session(&mut s, &key, how)
    })
}

fn loopback() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// No connection reached the listener.
fn assert_no_connection(l: &TcpListener) {
    l.set_nonblocking(true).unwrap();
    match l.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("the listener saw a connection from {peer}"),
        Err(e) => panic!("accept: {e}"),
    }
}

#[test]
fn update_sends_the_bundle_and_the_reboot_flag_and_exits_0_on_ok() {
    let f = fixture();
    let bundle = the_bundle();
    let (l, addr) = loopback();
    let gw = serve(l, Gateway::Running("0.0.9"));
    let target = addr.to_string();
    let r = ok(
        appliance(&[
            &"update",
            &target,
            &bundle,
            &"--pubkey",
            &f.public,
            &"--reboot",
        ]),
        "update",
    );
    let seen = gw.join().unwrap();
    assert_eq!(seen.endpoint, wire::ENDPOINT_UPDATE);
    assert_eq!(seen.flags, wire::FLAG_REBOOT);
    assert_eq!(seen.uki_ok, Some(true));
    assert_eq!(seen.release.unwrap().version, "0.1.0");
    assert_eq!(
        seen.answer,
        "ok: installed gw-a 0.1.0 (security version 1) as EFI/Linux/gw-a_0.1.0+3.efi; rebooting into it now\n"
    );
    // The answer, as it came.
    assert_eq!(r.stdout, seen.answer, "{r}");
    assert!(
        r.stderr
            .starts_with("sending gw-a 0.1.0 (security version 1, signature checked, ")
            && r.stderr
                .contains(&format!(" MiB) to {target} ({addr}), reboot after\n")),
        "{r}"
    );
}

#[test]
fn update_json_reports_the_outcome_and_the_answer_without_reboot() {
    let bundle = the_bundle();
    let (l, addr) = loopback();
    let gw = serve(l, Gateway::Running("0.0.9"));
    let target = format!("localhost:{}", addr.port());
    let r = ok(
        appliance(&[&"update", &target, &bundle, &"--json"]),
        "update --json",
    );
    let seen = gw.join().unwrap();
    assert_eq!(seen.flags, 0);
    assert_eq!(seen.uki_ok, Some(true));
    let j = json(&r);
    assert_eq!(j["host"], target);
    assert_eq!(j["address"], addr.to_string());
    assert_eq!(j["bundle"], bundle.display().to_string());
    assert_eq!(j["appliance"], "gw-a");
    assert_eq!(j["version"], "0.1.0");
    assert_eq!(j["security_version"], 1);
    assert_eq!(j["verified"], false);
    assert_eq!(j["reboot"], false);
    assert_eq!(j["outcome"], "ok");
    assert_eq!(
        j["message"],
        "installed gw-a 0.1.0 (security version 1) as EFI/Linux/gw-a_0.1.0+3.efi; it boots at the next restart"
    );
    assert_eq!(
        j["answer_lines"],
        serde_json::json!([seen.answer.trim_end()])
    );
}

#[test]
fn update_reaches_an_ipv6_address_in_brackets() {
    let bundle = the_bundle();
    let l = TcpListener::bind("[::1]:0")
        .unwrap_or_else(|e| panic!("no IPv6 loopback (::1) to test [IPv6]:PORT on: {e}"));
    let port = l.local_addr().unwrap().port();
    let gw = serve(l, Gateway::Running("0.0.9"));
    let r = ok(
        appliance(&[&"update", &format!("[::1]:{port}"), &bundle, &"--json"]),
        "update [::1]:PORT",
    );
    gw.join().unwrap();
    let j = json(&r);
    assert_eq!(j["address"], format!("[::1]:{port}"));
    assert_eq!(j["outcome"], "ok");
}

/// The gateway refuses once it has read the signed header, and closes the
/// connection while the UKI is still being sent: its answer is read all
/// the same.
#[test]
fn a_refusal_exits_1_with_the_gateways_reason() {
    let f = fixture();
    let bundle = the_bundle();
    let (l, addr) = loopback();
    let gw = serve(l, Gateway::Running("0.1.0"));
    let target = addr.to_string();
    let r = appliance(&[&"update", &target, &bundle, &"--pubkey", &f.public]);
    let seen = gw.join().unwrap();
    let reason = "version 0.1.0 is not newer than the running 0.1.0 (systemd-boot boots the newest; an older one would only replace the fallback)";
    assert_eq!(seen.answer, format!("refused: {reason}\n"));
    assert_eq!(seen.uki_ok, None, "the UKI was read");
    assert_eq!(
        one_error(&r),
        format!("error: {target} refused the update: {reason}")
    );
    assert_eq!(r.stdout, seen.answer, "{r}");

    let (l, addr) = loopback();
    let gw = serve(l, Gateway::Running("0.2.0"));
    let r = appliance(&[&"update", &addr.to_string(), &bundle, &"--json"]);
    gw.join().unwrap();
    assert_eq!(r.code, Some(1), "{r}");
    let j = json(&r);
    assert_eq!(j["outcome"], "refused");
    assert_eq!(
        j["message"],
        "version 0.1.0 is not newer than the running 0.2.0 (systemd-boot boots the newest; an older one would only replace the fallback)"
    );
    assert_eq!(
        j["answer_lines"],
        serde_json::json!([format!("refused: {}", j["message"].as_str().unwrap())])
    );

    // Refused before the gateway reads anything (a fake that answers at once).
    let (l, addr) = loopback();
    let gw = serve(l, Gateway::Busy);
    let target = addr.to_string();
    let r = appliance(&[&"update", &target, &bundle]);
    gw.join().unwrap();
    assert_eq!(
        one_error(&r),
        format!(
            "error: {target} refused the update: this boot (EFI/Linux/gw-a_0.0.9+2-1.efi) is on trial: its fallback is the other slot; install updates once it is marked good"
        )
    );
    assert_eq!(
        r.stdout,
        "refused: this boot (EFI/Linux/gw-a_0.0.9+2-1.efi) is on trial: its fallback is the other slot; install updates once it is marked good\n"
    );
}

#[test]
fn a_changed_cut_or_foreign_bundle_is_refused_before_connecting() {
    let f = fixture();
    let good = std::fs::read(the_bundle()).unwrap();
    let o = out_dir();

    // One byte of the UKI changed: the signed manifest's digest differs.
    let changed = o.path().join("changed.bundle");
    let mut bytes = good.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    std::fs::write(&changed, &bytes).unwrap();
    let (l, addr) = loopback();
    let r = appliance(&[
        &"update",
        &addr.to_string(),
        &changed,
        &"--pubkey",
        &f.public,
    ]);
    let e = one_error(&r);
    assert!(
        e.starts_with(&format!(
            "error: {}: bundle: uki.efi sha256 ",
            changed.display()
        )) && e.contains(" differs from the signed manifest's ")
            && e.ends_with("; nothing was sent"),
        "{e}"
    );
    assert_no_connection(&l);

    // Another release key.
    let r = appliance(&[
        &"update",
        &addr.to_string(),
        &the_bundle(),
        &"--pubkey",
        &f.other_public,
    ]);
    let other = signing::keys::PublicKey::from_pem(&std::fs::read(&f.other_public).unwrap(), "")
        .unwrap()
        .fingerprint();
    assert_eq!(
        one_error(&r),
        format!(
            "error: {}: manifest.sig does not verify with {} ({other}): the bundle was changed, or another key signed it; nothing was sent",
            the_bundle().display(),
            f.other_public.display()
        )
    );
    assert_no_connection(&l);

    // Cut short (no key needed to see it).
    let cut = o.path().join("cut.bundle");
    std::fs::write(&cut, &good[..good.len() - 1000]).unwrap();
    let r = appliance(&[&"update", &addr.to_string(), &cut]);
    let e = one_error(&r);
    assert!(
        e.starts_with(&format!(
            "error: {}: the header announces a UKI of ",
            cut.display()
        )) && e.ends_with("(a cut or extended file); nothing was sent"),
        "{e}"
    );
    assert_no_connection(&l);

    // Not a bundle at all.
    let text = o.path().join("notes.txt");
    std::fs::write(&text, "release notes for 0.1.0\n").unwrap();
    let r = appliance(&[&"update", &addr.to_string(), &text]);
    assert_eq!(
        one_error(&r),
        format!(
            "error: {}: not an update bundle (format \"release.\"; expected \"APLBNDL1\"); nothing was sent",
            text.display()
        )
    );
    assert_no_connection(&l);
}

#[test]
fn an_answer_without_an_outcome_fails_and_says_the_outcome_is_unknown() {
    let bundle = the_bundle();
    let (l, addr) = loopback();
    let gw = serve(l, Gateway::CutsOff);
    let target = addr.to_string();
    let r = appliance(&[&"update", &target, &bundle]);
    let seen = gw.join().unwrap();
    assert_eq!(seen.uki_ok, Some(true), "the whole bundle arrived");
    assert_eq!(
        one_error(&r),
        format!(
            "error: the answer from {target} ended without an outcome (its last line is neither `ok: …` nor `refused: …`): the update may or may not have been installed; running `appliance update` again is safe (the gateway refuses a version that is not newer than the one it runs)"
        )
    );
    assert_eq!(r.stdout, seen.answer);

    let (l, addr) = loopback();
    let gw = serve(l, Gateway::CutsOff);
    let r = appliance(&[&"update", &addr.to_string(), &bundle, &"--json"]);
    gw.join().unwrap();
    assert_eq!(r.code, Some(1), "{r}");
    let j = json(&r);
    assert_eq!(j["outcome"], "unknown");
    assert!(
        j["message"]
            .as_str()
            .unwrap()
            .contains("ended without an outcome"),
        "{r}"
    );
}

#[test]
fn no_outcome_within_the_timeout_fails_in_time() {
    let bundle = the_bundle();
    let (l, addr) = loopback();
    let gw = serve(l, Gateway::Silent(Duration::from_secs(6)));
    let target = addr.to_string();
    let r = appliance(&[&"update", &target, &bundle, &"--timeout", &"3"]);
    assert_eq!(
        one_error(&r),
        format!(
            "error: the answer from {target} ended without an outcome (reading the answer: no outcome within 3 s (--timeout)): the update may or may not have been installed; running `appliance update` again is safe (the gateway refuses a version that is not newer than the one it runs)"
        )
    );
    assert!(r.seconds < 7.0, "took {:.1} s", r.seconds);
    gw.join().unwrap();
}

#[test]
fn bad_targets_and_files_are_refused_before_connecting() {
    // No build needed: the target is read first, then the file.
    let (l, addr) = loopback();
    let o = out_dir();
    let file = o.path().join("x.bundle");
    for (target, says) in [
        (
            format!("localhost:{}9", addr.port()),
            format!(
                "\"localhost:{}9\": port \"{}9\" is not a number from 1 to 65535",
                addr.port(),
                addr.port()
            ),
        ),
        (
            "2001:db8::1:99999".to_string(),
            "\"2001:db8::1:99999\": not an IPv6 address; an IPv6 address with a port is written [ADDRESS]:PORT".to_string(),
        ),
    ] {
        let r = appliance(&[&"update", &target, &file]);
        let e = one_error(&r);
        assert!(e.starts_with(&format!("error: {says} (give HOST[:PORT], ")), "{target}: {e}");
    }
    let r = appliance(&[&"update", &addr.to_string(), &file]);
    assert_eq!(
        one_error(&r),
        format!(
            "error: reading {}: No such file or directory (os error 2)",
            file.display()
        )
    );
    // Without a key the manifest is still read, to say what is sent: `{}`
    // is no manifest.
    std::fs::write(
        &file,
        update_bundle::encode(b"{}", &[0; 64], b"uki").unwrap(),
    )
    .unwrap();
    let r = appliance(&[&"update", &addr.to_string(), &file]);
    let e = one_error(&r);
    assert!(
        e.starts_with(&format!("error: {}: manifest.json: ", file.display()))
            && e.ends_with("; nothing was sent"),
        "{e}"
    );
    assert_no_connection(&l);
}

#[test]
fn a_port_nobody_listens_on_fails_saying_nothing_was_sent() {
    let bundle = the_bundle();
    let (l, addr) = loopback();
    drop(l);
    let r = appliance(&[&"update", &addr.to_string(), &bundle]);
    let e = one_error(&r);
    assert!(
        e.starts_with(&format!("error: cannot connect to {addr} ({addr}: "))
            && e.ends_with("); nothing was sent"),
        "{e}"
    );
    assert!(r.stdout.is_empty(), "{r}");
}

/// The gateway's own receiver (`gateway::update::serve`, on a directory
/// standing for the ESP) behind a loopback port: the command and the real
/// receiver agree on the stream, the answer and the exit status.
fn real_gateway(running: &'static str) -> (SocketAddr, tempfile::TempDir, JoinHandle<()>) {
    let f = fixture();
    let esp = tempfile::tempdir().unwrap();
    let linux = esp.path().join("EFI/Linux");
    std::fs::create_dir_all(&linux).unwrap();
    std::fs::write(
        linux.join(format!("gw-a_{running}.efi")),
        b"the running UKI",
    )
    .unwrap();
    let (l, addr) = loopback();
    l.set_nonblocking(false).unwrap();
    let ctx = gateway::update::Context {
        name: "gw-a".into(),
        version: running.into(),
        security_version: 1,
        update: gateway::plan::UpdatePlan {
            port: wire::DEFAULT_PORT,
            tries: 3,
            release_key: f.release_key(),
        },
        on_trial: None,
        not_judged: false,
    };
    let dir = esp.path().to_owned();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        gateway::update::serve(
            &mut s,
            &ctx,
            &gateway::update::EspAccess::Dir(dir),
            &[],
            &mut |_| {},
        );
    });
    (addr, esp, h)
}

#[test]
fn update_installs_through_the_gateways_own_receiver() {
    let f = fixture();
    let (addr, esp, h) = real_gateway("0.0.9");
    let r = ok(
        appliance(&[
            &"update",
            &addr.to_string(),
            the_bundle(),
            &"--pubkey",
            &f.public,
            &"--reboot",
        ]),
        "update",
    );
    h.join().unwrap();
    assert_eq!(
        r.stdout,
        "ok: installed gw-a 0.1.0 (security version 1) as EFI/Linux/gw-a_0.1.0+3.efi; rebooting into it now\n"
    );
    let linux = esp.path().join("EFI/Linux");
    assert_eq!(names_in(&linux), ["gw-a_0.0.9.efi", "gw-a_0.1.0+3.efi"]);
    assert_eq!(
        std::fs::read(linux.join("gw-a_0.1.0+3.efi")).unwrap(),
        std::fs::read(f.out.join("uki.efi")).unwrap()
    );
    // The same bundle on a gateway that runs it already: refused, exit 1.
    let (addr, esp, h) = real_gateway("0.1.0");
    let r = appliance(&[&"update", &addr.to_string(), the_bundle()]);
    h.join().unwrap();
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr
            .contains("refused the update: version 0.1.0 is not newer than the running 0.1.0"),
        "{r}"
    );
    assert_eq!(names_in(&esp.path().join("EFI/Linux")), ["gw-a_0.1.0.efi"]);
}

/// `appliance bundle OUTDIR -o NAME.bundle` without `--pubkey`: the same
/// bytes, the signature left to the gateways (said so), a changed UKI still
/// refused against the manifest.
#[test]
fn without_a_public_key_the_same_bundle_is_written_and_the_uki_still_checked() {
    let f = fixture();
    let out = out_dir();
    let b = out.path().join("nokey.bundle");
    let r = ok(appliance(&[&"bundle", &f.out, &"-o", &b]), "bundle");
    assert!(
        r.stdout
            .contains("signature not checked here (no --pubkey)"),
        "{r}"
    );
    assert_eq!(
        std::fs::read(&b).unwrap(),
        std::fs::read(the_bundle()).unwrap()
    );
    let changed = copy_build(&[]);
    let uki = changed.path().join("uki.efi");
    let mut bytes = std::fs::read(&uki).unwrap();
    bytes[4096] ^= 1;
    std::fs::write(&uki, &bytes).unwrap();
    let b2 = out.path().join("changed.bundle");
    let r = appliance(&[&"bundle", &changed.path(), &"-o", &b2]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("uki.efi sha256"), "{r}");
    assert!(!b2.exists());
}
