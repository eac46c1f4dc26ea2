//! PEM (RFC 7468) blocks with a strict base64 decoder. Decoded bytes are returned in
//! [`Zeroizing`] buffers because they may hold private keys.

use zeroize::Zeroizing;

use crate::{Error, Result};

/// One PEM block.
pub(crate) struct Block {
    /// The label between `BEGIN ` and the dashes, e.g. `CERTIFICATE`.
    pub label: String,
    /// True if RFC 1421 headers (`Proc-Type: 4,ENCRYPTED` ...) preceded the data.
    pub encrypted: bool,
    /// Decoded content.
    pub der: Zeroizing<Vec<u8>>,
}

/// Parses every PEM block in `input`. `what` names the input in errors.
pub(crate) fn parse(input: &[u8], what: &'static str) -> Result<Vec<Block>> {
    let err = |reason: String| Error::Pem { what, reason };
    let text = std::str::from_utf8(input).map_err(|_| err("input is not UTF-8 text".into()))?;
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = Zeroizing::new(String::new());
        let mut encrypted = false;
        let mut closed = false;
        for l in lines.by_ref() {
            if l == end {
                closed = true;
                break;
            }
            if l.contains(':') {
                // RFC 1421 encapsulated header (only used by legacy encrypted keys).
                if l.starts_with("Proc-Type:") && l.contains("ENCRYPTED") {
                    encrypted = true;
                }
                continue;
            }
            body.push_str(l);
        }
        if !closed {
            return Err(err(format!("block {label:?} has no {end:?} line")));
        }
        let der = base64_decode(body.as_bytes())
            .ok_or_else(|| err(format!("block {label:?} is not valid base64")))?;
        blocks.push(Block {
            label: label.to_owned(),
            encrypted,
            der,
        });
    }
    if blocks.is_empty() {
        return Err(err("no -----BEGIN ...----- block found".into()));
    }
    Ok(blocks)
}

fn b64val(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some((c - b'A') as u32),
        b'a'..=b'z' => Some((c - b'a') as u32 + 26),
        b'0'..=b'9' => Some((c - b'0') as u32 + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Standard base64 with padding; whitespace is ignored.
pub(crate) fn base64_decode(input: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let chars: Zeroizing<Vec<u8>> = Zeroizing::new(
        input
            .iter()
            .copied()
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    if chars.len() % 4 != 0 {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(chars.len() / 4 * 3));
    let n = chars.len() / 4;
    for (i, q) in chars.chunks(4).enumerate() {
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != n) {
            return None;
        }
        let mut acc = 0u32;
        for &c in &q[..4 - pad] {
            acc = (acc << 6) | b64val(c)?;
        }
        acc <<= 6 * pad as u32;
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        for (enc, dec) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9v\nYmFy", "foobar"),
        ] {
            assert_eq!(&base64_decode(enc.as_bytes()).unwrap()[..], dec.as_bytes());
        }
        for bad in ["Zg=", "Z===", "Zg==Zm9v", "Zm9!"] {
            assert!(base64_decode(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn pem_blocks() {
        let p = b"junk\n-----BEGIN X-----\nZm9v\n-----END X-----\n-----BEGIN Y-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: x\n\nZg==\n-----END Y-----\n";
        let b = parse(p, "test").unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].label, "X");
        assert_eq!(&b[0].der[..], b"foo");
        assert!(!b[0].encrypted);
        assert!(b[1].encrypted);
        assert!(parse(b"-----BEGIN X-----\nZm9v\n", "test").is_err());
        assert!(parse(b"nothing", "test").is_err());
    }
}
