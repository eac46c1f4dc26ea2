//! End-to-end: OVMF with Secure Boot enforced, booting from a variable store enrolled
//! by `varstore::enroll`, runs systemd-boot signed by `authenticode::sign` and refuses
//! an unsigned copy and a copy signed by a key that is not in db.
//!
//! QEMU runs with TCG (no KVM). Success and failure are read from the serial console:
//! OVMF's BdsDxe reports `failed to load Boot0002 ...: Access Denied` when image
//! verification fails, and systemd-boot draws its menu (`Boot in N s.`) when it runs.
//! Each VM is killed as soon as a marker appears (typically after 20–40 s).
//!
//! Set `SECUREBOOT_SKIP_QEMU=1` to skip these tests, `SECUREBOOT_QEMU_LOG=1` to print
//! the serial logs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use common::*;
use secureboot::authenticode::sign;
use secureboot::guid::Guid;
use secureboot::varstore::enroll;

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const OWNER: Guid = Guid::from_fields(
    0x5ecb0075,
    0x1dea,
    0x4a11,
    [0x9e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01],
);
const TIMEOUT: Duration = Duration::from_secs(150);

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// systemd-boot ran (its menu appeared).
    Booted,
    /// The firmware refused to load the image.
    Denied,
}

fn skip() -> bool {
    if std::env::var_os("SECUREBOOT_SKIP_QEMU").is_some() {
        eprintln!("SECUREBOOT_SKIP_QEMU set: skipped");
        return true;
    }
    false
}

/// At most two VMs at a time (the test machine has two cores).
fn slot() -> impl Drop {
    static STATE: (Mutex<u32>, Condvar) = (Mutex::new(0), Condvar::new());
    struct Slot;
    impl Drop for Slot {
        fn drop(&mut self) {
            *STATE.0.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
            STATE.1.notify_one();
        }
    }
    let mut n = STATE.0.lock().unwrap_or_else(|e| e.into_inner());
    while *n >= 2 {
        n = STATE.1.wait(n).unwrap_or_else(|e| e.into_inner());
    }
    *n += 1;
    Slot
}

/// A FAT ESP image holding `efi` as \EFI\BOOT\BOOTX64.EFI.
fn esp(dir: &Path, efi: &[u8]) -> PathBuf {
    require_tool("mformat", "mtools");
    let img = dir.join("esp.img");
    let efi_path = dir.join("BOOTX64.EFI");
    std::fs::write(&efi_path, efi).unwrap();
    let m = |args: &[&str]| {
        let mut c = Command::new(args[0]);
        c.env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&img)
            .args(&args[1..]);
        c
    };
    run_ok(&mut m(&["mformat", "-C", "-T", "16384", "::"]));
    run_ok(&mut m(&["mmd", "::/EFI", "::/EFI/BOOT"]));
    run_ok(m(&["mcopy"]).arg(&efi_path).arg("::/EFI/BOOT/BOOTX64.EFI"));
    img
}

/// Removes ANSI escape sequences (for readable failure messages).
fn plain(log: &str) -> String {
    let mut out = String::new();
    let mut chars = log.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn classify(log: &str) -> Option<Outcome> {
    if log.contains("Boot in ") || log.contains("Reboot Into Firmware Interface") {
        return Some(Outcome::Booted);
    }
    let denied = log.lines().any(|l| {
        l.contains("BdsDxe: failed to load Boot")
            && (l.contains("Access Denied") || l.contains("Security Violation"))
    });
    denied.then_some(Outcome::Denied)
}

/// Boots `efi` from an ESP with the enrolled `vars`; returns the outcome and the
/// serial log.
fn boot(dir: &Path, vars: &[u8], efi: &[u8]) -> (Outcome, String) {
    require_tool("qemu-system-x86_64", "qemu-system-x86");
    require_file(OVMF_CODE, "ovmf");
    let esp = esp(dir, efi);
    let vars_path = dir.join("vars.fd");
    std::fs::write(&vars_path, vars).unwrap();
    let serial = dir.join("serial.log");
    let _slot = slot();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-machine", "q35,smm=on", "-accel", "tcg", "-m", "256"])
        .args(["-global", "driver=cfi.pflash01,property=secure,value=on"])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars_path.display()
        ))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", esp.display()))
        .args([
            "-nographic",
            "-display",
            "none",
            "-monitor",
            "none",
            "-net",
            "none",
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-x86_64");
    let start = Instant::now();
    let outcome = loop {
        std::thread::sleep(Duration::from_millis(500));
        let log = String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
        if let Some(o) = classify(&log) {
            break Ok(o);
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("qemu exited early ({status})"));
        }
        if start.elapsed() > TIMEOUT {
            break Err(format!("no marker after {TIMEOUT:?}"));
        }
    };
    let _ = child.kill();
    let out = child.wait_with_output().ok();
    let log = plain(&String::from_utf8_lossy(
        &std::fs::read(&serial).unwrap_or_default(),
    ));
    eprintln!(
        "QEMU finished after {:.1} s: {outcome:?}",
        start.elapsed().as_secs_f64()
    );
    match outcome {
        Ok(o) => {
            if std::env::var_os("SECUREBOOT_QEMU_LOG").is_some() {
                eprintln!("serial log:\n{log}");
            }
            (o, log)
        }
        Err(why) => panic!(
            "{why}\nqemu stderr: {}\nserial log:\n{log}",
            out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default()
        ),
    }
}

struct Setup {
    dir: tempfile::TempDir,
    vars: Vec<u8>,
    key: secureboot::SigningKey,
    cert: secureboot::Certificate,
    sdboot: Vec<u8>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = load(&rsa_key(dir.path(), "db", "secure boot test db"));
    let vars = enroll(&require_file(OVMF_VARS, "ovmf"), cert.der(), OWNER).unwrap();
    let sdboot = require_file(SYSTEMD_BOOT, "systemd-boot-efi");
    Setup {
        dir,
        vars,
        key,
        cert,
        sdboot,
    }
}

#[test]
fn signed_systemd_boot_runs() {
    if skip() {
        return;
    }
    let s = setup();
    let signed = sign(&s.sdboot, &s.key, &s.cert).unwrap();
    let (outcome, log) = boot(s.dir.path(), &s.vars, &signed);
    assert_eq!(
        outcome,
        Outcome::Booted,
        "signed systemd-boot did not run:\n{log}"
    );
}

#[test]
fn unsigned_systemd_boot_is_refused() {
    if skip() {
        return;
    }
    let s = setup();
    let (outcome, log) = boot(s.dir.path(), &s.vars, &s.sdboot);
    assert_eq!(
        outcome,
        Outcome::Denied,
        "unsigned systemd-boot was not refused:\n{log}"
    );
}

#[test]
fn systemd_boot_signed_by_another_key_is_refused() {
    if skip() {
        return;
    }
    let s = setup();
    let (key, cert) = load(&rsa_key(s.dir.path(), "other", "not in db"));
    let signed = sign(&s.sdboot, &key, &cert).unwrap();
    let (outcome, log) = boot(s.dir.path(), &s.vars, &signed);
    assert_eq!(
        outcome,
        Outcome::Denied,
        "systemd-boot signed by a key outside db was not refused:\n{log}"
    );
}

/// Control: without enrolled keys (setup mode) the same unsigned image runs, so the
/// refusals above are caused by the enrollment.
#[test]
fn unenrolled_template_runs_unsigned_image() {
    if skip() {
        return;
    }
    let s = setup();
    let template = require_file(OVMF_VARS, "ovmf");
    let (outcome, log) = boot(s.dir.path(), &template, &s.sdboot);
    assert_eq!(
        outcome,
        Outcome::Booted,
        "unsigned systemd-boot did not run in setup mode:\n{log}"
    );
}
