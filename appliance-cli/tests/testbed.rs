//! `appliance testbed` through the real binary: the whole `test` (two QEMU gateways
//! built from private copies of the lab profiles with fresh locks, LAN hosts, the
//! tunnel, the capture, the fault), then the bad inputs: a missing tool names its
//! package, a gateway not ready in time fails with its console and leaves nothing,
//! Ctrl-C during `up` tears everything down.
//!
//! Needs root, QEMU, OVMF, swtpm, tcpdump, iproute2, busybox-static (scripts/test
//! installs them), the static gateway binaries (`scripts/build-gateway-bins`) and
//! Debian's archive through the host's apt sources or a warm package cache.
//! The tests share one lab directory (images built once) and run one at a time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Fixture {
    _dir: tempfile::TempDir,
    profiles: PathBuf,
    lab: PathBuf,
}

/// The lab profiles copied with their committed locks, one of which is made
/// stale (the archive moves: a lab must still come up on any day, its builds
/// moving the locks forward), and a lab directory.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("testbed-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let profiles = testbed::lab::copy_lab_profiles(&root(), &dir.path().join("profiles"))
            .expect("copy the lab profiles");
        for gw in testbed::lab::GATEWAYS {
            let lock = std::fs::read_to_string(root().join(format!("profiles/lab/{gw}.lock")))
                .expect("committed lab lock");
            // gw-a's names a dnsmasq-base version no archive has.
            let lock = if gw == "gw-a" {
                let at = lock
                    .find("name = \"dnsmasq-base\"")
                    .expect("dnsmasq-base locked");
                let v = at + lock[at..].find("version = \"").unwrap() + "version = \"".len();
                let end = v + lock[v..].find('"').unwrap();
                format!("{}0.1-gone{}", &lock[..v], &lock[end..])
            } else {
                lock
            };
            std::fs::write(profiles.join(format!("{gw}.lock")), lock).unwrap();
        }
        let lab = dir.path().join("lab");
        Fixture {
            _dir: dir,
            profiles,
            lab,
        }
    })
}

/// One QEMU lab at a time (2 cores).
fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

fn appliance(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run appliance")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn lab_args(f: &Fixture) -> Vec<String> {
    vec![
        "--lab".into(),
        f.lab.display().to_string(),
        "--profiles".into(),
        f.profiles.display().to_string(),
    ]
}

fn testbed(cmd: &str, f: &Fixture, more: &[&str]) -> Output {
    let mut args = vec!["testbed".to_string(), cmd.to_string()];
    args.extend(lab_args(f));
    args.extend(more.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    appliance(&args)
}

/// Processes whose command line names `dir`, network namespaces and host links
/// of the lab: all must be gone.
fn assert_nothing_left(lab: &Path) {
    let canon = std::fs::canonicalize(lab).unwrap_or_else(|_| lab.to_path_buf());
    let needle = canon.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    let mut procs = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == me {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) && !cmd.contains("testbed status") {
            procs.push(format!("{name}: {cmd}"));
        }
    }
    assert!(procs.is_empty(), "processes of the lab left: {procs:#?}");
    use sha2::Digest;
    let tag = format!(
        "tb{}",
        &hex::encode(sha2::Sha256::digest(canon.as_os_str().as_encoded_bytes()))[..4]
    );
    let netns = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&tag))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(netns.is_empty(), "namespaces left: {netns:?}");
    let links: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&tag))
        .collect();
    assert!(links.is_empty(), "links left: {links:?}");
    assert!(!canon.join("run").exists(), "LAB/run left");
}

#[test]
fn testbed_test_runs_end_to_end_and_leaves_nothing() {
    let f = fixture();
    let _s = serial();
    let t = Instant::now();
    let out = testbed("test", f, &[]);
    let stdout = text(&out.stdout);
    eprintln!("{}\n{stdout}", text(&out.stderr));
    eprintln!("appliance testbed test: {:.0} s", t.elapsed().as_secs_f64());
    assert!(out.status.success(), "testbed test failed");
    for row in [
        "gw-a ready",
        "gw-a PCRs = appliance measure",
        "gw-b PCRs = appliance measure",
        "gw-a enrolled (EK certificate chain, AK, credential activation)",
        "gw-a attested (every check of a fresh quote)",
        "gw-b enrolled (EK certificate chain, AK, credential activation)",
        "gw-b attested (every check of a fresh quote)",
        "gw-a against gw-b's reference values refused",
        "ping LAN A → LAN B through the tunnel",
        "ping LAN B → LAN A through the tunnel",
        "TCP 10 MiB LAN B → LAN A, SHA-256 equal",
        "LAN A → 10.250.0.1 (no policy): not on the wire, counted",
        "fault: black killed on gw-a, restarted by the init",
        "fault: the transfer resumes and completes intact",
        "fault: nothing in clear on the wire during the outage",
        "CHILD SA rekeyed during the transfer, no packet dropped",
        "every tunnel of gw-a carried traffic (one CHILD SA each)",
        "fault: Viaduct killed on gw-a, tunnel back with new keys",
        "internet capture: only ESP and IKE between the gateways, no (SPI, sequence) twice",
        "tear-down leaves nothing behind",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row:?}"));
        assert!(line.contains(" pass "), "{line}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("TCP throughput through the tunnel"));
    assert!(stdout.contains("both ready → first ESP packet (IKEv2 keyed)"));
    // The stale lock was moved forward by the lab's build, to a real version.
    let lock = std::fs::read_to_string(f.profiles.join("gw-a.lock")).unwrap();
    assert!(
        !lock.contains("0.1-gone"),
        "gw-a.lock was not moved forward"
    );
    let report = std::fs::read_to_string(f.lab.join("report.txt")).unwrap();
    assert_eq!(
        report,
        stdout
            .rsplit_once("report: ")
            .map_or("", |x| x.0)
            .trim_end()
            .to_string()
            + "\n"
    );
    // The capture is a pcap file that tcpdump itself reads.
    let pcap = f.lab.join("internet.pcap");
    let r = Command::new("tcpdump")
        .args(["-nr"])
        .arg(&pcap)
        .arg("esp")
        .output()
        .unwrap();
    assert!(r.status.success());
    assert!(text(&r.stdout).lines().count() > 1000);
    // tcpdump decodes the lab pair's IKE (isakmp) on port 500.
    let r = Command::new("tcpdump")
        .args(["-nr"])
        .arg(&pcap)
        .args(["udp", "port", "500"])
        .output()
        .unwrap();
    let ike = text(&r.stdout);
    assert!(
        ike.contains("isakmp") && ike.contains("ikev2_init") && ike.contains("child_sa"),
        "{ike}"
    );
    // The lab pair authenticates with its pre-shared key (the Ed25519 pair is
    // the next test).
    let console = std::fs::read_to_string(f.lab.join("gw-a.console.log")).unwrap();
    assert!(
        console
            .lines()
            .any(|l| l.contains("established with fqdn:gw-b.lab")
                && l.contains("authenticated by pre-shared key")),
        "gw-a: no IKE SA authenticated by the pre-shared key"
    );
    // The lab profiles judge a boot good once the peer's tunnels carry SAs
    // (`good_when = "tunnels-up"`): both tunnels keyed by IKE, reported by
    // the Viaduct, and then the boot is good and the TPM's anti-rollback
    // floor set (not on trial: the lab image is the only entry).
    for gw in ["gw-a", "gw-b"] {
        let console = std::fs::read_to_string(f.lab.join(format!("{gw}.console.log"))).unwrap();
        let keyed: std::collections::BTreeSet<&str> = console
            .lines()
            .filter_map(|l| l.split("viaduct| viaduct: tunnel ").nth(1))
            .filter(|r| r.contains(" keyed (") && r.contains("IKE)"))
            .filter_map(|r| r.split(' ').next())
            .collect();
        assert_eq!(keyed.len(), 2, "{gw}: tunnels keyed {keyed:?}");
        let good = console
            .lines()
            .position(|l| l.contains("appliance: boot good (not on trial)"))
            .unwrap_or_else(|| panic!("{gw}: the boot was never judged good"));
        // Both tunnels keyed before the judgement (the Viaduct restarted by
        // the fault test reports them again later).
        let before: std::collections::BTreeSet<&str> = console
            .lines()
            .take(good)
            .filter_map(|l| l.split("viaduct| viaduct: tunnel ").nth(1))
            .filter(|r| r.contains(" keyed ("))
            .filter_map(|r| r.split(' ').next())
            .collect();
        assert_eq!(
            before.len(),
            2,
            "{gw}: judged good with tunnels {before:?} keyed"
        );
        assert!(
            console.contains("appliance: anti-rollback floor raised from 0 to 1"),
            "{gw}: the floor was not set"
        );
    }
    attestation_of_a_real_boot_holds_and_each_forgery_is_refused_by_name(&f.lab);
    assert_nothing_left(&f.lab);
    let s = testbed("status", f, &[]);
    assert!(text(&s.stdout).contains(": down"), "{}", text(&s.stdout));
}

/// A copy of the lab profiles with the variant `profiles/lab/NAME` (gw-a, gw-b)
/// beside them, locked like the pair it extends: (the temporary directory, the
/// variant's directory).
fn lab_variant(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("testbed-{name}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let lab_dir = testbed::lab::copy_lab_profiles(&root(), &dir.path().join("profiles"))
        .expect("copy the lab profiles");
    // The Ed25519 pair too: the microvm pair extends it.
    copy_variant(&lab_dir, "ed25519");
    let variant = copy_variant(&lab_dir, name);
    (dir, variant)
}

/// Copies `profiles/lab/NAME` into `lab_dir/NAME`: both gateways' profiles,
/// their locks (the pair's when the variant has none of its own) and the
/// profiles they extend there; returns the copy.
fn copy_variant(lab_dir: &std::path::Path, name: &str) -> PathBuf {
    let variant = lab_dir.join(name);
    std::fs::create_dir_all(&variant).unwrap();
    for gw in testbed::lab::GATEWAYS {
        std::fs::copy(
            root().join(format!("profiles/lab/{name}/{gw}.toml")),
            variant.join(format!("{gw}.toml")),
        )
        .unwrap();
        // Its own lock if it has one (a microvm pair also locks its VMM),
        // else the same packages as the pair it extends.
        let own = root().join(format!("profiles/lab/{name}/{gw}.lock"));
        let lock = if own.exists() {
            own
        } else {
            root().join(format!("profiles/lab/{gw}.lock"))
        };
        std::fs::copy(lock, variant.join(format!("{gw}.lock"))).unwrap();
    }
    // The profiles both gateways extend (`router/bgp.toml`).
    for e in std::fs::read_dir(root().join(format!("profiles/lab/{name}"))).unwrap() {
        let path = e.unwrap().path();
        let file = path.file_name().unwrap().to_owned();
        if path.extension().is_some_and(|x| x == "toml") && !variant.join(&file).exists() {
            std::fs::copy(&path, variant.join(file)).unwrap();
        }
    }
    variant
}

/// `appliance testbed test` on the variant `profiles/lab/NAME`: every check
/// passes and the tunnel was keyed by IKEv2. Returns the temporary directory
/// and the lab directory in it (consoles, report).
///
/// A run that failed with the lab's emulated-SVM signature on a gateway's
/// console ([`emulated_svm_failure`]: only a microvm lab can show it) runs
/// once more, loudly.
fn test_variant(name: &str, label: &str) -> (tempfile::TempDir, PathBuf) {
    let (dir, variant) = lab_variant(name);
    let lab = dir.path().join("lab");
    let (mut ok, mut stdout) = run_variant(&lab, &variant, label);
    if let Some(why) = (!ok).then(|| emulated_svm_failure(&lab)).flatten() {
        eprintln!(
            "RETRY: testbed test ({label}) failed with the lab's emulated-SVM signature ({why}; docs/design/microvm.md, Known problem); it runs once more"
        );
        let _ = appliance(&["testbed", "down", "--lab", lab.to_str().unwrap()]);
        (ok, stdout) = run_variant(&lab, &variant, label);
    }
    assert!(ok, "testbed test ({label}) failed:\n{stdout}");
    assert!(stdout.contains("both ready → first ESP packet (IKEv2 keyed)"));
    (dir, lab)
}

/// Whether a gateway console of `lab` shows the emulated SVM's known
/// failure, and which: the gateway's kernel crashed in the SVM world switch,
/// or a personality's VM stopped by itself with exit status 0 (its guest
/// reset under `-no-reboot`; the init kills a VM only by signal).
fn emulated_svm_failure(lab: &std::path::Path) -> Option<String> {
    for gw in ["gw-a", "gw-b"] {
        let console =
            std::fs::read_to_string(lab.join(format!("{gw}.console.log"))).unwrap_or_default();
        for l in console.lines() {
            if l.contains("__svm_vcpu_run")
                || (l.contains(": VM stopped: ") && l.contains("exit status 0"))
            {
                return Some(format!("{gw}: {}", l.trim()));
            }
        }
    }
    None
}

/// Runs `appliance testbed test` on `variant` in `lab`: whether it passed,
/// and its standard output.
fn run_variant(lab: &std::path::Path, variant: &std::path::Path, label: &str) -> (bool, String) {
    let args = [
        "testbed".to_string(),
        "test".into(),
        "--lab".into(),
        lab.display().to_string(),
        "--profiles".into(),
        variant.display().to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = Instant::now();
    let out = appliance(&args);
    let stdout = text(&out.stdout);
    eprintln!("{}\n{stdout}", text(&out.stderr));
    eprintln!(
        "appliance testbed test ({label}): {:.0} s",
        t.elapsed().as_secs_f64()
    );
    (out.status.success() && !stdout.contains("FAIL"), stdout)
}

/// `appliance testbed test` on a lab forwarding in clear (`profiles/lab/NAME`,
/// extending the shipped `NAME.toml`, copied beside it): every check passes,
/// each of `rows` among them, no ESP anywhere, nothing left behind.
fn clear_lab(name: &str, rows: &[&str]) {
    let (dir, variant) = lab_variant(name);
    assert!(dir.path().join(format!("profiles/{name}.toml")).exists());
    let lab = dir.path().join("lab");
    let t = Instant::now();
    let out = appliance(&[
        "testbed",
        "test",
        "--lab",
        lab.to_str().unwrap(),
        "--profiles",
        variant.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    eprintln!("{}\n{stdout}", text(&out.stderr));
    eprintln!(
        "appliance testbed test ({name}): {:.0} s",
        t.elapsed().as_secs_f64()
    );
    assert!(out.status.success(), "testbed test ({name}) failed");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    for row in rows.iter().chain(&[
        "gw-a attested",
        "gw-b attested",
        "tear-down leaves nothing behind",
    ]) {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(row) && l.contains(" pass ")),
            "no passing row {row:?}:\n{stdout}"
        );
    }
    // No tunnel: no ESP check ran.
    assert!(!stdout.contains("ESP"), "{stdout}");
    assert_nothing_left(&lab);
}

/// The firewall lab (`profiles/lab/firewall`): gw-a the shipped stateful
/// firewall, gw-b the shipped ids profile (that firewall with IDS rules),
/// forwarding in clear. Each LAN host opens web connections to the internet
/// host; the internet host, and the other LAN, open nothing in; refusals are
/// counted (and the refused SYN logged); nothing left a LAN on the wire but
/// what the profile lets out. Through gw-b a request with a Shellshock probe
/// raises an alert (a JSON line on its console) and a download holding the
/// EICAR test string is dropped by its `drop` rule; through gw-a the same
/// download arrives whole.
#[test]
fn testbed_test_runs_the_firewall_lab() {
    let _s = serial();
    clear_lab(
        "firewall",
        &[
            "LAN A → internet host: web opened out",
            "LAN B → internet host: web opened out",
            "LAN A → internet host: ping refused",
            "internet host → LAN A: web and ping cannot open in, counted",
            "internet host → LAN B: web and ping cannot open in, counted",
            "LAN A → LAN B: web let out by gw-a, refused in by gw-b",
            "internet capture: nothing left a LAN but web and DNS openings",
            "LAN B → internet host: a request with a Shellshock probe passes, alerted (sid 1000001)",
            "LAN B → internet host: a download holding the EICAR test string is dropped by the IDS (sid 1000003)",
            "LAN A → internet host: the same download through gw-a (the firewall, no IDS rules) arrives whole",
        ],
    );
}

/// The router lab (`profiles/lab/router`): both gateways the shipped router
/// profile with static routes, and FRR in black learning routes by BGP from
/// the lab router's gobgpd. Each LAN reaches the internet host and the
/// other LAN, the internet host reaches each LAN, and a destination no
/// route sends to black is dropped by the Viaduct, counted, never on the
/// wire; the shipped profile's ACLs drop forged sources both ways and a
/// LAN service on port 445 from the internet. Of three routes gobgpd
/// announces and black's FRR installs, each Viaduct learns the one its
/// ranges allow: the LANs reach it, not the others; withdrawn, it is gone;
/// announced again, it is back.
#[test]
fn testbed_test_runs_the_router_lab() {
    let _s = serial();
    clear_lab(
        "router",
        &[
            "LAN A → internet host: web and ping routed out",
            "LAN B → internet host: web and ping routed out",
            "internet host → LAN A: ping and web routed in",
            "internet host → LAN B: ping and web routed in",
            "LAN A ↔ LAN B: ping both ways through both routers",
            "LAN A → 192.0.2.1 (no route): dropped by the Viaduct, counted, not on the wire",
            "LAN B → 192.0.2.1 (no route): dropped by the Viaduct, counted, not on the wire",
            "LAN A → internet host from 10.9.9.9 (not LAN A's): dropped by the ACL spoofed-out, counted, not on the wire",
            "LAN B → internet host from 10.9.9.9 (not LAN B's): dropped by the ACL spoofed-out, counted, not on the wire",
            "internet host → LAN A from 10.1.0.77 (a LAN A source): dropped by the ACL spoofed-in, counted",
            "internet host → LAN B from 10.2.0.77 (a LAN B source): dropped by the ACL spoofed-in, counted",
            "internet host → LAN A port 445: dropped by the ACL legacy-tcp-in, counted; served on the LAN host itself",
            "internet host → LAN B port 445: dropped by the ACL legacy-tcp-in, counted; served on the LAN host itself",
            "BGP: each Viaduct learns 1.1.1.0/24 from black's FRR and refuses 1.1.2.0/25 and 2.2.2.0/24",
            "LAN A → 1.1.1.1 (learned, allowed): answered; 1.1.2.1 and 2.2.2.1 (learned by FRR, outside the ranges): dropped as no_route, not on the wire",
            "LAN B → 1.1.1.1 (learned, allowed): answered; 1.1.2.1 and 2.2.2.1 (learned by FRR, outside the ranges): dropped as no_route, not on the wire",
            "BGP: 1.1.1.0/24 withdrawn by gobgpd leaves both Viaducts and LAN A no longer reaches it; announced again, it does",
        ],
    );
}

/// The lab pair with `runtime = "microvm"` (`profiles/lab/microvm`): each
/// gateway on a machine with nested virtualisation and an IOMMU, each
/// personality a KVM guest with its own kernel owning its e1000e by VFIO,
/// the Viaduct their vhost-user back end. Every check of the pair passes,
/// the faults included (black's VM killed and restarted by the init; the
/// Viaduct killed, both VMs restarted on its new ports).
///
/// The pair authenticates with Ed25519 signatures (it extends
/// `profiles/lab/ed25519`, pinned public keys): one boot runs the lab's
/// second authentication method too, pre-shared keys being the default
/// pair's.
///
/// The lab's SVM is QEMU 7.2's TCG emulation, which now and then delivers an
/// interrupt wrongly around its world switch (docs/design/microvm.md, Known
/// problem): a run that fails with that signature on a console runs once
/// more, loudly (`RETRY:`).
#[test]
fn testbed_test_runs_the_microvm_pair() {
    let _s = serial();
    let (_dir, lab) = test_variant("microvm", "microvm");
    // Both gateways authenticated their IKE SAs with signatures.
    for (gw, peer) in [("gw-a", "gw-b"), ("gw-b", "gw-a")] {
        let console = std::fs::read_to_string(lab.join(format!("{gw}.console.log")))
            .unwrap_or_else(|e| panic!("{gw}.console.log: {e}"));
        assert!(
            console
                .lines()
                .any(|l| l.contains(&format!("established with fqdn:{peer}.lab"))
                    && l.contains("authenticated by Ed25519 signatures")),
            "{gw}: no IKE SA authenticated by Ed25519 in its console log"
        );
        assert!(!console.contains("authenticated by pre-shared key"), "{gw}");
    }
    for (gw, n) in [("gw-a", 1), ("gw-b", 2)] {
        let console = std::fs::read_to_string(lab.join(format!("{gw}.console.log")))
            .unwrap_or_else(|e| panic!("{gw}.console.log: {e}"));
        let has = |s: &str| console.lines().any(|l| l.contains(s));
        // The host kernel loads KVM for its processor and VFIO, and no
        // network driver (the cards' are in the guests; nor `tun`, nor the
        // base profile's other card drivers).
        assert!(has("kvm-amd.ko loaded"), "{gw}: KVM not loaded");
        assert!(has("kvm-intel.ko skipped"), "{gw}: kvm_intel not skipped");
        assert!(has("vfio-pci.ko loaded"), "{gw}: vfio-pci not loaded");
        let net: Vec<&str> = console
            .lines()
            .filter(|l| l.starts_with("appliance: module ") && l.contains("/kernel/drivers/net/"))
            .collect();
        assert!(net.is_empty(), "{gw}: network drivers on the host: {net:?}");
        // Each card alone in its IOMMU group, passed through.
        for (side, bus) in [("red", 1), ("black", 2)] {
            let pci = format!("0000:0{bus}:00.0");
            assert!(
                has(&format!("{side}: nic {pci} bound to vfio-pci"))
                    && has(&format!("NIC {pci} by VFIO")),
                "{gw}: {side}'s card {pci} not passed through"
            );
        }
        // Each personality runs its own kernel: two boots, two boot ids,
        // and the guest drives its card with the guest kernel's e1000e.
        let boots: std::collections::BTreeSet<String> = console
            .lines()
            .filter_map(|l| l.split_once("appliance-guest: ").map(|x| x.1))
            .filter_map(|l| l.split_once(", boot ").map(|x| x.1.to_string()))
            .collect();
        assert!(boots.len() >= 2, "{gw}: guest boots {boots:?}");
        assert!(has(&format!("(52:54:00:0a:0{n}:02) is wan")), "{gw}");
    }
    assert_nothing_left(&lab);
}

/// A production-style pair (`profiles/lab/provisioned`: `lab = false`, the PSK a
/// device credential `tpm:gw-psk`): the images hold no secret, the gateways come up
/// with the tunnel closed; `testbed test --provision` enrols them, provisions the
/// PSK through black's management port, reboots them (writable disks) and runs every
/// check with the tunnel keyed by the provisioned PSK; the PSK is in no capture,
/// image or console log.
#[test]
fn testbed_test_provisions_the_psk_of_a_non_lab_pair() {
    let _s = serial();
    let (dir, variant) = lab_variant("provisioned");
    // A PSK of this run: 40 random bytes.
    let mut psk = vec![0u8; 40];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut psk))
        .unwrap();
    let psk_file = dir.path().join("gw-psk.bin");
    std::fs::write(&psk_file, &psk).unwrap();
    let lab = dir.path().join("lab");
    let args = [
        "testbed".to_string(),
        "test".into(),
        "--lab".into(),
        lab.display().to_string(),
        "--profiles".into(),
        variant.display().to_string(),
        "--provision".into(),
        format!("gw-psk=@{}", psk_file.display()),
        "--identity".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = Instant::now();
    let out = appliance(&args);
    let stdout = text(&out.stdout);
    eprintln!("{}\n{stdout}", text(&out.stderr));
    eprintln!(
        "appliance testbed test (provisioned): {:.0} s",
        t.elapsed().as_secs_f64()
    );
    assert!(out.status.success(), "testbed test (provisioned) failed");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    for row in [
        "gw-a enrolled",
        "gw-b enrolled",
        "gw-a provisioned gw-psk (sealed in its TPM)",
        "gw-b provisioned gw-psk (sealed in its TPM)",
        "gw-a rebooted: gw-psk unsealed for IKE, ready again",
        "gw-b rebooted: gw-psk unsealed for IKE, ready again",
        "IKE SA gw-a ↔ gw-b authenticated by the provisioned PSK",
        "gw-a updated to its profile pinning the peer's identity key",
        "gw-b updated to its profile pinning the peer's identity key",
        "gw-a rebooted into the update: the same identity key signs its IKE SAs",
        "gw-b rebooted into the update: the same identity key signs its IKE SAs",
        "ping LAN A → LAN B through the tunnel",
        "TCP 10 MiB LAN B → LAN A, SHA-256 equal",
        "provisioned secrets in no capture, image or console log",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row:?}"));
        assert!(line.contains(" pass "), "{line}");
    }
    for (gw, peer) in [("gw-a", "gw-b"), ("gw-b", "gw-a")] {
        let console = std::fs::read_to_string(lab.join(format!("{gw}.console.log")))
            .unwrap_or_else(|e| panic!("{gw}.console.log: {e}"));
        // Before the provisioning: the tunnel closed, and said why.
        let closed = console
            .find("device credential(s) gw-psk not provisioned on this device")
            .unwrap_or_else(|| panic!("{gw}: the missing PSK was not reported"));
        let unsealed = console
            .find("secrets: gw-psk unsealed (40 bytes) for the IKE process")
            .unwrap_or_else(|| panic!("{gw}: the PSK was not unsealed"));
        assert!(closed < unsealed, "{gw}");
        assert!(
            console
                .lines()
                .any(|l| l.contains(&format!("established with fqdn:{peer}.lab"))
                    && l.contains("authenticated by pre-shared key")),
            "{gw}: no IKE SA authenticated by the provisioned PSK"
        );
        // Then, on the update, by the identity keys: the key enrolled at the first
        // boot, the same at all three boots.
        let device: serde_json::Value = serde_json::from_slice(
            &std::fs::read(lab.join("fleet").join(gw).join("device.json")).unwrap(),
        )
        .unwrap();
        let point = device["identity"].as_str().unwrap();
        assert_eq!(
            console.matches(&format!("public point {point}")).count(),
            3,
            "{gw}: the identity key differs across its three boots"
        );
        let updated = console
            .find(&format!("appliance: ready {gw} 0.1.1"))
            .unwrap_or_else(|| panic!("{gw}: never ready on 0.1.1"));
        assert!(
            console[updated..]
                .lines()
                .any(|l| l.contains(&format!("established with fqdn:{peer}.lab"))
                    && l.contains("ours ECDSA P-256 by the TPM identity key")),
            "{gw}: no IKE SA authenticated by the identity keys after the update"
        );
        // The images say `lab: false` in their signed manifests.
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(lab.join("images").join(gw).join("manifest.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(manifest["profile"]["lab"], false, "{gw}");
    }
    // What the test itself can check again: the PSK nowhere in the capture or logs.
    let hex: String = psk.iter().map(|b| format!("{b:02x}")).collect();
    for f in ["internet.pcap", "gw-a.console.log", "gw-b.console.log"] {
        let b = std::fs::read(lab.join(f)).unwrap();
        assert!(!b.windows(psk.len()).any(|w| w == psk), "the PSK in {f}");
        assert!(
            !b.windows(hex.len()).any(|w| w == hex.as_bytes()),
            "the PSK's hex in {f}"
        );
    }
    assert_nothing_left(&lab);
}

#[test]
fn a_missing_tool_names_its_package() {
    let f = fixture();
    let _s = serial();
    // A PATH with every tool but swtpm.
    let bin = tempfile::tempdir().unwrap();
    for tool in [
        "qemu-system-x86_64",
        "ip",
        "tcpdump",
        "busybox",
        "sh",
        "kill",
    ] {
        let real = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let real = text(&real.stdout).trim().to_string();
        if !real.is_empty() && real.starts_with('/') {
            std::os::unix::fs::symlink(&real, bin.path().join(tool)).unwrap();
        }
    }
    let mut args = vec!["testbed".to_string(), "up".into()];
    args.extend(lab_args(f));
    let out = Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args(&args)
        .env("PATH", bin.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("swtpm is missing: apt-get install swtpm"),
        "{err}"
    );
    assert_nothing_left(&f.lab);
}

/// On the evidence `appliance attest --evidence` saved from gw-a's real boot (OVMF's
/// event log, the init's runtime log, a quote of swtpm through black's relay):
/// every check holds; each forgery is refused by name; tools we did not write
/// (`tpm2_checkquote`, `tpm2_eventlog`) agree on the good quote.
fn attestation_of_a_real_boot_holds_and_each_forgery_is_refused_by_name(lab: &Path) {
    let dir = lab.join("evidence/gw-a");
    let (req, ev) = attest::export::load_evidence(&dir).unwrap();
    let mut device = attest::fleet::Device::load(&lab.join("fleet/gw-a")).unwrap();
    device.last_clock = None;
    // The lab image is signed: the gateway made its identity key at boot (under the
    // PCR policy the build signed into .pcrsig), and enrolment recorded it.
    assert!(device.identity.is_some(), "gw-a has no device identity");
    assert!(lab.join("fleet/gw-a/identity.pem").is_file());
    let key_pem = std::fs::read(lab.join("keys/release.pub")).unwrap();
    let key = signing::PublicKey::from_pem(&key_pem, "release.pub").unwrap();
    let reference = lab.join("images/gw-a/reference-values.json");
    let rf = attest::reference::load(&reference, &key);
    let failed = |ev: &attest_wire::proto::Evidence,
                  req: &attest_wire::proto::QuoteRequest,
                  dev: &attest::fleet::Device,
                  rf: &Result<attest::reference::Reference, String>|
     -> Vec<&'static str> {
        attest::quote::check(ev, req, dev, rf)
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect()
    };
    assert!(
        failed(&ev, &req, &device, &rf).is_empty(),
        "{:?}",
        attest::quote::check(&ev, &req, &device, &rf)
    );
    // A wrong nonce.
    let other = attest_wire::proto::QuoteRequest {
        nonce: [0xee; 32],
        ..req.clone()
    };
    assert_eq!(failed(&ev, &other, &device, &rf), ["nonce", "identity"]);
    // A quote presented for another PCR selection (PCR 16 asked as if it were 4).
    let relabel = attest_wire::proto::QuoteRequest {
        pcrs: (req.pcrs & !(1 << 4)) | 1 << 16,
        ..req.clone()
    };
    assert!(failed(&ev, &relabel, &device, &rf).contains(&"pcr-selection"));
    // An AK without `restricted`.
    let mut weak = device.clone();
    let mut ak = attest_wire::tpms::Public::parse_tpm2b(&weak.ak_public_bytes()).unwrap();
    ak.attributes &= !attest_wire::tpms::attr::RESTRICTED;
    weak.ak_public = hex::encode(ak.to_tpm2b());
    weak.ak_name = hex::encode(ak.name().unwrap());
    assert!(failed(&ev, &req, &weak, &rf).contains(&"ak-attributes"));
    // The reference values of another image (gw-b's).
    let rf_b = attest::reference::load(&lab.join("images/gw-b/reference-values.json"), &key);
    assert_eq!(failed(&ev, &req, &device, &rf_b), ["reference"]);
    // A tampered event log: one digest byte of OVMF's first PCR 4 event.
    let log = signing::eventlog::EventLog::parse(&ev.event_log).unwrap();
    let d = log.events_of(4).next().unwrap().sha256().unwrap();
    let at = ev.event_log.windows(32).position(|w| w == d).unwrap();
    let mut tampered = ev.clone();
    tampered.event_log[at] ^= 0x80;
    assert_eq!(failed(&tampered, &req, &device, &rf), ["event-log"]);
    // A reference signed by another key.
    let other_key = signing::SigningKey::generate().unwrap().public_key();
    let rf_other = attest::reference::load(&reference, &other_key);
    assert_eq!(
        failed(&ev, &req, &device, &rf_other),
        ["reference-signature", "reference"]
    );

    // tpm2_checkquote: signature, nonce and the PCR file.
    let q = std::fs::read_to_string(dir.join("qualifying.hex")).unwrap();
    let out = Command::new("tpm2_checkquote")
        .current_dir(&dir)
        .args([
            "-u",
            "ak.pub",
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-f",
            "quote.pcrs",
            "-g",
            "sha256",
            "-q",
            q.trim(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tpm2_checkquote: {}",
        text(&out.stderr)
    );
    // tpm2_eventlog's replay of OVMF's log, then the init's events, equals the quote.
    let out = Command::new("tpm2_eventlog")
        .arg("--eventlog-version=2")
        .arg(dir.join("eventlog.bin"))
        .output()
        .unwrap();
    assert!(out.status.success(), "tpm2_eventlog: {}", text(&out.stderr));
    let yaml = text(&out.stdout);
    let theirs = attest::export::tpm2_eventlog_pcrs(&yaml);
    assert!(
        !theirs.is_empty(),
        "no replay in:
{yaml}"
    );
    let events = attest_wire::runtime::parse(&ev.runtime_log).unwrap();
    let after = attest_wire::runtime::replay(&theirs, &events);
    let quoted: std::collections::BTreeMap<u8, [u8; 32]> = attest_wire::tpms::pcrs_of(req.pcrs)
        .into_iter()
        .zip(ev.pcr_values.iter().copied())
        .collect();
    for pcr in [0u8, 1, 2, 3, 4, 5, 6, 7, 11, 12] {
        let want = after.get(&pcr).or(theirs.get(&pcr)).copied();
        assert_eq!(
            want,
            Some(quoted[&pcr]),
            "PCR {pcr}: tpm2_eventlog's replay differs"
        );
    }
}

#[test]
fn a_gateway_not_ready_in_time_fails_with_its_console_and_is_torn_down() {
    let f = fixture();
    let _s = serial();
    let out = testbed("up", f, &["--ready-timeout", "8"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("gw-a: no console line `appliance: ready gw-a …` within"),
        "{err}"
    );
    assert!(err.contains("last console lines:"), "{err}");
    assert!(err.contains("testbed: tearing the lab down"), "{err}");
    assert_nothing_left(&f.lab);
}

#[test]
fn ctrl_c_during_up_tears_everything_down() {
    let f = fixture();
    let _s = serial();
    let mut args = vec!["testbed".to_string(), "up".into()];
    args.extend(lab_args(f));
    let mut child = Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until both gateways are booting, then Ctrl-C.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => {
                let started = l.contains("gw-b: started");
                seen.push(l);
                if started {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("gw-b: started")),
        "up never started gw-b: {seen:#?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    seen.extend(rx.iter());
    assert!(!status.success());
    assert!(
        seen.iter()
            .any(|l| l.contains("interrupted: the lab was torn down")),
        "{seen:#?}"
    );
    assert_nothing_left(&f.lab);
}
