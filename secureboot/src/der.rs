//! A minimal DER reader and writer: exactly what X.509 certificates, PKCS#8/PKCS#1
//! keys and Authenticode PKCS#7 need. Only low tag numbers (< 31) and definite
//! lengths of up to four length octets are accepted. The reader never panics.

use crate::{Error, Result};

pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_NULL: u8 = 0x05;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;
pub(crate) const TAG_SET: u8 = 0x31;

/// `[n]` context-specific, constructed.
pub(crate) const fn ctx(n: u8) -> u8 {
    0xA0 | n
}

/// Object identifiers (DER content octets).
pub(crate) mod oid {
    /// 1.2.840.113549.1.7.2 signedData
    pub const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
    /// 2.16.840.1.101.3.4.2.1 sha256
    pub const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    /// 1.2.840.113549.1.1.1 rsaEncryption
    pub const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    /// 1.2.840.113549.1.1.11 sha256WithRSAEncryption
    pub const SHA256_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    /// 1.2.840.113549.1.9.3 contentType
    pub const CONTENT_TYPE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03];
    /// 1.2.840.113549.1.9.4 messageDigest
    pub const MESSAGE_DIGEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04];
    /// 1.3.6.1.4.1.311.2.1.4 SPC_INDIRECT_DATA_OBJID
    pub const SPC_INDIRECT_DATA: &[u8] =
        &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x04];
    /// 1.3.6.1.4.1.311.2.1.15 SPC_PE_IMAGE_DATA_OBJID
    pub const SPC_PE_IMAGE_DATA: &[u8] =
        &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x0f];
    /// 1.3.6.1.4.1.311.2.1.12 SPC_SP_OPUS_INFO_OBJID
    pub const SPC_SP_OPUS_INFO: &[u8] =
        &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x0c];
    /// 2.5.4.3 commonName
    pub const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
}

/// One decoded TLV.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tlv<'a> {
    /// The tag octet.
    pub tag: u8,
    /// The content octets.
    pub content: &'a [u8],
    /// Tag, length and content.
    pub raw: &'a [u8],
}

/// Sequential reader over the TLVs of one content.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads TLVs from `data`; `what` names the input in errors.
    pub fn new(data: &'a [u8], what: &'static str) -> Self {
        Reader { data, pos: 0, what }
    }

    /// A reader over the content of `tlv`.
    pub fn inner(&self, tlv: &Tlv<'a>) -> Reader<'a> {
        Reader::new(tlv.content, self.what)
    }

    fn err(&self, field: &'static str, reason: impl Into<String>) -> Error {
        Error::Der {
            what: self.what,
            field,
            reason: reason.into(),
        }
    }

    /// True if all input was consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The tag of the next TLV, if any.
    pub fn peek_tag(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    /// Reads the next TLV, whatever its tag.
    pub fn any(&mut self, field: &'static str) -> Result<Tlv<'a>> {
        let start = self.pos;
        let rest = self.data.get(start..).unwrap_or(&[]);
        let (&tag, after_tag) = rest
            .split_first()
            .ok_or_else(|| self.err(field, "missing (end of data)"))?;
        if tag & 0x1f == 0x1f {
            return Err(self.err(field, "multi-byte tags are not supported"));
        }
        let (&l0, after_len0) = after_tag
            .split_first()
            .ok_or_else(|| self.err(field, "truncated length"))?;
        let (len, nlen) = if l0 < 0x80 {
            (l0 as usize, 0usize)
        } else if l0 == 0x80 {
            return Err(self.err(field, "indefinite length (BER) is not DER"));
        } else {
            let n = (l0 & 0x7f) as usize;
            if n > 4 {
                return Err(self.err(field, format!("{n}-octet length is too long")));
            }
            let bytes = after_len0
                .get(..n)
                .ok_or_else(|| self.err(field, "truncated length"))?;
            let mut len = 0usize;
            for &b in bytes {
                len = (len << 8) | b as usize;
            }
            if len < 0x80 || bytes.first() == Some(&0) {
                return Err(self.err(field, "non-minimal length encoding"));
            }
            (len, n)
        };
        let hdr = 2 + nlen;
        let content = rest.get(hdr..).and_then(|r| r.get(..len)).ok_or_else(|| {
            self.err(
                field,
                format!(
                    "length {len} runs past the end of the enclosing data ({} bytes left)",
                    rest.len().saturating_sub(hdr)
                ),
            )
        })?;
        let raw = &rest[..hdr + len];
        self.pos = start + hdr + len;
        Ok(Tlv { tag, content, raw })
    }

    /// Reads the next TLV and checks its tag.
    pub fn expect(&mut self, tag: u8, field: &'static str) -> Result<Tlv<'a>> {
        match self.peek_tag() {
            Some(t) if t == tag => self.any(field),
            Some(t) => Err(self.err(field, format!("expected tag {tag:#04x}, found {t:#04x}"))),
            None => Err(self.err(field, "missing (end of data)")),
        }
    }

    /// Reads the next TLV if it has tag `tag`.
    pub fn optional(&mut self, tag: u8, field: &'static str) -> Result<Option<Tlv<'a>>> {
        if self.peek_tag() == Some(tag) {
            self.any(field).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Reads an OBJECT IDENTIFIER and returns its content octets.
    pub fn oid(&mut self, field: &'static str) -> Result<&'a [u8]> {
        Ok(self.expect(TAG_OID, field)?.content)
    }

    /// Reads a SEQUENCE and returns a reader over its content.
    pub fn sequence(&mut self, field: &'static str) -> Result<Reader<'a>> {
        let t = self.expect(TAG_SEQUENCE, field)?;
        Ok(self.inner(&t))
    }

    /// Reads a small non-negative INTEGER.
    pub fn small_uint(&mut self, field: &'static str) -> Result<u64> {
        let t = self.expect(TAG_INTEGER, field)?;
        if t.content.is_empty() || t.content.len() > 8 || t.content[0] & 0x80 != 0 {
            return Err(self.err(field, "not a small non-negative integer"));
        }
        Ok(t.content.iter().fold(0u64, |a, &b| (a << 8) | b as u64))
    }

    /// Fails unless all input was consumed.
    pub fn finish(&self, field: &'static str) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.err(
                field,
                format!("{} unexpected trailing bytes", self.data.len() - self.pos),
            ))
        }
    }
}

/// Encodes a TLV.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (8 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Encodes a constructed TLV from already encoded parts.
pub(crate) fn cons(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag, &parts.concat())
}

/// SEQUENCE of already encoded parts.
pub(crate) fn seq(parts: &[&[u8]]) -> Vec<u8> {
    cons(TAG_SEQUENCE, parts)
}

/// DER SET OF: the encoded elements sorted as DER requires (X.690 11.6).
pub(crate) fn set_of(mut items: Vec<Vec<u8>>) -> Vec<u8> {
    items.sort_by(|a, b| der_set_order(a, b));
    tlv(TAG_SET, &items.concat())
}

/// X.690 11.6 order: compare as octet strings, the shorter padded with zero octets.
pub(crate) fn der_set_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let n = a.len().max(b.len());
    let pa = a.iter().copied().chain(std::iter::repeat(0)).take(n);
    let pb = b.iter().copied().chain(std::iter::repeat(0)).take(n);
    pa.cmp(pb)
}

/// OBJECT IDENTIFIER from content octets.
pub(crate) fn oid(content: &[u8]) -> Vec<u8> {
    tlv(TAG_OID, content)
}

/// AlgorithmIdentifier { oid, NULL }.
pub(crate) fn alg_null(o: &[u8]) -> Vec<u8> {
    seq(&[&oid(o), &[TAG_NULL, 0]])
}

/// Small non-negative INTEGER.
pub(crate) fn small_int(v: u8) -> Vec<u8> {
    if v < 0x80 {
        vec![TAG_INTEGER, 1, v]
    } else {
        vec![TAG_INTEGER, 2, 0, v]
    }
}

/// Dotted text form of an OID (for messages). Never panics.
pub(crate) fn oid_text(content: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut cur: u64 = 0;
    for &b in content {
        if cur > (u64::MAX >> 8) {
            return format!("<invalid OID {}>", hex(content));
        }
        cur = (cur << 7) | (b & 0x7f) as u64;
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (cur / 40).min(2);
                arcs.push(first);
                arcs.push(cur - first * 40);
            } else {
                arcs.push(cur);
            }
            cur = 0;
        }
    }
    if arcs.is_empty() {
        return "<empty OID>".to_owned();
    }
    arcs.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(".")
}

/// Lower-case hex (for messages).
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Strips the sign-padding zero octets of a non-negative INTEGER's content.
pub(crate) fn strip_int(b: &[u8]) -> &[u8] {
    let skip = b.iter().take_while(|&&x| x == 0).count();
    &b[skip.min(b.len())..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip() {
        for n in [0usize, 1, 127, 128, 255, 256, 65535, 65536, 70000] {
            let c = vec![7u8; n];
            let enc = tlv(TAG_OCTET_STRING, &c);
            let mut r = Reader::new(&enc, "test");
            let t = r.any("x").unwrap();
            assert_eq!(t.tag, TAG_OCTET_STRING);
            assert_eq!(t.content.len(), n);
            assert_eq!(t.raw, &enc[..]);
            r.finish("x").unwrap();
        }
    }

    #[test]
    fn rejects_bad_encodings() {
        for bad in [
            &[0x30, 0x80, 0, 0][..],
            &[0x30, 0x81, 0x05],
            &[0x30, 0x81, 0x7f],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x1f, 0x01, 0x00],
            &[0x30, 0x05, 0x00],
            &[0x30],
        ] {
            assert!(Reader::new(bad, "test").any("x").is_err(), "{bad:02x?}");
        }
    }

    #[test]
    fn oid_text_works() {
        assert_eq!(oid_text(oid::SPC_INDIRECT_DATA), "1.3.6.1.4.1.311.2.1.4");
        assert_eq!(oid_text(oid::SHA256), "2.16.840.1.101.3.4.2.1");
        assert_eq!(
            oid_text(&[0xff; 20]),
            format!("<invalid OID {}>", hex(&[0xff; 20]))
        );
    }

    #[test]
    fn set_of_is_sorted() {
        let s = set_of(vec![vec![0x30, 2, 1, 1], vec![0x30, 1, 0], vec![0x04, 0]]);
        assert_eq!(s, [0x31, 9, 0x04, 0, 0x30, 1, 0, 0x30, 2, 1, 1]);
    }
}
