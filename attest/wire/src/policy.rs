//! The device identity key's TPM policy: PolicyAuthorize over a signed PCR policy, as
//! systemd does for its signed PCR policies, with the formulas the TPM uses (TPM 2.0
//! Library Part 3, PolicyPCR and PolicyAuthorize; H = SHA-256, integers big-endian):
//!
//! - PolicyPCR: `H(old ‖ 0000017F ‖ TPML_PCR_SELECTION ‖ H(values in selection order))`
//! - PolicyAuthorize: `H(H(0^32 ‖ 0000016A ‖ keyName) ‖ policyRef)` (the digest is reset
//!   first; our policyRef is empty)
//! - the authorising key signs `aHash = H(approvedPolicy ‖ policyRef)`.
//!
//! The identity key's `authPolicy` is [`policy_authorize`] of the **PCR-policy key**, an
//! ECDSA P-256 key the build derives from the release key (the TPM cannot check
//! Ed25519). Every image the release key signs carries a [`SignedPolicy`]: the
//! PolicyPCR digest over PCR 11 as that image leaves it, signed by the PCR-policy key.
//! So the identity key signs only while the TPM's PCR 11 is that of an image whose
//! policy the release key signed: a signed update keeps the key usable, any other
//! image (another key, an unsigned build, a changed UKI) cannot use it.
//!
//! The signed policy travels in the UKI's `.pcrsig` section, which systemd-stub does not
//! measure (it cannot be part of the PCR value it signs); its text format is
//! [`SignedPolicy::to_text`]. Nothing here panics on any input.

use sha2::{Digest, Sha256};

use crate::tpms::{self, attr, Error, KeyParams, PcrSelection, Public, Result};

/// `TPM_CC_PolicyPCR`.
pub const CC_POLICY_PCR: u32 = 0x0000_017F;
/// `TPM_CC_PolicyAuthorize`.
pub const CC_POLICY_AUTHORIZE: u32 = 0x0000_016A;
/// The PCRs the signed policy covers: 11 (the UKI: kernel, initramfs with the init,
/// plan and policy, command line).
pub const POLICY_PCRS: u32 = 1 << 11;
/// The UKI section holding the [`SignedPolicy`].
pub const SECTION: &str = ".pcrsig";
/// The identity key's persistent handle.
pub const IDENTITY_HANDLE: u32 = 0x8100_0A13;
/// The identity key's attributes: fixedTPM, fixedParent, sensitiveDataOrigin, noDA,
/// sign. Not userWithAuth: every use needs the policy. Not adminWithPolicy: the ADMIN
/// role (certification by the AK) takes the empty authValue.
pub const IDENTITY_ATTRIBUTES: u32 =
    attr::FIXED_TPM | attr::FIXED_PARENT | attr::SENSITIVE_DATA_ORIGIN | attr::NO_DA | attr::SIGN;

fn h(parts: &[&[u8]]) -> [u8; 32] {
    let mut d = Sha256::new();
    for p in parts {
        d.update(p);
    }
    d.finalize().into()
}

/// PolicyPCR from a zero digest over the SHA-256 PCRs in `mask` with `values`
/// (ascending).
pub fn policy_pcr(mask: u32, values: &[[u8; 32]]) -> [u8; 32] {
    let concat: Vec<u8> = values.concat();
    h(&[
        &[0u8; 32],
        &CC_POLICY_PCR.to_be_bytes(),
        &PcrSelection::sha256(mask).to_bytes(),
        &h(&[&concat]),
    ])
}

/// PolicyAuthorize with `key_name` and an empty policyRef.
pub fn policy_authorize(key_name: &[u8]) -> [u8; 32] {
    h(&[&h(&[
        &[0u8; 32],
        &CC_POLICY_AUTHORIZE.to_be_bytes(),
        key_name,
    ])])
}

/// What the PCR-policy key signs for `approved`: `H(approved ‖ policyRef)`, empty ref.
pub fn a_hash(approved: &[u8; 32]) -> [u8; 32] {
    h(&[approved])
}

/// The PCR-policy key's public area as the device loads it (`TPM2_LoadExternal`):
/// ECC P-256, sign, fixed ECDSA-SHA256. Its [`Public::name`] is what the identity key's
/// policy names.
pub fn policy_key_public(x: &[u8; 32], y: &[u8; 32]) -> Public {
    Public {
        name_alg: tpms::ALG_SHA256,
        attributes: attr::USER_WITH_AUTH | attr::SIGN,
        auth_policy: Vec::new(),
        params: KeyParams::Ecc {
            symmetric: (tpms::ALG_NULL, 0, 0),
            scheme: (tpms::ALG_ECDSA, tpms::ALG_SHA256),
            curve: tpms::ECC_NIST_P256,
            kdf: (tpms::ALG_NULL, 0),
            x: x.to_vec(),
            y: y.to_vec(),
        },
    }
}

/// The identity key's template: ECC P-256, ECDSA-SHA256, [`IDENTITY_ATTRIBUTES`], its
/// policy [`policy_authorize`] of `policy_key_name`. `unique` (64 random bytes, x then
/// y) makes a primary key made from it a new key.
pub fn identity_template(policy_key_name: &[u8], unique: &[u8; 64]) -> Public {
    Public {
        name_alg: tpms::ALG_SHA256,
        attributes: IDENTITY_ATTRIBUTES,
        auth_policy: policy_authorize(policy_key_name).to_vec(),
        params: KeyParams::Ecc {
            symmetric: (tpms::ALG_NULL, 0, 0),
            scheme: (tpms::ALG_ECDSA, tpms::ALG_SHA256),
            curve: tpms::ECC_NIST_P256,
            kdf: (tpms::ALG_NULL, 0),
            x: unique[..32].to_vec(),
            y: unique[32..].to_vec(),
        },
    }
}

/// The identity key's public key as an uncompressed SEC1 point (`04 ‖ x ‖ y`), what IKE
/// peers pin; `None` unless it is a P-256 key with 32-byte coordinates.
pub fn identity_point(p: &Public) -> Option<[u8; 65]> {
    match &p.params {
        KeyParams::Ecc { curve, x, y, .. }
            if *curve == tpms::ECC_NIST_P256 && x.len() == 32 && y.len() == 32 =>
        {
            let mut out = [0u8; 65];
            out[0] = 4;
            out[1..33].copy_from_slice(x);
            out[33..].copy_from_slice(y);
            Some(out)
        }
        _ => None,
    }
}

/// The identity key's fingerprint: SHA-256 of its uncompressed point.
pub fn identity_fingerprint(p: &Public) -> Option<[u8; 32]> {
    identity_point(p).map(|pt| h(&[&pt]))
}

/// A PCR policy signed by the PCR-policy key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPolicy {
    /// The PCRs (SHA-256 bank) the policy covers.
    pub pcrs: u32,
    /// The approved PolicyPCR digest.
    pub pol: [u8; 32],
    /// The PCR-policy key's public point.
    pub key_x: [u8; 32],
    /// The PCR-policy key's public point.
    pub key_y: [u8; 32],
    /// ECDSA signature over [`a_hash`] of `pol`: r.
    pub sig_r: [u8; 32],
    /// ECDSA signature: s.
    pub sig_s: [u8; 32],
}

fn hex32(s: &str, what: &str) -> Result<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return Err(Error(format!("signed policy: {what} is not 64 hex digits")));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let d = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        match (d(b[2 * i]), d(b[2 * i + 1])) {
            (Some(hi), Some(lo)) => *o = hi << 4 | lo,
            _ => return Err(Error(format!("signed policy: {what} is not lowercase hex"))),
        }
    }
    Ok(out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl SignedPolicy {
    /// The text stored in the `.pcrsig` section.
    pub fn to_text(&self) -> String {
        format!(
            "appliance-pcr-policy v1\npcrs {:#010x}\npol {}\nkey {} {}\nsig {} {}\n",
            self.pcrs,
            hex(&self.pol),
            hex(&self.key_x),
            hex(&self.key_y),
            hex(&self.sig_r),
            hex(&self.sig_s)
        )
    }

    /// Parses [`SignedPolicy::to_text`]'s output (a NUL-padded section is accepted).
    pub fn parse(b: &[u8]) -> Result<Self> {
        let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
        let s =
            std::str::from_utf8(&b[..end]).map_err(|_| Error("signed policy: not UTF-8".into()))?;
        let lines: Vec<&str> = s.split_terminator('\n').collect();
        let [head, pcrs, pol, key, sig] = lines.as_slice() else {
            return Err(Error("signed policy: not five lines".into()));
        };
        if *head != "appliance-pcr-policy v1" {
            return Err(Error("signed policy: unknown format".into()));
        }
        let field = |l: &'_ str, name: &str| -> Result<Vec<String>> {
            let mut it = l.split(' ');
            if it.next() != Some(name) {
                return Err(Error(format!("signed policy: no {name} line")));
            }
            Ok(it.map(str::to_owned).collect())
        };
        let p = field(pcrs, "pcrs")?;
        let pcrs = match p.as_slice() {
            [v] => v
                .strip_prefix("0x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error("signed policy: pcrs".into()))?,
            _ => return Err(Error("signed policy: pcrs".into())),
        };
        let one = |v: Vec<String>, what: &str| -> Result<[u8; 32]> {
            match v.as_slice() {
                [a] => hex32(a, what),
                _ => Err(Error(format!("signed policy: {what}"))),
            }
        };
        let two = |v: Vec<String>, what: &str| -> Result<([u8; 32], [u8; 32])> {
            match v.as_slice() {
                [a, b] => Ok((hex32(a, what)?, hex32(b, what)?)),
                _ => Err(Error(format!("signed policy: {what}"))),
            }
        };
        let pol = one(field(pol, "pol")?, "pol")?;
        let (key_x, key_y) = two(field(key, "key")?, "key")?;
        let (sig_r, sig_s) = two(field(sig, "sig")?, "sig")?;
        Ok(SignedPolicy {
            pcrs,
            pol,
            key_x,
            key_y,
            sig_r,
            sig_s,
        })
    }

    /// The PCR-policy key's public area.
    pub fn key(&self) -> Public {
        policy_key_public(&self.key_x, &self.key_y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn policy_pcr_matches_the_formula_for_pcr_11() {
        // From the attestation lab's recomputation: PCR 11 = H("uki") extended once.
        let v = h(&[&[0u8; 32], &h(&[b"uki"])]);
        let mut sel = vec![0, 0, 0, 1, 0, 0x0B, 3, 0, 0x08, 0];
        assert_eq!(PcrSelection::sha256(POLICY_PCRS).to_bytes(), sel);
        let mut m = vec![0u8; 32];
        m.extend_from_slice(&0x17Fu32.to_be_bytes());
        m.append(&mut sel);
        m.extend_from_slice(&h(&[&v]));
        assert_eq!(policy_pcr(POLICY_PCRS, &[v]), h(&[&m]));
    }

    #[test]
    fn signed_policies_round_trip_and_refuse_garbage() {
        let p = SignedPolicy {
            pcrs: POLICY_PCRS,
            pol: [1; 32],
            key_x: [2; 32],
            key_y: [3; 32],
            sig_r: [4; 32],
            sig_s: [5; 32],
        };
        let t = p.to_text();
        assert_eq!(SignedPolicy::parse(t.as_bytes()).unwrap(), p);
        let mut padded = t.clone().into_bytes();
        padded.extend_from_slice(&[0; 100]);
        assert_eq!(SignedPolicy::parse(&padded).unwrap(), p);
        assert!(SignedPolicy::parse(t.replace("pol ", "pal ").as_bytes()).is_err());
        assert!(SignedPolicy::parse(t.to_uppercase().as_bytes()).is_err());
        assert!(SignedPolicy::parse(b"").is_err());
    }

    #[test]
    fn the_identity_template_names_the_policy_key() {
        let k = policy_key_public(&[1; 32], &[2; 32]);
        let t = identity_template(&k.name().unwrap(), &[9; 64]);
        assert_eq!(t.auth_policy, policy_authorize(&k.name().unwrap()));
        assert_eq!(t.attributes & attr::USER_WITH_AUTH, 0);
        assert_eq!(Public::parse(&t.to_bytes()).unwrap(), t);
        assert_eq!(identity_point(&t).unwrap()[0], 4);
    }

    proptest! {
        #[test]
        fn parse_never_panics(b in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = SignedPolicy::parse(&b);
        }
    }
}
