//! The `microvm` runtime's VMM compartment on this host: Debian's QEMU run
//! by [`gateway::vmm::VmUnit`] (driven by `examples/vm_unit.rs`, a
//! single-threaded loop like the init's), jailed, booting a guest (a Debian
//! kernel from the lab lock and busybox, under TCG) whose network card is a
//! vhost-user port served by the Viaduct's own port code (`viaduct-vhost`,
//! in a process the example forks), which answers the guest's pings.
//!
//! - `a_jailed_vm_reaches_its_port_and_is_restarted`: the guest's pings are
//!   answered through the port (both directions through shared memory); the
//!   guest's kernel is its own (another boot id) and its only devices are
//!   the port and the console; the VMM process runs as the planned host uid
//!   with no capability, `no_new_privs`, seccomp (ours and QEMU's own), in
//!   namespaces of its own, and sees only its root (QEMU, libraries,
//!   firmware, the guest), the five harmless device nodes and the port;
//!   killed, it is logged and restarted after the back-off, and the new
//!   guest (a new boot id) reaches the port again. (A boot stuck silent, as
//!   happens now and then under TCG on a loaded host, is killed and
//!   restarted by the unit after `vmm::BOOT_SILENCE`; the checks look at the
//!   VM that answered.)
//! - `a_vmm_call_outside_its_allowlist_is_killed_logged_and_restarted`:
//!   with `memfd_create` removed from the allowlist, QEMU is killed by
//!   SIGSYS at its first use; the log names it and the restarts back off
//!   (1 s, then 2 s).
//!
//! Needs root and `qemu-system-x86_64` (Debian's qemu-system-x86); the
//! guest's packages come through the package cache like the lab build's.

#[path = "../../viaduct/tests/support/guest.rs"]
mod guest;
mod vmm_support;

use vmm_support::{libraries, sweep, vm_unit_bin, Done, QEMU};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Tests sharing the guest's directory (see `vmm_support::Done`).
const LAB_TESTS: usize = 2;

const TCG_MODULE: &str = "/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so";

fn require_host() {
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()),
        0,
        "tests/vmm.rs needs root (namespaces, mounts, uid maps)"
    );
    assert!(
        Path::new(QEMU).exists() && Path::new(TCG_MODULE).exists(),
        "{QEMU} or its TCG module is missing: apt-get install qemu-system-x86"
    );
}

fn init_script() -> String {
    guest::init_preamble("VM-FATAL")
        + r#"$IP link set lo up
$IP link set eth0 arp off up || fatal "eth0"
$IP addr add 10.9.0.2/24 dev eth0
echo "VM-BOOT-ID $(cat /proc/sys/kernel/random/boot_id)"
echo "VM-DEVICES virtio=$(ls /sys/bus/virtio/devices | wc -l) links=$(ls /sys/class/net | tr '\n' ',')"
while true; do
  if ping -c 1 -W 2 10.9.0.1 >/dev/null 2>&1; then echo VM-PING-OK; sleep 2; fi
done
"#
}

/// Paths inside the VMM's root.
const KERNEL: &str = "/vm/vmlinuz";
const INITRD: &str = "/vm/initrd";

fn copy_in(root: &Path, src: &str) {
    let dst = root.join(&src[1..]);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    if !dst.exists() {
        std::fs::copy(src, &dst).unwrap_or_else(|e| panic!("copying {src}: {e}"));
    }
}

/// The VMM's root: QEMU, its TCG module, their libraries, QEMU's firmware,
/// the guest's kernel and initramfs, and the mount points.
fn vmm_root(dir: &Path, img: &guest::GuestImage) -> PathBuf {
    let root = dir.join("vmm-root");
    for d in gateway::vmm::ROOT_MOUNT_POINTS.iter().chain(&["vm"]) {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for bin in [QEMU, TCG_MODULE] {
        copy_in(&root, bin);
        for lib in libraries(bin) {
            copy_in(&root, &lib);
        }
    }
    for e in std::fs::read_dir("/usr/share/qemu").unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            copy_in(&root, e.path().to_str().unwrap());
        }
    }
    // q35's firmware (TCG runs q35: `vmm::qemu_argv`).
    copy_in(&root, "/usr/share/seabios/bios-256k.bin");
    std::fs::copy(&img.kernel, root.join(&KERNEL[1..])).unwrap();
    std::fs::copy(&img.initrd, root.join(&INITRD[1..])).unwrap();
    root
}

struct Setup {
    root: PathBuf,
}

/// One guest and one VMM root for both tests.
fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        require_host();
        sweep("gateway-vmm-");
        let dir = std::env::temp_dir().join(format!("gateway-vmm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let img = guest::build_guest(
            &dir,
            &["virtio_pci", "failover", "net_failover", "virtio_net"],
            &["virtio_net"],
            Vec::new(),
            &init_script(),
        );
        Setup {
            root: vmm_root(&dir, &img),
        }
    })
}

struct Supervisor {
    child: Child,
    lines: Receiver<String>,
    log: Vec<String>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Closing stdin stops the VM; kill as a fallback.
        drop(self.child.stdin.take());
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Supervisor {
    fn start(root: &Path, port: &Path, uid: u32, extra: &[&str]) -> Supervisor {
        let mut child = Command::new(vm_unit_bin())
            .args(["--side", "black", "--root", root.to_str().unwrap()])
            .args(["--qemu", QEMU, "--kernel", KERNEL, "--initrd", INITRD])
            .args([
                "--append",
                "console=ttyS0 ipv6.disable=1 panic=-1 quiet loglevel=4",
                "--memory",
                "256",
            ])
            .args(["--port", port.to_str().unwrap(), "--uid", &uid.to_string()])
            .args(["--echo-port", "on"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("vm_unit");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Supervisor {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// The last line seen holding `what`.
    fn last(&self, what: &str) -> &str {
        self.log
            .iter()
            .rev()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} line"))
    }

    fn tail(&self) -> String {
        let n = self.log.len().saturating_sub(60);
        self.log[n..].join("\n")
    }

    /// Waits for a line containing `what`; returns it.
    fn wait_for(&mut self, what: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    assert!(
                        !l.contains("VM-FATAL") && !l.contains("Kernel panic"),
                        "guest failed:\n{}",
                        self.tail()
                    );
                    if l.contains(what) {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no line {what:?} within {} s; log:\n{}",
                    timeout.as_secs(),
                    self.tail()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("vm_unit exited before {what:?}; log:\n{}", self.tail())
                }
            }
        }
    }
}

fn started_pid(line: &str) -> i32 {
    line.split("VMM pid ")
        .nth(1)
        .and_then(|r| r.split([',', ' ']).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

fn after<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(key)
        .nth(1)
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .trim()
}

fn status_field(pid: i32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The VMM (QEMU, the only process of its PID namespace) as the host sees it.
fn check_jail(pid: i32, uid: u32) {
    let uids = status_field(pid, "Uid");
    assert!(
        uids.split_whitespace().all(|u| u == uid.to_string()),
        "VMM uids {uids}, planned {uid}"
    );
    for key in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(pid, key), "0000000000000000", "VMM {key}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2");
    let filters: u32 = status_field(pid, "Seccomp_filters").parse().unwrap();
    assert!(
        filters >= 3,
        "our two filters and QEMU's own sandbox: {filters}"
    );
    for ns in ["mnt", "pid", "net", "user", "ipc", "uts", "cgroup"] {
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let its = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_ne!(ours, its, "the VMM shares the {ns} namespace");
    }
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    assert_eq!(
        entries(&root),
        ["dev", "lib", "lib64", "proc", "run", "sys", "tmp", "usr", "vm"],
        "the VMM's root"
    );
    assert_eq!(
        entries(&root.join("dev")),
        ["full", "null", "random", "urandom", "zero"],
        "the VMM's /dev (TCG: no kvm)"
    );
    assert_eq!(entries(&root.join("run")), ["viaduct.sock"]);
    assert!(entries(&root.join("tmp")).is_empty());
    // No NIC passed through: nothing of sysfs at all.
    assert!(entries(&root.join("sys")).is_empty());
    // Read-only: even the host's root cannot write through the VMM's root
    // mount (a read-only bind).
    assert!(std::fs::write(root.join("vm/x"), b"x").is_err());
    // Its network namespace has nothing but a loopback.
    let net = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
    let links: Vec<&str> = net
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(links, ["lo"], "the VMM's network namespace");
}

#[test]
fn a_jailed_vm_reaches_its_port_and_is_restarted() {
    let s = setup();
    let _done = Done(s.root.parent().unwrap().to_owned());
    let uid = 1_400_000;
    let dir = s.root.parent().unwrap().join("t1");
    std::fs::create_dir_all(&dir).unwrap();
    let port = dir.join("black.sock");
    let mut sup = Supervisor::start(&s.root, &port, uid, &[]);
    let t0 = Instant::now();
    sup.wait_for("black: VM started", Duration::from_secs(10));
    let boot1 = after(
        &sup.wait_for("VM-BOOT-ID", Duration::from_secs(120)),
        "VM-BOOT-ID",
    )
    .to_owned();
    let host_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_ne!(boot1, host_boot.trim(), "the guest runs the host's kernel");
    let devices = sup.wait_for("VM-DEVICES", Duration::from_secs(10));
    assert_eq!(
        after(&devices, "VM-DEVICES"),
        "virtio=1 links=eth0,lo,",
        "the guest's virtio devices and interfaces: the port only (the nested test checks the microvm machine's devices)"
    );
    sup.wait_for("VM-PING-OK", Duration::from_secs(60));
    // The VM that answered (a boot stuck silent is killed and restarted by
    // the unit: `vmm::BOOT_SILENCE`).
    let pid = started_pid(sup.last("black: VM started"));
    eprintln!(
        "first boot to a ping answered: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    check_jail(pid, uid);

    // Killed: logged, restarted after the back-off, served again.
    gateway::sys::kill(pid, libc::SIGKILL).unwrap();
    sup.wait_for(
        "black: VM stopped: killed by signal 9",
        Duration::from_secs(10),
    );
    sup.wait_for("black: VM restart in ", Duration::from_secs(5));
    sup.wait_for("black: VM started", Duration::from_secs(10));
    let boot2 = after(
        &sup.wait_for("VM-BOOT-ID", Duration::from_secs(120)),
        "VM-BOOT-ID",
    )
    .to_owned();
    assert_ne!(boot1, boot2, "a restarted VM boots afresh");
    sup.wait_for("VM-PING-OK", Duration::from_secs(60));
    let pid2 = started_pid(sup.last("black: VM started"));
    assert_ne!(pid, pid2);
    check_jail(pid2, uid);
    drop(sup);
    // The VM is gone with its supervisor.
    assert!(
        !Path::new(&format!("/proc/{pid2}")).exists()
            || status_field(pid2, "State").starts_with('Z')
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_vmm_call_outside_its_allowlist_is_killed_logged_and_restarted() {
    let s = setup();
    let _done = Done(s.root.parent().unwrap().to_owned());
    let uid = 1_400_001;
    let dir = s.root.parent().unwrap().join("t2");
    std::fs::create_dir_all(&dir).unwrap();
    let port = dir.join("black.sock");
    let nr = libc::SYS_memfd_create.to_string();
    let mut sup = Supervisor::start(&s.root, &port, uid, &["--without-syscall", &nr]);
    for delay in [1, 2] {
        sup.wait_for("black: VM started", Duration::from_secs(10));
        sup.wait_for(
            "black: VM stopped: killed by SIGSYS: a system call outside the VMM's seccomp allowlist",
            Duration::from_secs(30),
        );
        sup.wait_for(
            &format!("black: VM restart in {delay} s"),
            Duration::from_secs(5),
        );
    }
    // The kernel's log names the call and the VMM's uid.
    match Command::new("dmesg").output() {
        Ok(o) if o.status.success() => {
            let log = String::from_utf8_lossy(&o.stdout);
            let want = format!("syscall={nr} ");
            assert!(
                log.lines()
                    .any(|l| l.contains(&format!("uid={uid} ")) && l.contains(&want)),
                "no seccomp record of uid {uid} and {want} in the kernel log"
            );
        }
        _ => eprintln!(
            "NOTE: dmesg is not readable here: the kernel's seccomp record is not checked"
        ),
    }
    drop(sup);
    let _ = std::fs::remove_dir_all(&dir);
}
