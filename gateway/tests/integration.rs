//! Integration tests: the boot sequence against a fake initramfs tree, the `--check`
//! mode of the binary, and the TPM code against a real TPM (swtpm over TCP).

use gateway::boot::{self, Env, KernelModules, ModuleLoader, ModuleOutcome};
use gateway::console::Logger;
use gateway::digest::Sha256Digest;
use gateway::plan::{
    CompartmentPlan, InitramfsPath, ModulePath, NicMatch, Plan, ProfileName, ProfileVersion,
    SecurityVersion, ShortName, Side, SocketFamily,
};
use gateway::tpm::{self, PcrIndex, StreamTransport, Transport};
use gateway::Error;
use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

#[derive(Clone, Default)]
struct Capture(Rc<RefCell<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn logger(&self) -> Logger {
        Logger::new(vec![Box::new(self.clone())])
    }
    fn text(&self) -> String {
        String::from_utf8(self.0.borrow().clone()).unwrap()
    }
}

#[derive(Default)]
struct Recorder(Vec<PathBuf>);

impl ModuleLoader for Recorder {
    fn load(&mut self, path: &Path) -> gateway::Result<ModuleOutcome> {
        self.0.push(path.to_owned());
        Ok(if self.0.len() == 1 {
            ModuleOutcome::Loaded
        } else {
            ModuleOutcome::AlreadyLoaded
        })
    }
}

const POLICY: &[u8] = b"compiled policy blob v1";

struct Tree {
    dir: tempfile::TempDir,
    plan: Plan,
}

impl Tree {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan {
            profile_name: ProfileName::new("lab-a").unwrap(),
            profile_version: ProfileVersion::new("0.3.1").unwrap(),
            security_version: SecurityVersion(2),
            policy_path: InitramfsPath::new("/etc/appliance/policy.bin").unwrap(),
            policy_sha256: Sha256Digest::of(POLICY),
            manual_keys: vec![],
            modules: vec![
                ModulePath::new("/lib/modules/failover.ko").unwrap(),
                ModulePath::new("/lib/modules/virtio_net.ko").unwrap(),
            ],
            compartments: [(Side::Red, "lan"), (Side::Black, "wan")]
                .into_iter()
                .enumerate()
                .map(|(i, (side, nic))| CompartmentPlan {
                    side,
                    root: InitramfsPath::new(&format!("/personalities/{side}")).unwrap(),
                    uid_base: 100000 * (i as u32 + 1),
                    memory_max: 1 << 28,
                    pids_max: 64,
                    nic: ShortName::new("nic", nic).unwrap(),
                    nic_match: NicMatch {
                        name: Some(format!("{nic}0")),
                        ..NicMatch::default()
                    },
                    setup: InitramfsPath::new("/etc/appliance/network").unwrap(),
                    socket_families: SocketFamily::ALL.to_vec(),
                    services: vec![],
                    vm: None,
                })
                .collect(),
            viaduct: InitramfsPath::new("/usr/sbin/viaduct").unwrap(),
            ike: None,
            boot_assessment: None,
            update: None,
            fpm: None,
        };
        std::fs::create_dir_all(dir.path().join("etc/appliance")).unwrap();
        std::fs::create_dir_all(dir.path().join("lib/modules")).unwrap();
        std::fs::write(dir.path().join("etc/appliance/plan"), plan.encode()).unwrap();
        std::fs::write(dir.path().join("etc/appliance/policy.bin"), POLICY).unwrap();
        std::fs::write(
            dir.path().join("lib/modules/failover.ko"),
            b"not really elf",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("lib/modules/virtio_net.ko"),
            b"not really elf",
        )
        .unwrap();
        let t = Tree { dir, plan };
        t.set_cmdline(&t.plan.digest().to_hex());
        t
    }
    fn set_cmdline(&self, hex: &str) {
        std::fs::write(
            self.cmdline(),
            format!("console=ttyS0 appliance.plan={hex} panic=-1\n"),
        )
        .unwrap();
    }
    fn cmdline(&self) -> PathBuf {
        self.dir.path().join("cmdline")
    }
    fn env(&self) -> Env {
        Env {
            root: self.dir.path().to_owned(),
            cmdline: self.cmdline(),
            tpm_devices: vec![self.dir.path().join("no-tpm")],
            event_log: self.dir.path().join("no-eventlog"),
            printk: None,
        }
    }
}

#[test]
fn boot_reaches_ready_with_matching_plan_and_policy() {
    let t = Tree::new();
    let cap = Capture::default();
    let mut mods = Recorder::default();
    let plan = boot::run(&t.env(), &mut mods, &mut cap.logger()).unwrap();
    assert_eq!(plan, t.plan);
    assert_eq!(
        mods.0,
        vec![
            t.dir.path().join("lib/modules/failover.ko"),
            t.dir.path().join("lib/modules/virtio_net.ko")
        ]
    );
    let out = cap.text();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("appliance: gateway-init {}", env!("CARGO_PKG_VERSION"))
    );
    assert!(lines[1].starts_with(&format!(
        "appliance: plan sha256 {} profile lab-a version 0.3.1",
        t.plan.digest()
    )));
    assert_eq!(
        lines[2],
        "appliance: module /lib/modules/failover.ko loaded"
    );
    assert_eq!(
        lines[3],
        "appliance: module /lib/modules/virtio_net.ko already loaded"
    );
    assert_eq!(
        lines[4],
        format!(
            "appliance: policy /etc/appliance/policy.bin sha256 {}",
            Sha256Digest::of(POLICY)
        )
    );
    assert_eq!(lines[5], "appliance: tpm absent: no PCRs to report");
    assert_eq!(lines[6], "appliance: eventlog absent");
    assert_eq!(
        lines[7],
        "appliance: tpm absent: the plan and policy are not measured into PCR 12"
    );
    // `ready` comes from the caller once the compartments are up.
    assert_eq!(lines.len(), 8);
    assert_eq!(boot::ready_line(&plan), "ready lab-a 0.3.1");
}

#[test]
fn boot_stays_closed_when_plan_does_not_match_cmdline() {
    let t = Tree::new();
    t.set_cmdline(&Sha256Digest::of(b"another plan").to_hex());
    let cap = Capture::default();
    let mut mods = Recorder::default();
    let err = boot::run(&t.env(), &mut mods, &mut cap.logger()).unwrap_err();
    assert!(matches!(err, Error::PlanDigestMismatch { .. }), "{err}");
    assert!(
        mods.0.is_empty(),
        "no module may be loaded from an unverified plan"
    );
    assert!(!cap.text().contains("appliance: ready"));
}

#[test]
fn boot_stays_closed_when_plan_is_tampered_even_by_one_byte() {
    let t = Tree::new();
    let mut bytes = t.plan.encode();
    let i = bytes.iter().position(|&b| b == b'3').unwrap(); // in "0.3.1"
    bytes[i] = b'4';
    std::fs::write(t.dir.path().join("etc/appliance/plan"), bytes).unwrap();
    let cap = Capture::default();
    let err = boot::run(&t.env(), &mut Recorder::default(), &mut cap.logger()).unwrap_err();
    assert!(matches!(err, Error::PlanDigestMismatch { .. }), "{err}");
    assert!(!cap.text().contains("appliance: ready"));
}

#[test]
fn boot_stays_closed_without_cmdline_pin() {
    let t = Tree::new();
    std::fs::write(t.cmdline(), "console=ttyS0\n").unwrap();
    let cap = Capture::default();
    let err = boot::run(&t.env(), &mut Recorder::default(), &mut cap.logger()).unwrap_err();
    assert!(matches!(err, Error::Cmdline(_)), "{err}");
    assert!(!cap.text().contains("appliance: ready"));
}

#[test]
fn boot_stays_closed_when_policy_does_not_match_plan() {
    let t = Tree::new();
    std::fs::write(
        t.dir.path().join("etc/appliance/policy.bin"),
        b"compiled policy blob v2",
    )
    .unwrap();
    let cap = Capture::default();
    let err = boot::run(&t.env(), &mut Recorder::default(), &mut cap.logger()).unwrap_err();
    assert!(matches!(err, Error::PolicyDigestMismatch { .. }), "{err}");
    assert!(!cap.text().contains("appliance: ready"));
}

#[test]
fn module_failure_names_the_module_and_errno() {
    let t = Tree::new();
    let cap = Capture::default();
    // A missing file: the open fails before the syscall.
    std::fs::remove_file(t.dir.path().join("lib/modules/virtio_net.ko")).unwrap();
    let err = boot::run(&t.env(), &mut KernelModules, &mut cap.logger()).unwrap_err();
    let msg = err.to_string();
    // The first module is garbage: finit_module refuses it (ENOEXEC as root, EPERM
    // without CAP_SYS_MODULE) and the error names the module and the errno.
    assert!(
        matches!(err, Error::Module { errno, .. } if errno != 0),
        "{msg}"
    );
    assert!(
        msg.contains("failover.ko") && msg.contains("errno"),
        "{msg}"
    );
    assert!(!cap.text().contains("appliance: ready"));
    // And the missing file is named too.
    let err = KernelModules
        .load(&t.dir.path().join("lib/modules/virtio_net.ko"))
        .unwrap_err();
    assert!(err.to_string().contains("virtio_net.ko"), "{err}");
}

#[test]
fn event_log_is_framed_on_the_console_and_reassembles() {
    let t = Tree::new();
    let log: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut env = t.env();
    env.event_log = t.dir.path().join("binary_bios_measurements");
    std::fs::write(&env.event_log, &log).unwrap();
    let cap = Capture::default();
    boot::report_measurements(&env, &mut cap.logger());
    let text = cap.text();
    assert!(text.contains(&format!(
        "appliance: eventlog begin 1000 {}\n",
        Sha256Digest::of(&log)
    )));
    assert!(text
        .lines()
        .all(|l| l.len() <= "appliance: eventlog ".len() + 128));
    assert_eq!(signing::eventlog::from_console(&text).unwrap(), log);
}

#[test]
fn check_mode_of_the_binary_accepts_good_and_rejects_tampered_trees() {
    let t = Tree::new();
    let bin = env!("CARGO_BIN_EXE_gateway-init");
    let run = || {
        std::process::Command::new(bin)
            .arg("--check")
            .arg(t.dir.path())
            .arg(t.cmdline())
            .output()
            .unwrap()
    };
    let ok = run();
    let out = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(ok.status.success(), "{out}");
    assert!(out.ends_with("appliance: ready lab-a 0.3.1\n"), "{out}");
    std::fs::write(t.dir.path().join("etc/appliance/policy.bin"), b"evil").unwrap();
    let bad = run();
    let out = String::from_utf8_lossy(&bad.stdout).into_owned();
    assert_eq!(bad.status.code(), Some(1), "{out}");
    assert!(
        out.contains("appliance: error: policy digest mismatch"),
        "{out}"
    );
    assert!(!out.contains("appliance: ready"), "{out}");
}

// ---------------------------------------------------------------- swtpm

/// swtpm serving raw TPM 2.0 commands on 127.0.0.1; killed on drop.
struct Swtpm {
    child: std::process::Child,
    port: u16,
    _state: Option<tempfile::TempDir>,
}

impl Swtpm {
    /// Stops swtpm and gives its state back (for a restart on the same state).
    fn into_state(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self._state.take().unwrap()
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port_pair() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

fn start_swtpm() -> Option<Swtpm> {
    start_swtpm_with(tempfile::tempdir().unwrap())
}

/// swtpm on the state in `state` (a restart on the same state is a reboot of the same
/// TPM: NV indices persist).
fn start_swtpm_with(state: tempfile::TempDir) -> Option<Swtpm> {
    let mut state = Some(state);
    if std::process::Command::new("swtpm")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: swtpm not found (install package swtpm)");
        return None;
    }
    // One start at a time in this process: a port pair is chosen and bound by
    // swtpm before the next test chooses (two tests choosing at once could
    // pick overlapping pairs, and one probe then reach the other's swtpm).
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    for _attempt in 0..5 {
        let st = state.take().unwrap();
        let port = free_port_pair();
        let child = std::process::Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .arg("--tpmstate")
            .arg(format!("dir={}", st.path().display()))
            .arg("--flags")
            .arg("not-need-init,startup-clear")
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn swtpm");
        let mut s = Swtpm {
            child,
            port,
            _state: Some(st),
        };
        for _ in 0..100 {
            if let Ok(Some(_)) = s.child.try_wait() {
                break; // port taken or similar: retry with another
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // Ours, not a listener of another program: it is still running.
                std::thread::sleep(std::time::Duration::from_millis(50));
                if let Ok(None) = s.child.try_wait() {
                    return Some(s);
                }
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = s.child.kill();
        let _ = s.child.wait();
        state = s._state.take();
    }
    panic!("swtpm did not start after 5 attempts");
}

fn connect(s: &Swtpm) -> StreamTransport<std::net::TcpStream> {
    // swtpm serves one connection at a time; the probe in start_swtpm has closed.
    for _ in 0..50 {
        if let Ok(c) = std::net::TcpStream::connect(("127.0.0.1", s.port)) {
            c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            return StreamTransport(c);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("cannot connect to swtpm on port {}", s.port);
}

/// Counts commands, to see the PCR_Read loop at work.
struct Counting<'a> {
    inner: &'a mut dyn Transport,
    commands: usize,
}

impl Transport for Counting<'_> {
    fn transact(&mut self, command: &[u8]) -> gateway::Result<Vec<u8>> {
        self.commands += 1;
        self.inner.transact(command)
    }
}

fn pcr(n: u8) -> PcrIndex {
    PcrIndex::new(n).unwrap()
}

#[test]
fn swtpm_pcr_values_match_extends_computed_in_the_test() {
    let Some(s) = start_swtpm() else { return };
    let mut t = connect(&s);
    let zero = Sha256Digest([0; 32]);
    let (a, b, c) = (
        Sha256Digest::of(b"uki"),
        Sha256Digest::of(b"sb"),
        Sha256Digest::of(b"more"),
    );
    tpm::extend_pcr(&mut t, pcr(4), &a).unwrap();
    tpm::extend_pcr(&mut t, pcr(4), &c).unwrap();
    tpm::extend_pcr(&mut t, pcr(7), &b).unwrap();
    let want4 = tpm::extended_value(&tpm::extended_value(&zero, &a), &c);
    let want7 = tpm::extended_value(&zero, &b);

    let cap = Capture::default();
    boot::report_pcrs(&mut t, &mut cap.logger()).unwrap();
    assert_eq!(
        cap.text(),
        format!("appliance: pcr 4 sha256 {want4}\nappliance: pcr 7 sha256 {want7}\nappliance: pcr 11 sha256 {zero}\nappliance: pcr 12 sha256 {zero}\n")
    );
}

#[test]
fn swtpm_reading_all_24_pcrs_takes_several_commands() {
    let Some(s) = start_swtpm() else { return };
    let mut t = connect(&s);
    let d = Sha256Digest::of(b"sixteen");
    tpm::extend_pcr(&mut t, pcr(16), &d).unwrap();
    let all: Vec<PcrIndex> = (0..24).map(pcr).collect();
    let mut counting = Counting {
        inner: &mut t,
        commands: 0,
    };
    let values = tpm::read_pcrs(&mut counting, &all).unwrap();
    // TPML_DIGEST carries at most 8 digests: 24 PCRs need at least 3 commands.
    assert!(counting.commands >= 3, "{} commands", counting.commands);
    assert_eq!(
        values.iter().map(|(p, _)| p.get()).collect::<Vec<_>>(),
        (0..24).collect::<Vec<u8>>()
    );
    assert_eq!(
        values[16].1,
        tpm::extended_value(&Sha256Digest([0; 32]), &d)
    );
    assert_eq!(values[0].1, Sha256Digest([0; 32]));
}

#[test]
fn swtpm_error_response_code_is_reported() {
    let Some(s) = start_swtpm() else { return };
    let mut t = connect(&s);
    let mut cmd = tpm::pcr_read_command(tpm::PcrSet::of(&[pcr(4)]));
    cmd[6..10].copy_from_slice(&0x0000_0FFFu32.to_be_bytes()); // no such command
    let resp = t.transact(&cmd).unwrap();
    let err = tpm::parse_pcr_read_response(&resp, tpm::PcrSet::of(&[pcr(4)])).unwrap_err();
    assert!(
        matches!(err, Error::TpmResponseCode { rc, .. } if rc != 0),
        "{err}"
    );
}

// ------------------------------------------------------------ key-use ledger

/// Runs a tpm2-tools command against swtpm (the swtpm TCTI: server port, control port
/// + 1); `None` with a loud message if tpm2-tools is missing.
fn tpm2_tool(s: &Swtpm, args: &[&str]) -> Option<String> {
    let out = match std::process::Command::new(args[0])
        .args(&args[1..])
        .env(
            "TPM2TOOLS_TCTI",
            format!("swtpm:host=127.0.0.1,port={}", s.port),
        )
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "SKIP part: {} not runnable ({e}); install tpm2-tools",
                args[0]
            );
            return None;
        }
    };
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The ledger on a real TPM (swtpm): the first claim defines the index and records the
/// keys; the same keys are refused afterwards — also after a TPM restart on the same
/// state (a reboot) — and new keys are appended. tpm2-tools, which we did not write,
/// reads the index back: its attributes, size and the records.
#[test]
fn key_ledger_on_swtpm_survives_a_restart_and_reads_back_with_tpm2_tools() {
    use gateway::keyledger::{self, Claim, KeyUse};
    let state = tempfile::tempdir().unwrap();
    let keep = state.path().to_owned();
    let Some(s) = start_swtpm_with(state) else {
        return;
    };
    let keys = [KeyUse([0x5a; 16]), KeyUse([0x17; 16])];
    {
        let mut t = connect(&s);
        assert_eq!(
            keyledger::claim(&mut t, &keys).unwrap(),
            Claim::Recorded {
                used: 2,
                defined: true
            }
        );
        assert_eq!(
            keyledger::claim(&mut t, &keys).unwrap(),
            Claim::AlreadyUsed { reused: 2 }
        );
    }
    let index = format!("{:#x}", keyledger::LEDGER_INDEX);
    if let Some(public) = tpm2_tool(&s, &["tpm2_nvreadpublic", &index]) {
        assert!(public.contains(&index), "{public}");
        for attr in ["authwrite", "authread", "no_da", "written"] {
            assert!(public.contains(attr), "{attr}: {public}");
        }
        assert!(public.contains("size: 1024"), "{public}");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("records");
        tpm2_tool(
            &s,
            &[
                "tpm2_nvread",
                &index,
                "-s",
                "48",
                "-o",
                out.to_str().unwrap(),
            ],
        )
        .unwrap();
        let got = std::fs::read(&out).unwrap();
        assert_eq!(&got[..16], &[0x17; 16], "records ascending");
        assert_eq!(&got[16..32], &[0x5a; 16]);
        assert_eq!(&got[32..48], &[0; 16]);
    }
    // A reboot: the same TPM state, a new swtpm process.
    let s = start_swtpm_with(s.into_state()).unwrap();
    assert!(keep.exists());
    let mut t = connect(&s);
    assert_eq!(
        keyledger::claim(&mut t, &[keys[1]]).unwrap(),
        Claim::AlreadyUsed { reused: 1 }
    );
    assert_eq!(
        keyledger::claim(&mut t, &[KeyUse([0x99; 16])]).unwrap(),
        Claim::Recorded {
            used: 3,
            defined: false
        }
    );
}

/// An administrator who defined the index as the docs say (owner password set) gets a
/// ledger the init uses; an index of other attributes at that handle is refused.
#[test]
fn key_ledger_takes_an_index_defined_by_tpm2_nvdefine_and_refuses_a_foreign_one() {
    use gateway::keyledger::{self, Claim, KeyUse};
    let Some(s) = start_swtpm() else { return };
    let index = format!("{:#x}", keyledger::LEDGER_INDEX);
    if tpm2_tool(
        &s,
        &[
            "tpm2_nvdefine",
            &index,
            "-C",
            "o",
            "-s",
            "1024",
            "-a",
            "authread|authwrite|no_da",
        ],
    )
    .is_none()
    {
        return;
    }
    {
        let mut t = connect(&s);
        assert_eq!(
            keyledger::claim(&mut t, &[KeyUse([1; 16])]).unwrap(),
            Claim::Recorded {
                used: 1,
                defined: false
            }
        );
    }
    let Some(s2) = start_swtpm() else { return };
    tpm2_tool(
        &s2,
        &[
            "tpm2_nvdefine",
            &index,
            "-C",
            "o",
            "-s",
            "1024",
            "-a",
            "ownerread|ownerwrite|authread|authwrite",
        ],
    )
    .unwrap();
    let mut t = connect(&s2);
    let e = keyledger::claim(&mut t, &[KeyUse([1; 16])])
        .unwrap_err()
        .to_string();
    assert!(e.contains("not ours"), "{e}");
}

/// The anti-rollback floor on swtpm: none at first; raised, it reads back,
/// survives a restart of the TPM, never goes down, refuses a huge jump; and
/// it starts at 0 although a TPM counter starts at the highest value any
/// counter of the TPM had (another counter raised first).
#[test]
fn anti_rollback_floor_on_swtpm_only_goes_up_and_survives_a_restart() {
    use gateway::floor;
    use gateway::tpm::{self, NvPublic};
    let Some(s) = start_swtpm() else { return };
    {
        let mut t = connect(&s);
        // Another counter of this TPM, counted to 5 first.
        let other = NvPublic {
            index: 0x0180_0B00,
            name_alg: tpm::TPM_ALG_SHA256,
            attributes: tpm::TPMA_NV_COUNTER | tpm::TPMA_NV_AUTHWRITE | tpm::TPMA_NV_AUTHREAD,
            auth_policy_len: 0,
            data_size: 8,
        };
        let r = t.transact(&tpm::nv_define_space_command(&other)).unwrap();
        tpm::parse_empty_session_response(&r, "NV_DefineSpace").unwrap();
        for _ in 0..5 {
            let r = tpm::transact_retrying(
                &mut t,
                &tpm::nv_self_auth_command(tpm::TPM_CC_NV_INCREMENT, other.index),
            )
            .unwrap();
            tpm::parse_empty_session_response(&r, "NV_Increment").unwrap();
        }
        assert_eq!(floor::read(&mut t).unwrap(), None, "no floor yet");
        assert_eq!(floor::raise(&mut t, 3).unwrap(), (0, 3));
        assert_eq!(floor::read(&mut t).unwrap(), Some(3));
        assert_eq!(floor::raise(&mut t, 2).unwrap(), (3, 3), "never lowered");
        let e = floor::raise(&mut t, 3 + floor::MAX_STEP + 1).unwrap_err();
        assert!(e.to_string().contains("more than"), "{e}");
        // The base is write-locked: rewriting it (to move the floor) fails.
        let r = t
            .transact(&tpm::nv_write_command(floor::FLOOR_BASE, 0, &[0u8; 8]))
            .unwrap();
        assert!(tpm::parse_empty_session_response(&r, "NV_Write").is_err());
        assert_eq!(floor::read(&mut t).unwrap(), Some(3));
    }
    let s = start_swtpm_with(s.into_state()).unwrap();
    let mut t = connect(&s);
    assert_eq!(floor::read(&mut t).unwrap(), Some(3), "after a restart");
    assert_eq!(floor::raise(&mut t, 4).unwrap(), (3, 4));
    drop(t); // swtpm serves one connection at a time
    let index = format!("{:#x}", floor::FLOOR_COUNTER);
    if let Some(public) = tpm2_tool(&s, &["tpm2_nvreadpublic", &index]) {
        assert!(
            public.contains("nt=0x1") || public.contains("counter"),
            "{public}"
        );
    }
}

/// The floor's indices defined beforehand with tpm2-tools, as the admin
/// guide says for a TPM whose owner hierarchy has a password: the init uses
/// them.
#[test]
fn anti_rollback_floor_takes_indices_defined_by_tpm2_nvdefine() {
    use gateway::floor;
    let Some(s) = start_swtpm() else { return };
    for (index, attrs) in [
        (floor::FLOOR_COUNTER, "nt=counter|authread|authwrite|no_da"),
        (floor::FLOOR_BASE, "authread|authwrite|no_da|writedefine"),
    ] {
        let index = format!("{index:#x}");
        tpm2_tool(
            &s,
            &["tpm2_nvdefine", &index, "-C", "o", "-s", "8", "-a", attrs],
        )
        .unwrap_or_else(|| panic!("tpm2_nvdefine {index} (tpm2-tools)"));
    }
    let mut t = connect(&s);
    assert_eq!(floor::read(&mut t).unwrap(), None);
    assert_eq!(floor::raise(&mut t, 2).unwrap(), (0, 2));
    assert_eq!(floor::read(&mut t).unwrap(), Some(2));
}

// ------------------------------------------------------- attestation keys

#[test]
fn swtpm_ak_is_created_once_under_the_ek_and_quotes_check_with_tpm2_checkquote() {
    use attest_wire::tpms;
    let Some(s) = start_swtpm() else { return };
    let mut t = connect(&s);
    let ak = gateway::tpmkey::ensure_ak(&mut t).expect("AK created");
    assert!(ak.ak_violations().is_empty(), "{:?}", ak.ak_violations());
    let again = gateway::tpmkey::ensure_ak(&mut t).expect("AK read back");
    assert_eq!(ak, again, "the persistent AK is the same key");
    let ek = gateway::tpmkey::ek_public(&mut t).unwrap();
    assert!(tpms::matches_template(&ek, &tpms::ek_rsa_template()));
    assert_eq!(
        ek,
        gateway::tpmkey::ek_public(&mut t).unwrap(),
        "the EK is deterministic"
    );

    tpm::extend_pcr(&mut t, pcr(12), &Sha256Digest::of(b"policy")).unwrap();
    let qualifying = [0x5a; 32];
    let mask = 0xff | 1 << 11 | 1 << 12 | 1 << 15;
    let q = gateway::tpmkey::quote(&mut t, &qualifying, mask).unwrap();
    assert_eq!(q.values.len(), 11);
    let a = tpms::Attest::parse(&q.attest).unwrap();
    assert_eq!(a.extra_data, qualifying);
    match &a.attested {
        tpms::Attested::Quote { selection, digest } => {
            assert_eq!(selection, &tpms::PcrSelection::sha256(mask));
            assert_eq!(digest[..], tpms::pcr_digest(&q.values)[..]);
        }
        other => panic!("{other:?}"),
    }
    if std::process::Command::new("tpm2_checkquote")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: tpm2_checkquote not found (install package tpm2-tools)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ak.pub"), ak.to_tpm2b()).unwrap();
    std::fs::write(dir.path().join("quote.msg"), &q.attest).unwrap();
    std::fs::write(dir.path().join("quote.sig"), &q.signature).unwrap();
    let run = |nonce: &str| {
        std::process::Command::new("tpm2_checkquote")
            .current_dir(dir.path())
            .args([
                "-u",
                "ak.pub",
                "-m",
                "quote.msg",
                "-s",
                "quote.sig",
                "-g",
                "sha256",
                "-q",
                nonce,
            ])
            .output()
            .unwrap()
    };
    let good = run(&"5a".repeat(32));
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(
        !run(&"5b".repeat(32)).status.success(),
        "another nonce must fail"
    );
}

#[test]
fn swtpm_runtime_measurement_extends_pcr_12_with_the_plan_then_the_policy() {
    let t = Tree::new();
    let Some(s) = start_swtpm() else { return };
    let mut tpm = connect(&s);
    let cap = Capture::default();
    boot::measure_with(&mut tpm, &t.plan, &mut cap.logger()).unwrap();
    let plan_text = format!("appliance-init plan sha256:{}", t.plan.digest());
    let policy_text = format!("appliance-init policy sha256:{}", Sha256Digest::of(POLICY));
    assert_eq!(
        cap.text(),
        format!(
            "appliance: measured pcr 12 {plan_text}\nappliance: measured pcr 12 {policy_text}\n"
        )
    );
    let zero = Sha256Digest([0; 32]);
    let want = tpm::extended_value(
        &tpm::extended_value(&zero, &Sha256Digest::of(plan_text.as_bytes())),
        &Sha256Digest::of(policy_text.as_bytes()),
    );
    let got = tpm::read_pcrs(&mut tpm, &[pcr(12)]).unwrap();
    assert_eq!(got, vec![(pcr(12), want)]);
    // The log the agent sends replays to the same value.
    let log = attest_wire::runtime::to_bytes(&boot::runtime_events(&t.plan));
    let events = attest_wire::runtime::parse(&log).unwrap();
    let replayed = attest_wire::runtime::replay(&Default::default(), &events);
    assert_eq!(replayed[&12], want.0);
}

#[test]
fn swtpm_ak_survives_a_reboot_of_the_tpm() {
    let Some(s) = start_swtpm() else { return };
    let ak = {
        let mut t = connect(&s);
        gateway::tpmkey::ensure_ak(&mut t).unwrap()
    };
    // Power cycle: the same state, a TPM reset (startup-clear).
    let state = s.into_state();
    let s = start_swtpm_with(state).unwrap();
    let mut t = connect(&s);
    assert_eq!(
        gateway::tpmkey::read_public(&mut t, gateway::tpmkey::AK_HANDLE).unwrap(),
        Some(ak.clone())
    );
    assert_eq!(gateway::tpmkey::ensure_ak(&mut t).unwrap(), ak);
}

#[test]
fn swtpm_an_object_at_the_ak_handle_that_is_not_our_ak_is_refused_not_replaced() {
    let Some(s) = start_swtpm() else { return };
    if std::process::Command::new("tpm2_evictcontrol")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: tpm2_evictcontrol not found (install package tpm2-tools)");
        return;
    }
    // An unrestricted signing key persisted at our handle by someone else.
    let dir = tempfile::tempdir().unwrap();
    let tcti = format!("swtpm:host=127.0.0.1,port={}", s.port);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .current_dir(dir.path())
            .env("TPM2TOOLS_TCTI", &tcti)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::process::Command::new("tpm2_flushcontext")
            .arg("-t")
            .env("TPM2TOOLS_TCTI", &tcti)
            .output();
    };
    run(&["tpm2_createprimary", "-C", "o", "-G", "ecc", "-c", "k.ctx"]);
    run(&["tpm2_evictcontrol", "-C", "o", "-c", "k.ctx", "0x81000a12"]);
    let mut t = connect(&s);
    let e = gateway::tpmkey::ensure_ak(&mut t).unwrap_err().to_string();
    assert!(e.contains("is not this appliance's attestation key"), "{e}");
    // Still there: never replaced.
    assert!(
        gateway::tpmkey::read_public(&mut t, gateway::tpmkey::AK_HANDLE)
            .unwrap()
            .is_some()
    );
}

// ------------------------------------------------------- device identity

/// A UKI-shaped PE file on a directory standing for the ESP, with `.pcrsig`.
fn esp_with_signed_policy(
    dir: &std::path::Path,
    name: &str,
    policy: &attest_wire::policy::SignedPolicy,
) {
    let stub = std::fs::read("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
        .expect("systemd-boot-efi (scripts/test installs it)");
    let mut b = images::pe::UkiBuilder::new(stub);
    b.osrel(b"ID=appliance\n".to_vec()).unwrap();
    b.linux(vec![0x4d; 4096]).unwrap();
    b.section(attest_wire::policy::SECTION, policy.to_text().into_bytes())
        .unwrap();
    std::fs::create_dir_all(dir.join("EFI/Linux")).unwrap();
    std::fs::write(dir.join("EFI/Linux").join(name), b.build().unwrap()).unwrap();
}

fn verify_identity_signature(
    public: &attest_wire::tpms::Public,
    digest: &[u8; 32],
    r: &[u8],
    s: &[u8],
) -> bool {
    let point = attest_wire::policy::identity_point(public).unwrap();
    let mut rs = vec![0u8; 32 - r.len()];
    rs.extend_from_slice(r);
    rs.extend(std::iter::repeat_n(0, 32 - s.len()));
    rs.extend_from_slice(s);
    // The TPM signed the digest itself: verify over the digest with a prehashed check.
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        &point[..],
    )
    .verify_digest(
        &aws_lc_rs::digest::Digest::import_less_safe(digest, &aws_lc_rs::digest::SHA256).unwrap(),
        &rs,
    )
    .is_ok()
}

#[test]
fn swtpm_identity_key_signs_only_under_a_policy_signed_by_the_release_key() {
    use attest_wire::policy;
    use gateway::identity;
    let Some(s) = start_swtpm() else { return };
    let release = signing::SigningKey::generate().unwrap();
    let other = signing::SigningKey::generate().unwrap();
    let boot = |t: &mut dyn Transport, uki: &[u8]| {
        // What systemd-stub does for PCR 11: here one event per "UKI".
        tpm::extend_pcr(t, pcr(11), &Sha256Digest::of(uki)).unwrap();
        tpm::read_pcrs(t, &[pcr(11)]).unwrap()[0].1 .0
    };
    let mut t = connect(&s);
    let pcr11 = boot(&mut t, b"uki 0.1.0");
    let p1 = signing::pcr_policy::sign(&release, &pcr11).unwrap();

    // The ESP: the booted UKI's .pcrsig is found by its PCR 11.
    let esp = tempfile::tempdir().unwrap();
    esp_with_signed_policy(
        esp.path(),
        "gw_0.0.9.efi",
        &signing::pcr_policy::sign(&release, &[1; 32]).unwrap(),
    );
    esp_with_signed_policy(esp.path(), "gw_0.1.0.efi", &p1);
    assert_eq!(
        identity::signed_policy_on_esp(esp.path(), &pcr11),
        Some(p1.clone())
    );
    assert_eq!(identity::signed_policy_on_esp(esp.path(), &[2; 32]), None);

    // First boot: the key is made, persisted, and signs.
    let cap = Capture::default();
    let out = identity::at_boot(&mut t, Some(esp.path()), &mut cap.logger());
    let identity::Outcome::Ready(id) = out.clone() else {
        panic!("{out:?}")
    };
    assert_eq!(id.public.attributes, policy::IDENTITY_ATTRIBUTES);
    assert!(
        cap.text()
            .contains("measured pcr 15 appliance-identity key sha256:"),
        "{}",
        cap.text()
    );
    let d = [0x42; 32];
    let (r, sg) = identity::sign(&mut t, &id, &d).unwrap();
    assert!(verify_identity_signature(&id.public, &d, &r, &sg));
    // PCR 15 holds the event the log names.
    let want15 = tpm::extended_value(&Sha256Digest([0; 32]), &Sha256Digest(out.event().digest()));
    assert_eq!(tpm::read_pcrs(&mut t, &[pcr(15)]).unwrap()[0].1, want15);

    // A signed policy for another PCR 11 (an older image's) does not unlock it.
    let old = signing::pcr_policy::sign(&release, &[1; 32]).unwrap();
    assert_eq!(identity::setup(&mut t, &old).unwrap_err().0, "policy");
    drop(t);

    // A reboot (power cycle, same TPM): the same key, still usable.
    let state = s.into_state();
    let s = start_swtpm_with(state).unwrap();
    let mut t = connect(&s);
    let again = boot(&mut t, b"uki 0.1.0");
    assert_eq!(again, pcr11);
    let id2 = identity::setup(&mut t, &p1).unwrap();
    assert_eq!(id2.public, id.public, "the identity survives a reboot");

    // A new image signed by the same key (another PCR 11): the same key signs.
    let state = s.into_state();
    let s = start_swtpm_with(state).unwrap();
    let mut t = connect(&s);
    let pcr11_new = boot(&mut t, b"uki 0.2.0");
    let p2 = signing::pcr_policy::sign(&release, &pcr11_new).unwrap();
    let id3 = identity::setup(&mut t, &p2).unwrap();
    assert_eq!(
        id3.public, id.public,
        "the identity survives a signed update"
    );
    let (r, sg) = identity::sign(&mut t, &id3, &d).unwrap();
    assert!(verify_identity_signature(&id.public, &d, &r, &sg));

    // An image signed by another key: its policy verifies, the key stays unusable and is
    // not replaced.
    let state = s.into_state();
    let s = start_swtpm_with(state).unwrap();
    let mut t = connect(&s);
    let pcr11_evil = boot(&mut t, b"uki of another signer");
    let pe = signing::pcr_policy::sign(&other, &pcr11_evil).unwrap();
    let (why, story) = identity::setup(&mut t, &pe).unwrap_err();
    assert_eq!(why, "other-release-key", "{story}");
    assert_eq!(
        gateway::tpmkey::read_public(&mut t, policy::IDENTITY_HANDLE).unwrap(),
        Some(id.public.clone())
    );
    // Nor can it sign with the real key's ticket under its own PCR 11.
    assert!(identity::sign(&mut t, &id3, &d).is_err());
    // No signed policy on the ESP (an unsigned image): unusable, said in PCR 15.
    let empty = tempfile::tempdir().unwrap();
    let cap = Capture::default();
    let out = identity::at_boot(&mut t, Some(empty.path()), &mut cap.logger());
    assert_eq!(
        out.event().text,
        "appliance-identity unusable no-signed-policy"
    );
}

/// The identity signer (what the IKE process reaches the identity key through) on
/// swtpm: the IKE side's own client and AUTH code get signatures that the pinned
/// public point verifies; a burst beyond the rate is refused by name; the signer
/// ends when the IKE side's end closes.
#[test]
fn the_identity_signer_signs_ike_auth_through_the_tpm_within_its_rate() {
    use gateway::identity;
    use ike::crypto::{PinnedPublicKey, SigningKey};
    let Some(s) = start_swtpm() else { return };
    let release = signing::SigningKey::generate().unwrap();
    let mut t = connect(&s);
    tpm::extend_pcr(&mut t, pcr(11), &Sha256Digest::of(b"uki 1.0")).unwrap();
    let pcr11 = tpm::read_pcrs(&mut t, &[pcr(11)]).unwrap()[0].1 .0;
    let p = signing::pcr_policy::sign(&release, &pcr11).unwrap();
    let id = identity::setup(&mut t, &p).unwrap();
    drop(t);
    let point: [u8; 65] = attest_wire::policy::identity_point(&id.public).unwrap();

    let (ike_end, signer_end) = gateway::sys::seqpacket_pair().unwrap();
    let (ike_end, signer_end) = (
        std::os::unix::net::UnixDatagram::from(ike_end),
        std::os::unix::net::UnixDatagram::from(signer_end),
    );
    let port = s.port;
    let id2 = id.clone();
    let server = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut open = || -> gateway::Result<Box<dyn Transport>> {
            let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            Ok(Box::new(StreamTransport(c)))
        };
        let n = gateway::signer::serve(&signer_end, &mut open, &id2, &mut |l: &str| {
            lines.push(l.to_owned())
        });
        (n, lines)
    });
    // The IKE process's side: its client, its AUTH payload, a pinned key's check.
    let signer = std::sync::Arc::new(viaduct_ike::signer::TpmSigner::new(
        std::os::fd::OwnedFd::from(ike_end.try_clone().unwrap()),
    ));
    let key = SigningKey::external_p256(&point, signer.clone()).unwrap();
    let pinned = PinnedPublicKey::ecdsa_p256(&point).unwrap();
    for i in 0..4u8 {
        let octets = vec![i; 500];
        let auth = key.sign_auth(&octets).unwrap();
        pinned.verify_auth(&auth, &octets).unwrap();
    }
    // The burst (32) is spent after 28 more; then refusals, by name.
    use ike::crypto::ExternalSigner;
    let results: Vec<_> = (0..30).map(|i| signer.sign_p256_sha256(&[i; 32])).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 28);
    assert_eq!(
        results.last().unwrap(),
        &Err(ike::crypto::Error::ExternalSigner(
            "the identity signer refused"
        ))
    );
    drop((key, signer, ike_end));
    let (n, lines) = server.join().unwrap();
    assert_eq!(n, 32);
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("signer: refused a signature: rate limit")),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 2);
}
