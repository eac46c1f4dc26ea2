//! Cryptographic proposals. Only strong algorithms are accepted:
//! AES-GCM with a 16-byte ICV (128 or 256-bit keys), ChaCha20-Poly1305,
//! PRF HMAC-SHA-256/384/512, and X25519 key exchange. Everything else is
//! refused with a message naming what to use instead.

use std::fmt;

use serde::Serialize;

/// ESP AEAD transforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aead {
    /// AES-128-GCM with a 16-byte ICV (RFC 4106).
    Aes128Gcm16,
    /// AES-256-GCM with a 16-byte ICV (RFC 4106).
    Aes256Gcm16,
    /// ChaCha20-Poly1305 (RFC 7634).
    Chacha20Poly1305,
}

impl Aead {
    /// Key length without the salt.
    pub fn key_len(self) -> usize {
        match self {
            Aead::Aes128Gcm16 => 16,
            Aead::Aes256Gcm16 | Aead::Chacha20Poly1305 => 32,
        }
    }

    /// Salt length (RFC 4106 §8.1, RFC 7634 §4).
    pub const SALT_LEN: usize = 4;

    /// Name in proposals.
    pub fn name(self) -> &'static str {
        match self {
            Aead::Aes128Gcm16 => "aes128gcm16",
            Aead::Aes256Gcm16 => "aes256gcm16",
            Aead::Chacha20Poly1305 => "chacha20poly1305",
        }
    }

    fn from_token(t: &str) -> Option<Aead> {
        match t {
            "aes128gcm16" | "aes128gcm128" => Some(Aead::Aes128Gcm16),
            "aes256gcm16" | "aes256gcm128" => Some(Aead::Aes256Gcm16),
            "chacha20poly1305" => Some(Aead::Chacha20Poly1305),
            _ => None,
        }
    }
}

impl fmt::Display for Aead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Pseudo-random functions for IKE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prf {
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-384.
    Sha384,
    /// HMAC-SHA-512.
    Sha512,
}

/// Key-exchange groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DhGroup {
    /// Curve25519 (RFC 8031).
    X25519,
}

/// An IKE proposal: AEAD, PRF, key exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct IkeProposal {
    /// Encryption.
    pub aead: Aead,
    /// PRF.
    pub prf: Prf,
    /// Key exchange.
    pub dh: DhGroup,
}

/// An ESP proposal: AEAD, optional PFS group, extended sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct EspProposal {
    /// Encryption.
    pub aead: Aead,
    /// Key exchange for PFS on rekey.
    pub pfs: Option<DhGroup>,
    /// 64-bit extended sequence numbers (always on unless `noesn`).
    pub esn: bool,
}

/// Explains why a token is refused, with the replacement to use.
fn weak(token: &str) -> Option<String> {
    let t = token.to_ascii_lowercase();
    let msg = match t.as_str() {
        "3des" | "des" | "des3" | "blowfish" | "cast128" | "idea" | "rc5" | "null" => {
            format!("`{token}` is a broken or obsolete cipher; use aes256gcm16 or chacha20poly1305")
        }
        "md5" | "hmacmd5" | "prfmd5" | "md5_128" => {
            format!("`{token}` (MD5) is broken; use prfsha256 or stronger, with an AEAD cipher")
        }
        "sha1" | "sha" | "prfsha1" | "sha1_160" | "hmacsha1" => {
            format!("`{token}` (SHA-1) is too weak; use prfsha256 (or prfsha384/prfsha512) with an AEAD cipher")
        }
        "modp768" | "modp1024" | "modp1536" | "modp1024s160" | "modp2048s224" | "modp2048s256" => {
            format!("`{token}` is a weak Diffie-Hellman group; use x25519")
        }
        "modp2048" | "modp3072" | "modp4096" | "modp6144" | "modp8192" | "ecp256" | "ecp384"
        | "ecp521" | "curve448" => {
            format!("`{token}` is not supported; use x25519")
        }
        "aes128" | "aes192" | "aes256" | "aes128ctr" | "aes256ctr" | "aes128cbc" | "aes256cbc"
        | "camellia128" | "camellia256" => {
            format!("`{token}` is not an AEAD; use aes256gcm16 (or aes128gcm16, chacha20poly1305)")
        }
        "aes128gcm8" | "aes128gcm12" | "aes256gcm8" | "aes256gcm12" | "aes128gcm64"
        | "aes128gcm96" | "aes256gcm64" | "aes256gcm96" | "aes192gcm16" => {
            format!("`{token}` is not supported (short ICV or 192-bit key); use aes128gcm16 or aes256gcm16")
        }
        "sha256" | "sha384" | "sha512" | "sha256_128" | "sha384_192" | "sha512_256" => {
            format!("`{token}` is an integrity algorithm; AEAD proposals need none, remove it")
        }
        _ => return None,
    };
    Some(msg)
}

/// Parses an ESP proposal (`aes256gcm16`, `chacha20poly1305-x25519`, `aes128gcm16-noesn`).
pub fn parse_esp(s: &str) -> Result<EspProposal, String> {
    let mut aead = None;
    let mut pfs = None;
    let mut esn = true;
    for tok in s.split('-') {
        if let Some(a) = Aead::from_token(tok) {
            if aead.replace(a).is_some() {
                return Err(format!(
                    "`{s}` names two ciphers; write one proposal per cipher"
                ));
            }
        } else if tok == "x25519" || tok == "curve25519" {
            pfs = Some(DhGroup::X25519);
        } else if tok == "esn" {
            esn = true;
        } else if tok == "noesn" {
            esn = false;
        } else if let Some(msg) = weak(tok) {
            return Err(msg);
        } else {
            return Err(format!(
                "unknown ESP algorithm `{tok}` in `{s}`; supported: aes128gcm16, aes256gcm16, chacha20poly1305, optionally -x25519, -esn/-noesn"
            ));
        }
    }
    let aead =
        aead.ok_or_else(|| format!("`{s}` names no cipher; use aes256gcm16 or chacha20poly1305"))?;
    Ok(EspProposal { aead, pfs, esn })
}

/// Parses an IKE proposal (`aes256gcm16-prfsha384-x25519`).
pub fn parse_ike(s: &str) -> Result<IkeProposal, String> {
    let mut aead = None;
    let mut prf = None;
    let mut dh = None;
    for tok in s.split('-') {
        if let Some(a) = Aead::from_token(tok) {
            aead = Some(a);
        } else if let Some(p) = match tok {
            "prfsha256" => Some(Prf::Sha256),
            "prfsha384" => Some(Prf::Sha384),
            "prfsha512" => Some(Prf::Sha512),
            _ => None,
        } {
            prf = Some(p);
        } else if tok == "x25519" || tok == "curve25519" {
            dh = Some(DhGroup::X25519);
        } else if let Some(msg) = weak(tok) {
            return Err(msg);
        } else {
            return Err(format!(
                "unknown IKE algorithm `{tok}` in `{s}`; write CIPHER-PRF-GROUP, e.g. aes256gcm16-prfsha384-x25519"
            ));
        }
    }
    let aead =
        aead.ok_or_else(|| format!("`{s}` names no cipher; use aes256gcm16 or chacha20poly1305"))?;
    let prf =
        prf.ok_or_else(|| format!("`{s}` names no PRF; add prfsha256, prfsha384 or prfsha512"))?;
    let dh = dh.ok_or_else(|| format!("`{s}` names no key exchange; add x25519"))?;
    Ok(IkeProposal { aead, prf, dh })
}

/// Parses a single AEAD name (manual SAs).
pub fn parse_aead(s: &str) -> Result<Aead, String> {
    Aead::from_token(s).ok_or_else(|| {
        weak(s).unwrap_or_else(|| {
            format!("unknown AEAD `{s}`; use aes128gcm16, aes256gcm16 or chacha20poly1305")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strong_proposals_parse() {
        let p = parse_ike("aes256gcm16-prfsha384-x25519").unwrap();
        assert_eq!(
            (p.aead, p.prf, p.dh),
            (Aead::Aes256Gcm16, Prf::Sha384, DhGroup::X25519)
        );
        let e = parse_esp("chacha20poly1305-x25519").unwrap();
        assert_eq!(
            (e.aead, e.pfs, e.esn),
            (Aead::Chacha20Poly1305, Some(DhGroup::X25519), true)
        );
        assert!(!parse_esp("aes128gcm16-noesn").unwrap().esn);
    }

    #[test]
    fn weak_algorithms_name_the_replacement() {
        assert!(parse_esp("3des-sha1").unwrap_err().contains("aes256gcm16"));
        assert!(parse_ike("aes256gcm16-prfsha1-x25519")
            .unwrap_err()
            .contains("prfsha256"));
        assert!(parse_ike("aes256gcm16-prfsha256-modp1024")
            .unwrap_err()
            .contains("x25519"));
        assert!(parse_esp("aes256-sha256")
            .unwrap_err()
            .contains("not an AEAD"));
        assert!(parse_ike("aes256gcm16-prfmd5-x25519")
            .unwrap_err()
            .contains("MD5"));
        assert!(parse_ike("aes256gcm16-x25519").unwrap_err().contains("PRF"));
    }
}
