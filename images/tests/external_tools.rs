//! Checks our images against independent tools: GNU cpio, fsck.fat, mtools, sgdisk,
//! objdump, osslsigncode/pesign, qemu-img and the real systemd-stub.
//!
//! A test whose tool is missing prints `SKIP: ... (install package X)` and passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::Digest;

use images::cpio::{parse_newc, CpioBuilder};
use images::fat::{FatBuilder, FatParams, FatVolume};
use images::gpt::{read_gpt_file, type_guid, GptBuilder, PartitionSpec};
use images::pe::{self, PeFile, UkiBuilder};
use images::{guid_from_digest, ByteLen, Content, Epoch, Guid};

fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let dirs = std::env::var("PATH").unwrap_or_default();
    let found = dirs
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("SKIP: {name} not found (install package {package})");
    }
    found
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn digest(n: u8) -> [u8; 32] {
    [n; 32]
}

fn sample_cpio() -> CpioBuilder {
    let mut b = CpioBuilder::new(Epoch(1_700_000_000)).unwrap();
    b.add_file("init", 0o755, b"#!/bin/sh\necho hi\n".to_vec())
        .unwrap();
    b.add_file("etc/os-release", 0o644, b"ID=appliance\n".to_vec())
        .unwrap();
    b.add_symlink("bin/sh", "busybox").unwrap();
    b.add_file("bin/busybox", 0o755, vec![0x7f; 12345]).unwrap();
    b.add_char_device("dev/console", 0o600, 5, 1).unwrap();
    b.add_char_device("dev/null", 0o666, 1, 3).unwrap();
    b.add_dir("proc", 0o555).unwrap();
    b
}

#[test]
fn cpio_is_read_by_gnu_cpio() {
    let Some(cpio) = tool("cpio", "cpio") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("initrd.cpio");
    let bytes = sample_cpio().to_vec().unwrap();
    std::fs::write(&archive, &bytes).unwrap();
    let out = run(Command::new(&cpio)
        .args(["-itv", "--quiet", "-F"])
        .arg(&archive)
        .env("TZ", "UTC")
        .env("LC_ALL", "C"));
    let listing = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 10, "{listing}");
    assert!(
        lines[0].starts_with("drwxr-xr-x   2 root     root"),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with(" bin"));
    assert!(lines[1].contains("12345") && lines[1].ends_with("bin/busybox"));
    assert!(lines[2].starts_with("lrwxrwxrwx") && lines[2].ends_with("bin/sh -> busybox"));
    assert!(lines[4].starts_with("crw-------") && lines[4].contains("5,   1"));
    assert!(lines[5].starts_with("crw-rw-rw-") && lines[5].ends_with("dev/null"));
    assert!(lines[8].starts_with("-rwxr-xr-x") && lines[8].ends_with(" init"));
    assert!(lines[9].starts_with("dr-xr-xr-x") && lines[9].ends_with(" proc"));
    assert!(listing.contains("Nov 14  2023"), "{listing}");

    // Extraction (without device nodes, which need root) gives the same content.
    let x = dir.path().join("x");
    std::fs::create_dir(&x).unwrap();
    run(Command::new(&cpio)
        .current_dir(&x)
        .args(["-idm", "--quiet", "--no-absolute-filenames", "-F"])
        .arg(&archive)
        .args(["init", "bin/*", "etc/*"]));
    assert_eq!(
        std::fs::read(x.join("init")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(
        std::fs::read(x.join("bin/busybox")).unwrap(),
        vec![0x7f; 12345]
    );
    assert_eq!(
        std::fs::read_link(x.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );

    // GNU cpio's own newc output parses with our reader.
    let made = dir.path().join("gnu.cpio");
    let mut child = Command::new(&cpio)
        .current_dir(&x)
        .args(["-o", "-H", "newc", "--quiet", "-O"])
        .arg(&made)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"init\nbin\nbin/busybox\nbin/sh\n")
            .unwrap();
    }
    assert!(child.wait().unwrap().success());
    let gnu = std::fs::read(&made).unwrap();
    let recs = parse_newc(&gnu).unwrap();
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[2].data.len(), 12345);
}

fn esp_params(size: u64) -> FatParams {
    FatParams {
        size: ByteLen(size),
        volume_id: 0xA1B2_C3D4,
        label: Some("APPLIANCE".into()),
        timestamp: Epoch(1_700_000_000),
        hidden_sectors: 2048,
    }
}

fn sample_esp() -> (FatBuilder, Vec<u8>) {
    let uki: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut b = FatBuilder::new(esp_params(64 << 20)).unwrap();
    b.add_file("EFI/BOOT/BOOTX64.EFI", uki.clone()).unwrap();
    b.add_file("EFI/Linux/appliance-a.efi", uki.clone())
        .unwrap();
    b.add_file("EFI/Linux/appliance-b.efi", vec![0x55; 4096])
        .unwrap();
    b.add_file(
        "loader/a-rather-long-file-name.conf",
        b"timeout 0\n".to_vec(),
    )
    .unwrap();
    b.add_file("Mixed.Txt", b"case\n".to_vec()).unwrap();
    b.add_file("lower.txt", b"lower\n".to_vec()).unwrap();
    b.add_file("zero", vec![0u8; 10_000]).unwrap();
    for i in 0..40 {
        b.add_file(&format!("many/file-number-{i:02}.bin"), vec![i as u8; 100])
            .unwrap();
    }
    (b, uki)
}

#[test]
fn esp_passes_fsck_fat_and_mtools_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("esp.img");
    let (b, uki) = sample_esp();
    b.write_file(&img).unwrap();
    // Our reader agrees.
    let bytes = std::fs::read(&img).unwrap();
    let v = FatVolume::parse(&bytes).unwrap();
    assert_eq!(v.read_file("EFI/BOOT/BOOTX64.EFI").unwrap(), uki);
    assert_eq!(v.read_file("zero").unwrap(), vec![0u8; 10_000]);
    assert_eq!(v.list().unwrap().len(), 5 + 7 + 40);

    if let Some(fsck) = tool("fsck.fat", "dosfstools") {
        let out = Command::new(fsck)
            .arg("-n")
            .arg("-v")
            .arg(&img)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "fsck.fat -n failed:\n{text}");
        assert!(!text.contains("differences"), "{text}");
        assert!(!text.to_lowercase().contains("wrong"), "{text}");
        assert!(text.contains("53 files, 866/129022 clusters"), "{text}");
    }
    if let Some(mcopy) = tool("mcopy", "mtools") {
        let out = run(Command::new(&mcopy)
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&img)
            .args(["::EFI/BOOT/BOOTX64.EFI", "-"]));
        assert_eq!(out.stdout, uki);
        let out = run(Command::new(&mcopy)
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&img)
            .args(["::loader/a-rather-long-file-name.conf", "-"]));
        assert_eq!(out.stdout, b"timeout 0\n");
        let mdir = mcopy.with_file_name("mdir");
        let out = run(Command::new(mdir)
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&img)
            .args(["-a", "::"]));
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("Mixed.Txt"), "{listing}");
        assert!(
            listing.contains("lower.txt") || listing.contains("lower    txt"),
            "{listing}"
        );
        assert!(listing.contains("APPLIANCE"), "{listing}");
    }
}

#[test]
fn esp_too_small_fails_with_needed_size() {
    let mut b = FatBuilder::new(esp_params(34 << 20)).unwrap();
    b.add_file("EFI/BOOT/BOOTX64.EFI", vec![1u8; 40 << 20])
        .unwrap();
    let e = b.to_vec().unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("make the ESP at least"), "{msg}");
}

fn sample_disk(dir: &Path) -> (PathBuf, Vec<Guid>) {
    let esp = dir.join("esp.img");
    sample_esp().0.write_file(&esp).unwrap();
    let d = digest(9);
    let guids = vec![
        guid_from_digest(&d, "disk"),
        guid_from_digest(&d, "esp"),
        guid_from_digest(&d, "state"),
    ];
    let mut b = GptBuilder::new(guids[0]);
    b.add_partition(PartitionSpec {
        name: "ESP".into(),
        type_guid: type_guid::ESP,
        unique_guid: guids[1],
        size: ByteLen::mib(64),
        attributes: 0,
        content: Some(Content::File(esp)),
    })
    .unwrap();
    b.add_partition(PartitionSpec {
        name: "appliance-state".into(),
        type_guid: type_guid::LINUX_VAR,
        unique_guid: guids[2],
        size: ByteLen::mib(8),
        attributes: 0,
        content: None,
    })
    .unwrap();
    let img = dir.join("disk.img");
    b.write_file(&img).unwrap();
    (img, guids)
}

#[test]
fn gpt_passes_sgdisk_and_our_reader() {
    let dir = tempfile::tempdir().unwrap();
    let (img, guids) = sample_disk(dir.path());
    let disk = read_gpt_file(&img).unwrap();
    assert_eq!(disk.disk_guid, guids[0]);
    assert_eq!(disk.partitions.len(), 2);
    assert_eq!(disk.partitions[0].first.0, 2048);
    // The ESP inside the disk is readable.
    let bytes = std::fs::read(&img).unwrap();
    let p = &disk.partitions[0];
    let esp = &bytes[p.offset().0 as usize..(p.offset().0 + p.size().0) as usize];
    assert!(FatVolume::parse(esp).is_ok());
    // Sparse: far fewer blocks than the apparent size.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(&img).unwrap();
        assert!(
            md.blocks() * 512 < md.len() / 4,
            "not sparse: {} blocks",
            md.blocks()
        );
    }
    let Some(sgdisk) = tool("sgdisk", "gdisk") else {
        return;
    };
    let out = run(Command::new(&sgdisk).arg("-v").arg(&img));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("No problems found"), "{text}");
    let out = run(Command::new(&sgdisk).arg("-p").arg(&img));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("Disk identifier (GUID): {}", guids[0])),
        "{text}"
    );
    assert!(
        text.contains("ESP") && text.contains("appliance-state"),
        "{text}"
    );
    let out = run(Command::new(&sgdisk).arg("-i").arg("1").arg(&img));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("Partition unique GUID: {}", guids[1])),
        "{text}"
    );
    assert!(
        text.contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
        "{text}"
    );
    assert!(text.contains("First sector: 2048"), "{text}");
}

#[test]
fn gpt_and_esp_are_deterministic() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (ia, _) = sample_disk(a.path());
    let (ib, _) = sample_disk(b.path());
    assert_eq!(std::fs::read(ia).unwrap(), std::fs::read(ib).unwrap());
}

#[test]
fn gpt_flipped_byte_is_detected_after_sgdisk_accepts_original() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = sample_disk(dir.path());
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[512 + 56] ^= 0x10; // disk GUID in the primary header
    let bad = dir.path().join("bad.img");
    std::fs::write(&bad, &bytes).unwrap();
    let e = read_gpt_file(&bad).unwrap_err();
    assert!(e.to_string().contains("CRC32"), "{e}");
}

#[test]
fn qcow2_conversion_is_deterministic() {
    let Some(_) = tool("qemu-img", "qemu-utils") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = sample_disk(dir.path());
    let q1 = dir.path().join("a.qcow2");
    let q2 = dir.path().join("b.qcow2");
    images::qcow2::convert_raw_to_qcow2(&img, &q1).unwrap();
    images::qcow2::convert_raw_to_qcow2(&img, &q2).unwrap();
    assert_eq!(std::fs::read(&q1).unwrap(), std::fs::read(&q2).unwrap());
    let qsize = std::fs::metadata(&q1).unwrap().len();
    assert!(qsize < std::fs::metadata(&img).unwrap().len() / 4);
    run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(&img)
        .arg(&q1));
}

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

fn real_stub() -> Option<Vec<u8>> {
    match std::fs::read(STUB) {
        Ok(b) => Some(b),
        Err(_) => {
            eprintln!("SKIP: {STUB} not found (install package systemd-boot-efi)");
            None
        }
    }
}

fn real_uki(stub: Vec<u8>) -> Vec<u8> {
    let initrd = sample_cpio().to_vec().unwrap();
    let kernel: Vec<u8> = (0..300_001u32).map(|i| (i % 253) as u8).collect();
    let mut b = UkiBuilder::new(stub);
    b.osrel(b"ID=appliance\nVERSION_ID=1\n".to_vec()).unwrap();
    b.cmdline(b"console=ttyS0 quiet".to_vec()).unwrap();
    b.uname(b"6.1.0-test-amd64".to_vec()).unwrap();
    b.initrd(initrd).unwrap();
    b.linux(kernel).unwrap();
    b.build().unwrap()
}

/// `(name, size, vma, file offset)` rows of `objdump -h`.
fn objdump_sections(objdump: &Path, file: &Path) -> Vec<(String, u64, u64, u64)> {
    let out = run(Command::new(objdump).arg("-h").arg(file));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() >= 7 && f[0].parse::<u32>().is_ok() {
                let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
                Some((f[1].to_owned(), hex(f[2]), hex(f[3]), hex(f[5])))
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn uki_from_real_stub_matches_objdump_and_roundtrips() {
    let Some(stub) = real_stub() else {
        return;
    };
    let uki = real_uki(stub.clone());
    assert_eq!(
        uki,
        real_uki(stub.clone()),
        "UKI assembly is not deterministic"
    );
    let pe = PeFile::parse(&uki).unwrap();
    let st = PeFile::parse(&stub).unwrap();
    let names: Vec<String> = pe.sections.iter().map(|s| s.name()).collect();
    let n = st.sections.len();
    assert_eq!(
        names[n..],
        [".osrel", ".cmdline", ".uname", ".initrd", ".linux"]
    );
    assert_eq!(
        pe.memory_data(pe.section(".uname").unwrap()),
        b"6.1.0-test-amd64"
    );
    assert_eq!(
        pe.memory_data(pe.section(".initrd").unwrap()),
        sample_cpio().to_vec().unwrap()
    );
    let Some(objdump) = tool("objdump", "binutils") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("uki.efi");
    std::fs::write(&f, &uki).unwrap();
    let rows = objdump_sections(&objdump, &f);
    assert_eq!(rows.len(), pe.sections.len());
    for (row, s) in rows.iter().zip(&pe.sections) {
        assert_eq!(row.0, s.name());
        // objdump prints VirtualSize for PE images.
        assert_eq!(row.1, s.virtual_size as u64, "{}", row.0);
        assert_eq!(
            row.2,
            pe.optional.image_base + s.virtual_address as u64,
            "{}",
            row.0
        );
        assert_eq!(row.3, s.pointer_to_raw_data as u64, "{}", row.0);
    }
    let linux = rows.iter().find(|r| r.0 == ".linux").unwrap();
    assert_eq!(linux.1, 300_001);
    let out = run(Command::new(&objdump).arg("-p").arg(&f));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("SizeOfImage\t\t{:08x}", pe.optional.size_of_image)),
        "{text}"
    );
    assert!(text.contains("CheckSum\t\t00000000"), "{text}");
}

#[test]
fn authenticode_hash_matches_pesign() {
    let Some(stub) = real_stub() else {
        return;
    };
    let Some(pesign) = tool("pesign", "pesign") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let uki = real_uki(stub.clone());
    for (name, bytes) in [("stub.efi", stub), ("uki.efi", uki.clone())] {
        let f = dir.path().join(name);
        std::fs::write(&f, &bytes).unwrap();
        let out = run(Command::new(&pesign)
            .args(["-h", "-d", "sha256", "-i"])
            .arg(&f));
        let text = String::from_utf8_lossy(&out.stdout);
        let theirs = text
            .trim()
            .strip_prefix("hash: ")
            .unwrap_or_default()
            .to_owned();
        let ours: String = pe::authenticode_sha256(&bytes)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(ours, theirs, "{name}");
    }
    // A signed copy (sbsign appends a certificate table) hashes the same.
    let (Some(openssl), Some(sbsign)) = (tool("openssl", "openssl"), tool("sbsign", "sbsigntool"))
    else {
        return;
    };
    let key = dir.path().join("k.pem");
    let crt = dir.path().join("c.pem");
    run(Command::new(openssl)
        .args([
            "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            "/CN=test", "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&crt));
    let signed = dir.path().join("signed.efi");
    run(Command::new(sbsign)
        .arg("--key")
        .arg(&key)
        .arg("--cert")
        .arg(&crt)
        .arg("--output")
        .arg(&signed)
        .arg(dir.path().join("uki.efi")));
    let signed = std::fs::read(&signed).unwrap();
    assert!(PeFile::parse(&signed)
        .unwrap()
        .certificate_table()
        .is_some());
    assert_eq!(
        pe::authenticode_sha256(&signed).unwrap(),
        pe::authenticode_sha256(&uki).unwrap()
    );
}

#[test]
fn pcr11_prediction_for_real_stub() {
    let Some(stub) = real_stub() else {
        return;
    };
    let uki = real_uki(stub);
    let pe = PeFile::parse(&uki).unwrap();
    let ev = pe::pcr11_measurements(&pe, pe::StubGeneration::Systemd252);
    let names: Vec<&str> = ev.iter().map(|e| e.name.as_str()).collect();
    // Debian 12's stub does not measure .uname.
    assert_eq!(names, [".linux", ".osrel", ".cmdline", ".initrd"]);
    assert_eq!(
        pe::section_sha256(&pe, ".cmdline").unwrap(),
        <[u8; 32]>::from(sha2::Sha256::digest(b"console=ttyS0 quiet"))
    );
    assert_ne!(pe::predict_pcr11_sha256(&ev), [0u8; 32]);
}

/// Full chain under real firmware: OVMF boots `EFI/BOOT/BOOTX64.EFI` from the ESP of
/// our GPT disk, systemd-stub starts the kernel with our cpio as initramfs, and its
/// `/init` prints a marker. Needs a kernel: `IMAGES_TEST_KERNEL=/path/to/vmlinuz`, or
/// `/boot/vmlinuz-*` (package linux-image-amd64 or linux-image-cloud-amd64).
#[test]
fn disk_boots_in_qemu_with_ovmf() {
    let Some(stub) = real_stub() else {
        return;
    };
    let kernel = std::env::var_os("IMAGES_TEST_KERNEL")
        .map(PathBuf::from)
        .or_else(|| {
            let mut k: Vec<PathBuf> = std::fs::read_dir("/boot")
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
                })
                .collect();
            k.sort();
            k.pop()
        });
    let Some(kernel) = kernel else {
        eprintln!(
            "SKIP: no kernel (set IMAGES_TEST_KERNEL or install package linux-image-cloud-amd64)"
        );
        return;
    };
    let Some(qemu) = tool("qemu-system-x86_64", "qemu-system-x86") else {
        return;
    };
    let ovmf_code = Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd");
    let ovmf_vars = Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd");
    if !ovmf_code.exists() || !ovmf_vars.exists() {
        eprintln!("SKIP: OVMF firmware not found (install package ovmf)");
        return;
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        eprintln!("SKIP: /bin/busybox not found (install package busybox-static)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut initrd = CpioBuilder::new(Epoch(1_700_000_000)).unwrap();
    initrd.add_file("init", 0o755, INIT.to_vec()).unwrap();
    initrd
        .add_file("bin/busybox", 0o755, Content::File(busybox.to_owned()))
        .unwrap();
    initrd.add_char_device("dev/console", 0o600, 5, 1).unwrap();
    initrd.add_dir("sys", 0o555).unwrap();
    let initrd_path = dir.path().join("initrd.cpio");
    initrd
        .write_to(std::fs::File::create(&initrd_path).unwrap())
        .unwrap();
    let mut uki = UkiBuilder::new(stub);
    uki.osrel(b"ID=appliance\n".to_vec()).unwrap();
    uki.cmdline(b"console=ttyS0 panic=-1 quiet".to_vec())
        .unwrap();
    uki.initrd(std::fs::read(&initrd_path).unwrap()).unwrap();
    uki.linux(std::fs::read(&kernel).unwrap()).unwrap();
    let uki = uki.build().unwrap();
    let expected_pcr11: String = {
        let pe = PeFile::parse(&uki).unwrap();
        let ev = pe::pcr11_measurements(&pe, pe::StubGeneration::Systemd252);
        pe::predict_pcr11_sha256(&ev)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    };
    let layout = images::ab::ApplianceLayout {
        ids: images::ab::DiskIds::derive(&digest(5)),
        esp_size: ByteLen::mib(64),
        state_size: Some(ByteLen::mib(1)),
        timestamp: Epoch(1_700_000_000),
        boot_loader: std::fs::read("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
            .expect("systemd-boot-efi (scripts/test installs it)")
            .into(),
        ukis: vec![(
            images::ab::uki_file_name("appliance", "1", None),
            uki.into(),
        )],
        reserve: ByteLen(0),
    };
    let disk = dir.path().join("disk.img");
    layout
        .disk(&dir.path().join("esp.img"))
        .unwrap()
        .write_file(&disk)
        .unwrap();
    let vars = dir.path().join("vars.fd");
    std::fs::copy(ovmf_vars, &vars).unwrap();
    let serial = dir.path().join("serial.log");
    // A software TPM, so systemd-stub measures the UKI into PCR 11 for real.
    let tpm_sock = dir.path().join("swtpm.sock");
    let mut swtpm = tool("swtpm", "swtpm").map(|swtpm| {
        let state = dir.path().join("tpm");
        std::fs::create_dir(&state).unwrap();
        let child = Command::new(swtpm)
            .args(["socket", "--tpm2", "--terminate", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", tpm_sock.display()))
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if tpm_sock.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child
    });
    let mut qemu_cmd = Command::new(qemu);
    if swtpm.is_some() {
        qemu_cmd
            .arg("-chardev")
            .arg(format!("socket,id=chrtpm,path={}", tpm_sock.display()))
            .args([
                "-tpmdev",
                "emulator,id=tpm0,chardev=chrtpm",
                "-device",
                "tpm-tis,tpmdev=tpm0",
            ]);
    }
    let mut child = qemu_cmd
        .args([
            "-machine",
            "q35,accel=tcg",
            "-m",
            "512",
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,readonly=on,file={}",
            ovmf_code.display()
        ))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .arg("-drive")
        .arg(format!("if=ide,format=raw,file={}", disk.display()))
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args(["-monitor", "none", "-display", "none"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("qemu.err")).unwrap())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let limit = std::time::Duration::from_secs(
        std::env::var("IMAGES_TEST_BOOT_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300),
    );
    let finished = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        let log = std::fs::read(&serial).unwrap_or_default();
        if String::from_utf8_lossy(&log).contains("APPLIANCE-BOOT-OK") || start.elapsed() > limit {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
    }
    if let Some(mut t) = swtpm.take() {
        let _ = t.kill();
        let _ = t.wait();
    }
    let log = String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    eprintln!("boot took {:?}", start.elapsed());
    let err = std::fs::read_to_string(dir.path().join("qemu.err")).unwrap_or_default();
    if std::env::var_os("IMAGES_TEST_KEEP").is_some() {
        let _ = std::fs::copy(&disk, std::env::temp_dir().join("images-boot-test.img"));
    }
    assert!(
        log.contains("APPLIANCE-BOOT-OK"),
        "no boot marker; serial log:\n{log}\nqemu stderr:\n{err}"
    );
    if log.contains("PCR11=") {
        assert!(
            log.contains(&format!("PCR11={expected_pcr11}")),
            "PCR 11 differs from the prediction {expected_pcr11}:\n{log}"
        );
        eprintln!("PCR 11 after boot equals the prediction {expected_pcr11}");
    } else {
        eprintln!("SKIP: PCR 11 check needs swtpm (install package swtpm)");
    }
}

/// `/init` of the boot test: prints PCR 11 (if a TPM is there) and a marker.
const INIT: &[u8] = b"#!/bin/busybox sh
/bin/busybox mount -t sysfs sysfs /sys
if [ -e /sys/class/tpm/tpm0/pcr-sha256/11 ]; then
  /bin/busybox echo \"PCR11=$(/bin/busybox cat /sys/class/tpm/tpm0/pcr-sha256/11)\"
fi
/bin/busybox echo APPLIANCE-BOOT-OK
/bin/busybox poweroff -f
";
