//! The gateway's Viaduct and IKE process against strongSwan 5.9.8 (Debian 12's
//! `charon-systemd` with kernel-libipsec) in network namespaces: ESP data through
//! both, keyed by IKE, with strongSwan and with us initiating, CHILD and IKE rekeys
//! under a paced ping with none lost, and strongSwan's SAs listed as ours are.
//!
//! ```text
//! netns <t>lan: vred 10.1.0.1/24 ══ Viaduct + viaduct-ike ══ netns <t>blk: vblk
//!     blk: v1 198.51.100.254/24 ── veth ── sw: v0 198.51.100.1/24, lo 10.2.0.1
//! netns <t>sw: charon-systemd (kernel-libipsec: ESP in UDP 4500, `encap = yes`)
//! our outer address: 192.0.2.2 (we initiate: the lower address does) or
//! 203.0.113.2 (strongSwan initiates), routed through blk to the Viaduct
//! ```
//!
//! kernel-libipsec does ESP only inside UDP and fakes a NAT in its NAT-D payload,
//! so IKE floats to port 4500 and the Viaduct sends and takes ESP in UDP there.
//! With `nat`, blk masquerades our outer address behind 198.51.100.254 with
//! other source ports (nftables): a real NAT between the Viaduct and strongSwan.
//! Needs root, iproute2, busybox and the strongSwan packages (`scripts/test`
//! installs them); the netns tests' skip rule applies.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use policy_blob::*;

use super::*;

/// strongSwan's plugins (as the engine's interop test loads them).
const CHARON_PLUGINS: &str = "random nonce openssl gcm chapoly curve25519 sha2 hmac kdf pem \
                              pkcs1 pkcs8 x509 pubkey socket-default kernel-libipsec \
                              kernel-netlink vici";

/// Ed25519 seeds of the signature cases (lab keys): strongSwan's and ours.
const SW_SEED: [u8; 32] = [0x33; 32];
const OUR_SEED: [u8; 32] = [0x44; 32];

fn ed25519_public(seed: &[u8; 32]) -> Vec<u8> {
    ike::crypto::SigningKey::ed25519_from_seed(seed)
        .and_then(|k| k.public_key())
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// PEM of `der` under `label`, as `pki` writes it.
fn pem(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, x| (n << 8) | u32::from(*x)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            b.push(if i <= chunk.len() {
                B64[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// strongSwan's Ed25519 key (PKCS#8) and both public keys (SPKI), RFC 8410.
fn strongswan_keys(etc: &Path) {
    let mut pkcs8 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    pkcs8.extend_from_slice(&SW_SEED);
    let spki = |seed: &[u8; 32]| {
        let mut v = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        v.extend_from_slice(&ed25519_public(seed));
        v
    };
    for d in ["private", "pubkey"] {
        std::fs::create_dir_all(etc.join("swanctl").join(d)).unwrap();
    }
    std::fs::write(
        etc.join("swanctl/private/sw.pem"),
        pem("PRIVATE KEY", &pkcs8),
    )
    .unwrap();
    std::fs::write(
        etc.join("swanctl/pubkey/sw.pub.pem"),
        pem("PUBLIC KEY", &spki(&SW_SEED)),
    )
    .unwrap();
    std::fs::write(
        etc.join("swanctl/pubkey/gw.pub.pem"),
        pem("PUBLIC KEY", &spki(&OUR_SEED)),
    )
    .unwrap();
}

/// The key standing in for our TPM's identity key in these tests.
fn identity_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[0x55; 32]).unwrap()
}

fn identity_point() -> [u8; 65] {
    identity_key()
        .verifying_key()
        .to_encoded_point(false)
        .as_bytes()
        .try_into()
        .unwrap()
}

/// SubjectPublicKeyInfo of a P-256 point (id-ecPublicKey, prime256v1).
fn p256_spki(point: &[u8; 65]) -> Vec<u8> {
    let mut v = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    v.extend_from_slice(point);
    v
}

/// The init's identity signer as the IKE process sees it (the messages of
/// `attest_wire::signer` on a `SOCK_SEQPACKET` socket), signing with
/// [`identity_key`]; ends when the IKE process's end closes. Returns the IKE
/// process's end.
fn soft_signer() -> std::os::fd::OwnedFd {
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    let (ours, theirs) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok(n) = rustix::net::recv(&ours, &mut buf[..], rustix::net::RecvFlags::empty()) {
            let n = n.1;
            let Some(req) = attest_wire::signer::Request::decode(&buf[..n]) else {
                return;
            };
            let sig: p256::ecdsa::Signature = identity_key().sign_prehash(&req.digest).unwrap();
            let b = sig.to_bytes();
            let answer = attest_wire::signer::Answer {
                id: req.id,
                result: Ok((b[..32].try_into().unwrap(), b[32..].try_into().unwrap())),
            };
            if rustix::net::send(&ours, &answer.encode(), rustix::net::SendFlags::empty()).is_err()
            {
                return;
            }
        }
    });
    theirs
}

/// The PSK `spawn_ike` hands our IKE process as `lab-psk`.
const PSK: &str = "a lab pre-shared key, 32+ bytes!";

fn strongswan_missing() -> Option<String> {
    for (path, pkg) in [
        ("/usr/sbin/charon-systemd", "charon-systemd"),
        ("/usr/sbin/swanctl", "strongswan-swanctl"),
    ] {
        if !Path::new(path).exists() {
            return Some(format!("SKIP: {path} not found (install package {pkg})"));
        }
    }
    None
}

/// Our policy: tunnel 10.1.0.0/24 ↔ 10.2.0.1/32 with strongSwan at 198.51.100.1,
/// keyed by IKE (PSK `lab-psk`), ESP AES-256-GCM without ESN (kernel-libipsec has
/// none), PFS x25519; with `two`, a second tunnel 10.1.0.0/24 ↔ 10.2.0.2/32 to
/// the same peer (a second CHILD SA in the same IKE SA).
fn policy(our_outer: &str, dpd: Dpd, two: bool, ed25519_chacha: bool, identity: bool) -> Policy {
    let me = v4(our_outer);
    let sw = v4("198.51.100.1");
    let aead = if ed25519_chacha {
        Aead::ChaCha20Poly1305
    } else {
        Aead::Aes256Gcm16
    };
    let t = Tunnel::new(1, "sw", me, sw, aead)
        .with_local_ts(TrafficSelector::prefix(Prefix::new(v4("10.1.0.0"), 24)))
        .with_remote_ts(TrafficSelector::prefix(Prefix::new(v4("10.2.0.1"), 32)));
    let mut p = Policy::new("gw", "1")
        .with_local(me)
        .with_tunnel(t)
        .with_spd(
            "to-sw",
            Selector::between(
                Prefix::new(v4("10.1.0.0"), 24),
                Prefix::new(v4("10.2.0.1"), 32),
            ),
            SpdAction::Protect(TunnelId(1)),
        )
        .with_spd("rest", Selector::any_v4(), SpdAction::Discard);
    let mut tunnels = vec![TunnelId(1)];
    if two {
        let t2 = Tunnel::new(2, "sw2", me, sw, aead)
            .with_local_ts(TrafficSelector::prefix(Prefix::new(v4("10.1.0.0"), 24)))
            .with_remote_ts(TrafficSelector::prefix(Prefix::new(v4("10.2.0.2"), 32)));
        p = p.with_tunnel(t2);
        // Before "rest" (first match wins).
        p.spd.insert(
            1,
            SpdEntry {
                name: "to-sw2".into(),
                selector: Selector::between(
                    Prefix::new(v4("10.1.0.0"), 24),
                    Prefix::new(v4("10.2.0.2"), 32),
                ),
                action: SpdAction::Protect(TunnelId(2)),
            },
        );
        tunnels.push(TunnelId(2));
    }
    let (private_key, auth) = if identity {
        (
            Some(Credential::Device("identity".into())),
            IkeAuth::Ed25519 {
                peer_public_key: ed25519_public(&SW_SEED).try_into().unwrap(),
            },
        )
    } else if ed25519_chacha {
        (
            Some(Credential::Lab(KeyMaterial::new(OUR_SEED.to_vec()))),
            IkeAuth::Ed25519 {
                peer_public_key: ed25519_public(&SW_SEED).try_into().unwrap(),
            },
        )
    } else {
        (None, IkeAuth::Psk(Credential::Device("lab-psk".into())))
    };
    p.ike = Some(IkeConfig {
        local_id: IkeIdentity::Fqdn("gw.lab".into()),
        private_key,
        peers: vec![IkePeer {
            name: "sw".into(),
            local: me,
            remote: sw,
            remote_id: IkeIdentity::Fqdn("sw.lab".into()),
            auth,
            ike_proposals: vec![IkeProposal {
                aead,
                prf: IkePrf::Sha256,
                group: KeGroup::X25519,
            }],
            esp_proposals: vec![EspProposal { aead, esn: false }],
            pfs: Some(KeGroup::X25519),
            ike_rekey_seconds: 3600,
            dpd,
            tunnels,
        }],
    });
    p.validate().unwrap();
    p
}

/// strongSwan's configuration in `/etc/netns/<sw>/`: the connection to us, its
/// CHILD SA rekeyed every `child_rekey` and its IKE SA every `ike_rekey`; with
/// `two`, a second CHILD SA `net2` for 10.2.0.2.
///
/// Each SA lives 30 s past its rekey time (a jitter of 2 s, 5 s for the IKE
/// SA). strongSwan's default margin, 10 % of the rekey time (2 s here), is
/// shorter than its first retransmission timeout (4 s); and kernel-libipsec
/// reads ESP and IKE from one UDP socket, which a TCP stream through the
/// tunnel keeps full (hundreds of thousands of datagrams dropped in two
/// minutes, counted by the test): an IKE message is lost now and then, and
/// without room for its retransmission the SA would expire before its
/// successor exists. The 30 s play the part of the 6 minutes an hour's
/// lifetime leaves in deployment.
fn configure_strongswan(
    sw: &str,
    dir: &Path,
    remote_addrs: &str,
    initiates: bool,
    (child_rekey, ike_rekey): (&str, &str),
    two: bool,
    (ed25519_chacha, identity): (bool, bool),
) {
    let start = if initiates { "start" } else { "none" };
    let child_life = format!(
        "{}s",
        child_rekey
            .strip_suffix('s')
            .and_then(|n| n.parse::<u32>().ok())
            .expect("a rekey time in seconds")
            + 30
    );
    let (ike_prop, esp_prop, local_auth, remote_auth) = if identity {
        strongswan_keys(&Path::new("/etc/netns").join(sw));
        // Our identity key as `appliance enroll` writes identity.pem.
        std::fs::write(
            Path::new("/etc/netns")
                .join(sw)
                .join("swanctl/pubkey/identity.pem"),
            pem("PUBLIC KEY", &p256_spki(&identity_point())),
        )
        .unwrap();
        (
            "aes256gcm16-prfsha256-x25519",
            "aes256gcm16-x25519",
            "auth = pubkey\n      pubkeys = sw.pub.pem",
            "auth = pubkey\n      pubkeys = identity.pem",
        )
    } else if ed25519_chacha {
        strongswan_keys(&Path::new("/etc/netns").join(sw));
        (
            "chacha20poly1305-prfsha256-x25519",
            "chacha20poly1305-x25519",
            "auth = pubkey\n      pubkeys = sw.pub.pem",
            "auth = pubkey\n      pubkeys = gw.pub.pem",
        )
    } else {
        (
            "aes256gcm16-prfsha256-x25519",
            "aes256gcm16-x25519",
            "auth = psk",
            "auth = psk",
        )
    };
    let net2 = if two {
        format!(
            "      net2 {{\n        local_ts = 10.2.0.2/32\n        remote_ts = 10.1.0.0/24\n        \
             esp_proposals = {esp_prop}\n        rekey_time = {child_rekey}\n        life_time = {child_life}\n        \
             rand_time = 2s\n        start_action = {start}\n      }}\n"
        )
    } else {
        String::new()
    };
    let etc = Path::new("/etc/netns").join(sw);
    std::fs::create_dir_all(etc.join("swanctl/conf.d")).unwrap();
    let log = dir.join("charon.log");
    let vici = dir.join("charon.vici");
    std::fs::write(
        etc.join("strongswan.conf"),
        format!(
            "charon-systemd {{\n  load = {CHARON_PLUGINS}\n  filelog {{\n    gw {{\n      path = {}\n      \
             time_format = %T\n      default = 1\n      ike = 2\n      chd = 2\n      flush_line = yes\n    }}\n  }}\n  \
             journal {{\n    default = -1\n  }}\n  plugins {{\n    vici {{\n      socket = unix://{}\n    }}\n  }}\n}}\n\
             swanctl {{\n  socket = unix://{}\n}}\n",
            log.display(),
            vici.display(),
            vici.display()
        ),
    )
    .unwrap();
    std::fs::write(
        etc.join("swanctl/swanctl.conf"),
        format!(
            "connections {{\n  gw {{\n    version = 2\n    local_addrs = 198.51.100.1\n    remote_addrs = {remote_addrs}\n    \
             encap = yes\n    mobike = no\n    proposals = {ike_prop}\n    rekey_time = {ike_rekey}\n    over_time = 30s\n    \
             rand_time = 5s\n    \
             dpd_delay = 10s\n    local {{\n      {local_auth}\n      id = sw.lab\n    }}\n    remote {{\n      {remote_auth}\n      id = gw.lab\n    }}\n    \
             children {{\n      net {{\n        local_ts = 10.2.0.1/32\n        remote_ts = 10.1.0.0/24\n        \
             esp_proposals = {esp_prop}\n        rekey_time = {child_rekey}\n        life_time = {child_life}\n        \
             rand_time = 2s\n        start_action = {start}\n      }}\n{net2}    }}\n  }}\n}}\n\
             secrets {{\n  ike-gw {{\n    id-1 = sw.lab\n    id-2 = gw.lab\n    secret = \"{PSK}\"\n  }}\n}}\n",
        ),
    )
    .unwrap();
}

fn swanctl(sw: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", sw, "swanctl"])
        .args(args)
        .output()
        .unwrap()
}

struct Charon {
    child: Child,
    sw: String,
}

impl Drop for Charon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.sw));
    }
}

fn start_charon(sw: &str, dir: &Path) -> Charon {
    let out = File::create(dir.join("charon.out")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", sw, "/usr/sbin/charon-systemd"])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let c = Charon {
        child,
        sw: sw.to_owned(),
    };
    let t = Instant::now();
    loop {
        let o = swanctl(sw, &["--load-all", "--noprompt"]);
        if o.status.success() {
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(text.contains("successfully loaded 1 connections"), "{text}");
            return c;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "charon did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One case: the namespaces, strongSwan, our Viaduct and IKE process; the tunnel
/// up from whichever side initiates; a ping and a TCP transfer each way; then a
/// paced ping for `paced` seconds across strongSwan's rekeys, none lost.
/// What a case does besides the tunnel and the transfers.
#[derive(Default)]
struct Case {
    /// strongSwan initiates (our outer address is the higher one).
    sw_initiates: bool,
    /// Seconds of 5 Hz ping across strongSwan's rekeys (its CHILD SA every
    /// 20 s, its IKE SA every 60 s), a TCP stream to strongSwan's side running
    /// all the while.
    paced: u32,
    /// A masquerading NAT between us and strongSwan.
    nat: bool,
    /// An IKE_SA_INIT flood from strongSwan's address.
    flood: bool,
    /// charon killed: our DPD (every 3 s) finds it dead, the SAs go; charon
    /// started again: the tunnel comes back.
    dpd_kill: bool,
    /// Two tunnels to strongSwan (10.2.0.1 and 10.2.0.2), two CHILD SAs in one
    /// IKE SA; both carry a ping and TCP each way.
    two: bool,
    /// Ed25519 signatures with pinned keys, and ChaCha20-Poly1305 for IKE and
    /// ESP, instead of the PSK and AES-GCM.
    ed25519_chacha: bool,
    /// We sign with the device identity key through the signer socket
    /// (ECDSA P-256; a software key stands in for the TPM here), strongSwan
    /// pins our key from a PEM file as `appliance enroll` writes identity.pem;
    /// strongSwan signs with Ed25519.
    identity: bool,
}

fn gateway_against_strongswan(our_outer: &str, case: Case) -> (String, String) {
    let Case {
        sw_initiates,
        paced,
        nat,
        flood,
        dpd_kill,
        two,
        ed25519_chacha,
        identity,
    } = case;
    let tag = format!(
        "{}{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let dir = std::env::temp_dir().join(format!("viaduct-sw-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut g = Guard {
        netns: vec![],
        children: vec![],
    };
    let lan = g.netns(format!("vs{tag}lan"));
    let blk = g.netns(format!("vs{tag}blk"));
    let sw = g.netns(format!("vs{tag}sw"));
    ip_ns(
        &blk,
        &format!("link add v1 type veth peer name v0 netns {sw}"),
    );
    for ns in [&blk, &sw] {
        ns_sysctl(ns, "net/ipv6/conf/all/disable_ipv6", "1");
    }
    ip_ns(&blk, "addr add 198.51.100.254/24 dev v1");
    ip_ns(&blk, "link set v1 up");
    ip_ns(&sw, "addr add 198.51.100.1/24 dev v0");
    ip_ns(&sw, "link set v0 up");
    ip_ns(&sw, "addr add 10.2.0.1/32 dev lo");
    if two {
        ip_ns(&sw, "addr add 10.2.0.2/32 dev lo");
    }
    ip_ns(&sw, &format!("route add {our_outer}/32 via 198.51.100.254"));
    // CHILD SAs rekeyed by strongSwan every 20 s, its IKE SA every 60 s.
    let remote_addrs = if nat { "%any" } else { our_outer };
    configure_strongswan(
        &sw,
        &dir,
        remote_addrs,
        sw_initiates,
        ("20s", "60s"),
        two,
        (ed25519_chacha, identity),
    );
    if nat {
        // Our outer address leaves blk as 198.51.100.254, from ports 30000-40000.
        let rules = format!(
            "add table ip nat; add chain ip nat post {{ type nat hook postrouting priority 100; }}; \
             add rule ip nat post oifname v1 ip saddr {our_outer} udp dport {{ 500, 4500 }} masquerade to :30000-40000"
        );
        sh(&["ip", "netns", "exec", &blk, "nft", &rules]);
    }
    let mut charon = start_charon(&sw, &dir);
    let dpd = if dpd_kill {
        Dpd {
            delay_seconds: 3,
            action: DpdAction::Restart,
        }
    } else {
        Dpd::default()
    };
    let pol = write_policy(
        &dir,
        "gw.pol",
        &policy(our_outer, dpd, two, ed25519_chacha, identity),
    );
    let (log, ike_log) = (dir.join("viaduct.log"), dir.join("ike.log"));
    let (dp, ike_end) = channel_pair();
    let chan = {
        use std::os::fd::AsRawFd;
        dp.as_raw_fd().to_string()
    };
    g.children.push(inherit(&dp, || {
        spawn_viaduct(&pol, &lan, &blk, &log, &["--ike-channel", &chan])
    }));
    drop(dp);
    crate::support::wait_link(&lan, "vred");
    crate::support::wait_link(&blk, "vblk");
    ip_ns(&lan, "link set vred mtu 1400 up");
    ip_ns(&lan, "addr add 10.1.0.1/24 dev vred");
    ip_ns(&lan, "route add 10.2.0.0/24 dev vred");
    ip_ns(&blk, "link set vblk up");
    ip_ns(&blk, &format!("route add {our_outer}/32 dev vblk"));
    let signer = identity.then(soft_signer);
    g.children.push(spawn_ike_with(
        &pol,
        &ike_end,
        &dir,
        &ike_log,
        signer.as_ref().map(|fd| (fd, identity_point())),
    ));
    drop(signer);
    drop(ike_end);
    let logs = || {
        format!(
            "viaduct:\n{}\nviaduct-ike:\n{}\ncharon:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(&ike_log).unwrap_or_default(),
            std::fs::read_to_string(dir.join("charon.log")).unwrap_or_default()
        )
    };
    let t = Instant::now();
    let mut up = None;
    while t.elapsed() < Duration::from_secs(20) {
        if ping_counts(&lan, "-c 1 -W 1 10.2.0.1").1 == 1 {
            up = Some(t.elapsed());
            break;
        }
    }
    let up = up.unwrap_or_else(|| panic!("no tunnel with strongSwan within 20 s\n{}", logs()));
    // strongSwan agrees: an ESTABLISHED IKE SA with an INSTALLED CHILD SA, in UDP.
    let sas = String::from_utf8_lossy(&swanctl(&sw, &["--list-sas"]).stdout).into_owned();
    assert!(
        sas.contains("ESTABLISHED") && sas.contains("INSTALLED"),
        "{sas}"
    );
    assert!(sas.contains("TUNNEL-in-UDP"), "ESP in UDP: {sas}");
    if nat {
        // strongSwan sees us behind the NAT, on a mapped port (not 500, not 4500).
        let at = sas
            .split("remote 'gw.lab' @ 198.51.100.254[")
            .nth(1)
            .and_then(|r| r.split(']').next())
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("strongSwan does not see us behind the NAT: {sas}"));
        assert!((30000..=40000).contains(&at), "{sas}");
    }
    // Both ways: a ping from strongSwan's side, TCP each way with a checksum.
    let (tx, rx) = ping_counts(&sw, "-c 3 -W 2 -I 10.2.0.1 10.1.0.1");
    assert_eq!((tx, rx), (3, 3), "ping from strongSwan's side\n{}", logs());
    let total = 1024 * 1024;
    let (sent, got, n) = tcp_between(&lan, &sw, "10.2.0.1", Amount::Bytes(total));
    assert_eq!(
        (n, got),
        (total, sent),
        "TCP to strongSwan's side\n{}",
        logs()
    );
    let (sent, got, n) = tcp_between(&sw, &lan, "10.1.0.1", Amount::Bytes(total));
    assert_eq!(
        (n, got),
        (total, sent),
        "TCP from strongSwan's side\n{}",
        logs()
    );
    if two {
        // The second tunnel: its own CHILD SA in the same IKE SA, both ways.
        let t = Instant::now();
        while ping_counts(&lan, "-c 1 -W 1 10.2.0.2").1 != 1 {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "no second tunnel within 20 s\n{}",
                logs()
            );
        }
        let (tx, rx) = ping_counts(&sw, "-c 3 -W 2 -I 10.2.0.2 10.1.0.1");
        assert_eq!((tx, rx), (3, 3), "ping from 10.2.0.2\n{}", logs());
        let (sent, got, n) = tcp_between(&lan, &sw, "10.2.0.2", Amount::Bytes(total));
        assert_eq!((n, got), (total, sent), "TCP to 10.2.0.2\n{}", logs());
        let sas = String::from_utf8_lossy(&swanctl(&sw, &["--list-sas"]).stdout).into_owned();
        assert_eq!(sas.matches("ESTABLISHED").count(), 1, "one IKE SA: {sas}");
        assert_eq!(sas.matches("INSTALLED").count(), 2, "two CHILD SAs: {sas}");
        assert!(sas.contains("net:") && sas.contains("net2:"), "{sas}");
        let ike = std::fs::read_to_string(&ike_log).unwrap_or_default();
        assert!(
            ike.contains("of tunnel 1 installed") && ike.contains("of tunnel 2 installed"),
            "{ike}"
        );
    }
    if flood {
        flood_while_pinging(&lan, &sw, our_outer, &g, &logs);
    }
    // A paced ping across strongSwan's CHILD rekeys (and its IKE rekey), a TCP
    // stream all the while: no ping lost, the stream intact, and the Viaduct's
    // drop counters unchanged (nothing lost to a rekey).
    if paced > 0 {
        let viaduct_pid = Pid::from_child(&g.children[0]);
        // Every inbound drop (an SA missing, a replay, a failed check) and the
        // outbound ones for want of an SA; the LAN's own chatter outside the
        // policy (IPv6 router solicitations: `no_policy`) is not the rekeys'.
        let drops = |log: &Path| {
            let l = std::fs::read_to_string(log).unwrap_or_default();
            let no_sa = l
                .lines()
                .rfind(|x| x.starts_with("out drop no_sa="))
                .and_then(|x| x.rsplit('=').next()?.parse::<u64>().ok())
                .unwrap_or(0);
            (counter(&l, "in drop total", "total"), no_sa)
        };
        kill_process(viaduct_pid, Signal::USR1).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let before = drops(&log);
        let sw_rcvbuf_before = udp_rcvbuf_errors(&sw);
        let secs = u64::from(paced);
        let (lan2, sw2) = (lan.clone(), sw.clone());
        let stream = std::thread::spawn(move || {
            tcp_between(
                &lan2,
                &sw2,
                "10.2.0.1",
                Amount::For(Duration::from_secs(secs)),
            )
        });
        let count = paced * 5;
        let (tx, rx, missing, started) =
            ping_missing(&lan, &format!("-c {count} -i 0.2 -W 2 10.2.0.1"), count);
        let (sent, got, n) = stream.join().expect("stream");
        kill_process(viaduct_pid, Signal::USR1).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let after = drops(&log);
        let sw_rcvbuf = udp_rcvbuf_errors(&sw) - sw_rcvbuf_before;
        eprintln!(
            "rekeys under load: ping {rx}/{tx}; TCP {n} bytes in {secs} s; Viaduct drops (in, out for want of an SA) {before:?} → {after:?}; \
             datagrams strongSwan's side dropped for a full UDP receive buffer: {sw_rcvbuf}"
        );
        assert_eq!(
            (tx, rx),
            (count, count),
            "lost across rekeys: seq {missing:?} of a ping every 0.2 s from {started} UTC; \
             Viaduct drops (in, out for want of an SA) {before:?} → {after:?}; \
             strongSwan's side dropped {sw_rcvbuf} datagram(s) for a full UDP receive buffer\n{}",
            logs()
        );
        assert_eq!(sent, got, "the stream arrived damaged");
        assert!(n > 1 << 20, "only {n} bytes streamed");
        assert_eq!(before, after, "packets dropped across rekeys\n{}", logs());
    }
    if dpd_kill {
        // charon dies: our DPD finds out, the SAs leave the data plane.
        let _ = charon.child.kill();
        let _ = charon.child.wait();
        let killed = Instant::now();
        let t = Instant::now();
        while !std::fs::read_to_string(&ike_log)
            .unwrap_or_default()
            .contains("no response after sending the request")
        {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no DPD failure within 60 s\n{}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let dead_after = killed.elapsed();
        assert_eq!(
            ping_counts(&lan, "-c 1 -W 1 10.2.0.1").1,
            0,
            "traffic crossed to a dead peer"
        );
        // charon again (a new process, nothing of the old SAs): we restart,
        // after our back-off, with INITIAL_CONTACT; the tunnel is back.
        std::mem::forget(charon);
        charon = start_charon(&sw, &dir);
        let t = Instant::now();
        let mut back = None;
        while t.elapsed() < Duration::from_secs(60) {
            if ping_counts(&lan, "-c 1 -W 1 10.2.0.1").1 == 1 {
                back = Some(t.elapsed());
                break;
            }
        }
        let back = back.unwrap_or_else(|| panic!("no tunnel after charon came back\n{}", logs()));
        eprintln!(
            "DPD: charon killed, found dead after {dead_after:?}; tunnel back {back:?} after charon restarted"
        );
    }
    drop(charon);
    let charon_log = std::fs::read_to_string(dir.join("charon.log")).unwrap_or_default();
    let ike = std::fs::read_to_string(&ike_log).unwrap_or_default();
    eprintln!(
        "strongSwan ({}): tunnel up in {up:?}; {} CHILD SA installs on our side",
        if sw_initiates {
            "it initiates"
        } else {
            "we initiate"
        },
        ike.matches("CHILD SA in").count()
    );
    for c in &g.children {
        let _ = kill_process(Pid::from_child(c), Signal::TERM);
    }
    for c in g.children.iter_mut() {
        let _ = c.wait();
    }
    g.children.clear();
    let vlog = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    (format!("{vlog}\n{ike}"), charon_log)
}

/// A well-formed IKE_SA_INIT request from strongSwan's address to ours (our
/// proposal, x25519), made by the `ike` engine; the flood varies its SPI.
fn ike_sa_init_request(our_outer: &str) -> Vec<u8> {
    use ike::crypto::{Aead as IkeAead, Group, PreSharedKey, Prf};
    use ike::sa::{
        Action, Auth, Config, Entropy, Identity, Ike, IkeProposal as Proposal, Timestamp,
    };
    struct Rng(u64);
    impl Entropy for Rng {
        fn fill(&mut self, b: &mut [u8]) {
            for x in b {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                *x = self.0 as u8;
            }
        }
    }
    let mut c = Config::new(
        "198.51.100.1:500".parse().unwrap(),
        format!("{our_outer}:500").parse().unwrap(),
        Identity::Fqdn("sw.lab".into()),
        Identity::Fqdn("gw.lab".into()),
        Auth::Psk(PreSharedKey::new(b"not the key").unwrap()),
    );
    c.ike_proposals = vec![Proposal {
        aead: IkeAead::AesGcm16_256,
        prf: Prf::HmacSha2_256,
        group: Group::Curve25519,
    }];
    let mut e = Ike::new(c, Rng(0x9e37_79b9_7f4a_7c15), Timestamp::from_millis(0)).unwrap();
    e.initiate(Timestamp::from_millis(0))
        .into_iter()
        .find_map(|a| match a {
            Action::Send(d) => Some(d.bytes),
            _ => None,
        })
        .expect("an IKE_SA_INIT request")
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// 3,000 IKE_SA_INIT requests in 1.5 s from strongSwan's own address (the only
/// source the data plane passes to IKE), each a new IKE SA, while a 5 Hz ping
/// crosses the established tunnel: no ping lost, the IKE process answers with
/// cookies once its half-open limits are reached, its memory and the Viaduct's
/// stay bounded, and strongSwan's IKE SA is still up.
fn flood_while_pinging(lan: &str, sw: &str, our_outer: &str, g: &Guard, logs: &dyn Fn() -> String) {
    let (viaduct_pid, ike_pid) = (g.children[0].id(), g.children[1].id());
    let rss_before = (vm_rss_kib(viaduct_pid), vm_rss_kib(ike_pid));
    let request = ike_sa_init_request(our_outer);
    let to: std::net::SocketAddr = format!("{our_outer}:500").parse().unwrap();
    let flood = in_netns(sw, move || {
        let s = std::net::UdpSocket::bind("198.51.100.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        let mut m = request;
        let (mut responses, mut cookies) = (0u32, 0u32);
        let mut buf = [0u8; 2048];
        let mut drain = |responses: &mut u32, cookies: &mut u32| {
            while let Ok(n) = s.recv(&mut buf) {
                *responses += 1;
                // A Notify first (next payload 41) of type COOKIE (16390).
                if n > 36 && buf[16] == 41 && buf[34..36] == [0x40, 0x06] {
                    *cookies += 1;
                }
            }
        };
        for i in 0u64..3000 {
            m[..8].copy_from_slice(&(0x5a5a_0000_0000_0000 | i).to_be_bytes());
            let _ = s.send_to(&m, to);
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(50));
                drain(&mut responses, &mut cookies);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        drain(&mut responses, &mut cookies);
        (responses, cookies)
    });
    let (tx, rx) = ping_counts(lan, "-c 25 -i 0.2 -W 2 10.2.0.1");
    let (responses, cookies) = flood.join().expect("flood");
    let rss_after = (vm_rss_kib(viaduct_pid), vm_rss_kib(ike_pid));
    eprintln!(
        "flood: 3000 IKE_SA_INIT sent, {responses} answered, {cookies} with a COOKIE; ping {rx}/{tx}; \
         RSS viaduct {} → {} KiB, viaduct-ike {} → {} KiB",
        rss_before.0, rss_after.0, rss_before.1, rss_after.1
    );
    assert_eq!(
        (tx, rx),
        (25, 25),
        "the tunnel lost traffic under the flood\n{}",
        logs()
    );
    assert!(
        cookies > 100,
        "{cookies} cookies of {responses} answers\n{}",
        logs()
    );
    assert!(
        responses.saturating_sub(cookies) <= 40,
        "{responses} answers but only {cookies} cookies: half-open SAs were made"
    );
    assert!(
        rss_after.0 < rss_before.0 + 8 * 1024,
        "the Viaduct grew: {rss_before:?} → {rss_after:?}"
    );
    assert!(
        rss_after.1 < rss_before.1 + 16 * 1024,
        "the IKE process grew: {rss_before:?} → {rss_after:?}"
    );
    let sas = String::from_utf8_lossy(&swanctl(sw, &["--list-sas"]).stdout).into_owned();
    assert!(
        sas.contains("ESTABLISHED") && sas.contains("INSTALLED"),
        "{sas}"
    );
}

/// How much a TCP transfer carries.
#[derive(Clone, Copy)]
enum Amount {
    /// This many bytes (pattern bytes).
    Bytes(usize),
    /// 64 KiB chunks for this long.
    For(Duration),
}

/// A TCP transfer from namespace `from` to `server` in `to` (port 5002):
/// (sender's checksum, receiver's, bytes received).
fn tcp_between(from: &str, to: &str, server: &'static str, amount: Amount) -> (u64, u64, usize) {
    let (tx, rx) = std::sync::mpsc::channel();
    let srv = in_netns(to, move || {
        let l = std::net::TcpListener::bind((server, 5002)).unwrap();
        tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut h = Sha::new();
        let (mut n, mut buf) = (0, vec![0u8; 65536]);
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
    let client = in_netns(from, move || {
        let mut s = std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::new(server.parse().unwrap(), 5002),
            Duration::from_secs(10),
        )
        .unwrap();
        s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut h = Sha::new();
        match amount {
            Amount::Bytes(total) => {
                let data: Vec<u8> = (0..total).map(pattern).collect();
                h.update(&data);
                s.write_all(&data).unwrap();
            }
            Amount::For(d) => {
                let chunk: Vec<u8> = (0..65536).map(pattern).collect();
                let t = Instant::now();
                while t.elapsed() < d {
                    s.write_all(&chunk).unwrap();
                    h.update(&chunk);
                }
            }
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        h.0
    });
    let sent = client.join().expect("client");
    let (got, n) = srv.join().expect("server");
    (sent, got, n)
}

fn skip() -> bool {
    if skipped() {
        return true;
    }
    if let Some(why) = strongswan_missing() {
        eprintln!("{why}");
        return true;
    }
    false
}

#[test]
fn strongswan_initiates_and_rekeys_under_a_paced_ping() {
    if skip() {
        return;
    }
    // Two minutes of pings and TCP: strongSwan's CHILD rekeys every 20 s,
    // its IKE rekey at about 60 s (less its jitter).
    let (ours, charon) = gateway_against_strongswan(
        "203.0.113.2",
        Case {
            sw_initiates: true,
            paced: 120,
            ..Case::default()
        },
    );
    assert!(
        charon.matches("CHILD_SA net{").count() >= 1,
        "no CHILD SA in charon's log:\n{charon}"
    );
    assert!(
        ours.matches("replaced by").count() >= 2,
        "no rekey on our side:\n{ours}"
    );
    assert!(
        ours.contains("IKE SA") && ours.contains("replaced by"),
        "{ours}"
    );
}

/// We initiate; then an IKE_SA_INIT flood from strongSwan's address
/// ([`flood_while_pinging`]).
#[test]
fn we_initiate_against_strongswan_and_a_flood_meets_cookies() {
    if skip() {
        return;
    }
    let (ours, _) = gateway_against_strongswan(
        "192.0.2.2",
        Case {
            paced: 2,
            flood: true,
            ..Case::default()
        },
    );
    assert!(ours.contains("established with fqdn:sw.lab"), "{ours}");
}

/// NAT traversal through a masquerading namespace: NAT-D finds the NAT, IKE
/// floats to 4500, ESP in UDP crosses the mapping both ways.
#[test]
fn through_a_masquerading_nat_to_strongswan() {
    if skip() {
        return;
    }
    if !Path::new("/usr/sbin/nft").exists() {
        eprintln!("SKIP: /usr/sbin/nft not found (install package nftables)");
        return;
    }
    let (ours, _) = gateway_against_strongswan(
        "192.0.2.2",
        Case {
            paced: 2,
            nat: true,
            ..Case::default()
        },
    );
    assert!(ours.contains("established with fqdn:sw.lab"), "{ours}");
}

/// strongSwan killed: our DPD (3 s) finds it dead within the retransmissions,
/// the SAs leave the data plane (nothing crosses); strongSwan started again: we
/// start again after our back-off and the tunnel is back.
#[test]
fn dpd_finds_strongswan_dead_and_the_tunnel_comes_back() {
    if skip() {
        return;
    }
    let (ours, _) = gateway_against_strongswan(
        "192.0.2.2",
        Case {
            dpd_kill: true,
            ..Case::default()
        },
    );
    assert!(
        ours.matches("established with fqdn:sw.lab").count() >= 2,
        "{ours}"
    );
}

/// Two tunnels to one peer, two CHILD SAs in one IKE SA. We initiate:
/// IKE_AUTH makes the first CHILD SA, our CREATE_CHILD_SA the second, which
/// strongSwan files under its `net2`; strongSwan initiates both (`start`): we
/// file its second under our second tunnel by its selectors.
fn two_tunnels(sw_initiates: bool) {
    if skip() {
        return;
    }
    let our_outer = if sw_initiates {
        "203.0.113.2"
    } else {
        "192.0.2.2"
    };
    let (ours, _) = gateway_against_strongswan(
        our_outer,
        Case {
            sw_initiates,
            two: true,
            ..Case::default()
        },
    );
    assert_eq!(
        ours.matches("established with fqdn:sw.lab").count(),
        1,
        "{ours}"
    );
}

#[test]
fn two_tunnels_to_strongswan_we_initiate() {
    two_tunnels(false);
}

#[test]
fn two_tunnels_to_strongswan_it_initiates() {
    two_tunnels(true);
}

/// Ed25519 signatures (pinned keys on both sides) and ChaCha20-Poly1305 for IKE
/// and ESP through the whole data path: ping and TCP both ways; with
/// strongSwan initiating, its CHILD rekeys (every 20 s) under a paced ping
/// lose nothing.
fn ed25519_and_chacha20(sw_initiates: bool, paced: u32) {
    if skip() {
        return;
    }
    let our_outer = if sw_initiates {
        "203.0.113.2"
    } else {
        "192.0.2.2"
    };
    let (ours, charon) = gateway_against_strongswan(
        our_outer,
        Case {
            sw_initiates,
            ed25519_chacha: true,
            paced,
            ..Case::default()
        },
    );
    assert!(
        ours.contains("authenticated by Ed25519 signatures"),
        "{ours}"
    );
    assert!(ours.contains("ChaCha20Poly1305"), "{ours}");
    assert!(
        charon.contains("authentication of 'gw.lab' with ED25519 successful"),
        "{charon}"
    );
    if paced >= 20 {
        assert!(
            ours.matches("replaced by").count() >= 1,
            "no rekey:\n{ours}"
        );
    }
}

#[test]
fn ed25519_and_chacha20_with_strongswan_we_initiate() {
    ed25519_and_chacha20(false, 2);
}

#[test]
fn ed25519_and_chacha20_with_strongswan_it_initiates() {
    ed25519_and_chacha20(true, 25);
}

/// We sign with the device identity key's signer (the init's protocol; a software
/// key behind it here, swtpm's in the gateway's tests); strongSwan pins it from
/// identity.pem as `appliance enroll` writes it, and signs with Ed25519.
fn identity_with_strongswan(sw_initiates: bool) {
    if skip() {
        return;
    }
    let our_outer = if sw_initiates {
        "203.0.113.2"
    } else {
        "192.0.2.2"
    };
    let (ours, charon) = gateway_against_strongswan(
        our_outer,
        Case {
            sw_initiates,
            identity: true,
            ..Case::default()
        },
    );
    assert!(
        ours.contains("the device identity key signs through the init's signer"),
        "{ours}"
    );
    assert!(
        ours.contains(
            "authenticated by signatures: ours ECDSA P-256 by the TPM identity key, the peer's Ed25519 (pinned)"
        ),
        "{ours}"
    );
    assert!(
        charon.contains("authentication of 'gw.lab' with ECDSA") && charon.contains("successful"),
        "{charon}"
    );
}

#[test]
fn identity_key_with_strongswan_we_initiate() {
    identity_with_strongswan(false);
}

#[test]
fn identity_key_with_strongswan_it_initiates() {
    identity_with_strongswan(true);
}
