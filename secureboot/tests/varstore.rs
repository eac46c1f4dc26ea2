//! The OVMF variable store: parsing Debian's templates, round trips, enrollment.

mod common;

use common::*;
use proptest::prelude::*;
use secureboot::guid::{self, Guid};
use secureboot::varstore::{
    dummy_dbx, enroll, signature_data, uefi_variable_data, EfiTime, SignatureList, VarStore,
    Variable, ENROLL_TIMESTAMP, SECURE_BOOT_DB_ATTRIBUTES,
};
use secureboot::{Certificate, Error};

const VARS_4M: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const VARS_4M_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
const TEMPLATES: [&str; 5] = [
    VARS_4M,
    VARS_4M_MS,
    "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd",
    "/usr/share/OVMF/OVMF_VARS.fd",
    "/usr/share/OVMF/OVMF_VARS.ms.fd",
];
const OWNER: Guid = Guid::from_fields(
    0x1234_5678,
    0x9abc,
    0xdef0,
    [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef],
);

fn template(path: &str) -> Vec<u8> {
    require_file(path, "ovmf")
}

fn test_cert() -> Certificate {
    let dir = tempfile::tempdir().unwrap();
    load(&rsa_key(dir.path(), "vs", "varstore test")).1
}

/// The variable store region of Debian's 4M layout: FV header 0x48, store 0x3ffb8.
const STORE_END_4M: usize = 0x40000;

#[test]
fn empty_template_parses() {
    let t = template(VARS_4M);
    let s = VarStore::parse(&t).unwrap();
    assert_eq!(s.vars().count(), 0, "Debian's OVMF_VARS_4M.fd is empty");
    assert_eq!(s.capacity(), 0x3ffb8 - 28);
}

#[test]
fn microsoft_template_has_secure_boot_keys() {
    let t = template(VARS_4M_MS);
    let s = VarStore::parse(&t).unwrap();
    for (name, g) in [
        ("PK", guid::EFI_GLOBAL_VARIABLE),
        ("KEK", guid::EFI_GLOBAL_VARIABLE),
        ("db", guid::EFI_IMAGE_SECURITY_DATABASE),
        ("dbx", guid::EFI_IMAGE_SECURITY_DATABASE),
    ] {
        let v = s
            .get(name, g)
            .unwrap_or_else(|| panic!("{name} missing from {VARS_4M_MS}"));
        assert_eq!(v.attributes, SECURE_BOOT_DB_ATTRIBUTES, "{name}");
        let lists = SignatureList::parse_all(&v.data).unwrap();
        assert!(!lists.is_empty(), "{name}");
    }
    let pk =
        SignatureList::parse_all(&s.get("PK", guid::EFI_GLOBAL_VARIABLE).unwrap().data).unwrap();
    assert_eq!(pk.len(), 1);
    assert_eq!(pk[0].signature_type, guid::EFI_CERT_X509);
    assert_eq!(pk[0].signatures.len(), 1);
    let cert = Certificate::from_der(&pk[0].signatures[0].data).unwrap();
    assert!(cert.is_rsa());
    // db holds Microsoft's certificates, owned by Microsoft.
    let db =
        SignatureList::parse_all(&s.get("db", guid::EFI_IMAGE_SECURITY_DATABASE).unwrap().data)
            .unwrap();
    assert!(db
        .iter()
        .flat_map(|l| &l.signatures)
        .any(|sd| sd.owner == guid::MICROSOFT_VENDOR));
    // The store also holds deleted records (e.g. an old CustomMode); they are not live.
    assert!(s.dead_records() > 0);
}

#[test]
fn templates_round_trip_byte_for_byte() {
    for path in TEMPLATES {
        let Ok(t) = std::fs::read(path) else {
            assert!(
                path != VARS_4M && path != VARS_4M_MS,
                "{path} missing (package ovmf)"
            );
            continue;
        };
        let s = VarStore::parse(&t).unwrap_or_else(|e| panic!("{path}: {e}"));
        let out = s.to_bytes().unwrap();
        assert!(out == t, "{path}: parse → to_bytes changed the file");
    }
}

#[test]
fn enroll_sets_secure_boot_variables() {
    let t = template(VARS_4M);
    let cert = test_cert();
    let out = enroll(&t, cert.der(), OWNER).unwrap();
    assert_eq!(out.len(), t.len());
    assert_eq!(
        enroll(&t, cert.der(), OWNER).unwrap(),
        out,
        "not deterministic"
    );
    // Outside the variable store nothing changes (FV header, FTW areas).
    assert_eq!(out[..0x64], t[..0x64]);
    assert!(out[STORE_END_4M..] == t[STORE_END_4M..]);

    let s = VarStore::parse(&out).unwrap();
    let names: Vec<&str> = s.vars().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        ["PK", "KEK", "db", "dbx", "SecureBootEnable", "CustomMode"]
    );
    let expect = SignatureList::x509(OWNER, cert.der()).to_bytes().unwrap();
    for (name, g) in [
        ("PK", guid::EFI_GLOBAL_VARIABLE),
        ("KEK", guid::EFI_GLOBAL_VARIABLE),
        ("db", guid::EFI_IMAGE_SECURITY_DATABASE),
    ] {
        let v = s.get(name, g).unwrap();
        assert_eq!(v.attributes, 0x27, "{name}");
        assert_eq!(v.timestamp, ENROLL_TIMESTAMP, "{name}");
        assert_eq!(v.data, expect, "{name}");
        let lists = SignatureList::parse_all(&v.data).unwrap();
        assert_eq!(lists.len(), 1);
        assert_eq!(lists[0].signature_type, guid::EFI_CERT_X509);
        assert_eq!(lists[0].signatures[0].owner, OWNER);
        assert_eq!(lists[0].signatures[0].data, cert.der());
    }
    // Layout of the EFI_SIGNATURE_LIST.
    assert_eq!(expect[..16], guid::EFI_CERT_X509.to_bytes_le());
    assert_eq!(
        u32::from_le_bytes(expect[16..20].try_into().unwrap()) as usize,
        expect.len()
    );
    assert_eq!(expect[20..24], [0, 0, 0, 0]);
    assert_eq!(
        u32::from_le_bytes(expect[24..28].try_into().unwrap()) as usize,
        16 + cert.der().len()
    );
    assert_eq!(expect[28..], signature_data(OWNER, cert.der()));

    let dbx = s.get("dbx", guid::EFI_IMAGE_SECURITY_DATABASE).unwrap();
    assert_eq!(dbx.attributes, 0x27);
    assert_eq!(dbx.data, dummy_dbx().to_bytes().unwrap());
    let sbe = s
        .get("SecureBootEnable", guid::EFI_SECURE_BOOT_ENABLE_DISABLE)
        .unwrap();
    assert_eq!((sbe.attributes, &sbe.data[..]), (3, &[1u8][..]));
    let cm = s.get("CustomMode", guid::EFI_CUSTOM_MODE_ENABLE).unwrap();
    assert_eq!((cm.attributes, &cm.data[..]), (3, &[0u8][..]));
    assert_eq!(cm.timestamp, EfiTime::ZERO);

    // Record layout of the first variable (PK) at the start of the store.
    let r = 0x64;
    assert_eq!(out[r..r + 4], [0xAA, 0x55, 0x3F, 0x00]);
    assert_eq!(out[r + 4..r + 8], 0x27u32.to_le_bytes());
    assert_eq!(out[r + 16..r + 32], ENROLL_TIMESTAMP.to_bytes());
    assert_eq!(out[r + 16..r + 18], 2000u16.to_le_bytes());
    assert_eq!(out[r + 36..r + 40], 6u32.to_le_bytes()); // "PK\0" in UTF-16
    assert_eq!(out[r + 44..r + 60], guid::EFI_GLOBAL_VARIABLE.to_bytes_le());
    assert_eq!(out[r + 60..r + 66], *b"P\0K\0\0\0");
}

#[test]
fn enroll_over_microsoft_template_keeps_dbx() {
    let t = template(VARS_4M_MS);
    let orig = VarStore::parse(&t).unwrap();
    let cert = test_cert();
    let out = enroll(&t, cert.der(), OWNER).unwrap();
    let s = VarStore::parse(&out).unwrap();
    assert_eq!(s.dead_records(), 0, "compacted");
    let dbx = guid::EFI_IMAGE_SECURITY_DATABASE;
    assert_eq!(s.get("dbx", dbx), orig.get("dbx", dbx), "dbx kept");
    let db = SignatureList::parse_all(&s.get("db", dbx).unwrap().data).unwrap();
    assert_eq!(
        db,
        vec![SignatureList::x509(OWNER, cert.der())],
        "db replaced"
    );
    // Every other live variable survives unchanged.
    for v in orig.vars() {
        if !["PK", "KEK", "db", "SecureBootEnable", "CustomMode"].contains(&v.name.as_str()) {
            assert_eq!(s.get(&v.name, v.guid), Some(v), "{}", v.name);
        }
    }
    assert!(out[STORE_END_4M..] == t[STORE_END_4M..]);
}

#[test]
fn enroll_rejects_bad_input() {
    let t = template(VARS_4M);
    assert!(matches!(
        enroll(&t, b"not a certificate", OWNER),
        Err(Error::Der { .. })
    ));
    let cert = test_cert();
    let mut bad = t.clone();
    bad[0x28] = b'X';
    match enroll(&bad, cert.der(), OWNER) {
        Err(e @ Error::VarStore { .. }) => assert!(e.to_string().contains("Signature"), "{e}"),
        other => panic!("{:?}", other.map(|v| v.len())),
    }
    let mut bad = t.clone();
    bad[0x40] ^= 1; // inside the FV header: checksum breaks
    let e = VarStore::parse(&bad).unwrap_err().to_string();
    assert!(e.contains("Checksum"), "{e}");
    let mut bad = t.clone();
    bad[0x5C] = 0; // store Format
    let e = VarStore::parse(&bad).unwrap_err().to_string();
    assert!(e.contains("Format"), "{e}");
}

#[test]
fn set_delete_and_capacity() {
    let t = template(VARS_4M);
    let mut s = VarStore::parse(&t).unwrap();
    let g = guid::EFI_GLOBAL_VARIABLE;
    s.set(Variable::new("Test", g, 7, vec![1, 2, 3])).unwrap();
    s.set(Variable::new("Other", OWNER, 3, vec![9; 5])).unwrap();
    s.set(Variable::new("Test", g, 7, vec![4])).unwrap();
    let names: Vec<_> = s.vars().map(|v| (v.name.clone(), v.data.clone())).collect();
    assert_eq!(
        names,
        [("Test".into(), vec![4]), ("Other".into(), vec![9; 5])]
    );
    let bytes = s.to_bytes().unwrap();
    let re = VarStore::parse(&bytes).unwrap();
    assert_eq!(re.vars().count(), 2);
    assert_eq!(re.get("Other", OWNER).unwrap().data, vec![9; 5]);
    // Padding after "Test" (60 + 10 + 1 = 71 → 72) is erased flash.
    assert_eq!(bytes[0x64 + 71], 0xFF);
    assert!(s.delete("Test", g));
    assert!(!s.delete("Test", g));
    assert!(s.get("Test", g).is_none());
    // Names must be non-empty without NULs.
    assert!(s.set(Variable::new("", g, 7, vec![])).is_err());
    assert!(s.set(Variable::new("a\0b", g, 7, vec![])).is_err());
    // Too big for the store.
    s.set(Variable::new("Huge", g, 7, vec![0; 0x40000]))
        .unwrap();
    assert!(matches!(s.to_bytes(), Err(Error::StoreFull { .. })));
}

#[test]
fn tcg_structures() {
    let d = uefi_variable_data("SecureBoot", guid::EFI_GLOBAL_VARIABLE, &[1]);
    let mut expect = guid::EFI_GLOBAL_VARIABLE.to_bytes_le().to_vec();
    expect.extend_from_slice(&10u64.to_le_bytes());
    expect.extend_from_slice(&1u64.to_le_bytes());
    for c in "SecureBoot".encode_utf16() {
        expect.extend_from_slice(&c.to_le_bytes());
    }
    expect.push(1);
    assert_eq!(d, expect);
    assert_eq!(d.len(), 16 + 8 + 8 + 20 + 1);
    let sd = signature_data(OWNER, b"CERT");
    assert_eq!(sd[..16], OWNER.to_bytes_le());
    assert_eq!(&sd[16..], b"CERT");
    // The dummy dbx entry is SHA-256("") owned by OVMF's EnrollDefaultKeys GUID.
    let dbx = dummy_dbx();
    assert_eq!(dbx.signature_type, guid::EFI_CERT_SHA256);
    assert_eq!(dbx.signatures[0].owner, guid::OVMF_ENROLL_DEFAULT_KEYS);
    assert_eq!(
        dbx.signatures[0].data[..4],
        [0xe3, 0xb0, 0xc4, 0x42],
        "SHA-256 of the empty string"
    );
}

#[test]
fn signature_list_parser_rejects_garbage() {
    assert!(SignatureList::parse_all(&[]).unwrap().is_empty());
    let good = SignatureList::x509(OWNER, b"abc").to_bytes().unwrap();
    assert_eq!(SignatureList::parse_all(&good).unwrap().len(), 1);
    for cut in 1..good.len() {
        assert!(SignatureList::parse_all(&good[..cut]).is_err(), "{cut}");
    }
    let mut bad = good.clone();
    bad[24] = 5; // SignatureSize below 16
    assert!(SignatureList::parse_all(&bad).is_err());
}

/// A raw AUTHENTICATED_VARIABLE_HEADER record (no padding).
fn raw_record(state: u8, name: &str, guid: Guid, data: &[u8]) -> Vec<u8> {
    let name16: Vec<u8> = name
        .encode_utf16()
        .chain([0])
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let mut r = vec![0xAA, 0x55, state, 0];
    r.extend_from_slice(&7u32.to_le_bytes());
    r.extend_from_slice(&[0; 8 + 16 + 4]);
    r.extend_from_slice(&(name16.len() as u32).to_le_bytes());
    r.extend_from_slice(&(data.len() as u32).to_le_bytes());
    r.extend_from_slice(&guid.to_bytes_le());
    r.extend_from_slice(&name16);
    r.extend_from_slice(data);
    r.resize(r.len().next_multiple_of(4), 0xFF);
    r
}

/// EDK2 liveness: VAR_ADDED wins over an in-transition copy; a lone in-transition copy
/// is live; deleted and header-only records are dead. Unmodified stores round-trip.
#[test]
fn record_states_follow_edk2() {
    let mut t = template(VARS_4M);
    let g = guid::EFI_GLOBAL_VARIABLE;
    let mut recs = Vec::new();
    recs.extend(raw_record(0x3E, "Updated", g, b"old"));
    recs.extend(raw_record(0x3F, "Updated", g, b"new"));
    recs.extend(raw_record(0x3E, "Interrupted", g, b"kept"));
    recs.extend(raw_record(0x3C, "Deleted", g, b"gone"));
    recs.extend(raw_record(0x3D, "Deleted2", g, b"gone"));
    recs.extend(raw_record(0x7F, "HeaderOnly", g, b"??"));
    recs.extend(raw_record(0x3F, "Other", OWNER, b"x"));
    t[0x64..0x64 + recs.len()].copy_from_slice(&recs);
    let s = VarStore::parse(&t).unwrap();
    let live: Vec<(&str, &[u8])> = s
        .vars()
        .map(|v| (v.name.as_str(), v.data.as_slice()))
        .collect();
    assert_eq!(
        live,
        [
            ("Updated", &b"new"[..]),
            ("Interrupted", &b"kept"[..]),
            ("Other", &b"x"[..])
        ]
    );
    assert_eq!(s.dead_records(), 4);
    assert!(
        s.to_bytes().unwrap() == t,
        "unmodified store must round-trip"
    );

    // Editing compacts: dead records go, live ones become VAR_ADDED, order is kept.
    let mut s = s;
    s.set(Variable::new("New", g, 7, vec![1])).unwrap();
    let out = s.to_bytes().unwrap();
    let mut expect = Vec::new();
    expect.extend(raw_record(0x3F, "Updated", g, b"new"));
    expect.extend(raw_record(0x3F, "Interrupted", g, b"kept"));
    expect.extend(raw_record(0x3F, "Other", OWNER, b"x"));
    expect.extend(raw_record(0x3F, "New", g, &[1]));
    assert_eq!(out[0x64..0x64 + expect.len()], expect[..]);
    assert!(out[0x64 + expect.len()..STORE_END_4M]
        .iter()
        .all(|&b| b == 0xFF));

    // A live record with a malformed name is an error naming the record.
    let mut bad = template(VARS_4M);
    let mut r = raw_record(0x3F, "Name", g, b"");
    r[60 + 8] = b'!'; // overwrite the terminating NUL
    bad[0x64..0x64 + r.len()].copy_from_slice(&r);
    let e = VarStore::parse(&bad).unwrap_err().to_string();
    assert!(e.contains("variable record at 0x64: Name"), "{e}");
    // A record running past the end of the store.
    let mut bad = template(VARS_4M);
    let mut r = raw_record(0x3F, "Name", g, b"");
    r[40..44].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    bad[0x64..0x64 + r.len()].copy_from_slice(&r);
    let e = VarStore::parse(&bad).unwrap_err().to_string();
    assert!(e.contains("run past the end of the store"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = VarStore::parse(&data);
        let _ = SignatureList::parse_all(&data);
    }

    #[test]
    fn mutated_stores_never_panic(
        cut in 0usize..0x6000,
        muts in proptest::collection::vec((0usize..0x6000, any::<u8>()), 0..8),
    ) {
        let t = std::fs::read(VARS_4M_MS).expect("OVMF_VARS_4M.ms.fd (package ovmf)");
        let mut m = t.clone();
        for (i, v) in muts {
            m[i] = v;
        }
        if let Ok(s) = VarStore::parse(&m) {
            let _ = s.to_bytes();
            for v in s.vars() {
                let _ = SignatureList::parse_all(&v.data);
            }
        }
        // Truncated files are rejected (FvLength no longer fits), never a panic.
        let end = cut.min(m.len());
        prop_assert!(VarStore::parse(&m[..end]).is_err());
    }
}

#[test]
fn enrolled_variables_match_what_enroll_writes() {
    let cert = test_cert();
    let out = secureboot::varstore::enroll(
        &template("/usr/share/OVMF/OVMF_VARS_4M.fd"),
        cert.der(),
        guid::APPLIANCE_OWNER,
    )
    .unwrap();
    let store = VarStore::parse(&out).unwrap();
    let v = secureboot::varstore::enrolled_variables(cert.der(), guid::APPLIANCE_OWNER).unwrap();
    let get = |n: &str, g: Guid| store.get(n, g).unwrap().data.clone();
    assert_eq!(get("PK", guid::EFI_GLOBAL_VARIABLE), v.pk);
    assert_eq!(get("KEK", guid::EFI_GLOBAL_VARIABLE), v.kek);
    assert_eq!(get("db", guid::EFI_IMAGE_SECURITY_DATABASE), v.db);
    assert_eq!(get("dbx", guid::EFI_IMAGE_SECURITY_DATABASE), v.dbx);
    // The authority is the db list's only entry.
    let lists = SignatureList::parse_all(&v.db).unwrap();
    assert_eq!(lists.len(), 1);
    assert!(v.db.ends_with(&v.authority));
}
