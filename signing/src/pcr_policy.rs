//! Signed PCR policies for the device identity key (see `attest_wire::policy`): the
//! build signs the PolicyPCR digest of PCR 11 as the image leaves it with the
//! **PCR-policy key**, an ECDSA P-256 key derived from the release key
//! ([`crate::SigningKey::derive_p256`], purpose [`PURPOSE`]). The result goes into
//! the UKI's `.pcrsig` section.

use attest_wire::policy::{self, SignedPolicy, POLICY_PCRS};
use p256::ecdsa::signature::Signer;

use crate::keys::{KeyError, SigningKey};

/// The derivation purpose of the PCR-policy key.
pub const PURPOSE: &str = "tpm pcr-policy key";

/// The PCR-policy key's public point (x, y) for `release`.
///
/// # Errors
/// The derivation fails.
pub fn policy_key(release: &SigningKey) -> Result<([u8; 32], [u8; 32]), KeyError> {
    let k = release.derive_p256(PURPOSE)?;
    let p = k.verifying_key().to_encoded_point(false);
    match (p.x(), p.y()) {
        (Some(x), Some(y)) => {
            let mut xx = [0u8; 32];
            let mut yy = [0u8; 32];
            xx.copy_from_slice(x);
            yy.copy_from_slice(y);
            Ok((xx, yy))
        }
        _ => Err(KeyError::Generate(
            "derived P-256 key: not an uncompressed point".into(),
        )),
    }
}

/// The signed policy approving PCR 11 = `pcr11`. Deterministic (RFC 6979): the same
/// key and PCR value give the same bytes.
///
/// # Errors
/// The derivation fails.
pub fn sign(release: &SigningKey, pcr11: &[u8; 32]) -> Result<SignedPolicy, KeyError> {
    let k = release.derive_p256(PURPOSE)?;
    let (key_x, key_y) = policy_key(release)?;
    let pol = policy::policy_pcr(POLICY_PCRS, &[*pcr11]);
    // ECDSA-SHA256 over pol: the signature is over H(pol) = aHash (empty policyRef).
    let sig: p256::ecdsa::Signature = k.sign(&pol);
    let (r, s) = sig.split_bytes();
    let mut sig_r = [0u8; 32];
    let mut sig_s = [0u8; 32];
    sig_r.copy_from_slice(&r);
    sig_s.copy_from_slice(&s);
    Ok(SignedPolicy {
        pcrs: POLICY_PCRS,
        pol,
        key_x,
        key_y,
        sig_r,
        sig_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    #[test]
    fn the_derived_key_is_stable_and_the_signature_verifies() {
        let k = SigningKey::generate().unwrap();
        assert_eq!(policy_key(&k).unwrap(), policy_key(&k).unwrap());
        let other = SigningKey::generate().unwrap();
        assert_ne!(policy_key(&k).unwrap(), policy_key(&other).unwrap());
        let p = sign(&k, &[7; 32]).unwrap();
        assert_eq!(p, sign(&k, &[7; 32]).unwrap(), "deterministic");
        let mut point = vec![4];
        point.extend_from_slice(&p.key_x);
        point.extend_from_slice(&p.key_y);
        let mut sig = p.sig_r.to_vec();
        sig.extend_from_slice(&p.sig_s);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
            .verify(&p.pol, &sig)
            .unwrap();
        assert_eq!(p.pol, policy::policy_pcr(POLICY_PCRS, &[[7; 32]]));
    }
}
