//! `appliance verify`: check the manifest's signature, then recompute every
//! digest from the image itself and name each one that differs.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::keys::PublicKey;
use crate::manifest::Manifest;

/// Name of the manifest in an output directory.
pub const MANIFEST: &str = "manifest.json";
/// Name of its detached signature.
pub const SIGNATURE: &str = "manifest.sig";
/// Name of the reference-values file.
pub const REFERENCE_VALUES: &str = "reference-values.json";

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked (`disk.img`, `partition 1 (esp)`, `uki section .linux`, …).
    pub name: String,
    /// Whether it matched.
    pub ok: bool,
    /// What the manifest says (when a digest or value is compared).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// What the image holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    /// Explanation for failures (and skipped checks).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The result of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The manifest that was checked.
    pub manifest: PathBuf,
    /// Signer fingerprint (the key given).
    pub key: String,
    /// Appliance name, version and security version from the manifest (if it parsed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appliance: Option<String>,
    /// Every check, in order.
    pub checks: Vec<Check>,
}

impl Report {
    /// True when every check passed.
    pub fn ok(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }

    fn push(&mut self, name: impl Into<String>, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            ok,
            expected: None,
            actual: None,
            detail: detail.into(),
        });
    }

    fn cmp(&mut self, name: impl Into<String>, expected: &str, actual: &str) {
        let ok = expected == actual;
        self.checks.push(Check {
            name: name.into(),
            ok,
            expected: Some(expected.to_string()),
            actual: Some(actual.to_string()),
            detail: if ok { String::new() } else { "differs".into() },
        });
    }
}

/// Errors that stop verification before any check (missing files).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VerifyError + '_ {
    move |source| VerifyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Verify an output directory, or a disk image with its manifest beside it.
pub fn verify(target: &Path, key: &PublicKey) -> Result<Report, VerifyError> {
    let (dir, disk, whole_dir) = if target.is_dir() {
        (target.to_path_buf(), target.join("disk.img"), true)
    } else {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (dir, target.to_path_buf(), false)
    };
    let manifest_path = dir.join(MANIFEST);
    let mut r = Report {
        manifest: manifest_path.clone(),
        key: key.fingerprint(),
        appliance: None,
        checks: Vec::new(),
    };
    let manifest_bytes = std::fs::read(&manifest_path).map_err(io(&manifest_path))?;
    let sig_path = dir.join(SIGNATURE);
    match std::fs::read(&sig_path) {
        Ok(sig) => match key.verify(&manifest_bytes, &sig) {
            Ok(()) => r.push(SIGNATURE, true, format!("signed by {}", key.fingerprint())),
            Err(e) => r.push(
                SIGNATURE,
                false,
                format!(
                    "{e}: manifest.json or its signature was changed, or another key signed it"
                ),
            ),
        },
        Err(e) => r.push(
            SIGNATURE,
            false,
            format!("{}: {e} (sign with `appliance sign`)", sig_path.display()),
        ),
    }
    let m = match Manifest::from_json(&manifest_bytes) {
        Ok(m) => m,
        Err(e) => {
            r.push(MANIFEST, false, format!("does not parse: {e}"));
            return Ok(r);
        }
    };
    r.appliance = Some(format!(
        "{} {} (security version {})",
        m.profile.name, m.profile.version, m.profile.security_version
    ));

    check_disk(&mut r, &m, &disk)?;

    // Other outputs.
    for (name, want) in &m.outputs {
        if name == "disk.img" {
            continue;
        }
        let p = dir.join(name);
        if !p.exists() {
            if whole_dir {
                r.push(name.clone(), false, "missing from the output directory");
            }
            continue;
        }
        let got = hash_file(&p)?;
        r.cmp(name.clone(), want, &got);
    }
    if let Some(refv) = m.outputs.get(REFERENCE_VALUES) {
        let _ = refv;
        let p = dir.join(REFERENCE_VALUES);
        if let Ok(bytes) = std::fs::read(&p) {
            match serde_json::from_slice::<crate::measure::ReferenceValues>(&bytes) {
                Ok(rv) => {
                    let s = rv.prediction.summary();
                    r.push(
                        "reference values match manifest PCRs",
                        s == m.pcrs,
                        if s == m.pcrs {
                            ""
                        } else {
                            "reference-values.json predicts other PCR values than manifest.json"
                        },
                    );
                }
                Err(e) => r.push(REFERENCE_VALUES, false, format!("does not parse: {e}")),
            }
        }
    }
    Ok(r)
}

fn hash_file(p: &Path) -> Result<String, VerifyError> {
    let mut f = File::open(p).map_err(io(p))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(p))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// One pass over the disk: whole-disk digest and each partition's digest.
fn check_disk(r: &mut Report, m: &Manifest, disk: &Path) -> Result<(), VerifyError> {
    let mut f = File::open(disk).map_err(io(disk))?;
    let len = f.metadata().map_err(io(disk))?.len();
    if len != m.disk.size {
        r.cmp("disk.img size", &m.disk.size.to_string(), &len.to_string());
    }
    // GPT as read back (headers, CRCs, entries).
    let gpt = images::gpt::read_gpt_file(disk);
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    match &gpt {
        Ok(g) => {
            r.cmp("gpt disk guid", &m.disk.guid, &g.disk_guid.to_string());
            if g.partitions.len() != m.disk.partitions.len() {
                r.cmp(
                    "gpt partition count",
                    &m.disk.partitions.len().to_string(),
                    &g.partitions.len().to_string(),
                );
            }
            for mp in &m.disk.partitions {
                let label = format!("partition {} ({})", mp.number, mp.name);
                match g.partitions.iter().find(|p| p.number == mp.number) {
                    Some(p) => {
                        let want = format!(
                            "{} {} {} {}..{}",
                            mp.name, mp.type_guid, mp.guid, mp.first_lba, mp.last_lba
                        );
                        let got = format!(
                            "{} {} {} {}..{}",
                            p.name, p.type_guid, p.unique_guid, p.first.0, p.last.0
                        );
                        if want != got {
                            r.cmp(format!("{label} entry"), &want, &got);
                        }
                    }
                    None => r.push(format!("{label} entry"), false, "not in the GPT"),
                }
            }
            r.push("gpt", true, "");
        }
        Err(e) => r.push("gpt", false, format!("{e}")),
    }
    // Partition contents are checked where the manifest says they are, even
    // when the GPT itself is damaged.
    for mp in &m.disk.partitions {
        ranges.push((
            mp.first_lba.saturating_mul(images::SECTOR_SIZE),
            mp.last_lba
                .saturating_add(1)
                .saturating_mul(images::SECTOR_SIZE),
        ));
    }
    // Stream the disk once.
    let mut disk_h = Sha256::new();
    let mut part_h: Vec<Sha256> = ranges.iter().map(|_| Sha256::new()).collect();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    let esp_range = ranges.first().copied();
    let mut esp_bytes: Vec<u8> = Vec::new();
    loop {
        let n = f.read(&mut buf).map_err(io(disk))?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        disk_h.update(chunk);
        let (a, b) = (pos, pos + n as u64);
        for (i, (s, e)) in ranges.iter().enumerate() {
            let lo = a.max(*s);
            let hi = b.min(*e);
            if lo < hi {
                part_h[i].update(&chunk[(lo - a) as usize..(hi - a) as usize]);
            }
        }
        if let Some((s, e)) = esp_range {
            let lo = a.max(s);
            let hi = b.min(e.min(s + m.esp.size));
            if lo < hi {
                esp_bytes.extend_from_slice(&chunk[(lo - a) as usize..(hi - a) as usize]);
            }
        }
        pos = b;
    }
    r.cmp("disk.img", &m.disk.sha256, &hex::encode(disk_h.finalize()));
    for (mp, h) in m.disk.partitions.iter().zip(part_h) {
        r.cmp(
            format!("partition {} ({})", mp.number, mp.name),
            &mp.sha256,
            &hex::encode(h.finalize()),
        );
    }
    if esp_range.is_none() {
        r.push("esp", false, "the manifest lists no partitions");
        return Ok(());
    }
    r.cmp(
        "esp",
        &m.esp.sha256,
        &hex::encode(Sha256::digest(&esp_bytes)),
    );
    let vol = match images::fat::FatVolume::parse(&esp_bytes) {
        Ok(v) => v,
        Err(e) => {
            r.push("esp file system", false, format!("{e}"));
            return Ok(());
        }
    };
    let uki_path = m
        .boot_loader
        .as_ref()
        .map(|b| b.uki_path.clone())
        .or_else(|| {
            m.esp
                .files
                .iter()
                .find(|(p, d)| p.starts_with(images::ab::LINUX_DIR) && **d == m.uki.sha256)
                .map(|(p, _)| p.clone())
        })
        .unwrap_or_else(|| format!("{}/*.efi", images::ab::LINUX_DIR));
    let mut uki: Option<Vec<u8>> = None;
    let mut loader: Option<Vec<u8>> = None;
    for (path, want) in &m.esp.files {
        match vol.read_file(path) {
            Ok(data) => {
                r.cmp(
                    format!("esp:/{path}"),
                    want,
                    &hex::encode(Sha256::digest(&data)),
                );
                if *path == uki_path {
                    uki = Some(data);
                } else if m.boot_loader.as_ref().is_some_and(|b| b.path == *path) {
                    loader = Some(data);
                }
            }
            Err(e) => r.push(format!("esp:/{path}"), false, format!("{e}")),
        }
    }
    if let Some(b) = &m.boot_loader {
        let Some(l) = &loader else {
            r.push("boot loader", false, format!("no {} on the ESP", b.path));
            return Ok(());
        };
        r.cmp("boot loader", &b.sha256, &hex::encode(Sha256::digest(l)));
        match images::pe::authenticode_sha256(l) {
            Ok(a) => r.cmp(
                "boot loader authenticode",
                &b.authenticode_sha256,
                &hex::encode(a),
            ),
            Err(e) => r.push("boot loader authenticode", false, format!("{e}")),
        }
    }
    let Some(uki) = uki else {
        r.push("uki", false, format!("no {uki_path} on the ESP"));
        return Ok(());
    };
    check_uki(r, m, &uki, loader.as_deref());
    Ok(())
}

/// The UKI read from the ESP: file digest, Authenticode digest, sections,
/// command line, predicted PCRs.
fn check_uki(r: &mut Report, m: &Manifest, uki: &[u8], loader: Option<&[u8]>) {
    r.cmp("uki", &m.uki.sha256, &hex::encode(Sha256::digest(uki)));
    let pe = match images::pe::PeFile::parse(uki) {
        Ok(p) => p,
        Err(e) => {
            r.push("uki (PE)", false, format!("{e}"));
            return;
        }
    };
    match images::pe::authenticode_sha256(uki) {
        Ok(a) => r.cmp(
            "uki authenticode",
            &m.uki.authenticode_sha256,
            &hex::encode(a),
        ),
        Err(e) => r.push("uki authenticode", false, format!("{e}")),
    }
    for s in &m.uki.sections {
        match pe.section(&s.name) {
            Some(h) => r.cmp(
                format!("uki section {}", s.name),
                &s.sha256,
                &hex::encode(Sha256::digest(pe.memory_data(h))),
            ),
            None => r.push(format!("uki section {}", s.name), false, "missing"),
        }
    }
    if let Some(h) = pe.section(".cmdline") {
        let got = String::from_utf8_lossy(&pe.memory_data(h))
            .trim_end_matches('\0')
            .to_string();
        r.cmp("uki cmdline", &m.uki.cmdline, &got);
    }
    // One prediction, with the Secure Boot-on variables when the manifest
    // says the UKI is signed and the signature checks out.
    let signed = m
        .secure_boot
        .as_ref()
        .map(|_| crate::secure_boot::inspect(uki));
    let vars = match &signed {
        Some(Ok((_, v))) => Some(v),
        _ => None,
    };
    let p = match crate::measure::predict(uki, loader, vars) {
        Ok(p) => p,
        Err(e) => {
            r.push("predicted pcrs", false, format!("{e}"));
            return;
        }
    };
    r.cmp("predicted pcr 4", &m.pcrs.pcr4, &p.pcr4.sha256);
    r.cmp(
        "predicted pcr 7 (secure boot off)",
        &m.pcrs.pcr7_secure_boot_off,
        &p.pcr7_secure_boot_off.sha256,
    );
    r.cmp("predicted pcr 11", &m.pcrs.pcr11, &p.pcr11.sha256);
    r.cmp("predicted pcr 12", &m.pcrs.pcr12, &p.pcr12.sha256);
    let (Some(sb), Some(signed)) = (&m.secure_boot, signed) else {
        return;
    };
    match signed {
        Ok((signer, _)) => {
            r.push(
                "uki secure boot signature",
                true,
                format!("valid, signed by {}", signer.subject),
            );
            r.cmp(
                "uki secure boot signer",
                &sb.certificate_sha256,
                &signer.certificate_sha256,
            );
            match &m.pcrs.pcr7_secure_boot_on {
                Some(want) => {
                    let got = p.pcr7_secure_boot_on.map(|p| p.sha256).unwrap_or_default();
                    r.cmp("predicted pcr 7 (secure boot on)", want, &got);
                    let got4 = p.pcr4_secure_boot_on.map(|p| p.sha256).unwrap_or_default();
                    r.cmp(
                        "predicted pcr 4 (secure boot on)",
                        m.pcrs.pcr4_secure_boot_on.as_deref().unwrap_or_default(),
                        &got4,
                    );
                    let got12 = p.pcr12_secure_boot_on.map(|p| p.sha256).unwrap_or_default();
                    r.cmp(
                        "predicted pcr 12 (secure boot on)",
                        m.pcrs.pcr12_secure_boot_on.as_deref().unwrap_or_default(),
                        &got12,
                    );
                }
                None => r.push(
                    "predicted pcr 7 (secure boot on)",
                    false,
                    "missing from the manifest",
                ),
            }
        }
        Err(e) => r.push("uki secure boot signature", false, e),
    }
}
