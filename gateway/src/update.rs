//! The update receiver: installs a signed bundle into the inactive A/B slot; and the
//! management channel it shares with the attestation agent ([`crate::agent`]): each
//! stream's first bytes name its endpoint (1 update, 2 attest, 3 enrol, 4 provision).
//!
//! The management channel: the init listens on a Unix socket in a directory
//! that only the black personality sees (bind-mounted at `/run/mgmt` in its
//! root); black's relay ([`crate::relay`]) accepts TCP on the plan's port
//! and copies bytes both ways. Black is untrusted: it can delay, cut, replay
//! or invent streams; nothing it sends is acted on unless it is a bundle
//! signed by the release key in this image's plan (pinned by the measured
//! boot state).
//!
//! Each stream is served by a child process of the init (a crash or a hang
//! there never touches PID 1; one at a time, at most [`CHILD_LIMIT`]). Before
//! the signature is checked the child reads only fixed-size fields and
//! bounded lengths ([`update_bundle::Header::read`]); the manifest is parsed
//! only once its signature verifies; the UKI is trusted only once its SHA-256
//! equals the signed manifest's. Then, in this order:
//!
//! 1. a boot not judged yet installs nothing: on trial, its fallback is the
//!    other slot; not ready, the init may still mount the ESP itself;
//! 2. the bundle is for this appliance, its version newer than the running
//!    one, its security version not below the TPM's anti-rollback floor;
//! 3. the ESP has room; the UKI streams into `EFI/Linux/.update.tmp` (a name
//!    systemd-boot never boots), hashed as it is written, then synced;
//! 4. its `.osrel` security version must be the signed manifest's;
//! 5. every other entry but the running one is removed (the other slot, a
//!    failed update), and the temporary file is renamed to
//!    `NAME_VERSION+TRIES.efi`: systemd-boot boots it on the next start, and
//!    the running entry stays the fallback.
//!
//! A refusal at any step leaves the ESP's entries as they were (a partly
//! written temporary file is removed; one left by a power cut is removed by
//! the next update and is never booted).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use update_bundle::{wire, Header, Release, Running, UkiCheck};

use crate::agent::{self, AgentContext};
use crate::console::Logger;
use crate::esp::{self, EspEnv, LINUX_DIR};
use crate::plan::{Plan, UpdatePlan};
use crate::sys;

/// The socket's name in the management directory.
pub const SOCKET: &str = "mgmt.sock";
/// Where black's root gets the management directory.
pub const BLACK_DIR: &str = "/run/mgmt";
/// The temporary file an update is written to.
pub const TMP_NAME: &str = ".update.tmp";
/// Longest time one stream may take, from accept to answer.
pub const CHILD_LIMIT: Duration = Duration::from_secs(20 * 60);
/// Longest wait for the next bytes of a stream.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes written between two syncs of the temporary file.
const SYNC_EVERY: usize = 4 << 20;
/// Room kept free on the ESP besides the new UKI.
const ESP_MARGIN: u64 = 1 << 20;
/// Exit status of a receiver that installed an update and was asked to reboot.
const EXIT_REBOOT: i32 = 10;
/// Exit status of a receiver that refused or failed.
const EXIT_REFUSED: i32 = 1;

/// Where the ESP is.
#[derive(Debug, Clone)]
pub enum EspAccess {
    /// The device: the partition the boot loader names, mounted for the write.
    Device(EspEnv),
    /// A directory standing for the mounted ESP (host tests).
    Dir(PathBuf),
}

impl EspAccess {
    pub(crate) fn run<T>(&self, f: impl FnOnce(&Path) -> Result<T, String>) -> Result<T, String> {
        match self {
            EspAccess::Dir(d) => f(d),
            EspAccess::Device(env) => {
                let entries = esp::inspect(env)?;
                let dev = entries
                    .esp
                    .ok_or("the boot loader named no ESP (LoaderDevicePartUUID); cannot install")?;
                esp::with_mounted(env, &dev, true, f)?
            }
        }
    }
}

/// What the receiver knows of the running gateway.
#[derive(Debug, Clone)]
pub struct Context {
    /// Appliance name (the plan's).
    pub name: String,
    /// Running version.
    pub version: String,
    /// Running security version.
    pub security_version: u64,
    /// The plan's update line.
    pub update: UpdatePlan,
    /// The boot-counted entry, while this boot is on trial.
    pub on_trial: Option<String>,
    /// This boot is not judged yet (not on trial, not yet ready): the init
    /// may still mount the ESP to raise the floor.
    pub not_judged: bool,
}

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Installed at `path` (relative to the ESP).
    Installed {
        /// The new entry.
        path: String,
        /// The release.
        release: Release,
        /// Reboot into it now.
        reboot: bool,
    },
    /// Refused, with the reason.
    Refused(String),
}

/// Serves one stream: reads the request, checks and installs, writes the
/// answer (`ok: …` or `refused: …`). `note` gets progress lines.
pub fn serve<S: Read + Write>(
    s: &mut S,
    ctx: &Context,
    esp: &EspAccess,
    tpm: &[PathBuf],
    note: &mut dyn FnMut(&str),
) -> Answer {
    let request = wire::read_request(s);
    serve_request(s, request, ctx, esp, tpm, note)
}

/// [`serve`] once the request's first bytes are read (`request`: endpoint and flags).
pub fn serve_request<S: Read + Write>(
    s: &mut S,
    request: Result<(u8, u8), String>,
    ctx: &Context,
    esp: &EspAccess,
    tpm: &[PathBuf],
    note: &mut dyn FnMut(&str),
) -> Answer {
    let answer = request
        .and_then(|(endpoint, flags)| receive(s, endpoint, flags, ctx, esp, tpm, note))
        .unwrap_or_else(Answer::Refused);
    let line = match &answer {
        Answer::Installed {
            path,
            release,
            reboot,
        } => format!(
            "ok: installed {} {} (security version {}) as {path}; {}\n",
            release.name,
            release.version,
            release.security_version,
            if *reboot {
                "rebooting into it now"
            } else {
                "it boots at the next restart"
            }
        ),
        Answer::Refused(r) => format!("refused: {r}\n"),
    };
    note(line.trim_end());
    let _ = s.write_all(line.as_bytes());
    let _ = s.flush();
    answer
}

fn read_floor(tpm: &[PathBuf]) -> Result<Option<u64>, String> {
    let Some(dev) = tpm.iter().find(|p| p.exists()) else {
        return Ok(None);
    };
    crate::runtime::open_tpm(dev)
        .and_then(|mut t| crate::floor::read(&mut *t))
        .map_err(|e| format!("the anti-rollback floor cannot be read: {e}"))
}

fn receive<S: Read + Write>(
    s: &mut S,
    endpoint: u8,
    flags: u8,
    ctx: &Context,
    esp: &EspAccess,
    tpm: &[PathBuf],
    note: &mut dyn FnMut(&str),
) -> Result<Answer, String> {
    if endpoint != wire::ENDPOINT_UPDATE {
        return Err(format!(
            "unknown endpoint {endpoint} (this gateway serves {} = update, {} = attest, {} = enrol, {} = provision)",
            wire::ENDPOINT_UPDATE,
            attest_wire::proto::ENDPOINT_ATTEST,
            attest_wire::proto::ENDPOINT_ENROLL,
            attest_wire::proto::ENDPOINT_PROVISION
        ));
    }
    if flags & !wire::FLAG_REBOOT != 0 {
        return Err(format!("unknown request flags {flags:#04x}"));
    }
    let header = Header::read(s).map_err(|e| e.to_string())?;
    let release =
        update_bundle::verify(&header, &ctx.update.release_key).map_err(|e| e.to_string())?;
    // Nothing about this gateway is said to a stream that is not signed.
    if let Some(t) = &ctx.on_trial {
        return Err(format!(
            "this boot ({t}) is on trial: its fallback is the other slot; install updates once it is marked good"
        ));
    }
    if ctx.not_judged {
        return Err(
            "this boot is not judged yet (the gateway is not ready); install updates once it is"
                .into(),
        );
    }
    note(&format!(
        "bundle {} {} (security version {}, UKI {} bytes) signed by the release key {}",
        release.name,
        release.version,
        release.security_version,
        release.uki_size,
        update_bundle::fingerprint(&ctx.update.release_key)
    ));
    let floor = read_floor(tpm)?;
    update_bundle::admit(
        &release,
        &Running {
            name: &ctx.name,
            version: &ctx.version,
            security_version: ctx.security_version,
            floor,
        },
    )?;
    let path = esp.run(|root| install(root, s, &release, ctx, note))?;
    Ok(Answer::Installed {
        path,
        release,
        reboot: flags & wire::FLAG_REBOOT != 0,
    })
}

/// Removes the temporary file on every early return.
struct TmpGuard<'a>(&'a Path, bool);

impl Drop for TmpGuard<'_> {
    fn drop(&mut self) {
        if !self.1 {
            let _ = std::fs::remove_file(self.0);
        }
    }
}

/// The entry's name without its boot counter and `.efi`.
fn entry_stem(file: &str) -> Option<&str> {
    if let Some((stem, _, _)) = esp::counter(file) {
        return Some(stem);
    }
    let ext = file.len().checked_sub(4)?;
    file.get(ext..)?
        .eq_ignore_ascii_case(".efi")
        .then(|| file.get(..ext))
        .flatten()
}

fn install<R: Read>(
    root: &Path,
    s: &mut R,
    release: &Release,
    ctx: &Context,
    note: &mut dyn FnMut(&str),
) -> Result<String, String> {
    let dir = root.join(LINUX_DIR);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("reading {LINUX_DIR} on the ESP: {e}"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let running = format!("{}_{}", ctx.name, ctx.version);
    if !names
        .iter()
        .any(|n| !n.starts_with('.') && entry_stem(n) == Some(running.as_str()))
    {
        return Err(format!(
            "the running image's entry {LINUX_DIR}/{running}.efi is not on the ESP; not touching it"
        ));
    }
    let tmp = dir.join(TMP_NAME);
    match std::fs::remove_file(&tmp) {
        Ok(()) => note(&format!(
            "removed {LINUX_DIR}/{TMP_NAME} left by an interrupted update"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("removing {LINUX_DIR}/{TMP_NAME}: {e}")),
    }
    let d = File::open(&dir).map_err(|e| format!("opening {LINUX_DIR}: {e}"))?;
    let free = sys::free_bytes(d.as_fd()).map_err(|e| format!("statvfs on the ESP: {e}"))?;
    if free < release.uki_size.saturating_add(ESP_MARGIN) {
        return Err(format!(
            "the ESP has {} KiB free; the new UKI needs {} KiB and 1 MiB to spare",
            free / 1024,
            release.uki_size / 1024
        ));
    }
    let mut guard = TmpGuard(&tmp, false);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| format!("creating {LINUX_DIR}/{TMP_NAME}: {e}"))?;
    // The name is on the disk before the data: a power loss leaves a file
    // the next update removes, never a lost cluster chain.
    let _ = d.sync_all();
    note(&format!(
        "writing {LINUX_DIR}/{TMP_NAME} ({} bytes)",
        release.uki_size
    ));
    let mut check = UkiCheck::new();
    let mut unsynced = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = release.uki_size;
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = match s.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(format!(
                    "the bundle ended after {} of the UKI's {} bytes; nothing installed",
                    release.uki_size - left,
                    release.uki_size
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(format!(
                    "reading the UKI after {} of {} bytes: {e}; nothing installed",
                    release.uki_size - left,
                    release.uki_size
                ))
            }
        };
        let chunk = &buf[..n];
        check.update(chunk);
        f.write_all(chunk)
            .map_err(|e| format!("writing {LINUX_DIR}/{TMP_NAME}: {e}"))?;
        left -= n as u64;
        // Written out as it arrives (a slow link leaves nothing for long in
        // memory only).
        unsynced += n;
        if unsynced >= SYNC_EVERY {
            let _ = f.sync_data();
            unsynced = 0;
        }
    }
    check.finish(release).map_err(|e| e.to_string())?;
    f.sync_all()
        .map_err(|e| format!("syncing {LINUX_DIR}/{TMP_NAME}: {e}"))?;
    drop(f);
    let osrel = File::open(&tmp)
        .ok()
        .and_then(|mut f| esp::uki_security_version(&mut f));
    if osrel != Some(release.security_version) {
        return Err(format!(
            "the UKI's .osrel says security version {}, its signed manifest {}; nothing installed",
            osrel.map_or_else(|| "nothing".to_owned(), |v| v.to_string()),
            release.security_version
        ));
    }
    // The other slot and failed updates go; the running entry stays the fallback.
    for n in &names {
        match entry_stem(n) {
            Some(stem) if !n.starts_with('.') && stem != running => {}
            _ => continue,
        }
        std::fs::remove_file(dir.join(n))
            .map_err(|e| format!("removing {LINUX_DIR}/{n} (the other slot): {e}"))?;
        note(&format!("removed {LINUX_DIR}/{n} (the other slot)"));
    }
    let name = release.file_name(ctx.update.tries);
    std::fs::rename(&tmp, dir.join(&name))
        .map_err(|e| format!("renaming {LINUX_DIR}/{TMP_NAME} to {name}: {e}"))?;
    guard.1 = true;
    let _ = d.sync_all();
    Ok(format!("{LINUX_DIR}/{name}"))
}

/// The init's side of the management channel: the listening socket, and the
/// receiver child while one runs.
pub struct Management {
    listener: UnixListener,
    /// The update receiver's context; `None` when the image takes no updates.
    ctx: Option<Context>,
    agent: AgentContext,
    esp: EspAccess,
    tpm: Vec<PathBuf>,
    child: Option<Child>,
    reboot: Option<String>,
}

struct Child {
    pid: libc::pid_t,
    started: Instant,
    out: Option<File>,
    pending: Vec<u8>,
}

impl Management {
    /// Opens the socket in `dir` (created; mode 0755, the socket 0666: black's
    /// ids reach it only through the bind mount). The attestation agent is
    /// always served; updates when the plan takes them.
    ///
    /// # Errors
    /// The directory or socket cannot be made.
    pub fn open(
        dir: &Path,
        plan: &Plan,
        esp: EspAccess,
        tpm: Vec<PathBuf>,
        agent: AgentContext,
    ) -> std::io::Result<Management> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        let path = dir.join(SOCKET);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        listener.set_nonblocking(true)?;
        Ok(Management {
            listener,
            ctx: plan.update.map(|update| Context {
                name: plan.profile_name.as_str().to_owned(),
                version: plan.profile_version.as_str().to_owned(),
                security_version: u64::from(plan.security_version.0),
                update,
                on_trial: None,
                not_judged: false,
            }),
            agent,
            esp,
            tpm,
            child: None,
            reboot: None,
        })
    }

    /// Descriptors to poll: the socket while no receiver runs (streams
    /// that come meanwhile wait in its backlog), else the receiver's output.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        match &self.child {
            None => vec![self.listener.as_fd()],
            Some(c) => c.out.iter().map(AsFd::as_fd).collect(),
        }
    }

    /// Handles what [`Management::fds`] polled readable: a stream is served
    /// by a new receiver child, one at a time. `pending`: while this boot is
    /// not judged yet, `Some` of its boot-counted entry (`None` inside when
    /// it is not on trial).
    pub fn on_ready(&mut self, ready: &[bool], pending: Option<Option<String>>, log: &mut Logger) {
        let readable = ready.first().copied().unwrap_or(false);
        if self.child.is_some() {
            if readable {
                self.read_child(log);
            }
            return;
        }
        if !readable {
            return;
        }
        if let Some(ctx) = self.ctx.as_mut() {
            ctx.not_judged = matches!(pending, Some(None));
            ctx.on_trial = pending.flatten();
        }
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log.log(&format!("warning: update: accept: {e}"));
                    return;
                }
            }
        };
        if let Err(e) = self.start_child(stream) {
            log.log(&format!("error: update: starting the receiver: {e}"));
        }
    }

    fn start_child(&mut self, stream: UnixStream) -> std::io::Result<()> {
        let (r, w) = sys::pipe()?;
        let pid = sys::clone_fork(0)?;
        if pid == 0 {
            drop(r);
            child_main(
                stream,
                w,
                self.ctx.as_ref(),
                &self.esp,
                &self.tpm,
                &self.agent,
            );
        }
        drop(w);
        sys::set_nonblocking(r.as_fd(), true)?;
        self.child = Some(Child {
            pid,
            started: Instant::now(),
            out: Some(File::from(r)),
            pending: Vec::new(),
        });
        Ok(())
    }

    fn read_child(&mut self, log: &mut Logger) {
        let Some(c) = self.child.as_mut() else { return };
        let Some(f) = c.out.as_mut() else { return };
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) => {
                    c.out = None;
                    break;
                }
                Ok(n) => c.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
            if c.pending.len() > 64 * 1024 {
                c.pending.clear();
            }
        }
        while let Some(i) = c.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = c.pending.drain(..=i).collect();
            // The child names its endpoint (`update: …`, `attest: …`).
            log.log(&crate::runtime::sanitize(&line[..line.len() - 1]));
        }
    }

    /// A child exited: `true` if it was the receiver.
    pub fn on_exit(&mut self, pid: libc::pid_t, status: libc::c_int, log: &mut Logger) -> bool {
        if self.child.as_ref().map(|c| c.pid) != Some(pid) {
            return false;
        }
        self.read_child(log);
        self.child = None;
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == EXIT_REBOOT {
            self.reboot = Some("an update was installed and a reboot into it asked for".into());
        } else if !(libc::WIFEXITED(status)
            && matches!(libc::WEXITSTATUS(status), 0 | EXIT_REFUSED))
        {
            log.log(&format!(
                "error: update: the receiver ended ({}); nothing was renamed into place unless it said so",
                crate::runtime::describe_status(status)
            ));
        }
        true
    }

    /// Stops a receiver over its time.
    pub fn tick(&mut self, log: &mut Logger) {
        if let Some(c) = &self.child {
            if c.started.elapsed() > CHILD_LIMIT {
                let _ = sys::kill(c.pid, libc::SIGKILL);
                log.log(&format!(
                    "warning: update: the receiver took over {} s; killed",
                    CHILD_LIMIT.as_secs()
                ));
            }
        }
    }

    /// A reboot the last update asked for.
    pub fn take_reboot(&mut self) -> Option<String> {
        self.reboot.take()
    }
}

/// The receiver child: serves the stream, exits. Never returns.
fn child_main(
    stream: UnixStream,
    out: OwnedFd,
    ctx: Option<&Context>,
    esp: &EspAccess,
    tpm: &[PathBuf],
    agent: &AgentContext,
) -> ! {
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    let _ = sys::unblock_all_signals();
    let _ = sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1);
    let mut out = File::from(out);
    let mut stream = stream;
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let mut say = |prefix: &str, l: &str| {
        let _ = out.write_all(format!("{prefix}: {l}\n").as_bytes());
    };
    let request = wire::read_request(&mut stream);
    let refuse = |stream: &mut UnixStream, why: &str| {
        let _ = stream.write_all(format!("refused: {why}\n").as_bytes());
    };
    let code = match (request, ctx) {
        (Ok((attest_wire::proto::ENDPOINT_ATTEST, 0)), _) => {
            agent::serve_quote(&mut stream, agent, &mut |l: &str| say("attest", l));
            0
        }
        (Ok((attest_wire::proto::ENDPOINT_ENROLL, 0)), _) => {
            agent::serve_enroll(&mut stream, agent, &mut |l: &str| say("attest", l));
            0
        }
        (Ok((attest_wire::proto::ENDPOINT_PROVISION, 0)), _) => {
            agent::serve_provision(&mut stream, agent, esp, &mut |l: &str| say("provision", l));
            0
        }
        (Ok((wire::ENDPOINT_UPDATE, _)), None) => {
            let why = "this image takes no updates (its plan names no release key: build it with `[image] slots = \"ab\"` and a release key)";
            say("update", &format!("refused: {why}"));
            refuse(&mut stream, why);
            EXIT_REFUSED
        }
        (request, Some(ctx)) => {
            let mut note = |l: &str| say("update", l);
            match serve_request(&mut stream, request, ctx, esp, tpm, &mut note) {
                Answer::Installed { reboot: true, .. } => EXIT_REBOOT,
                Answer::Installed { .. } => 0,
                Answer::Refused(_) => EXIT_REFUSED,
            }
        }
        (request, None) => {
            let why = match request {
                Ok((e, f)) => format!(
                    "unknown endpoint {e} or flags {f:#04x} (this gateway serves {} = attest, {} = enrol, {} = provision)",
                    attest_wire::proto::ENDPOINT_ATTEST,
                    attest_wire::proto::ENDPOINT_ENROLL,
                    attest_wire::proto::ENDPOINT_PROVISION
                ),
                Err(e) => e,
            };
            say("mgmt", &format!("refused: {why}"));
            refuse(&mut stream, &why);
            EXIT_REFUSED
        }
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
    sys::exit_now(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_stems() {
        assert_eq!(entry_stem("gw-a_0.1.0.efi"), Some("gw-a_0.1.0"));
        assert_eq!(entry_stem("gw-a_0.2.0+3.efi"), Some("gw-a_0.2.0"));
        assert_eq!(entry_stem("gw-a_0.2.0+0-3.EFI"), Some("gw-a_0.2.0"));
        assert_eq!(entry_stem(".update.tmp"), None);
        assert_eq!(entry_stem("x"), None);
    }
}
