//! Boot-time benchmark of the initramfs compression: builds the lab profile
//! gw-a once per setting (uncompressed as the anchor, zstd at two levels,
//! xz), boots each image in QEMU (OVMF + swtpm, TCG) `ROUNDS` times, and
//! prints sizes, the cold part-building time and the time from QEMU's start
//! to `appliance: ready`, side by side.
//!
//! ```text
//! scripts/build-gateway-bins
//! cargo run --release -p builder --example boot-bench [ROUNDS]
//! ```
//!
//! Packages come from the user's cache (`~/.cache/appliance`, or
//! `APPLIANCE_CACHE`); parts are made afresh in a temporary cache for each
//! setting.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use builder::{build, BuildOptions, LockPolicy};
use images::initramfs::Compression;
use testbed::vm::{Vm, VmConfig};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|r| r.parse().expect("ROUNDS is a number"))
        .unwrap_or(2);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let user_cache = std::env::var_os("APPLIANCE_CACHE")
        .map(PathBuf::from)
        .or_else(components::cache::user_cache_dir)
        .expect("HOME is set");
    let bins = root.join("target/x86_64-unknown-linux-gnu/release");
    let work = tempfile::tempdir().expect("temporary directory");
    let profile = testbed::lab::copy_lab_profile(&root, work.path()).expect("copy lab profile");
    let settings = [
        ("none (anchor)", Compression::None),
        (
            "zstd-19",
            Compression::Zstd {
                level: 19,
                window_log: 23,
            },
        ),
        (
            "zstd-12",
            Compression::Zstd {
                level: 12,
                window_log: 23,
            },
        ),
        ("xz-9", Compression::Xz { preset: 9 }),
    ];
    println!("default: {}", builder::COMPRESSION);
    println!(
        "{:<14} {:>11} {:>11} {:>11} {:>10}  boot to ready (s), {rounds} rounds",
        "compression", "initramfs", "uki", "esp data", "parts (s)"
    );
    for (name, how) in settings {
        let cache = work.path().join(format!("cache-{how}"));
        std::fs::create_dir_all(&cache).unwrap();
        for shared in ["debs", "apt"] {
            std::fs::create_dir_all(user_cache.join(shared)).unwrap();
            std::os::unix::fs::symlink(user_cache.join(shared), cache.join(shared)).unwrap();
        }
        let out = work.path().join(format!("out-{how}"));
        let opts = BuildOptions {
            profile: profile.clone(),
            out: out.clone(),
            qcow2: Some(false),
            cache_dir: cache,
            bin_dir: bins.clone(),
            compression: Some(how),
            lock: LockPolicy::default(),
            signing_key: None,
            secure_boot: None,
        };
        let t = Instant::now();
        let built = build(&opts, &mut |_| {}).expect("build");
        let cold = t.elapsed().as_secs_f64();
        let m = &built.manifest;
        let esp_data: u64 = m.esp.files.len() as u64 * m.uki.size;
        let mut boots = Vec::new();
        for i in 0..rounds {
            boots.push(boot(
                &out.join("disk.img"),
                &work.path().join(format!("vm-{how}-{i}")),
            ));
        }
        println!(
            "{name:<14} {:>11} {:>11} {:>11} {cold:>10.1}  {}",
            m.initramfs.size,
            m.uki.size,
            esp_data,
            boots
                .iter()
                .map(|b| format!("{b:.1}"))
                .collect::<Vec<_>>()
                .join("  ")
        );
    }
}

/// Seconds from QEMU's start to `appliance: ready`.
fn boot(disk: &Path, dir: &Path) -> f64 {
    std::fs::create_dir_all(dir).unwrap();
    let mut vm = Vm::start(&VmConfig::new("gw-a", dir, disk)).expect("start QEMU");
    vm.wait_for("ready", Duration::from_secs(300), |l| {
        l.contains("appliance: ready gw-a")
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let t = vm.elapsed().as_secs_f64();
    vm.send_line("poweroff").ok();
    vm.wait_exit(Duration::from_secs(60));
    t
}
