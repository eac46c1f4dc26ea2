//! bmap 2.0 files: which blocks of a sparse disk image hold data, with the
//! SHA-256 of each range, so that a flasher writes only those blocks and
//! checks what it wrote (Debian's `bmaptool copy` reads this format).
//!
//! The map comes from the image writer's own knowledge of what it wrote, never
//! from the file's allocation (`bmaptool create` maps by allocation and skips
//! areas that must be zero on the device — a FAT's free entries, say — which
//! on a used device keep their old bytes). So a writer maps every byte it
//! means to be there, zeros included: the protective MBR, both GPT headers and
//! entry arrays, a FAT volume's reserved sectors and both FATs in full, every
//! directory and file cluster. Only space nothing refers to (free clusters,
//! alignment gaps) stays unmapped.
//!
//! What bmaptool 3.6 requires, and this writer does: 4096-byte blocks;
//! `BlocksCount` = ceil(`ImageSize` / `BlockSize`); `MappedBlocksCount` equal
//! to the blocks the ranges hold; ranges ascending and disjoint; `ChecksumType`
//! present (`sha256`); each range's checksum over its bytes, the last block cut
//! at `ImageSize`; `BmapFileChecksum` the SHA-256 of the whole file written
//! with that element's value as 64 `0` characters (bmaptool finds it by the
//! first occurrence of that string). No detached signature is ever written
//! beside the bmap: bmaptool 3.6 finds `*.bmap.sig` and `*.bmap.asc` by
//! itself and aborts without Python's `gpgme`. The bmap's own digest goes into
//! the signed manifest instead.

use std::io::{Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

use crate::{ByteLen, Error, Result};

/// Bytes per block.
pub const BLOCK_SIZE: u64 = 4096;

/// The blocks of an image that its writer means to be there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockMap {
    image_size: u64,
    /// Inclusive block ranges, ascending, disjoint, not adjacent.
    ranges: Vec<(u64, u64)>,
}

impl BlockMap {
    /// An empty map of an image of `image_size` bytes.
    pub fn new(image_size: ByteLen) -> BlockMap {
        BlockMap {
            image_size: image_size.0,
            ranges: Vec::new(),
        }
    }

    /// Maps the blocks holding bytes `offset .. offset + len` (cut at the
    /// image's end; an empty range maps nothing).
    pub fn map(&mut self, offset: u64, len: u64) -> &mut BlockMap {
        let end = offset.saturating_add(len).min(self.image_size);
        if end <= offset {
            return self;
        }
        let (first, last) = (offset / BLOCK_SIZE, (end - 1) / BLOCK_SIZE);
        self.ranges.push((first, last));
        self.ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len());
        for &(a, b) in &self.ranges {
            match merged.last_mut() {
                Some(m) if a <= m.1.saturating_add(1) => m.1 = m.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.ranges = merged;
        self
    }

    /// The mapped block ranges (inclusive), ascending.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Blocks in the image.
    pub fn blocks_count(&self) -> u64 {
        self.image_size.div_ceil(BLOCK_SIZE)
    }

    /// Blocks the map holds.
    pub fn mapped_blocks(&self) -> u64 {
        self.ranges.iter().map(|(a, b)| b - a + 1).sum()
    }

    /// Byte span of an inclusive block range, the last block cut at the
    /// image's end.
    pub fn byte_span(&self, (first, last): (u64, u64)) -> (u64, u64) {
        let start = first * BLOCK_SIZE;
        let end = ((last + 1) * BLOCK_SIZE).min(self.image_size);
        (start, end - start)
    }

    /// The bmap 2.0 file for `image` (the image this map describes: its bytes
    /// are read range by range for the checksums).
    ///
    /// # Errors
    /// The image is shorter than the map says, or cannot be read.
    pub fn to_xml<R: Read + Seek>(&self, image: &mut R) -> Result<String> {
        let mut body = String::new();
        let mut buf = vec![0u8; 1 << 20];
        for &r in &self.ranges {
            let (start, len) = self.byte_span(r);
            image
                .seek(SeekFrom::Start(start))
                .map_err(Error::io("seeking in", "the disk image"))?;
            let mut h = Sha256::new();
            let mut left = len;
            while left > 0 {
                let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
                let chunk = buf.get_mut(..n).unwrap_or_default();
                image
                    .read_exact(chunk)
                    .map_err(Error::io("reading", "the disk image"))?;
                h.update(&*chunk);
                left -= n as u64;
            }
            let range = if r.0 == r.1 {
                format!("{}", r.0)
            } else {
                format!("{}-{}", r.0, r.1)
            };
            body.push_str(&format!(
                "        <Range chksum=\"{}\"> {range} </Range>\n",
                hex(&h.finalize())
            ));
        }
        let zeros = "0".repeat(64);
        let xml = format!(
            "<?xml version=\"1.0\" ?>\n\
             <!-- Written by the appliance image builder from what it wrote: every byte\n     \
             meant to be on the device is mapped, zeros included. Flash with\n     \
             `appliance flash` or `bmaptool copy`. -->\n\
             <bmap version=\"2.0\">\n    \
             <ImageSize> {} </ImageSize>\n    \
             <BlockSize> {BLOCK_SIZE} </BlockSize>\n    \
             <BlocksCount> {} </BlocksCount>\n    \
             <MappedBlocksCount> {} </MappedBlocksCount>\n    \
             <ChecksumType> sha256 </ChecksumType>\n    \
             <BmapFileChecksum> {zeros} </BmapFileChecksum>\n    \
             <BlockMap>\n{body}    </BlockMap>\n</bmap>\n",
            self.image_size,
            self.blocks_count(),
            self.mapped_blocks(),
        );
        let digest = hex(&Sha256::digest(xml.as_bytes()));
        Ok(xml.replacen(&zeros, &digest, 1))
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_out_to_blocks_merge_and_stop_at_the_end() {
        let mut m = BlockMap::new(ByteLen(10 * BLOCK_SIZE + 100));
        m.map(100, 10) // block 0
            .map(5 * BLOCK_SIZE - 1, 2) // blocks 4-5
            .map(BLOCK_SIZE, 1) // block 1, next to 0
            .map(6 * BLOCK_SIZE, 0) // nothing
            .map(10 * BLOCK_SIZE, 1 << 30); // the last, partial block
        assert_eq!(m.ranges(), &[(0, 1), (4, 5), (10, 10)]);
        assert_eq!(m.blocks_count(), 11);
        assert_eq!(m.mapped_blocks(), 5);
        assert_eq!(m.byte_span((10, 10)), (10 * BLOCK_SIZE, 100));
        // Mapping inside a mapped range changes nothing.
        let before = m.clone();
        m.map(BLOCK_SIZE + 7, 9);
        assert_eq!(m, before);
    }

    #[test]
    fn the_file_checksums_itself_and_each_range() {
        let size = 3 * BLOCK_SIZE + 512;
        let image: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut m = BlockMap::new(ByteLen(size));
        m.map(0, 1).map(3 * BLOCK_SIZE, 512);
        let xml = m.to_xml(&mut std::io::Cursor::new(&image)).unwrap();
        assert!(xml.contains("<ImageSize> 12800 </ImageSize>"), "{xml}");
        assert!(xml.contains("<BlocksCount> 4 </BlocksCount>"), "{xml}");
        assert!(
            xml.contains("<MappedBlocksCount> 2 </MappedBlocksCount>"),
            "{xml}"
        );
        let block0 = hex(&Sha256::digest(&image[..4096]));
        let tail = hex(&Sha256::digest(&image[3 * 4096..]));
        assert!(
            xml.contains(&format!("<Range chksum=\"{block0}\"> 0 </Range>")),
            "{xml}"
        );
        assert!(
            xml.contains(&format!("<Range chksum=\"{tail}\"> 3 </Range>")),
            "{xml}"
        );
        // The file's own checksum: over the file with that value as zeros.
        let own = xml
            .split("<BmapFileChecksum> ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap()
            .to_string();
        let zeroed = xml.replacen(&own, &"0".repeat(64), 1);
        assert_eq!(own, hex(&Sha256::digest(zeroed.as_bytes())));
    }

    #[test]
    fn an_image_shorter_than_its_map_is_an_error() {
        let mut m = BlockMap::new(ByteLen(2 * BLOCK_SIZE));
        m.map(BLOCK_SIZE, 10);
        assert!(m.to_xml(&mut std::io::Cursor::new(vec![0u8; 100])).is_err());
    }
}
