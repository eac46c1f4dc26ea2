//! Integration tests of the profile crate: shipped profiles, every
//! validation rule with a failing fixture, bad files, and a property test
//! that the loader never panics.

use std::path::{Path, PathBuf};

use profiles::{check, load_profile, Checked, Diagnostic};
use proptest::prelude::*;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped profiles (`profiles/` at the repository root).
fn shipped_dir() -> PathBuf {
    crate_dir().join("..")
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
        "expected a whole number (0 or more), found the string \"three\"",
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
        "manual-key-shared.toml",
        "manual-key-shared.toml",
        "c0c1c2c3",
        "viaduct.ipsec.peers[1].tunnels[0].manual.key_in",
        "the same key as viaduct.ipsec.peers[0].tunnels[0].manual.key_out",
    ),
    (
        "outer-dscp-range.toml",
        "outer-dscp-range.toml",
        "outer_dscp = 184",
        "viaduct.ipsec.peers[0].outer_dscp",
        "DSCP 184 does not fit in 6 bits (0-63)",
    ),
    (
        "tfc-padding-order.toml",
        "tfc-padding-order.toml",
        "tfc_padding",
        "viaduct.ipsec.peers[0].tfc_padding[2]",
        "512 follows 1400; list the sizes in increasing order",
    ),
    (
        "tfc-padding-above-mtu.toml",
        "tfc-padding-above-mtu.toml",
        "tfc_padding",
        "viaduct.ipsec.peers[0].tfc_padding[1]",
        "1500 is larger than the 1400 bytes",
    ),
    (
        "tcp-flags-not-tcp.toml",
        "tcp-flags-not-tcp.toml",
        "tcp_flags",
        "viaduct.filter[0].tcp_flags",
        "TCP flags need `protocol = \"tcp\"`",
    ),
    (
        "tcp-flags-unknown.toml",
        "tcp-flags-unknown.toml",
        "tcp_flags",
        "viaduct.filter[0].tcp_flags[2]",
        "unknown TCP flag `established`",
    ),
    (
        "tcp-flags-twice.toml",
        "tcp-flags-twice.toml",
        "tcp_flags",
        "viaduct.filter[0].tcp_flags[1]",
        "`ack` is named twice",
    ),
    (
        "filter-state-unknown.toml",
        "filter-state-unknown.toml",
        "\"ESTABLISHED-ONLY\"",
        "viaduct.filter[0].state[1]",
        "unknown connection state `ESTABLISHED-ONLY`: use new, established, related or invalid",
    ),
    (
        "filter-state-twice.toml",
        "filter-state-twice.toml",
        "\"Related\"",
        "viaduct.filter[0].state[2]",
        "`related` is named twice",
    ),
    (
        "filter-state-empty.toml",
        "filter-state-empty.toml",
        "state = []",
        "viaduct.filter[0].state",
        "no states: name at least one",
    ),
    (
        "filter-set-unknown.toml",
        "filter-set-unknown.toml",
        "src = \"@lans\"",
        "viaduct.filter[0].src",
        "no set `lans` in [viaduct.sets] (there are: lan)",
    ),
    (
        "filter-set-bad-prefix.toml",
        "filter-set-bad-prefix.toml",
        "198.51.100.300/32",
        "viaduct.sets.servers[1]",
        "198.51.100.300",
    ),
    (
        "filter-port-list-bad.toml",
        "filter-port-list-bad.toml",
        "dst_ports = \"80,443,9000-8000\"",
        "viaduct.filter[0].dst_ports",
        "in the list: port range `9000-8000` is reversed",
    ),
    (
        "filter-icmp-type-unknown.toml",
        "filter-icmp-type-unknown.toml",
        "icmp_type",
        "viaduct.filter[0].icmp_type[1]",
        "unknown ICMP type `packet-too-big`",
    ),
    (
        "filter-families-disjoint.toml",
        "filter-families-disjoint.toml",
        "[[viaduct.filter]]",
        "viaduct.filter[0]",
        "`src` and `dst` have no address family in common",
    ),
    (
        "filter-limit-bad.toml",
        "filter-limit-bad.toml",
        "limit = \"20/fortnight\"",
        "viaduct.filter[0].limit",
        "`fortnight`: per s, second, m, minute, h or hour",
    ),
    (
        "filter-timeout-unknown.toml",
        "filter-timeout-unknown.toml",
        "tcp_establised = 3600",
        "viaduct.filter[0].timeouts.tcp_establised",
        "unknown timeout `tcp_establised`: use tcp_first, tcp_opening, tcp_established",
    ),
    (
        "filter-max-flows-zero.toml",
        "filter-max-flows-zero.toml",
        "filter_max_flows = 0",
        "viaduct.filter_max_flows",
        "filter_max_flows must be between 1 and 4000000",
    ),
    (
        "cmdline-userland.toml",
        "cmdline-userland.toml",
        "\"--\"",
        "kernel.cmdline[1]",
        "`--` passes every word after it to the init as its arguments",
    ),
    (
        "cmdline-security-modules.toml",
        "cmdline-security-modules.toml",
        "lsm=capability",
        "kernel.cmdline[1]",
        "`lsm=capability` chooses which security modules",
    ),
    (
        "cmdline-syscall-abi.toml",
        "cmdline-syscall-abi.toml",
        "syscall.x32",
        "kernel.cmdline[0]",
        "second way into the kernel that the compartments' seccomp filters are not written for",
    ),
    (
        "cmdline-mitigations.toml",
        "cmdline-mitigations.toml",
        "mitigations=off",
        "kernel.cmdline[0]",
        "turns off every CPU-vulnerability mitigation",
    ),
    (
        "cmdline-modules.toml",
        "cmdline-modules.toml",
        "sig_enforce",
        "kernel.cmdline[0]",
        "whether modules must be signed",
    ),
    (
        "cmdline-isolation.toml",
        "cmdline-isolation.toml",
        "intel_iommu",
        "kernel.cmdline[0]",
        "devices reach all memory by DMA",
    ),
    (
        "cmdline-debug.toml",
        "cmdline-debug.toml",
        "kgdboc",
        "kernel.cmdline[0]",
        "attaches the kernel debugger",
    ),
    (
        "cmdline-sysctl.toml",
        "cmdline-sysctl.toml",
        "sysctl.kernel",
        "kernel.cmdline[0]",
        "before the gateway init applies its own",
    ),
    (
        "cmdline-quote.toml",
        "cmdline-quote.toml",
        "ttyS0",
        "kernel.cmdline[0]",
        "contains a quote",
    ),
    (
        "microvm.toml",
        "microvm.toml",
        "[hardware.nics.wan]",
        "hardware.nics.wan.pci",
        "passes card `wan` through to the black personality's VM",
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
        "boot-tries.toml",
        "boot-tries.toml",
        "boot_tries",
        "image.boot_tries",
        "give 1 to 10",
    ),
    (
        "boot-timeout.toml",
        "boot-timeout.toml",
        "10s",
        "image.boot_timeout",
        "outside 30s..1h",
    ),
    (
        "good-when.toml",
        "good-when.toml",
        "pinged",
        "image.good_when",
        "ready",
    ),
    (
        "empty.toml",
        "empty.toml",
        "",
        "(file)",
        "the profile is empty",
    ),
    // Two roles for one card.
    (
        "nic-same-pci.toml",
        "nic-same-pci.toml",
        "pci = \"0000:00:0A.0\"",
        "hardware.nics.wan.pci",
        "NICs `lan` and `wan` have the same PCI address 0000:00:0a.0",
    ),
    (
        "nic-same-mac.toml",
        "nic-same-mac.toml",
        "mac = \"52:54:00:ab:cd:01\"",
        "hardware.nics.wan.mac",
        "same MAC address 52:54:00:ab:cd:01",
    ),
    (
        "nic-driver-not-in-kernel.toml",
        "nic-driver-not-in-kernel.toml",
        "driver = \"e1000e\"",
        "hardware.nics.wan.driver",
        "not in kernel.drivers, so the card would never come up; add `e1000e` to kernel.drivers",
    ),
    (
        "peer-family.toml",
        "peer-family.toml",
        "2001:db8::2",
        "viaduct.ipsec.peers[0].address",
        "is IPv6 but local_address 198.51.100.1 is IPv4",
    ),
    (
        "peer-own-identity.toml",
        "peer-own-identity.toml",
        "remote_id",
        "viaduct.ipsec.peers[0].remote_id",
        "is this gateway's own identity",
    ),
    (
        "route-twice.toml",
        "route-twice.toml",
        "# again",
        "viaduct.routes[1].dst",
        "10.2.0.0/24 is routed twice, via tunnel:t1 and via black",
    ),
    (
        "route-red-via-black.toml",
        "route-red-via-black.toml",
        "dst = \"10.0.0.0/8\"",
        "viaduct.routes[1].dst",
        "sends red's network 10.1.0.0/24 out of the internet side",
    ),
    (
        "route-tunnel-not-covered.toml",
        "route-tunnel-not-covered.toml",
        "dst = \"10.2.0.0/16\"",
        "viaduct.routes[0].dst",
        "do not cover 10.2.1.0/24",
    ),
    (
        "learned-routes-reach-red.toml",
        "learned-routes-reach-red.toml",
        "# reaches red",
        "viaduct.learned_routes.allow[1]",
        "10.0.0.0/8 le 32 reaches red's network 10.1.0.0/24: a route learned there would take its traffic to black",
    ),
    (
        "learned-routes-martian.toml",
        "learned-routes-martian.toml",
        "# martian",
        "viaduct.learned_routes.allow[0]",
        "203.0.113.0/24 lies in special-purpose space (documentation TEST-NET-3 (RFC 5737)), whose routes are refused: set `martians = \"allow\"`",
    ),
    (
        "learned-routes-bad-range.toml",
        "learned-routes-bad-range.toml",
        "# bad range",
        "viaduct.learned_routes.allow[0]",
        "le 8 must be between 16 and 32",
    ),
    (
        "learned-routes-no-role.toml",
        "learned-routes-no-role.toml",
        "# no role",
        "viaduct.learned_routes",
        "[viaduct.learned_routes] given but role `router` is not in viaduct.roles",
    ),
    (
        "files-reserved.toml",
        "files-reserved.toml",
        "# reserved",
        "personalities.black.files[0].path",
        "`/run/frr/zebra.conf` is under /run: the runtime mounts an empty tmpfs there",
    ),
    (
        "files-twice.toml",
        "files-twice.toml",
        "# twice",
        "personalities.black.files[1].path",
        "`/etc/frr/bgpd.conf` is given twice",
    ),
    (
        "files-inside-a-file.toml",
        "files-inside-a-file.toml",
        "# inside",
        "personalities.red.files[1].path",
        "`/etc/frr` is a file here, so `/etc/frr/bgpd.conf` cannot be inside it",
    ),
    (
        "files-setuid.toml",
        "files-setuid.toml",
        "# setuid",
        "personalities.black.files[0].mode",
        "mode 0o4755 has bits above 0o777",
    ),
    (
        "files-relative.toml",
        "files-relative.toml",
        "# relative",
        "personalities.black.files[0].path",
        "`etc/frr/bgpd.conf` is not an absolute path",
    ),
    (
        "files-no-content.toml",
        "files-no-content.toml",
        "# no content",
        "personalities.black.files[0].content",
        "missing `content` in [personalities.black.files[0]]",
    ),
    (
        "learned-routes-max.toml",
        "learned-routes-max.toml",
        "# too many",
        "viaduct.learned_routes.max",
        "max must be between 1 and 2000000",
    ),
    (
        "lifetime-zero-bytes.toml",
        "lifetime-zero-bytes.toml",
        "child_bytes",
        "viaduct.ipsec.peers[0].lifetimes.child_bytes",
        "byte limit of zero",
    ),
    (
        "lifetime-zero-packets.toml",
        "lifetime-zero-packets.toml",
        "child_packets",
        "viaduct.ipsec.peers[0].lifetimes.child_packets",
        "packet limit of zero",
    ),
    (
        "nic-both-in-base.toml",
        "nic-both-in-base.toml",
        "nic = \"wan\"",
        "personalities.red.nic",
        "NIC `wan` is already given to black",
    ),
    (
        "duplicate-key.toml",
        "duplicate-key.toml",
        "name = \"other\"",
        "appliance.name",
        "`name` is set twice in [appliance]",
    ),
    (
        "duplicate-table.toml",
        "duplicate-table.toml",
        "# again",
        "image",
        "[image] is defined twice",
    ),
    (
        "ports-after-bad-protocol.toml",
        "ports-after-bad-protocol.toml",
        "tpc",
        "viaduct.filter[0].protocol",
        "unknown protocol `tpc`",
    ),
    (
        "misspelt-role.toml",
        "misspelt-role.toml",
        "firewal",
        "viaduct.roles[1]",
        "`firewal` is not one of",
    ),
    (
        "single-bracket-services.toml",
        "single-bracket-services.toml",
        "[personalities.red.services]",
        "personalities.red.services",
        "expected a list of tables, found a table; write the section header with double brackets, [[personalities.red.services]]",
    ),
    (
        "bom.toml",
        "bom.toml",
        "abstract",
        "abstract",
        "expected true or false, found the string \"no\"",
    ),
    (
        "netmask-address.toml",
        "netmask-address.toml",
        "255.255.255.0",
        "personalities.red.addresses[0]",
        "write the prefix length instead: `10.1.0.1/24`",
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
    let dir = shipped_dir();
    let mut n = 0;
    for sub in ["", "lab"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
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
        let p = load_profile(&shipped_dir().join(format!("{name}.toml"))).unwrap();
        assert!(
            p.files.iter().any(|f| f.ends_with("base/gateway.toml")),
            "{name}: {:?}",
            p.files
        );
        // Inherited from the base: red's dnsmasq service and both NICs.
        assert_eq!(p.red.services[0].name, "dnsmasq");
        assert_eq!(p.hardware.nics.len(), 2);
    }
    let ids = load_profile(&shipped_dir().join("ids.toml")).unwrap();
    assert_eq!(
        ids.viaduct.filter.len(),
        5,
        "ids extends firewall and keeps its filter"
    );
    let rules = ids.viaduct.ids.as_ref().expect("the ids profile has rules");
    assert_eq!((rules.compiled, rules.skipped), (3, 0));
    assert_eq!(rules.vars["HOME_NET"], "[10.1.0.0/24]");
}

/// A profile extending the shipped ids profile, with `ids` replacing its
/// `[viaduct.ids]`, in a private copy of the shipped profiles.
fn ids_variant(ids: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("base")).unwrap();
    for f in ["ids.toml", "firewall.toml", "base/gateway.toml"] {
        std::fs::copy(shipped_dir().join(f), dir.path().join(f)).unwrap();
    }
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let p = dir.path().join("mine.toml");
    std::fs::write(&p, format!("extends = \"ids.toml\"\n\n{ids}")).unwrap();
    (dir, p)
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn ids_rules_outside_the_subset_are_refused_by_file_line_sid_and_keyword() {
    // Inline: the error is on the rule's own line of the profile.
    let (_d, p) = ids_variant(
        "[viaduct.ids]\nrules = '''\nalert tcp any any -> any 80 (msg:\"ok\"; content:\"GET\"; sid:1;)\nalert tcp any any -> any 80 (msg:\"re\"; content:\"x\"; pcre:\"/x/\"; sid:2;)\n'''\n",
        &[],
    );
    let e = load_profile(&p).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "{}:6:1: viaduct.ids.rules: sid 2: keyword `pcre` is not supported",
            p.display()
        )),
        "{e}"
    );
    // `skip` leaves it out and counts it.
    let (_d, p) = ids_variant(
        "[viaduct.ids]\nunsupported = \"skip\"\nrules = '''\nalert tcp any any -> any 80 (msg:\"ok\"; content:\"GET\"; sid:1;)\nalert tcp any any -> any 80 (msg:\"re\"; content:\"x\"; pcre:\"/x/\"; sid:2;)\n'''\n",
        &[],
    );
    let ids = load_profile(&p).unwrap().viaduct.ids.unwrap();
    assert_eq!((ids.compiled, ids.skipped), (1, 1));
    assert!(
        ids.coverage.starts_with("1 of 2 rules compiled"),
        "{}",
        ids.coverage
    );
    assert!(ids.coverage.contains("pcre"), "{}", ids.coverage);
}

#[test]
fn ids_rules_files_are_locked_by_digest_and_their_errors_name_file_and_line() {
    let text = "# local rules\nalert tcp any any -> any 21 (msg:\"ftp\"; content:\"PASS \"; sid:10;)\nalert http any any -> any any (msg:\"h\"; content:\"x\"; sid:11;)\n";
    let good = sha256_hex(text);
    let (d, p) = ids_variant(
        &format!(
            "[viaduct.ids]\nrules_files = [{{ path = \"local.rules\", sha256 = \"{good}\" }}]\n"
        ),
        &[("local.rules", text)],
    );
    let e = load_profile(&p).unwrap_err().to_string();
    let file = d.path().join("local.rules");
    assert!(
        e.contains(&format!(
            "{}:3:1: viaduct.ids.rules_files[0]: sid 11: ",
            file.display()
        )) && e.contains("`http`"),
        "{e}"
    );
    // Another digest: refused at the digest, saying the file's.
    let (_d, p) = ids_variant(
        &format!(
            "[viaduct.ids]\nrules_files = [{{ path = \"local.rules\", sha256 = \"{}\" }}]\n",
            "0".repeat(64)
        ),
        &[("local.rules", text)],
    );
    let e = load_profile(&p).unwrap_err().to_string();
    assert!(
        e.contains(&format!("has SHA-256 {good}, not the one locked here")),
        "{e}"
    );
    // A missing file, a malformed digest.
    let (_d, p) = ids_variant(
        &format!("[viaduct.ids]\nrules_files = [{{ path = \"nope.rules\", sha256 = \"{good}\" }}, {{ path = \"local.rules\", sha256 = \"abc\" }}]\n"),
        &[("local.rules", text)],
    );
    let e = load_profile(&p).unwrap_err().to_string();
    assert!(
        e.contains("viaduct.ids.rules_files[0].path") && e.contains("nope.rules"),
        "{e}"
    );
    assert!(
        e.contains("viaduct.ids.rules_files[1].sha256: give the file's SHA-256 as 64 hex digits"),
        "{e}"
    );
    // Skipped, the file's good rule compiles beside the inline one; a sid
    // used in both is refused.
    let (_d, p) = ids_variant(
        &format!("[viaduct.ids]\nunsupported = \"skip\"\nrules = 'alert tcp any any -> any 80 (msg:\"g\"; content:\"GET\"; sid:1;)'\nrules_files = [{{ path = \"local.rules\", sha256 = \"{good}\" }}]\n"),
        &[("local.rules", text)],
    );
    let ids = load_profile(&p).unwrap().viaduct.ids.unwrap();
    assert_eq!((ids.compiled, ids.skipped), (2, 1));
    assert_eq!(ids.sources.len(), 2);
    assert_eq!(ids.sources[1].sha256, good);
    let (_d, p) = ids_variant(
        &format!("[viaduct.ids]\nunsupported = \"skip\"\nrules = 'alert tcp any any -> any 80 (msg:\"g\"; content:\"GET\"; sid:10;)'\nrules_files = [{{ path = \"local.rules\", sha256 = \"{good}\" }}]\n"),
        &[("local.rules", text)],
    );
    let e = load_profile(&p).unwrap_err().to_string();
    assert!(e.contains("sid 10 is used twice: inline line 1 and"), "{e}");
}

#[test]
fn ids_variables_default_to_reds_networks_and_may_be_set() {
    let (_d, p) = ids_variant(
        "[viaduct.ids]\nvars = { HOME_NET = \"[10.1.0.0/24,10.9.0.0/16]\", WEB = \"[8080,8443]\" }\nrules = 'alert tcp any any -> $HOME_NET $WEB (msg:\"w\"; content:\"GET\"; sid:1;)'\n",
        &[],
    );
    let ids = load_profile(&p).unwrap().viaduct.ids.unwrap();
    assert_eq!(ids.vars["HOME_NET"], "[10.1.0.0/24,10.9.0.0/16]");
    // An unknown variable refuses the rule; a bad name refuses the profile.
    let (_d, p) = ids_variant(
        "[viaduct.ids]\nvars = { home = \"any\" }\nrules = 'alert tcp any any -> $NOPE any (msg:\"w\"; content:\"GET\"; sid:1;)'\n",
        &[],
    );
    let e = load_profile(&p).unwrap_err().to_string();
    assert!(
        e.contains("viaduct.ids.vars.home: `home` is not a variable name"),
        "{e}"
    );
    assert!(
        e.contains("viaduct.ids.rules: sid 1:") && e.contains("NOPE"),
        "{e}"
    );
    // No rules at all (a profile of its own: tables merge through `extends`).
    let (d, _) = ids_variant("", &[]);
    let p = d.path().join("bare.toml");
    std::fs::write(
        &p,
        "extends = \"firewall.toml\"\n[viaduct]\nroles = [\"firewall\", \"ids\"]\n[viaduct.ids]\nunsupported = \"skip\"\n",
    )
    .unwrap();
    let e = load_profile(&p).unwrap_err().to_string();
    assert!(
        e.contains("viaduct.ids: no rules: give `rules` or `rules_files`"),
        "{e}"
    );
    // Only a missing file: one error, the file's.
    std::fs::write(
        &p,
        format!("extends = \"firewall.toml\"\n[viaduct]\nroles = [\"firewall\", \"ids\"]\n[viaduct.ids]\nrules_files = [{{ path = \"nope.rules\", sha256 = \"{}\" }}]\n", "0".repeat(64)),
    )
    .unwrap();
    let e = load_profile(&p).unwrap_err().to_string();
    assert_eq!(e.matches("viaduct.ids").count(), 1, "{e}");
    assert!(
        e.contains("viaduct.ids.rules_files[0].path") && e.contains("nope.rules"),
        "{e}"
    );
}

#[test]
fn lab_pair_mirrors() {
    let a = load_profile(&shipped_dir().join("lab/gw-a.toml")).unwrap();
    let b = load_profile(&shipped_dir().join("lab/gw-b.toml")).unwrap();
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
    // The lab pair is keyed by IKE (PSK); its manual variant mirrors the keys.
    assert!(ta.manual.is_none() && tb.manual.is_none());
    let ma = load_profile(&shipped_dir().join("lab/manual/gw-a.toml")).unwrap();
    let mb = load_profile(&shipped_dir().join("lab/manual/gw-b.toml")).unwrap();
    let m = |p: &profiles::model::Profile| {
        p.viaduct.ipsec.as_ref().unwrap().peers[0].tunnels[0]
            .manual
            .clone()
            .unwrap()
    };
    let (ma, mb) = (m(&ma), m(&mb));
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
    let p = load_profile(&shipped_dir().join("lab/manual/gw-a.toml")).unwrap();
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
    let doc = crate_dir().join("../../docs/profile-reference.md");
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

/// A profile in a temporary directory, next to a copy of `good.toml`.
struct Temp {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn temp_profile(text: &str) -> Temp {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("good.toml"), dir.path().join("good.toml")).unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, text).unwrap();
    Temp { _dir: dir, path }
}

/// Checks `good.toml` extended by `extra`; the diagnostics (none if valid).
fn errors(extra: &str) -> Vec<Diagnostic> {
    let t = temp_profile(&format!("extends = \"good.toml\"\n{extra}"));
    match check(&t.path) {
        Ok(_) => Vec::new(),
        Err(e) => e.0,
    }
}

/// Checks `good.toml` with `from` replaced by `to` (a whole profile).
fn errors_in_good(from: &str, to: &str) -> Vec<Diagnostic> {
    let good = std::fs::read_to_string(fixture("good.toml")).unwrap();
    assert!(good.contains(from), "{from}");
    let t = temp_profile(&good.replacen(from, to, 1));
    match check(&t.path) {
        Ok(_) => Vec::new(),
        Err(e) => e.0,
    }
}

fn rendered(d: &[Diagnostic]) -> String {
    d.iter().map(Diagnostic::render).collect()
}

/// The one diagnostic of `good.toml` extended by `extra`.
fn one(extra: &str) -> Diagnostic {
    let e = errors(extra);
    let shown: String = extra.chars().take(400).collect();
    let got: String = rendered(&e).chars().take(4000).collect();
    assert_eq!(e.len(), 1, "expected one error for:\n{shown}\ngot:\n{got}");
    e.into_iter().next().unwrap()
}

fn accepted(extra: &str) {
    let e = errors(extra);
    assert!(e.is_empty(), "rejected:\n{extra}\n{}", rendered(&e));
}

#[test]
fn microvm_runtime_needs_pci_addresses_and_memory() {
    let pci = "[hardware.nics.lan]\npci = \"0000:01:00.0\"\n[hardware.nics.wan]\npci = \"0000:02:00.0\"\n";
    accepted(&format!("[appliance]\nruntime = \"microvm\"\n{pci}"));
    // macvtap instead of a PCI address.
    accepted(
        "[appliance]\nruntime = \"microvm\"\n[hardware.nics.lan]\npci = \"0000:01:00.0\"\n[hardware.nics.wan]\nattach = \"macvtap\"\n",
    );
    let d = one(&format!(
        "[appliance]\nruntime = \"microvm\"\n{pci}[personalities.red]\nmemory_limit = \"100MiB\"\n"
    ));
    assert_eq!(d.field, "personalities.red.memory_limit", "{d}");
    assert!(d.message.contains("at least 128MiB"), "{d}");
    let d = one(
        "[appliance]\nruntime = \"microvm\"\n[hardware.nics.lan]\npci = \"0000:01:00.0\"\nattach = \"sriov\"\n[hardware.nics.wan]\npci = \"0000:02:00.0\"\n",
    );
    assert_eq!(d.field, "hardware.nics.lan.attach", "{d}");
    // `attach` means nothing to a compartment.
    let d = one("[hardware.nics.wan]\nattach = \"vfio\"\n");
    assert_eq!(d.field, "hardware.nics.wan.attach", "{d}");
    assert!(d.message.contains("microvm"), "{d}");
    let d = one("[appliance]\nruntime = \"vm\"\n");
    assert_eq!(d.field, "appliance.runtime", "{d}");
}

#[test]
fn two_roles_for_one_card_are_refused_in_any_spelling() {
    for (key, what, a, b) in [
        ("pci", "PCI address", "0000:00:02.0", "0000:00:02.0"),
        ("pci", "PCI address", "0000:00:0a.0", "0000:00:0A.0"),
        ("pci", "PCI address", "0000:3B:00.1", "0000:3b:00.1"),
        (
            "mac",
            "MAC address",
            "52:54:00:12:34:56",
            "52:54:00:12:34:56",
        ),
        (
            "mac",
            "MAC address",
            "52:54:00:AB:cd:01",
            "52:54:00:ab:CD:01",
        ),
    ] {
        let d = one(&format!(
            "[hardware.nics.lan]\n{key} = \"{a}\"\n[hardware.nics.wan]\n{key} = \"{b}\"\n"
        ));
        assert_eq!(d.field, format!("hardware.nics.wan.{key}"), "{d}");
        assert!(d.message.contains(&format!("same {what}")), "{d}");
        assert_eq!(d.notes.len(), 1, "{d:?}");
        assert_eq!(d.notes[0].line, 3, "the note is at lan's {key}");
    }
    // The one written later is reported, whatever the roles' names.
    let d = one("[hardware.nics.wan]\npci = \"0000:00:05.0\"\n[hardware.nics.lan]\npci = \"0000:00:05.0\"\n");
    assert_eq!(d.field, "hardware.nics.lan.pci");
    // The same card in the base and in the extending profile: both named.
    let t =
        temp_profile("extends = \"base.toml\"\n[hardware.nics.wan]\nmac = \"52:54:00:00:00:01\"\n");
    std::fs::write(
        t.path.with_file_name("base.toml"),
        "extends = \"good.toml\"\n[hardware.nics.lan]\nmac = \"52:54:00:00:00:01\"\n",
    )
    .unwrap();
    let e = check(&t.path).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert!(e.0[0].file.ends_with("p.toml"), "{e}");
    assert!(e.0[0].notes[0].file.ends_with("base.toml"), "{:?}", e.0[0]);
    // Different cards are fine.
    accepted("[hardware.nics.lan]\npci = \"0000:00:02.0\"\nmac = \"52:54:00:00:00:01\"\n[hardware.nics.wan]\npci = \"0000:00:03.0\"\nmac = \"52:54:00:00:00:02\"\n");
}

#[test]
fn nic_drivers_must_be_in_the_kernel() {
    // `-` and `_` are the same to modprobe.
    accepted("[hardware.nics.wan]\ndriver = \"virtio-net\"\n");
    accepted(
        "[kernel]\ndrivers = { append = [\"e1000e\"] }\n[hardware.nics.wan]\ndriver = \"e1000e\"\n",
    );
    // A list without the NICs' driver: one missing driver, one error.
    let d = one("[kernel]\ndrivers = [\"e1000e\"]\n");
    assert_eq!(d.field, "hardware.nics.lan.driver");
    assert!(
        d.message
            .contains("NICs `lan` and `wan` need driver `virtio_net`"),
        "{d}"
    );
    // The note names the list; from a base, it says how to append to it.
    let d = one("[hardware.nics.lan]\ndriver = \"igb\"\n");
    assert!(d.notes[0].file.ends_with("good.toml"), "{d:?}");
    assert!(d.notes[0].message.contains("append = [\"igb\"]"), "{d:?}");
    // No driver list at all.
    let e = errors_in_good("drivers = [\"virtio_net\"]\n", "");
    assert_eq!(e.len(), 1, "{}", rendered(&e));
    assert!(
        e[0].message.contains("not in kernel.drivers"),
        "{}",
        rendered(&e)
    );
    // A driver list with its own mistake is reported alone.
    let d = one("[kernel]\ndrivers = [\"virtio net\"]\n");
    assert_eq!(d.field, "kernel.drivers[0]");
    // So is an unused NIC (nic-unused.toml: its driver is not in the list either).
    assert!(one_error("nic-unused.toml")
        .message
        .contains("not given to any personality"));
}

#[test]
fn peer_family_and_identity() {
    // An IPv4 peer of an IPv6 gateway.
    let d = one("[personalities.black]\naddresses = [\"198.51.100.1/24\", \"2001:db8::1/64\"]\n[viaduct.ipsec]\nlocal_address = \"2001:db8::1\"\n");
    assert_eq!(d.field, "viaduct.ipsec.peers[0].address");
    assert!(
        d.message
            .contains("is IPv4 but local_address 2001:db8::1 is IPv6"),
        "{d}"
    );
    // An IPv4-mapped address is IPv6 syntax, still another family.
    let peer = |address: &str, remote_id: &str| {
        format!("[[viaduct.ipsec.peers]]\nname = \"b\"\naddress = \"{address}\"\nremote_id = \"{remote_id}\"\nauth = {{ method = \"psk\", psk = \"tpm:b\" }}\n[[viaduct.ipsec.peers.tunnels]]\nname = \"t1\"\nlocal_ts = [\"10.1.0.0/24\"]\nremote_ts = [\"10.2.0.0/24\"]\n")
    };
    assert!(one(&peer("::ffff:198.51.100.2", "b.lab"))
        .message
        .contains("is IPv6"));
    // Our own identity, however written.
    for (local, remote) in [
        ("a.lab", "a.lab"),
        ("a.lab", "A.LAB"),
        ("a.lab", "a.lab."),
        ("gw@Example.net", "GW@example.NET"),
        ("2001:db8::1", "2001:DB8:0::1"),
        ("198.51.100.1", "198.51.100.1"),
        ("fqdn:a.lab", "A.lab"),
        ("198.51.100.1", "ipv4:198.51.100.1"),
    ] {
        let d = one(&format!(
            "[viaduct.ipsec]\nlocal_id = \"{local}\"\n{}",
            peer("198.51.100.2", remote)
        ));
        assert_eq!(
            d.field, "viaduct.ipsec.peers[0].remote_id",
            "{local} {remote}"
        );
        assert!(d.message.contains("own identity"), "{d}");
        assert!(d.notes[0].message.contains("local_id"), "{d:?}");
    }
    for (local, remote) in [
        ("a.lab", "b.lab"),
        ("a@x.net", "b@x.net"),
        ("2001:db8::1", "2001:db8::2"),
    ] {
        accepted(&format!(
            "[viaduct.ipsec]\nlocal_id = \"{local}\"\n{}",
            peer("198.51.100.2", remote)
        ));
    }
}

#[test]
fn routes_are_checked_as_a_table() {
    let router = "[viaduct]\nroles = [\"vpn\", \"router\"]\n";
    let route =
        |dst: &str, via: &str| format!("[[viaduct.routes]]\ndst = \"{dst}\"\nvia = \"{via}\"\n");
    let routes = |r: &[(&str, &str)]| -> String {
        let mut s = router.to_string();
        for (d, v) in r {
            s.push_str(&route(d, v));
        }
        s
    };
    // Longest prefix wins: a default route out of black is fine when red's
    // network has its own route, as in the shipped router profile.
    accepted(&routes(&[("0.0.0.0/0", "black"), ("10.1.0.0/24", "red")]));
    accepted(&routes(&[
        ("10.2.0.0/16", "black"),
        ("10.2.0.0/24", "tunnel:t1"),
    ]));
    // Overlapping is not twice; the same network, however written, is.
    for (a, b) in [
        ("10.2.0.0/24", "10.2.0.0/24"),
        ("10.2.0.0/24", "10.2.0.0/024"),
    ] {
        let d = one(&routes(&[(a, "tunnel:t1"), (b, "tunnel:t1")]));
        assert_eq!(d.field, "viaduct.routes[1].dst");
        assert!(
            d.message.contains("routed twice, both via tunnel:t1"),
            "{d}"
        );
    }
    let d = one(&routes(&[
        ("0.0.0.0/0", "black"),
        ("10.1.0.0/24", "red"),
        ("0.0.0.0/0", "red"),
    ]));
    assert!(
        d.message
            .contains("0.0.0.0/0 is routed twice, via black and via red"),
        "{d}"
    );
    // Red out of black.
    let d = one(&routes(&[("0.0.0.0/0", "black")]));
    assert!(
        d.message
            .contains("route 0.0.0.0/0 via black sends red's network 10.1.0.0/24"),
        "{d}"
    );
    let d = one(&routes(&[("0.0.0.0/0", "black"), ("10.1.0.0/25", "red")]));
    assert!(
        d.message
            .contains("10.1.0.128/25, part of red's network 10.1.0.0/24"),
        "{d}"
    );
    let d = one(&routes(&[
        ("10.1.0.0/24", "red"),
        ("10.1.0.128/25", "black"),
    ]));
    assert_eq!(d.field, "viaduct.routes[1].dst");
    accepted(&routes(&[
        ("0.0.0.0/0", "black"),
        ("10.1.0.0/25", "red"),
        ("10.1.0.128/25", "red"),
    ]));
    // IPv6 too.
    let v6 = "[personalities.red]\naddresses = [\"10.1.0.1/24\", \"fd00:1::1/64\"]\n";
    let d = one(&format!(
        "{v6}{}",
        routes(&[
            ("0.0.0.0/0", "black"),
            ("10.1.0.0/24", "red"),
            ("::/0", "black")
        ])
    ));
    assert!(d.message.contains("red's network fd00:1::/64"), "{d}");
    accepted(&format!(
        "{v6}{}",
        routes(&[
            ("::/0", "black"),
            ("fd00:1::/64", "red"),
            ("0.0.0.0/0", "black"),
            ("10.1.0.0/24", "red")
        ])
    ));
    // Into a tunnel: only what its remote selectors cover (together).
    let d = one(&routes(&[("10.3.0.0/24", "tunnel:t1")]));
    assert!(d.message.contains("do not cover 10.3.0.0/24"), "{d}");
    assert!(d.notes[0].file.ends_with("good.toml"));
    let d = one(&routes(&[("2001:db8:2::/48", "tunnel:t1")]));
    assert!(d.message.contains("do not cover"), "{d}");
    let split = "[[viaduct.ipsec.peers]]\nname = \"b\"\naddress = \"198.51.100.2\"\nremote_id = \"b.lab\"\nauth = { method = \"psk\", psk = \"tpm:b\" }\n[[viaduct.ipsec.peers.tunnels]]\nname = \"t1\"\nlocal_ts = [\"10.1.0.0/24\"]\nremote_ts = [\"10.2.0.0/25\", \"10.2.0.128/25 tcp\"]\n";
    accepted(&format!(
        "{split}{}",
        routes(&[("10.2.0.0/24", "tunnel:t1")])
    ));
    let d = one(&routes(&[("10.2.0.0/24", "tunnel:t9")]));
    assert!(
        d.message.contains("no tunnel named `t9` (tunnels: t1)"),
        "{d}"
    );
}

#[test]
fn zero_and_endless_lifetimes_are_refused() {
    let peer = |lifetimes: &str| {
        format!("[[viaduct.ipsec.peers]]\nname = \"b\"\naddress = \"198.51.100.2\"\nremote_id = \"b.lab\"\nauth = {{ method = \"psk\", psk = \"tpm:b\" }}\nlifetimes = {{ {lifetimes} }}\n[[viaduct.ipsec.peers.tunnels]]\nname = \"t1\"\nlocal_ts = [\"10.1.0.0/24\"]\nremote_ts = [\"10.2.0.0/24\"]\n")
    };
    for (l, field, part) in [
        ("child_bytes = \"0\"", "child_bytes", "byte limit of zero"),
        (
            "child_bytes = \"0GiB\"",
            "child_bytes",
            "byte limit of zero",
        ),
        ("child_packets = 0", "child_packets", "packet limit of zero"),
        ("child = \"0s\"", "child", "too short"),
        ("ike = \"0h\"", "ike", "too short"),
        ("child_rekey = \"0m\"", "child_rekey", "too short"),
        ("child_rekey = \"2h\"", "child_rekey", "shorter than child"),
        // Far too long (it once overflowed the default rekey time).
        (
            "child = \"3000000000000000000s\"",
            "child",
            "too long; at most 365d",
        ),
        ("ike = \"366d\"", "ike", "too long"),
        (
            "child = \"1h\", child_rekey = \"1h\"",
            "child_rekey",
            "shorter than child",
        ),
    ] {
        let d = one(&peer(l));
        assert_eq!(
            d.field,
            format!("viaduct.ipsec.peers[0].lifetimes.{field}"),
            "{l}: {d}"
        );
        assert!(d.message.contains(part), "{l}: {d}");
    }
    // A mistake in child and one in child_rekey are two mistakes.
    let e = errors(&peer("child = \"1x\", child_rekey = \"1y\""));
    assert_eq!(e.len(), 2, "{}", rendered(&e));
    accepted(&peer(
        "child = \"1h\", child_rekey = \"50m\", child_bytes = \"1GiB\", child_packets = 1000000",
    ));
}

/// A disk or ESP size near the top of the range is refused with a located
/// error (the check of the disk against the ESP once overflowed).
#[test]
fn huge_image_sizes_are_refused_not_overflowed() {
    let e = errors_in_good(
        "[image]\nsize = \"512MiB\"",
        "[image]\nsize = \"512MiB\"\nesp_size = \"17592186044415MiB\"",
    );
    assert!(!e.is_empty(), "accepted an ESP of 16 EiB");
    assert!(
        e.iter().all(|d| d.field.starts_with("image.")),
        "{}",
        rendered(&e)
    );
}

#[test]
fn conflicts_across_extends_name_both_places() {
    for (name, own, base_line) in [
        ("nic-both.toml", "personalities.black.nic", "nic = \"lan\""),
        (
            "nic-both-in-base.toml",
            "personalities.red.nic",
            "nic = \"wan\"",
        ),
    ] {
        let d = one_error(name);
        assert!(d.file.ends_with(name), "{d}");
        assert_eq!(d.field, own);
        assert_eq!(d.notes.len(), 1, "{d:?}");
        let n = &d.notes[0];
        assert!(n.file.ends_with("good.toml"), "{n:?}");
        assert_eq!(n.line, line_of(&fixture("good.toml"), base_line));
        // Printed: both places, each with its snippet.
        let r = d.render();
        assert!(
            r.contains(&format!("good.toml:{}:7: note: ", n.line)),
            "{r}"
        );
        assert_eq!(r.matches("| nic = ").count(), 2, "{r}");
        assert_eq!(r.matches("^^^^^").count(), 2, "{r}");
    }
    // Red's network in the extending profile, black's in the base.
    let d = one("[personalities.red]\naddresses = [\"198.51.100.9/24\"]\n[[links]]\nname = \"r\"\nbetween = [\"red\", \"viaduct\"]\n[[links]]\nname = \"b\"\nbetween = [\"black\", \"viaduct\"]\n[viaduct.ipsec]\nlocal_address = \"198.51.100.1\"\n[[viaduct.ipsec.peers]]\nname = \"b\"\naddress = \"203.0.113.2\"\nremote_id = \"b.lab\"\nauth = { method = \"psk\", psk = \"tpm:b\" }\n[[viaduct.ipsec.peers.tunnels]]\nname = \"t1\"\nlocal_ts = [\"198.51.100.0/24\"]\nremote_ts = [\"10.2.0.0/24\"]\n");
    assert_eq!(d.field, "personalities.red.addresses[0]", "{d}");
    assert!(d.notes[0].file.ends_with("good.toml"), "{d:?}");
    // A duplicate name names its first use.
    let d = one_error("duplicate-names.toml");
    assert_eq!(
        d.notes[0].line,
        line_of(&fixture("duplicate-names.toml"), "name = \"b\"")
    );
}

#[test]
fn duplicate_keys_are_named() {
    let d = one_error("duplicate-key.toml");
    assert_eq!(
        d.notes[0].line,
        line_of(&fixture("duplicate-key.toml"), "name = \"fixture\"")
    );
    let d = one_error("duplicate-table.toml");
    assert_eq!(d.notes[0].line, 2);
    for (text, key) in [
        ("[appliance]\n\"version\" = \"1\"\nversion = \"2\"\n", "`version`"),
        ("[[viaduct.ipsec.peers]]\nname = \"b\"\nauth = { method = \"psk\", method = \"pubkey\" }\n", "`method`"),
        ("[hardware.nics.lan]\ndriver = \"virtio_net\"\n[hardware.nics.lan]\ndriver = \"igb\"\n", "[hardware.nics.lan]"),
        ("image.size = \"1GiB\"\nimage.size = \"2GiB\"\n", "`size`"),
    ] {
        let d = one(text);
        assert!(d.message.contains(key) && d.message.contains("twice"), "{text}: {d}");
        assert!(!d.message.contains("TOML syntax error: duplicate key"), "{d}");
    }
}

#[test]
fn one_mistake_gives_one_error() {
    // Each of these is one mistake; what follows from it is not reported.
    for (extra, field) in [
        // An address error does not make the gateway "not on any network".
        ("[personalities.black]\naddresses = [\"198.51.100.300/24\"]\ngateway = \"198.51.100.254\"\n", "personalities.black.addresses[0]"),
        // Ports after an unknown protocol (SPD, filter, IDS).
        ("[[viaduct.spd]]\nname = \"x\"\nprotocol = \"tcpp\"\ndst_ports = \"80\"\naction = \"discard\"\n", "viaduct.spd[0].protocol"),
        ("[viaduct]\nroles = [\"vpn\", \"ids\"]\n[viaduct.ids]\nrules = 'alert htp any any -> any 80 (msg:\"x\"; content:\"evil\"; sid:1;)'\n", "viaduct.ids.rules"),
        // A misspelt role is not followed by "section given without its role".
        ("[viaduct]\nroles = [\"vpnn\"]\n", "viaduct.roles[0]"),
        // A NIC role misspelt in a personality: the NIC meant is not "unused".
        ("[personalities.red]\nnic = \"lna\"\n", "personalities.red.nic"),
        // A misspelt link end is not followed by "no link between the Viaduct and …".
        ("[[links]]\nname = \"r\"\nbetween = [\"red\", \"viaduc\"]\n[[links]]\nname = \"b\"\nbetween = [\"black\", \"viaduct\"]\n", "links[0].between[1]"),
        // A copied tunnel is a duplicate name, not also an ambiguous overlap.
        ("[[viaduct.ipsec.peers]]\nname = \"b\"\naddress = \"198.51.100.2\"\nremote_id = \"b.lab\"\nauth = { method = \"psk\", psk = \"tpm:b\" }\n[[viaduct.ipsec.peers.tunnels]]\nname = \"t1\"\nlocal_ts = [\"10.1.0.0/24\"]\nremote_ts = [\"10.2.0.0/24\"]\n[[viaduct.ipsec.peers.tunnels]]\nname = \"t1\"\nlocal_ts = [\"10.1.0.0/24\"]\nremote_ts = [\"10.2.0.0/24\"]\n", "viaduct.ipsec.peers[0].tunnels[1].name"),
        // A route into a tunnel with its own mistake names an existing tunnel.
        ("[viaduct]\nroles = [\"vpn\", \"router\"]\n[[viaduct.routes]]\ndst = \"10.2.0.0/24\"\nvia = \"tunnel:t1\"\n[[viaduct.ipsec.peers]]\nname = \"b\"\naddress = \"198.51.100.2\"\nremote_id = \"b.lab\"\nauth = { method = \"psk\", psk = \"tpm:b\" }\n[[viaduct.ipsec.peers.tunnels]]\nname = \"t1\"\nlocal_ts = [\"10.1.0.0/24\"]\nremote_ts = [\"10.2.0.0/244\"]\n", "viaduct.ipsec.peers[0].tunnels[0].remote_ts[0]"),
        // A route to the same place twice is not also "red out of black".
        ("[viaduct]\nroles = [\"vpn\", \"router\"]\n[[viaduct.routes]]\ndst = \"10.1.0.0/24\"\nvia = \"red\"\n[[viaduct.routes]]\ndst = \"10.1.0.0/24\"\nvia = \"black\"\n", "viaduct.routes[1].dst"),
        // A route left out of the table (its own mistake) is not followed by
        // "red out of black" for the default route it would have narrowed.
        ("[viaduct]\nroles = [\"vpn\", \"router\"]\n[[viaduct.routes]]\ndst = \"0.0.0.0/0\"\nvia = \"black\"\n[[viaduct.routes]]\ndst = \"10.1.0.0/24\"\nvia = \"redd\"\n", "viaduct.routes[1].via"),
        // A bypass link written instead of a Viaduct link: the bypass only.
        ("[[links]]\nname = \"r\"\nbetween = [\"red\", \"black\"]\n[[links]]\nname = \"b\"\nbetween = [\"black\", \"viaduct\"]\n", "links[0].between"),
        // A section header left out: its keys are one error, and what is
        // under it is not reported on its own.
        ("[viaduct.ipsec]\nname = \"b\"\naddress = \"198.51.100.2\"\nremote_id = \"b.lab\"\n[[viaduct.ipsec.peers.tunnels]]\nname = \"t1\"\n", "viaduct.ipsec.name"),
    ] {
        let d = one(extra);
        assert_eq!(d.field, field, "{extra}: {d}");
    }
    // A misspelt personality is not also reported missing.
    let e = errors_in_good("[personalities.black]", "[personalities.blak]");
    assert_eq!(e.len(), 1, "{}", rendered(&e));
    assert!(
        e[0].message.contains("unknown personality `blak`"),
        "{}",
        rendered(&e)
    );
}

#[test]
fn a_byte_order_mark_does_not_shift_columns() {
    let d = one_error("bom.toml");
    assert_eq!((d.line, d.column), (1, 12), "{d}");
    assert_eq!(d.underline.start, 11);
    assert_eq!(d.source_line.as_deref(), Some("abstract = \"no\""));
    for (text, col) in [
        ("\u{feff}extends = 5\n", 11),
        ("\u{feff}[appliance\n", 11),
        ("\u{feff}colour = 1\nextends = \"good.toml\"\n", 1),
    ] {
        let t = temp_profile(text);
        let e = check(&t.path).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!((e.0[0].line, e.0[0].column), (1, col), "{text:?}: {e}");
    }
    // A valid profile with a BOM is valid.
    let good = std::fs::read_to_string(fixture("good.toml")).unwrap();
    let t = temp_profile(&format!("\u{feff}{good}"));
    check(&t.path).unwrap();
}

#[test]
fn long_lines_are_cut_around_the_problem() {
    let mut line = String::from("cmdline = [");
    for i in 0..12_000 {
        line.push_str(&format!("\"quiet{i}\", "));
    }
    line.push_str("\"two words\"");
    for i in 0..6_000 {
        line.push_str(&format!(",\t\"é日ß{i}\""));
    }
    line.push(']');
    assert!(line.len() > 150_000);
    let d = one(&format!("[kernel]\n{line}\n"));
    assert_eq!(d.field, "kernel.cmdline[12000]");
    let r = d.render();
    assert!(r.len() < 600, "{} bytes", r.len());
    let lines: Vec<&str> = r.lines().collect();
    let src = lines[2];
    let caret = lines[3];
    assert!(src.contains('…'), "{src}");
    // The caret is under `"two words"` (every character here is one column).
    let body: Vec<char> = src.chars().skip(src.find('|').unwrap() + 2).collect();
    let at = caret[caret.find('|').unwrap() + 2..].find('^').unwrap();
    let under: String = body[at..at + 11].iter().collect();
    assert_eq!(under, "\"two words\"", "{r}");
    assert_eq!(caret.matches('^').count(), 11, "{r}");
}

#[test]
fn the_documented_esp_minimum_is_the_enforced_one() {
    let min = profiles::validate::MIN_ESP;
    assert_eq!(
        min.0,
        33 << 20,
        "65525 clusters of 512 bytes, FATs, reserved sectors, rounded up to MiB"
    );
    let doc = profiles::reference::markdown();
    let line = doc
        .lines()
        .find(|l| l.starts_with("| `esp_size` |"))
        .unwrap();
    assert!(line.contains(&format!("at least {min}")), "{line}");
    accepted(&format!("[image]\nesp_size = \"{min}\"\n"));
    let d = one(&format!(
        "[image]\nesp_size = \"{}MiB\"\n",
        (min.0 >> 20) - 1
    ));
    assert!(d.message.contains(&format!("use at least `{min}`")), "{d}");
}

/// The last `quoted` value of a message: the suggested fix.
fn suggestion(d: &Diagnostic) -> String {
    let parts: Vec<&str> = d.message.split('`').collect();
    assert!(parts.len() >= 3, "no suggestion in: {d}");
    parts[parts.len() - 2].to_string()
}

#[test]
fn suggested_fixes_are_accepted() {
    let sel = |ts: &str| {
        format!("[[viaduct.ipsec.peers]]\nname = \"b\"\naddress = \"198.51.100.2\"\nremote_id = \"b.lab\"\nauth = {{ method = \"psk\", psk = \"tpm:b\" }}\n[[viaduct.ipsec.peers.tunnels]]\nname = \"t1\"\nlocal_ts = [\"{ts}\"]\nremote_ts = [\"10.2.0.0/24\"]\n")
    };
    let red = |a: &str| format!("[personalities.red]\naddresses = [\"{a}\"]\n");
    let cases: Vec<(String, &str)> = vec![
        (red("10.1.0.1/255.255.255.0"), "10.1.0.1/255.255.255.0"),
        (red("10.1.0.0/255.255.255.0"), "10.1.0.0/255.255.255.0"),
        (red("10.1.0.1 255.255.255.0"), "10.1.0.1 255.255.255.0"),
        (red("10.1.0.1"), "10.1.0.1"),
        (red("10.1.0.0"), "10.1.0.0"),
        (red("10.1.0.0/24"), "10.1.0.0/24"),
        (red("fd00:1::/64"), "fd00:1::/64"),
        (red("fd00:1::1/ffff:ffff:ffff:ffff::"), "fd00:1::1/ffff:ffff:ffff:ffff::"),
        (sel("10.1.0.0/255.255.255.0"), "10.1.0.0/255.255.255.0"),
        (sel("10.1.0.5/255.255.255.0"), "10.1.0.5/255.255.255.0"),
        (sel("10.1.0.5/24"), "10.1.0.5/24"),
        (sel("10.1.0.0 255.255.255.0"), "10.1.0.0 255.255.255.0"),
        (sel("10.1.0.0 255.255.255.0 tcp 443"), "10.1.0.0 255.255.255.0 tcp 443"),
        (sel("10.1.0.7"), "10.1.0.7"),
        ("[[viaduct.spd]]\nname = \"x\"\ndst = \"10.9.0.0/255.255.0.0\"\naction = \"discard\"\n".into(), "10.9.0.0/255.255.0.0"),
        ("[[viaduct.spd]]\nname = \"x\"\nprotocol = \"tcp\"\ndst_ports = \"443-80\"\naction = \"discard\"\n".into(), "443-80"),
        ("[hardware.nics.lan]\npci = \"00:03.0\"\n".into(), "00:03.0"),
        ("[hardware.nics.lan]\nmac = \"52-54-00-12-34-56\"\n".into(), "52-54-00-12-34-56"),
        ("[hardware.nics.lan]\nmac = \"5254.0012.3456\"\n".into(), "5254.0012.3456"),
        ("[image]\nesp_size = \"16MiB\"\n".into(), "16MiB"),
        ("[image]\nesp_size = \"40000KiB\"\n".into(), "40000KiB"),
        ("[image]\nsize = \"100MiB\"\n".into(), "100MiB"),
    ];
    for (extra, bad) in cases {
        let d = one(&extra);
        let fix = suggestion(&d);
        let fixed = extra.replacen(bad, &fix, 1);
        let e = errors(&fixed);
        assert!(
            e.is_empty(),
            "suggested `{fix}` for `{bad}` ({d}) is rejected:\n{}",
            rendered(&e)
        );
    }
}

#[test]
fn type_errors_speak_to_administrators() {
    let cases = [
        ("[appliance]\nsecurity_version = \"3\"\n", "appliance.security_version", "expected a whole number, found the string \"3\"; remove the quotes: 3"),
        ("[appliance]\nsecurity_version = -1\n", "appliance.security_version", "expected a whole number (0 or more), found the number -1"),
        ("[appliance]\nsecurity_version = 1.5\n", "appliance.security_version", "found the number 1.5"),
        ("[appliance]\nversion = 1.0\n", "appliance.version", "expected a string, found the number 1.0; put the value in quotes: \"1.0\""),
        ("[appliance]\nversion = 2024-01-01\n", "appliance.version", "found the date 2024-01-01"),
        ("[appliance]\nlab = \"true\"\n", "appliance.lab", "expected true or false, found the string \"true\"; remove the quotes: true"),
        ("[appliance]\nlab = 1\n", "appliance.lab", "expected true or false, found the number 1"),
        ("[image]\nsize = 512\n", "image.size", "expected a size such as \"512MiB\", found the number 512"),
        ("[viaduct.ipsec.peers.lifetimes]\n", "viaduct.ipsec.peers", "expected a list of tables"),
        ("[kernel]\ndrivers = \"virtio_net\"\n", "kernel.drivers", "expected a list of strings, found the string \"virtio_net\"; put it in square brackets: [\"virtio_net\"]"),
        ("[kernel]\ndrivers = [1]\n", "kernel.drivers[0]", "expected a string, found the number 1"),
        ("[kernel]\ndrivers = { virtio_net = true }\n", "kernel.drivers", "expected a list of strings such as [\"virtio_net\", \"e1000e\"], found a table"),
        ("image = \"big\"\n", "image", "expected a table (a [image] section), found the string \"big\""),
        ("[[image]]\nsize = \"1GiB\"\n", "image", "expected a table, found a list; write the section header with single brackets, [image]: there is only one"),
        ("image = [\"1GiB\", \"256MiB\", \"ab\", [\"raw\"]]\n", "image", "expected a table (a [image] section), found a list"),
        ("personalities = 5\n", "personalities", "expected a table of named tables (a [personalities.<name>] section for each), found the number 5"),
        ("[hardware]\nnics = [\"lan\"]\n", "hardware.nics", "expected a table of named tables"),
        ("[personalities.red]\nservices = { name = \"x\" }\n", "personalities.red.services", "expected a list of tables, found a table; put the table in a list"),
        ("[[viaduct.ipsec.peers]]\nname = \"b\"\nauth = \"psk\"\n", "viaduct.ipsec.peers[0].auth", "expected a table (a [viaduct.ipsec.peers.auth] section), found the string \"psk\""),
        ("[[viaduct.ipsec.peers]]\nname = \"b\"\ntunnels = [\"t1\"]\n", "viaduct.ipsec.peers[0].tunnels[0]", "expected a table (a [[viaduct.ipsec.peers.tunnels]] section), found the string \"t1\""),
        ("[[viaduct.ipsec.peers]]\n[[viaduct.ipsec.peers.tunnels]]\n[viaduct.ipsec.peers.tunnels.manual]\nspi_in = 99999999999\n", "viaduct.ipsec.peers[0].tunnels[0].manual.spi_in", "expected a whole number from 0 to 4294967295, found the number 99999999999"),
        ("[appliance]\nnmae = \"x\"\n", "appliance.nmae", "unknown key `nmae` in [appliance]; did you mean `name`?"),
        ("[hardware.nics.lan]\ndriverr = \"x\"\n", "hardware.nics.lan.driverr", "did you mean `driver`?"),
        ("[appliance]\ndrivers = [\"x\"]\n", "appliance.drivers", "`drivers` belongs in [kernel]"),
        ("[viaduct]\nlocal_id = \"x\"\nlocal_address = \"198.51.100.1\"\n", "viaduct.local_id", "unknown keys `local_id` and `local_address` in [viaduct]; they belong in [viaduct.ipsec]: is its section header missing above them?"),
    ];
    for (extra, field, part) in cases {
        let d = one(extra);
        assert_eq!(d.field, field, "{extra}: {d}");
        assert!(
            d.message.contains(part),
            "{extra}\n got: {}\nwant: {part}",
            d.message
        );
        for rust in [
            "invalid type",
            "invalid value",
            "u64",
            "u32",
            "sequence",
            " map",
            "struct",
            "Raw",
            "$__",
            "serde",
        ] {
            assert!(!d.message.contains(rust), "{extra}: `{rust}` in {d}");
        }
    }
    // Every wrong type is reported at once, not one per run.
    let e = errors("[appliance]\nsecurity_version = \"x\"\nlab = \"no\"\ncolour = 1\n");
    assert_eq!(e.len(), 3, "{}", rendered(&e));
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

    /// The same with CRLF line ends and a byte-order mark.
    #[test]
    fn loader_never_panics_on_mutated_crlf_profiles(pos in 0usize..2400, byte in any::<u8>(), cut in 0usize..2400) {
        let base = std::fs::read_to_string(fixture("good.toml")).unwrap();
        let mut bytes = format!("\u{feff}{}", base.replace('\n', "\r\n")).into_bytes();
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
                let _ = d.render();
            }
        }
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

#[test]
fn dpd_is_checked_and_defaults_to_30s_restart() {
    let peer = |dpd: &str| {
        format!("[[viaduct.ipsec.peers]]\nname = \"b\"\naddress = \"198.51.100.2\"\nremote_id = \"b.lab\"\nauth = {{ method = \"psk\", psk = \"tpm:b\" }}\n{dpd}\n[[viaduct.ipsec.peers.tunnels]]\nname = \"t1\"\nlocal_ts = [\"10.1.0.0/24\"]\nremote_ts = [\"10.2.0.0/24\"]\n")
    };
    for (l, field, part) in [
        ("dpd = { delay = \"0s\" }", "delay", "out of range"),
        ("dpd = { delay = \"2h\" }", "delay", "out of range"),
        ("dpd = { delay = \"soon\" }", "delay", "not a duration"),
        ("dpd = { action = \"hold\" }", "action", "not a DPD action"),
    ] {
        let d = one(&peer(l));
        assert_eq!(
            d.field,
            format!("viaduct.ipsec.peers[0].dpd.{field}"),
            "{l}: {d}"
        );
        assert!(d.message.contains(part), "{l}: {d}");
    }
    let e = errors(&peer("dpd = { delay = \"x\", action = \"y\" }"));
    assert_eq!(e.len(), 2, "{}", rendered(&e));
    for (l, want) in [
        ("", profiles::model::Dpd::default()),
        (
            "dpd = { delay = \"off\" }",
            profiles::model::Dpd {
                delay: None,
                action: profiles::model::DpdAction::Restart,
            },
        ),
        (
            "dpd = { delay = \"5s\", action = \"clear\" }",
            profiles::model::Dpd {
                delay: Some(profiles::units::Seconds(5)),
                action: profiles::model::DpdAction::Clear,
            },
        ),
    ] {
        accepted(&peer(l));
        let t = temp_profile(&format!("extends = \"good.toml\"\n{}", peer(l)));
        let p = load_profile(&t.path).unwrap();
        assert_eq!(p.viaduct.ipsec.unwrap().peers[0].dpd, want, "{l}");
    }
}

#[test]
fn a_peer_keys_at_most_sixteen_tunnels() {
    let peer = |n: usize| {
        let mut s = "[[viaduct.ipsec.peers]]\nname = \"b\"\naddress = \"198.51.100.2\"\nremote_id = \"b.lab\"\nauth = { method = \"psk\", psk = \"tpm:b\" }\n".to_string();
        for k in 0..n {
            s.push_str(&format!(
                "[[viaduct.ipsec.peers.tunnels]]\nname = \"t{k}\"\nlocal_ts = [\"10.1.{k}.0/24\"]\nremote_ts = [\"10.2.{k}.0/24\"]\n"
            ));
        }
        s
    };
    accepted(&peer(16));
    let d = one(&peer(17));
    assert_eq!(d.field, "viaduct.ipsec.peers[0].tunnels", "{}", d.render());
    assert!(
        d.message.contains("17 tunnels: at most 16 per peer"),
        "{}",
        d.render()
    );
}

/// The device identity key and pinned ECDSA P-256 keys: `private_key =
/// "tpm:identity"` with `public_key = "ecdsa-p256:04…"` (a point on the curve);
/// `tpm:identity` is never a PSK; malformed and off-curve points are named.
#[test]
fn identity_keys_and_ecdsa_pins() {
    // The P-256 generator: a point on the curve.
    let g = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";
    let pin = |k: &str| {
        errors_in_good(
            "auth = { method = \"psk\", psk = \"tpm:b\" }",
            &format!("auth = {{ method = \"pubkey\", public_key = \"{k}\" }}"),
        )
    };
    // Without our own key a pinned peer is refused, and the message names tpm:identity.
    let e = pin(&format!("ecdsa-p256:{g}"));
    assert_eq!(e.len(), 1, "{}", rendered(&e));
    assert!(rendered(&e).contains("tpm:identity"), "{}", rendered(&e));
    // With both: accepted, and the model holds the point.
    let good = std::fs::read_to_string(fixture("good.toml")).unwrap();
    let both = good
        .replacen(
            "local_address = \"198.51.100.1\"\n",
            "local_address = \"198.51.100.1\"\nprivate_key = \"tpm:identity\"\n",
            1,
        )
        .replacen(
            "auth = { method = \"psk\", psk = \"tpm:b\" }",
            &format!("auth = {{ method = \"pubkey\", public_key = \"ecdsa-p256:{g}\" }}"),
            1,
        );
    let t = temp_profile(&both);
    let p = load_profile(&t.path).unwrap();
    let ip = p.viaduct.ipsec.as_ref().unwrap();
    assert!(
        matches!(&ip.private_key, Some(profiles::model::PrivateKey::Tpm { name }) if name == "identity")
    );
    match &ip.peers[0].auth {
        profiles::model::Auth::PublicKeyEcdsaP256 { ecdsa_p256 } => {
            assert_eq!(ecdsa_p256[..4], [0x04, 0x6b, 0x17, 0xd1])
        }
        other => panic!("{other:?}"),
    }
    for (bad, why) in [
        (
            format!("ecdsa-p256:{}", &g[..128]),
            "the uncompressed point, 65 bytes",
        ),
        (
            format!("ecdsa-p256:02{}", &g[2..]),
            "the uncompressed point, 65 bytes",
        ),
        (
            format!("ecdsa-p256:{}00", &g[..128]),
            "not a point on the curve",
        ),
        ("rsa:00".to_string(), "or `ecdsa-p256:04`"),
    ] {
        let t = temp_profile(&both.replacen(&format!("ecdsa-p256:{g}"), &bad, 1));
        let e = check(&t.path).unwrap_err().0;
        assert_eq!(e.len(), 1, "{bad}: {}", rendered(&e));
        assert_eq!(
            e[0].field, "viaduct.ipsec.peers[0].auth.public_key",
            "{bad}"
        );
        assert!(e[0].message.contains(why), "{bad}: {}", e[0].message);
        assert_eq!(e[0].line, line_of(&t.path, "public_key ="), "{bad}");
    }
    // tpm:identity as a PSK: one error, on its line, saying what it is.
    let e = errors_in_good("psk = \"tpm:b\"", "psk = \"tpm:identity\"");
    assert_eq!(e.len(), 1, "{}", rendered(&e));
    assert_eq!(e[0].field, "viaduct.ipsec.peers[0].auth.psk");
    assert!(
        e[0].message.contains("device identity key"),
        "{}",
        e[0].message
    );
}
