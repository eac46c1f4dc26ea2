//! `flash` against real block devices: loop devices over files, as root.
//! Each test builds a small GPT image (a 10 MiB partition of random bytes
//! and free space), its block map, and a used device full of old bytes.

use std::io::Cursor;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use flash::{Error, Host, Options, Phase, Refusal, Release};
use images::bmap::{BlockMap, ParsedBmap};
use images::gpt::{type_guid, valid_headers, GptBuilder, PartitionSpec};
use images::{ByteLen, Guid};

const MIB: u64 = 1 << 20;

fn need_root_and_losetup() {
    let ok = Command::new("losetup").arg("--version").output().is_ok();
    assert!(
        ok && rustix::process::geteuid().is_root(),
        "these tests need root and losetup (util-linux); scripts/test runs them as root"
    );
}

/// A loop device over a file, detached when dropped.
struct Loop {
    dev: PathBuf,
}

impl Loop {
    fn over(file: &Path, extra: &[&str]) -> Loop {
        let o = Command::new("losetup")
            .args(["-f", "--show"])
            .args(extra)
            .arg(file)
            .output()
            .expect("losetup runs");
        assert!(
            o.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Loop {
            dev: PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    image: PathBuf,
    bytes: Vec<u8>,
    bmap: ParsedBmap,
    esp: Guid,
}

fn g(n: u8) -> Guid {
    images::guid_from_digest(&[n; 32], "flash-test")
}

/// A 16 MiB GPT image: a 10 MiB partition of random bytes, then 4 MiB free.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let mut content = vec![0u8; 10 * MIB as usize];
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    for b in content.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let esp = g(2);
    let mut b = GptBuilder::new(g(1));
    b.disk_size(ByteLen(16 * MIB));
    b.add_partition(PartitionSpec {
        name: "ESP".into(),
        type_guid: type_guid::ESP,
        unique_guid: esp,
        size: ByteLen(10 * MIB),
        attributes: 0,
        content: Some(content.into()),
    })
    .unwrap();
    let disk = b.write_file(&image).unwrap();
    let bytes = std::fs::read(&image).unwrap();
    let mut map = BlockMap::new(ByteLen(bytes.len() as u64));
    for (o, l) in disk.metadata_ranges() {
        map.map(o, l);
    }
    let p = &disk.partitions[0];
    map.map(p.offset().0, p.size().0);
    let xml = map.to_xml(&mut Cursor::new(&bytes)).unwrap();
    let bmap = ParsedBmap::from_xml(&xml).unwrap();
    Fixture {
        dir,
        image,
        bytes,
        bmap,
        esp,
    }
}

impl Fixture {
    fn release(&self) -> Release {
        Release::from_checked_parts(self.image.clone(), self.bmap.clone(), "test image".into())
            .unwrap()
    }

    /// A used device file of `size` bytes, full of old bytes (and an old GPT).
    fn used_device(&self, name: &str, size: u64) -> PathBuf {
        let p = self.dir.path().join(name);
        let mut old: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
        // An old disk: this image's own GPT at the start and a backup at the end.
        let n = self.bytes.len().min(old.len());
        old[..34 * 512].copy_from_slice(&self.bytes[..34 * 512]);
        let tail = &self.bytes[self.bytes.len() - 33 * 512..];
        let end = old.len();
        old[end - 33 * 512..].copy_from_slice(tail);
        let _ = n;
        std::fs::write(&p, old).unwrap();
        p
    }
}

fn host(efivars: &Path) -> Host {
    Host {
        efivars: efivars.to_path_buf(),
        ..Host::system()
    }
}

fn no_efivars() -> Host {
    host(Path::new("/nonexistent/efivars"))
}

fn run(f: &Fixture, dev: &Path, h: &Host, yes: bool) -> Result<flash::Report, Error> {
    flash::flash(
        &f.release(),
        dev,
        h,
        &Options {
            yes,
            max_held_bytes: None,
        },
        &mut |_| {},
        &AtomicBool::new(false),
    )
}

fn refusal(r: Result<flash::Report, Error>) -> Refusal {
    match r {
        Err(Error::Refused { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn sha(b: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(b).to_vec()
}

/// Onto a used device 8 MiB larger than the image: every mapped byte lands,
/// the unmapped ones keep their old bytes, the GPT checks (the backup where
/// the primary names it), and the stale backup GPT at the device's end is
/// gone. While the data is written and read back, no valid GPT header is on
/// the device at any moment a progress report is made.
#[test]
fn a_flash_writes_the_mapped_ranges_and_the_gpt_last() {
    // The image held in memory between check and write, and read twice.
    for held in [None, Some(0)] {
        flash_writes_the_mapped_ranges_and_the_gpt_last(held);
    }
}

fn flash_writes_the_mapped_ranges_and_the_gpt_last(held: Option<u64>) {
    need_root_and_losetup();
    let f = fixture();
    let size = 24 * MIB;
    let backing = f.used_device("dev.img", size);
    let old = std::fs::read(&backing).unwrap();
    let dev = Loop::over(&backing, &[]);
    let mut seen = Vec::new();
    let report = flash::flash(
        &f.release(),
        &dev.dev,
        &no_efivars(),
        &Options {
            yes: true,
            max_held_bytes: held,
        },
        &mut |p| {
            if matches!(p.phase, Phase::Writing | Phase::Verifying) {
                let mut b = std::fs::File::open(&backing).unwrap();
                let headers = valid_headers(&mut b);
                assert!(
                    headers.is_empty(),
                    "{:?} at {} of {}: a GPT header is valid: {headers:?}",
                    p.phase,
                    p.done,
                    p.total
                );
            }
            if seen.last() != Some(&p.phase) {
                seen.push(p.phase);
            }
        },
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(
        seen,
        [
            Phase::CheckingImage,
            Phase::Writing,
            Phase::Verifying,
            Phase::Finishing
        ]
    );
    assert!(report.cleared_device_end);
    assert!(report.direct_io, "a loop device takes O_DIRECT");
    assert_eq!(report.written_bytes, f.bmap.mapped_bytes());
    let now = std::fs::read(&backing).unwrap();
    let img = f.bytes.len();
    for r in &f.bmap.ranges {
        let (o, l) = f.bmap.byte_span(r);
        let (o, l) = (o as usize, l as usize);
        assert_eq!(&now[o..o + l], &f.bytes[o..o + l], "range {o}+{l}");
    }
    // The free 4 MiB of the image kept the old bytes (not written).
    let free = 12 * MIB as usize;
    assert_eq!(
        &now[free..free + MIB as usize],
        &old[free..free + MIB as usize]
    );
    // The device's last sectors are zero; the GPT is the image's.
    assert!(now[size as usize - 33 * 512..].iter().all(|b| *b == 0));
    let headers = valid_headers(&mut Cursor::new(&now));
    assert_eq!(
        headers.iter().map(|h| h.lba).collect::<Vec<_>>(),
        [1, img as u64 / 512 - 1]
    );
    let gpt = images::gpt::read_gpt(&mut Cursor::new(&now[..img])).unwrap();
    assert_eq!(gpt.partitions[0].unique_guid, f.esp);
    // sgdisk, a tool we did not write, agrees the disk's GPT is sound (it
    // notes the backup is not at the end of the larger disk).
    if let Ok(o) = Command::new("sgdisk").arg("-v").arg(&dev.dev).output() {
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            !out.contains("CRC mismatch") && !out.contains("corrupt"),
            "{out}"
        );
    }
}

#[test]
fn each_unsafe_target_is_refused_before_anything_is_written() {
    need_root_and_losetup();
    let f = fixture();
    // Not a block device.
    assert_eq!(
        refusal(run(&f, &f.image, &no_efivars(), true)),
        Refusal::NotBlockDevice
    );
    // Not removable, without --yes.
    let backing = f.used_device("dev.img", 16 * MIB);
    let before = sha(&std::fs::read(&backing).unwrap());
    let dev = Loop::over(&backing, &[]);
    match refusal(run(&f, &dev.dev, &no_efivars(), false)) {
        Refusal::NotRemovable { description } => {
            assert!(description.contains("loop over"), "{description}")
        }
        r => panic!("{r:?}"),
    }
    // Smaller than the image.
    let small = f.used_device("small.img", 15 * MIB);
    let small_dev = Loop::over(&small, &[]);
    assert_eq!(
        refusal(run(&f, &small_dev.dev, &no_efivars(), true)),
        Refusal::TooSmall {
            have: 15 * MIB,
            need: 16 * MIB
        }
    );
    // 4096-byte logical sectors.
    let big_sectors = f.used_device("4k.img", 16 * MIB);
    let dev4k = Loop::over(&big_sectors, &["-b", "4096"]);
    assert_eq!(
        refusal(run(&f, &dev4k.dev, &no_efivars(), true)),
        Refusal::SectorSize { size: 4096 }
    );
    // The boot disk: the boot loader says it booted from a partition whose
    // GUID is in this device's partition table (the used device carries the
    // image's GPT).
    let efivars = tempfile::tempdir().unwrap();
    let mut var = vec![7, 0, 0, 0];
    for u in format!("{}\0", f.esp).encode_utf16() {
        var.extend_from_slice(&u.to_le_bytes());
    }
    std::fs::write(
        efivars
            .path()
            .join("LoaderDevicePartUUID-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"),
        var,
    )
    .unwrap();
    assert!(matches!(
        refusal(run(&f, &dev.dev, &host(efivars.path()), true)),
        Refusal::BootDisk { .. }
    ));
    // ... even when only its backup GPT is left.
    {
        use std::os::unix::fs::FileExt;
        let d = std::fs::OpenOptions::new()
            .write(true)
            .open(&dev.dev)
            .unwrap();
        d.write_all_at(&[0u8; 512], 512).unwrap();
        d.sync_all().unwrap();
    }
    assert!(matches!(
        refusal(run(&f, &dev.dev, &host(efivars.path()), true)),
        Refusal::BootDisk { .. }
    ));
    // Held open exclusively by another program.
    {
        let _held = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(&dev.dev)
            .unwrap();
        assert_eq!(
            refusal(run(&f, &dev.dev, &no_efivars(), true)),
            Refusal::Busy
        );
    }
    // A partition, not the whole disk.
    let parted = f.used_device("parted.img", 16 * MIB);
    let pdev = Loop::over(&parted, &["-P"]);
    let name = pdev.dev.file_name().unwrap().to_string_lossy().into_owned();
    // The kernel made the partition; without udev (a container) nobody made
    // its node: make one from sysfs.
    let sysdev = PathBuf::from(format!("/sys/block/{name}/{name}p1/dev"));
    // (Some kernels leave the scan to userspace here: ask partx.)
    let _ = Command::new("partx").arg("-a").arg(&pdev.dev).output();
    for _ in 0..50 {
        if sysdev.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let numbers = std::fs::read_to_string(&sysdev).expect("the kernel found the partition");
    let (maj, min) = numbers.trim().split_once(':').unwrap();
    let part = f.dir.path().join(format!("{name}p1"));
    assert!(Command::new("mknod")
        .arg(&part)
        .args(["b", maj, min])
        .status()
        .unwrap()
        .success());
    assert_eq!(
        refusal(run(&f, &part, &no_efivars(), true)),
        Refusal::Partition { disk: name }
    );
    // Mounted.
    let fat = f.dir.path().join("ext4.img");
    std::fs::write(&fat, vec![0u8; 16 * MIB as usize]).unwrap();
    let fdev = Loop::over(&fat, &[]);
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&fdev.dev)
        .output();
    let mnt = tempfile::tempdir().unwrap();
    if mkfs.map(|o| o.status.success()).unwrap_or(false) {
        let ok = Command::new("mount")
            .arg(&fdev.dev)
            .arg(mnt.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount {}", fdev.dev.display());
        let r = run(&f, &fdev.dev, &no_efivars(), true);
        let _ = Command::new("umount").arg(mnt.path()).status();
        match refusal(r) {
            Refusal::Mounted { what, mountpoint } => {
                assert_eq!(Path::new(&what), fdev.dev);
                assert_eq!(Path::new(&mountpoint), mnt.path());
            }
            r => panic!("{r:?}"),
        }
    } else {
        panic!("mkfs.ext4 is needed: apt-get install e2fsprogs");
    }
    // Swap.
    let swap = f.dir.path().join("swap.img");
    std::fs::write(&swap, vec![0u8; 16 * MIB as usize]).unwrap();
    let sdev = Loop::over(&swap, &[]);
    let mk = Command::new("mkswap").arg(&sdev.dev).output().unwrap();
    assert!(mk.status.success());
    if Command::new("swapon")
        .arg(&sdev.dev)
        .status()
        .unwrap()
        .success()
    {
        let r = run(&f, &sdev.dev, &no_efivars(), true);
        let _ = Command::new("swapoff").arg(&sdev.dev).status();
        assert!(matches!(refusal(r), Refusal::Swap { .. } | Refusal::Busy));
    } else {
        eprintln!("SKIP swap refusal: swapon is not permitted here");
    }
    // Nothing was written to the used device in all this (but the one
    // sector the test itself cleared).
    let now = std::fs::read(&backing).unwrap();
    let mut expect = std::fs::read(&backing).unwrap();
    expect[512..1024].copy_from_slice(&now[512..1024]);
    assert_eq!(sha(&expect), sha(&now));
    assert_ne!(sha(&now), before, "sanity: the test cleared one sector");
}

#[test]
fn a_tampered_image_is_refused_before_the_device_is_touched() {
    need_root_and_losetup();
    let f = fixture();
    let backing = f.used_device("dev.img", 16 * MIB);
    let before = sha(&std::fs::read(&backing).unwrap());
    let dev = Loop::over(&backing, &[]);
    // One bit in the partition's data.
    let mut bytes = f.bytes.clone();
    bytes[(MIB + 5 * MIB) as usize] ^= 0x10;
    std::fs::write(&f.image, &bytes).unwrap();
    match run(&f, &dev.dev, &no_efivars(), true) {
        Err(e @ Error::Tampered { .. }) => {
            assert!(e.to_string().contains("nothing was written"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sha(&std::fs::read(&backing).unwrap()), before);
}

/// Interrupted at any point of writing or verifying (a signal sets the
/// flag), the device holds no valid GPT header and the error says so; a
/// second flash then succeeds.
#[test]
fn an_interrupted_flash_leaves_no_valid_gpt_and_says_so() {
    for held in [None, Some(0)] {
        interrupted_flash_leaves_no_valid_gpt_and_says_so(held);
    }
}

fn interrupted_flash_leaves_no_valid_gpt_and_says_so(held: Option<u64>) {
    need_root_and_losetup();
    let f = fixture();
    let backing = f.used_device("dev.img", 20 * MIB);
    let dev = Loop::over(&backing, &[]);
    let total = f.bmap.mapped_bytes();
    for (phase, at) in [
        (Phase::Writing, 0),
        (Phase::Writing, total / 2),
        (Phase::Verifying, 0),
        (Phase::Verifying, total - 1),
    ] {
        let cancel = AtomicBool::new(false);
        let r = flash::flash(
            &f.release(),
            &dev.dev,
            &no_efivars(),
            &Options {
                yes: true,
                max_held_bytes: held,
            },
            &mut |p| {
                if p.phase == phase && p.done > at {
                    cancel.store(true, Ordering::SeqCst);
                }
            },
            &cancel,
        );
        match r {
            Err(Error::Failed { what, state, .. }) => {
                assert!(what.starts_with("interrupted while"), "{what}");
                assert!(state.contains("no valid GPT header"), "{state}");
            }
            other => panic!("{phase:?} {at}: {other:?}"),
        }
        let mut b = std::fs::File::open(&backing).unwrap();
        assert!(valid_headers(&mut b).is_empty(), "{phase:?} {at}");
    }
    run(&f, &dev.dev, &no_efivars(), true).unwrap();
    let mut b = std::fs::File::open(&backing).unwrap();
    assert_eq!(valid_headers(&mut b).len(), 2);
}

/// A device that fails part-way (a loop device over a file on a full tmpfs:
/// its writes fail with I/O errors): the flash fails, and the device holds
/// no valid GPT header.
#[test]
fn a_device_failing_mid_write_is_left_without_a_valid_gpt() {
    need_root_and_losetup();
    let f = fixture();
    let mnt = tempfile::tempdir().unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "flash-test"])
        .arg(mnt.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "mounting a tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(mnt.path().to_path_buf());
    // A sparse 16 MiB file on 6 MiB of tmpfs, carrying an old GPT.
    let backing = mnt.path().join("dev.img");
    {
        let d = std::fs::File::create(&backing).unwrap();
        d.set_len(16 * MIB).unwrap();
        use std::os::unix::fs::FileExt;
        d.write_all_at(&f.bytes[..34 * 512], 0).unwrap();
        let tail = &f.bytes[f.bytes.len() - 33 * 512..];
        d.write_all_at(tail, 16 * MIB - 33 * 512).unwrap();
    }
    let dev = Loop::over(&backing, &[]);
    match run(&f, &dev.dev, &no_efivars(), true) {
        Err(e @ Error::Failed { .. }) => {
            let t = e.to_string();
            assert!(t.contains("failed"), "{t}");
            assert!(t.contains("no valid GPT header"), "{t}");
        }
        other => panic!("a flash onto a failing device: {other:?}"),
    }
    let mut b = std::fs::File::open(&backing).unwrap();
    assert!(valid_headers(&mut b).is_empty());
}
