//! The compartment init: PID 1 inside a personality (the init's own binary, executed
//! by [`crate::runtime`] as `appliance-compartment <side>` after the compartment is
//! built and confined).
//!
//! Descriptors on entry: 0 `/dev/null`, 1 and 2 the service-output pipe, 3 the event
//! pipe to the init, 4 the runtime plan (read to EOF). Everything else is closed.
//! The event pipe is the compartment init's alone: it is made close-on-exec at once,
//! and every program it starts (setup, services) gets descriptors 0, 1 and 2 only,
//! so no service can write events (`up`, `setup done`, `error: …`) in its name.
//!
//! It applies Landlock (read-only everywhere, writable `/run`, `/tmp`, `/dev`,
//! `/proc/sys/net`), makes itself non-dumpable, runs the personality's network setup
//! program to completion (bounding set CAP_NET_ADMIN + CAP_NET_RAW), starts each
//! service with its own capability bounding set, reaps every process of the
//! compartment, restarts services by their restart policy with back-off, and on
//! SIGTERM stops the services (SIGTERM, 2 s, SIGKILL) and exits.
//!
//! In black it also runs the management relay ([`crate::relay`], the
//! attestation agent's and the update receiver's way in) as a service of its
//! own: no capabilities, restarted with back-off.
//!
//! Events it writes (one per line, relayed by the init as `appliance: <side>: …`):
//! `landlock …`, `setup done`, `service <name> started (pid N)`,
//! `service <name> exited (…); restarting in Ns`, `up`, `error: …`.

use crate::confine;
use crate::plan::{Plan, Restart, ServicePlan, Side, MAX_PLAN_LEN};
use crate::runtime::{describe_status, next_backoff};
use crate::sys;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Bounding set of the network setup program: CAP_NET_ADMIN, CAP_NET_RAW.
const SETUP_CAPS: [u8; 2] = [12, 13];
/// How long the setup program may run.
const SETUP_LIMIT: Duration = Duration::from_secs(60);

struct Svc {
    plan: ServicePlan,
    pid: Option<libc::pid_t>,
    started: Instant,
    delay: Duration,
    next_start: Option<Instant>,
}

/// How black's management relay reaches the init.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MgmtRelay {
    /// The init's socket bind-mounted at [`crate::update::BLACK_DIR`] (a compartment).
    Socket,
    /// A virtio serial port carrying [`crate::mgmtlink`] frames (a VM).
    Serial(std::path::PathBuf),
    /// No relay.
    Off,
}

/// Black's management relay, supervised like a service.
struct Relay {
    port: u16,
    via: MgmtRelay,
    pid: Option<libc::pid_t>,
    started: Instant,
    delay: Duration,
    next_start: Option<Instant>,
}

struct Events(File);

impl Events {
    fn say(&mut self, line: &str) {
        let _ = self.0.write_all(format!("{line}\n").as_bytes());
    }
}

/// The management relay, forked from this process (no exec), with an empty
/// bounding set.
fn spawn_relay(port: u16, via: &MgmtRelay) -> std::io::Result<libc::pid_t> {
    let pid = sys::clone_fork(0)?;
    if pid == 0 {
        if sys::close_from(3).is_err() {
            sys::exit_now(126);
        }
        let _ = sys::unblock_all_signals();
        if confine::limit_bounding_set(&[]).is_err() {
            sys::exit_now(126);
        }
        let err = match via {
            MgmtRelay::Serial(device) => crate::mgmtlink::relay_serial(port, device),
            _ => {
                let socket =
                    std::path::Path::new(crate::update::BLACK_DIR).join(crate::update::SOCKET);
                crate::relay::run(port, &socket)
            }
        };
        let _ = writeln!(std::io::stderr(), "relay: port {port}: {err}");
        sys::exit_now(1);
    }
    Ok(pid)
}

fn spawn(argv: &[String], caps: &[u8]) -> std::io::Result<libc::pid_t> {
    let pid = sys::clone_fork(0)?;
    if pid == 0 {
        // Only standard input, output and error go on: never the event pipe.
        if sys::close_from(3).is_err() {
            sys::exit_now(126);
        }
        let _ = sys::unblock_all_signals();
        if confine::limit_bounding_set(caps).is_err() {
            sys::exit_now(126);
        }
        let err = sys::exec(
            None,
            argv,
            &["PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_owned()],
        );
        let _ = writeln!(std::io::stderr(), "exec {}: {err}", argv[0]);
        sys::exit_now(127);
    }
    Ok(pid)
}

/// Entry point (never returns). `side` is `argv[1]`.
pub fn main(side: &str) -> ! {
    let code = run_in(side, MgmtRelay::Socket);
    sys::exit_now(code)
}

/// The compartment init's work on the descriptors above; `relay`: how black's
/// management relay reaches the init. Returns the exit code.
pub fn run_in(side: &str, relay: MgmtRelay) -> i32 {
    let Ok(ev) = sys::adopt_fd(3) else {
        return 111;
    };
    if sys::set_cloexec(ev.as_fd()).is_err() {
        return 111;
    }
    let mut ev = Events(File::from(ev));
    let plan = match sys::adopt_fd(4) {
        Ok(fd) => {
            let mut b = Vec::new();
            let _ = File::from(fd)
                .take(MAX_PLAN_LEN as u64 + 1)
                .read_to_end(&mut b);
            b
        }
        Err(e) => {
            ev.say(&format!("error: no plan on descriptor 4: {e}"));
            return 111;
        }
    };
    let _ = sys::close_from(5);
    let _ = sys::prctl(libc::PR_SET_DUMPABLE, 0);
    let plan = match Plan::decode(&plan) {
        Ok(p) => p,
        Err(e) => {
            ev.say(&format!("error: plan: {e}"));
            return 111;
        }
    };
    let want = match side {
        "red" => Side::Red,
        "black" => Side::Black,
        other => {
            ev.say(&format!("error: unknown side {other:?}"));
            return 111;
        }
    };
    let mut relay = match want {
        Side::Black if relay != MgmtRelay::Off => Some(Relay {
            port: plan.management_port(),
            via: relay,
            pid: None,
            started: Instant::now(),
            delay: Duration::ZERO,
            next_start: Some(Instant::now()),
        }),
        _ => None,
    };
    let Some(c) = plan.compartments.into_iter().find(|c| c.side == want) else {
        ev.say(&format!("error: the plan has no {side} compartment"));
        return 111;
    };
    match confine::landlock_personality() {
        Ok(s) => ev.say(&format!("landlock {s:?}").to_lowercase()),
        Err(e) => {
            ev.say(&format!("error: {e}"));
            return 111;
        }
    }
    let sigfd = match sys::signalfd(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT]) {
        Ok(fd) => File::from(fd),
        Err(e) => {
            ev.say(&format!("error: signalfd: {e}"));
            return 111;
        }
    };

    // Network setup, to completion.
    let setup = vec![c.setup.as_str().to_owned()];
    let started = Instant::now();
    match spawn(&setup, &SETUP_CAPS) {
        Err(e) => {
            ev.say(&format!("error: starting setup {}: {e}", c.setup));
            return 2;
        }
        Ok(pid) => loop {
            match sys::reap_one() {
                Ok(Some((p, status))) if p == pid => {
                    if status != 0 {
                        ev.say(&format!(
                            "error: setup {} failed ({})",
                            c.setup,
                            describe_status(status)
                        ));
                        return 2;
                    }
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    ev.say(&format!("error: waiting for setup: {e}"));
                    return 2;
                }
            }
            if started.elapsed() > SETUP_LIMIT {
                let _ = sys::kill(pid, libc::SIGKILL);
                ev.say(&format!(
                    "error: setup {} still running after {}s; killed",
                    c.setup,
                    SETUP_LIMIT.as_secs()
                ));
                return 2;
            }
            std::thread::sleep(Duration::from_millis(20));
        },
    }
    ev.say("setup done");

    let mut svcs: Vec<Svc> = c
        .services
        .into_iter()
        .map(|plan| Svc {
            plan,
            pid: None,
            started: Instant::now(),
            delay: Duration::ZERO,
            next_start: Some(Instant::now()),
        })
        .collect();
    let mut announced = false;
    loop {
        let now = Instant::now();
        if let Some(r) = relay.as_mut() {
            if r.next_start.is_some_and(|t| t <= now) {
                r.next_start = None;
                match spawn_relay(r.port, &r.via) {
                    Ok(pid) => {
                        r.pid = Some(pid);
                        r.started = Instant::now();
                        ev.say(&format!(
                            "service relay started (pid {pid}, port {})",
                            r.port
                        ));
                    }
                    Err(e) => {
                        r.delay = next_backoff(r.delay, Duration::ZERO);
                        r.next_start = Some(Instant::now() + r.delay);
                        ev.say(&format!(
                            "service relay cannot start: {e}; retrying in {}s",
                            r.delay.as_secs()
                        ));
                    }
                }
            }
        }
        for s in &mut svcs {
            if s.next_start.is_some_and(|t| t <= now) {
                s.next_start = None;
                let caps: Vec<u8> = s.plan.caps.iter().map(|c| c.0).collect();
                match spawn(&s.plan.argv, &caps) {
                    Ok(pid) => {
                        s.pid = Some(pid);
                        s.started = Instant::now();
                        ev.say(&format!("service {} started (pid {pid})", s.plan.name));
                    }
                    Err(e) => {
                        s.delay = next_backoff(s.delay, Duration::ZERO);
                        s.next_start = Some(Instant::now() + s.delay);
                        ev.say(&format!(
                            "service {} cannot start: {e}; retrying in {}s",
                            s.plan.name,
                            s.delay.as_secs()
                        ));
                    }
                }
            }
        }
        if !announced {
            ev.say("up");
            announced = true;
        }
        let timeout = svcs
            .iter()
            .filter_map(|s| s.next_start)
            .chain(relay.as_ref().and_then(|r| r.next_start))
            .min()
            .map(|t| t.saturating_duration_since(Instant::now()).as_millis())
            .unwrap_or(1000)
            .min(1000) as libc::c_int;
        let mut term = false;
        if let Ok(r) = sys::poll_readable(&[sigfd.as_fd()], timeout) {
            if r.first().copied().unwrap_or(false) {
                let mut info = [0u8; 128];
                if let Ok(128) = (&sigfd).read(&mut info) {
                    let signo = i32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
                    term = signo == libc::SIGTERM || signo == libc::SIGINT;
                }
            }
        }
        while let Ok(Some((pid, status))) = sys::reap_one() {
            if let Some(r) = relay.as_mut().filter(|r| r.pid == Some(pid)) {
                r.pid = None;
                if !term {
                    r.delay = next_backoff(r.delay, r.started.elapsed());
                    r.next_start = Some(Instant::now() + r.delay);
                    ev.say(&format!(
                        "service relay exited ({}); restarting in {}s",
                        describe_status(status),
                        r.delay.as_secs()
                    ));
                }
                continue;
            }
            let Some(s) = svcs.iter_mut().find(|s| s.pid == Some(pid)) else {
                continue; // an orphan of the compartment, now reaped
            };
            s.pid = None;
            let failed = status != 0;
            let again = !term
                && match s.plan.restart {
                    Restart::Always => true,
                    Restart::OnFailure => failed,
                    Restart::Never => false,
                };
            if again {
                s.delay = next_backoff(s.delay, s.started.elapsed());
                s.next_start = Some(Instant::now() + s.delay);
                ev.say(&format!(
                    "service {} exited ({}); restarting in {}s",
                    s.plan.name,
                    describe_status(status),
                    s.delay.as_secs()
                ));
            } else {
                ev.say(&format!(
                    "service {} exited ({}); not restarted",
                    s.plan.name,
                    describe_status(status)
                ));
            }
        }
        if term {
            ev.say("stopping");
            for s in &svcs {
                if let Some(pid) = s.pid {
                    let _ = sys::kill(pid, libc::SIGTERM);
                }
            }
            if let Some(pid) = relay.as_ref().and_then(|r| r.pid) {
                let _ = sys::kill(pid, libc::SIGKILL);
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while svcs.iter().any(|s| s.pid.is_some()) && Instant::now() < deadline {
                while let Ok(Some((pid, _))) = sys::reap_one() {
                    if let Some(s) = svcs.iter_mut().find(|s| s.pid == Some(pid)) {
                        s.pid = None;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // PID 1 of the namespace exiting kills whatever is left.
            return 0;
        }
    }
}
