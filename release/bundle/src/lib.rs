//! Signed update bundles, and the framing of the management channel that
//! carries them to a gateway.
//!
//! A bundle is what `appliance bundle` writes and the gateway init installs:
//! a build's signed `manifest.json`, its Ed25519 signature (`manifest.sig`)
//! and its UKI, in one stream that can be checked before the large part
//! arrives:
//!
//! ```text
//! "APLBNDL1"                       8 bytes, the format
//! manifest length                  u32, little endian, at most 1 MiB
//! manifest.json                    as signed
//! signature                        64 bytes (Ed25519 over manifest.json)
//! UKI length                       u64, little endian, at most 512 MiB
//! uki.efi
//! ```
//!
//! Nothing in a bundle is trusted until [`verify`] has checked the signature
//! against the release key the running image carries (in its runtime plan,
//! so in its measured boot state); the UKI is then trusted only once its
//! SHA-256 equals the signed manifest's ([`UkiCheck`]). A bundle has no
//! timestamps, so the same build gives the same bytes.
//!
//! The management channel (a TCP port on the black personality's address,
//! relayed by black as opaque bytes to the init) starts every stream with
//! [`wire::MAGIC`] and an endpoint; black can delay, cut or replay a stream,
//! never forge one: every endpoint authenticates what it acts on.
//!
//! This crate is trusted: the gateway init depends on it. Every reader is
//! bounded and never panics (`cargo fuzz` target `bundle_header`).

use std::cmp::Ordering;
use std::io::Read;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The bundle format.
pub const MAGIC: [u8; 8] = *b"APLBNDL1";
/// The largest manifest a bundle may carry.
pub const MAX_MANIFEST: usize = 1 << 20;
/// The largest UKI a bundle may carry.
pub const MAX_UKI: u64 = 512 << 20;
/// An Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// The manifest format this crate reads (`signing::manifest::FORMAT`).
pub const MANIFEST_FORMAT: u32 = 3;

/// Why a bundle is refused. Every message names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    /// The stream ended or failed.
    #[error("bundle: {what}: {detail}")]
    Read {
        /// Which part.
        what: &'static str,
        /// The I/O error.
        detail: String,
    },
    /// Not a bundle, or another format.
    #[error("not an update bundle (format {found:?}; expected \"APLBNDL1\")")]
    Magic {
        /// What the first 8 bytes were (printable ASCII only).
        found: String,
    },
    /// A length over its bound.
    #[error("bundle: {what} length {len} exceeds {max}")]
    Length {
        /// Which part.
        what: &'static str,
        /// The length given.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// The signature does not verify.
    #[error("bundle: manifest.sig does not verify with the release key {fingerprint} built into this image")]
    Signature {
        /// The release key's fingerprint.
        fingerprint: String,
    },
    /// The signed manifest cannot be read.
    #[error("bundle: manifest.json: {0}")]
    Manifest(String),
    /// The UKI is not the one the manifest names.
    #[error("bundle: uki.efi {field} {actual} differs from the signed manifest's {expected}")]
    Uki {
        /// `sha256` or `size`.
        field: &'static str,
        /// The manifest's value.
        expected: String,
        /// The bundle's.
        actual: String,
    },
}

/// A bundle's fixed part: everything before the UKI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `manifest.json` as signed.
    pub manifest: Vec<u8>,
    /// `manifest.sig`.
    pub signature: [u8; SIGNATURE_LEN],
    /// The UKI's length (it follows the header).
    pub uki_len: u64,
}

/// Encodes a bundle.
///
/// # Errors
/// A part over its bound.
pub fn encode(
    manifest: &[u8],
    signature: &[u8; SIGNATURE_LEN],
    uki: &[u8],
) -> Result<Vec<u8>, BundleError> {
    if manifest.len() > MAX_MANIFEST {
        return Err(BundleError::Length {
            what: "manifest",
            len: manifest.len() as u64,
            max: MAX_MANIFEST as u64,
        });
    }
    if uki.len() as u64 > MAX_UKI {
        return Err(BundleError::Length {
            what: "UKI",
            len: uki.len() as u64,
            max: MAX_UKI,
        });
    }
    let mut v = Vec::with_capacity(8 + 4 + manifest.len() + SIGNATURE_LEN + 8 + uki.len());
    v.extend_from_slice(&MAGIC);
    v.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
    v.extend_from_slice(manifest);
    v.extend_from_slice(signature);
    v.extend_from_slice(&(uki.len() as u64).to_le_bytes());
    v.extend_from_slice(uki);
    Ok(v)
}

fn read_exact<R: Read>(r: &mut R, buf: &mut [u8], what: &'static str) -> Result<(), BundleError> {
    r.read_exact(buf).map_err(|e| BundleError::Read {
        what,
        detail: if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "the stream ended early".to_owned()
        } else {
            e.to_string()
        },
    })
}

impl Header {
    /// Reads the header from `r`, leaving `r` at the UKI's first byte. Reads
    /// at most `8 + 4 + MAX_MANIFEST + 64 + 8` bytes.
    ///
    /// # Errors
    /// Another format, a length over its bound, or a short stream.
    pub fn read<R: Read>(r: &mut R) -> Result<Header, BundleError> {
        let mut magic = [0u8; 8];
        read_exact(r, &mut magic, "format")?;
        if magic != MAGIC {
            return Err(BundleError::Magic {
                found: magic
                    .iter()
                    .map(|b| {
                        if b.is_ascii_graphic() {
                            *b as char
                        } else {
                            '.'
                        }
                    })
                    .collect(),
            });
        }
        let mut len = [0u8; 4];
        read_exact(r, &mut len, "manifest length")?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_MANIFEST {
            return Err(BundleError::Length {
                what: "manifest",
                len: len as u64,
                max: MAX_MANIFEST as u64,
            });
        }
        let mut manifest = vec![0u8; len];
        read_exact(r, &mut manifest, "manifest.json")?;
        let mut signature = [0u8; SIGNATURE_LEN];
        read_exact(r, &mut signature, "manifest.sig")?;
        let mut ul = [0u8; 8];
        read_exact(r, &mut ul, "UKI length")?;
        let uki_len = u64::from_le_bytes(ul);
        if uki_len > MAX_UKI {
            return Err(BundleError::Length {
                what: "UKI",
                len: uki_len,
                max: MAX_UKI,
            });
        }
        Ok(Header {
            manifest,
            signature,
            uki_len,
        })
    }
}

/// What a verified bundle installs: from its signed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The appliance (profile) name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its security version (anti-rollback).
    pub security_version: u64,
    /// A lab image.
    pub lab: bool,
    /// The UKI's SHA-256.
    pub uki_sha256: [u8; 32],
    /// The UKI's size.
    pub uki_size: u64,
}

impl Release {
    /// The UKI's file name on the ESP, with `tries` boot tries:
    /// `NAME_VERSION+TRIES.efi`.
    pub fn file_name(&self, tries: u32) -> String {
        format!("{}_{}+{tries}.efi", self.name, self.version)
    }
}

/// The manifest fields a gateway reads (the rest is signed too, and ignored).
#[derive(Deserialize)]
struct Probe {
    format: u32,
    profile: ProbeProfile,
    uki: ProbeUki,
}

#[derive(Deserialize)]
struct ProbeProfile {
    name: String,
    version: String,
    security_version: u64,
    lab: bool,
}

#[derive(Deserialize)]
struct ProbeUki {
    sha256: String,
    size: u64,
}

/// A name or version that can stand in an ESP file name next to a boot
/// counter: `[A-Za-z0-9._~^-]`, 1–64 bytes (no `+`: it starts the counter).
pub fn file_name_part_ok(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~' | b'^'))
}

/// The release key's fingerprint, as `appliance key` prints it:
/// `sha256:` over its DER SubjectPublicKeyInfo.
pub fn fingerprint(key: &[u8; 32]) -> String {
    const SPKI_PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let mut h = Sha256::new();
    h.update(SPKI_PREFIX);
    h.update(key);
    let d = h.finalize();
    let mut s = String::from("sha256:");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Whether `sig` is the release key's Ed25519 signature over `msg` (provisioned
/// secrets are signed so).
pub fn release_signed(release_key: &[u8; 32], msg: &[u8], sig: &[u8]) -> bool {
    use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};
    UnparsedPublicKey::new(&ED25519, release_key)
        .verify(msg, sig)
        .is_ok()
}

/// Checks the header's signature with the release key, then reads what the
/// signed manifest says.
///
/// # Errors
/// The signature does not verify, or the manifest lacks a field, or names a
/// UKI of another length than the bundle carries.
pub fn verify(h: &Header, release_key: &[u8; 32]) -> Result<Release, BundleError> {
    use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};
    UnparsedPublicKey::new(&ED25519, release_key)
        .verify(&h.manifest, &h.signature)
        .map_err(|_| BundleError::Signature {
            fingerprint: fingerprint(release_key),
        })?;
    let p: Probe =
        serde_json::from_slice(&h.manifest).map_err(|e| BundleError::Manifest(e.to_string()))?;
    if p.format != MANIFEST_FORMAT {
        return Err(BundleError::Manifest(format!(
            "format {} (this gateway reads format {MANIFEST_FORMAT})",
            p.format
        )));
    }
    for (field, v) in [
        ("profile.name", &p.profile.name),
        ("profile.version", &p.profile.version),
    ] {
        if !file_name_part_ok(v) {
            return Err(BundleError::Manifest(format!(
                "{field} {v:?} is not a file-name part ([A-Za-z0-9._~^-], 1-64 bytes)"
            )));
        }
    }
    let uki_sha256 = unhex32(&p.uki.sha256)
        .ok_or_else(|| BundleError::Manifest("uki.sha256 is not 64 hex digits".into()))?;
    if p.uki.size != h.uki_len {
        return Err(BundleError::Uki {
            field: "size",
            expected: p.uki.size.to_string(),
            actual: h.uki_len.to_string(),
        });
    }
    Ok(Release {
        name: p.profile.name,
        version: p.profile.version,
        security_version: p.profile.security_version,
        lab: p.profile.lab,
        uki_sha256,
        uki_size: p.uki.size,
    })
}

/// Hashes the UKI as it streams in; [`UkiCheck::finish`] compares it with
/// the signed manifest.
#[derive(Clone, Default)]
pub struct UkiCheck {
    hash: Sha256,
    len: u64,
}

impl UkiCheck {
    /// A new check.
    pub fn new() -> UkiCheck {
        UkiCheck::default()
    }

    /// The next bytes of the UKI.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hash.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Compares what was hashed with `release`.
    ///
    /// # Errors
    /// Another length or digest.
    pub fn finish(self, release: &Release) -> Result<(), BundleError> {
        if self.len != release.uki_size {
            return Err(BundleError::Uki {
                field: "size",
                expected: release.uki_size.to_string(),
                actual: self.len.to_string(),
            });
        }
        let d: [u8; 32] = self.hash.finalize().into();
        if d != release.uki_sha256 {
            let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
            return Err(BundleError::Uki {
                field: "sha256",
                expected: hex(&release.uki_sha256),
                actual: hex(&d),
            });
        }
        Ok(())
    }
}

/// What the running gateway is, for [`admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running<'a> {
    /// Its appliance name.
    pub name: &'a str,
    /// Its version.
    pub version: &'a str,
    /// Its security version.
    pub security_version: u64,
    /// The TPM's anti-rollback floor, if the device has one yet.
    pub floor: Option<u64>,
}

/// Whether a verified release may be installed on the running gateway: the
/// same appliance, a newer version (systemd-boot boots the newest; an older
/// one would only replace the fallback), a security version not below the
/// floor. Returns the refusal in words.
///
/// # Errors
/// The reason, naming the field.
pub fn admit(release: &Release, running: &Running<'_>) -> Result<(), String> {
    if release.name != running.name {
        return Err(format!(
            "the bundle is for appliance {:?}; this gateway is {:?}",
            release.name, running.name
        ));
    }
    if compare_versions(&release.version, running.version) != Ordering::Greater {
        return Err(format!(
            "version {} is not newer than the running {} (systemd-boot boots the newest; an older one would only replace the fallback)",
            release.version, running.version
        ));
    }
    let floor = running.floor.unwrap_or(0);
    if release.security_version < floor {
        return Err(format!(
            "security version {} is below this device's anti-rollback floor {floor}",
            release.security_version
        ));
    }
    Ok(())
}

/// Compares versions as systemd-boot orders its entries
/// (`strverscmp_improved`): runs of digits compare as numbers, runs of
/// letters as text, a number is newer than letters, `~` sorts before
/// anything (a pre-release), other characters only separate.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    let sep = |c: u8| !(c.is_ascii_alphanumeric() || c == b'~' || c == b'^');
    loop {
        while let [c, rest @ ..] = a {
            if !sep(*c) {
                break;
            }
            a = rest;
        }
        while let [c, rest @ ..] = b {
            if !sep(*c) {
                break;
            }
            b = rest;
        }
        match (a.first(), b.first()) {
            (Some(b'~'), Some(b'~')) => {
                a = &a[1..];
                b = &b[1..];
                continue;
            }
            (Some(b'~'), _) => return Ordering::Less,
            (_, Some(b'~')) => return Ordering::Greater,
            (None, None) => return Ordering::Equal,
            (None, Some(b'^')) => return Ordering::Less,
            (Some(b'^'), None) => return Ordering::Greater,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(b'^'), Some(b'^')) => {
                a = &a[1..];
                b = &b[1..];
                continue;
            }
            (Some(b'^'), _) => return Ordering::Less,
            (_, Some(b'^')) => return Ordering::Greater,
            _ => {}
        }
        let run = |s: &[u8], digits: bool| {
            s.iter()
                .take_while(|c| {
                    if digits {
                        c.is_ascii_digit()
                    } else {
                        c.is_ascii_alphabetic()
                    }
                })
                .count()
        };
        let (ad, bd) = (
            a.first().is_some_and(u8::is_ascii_digit),
            b.first().is_some_and(u8::is_ascii_digit),
        );
        match (ad, bd) {
            (true, false) => return Ordering::Greater,
            (false, true) => return Ordering::Less,
            (true, true) => {
                let (na, nb) = (run(a, true), run(b, true));
                let (ra, rb) = (&a[..na], &b[..nb]);
                let strip = |r: &'_ [u8]| -> usize { r.iter().take_while(|c| **c == b'0').count() };
                let (ra, rb) = (&ra[strip(ra)..], &rb[strip(rb)..]);
                let o = ra.len().cmp(&rb.len()).then_with(|| ra.cmp(rb));
                if o != Ordering::Equal {
                    return o;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (false, false) => {
                let (na, nb) = (run(a, false), run(b, false));
                let o = a[..na].cmp(&b[..nb]);
                if o != Ordering::Equal {
                    return o;
                }
                a = &a[na..];
                b = &b[nb..];
            }
        }
    }
}

/// The management channel's framing.
pub mod wire {
    use std::io::Read;

    /// The first bytes of every stream to a gateway's management port.
    pub const MAGIC: [u8; 8] = *b"APLMGMT1";
    /// The update receiver: a bundle follows.
    pub const ENDPOINT_UPDATE: u8 = 1;
    /// Update flag: reboot into the new slot once it is written.
    pub const FLAG_REBOOT: u8 = 1;
    /// The default TCP port on the black personality's address.
    pub const DEFAULT_PORT: u16 = 7443;
    /// The longest answer a gateway sends.
    pub const MAX_ANSWER: usize = 4096;

    /// A request's first bytes.
    pub fn request(endpoint: u8, flags: u8) -> [u8; 10] {
        let mut v = [0u8; 10];
        v[..8].copy_from_slice(&MAGIC);
        v[8] = endpoint;
        v[9] = flags;
        v
    }

    /// Reads a request's first bytes: (endpoint, flags).
    ///
    /// # Errors
    /// A short stream or another protocol, in words.
    pub fn read_request<R: Read>(r: &mut R) -> Result<(u8, u8), String> {
        let mut v = [0u8; 10];
        r.read_exact(&mut v)
            .map_err(|e| format!("reading the request: {e}"))?;
        if v[..8] != MAGIC {
            return Err("not a management request (expected \"APLMGMT1\")".into());
        }
        Ok((v[8], v[9]))
    }

    /// How a gateway's answer ends: `ok: …` or `refused: …` (the last line).
    pub fn outcome(answer: &str) -> Option<Result<&str, &str>> {
        let last = answer.lines().rev().find(|l| !l.trim().is_empty())?;
        if let Some(m) = last.strip_prefix("ok: ") {
            Some(Ok(m))
        } else {
            last.strip_prefix("refused: ").map(Err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_as_systemd_boot_orders_them() {
        use Ordering::*;
        for (a, b, o) in [
            ("0.2.0", "0.1.0", Greater),
            ("0.10.0", "0.9.9", Greater),
            ("1.0", "1.0", Equal),
            ("1.0", "1.00", Equal),
            ("1.0.1", "1.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc2", "1.0~rc1", Greater),
            ("1.0a", "1.0", Greater),
            ("1.0^1", "1.0", Greater),
            ("1.0^1", "1.0.1", Less),
            ("2", "10", Less),
            ("1.a", "1.1", Less),
            ("1-2", "1.2", Equal),
            ("abc", "abd", Less),
        ] {
            assert_eq!(compare_versions(a, b), o, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), o.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn admission_names_the_reason() {
        let r = Release {
            name: "gw-a".into(),
            version: "0.2.0".into(),
            security_version: 2,
            lab: true,
            uki_sha256: [0; 32],
            uki_size: 0,
        };
        let run = Running {
            name: "gw-a",
            version: "0.1.0",
            security_version: 1,
            floor: Some(1),
        };
        assert_eq!(admit(&r, &run), Ok(()));
        let e = admit(
            &r,
            &Running {
                name: "gw-b",
                ..run.clone()
            },
        )
        .unwrap_err();
        assert!(
            e.contains("appliance \"gw-a\"") && e.contains("\"gw-b\""),
            "{e}"
        );
        let e = admit(
            &r,
            &Running {
                version: "0.2.0",
                ..run.clone()
            },
        )
        .unwrap_err();
        assert!(e.contains("not newer than the running 0.2.0"), "{e}");
        let e = admit(
            &r,
            &Running {
                floor: Some(3),
                ..run.clone()
            },
        )
        .unwrap_err();
        assert!(
            e.contains("below this device's anti-rollback floor 3"),
            "{e}"
        );
        assert_eq!(admit(&r, &Running { floor: None, ..run }), Ok(()));
    }

    #[test]
    fn a_bundle_round_trips_and_every_bound_holds() {
        let b = encode(b"{}", &[7; 64], b"uki").unwrap();
        let mut r = &b[..];
        let h = Header::read(&mut r).unwrap();
        assert_eq!(h.manifest, b"{}");
        assert_eq!(h.signature, [7; 64]);
        assert_eq!(h.uki_len, 3);
        assert_eq!(r, b"uki");
        let mut bad = b.clone();
        bad[0] = b'X';
        assert!(matches!(
            Header::read(&mut &bad[..]),
            Err(BundleError::Magic { .. })
        ));
        let mut big = b.clone();
        big[8..12].copy_from_slice(&(MAX_MANIFEST as u32 + 1).to_le_bytes());
        assert!(matches!(
            Header::read(&mut &big[..]),
            Err(BundleError::Length {
                what: "manifest",
                ..
            })
        ));
        for cut in 0..b.len() - 3 {
            assert!(Header::read(&mut &b[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn file_name_parts_exclude_the_counter_and_paths() {
        assert!(file_name_part_ok("0.2.0"));
        assert!(file_name_part_ok("gw-a"));
        for bad in [
            "",
            "0.2+1",
            "../x",
            "a/b",
            ".hidden",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(!file_name_part_ok(bad), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn header_reading_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = Header::read(&mut &bytes[..]);
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = Header::read(&mut &with_magic[..]);
        }

        #[test]
        fn version_order_is_antisymmetric(a in "[0-9a-z.~^-]{0,12}", b in "[0-9a-z.~^-]{0,12}") {
            proptest::prop_assert_eq!(compare_versions(&a, &b), compare_versions(&b, &a).reverse());
        }
    }
}
