//! Guests for the QEMU tests of the viaduct crate: a Debian kernel and
//! busybox from the lab lock's pinned packages (through the package cache,
//! never from git), an initramfs built at test time, and the console reader.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use components::{Deb, EntryKind, Lock};
use images::cpio::CpioBuilder;
use images::Epoch;
use kernel::KernelTree;

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn cache_root() -> PathBuf {
    std::env::var_os("APPLIANCE_CACHE")
        .map(PathBuf::from)
        .or_else(components::cache::user_cache_dir)
        .expect("neither APPLIANCE_CACHE nor HOME is set: cannot find the package cache")
}

/// The start of a guest's `/init` (busybox sh): busybox's applets, `/proc`,
/// `/sys`, `/dev`, `IP` for iproute2, `fatal` (prints `marker` and powers
/// off), the modules of `/modules.order` loaded, and `eth0` waited for.
pub fn init_preamble(marker: &str) -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
IP=/opt/iproute2/ip
fatal() {{ dmesg | tail -n 30; echo "{marker}: $*"; poweroff -f; sleep 60; }}
for m in $(cat /modules.order); do
  insmod "/$m" || fatal "insmod $m"
done
i=0
while ! $IP link show eth0 >/dev/null 2>&1; do
  i=$((i+1)); [ $i -gt 100 ] && fatal "no eth0"; sleep 0.1
done
"#
    )
}

/// The QEMU arguments every test guest shares: TCG, one vCPU, the serial
/// console on stdio, no reboot, `img`'s kernel and initramfs with
/// `cmdline_extra` after the common kernel command line.
pub fn qemu_guest_args(img: &GuestImage, cmdline_extra: &str) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = [
        "-nodefaults",
        "-accel",
        "tcg",
        "-smp",
        "1",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
    ]
    .iter()
    .map(Into::into)
    .collect();
    v.push(img.kernel.clone().into());
    v.push("-initrd".into());
    v.push(img.initrd.clone().into());
    v.push("-append".into());
    v.push(
        format!("console=ttyS0 ipv6.disable=1 panic=-1 quiet loglevel=4 {cmdline_extra}")
            .trim_end()
            .into(),
    );
    v
}

/// A guest's kernel and initramfs.
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

pub fn fetch_packages(wanted: &[&str]) -> Vec<(String, Vec<u8>)> {
    // The lab lock says which packages (roots and excludes); the versions are
    // Debian's current ones, as a plain build of the lab profile takes them
    // (the committed lock falls behind the archive's security updates).
    let lock_path = workspace().join("profiles/lab/gw-a.lock");
    let committed = Lock::load(&lock_path)
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", lock_path.display()));
    let request = components::LockRequest {
        groups: committed
            .groups
            .iter()
            .map(|g| (g.name.clone(), g.roots.clone()))
            .collect(),
        excludes: committed.excludes.clone(),
    };
    let root = cache_root();
    let apt = components::AptContext::new(&root.join("apt")).unwrap_or_else(|e| {
        panic!(
            "private apt in {}: {e} (install the Debian package apt)",
            root.display()
        )
    });
    let lock = apt
        .refresh(components::Refresh::default())
        .and_then(|_| components::lock(&request, &apt))
        .unwrap_or_else(|e| panic!("resolving the lab packages against Debian's archive: {e}"));
    let mut pkgs = Vec::new();
    for group in ["kernel", "black"] {
        for p in lock.group_packages(group) {
            let n = p.name.as_str();
            let keep = if group == "kernel" {
                n.starts_with("linux-image-") && n != "linux-image-amd64"
            } else {
                wanted.contains(&n)
            };
            if keep
                && !pkgs
                    .iter()
                    .any(|q: &components::LockedPackage| q.name == p.name)
            {
                pkgs.push(p.clone());
            }
        }
    }
    let cache = components::Cache::new(&root.join("debs")).expect("package cache directory");
    let fetched = components::cache::fetch_packages(&pkgs, &cache, &apt, &mut |_| {})
        .unwrap_or_else(|e| {
            panic!(
                "cannot fetch the guest's pinned packages into {}: {e}\n\
                 (needs apt and network access to the Debian archive once)",
                cache.dir().display()
            )
        });
    fetched
        .files
        .iter()
        .map(|(p, path)| {
            let bytes =
                std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (p.name.as_str().to_owned(), bytes)
        })
        .collect()
}

/// Library directories of the guest's dynamic loader.
fn is_lib_path(p: &str) -> bool {
    let libdir = p.starts_with("lib/x86_64-linux-gnu/")
        || p.starts_with("usr/lib/x86_64-linux-gnu/")
        || p.starts_with("lib64/");
    let name = p.rsplit('/').next().unwrap_or("");
    libdir && !p.contains("/gconv/") && name.contains(".so")
}

/// Builds a guest: the lab lock's kernel with `modules` (those built in are
/// skipped; each of `required` must exist; listed in `/modules.order` and,
/// with absolute paths, in `/etc/appliance/guest-modules`), busybox (also as
/// `/bin/sh`), iproute2 (as
/// `/opt/iproute2/ip`) with its libraries, `extra` files `(path, bytes,
/// mode)` and `init` as `/init`.
pub fn build_guest(
    dir: &Path,
    modules_wanted: &[&str],
    required: &[&str],
    extra: Vec<(String, Vec<u8>, u32)>,
    init: &str,
) -> GuestImage {
    // Libraries of `ip` (iproute2), as pinned in the lab lock's black group.
    let black = [
        "busybox-static",
        "iproute2",
        "libc6",
        "libbpf1",
        "libelf1",
        "libmnl0",
        "libcap2",
        "zlib1g",
        "libselinux1",
        "libpcre2-8-0",
        "libdb5.3",
        "libxtables12",
        "libgcc-s1",
        "libbsd0",
        "libmd0",
        "libtirpc3",
    ];
    let debs = fetch_packages(&black);
    let mut cpio = CpioBuilder::new(Epoch(0)).unwrap();
    let mut have = BTreeSet::new();
    fn add_to(
        have: &mut BTreeSet<String>,
        cpio: &mut CpioBuilder,
        path: &str,
        kind: images::cpio::EntryKind,
        perm: u32,
    ) {
        if have.insert(path.to_owned()) {
            cpio.add(path, perm, kind)
                .unwrap_or_else(|e| panic!("initramfs entry {path}: {e}"));
        }
    }
    let mut kernel = None;
    let mut modules = Vec::new();
    for (name, bytes) in &debs {
        let deb = Deb::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        if name.starts_with("linux-image-") {
            let tree = KernelTree::from_deb(&deb).unwrap_or_else(|e| panic!("{name}: {e}"));
            let present: Vec<&str> = modules_wanted
                .iter()
                .copied()
                .filter(|m| {
                    tree.is_builtin(m) || tree.modules().contains_key(&kernel::ModuleName::new(m))
                })
                .collect();
            for must in required {
                assert!(
                    present.contains(must),
                    "kernel {} has no {must} (module or built-in)",
                    tree.version()
                );
            }
            let res = tree.resolve(&present).expect("module resolution");
            modules = tree
                .module_files_from_deb(&deb, &res)
                .expect("module files");
            kernel = Some(tree.image().to_vec());
            continue;
        }
        let entries = deb
            .data_entries_where(|p| {
                (name == "busybox-static" && p == "bin/busybox")
                    || (name == "iproute2" && (p == "bin/ip" || p == "sbin/ip"))
                    || is_lib_path(p)
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for e in entries {
            match e.kind {
                EntryKind::File { mode, data } => {
                    let path = match e.path.as_str() {
                        "bin/ip" | "sbin/ip" => "opt/iproute2/ip".to_owned(),
                        p => p.to_owned(),
                    };
                    files.push((e.path.clone(), data.clone()));
                    if path == "bin/busybox" {
                        // Also as /bin/sh, for scripts started before (or
                        // without) `busybox --install`.
                        add_to(
                            &mut have,
                            &mut cpio,
                            "bin/sh",
                            images::cpio::EntryKind::File(data.clone().into()),
                            0o755,
                        );
                    }
                    add_to(
                        &mut have,
                        &mut cpio,
                        &path,
                        images::cpio::EntryKind::File(data.into()),
                        mode & 0o7777,
                    );
                }
                EntryKind::Symlink { target } => {
                    add_to(
                        &mut have,
                        &mut cpio,
                        &e.path,
                        images::cpio::EntryKind::Symlink(target),
                        0o777,
                    );
                }
                EntryKind::Hardlink { target } => {
                    if let Some((_, data)) = files.iter().find(|(p, _)| *p == target) {
                        add_to(
                            &mut have,
                            &mut cpio,
                            &e.path,
                            images::cpio::EntryKind::File(data.clone().into()),
                            0o755,
                        );
                    }
                }
                EntryKind::Dir { .. } => {}
            }
        }
    }
    assert!(
        have.contains("bin/busybox"),
        "busybox-static has no bin/busybox"
    );
    assert!(
        have.contains("opt/iproute2/ip"),
        "iproute2 has no bin/ip or sbin/ip"
    );
    let kernel = kernel.expect("no linux-image package in the kernel group of gw-a.lock");
    let mut order = String::new();
    for m in &modules {
        order.push_str(&m.path);
        order.push('\n');
        add_to(
            &mut have,
            &mut cpio,
            &m.path,
            images::cpio::EntryKind::File(m.data.clone().into()),
            0o644,
        );
    }
    // The same list with absolute paths, where the gateway's guest init
    // (`gateway::guest::GUEST_MODULES`) reads it.
    let absolute: String = order.lines().map(|l| format!("/{l}\n")).collect();
    add_to(
        &mut have,
        &mut cpio,
        "etc/appliance/guest-modules",
        images::cpio::EntryKind::File(absolute.into_bytes().into()),
        0o644,
    );
    add_to(
        &mut have,
        &mut cpio,
        "modules.order",
        images::cpio::EntryKind::File(order.into_bytes().into()),
        0o644,
    );
    for (path, bytes, mode) in extra {
        add_to(
            &mut have,
            &mut cpio,
            &path,
            images::cpio::EntryKind::File(bytes.into()),
            mode,
        );
    }
    add_to(
        &mut have,
        &mut cpio,
        "init",
        images::cpio::EntryKind::File(init.as_bytes().to_vec().into()),
        0o755,
    );
    cpio.add_char_device("dev/console", 0o600, 5, 1).unwrap();
    cpio.add_char_device("dev/null", 0o666, 1, 3).unwrap();
    for d in ["proc", "sys", "tmp", "sbin", "usr/bin", "usr/sbin"] {
        if !have.contains(d) {
            cpio.add_dir(d, 0o755).unwrap();
        }
    }
    let img = GuestImage {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.cpio"),
    };
    std::fs::write(&img.kernel, kernel).unwrap();
    cpio.write_to(File::create(&img.initrd).unwrap())
        .expect("writing initramfs");
    img
}

pub struct Console {
    pub rx: Receiver<String>,
    pub lines: Vec<String>,
    /// A line holding this fails the wait (the init script's `fatal`).
    pub fatal: &'static str,
}

impl Console {
    pub fn tail(&self) -> String {
        let n = self.lines.len().saturating_sub(60);
        self.lines[n..].join("\n")
    }

    /// Waits for a line containing `what`; fails on the fatal marker or a
    /// kernel panic.
    pub fn wait_for(&mut self, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(what);
                    let fatal = l.contains(self.fatal) || l.contains("Kernel panic");
                    self.lines.push(l);
                    assert!(!fatal, "guest failed:\n{}", self.tail());
                    if hit {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no guest console line {what:?} within {} s; console:\n{}",
                    timeout.as_secs(),
                    self.tail()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("QEMU exited before {what:?}; console:\n{}", self.tail())
                }
            }
        }
    }

    pub fn between(&self, begin: &str, end: &str) -> Vec<&str> {
        let b = self
            .lines
            .iter()
            .position(|l| l.trim() == begin)
            .unwrap_or_else(|| panic!("{begin} missing"));
        let e = self.lines[b..]
            .iter()
            .position(|l| l.trim() == end)
            .unwrap_or_else(|| panic!("{end} missing"));
        self.lines[b + 1..b + e]
            .iter()
            .map(|s| s.as_str())
            .collect()
    }
}
