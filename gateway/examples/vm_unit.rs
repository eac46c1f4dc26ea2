//! Drives one [`gateway::vmm::VmUnit`] the way the init's supervision loop
//! does (single-threaded: the VMM is made with `clone`), for the host tests
//! in `tests/vmm.rs`: starts the VM, relays its console to stdout, reaps and
//! restarts it. Ends, killing the VM, when stdin closes.
//!
//! `vm_unit --side black --root DIR --qemu PATH --kernel PATH --initrd PATH
//!  --append TEXT --memory MIB --port SOCKET --uid UID [--without-syscall NR]`
//!
//! `--without-syscall` removes one number from the VMM's allowlist (the
//! negative test: a VMM making a call outside it is killed and restarted).

use gateway::console::Logger;
use gateway::plan::Side;
use gateway::sys;
use gateway::vmm::{vmm_filters_from, Accel, VmSpec, VmUnit, VMM_ALLOWLIST};
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
    let spec = VmSpec {
        side: if get("side") == "red" {
            Side::Red
        } else {
            Side::Black
        },
        root: PathBuf::from(get("root")),
        qemu: get("qemu"),
        kernel: get("kernel"),
        initrd: get("initrd"),
        append: get("append"),
        memory_mib: get("memory").parse().expect("--memory"),
        accel: Accel::Tcg,
        port: PathBuf::from(get("port")),
        port_mac: [0x02, 0x76, 0x64, 0, 0, 0x02],
        nic: None,
        uid: get("uid").parse().expect("--uid"),
        cgroup: a.get("cgroup").map(PathBuf::from),
    };
    let mut allow = VMM_ALLOWLIST.to_vec();
    if let Some(nr) = a.get("without-syscall") {
        let nr: i64 = nr.parse().expect("--without-syscall");
        allow.retain(|(n, _)| *n != nr);
    }
    let filters = vmm_filters_from(&allow).expect("filters");
    let mut log = Logger::new(vec![Box::new(std::io::stdout())]);
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
