//! `gateway-init`: PID 1 of the gateway. See the library docs and README.md.
//!
//! As PID 1: mount, boot (verify plan and policy, load modules, report PCRs), build the
//! compartments and start the Viaduct, print `ready`, then supervise forever.
//!
//! Other modes of the same binary:
//! - `appliance-compartment <side>` (argv[0], set by the init): the compartment init
//!   inside a personality ([`gateway::cinit`]).
//! - `appliance-guest <side>` (the file name the guest kernel starts it by): PID 1
//!   of a personality's virtual machine ([`gateway::guest`]).
//! - `gateway-init --check <root> <cmdline-file>` runs the verification part of the
//!   boot against an unpacked initramfs (modules are only opened, not loaded; no TPM)
//!   and exits 0 when it would reach `ready`, 1 otherwise.
//! - `gateway-init --serve <root>` (host tests): runs the runtime from an unpacked
//!   tree on this host, without the cmdline pin, PCRs or modules: NICs are matched in
//!   this process's network namespace, `APPLIANCE_CGROUP_ROOT` (optional) names a
//!   cgroup2 directory to create the compartments' cgroups in, `APPLIANCE_TPM`
//!   (optional) a Unix socket served by swtpm that holds the key-use ledger of manual
//!   keys (without it, a plan with manual keys keeps the Viaduct down),
//!   `APPLIANCE_VM_DIR` (optional) where VM personalities' port sockets and
//!   macvtap nodes go. SIGTERM or `poweroff`
//!   on stdin stops everything and exits 0.

use gateway::boot::{self, Env, KernelModules, ModuleLoader, ModuleOutcome};
use gateway::console::Logger;
use gateway::esp::{Assessment, EspEnv};
use gateway::pid1::{self, Mode, State};
use gateway::runtime::{Runtime, RuntimeEnv, CINIT_ARGV0};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Checks that module files are readable without loading them.
struct OpenOnly;

impl ModuleLoader for OpenOnly {
    fn load(&mut self, path: &Path) -> gateway::Result<ModuleOutcome> {
        std::fs::File::open(path)
            .map_err(|e| gateway::Error::io("opening kernel module", path, e))?;
        Ok(ModuleOutcome::Loaded)
    }
}

/// How long the compartments get to report `up` before the init gives up waiting.
const UP_LIMIT: Duration = Duration::from_secs(90);

/// Starts the runtime; the supervision loop prints `ready` once every compartment
/// reports it is up.
fn start_runtime(
    env: RuntimeEnv,
    plan: gateway::plan::Plan,
    log: &mut Logger,
) -> (State, Option<Runtime>) {
    match Runtime::start(env, &plan, plan.encode(), log) {
        Ok(mut rt) => {
            rt.announce_when_up(boot::ready_line(&plan), UP_LIMIT);
            (State::Ready(Box::new(plan)), Some(rt))
        }
        Err(e) => {
            log.log(&format!("error: {e}"));
            log.log(
                "closed: no compartment started, nothing is forwarded; type `poweroff` or `reboot`",
            );
            (State::Closed(e.to_string()), None)
        }
    }
}

fn harden_kernel(log: &mut Logger) {
    for (path, value) in [
        ("/proc/sys/kernel/dmesg_restrict", "1"),
        ("/proc/sys/kernel/kptr_restrict", "2"),
        ("/proc/sys/kernel/perf_event_paranoid", "3"),
        ("/proc/sys/net/ipv4/ip_forward", "0"),
    ] {
        if let Err(e) = std::fs::write(path, value) {
            log.log(&format!("warning: {path} = {value}: {e}"));
        }
    }
}

fn main() {
    let argv0 = std::env::args().next().unwrap_or_default();
    if Path::new(&argv0).file_name().and_then(|f| f.to_str()) == Some(CINIT_ARGV0) {
        let side = std::env::args().nth(1).unwrap_or_default();
        gateway::cinit::main(&side);
    }
    if Path::new(&argv0).file_name() == Path::new(gateway::vmm::GUEST_INIT).file_name() {
        let side = std::env::args().nth(1).unwrap_or_default();
        gateway::guest::main(&side);
    }
    if std::process::id() == 1 {
        let failures = pid1::mount_early();
        let mut log = pid1::console_logger();
        for f in failures {
            log.log(&format!("warning: {f}"));
        }
        harden_kernel(&mut log);
        let (state, rt, assessment) = match boot::run(&Env::device(), &mut KernelModules, &mut log)
        {
            Ok(plan) => {
                // The plan's drivers are in: nothing loads a module from here on.
                pid1::disable_module_loading(Path::new(pid1::MODULES_DISABLED), &mut log);
                // The device identity key, before anything starts (PCR 15).
                gateway::identity::at_boot_device(
                    &EspEnv::device(),
                    &Env::device().tpm_devices,
                    &plan,
                    &mut log,
                );
                let own = u64::from(plan.security_version.0);
                let assessment = plan
                    .boot_assessment
                    .map(|b| Assessment::start(EspEnv::device(), b, own, &mut log));
                match gateway::esp::check_floor(&EspEnv::device(), own) {
                    Ok(floor) => {
                        log.log(&match floor {
                            Some(f) => {
                                format!("security version {own}, anti-rollback floor {f}")
                            }
                            None => format!(
                                "security version {own}, no anti-rollback floor on this device yet"
                            ),
                        });
                        let (state, rt) = start_runtime(RuntimeEnv::device(), plan, &mut log);
                        (state, rt, assessment)
                    }
                    Err(e) => {
                        log.log(&format!("error: {e}"));
                        log.log("closed: not starting anything; type `poweroff` or `reboot`");
                        (State::Closed(e), None, assessment)
                    }
                }
            }
            Err(e) => {
                log.log(&format!("error: {e}"));
                log.log("closed: not starting anything; type `poweroff` or `reboot`");
                // A closed update on trial must still end in a reboot, so
                // that the boot loader counts the try.
                let env = EspEnv::device();
                // The plan may have failed before it loaded efivarfs.
                gateway::esp::load_efivarfs_module(Path::new("/"), &mut KernelModules, &mut log);
                gateway::esp::mount_efivarfs(&env, &mut log);
                let assessment = env.boot_count_path().map(|_| {
                    Assessment::start(
                        env,
                        gateway::plan::BootAssessment {
                            timeout_s: gateway::esp::CLOSED_TIMEOUT_S,
                            tunnels: 0,
                        },
                        0,
                        &mut log,
                    )
                });
                (State::Closed(e.to_string()), None, assessment)
            }
        };
        pid1::supervise(state, rt, assessment, &mut log, Mode::Pid1);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, root, cmdline] if flag == "--check" => check(root, cmdline),
        [flag, root] if flag == "--serve" => serve(root),
        _ => {
            eprintln!("gateway-init runs as PID 1; other uses:\n  gateway-init --check <root> <cmdline-file>\n  gateway-init --serve <root>");
            std::process::exit(2);
        }
    }
}

fn check(root: &str, cmdline: &str) {
    let env = Env {
        root: PathBuf::from(root),
        cmdline: PathBuf::from(cmdline),
        tpm_devices: Vec::new(),
        event_log: PathBuf::new(),
        printk: None,
    };
    let mut log = Logger::new(vec![Box::new(std::io::stdout())]);
    match boot::run(&env, &mut OpenOnly, &mut log) {
        Ok(plan) => {
            log.log(&boot::ready_line(&plan));
            std::process::exit(0)
        }
        Err(e) => {
            log.log(&format!("error: {e}"));
            std::process::exit(1);
        }
    }
}

fn serve(root: &str) {
    let mut log = Logger::new(vec![pid1::stdout_sink()]);
    let root = PathBuf::from(root);
    let plan_path = root.join(&gateway::plan::PLAN_PATH[1..]);
    let plan = boot::read_limited(&plan_path, gateway::plan::MAX_PLAN_LEN, "reading plan")
        .and_then(|b| Ok(gateway::plan::Plan::decode(&b)?));
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            log.log(&format!("error: {e}"));
            std::process::exit(1);
        }
    };
    log.log(&format!(
        "serve: plan sha256 {} profile {} (not pinned: host test mode)",
        plan.digest(),
        plan.profile_name
    ));
    // Orphans of the compartments' holder processes come back to us, not to PID 1.
    let _ = gateway::sys::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
    let env = RuntimeEnv {
        root: root.clone(),
        class_net: PathBuf::from("/sys/class/net"),
        cgroup_root: std::env::var_os("APPLIANCE_CGROUP_ROOT").map(PathBuf::from),
        self_exe: PathBuf::from("/proc/self/exe"),
        nic_wait: Duration::from_secs(2),
        // A Unix socket served by swtpm (`--server type=unixio`), for the key-use ledger.
        tpm: std::env::var_os("APPLIANCE_TPM")
            .map(PathBuf::from)
            .into_iter()
            .collect(),
        // Host test mode: the management socket's directory and a directory
        // standing for the ESP, both given by the harness.
        mgmt_dir: std::env::var_os("APPLIANCE_MGMT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::temp_dir().join(format!("appliance-mgmt-{}", std::process::id()))
            }),
        esp: gateway::update::EspAccess::Dir(
            std::env::var_os("APPLIANCE_ESP_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("run/no-esp")),
        ),
        event_log: std::env::var_os("APPLIANCE_EVENT_LOG")
            .map(PathBuf::from)
            .unwrap_or_default(),
        sysfs: PathBuf::from("/sys"),
        // VM personalities' port sockets and macvtap nodes.
        vm_dir: std::env::var_os("APPLIANCE_VM_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("run/vm")),
    };
    let (state, rt) = match boot::verify_policy(
        &Env {
            root: env.root.clone(),
            cmdline: PathBuf::new(),
            tpm_devices: Vec::new(),
            event_log: PathBuf::new(),
            printk: None,
        },
        &plan,
    ) {
        Ok(d) => {
            log.log(&format!("policy {} sha256 {d}", plan.policy_path));
            // The device identity, when the harness gives a TPM and an ESP
            // directory (its UKIs' signed PCR policies).
            if let (Some(tpm), Some(esp)) = (
                env.tpm.first(),
                std::env::var_os("APPLIANCE_ESP_DIR").map(PathBuf::from),
            ) {
                gateway::identity::at_boot_serve(tpm, &esp, &plan, &mut log);
            }
            start_runtime(env, plan, &mut log)
        }
        Err(e) => {
            log.log(&format!("error: {e}"));
            log.log("closed: not starting anything");
            (State::Closed(e.to_string()), None)
        }
    };
    pid1::supervise(state, rt, None, &mut log, Mode::Test);
}
