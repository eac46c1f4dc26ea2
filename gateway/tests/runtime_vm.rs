//! The `microvm` runtime driven by the init from a plan, on this host: two
//! gateways (`gateway-init --serve`, each in a network namespace of its own,
//! the lab pair's manual-key profiles), each running both personalities as
//! virtual machines (`vm` blocks in the plan; QEMU under TCG: this host has
//! no KVM) whose NICs reach them by macvtap on the gateway's veth cards, and
//! whose Viaduct ports are vhost-user sockets the init made and handed to
//! the Viaduct. Each guest is a Debian kernel from the lab lock with busybox,
//! iproute2 and the init's own binary as its PID 1 (`appliance-guest`), which
//! names the port and the NIC and runs the personality's network setup from
//! the plan.
//!
//! `two_gateways_with_vm_personalities_carry_the_tunnel`:
//! - both gateways report `ready` only after each guest said `up` on its
//!   event line;
//! - each guest runs its own kernel (another boot id than the host's);
//! - LAN A pings LAN B through the tunnel; on the internet segment every
//!   IPv4 packet from or to a gateway is ESP (but for the management
//!   sessions to black's port 7443) and no LAN address appears;
//! - each VMM runs as its personality's planned uid;
//! - black's management link: TCP to black's address reaches the init's
//!   management socket (relay in black's guest, its VM's serial port, the
//!   init's bridge), two sessions in a row, each answered;
//! - `kill black` on gw-a's console: the VM stops, is restarted after the
//!   back-off, says `up` again, and the tunnel carries pings again while
//!   the Viaduct kept running (same pid).
//!
//! Needs root, `qemu-system-x86_64`, `swtpm` (the manual keys' ledger) and
//! `tcpdump`.

#[path = "../../viaduct/tests/support/guest.rs"]
mod guest;
mod vmm_support;

use gateway::digest::Sha256Digest;
use gateway::plan::{
    CompartmentPlan, InitramfsPath, NicMatch, Plan, ProfileName, ProfileVersion, SecurityVersion,
    ShortName, Side, SocketFamily, VmAccel, VmNic, VmPlan,
};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};
use vmm_support::{libraries, release_bin, QEMU};

/// For `vmm_support::Done` (not used here: this test cleans its own lab).
const LAB_TESTS: usize = 1;

const TCG_MODULE: &str = "/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so";
const IP_IN_GUEST: &str = "/opt/iproute2/ip";

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(cmd).output().unwrap()
}

fn must(cmd: &str) -> String {
    let o = sh(cmd);
    assert!(
        o.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Namespaces, processes and the directory, removed however the test ends.
struct Lab {
    tag: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    children: Vec<Child>,
}

impl Lab {
    fn ns(&mut self, short: &str) -> String {
        let name = format!("{}-{short}", self.tag);
        let _ = sh(&format!("ip netns del {name}"));
        must(&format!("ip netns add {name}"));
        must(&format!("ip -n {name} link set lo up"));
        self.namespaces.push(name.clone());
        name
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The inits' VMMs die with them (parent-death signal); give them a moment.
        std::thread::sleep(Duration::from_millis(500));
        for n in &self.namespaces {
            let _ = sh(&format!("ip netns del {n}"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn link(dst: &Path, src: &str) {
    let d = dst.join(&src[1..]);
    std::fs::create_dir_all(d.parent().unwrap()).unwrap();
    // The file itself (a library's path may be a symbolic link: `link`
    // would link the link).
    let src = std::fs::canonicalize(src).unwrap();
    if !d.exists() && std::fs::hard_link(&src, &d).is_err() {
        std::fs::copy(&src, &d).unwrap_or_else(|e| panic!("copying {}: {e}", src.display()));
    }
}

/// The guest's initramfs for `side`: the lab kernel's virtio drivers, busybox
/// (also as `/bin/sh`), iproute2, the init's static binary as the guest
/// init, the plan and the personality's network setup.
fn guest_image(dir: &Path, plan: &[u8], script: &str) -> guest::GuestImage {
    std::fs::create_dir_all(dir).unwrap();
    // The image's own build of the init: static, as the builder ships it.
    let init = release_bin("gateway-init");
    let extra = vec![
        (
            gateway::vmm::GUEST_INIT[1..].to_owned(),
            std::fs::read(&init).unwrap(),
            0o755,
        ),
        ("etc/appliance/plan".to_owned(), plan.to_vec(), 0o644),
        (
            "etc/appliance/network".to_owned(),
            script.as_bytes().to_vec(),
            0o755,
        ),
        (
            "etc/passwd".to_owned(),
            b"root:x:0:0:root:/:/bin/sh\n".to_vec(),
            0o644,
        ),
        ("etc/group".to_owned(), b"root:x:0:\n".to_vec(), 0o644),
    ];
    guest::build_guest(
        dir,
        &[
            "virtio_pci",
            "failover",
            "net_failover",
            "virtio_net",
            "virtio_console",
        ],
        &["virtio_net", "virtio_console"],
        extra,
        // Not run: the kernel starts the guest init (`rdinit=`).
        "#!/bin/sh\n",
    )
}

/// The VMM's root for one personality: QEMU, its TCG module, their
/// libraries, its firmware, the guest.
fn vmm_root(root: &Path, img: &guest::GuestImage) {
    for d in gateway::vmm::ROOT_MOUNT_POINTS.iter().chain(&["vm"]) {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for bin in [QEMU, TCG_MODULE] {
        link(root, bin);
        for lib in libraries(bin) {
            link(root, &lib);
        }
    }
    for e in std::fs::read_dir("/usr/share/qemu").unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            link(root, p.to_str().unwrap());
        }
    }
    link(root, "/usr/share/seabios/bios-256k.bin");
    std::fs::copy(&img.kernel, root.join("vm/vmlinuz")).unwrap();
    std::fs::copy(&img.initrd, root.join("vm/initrd")).unwrap();
}

struct Gw {
    root: PathBuf,
    tpm_dir: PathBuf,
}

/// A gateway's tree: the policy, the Viaduct, both VMM roots and the plan.
fn make_gateway(lab: &Lab, name: &str, profile_path: &str) -> Gw {
    let profile = profiles::load_profile(&repo().join(profile_path)).expect("lab profile");
    let root = lab.dir.join(name);
    let policy = policy::compile_blob(&profile).expect("policy compiles");
    std::fs::create_dir_all(root.join("etc/appliance")).unwrap();
    std::fs::write(root.join("etc/appliance/policy.bin"), &policy).unwrap();
    std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
    std::fs::copy(release_bin("viaduct"), root.join("usr/sbin/viaduct")).unwrap();
    let compartments = [(Side::Red, "lan"), (Side::Black, "wan")]
        .into_iter()
        .map(|(side, nic)| CompartmentPlan {
            side,
            root: InitramfsPath::new(&format!("/vmm/{side}")).unwrap(),
            uid_base: if side == Side::Red { 100000 } else { 200000 },
            memory_max: 512 << 20,
            pids_max: 128,
            nic: ShortName::new("nic", nic).unwrap(),
            nic_match: NicMatch {
                name: Some(format!("{nic}0")),
                ..NicMatch::default()
            },
            setup: InitramfsPath::new("/etc/appliance/network").unwrap(),
            socket_families: vec![
                SocketFamily::Unix,
                SocketFamily::Inet,
                SocketFamily::Inet6,
                SocketFamily::Netlink,
            ],
            services: Vec::new(),
            vm: Some(VmPlan {
                accel: VmAccel::Tcg,
                qemu: InitramfsPath::new(QEMU).unwrap(),
                kernel: InitramfsPath::new("/vm/vmlinuz").unwrap(),
                initrd: InitramfsPath::new("/vm/initrd").unwrap(),
                memory_mib: 192,
                nic: VmNic::Macvtap,
            }),
        })
        .collect();
    let manual_keys = policy::compile(&profile)
        .expect("policy compiles")
        .manual_key_uses()
        .as_slice()
        .iter()
        .map(|u| gateway::keyledger::KeyUse(u.0))
        .collect();
    let plan = Plan {
        profile_name: ProfileName::new(&profile.appliance.name).unwrap(),
        profile_version: ProfileVersion::new(&profile.appliance.version).unwrap(),
        security_version: SecurityVersion(1),
        policy_path: InitramfsPath::new("/etc/appliance/policy.bin").unwrap(),
        policy_sha256: Sha256Digest::of(&policy),
        manual_keys,
        modules: Vec::new(),
        compartments,
        viaduct: InitramfsPath::new("/usr/sbin/viaduct").unwrap(),
        ike: None,
        boot_assessment: None,
        update: None,
        fpm: None,
    };
    let bytes = plan.encode();
    assert_eq!(Plan::decode(&bytes).unwrap(), plan);
    std::fs::write(root.join("etc/appliance/plan"), &bytes).unwrap();
    for side in [profiles::Side::Red, profiles::Side::Black] {
        let script = builder::network_script(&profile, side, IP_IN_GUEST).expect("network script");
        let img = guest_image(
            &lab.dir.join(format!("{name}-{}-guest", side.name())),
            &bytes,
            &script,
        );
        vmm_root(&root.join(format!("vmm/{}", side.name())), &img);
    }
    let tpm_dir = lab.dir.join(format!("{name}-tpm"));
    std::fs::create_dir_all(&tpm_dir).unwrap();
    Gw { root, tpm_dir }
}

struct Init {
    pid: u32,
    stdin: ChildStdin,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Init {
    fn start(lab: &mut Lab, ns: &str, gw: &Gw, tag: &str) -> Init {
        let sock = gw.tpm_dir.join("tpm.sock");
        let tpm = Command::new("swtpm")
            .args(["socket", "--tpm2", "--server"])
            .arg(format!("type=unixio,path={}", sock.display()))
            .arg("--ctrl")
            .arg(format!(
                "type=unixio,path={}",
                gw.tpm_dir.join("ctrl.sock").display()
            ))
            .arg("--tpmstate")
            .arg(format!("dir={}", gw.tpm_dir.display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm");
        lab.children.push(tpm);
        let t = Instant::now();
        while !sock.exists() {
            assert!(t.elapsed() < Duration::from_secs(10), "swtpm did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut child = Command::new("ip")
            .env("APPLIANCE_TPM", &sock)
            .env("APPLIANCE_MGMT_DIR", gw.root.join("mgmt"))
            .env("APPLIANCE_ESP_DIR", gw.root.join("esp"))
            .env("APPLIANCE_VM_DIR", gw.root.join("run-vm"))
            .args([
                "netns",
                "exec",
                ns,
                env!("CARGO_BIN_EXE_gateway-init"),
                "--serve",
            ])
            .arg(&gw.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let tag = tag.to_owned();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {l}");
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let pid = child.id();
        lab.children.push(child);
        Init {
            pid,
            stdin,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line holding `needle` after line `from`; panics on timeout.
    fn wait_since(&mut self, from: usize, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.seen[from.min(self.seen.len())..]
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(l) => self.seen.push(l),
                Err(_) if Instant::now() >= deadline => {
                    let n = self.seen.len().saturating_sub(80);
                    panic!(
                        "no {needle:?} within {limit:?}; last lines:\n{}",
                        self.seen[n..].join("\n")
                    );
                }
                Err(_) => {}
            }
        }
    }

    fn send(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The pid of this init's child process whose status says it runs as `uid`.
    fn child_with_uid(&self, uid: u32) -> Option<u32> {
        let kids =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", self.pid, self.pid))
                .unwrap_or_default();
        kids.split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/status"))
                    .unwrap_or_default()
                    .lines()
                    .any(|l| {
                        l.starts_with("Uid:")
                            && l.split_whitespace().nth(1) == Some(&uid.to_string())
                    })
            })
    }
}

/// An update request (`body` after the header) to `addr` from the network
/// namespace `ns`, half-closed like the CLI's; the answer (retried while the
/// relay is not listening yet).
fn management_request(ns: &str, addr: &str, body: &[u8]) -> String {
    use std::os::fd::AsFd;
    let ns = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let body = body.to_vec();
    std::thread::spawn(move || {
        gateway::sys::setns(ns.as_fd(), libc::CLONE_NEWNET).expect("setns");
        let t = Instant::now();
        let mut s = loop {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => break s,
                Err(e) if t.elapsed() > Duration::from_secs(60) => panic!("{addr}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut req =
            update_bundle::wire::request(update_bundle::wire::ENDPOINT_UPDATE, 0).to_vec();
        req.extend_from_slice(&body);
        let _ = s.write_all(&req);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut out);
        out
    })
    .join()
    .unwrap()
}

fn ping(ns: &str, addr: &str, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if sh(&format!("ip netns exec {ns} busybox ping -c 1 -W 2 {addr}"))
            .status
            .success()
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

fn pcap_frames(data: &[u8]) -> Vec<Vec<u8>> {
    assert!(data.len() >= 24, "pcap too short");
    let le = data[0..4] == [0xd4, 0xc3, 0xb2, 0xa1];
    let u32_at = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let incl = u32_at(&data[at + 8..at + 12]) as usize;
        let start = at + 16;
        if start + incl > data.len() {
            break;
        }
        frames.push(data[start..start + incl].to_vec());
        at = start + incl;
    }
    frames
}

fn require_host() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned());
    assert_eq!(uid.as_deref(), Some("0"), "tests/runtime_vm.rs needs root");
    for (bin, pkg) in [
        (QEMU, "qemu-system-x86"),
        (TCG_MODULE, "qemu-system-x86"),
        ("/usr/bin/swtpm", "swtpm"),
        ("/usr/bin/tcpdump", "tcpdump"),
    ] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: apt-get install {pkg}"
        );
    }
}

#[test]
fn two_gateways_with_vm_personalities_carry_the_tunnel() {
    require_host();
    let tag = format!("rvm{}", std::process::id() % 10000);
    let mut lab = Lab {
        dir: std::env::temp_dir().join(format!("gateway-runtime-vm-{}", std::process::id())),
        tag,
        namespaces: Vec::new(),
        children: Vec::new(),
    };
    let _ = std::fs::remove_dir_all(&lab.dir);
    std::fs::create_dir_all(&lab.dir).unwrap();
    let a = make_gateway(&lab, "a", "profiles/lab/manual/gw-a.toml");
    let b = make_gateway(&lab, "b", "profiles/lab/manual/gw-b.toml");

    // The lab pair's network: each gateway's cards are veths in its namespace.
    let gwa = lab.ns("gwa");
    let gwb = lab.ns("gwb");
    let inet = lab.ns("inet");
    let lana = lab.ns("lana");
    let lanb = lab.ns("lanb");
    for (ns, card, peer_ns, peer) in [
        (&gwa, "lan0", &lana, "eth0"),
        (&gwa, "wan0", &inet, "a-wan"),
        (&gwb, "lan0", &lanb, "eth0"),
        (&gwb, "wan0", &inet, "b-wan"),
    ] {
        must(&format!(
            "ip link add {card}-t type veth peer name {peer}-t && \
             ip link set {card}-t netns {ns} name {card} && ip link set {peer}-t netns {peer_ns} name {peer}"
        ));
    }
    must(&format!(
        "ip -n {inet} link add br0 type bridge && ip -n {inet} link set a-wan master br0 && \
         ip -n {inet} link set b-wan master br0 && ip -n {inet} link set a-wan up && \
         ip -n {inet} link set b-wan up && ip -n {inet} link set br0 up && \
         ip -n {inet} addr add 198.51.100.254/24 dev br0"
    ));
    for (ns, addr, gw) in [
        (&lana, "10.1.0.2/24", "10.1.0.1"),
        (&lanb, "10.2.0.2/24", "10.2.0.1"),
    ] {
        must(&format!(
            "ip -n {ns} addr add {addr} dev eth0 && ip -n {ns} link set eth0 up && \
             ip -n {ns} route add default via {gw}"
        ));
    }
    let pcap = lab.dir.join("inet.pcap");
    let dump_log = lab.dir.join("tcpdump.log");
    let dump = Command::new("ip")
        .args([
            "netns", "exec", &inet, "tcpdump", "-n", "-U", "-i", "br0", "-w",
        ])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&dump_log).unwrap())
        .spawn()
        .unwrap();
    lab.children.push(dump);
    let t = Instant::now();
    while !std::fs::read_to_string(&dump_log)
        .unwrap_or_default()
        .contains("listening on")
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "tcpdump did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let started = Instant::now();
    let mut ia = Init::start(&mut lab, &gwa, &a, "gw-a");
    let mut ib = Init::start(&mut lab, &gwb, &b, "gw-b");
    // Four guests under TCG on this host: minutes, not seconds.
    let limit = Duration::from_secs(300);
    ia.wait_since(0, "appliance: ready gw-a", limit);
    ib.wait_since(0, "appliance: ready gw-b", limit);
    eprintln!("both gateways ready after {:?}", started.elapsed());

    // Ready means every guest said `up` on its event line.
    for (init, name) in [(&ia, "gw-a"), (&ib, "gw-b")] {
        for side in ["red", "black"] {
            assert!(
                init.seen
                    .iter()
                    .any(|l| l.ends_with(&format!("{side}: up"))),
                "{name}: no `{side}: up` event before ready"
            );
        }
    }
    // Each guest runs its own kernel: another boot id than the host's.
    let host_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let host_boot = host_boot.trim();
    let boots: Vec<&String> = ia
        .seen
        .iter()
        .filter(|l| l.contains("appliance-guest: ") && l.contains(", boot "))
        .collect();
    assert!(boots.len() >= 2, "guest boot lines: {boots:#?}");
    assert!(boots.iter().all(|l| !l.contains(host_boot)), "{boots:#?}");
    // The guest init named the port and the NIC as a compartment has them.
    for side_nic in ["is viaduct, arp off; nic", "is lan", "is wan"] {
        assert!(
            ia.seen.iter().any(|l| l.contains(side_nic)),
            "no {side_nic:?} line"
        );
    }
    // The VMMs run as their personalities' uids.
    for uid in [100000, 200000] {
        assert!(
            ia.child_with_uid(uid).is_some(),
            "gw-a has no VMM child running as uid {uid}"
        );
    }

    if !ping(&lana, "10.2.0.2", Duration::from_secs(60)) {
        let mut report = String::new();
        for (init, ns) in [(&mut ia, &gwa), (&mut ib, &gwb)] {
            let mark = init.seen.len();
            init.send("counters");
            init.send("status");
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                init.wait_since(mark, "no-such-line", Duration::from_secs(3))
            }));
            report += &init.seen[mark..].join("\n");
            report += &String::from_utf8_lossy(&sh(&format!("ip -n {ns} -s link")).stdout);
        }
        if let Some(s) = std::env::var("RVM_HOLD").ok().and_then(|s| s.parse().ok()) {
            eprintln!("{report}\nholding the lab for {s} s");
            std::thread::sleep(Duration::from_secs(s));
        }
        panic!("LAN A cannot reach LAN B through the VMs and the tunnel:\n{report}");
    }

    // Black's management link: TCP to black's address reaches the init's
    // management socket through black's relay, its VM's serial port and the
    // init's bridge; each session gets its answer (here: this image takes no
    // updates), one after another.
    ia.wait_since(
        0,
        "black: management link bridge started",
        Duration::from_secs(10),
    );
    for i in 0..2 {
        let answer = management_request(&inet, "198.51.100.1:7443", &[0x42; 3000]);
        assert!(
            answer.contains("takes no updates"),
            "session {i} through black's VM: {answer:?}"
        );
    }

    // Black's VM killed from the console: stopped, restarted, up again; the
    // Viaduct (and its SAs) never noticed.
    let viaduct_before = ia
        .seen
        .iter()
        .rev()
        .find(|l| l.contains("viaduct: started (pid"))
        .cloned()
        .expect("viaduct started line");
    let mark = ia.seen.len();
    ia.send("kill black");
    ia.wait_since(mark, "black: VM stopped", Duration::from_secs(20));
    ia.wait_since(mark, "black: VM started", Duration::from_secs(30));
    ia.wait_since(mark, "black: up", limit);
    assert!(
        ping(&lana, "10.2.0.2", Duration::from_secs(90)),
        "the tunnel did not come back after black's VM restarted"
    );
    assert!(
        !ia.seen[mark..]
            .iter()
            .any(|l| l.contains("viaduct: started (pid")),
        "the Viaduct was restarted ({viaduct_before} before)"
    );

    // Nothing of the gateways outlives its init: the VMMs and black's
    // management link bridge die with it.
    let uids = |u: u32| -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/status"))
                    .unwrap_or_default()
                    .lines()
                    .any(|l| {
                        l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some(&u.to_string())
                    })
                    && !std::fs::read_to_string(format!("/proc/{p}/stat"))
                        .unwrap_or_default()
                        .contains(") Z ")
            })
            .collect()
    };
    let (pa, pb) = (ia.pid, ib.pid);
    let _ = sh(&format!("kill -9 {pa} {pb}"));
    let t = Instant::now();
    let mut left = Vec::new();
    while t.elapsed() < Duration::from_secs(10) {
        left = [100000, 200000, 200001]
            .into_iter()
            .flat_map(uids)
            .collect();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(left.is_empty(), "processes outlived their init: {left:?}");

    // On the internet segment every IPv4 packet is ESP.
    drop(ia);
    drop(ib);
    std::thread::sleep(Duration::from_secs(1));
    let frames = pcap_frames(&std::fs::read(&pcap).unwrap());
    let mut esp = 0;
    for f in &frames {
        if f.len() < 34 || f[12..14] != [0x08, 0x00] {
            continue;
        }
        let (src, dst) = (&f[26..30], &f[30..34]);
        // Nothing of the LANs' addresses in clear.
        for a in [src, dst] {
            assert!(
                a[0] != 10,
                "a LAN address on the internet: {:02x?}",
                &f[..34]
            );
        }
        // What the gateways send and receive there is ESP (the internet
        // host's own IGMP and the like are its business).
        let gateway = |a: &[u8]| a[..3] == [198, 51, 100] && (a[3] == 1 || a[3] == 2);
        // The management sessions of this test: TCP to black's port 7443
        // (what they carry is authenticated end to end, not LAN traffic).
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let ports = f.get(14 + ihl..14 + ihl + 4).map(|p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            )
        });
        if f[23] == 6 && ports.is_some_and(|(a, b)| a == 7443 || b == 7443) {
            continue;
        }
        if gateway(src) || gateway(dst) {
            assert_eq!(
                f[23],
                50,
                "a non-ESP packet of a gateway: {:02x?}",
                &f[..34]
            );
            esp += 1;
        }
    }
    assert!(esp >= 4, "only {esp} ESP packets captured");
}
