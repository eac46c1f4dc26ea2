//! Integration tests of the profile crate: shipped profiles, every
//! validation rule with a failing fixture, bad files, and a property test
//! that the loader never panics.

use std::path::{Path, PathBuf};

use profiles::{check, load_profile, Checked, Diagnostic};
use proptest::prelude::*;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    crate_dir().join("tests/fixtures").join(name)
}

/// Checks a fixture expected to fail with exactly one diagnostic.
fn one_error(name: &str) -> Diagnostic {
    let err = match check(&fixture(name)) {
        Ok(_) => panic!("{name} was accepted"),
        Err(e) => e,
    };
    assert_eq!(err.0.len(), 1, "{name}: expected one error, got:\n{err}");
    err.0.into_iter().next().unwrap()
}

/// 1-based number of the first line of `file` containing `text`.
fn line_of(file: &Path, text: &str) -> usize {
    let src = std::fs::read_to_string(file).unwrap();
    src.lines()
        .position(|l| l.contains(text))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("`{text}` not in {}", file.display()))
}

/// (fixture, file the error is in, text on the erroneous line, field, message part)
const CASES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "unknown-field.toml",
        "unknown-field.toml",
        "colour",
        "appliance.colour",
        "unknown key `colour`",
    ),
    (
        "wrong-type.toml",
        "wrong-type.toml",
        "security_version",
        "appliance.security_version",
        "expected u64",
    ),
    (
        "nic-both.toml",
        "nic-both.toml",
        "nic = \"lan\"",
        "personalities.black.nic",
        "already given to red",
    ),
    (
        "nic-viaduct.toml",
        "nic-viaduct.toml",
        "nic = \"wan\"",
        "viaduct.nic",
        "the Viaduct owns no NIC",
    ),
    (
        "nic-viaduct-link.toml",
        "nic-viaduct-link.toml",
        "\"viaduct\", \"internet\"",
        "links[2].between",
        "owns no NIC",
    ),
    (
        "nic-unused.toml",
        "nic-unused.toml",
        "[hardware.nics.mgmt]",
        "hardware.nics.mgmt",
        "not given to any personality",
    ),
    (
        "bypass-link.toml",
        "bypass-link.toml",
        "[\"red\", \"black\"]",
        "links[2].between",
        "without passing through the Viaduct",
    ),
    (
        "same-segment.toml",
        "same-segment.toml",
        "network = \"lan\"",
        "hardware.nics.wan.network",
        "red - network lan - black",
    ),
    (
        "no-viaduct-link.toml",
        "no-viaduct-link.toml",
        "[[links]]",
        "links",
        "no link between the Viaduct and black",
    ),
    (
        "overlapping-subnets.toml",
        "overlapping-subnets.toml",
        "10.1.0.2/16",
        "personalities.black.addresses[0]",
        "must be disjoint",
    ),
    (
        "bad-address.toml",
        "bad-address.toml",
        "10.1.0.300",
        "personalities.red.addresses[0]",
        "not an IPv4 or IPv6 address",
    ),
    (
        "host-bits.toml",
        "host-bits.toml",
        "10.1.0.5/24",
        "viaduct.ipsec.peers[0].tunnels[0].local_ts[0]",
        "host bits set",
    ),
    (
        "ambiguous-tunnels.toml",
        "ambiguous-tunnels.toml",
        "name = \"t2\"",
        "viaduct.ipsec.peers[1].tunnels[0].name",
        "ambiguously",
    ),
    (
        "duplicate-names.toml",
        "duplicate-names.toml",
        "# the duplicate",
        "viaduct.ipsec.peers[1].name",
        "used twice",
    ),
    (
        "peer-no-auth.toml",
        "peer-no-auth.toml",
        "[[viaduct.ipsec.peers]]",
        "viaduct.ipsec.peers[0].auth",
        "no authentication",
    ),
    (
        "unsupported-auth.toml",
        "unsupported-auth.toml",
        "method = \"rsa\"",
        "viaduct.ipsec.peers[0].auth.method",
        "unsupported authentication",
    ),
    (
        "weak-algorithm.toml",
        "weak-algorithm.toml",
        "3des",
        "viaduct.ipsec.peers[0].ike_proposals[0]",
        "use aes256gcm16",
    ),
    (
        "bad-encapsulation.toml",
        "bad-encapsulation.toml",
        "encapsulation = \"tcp\"",
        "viaduct.ipsec.peers[0].encapsulation",
        "use `esp` (IP protocol 50) or `udp`",
    ),
    (
        "weak-dh.toml",
        "weak-dh.toml",
        "modp1024",
        "viaduct.ipsec.peers[0].ike_proposals[0]",
        "use x25519",
    ),
    (
        "manual-not-lab.toml",
        "manual-not-lab.toml",
        "[viaduct.ipsec.peers.tunnels.manual]",
        "viaduct.ipsec.peers[0].tunnels[0].manual",
        "only allowed in lab profiles",
    ),
    (
        "manual-bad-key.toml",
        "manual-bad-key.toml",
        "key_out",
        "viaduct.ipsec.peers[0].tunnels[0].manual.key_out",
        "36 bytes",
    ),
    (
        "microvm.toml",
        "microvm.toml",
        "microvm",
        "appliance.runtime",
        "reserved",
    ),
    (
        "local-address-not-black.toml",
        "local-address-not-black.toml",
        "198.51.100.9",
        "viaduct.ipsec.local_address",
        "not one of black's addresses",
    ),
    (
        "role-without-section.toml",
        "role-without-section.toml",
        "roles",
        "viaduct.ids",
        "role `ids` needs",
    ),
    (
        "cycle-a.toml",
        "cycle-b.toml",
        "extends",
        "extends",
        "`extends` cycle",
    ),
    (
        "missing-base.toml",
        "missing-base.toml",
        "extends",
        "extends",
        "cannot be read",
    ),
    (
        "syntax-error.toml",
        "syntax-error.toml",
        "[appliance",
        "(syntax)",
        "TOML syntax error",
    ),
    (
        "image-too-small.toml",
        "image-too-small.toml",
        "100MiB",
        "image.size",
        "use at least",
    ),
    (
        "empty.toml",
        "empty.toml",
        "",
        "(file)",
        "the profile is empty",
    ),
];

#[test]
fn every_bad_fixture_gives_one_located_error() {
    for (name, file, text, field, part) in CASES {
        let d = one_error(name);
        assert!(
            d.file.ends_with(file),
            "{name}: error in {} not {file}",
            d.file.display()
        );
        let expect_line = if text.is_empty() {
            1
        } else {
            line_of(&fixture(file), text)
        };
        assert_eq!(d.line, expect_line, "{name}: {d}");
        assert_eq!(d.field, *field, "{name}: {d}");
        assert!(
            d.message.contains(part),
            "{name}: message lacks `{part}`: {d}"
        );
        assert!(d.column >= 1);
        // The rendered form starts with file:line:col: field: message.
        let rendered = d.render();
        assert!(
            rendered.starts_with(&format!(
                "{}:{}:{}: {}: ",
                d.file.display(),
                d.line,
                d.column,
                d.field
            )),
            "{rendered}"
        );
    }
}

#[test]
fn missing_required_fields_are_named() {
    let err = check(&fixture("missing-name.toml")).unwrap_err();
    let fields: Vec<&str> = err.0.iter().map(|d| d.field.as_str()).collect();
    for f in [
        "appliance.name",
        "hardware",
        "kernel",
        "personalities",
        "viaduct",
        "image",
    ] {
        assert!(fields.contains(&f), "{f} not reported: {err}");
    }
}

#[test]
fn shipped_profiles_are_valid() {
    let dir = crate_dir();
    let mut n = 0;
    for sub in ["", "lab"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") && !path.ends_with("Cargo.toml") {
                let p = load_profile(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(
                    Some(p.appliance.name.as_str()),
                    path.file_stem().and_then(|s| s.to_str())
                );
                n += 1;
            }
        }
    }
    assert_eq!(
        n, 6,
        "vpn-gateway, firewall, ids, router, lab/gw-a, lab/gw-b"
    );
    assert!(matches!(
        check(&dir.join("base/gateway.toml")).unwrap(),
        Checked::Abstract
    ));
}

#[test]
fn shipped_profiles_share_the_base() {
    for name in ["vpn-gateway", "firewall", "ids", "router"] {
        let p = load_profile(&crate_dir().join(format!("{name}.toml"))).unwrap();
        assert!(
            p.files.iter().any(|f| f.ends_with("base/gateway.toml")),
            "{name}: {:?}",
            p.files
        );
        // Inherited from the base: red's dnsmasq service and both NICs.
        assert_eq!(p.red.services[0].name, "dnsmasq");
        assert_eq!(p.hardware.nics.len(), 2);
    }
    let ids = load_profile(&crate_dir().join("ids.toml")).unwrap();
    assert_eq!(
        ids.viaduct.filter.len(),
        6,
        "ids extends firewall and keeps its filter"
    );
    assert_eq!(ids.viaduct.ids.len(), 2);
}

#[test]
fn lab_pair_mirrors() {
    let a = load_profile(&crate_dir().join("lab/gw-a.toml")).unwrap();
    let b = load_profile(&crate_dir().join("lab/gw-b.toml")).unwrap();
    let ia = a.viaduct.ipsec.as_ref().unwrap();
    let ib = b.viaduct.ipsec.as_ref().unwrap();
    assert_eq!(ia.peers[0].address, ib.local_address);
    assert_eq!(ib.peers[0].address, ia.local_address);
    let ta = &ia.peers[0].tunnels[0];
    let tb = &ib.peers[0].tunnels[0];
    assert_eq!(ta.local_ts, tb.remote_ts);
    assert_eq!(ta.remote_ts, tb.local_ts);
    assert_eq!(ta.local_ts[0].prefix.to_string(), "10.1.0.0/24");
    assert_eq!(tb.local_ts[0].prefix.to_string(), "10.2.0.0/24");
    let (ma, mb) = (ta.manual.as_ref().unwrap(), tb.manual.as_ref().unwrap());
    assert_eq!((ma.spi_out, ma.spi_in), (mb.spi_in, mb.spi_out));
    assert_eq!(ma.key_out.expose(), mb.key_in.expose());
    assert_eq!(ma.key_in.expose(), mb.key_out.expose());
    for p in [&a, &b] {
        assert!(p.appliance.lab);
        for addr in p.red.addresses.iter().chain(&p.black.addresses) {
            let s = addr.to_string();
            assert!(
                !s.starts_with("192.0.2."),
                "192.0.2.0/24 belongs to the host"
            );
        }
    }
}

#[test]
fn append_extends_a_base_list() {
    let p = load_profile(&fixture("append-drivers.toml")).unwrap();
    assert_eq!(p.kernel.drivers, ["virtio_net", "e1000e"]);
}

#[test]
fn lists_are_replaced_not_merged() {
    let p = load_profile(&fixture("no-viaduct-link.toml"));
    // The derived file's one-element [[links]] replaced the base's two.
    assert!(p.is_err());
}

#[test]
fn lab_keys_are_never_printed() {
    let p = load_profile(&crate_dir().join("lab/gw-a.toml")).unwrap();
    let json = serde_json::to_string(&p).unwrap();
    assert!(
        !json.contains("1111111111"),
        "key bytes leaked into the JSON view"
    );
    assert!(json.contains("<lab key, 36 bytes>"));
    assert!(!format!("{p:?}").contains("1111111111"));
}

#[test]
fn random_bytes_are_rejected_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random.toml");
    // Deterministic pseudo-random bytes (xorshift), invalid UTF-8 early on.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(&path, &bytes).unwrap();
    let err = check(&path).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert!(err.0[0].message.contains("not UTF-8"), "{err}");
    assert_eq!(err.0[0].file, path);
}

#[test]
fn oversized_profile_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.toml");
    let mut text = String::from("[appliance]\n");
    while text.len() <= 1024 * 1024 {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&path, text).unwrap();
    let err = check(&path).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert!(
        err.0[0].message.contains("limited to 1048576 bytes"),
        "{err}"
    );
}

#[test]
fn missing_file_is_a_clear_error() {
    let err = check(Path::new("/nonexistent/profile.toml")).unwrap_err();
    assert!(
        err.0[0].message.contains("cannot read the profile"),
        "{err}"
    );
}

#[test]
fn profile_reference_doc_is_current() {
    let doc = crate_dir().join("../docs/profile-reference.md");
    let current = std::fs::read_to_string(&doc).unwrap_or_default();
    let generated = profiles::reference::markdown();
    assert!(
        current == generated,
        "docs/profile-reference.md is stale: run `cargo run -p appliance-cli -- profile reference > docs/profile-reference.md`"
    );
}

#[test]
fn schema_describes_the_tables() {
    let s = profiles::schema();
    let props = s["properties"].as_object().unwrap();
    for key in [
        "extends",
        "appliance",
        "hardware",
        "kernel",
        "personalities",
        "viaduct",
        "links",
        "image",
        "signing",
    ] {
        assert!(props.contains_key(key), "schema lacks {key}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes never panic the loader.
    #[test]
    fn loader_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, &bytes).unwrap();
        let _ = check(&path);
    }

    /// Mutations of a valid profile never panic and, when rejected, name a line in range.
    #[test]
    fn loader_never_panics_on_mutated_profiles(pos in 0usize..2000, byte in any::<u8>(), cut in 0usize..2000) {
        let base = std::fs::read(fixture("good.toml")).unwrap();
        let mut bytes = base.clone();
        let p = pos % bytes.len();
        bytes[p] = byte;
        bytes.truncate(cut.max(1).min(bytes.len()));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, &bytes).unwrap();
        if let Err(e) = check(&path) {
            let lines = bytes.iter().filter(|b| **b == b'\n').count() + 1;
            for d in &e.0 {
                prop_assert!(d.line >= 1 && d.line <= lines.max(1), "{d}");
            }
        }
    }
}
