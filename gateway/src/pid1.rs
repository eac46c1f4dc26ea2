//! PID 1 duties: early mounts, console, signal handling, zombie reaping, shutdown.
//!
//! Signals (delivered through a signalfd, so no async handlers run):
//! SIGCHLD → reap; SIGUSR1 → status line; SIGUSR2, SIGPWR → poweroff;
//! SIGTERM, SIGINT (Ctrl-Alt-Del once `reboot(RB_DISABLE_CAD)` is set) → reboot.
//! Console commands: `poweroff`, `reboot`, `status`, `counters`, `kill <compartment>`.
//!
//! Invariants: [`supervise`] never returns (PID 1 exiting panics the kernel). In the
//! closed state it starts nothing and only answers status/poweroff/reboot. Shutdown
//! sends SIGTERM to every process, waits up to [`GRACE_MS`], sends SIGKILL, syncs,
//! unmounts, then calls `reboot(2)`; if that fails it logs and waits forever.

use crate::console::{parse_command, Command, LineBuffer, Logger};
use crate::plan::Plan;
use crate::runtime::Runtime;
use crate::sys;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::time::{Duration, Instant};

/// How long processes get between SIGTERM and SIGKILL at shutdown.
pub const GRACE_MS: u64 = 3000;

/// One early mount.
#[derive(Clone, Copy, Debug)]
pub struct MountSpec {
    /// Source (device or pseudo name).
    pub source: &'static str,
    /// Mount point.
    pub target: &'static str,
    /// Filesystem type.
    pub fstype: &'static str,
    /// `MS_*` flags.
    pub flags: libc::c_ulong,
    /// Filesystem options.
    pub data: &'static str,
}

const SAFE: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// The early mounts, in order (parents before children).
pub const MOUNTS: [MountSpec; 6] = [
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: SAFE,
        data: "",
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: SAFE,
        data: "",
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: libc::MS_NOSUID,
        data: "mode=0755",
    },
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=0755",
    },
    MountSpec {
        source: "securityfs",
        target: "/sys/kernel/security",
        fstype: "securityfs",
        flags: SAFE,
        data: "",
    },
    MountSpec {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: SAFE,
        data: "",
    },
];

/// Performs [`MOUNTS`], tolerating "already mounted" (EBUSY). Returns the failures
/// (they are logged by the caller; a missing /proc is detected later as an error).
pub fn mount_early() -> Vec<String> {
    let mut failures = Vec::new();
    for m in MOUNTS {
        if let Err(e) = std::fs::create_dir_all(m.target) {
            failures.push(format!("mkdir {}: {e}", m.target));
            continue;
        }
        match sys::mount(m.source, m.target, m.fstype, m.flags, m.data) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => failures.push(format!("mount {} on {}: {e}", m.fstype, m.target)),
        }
    }
    failures
}

/// Where the kernel's switch against loading modules lives.
pub const MODULES_DISABLED: &str = "/proc/sys/kernel/modules_disabled";

/// Sets `kernel.modules_disabled=1` (through `switch`, normally [`MODULES_DISABLED`])
/// once the plan's drivers are loaded and before anything untrusted starts: from then
/// on no module can be loaded or unloaded until the next boot, neither explicitly nor
/// by the kernel's autoloading on a personality's behalf (an unusual socket family or
/// protocol). Returns whether it took effect; a failure is logged.
pub fn disable_module_loading(switch: &std::path::Path, log: &mut Logger) -> bool {
    match std::fs::write(switch, "1") {
        Ok(()) => {
            log.log("kernel.modules_disabled=1: no module loads from now on");
            true
        }
        Err(e) => {
            log.log(&format!(
                "warning: kernel.modules_disabled=1 ({}): {e}; modules can still be loaded",
                switch.display()
            ));
            false
        }
    }
}

/// Standard output as a non-blocking log sink: a new open file description of it
/// (`/proc/self/fd/1`, appending), so that the descriptors the init shares with others
/// (standard error, the console it was started on) stay as they are. Falls back to
/// the blocking standard output when it cannot be reopened.
pub fn stdout_sink() -> Box<dyn std::io::Write> {
    match std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open("/proc/self/fd/1")
    {
        Ok(f) => Box::new(f),
        Err(_) => Box::new(std::io::stdout()),
    }
}

/// A logger to /dev/console and to stdout, unless stdout is the console itself; both
/// non-blocking (a slow serial console never holds PID 1 up, see [`crate::console`]).
pub fn console_logger() -> Logger {
    let mut sinks: Vec<Box<dyn std::io::Write>> = Vec::new();
    let console = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open("/dev/console");
    let console_rdev = console
        .as_ref()
        .ok()
        .and_then(|f| f.metadata().ok())
        .map(|m| m.rdev());
    let stdout_rdev = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| std::fs::File::from(fd).metadata().ok())
        .filter(|m| m.file_type().is_char_device_like())
        .map(|m| m.rdev());
    if let Ok(c) = console {
        sinks.push(Box::new(c));
    }
    if console_rdev.is_none() || stdout_rdev != console_rdev {
        sinks.push(stdout_sink());
    }
    Logger::new(sinks)
}

trait CharDev {
    fn is_char_device_like(&self) -> bool;
}
impl CharDev for std::fs::FileType {
    fn is_char_device_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_char_device()
    }
}

/// Where the gateway stands.
pub enum State {
    /// Boot succeeded.
    Ready(Box<Plan>),
    /// Boot failed: stay closed, start nothing.
    Closed(String),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Shutdown {
    Poweroff,
    Reboot,
}

fn reap_all() -> usize {
    let mut n = 0;
    while let Ok(Some(_)) = sys::reap_one() {
        n += 1;
    }
    n
}

/// Whether the loop runs as the gateway's PID 1 or as a test harness on a host.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// PID 1: shutdown powers off or reboots the machine.
    Pid1,
    /// Host test: shutdown stops the compartments and exits the process.
    Test,
}

/// Seconds since the kernel started (`/proc/uptime`), else since the loop started.
fn uptime_secs(started: Instant) -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split('.').next().and_then(|w| w.parse().ok()))
        .unwrap_or_else(|| started.elapsed().as_secs())
}

fn status_line(state: &State, started: Instant, reaped: usize) -> String {
    let uptime = uptime_secs(started);
    match state {
        State::Ready(p) => format!(
            "status ready profile {} version {} security-version {} uptime {uptime}s reaped {reaped}",
            p.profile_name, p.profile_version, p.security_version.0
        ),
        State::Closed(why) => format!("status closed uptime {uptime}s reaped {reaped} reason: {why}"),
    }
}

fn shutdown(how: Shutdown, log: &mut Logger) -> ! {
    log.log(match how {
        Shutdown::Poweroff => "poweroff",
        Shutdown::Reboot => "reboot",
    });
    // -1: every process except PID 1 itself. ESRCH just means nobody is left.
    let _ = sys::kill(-1, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_millis(GRACE_MS);
    while Instant::now() < deadline {
        reap_all();
        if let Err(e) = sys::reap_one() {
            if e.raw_os_error() == Some(libc::ECHILD) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = sys::kill(-1, libc::SIGKILL);
    reap_all();
    sys::sync();
    for m in MOUNTS.iter().rev() {
        // /proc, /sys and /dev may still be busy: detach lazily; failures are harmless
        // because everything is synced and the rootfs is a RAM disk.
        let _ = sys::umount(m.target, libc::MNT_DETACH);
    }
    sys::sync();
    let cmd = match how {
        Shutdown::Poweroff => libc::RB_POWER_OFF,
        Shutdown::Reboot => libc::RB_AUTOBOOT,
    };
    log.drain(Duration::from_secs(2));
    let err = sys::reboot(cmd).err();
    log.log(&format!(
        "fatal: reboot(2) failed: {}; halting here",
        err.map_or_else(|| "returned".to_owned(), |e| e.to_string())
    ));
    log.drain(Duration::from_secs(10));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The PID 1 main loop. Never returns.
pub fn supervise(
    state: State,
    mut runtime: Option<Runtime>,
    mut assessment: Option<crate::esp::Assessment>,
    log: &mut Logger,
    mode: Mode,
) -> ! {
    let started = Instant::now();
    if mode == Mode::Pid1 {
        if let Err(e) = sys::reboot(libc::RB_DISABLE_CAD) {
            log.log(&format!("warning: cannot disable Ctrl-Alt-Del reboot: {e}"));
        }
    }
    let signals = [
        libc::SIGCHLD,
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGPWR,
    ];
    let mut sigfd = match sys::signalfd(&signals) {
        Ok(fd) => Some(std::fs::File::from(fd)),
        Err(e) => {
            log.log(&format!(
                "error: signalfd: {e}; signals will not be handled"
            ));
            None
        }
    };
    let console_path = if mode == Mode::Pid1 {
        "/dev/console"
    } else {
        // Standard input, reopened (non-blocking, its own file description);
        // not /dev/stdin, which a minimal /dev lacks.
        "/proc/self/fd/0"
    };
    let mut console = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(console_path)
        .map_err(|e| {
            log.log(&format!(
                "error: console not readable: {e}; commands disabled"
            ))
        })
        .ok();
    let mut lines = LineBuffer::default();
    let mut reaped = 0usize;
    loop {
        // Restarts that are due happen before the descriptors are gathered.
        let due = runtime
            .as_mut()
            .and_then(|rt| rt.tick(log))
            .map_or(1000, |d| d.as_millis().clamp(10, 1000) as libc::c_int);
        // A busy console is written to as it drains, never waited for.
        let due = if log.flush_pending() {
            due
        } else {
            due.min(50)
        };
        let mut fds = Vec::new();
        if let Some(s) = &sigfd {
            fds.push(s.as_fd());
        }
        if let Some(c) = &console {
            fds.push(c.as_fd());
        }
        let fixed = fds.len();
        if let Some(rt) = &runtime {
            fds.extend(rt.fds());
        }
        let mgmt_at = fds.len();
        if let Some(m) = runtime.as_ref().and_then(|rt| rt.mgmt.as_ref()) {
            fds.extend(m.fds());
        }
        // Wake up at least once a second to reap children even if SIGCHLD was missed,
        // sooner when a compartment restart is due.
        let ready = match sys::poll_readable(&fds, due) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log.log(&format!("error: poll: {e}"));
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        drop(fds);
        if let Some(rt) = runtime.as_mut() {
            rt.relay(ready.get(fixed..mgmt_at).unwrap_or(&[]), log);
            rt.check_ready(log);
            if let Some(m) = rt.mgmt.as_mut() {
                let pending = assessment
                    .as_ref()
                    .and_then(crate::esp::Assessment::pending);
                m.on_ready(ready.get(mgmt_at..).unwrap_or(&[]), pending, log);
                m.tick(log);
            }
        }
        if let Some(a) = assessment.as_mut() {
            let (up, keyed) = runtime
                .as_ref()
                .map_or((false, 0), |rt| (rt.is_ready(), rt.keyed_tunnels()));
            if a.tick(up, keyed, log) {
                shutdown(Shutdown::Reboot, log);
            }
        }
        while let Ok(Some((pid, status))) = sys::reap_one() {
            reaped += 1;
            if let Some(rt) = runtime.as_mut() {
                if !rt.on_exit(pid, status, log) {
                    if let Some(m) = rt.mgmt.as_mut() {
                        m.on_exit(pid, status, log);
                    }
                }
            }
        }
        let mut update_reboot = None;
        if let Some(why) = runtime
            .as_mut()
            .and_then(|rt| rt.mgmt.as_mut())
            .and_then(crate::update::Management::take_reboot)
        {
            if mode == Mode::Pid1 {
                log.log(&format!("rebooting: {why}"));
                update_reboot = Some(Shutdown::Reboot);
            } else {
                log.log(&format!("reboot asked for ({why}); test mode: staying up"));
            }
        }

        let mut idx = 0;
        let mut action = None;
        if let Some(s) = sigfd.as_mut() {
            if ready.get(idx).copied().unwrap_or(false) {
                let mut info = [0u8; 128]; // struct signalfd_siginfo
                if let Ok(128) = s.read(&mut info) {
                    let signo = i32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
                    action = match signo {
                        libc::SIGUSR1 => {
                            log.log(&status_line(&state, started, reaped));
                            if let Some(rt) = &runtime {
                                for l in rt.status_lines() {
                                    log.log(&l);
                                }
                            }
                            None
                        }
                        libc::SIGUSR2 | libc::SIGPWR => Some(Shutdown::Poweroff),
                        libc::SIGTERM | libc::SIGINT => Some(Shutdown::Reboot),
                        _ => None,
                    };
                }
            }
            idx += 1;
        }
        if action.is_none() && ready.get(idx).copied().unwrap_or(false) {
            if let Some(c) = console.as_mut() {
                let mut buf = [0u8; 256];
                match c.read(&mut buf) {
                    Ok(0) => {
                        log.log("console closed; commands disabled");
                        console = None;
                    }
                    Ok(n) => {
                        for line in lines.feed(&buf[..n]) {
                            match parse_command(&line) {
                                None => {}
                                Some(Command::Status) => {
                                    log.log(&status_line(&state, started, reaped));
                                    if let Some(rt) = runtime.as_mut() {
                                        for l in rt.status_lines() {
                                            log.log(&l);
                                        }
                                        // The SAs: the IKE process lists its IKE and
                                        // CHILD SAs (ages, rekey times), the Viaduct
                                        // its per-SA counters.
                                        rt.signal("ike", libc::SIGUSR1, "SA table", log);
                                        rt.signal("viaduct", libc::SIGUSR1, "counters", log);
                                    }
                                }
                                Some(Command::Kill(name)) => {
                                    let known =
                                        runtime.as_mut().is_some_and(|rt| rt.kill(&name, log));
                                    if !known {
                                        log.log(&format!(
                                            "kill: no compartment {name:?} (red, black, viaduct)"
                                        ));
                                    }
                                }
                                Some(Command::Counters) => {
                                    let known = runtime.as_mut().is_some_and(|rt| {
                                        rt.signal("viaduct", libc::SIGUSR1, "counters", log)
                                    });
                                    if !known {
                                        log.log("counters: no Viaduct in this mode");
                                    }
                                }
                                Some(Command::Poweroff) => action = Some(Shutdown::Poweroff),
                                Some(Command::Reboot) => action = Some(Shutdown::Reboot),
                                Some(Command::Unknown(w)) => log.log(&format!(
                                    "unknown command {w:?}; try status, counters, kill <compartment>, poweroff, reboot"
                                )),
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log.log(&format!("console read error: {e}; commands disabled"));
                        console = None;
                    }
                }
            }
        }
        let action = action.or(update_reboot);
        if let Some(how) = action {
            if let Some(rt) = runtime.as_mut() {
                rt.stop(Duration::from_millis(GRACE_MS), log);
            }
            if mode == Mode::Test {
                log.log("stopped");
                log.drain(Duration::from_secs(10));
                sys::exit_now(0);
            }
            shutdown(how, log);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_loading_is_switched_off_and_a_failure_is_said() {
        let dir = tempfile::tempdir().unwrap();
        let switch = dir.path().join("modules_disabled");
        std::fs::write(&switch, "0").unwrap();
        let mut log = Logger::new(vec![Box::new(std::io::sink())]);
        assert!(disable_module_loading(&switch, &mut log));
        assert_eq!(std::fs::read_to_string(&switch).unwrap(), "1");
        assert!(!disable_module_loading(
            &dir.path().join("no/such"),
            &mut log
        ));
    }
}
