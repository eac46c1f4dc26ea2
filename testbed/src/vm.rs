//! One QEMU gateway: q35, TCG, OVMF (optionally with Secure Boot enforced),
//! its own swtpm, the disk as first boot device, the serial console on a
//! pipe. Everything the VM prints is kept; callers wait for lines.
//!
//! Processes are killed when the [`Vm`] is dropped, so a failing test leaves
//! nothing running.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// OVMF without Secure Boot support.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF with Secure Boot support (needs SMM).
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// Empty variable store (no keys: Secure Boot off).
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Errors.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A host tool or file is missing.
    #[error("{what} is missing: apt-get install {package}")]
    Missing {
        /// The tool or file.
        what: String,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// Starting a process or preparing files failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The awaited console line did not come.
    #[error("{vm}: no console line {awaited} within {secs} s; last console lines:\n{tail}")]
    Timeout {
        /// VM name.
        vm: String,
        /// What was awaited.
        awaited: String,
        /// Timeout.
        secs: u64,
        /// Last console lines.
        tail: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

/// Whether a program is on PATH.
pub fn have_tool(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// How to boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Name (for messages).
    pub name: String,
    /// Working directory (vars copy, swtpm state and socket).
    pub workdir: PathBuf,
    /// The disk image (opened with `snapshot=on`: never modified, unless
    /// [`VmConfig::writable`]).
    pub disk: PathBuf,
    /// Write to the disk, and let the guest reboot (firmware, boot loader and
    /// all) within the same QEMU process instead of ending it: what a boot
    /// counter and a fallback need. Started again with the same working
    /// directory and name, it is the same machine: its UEFI variables and
    /// its TPM state are kept.
    pub writable: bool,
    /// Variable store to start from (copied); default: the empty OVMF store.
    pub vars: Option<PathBuf>,
    /// Use the Secure Boot firmware (SMM, secure flash).
    pub secure_boot: bool,
    /// Attach a TPM 2.0 (swtpm).
    pub tpm: bool,
    /// Guest memory.
    pub memory_mib: u32,
    /// Network cards, in PCI slot order (see [`NicConfig::lab_defaults`]).
    pub nics: Vec<NicConfig>,
    /// More QEMU arguments.
    pub extra_args: Vec<String>,
    /// Where the serial console goes.
    pub console: Console,
    /// A machine for the `microvm` runtime, which gives each personality's
    /// VM its card by VFIO: nested virtualisation (`-cpu EPYC`: the emulated
    /// SVM runs the gateway's KVM guests), an emulated Intel IOMMU with
    /// interrupt remapping, and each card an e1000e alone behind a PCIe root
    /// port at its slot (so in an IOMMU group of its own, on bus 1 for the
    /// first card, 2 for the second …).
    pub passthrough: bool,
}

/// The serial console of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Console {
    /// QEMU's stdin/stdout (the VM lives as long as the [`Vm`]).
    Stdio,
    /// A Unix socket to type into (QEMU listens; nobody needs to be connected) and a
    /// log file of everything the guest printed (for VMs that outlive the caller).
    Socket {
        /// The socket QEMU listens on.
        socket: PathBuf,
        /// The log file QEMU writes (truncated at start).
        log: PathBuf,
    },
}

/// One virtio-net card of the guest.
#[derive(Debug, Clone)]
pub struct NicConfig {
    /// QEMU netdev id.
    pub id: String,
    /// PCI slot on bus 0 (the profile matches the card by `0000:00:<slot>.0`).
    pub slot: u8,
    /// The `-netdev` backend without `id=`, e.g. `hubport,hubid=0` (a segment of its
    /// own) or a `dgram`/`socket` backend on 127.0.0.1 to join a lab network.
    pub netdev: String,
    /// MAC address (default: QEMU's).
    pub mac: Option<String>,
}

impl NicConfig {
    /// The lab profiles' cards: `lan` at 0000:00:02.0 and `wan` at 0000:00:03.0,
    /// each on a QEMU hub of its own (connected to nothing else).
    pub fn lab_defaults() -> Vec<NicConfig> {
        vec![
            NicConfig {
                id: "lan".into(),
                slot: 2,
                netdev: "hubport,hubid=0".into(),
                mac: None,
            },
            NicConfig {
                id: "wan".into(),
                slot: 3,
                netdev: "hubport,hubid=1".into(),
                mac: None,
            },
        ]
    }
}

impl VmConfig {
    /// Defaults: 1 GiB, TPM on, Secure Boot off, the lab's two NICs on empty hubs.
    pub fn new(name: &str, workdir: &Path, disk: &Path) -> Self {
        VmConfig {
            name: name.into(),
            workdir: workdir.into(),
            disk: disk.into(),
            writable: false,
            vars: None,
            secure_boot: false,
            tpm: true,
            memory_mib: 1024,
            nics: NicConfig::lab_defaults(),
            extra_args: Vec::new(),
            console: Console::Stdio,
            passthrough: false,
        }
    }
}

/// A running VM.
pub struct Vm {
    name: String,
    qemu: Child,
    swtpm: Option<Child>,
    stdin: Option<ChildStdin>,
    rx: Receiver<String>,
    lines: Vec<String>,
    started: Instant,
}

impl Vm {
    /// Start swtpm (if asked) and QEMU, the console on QEMU's stdio.
    pub fn start(cfg: &VmConfig) -> Result<Vm, VmError> {
        let files = prepare(cfg)?;
        let mut swtpm = None;
        if cfg.tpm {
            let child = swtpm_command(&files)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(io("starting swtpm"))?;
            swtpm = Some(child);
            wait_for_socket(&files.tpm_socket, Duration::from_secs(10));
        }
        let mut cmd = qemu_command(cfg, &files);
        cmd.args(["-serial", "stdio"]);
        let mut qemu = match cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(q) => q,
            Err(e) => {
                if let Some(mut s) = swtpm {
                    let _ = s.kill();
                    let _ = s.wait();
                }
                return Err(VmError::Io {
                    what: "starting qemu-system-x86_64".into(),
                    source: e,
                });
            }
        };
        let stdout = qemu.stdout.take().expect("piped");
        let stdin = qemu.stdin.take();
        let rx = console_lines(stdout);
        Ok(Vm {
            name: cfg.name.clone(),
            qemu,
            swtpm,
            stdin,
            rx,
            lines: Vec::new(),
            started: Instant::now(),
        })
    }

    /// Time since start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every console line so far.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The last `n` console lines, without event-log hex dumps.
    pub fn tail(&self, n: usize) -> String {
        console_tail(self.lines.iter().map(String::as_str), n)
    }

    /// Wait for a console line matching `pred` (lines already seen count).
    /// Returns it, or a timeout error with the last 50 lines.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, VmError> {
        if let Some(l) = self.lines.iter().find(|l| pred(l)) {
            return Ok(l.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.rx.recv_timeout(left.min(Duration::from_millis(500))) {
                Ok(l) => {
                    let hit = pred(&l);
                    self.lines.push(l.clone());
                    if hit {
                        return Ok(l);
                    }
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        Err(VmError::Timeout {
            vm: self.name.clone(),
            awaited: what.into(),
            secs: timeout.as_secs(),
            tail: self.tail(50),
        })
    }

    /// Send a line to the console.
    pub fn send_line(&mut self, line: &str) -> Result<(), VmError> {
        let s = self.stdin.as_mut().ok_or_else(|| VmError::Io {
            what: "console".into(),
            source: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
        })?;
        s.write_all(format!("{line}\n").as_bytes())
            .and_then(|_| s.flush())
            .map_err(io(format!("{}: writing to the console", self.name)))
    }

    /// Wait for QEMU to exit (collecting console lines meanwhile).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Ok(l) = self.rx.try_recv() {
                self.lines.push(l);
            }
            if let Ok(Some(s)) = self.qemu.try_wait() {
                while let Ok(l) = self.rx.recv_timeout(Duration::from_millis(100)) {
                    self.lines.push(l);
                }
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// PCR values the gateway init printed (`appliance: pcr <n> sha256 <hex>`).
    pub fn pcrs(&self) -> BTreeMap<u32, String> {
        pcrs_from_console(&self.lines)
    }

    /// The TCG event log the init exported (length and digest checked by
    /// [`signing::eventlog::from_console`]).
    pub fn eventlog(&self) -> Result<Vec<u8>, String> {
        eventlog_from_console(&self.lines)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        if let Some(s) = &mut self.swtpm {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

/// The files a VM runs with, under its working directory.
#[derive(Debug, Clone)]
pub struct VmFiles {
    /// OVMF code (read-only).
    pub code: PathBuf,
    /// This VM's copy of the variable store.
    pub vars: PathBuf,
    /// swtpm's state directory.
    pub tpm_state: PathBuf,
    /// swtpm's control socket (QEMU connects to it).
    pub tpm_socket: PathBuf,
}

/// Checks the host tools and firmware (naming the Debian package of anything
/// missing) and the disk, creates the working directory, copies the variable store.
pub fn prepare(cfg: &VmConfig) -> Result<VmFiles, VmError> {
    for (tool, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("swtpm", "swtpm"),
    ] {
        if (tool != "swtpm" || cfg.tpm) && !have_tool(tool) {
            return Err(VmError::Missing {
                what: tool.into(),
                package,
            });
        }
    }
    let code = if cfg.secure_boot {
        OVMF_CODE_SECBOOT
    } else {
        OVMF_CODE
    };
    let vars_src = cfg.vars.clone().unwrap_or_else(|| PathBuf::from(OVMF_VARS));
    for f in [Path::new(code), vars_src.as_path()] {
        if !f.exists() {
            return Err(VmError::Missing {
                what: f.display().to_string(),
                package: "ovmf",
            });
        }
    }
    if !cfg.disk.exists() {
        return Err(VmError::Io {
            what: format!("{}: disk image", cfg.disk.display()),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    std::fs::create_dir_all(&cfg.workdir)
        .map_err(io(format!("creating {}", cfg.workdir.display())))?;
    let vars = cfg.workdir.join(format!("{}-vars.fd", cfg.name));
    let tpm_state = cfg.workdir.join(format!("{}-tpm", cfg.name));
    let tpm_socket = cfg.workdir.join(format!("{}-swtpm.sock", cfg.name));
    // A writable machine started again is the same machine: its variables
    // and its TPM (the anti-rollback floor, the key-use ledger) persist.
    let again = cfg.writable && vars.exists();
    if !again {
        std::fs::copy(&vars_src, &vars).map_err(io(format!("copying {}", vars_src.display())))?;
    }
    if again && cfg.tpm {
        let _ = std::fs::remove_file(&tpm_socket);
    } else if cfg.tpm {
        // Each start is a new machine, as its UEFI variables are (copied afresh
        // above): an empty TPM. (A gateway's TPM holds the key-use ledger of its
        // manual keys, which would otherwise keep a lab image closed on its second
        // start; on hardware that is the point, see docs/threat-model.md.)
        let _ = std::fs::remove_dir_all(&tpm_state);
        std::fs::create_dir_all(&tpm_state)
            .map_err(io(format!("creating {}", tpm_state.display())))?;
        let _ = std::fs::remove_file(&tpm_socket);
    }
    Ok(VmFiles {
        code: PathBuf::from(code),
        vars,
        tpm_state,
        tpm_socket,
    })
}

/// swtpm for one VM (TPM 2.0, state in `files.tpm_state`, exits when QEMU disconnects).
pub fn swtpm_command(files: &VmFiles) -> Command {
    let mut c = Command::new("swtpm");
    c.args(["socket", "--tpm2", "--terminate", "--tpmstate"])
        .arg(format!("dir={}", files.tpm_state.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", files.tpm_socket.display()));
    c
}

/// Manufactures a TPM in `state` as a vendor would: `swtpm_setup --create-ek-cert`
/// with a local CA in `ca_dir` (`swtpm_localca`; made on first use, shared by every
/// TPM manufactured with it), the SHA-256 bank only, NV locked. Writes the CA's root
/// and intermediate certificates to `ca_pem` (what `appliance enroll --ek-ca` takes).
///
/// # Errors
/// A missing tool (named with its package) or a failing `swtpm_setup`.
pub fn manufacture_tpm(state: &Path, ca_dir: &Path, ca_pem: &Path) -> Result<(), VmError> {
    for (tool, package) in [
        ("swtpm_setup", "swtpm-tools"),
        ("swtpm_localca", "swtpm-tools"),
    ] {
        if !have_tool(tool) {
            return Err(VmError::Missing {
                what: tool.into(),
                package,
            });
        }
    }
    let io = |what: String| move |source| VmError::Io { what, source };
    std::fs::create_dir_all(ca_dir).map_err(io(format!("creating {}", ca_dir.display())))?;
    std::fs::create_dir_all(state).map_err(io(format!("creating {}", state.display())))?;
    let d = ca_dir.display();
    let localca = Command::new("sh")
        .args(["-c", "command -v swtpm_localca"])
        .output()
        .map_err(io("finding swtpm_localca".into()))?;
    let localca = String::from_utf8_lossy(&localca.stdout).trim().to_owned();
    for (name, text) in [
        (
            "localca.conf",
            format!("statedir = {d}\nsigningkey = {d}/signkey.pem\nissuercert = {d}/issuercert.pem\ncertserial = {d}/certserial\n"),
        ),
        (
            "localca.options",
            "--platform-manufacturer appliance-testbed\n--platform-version 1\n--platform-model QEMU\n".to_string(),
        ),
        (
            "setup.conf",
            format!("create_certs_tool= {localca}\ncreate_certs_tool_config = {d}/localca.conf\ncreate_certs_tool_options = {d}/localca.options\nactive_pcr_banks = sha256\n"),
        ),
    ] {
        let p = ca_dir.join(name);
        std::fs::write(&p, text).map_err(io(format!("writing {}", p.display())))?;
    }
    let out = Command::new("swtpm_setup")
        .args([
            "--tpm2",
            "--create-ek-cert",
            "--create-platform-cert",
            "--lock-nvram",
            "--overwrite",
        ])
        .arg("--tpm-state")
        .arg(state)
        .arg("--config")
        .arg(ca_dir.join("setup.conf"))
        .output()
        .map_err(io("running swtpm_setup".into()))?;
    if !out.status.success() {
        return Err(VmError::Io {
            what: format!(
                "swtpm_setup in {}: {}",
                state.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            source: std::io::Error::other("swtpm_setup failed"),
        });
    }
    let mut pem = Vec::new();
    for f in ["swtpm-localca-rootca-cert.pem", "issuercert.pem"] {
        let p = ca_dir.join(f);
        pem.extend(std::fs::read(&p).map_err(io(format!("reading {}", p.display())))?);
    }
    let tmp = ca_pem.with_extension("tmp");
    std::fs::write(&tmp, &pem)
        .and_then(|_| std::fs::rename(&tmp, ca_pem))
        .map_err(io(format!("writing {}", ca_pem.display())))
}

/// Waits (up to `limit`) for a Unix socket to appear.
pub fn wait_for_socket(path: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The QEMU command line for `cfg` (q35, TCG, OVMF, the disk as `snapshot=on`, the
/// TPM, the NICs, and for [`Console::Socket`] the serial console); the caller adds
/// `-serial stdio` for [`Console::Stdio`] and starts it.
pub fn qemu_command(cfg: &VmConfig, files: &VmFiles) -> Command {
    let machine = if cfg.secure_boot { "q35,smm=on" } else { "q35" };
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-nodefaults", "-machine", machine]);
    if cfg.passthrough {
        // The IOMMU before any PCI device. One vCPU: the emulated SVM
        // (QEMU 7.2's TCG) delivers interrupts wrongly around the world
        // switch when other threads kick the vCPU; with two vCPUs (IPIs
        // between them) two testbed runs of five lost a restarted VM or the
        // gateway's kernel, with one none of the runs since
        // (docs/design/microvm.md, Known problem).
        cmd.args(["-accel", "tcg,thread=multi", "-cpu", "EPYC", "-smp", "1"])
            .args(["-device", "intel-iommu,intremap=on,eim=off"]);
    } else {
        cmd.args(["-accel", "tcg"]);
    }
    cmd.arg("-m")
        .arg(cfg.memory_mib.to_string())
        .args(["-display", "none", "-monitor", "none"]);
    if !cfg.writable {
        cmd.arg("-no-reboot");
    }
    if let Console::Socket { socket, log } = &cfg.console {
        cmd.arg("-chardev")
            .arg(format!(
                "socket,id=console0,path={},server=on,wait=off,logfile={}",
                socket.display(),
                log.display()
            ))
            .args(["-serial", "chardev:console0"]);
    }
    if cfg.secure_boot {
        cmd.args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
    }
    cmd.arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            files.code.display()
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            files.vars.display()
        ))
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=none,id=disk0{}",
            cfg.disk.display(),
            if cfg.writable { "" } else { ",snapshot=on" }
        ))
        .args(["-device", "virtio-blk-pci,drive=disk0,bootindex=0"]);
    if cfg.tpm {
        cmd.arg("-chardev")
            .arg(format!(
                "socket,id=chrtpm,path={}",
                files.tpm_socket.display()
            ))
            .args([
                "-tpmdev",
                "emulator,id=tpm0,chardev=chrtpm",
                "-device",
                "tpm-tis,tpmdev=tpm0",
            ]);
    }
    for n in &cfg.nics {
        cmd.arg("-netdev").arg(format!("{},id={}", n.netdev, n.id));
        if cfg.passthrough {
            cmd.arg("-device")
                .arg(format!(
                    "pcie-root-port,id=rp{0},chassis={0},addr={0:#04x}",
                    n.slot
                ))
                .arg("-device")
                .arg(format!(
                    "e1000e,bus=rp{},netdev={},romfile={}",
                    n.slot,
                    n.id,
                    n.mac
                        .as_ref()
                        .map(|m| format!(",mac={m}"))
                        .unwrap_or_default()
                ));
            continue;
        }
        cmd.arg("-device").arg(format!(
            "virtio-net-pci,netdev={},addr={:#04x}{}",
            n.id,
            n.slot,
            n.mac
                .as_ref()
                .map(|m| format!(",mac={m}"))
                .unwrap_or_default()
        ));
    }
    cmd.args(&cfg.extra_args);
    cmd
}

/// The last `n` of `lines`, without the event-log hex dump (its begin and end
/// lines stay), joined by newlines: what error messages show of a console.
pub fn console_tail<'a>(lines: impl Iterator<Item = &'a str>, n: usize) -> String {
    let v: Vec<&str> = lines
        .filter(|l| {
            !l.starts_with("appliance: eventlog ") || l.contains("begin") || l.contains("end")
        })
        .collect();
    v[v.len().saturating_sub(n)..].join("\n")
}

/// Read `r` line by line on a thread (CR/LF stripped, invalid UTF-8
/// replaced); the lines arrive on the returned channel, which closes at EOF.
pub fn console_lines(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let l = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// `appliance: pcr <n> sha256 <hex>` lines → PCR index → hex.
pub fn pcrs_from_console(lines: &[String]) -> BTreeMap<u32, String> {
    let mut m = BTreeMap::new();
    for l in lines {
        if let Some(rest) = l.strip_prefix("appliance: pcr ") {
            let mut it = rest.split_whitespace();
            if let (Some(n), Some("sha256"), Some(v)) = (it.next(), it.next(), it.next()) {
                if let Ok(n) = n.parse() {
                    m.insert(n, v.to_string());
                }
            }
        }
    }
    m
}

/// The event log the init framed on the console, reassembled by
/// [`signing::eventlog::from_console`] (length and digest checked).
pub fn eventlog_from_console(lines: &[String]) -> Result<Vec<u8>, String> {
    signing::eventlog::from_console(&lines.join("\n")).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn console_parsing() {
        let data = b"hello event log".to_vec();
        let lines: Vec<String> = vec![
            "noise".into(),
            "appliance: pcr 4 sha256 aa".into(),
            "appliance: pcr 11 sha256 bb".into(),
            format!(
                "appliance: eventlog begin {} {}",
                data.len(),
                hex::encode(Sha256::digest(&data))
            ),
            format!("appliance: eventlog {}", hex::encode(&data[..5])),
            format!("appliance: eventlog {}", hex::encode(&data[5..])),
            "appliance: eventlog end".into(),
        ];
        assert_eq!(eventlog_from_console(&lines), Ok(data.clone()));
        let p = pcrs_from_console(&lines);
        assert_eq!(p[&4], "aa");
        assert_eq!(p[&11], "bb");
        let mut bad = lines.clone();
        bad[4] = "appliance: eventlog 0000".into();
        assert!(eventlog_from_console(&bad).is_err());
    }
}
