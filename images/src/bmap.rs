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

/// A mapped range of a parsed bmap: inclusive blocks and the SHA-256 of their
/// bytes (the last block cut at the image's end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedRange {
    /// First block.
    pub first: u64,
    /// Last block (inclusive).
    pub last: u64,
    /// SHA-256 of the range's bytes.
    pub sha256: [u8; 32],
}

/// A bmap 2.0 file as read back: what a flasher needs from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedBmap {
    /// `ImageSize`.
    pub image_size: u64,
    /// `BlockSize`.
    pub block_size: u64,
    /// The ranges, ascending and disjoint.
    pub ranges: Vec<MappedRange>,
}

impl ParsedBmap {
    /// Byte span (offset, length) of a range, the last block cut at the
    /// image's end.
    pub fn byte_span(&self, r: &MappedRange) -> (u64, u64) {
        let start = r.first.saturating_mul(self.block_size);
        let end = r
            .last
            .saturating_add(1)
            .saturating_mul(self.block_size)
            .min(self.image_size);
        (start, end.saturating_sub(start))
    }

    /// Bytes the ranges hold.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges.iter().map(|r| self.byte_span(r).1).sum()
    }

    /// Parses and checks a bmap 2.0 file: the structure bmaptool 3.6 reads
    /// (see the module docs), the file's own checksum, `BlocksCount`
    /// against `ImageSize`, ranges ascending, disjoint and inside the image,
    /// and `MappedBlocksCount` against them. Only `sha256` checksums are
    /// accepted. Never panics; an error names the line.
    ///
    /// # Errors
    /// [`Error::BmapMalformed`] naming the line and what is wrong.
    pub fn from_xml(text: &str) -> Result<ParsedBmap> {
        xml::parse(text)
    }
}

mod xml {
    //! A reader for the small, fixed XML dialect of bmap files: a
    //! declaration, comments, elements with attributes and text. No entities,
    //! no CDATA, no namespaces: a bmap has none, so any of them is an error.

    use sha2::{Digest, Sha256};

    use super::{MappedRange, ParsedBmap};
    use crate::{Error, Result};

    fn err(text: &str, at: usize, reason: impl Into<String>) -> Error {
        let line = text
            .get(..at)
            .map(|t| t.bytes().filter(|b| *b == b'\n').count() + 1)
            .unwrap_or(0);
        Error::BmapMalformed {
            line,
            reason: reason.into(),
        }
    }

    /// One element with only text inside (or, for `BlockMap`, ranges).
    struct Leaf<'a> {
        at: usize,
        attrs: Vec<(&'a str, &'a str)>,
        text: &'a str,
    }

    enum Token<'a> {
        Start {
            at: usize,
            name: &'a str,
            attrs: Vec<(&'a str, &'a str)>,
            empty: bool,
        },
        End {
            at: usize,
            name: &'a str,
        },
        Text {
            at: usize,
            text: &'a str,
        },
    }

    fn is_name(s: &str) -> bool {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    }

    fn attrs<'a>(text: &str, at: usize, mut s: &'a str) -> Result<Vec<(&'a str, &'a str)>> {
        let mut out = Vec::new();
        loop {
            s = s.trim_start();
            if s.is_empty() {
                return Ok(out);
            }
            let (name, rest) = s
                .split_once('=')
                .ok_or_else(|| err(text, at, format!("attribute without a value: {s:?}")))?;
            let name = name.trim();
            if !is_name(name) {
                return Err(err(text, at, format!("bad attribute name {name:?}")));
            }
            let rest = rest.trim_start();
            let quote = rest
                .chars()
                .next()
                .filter(|c| *c == '"' || *c == '\'')
                .ok_or_else(|| err(text, at, format!("attribute {name} is not quoted")))?;
            let rest = rest.get(1..).unwrap_or_default();
            let (value, rest) = rest
                .split_once(quote)
                .ok_or_else(|| err(text, at, format!("attribute {name}: no closing quote")))?;
            if value.contains(['<', '&']) {
                return Err(err(
                    text,
                    at,
                    format!("attribute {name}: '<' or '&' in value"),
                ));
            }
            if out.iter().any(|(n, _)| *n == name) {
                return Err(err(text, at, format!("attribute {name} given twice")));
            }
            out.push((name, value));
            s = rest;
        }
    }

    fn tokens(text: &str) -> Result<Vec<Token<'_>>> {
        let mut out = Vec::new();
        let mut pos = 0usize;
        let mut seen_element = false;
        while pos < text.len() {
            let rest = text.get(pos..).unwrap_or_default();
            let Some(lt) = rest.find('<') else {
                out.push(Token::Text {
                    at: pos,
                    text: rest,
                });
                break;
            };
            if lt > 0 {
                out.push(Token::Text {
                    at: pos,
                    text: rest.get(..lt).unwrap_or_default(),
                });
            }
            let at = pos + lt;
            let tag = rest.get(lt..).unwrap_or_default();
            if let Some(body) = tag.strip_prefix("<!--") {
                let end = body
                    .find("-->")
                    .ok_or_else(|| err(text, at, "comment without -->"))?;
                pos = at + 4 + end + 3;
                continue;
            }
            if let Some(body) = tag.strip_prefix("<?") {
                if seen_element || at != text.len() - text.trim_start().len() {
                    return Err(err(text, at, "an XML declaration must come first"));
                }
                let end = body
                    .find("?>")
                    .ok_or_else(|| err(text, at, "declaration without ?>"))?;
                pos = at + 2 + end + 2;
                continue;
            }
            if tag.starts_with("<!") {
                return Err(err(text, at, "DOCTYPE and CDATA are not allowed in a bmap"));
            }
            let end = tag
                .find('>')
                .ok_or_else(|| err(text, at, "tag without '>'"))?;
            let inner = tag.get(1..end).unwrap_or_default();
            pos = at + end + 1;
            seen_element = true;
            if let Some(name) = inner.strip_prefix('/') {
                let name = name.trim_end();
                if !is_name(name) {
                    return Err(err(text, at, format!("bad end tag </{name}>")));
                }
                out.push(Token::End { at, name });
                continue;
            }
            let (inner, empty) = match inner.strip_suffix('/') {
                Some(i) => (i, true),
                None => (inner, false),
            };
            let (name, rest) = match inner.find(|c: char| c.is_ascii_whitespace()) {
                Some(i) => (
                    inner.get(..i).unwrap_or_default(),
                    inner.get(i..).unwrap_or_default(),
                ),
                None => (inner, ""),
            };
            if !is_name(name) {
                return Err(err(text, at, format!("bad tag <{inner}>")));
            }
            out.push(Token::Start {
                at,
                name,
                attrs: attrs(text, at, rest)?,
                empty,
            });
        }
        Ok(out)
    }

    fn number(text: &str, leaf: &Leaf<'_>, what: &str) -> Result<u64> {
        let v = leaf.text.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(text, leaf.at, format!("{what}: {v:?} is not a number")));
        }
        v.parse()
            .map_err(|_| err(text, leaf.at, format!("{what}: {v} is too large")))
    }

    fn sha256(text: &str, at: usize, what: &str, v: &str) -> Result<[u8; 32]> {
        let v = v.trim();
        let mut out = [0u8; 32];
        if v.len() != 64 {
            return Err(err(
                text,
                at,
                format!("{what}: a SHA-256 has 64 hex digits, got {v:?}"),
            ));
        }
        for (i, o) in out.iter_mut().enumerate() {
            let pair = v.get(2 * i..2 * i + 2).unwrap_or_default();
            *o = u8::from_str_radix(pair, 16)
                .map_err(|_| err(text, at, format!("{what}: {v:?} is not hex")))?;
        }
        Ok(out)
    }

    pub(super) fn parse(text: &str) -> Result<ParsedBmap> {
        let toks = tokens(text)?;
        let mut it = toks.iter().peekable();
        let skip_space =
            |it: &mut std::iter::Peekable<std::slice::Iter<'_, Token<'_>>>| -> Result<()> {
                while let Some(Token::Text { at, text: t }) = it.peek() {
                    if !t.trim().is_empty() {
                        return Err(err(text, *at, format!("unexpected text {:?}", t.trim())));
                    }
                    it.next();
                }
                Ok(())
            };
        skip_space(&mut it)?;
        let root_at = match it.next() {
            Some(Token::Start {
                at,
                name: "bmap",
                attrs,
                empty: false,
            }) => {
                let version = attrs
                    .iter()
                    .find(|(n, _)| *n == "version")
                    .map(|(_, v)| *v)
                    .ok_or_else(|| err(text, *at, "<bmap> has no version"))?;
                let major = version.split('.').next().unwrap_or_default();
                if major != "2" {
                    return Err(err(
                        text,
                        *at,
                        format!("bmap version {version} is not supported (2.x is)"),
                    ));
                }
                *at
            }
            Some(Token::Start { at, name, .. }) => {
                return Err(err(
                    text,
                    *at,
                    format!("the root element is <{name}>, not <bmap>"),
                ))
            }
            Some(Token::End { at, .. }) | Some(Token::Text { at, .. }) => {
                return Err(err(text, *at, "no <bmap> element"))
            }
            None => return Err(err(text, 0, "empty file")),
        };
        let mut fields: Vec<(&str, Leaf<'_>)> = Vec::new();
        let mut ranges: Vec<Leaf<'_>> = Vec::new();
        let mut block_map_at = None;
        // Reads one leaf element whose start tag was just taken.
        fn leaf<'a>(
            text: &str,
            it: &mut std::iter::Peekable<std::slice::Iter<'_, Token<'a>>>,
            at: usize,
            name: &str,
            attrs: &[(&'a str, &'a str)],
        ) -> Result<Leaf<'a>> {
            let mut body = "";
            if let Some(Token::Text { text: t, .. }) = it.peek() {
                body = t;
                it.next();
            }
            match it.next() {
                Some(Token::End { name: n, .. }) if *n == name => Ok(Leaf {
                    at,
                    attrs: attrs.to_vec(),
                    text: body,
                }),
                Some(Token::Start { at, name: n, .. }) => {
                    Err(err(text, *at, format!("<{n}> inside <{name}>")))
                }
                Some(Token::End { at, name: n }) => {
                    Err(err(text, *at, format!("</{n}> closes <{name}>")))
                }
                _ => Err(err(text, at, format!("<{name}> is not closed"))),
            }
        }
        loop {
            skip_space(&mut it)?;
            match it.next() {
                Some(Token::End { name: "bmap", .. }) => break,
                Some(Token::Start {
                    at,
                    name: "BlockMap",
                    empty,
                    ..
                }) => {
                    if block_map_at.replace(*at).is_some() {
                        return Err(err(text, *at, "<BlockMap> given twice"));
                    }
                    if *empty {
                        continue;
                    }
                    loop {
                        skip_space(&mut it)?;
                        match it.next() {
                            Some(Token::End {
                                name: "BlockMap", ..
                            }) => break,
                            Some(Token::Start {
                                at,
                                name: "Range",
                                attrs,
                                empty: false,
                            }) => ranges.push(leaf(text, &mut it, *at, "Range", attrs)?),
                            Some(Token::Start { at, name, .. }) => {
                                return Err(err(text, *at, format!("<{name}> inside <BlockMap>")))
                            }
                            Some(Token::End { at, name }) => {
                                return Err(err(text, *at, format!("</{name}> closes <BlockMap>")))
                            }
                            _ => return Err(err(text, *at, "<BlockMap> is not closed")),
                        }
                    }
                }
                Some(Token::Start {
                    at,
                    name,
                    attrs,
                    empty: false,
                }) => {
                    let known = [
                        "ImageSize",
                        "BlockSize",
                        "BlocksCount",
                        "MappedBlocksCount",
                        "ChecksumType",
                        "BmapFileChecksum",
                    ];
                    let Some(name) = known.iter().find(|k| *k == name) else {
                        return Err(err(text, *at, format!("unknown element <{name}>")));
                    };
                    if fields.iter().any(|(n, _)| n == name) {
                        return Err(err(text, *at, format!("<{name}> given twice")));
                    }
                    let l = leaf(text, &mut it, *at, name, attrs)?;
                    fields.push((name, l));
                }
                Some(Token::Start { at, name, .. }) => {
                    return Err(err(text, *at, format!("empty element <{name}/>")))
                }
                Some(Token::End { at, name }) => {
                    return Err(err(text, *at, format!("</{name}> closes <bmap>")))
                }
                Some(Token::Text { at, .. }) => return Err(err(text, *at, "unexpected text")),
                None => return Err(err(text, root_at, "<bmap> is not closed")),
            }
        }
        skip_space(&mut it)?;
        if let Some(Token::Start { at, .. } | Token::End { at, .. }) = it.next() {
            return Err(err(text, *at, "content after </bmap>"));
        }
        let get = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, l)| l)
                .ok_or_else(|| err(text, root_at, format!("no <{name}>")))
        };
        let image_size = number(text, get("ImageSize")?, "ImageSize")?;
        let bs = get("BlockSize")?;
        let block_size = number(text, bs, "BlockSize")?;
        if block_size < 512 || !block_size.is_power_of_two() {
            return Err(err(
                text,
                bs.at,
                format!("BlockSize {block_size} is not a power of two of at least 512"),
            ));
        }
        let bc = get("BlocksCount")?;
        let blocks = number(text, bc, "BlocksCount")?;
        if blocks != image_size.div_ceil(block_size) {
            return Err(err(
                text,
                bc.at,
                format!(
                    "BlocksCount {blocks} does not match ImageSize {image_size} in blocks of {block_size}"
                ),
            ));
        }
        let ct = get("ChecksumType")?;
        if ct.text.trim() != "sha256" {
            return Err(err(
                text,
                ct.at,
                format!(
                    "ChecksumType {:?} is not supported (sha256 is)",
                    ct.text.trim()
                ),
            ));
        }
        let fc = get("BmapFileChecksum")?;
        let own = sha256(text, fc.at, "BmapFileChecksum", fc.text)?;
        let value = fc.text.trim();
        let zeroed = text.replacen(value, &"0".repeat(64), 1);
        if Sha256::digest(zeroed.as_bytes()).as_slice() != own {
            return Err(err(
                text,
                fc.at,
                "BmapFileChecksum does not match the file (it was changed after it was written)",
            ));
        }
        if block_map_at.is_none() {
            return Err(err(text, root_at, "no <BlockMap>"));
        }
        let mut out: Vec<MappedRange> = Vec::with_capacity(ranges.len());
        let mut mapped = 0u64;
        for r in &ranges {
            let chk = r
                .attrs
                .iter()
                .find(|(n, _)| *n == "chksum")
                .ok_or_else(|| err(text, r.at, "<Range> without chksum"))?;
            if let Some((n, _)) = r.attrs.iter().find(|(n, _)| *n != "chksum") {
                return Err(err(
                    text,
                    r.at,
                    format!("<Range> has an unknown attribute {n}"),
                ));
            }
            let sha = sha256(text, r.at, "Range chksum", chk.1)?;
            let body = r.text.trim();
            let num = |s: &str| -> Result<u64> {
                let s = s.trim();
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err(text, r.at, format!("range {body:?} is not N or N-M")));
                }
                s.parse()
                    .map_err(|_| err(text, r.at, format!("range {body:?} is too large")))
            };
            let (first, last) = match body.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let n = num(body)?;
                    (n, n)
                }
            };
            if first > last {
                return Err(err(text, r.at, format!("range {body} runs backwards")));
            }
            if last >= blocks {
                return Err(err(
                    text,
                    r.at,
                    format!("range {body} ends past the image's {blocks} blocks"),
                ));
            }
            if let Some(prev) = out.last() {
                if first <= prev.last {
                    return Err(err(
                        text,
                        r.at,
                        format!("range {body} overlaps or precedes the range before it"),
                    ));
                }
            }
            mapped += last - first + 1;
            out.push(MappedRange {
                first,
                last,
                sha256: sha,
            });
        }
        let mc = get("MappedBlocksCount")?;
        let want = number(text, mc, "MappedBlocksCount")?;
        if want != mapped {
            return Err(err(
                text,
                mc.at,
                format!("MappedBlocksCount {want} but the ranges hold {mapped} blocks"),
            ));
        }
        Ok(ParsedBmap {
            image_size,
            block_size,
            ranges: out,
        })
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

    fn sample() -> (Vec<u8>, String) {
        let size = 9 * BLOCK_SIZE + 512;
        let image: Vec<u8> = (0..size).map(|i| (i % 241) as u8).collect();
        let mut m = BlockMap::new(ByteLen(size));
        m.map(0, 1)
            .map(3 * BLOCK_SIZE, 2 * BLOCK_SIZE)
            .map(9 * BLOCK_SIZE, 512);
        let xml = m.to_xml(&mut std::io::Cursor::new(&image)).unwrap();
        (image, xml)
    }

    #[test]
    fn a_written_map_reads_back_with_its_checksums() {
        let (image, xml) = sample();
        let p = ParsedBmap::from_xml(&xml).unwrap();
        assert_eq!(p.image_size, image.len() as u64);
        assert_eq!(p.block_size, BLOCK_SIZE);
        let spans: Vec<(u64, u64)> = p.ranges.iter().map(|r| (r.first, r.last)).collect();
        assert_eq!(spans, [(0, 0), (3, 4), (9, 9)]);
        for r in &p.ranges {
            let (o, l) = p.byte_span(r);
            let bytes = &image[o as usize..(o + l) as usize];
            assert_eq!(Sha256::digest(bytes).as_slice(), r.sha256);
        }
        assert_eq!(p.mapped_bytes(), 3 * BLOCK_SIZE + 512);
    }

    fn reseal(xml: &str) -> String {
        let own = xml
            .split("<BmapFileChecksum> ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap()
            .to_string();
        let zeros = "0".repeat(64);
        let z = xml.replacen(&own, &zeros, 1);
        let d = hex(&Sha256::digest(z.as_bytes()));
        z.replacen(&zeros, &d, 1)
    }

    #[test]
    fn every_inconsistency_is_refused_naming_its_line() {
        let (_, xml) = sample();
        let cases: Vec<(String, &str)> = vec![
            (
                xml.replacen("> 3-4 <", "> 3-5 <", 1),
                "does not match the file",
            ),
            (
                reseal(&xml.replacen("> 3-4 <", "> 3-5 <", 1)),
                "MappedBlocksCount 4 but the ranges hold 5",
            ),
            (reseal(&xml.replacen("> 3-4 <", "> 0-4 <", 1)), "overlaps"),
            (reseal(&xml.replacen("> 3-4 <", "> 4-3 <", 1)), "backwards"),
            (reseal(&xml.replacen("> 9 <", "> 10 <", 1)), "ends past"),
            (
                reseal(&xml.replacen("<BlocksCount> 10 <", "<BlocksCount> 11 <", 1)),
                "BlocksCount 11",
            ),
            (reseal(&xml.replacen("> sha256 <", "> sha1 <", 1)), "sha1"),
            (
                reseal(&xml.replacen("version=\"2.0\"", "version=\"3.0\"", 1)),
                "version 3.0",
            ),
            (
                reseal(&xml.replacen("<BlockSize>", "<Foo>1</Foo><BlockSize>", 1)),
                "unknown element <Foo>",
            ),
            (
                reseal(&xml.replacen("</BlockMap>", "", 1)),
                "closes <BlockMap>",
            ),
            (
                xml.replacen("<ImageSize>", "<!DOCTYPE x><ImageSize>", 1),
                "DOCTYPE",
            ),
        ];
        for (bad, want) in cases {
            let e = ParsedBmap::from_xml(&bad).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
            assert!(e.starts_with("bmap line "), "{e}");
        }
        let e = ParsedBmap::from_xml(&reseal(&xml.replacen("> 3-4 <", "> 3-5 <", 1)))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bmap line 9:"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn the_parser_never_panics(s in "\\PC{0,400}") {
            let _ = ParsedBmap::from_xml(&s);
        }

        #[test]
        fn the_parser_never_panics_on_a_mutated_map(pos in 0usize..2000, len in 0usize..8, with in "[<>/=\" 0-9a-z-]{0,6}") {
            let (_, xml) = sample();
            let pos = pos.min(xml.len());
            let end = (pos + len).min(xml.len());
            if xml.is_char_boundary(pos) && xml.is_char_boundary(end) {
                let mut m = xml.clone();
                m.replace_range(pos..end, &with);
                let _ = ParsedBmap::from_xml(&m);
                let _ = ParsedBmap::from_xml(&reseal_lenient(&m));
            }
        }
    }

    fn reseal_lenient(xml: &str) -> String {
        match xml
            .split("<BmapFileChecksum> ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
        {
            Some(own) if own.len() == 64 => reseal(xml),
            _ => xml.to_string(),
        }
    }
}
