//! IKE SA setups per second against a responder over UDP: the load
//! generator of `scripts/bench-ike`, and our engine as the responder it
//! measures next to strongSwan's charon.
//!
//! ```text
//! ike-load keys DIR
//!     writes the benchmark's fixed Ed25519 keys for charon: DIR/responder.pem
//!     (PKCS#8, the responder's key — charon's and ours are the same key),
//!     DIR/responder.pub.pem and DIR/generator.pub.pem (SubjectPublicKeyInfo;
//!     charon pins the generator's)
//! ike-load respond --local ADDR:PORT --remote ADDR:PORT --auth psk|ed25519
//!     our engine as a responder: no cookies (like charon's dos_protection = no),
//!     no DPD, no rekeying; CHILD SA installs are counted, not performed
//! ike-load load --local ADDR:PORT --target ADDR:PORT --auth psk|ed25519
//!          --count N --window W --pid PID --label NAME
//!     N complete IKE SA setups (IKE_SA_INIT + IKE_AUTH with the first CHILD
//!     SA), at most W at once, from one UDP socket; prints one line with the
//!     rate, setup latency (p50, p99), and the responder's CPU time and
//!     resident memory per IKE SA read from /proc/PID (the SAs are kept, so
//!     the memory is what N established IKE SAs hold)
//! ```
//!
//! Both sides: IKE AES-256-GCM, PRF HMAC-SHA2-256, x25519; ESP AES-256-GCM
//! without ESN; identities `load.test` (generator) and `resp.test`; PSK or
//! Ed25519 with pinned keys. The generator is itself our engine, as an
//! initiator: it establishes one IKE SA before the measured run, so that the
//! measured ones carry no INITIAL_CONTACT (which would make a responder drop
//! the others), and keeps every SA it made.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ike::crypto::{Aead, Group, PinnedPublicKey, PreSharedKey, Prf, SigningKey};
use ike::sa::{
    Action, Auth, Config, Entropy, EspProposal, Event, Identity, Ike, IkeProposal, Path, Timestamp,
};
use ike::wire::{IkeSpi, TrafficSelector};

const PSK: &[u8] = b"a benchmark pre-shared key, 32 b";
const RESPONDER_SEED: [u8; 32] = [0x22; 32];
const GENERATOR_SEED: [u8; 32] = [0x11; 32];
/// RFC 8410 prefixes: PKCS#8 for an Ed25519 seed, SPKI for a public key.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Randomness from aws-lc (the operating system's generator).
struct SystemEntropy;

impl Entropy for SystemEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        if aws_lc_rs::rand::fill(buf).is_err() {
            eprintln!("ike-load: the random number generator failed");
            std::process::abort();
        }
    }
}

fn fail(problem: &str) -> ! {
    eprintln!("ike-load: {problem}");
    eprintln!(
        "usage: ike-load keys DIR\n       ike-load respond --local ADDR:PORT --remote ADDR:PORT \
         --auth psk|ed25519\n       ike-load load --local ADDR:PORT --target ADDR:PORT \
         --auth psk|ed25519 --count N --window W --pid PID --label NAME"
    );
    std::process::exit(2)
}

fn flags(args: &[String]) -> HashMap<String, String> {
    let mut m = HashMap::new();
    let mut it = args.iter();
    while let Some(f) = it.next() {
        let Some(name) = f.strip_prefix("--") else {
            fail(&format!("unexpected argument {f}"));
        };
        let Some(v) = it.next() else {
            fail(&format!("{f} needs a value"));
        };
        m.insert(name.to_owned(), v.clone());
    }
    m
}

fn get<T: std::str::FromStr>(m: &HashMap<String, String>, name: &str) -> T {
    let Some(v) = m.get(name) else {
        fail(&format!("--{name} is required"));
    };
    v.parse()
        .unwrap_or_else(|_| fail(&format!("--{name} {v}: not understood")))
}

fn range(cidr: [u8; 3]) -> TrafficSelector {
    TrafficSelector {
        ip_protocol: 0,
        start_port: 0,
        end_port: u16::MAX,
        start: std::net::Ipv4Addr::new(cidr[0], cidr[1], cidr[2], 0).into(),
        end: std::net::Ipv4Addr::new(cidr[0], cidr[1], cidr[2], 255).into(),
    }
}

fn public(seed: &[u8; 32]) -> PinnedPublicKey {
    let raw = SigningKey::ed25519_from_seed(seed)
        .and_then(|k| k.public_key())
        .unwrap_or_else(|e| fail(&format!("Ed25519 key: {e}")));
    raw
}

/// The benchmark's configuration for one side.
fn config(local: SocketAddr, remote: SocketAddr, auth: &str, responder: bool) -> Config {
    let (me, peer) = if responder {
        (RESPONDER_SEED, GENERATOR_SEED)
    } else {
        (GENERATOR_SEED, RESPONDER_SEED)
    };
    let auth = match auth {
        "psk" => Auth::Psk(PreSharedKey::new(PSK).unwrap_or_else(|e| fail(&e.to_string()))),
        "ed25519" => Auth::Signature {
            key: SigningKey::ed25519_from_seed(&me).unwrap_or_else(|e| fail(&e.to_string())),
            peer: public(&peer),
        },
        other => fail(&format!("--auth {other}: psk or ed25519")),
    };
    let (ours, theirs) = (
        Identity::Fqdn("load.test".into()),
        Identity::Fqdn("resp.test".into()),
    );
    let (local_id, remote_id) = if responder {
        (theirs, ours)
    } else {
        (ours, theirs)
    };
    let mut c = Config::new(local, remote, local_id, remote_id, auth);
    c.ike_proposals = vec![IkeProposal {
        aead: Aead::AesGcm16_256,
        prf: Prf::HmacSha2_256,
        group: Group::Curve25519,
    }];
    c.esp_proposals = vec![EspProposal {
        aead: Aead::AesGcm16_256,
        esn: false,
    }];
    let (a, b) = (range([10, 1, 0]), range([10, 2, 0]));
    (c.local_ts, c.remote_ts) = if responder {
        (vec![b], vec![a])
    } else {
        (vec![a], vec![b])
    };
    c.dpd_delay = None;
    c.ike_rekey_after = None;
    c.child_lifetimes.rekey_after = Duration::from_secs(86_400);
    c.child_lifetimes.expire_after = Duration::from_secs(2 * 86_400);
    c.cookies.global_threshold = u32::MAX;
    c.cookies.per_address_threshold = u32::MAX;
    c.retransmit.first_timeout = Duration::from_secs(2);
    c.retransmit.sends = 5;
    c.half_open_timeout = Duration::from_secs(60);
    c.validate().unwrap_or_else(|e| fail(&e.to_string()));
    c
}

fn pem(label: &str, der: &[u8]) -> String {
    use std::fmt::Write;
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, x| (n << 8) | u32::from(*x)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                b.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b.push('=');
            }
        }
    }
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b.as_bytes().chunks(64) {
        let _ = writeln!(s, "{}", String::from_utf8_lossy(line));
    }
    let _ = writeln!(s, "-----END {label}-----");
    s
}

fn keys(dir: &str) {
    let dir = std::path::Path::new(dir);
    let mut pkcs8 = PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(&RESPONDER_SEED);
    let spki = |seed: &[u8; 32]| {
        let mut v = SPKI_PREFIX.to_vec();
        v.extend_from_slice(public(seed).as_bytes());
        v
    };
    for (name, text) in [
        ("responder.pem", pem("PRIVATE KEY", &pkcs8)),
        (
            "responder.pub.pem",
            pem("PUBLIC KEY", &spki(&RESPONDER_SEED)),
        ),
        (
            "generator.pub.pem",
            pem("PUBLIC KEY", &spki(&GENERATOR_SEED)),
        ),
    ] {
        std::fs::write(dir.join(name), text)
            .unwrap_or_else(|e| fail(&format!("{}: {e}", dir.join(name).display())));
    }
}

/// Milliseconds since `origin` as the engine's clock.
fn now(origin: Instant) -> Timestamp {
    Timestamp::from_millis(u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX))
}

fn respond(m: &HashMap<String, String>) {
    let local: SocketAddr = get(m, "local");
    let remote: SocketAddr = get(m, "remote");
    let auth: String = get(m, "auth");
    let origin = Instant::now();
    let mut ike = Ike::new(
        config(local, remote, &auth, true),
        SystemEntropy,
        now(origin),
    )
    .unwrap_or_else(|e| fail(&e.to_string()));
    let sock = UdpSocket::bind(local).unwrap_or_else(|e| fail(&format!("bind {local}: {e}")));
    let mut timer: Option<Timestamp> = None;
    let mut buf = vec![0u8; 65_536];
    let (mut installs, mut established) = (0u64, 0u64);
    loop {
        let wait = timer.map_or(Duration::from_secs(1), |t| {
            Duration::from_millis(t.as_millis().saturating_sub(now(origin).as_millis()).max(1))
        });
        sock.set_read_timeout(Some(wait)).ok();
        let actions = match sock.recv_from(&mut buf) {
            Ok((n, from)) => ike.handle(
                &buf[..n],
                Path {
                    local,
                    remote: from,
                },
                now(origin),
            ),
            Err(_) => ike.tick(now(origin)),
        };
        for a in actions {
            match a {
                Action::Send(d) => {
                    let _ = sock.send_to(&d.bytes, d.path.remote);
                }
                Action::SetTimer(t) => timer = Some(t),
                Action::InstallChildSa(_) => installs += 1,
                Action::Event(Event::IkeSaEstablished(_)) => {
                    established += 1;
                    if established % 10_000 == 0 {
                        eprintln!("ike-load respond: {established} IKE SAs, {installs} CHILD SAs");
                    }
                }
                _ => {}
            }
        }
    }
}

/// CPU seconds (user + system) and resident kiB of process `pid`.
fn usage_of(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| fail(&format!("/proc/{pid}/stat: {e}")));
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    (ticks as f64 / 100.0, rss)
}

struct Generator {
    ike: Ike<SystemEntropy>,
    sock: UdpSocket,
    origin: Instant,
    timer: Option<Timestamp>,
    started: HashMap<IkeSpi, Instant>,
    latencies: Vec<Duration>,
    failed: u64,
    child_refused: u64,
}

impl Generator {
    fn absorb(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(d) => {
                    if d.bytes.len() >= 28 && d.bytes[18] == 34 && d.bytes[19] & 0x20 == 0 {
                        // An IKE_SA_INIT request: its SPIi starts the clock
                        // (kept from the first send, retransmissions too).
                        let spi = IkeSpi(u64::from_be_bytes(
                            d.bytes[..8].try_into().unwrap_or_default(),
                        ));
                        self.started.entry(spi).or_insert_with(Instant::now);
                    }
                    let _ = self.sock.send_to(&d.bytes, d.path.remote);
                }
                Action::SetTimer(t) => self.timer = Some(t),
                Action::Event(Event::IkeSaEstablished(e)) => {
                    if let Some(t) = self.started.remove(&e.ike_sa.initiator) {
                        self.latencies.push(t.elapsed());
                    }
                }
                Action::Event(Event::Failed {
                    ike_sa, failure, ..
                }) if self.started.remove(&ike_sa.initiator).is_some() => {
                    self.failed += 1;
                    if self.failed <= 3 {
                        eprintln!("ike-load: an IKE SA failed: {failure}");
                    }
                }
                _ => {}
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.started.len()
    }

    /// Waits (at most until the next timer, at most 100 ms) for a datagram.
    fn step(&mut self) {
        let t = now(self.origin);
        let wait = self.timer.map_or(100, |d| {
            d.as_millis().saturating_sub(t.as_millis()).clamp(1, 100)
        });
        self.sock
            .set_read_timeout(Some(Duration::from_millis(wait)))
            .ok();
        let mut buf = [0u8; 65_536];
        match self.sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                let local = self.ike.config().local;
                let a = self.ike.handle(
                    &buf[..n],
                    Path {
                        local,
                        remote: from,
                    },
                    now(self.origin),
                );
                self.absorb(a);
            }
            Err(_) => {
                let a = self.ike.tick(now(self.origin));
                self.absorb(a);
            }
        }
        if self.timer.is_some_and(|d| d <= now(self.origin)) {
            self.timer = None;
            let a = self.ike.tick(now(self.origin));
            self.absorb(a);
        }
    }
}

fn load(m: &HashMap<String, String>) {
    let local: SocketAddr = get(m, "local");
    let target: SocketAddr = get(m, "target");
    let auth: String = get(m, "auth");
    let count: usize = get(m, "count");
    let window: usize = get(m, "window");
    let pid: u32 = get(m, "pid");
    let label: String = get(m, "label");
    let origin = Instant::now();
    let ike = Ike::new(
        config(local, target, &auth, false),
        SystemEntropy,
        now(origin),
    )
    .unwrap_or_else(|e| fail(&e.to_string()));
    let sock = UdpSocket::bind(local).unwrap_or_else(|e| fail(&format!("bind {local}: {e}")));
    let mut g = Generator {
        ike,
        sock,
        origin,
        timer: None,
        started: HashMap::new(),
        latencies: Vec::new(),
        failed: 0,
        child_refused: 0,
    };
    // One IKE SA first (it carries INITIAL_CONTACT), not measured.
    let a = g.ike.initiate(now(origin));
    g.absorb(a);
    let deadline = Instant::now() + Duration::from_secs(30);
    while g.latencies.is_empty() {
        if Instant::now() > deadline || g.failed > 0 {
            fail(&format!("{label}: the first IKE SA was not established"));
        }
        g.step();
    }
    g.latencies.clear();
    std::thread::sleep(Duration::from_millis(300));
    let (cpu0, rss0) = usage_of(pid);
    let t0 = Instant::now();
    let mut launched = 0usize;
    let give_up = t0 + Duration::from_secs(600);
    while g.latencies.len() + (g.failed as usize) < count {
        while launched < count && g.in_flight() < window {
            let a = g.ike.initiate(now(origin));
            g.absorb(a);
            launched += 1;
        }
        if Instant::now() > give_up {
            fail(&format!("{label}: gave up after 600 s"));
        }
        g.step();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu1, rss1) = usage_of(pid);
    let done = g.latencies.len();
    g.latencies.sort();
    let pct = |p: usize| {
        g.latencies
            .get((done * p / 100).min(done.saturating_sub(1)))
    };
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
    let cpu = cpu1 - cpu0;
    println!(
        "{label:<22} {auth:<8} {done:>7} SAs {rate:>8.0}/s  p50 {p50:>7.2} ms  p99 {p99:>7.2} ms  \
         responder CPU {cpu_us:>6.1} µs/SA (busy {busy:>3.0} %)  RSS {mem:>6.2} kiB/SA  failed {failed}  CHILD SAs refused {refused}",
        rate = done as f64 / elapsed,
        p50 = ms(pct(50)),
        p99 = ms(pct(99)),
        cpu_us = cpu * 1e6 / done.max(1) as f64,
        busy = 100.0 * cpu / elapsed,
        mem = rss1.saturating_sub(rss0) as f64 / done.max(1) as f64,
        failed = g.failed,
        refused = g.child_refused,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("keys") => keys(args.get(1).map_or_else(|| fail("keys DIR"), String::as_str)),
        Some("respond") => respond(&flags(&args[1..])),
        Some("load") => load(&flags(&args[1..])),
        _ => fail("keys, respond or load"),
    }
}
