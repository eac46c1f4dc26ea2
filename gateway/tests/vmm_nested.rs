//! The `microvm` runtime's VMM with KVM and a NIC passed through by VFIO,
//! in a nested lab: this host's QEMU (TCG, `-cpu EPYC`, an emulated Intel
//! IOMMU with interrupt remapping) boots a small Linux (L1, the lab lock's
//! kernel) standing in for the gateway's host; L1 runs
//! [`gateway::vmm::VmUnit`] (through `examples/vm_unit.rs`), which checks
//! and binds the NIC ([`gateway::vfio`]) and starts the personality's VM
//! (L2) under KVM (nested SVM), jailed.
//!
//! L0's machine: an e1000e alone behind a PCIe root port (its own IOMMU
//! group) on a QEMU user network with `restrict=on` (no way out; QEMU's
//! built-in 10.0.2.2 answers), and an e1000 behind a PCIe-to-PCI bridge
//! (which shares its group with the bridge).
//!
//! - `nested_kvm_vm_owns_its_nic_by_vfio_and_reaches_its_port`:
//!   - L1's interrupts go through remapping chips (`IR-…`); no NIC driver is
//!     loaded in L1;
//!   - the e1000 (shared group) is refused by name and left untouched;
//!   - the e1000e is bound to `vfio-pci` and given to L2, which drives it
//!     with its own kernel (another boot id) and reaches 10.0.2.2 through
//!     it, and reaches the Viaduct's port (the Viaduct's port code answers
//!     its pings) — the VMM running under KVM as the planned uid, no
//!     capabilities, seccomp, in its cgroup (with a cgroup namespace of its
//!     own; its guest's memory is charged there), and seeing only `/dev/kvm`
//!     and its VFIO group besides the harmless nodes;
//!   - L2's devices: the NIC and the PCIe host bridge on PCI, the port as
//!     its one virtio device, the serial console;
//!   - killed, the VMM is logged and restarted and the new L2 reaches both
//!     again.
//! - `without_an_iommu_the_nic_is_refused`: the same L1 on a machine
//!   without an IOMMU: the NIC is refused (no IOMMU group) and no VM starts.
//!
//! Needs `qemu-system-x86_64` with its firmware (qemu-system-x86) and the
//! lab lock's kernel through the package cache.

#[path = "../../viaduct/tests/support/guest.rs"]
mod guest;
mod vmm_support;

use vmm_support::{libraries, release_bin, sweep, vm_unit_bin, Done, QEMU};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Tests sharing the lab's directory (see `vmm_support::Done`).
const LAB_TESTS: usize = 3;

/// L0 boots one lab at a time (TCG is heavy on two cores).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn require_host() {
    assert!(
        Path::new(QEMU).exists() && Path::new("/usr/share/qemu/qboot.rom").exists(),
        "{QEMU} or its firmware is missing: apt-get install qemu-system-x86"
    );
}

fn file(path: &str, src: &Path, mode: u32) -> (String, Vec<u8>, u32) {
    let bytes = std::fs::read(src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
    (path.to_owned(), bytes, mode)
}

/// L2: the personality. Its card toward the Viaduct is the one with the
/// port's fixed MAC; the other is the NIC passed through.
fn l2_init() -> String {
    let mut s = guest::init_preamble("VM-FATAL");
    s.push_str(
        r#"i=0
while [ $(ls /sys/class/net | grep -c '^eth') -lt 2 ]; do
  i=$((i+1)); [ $i -gt 100 ] && fatal "no second card"; sleep 0.1
done
for c in /sys/class/net/eth*; do
  if [ "$(cat $c/address)" = 02:76:64:00:00:02 ]; then PORT=${c##*/}; else NIC=${c##*/}; fi
done
$IP link set lo up
$IP link set $PORT arp off up || fatal "port"
$IP addr add 10.9.0.2/24 dev $PORT
$IP link set $NIC up || fatal "nic"
$IP addr add 10.0.2.15/24 dev $NIC
echo "VM-BOOT-ID $(cat /proc/sys/kernel/random/boot_id)"
echo "VM-PCI $(for d in /sys/bus/pci/devices/*; do echo -n "$(cat $d/vendor):$(cat $d/device):$(cat $d/class) "; done)"
echo "VM-NIC-DRIVER $(basename $(readlink /sys/class/net/$NIC/device/driver))"
echo "VM-VIRTIO $(for d in /sys/bus/virtio/devices/*; do echo -n "$(cat $d/device) "; done)"
echo "VM-LINKS $(ls /sys/class/net | tr '\n' ' ')"
port=0; nic=0
while true; do
  if [ $port = 0 ] && ping -c 1 -W 2 10.9.0.1 >/dev/null 2>&1; then echo VM-PING-OK; port=1; fi
  if [ $nic = 0 ] && ping -c 1 -W 2 10.0.2.2 >/dev/null 2>&1; then echo VM-NIC-OK; nic=1; fi
  sleep 1
done
"#,
    );
    s
}

/// L1: the gateway's host stand-in. `scenario` is `iommu` or `no-iommu`.
fn l1_init() -> String {
    r#"#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fatal() { dmesg | tail -n 40; echo "L1-FATAL: $*"; poweroff -f; sleep 60; }
for m in $(cat /modules.order); do
  insmod "/$m" || fatal "insmod $m"
done
scenario=$(sed -n 's/.*scenario=\([a-z-]*\).*/\1/p' /proc/cmdline)
mkdir -p /vmm/dev /vmm/proc /vmm/run /vmm/sys /vmm/tmp /run/viaduct
echo "L1-IRQ-CHIPS $(cat /sys/kernel/irq/*/chip_name 2>/dev/null | sort -u | tr '\n' ',')"
NIC= SHARED= NICS=
for d in /sys/bus/pci/devices/*; do
  id="$(cat $d/vendor):$(cat $d/device)"
  drv=none; [ -e $d/driver ] && drv=$(basename $(readlink $d/driver))
  echo "L1-PCI ${d##*/} $id driver=$drv"
  [ "$id" = 0x8086:0x10d3 ] && NIC=${d##*/} && NICS="$NICS ${d##*/}"
  [ "$id" = 0x8086:0x100e ] && SHARED=${d##*/}
done
[ -n "$NIC" ] || fatal "no e1000e"
if [ "$scenario" = gateway ]; then
  # The gateway's init from a plan: red and black as KVM guests, each owning
  # one e1000e by VFIO. The plan's placeholder addresses become the cards'.
  set -- $NICS
  [ $# = 2 ] || fatal "want two e1000e, have: $NICS"
  echo "L1-BOOT-ID $(cat /proc/sys/kernel/random/boot_id)"
  mkdir -p /gw/vmm/red /gw/vmm/black /run/vm /run/mgmt
  mount --bind /vmm /gw/vmm/red && mount --bind /vmm /gw/vmm/black || fatal "bind"
  mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup || fatal "cgroup2"
  # First a plan whose red NIC shares its IOMMU group: the init stays closed,
  # naming it, and leaves the card alone.
  sed "s/0000:ff:00.0/$SHARED/; s/0000:fe:00.0/$2/" /gw/etc/appliance/plan.in > /gw/etc/appliance/plan
  APPLIANCE_VM_DIR=/run/vm APPLIANCE_MGMT_DIR=/run/mgmt \
    timeout 10 /bin/gateway-init --serve /gw < /dev/null > /tmp/shared.log 2>&1
  sed 's/^/L1-SHARED-GW /' /tmp/shared.log | grep -E "error|closed|started"
  echo "L1-SHARED-GW-DRIVER $( [ -e /sys/bus/pci/devices/$SHARED/driver ] && basename $(readlink /sys/bus/pci/devices/$SHARED/driver) || echo none)"
  sed "s/0000:ff:00.0/$1/; s/0000:fe:00.0/$2/" /gw/etc/appliance/plan.in > /gw/etc/appliance/plan
  mkfifo /tmp/console
  sleep 100000 > /tmp/console &
  : > /tmp/gw.log
  # The relay first, from the first line: `tail -f` alone starts at the last
  # ten, and under load the init has written more than ten by then (its
  # first lines, the NICs bound to vfio-pci, were lost that way).
  tail -n +1 -f /tmp/gw.log &
  APPLIANCE_VM_DIR=/run/vm APPLIANCE_MGMT_DIR=/run/mgmt APPLIANCE_CGROUP_ROOT=/sys/fs/cgroup \
    /bin/gateway-init --serve /gw < /tmp/console >> /tmp/gw.log 2>&1 &
  wait_gw() { # pattern, count, seconds
    i=0
    while [ $(grep -c "$1" /tmp/gw.log) -lt $2 ]; do
      i=$((i+1)); [ $i -gt $(($3*10)) ] && { echo "L1-TIMEOUT $1"; poweroff -f; }
      sleep 0.1
    done
  }
  wait_gw "appliance: ready" 1 400
  wait_gw "PROBE-NIC-OK red" 1 120
  wait_gw "PROBE-NIC-OK black" 1 120
  for uid in 100000 200000; do
    for p in $(pidof qemu-system-x86_64); do
      grep -q "^Uid:.$uid" /proc/$p/status && echo "L1-JAIL-$uid $(grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp):' /proc/$p/status | tr -s '\t ' ' ' | tr '\n' ';') cgroup=$(cat /proc/$p/cgroup)"
    done
  done
  for n in $NICS; do echo "L1-GW-NIC-DRIVER $n $(basename $(readlink /sys/bus/pci/devices/$n/driver))"; done
  echo "kill red" > /tmp/console
  wait_gw "red: VM stopped" 1 30
  wait_gw "red: up" 2 400
  wait_gw "PROBE-NIC-OK red" 2 120
  # A new Viaduct: both VMs restarted onto its ports.
  echo "kill viaduct" > /tmp/console
  wait_gw "restarting its VM" 2 60
  wait_gw "black: up" 2 400
  wait_gw "red: up" 3 400
  sleep 2 # let tail relay the last lines
  echo "L1-SECCOMP-KILLS $(dmesg | grep -c type=1326)"
  echo L1-DONE; poweroff -f; sleep 60
fi
run() {
  /bin/vm_unit --side black --root /vmm --qemu /usr/bin/qemu-system-x86_64 \
    --kernel /vm/vmlinuz --initrd /vm/initrd \
    --append "console=ttyS0 ipv6.disable=1 panic=-1 quiet loglevel=4" \
    --memory 256 --port /run/viaduct/black.sock --uid 400000 --accel kvm "$@"
}
if [ "$scenario" = no-iommu ]; then
  run --nic $NIC < /dev/null
  echo "L1-EXIT $?"
  echo "L1-NIC-DRIVER $( [ -e /sys/bus/pci/devices/$NIC/driver ] && basename $(readlink /sys/bus/pci/devices/$NIC/driver) || echo none)"
  echo L1-DONE; poweroff -f; sleep 60
fi
[ -n "$SHARED" ] || fatal "no e1000 behind the bridge"
run --nic $SHARED < /dev/null
echo "L1-SHARED-EXIT $?"
echo "L1-SHARED-DRIVER $( [ -e /sys/bus/pci/devices/$SHARED/driver ] && basename $(readlink /sys/bus/pci/devices/$SHARED/driver) || echo none)"
mkfifo /tmp/hold
sleep 100000 > /tmp/hold &
holder=$!
measure=$(sed -n 's/.*measure=\([a-z]*\).*/\1/p' /proc/cmdline)
# The VM's cgroup, as the init makes it: memory and pids limited.
mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup || fatal "cgroup2"
echo "+memory +pids" > /sys/fs/cgroup/cgroup.subtree_control || fatal "controllers"
mkdir /sys/fs/cgroup/appliance-black
echo 512M > /sys/fs/cgroup/appliance-black/memory.max
echo 64 > /sys/fs/cgroup/appliance-black/pids.max
: > /tmp/vm.log # before tail and grep look at it
tail -n +1 -f /tmp/vm.log & # from the first line, started first (see above)
run --nic $NIC --echo-port on --cgroup /sys/fs/cgroup/appliance-black ${measure:+--measure $measure} < /tmp/hold >> /tmp/vm.log 2>&1 &
wait_log() { # pattern, count, seconds
  i=0
  while [ $(grep -c "$1" /tmp/vm.log) -lt $2 ]; do
    if grep -q "killed by SIGSYS" /tmp/vm.log; then
      dmesg | grep "type=1326" | tail -n 5; echo "L1-TIMEOUT seccomp"; poweroff -f
    fi
    i=$((i+1)); [ $i -gt $(($3*10)) ] && { dmesg | grep -i "vfio\|kvm" | tail -n 20; echo "L1-TIMEOUT $1"; poweroff -f; }
    sleep 0.1
  done
}
wait_log VM-PING-OK 1 240
wait_log VM-NIC-OK 1 120
q=$(pidof qemu-system-x86_64)
echo "L1-JAIL $(grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/$q/status | tr -s '\t ' ' ' | tr '\n' ';')"
echo "L1-CGROUP path=$(cat /proc/$q/cgroup) ns=$([ "$(readlink /proc/$q/ns/cgroup)" != "$(readlink /proc/self/ns/cgroup)" ] && echo own || echo shared) procs=$(grep -c "^$q\$" /sys/fs/cgroup/appliance-black/cgroup.procs) memory=$(cat /sys/fs/cgroup/appliance-black/memory.current)"
echo "L1-JAIL-DEV $(ls /proc/$q/root/dev /proc/$q/root/dev/vfio | tr '\n' ' ')"
echo "L1-NIC-DRIVER $(basename $(readlink /sys/bus/pci/devices/$NIC/driver))"
n=$(grep -c VM-PING-OK /tmp/vm.log); m=$(grep -c VM-NIC-OK /tmp/vm.log)
kill -9 $q
wait_log "killed by signal 9" 1 30
wait_log VM-PING-OK $((n+1)) 240
wait_log VM-NIC-OK $((m+1)) 120
sleep 2 # let tail relay the last console lines
echo "L1-SECCOMP-OUTSIDE $(dmesg | grep type=1326 | sed 's/.*syscall=\([0-9]*\).*/\1/' | sort -un | tr '\n' ' ')"
echo "L1-SECCOMP-KILLS $(dmesg | grep -c type=1326)"
echo L1-DONE
poweroff -f
sleep 60
"#
    .to_owned()
}

/// The gateway scenario's plan (red's and black's NICs by placeholder PCI
/// addresses, which L1 replaces by its two e1000e's) and policy: the lab
/// pair's gw-a, keyed by IKE (no manual keys: no TPM needed in L1).
fn gateway_plan() -> (Vec<u8>, Vec<u8>) {
    use gateway::plan::*;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let profile = profiles::load_profile(&repo.join("profiles/lab/gw-a.toml")).unwrap();
    let policy = policy::compile(&profile).unwrap();
    assert!(policy.tunnels.iter().all(|t| t.manual.is_none()));
    let blob = policy.encode();
    let compartments = [
        (Side::Red, "lan", "0000:ff:00.0"),
        (Side::Black, "wan", "0000:fe:00.0"),
    ]
    .into_iter()
    .map(|(side, nic, pci)| CompartmentPlan {
        side,
        root: InitramfsPath::new(&format!("/vmm/{side}")).unwrap(),
        uid_base: if side == Side::Red { 100000 } else { 200000 },
        memory_max: 512 << 20,
        pids_max: 128,
        nic: ShortName::new("nic", nic).unwrap(),
        nic_match: NicMatch {
            pci: Some(pci.into()),
            ..NicMatch::default()
        },
        setup: InitramfsPath::new(&format!("/etc/appliance/network-{side}")).unwrap(),
        socket_families: vec![
            SocketFamily::Unix,
            SocketFamily::Inet,
            SocketFamily::Netlink,
        ],
        services: vec![ServicePlan {
            name: ShortName::new("service", "probe").unwrap(),
            restart: Restart::Always,
            caps: vec![Capability::from_name("CAP_NET_RAW").unwrap()],
            argv: vec![
                "/bin/sh".into(),
                "/etc/appliance/probe".into(),
                side.to_string(),
            ],
        }],
        vm: Some(VmPlan {
            accel: VmAccel::Kvm,
            qemu: InitramfsPath::new("/usr/bin/qemu-system-x86_64").unwrap(),
            kernel: InitramfsPath::new("/vm/vmlinuz").unwrap(),
            initrd: InitramfsPath::new("/vm/initrd").unwrap(),
            memory_mib: 192,
            nic: VmNic::Vfio,
        }),
    })
    .collect();
    let plan = Plan {
        profile_name: ProfileName::new("gw-a").unwrap(),
        profile_version: ProfileVersion::new(&profile.appliance.version).unwrap(),
        security_version: SecurityVersion(1),
        policy_path: InitramfsPath::new("/etc/appliance/policy.bin").unwrap(),
        policy_sha256: gateway::digest::Sha256Digest::of(&blob),
        manual_keys: Vec::new(),
        modules: Vec::new(),
        compartments,
        viaduct: InitramfsPath::new("/usr/sbin/viaduct").unwrap(),
        ike: Some(IkePlan {
            binary: InitramfsPath::new("/usr/sbin/viaduct-ike").unwrap(),
            credentials: Vec::new(),
        }),
        boot_assessment: None,
        update: None,
        fpm: None,
    };
    (plan.encode(), blob)
}

/// What L2 needs to be a personality's guest: the guest init, the plan, each
/// side's network setup (its NIC on QEMU's user network, the port up) and a
/// probe service that says once its NIC reaches QEMU's 10.0.2.2.
fn gateway_guest_files() -> Vec<(String, Vec<u8>, u32)> {
    let (plan, _) = gateway_plan();
    let mut v = vec![
        file(
            &gateway::vmm::GUEST_INIT[1..],
            &release_bin("gateway-init"),
            0o755,
        ),
        ("etc/appliance/plan".to_owned(), plan, 0o644),
        (
            "etc/appliance/probe".to_owned(),
            b"B=/bin/busybox\n\
              while ! $B ping -c 1 -W 2 10.0.2.2 >/dev/null 2>&1; do $B sleep 1; done\n\
              echo \"PROBE-NIC-OK $1\"\nexec $B sleep 1000000\n"
                .to_vec(),
            0o755,
        ),
        (
            "etc/passwd".to_owned(),
            b"root:x:0:0:root:/:/bin/sh\n".to_vec(),
            0o644,
        ),
    ];
    for (side, nic) in [("red", "lan"), ("black", "wan")] {
        v.push((
            format!("etc/appliance/network-{side}"),
            format!(
                "#!/bin/sh\nset -e\nIP=/opt/iproute2/ip\n$IP link set lo up\n\
                 $IP link set {nic} up\n$IP addr add 10.0.2.15/24 dev {nic}\n\
                 $IP link set viaduct mtu 1400 up\n"
            )
            .into_bytes(),
            0o755,
        ));
    }
    v
}

/// What L1 needs to run the gateway's init from the plan (`/gw`), beside the
/// VMM's root it already has at `/vmm`.
fn gateway_files() -> Vec<(String, Vec<u8>, u32)> {
    let (plan, policy) = gateway_plan();
    vec![
        file("bin/gateway-init", &release_bin("gateway-init"), 0o755),
        file("gw/usr/sbin/viaduct", &release_bin("viaduct"), 0o755),
        file(
            "gw/usr/sbin/viaduct-ike",
            &release_bin("viaduct-ike"),
            0o755,
        ),
        ("gw/etc/appliance/plan.in".to_owned(), plan, 0o644),
        ("gw/etc/appliance/policy.bin".to_owned(), policy, 0o644),
    ]
}

struct Lab {
    dir: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
}

/// L2's image, then L1's (everything L1 runs: busybox, the kernel modules,
/// `vm_unit`, the VMM's root at `/vmm` with QEMU, its libraries and
/// firmware and L2's kernel and initramfs).
fn lab() -> &'static Lab {
    static L: OnceLock<Lab> = OnceLock::new();
    L.get_or_init(|| {
        require_host();
        sweep("gateway-vmm-nested-");
        let dir = std::env::temp_dir().join(format!("gateway-vmm-nested-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let l2dir = dir.join("l2");
        std::fs::create_dir_all(&l2dir).unwrap();
        let l2 = guest::build_guest(
            &l2dir,
            &[
                "virtio_mmio",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_console",
                "e1000e",
            ],
            &["virtio_mmio", "virtio_net", "virtio_console", "e1000e"],
            gateway_guest_files(),
            &l2_init(),
        );
        let mut extra = vec![
            file("vmm/vm/vmlinuz", &l2.kernel, 0o644),
            file("vmm/vm/initrd", &l2.initrd, 0o644),
        ];
        let vm_unit = vm_unit_bin();
        extra.push(file("bin/vm_unit", &vm_unit, 0o755));
        for lib in libraries(vm_unit.to_str().unwrap()) {
            extra.push(file(&lib[1..], Path::new(&lib), 0o755));
        }
        extra.push(file(
            "vmm/usr/bin/qemu-system-x86_64",
            Path::new(QEMU),
            0o755,
        ));
        for lib in libraries(QEMU) {
            extra.push(file(&format!("vmm{lib}"), Path::new(&lib), 0o755));
        }
        for e in std::fs::read_dir("/usr/share/qemu").unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                let name = p.to_str().unwrap();
                extra.push(file(&format!("vmm{name}"), &p, 0o644));
            }
        }
        extra.extend(gateway_files());
        let l1dir = dir.join("l1");
        std::fs::create_dir_all(&l1dir).unwrap();
        let l1 = guest::build_guest(
            &l1dir,
            &["kvm_amd", "vfio_pci", "vfio_iommu_type1"],
            &["kvm_amd", "vfio_pci", "vfio_iommu_type1"],
            extra,
            &l1_init(),
        );
        Lab {
            dir,
            kernel: l1.kernel,
            initrd: l1.initrd,
        }
    })
}

struct L0 {
    child: Child,
    lines: Receiver<String>,
    log: Vec<String>,
}

impl Drop for L0 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl L0 {
    fn boot(lab: &Lab, iommu: bool) -> L0 {
        L0::boot_scenario(lab, if iommu { "iommu" } else { "no-iommu" })
    }

    /// `scenario`: `iommu`, `no-iommu` or `gateway` (the init from a plan;
    /// a second e1000e alone behind a root port of its own).
    fn boot_scenario(lab: &Lab, scenario: &str) -> L0 {
        let iommu = scenario != "no-iommu";
        let mut cmd = Command::new(QEMU);
        // One vCPU, as the testbed's microvm machines: with two, the
        // emulated SVM's faults (docs/design/microvm.md, Known problem) had
        // IPIs between L1's CPUs to strike at, and L1 once stopped printing
        // anything for 900 s.
        cmd.args(["-accel", "tcg,thread=multi", "-M", "q35", "-cpu", "EPYC"])
            .args(["-smp", "1", "-m", "2048", "-nodefaults", "-display", "none"])
            .args(["-serial", "stdio", "-no-reboot"]);
        if iommu {
            cmd.args(["-device", "intel-iommu,intremap=on,eim=off"]);
        }
        cmd.args(["-device", "pcie-root-port,id=rp1,chassis=1,slot=1"])
            .args(["-netdev", "user,id=n0,restrict=on"])
            .args(["-device", "e1000e,bus=rp1,netdev=n0,romfile="])
            .args(["-device", "pcie-root-port,id=rp2,chassis=2,slot=2"])
            .args(["-device", "pcie-pci-bridge,id=br,bus=rp2"])
            .args(["-netdev", "user,id=n1,restrict=on"])
            .args(["-device", "e1000,bus=br,addr=1,netdev=n1,romfile="]);
        if scenario == "gateway" {
            cmd.args(["-device", "pcie-root-port,id=rp3,chassis=3,slot=3"])
                .args(["-netdev", "user,id=n2,restrict=on"])
                .args(["-device", "e1000e,bus=rp3,netdev=n2,romfile="]);
        }
        cmd.arg("-kernel")
            .arg(&lab.kernel)
            .arg("-initrd")
            .arg(&lab.initrd)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 panic=-1 loglevel=4 {}scenario={scenario}{}",
                if iommu { "intel_iommu=on " } else { "" },
                // Measures the VMM's allowlist (docs/design/microvm.md).
                match std::env::var("VMM_MEASURE").as_deref() {
                    Ok("on") => " measure=on",
                    _ => "",
                }
            ));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-system-x86_64");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l.trim_end_matches('\r').to_owned()).is_err() {
                    break;
                }
            }
        });
        L0 {
            child,
            lines,
            log: Vec::new(),
        }
    }

    fn tail(&self) -> String {
        let n = self.log.len().saturating_sub(80);
        self.log[n..].join("\n")
    }

    fn wait_for(&mut self, what: &str, timeout: Duration) -> String {
        match self.wait_for_or_exit(what, timeout) {
            Some(l) => l,
            None => panic!("L0 exited before {what:?}; console:\n{}", self.tail()),
        }
    }

    /// As [`L0::wait_for`], but `None` when L0 exits first, or L1 goes down
    /// after a VM was stopped (then L0 is killed).
    fn wait_for_or_exit(&mut self, what: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    let failed = l.contains("FATAL")
                        // L1's own panic; a personality's guest (relayed
                        // as `<side>-vm: …`) that panics is restarted by
                        // the init, which the test sees.
                        || (l.contains("Kernel panic") && !l.contains("-vm: "))
                        || l.contains("L1-TIMEOUT");
                    // L1 going down once a VM was stopped and started
                    // again, or inside the SVM world switch, is the
                    // emulated SVM's known failure
                    // (docs/design/microvm.md): reported as L0 gone, so
                    // that the caller may retry it.
                    if failed && emulated_svm_failure(&self.log) {
                        eprintln!("L1 went down (the emulated SVM):\n{}", self.tail());
                        let _ = self.child.kill();
                        let _ = self.child.wait();
                        return None;
                    }
                    assert!(!failed, "the lab failed:\n{}", self.tail());
                    if l.contains(what) {
                        return Some(l);
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no line {what:?} within {} s; console:\n{}",
                    timeout.as_secs(),
                    self.tail()
                ),
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

/// Whether L1's console shows the emulated SVM's known failure: a VM had
/// been stopped (and started again), or L1 crashed in the SVM world switch
/// (`__svm_vcpu_run`, seen once during the first start).
fn emulated_svm_failure(log: &[String]) -> bool {
    log.iter()
        .any(|l| l.contains("VM stopped") || l.contains("__svm_vcpu_run"))
}

fn after<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(key)
        .nth(1)
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .trim()
}

/// What follows `key` on the last line in `lines` holding it (L1's and L2's
/// lines arrive interleaved, so the checks look at the whole console once
/// L1 is done; the last, because a nested guest under emulated SVM now and
/// then resets during its first boot, and the unit restarts it: that is
/// the supervision at work, not a failure).
fn one<'a>(lines: &[&'a str], key: &str) -> &'a str {
    let found = lines
        .iter()
        .rev()
        .find(|l| l.contains(key))
        .unwrap_or_else(|| panic!("no {key:?} line"));
    after(found, key)
}

#[test]
fn nested_kvm_vm_owns_its_nic_by_vfio_and_reaches_its_port() {
    let lab = lab();
    let _done = Done(lab.dir.clone());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let t0 = Instant::now();
    let mut l0 = L0::boot(lab, true);
    l0.wait_for("VM-NIC-OK", Duration::from_secs(600));
    eprintln!(
        "L0 start to L2 on its NIC and its port: {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    l0.wait_for("L1-DONE", Duration::from_secs(600));
    eprintln!("whole nested run: {:.0} s", t0.elapsed().as_secs_f64());
    let saved = std::env::temp_dir().join("gateway-vmm-nested.console");
    std::fs::write(&saved, l0.log.join("\n")).unwrap();
    eprintln!("the whole console: {}", saved.display());
    let log: Vec<&str> = l0.log.iter().map(String::as_str).collect();
    let kill = log
        .iter()
        .position(|l| l.contains("black: VM stopped: killed by signal 9"))
        .unwrap_or_else(|| panic!("the VMM was not killed:\n{}", l0.tail()));
    let (first, second) = log.split_at(kill);

    // L1: interrupt remapping on; no NIC driver bound before the runtime acts.
    let chips = one(first, "L1-IRQ-CHIPS");
    assert!(
        chips.contains("IR-PCI-MSI") || chips.contains("IR-IO-APIC"),
        "L1 has no interrupt remapping: {chips}"
    );
    let pci: Vec<&&str> = first.iter().filter(|l| l.contains("L1-PCI ")).collect();
    assert!(pci.len() >= 3, "{pci:?}");
    for l in &pci {
        assert!(
            !l.contains("driver=e1000"),
            "a NIC driver is bound in L1: {l}"
        );
    }
    // The card sharing its group: refused by name, untouched.
    assert_eq!(
        one(first, "L1-SHARED-EXIT"),
        "2",
        "the shared-group NIC was not refused"
    );
    assert!(
        first
            .iter()
            .any(|l| l.contains("vm_unit: refused: NIC") && l.contains("also holds")),
        "the refusal does not name the IOMMU group:\n{}",
        l0.tail()
    );
    assert_eq!(
        one(first, "L1-SHARED-DRIVER"),
        "none",
        "a refused NIC was touched"
    );

    // The card alone in its group: bound to vfio-pci, given to L2.
    assert!(first.iter().any(|l| l.contains("bound to vfio-pci")));
    assert_eq!(one(first, "L1-NIC-DRIVER"), "vfio-pci");
    let boot1 = one(first, "VM-BOOT-ID");
    let devices: Vec<&str> = one(first, "VM-PCI").split_whitespace().collect();
    assert_eq!(devices.len(), 2, "L2's PCI devices: {devices:?}");
    assert!(
        devices.iter().any(|d| d.starts_with("0x8086:0x10d3:")),
        "{devices:?}"
    );
    assert!(
        devices.iter().any(|d| d.ends_with(":0x060000")),
        "the host bridge: {devices:?}"
    );
    assert_eq!(one(first, "VM-NIC-DRIVER"), "e1000e");
    // One virtio device: the port (virtio-net is device id 1); the console
    // is the serial line. Interfaces: the NIC, the port, loopback.
    assert_eq!(one(first, "VM-VIRTIO"), "0x0001", "L2's virtio devices");
    assert_eq!(one(first, "VM-LINKS"), "eth0 eth1 lo", "L2's interfaces");
    one(first, "VM-PING-OK");
    one(first, "VM-NIC-OK");

    // The VMM under KVM: the planned uid, no capability, seccomp; its /dev.
    let jail = one(first, "L1-JAIL ");
    for want in [
        "Uid: 400000 400000 400000 400000",
        "CapEff: 0000000000000000",
        "CapBnd: 0000000000000000",
        "NoNewPrivs: 1",
        "Seccomp: 2",
    ] {
        assert!(jail.contains(want), "{want} missing: {jail}");
    }
    // In its cgroup, with a cgroup namespace of its own (so it sees that
    // cgroup as its root), its guest's memory charged there.
    let cg = one(first, "L1-CGROUP");
    assert!(
        cg.starts_with("path=0::/appliance-black ns=own procs=1 memory="),
        "{cg}"
    );
    let used: u64 = cg.rsplit('=').next().unwrap().parse().unwrap();
    assert!(
        used > 32 << 20,
        "the VM's memory is not charged to its cgroup: {cg}"
    );
    let mut nodes: Vec<&str> = one(first, "L1-JAIL-DEV")
        .split_whitespace()
        .filter(|n| !n.ends_with(':'))
        .collect();
    nodes.sort();
    assert_eq!(
        nodes,
        ["4", "full", "kvm", "null", "random", "urandom", "vfio", "vfio", "zero"],
        "the VMM's /dev and /dev/vfio"
    );

    // Killed: restarted after the back-off; the new L2 is another boot and
    // reaches both again; no call outside the allowlist in the whole run.
    one(second, "black: VM restart in ");
    let boot2 = one(second, "VM-BOOT-ID");
    assert_ne!(boot1, boot2);
    one(second, "VM-PING-OK");
    one(second, "VM-NIC-OK");
    assert_eq!(
        one(second, "L1-SECCOMP-KILLS"),
        "0",
        "calls outside the VMM's allowlist ({}):\n{}",
        one(second, "L1-SECCOMP-OUTSIDE"),
        l0.tail()
    );
}

#[test]
fn without_an_iommu_the_nic_is_refused() {
    let lab = lab();
    let _done = Done(lab.dir.clone());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut l0 = L0::boot(lab, false);
    let exit = l0.wait_for("L1-EXIT", Duration::from_secs(300));
    assert_eq!(
        after(&exit, "L1-EXIT"),
        "2",
        "the NIC was not refused:\n{}",
        l0.tail()
    );
    assert!(
        l0.log
            .iter()
            .any(|l| l.contains("vm_unit: refused: NIC") && l.contains("not in an IOMMU group")),
        "the refusal does not say why:\n{}",
        l0.tail()
    );
    assert!(!l0.log.iter().any(|l| l.contains("VM started")));
    let drv = l0.wait_for("L1-NIC-DRIVER", Duration::from_secs(10));
    assert_eq!(
        after(&drv, "L1-NIC-DRIVER"),
        "none",
        "a refused NIC was touched"
    );
    l0.wait_for("L1-DONE", Duration::from_secs(10));
}

/// The gateway's init from a plan in L1 (`gateway-init --serve`): both
/// personalities as KVM guests (L2) on `-machine microvm`, each owning an
/// e1000e by VFIO, their ports vhost-user sockets the init made and handed
/// to the Viaduct, their event lines virtio consoles. First, a plan whose
/// red NIC shares its IOMMU group (the e1000 behind the bridge): refused by
/// name, the gateway closed. Then `kill red` (red's VM alone restarted) and
/// `kill viaduct` (a new Viaduct, both VMs restarted onto its ports).
#[test]
fn nested_gateway_init_runs_both_personalities_as_kvm_guests_owning_their_nics() {
    let lab = lab();
    let _done = Done(lab.dir.clone());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // The lab's L1 runs its KVM guests on SVM emulated by L0's TCG, which
    // now and then corrupts L1's own state when a guest is started again
    // after a kill, and once during the first start: L1 goes down
    // (docs/design/microvm.md, "Known problem"). That, and only that (L0
    // gone after a VM was stopped, or L1 down in the SVM world switch), is
    // retried, once, loudly.
    let mut attempt = 0;
    let (l0, t0) = loop {
        attempt += 1;
        let t0 = Instant::now();
        let mut l0 = L0::boot_scenario(lab, "gateway");
        let ready = l0
            .wait_for_or_exit("appliance: ready gw-a", Duration::from_secs(900))
            .is_some();
        if ready {
            eprintln!(
                "L0 start to the gateway ready with two KVM guests: {:.0} s",
                t0.elapsed().as_secs_f64()
            );
            if l0
                .wait_for_or_exit("L1-DONE", Duration::from_secs(900))
                .is_some()
            {
                break (l0, t0);
            }
        }
        assert!(
            emulated_svm_failure(&l0.log) && attempt == 1,
            "L0 exited before \"{}\"; console:\n{}",
            if ready {
                "L1-DONE"
            } else {
                "appliance: ready gw-a"
            },
            l0.tail()
        );
        eprintln!(
            "RETRY: the lab's L1 went down (the emulated SVM; docs/design/microvm.md, Known problem); the scenario runs once more. Its console:\n{}",
            l0.tail()
        );
    };
    eprintln!("whole nested run: {:.0} s", t0.elapsed().as_secs_f64());
    let saved = std::env::temp_dir().join("gateway-vmm-nested-gateway.console");
    std::fs::write(&saved, l0.log.join("\n")).unwrap();
    eprintln!("the whole console: {}", saved.display());
    let log: Vec<&str> = l0.log.iter().map(String::as_str).collect();
    let kill = log
        .iter()
        .position(|l| l.contains("red: VM stopped"))
        .unwrap_or_else(|| panic!("red's VMM was not killed:\n{}", l0.tail()));
    let (first, second) = log.split_at(kill);
    // A plan whose NIC shares its IOMMU group: the init says which and stays
    // closed; no VM starts; the card keeps no driver.
    let shared: Vec<&&str> = first
        .iter()
        .filter(|l| l.starts_with("L1-SHARED-GW "))
        .collect();
    assert!(
        shared
            .iter()
            .any(|l| l.contains("red VM: NIC 0000:03:01.0: its IOMMU group")
                && l.contains("also holds")),
        "{shared:#?}"
    );
    assert!(
        shared
            .iter()
            .any(|l| l.contains("closed: no compartment started")),
        "{shared:#?}"
    );
    assert!(
        !shared.iter().any(|l| l.contains("VM started")),
        "{shared:#?}"
    );
    assert_eq!(one(first, "L1-SHARED-GW-DRIVER"), "none");
    // Both NICs bound to vfio-pci by the init, each alone in its group.
    let bound: Vec<&&str> = first
        .iter()
        .filter(|l| l.contains("bound to vfio-pci (IOMMU group"))
        .collect();
    assert_eq!(bound.len(), 2, "{bound:#?}");
    assert_eq!(
        first
            .iter()
            .filter(|l| l.contains("L1-GW-NIC-DRIVER") && l.ends_with(" vfio-pci"))
            .count(),
        2
    );
    // Each guest says `up` on its event line before the gateway is ready;
    // each runs its own kernel; each drives its NIC.
    let ready = first
        .iter()
        .position(|l| l.contains("appliance: ready gw-a"))
        .unwrap();
    for side in ["red", "black"] {
        assert!(
            first[..ready]
                .iter()
                .any(|l| l.ends_with(&format!("appliance: {side}: up"))),
            "no `{side}: up` before ready"
        );
        one(first, &format!("PROBE-NIC-OK {side}"));
        assert!(
            first
                .iter()
                .any(|l| l.contains(&format!("{side}: VM started")) && l.contains("by VFIO group")),
            "{side}: no VM started with its NIC by VFIO"
        );
    }
    let l1_boot = one(first, "L1-BOOT-ID");
    let guests: Vec<&&str> = first
        .iter()
        .filter(|l| l.contains("appliance-guest: ") && l.contains(", boot "))
        .collect();
    assert!(guests.len() >= 2, "{guests:#?}");
    assert!(guests.iter().all(|l| !l.contains(l1_boot)), "{guests:#?}");
    // The VMMs under KVM: their planned uids, no capability, seccomp, each in
    // its personality's cgroup.
    for (uid, side) in [(100000, "red"), (200000, "black")] {
        let jail = one(first, &format!("L1-JAIL-{uid}"));
        for want in [
            format!("Uid: {uid} {uid} {uid} {uid}"),
            "CapEff: 0000000000000000".to_owned(),
            "NoNewPrivs: 1".to_owned(),
            "Seccomp: 2".to_owned(),
            "cgroup=0::/".to_owned(),
        ] {
            assert!(jail.contains(&want), "{want} missing: {jail}");
        }
        assert!(
            first
                .iter()
                .any(|l| l.contains(&format!("{side}: cgroup /sys/fs/cgroup/appliance-{side}"))),
            "{side}: no cgroup"
        );
    }
    let vkill = second
        .iter()
        .position(|l| l.contains("viaduct: killing pid"))
        .unwrap_or_else(|| panic!("the Viaduct was not killed:\n{}", l0.tail()));
    let (second, third) = second.split_at(vkill);
    // `kill red`: red's VM restarted, up again, its NIC driven again; black
    // and the Viaduct untouched.
    one(second, "red: VM restart in ");
    assert!(second.iter().any(|l| l.ends_with("appliance: red: up")));
    one(second, "PROBE-NIC-OK red");
    assert!(!second.iter().any(|l| l.contains("black: VM stopped")));
    assert!(!second.iter().any(|l| l.contains("viaduct: started")));
    // `kill viaduct`: a new Viaduct, both VMs restarted onto its ports, both
    // up again and connected to it.
    one(third, "viaduct: started (pid");
    for side in ["red", "black"] {
        one(third, &format!("{side}: restarting its VM"));
        assert!(third
            .iter()
            .any(|l| l.ends_with(&format!("appliance: {side}: up"))));
        one(third, &format!("viaduct: {side} port: front end connected"));
    }
    assert_eq!(
        one(third, "L1-SECCOMP-KILLS"),
        "0",
        "calls outside the VMM's allowlist:\n{}",
        l0.tail()
    );
}
