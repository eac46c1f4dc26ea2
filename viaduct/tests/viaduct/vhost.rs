//! Two confined `viaduct` processes whose four ports are vhost-user-net
//! back ends (the `microvm` runtime's ports), with the guests played by the
//! driver over shared memory: red A → black A → (the test as the internet)
//! → black B → red B and back; what black sees is ESP only; a bulk run
//! arrives whole; a guest that goes away and comes back (its VM restarted)
//! is served again with the SAs kept.
//!
//! No root, no VM: sockets in a temporary directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use policy_blob::{Aead, Policy};
use viaduct_vhost::backend::{F_MAC, F_MRG_RXBUF, F_MTU, F_PROTOCOL_FEATURES, F_VERSION_1};
use viaduct_vhost::driver::{Guest, Transport};
use viaduct_vhost::net::TX;

use crate::common::*;

const FEATURES: u64 = F_MTU | F_MAC | F_MRG_RXBUF | F_PROTOCOL_FEATURES | F_VERSION_1;

struct Gateway {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start(dir: &Path, name: &str, policy: &Policy) -> Gateway {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.bin");
        std::fs::write(&path, policy.encode()).unwrap();
        let uses = policy.manual_key_uses();
        let log = dir.join("viaduct.log");
        let child = Command::new(env!("CARGO_BIN_EXE_viaduct"))
            .args(["--key-claim", &policy_blob::hex(&uses.digest())])
            .args(["--policy", path.to_str().unwrap()])
            .args(["--red-vhost", dir.join("red.sock").to_str().unwrap()])
            .args(["--black-vhost", dir.join("black.sock").to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawn viaduct");
        let g = Gateway { child, dir, log };
        let t0 = Instant::now();
        while !(g.dir.join("red.sock").exists() && g.dir.join("black.sock").exists()) {
            assert!(t0.elapsed() < Duration::from_secs(10), "{}", g.log());
            std::thread::sleep(Duration::from_millis(10));
        }
        g
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn guest(&mut self, side: &str) -> Guest {
        let sock = rustix::net::socket(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            None,
        )
        .unwrap();
        let addr = rustix::net::SocketAddrUnix::new(self.dir.join(format!("{side}.sock"))).unwrap();
        rustix::net::connect(&sock, &addr).unwrap();
        let mut g = Guest::new(Transport::Socket(sock), FEATURES)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
        if side == "black" {
            g.mac = viaduct_vhost::net::GUEST_MAC_BLACK;
        }
        g
    }

    fn alive(&mut self) {
        if let Some(st) = self.child.try_wait().unwrap() {
            panic!("viaduct exited ({st}):\n{}", self.log());
        }
    }
}

/// Waits for the next packet the Viaduct gives `g`.
fn next(g: &mut Guest, gw: &mut Gateway) -> Vec<u8> {
    let t0 = Instant::now();
    loop {
        if let Some(p) = g.receive_packet() {
            return p;
        }
        gw.alive();
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no packet came\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn send(g: &mut Guest, p: &[u8]) {
    let t0 = Instant::now();
    while !g.transmit(p) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "transmit ring stuck"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    g.kick(TX);
}

fn is_esp_between(p: &[u8], src: &str, dst: &str) -> bool {
    p.len() > 28
        && p[0] == 0x45
        && p[9] == 50
        && p[12..16] == src.parse::<std::net::Ipv4Addr>().unwrap().octets()
        && p[16..20] == dst.parse::<std::net::Ipv4Addr>().unwrap().octets()
}

#[test]
fn two_viaducts_with_vhost_user_ports_carry_a_tunnel_and_survive_a_guest_restart() {
    let dir = std::env::temp_dir().join(format!("viaduct-vhost-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut a = Gateway::start(&dir, "a", &gateway_policy(Aead::Aes128Gcm16, true));
    let mut b = Gateway::start(&dir, "b", &gateway_policy(Aead::Aes128Gcm16, false));
    let mut red_a = a.guest("red");
    let mut black_a = a.guest("black");
    let mut red_b = b.guest("red");
    let mut black_b = b.guest("black");
    let secret = b"the red payload that black must never see";

    // One packet each way, with the internet (the test) in the middle.
    let there = udp4("10.1.0.5", "10.2.0.7", 4000, 5000, secret);
    send(&mut red_a, &there);
    let esp = next(&mut black_a, &mut a);
    assert!(
        is_esp_between(&esp, "203.0.113.1", "203.0.113.2"),
        "{esp:02x?}"
    );
    assert!(!esp.windows(secret.len()).any(|w| w == secret));
    send(&mut black_b, &esp);
    assert_eq!(next(&mut red_b, &mut b)[20..], there[20..]);
    let back = udp4("10.2.0.7", "10.1.0.5", 5000, 4000, b"reply");
    send(&mut red_b, &back);
    let esp = next(&mut black_b, &mut b);
    assert!(is_esp_between(&esp, "203.0.113.2", "203.0.113.1"));
    send(&mut black_a, &esp);
    assert_eq!(next(&mut red_a, &mut a)[20..], back[20..]);

    // Red traffic outside the policy never reaches black (the policy's
    // final rule discards it).
    send(&mut red_a, &udp4("10.1.0.5", "192.0.2.9", 1, 2, secret));

    // A bulk run: 1,000 packets of 1,400 bytes, every one delivered intact.
    for i in 0..1000u32 {
        let mut payload = vec![0u8; 1400 - 28];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        payload[4..]
            .iter_mut()
            .enumerate()
            .for_each(|(k, b)| *b = (i as usize + k) as u8);
        let p = udp4("10.1.0.5", "10.2.0.7", 4000, 5000, &payload);
        send(&mut red_a, &p);
        let esp = next(&mut black_a, &mut a);
        assert!(
            is_esp_between(&esp, "203.0.113.1", "203.0.113.2"),
            "packet {i}"
        );
        send(&mut black_b, &esp);
        assert_eq!(next(&mut red_b, &mut b)[20..], p[20..], "packet {i}");
    }

    // Red B's VM goes away and a new one connects: its port is served
    // again, and the tunnel (its SAs, its sequence numbers) carries on.
    drop(red_b);
    let t0 = Instant::now();
    while b.log().matches("red port: front end disconnected").count() < 1 {
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", b.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    // Meanwhile what arrives for red B is dropped and counted, not queued.
    let lost = udp4("10.1.0.5", "10.2.0.7", 4000, 5000, b"while red B is down");
    send(&mut red_a, &lost);
    send(&mut black_b, &next(&mut black_a, &mut a));
    let mut red_b = b.guest("red");
    let after = udp4("10.1.0.5", "10.2.0.7", 4000, 5000, b"after the restart");
    send(&mut red_a, &after);
    send(&mut black_b, &next(&mut black_a, &mut a));
    assert_eq!(next(&mut red_b, &mut b)[20..], after[20..]);
    assert_eq!(b.log().matches("red port: front end connected").count(), 2);

    // The counters: nothing dropped for replay or authentication on B, the
    // packet for the missing guest counted, the off-policy one discarded
    // on A.
    for g in [&mut a, &mut b] {
        g.alive();
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&g.child),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        g.child.wait().unwrap();
    }
    let (la, lb) = (a.log(), b.log());
    assert!(la.contains("red vhost-user-net (no offloads)"), "{la}");
    let count = |log: &str, line: &str, key: &str| -> u64 {
        viaduct::pump::counter_values(log, line, key).sum()
    };
    assert_eq!(count(&lb, "viaduct red port out", "not_ready"), 1, "{lb}");
    assert_eq!(count(&lb, "viaduct red port out", "packets"), 1002, "{lb}");
    assert_eq!(count(&la, "viaduct red port in", "packets"), 1004, "{la}");
    assert_eq!(
        count(&la, "viaduct black port out", "packets"),
        1003,
        "{la}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
