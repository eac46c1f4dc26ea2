//! What the VMM tests (`vmm.rs`, `vmm_nested.rs`) share: QEMU's path, the
//! `vm_unit` example, `ldd`, and their shared directory's clean-up.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub const QEMU: &str = "/usr/bin/qemu-system-x86_64";

/// Tests in each file using this (its `LAB_TESTS`); the last to finish
/// removes the shared directory.
static LEFT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(crate::LAB_TESTS);

/// Held by each test: its drop (pass or fail) counts the test out.
pub struct Done(pub PathBuf);

impl Drop for Done {
    fn drop(&mut self) {
        if LEFT.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Removes the directories `<prefix><pid>` that earlier runs left (a run
/// of one test alone, a killed run): their process is gone.
pub fn sweep(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|p| p.parse::<u32>().ok())
        {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Files `ldd` says `bin` loads.
pub fn libraries(bin: &str) -> Vec<String> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .expect("ldd (libc-bin)");
    assert!(out.status.success(), "ldd {bin} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, r)) => r.trim().split(' ').next()?,
                None => l.split(' ').next()?,
            };
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect()
}

pub fn vm_unit_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples/vm_unit");
    assert!(
        bin.exists(),
        "{} missing (cargo test builds the examples)",
        bin.display()
    );
    bin
}

/// The gateway's static binaries, as the image carries them
/// (`scripts/build-gateway-bins`).
pub fn release_bin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/x86_64-unknown-linux-gnu/release")
        .join(name);
    assert!(
        p.exists(),
        "{} missing: run scripts/build-gateway-bins",
        p.display()
    );
    p
}
