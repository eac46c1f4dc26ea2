//! Property tests: round trips, and no panic on any input.

use proptest::prelude::*;

use crate::crypto::{
    open, seal, sealed_lengths, Aead, Error, Group, PinnedPublicKey, Prf, SigningKey, SkIv, SkKey,
};

fn aead() -> impl Strategy<Value = Aead> {
    prop::sample::select(Aead::ALL.to_vec())
}

fn prf() -> impl Strategy<Value = Prf> {
    prop::sample::select(Prf::ALL.to_vec())
}

/// An IKE header and SK generic header with the lengths for `n` bytes of payloads, plus
/// `extra` unencrypted bytes before SK (as if other payloads preceded it).
fn prefix(n: usize, extra: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p.extend_from_slice(extra);
    p.extend_from_slice(&[41, 0, 0, 0]);
    let lens = sealed_lengths(p.len(), n).unwrap();
    p[24..28].copy_from_slice(&lens.message.to_be_bytes());
    let at = p.len() - 2;
    p[at..].copy_from_slice(&lens.sk_payload.to_be_bytes());
    p
}

proptest! {
    #[test]
    fn seal_open_round_trip(
        aead in aead(),
        key in prop::collection::vec(any::<u8>(), 36),
        iv in any::<u64>(),
        extra in prop::collection::vec(any::<u8>(), 0..40),
        pt in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let key = SkKey::from_bytes(aead, &key[..aead.keymat_len()]).unwrap();
        let p = prefix(pt.len(), &extra);
        let mut out = vec![0u8; p.len() + 8 + pt.len() + 1 + 16];
        let n = seal(&key, &p, SkIv::from_counter(iv), &pt, &mut out).unwrap();
        prop_assert_eq!(n, out.len());
        prop_assert_eq!(&out[..p.len()], &p[..]);
        let opened = open(&key, &out, p.len() - 4).unwrap();
        prop_assert_eq!(&opened[..], &pt[..]);
    }

    #[test]
    fn any_single_bit_flip_fails(
        aead in aead(),
        pt in prop::collection::vec(any::<u8>(), 0..100),
        bit in any::<prop::sample::Index>(),
    ) {
        let key = SkKey::from_bytes(aead, &vec![7; aead.keymat_len()]).unwrap();
        let p = prefix(pt.len(), &[]);
        let mut out = vec![0u8; p.len() + 8 + pt.len() + 1 + 16];
        seal(&key, &p, SkIv::from_counter(1), &pt, &mut out).unwrap();
        let i = bit.index(out.len() * 8);
        out[i / 8] ^= 1 << (i % 8);
        prop_assert_eq!(open(&key, &out, 28).unwrap_err(), Error::AuthenticationFailed);
    }

    #[test]
    fn open_never_panics(
        message in prop::collection::vec(any::<u8>(), 0..200),
        sk_offset in any::<usize>(),
        small_offset in 0usize..64,
    ) {
        let key = SkKey::from_bytes(Aead::AesGcm16_128, &[1; 20]).unwrap();
        prop_assert_eq!(open(&key, &message, sk_offset).unwrap_err(), Error::AuthenticationFailed);
        prop_assert_eq!(open(&key, &message, small_offset).unwrap_err(), Error::AuthenticationFailed);
    }

    #[test]
    fn seal_never_panics(
        aad in prop::collection::vec(any::<u8>(), 0..64),
        pt in prop::collection::vec(any::<u8>(), 0..64),
        out_len in 0usize..200,
    ) {
        let key = SkKey::from_bytes(Aead::ChaCha20Poly1305, &[1; 36]).unwrap();
        let mut out = vec![0u8; out_len];
        let _ = seal(&key, &aad, SkIv::from_counter(0), &pt, &mut out);
    }

    #[test]
    fn prf_plus_is_prefix_consistent(
        prf in prf(),
        key in prop::collection::vec(any::<u8>(), 0..100),
        seed in prop::collection::vec(any::<u8>(), 0..100),
        a in 0usize..400,
        b in 0usize..400,
    ) {
        let (short, long) = (a.min(b), a.max(b));
        let s = prf.prf_plus(&key, &[&seed], short).unwrap();
        let l = prf.prf_plus(&key, &[&seed], long).unwrap();
        prop_assert_eq!(s.expose_secret(), &l.expose_secret()[..short]);
    }

    #[test]
    fn key_exchange_never_panics(
        peer in prop::collection::vec(any::<u8>(), 0..100),
        secret in any::<[u8; 32]>(),
    ) {
        for g in Group::ALL {
            if let Ok(k) = g.exchange(&secret) {
                if let Ok(s) = k.agree(&peer) {
                    prop_assert_eq!(s.len(), 32);
                    prop_assert_eq!(peer.len(), g.ke_data_len());
                }
            }
        }
    }

    #[test]
    fn verify_auth_never_panics(
        auth in prop::collection::vec(any::<u8>(), 0..120),
        key_bytes in prop::collection::vec(any::<u8>(), 0..70),
    ) {
        let ed = SigningKey::ed25519_from_seed(&[3; 32]).unwrap().public_key().unwrap();
        let ec = SigningKey::ecdsa_p256_from_scalar(&[3; 32]).unwrap().public_key().unwrap();
        prop_assert!(ed.verify_auth(&auth, b"octets").is_err());
        prop_assert!(ec.verify_auth(&auth, b"octets").is_err());
        let _ = PinnedPublicKey::ed25519(&key_bytes);
        let _ = PinnedPublicKey::ecdsa_p256(&key_bytes);
    }
}
