//! The `microvm` runtime's VMM compartment: a personality's virtual machine
//! monitor (Debian's QEMU) run **as untrusted as the personality it hosts**.
//!
//! A guest that escapes into its VMM must gain nothing it did not already
//! have. So the VMM process ([`spawn`]):
//! - runs in its own user namespace (its root ↦ one unprivileged host uid,
//!   nothing else mapped), mount, PID, network (only a down `lo`), IPC, UTS
//!   and cgroup namespaces, in the personality's cgroup;
//! - sees a read-only root holding only QEMU, its libraries and firmware and
//!   the guest's kernel and initramfs ([`VmSpec::root`]); a `/dev` with
//!   `null`, `zero`, `full`, `random`, `urandom` and, when it needs them,
//!   `kvm` and its own VFIO group; a `/run` holding only the Viaduct's
//!   vhost-user socket for its side ([`PORT_IN_JAIL`]); a fresh `/proc` of
//!   its own PID namespace and an empty `/tmp`;
//! - has no capability (empty bounding, inheritable and ambient sets),
//!   `no_new_privs`, and our seccomp allowlist ([`vmm_filters`]); QEMU's own
//!   `-sandbox on` with every group denied is installed on top by QEMU;
//! - receives only `/dev/null` as stdin and the console pipe as stdout and
//!   stderr: the guest's serial console, which the init relays line by line
//!   like a compartment's output.
//!
//! The guest's network card toward the Viaduct is a vhost-user-net device
//! (`-netdev vhost-user`): its queues live in guest memory (a sealed memfd,
//! `share=on`) which the Viaduct maps, so packets go between the guest and
//! the Viaduct without the VMM. The NIC, when the plan passes one through,
//! is a `vfio-pci` device whose IOMMU group the init checked and bound first
//! ([`crate::vfio`]).
//!
//! The init must be single-threaded when it calls [`spawn`] (the child is made
//! with `clone`, like `fork`).

use crate::confine::{self, ConfineError};
use crate::console::{LineSplitter, Logger, RateLimit};
use crate::error::{Error, Result};
use crate::plan::Side;
use crate::sys;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the Viaduct's vhost-user socket appears inside the VMM's root.
pub const PORT_IN_JAIL: &str = "/run/viaduct.sock";

/// The guest's MAC on its Viaduct port (the port's fixed guest MAC,
/// `viaduct_vhost::net::GUEST_MAC_RED` / `GUEST_MAC_BLACK`): how the guest
/// init tells the port from the NIC.
pub fn port_guest_mac(side: Side) -> [u8; 6] {
    [
        0x02,
        0x76,
        0x64,
        0,
        0,
        if side == Side::Red { 1 } else { 2 },
    ]
}

/// Where the guest init is in a personality's guest initramfs (the init's
/// own binary; its file name selects the mode).
pub const GUEST_INIT: &str = "/usr/lib/appliance/appliance-guest";

/// The guest kernel's command line: the serial console, a kernel panic
/// ends the VM at once (the VMM exits, `-no-reboot`, and the init restarts
/// it), the guest init with its side.
pub fn guest_append(side: Side) -> String {
    format!(
        "console=ttyS0 quiet panic=-1 rdinit={GUEST_INIT} -- {}",
        side.as_str()
    )
}

/// Mount points the VMM's root must hold (created by the image builder).
pub const ROOT_MOUNT_POINTS: [&str; 5] = ["dev", "proc", "run", "sys", "tmp"];

/// Whether `s` is a PCI address `dddd:bb:dd.f` (hexadecimal digits), the
/// only form a passed-through NIC's address takes in paths.
pub fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b':',
            10 => c == b'.',
            _ => c.is_ascii_hexdigit(),
        })
}

/// How the guest's CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// KVM: the guest's instructions run on the CPU; `/dev/kvm` is shown.
    Kvm,
    /// QEMU's emulator (tests on hosts without KVM; no `/dev/kvm`).
    Tcg,
}

/// A NIC given to the guest with VFIO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passthrough {
    /// Its PCI address, `0000:01:00.0`.
    pub pci: String,
    /// Its IOMMU group (`/dev/vfio/<group>`), which holds nothing else
    /// ([`crate::vfio::check_passthrough`]).
    pub group: u32,
}

/// A macvtap queue on the NIC: the NIC's driver stays in the host kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Macvtap {
    /// The queue's character device (`/dev/tapN`), a node the init made
    /// for this VMM's uid alone (mode 0600); shown in the jail as
    /// [`TAP_IN_JAIL`] and opened there before QEMU starts.
    pub node: PathBuf,
    /// The macvtap's MAC (passthru mode: the NIC's own), which the guest's
    /// card must carry.
    pub mac: [u8; 6],
}

/// How the NIC reaches the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestNic {
    /// Passed through with VFIO.
    Vfio(Passthrough),
    /// A macvtap queue.
    Macvtap(Macvtap),
}

/// Where black's management link socket appears in the VMM's root.
pub const MGMT_IN_JAIL: &str = "/run/mgmt.sock";
/// Where a macvtap queue's node appears in the VMM's root.
pub const TAP_IN_JAIL: &str = "/dev/tap";
/// QEMU's descriptor for the guest's event line (the guest init's
/// virtio console, `hvc0`): a pipe to the init.
pub const EVENTS_FD: i32 = 3;
/// QEMU's descriptor for the macvtap queue.
pub const TAP_FD: i32 = 4;

/// One personality's virtual machine.
#[derive(Clone, Debug)]
pub struct VmSpec {
    /// Red or black.
    pub side: Side,
    /// The VMM's root directory: QEMU, its libraries and firmware, the
    /// guest's kernel and initramfs, and the mount points
    /// [`ROOT_MOUNT_POINTS`]. Mounted read-only.
    pub root: PathBuf,
    /// QEMU's path inside the root.
    pub qemu: String,
    /// The guest kernel's path inside the root.
    pub kernel: String,
    /// The guest initramfs's path inside the root.
    pub initrd: String,
    /// The guest kernel's command line.
    pub append: String,
    /// Guest memory, MiB.
    pub memory_mib: u32,
    /// KVM or TCG.
    pub accel: Accel,
    /// The Viaduct's vhost-user socket for this side (host path). It must be
    /// connectable by [`VmSpec::uid`].
    pub port: PathBuf,
    /// The guest's MAC on the Viaduct's port (the port's fixed guest MAC).
    pub port_mac: [u8; 6],
    /// The NIC, if any.
    pub nic: Option<GuestNic>,
    /// Whether the guest gets an event line (a virtio console whose output
    /// the init reads: the guest init's `up`, `setup done`, `error: …`).
    pub events: bool,
    /// Black's management link: the host socket (listening, the init's
    /// bridge behind it) QEMU connects a virtio serial port named
    /// [`crate::mgmtlink::PORT_NAME`] to; shown in the jail as
    /// [`MGMT_IN_JAIL`].
    pub mgmt: Option<PathBuf>,
    /// The host uid and gid the VMM runs as (its user namespace maps its
    /// root to this id alone).
    pub uid: u32,
    /// The cgroup the VMM joins (created and limited by the caller).
    pub cgroup: Option<PathBuf>,
}

/// `xx:xx:xx:xx:xx:xx`, lower-case.
pub(crate) fn mac_text(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// QEMU's command line for `spec` (paths inside the VMM's root).
///
/// - Under KVM, `-machine microvm`: no firmware tables, no legacy devices
///   but the serial console; with a passed-through NIC, `pcie=on` (VFIO
///   needs a PCIe host bridge) and ACPI for its interrupts. The port is
///   `virtio-net-device` (virtio-mmio).
/// - Under TCG (hosts without KVM: the tests), `-machine q35` with the port
///   as `virtio-net-pci` on legacy interrupts (`vectors=0`: QEMU 7.2 under
///   TCG crashes starting a vhost-user device with MSI-X). On a loaded host
///   `microvm` under TCG left about one boot in eight, and most under heavy
///   load, spinning before the guest kernel's first message; q35 does not
///   (docs/design/microvm.md).
/// - Guest memory is a sealed memfd shared with the Viaduct
///   (`memory-backend-memfd,share=on`): the vhost-user port maps it.
/// - The Viaduct's port carries the port's fixed guest MAC.
/// - `-sandbox on` with every optional group denied: QEMU's own seccomp
///   filter, on top of ours.
pub fn qemu_argv(spec: &VmSpec) -> Vec<String> {
    let tcg = spec.accel == Accel::Tcg;
    let mut machine = if tcg { "q35" } else { "microvm" }.to_owned() + ",memory-backend=mem";
    if matches!(spec.nic, Some(GuestNic::Vfio(_))) && !tcg {
        machine.push_str(",pcie=on,acpi=on");
    }
    let mut v: Vec<String> = vec![
        spec.qemu.clone(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-nographic".into(),
        "-machine".into(),
        machine,
        "-accel".into(),
        match spec.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
        .into(),
        "-smp".into(),
        "1".into(),
        "-m".into(),
        format!("{}M", spec.memory_mib),
        "-object".into(),
        format!(
            "memory-backend-memfd,id=mem,size={}M,share=on",
            spec.memory_mib
        ),
        "-kernel".into(),
        spec.kernel.clone(),
        "-initrd".into(),
        spec.initrd.clone(),
        "-append".into(),
        spec.append.clone(),
        "-serial".into(),
        "stdio".into(),
        "-monitor".into(),
        "none".into(),
        "-no-reboot".into(),
        "-chardev".into(),
        format!("socket,id=viaduct,path={PORT_IN_JAIL}"),
        "-netdev".into(),
        "vhost-user,id=viaduct,chardev=viaduct".into(),
        "-device".into(),
        if tcg {
            format!(
                "virtio-net-pci,netdev=viaduct,mac={},vectors=0,romfile=",
                mac_text(&spec.port_mac)
            )
        } else {
            format!(
                "virtio-net-device,netdev=viaduct,mac={}",
                mac_text(&spec.port_mac)
            )
        },
    ];
    if spec.accel == Accel::Kvm {
        // Under TCG QEMU's default model; `max` there now and then leaves a
        // guest spinning in early boot (measured under load).
        v.push("-cpu".into());
        v.push("host".into());
    }
    match &spec.nic {
        Some(GuestNic::Vfio(nic)) => {
            v.push("-device".into());
            v.push(format!("vfio-pci,host={}", nic.pci));
        }
        Some(GuestNic::Macvtap(m)) => {
            v.push("-netdev".into());
            v.push(format!("tap,id=nic,fd={TAP_FD},vhost=off"));
            v.push("-device".into());
            v.push(if tcg {
                format!(
                    "virtio-net-pci,netdev=nic,mac={},romfile=",
                    mac_text(&m.mac)
                )
            } else {
                format!("virtio-net-device,netdev=nic,mac={}", mac_text(&m.mac))
            });
        }
        None => {}
    }
    if spec.events || spec.mgmt.is_some() {
        v.push("-device".into());
        v.push(
            if tcg {
                "virtio-serial-pci"
            } else {
                "virtio-serial-device"
            }
            .into(),
        );
    }
    if spec.events {
        // The pipe is reopened through /proc (QEMU's `file` back end opens a
        // path); output only: nothing the init sends reaches the guest.
        v.push("-chardev".into());
        v.push(format!("file,id=events,path=/proc/self/fd/{EVENTS_FD}"));
        v.push("-device".into());
        v.push("virtconsole,chardev=events".into());
    }
    if spec.mgmt.is_some() {
        // Reconnects a second after the init's bridge drops the link.
        v.push("-chardev".into());
        v.push(format!("socket,id=mgmt,path={MGMT_IN_JAIL},reconnect=1"));
        v.push("-device".into());
        v.push(format!(
            "virtserialport,chardev=mgmt,name={}",
            crate::mgmtlink::PORT_NAME
        ));
    }
    v.push("-sandbox".into());
    v.push("on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny".into());
    v
}

/// System calls the VMM may make, each with why. Every other number kills
/// the VMM (`SECCOMP_RET_KILL_PROCESS`); the init logs it and restarts the
/// VM. Measured with `strace -f` on Debian 12's QEMU 7.2 booting a guest
/// under this module's command line (docs/design/microvm.md lists the
/// measurement).
pub const VMM_ALLOWLIST: &[(i64, &str)] = &[
    (
        libc::SYS_read,
        "device emulation, eventfds, the vhost-user socket",
    ),
    (libc::SYS_write, "the console, eventfds"),
    (libc::SYS_writev, "the console"),
    (libc::SYS_readv, "the console's input (/dev/null)"),
    (
        libc::SYS_pread64,
        "loading the kernel and initramfs; VFIO config space",
    ),
    (
        libc::SYS_pwrite64,
        "VFIO config space writes (measured under KVM)",
    ),
    (libc::SYS_lseek, "loading the kernel and initramfs"),
    (libc::SYS_openat, "its root's files at start-up"),
    (libc::SYS_close, "descriptors"),
    (libc::SYS_newfstatat, "the C library's stat"),
    (libc::SYS_fstatfs, "memory backends"),
    (libc::SYS_statfs, "memory backends"),
    (libc::SYS_access, "the dynamic loader"),
    (libc::SYS_readlink, "QEMU's own path"),
    (libc::SYS_getdents64, "reading directories at start-up"),
    (libc::SYS_fcntl, "descriptor flags"),
    (libc::SYS_fchdir, "start-up"),
    (
        libc::SYS_execve,
        "starting QEMU itself (QEMU's sandbox forbids it afterwards)",
    ),
    (libc::SYS_brk, "the heap"),
    (libc::SYS_mmap, "memory, guest RAM, the libraries"),
    (libc::SYS_munmap, "memory"),
    (libc::SYS_mprotect, "the dynamic loader, TCG's code buffer"),
    (libc::SYS_madvise, "guest RAM"),
    (libc::SYS_memfd_create, "guest RAM shared with the Viaduct"),
    (libc::SYS_ftruncate, "sizing the guest RAM memfd"),
    (libc::SYS_get_mempolicy, "memory backends"),
    (libc::SYS_set_mempolicy, "memory backends"),
    (libc::SYS_clone, "vCPU and worker threads"),
    (libc::SYS_clone3, "vCPU and worker threads"),
    (
        libc::SYS_exit,
        "a thread ending (QEMU's thread-pool workers end after being idle)",
    ),
    (libc::SYS_exit_group, "leaving"),
    (libc::SYS_futex, "locks"),
    (libc::SYS_set_robust_list, "threads"),
    (libc::SYS_set_tid_address, "threads"),
    (libc::SYS_rseq, "threads"),
    (libc::SYS_gettid, "threads"),
    (libc::SYS_getpid, "VFIO start-up (measured under KVM)"),
    (libc::SYS_arch_prctl, "thread-local storage"),
    (libc::SYS_prctl, "thread names, installing its own sandbox"),
    (
        libc::SYS_seccomp,
        "installing its own sandbox (-sandbox on)",
    ),
    (libc::SYS_prlimit64, "start-up"),
    (libc::SYS_sched_getaffinity, "counting CPUs"),
    (libc::SYS_sysinfo, "memory size"),
    (libc::SYS_getrandom, "random numbers"),
    (libc::SYS_rt_sigaction, "signal handlers"),
    (libc::SYS_rt_sigprocmask, "signal masks"),
    (libc::SYS_rt_sigreturn, "signal handlers"),
    (libc::SYS_signalfd4, "the main loop's signals"),
    (libc::SYS_eventfd2, "notifiers, vhost-user kicks and calls"),
    (libc::SYS_ppoll, "the main loop"),
    (libc::SYS_clock_nanosleep, "timers"),
    (
        libc::SYS_clock_gettime,
        "the clock, where the vDSO falls back to the kernel (KVM guest clocks)",
    ),
    (
        libc::SYS_gettimeofday,
        "the clock, where the vDSO falls back to the kernel",
    ),
    (
        libc::SYS_tgkill,
        "kicking its own vCPU threads out of KVM_RUN (SIG_IPI)",
    ),
    (libc::SYS_uname, "KVM and VFIO start-up (kernel release)"),
    (
        libc::SYS_io_uring_setup,
        "probing io_uring (refused by the kernel or unused)",
    ),
    (
        libc::SYS_socket,
        "the vhost-user socket (AF_UNIX only, checked)",
    ),
    (libc::SYS_connect, "the vhost-user socket"),
    (libc::SYS_getsockname, "the vhost-user socket"),
    (libc::SYS_getpeername, "the vhost-user socket"),
    (libc::SYS_setsockopt, "the vhost-user socket"),
    (libc::SYS_sendmsg, "vhost-user requests with descriptors"),
    (libc::SYS_recvmsg, "vhost-user replies"),
    (
        libc::SYS_ioctl,
        "KVM, VFIO and terminal requests only (checked)",
    ),
];

/// `ioctl` types the VMM may use: KVM (`0xAE`) and VFIO (`';'`), by the
/// request's type byte; and a few terminal and descriptor requests.
pub const VMM_IOCTL_TYPES: &[(u32, &str)] = &[(0xAE, "KVM"), (0x3B, "VFIO")];

/// Single `ioctl` requests the VMM may make.
pub const VMM_IOCTLS: &[(u32, &str)] = &[
    (
        0x5401,
        "TCGETS: is the console a terminal (it never is: no terminal is shown)",
    ),
    (
        0x5402,
        "TCSETS: QEMU's stdio console sets raw mode (ENOTTY on a pipe)",
    ),
    (0x5421, "FIONBIO: non-blocking descriptors"),
    (0x5451, "FIOCLEX: close-on-exec"),
    (0x5413, "TIOCGWINSZ: the console's size"),
    // The macvtap queue (`-netdev tap,fd=4`): what QEMU 7.2 was measured to
    // use on it (`strace -f` of the init, a guest booting and carrying
    // traffic, docs/design/microvm.md). None of them creates or moves an
    // interface (TUNSETIFF is not here, and no VMM is shown /dev/net/tun).
    (
        0x800454d2,
        "TUNGETIFF: the queue's flags (vnet header, multiqueue)",
    ),
    (0x400454d0, "TUNSETOFFLOAD: offloads of the macvtap queue"),
    (0x800454d7, "TUNGETVNETHDRSZ: the vnet header's size"),
    (0x400454d8, "TUNSETVNETHDRSZ: the vnet header's size"),
    (0x400454d4, "TUNSETSNDBUF: the queue's send buffer"),
];

fn err(detail: impl ToString) -> ConfineError {
    ConfineError {
        step: "vmm seccomp",
        detail: detail.to_string(),
    }
}

fn cond(
    arg: u8,
    op: SeccompCmpOp,
    value: u32,
) -> std::result::Result<SeccompCondition, ConfineError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, u64::from(value)).map_err(err)
}

/// The VMM's filters from an allowlist (normally [`VMM_ALLOWLIST`]): every
/// number outside it kills the process; `socket` only `AF_UNIX`; `ioctl`
/// only [`VMM_IOCTL_TYPES`] and [`VMM_IOCTLS`]; and [`confine::abi_guard`].
pub fn vmm_filters_from(
    allow: &[(i64, &str)],
) -> std::result::Result<Vec<BpfProgram>, ConfineError> {
    vmm_filters_with(allow, SeccompAction::KillProcess)
}

/// [`vmm_filters_from`] with another verdict for calls outside the list:
/// `SeccompAction::Log` lets them through and has the kernel log each one
/// (`type=1326 … syscall=N`), which is how the list is measured (see
/// docs/design/microvm.md); never used to run a personality.
pub fn vmm_filters_with(
    allow: &[(i64, &str)],
    outside: SeccompAction,
) -> std::result::Result<Vec<BpfProgram>, ConfineError> {
    use SeccompCmpOp::{Eq, MaskedEq};
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (nr, _) in allow {
        let r = match *nr {
            libc::SYS_socket => {
                vec![SeccompRule::new(vec![cond(0, Eq, libc::AF_UNIX as u32)?]).map_err(err)?]
            }
            libc::SYS_ioctl => {
                let mut r = Vec::new();
                for (ty, _) in VMM_IOCTL_TYPES {
                    r.push(
                        SeccompRule::new(vec![cond(1, MaskedEq(0xff00), ty << 8)?]).map_err(err)?,
                    );
                }
                for (req, _) in VMM_IOCTLS {
                    r.push(SeccompRule::new(vec![cond(1, Eq, *req)?]).map_err(err)?);
                }
                r
            }
            _ => Vec::new(),
        };
        rules.insert(*nr, r);
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(err)?;
    let filter = SeccompFilter::new(rules, outside, SeccompAction::Allow, arch).map_err(err)?;
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| err(e))?;
    Ok(vec![program, confine::abi_guard()])
}

/// The VMM's filters ([`VMM_ALLOWLIST`]).
pub fn vmm_filters() -> std::result::Result<Vec<BpfProgram>, ConfineError> {
    vmm_filters_from(VMM_ALLOWLIST)
}

/// What a VMM's wait status means, for the log.
pub fn describe_exit(status: libc::c_int) -> String {
    if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS {
        "killed by SIGSYS: a system call outside the VMM's seccomp allowlist (the kernel log names it)"
            .to_owned()
    } else {
        crate::runtime::describe_status(status)
    }
}

/// A started VMM.
pub struct VmChild {
    /// Its pid (PID 1 of its own PID namespace).
    pub pid: libc::pid_t,
    /// The read end of its console (QEMU's stdout and stderr: the guest's
    /// serial console and QEMU's own messages).
    pub console: OwnedFd,
    /// The read end of the guest's event line (with [`VmSpec::events`]).
    pub events: Option<OwnedFd>,
}

fn cerr(name: &'static str, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Compartment { name, what, source }
}

/// Everything the child needs, prepared before `clone` (the child allocates
/// as little as possible).
struct Child<'a> {
    spec: &'a VmSpec,
    root: String,
    argv: Vec<String>,
    filters: &'a [BpfProgram],
    user: OwnedFd,
    net: OwnedFd,
    uts: OwnedFd,
    ipc: OwnedFd,
    devnull: OwnedFd,
    console_w: OwnedFd,
    /// The event line's write end (with [`VmSpec::events`]).
    events_w: Option<OwnedFd>,
}

fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(text.as_bytes())
}

/// Checks what the VMM's root must hold before anything is started, naming
/// what is missing.
pub fn check_root(spec: &VmSpec) -> std::result::Result<(), String> {
    for d in ROOT_MOUNT_POINTS {
        let p = spec.root.join(d);
        if !p.is_dir() {
            return Err(format!("the VMM's root has no mount point {}", p.display()));
        }
    }
    for (what, p) in [
        ("QEMU", &spec.qemu),
        ("the guest kernel", &spec.kernel),
        ("the guest initramfs", &spec.initrd),
    ] {
        let full = spec.root.join(p.trim_start_matches('/'));
        if !full.is_file() {
            return Err(format!(
                "{what} is not in the VMM's root: {}",
                full.display()
            ));
        }
    }
    if let Some(GuestNic::Vfio(nic)) = &spec.nic {
        if !is_pci_address(&nic.pci) {
            return Err(format!(
                "the NIC's PCI address {:?} is not of the form 0000:01:00.0",
                nic.pci
            ));
        }
    }
    if !p_exists(&spec.port) {
        return Err(format!(
            "the Viaduct's port {} does not exist",
            spec.port.display()
        ));
    }
    Ok(())
}

/// Lets the VMM's uid open the devices it is shown: `/dev/kvm` for
/// everyone (as Debian's udev rules have it: KVM is made for unprivileged
/// use; what a VMM can do with it is confined to its own VM), the NIC's VFIO
/// group for this VMM's uid alone.
fn grant_devices(spec: &VmSpec) -> std::result::Result<(), String> {
    if spec.accel == Accel::Kvm {
        std::fs::set_permissions("/dev/kvm", std::fs::Permissions::from_mode(0o666))
            .map_err(|e| format!("/dev/kvm: {e} (is the kvm module loaded?)"))?;
    }
    if let Some(GuestNic::Vfio(nic)) = &spec.nic {
        let group = format!("/dev/vfio/{}", nic.group);
        sys::chown(&group, spec.uid, spec.uid)
            .and_then(|()| std::fs::set_permissions(&group, std::fs::Permissions::from_mode(0o600)))
            .map_err(|e| format!("{group} (NIC {}): {e}", nic.pci))?;
    }
    Ok(())
}

fn p_exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Starts `spec`'s VMM, confined (see the module docs), with `filters`
/// (normally [`vmm_filters`]).
pub fn spawn(spec: &VmSpec, filters: &[BpfProgram]) -> Result<VmChild> {
    let name = spec.side.as_str();
    let vm_err = |problem: String| Error::Vm {
        side: name,
        problem,
    };
    check_root(spec).map_err(vm_err)?;
    let root = spec
        .root
        .to_str()
        .ok_or_else(|| {
            vm_err(format!(
                "the VMM's root {} is not UTF-8",
                spec.root.display()
            ))
        })?
        .to_owned();
    grant_devices(spec).map_err(vm_err)?;
    let ns = holder_namespaces(name, spec.uid)?;
    let devnull = File::open("/dev/null")
        .map(OwnedFd::from)
        .map_err(cerr(name, "opening /dev/null"))?;
    let (console_r, console_w) = sys::pipe().map_err(cerr(name, "console pipe"))?;
    let (events_r, events_w) = if spec.events {
        let (r, w) = sys::pipe().map_err(cerr(name, "event pipe"))?;
        // QEMU reopens the write end through /proc (its `file` back end opens
        // a path): the pipe is made the VMM's.
        sys::fchown(w.as_fd(), spec.uid, spec.uid).map_err(cerr(name, "event pipe owner"))?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let child = Child {
        spec,
        root,
        argv: qemu_argv(spec),
        filters,
        user: ns.0,
        net: ns.1,
        uts: ns.2,
        ipc: ns.3,
        devnull,
        console_w,
        events_w,
    };
    let pid = sys::clone_fork(libc::CLONE_NEWNS | libc::CLONE_NEWPID)
        .map_err(cerr(name, "clone (VMM)"))?;
    if pid == 0 {
        drop((console_r, events_r));
        vmm_child(child);
    }
    drop(child);
    Ok(VmChild {
        pid,
        console: console_r,
        events: events_r,
    })
}

/// User (root ↦ `uid`, one id), network, UTS and IPC namespaces, made by a
/// short-lived holder process.
fn holder_namespaces(name: &'static str, uid: u32) -> Result<(OwnedFd, OwnedFd, OwnedFd, OwnedFd)> {
    let (r, w) = sys::pipe().map_err(cerr(name, "pipe"))?;
    let flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    let pid = sys::clone_fork(flags).map_err(cerr(name, "clone (VMM namespaces)"))?;
    if pid == 0 {
        drop(w);
        let mut f = File::from(r);
        let mut b = [0u8; 1];
        let _ = std::io::Read::read(&mut f, &mut b);
        sys::exit_now(0);
    }
    drop(r);
    let result = (|| {
        let map = format!("0 {uid} 1\n");
        write_file(Path::new(&format!("/proc/{pid}/uid_map")), &map)
            .map_err(cerr(name, "writing the VMM's uid_map"))?;
        write_file(Path::new(&format!("/proc/{pid}/setgroups")), "deny")
            .map_err(cerr(name, "denying setgroups to the VMM"))?;
        write_file(Path::new(&format!("/proc/{pid}/gid_map")), &map)
            .map_err(cerr(name, "writing the VMM's gid_map"))?;
        let open = |ns: &str| -> Result<OwnedFd> {
            File::open(format!("/proc/{pid}/ns/{ns}"))
                .map(OwnedFd::from)
                .map_err(cerr(name, format!("opening the VMM's {ns} namespace")))
        };
        Ok((open("user")?, open("net")?, open("uts")?, open("ipc")?))
    })();
    drop(w);
    let _ = sys::wait_for(pid);
    result
}

fn report_and_exit(out: BorrowedFd<'_>, step: &str, e: impl std::fmt::Display) -> ! {
    let msg = format!("appliance-vmm: error: {step}: {e}\n");
    if let Ok(dup) = out.try_clone_to_owned() {
        let _ = File::from(dup).write_all(msg.as_bytes());
    }
    sys::exit_now(111);
}

/// Binds the host node `src` onto a new empty file `dst` (a mount point).
fn bind_node(src: &str, dst: &str) -> std::io::Result<()> {
    File::create(dst)?;
    sys::mount(src, dst, "", libc::MS_BIND, "")
}

/// Runs in the cloned child (PID 1 of a new PID namespace, real root, new
/// mount namespace). Never returns: executes QEMU or exits 111.
fn vmm_child(c: Child<'_>) -> ! {
    let out = c.console_w.as_fd();
    let step = |what: &str, r: std::io::Result<()>| {
        if let Err(e) = r {
            report_and_exit(out, what, e);
        }
    };
    step(
        "parent-death signal",
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong).map(drop),
    );
    step(
        "making mounts private",
        sys::mount("none", "/", "", libc::MS_REC | libc::MS_PRIVATE, ""),
    );
    if let Some(cg) = &c.spec.cgroup {
        step(
            "joining the cgroup",
            write_file(&cg.join("cgroup.procs"), "0"),
        );
    }
    // Its own cgroup namespace either way: the host's cgroup paths stay hidden.
    step("cgroup namespace", sys::unshare(libc::CLONE_NEWCGROUP));
    let root = c.root.as_str();
    let at = |p: &str| format!("{root}/{p}");
    step(
        "bind-mounting the VMM's root",
        sys::mount(root, root, "", libc::MS_BIND, ""),
    );
    let safe = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if let Err((what, e)) = crate::runtime::mount_proc_and_dev(root) {
        report_and_exit(out, what, e);
    }
    if c.spec.accel == Accel::Kvm {
        step("showing /dev/kvm", bind_node("/dev/kvm", &at("dev/kvm")));
    }
    if let Some(GuestNic::Macvtap(m)) = &c.spec.nic {
        let Some(node) = m.node.to_str() else {
            report_and_exit(out, "the macvtap node's path", "not UTF-8")
        };
        step(
            "showing the macvtap queue",
            bind_node(node, &at(&TAP_IN_JAIL[1..])),
        );
    }
    if let Some(GuestNic::Vfio(nic)) = &c.spec.nic {
        step("creating /dev/vfio", std::fs::create_dir(at("dev/vfio")));
        step(
            "showing /dev/vfio/vfio",
            bind_node("/dev/vfio/vfio", &at("dev/vfio/vfio")),
        );
        let group = format!("dev/vfio/{}", nic.group);
        step(
            "showing the NIC's VFIO group",
            bind_node(&format!("/{group}"), &at(&group)),
        );
    }
    step(
        "remounting /dev read-only",
        sys::mount(
            "none",
            &at("dev"),
            "",
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC,
            "",
        ),
    );
    if let Some(GuestNic::Vfio(nic)) = &c.spec.nic {
        // QEMU 7.2 finds a VFIO device's group through sysfs: it reads the
        // link `/sys/bus/pci/devices/<BDF>/iommu_group`. The VMM gets that
        // one link, on a tmpfs of its own, and nothing else of sysfs.
        step(
            "mounting /sys",
            sys::mount("tmpfs", &at("sys"), "tmpfs", safe, "mode=0755,size=16k"),
        );
        let dev = at(&format!("sys/bus/pci/devices/{}", nic.pci));
        step("the NIC's sysfs directory", std::fs::create_dir_all(&dev));
        step(
            "the NIC's iommu_group link",
            std::os::unix::fs::symlink(
                format!("../../../../kernel/iommu_groups/{}", nic.group),
                format!("{dev}/iommu_group"),
            ),
        );
        step(
            "remounting /sys read-only",
            sys::mount(
                "none",
                &at("sys"),
                "",
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | safe,
                "",
            ),
        );
    }
    step(
        "mounting /run",
        sys::mount("tmpfs", &at("run"), "tmpfs", safe, "mode=0755,size=64k"),
    );
    let port = at(&PORT_IN_JAIL[1..]);
    let Some(port_src) = c.spec.port.to_str() else {
        report_and_exit(out, "the port's path", "not UTF-8")
    };
    step("showing the Viaduct's port", bind_node(port_src, &port));
    if let Some(m) = &c.spec.mgmt {
        let Some(src) = m.to_str() else {
            report_and_exit(out, "the management link's path", "not UTF-8")
        };
        step(
            "showing the management link",
            bind_node(src, &at(&MGMT_IN_JAIL[1..])),
        );
    }
    step(
        "remounting /run read-only",
        sys::mount(
            "none",
            &at("run"),
            "",
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | safe,
            "",
        ),
    );
    let owner = format!("uid={0},gid={0}", c.spec.uid);
    step(
        "mounting /tmp",
        sys::mount(
            "tmpfs",
            &at("tmp"),
            "tmpfs",
            safe,
            &format!("mode=0700,size=1m,{owner}"),
        ),
    );
    if let Err((what, e)) = crate::runtime::seal_and_enter_root(root) {
        report_and_exit(out, what, e);
    }
    if matches!(c.spec.nic, Some(GuestNic::Vfio(_))) {
        // VFIO pins all guest memory: the VMM (no CAP_IPC_LOCK) needs the
        // limit raised while it is still real root.
        let bytes = (u64::from(c.spec.memory_mib) + 64) << 20;
        step(
            "locked-memory limit",
            sys::set_rlimit(libc::RLIMIT_MEMLOCK, bytes),
        );
    }
    step(
        "joining the network namespace",
        sys::setns(c.net.as_fd(), libc::CLONE_NEWNET),
    );
    step(
        "joining the UTS namespace",
        sys::setns(c.uts.as_fd(), libc::CLONE_NEWUTS),
    );
    step(
        "joining the IPC namespace",
        sys::setns(c.ipc.as_fd(), libc::CLONE_NEWIPC),
    );
    step(
        "setting the host name",
        sys::sethostname(&format!("vmm-{}", c.spec.side.as_str())),
    );
    // No supplementary group (the init's would still count for host files);
    // the namespace denies setgroups, so this is done before entering it.
    step("dropping supplementary groups", sys::clear_groups());
    step(
        "joining the user namespace",
        sys::setns(c.user.as_fd(), libc::CLONE_NEWUSER),
    );
    step("becoming the namespace's root", sys::set_ids(0, 0));
    step(
        "parent-death signal",
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong).map(drop),
    );
    if let Err(e) = confine::limit_bounding_set(&[]) {
        report_and_exit(out, "capability bounding set", e);
    }
    step("inheritable capabilities", sys::clear_inheritable_caps());
    step(
        "ambient capabilities",
        sys::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        )
        .map(drop),
    );
    step(
        "no_new_privs",
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map(drop),
    );
    step("signal mask", sys::unblock_all_signals());
    // The macvtap queue, opened as the VMM's own uid (the node is its alone).
    let tap = match &c.spec.nic {
        Some(GuestNic::Macvtap(_)) => match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(TAP_IN_JAIL)
        {
            Ok(f) => Some(OwnedFd::from(f)),
            Err(e) => report_and_exit(out, "opening the macvtap queue", e),
        },
        _ => None,
    };
    // Descriptors last: from here on the console is 1 and 2, the event
    // line 3, the macvtap queue 4.
    let high = |fd: BorrowedFd<'_>, what: &str| match sys::dup_above(fd, 100) {
        Ok(fd) => fd,
        Err(e) => report_and_exit(out, what, e),
    };
    let console = high(out, "console descriptor");
    let events = c
        .events_w
        .as_ref()
        .map(|e| high(e.as_fd(), "event descriptor"));
    let tap = tap.as_ref().map(|t| high(t.as_fd(), "macvtap descriptor"));
    step(
        "arranging descriptors",
        sys::dup2(c.devnull.as_fd(), 0)
            .and_then(|()| sys::dup2(console.as_fd(), 1))
            .and_then(|()| sys::dup2(console.as_fd(), 2))
            .and_then(|()| match &events {
                Some(e) => sys::dup2(e.as_fd(), EVENTS_FD),
                None => Ok(()),
            })
            .and_then(|()| match &tap {
                Some(t) => sys::dup2(t.as_fd(), TAP_FD),
                None => Ok(()),
            })
            .and_then(|()| sys::close_from(5)),
    );
    std::mem::forget(console);
    std::mem::forget(events);
    std::mem::forget(tap);
    std::mem::forget(c.console_w);
    std::mem::forget(c.events_w);
    std::mem::forget(c.devnull);
    // Descriptor 2 is the console now.
    let stderr = std::io::stderr();
    let stderr = stderr.as_fd();
    if let Err(e) = confine::apply_filters(c.filters) {
        report_and_exit(stderr, "seccomp", e);
    }
    let e = sys::exec(None, &c.argv, &[]);
    report_and_exit(stderr, "executing QEMU", e)
}

/// Lines a VM's console may relay at once, then per second; more are
/// dropped and counted (a guest cannot flood the init's log).
pub const CONSOLE_BURST: u32 = 200;
/// See [`CONSOLE_BURST`].
pub const CONSOLE_PER_SEC: u32 = 50;

/// A VM whose console stays silent this long after its start is taken as
/// stuck in its boot and killed (then restarted like any VM that stops): a
/// guest kernel prints within its first second. Seen under TCG on a loaded
/// host, about one boot in eight (the vCPU spinning before the kernel's
/// first message).
pub const BOOT_SILENCE: Duration = Duration::from_secs(45);

/// A VM with an event line whose guest has not said `up` this long after its
/// start is taken as stuck after its first words (a guest kernel frozen, a
/// card that never comes up: the guest's own limit on its network setup is
/// 60 s) and killed, then restarted like any VM that stops. Seen once in the
/// nested lab under TCG: black's guest silent after its socket-family
/// filter, its VMM alive, the personality down for good without this.
pub const UP_LIMIT: Duration = Duration::from_secs(180);

/// One supervised personality VM: started, its console relayed, restarted
/// with back-off ([`crate::runtime::next_backoff`]) when its VMM exits.
pub struct VmUnit {
    /// What to run.
    pub spec: VmSpec,
    filters: Vec<BpfProgram>,
    /// The running VMM's pid.
    pub pid: Option<libc::pid_t>,
    console: Option<(File, LineSplitter, RateLimit)>,
    /// The running guest's event line.
    events: Option<(File, LineSplitter, RateLimit)>,
    /// Whether the running guest said `up` on its event line.
    pub up: bool,
    /// Whether the running VM's console said anything yet.
    heard: bool,
    /// Whether the running VM was killed for not saying `up` in time.
    overdue: bool,
    started: Instant,
    delay: Duration,
    next_start: Option<Instant>,
    /// How many times it was restarted.
    pub restarts: u32,
}

impl VmUnit {
    /// A unit for `spec` with `filters` (normally [`vmm_filters`]); not
    /// started yet.
    pub fn new(spec: VmSpec, filters: Vec<BpfProgram>) -> Self {
        VmUnit {
            spec,
            filters,
            pid: None,
            console: None,
            events: None,
            up: false,
            heard: false,
            overdue: false,
            started: Instant::now(),
            delay: Duration::ZERO,
            next_start: Some(Instant::now()),
            restarts: 0,
        }
    }

    fn name(&self) -> &'static str {
        self.spec.side.as_str()
    }

    /// Starts the VM if it is due; a start that fails is logged and tried
    /// again after the back-off.
    pub fn tick(&mut self, now: Instant, log: &mut Logger) {
        if let Some(pid) = self.pid {
            if !self.heard && now.saturating_duration_since(self.started) >= BOOT_SILENCE {
                log.log(&format!(
                    "{}: VM silent for {} s after its start: killed",
                    self.name(),
                    BOOT_SILENCE.as_secs()
                ));
                self.heard = true;
                let _ = sys::kill(pid, libc::SIGKILL);
            }
            if self.spec.events
                && !self.up
                && !self.overdue
                && now.saturating_duration_since(self.started) >= UP_LIMIT
            {
                log.log(&format!(
                    "{}: VM not up {} s after its start: killed",
                    self.name(),
                    UP_LIMIT.as_secs()
                ));
                self.overdue = true;
                let _ = sys::kill(pid, libc::SIGKILL);
            }
            return;
        }
        if self.next_start.is_none_or(|t| now < t) {
            return;
        }
        self.next_start = None;
        match spawn(&self.spec, &self.filters) {
            Ok(child) => {
                let name = self.name();
                log.log(&format!(
                    "{name}: VM started (VMM pid {}, host uid {}, {} MiB, {})",
                    child.pid,
                    self.spec.uid,
                    self.spec.memory_mib,
                    match &self.spec.nic {
                        Some(GuestNic::Vfio(n)) =>
                            format!("NIC {} by VFIO group {}", n.pci, n.group),
                        Some(GuestNic::Macvtap(m)) => format!(
                            "NIC by macvtap {} (its driver in the host kernel)",
                            mac_text(&m.mac)
                        ),
                        None => "no NIC".to_owned(),
                    }
                ));
                let _ = sys::set_nonblocking(child.console.as_fd(), true);
                self.events = child.events.map(|e| {
                    let _ = sys::set_nonblocking(e.as_fd(), true);
                    (
                        File::from(e),
                        LineSplitter::default(),
                        RateLimit::new(CONSOLE_BURST, CONSOLE_PER_SEC, now),
                    )
                });
                self.up = false;
                self.pid = Some(child.pid);
                self.started = now;
                self.heard = false;
                self.overdue = false;
                self.console = Some((
                    File::from(child.console),
                    LineSplitter::default(),
                    RateLimit::new(CONSOLE_BURST, CONSOLE_PER_SEC, now),
                ));
            }
            Err(e) => {
                log.log(&e.to_string());
                self.schedule(now, Duration::ZERO, log);
            }
        }
    }

    fn schedule(&mut self, now: Instant, uptime: Duration, log: &mut Logger) {
        self.delay = crate::runtime::next_backoff(self.delay, uptime);
        self.next_start = Some(now + self.delay);
        self.restarts += 1;
        log.log(&format!(
            "{}: VM restart in {} s",
            self.name(),
            self.delay.as_secs()
        ));
    }

    /// A child exited: if it was this VM's VMM, logs why and schedules the
    /// restart. Returns whether it was.
    pub fn exited(&mut self, pid: libc::pid_t, status: libc::c_int, log: &mut Logger) -> bool {
        if self.pid != Some(pid) {
            return false;
        }
        self.relay_console(Instant::now(), log);
        self.relay_events(Instant::now(), log);
        self.pid = None;
        self.console = None;
        self.events = None;
        self.up = false;
        let now = Instant::now();
        log.log(&format!(
            "{}: VM stopped: {}",
            self.name(),
            describe_exit(status)
        ));
        let uptime = now.saturating_duration_since(self.started);
        self.schedule(now, uptime, log);
        true
    }

    /// The console's descriptor, to poll.
    pub fn console_fd(&self) -> Option<BorrowedFd<'_>> {
        self.console.as_ref().map(|(f, _, _)| f.as_fd())
    }

    /// The event line's descriptor, to poll.
    pub fn events_fd(&self) -> Option<BorrowedFd<'_>> {
        self.events.as_ref().map(|(f, _, _)| f.as_fd())
    }

    /// Logs the guest's complete event lines (`<side>: …`, sanitised,
    /// rate-limited) and notes `up`. What the guest says here is a claim of
    /// the personality (its kernel is its own): it decides only what the
    /// init reports, never what crosses the Viaduct.
    pub fn relay_events(&mut self, now: Instant, log: &mut Logger) {
        let name = self.name();
        let Some((file, lines, limit)) = self.events.as_mut() else {
            return;
        };
        let mut buf = [0u8; 4096];
        let mut up = false;
        for _ in 0..16 {
            let n = match std::io::Read::read(file, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            lines.feed(&buf[..n], |l| {
                let l = l.strip_suffix(b"\r").unwrap_or(l);
                let text = crate::runtime::sanitize(l);
                up |= text == "up";
                if limit.admit(now) {
                    log.log(&format!("{name}: {text}"));
                }
            });
        }
        self.up |= up;
        self.heard |= up;
        let dropped = limit.take_dropped();
        if dropped > 0 {
            log.log(&format!("{name}: {dropped} VM event lines dropped (rate)"));
        }
    }

    /// When the unit next needs [`VmUnit::tick`].
    pub fn next_start(&self) -> Option<Instant> {
        self.next_start
    }

    /// Relays the console's complete lines (`<side>-vm: …`, sanitised,
    /// rate-limited; dropped lines are counted in the log).
    pub fn relay_console(&mut self, now: Instant, log: &mut Logger) {
        let name = self.name();
        let Some((file, lines, limit)) = self.console.as_mut() else {
            return;
        };
        let mut buf = [0u8; 4096];
        for _ in 0..16 {
            let n = match std::io::Read::read(file, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            self.heard = true;
            lines.feed(&buf[..n], |l| {
                // A serial console ends its lines with CR LF.
                let l = l.strip_suffix(b"\r").unwrap_or(l);
                if limit.admit(now) {
                    log.relay(&format!("{name}-vm: {}", crate::runtime::sanitize(l)));
                }
            });
        }
        let dropped = limit.take_dropped();
        if dropped > 0 {
            log.log(&format!(
                "{name}: {dropped} VM console lines dropped (rate)"
            ));
        }
    }

    /// Kills the VMM (shutdown); it is not restarted.
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = sys::kill(pid, libc::SIGKILL);
        }
        self.next_start = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            side: Side::Black,
            root: PathBuf::from("/nonexistent"),
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            kernel: "/vm/vmlinuz".into(),
            initrd: "/vm/initrd".into(),
            append: "console=ttyS0".into(),
            memory_mib: 128,
            accel: Accel::Kvm,
            port: PathBuf::from("/run/viaduct/black.sock"),
            port_mac: [2, 0x76, 0x64, 0, 0, 2],
            nic: None,
            events: false,
            mgmt: None,
            uid: 400_000,
            cgroup: None,
        }
    }

    #[derive(Clone, Default)]
    struct Lines(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);
    impl Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A guest that spoke but never said `up` is killed once, after
    /// [`UP_LIMIT`]; one that said `up`, or a VM without an event line, is
    /// left running.
    #[test]
    fn a_vm_not_up_in_time_is_killed_once() {
        let lines = Lines::default();
        let mut log = Logger::new(vec![Box::new(lines.clone())]);
        let run = |events: bool, up: bool, age: Duration, log: &mut Logger| {
            let mut child = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap();
            let mut s = spec();
            s.events = events;
            let mut u = VmUnit::new(s, Vec::new());
            u.pid = Some(child.id() as libc::pid_t);
            u.heard = true;
            u.up = up;
            let now = Instant::now();
            u.started = now.checked_sub(age).unwrap();
            u.next_start = None;
            u.tick(now, log);
            u.tick(now, log);
            std::thread::sleep(Duration::from_millis(100));
            let killed = child.try_wait().unwrap().is_some();
            let _ = child.kill();
            let _ = child.wait();
            killed
        };
        let late = UP_LIMIT + Duration::from_secs(1);
        assert!(run(true, false, late, &mut log));
        assert!(!run(
            true,
            false,
            UP_LIMIT - Duration::from_secs(5),
            &mut log
        ));
        assert!(!run(true, true, late, &mut log));
        assert!(!run(false, false, late, &mut log));
        drop(log);
        let text = String::from_utf8(lines.0.borrow().clone()).unwrap();
        assert_eq!(
            text.matches("black: VM not up 180 s after its start: killed")
                .count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn command_line_has_the_sandbox_the_shared_memory_and_the_port() {
        let v = qemu_argv(&spec());
        let text = v.join(" ");
        assert_eq!(v[0], "/usr/bin/qemu-system-x86_64");
        assert!(text.contains("-machine microvm,memory-backend=mem -accel kvm"));
        assert!(text.contains("memory-backend-memfd,id=mem,size=128M,share=on"));
        assert!(text.contains("socket,id=viaduct,path=/run/viaduct.sock"));
        assert!(text.contains("virtio-net-device,netdev=viaduct,mac=02:76:64:00:00:02"));
        assert!(text.ends_with(
            "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
        ));
        assert!(!text.contains("vfio"));
        let mut t = spec();
        t.accel = Accel::Tcg;
        let text = qemu_argv(&t).join(" ");
        assert!(text.contains("-machine q35,memory-backend=mem -accel tcg"));
        assert!(
            text.contains("virtio-net-pci,netdev=viaduct,mac=02:76:64:00:00:02,vectors=0,romfile=")
        );
        assert!(!text.contains("-cpu"));
        let mut s = spec();
        assert!(!text.contains("virtconsole") && !text.contains("tap"));
        s.nic = Some(GuestNic::Vfio(Passthrough {
            pci: "0000:01:00.0".into(),
            group: 7,
        }));
        let text = qemu_argv(&s).join(" ");
        assert!(text.contains("microvm,memory-backend=mem,pcie=on,acpi=on"));
        assert!(text.contains("-device vfio-pci,host=0000:01:00.0"));
        // A macvtap queue on descriptor 4 with the NIC's MAC, no PCIe needed;
        // the event line on descriptor 3 as a virtio console.
        let mut m = spec();
        m.nic = Some(GuestNic::Macvtap(Macvtap {
            node: PathBuf::from("/run/appliance/vm/black.tap"),
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        }));
        m.events = true;
        let text = qemu_argv(&m).join(" ");
        assert!(text.contains("-machine microvm,memory-backend=mem -accel"));
        assert!(text.contains("-netdev tap,id=nic,fd=4,vhost=off"));
        assert!(text.contains("virtio-net-device,netdev=nic,mac=52:54:00:12:34:56"));
        assert!(text.contains(
            "-device virtio-serial-device -chardev file,id=events,path=/proc/self/fd/3 \
             -device virtconsole,chardev=events"
        ));
        assert!(!text.contains("mgmt"));
        m.accel = Accel::Tcg;
        let text = qemu_argv(&m).join(" ");
        assert!(text.contains("virtio-net-pci,netdev=nic,mac=52:54:00:12:34:56,romfile="));
        assert!(text.contains("-device virtio-serial-pci -chardev file,id=events"));
        // Black's management link: a serial port on the same bus, its socket
        // reconnected by QEMU; without the event line the bus is still there.
        m.events = false;
        m.mgmt = Some(PathBuf::from("/run/appliance/vm/black.mgmt"));
        let text = qemu_argv(&m).join(" ");
        assert!(text.contains(
            "-device virtio-serial-pci -chardev socket,id=mgmt,path=/run/mgmt.sock,reconnect=1 \
             -device virtserialport,chardev=mgmt,name=appliance.mgmt"
        ));
        assert!(!text.contains("virtconsole"));
    }

    #[test]
    fn allowlist_compiles_and_has_no_duplicates() {
        let mut seen = std::collections::BTreeSet::new();
        for (nr, why) in VMM_ALLOWLIST {
            assert!(seen.insert(*nr), "system call {nr} listed twice");
            assert!(!why.is_empty());
        }
        // What the VMM must never get, whatever QEMU's own sandbox does.
        for nr in [
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_ptrace,
            libc::SYS_bpf,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_kexec_load,
            libc::SYS_process_vm_writev,
            libc::SYS_keyctl,
            libc::SYS_perf_event_open,
            libc::SYS_userfaultfd,
        ] {
            assert!(!seen.contains(&nr), "system call {nr} must not be allowed");
        }
        let f = vmm_filters().expect("filters compile");
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn pci_addresses_are_checked_before_they_become_paths() {
        assert!(is_pci_address("0000:01:00.0"));
        assert!(is_pci_address("abcd:ef:1f.7"));
        for bad in [
            "0000:01:00",
            "../../../etc",
            "0000:01:00.0/",
            "0000-01:00.0",
            "g000:01:00.0",
            "",
        ] {
            assert!(!is_pci_address(bad), "{bad}");
        }
    }

    #[test]
    fn sigsys_is_named() {
        assert!(describe_exit(libc::SIGSYS).contains("outside the VMM's seccomp allowlist"));
        assert!(!describe_exit(libc::SIGKILL).contains("allowlist"));
    }

    #[test]
    fn missing_root_parts_are_named() {
        let e = check_root(&spec()).unwrap_err();
        assert!(e.contains("/nonexistent/dev"), "{e}");
    }
}
