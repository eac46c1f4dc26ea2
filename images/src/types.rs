//! Newtypes shared by the formats: GUIDs, LBAs, byte lengths, timestamps, and
//! content sources.
//!
//! Nothing here panics.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Logical sector size used by every format in this crate.
pub const SECTOR_SIZE: u64 = 512;

/// A GUID / UUID, stored in canonical (RFC 4122, big-endian) byte order, i.e. in the
/// order in which its text form is written.
///
/// GPT stores GUIDs in the "mixed-endian" Microsoft layout; use
/// [`Guid::to_mixed_endian`] / [`Guid::from_mixed_endian`] for that.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The all-zero GUID (an unused GPT entry).
    pub const NIL: Guid = Guid([0; 16]);

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (case-insensitive).
    pub fn parse(s: &str) -> Option<Guid> {
        let b = s.as_bytes();
        if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
            return None;
        }
        let hex: Vec<u8> = b.iter().copied().filter(|&c| c != b'-').collect();
        if hex.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Guid(out))
    }

    /// Converts to the on-disk GPT/EFI layout (first three fields little-endian).
    pub fn to_mixed_endian(self) -> [u8; 16] {
        let g = self.0;
        let mut o = g;
        o[0..4].copy_from_slice(&[g[3], g[2], g[1], g[0]]);
        o[4..6].copy_from_slice(&[g[5], g[4]]);
        o[6..8].copy_from_slice(&[g[7], g[6]]);
        o
    }

    /// Converts from the on-disk GPT/EFI layout.
    pub fn from_mixed_endian(b: [u8; 16]) -> Guid {
        // The permutation is an involution.
        Guid(Guid(b).to_mixed_endian())
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// Derives a GUID from a digest: SHA-256 over `label || digest`, first 16 bytes, with
/// the RFC 4122 version (4) and variant (10xx) bits set.
///
/// Different labels give independent GUIDs from the same digest (e.g. `"disk"`,
/// `"esp"`, `"esp-volume"`).
pub fn guid_from_digest(digest: &[u8; 32], label: &str) -> Guid {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    h.update(digest);
    let out = h.finalize();
    let mut g = [0u8; 16];
    g.copy_from_slice(&out[..16]);
    g[6] = (g[6] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    Guid(g)
}

/// A logical block address in units of [`SECTOR_SIZE`] bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Lba(pub u64);

impl Lba {
    /// Byte offset of this block.
    pub fn byte_offset(self) -> ByteLen {
        ByteLen(self.0.saturating_mul(SECTOR_SIZE))
    }
}

impl fmt::Display for Lba {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LBA {}", self.0)
    }
}

/// A length or offset in bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct ByteLen(pub u64);

impl ByteLen {
    /// `n` mebibytes.
    pub const fn mib(n: u64) -> ByteLen {
        ByteLen(n * 1024 * 1024)
    }

    /// Number of whole sectors needed to hold this many bytes.
    pub fn sectors_ceil(self) -> u64 {
        self.0.div_ceil(SECTOR_SIZE)
    }
}

impl fmt::Display for ByteLen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

/// Seconds since the Unix epoch (e.g. `SOURCE_DATE_EPOCH`), given by the caller.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Epoch(pub u64);

/// The content of a file to be put into an image.
///
/// `File` sources are read when the image is written; their size is taken when the
/// image is planned and must not change in between ([`Error::SourceChanged`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Bytes in memory (shared, so one UKI can be placed several times cheaply).
    Bytes(Arc<[u8]>),
    /// A file on the host.
    File(PathBuf),
}

impl From<Vec<u8>> for Content {
    fn from(v: Vec<u8>) -> Self {
        Content::Bytes(v.into())
    }
}

impl From<&[u8]> for Content {
    fn from(v: &[u8]) -> Self {
        Content::Bytes(v.into())
    }
}

impl From<PathBuf> for Content {
    fn from(p: PathBuf) -> Self {
        Content::File(p)
    }
}

/// Chunk size used when streaming file contents.
pub(crate) const CHUNK: usize = 1 << 16;

impl Content {
    /// Current length of the content.
    pub fn len(&self) -> Result<ByteLen> {
        match self {
            Content::Bytes(b) => Ok(ByteLen(b.len() as u64)),
            Content::File(p) => {
                let md = std::fs::metadata(p).map_err(Error::io("reading metadata of", p))?;
                if !md.is_file() {
                    return Err(Error::Io {
                        action: "reading",
                        path: p.clone(),
                        source: std::io::Error::other("not a regular file"),
                    });
                }
                Ok(ByteLen(md.len()))
            }
        }
    }

    /// True if the content is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()?.0 == 0)
    }

    /// Streams the content in chunks of at most 64 KiB to `f(offset, chunk)`, checking
    /// that exactly `expected` bytes are produced.
    pub(crate) fn for_each_chunk(
        &self,
        expected: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        match self {
            Content::Bytes(b) => {
                if b.len() as u64 != expected {
                    return Err(Error::SourceChanged {
                        path: PathBuf::from("<memory>"),
                        expected,
                        found: b.len() as u64,
                    });
                }
                let mut off = 0u64;
                for c in b.chunks(CHUNK) {
                    f(off, c)?;
                    off += c.len() as u64;
                }
                Ok(())
            }
            Content::File(p) => {
                let mut file = std::fs::File::open(p).map_err(Error::io("opening", p))?;
                let mut buf = vec![0u8; CHUNK];
                let mut off = 0u64;
                loop {
                    let n = file.read(&mut buf).map_err(Error::io("reading", p))?;
                    if n == 0 {
                        break;
                    }
                    if off + n as u64 > expected {
                        return Err(Error::SourceChanged {
                            path: p.clone(),
                            expected,
                            found: off + n as u64,
                        });
                    }
                    f(off, &buf[..n])?;
                    off += n as u64;
                }
                if off != expected {
                    return Err(Error::SourceChanged {
                        path: p.clone(),
                        expected,
                        found: off,
                    });
                }
                Ok(())
            }
        }
    }

    /// Reads the whole content into memory.
    pub fn read_all(&self) -> Result<Vec<u8>> {
        match self {
            Content::Bytes(b) => Ok(b.to_vec()),
            Content::File(p) => std::fs::read(p).map_err(Error::io("reading", p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_and_mixed_endian() {
        let esp = Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
        assert_eq!(esp.to_string(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        let me = esp.to_mixed_endian();
        assert_eq!(&me[..8], &[0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11]);
        assert_eq!(Guid::from_mixed_endian(me), esp);
        assert!(Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93").is_none());
        assert!(Guid::parse("C12A7328xF81F-11D2-BA4B-00A0C93EC93B").is_none());
        assert!(Guid::parse("G12A7328-F81F-11D2-BA4B-00A0C93EC93B").is_none());
    }

    #[test]
    fn guid_from_digest_sets_version_and_variant_and_depends_on_label() {
        let d = [7u8; 32];
        let a = guid_from_digest(&d, "disk");
        let b = guid_from_digest(&d, "esp");
        assert_ne!(a, b);
        assert_eq!(a, guid_from_digest(&d, "disk"));
        for g in [a, b] {
            assert_eq!(g.0[6] >> 4, 4);
            assert_eq!(g.0[8] >> 6, 0b10);
        }
        // SHA-256("disk" || d) computed independently.
        let mut h = Sha256::new();
        h.update(b"disk");
        h.update([7u8; 32]);
        let full = h.finalize();
        assert_eq!(a.0[0..6], full[0..6]);
        assert_eq!(a.0[9..16], full[9..16]);
    }
}
