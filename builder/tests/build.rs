//! The image pipeline end to end: a fresh lock (never the committed one: the
//! archive moves), two builds that must be bit-identical, the image checked
//! by `sgdisk` and `fsck.fat`, a QEMU boot (OVMF + swtpm, TCG) to
//! `appliance: ready`, and the bad inputs of the issue.
//!
//! Needs the static gateway binaries (`scripts/build-gateway-bins`, which
//! `scripts/test` runs first) and Debian's archive through the host's apt sources.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use builder::{build, lock_profile, BuildError, BuildOptions};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cache() -> PathBuf {
    std::env::var_os("APPLIANCE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| components::cache::user_cache_dir().expect("HOME is set"))
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

/// A private copy of the lab profile and its base, with a fresh lock.
struct Fixture {
    _dir: tempfile::TempDir,
    profile: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let profile = testbed::lab::copy_lab_profile(&root(), dir.path()).unwrap();
        lock_profile(&profile, &cache()).expect("lock the lab profile");
        Fixture { _dir: dir, profile }
    })
}

fn opts(profile: &Path, out: &Path) -> BuildOptions {
    BuildOptions {
        profile: profile.to_path_buf(),
        out: out.to_path_buf(),
        qcow2: Some(false),
        cache_dir: cache(),
        bin_dir: bin_dir(),
        compression: None,
        lock: builder::LockPolicy::default(),
        signing_key: None,
        secure_boot: None,
    }
}

fn built() -> &'static (
    tempfile::TempDir,
    builder::BuildOutput,
    builder::BuildOutput,
) {
    static B: OnceLock<(
        tempfile::TempDir,
        builder::BuildOutput,
        builder::BuildOutput,
    )> = OnceLock::new();
    B.get_or_init(|| {
        let f = fixture();
        let out = tempfile::tempdir().unwrap();
        let a = build(&opts(&f.profile, &out.path().join("a")), &mut |_| {}).expect("first build");
        let b = build(&opts(&f.profile, &out.path().join("b")), &mut |_| {}).expect("second build");
        (out, a, b)
    })
}

fn tool(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn two_builds_are_bit_identical() {
    let (_, a, b) = built();
    assert_eq!(a.manifest, b.manifest);
    let da = std::fs::read(a.out.join("disk.img")).unwrap();
    let db = std::fs::read(b.out.join("disk.img")).unwrap();
    assert!(da == db, "disk.img differs between two builds");
    let ma = std::fs::read(a.out.join("manifest.json")).unwrap();
    assert_eq!(ma, std::fs::read(b.out.join("manifest.json")).unwrap());
    // The manifest lists what it should.
    let m = &a.manifest;
    assert_eq!(m.profile.name, "gw-a");
    assert!(m.components.iter().any(|c| c.name == "systemd-boot-efi"));
    assert!(m
        .components
        .iter()
        .any(|c| c.group == "red" && c.name == "dnsmasq-base"));
    assert!(m
        .kernel
        .modules
        .iter()
        .any(|p| p.ends_with("/virtio_net.ko")));
    assert!(m
        .uki
        .cmdline
        .contains(&format!("appliance.plan={}", m.plan.sha256)));
    let names: Vec<&str> = m.uki.sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, [".osrel", ".cmdline", ".uname", ".linux", ".initrd"]);
    assert_eq!(m.outputs["disk.img"], m.disk.sha256);
    assert_eq!(m.disk.partitions[0].name, "ESP");
}

#[test]
fn sgdisk_and_fsck_fat_accept_the_image() {
    let (_, a, _) = built();
    let disk = a.out.join("disk.img");
    if !tool("sgdisk") || !tool("fsck.fat") {
        panic!("sgdisk and fsck.fat are needed: apt-get install gdisk dosfstools (scripts/test installs them)");
    }
    let o = Command::new("sgdisk")
        .arg("-v")
        .arg(&disk)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("No problems found"),
        "sgdisk -v: {text}"
    );
    let bytes = std::fs::read(&disk).unwrap();
    check_esp(a, &bytes);
}

/// The ESP of `image` (a disk holding `a`'s build): `fsck.fat -n` accepts
/// it, and it holds systemd-boot as the firmware's default boot path, its
/// locked-down loader.conf, and the UKI under its versioned name, identical
/// to bootx64.efi and uki.efi. Returns its files' paths.
fn check_esp(a: &builder::BuildOutput, image: &[u8]) -> Vec<String> {
    let esp = &a.manifest.disk.partitions[0];
    let part = &image[(esp.first_lba * 512) as usize..((esp.last_lba + 1) * 512) as usize];
    let dir = tempfile::tempdir().unwrap();
    let esp_img = dir.path().join("esp.img");
    std::fs::write(&esp_img, part).unwrap();
    let o = Command::new("fsck.fat")
        .arg("-n")
        .arg(&esp_img)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "fsck.fat -n: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let vol = images::fat::FatVolume::parse(part).unwrap();
    let uki = std::fs::read(a.out.join("uki.efi")).unwrap();
    let loader = std::fs::read(a.out.join("bootx64.efi")).unwrap();
    let m = &a.manifest;
    let bl = m
        .boot_loader
        .as_ref()
        .expect("a boot loader in the manifest");
    assert_eq!(bl.path, "EFI/BOOT/BOOTX64.EFI");
    assert_eq!(
        bl.uki_path,
        format!("EFI/Linux/{}_{}.efi", m.profile.name, m.profile.version)
    );
    assert!(
        bl.package.starts_with("systemd-boot-efi "),
        "{}",
        bl.package
    );
    assert!(vol.read_file(&bl.uki_path).unwrap() == uki, "the UKI");
    assert!(vol.read_file(&bl.path).unwrap() == loader, "systemd-boot");
    // systemd-boot itself, from the lock: its PE names it.
    assert!(loader.windows(11).any(|w| w == b"systemd-boo"));
    let conf = String::from_utf8(vol.read_file("loader/loader.conf").unwrap()).unwrap();
    for line in [
        "timeout 0",
        "editor no",
        "auto-entries no",
        "auto-firmware no",
    ] {
        assert!(
            conf.lines().any(|l| l == line),
            "loader.conf: no {line:?}:\n{conf}"
        );
    }
    vol.list()
        .unwrap()
        .into_iter()
        .filter(|e| !e.is_dir)
        .map(|e| e.path)
        .collect()
}

/// A loop device over a file, detached when dropped.
struct Loop {
    dev: String,
}

impl Loop {
    fn over(file: &Path) -> Loop {
        let o = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .expect("losetup (util-linux) runs");
        assert!(
            o.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Loop {
            dev: String::from_utf8_lossy(&o.stdout).trim().to_string(),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// The block map beside the image lets Debian's bmaptool flash it onto a
/// used device — one full of old bytes, and larger than the image — and what
/// lands there is a disk whose GPT, ESP and files all check, although
/// bmaptool wrote only the mapped blocks. The bmap's digest is in the
/// manifest, and no detached signature sits beside it (bmaptool 3.6 would
/// find one and abort).
#[test]
fn bmaptool_copy_onto_a_used_device_gives_a_disk_that_checks() {
    use sha2::Digest as _;
    let (_, a, _) = built();
    if !tool("bmaptool") || !tool("losetup") || !tool("fsck.fat") {
        panic!("bmaptool, losetup and fsck.fat are needed: apt-get install bmap-tools util-linux dosfstools (scripts/test installs them)");
    }
    let disk = a.out.join("disk.img");
    let bmap = a.out.join("disk.img.bmap");
    let text = std::fs::read(&bmap).expect("disk.img.bmap beside disk.img");
    assert_eq!(
        a.manifest.outputs["disk.img.bmap"],
        hex::encode(sha2::Sha256::digest(&text))
    );
    for sig in ["disk.img.bmap.sig", "disk.img.bmap.asc", "disk.img.sig"] {
        assert!(!a.out.join(sig).exists(), "{sig}");
    }
    let text = String::from_utf8(text).unwrap();
    let size = a.manifest.disk.size;
    assert!(text.contains(&format!("<ImageSize> {size} </ImageSize>")));
    // A used device, 8 MiB larger than the image, full of old bytes.
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("device.img");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&backing).unwrap();
        let junk: Vec<u8> = (0..1u32 << 20).map(|i| (i * 131 + 7) as u8).collect();
        for _ in 0..(size >> 20) + 8 {
            f.write_all(&junk).unwrap();
        }
        f.sync_all().unwrap();
    }
    let dev = Loop::over(&backing);
    let o = Command::new("bmaptool")
        .args(["copy", "--bmap"])
        .arg(&bmap)
        .arg(&disk)
        .arg(&dev.dev)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "bmaptool copy: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let mapped: u64 = text
        .split("<MappedBlocksCount> ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        mapped * 4096 < size / 2,
        "{mapped} blocks mapped: the map should leave the free space out"
    );
    // What the device holds now: the GPT the manifest names, an ESP that
    // fsck.fat accepts, the UKIs intact.
    let bytes = std::fs::read(&dev.dev).unwrap();
    let image = &bytes[..size as usize];
    let gpt = images::gpt::read_gpt(&mut std::io::Cursor::new(image)).expect("a GPT on the device");
    assert_eq!(gpt.disk_guid.to_string(), a.manifest.disk.guid);
    // Nothing but what the builder put there: the old bytes in the unmapped
    // (free) clusters are unreachable.
    let files = check_esp(a, image);
    assert_eq!(files.len(), a.manifest.esp.files.len(), "{files:?}");
}

/// The image as `appliance flash` puts it on a used disk 16 MiB larger than
/// itself (a loop device over a sparse file with old bytes at its start,
/// middle and end): the file to boot.
fn flashed_onto_a_used_disk(a: &builder::BuildOutput, dir: &Path) -> PathBuf {
    use std::os::unix::fs::FileExt;
    let size = a.manifest.disk.size;
    let backing = dir.join("flashed.img");
    let f = std::fs::File::create(&backing).unwrap();
    f.set_len(size + (16 << 20)).unwrap();
    let junk: Vec<u8> = (0..1u32 << 20).map(|i| (i * 131 + 7) as u8).collect();
    for at in [0, size / 2, size + (15 << 20)] {
        f.write_all_at(&junk, at).unwrap();
    }
    f.sync_all().unwrap();
    let dev = Loop::over(&backing);
    let bmap = std::fs::read_to_string(a.out.join("disk.img.bmap")).unwrap();
    let release = flash::Release::from_checked_parts(
        a.out.join("disk.img"),
        images::bmap::ParsedBmap::from_xml(&bmap).unwrap(),
        "gw-a".into(),
    )
    .unwrap();
    let r = flash::flash(
        &release,
        Path::new(&dev.dev),
        &flash::Host::system(),
        &flash::Options {
            yes: true,
            max_held_bytes: None,
        },
        &mut |_| {},
        &std::sync::atomic::AtomicBool::new(false),
    )
    .unwrap_or_else(|e| panic!("flash: {e}"));
    eprintln!(
        "flashed {} bytes in {} ranges onto {} in {:.2} s",
        r.written_bytes, r.ranges, dev.dev, r.seconds
    );
    backing
}

/// One boot serves these checks: the image as `appliance flash` wrote it
/// onto a used, larger disk boots to ready; PCRs equal the prediction; the
/// runtime; a personality's death and restart; power-off.
#[test]
fn image_boots_to_ready_in_qemu_with_ovmf_and_swtpm_and_pcrs_equal_the_prediction() {
    use testbed::vm::{Vm, VmConfig};
    let (_, a, _) = built();
    let _q = qemu_lock();
    let dir = tempfile::tempdir().unwrap();
    let disk = flashed_onto_a_used_disk(a, dir.path());
    let mut vm = Vm::start(&VmConfig::new("gw-a", dir.path(), &disk))
        .unwrap_or_else(|e| panic!("{e} (scripts/test installs it)"));
    vm.wait_for(
        "`appliance: ready gw-a 0.1.0`",
        Duration::from_secs(180),
        |l| l.contains("appliance: ready gw-a 0.1.0"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("boot to ready: {:.1} s (TCG)", vm.elapsed().as_secs_f64());
    assert!(vm.lines().iter().any(|l| l.contains(&format!(
        "policy /etc/appliance/policy.bin sha256 {}",
        a.manifest.policy.sha256
    ))));
    // The lab pair is keyed by IKE: the image carries the IKE process, which the
    // init starts next to the Viaduct, confined, with the policy's one peer; no
    // manual key, so nothing goes to the TPM's key-use ledger.
    let lines = vm.lines();
    for want in ["ike| viaduct-ike: confined", "ike| viaduct-ike: 1 peer(s)"] {
        assert!(
            lines.iter().any(|l| l.contains(want)),
            "no `{want}` line:\n{}",
            lines.join("\n")
        );
    }
    assert!(!lines.iter().any(|l| l.contains("key-use ledger")));
    assert!(a.manifest.binaries.contains_key("viaduct-ike"));
    // Each personality's cgroup limits are set in the kernel (cgroup2, memory and pids
    // controllers), from the profile.
    for side in ["red", "black"] {
        assert!(
            vm.lines().iter().any(|l| l.contains(&format!(
                "appliance: {side}: cgroup /sys/fs/cgroup/appliance-{side} memory.max "
            )) && l.contains(" pids.max ")),
            "{side}: no cgroup limits applied"
        );
    }
    // The TPM's PCRs equal the prediction in the manifest (Secure Boot off).
    let pcrs = vm.pcrs();
    let p = &a.manifest.pcrs;
    eprintln!("pcr  predicted (manifest)                                            booted (TPM)");
    for (n, want) in [
        (4, &p.pcr4),
        (7, &p.pcr7_secure_boot_off),
        (11, &p.pcr11),
        (12, &p.pcr12),
    ] {
        eprintln!(
            "{n:<4} {want} {}",
            pcrs.get(&n).map(String::as_str).unwrap_or("-")
        );
        assert_eq!(
            pcrs.get(&n),
            Some(want),
            "PCR {n}: booted value differs from the prediction"
        );
    }
    // The firmware's event log, replayed by our parser, gives the same values.
    let log = vm
        .eventlog()
        .expect("the init exported an intact event log");
    let replay = signing::eventlog::EventLog::parse(&log)
        .unwrap()
        .replay_sha256()
        .unwrap();
    for n in [4, 7, 11, 12] {
        assert_eq!(
            Some(&hex::encode(replay[&n])),
            pcrs.get(&n),
            "PCR {n}: event log replay"
        );
    }
    // The runtime: each NIC moved into its personality, both personalities and the
    // Viaduct up, cgroup limits from the profile, dnsmasq running in red.
    let seen = |vm: &testbed::vm::Vm, needle: &str| vm.lines().iter().any(|l| l.contains(needle));
    for needle in [
        "pci 0000:00:02.0, driver virtio_net",
        "moved into the red namespace as lan",
        "pci 0000:00:03.0, driver virtio_net",
        "moved into the black namespace as wan",
        "appliance: init namespace: no NIC left (only lo)",
        "appliance: red: setup done",
        "appliance: red: service dnsmasq started",
        "appliance: red: up",
        "appliance: black: setup done",
        "appliance: black: up",
        "loaded, 2 tunnel(s); pumping",
        "cgroup /sys/fs/cgroup/appliance-red memory.max 268435456 pids.max 256",
        "cgroup /sys/fs/cgroup/appliance-black memory.max 134217728 pids.max 128",
    ] {
        assert!(
            seen(&vm, needle),
            "no console line with {needle:?}:\n{}",
            vm.tail(80)
        );
    }
    for l in vm.lines().iter().filter(|l| l.contains("landlock")) {
        eprintln!("{l}");
    }
    // Fault: black dies; the init logs it and restarts it; the Viaduct stays up.
    let _ = vm.wait_for("nothing", Duration::from_secs(3), |_| false);
    assert!(
        !seen(&vm, "service dnsmasq exited"),
        "dnsmasq died:\n{}",
        vm.tail(80)
    );
    let first = vm
        .lines()
        .iter()
        .find_map(|l| {
            l.split("appliance: black: started (pid ")
                .nth(1)
                .map(|r| r.trim_end_matches(')').to_owned())
        })
        .expect("black's pid");
    let viaduct = vm
        .lines()
        .iter()
        .find_map(|l| {
            l.split("appliance: viaduct: started (pid ")
                .nth(1)
                .map(|r| r.trim_end_matches(')').to_owned())
        })
        .expect("the Viaduct's pid");
    vm.send_line("kill black").unwrap();
    vm.wait_for("black's death logged", Duration::from_secs(30), |l| {
        l.contains("appliance: black exited (killed by signal 9)") && l.contains("restarting in 1s")
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let killed = vm.elapsed();
    let second = vm
        .wait_for("black restarted", Duration::from_secs(60), |l| {
            l.contains("appliance: black: started (pid ") && !l.contains(&format!("(pid {first})"))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let second = second
        .rsplit("(pid ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_owned();
    // The restarted black reports `up` a second time.
    let ups = std::cell::Cell::new(0);
    vm.wait_for("black up again", Duration::from_secs(60), |l| {
        if l.contains("appliance: black: up") {
            ups.set(ups.get() + 1);
        }
        ups.get() >= 2
    })
    .unwrap_or_else(|e| panic!("{e}"));
    vm.send_line("status").unwrap();
    vm.wait_for("status of black", Duration::from_secs(30), |l| {
        l.contains(&format!("status black up pid {second}"))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "black killed and back up in {:.1} s (TCG)",
        (vm.elapsed() - killed).as_secs_f64()
    );
    // The Viaduct kept running (same pid) while black was down.
    vm.wait_for("the Viaduct still up", Duration::from_secs(10), |l| {
        l.contains(&format!("status viaduct up pid {viaduct} "))
    })
    .unwrap_or_else(|e| panic!("the Viaduct was restarted or is down: {e}"));
    // Clean shutdown from the console.
    vm.send_line("poweroff").unwrap();
    let status = vm.wait_exit(Duration::from_secs(60));
    match status {
        Some(s) => assert!(s.success(), "qemu exited with {s}"),
        None => panic!("no power-off within 60 s; last lines:\n{}", vm.tail(50)),
    }
    assert!(vm.lines().iter().any(|l| l.contains("appliance: poweroff")));
}

fn locked(mut o: BuildOptions) -> BuildOptions {
    o.lock.locked = true;
    o
}

#[test]
fn missing_lock_is_refused_with_locked_and_created_without() {
    let dir = tempfile::tempdir().unwrap();
    let profile = testbed::lab::copy_lab_profile(&root(), dir.path()).unwrap();
    let out = dir.path().join("out");
    let err = build(&locked(opts(&profile, &out)), &mut |_| {}).unwrap_err();
    assert!(matches!(err, BuildError::MissingLock { .. }), "{err}");
    assert!(err.to_string().contains("without --locked"), "{err}");
    assert!(!out.exists());
    assert!(!profile.with_extension("lock").exists());
    // A plain build creates the lock, and it pins exactly what was built.
    let mut events = Vec::new();
    let built = build(&opts(&profile, &out), &mut |p| {
        if let builder::Progress::LockMoves { created, .. } = p {
            events.push(created);
        }
    })
    .unwrap();
    assert_eq!(events, [true]);
    assert_eq!(built.lock_written.as_deref(), Some(&[][..]));
    let lock = components::Lock::load(&profile.with_extension("lock")).unwrap();
    assert_eq!(lock.digest().to_hex(), built.manifest.lock.sha256);
    // Unchanged archive: the next build keeps the lock byte for byte.
    let text = std::fs::read(profile.with_extension("lock")).unwrap();
    let again = build(&opts(&profile, &out), &mut |_| {}).unwrap();
    assert!(again.lock_written.is_none());
    assert_eq!(std::fs::read(profile.with_extension("lock")).unwrap(), text);
    assert_eq!(again.manifest, built.manifest);
}

/// A copy of the fixture whose lock or profile a test edits.
fn edited_copy(
    edit_lock: impl FnOnce(String) -> String,
    edit_profile: impl FnOnce(String) -> String,
) -> (tempfile::TempDir, PathBuf) {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let profile = testbed::lab::copy_lab_profile(&root(), dir.path()).unwrap();
    std::fs::write(
        &profile,
        edit_profile(std::fs::read_to_string(&f.profile).unwrap()),
    )
    .unwrap();
    let lock = std::fs::read_to_string(f.profile.with_extension("lock")).unwrap();
    std::fs::write(profile.with_extension("lock"), edit_lock(lock)).unwrap();
    (dir, profile)
}

/// The fixture's lock with busybox-static pinned at a version the archive
/// does not have.
fn stale(lock: String) -> String {
    let start = lock
        .find("name = \"busybox-static\"")
        .expect("busybox-static locked");
    let vstart = start + lock[start..].find("version = \"").unwrap() + "version = \"".len();
    let vend = vstart + lock[vstart..].find('"').unwrap();
    format!("{}9.9.9-1{}", &lock[..vstart], &lock[vend..])
}

/// An empty package store (a package already in the store is verified by its
/// SHA-256 alone; the archive is asked only for what must be downloaded),
/// sharing the private apt state.
fn empty_package_store(dir: &Path) -> PathBuf {
    let fresh = dir.join("cache");
    std::fs::create_dir_all(fresh.join("debs")).unwrap();
    std::os::unix::fs::symlink(cache().join("apt"), fresh.join("apt")).unwrap();
    std::os::unix::fs::symlink(cache().join("parts"), fresh.join("parts")).unwrap();
    fresh
}

#[test]
fn stale_lock_with_locked_names_the_packages_and_both_ways_forward() {
    let (dir, profile) = edited_copy(stale, |p| p);
    let before = std::fs::read(profile.with_extension("lock")).unwrap();
    let mut o = locked(opts(&profile, &dir.path().join("out")));
    o.cache_dir = empty_package_store(dir.path());
    let err = build(&o, &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, BuildError::LockedVersionsGone { .. }),
        "{msg}"
    );
    for needle in [
        "busybox-static 9.9.9-1",
        "gw-a.lock",
        "without --locked",
        "--snapshot https://snapshot.debian.org/archive/debian/",
        "--snapshot https://snapshot.debian.org/archive/debian-security/",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing: {msg}");
    }
    assert_eq!(msg.matches("9.9.9-1").count(), 1, "{msg}");
    assert_eq!(
        std::fs::read(profile.with_extension("lock")).unwrap(),
        before
    );
    assert!(!dir.path().join("out").exists());
}

#[test]
fn stale_lock_moves_forward_visibly_in_a_plain_build() {
    let (dir, profile) = edited_copy(stale, |p| p);
    let real = fixture_lock()
        .package("busybox-static")
        .unwrap()
        .version
        .to_string();
    let mut changes = Vec::new();
    let built = build(&opts(&profile, &dir.path().join("out")), &mut |p| {
        if let builder::Progress::LockMoves { changes: c, .. } = p {
            changes.extend(c);
        }
    })
    .unwrap();
    assert_eq!(
        changes.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [format!("busybox-static 9.9.9-1 → {real}")]
    );
    let lock = components::Lock::load(&profile.with_extension("lock")).unwrap();
    assert_eq!(
        lock.package("busybox-static").unwrap().version.to_string(),
        real
    );
    assert_eq!(lock.digest().to_hex(), built.manifest.lock.sha256);
    assert_eq!(lock, fixture_lock());
}

fn fixture_lock() -> components::Lock {
    components::Lock::load(&fixture().profile.with_extension("lock")).unwrap()
}

#[test]
fn lock_that_does_not_match_the_profile_is_refused_with_locked_and_moved_without() {
    let (dir, profile) = edited_copy(
        |l| l,
        |p| {
            p.replace(
                "[personalities.red]\n",
                "[personalities.red]\npackages = [\"busybox-static\", \"iproute2\", \"dnsmasq-base\", \"nftables\"]\n",
            )
        },
    );
    let err = build(
        &locked(opts(&profile, &dir.path().join("out"))),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, BuildError::LockMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("nftables") && msg.contains("without --locked"),
        "{msg}"
    );
    let mut changes = Vec::new();
    build(&opts(&profile, &dir.path().join("out")), &mut |p| {
        if let builder::Progress::LockMoves { changes: c, .. } = p {
            changes.extend(c);
        }
    })
    .unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.name == "nftables" && c.old.is_none() && c.new.is_some()),
        "{changes:?}"
    );
    let lock = components::Lock::load(&profile.with_extension("lock")).unwrap();
    assert!(lock
        .group("red")
        .unwrap()
        .roots
        .contains(&"nftables".to_string()));
}

#[test]
fn unknown_driver_names_file_and_line() {
    let (dir, profile) = edited_copy(
        |l| l,
        |p| format!("{p}\n[kernel]\ndrivers = [\"virtio_net\", \"no_such_nic\"]\n"),
    );
    let err = build(&opts(&profile, &dir.path().join("out")), &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BuildError::Driver { .. }), "{msg}");
    let line = std::fs::read_to_string(&profile)
        .unwrap()
        .lines()
        .position(|l| l.contains("no_such_nic"))
        .unwrap()
        + 1;
    assert!(msg.contains(&format!("gw-a.toml:{line}:")), "{msg}");
    assert!(msg.contains("no_such_nic"), "{msg}");
}

#[test]
fn failed_build_leaves_previous_output_intact() {
    let (_, a, _) = built();
    let before = std::fs::read(a.out.join("manifest.json")).unwrap();
    // ESP too small for the UKI and the room an update needs: the build
    // fails late, in the disk stage.
    let (dir, profile) = edited_copy(
        |l| l,
        |p| {
            let e = p.replacen(
                "good_when = \"tunnels-up\"",
                "good_when = \"tunnels-up\"\nesp_size = \"34MiB\"",
                1,
            );
            assert_ne!(e, p, "the lab profile has an [image] table");
            e
        },
    );
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("marker"), b"previous output").unwrap();
    let err = build(&opts(&profile, &out), &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BuildError::EspTooSmall { .. }), "{msg}");
    // Located at the profile's esp_size, with the size this image needs.
    let line = std::fs::read_to_string(&profile)
        .unwrap()
        .lines()
        .position(|l| l.contains("esp_size = \"34MiB\""))
        .unwrap()
        + 1;
    assert!(msg.contains(&format!("gw-a.toml:{line}:")), "{msg}");
    assert!(
        msg.contains("image.esp_size: 34 MiB") && msg.contains("room for an update's UKI"),
        "{msg}"
    );
    let needed: u64 = msg
        .split("esp_size = \"")
        .nth(1)
        .and_then(|r| r.split("MiB").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in {msg}"));
    assert!(needed * (1 << 20) >= 2 * a.manifest.uki.size, "{msg}");
    // The size it names is enough.
    let text = std::fs::read_to_string(&profile).unwrap();
    std::fs::write(
        &profile,
        text.replace(
            "esp_size = \"34MiB\"",
            &format!("esp_size = \"{needed}MiB\""),
        ),
    )
    .unwrap();
    build(&opts(&profile, &dir.path().join("fits")), &mut |_| {}).expect("the named ESP size fits");
    assert_eq!(
        std::fs::read(out.join("marker")).unwrap(),
        b"previous output"
    );
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .count(),
        0,
        "temporary directory left behind"
    );
    assert_eq!(std::fs::read(a.out.join("manifest.json")).unwrap(), before);
}

#[test]
fn unwritable_output_is_a_clear_error() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = build(&opts(&f.profile, &file.join("out")), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn dynamic_gateway_binary_is_refused() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/ls", dir.path().join("gateway-init")).unwrap();
    let mut o = opts(&f.profile, &dir.path().join("out"));
    o.bin_dir = dir.path().to_path_buf();
    let err = build(&o, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("dynamically linked"), "{err}");
}

#[test]
fn missing_viaduct_is_refused_with_the_command_to_run() {
    let (dir, profile) = edited_copy(|l| l, |p| p);
    let bins = dir.path().join("bin");
    std::fs::create_dir(&bins).unwrap();
    std::fs::copy(bin_dir().join("gateway-init"), bins.join("gateway-init")).unwrap();
    let mut o = opts(&profile, &dir.path().join("out"));
    o.bin_dir = bins;
    let err = build(&o, &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BuildError::Binary(_)), "{msg}");
    assert!(
        msg.contains("viaduct") && msg.contains("scripts/build-gateway-bins"),
        "{msg}"
    );
    assert!(!dir.path().join("out").exists());
}

#[test]
fn forbidden_capability_fails_the_build_naming_the_field() {
    // Refused with the profile, before any package or binary is looked at.
    let dir = tempfile::tempdir().unwrap();
    let profile = testbed::lab::copy_lab_profile(&root(), dir.path()).unwrap();
    let base = dir.path().join("base/gateway.toml");
    let text = std::fs::read_to_string(&base).unwrap();
    assert!(text.contains("capabilities = [\"CAP_NET_ADMIN\","));
    std::fs::write(
        &base,
        text.replace(
            "capabilities = [\"CAP_NET_ADMIN\",",
            "capabilities = [\"CAP_SYS_PTRACE\", \"CAP_NET_ADMIN\",",
        ),
    )
    .unwrap();
    let o = BuildOptions {
        profile: profile.clone(),
        out: dir.path().join("out"),
        qcow2: Some(false),
        cache_dir: dir.path().join("cache"),
        bin_dir: dir.path().join("no-bins"),
        compression: None,
        lock: builder::LockPolicy::default(),
        signing_key: None,
        secure_boot: None,
    };
    let err = build(&o, &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("personalities.red.services[0].capabilities[0]")
            && msg.contains("CAP_SYS_PTRACE"),
        "{msg}"
    );
    assert!(!dir.path().join("out").exists());
}

/// Every entry of the initramfs (compressed newc segments), as the kernel
/// unpacks it: a later entry replaces an earlier one of the same path.
/// Values: (mode, nlink, data).
fn initramfs_entries(initrd: &[u8]) -> std::collections::BTreeMap<String, (u32, Vec<u8>)> {
    initramfs_records(initrd)
        .into_iter()
        .map(|(name, mode, _, data)| (name, (mode, data)))
        .collect()
}

/// Every record of every segment, in order: (path, mode, nlink, data).
fn initramfs_records(initrd: &[u8]) -> Vec<(String, u32, u32, Vec<u8>)> {
    let segs = images::initramfs::segments(initrd).expect("the kernel can unpack the initramfs");
    let mut out = Vec::new();
    for seg in &segs {
        for r in images::cpio::parse_newc(&seg.archive).unwrap() {
            out.push((r.path(), r.mode, r.nlink, r.data.to_vec()));
        }
    }
    out
}

#[test]
fn initramfs_holds_the_viaduct_the_plan_and_each_personalitys_setup() {
    let (_, a, _) = built();
    assert!(a.manifest.binaries.contains_key("viaduct"));
    let uki = std::fs::read(a.out.join("uki.efi")).unwrap();
    let pe = images::pe::PeFile::parse(&uki).unwrap();
    let initrd = pe.memory_data(pe.section(".initrd").unwrap());
    let e = initramfs_entries(&initrd);
    // Every segment is compressed as the builder says.
    for seg in images::initramfs::segments(&initrd).unwrap() {
        assert_eq!(
            std::mem::discriminant(&seg.compression),
            std::mem::discriminant(&builder::COMPRESSION),
            "segment at {}",
            seg.offset
        );
    }
    let file = |p: &str| -> (u32, String) {
        let (mode, data) = e
            .get(p)
            .unwrap_or_else(|| panic!("{p} is not in the initramfs"));
        (*mode, String::from_utf8_lossy(data).into_owned())
    };
    assert_eq!(file("usr/sbin/viaduct").0, 0o100755);
    let plan = gateway_plan::Plan::decode(e["etc/appliance/plan"].1.as_slice()).unwrap();
    assert_eq!(plan.digest().to_hex(), a.manifest.plan.sha256);
    assert_eq!(plan.viaduct.as_str(), "/usr/sbin/viaduct");
    assert_eq!(plan.compartments.len(), 2);
    for (side, nic) in [("red", "lan"), ("black", "wan")] {
        let r = format!("personalities/{side}");
        let (mode, script) = file(&format!("{r}/etc/appliance/network"));
        assert_eq!(mode, 0o100555, "{side}");
        assert!(script.starts_with("#!/bin/sh\n"), "{script}");
        assert!(
            script.contains(&format!("\n/bin/ip link set {nic} up\n")),
            "{script}"
        );
        // busybox-static ships no /bin/sh, no accounts: the builder adds them.
        assert_eq!(file(&format!("{r}/bin/sh")), (0o120777, "busybox".into()));
        assert_eq!(file(&format!("{r}/bin/busybox")).0 & 0o170000, 0o100000);
        assert!(file(&format!("{r}/etc/passwd"))
            .1
            .contains("nobody:x:65534:65534:"));
        assert!(file(&format!("{r}/etc/group"))
            .1
            .contains("nogroup:x:65534:"));
        assert_eq!(
            file(&format!("{r}/etc/hostname")).1,
            format!("gw-a-{side}\n")
        );
        for (d, mode) in [
            ("dev", 0o755),
            ("proc", 0o755),
            ("run", 0o755),
            ("tmp", 0o1777),
        ] {
            assert_eq!(file(&format!("{r}/{d}")).0, 0o040000 | mode, "{r}/{d}");
        }
    }
    assert!(file("personalities/black/etc/appliance/network")
        .1
        .contains(" || /bin/ip rule add pref 90 iif wan ipproto 50 lookup 90\n"));
    assert!(file("personalities/red/etc/dnsmasq.conf")
        .1
        .contains("\nuser=nobody\n"));
}

/// The personalities' common files are stored once in the compressed image
/// but are separate files (separate inodes) when unpacked: a shared inode
/// would let red and black signal each other through file locks or inotify.
#[test]
fn personalities_share_no_inode_and_identical_files_are_stored_once() {
    let (_, a, _) = built();
    let uki = std::fs::read(a.out.join("uki.efi")).unwrap();
    let pe = images::pe::PeFile::parse(&uki).unwrap();
    let initrd = pe.memory_data(pe.section(".initrd").unwrap());
    let records = initramfs_records(&initrd);
    for (path, mode, nlink, _) in &records {
        if mode & 0o170000 != 0o040000 {
            assert_eq!(*nlink, 1, "{path} has {nlink} links");
        }
    }
    // libc is in both roots, byte for byte, as two entries.
    let libc = |side: &str| {
        records
            .iter()
            .filter(|(p, ..)| {
                p.starts_with(&format!("personalities/{side}/")) && p.ends_with("/libc.so.6")
            })
            .map(|(.., d)| d.clone())
            .next()
            .unwrap_or_else(|| panic!("no libc.so.6 in {side}"))
    };
    assert!(libc("red").len() > 1_000_000);
    assert_eq!(libc("red"), libc("black"));
    // Stored once: the personalities' segment costs about what red's files
    // alone cost. Compressed executables and libraries keep about a third of
    // their size; with black's copies stored again the segment would be
    // larger than 40 % of the bytes that are not copies.
    let segs = images::initramfs::segments(&initrd).unwrap();
    let seg = segs
        .iter()
        .max_by_key(|s| s.archive.len())
        .expect("segments");
    let common: u64 = records
        .iter()
        .filter_map(|(p, ..)| p.strip_prefix("personalities/black/"))
        .filter_map(|rel| {
            let red = records
                .iter()
                .find(|(q, ..)| q == &format!("personalities/red/{rel}"))?;
            let black = records
                .iter()
                .find(|(q, ..)| q == &format!("personalities/black/{rel}"))?;
            (red.3 == black.3).then_some(black.3.len() as u64)
        })
        .sum();
    let unique = seg.archive.len() as u64 - common;
    eprintln!(
        "personalities segment: {} bytes unpacked, {common} of them copies, {} stored",
        seg.archive.len(),
        seg.stored_len
    );
    assert!(common > 10_000_000, "black shares {common} bytes with red");
    assert!(
        seg.stored_len * 10 < unique * 4,
        "the {common} bytes of copies seem stored twice: {} stored for {unique} unique bytes",
        seg.stored_len
    );
}

/// QEMU boots in this file run one at a time (2 cores, TCG).
fn qemu_lock() -> std::sync::MutexGuard<'static, ()> {
    static L: std::sync::Mutex<()> = std::sync::Mutex::new(());
    L.lock().unwrap_or_else(|e| e.into_inner())
}

/// An image signed for Secure Boot with a fresh RSA key, and an OVMF
/// variable store with its certificate enrolled.
struct SecureBootFixture {
    _dir: tempfile::TempDir,
    out: builder::BuildOutput,
    vars: PathBuf,
    cert: PathBuf,
}

fn secure_boot_fixture() -> &'static SecureBootFixture {
    static F: OnceLock<SecureBootFixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("sb.key"), dir.path().join("sb.crt"));
        let o = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=builder test Secure Boot",
                "-days",
                "3650",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl is needed: apt-get install openssl");
        assert!(
            o.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let signer = builder::secure_boot::CertSigner::load(&key, &cert).unwrap();
        let vars = secureboot::varstore::enroll(
            &std::fs::read(testbed::vm::OVMF_VARS).expect("OVMF is needed: apt-get install ovmf"),
            signer.certificate().der(),
            builder::secure_boot::OWNER,
        )
        .unwrap();
        let vars_path = dir.path().join("vars-enrolled.fd");
        std::fs::write(&vars_path, vars).unwrap();
        let mut o = opts(&fixture().profile, &dir.path().join("out"));
        o.secure_boot = Some(std::sync::Arc::new(signer));
        let out = build(&o, &mut |_| {}).expect("signed build");
        SecureBootFixture {
            _dir: dir,
            out,
            vars: vars_path,
            cert,
        }
    })
}

#[test]
fn secure_boot_signed_uki_passes_sbverify_and_predicts_both_states() {
    let f = secure_boot_fixture();
    let o = Command::new("sbverify")
        .arg("--cert")
        .arg(&f.cert)
        .arg(f.out.out.join("uki.efi"))
        .output()
        .expect("sbverify is needed: apt-get install sbsigntool");
    assert!(
        o.status.success(),
        "sbverify: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let m = &f.out.manifest;
    let sb = m.secure_boot.as_ref().expect("signer recorded");
    assert_eq!(sb.subject, "CN=builder test Secure Boot");
    assert!(m.pcrs.pcr4_secure_boot_on.is_some() && m.pcrs.pcr7_secure_boot_on.is_some());
    // Signing does not change what firmware measures for the image itself.
    let (_, unsigned, _) = built();
    assert_eq!(
        m.uki.authenticode_sha256,
        unsigned.manifest.uki.authenticode_sha256
    );
    assert_eq!(m.pcrs.pcr11, unsigned.manifest.pcrs.pcr11);
    assert_eq!(m.pcrs.pcr12, unsigned.manifest.pcrs.pcr12);
    // PCR 4 also holds systemd-boot's digest, and signing pads it to the
    // 8-byte boundary the certificate table needs: that digest changes,
    // the UKI's does not.
    let events = |m: &builder::manifest::Manifest| {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(if std::ptr::eq(m, &unsigned.manifest) {
                unsigned.out.join("reference-values.json")
            } else {
                f.out.out.join("reference-values.json")
            })
            .unwrap(),
        )
        .unwrap();
        v["prediction"]["pcr4"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["sha256"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let (signed4, unsigned4) = (events(m), events(&unsigned.manifest));
    assert_eq!(
        signed4.len(),
        5,
        "action, separator, systemd-boot, UKI, kernel"
    );
    assert_eq!(signed4[3], m.uki.authenticode_sha256);
    assert_eq!(signed4[3], unsigned4[3]);
    assert_eq!(
        signed4[2],
        m.boot_loader.as_ref().unwrap().authenticode_sha256
    );
}

#[test]
fn signed_image_boots_with_secure_boot_enforced_and_pcrs_equal_the_prediction() {
    use testbed::vm::{Vm, VmConfig};
    let f = secure_boot_fixture();
    let _q = qemu_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = VmConfig::new("gw-a-sb", dir.path(), &f.out.out.join("disk.img"));
    cfg.secure_boot = true;
    cfg.vars = Some(f.vars.clone());
    let mut vm = Vm::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
    vm.wait_for(
        "`appliance: ready gw-a 0.1.0`",
        Duration::from_secs(180),
        |l| l.contains("appliance: ready gw-a 0.1.0"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "boot to ready with Secure Boot: {:.1} s (TCG)",
        vm.elapsed().as_secs_f64()
    );
    let pcrs = vm.pcrs();
    let p = &f.out.manifest.pcrs;
    for (n, want) in [
        (4, p.pcr4_secure_boot_on.as_ref().unwrap()),
        (7, p.pcr7_secure_boot_on.as_ref().unwrap()),
        (11, &p.pcr11),
        (12, p.pcr12_secure_boot_on.as_ref().unwrap()),
    ] {
        eprintln!(
            "pcr {n:<2} predicted {want} booted {}",
            pcrs.get(&n).map(String::as_str).unwrap_or("-")
        );
        assert_eq!(pcrs.get(&n), Some(want), "PCR {n} with Secure Boot on");
    }
    let log = signing::eventlog::EventLog::parse(&vm.eventlog().expect("event log")).unwrap();
    // The firmware really enforced Secure Boot: SecureBoot=1 and the db
    // authority that verified the UKI are in the log.
    let p7: Vec<_> = log.events_of(7).collect();
    assert_eq!(p7[0].describe(), "SecureBoot");
    assert_eq!(p7[0].data.last(), Some(&1u8), "SecureBoot variable is 1");
    assert!(p7
        .iter()
        .any(|e| e.event_type == signing::eventlog::EV_EFI_VARIABLE_AUTHORITY));
    let replay = log.replay_sha256().unwrap();
    for n in [4, 7, 11] {
        assert_eq!(
            Some(&hex::encode(replay[&n])),
            pcrs.get(&n),
            "PCR {n}: event log replay"
        );
    }
    vm.send_line("poweroff").unwrap();
    assert!(vm
        .wait_exit(Duration::from_secs(60))
        .is_some_and(|s| s.success()));
}

/// Flip one character of the kernel command line in every UKI copy on the
/// ESP of a copy of `disk`; returns the copy.
fn tampered_copy(disk: &Path, m: &builder::manifest::Manifest, dir: &Path) -> PathBuf {
    use std::io::{Read, Seek, SeekFrom, Write};
    let copy = dir.join("tampered.img");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(disk)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let esp = &m.disk.partitions[0];
    let (start, len) = (esp.first_lba * 512, m.esp.size);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&copy)
        .unwrap();
    let mut bytes = vec![0u8; len as usize];
    f.seek(SeekFrom::Start(start)).unwrap();
    f.read_exact(&mut bytes).unwrap();
    let needle = b"console=ttyS0 panic=-1";
    let mut n = 0;
    let mut i = 0;
    while i + needle.len() <= bytes.len() {
        if &bytes[i..i + needle.len()] == needle {
            bytes[i + needle.len() - 1] = b'2'; // panic=-2
            n += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    assert_eq!(
        n,
        m.esp
            .files
            .keys()
            .filter(|p| p.starts_with("EFI/Linux/"))
            .count(),
        "one command line per UKI on the ESP"
    );
    f.seek(SeekFrom::Start(start)).unwrap();
    f.write_all(&bytes).unwrap();
    copy
}

#[test]
fn secure_boot_refuses_unsigned_and_tampered_ukis() {
    use testbed::vm::{Vm, VmConfig};
    let f = secure_boot_fixture();
    let (_, unsigned, _) = built();
    let dir = tempfile::tempdir().unwrap();
    let tampered = tampered_copy(&f.out.out.join("disk.img"), &f.out.manifest, dir.path());
    for (what, disk) in [
        ("unsigned", unsigned.out.join("disk.img")),
        ("tampered", tampered),
    ] {
        let _q = qemu_lock();
        let mut cfg = VmConfig::new(what, dir.path(), &disk);
        cfg.secure_boot = true;
        cfg.vars = Some(f.vars.clone());
        cfg.tpm = false;
        let mut vm = Vm::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
        let line = vm
            .wait_for(
                "the firmware's refusal (Access Denied)",
                Duration::from_secs(120),
                |l| {
                    l.contains("Access Denied")
                        || l.contains("Linux version")
                        || l.contains("appliance:")
                },
            )
            .unwrap_or_else(|e| panic!("{what} UKI: {e}"));
        assert!(
            line.contains("Access Denied"),
            "{what} UKI was started with Secure Boot enforced: {line}\n{}",
            vm.tail(30)
        );
        eprintln!(
            "{what} UKI refused after {:.1} s: {line}",
            vm.elapsed().as_secs_f64()
        );
    }
}

/// A build of the lab profile with `appliance` added to gw-a's
/// `[appliance]` table, `image` to its `[image]` table (whose `good_when`
/// becomes `ready`), and `tail` appended (tables of the base it overrides),
/// sharing the fixture's lock.
/// The lab profile with `appliance` and `image` keys added and `tail`
/// appended, built and signed with `key` (its public half becomes the
/// image's release key).
fn variant_signed(
    dir: &Path,
    appliance: &str,
    image: &str,
    tail: &str,
    key: Option<&std::sync::Arc<signing::SigningKey>>,
) -> builder::BuildOutput {
    let (keep, profile) = edited_copy(
        |l| l,
        |p| {
            // Alone in QEMU (no peer), a boot is good once ready; `image`
            // holds more `[image]` keys.
            let p = p
                .replacen(
                    "name = \"gw-a\"",
                    &format!("name = \"gw-a\"\n{appliance}"),
                    1,
                )
                .replacen(
                    "good_when = \"tunnels-up\"",
                    &format!("good_when = \"ready\"\n{image}"),
                    1,
                );
            assert!(
                p.contains("good_when = \"ready\""),
                "the lab profile names good_when"
            );
            format!("{p}\n{tail}\n")
        },
    );
    let out = dir.join(appliance.replace(['"', ' ', '=', '\n'], "_"));
    let mut o = opts(&profile, &out);
    o.signing_key = key.cloned();
    let r = build(&o, &mut |_| {}).unwrap_or_else(|e| panic!("build {appliance}: {e}"));
    drop(keep);
    r
}

/// Copies `src` onto the ESP of `disk` as `EFI/Linux/<name>` with mtools
/// (what an update does, by a tool we did not write).
fn put_on_esp(a: &builder::BuildOutput, disk: &Path, src: &Path, name: &str) {
    let esp = &a.manifest.disk.partitions[0];
    let img = format!("{}@@{}", disk.display(), esp.first_lba * 512);
    let o = Command::new("mcopy")
        .args(["-n", "-i", &img])
        .arg(src)
        .arg(format!("::EFI/Linux/{name}"))
        .output()
        .expect("mtools (scripts/test installs it)");
    assert!(
        o.status.success(),
        "mcopy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The names under EFI/Linux on the ESP of `disk`.
fn esp_entries(a: &builder::BuildOutput, disk: &Path) -> Vec<String> {
    let esp = &a.manifest.disk.partitions[0];
    let img = format!("{}@@{}", disk.display(), esp.first_lba * 512);
    let o = Command::new("mdir")
        .args(["-b", "-i", &img, "::EFI/Linux"])
        .output()
        .expect("mtools");
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.rsplit('/').next().map(str::to_string))
        .filter(|l| l.ends_with(".efi") || l.ends_with(".EFI"))
        .collect();
    v.sort();
    v
}

/// An update bundle of `out` (what `appliance bundle` writes).
fn bundle_of(out: &builder::BuildOutput) -> Vec<u8> {
    let read = |f: &str| std::fs::read(out.out.join(f)).unwrap();
    let sig: [u8; 64] = read("manifest.sig").try_into().unwrap();
    update_bundle::encode(&read("manifest.json"), &sig, &read("uki.efi")).unwrap()
}

/// Sends an update request with `body` to the gateway's management port
/// (QEMU forwards 127.0.0.1:`port` to black's), retrying while black's relay
/// is not up yet; returns the gateway's answer.
fn update_request(port: u16, flags: u8, body: &[u8]) -> String {
    use std::io::{Read, Write};
    use update_bundle::wire;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("QEMU's forward");
        s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
        let mut req = wire::request(wire::ENDPOINT_UPDATE, flags).to_vec();
        req.extend_from_slice(body);
        let _ = s.write_all(&req);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        if wire::outcome(&answer).is_some() {
            return answer;
        }
        // QEMU accepted, but nothing listens in black yet.
        assert!(
            std::time::Instant::now() < deadline,
            "no answer from the management port: {answer:?}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// A/B updates with boot counting, in QEMU (OVMF, swtpm, systemd-boot from
/// the lock), on one writable disk, delivered as signed bundles through the
/// black personality (QEMU forwards a host port to black's management port):
///
/// 1. 0.1.0 runs; the bundle of 0.2.0 is installed as `+3` (0.1.0's
///    `boot_tries`) and the gateway
///    reboots into it: it becomes ready, is marked good (renamed without its
///    counter) and measures exactly its own prediction; the floor becomes 1
///    (0.1.0 stays bootable).
/// 2. On 0.2.0: a tampered bundle and one below the floor are refused; then
///    QEMU is killed while 0.3.0's UKI is being written, and 0.2.0 still
///    boots (the half-written file is never an entry).
/// 3. 0.3.0, whose LAN card is absent (never ready), is installed as `+2`
///    (0.2.0's `boot_tries`; the update removes the half-written file and
///    retires 0.1.0): it is tried twice, each time rebooted when its 30 s run out, then 0.2.0 boots
///    again, ready, reports the failed entry and raises the floor to 2.
/// 4. 0.1.0 put back (mtools) stays closed: a rollback below the floor.
#[test]
fn ab_update_is_marked_good_and_a_broken_one_falls_back_after_its_tries() {
    use testbed::vm::{pcrs_from_console, Vm, VmConfig};
    for t in ["mcopy", "mdir", "mdel"] {
        assert!(
            tool(t),
            "{t} is needed: apt-get install mtools (scripts/test installs it)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let key = std::sync::Arc::new(signing::SigningKey::generate().unwrap());
    let a = variant_signed(
        dir.path(),
        "version = \"0.1.0\"\nsecurity_version = 1",
        "",
        "",
        Some(&key),
    );
    let b = variant_signed(
        dir.path(),
        "version = \"0.2.0\"\nsecurity_version = 2",
        "boot_tries = 2",
        "",
        Some(&key),
    );
    let c = variant_signed(
        dir.path(),
        "version = \"0.3.0\"\nsecurity_version = 3",
        "boot_timeout = \"30s\"",
        "[hardware.nics.lan]\npci = \"0000:00:09.0\"",
        Some(&key),
    );
    let a = &a;
    assert!(
        c.manifest.uki.cmdline.contains("appliance.plan="),
        "the broken variant built"
    );
    let disk = dir.path().join("disk.img");
    let o = Command::new("cp")
        .args(["--sparse=always"])
        .arg(a.out.join("disk.img"))
        .arg(&disk)
        .status()
        .unwrap();
    assert!(o.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    // 1. 0.2.0 arrives through black, boots, is good, measures its prediction.
    let _q = qemu_lock();
    let mut cfg = VmConfig::new("gw-a-ab", dir.path(), &disk);
    cfg.writable = true;
    cfg.nics[1].netdev = format!(
        "user,net=198.51.100.0/24,host=198.51.100.254,restrict=on,hostfwd=tcp:127.0.0.1:{port}-198.51.100.1:{}",
        update_bundle::wire::DEFAULT_PORT
    );
    let mut vm = Vm::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
    vm.wait_for("0.1.0 ready", Duration::from_secs(240), |l| {
        l.contains("appliance: ready gw-a 0.1.0")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
    let answer = update_request(port, update_bundle::wire::FLAG_REBOOT, &bundle_of(&b));
    assert_eq!(
        answer,
        "ok: installed gw-a 0.2.0 (security version 2) as EFI/Linux/gw-a_0.2.0+3.efi; rebooting into it now\n"
    );
    vm.wait_for("the update on trial", Duration::from_secs(240), |l| {
        l.contains("appliance: boot entry EFI/Linux/gw-a_0.2.0+2-1.efi on trial")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
    vm.wait_for("marked good", Duration::from_secs(180), |l| {
        l.contains(
            "appliance: boot good: EFI/Linux/gw-a_0.2.0+2-1.efi is now EFI/Linux/gw-a_0.2.0.efi",
        )
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
    assert!(vm
        .lines()
        .iter()
        .any(|l| l.contains("appliance: ready gw-a 0.2.0")));
    // The floor: the lowest security version among bootable entries (0.1.0's 1).
    vm.wait_for("the floor", Duration::from_secs(30), |l| {
        l.contains("appliance: anti-rollback floor raised from 0 to 1")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
    let pcrs = vm.pcrs();
    let p = &b.manifest.pcrs;
    for (n, want) in [
        (4, &p.pcr4),
        (7, &p.pcr7_secure_boot_off),
        (11, &p.pcr11),
        (12, &p.pcr12),
    ] {
        assert_eq!(
            pcrs.get(&n),
            Some(want),
            "slot 0.2.0: PCR {n} differs from its prediction"
        );
    }

    // 2. Refusals on 0.2.0, then a write cut short by a power loss.
    let mut tampered = bundle_of(&c);
    let n = tampered.len();
    tampered[n - 300_000] ^= 0x01;
    let answer = update_request(port, 0, &tampered);
    assert!(
        answer.starts_with("refused: bundle: uki.efi sha256"),
        "{answer}"
    );
    // A signed 0.9.0 below the floor (the release key signs what it is given).
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.out.join("manifest.json")).unwrap()).unwrap();
    m["profile"]["version"] = "0.9.0".into();
    m["profile"]["security_version"] = 0.into();
    let m = serde_json::to_vec_pretty(&m).unwrap();
    let low = update_bundle::encode(
        &m,
        &key.sign(&m),
        &std::fs::read(c.out.join("uki.efi")).unwrap(),
    )
    .unwrap();
    let answer = update_request(port, 0, &low);
    assert_eq!(
        answer,
        "refused: security version 0 is below this device's anti-rollback floor 1\n"
    );
    // Half of 0.3.0's bundle, the connection held open: the UKI is being
    // written when QEMU is killed.
    let whole = bundle_of(&c);
    let mut half = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = update_bundle::wire::request(update_bundle::wire::ENDPOINT_UPDATE, 0).to_vec();
    req.extend_from_slice(&whole[..whole.len() / 2]);
    std::io::Write::write_all(&mut half, &req).unwrap();
    vm.wait_for("the write under way", Duration::from_secs(120), |l| {
        l.contains("appliance: update: writing EFI/Linux/.update.tmp")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
    std::thread::sleep(Duration::from_secs(2));
    drop(vm); // QEMU killed mid-write
    drop(half);
    assert_eq!(esp_entries(a, &disk), ["gw-a_0.1.0.efi", "gw-a_0.2.0.efi"]);

    // 3. 0.2.0 boots; the broken 0.3.0 is installed, tried twice, and 0.2.0 is back.
    let mut vm = Vm::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
    vm.wait_for(
        "0.2.0 after the power loss",
        Duration::from_secs(240),
        |l| l.contains("appliance: ready gw-a 0.2.0"),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
    let answer = update_request(port, update_bundle::wire::FLAG_REBOOT, &whole);
    assert_eq!(
        answer,
        "ok: installed gw-a 0.3.0 (security version 3) as EFI/Linux/gw-a_0.3.0+2.efi; rebooting into it now\n"
    );
    for want in [
        "appliance: update: removed EFI/Linux/.update.tmp left by an interrupted update",
        "appliance: update: removed EFI/Linux/gw-a_0.1.0.efi (the other slot)",
    ] {
        vm.wait_for(want, Duration::from_secs(60), |l| l.contains(want))
            .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
    }
    for (left, done) in [(1, 1), (0, 2)] {
        let entry = format!("EFI/Linux/gw-a_0.3.0+{left}-{done}.efi");
        vm.wait_for(
            "the broken update on trial",
            Duration::from_secs(240),
            |l| l.contains(&format!("appliance: boot entry {entry} on trial")),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
        vm.wait_for("its reboot", Duration::from_secs(240), |l| {
            l.contains(&format!(
                "appliance: boot entry {entry} not good within 30 s (ready: no"
            ))
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
    }
    let mark = vm.lines().len();
    vm.wait_for("0.2.0 ready again", Duration::from_secs(240), |l| {
        l.contains("appliance: ready gw-a 0.2.0")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
    // 0.1.0 is gone: the floor rises to 0.2.0's 2 (the failed 0.3.0 has no tries).
    vm.wait_for("the floor raised", Duration::from_secs(240), |l| {
        l.contains("appliance: anti-rollback floor raised from 1 to 2")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
    let after = &vm.lines()[mark..];
    assert!(
        after.iter().any(|l| l.contains(
            "appliance: boot entry EFI/Linux/gw-a_0.3.0+0-2.efi failed its tries; it is not booted again"
        )),
        "the failed entry is not reported:\n{}",
        after.join("\n")
    );
    assert!(after
        .iter()
        .any(|l| l.contains("appliance: boot entry not on trial")));
    let pcrs = pcrs_from_console(after);
    assert_eq!(
        pcrs.get(&4),
        Some(&b.manifest.pcrs.pcr4),
        "back on 0.2.0: PCR 4"
    );
    assert_eq!(
        pcrs.get(&11),
        Some(&b.manifest.pcrs.pcr11),
        "back on 0.2.0: PCR 11"
    );
    vm.send_line("poweroff").unwrap();
    assert!(
        vm.wait_exit(Duration::from_secs(60)).is_some(),
        "no power-off"
    );
    drop(vm);
    assert_eq!(
        esp_entries(a, &disk),
        ["gw-a_0.2.0.efi", "gw-a_0.3.0+0-2.efi"]
    );

    // 4. A rollback: 0.1.0 put back, 0.2.0 gone. It boots, finds its
    // security version below the floor and stays closed.
    del_on_esp(a, &disk, "gw-a_0.2.0.efi");
    put_on_esp(a, &disk, &a.out.join("uki.efi"), "gw-a_0.1.0.efi");
    let mut vm = Vm::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
    vm.wait_for("the rollback refused", Duration::from_secs(240), |l| {
        l.contains("error: this image's security version 1 is below the device's anti-rollback floor 2 (a rollback); not starting")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
    let _ = vm.wait_for("nothing", Duration::from_secs(3), |_| false);
    assert!(!vm
        .lines()
        .iter()
        .any(|l| l.contains("appliance: ready gw-a 0.1.0")));
    vm.send_line("poweroff").unwrap();
    assert!(
        vm.wait_exit(Duration::from_secs(60)).is_some(),
        "no power-off"
    );
}

/// Deletes `EFI/Linux/<name>` from the ESP of `disk` with mtools.
fn del_on_esp(a: &builder::BuildOutput, disk: &Path, name: &str) {
    let esp = &a.manifest.disk.partitions[0];
    let img = format!("{}@@{}", disk.display(), esp.first_lba * 512);
    let o = Command::new("mdel")
        .args(["-i", &img])
        .arg(format!("::EFI/Linux/{name}"))
        .output()
        .expect("mtools");
    assert!(
        o.status.success(),
        "mdel: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A router image that learns routes from black: its plan names the FPM
/// port (the init makes the socket in black's namespace and hands it to the
/// Viaduct), and the profile's files are in black's root with their modes,
/// over what the builder renders. Under runtime `microvm` it is refused,
/// naming the section and its line, before any package is looked at.
#[test]
fn learned_routes_build_with_the_fpm_line_and_black_gets_the_profiles_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("profiles/base")).unwrap();
    for f in ["router.toml", "base/gateway.toml"] {
        std::fs::copy(
            root().join("profiles").join(f),
            dir.path().join("profiles").join(f),
        )
        .unwrap();
    }
    let learned = "[viaduct.learned_routes]\nallow = [\"1.0.0.0/8 le 24\"]\n";
    let profile = dir.path().join("profiles/router-learned.toml");
    std::fs::write(
        &profile,
        format!(
            "extends = \"router.toml\"\n\n{learned}\n\
             [[personalities.black.files]]\npath = \"/etc/frr/zebra.conf\"\nmode = 0o640\n\
             content = \"\"\"\nfpm address 127.0.0.1 port 2620\n\"\"\"\n\n\
             [[personalities.black.files]]\npath = \"/etc/passwd\"\n\
             content = \"root:x:0:0:root:/:/bin/sh\\nfrr:x:100:101::/nonexistent:/bin/false\\n\"\n"
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let a = build(&opts(&profile, &out), &mut |_| {}).expect("the learning router builds");
    let uki = std::fs::read(a.out.join("uki.efi")).unwrap();
    let pe = images::pe::PeFile::parse(&uki).unwrap();
    let e = initramfs_entries(&pe.memory_data(pe.section(".initrd").unwrap()));
    let plan = gateway_plan::Plan::decode(e["etc/appliance/plan"].1.as_slice()).unwrap();
    assert_eq!(plan.fpm, Some(gateway_plan::FpmPlan { port: 2620 }));
    assert_eq!(
        e["personalities/black/etc/frr/zebra.conf"],
        (0o100640, b"fpm address 127.0.0.1 port 2620\n".to_vec())
    );
    assert_eq!(e["personalities/black/etc/frr"].0, 0o040755);
    assert_eq!(
        e["personalities/black/etc/passwd"],
        (
            0o100444,
            b"root:x:0:0:root:/:/bin/sh\nfrr:x:100:101::/nonexistent:/bin/false\n".to_vec()
        )
    );
    // Red keeps the rendered accounts; only black got the files.
    assert!(!e.contains_key("personalities/red/etc/frr/zebra.conf"));
    assert!(
        String::from_utf8_lossy(&e["personalities/red/etc/passwd"].1).contains("nobody:x:65534")
    );

    let vm = dir.path().join("profiles/router-learned-vm.toml");
    std::fs::write(
        &vm,
        format!(
            "extends = \"router.toml\"\n\n[appliance]\nruntime = \"microvm\"\n\n{learned}\n\
             [hardware.nics.lan]\nattach = \"macvtap\"\n\n[hardware.nics.wan]\nattach = \"macvtap\"\n\n\
             [personalities.red]\nmemory_limit = \"256MiB\"\n\n[personalities.black]\nmemory_limit = \"256MiB\"\n"
        ),
    )
    .unwrap();
    let err = build(&opts(&vm, &dir.path().join("out-vm")), &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BuildError::NotYet { .. }), "{msg}");
    assert!(
        msg.starts_with(&format!("{}:6:", vm.display()))
            && msg.contains("viaduct.learned_routes: runtime `microvm` cannot learn routes yet"),
        "{msg}"
    );
    assert!(!dir.path().join("out-vm").exists());
}
