//! The real binary in network namespaces: two gateways joined by an
//! "internet" veth, the confinement of the running process, and the refusal
//! of bad policy files. Needs root, `ip`, `tcpdump` and `busybox` (ping);
//! skips loudly otherwise. Every namespace is deleted by a guard, even when
//! an assertion fails.
//!
//! ```text
//! netns lanA: vred (TUN, 10.1.0.1/24) ══ Viaduct A ══ netns blkA: vblk (TUN)
//!     blkA: inet 198.51.100.1/24 ── veth ── blkB: inet 198.51.100.2/24
//! netns blkB: vblk (TUN) ══ Viaduct B ══ netns lanB: vred (TUN, 10.2.0.1/24)
//! Viaduct outer addresses: A 203.0.113.1, B 203.0.113.2 (routed via the veth)
//! ```

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use policy_blob::*;
use rustix::process::{kill_process, Pid, Signal};
use sha2_free::Sha;

use crate::common::*;
use crate::support::{kernel_has_tun_uso, wait_link};

mod router;
mod strongswan;

/// A tiny FNV-1a-based 64-bit checksum, enough to detect corruption of the
/// transferred stream (no extra dependency).
mod sha2_free {
    pub struct Sha(pub u64);
    impl Sha {
        pub fn new() -> Self {
            Sha(0xcbf2_9ce4_8422_2325)
        }
        pub fn update(&mut self, data: &[u8]) {
            for &b in data {
                self.0 ^= u64::from(b);
                self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
}

const MARKER: &[u8] = b"VIADUCT-SECRET-MARKER-7f3a";
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// True (after saying why, loudly) when this host cannot run the netns tests.
fn skipped() -> bool {
    match skip_reason() {
        Some(s) => {
            eprintln!("{s}");
            true
        }
        None => false,
    }
}

fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("SKIP: netns tests need root".into());
    }
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("tcpdump", "tcpdump"),
        ("busybox", "busybox-static"),
    ] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false);
        if !found {
            return Some(format!("SKIP: {tool} not found (install package {pkg})"));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("SKIP: /dev/net/tun missing (load the tun module)".into());
    }
    None
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip_ns(ns: &str, args: &str) {
    let mut v = vec!["ip", "-n", ns];
    v.extend(args.split_whitespace());
    sh(&v);
}

fn ns_exec(ns: &str, args: &str) {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend(args.split_whitespace());
    sh(&v);
}

fn ns_sysctl(ns: &str, key: &str, value: &str) {
    let cmd = format!("echo {value} > /proc/sys/{key}");
    sh(&["ip", "netns", "exec", ns, "sh", "-c", &cmd]);
}

/// Deletes namespaces and kills children on drop.
struct Guard {
    netns: Vec<String>,
    children: Vec<Child>,
}

impl Guard {
    fn netns(&mut self, name: String) -> String {
        sh(&["ip", "netns", "add", &name]);
        self.netns.push(name.clone());
        ns_sysctl(&name, "net/ipv4/ip_forward", "1");
        ip_ns(&name, "link set lo up");
        name
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn write_policy(dir: &Path, name: &str, p: &Policy) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, p.encode()).unwrap();
    path
}

/// `--key-claim` for the policy in `path`, as the gateway init gives it once it has
/// recorded the policy's manual keys (each test's Viaduct is a new device).
fn key_claim(path: &Path) -> Vec<String> {
    let p = Policy::decode(&std::fs::read(path).unwrap()).unwrap();
    let uses = p.manual_key_uses();
    if uses.is_empty() {
        return Vec::new();
    }
    vec!["--key-claim".into(), policy_blob::hex(&uses.digest())]
}

fn spawn_viaduct(policy: &Path, red_ns: &str, black_ns: &str, log: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_viaduct"))
        .args(extra)
        .args(key_claim(policy))
        .args(["--policy", policy.to_str().unwrap()])
        .args([
            "--red",
            "vred",
            "--red-netns",
            &format!("/run/netns/{red_ns}"),
        ])
        .args([
            "--black",
            "vblk",
            "--black-netns",
            &format!("/run/netns/{black_ns}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .expect("spawn viaduct")
}

/// Runs `f` in a thread that entered netns `ns` (setns is per thread).
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = File::open(&path).unwrap();
        rustix::thread::move_into_link_name_space(
            fd.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        f()
    })
}

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 8)) as u8
}

/// Sends `total` bytes (with MARKER every 64 KiB) from lanA to lanB over TCP
/// and returns (sent checksum, received checksum, received length).
fn tcp_transfer(lan_a: &str, lan_b: &str, total: usize) -> (u64, u64, usize) {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = in_netns(lan_b, move || {
        let l = TcpListener::bind("10.2.0.1:5001").unwrap();
        tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut h = Sha::new();
        let mut n = 0;
        let mut buf = vec![0u8; 65536];
        loop {
            let k = s.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k;
        }
        (h.0, n)
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let client = in_netns(lan_a, move || {
        let mut s =
            TcpStream::connect_timeout(&"10.2.0.1:5001".parse().unwrap(), Duration::from_secs(10))
                .unwrap();
        s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        // DSCP EF on the LAN's segments (ECN is TCP's: ECT(0) with
        // tcp_ecn=1); none of it may reach the outer header.
        rustix::net::sockopt::set_ip_tos(&s, LAN_TOS).unwrap();
        let mut h = Sha::new();
        let mut data: Vec<u8> = (0..total).map(pattern).collect();
        for off in (0..total).step_by(65536) {
            let end = (off + MARKER.len()).min(total);
            data[off..end].copy_from_slice(&MARKER[..end - off]);
        }
        h.update(&data);
        s.write_all(&data).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        h.0
    });
    let sent = client.join().expect("client");
    let (got, n) = server.join().expect("server");
    (sent, got, n)
}

/// The TOS byte the LAN's TCP sender asks for (DSCP 46, EF).
const LAN_TOS: u8 = 0xb8;

/// TOS bytes of the UDP datagrams the LAN sends besides: every bit set once.
const LAN_UDP_TOS: [u8; 5] = [0xff, 0x01, 0x02, 0x03, 0xfc];

/// Sends one UDP datagram per TOS in `LAN_UDP_TOS` from `ns` to `dst`
/// (port 9, discard: the answer is an ICMP error, which is fine).
fn udp_with_tos(ns: &str, dst: &'static str) {
    in_netns(ns, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for tos in LAN_UDP_TOS {
            rustix::net::sockopt::set_ip_tos(&s, tos).unwrap();
            s.send_to(&[tos; 64], (dst, 9)).unwrap();
        }
    })
    .join()
    .unwrap();
}

/// The TOS bytes of the IPv4 packets in a capture of a TUN (raw IP).
fn inner_tos(path: &Path) -> Vec<u8> {
    let data = std::fs::read(path).unwrap();
    let cap = testbed::pcap::parse(&data).expect("a pcap file");
    // LINKTYPE_RAW (101, or DLT_RAW 12): frames start with the IP header.
    assert!(
        matches!(cap.link_type, 101 | 12),
        "link type {}",
        cap.link_type
    );
    cap.frames
        .iter()
        .filter(|f| f.len() >= 20 && f[0] >> 4 == 4)
        .map(|f| f[1])
        .collect()
}

/// Checks a pcap (Ethernet link type): every IPv4/IPv6 frame is ESP with an
/// outer TOS of 0 (DSCP 0, Not-ECT: nothing of the LAN's TOS), no frame
/// holds MARKER. Returns the number of ESP frames.
fn check_pcap(path: &Path, udp: bool) -> usize {
    let data = std::fs::read(path).unwrap();
    let cap = testbed::pcap::parse(&data).expect("a pcap file");
    assert_eq!(
        cap.link_type,
        testbed::pcap::LINKTYPE_ETHERNET,
        "expected Ethernet link type"
    );
    let mut esp = 0;
    for frame in cap.frames {
        assert!(
            !frame.windows(MARKER.len()).any(|w| w == MARKER),
            "marker seen in clear on the internet link"
        );
        if frame.len() < 14 {
            continue;
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        if ethertype == 0x0800 {
            assert_eq!(frame[15], 0, "outer TOS is not 0: a LAN host wrote it");
        }
        match ethertype {
            0x0806 => {} // ARP
            0x0800 if udp => {
                // ESP in UDP: protocol 17, ports 4500 → 4500, an SPI (not the
                // non-ESP marker) after the UDP header.
                let ihl = usize::from(frame[14] & 0x0f) * 4;
                let l4 = &frame[14 + ihl..];
                assert_eq!(
                    frame[14 + 9],
                    17,
                    "non-UDP IPv4 packet on the internet link"
                );
                assert_eq!(&l4[..4], &[0x11, 0x94, 0x11, 0x94], "UDP ports 4500");
                assert_ne!(&l4[8..12], &[0, 0, 0, 0], "non-ESP marker on the data path");
                esp += 1;
            }
            0x0800 => {
                assert_eq!(
                    frame[14 + 9],
                    50,
                    "non-ESP IPv4 packet on the internet link"
                );
                esp += 1;
            }
            0x86dd => panic!("IPv6 packet on the internet link (IPv6 is off there)"),
            other => panic!("unexpected ethertype {other:#06x} on the internet link"),
        }
    }
    esp
}

/// The value of `key=` in the last line of `log` that starts with `prefix`.
fn counter(log: &str, prefix: &str, key: &str) -> u64 {
    viaduct::pump::counter_values(log, prefix, key)
        .last()
        .unwrap_or_else(|| panic!("no `{prefix}` line with {key}= in:\n{log}"))
}

/// Two sites' namespaces (a directory for the case's files, the guard that
/// deletes them, and the names: LAN A, black A, black B, LAN B) and the internet
/// link between the black ones (198.51.100.1 and .2, IPv6 off so only ARP, IKE and
/// ESP may appear on it), each routing the other's Viaduct address (203.0.113.1,
/// .2) over it.
fn two_sites(prefix: &str, dir_name: &str) -> (PathBuf, Guard, [String; 4]) {
    let tag = format!(
        "{}{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let dir = std::env::temp_dir().join(format!("{dir_name}-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut g = Guard {
        netns: vec![],
        children: vec![],
    };
    let lan_a = g.netns(format!("{prefix}{tag}lanA"));
    let blk_a = g.netns(format!("{prefix}{tag}blkA"));
    let blk_b = g.netns(format!("{prefix}{tag}blkB"));
    let lan_b = g.netns(format!("{prefix}{tag}lanB"));
    ip_ns(
        &blk_a,
        &format!("link add inet type veth peer name inet netns {blk_b}"),
    );
    for (ns, me, peer, gw_peer) in [
        (&blk_a, "198.51.100.1", "198.51.100.2", "203.0.113.2"),
        (&blk_b, "198.51.100.2", "198.51.100.1", "203.0.113.1"),
    ] {
        ns_sysctl(ns, "net/ipv6/conf/all/disable_ipv6", "1");
        ns_sysctl(ns, "net/ipv6/conf/default/disable_ipv6", "1");
        ip_ns(ns, &format!("addr add {me}/24 dev inet"));
        ip_ns(ns, "link set inet up");
        ip_ns(ns, &format!("route add {gw_peer}/32 via {peer}"));
    }
    (dir, g, [lan_a, blk_a, blk_b, lan_b])
}

/// Two Viaducts in namespaces; with `offload` (the default) their red TUNs
/// carry vnet headers, the sender's TSO super-packets are segmented and the
/// receiver's segments coalesced; without, every packet crosses alone.
/// With `udp`, ESP travels inside UDP (port 4500) and, with offloads, black
/// carries batches of ESP datagrams as UDP super-packets. `threads` is the
/// Viaducts' `--threads` (1: both directions in one pump thread).
fn two_gateways(aead: Aead, offload: bool, udp: bool, threads: u8) {
    let (dir, mut g, [lan_a, blk_a, blk_b, lan_b]) = two_sites("vd", "viaduct-netns");
    let policy = |a_side: bool| {
        let mut p = gateway_policy(aead, a_side);
        p.tunnels[0].udp_encap = udp;
        p
    };
    let pa = write_policy(&dir, "a.pol", &policy(true));
    let pb = write_policy(&dir, "b.pol", &policy(false));
    let (log_a, log_b) = (dir.join("a.log"), dir.join("b.log"));
    let threads_arg = threads.to_string();
    let mut extra = vec!["--threads", &threads_arg];
    if !offload {
        extra.push("--no-offload");
    }
    let extra = &extra[..];
    g.children
        .push(spawn_viaduct(&pa, &lan_a, &blk_a, &log_a, extra));
    g.children
        .push(spawn_viaduct(&pb, &lan_b, &blk_b, &log_b, extra));
    for (lan, blk, me, peer, gw_me) in [
        (&lan_a, &blk_a, "10.1.0.1", "10.2.0.0", "203.0.113.1"),
        (&lan_b, &blk_b, "10.2.0.1", "10.1.0.0", "203.0.113.2"),
    ] {
        wait_link(lan, "vred");
        wait_link(blk, "vblk");
        ip_ns(lan, "link set vred mtu 1400 up");
        ip_ns(lan, &format!("addr add {me}/24 dev vred"));
        ip_ns(lan, &format!("route add {peer}/24 dev vred"));
        ip_ns(blk, "link set vblk up");
        ip_ns(blk, &format!("route add {gw_me}/32 dev vblk"));
        // IFF_TUN | IFF_NO_PI (0x1001), plus IFF_VNET_HDR (0x4000) on red with offloads.
        let flags = |ns: &str, dev: &str| {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "cat"])
                .arg(format!("/sys/class/net/{dev}/tun_flags"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let want_red = if offload { "0x5001" } else { "0x1001" };
        let want_black = if offload && udp { "0x5001" } else { "0x1001" };
        // (A black TUN with a vnet header even when the kernel has no USO.)
        assert_eq!(flags(lan, "vred"), want_red, "red tun_flags");
        assert_eq!(flags(blk, "vblk"), want_black, "black tun_flags");
    }
    // The LANs' TCP negotiates ECN: its segments carry ECT(0).
    for lan in [&lan_a, &lan_b] {
        ns_sysctl(lan, "net/ipv4/tcp_ecn", "1");
    }
    let pcap = dir.join("inet.pcap");
    let red_pcap = dir.join("red.pcap");
    let mut dumps = Vec::new();
    for (ns, dev, file) in [(&blk_a, "inet", &pcap), (&lan_a, "vred", &red_pcap)] {
        dumps.push(
            Command::new("ip")
                .args(["netns", "exec", ns, "tcpdump", "-n", "-U", "-i", dev, "-w"])
                .arg(file)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    std::thread::sleep(Duration::from_millis(700));
    // Ping both ways.
    ns_exec(&lan_a, "busybox ping -c 3 -W 3 -s 300 10.2.0.1");
    ns_exec(&lan_b, "busybox ping -c 3 -W 3 10.1.0.1");
    udp_with_tos(&lan_a, "10.2.0.1");
    // A few MB over TCP with a checksum.
    let total = 4 * 1024 * 1024;
    let (sent, got, n) = tcp_transfer(&lan_a, &lan_b, total);
    assert_eq!(n, total, "{aead}: bytes received");
    assert_eq!(sent, got, "{aead}: checksum");
    std::thread::sleep(Duration::from_millis(300));
    for dump in &mut dumps {
        let _ = kill_process(Pid::from_child(dump), Signal::TERM);
        let _ = dump.wait();
    }
    let esp = check_pcap(&pcap, udp);
    assert!(esp > 100, "{aead}: only {esp} ESP frames captured");
    // The LAN did set those bits: DSCP EF with ECT(0) on its TCP segments,
    // every bit on its UDP datagrams.
    let tos = inner_tos(&red_pcap);
    assert!(
        tos.contains(&(LAN_TOS | 0b10)),
        "{aead}: no EF + ECT(0) segment from the LAN: {:?}",
        &tos[..tos.len().min(20)]
    );
    for t in LAN_UDP_TOS {
        assert!(
            tos.contains(&t),
            "{aead}: no datagram with TOS {t:#04x} from the LAN"
        );
    }
    // Counters on SIGUSR1, clean exit on SIGTERM.
    for c in &g.children {
        kill_process(Pid::from_child(c), Signal::USR1).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    for c in &g.children {
        kill_process(Pid::from_child(c), Signal::TERM).unwrap();
    }
    for c in g.children.iter_mut() {
        let st = c.wait().unwrap();
        assert!(st.success(), "{aead}: viaduct exited with {st:?}");
    }
    g.children.clear();
    let log = std::fs::read_to_string(&log_a).unwrap();
    assert!(log.contains("out tunnel=lab"), "{log}");
    let pumping = format!("pumping with {threads} thread");
    assert!(log.contains(&pumping), "{pumping:?} expected:\n{log}");
    assert!(
        log.matches("red->black").count() >= 2,
        "SIGUSR1 dump + exit dump expected:\n{log}"
    );
    let log_b = std::fs::read_to_string(&log_b).unwrap();
    for l in [&log, &log_b] {
        assert_eq!(
            counter(l, "viaduct red->black:", "offload_malformed"),
            0,
            "{l}"
        );
        assert_eq!(
            counter(l, "viaduct black->red:", "offload_malformed"),
            0,
            "{l}"
        );
        assert_eq!(counter(l, "viaduct black->red:", "write_errors"), 0, "{l}");
        assert_eq!(counter(l, "viaduct red->black:", "write_errors"), 0, "{l}");
    }
    let (gso_reads, segments) = (
        counter(&log, "viaduct red->black:", "gso_reads"),
        counter(&log, "viaduct red->black:", "segments"),
    );
    let (gro_frames, gro_merged) = (
        counter(&log_b, "viaduct black->red:", "gro_frames"),
        counter(&log_b, "viaduct black->red:", "gro_merged"),
    );
    if offload {
        assert!(log.contains("red offloads csum,tso4,tso6"), "{log}");
        // The sender's kernel hands over TSO super-packets, the receiver's
        // Viaduct coalesces what it decrypts.
        assert!(
            gso_reads > 0 && segments > gso_reads,
            "A: {gso_reads} super-packets, {segments} segments"
        );
        assert!(
            gro_merged > 0 && gro_frames > 0,
            "B: {gro_merged} packets merged, {gro_frames} frames"
        );
    } else {
        assert!(log.contains("red offloads none (no vnet header)"), "{log}");
        assert_eq!((gso_reads, segments, gro_merged), (0, 0, 0));
    }
    if offload && udp && !kernel_has_tun_uso() {
        eprintln!("NOTE: this kernel's TUN has no UDP segmentation offload (Linux < 6.2): not checking UDP super-packets");
        assert!(log.contains("black offloads none"), "{log}");
    } else if offload && udp {
        // A batches equal ESP datagrams into UDP super-packets; they cross
        // the internet link whole and B cuts them up again.
        assert!(log.contains("black offloads csum,uso4,uso6"), "{log}");
        let gso_frames = counter(&log, "viaduct red->black: uso=on", "gso_frames");
        let gso_datagrams = counter(&log, "viaduct red->black: uso=on", "gso_datagrams");
        assert!(
            gso_frames > 0 && gso_datagrams > gso_frames,
            "A: {gso_frames} UDP super-packets carrying {gso_datagrams} datagrams"
        );
        let b_reads = counter(&log_b, "viaduct black->red:", "gso_reads");
        let b_segments = counter(&log_b, "viaduct black->red:", "segments");
        assert!(
            b_reads > 0 && b_segments > b_reads,
            "B: {b_reads} UDP super-packets read, {b_segments} datagrams"
        );
    } else {
        assert!(
            log.contains("black offloads none (no vnet header)"),
            "{log}"
        );
    }
    eprintln!("{aead}: {esp} ESP frames on the internet link; viaduct A log:\n{log}\nviaduct B log:\n{log_b}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_gateways_aes128gcm() {
    if skipped() {
        return;
    }
    two_gateways(Aead::Aes128Gcm16, true, false, 2);
}

#[test]
fn two_gateways_without_offloads() {
    if skipped() {
        return;
    }
    two_gateways(Aead::Aes128Gcm16, false, false, 2);
}

#[test]
fn two_gateways_esp_in_udp() {
    if skipped() {
        return;
    }
    two_gateways(Aead::Aes128Gcm16, true, true, 2);
}

#[test]
fn two_gateways_esp_in_udp_without_offloads() {
    if skipped() {
        return;
    }
    two_gateways(Aead::Aes128Gcm16, false, true, 2);
}

#[test]
fn two_gateways_esp_in_udp_one_pump_thread() {
    if skipped() {
        return;
    }
    two_gateways(Aead::Aes128Gcm16, true, true, 1);
}

#[test]
fn two_gateways_aes256gcm() {
    if skipped() {
        return;
    }
    two_gateways(Aead::Aes256Gcm16, true, false, 2);
}

#[test]
fn two_gateways_chacha20poly1305() {
    if skipped() {
        return;
    }
    two_gateways(Aead::ChaCha20Poly1305, true, false, 2);
}

/// A port that goes away (its personality deleted the TUN) ends the
/// Viaduct with an error naming the port, whatever the thread layout, so
/// that its supervisor can start it again — no half-alive pump.
fn lost_port_ends_the_viaduct(threads: &str, lose: &str) {
    let tag = format!(
        "{}{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let dir = std::env::temp_dir().join(format!("viaduct-lost-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut g = Guard {
        netns: vec![],
        children: vec![],
    };
    let red = g.netns(format!("vd{tag}red"));
    let black = g.netns(format!("vd{tag}blk"));
    let p = write_policy(&dir, "p.pol", &gateway_policy(Aead::Aes128Gcm16, true));
    let log = dir.join("log");
    g.children.push(spawn_viaduct(
        &p,
        &red,
        &black,
        &log,
        &["--threads", threads],
    ));
    wait_link(&red, "vred");
    wait_link(&black, "vblk");
    let t = Instant::now();
    while !std::fs::read_to_string(&log).unwrap().contains("pumping") {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "viaduct did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ns, dev) = if lose == "red" {
        (&red, "vred")
    } else {
        (&black, "vblk")
    };
    ip_ns(ns, &format!("link del {dev}"));
    let t = Instant::now();
    let st = loop {
        if let Some(st) = g.children[0].try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "--threads {threads}: viaduct still running 5 s after {dev} was deleted"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    g.children.clear();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(st.code(), Some(2), "{text}");
    let want = format!("packet I/O on the {lose} port failed");
    assert!(text.contains(&want), "{want:?} expected:\n{text}");
    // Both directions still print their counters on the way out.
    assert!(text.contains("viaduct red->black:"), "{text}");
    assert!(text.contains("viaduct black->red:"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lost_red_port_ends_the_viaduct_two_threads() {
    if skipped() {
        return;
    }
    lost_port_ends_the_viaduct("2", "red");
}

#[test]
fn lost_black_port_ends_the_viaduct_one_thread() {
    if skipped() {
        return;
    }
    lost_port_ends_the_viaduct("1", "black");
}

#[test]
fn running_viaduct_is_confined() {
    if skipped() {
        return;
    }
    let tag = format!(
        "{}{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let dir = std::env::temp_dir().join(format!("viaduct-conf-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut g = Guard {
        netns: vec![],
        children: vec![],
    };
    let red = g.netns(format!("vd{tag}red"));
    let black = g.netns(format!("vd{tag}blk"));
    let p = write_policy(&dir, "p.pol", &gateway_policy(Aead::Aes128Gcm16, true));
    let log = dir.join("log");
    g.children.push(spawn_viaduct(&p, &red, &black, &log, &[]));
    wait_link(&red, "vred");
    wait_link(&black, "vblk");
    let pid = g.children[0].id();
    let t = Instant::now();
    let status = loop {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        if s.contains("Seccomp:\t2") || t.elapsed() > Duration::from_secs(10) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{k} missing in status:\n{status}"))
            .to_owned()
    };
    assert_eq!(field("Seccomp:"), "2");
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("CapEff:"), "0000000000000000");
    assert_eq!(field("CapPrm:"), "0000000000000000");
    // Still alive (the allowlist covers the pump), and exits cleanly.
    kill_process(Pid::from_child(&g.children[0]), Signal::USR1).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    kill_process(Pid::from_child(&g.children[0]), Signal::TERM).unwrap();
    let st = g.children[0].wait().unwrap();
    g.children.clear();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(st.success(), "viaduct exit {st:?}\n{text}");
    assert!(text.contains("in drop total="), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_bad(policy_bytes: Option<&[u8]>) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!(
        "viaduct-bad-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p.pol");
    if let Some(b) = policy_bytes {
        std::fs::write(&path, b).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_viaduct"))
        .args([
            "--policy",
            path.to_str().unwrap(),
            "--red",
            "vdbadred0",
            "--black",
            "vdbadblk0",
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn threads_other_than_1_or_2_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_viaduct"))
        .args([
            "--policy",
            "p.pol",
            "--threads",
            "3",
            "--red",
            "r",
            "--black",
            "b",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--threads takes 1 or 2, got \"3\""), "{err}");
}

#[test]
fn missing_policy_file_is_a_clear_error() {
    let (code, err) = run_bad(None);
    assert_ne!(code, 0);
    assert!(err.contains("cannot read policy file"), "{err}");
}

#[test]
fn corrupted_policy_blob_is_refused() {
    let mut b = gateway_policy(Aead::Aes128Gcm16, true).encode();
    let i = b.len() / 2;
    b[i] ^= 0x55;
    let (code, err) = run_bad(Some(&b));
    assert_ne!(code, 0);
    assert!(
        err.contains("policy blob corrupted: digest mismatch"),
        "{err}"
    );
}

#[test]
fn wrong_policy_version_is_refused() {
    let mut b = gateway_policy(Aead::Aes128Gcm16, true).encode();
    b[5..7].copy_from_slice(&9u16.to_be_bytes());
    let (code, err) = run_bad(Some(&b));
    assert_ne!(code, 0);
    assert!(
        err.contains("version 9") && err.contains(&format!("version {FORMAT_VERSION}")),
        "{err}"
    );
}

#[test]
fn tun_name_too_long_is_a_clear_error() {
    let b = gateway_policy(Aead::Aes128Gcm16, true).encode();
    let dir = std::env::temp_dir().join(format!("viaduct-tun-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p.pol");
    std::fs::write(&path, b).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_viaduct"))
        .args(key_claim(&path))
        .args([
            "--policy",
            path.to_str().unwrap(),
            "--red",
            "a-name-longer-than-15",
            "--black",
            "x",
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains("cannot open TUN device \"a-name-longer-than-15\""),
        "{err}"
    );
}

/// A policy with manual keys and no `--key-claim` (or a claim for other keys): the
/// Viaduct says why and exits before it opens a port.
#[test]
fn manual_keys_without_their_claim_are_refused() {
    let p = gateway_policy(Aead::Aes128Gcm16, true);
    let dir = std::env::temp_dir().join(format!("viaduct-claim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p.pol");
    std::fs::write(&path, p.encode()).unwrap();
    let other = policy_blob::hex(&policy_blob::KeyUses::default().digest());
    for (extra, needle) in [
        (vec![], "no key-use claim"),
        (vec!["--key-claim".to_owned(), other], "names other keys"),
        (
            vec!["--key-claim".to_owned(), "00".repeat(31)],
            "--key-claim takes 64 lowercase hex digits",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_viaduct"))
            .args(&extra)
            .args([
                "--policy",
                path.to_str().unwrap(),
                "--red",
                "vclaimr",
                "--black",
                "vclaimb",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0));
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(!Path::new("/sys/class/net/vclaimr").exists());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------ keyed by IKE

/// The lab policy of one gateway with its tunnel keyed by IKE (PSK named
/// `lab-psk`, given on the credentials descriptor) instead of manual keys:
/// CHILD SAs rekeyed after `soft` seconds (hard limit `hard`), the IKE SA
/// after `ike_rekey` seconds.
fn ike_policy(a_side: bool, soft: u64, hard: u64, ike_rekey: u64) -> Policy {
    let mut p = gateway_policy(Aead::ChaCha20Poly1305, a_side);
    let (me, peer) = if a_side {
        (v4("203.0.113.1"), v4("203.0.113.2"))
    } else {
        (v4("203.0.113.2"), v4("203.0.113.1"))
    };
    let t = &mut p.tunnels[0];
    t.manual = None;
    t.lifetimes.soft.seconds = Some(soft);
    t.lifetimes.hard.seconds = Some(hard);
    p.ike = Some(IkeConfig {
        local_id: IkeIdentity::Addr(me),
        private_key: None,
        peers: vec![IkePeer {
            name: if a_side { "gw-b" } else { "gw-a" }.into(),
            local: me,
            remote: peer,
            remote_id: IkeIdentity::Addr(peer),
            auth: IkeAuth::Psk(Credential::Device("lab-psk".into())),
            ike_proposals: vec![IkeProposal {
                aead: Aead::ChaCha20Poly1305,
                prf: IkePrf::Sha256,
                group: KeGroup::X25519,
            }],
            esp_proposals: vec![EspProposal {
                aead: Aead::ChaCha20Poly1305,
                esn: true,
            }],
            pfs: Some(KeGroup::X25519),
            ike_rekey_seconds: ike_rekey,
            dpd: Dpd::default(),
            tunnels: vec![TunnelId(1)],
        }],
    });
    p.validate().unwrap();
    p
}

/// The path of a binary of another workspace package, built next to ours
/// (`cargo test --workspace` builds every package's binaries first).
fn sibling_binary(name: &str) -> PathBuf {
    let here = Path::new(env!("CARGO_BIN_EXE_viaduct"));
    let p = here.with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p {name})",
        p.display()
    );
    p
}

/// A socketpair for the IKE channel: (the Viaduct's end, the IKE process's
/// end), close-on-exec: [`inherit`] lets one child have one.
fn channel_pair() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    let (a, b) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    (a, b)
}

/// Runs `spawn` with `fd` inheritable, close-on-exec again afterwards, so
/// that only that child holds it (the channel's end-of-file is the test).
fn inherit<T>(fd: &std::os::fd::OwnedFd, spawn: impl FnOnce() -> T) -> T {
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty()).unwrap();
    let t = spawn();
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC).unwrap();
    t
}

/// Starts `viaduct-ike` on `channel` with the PSK on a credentials file.
fn spawn_ike(policy: &Path, channel: &std::os::fd::OwnedFd, dir: &Path, log: &Path) -> Child {
    spawn_ike_with(policy, channel, dir, log, None)
}

/// [`spawn_ike`], with the identity signer's socket and the key's public point
/// (`--signer`, `--identity-public`) when `signer` is given.
fn spawn_ike_with(
    policy: &Path,
    channel: &std::os::fd::OwnedFd,
    dir: &Path,
    log: &Path,
    signer: Option<(&std::os::fd::OwnedFd, [u8; 65])>,
) -> Child {
    use std::os::fd::AsRawFd;
    let mut rec = vec![7u8];
    rec.extend_from_slice(b"lab-psk");
    let secret = b"a lab pre-shared key, 32+ bytes!";
    rec.extend_from_slice(&u16::try_from(secret.len()).unwrap().to_be_bytes());
    rec.extend_from_slice(secret);
    let creds_path = dir.join(format!("{}.creds", log.display().to_string().len()));
    std::fs::write(&creds_path, &rec).unwrap();
    let creds = File::open(&creds_path).unwrap();
    std::fs::remove_file(&creds_path).unwrap();
    let creds = std::os::fd::OwnedFd::from(creds);
    let spawn = || {
        let mut c = Command::new(sibling_binary("viaduct-ike"));
        c.args(["--policy", policy.to_str().unwrap()])
            .args(["--channel", &channel.as_raw_fd().to_string()])
            .args(["--credentials", &creds.as_raw_fd().to_string()]);
        if let Some((fd, point)) = signer {
            c.args(["--signer", &fd.as_raw_fd().to_string()]).args([
                "--identity-public",
                &point.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            ]);
        }
        c
    };
    let with_signer = |f: &dyn Fn() -> Child| match signer {
        Some((fd, _)) => inherit(fd, f),
        None => f(),
    };
    inherit(channel, || {
        inherit(&creds, || {
            with_signer(&|| {
                spawn()
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(File::create(log).unwrap())
                    .spawn()
                    .expect("spawn viaduct-ike")
            })
        })
    })
}

/// Checks the internet link's capture when IKE keys the tunnel: every IPv4
/// frame is ESP (protocol 50) or IKE (UDP 500 → 500, or 4500 → 4500 with
/// the non-ESP marker), nothing holds MARKER, no (SPI, sequence number)
/// pair appears twice. Returns (ESP frames, IKE frames, distinct SPIs).
fn check_pcap_ike(path: &Path) -> (usize, usize, usize) {
    let data = std::fs::read(path).unwrap();
    let cap = testbed::pcap::parse(&data).expect("a pcap file");
    let (mut esp, mut ike) = (0, 0);
    let mut seen = std::collections::HashSet::new();
    let mut spis = std::collections::HashSet::new();
    for frame in cap.frames {
        assert!(
            !frame.windows(MARKER.len()).any(|w| w == MARKER),
            "marker seen in clear on the internet link"
        );
        if frame.len() < 14 {
            continue;
        }
        match u16::from_be_bytes([frame[12], frame[13]]) {
            0x0806 => {}
            0x0800 => {
                let ihl = usize::from(frame[14] & 0x0f) * 4;
                let l4 = &frame[14 + ihl..];
                match frame[14 + 9] {
                    50 => {
                        esp += 1;
                        let (spi, seq) = (&l4[..4], &l4[4..8]);
                        spis.insert(spi.to_vec());
                        assert!(
                            seen.insert((spi.to_vec(), seq.to_vec())),
                            "ESP (SPI, sequence) {spi:02x?}/{seq:02x?} seen twice"
                        );
                    }
                    17 => {
                        let ports = &l4[..4];
                        let ok = ports == [0x01, 0xf4, 0x01, 0xf4]
                            || (ports == [0x11, 0x94, 0x11, 0x94] && l4[8..12] == [0, 0, 0, 0]);
                        assert!(ok, "UDP that is not IKE on the internet link: {ports:02x?}");
                        ike += 1;
                    }
                    p => panic!("IPv4 protocol {p} on the internet link"),
                }
            }
            0x86dd => panic!("IPv6 packet on the internet link (IPv6 is off there)"),
            other => panic!("unexpected ethertype {other:#06x} on the internet link"),
        }
    }
    (esp, ike, spis.len())
}

/// Busybox ping output: (transmitted, received).
fn ping_counts(ns: &str, args: &str) -> (u32, u32) {
    let mut v = vec!["netns", "exec", ns, "busybox", "ping"];
    v.extend(args.split_whitespace());
    let out = Command::new("ip").args(&v).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no summary in ping output:\n{text}"));
    let nums: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    (nums[0], nums[1])
}

/// A namespace's UDP datagrams dropped for a full receive buffer
/// (`RcvbufErrors` in `/proc/net/snmp`).
fn udp_rcvbuf_errors(ns: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Like [`ping_counts`], with the sequence numbers that got no reply (busybox
/// prints `seq=N` per reply) and the wall-clock time (UTC, `HH:MM:SS`) the
/// ping started, to place a loss among the peers' logged events.
fn ping_missing(ns: &str, args: &str, count: u32) -> (u32, u32, Vec<u32>, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let started = format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    );
    let mut v = vec!["netns", "exec", ns, "busybox", "ping"];
    v.extend(args.split_whitespace());
    let out = Command::new("ip").args(&v).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let replied: std::collections::BTreeSet<u32> = text
        .lines()
        .filter_map(|l| l.split("seq=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    let missing = (0..count).filter(|n| !replied.contains(n)).collect();
    let (tx, rx) = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .map(|line| {
            let n: Vec<u32> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|s| s.parse().ok())
                .collect();
            (n[0], n[1])
        })
        .unwrap_or_else(|| panic!("no summary in ping output:\n{text}"));
    (tx, rx, missing, started)
}

/// Two Viaducts whose tunnel is keyed by their IKE processes over the
/// internet link: the tunnel comes up from the policies alone, carries a
/// ping and a TCP transfer, rekeys its CHILD SA (with PFS) and its IKE SA
/// under a paced ping without losing a packet, and keeps carrying traffic
/// when one IKE process is killed.
fn two_gateways_keyed_by_ike(threads: u8) {
    let (dir, mut g, [lan_a, blk_a, blk_b, lan_b]) = two_sites("vi", "viaduct-ike-netns");
    // CHILD SAs rekeyed every ~8 s, the IKE SA every ~30 s (the shortest the
    // policy allows): the paced ping below spans both.
    let pa = write_policy(&dir, "a.pol", &ike_policy(true, 8, 40, 30));
    let pb = write_policy(&dir, "b.pol", &ike_policy(false, 8, 40, 30));
    let (log_a, log_b) = (dir.join("a.log"), dir.join("b.log"));
    let (ike_log_a, ike_log_b) = (dir.join("a-ike.log"), dir.join("b-ike.log"));
    let (dp_a, ike_a) = channel_pair();
    let (dp_b, ike_b) = channel_pair();
    let threads_arg = threads.to_string();
    let chan = |fd: &std::os::fd::OwnedFd| {
        use std::os::fd::AsRawFd;
        fd.as_raw_fd().to_string()
    };
    let (ca, cb) = (chan(&dp_a), chan(&dp_b));
    g.children.push(inherit(&dp_a, || {
        spawn_viaduct(
            &pa,
            &lan_a,
            &blk_a,
            &log_a,
            &["--threads", &threads_arg, "--ike-channel", &ca],
        )
    }));
    g.children.push(inherit(&dp_b, || {
        spawn_viaduct(
            &pb,
            &lan_b,
            &blk_b,
            &log_b,
            &["--threads", &threads_arg, "--ike-channel", &cb],
        )
    }));
    // Each Viaduct holds its end now; each IKE process gets the other.
    drop((dp_a, dp_b));
    for (lan, blk, me, peer, gw_me) in [
        (&lan_a, &blk_a, "10.1.0.1", "10.2.0.0", "203.0.113.1"),
        (&lan_b, &blk_b, "10.2.0.1", "10.1.0.0", "203.0.113.2"),
    ] {
        wait_link(lan, "vred");
        wait_link(blk, "vblk");
        ip_ns(lan, "link set vred mtu 1400 up");
        ip_ns(lan, &format!("addr add {me}/24 dev vred"));
        ip_ns(lan, &format!("route add {peer}/24 dev vred"));
        ip_ns(blk, "link set vblk up");
        ip_ns(blk, &format!("route add {gw_me}/32 dev vblk"));
    }
    let pcap = dir.join("inet.pcap");
    let mut dump = Command::new("ip")
        .args([
            "netns", "exec", &blk_a, "tcpdump", "-n", "-U", "-i", "inet", "-w",
        ])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let started = Instant::now();
    g.children.push(spawn_ike(&pa, &ike_a, &dir, &ike_log_a));
    g.children.push(spawn_ike(&pb, &ike_b, &dir, &ike_log_b));
    drop((ike_a, ike_b));
    // The tunnel comes up by itself.
    let mut up = None;
    while started.elapsed() < Duration::from_secs(20) {
        if ping_counts(&lan_a, "-c 1 -W 1 10.2.0.1").1 == 1 {
            up = Some(started.elapsed());
            break;
        }
    }
    let logs = || {
        format!(
            "A:\n{}\nA ike:\n{}\nB:\n{}\nB ike:\n{}",
            std::fs::read_to_string(&log_a).unwrap_or_default(),
            std::fs::read_to_string(&ike_log_a).unwrap_or_default(),
            std::fs::read_to_string(&log_b).unwrap_or_default(),
            std::fs::read_to_string(&ike_log_b).unwrap_or_default()
        )
    };
    let up = up.unwrap_or_else(|| panic!("no tunnel within 20 s\n{}", logs()));
    eprintln!("IKE: first ping answered {up:?} after the IKE processes started");
    ns_exec(&lan_b, "busybox ping -c 2 -W 3 10.1.0.1");
    let total = 2 * 1024 * 1024;
    let (sent, got, n) = tcp_transfer(&lan_a, &lan_b, total);
    assert_eq!(
        (n, got),
        (total, sent),
        "TCP transfer through the IKE tunnel"
    );
    // A paced ping across CHILD and IKE rekeys: nothing lost.
    let (tx, rx) = ping_counts(&lan_a, "-c 160 -i 0.2 -W 2 -s 1000 10.2.0.1");
    assert_eq!(
        (tx, rx),
        (160, 160),
        "packets lost across rekeys\n{}",
        logs()
    );
    // One IKE process dies: the SAs it installed carry traffic on.
    let ike_a_child = g.children.len() - 2;
    g.children[ike_a_child].kill().unwrap();
    g.children[ike_a_child].wait().unwrap();
    let (tx, rx) = ping_counts(&lan_a, "-c 5 -i 0.2 -W 2 10.2.0.1");
    assert_eq!(
        (tx, rx),
        (5, 5),
        "traffic stopped with the IKE process\n{}",
        logs()
    );
    // B's next CHILD rekey reaches A's Viaduct, which has nobody to give it
    // to (dropped and counted, no SIGPIPE): traffic goes on.
    std::thread::sleep(Duration::from_secs(9));
    let (tx, rx) = ping_counts(&lan_a, "-c 3 -i 0.2 -W 2 10.2.0.1");
    assert_eq!(
        (tx, rx),
        (3, 3),
        "traffic stopped after IKE messages to a dead IKE process\n{}",
        logs()
    );
    let _ = kill_process(Pid::from_child(&dump), Signal::TERM);
    let _ = dump.wait();
    for c in &g.children[..2] {
        kill_process(Pid::from_child(c), Signal::TERM).unwrap();
    }
    for c in g.children[..2].iter_mut() {
        let st = c.wait().unwrap();
        assert!(st.success(), "viaduct exited with {st:?}\n{}", logs());
    }
    let all = logs();
    let (la, lb) = (
        std::fs::read_to_string(&log_a).unwrap(),
        std::fs::read_to_string(&log_b).unwrap(),
    );
    assert!(la.contains("the IKE process closed its channel"), "{all}");
    for l in [&la, &lb] {
        // At least the first CHILD SA and two rekeys; nothing refused,
        // nothing malformed.
        assert!(counter(l, "viaduct control:", "installs") >= 3, "{all}");
        assert_eq!(counter(l, "viaduct control:", "refused"), 0, "{all}");
        assert_eq!(counter(l, "viaduct control:", "malformed"), 0, "{all}");
        assert_eq!(counter(l, "viaduct control:", "not_owned"), 0, "{all}");
        assert!(counter(l, "viaduct control:", "ike_sent") >= 4, "{all}");
    }
    assert_eq!(
        counter(&lb, "viaduct black->red ike-channel:", "dropped"),
        0,
        "{all}"
    );
    assert!(
        counter(&la, "viaduct black->red ike-channel:", "dropped") > 0,
        "{all}"
    );
    let (esp, ike, spis) = check_pcap_ike(&pcap);
    assert!(esp > 1000, "only {esp} ESP frames\n{all}");
    assert!(ike >= 8, "only {ike} IKE frames\n{all}");
    assert!(spis >= 4, "{spis} SPIs on the wire: no rekey?\n{all}");
    eprintln!(
        "IKE netns ({threads} thread(s)): up in {up:?}; {esp} ESP frames under {spis} SPIs, \
         {ike} IKE frames\n{all}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_gateways_keyed_by_ike_rekey_without_loss() {
    if skipped() {
        return;
    }
    two_gateways_keyed_by_ike(2);
}

/// The same with both directions in one pump thread (the outbound SA of an
/// install then passes through the thread's own mailbox).
#[test]
fn two_gateways_keyed_by_ike_one_pump_thread() {
    if skipped() {
        return;
    }
    two_gateways_keyed_by_ike(1);
}
