//! `[image]` (disk size, ESP size, A/B slots, output formats) and
//! `[signing]` (key paths, relative to the profile).

use std::path::Path;

use crate::model::*;
use crate::raw::*;
use crate::units::{ByteSize, Seconds};

use super::checker::{list, V};

/// Smallest ESP accepted, and the figure the profile reference prints.
///
/// FAT32 needs at least 65525 clusters (with fewer, a volume is FAT16 by
/// definition). The ESP writer (`images::fat`) uses 512-byte clusters below
/// 260 MiB, 32 reserved sectors and two FATs of 4-byte entries, so the
/// smallest FAT32 volume is 65525 clusters + 2 × 512 FAT sectors + 32
/// reserved sectors = 34 089 472 bytes (32.5 MiB). The ESP is a whole number
/// of MiB, so the minimum is that rounded up: 33 MiB.
pub const MIN_ESP: ByteSize = ByteSize(min_esp_bytes());

const fn min_esp_bytes() -> u64 {
    const SECTOR: u64 = 512;
    const MIN_CLUSTERS: u64 = 65525;
    const RESERVED_SECTORS: u64 = 32;
    const FATS: u64 = 2;
    const MIB: u64 = 1 << 20;
    // Each FAT holds a 4-byte entry per cluster plus the two reserved entries.
    let fat_sectors = ((MIN_CLUSTERS + 2) * 4).div_ceil(SECTOR);
    let volume = (RESERVED_SECTORS + FATS * fat_sectors + MIN_CLUSTERS) * SECTOR;
    volume.div_ceil(MIB) * MIB
}

/// `[image]`: a disk size in whole MiB that holds the ESP and the partition
/// tables, an ESP of at least [`MIN_ESP`] in whole MiB, the slots and the
/// output formats.
pub(super) fn image(v: &mut V<'_>, i: &Sp<RawImage>) -> Option<Image> {
    let t = "image";
    let size = v
        .req(&i.size, &i.span, t, "size")
        .and_then(|s| v.parse(s, "image.size", ByteSize::parse));
    let esp_size = match &i.esp_size {
        None => Some(ByteSize(256 << 20)),
        Some(s) => v.parse(s, "image.esp_size", |x| {
            let b = ByteSize::parse(x)?;
            if b < MIN_ESP {
                return Err(format!(
                    "`{x}` is too small for a FAT32 ESP (65525 clusters or more); use at least `{MIN_ESP}`"
                ));
            }
            if b.0 % (1 << 20) != 0 {
                return Err(match b.0.checked_next_multiple_of(1 << 20) {
                    Some(up) => format!(
                        "`{x}` is not a whole number of MiB (partitions are aligned to 1 MiB); use `{}`",
                        ByteSize(up)
                    ),
                    None => format!("`{x}` is not a whole number of MiB"),
                });
            }
            Ok(b)
        }),
    };
    let slots = match &i.slots {
        None => Some(Slots::Ab),
        Some(s) => v.one_of(
            s,
            "image.slots",
            &[("ab", Slots::Ab), ("single", Slots::Single)],
        ),
    };
    let boot_tries = match &i.boot_tries {
        None => Some(3),
        Some(t) if (1..=10).contains(&t.value) => Some(t.value as u32),
        Some(t) => {
            v.err(
                &t.span,
                "image.boot_tries",
                format!("{} tries: give 1 to 10", t.value),
            );
            None
        }
    };
    let boot_timeout_s = match &i.boot_timeout {
        None => Some(300),
        Some(t) => v.parse(t, "image.boot_timeout", |x| {
            let d = Seconds::parse(x)?;
            if !(30..=3600).contains(&d.0) {
                return Err(format!(
                    "`{x}` is outside 30s..1h (a boot needs time to come up; an hour is the most a trial boot may take)"
                ));
            }
            Ok(d.0 as u32)
        }),
    };
    let good_when = match &i.good_when {
        None => Some(GoodWhen::Ready),
        Some(g) => v.one_of(
            g,
            "image.good_when",
            &[
                ("ready", GoodWhen::Ready),
                ("tunnels-up", GoodWhen::TunnelsUp),
            ],
        ),
    };
    let mut qcow2 = false;
    let mut ok = true;
    for (j, f) in list(&i.formats).iter().enumerate() {
        match f.value.as_str() {
            "raw" => {}
            "qcow2" => qcow2 = true,
            other => {
                v.err(
                    &f.span,
                    format!("image.formats[{j}]"),
                    format!("unknown format `{other}`; use raw or qcow2"),
                );
                ok = false;
            }
        }
    }
    if let (Some(size), Some(esp), Some(s)) = (size, esp_size, &i.size) {
        // GPT needs 1 MiB at the start and 1 MiB (rounded) at the end.
        let need = esp.0.saturating_add(2 << 20);
        if size.0 < need {
            v.err(&s.span, "image.size", format!("disk size {size} cannot hold the {esp} ESP plus the partition tables; use at least `{}`", ByteSize(need)));
            ok = false;
        }
        if size.0 % (1 << 20) != 0 {
            v.err(
                &s.span,
                "image.size",
                "disk size must be a whole number of MiB",
            );
            ok = false;
        }
    }
    ok.then_some(())?;
    Some(Image {
        size: size?,
        esp_size: esp_size?,
        slots: slots?,
        boot_tries: boot_tries?,
        boot_timeout_s: boot_timeout_s?,
        good_when: good_when?,
        qcow2,
    })
}

/// `[signing]`: key paths relative to the profile's directory.
pub(super) fn signing(path: &Path, s: &Sp<RawSigning>) -> Signing {
    let dir = path.parent().unwrap_or(Path::new("."));
    Signing {
        key: s.key.as_ref().map(|k| dir.join(&k.value)),
        public_key: s.public_key.as_ref().map(|k| dir.join(&k.value)),
        secure_boot: s.secure_boot.as_ref().is_some_and(|b| b.value),
    }
}
