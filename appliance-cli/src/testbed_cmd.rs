//! `appliance testbed`: argument handling around the `testbed` crate.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use testbed::host::Error;
use testbed::lab::{Lab, LabOptions};

use crate::Outcome;

#[derive(Debug, clap::Args)]
pub struct LabArgs {
    /// Lab directory: images, serial logs, the capture, the report, run state.
    #[arg(long, default_value = "out/testbed")]
    lab: PathBuf,
    /// Directory with the lab profiles gw-a.toml and gw-b.toml (and their locks).
    #[arg(long, default_value = "profiles/lab")]
    profiles: PathBuf,
    /// Cache directory for packages and assembled parts.
    #[arg(long, env = "APPLIANCE_CACHE")]
    cache: Option<PathBuf>,
    /// Directory with the static gateway binaries (default: beside this program).
    #[arg(long, env = "APPLIANCE_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Memory of each gateway VM, in MiB.
    #[arg(long, default_value_t = 1024)]
    memory: u32,
    /// Seconds a gateway may take from QEMU start to `appliance: ready`.
    #[arg(long, default_value_t = 240)]
    ready_timeout: u64,
}

#[derive(Debug, clap::Subcommand)]
pub enum TestbedCmd {
    /// Build the lab images if missing or stale, boot both gateways with their LAN
    /// hosts, wait until both are ready, and leave the lab running.
    Up(LabArgs),
    /// Run the end-to-end checks (bringing the lab up and down unless it is up).
    Test {
        #[command(flatten)]
        lab: LabArgs,
        /// Leave the lab running afterwards.
        #[arg(long)]
        keep: bool,
        /// After enrolment, provision this secret to both gateways
        /// (`appliance provision`, with the lab's release key), reboot them and
        /// check the tunnel comes up with it; NAME as in the profiles'
        /// `tpm:NAME`. Repeatable. The gateways then run on writable copies of
        /// their disks.
        #[arg(long, value_name = "NAME=@FILE")]
        provision: Vec<String>,
        /// After enrolment, update both gateways (signed A/B updates through
        /// black) to their profiles with `private_key = "tpm:identity"` and the
        /// peer's enrolled identity key pinned, and run the checks on the tunnel
        /// those TPM-resident keys authenticate.
        #[arg(long)]
        identity: bool,
    },
    /// Stop everything the lab started and remove its namespaces, taps and run state.
    Down(LabArgs),
    /// Show whether the lab is up, its consoles and LAN hosts.
    Status(LabArgs),
    /// Attach the terminal to a gateway's serial console (until end of input).
    Console {
        #[command(flatten)]
        lab: LabArgs,
        /// gw-a or gw-b.
        gateway: String,
    },
    /// Run a command on a LAN host (a, b), e.g. `exec a -- busybox ping 10.2.0.2`.
    Exec {
        #[command(flatten)]
        lab: LabArgs,
        /// The gateway whose LAN host runs it: a or b (or gw-a, gw-b).
        host: String,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

fn open(args: LabArgs) -> anyhow::Result<Lab> {
    open_with(args, Vec::new(), false)
}

fn open_with(
    args: LabArgs,
    provision: Vec<(String, PathBuf)>,
    identity: bool,
) -> anyhow::Result<Lab> {
    let opts = LabOptions {
        provision,
        identity,
        dir: args.lab,
        profiles: args.profiles,
        cache_dir: crate::build_cmd::cache_dir(args.cache)?,
        bin_dir: args
            .bin_dir
            .unwrap_or_else(crate::build_cmd::default_bin_dir),
        memory_mib: args.memory,
        ready_timeout: Duration::from_secs(args.ready_timeout),
    };
    Ok(Lab::open(opts)?)
}

fn progress(json: bool) -> impl FnMut(&str) {
    move |m: &str| {
        if !json {
            eprintln!("testbed: {m}");
        }
    }
}

fn interrupted(e: Error) -> anyhow::Error {
    match e {
        Error::Interrupted => anyhow::anyhow!("interrupted: the lab was torn down"),
        e => e.into(),
    }
}

pub fn run(cmd: TestbedCmd, json: bool) -> anyhow::Result<Outcome> {
    match cmd {
        TestbedCmd::Up(args) => {
            let lab = open(args)?;
            testbed::host::catch_interrupts()?;
            lab.up(&mut progress(json)).map_err(interrupted)?;
            print_status(&lab, json);
            Ok(Outcome::Ok)
        }
        TestbedCmd::Test {
            lab,
            keep,
            provision,
            identity,
        } => {
            let provision = provision
                .iter()
                .map(|s| {
                    s.split_once("=@")
                        .filter(|(n, f)| !n.is_empty() && !f.is_empty())
                        .map(|(n, f)| (n.to_owned(), PathBuf::from(f)))
                        .ok_or_else(|| anyhow::anyhow!("--provision {s}: write NAME=@FILE"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            for (n, f) in &provision {
                if !f.is_file() {
                    anyhow::bail!("--provision {n}=@{}: no such file", f.display());
                }
            }
            let lab = open_with(lab, provision, identity)?;
            testbed::host::catch_interrupts()?;
            let report =
                testbed::checks::run(&lab, keep, &mut progress(json)).map_err(interrupted)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
                println!("report: {}", lab.opts.dir.join("report.txt").display());
            }
            Ok(if report.passed() {
                Outcome::Ok
            } else {
                Outcome::Failed
            })
        }
        TestbedCmd::Down(args) => {
            let lab = open(args)?;
            let left = lab.down()?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "down": left.is_empty(), "left": left })
                );
            } else if left.is_empty() {
                println!(
                    "lab {} is down; nothing left behind",
                    lab.opts.dir.display()
                );
            } else {
                println!("lab {}: still present: {left:?}", lab.opts.dir.display());
            }
            Ok(if left.is_empty() {
                Outcome::Ok
            } else {
                Outcome::Failed
            })
        }
        TestbedCmd::Status(args) => {
            let lab = open(args)?;
            print_status(&lab, json);
            Ok(Outcome::Ok)
        }
        TestbedCmd::Console { lab, gateway } => {
            let lab = open(lab)?;
            let g = lab.gateway(&gateway)?;
            anyhow::ensure!(
                lab.is_up(),
                "the lab in {} is not up",
                lab.opts.dir.display()
            );
            testbed::console::attach(&lab.console_socket(g))?;
            Ok(Outcome::Ok)
        }
        TestbedCmd::Exec { lab, host, command } => {
            let lab = open(lab)?;
            let g = lab.gateway(&host)?;
            anyhow::ensure!(
                lab.is_up(),
                "the lab in {} is not up",
                lab.opts.dir.display()
            );
            let status = lab
                .host_command(g, &command[0])
                .args(&command[1..])
                .status()
                .with_context(|| format!("running {:?} on LAN host {}", command, g.letter))?;
            Ok(if status.success() {
                Outcome::Ok
            } else {
                Outcome::Failed
            })
        }
    }
}

fn print_status(lab: &Lab, json: bool) {
    let lines = lab.status();
    if json {
        println!(
            "{}",
            serde_json::json!({ "up": lab.is_up(), "state": lab.state(), "lines": lines })
        );
    } else {
        for l in lines {
            println!("{l}");
        }
    }
}
