//! Host commands the lab runs (`ip`, `tcpdump`, `busybox` in namespaces), the
//! tools it needs with their Debian packages, and Ctrl-C.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

/// Errors of the testbed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host tool or file is missing.
    #[error("{what} is missing: apt-get install {package}")]
    Missing {
        /// The tool or file.
        what: String,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A host command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// Its standard error (trimmed).
        stderr: String,
    },
    /// Building a gateway image failed.
    #[error("building {gateway} from {profile}: {message}")]
    Build {
        /// Gateway name.
        gateway: String,
        /// The profile.
        profile: String,
        /// The builder's error.
        message: String,
    },
    /// A VM could not be started or did not answer.
    #[error(transparent)]
    Vm(#[from] crate::vm::VmError),
    /// The lab is in the wrong state for the command.
    #[error("{0}")]
    State(String),
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
}

/// Shorthand for an I/O error with context.
pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// The host tools the lab uses and their Debian packages.
pub const TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("swtpm", "swtpm"),
    ("swtpm_setup", "swtpm-tools"),
    ("ip", "iproute2"),
    ("tcpdump", "tcpdump"),
    ("busybox", "busybox-static"),
];

/// Checks that every tool in [`TOOLS`] and the OVMF firmware are installed.
pub fn check_tools() -> Result<(), Error> {
    for (tool, package) in TOOLS {
        if !crate::vm::have_tool(tool) {
            return Err(Error::Missing {
                what: (*tool).into(),
                package,
            });
        }
    }
    for f in [crate::vm::OVMF_CODE, crate::vm::OVMF_VARS] {
        if !Path::new(f).exists() {
            return Err(Error::Missing {
                what: f.into(),
                package: "ovmf",
            });
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err(Error::State(
            "/dev/net/tun is missing: the lab's taps need the tun module (modprobe tun)".into(),
        ));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion; its stdout on success, else an error with its stderr.
pub fn run(cmd: &mut Command) -> Result<String, Error> {
    let out = output(cmd)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: describe(cmd),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs `cmd` to completion and returns whatever happened.
pub fn output(cmd: &mut Command) -> Result<Output, Error> {
    cmd.stdin(std::process::Stdio::null())
        .output()
        .map_err(io(format!("starting `{}`", describe(cmd))))
}

/// `ip ARGS…`.
pub fn ip(args: &[&str]) -> Result<String, Error> {
    run(Command::new("ip").args(args))
}

/// A command run inside network namespace `ns` (`ip netns exec`).
pub fn in_netns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

fn flag() -> &'static Arc<AtomicBool> {
    static F: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    F.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// From now on Ctrl-C (SIGINT) and SIGTERM only set a flag that the lab's waits
/// check, so that it can tear down what it started before exiting.
pub fn catch_interrupts() -> Result<(), Error> {
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag().clone())
            .map_err(io("installing the Ctrl-C handler"))?;
    }
    Ok(())
}

/// Whether Ctrl-C was pressed.
pub fn interrupted() -> bool {
    flag().load(Ordering::Relaxed)
}

/// Sleeps, but returns [`Error::Interrupted`] promptly on Ctrl-C.
pub fn sleep(d: Duration) -> Result<(), Error> {
    let end = std::time::Instant::now() + d;
    loop {
        if interrupted() {
            return Err(Error::Interrupted);
        }
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
