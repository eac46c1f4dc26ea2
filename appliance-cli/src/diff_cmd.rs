//! `appliance diff OLD NEW`: argument handling around `release::diff`.

use std::io::Write;
use std::path::PathBuf;

use crate::sign_cmd::read_public_key;
use crate::Outcome;

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// Output directory of the build deployed now.
    old: PathBuf,
    /// Output directory of the build to roll out.
    new: PathBuf,
    /// Public key (NAME.pub) both manifests must be signed with; without it
    /// nothing is authenticated, and the report says so.
    #[arg(long, value_name = "KEY")]
    pubkey: Option<PathBuf>,
    /// Public key the new manifest must be signed with, when the release key
    /// changes (default: --pubkey).
    #[arg(long, value_name = "KEY", requires = "pubkey")]
    new_pubkey: Option<PathBuf>,
}

pub fn diff(args: DiffArgs, json: bool) -> anyhow::Result<Outcome> {
    let old_key = args.pubkey.as_deref().map(read_public_key).transpose()?;
    let new_key = args
        .new_pubkey
        .as_deref()
        .map(read_public_key)
        .transpose()?;
    let d = release::Diff::open(&args.old, &args.new, old_key.as_ref(), new_key.as_ref())?;
    let mut out = if json {
        serde_json::to_string_pretty(&d)?
    } else {
        d.to_text()
    };
    if !out.ends_with('\n') {
        out.push('\n');
    }
    // A reader that stops early (`| head`) is not an error.
    match std::io::stdout().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(Outcome::Ok),
    }
}
