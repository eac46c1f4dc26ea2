//! Live interop with strongSwan 5.9.8 (Debian 12's `charon-systemd`) in
//! network namespaces: this crate's engine (the `ike-peer` example on real
//! UDP sockets 500 and 4500) against charon, each case both ways where it
//! makes sense (strongSwan initiates; we initiate).
//!
//! ```text
//! netns <run>-sw: v0 192.0.2.1/24 2001:db8::1/64, lo 10.1.0.1   charon-systemd
//!          │ veth
//! netns <run>-vd: v1 192.0.2.2/24 2001:db8::2/64                ike-peer
//! ```
//!
//! - **Established** (strongSwan's `swanctl --list-sas --raw` shows the IKE
//!   SA ESTABLISHED and the CHILD SA INSTALLED with our SPIs, crossed, our
//!   transforms and selectors, and charon's level-4 log has the CHILD SA
//!   keys our `InstallChildSa` carries): PSK, pinned Ed25519 and pinned
//!   ECDSA P-256 keys; `aes256gcm16-prfsha256-x25519`,
//!   `chacha20poly1305-prfsha256-ecp256`, PRF SHA-384 and SHA-512 with
//!   AES-128-GCM; IKE over IPv6 with address identities; IPv4 address
//!   identities; one strongSwan proposal with many transforms; CERTREQ
//!   and Vendor ID payloads from strongSwan; selectors
//!   narrowed by us, selectors with protocols and ports; COOKIE and
//!   INVALID_KE_PAYLOAD round trips from either side; lost responses
//!   (retransmissions either way).
//! - **Refused**: a wrong PSK and a wrong pinned key (our event names the
//!   identity and the method; strongSwan logs AUTHENTICATION_FAILED); no
//!   common IKE proposal (NO_PROPOSAL_CHOSEN, our event lists both offers
//!   when we respond) or ESP proposal (the IKE SA stays up alone).
//! - **Established SA**: strongSwan's DPD, CHILD SA delete and IKE SA
//!   delete answered; its CHILD SA rekey refused (NO_ADDITIONAL_SAS), after
//!   which strongSwan reauthenticates.
//!
//! How:
//!
//! - **kernel-libipsec, not XFRM.** This machine's kernel has XFRM but no
//!   AEAD for it (`ip xfrm state add ... aead 'rfc4106(gcm(aes))'` answers
//!   "Requested AEAD algorithm not found"), so kernel-netlink cannot install
//!   AES-GCM or ChaCha20-Poly1305 SAs. kernel-libipsec does ESP in charon
//!   itself (a TUN device, `ipsec0`) and only in UDP: every connection has
//!   `encap = yes` (libipsec forces it anyway), which makes charon fake a
//!   NAT in its NAT_DETECTION_SOURCE_IP, so IKE_AUTH floats to port 4500 —
//!   our NAT-T path runs in every case, our no-NAT path in none.
//!   kernel-netlink stays loaded for addresses and routes. There are no
//!   `dummy` interfaces in this kernel: the inner address 10.1.0.1 sits on
//!   `lo`.
//! - **Configuration** per namespace under `/etc/netns/<run>-sw/`
//!   (`ip netns exec` bind-mounts it over `/etc`): `strongswan.conf` with its
//!   own vici socket and `filelog` in the case's temporary directory, at
//!   `ike = 4`, `chd = 4` (level 4 logs the derived keys), and `swanctl/`.
//!   strongSwan's syntax takes one `key = value` per line (a value runs to
//!   the end of its line). Debian's AppArmor profile for charon-systemd is
//!   in complain mode, so the paths outside `/run/charon.*` are not denied.
//! - **Cleanup**: a guard kills charon and the peer, every process left in
//!   the namespaces, deletes the namespaces, `/etc/netns/<name>` and the
//!   case's temporary directory — on drop, hence also when an assertion
//!   panics (then it prints charon's log and the peer's output first).
//!   Names carry the test process's PID; namespaces of a run whose process is
//!   gone are swept at the start. `IKE_STRONGSWAN_KEEP=1` keeps the case
//!   directories (charon's log) in the temporary directory.
//! - Cases run one at a time (a lock): most take half a second, those that
//!   wait for a retransmission or DPD one to three; the machine's cores are
//!   shared. strongSwan retransmits after 1 s, twice; our peer after 0.5 s.
//!
//! Needs root, iproute2, /dev/net/tun and the strongSwan packages named in
//! [`PACKAGES`] (`scripts/test` installs them); fails, naming them, if not.
//! The `ike-peer` example must be built (`cargo test -p ike` builds it).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ike::crypto::SigningKey;
use serde_json::Value;

/// The Debian packages this test needs.
const PACKAGES: &str = "charon-systemd strongswan-swanctl strongswan-pki \
                        libstrongswan-standard-plugins libstrongswan-extra-plugins \
                        libcharon-extra-plugins";

/// charon's plugins, in load order: kernel-libipsec before kernel-netlink so
/// that it provides the IPsec backend. `gcm` and `openssl` (AES-GCM, ECP-256)
/// come from libstrongswan-standard-plugins, `chapoly` and `curve25519`
/// (x25519, Ed25519) from libstrongswan-extra-plugins.
const CHARON_PLUGINS: &str = "random nonce openssl gcm chapoly curve25519 sha2 hmac kdf pem \
                              pkcs1 pkcs8 x509 pubkey socket-default kernel-libipsec \
                              kernel-netlink vici";

const SW_ADDR: &str = "192.0.2.1";
const OUR_ADDR: &str = "192.0.2.2";
const SW_ADDR6: &str = "2001:db8::1";
const OUR_ADDR6: &str = "2001:db8::2";
const SW_MAC: &str = "02:00:00:00:00:01";
const OUR_MAC: &str = "02:00:00:00:00:02";
const SW_ID: &str = "sw.test";
const OUR_ID: &str = "vd.test";
const SW_TS: &str = "10.1.0.0/24";
const OUR_TS: &str = "10.2.0.0/24";
const PSK: &str = "interop lab secret, not for use";

/// Our Ed25519 key: a fixed seed (lab only).
const OUR_SEED: [u8; 32] = [
    0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4,
    0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60,
];

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE,
/// AlgorithmIdentifier id-Ed25519, BIT STRING of 32 bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Our ECDSA P-256 key: a fixed scalar below the group order (lab only).
const OUR_SCALAR: [u8; 32] = [
    0xc9, 0xaf, 0xa9, 0xd8, 0x45, 0xba, 0x75, 0x16, 0x6b, 0x5c, 0x21, 0x57, 0x67, 0xb1, 0xd6, 0x93,
    0x4e, 0x50, 0xc3, 0xdb, 0x36, 0xe8, 0x9b, 0x12, 0x7b, 0x8a, 0x62, 0x2b, 0x12, 0x0f, 0x67, 0x21,
];

/// DER prefix of a P-256 SubjectPublicKeyInfo (RFC 5480): SEQUENCE,
/// AlgorithmIdentifier id-ecPublicKey with prime256v1, BIT STRING of the
/// 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Bound on every wait for the peer or strongSwan.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- host

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
        .unwrap_or(false)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Panics (the test fails, it does not skip) if the host lacks something.
fn require_host() {
    assert!(
        is_root(),
        "the strongSwan interop test needs root (network namespaces, /etc/netns)"
    );
    assert!(on_path("ip"), "ip not found: apt-get install iproute2");
    let files = [
        ("/usr/sbin/charon-systemd", "charon-systemd"),
        ("/usr/sbin/swanctl", "strongswan-swanctl"),
        ("/usr/bin/pki", "strongswan-pki"),
        (
            "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so",
            "libcharon-extra-plugins",
        ),
        (
            "/usr/lib/ipsec/plugins/libstrongswan-gcm.so",
            "libstrongswan-standard-plugins",
        ),
        (
            "/usr/lib/ipsec/plugins/libstrongswan-openssl.so",
            "libstrongswan-standard-plugins",
        ),
        (
            "/usr/lib/ipsec/plugins/libstrongswan-curve25519.so",
            "libstrongswan-extra-plugins",
        ),
        (
            "/usr/lib/ipsec/plugins/libstrongswan-chapoly.so",
            "libstrongswan-extra-plugins",
        ),
    ];
    let missing: Vec<String> = files
        .iter()
        .filter(|(f, _)| !Path::new(f).exists())
        .map(|(f, p)| format!("{f} (package {p})"))
        .collect();
    assert!(
        missing.is_empty(),
        "strongSwan is not installed completely: missing {}. \
         Install: apt-get install {PACKAGES} (scripts/test installs them)",
        missing.join(", ")
    );
    assert!(
        Path::new("/dev/net/tun").exists(),
        "/dev/net/tun missing: kernel-libipsec needs TUN (modprobe tun)"
    );
}

/// The `ike-peer` example, built next to this test's executable.
fn peer_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/strongswan-<hash> → target/<profile>/examples/
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps")
        .join("examples")
        .join("ike-peer");
    assert!(
        p.exists(),
        "{} not found: build it with `cargo build -p ike --example ike-peer` \
         (`cargo test -p ike` builds it)",
        p.display()
    );
    p
}

// ---------------------------------------------------------------- commands

fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"))
}

fn sh(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip_n(ns: &str, args: &str) {
    let mut v = vec!["ip", "-n", ns];
    v.extend(args.split_whitespace());
    sh(&v);
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The DER prefix of a SubjectPublicKeyInfo of the method's key type.
fn spki_prefix(method: Method) -> &'static [u8] {
    match method {
        Method::EcdsaP256 => &P256_SPKI_PREFIX,
        _ => &ED25519_SPKI_PREFIX,
    }
}

/// A public key as a PEM SubjectPublicKeyInfo, as `pki --pub` writes it.
fn public_pem(method: Method, raw: &[u8]) -> String {
    let mut der = spki_prefix(method).to_vec();
    der.extend_from_slice(raw);
    let b64 = base64(&der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

/// Our public key for a signature method (from the fixed seed or scalar),
/// or, with `other`, a key of the same type that is not ours.
fn our_key(method: Method, other: bool) -> Vec<u8> {
    let key = match (method, other) {
        (Method::EcdsaP256, false) => SigningKey::ecdsa_p256_from_scalar(&OUR_SCALAR),
        (Method::EcdsaP256, true) => SigningKey::ecdsa_p256_from_scalar(&[7; 32]),
        (_, false) => SigningKey::ed25519_from_seed(&OUR_SEED),
        (_, true) => SigningKey::ed25519_from_seed(&[7; 32]),
    };
    key.and_then(|k| k.public_key())
        .expect("a key from fixed bytes")
        .as_bytes()
        .to_vec()
}

// ---------------------------------------------------------------- lab

static SERIAL: Mutex<()> = Mutex::new(());
static CASE: AtomicU32 = AtomicU32::new(0);
const PREFIX: &str = "ikesw-";

/// Deletes namespaces (and their processes and /etc/netns directories) left
/// by a run of this test whose process is gone.
fn sweep_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        destroy_netns(&name);
    }
}

/// Kills the processes of a namespace of ours, deletes it and its /etc/netns
/// directory.
fn destroy_netns(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
}

/// Who sends IKE_SA_INIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Initiator {
    StrongSwan,
    Us,
}

/// How both sides authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Psk,
    /// Pinned Ed25519 keys (RFC 8420).
    Ed25519,
    /// Pinned ECDSA P-256 keys, signatures with SHA-256 (RFC 7427).
    EcdsaP256,
}

/// One IKE and one ESP proposal, in both syntaxes, and what strongSwan's
/// `--list-sas --raw` shows for them.
#[derive(Clone, Copy, Debug)]
struct Suite {
    /// strongSwan's `proposals`.
    sw_ike: &'static str,
    /// strongSwan's `esp_proposals`.
    sw_esp: &'static str,
    /// Our `--ike` flags.
    our_ike: &'static [&'static str],
    /// Our `--esp` flags.
    our_esp: &'static [&'static str],
    /// The IKE SA's `encr-alg`.
    encr: &'static str,
    /// Its `encr-keysize`, absent for ChaCha20-Poly1305.
    keysize: Option<&'static str>,
    /// The CHILD SA's `encr-alg` and `encr-keysize`.
    esp_encr: &'static str,
    esp_keysize: Option<&'static str>,
    /// `prf-alg`.
    prf: &'static str,
    /// `dh-group`.
    dh: &'static str,
    /// Our `aead` in `install_child_sa`.
    our_aead: &'static str,
}

const AES_X25519: Suite = Suite {
    sw_ike: "aes256gcm16-prfsha256-x25519",
    sw_esp: "aes256gcm16-noesn",
    our_ike: &["aes256gcm16-prfsha256-x25519"],
    our_esp: &["aes256gcm16-noesn"],
    encr: "AES_GCM_16",
    keysize: Some("256"),
    prf: "PRF_HMAC_SHA2_256",
    dh: "CURVE_25519",
    esp_encr: "AES_GCM_16",
    esp_keysize: Some("256"),
    our_aead: "AesGcm16_256",
};

const CHACHA_ECP256: Suite = Suite {
    sw_ike: "chacha20poly1305-prfsha256-ecp256",
    sw_esp: "chacha20poly1305-noesn",
    our_ike: &["chacha20poly1305-prfsha256-ecp256"],
    our_esp: &["chacha20poly1305-noesn"],
    encr: "CHACHA20_POLY1305",
    keysize: None,
    prf: "PRF_HMAC_SHA2_256",
    dh: "ECP_256",
    esp_encr: "CHACHA20_POLY1305",
    esp_keysize: None,
    our_aead: "ChaCha20Poly1305",
};

/// The other PRFs and the shorter AES key: prf+ with SHA-384 and SHA-512
/// (longer SK_d, SK_p), 20-byte ESP key material.
const AES128_PRFSHA384: Suite = Suite {
    sw_ike: "aes128gcm16-prfsha384-x25519",
    sw_esp: "aes128gcm16-noesn",
    our_ike: &["aes128gcm16-prfsha384-x25519"],
    our_esp: &["aes128gcm16-noesn"],
    encr: "AES_GCM_16",
    keysize: Some("128"),
    prf: "PRF_HMAC_SHA2_384",
    dh: "CURVE_25519",
    esp_encr: "AES_GCM_16",
    esp_keysize: Some("128"),
    our_aead: "AesGcm16_128",
};

const CHACHA_PRFSHA512: Suite = Suite {
    sw_ike: "chacha20poly1305-prfsha512-ecp256",
    sw_esp: "aes128gcm16-noesn",
    our_ike: &["chacha20poly1305-prfsha512-ecp256"],
    our_esp: &["aes128gcm16-noesn"],
    encr: "CHACHA20_POLY1305",
    keysize: None,
    prf: "PRF_HMAC_SHA2_512",
    dh: "ECP_256",
    esp_encr: "AES_GCM_16",
    esp_keysize: Some("128"),
    our_aead: "AesGcm16_128",
};

/// What to configure on each side.
#[derive(Clone, Debug)]
struct Setup {
    method: Method,
    /// strongSwan's `proposals`, `esp_proposals`, and selectors.
    sw_ike: String,
    sw_esp: String,
    sw_local_ts: String,
    sw_remote_ts: String,
    /// The selectors strongSwan should end with (`local-ts`, `remote-ts`).
    expect_sw_ts: (Vec<String>, Vec<String>),
    /// strongSwan's PSK (ours is [`PSK`]).
    sw_psk: String,
    /// strongSwan's `dpd_delay`.
    sw_dpd: &'static str,
    /// More lines for strongSwan's `charon-systemd` section.
    sw_charon_extra: Vec<String>,
    /// The outer addresses: strongSwan's, ours.
    sw_addr: String,
    our_addr: String,
    /// The identities: strongSwan's, ours (FQDNs or addresses).
    sw_id: String,
    our_id: String,
    /// strongSwan has a CA certificate (so it sends CERTREQ) and sends a
    /// Vendor ID.
    sw_ca_and_vendor_id: bool,
    /// A case that loses datagrams on purpose: retransmissions expected.
    lossy: bool,
    /// Ed25519: strongSwan pins a key that is not ours.
    sw_pins_other_key: bool,
    /// Ed25519: we pin a key that is not strongSwan's.
    we_pin_other_key: bool,
    /// strongSwan's `encap` (`yes`: it fakes a NAT to force UDP).
    sw_encap: &'static str,
    /// More lines for strongSwan's connection `vd` and its child `net`.
    sw_conn_extra: Vec<String>,
    sw_child_extra: Vec<String>,
    /// Our flags beyond the identities and credentials.
    our_ike: Vec<String>,
    our_esp: Vec<String>,
    our_extra: Vec<String>,
}

impl Setup {
    fn new(method: Method, suite: Suite) -> Setup {
        Setup {
            method,
            sw_ike: suite.sw_ike.into(),
            sw_esp: suite.sw_esp.into(),
            sw_local_ts: SW_TS.into(),
            sw_remote_ts: OUR_TS.into(),
            expect_sw_ts: (vec![SW_TS.into()], vec![OUR_TS.into()]),
            sw_psk: PSK.into(),
            sw_dpd: "0",
            sw_charon_extra: Vec::new(),
            sw_addr: SW_ADDR.into(),
            our_addr: OUR_ADDR.into(),
            sw_id: SW_ID.into(),
            our_id: OUR_ID.into(),
            sw_ca_and_vendor_id: false,
            lossy: false,
            sw_pins_other_key: false,
            we_pin_other_key: false,
            our_ike: suite.our_ike.iter().map(|s| s.to_string()).collect(),
            our_esp: suite.our_esp.iter().map(|s| s.to_string()).collect(),
            our_extra: Vec::new(),
            sw_encap: "yes",
            sw_conn_extra: Vec::new(),
            sw_child_extra: Vec::new(),
        }
    }
}

/// One case's namespaces, charon, peer and files; all removed on drop.
struct Lab {
    name: String,
    sw_ns: String,
    our_ns: String,
    dir: PathBuf,
    charon: Option<Child>,
    peer: Option<Peer>,
    started: Instant,
    _serial: MutexGuard<'static, ()>,
}

impl Lab {
    /// Namespaces, veth, strongSwan's configuration and keys, charon
    /// running with the connection loaded.
    fn new(setup: &Setup) -> Lab {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        require_host();
        sweep_stale();
        let n = CASE.fetch_add(1, Ordering::SeqCst);
        let name = format!("{PREFIX}{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the case directory");
        let mut lab = Lab {
            sw_ns: format!("{name}-sw"),
            our_ns: format!("{name}-vd"),
            name,
            dir,
            charon: None,
            peer: None,
            started: Instant::now(),
            _serial: serial,
        };
        lab.network();
        lab.configure(setup);
        lab.start_charon();
        lab
    }

    fn network(&self) {
        let (sw, vd) = (&self.sw_ns, &self.our_ns);
        for ns in [sw, vd] {
            sh(&["ip", "netns", "add", ns]);
            ip_n(ns, "link set lo up");
        }
        sh(&[
            "ip", "link", "add", "v0", "address", SW_MAC, "netns", sw, "type", "veth", "peer",
            "name", "v1", "address", OUR_MAC, "netns", vd,
        ]);
        // Static neighbours: the first IPv6 datagram to a fresh veth
        // neighbour otherwise waits a second here for neighbour discovery to
        // retry its first solicitation (strongSwan then retransmits).
        for (ns, dev, addr, mac) in [
            (sw, "v0", OUR_ADDR, OUR_MAC),
            (sw, "v0", OUR_ADDR6, OUR_MAC),
            (vd, "v1", SW_ADDR, SW_MAC),
            (vd, "v1", SW_ADDR6, SW_MAC),
        ] {
            ip_n(
                ns,
                &format!("neigh add {addr} lladdr {mac} dev {dev} nud permanent"),
            );
        }
        ip_n(sw, &format!("addr add {SW_ADDR}/24 dev v0"));
        // No duplicate address detection: the address is usable at once.
        ip_n(sw, &format!("addr add {SW_ADDR6}/64 dev v0 nodad"));
        ip_n(sw, "link set v0 up");
        // The inner address strongSwan takes as the source of its route
        // through ipsec0 (no dummy interfaces in this kernel).
        ip_n(sw, "addr add 10.1.0.1/32 dev lo");
        ip_n(vd, &format!("addr add {OUR_ADDR}/24 dev v1"));
        ip_n(vd, &format!("addr add {OUR_ADDR6}/64 dev v1 nodad"));
        ip_n(vd, "link set v1 up");
    }

    fn etc(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.sw_ns)
    }

    fn vici(&self) -> PathBuf {
        self.dir.join("charon.vici")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("charon.log")
    }

    fn configure(&self, s: &Setup) {
        let etc = self.etc();
        for d in ["conf.d", "pubkey", "private", "x509", "x509ca"] {
            std::fs::create_dir_all(etc.join("swanctl").join(d)).expect("create /etc/netns/...");
        }
        let strongswan_conf = format!(
            r#"charon-systemd {{
  load = {CHARON_PLUGINS}
  filelog {{
    interop {{
      path = {log}
      time_format = %T
      time_add_ms = yes
      default = 1
      ike = 4
      chd = 4
      cfg = 2
      knl = 2
      net = 2
      flush_line = yes
    }}
  }}
  journal {{
    default = -1
  }}
  plugins {{
    vici {{
      socket = unix://{vici}
    }}
  }}
  retransmit_timeout = 1.0
  retransmit_tries = 2
  half_open_timeout = 10
  send_vendor_id = {vendor_id}
{extra}
}}
swanctl {{
  socket = unix://{vici}
}}
"#,
            log = self.log_path().display(),
            vici = self.vici().display(),
            vendor_id = if s.sw_ca_and_vendor_id { "yes" } else { "no" },
            extra = s
                .sw_charon_extra
                .iter()
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
                .trim_end(),
        );
        std::fs::write(etc.join("strongswan.conf"), strongswan_conf).expect("strongswan.conf");
        if s.sw_ca_and_vendor_id {
            let ca_key = self.dir.join("ca.pem");
            let key = sh(&["pki", "--gen", "--type", "ed25519", "--outform", "pem"]);
            std::fs::write(&ca_key, key).expect("write ca.pem");
            let ca = sh(&[
                "pki",
                "--self",
                "--ca",
                "--type",
                "ed25519",
                "--in",
                ca_key.to_str().expect("UTF-8 path"),
                "--dn",
                "CN=Interop Test CA",
                "--outform",
                "pem",
            ]);
            std::fs::write(etc.join("swanctl/x509ca/ca.crt"), ca).expect("write ca.crt");
        }
        let (local_auth, remote_auth, secrets) = match s.method {
            Method::Psk => (
                "auth = psk".to_string(),
                "auth = psk".to_string(),
                format!(
                    "secrets {{\n  ike-lab {{\n    id-1 = {}\n    id-2 = {}\n    \
                     secret = \"{}\"\n  }}\n}}\n",
                    s.sw_id, s.our_id, s.sw_psk
                ),
            ),
            Method::Ed25519 | Method::EcdsaP256 => {
                self.signature_keys(s.method, s.sw_pins_other_key);
                (
                    "auth = pubkey\n      pubkeys = sw.pub".to_string(),
                    "auth = pubkey\n      pubkeys = vd.pub".to_string(),
                    String::new(),
                )
            }
        };
        let swanctl_conf = format!(
            r#"connections {{
  vd {{
    version = 2
    local_addrs = {sw_addr}
    remote_addrs = {our_addr}
    encap = {encap}
    mobike = no
    dpd_delay = {dpd}
    proposals = {ike}
    local {{
      {local_auth}
      id = {sw_id}
    }}
    remote {{
      {remote_auth}
      id = {our_id}
    }}
    children {{
      net {{
        local_ts = {local_ts}
        remote_ts = {remote_ts}
        esp_proposals = {esp}
        start_action = none
{child_extra}
      }}
    }}
{conn_extra}
  }}
}}
{secrets}"#,
            dpd = s.sw_dpd,
            encap = s.sw_encap,
            sw_addr = s.sw_addr,
            our_addr = s.our_addr,
            sw_id = s.sw_id,
            our_id = s.our_id,
            ike = s.sw_ike,
            esp = s.sw_esp,
            local_ts = s.sw_local_ts,
            remote_ts = s.sw_remote_ts,
            child_extra = s
                .sw_child_extra
                .iter()
                .map(|l| format!("        {l}\n"))
                .collect::<String>()
                .trim_end(),
            conn_extra = s
                .sw_conn_extra
                .iter()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
                .trim_end(),
        );
        std::fs::write(etc.join("swanctl/swanctl.conf"), swanctl_conf).expect("swanctl.conf");
    }

    /// strongSwan's key from `pki --gen`, ours from its fixed value (or
    /// another key if strongSwan is to pin the wrong one), as PEM files.
    fn signature_keys(&self, method: Method, pin_other: bool) {
        let swanctl = self.etc().join("swanctl");
        let private = swanctl.join("private/sw.pem");
        let gen: &[&str] = match method {
            Method::Ed25519 => &["--type", "ed25519"],
            _ => &["--type", "ecdsa", "--size", "256"],
        };
        let mut args = vec!["pki", "--gen"];
        args.extend_from_slice(gen);
        args.extend(["--outform", "pem"]);
        std::fs::write(&private, sh(&args)).expect("write sw.pem");
        let private = private.to_str().expect("UTF-8 path");
        let pub_pem = sh(&["pki", "--pub", "--in", private, "--outform", "pem"]);
        std::fs::write(swanctl.join("pubkey/sw.pub"), pub_pem).expect("write sw.pub");
        let ours = our_key(method, pin_other);
        std::fs::write(swanctl.join("pubkey/vd.pub"), public_pem(method, &ours))
            .expect("write vd.pub");
    }

    /// strongSwan's public key as we pin it (from `pki --pub --outform
    /// der`): 32 raw bytes for Ed25519, the uncompressed point for ECDSA.
    fn sw_public_key(&self, method: Method) -> Vec<u8> {
        let private = self.etc().join("swanctl/private/sw.pem");
        let out = run(&[
            "pki",
            "--pub",
            "--in",
            private.to_str().expect("UTF-8 path"),
            "--outform",
            "der",
        ]);
        assert!(out.status.success(), "pki --pub failed");
        let der = out.stdout;
        let prefix = spki_prefix(method);
        assert_eq!(
            der.get(..prefix.len()),
            Some(prefix),
            "pki --pub did not write the SubjectPublicKeyInfo of a {method:?} key: {}",
            hex::encode(&der)
        );
        der[prefix.len()..].to_vec()
    }

    fn start_charon(&mut self) {
        let out = std::fs::File::create(self.dir.join("charon.out")).expect("charon.out");
        let err = out.try_clone().expect("clone a file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.sw_ns, "/usr/sbin/charon-systemd"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start charon-systemd");
        self.charon = Some(child);
        let deadline = Instant::now() + WAIT;
        // The vici socket appears once charon listens; load-all may still
        // race it, so retry.
        loop {
            if self.vici().exists() && self.try_load_all() {
                return;
            }
            if let Some(status) = self
                .charon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("charon-systemd exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "charon-systemd did not come up within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `swanctl --load-all`: false if charon did not answer, a panic if the
    /// configuration does not load.
    fn try_load_all(&self) -> bool {
        let out = self.swanctl_output(&["--load-all", "--noprompt"]);
        if !out.status.success() {
            return false;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("successfully loaded 1 connections"),
            "swanctl --load-all: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        true
    }

    fn swanctl_output(&self, args: &[&str]) -> std::process::Output {
        let mut v = vec!["ip", "netns", "exec", &self.sw_ns, "swanctl"];
        v.extend_from_slice(args);
        run(&v)
    }

    /// `swanctl --initiate --child net`; its output, and whether it succeeded.
    fn sw_initiate(&self) -> (bool, String) {
        let out = self.swanctl_output(&["--initiate", "--child", "net", "--timeout", "10"]);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// The IKE SAs of `swanctl --list-sas --raw`.
    fn sw_sas(&self) -> Vec<Node> {
        let out = self.swanctl_output(&["--list-sas", "--raw"]);
        assert!(out.status.success(), "swanctl --list-sas failed");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter_map(|l| l.strip_prefix("list-sa event "))
            .map(|l| Node::parse(l).unwrap_or_else(|| panic!("unparsable list-sa event: {l}")))
            .flat_map(|n| n.sections.into_values())
            .collect()
    }

    /// Waits until strongSwan shows an IKE SA ESTABLISHED with its CHILD SA
    /// INSTALLED.
    fn sw_established(&self) -> Node {
        let deadline = Instant::now() + WAIT;
        loop {
            let sas = self.sw_sas();
            if let Some(sa) = sas.into_iter().find(|sa| {
                sa.value("state") == Some("ESTABLISHED")
                    && sa.section("child-sas").is_some_and(|c| {
                        c.sections
                            .values()
                            .any(|ch| ch.value("state") == Some("INSTALLED"))
                    })
            }) {
                return sa;
            }
            assert!(
                Instant::now() < deadline,
                "strongSwan shows no ESTABLISHED IKE SA with an INSTALLED CHILD SA: {:?}",
                self.sw_sas()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits for a line in charon's log containing `needle`.
    fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.log().lines().find(|l| l.contains(needle)) {
                return l.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "charon's log has no line with {needle:?} after {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts our peer in its namespace.
    fn start_peer(&mut self, setup: &Setup, initiate: bool) -> &mut Peer {
        let mut args: Vec<String> = vec![
            "--local".into(),
            setup.our_addr.clone(),
            "--remote".into(),
            setup.sw_addr.clone(),
            "--local-id".into(),
            setup.our_id.clone(),
            "--remote-id".into(),
            setup.sw_id.clone(),
            "--local-ts".into(),
            OUR_TS.into(),
            "--remote-ts".into(),
            SW_TS.into(),
            "--retransmit-ms".into(),
            "500".into(),
            "--sends".into(),
            "3".into(),
            // A safety net should the test process be killed.
            "--exit-after-s".into(),
            "120".into(),
        ];
        match setup.method {
            Method::Psk => args.extend(["--psk".into(), PSK.into()]),
            Method::Ed25519 | Method::EcdsaP256 => {
                let peer_key = if setup.we_pin_other_key {
                    // A key of the right type that is not strongSwan's.
                    our_key(setup.method, true)
                } else {
                    self.sw_public_key(setup.method)
                };
                let (ours, theirs, secret) = match setup.method {
                    Method::Ed25519 => ("--ed25519-seed", "--peer-ed25519", OUR_SEED),
                    _ => ("--ecdsa-p256-scalar", "--peer-ecdsa-p256", OUR_SCALAR),
                };
                args.extend([
                    ours.into(),
                    hex::encode(secret),
                    theirs.into(),
                    hex::encode(&peer_key),
                ]);
            }
        }
        for p in &setup.our_ike {
            args.extend(["--ike".into(), p.clone()]);
        }
        for p in &setup.our_esp {
            args.extend(["--esp".into(), p.clone()]);
        }
        args.extend(setup.our_extra.iter().cloned());
        if initiate {
            args.push("--initiate".into());
        }
        let peer = Peer::start(&self.our_ns, &self.dir, &args);
        self.peer.insert(peer)
    }

    fn peer(&mut self) -> &mut Peer {
        self.peer.as_mut().expect("the peer was started")
    }

    /// Prints how long the case took: the lab's setup (namespaces, keys,
    /// charon up and loaded), then the exchange and the checks.
    fn report(&self, what: &str, checks_from: Instant) {
        let total = self.started.elapsed();
        eprintln!(
            "{what}: setup {:.2?}, exchange and checks {:.2?}, total {:.2?}",
            total.saturating_sub(checks_from.elapsed()),
            checks_from.elapsed(),
            total
        );
    }

    /// What to show when a case fails.
    fn diagnostics(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                // Leave out the hex dumps of level 4.
                !l.split_once(']').is_some_and(|(_, rest)| {
                    rest.trim_start()
                        .split(':')
                        .next()
                        .is_some_and(|n| n.trim().parse::<u32>().is_ok())
                })
            })
            .collect();
        let tail = lines[lines.len().saturating_sub(80)..].join("\n");
        let peer = self
            .peer
            .as_ref()
            .map(|p| {
                p.lines
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        let stderr = std::fs::read_to_string(self.dir.join("ike-peer.err")).unwrap_or_default();
        format!(
            "--- charon log ({}), last 80 lines without hex dumps ---\n{tail}\n\
             --- ike-peer ---\n{peer}\n--- ike-peer stderr ---\n{stderr}",
            self.log_path().display()
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let keep = std::env::var_os("IKE_STRONGSWAN_KEEP").is_some();
        if let Some(p) = self.peer.as_mut() {
            p.drain();
            if keep {
                let lines: String = p.lines.iter().map(|v| format!("{v}\n")).collect();
                let _ = std::fs::write(self.dir.join("ike-peer.jsonl"), lines);
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "case {} failed after {:?}",
                self.name,
                self.started.elapsed()
            );
            eprintln!("{}", self.diagnostics());
        }
        if let Some(mut p) = self.peer.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        if let Some(mut c) = self.charon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        destroy_netns(&self.sw_ns);
        destroy_netns(&self.our_ns);
        if keep {
            eprintln!(
                "kept {} (charon.log, ike-peer.jsonl, ike-peer.err)",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------- peer

/// The `ike-peer` process and the JSON lines it printed.
struct Peer {
    child: Child,
    rx: mpsc::Receiver<Value>,
    lines: Vec<Value>,
}

impl Peer {
    fn start(ns: &str, dir: &Path, args: &[String]) -> Peer {
        let err = std::fs::File::create(dir.join("ike-peer.err")).expect("ike-peer.err");
        let bin = peer_binary();
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("start ike-peer");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({"type": "unparsed", "line": line}));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let mut p = Peer {
            child,
            rx,
            lines: Vec::new(),
        };
        p.wait_for("ready", |v| v["type"] == "ready");
        p
    }

    /// The first line (seen before or arriving within [`WAIT`]) for which
    /// `pred` holds.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_within(what, WAIT, pred)
    }

    fn wait_for_within(
        &mut self,
        what: &str,
        wait: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(v) = self.lines.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) => {
                    self.lines.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "ike-peer printed no {what} within {wait:?} (exit status {:?})",
                    self.child.try_wait().ok().flatten()
                ),
            }
        }
    }

    fn event(&mut self, kind: &str) -> Value {
        self.wait_for(&format!("event {kind}"), |v| {
            v["type"] == "event" && v["kind"] == kind
        })
    }

    /// Takes what arrived so far without waiting.
    fn drain(&mut self) {
        while let Ok(v) = self.rx.try_recv() {
            self.lines.push(v);
        }
    }

    /// Every line of this `type` so far.
    fn of_type(&mut self, ty: &str) -> Vec<Value> {
        self.drain();
        self.lines
            .iter()
            .filter(|v| v["type"] == ty)
            .cloned()
            .collect()
    }

    fn events(&mut self, kind: &str) -> Vec<Value> {
        self.drain();
        self.lines
            .iter()
            .filter(|v| v["type"] == "event" && v["kind"] == kind)
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------- swanctl --raw

/// A section of `swanctl --list-sas --raw`: `key=value`, `key=[a b]` and
/// `name {...}`.
#[derive(Debug, Default, Clone)]
struct Node {
    values: BTreeMap<String, String>,
    lists: BTreeMap<String, Vec<String>>,
    sections: BTreeMap<String, Node>,
}

impl Node {
    /// Parses `{...}` (the text after `list-sa event `).
    fn parse(text: &str) -> Option<Node> {
        // Tokens: braces, words, and `[` ... `]` around list items. A list
        // item may hold brackets itself (`10.1.0.0/24[tcp/http]`): only a
        // `[` right after `=` opens a list, and its items end at whitespace
        // or at the `]` that closes it.
        let mut tokens = Vec::new();
        let mut cur = String::new();
        let mut depth = 0usize;
        for c in text.chars() {
            if depth > 0 {
                match c {
                    '[' => {
                        depth += 1;
                        cur.push(c);
                    }
                    ']' if depth == 1 => {
                        depth = 0;
                        if !cur.is_empty() {
                            tokens.push(std::mem::take(&mut cur));
                        }
                        tokens.push("]".into());
                    }
                    ']' => {
                        depth -= 1;
                        cur.push(c);
                    }
                    c if c.is_whitespace() && depth == 1 => {
                        if !cur.is_empty() {
                            tokens.push(std::mem::take(&mut cur));
                        }
                    }
                    c => cur.push(c),
                }
                continue;
            }
            match c {
                '[' if cur.ends_with('=') => {
                    tokens.push(std::mem::take(&mut cur));
                    tokens.push("[".into());
                    depth = 1;
                }
                '{' | '}' => {
                    if !cur.is_empty() {
                        tokens.push(std::mem::take(&mut cur));
                    }
                    tokens.push(c.to_string());
                }
                c if c.is_whitespace() => {
                    if !cur.is_empty() {
                        tokens.push(std::mem::take(&mut cur));
                    }
                }
                c => cur.push(c),
            }
        }
        if !cur.is_empty() {
            tokens.push(cur);
        }
        let mut it = tokens.into_iter().peekable();
        if it.next()? != "{" {
            return None;
        }
        let node = Self::body(&mut it)?;
        it.next().is_none().then_some(node)
    }

    fn body(it: &mut std::iter::Peekable<std::vec::IntoIter<String>>) -> Option<Node> {
        let mut n = Node::default();
        loop {
            let t = it.next()?;
            if t == "}" {
                return Some(n);
            }
            if let Some(key) = t.strip_suffix('=') {
                // key=[a b c]
                if it.next()? != "[" {
                    return None;
                }
                let mut items = Vec::new();
                loop {
                    let x = it.next()?;
                    if x == "]" {
                        break;
                    }
                    items.push(x);
                }
                n.lists.insert(key.to_string(), items);
            } else if let Some((k, v)) = t.split_once('=') {
                n.values.insert(k.to_string(), v.to_string());
            } else if it.peek().map(String::as_str) == Some("{") {
                it.next();
                let child = Self::body(it)?;
                n.sections.insert(t, child);
            } else {
                return None;
            }
        }
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    fn section(&self, key: &str) -> Option<&Node> {
        self.sections.get(key)
    }

    fn list(&self, key: &str) -> Vec<&str> {
        self.lists
            .get(key)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Asserts `key=value` like an evaltest pattern, naming the field.
    fn expect(&self, key: &str, want: &str) {
        assert_eq!(
            self.value(key),
            Some(want),
            "strongSwan's {key} (in {:?})",
            self.values
        );
    }
}

// ---------------------------------------------------------------- charon's key log

/// The bytes of a `%B` hex dump at level 4: the line containing `label`
/// (`"encryption initiator key => 36 bytes @ 0x..."`) and the dump lines of
/// the same thread that follow it. The last such dump in the log.
fn logged_bytes(log: &str, label: &str) -> Option<Vec<u8>> {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines.iter().rposition(|l| l.contains(label))?;
    let head = lines[start];
    let thread = head
        .split_whitespace()
        .find(|t| t.contains("[CHD]") || t.contains("[IKE]"))?;
    let len: usize = head
        .split("=> ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let mut out = Vec::with_capacity(len);
    for l in &lines[start + 1..] {
        if out.len() >= len {
            break;
        }
        let Some((_, rest)) = l.split_once(&format!("{thread} ")) else {
            continue;
        };
        let Some((offset, dump)) = rest.split_once(": ") else {
            continue;
        };
        match offset.trim().parse::<usize>() {
            Ok(o) if o == out.len() => {}
            Ok(_) => return None,
            Err(_) => continue,
        }
        let take = (len - out.len()).min(16);
        for b in dump.split_whitespace().take(take) {
            out.push(u8::from_str_radix(b, 16).ok()?);
        }
    }
    (out.len() == len).then_some(out)
}

// ---------------------------------------------------------------- cases

/// How our events show an identity.
fn shown(id: &str) -> String {
    if id.parse::<std::net::IpAddr>().is_ok() {
        format!("addr:{id}")
    } else {
        format!("fqdn:{id}")
    }
}

/// Starts the negotiation: our peer initiates, or strongSwan does (and
/// `swanctl --initiate` must then succeed if `sw_must_succeed`). Whether
/// `swanctl --initiate` succeeded (true when we initiate).
fn start(lab: &mut Lab, setup: &Setup, initiator: Initiator, sw_must_succeed: bool) -> bool {
    lab.start_peer(setup, initiator == Initiator::Us);
    if initiator == Initiator::StrongSwan {
        let (ok, out) = lab.sw_initiate();
        assert!(ok || !sw_must_succeed, "swanctl --initiate failed:\n{out}");
        return ok;
    }
    true
}

/// Both sides end with the same IKE SA and CHILD SA: strongSwan shows it
/// ESTABLISHED and INSTALLED with our SPIs (crossed), the transforms of
/// `suite`, our selectors, and logged the keys we install.
fn check_established(lab: &mut Lab, setup: &Setup, suite: Suite, initiator: Initiator) -> Value {
    let install = lab
        .peer()
        .wait_for("install_child_sa", |v| v["type"] == "install_child_sa");
    let established = lab.peer().event("ike_sa_established");
    assert!(
        established["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("established with {}", shown(&setup.sw_id)))),
        "{established}"
    );
    assert!(lab.peer().events("failed").is_empty());
    let sa = lab.sw_established();
    let s = |k: &str| install[k].as_str().unwrap_or_default().to_string();

    // The IKE SA, as strongSwan sees it.
    sa.expect("version", "2");
    sa.expect("local-id", &setup.sw_id);
    sa.expect("remote-id", &setup.our_id);
    sa.expect("local-host", &setup.sw_addr);
    sa.expect("remote-host", &setup.our_addr);
    // encap = yes: NAT faked, IKE floated to 4500 on both sides; without it,
    // only our forced encapsulation (a fake NAT-D source hash) floats it.
    sa.expect("local-port", "4500");
    sa.expect("remote-port", "4500");
    if setup.sw_encap == "yes" {
        sa.expect("nat-fake", "yes");
    } else {
        sa.expect("nat-remote", "yes");
        assert_eq!(sa.value("nat-fake"), None, "strongSwan faked a NAT");
        assert_eq!(sa.value("nat-local"), None, "strongSwan is behind no NAT");
    }
    assert_eq!(
        sa.value("initiator"),
        (initiator == Initiator::StrongSwan).then_some("yes"),
        "strongSwan's initiator flag"
    );
    sa.expect(
        "initiator-spi",
        install["ike_sa"]["spi_i"].as_str().unwrap_or_default(),
    );
    sa.expect(
        "responder-spi",
        install["ike_sa"]["spi_r"].as_str().unwrap_or_default(),
    );
    sa.expect("encr-alg", suite.encr);
    assert_eq!(sa.value("encr-keysize"), suite.keysize, "IKE encr-keysize");
    sa.expect("prf-alg", suite.prf);
    sa.expect("dh-group", suite.dh);

    // The CHILD SA: INSTALLED, SPIs crossed, same transform and selectors
    // (ours: strongSwan's wider ones are narrowed to them).
    let child = sa
        .section("child-sas")
        .and_then(|c| c.sections.values().next())
        .expect("a CHILD SA");
    child.expect("state", "INSTALLED");
    child.expect("mode", "TUNNEL");
    child.expect("protocol", "ESP");
    child.expect("encap", "yes");
    child.expect("spi-in", &s("outbound_spi"));
    child.expect("spi-out", &s("inbound_spi"));
    child.expect("encr-alg", suite.esp_encr);
    assert_eq!(
        child.value("encr-keysize"),
        suite.esp_keysize,
        "ESP encr-keysize"
    );
    assert_eq!(
        child.list("local-ts"),
        setup.expect_sw_ts.0,
        "strongSwan's local-ts"
    );
    assert_eq!(
        child.list("remote-ts"),
        setup.expect_sw_ts.1,
        "strongSwan's remote-ts"
    );
    assert_eq!(install["aead"], suite.our_aead);
    assert_eq!(install["udp_encapsulation"], true);
    let socket = |a: &str| std::net::SocketAddr::new(a.parse().expect("an address"), 4500);
    assert_eq!(install["local"], socket(&setup.our_addr).to_string());
    assert_eq!(install["remote"], socket(&setup.sw_addr).to_string());
    assert_eq!(install["local_ts"][0]["start"], "10.2.0.0");
    assert_eq!(install["local_ts"][0]["end"], "10.2.0.255");
    assert_eq!(install["remote_ts"][0]["start"], "10.1.0.0");
    assert_eq!(install["remote_ts"][0]["end"], "10.1.0.255");
    let our_role = match initiator {
        Initiator::Us => "initiator",
        Initiator::StrongSwan => "responder",
    };
    assert_eq!(install["role"], our_role);

    // The keys, from charon's level-4 log ("initiator key": initiator to
    // responder).
    let log = lab.log();
    let i_to_r = logged_bytes(&log, "encryption initiator key =>")
        .expect("charon logs the CHILD SA's initiator key at chd level 4");
    let r_to_i = logged_bytes(&log, "encryption responder key =>")
        .expect("charon logs the CHILD SA's responder key at chd level 4");
    let (our_out, our_in) = match initiator {
        Initiator::Us => (&i_to_r, &r_to_i),
        Initiator::StrongSwan => (&r_to_i, &i_to_r),
    };
    assert_eq!(s("outbound_key"), hex::encode(our_out), "our outbound key");
    assert_eq!(s("inbound_key"), hex::encode(our_in), "our inbound key");

    // Nothing was lost or ignored on the way: no side retransmitted.
    if !setup.lossy {
        // strongSwan's retransmission timer (shortened for the tests) can fire on a
        // loaded machine before our answer arrives; that is its timing, not a loss,
        // so it is reported, not failed. Our own retransmissions stay an error.
        if log.contains("retransmit 1 of request") {
            eprintln!("note: strongSwan retransmitted a request (slow machine?)");
        }
        assert!(
            lab.peer().events("retransmitted").is_empty(),
            "we retransmitted a request"
        );
    }

    let method = match setup.method {
        Method::Psk => "pre-shared key",
        Method::Ed25519 => "ED25519",
        Method::EcdsaP256 => "ECDSA_WITH_SHA256_DER",
    };
    lab.wait_log(&format!(
        "authentication of '{}' with {method} successful",
        setup.our_id
    ));
    install
}

/// A case that should establish.
fn establishes(method: Method, suite: Suite, initiator: Initiator) {
    let setup = Setup::new(method, suite);
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, initiator, true);
    check_established(&mut lab, &setup, suite, initiator);
    lab.report(
        &format!(
            "{method:?} {} {initiator:?} initiates: established",
            suite.sw_ike
        ),
        t0,
    );
}

#[test]
fn psk_aes256gcm16_x25519_strongswan_initiates() {
    establishes(Method::Psk, AES_X25519, Initiator::StrongSwan);
}

#[test]
fn psk_aes256gcm16_x25519_we_initiate() {
    establishes(Method::Psk, AES_X25519, Initiator::Us);
}

#[test]
fn psk_chacha20poly1305_ecp256_strongswan_initiates() {
    establishes(Method::Psk, CHACHA_ECP256, Initiator::StrongSwan);
}

#[test]
fn psk_chacha20poly1305_ecp256_we_initiate() {
    establishes(Method::Psk, CHACHA_ECP256, Initiator::Us);
}

#[test]
fn ed25519_aes256gcm16_x25519_strongswan_initiates() {
    establishes(Method::Ed25519, AES_X25519, Initiator::StrongSwan);
}

#[test]
fn ed25519_aes256gcm16_x25519_we_initiate() {
    establishes(Method::Ed25519, AES_X25519, Initiator::Us);
}

#[test]
fn ed25519_chacha20poly1305_ecp256_strongswan_initiates() {
    establishes(Method::Ed25519, CHACHA_ECP256, Initiator::StrongSwan);
}

#[test]
fn ed25519_chacha20poly1305_ecp256_we_initiate() {
    establishes(Method::Ed25519, CHACHA_ECP256, Initiator::Us);
}

#[test]
fn psk_aes128gcm16_prfsha384_strongswan_initiates() {
    establishes(Method::Psk, AES128_PRFSHA384, Initiator::StrongSwan);
}

#[test]
fn psk_aes128gcm16_prfsha384_we_initiate() {
    establishes(Method::Psk, AES128_PRFSHA384, Initiator::Us);
}

#[test]
fn psk_chacha20poly1305_prfsha512_strongswan_initiates() {
    establishes(Method::Psk, CHACHA_PRFSHA512, Initiator::StrongSwan);
}

#[test]
fn psk_chacha20poly1305_prfsha512_we_initiate() {
    establishes(Method::Psk, CHACHA_PRFSHA512, Initiator::Us);
}

#[test]
fn ecdsa_p256_aes256gcm16_x25519_strongswan_initiates() {
    establishes(Method::EcdsaP256, AES_X25519, Initiator::StrongSwan);
}

#[test]
fn ecdsa_p256_aes256gcm16_x25519_we_initiate() {
    establishes(Method::EcdsaP256, AES_X25519, Initiator::Us);
}

/// IKE over IPv6 (the tunnel still carries IPv4): NAT detection hashes
/// over 16-byte addresses, ID_IPV6_ADDR identities.
fn ipv6(initiator: Initiator) {
    let mut setup = Setup::new(Method::Ed25519, CHACHA_ECP256);
    setup.sw_addr = SW_ADDR6.into();
    setup.our_addr = OUR_ADDR6.into();
    setup.sw_id = SW_ADDR6.into();
    setup.our_id = OUR_ADDR6.into();
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, initiator, true);
    check_established(&mut lab, &setup, CHACHA_ECP256, initiator);
    lab.report(&format!("IPv6, {initiator:?} initiates: established"), t0);
}

#[test]
fn ipv6_strongswan_initiates() {
    ipv6(Initiator::StrongSwan);
}

#[test]
fn ipv6_we_initiate() {
    ipv6(Initiator::Us);
}

#[test]
fn address_identities_strongswan_initiates() {
    let mut setup = Setup::new(Method::Psk, AES_X25519);
    setup.sw_id = SW_ADDR.into();
    setup.our_id = OUR_ADDR.into();
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, Initiator::StrongSwan, true);
    check_established(&mut lab, &setup, AES_X25519, Initiator::StrongSwan);
    lab.report(
        "ID_IPV4_ADDR identities, strongSwan initiates: established",
        t0,
    );
}

/// strongSwan offers one proposal with several transforms of each type
/// (as its proposal syntax builds them); we answer with one of each.
#[test]
fn many_transforms_in_one_proposal_strongswan_initiates() {
    let mut setup = Setup::new(Method::Psk, CHACHA_ECP256);
    setup.sw_ike =
        "aes128gcm16-aes256gcm16-chacha20poly1305-prfsha512-prfsha256-ecp256-x25519".into();
    // With a PFS group, as the notes' example has it: strongSwan leaves it
    // out of IKE_AUTH (which has no key exchange) when it offers and when it
    // selects.
    setup.sw_esp = "aes128gcm16-aes256gcm16-chacha20poly1305-x25519-esn-noesn".into();
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, Initiator::StrongSwan, true);
    check_established(&mut lab, &setup, CHACHA_ECP256, Initiator::StrongSwan);
    lab.wait_log("selected proposal: IKE:CHACHA20_POLY1305/PRF_HMAC_SHA2_256/ECP_256");
    lab.wait_log("selected proposal: ESP:CHACHA20_POLY1305/NO_EXT_SEQ");
    lab.report(
        "one proposal, many transforms, strongSwan initiates: established",
        t0,
    );
}

/// strongSwan without `encap`, we force UDP encapsulation (`encapsulation =
/// "udp"` in a profile): our NAT-D source hash matches no endpoint, so
/// strongSwan sees us behind a NAT, both float to 4500 and ESP goes in UDP;
/// we, counting ourselves behind it, send NAT-keepalives (0xFF on 4500, no
/// marker) every 20 s, which strongSwan takes without a complaint.
fn forced_encapsulation(initiator: Initiator) {
    let mut setup = Setup::new(Method::Psk, AES_X25519);
    setup.sw_encap = "no";
    setup.our_extra = vec!["--force-encap".into()];
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, initiator, true);
    check_established(&mut lab, &setup, AES_X25519, initiator);
    let established = Instant::now();
    let k = lab
        .peer()
        .wait_for_within("a NAT-keepalive", Duration::from_secs(30), |v| {
            v["type"] == "send" && v["len"] == 1
        });
    assert!(established.elapsed() >= Duration::from_secs(15), "{k}");
    assert!(
        k["local"].as_str().is_some_and(|l| l.ends_with(":4500")),
        "{k}"
    );
    assert!(
        k["remote"].as_str().is_some_and(|r| r.ends_with(":4500")),
        "{k}"
    );
    assert_eq!(k["error"], Value::Null, "{k}");
    // strongSwan still holds the SA and logged no parse error for it.
    lab.sw_established();
    let log = std::fs::read_to_string(lab.log_path()).unwrap_or_default();
    assert!(!log.contains("parsing IKE header"), "{log}");
    lab.report(
        &format!("forced UDP encapsulation, {initiator:?} initiates: floated, keepalives"),
        t0,
    );
}

#[test]
fn forced_encapsulation_strongswan_initiates() {
    forced_encapsulation(Initiator::StrongSwan);
}

#[test]
fn forced_encapsulation_we_initiate() {
    forced_encapsulation(Initiator::Us);
}

/// strongSwan asks for more than we allow: we narrow its selectors.
#[test]
fn selectors_narrowed_strongswan_initiates() {
    let mut setup = Setup::new(Method::Psk, AES_X25519);
    setup.sw_remote_ts = "10.2.0.0/16".into();
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, Initiator::StrongSwan, true);
    // check_established: strongSwan installed remote-ts=[10.2.0.0/24].
    check_established(&mut lab, &setup, AES_X25519, Initiator::StrongSwan);
    lab.report(
        "10.2.0.0/16 narrowed to /24, strongSwan initiates: established",
        t0,
    );
}

/// strongSwan with a CA certificate sends CERTREQ (in its IKE_SA_INIT
/// response, or its IKE_AUTH request) and a Vendor ID: both ignored.
fn certreq_and_vendor_id(initiator: Initiator) {
    let mut setup = Setup::new(Method::Ed25519, AES_X25519);
    setup.sw_ca_and_vendor_id = true;
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, initiator, true);
    check_established(&mut lab, &setup, AES_X25519, initiator);
    match initiator {
        Initiator::StrongSwan => {
            lab.wait_log("generating IKE_AUTH request 1 [ IDi N(INIT_CONTACT) CERTREQ")
        }
        Initiator::Us => lab.wait_log("CERTREQ N(HASH_ALG) N(CHDLESS_SUP) N(MULT_AUTH) V ]"),
    };
    lab.report(
        &format!("CERTREQ and Vendor ID, {initiator:?} initiates: established"),
        t0,
    );
}

#[test]
fn certreq_and_vendor_id_strongswan_initiates() {
    certreq_and_vendor_id(Initiator::StrongSwan);
}

#[test]
fn certreq_and_vendor_id_we_initiate() {
    certreq_and_vendor_id(Initiator::Us);
}

/// Selectors with protocols and ports, two of them: narrowed (by us or
/// by strongSwan) and installed alike on both sides.
fn port_selectors(initiator: Initiator) {
    let mut setup = Setup::new(Method::Psk, AES_X25519);
    setup.sw_local_ts = "10.1.0.0/24[tcp/80], 10.1.0.0/24[udp/1000-2000]".into();
    setup.expect_sw_ts = (
        vec![
            "10.1.0.0/24[tcp/http]".into(),
            "10.1.0.0/24[udp/1000-2000]".into(),
        ],
        vec![OUR_TS.into()],
    );
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, initiator, true);
    let install = check_established(&mut lab, &setup, AES_X25519, initiator);
    let remote: Vec<(u64, u64, u64)> = install["remote_ts"]
        .as_array()
        .expect("remote_ts")
        .iter()
        .map(|t| {
            (
                t["protocol"].as_u64().unwrap_or_default(),
                t["ports"][0].as_u64().unwrap_or_default(),
                t["ports"][1].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        remote,
        [(6, 80, 80), (17, 1000, 2000)],
        "our remote selectors"
    );
    lab.report(
        &format!("port selectors, {initiator:?} initiates: established"),
        t0,
    );
}

#[test]
fn port_selectors_strongswan_initiates() {
    port_selectors(Initiator::StrongSwan);
}

#[test]
fn port_selectors_we_initiate() {
    port_selectors(Initiator::Us);
}

/// Our responder demands a COOKIE, then INVALID_KE_PAYLOAD (strongSwan's
/// KE is x25519, we allow ECP-256 only): strongSwan comes back twice.
#[test]
fn cookie_and_invalid_ke_from_us_strongswan_initiates() {
    let mut setup = Setup::new(Method::Psk, CHACHA_ECP256);
    setup.sw_ike = "chacha20poly1305-prfsha256-x25519-ecp256".into();
    setup.our_extra = vec!["--cookie-threshold".into(), "0".into()];
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, Initiator::StrongSwan, true);
    check_established(&mut lab, &setup, CHACHA_ECP256, Initiator::StrongSwan);
    let mut answers: Vec<String> = lab
        .peer()
        .events("init_answered_statelessly")
        .iter()
        .map(|v| v["message"].as_str().unwrap_or_default().to_string())
        .collect();
    // strongSwan's shortened retransmission timer can fire on a loaded machine
    // before our answer arrives; a retransmitted request gets the same stateless
    // answer again. Only the sequence of distinct answers is ours to check.
    let retransmitted = lab.log().contains("retransmit 1 of request");
    let total = answers.len();
    answers.dedup();
    if total != answers.len() {
        assert!(
            retransmitted,
            "a repeated stateless answer without a strongSwan retransmission: {total} answers"
        );
    }
    assert_eq!(
        answers,
        [
            format!("{SW_ADDR}:500: COOKIE"),
            format!("{SW_ADDR}:500: INVALID_KE_PAYLOAD")
        ],
        "our stateless answers"
    );
    lab.wait_log("peer didn't accept DH group CURVE_25519, it requested ECP_256");
    lab.report(
        "COOKIE and INVALID_KE from us, strongSwan initiates: established",
        t0,
    );
}

/// strongSwan answers INVALID_KE_PAYLOAD (our first KE is ECP-256, it
/// allows x25519 only): we come back with x25519.
#[test]
fn invalid_ke_from_strongswan_we_initiate() {
    let mut setup = Setup::new(Method::Psk, AES_X25519);
    setup.our_ike = vec![
        "aes256gcm16-prfsha256-ecp256".into(),
        "aes256gcm16-prfsha256-x25519".into(),
    ];
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, Initiator::Us, true);
    check_established(&mut lab, &setup, AES_X25519, Initiator::Us);
    lab.wait_log("DH group ECP_256 unacceptable, requesting CURVE_25519");
    let inits = lab
        .peer()
        .lines
        .iter()
        .filter(|v| v["type"] == "send" && v["exchange"] == "IKE_SA_INIT")
        .count();
    assert_eq!(inits, 2, "IKE_SA_INIT requests sent");
    lab.report("INVALID_KE from strongSwan, we initiate: established", t0);
}

/// strongSwan demands a COOKIE (`cookie_threshold = 1` and one half-open
/// IKE SA, left by a first peer that never completed): we come back with it.
#[test]
fn cookie_from_strongswan_we_initiate() {
    let mut setup = Setup::new(Method::Psk, AES_X25519);
    setup.sw_charon_extra = vec!["cookie_threshold = 1".into()];
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    // A first peer sends IKE_SA_INIT and ignores the answer: strongSwan
    // keeps a half-open IKE SA.
    let mut half_open = setup.clone();
    half_open.our_extra = vec![
        "--drop-recv".into(),
        "1,2,3,4,5,6,7,8".into(),
        "--sends".into(),
        "1".into(),
    ];
    lab.start_peer(&half_open, true);
    lab.wait_log("generating IKE_SA_INIT response 0 [ SA KE No");
    if let Some(mut p) = lab.peer.take() {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
    start(&mut lab, &setup, Initiator::Us, true);
    check_established(&mut lab, &setup, AES_X25519, Initiator::Us);
    lab.wait_log("generating IKE_SA_INIT response 0 [ N(COOKIE) ]");
    let inits = lab
        .peer()
        .lines
        .iter()
        .filter(|v| v["type"] == "send" && v["exchange"] == "IKE_SA_INIT")
        .count();
    assert_eq!(
        inits, 2,
        "IKE_SA_INIT requests sent (without and with the cookie)"
    );
    lab.report("COOKIE from strongSwan, we initiate: established", t0);
}

/// Our first IKE_SA_INIT and IKE_AUTH responses are lost: strongSwan
/// retransmits its requests and we answer with the responses we stored.
#[test]
fn lost_responses_strongswan_retransmits() {
    let mut setup = Setup::new(Method::Psk, AES_X25519);
    setup.our_extra = vec!["--drop-send".into(), "1,3".into()];
    setup.lossy = true;
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, Initiator::StrongSwan, true);
    check_established(&mut lab, &setup, AES_X25519, Initiator::StrongSwan);
    lab.wait_log("retransmit 1 of request with message ID 0");
    lab.wait_log("retransmit 1 of request with message ID 1");
    let sent: Vec<(String, bool)> = lab
        .peer()
        .lines
        .iter()
        .filter(|v| v["type"] == "send")
        .map(|v| {
            (
                v["exchange"].as_str().unwrap_or_default().to_string(),
                v["dropped"] == true,
            )
        })
        .collect();
    assert_eq!(
        sent,
        [
            ("IKE_SA_INIT".to_string(), true),
            ("IKE_SA_INIT".to_string(), false),
            ("IKE_AUTH".to_string(), true),
            ("IKE_AUTH".to_string(), false),
        ],
        "our responses"
    );
    lab.report("lost responses, strongSwan retransmits: established", t0);
}

/// strongSwan's first IKE_SA_INIT and IKE_AUTH responses are lost to us:
/// we retransmit, strongSwan answers with its stored responses.
#[test]
fn lost_responses_we_retransmit() {
    let mut setup = Setup::new(Method::Psk, AES_X25519);
    setup.our_extra = vec!["--drop-recv".into(), "1,3".into()];
    setup.lossy = true;
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, Initiator::Us, true);
    check_established(&mut lab, &setup, AES_X25519, Initiator::Us);
    lab.wait_log("received retransmit of request with ID 0, retransmitting response");
    lab.wait_log("received retransmit of request with ID 1, retransmitting response");
    let retransmitted: Vec<String> = lab
        .peer()
        .events("retransmitted")
        .iter()
        .map(|v| v["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(retransmitted.len(), 2, "{retransmitted:?}");
    assert!(retransmitted[0].ends_with("IKE_SA_INIT sent 2 times"));
    assert!(retransmitted[1].ends_with("IKE_AUTH sent 2 times"));
    lab.report("lost responses, we retransmit: established", t0);
}

/// strongSwan's DPD (empty INFORMATIONAL) is answered; its Delete of the
/// CHILD SA gets our Delete back; its Delete of the IKE SA closes ours.
fn dpd_and_deletes(initiator: Initiator) {
    let mut setup = Setup::new(Method::Psk, AES_X25519);
    setup.sw_dpd = "1s";
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, initiator, true);
    let install = check_established(&mut lab, &setup, AES_X25519, initiator);
    lab.wait_log("parsed INFORMATIONAL response");

    let out = lab.swanctl_output(&["--terminate", "--child", "net", "--timeout", "5"]);
    assert!(out.status.success(), "swanctl --terminate --child failed");
    let deleted = lab
        .peer()
        .wait_for("delete_child_sa", |v| v["type"] == "delete_child_sa");
    assert_eq!(deleted["inbound_spi"], install["inbound_spi"]);
    assert_eq!(deleted["outbound_spi"], install["outbound_spi"]);
    // strongSwan read our Delete payload in the response.
    lab.wait_log(&format!(
        "received DELETE for ESP CHILD_SA with SPI {}",
        install["inbound_spi"].as_str().unwrap_or_default()
    ));
    if initiator == Initiator::Us {
        // The tunnel is wanted up: as the IKE SA's initiator we create a
        // new CHILD SA at once (strongSwan's `close_action = start`).
        let again = lab.peer().wait_for("a new install_child_sa", |v| {
            v["type"] == "install_child_sa" && v["inbound_spi"] != install["inbound_spi"]
        });
        assert_eq!(again["replaces"], Value::Null);
        wait_sw(&lab, "the re-created CHILD SA", |lab| {
            sw_has_child(lab, &again) && sw_children(lab).len() == 1
        });
        check_logged_keys(&lab, &again, true);
    } else {
        let sas = lab.sw_sas();
        assert!(
            sas.iter().all(|sa| sa.value("state") == Some("ESTABLISHED")
                && sa
                    .section("child-sas")
                    .is_none_or(|c| c.sections.is_empty())),
            "strongSwan still has a CHILD SA: {sas:?}"
        );
    }

    let out = lab.swanctl_output(&["--terminate", "--ike", "vd", "--timeout", "5"]);
    assert!(out.status.success(), "swanctl --terminate --ike failed");
    let closed = lab.peer().event("closed");
    assert!(
        closed["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("deleted by the peer")),
        "{closed}"
    );
    lab.wait_log("IKE_SA deleted");
    assert!(lab.sw_sas().is_empty(), "strongSwan still has an IKE SA");
    lab.report(
        &format!("DPD and deletes, {initiator:?} initiates: answered"),
        t0,
    );
}

#[test]
fn dpd_and_deletes_strongswan_initiates() {
    dpd_and_deletes(Initiator::StrongSwan);
}

#[test]
fn dpd_and_deletes_we_initiate() {
    dpd_and_deletes(Initiator::Us);
}

/// No IKE SA ESTABLISHED at strongSwan.
fn assert_sw_has_no_established_sa(lab: &Lab) {
    let sas = lab.sw_sas();
    assert!(
        sas.iter()
            .all(|sa| sa.value("state") != Some("ESTABLISHED")),
        "strongSwan has an ESTABLISHED IKE SA: {sas:?}"
    );
}

/// Our event for a peer whose AUTH we could not verify: its identity and
/// the method, nothing more.
fn assert_we_refused(lab: &mut Lab, setup: &Setup, method: &str) {
    let failed = lab.peer().event("failed");
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "authentication of the peer {} ({method}) failed",
            shown(&setup.sw_id)
        )),
        "{failed}"
    );
    assert!(failed["debug"]
        .as_str()
        .is_some_and(|d| d.contains("AuthenticationFailed { side: Peer")));
    lab.wait_log("received AUTHENTICATION_FAILED notify error");
    assert!(lab.peer().events("install_child_sa").is_empty());
    assert!(lab.peer().events("ike_sa_established").is_empty());
    assert_sw_has_no_established_sa(lab);
}

/// Our event for a peer that refused our AUTH.
fn assert_they_refused(lab: &mut Lab, setup: &Setup, method: &str) {
    let failed = lab.peer().event("failed");
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "the peer refused our authentication as {} ({method}): AUTHENTICATION_FAILED",
            shown(&setup.our_id)
        )),
        "{failed}"
    );
    lab.wait_log("generating IKE_AUTH response 1 [ N(AUTH_FAILED) ]");
    assert!(lab.peer().events("install_child_sa").is_empty());
    assert_sw_has_no_established_sa(lab);
}

#[test]
fn wrong_psk_strongswan_initiates() {
    let mut setup = Setup::new(Method::Psk, AES_X25519);
    setup.sw_psk = "not the same secret".into();
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    let ok = start(&mut lab, &setup, Initiator::StrongSwan, false);
    assert!(!ok, "swanctl --initiate succeeded with a wrong PSK");
    assert_we_refused(&mut lab, &setup, "shared key MIC");
    lab.report("wrong PSK, strongSwan initiates: refused", t0);
}

#[test]
fn wrong_psk_we_initiate() {
    let mut setup = Setup::new(Method::Psk, AES_X25519);
    setup.sw_psk = "not the same secret".into();
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, Initiator::Us, false);
    assert_they_refused(&mut lab, &setup, "shared key MIC");
    lab.wait_log(&format!(
        "tried 1 shared key for '{}' - '{}', but MAC mismatched",
        setup.sw_id, setup.our_id
    ));
    lab.report("wrong PSK, we initiate: refused", t0);
}

#[test]
fn wrong_pinned_key_strongswan_initiates() {
    let mut setup = Setup::new(Method::Ed25519, AES_X25519);
    setup.we_pin_other_key = true;
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    let ok = start(&mut lab, &setup, Initiator::StrongSwan, false);
    assert!(!ok, "swanctl --initiate succeeded with a key we do not pin");
    assert_we_refused(&mut lab, &setup, "digital signature");
    lab.report("wrong pinned key, strongSwan initiates: refused", t0);
}

#[test]
fn wrong_pinned_key_we_initiate() {
    let mut setup = Setup::new(Method::Ed25519, AES_X25519);
    setup.sw_pins_other_key = true;
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, Initiator::Us, false);
    assert_they_refused(&mut lab, &setup, "digital signature");
    lab.wait_log("signature validation failed, looking for another key");
    lab.report("wrong pinned key, we initiate: refused", t0);
}

#[test]
fn ike_proposal_mismatch_strongswan_initiates() {
    let mut setup = Setup::new(Method::Psk, CHACHA_ECP256);
    setup.our_ike = vec![AES_X25519.our_ike[0].into()];
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    let ok = start(&mut lab, &setup, Initiator::StrongSwan, false);
    assert!(
        !ok,
        "swanctl --initiate succeeded without a common proposal"
    );
    let refused = lab.peer().event("init_answered_statelessly");
    let message = refused["message"].as_str().unwrap_or_default();
    // Both offers, in strongSwan's syntax.
    assert!(
        message.contains(
            "no IKE proposal chosen (NO_PROPOSAL_CHOSEN): peer offered \
             [#1 chacha20poly1305-prfsha256-ecp256], we allow [aes256gcm16-prfsha256-x25519]"
        ),
        "{refused}"
    );
    lab.wait_log("received NO_PROPOSAL_CHOSEN notify error");
    assert_sw_has_no_established_sa(&lab);
    lab.report("IKE proposal mismatch, strongSwan initiates: refused", t0);
}

#[test]
fn ike_proposal_mismatch_we_initiate() {
    let mut setup = Setup::new(Method::Psk, AES_X25519);
    setup.our_ike = vec![CHACHA_ECP256.our_ike[0].into()];
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, Initiator::Us, false);
    let failed = lab.peer().event("failed");
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(
            "IKE_SA_INIT: the peer accepted none of our proposals \
             [chacha20poly1305-prfsha256-ecp256] (NO_PROPOSAL_CHOSEN)"
        ),
        "{failed}"
    );
    // strongSwan's log has both sides.
    lab.wait_log("received proposals: IKE:CHACHA20_POLY1305/PRF_HMAC_SHA2_256/ECP_256");
    lab.wait_log("configured proposals: IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519");
    lab.wait_log("generating IKE_SA_INIT response 0 [ N(NO_PROP) ]");
    assert_sw_has_no_established_sa(&lab);
    lab.report("IKE proposal mismatch, we initiate: refused", t0);
}

/// The IKE SA comes up; the CHILD SA does not (no common ESP proposal).
fn esp_mismatch(initiator: Initiator) {
    let mut setup = Setup::new(Method::Psk, AES_X25519);
    setup.our_esp = vec![CHACHA_ECP256.our_esp[0].into()];
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, initiator, false);
    lab.peer().event("ike_sa_established");
    let refused = lab.peer().event("child_sa_refused");
    let message = refused["message"].as_str().unwrap_or_default();
    match initiator {
        Initiator::StrongSwan => {
            assert!(
                message.contains(
                    "no ESP proposal chosen (NO_PROPOSAL_CHOSEN): peer offered \
                     [#1 ESP aes256gcm16-noesn], we allow [chacha20poly1305-noesn]"
                ),
                "{refused}"
            );
            lab.wait_log("received NO_PROPOSAL_CHOSEN notify, no CHILD_SA built");
        }
        Initiator::Us => {
            assert!(
                message.contains("the peer refused the CHILD SA: NO_PROPOSAL_CHOSEN"),
                "{refused}"
            );
            lab.wait_log("failed to establish CHILD_SA, keeping IKE_SA");
        }
    }
    assert!(lab.peer().events("install_child_sa").is_empty());
    let sas = lab.sw_sas();
    assert!(
        sas.len() == 1
            && sas[0].value("state") == Some("ESTABLISHED")
            && sas[0]
                .section("child-sas")
                .is_none_or(|c| c.sections.is_empty()),
        "strongSwan should have the IKE SA without a CHILD SA: {sas:?}"
    );
    lab.report(
        &format!("ESP proposal mismatch, {initiator:?} initiates: IKE SA only"),
        t0,
    );
}

#[test]
fn esp_proposal_mismatch_strongswan_initiates() {
    esp_mismatch(Initiator::StrongSwan);
}

#[test]
fn esp_proposal_mismatch_we_initiate() {
    esp_mismatch(Initiator::Us);
}

/// strongSwan's view of a CHILD SA: INSTALLED under an ESTABLISHED IKE SA
/// with the SPIs of our `install_child_sa` line (crossed).
fn sw_has_child(lab: &Lab, install: &Value) -> bool {
    lab.sw_sas().iter().any(|sa| {
        sa.value("state") == Some("ESTABLISHED")
            && sa.section("child-sas").is_some_and(|c| {
                c.sections.values().any(|ch| {
                    ch.value("state") == Some("INSTALLED")
                        && ch.value("spi-in") == install["outbound_spi"].as_str()
                        && ch.value("spi-out") == install["inbound_spi"].as_str()
                })
            })
    })
}

/// The CHILD SAs strongSwan has INSTALLED, as (spi-in, spi-out) (a
/// replaced one lingers a while as DELETED).
fn sw_children(lab: &Lab) -> Vec<(String, String)> {
    lab.sw_sas()
        .iter()
        .filter_map(|sa| sa.section("child-sas"))
        .flat_map(|c| c.sections.values())
        .filter(|ch| ch.value("state") == Some("INSTALLED"))
        .map(|ch| {
            (
                ch.value("spi-in").unwrap_or_default().to_string(),
                ch.value("spi-out").unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits until `cond` holds for strongSwan's state, at most [`WAIT`].
fn wait_sw(lab: &Lab, what: &str, cond: impl Fn(&Lab) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond(lab) {
        assert!(
            Instant::now() < deadline,
            "strongSwan: {what}: {:?}\n{}",
            lab.sw_sas(),
            lab.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The keys of the last CHILD SA charon logged match our install (`we_initiated`:
/// we initiated the exchange that created it).
fn check_logged_keys(lab: &Lab, install: &Value, we_initiated: bool) {
    let log = lab.log();
    let i_to_r = logged_bytes(&log, "encryption initiator key =>").expect("initiator key");
    let r_to_i = logged_bytes(&log, "encryption responder key =>").expect("responder key");
    let (out, inb) = if we_initiated {
        (i_to_r, r_to_i)
    } else {
        (r_to_i, i_to_r)
    };
    assert_eq!(
        install["outbound_key"],
        hex::encode(out),
        "our outbound key"
    );
    assert_eq!(install["inbound_key"], hex::encode(inb), "our inbound key");
}

/// A CHILD SA rekey, by strongSwan (`swanctl --rekey --child`) or by us (our
/// soft lifetime), with or without PFS: both sides end with the new CHILD SA
/// alone, same SPIs and keys; the old one left our data plane only after the
/// new one was in use on both sides.
fn child_rekey(rekeyer: Initiator, pfs: bool) {
    let mut setup = Setup::new(Method::Psk, AES_X25519);
    if pfs {
        setup.sw_esp = "aes256gcm16-x25519-noesn".into();
        setup.our_extra.extend(["--pfs".into(), "x25519".into()]);
    }
    if rekeyer == Initiator::Us {
        setup
            .our_extra
            .extend(["--child-rekey-s", "8", "--jitter-percent", "0"].map(String::from));
    }
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, Initiator::StrongSwan, true);
    let first = check_established(&mut lab, &setup, AES_X25519, Initiator::StrongSwan);
    if rekeyer == Initiator::StrongSwan {
        let out = lab.swanctl_output(&["--rekey", "--child", "net"]);
        assert!(out.status.success(), "swanctl --rekey failed");
    }
    let second = lab.peer().wait_for("the rekeyed install_child_sa", |v| {
        v["type"] == "install_child_sa" && v["inbound_spi"] != first["inbound_spi"]
    });
    assert_eq!(second["replaces"], first["inbound_spi"]);
    let ours = rekeyer == Initiator::Us;
    assert_eq!(second["role"], if ours { "initiator" } else { "responder" });
    // The responder of a rekey sends on the new SA only once the old is
    // deleted.
    assert_eq!(second["outbound_active"], ours);
    if !ours {
        let used = lab
            .peer()
            .wait_for("use_outbound", |v| v["type"] == "use_outbound");
        assert_eq!(used["inbound_spi"], second["inbound_spi"]);
    }
    let rekeyed = lab.peer().event("child_sa_rekeyed");
    assert!(rekeyed["message"]
        .as_str()
        .is_some_and(|m| m.ends_with(if ours {
            "(our rekey)"
        } else {
            "(the peer's rekey)"
        })));
    wait_sw(&lab, "the rekeyed CHILD SA alone", |lab| {
        sw_has_child(lab, &second) && sw_children(lab).len() == 1
    });
    check_logged_keys(&lab, &second, ours);
    // charon lists the payloads of each message: a KE payload in both
    // messages of the exchange exactly when PFS is on.
    let log = lab.log();
    let exchange: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CREATE_CHILD_SA request") || l.contains("CREATE_CHILD_SA response"))
        .filter(|l| l.contains("parsed") || l.contains("generating"))
        .collect();
    assert_eq!(exchange.len(), 2, "{exchange:?}");
    for l in exchange {
        assert_eq!(l.contains(" KE "), pfs, "{l}");
        assert!(l.contains("N(REKEY_SA)") || l.contains("response"), "{l}");
    }
    // The old SA left our data plane after the linger delay.
    let deleted = lab
        .peer()
        .wait_for("delete_child_sa", |v| v["type"] == "delete_child_sa");
    assert_eq!(deleted["inbound_spi"], first["inbound_spi"]);
    assert!(lab.peer().events("failed").is_empty());
    lab.report(
        &format!("CHILD SA rekey by {rekeyer:?} (PFS: {pfs}): new SA on both sides"),
        t0,
    );
}

#[test]
fn child_rekey_by_strongswan() {
    child_rekey(Initiator::StrongSwan, false);
}

#[test]
fn child_rekey_by_strongswan_with_pfs() {
    child_rekey(Initiator::StrongSwan, true);
}

#[test]
fn child_rekey_by_us() {
    child_rekey(Initiator::Us, false);
}

#[test]
fn child_rekey_by_us_with_pfs() {
    child_rekey(Initiator::Us, true);
}

/// An IKE SA rekey, by strongSwan or by us: a new IKE SA with new SPIs on both
/// sides, the CHILD SA untouched and moved to it, the old IKE SA gone.
fn ike_rekey(rekeyer: Initiator) {
    let mut setup = Setup::new(Method::Psk, AES_X25519);
    if rekeyer == Initiator::Us {
        setup
            .our_extra
            .extend(["--ike-rekey-s", "6", "--jitter-percent", "0"].map(String::from));
    }
    let mut lab = Lab::new(&setup);
    let t0 = Instant::now();
    start(&mut lab, &setup, Initiator::StrongSwan, true);
    let first = check_established(&mut lab, &setup, AES_X25519, Initiator::StrongSwan);
    if rekeyer == Initiator::StrongSwan {
        let out = lab.swanctl_output(&["--rekey", "--ike", "vd"]);
        assert!(out.status.success(), "swanctl --rekey --ike failed");
    }
    let rekeyed = lab.peer().event("ike_sa_rekeyed");
    let ours = rekeyer == Initiator::Us;
    assert!(rekeyed["message"]
        .as_str()
        .is_some_and(|m| m.ends_with(if ours {
            "(our rekey)"
        } else {
            "(the peer's rekey)"
        })));
    let new = rekeyed["new_ike_sa"].clone();
    assert_ne!(new["spi_i"], first["ike_sa"]["spi_i"]);
    let closed = lab.peer().event("closed");
    assert!(
        closed["message"]
            .as_str()
            .is_some_and(|m| m.ends_with(if ours {
                "deleted by us"
            } else {
                "replaced by its rekeyed successor"
            })),
        "{closed}"
    );
    wait_sw(&lab, "one IKE SA, the new one, with the CHILD SA", |lab| {
        let sas = lab.sw_sas();
        sas.len() == 1
            && sas[0].value("state") == Some("ESTABLISHED")
            && sas[0].value("initiator-spi") == new["spi_i"].as_str()
            && sas[0].value("responder-spi") == new["spi_r"].as_str()
            && sw_has_child(lab, &first)
    });
    assert_eq!(lab.peer().of_type("install_child_sa").len(), 1);
    assert!(lab.peer().events("failed").is_empty());
    lab.report(
        &format!("IKE SA rekey by {rekeyer:?}: new IKE SA, CHILD SA kept"),
        t0,
    );
}

#[test]
fn ike_rekey_by_strongswan() {
    ike_rekey(Initiator::StrongSwan);
}

#[test]
fn ike_rekey_by_us() {
    ike_rekey(Initiator::Us);
}

// ---------------------------------------------------------------- the harness's own parsers

#[test]
fn list_sas_raw_is_parsed() {
    // `swanctl --list-sas --raw` of strongSwan 5.9.8, one line.
    let line = "{vd {uniqueid=1 version=2 state=ESTABLISHED local-host=192.0.2.1 \
                local-port=4500 local-id=sw.test initiator=yes \
                initiator-spi=201f45163a6974da nat-fake=yes encr-alg=AES_GCM_16 \
                encr-keysize=256 child-sas {net-1 {name=net state=INSTALLED \
                spi-in=fb0d6e77 spi-out=e262bb41 \
                local-ts=[10.1.0.0/24[tcp/http] 10.1.0.0/24[udp/1000-2000]] \
                remote-ts=[10.2.0.0/24]}}}}";
    let top = Node::parse(line).expect("parses");
    let sa = top.section("vd").expect("the IKE SA");
    sa.expect("state", "ESTABLISHED");
    sa.expect("initiator-spi", "201f45163a6974da");
    let child = sa
        .section("child-sas")
        .and_then(|c| c.section("net-1"))
        .expect("the CHILD SA");
    child.expect("spi-out", "e262bb41");
    assert_eq!(
        child.list("local-ts"),
        ["10.1.0.0/24[tcp/http]", "10.1.0.0/24[udp/1000-2000]"]
    );
    assert_eq!(child.list("remote-ts"), ["10.2.0.0/24"]);
    assert!(
        Node::parse("{vd {state=ESTABLISHED}").is_none(),
        "unbalanced"
    );
    assert!(
        Node::parse("{vd {state=ESTABLISHED}}} x").is_none(),
        "trailing"
    );
}

#[test]
fn logged_keys_are_read_from_the_hex_dump() {
    // charon's filelog at chd level 4, another thread's line in between.
    let log = "\
17:36:19.316 02[CHD] encryption initiator key => 36 bytes @ 0x563b4e7354c0
17:36:19.316 02[CHD]    0: 06 95 12 08 C0 F8 58 10 E6 77 F4 26 8D B7 6C 1B  ......X..w.&..l.
17:36:19.316 09[NET] sending packet: from 192.0.2.1[4500] to 192.0.2.2[4500]
17:36:19.316 02[CHD]   16: 6D C2 CB 60 74 19 CC FA 42 43 BF 2C 74 C4 A0 AC  m..`t...BC.,t...
17:36:19.316 02[CHD]   32: E9 E0 D7 76                                      ...v
17:36:19.316 02[CHD] encryption responder key => 4 bytes @ 0x563b4e733a10
17:36:19.316 02[CHD]    0: 0B FA 1D 13                                      ....
";
    assert_eq!(
        logged_bytes(log, "encryption initiator key =>").map(|b| hex::encode(&b)),
        Some("06951208c0f85810e677f4268db76c1b6dc2cb607419ccfa4243bf2c74c4a0ace9e0d776".into())
    );
    assert_eq!(
        logged_bytes(log, "encryption responder key =>").map(|b| hex::encode(&b)),
        Some("0bfa1d13".into())
    );
    assert_eq!(logged_bytes(log, "SKEYSEED =>"), None);
}

#[test]
fn public_keys_are_written_as_pki_writes_them() {
    // RFC 8410 §10.1's example key.
    let raw = hex::decode("19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1")
        .expect("hex");
    assert_eq!(
        public_pem(Method::Ed25519, &raw),
        "-----BEGIN PUBLIC KEY-----\n\
         MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n\
         -----END PUBLIC KEY-----\n"
    );
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
}
