//! Authenticode signing, checked against sbsigntool, osslsigncode and pesign.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use images::pe::{authenticode_sha256, pe_checksum, PeFile};
use proptest::prelude::*;
use secureboot::authenticode::{pad_image, parse_signature, sign, signatures, verify};
use secureboot::{Certificate, Error, SigningKey};

const SIGNING_TIME_OID: &str = "1.2.840.113549.1.9.5";

fn write(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// The image with its CheckSum and Certificate Table directory entry zeroed.
fn mask(image: &[u8]) -> Vec<u8> {
    let mut v = image.to_vec();
    let o = u32::from_le_bytes(v[0x3c..0x40].try_into().unwrap()) as usize + 24;
    v[o + 64..o + 68].fill(0);
    v[o + 112 + 32..o + 112 + 40].fill(0);
    v
}

fn sbverify(cert: &Path, image: &Path) -> std::process::Output {
    require_tool("sbverify", "sbsigntool");
    run(Command::new("sbverify").arg("--cert").arg(cert).arg(image))
}

/// Signs both systemd EFI binaries and has every available external verifier check
/// the result; also checks our own verifier, determinism and the hash invariant.
#[test]
fn signed_images_verify_with_external_tools() {
    let dir = tempfile::tempdir().unwrap();
    let good = rsa_key(dir.path(), "good", "test");
    let other = rsa_key(dir.path(), "other", "other");
    let (key, cert) = load(&good);
    let (_, other_cert) = load(&other);
    for (name, path) in [("stub", STUB), ("sdboot", SYSTEMD_BOOT)] {
        let unsigned = require_file(path, "systemd-boot-efi");
        let signed = sign(&unsigned, &key, &cert).unwrap();
        let signed_path = write(dir.path(), &format!("{name}.signed.efi"), &signed);

        // Deterministic: same input, same bytes.
        assert_eq!(
            sign(&unsigned, &key, &cert).unwrap(),
            signed,
            "{name}: not deterministic"
        );
        // The Authenticode hash excludes the signature: it equals the padded image's.
        assert_eq!(
            authenticode_sha256(&signed).unwrap(),
            authenticode_sha256(&pad_image(&unsigned)).unwrap()
        );
        assert!(
            mask(&signed[..unsigned.len()]) == mask(&unsigned),
            "{name}: image changed"
        );
        assert!(signed[unsigned.len()..pad_image(&unsigned).len()]
            .iter()
            .all(|&b| b == 0));
        assert_eq!(signed.len() % 8, 0);
        let pe = PeFile::parse(&signed).unwrap();
        assert_eq!(
            pe.optional.checksum,
            pe_checksum(&signed).unwrap(),
            "{name}: checksum"
        );
        let dir4 = pe.certificate_table().unwrap();
        assert_eq!(dir4.virtual_address as usize, pad_image(&unsigned).len());
        assert_eq!((dir4.virtual_address + dir4.size) as usize, signed.len());

        // One PKCS#7 blob, carrying the right digest, no signing time.
        let sigs = signatures(&signed).unwrap();
        assert_eq!(sigs.len(), 1);
        let info = parse_signature(&sigs[0]).unwrap();
        assert_eq!(info.image_digest, authenticode_sha256(&signed).unwrap());
        assert!(!info.signed_attributes.iter().any(|o| o == SIGNING_TIME_OID));
        assert_eq!(info.certificates, vec![cert.der().to_vec()]);
        assert_eq!(info.issuer, cert.issuer_der());

        // Our verifier.
        verify(&signed, &cert).unwrap();
        assert!(matches!(
            verify(&signed, &other_cert),
            Err(Error::Verify(_))
        ));
        assert!(matches!(verify(&unsigned, &cert), Err(Error::NotSigned)));

        // sbverify.
        let o = sbverify(&good.cert, &signed_path);
        assert!(
            o.status.success(),
            "{name}: sbverify rejected our signature: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let o = sbverify(&other.cert, &signed_path);
        assert!(
            !o.status.success(),
            "{name}: sbverify accepted a wrong certificate"
        );

        // osslsigncode (scripts/test installs it).
        require_tool("osslsigncode", "osslsigncode");
        {
            let o = run_ok(
                Command::new("osslsigncode")
                    .args(["verify", "-in"])
                    .arg(&signed_path)
                    .arg("-CAfile")
                    .arg(&good.cert),
            );
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(out.contains("Signature verification: ok"), "{name}: {out}");
            assert!(!out.contains("MISMATCH"), "{name}: {out}");
        }

        // pesign lists the signature (scripts/test installs it).
        require_tool("pesign", "pesign");
        {
            let o = run_ok(Command::new("pesign").arg("-S").arg("-i").arg(&signed_path));
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                out.contains("The signer's common name is test"),
                "{name}: {out}"
            );
        }
    }
}

/// A one-byte change in a section breaks the signature for us and for sbverify.
#[test]
fn tampering_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let good = rsa_key(dir.path(), "good", "test");
    let (key, cert) = load(&good);
    let unsigned = require_file(SYSTEMD_BOOT, "systemd-boot-efi");
    let signed = sign(&unsigned, &key, &cert).unwrap();
    let pe = PeFile::parse(&signed).unwrap();
    let text = pe.section(".text").expect(".text section");
    let mut tampered = signed.clone();
    tampered[text.pointer_to_raw_data as usize + 100] ^= 0x01;
    match verify(&tampered, &cert) {
        Err(Error::Verify(m)) => assert!(m.contains("image hash mismatch"), "{m}"),
        other => panic!("tampered image: {other:?}"),
    }
    let p = write(dir.path(), "tampered.efi", &tampered);
    assert!(!sbverify(&good.cert, &p).status.success());

    // A flipped bit in the RSA signature value.
    let rsa_sig = parse_signature(&signatures(&signed).unwrap()[0])
        .unwrap()
        .signature;
    let sig_at = signed
        .windows(rsa_sig.len())
        .position(|w| w == rsa_sig)
        .unwrap();
    let mut bad_sig = signed.clone();
    bad_sig[sig_at + 5] ^= 0x80;
    match verify(&bad_sig, &cert) {
        Err(Error::Verify(m)) => assert!(m.contains("RSA signature"), "{m}"),
        other => panic!("bad signature: {other:?}"),
    }
}

/// Signing a signed image is refused; the key must match the certificate.
#[test]
fn refuses_signed_images_and_mismatched_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = load(&rsa_key(dir.path(), "a", "a"));
    let (_, cert_b) = load(&rsa_key(dir.path(), "b", "b"));
    let unsigned = require_file(STUB, "systemd-boot-efi");
    let signed = sign(&unsigned, &key, &cert).unwrap();
    assert!(matches!(
        sign(&signed, &key, &cert),
        Err(Error::AlreadySigned { .. })
    ));
    match sign(&unsigned, &key, &cert_b) {
        Err(e @ Error::KeyMismatch { .. }) => assert!(e.to_string().contains("subject b")),
        other => panic!("{:?}", other.map(|v| v.len())),
    }
    assert!(matches!(
        sign(b"MZ not a PE", &key, &cert),
        Err(Error::Pe(_))
    ));
}

/// Our signature has the same SpcIndirectDataContent as sbsign's and both verify the
/// same way with every verifier.
#[test]
fn matches_sbsign_structure() {
    require_tool("sbsign", "sbsigntool");
    let dir = tempfile::tempdir().unwrap();
    let good = rsa_key(dir.path(), "good", "test");
    let (key, cert) = load(&good);
    let unsigned_path = Path::new(SYSTEMD_BOOT);
    let unsigned = require_file(SYSTEMD_BOOT, "systemd-boot-efi");
    let sb_path = dir.path().join("sbsign.efi");
    run_ok(
        Command::new("sbsign")
            .arg("--key")
            .arg(&good.key)
            .arg("--cert")
            .arg(&good.cert)
            .arg("--output")
            .arg(&sb_path)
            .arg(unsigned_path),
    );
    let theirs = std::fs::read(&sb_path).unwrap();
    let ours = sign(&unsigned, &key, &cert).unwrap();
    // Same padded image and certificate table position; only the PKCS#7 differs.
    let pad = pad_image(&unsigned).len();
    let pe_t = PeFile::parse(&theirs).unwrap();
    assert_eq!(
        pe_t.certificate_table().unwrap().virtual_address as usize,
        pad
    );
    assert!(
        mask(&theirs[..pad]) == mask(&ours[..pad]),
        "images differ outside the checksum and the certificate table size"
    );

    // Our verifier accepts sbsign's signature.
    verify(&theirs, &cert).unwrap();
    let t = parse_signature(&signatures(&theirs).unwrap()[0]).unwrap();
    let o = parse_signature(&signatures(&ours).unwrap()[0]).unwrap();
    assert_eq!(t.image_digest, o.image_digest);
    assert_eq!(
        t.spc_indirect_data, o.spc_indirect_data,
        "SpcIndirectDataContent differs"
    );
    assert_eq!(t.message_digest, o.message_digest);
    assert_eq!((t.issuer, t.serial), (o.issuer, o.serial));
    assert_eq!(t.certificates, o.certificates);
    // Both carry the two attributes Authenticode requires. sbsign (OpenSSL's PKCS7
    // defaults) adds signingTime and smimeCapabilities; we add an empty SpcSpOpusInfo,
    // as osslsigncode and signtool do.
    let required = ["1.2.840.113549.1.9.3", "1.2.840.113549.1.9.4"];
    for r in required {
        assert!(
            t.signed_attributes.iter().any(|a| a == r),
            "sbsign lacks {r}"
        );
        assert!(o.signed_attributes.iter().any(|a| a == r), "we lack {r}");
    }
    let mut ours_attrs = o.signed_attributes.clone();
    ours_attrs.sort();
    assert_eq!(
        ours_attrs,
        [
            "1.2.840.113549.1.9.3",
            "1.2.840.113549.1.9.4",
            "1.3.6.1.4.1.311.2.1.12"
        ]
    );
    assert!(t.signed_attributes.iter().any(|a| a == SIGNING_TIME_OID));
}

/// PKCS#1 keys and larger RSA keys load; EC, Ed25519 and small RSA keys are refused.
#[test]
fn key_types() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let unsigned = require_file(STUB, "systemd-boot-efi");

    for bits in ["rsa:3072", "rsa:4096"] {
        let k = make_key(d, bits, bits, "big");
        let (key, cert) = load(&k);
        let signed = sign(&unsigned, &key, &cert).unwrap();
        verify(&signed, &cert).unwrap();
        let p = write(d, "big.efi", &signed);
        assert!(sbverify(&k.cert, &p).status.success(), "{bits}");
    }

    // PKCS#1 "RSA PRIVATE KEY".
    let k = rsa_key(d, "pkcs1", "pkcs1");
    let pkcs1 = d.join("pkcs1.rsa.pem");
    run_ok(
        Command::new("openssl")
            .args(["rsa", "-traditional", "-in"])
            .arg(&k.key)
            .arg("-out")
            .arg(&pkcs1),
    );
    let pem = std::fs::read(&pkcs1).unwrap();
    assert!(String::from_utf8_lossy(&pem).contains("BEGIN RSA PRIVATE KEY"));
    let key = SigningKey::from_pem(&pem).unwrap();
    let cert = Certificate::from_pem(&std::fs::read(&k.cert).unwrap()).unwrap();
    assert_eq!(key.bits(), 2048);
    verify(&sign(&unsigned, &key, &cert).unwrap(), &cert).unwrap();

    for (newkey, label) in [("ec:-", "EC"), ("ed25519", "Ed25519")] {
        let (newkey, extra): (&str, Vec<&str>) = if newkey == "ec:-" {
            ("ec", vec!["-pkeyopt", "ec_paramgen_curve:P-256"])
        } else {
            (newkey, vec![])
        };
        let key_path = d.join(format!("{label}.pem"));
        run_ok(
            Command::new("openssl")
                .args(["genpkey", "-algorithm", newkey])
                .args(&extra)
                .arg("-out")
                .arg(&key_path),
        );
        match SigningKey::from_pem(&std::fs::read(&key_path).unwrap()) {
            Err(e @ Error::NotRsa { .. }) => {
                let m = e.to_string();
                assert!(m.contains(label) && m.contains("needs an RSA key"), "{m}");
            }
            other => panic!("{label}: {other:?}"),
        }
    }
    // Traditional "EC PRIVATE KEY".
    let ec_trad = d.join("ec-trad.pem");
    run_ok(
        Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&ec_trad),
    );
    assert!(matches!(
        SigningKey::from_pem(&std::fs::read(&ec_trad).unwrap()),
        Err(Error::NotRsa { .. })
    ));
    // RSA-1024 is refused.
    let small = d.join("small.pem");
    run_ok(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:1024",
                "-out",
            ])
            .arg(&small),
    );
    assert!(SigningKey::from_pem(&std::fs::read(&small).unwrap()).is_err());
    // Garbage.
    assert!(matches!(
        SigningKey::from_pem(b"hello"),
        Err(Error::Pem { .. })
    ));
    assert!(Certificate::from_pem(&std::fs::read(&k.key).unwrap()).is_err());
    assert!(Certificate::from_der(b"\x30\x03\x02\x01\x01").is_err());
}

struct Fixture {
    signed: Vec<u8>,
    cert: Certificate,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = load(&rsa_key(dir.path(), "p", "prop"));
        let unsigned = require_file(STUB, "systemd-boot-efi");
        let signed = sign(&unsigned, &key, &cert).unwrap();
        Fixture { signed, cert }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let f = fixture();
        prop_assert!(verify(&data, &f.cert).is_err());
        let _ = signatures(&data);
        let _ = parse_signature(&data);
    }

    #[test]
    fn truncated_signed_images_are_rejected(cut in 0usize..4000) {
        let f = fixture();
        let t = &f.signed[..f.signed.len() - 1 - cut.min(f.signed.len() - 1)];
        prop_assert!(verify(t, &f.cert).is_err());
        let _ = signatures(t);
    }

    #[test]
    fn mutated_signatures_never_panic(muts in proptest::collection::vec((0usize..2000, any::<u8>()), 1..6)) {
        let f = fixture();
        let mut s = f.signed.clone();
        let start = PeFile::parse(&s).unwrap().certificate_table().unwrap().virtual_address as usize;
        for (i, v) in muts {
            let at = start + i % (s.len() - start);
            s[at] = v;
        }
        let _ = verify(&s, &f.cert);
        if let Ok(sigs) = signatures(&s) {
            for b in sigs {
                let _ = parse_signature(&b);
            }
        }
    }
}
