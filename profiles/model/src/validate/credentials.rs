//! IKE identities and credentials: identities (and when two name the same
//! party), this gateway's private key, a peer's authentication (PSK or
//! Ed25519 public key). Secrets are references (`tpm:<name>`); inline
//! `lab:` values only in lab profiles.

use std::net::IpAddr;

use crate::model::*;
use crate::raw::*;

use super::checker::{hex_bytes, V};

/// Do two IKE identities name the same party? IKE compares an identity by
/// its type and value: addresses as addresses (`2001:db8::1` is
/// `2001:DB8:0::1`), FQDNs and e-mail style IDs without regard to case (DNS
/// names are case-insensitive; strongSwan compares both so), an FQDN with or
/// without its final dot.
/// A type prefix as strongSwan writes one (`fqdn:gw.example.net`) is read as
/// the type it names.
pub(super) fn same_identity(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String {
        let lower = s.to_ascii_lowercase();
        let (typed, value) = match lower.split_once(':') {
            Some((t @ ("fqdn" | "email" | "rfc822" | "userfqdn" | "ipv4" | "ipv6"), v)) => {
                (Some(t), v.to_string())
            }
            _ => (None, lower.clone()),
        };
        match (typed, value.parse::<IpAddr>()) {
            (None | Some("ipv4" | "ipv6"), Ok(ip)) => format!("ip:{ip}"),
            _ => {
                let kind = match typed {
                    Some("email" | "rfc822" | "userfqdn") => "email",
                    Some("fqdn") => "fqdn",
                    _ if value.contains('@') => "email",
                    _ => "fqdn",
                };
                format!("{kind}:{}", value.trim_end_matches('.'))
            }
        }
    };
    norm(a) == norm(b)
}

/// An IKE identity: an FQDN, an e-mail style ID or an address.
pub(super) fn identity(v: &mut V<'_>, id: &Sp<String>, field: &str) -> Option<String> {
    let s = &id.value;
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_@:".contains(&b));
    if ok {
        Some(s.clone())
    } else {
        v.err(&id.span, field, format!("`{s}` is not an identity: use an FQDN (gw.example.net), an e-mail style ID or an address"));
        None
    }
}

/// `private_key`: `tpm:identity` (the device identity key), `tpm:<name>` (a
/// provisioned Ed25519 seed), or `lab:<64 hex>` in lab profiles.
pub(super) fn private_key(v: &mut V<'_>, k: &Sp<String>, f: &str) -> Option<PrivateKey> {
    if let Some(name) = k.value.strip_prefix("tpm:") {
        let n = Sp {
            span: k.span.clone(),
            value: name.to_string(),
        };
        return v.name(&n, f).map(|name| PrivateKey::Tpm { name });
    }
    if let Some(hex) = k.value.strip_prefix("lab:") {
        if !v.lab {
            v.err(&k.span, f, "an inline `lab:` private key is only allowed in lab profiles (appliance.lab = true); use `tpm:<name>`");
            return None;
        }
        return match hex_bytes(hex) {
            Some(b) if b.len() == 32 => Some(PrivateKey::Lab {
                seed: LabKey::new(b),
            }),
            _ => {
                v.err(
                    &k.span,
                    f,
                    "a lab Ed25519 private key is its 32-byte seed as 64 hex digits",
                );
                None
            }
        };
    }
    v.err(&k.span, f, "a private key is a reference: `tpm:<name>` (provisioned on the device), never the key itself");
    None
}

/// The private key name that means the device identity key (ECDSA P-256,
/// generated in the TPM at the first boot, never leaving it).
pub const DEVICE_IDENTITY: &str = "identity";

/// A peer's `auth`: method `psk` with `psk` (`tpm:<name>`, or `lab:<hex>`
/// in lab profiles), or method `pubkey` with an Ed25519 or ECDSA P-256
/// `public_key`.
pub(super) fn auth(v: &mut V<'_>, a: &Sp<RawAuth>, f: &str) -> Option<Auth> {
    let method = v.req(&a.method, &a.span, f, "method")?;
    match method.value.as_str() {
        "psk" => {
            if let Some(pk) = &a.public_key {
                v.err(
                    &pk.span,
                    format!("{f}.public_key"),
                    "`public_key` belongs to method `pubkey`, not `psk`",
                );
                return None;
            }
            let psk = match &a.psk {
                Some(p) => p,
                None => {
                    v.err(
                        &a.span,
                        format!("{f}.psk"),
                        "method `psk` needs `psk = \"tpm:<name>\"` (a key sealed on the device)",
                    );
                    return None;
                }
            };
            if let Some(name) = psk.value.strip_prefix("tpm:") {
                if name == DEVICE_IDENTITY {
                    v.err(&psk.span, format!("{f}.psk"), "`tpm:identity` is the device identity key (it signs, it is never a PSK): name the PSK provisioned with `appliance provision`, e.g. `tpm:gw-psk`");
                    return None;
                }
                let n = Sp {
                    span: psk.span.clone(),
                    value: name.to_string(),
                };
                return v
                    .name(&n, &format!("{f}.psk"))
                    .map(|name| Auth::PskTpm { name });
            }
            if let Some(hex) = psk.value.strip_prefix("lab:") {
                if !v.lab {
                    v.err(&psk.span, format!("{f}.psk"), "an inline `lab:` PSK is only allowed in lab profiles (appliance.lab = true); use `tpm:<name>`");
                    return None;
                }
                return match hex_bytes(hex) {
                    Some(b) if b.len() >= 16 => Some(Auth::PskLab {
                        key: LabKey::new(b),
                    }),
                    _ => {
                        v.err(
                            &psk.span,
                            format!("{f}.psk"),
                            "a lab PSK is at least 16 bytes written as hex (32+ hex digits)",
                        );
                        None
                    }
                };
            }
            v.err(&psk.span, format!("{f}.psk"), "a PSK is a reference: `tpm:<name>` (sealed on the device), never the secret itself");
            None
        }
        "pubkey" => {
            let Some(pk) = &a.public_key else {
                v.err(
                    &a.span,
                    format!("{f}.public_key"),
                    "method `pubkey` needs `public_key = \"ed25519:<64 hex digits>\"` or `\"ecdsa-p256:04<128 hex digits>\"`",
                );
                return None;
            };
            if let Some(hex) = pk.value.strip_prefix("ecdsa-p256:") {
                let point = hex_bytes(hex)
                    .filter(|b| b.len() == 65 && b[0] == 4)
                    .and_then(|b| <[u8; 65]>::try_from(b).ok());
                return match point {
                    Some(k) if p256::PublicKey::from_sec1_bytes(&k).is_ok() => {
                        Some(Auth::PublicKeyEcdsaP256 { ecdsa_p256: k })
                    }
                    Some(_) => {
                        v.err(&pk.span, format!("{f}.public_key"), "this ECDSA P-256 key is not a point on the curve: copy it again from `appliance enroll` (or the peer's identity.pem)");
                        None
                    }
                    None => {
                        v.err(&pk.span, format!("{f}.public_key"), "an ECDSA P-256 key is `ecdsa-p256:04` followed by 128 hex digits (the uncompressed point, 65 bytes), as `appliance enroll` prints a device identity key");
                        None
                    }
                };
            }
            match pk.value.strip_prefix("ed25519:").and_then(hex_bytes) {
                Some(b) if b.len() == 32 => {
                    let mut k = [0u8; 32];
                    k.copy_from_slice(&b);
                    Some(Auth::PublicKey { ed25519: k })
                }
                _ => {
                    v.err(&pk.span, format!("{f}.public_key"), "a public key is `ed25519:` followed by 64 hex digits (32 bytes) or `ecdsa-p256:04` followed by 128 hex digits (65 bytes); other key types are not supported");
                    None
                }
            }
        }
        other => {
            v.err(
                &method.span,
                format!("{f}.method"),
                format!("unsupported authentication `{other}`; use `psk` or `pubkey` (Ed25519)"),
            );
            None
        }
    }
}
