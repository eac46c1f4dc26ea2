//! `appliance profile …`

use std::path::PathBuf;

use clap::Subcommand;
use profiles::{Checked, Diagnostics};

use crate::Outcome;

#[derive(Debug, Subcommand)]
pub enum ProfileCmd {
    /// Check profiles; exits non-zero if any is invalid. Every problem is
    /// printed as `file:line:col: field: message` with the source line.
    Check {
        /// Profile files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the resolved profile (bases merged, defaults filled in).
    Show {
        /// Profile file.
        file: PathBuf,
    },
    /// Print the JSON Schema of the profile format.
    Schema,
    /// Print the Markdown profile reference (docs/profile-reference.md).
    Reference,
}

pub fn run(cmd: ProfileCmd, json: bool) -> anyhow::Result<Outcome> {
    match cmd {
        ProfileCmd::Check { files } => Ok(check(&files, json)),
        ProfileCmd::Show { file } => match profiles::load_profile(&file) {
            Ok(p) => {
                // Both views are the validated model, exactly what the
                // builders receive (defaults filled in, bases merged).
                if json {
                    println!("{}", serde_json::to_string_pretty(&p)?);
                } else {
                    print!("{}", toml::to_string_pretty(&p)?);
                }
                Ok(Outcome::Ok)
            }
            Err(d) => {
                print_diagnostics(&d, json, &file);
                Ok(Outcome::Failed)
            }
        },
        ProfileCmd::Schema => {
            println!("{}", serde_json::to_string_pretty(&profiles::schema())?);
            Ok(Outcome::Ok)
        }
        ProfileCmd::Reference => {
            print!("{}", profiles::reference::markdown());
            Ok(Outcome::Ok)
        }
    }
}

fn check(files: &[PathBuf], json: bool) -> Outcome {
    let mut all_ok = true;
    let mut results = Vec::new();
    for f in files {
        match profiles::check(f) {
            Ok(Checked::Profile(p)) => {
                let ids = p.viaduct.ids.as_ref().map(|i| i.coverage.clone());
                if json {
                    results.push(serde_json::json!({"file": f, "ok": true, "abstract": false, "name": p.appliance.name, "version": p.appliance.version, "ids_coverage": ids}));
                } else {
                    println!(
                        "ok: {} ({} {})",
                        f.display(),
                        p.appliance.name,
                        p.appliance.version
                    );
                    if let Some(c) = ids {
                        println!("  ids rules: {c}");
                    }
                }
            }
            Ok(Checked::Abstract) => {
                if json {
                    results.push(serde_json::json!({"file": f, "ok": true, "abstract": true}));
                } else {
                    println!("ok: {} (abstract base)", f.display());
                }
            }
            Err(d) => {
                all_ok = false;
                if json {
                    results.push(serde_json::json!({"file": f, "ok": false, "diagnostics": d}));
                } else {
                    print_diagnostics(&d, false, f);
                }
            }
        }
    }
    if json {
        println!("{}", serde_json::json!({ "ok": all_ok, "files": results }));
    }
    if all_ok {
        Outcome::Ok
    } else {
        Outcome::Failed
    }
}

pub fn print_diagnostics(d: &Diagnostics, json: bool, file: &std::path::Path) {
    if json {
        println!(
            "{}",
            serde_json::json!({"file": file, "ok": false, "diagnostics": d})
        );
        return;
    }
    for diag in &d.0 {
        eprint!("{}", diag.render());
    }
    let n = d.0.len();
    eprintln!(
        "{}: {n} problem{}",
        file.display(),
        if n == 1 { "" } else { "s" }
    );
}
