//! `appliance policy …`

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::{fsutil, profile_cmd, Outcome};

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Compile a profile's Viaduct policy into the canonical policy blob.
    Compile {
        /// Profile file.
        profile: PathBuf,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Print a compiled policy blob (keys are never printed).
    Show {
        /// Policy blob file.
        file: PathBuf,
    },
}

pub fn run(cmd: PolicyCmd, json: bool) -> anyhow::Result<Outcome> {
    match cmd {
        PolicyCmd::Compile { profile, output } => {
            let p = match profiles::load_profile(&profile) {
                Ok(p) => p,
                Err(d) => {
                    profile_cmd::print_diagnostics(&d, json, &profile);
                    return Ok(Outcome::Failed);
                }
            };
            let compiled = policy::compile(&p)
                .with_context(|| format!("{}: cannot compile the policy", profile.display()))?;
            let bytes = compiled.encode();
            fsutil::write_atomic(&output, &bytes)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"output": output, "bytes": bytes.len(), "digest": compiled.digest().to_hex(), "format_version": policy_blob::FORMAT_VERSION})
                );
            } else {
                println!(
                    "{}: {} bytes, digest {}",
                    output.display(),
                    bytes.len(),
                    compiled.digest().to_hex()
                );
            }
            Ok(Outcome::Ok)
        }
        PolicyCmd::Show { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let p = policy::load(&file, &bytes)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&policy::describe(&p))?);
            } else {
                let text = policy::describe_text(&p);
                // Output always ends with a newline, whatever the description ends with.
                println!("{}", text.trim_end_matches('\n'));
            }
            Ok(Outcome::Ok)
        }
    }
}
