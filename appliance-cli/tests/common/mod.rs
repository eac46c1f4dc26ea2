//! What the command-line tests share: where things are, and running a
//! program (the `appliance` binary above all) to a finished [`Run`].
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

/// The passphrase variable, removed from every command's environment.
pub const PASS_ENV: &str = "APPLIANCE_KEY_PASSPHRASE";

/// The repository.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Cargo's directory for test files.
pub fn tmp_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// The static gateway binaries (`scripts/build-gateway-bins`).
pub fn bin_dir() -> PathBuf {
    let d = root().join("target/x86_64-unknown-linux-gnu/release");
    assert!(
        d.join("gateway-init").exists(),
        "no static gateway-init in {}: run scripts/build-gateway-bins first (scripts/test does)",
        d.display()
    );
    d
}

/// A finished command.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub seconds: f64,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:.1} s\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.seconds, self.stdout, self.stderr
        )
    }
}

/// `program ARGS` with no stdin (never a terminal) and no passphrase
/// variable from the caller's environment.
pub fn run(program: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Run {
    let mut c = Command::new(program);
    c.env_remove(PASS_ENV).stdin(Stdio::null());
    for a in args {
        c.arg(a);
    }
    let t = Instant::now();
    let o = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    Run {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        seconds: t.elapsed().as_secs_f64(),
    }
}

/// `appliance ARGS`, as [`run`].
pub fn appliance(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Run {
    run(env!("CARGO_BIN_EXE_appliance"), args)
}

/// A fresh fixture directory `CARGO_TARGET_TMPDIR/<prefix>.<pid>`, after
/// removing those of earlier runs whose process is gone.
pub fn fresh_fixture_dir(prefix: &str) -> PathBuf {
    if let Ok(entries) = std::fs::read_dir(tmp_root()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = tmp_root().join(format!("{prefix}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
