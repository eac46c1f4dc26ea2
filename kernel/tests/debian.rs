//! Integration test against Debian's kernel package (network: the host's
//! apt sources only): lock, fetch and index the current kernel, resolve real
//! drivers. It needs `apt-get` (package `apt`); without it it skips loudly.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use components::deb::{Deb, EntryKind};
use components::{fetch, lock, AptContext, Cache, LockRequest};
use kernel::KernelTree;

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

/// A private apt of its own: the `components` tests' one may be in use.
fn test_root() -> PathBuf {
    components::cache::user_cache_dir()
        .unwrap_or_else(|| std::env::temp_dir().join("appliance-cache"))
        .join("apt-test-kernel")
}

/// One private apt per test process, updated once.
fn ctx() -> &'static AptContext {
    static CTX: OnceLock<AptContext> = OnceLock::new();
    CTX.get_or_init(|| {
        let c = AptContext::new(&test_root()).expect("private apt");
        let t = Instant::now();
        c.update().expect("apt-get update into private state");
        eprintln!("FIGURE: private apt-get update: {:.2?}", t.elapsed());
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

#[test]
fn kernel_package_modules() {
    if !have_apt() {
        return;
    }
    let c = ctx();
    let t = Instant::now();
    let l = lock(&request(&[("kernel", &["linux-image-amd64"])]), c).unwrap();
    eprintln!("FIGURE: lock kernel group: {:.2?}", t.elapsed());
    let image = l
        .packages
        .iter()
        .find(|p| p.name.as_str().starts_with("linux-image-6.1.0-"))
        .unwrap_or_else(|| panic!("no linux-image-6.1.0-* in {:?}", l.packages));
    assert_eq!(l.packages.len(), 2, "{:?}", l.packages);
    let cache = Cache::default_location().unwrap();
    let t = Instant::now();
    fetch(&l, &cache, c, &mut |e| eprintln!("fetch: {e:?}")).unwrap();
    eprintln!(
        "FIGURE: fetch kernel ({} bytes, maybe cached): {:.2?}",
        image.size,
        t.elapsed()
    );
    let bytes = cache.read(image).unwrap();

    let t = Instant::now();
    let deb = Deb::parse(&bytes).unwrap();
    let tree = KernelTree::from_deb(&deb).unwrap();
    eprintln!(
        "FIGURE: index kernel package ({} modules, modinfo of each): {:.2?}",
        tree.modules().len(),
        t.elapsed()
    );
    assert!(tree.version().starts_with("6.1.0-") && tree.version().ends_with("-amd64"));
    assert!(image.name.as_str().ends_with(tree.version()));
    // bzImage: "MZ" PE stub and "HdrS" at 0x202.
    assert_eq!(&tree.image()[..2], b"MZ");
    assert_eq!(&tree.image()[0x202..0x206], b"HdrS");

    let drivers = [
        "virtio_net",
        "virtio_blk",
        "e1000e",
        "tpm_tis",
        "tpm_crb",
        "esp4",
        "esp6",
    ];
    for d in drivers {
        let r = tree.resolve(&[d]).unwrap();
        eprintln!(
            "driver {d}: builtin={:?} load_order={:?}",
            r.builtin.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
            r.load_order.iter().map(|m| m.as_str()).collect::<Vec<_>>()
        );
        assert!(
            tree.is_builtin(d) || r.load_order.last().map(|m| m.as_str()) == Some(d),
            "{d} must be built in or last in its own order"
        );
    }
    // ESP's AEADs are requested at run time (request_module), not via depends=.
    for algo in [
        "gcm",
        "ghash_clmulni_intel",
        "aesni_intel",
        "chacha20poly1305",
        "authenc",
        "echainiv",
        "seqiv",
        "af_packet",
        "tun",
    ] {
        let r = tree.resolve(&[algo]).unwrap();
        eprintln!(
            "module {algo}: builtin={:?} load_order={:?}",
            r.builtin.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
            r.load_order.iter().map(|m| m.as_str()).collect::<Vec<_>>()
        );
    }
    let t = Instant::now();
    let all = tree.resolve(&drivers).unwrap();
    let files = tree.module_files_from_deb(&deb, &all).unwrap();
    eprintln!(
        "FIGURE: extract {} module files: {:.2?}",
        files.len(),
        t.elapsed()
    );
    assert_eq!(files.len(), all.load_order.len());
    // Dependencies come first.
    for (i, f) in files.iter().enumerate() {
        assert!(f.data.starts_with(b"\x7fELF"), "{}", f.path);
        assert!(f.path.ends_with(".ko"), "{}", f.path);
        for dep in &tree.modules()[&f.name].depends {
            if !tree.is_builtin(dep.as_str()) {
                let pos = all.load_order.iter().position(|m| m == dep).unwrap();
                assert!(pos < i, "{dep} after {}", f.name);
            }
        }
    }
    let err = tree.resolve(&["virtio-nett"]).unwrap_err().to_string();
    assert!(
        err.contains("virtio-nett") && err.contains("virtio_net"),
        "{err}"
    );

    // The whole data member in memory, for comparison.
    let t = Instant::now();
    let entries = deb.data_entries().unwrap();
    eprintln!(
        "FIGURE: full in-memory extraction of the kernel package ({} entries, {} bytes): {:.2?}",
        entries.len(),
        entries
            .iter()
            .map(|e| match &e.kind {
                EntryKind::File { data, .. } => data.len(),
                _ => 0,
            })
            .sum::<usize>(),
        t.elapsed()
    );
    assert!(
        !entries.iter().any(|e| e.path.ends_with("/modules.dep")),
        "modules.dep is not shipped"
    );
    let tree2 = KernelTree::from_entries(&entries).unwrap();
    assert_eq!(tree2, tree);
    assert_eq!(
        tree2.module_files_from_entries(&entries, &all).unwrap(),
        files
    );
}
