//! `appliance`: the administrator's command. It parses arguments, shows
//! progress and errors, and calls the libraries; it holds no logic of its own.

#![forbid(unsafe_code)]

mod attest_cmd;
mod build_cmd;
mod bundle_cmd;
mod diff_cmd;
mod flash_cmd;
mod fsutil;
mod policy_cmd;
mod profile_cmd;
mod secure_boot;
mod sign_cmd;
mod testbed_cmd;
mod update_cmd;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Build, sign, verify and test security-appliance images.
#[derive(Debug, Parser)]
#[command(name = "appliance", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Print machine-readable JSON instead of text where a command prints results.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check, show and document profiles.
    #[command(subcommand)]
    Profile(profile_cmd::ProfileCmd),
    /// Build a profile's signed, measured-boot disk image.
    Build(build_cmd::BuildArgs),
    /// Resolve a profile's packages and write its lock file (NAME.lock beside it).
    Lock(build_cmd::LockArgs),
    /// Generate and show manifest signing keys.
    #[command(subcommand)]
    Key(sign_cmd::KeyCmd),
    /// Sign an output directory's manifest.json (writes manifest.sig).
    Sign(sign_cmd::SignArgs),
    /// Check an image against its signed manifest: signature, then every digest.
    Verify(sign_cmd::VerifyArgs),
    /// Write a signed image onto a disk: checks first, mapped blocks only, the GPT last, then a read-back.
    Flash(flash_cmd::FlashArgs),
    /// Print the PCR values a measured boot of an image produces.
    Measure(sign_cmd::MeasureArgs),
    /// What an update from one build to another changes (read before rolling it out).
    Diff(diff_cmd::DiffArgs),
    /// Pack a verified, signed build into one update bundle (manifest, signature, UKI).
    Bundle(bundle_cmd::BundleArgs),
    /// Send an update bundle to a gateway's management port and report its answer.
    Update(update_cmd::UpdateArgs),
    /// Enrol a gateway's TPM: EK certificate chain, AK attributes, credential activation.
    Enroll(attest_cmd::EnrollArgs),
    /// Ask a gateway for a TPM quote and check it, every check by name.
    Attest(attest_cmd::AttestArgs),
    /// Provision secrets (PSKs) to an enrolled gateway: encrypted to its TPM, sealed there.
    Provision(attest_cmd::ProvisionArgs),
    /// Reference values for other verifiers (Keylime).
    #[command(subcommand)]
    Reference(attest_cmd::ReferenceCmd),
    /// UEFI Secure Boot helpers (enroll our certificate in a firmware variable store).
    #[command(subcommand, name = "secure-boot")]
    SecureBoot(secure_boot::SecureBootCmd),
    /// Compile and inspect Viaduct policies.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCmd),
    /// The lab: two QEMU gateways with LAN hosts, tested end to end.
    #[command(subcommand)]
    Testbed(testbed_cmd::TestbedCmd),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff).
    Manpage,
}

/// What a command reports back to `main`.
pub enum Outcome {
    /// Everything was fine.
    Ok,
    /// The command ran, and found problems it already printed (exit 1).
    Failed,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Profile(cmd) => profile_cmd::run(cmd, cli.json),
        Command::Policy(cmd) => policy_cmd::run(cmd, cli.json),
        Command::Build(args) => build_cmd::build(args, cli.json),
        Command::Lock(args) => build_cmd::lock(args, cli.json),
        Command::Key(cmd) => sign_cmd::key(cmd, cli.json),
        Command::Sign(args) => sign_cmd::sign(args, cli.json),
        Command::Verify(args) => sign_cmd::verify(args, cli.json),
        Command::Measure(args) => sign_cmd::measure(args, cli.json),
        Command::Flash(args) => flash_cmd::flash(args, cli.json),
        Command::Diff(args) => diff_cmd::diff(args, cli.json),
        Command::Bundle(args) => bundle_cmd::bundle(args, cli.json),
        Command::Update(args) => update_cmd::update(args, cli.json),
        Command::Enroll(args) => attest_cmd::enroll(args, cli.json),
        Command::Attest(args) => attest_cmd::attest(args, cli.json),
        Command::Reference(cmd) => attest_cmd::reference(cmd),
        Command::Provision(args) => attest_cmd::provision(args, cli.json),
        Command::SecureBoot(cmd) => secure_boot::run(cmd, cli.json),
        Command::Testbed(cmd) => testbed_cmd::run(cmd, cli.json),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "appliance", &mut std::io::stdout());
            Ok(Outcome::Ok)
        }
        Command::Manpage => {
            let man = clap_mangen::Man::new(Cli::command());
            let mut buf = Vec::new();
            man.render(&mut buf)
                .map_err(anyhow::Error::from)
                .and_then(|_| {
                    std::io::stdout().write_all(&buf)?;
                    Ok(Outcome::Ok)
                })
        }
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(e) => {
            if cli.json {
                let v = serde_json::json!({ "error": error_text(&e) });
                println!("{v}");
            } else {
                eprintln!("error: {}", error_text(&e));
            }
            ExitCode::from(1)
        }
    }
}

/// An error and its causes, each fact once: the libraries' messages often
/// already include their cause's text (`reading X: permission denied`), so a
/// cause whose text is already shown is left out.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        let part = part.trim();
        if part.is_empty() || text.contains(part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(part);
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("reading /x: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Outer(io)).context("building p.toml");
        assert_eq!(
            super::error_text(&e),
            "building p.toml: reading /x: no such file"
        );
        let e = anyhow::anyhow!("disk full").context("writing out");
        assert_eq!(super::error_text(&e), "writing out: disk full");
    }
}
