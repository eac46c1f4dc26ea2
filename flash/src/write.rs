//! The write itself: headers destroyed first, mapped ranges, read-back, the
//! GPT last (see the crate docs for why in this order).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use images::bmap::BLOCK_SIZE;
use sha2::{Digest, Sha256};

use crate::device::{Host, Target};
use crate::error::{Error, Refusal};
use crate::release::Release;
use crate::sys::{self, AlignedBuf};

/// Bytes per write or read.
const CHUNK: u64 = 1 << 20;
/// The GPT structures at a disk's end: 32 sectors of entries and the header.
const BACKUP_GPT_BYTES: u64 = 33 * 512;

/// What the caller asks for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Accept a non-removable disk.
    pub yes: bool,
    /// Keep the checked image in memory up to this many mapped bytes (and
    /// compare the read-back with it); above, read the image again while
    /// writing and hash the read-back. `None`: 1 GiB.
    pub max_held_bytes: Option<u64>,
}

/// The phase a [`Progress`] report belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Hashing the image against its signed block map.
    CheckingImage,
    /// Writing the mapped ranges.
    Writing,
    /// Reading them back.
    Verifying,
    /// Writing the GPT (backup block, then the first block).
    Finishing,
}

/// A progress report: `done` of `total` bytes of this phase.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// The phase.
    pub phase: Phase,
    /// Bytes done.
    pub done: u64,
    /// Bytes in the phase.
    pub total: u64,
}

/// What a flash did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The device.
    pub device: Target,
    /// The image.
    pub image: PathBuf,
    /// What it is.
    pub release: String,
    /// The signer's fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// Image size.
    pub image_size: u64,
    /// Mapped bytes written (and read back).
    pub written_bytes: u64,
    /// Mapped ranges.
    pub ranges: usize,
    /// Whether the device was written with `O_DIRECT`.
    pub direct_io: bool,
    /// Whether a larger device's last sectors (a stale backup GPT) were cleared.
    pub cleared_device_end: bool,
    /// Seconds, from opening the device to the last read-back.
    pub seconds: f64,
}

/// Flashes `release` onto `device`: checks every mapped range of the image
/// against the block map, the device ([`Target::check`]), then writes and
/// verifies. `cancel`
/// stops the flash between chunks (a signal handler sets it).
///
/// # Errors
/// Refusals and image errors before anything is written; [`Error::Failed`]
/// once writing has begun, saying what the device holds then.
pub fn flash(
    release: &Release,
    device: &std::path::Path,
    host: &Host,
    opts: &Options,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<Report, Error> {
    let size = release.bmap.image_size;
    let total = release.bmap.mapped_bytes();
    let held = check_image(release, opts.max_held_bytes.unwrap_or(HOLD_LIMIT), progress)?;
    let target = Target::inspect(device, host)?;
    target.check(host, size, opts.yes)?;
    if cancel.load(Ordering::SeqCst) {
        return Err(Error::Failed {
            device: device.to_path_buf(),
            what: "interrupted before writing".into(),
            state: "nothing was written".into(),
        });
    }
    let (file, direct_io) = open(&target)?;
    let started = Instant::now();
    let mut w = Writer {
        release,
        target: &target,
        file: &file,
        direct_io,
        buf: AlignedBuf::new(CHUNK as usize),
        late: Vec::new(),
        held,
    };
    let result = w.run(progress, cancel);
    match result {
        Ok(cleared) => Ok(Report {
            device: target.clone(),
            image: release.image.clone(),
            release: release.label.clone(),
            signer: release.signer.clone(),
            image_size: size,
            written_bytes: total,
            ranges: release.bmap.ranges.len(),
            direct_io,
            cleared_device_end: cleared,
            seconds: started.elapsed().as_secs_f64(),
        }),
        Err(what) => {
            // Make sure the disk does not boot, then say what it holds.
            let _ = w.zero(0, BLOCK_SIZE);
            let _ = sys::sync_data(&file);
            drop(file);
            Err(Error::Failed {
                device: device.to_path_buf(),
                what,
                state: state_after_failure(device),
            })
        }
    }
}

/// Opens the device exclusively, with `O_DIRECT` where it takes it.
fn open(target: &Target) -> Result<(File, bool), Error> {
    let try_open = |direct: bool| {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        o.custom_flags(sys::O_EXCL | if direct { sys::O_DIRECT } else { 0 });
        o.open(&target.path)
    };
    let busy = |e: std::io::Error| {
        if e.raw_os_error() == Some(libc::EBUSY) {
            Error::Refused {
                device: target.path.clone(),
                reason: Refusal::Busy,
            }
        } else {
            Error::Inspect {
                device: target.path.clone(),
                source: e,
            }
        }
    };
    let (f, direct) = match try_open(true) {
        Ok(f) => (f, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (try_open(false).map_err(busy)?, false),
        Err(e) => return Err(busy(e)),
    };
    // The kernel's view once more, through the open descriptor.
    let lbs = sys::logical_block_size(&f).map_err(busy)?;
    let mut g = &f;
    let size = g.seek(SeekFrom::End(0)).map_err(busy)?;
    if lbs != 512 {
        return Err(Error::Refused {
            device: target.path.clone(),
            reason: Refusal::SectorSize { size: lbs },
        });
    }
    if size != target.size {
        return Err(Error::Inspect {
            device: target.path.clone(),
            source: std::io::Error::other(format!(
                "its size changed from {} to {size} bytes while it was inspected",
                target.size
            )),
        });
    }
    Ok((f, direct))
}

/// What a device holds after a failed flash, checked with a fresh read past
/// the cache.
fn state_after_failure(device: &std::path::Path) -> String {
    let Ok(mut f) = File::open(device) else {
        return "its state could not be checked (cannot open it); do not boot it, flash it again"
            .into();
    };
    if let Ok(len) = f.seek(SeekFrom::End(0)) {
        let _ = sys::drop_cache(&f, 0, len);
    }
    if images::gpt::valid_headers(&mut f).is_empty() {
        "the device now holds no valid GPT header, so nothing will boot from it; flash it again"
            .into()
    } else {
        "WARNING: a GPT header on the device still checks; do not boot it, flash it again".into()
    }
}

struct Writer<'a> {
    release: &'a Release,
    target: &'a Target,
    file: &'a File,
    direct_io: bool,
    buf: AlignedBuf,
    /// The blocks written last (offset, bytes): the image's last block, then
    /// block 0.
    late: Vec<(u64, Vec<u8>)>,
    /// The image's mapped bytes as checked, chunk by chunk, when they fit in
    /// memory ([`HOLD_LIMIT`]); otherwise they are read again (and hashed
    /// again) while written.
    held: Option<Vec<(u64, AlignedBuf)>>,
}

/// Mapped bytes kept in memory between the check and the write (above it,
/// the image is read twice).
const HOLD_LIMIT: u64 = 1 << 30;

/// Pass 1: every mapped range of the image hashed against the block map,
/// before the device is looked at. Returns the chunks when they fit in
/// memory.
fn check_image(
    release: &Release,
    hold_limit: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<Option<Vec<(u64, AlignedBuf)>>, Error> {
    let bmap = &release.bmap;
    let total = bmap.mapped_bytes();
    let io = |source| Error::Io {
        path: release.image.clone(),
        source,
    };
    let mut img = File::open(&release.image).map_err(io)?;
    let late = late_blocks(bmap.image_size);
    let mut held = (total <= hold_limit).then(Vec::new);
    let mut scratch = AlignedBuf::new(CHUNK as usize);
    let mut done = 0;
    for r in &bmap.ranges {
        let (start, len) = bmap.byte_span(r);
        let mut h = Sha256::new();
        for (off, n) in chunks(start, len, &late) {
            let mut own;
            let b = match held {
                Some(_) => {
                    own = AlignedBuf::new(n as usize);
                    own.get_mut(n as usize)
                }
                None => {
                    own = AlignedBuf::new(0);
                    scratch.get_mut(n as usize)
                }
            };
            img.seek(SeekFrom::Start(off))
                .and_then(|_| img.read_exact(b))
                .map_err(io)?;
            h.update(&*b);
            if let Some(v) = held.as_mut() {
                v.push((off, own));
            }
            done += n;
            progress(Progress {
                phase: Phase::CheckingImage,
                done,
                total,
            });
        }
        if h.finalize().as_slice() != r.sha256 {
            return Err(Error::Tampered {
                path: release.image.clone(),
                start,
                end: start + len,
            });
        }
    }
    Ok(held)
}

/// The blocks written last: the image's last block (its backup GPT header),
/// then block 0 (protective MBR, primary header).
fn late_blocks(size: u64) -> [u64; 2] {
    [(size - 1) / BLOCK_SIZE, 0]
}

impl Writer<'_> {
    fn err(at: &str, start: u64, end: u64, e: std::io::Error) -> String {
        format!("{at} bytes {start}..{end} failed: {e}")
    }

    /// Writes `len` zero bytes at `offset`.
    fn zero(&mut self, offset: u64, len: u64) -> Result<(), String> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            let b = self.buf.get_mut(n as usize);
            b.fill(0);
            self.file
                .write_all_at(b, offset + done)
                .map_err(|e| Self::err("clearing", offset + done, offset + done + n, e))?;
            done += n;
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), String> {
        sys::sync_data(self.file).map_err(|e| format!("flushing the device failed: {e}"))
    }

    /// The sequence; returns whether the device's end was cleared.
    fn run(
        &mut self,
        progress: &mut dyn FnMut(Progress),
        cancel: &AtomicBool,
    ) -> Result<bool, String> {
        let bmap = &self.release.bmap;
        let size = bmap.image_size;
        let late_blocks = late_blocks(size);
        let last_block = late_blocks[0];
        let total = bmap.mapped_bytes();
        let stop = |what: &str| -> Result<(), String> {
            if cancel.load(Ordering::SeqCst) {
                Err(format!("interrupted while {what}"))
            } else {
                Ok(())
            }
        };
        // 1. No GPT header anywhere firmware looks: block 0 (protective MBR,
        // primary header), the image's last block (its backup header), and
        // on a larger device its last sectors (a stale backup GPT).
        self.zero(0, BLOCK_SIZE)?;
        let (lb_off, lb_len) = span(size, last_block);
        self.zero(lb_off, lb_len)?;
        let cleared = self.target.size > size;
        if cleared {
            let end = self.target.size;
            let start = end.saturating_sub(BACKUP_GPT_BYTES).max(size);
            self.zero(start, end - start)?;
        }
        self.sync()?;
        // 2. The mapped ranges, without the late blocks (kept in memory).
        let mut done = 0u64;
        if let Some(held) = self.held.as_mut() {
            for (off, chunk) in held.iter_mut() {
                stop("writing")?;
                let n = chunk.len();
                let b = chunk.get_mut(n);
                if late_blocks.contains(&(*off / BLOCK_SIZE)) {
                    self.late.push((*off, b.to_vec()));
                } else {
                    self.file
                        .write_all_at(b, *off)
                        .map_err(|e| Self::err("writing", *off, *off + n as u64, e))?;
                }
                done += n as u64;
                progress(Progress {
                    phase: Phase::Writing,
                    done,
                    total,
                });
            }
        } else {
            let mut img = File::open(&self.release.image)
                .map_err(|e| format!("opening {}: {e}", self.release.image.display()))?;
            for r in &bmap.ranges {
                let (start, len) = bmap.byte_span(r);
                let mut h = Sha256::new();
                for (off, n) in chunks(start, len, &late_blocks) {
                    stop("writing")?;
                    let b = self.buf.get_mut(n as usize);
                    img.seek(SeekFrom::Start(off))
                        .and_then(|_| img.read_exact(b))
                        .map_err(|e| format!("reading {}: {e}", self.release.image.display()))?;
                    h.update(&*b);
                    if late_blocks.contains(&(off / BLOCK_SIZE)) {
                        self.late.push((off, b.to_vec()));
                    } else {
                        self.file
                            .write_all_at(b, off)
                            .map_err(|e| Self::err("writing", off, off + n, e))?;
                    }
                    done += n;
                    progress(Progress {
                        phase: Phase::Writing,
                        done,
                        total,
                    });
                }
                if h.finalize().as_slice() != r.sha256 {
                    return Err(format!(
                        "{}: bytes {start}..{} changed while being written",
                        self.release.image.display(),
                        start + len
                    ));
                }
            }
        }
        self.sync()?;
        // 3. Read everything back past the cache; the late blocks from memory.
        if !self.direct_io {
            sys::drop_cache(self.file, 0, size)
                .map_err(|e| format!("dropping the device's cache failed: {e}"))?;
        }
        let mut done = 0u64;
        for r in &bmap.ranges {
            let (start, len) = bmap.byte_span(r);
            let mut h = Sha256::new();
            let mut matched_in_memory = false;
            for (off, n) in chunks(start, len, &late_blocks) {
                stop("verifying")?;
                if let Some((_, bytes)) = self.late.iter().find(|(o, _)| *o == off) {
                    h.update(bytes);
                } else if let Some(want) = held_chunk(&mut self.held, off, n) {
                    // The checked bytes are in memory: compare, no hash needed
                    // (they hash to the signed digest, so equal bytes do).
                    let b = self.buf.get_mut(n as usize);
                    self.file
                        .read_exact_at(b, off)
                        .map_err(|e| Self::err("reading back", off, off + n, e))?;
                    if b != want {
                        return Err(format!(
                            "read-back of bytes {off}..{} differs from the signed image (the device does not keep what is written to it)",
                            off + n
                        ));
                    }
                    matched_in_memory = true;
                } else {
                    let b = self.buf.get_mut(n as usize);
                    self.file
                        .read_exact_at(b, off)
                        .map_err(|e| Self::err("reading back", off, off + n, e))?;
                    h.update(&*b);
                }
                done += n;
                progress(Progress {
                    phase: Phase::Verifying,
                    done,
                    total,
                });
            }
            if !matched_in_memory && h.finalize().as_slice() != r.sha256 {
                return Err(format!(
                    "read-back of bytes {start}..{} differs from the signed block map (the device does not keep what is written to it)",
                    start + len
                ));
            }
        }
        // 4. The backup header's block, then the first block; each flushed
        // and read back.
        stop("verifying")?;
        let late = std::mem::take(&mut self.late);
        let fin_total: u64 = late.iter().map(|(_, b)| b.len() as u64).sum();
        let mut fin = 0u64;
        for block in late_blocks {
            let Some((off, bytes)) = late.iter().find(|(o, _)| o / BLOCK_SIZE == block) else {
                continue;
            };
            let b = self.buf.get_mut(bytes.len());
            b.copy_from_slice(bytes);
            self.file
                .write_all_at(b, *off)
                .map_err(|e| Self::err("writing", *off, *off + bytes.len() as u64, e))?;
            self.sync()?;
            if !self.direct_io {
                sys::drop_cache(self.file, *off, bytes.len() as u64)
                    .map_err(|e| format!("dropping the device's cache failed: {e}"))?;
            }
            let b = self.buf.get_mut(bytes.len());
            self.file
                .read_exact_at(b, *off)
                .map_err(|e| Self::err("reading back", *off, *off + bytes.len() as u64, e))?;
            if b != bytes.as_slice() {
                return Err(format!(
                    "read-back of bytes {off}..{} differs from what was written",
                    off + bytes.len() as u64
                ));
            }
            fin += bytes.len() as u64;
            progress(Progress {
                phase: Phase::Finishing,
                done: fin,
                total: fin_total,
            });
        }
        Ok(cleared)
    }
}

/// The held chunk at `off` of `n` bytes, if the image is held in memory.
fn held_chunk(held: &mut Option<Vec<(u64, AlignedBuf)>>, off: u64, n: u64) -> Option<&[u8]> {
    let v = held.as_mut()?;
    let i = v.binary_search_by_key(&off, |(o, _)| *o).ok()?;
    let (_, b) = v.get_mut(i)?;
    (b.len() as u64 == n).then(|| &*b.get_mut(n as usize))
}

/// Byte span of block `b` of an image of `size` bytes.
fn span(size: u64, b: u64) -> (u64, u64) {
    let start = b * BLOCK_SIZE;
    (start, ((b + 1) * BLOCK_SIZE).min(size) - start)
}

/// `start .. start + len` in chunks of at most [`CHUNK`] bytes, each of the
/// `late` blocks a chunk of its own.
fn chunks(start: u64, len: u64, late: &[u64]) -> Vec<(u64, u64)> {
    let end = start + len;
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let block = at / BLOCK_SIZE;
        let mut next = (at + CHUNK).min(end);
        if late.contains(&block) {
            next = ((block + 1) * BLOCK_SIZE).min(end);
        } else if let Some(l) = late
            .iter()
            .map(|l| l * BLOCK_SIZE)
            .filter(|o| *o > at && *o < next)
            .min()
        {
            next = l;
        }
        out.push((at, next - at));
        at = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_blocks_are_chunks_of_their_own() {
        let c = chunks(0, 3 * CHUNK + 100, &[10_000, 0]);
        assert_eq!(c[0], (0, 4096));
        assert_eq!(c[1], (4096, CHUNK));
        let total: u64 = c.iter().map(|x| x.1).sum();
        assert_eq!(total, 3 * CHUNK + 100);
        let c = chunks(8 * 4096, 4 * 4096, &[10, 0]);
        assert_eq!(c, [(32768, 8192), (40960, 4096), (45056, 4096)]);
        let c = chunks(40960, 2048, &[10, 0]);
        assert_eq!(c, [(40960, 2048)]);
    }
}
