//! AEAD layer against published vectors: RFC 8439 §2.8.2 and Wycheproof
//! (restricted to the 12-byte nonce / 16-byte tag cases ESP uses).

use policy_blob::Aead;
use serde_json::Value;
use viaduct::crypto::SaKey;

use crate::common::hex;

#[test]
fn rfc8439_2_8_2_aead_vector() {
    // Key 80..9f; nonce = 07000000 || 4041424344454647 maps onto ESP's
    // salt || IV; AAD 50515253c0c1c2c3c4c5c6c7 has the ESN AAD's length.
    let mut material = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    material.extend_from_slice(&[7, 0, 0, 0]);
    let key = SaKey::new(Aead::ChaCha20Poly1305, &material).unwrap();
    let iv: [u8; 8] = hex("4041424344454647").try_into().unwrap();
    let aad = hex("50515253c0c1c2c3c4c5c6c7");
    let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let mut buf = plaintext.to_vec();
    let tag = key.seal(&iv, &aad, &mut buf).unwrap();
    assert_eq!(
        buf,
        hex(
            "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6\
             3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36\
             92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc\
             3ff4def08e4b7a9de576d26586cec64b6116"
        )
    );
    assert_eq!(tag.to_vec(), hex("1ae10b594f09e26a7e902ecbd0600691"));
    buf.extend_from_slice(&tag);
    let n = key.open(&iv, &aad, &mut buf).unwrap();
    assert_eq!(&buf[..n], &plaintext[..]);
}

/// Runs one Wycheproof file; returns (valid accepted, invalid rejected).
fn wycheproof(file: &str, pick: impl Fn(usize) -> Option<Aead>) -> (usize, usize) {
    let path = format!("{}/testdata/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for g in v["testGroups"].as_array().unwrap() {
        let iv_bits = g["ivSize"].as_u64().unwrap();
        let tag_bits = g["tagSize"].as_u64().unwrap();
        let key_bits = g["keySize"].as_u64().unwrap() as usize;
        if iv_bits != 96 || tag_bits != 128 {
            continue;
        }
        let Some(aead) = pick(key_bits) else { continue };
        for t in g["tests"].as_array().unwrap() {
            let id = t["tcId"].as_u64().unwrap();
            let mut material = hex(t["key"].as_str().unwrap());
            let nonce = hex(t["iv"].as_str().unwrap());
            // ESP nonce = salt(4) || IV(8): the first 4 nonce bytes are the salt.
            material.extend_from_slice(&nonce[..4]);
            let iv: [u8; 8] = nonce[4..].try_into().unwrap();
            let key = SaKey::new(aead, &material).unwrap();
            let aad = hex(t["aad"].as_str().unwrap());
            let msg = hex(t["msg"].as_str().unwrap());
            let ct = hex(t["ct"].as_str().unwrap());
            let tag = hex(t["tag"].as_str().unwrap());
            let mut sealed = ct.clone();
            sealed.extend_from_slice(&tag);
            let opened = key
                .open(&iv, &aad, &mut sealed)
                .map(|n| sealed[..n].to_vec());
            match t["result"].as_str().unwrap() {
                "valid" => {
                    assert_eq!(opened.as_deref(), Ok(&msg[..]), "tcId {id} open");
                    let mut buf = msg.clone();
                    let got = key.seal(&iv, &aad, &mut buf).unwrap();
                    assert_eq!(buf, ct, "tcId {id} seal ciphertext");
                    assert_eq!(got.to_vec(), tag, "tcId {id} seal tag");
                    valid += 1;
                }
                "invalid" => {
                    assert!(opened.is_err(), "tcId {id} invalid but accepted");
                    invalid += 1;
                }
                other => panic!("tcId {id}: unexpected result {other}"),
            }
        }
    }
    (valid, invalid)
}

#[test]
fn wycheproof_aes_gcm() {
    let (valid, invalid) = wycheproof("aes_gcm_test.json", |bits| match bits {
        128 => Some(Aead::Aes128Gcm16),
        256 => Some(Aead::Aes256Gcm16),
        _ => None,
    });
    eprintln!("wycheproof AES-GCM: {valid} valid accepted, {invalid} invalid rejected");
    assert!(valid > 0 && invalid > 0);
}

#[test]
fn wycheproof_chacha20_poly1305() {
    let (valid, invalid) = wycheproof("chacha20_poly1305_test.json", |bits| {
        (bits == 256).then_some(Aead::ChaCha20Poly1305)
    });
    eprintln!("wycheproof ChaCha20-Poly1305: {valid} valid accepted, {invalid} invalid rejected");
    assert!(valid > 0 && invalid > 0);
}
