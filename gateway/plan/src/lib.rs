//! The runtime plan: what the host-side image builder tells the init to do.
//!
//! # Format (version 9)
//! Canonical, line-oriented ASCII text. Every line is `key SP value LF` (the last one is
//! the bare `end LF`); keys come in this fixed order, `module` repeats 0 to
//! [`MAX_MODULES`] times, then one `compartment` block per personality (red, then
//! black), then the Viaduct:
//!
//! ```text
//! appliance-plan 9
//! profile-name vpn-gateway
//! profile-version 1.4.0
//! security-version 3
//! policy-path /etc/appliance/policy.bin
//! policy-sha256 <64 lowercase hex digits>
//! manual-key <32 lowercase hex digits>   (0..MAX_MANUAL_KEYS, ascending, no duplicates:
//!                                     the key-use records of the policy's manual keys,
//!                                     see [`keyuse`] and the init's key ledger)
//! module /lib/modules/6.1.0-56-amd64/kernel/drivers/net/virtio_net.ko
//! compartment red
//! root /personalities/red
//! uid-base 100000
//! memory-max 268435456
//! pids-max 256
//! nic lan
//! match-pci 0000:00:02.0          (each match-* line optional, in this order,
//! match-mac 52:54:00:12:34:56      at least one present)
//! match-driver virtio_net
//! match-name eth0
//! setup /etc/appliance/network
//! socket-family unix              (0..5 lines, sorted by number, no duplicates:
//! socket-family inet               unix, inet, inet6, netlink, packet; the only
//! socket-family inet6              families its processes may open, see
//! socket-family netlink            the init's confinement)
//! service dnsmasq                 (0..MAX_SERVICES blocks)
//! restart always                  (always | on-failure | never)
//! cap CAP_NET_ADMIN               (0..n, sorted by number, no duplicates)
//! arg /usr/sbin/dnsmasq           (1..MAX_ARGS; the value is the rest of the line)
//! arg --keep-in-foreground
//! end-service
//! vm kvm                          (optional, after the services: this personality
//! vm-qemu /usr/bin/qemu-system-x86_64  runs as a virtual machine: kvm | tcg (tcg:
//! vm-kernel /guest/vmlinuz         hosts without KVM, the tests); QEMU, the guest's
//! vm-initrd /guest/initrd          kernel and initramfs inside `root`, which is
//! vm-memory 256                    then the VMM's root; guest memory in MiB;
//! vm-nic vfio                      vfio | macvtap, see [`VmPlan`])
//! end-compartment
//! compartment black
//! …
//! end-compartment
//! viaduct /usr/sbin/viaduct
//! ike /usr/sbin/viaduct-ike       (optional: the policy keys tunnels by IKE)
//! ike-credential site-psk         (0..MAX_IKE_CREDENTIALS, ascending, no
//! ike-credential gw-identity       duplicates; only after `ike`: the device
//!                                  credentials its policy names, `tpm:<name>`)
//! boot-assessment 300 2          (optional: this boot is judged; seconds to
//!                                  become good, IKE-or-manually keyed tunnels
//!                                  that must carry SAs for it)
//! update 7443 3 <64 hex digits>   (optional: the management port on black's
//!                                  address, the boot tries an installed update
//!                                  gets, and the release key, Ed25519, that
//!                                  signs the updates this image accepts)
//! fpm 2620                        (optional: the policy learns routes from black;
//!                                  the TCP port on black's loopback where the
//!                                  init listens for black's routing daemon and
//!                                  whose socket it hands the Viaduct)
//! end
//! ```
//!
//! # Invariants
//! - Canonical: for every byte string `b`, `decode(b) == Ok(p)` implies `p.encode() == b`.
//!   One plan has exactly one encoding, so its SHA-256 (pinned on the measured kernel
//!   command line) identifies it.
//! - The decoder rejects: unknown format versions (before looking at anything else),
//!   unknown or out-of-order keys, duplicate single keys, bytes outside printable ASCII
//!   and LF, CR, tabs, double spaces, missing final LF, anything after `end`, plans
//!   larger than [`MAX_PLAN_LEN`].
//! - `arg` values may contain single spaces (an argument is the rest of the line) but
//!   neither leading/trailing spaces nor double spaces, so every argv has one encoding.
//! - Compartments stay apart: their uid ranges (`uid-base`, [`COMPARTMENT_IDS`] ids)
//!   are disjoint and leave out [`VIADUCT_UID`]; their roots are distinct, neither
//!   lies inside the other, none holds the policy blob, the plan or the Viaduct
//!   binary, and none lies inside the init's own mounts (`/proc`, `/sys`, `/dev`,
//!   `/run`).
//! - Version 9 added the `fpm` line: the init makes a listening TCP socket on
//!   `127.0.0.1:<port>` inside black's network namespace (a compartment only)
//!   and hands it to the Viaduct, which reads black's forwarding table from it
//!   (FPM) and admits the routes its policy allows. The port differs from the
//!   management port.
//! - Version 8 added the `vm` block: a personality run as a virtual machine
//!   by a jailed VMM (the `microvm` runtime). Its `root` is then the VMM's
//!   root; its `setup`, `socket-family` and services are what the guest's own
//!   init runs; `uid-base` is the VMM's one host uid; `memory-max` bounds the
//!   VMM's cgroup and must leave [`VM_OVERHEAD_MIB`] above the guest's memory.
//!   With `vm-nic vfio` the NIC is passed through by its `match-pci` address
//!   (required) and only under KVM; with `macvtap` the NIC's driver stays in
//!   the host kernel and the guest gets a macvtap queue on it.
//! - Version 7 added the `update` line: the TCP port black relays to the init's
//!   update receiver, and the release public key an update bundle's signature
//!   must verify with. An image without it accepts no updates.
//! - Version 6 added the `boot-assessment` line: an A/B image's boot is good
//!   (the init renames the boot loader's boot-counted entry) only once it is
//!   ready and the named number of tunnels carry SAs, within the time given;
//!   otherwise the init reboots and the boot loader counts the try.
//! - Version 5 added the `ike` and `ike-credential` lines: the IKE process's binary
//!   and the names of the device credentials the init hands it.
//! - Version 4 added the `manual-key` lines: a plan whose policy has manual keys
//!   names them (one-way records), so that the init can record their use in the TPM
//!   before the Viaduct installs them, and never lets them be installed twice.
//! - Version 3 added the `socket-family` lines (version 2 had none and let every
//!   process open any family).
//! - Extension: a new format version may add keys at fixed positions and repeated
//!   blocks. An init never skips unknown fields: it rejects a version it does not
//!   know and stays closed.
//!
//! Nothing in this crate panics, whatever the input.
//!
//! # Where it sits
//! This crate is shared by the host-side image builder (which encodes and
//! validates a plan) and the gateway init (which decodes it): the builder
//! depends on it alone, never on the init, as the policy compiler depends on
//! `policy-blob` alone. Trusted: it depends only on `libc` (socket family
//! numbers), `sha2`, `thiserror` and
//! `zeroize`, never on a host-side crate. Besides the format it holds what the
//! format is made of: [`digest`] (SHA-256 digests, hex) and [`keyuse`] (the
//! key-use records of manual keys, which the init's TPM ledger stores).

pub mod digest;
pub mod error;
pub mod keyuse;

pub use error::Error;
use error::Result;

use crate::digest::Sha256Digest;
use std::fmt;

/// The format version this init reads and writes.
pub const FORMAT_VERSION: u32 = 9;
/// Largest number of `manual-key` lines (the key-use ledger's capacity).
pub const MAX_MANUAL_KEYS: usize = crate::keyuse::LEDGER_ENTRIES;
/// Largest plan the decoder accepts, in bytes.
pub const MAX_PLAN_LEN: usize = 64 * 1024;
/// Largest number of kernel modules in a plan.
pub const MAX_MODULES: usize = 256;
/// Longest path in a plan, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Largest number of services in one compartment.
pub const MAX_SERVICES: usize = 32;
/// Largest number of arguments of one service.
pub const MAX_ARGS: usize = 64;
/// Longest argument, in bytes.
pub const MAX_ARG_LEN: usize = 1024;
/// Where the plan lives inside the initramfs.
pub const PLAN_PATH: &str = "/etc/appliance/plan";
/// Number of uids (and gids) mapped into a personality's user namespace, from its
/// `uid-base` on.
pub const COMPARTMENT_IDS: u32 = 65536;
/// Host uid/gid that is root inside the Viaduct's user namespace (its only id); no
/// personality's range may hold it.
pub const VIADUCT_UID: u32 = 300_000;
/// Host uid/gid that is root inside the IKE process's user namespace (its only id);
/// no personality's range may hold it either.
pub const IKE_UID: u32 = 300_001;
/// The device credential name that is the device identity key (ECDSA P-256 in the
/// TPM, `private_key = "tpm:identity"`): the init hands the IKE process a signer for
/// it, and never unseals or provisions anything by that name.
pub const DEVICE_IDENTITY: &str = "identity";
/// Most device credentials an IKE plan may name.
pub const MAX_IKE_CREDENTIALS: usize = 64;
/// The init's own mounts: no personality root may lie inside them.
pub const INIT_MOUNTS: [&str; 4] = ["/proc", "/sys", "/dev", "/run"];

/// A profile name: `[a-z0-9][a-z0-9._-]{0,63}`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ProfileName(String);

impl ProfileName {
    /// Validates a profile name.
    pub fn new(s: &str) -> Result<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.bytes().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
            });
        if ok {
            Ok(ProfileName(s.to_owned()))
        } else {
            Err(Error::PlanValue {
                field: "profile-name",
                reason: format!("{s:?} must match [a-z0-9][a-z0-9._-]{{0,63}}"),
            })
        }
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A profile version: 1 to 64 characters from `[A-Za-z0-9.+~_-]`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ProfileVersion(String);

impl ProfileVersion {
    /// Validates a profile version.
    pub fn new(s: &str) -> Result<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'~' | b'_' | b'-')
            });
        if ok {
            Ok(ProfileVersion(s.to_owned()))
        } else {
            Err(Error::PlanValue {
                field: "profile-version",
                reason: format!("{s:?} must be 1-64 characters from [A-Za-z0-9.+~_-]"),
            })
        }
    }
    /// The version.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProfileVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Anti-rollback security version of the image.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct SecurityVersion(pub u32);

/// An absolute, normalised path inside the initramfs: `/`-separated components from
/// `[A-Za-z0-9._+-]`, none empty, `.` or `..`; at most [`MAX_PATH_LEN`] bytes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct InitramfsPath(String);

impl InitramfsPath {
    /// Validates a path.
    pub fn new(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::PlanValue {
            field: "path",
            reason: format!("{s:?}: {reason}"),
        };
        if s.len() > MAX_PATH_LEN {
            return Err(bad("too long"));
        }
        let Some(rest) = s.strip_prefix('/') else {
            return Err(bad("must be absolute"));
        };
        for comp in rest.split('/') {
            if comp.is_empty() || comp == "." || comp == ".." {
                return Err(bad("empty, `.` or `..` component"));
            }
            if !comp
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'+' | b'-'))
            {
                return Err(bad("characters outside [A-Za-z0-9._+-/]"));
            }
        }
        Ok(InitramfsPath(s.to_owned()))
    }
    /// The path as a string (always starts with `/`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The path below `root` (used to run the init against a test directory).
    pub fn under(&self, root: &std::path::Path) -> std::path::PathBuf {
        root.join(&self.0[1..])
    }
}

impl fmt::Display for InitramfsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A kernel module to load: an [`InitramfsPath`] ending in `.ko`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ModulePath(InitramfsPath);

impl ModulePath {
    /// Validates a module path.
    pub fn new(s: &str) -> Result<Self> {
        let p = InitramfsPath::new(s)?;
        if !s.ends_with(".ko") {
            return Err(Error::PlanValue {
                field: "module",
                reason: format!("{s:?} must be an uncompressed `.ko` file"),
            });
        }
        Ok(ModulePath(p))
    }
    /// The path.
    pub fn path(&self) -> &InitramfsPath {
        &self.0
    }
}

/// Which personality a compartment holds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub enum Side {
    /// The private side (LAN).
    Red,
    /// The internet side (WAN).
    Black,
}

impl Side {
    /// Both sides, in plan order.
    pub const ALL: [Side; 2] = [Side::Red, Side::Black];
    /// `red` or `black`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Red => "red",
            Side::Black => "black",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A socket address family a compartment's processes may open (`socket-family`).
/// Every other family fails with `EAFNOSUPPORT` (the init's confinement).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub enum SocketFamily {
    /// `AF_UNIX`: local sockets (syslog, libc).
    Unix,
    /// `AF_INET`: IPv4.
    Inet,
    /// `AF_INET6`: IPv6.
    Inet6,
    /// `AF_NETLINK` (`NETLINK_ROUTE` only): interface, address and route setup.
    Netlink,
    /// `AF_PACKET`: raw frames, for a DHCP client before it has an address.
    Packet,
}

impl SocketFamily {
    /// Every family a plan can name, in number (and plan) order.
    pub const ALL: [SocketFamily; 5] = [
        SocketFamily::Unix,
        SocketFamily::Inet,
        SocketFamily::Inet6,
        SocketFamily::Netlink,
        SocketFamily::Packet,
    ];
    /// The name in the plan.
    pub fn as_str(self) -> &'static str {
        match self {
            SocketFamily::Unix => "unix",
            SocketFamily::Inet => "inet",
            SocketFamily::Inet6 => "inet6",
            SocketFamily::Netlink => "netlink",
            SocketFamily::Packet => "packet",
        }
    }
    /// The `AF_*` number.
    pub fn number(self) -> i32 {
        match self {
            SocketFamily::Unix => libc::AF_UNIX,
            SocketFamily::Inet => libc::AF_INET,
            SocketFamily::Inet6 => libc::AF_INET6,
            SocketFamily::Netlink => libc::AF_NETLINK,
            SocketFamily::Packet => libc::AF_PACKET,
        }
    }
    /// Looks a family up by its plan name.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| Error::PlanValue {
                field: "socket-family",
                reason: format!("{s:?} must be one of unix, inet, inet6, netlink, packet"),
            })
    }
}

impl fmt::Display for SocketFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A short name (NIC role, service): `[a-z][a-z0-9_-]{0,14}` (fits an interface name).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ShortName(String);

impl ShortName {
    /// Validates a short name.
    pub fn new(field: &'static str, s: &str) -> Result<Self> {
        let ok = !s.is_empty()
            && s.len() <= 15
            && s.bytes().next().is_some_and(|c| c.is_ascii_lowercase())
            && s.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'));
        if ok {
            Ok(ShortName(s.to_owned()))
        } else {
            Err(Error::PlanValue {
                field,
                reason: format!("{s:?} must match [a-z][a-z0-9_-]{{0,14}}"),
            })
        }
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a physical NIC is recognised at boot. Every given field must match.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct NicMatch {
    /// PCI address, `dddd:bb:dd.f` (lower-case hex).
    pub pci: Option<String>,
    /// MAC address, `xx:xx:xx:xx:xx:xx` (lower-case hex).
    pub mac: Option<String>,
    /// Kernel driver name.
    pub driver: Option<String>,
    /// Kernel interface name (lab and host tests, where there is no PCI device).
    pub name: Option<String>,
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Validates a PCI address `dddd:bb:dd.f`.
pub fn check_pci(s: &str) -> Result<()> {
    let parts: Vec<&str> = s.split([':', '.']).collect();
    let ok = s.len() == 12
        && parts.len() == 4
        && [4, 2, 2, 1]
            == [
                parts[0].len(),
                parts[1].len(),
                parts[2].len(),
                parts[3].len(),
            ]
        && parts.iter().all(|p| is_lower_hex(p))
        && s.as_bytes()[4] == b':'
        && s.as_bytes()[7] == b':'
        && s.as_bytes()[10] == b'.';
    if ok {
        Ok(())
    } else {
        Err(Error::PlanValue {
            field: "match-pci",
            reason: format!("{s:?} must be a lower-case PCI address dddd:bb:dd.f"),
        })
    }
}

/// Validates a MAC address `xx:xx:xx:xx:xx:xx`.
pub fn check_mac(s: &str) -> Result<()> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && is_lower_hex(p)) {
        Ok(())
    } else {
        Err(Error::PlanValue {
            field: "match-mac",
            reason: format!("{s:?} must be a lower-case MAC address xx:xx:xx:xx:xx:xx"),
        })
    }
}

/// Validates a kernel interface or driver name: 1-15 characters from `[A-Za-z0-9_.-]`.
pub fn check_ifname(field: &'static str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::PlanValue {
            field,
            reason: format!("{s:?} must be 1-15 characters from [A-Za-z0-9_.-]"),
        })
    }
}

/// When the compartment init restarts a service that exited.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Restart {
    /// Whatever the exit status.
    Always,
    /// Only after a non-zero exit or a signal.
    OnFailure,
    /// Never (one-shot).
    Never,
}

impl Restart {
    fn as_str(self) -> &'static str {
        match self {
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::Never => "never",
        }
    }
    fn parse(s: &str) -> Result<Self> {
        match s {
            "always" => Ok(Restart::Always),
            "on-failure" => Ok(Restart::OnFailure),
            "never" => Ok(Restart::Never),
            _ => Err(Error::PlanValue {
                field: "restart",
                reason: format!("{s:?} must be always, on-failure or never"),
            }),
        }
    }
}

/// A Linux capability, by number (see [`CAPABILITY_NAMES`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub struct Capability(pub u8);

/// The capability names this init knows, indexed by number (Linux 6.1).
pub const CAPABILITY_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Capabilities a personality service may never hold, even inside its own user
/// namespace: they would reach beyond the compartment or undo its confinement.
///
/// `CAP_SYS_ADMIN` is not among them: FRR's daemons will not start without it
/// in their permitted set. Held in the personality's own user namespace it
/// governs only what that namespace owns (its UTS, IPC, network and mount
/// namespaces), and every system call through which it would widen what the
/// personality reaches (the mount family, `setns`, `unshare`, `clone` with
/// `CLONE_NEW*`, `bpf`, `keyctl`, `perf_event_open`) is refused by the
/// personality's filter whoever calls it (see the init's `confine`).
pub const FORBIDDEN_CAPABILITIES: [&str; 10] = [
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_PTRACE",
    "CAP_SYS_BOOT",
    "CAP_SYS_TIME",
    "CAP_SYSLOG",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_BPF",
    "CAP_PERFMON",
];

impl Capability {
    /// Looks a capability up by its `CAP_*` name; refuses the forbidden ones.
    pub fn from_name(s: &str) -> Result<Self> {
        if FORBIDDEN_CAPABILITIES.contains(&s) {
            return Err(Error::PlanValue {
                field: "cap",
                reason: format!("{s} is never granted to a personality service"),
            });
        }
        match CAPABILITY_NAMES.iter().position(|n| *n == s) {
            Some(i) => Ok(Capability(i as u8)),
            None => Err(Error::PlanValue {
                field: "cap",
                reason: format!("{s:?} is not a known capability name (CAP_*)"),
            }),
        }
    }
    /// The `CAP_*` name.
    pub fn name(self) -> &'static str {
        CAPABILITY_NAMES
            .get(usize::from(self.0))
            .copied()
            .unwrap_or("CAP_UNKNOWN")
    }
}

/// Validates one command-line argument: printable ASCII, single spaces inside only.
pub fn check_arg(s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ARG_LEN
        && s.bytes().all(|c| (0x20..=0x7e).contains(&c))
        && !s.starts_with(' ')
        && !s.ends_with(' ')
        && !s.contains("  ");
    if ok {
        Ok(())
    } else {
        Err(Error::PlanValue {
            field: "arg",
            reason: format!(
                "{s:?} must be 1-{MAX_ARG_LEN} printable ASCII bytes without leading, trailing or double spaces"
            ),
        })
    }
}

/// A long-running program inside a personality.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ServicePlan {
    /// Service name (log lines, status).
    pub name: ShortName,
    /// Restart policy.
    pub restart: Restart,
    /// The only capabilities it may hold (its bounding set), sorted, no duplicates.
    pub caps: Vec<Capability>,
    /// `argv`; `argv[0]` is an absolute path inside the personality's root.
    pub argv: Vec<String>,
}

/// One personality compartment.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CompartmentPlan {
    /// Red or black.
    pub side: Side,
    /// Its root filesystem inside the initramfs.
    pub root: InitramfsPath,
    /// First host uid/gid of its user namespace (65536 ids are mapped, root = uid-base).
    pub uid_base: u32,
    /// cgroup `memory.max`, bytes.
    pub memory_max: u64,
    /// cgroup `pids.max`.
    pub pids_max: u32,
    /// The NIC's role; the NIC is renamed to it inside the compartment.
    pub nic: ShortName,
    /// How the NIC is recognised.
    pub nic_match: NicMatch,
    /// Network setup program inside the root, run to completion before the services.
    pub setup: InitramfsPath,
    /// The socket families its processes may open, sorted, no duplicates.
    pub socket_families: Vec<SocketFamily>,
    /// Services, started in order after the setup.
    pub services: Vec<ServicePlan>,
    /// Run as a virtual machine (the `microvm` runtime); `None`: a namespace
    /// compartment on the gateway's kernel.
    pub vm: Option<VmPlan>,
}

/// How a VM personality's CPU runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VmAccel {
    /// KVM (the gateway).
    Kvm,
    /// QEMU's emulator (hosts without KVM: the tests).
    Tcg,
}

impl VmAccel {
    fn as_str(self) -> &'static str {
        match self {
            VmAccel::Kvm => "kvm",
            VmAccel::Tcg => "tcg",
        }
    }
    fn parse(s: &str) -> Result<Self> {
        match s {
            "kvm" => Ok(VmAccel::Kvm),
            "tcg" => Ok(VmAccel::Tcg),
            _ => Err(Error::PlanValue {
                field: "vm",
                reason: format!("{s:?} must be kvm or tcg"),
            }),
        }
    }
}

/// How a VM personality's NIC reaches its guest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VmNic {
    /// Passed through with VFIO: no host driver touches it (the IOMMU keeps
    /// the device's DMA in the guest's memory).
    Vfio,
    /// A macvtap queue on the NIC: its driver stays in the host kernel, hence
    /// in the trusted base (the TCB report says so).
    Macvtap,
}

impl VmNic {
    fn as_str(self) -> &'static str {
        match self {
            VmNic::Vfio => "vfio",
            VmNic::Macvtap => "macvtap",
        }
    }
    fn parse(s: &str) -> Result<Self> {
        match s {
            "vfio" => Ok(VmNic::Vfio),
            "macvtap" => Ok(VmNic::Macvtap),
            _ => Err(Error::PlanValue {
                field: "vm-nic",
                reason: format!("{s:?} must be vfio or macvtap"),
            }),
        }
    }
}

/// A personality's virtual machine. Paths lie inside the compartment's
/// `root` (the VMM's root), outside its mount points [`VMM_MOUNT_POINTS`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VmPlan {
    /// KVM or TCG.
    pub accel: VmAccel,
    /// QEMU's binary.
    pub qemu: InitramfsPath,
    /// The guest's kernel.
    pub kernel: InitramfsPath,
    /// The guest's initramfs (its root, its init, its copy of this plan).
    pub initrd: InitramfsPath,
    /// Guest memory, MiB, [`VmPlan::MIN_MEMORY_MIB`]..=[`VmPlan::MAX_MEMORY_MIB`].
    pub memory_mib: u32,
    /// How the NIC reaches the guest.
    pub nic: VmNic,
}

impl VmPlan {
    /// Least guest memory.
    pub const MIN_MEMORY_MIB: u32 = 64;
    /// Most guest memory.
    pub const MAX_MEMORY_MIB: u32 = 65536;
}

/// What a VMM needs beside its guest's memory, MiB: a VM compartment's
/// `memory-max` must be at least the guest's memory plus this.
pub const VM_OVERHEAD_MIB: u64 = 64;

/// Mount points inside a VMM's root (its `/dev`, `/proc`, `/run`, `/sys`,
/// `/tmp`): no `vm-*` path may lie inside them.
pub const VMM_MOUNT_POINTS: [&str; 5] = ["/dev", "/proc", "/run", "/sys", "/tmp"];

impl CompartmentPlan {
    /// The union of every service's capabilities plus what the setup needs
    /// (CAP_NET_ADMIN, CAP_NET_RAW), sorted: the compartment's bounding set.
    pub fn bounding_set(&self) -> Vec<Capability> {
        let mut caps: Vec<Capability> = self
            .services
            .iter()
            .flat_map(|s| s.caps.iter().copied())
            .chain([Capability(12), Capability(13)])
            .collect();
        caps.sort();
        caps.dedup();
        caps
    }
}

/// The runtime plan, version [`FORMAT_VERSION`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Plan {
    /// Profile the image was built from.
    pub profile_name: ProfileName,
    /// Version of that profile.
    pub profile_version: ProfileVersion,
    /// Anti-rollback security version.
    pub security_version: SecurityVersion,
    /// Where the compiled policy blob lives in the initramfs.
    pub policy_path: InitramfsPath,
    /// Its expected SHA-256.
    pub policy_sha256: Sha256Digest,
    /// Key-use records of the policy's manual keys, ascending, no duplicates (empty
    /// when every tunnel is keyed by IKE).
    pub manual_keys: Vec<crate::keyuse::KeyUse>,
    /// Kernel modules to load, in order.
    pub modules: Vec<ModulePath>,
    /// The personalities: red first, then black.
    pub compartments: Vec<CompartmentPlan>,
    /// The Viaduct binary inside the initramfs.
    pub viaduct: InitramfsPath,
    /// The IKE process, when the policy keys tunnels by IKE.
    pub ike: Option<IkePlan>,
    /// How a boot of this image is judged good (A/B images).
    pub boot_assessment: Option<BootAssessment>,
    /// Where updates come in and who signs them (none: no updates).
    pub update: Option<UpdatePlan>,
    /// The TCP port on black's loopback where black's routing daemon hands
    /// its forwarding table to the Viaduct (none: no routes are learned).
    pub fpm: Option<FpmPlan>,
}

/// Black's routing daemon's way to the Viaduct: the init listens on
/// `127.0.0.1:port` in black's network namespace and hands the socket to the
/// Viaduct (`--fpm-fd`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FpmPlan {
    /// TCP port, 1..=65535, not the management port.
    pub port: u16,
}

impl FpmPlan {
    /// FRR's default (`fpm address 127.0.0.1 port 2620`).
    pub const DEFAULT_PORT: u16 = 2620;
}

/// The management port when the plan names none (the same as `update_bundle::wire::DEFAULT_PORT`).
pub const DEFAULT_MANAGEMENT_PORT: u16 = 7443;

/// The update receiver: black relays TCP `port` on its address to the init,
/// which installs bundles signed by `release_key`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UpdatePlan {
    /// TCP port, [`UpdatePlan::MIN_PORT`]..=65535 (black's relay needs no
    /// privilege to bind it).
    pub port: u16,
    /// Boot tries an installed update gets (`NAME_VERSION+TRIES.efi`),
    /// 1..=[`UpdatePlan::MAX_TRIES`].
    pub tries: u32,
    /// The release key (Ed25519 public key, 32 bytes).
    pub release_key: [u8; 32],
}

impl UpdatePlan {
    /// Lowest port (unprivileged).
    pub const MIN_PORT: u16 = 1024;
    /// Most boot tries.
    pub const MAX_TRIES: u32 = 10;
}

/// When a boot counts as good: within `timeout_s` seconds of the init's start
/// the gateway is ready and `tunnels` tunnels carry SAs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BootAssessment {
    /// Seconds, [`BootAssessment::MIN_TIMEOUT`]..=[`BootAssessment::MAX_TIMEOUT`].
    pub timeout_s: u32,
    /// Tunnels that must be keyed (0: ready is enough), at most [`MAX_TUNNELS`].
    pub tunnels: u32,
}

impl BootAssessment {
    /// Shortest time a boot gets.
    pub const MIN_TIMEOUT: u32 = 30;
    /// Longest.
    pub const MAX_TIMEOUT: u32 = 3600;
}

/// Most tunnels a boot assessment can wait for.
pub const MAX_TUNNELS: u32 = 4096;

/// The Viaduct's IKE process.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct IkePlan {
    /// Its binary inside the initramfs.
    pub binary: InitramfsPath,
    /// The device credentials (`tpm:<name>` in the profile) it needs, ascending,
    /// no duplicates.
    pub credentials: Vec<CredentialName>,
}

/// A device credential's name: 1-63 of `[a-z0-9-]`, not starting or ending with `-`
/// (the profile's rule for `tpm:<name>`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct CredentialName(String);

impl CredentialName {
    /// Validates a credential name.
    pub fn new(s: &str) -> Result<Self> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(CredentialName(s.to_owned()))
        } else {
            Err(Error::PlanValue {
                field: "ike-credential",
                reason: format!(
                    "{s:?} must be 1-63 lowercase letters, digits and `-`, not at either end"
                ),
            })
        }
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const K_MAGIC: &str = "appliance-plan";
const K_NAME: &str = "profile-name";
const K_VERSION: &str = "profile-version";
const K_SECVER: &str = "security-version";
const K_POLICY_PATH: &str = "policy-path";
const K_POLICY_SHA: &str = "policy-sha256";
const K_MANUAL_KEY: &str = "manual-key";
const K_MODULE: &str = "module";
const K_END: &str = "end";
const K_COMPARTMENT: &str = "compartment";
const K_ROOT: &str = "root";
const K_UID_BASE: &str = "uid-base";
const K_MEMORY_MAX: &str = "memory-max";
const K_PIDS_MAX: &str = "pids-max";
const K_NIC: &str = "nic";
const K_MATCH_PCI: &str = "match-pci";
const K_MATCH_MAC: &str = "match-mac";
const K_MATCH_DRIVER: &str = "match-driver";
const K_MATCH_NAME: &str = "match-name";
const K_SETUP: &str = "setup";
const K_SOCKET_FAMILY: &str = "socket-family";
const K_SERVICE: &str = "service";
const K_RESTART: &str = "restart";
const K_CAP: &str = "cap";
const K_ARG: &str = "arg";
const K_END_SERVICE: &str = "end-service";
const K_END_COMPARTMENT: &str = "end-compartment";
const K_VIADUCT: &str = "viaduct";
const K_VM: &str = "vm";
const K_VM_QEMU: &str = "vm-qemu";
const K_VM_KERNEL: &str = "vm-kernel";
const K_VM_INITRD: &str = "vm-initrd";
const K_VM_MEMORY: &str = "vm-memory";
const K_VM_NIC: &str = "vm-nic";
const K_IKE: &str = "ike";
const K_IKE_CREDENTIAL: &str = "ike-credential";
const K_BOOT_ASSESSMENT: &str = "boot-assessment";
const K_UPDATE: &str = "update";
const K_FPM: &str = "fpm";

impl Plan {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = String::new();
        let mut line = |k: &str, v: &str| {
            s.push_str(k);
            if !v.is_empty() {
                s.push(' ');
                s.push_str(v);
            }
            s.push('\n');
        };
        line(K_MAGIC, &FORMAT_VERSION.to_string());
        line(K_NAME, self.profile_name.as_str());
        line(K_VERSION, self.profile_version.as_str());
        line(K_SECVER, &self.security_version.0.to_string());
        line(K_POLICY_PATH, self.policy_path.as_str());
        line(K_POLICY_SHA, &self.policy_sha256.to_hex());
        for k in &self.manual_keys {
            line(K_MANUAL_KEY, &k.to_hex());
        }
        for m in &self.modules {
            line(K_MODULE, m.path().as_str());
        }
        for c in &self.compartments {
            line(K_COMPARTMENT, c.side.as_str());
            line(K_ROOT, c.root.as_str());
            line(K_UID_BASE, &c.uid_base.to_string());
            line(K_MEMORY_MAX, &c.memory_max.to_string());
            line(K_PIDS_MAX, &c.pids_max.to_string());
            line(K_NIC, c.nic.as_str());
            let m = &c.nic_match;
            for (k, v) in [
                (K_MATCH_PCI, &m.pci),
                (K_MATCH_MAC, &m.mac),
                (K_MATCH_DRIVER, &m.driver),
                (K_MATCH_NAME, &m.name),
            ] {
                if let Some(v) = v {
                    line(k, v);
                }
            }
            line(K_SETUP, c.setup.as_str());
            for f in &c.socket_families {
                line(K_SOCKET_FAMILY, f.as_str());
            }
            for svc in &c.services {
                line(K_SERVICE, svc.name.as_str());
                line(K_RESTART, svc.restart.as_str());
                for cap in &svc.caps {
                    line(K_CAP, cap.name());
                }
                for a in &svc.argv {
                    line(K_ARG, a);
                }
                line(K_END_SERVICE, "");
            }
            if let Some(vm) = &c.vm {
                line(K_VM, vm.accel.as_str());
                line(K_VM_QEMU, vm.qemu.as_str());
                line(K_VM_KERNEL, vm.kernel.as_str());
                line(K_VM_INITRD, vm.initrd.as_str());
                line(K_VM_MEMORY, &vm.memory_mib.to_string());
                line(K_VM_NIC, vm.nic.as_str());
            }
            line(K_END_COMPARTMENT, "");
        }
        line(K_VIADUCT, self.viaduct.as_str());
        if let Some(ike) = &self.ike {
            line(K_IKE, ike.binary.as_str());
            for c in &ike.credentials {
                line(K_IKE_CREDENTIAL, c.as_str());
            }
        }
        if let Some(b) = &self.boot_assessment {
            line(K_BOOT_ASSESSMENT, &format!("{} {}", b.timeout_s, b.tunnels));
        }
        if let Some(u) = &self.update {
            let key: String = u.release_key.iter().map(|b| format!("{b:02x}")).collect();
            line(K_UPDATE, &format!("{} {} {key}", u.port, u.tries));
        }
        if let Some(f) = &self.fpm {
            line(K_FPM, &f.port.to_string());
        }
        line(K_END, "");
        s.into_bytes()
    }

    /// The management channel's TCP port on black's address: the update line's, else
    /// [`DEFAULT_MANAGEMENT_PORT`] (the attestation agent is always served).
    pub fn management_port(&self) -> u16 {
        self.update.map_or(DEFAULT_MANAGEMENT_PORT, |u| u.port)
    }

    /// SHA-256 of the canonical encoding (what `appliance.plan=` pins).
    pub fn digest(&self) -> Sha256Digest {
        Sha256Digest::of(&self.encode())
    }

    /// Decodes and validates a plan. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Plan> {
        if bytes.len() > MAX_PLAN_LEN {
            return Err(syntax(
                0,
                format!("plan is {} bytes, limit is {MAX_PLAN_LEN}", bytes.len()),
            ));
        }
        if let Some(pos) = bytes
            .iter()
            .position(|&c| c != b'\n' && !(0x20..=0x7e).contains(&c))
        {
            let line = 1 + bytes[..pos].iter().filter(|&&c| c == b'\n').count();
            return Err(syntax(
                line,
                format!("byte {:#04x} is not printable ASCII", bytes[pos]),
            ));
        }
        // All bytes are ASCII, so this cannot fail; map the error anyway instead of unwrapping.
        let text = std::str::from_utf8(bytes).map_err(|_| syntax(0, "not ASCII".into()))?;
        let Some(body) = text.strip_suffix('\n') else {
            return Err(syntax(0, "plan must end with a newline".into()));
        };
        let mut lines = Lines {
            inner: body.split('\n').enumerate(),
            last: 0,
        };

        // The version comes first and is checked before anything else.
        let v = lines.value(K_MAGIC)?;
        if v != FORMAT_VERSION.to_string() {
            return Err(Error::PlanVersion {
                found: v.to_owned(),
                supported: FORMAT_VERSION,
            });
        }
        let profile_name = lines.parse(K_NAME, ProfileName::new)?;
        let profile_version = lines.parse(K_VERSION, ProfileVersion::new)?;
        let security_version = lines.parse(K_SECVER, |s| parse_u32("security-version", s))?;
        let policy_path = lines.parse(K_POLICY_PATH, InitramfsPath::new)?;
        let policy_sha256 = lines.parse(K_POLICY_SHA, |s| {
            Sha256Digest::from_hex(s).ok_or_else(|| Error::PlanValue {
                field: "policy-sha256",
                reason: "must be 64 lowercase hex digits".into(),
            })
        })?;
        let mut manual_keys: Vec<crate::keyuse::KeyUse> = Vec::new();
        let (mut n, mut line) = lines.next_line()?;
        while let Some(v) = line.strip_prefix("manual-key ") {
            if manual_keys.len() == MAX_MANUAL_KEYS {
                return Err(syntax(
                    n,
                    format!("more than {MAX_MANUAL_KEYS} manual keys"),
                ));
            }
            let k = crate::keyuse::KeyUse::from_hex(v)
                .ok_or_else(|| syntax(n, "manual-key must be 32 lowercase hex digits".into()))?;
            if manual_keys.last().is_some_and(|last| *last >= k) {
                return Err(syntax(
                    n,
                    "manual-key lines must be ascending without duplicates".into(),
                ));
            }
            manual_keys.push(k);
            (n, line) = lines.next_line()?;
        }
        let mut modules = Vec::new();
        while let Some(v) = line.strip_prefix("module ") {
            if modules.len() == MAX_MODULES {
                return Err(syntax(n, format!("more than {MAX_MODULES} modules")));
            }
            if v.contains(' ') || v.is_empty() {
                return Err(syntax(
                    n,
                    format!("expected `module <path>`, found {line:?}"),
                ));
            }
            modules.push(ModulePath::new(v).map_err(|e| syntax(n, e.to_string()))?);
            (n, line) = lines.next_line()?;
        }
        let mut compartments = Vec::new();
        for side in Side::ALL {
            let (k, v) = split_kv(n, line)?;
            if k != K_COMPARTMENT || v != side.as_str() {
                return Err(syntax(
                    n,
                    format!("expected `{K_COMPARTMENT} {side}`, found {line:?}"),
                ));
            }
            compartments.push(decode_compartment(side, &mut lines)?);
            (n, line) = lines.next_line()?;
        }
        let (k, v) = split_kv(n, line)?;
        if k != K_VIADUCT {
            return Err(syntax(
                n,
                format!("expected key `{K_VIADUCT}`, found `{k}`"),
            ));
        }
        let viaduct = InitramfsPath::new(v).map_err(|e| syntax(n, e.to_string()))?;
        let (mut n, mut line) = lines.next_line()?;
        let mut ike = None;
        if let Some(v) = line.strip_prefix("ike ") {
            let binary = InitramfsPath::new(v).map_err(|e| syntax(n, e.to_string()))?;
            let mut credentials: Vec<CredentialName> = Vec::new();
            (n, line) = lines.next_line()?;
            while let Some(v) = line.strip_prefix("ike-credential ") {
                if credentials.len() == MAX_IKE_CREDENTIALS {
                    return Err(syntax(
                        n,
                        format!("more than {MAX_IKE_CREDENTIALS} IKE credentials"),
                    ));
                }
                let c = CredentialName::new(v).map_err(|e| syntax(n, e.to_string()))?;
                if credentials.last().is_some_and(|last| *last >= c) {
                    return Err(syntax(
                        n,
                        "ike-credential lines must be ascending without duplicates".into(),
                    ));
                }
                credentials.push(c);
                (n, line) = lines.next_line()?;
            }
            ike = Some(IkePlan {
                binary,
                credentials,
            });
        }
        let mut boot_assessment = None;
        if let Some(v) = line.strip_prefix("boot-assessment ") {
            let bad = || {
                syntax(
                    n,
                    format!(
                        "expected `{K_BOOT_ASSESSMENT} <seconds {}..={}> <tunnels 0..={MAX_TUNNELS}>`, found {line:?}",
                        BootAssessment::MIN_TIMEOUT,
                        BootAssessment::MAX_TIMEOUT
                    ),
                )
            };
            let (t, k) = v.split_once(' ').ok_or_else(bad)?;
            let timeout_s = parse_u32(K_BOOT_ASSESSMENT, t).map_err(|_| bad())?;
            let tunnels = parse_u32(K_BOOT_ASSESSMENT, k).map_err(|_| bad())?;
            if !(BootAssessment::MIN_TIMEOUT..=BootAssessment::MAX_TIMEOUT).contains(&timeout_s)
                || tunnels > MAX_TUNNELS
            {
                return Err(bad());
            }
            boot_assessment = Some(BootAssessment { timeout_s, tunnels });
            (n, line) = lines.next_line()?;
        }
        let mut update = None;
        if let Some(v) = line.strip_prefix("update ") {
            let bad = || {
                syntax(
                    n,
                    format!(
                        "expected `{K_UPDATE} <port {}..=65535> <tries 1..={}> <release key: 64 lowercase hex digits>`, found {line:?}",
                        UpdatePlan::MIN_PORT,
                        UpdatePlan::MAX_TRIES
                    ),
                )
            };
            let (p, rest) = v.split_once(' ').ok_or_else(bad)?;
            let (t, k) = rest.split_once(' ').ok_or_else(bad)?;
            let tries = parse_u32(K_UPDATE, t).map_err(|_| bad())?;
            if !(1..=UpdatePlan::MAX_TRIES).contains(&tries) {
                return Err(bad());
            }
            let port = parse_u32(K_UPDATE, p).map_err(|_| bad())?;
            let port = u16::try_from(port)
                .ok()
                .filter(|p| *p >= UpdatePlan::MIN_PORT)
                .ok_or_else(bad)?;
            if k.len() != 64
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(bad());
            }
            let mut release_key = [0u8; 32];
            for (i, o) in release_key.iter_mut().enumerate() {
                *o = k
                    .get(2 * i..2 * i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(bad)?;
            }
            update = Some(UpdatePlan {
                port,
                tries,
                release_key,
            });
            (n, line) = lines.next_line()?;
        }
        let mut fpm = None;
        if let Some(v) = line.strip_prefix("fpm ") {
            let bad = |why: &str| {
                syntax(
                    n,
                    format!("expected `{K_FPM} <port 1..=65535>`{why}, found {line:?}"),
                )
            };
            let port = parse_u32(K_FPM, v)
                .ok()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(""))?;
            let management = update.map_or(DEFAULT_MANAGEMENT_PORT, |u: UpdatePlan| u.port);
            if port == management {
                return Err(bad(" other than the management port"));
            }
            if compartments
                .iter()
                .any(|c| c.side == Side::Black && c.vm.is_some())
            {
                return Err(syntax(
                    n,
                    "`fpm` needs black to be a compartment: a VM's routing daemon cannot reach the Viaduct's FPM socket".into(),
                ));
            }
            fpm = Some(FpmPlan { port });
            (n, line) = lines.next_line()?;
        }
        if line != K_END {
            return Err(syntax(n, format!("expected `{K_END}`, found {line:?}")));
        }
        if let Some((n, _)) = lines.inner.next() {
            return Err(syntax(n + 1, "trailing data after `end`".into()));
        }
        check_apart(&compartments, &policy_path, &viaduct, ike.as_ref())?;
        Ok(Plan {
            profile_name,
            profile_version,
            security_version: SecurityVersion(security_version),
            policy_path,
            policy_sha256,
            manual_keys,
            modules,
            compartments,
            viaduct,
            ike,
            boot_assessment,
            update,
            fpm,
        })
    }
}

/// A `match-*` key and its validator.
type MatchSlot = (&'static str, fn(&str) -> Result<()>);

fn decode_compartment(side: Side, lines: &mut Lines<'_>) -> Result<CompartmentPlan> {
    let root = lines.parse(K_ROOT, InitramfsPath::new)?;
    let uid_base = lines.parse(K_UID_BASE, |s| parse_u32(K_UID_BASE, s))?;
    if uid_base == 0 || uid_base.checked_add(COMPARTMENT_IDS).is_none() {
        return Err(syntax(
            lines.last,
            format!("uid-base {uid_base} must be > 0 and leave room for 65536 ids"),
        ));
    }
    let memory_max = lines.parse(K_MEMORY_MAX, |s| parse_u64(K_MEMORY_MAX, s))?;
    let pids_max = lines.parse(K_PIDS_MAX, |s| parse_u32(K_PIDS_MAX, s))?;
    let nic = lines.parse(K_NIC, |s| ShortName::new(K_NIC, s))?;
    let mut nic_match = NicMatch::default();
    let (mut n, mut line) = lines.next_line()?;
    let slots: [MatchSlot; 4] = [
        (K_MATCH_PCI, check_pci),
        (K_MATCH_MAC, check_mac),
        (K_MATCH_DRIVER, |s| check_ifname(K_MATCH_DRIVER, s)),
        (K_MATCH_NAME, |s| check_ifname(K_MATCH_NAME, s)),
    ];
    for (i, (key, check)) in slots.iter().enumerate() {
        let (k, v) = split_kv(n, line)?;
        if k != *key {
            continue;
        }
        check(v).map_err(|e| syntax(n, e.to_string()))?;
        let slot = match i {
            0 => &mut nic_match.pci,
            1 => &mut nic_match.mac,
            2 => &mut nic_match.driver,
            _ => &mut nic_match.name,
        };
        *slot = Some(v.to_owned());
        (n, line) = lines.next_line()?;
    }
    if nic_match == NicMatch::default() {
        return Err(syntax(
            n,
            format!("nic {nic} needs at least one match-pci, match-mac, match-driver or match-name line"),
        ));
    }
    let (k, v) = split_kv(n, line)?;
    if k != K_SETUP {
        return Err(syntax(n, format!("expected key `{K_SETUP}`, found `{k}`")));
    }
    let setup = InitramfsPath::new(v).map_err(|e| syntax(n, e.to_string()))?;
    let mut socket_families: Vec<SocketFamily> = Vec::new();
    let (mut n, mut line) = lines.next_line()?;
    while let Some(v) = line.strip_prefix("socket-family ") {
        let f = SocketFamily::parse(v).map_err(|e| syntax(n, e.to_string()))?;
        if socket_families.last().is_some_and(|&last| last >= f) {
            return Err(syntax(
                n,
                format!("socket families must be sorted (unix, inet, inet6, netlink, packet) without duplicates ({v})"),
            ));
        }
        socket_families.push(f);
        (n, line) = lines.next_line()?;
    }
    let mut services: Vec<ServicePlan> = Vec::new();
    let mut vm = None;
    let mut first = Some((n, line));
    loop {
        let (n, line) = match first.take() {
            Some(l) => l,
            None => lines.next_line()?,
        };
        if line == K_END_COMPARTMENT {
            break;
        }
        let (k, v) = split_kv(n, line)?;
        if k == K_VM {
            vm = Some(decode_vm(n, v, memory_max, &nic_match, lines)?);
            let (n, line) = lines.next_line()?;
            if line != K_END_COMPARTMENT {
                return Err(syntax(
                    n,
                    format!("expected `{K_END_COMPARTMENT}` after the vm block, found {line:?}"),
                ));
            }
            break;
        }
        if k != K_SERVICE {
            return Err(syntax(
                n,
                format!(
                    "expected `{K_SERVICE}`, `{K_VM}` or `{K_END_COMPARTMENT}`, found key `{k}`"
                ),
            ));
        }
        if services.len() == MAX_SERVICES {
            return Err(syntax(n, format!("more than {MAX_SERVICES} services")));
        }
        let name = ShortName::new(K_SERVICE, v).map_err(|e| syntax(n, e.to_string()))?;
        if services.iter().any(|s| s.name == name) {
            return Err(syntax(n, format!("service {name} appears twice")));
        }
        let restart = lines.parse(K_RESTART, Restart::parse)?;
        let mut caps: Vec<Capability> = Vec::new();
        let mut argv = Vec::new();
        loop {
            let (n, line) = lines.next_line()?;
            if line == K_END_SERVICE {
                if argv.is_empty() {
                    return Err(syntax(n, format!("service {name} has no `arg` line")));
                }
                break;
            }
            let Some((k, v)) = line.split_once(' ') else {
                return Err(syntax(n, format!("expected `key value`, found {line:?}")));
            };
            match k {
                K_CAP if argv.is_empty() => {
                    if v.contains(' ') {
                        return Err(syntax(
                            n,
                            format!("one capability per `cap` line: {line:?}"),
                        ));
                    }
                    let cap = Capability::from_name(v).map_err(|e| syntax(n, e.to_string()))?;
                    if caps.last().is_some_and(|&last| last >= cap) {
                        return Err(syntax(
                            n,
                            format!(
                                "capabilities must be sorted by number without duplicates ({v})"
                            ),
                        ));
                    }
                    caps.push(cap);
                }
                K_ARG => {
                    check_arg(v).map_err(|e| syntax(n, e.to_string()))?;
                    if argv.len() == MAX_ARGS {
                        return Err(syntax(n, format!("more than {MAX_ARGS} arguments")));
                    }
                    if argv.is_empty() && !v.starts_with('/') {
                        return Err(syntax(
                            n,
                            format!("the program {v:?} must be an absolute path"),
                        ));
                    }
                    argv.push(v.to_owned());
                }
                _ => {
                    return Err(syntax(
                        n,
                        format!(
                            "expected `{K_CAP}`, `{K_ARG}` or `{K_END_SERVICE}`, found {line:?}"
                        ),
                    ))
                }
            }
        }
        services.push(ServicePlan {
            name,
            restart,
            caps,
            argv,
        });
    }
    Ok(CompartmentPlan {
        side,
        root,
        uid_base,
        memory_max,
        pids_max,
        nic,
        nic_match,
        setup,
        socket_families,
        services,
        vm,
    })
}

/// The `vm` block (its first line, `vm <accel>`, is line `n`).
fn decode_vm(
    n: usize,
    accel: &str,
    memory_max: u64,
    nic_match: &NicMatch,
    lines: &mut Lines<'_>,
) -> Result<VmPlan> {
    let accel = VmAccel::parse(accel).map_err(|e| syntax(n, e.to_string()))?;
    let mut path = |key: &str| -> Result<InitramfsPath> {
        let p = lines.parse(key, InitramfsPath::new)?;
        if let Some(m) = VMM_MOUNT_POINTS.iter().find(|m| path_within(p.as_str(), m)) {
            return Err(syntax(
                lines.last,
                format!("{key} {p} lies inside the VMM's mount point {m}"),
            ));
        }
        Ok(p)
    };
    let qemu = path(K_VM_QEMU)?;
    let kernel = path(K_VM_KERNEL)?;
    let initrd = path(K_VM_INITRD)?;
    let memory_mib = lines.parse(K_VM_MEMORY, |s| parse_u32(K_VM_MEMORY, s))?;
    if !(VmPlan::MIN_MEMORY_MIB..=VmPlan::MAX_MEMORY_MIB).contains(&memory_mib) {
        return Err(syntax(
            lines.last,
            format!(
                "vm-memory {memory_mib} MiB must be {}..={} MiB",
                VmPlan::MIN_MEMORY_MIB,
                VmPlan::MAX_MEMORY_MIB
            ),
        ));
    }
    let need = (u64::from(memory_mib) + VM_OVERHEAD_MIB) << 20;
    if memory_max < need {
        return Err(syntax(
            lines.last,
            format!(
                "vm-memory {memory_mib} MiB does not fit memory-max {memory_max}: the VMM's cgroup needs at least {need} bytes (the guest's memory and {VM_OVERHEAD_MIB} MiB for QEMU)"
            ),
        ));
    }
    let nic = lines.parse(K_VM_NIC, VmNic::parse)?;
    if nic == VmNic::Vfio {
        if nic_match.pci.is_none() {
            return Err(syntax(
                lines.last,
                "vm-nic vfio passes the NIC through by its PCI address: the nic needs a match-pci line".into(),
            ));
        }
        if accel != VmAccel::Kvm {
            return Err(syntax(lines.last, "vm-nic vfio needs `vm kvm`".into()));
        }
    }
    Ok(VmPlan {
        accel,
        qemu,
        kernel,
        initrd,
        memory_mib,
        nic,
    })
}

/// Whether `inner` is `outer` or lies below it (whole components).
fn path_within(inner: &str, outer: &str) -> bool {
    inner == outer
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The checks that span compartments: disjoint uid ranges without the Viaduct's uid,
/// separate roots holding none of the init's secrets (see the module invariants).
fn check_apart(
    compartments: &[CompartmentPlan],
    policy: &InitramfsPath,
    viaduct: &InitramfsPath,
    ike: Option<&IkePlan>,
) -> Result<()> {
    let bad = |field: &'static str, reason: String| Err(Error::PlanValue { field, reason });
    let range = |c: &CompartmentPlan| {
        let end = u64::from(c.uid_base) + u64::from(COMPARTMENT_IDS);
        (u64::from(c.uid_base), end)
    };
    for (i, a) in compartments.iter().enumerate() {
        let (lo, hi) = range(a);
        for (uid, whose) in [
            (VIADUCT_UID, "the Viaduct's"),
            (IKE_UID, "the IKE process's"),
        ] {
            if (lo..hi).contains(&u64::from(uid)) {
                return bad(
                    "uid-base",
                    format!("{}: uids {lo}..{hi} hold {whose} uid {uid}", a.side),
                );
            }
        }
        let root = a.root.as_str();
        for (what, p) in [
            ("the policy blob", policy.as_str()),
            ("the plan", PLAN_PATH),
            ("the Viaduct", viaduct.as_str()),
            ("the IKE process", ike.map_or("", |i| i.binary.as_str())),
        ] {
            if p.is_empty() {
                continue;
            }
            if path_within(p, root) {
                return bad(
                    "root",
                    format!("{}: root {root} holds {what} ({p})", a.side),
                );
            }
        }
        if let Some(m) = INIT_MOUNTS.iter().find(|m| path_within(root, m)) {
            return bad(
                "root",
                format!("{}: root {root} lies inside the init's {m}", a.side),
            );
        }
        for b in &compartments[i + 1..] {
            let (blo, bhi) = range(b);
            if lo < bhi && blo < hi {
                return bad(
                    "uid-base",
                    format!(
                        "{} (uids {lo}..{hi}) and {} (uids {blo}..{bhi}) overlap",
                        a.side, b.side
                    ),
                );
            }
            let other = b.root.as_str();
            if path_within(root, other) || path_within(other, root) {
                return bad(
                    "root",
                    format!(
                        "{} ({root}) and {} ({other}) must be separate trees",
                        a.side, b.side
                    ),
                );
            }
        }
    }
    Ok(())
}

fn syntax(line: usize, reason: String) -> Error {
    Error::PlanSyntax { line, reason }
}

fn canonical_decimal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

fn parse_u32(field: &'static str, s: &str) -> Result<u32> {
    match s.parse::<u32>() {
        Ok(v) if canonical_decimal(s) => Ok(v),
        _ => Err(Error::PlanValue {
            field,
            reason: format!("{s:?} must be a decimal u32 without leading zeros"),
        }),
    }
}

fn parse_u64(field: &'static str, s: &str) -> Result<u64> {
    match s.parse::<u64>() {
        Ok(v) if canonical_decimal(s) => Ok(v),
        _ => Err(Error::PlanValue {
            field,
            reason: format!("{s:?} must be a decimal u64 without leading zeros"),
        }),
    }
}

fn split_kv(n: usize, line: &str) -> Result<(&str, &str)> {
    let Some((k, v)) = line.split_once(' ') else {
        return Err(syntax(n, format!("expected `key value`, found {line:?}")));
    };
    if k.is_empty() || v.is_empty() || v.contains(' ') {
        return Err(syntax(
            n,
            format!("expected exactly one space between key and value in {line:?}"),
        ));
    }
    Ok((k, v))
}

struct Lines<'a> {
    inner: std::iter::Enumerate<std::str::Split<'a, char>>,
    last: usize,
}

impl<'a> Lines<'a> {
    fn next_line(&mut self) -> Result<(usize, &'a str)> {
        match self.inner.next() {
            Some((i, l)) => {
                self.last = i + 1;
                Ok((i + 1, l))
            }
            None => Err(syntax(
                self.last + 1,
                "unexpected end of plan (missing `end`?)".into(),
            )),
        }
    }

    fn value(&mut self, key: &str) -> Result<&'a str> {
        let (n, line) = self.next_line()?;
        let (k, v) = split_kv(n, line)?;
        if k != key {
            return Err(syntax(n, format!("expected key `{key}`, found `{k}`")));
        }
        Ok(v)
    }

    fn parse<T>(&mut self, key: &str, f: impl FnOnce(&str) -> Result<T>) -> Result<T> {
        let v = self.value(key)?;
        let n = self.last;
        f(v).map_err(|e| syntax(n, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> Plan {
        Plan {
            profile_name: ProfileName::new("vpn-gateway").unwrap(),
            profile_version: ProfileVersion::new("1.4.0").unwrap(),
            security_version: SecurityVersion(3),
            policy_path: InitramfsPath::new("/etc/appliance/policy.bin").unwrap(),
            policy_sha256: Sha256Digest::of(b"policy"),
            manual_keys: vec![crate::keyuse::KeyUse([0x11; 16])],
            modules: vec![
                ModulePath::new("/lib/modules/failover.ko").unwrap(),
                ModulePath::new("/lib/modules/virtio_net.ko").unwrap(),
            ],
            compartments: vec![
                CompartmentPlan {
                    side: Side::Red,
                    root: InitramfsPath::new("/personalities/red").unwrap(),
                    uid_base: 100000,
                    memory_max: 268435456,
                    pids_max: 256,
                    nic: ShortName::new("nic", "lan").unwrap(),
                    nic_match: NicMatch {
                        pci: Some("0000:00:02.0".into()),
                        mac: None,
                        driver: Some("virtio_net".into()),
                        name: None,
                    },
                    setup: InitramfsPath::new("/etc/appliance/network").unwrap(),
                    socket_families: vec![
                        SocketFamily::Unix,
                        SocketFamily::Inet,
                        SocketFamily::Netlink,
                    ],
                    services: vec![ServicePlan {
                        name: ShortName::new("service", "dnsmasq").unwrap(),
                        restart: Restart::Always,
                        caps: vec![
                            Capability::from_name("CAP_NET_ADMIN").unwrap(),
                            Capability::from_name("CAP_NET_RAW").unwrap(),
                        ],
                        argv: vec!["/usr/sbin/dnsmasq".into(), "--conf-file=/etc/a b".into()],
                    }],
                    vm: None,
                },
                CompartmentPlan {
                    side: Side::Black,
                    root: InitramfsPath::new("/personalities/black").unwrap(),
                    uid_base: 200000,
                    memory_max: 134217728,
                    pids_max: 128,
                    nic: ShortName::new("nic", "wan").unwrap(),
                    nic_match: NicMatch {
                        name: Some("veth-wan".into()),
                        ..NicMatch::default()
                    },
                    setup: InitramfsPath::new("/etc/appliance/network").unwrap(),
                    socket_families: SocketFamily::ALL.to_vec(),
                    services: vec![],
                    vm: Some(VmPlan {
                        accel: VmAccel::Kvm,
                        qemu: InitramfsPath::new("/usr/bin/qemu-system-x86_64").unwrap(),
                        kernel: InitramfsPath::new("/guest/vmlinuz").unwrap(),
                        initrd: InitramfsPath::new("/guest/initrd").unwrap(),
                        memory_mib: 64,
                        nic: VmNic::Macvtap,
                    }),
                },
            ],
            viaduct: InitramfsPath::new("/usr/sbin/viaduct").unwrap(),
            ike: Some(IkePlan {
                binary: InitramfsPath::new("/usr/sbin/viaduct-ike").unwrap(),
                credentials: vec![
                    CredentialName::new("gw-identity").unwrap(),
                    CredentialName::new("site-psk").unwrap(),
                ],
            }),
            boot_assessment: Some(BootAssessment {
                timeout_s: 300,
                tunnels: 2,
            }),
            update: Some(UpdatePlan {
                port: 7443,
                tries: 3,
                release_key: [0xab; 32],
            }),
            fpm: None,
        }
    }

    #[test]
    fn ike_lines_are_optional_ordered_and_checked() {
        let text = String::from_utf8(sample().encode()).unwrap();
        let dec = |t: String| Plan::decode(t.as_bytes());
        // Without credentials, and without IKE at all.
        let p =
            dec(text.replace("ike-credential gw-identity\nike-credential site-psk\n", "")).unwrap();
        assert_eq!(p.ike.unwrap().credentials, vec![]);
        let p = dec(text.replace(
            "ike /usr/sbin/viaduct-ike\nike-credential gw-identity\nike-credential site-psk\n",
            "",
        ))
        .unwrap();
        assert!(p.ike.is_none());
        for bad in [
            // Out of order, duplicated, a credential without `ike`, bad names.
            text.replace(
                "gw-identity\nike-credential site-psk",
                "site-psk\nike-credential gw-identity",
            ),
            text.replace("ike-credential gw-identity", "ike-credential site-psk"),
            text.replace("ike /usr/sbin/viaduct-ike\n", ""),
            text.replace("ike-credential gw-identity", "ike-credential -gw"),
            text.replace("ike-credential gw-identity", "ike-credential GW"),
            text.replace("ike-credential gw-identity", "ike-credential gw_identity"),
            text.replace(
                "ike-credential gw-identity",
                &format!("ike-credential {}", "a".repeat(64)),
            ),
            text.replace("ike /usr/sbin/viaduct-ike", "ike usr/sbin/viaduct-ike"),
            // `ike` after its credentials, or twice.
            text.replace(
                "viaduct /usr/sbin/viaduct\nike /usr/sbin/viaduct-ike\n",
                "viaduct /usr/sbin/viaduct\n",
            )
            .replace("end\n", "ike /usr/sbin/viaduct-ike\nend\n"),
            text.replace(
                "ike /usr/sbin/viaduct-ike\n",
                "ike /usr/sbin/viaduct-ike\nike /usr/sbin/viaduct-ike\n",
            ),
            // Inside a personality's root.
            text.replace(
                "ike /usr/sbin/viaduct-ike",
                "ike /personalities/red/viaduct-ike",
            ),
        ] {
            assert!(dec(bad.clone()).is_err(), "accepted:\n{bad}");
        }
        let many: String = (0..=MAX_IKE_CREDENTIALS)
            .map(|i| format!("ike-credential c{i:03}\n"))
            .collect();
        assert!(dec(text.replace(
            "ike-credential gw-identity\nike-credential site-psk\n",
            &many
        ))
        .is_err());
        // No personality may hold the IKE process's uid.
        let mut p = sample();
        p.compartments[1].uid_base = IKE_UID;
        p.compartments[0].uid_base = 1;
        let e = Plan::decode(&p.encode()).unwrap_err();
        assert!(e.to_string().contains("IKE process"), "{e}");
    }

    /// The fuzz seeds of the current format decode (a format change that
    /// forgets them leaves the fuzzers stopping at the first line). The plan's
    /// fuzz targets live with the init's, in `gateway/fuzz`.
    #[test]
    fn current_format_fuzz_seeds_decode() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/plan_decode");
        let suffix = format!("-format-{FORMAT_VERSION}");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.to_string_lossy().ends_with(&suffix) {
                let bytes = std::fs::read(&path).unwrap();
                Plan::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(
            n >= 2,
            "no seeds of format {FORMAT_VERSION} in {}",
            dir.display()
        );
    }

    #[test]
    fn encodes_documented_layout() {
        let text = String::from_utf8(sample().encode()).unwrap();
        let expected = format!(
            "appliance-plan 9\nprofile-name vpn-gateway\nprofile-version 1.4.0\nsecurity-version 3\n\
             policy-path /etc/appliance/policy.bin\npolicy-sha256 {}\n\
             manual-key 11111111111111111111111111111111\n\
             module /lib/modules/failover.ko\nmodule /lib/modules/virtio_net.ko\n\
             compartment red\nroot /personalities/red\nuid-base 100000\nmemory-max 268435456\n\
             pids-max 256\nnic lan\nmatch-pci 0000:00:02.0\nmatch-driver virtio_net\n\
             setup /etc/appliance/network\nsocket-family unix\nsocket-family inet\n\
             socket-family netlink\nservice dnsmasq\nrestart always\n\
             cap CAP_NET_ADMIN\ncap CAP_NET_RAW\narg /usr/sbin/dnsmasq\narg --conf-file=/etc/a b\n\
             end-service\nend-compartment\n\
             compartment black\nroot /personalities/black\nuid-base 200000\nmemory-max 134217728\n\
             pids-max 128\nnic wan\nmatch-name veth-wan\nsetup /etc/appliance/network\n\
             socket-family unix\nsocket-family inet\nsocket-family inet6\n\
             socket-family netlink\nsocket-family packet\n\
             vm kvm\nvm-qemu /usr/bin/qemu-system-x86_64\nvm-kernel /guest/vmlinuz\n\
             vm-initrd /guest/initrd\nvm-memory 64\nvm-nic macvtap\n\
             end-compartment\nviaduct /usr/sbin/viaduct\nike /usr/sbin/viaduct-ike\n\
             ike-credential gw-identity\nike-credential site-psk\n\
             boot-assessment 300 2\nupdate 7443 3 {}\nend\n",
            Sha256Digest::of(b"policy"),
            "ab".repeat(32)
        );
        assert_eq!(text, expected);
        assert_eq!(Plan::decode(text.as_bytes()).unwrap(), sample());
    }

    #[test]
    fn vm_block_is_optional_ordered_and_checked() {
        let mut p = sample();
        p.compartments[1].vm = None;
        assert_eq!(Plan::decode(&p.encode()).unwrap(), p);
        // Both personalities as VMs, red's NIC by VFIO (it has match-pci).
        let mut p = sample();
        let mut vm = p.compartments[1].vm.clone().unwrap();
        vm.nic = VmNic::Vfio;
        vm.memory_mib = 192;
        p.compartments[0].vm = Some(vm);
        assert_eq!(Plan::decode(&p.encode()).unwrap(), p);
        let err = |f: &dyn Fn(String) -> String| mutate(f).unwrap_err().to_string();
        // VFIO needs the PCI address, and KVM.
        let e = err(&|s| s.replace("vm-nic macvtap", "vm-nic vfio"));
        assert!(e.contains("match-pci"), "{e}");
        let e = {
            let mut p = sample();
            let mut vm = p.compartments[1].vm.clone().unwrap();
            vm.nic = VmNic::Vfio;
            vm.accel = VmAccel::Tcg;
            p.compartments[0].vm = Some(vm);
            Plan::decode(&p.encode()).unwrap_err().to_string()
        };
        assert!(e.contains("needs `vm kvm`"), "{e}");
        // The guest's memory must fit the VMM's cgroup with room for QEMU.
        let e = err(&|s| s.replace("vm-memory 64", "vm-memory 65"));
        assert!(
            e.contains("memory-max 134217728") && e.contains("line "),
            "{e}"
        );
        for (from, to, says) in [
            ("vm-memory 64", "vm-memory 63", "64..=65536"),
            ("vm-memory 64", "vm-memory 064", "leading zeros"),
            ("vm kvm", "vm xen", "kvm or tcg"),
            ("vm-nic macvtap", "vm-nic tap", "vfio or macvtap"),
            (
                "vm-kernel /guest/vmlinuz",
                "vm-kernel /proc/vmlinuz",
                "mount point /proc",
            ),
            (
                "vm-initrd /guest/initrd",
                "vm-initrd /run/x/initrd",
                "mount point /run",
            ),
            (
                "vm-qemu /usr/bin/qemu-system-x86_64",
                "vm-qemu usr/bin/qemu",
                "absolute",
            ),
            ("vm-kernel /guest/vmlinuz\n", "", "expected key `vm-kernel`"),
            (
                "vm-nic macvtap\n",
                "vm-nic macvtap\nvm-nic macvtap\n",
                "after the vm block",
            ),
            (
                "socket-family packet\nvm kvm",
                "socket-family packet\nvm kvm\nservice x",
                "expected key `vm-qemu`",
            ),
        ] {
            let e = err(&|s| s.replace(from, to));
            assert!(e.contains(says), "{from} -> {to}: {e}");
        }
        // A service after the vm block is refused (the block comes last).
        let e = err(&|s| {
            s.replace(
                "vm-nic macvtap\n",
                "vm-nic macvtap\nservice x\nrestart never\narg /x\nend-service\n",
            )
        });
        assert!(e.contains("after the vm block"), "{e}");
    }

    #[test]
    fn rejects_unknown_version_before_anything_else() {
        let err = Plan::decode(b"appliance-plan 1\nwhatever\n").unwrap_err();
        assert!(
            matches!(err, Error::PlanVersion { ref found, supported: 9 } if found == "1"),
            "{err}"
        );
    }

    #[test]
    fn boot_assessment_is_optional_and_bounded() {
        let mut p = sample();
        p.boot_assessment = None;
        assert_eq!(Plan::decode(&p.encode()).unwrap(), p);
        for bad in [
            "boot-assessment 29 2",
            "boot-assessment 3601 2",
            "boot-assessment 300 4097",
            "boot-assessment 300",
            "boot-assessment 300 2 1",
            "boot-assessment 0300 2",
            "boot-assessment -1 2",
        ] {
            let e = mutate(|t| t.replace("boot-assessment 300 2", bad)).unwrap_err();
            assert!(e.to_string().contains("boot-assessment"), "{bad}: {e}");
        }
    }

    #[test]
    fn fpm_is_optional_checked_and_only_for_a_black_compartment() {
        let mut p = sample();
        p.compartments[1].vm = None;
        assert!(!String::from_utf8(p.encode()).unwrap().contains("\nfpm "));
        p.fpm = Some(FpmPlan { port: 2620 });
        let text = String::from_utf8(p.encode()).unwrap();
        assert!(
            text.ends_with(&format!(
                "update 7443 3 {}\nfpm 2620\nend\n",
                "ab".repeat(32)
            )),
            "{text}"
        );
        assert_eq!(Plan::decode(text.as_bytes()).unwrap(), p);
        for (bad, says) in [
            ("fpm 0", "fpm <port 1..=65535>"),
            ("fpm 65536", "fpm <port 1..=65535>"),
            ("fpm 02620", "fpm <port 1..=65535>"),
            ("fpm -1", "fpm <port 1..=65535>"),
            ("fpm 2620 1", "fpm <port 1..=65535>"),
            ("fpm  2620", "fpm <port 1..=65535>"),
            ("fpm 7443", "other than the management port"),
        ] {
            let e = Plan::decode(text.replace("fpm 2620", bad).as_bytes()).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
        // Without an update line, the management port is the default one.
        p.update = None;
        let text = String::from_utf8(p.encode()).unwrap();
        let e = Plan::decode(text.replace("fpm 2620", "fpm 7443").as_bytes()).unwrap_err();
        assert!(
            e.to_string().contains("other than the management port"),
            "{e}"
        );
        // A VM's routing daemon has no way to the socket.
        let vm = sample();
        let text = String::from_utf8(vm.encode())
            .unwrap()
            .replace("\nend\n", "\nfpm 2620\nend\n");
        let e = Plan::decode(text.as_bytes()).unwrap_err();
        assert!(
            e.to_string().contains("needs black to be a compartment"),
            "{e}"
        );
    }

    #[test]
    fn update_is_optional_and_checked() {
        let mut p = sample();
        p.update = None;
        assert_eq!(Plan::decode(&p.encode()).unwrap(), p);
        let key = "ab".repeat(32);
        let line = format!("update 7443 3 {key}");
        for bad in [
            format!("update 1023 3 {key}"),
            format!("update 65536 3 {key}"),
            format!("update 07443 3 {key}"),
            format!("update 7443 0 {key}"),
            format!("update 7443 11 {key}"),
            format!("update 7443 {key}"),
            format!("update 7443 3 {}", "AB".repeat(32)),
            format!("update 7443 3 {}", "ab".repeat(31)),
            format!("update 7443 3 {key}0"),
            format!("update 7443 3 {key} x"),
            "update 7443 3".to_owned(),
            format!("update  7443 3 {key}"),
        ] {
            let e = mutate(|t| t.replace(&line, &bad)).unwrap_err();
            assert!(e.to_string().contains("update"), "{bad}: {e}");
        }
        // Fixed position: after boot-assessment, before end.
        assert!(mutate(|t| t
            .replace(&format!("{line}\n"), "")
            .replace("boot-assessment", &format!("{line}\nboot-assessment")))
        .is_err());
    }

    fn mutate(f: impl FnOnce(String) -> String) -> Result<Plan> {
        Plan::decode(f(String::from_utf8(sample().encode()).unwrap()).as_bytes())
    }

    #[test]
    fn manual_keys_are_canonical() {
        let one = "manual-key 11111111111111111111111111111111\n";
        let two = "manual-key 11111111111111111111111111111111\n\
                   manual-key 22222222222222222222222222222222\n";
        let p = mutate(|s| s.replace(one, two)).unwrap();
        assert_eq!(p.manual_keys.len(), 2);
        let p = mutate(|s| s.replace(one, "")).unwrap();
        assert!(p.manual_keys.is_empty());
        for bad in [
            // descending, duplicate, upper case, short, long, after a module
            "manual-key 22222222222222222222222222222222\nmanual-key 11111111111111111111111111111111\n",
            "manual-key 11111111111111111111111111111111\nmanual-key 11111111111111111111111111111111\n",
            "manual-key AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
            "manual-key 1111111111111111111111111111111\n",
            "manual-key 111111111111111111111111111111111\n",
            "manual-key  11111111111111111111111111111111\n",
        ] {
            assert!(mutate(|s| s.replace(one, bad)).is_err(), "{bad}");
        }
        assert!(mutate(|s| s.replace(one, "").replace(
            "module /lib/modules/virtio_net.ko\n",
            &format!("module /lib/modules/virtio_net.ko\n{one}")
        ))
        .is_err());
        let many: String = (0..=MAX_MANUAL_KEYS)
            .map(|i| format!("manual-key {i:032x}\n"))
            .collect();
        assert!(mutate(|s| s.replace(one, &many)).is_err());
        let max: String = (1..=MAX_MANUAL_KEYS)
            .map(|i| format!("manual-key {i:032x}\n"))
            .collect();
        assert_eq!(
            mutate(|s| s.replace(one, &max)).unwrap().manual_keys.len(),
            MAX_MANUAL_KEYS
        );
    }

    #[test]
    fn rejects_trailing_garbage_and_structural_damage() {
        assert!(mutate(|s| s + "x").is_err());
        assert!(mutate(|s| s + "\n").is_err());
        assert!(mutate(|s| s + "end\n").is_err());
        assert!(mutate(|s| s.trim_end().to_owned()).is_err());
        assert!(mutate(|s| s.replace('\n', "\r\n")).is_err());
        assert!(mutate(|s| s.replace("profile-name ", "profile-name  ")).is_err());
        assert!(mutate(|s| s.replace("security-version 3", "security-version 03")).is_err());
        assert!(
            mutate(|s| s.replace("security-version 3", "security-version 4294967296")).is_err()
        );
        assert!(mutate(|s| s.replace("/lib/modules/failover.ko", "/lib/../failover.ko")).is_err());
        assert!(mutate(|s| s.replace("failover.ko", "failover.ko.xz")).is_err());
        assert!(mutate(|s| s.replace("policy-path /etc", "policy-path etc")).is_err());
        assert!(mutate(|s| s.replace("module /lib/modules/failover.ko\n", "")).is_ok());
        assert!(mutate(|s| s.replace("profile-version 1.4.0\n", "")).is_err());
        assert!(mutate(|s| s.replace("end\n", "")).is_err());
        assert!(mutate(|s| s.replace("viaduct /usr/sbin/viaduct\n", "nic eth0\n")).is_err());
    }

    #[test]
    fn rejects_damaged_compartments() {
        // Order, presence and values of every compartment field.
        assert!(mutate(|s| s.replace("compartment red", "compartment black")).is_err());
        assert!(mutate(|s| s.replace("uid-base 100000", "uid-base 0")).is_err());
        assert!(mutate(|s| s.replace("uid-base 100000", "uid-base 4294967295")).is_err());
        assert!(mutate(|s| s.replace("memory-max 268435456\n", "")).is_err());
        assert!(mutate(|s| s.replace("nic lan", "nic LAN")).is_err());
        assert!(mutate(|s| s.replace("match-pci 0000:00:02.0", "match-pci 0000:00:02")).is_err());
        assert!(mutate(|s| s.replace("match-name veth-wan\n", "")).is_err());
        assert!(mutate(|s| s.replace(
            "match-pci 0000:00:02.0\nmatch-driver virtio_net",
            "match-driver virtio_net\nmatch-pci 0000:00:02.0"
        ))
        .is_err());
        assert!(
            mutate(|s| s.replace("match-name veth-wan", "match-mac 52:54:00:AB:00:01")).is_err()
        );
        assert!(
            mutate(|s| s.replace("match-name veth-wan", "match-mac 52:54:00:ab:00:01")).is_ok()
        );
        assert!(mutate(|s| s.replace("restart always", "restart sometimes")).is_err());
        assert!(mutate(|s| s.replace(
            "cap CAP_NET_ADMIN\ncap CAP_NET_RAW",
            "cap CAP_NET_RAW\ncap CAP_NET_ADMIN"
        ))
        .is_err());
        assert!(mutate(|s| s.replace("cap CAP_NET_RAW", "cap CAP_NET_ADMIN")).is_err());
        assert!(mutate(|s| s.replace("cap CAP_NET_RAW", "cap CAP_SYS_PTRACE")).is_err());
        assert!(mutate(|s| s.replace("cap CAP_NET_RAW", "cap CAP_SYS_MODULE")).is_err());
        assert!(mutate(|s| s.replace("cap CAP_NET_RAW", "cap CAP_FLY")).is_err());
        assert!(mutate(|s| s.replace("arg /usr/sbin/dnsmasq", "arg usr/sbin/dnsmasq")).is_err());
        assert!(
            mutate(|s| s.replace("arg --conf-file=/etc/a b", "arg --conf-file=/etc/a  b")).is_err()
        );
        assert!(mutate(|s| s.replace("arg --conf-file=/etc/a b", "arg ")).is_err());
        assert!(
            mutate(|s| s.replace("arg /usr/sbin/dnsmasq\narg --conf-file=/etc/a b\n", "")).is_err()
        );
        assert!(mutate(|s| s.replace(
            "end-service\n",
            "end-service\nservice dnsmasq\nrestart never\narg /x\nend-service\n"
        ))
        .is_err());
        assert!(mutate(|s| s.replace("end-compartment\nviaduct", "viaduct")).is_err());
        assert!(mutate(|s| s.replace("viaduct /usr/sbin/viaduct\n", "")).is_err());
    }

    #[test]
    fn socket_families_are_known_sorted_and_unique() {
        assert!(mutate(|s| s.replace("socket-family inet\n", "")).is_ok());
        assert!(mutate(|s| s.replace("socket-family netlink\nservice", "service")).is_ok());
        assert!(mutate(|s| s.replace(
            "socket-family inet\n",
            "socket-family inet\nsocket-family inet\n"
        ))
        .is_err());
        assert!(mutate(|s| s.replace(
            "socket-family unix\nsocket-family inet\nsocket-family netlink",
            "socket-family inet\nsocket-family unix\nsocket-family netlink"
        ))
        .is_err());
        for bad in ["x25", "alg", "INET", "17", "packet ", "vsock", "key"] {
            let err = mutate(|s| {
                s.replacen("socket-family inet\n", &format!("socket-family {bad}\n"), 1)
            });
            assert!(err.is_err(), "{bad}");
        }
        // Families come right after `setup`, before the services.
        assert!(mutate(|s| s.replace(
            "socket-family netlink\nservice dnsmasq",
            "service dnsmasq\nsocket-family netlink"
        ))
        .is_err());
        let p = sample();
        let numbers: Vec<i32> = p.compartments[1]
            .socket_families
            .iter()
            .map(|f| f.number())
            .collect();
        assert_eq!(
            numbers,
            [
                libc::AF_UNIX,
                libc::AF_INET,
                libc::AF_INET6,
                libc::AF_NETLINK,
                libc::AF_PACKET
            ]
        );
    }

    #[test]
    fn compartments_must_stay_apart() {
        let decode = |p: &Plan| Plan::decode(&p.encode());
        let field = |r: Result<Plan>| match r {
            Err(Error::PlanValue { field, .. }) => field,
            other => panic!("expected a value error, got {other:?}"),
        };
        // uid ranges: overlapping in any way, equal, or holding the Viaduct's uid.
        for (red, black) in [
            (100_000, 100_000),
            (100_000, 165_535),
            (165_535, 100_000),
            (100_000, 34_465),
            (1, 65_536 - 1),
        ] {
            let mut p = sample();
            p.compartments[0].uid_base = red;
            p.compartments[1].uid_base = black;
            assert_eq!(field(decode(&p)), "uid-base", "{red} {black}");
        }
        let mut p = sample();
        p.compartments[0].uid_base = 1;
        p.compartments[1].uid_base = 65_537;
        assert!(decode(&p).is_ok(), "adjacent ranges are apart");
        for base in [VIADUCT_UID, VIADUCT_UID - 65_535, VIADUCT_UID - 1, 250_000] {
            let mut p = sample();
            p.compartments[1].uid_base = base;
            assert_eq!(field(decode(&p)), "uid-base", "{base}");
        }
        let mut p = sample();
        p.compartments[1].uid_base = IKE_UID + 1;
        assert!(decode(&p).is_ok());
        p.compartments[1].uid_base = VIADUCT_UID + 1;
        assert_eq!(field(decode(&p)), "uid-base", "holds the IKE process's uid");
        p.compartments[1].uid_base = VIADUCT_UID - 65_536;
        assert!(decode(&p).is_ok());
        // Roots: distinct, not nested, holding no secret of the init, not in its mounts.
        for (red, black) in [
            ("/personalities/red", "/personalities/red"),
            ("/personalities", "/personalities/black"),
            ("/personalities/black/red", "/personalities/black"),
            ("/etc", "/personalities/black"),
            ("/etc/appliance", "/personalities/black"),
            ("/usr", "/personalities/black"),
            ("/personalities/red", "/usr/sbin"),
            ("/proc", "/personalities/black"),
            ("/personalities/red", "/sys/fs"),
            ("/dev/shm", "/personalities/black"),
            ("/run/red", "/personalities/black"),
        ] {
            let mut p = sample();
            p.compartments[0].root = InitramfsPath::new(red).unwrap();
            p.compartments[1].root = InitramfsPath::new(black).unwrap();
            assert_eq!(field(decode(&p)), "root", "{red} {black}");
        }
        for (red, black) in [
            ("/personalities/red", "/personalities/redder"),
            ("/red", "/black"),
            ("/etc/red", "/etc/black"),
            ("/procs", "/devices"),
        ] {
            let mut p = sample();
            p.compartments[0].root = InitramfsPath::new(red).unwrap();
            p.compartments[1].root = InitramfsPath::new(black).unwrap();
            assert!(decode(&p).is_ok(), "{red} {black}");
        }
        // The policy may live anywhere outside the roots.
        let mut p = sample();
        p.policy_path = InitramfsPath::new("/personalities/black/policy.bin").unwrap();
        assert_eq!(field(decode(&p)), "root");
    }

    #[test]
    fn bounding_set_is_union_plus_network_setup() {
        let p = sample();
        let names: Vec<&str> = p.compartments[0]
            .bounding_set()
            .iter()
            .map(|c| c.name())
            .collect();
        assert_eq!(names, ["CAP_NET_ADMIN", "CAP_NET_RAW"]);
        let names: Vec<&str> = p.compartments[1]
            .bounding_set()
            .iter()
            .map(|c| c.name())
            .collect();
        assert_eq!(names, ["CAP_NET_ADMIN", "CAP_NET_RAW"]);
        assert_eq!(Capability::from_name("CAP_KILL").unwrap().0, 5);
        assert_eq!(Capability(40).name(), "CAP_CHECKPOINT_RESTORE");
    }

    #[test]
    fn rejects_too_many_modules_and_oversized_plans() {
        let mut p = sample();
        p.modules = (0..=MAX_MODULES)
            .map(|i| ModulePath::new(&format!("/m/{i}.ko")).unwrap())
            .collect();
        assert!(Plan::decode(&p.encode()).is_err());
        p.modules.pop();
        assert_eq!(Plan::decode(&p.encode()).unwrap(), p);
        assert!(Plan::decode(&vec![b'a'; MAX_PLAN_LEN + 1]).is_err());
    }

    #[test]
    fn value_validation() {
        assert!(ProfileName::new("Vpn").is_err());
        assert!(ProfileName::new("-vpn").is_err());
        assert!(ProfileName::new(&"a".repeat(65)).is_err());
        assert!(ProfileVersion::new("1 2").is_err());
        assert!(InitramfsPath::new("/a//b").is_err());
        assert!(InitramfsPath::new("/a/").is_err());
        assert!(InitramfsPath::new("/").is_err());
        assert!(InitramfsPath::new("/a/./b").is_err());
        assert!(InitramfsPath::new(&format!("/{}", "a".repeat(MAX_PATH_LEN))).is_err());
        assert_eq!(
            InitramfsPath::new("/etc/x")
                .unwrap()
                .under(std::path::Path::new("/tmp/r")),
            std::path::PathBuf::from("/tmp/r/etc/x")
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn arb_path() -> impl Strategy<Value = String> {
        prop::collection::vec("[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,15}", 1..5)
            .prop_map(|c| format!("/{}", c.join("/")))
            .prop_filter("no dot components", |p| {
                !p.split('/').any(|c| c == "." || c == "..")
            })
    }

    prop_compose! {
        fn arb_plan()(
            name in "[a-z0-9][a-z0-9._-]{0,63}",
            version in "[A-Za-z0-9.+~_-]{1,64}",
            secver in any::<u32>(),
            policy in arb_path(),
            sha in any::<[u8; 32]>(),
            modules in prop::collection::vec(arb_path(), 0..8),
            keys in prop::collection::btree_set(any::<[u8; 16]>(), 0..5),
            ike in prop::option::of(prop::collection::btree_set("[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", 0..5)),
            assess in prop::option::of((30u32..=3600, 0u32..=4096)),
            update in prop::option::of((1024u16..=65535, 1u32..=10, any::<[u8; 32]>())),
            red_vm in prop::option::of((64u32..=192, any::<bool>(), any::<bool>(), arb_path())),
            fpm in prop::option::of(1u16..=65535),
        ) -> Plan {
            let mut compartments = tests::sample().compartments;
            let management = update.map_or(DEFAULT_MANAGEMENT_PORT, |u| u.0);
            let fpm = fpm.filter(|p| *p != management).map(|port| FpmPlan { port });
            if fpm.is_some() {
                compartments[1].vm = None;
            }
            compartments[0].vm = red_vm.map(|(memory_mib, kvm, vfio, kernel)| VmPlan {
                // VFIO only under KVM.
                accel: if kvm || vfio { VmAccel::Kvm } else { VmAccel::Tcg },
                qemu: InitramfsPath::new("/usr/bin/qemu-system-x86_64").unwrap(),
                kernel: InitramfsPath::new(&format!("/guest{kernel}")).unwrap(),
                initrd: InitramfsPath::new("/guest/initrd").unwrap(),
                memory_mib,
                nic: if vfio { VmNic::Vfio } else { VmNic::Macvtap },
            });
            Plan {
                profile_name: ProfileName::new(&name).unwrap(),
                profile_version: ProfileVersion::new(&version).unwrap(),
                security_version: SecurityVersion(secver),
                policy_path: InitramfsPath::new(&policy).unwrap(),
                policy_sha256: Sha256Digest(sha),
                manual_keys: keys.into_iter().map(crate::keyuse::KeyUse).collect(),
                modules: modules.iter().map(|m| ModulePath::new(&format!("{m}.ko")).unwrap()).collect(),
                compartments,
                viaduct: InitramfsPath::new(&policy).unwrap(),
                ike: ike.map(|names| IkePlan {
                    binary: InitramfsPath::new("/usr/sbin/viaduct-ike").unwrap(),
                    credentials: names.iter().map(|n| CredentialName::new(n).unwrap()).collect(),
                }),
                boot_assessment: assess.map(|(timeout_s, tunnels)| BootAssessment { timeout_s, tunnels }),
                update: update.map(|(port, tries, release_key)| UpdatePlan { port, tries, release_key }),
                fpm,
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip(p in arb_plan()) {
            prop_assert_eq!(Plan::decode(&p.encode()).unwrap(), p);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_accepted_input_is_canonical(b in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(p) = Plan::decode(&b) {
                prop_assert_eq!(p.encode(), b);
            }
        }

        #[test]
        fn mutated_plans_never_panic_and_stay_canonical(p in arb_plan(), pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
            let mut b = p.encode();
            let i = pos.index(b.len());
            if cut { b.truncate(i); } else { b[i] = byte; }
            if let Ok(q) = Plan::decode(&b) {
                prop_assert_eq!(q.encode(), b);
            }
        }
    }
}
