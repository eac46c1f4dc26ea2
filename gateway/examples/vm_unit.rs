//! Drives one [`gateway::vmm::VmUnit`] the way the init's supervision loop
//! does (single-threaded: the VMM is made with `clone`), for the host and
//! nested tests in `tests/vmm.rs`: starts the VM, relays its console to
//! stdout, reaps and restarts it. Ends, killing the VM, when stdin closes.
//!
//! ```text
//! vm_unit --side black --root DIR --qemu PATH --kernel PATH --initrd PATH
//!   --append TEXT --memory MIB --port SOCKET --uid UID
//!   [--accel kvm|tcg] [--nic BDF] [--echo-port on] [--without-syscall NR]
//!   [--measure on]
//! ```
//! - `--nic BDF`: the NIC is checked and bound to `vfio-pci`
//!   ([`gateway::vfio::bind`]) and passed through; a refusal is printed
//!   (`vm_unit: refused: …`) and ends the program with status 2.
//! - `--echo-port on`: a process forked first serves the Viaduct's port
//!   code (`viaduct-vhost`) on `--port`, connectable by `--uid` only, and
//!   answers ICMP echo requests to 10.9.0.1 (the guest's pings).
//! - `--without-syscall NR`: one number less in the VMM's allowlist (the
//!   negative test: a VMM making a call outside it is killed and
//!   restarted).

use gateway::console::Logger;
use gateway::plan::Side;
use gateway::sys;
use gateway::vmm::{vmm_filters_from, Accel, Passthrough, VmSpec, VmUnit, VMM_ALLOWLIST};
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use viaduct_vhost::net::{PortShared, GUEST_MAC_BLACK, GUEST_MAC_RED, VIADUCT_MAC};

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The echo reply to an IPv4 ICMP echo request for 10.9.0.1, if `p` is one.
fn echo_reply(p: &[u8]) -> Option<Vec<u8>> {
    if p.len() < 28 || p[0] != 0x45 || p[9] != 1 || p[16..20] != [10, 9, 0, 1] || p[20] != 8 {
        return None;
    }
    let mut r = p.to_vec();
    r.copy_within(12..16, 16);
    r[12..16].copy_from_slice(&[10, 9, 0, 1]);
    r[8] = 64;
    r[10..12].fill(0);
    let c = checksum(&r[..20]);
    r[10..12].copy_from_slice(&c.to_be_bytes());
    r[20] = 0;
    r[22..24].fill(0);
    let c = checksum(&r[20..]);
    r[22..24].copy_from_slice(&c.to_be_bytes());
    Some(r)
}

/// Runs in a forked process: serves the port and answers pings; never
/// returns (dies with its parent).
fn echo_port(path: &Path, uid: u32, side: Side) -> ! {
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    let _ = std::fs::remove_file(path);
    let listener = viaduct_vhost::backend::listen(path).expect("listening on the port");
    // The VMM's uid must be able to connect; nobody else can.
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown port");
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod port");
    let mac = if side == Side::Red {
        GUEST_MAC_RED
    } else {
        GUEST_MAC_BLACK
    };
    let shared = PortShared::new(side.as_str(), mac, VIADUCT_MAC).expect("port");
    let control = shared.clone();
    std::thread::spawn(move || {
        let stop = AtomicBool::new(false);
        viaduct_vhost::backend::serve(listener, control, &stop)
    });
    let (mut tx, mut rx) = shared.halves();
    let mut buf = vec![0u8; 65536];
    let mut answered = 0u64;
    loop {
        {
            let (changed, kick) = tx.poll_fds();
            let fds: Vec<_> = [Some(changed), kick].into_iter().flatten().collect();
            let _ = sys::poll_readable(&fds, 100);
        }
        while let Ok(n) = tx.recv(&mut buf) {
            if let Some(r) = echo_reply(&buf[..n]) {
                if rx.send(&r).is_ok() {
                    answered += 1;
                    if answered.is_power_of_two() {
                        println!("port: {answered} echo requests answered");
                    }
                }
            }
        }
        tx.finish();
        rx.finish();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut a: BTreeMap<String, String> = BTreeMap::new();
    for pair in args.chunks(2) {
        if let [k, v] = pair {
            a.insert(k.trim_start_matches("--").to_owned(), v.clone());
        }
    }
    let get = |k: &str| {
        a.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("vm_unit: --{k} missing"))
    };
    let side = if get("side") == "red" {
        Side::Red
    } else {
        Side::Black
    };
    let uid: u32 = get("uid").parse().expect("--uid");
    let port = PathBuf::from(get("port"));
    if a.get("echo-port").map(String::as_str) == Some("on") {
        if sys::clone_fork(0).expect("fork") == 0 {
            echo_port(&port, uid, side);
        }
        let t0 = Instant::now();
        while !port.exists() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let mut log = Logger::new(vec![Box::new(std::io::stdout())]);
    let nic = a.get("nic").map(|bdf| {
        match gateway::vfio::bind(Path::new("/sys"), bdf, Duration::from_secs(10)) {
            Ok(g) => {
                log.log(&format!(
                    "vm_unit: NIC {bdf} bound to vfio-pci, IOMMU group {}",
                    g.group
                ));
                Passthrough {
                    pci: bdf.clone(),
                    group: g.group,
                }
            }
            Err(e) => {
                log.log(&format!("vm_unit: refused: {e}"));
                std::process::exit(2);
            }
        }
    });
    let spec = VmSpec {
        side,
        root: PathBuf::from(get("root")),
        qemu: get("qemu"),
        kernel: get("kernel"),
        initrd: get("initrd"),
        append: get("append"),
        memory_mib: get("memory").parse().expect("--memory"),
        accel: if a.get("accel").map(String::as_str) == Some("kvm") {
            Accel::Kvm
        } else {
            Accel::Tcg
        },
        port,
        port_mac: if side == Side::Red {
            GUEST_MAC_RED
        } else {
            GUEST_MAC_BLACK
        },
        nic: nic.map(gateway::vmm::GuestNic::Vfio),
        events: false,
        mgmt: None,
        uid,
        cgroup: a.get("cgroup").map(PathBuf::from),
    };
    let mut allow = VMM_ALLOWLIST.to_vec();
    if let Some(nr) = a.get("without-syscall") {
        let nr: i64 = nr.parse().expect("--without-syscall");
        allow.retain(|(n, _)| *n != nr);
    }
    // `--measure on`: calls outside the list are logged by the kernel, not
    // killed (how the allowlist is measured).
    let filters = if a.get("measure").map(String::as_str) == Some("on") {
        gateway::vmm::vmm_filters_with(&allow, seccompiler::SeccompAction::Log)
    } else {
        vmm_filters_from(&allow)
    }
    .expect("filters");
    let mut unit = VmUnit::new(spec, filters);
    let stdin = std::io::stdin();
    sys::set_nonblocking(stdin.as_fd(), true).expect("stdin non-blocking");
    loop {
        let now = Instant::now();
        unit.tick(now, &mut log);
        while let Ok(Some((pid, status))) = sys::reap_one() {
            unit.exited(pid, status, &mut log);
        }
        let mut fds = vec![stdin.as_fd()];
        if let Some(fd) = unit.console_fd() {
            fds.push(fd);
        }
        let ready = sys::poll_readable(&fds, 100).unwrap_or_default();
        if ready.first() == Some(&true) {
            let mut b = [0u8; 64];
            if matches!(std::io::Read::read(&mut stdin.lock(), &mut b), Ok(0)) {
                unit.stop();
                log.log("vm_unit: stdin closed, VM stopped");
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
        }
        unit.relay_console(Instant::now(), &mut log);
    }
}
