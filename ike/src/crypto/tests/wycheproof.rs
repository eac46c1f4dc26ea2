//! Wycheproof (testvectors_v1, `ike/testdata/wycheproof/`), run through the calls the
//! module makes: the AEADs through `SkKey`'s seal and open, HMAC through `Prf`, x25519
//! through `X25519Exchange`, signatures through `PinnedPublicKey::verify_auth`.
//!
//! Each test asserts how many cases it ran, so that a case silently skipped fails.

use serde_json::Value;
use subtle::ConstantTimeEq;

use super::vectors::{hex_field, json};
use crate::crypto::{
    Aead, Error, KeyExchange, PinnedPublicKey, Prf, SignatureScheme, SkIv, SkKey, X25519Exchange,
};

fn groups(v: &Value) -> &Vec<Value> {
    v["testGroups"].as_array().expect("testGroups")
}

fn tests(g: &Value) -> &Vec<Value> {
    g["tests"].as_array().expect("tests")
}

fn id(t: &Value) -> u64 {
    t["tcId"].as_u64().expect("tcId")
}

fn result(t: &Value) -> &str {
    t["result"].as_str().expect("result")
}

fn has_flag(t: &Value, flag: &str) -> bool {
    t["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x.as_str() == Some(flag)))
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    valid: usize,
    invalid: usize,
    acceptable_accepted: usize,
    acceptable_rejected: usize,
}

/// The 12-byte-nonce, 16-byte-tag cases: salt = nonce[..4], IV = nonce[4..], as the SK
/// payload builds its nonce.
fn aead_file(file: &str, pick: impl Fn(u64) -> Option<Aead>) -> Counts {
    let v = json(file);
    let mut c = Counts::default();
    for g in groups(&v) {
        if g["ivSize"].as_u64() != Some(96) || g["tagSize"].as_u64() != Some(128) {
            continue;
        }
        let Some(aead) = g["keySize"].as_u64().and_then(&pick) else {
            continue;
        };
        for t in tests(g) {
            let nonce = hex_field(t, "iv");
            let material = [hex_field(t, "key"), nonce[..4].to_vec()].concat();
            let key = SkKey::from_bytes(aead, &material).unwrap();
            let iv = SkIv::from_bytes(nonce[4..].try_into().unwrap());
            let (aad, msg) = (hex_field(t, "aad"), hex_field(t, "msg"));
            let (ct, tag) = (hex_field(t, "ct"), hex_field(t, "tag"));

            let mut opened = vec![0u8; ct.len()];
            let ok = key.open_into(iv, &aad, &ct, &tag, &mut opened);
            match result(t) {
                "valid" => {
                    assert_eq!(ok, Ok(()), "{file} tcId {}", id(t));
                    assert_eq!(opened, msg, "{file} tcId {}", id(t));
                    let mut sealed = msg.clone();
                    let got = key.seal_in_place(iv, &aad, &mut sealed).unwrap();
                    assert_eq!(sealed, ct, "{file} tcId {}", id(t));
                    assert_eq!(&got[..], &tag[..], "{file} tcId {}", id(t));
                    c.valid += 1;
                }
                "invalid" => {
                    assert_eq!(
                        ok,
                        Err(Error::AuthenticationFailed),
                        "{file} tcId {}",
                        id(t)
                    );
                    c.invalid += 1;
                }
                other => panic!("{file} tcId {}: result {other}", id(t)),
            }
        }
    }
    c
}

#[test]
fn wycheproof_aes_gcm() {
    let c = aead_file("wycheproof/aes_gcm_test.json", |bits| match bits {
        128 => Some(Aead::AesGcm16_128),
        256 => Some(Aead::AesGcm16_256),
        _ => None,
    });
    eprintln!("Wycheproof AES-GCM (128/256, 96-bit nonce, 128-bit tag): {c:?}");
    assert_eq!(
        c,
        Counts {
            valid: 79,
            invalid: 54,
            ..Counts::default()
        }
    );
}

#[test]
fn wycheproof_chacha20_poly1305() {
    let c = aead_file("wycheproof/chacha20_poly1305_test.json", |bits| {
        (bits == 256).then_some(Aead::ChaCha20Poly1305)
    });
    eprintln!("Wycheproof ChaCha20-Poly1305: {c:?}");
    assert_eq!(
        c,
        Counts {
            valid: 256,
            invalid: 60,
            ..Counts::default()
        }
    );
}

#[test]
fn wycheproof_hmac_sha256() {
    let v = json("wycheproof/hmac_sha256_test.json");
    let mut c = Counts::default();
    for g in groups(&v) {
        let tag_len = usize::try_from(g["tagSize"].as_u64().unwrap() / 8).unwrap();
        for t in tests(g) {
            let out = Prf::HmacSha2_256.prf(&hex_field(t, "key"), &[&hex_field(t, "msg")]);
            let tag = hex_field(t, "tag");
            let matches =
                tag.len() == tag_len && bool::from(out.expose_secret()[..tag_len].ct_eq(&tag[..]));
            match result(t) {
                "valid" => {
                    assert!(matches, "tcId {}", id(t));
                    c.valid += 1;
                }
                "invalid" => {
                    assert!(!matches, "tcId {}", id(t));
                    c.invalid += 1;
                }
                other => panic!("tcId {}: result {other}", id(t)),
            }
        }
    }
    eprintln!("Wycheproof HMAC-SHA-256: {c:?}");
    assert_eq!(
        c,
        Counts {
            valid: 66,
            invalid: 108,
            ..Counts::default()
        }
    );
}

/// Valid cases must give the published secret. "Acceptable" cases: those with an all-zero
/// shared secret must be rejected (RFC 8031 §2); the others (twist points, non-canonical
/// public values) may be accepted, but then with the published secret.
#[test]
fn wycheproof_x25519() {
    let v = json("wycheproof/x25519_test.json");
    let mut c = Counts::default();
    let mut zero_rejected = 0;
    for g in groups(&v) {
        assert_eq!(g["curve"].as_str(), Some("curve25519"));
        for t in tests(g) {
            let private: [u8; 32] = hex_field(t, "private").try_into().unwrap();
            let public = hex_field(t, "public");
            let shared = hex_field(t, "shared");
            let x = Box::new(X25519Exchange::from_secret(&private).unwrap());
            let got = x.agree(&public);
            match result(t) {
                "valid" => {
                    let got = got.unwrap_or_else(|e| panic!("tcId {}: {e}", id(t)));
                    assert_eq!(got.expose_secret(), &shared[..], "tcId {}", id(t));
                    c.valid += 1;
                }
                "acceptable" if has_flag(t, "ZeroSharedSecret") => {
                    assert_eq!(got.unwrap_err(), Error::ZeroSharedSecret, "tcId {}", id(t));
                    assert_eq!(shared, [0u8; 32]);
                    zero_rejected += 1;
                    c.acceptable_rejected += 1;
                }
                "acceptable" => match got {
                    Ok(s) => {
                        assert_eq!(s.expose_secret(), &shared[..], "tcId {}", id(t));
                        c.acceptable_accepted += 1;
                    }
                    Err(_) => c.acceptable_rejected += 1,
                },
                other => panic!("tcId {}: result {other}", id(t)),
            }
        }
    }
    eprintln!("Wycheproof x25519: {c:?}, of the rejected {zero_rejected} all-zero secrets");
    // aws-lc accepts every other "acceptable" case (twist and non-canonical points) and
    // computes the published secret; a change there shows up here.
    assert_eq!(
        c,
        Counts {
            valid: 264,
            invalid: 0,
            acceptable_accepted: 223,
            acceptable_rejected: 31,
        }
    );
    assert_eq!(zero_rejected, 31);
}

/// Signatures through the method-14 AUTH path: `len | AlgorithmIdentifier | signature`.
fn signature_file(
    file: &str,
    scheme: SignatureScheme,
    pin: impl Fn(&Value) -> Result<PinnedPublicKey, Error>,
) -> Counts {
    let v = json(file);
    let mut c = Counts::default();
    let algorithm_identifier = scheme.algorithm_identifier();
    for g in groups(&v) {
        let key = pin(g).unwrap_or_else(|e| panic!("{file}: public key {}: {e}", g["publicKey"]));
        assert_eq!(key.scheme(), scheme);
        for t in tests(g) {
            let mut auth = vec![u8::try_from(algorithm_identifier.len()).unwrap()];
            auth.extend_from_slice(algorithm_identifier);
            auth.extend_from_slice(&hex_field(t, "sig"));
            let ok = key.verify_auth(&auth, &hex_field(t, "msg"));
            match result(t) {
                "valid" => {
                    assert_eq!(ok, Ok(()), "{file} tcId {}", id(t));
                    c.valid += 1;
                }
                "invalid" => {
                    assert_eq!(
                        ok,
                        Err(Error::AuthenticationFailed),
                        "{file} tcId {}",
                        id(t)
                    );
                    c.invalid += 1;
                }
                other => panic!("{file} tcId {}: result {other}", id(t)),
            }
        }
    }
    c
}

#[test]
fn wycheproof_ed25519() {
    let c = signature_file(
        "wycheproof/ed25519_test.json",
        SignatureScheme::Ed25519,
        |g| PinnedPublicKey::ed25519(&hex_field(&g["publicKey"], "pk")),
    );
    eprintln!("Wycheproof Ed25519: {c:?}");
    assert_eq!(
        c,
        Counts {
            valid: 88,
            invalid: 63,
            ..Counts::default()
        }
    );
}

#[test]
fn wycheproof_ecdsa_p256_sha256() {
    let c = signature_file(
        "wycheproof/ecdsa_secp256r1_sha256_test.json",
        SignatureScheme::EcdsaP256Sha256,
        |g| {
            assert_eq!(g["sha"].as_str(), Some("SHA-256"));
            PinnedPublicKey::ecdsa_p256(&hex_field(&g["publicKey"], "uncompressed"))
        },
    );
    eprintln!("Wycheproof ECDSA P-256 SHA-256: {c:?}");
    assert_eq!(
        c,
        Counts {
            valid: 174,
            invalid: 310,
            ..Counts::default()
        }
    );
}
