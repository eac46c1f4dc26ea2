//! Stage 6, the UKI: systemd-stub (from the lock) with `.osrel`, `.cmdline`
//! (which pins the runtime plan's digest), `.uname`, `.linux` and `.initrd`;
//! and the boot loader that starts it, systemd-boot from the same package;
//! both signed for UEFI Secure Boot when the build is asked to. Their
//! digests (file and Authenticode) and the sections' digests go into the
//! manifest.

use components::{Deb, EntryKind};

use super::fetch::Fetched;
use super::initramfs::Initramfs;
use super::parts::Kernel;
use super::profile::Resolved;
use super::render::Rendered;
use super::{hexd, sha256};
use crate::locking::STUB_PACKAGE;
use crate::manifest;
use crate::{BuildError, BuildOptions};

/// Where systemd-boot-efi puts the stub.
const STUB_PATH: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// Where systemd-boot-efi puts systemd-boot.
pub(crate) const BOOT_LOADER_PATH: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// The boot loader (systemd-boot), as it goes on the ESP.
pub(crate) struct BootLoader {
    /// The image (signed when Secure Boot signing was asked for).
    pub bytes: Vec<u8>,
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// Its Authenticode SHA-256 (what the firmware measures).
    pub authenticode: [u8; 32],
    /// `package version`.
    pub package: String,
}

/// The unified kernel image and what the manifest says of it.
pub(crate) struct Uki {
    /// The image (signed when Secure Boot signing was asked for).
    pub bytes: Vec<u8>,
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// Its Authenticode SHA-256 (what the firmware measures).
    pub authenticode: [u8; 32],
    /// The kernel command line.
    pub cmdline: String,
    /// Each section's size and digest.
    pub sections: Vec<manifest::Section>,
    /// SHA-256 of the kernel image inside.
    pub kernel_sha256: [u8; 32],
    /// The boot loader that starts it.
    pub boot_loader: BootLoader,
}

/// Builds the UKI from the stub package, the kernel and the initramfs.
pub(crate) fn build(
    opts: &BuildOptions,
    input: &Resolved,
    fetched: &Fetched,
    kernel: &Kernel,
    rendered: &Rendered,
    initramfs: Initramfs,
) -> Result<Uki, BuildError> {
    let (stub, loader) = {
        let bytes = std::fs::read(fetched.deb_path(STUB_PACKAGE)?)
            .map_err(BuildError::io("reading", STUB_PACKAGE))?;
        let deb = Deb::parse(&bytes)?;
        let entries = deb.data_entries_where(|p| p == STUB_PATH || p == BOOT_LOADER_PATH)?;
        let take = |path: &str| {
            entries
                .iter()
                .find(|e| e.path == path)
                .and_then(|e| match &e.kind {
                    EntryKind::File { data, .. } => Some(data.clone()),
                    _ => None,
                })
                .ok_or_else(|| BuildError::Binary(format!("{STUB_PACKAGE} has no {path}")))
        };
        (take(STUB_PATH)?, take(BOOT_LOADER_PATH)?)
    };
    let package = fetched
        .lock()
        .packages
        .iter()
        .find(|p| p.name.to_string() == STUB_PACKAGE)
        .map(|p| format!("{} {}", p.name, p.version))
        .unwrap_or_else(|| STUB_PACKAGE.to_string());
    let mut cmdline = format!(
        "console=ttyS0 panic=-1 appliance.plan={}",
        rendered.plan_digest.to_hex()
    );
    // The microvm runtime passes cards through by VFIO: the IOMMU must be on
    // (AMD's is by default, Intel's is not in Debian's kernel).
    if input.profile.appliance.runtime == profiles::Runtime::Microvm {
        cmdline.push_str(" intel_iommu=on");
    }
    for w in &input.profile.kernel.cmdline {
        cmdline.push(' ');
        cmdline.push_str(w);
    }
    let k = &kernel.part;
    let kernel_image = std::fs::read(&k.vmlinuz).map_err(BuildError::io("reading", &k.vmlinuz))?;
    let kernel_sha256 = sha256(&kernel_image);
    let mut uki_b = images::pe::UkiBuilder::new(stub);
    uki_b
        .osrel(rendered.os_release.clone().into_bytes())?
        .cmdline(cmdline.clone().into_bytes())?
        .uname(k.version.clone().into_bytes())?
        .linux(kernel_image)?
        .initrd(initramfs.bytes)?;
    let mut uki = uki_b.build()?;
    // With a release key: the PCR policy under which the device identity key signs
    // (PCR 11 as this UKI leaves it), in `.pcrsig`, which systemd-stub does not
    // measure: adding it changes PCR 4 (the file), never PCR 11.
    if let Some(key) = &opts.signing_key {
        let p = signing::measure::predict(&uki, None, None)
            .map_err(|e| BuildError::Binary(format!("PCR prediction: {e}")))?;
        let mut pcr11 = [0u8; 32];
        hex::decode_to_slice(&p.pcr11.sha256, &mut pcr11)
            .map_err(|e| BuildError::Binary(format!("PCR 11 prediction: {e}")))?;
        let signed = signing::pcr_policy::sign(key, &pcr11)
            .map_err(|e| BuildError::Binary(format!("signing the PCR policy: {e}")))?;
        uki_b.section(attest_wire::policy::SECTION, signed.to_text().into_bytes())?;
        uki = uki_b.build()?;
    }
    let mut loader = loader;
    if let Some(sb) = &opts.secure_boot {
        uki = sb
            .sign(&uki)
            .map_err(|e| BuildError::SecureBoot(format!("Secure Boot signing: {e}")))?;
        loader = sb.sign(&loader).map_err(|e| {
            BuildError::SecureBoot(format!("Secure Boot signing of systemd-boot: {e}"))
        })?;
    }
    let boot_loader = BootLoader {
        sha256: sha256(&loader),
        authenticode: images::pe::authenticode_sha256(&loader)?,
        bytes: loader,
        package,
    };
    let uki_sha256 = sha256(&uki);
    let authenticode = images::pe::authenticode_sha256(&uki)?;
    let pe = images::pe::PeFile::parse(&uki)?;
    let sections: Vec<manifest::Section> = [".osrel", ".cmdline", ".uname", ".linux", ".initrd"]
        .iter()
        .filter_map(|n| {
            let s = pe.section(n)?;
            Some(manifest::Section {
                name: n.to_string(),
                size: u64::from(s.virtual_size),
                sha256: hexd(&sha256(&pe.memory_data(s))),
            })
        })
        .collect();
    Ok(Uki {
        bytes: uki,
        sha256: uki_sha256,
        authenticode,
        cmdline,
        sections,
        kernel_sha256,
        boot_loader,
    })
}
