//! End-to-end tests of the signing commands through the real `appliance`
//! binary: `key generate`/`key show`, `sign`, `verify` (text and `--json`),
//! `measure` (with and without `--eventlog`) and `secure-boot enroll`.
//!
//! One image of the lab profile `gw-a` is built once per run (a fresh lock of
//! a private copy of `profiles/base/gateway.toml` and `profiles/lab/gw-a.toml`),
//! with its manifest signed by an Ed25519 key from `appliance key generate` and
//! its UKI Secure Boot-signed with an RSA-2048 key and certificate from
//! `openssl req`. The tests then check:
//!
//! * keys: files, modes, the encryption `openssl pkey` reads, fingerprints
//!   equal to `openssl … -outform DER | sha256sum`, no overwriting, every
//!   passphrase source and the error without one;
//! * errors of `sign`/`verify` for a wrong passphrase, a missing key and keys
//!   of the wrong kind (public for private, private for public, RSA);
//! * `verify` of the untouched build (directory and `disk.img`), with the
//!   signature also checked independently by `openssl pkeyutl`;
//! * `verify` of tampered copies — another public key, a truncated or
//!   modified `manifest.sig`, one byte flipped in the UKI on the ESP, in the
//!   ESP outside any file, in the primary GPT header, in `manifest.json` and
//!   in `uki.efi` — each failing and naming exactly what differs;
//! * `measure` against `manifest.json` and `reference-values.json`, and the
//!   replay of synthetic TCG event logs built from its prediction;
//! * the UKI's Authenticode signature with `sbverify`;
//! * `secure-boot enroll` into Debian's `OVMF_VARS_4M.fd`.
//!
//! Needs the static gateway binaries (`scripts/build-gateway-bins`), Debian's
//! archive through the host's apt sources (or a warm package cache: the
//! `APPLIANCE_CACHE` or default user cache), `openssl`, `sbverify`
//! (sbsigntool), `cp` and OVMF (`apt-get install ovmf`).
//!
//! The shared build lives in `CARGO_TARGET_TMPDIR/signing-fixture.<pid>`;
//! a run removes the fixtures of earlier runs whose process is gone.
//! Tampering works on per-test copies (`disk.img` copied sparsely only when
//! the test changes it, otherwise symlinked).

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The default passphrase variable of `appliance`; removed from every child's
/// environment unless a test sets it, so the caller's environment cannot leak in.
const PASS_ENV: &str = "APPLIANCE_KEY_PASSPHRASE";
const PASSPHRASE: &str = "correct horse battery staple 42";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tmp_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

fn bin_dir() -> PathBuf {
    let d = root().join("target/x86_64-unknown-linux-gnu/release");
    assert!(
        d.join("gateway-init").exists(),
        "no static gateway-init in {}: run scripts/build-gateway-bins first (scripts/test does)",
        d.display()
    );
    d
}

/// The finished output of a command.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn run(cmd: &mut Command) -> Run {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Run {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `appliance` with no stdin (never a terminal) and no default passphrase variable.
fn appliance() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_appliance"));
    c.env_remove(PASS_ENV).stdin(Stdio::null());
    c
}

fn appliance_ok(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Run {
    let mut c = appliance();
    for a in args {
        c.arg(a);
    }
    let r = run(&mut c);
    assert!(r.ok(), "{c:?} failed:\n{r}");
    r
}

/// An external tool (openssl, sbverify, cp) with its arguments.
fn tool(name: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Run {
    let mut c = Command::new(name);
    for a in args {
        c.arg(a);
    }
    c.stdin(Stdio::null());
    match c.output() {
        Ok(o) => Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        },
        Err(e) => panic!("cannot run {c:?} ({e}): apt-get install openssl sbsigntool coreutils"),
    }
}

fn tool_ok(name: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Run {
    let r = tool(name, args);
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    assert!(r.ok(), "{name} {} failed:\n{r}", shown.join(" "));
    r
}

/// Writes a passphrase file (first line is the passphrase).
fn pass_file(dir: &Path, name: &str, passphrase: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{passphrase}\n")).unwrap();
    p
}

/// `appliance key generate --out DIR/NAME --passphrase-file PASS`; returns (NAME.key, NAME.pub).
fn generate_key(dir: &Path, name: &str, pass: &Path) -> (PathBuf, PathBuf) {
    let base = dir.join(name);
    let r = appliance_ok(&[
        &"key",
        &"generate",
        &"--out",
        &base,
        &"--passphrase-file",
        &pass,
    ]);
    let (k, p) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    assert!(r.stdout.contains("fingerprint sha256:"), "{r}");
    (k, p)
}

/// The fingerprint `appliance key show` prints (`sha256:<hex>`).
fn show_fingerprint(public: &Path) -> String {
    let r = appliance_ok(&[&"key", &"show", &public]);
    let fp = r
        .stdout
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        r.stdout.contains(" ed25519 ") && fp.starts_with("sha256:") && fp.len() == 7 + 64,
        "unexpected `key show` output: {r}"
    );
    fp
}

/// A self-signed RSA-2048 certificate and its (unencrypted) key.
fn make_cert(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
    let (k, c) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.crt")),
    );
    tool_ok(
        "openssl",
        &[
            &"req",
            &"-x509",
            &"-newkey",
            &"rsa:2048",
            &"-nodes",
            &"-subj",
            &format!("/CN={cn}"),
            &"-days",
            &"3650",
            &"-keyout",
            &k,
            &"-out",
            &c,
        ],
    );
    (k, c)
}

/// The shared signed build.
struct Fixture {
    out: PathBuf,
    key: PathBuf,
    public: PathBuf,
    pass: PathBuf,
    fingerprint: String,
    sb_key: PathBuf,
    sb_crt: PathBuf,
    manifest: Value,
}

/// Removes fixtures of earlier runs whose process no longer exists.
fn remove_stale_fixtures() {
    let Ok(entries) = std::fs::read_dir(tmp_root()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("signing-fixture.") else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let bins = bin_dir();
        remove_stale_fixtures();
        let dir = tmp_root().join(format!("signing-fixture.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let profile = testbed::lab::copy_lab_profile(&root(), &dir.join("prof")).unwrap();

        let pass = pass_file(&dir, "pass", PASSPHRASE);
        let (key, public) = generate_key(&dir, "signer", &pass);
        let fingerprint = show_fingerprint(&public);
        let (sb_key, sb_crt) = make_cert(&dir, "sb", "test-sb");

        appliance_ok(&[&"lock", &profile]);
        assert!(dir.join("prof/lab/gw-a.lock").exists(), "no lock written");
        let out = dir.join("out");
        let r = appliance_ok(&[
            &"build",
            &profile,
            &"--out",
            &out,
            &"--format",
            &"raw",
            &"--bin-dir",
            &bins,
            &"--key",
            &key,
            &"--passphrase-file",
            &pass,
            &"--secure-boot-key",
            &sb_key,
            &"--secure-boot-cert",
            &sb_crt,
        ]);
        assert!(
            r.stdout
                .contains(&format!("manifest.sig signed by {fingerprint}")),
            "build did not sign the manifest with the generated key:\n{r}"
        );
        for f in [
            "disk.img",
            "uki.efi",
            "manifest.json",
            "manifest.sig",
            "reference-values.json",
        ] {
            assert!(out.join(f).is_file(), "build wrote no {f}");
        }
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["profile"]["name"], "gw-a");
        assert_eq!(manifest["secure_boot"]["subject"], "CN=test-sb");
        Fixture {
            out,
            key,
            public,
            pass,
            fingerprint,
            sb_key,
            sb_crt,
            manifest,
        }
    })
}

/// How a copy of the output directory gets `disk.img`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Disk {
    /// A sparse copy, to be tampered with.
    Copy,
    /// A symlink to the fixture's (read-only use).
    Link,
}

/// A private copy of the fixture's output directory.
fn copy_output(disk: Disk) -> tempfile::TempDir {
    let f = fixture();
    let t = tempfile::Builder::new()
        .prefix("signing-case.")
        .tempdir_in(tmp_root())
        .unwrap();
    for e in std::fs::read_dir(&f.out).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        let dst = t.path().join(&name);
        if name == "disk.img" {
            match disk {
                Disk::Copy => {
                    tool_ok("cp", &[&"--sparse=always", &e.path(), &dst]);
                }
                Disk::Link => std::os::unix::fs::symlink(e.path(), &dst).unwrap(),
            }
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
    t
}

/// XORs one byte of `path` at `offset` with `mask`; returns (old, new).
fn flip(path: &Path, offset: u64, mask: u8) -> (u8, u8) {
    assert_ne!(mask, 0);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    let new = b[0] ^ mask;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[new]).unwrap();
    f.sync_all().unwrap();
    (b[0], new)
}

/// Offset of the first occurrence of `needle` in `path[start..end]`.
fn find_in_file(path: &Path, start: u64, end: u64, needle: &[u8]) -> Option<u64> {
    let mut f = File::open(path).unwrap();
    f.seek(SeekFrom::Start(start)).unwrap();
    let mut pos = start;
    let mut carry: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    while pos < end {
        let want = buf.len().min((end - pos) as usize);
        let n = f.read(&mut buf[..want]).unwrap();
        if n == 0 {
            break;
        }
        let mut hay = std::mem::take(&mut carry);
        let carried = hay.len() as u64;
        hay.extend_from_slice(&buf[..n]);
        if let Some(i) = hay.windows(needle.len()).position(|w| w == needle) {
            return Some(pos - carried + i as u64);
        }
        carry = hay[hay.len().saturating_sub(needle.len() - 1)..].to_vec();
        pos += n as u64;
    }
    None
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// The result of `appliance verify` in text mode, with its output format checked.
struct Verdict {
    run: Run,
    /// The names on the final `verification FAILED` line, in order.
    failed: Vec<String>,
}

fn verify_text(target: &Path, pubkey: &Path) -> Verdict {
    let run = run(appliance()
        .arg("verify")
        .arg(target)
        .arg("--pubkey")
        .arg(pubkey));
    let lines: Vec<&str> = run.stdout.lines().collect();
    let last = lines.last().copied().unwrap_or_default();
    let fail_lines: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FAIL "))
        .collect();
    let failed = match run.code {
        Some(0) => {
            assert!(
                last.starts_with("verified ") && fail_lines.is_empty(),
                "verify exited 0 without a clean report:\n{run}"
            );
            Vec::new()
        }
        Some(1) => {
            let rest = last
                .strip_prefix("verification FAILED: ")
                .unwrap_or_else(|| panic!("verify exited 1 without a failure summary:\n{run}"));
            let (n, names) = rest
                .split_once(" differ: ")
                .unwrap_or_else(|| panic!("malformed summary {last:?}"));
            let names: Vec<String> = names.split(", ").map(str::to_string).collect();
            assert_eq!(n.parse::<usize>().ok(), Some(names.len()), "{last:?}");
            assert_eq!(
                fail_lines.len(),
                names.len(),
                "FAIL lines vs summary:\n{run}"
            );
            for (line, name) in fail_lines.iter().zip(&names) {
                assert!(
                    line.starts_with(&format!("FAIL {name}")),
                    "FAIL line {line:?} does not name {name:?}"
                );
            }
            names
        }
        _ => panic!("verify exited neither 0 nor 1:\n{run}"),
    };
    Verdict { run, failed }
}

/// `appliance --json verify`: (exit code, document).
fn verify_json(target: &Path, pubkey: &Path) -> (Option<i32>, Value) {
    let r = run(appliance()
        .arg("--json")
        .arg("verify")
        .arg(target)
        .arg("--pubkey")
        .arg(pubkey));
    let v: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("verify --json printed no JSON document ({e}):\n{r}"));
    (r.code, v)
}

fn json_failed(v: &Value) -> Vec<String> {
    v["report"]["checks"]
        .as_array()
        .expect("report.checks is an array")
        .iter()
        .filter(|c| c["ok"] != Value::Bool(true))
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

fn detail<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["report"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {v:#}"))
}

fn assert_failed(v: &Verdict, expected: &[&str]) {
    let got: BTreeSet<&str> = v.failed.iter().map(String::as_str).collect();
    let want: BTreeSet<&str> = expected.iter().copied().collect();
    assert_eq!(
        got, want,
        "failed checks differ from the expected:\n{}",
        v.run
    );
    assert_eq!(v.run.code, Some(1));
}

fn esp_range(m: &Value) -> (u64, u64) {
    let p = &m["disk"]["partitions"][0];
    assert_eq!(p["name"], "ESP");
    let start = p["first_lba"].as_u64().unwrap() * 512;
    let end = start + m["esp"]["size"].as_u64().unwrap();
    assert!(end <= (p["last_lba"].as_u64().unwrap() + 1) * 512);
    (start, end)
}

// ---------------------------------------------------------------- keys

#[test]
fn key_generate_writes_an_encrypted_key_openssl_reads_and_a_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let pass = pass_file(dir.path(), "pass", PASSPHRASE);
    let r = appliance_ok(&[
        &"key",
        &"generate",
        &"--out",
        &dir.path().join("k"),
        &"--passphrase-file",
        &pass,
    ]);
    let (key, public) = (dir.path().join("k.key"), dir.path().join("k.pub"));
    assert!(key.is_file() && public.is_file(), "{r}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "NAME.key mode is {mode:o}");
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"),
        "{pem}"
    );
    assert!(std::fs::read_to_string(&public)
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----\n"));

    // openssl reads the key with the passphrase, and only with it.
    let passin = format!("file:{}", pass.display());
    tool_ok(
        "openssl",
        &[&"pkey", &"-in", &key, &"-passin", &passin, &"-noout"],
    );
    let wrong = tool(
        "openssl",
        &[&"pkey", &"-in", &key, &"-passin", &"pass:wrong", &"-noout"],
    );
    assert!(
        !wrong.ok(),
        "openssl decrypted the key with a wrong passphrase"
    );
    // PBES2 with scrypt and AES-256-CBC, as documented.
    let asn1 = tool_ok("openssl", &[&"asn1parse", &"-in", &key]);
    for w in [":PBES2", ":scrypt", ":aes-256-cbc"] {
        assert!(asn1.stdout.contains(w), "no {w} in\n{}", asn1.stdout);
    }
    // The public key belongs to the private key.
    let derived = tool_ok(
        "openssl",
        &[&"pkey", &"-in", &key, &"-passin", &passin, &"-pubout"],
    );
    assert_eq!(derived.stdout, std::fs::read_to_string(&public).unwrap());

    // The passphrase is in neither the PEM text nor the DER inside it.
    let der = dir.path().join("k.der");
    tool_ok(
        "openssl",
        &[&"asn1parse", &"-in", &key, &"-out", &der, &"-noout"],
    );
    let der = std::fs::read(der).unwrap();
    assert!(der.len() > 64);
    for hay in [pem.as_bytes(), der.as_slice()] {
        assert!(
            !hay.windows(PASSPHRASE.len())
                .any(|w| w == PASSPHRASE.as_bytes()),
            "the passphrase is stored in the key file"
        );
    }

    // Fingerprints: generate, show and openssl agree.
    let fp = show_fingerprint(&public);
    assert!(
        r.stdout.contains(&format!("fingerprint {fp}")),
        "generate printed another fingerprint than show ({fp}):\n{r}"
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg("openssl pkey -pubin -in \"$1\" -outform DER | sha256sum")
        .arg("sh")
        .arg(&public)
        .output()
        .unwrap();
    assert!(out.status.success());
    let sum = String::from_utf8_lossy(&out.stdout);
    let hex = sum.split_whitespace().next().unwrap_or_default();
    assert_eq!(hex.len(), 64, "{sum}");
    assert_eq!(fp, format!("sha256:{hex}"));

    // JSON of `key show`.
    let j = appliance_ok(&[&"--json", &"key", &"show", &public]);
    let v: Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(v["fingerprint"], fp.as_str());
    assert_eq!(v["algorithm"], "ed25519");
}

#[test]
fn key_generate_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let pass = pass_file(dir.path(), "pass", PASSPHRASE);
    let (key, public) = generate_key(dir.path(), "k", &pass);
    let (k0, p0) = (
        std::fs::read(&key).unwrap(),
        std::fs::read(&public).unwrap(),
    );
    let other = pass_file(dir.path(), "other", "another passphrase");
    let r = run(appliance()
        .args(["key", "generate", "--out"])
        .arg(dir.path().join("k"))
        .arg("--passphrase-file")
        .arg(&other));
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("exists") && r.stderr.contains("k.key"),
        "{r}"
    );
    assert_eq!(std::fs::read(&key).unwrap(), k0, "NAME.key was changed");
    assert_eq!(std::fs::read(&public).unwrap(), p0, "NAME.pub was changed");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Only NAME.pub left: still refused, and no NAME.key appears.
    std::fs::remove_file(&key).unwrap();
    let r = run(appliance()
        .args(["key", "generate", "--out"])
        .arg(dir.path().join("k"))
        .arg("--passphrase-file")
        .arg(&other));
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("k.pub") && r.stderr.contains("exists"),
        "{r}"
    );
    assert!(
        !key.exists(),
        "a new NAME.key was written beside the old NAME.pub"
    );
    assert_eq!(std::fs::read(&public).unwrap(), p0);
    // No temporary files are left behind.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["k.pub", "other", "pass"]);
}

#[test]
fn key_generate_passphrase_sources() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // --passphrase-env VAR
    let r = run(appliance()
        .args(["key", "generate", "--out"])
        .arg(d.join("e"))
        .args(["--passphrase-env", "SIGNING_TEST_PASS"])
        .env("SIGNING_TEST_PASS", "from the environment"));
    assert!(r.ok(), "{r}");
    tool_ok(
        "openssl",
        &[
            &"pkey",
            &"-in",
            &d.join("e.key"),
            &"-passin",
            &"pass:from the environment",
            &"-noout",
        ],
    );

    // APPLIANCE_KEY_PASSPHRASE is the default source.
    let r = run(appliance()
        .args(["key", "generate", "--out"])
        .arg(d.join("dflt"))
        .env(PASS_ENV, "default variable"));
    assert!(r.ok(), "{r}");
    tool_ok(
        "openssl",
        &[
            &"pkey",
            &"-in",
            &d.join("dflt.key"),
            &"-passin",
            &"pass:default variable",
            &"-noout",
        ],
    );

    // A named variable that is not set.
    let r = run(appliance()
        .args(["key", "generate", "--out"])
        .arg(d.join("unset"))
        .args(["--passphrase-env", "SIGNING_TEST_NOT_SET"])
        .env_remove("SIGNING_TEST_NOT_SET"));
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("SIGNING_TEST_NOT_SET") && r.stderr.contains("not set"),
        "{r}"
    );
    assert!(!d.join("unset.key").exists() && !d.join("unset.pub").exists());

    // An empty passphrase file.
    let empty = d.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let r = run(appliance()
        .args(["key", "generate", "--out"])
        .arg(d.join("empty-pass"))
        .arg("--passphrase-file")
        .arg(&empty));
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("empty"), "{r}");
    assert!(!d.join("empty-pass.key").exists());

    // No source at all, and stdin is not a terminal.
    let r = run(appliance()
        .args(["key", "generate", "--out"])
        .arg(d.join("none")));
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("no passphrase")
            && r.stderr.contains("--passphrase-file")
            && r.stderr.contains(PASS_ENV),
        "{r}"
    );
    assert!(!d.join("none.key").exists() && !d.join("none.pub").exists());
}

// ---------------------------------------------------------------- sign errors

#[test]
fn sign_with_the_right_key_reproduces_the_builds_signature() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        f.out.join("manifest.json"),
        dir.path().join("manifest.json"),
    )
    .unwrap();
    let r = appliance_ok(&[
        &"sign",
        &dir.path(),
        &"--key",
        &f.key,
        &"--passphrase-file",
        &f.pass,
    ]);
    assert!(r.stdout.contains(&f.fingerprint), "{r}");
    // Ed25519 is deterministic: the same key over the same bytes.
    assert_eq!(
        std::fs::read(dir.path().join("manifest.sig")).unwrap(),
        std::fs::read(f.out.join("manifest.sig")).unwrap()
    );
}

#[test]
fn sign_refuses_wrong_passphrase_missing_key_and_wrong_key_types() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(f.out.join("manifest.json"), d.join("manifest.json")).unwrap();
    let sign = |key: &Path, pass: Option<&Path>| -> String {
        let mut c = appliance();
        c.arg("sign").arg(d).arg("--key").arg(key);
        if let Some(p) = pass {
            c.arg("--passphrase-file").arg(p);
        }
        let r = run(&mut c);
        assert_eq!(
            r.code,
            Some(1),
            "sign with {} did not fail:\n{r}",
            key.display()
        );
        assert!(
            !d.join("manifest.sig").exists(),
            "a failed sign wrote manifest.sig"
        );
        r.stderr
    };

    let wrong = pass_file(d, "wrong", "not the passphrase");
    let e = sign(&f.key, Some(wrong.as_path()));
    assert!(
        e.contains("wrong passphrase") && e.contains(&*f.key.to_string_lossy()),
        "{e}"
    );

    let missing = d.join("no-such.key");
    let e = sign(&missing, Some(f.pass.as_path()));
    assert!(
        e.contains(&*missing.to_string_lossy()) && e.contains("No such file"),
        "{e}"
    );

    // The public key: refused before any passphrase is asked for (none given).
    let e = sign(&f.public, None);
    assert!(
        e.contains("PUBLIC KEY") && e.contains("pass the .key file"),
        "{e}"
    );
    assert!(!e.contains("passphrase"), "asked for a passphrase: {e}");

    // The Secure Boot RSA key (unencrypted PKCS#8).
    let e = sign(&f.sb_key, Some(f.pass.as_path()));
    assert!(
        e.contains("sb.key") && e.contains("unencrypted keys are refused"),
        "{e}"
    );

    // The same RSA key, encrypted: the algorithm is named.
    let enc = d.join("rsa-enc.key");
    let rsa_pass = pass_file(d, "rsa-pass", "rsa passphrase");
    tool_ok(
        "openssl",
        &[
            &"pkcs8",
            &"-topk8",
            &"-in",
            &f.sb_key,
            &"-v2",
            &"aes-256-cbc",
            &"-passout",
            &format!("file:{}", rsa_pass.display()),
            &"-out",
            &enc,
        ],
    );
    let e = sign(&enc, Some(rsa_pass.as_path()));
    assert!(
        e.contains("not an Ed25519 key") && e.contains("1.2.840.113549.1.1.1"),
        "{e}"
    );

    // A manifest that is not there.
    let empty = tempfile::tempdir().unwrap();
    let r = run(appliance()
        .arg("sign")
        .arg(empty.path())
        .arg("--key")
        .arg(&f.key)
        .arg("--passphrase-file")
        .arg(&f.pass));
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("manifest.json"), "{r}");
}

#[test]
fn verify_refuses_keys_that_are_not_ed25519_public_keys() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let rsa_pub = dir.path().join("rsa.pub");
    tool_ok(
        "openssl",
        &[&"pkey", &"-in", &f.sb_key, &"-pubout", &"-out", &rsa_pub],
    );
    let cases: [(&Path, &[&str]); 4] = [
        (&f.key, &["ENCRYPTED PRIVATE KEY", "pass the .pub file"]),
        (&f.sb_crt, &["CERTIFICATE", "expected `PUBLIC KEY`"]),
        (&rsa_pub, &["not an Ed25519 key", "1.2.840.113549.1.1.1"]),
        (
            &dir.path().join("absent.pub"),
            &["absent.pub", "No such file"],
        ),
    ];
    for (key, words) in cases {
        let r = run(appliance()
            .arg("verify")
            .arg(&f.out)
            .arg("--pubkey")
            .arg(key));
        assert_eq!(r.code, Some(1), "{r}");
        assert!(
            !r.stdout.contains("verified") && !r.stdout.contains("ok   "),
            "verify ran checks with a bad key:\n{r}"
        );
        for w in words {
            assert!(r.stderr.contains(w), "no {w:?} in the error:\n{r}");
        }
    }
}

// ---------------------------------------------------------------- verify

#[test]
fn verify_accepts_the_signed_build() {
    let f = fixture();
    let v = verify_text(&f.out, &f.public);
    assert_eq!(v.run.code, Some(0), "{}", v.run);
    assert!(v.run.stdout.contains("verified gw-a"), "{}", v.run);
    assert!(v.run.stdout.contains(&f.fingerprint), "{}", v.run);
    for c in [
        "manifest.sig",
        "gpt",
        "disk.img",
        "partition 1 (ESP)",
        "esp",
        "esp:/EFI/BOOT/BOOTX64.EFI",
        "uki",
        "uki secure boot signature",
        "predicted pcr 7 (secure boot on)",
        "uki.efi",
        "disk.img.bmap",
        "reference-values.json",
    ] {
        assert!(
            v.run.stdout.lines().any(|l| l == format!("ok   {c}")),
            "no passing check {c:?}:\n{}",
            v.run
        );
    }

    // The disk image path works too.
    let v = verify_text(&f.out.join("disk.img"), &f.public);
    assert_eq!(v.run.code, Some(0), "{}", v.run);
    assert!(v.run.stdout.contains("verified gw-a"), "{}", v.run);

    // JSON: ok, every check passed.
    let (code, j) = verify_json(&f.out, &f.public);
    assert_eq!(code, Some(0));
    assert_eq!(j["ok"], true);
    assert_eq!(j["report"]["key"], f.fingerprint.as_str());
    assert!(json_failed(&j).is_empty(), "{j:#}");
    assert!(j["report"]["checks"].as_array().unwrap().len() >= 20);

    // Independent check of the Ed25519 signature.
    let o = tool_ok(
        "openssl",
        &[
            &"pkeyutl",
            &"-verify",
            &"-pubin",
            &"-inkey",
            &f.public,
            &"-rawin",
            &"-in",
            &f.out.join("manifest.json"),
            &"-sigfile",
            &f.out.join("manifest.sig"),
        ],
    );
    assert!(o.stdout.contains("Signature Verified Successfully"), "{o}");
}

#[test]
fn verify_with_another_public_key_fails_on_the_signature() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let pass = pass_file(dir.path(), "pass", "other");
    let (_, other) = generate_key(dir.path(), "other", &pass);
    let other_fp = show_fingerprint(&other);
    assert_ne!(other_fp, f.fingerprint);
    let v = verify_text(&f.out, &other);
    assert_failed(&v, &["manifest.sig"]);
    assert!(
        v.run.stdout.contains(&other_fp) && v.run.stdout.contains("does not verify"),
        "{}",
        v.run
    );
    // openssl agrees that this key did not sign it.
    let o = tool(
        "openssl",
        &[
            &"pkeyutl",
            &"-verify",
            &"-pubin",
            &"-inkey",
            &other,
            &"-rawin",
            &"-in",
            &f.out.join("manifest.json"),
            &"-sigfile",
            &f.out.join("manifest.sig"),
        ],
    );
    assert!(!o.ok(), "{o}");
}

#[test]
fn verify_detects_truncated_and_modified_signatures() {
    let f = fixture();
    // Truncated: the last byte dropped.
    let t = copy_output(Disk::Link);
    let sig = t.path().join("manifest.sig");
    let bytes = std::fs::read(&sig).unwrap();
    assert_eq!(bytes.len(), 64);
    std::fs::write(&sig, &bytes[..63]).unwrap();
    let v = verify_text(t.path(), &f.public);
    assert_failed(&v, &["manifest.sig"]);
    assert!(v.run.stdout.contains("63 bytes"), "{}", v.run);

    // One bit flipped.
    std::fs::write(&sig, &bytes).unwrap();
    flip(&sig, 17, 0x10);
    let v = verify_text(t.path(), &f.public);
    assert_failed(&v, &["manifest.sig"]);
    assert!(v.run.stdout.contains("does not verify"), "{}", v.run);

    // Missing.
    std::fs::remove_file(&sig).unwrap();
    let v = verify_text(t.path(), &f.public);
    assert_failed(&v, &["manifest.sig"]);
    assert!(v.run.stdout.contains("appliance sign"), "{}", v.run);
}

#[test]
fn verify_detects_a_flipped_byte_in_the_uki_on_the_esp() {
    let f = fixture();
    let t = copy_output(Disk::Copy);
    let disk = t.path().join("disk.img");
    let (start, end) = esp_range(&f.manifest);
    let at = find_in_file(&disk, start, end, b"console=ttyS0")
        .expect("no `console=ttyS0` (the UKI's .cmdline) in the ESP");
    let (old, new) = flip(&disk, at, 0x01);
    assert_eq!((old, new), (b'c', b'b'));
    let v = verify_text(t.path(), &f.public);
    assert_eq!(v.run.code, Some(1), "{}", v.run);
    for name in ["disk.img", "partition 1 (ESP)", "esp"] {
        assert!(
            v.failed.iter().any(|n| n == name),
            "{name} not named:\n{}",
            v.run
        );
    }
    let files: Vec<&String> = v
        .failed
        .iter()
        .filter(|n| n.starts_with("esp:/EFI/"))
        .collect();
    assert_eq!(files.len(), 1, "not exactly one ESP file named:\n{}", v.run);
    // Nothing outside the image is blamed: the signature and uki.efi are intact.
    for n in &v.failed {
        assert!(
            n == "disk.img"
                || n.starts_with("partition 1")
                || n.starts_with("esp")
                || n.starts_with("uki ")
                || n == "uki"
                || n.starts_with("predicted pcr"),
            "unexpected failure {n:?}:\n{}",
            v.run
        );
    }
    assert!(v.run.stdout.contains("ok   manifest.sig"));
    assert!(v.run.stdout.contains("ok   uki.efi"));
}

#[test]
fn verify_detects_a_flipped_byte_in_the_esp_outside_files() {
    let f = fixture();
    let t = copy_output(Disk::Copy);
    let disk = t.path().join("disk.img");
    let (start, _) = esp_range(&f.manifest);
    // Boot sector OEM name (bytes 3..11): no file's contents.
    let (old, _) = flip(&disk, start + 3, 0x20);
    assert!(
        old.is_ascii_graphic(),
        "byte 3 of the ESP is {old:#x}, not an OEM name"
    );
    let v = verify_text(t.path(), &f.public);
    assert_failed(&v, &["disk.img", "partition 1 (ESP)", "esp"]);
    assert!(
        v.run.stdout.contains("ok   esp:/EFI/BOOT/BOOTX64.EFI"),
        "{}",
        v.run
    );
}

#[test]
fn verify_detects_a_flipped_byte_in_the_gpt_header() {
    let f = fixture();
    let t = copy_output(Disk::Copy);
    let disk = t.path().join("disk.img");
    // Primary GPT header at LBA 1; the disk GUID at byte 56.
    let mut sig = [0u8; 8];
    let mut file = File::open(&disk).unwrap();
    file.seek(SeekFrom::Start(512)).unwrap();
    file.read_exact(&mut sig).unwrap();
    assert_eq!(&sig, b"EFI PART");
    flip(&disk, 512 + 56, 0x01);
    let v = verify_text(t.path(), &f.public);
    assert_eq!(v.run.code, Some(1), "{}", v.run);
    for name in ["gpt", "disk.img"] {
        assert!(
            v.failed.iter().any(|n| n == name),
            "{name} not named:\n{}",
            v.run
        );
    }
    assert!(!v.failed.iter().any(|n| n == "manifest.sig"), "{}", v.run);
    let (_, j) = verify_json(t.path(), &f.public);
    let gpt = detail(&j, "gpt");
    assert_eq!(gpt["ok"], false);
    assert!(
        gpt["detail"].as_str().unwrap_or_default().contains("CRC"),
        "{gpt:#}"
    );
}

#[test]
fn verify_detects_a_modified_manifest() {
    let f = fixture();
    let t = copy_output(Disk::Link);
    let mpath = t.path().join("manifest.json");
    let text = std::fs::read_to_string(&mpath).unwrap();

    // The security version raised by one digit: only the signature can tell.
    let sv = f.manifest["profile"]["security_version"].as_u64().unwrap();
    let from = format!("\"security_version\": {sv},");
    assert_eq!(text.matches(&from).count(), 1, "{from} in manifest.json");
    let to = format!("\"security_version\": {},", (sv + 1) % 10);
    assert_eq!(from.len(), to.len(), "not a one-character change");
    std::fs::write(&mpath, text.replace(&from, &to)).unwrap();
    let v = verify_text(t.path(), &f.public);
    assert_failed(&v, &["manifest.sig"]);

    // One hex digit of uki.efi's digest changed: the signature and uki.efi fail.
    let key = "\"uki.efi\": \"";
    assert_eq!(text.matches(key).count(), 1);
    let i = text.find(key).unwrap() + key.len();
    let mut bytes = text.clone().into_bytes();
    bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
    std::fs::write(&mpath, &bytes).unwrap();
    let v = verify_text(t.path(), &f.public);
    assert_failed(&v, &["manifest.sig", "uki.efi"]);

    // Not JSON any more: the signature fails and the manifest is named.
    let mut broken = text.into_bytes();
    broken[0] = b'[';
    std::fs::write(&mpath, &broken).unwrap();
    let v = verify_text(t.path(), &f.public);
    assert_failed(&v, &["manifest.sig", "manifest.json"]);
}

#[test]
fn verify_detects_a_modified_uki_efi_and_json_names_exactly_it() {
    let f = fixture();
    let t = copy_output(Disk::Link);
    let uki = t.path().join("uki.efi");
    let len = std::fs::metadata(&uki).unwrap().len();
    flip(&uki, len / 2, 0x80);
    let v = verify_text(t.path(), &f.public);
    assert_failed(&v, &["uki.efi"]);

    let (code, j) = verify_json(t.path(), &f.public);
    assert_eq!(code, Some(1));
    assert_eq!(j["ok"], false);
    assert_eq!(json_failed(&j), ["uki.efi"]);
    let c = detail(&j, "uki.efi");
    assert_eq!(c["expected"], f.manifest["outputs"]["uki.efi"]);
    assert_eq!(
        c["actual"].as_str().unwrap(),
        sha256_hex(&std::fs::read(&uki).unwrap())
    );
    assert_ne!(c["expected"], c["actual"]);
    // Every other check ran and passed: the same checks as for the original.
    let (_, base) = verify_json(&f.out, &f.public);
    let names = |v: &Value| -> Vec<String> {
        v["report"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&j), names(&base));
}

// ---------------------------------------------------------------- measure

fn measure_json(target: &Path, eventlog: Option<&Path>) -> (Option<i32>, Value) {
    let mut c = appliance();
    c.arg("--json").arg("measure").arg(target);
    if let Some(l) = eventlog {
        c.arg("--eventlog").arg(l);
    }
    let r = run(&mut c);
    let v = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("measure --json printed no JSON ({e}):\n{r}"));
    (r.code, v)
}

#[test]
fn measure_matches_the_manifest_and_reference_values() {
    let f = fixture();
    let (code, p) = measure_json(&f.out, None);
    assert_eq!(code, Some(0));
    let pcrs = &f.manifest["pcrs"];
    for k in [
        "pcr4",
        "pcr4_secure_boot_on",
        "pcr7_secure_boot_off",
        "pcr7_secure_boot_on",
        "pcr11",
    ] {
        let got = p[k]["sha256"].as_str().unwrap_or_default();
        assert_eq!(got.len(), 64, "{k}: {p:#}");
        assert_eq!(pcrs[k].as_str(), Some(got), "{k}");
    }
    assert_ne!(pcrs["pcr7_secure_boot_on"], pcrs["pcr7_secure_boot_off"]);
    assert_ne!(pcrs["pcr4_secure_boot_on"], pcrs["pcr4"]);

    let rv: Value =
        serde_json::from_slice(&std::fs::read(f.out.join("reference-values.json")).unwrap())
            .unwrap();
    assert_eq!(rv["bank"], "sha256");
    assert_eq!(
        rv["security_version"],
        f.manifest["profile"]["security_version"]
    );
    assert_eq!(
        rv["uki_authenticode_sha256"],
        f.manifest["uki"]["authenticode_sha256"]
    );
    let acc = rv["accepted"].as_array().unwrap();
    assert_eq!(acc.len(), 2, "{rv:#}");
    // PCR 12 as the init leaves it: the firmware's value, then its runtime events
    // (each digest the SHA-256 of its text).
    let runtime = rv["runtime"].as_array().unwrap();
    assert_eq!(runtime.len(), 2, "{rv:#}");
    let after = |p12: &str| {
        let mut v = hex::decode(pcrs[p12].as_str().unwrap()).unwrap();
        for e in runtime {
            assert_eq!(e["pcr"], 12);
            let text = e["text"].as_str().unwrap();
            let d = sha2::Sha256::digest(text.as_bytes());
            assert_eq!(e["sha256"], hex::encode(d));
            let mut h = sha2::Sha256::new();
            h.update(&v);
            h.update(d);
            v = h.finalize().to_vec();
        }
        hex::encode(v)
    };
    assert_eq!(
        runtime[1]["text"],
        format!(
            "appliance-init policy sha256:{}",
            f.manifest["policy"]["sha256"].as_str().unwrap()
        )
    );
    let want = |cond: &str, p4: &str, p7: &str, p12: &str| {
        serde_json::json!({
            "condition": cond,
            "pcrs": {"4": pcrs[p4], "7": pcrs[p7], "11": pcrs["pcr11"], "12": after(p12)},
        })
    };
    assert_eq!(
        acc[0],
        want("secure boot off", "pcr4", "pcr7_secure_boot_off", "pcr12")
    );
    assert_eq!(
        acc[1],
        want(
            "secure boot on",
            "pcr4_secure_boot_on",
            "pcr7_secure_boot_on",
            "pcr12_secure_boot_on"
        )
    );

    // The text form shows the same values.
    let t = appliance_ok(&[&"measure", &f.out]);
    for k in ["pcr4", "pcr7_secure_boot_on", "pcr11"] {
        assert!(
            t.stdout.contains(pcrs[k].as_str().unwrap()),
            "{k} missing:\n{t}"
        );
    }
}

/// A crypto-agile TCG event log (SHA-256 only) with the predicted events of
/// the given PCR predictions, in order.
fn event_log(preds: &[&Value]) -> Vec<u8> {
    use signing::eventlog::*;
    let types = [
        EV_SEPARATOR,
        EV_IPL,
        EV_EFI_VARIABLE_DRIVER_CONFIG,
        EV_EFI_BOOT_SERVICES_APPLICATION,
        EV_EFI_ACTION,
        EV_EFI_VARIABLE_AUTHORITY,
    ];
    let mut spec = b"Spec ID Event03\0".to_vec();
    spec.extend_from_slice(&0u32.to_le_bytes()); // platform class
    spec.extend_from_slice(&[0, 2, 0, 2]); // version 2.0, errata 0, uintn size
    spec.extend_from_slice(&1u32.to_le_bytes());
    spec.extend_from_slice(&ALG_SHA256.to_le_bytes());
    spec.extend_from_slice(&32u16.to_le_bytes());
    spec.push(0); // vendor info size
    let mut log = Vec::new();
    log.extend_from_slice(&0u32.to_le_bytes());
    log.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
    log.extend_from_slice(&[0u8; 20]);
    log.extend_from_slice(&(spec.len() as u32).to_le_bytes());
    log.extend_from_slice(&spec);
    for p in preds {
        let pcr = p["pcr"].as_u64().unwrap() as u32;
        let events = p["events"].as_array().unwrap();
        assert!(!events.is_empty());
        for e in events {
            let name = e["event_type"].as_str().unwrap();
            let ty = types
                .iter()
                .copied()
                .find(|t| event_type_name(*t) == name)
                .unwrap_or_else(|| panic!("unknown event type {name}"));
            let digest = hex::decode(e["sha256"].as_str().unwrap()).unwrap();
            assert_eq!(digest.len(), 32);
            let data = e["description"].as_str().unwrap().as_bytes();
            log.extend_from_slice(&pcr.to_le_bytes());
            log.extend_from_slice(&ty.to_le_bytes());
            log.extend_from_slice(&1u32.to_le_bytes());
            log.extend_from_slice(&ALG_SHA256.to_le_bytes());
            log.extend_from_slice(&digest);
            log.extend_from_slice(&(data.len() as u32).to_le_bytes());
            log.extend_from_slice(data);
        }
    }
    log
}

#[test]
fn measure_replays_event_logs_of_either_secure_boot_state() {
    let f = fixture();
    let (_, p) = measure_json(&f.out, None);
    let dir = tempfile::tempdir().unwrap();
    let pcrs = &f.manifest["pcrs"];
    let cases: [(&str, &[&str], bool); 5] = [
        (
            "off",
            &["pcr4", "pcr7_secure_boot_off", "pcr11", "pcr12"],
            true,
        ),
        (
            "on",
            &[
                "pcr4_secure_boot_on",
                "pcr7_secure_boot_on",
                "pcr11",
                "pcr12_secure_boot_on",
            ],
            true,
        ),
        // PCR 4 of one state with PCR 7 of the other matches neither.
        (
            "mixed",
            &["pcr4", "pcr7_secure_boot_on", "pcr11", "pcr12"],
            false,
        ),
        // No PCR 11 events.
        (
            "no-pcr11",
            &["pcr4", "pcr7_secure_boot_off", "pcr12"],
            false,
        ),
        // PCR 12 of the other state: the command line measured once too often.
        (
            "pcr12-of-the-other-state",
            &[
                "pcr4",
                "pcr7_secure_boot_off",
                "pcr11",
                "pcr12_secure_boot_on",
            ],
            false,
        ),
    ];
    for (name, keys, ok) in cases {
        let preds: Vec<&Value> = keys.iter().map(|k| &p[*k]).collect();
        let path = dir.path().join(format!("{name}.bin"));
        std::fs::write(&path, event_log(&preds)).unwrap();
        let (code, v) = measure_json(&f.out, Some(&path));
        assert_eq!(v["eventlog"]["matches"], ok, "{name}: {:#}", v["eventlog"]);
        assert_eq!(code, Some(if ok { 0 } else { 1 }), "{name}");
        if ok {
            assert_eq!(v["eventlog"]["pcr4"], pcrs[keys[0]], "{name}");
            assert_eq!(v["eventlog"]["pcr7"], pcrs[keys[1]], "{name}");
            assert_eq!(v["eventlog"]["pcr11"], pcrs["pcr11"], "{name}");
        }
    }

    // One PCR 11 event changed: the replay differs (text form).
    let mut pcr11 = p["pcr11"].clone();
    let d = pcr11["events"][1]["sha256"].as_str().unwrap().to_string();
    let changed = format!("{}{}", if d.starts_with('0') { "1" } else { "0" }, &d[1..]);
    pcr11["events"][1]["sha256"] = Value::String(changed);
    let path = dir.path().join("tampered.bin");
    std::fs::write(
        &path,
        event_log(&[&p["pcr4"], &p["pcr7_secure_boot_off"], &pcr11, &p["pcr12"]]),
    )
    .unwrap();
    let r = run(appliance()
        .arg("measure")
        .arg(&f.out)
        .arg("--eventlog")
        .arg(&path));
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stdout.contains("DIFFERS"), "{r}");

    // Garbage is an error naming the file.
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"not an event log at all, just text").unwrap();
    let r = run(appliance()
        .arg("measure")
        .arg(&f.out)
        .arg("--eventlog")
        .arg(&junk));
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("junk.bin"), "{r}");
}

// ---------------------------------------------------------------- secure boot

#[test]
fn uki_is_secure_boot_signed_for_sbverify() {
    let f = fixture();
    let uki = f.out.join("uki.efi");
    let r = tool("sbverify", &[&"--cert", &f.sb_crt, &uki]);
    assert!(r.ok(), "sbverify rejected the UKI:\n{r}");
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("Signature verification OK"),
        "{r}"
    );
    // Another certificate does not verify it.
    let dir = tempfile::tempdir().unwrap();
    let (_, other) = make_cert(dir.path(), "other", "other-sb");
    let r = tool("sbverify", &[&"--cert", &other, &uki]);
    assert!(
        !r.ok(),
        "sbverify accepted the UKI with an unrelated certificate:\n{r}"
    );
}

#[test]
fn secure_boot_enroll_writes_an_ovmf_variable_store() {
    let f = fixture();
    let template = Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd");
    assert!(template.exists(), "OVMF is needed: apt-get install ovmf");
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.fd");
    let r = appliance_ok(&[
        &"secure-boot",
        &"enroll",
        &"--cert",
        &f.sb_crt,
        &"--out",
        &vars,
    ]);
    assert!(r.stdout.contains("CN=test-sb"), "{r}");
    let t = std::fs::read(template).unwrap();
    let v = std::fs::read(&vars).unwrap();
    assert_eq!(v.len(), t.len());
    assert_eq!(v.len(), 540672);
    assert!(v != t, "vars.fd equals the template");
    // The certificate is enrolled as PK, KEK and db.
    let der = dir.path().join("sb.der");
    tool_ok(
        "openssl",
        &[
            &"x509",
            &"-in",
            &f.sb_crt,
            &"-outform",
            &"DER",
            &"-out",
            &der,
        ],
    );
    let der = std::fs::read(der).unwrap();
    let count = |hay: &[u8]| hay.windows(der.len()).filter(|w| *w == der).count();
    assert_eq!(count(&v), 3, "certificate copies in vars.fd");
    assert_eq!(count(&t), 0);
    // Its digest is the one the manifest records for the UKI's signer.
    assert_eq!(
        f.manifest["secure_boot"]["certificate_sha256"].as_str(),
        Some(sha256_hex(&der).as_str())
    );

    // No template: a hint to install OVMF, and no output.
    let out2 = dir.path().join("vars2.fd");
    let r = run(appliance()
        .args(["secure-boot", "enroll", "--cert"])
        .arg(&f.sb_crt)
        .args(["--template", "/nonexistent"])
        .arg("--out")
        .arg(&out2));
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("/nonexistent") && r.stderr.contains("apt-get install ovmf"),
        "{r}"
    );
    assert!(!out2.exists());

    // The signing key is not a certificate.
    let r = run(appliance()
        .args(["secure-boot", "enroll", "--cert"])
        .arg(&f.sb_key)
        .arg("--out")
        .arg(&out2));
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("sb.key"), "{r}");
    assert!(!out2.exists());
}

// ---------------------------------------------------------------- flash

/// A loop device over a file, detached when dropped.
struct LoopDev {
    dev: PathBuf,
}

impl LoopDev {
    fn over(file: &Path) -> LoopDev {
        let r = tool_ok("losetup", &[&"-f", &"--show", &file]);
        LoopDev {
            dev: PathBuf::from(r.stdout.trim()),
        }
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// A used disk of `size` bytes: sparse, with old bytes in its first and last
/// 2 MiB and in the middle (where an old GPT and file system would be).
fn used_disk(path: &Path, size: u64) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    let junk: Vec<u8> = (0..2u32 << 20).map(|i| (i * 131 + 7) as u8).collect();
    use std::os::unix::fs::FileExt;
    for at in [0, size / 2, size - junk.len() as u64] {
        f.write_all_at(&junk, at).unwrap();
    }
    f.sync_all().unwrap();
}

fn file_digest(path: &Path) -> String {
    let mut h = Sha256::new();
    std::io::copy(&mut File::open(path).unwrap(), &mut h).unwrap();
    hex::encode(h.finalize())
}

/// `appliance [--json] flash OUT DEVICE --pubkey KEY [--yes]`.
fn flash_run(out: &Path, dev: &Path, key: &Path, json: bool, yes: bool) -> Run {
    let mut c = appliance();
    if json {
        c.arg("--json");
    }
    c.arg("flash").arg(out).arg(dev).arg("--pubkey").arg(key);
    if yes {
        c.arg("--yes");
    }
    run(&mut c)
}

/// `appliance flash` onto a used loop device 8 MiB larger than the image:
/// refused without `--yes` (a loop device is not removable) with nothing
/// written; with it, the device holds a disk whose GPT sgdisk accepts, whose
/// ESP fsck.fat accepts, and whose UKI mtools reads back equal to the
/// build's — tools we did not write — and the device's stale end is cleared.
#[test]
fn flash_puts_the_signed_image_on_a_used_disk_that_sgdisk_and_fsck_fat_accept() {
    let f = fixture();
    let size = f.manifest["disk"]["size"].as_u64().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("flash-case.")
        .tempdir_in(tmp_root())
        .unwrap();
    let backing = dir.path().join("device.img");
    used_disk(&backing, size + (8 << 20));
    let before = file_digest(&backing);
    let dev = LoopDev::over(&backing);
    let r = flash_run(&f.out, &dev.dev, &f.public, false, false);
    assert_eq!(r.code, Some(1), "{r}");
    for want in [
        "is not a removable disk",
        "add --yes",
        "nothing was written",
    ] {
        assert!(r.stderr.contains(want), "no {want:?}:\n{r}");
    }
    assert_eq!(file_digest(&backing), before, "a refused flash wrote");
    let r = flash_run(&f.out, &dev.dev, &f.public, true, true);
    assert!(r.ok(), "{r}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let fl = &v["flash"];
    assert!(
        fl["release"].as_str().unwrap().starts_with("gw-a 0.1.0"),
        "{fl}"
    );
    assert_eq!(fl["signer"], f.fingerprint.as_str());
    assert_eq!(fl["cleared_device_end"], true);
    assert_eq!(fl["direct_io"], true);
    let written = fl["written_bytes"].as_u64().unwrap();
    assert!(written > 0 && written < size / 4, "{written} of {size}");
    // Flashing again, in text, says what it did.
    let r = flash_run(&f.out, &dev.dev, &f.public, false, true);
    assert!(r.ok(), "{r}");
    assert!(r.stdout.contains("flashed gw-a 0.1.0"), "{r}");
    assert!(
        r.stdout
            .contains("read back, all matching the signed block map"),
        "{r}"
    );
    assert!(r.stdout.contains("were cleared"), "{r}");
    // What is on the device, checked by tools we did not write.
    let dev_bytes = std::fs::read(&dev.dev).unwrap();
    assert!(
        dev_bytes[dev_bytes.len() - 33 * 512..]
            .iter()
            .all(|b| *b == 0),
        "the stale backup GPT at the device's end is still there"
    );
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, &dev_bytes[..size as usize]).unwrap();
    let sg = tool("sgdisk", &[&"-v", &disk]);
    assert!(sg.stdout.contains("No problems found"), "sgdisk -v:\n{sg}");
    let (s, e) = esp_range(&f.manifest);
    let esp = dir.path().join("esp.img");
    std::fs::write(&esp, &dev_bytes[s as usize..e as usize]).unwrap();
    tool_ok("fsck.fat", &[&"-n", &esp]);
    let uki = dir.path().join("uki.efi");
    tool_ok(
        "mcopy",
        &[&"-n", &"-i", &esp, &"::EFI/Linux/gw-a_0.1.0.efi", &uki],
    );
    assert_eq!(file_digest(&uki), file_digest(&f.out.join("uki.efi")));
}

/// Before a byte is written: a manifest signed by another key, an image
/// changed after signing (one bit of the UKI on the ESP) and a block map
/// changed after signing are each refused, naming the file.
#[test]
fn flash_refuses_another_key_a_tampered_image_and_a_tampered_block_map() {
    let f = fixture();
    let dir = tempfile::Builder::new()
        .prefix("flash-case.")
        .tempdir_in(tmp_root())
        .unwrap();
    let backing = dir.path().join("device.img");
    used_disk(&backing, 64 << 20);
    let before = file_digest(&backing);
    let dev = LoopDev::over(&backing);
    let flash = |out: &Path, key: &Path| flash_run(out, &dev.dev, key, false, true);
    let pass = pass_file(dir.path(), "pass", PASSPHRASE);
    let (_, other) = generate_key(dir.path(), "other", &pass);
    let r = flash(&f.out, &other);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr
            .contains("manifest.sig: the signature does not verify with key sha256:"),
        "{r}"
    );
    // One bit in the UKI on the ESP.
    let t = copy_output(Disk::Copy);
    let (s, e) = esp_range(&f.manifest);
    let at = find_in_file(&t.path().join("disk.img"), s, e, b"MZ").expect("a PE file on the ESP");
    flip(&t.path().join("disk.img"), at + 4096, 0x01);
    let r = flash(t.path(), &f.public);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("disk.img: bytes "), "{r}");
    assert!(
        r.stderr
            .contains("the image was changed after it was signed; nothing was written"),
        "{r}"
    );
    // The block map: one digit of a range's checksum.
    let t = copy_output(Disk::Link);
    let bmap = t.path().join("disk.img.bmap");
    let text = std::fs::read_to_string(&bmap).unwrap();
    let i = text.find("chksum=\"").unwrap() + 8;
    let mut b = text.into_bytes();
    b[i] = if b[i] == b'0' { b'1' } else { b'0' };
    std::fs::write(&bmap, b).unwrap();
    let r = flash(t.path(), &f.public);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("disk.img.bmap: SHA-256 "), "{r}");
    assert!(r.stderr.contains("differs from the signed manifest"), "{r}");
    assert_eq!(file_digest(&backing), before, "a refused flash wrote");
}
