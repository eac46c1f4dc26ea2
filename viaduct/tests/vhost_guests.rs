//! The `microvm` runtime's data path with real guests, no nesting: two
//! confined Viaducts whose red and black ports are vhost-user-net back ends,
//! and four QEMU (TCG) guests — Debian's kernel and busybox — as the two
//! gateways' red and black personalities, each with a virtio-net card
//! served by its Viaduct over shared memory (`memory-backend-memfd`,
//! `share=on`, `-netdev vhost-user`).
//!
//! ```text
//! red-a 10.1.0.2 ══ Viaduct A (203.0.113.1) ══ black-a ── wire ── black-b ══ Viaduct B (203.0.113.2) ══ red-b 10.2.0.2
//!                                          eth0 | eth1 198.51.100.1/.2 | eth0
//! ```
//!
//! The wire between the black guests is QEMU's own (`-netdev stream` over
//! a Unix socket), captured with `filter-dump`. Checked: red-a pings red-b;
//! red-a fetches a 512 KiB file from red-b over HTTP and both print the
//! same SHA-256; the capture holds only ARP and ESP between the Viaducts'
//! addresses, and never the file's plaintext marker; both Viaducts stayed
//! confined (a system call outside their allowlist would have killed them).
//!
//! The guests' kernel and busybox come from the lab lock's pinned packages
//! through the package cache (see `support/guest.rs`). Needs
//! `qemu-system-x86_64` (with `-netdev stream`, QEMU ≥ 7.2); fails, naming
//! the package, when it is missing.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use policy_blob::{Aead, Policy};

#[path = "viaduct/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "support/guest.rs"]
mod guest;
use common::gateway_policy;
use guest::{build_guest, Console, GuestImage};

const MARKER: &str = "VIADUCT-PLAINTEXT-MARKER";

/// One init for every role (`role=` on the kernel command line).
fn init_script() -> String {
    guest::init_preamble("VU-FATAL")
        + &format!(
            r#"role=$(sed -n 's/.*role=\([a-z-]*\).*/\1/p' /proc/cmdline)
$IP link set lo up
# The Viaduct's port: no ARP (frames go to our own MAC; the Viaduct takes
# IP only). Red's MTU leaves room for ESP within black's 1500.
$IP link set eth0 arp off up || fatal "eth0"
case "$role" in
  red-a) $IP link set eth0 mtu 1400; $IP addr add 10.1.0.2/24 dev eth0; $IP route add 10.2.0.0/24 dev eth0 src 10.1.0.2 ;;
  red-b) $IP link set eth0 mtu 1400; $IP addr add 10.2.0.2/24 dev eth0; $IP route add 10.1.0.0/24 dev eth0 src 10.2.0.2 ;;
  black-a|black-b)
    [ "$role" = black-a ] && {{ me=1; peer=2; }} || {{ me=2; peer=1; }}
    $IP link set eth1 up || fatal "eth1"
    $IP addr add 198.51.100.$me/24 dev eth1
    $IP route add 203.0.113.$me/32 dev eth0
    $IP route add 203.0.113.$peer/32 via 198.51.100.$peer dev eth1
    echo 1 > /proc/sys/net/ipv4/ip_forward
    for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done ;;
  *) fatal "role $role" ;;
esac
echo "VU-BOOT-ID $(cat /proc/sys/kernel/random/boot_id)"
echo "VU-LINKS $(ls /sys/class/net | tr '\n' ' ')"
if [ "$role" = red-b ]; then
  mkdir -p /srv
  {{ i=0; while [ $i -lt 64 ]; do echo "{MARKER} $i"; i=$((i+1)); done
     dd if=/dev/urandom bs=1024 count=508 2>/dev/null; }} > /srv/blob
  echo "VU-HASH $(sha256sum < /srv/blob)"
  httpd -p 8080 -h /srv || fatal httpd
fi
echo VU-READY
if [ "$role" = red-a ]; then
  read -r go
  if ping -c 3 -W 10 10.2.0.2; then echo VU-PING-OK; else echo VU-PING-FAIL; fi
  wget -q -O /tmp/blob http://10.2.0.2:8080/blob || echo VU-FETCH-FAIL
  echo "VU-HASH $(sha256sum < /tmp/blob)"
  echo "VU-SIZE $(wc -c < /tmp/blob)"
  echo VU-DONE
fi
while true; do sleep 3600; done
"#
        )
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_viaduct(dir: &Path, name: &str, p: &Policy) -> Child {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let path = d.join("policy.bin");
    std::fs::write(&path, p.encode()).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_viaduct"))
        .args([
            "--key-claim",
            &policy_blob::hex(&p.manual_key_uses().digest()),
        ])
        .args(["--policy", path.to_str().unwrap()])
        .args(["--red-vhost", d.join("red.sock").to_str().unwrap()])
        .args(["--black-vhost", d.join("black.sock").to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(d.join("viaduct.log")).unwrap())
        .spawn()
        .expect("spawn viaduct");
    let t0 = Instant::now();
    while !(d.join("red.sock").exists() && d.join("black.sock").exists()) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "viaduct {name} made no sockets"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

struct Vm {
    child: Child,
    stdin: ChildStdin,
    console: Console,
}

impl Drop for Vm {
    fn drop(&mut self) {
        // SIGTERM first: QEMU then flushes its capture file.
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_vm(img: &GuestImage, dir: &Path, role: &str, port: &Path, wire: Option<&str>) -> Vm {
    let mac = if role.starts_with("red") {
        "02:76:64:00:00:01"
    } else {
        "02:76:64:00:00:02"
    };
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(guest::qemu_guest_args(img, &format!("role={role}")))
        .args(["-machine", "q35,memory-backend=mem", "-m", "256"])
        .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
        .args([
            "-chardev",
            &format!("socket,id=vu,path={}", port.display()),
            "-netdev",
            "vhost-user,id=n0,chardev=vu",
            // vectors=0 (INTx, no MSI-X): QEMU 7.2 under TCG, which has
            // no irqfd, segfaults in msix_set_vector_notifiers when it
            // starts a vhost-user device with MSI-X (measured here; a
            // KVM-accelerated VMM takes the irqfd path instead).
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={mac},vectors=0"),
        ]);
    if let Some(w) = wire {
        let server = if role == "black-a" { "on" } else { "off" };
        cmd.args([
            "-netdev",
            &format!(
                "stream,id=w,server={server},addr.type=unix,addr.path={}",
                dir.join("wire.sock").display()
            ),
            "-device",
            &format!("virtio-net-pci,netdev=w,mac=52:54:00:00:00:0{w}"),
        ]);
        if role == "black-a" {
            cmd.args([
                "-object",
                &format!(
                    "filter-dump,id=cap,netdev=w,file={}",
                    dir.join("wire.pcap").display()
                ),
            ]);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(File::create(dir.join(format!("{role}.qemu.log"))).unwrap())
        .spawn()
        .expect("spawn qemu-system-x86_64 (apt-get install qemu-system-x86)");
    let stdin = child.stdin.take().unwrap();
    let rx = testbed::vm::console_lines(child.stdout.take().unwrap());
    Vm {
        child,
        stdin,
        console: Console {
            rx,
            lines: Vec::new(),
            fatal: "VU-FATAL",
        },
    }
}

fn line_after(c: &Console, prefix: &str) -> String {
    c.lines
        .iter()
        .find_map(|l| l.split_once(prefix).map(|(_, r)| r.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {prefix} line:\n{}", c.tail()))
}

#[test]
fn four_guests_on_vhost_user_ports_carry_ping_and_tcp_through_esp_only() {
    let have = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        have,
        "qemu-system-x86_64 is missing: apt-get install qemu-system-x86"
    );
    let dir: PathBuf = std::env::temp_dir().join(format!("vhost-guests-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let img = build_guest(
        &dir,
        &["virtio_pci", "failover", "net_failover", "virtio_net"],
        &["virtio_net"],
        Vec::new(),
        &init_script(),
    );
    let mut procs = Procs(Vec::new());
    procs.0.push(spawn_viaduct(
        &dir,
        "a",
        &gateway_policy(Aead::Aes256Gcm16, true),
    ));
    procs.0.push(spawn_viaduct(
        &dir,
        "b",
        &gateway_policy(Aead::Aes256Gcm16, false),
    ));
    let mut black_a = spawn_vm(&img, &dir, "black-a", &dir.join("a/black.sock"), Some("1"));
    let t0 = Instant::now();
    while !dir.join("wire.sock").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "black-a made no wire socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut vms = vec![
        spawn_vm(&img, &dir, "black-b", &dir.join("b/black.sock"), Some("2")),
        spawn_vm(&img, &dir, "red-a", &dir.join("a/red.sock"), None),
        spawn_vm(&img, &dir, "red-b", &dir.join("b/red.sock"), None),
    ];
    let boot = Duration::from_secs(300);
    black_a.console.wait_for("VU-READY", boot);
    for vm in vms.iter_mut() {
        vm.console.wait_for("VU-READY", boot);
    }
    let red_b_hash = line_after(&vms[2].console, "VU-HASH");
    // The black guest's kernel is its own (its own boot id), and its only
    // network cards are its Viaduct port and its wire.
    let host_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_ne!(line_after(&black_a.console, "VU-BOOT-ID"), host_boot.trim());
    assert_eq!(line_after(&black_a.console, "VU-LINKS"), "eth0 eth1 lo");
    let red_a = &mut vms[1];
    writeln!(red_a.stdin, "go").unwrap();
    red_a.console.wait_for("VU-DONE", Duration::from_secs(300));
    assert!(
        red_a.console.lines.iter().any(|l| l.contains("VU-PING-OK")),
        "ping failed:\n{}",
        red_a.console.tail()
    );
    let got: Vec<&String> = red_a
        .console
        .lines
        .iter()
        .filter(|l| l.contains("VU-HASH"))
        .collect();
    assert_eq!(got.len(), 1);
    let size: usize = line_after(&red_a.console, "VU-SIZE").parse().unwrap();
    assert!(size > 500 * 1024, "the file is {size} bytes");
    assert!(
        got[0].contains(&red_b_hash),
        "red-a fetched another file: {} vs {red_b_hash}",
        got[0]
    );
    // Both Viaducts still run (confined), and saw the traffic.
    for (i, c) in procs.0.iter_mut().enumerate() {
        assert!(
            c.try_wait().unwrap().is_none(),
            "viaduct {i} died:\n{}",
            std::fs::read_to_string(dir.join(["a", "b"][i]).join("viaduct.log")).unwrap()
        );
    }
    drop(black_a);
    drop(vms);
    // The wire: ARP and ESP between the Viaducts only, no plaintext.
    let pcap = std::fs::read(dir.join("wire.pcap")).unwrap();
    let cap = testbed::pcap::parse(&pcap).unwrap();
    let (mut esp, mut arp) = (0, 0);
    for f in &cap.frames {
        assert!(f.len() >= 14);
        match [f[12], f[13]] {
            [0x08, 0x06] => arp += 1,
            [0x08, 0x00] => {
                let ip = &f[14..];
                assert_eq!(ip[9], 50, "a non-ESP packet on the wire: {ip:02x?}");
                let (s, d) = (&ip[12..16], &ip[16..20]);
                assert!(
                    (s == [203, 0, 113, 1] && d == [203, 0, 113, 2])
                        || (s == [203, 0, 113, 2] && d == [203, 0, 113, 1]),
                    "ESP between other addresses: {s:?} -> {d:?}"
                );
                esp += 1;
            }
            t => panic!("an unexpected frame type {t:02x?} on the wire"),
        }
    }
    assert!(esp > 300, "only {esp} ESP packets on the wire");
    assert!(!pcap.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()));
    eprintln!("wire: {esp} ESP, {arp} ARP frames");
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}
