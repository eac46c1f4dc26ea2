//! `gateway-init`: PID 1 of the gateway. See the library docs and README.md.
//!
//! As PID 1: mount, boot (verify plan and policy, load modules, report PCRs), then
//! supervise forever. Not as PID 1: `gateway-init --check <root> <cmdline-file>` runs
//! the verification part of the boot against an unpacked initramfs (modules are only
//! opened, not loaded; no TPM) and exits 0 when it would reach `ready`, 1 otherwise.

use gateway::boot::{self, Env, KernelModules, ModuleLoader, ModuleOutcome};
use gateway::console::Logger;
use gateway::pid1::{self, State};
use std::path::{Path, PathBuf};

/// Checks that module files are readable without loading them.
struct OpenOnly;

impl ModuleLoader for OpenOnly {
    fn load(&mut self, path: &Path) -> gateway::Result<ModuleOutcome> {
        std::fs::File::open(path)
            .map_err(|e| gateway::Error::io("opening kernel module", path, e))?;
        Ok(ModuleOutcome::Loaded)
    }
}

fn main() {
    if std::process::id() == 1 {
        let failures = pid1::mount_early();
        let mut log = pid1::console_logger();
        for f in failures {
            log.log(&format!("warning: {f}"));
        }
        let state = match boot::run(&Env::device(), &mut KernelModules, &mut log) {
            Ok(plan) => State::Ready(plan),
            Err(e) => {
                log.log(&format!("error: {e}"));
                log.log("closed: not starting anything; type `poweroff` or `reboot`");
                State::Closed(e.to_string())
            }
        };
        pid1::supervise(state, &mut log);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [flag, root, cmdline] = args.as_slice() else {
        eprintln!("gateway-init runs as PID 1; to check an unpacked initramfs: gateway-init --check <root> <cmdline-file>");
        std::process::exit(2);
    };
    if flag != "--check" {
        eprintln!("unknown option {flag:?}; usage: gateway-init --check <root> <cmdline-file>");
        std::process::exit(2);
    }
    let env = Env {
        root: PathBuf::from(root),
        cmdline: PathBuf::from(cmdline),
        tpm_devices: Vec::new(),
        event_log: PathBuf::new(),
        printk: None,
    };
    let mut log = Logger::new(vec![Box::new(std::io::stdout())]);
    match boot::run(&env, &mut OpenOnly, &mut log) {
        Ok(_) => std::process::exit(0),
        Err(e) => {
            log.log(&format!("error: {e}"));
            std::process::exit(1);
        }
    }
}
