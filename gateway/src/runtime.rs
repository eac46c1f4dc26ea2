//! The gateway runtime: red and black compartments, the Viaduct between them, and
//! their supervision. Used by the init as PID 1 and, with other paths, by tests on a
//! host (network namespaces and veth pairs standing in for NICs).
//!
//! # Layout (one per personality, built by [`Runtime::start`])
//! - **Namespaces** user (root ↦ `uid-base`, 65536 ids), network, UTS and IPC are
//!   created once by a short-lived holder process and kept alive by descriptors the
//!   init holds. They outlive the personality's processes, so its NIC, the Viaduct's
//!   TUN port in it and its addresses survive a personality restart.
//! - The profile's **NIC** is found in sysfs and moved into the network namespace,
//!   renamed to its role (`lan`, `wan`); the init's own namespace keeps only `lo`.
//! - A **TUN** device `viaduct` is created inside the personality's network namespace;
//!   the init keeps its descriptor and hands it to the Viaduct (fd 3 red, fd 4 black).
//! - A **cgroup** `<cgroup-root>/appliance-<side>` with `memory.max` and `pids.max`.
//! - The personality's first process (PID 1 of a fresh PID namespace, fresh mount and
//!   cgroup namespaces) mounts its root read-only (a bind mount of
//!   `/personalities/<side>`, moved over `/`, then chroot), a new `/proc`, tmpfs on
//!   `/dev` (only null, zero, full, random, urandom), `/run` and `/tmp`; joins the held
//!   namespaces, enters the user namespace as its root, keeps only the compartment's
//!   capability bounding set, sets `no_new_privs`, installs the seccomp filters
//!   ([`crate::confine`]) and executes the compartment init ([`crate::cinit`]) from the
//!   init's own binary (a fresh memory image: nothing of the init's heap remains).
//!
//! The **Viaduct** runs in its own user (root ↦ 300000, one id), mount, network (no
//! NIC, only a down `lo`), PID, IPC and UTS namespaces, chrooted into an empty
//! read-only tmpfs holding only `policy.bin` (the bytes the init verified), with the
//! two TUN descriptors; it then confines itself (seccomp allowlist, Landlock, no
//! capabilities).
//!
//! # Supervision
//! A personality or the Viaduct that exits is restarted after a back-off (1 s,
//! doubling to 30 s; back to 1 s after a minute of uptime), with a log line each time.
//! The other compartments keep running: the Viaduct keeps its SAs when a personality
//! restarts, and the personalities keep their namespaces when the Viaduct restarts.
//!
//! # Invariants
//! - Nothing is started unless every NIC is found first: a missing NIC is an error and
//!   the caller stays closed, with no path between red and black.
//! - Red and black share no namespace, file or socket; their only connection is the
//!   Viaduct's two TUN descriptors, which only the init and the Viaduct hold.
//! - The init must be single-threaded when it calls [`Runtime::start`] or restarts a
//!   compartment (children are made with `clone`, like `fork`).

use crate::confine;
use crate::console::{LineSplitter, Logger, RateLimit};
use crate::error::{Error, Result};
use crate::nic;
use crate::plan::{CompartmentPlan, Plan, Side};
use crate::sys;
use seccompiler::BpfProgram;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Name of the Viaduct's TUN port inside each personality.
pub const TUN_NAME: &str = "viaduct";
/// Host uid/gid that is root inside the Viaduct's user namespace (the plan decoder
/// refuses personality uid ranges that hold it).
pub const VIADUCT_UID: u32 = crate::plan::VIADUCT_UID;
/// First restart delay.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Uptime after which the back-off starts again from [`BACKOFF_MIN`].
pub const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// `argv[0]` with which the init's binary runs as a compartment init.
pub const CINIT_ARGV0: &str = "appliance-compartment";

/// Where things are (real paths on the device; temporary ones in host tests).
#[derive(Clone, Debug)]
pub struct RuntimeEnv {
    /// Root of the initramfs (`/`).
    pub root: PathBuf,
    /// `/sys/class/net`.
    pub class_net: PathBuf,
    /// The cgroup2 mount (`/sys/fs/cgroup`); `None` leaves cgroups alone.
    pub cgroup_root: Option<PathBuf>,
    /// This program's binary (`/proc/self/exe`), run as compartment init.
    pub self_exe: PathBuf,
    /// How long to wait for the NICs to appear after the drivers are loaded.
    pub nic_wait: Duration,
    /// Where the TPM may be, in order (`/dev/tpmrm0`, `/dev/tpm0`; in host tests a Unix
    /// socket served by swtpm): the key-use ledger of manual keys lives there.
    pub tpm: Vec<PathBuf>,
    /// The management directory: the init's update socket, bind-mounted into
    /// black at [`crate::update::BLACK_DIR`].
    pub mgmt_dir: PathBuf,
    /// Where updates are written.
    pub esp: crate::update::EspAccess,
    /// The firmware's TCG event log the attestation agent sends (may be absent).
    pub event_log: PathBuf,
    /// sysfs (`/sys`): a VM personality's NIC is bound to VFIO there.
    pub sysfs: PathBuf,
    /// Where the init puts what a VM personality's VMM is shown: its Viaduct
    /// port's listening socket and its macvtap queue's node.
    pub vm_dir: PathBuf,
}

impl RuntimeEnv {
    /// The paths on the device.
    pub fn device() -> Self {
        RuntimeEnv {
            root: PathBuf::from("/"),
            class_net: PathBuf::from("/sys/class/net"),
            cgroup_root: Some(PathBuf::from("/sys/fs/cgroup")),
            self_exe: PathBuf::from("/proc/self/exe"),
            nic_wait: Duration::from_secs(10),
            tpm: vec![PathBuf::from("/dev/tpmrm0"), PathBuf::from("/dev/tpm0")],
            mgmt_dir: PathBuf::from("/run/appliance/mgmt"),
            esp: crate::update::EspAccess::Device(crate::esp::EspEnv::device()),
            event_log: PathBuf::from(crate::eventlog::BIOS_MEASUREMENTS),
            sysfs: PathBuf::from("/sys"),
            vm_dir: PathBuf::from("/run/appliance/vm"),
        }
    }
}

/// Next restart delay: doubles up to [`BACKOFF_MAX`], restarts from [`BACKOFF_MIN`]
/// when the unit had been up for [`BACKOFF_RESET`].
pub fn next_backoff(previous: Duration, uptime: Duration) -> Duration {
    if uptime >= BACKOFF_RESET || previous.is_zero() {
        BACKOFF_MIN
    } else {
        (previous * 2).min(BACKOFF_MAX)
    }
}

/// Describes a `waitpid` status for a log line.
pub fn describe_status(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("status {status:#x}")
    }
}

/// The tunnel id of a Viaduct line `viaduct: tunnel N keyed (…)`.
pub fn keyed_tunnel(text: &str) -> Option<u32> {
    let rest = text.strip_prefix("viaduct: tunnel ")?;
    let (n, rest) = rest.split_once(' ')?;
    rest.starts_with("keyed").then(|| n.parse().ok()).flatten()
}

/// Turns untrusted output into one safe log line: printable ASCII only, ≤ 200 chars.
pub fn sanitize(line: &[u8]) -> String {
    sanitize_to(line, 200)
}

/// The longest line relayed from the Viaduct's own output: its IDS alerts
/// are JSON lines of a few hundred characters (the Viaduct bounds them).
pub const VIADUCT_LINE_MAX: usize = 1024;

/// [`sanitize`] with another length limit.
pub fn sanitize_to(line: &[u8], max: usize) -> String {
    line.iter()
        .take(max)
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}

/// Lines a compartment's pipe may relay at once, then per second (each pipe on its
/// own: service output, compartment-init events, the Viaduct's output). More are
/// dropped and counted; see [`Runtime::relay`].
pub const RELAY_BURST: u32 = 100;
/// See [`RELAY_BURST`].
pub const RELAY_PER_SEC: u32 = 20;
/// Bytes read from one pipe per turn of the supervision loop.
const READ_PER_TURN: usize = 64 * 1024;
/// How long a pipe over its rate is left unread (its writer blocks meanwhile).
const HOLD: Duration = Duration::from_millis(100);

/// One untrusted pipe (non-blocking): its lines, its rate limit, and whether it is
/// left unread for a while because it sent more than its rate.
struct LineReader {
    file: File,
    lines: LineSplitter,
    limit: RateLimit,
    /// Not polled before this instant (set when the rate was exceeded).
    held_until: Option<Instant>,
    /// When dropped lines were last reported.
    reported: Instant,
}

impl LineReader {
    fn new(fd: OwnedFd) -> Result<Self> {
        sys::set_nonblocking(fd.as_fd(), true).map_err(|e| Error::Sys {
            call: "fcntl",
            arg: "O_NONBLOCK".into(),
            source: e,
        })?;
        Ok(LineReader {
            file: File::from(fd),
            lines: LineSplitter::default(),
            limit: RateLimit::new(RELAY_BURST, RELAY_PER_SEC, Instant::now()),
            held_until: None,
            reported: Instant::now(),
        })
    }

    /// Whether the supervision loop polls it now.
    fn polled(&self) -> bool {
        self.held_until.is_none()
    }
}

/// Reads what is available on `file` (at most [`READ_PER_TURN`] bytes) and calls
/// `line` for each complete line; returns whether the writer closed.
fn read_lines(file: &mut File, lines: &mut LineSplitter, mut line: impl FnMut(&[u8])) -> bool {
    let mut chunk = [0u8; 4096];
    let mut read = 0;
    while read < READ_PER_TURN {
        match file.read(&mut chunk) {
            Ok(0) => {
                lines.finish(&mut line);
                return true;
            }
            Ok(n) => {
                read += n;
                lines.feed(&chunk[..n], &mut line);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    false
}

/// The namespaces of one personality, kept alive by these descriptors.
struct Namespaces {
    user: OwnedFd,
    net: OwnedFd,
    uts: OwnedFd,
    ipc: OwnedFd,
}

/// Which compartment a unit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitKind {
    /// A personality.
    Personality(Side),
    /// The Viaduct.
    Viaduct,
    /// The Viaduct's IKE process.
    Ike,
}

impl UnitKind {
    /// `red`, `black` or `viaduct`.
    pub fn name(self) -> &'static str {
        match self {
            UnitKind::Personality(s) => s.as_str(),
            UnitKind::Viaduct => "viaduct",
            UnitKind::Ike => "ike",
        }
    }
}

/// One supervised compartment.
struct Unit {
    kind: UnitKind,
    pid: Option<libc::pid_t>,
    started: Instant,
    restarts: u32,
    delay: Duration,
    next_start: Option<Instant>,
    /// Service output (personalities) or the Viaduct's stderr.
    out: Option<LineReader>,
    /// Compartment-init events (personalities only).
    events: Option<LineReader>,
    up: bool,
    /// Never started again, for this reason (the Viaduct once its manual keys were
    /// installed, or when they cannot be recorded).
    held: Option<String>,
}

impl Unit {
    fn new(kind: UnitKind) -> Self {
        Unit {
            kind,
            pid: None,
            started: Instant::now(),
            restarts: 0,
            delay: Duration::ZERO,
            next_start: None,
            out: None,
            events: None,
            up: false,
            held: None,
        }
    }
}

struct Personality {
    plan: CompartmentPlan,
    ns: Namespaces,
    tun: OwnedFd,
    cgroup: Option<PathBuf>,
    /// Its seccomp filters (its socket families are its own).
    filters: Vec<BpfProgram>,
}

/// A personality run as a virtual machine (the plan's `vm` block).
struct VmPersonality {
    plan: CompartmentPlan,
    unit: crate::vmm::VmUnit,
    /// The Viaduct's port: the listening socket the VMM connects to, handed
    /// to each Viaduct (`--<side>-vhost-fd`).
    listener: OwnedFd,
    /// Black's management link (see [`crate::mgmtlink`]).
    link: Option<MgmtLink>,
}

/// Black's management link: the socket its VMM connects its serial port to,
/// and the bridge process behind it (restarted with back-off).
struct MgmtLink {
    listener: OwnedFd,
    /// The init's management socket the bridge connects each session to.
    socket: PathBuf,
    /// The bridge's uid: one above the VMM's, in black's reserved range.
    uid: u32,
    pid: Option<libc::pid_t>,
    started: Instant,
    delay: Duration,
    next_start: Option<Instant>,
}

impl MgmtLink {
    fn spawn(&mut self, now: Instant, log: &mut Logger) {
        self.next_start = None;
        match spawn_bridge(self.listener.as_fd(), &self.socket, self.uid) {
            Ok(pid) => {
                self.pid = Some(pid);
                self.started = now;
                log.log(&format!(
                    "black: management link bridge started (pid {pid}, uid {})",
                    self.uid
                ));
            }
            Err(e) => {
                self.delay = next_backoff(self.delay, Duration::ZERO);
                self.next_start = Some(now + self.delay);
                log.log(&format!("black: management link bridge: {e}"));
            }
        }
    }
}

/// The bridge (see [`crate::mgmtlink::bridge`]) in a child of its own, as
/// `uid` with no capability, no supplementary group and `no_new_privs`:
/// it parses what black's guest sends and may only reach the init's
/// management socket.
fn spawn_bridge(listener: BorrowedFd<'_>, socket: &Path, uid: u32) -> std::io::Result<libc::pid_t> {
    let pid = sys::clone_fork(0)?;
    if pid == 0 {
        let fail = |what: &str, e: std::io::Error| -> ! {
            let _ = writeln!(std::io::stderr(), "mgmt-link: {what}: {e}");
            sys::exit_now(111)
        };
        if let Err(e) = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) {
            fail("parent-death signal", e);
        }
        let l = match sys::dup_above(listener, 100) {
            Ok(l) => l,
            Err(e) => fail("descriptor", e),
        };
        if let Err(e) = sys::dup2(l.as_fd(), 3).and_then(|()| sys::close_from(4)) {
            fail("descriptors", e);
        }
        std::mem::forget(l);
        // A change of ids clears the parent-death signal: set again after it,
        // so that the bridge never outlives the init.
        let steps = sys::clear_groups()
            .and_then(|()| sys::set_ids(uid, uid))
            .and_then(|()| {
                sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong).map(drop)
            })
            .and_then(|()| sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map(drop))
            .and_then(|()| sys::prctl(libc::PR_SET_DUMPABLE, 0).map(drop))
            .and_then(|()| sys::unblock_all_signals());
        if let Err(e) = steps {
            fail("dropping privileges", e);
        }
        let fd = match sys::adopt_fd(3) {
            Ok(fd) => fd,
            Err(e) => fail("listener", e),
        };
        let e = crate::mgmtlink::bridge(std::os::unix::net::UnixListener::from(fd), socket);
        fail("listener", e);
    }
    Ok(pid)
}

/// How long a VFIO NIC may take to come back bound to `vfio-pci`.
const VFIO_BIND_WAIT: Duration = Duration::from_secs(10);

/// Prepares personality `c`'s VM (see [`crate::vmm`]): its port's listening
/// socket (the VMM's uid alone may connect), its NIC (bound to VFIO, or a
/// macvtap queue on `found`), its cgroup.
fn prepare_vm(
    env: &RuntimeEnv,
    c: &CompartmentPlan,
    vm: &crate::plan::VmPlan,
    found: Option<nic::NicInfo>,
    mgmt_socket: Option<PathBuf>,
    log: &mut Logger,
) -> Result<VmPersonality> {
    use crate::vmm::{self, GuestNic};
    let side = c.side.as_str();
    let problem = |problem: String| Error::Vm { side, problem };
    let uid = c.uid_base;
    std::fs::create_dir_all(&env.vm_dir)
        .and_then(|()| {
            std::fs::set_permissions(&env.vm_dir, std::fs::Permissions::from_mode(0o700))
        })
        .map_err(|e| problem(format!("{}: {e}", env.vm_dir.display())))?;
    let own = |path: &Path| -> Result<()> {
        let text = path
            .to_str()
            .ok_or_else(|| problem(format!("{} is not UTF-8", path.display())))?;
        sys::chown(text, uid, uid)
            .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)))
            .map_err(|e| problem(format!("{}: {e}", path.display())))
    };
    let sock = env.vm_dir.join(format!("{side}.sock"));
    let _ = std::fs::remove_file(&sock);
    let listener = std::os::unix::net::UnixListener::bind(&sock)
        .map_err(|e| problem(format!("the port's socket {}: {e}", sock.display())))?;
    own(&sock)?;
    let nic = match vm.nic {
        crate::plan::VmNic::Vfio => {
            let pci = c.nic_match.pci.as_deref().unwrap_or_default();
            let g = crate::vfio::bind(&env.sysfs, pci, VFIO_BIND_WAIT)
                .map_err(|e| problem(e.to_string()))?;
            log.log(&format!(
                "{side}: nic {pci} bound to vfio-pci (IOMMU group {} holds nothing else)",
                g.group
            ));
            GuestNic::Vfio(vmm::Passthrough {
                pci: g.bdf,
                group: g.group,
            })
        }
        crate::plan::VmNic::Macvtap => {
            let info = found.ok_or_else(|| problem("no NIC found for the macvtap".into()))?;
            let name = format!("vmt-{side}");
            let _ = nic::delete_link(&name);
            let up = libc::IFF_UP as u32;
            nic::request(&nic::set_link_request(1, info.ifindex, up, up, None))
                .and_then(|()| nic::request(&nic::macvtap_request(2, &name, info.ifindex)))
                .map_err(|e| problem(format!("creating macvtap {name} on {}: {e}", info.name)))?;
            let dir = env.class_net.join(&name);
            let read = |f: &str| {
                std::fs::read_to_string(dir.join(f))
                    .map(|s| s.trim().to_owned())
                    .map_err(|e| problem(format!("{}: {e}", dir.join(f).display())))
            };
            let mac = parse_mac(&read("address")?)
                .ok_or_else(|| problem(format!("{name}: unreadable MAC")))?;
            let ifindex = read("ifindex")?;
            let dev = read(&format!("macvtap/tap{ifindex}/dev"))?;
            let (major, minor) = dev
                .split_once(':')
                .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
                .ok_or_else(|| problem(format!("{name}: device number {dev:?}")))?;
            let node = env.vm_dir.join(format!("{side}.tap"));
            let _ = std::fs::remove_file(&node);
            let text = node.to_string_lossy().into_owned();
            sys::mknod_char(&text, 0o600, major, minor)
                .map_err(|e| problem(format!("{}: {e}", node.display())))?;
            own(&node)?;
            log.log(&format!(
                "{side}: nic {} reaches the VM by macvtap {name} (passthru; the NIC's driver stays in the host kernel)",
                info.describe()
            ));
            GuestNic::Macvtap(vmm::Macvtap { node, mac })
        }
    };
    // Black's management link: a socket for the VMM's serial port, the
    // bridge behind it (started with the runtime).
    let link = match mgmt_socket {
        Some(socket) => {
            let path = env.vm_dir.join(format!("{side}.mgmt"));
            let _ = std::fs::remove_file(&path);
            let l = std::os::unix::net::UnixListener::bind(&path)
                .map_err(|e| problem(format!("the management link {}: {e}", path.display())))?;
            own(&path)?;
            Some((
                path,
                MgmtLink {
                    listener: OwnedFd::from(l),
                    socket,
                    uid: uid + 1,
                    pid: None,
                    started: Instant::now(),
                    delay: Duration::ZERO,
                    next_start: Some(Instant::now()),
                },
            ))
        }
        None => None,
    };
    let cgroup = prepare_cgroup(env, c, log);
    let spec = vmm::VmSpec {
        side: c.side,
        root: c.root.under(&env.root),
        qemu: vm.qemu.as_str().to_owned(),
        kernel: vm.kernel.as_str().to_owned(),
        initrd: vm.initrd.as_str().to_owned(),
        append: vmm::guest_append(c.side),
        memory_mib: vm.memory_mib,
        accel: match vm.accel {
            crate::plan::VmAccel::Kvm => vmm::Accel::Kvm,
            crate::plan::VmAccel::Tcg => vmm::Accel::Tcg,
        },
        port: sock,
        port_mac: vmm::port_guest_mac(c.side),
        nic: Some(nic),
        events: true,
        mgmt: link.as_ref().map(|(p, _)| p.clone()),
        uid,
        cgroup,
    };
    vmm::check_root(&spec).map_err(problem)?;
    Ok(VmPersonality {
        plan: c.clone(),
        unit: vmm::VmUnit::new(spec, vmm::vmm_filters()?),
        listener: OwnedFd::from(listener),
        link: link.map(|(_, l)| l),
    })
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// The running compartments.
pub struct Runtime {
    env: RuntimeEnv,
    plan_bytes: Vec<u8>,
    /// The policy blob and its pinned digest: read and verified afresh for each start
    /// of the Viaduct, handed over, then wiped (the init keeps no copy of its keys).
    policy_path: PathBuf,
    policy_sha256: crate::digest::Sha256Digest,
    viaduct_bin: PathBuf,
    /// Key-use records of the policy's manual keys (the plan's `manual-key` lines).
    manual_keys: Vec<crate::keyledger::KeyUse>,
    /// Whether the Viaduct was started with the manual keys in this boot: it is never
    /// started with them again (see [`crate::keyledger`]).
    keys_installed: bool,
    hostname: String,
    personalities: Vec<Personality>,
    /// The personalities run as virtual machines.
    vms: Vec<VmPersonality>,
    units: Vec<Unit>,
    /// The `ready` line, printed once every compartment is up, and the deadline after
    /// which a missing `up` is reported.
    pending_ready: Option<(String, Instant, bool)>,
    /// Whether `ready` was printed.
    announced: bool,
    /// Tunnels the Viaduct reported keyed (`viaduct: tunnel N keyed`), by id.
    keyed: std::collections::BTreeSet<u32>,
    /// The IKE process, when the policy keys tunnels by IKE.
    ike: Option<IkeRuntime>,
    /// The management channel's init side (the update receiver), when the
    /// plan takes updates.
    pub mgmt: Option<crate::update::Management>,
    /// The listening FPM socket in black's network namespace (the plan's
    /// `fpm` line), handed to every Viaduct started; held here, so black's
    /// routing daemon finds it across Viaduct restarts.
    fpm: Option<OwnedFd>,
}

/// What the init keeps for the IKE process (see [`Runtime::spawn_ike`]).
struct IkeRuntime {
    bin: PathBuf,
    /// The device credentials the plan names.
    credentials: Vec<crate::plan::CredentialName>,
    /// The IKE end of the channel to the running Viaduct. The init holds it so that
    /// an IKE process that dies can be replaced on the same channel: the Viaduct and
    /// its SAs never notice. A new Viaduct gets a new channel.
    channel: Option<OwnedFd>,
    /// Whether the missing credentials were reported (once per boot).
    reported: bool,
    /// The identity signer forked next to the running IKE process (see
    /// [`crate::signer`]), when the policy signs with the device identity key.
    signer: Option<libc::pid_t>,
}

fn cerr(name: &'static str, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Compartment { name, what, source }
}

fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(text.as_bytes())
}

/// Creates user, network, UTS and IPC namespaces with root mapped to `uid_base`
/// (`count` ids) and returns descriptors that keep them alive.
fn create_namespaces(name: &'static str, uid_base: u32, count: u32) -> Result<Namespaces> {
    let (r, w) = sys::pipe().map_err(cerr(name, "pipe"))?;
    let flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    let pid = sys::clone_fork(flags).map_err(cerr(name, "clone (new namespaces)"))?;
    if pid == 0 {
        // Holder: wait until the parent has opened our namespaces (EOF), then leave.
        drop(w);
        let mut f = File::from(r);
        let mut b = [0u8; 1];
        let _ = f.read(&mut b);
        sys::exit_now(0);
    }
    drop(r);
    let result = (|| {
        let map = format!("0 {uid_base} {count}\n");
        write_file(Path::new(&format!("/proc/{pid}/uid_map")), &map)
            .map_err(cerr(name, "writing uid_map"))?;
        write_file(Path::new(&format!("/proc/{pid}/gid_map")), &map)
            .map_err(cerr(name, "writing gid_map"))?;
        let open = |ns: &str| -> Result<OwnedFd> {
            File::open(format!("/proc/{pid}/ns/{ns}"))
                .map(OwnedFd::from)
                .map_err(cerr(name, format!("opening the {ns} namespace")))
        };
        Ok(Namespaces {
            user: open("user")?,
            net: open("net")?,
            uts: open("uts")?,
            ipc: open("ipc")?,
        })
    })();
    drop(w);
    let _ = sys::wait_for(pid);
    result
}

/// Creates the TUN device `name` inside the network namespace `netns`; the returned
/// descriptor is the device's only handle (it disappears when the last one closes).
/// With `vnet_hdr` the device carries virtio-net headers, so that the Viaduct can
/// take TSO super-packets from the personality and hand it coalesced ones. With
/// `replace`, whatever interface holds the name in that namespace (a device the
/// personality put there) is deleted first.
fn create_tun_in(
    name: &'static str,
    netns: BorrowedFd<'_>,
    ifname: &str,
    vnet_hdr: bool,
    replace: bool,
) -> Result<OwnedFd> {
    let own = File::open("/proc/self/ns/net").map_err(cerr(name, "opening own netns"))?;
    sys::setns(netns, libc::CLONE_NEWNET).map_err(cerr(name, "entering its netns"))?;
    let cleared = if replace {
        nic::delete_link(ifname)
    } else {
        Ok(())
    };
    let made = cleared.and_then(|()| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .and_then(|f| sys::tun_create(f.as_fd(), ifname, vnet_hdr).map(|()| OwnedFd::from(f)))
    });
    // Going back must work: the init never stays in a personality's namespace.
    if let Err(e) = sys::setns(own.as_fd(), libc::CLONE_NEWNET) {
        eprintln!("appliance: fatal: cannot return to the init's network namespace: {e}");
        sys::exit_now(70);
    }
    made.map_err(cerr(
        name,
        format!("creating TUN {ifname} (is the `tun` module loaded?)"),
    ))
}

/// Makes the listening TCP socket `127.0.0.1:port` inside the network
/// namespace `netns` (black's), for black's routing daemon to hand its
/// forwarding table to the Viaduct (FPM). The namespace's loopback is set
/// up first (the address exists only then; black's setup sets it up again,
/// harmlessly). The socket belongs to that namespace wherever its holder
/// runs; black cannot bind the port, only connect to it.
fn fpm_listener_in(name: &'static str, netns: BorrowedFd<'_>, port: u16) -> Result<OwnedFd> {
    let own = File::open("/proc/self/ns/net").map_err(cerr(name, "opening own netns"))?;
    sys::setns(netns, libc::CLONE_NEWNET).map_err(cerr(name, "entering its netns"))?;
    let up = libc::IFF_UP as u32;
    let made =
        nic::request(&nic::set_link_request(1, LOOPBACK_IFINDEX, up, up, None)).and_then(|()| {
            std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).map(OwnedFd::from)
        });
    // Going back must work: the init never stays in a personality's namespace.
    if let Err(e) = sys::setns(own.as_fd(), libc::CLONE_NEWNET) {
        eprintln!("appliance: fatal: cannot return to the init's network namespace: {e}");
        sys::exit_now(70);
    }
    made.map_err(cerr(
        name,
        format!("making the FPM socket 127.0.0.1:{port}"),
    ))
}

/// A new network namespace's loopback interface.
const LOOPBACK_IFINDEX: i32 = 1;

/// Prepares the cgroup of a personality; `Ok(None)` when cgroups are not in use.
/// Missing controllers are logged, not fatal (they limit resources, not paths).
fn prepare_cgroup(env: &RuntimeEnv, c: &CompartmentPlan, log: &mut Logger) -> Option<PathBuf> {
    let root = env.cgroup_root.as_ref()?;
    let name = c.side.as_str();
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    for want in ["memory", "pids"] {
        if controllers.split_whitespace().any(|c| c == want) {
            if let Err(e) = write_file(&root.join("cgroup.subtree_control"), &format!("+{want}")) {
                log.log(&format!(
                    "warning: {name}: enabling the {want} controller: {e}"
                ));
            }
        } else {
            log.log(&format!(
                "warning: {name}: cgroup controller {want} unavailable at {}; its limit is not enforced",
                root.display()
            ));
        }
    }
    let dir = root.join(format!("appliance-{name}"));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        log.log(&format!(
            "warning: {name}: creating cgroup {}: {e}",
            dir.display()
        ));
        return None;
    }
    let mut applied = Vec::new();
    for (file, value) in [
        ("memory.max", c.memory_max.to_string()),
        ("pids.max", c.pids_max.to_string()),
    ] {
        let p = dir.join(file);
        if p.exists() {
            match write_file(&p, &value) {
                Ok(()) => applied.push(format!("{file} {value}")),
                Err(e) => log.log(&format!("warning: {name}: writing {}: {e}", p.display())),
            }
        }
    }
    log.log(&format!(
        "{name}: cgroup {} {}",
        dir.display(),
        if applied.is_empty() {
            "(no limits available)".to_owned()
        } else {
            applied.join(" ")
        }
    ));
    Some(dir)
}

/// Moves the file descriptors a child keeps to fixed numbers 0.. and closes the rest.
/// `fds[i]` becomes descriptor `i`.
fn arrange_fds(fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    // First lift every source above any target so no dup2 clobbers a later source.
    let lifted: Vec<OwnedFd> = fds
        .iter()
        .map(|fd| sys::dup_above(*fd, 100))
        .collect::<std::io::Result<_>>()?;
    for (i, fd) in lifted.iter().enumerate() {
        sys::dup2(fd.as_fd(), i as libc::c_int)?;
    }
    let first = u32::try_from(fds.len()).unwrap_or(u32::MAX);
    // close_from closes the lifted copies (and every other inherited descriptor);
    // dropping them afterwards would close them a second time.
    std::mem::forget(lifted);
    sys::close_from(first)
}

fn report_and_exit(events: &OwnedFd, step: &str, e: impl std::fmt::Display) -> ! {
    let msg = format!("error: {step}: {e}\n");
    // Write through a duplicate so `events` itself stays open.
    if let Ok(dup) = events.try_clone() {
        let _ = File::from(dup).write_all(msg.as_bytes());
    }
    sys::exit_now(111);
}

struct PersonalityChild<'a> {
    root: String,
    cgroup: Option<PathBuf>,
    ns: &'a Namespaces,
    hostname: String,
    uid_base: u32,
    bounding: Vec<u8>,
    filters: &'a [BpfProgram],
    exe: OwnedFd,
    devnull: OwnedFd,
    out_w: OwnedFd,
    ev_w: OwnedFd,
    plan_r: OwnedFd,
    side: Side,
    /// The management directory, bind-mounted at `/run/mgmt` (black, when the
    /// plan takes updates).
    mgmt_dir: Option<String>,
}

/// Remounts the mount at `path` read-only, without set-uid, devices or
/// execution.
fn remount_sealed(path: &str) -> std::io::Result<()> {
    sys::mount(
        "none",
        path,
        "",
        libc::MS_REMOUNT
            | libc::MS_BIND
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC,
        "",
    )
}

/// Remounts `root` (a bind mount of itself) read-only without set-uid or
/// devices, moves it over `/` and enters it (chroot, chdir). On failure
/// returns the step that failed.
pub(crate) fn seal_and_enter_root(
    root: &str,
) -> std::result::Result<(), (&'static str, std::io::Error)> {
    sys::mount(
        "none",
        root,
        "",
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        "",
    )
    .map_err(|e| ("remounting the root read-only", e))?;
    std::env::set_current_dir(root).map_err(|e| ("chdir to the root", e))?;
    sys::mount(root, "/", "", libc::MS_MOVE, "").map_err(|e| ("moving the root over /", e))?;
    sys::chroot(".").map_err(|e| ("chroot", e))?;
    std::env::set_current_dir("/").map_err(|e| ("chdir /", e))
}

/// Mounts a fresh `/proc` and a tmpfs `/dev` holding only `null`, `zero`,
/// `full`, `random` and `urandom` (mode 0666) under `root` (a compartment's
/// or a VMM's; `/dev` stays writable for the caller to add to, then seal).
/// On failure returns the step that failed.
pub(crate) fn mount_proc_and_dev(
    root: &str,
) -> std::result::Result<(), (&'static str, std::io::Error)> {
    let at = |p: &str| format!("{root}/{p}");
    let safe = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    sys::mount("proc", &at("proc"), "proc", safe, "").map_err(|e| ("mounting /proc", e))?;
    sys::mount(
        "tmpfs",
        &at("dev"),
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "mode=0755,size=64k",
    )
    .map_err(|e| ("mounting /dev", e))?;
    for (name, minor) in [
        ("null", 3),
        ("zero", 5),
        ("full", 7),
        ("random", 8),
        ("urandom", 9),
    ] {
        let node = at(&format!("dev/{name}"));
        sys::mknod_char(&node, 0o666, 1, minor).map_err(|e| ("creating device nodes", e))?;
        // mknod applies the umask; these nodes are for everyone.
        std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| ("device node permissions", e))?;
    }
    Ok(())
}

/// Runs in the cloned child (PID 1 of the new PID namespace, real root, new mount
/// namespace). Never returns: it executes the compartment init or exits 111.
fn personality_child(c: PersonalityChild<'_>) -> ! {
    let ev = &c.ev_w;
    let step = |what: &str, r: std::io::Result<()>| {
        if let Err(e) = r {
            report_and_exit(ev, what, e);
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
    if let Some(cg) = &c.cgroup {
        step("joining cgroup", write_file(&cg.join("cgroup.procs"), "0"));
        step("cgroup namespace", sys::unshare(libc::CLONE_NEWCGROUP));
    }
    let root = c.root.as_str();
    let at = |p: &str| format!("{root}/{p}");
    step(
        "bind-mounting the root filesystem",
        sys::mount(root, root, "", libc::MS_BIND | libc::MS_REC, ""),
    );
    if let Err((what, e)) = mount_proc_and_dev(root) {
        report_and_exit(ev, what, e);
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        step(
            "creating /dev links",
            std::os::unix::fs::symlink(target, at(&format!("dev/{link}"))),
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
    let owner = format!("uid={0},gid={0}", c.uid_base);
    step(
        "mounting /run",
        sys::mount(
            "tmpfs",
            &at("run"),
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            &format!("mode=0755,size=16m,{owner}"),
        ),
    );
    if let Some(dir) = &c.mgmt_dir {
        let at_mgmt = at(&crate::update::BLACK_DIR[1..]);
        step(
            "creating the management mount point",
            std::fs::create_dir(&at_mgmt),
        );
        step(
            "bind-mounting the management directory",
            sys::mount(dir, &at_mgmt, "", libc::MS_BIND, ""),
        );
        step(
            "remounting the management directory read-only",
            remount_sealed(&at_mgmt),
        );
    }
    step(
        "mounting /tmp",
        sys::mount(
            "tmpfs",
            &at("tmp"),
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            &format!("mode=1777,size=16m,{owner}"),
        ),
    );
    if let Err((what, e)) = seal_and_enter_root(root) {
        report_and_exit(ev, what, e);
    }
    step(
        "joining the network namespace",
        sys::setns(c.ns.net.as_fd(), libc::CLONE_NEWNET),
    );
    step(
        "joining the UTS namespace",
        sys::setns(c.ns.uts.as_fd(), libc::CLONE_NEWUTS),
    );
    step(
        "joining the IPC namespace",
        sys::setns(c.ns.ipc.as_fd(), libc::CLONE_NEWIPC),
    );
    step("setting the host name", sys::sethostname(&c.hostname));
    step(
        "joining the user namespace",
        sys::setns(c.ns.user.as_fd(), libc::CLONE_NEWUSER),
    );
    step("becoming the namespace's root", sys::become_ids(0, 0));
    // Again: the change of credentials cleared the first setting.
    step(
        "parent-death signal",
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong).map(drop),
    );
    step(
        "arranging descriptors",
        arrange_fds(&[
            c.devnull.as_fd(),
            c.out_w.as_fd(),
            c.out_w.as_fd(),
            c.ev_w.as_fd(),
            c.plan_r.as_fd(),
            c.exe.as_fd(),
        ]),
    );
    // From here on the events pipe is descriptor 3 (the original was closed).
    let ev3 = match sys::adopt_fd(3) {
        Ok(fd) => fd,
        Err(_) => sys::exit_now(111),
    };
    let ev = &ev3;
    let step = |what: &str, r: std::io::Result<()>| {
        if let Err(e) = r {
            report_and_exit(ev, what, e);
        }
    };
    let mut keep = c.bounding.clone();
    keep.push(8); // CAP_SETPCAP: the compartment init narrows each service's set.
    if let Err(e) = confine::limit_bounding_set(&keep) {
        report_and_exit(ev, "capability bounding set", e);
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
    if let Err(e) = confine::apply_filters(c.filters) {
        report_and_exit(ev, "seccomp", e);
    }
    let exe5 = match sys::adopt_fd(5) {
        Ok(fd) => fd,
        Err(e) => report_and_exit(ev, "compartment init binary", e),
    };
    let err = sys::exec(
        Some(exe5.as_fd()),
        &[CINIT_ARGV0.to_owned(), c.side.as_str().to_owned()],
        &["PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_owned()],
    );
    report_and_exit(ev, "executing the compartment init", err)
}

impl Runtime {
    /// Finds the NICs, builds the compartments, starts both personalities and the
    /// Viaduct. On error nothing forwards: the caller stays closed.
    pub fn start(
        env: RuntimeEnv,
        plan: &Plan,
        plan_bytes: Vec<u8>,
        log: &mut Logger,
    ) -> Result<Runtime> {
        let policy_path = plan.policy_path.under(&env.root);
        let viaduct_bin = plan.viaduct.under(&env.root);
        if !viaduct_bin.is_file() {
            return Err(Error::io(
                "finding the Viaduct",
                &viaduct_bin,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        // Every NIC first: nothing is moved or started unless all are present.
        let deadline = Instant::now() + env.nic_wait;
        let mut found = Vec::new();
        for c in &plan.compartments {
            // A NIC passed through by VFIO has no host driver: it is found by
            // its PCI address in sysfs when it is bound.
            if c.vm
                .as_ref()
                .is_some_and(|v| v.nic == crate::plan::VmNic::Vfio)
            {
                found.push(None);
                continue;
            }
            loop {
                let hits = nic::find(&env.class_net, &c.nic_match);
                match hits.len() {
                    1 => {
                        found.push(Some(hits[0].clone()));
                        break;
                    }
                    0 if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    n => {
                        let present = nic::list(&env.class_net)
                            .iter()
                            .filter(|n| n.name != "lo")
                            .map(|n| n.describe())
                            .collect::<Vec<_>>()
                            .join("; ");
                        return Err(Error::Nic {
                            side: c.side.as_str(),
                            role: c.nic.as_str().to_owned(),
                            want: nic::describe_match(&c.nic_match),
                            problem: if n == 0 {
                                "not present"
                            } else {
                                "matched by more than one card"
                            },
                            present: if present.is_empty() {
                                "none".into()
                            } else {
                                present
                            },
                        });
                    }
                }
            }
        }
        // Without its socket the gateway runs on, taking no updates and
        // answering no verifier.
        let agent = crate::agent::AgentContext {
            tpm: env.tpm.clone(),
            event_log: env.event_log.clone(),
            runtime_log: attest_wire::runtime::to_bytes(
                &crate::boot::runtime_events(plan)
                    .into_iter()
                    .chain(crate::identity::events())
                    .collect::<Vec<_>>(),
            ),
            identity: match crate::identity::booted() {
                Some(crate::identity::Outcome::Ready(id)) => Some(id.clone()),
                _ => None,
            },
            release_key: plan.update.map(|u| u.release_key),
        };
        let opened = crate::update::Management::open(
            &env.mgmt_dir,
            plan,
            env.esp.clone(),
            env.tpm.clone(),
            agent,
        );
        let mgmt = match opened {
            Ok(m) => Some(m),
            Err(e) => {
                let dir = env.mgmt_dir.display();
                log.log(&format!(
                    "error: management: the socket in {dir}: {e}; no updates and no attestation this boot"
                ));
                None
            }
        };
        if mgmt.is_some() {
            log.log(&format!(
                "management: black relays TCP port {} to the init: attestation{}",
                plan.management_port(),
                match &plan.update {
                    Some(u) => format!(
                        ", updates signed by the release key {}",
                        update_bundle::fingerprint(&u.release_key)
                    ),
                    None => String::new(),
                }
            ));
        }
        let mut personalities = Vec::new();
        let mut fpm: Option<OwnedFd> = None;
        let mut vms = Vec::new();
        for (c, info) in plan.compartments.iter().zip(found) {
            if let Some(vm) = &c.vm {
                // Black's relay reaches the init's management socket over a
                // serial port of its VM (see `mgmtlink`).
                let socket = (c.side == Side::Black && mgmt.is_some())
                    .then(|| env.mgmt_dir.join(crate::update::SOCKET));
                vms.push(prepare_vm(&env, c, vm, info, socket, log)?);
                continue;
            }
            let Some(info) = info else { continue };
            let name = c.side.as_str();
            let ns = create_namespaces(name, c.uid_base, crate::plan::COMPARTMENT_IDS)?;
            nic::move_to_netns(&info, ns.net.as_fd(), c.nic.as_str()).map_err(cerr(
                name,
                format!("moving NIC {} into its namespace", info.name),
            ))?;
            log.log(&format!(
                "{name}: nic {} moved into the {name} namespace as {}",
                info.describe(),
                c.nic
            ));
            // Red carries the personality's TCP/UDP flows: its TUN offers offloads
            // (vnet headers). Black carries ESP, which has no GSO type.
            let tun = create_tun_in(name, ns.net.as_fd(), TUN_NAME, c.side == Side::Red, false)?;
            if let (Some(f), Side::Black) = (plan.fpm, c.side) {
                fpm = Some(fpm_listener_in(name, ns.net.as_fd(), f.port)?);
                log.log(&format!(
                    "{name}: FPM socket 127.0.0.1:{} made in the {name} namespace for the Viaduct (routes learned from black)",
                    f.port
                ));
            }
            let cgroup = prepare_cgroup(&env, c, log);
            personalities.push(Personality {
                plan: c.clone(),
                ns,
                tun,
                cgroup,
                filters: confine::personality_filters(&c.socket_families)?,
            });
        }
        // A VM's NIC by macvtap stays here, with its macvtap: the VM's.
        let vm_links: Vec<String> = vms
            .iter()
            .filter_map(|v: &VmPersonality| match &v.unit.spec.nic {
                Some(crate::vmm::GuestNic::Macvtap(_)) => Some(v.plan.side.as_str()),
                _ => None,
            })
            .map(|side| format!("vmt-{side}"))
            .collect();
        let all = nic::list(&env.class_net);
        let lowers: Vec<String> = all
            .iter()
            .filter(|n| vm_links.contains(&n.name))
            // sysfs links an upper device to its lower one as `lower_<name>`.
            .filter_map(|n| {
                std::fs::read_dir(env.class_net.join(&n.name))
                    .ok()?
                    .flatten()
                    .find_map(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .strip_prefix("lower_")
                            .map(str::to_owned)
                    })
            })
            .collect();
        let left: Vec<String> = all
            .iter()
            .filter(|n| n.name != "lo" && !vm_links.contains(&n.name) && !lowers.contains(&n.name))
            .map(|n| n.describe())
            .collect();
        if left.is_empty() {
            log.log("init namespace: no NIC left (only lo)");
        } else {
            log.log(&format!(
                "warning: init namespace still holds NICs the profile does not name: {}; they stay unconfigured",
                left.join("; ")
            ));
        }
        // One unit per namespace compartment, in the order of `personalities`
        // (unit i is personality i); VM personalities are supervised by their
        // own `VmUnit`.
        let mut units: Vec<Unit> = personalities
            .iter()
            .map(|p| Unit::new(UnitKind::Personality(p.plan.side)))
            .collect();
        units.push(Unit::new(UnitKind::Viaduct));
        let ike = match &plan.ike {
            None => None,
            Some(i) => {
                let bin = i.binary.under(&env.root);
                if !bin.is_file() {
                    return Err(Error::io(
                        "finding the IKE process",
                        &bin,
                        std::io::Error::from(std::io::ErrorKind::NotFound),
                    ));
                }
                units.push(Unit::new(UnitKind::Ike));
                Some(IkeRuntime {
                    bin,
                    credentials: i.credentials.clone(),
                    channel: None,
                    reported: false,
                    signer: None,
                })
            }
        };
        let mut rt = Runtime {
            hostname: plan.profile_name.as_str().to_owned(),
            env,
            plan_bytes,
            policy_path,
            policy_sha256: plan.policy_sha256,
            viaduct_bin,
            manual_keys: plan.manual_keys.clone(),
            keys_installed: false,
            personalities,
            vms,
            units,
            pending_ready: None,
            announced: false,
            keyed: std::collections::BTreeSet::new(),
            ike,
            mgmt,
            fpm,
        };
        for i in 0..rt.units.len() {
            rt.spawn(i, log);
        }
        Ok(rt)
    }

    /// Starts unit `i`; on failure logs and schedules a retry.
    fn spawn(&mut self, i: usize, log: &mut Logger) {
        let kind = self.units[i].kind;
        let r = match kind {
            UnitKind::Personality(_) => self.spawn_personality(i, log),
            UnitKind::Viaduct => match self.claim_manual_keys(log) {
                Ok(claim) => self.spawn_viaduct(claim, log),
                Err(reason) => {
                    self.hold(i, reason, log);
                    return;
                }
            },
            UnitKind::Ike => self.spawn_ike(log),
        };
        let u = &mut self.units[i];
        u.next_start = None;
        u.up = false;
        u.started = Instant::now();
        match r {
            Ok((pid, out, events)) => {
                u.pid = Some(pid);
                u.out = Some(out);
                u.events = events;
                log.log(&format!("{}: started (pid {pid})", kind.name()));
            }
            Err(e) => {
                u.pid = None;
                u.delay = next_backoff(u.delay, Duration::ZERO);
                u.next_start = Some(Instant::now() + u.delay);
                log.log(&format!(
                    "{}: cannot start: {e}; retrying in {}s",
                    kind.name(),
                    u.delay.as_secs()
                ));
            }
        }
    }

    /// Keeps unit `i` down for good (logged once, shown by `status`).
    fn hold(&mut self, i: usize, reason: String, log: &mut Logger) {
        let u = &mut self.units[i];
        u.pid = None;
        u.up = false;
        u.next_start = None;
        log.log(&format!("{}: not started: {reason}", u.kind.name()));
        if !self.announced {
            self.pending_ready = None;
            log.log(&format!(
                "closed: the {} is held ({reason}); nothing crosses between red and black",
                u.kind.name()
            ));
        }
        u.held = Some(reason);
    }

    /// Before a start of the Viaduct: with manual keys, records them in the TPM's
    /// key-use ledger ([`crate::keyledger`]) and returns the `--key-claim` digest; the
    /// reason to hold the Viaduct if they were installed before (in this boot, or on
    /// this TPM ever) or cannot be recorded.
    fn claim_manual_keys(
        &mut self,
        log: &mut Logger,
    ) -> std::result::Result<Option<crate::digest::Sha256Digest>, String> {
        use crate::keyledger::{self, Claim};
        if self.manual_keys.is_empty() {
            return Ok(None);
        }
        let n = self.manual_keys.len();
        if self.keys_installed {
            return Err(installed_once(n));
        }
        let Some(dev) = self.env.tpm.iter().find(|p| p.exists()) else {
            return Err(format!(
                "the policy has {n} manual keys, which may be installed only once, and there is \
                 no TPM to record that (looked for {}); staying closed",
                self.env
                    .tpm
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let result = open_tpm(dev).and_then(|mut t| keyledger::claim(&mut *t, &self.manual_keys));
        match result {
            Ok(Claim::Recorded { used, defined }) => {
                self.keys_installed = true;
                log.log(&format!(
                    "viaduct: {n} manual keys recorded in the TPM's key-use ledger \
                     (NV {:#010x}{}, {used} of {} records used); they will not be installed again",
                    keyledger::LEDGER_INDEX,
                    if defined { ", defined now" } else { "" },
                    keyledger::LEDGER_ENTRIES
                ));
                Ok(Some(keyledger::set_digest(&self.manual_keys)))
            }
            Ok(Claim::AlreadyUsed { reused }) => Err(format!(
                "{reused} of its {n} manual keys already carried traffic on this device (TPM \
                 key-use ledger NV {:#010x}); installing them again would repeat AEAD nonces \
                 under the same key. Build an image with new keys, or key the tunnels with IKEv2",
                keyledger::LEDGER_INDEX
            )),
            Err(e) => Err(format!(
                "its {n} manual keys cannot be recorded as used ({e}); staying closed"
            )),
        }
    }

    /// Whether personality `i`'s Viaduct port is still the TUN device named
    /// [`TUN_NAME`] in its namespace; if not, why not. (The personality holds
    /// CAP_NET_ADMIN over its network namespace: it can delete or rename the port.)
    fn port_broken(&self, i: usize) -> Option<String> {
        match sys::tun_name(self.personalities[i].tun.as_fd()) {
            Ok(n) if n == TUN_NAME => None,
            Ok(n) => Some(format!("the personality renamed it to {n:?}")),
            Err(e) if e.raw_os_error() == Some(libc::EBADFD) => {
                Some("the personality deleted it".to_owned())
            }
            Err(e) => Some(format!("TUNGETIFF: {e}")),
        }
    }

    /// Gives personality `i` a new Viaduct port if its port is broken (see
    /// [`Runtime::port_broken`]), replacing whatever device took its name. Returns
    /// whether it did; the caller restarts what held the old port.
    fn repair_port(&mut self, i: usize, log: &mut Logger) -> Result<bool> {
        let Some(why) = self.port_broken(i) else {
            return Ok(false);
        };
        let p = &self.personalities[i];
        let name = p.plan.side.as_str();
        let tun = create_tun_in(
            name,
            p.ns.net.as_fd(),
            TUN_NAME,
            p.plan.side == Side::Red,
            true,
        )?;
        self.personalities[i].tun = tun;
        log.log(&format!("{name}: port {TUN_NAME} recreated ({why})"));
        Ok(true)
    }

    /// SIGKILLs a running unit so that the supervisor starts it again (on a new port).
    fn restart_for_port(&mut self, kind: UnitKind, side: Side, log: &mut Logger) {
        if let Some(pid) = self
            .units
            .iter()
            .find(|u| u.kind == kind)
            .and_then(|u| u.pid)
        {
            log.log(&format!(
                "{}: restarting it (pid {pid}) on {side}'s new port",
                kind.name()
            ));
            let _ = sys::kill(pid, libc::SIGKILL);
        }
    }

    fn spawn_personality(
        &mut self,
        i: usize,
        log: &mut Logger,
    ) -> Result<(libc::pid_t, LineReader, Option<LineReader>)> {
        // A port it broke in a previous life: new port, and the Viaduct onto it.
        if self.repair_port(i, log)? {
            let side = self.personalities[i].plan.side;
            self.restart_for_port(UnitKind::Viaduct, side, log);
        }
        let p = &self.personalities[i];
        let name = p.plan.side.as_str();
        let (out_r, out_w) = sys::pipe().map_err(cerr(name, "pipe"))?;
        let (ev_r, ev_w) = sys::pipe().map_err(cerr(name, "pipe"))?;
        let (plan_r, plan_w) = sys::pipe().map_err(cerr(name, "pipe"))?;
        let exe = File::open(&self.env.self_exe)
            .map(OwnedFd::from)
            .map_err(cerr(
                name,
                format!("opening {}", self.env.self_exe.display()),
            ))?;
        let devnull = File::open("/dev/null")
            .map(OwnedFd::from)
            .map_err(cerr(name, "opening /dev/null"))?;
        let root = p.plan.root.under(&self.env.root);
        let root = root.to_string_lossy().trim_end_matches('/').to_owned();
        let pid = sys::clone_fork(libc::CLONE_NEWPID | libc::CLONE_NEWNS)
            .map_err(cerr(name, "clone (new PID and mount namespaces)"))?;
        if pid == 0 {
            personality_child(PersonalityChild {
                root,
                cgroup: p.cgroup.clone(),
                ns: &p.ns,
                hostname: format!("{}-{name}", self.hostname),
                uid_base: p.plan.uid_base,
                bounding: p.plan.bounding_set().iter().map(|c| c.0).collect(),
                filters: &p.filters,
                exe,
                devnull,
                out_w,
                ev_w,
                plan_r,
                side: p.plan.side,
                mgmt_dir: self
                    .mgmt
                    .as_ref()
                    .filter(|_| p.plan.side == Side::Black)
                    .map(|_| self.env.mgmt_dir.to_string_lossy().into_owned()),
            });
        }
        drop((out_w, ev_w, plan_r, exe, devnull));
        // The plan is at most 64 KiB, which a pipe holds without a reader.
        let mut w = File::from(plan_w);
        let _ = w.write_all(&self.plan_bytes);
        drop(w);
        Ok((pid, LineReader::new(out_r)?, Some(LineReader::new(ev_r)?)))
    }

    fn spawn_viaduct(
        &mut self,
        claim: Option<crate::digest::Sha256Digest>,
        log: &mut Logger,
    ) -> Result<(libc::pid_t, LineReader, Option<LineReader>)> {
        let name = "viaduct";
        // A personality that deleted (or renamed) its port made the Viaduct fail on it:
        // a new port, and the personality restarted so that its setup configures it.
        for i in 0..self.personalities.len() {
            if self.repair_port(i, log)? {
                let side = self.personalities[i].plan.side;
                self.restart_for_port(UnitKind::Personality(side), side, log);
            }
        }
        // A VM whose VMM was connected to the previous Viaduct lost its port
        // with it (QEMU does not reconnect a vhost-user back end): it is
        // restarted, and its new VMM connects to the new Viaduct on the same
        // socket.
        for vm in &self.vms {
            if let Some(pid) = vm.unit.pid {
                log.log(&format!(
                    "{}: restarting its VM (VMM pid {pid}) on the new Viaduct's port",
                    vm.plan.side
                ));
                let _ = sys::kill(pid, libc::SIGKILL);
            }
        }
        // A new Viaduct, a new IKE channel; an IKE process on the old one (whose
        // Viaduct is gone) is replaced.
        let channel = match self.ike.as_mut() {
            None => None,
            Some(ike) => {
                let (ours, theirs) = sys::seqpacket_pair().map_err(cerr(name, "socketpair"))?;
                ike.channel = Some(theirs);
                if let Some(u) = self.units.iter().find(|u| u.kind == UnitKind::Ike) {
                    if let Some(pid) = u.pid {
                        log.log(&format!(
                            "ike: restarting it (pid {pid}) on the new Viaduct's channel"
                        ));
                        let _ = sys::kill(pid, libc::SIGKILL);
                    }
                }
                Some(ours)
            }
        };
        let mut argv: Vec<String> = ["viaduct", "--policy", "/policy.bin"]
            .map(str::to_owned)
            .to_vec();
        // Each side's port: the TUN device of a compartment, or the listening
        // socket a VM's VMM connects to (vhost-user).
        let mut fds = Vec::new();
        for (side, fd) in [(Side::Red, 3), (Side::Black, 4)] {
            let (flag, port) =
                if let Some(p) = self.personalities.iter().find(|p| p.plan.side == side) {
                    ("fd", p.tun.as_fd())
                } else if let Some(v) = self.vms.iter().find(|v| v.plan.side == side) {
                    ("vhost-fd", v.listener.as_fd())
                } else {
                    return Err(Error::Vm {
                        side: side.as_str(),
                        problem: "the plan has no such personality".into(),
                    });
                };
            argv.extend([format!("--{side}-{flag}"), fd.to_string()]);
            fds.push(port);
        }
        if let Some(c) = &channel {
            fds.push(c.as_fd());
            argv.extend(["--ike-channel".to_owned(), "5".to_owned()]);
        }
        if let Some(f) = &self.fpm {
            argv.extend(["--fpm-fd".to_owned(), (3 + fds.len()).to_string()]);
            fds.push(f.as_fd());
        }
        if let Some(d) = claim {
            argv.extend(["--key-claim".to_owned(), d.to_hex()]);
        }
        self.spawn_sealed(name, &self.viaduct_bin, VIADUCT_UID, &fds, &argv)
    }

    /// Starts the IKE process (`viaduct-ike`) on the held end of the running
    /// Viaduct's channel, sealed like the Viaduct (own user namespace with one id,
    /// [`crate::plan::IKE_UID`]; own mount, network — no interface at all — PID, IPC
    /// and UTS namespaces; an empty read-only root holding only `policy.bin`), with
    /// the device credentials on descriptor 4: records `u8 name length, name, u16
    /// secret length, secret`, read to the end. A credential the device does not hold
    /// is reported once; the IKE process keeps the tunnels that need it closed.
    fn spawn_ike(
        &mut self,
        log: &mut Logger,
    ) -> Result<(libc::pid_t, LineReader, Option<LineReader>)> {
        let name = "ike";
        let identity = match crate::identity::booted() {
            Some(crate::identity::Outcome::Ready(id)) => Some(id.clone()),
            _ => None,
        };
        let mut unsealed = crate::secrets::unsealed_names();
        if identity.is_some() {
            unsealed.push(crate::plan::DEVICE_IDENTITY.to_owned());
        }
        if let Some(ike) = self.ike.as_mut().filter(|i| {
            i.channel.is_some()
                && !i.reported
                && i.credentials
                    .iter()
                    .any(|c| !unsealed.iter().any(|u| u == c.as_str()))
        }) {
            ike.reported = true;
            let names: Vec<&str> = ike
                .credentials
                .iter()
                .map(|c| c.as_str())
                .filter(|c| !unsealed.iter().any(|u| u == c))
                .collect();
            log.log(&format!(
                "ike: device credential(s) {} not provisioned on this device (tpm:<name> \
                 references); the tunnels that need them stay closed",
                names.join(", ")
            ));
        }
        let Some(ike) = self.ike.as_ref() else {
            return Err(cerr(name, "the plan has no IKE process")(
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        };
        let Some(channel) = ike.channel.as_ref() else {
            return Err(cerr(name, "waiting for the Viaduct's channel")(
                std::io::Error::from(std::io::ErrorKind::NotConnected),
            ));
        };
        // The secrets unsealed at boot (none: end-of-file at once). A pipe holds
        // 64 KiB: more than the plan's credentials can take.
        let (creds_r, creds_w) = sys::pipe().map_err(cerr(name, "pipe"))?;
        {
            use std::io::Write;
            let stream = crate::secrets::credential_stream();
            let mut w = File::from(creds_w);
            w.write_all(&stream)
                .map_err(cerr(name, "writing the credentials"))?;
        }
        let mut argv: Vec<String> = [
            "viaduct-ike",
            "--policy",
            "/policy.bin",
            "--channel",
            "3",
            "--credentials",
            "4",
        ]
        .map(str::to_owned)
        .to_vec();
        // The device identity key signs through a signer child, when the policy
        // names it and this boot has one.
        let identity = identity.filter(|_| {
            ike.credentials
                .iter()
                .any(|c| c.as_str() == crate::plan::DEVICE_IDENTITY)
        });
        let pair = match &identity {
            Some(id) => {
                let point = attest_wire::policy::identity_point(&id.public)
                    .ok_or_else(|| Error::Identity("the key has no P-256 public point".into()))?;
                argv.extend([
                    "--signer".to_owned(),
                    "5".to_owned(),
                    "--identity-public".to_owned(),
                    crate::digest::to_hex(&point),
                ]);
                Some(sys::seqpacket_pair().map_err(cerr(name, "socketpair"))?)
            }
            None => None,
        };
        let mut fds = vec![channel.as_fd(), creds_r.as_fd()];
        if let Some((_, theirs)) = &pair {
            fds.push(theirs.as_fd());
        }
        let (pid, out, out_w) =
            self.spawn_sealed_keep(name, &ike.bin, crate::plan::IKE_UID, &fds, &argv)?;
        drop(fds);
        if let (Some((ours, theirs)), Some(id)) = (pair, identity) {
            match self.spawn_signer(ours, theirs, &out_w, &id) {
                Ok(spid) => {
                    if let Some(ike) = self.ike.as_mut() {
                        ike.signer = Some(spid);
                    }
                }
                Err(e) => {
                    let _ = sys::kill(pid, libc::SIGKILL);
                    return Err(cerr(name, "forking the identity signer")(e));
                }
            }
        }
        Ok((pid, out, None))
    }

    /// Forks the identity signer ([`crate::signer`]) on `ours`, its lines going to
    /// the IKE process's output pipe `out_w`. The child drops `theirs` (the IKE
    /// process's end), its capabilities and the right to gain any.
    fn spawn_signer(
        &self,
        ours: OwnedFd,
        theirs: OwnedFd,
        out_w: &OwnedFd,
        id: &crate::identity::Identity,
    ) -> std::io::Result<libc::pid_t> {
        let out = out_w.try_clone()?;
        let tpm = self.env.tpm.clone();
        let pid = sys::clone_fork(0)?;
        if pid != 0 {
            return Ok(pid);
        }
        drop(theirs);
        let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        let _ = sys::unblock_all_signals();
        // Nothing of the init's but its socket and its output: /dev/null, the output
        // twice, the socket as 0-3; every other descriptor (ports, channels, the
        // management listener) closed.
        let arranged = File::open("/dev/null").and_then(|null| {
            let r = arrange_fds(&[null.as_fd(), out.as_fd(), out.as_fd(), ours.as_fd()]);
            // arrange_fds closed (or replaced) the originals.
            std::mem::forget((null, ours, out));
            r
        });
        if arranged.is_err() {
            sys::exit_now(1);
        }
        let (Ok(out), Ok(ours)) = (sys::adopt_fd(1), sys::adopt_fd(3)) else {
            sys::exit_now(1)
        };
        let mut out = File::from(out);
        let mut say = |l: &str| {
            let _ = out.write_all(format!("{l}\n").as_bytes());
        };
        let dropped = crate::confine::limit_bounding_set(&[])
            .map_err(|e| e.to_string())
            .and_then(|()| {
                sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
            .and_then(|()| {
                caps::clear(None, caps::CapSet::Inheritable)
                    .and_then(|()| caps::clear(None, caps::CapSet::Permitted))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = dropped {
            say(&format!(
                "signer: dropping its privileges: {e}; not signing"
            ));
            sys::exit_now(1);
        }
        let sock = std::os::unix::net::UnixDatagram::from(ours);
        let mut open = || match tpm.iter().find(|p| p.exists()) {
            Some(p) => open_tpm(p),
            None => Err(Error::Identity("no TPM".into())),
        };
        say("signer: ready (the device identity key, in the TPM)");
        let n = crate::signer::serve(&sock, &mut open, id, &mut say);
        say(&format!(
            "signer: the IKE process is gone; {n} signature(s) made"
        ));
        sys::exit_now(0)
    }

    /// Starts `bin` as `name` in a sealed compartment ([`sealed_child`]): its own
    /// user namespace where root is host `uid` (its only id), mount, network, PID,
    /// IPC and UTS namespaces, the policy just verified (wiped here when this
    /// returns; the child has its own copy until it executes), `fds` from
    /// descriptor 3 on.
    fn spawn_sealed(
        &self,
        name: &'static str,
        bin: &Path,
        uid: u32,
        fds: &[BorrowedFd<'_>],
        argv: &[String],
    ) -> Result<(libc::pid_t, LineReader, Option<LineReader>)> {
        let (pid, out, _) = self.spawn_sealed_keep(name, bin, uid, fds, argv)?;
        Ok((pid, out, None))
    }

    /// [`Runtime::spawn_sealed`], also returning the write end of the child's output
    /// pipe (for a companion whose lines go with the child's).
    fn spawn_sealed_keep(
        &self,
        name: &'static str,
        bin: &Path,
        uid: u32,
        fds: &[BorrowedFd<'_>],
        argv: &[String],
    ) -> Result<(libc::pid_t, LineReader, OwnedFd)> {
        let policy = crate::boot::read_verified_policy(&self.policy_path, &self.policy_sha256)?;
        let (out_r, out_w) = sys::pipe().map_err(cerr(name, "pipe"))?;
        let (sync_r, sync_w) = sys::pipe().map_err(cerr(name, "pipe"))?;
        let exe = File::open(bin)
            .map(OwnedFd::from)
            .map_err(cerr(name, format!("opening {}", bin.display())))?;
        let devnull = File::open("/dev/null")
            .map(OwnedFd::from)
            .map_err(cerr(name, "opening /dev/null"))?;
        let flags = libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS;
        let pid = sys::clone_fork(flags).map_err(cerr(name, "clone (new namespaces)"))?;
        if pid == 0 {
            drop(sync_w);
            let mut b = [0u8; 1];
            let _ = File::from(sync_r).read(&mut b);
            sealed_child(name, &policy, exe, devnull, out_w, fds, argv);
        }
        drop((sync_r, exe, devnull));
        let map = format!("0 {uid} 1\n");
        let maps = write_file(Path::new(&format!("/proc/{pid}/uid_map")), &map)
            .and_then(|()| write_file(Path::new(&format!("/proc/{pid}/gid_map")), &map));
        drop(sync_w);
        if let Err(e) = maps {
            let _ = sys::kill(pid, libc::SIGKILL);
            return Err(cerr(name, "writing its uid/gid maps")(e));
        }
        Ok((pid, LineReader::new(out_r)?, out_w))
    }

    /// Descriptors to poll for output (pipes over their rate are left out for a while).
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut v = Vec::new();
        for u in &self.units {
            for r in [&u.out, &u.events].into_iter().flatten() {
                if r.polled() {
                    v.push(r.file.as_fd());
                }
            }
        }
        for vm in &self.vms {
            v.extend(vm.unit.console_fd());
            v.extend(vm.unit.events_fd());
        }
        v
    }

    /// Relays output from the pipes flagged readable in `ready` (same order as
    /// [`Runtime::fds`]), sanitised and rate-limited: each pipe may relay
    /// [`RELAY_BURST`] lines at once and [`RELAY_PER_SEC`] a second; what is over is
    /// dropped and counted (reported by [`Runtime::tick`]), and the pipe is left unread
    /// for a moment, so a flooding compartment blocks itself, not the init. Events
    /// (`up`) take effect whether or not their line is printed.
    pub fn relay(&mut self, ready: &[bool], log: &mut Logger) {
        let now = Instant::now();
        let mut idx = 0;
        for u in &mut self.units {
            let name = u.kind.name();
            let is_viaduct = u.kind == UnitKind::Viaduct;
            let is_ike = u.kind == UnitKind::Ike;
            for which in 0..2 {
                let reader = if which == 0 {
                    &mut u.out
                } else {
                    &mut u.events
                };
                let Some(r) = reader else { continue };
                if !r.polled() {
                    continue;
                }
                let is_ready = ready.get(idx).copied().unwrap_or(false);
                idx += 1;
                if !is_ready {
                    continue;
                }
                let mut up = false;
                let limit = &mut r.limit;
                let keyed = &mut self.keyed;
                let closed = read_lines(&mut r.file, &mut r.lines, |line| {
                    let text = if is_viaduct && which == 0 {
                        sanitize_to(line, VIADUCT_LINE_MAX)
                    } else {
                        sanitize(line)
                    };
                    if which == 1 {
                        up |= text == "up";
                        if limit.admit(now) {
                            log.log(&format!("{name}: {text}"));
                        }
                    } else {
                        up |= is_viaduct && text.contains("pumping");
                        up |= is_ike && text.contains("peer(s)");
                        if is_viaduct {
                            if let Some(id) = keyed_tunnel(&text) {
                                keyed.insert(id);
                            }
                        }
                        if limit.admit(now) {
                            log.relay(&format!("{name}| {text}"));
                        }
                    }
                });
                if up {
                    u.up = true;
                }
                if closed {
                    *reader = None;
                } else if r.limit.next_at(now) > now {
                    r.held_until = Some(now + HOLD);
                }
            }
        }
        // The VMs' consoles and event lines (their own rate limits).
        for vm in &mut self.vms {
            let console = vm.unit.console_fd().is_some();
            let events = vm.unit.events_fd().is_some();
            if console {
                if ready.get(idx).copied().unwrap_or(false) {
                    vm.unit.relay_console(now, log);
                }
                idx += 1;
            }
            if events {
                if ready.get(idx).copied().unwrap_or(false) {
                    vm.unit.relay_events(now, log);
                }
                idx += 1;
            }
        }
    }

    /// Handles the exit of a child; `false` if `pid` is not one of ours.
    pub fn on_exit(&mut self, pid: libc::pid_t, status: libc::c_int, log: &mut Logger) -> bool {
        if let Some(ike) = self.ike.as_mut().filter(|i| i.signer == Some(pid)) {
            ike.signer = None;
            // It ends by itself (0) when its IKE process does; failing, it takes
            // the IKE process with it, and both start again.
            let normal = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            if let Some(ipid) = self
                .units
                .iter()
                .find(|u| u.kind == UnitKind::Ike)
                .and_then(|u| u.pid)
                .filter(|_| !normal)
            {
                log.log(&format!(
                    "ike: the identity signer exited ({}); restarting the IKE process with a new one",
                    describe_status(status)
                ));
                let _ = sys::kill(ipid, libc::SIGKILL);
            }
            return true;
        }
        if self.vms.iter_mut().any(|v| v.unit.exited(pid, status, log)) {
            return true;
        }
        if let Some(l) = self
            .vms
            .iter_mut()
            .filter_map(|v| v.link.as_mut())
            .find(|l| l.pid == Some(pid))
        {
            l.pid = None;
            l.delay = next_backoff(l.delay, l.started.elapsed());
            l.next_start = Some(Instant::now() + l.delay);
            log.log(&format!(
                "black: management link bridge exited ({}); restarting in {}s",
                describe_status(status),
                l.delay.as_secs()
            ));
            return true;
        }
        let Some(u) = self.units.iter_mut().find(|u| u.pid == Some(pid)) else {
            return false;
        };
        let uptime = u.started.elapsed();
        if u.kind == UnitKind::Viaduct && self.keys_installed {
            let i = self
                .units
                .iter()
                .position(|u| u.pid == Some(pid))
                .unwrap_or(0);
            log.log(&format!("viaduct exited ({})", describe_status(status)));
            self.units[i].restarts += 1;
            let n = self.manual_keys.len();
            self.hold(i, installed_once(n), log);
            return true;
        }
        u.pid = None;
        u.up = false;
        u.restarts += 1;
        u.delay = next_backoff(u.delay, uptime);
        u.next_start = Some(Instant::now() + u.delay);
        log.log(&format!(
            "{} exited ({}) after {}s; restarting in {}s (restart {})",
            u.kind.name(),
            describe_status(status),
            uptime.as_secs(),
            u.delay.as_secs(),
            u.restarts
        ));
        true
    }

    /// Restarts what is due, polls held pipes again once their hold is over, reports
    /// dropped lines (once a second per pipe at most); returns how long until the next
    /// of these is due.
    pub fn tick(&mut self, log: &mut Logger) -> Option<Duration> {
        let now = Instant::now();
        for i in 0..self.units.len() {
            if self.units[i].next_start.is_some_and(|t| t <= now) {
                self.spawn(i, log);
            }
        }
        let mut next: Option<Instant> = None;
        for vm in &mut self.vms {
            vm.unit.tick(now, log);
            if let Some(t) = vm.unit.next_start() {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
            if let Some(l) = vm.link.as_mut() {
                if l.next_start.is_some_and(|t| t <= now) {
                    l.spawn(now, log);
                }
                if let Some(t) = l.next_start {
                    next = Some(next.map_or(t, |n: Instant| n.min(t)));
                }
            }
        }
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for u in &mut self.units {
            if let Some(t) = u.next_start {
                at(t);
            }
            let name = u.kind.name();
            for (r, what) in [
                (&mut u.out, "lines of output"),
                (&mut u.events, "event lines"),
            ] {
                let Some(r) = r else { continue };
                match r.held_until {
                    Some(t) if t <= now => r.held_until = None,
                    Some(t) => at(t),
                    None => {}
                }
                if r.limit.dropped() > 0 {
                    let due = r.reported + Duration::from_secs(1);
                    if due <= now {
                        r.reported = now;
                        log.log(&format!(
                            "{name}: dropped {} {what} (more than {RELAY_PER_SEC} a second)",
                            r.limit.take_dropped()
                        ));
                    } else {
                        at(due);
                    }
                }
            }
        }
        next.map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// Whether every compartment reported it is up.
    pub fn all_up(&self) -> bool {
        self.units.iter().all(|u| u.up) && self.vms.iter().all(|v| v.unit.up)
    }

    /// Arranges for `line` to be logged the first time every compartment is up;
    /// if that has not happened within `limit`, an error (with the status lines) is
    /// logged once. The supervision loop calls [`Runtime::check_ready`].
    pub fn announce_when_up(&mut self, line: String, limit: Duration) {
        if self.units.iter().any(|u| u.held.is_some()) {
            // `hold` said `closed: …`: the gateway is never ready.
            return;
        }
        self.pending_ready = Some((line, Instant::now() + limit, false));
    }

    /// Whether `ready` was printed.
    pub fn is_ready(&self) -> bool {
        self.announced
    }

    /// How many tunnels the Viaduct reported keyed since the init started.
    pub fn keyed_tunnels(&self) -> usize {
        self.keyed.len()
    }

    /// See [`Runtime::announce_when_up`].
    pub fn check_ready(&mut self, log: &mut Logger) {
        let all_up = self.all_up();
        let status = self.status_lines();
        let Some((line, deadline, warned)) = self.pending_ready.as_mut() else {
            return;
        };
        if all_up {
            log.log(line);
            self.pending_ready = None;
            self.announced = true;
        } else if !*warned && Instant::now() >= *deadline {
            *warned = true;
            log.log("error: compartments not up in time; still supervising, not ready");
            for l in status {
                log.log(&l);
            }
        }
    }

    /// Sends SIGKILL to a compartment's first process (console `kill`, for fault tests):
    /// the supervisor sees a crash and restarts it.
    pub fn kill(&mut self, name: &str, log: &mut Logger) -> bool {
        self.signal(name, libc::SIGKILL, "killing", log)
    }

    /// Sends `signo` to a compartment's first process (console `kill`, `counters`);
    /// false if there is no compartment of that name.
    pub fn signal(&mut self, name: &str, signo: i32, what: &str, log: &mut Logger) -> bool {
        if let Some(vm) = self.vms.iter().find(|v| v.plan.side.as_str() == name) {
            match vm.unit.pid {
                Some(pid) => {
                    log.log(&format!(
                        "{name}: {what} the VMM, pid {pid} (console request)"
                    ));
                    let _ = sys::kill(pid, signo);
                }
                None => log.log(&format!("{name}: VM not running")),
            }
            return true;
        }
        let Some(u) = self.units.iter().find(|u| u.kind.name() == name) else {
            return false;
        };
        match u.pid {
            Some(pid) => {
                log.log(&format!("{name}: {what} pid {pid} (console request)"));
                let _ = sys::kill(pid, signo);
            }
            None => log.log(&format!("{name}: not running")),
        }
        true
    }

    /// One status line per compartment.
    pub fn status_lines(&self) -> Vec<String> {
        let vms = self.vms.iter().map(|v| {
            let u = &v.unit;
            let state = match (u.pid, u.up) {
                (Some(pid), true) => format!("up vmm pid {pid}"),
                (Some(pid), false) => format!("starting vmm pid {pid}"),
                (None, _) => format!(
                    "down, restart in {}s",
                    u.next_start()
                        .map(|t| t.saturating_duration_since(Instant::now()).as_secs())
                        .unwrap_or(0)
                ),
            };
            format!(
                "status {} {state} restarts {} nic {} services {} vm {} MiB",
                v.plan.side,
                u.restarts,
                v.plan.nic,
                v.plan.services.len(),
                u.spec.memory_mib
            )
        });
        let mut lines: Vec<String> = vms.collect();
        lines.extend(self.status_units());
        lines
    }

    fn status_units(&self) -> Vec<String> {
        self.units
            .iter()
            .map(|u| {
                let state = match (u.pid, u.up) {
                    (Some(pid), true) => format!("up pid {pid}"),
                    (Some(pid), false) => format!("starting pid {pid}"),
                    (None, _) if u.held.is_some() => "held (not restarted; see the log)".to_owned(),
                    (None, _) => format!(
                        "down, restart in {}s",
                        u.next_start
                            .map(|t| t.saturating_duration_since(Instant::now()).as_secs())
                            .unwrap_or(0)
                    ),
                };
                let extra = match u.kind {
                    UnitKind::Personality(s) => {
                        let p = self.personalities.iter().find(|p| p.plan.side == s);
                        format!(
                            " nic {} services {}",
                            p.map_or("-", |p| p.plan.nic.as_str()),
                            p.map_or(0, |p| p.plan.services.len())
                        )
                    }
                    UnitKind::Viaduct | UnitKind::Ike => String::new(),
                };
                format!(
                    "status {} {state} uptime {}s restarts {}{extra}",
                    u.kind.name(),
                    if u.pid.is_some() {
                        u.started.elapsed().as_secs()
                    } else {
                        0
                    },
                    u.restarts
                )
            })
            .collect()
    }

    /// Terminates every compartment: SIGTERM, up to `grace`, then SIGKILL; reaps them.
    pub fn stop(&mut self, grace: Duration, log: &mut Logger) {
        for vm in &mut self.vms {
            if let Some(pid) = vm.link.as_mut().and_then(|l| l.pid.take()) {
                let _ = sys::kill(pid, libc::SIGKILL);
                let _ = sys::wait_for(pid);
            }
            if let Some(l) = vm.link.as_mut() {
                l.next_start = None;
            }
            if let Some(pid) = vm.unit.pid {
                vm.unit.stop();
                let _ = sys::wait_for(pid);
                vm.unit.pid = None;
                log.log(&format!("{}: VM stopped", vm.plan.side));
            }
        }
        for u in &self.units {
            if let Some(pid) = u.pid {
                let _ = sys::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while self.units.iter().any(|u| u.pid.is_some()) && Instant::now() < deadline {
            let ready = {
                let fds = self.fds();
                sys::poll_readable(&fds, 50).unwrap_or_default()
            };
            self.relay(&ready, log);
            while let Ok(Some((pid, status))) = sys::reap_one() {
                if let Some(u) = self.units.iter_mut().find(|u| u.pid == Some(pid)) {
                    u.pid = None;
                    log.log(&format!(
                        "{} stopped ({})",
                        u.kind.name(),
                        describe_status(status)
                    ));
                }
            }
        }
        for u in &mut self.units {
            if let Some(pid) = u.pid.take() {
                let _ = sys::kill(pid, libc::SIGKILL);
                let _ = sys::wait_for(pid);
                log.log(&format!(
                    "{} killed after {}s grace",
                    u.kind.name(),
                    grace.as_secs()
                ));
            }
            u.next_start = None;
        }
        let ready = vec![true; self.fds().len()];
        self.relay(&ready, log);
    }
}

/// Why a Viaduct that was started with `n` manual keys is not started again.
fn installed_once(n: usize) -> String {
    format!(
        "its {n} manual keys were installed once in this boot; installing them again would \
         restart their sequence numbers, hence AEAD nonces, at 1 (and reopen the replay \
         window). Build an image with new keys, or key the tunnels with IKEv2"
    )
}

/// Opens the TPM at `path`: a character device, or a Unix socket (swtpm in host tests).
pub(crate) fn open_tpm(path: &Path) -> Result<Box<dyn crate::tpm::Transport>> {
    use std::os::unix::fs::FileTypeExt;
    let io = |source| Error::io("opening the TPM", path, source);
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.file_type().is_socket() {
        let s = std::os::unix::net::UnixStream::connect(path).map_err(io)?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        Ok(Box::new(crate::tpm::StreamTransport(s)))
    } else {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        Ok(Box::new(crate::tpm::StreamTransport(f)))
    }
}

/// Runs in a cloned Viaduct or IKE child (its own user namespace, root inside): an
/// empty read-only root holding only `policy.bin`, host name `name`, descriptors 0-2
/// /dev/null and `out_w`, then `fds` from 3 on; executes `exe` with `argv`. Never
/// returns.
fn sealed_child(
    name: &str,
    policy: &[u8],
    exe: OwnedFd,
    devnull: OwnedFd,
    out_w: OwnedFd,
    fds: &[BorrowedFd<'_>],
    argv: &[String],
) -> ! {
    let fail = |step: &str, e: &dyn std::fmt::Display| -> ! {
        let msg = format!("{name} compartment: {step}: {e}\n");
        if let Ok(dup) = out_w.try_clone() {
            let _ = File::from(dup).write_all(msg.as_bytes());
        }
        sys::exit_now(111);
    };
    let step = |what: &str, r: std::io::Result<()>| {
        if let Err(e) = r {
            fail(what, &e);
        }
    };
    step("becoming the namespace's root", sys::become_ids(0, 0));
    // After the change of credentials, which clears it.
    step(
        "parent-death signal",
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong).map(drop),
    );
    step(
        "making mounts private",
        sys::mount("none", "/", "", libc::MS_REC | libc::MS_PRIVATE, ""),
    );
    step(
        "mounting its root",
        sys::mount(
            "tmpfs",
            "/tmp",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            "mode=0755,size=32m",
        ),
    );
    step(
        "writing the policy",
        std::fs::write("/tmp/policy.bin", policy),
    );
    step("remounting its root read-only", remount_sealed("/tmp"));
    step("chdir", std::env::set_current_dir("/tmp"));
    step(
        "moving its root over /",
        sys::mount("/tmp", "/", "", libc::MS_MOVE, ""),
    );
    step("chroot", sys::chroot("."));
    step("chdir /", std::env::set_current_dir("/"));
    step("setting the host name", sys::sethostname(name));
    let mut all = vec![devnull.as_fd(), out_w.as_fd(), out_w.as_fd()];
    all.extend_from_slice(fds);
    all.push(exe.as_fd());
    step("arranging descriptors", arrange_fds(&all));
    let exe_at = libc::c_int::try_from(all.len() - 1).unwrap_or(libc::c_int::MAX);
    let exe_fd = match sys::adopt_fd(exe_at) {
        Ok(fd) => fd,
        Err(e) => fail("its binary", &e),
    };
    let err = sys::exec(Some(exe_fd.as_fd()), argv, &[]);
    fail("executing its binary", &err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut d = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..8 {
            d = next_backoff(d, Duration::from_secs(1));
            seen.push(d.as_secs());
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(next_backoff(d, BACKOFF_RESET), BACKOFF_MIN);
    }

    #[test]
    fn keyed_tunnel_lines_are_the_viaducts_own_format_only() {
        assert_eq!(
            keyed_tunnel("viaduct: tunnel 3 keyed (SA 0badcafe, IKE)"),
            Some(3)
        );
        assert_eq!(
            keyed_tunnel("viaduct: tunnel 0 keyed (lan, manual keys)"),
            Some(0)
        );
        for no in [
            "red| viaduct: tunnel 3 keyed",
            "viaduct: tunnel x keyed",
            "viaduct: tunnel 3 rekeyed",
            "viaduct: tunnel 3",
            "viaduct: tunnel -1 keyed",
        ] {
            assert_eq!(keyed_tunnel(no), None, "{no}");
        }
    }

    #[test]
    fn sanitize_and_status() {
        assert_eq!(sanitize(b"ok\x1b[31m\xff"), "ok?[31m?");
        assert_eq!(sanitize(&[b'a'; 500]).len(), 200);
        assert_eq!(sanitize_to(&[b'a'; 2000], VIADUCT_LINE_MAX).len(), 1024);
        assert_eq!(describe_status(3 << 8), "exit status 3");
        assert_eq!(describe_status(9), "killed by signal 9");
    }
}
