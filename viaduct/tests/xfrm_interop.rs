//! Interop with the Linux kernel's ESP (XFRM): a QEMU guest (TCG) running
//! Debian's kernel, configured with `ip xfrm state/policy` for manual SAs,
//! exchanges traffic both ways with the real `viaduct` binary on the host,
//! for every supported AEAD in one boot.
//!
//! ```text
//! netns xi<pid>l (LAN): vred (TUN) 10.1.{1,2,3,4}.1/24, 10.2.0.0/16 -> vred
//!        ══ Viaduct (outer 203.0.113.1, three tunnels) ══
//! netns xi<pid>h (black): vblk (TUN, 203.0.113.1/32 routed into it),
//!        xitap0 (TAP, 198.51.100.254/24), ip_forward on, IPv6 off
//!        ── virtio-net ── QEMU guest eth0 198.51.100.2/24, default via .254
//! guest: lo 10.2.{1,2,3,4}.1/32; per AEAD one SA pair (tunnel mode, ESN)
//!        and policies 10.2.i.0/24 <-> 10.1.i.0/24 via 198.51.100.2 <-> 203.0.113.1
//! ```
//!
//! | i | AEAD              | Linux algorithm                          |
//! |---|-------------------|------------------------------------------|
//! | 1 | AES-128-GCM-16    | `rfc4106(gcm(aes))`, 128-bit key + salt  |
//! | 2 | AES-256-GCM-16    | `rfc4106(gcm(aes))`, 256-bit key + salt  |
//! | 3 | ChaCha20-Poly1305 | `rfc7539esp(chacha20,poly1305)` + salt   |
//! | 4 | AES-128-GCM-16 in UDP | `rfc4106(gcm(aes))`, `encap espinudp` |
//!
//! Checked: pings LAN -> guest (1000-byte payloads, through the Viaduct's
//! encap and the kernel's decap, replies the other way) and guest -> LAN
//! (333 bytes, odd so the padding differs), every one answered, for each
//! AEAD; a 384 KiB TCP stream LAN -> guest over HTTP (the LAN kernel's TSO
//! super-packets segmented by the Viaduct, each segment's checksums checked
//! by the guest kernel) and fetched back from the guest, intact (SHA-256)
//! both ways; the kernel's per-SA counters (`ip -s xfrm state`) and the
//! Viaduct's per-tunnel counters (printed at SIGTERM) have seen the packets
//! in both directions; the kernel's `/proc/net/xfrm_stat` error counters
//! stay zero and the Viaduct dropped nothing inbound; a capture of the TAP
//! holds only ARP and ESP (IP protocol 50) with our SPIs.
//!
//! A fourth tunnel (i = 4, AES-128-GCM) sends ESP in UDP (RFC 3948, ports
//! 4500): `ip xfrm state … encap espinudp 4500 4500 0.0.0.0` in the guest,
//! where a small static helper (tests/xfrm/udp-encap.c, built with `cc
//! -static`) holds the UDP socket with `UDP_ENCAP_ESPINUDP` that XFRM needs
//! to receive it; the Viaduct's black port then carries UDP segmentation
//! offload. Everything above is checked for it too, and the capture must
//! show its SPIs only inside UDP and the others only as protocol 50.
//!
//! The guest's kernel, modules, busybox and iproute2 (`ip xfrm`; busybox's
//! `ip` has no xfrm) with its libraries come from the pinned packages of
//! `profiles/lab/gw-a.lock` (groups `kernel` and `black`) through the
//! content-addressed package cache (`$APPLIANCE_CACHE` or
//! `~/.cache/appliance`, `debs/` and the private apt in `apt/`), never from
//! git. The initramfs is built at test time.
//!
//! Needs root, `qemu-system-x86_64`, `ip`, `tcpdump`, `busybox` and
//! `/dev/net/tun`; it fails (does not skip) when one is missing, naming the
//! package to install. Namespaces, the TAP and every process are removed by
//! guards, also when an assertion fails.

use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use policy_blob::*;
use rustix::process::{kill_process, Pid, Signal};

mod support;
use support::{kernel_has_tun_uso, wait_link};
#[path = "support/guest.rs"]
mod guest;
use guest::{build_guest, workspace, Console, GuestImage};

/// Viaduct's outer address (routed into its black TUN).
const VIADUCT_OUTER: &str = "203.0.113.1";
/// The guest's outer address (on the TAP link).
const GUEST_OUTER: &str = "198.51.100.2";
/// The host side of the TAP link.
const TAP_ADDR: &str = "198.51.100.254";
const TAP: &str = "xitap0";

/// One AEAD under test: tunnel `idx` uses 10.1.idx.0/24 <-> 10.2.idx.0/24.
struct Case {
    idx: u8,
    name: &'static str,
    aead: Aead,
    linux_alg: &'static str,
    /// ESP in UDP, port 4500 (RFC 3948).
    udp: bool,
    /// TFC padding both ways (RFC 4303 §2.4): the Viaduct pads to
    /// `TFC_SIZES`, the kernel to 1400 (`tfcpad`); each strips the other's.
    tfc: bool,
}

/// The Viaduct's TFC padding sizes for the case with `tfc`.
const TFC_SIZES: [u16; 2] = [256, 1400];

impl Case {
    /// Viaduct -> guest.
    fn spi_in_guest(&self) -> u32 {
        0x1000_0000 | u32::from(self.idx) << 8 | 0x01
    }
    /// Guest -> Viaduct.
    fn spi_out_guest(&self) -> u32 {
        0x2000_0000 | u32::from(self.idx) << 8 | 0x02
    }
    /// `key || salt` for the Viaduct -> guest SA.
    fn key_to_guest(&self) -> Vec<u8> {
        key_bytes(self.aead, 0x11 * self.idx)
    }
    /// `key || salt` for the guest -> Viaduct SA.
    fn key_from_guest(&self) -> Vec<u8> {
        key_bytes(self.aead, 0x80 | (0x13 * self.idx))
    }
    fn lan_addr(&self) -> String {
        format!("10.1.{}.1", self.idx)
    }
    fn guest_inner(&self) -> String {
        format!("10.2.{}.1", self.idx)
    }
}

/// Port of the web servers (LAN and guest) for the TCP streams.
const HTTP_PORT: u16 = 8080;

/// Bytes of each TCP stream: enough for the LAN host's TSO super-packets.
const TCP_BYTES: usize = 384 * 1024;

/// Deterministic, incompressible-looking stream content for case `idx`.
fn stream(idx: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(idx);
    (0..TCP_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

const CASES: [Case; 4] = [
    Case {
        idx: 1,
        name: "aes128gcm16",
        aead: Aead::Aes128Gcm16,
        linux_alg: "rfc4106(gcm(aes))",
        udp: false,
        tfc: false,
    },
    Case {
        idx: 2,
        name: "aes256gcm16",
        aead: Aead::Aes256Gcm16,
        linux_alg: "rfc4106(gcm(aes))",
        udp: false,
        tfc: false,
    },
    Case {
        idx: 3,
        name: "chacha20poly1305",
        aead: Aead::ChaCha20Poly1305,
        linux_alg: "rfc7539esp(chacha20,poly1305)",
        udp: false,
        tfc: true,
    },
    Case {
        idx: 4,
        name: "aes128gcm16-udp",
        aead: Aead::Aes128Gcm16,
        linux_alg: "rfc4106(gcm(aes))",
        udp: true,
        tfc: false,
    },
];

fn key_bytes(aead: Aead, seed: u8) -> Vec<u8> {
    (0..aead.key_material_len())
        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(7)))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

// ---------------------------------------------------------------- host checks

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
        .unwrap_or(false)
}

/// Panics (the test fails, it does not skip) if the host lacks something.
fn require_host() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the XFRM interop test needs root (network namespaces, TAP)"
    );
    for (tool, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("ip", "iproute2"),
        ("tcpdump", "tcpdump"),
        ("busybox", "busybox-static"),
    ] {
        assert!(
            on_path(tool),
            "{tool} not found: apt-get install {pkg} (scripts/test installs it)"
        );
    }
    assert!(
        Path::new("/dev/net/tun").exists(),
        "/dev/net/tun missing: load the tun module (modprobe tun)"
    );
}

// ---------------------------------------------------------------- the guest

/// Modules the guest needs (those built in are skipped by the resolver).
const GUEST_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "xfrm_user",
    "esp4",
    "gcm",
    "ghash_generic",
    "ctr",
    "seqiv",
    "echainiv",
    "aes_generic",
    "chacha20poly1305",
    "chacha_generic",
    "poly1305_generic",
    // seqiv seeds its salt from the default RNG (stdrng): drbg's default
    // instance is HMAC-SHA512, seeded from jitterentropy (which hashes with
    // SHA3-256). Listed in load order: the crypto API finds these by name,
    // not through module symbols.
    "sha512_generic",
    "sha3_generic",
    "jitterentropy_rng",
    "drbg",
];

/// The guest's UDP-encapsulation socket holder, compiled from
/// tests/xfrm/udp-encap.c as a static binary (the guest has no libc of its
/// own besides iproute2's).
fn udp_encap_helper(dir: &Path) -> Vec<u8> {
    let src = workspace().join("viaduct/tests/xfrm/udp-encap.c");
    let out = dir.join("udp-encap");
    let st = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("a C compiler is needed for the guest's helper: apt-get install gcc libc6-dev");
    assert!(
        st.success(),
        "cc -static {} failed (apt-get install gcc libc6-dev)",
        src.display()
    );
    std::fs::read(&out).unwrap()
}

/// The guest's /init (busybox sh).
fn init_script() -> String {
    let mut s = guest::init_preamble("XFRM-FATAL");
    s.push_str(
        r#"$IP -V || fatal "iproute2 ip does not run"
$IP link set lo up
$IP addr add __GUEST__/24 dev eth0 || fatal "addr"
$IP link set eth0 up
$IP route add default via __TAP__ || fatal "route"
"#,
    );
    for c in &CASES {
        let i = c.idx;
        s.push_str(&format!(
            "$IP addr add {inner}/32 dev lo || fatal 'lo addr {i}'\n\
             $IP xfrm state add src __GUEST__ dst __VIADUCT__ proto esp spi {out_spi:#x} reqid {i} mode tunnel replay-window 128 flag esn aead '{alg}' 0x{kout} 128{encap}{tfc} || fatal 'state out {i}'\n\
             $IP xfrm state add src __VIADUCT__ dst __GUEST__ proto esp spi {in_spi:#x} reqid {i} mode tunnel replay-window 128 flag esn aead '{alg}' 0x{kin} 128{encap} || fatal 'state in {i}'\n\
             $IP xfrm policy add src 10.2.{i}.0/24 dst 10.1.{i}.0/24 dir out tmpl src __GUEST__ dst __VIADUCT__ proto esp reqid {i} mode tunnel || fatal 'policy out {i}'\n\
             $IP xfrm policy add src 10.1.{i}.0/24 dst 10.2.{i}.0/24 dir in tmpl src __VIADUCT__ dst __GUEST__ proto esp reqid {i} mode tunnel || fatal 'policy in {i}'\n\
             $IP route add 10.1.{i}.0/24 via __TAP__ src {inner} || fatal 'route {i}'\n",
            inner = c.guest_inner(),
            out_spi = c.spi_out_guest(),
            in_spi = c.spi_in_guest(),
            alg = c.linux_alg,
            kout = hex(&c.key_from_guest()),
            kin = hex(&c.key_to_guest()),
            encap = if c.udp { " encap espinudp 4500 4500 0.0.0.0" } else { "" },
            tfc = if c.tfc { " tfcpad 1400" } else { "" },
        ));
    }
    // ESP in UDP reaches XFRM only through a UDP socket on port 4500 with
    // UDP_ENCAP_ESPINUDP set (tests/xfrm/udp-encap.c).
    s.push_str(
        "/bin/udp-encap &\n\
         i=0; while ! grep -q ':1194 ' /proc/net/udp; do i=$((i+1)); [ $i -gt 50 ] && fatal 'udp-encap'; sleep 0.1; done\n",
    );
    s.push_str(
        "$IP xfrm state list\n\
         echo XFRM-READY\n\
         read -r go\n\
         echo \"XFRM-GO $go\"\n",
    );
    for c in &CASES {
        s.push_str(&format!(
            "if ping -c 3 -W 5 -s 333 -I {src} {dst}; then echo 'XFRM-TEST: {name} guest-ping ok'; \
             else echo 'XFRM-TEST: {name} guest-ping fail'; fi\n",
            src = c.guest_inner(),
            dst = c.lan_addr(),
            name = c.name,
        ));
    }
    // TCP both ways: fetch each stream from the LAN's web server (the LAN
    // kernel's TSO super-packets, segmented by the Viaduct), report its hash,
    // then serve the copies for the LAN to fetch back.
    s.push_str("mkdir -p /srv\n");
    for c in &CASES {
        s.push_str(&format!(
            "wget -q -O /srv/rx{i} http://{lan}:{port}/tx{i} || echo 'XFRM-TEST: {name} tcp-fetch fail'\n\
             echo \"XFRM-RX: {name} $(sha256sum < /srv/rx{i})\"\n",
            name = c.name,
            i = c.idx,
            lan = c.lan_addr(),
            port = HTTP_PORT,
        ));
    }
    s.push_str(&format!(
        "httpd -p {HTTP_PORT} -h /srv || fatal httpd\n\
         echo XFRM-SERVING\n\
         read -r back\n\
         echo \"XFRM-FETCHED $back\"\n"
    ));
    s.push_str(
        "echo XFRM-STATE-BEGIN\n$IP -s xfrm state\necho XFRM-STATE-END\n\
         echo XFRM-STAT-BEGIN\ncat /proc/net/xfrm_stat\necho XFRM-STAT-END\n\
         echo XFRM-DONE\npoweroff -f\nsleep 60\n",
    );
    s.replace("__GUEST__", GUEST_OUTER)
        .replace("__VIADUCT__", VIADUCT_OUTER)
        .replace("__TAP__", TAP_ADDR)
}

// ---------------------------------------------------------------- host side

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip_ns(ns: &str, args: &str) {
    let mut v = vec!["ip", "-n", ns];
    v.extend(args.split_whitespace());
    sh(&v);
}

fn ns_sysctl(ns: &str, key: &str, value: &str) {
    let cmd = format!("echo {value} > /proc/sys/{key}");
    sh(&["ip", "netns", "exec", ns, "sh", "-c", &cmd]);
}

/// Kills children and deletes the TAP and the namespaces on drop.
#[derive(Default)]
struct Guard {
    netns: Vec<String>,
    children: Vec<(&'static str, Child)>,
    dir: Option<PathBuf>,
}

impl Guard {
    fn netns(&mut self, name: String) -> String {
        sh(&["ip", "netns", "add", &name]);
        self.netns.push(name.clone());
        ip_ns(&name, "link set lo up");
        name
    }

    fn child(&mut self, name: &'static str) -> &mut Child {
        &mut self
            .children
            .iter_mut()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no child {name}"))
            .1
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.netns {
            let _ = Command::new("ip")
                .args(["-n", ns, "link", "del", TAP])
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if let Some(d) = &self.dir {
            if !std::thread::panicking() {
                let _ = std::fs::remove_dir_all(d);
            } else {
                eprintln!("artefacts kept in {}", d.display());
            }
        }
    }
}

fn viaduct_policy() -> Policy {
    let mut p = Policy::new("xfrm-interop", "1").with_local(ip(VIADUCT_OUTER));
    for c in &CASES {
        let lan = Prefix::new(ip(&format!("10.1.{}.0", c.idx)), 24);
        let guest = Prefix::new(ip(&format!("10.2.{}.0", c.idx)), 24);
        let mut t = Tunnel::new(
            u32::from(c.idx),
            c.name,
            ip(VIADUCT_OUTER),
            ip(GUEST_OUTER),
            c.aead,
        )
        .with_local_ts(TrafficSelector::prefix(lan))
        .with_remote_ts(TrafficSelector::prefix(guest))
        .with_manual_keys(
            ManualSa {
                spi: Spi(c.spi_in_guest()),
                key: KeyMaterial::new(c.key_to_guest()),
            },
            ManualSa {
                spi: Spi(c.spi_out_guest()),
                key: KeyMaterial::new(c.key_from_guest()),
            },
        );
        t.udp_encap = c.udp;
        if c.tfc {
            t.tfc_sizes = TFC_SIZES.to_vec();
        }
        p = p.with_tunnel(t).with_spd(
            c.name,
            Selector::between(lan, guest),
            SpdAction::Protect(TunnelId(u32::from(c.idx))),
        );
    }
    p.with_spd("rest", Selector::any_v4(), SpdAction::Discard)
}

/// The QEMU console, line by line.
fn spawn_qemu(ns: &str, img: &GuestImage, log: &Path) -> (Child, ChildStdin, Console) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "qemu-system-x86_64"])
        .args(guest::qemu_guest_args(img, ""))
        .args(["-machine", "q35", "-m", "512"])
        .args([
            "-netdev",
            &format!("tap,id=n0,ifname={TAP},script=no,downscript=no"),
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(File::create(log).unwrap())
        .spawn()
        .expect("spawn qemu-system-x86_64 (apt-get install qemu-system-x86)");
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let rx = testbed::vm::console_lines(stdout);
    (
        child,
        stdin,
        Console {
            rx,
            lines: Vec::new(),
            fatal: "XFRM-FATAL",
        },
    )
}

/// `(spi, bytes, packets)` of every SA in `ip -s xfrm state` output.
fn parse_xfrm_state(lines: &[&str]) -> Vec<(u32, u64, u64)> {
    let mut out = Vec::new();
    let mut spi = None;
    let mut in_current = false;
    for l in lines {
        let t = l.trim();
        if let Some(rest) = t.strip_prefix("proto esp spi ") {
            // "0x20000102(536871170) reqid …" with -s
            let hexspi = rest
                .split(|c: char| c.is_whitespace() || c == '(')
                .next()
                .unwrap_or("");
            spi = u32::from_str_radix(hexspi.trim_start_matches("0x"), 16).ok();
        } else if t.starts_with("lifetime current:") {
            in_current = true;
        } else if in_current {
            in_current = false;
            // "840(bytes), 10(packets)"
            let num = |suffix: &str| {
                t.split(',')
                    .find_map(|f| f.trim().strip_suffix(suffix)?.parse::<u64>().ok())
            };
            if let (Some(s), Some(b), Some(p)) = (spi, num("(bytes)"), num("(packets)")) {
                out.push((s, b, p));
            }
        }
    }
    out
}

/// Waits until `path` contains `needle` (a helper's readiness line).
fn wait_for_file_text(path: &Path, needle: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{} does not say {needle:?} after {limit:?}: {text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks the TAP capture (Ethernet): only ARP, ESP (IP protocol 50) with
/// an SPI of `esp_spis`, and ESP in UDP (ports 4500 → 4500, never the
/// non-ESP marker) with an SPI of `udp_spis`. Returns the number of frames
/// per SPI (in the order of `esp_spis`, then `udp_spis`).
/// What a capture of the TAP holds per SPI (in `esp_spis` then
/// `udp_spis` order): frames, and the set of their lengths.
struct Seen {
    count: Vec<usize>,
    lengths: Vec<std::collections::BTreeSet<usize>>,
}

fn check_pcap(path: &Path, esp_spis: &[u32], udp_spis: &[u32]) -> Seen {
    let data = std::fs::read(path).unwrap();
    let cap = testbed::pcap::parse(&data).expect("a pcap file");
    assert_eq!(
        cap.link_type,
        testbed::pcap::LINKTYPE_ETHERNET,
        "expected Ethernet link type"
    );
    let mut count = vec![0; esp_spis.len() + udp_spis.len()];
    let mut lengths = vec![std::collections::BTreeSet::new(); count.len()];
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    for frame in cap.frames {
        assert!(frame.len() >= 14, "runt frame on the TAP");
        match u16::from_be_bytes([frame[12], frame[13]]) {
            0x0806 => {}
            0x0800 => {
                let ip = &frame[14..];
                let ihl = usize::from(ip[0] & 0xf) * 4;
                if ip[12..16] == ip_octets(VIADUCT_OUTER) {
                    // Nothing of the LAN's TOS byte on the Viaduct's packets.
                    assert_eq!(ip[1], 0, "outer TOS of a Viaduct packet: {ip:02x?}");
                }
                let (spi, list, base) = match ip[9] {
                    50 => (be32(&ip[ihl..]), esp_spis, 0),
                    17 => {
                        let udp = &ip[ihl..];
                        assert_eq!(
                            &udp[..4],
                            &[0x11, 0x94, 0x11, 0x94],
                            "UDP not 4500 -> 4500 on the TAP"
                        );
                        let spi = be32(&udp[8..]);
                        assert_ne!(spi, 0, "non-ESP marker on the TAP");
                        (spi, udp_spis, esp_spis.len())
                    }
                    p => panic!("IPv4 protocol {p} on the TAP: {ip:02x?}"),
                };
                let i = list.iter().position(|&s| s == spi);
                let i = i.unwrap_or_else(|| {
                    panic!(
                        "SPI {spi:#x} in the wrong encapsulation (protocol {})",
                        ip[9]
                    )
                });
                count[base + i] += 1;
                lengths[base + i].insert(frame.len());
            }
            other => panic!("unexpected ethertype {other:#06x} on the TAP"),
        }
    }
    Seen { count, lengths }
}

fn ip_octets(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>()
        .expect("literal address")
        .octets()
}

#[test]
fn linux_xfrm_interop_all_aeads() {
    require_host();
    let started = Instant::now();
    let tag = std::process::id();
    let mut g = Guard::default();
    let dir = std::env::temp_dir().join(format!("viaduct-xfrm-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    g.dir = Some(dir.clone());

    let img = build_guest(
        &dir,
        GUEST_MODULES,
        &["esp4", "xfrm_user", "gcm", "chacha20poly1305", "virtio_net"],
        vec![("bin/udp-encap".to_owned(), udp_encap_helper(&dir), 0o755)],
        &init_script(),
    );
    eprintln!("guest image ready after {:?}", started.elapsed());

    let lan = g.netns(format!("xi{tag}l"));
    let host = g.netns(format!("xi{tag}h"));
    // IPv6 off: only ARP and ESP may cross the TAP, nothing unrouted reaches
    // the Viaduct's red port.
    for ns in [&lan, &host] {
        for key in [
            "net/ipv6/conf/all/disable_ipv6",
            "net/ipv6/conf/default/disable_ipv6",
        ] {
            ns_sysctl(ns, key, "1");
        }
    }
    ns_sysctl(&host, "net/ipv4/ip_forward", "1");
    ns_sysctl(&host, "net/ipv4/conf/all/rp_filter", "0");
    ns_sysctl(&host, "net/ipv4/conf/default/rp_filter", "0");
    ip_ns(&host, &format!("tuntap add dev {TAP} mode tap"));
    ip_ns(&host, &format!("addr add {TAP_ADDR}/24 dev {TAP}"));
    ip_ns(&host, &format!("link set {TAP} up"));

    let pol = viaduct_policy();
    pol.validate().expect("valid policy");
    let pol_path = dir.join("viaduct.pol");
    std::fs::write(&pol_path, pol.encode()).unwrap();
    let vlog = dir.join("viaduct.log");
    let viaduct = Command::new(env!("CARGO_BIN_EXE_viaduct"))
        // What the gateway init gives once it has recorded the manual keys.
        .args([
            "--key-claim",
            &policy_blob::hex(&pol.manual_key_uses().digest()),
        ])
        .args(["--policy", pol_path.to_str().unwrap()])
        .args(["--red", "vred", "--red-netns", &format!("/run/netns/{lan}")])
        .args([
            "--black",
            "vblk",
            "--black-netns",
            &format!("/run/netns/{host}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&vlog).unwrap())
        .spawn()
        .expect("spawn viaduct");
    g.children.push(("viaduct", viaduct));
    wait_link(&lan, "vred");
    wait_link(&host, "vblk");
    ip_ns(&lan, "link set vred mtu 1400 up");
    for c in &CASES {
        ip_ns(&lan, &format!("addr add {}/24 dev vred", c.lan_addr()));
    }
    ip_ns(&lan, "route add 10.2.0.0/16 dev vred");
    // Connections the LAN opens leave from the address of the matching tunnel.
    for c in &CASES {
        ip_ns(
            &lan,
            &format!(
                "route add 10.2.{}.0/24 dev vred src {}",
                c.idx,
                c.lan_addr()
            ),
        );
    }
    ip_ns(&host, "link set vblk up");
    ip_ns(&host, &format!("route add {VIADUCT_OUTER}/32 dev vblk"));

    let pcap = dir.join("tap.pcap");
    let dump = Command::new("ip")
        .args([
            "netns",
            "exec",
            &host,
            "tcpdump",
            "-n",
            "-U",
            "--immediate-mode",
            "-i",
            TAP,
            "-w",
        ])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(File::create(dir.join("tcpdump.log")).unwrap())
        .spawn()
        .expect("spawn tcpdump");
    g.children.push(("tcpdump", dump));
    wait_for_file_text(
        &dir.join("tcpdump.log"),
        "listening on",
        Duration::from_secs(20),
    );

    let (qemu, mut qemu_in, mut console) = spawn_qemu(&host, &img, &dir.join("qemu.log"));
    g.children.push(("qemu", qemu));
    console.wait_for("XFRM-READY", Duration::from_secs(150));
    eprintln!("guest configured after {:?}", started.elapsed());

    // LAN -> guest: the Viaduct encapsulates, the kernel decapsulates and answers.
    let mut failures = Vec::new();
    for c in &CASES {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &lan, "busybox", "ping", "-c", "3", "-W", "5",
            ])
            .args(["-s", "1000", "-I", &c.lan_addr(), &c.guest_inner()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        eprintln!("{}: LAN -> guest:\n{text}", c.name);
        if !out.status.success() || !text.contains(" 0% packet loss") {
            failures.push(format!("{}: LAN -> guest ping failed:\n{text}", c.name));
        }
    }
    // TCP: the guest fetches a stream per AEAD from this web server in the
    // LAN (the LAN kernel hands the Viaduct TSO super-packets, which it cuts
    // into segments; the guest kernel checks each segment's checksums).
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    for c in &CASES {
        std::fs::write(www.join(format!("tx{}", c.idx)), stream(c.idx)).unwrap();
    }
    let httpd = Command::new("ip")
        .args(["netns", "exec", &lan, "busybox", "httpd", "-f", "-p"])
        .arg(HTTP_PORT.to_string())
        .arg("-h")
        .arg(&www)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn busybox httpd");
    g.children.push(("httpd", httpd));
    writeln!(qemu_in, "go").unwrap();
    qemu_in.flush().unwrap();
    // Guest -> LAN TCP: fetch the guest's copies back through the tunnel.
    console.wait_for("XFRM-SERVING", Duration::from_secs(180));
    for c in &CASES {
        let out = Command::new("ip")
            .args(["netns", "exec", &lan, "busybox", "wget", "-q", "-O"])
            .arg(dir.join(format!("rx{}", c.idx)))
            .arg(format!(
                "http://{}:{HTTP_PORT}/rx{}",
                c.guest_inner(),
                c.idx
            ))
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{}: fetching the guest's copy failed: {}",
                c.name,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    writeln!(qemu_in, "fetched").unwrap();
    qemu_in.flush().unwrap();
    console.wait_for("XFRM-DONE", Duration::from_secs(120));
    let st = g.child("qemu").wait().unwrap();
    eprintln!("guest done after {:?} (qemu {st})", started.elapsed());

    // The streams: the guest got each byte the LAN sent, the LAN got it back.
    for c in &CASES {
        let want = sha256_hex(&dir.join("www").join(format!("tx{}", c.idx)));
        let guest = format!("XFRM-RX: {} {want}", c.name);
        if !console.lines.iter().any(|l| l.trim().starts_with(&guest)) {
            failures.push(format!(
                "{}: the guest did not receive the LAN's TCP stream intact (want sha256 {want})",
                c.name
            ));
        }
        let back = sha256_hex(&dir.join(format!("rx{}", c.idx)));
        if back != want {
            let n = std::fs::metadata(dir.join(format!("rx{}", c.idx))).map_or(0, |m| m.len());
            failures.push(format!(
                "{}: guest -> LAN TCP stream differs ({n} of {TCP_BYTES} bytes, sha256 {back})",
                c.name
            ));
        }
    }

    // Stop the Viaduct (prints its counters) and the capture.
    let v = g.child("viaduct");
    kill_process(Pid::from_child(v), Signal::TERM).unwrap();
    let vst = v.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let d = g.child("tcpdump");
    let _ = kill_process(Pid::from_child(d), Signal::INT);
    let _ = d.wait();
    let dump_log = std::fs::read_to_string(dir.join("tcpdump.log")).unwrap_or_default();
    eprintln!("tcpdump: {}", dump_log.trim());
    let vtext = std::fs::read_to_string(&vlog).unwrap();
    eprintln!("viaduct log:\n{vtext}");
    assert!(vst.success(), "viaduct exited with {vst}:\n{vtext}");

    let guest_log = console.lines.join("\n");
    for l in console.lines.iter().filter(|l| l.starts_with("XFRM-TEST:")) {
        eprintln!("guest: {l}");
    }
    for c in &CASES {
        let ok = format!("XFRM-TEST: {} guest-ping ok", c.name);
        if !console.lines.iter().any(|l| l.trim() == ok) {
            failures.push(format!("{}: guest -> LAN ping failed", c.name));
        }
    }
    // Kernel SA counters: every SA carried >= 6 packets (3 pings each way).
    let states = parse_xfrm_state(&console.between("XFRM-STATE-BEGIN", "XFRM-STATE-END"));
    for c in &CASES {
        for spi in [c.spi_in_guest(), c.spi_out_guest()] {
            match states.iter().find(|s| s.0 == spi) {
                Some(&(_, bytes, packets)) if packets >= 6 && bytes > 0 => {}
                other => failures.push(format!(
                    "{}: kernel SA {spi:#x} carried {}, want >= 6 packets",
                    c.name,
                    other.map_or("nothing (SA missing)".into(), |&(_, b, p)| format!(
                        "{p} packets / {b} bytes"
                    ))
                )),
            }
        }
    }
    // Kernel XFRM error counters (CONFIG_XFRM_STATISTICS) all zero.
    for l in console.between("XFRM-STAT-BEGIN", "XFRM-STAT-END") {
        let mut f = l.split_whitespace();
        if let (Some(k), Some(v)) = (f.next(), f.next()) {
            if v != "0" {
                failures.push(format!("guest /proc/net/xfrm_stat: {k} = {v}"));
            }
        }
    }
    // Viaduct counters: per tunnel, both directions, and no inbound drops.
    for c in &CASES {
        for dir_ in ["out", "in"] {
            let prefix = format!("{dir_} tunnel={} ", c.name);
            let packets = vtext
                .lines()
                .filter(|l| l.starts_with(&prefix))
                .filter_map(|l| {
                    l.split_whitespace()
                        .find_map(|f| f.strip_prefix("packets=")?.parse::<u64>().ok())
                })
                .max();
            if packets.unwrap_or(0) < 6 {
                failures.push(format!(
                    "{}: viaduct {dir_} packets {packets:?}, want >= 6",
                    c.name
                ));
            }
        }
    }
    for d in ["in", "out"] {
        if !vtext
            .lines()
            .any(|l| l.trim() == format!("{d} drop total=0"))
        {
            failures.push(format!("viaduct dropped {d}bound packets"));
        }
    }
    // The LAN's super-packets were segmented by the Viaduct (not by its kernel).
    let seg = |key: &str| {
        vtext
            .lines()
            .filter(|l| l.starts_with("viaduct red->black:"))
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|f| f.strip_prefix(&format!("{key}="))?.parse::<u64>().ok())
            })
            .max()
            .unwrap_or(0)
    };
    let (gso_reads, segments) = (seg("gso_reads"), seg("segments"));
    if gso_reads == 0 || segments <= gso_reads {
        failures.push(format!(
            "viaduct segmented {gso_reads} super-packets into {segments} segments; want some"
        ));
    }
    // The UDP tunnel's TCP stream: equal ESP datagrams left as UDP
    // super-packets, which the kernel cut up on the way to the guest.
    let (gso_frames, gso_datagrams) = (seg("gso_frames"), seg("gso_datagrams"));
    if !kernel_has_tun_uso() {
        eprintln!("NOTE: this kernel's TUN has no UDP segmentation offload (Linux < 6.2): ESP in UDP is sent datagram by datagram");
    } else if !vtext.contains("black offloads csum,uso4,uso6")
        || gso_frames == 0
        || gso_datagrams <= gso_frames
    {
        failures.push(format!(
            "viaduct sent {gso_datagrams} ESP-in-UDP datagrams in {gso_frames} UDP super-packets; want some"
        ));
    }
    if seg("offload_malformed") != 0 {
        failures.push("viaduct found malformed offload frames".into());
    }
    let spis_of = |udp: bool| -> Vec<u32> {
        CASES
            .iter()
            .filter(|c| c.udp == udp)
            .flat_map(|c| [c.spi_in_guest(), c.spi_out_guest()])
            .collect()
    };
    let (esp_spis, udp_spis) = (spis_of(false), spis_of(true));
    let spis: Vec<u32> = esp_spis.iter().chain(&udp_spis).copied().collect();
    // Every SA carried 6 packets (the counters above); the capture must
    // show each of them on the wire, in its SA's encapsulation.
    let seen = check_pcap(&pcap, &esp_spis, &udp_spis);
    let esp = &seen.count;
    // TFC padding: the Viaduct's packets of the padded tunnel come in two
    // lengths only (one per size), and the kernel's padding was stripped
    // (tfc_bytes counted on both sides of the Viaduct).
    for c in CASES.iter().filter(|c| c.tfc) {
        if let Some(i) = spis.iter().position(|&s| s == c.spi_in_guest()) {
            let l = &seen.lengths[i];
            if l.len() > TFC_SIZES.len() {
                failures.push(format!(
                    "{}: Viaduct ESP frames of {} lengths ({l:?}), want at most {}",
                    c.name,
                    l.len(),
                    TFC_SIZES.len()
                ));
            }
        }
        for dir_ in ["out", "in"] {
            let prefix = format!("{dir_} tunnel={} ", c.name);
            let tfc = vtext
                .lines()
                .filter(|l| l.starts_with(&prefix))
                .filter_map(|l| {
                    l.split_whitespace()
                        .find_map(|f| f.strip_prefix("tfc_bytes=")?.parse::<u64>().ok())
                })
                .max()
                .unwrap_or(0);
            if tfc == 0 {
                failures.push(format!(
                    "{}: viaduct {dir_} tfc_bytes 0, want padding",
                    c.name
                ));
            }
        }
    }
    for (spi, n) in spis.iter().zip(esp) {
        if *n < 6 {
            failures.push(format!(
                "SPI {spi:#x}: only {n} ESP frames on the TAP, want >= 6"
            ));
        }
    }
    eprintln!(
        "{} ESP frames on the TAP; total {:?}",
        esp.iter().sum::<usize>(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "XFRM interop failures:\n{}\n--- guest console ---\n{guest_log}\n--- viaduct ---\n{vtext}",
        failures.join("\n")
    );
}
