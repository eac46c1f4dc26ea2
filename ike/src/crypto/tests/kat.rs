//! Known-answer tests from the RFCs, NIST CAVP and strongSwan's test vectors.

use super::vectors::{blocks, Block};
use crate::crypto::keys::{child_keymat, ike_sa_dkm, initial_skeyseed, rekey_skeyseed};
use crate::crypto::prf::Mac;
use crate::crypto::{
    open, seal, Aead, Ecp256Exchange, Group, IkeSpis, KeyExchange, PinnedPublicKey, SigningKey,
    SkIv, SkKey, X25519Exchange,
};

/// Runs HMAC vectors through [`crate::crypto::Prf::prf`]; `Mac` may be a truncation.
fn hmac_file(file: &str) -> usize {
    let mut n = 0;
    for b in blocks(file) {
        let prf = b.prf();
        let mac = b.hex("Mac");
        let out = prf.prf(&b.hex("Key"), &[&b.hex("Data")]);
        assert_eq!(out.len(), prf.output_len());
        assert!(mac.len() >= 16, "{}", b.name());
        assert_eq!(&out.expose_secret()[..mac.len()], &mac[..], "{}", b.name());
        n += 1;
    }
    n
}

#[test]
fn rfc4231_hmac_sha2() {
    // Test cases 1-7 for each of SHA-256, SHA-384, SHA-512.
    assert_eq!(hmac_file("hmac_rfc4231.txt"), 21);
}

#[test]
fn rfc4868_hmac_sha2() {
    // 5 PRF vectors (§2.7.1) and 3 authenticator vectors with full-length keys (§2.7.2)
    // for each hash, as strongSwan runs them.
    assert_eq!(hmac_file("hmac_rfc4868.txt"), 24);
}

#[test]
fn prf_plus_vectors() {
    let mut n = 0;
    for b in blocks("prf_plus.txt") {
        let out = b
            .prf()
            .prf_plus(&b.hex("Key"), &[&b.hex("Seed")], b.hex("Out").len());
        assert_eq!(
            out.unwrap().expose_secret(),
            &b.hex("Out")[..],
            "{}",
            b.name()
        );
        // The same bytes with the seed given in two parts.
        let seed = b.hex("Seed");
        let (s1, s2) = seed.split_at(seed.len() / 2);
        let out = b
            .prf()
            .prf_plus(&b.hex("Key"), &[s1, s2], b.hex("Out").len());
        assert_eq!(
            out.unwrap().expose_secret(),
            &b.hex("Out")[..],
            "{}",
            b.name()
        );
        n += 1;
    }
    // The RFC 4868-derived vector and two CAVP cases for each of SHA-256/384/512.
    assert_eq!(n, 7);
}

/// NIST CAVP SP 800-135 IKEv2: SKEYSEED, DKM, CHILD SA DKM with and without PFS, rekey
/// SKEYSEED — through the same derivation functions the SHA-2 PRFs use, here with SHA-1.
#[test]
fn cavp_ikev2_kdf_sha1() {
    let all = blocks("ikev2_kdf_cavp_sha1.txt");
    assert_eq!(all.len(), 1);
    let b: &Block = &all[0];
    assert_eq!(b.get("Prf"), "HMAC-SHA-1");
    let mac = Mac::SHA1_FOR_TESTS;
    let (ni, nr) = (b.hex("Ni"), b.hex("Nr"));
    let (g, g_new) = (b.hex("g^ir"), b.hex("g^ir (new)"));
    let spis = IkeSpis {
        initiator: b.hex("SPIi").try_into().unwrap(),
        responder: b.hex("SPIr").try_into().unwrap(),
    };
    let dkm_len: usize = b.get("DKM length").parse::<usize>().unwrap() / 8;
    let child_len: usize = b.get("Child SA DKM length").parse::<usize>().unwrap() / 8;

    let skeyseed = initial_skeyseed(mac, &g, &ni, &nr);
    assert_eq!(skeyseed.as_bytes(), &b.hex("SKEYSEED")[..]);

    let dkm = ike_sa_dkm(mac, skeyseed.as_bytes(), &ni, &nr, &spis, dkm_len).unwrap();
    assert_eq!(dkm.as_bytes(), &b.hex("DKM")[..]);

    let sk_d = &dkm.as_bytes()[..mac.output_len()];
    let child = child_keymat(mac, sk_d, None, &ni, &nr, child_len).unwrap();
    assert_eq!(child.as_bytes(), &b.hex("DKM(Child SA)")[..]);

    let child_pfs = child_keymat(mac, sk_d, Some(&g_new), &ni, &nr, child_len).unwrap();
    assert_eq!(child_pfs.as_bytes(), &b.hex("DKM(Child SA D-H)")[..]);

    let rekey = rekey_skeyseed(mac, sk_d, &g_new, &ni, &nr);
    assert_eq!(rekey.as_bytes(), &b.hex("SKEYSEED(Rekey)")[..]);
}

/// RFC 7634 Appendix B: decrypt the IKEv2 message, then re-encrypt it byte for byte.
#[test]
fn rfc7634_ikev2_message() {
    let all = blocks("rfc7634_ikev2.txt");
    let b = &all[0];
    let key = SkKey::from_bytes(Aead::ChaCha20Poly1305, &b.hex("Keymat")).unwrap();
    let message = b.hex("Message");
    let plaintext = b.hex("Plaintext");
    let iv = SkIv::from_bytes(b.hex("IV").try_into().unwrap());

    // The SK payload follows the 28-byte IKE header.
    let opened = open(&key, &message, 28).unwrap();
    // `open` strips the pad length byte (0: no padding).
    assert_eq!(plaintext.last(), Some(&0));
    assert_eq!(&opened[..], &plaintext[..plaintext.len() - 1]);

    let mut out = vec![0u8; message.len()];
    let n = seal(&key, &message[..32], iv, &opened, &mut out).unwrap();
    assert_eq!(n, message.len());
    assert_eq!(out, message);
}

#[test]
fn rfc7748_x25519() {
    let all = blocks("x25519_rfc7748.txt");
    for b in &all[..2] {
        let k = X25519Exchange::from_secret(&b.hex("Scalar").try_into().unwrap()).unwrap();
        let shared = Box::new(k).agree(&b.hex("U")).unwrap();
        assert_eq!(shared.expose_secret(), &b.hex("Output")[..], "{}", b.name());
    }

    let iterated = &all[2];
    let (mut k, mut u) = ([0u8; 32], [0u8; 32]);
    k[0] = 9;
    u[0] = 9;
    for i in 1..=1000 {
        let x = Box::new(X25519Exchange::from_secret(&k).unwrap());
        let out: [u8; 32] = x.agree(&u).unwrap().expose_secret().try_into().unwrap();
        u = k;
        k = out;
        if i == 1 {
            assert_eq!(&k[..], &iterated.hex("After 1")[..]);
        }
    }
    assert_eq!(&k[..], &iterated.hex("After 1000")[..]);

    let dh = &all[3];
    let alice = Group::Curve25519
        .exchange(&dh.hex("Alice private").try_into().unwrap())
        .unwrap();
    let bob = Group::Curve25519
        .exchange(&dh.hex("Bob private").try_into().unwrap())
        .unwrap();
    assert_eq!(alice.public_value(), &dh.hex("Alice public")[..]);
    assert_eq!(bob.public_value(), &dh.hex("Bob public")[..]);
    let s1 = alice.agree(&dh.hex("Bob public")).unwrap();
    let s2 = bob.agree(&dh.hex("Alice public")).unwrap();
    assert_eq!(s1.expose_secret(), &dh.hex("Shared")[..]);
    assert_eq!(s2.expose_secret(), &dh.hex("Shared")[..]);
}

#[test]
fn rfc5903_ecp256() {
    let b = &blocks("ecp256_rfc5903.txt")[0];
    let gi = [b.hex("gix"), b.hex("giy")].concat();
    let gr = [b.hex("grx"), b.hex("gry")].concat();
    let i = Ecp256Exchange::from_secret(&b.hex("i").try_into().unwrap()).unwrap();
    let r = Ecp256Exchange::from_secret(&b.hex("r").try_into().unwrap()).unwrap();
    assert_eq!(i.public_value(), &gi[..]);
    assert_eq!(r.public_value(), &gr[..]);
    assert_eq!(
        Box::new(i).agree(&gr).unwrap().expose_secret(),
        &b.hex("girx")[..]
    );
    assert_eq!(
        Box::new(r).agree(&gi).unwrap().expose_secret(),
        &b.hex("girx")[..]
    );
}

#[test]
fn rfc8032_ed25519() {
    let mut n = 0;
    for b in blocks("ed25519_rfc8032.txt") {
        let key = SigningKey::ed25519_from_seed(&b.hex("Seed").try_into().unwrap()).unwrap();
        let public = b.hex("Public");
        assert_eq!(
            key.public_key().unwrap().as_bytes(),
            &public[..],
            "{}",
            b.name()
        );
        let msg = b.hex("Message");
        let sig = b.hex("Signature");
        assert_eq!(key.sign(&msg).unwrap(), sig, "{}", b.name());
        let pinned = PinnedPublicKey::ed25519(&public).unwrap();
        assert_eq!(pinned.verify(&msg, &sig), Ok(()), "{}", b.name());
        // And as method-14 AUTH data.
        let auth = key.sign_auth(&msg).unwrap();
        assert_eq!(&auth[8..], &sig[..]);
        assert_eq!(pinned.verify_auth(&auth, &msg), Ok(()), "{}", b.name());
        n += 1;
    }
    // TEST 1, 2, 3, 1024, SHA(abc).
    assert_eq!(n, 5);
}
