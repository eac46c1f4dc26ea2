//! `viaduct`: loads the policy blob, opens the red and black TUN ports,
//! confines itself and pumps packets until SIGTERM/SIGINT. SIGUSR1 prints
//! the counters to stderr (they are also printed at exit).
//!
//! ```text
//! viaduct --policy FILE
//!         (--red NAME [--red-netns PATH] | --red-fd N | --red-vhost PATH | --red-vhost-fd N)
//!         (--black NAME [--black-netns PATH] | --black-fd N | --black-vhost PATH | --black-vhost-fd N)
//!         [--key-claim SHA256] [--ike-channel FD] [--threads 1|2]
//!         [--fpm-fd N | --fpm-listen ADDR:PORT [--fpm-netns PATH]]
//!         [--no-offload] [--no-confine]
//! ```
//!
//! `--fpm-fd` (a listening TCP socket the init made in black's network
//! namespace) or `--fpm-listen` (made here, in `--fpm-netns` when given)
//! is where black's routing daemon (FRR's zebra with `dplane_fpm_nl`)
//! streams its forwarding table, for a policy that learns routes (role
//! `router`, `[viaduct.learned_routes]`); see `viaduct::fpmlink`.
//!
//! `--red-vhost PATH` (or an inherited listening socket, `--red-vhost-fd`)
//! makes the port a vhost-user-net back end for the personality's VM (the
//! `microvm` runtime): its VMM connects there and the Viaduct moves packets
//! through the guest's virtqueues (see `viaduct_vhost`). The guest's MAC is
//! `02:76:64:00:00:01` on red and `…:02` on black, the Viaduct's
//! `02:76:64:00:00:fe`; the guest runs its interface without ARP. A VM that
//! goes away stops its port's queues; the next one to connect is served
//! (the SAs stay).
//!
//! `--ike-channel` is the data plane's end of the socketpair the init shares
//! with the IKE process (`viaduct-ike --channel`): a `SOCK_SEQPACKET`
//! socket. The IKE messages black delivers go to it, and the SAs it asks for
//! are checked and installed (see `viaduct::ikelink`). Without it, tunnels
//! keyed by IKE stay closed.
//!
//! `--key-claim` is required when the policy has manually keyed SAs: the SHA-256 of
//! the policy's key-use set (`policy_blob::KeyUses::digest`), given by the gateway
//! init once it has recorded those keys in its TPM ledger. Without it, or with
//! another set's digest, no manual SA is installed and the Viaduct exits: a manual
//! key must never be installed twice (its sequence numbers, hence its AEAD nonces,
//! would start again at 1). See `viaduct::ledger`.
//!
//! `--threads 2` (the default) gives each direction its own pump thread (a
//! core per direction); `--threads 1` carries both in one thread, which
//! takes the acknowledgements of a bulk transfer between batches instead of
//! waking a second thread for them (for machines with a core or two shared
//! with both personalities; on the two-core bench host the two settings
//! measure the same).
//!
//! A red device opened by name gets a vnet header (IFF_VNET_HDR) and TSO
//! offloads unless `--no-offload`; so does a black device opened by name
//! when a tunnel sends ESP in UDP (UDP segmentation offload, so that one
//! write carries many ESP datagrams); an inherited descriptor keeps the flags
//! its creator chose, and offloads are negotiated when it has the header.
//! `--no-offload` switches segmentation and coalescing off (for A/B runs and
//! as an escape hatch).

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use policy_blob::Policy;
use std::os::fd::OwnedFd;
use viaduct::ikelink;
use viaduct::pump::{self, Control, Inbound, Outbound, PumpConfig};

use viaduct::port::Port as PumpPort;
use viaduct::tun::{self, Port};
use viaduct::{ClaimToken, Engine, EngineError, Timestamp};
use viaduct_vhost::PortShared;

#[derive(Default)]
struct Args {
    policy: Option<String>,
    red: Option<String>,
    black: Option<String>,
    red_netns: Option<String>,
    black_netns: Option<String>,
    red_fd: Option<i32>,
    black_fd: Option<i32>,
    red_vhost: Option<String>,
    black_vhost: Option<String>,
    red_vhost_fd: Option<i32>,
    black_vhost_fd: Option<i32>,
    no_confine: bool,
    no_offload: bool,
    threads: usize,
    key_claim: Option<[u8; 32]>,
    ike_channel: Option<i32>,
    fpm_fd: Option<i32>,
    fpm_listen: Option<std::net::SocketAddr>,
    fpm_netns: Option<String>,
}

const USAGE: &str = "usage: viaduct --policy FILE \
(--red NAME [--red-netns PATH] | --red-fd N | --red-vhost PATH | --red-vhost-fd N) \
(--black NAME [--black-netns PATH] | --black-fd N | --black-vhost PATH | --black-vhost-fd N) \
[--key-claim SHA256] [--ike-channel FD] [--threads 1|2] \
[--fpm-fd N | --fpm-listen ADDR:PORT [--fpm-netns PATH]] [--no-offload] [--no-confine]";

fn parse_args() -> Result<Args, EngineError> {
    let mut a = Args {
        threads: 2,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    let usage = |m: String| EngineError::Usage(format!("{m}\n{USAGE}"));
    while let Some(flag) = it.next() {
        if flag == "--no-confine" {
            a.no_confine = true;
            continue;
        }
        if flag == "--no-offload" {
            a.no_offload = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(EngineError::Usage(USAGE.to_owned()));
        }
        let v = it
            .next()
            .ok_or_else(|| usage(format!("{flag} needs a value")))?;
        let fd = |v: &str| {
            v.parse::<i32>()
                .map_err(|_| usage(format!("{flag} needs a file descriptor number, got {v:?}")))
        };
        match flag.as_str() {
            "--policy" => a.policy = Some(v),
            "--red" => a.red = Some(v),
            "--black" => a.black = Some(v),
            "--red-netns" => a.red_netns = Some(v),
            "--black-netns" => a.black_netns = Some(v),
            "--red-fd" => a.red_fd = Some(fd(&v)?),
            "--black-fd" => a.black_fd = Some(fd(&v)?),
            "--red-vhost" => a.red_vhost = Some(v),
            "--black-vhost" => a.black_vhost = Some(v),
            "--red-vhost-fd" => a.red_vhost_fd = Some(fd(&v)?),
            "--black-vhost-fd" => a.black_vhost_fd = Some(fd(&v)?),
            "--ike-channel" => a.ike_channel = Some(fd(&v)?),
            "--fpm-fd" => a.fpm_fd = Some(fd(&v)?),
            "--fpm-listen" => {
                a.fpm_listen = Some(
                    v.parse()
                        .map_err(|_| usage(format!("--fpm-listen takes ADDR:PORT, got {v:?}")))?,
                )
            }
            "--fpm-netns" => a.fpm_netns = Some(v),
            "--key-claim" => {
                let mut d = [0u8; 32];
                policy_blob::unhex(&v, &mut d).ok_or_else(|| {
                    usage(format!(
                        "--key-claim takes 64 lowercase hex digits, got {v:?}"
                    ))
                })?;
                a.key_claim = Some(d);
            }
            "--threads" => {
                a.threads = match v.as_str() {
                    "1" => 1,
                    "2" => 2,
                    _ => return Err(usage(format!("--threads takes 1 or 2, got {v:?}"))),
                }
            }
            _ => return Err(usage(format!("unknown argument {flag:?}"))),
        }
    }
    if a.policy.is_none() {
        return Err(usage("--policy is required".into()));
    }
    let fds: Vec<i32> = [
        a.red_fd,
        a.black_fd,
        a.red_vhost_fd,
        a.black_vhost_fd,
        a.ike_channel,
        a.fpm_fd,
    ]
    .into_iter()
    .flatten()
    .collect();
    if (1..fds.len()).any(|i| fds[..i].contains(&fds[i])) {
        return Err(usage(
            "the ports, the IKE channel and the FPM socket need different descriptors".into(),
        ));
    }
    if a.fpm_fd.is_some() && a.fpm_listen.is_some() {
        return Err(usage(
            "give either --fpm-fd or --fpm-listen, not both".into(),
        ));
    }
    if a.fpm_netns.is_some() && a.fpm_listen.is_none() {
        return Err(usage("--fpm-netns goes with --fpm-listen".into()));
    }
    for (side, n) in [
        (
            "red",
            [
                a.red.is_some(),
                a.red_fd.is_some(),
                a.red_vhost.is_some(),
                a.red_vhost_fd.is_some(),
            ],
        ),
        (
            "black",
            [
                a.black.is_some(),
                a.black_fd.is_some(),
                a.black_vhost.is_some(),
                a.black_vhost_fd.is_some(),
            ],
        ),
    ] {
        if n.iter().filter(|x| **x).count() > 1 {
            return Err(usage(format!(
                "give one of --{side}, --{side}-fd, --{side}-vhost and --{side}-vhost-fd"
            )));
        }
    }
    Ok(a)
}

/// Opens or adopts one port and negotiates its offloads (`req`). A device
/// opened by name gets a vnet header when `req` asks for offloads; an
/// adopted one keeps what its creator chose.
fn port(
    side: &str,
    name: &Option<String>,
    netns: &Option<String>,
    fd: Option<i32>,
    req: tun::OffloadRequest,
) -> Result<Port, EngineError> {
    let vnet_by_name = req.want != 0;
    let (fd, vnet, label) = match (name, fd) {
        (Some(_), Some(_)) => {
            return Err(EngineError::Usage(format!(
                "give either --{side} or --{side}-fd, not both\n{USAGE}"
            )))
        }
        (None, Some(n)) => {
            let (fd, vnet) = tun::adopt(n)?;
            (fd, vnet, format!("fd {n}"))
        }
        (Some(n), None) => {
            let fd = match netns {
                Some(ns) => tun::open_in_netns(n, ns, vnet_by_name)?,
                None => tun::open(n, vnet_by_name)?,
            };
            (fd, vnet_by_name, n.clone())
        }
        (None, None) => {
            return Err(EngineError::Usage(format!(
                "--{side} or --{side}-fd is required\n{USAGE}"
            )))
        }
    };
    tun::negotiate(fd, vnet, req, &label)
}

/// One side before the pump starts: a TUN device, or a vhost-user port
/// with its listening socket.
enum Side {
    Tun(Port),
    Vhost(Arc<PortShared>, OwnedFd),
}

impl Side {
    fn describe(&self) -> String {
        match self {
            Side::Tun(p) => format!("offloads {}", p.describe_offloads()),
            Side::Vhost(..) => "vhost-user-net (no offloads)".to_owned(),
        }
    }

    /// The input port, the output port, and the control plane to serve.
    #[allow(clippy::type_complexity)]
    fn split(
        self,
    ) -> Result<(PumpPort, PumpPort, Option<(OwnedFd, Arc<PortShared>)>), EngineError> {
        match self {
            Side::Tun(p) => {
                let q = p.try_clone().map_err(|e| EngineError::Io {
                    port: "tun",
                    source: e,
                })?;
                Ok((p.into(), q.into(), None))
            }
            Side::Vhost(shared, listener) => {
                let (tx, rx) = shared.halves();
                Ok((
                    PumpPort::VhostIn(tx),
                    PumpPort::VhostOut(rx),
                    Some((listener, shared)),
                ))
            }
        }
    }
}

/// Opens one side: a vhost-user port when `vhost` or `vhost_fd` is given,
/// else what `tun` opens.
fn side(
    name: &'static str,
    vhost: &Option<String>,
    vhost_fd: Option<i32>,
    guest_mac: [u8; 6],
    tun: impl FnOnce() -> Result<Port, EngineError>,
) -> Result<Side, EngineError> {
    let io = |e: std::io::Error| EngineError::Io {
        port: name,
        source: e,
    };
    let listener = match (vhost, vhost_fd) {
        (Some(path), None) => viaduct_vhost::listen(std::path::Path::new(path)).map_err(io)?,
        (None, Some(n)) => {
            viaduct_vhost::backend::adopt_listener(take_fd(n).map_err(io)?).map_err(io)?
        }
        _ => return Ok(Side::Tun(tun()?)),
    };
    let shared = PortShared::new(name, guest_mac, viaduct_vhost::net::VIADUCT_MAC).map_err(io)?;
    Ok(Side::Vhost(shared, listener))
}

/// Takes ownership of inherited descriptor `n` (checked open).
fn take_fd(n: i32) -> std::io::Result<OwnedFd> {
    viaduct::tun::adopt_raw(n)
}

fn run() -> Result<(), EngineError> {
    let args = parse_args()?;
    let path = args.policy.clone().unwrap_or_default();
    // Policy first: a bad blob must stop us before any port exists.
    // The raw blob holds lab keys in clear: wiped when dropped, on every path.
    let blob =
        zeroize::Zeroizing::new(std::fs::read(&path).map_err(|e| EngineError::PolicyFile {
            path: path.clone(),
            source: e,
        })?);
    let policy = Policy::decode(&blob)?;
    let mut claim = match args.key_claim {
        Some(d) => ClaimToken::new(d),
        None => ClaimToken::none(),
    };
    let engine = Engine::new(&policy, Timestamp(0), &mut claim)?;
    drop(blob);
    let channel = args
        .ike_channel
        .map(viaduct::ikelink::adopt_channel)
        .transpose()?;
    if channel.is_none() && policy.ike.is_some() {
        eprintln!(
            "viaduct: WARNING: the policy keys tunnels by IKE but no --ike-channel was given; \
             those tunnels stay closed"
        );
    }
    let offload = !args.no_offload;
    // Plain ESP has no segmentation offload, so black gets a vnet header
    // only when a tunnel sends ESP in UDP (UDP segmentation, kernel ≥ 6.2).
    let udp = policy.tunnels.iter().any(|t| t.udp_encap);
    let (red_req, black_req) = match (offload, udp) {
        (false, _) => (tun::OffloadRequest::NONE, tun::OffloadRequest::NONE),
        (true, false) => (tun::OffloadRequest::RED, tun::OffloadRequest::NONE),
        (true, true) => (tun::OffloadRequest::RED, tun::OffloadRequest::BLACK_UDP),
    };
    let red = side(
        "red",
        &args.red_vhost,
        args.red_vhost_fd,
        viaduct_vhost::net::GUEST_MAC_RED,
        || port("red", &args.red, &args.red_netns, args.red_fd, red_req),
    )?;
    let black = side(
        "black",
        &args.black_vhost,
        args.black_vhost_fd,
        viaduct_vhost::net::GUEST_MAC_BLACK,
        || {
            port(
                "black",
                &args.black,
                &args.black_netns,
                args.black_fd,
                black_req,
            )
        },
    )?;
    eprintln!(
        "viaduct: red {}; black {}",
        red.describe(),
        black.describe()
    );
    // Black's routing daemon's socket (a policy that learns routes).
    let fpm = match (args.fpm_fd, args.fpm_listen) {
        (Some(n), _) => {
            let fd = tun::adopt_raw(n).map_err(|e| EngineError::BadFd { fd: n, source: e })?;
            Some(viaduct::fpmlink::adopt(fd)?)
        }
        (None, Some(addr)) => Some(viaduct::fpmlink::listen(addr, args.fpm_netns.as_deref())?),
        (None, None) => None,
    };
    let routes = engine.routes();
    let fpm = match (fpm, policy.learn.is_some(), routes.clone()) {
        (Some(l), true, Some(r)) => Some((l, r)),
        (Some(_), _, _) => {
            eprintln!("viaduct: WARNING: the policy learns no routes; the FPM socket is closed");
            None
        }
        (None, true, _) => {
            eprintln!(
                "viaduct: WARNING: the policy learns routes from black but no --fpm-fd or \
                 --fpm-listen was given; none will be learned"
            );
            None
        }
        (None, false, _) => None,
    };
    // Each side as an input (what its personality sends) and an output.
    let (red_in, red_out, red_listener) = red.split()?;
    let (black_in, black_out, black_listener) = black.split()?;
    // The IKE link: mailboxes (eventfds), made before confinement.
    let link = match channel {
        Some(ch) => {
            let io =
                |port: &'static str| move |e: std::io::Error| EngineError::Io { port, source: e };
            let (to_in, in_mail) = ikelink::mailbox().map_err(io("ike-channel"))?;
            let (to_out, out_mail) = ikelink::mailbox().map_err(io("ike-channel"))?;
            Some((Arc::new(ch), to_in, in_mail, to_out, out_mail))
        }
        None => None,
    };
    viaduct::process::malloc_without_files().map_err(|e| EngineError::Confine {
        step: "allocator settings",
        detail: e.to_string(),
    })?;
    let signals = [libc::SIGUSR1, libc::SIGTERM, libc::SIGINT, libc::SIGHUP];
    viaduct_sys_block(&signals)?;
    if args.no_confine {
        eprintln!("viaduct: WARNING: running unconfined (--no-confine)");
    } else {
        let c = viaduct::confine::confine()?;
        if !c.landlock {
            eprintln!(
                "viaduct: Landlock unavailable on this kernel; relying on seccomp (no open/openat)"
            );
        }
    }
    eprintln!(
        "viaduct: policy {} {} (digest {}) loaded, {} tunnel(s); pumping with {} thread(s)",
        policy.profile_name,
        policy.profile_version,
        policy.digest(),
        policy.tunnels.len(),
        args.threads
    );
    // The init counts these lines (from this process's own pipe, which no
    // personality writes) to judge a trial boot good ("tunnels-up").
    for t in policy.tunnels.iter().filter(|t| t.manual.is_some()) {
        eprintln!("viaduct: tunnel {} keyed ({}, manual keys)", t.id.0, t.name);
    }
    drop(policy);
    let (out_half, in_half, control) = engine.split();
    let ctl = Arc::new(Control::default());
    let cfg = PumpConfig { gro: offload };
    let mut outbound = Outbound::new(out_half, red_in, black_out);
    let mut inbound = Inbound::new(in_half, black_in, red_out, cfg);
    let mut control_thread = None;
    if let Some((ch, to_in, in_mail, to_out, out_mail)) = link {
        outbound = outbound.with_ike(out_mail, ikelink::Tap::new(ch.clone()));
        inbound = inbound.with_ike(in_mail, to_out, ikelink::Tap::new(ch.clone()));
        let c = ctl.clone();
        let links = ikelink::Links {
            channel: ch,
            inbound: to_in,
        };
        control_thread = Some(std::thread::spawn(move || {
            ikelink::serve(control, links, &c)
        }));
    }
    let mut threads = Vec::new();
    let fpm_thread = fpm.map(|(listener, routes)| {
        let c = ctl.clone();
        std::thread::spawn(move || viaduct::fpmlink::serve(listener, routes, &c.stop))
    });
    // The vhost-user control planes: one thread per port, serving one VMM
    // at a time (confined like the pump: started after confinement).
    let mut vhost_threads = Vec::new();
    for (listener, shared) in [red_listener, black_listener].into_iter().flatten() {
        let c = ctl.clone();
        vhost_threads.push(std::thread::spawn(move || {
            viaduct_vhost::serve(listener, shared, &c.stop)
        }));
    }
    if args.threads == 1 {
        let c = ctl.clone();
        // Inbound first: its commands (installs, IKE messages to send) pass
        // the outbound direction's on, which are then taken in the same turn.
        threads.push(std::thread::spawn(move || {
            pump::run(&mut [&mut inbound, &mut outbound], &c)
        }));
    } else {
        let c = ctl.clone();
        threads.push(std::thread::spawn(move || {
            pump::run(&mut [&mut outbound], &c)
        }));
        let c = ctl.clone();
        threads.push(std::thread::spawn(move || {
            pump::run(&mut [&mut inbound], &c)
        }));
    }
    // Signals, and a pump thread that ended on its own (a port failed): then
    // the others stop too and the process exits with the error, so that its
    // supervisor can start it again.
    loop {
        match viaduct_sys_wait(&signals)? {
            Some(libc::SIGUSR1) => {
                ctl.dump.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => break,
            None if threads.iter().any(|t| t.is_finished()) => break,
            None => {}
        }
    }
    ctl.stop.store(true, Ordering::Relaxed);
    // Join every thread (each prints its counters on the way out), then
    // report the first failure.
    let mut first = Ok(());
    for t in vhost_threads {
        if t.join().is_err() {
            eprintln!("viaduct: a vhost-user control thread panicked");
        }
    }
    if let Some(t) = fpm_thread {
        if t.join().is_err() {
            eprintln!("viaduct: the FPM thread panicked");
        }
    }
    if let Some(t) = control_thread {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("viaduct: the IKE channel failed: {e}"),
            Err(_) => eprintln!("viaduct: the IKE control thread panicked"),
        }
    }
    for t in threads {
        let r = t.join().unwrap_or_else(|_| {
            Err(EngineError::Io {
                port: "red/black",
                source: std::io::Error::other("pump thread panicked"),
            })
        });
        if first.is_ok() {
            first = r;
        }
    }
    first
}

fn viaduct_sys_block(signals: &[i32]) -> Result<(), EngineError> {
    viaduct::process::block(signals).map_err(|e| EngineError::Confine {
        step: "signal mask",
        detail: e.to_string(),
    })
}

fn viaduct_sys_wait(signals: &[i32]) -> Result<Option<i32>, EngineError> {
    viaduct::process::wait(signals, std::time::Duration::from_millis(200)).map_err(|e| {
        EngineError::Confine {
            step: "signal wait",
            detail: e.to_string(),
        }
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("viaduct: error: {e}");
            ExitCode::from(2)
        }
    }
}
