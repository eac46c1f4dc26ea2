//! The guest init: PID 1 of a personality's virtual machine (the `microvm`
//! runtime). The init's own binary, started by the guest kernel as
//! [`crate::vmm::GUEST_INIT`] (`rdinit=…`, its file name selects this mode)
//! with the side as its argument ([`crate::vmm::guest_append`]).
//!
//! What it does, in order:
//! 1. mounts `/proc`, `/sys`, `/dev`, `/run`, `/tmp`; says on the console
//!    which kernel and boot this is;
//! 2. loads the guest's modules, in the order [`GUEST_MODULES`] lists them
//!    (the NIC driver, virtio's network and console drivers);
//! 3. reads the runtime plan from [`crate::plan::PLAN_PATH`] (the image's
//!    plan, copied into the guest initramfs) and takes its side's
//!    compartment;
//! 4. names the interfaces as a compartment has them, so the personality's
//!    network setup runs unchanged: the Viaduct's port (found by its fixed
//!    MAC, [`crate::vmm::port_guest_mac`]) becomes
//!    [`crate::runtime::TUN_NAME`] with ARP off (the port has no link layer:
//!    the guest addresses every frame to itself), the one other card becomes
//!    the plan's NIC name;
//! 5. opens the event line (the virtio console `hvc0`, which the init reads)
//!    and removes its node, so that no service can open it again;
//! 6. installs the compartment's socket-family filter and runs the
//!    compartment init's loop ([`crate::cinit`]): setup, services, restarts,
//!    events (`up`, `setup done`, `error: …`) on the event line, service
//!    output on the console;
//! 7. when that loop ends, restarts the machine: the VMM exits
//!    (`-no-reboot`) and the init starts the VM again with back-off.
//!
//! Everything here runs inside the personality's own kernel: it is the
//! personality's, untrusted like it; the init believes nothing it says but
//! for what it reports.

use crate::plan::{Plan, Side, MAX_PLAN_LEN, PLAN_PATH};
use crate::sys;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The guest's kernel modules, one absolute path per line, in load order.
pub const GUEST_MODULES: &str = "/etc/appliance/guest-modules";
/// The event line's device (a virtio console).
pub const EVENT_DEVICE: &str = "/dev/hvc0";
/// How long the port, the NIC and the event line may take to appear.
const DEVICE_WAIT: Duration = Duration::from_secs(20);

fn say(line: &str) {
    let _ = writeln!(std::io::stdout(), "appliance-guest: {line}");
}

/// Entry point (never returns).
pub fn main(side: &str) -> ! {
    let code = run(side);
    say(&format!("stopping (code {code}): the VM restarts"));
    sys::sync();
    let _ = sys::reboot(libc::RB_AUTOBOOT);
    sys::exit_now(code)
}

fn load_modules() -> Result<usize, String> {
    let list = match std::fs::read_to_string(GUEST_MODULES) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("{GUEST_MODULES}: {e}")),
    };
    let mut n = 0;
    for m in list.lines().filter(|l| !l.is_empty()) {
        let f = std::fs::File::open(m).map_err(|e| format!("module {m}: {e}"))?;
        match sys::finit_module(f.as_fd()) {
            Ok(()) => n += 1,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(format!("loading module {m}: {e}")),
        }
    }
    Ok(n)
}

/// `(name, ifindex, mac)` of every interface but `lo`.
fn interfaces() -> Vec<(String, i32, String)> {
    let mut v = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return v;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "lo" {
            continue;
        }
        let read = |f: &str| {
            std::fs::read_to_string(e.path().join(f))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let Ok(index) = read("ifindex").parse::<i32>() else {
            continue;
        };
        v.push((name, index, read("address")));
    }
    v
}

/// Finds the port and the NIC and renames them (see the module docs).
fn name_interfaces(side: Side, nic: &str) -> Result<(), String> {
    let port_mac = crate::vmm::mac_text(&crate::vmm::port_guest_mac(side));
    let deadline = Instant::now() + DEVICE_WAIT;
    let (port, card) = loop {
        let all = interfaces();
        let port = all.iter().find(|i| i.2 == port_mac).cloned();
        let others: Vec<_> = all.iter().filter(|i| i.2 != port_mac).cloned().collect();
        match (port, others.len()) {
            (Some(p), 1) => break (p, others[0].clone()),
            (p, n) if Instant::now() >= deadline => {
                return Err(format!(
                    "interfaces: the port ({port_mac}) {}, {n} other cards (want 1): {}",
                    if p.is_some() { "present" } else { "missing" },
                    all.iter()
                        .map(|i| format!("{} {}", i.0, i.2))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let noarp = libc::IFF_NOARP as u32;
    crate::nic::request(&crate::nic::set_link_request(
        1,
        port.1,
        noarp,
        noarp,
        Some(crate::runtime::TUN_NAME),
    ))
    .map_err(|e| format!("naming the port {}: {e}", port.0))?;
    crate::nic::request(&crate::nic::set_link_request(2, card.1, 0, 0, Some(nic)))
        .map_err(|e| format!("naming the NIC {}: {e}", card.0))?;
    say(&format!(
        "port {} ({port_mac}) is {}, arp off; nic {} ({}) is {nic}",
        port.0,
        crate::runtime::TUN_NAME,
        card.0,
        card.2
    ));
    Ok(())
}

fn run(side: &str) -> i32 {
    let failures = crate::pid1::mount_early();
    let tmp = sys::mount(
        "tmpfs",
        "/tmp",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=1777",
    );
    for f in failures {
        say(&format!("warning: {f}"));
    }
    if let Err(e) = tmp {
        say(&format!("warning: mounting /tmp: {e}"));
    }
    let side = match side {
        "red" => Side::Red,
        "black" => Side::Black,
        other => {
            say(&format!("error: unknown side {other:?}"));
            return 111;
        }
    };
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    say(&format!(
        "{side}: kernel {}, boot {}",
        read("/proc/sys/kernel/osrelease"),
        read("/proc/sys/kernel/random/boot_id")
    ));
    match load_modules() {
        Ok(n) => say(&format!("{n} modules loaded")),
        Err(e) => {
            say(&format!("error: {e}"));
            return 111;
        }
    }
    let mut bytes = Vec::new();
    if let Err(e) = std::fs::File::open(PLAN_PATH)
        .and_then(|f| f.take(MAX_PLAN_LEN as u64 + 1).read_to_end(&mut bytes))
    {
        say(&format!("error: {PLAN_PATH}: {e}"));
        return 111;
    }
    let plan = match Plan::decode(&bytes) {
        Ok(p) => p,
        Err(e) => {
            say(&format!("error: {PLAN_PATH}: {e}"));
            return 111;
        }
    };
    let Some(c) = plan.compartments.iter().find(|c| c.side == side) else {
        say(&format!("error: the plan has no {side} compartment"));
        return 111;
    };
    if let Err(e) = name_interfaces(side, c.nic.as_str()) {
        say(&format!("error: {e}"));
        return 111;
    }
    // The event line, then its node removed: services get descriptors 0-2
    // only and cannot open it again (CAP_MKNOD is in no bounding set the
    // plan gives).
    let deadline = Instant::now() + DEVICE_WAIT;
    let events = loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(EVENT_DEVICE)
        {
            Ok(f) => break f,
            Err(e) if Instant::now() >= deadline => {
                say(&format!("error: the event line {EVENT_DEVICE}: {e}"));
                return 111;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let _ = std::fs::remove_file(EVENT_DEVICE);
    // Descriptors as the compartment init expects them: 0 /dev/null, 1 and 2
    // the console, 3 the event line, 4 the plan.
    let (plan_r, plan_w) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => {
            say(&format!("error: pipe: {e}"));
            return 111;
        }
    };
    let mut w = std::fs::File::from(plan_w);
    // At most 64 KiB: a pipe holds it without a reader.
    if let Err(e) = w.write_all(&bytes) {
        say(&format!("error: the plan's pipe: {e}"));
        return 111;
    }
    drop(w);
    let devnull = match std::fs::File::open("/dev/null") {
        Ok(f) => f,
        Err(e) => {
            say(&format!("error: /dev/null: {e}"));
            return 111;
        }
    };
    // The originals are moved out of the way first: one of them may be 3 or 4.
    let arranged = (|| -> std::io::Result<()> {
        let ev = sys::dup_above(events.as_fd(), 100)?;
        drop(events);
        let plan = sys::dup_above(plan_r.as_fd(), 100)?;
        drop(plan_r);
        let null = sys::dup_above(devnull.as_fd(), 100)?;
        drop(devnull);
        sys::dup2(null.as_fd(), 0)?;
        sys::dup2(ev.as_fd(), 3)?;
        sys::dup2(plan.as_fd(), 4)?;
        Ok(())
    })();
    if let Err(e) = arranged {
        say(&format!("error: arranging descriptors: {e}"));
        return 111;
    }
    match crate::confine::personality_filters(&c.socket_families)
        .and_then(|f| crate::confine::apply_filters(&f))
    {
        Ok(()) => {}
        Err(e) => {
            say(&format!("error: socket-family filter: {e}"));
            return 111;
        }
    }
    // Black's management relay goes over the VM's serial port, when the VMM
    // was given one.
    let relay = match side {
        Side::Black => match crate::mgmtlink::find_port(Path::new("/sys")) {
            Some(dev) => {
                say(&format!("management link on {}", dev.display()));
                crate::cinit::MgmtRelay::Serial(dev)
            }
            None => {
                say("no management link: no updates or attestation through black");
                crate::cinit::MgmtRelay::Off
            }
        },
        Side::Red => crate::cinit::MgmtRelay::Off,
    };
    crate::cinit::run_in(side.as_str(), relay)
}
