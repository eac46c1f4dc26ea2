//! Integration tests against Debian's archive (network: the host's apt
//! sources only). They need `apt-get` (package `apt`); without it they skip
//! loudly. Every test makes its own fresh lock: the archive moves.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use components::deb::{Deb, EntryKind};
use components::{fetch, lock, AptContext, Cache, Error, Event, Lock, LockRequest};

/// Dependencies only maintainer scripts need; never in an image.
const EXCLUDES: &[&str] = &[
    "adduser",
    "debconf",
    "debconf-2.0",
    "dpkg",
    "init-system-helpers",
    "initramfs-tools",
    "kmod",
    "libc-bin",
    "linux-base",
    "linux-initramfs-tool",
    "perl-base",
];

fn have_apt() -> bool {
    let ok = std::process::Command::new("apt-get")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP: apt-get not found (install package apt)");
    }
    ok
}

fn test_root() -> PathBuf {
    components::cache::user_cache_dir()
        .unwrap_or_else(|| std::env::temp_dir().join("appliance-cache"))
        .join("apt-test")
}

/// One private apt per test process, updated once.
fn ctx() -> &'static AptContext {
    static CTX: OnceLock<AptContext> = OnceLock::new();
    CTX.get_or_init(|| {
        let c = AptContext::new(&test_root()).expect("private apt");
        let t = Instant::now();
        c.update().expect("apt-get update into private state");
        eprintln!("FIGURE: private apt-get update: {:.2?}", t.elapsed());
        let t = Instant::now();
        let idx = c.index().expect("Packages indices");
        eprintln!(
            "FIGURE: parse Packages indices ({} names): {:.2?}",
            idx.len(),
            t.elapsed()
        );
        c
    })
}

fn request(groups: &[(&str, &[&str])]) -> LockRequest {
    LockRequest {
        groups: groups
            .iter()
            .map(|(g, r)| ((*g).to_owned(), r.iter().map(|s| (*s).to_owned()).collect()))
            .collect(),
        excludes: EXCLUDES.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Digest and mtime of a file, listing (name, size, mtime) of directories.
fn host_state() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for f in ["/var/lib/dpkg/status"] {
        if let Ok(bytes) = std::fs::read(f) {
            let meta = std::fs::metadata(f).unwrap();
            m.insert(
                f.to_owned(),
                format!(
                    "{} {}",
                    components::Sha256Digest::of(&bytes),
                    meta.mtime_nsec() + meta.mtime() * 1_000_000_000
                ),
            );
        }
    }
    for d in [
        "/var/lib/apt/lists",
        "/var/lib/apt/lists/partial",
        "/var/cache/apt",
        "/var/cache/apt/archives",
        "/var/lib/dpkg",
    ] {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let meta = e.metadata().unwrap();
                let key = e.path().display().to_string();
                let size = if meta.is_dir() { 0 } else { meta.len() };
                m.insert(
                    key,
                    format!("{size} {} {}", meta.mtime(), meta.mtime_nsec()),
                );
            }
        }
    }
    m
}

#[test]
fn private_apt_leaves_host_state_untouched() {
    if !have_apt() {
        return;
    }
    let before = host_state();
    assert!(
        before.contains_key("/var/lib/dpkg/status"),
        "host has no dpkg status to compare"
    );
    let dir = tempfile::tempdir().unwrap();
    let c = AptContext::new(dir.path()).unwrap();
    c.update().unwrap();
    let l = lock(&request(&[("boot", &["busybox-static"])]), &c).unwrap();
    let cache = Cache::new(&dir.path().join("debs")).unwrap();
    fetch(&l, &cache, &c, &mut |_| {}).unwrap();
    // The private status is empty: apt saw nothing installed.
    assert_eq!(std::fs::read(dir.path().join("state/status")).unwrap(), b"");
    let after = host_state();
    assert_eq!(before, after, "host apt/dpkg state changed");
}

#[test]
fn lock_fetch_extract_small_packages() {
    if !have_apt() {
        return;
    }
    let c = ctx();
    let t = Instant::now();
    let req = request(&[("boot", &["busybox-static"]), ("lib", &["libzstd1"])]);
    let l = lock(&req, c).unwrap();
    eprintln!(
        "FIGURE: lock (resolve, index loaded) of {} packages: {:.2?}",
        l.packages.len(),
        t.elapsed()
    );
    assert_eq!(
        l.group("boot").unwrap().packages.len(),
        1,
        "busybox-static is static"
    );
    let lib = l.group_packages("lib");
    assert!(
        lib.iter().any(|p| p.name.as_str() == "libc6"),
        "libzstd1 needs libc6: {lib:?}"
    );
    assert!(l.source_date_epoch.0 > 1_600_000_000);
    // Deterministic: locking again gives the same bytes.
    assert_eq!(lock(&req, c).unwrap().to_toml(), l.to_toml());

    eprintln!("--- lock ---\n{}---", l.to_toml());
    // Save / load / digest.
    let dir = tempfile::tempdir().unwrap();
    let lock_path = dir.path().join("test.lock");
    l.save(&lock_path).unwrap();
    let loaded = Lock::load(&lock_path).unwrap();
    assert_eq!(loaded.digest(), l.digest());

    // Fetch into an empty cache, then again (all cached).
    let cache = Cache::new(&dir.path().join("debs")).unwrap();
    let mut events = Vec::new();
    let t = Instant::now();
    let fetched = fetch(&loaded, &cache, c, &mut |e| events.push(e)).unwrap();
    eprintln!(
        "FIGURE: fetch of {} packages ({} bytes): {:.2?}",
        l.packages.len(),
        l.packages.iter().map(|p| p.size).sum::<u64>(),
        t.elapsed()
    );
    let stored = events
        .iter()
        .filter(|e| matches!(e, Event::Stored { .. }))
        .count();
    assert_eq!(stored, l.packages.len(), "{events:?}");
    assert_eq!(events.last(), Some(&Event::Done));
    let mut events2 = Vec::new();
    fetch(&loaded, &cache, c, &mut |e| events2.push(e)).unwrap();
    assert!(
        !events2
            .iter()
            .any(|e| matches!(e, Event::Downloading { .. })),
        "{events2:?}"
    );
    // Cache holds exactly <sha256>.deb files.
    for (p, path) in &fetched.files {
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            format!("{}.deb", p.sha256)
        );
    }
    // The lock did not change.
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), l.to_toml());

    // Extract busybox-static.
    let bb = l.package("busybox-static").unwrap();
    let bytes = cache.read(bb).unwrap();
    let t = Instant::now();
    let deb = Deb::parse(&bytes).unwrap();
    let control = deb.control().unwrap();
    assert_eq!(control.get("Package"), Some("busybox-static"));
    assert_eq!(control.get("Version"), Some(bb.version.as_str()));
    let entries = deb.data_entries().unwrap();
    eprintln!(
        "FIGURE: extract busybox-static ({} entries): {:.2?}",
        entries.len(),
        t.elapsed()
    );
    let busybox = entries
        .iter()
        .find(|e| e.path == "bin/busybox")
        .expect("bin/busybox");
    match &busybox.kind {
        EntryKind::File { mode, data } => {
            assert_eq!(mode & 0o111, 0o111);
            assert!(data.starts_with(b"\x7fELF"));
        }
        k => panic!("bin/busybox is {k:?}"),
    }
    let out = dir.path().join("root");
    std::fs::create_dir(&out).unwrap();
    components::deb::extract_to_dir(&entries, &out).unwrap();
    assert!(out.join("bin/busybox").is_file());

    // A truncated real .deb is an error, never a panic.
    for cut in [bytes.len() / 3, bytes.len() - 100] {
        let r = Deb::parse(&bytes[..cut]).and_then(|d| d.data_entries());
        assert!(r.is_err(), "truncated at {cut} accepted");
    }
    // libzstd1 has a shared library symlink.
    let z = cache.read(l.package("libzstd1").unwrap()).unwrap();
    let ze = Deb::parse(&z).unwrap().data_entries().unwrap();
    assert!(
        ze.iter()
            .any(|e| matches!(e.kind, EntryKind::Symlink { .. })),
        "{ze:?}"
    );
}

#[test]
fn gone_version_fails_clearly() {
    if !have_apt() {
        return;
    }
    let c = ctx();
    let l = lock(&request(&[("boot", &["busybox-static"])]), c).unwrap();
    let real = l.package("busybox-static").unwrap().version.to_string();
    let text = l
        .to_toml()
        .replace(&format!("version = \"{real}\""), "version = \"9.9.9-1\"");
    assert!(text.contains("9.9.9-1"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edited.lock");
    std::fs::write(&path, text).unwrap();
    let edited = Lock::load(&path).unwrap();
    let cache = Cache::new(&dir.path().join("debs")).unwrap();
    let err = fetch(&edited, &cache, c, &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::VersionsGone(_)), "{err:?}");
    let msg = err.to_string();
    eprintln!("gone version message: {msg}");
    for needle in ["busybox-static", "9.9.9-1", real.as_str()] {
        assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
    }
    // Each fact once.
    assert_eq!(msg.matches("9.9.9-1").count(), 1, "{msg}");
}

/// A locked version the archive dropped comes from a snapshot archive given
/// by URL, checked against the lock's digest; a snapshot without it is named.
#[test]
fn gone_version_comes_from_a_snapshot_archive() {
    if !have_apt() {
        return;
    }
    let c = ctx();
    let l = lock(&request(&[("boot", &["busybox-static"])]), c).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The real package, placed at its pool path in a local "snapshot".
    let real_cache = Cache::new(&dir.path().join("real")).unwrap();
    fetch(&l, &real_cache, c, &mut |_| {}).unwrap();
    let pkg = l.package("busybox-static").unwrap();
    let snap = dir.path().join("snapshot");
    let at = snap.join(&pkg.filename);
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::fs::copy(real_cache.path_for(&pkg.sha256), &at).unwrap();
    let empty = dir.path().join("empty-snapshot");
    std::fs::create_dir_all(&empty).unwrap();
    // The lock now names a version the archive does not have (same bytes).
    let real = pkg.version.to_string();
    let text = l
        .to_toml()
        .replace(&format!("version = \"{real}\""), "version = \"9.9.9-1\"");
    let edited = Lock::parse(&text, Path::new("edited.lock")).unwrap();
    let url = |p: &Path| format!("file://{}", p.display());

    let cache = Cache::new(&dir.path().join("debs")).unwrap();
    let err = components::fetch_from(&edited.packages, &cache, c, &[url(&empty)], &mut |_| {})
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NotInSnapshots { .. }), "{msg}");
    assert!(
        msg.contains(&url(&empty)) && msg.contains("9.9.9-1"),
        "{msg}"
    );

    let fetched = components::fetch_from(
        &edited.packages,
        &cache,
        c,
        &[url(&empty), url(&snap)],
        &mut |_| {},
    )
    .unwrap();
    let got = fetched.path("busybox-static").unwrap();
    assert_eq!(components::cache::hash_file(got).unwrap(), pkg.sha256);

    // Other bytes at that path are refused by their digest.
    let bad = dir.path().join("bad-snapshot");
    let at = bad.join(&pkg.filename);
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::fs::write(&at, b"not the package").unwrap();
    let cache = Cache::new(&dir.path().join("debs2")).unwrap();
    let err =
        components::fetch_from(&edited.packages, &cache, c, &[url(&bad)], &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("Hash Sum mismatch"), "{err}");
    assert!(!cache.path_for(&pkg.sha256).exists());
}

#[test]
fn unknown_package_and_corrupt_cache() {
    if !have_apt() {
        return;
    }
    let c = ctx();
    let err = lock(&request(&[("red", &["busybox-statc"])]), c).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::UnknownPackage { .. }), "{err:?}");
    assert!(
        msg.contains("busybox-statc") && msg.contains("busybox-static"),
        "{msg}"
    );

    // A lock naming a package the archive does not have.
    let l = lock(&request(&[("boot", &["busybox-static"])]), c).unwrap();
    let text = l
        .to_toml()
        .replace("\"busybox-static\"", "\"busybox-nonexistent\"");
    let dir = tempfile::tempdir().unwrap();
    let edited = Lock::parse(&text, Path::new("edited.lock")).unwrap();
    let cache = Cache::new(&dir.path().join("debs")).unwrap();
    let err = fetch(&edited, &cache, c, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("busybox-nonexistent"), "{err}");

    // A cached file with the wrong content names the file to delete.
    let p = l.package("busybox-static").unwrap();
    std::fs::write(cache.path_for(&p.sha256), b"not a deb").unwrap();
    let err = fetch(&l, &cache, c, &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::CacheCorrupt { .. }), "{err:?}");
    assert!(
        msg.contains(&cache.path_for(&p.sha256).display().to_string()) && msg.contains("delete"),
        "{msg}"
    );
}

#[test]
fn closure_of_real_packages_is_deterministic_and_complete() {
    if !have_apt() {
        return;
    }
    let c = ctx();
    let index = c.index().unwrap();
    let req = request(&[
        ("red", &["dnsmasq-base", "iproute2"]),
        ("black", &["isc-dhcp-client"]),
    ]);
    let l = components::lock::lock_with_index(&req, &index).unwrap();
    let names: Vec<&str> = l.packages.iter().map(|p| p.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    for ex in EXCLUDES {
        assert!(!names.contains(ex), "excluded {ex} in closure");
    }
    assert!(names.contains(&"libc6"));
    // Every locked package is the archive's candidate.
    for p in &l.packages {
        assert_eq!(index.candidate(p.name.as_str()).unwrap().version, p.version);
    }
    eprintln!(
        "red+black closure: {} packages: {}",
        names.len(),
        names.join(" ")
    );
}
