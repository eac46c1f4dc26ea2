//! The gateway runtime on this host: the same compartment code as on the device, run
//! by `gateway-init --serve <root>` inside a network namespace where veth pairs stand
//! in for the NICs.
//!
//! `two_gateways_tunnel_isolation_and_restart` builds the lab pair (gw-a, gw-b from
//! profiles/lab) with their real policies and the builder's rendered network scripts:
//!
//! ```text
//!  lana (10.1.0.2) ─veth─ [gwa: red │ Viaduct │ black] ─veth─┐
//!                                                            inet: br0 198.51.100.254 (tcpdump)
//!  lanb (10.2.0.2) ─veth─ [gwb: red │ Viaduct │ black] ─veth─┘
//! ```
//! and checks: both reach `ready`; ping and an HTTP transfer (checksum, with a marker
//! string) from LAN A to LAN B through the tunnel; the capture on br0 holds only ARP
//! and ESP and never the marker; traffic to an address outside the policy never
//! reaches br0 and is counted by the Viaduct; a probe service inside red (as confined
//! as any service) finds itself under seccomp, without capabilities, TPM, module
//! loading, mounting, namespaces, or a route to black; the Viaduct process has
//! `Seccomp: 2`, no capabilities and no NIC; `kill black` on the console is logged,
//! black is restarted and the tunnel works again; `poweroff` leaves no process.
//!
//! `faults_stay_closed` checks a missing NIC (closed, nothing started), a corrupted
//! policy blob (the Viaduct refuses it, nothing forwarded) and a crash-looping
//! service (back-off, logged).
//!
//! Needs root, iproute2, busybox-static, tcpdump, /dev/net/tun and the static Viaduct
//! (`scripts/build-gateway-bins`, which scripts/test runs).

use gateway::digest::Sha256Digest;
use gateway::plan::{
    Capability, CompartmentPlan, InitramfsPath, NicMatch, Plan, ProfileName, ProfileVersion,
    Restart, SecurityVersion, ServicePlan, ShortName, Side, SocketFamily,
};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn viaduct_bin() -> PathBuf {
    repo().join("target/x86_64-unknown-linux-gnu/release/viaduct")
}

fn require_host() {
    assert!(
        is_root(),
        "the runtime test needs root (network namespaces, user namespaces, TUN)"
    );
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("tcpdump", "tcpdump"),
        ("ldd", "libc-bin"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "`{tool}` is missing: apt-get install {pkg}");
    }
    assert!(
        Path::new("/bin/busybox").exists(),
        "/bin/busybox is missing: apt-get install busybox-static"
    );
    assert!(
        Path::new("/dev/net/tun").exists(),
        "/dev/net/tun is missing: the kernel needs TUN support"
    );
    assert!(
        viaduct_bin().exists(),
        "no static viaduct at {}: run scripts/build-gateway-bins first (scripts/test does)",
        viaduct_bin().display()
    );
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

fn run(cmd: &str) -> std::process::Output {
    Command::new("sh").args(["-c", cmd]).output().unwrap()
}

fn must(cmd: &str) -> String {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Namespaces, processes and files of one test; removed on drop.
struct Lab {
    tag: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl Lab {
    fn new(name: &str) -> Lab {
        let tag = format!("{name}{}", std::process::id() % 100000);
        let dir = std::env::temp_dir().join(format!("gw-runtime-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Lab {
            tag,
            namespaces: Vec::new(),
            children: Vec::new(),
            dir,
        }
    }
    fn ns(&mut self, short: &str) -> String {
        let n = format!("{short}-{}", self.tag);
        must(&format!("ip netns add {n}"));
        must(&format!("ip -n {n} link set lo up"));
        self.namespaces.push(n.clone());
        n
    }
    /// A veth pair: `a` in namespace `na`, `b` in `nb`.
    fn veth(&self, na: &str, a: &str, nb: &str, b: &str) {
        must(&format!(
            "ip link add vt{0} type veth peer name vu{0} && ip link set vt{0} netns {na} name {a} && ip link set vu{0} netns {nb} name {b}",
            std::process::id() % 1000 + self.namespaces.len() as u32 * 1000 + a.len() as u32 * 7 + b.len() as u32
        ));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.namespaces {
            // Processes left in a namespace (a failed test) are killed first.
            let _ = run(&format!("ip netns pids {n} | xargs -r kill -9"));
            let _ = run(&format!("ip netns del {n}"));
        }
        if std::env::var_os("KEEP_RUNTIME_TEST").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Copies `bin` and the shared libraries it needs (per `ldd`) into `root`, at the
/// same paths.
fn install_with_libs(bin: &Path, dest: &str, root: &Path) {
    let target = root.join(dest.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(bin, &target).unwrap();
    let out = run(&format!("ldd {}", bin.display()));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(str::to_owned);
        if let Some(p) = path {
            let t = root.join(p.trim_start_matches('/'));
            if !t.exists() {
                std::fs::create_dir_all(t.parent().unwrap()).unwrap();
                std::fs::copy(&p, &t).unwrap();
            }
        }
    }
}

fn write_exec(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The red probe: runs inside red with a service's confinement and reports.
const PROBE: &str = r#"#!/bin/sh
p() {
    if sh -c "$2" >/tmp/probe.out 2>&1; then echo "PROBE $1 ok"
    else echo "PROBE $1 FAIL: $(tr '\n' ' ' </tmp/probe.out)"; fi
}
p seccomp 'grep -q "^Seccomp:[[:space:]]*2" /proc/self/status'
p no-new-privs 'grep -q "^NoNewPrivs:[[:space:]]*1" /proc/self/status'
p no-capabilities 'grep -q "^CapEff:[[:space:]]*0000000000000000" /proc/self/status && grep -q "^CapBnd:[[:space:]]*0000000000000000" /proc/self/status'
p no-tpm-device '! ls /dev/tpm0 /dev/tpmrm0'
p no-tpm-mknod 'if busybox mknod /tmp/tpm0 c 10 224 2>/tmp/e; then exit 1; fi; grep -q "not permitted" /tmp/e'
p no-module-load 'echo x > /tmp/m.ko; if busybox insmod /tmp/m.ko 2>/tmp/e; then exit 1; fi; grep -q "not permitted" /tmp/e'
p no-mount 'mkdir -p /run/m; if busybox mount -t tmpfs none /run/m 2>/run/e; then exit 1; fi; cat /run/e; grep -qiE "not permitted|permission denied" /run/e'
p no-new-namespace '! busybox unshare -n true'
p no-join-init-ns '! busybox nsenter -t 1 -n true'
p read-only-root '! touch /etc/probe-write'
p writable-run 'touch /run/probe-write'
p no-kernel-log '! busybox dmesg'
p own-pid-namespace 'grep -q appliance-compartment /proc/1/cmdline'
p only-own-links 'l="$(ip -o link show | cut -d: -f2 | cut -d@ -f1 | tr -d " " | sort | tr "\n" " ")"; echo "$l"; test "$l" = "lan lo viaduct "'
p no-route-to-black '! busybox ping -c 1 -W 1 198.51.100.1'
echo "PROBE done"
"#;

struct Gw {
    root: PathBuf,
    plan: Plan,
}

/// Builds the tree `gateway-init --serve` runs from: plan, policy, Viaduct, and the
/// two personality roots (busybox, iproute2, the init's own libraries, the builder's
/// network scripts).
fn make_root(lab: &Lab, dir: &str, profile_path: &str, red_services: Vec<ServicePlan>) -> Gw {
    let profile = profiles::load_profile(&repo().join(profile_path)).expect("lab profile");
    let name = profile.appliance.name.clone();
    let root = lab.dir.join(dir);
    let policy = policy::compile_blob(&profile).expect("policy compiles");
    std::fs::create_dir_all(root.join("etc/appliance")).unwrap();
    std::fs::write(root.join("etc/appliance/policy.bin"), &policy).unwrap();
    std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
    std::fs::copy(viaduct_bin(), root.join("usr/sbin/viaduct")).unwrap();
    let ip = ["/usr/bin/ip", "/bin/ip", "/sbin/ip", "/usr/sbin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("ip");
    for side in ["red", "black"] {
        let r = root.join("personalities").join(side);
        for d in ["bin", "dev", "proc", "run", "tmp", "etc/appliance"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", r.join("bin/sh")).unwrap();
        install_with_libs(Path::new(ip), "/usr/bin/ip", &r);
        // The compartment init is this test's (dynamically linked) gateway-init.
        install_with_libs(
            Path::new(env!("CARGO_BIN_EXE_gateway-init")),
            "/usr/lib/appliance/gateway-init",
            &r,
        );
        std::fs::write(
            r.join("etc/passwd"),
            "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
        let side_enum = if side == "red" {
            profiles::Side::Red
        } else {
            profiles::Side::Black
        };
        let script =
            builder::network_script(&profile, side_enum, "/usr/bin/ip").expect("network script");
        write_exec(&r.join("etc/appliance/network"), &script);
    }
    write_exec(&root.join("personalities/red/etc/probe.sh"), PROBE);
    let mut services = vec![red_services, Vec::new()].into_iter();
    let compartments = [(Side::Red, "lan"), (Side::Black, "wan")]
        .into_iter()
        .map(|(side, nic)| CompartmentPlan {
            side,
            root: InitramfsPath::new(&format!("/personalities/{side}")).unwrap(),
            uid_base: if side == Side::Red { 100000 } else { 200000 },
            memory_max: 256 << 20,
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
            services: services.next().unwrap(),
        })
        .collect();
    let plan = Plan {
        profile_name: ProfileName::new(&name).unwrap(),
        profile_version: ProfileVersion::new(&profile.appliance.version).unwrap(),
        security_version: SecurityVersion(1),
        policy_path: InitramfsPath::new("/etc/appliance/policy.bin").unwrap(),
        policy_sha256: Sha256Digest::of(&policy),
        modules: Vec::new(),
        compartments,
        viaduct: InitramfsPath::new("/usr/sbin/viaduct").unwrap(),
    };
    std::fs::write(root.join("etc/appliance/plan"), plan.encode()).unwrap();
    Gw { root, plan }
}

fn probe_service() -> ServicePlan {
    ServicePlan {
        name: ShortName::new("service", "probe").unwrap(),
        restart: Restart::Never,
        caps: Vec::new(),
        argv: vec!["/etc/probe.sh".into()],
    }
}

/// A running `gateway-init --serve`.
struct Init {
    name: String,
    stdin: ChildStdin,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Init {
    fn start(lab: &mut Lab, ns: &str, gw: &Gw) -> Init {
        let mut child = Command::new("ip")
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
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let name = gw.plan.profile_name.as_str().to_owned();
        let tag = name.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {l}");
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        lab.children.push(child);
        Init {
            name,
            stdin,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`; panics with the log on timeout.
    fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: no line containing {needle:?} within {limit:?}; log:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Like [`Init::wait_for`], but a line already seen also counts.
    fn wait_for_any(&mut self, needle: &str, limit: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        self.wait_for(needle, limit)
    }

    /// Collects lines for `d`.
    fn drain(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(l);
        }
    }

    fn send(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn pid_of(&self, unit: &str) -> i32 {
        let prefix = format!("appliance: {unit}: started (pid ");
        self.seen
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|r| r.trim_end_matches(')').parse().ok())
            .unwrap_or_else(|| panic!("{}: no pid for {unit}", self.name))
    }
}

fn status_field(pid: i32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// Parses a classic pcap file (Ethernet) into frames.
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
    assert_eq!(u32_at(&data[20..24]), 1, "link type must be Ethernet");
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

#[test]
fn two_gateways_tunnel_isolation_and_restart() {
    require_host();
    let mut lab = Lab::new("rt");
    let gwa_ns = lab.ns("gwa");
    let gwb_ns = lab.ns("gwb");
    let inet = lab.ns("inet");
    let lana = lab.ns("lana");
    let lanb = lab.ns("lanb");
    lab.veth(&gwa_ns, "lan0", &lana, "eth0");
    lab.veth(&gwa_ns, "wan0", &inet, "a-wan");
    lab.veth(&gwb_ns, "lan0", &lanb, "eth0");
    lab.veth(&gwb_ns, "wan0", &inet, "b-wan");
    must(&format!(
        "ip -n {inet} link add br0 type bridge && ip -n {inet} link set a-wan master br0 && \
         ip -n {inet} link set b-wan master br0 && ip -n {inet} link set a-wan up && \
         ip -n {inet} link set b-wan up && ip -n {inet} link set br0 up && \
         ip -n {inet} addr add 198.51.100.254/24 dev br0"
    ));
    must(&format!("ip netns exec {inet} sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/br0/disable_ipv6'"));
    for (ns, addr, gw) in [
        (&lana, "10.1.0.2/24", "10.1.0.1"),
        (&lanb, "10.2.0.2/24", "10.2.0.1"),
    ] {
        must(&format!(
            "ip -n {ns} addr add {addr} dev eth0 && ip -n {ns} link set eth0 up && ip -n {ns} route add default via {gw}"
        ));
    }
    let a = make_root(&lab, "a", "profiles/lab/gw-a.toml", vec![probe_service()]);
    let b = make_root(&lab, "b", "profiles/lab/gw-b.toml", Vec::new());

    // Capture the internet segment from the start.
    let pcap = lab.dir.join("inet.pcap");
    let dump_log = lab.dir.join("tcpdump.log");
    let dump = Command::new("ip")
        .args([
            "netns",
            "exec",
            &inet,
            "tcpdump",
            "-n",
            "-U",
            "--immediate-mode",
            "-i",
            "br0",
            "-w",
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
    let mut ia = Init::start(&mut lab, &gwa_ns, &a);
    let mut ib = Init::start(&mut lab, &gwb_ns, &b);
    ia.wait_for("appliance: ready gw-a 0.1.0", Duration::from_secs(60));
    ib.wait_for("appliance: ready gw-b 0.1.0", Duration::from_secs(60));
    eprintln!("both gateways ready after {:?}", started.elapsed());

    // The init's namespace keeps no NIC.
    for ns in [&gwa_ns, &gwb_ns] {
        let links = must(&format!("ip -n {ns} -o link show"));
        assert_eq!(
            links.lines().count(),
            1,
            "init namespace {ns} still has links:\n{links}"
        );
    }

    // Inside red: the probe's findings.
    ia.wait_for_any("PROBE done", Duration::from_secs(30));
    let probes: Vec<&String> = ia.seen.iter().filter(|l| l.contains("PROBE ")).collect();
    let failed: Vec<&&String> = probes
        .iter()
        .filter(|l| !l.ends_with(" ok") && !l.ends_with("PROBE done"))
        .collect();
    assert!(probes.len() >= 16, "probe lines missing: {probes:#?}");
    assert!(failed.is_empty(), "red probe failures: {failed:#?}");

    // The Viaduct: seccomp, no capabilities, no NIC.
    let vpid = ia.pid_of("viaduct");
    assert_eq!(status_field(vpid, "Seccomp"), "2");
    assert_eq!(status_field(vpid, "NoNewPrivs"), "1");
    for k in ["CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"] {
        assert_eq!(status_field(vpid, k), "0000000000000000", "viaduct {k}");
    }
    let vlinks = must(&format!("nsenter -t {vpid} -n ip -o link show"));
    assert_eq!(
        vlinks
            .lines()
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
            .collect::<Vec<_>>(),
        ["lo"],
        "viaduct netns links:\n{vlinks}"
    );
    // Each personality's NIC and TUN are in its own namespace, nowhere else.
    let redpid = ia.pid_of("red");
    let redlinks = must(&format!("nsenter -t {redpid} -n ip -o link show"));
    assert!(
        redlinks.contains(": lan@") && redlinks.contains(": viaduct:") && !redlinks.contains("wan"),
        "red (pid {redpid}) links: {redlinks:?}"
    );
    // Red's TUN carries vnet headers (the Viaduct segments and coalesces
    // its TCP flows); black's carries plain ESP packets.
    for (side, want) in [("red", "vnet_hdr on"), ("black", "vnet_hdr off")] {
        let pid = ia.pid_of(side);
        let tun = must(&format!("nsenter -t {pid} -n ip -d link show viaduct"));
        assert!(tun.contains(want), "{side} TUN: want {want}:\n{tun}");
    }

    // Through the tunnel: ping and an HTTP transfer with a marker string.
    must(&format!(
        "ip netns exec {lana} busybox ping -c 3 -W 5 10.2.0.2"
    ));
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let marker = "APPLIANCE-PLAINTEXT-MARKER-7f3a";
    let mut data = Vec::new();
    let mut x: u32 = 12345;
    while data.len() < 4 << 20 {
        data.extend_from_slice(marker.as_bytes());
        for _ in 0..200 {
            x = x.wrapping_mul(1664525).wrapping_add(1013904223);
            data.push((x >> 24) as u8);
        }
    }
    std::fs::write(www.join("data"), &data).unwrap();
    let httpd = Command::new("ip")
        .args([
            "netns", "exec", &lanb, "busybox", "httpd", "-f", "-p", "8080", "-h",
        ])
        .arg(&www)
        .spawn()
        .unwrap();
    lab.children.push(httpd);
    std::thread::sleep(Duration::from_millis(300));
    let got = lab.dir.join("got");
    let t = Instant::now();
    must(&format!(
        "ip netns exec {lana} timeout 60 busybox wget -q -O {} http://10.2.0.2:8080/data",
        got.display()
    ));
    let secs = t.elapsed().as_secs_f64();
    let got_bytes = std::fs::read(&got).unwrap();
    assert_eq!(
        Sha256Digest::of(&got_bytes),
        Sha256Digest::of(&data),
        "transfer through the tunnel corrupted"
    );
    eprintln!(
        "4 MiB through the tunnel in {secs:.2}s ({:.0} Mbit/s)",
        (data.len() * 8) as f64 / secs / 1e6
    );

    // DISCARD: LAN A to an address no policy covers.
    let o = run(&format!(
        "ip netns exec {lana} busybox ping -c 2 -W 1 198.51.100.77"
    ));
    assert!(!o.status.success(), "ping outside the policy got an answer");

    // Crash black: logged, restarted, tunnel back.
    ia.send("kill black");
    ia.wait_for("black exited (killed by signal 9)", Duration::from_secs(10));
    let t = Instant::now();
    ia.wait_for("appliance: black: up", Duration::from_secs(30));
    let mut ok = false;
    while t.elapsed() < Duration::from_secs(30) {
        if run(&format!(
            "ip netns exec {lana} busybox ping -c 1 -W 1 10.2.0.2"
        ))
        .status
        .success()
        {
            ok = true;
            break;
        }
    }
    assert!(ok, "tunnel did not come back after black restarted");
    eprintln!("tunnel back {:?} after black was killed", t.elapsed());

    // Counters: the DISCARD above was counted.
    ia.send("status");
    ia.wait_for("status viaduct up", Duration::from_secs(5));
    must(&format!("kill -USR1 {vpid}"));
    let drops = ia.wait_for("out drop total=", Duration::from_secs(5));
    let n: u64 = drops.rsplit('=').next().unwrap().trim().parse().unwrap();
    assert!(n >= 2, "discarded packets not counted: {drops}");

    // Shut down, then the capture: only ARP and ESP, never the marker.
    ia.send("poweroff");
    ib.send("poweroff");
    ia.wait_for("appliance: stopped", Duration::from_secs(15));
    ib.wait_for("appliance: stopped", Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(300));
    must(&format!("ip netns pids {inet} | xargs -r kill -INT"));
    std::thread::sleep(Duration::from_millis(500));
    let cap = std::fs::read(&pcap).unwrap();
    let frames = pcap_frames(&cap);
    let mut esp = 0;
    for f in &frames {
        assert!(
            !f.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "plaintext marker on the internet segment"
        );
        match u16::from_be_bytes([f[12], f[13]]) {
            0x0806 => {}
            0x0800 => {
                let ip = &f[14..];
                let gateways = [[198, 51, 100, 1], [198, 51, 100, 2]];
                let from_or_to_gateway = gateways.contains(&[ip[12], ip[13], ip[14], ip[15]])
                    || gateways.contains(&[ip[16], ip[17], ip[18], ip[19]]);
                if from_or_to_gateway {
                    assert_eq!(
                        ip[9],
                        50,
                        "non-ESP IPv4 packet to or from a gateway on the internet segment: {:02x?}",
                        &ip[..20]
                    );
                    esp += 1;
                }
                // Anything else is the lab's own bridge (e.g. its IGMP reports).
            }
            other => panic!("ethertype {other:#06x} on the internet segment"),
        }
    }
    assert!(esp > 1000, "only {esp} ESP frames captured");
    eprintln!(
        "{} frames on the internet segment, {esp} ESP, no plaintext",
        frames.len()
    );
    for ns in [&gwa_ns, &gwb_ns] {
        let pids = must(&format!("ip netns pids {ns}"));
        assert!(pids.trim().is_empty(), "processes left in {ns}: {pids}");
    }
}

#[test]
fn faults_stay_closed() {
    require_host();
    let mut lab = Lab::new("ft");
    // 1. The profile's NIC is missing: closed, nothing started.
    let gw = lab.ns("gw1");
    let other = lab.ns("peer1");
    lab.veth(&gw, "eth7", &other, "eth0");
    let a = make_root(&lab, "missing-nic", "profiles/lab/gw-a.toml", Vec::new());
    let mut i = Init::start(&mut lab, &gw, &a);
    let l = i.wait_for("error:", Duration::from_secs(30));
    assert!(
        l.contains("NIC `lan`") && l.contains("not present") && l.contains("eth7"),
        "{l}"
    );
    i.wait_for("closed:", Duration::from_secs(5));
    i.drain(Duration::from_millis(500));
    assert!(
        !i.seen.iter().any(|l| l.contains("started (pid")),
        "something started"
    );
    let links = must(&format!("ip -n {gw} -o link show"));
    assert!(
        links.contains("eth7"),
        "the NIC moved although the gateway is closed"
    );
    i.send("poweroff");
    i.wait_for("appliance: stopped", Duration::from_secs(10));

    // 2. Corrupted policy blob (the plan pins the corrupted bytes, so only the
    //    Viaduct's own checks stand): the Viaduct refuses it, is retried with back-off,
    //    and nothing is forwarded.
    let gw2 = lab.ns("gw2");
    let lan2 = lab.ns("lan2");
    let inet2 = lab.ns("inet2");
    lab.veth(&gw2, "lan0", &lan2, "eth0");
    lab.veth(&gw2, "wan0", &inet2, "eth0");
    must(&format!("ip -n {lan2} addr add 10.1.0.2/24 dev eth0 && ip -n {lan2} link set eth0 up && ip -n {lan2} route add default via 10.1.0.1"));
    must(&format!(
        "ip -n {inet2} addr add 198.51.100.2/24 dev eth0 && ip -n {inet2} link set eth0 up"
    ));
    let crash = ServicePlan {
        name: ShortName::new("service", "crashy").unwrap(),
        restart: Restart::Always,
        caps: vec![Capability::from_name("CAP_NET_RAW").unwrap()],
        argv: vec!["/bin/busybox".into(), "false".into()],
    };
    let mut b = make_root(&lab, "corrupt", "profiles/lab/gw-a.toml", vec![crash]);
    let blob_path = b.root.join("etc/appliance/policy.bin");
    let mut blob = std::fs::read(&blob_path).unwrap();
    let mid = blob.len() / 2;
    blob[mid] ^= 0x40;
    std::fs::write(&blob_path, &blob).unwrap();
    b.plan.policy_sha256 = Sha256Digest::of(&blob);
    std::fs::write(b.root.join("etc/appliance/plan"), b.plan.encode()).unwrap();
    let mut i2 = Init::start(&mut lab, &gw2, &b);
    let l = i2.wait_for("viaduct exited", Duration::from_secs(30));
    assert!(l.contains("restarting in 1s"), "{l}");
    i2.wait_for("viaduct exited", Duration::from_secs(30));
    assert!(
        i2.seen
            .iter()
            .any(|l| l.starts_with("appliance: viaduct| ") && l.contains("policy")),
        "the Viaduct did not say why it refused the policy"
    );
    // 3. The crash-looping service backs off: 1 s, 2 s, 4 s, logged as red's.
    i2.wait_for(
        "service crashy exited (exit status 1); restarting in 4s",
        Duration::from_secs(30),
    );
    let backoff: Vec<&String> = i2
        .seen
        .iter()
        .filter(|l| l.contains("service crashy exited"))
        .collect();
    assert_eq!(backoff.len(), 3, "{backoff:#?}");
    for (l, d) in backoff.iter().zip(["1s", "2s", "4s"]) {
        assert!(
            l.starts_with("appliance: red: ") && l.ends_with(&format!("restarting in {d}")),
            "{l}"
        );
    }
    let o = run(&format!(
        "ip netns exec {lan2} busybox ping -c 2 -W 1 10.2.0.2"
    ));
    assert!(!o.status.success());
    let frames = run(&format!("ip netns exec {inet2} cat /proc/net/dev"));
    let eth0 = String::from_utf8_lossy(&frames.stdout)
        .lines()
        .find(|l| l.trim_start().starts_with("eth0:"))
        .map(str::to_owned)
        .unwrap();
    // Received packets on the internet side: at most ARP noise, no forwarded traffic.
    let rx_packets: u64 = eth0.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(rx_packets < 5, "traffic reached the internet side: {eth0}");
    assert!(
        !i2.seen.iter().any(|l| l.contains("appliance: ready")),
        "ready without a Viaduct"
    );
    i2.send("poweroff");
    i2.wait_for("appliance: stopped", Duration::from_secs(15));
}
