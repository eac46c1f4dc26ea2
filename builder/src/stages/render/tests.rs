//! The render stage's checks: the plan and the personalities' files for the
//! lab and shipped profiles, and the profile fields named in its errors.

use std::path::Path;

use gateway_plan::{Capability, Plan, Restart, SocketFamily};
use profiles::{Profile, Side};

use super::network::{dnsmasq_conf, network_script, personality_root, RootEntry};
use super::plan::{ike_credentials, make_plan, manual_key_uses};
use crate::stages::parts::Shipped;
use crate::BuildError;

fn gw_a() -> Profile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/lab/gw-a.toml");
    profiles::load_profile(&path).expect("gw-a is valid")
}

/// gw-a keyed by hand (`profiles/lab/manual/gw-a.toml`).
fn gw_a_manual() -> Profile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/lab/manual/gw-a.toml");
    profiles::load_profile(&path).expect("manual gw-a is valid")
}

fn plan(p: &Profile) -> Result<Plan, BuildError> {
    make_plan(
        p,
        &[7; 32],
        &[],
        ike_credentials(&policy::compile(p).unwrap()).as_deref(),
        &["/lib/modules/6.1.0-1-amd64/kernel/drivers/net/virtio_net.ko".into()],
        None,
        policy::compile(p).unwrap().learn.is_some(),
    )
}

/// The lab profile's manual keys reach the plan as key-use records, and the init's
/// digest of them (its `--key-claim` to the Viaduct) is the one the Viaduct computes
/// from the policy: a gateway built this way starts its Viaduct exactly once.
#[test]
fn manual_keys_reach_the_plan_and_the_claim_digests_agree() {
    let profile = gw_a_manual();
    let policy = policy::compile(&profile).unwrap();
    let uses = policy.manual_key_uses();
    assert_eq!(uses.as_slice().len(), 2, "gw-a has one manual tunnel");
    let keys = manual_key_uses(&policy);
    let p = make_plan(&profile, &[7; 32], &keys, None, &[], None, false).unwrap();
    assert_eq!(p.manual_keys, keys);
    let decoded = Plan::decode(&p.encode()).unwrap();
    assert_eq!(
        gateway_plan::keyuse::set_digest(&decoded.manual_keys).0,
        uses.digest()
    );
    // No record reveals its key: none equals a prefix of any key in the blob.
    let blob = policy.encode();
    for k in &keys {
        assert!(!blob.windows(16).any(|w| w == k.0));
    }
}

/// What busybox-static and iproute2 ship that the checks look at.
fn shipped() -> Shipped {
    Shipped(
        [("bin", true), ("bin/busybox", false), ("bin/ip", false)]
            .into_iter()
            .map(|(p, d)| (p.to_string(), d))
            .collect(),
    )
}

/// `sh -n`: the host shell parses the script.
fn assert_sh_syntax(script: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("sh")
        .arg("-n")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sh -n: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `ip` is called by its path (busybox's shell would run its own applet).
fn assert_no_bare_ip(script: &str) {
    assert!(
        !script.lines().any(|l| l.trim_start().starts_with("ip ")),
        "bare `ip` in\n{script}"
    );
}

fn cap_names(caps: &[Capability]) -> Vec<&'static str> {
    caps.iter().map(|c| c.name()).collect()
}

#[test]
fn plan_for_gw_a_has_both_compartments_and_round_trips() {
    let p = plan(&gw_a()).unwrap();
    assert_eq!(p.profile_name.as_str(), "gw-a");
    assert_eq!(p.viaduct.as_str(), "/usr/sbin/viaduct");
    assert_eq!(p.compartments.len(), 2);
    let (red, black) = (&p.compartments[0], &p.compartments[1]);

    assert_eq!(red.side, gateway_plan::Side::Red);
    assert_eq!(red.root.as_str(), "/personalities/red");
    assert_eq!(red.uid_base, 100_000);
    assert_eq!(red.memory_max, 256 << 20);
    assert_eq!(red.pids_max, 256);
    assert_eq!(red.nic.as_str(), "lan");
    assert_eq!(red.nic_match.pci.as_deref(), Some("0000:00:02.0"));
    assert_eq!(red.nic_match.driver.as_deref(), Some("virtio_net"));
    assert_eq!(red.nic_match.mac, None);
    assert_eq!(red.nic_match.name, None);
    assert_eq!(red.setup.as_str(), "/etc/appliance/network");
    // No AF_PACKET without a DHCP client (dnsmasq's DHCP server needs none).
    assert_eq!(
        red.socket_families,
        [
            SocketFamily::Unix,
            SocketFamily::Inet,
            SocketFamily::Inet6,
            SocketFamily::Netlink
        ]
    );
    assert_eq!(red.services.len(), 1);
    let dnsmasq = &red.services[0];
    assert_eq!(dnsmasq.name.as_str(), "dnsmasq");
    assert_eq!(dnsmasq.restart, Restart::Always);
    assert_eq!(
        dnsmasq.argv,
        [
            "/usr/sbin/dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/etc/dnsmasq.conf"
        ]
    );
    // Sorted by number, whatever the profile's order.
    assert_eq!(
        cap_names(&dnsmasq.caps),
        [
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_NET_BIND_SERVICE",
            "CAP_NET_ADMIN",
            "CAP_NET_RAW"
        ]
    );

    assert_eq!(black.side, gateway_plan::Side::Black);
    assert_eq!(black.root.as_str(), "/personalities/black");
    assert_eq!(black.uid_base, 200_000);
    assert_eq!(black.memory_max, 128 << 20);
    assert_eq!(black.pids_max, 128);
    assert_eq!(black.nic.as_str(), "wan");
    assert_eq!(black.nic_match.pci.as_deref(), Some("0000:00:03.0"));
    assert_eq!(black.nic_match.driver.as_deref(), Some("virtio_net"));
    assert_eq!(black.setup.as_str(), "/etc/appliance/network");
    assert_eq!(black.socket_families, red.socket_families);
    assert!(black.services.is_empty());

    assert_eq!(Plan::decode(&p.encode()).unwrap(), p);
}

#[test]
fn nic_match_is_lower_cased() {
    let mut prof = gw_a();
    for n in &mut prof.hardware.nics {
        if n.role == "wan" {
            n.pci = Some("0000:00:0A.0".into());
            n.mac = Some("52:54:00:AB:CD:EF".into());
        }
    }
    let p = plan(&prof).unwrap();
    let m = &p.compartments[1].nic_match;
    assert_eq!(m.pci.as_deref(), Some("0000:00:0a.0"));
    assert_eq!(m.mac.as_deref(), Some("52:54:00:ab:cd:ef"));
}

#[test]
fn forbidden_capability_is_refused_naming_the_profile_field() {
    // The profile validator refuses it too; the plan refuses it on its own.
    let mut prof = gw_a();
    prof.red.services[0]
        .capabilities
        .push("CAP_SYS_PTRACE".into());
    let err = plan(&prof).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BuildError::Plan(_)), "{msg}");
    assert!(
        msg.contains("personalities.red.services[0].capabilities[5]")
            && msg.contains("CAP_SYS_PTRACE"),
        "{msg}"
    );
}

#[test]
fn bad_values_name_their_profile_field() {
    let mut prof = gw_a();
    prof.red.services[0].command[1] = "--a  b".into();
    let msg = plan(&prof).unwrap_err().to_string();
    assert!(
        msg.contains("personalities.red.services[0].command[1]"),
        "{msg}"
    );

    let mut prof = gw_a();
    prof.black.pids_limit = u64::from(u32::MAX) + 1;
    let msg = plan(&prof).unwrap_err().to_string();
    assert!(msg.contains("personalities.black.pids_limit"), "{msg}");

    let mut prof = gw_a();
    prof.hardware.nics[0].mac = Some("52:54:00".into());
    let msg = plan(&prof).unwrap_err().to_string();
    assert!(msg.contains("hardware.nics."), "{msg}");
    assert!(msg.contains(".mac"), "{msg}");

    let mut prof = gw_a();
    prof.black.services.push(profiles::Service {
        name: "dhcp".into(),
        command: vec!["/bin/true".into()],
        restart: profiles::Restart::Never,
        capabilities: vec![],
    });
    prof.black.dhcp = true;
    let msg = plan(&prof).unwrap_err().to_string();
    assert!(
        msg.contains("personalities.black.services[0].name"),
        "{msg}"
    );
}

#[test]
fn red_network_script_for_gw_a() {
    let s = network_script(&gw_a(), Side::Red, "/bin/ip").unwrap();
    assert!(s.starts_with("#!/bin/sh\n"), "{s}");
    for line in [
        "set -e",
        "/bin/ip link set lo up",
        "/bin/ip link set lan up",
        "/bin/ip addr replace 10.1.0.1/24 dev lan",
        "/bin/ip -o addr show dev lan scope global | while read -r _ _ _ addr _; do",
        "\tcase \" 10.1.0.1/24 \" in",
        "\t*) /bin/ip addr del \"$addr\" dev lan ;;",
        "/bin/ip link set viaduct mtu 1400 up",
        "/bin/ip route replace default dev viaduct",
        "echo 1 > /proc/sys/net/ipv4/ip_forward",
        "\techo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6",
        "\techo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
    ] {
        assert!(s.lines().any(|l| l == line), "missing {line:?} in\n{s}");
    }
    assert!(!s.contains("/bin/ip -6"), "{s}");
    assert!(!s.contains("\n\n\n"), "{s}");
    assert_no_bare_ip(&s);
    assert_sh_syntax(&s);
}

#[test]
fn black_network_script_steers_udp_4500_only_for_udp_peers() {
    let s = network_script(&gw_a_manual(), Side::Black, "/bin/ip").unwrap();
    assert!(!s.contains("dport 4500"), "{s}");
    let mut p = gw_a_manual();
    p.viaduct.ipsec.as_mut().unwrap().peers[0].encapsulation = profiles::model::Encapsulation::Udp;
    let s = network_script(&p, Side::Black, "/bin/ip").unwrap();
    let rule = "[ -n \"$(/bin/ip rule list pref 91)\" ] || /bin/ip rule add pref 91 iif wan ipproto 17 dport 4500 lookup 90";
    assert!(s.lines().any(|l| l == rule), "missing {rule:?} in\n{s}");
    let steer = s.find("rule add pref 91").unwrap();
    let card_up = s.find("/bin/ip link set wan up").unwrap();
    assert!(steer < card_up, "{s}");
    assert!(!s.contains("\n\n\n"), "{s}");
    assert_sh_syntax(&s);
}

/// Keyed by IKE (no manual keys): IKE on 500 and 4500 goes to the Viaduct,
/// steered before the card comes up; manual keys only: neither port.
#[test]
fn black_network_script_steers_ike_when_a_tunnel_is_keyed_by_ike() {
    let s = network_script(&gw_a_manual(), Side::Black, "/bin/ip").unwrap();
    assert!(!s.contains("dport 500 "), "{s}");
    let s = network_script(&gw_a(), Side::Black, "/bin/ip").unwrap();
    let card_up = s.find("/bin/ip link set wan up").unwrap();
    for (pref, port) in [(91, 4500), (92, 500)] {
        let rule = format!("[ -n \"$(/bin/ip rule list pref {pref})\" ] || /bin/ip rule add pref {pref} iif wan ipproto 17 dport {port} lookup 90");
        let at = s
            .find(&rule)
            .unwrap_or_else(|| panic!("missing {rule:?} in\n{s}"));
        assert!(at < card_up, "{s}");
    }
    assert!(!s.contains("\n\n\n"), "{s}");
    assert_sh_syntax(&s);
}

/// A firewall forwards in clear: black reaches red's networks through the
/// Viaduct's port (and only a forwarding role gets these routes).
#[test]
fn black_network_script_routes_reds_networks_to_the_viaduct_for_a_firewall() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/lab/firewall/gw-b.toml");
    let p = profiles::load_profile(&path).expect("the firewall lab's gw-b is valid");
    let s = network_script(&p, Side::Black, "/bin/ip").unwrap();
    let route = "/bin/ip route replace 10.2.0.0/24 dev viaduct";
    assert!(s.lines().any(|l| l == route), "missing {route:?} in\n{s}");
    assert_sh_syntax(&s);
    let red = network_script(&p, Side::Red, "/bin/ip").unwrap();
    assert!(!red.contains("10.2.0.0/24 dev viaduct"), "{red}");
    let vpn = network_script(&gw_a(), Side::Black, "/bin/ip").unwrap();
    assert!(!vpn.contains("10.1.0.0/24 dev viaduct"), "{vpn}");
}

#[test]
fn black_network_script_for_gw_a() {
    let s = network_script(&gw_a(), Side::Black, "/bin/ip").unwrap();
    for line in [
            "set -e",
            "/bin/ip link set lo up",
            "/bin/ip link set wan up",
            "/bin/ip addr replace 198.51.100.1/24 dev wan",
            "\tcase \" 198.51.100.1/24 \" in",
            "/bin/ip route replace default via 198.51.100.254 dev wan",
            "/bin/ip link set viaduct up",
            "/bin/ip route replace default dev viaduct table 90",
            "[ -n \"$(/bin/ip rule list pref 90)\" ] || /bin/ip rule add pref 90 iif wan ipproto 50 lookup 90",
            "[ -n \"$(/bin/ip rule list pref 100)\" ] || /bin/ip rule add pref 100 lookup local",
            "[ -z \"$(/bin/ip rule list pref 0)\" ] || /bin/ip rule del pref 0 lookup local",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
            "echo 0 > /proc/sys/net/ipv4/conf/all/rp_filter",
            "echo 0 > /proc/sys/net/ipv4/conf/viaduct/rp_filter",
            "echo 1 > /proc/sys/net/ipv4/conf/viaduct/accept_local",
            "echo 0 > /proc/sys/net/ipv4/conf/wan/rp_filter",
            "\techo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6",
        ] {
            assert!(s.lines().any(|l| l == line), "missing {line:?} in\n{s}");
        }
    // No window on a restart: nothing is flushed or deleted before its
    // replacement is in place, and ESP is steered to the Viaduct (and the
    // local table moved behind the steering) before the card comes up.
    assert!(!s.contains("flush"), "{s}");
    assert!(!s.contains("rule del pref 90"), "{s}");
    let steer = s.find("rule add pref 90").unwrap();
    let local_moved = s.find("rule del pref 0").unwrap();
    let card_up = s.find("/bin/ip link set wan up").unwrap();
    assert!(steer < local_moved && local_moved < card_up, "{s}");
    assert!(!s.contains("\n\n\n"), "{s}");
    assert_no_bare_ip(&s);
    assert_sh_syntax(&s);
}

#[test]
fn ipv6_addresses_keep_ipv6_and_route_it_to_the_viaduct() {
    let mut prof = gw_a();
    prof.red.addresses.push("2001:db8:1::1/64".parse().unwrap());
    let s = network_script(&prof, Side::Red, "/bin/ip").unwrap();
    assert!(
        s.contains("\n/bin/ip addr replace 2001:db8:1::1/64 dev lan\n"),
        "{s}"
    );
    assert!(
        s.contains("\n/bin/ip -6 route replace default dev viaduct\n"),
        "{s}"
    );
    assert!(s.contains("\necho 1 > /proc/sys/net/ipv6/conf/all/forwarding\n"));
    assert!(!s.contains("disable_ipv6"), "{s}");
    assert_sh_syntax(&s);
    // Black keeps IPv6 off: it has no IPv6 address.
    assert!(network_script(&prof, Side::Black, "/bin/ip")
        .unwrap()
        .contains("disable_ipv6"));
}

#[test]
fn black_dhcp_adds_the_client_service_and_its_hooks() {
    let mut prof = gw_a();
    prof.black.dhcp = true;
    let p = plan(&prof).unwrap();
    let dhcp = &p.compartments[1].services[0];
    assert_eq!(dhcp.name.as_str(), "dhcp");
    assert_eq!(dhcp.restart, Restart::Always);
    assert_eq!(cap_names(&dhcp.caps), ["CAP_NET_ADMIN", "CAP_NET_RAW"]);
    assert_eq!(
        dhcp.argv,
        [
            "/bin/busybox",
            "udhcpc",
            "-f",
            "-i",
            "wan",
            "-s",
            "/etc/appliance/udhcpc.script"
        ]
    );
    // The DHCP client's raw frames: AF_PACKET for black only.
    assert_eq!(
        p.compartments[1].socket_families.last(),
        Some(&SocketFamily::Packet)
    );
    assert!(!p.compartments[0]
        .socket_families
        .contains(&SocketFamily::Packet));
    assert_eq!(Plan::decode(&p.encode()).unwrap(), p);

    // Addresses and the default route are the DHCP client's.
    let s = network_script(&prof, Side::Black, "/bin/ip").unwrap();
    assert!(!s.contains("/bin/ip addr"), "{s}");
    assert!(!s.contains("addr show"), "{s}");
    assert!(!s.contains("default via"), "{s}");
    assert!(s.contains("ipproto 50"), "{s}");
    assert_sh_syntax(&s);

    let root = personality_root(&prof, Side::Black, &shipped()).unwrap();
    let Some(RootEntry::File(0o555, hooks)) = root.get("etc/appliance/udhcpc.script") else {
        panic!("no udhcpc.script: {root:?}");
    };
    let hooks = String::from_utf8(hooks.clone()).unwrap();
    for line in [
        "\t/bin/ip addr replace \"$ip/$mask\" dev \"$interface\"",
        "\t\t[ \"$addr\" = \"$ip/$mask\" ] || /bin/ip addr del \"$addr\" dev \"$interface\"",
        "\t\t/bin/ip route replace default via \"${router%% *}\" dev \"$interface\"",
    ] {
        assert!(
            hooks.lines().any(|l| l == line),
            "missing {line:?} in\n{hooks}"
        );
    }
    assert_no_bare_ip(&hooks);
    assert_sh_syntax(&hooks);
    // Not for red, which has no DHCP client.
    let red = personality_root(&prof, Side::Red, &shipped()).unwrap();
    assert!(!red.contains_key("etc/appliance/udhcpc.script"));
}

/// The router lab's gateway A: FRR in black, learning routes.
fn router_gw_a() -> Profile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/lab/router/gw-a.toml");
    profiles::load_profile(&path).expect("router gw-a is valid")
}

#[test]
fn a_learning_router_has_the_fpm_line_and_black_its_profile_files() {
    let prof = router_gw_a();
    assert_eq!(
        plan(&prof).unwrap().fpm,
        Some(gateway_plan::FpmPlan { port: 2620 })
    );
    assert_eq!(plan(&gw_a()).unwrap().fpm, None);
    let mut frr = shipped();
    for (p, d) in [
        ("etc", true),
        ("etc/frr", true),
        ("etc/frr/daemons", false),
        ("var", true),
        ("var/run", false),
    ] {
        frr.0.insert(p.into(), d);
    }
    let black = personality_root(&prof, Side::Black, &frr).unwrap();
    let file = |p: &str| match black.get(p) {
        Some(RootEntry::File(m, b)) => (*m, String::from_utf8(b.clone()).unwrap()),
        e => panic!("{p}: {e:?}"),
    };
    // Over what the builder renders, over what the packages ship.
    assert_eq!(
        file("etc/group"),
        (
            0o444,
            "root:x:0:\nfrrvty:x:85:root\nnogroup:x:65534:\n".into()
        )
    );
    let zebra = file("etc/frr/zebra.conf");
    assert!(
        zebra.1.contains("fpm address 127.0.0.1 port 2620\n"),
        "{zebra:?}"
    );
    assert!(file("etc/frr/bgpd.conf").1.contains("router bgp 65001\n"));
    // A shipped directory is not made again; a missing one is.
    assert!(!black.contains_key("etc/frr"));
    let bare = personality_root(&prof, Side::Black, &shipped()).unwrap();
    assert_eq!(bare.get("etc/frr"), Some(&RootEntry::Dir(0o755)));
    // Red gets none of them.
    let red = personality_root(&prof, Side::Red, &frr).unwrap();
    assert!(!red.contains_key("etc/frr/zebra.conf"));
    // A file where a package ships a directory, or below a symlink, is refused.
    let mut p = prof.clone();
    p.black.files[1].path = "/etc/frr".into();
    let e = personality_root(&p, Side::Black, &frr)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("personalities.black.files[1].path: /etc/frr is a directory"),
        "{e}"
    );
    p.black.files[1].path = "/var/run/frr.conf".into();
    let e = personality_root(&p, Side::Black, &frr)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a package ships /var/run as a file or symlink"),
        "{e}"
    );
    // Nor where the builder needs a directory.
    p.black.files[1].path = "/etc/appliance".into();
    let e = personality_root(&p, Side::Black, &shipped())
        .unwrap_err()
        .to_string();
    assert!(e.contains("/etc/appliance is a directory"), "{e}");
}

#[test]
fn personality_root_has_mount_points_accounts_and_a_shell() {
    let prof = gw_a();
    let root = personality_root(&prof, Side::Red, &shipped()).unwrap();
    for (d, mode) in [
        ("dev", 0o755),
        ("proc", 0o755),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("etc/appliance", 0o755),
    ] {
        assert_eq!(root.get(d), Some(&RootEntry::Dir(mode)), "{d}");
    }
    let text = |p: &str| match root.get(p) {
        Some(RootEntry::File(_, b)) => String::from_utf8(b.clone()).unwrap(),
        e => panic!("{p}: {e:?}"),
    };
    assert!(matches!(
        root.get("etc/appliance/network"),
        Some(RootEntry::File(0o555, _))
    ));
    assert_eq!(
        text("etc/appliance/network"),
        network_script(&prof, Side::Red, "/bin/ip").unwrap()
    );
    assert_eq!(text("etc/hostname"), "gw-a-red\n");
    assert_eq!(
        text("etc/passwd"),
        "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    );
    assert_eq!(text("etc/group"), "root:x:0:\nnogroup:x:65534:\n");
    assert_eq!(root.get("bin/sh"), Some(&RootEntry::Symlink("busybox")));
    let black = personality_root(&prof, Side::Black, &shipped()).unwrap();
    assert!(matches!(black.get("etc/hostname"),
            Some(RootEntry::File(0o444, b)) if b == b"gw-a-black\n"));

    // What the packages ship is kept.
    let mut more = shipped();
    for p in ["bin/sh", "etc", "etc/passwd", "etc/group"] {
        more.0.insert(p.into(), p == "etc");
    }
    let root = personality_root(&prof, Side::Red, &more).unwrap();
    for p in ["bin/sh", "etc/passwd", "etc/group"] {
        assert!(!root.contains_key(p), "{p}");
    }
    // `ip` is called where iproute2 put it.
    let mut usr = shipped();
    usr.0.remove("bin/ip");
    usr.0.insert("usr/sbin/ip".into(), false);
    let root = personality_root(&prof, Side::Red, &usr).unwrap();
    let Some(RootEntry::File(_, script)) = root.get("etc/appliance/network") else {
        panic!("no network script");
    };
    let script = String::from_utf8(script.clone()).unwrap();
    assert!(
        script.contains("\n/usr/sbin/ip link set lan up\n"),
        "{script}"
    );
}

#[test]
fn personality_without_shell_or_ip_is_refused() {
    let prof = gw_a();
    let mut no_ip = shipped();
    no_ip.0.remove("bin/ip");
    let msg = personality_root(&prof, Side::Black, &no_ip)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("personalities.black.packages") && msg.contains("iproute2"),
        "{msg}"
    );
    let mut no_sh = shipped();
    no_sh.0.remove("bin/busybox");
    let msg = personality_root(&prof, Side::Red, &no_sh)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("personalities.red.packages"), "{msg}");
    // A /bin symlink (merged /usr) would be replaced by our directory.
    let mut merged = shipped();
    merged.0.insert("bin".into(), false);
    let msg = personality_root(&prof, Side::Red, &merged)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("/bin "), "{msg}");
}

#[test]
fn dnsmasq_keeps_its_state_on_run_and_drops_to_nobody() {
    let c = dnsmasq_conf(&gw_a()).unwrap();
    for line in [
        "interface=lan",
        "dhcp-range=10.1.0.128,10.1.0.254,255.255.255.0,12h",
        "dhcp-option=option:router,10.1.0.1",
        "dhcp-leasefile=/run/dnsmasq.leases",
        "pid-file=",
        "user=nobody",
        "group=nogroup",
    ] {
        assert!(c.lines().any(|l| l == line), "missing {line:?} in\n{c}");
    }
}

/// An A/B image built with a release key carries the `update` line (the
/// management port and the key); without a key, or with one slot, none.
#[test]
fn the_release_key_reaches_an_ab_plan_only() {
    let profile = gw_a_manual();
    assert_eq!(profile.image.slots, profiles::Slots::Ab);
    let p = make_plan(&profile, &[7; 32], &[], None, &[], Some([9; 32]), false).unwrap();
    let u = p
        .update
        .expect("an A/B image with a release key accepts updates");
    assert_eq!(u.release_key, [9; 32]);
    assert_eq!(u.port, update_bundle::wire::DEFAULT_PORT);
    assert!(make_plan(&profile, &[7; 32], &[], None, &[], None, false)
        .unwrap()
        .update
        .is_none());
    let mut one = profile.clone();
    one.image.slots = profiles::Slots::Single;
    assert!(
        make_plan(&one, &[7; 32], &[], None, &[], Some([9; 32]), false)
            .unwrap()
            .update
            .is_none()
    );
}

/// gw-a with its personalities as VMs (`profiles/lab/microvm/gw-a.toml`).
fn gw_a_microvm() -> Profile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/lab/microvm/gw-a.toml");
    profiles::load_profile(&path).expect("microvm gw-a is valid")
}

/// Runtime `microvm`: each compartment carries its VM (KVM, the VMM's root
/// at the compartment's root, the guest memory the limit less the VMM's,
/// the card by VFIO, or by macvtap when the profile asks), and the init
/// would accept the plan (it is decoded again, equal).
#[test]
fn a_microvm_plan_gives_each_personality_its_vm() {
    use gateway_plan::{VmAccel, VmNic, VM_OVERHEAD_MIB};
    let p = gw_a_microvm();
    let plan = plan(&p).unwrap();
    for c in &plan.compartments {
        let vm = c.vm.as_ref().expect("a VM");
        assert_eq!(vm.accel, VmAccel::Kvm);
        assert_eq!(vm.nic, VmNic::Vfio);
        assert_eq!(vm.qemu.as_str(), "/usr/bin/qemu-system-x86_64");
        assert_eq!(vm.kernel.as_str(), "/vm/vmlinuz");
        assert_eq!(vm.initrd.as_str(), "/vm/initrd");
        assert_eq!(
            u64::from(vm.memory_mib) + VM_OVERHEAD_MIB,
            c.memory_max >> 20
        );
        assert!(c.nic_match.pci.is_some());
    }
    assert_eq!(Plan::decode(&plan.encode()).unwrap(), plan);
    // The compartment runtime's plan has none.
    assert!(super::plan::make_plan(
        &gw_a(),
        &[7; 32],
        &[],
        ike_credentials(&policy::compile(&gw_a()).unwrap()).as_deref(),
        &[],
        None,
        false
    )
    .unwrap()
    .compartments
    .iter()
    .all(|c| c.vm.is_none()));
    // macvtap when the profile asks for it.
    let mut m = gw_a_microvm();
    for n in &mut m.hardware.nics {
        if n.role == "wan" {
            n.attach = profiles::NicAttach::Macvtap;
        }
    }
    let plan = super::plan::make_plan(
        &m,
        &[7; 32],
        &[],
        ike_credentials(&policy::compile(&m).unwrap()).as_deref(),
        &[],
        None,
        false,
    )
    .unwrap();
    let black = plan
        .compartments
        .iter()
        .find(|c| c.side == gateway_plan::Side::Black)
        .unwrap();
    assert_eq!(black.vm.as_ref().unwrap().nic, VmNic::Macvtap);
    // A limit that leaves the guest too little is refused, naming the field.
    let mut small = gw_a_microvm();
    small.black.memory_limit = profiles::units::ByteSize(100 << 20);
    let e = plan_err(&small);
    assert!(e.contains("personalities.black.memory_limit"), "{e}");
}

fn plan_err(p: &Profile) -> String {
    match plan(p) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}
