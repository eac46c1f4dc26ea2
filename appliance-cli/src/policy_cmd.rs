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
    /// Write a policy for another engine: `nft`, its filter stage as an
    /// nftables ruleset (`table inet viaduct`, a forward chain between an
    /// interface standing for red and one standing for black), with the
    /// rules' order, states and default; `frr`, its learned-route ranges
    /// (role `router`) as FRR prefix lists for black's BGP neighbours.
    Export {
        /// A policy blob, or a profile (`.toml`, compiled first).
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// The interface standing for red.
        #[arg(long, default_value = "red")]
        red_if: String,
        /// The interface standing for black.
        #[arg(long, default_value = "black")]
        black_if: String,
        /// Output file (written atomically); standard output when not given.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// Formats `policy export` writes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    /// An nftables ruleset (`nft -f`).
    Nft,
    /// FRR prefix lists (`vtysh -f`, or in `frr.conf`).
    Frr,
}

/// An interface name as Linux takes it (1 to 15 bytes, no `/`, space or
/// quote); refused with the option's name otherwise.
fn interface_name(option: &str, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    anyhow::ensure!(
        ok,
        "{option} {name:?}: an interface name is 1 to 15 letters, digits, `_`, `-` or `.`"
    );
    Ok(())
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
        PolicyCmd::Export {
            file,
            format,
            red_if,
            black_if,
            output,
        } => {
            interface_name("--red-if", &red_if)?;
            interface_name("--black-if", &black_if)?;
            anyhow::ensure!(
                red_if != black_if,
                "--red-if and --black-if name the same interface {red_if:?}"
            );
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let p = if bytes.starts_with(policy_blob::MAGIC) {
                policy::load(&file, &bytes)?
            } else {
                let prof = match profiles::load_profile(&file) {
                    Ok(p) => p,
                    Err(d) => {
                        profile_cmd::print_diagnostics(&d, json, &file);
                        return Ok(Outcome::Failed);
                    }
                };
                policy::compile(&prof)
                    .with_context(|| format!("{}: cannot compile the policy", file.display()))?
            };
            let (text, what) = match format {
                ExportFormat::Nft => (
                    policy::nft::export(&p, &red_if, &black_if),
                    format!("nftables ruleset, {} rules", p.filters.len()),
                ),
                ExportFormat::Frr => (
                    policy::frr::export(&p),
                    format!(
                        "FRR prefix lists, {} allowed ranges",
                        p.learn.as_ref().map_or(0, |l| l.allow.len())
                    ),
                ),
            };
            match output {
                Some(out) => {
                    fsutil::write_atomic(&out, text.as_bytes())?;
                    eprintln!("{}: {what}", out.display());
                }
                None => print!("{text}"),
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
