//! The Viaduct's vhost-user port against its TUN port, per core, in the
//! same run: packets per second of pump-thread CPU time through encap
//! (red → black) and decap (black → red) at 64 and 1400 bytes of inner
//! packet (AES-128-GCM).
//!
//! - vhost-user: the pump thread runs `pump::run` on the port halves; the
//!   driver (`viaduct_vhost::driver`, another thread) plays both guests over
//!   shared memory: it fills the transmit ring and drains the receive ring.
//! - TUN: the same pump on two TUN devices in a network namespace of its
//!   own; the driver is the kernel: a UDP socket (encap) or a raw socket
//!   sending sealed ESP (decap) routed into the input device; what the
//!   Viaduct writes to the output device the kernel takes and drops
//!   (forwarding is off). TUN needs root (skipped, loudly, without it).
//!
//! Only the pump thread's CPU time is counted (`/proc/self/task/TID/schedstat`),
//! so the driver's own work is not charged to either port.
//!
//! Run: `cargo bench -p viaduct --bench vhost` (as root for the TUN rows).

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use policy_blob::*;
use viaduct::pump::{self, Control, Direction, Inbound, Outbound, Port, PumpConfig};
use viaduct::{ClaimToken, Engine, Timestamp, Verdict};
use viaduct_vhost::backend::{F_MAC, F_MRG_RXBUF, F_PROTOCOL_FEATURES, F_VERSION_1};
use viaduct_vhost::driver::{Guest, Transport};
use viaduct_vhost::net::{GUEST_MAC_BLACK, GUEST_MAC_RED, TX, VIADUCT_MAC};
use viaduct_vhost::{PortShared, Session};

const PACKETS: u64 = 200_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn policy(a: bool) -> Policy {
    let (me, peer, mine, theirs) = if a {
        ("203.0.113.1", "203.0.113.2", "10.1.0.0", "10.2.0.0")
    } else {
        ("203.0.113.2", "203.0.113.1", "10.2.0.0", "10.1.0.0")
    };
    let key = |seed: u8| {
        KeyMaterial::new(
            (0..Aead::Aes128Gcm16.key_material_len())
                .map(|i| seed.wrapping_add(i as u8))
                .collect(),
        )
    };
    let (o, i) = if a { (1, 2) } else { (2, 1) };
    let mine = Prefix::new(ip(mine), 24);
    let theirs = Prefix::new(ip(theirs), 24);
    let t = Tunnel::new(1, "bench", ip(me), ip(peer), Aead::Aes128Gcm16)
        .with_local_ts(TrafficSelector::prefix(mine))
        .with_remote_ts(TrafficSelector::prefix(theirs))
        .with_manual_keys(
            ManualSa {
                spi: Spi(0x100 + o),
                key: key(o as u8),
            },
            ManualSa {
                spi: Spi(0x100 + i),
                key: key(i as u8),
            },
        );
    Policy::new("bench", "1")
        .with_local(ip(me))
        .with_tunnel(t)
        .with_spd(
            "to-peer",
            Selector::between(mine, theirs),
            SpdAction::Protect(TunnelId(1)),
        )
        .with_spd("rest", Selector::any_v4(), SpdAction::Discard)
}

fn engine(a: bool) -> Engine {
    let p = policy(a);
    let mut claim = ClaimToken::new(p.manual_key_uses().digest());
    Engine::new(&p, Timestamp(0), &mut claim).unwrap()
}

/// A UDP packet from A's LAN to B's of `len` bytes.
fn inner(len: usize) -> Vec<u8> {
    let mut p = vec![0x5au8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 1, 0, 5]);
    p[16..20].copy_from_slice(&[10, 2, 0, 7]);
    let c = viaduct::wire::internet_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&4000u16.to_be_bytes());
    p[22..24].copy_from_slice(&9u16.to_be_bytes());
    p[24..26].copy_from_slice(&((len - 20) as u16).to_be_bytes());
    p[26..28].copy_from_slice(&[0, 0]);
    p
}

/// CPU time of thread `tid` so far.
fn cpu(tid: i32) -> Duration {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).unwrap_or_default();
    Duration::from_nanos(
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}

/// Runs `dir` in a pump thread until `feed` says the run is over; returns
/// the thread's CPU time and the direction's final report.
fn pump_thread<D: Direction + Send + 'static>(
    mut dir: D,
    feed: impl FnOnce(&dyn Fn() -> Duration),
) -> (Duration, String) {
    let ctl = Arc::new(Control::default());
    let tid = Arc::new(AtomicI32::new(0));
    let (c, t) = (ctl.clone(), tid.clone());
    let h = std::thread::spawn(move || {
        t.store(
            rustix::thread::gettid().as_raw_nonzero().get(),
            Ordering::SeqCst,
        );
        let _ = pump::run(&mut [&mut dir], &c);
        dir.report()
    });
    while tid.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    let id = tid.load(Ordering::SeqCst);
    let start = cpu(id);
    feed(&|| cpu(id) - start);
    let used = cpu(id) - start;
    ctl.stop.store(true, Ordering::SeqCst);
    let report = h.join().unwrap();
    (used, report)
}

struct Row {
    packets: u64,
    cpu: Duration,
    /// Interrupts the pump sent the transmitting guest (one per batch of
    /// reads that returned buffers).
    batches: u64,
}

impl Row {
    fn per_core(&self) -> f64 {
        self.packets as f64 / self.cpu.as_secs_f64()
    }
}

const FEATURES: u64 = F_MAC | F_MRG_RXBUF | F_PROTOCOL_FEATURES | F_VERSION_1;

fn guest(shared: &Arc<PortShared>, mac: [u8; 6]) -> Guest {
    let mut g = Guest::new(
        Transport::Direct(Box::new(Session::new(shared.clone()))),
        FEATURES,
    )
    .unwrap();
    g.mac = mac;
    g
}

fn vhost_run(len: usize, encap: bool) -> Row {
    let red = PortShared::new("red", GUEST_MAC_RED, VIADUCT_MAC).unwrap();
    let black = PortShared::new("black", GUEST_MAC_BLACK, VIADUCT_MAC).unwrap();
    let (red_tx, red_rx) = red.halves();
    let (black_tx, black_rx) = black.halves();
    let mut red_g = guest(&red, GUEST_MAC_RED);
    let mut black_g = guest(&black, GUEST_MAC_BLACK);
    let (out_a, in_a, _c) = engine(true).split();
    let (mut peer_out, _, _c2) = engine(false).split();
    let pkt = inner(len);
    let mut done = 0u64;
    let (cpu, report) = if encap {
        let dir = Outbound::new(out_a, Port::VhostIn(red_tx), Port::VhostOut(black_rx));
        pump_thread(dir, |_| {
            while done < PACKETS {
                let mut n = 0;
                while n < 128 && red_g.transmit(&pkt) {
                    n += 1;
                }
                red_g.kick(TX);
                while black_g.receive().is_some() {
                    done += 1;
                }
            }
        })
    } else {
        // The peer's ESP, sealed by the driver as it goes.
        let mut back = inner(len);
        back[12..16].copy_from_slice(&[10, 2, 0, 7]);
        back[16..20].copy_from_slice(&[10, 1, 0, 5]);
        let mut esp = vec![0u8; len + 100];
        let dir = Inbound::new(
            in_a,
            Port::VhostIn(black_tx),
            Port::VhostOut(red_rx),
            PumpConfig { gro: false },
        );
        pump_thread(dir, |_| {
            while done < PACKETS {
                let mut n = 0;
                while n < 128 {
                    let Verdict::Send(l) = peer_out.process(&back, &mut esp, Timestamp(0)) else {
                        panic!("the peer would not seal")
                    };
                    if !black_g.transmit(&esp[..l]) {
                        break;
                    }
                    n += 1;
                }
                black_g.kick(TX);
                while red_g.receive().is_some() {
                    done += 1;
                }
            }
        })
    };
    let input = if encap {
        "viaduct red port in"
    } else {
        "viaduct black port in"
    };
    Row {
        packets: done,
        cpu,
        batches: count(&report, input, "interrupts"),
    }
}

fn sh(cmd: &str) {
    let ok = Command::new("sh")
        .args(["-c", cmd])
        .status()
        .map(|s| s.success());
    assert!(matches!(ok, Ok(true)), "{cmd}");
}

fn count(report: &str, line: &str, key: &str) -> u64 {
    pump::counter_values(report, line, key).sum()
}

fn tun_run(len: usize, encap: bool) -> Option<Row> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let ns = format!("vbench{}", std::process::id());
    sh(&format!("ip netns add {ns}"));
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _del = Del(ns.clone());
    let path = format!("/run/netns/{ns}");
    let open = |name| {
        let fd = viaduct::tun::open_in_netns(name, &path, false).unwrap();
        viaduct::tun::negotiate(fd, false, viaduct::tun::OffloadRequest::NONE, name).unwrap()
    };
    let (red, black) = (open("vbred"), open("vbblk"));
    sh(&format!(
        "ip -n {ns} link set lo up && ip -n {ns} link set vbred up && ip -n {ns} link set vbblk up \
         && ip -n {ns} addr add 10.1.0.1/24 dev vbred && ip -n {ns} route add 10.2.0.0/24 dev vbred \
         && ip -n {ns} addr add 198.51.100.9/32 dev vbblk && ip -n {ns} route add 203.0.113.1/32 dev vbblk \
         && ip -n {ns} link set vbred txqueuelen 10000 && ip -n {ns} link set vbblk txqueuelen 10000"
    ));
    let (out_a, in_a, _c) = engine(true).split();
    let (mut peer_out, _, _c2) = engine(false).split();
    // The driver enters the namespace in its own thread.
    let enter = {
        let path = path.clone();
        move || {
            let f = std::fs::File::open(&path).unwrap();
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&f),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
        }
    };
    let (cpu, report) = if encap {
        let dir = Outbound::new(out_a, red, black);
        let pkt = inner(len);
        pump_thread(dir, |_| {
            std::thread::scope(|s| {
                s.spawn(|| {
                    enter();
                    let sock = std::net::UdpSocket::bind("10.1.0.1:4000").unwrap();
                    for _ in 0..PACKETS {
                        let _ = sock.send_to(&pkt[28..], "10.2.0.7:9");
                    }
                });
            });
            std::thread::sleep(Duration::from_millis(300));
        })
    } else {
        let dir = Inbound::new(in_a, black, red, PumpConfig { gro: false });
        let mut back = inner(len);
        back[12..16].copy_from_slice(&[10, 2, 0, 7]);
        back[16..20].copy_from_slice(&[10, 1, 0, 5]);
        pump_thread(dir, |_| {
            std::thread::scope(|s| {
                s.spawn(|| {
                    enter();
                    let raw = rustix::net::socket(
                        rustix::net::AddressFamily::INET,
                        rustix::net::SocketType::RAW,
                        Some(rustix::net::ipproto::RAW),
                    )
                    .unwrap();
                    let mut esp = vec![0u8; len + 100];
                    let to = std::net::SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 0);
                    for _ in 0..PACKETS {
                        let Verdict::Send(l) = peer_out.process(&back, &mut esp, Timestamp(0))
                        else {
                            panic!("the peer would not seal")
                        };
                        let _ = rustix::net::sendto(
                            &raw,
                            &esp[..l],
                            rustix::net::SendFlags::empty(),
                            &to,
                        );
                    }
                });
            });
            std::thread::sleep(Duration::from_millis(300));
        })
    };
    let (line, key) = if encap {
        ("viaduct red->black", "written")
    } else {
        ("viaduct black->red", "written")
    };
    Some(Row {
        packets: count(&report, line, key),
        cpu,
        batches: 0,
    })
}

/// The engine alone (no port): the ceiling either port can reach.
fn engine_only(len: usize, encap: bool) -> f64 {
    let (mut out_a, mut in_a, _c) = engine(true).split();
    let (mut peer_out, _, _c2) = engine(false).split();
    let pkt = inner(len);
    let mut back = inner(len);
    back[12..16].copy_from_slice(&[10, 2, 0, 7]);
    back[16..20].copy_from_slice(&[10, 1, 0, 5]);
    let mut out = vec![0u8; len + 100];
    let tid = rustix::thread::gettid().as_raw_nonzero().get();
    let n = PACKETS / 2;
    let t = cpu(tid);
    if encap {
        for _ in 0..n {
            std::hint::black_box(out_a.process(&pkt, &mut out, Timestamp(0)));
        }
        return n as f64 / (cpu(tid) - t).as_secs_f64();
    }
    // Sealed in batches (not timed), each batch opened in one timed loop.
    let mut spent = Duration::ZERO;
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(1000);
    for _ in 0..n / 1000 {
        batch.clear();
        for _ in 0..1000 {
            let Verdict::Send(l) = peer_out.process(&back, &mut out, Timestamp(0)) else {
                panic!("the peer would not seal")
            };
            batch.push(out[..l].to_vec());
        }
        let t = cpu(tid);
        for p in batch.iter_mut() {
            std::hint::black_box(in_a.process(p, Timestamp(0)));
        }
        spent += cpu(tid) - t;
    }
    (n / 1000 * 1000) as f64 / spent.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

const ROUNDS: usize = 3;

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    println!(
        "vhost-user vs TUN port, pump thread CPU only, {PACKETS} packets per run, median of {ROUNDS} runs, AES-128-GCM\n\
         {:<6} {:>5} | {:>13} | {:>14} {:>9} {:>9} | {:>14} | {:>6}",
        "dir", "bytes", "engine alone", "vhost pps/core", "of engine", "pkts/kick", "TUN pps/core", "ratio"
    );
    for encap in [true, false] {
        for len in [64usize, 1400] {
            let ceiling = engine_only(len, encap);
            let runs: Vec<Row> = (0..ROUNDS).map(|_| vhost_run(len, encap)).collect();
            let per_batch = median(
                runs.iter()
                    .map(|r| r.packets as f64 / r.batches.max(1) as f64)
                    .collect(),
            );
            let v = median(runs.iter().map(|r| r.per_core()).collect());
            let t: Vec<f64> = (0..ROUNDS)
                .filter_map(|_| tun_run(len, encap))
                .filter(|r| r.packets > 0)
                .map(|r| r.per_core())
                .collect();
            let (tp, ratio) = if t.is_empty() {
                ("skipped (root)".to_owned(), "-".to_owned())
            } else {
                let t = median(t);
                (format!("{t:.0}"), format!("{:.2}x", v / t))
            };
            println!(
                "{:<6} {:>5} | {:>13.0} | {:>14.0} {:>8.0}% {:>9.1} | {:>14} | {:>6}",
                if encap { "encap" } else { "decap" },
                len,
                ceiling,
                v,
                100.0 * v / ceiling,
                per_batch,
                tp,
                ratio
            );
        }
    }
}
