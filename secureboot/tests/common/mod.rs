//! Helpers shared by the integration tests: external tools, test keys, EFI binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// systemd-stub (package systemd-boot-efi).
pub const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// systemd-boot (package systemd-boot-efi).
pub const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// Reads a file that a system package must provide, with a clear message if missing.
pub fn require_file(path: &str, package: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!("{path} is needed by this test (install the Debian package {package}): {e}")
    })
}

/// True if `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Panics with a clear message unless `tool` is on PATH.
pub fn require_tool(tool: &str, package: &str) {
    assert!(
        have(tool),
        "{tool} is needed by this test (install the Debian package {package})"
    );
}

/// Runs a command and returns its output (does not check the status).
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command and panics with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A key and self-signed certificate made by `openssl req -x509`.
pub struct TestKey {
    /// PEM private key (PKCS#8).
    pub key: PathBuf,
    /// PEM certificate.
    pub cert: PathBuf,
}

/// `openssl req -x509 -newkey <newkey> -nodes -subj /CN=<cn> -days 3650` in `dir`.
pub fn make_key(dir: &Path, name: &str, newkey: &str, cn: &str) -> TestKey {
    require_tool("openssl", "openssl");
    let key = dir.join(format!("{name}.key.pem"));
    let cert = dir.join(format!("{name}.crt.pem"));
    run_ok(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", newkey, "-nodes", "-subj"])
            .arg(format!("/CN={cn}"))
            .args(["-days", "3650", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    TestKey { key, cert }
}

/// RSA-2048 key and certificate with CN `cn`.
pub fn rsa_key(dir: &Path, name: &str, cn: &str) -> TestKey {
    make_key(dir, name, "rsa:2048", cn)
}

/// Loads a [`TestKey`] with the crate's own loaders.
pub fn load(k: &TestKey) -> (secureboot::SigningKey, secureboot::Certificate) {
    let key = secureboot::SigningKey::from_pem(&std::fs::read(&k.key).unwrap()).unwrap();
    let cert = secureboot::Certificate::from_pem(&std::fs::read(&k.cert).unwrap()).unwrap();
    (key, cert)
}
