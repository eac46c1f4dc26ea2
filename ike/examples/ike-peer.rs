//! A lab IKE peer: runs the sans-IO [`ike::sa::Ike`] engine over real UDP
//! sockets (ports 500 and 4500 of one address) with a configuration from the
//! command line, and prints every [`Action`] as one JSON line on stdout —
//! CHILD SA installs with their SPIs and **key material in hex**. Lab only:
//! it exists so that `ike/tests/strongswan.rs` can check the engine against
//! strongSwan in network namespaces (`ip netns exec NS ike-peer ...`).
//!
//! ```text
//! ike-peer --local 192.0.2.2 --remote 192.0.2.1 --local-id vd.test --remote-id sw.test
//!          (--psk TEXT | --ed25519-seed HEX64 --peer-ed25519 HEX64
//!           | --ecdsa-p256-scalar HEX64 --peer-ecdsa-p256 HEX130)
//!          --ike aes256gcm16-prfsha256-x25519 [--ike ...]
//!          --esp aes256gcm16-noesn [--esp ...]
//!          --local-ts 10.2.0.0/24 --remote-ts 10.1.0.0/24
//!          [--initiate] [--retransmit-ms 500] [--sends 3] [--exit-after-s 60]
//!          [--cookie-threshold N]   (0: demand a COOKIE from every initiator)
//!          [--force-encap]   (UDP encapsulation without a NAT; keepalives)
//!          [--drop-send 2,3] [--drop-recv 1]   (lose the n-th datagram, from 1)
//!          [--pfs x25519|ecp256] [--child-rekey-s S] [--child-expire-s S]
//!          [--ike-rekey-s S] [--dpd-s S] [--jitter-percent P]   (0 s: off)
//! ```
//!
//! Proposals use strongSwan's syntax, one per flag, as this crate names them
//! (`chacha20poly1305-prfsha256-ecp256`, `chacha20poly1305-noesn`).
//!
//! `--drop-send` and `--drop-recv` lose datagrams on purpose (the n-th one
//! the engine asks to send, the n-th one received; counted from 1), so that
//! a test can make either side retransmit.
//!
//! Output, one JSON object per line, each with a `"type"`: `ready` (sockets
//! bound), `send` and `recv` (with the exchange, message ID, whether it is a
//! response, and `dropped`), `install_child_sa`, `delete_child_sa`,
//! `use_outbound`, `set_timer`, `event` (with `kind`, a human `message` and the `debug`
//! form), and `exit`; each also has `t_ms` and `unix_ms`. The process runs
//! until killed or `--exit-after-s`.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ike::crypto::{Aead, Group, PinnedPublicKey, PreSharedKey, Prf, Role, SigningKey};
use ike::sa::{
    Action, Auth, ChildSaInstall, Config, Entropy, EspProposal, Event, Identity, Ike, IkeProposal,
    Path, Timestamp,
};
use ike::wire::{Message, TrafficSelector};
use serde_json::{json, Value};

/// Randomness from aws-lc (the operating system's generator).
struct SystemEntropy;

impl Entropy for SystemEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        if aws_lc_rs::rand::fill(buf).is_err() {
            // The contract: never return predictable bytes.
            eprintln!("ike-peer: the random number generator failed");
            std::process::abort();
        }
    }
}

struct Args {
    local: IpAddr,
    remote: IpAddr,
    local_id: Identity,
    remote_id: Identity,
    psk: Option<String>,
    seed: Option<[u8; 32]>,
    peer_key: Option<Vec<u8>>,
    ecdsa_scalar: Option<[u8; 32]>,
    peer_ecdsa: Option<Vec<u8>>,
    ike: Vec<IkeProposal>,
    esp: Vec<EspProposal>,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
    initiate: bool,
    retransmit_ms: u64,
    sends: u32,
    exit_after: Option<Duration>,
    cookie_threshold: Option<u32>,
    force_encap: bool,
    drop_send: Vec<u64>,
    drop_recv: Vec<u64>,
    pfs: Option<Group>,
    child_rekey: Option<u64>,
    child_expire: Option<u64>,
    ike_rekey: Option<u64>,
    dpd: Option<u64>,
    jitter: Option<u8>,
}

fn usage(problem: &str) -> ! {
    eprintln!("ike-peer: {problem}");
    eprintln!(
        "usage: ike-peer --local ADDR --remote ADDR --local-id FQDN --remote-id FQDN \
         (--psk TEXT | --ed25519-seed HEX --peer-ed25519 HEX \
         | --ecdsa-p256-scalar HEX --peer-ecdsa-p256 HEX) --ike PROPOSAL... \
         --esp PROPOSAL... --local-ts CIDR... --remote-ts CIDR... [--initiate] \
         [--retransmit-ms MS] [--sends N] [--exit-after-s S] [--cookie-threshold N] \
         [--drop-send N,...] [--drop-recv N,...] [--pfs GROUP] [--child-rekey-s S] \
         [--child-expire-s S] [--ike-rekey-s S] [--dpd-s S] [--jitter-percent P]"
    );
    std::process::exit(2)
}

fn hex32(flag: &str, s: &str) -> [u8; 32] {
    let v = hex::decode(s).unwrap_or_else(|_| usage(&format!("{flag}: not hex")));
    <[u8; 32]>::try_from(v.as_slice())
        .unwrap_or_else(|_| usage(&format!("{flag}: 32 bytes (64 hex digits) expected")))
}

fn identity(s: &str) -> Identity {
    match IpAddr::from_str(s) {
        Ok(a) => Identity::Addr(a),
        Err(_) => Identity::Fqdn(s.to_owned()),
    }
}

/// `10.1.0.0/24` as an address range, any protocol and port.
fn cidr(s: &str) -> TrafficSelector {
    let bad = format!("{s}: an IPv4 prefix like 10.1.0.0/24 expected");
    let (addr, len) = s.split_once('/').unwrap_or((s, "32"));
    let addr: std::net::Ipv4Addr = addr.parse().unwrap_or_else(|_| usage(&bad));
    let len: u32 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .unwrap_or_else(|| usage(&bad));
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    let start = u32::from(addr) & mask;
    let end = start | !mask;
    TrafficSelector {
        ip_protocol: 0,
        start_port: 0,
        end_port: u16::MAX,
        start: IpAddr::V4(start.into()),
        end: IpAddr::V4(end.into()),
    }
}

/// A proposal by its name, as the crate writes it.
fn ike_proposal(s: &str) -> IkeProposal {
    for aead in Aead::ALL {
        for prf in Prf::ALL {
            for group in Group::ALL {
                let p = IkeProposal { aead, prf, group };
                if p.to_string() == s {
                    return p;
                }
            }
        }
    }
    usage(&format!("{s}: not an IKE proposal this engine offers"))
}

fn esp_proposal(s: &str) -> EspProposal {
    Aead::ALL
        .into_iter()
        .flat_map(|aead| [false, true].map(|esn| EspProposal { aead, esn }))
        .find(|p| p.to_string() == s)
        .unwrap_or_else(|| usage(&format!("{s}: not an ESP proposal this engine offers")))
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        local: IpAddr::from([0, 0, 0, 0]),
        remote: IpAddr::from([0, 0, 0, 0]),
        local_id: Identity::Fqdn(String::new()),
        remote_id: Identity::Fqdn(String::new()),
        psk: None,
        seed: None,
        peer_key: None,
        ecdsa_scalar: None,
        peer_ecdsa: None,
        ike: Vec::new(),
        esp: Vec::new(),
        local_ts: Vec::new(),
        remote_ts: Vec::new(),
        initiate: false,
        retransmit_ms: 1000,
        sends: 5,
        exit_after: None,
        cookie_threshold: None,
        force_encap: false,
        drop_send: Vec::new(),
        drop_recv: Vec::new(),
        pfs: None,
        child_rekey: None,
        child_expire: None,
        ike_rekey: None,
        dpd: None,
        jitter: None,
    };
    while let Some(flag) = it.next() {
        if flag == "--initiate" {
            a.initiate = true;
            continue;
        }
        if flag == "--force-encap" {
            a.force_encap = true;
            continue;
        }
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let addr = |v: &str| {
            IpAddr::from_str(v).unwrap_or_else(|_| usage(&format!("{flag}: an address expected")))
        };
        let number = |v: &str| {
            u64::from_str(v).unwrap_or_else(|_| usage(&format!("{flag}: a number expected")))
        };
        match flag.as_str() {
            "--local" => a.local = addr(&value),
            "--remote" => a.remote = addr(&value),
            "--local-id" => a.local_id = identity(&value),
            "--remote-id" => a.remote_id = identity(&value),
            "--psk" => a.psk = Some(value),
            "--ed25519-seed" => a.seed = Some(hex32(&flag, &value)),
            "--peer-ed25519" => a.peer_key = Some(hex32(&flag, &value).to_vec()),
            "--ecdsa-p256-scalar" => a.ecdsa_scalar = Some(hex32(&flag, &value)),
            "--peer-ecdsa-p256" => {
                a.peer_ecdsa = Some(
                    hex::decode(&value).unwrap_or_else(|_| usage("--peer-ecdsa-p256: not hex")),
                )
            }
            "--ike" => a.ike.push(ike_proposal(&value)),
            "--esp" => a.esp.push(esp_proposal(&value)),
            "--local-ts" => a.local_ts.push(cidr(&value)),
            "--remote-ts" => a.remote_ts.push(cidr(&value)),
            "--retransmit-ms" => a.retransmit_ms = number(&value),
            "--sends" => {
                a.sends =
                    u32::try_from(number(&value)).unwrap_or_else(|_| usage("--sends: too large"))
            }
            "--exit-after-s" => a.exit_after = Some(Duration::from_secs(number(&value))),
            "--drop-send" => a.drop_send = value.split(',').map(number).collect(),
            "--drop-recv" => a.drop_recv = value.split(',').map(number).collect(),
            "--pfs" => {
                a.pfs = Some(match value.as_str() {
                    "x25519" => Group::Curve25519,
                    "ecp256" => Group::Ecp256,
                    _ => usage("--pfs: x25519 or ecp256"),
                })
            }
            "--child-rekey-s" => a.child_rekey = Some(number(&value)),
            "--child-expire-s" => a.child_expire = Some(number(&value)),
            "--ike-rekey-s" => a.ike_rekey = Some(number(&value)),
            "--dpd-s" => a.dpd = Some(number(&value)),
            "--jitter-percent" => {
                a.jitter = Some(
                    u8::try_from(number(&value))
                        .unwrap_or_else(|_| usage("--jitter-percent: 0 to 50")),
                )
            }
            "--cookie-threshold" => {
                a.cookie_threshold = Some(
                    u32::try_from(number(&value))
                        .unwrap_or_else(|_| usage("--cookie-threshold: too large")),
                )
            }
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    a
}

fn config(a: Args) -> Config {
    let auth = match (a.psk, a.seed, a.peer_key, a.ecdsa_scalar, a.peer_ecdsa) {
        (Some(psk), None, None, None, None) => Auth::Psk(
            PreSharedKey::new(psk.as_bytes()).unwrap_or_else(|e| usage(&format!("--psk: {e}"))),
        ),
        (None, Some(seed), Some(peer), None, None) => Auth::Signature {
            key: SigningKey::ed25519_from_seed(&seed)
                .unwrap_or_else(|e| usage(&format!("--ed25519-seed: {e}"))),
            peer: PinnedPublicKey::ed25519(&peer)
                .unwrap_or_else(|e| usage(&format!("--peer-ed25519: {e}"))),
        },
        (None, None, None, Some(scalar), Some(peer)) => Auth::Signature {
            key: SigningKey::ecdsa_p256_from_scalar(&scalar)
                .unwrap_or_else(|e| usage(&format!("--ecdsa-p256-scalar: {e}"))),
            peer: PinnedPublicKey::ecdsa_p256(&peer)
                .unwrap_or_else(|e| usage(&format!("--peer-ecdsa-p256: {e}"))),
        },
        _ => usage(
            "give one of --psk; --ed25519-seed and --peer-ed25519; \
             --ecdsa-p256-scalar and --peer-ecdsa-p256",
        ),
    };
    let mut c = Config::new(
        SocketAddr::new(a.local, 500),
        SocketAddr::new(a.remote, 500),
        a.local_id,
        a.remote_id,
        auth,
    );
    if !a.ike.is_empty() {
        c.ike_proposals = a.ike;
    }
    if !a.esp.is_empty() {
        c.esp_proposals = a.esp;
    }
    if !a.local_ts.is_empty() {
        c.local_ts = a.local_ts;
    }
    if !a.remote_ts.is_empty() {
        c.remote_ts = a.remote_ts;
    }
    c.retransmit.first_timeout = Duration::from_millis(a.retransmit_ms);
    c.retransmit.sends = a.sends;
    if let Some(n) = a.cookie_threshold {
        c.cookies.global_threshold = n;
        c.cookies.per_address_threshold = n;
    }
    c.pfs = a.pfs;
    c.force_udp_encapsulation = a.force_encap;
    let secs = Duration::from_secs;
    if let Some(s) = a.child_rekey {
        c.child_lifetimes.rekey_after = secs(s);
        c.child_lifetimes.expire_after = secs(a.child_expire.unwrap_or(s + s / 10 + 10));
    }
    if let Some(s) = a.ike_rekey {
        c.ike_rekey_after = (s > 0).then(|| secs(s));
    }
    if let Some(s) = a.dpd {
        c.dpd_delay = (s > 0).then(|| secs(s));
    }
    if let Some(p) = a.jitter {
        c.rekey_jitter_percent = p;
    }
    if let Err(e) = c.validate() {
        usage(&e.to_string());
    }
    c
}

/// Prints one line: the value with `t_ms`, the milliseconds since start,
/// and `unix_ms`, the wall-clock time.
fn emit(started: Instant, mut v: Value) {
    if let Value::Object(m) = &mut v {
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        m.insert("t_ms".into(), ms.into());
        // Wall-clock time, to line up with strongSwan's log.
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        m.insert("unix_ms".into(), wall.into());
    }
    // stdout is a pipe to the test: println! takes the lock and writes the
    // line; flush so that each line leaves at once.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// A `send` or `recv` line: the endpoints and what the IKE header says.
fn datagram(kind: &str, path: Path, bytes: &[u8], dropped: bool) -> Value {
    let mut v = json!({
        "type": kind,
        "local": path.local.to_string(),
        "remote": path.remote.to_string(),
        "len": bytes.len(),
        "dropped": dropped,
    });
    if let Ok(m) = Message::new_checked(bytes) {
        let h = m.header();
        v["exchange"] = json!(h.exchange().to_string());
        v["message_id"] = json!(h.message_id());
        v["response"] = json!(h.flags().response);
    }
    v
}

fn selectors(ts: &[TrafficSelector]) -> Value {
    ts.iter()
        .map(|t| {
            json!({
                "start": t.start.to_string(),
                "end": t.end.to_string(),
                "protocol": t.ip_protocol,
                "ports": [t.start_port, t.end_port],
            })
        })
        .collect()
}

fn install(i: &ChildSaInstall) -> Value {
    json!({
        "type": "install_child_sa",
        "ike_sa": {"spi_i": i.ike_sa.initiator.to_string(), "spi_r": i.ike_sa.responder.to_string()},
        "role": match i.role() { Role::Initiator => "initiator", Role::Responder => "responder" },
        "inbound_spi": i.inbound_spi.to_string(),
        "outbound_spi": i.outbound_spi.to_string(),
        "aead": format!("{:?}", i.aead),
        "esn": i.esn,
        // Lab only: the key material (key ‖ salt) of both directions.
        "inbound_key": hex::encode(i.inbound().key.expose_secret()),
        "outbound_key": hex::encode(i.outbound().key.expose_secret()),
        "local_ts": selectors(&i.local_ts),
        "remote_ts": selectors(&i.remote_ts),
        "local": i.path.local.to_string(),
        "remote": i.path.remote.to_string(),
        "udp_encapsulation": i.udp_encapsulation,
        "outbound_active": i.outbound_active,
        "replaces": i.replaces.map(|s| s.to_string()),
    })
}

fn event(e: &Event) -> Value {
    let (kind, message) = match e {
        Event::IkeSaEstablished(est) => (
            "ike_sa_established",
            format!(
                "IKE SA {} established with {} ({}), {}",
                est.ike_sa, est.remote_id, est.proposal, est.path.remote
            ),
        ),
        Event::ChildSaRefused {
            ike_sa, failure, ..
        } => ("child_sa_refused", format!("{ike_sa}: {failure}")),
        Event::Failed {
            ike_sa, failure, ..
        } => ("failed", format!("{ike_sa}: {failure}")),
        Event::InitAnsweredStatelessly {
            remote,
            notify,
            failure,
            ..
        } => (
            "init_answered_statelessly",
            match failure {
                Some(f) => format!("{remote}: {notify}: {f}"),
                None => format!("{remote}: {notify}"),
            },
        ),
        Event::Closed { ike_sa, reason, .. } => ("closed", format!("{ike_sa}: {reason}")),
        Event::Dropped { remote, reason } => ("dropped", format!("{remote}: {reason}")),
        Event::Retransmitted {
            ike_sa,
            exchange,
            sends,
        } => (
            "retransmitted",
            format!("{ike_sa}: {exchange} sent {sends} times"),
        ),
        Event::ChildSaRekeyed { old, new, by_us } => (
            "child_sa_rekeyed",
            format!(
                "CHILD SA {}/{} replaced by {}/{} ({})",
                old.inbound_spi,
                old.outbound_spi,
                new.inbound_spi,
                new.outbound_spi,
                if *by_us {
                    "our rekey"
                } else {
                    "the peer's rekey"
                }
            ),
        ),
        Event::ChildSaCreated { child, .. } => (
            "child_sa_created",
            format!("CHILD SA {}/{}", child.inbound_spi, child.outbound_spi),
        ),
        Event::ChildSaDeleted { child, reason } => (
            "child_sa_deleted",
            format!(
                "CHILD SA {}/{}: {reason}",
                child.inbound_spi, child.outbound_spi
            ),
        ),
        Event::RekeyCollision {
            ike_sa,
            what,
            ours_survives,
        } => (
            "rekey_collision",
            format!("{ike_sa}: both sides rekeyed {what}; ours survives: {ours_survives}"),
        ),
        Event::RekeyFailed {
            ike_sa,
            what,
            failure,
        } => ("rekey_failed", format!("{ike_sa}: {what}: {failure}")),
        Event::IkeSaRekeyed { old, new, by_us } => (
            "ike_sa_rekeyed",
            format!(
                "IKE SA {old} replaced by {new} ({})",
                if *by_us {
                    "our rekey"
                } else {
                    "the peer's rekey"
                }
            ),
        ),
    };
    let mut v =
        json!({"type": "event", "kind": kind, "message": message, "debug": format!("{e:?}")});
    if let Event::IkeSaRekeyed { new, .. } = e {
        v["new_ike_sa"] =
            json!({"spi_i": new.initiator.to_string(), "spi_r": new.responder.to_string()});
    }
    v
}

/// The non-ESP marker on port 4500 (RFC 3948 §2.2).
const NON_ESP_MARKER: [u8; 4] = [0; 4];

fn main() {
    let args = parse_args();
    let (initiate, exit_after) = (args.initiate, args.exit_after);
    let (drop_send, drop_recv) = (args.drop_send.clone(), args.drop_recv.clone());
    let (mut sends, mut recvs) = (0u64, 0u64);
    let config = config(args);
    let ike_socket = UdpSocket::bind(config.local).unwrap_or_else(|e| {
        eprintln!("ike-peer: bind {}: {e}", config.local);
        std::process::exit(1)
    });
    let natt_addr = SocketAddr::new(config.local.ip(), 4500);
    let natt_socket = UdpSocket::bind(natt_addr).unwrap_or_else(|e| {
        eprintln!("ike-peer: bind {natt_addr}: {e}");
        std::process::exit(1)
    });
    let started = Instant::now();
    let now = || Timestamp::from_millis(u64::try_from(started.elapsed().as_millis()).unwrap_or(0));
    let mut ike = Ike::new(config, SystemEntropy, now()).unwrap_or_else(|e| {
        eprintln!("ike-peer: {e}");
        std::process::exit(2)
    });

    // One reader thread per socket; the engine runs on this thread.
    let (tx, rx) = mpsc::channel::<(Path, Vec<u8>)>();
    for socket in [&ike_socket, &natt_socket] {
        let s = socket.try_clone().expect("clone a UDP socket");
        let local = s.local_addr().expect("a bound socket has an address");
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, remote)) = s.recv_from(&mut buf) else {
                    return;
                };
                let mut d = &buf[..n];
                if local.port() == 4500 {
                    // IKE behind the non-ESP marker; ESP and keepalives are
                    // not ours to handle here.
                    match d.strip_prefix(&NON_ESP_MARKER) {
                        Some(rest) => d = rest,
                        None => continue,
                    }
                }
                if tx.send((Path { local, remote }, d.to_vec())).is_err() {
                    return;
                }
            }
        });
    }
    emit(
        started,
        json!({"type": "ready", "local": ike_socket.local_addr().ok().map(|a| a.to_string())}),
    );

    let mut timer: Option<Timestamp> = None;
    let mut actions = if initiate {
        ike.initiate(now())
    } else {
        Vec::new()
    };
    loop {
        for a in actions.drain(..) {
            match a {
                Action::Send(d) => {
                    sends += 1;
                    let dropped = drop_send.contains(&sends);
                    let (socket, bytes) = if d.bytes == [0xff] {
                        // A NAT-keepalive: on 4500, without the marker.
                        (&natt_socket, d.bytes.clone())
                    } else if d.path.local.port() == 4500 {
                        let mut b = NON_ESP_MARKER.to_vec();
                        b.extend_from_slice(&d.bytes);
                        (&natt_socket, b)
                    } else {
                        (&ike_socket, d.bytes.clone())
                    };
                    let sent = if dropped {
                        Ok(0)
                    } else {
                        socket.send_to(&bytes, d.path.remote)
                    };
                    let mut v = datagram("send", d.path, &d.bytes, dropped);
                    v["error"] = json!(sent.err().map(|e| e.to_string()));
                    emit(started, v);
                }
                Action::InstallChildSa(i) => emit(started, install(&i)),
                Action::DeleteChildSa(d) => emit(
                    started,
                    json!({
                        "type": "delete_child_sa",
                        "inbound_spi": d.inbound_spi.to_string(),
                        "outbound_spi": d.outbound_spi.to_string(),
                    }),
                ),
                Action::UseOutbound(d) => emit(
                    started,
                    json!({
                        "type": "use_outbound",
                        "inbound_spi": d.inbound_spi.to_string(),
                        "outbound_spi": d.outbound_spi.to_string(),
                    }),
                ),
                Action::SetTimer(t) => {
                    timer = Some(t);
                    emit(
                        started,
                        json!({"type": "set_timer", "at_ms": t.as_millis()}),
                    );
                }
                Action::Event(e) => emit(started, event(&e)),
            }
        }
        if exit_after.is_some_and(|d| started.elapsed() >= d) {
            emit(started, json!({"type": "exit"}));
            return;
        }
        let wait = timer.map_or(Duration::from_millis(200), |t| {
            t.saturating_since(now()).min(Duration::from_millis(200))
        });
        match rx.recv_timeout(wait) {
            Ok((path, bytes)) => {
                recvs += 1;
                let dropped = drop_recv.contains(&recvs);
                emit(started, datagram("recv", path, &bytes, dropped));
                if !dropped {
                    // A SetTimer in the answer replaces the pending one;
                    // none means no timer is pending.
                    timer = None;
                    actions = ike.handle(&bytes, path, now());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if timer.is_some_and(|t| t <= now()) {
                    timer = None;
                    actions = ike.tick(now());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}
