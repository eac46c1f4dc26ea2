//! Compressed initramfs segments: writing them and reading an initramfs back
//! as the Linux kernel unpacks it.
//!
//! An initramfs is a sequence of newc archives, each stored plain or
//! compressed on its own, optionally separated by zero bytes; the kernel
//! unpacks them in order, a later entry replacing an earlier one of the same
//! path. [`compress`] makes one such compressed segment; [`segments`] splits
//! and decompresses a whole initramfs.
//!
//! Formats are those the kernel's initramfs decompressors accept:
//! - zstd, one frame per segment, with a window of at most 2^[`MAX_ZSTD_WINDOW_LOG`]
//!   bytes (the kernel allocates the window while unpacking);
//! - xz with a CRC32 integrity check (the kernel's xz decoder has no SHA-256
//!   and, in older kernels, no CRC64).
//!
//! Compression is deterministic: the same bytes and settings give the same
//! output, whatever the number of threads.

use crate::{Error, Result};

/// The largest zstd window (log2 bytes) written: 32 MiB. The image builder
/// uses 8 MiB (enough to refer back across the largest file of a
/// personality's root, small enough for a gateway with little memory to
/// unpack) but for the `microvm` runtime's VMM roots, whose second copy
/// refers back across QEMU (18 MB) and the guest kernel. Linux unpacks
/// windows up to 128 MiB.
pub const MAX_ZSTD_WINDOW_LOG: u32 = 25;

/// How a segment is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Stored as it is.
    None,
    /// zstd at `level` (1–22) with a window of 2^`window_log` bytes.
    Zstd {
        /// Compression level.
        level: i32,
        /// log2 of the window size (10–[`MAX_ZSTD_WINDOW_LOG`]).
        window_log: u32,
    },
    /// xz (LZMA2) at `preset` (0–9), CRC32 check.
    Xz {
        /// The preset (as `xz -N`).
        preset: u32,
    },
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::None => write!(f, "none"),
            Compression::Zstd { level, window_log } => {
                write!(f, "zstd-{level}-w{window_log}")
            }
            Compression::Xz { preset } => write!(f, "xz-{preset}"),
        }
    }
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
const XZ_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];
const NEWC_MAGIC: &[u8; 6] = b"070701";

fn codec(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| Error::Io {
        action: what,
        path: "initramfs segment".into(),
        source: e,
    }
}

/// Compresses one newc archive into an initramfs segment.
pub fn compress(data: &[u8], how: Compression) -> Result<Vec<u8>> {
    match how {
        Compression::None => Ok(data.to_vec()),
        Compression::Zstd { level, window_log } => {
            if !(10..=MAX_ZSTD_WINDOW_LOG).contains(&window_log) {
                return Err(Error::FieldOverflow {
                    what: "zstd window log",
                    value: u64::from(window_log),
                    max: u64::from(MAX_ZSTD_WINDOW_LOG),
                    hint: "the kernel allocates the window while unpacking; keep it small",
                });
            }
            let mut enc = zstd::bulk::Compressor::new(level).map_err(codec("compressing"))?;
            enc_param(&mut enc, zstd::zstd_safe::CParameter::WindowLog(window_log))?;
            // Beyond 8 MiB, matches that far back are found by long-distance
            // matching only (the decoder needs nothing but the window).
            if window_log > 23 {
                enc_param(
                    &mut enc,
                    zstd::zstd_safe::CParameter::EnableLongDistanceMatching(true),
                )?;
            }
            enc_param(&mut enc, zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
            enc_param(&mut enc, zstd::zstd_safe::CParameter::ContentSizeFlag(true))?;
            enc.compress(data).map_err(codec("compressing"))
        }
        Compression::Xz { preset } => {
            use std::io::Write;
            let opts = liblzma::stream::LzmaOptions::new_preset(preset)
                .map_err(|e| codec("compressing")(e.into()))?;
            let mut filters = liblzma::stream::Filters::new();
            filters.lzma2(&opts);
            let stream = liblzma::stream::Stream::new_stream_encoder(
                &filters,
                liblzma::stream::Check::Crc32,
            )
            .map_err(|e| codec("compressing")(e.into()))?;
            let mut w = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
            w.write_all(data).map_err(codec("compressing"))?;
            w.finish().map_err(codec("compressing"))
        }
    }
}

fn enc_param(enc: &mut zstd::bulk::Compressor<'_>, p: zstd::zstd_safe::CParameter) -> Result<()> {
    enc.set_parameter(p).map_err(codec("configuring zstd"))
}

/// One segment of an initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Offset of the segment in the initramfs.
    pub offset: u64,
    /// How it was stored (`Zstd`/`Xz` without their settings: level 0, preset 0).
    pub compression: Compression,
    /// Its stored (possibly compressed) length.
    pub stored_len: u64,
    /// The newc archive it holds.
    pub archive: Vec<u8>,
}

/// Splits an initramfs into its segments and decompresses each, as the
/// kernel does. Fails on anything the kernel would not unpack.
pub fn segments(data: &[u8]) -> Result<Vec<Segment>> {
    let mut out = Vec::new();
    let mut off = 0usize;
    let bad = |offset: usize, reason: &'static str| Error::CpioMalformed {
        offset: offset as u64,
        reason,
    };
    while off < data.len() {
        let rest = &data[off..];
        if rest[0] == 0 {
            off += 1;
            continue;
        }
        if rest.starts_with(NEWC_MAGIC) {
            let len = newc_len(rest).map_err(|reason| bad(off, reason))?;
            out.push(Segment {
                offset: off as u64,
                compression: Compression::None,
                stored_len: len as u64,
                archive: rest[..len].to_vec(),
            });
            off += len;
        } else if rest.starts_with(&ZSTD_MAGIC) {
            let len = zstd::zstd_safe::find_frame_compressed_size(rest)
                .map_err(|_| bad(off, "truncated or damaged zstd frame"))?;
            let frame = rest
                .get(..len)
                .ok_or_else(|| bad(off, "zstd frame runs past the end"))?;
            let mut archive = Vec::new();
            zstd::stream::copy_decode(frame, &mut archive)
                .map_err(|_| bad(off, "zstd frame does not decompress"))?;
            out.push(Segment {
                offset: off as u64,
                compression: Compression::Zstd {
                    level: 0,
                    window_log: 0,
                },
                stored_len: len as u64,
                archive,
            });
            off += len;
        } else if rest.starts_with(&XZ_MAGIC) {
            use std::io::Read;
            let mut dec = liblzma::bufread::XzDecoder::new(rest);
            let mut archive = Vec::new();
            dec.read_to_end(&mut archive)
                .map_err(|_| bad(off, "xz stream does not decompress"))?;
            let left = dec.into_inner().len();
            let len = rest.len() - left;
            out.push(Segment {
                offset: off as u64,
                compression: Compression::Xz { preset: 0 },
                stored_len: len as u64,
                archive,
            });
            off += len;
        } else {
            return Err(bad(
                off,
                "neither a newc archive, zstd nor xz: the kernel would stop unpacking here",
            ));
        }
    }
    Ok(out)
}

/// Length of the newc archive at the start of `b` (through its trailer and
/// the padding to four bytes).
fn newc_len(b: &[u8]) -> std::result::Result<usize, &'static str> {
    let mut off = 0usize;
    loop {
        let h = b
            .get(off..off + 110)
            .ok_or("archive ends without TRAILER!!!")?;
        if &h[..6] != NEWC_MAGIC {
            return Err("bad newc magic inside an archive");
        }
        let field = |i: usize| -> std::result::Result<usize, &'static str> {
            let t = std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).map_err(|_| "bad header")?;
            usize::from_str_radix(t, 16).map_err(|_| "header field is not hex")
        };
        let (size, namesize) = (field(6)?, field(11)?);
        let name = b
            .get(off + 110..off + 110 + namesize)
            .ok_or("name runs past the end")?;
        let data_at = (off + 110 + namesize + 3) & !3;
        let end = data_at.checked_add(size).ok_or("size overflows")?;
        if end > b.len() {
            return Err("file data runs past the end");
        }
        off = (end + 3) & !3;
        if name.strip_suffix(&[0]) == Some(b"TRAILER!!!") {
            return Ok(off.min(b.len()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::CpioBuilder;
    use crate::Epoch;

    fn archive(name: &str, body: &[u8]) -> Vec<u8> {
        let mut c = CpioBuilder::new(Epoch(1)).unwrap();
        c.add_file(name, 0o644, body.to_vec()).unwrap();
        c.to_vec().unwrap()
    }

    #[test]
    fn segments_of_every_kind_come_back() {
        let a = archive("a", &[7u8; 100_000]);
        let b = archive("dir/b", b"hello");
        let c = archive("c", &[1, 2, 3]);
        let zstd = Compression::Zstd {
            level: 3,
            window_log: 20,
        };
        let mut all = a.clone();
        all.extend(compress(&b, zstd).unwrap());
        all.extend([0u8; 4]);
        all.extend(compress(&c, Compression::Xz { preset: 1 }).unwrap());
        let segs = segments(&all).unwrap();
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[0].archive, a);
        assert_eq!(segs[0].compression, Compression::None);
        assert_eq!(segs[1].archive, b);
        assert!(matches!(segs[1].compression, Compression::Zstd { .. }));
        assert_eq!(segs[2].archive, c);
        assert!(matches!(segs[2].compression, Compression::Xz { .. }));
        // Deterministic.
        assert_eq!(compress(&b, zstd).unwrap(), compress(&b, zstd).unwrap());
    }

    #[test]
    fn zstd_window_is_bounded_and_frames_say_so() {
        let a = archive("a", &[5u8; 1000]);
        assert!(compress(
            &a,
            Compression::Zstd {
                level: 3,
                window_log: 27
            }
        )
        .is_err());
        let z = compress(
            &a,
            Compression::Zstd {
                level: 19,
                window_log: MAX_ZSTD_WINDOW_LOG,
            },
        )
        .unwrap();
        assert_eq!(&z[..4], &ZSTD_MAGIC);
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let a = archive("a", b"x");
        let z = compress(
            &a,
            Compression::Zstd {
                level: 3,
                window_log: 20,
            },
        )
        .unwrap();
        assert!(segments(&z[..z.len() - 3]).is_err());
        assert!(segments(b"garbage").is_err());
        assert!(segments(&a[..a.len() - 8]).is_err());
        for cut in 0..z.len() {
            let _ = segments(&z[..cut]);
        }
    }

    proptest::proptest! {
        #[test]
        fn segments_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = segments(&bytes);
        }

        #[test]
        fn mutated_segments_never_panic(flips in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 1..8)) {
            let a = archive("dir/file", &[3u8; 300]);
            let mut all = a.clone();
            all.extend(compress(&a, Compression::Zstd { level: 3, window_log: 20 }).unwrap());
            all.extend(compress(&a, Compression::Xz { preset: 0 }).unwrap());
            for (at, v) in flips {
                let n = all.len();
                all[at % n] ^= v;
            }
            let _ = segments(&all);
        }
    }
}
