//! The device identity key as a verifier sees it: certified by the AK
//! (`TPM2_Certify`), so it is a key of the same TPM; its attributes say it never
//! leaves the TPM and is used only under its policy (see `attest_wire::policy`).
//! What an IKE peer pins is its public point ([`spki_pem`] for strongSwan).

use attest_wire::policy;
use attest_wire::proto::CertifiedIdentity;
use attest_wire::tpms::{self, attr, Attest, Attested, KeyParams, Public, Signature};

/// Checks `ci` against the AK `ak` and the expected qualifying data; returns the
/// identity key's public area.
///
/// # Errors
/// Every reason, in words: a certification not signed by the AK, for another key or
/// another request; a key that could leave the TPM or be used without its policy.
pub fn check_certified(
    ci: &CertifiedIdentity,
    ak: &Public,
    qualifying: &[u8; 32],
) -> Result<Public, String> {
    let public = Public::parse_tpm2b(&ci.public).map_err(|e| format!("the identity key: {e}"))?;
    let mut bad = Vec::new();
    for (bit, name) in [
        (attr::FIXED_TPM, "fixedTPM"),
        (attr::FIXED_PARENT, "fixedParent"),
        (attr::SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
        (attr::SIGN, "sign"),
    ] {
        if public.attributes & bit == 0 {
            bad.push(format!("{name} is not set"));
        }
    }
    if public.attributes & attr::USER_WITH_AUTH != 0 {
        bad.push("userWithAuth is set (it could sign without its policy)".into());
    }
    if public.attributes & attr::DECRYPT != 0 {
        bad.push("decrypt is set".into());
    }
    if public.auth_policy.len() != 32 {
        bad.push("it has no policy".into());
    }
    if !matches!(&public.params, KeyParams::Ecc { curve, scheme, .. }
        if *curve == tpms::ECC_NIST_P256 && *scheme == (tpms::ALG_ECDSA, tpms::ALG_SHA256))
    {
        bad.push("not an ECDSA P-256 key with SHA-256".into());
    }
    if !bad.is_empty() {
        return Err(format!("the identity key: {}", bad.join("; ")));
    }
    let a = Attest::parse(&ci.certify).map_err(|e| format!("the certification: {e}"))?;
    let sig = Signature::parse(&ci.signature)
        .map_err(|e| format!("the certification's signature: {e}"))?;
    crate::quote::verify_signature(ak, &ci.certify, &sig)
        .map_err(|e| format!("the certification is not the AK's: {e}"))?;
    let Attested::Certify { name, .. } = &a.attested else {
        return Err("the certification is not a TPM2_Certify".into());
    };
    if public.name().map_err(|e| e.to_string())? != *name {
        return Err("the AK certified another key than the one presented".into());
    }
    if a.extra_data != qualifying {
        return Err("the certification was made for another request".into());
    }
    Ok(public)
}

/// The identity key's public point, hex (what `device.json` records).
pub fn point_hex(p: &Public) -> Option<String> {
    policy::identity_point(p).map(hex::encode)
}

/// The identity key as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo, id-ecPublicKey,
/// prime256v1): what strongSwan's `pubkeys` take.
pub fn spki_pem(point: &[u8; 65]) -> String {
    let mut der = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    der.extend_from_slice(point);
    let b64 = base64_encode(&der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

fn base64_encode(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = u32::from(c[0]) << 16
            | u32::from(*c.get(1).unwrap_or(&0)) << 8
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_pem_parses_with_aws_lc() {
        // A real P-256 point (the generator G).
        let g = hex::decode(concat!(
            "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
            "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"
        ))
        .unwrap();
        let mut p = [0u8; 65];
        p.copy_from_slice(&g);
        let pem = spki_pem(&p);
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(body.len() > 80);
        assert_eq!(base64_encode(b"abc"), "YWJj");
        assert_eq!(base64_encode(b"ab"), "YWI=");
        assert_eq!(base64_encode(b"a"), "YQ==");
    }
}
