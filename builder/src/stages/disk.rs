//! Stage 7, the disk: the ESP (FAT32, A/B UKIs) and the GPT disk around it,
//! written once, its block map for flashing (`disk.img.bmap`: every byte
//! meant to be on the device — both GPT copies, the ESP's reserved sectors,
//! both FATs, directories and files — see [`images::bmap`]), and the digests
//! the manifest records; then the qcow2 copy where the profile (or the
//! command line) asks for one.
//!
//! The ESP is assembled in memory and written straight into the disk image
//! at its partition (only clusters holding data are written: the image is
//! sparse). The digests are then taken from the written file in two threads,
//! one over the whole disk and one over each partition, reading holes as
//! zeros without reading them from the disk.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use images::ab::{
    uki_file_name, ApplianceLayout, DiskIds, DEFAULT_BOOT_PATH, LINUX_DIR, LOADER_CONF,
    LOADER_CONF_PATH,
};
use images::bmap::BlockMap;
use images::{ByteLen, Content, Epoch};
use profiles::{Profile, Slots};
use sha2::{Digest, Sha256};

use super::commit::Staging;
use super::hexd;
use super::uki::Uki;
use crate::manifest;
use crate::{BuildError, BuildOptions};

/// The disk image in the staging directory, and the digests of what the
/// output directory holds so far.
pub(crate) struct Written {
    /// What the disk stage wrote and measured.
    pub disk: Disk,
    /// The layout it wrote.
    pub layout: ApplianceLayout,
    /// Output file name → SHA-256 (hex).
    pub outputs: BTreeMap<String, String>,
}

/// Writes `disk.img` (the UKI in slot A, and in slot B for an A/B profile)
/// and `uki.efi` into `staging`.
pub(crate) fn write(
    profile: &Profile,
    epoch: Epoch,
    uki: &Uki,
    staging: &Staging,
) -> Result<Written, BuildError> {
    let uki_content = Content::from(uki.bytes.clone());
    let a = &profile.appliance;
    let layout = ApplianceLayout {
        ids: DiskIds::derive(&uki.sha256),
        esp_size: ByteLen(profile.image.esp_size.0),
        state_size: None,
        timestamp: epoch,
        boot_loader: Content::from(uki.boot_loader.bytes.clone()),
        ukis: vec![(uki_file_name(&a.name, &a.version, None), uki_content)],
        // An A/B image keeps room for two more UKIs, each a quarter larger
        // than this one: while an update is written the ESP holds the
        // running UKI, the other slot's and the new one.
        reserve: ByteLen(match profile.image.slots {
            Slots::Ab => 2 * (uki.bytes.len() as u64 + uki.bytes.len() as u64 / 4),
            Slots::Single => 0,
        }),
    };
    let disk_path = staging.join("disk.img");
    let disk = write_disk(&layout, ByteLen(profile.image.size.0), &disk_path)
        .map_err(|e| esp_too_small(e, profile, uki.bytes.len() as u64, &layout))?;
    staging.write("uki.efi", &uki.bytes)?;
    // The boot loader as on the ESP, for `appliance measure` and auditors.
    staging.write("bootx64.efi", &uki.boot_loader.bytes)?;
    // The block map for flashing (`bmaptool copy` reads it too). Never a
    // detached signature beside it: its digest is in the signed manifest.
    let bmap = {
        let mut f =
            std::fs::File::open(&disk_path).map_err(BuildError::io("reading", &disk_path))?;
        disk.map.to_xml(&mut f)?
    };
    staging.write("disk.img.bmap", bmap.as_bytes())?;
    let mut outputs = BTreeMap::new();
    outputs.insert("disk.img".to_string(), hexd(&disk.sha256));
    outputs.insert(
        "disk.img.bmap".to_string(),
        hexd(&Sha256::digest(bmap.as_bytes()).into()),
    );
    outputs.insert("uki.efi".to_string(), hexd(&uki.sha256));
    outputs.insert("bootx64.efi".to_string(), hexd(&uki.boot_loader.sha256));
    Ok(Written {
        disk,
        layout,
        outputs,
    })
}

/// Whether the build writes `disk.qcow2` too.
pub(crate) fn wants_qcow2(opts: &BuildOptions, profile: &Profile) -> bool {
    opts.qcow2.unwrap_or(profile.image.qcow2)
}

/// Converts `disk.img` into `disk.qcow2` beside it.
pub(crate) fn qcow2(staging: &Staging, written: &mut Written) -> Result<(), BuildError> {
    let q = staging.join("disk.qcow2");
    images::qcow2::convert_raw_to_qcow2(&staging.join("disk.img"), &q)?;
    written.outputs.insert(
        "disk.qcow2".to_string(),
        hexd(&components::cache::hash_file(&q)?.0),
    );
    Ok(())
}

/// The disk's GUID, as the manifest spells it.
pub(crate) fn disk_guid(l: &ApplianceLayout) -> String {
    l.ids.disk.to_string()
}

/// An ESP that cannot hold the UKIs of this build, as a located profile error.
fn esp_too_small(
    e: BuildError,
    profile: &Profile,
    uki_len: u64,
    layout: &ApplianceLayout,
) -> BuildError {
    let BuildError::Image(images::Error::FatDoesNotFit { suggested_size, .. }) = e else {
        return e;
    };
    let mib = |b: u64| b.div_ceil(1 << 20);
    let location = profiles::find_in_sources(profile, "esp_size")
        .map(|(f, l, c)| format!("{}:{l}:{c}: ", f.display()))
        .unwrap_or_default();
    BuildError::EspTooSmall {
        location,
        message: format!(
            "{} MiB cannot hold this image's boot files: systemd-boot and the UKI ({:.1} MiB){}; give at least esp_size = \"{}MiB\"",
            mib(profile.image.esp_size.0),
            uki_len as f64 / f64::from(1u32 << 20),
            if layout.reserve.0 > 0 {
                ", with room for an update's UKI (slots = \"ab\")"
            } else {
                ""
            },
            mib(suggested_size),
        ),
    }
}

/// What the disk stage wrote and measured.
pub(crate) struct Disk {
    /// SHA-256 of the whole disk image.
    pub sha256: [u8; 32],
    /// Each partition with its digest.
    pub partitions: Vec<manifest::Partition>,
    /// The ESP: digest, size and each file's digest.
    pub esp: manifest::EspInfo,
    /// The blocks a flasher must write.
    pub map: BlockMap,
}

/// Writes `layout` as a GPT disk of `size` bytes to `path`.
pub(crate) fn write_disk(
    layout: &ApplianceLayout,
    size: ByteLen,
    path: &Path,
) -> Result<Disk, BuildError> {
    let fat = layout.esp()?;
    let (esp, fat_layout) = fat.to_vec_with_layout()?;
    let esp: std::sync::Arc<[u8]> = esp.into();
    let mut gpt = layout.gpt(Content::Bytes(esp.clone()))?;
    gpt.disk_size(size);
    let disk = gpt.write_file(path)?;
    drop(gpt);
    // What must be on a device: both GPT copies, and the ESP up to its last
    // used cluster (reserved sectors, both FATs, directories, files).
    let mut map = BlockMap::new(disk.size);
    for (offset, len) in disk.metadata_ranges() {
        map.map(offset, len);
    }
    if let Some(p) = disk.partitions.first() {
        map.map(p.offset().0, fat_layout.written_len.0);
    }

    let (whole, parts) = std::thread::scope(|s| {
        let whole = s.spawn(|| hash_range(path, 0, disk.size.0));
        let parts: Vec<_> = disk
            .partitions
            .iter()
            .map(|p| hash_range(path, p.offset().0, p.size().0))
            .collect();
        (whole.join(), parts)
    });
    let sha256 =
        whole.map_err(|_| BuildError::Binary("hashing the disk image failed".into()))??;
    let mut partitions = Vec::new();
    for (p, digest) in disk.partitions.iter().zip(parts) {
        partitions.push(manifest::Partition {
            number: p.number,
            name: p.name.clone(),
            type_guid: p.type_guid.to_string(),
            guid: p.unique_guid.to_string(),
            first_lba: p.first.0,
            last_lba: p.last.0,
            sha256: hex::encode(digest?),
        });
    }
    // The ESP is the first partition, exactly its size.
    let esp_digest = match (disk.partitions.first(), partitions.first()) {
        (Some(p), Some(m)) if p.size().0 == esp.len() as u64 => m.sha256.clone(),
        _ => hex::encode(Sha256::digest(&esp[..])),
    };
    let mut files = BTreeMap::new();
    let mut put = |path: &str, c: &Content| -> Result<(), BuildError> {
        files.insert(path.to_string(), hex::encode(Sha256::digest(c.read_all()?)));
        Ok(())
    };
    put(DEFAULT_BOOT_PATH, &layout.boot_loader)?;
    put(
        LOADER_CONF_PATH,
        &Content::from(LOADER_CONF.as_bytes().to_vec()),
    )?;
    for (name, c) in &layout.ukis {
        put(&format!("{LINUX_DIR}/{name}"), c)?;
    }
    Ok(Disk {
        sha256,
        partitions,
        esp: manifest::EspInfo {
            sha256: esp_digest,
            size: esp.len() as u64,
            files,
        },
        map,
    })
}

/// SHA-256 of `len` bytes of `path` from `offset`, the file's holes read as
/// zeros without reading them.
pub(crate) fn hash_range(path: &Path, offset: u64, len: u64) -> Result<[u8; 32], BuildError> {
    let io = |e: std::io::Error| BuildError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source: e,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let end = offset + len;
    let zeros = vec![0u8; 1 << 20];
    let mut buf = vec![0u8; 1 << 20];
    let mut h = Sha256::new();
    let mut pos = offset;
    let feed_zeros = |h: &mut Sha256, mut n: u64| {
        while n > 0 {
            let k = n.min(zeros.len() as u64) as usize;
            h.update(&zeros[..k]);
            n -= k as u64;
        }
    };
    while pos < end {
        // Where the next data starts (ENXIO: only a hole is left).
        let data = match rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(pos)) {
            Ok(d) => d.min(end),
            Err(rustix::io::Errno::NXIO) => end,
            Err(e) => return Err(io(e.into())),
        };
        feed_zeros(&mut h, data - pos);
        pos = data;
        if pos >= end {
            break;
        }
        let hole = match rustix::fs::seek(&f, rustix::fs::SeekFrom::Hole(pos)) {
            Ok(h) => h.min(end),
            Err(e) => return Err(io(e.into())),
        };
        f.seek(SeekFrom::Start(pos)).map_err(io)?;
        let mut left = hole - pos;
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..k]).map_err(io)?;
            h.update(&buf[..k]);
            left -= k as u64;
        }
        pos = hole;
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn sparse_hash_equals_plain_hash() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let mut f = std::fs::File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        f.seek(SeekFrom::Start(3 << 20)).unwrap();
        f.write_all(&[0xAB; 70_000]).unwrap();
        f.seek(SeekFrom::Start((8 << 20) - 5)).unwrap();
        f.write_all(b"tail!").unwrap();
        drop(f);
        let all = std::fs::read(&p).unwrap();
        for (off, len) in [
            (0u64, 8u64 << 20),
            (1, 100),
            (3 << 20, 70_000),
            ((3 << 20) + 5, 1 << 20),
            ((8 << 20) - 7, 7),
        ] {
            let want: [u8; 32] = Sha256::digest(&all[off as usize..(off + len) as usize]).into();
            assert_eq!(hash_range(&p, off, len).unwrap(), want, "{off} {len}");
        }
    }
}
